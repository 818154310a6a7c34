#!/usr/bin/env python3
"""Strict structural validator for uncompressed Proxmox VMA archives (test tooling).

Written from ../shared/spec/vma-format.md only, independently of the C reader and
writer, so that it can catch their mistakes.  It streams: the archive is read one
extent at a time and only a one-bit-per-cluster bitmap is kept per device.

usage: vma_check.py [--json] [--strict] [--incremental] [--clusters] ARCHIVE|-

Success: one summary line on stdout (or a JSON object with --json), exit 0.
Failure: "vma_check: OFFSET: what is wrong" on stderr, nothing on stdout, exit 1.
Usage errors exit 2.  A stored 4 KiB block that is all zero (a writer should omit
it) is a warning, or an error with --strict.  With --incremental, an archive that has
the config vzdump-incremental.json may lack clusters (they are its parent's); --clusters
prints "DEVICE CLUSTER data|zero" for every cluster present, by device and cluster,
instead of the summary.

Stricter than Proxmox's own reader on purpose (each is something our writer must not
do): ctime must be positive; header_size at most 512 KiB (the Proxmox writer's limit);
every blob referenced; config and device names unique, non-empty, not "." or "..",
without "/" or control characters; no device named "vmstate"; no empty extent in an
archive with devices; no mask bit for a block past the device end even for mask 0xffff.
"""

import argparse
import hashlib
import json
import struct
import sys
import uuid

PROG = "vma_check"

HEADER_FIXED = 12288            # sizeof(VmaHeader)
HEADER_MAX = 8 * 65536          # the Proxmox writer's whole-header buffer
BLOCK = 4096
CLUSTER = 65536
BLOCKS_PER_CLUSTER = CLUSTER // BLOCK
EXTENT_HEADER = 512
ENTRIES_PER_EXTENT = 59
MAX_DEV_ID = 254
CONFIG_SLOTS = 256

ZERO_BLOCK = bytes(BLOCK)

# Field offsets inside the fixed header.
OFF_MAGIC, OFF_VERSION, OFF_UUID, OFF_CTIME, OFF_MD5 = 0, 4, 8, 24, 32
OFF_BLOB_OFFSET, OFF_BLOB_SIZE, OFF_HEADER_SIZE = 48, 52, 56
OFF_RESERVED, END_RESERVED = 60, 2044
OFF_CONFIG_NAMES, OFF_CONFIG_DATA, OFF_RESERVED1 = 2044, 3068, 4092
OFF_DEV_INFO, DEV_INFO_SIZE = 4096, 32


class Invalid(Exception):
    """The archive breaks a rule; carries the byte offset where it was found."""

    def __init__(self, offset, message):
        super().__init__(message)
        self.offset = offset
        self.message = message


class Reader:
    """Reads exact byte counts from a binary stream and tracks the offset."""

    def __init__(self, stream):
        self.stream = stream
        self.offset = 0

    def read(self, count):
        """Returns up to COUNT bytes; fewer only at end of input."""
        parts = []
        wanted = count
        while wanted > 0:
            chunk = self.stream.read(wanted)
            if not chunk:
                break
            parts.append(chunk)
            wanted -= len(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)   # b"" when none
        self.offset += len(data)
        return data


def printable(name):
    """A name as text for messages and JSON; undecodable bytes shown as escapes."""
    return name.decode("utf-8", errors="backslashreplace")


def check_name(offset, what, name):
    """Names become file names on extraction: refuse what cannot be one safely."""
    if not name:
        raise Invalid(offset, f"{what} name is empty")
    if name in (b".", b".."):
        raise Invalid(offset, f"{what} name is '{printable(name)}'")
    if b"/" in name:
        raise Invalid(offset, f"{what} name '{printable(name)}' contains '/'")
    for byte in name:
        if byte < 0x20 or byte == 0x7F:
            raise Invalid(offset, f"{what} name {name!r} contains control character "
                                  f"0x{byte:02x}")


class Device:
    def __init__(self, dev_id, name, size):
        self.dev_id = dev_id
        self.name = name
        self.size = size
        self.cluster_count = (size + CLUSTER - 1) // CLUSTER
        self.seen = 0
        # One bit per cluster; the padding bits of the last byte start set so that a
        # complete device is all 0xff.
        self.bitmap = bytearray((self.cluster_count + 7) // 8)
        tail = self.cluster_count % 8
        if tail:
            self.bitmap[-1] = (0xFF << tail) & 0xFF
        last_blocks = (size - (self.cluster_count - 1) * CLUSTER + BLOCK - 1) // BLOCK
        self.last_cluster_mask = (1 << last_blocks) - 1
        # Bytes of the last stored block that lie inside the device (BLOCK if it is full).
        self.last_block_used = size % BLOCK or BLOCK

    def label(self):
        return f"device {self.dev_id} '{printable(self.name)}'"

    def first_missing(self):
        index = len(self.bitmap) - len(self.bitmap.lstrip(b"\xff"))
        byte = self.bitmap[index]
        return index * 8 + ((~byte & (byte + 1)).bit_length() - 1)


class Checker:
    def __init__(self, stream, strict, incremental=False, clusters=False):
        self.input = Reader(stream)
        self.strict = strict
        self.incremental = incremental
        # --clusters: (dev_id, cluster, mask) of every cluster, in stream order
        self.present = [] if clusters else None
        self.configs = []
        self.devices = {}
        self.extents = 0
        self.clusters = 0
        self.stored_blocks = 0
        self.zero_blocks = 0
        self.missing_clusters = 0

    # ---- header -------------------------------------------------------------------

    def check_header(self):
        fixed = self.input.read(HEADER_FIXED)
        if fixed[:4] != b"VMA\0" and len(fixed) >= 4:
            raise Invalid(OFF_MAGIC, f"bad magic {fixed[:4].hex()} (expected 564d4100 'VMA\\0')")
        if len(fixed) < HEADER_FIXED:
            raise Invalid(len(fixed), f"truncated header: input ends after {len(fixed)} "
                                      f"of {HEADER_FIXED} bytes")
        (version,) = struct.unpack_from(">I", fixed, OFF_VERSION)
        if version != 1:
            raise Invalid(OFF_VERSION, f"bad version {version} (expected 1)")
        blob_offset, blob_size, header_size = struct.unpack_from(">III", fixed, OFF_BLOB_OFFSET)
        if header_size <= HEADER_FIXED:
            raise Invalid(OFF_HEADER_SIZE, f"header_size {header_size} is not above {HEADER_FIXED}")
        if header_size % 512:
            raise Invalid(OFF_HEADER_SIZE, f"header_size {header_size} is not a multiple of 512")
        if header_size > HEADER_MAX:
            raise Invalid(OFF_HEADER_SIZE, f"header_size {header_size} is above {HEADER_MAX}")
        rest = self.input.read(header_size - HEADER_FIXED)
        if len(rest) < header_size - HEADER_FIXED:
            raise Invalid(self.input.offset, f"truncated header: input ends after "
                                             f"{self.input.offset} of header_size "
                                             f"{header_size} bytes")
        header = bytearray(fixed + rest)
        stored_md5 = bytes(header[OFF_MD5:OFF_MD5 + 16])
        header[OFF_MD5:OFF_MD5 + 16] = bytes(16)
        computed = hashlib.md5(header).digest()
        if computed != stored_md5:
            raise Invalid(OFF_MD5, f"header MD5 mismatch: stored {stored_md5.hex()}, "
                                   f"computed {computed.hex()}")
        header = bytes(header)

        self.uuid = uuid.UUID(bytes=header[OFF_UUID:OFF_UUID + 16])
        if self.uuid.variant != uuid.RFC_4122 or self.uuid.version != 4:
            raise Invalid(OFF_UUID, f"uuid {self.uuid} is not an RFC 4122 version-4 uuid")
        self.uuid_bytes = header[OFF_UUID:OFF_UUID + 16]
        (self.ctime,) = struct.unpack_from(">q", header, OFF_CTIME)
        if self.ctime <= 0:
            raise Invalid(OFF_CTIME, f"ctime {self.ctime} is not a time after the epoch")
        if blob_offset != HEADER_FIXED:
            raise Invalid(OFF_BLOB_OFFSET, f"blob_buffer_offset {blob_offset} "
                                           f"(expected {HEADER_FIXED})")
        if blob_size < 1:
            raise Invalid(OFF_BLOB_SIZE, "blob_buffer_size 0 (byte 0 is reserved, so at least 1)")
        if blob_offset + blob_size > header_size:
            raise Invalid(OFF_BLOB_SIZE, f"blob buffer runs past the header end: "
                                         f"blob_buffer_offset {blob_offset} + blob_buffer_size "
                                         f"{blob_size} > header_size {header_size}")
        self.check_zero(header, OFF_RESERVED, END_RESERVED, "reserved header field")
        self.check_zero(header, OFF_RESERVED1, OFF_RESERVED1 + 4, "header reserved1")
        self.check_zero(header, blob_offset + blob_size, header_size, "padding after the blob buffer")

        blobs = self.parse_blobs(header, blob_offset, blob_size)
        referenced = set()
        self.check_configs(header, blob_offset, blobs, referenced)
        self.check_devices(header, blob_offset, blobs, referenced)
        for start in sorted(set(blobs) - referenced):
            raise Invalid(blob_offset + start, f"blob at {start} is not referenced by any pointer")

    @staticmethod
    def check_zero(data, start, end, what):
        if data[start:end].count(0) != end - start:
            first = next(i for i in range(start, end) if data[i])
            raise Invalid(first, f"{what} is not zero (byte 0x{data[first]:02x})")

    @staticmethod
    def parse_blobs(header, base, size):
        """Walks the blob chain; returns {start: bytes} keyed by offset in the buffer."""
        buffer = header[base:base + size]
        if buffer[0] != 0:
            raise Invalid(base, f"blob buffer byte 0 is 0x{buffer[0]:02x} (reserved, must be 0)")
        blobs = {}
        pos = 1
        while pos < size:
            if pos + 2 > size:
                raise Invalid(base + pos, f"blob at {pos}: length prefix runs past "
                                          f"blob_buffer_size {size}")
            length = buffer[pos] | buffer[pos + 1] << 8          # little-endian, unlike the rest
            if pos + 2 + length > size:
                raise Invalid(base + pos, f"blob at {pos} of length {length} runs past "
                                          f"blob_buffer_size {size}")
            blobs[pos] = buffer[pos + 2:pos + 2 + length]
            pos += 2 + length
        return blobs

    @staticmethod
    def resolve(field_offset, what, pointer, blobs, base):
        if pointer not in blobs:
            raise Invalid(field_offset, f"{what} pointer {pointer} does not land on a blob start")
        return blobs[pointer]

    def resolve_string(self, field_offset, what, pointer, blobs, base):
        blob = self.resolve(field_offset, what, pointer, blobs, base)
        if not blob or blob[-1] != 0:
            raise Invalid(base + pointer, f"{what} blob at {pointer} is not NUL-terminated")
        name = blob[:-1]
        if 0 in name:
            raise Invalid(base + pointer, f"{what} blob at {pointer} has a NUL inside")
        return name

    def check_configs(self, header, base, blobs, referenced):
        names = struct.unpack_from(f">{CONFIG_SLOTS}I", header, OFF_CONFIG_NAMES)
        datas = struct.unpack_from(f">{CONFIG_SLOTS}I", header, OFF_CONFIG_DATA)
        ended = False
        seen = set()
        for slot, (name_ptr, data_ptr) in enumerate(zip(names, datas)):
            name_field = OFF_CONFIG_NAMES + 4 * slot
            data_field = OFF_CONFIG_DATA + 4 * slot
            if not name_ptr and not data_ptr:
                ended = True
                continue
            if ended:
                raise Invalid(name_field, f"config slot {slot} is used after an empty slot")
            if not name_ptr or not data_ptr:
                raise Invalid(name_field if not name_ptr else data_field,
                              f"config slot {slot} has only one of its two pointers")
            what = f"config {slot}"
            name = self.resolve_string(name_field, f"{what} name", name_ptr, blobs, base)
            data = self.resolve(data_field, f"{what} data", data_ptr, blobs, base)
            check_name(base + name_ptr, what, name)
            if name in seen:
                raise Invalid(base + name_ptr, f"{what} name '{printable(name)}' is a duplicate")
            seen.add(name)
            referenced.update((name_ptr, data_ptr))
            self.configs.append((name, len(data)))

    def check_devices(self, header, base, blobs, referenced):
        self.check_zero(header, OFF_DEV_INFO, OFF_DEV_INFO + DEV_INFO_SIZE, "dev_info slot 0")
        ended = False
        seen = set()
        for dev_id in range(1, 256):
            slot = OFF_DEV_INFO + DEV_INFO_SIZE * dev_id
            name_ptr, reserved0, size = struct.unpack_from(">IIQ", header, slot)
            if not header[slot:slot + DEV_INFO_SIZE].strip(b"\0"):
                ended = True
                continue
            what = f"device {dev_id}"
            if ended:
                raise Invalid(slot, f"{what} is used after an empty slot (dev ids must be 1..n)")
            if dev_id > MAX_DEV_ID:
                raise Invalid(slot, f"{what} is above the highest dev id {MAX_DEV_ID}")
            if reserved0:
                raise Invalid(slot + 4, f"{what} reserved0 is not zero")
            self.check_zero(header, slot + 16, slot + 32, f"{what} reserved1/reserved2")
            if not name_ptr:
                raise Invalid(slot, f"{what} has a size but no name pointer")
            if not size:
                raise Invalid(slot + 8, f"{what} has a name but size 0")
            if (size + CLUSTER - 1) // CLUSTER > 1 << 32:
                raise Invalid(slot + 8, f"{what} size {size} needs more than 2^32 clusters")
            name = self.resolve_string(slot, f"{what} name", name_ptr, blobs, base)
            check_name(base + name_ptr, what, name)
            if name == b"vmstate":
                raise Invalid(base + name_ptr, f"{what} is named 'vmstate' (VM state, unsupported)")
            if name in seen:
                raise Invalid(base + name_ptr, f"{what} name '{printable(name)}' is a duplicate")
            seen.add(name)
            referenced.add(name_ptr)
            self.devices[dev_id] = Device(dev_id, name, size)
        self.missing_clusters = sum(d.cluster_count for d in self.devices.values())

    # ---- extents ------------------------------------------------------------------

    def complete(self):
        return self.extents > 0 and self.missing_clusters == 0

    def check_extents(self):
        while True:
            offset = self.input.offset
            header = self.input.read(EXTENT_HEADER)
            if not header:
                break
            if len(header) < EXTENT_HEADER:
                if self.complete():
                    raise Invalid(offset, f"trailing garbage: {len(header)} bytes after the "
                                          f"last extent")
                raise Invalid(offset, f"truncated extent header: input ends after "
                                      f"{len(header)} of {EXTENT_HEADER} bytes")
            self.check_extent(offset, header)
        if not self.extents and not self.devices:
            raise Invalid(self.input.offset, "no extent after the header (an archive without "
                                             "devices needs exactly one empty extent)")
        if self.incremental and b"vzdump-incremental.json" not in (c[0] for c in self.configs):
            raise Invalid(self.input.offset, "--incremental: the archive has no config "
                                             "vzdump-incremental.json")
        if self.missing_clusters and not self.incremental:
            problems = []
            for device in self.devices.values():
                missing = device.cluster_count - device.seen
                if missing:
                    problems.append(f"{device.label()}: {missing} of {device.cluster_count} "
                                    f"clusters missing (first: {device.first_missing()})")
            raise Invalid(self.input.offset, "input ends with missing clusters: "
                          + "; ".join(problems))

    def check_extent(self, offset, header):
        magic, reserved1, block_count = struct.unpack_from(">4sHH", header, 0)
        if magic != b"VMAE":
            if self.complete():
                raise Invalid(offset, f"trailing garbage after the last extent (no VMAE magic, "
                                      f"found {magic.hex()})")
            raise Invalid(offset, f"bad extent magic {magic.hex()} (expected 564d4145 'VMAE')")
        if reserved1:
            raise Invalid(offset + 4, f"extent reserved1 is {reserved1} (must be 0)")
        if header[8:24] != self.uuid_bytes:
            raise Invalid(offset + 8, f"extent uuid {uuid.UUID(bytes=header[8:24])} differs "
                                      f"from the header uuid {self.uuid}")
        zeroed = bytearray(header)
        zeroed[24:40] = bytes(16)
        computed = hashlib.md5(zeroed).digest()
        if computed != header[24:40]:
            raise Invalid(offset + 24, f"extent header MD5 mismatch: stored {header[24:40].hex()}, "
                                       f"computed {computed.hex()}")
        if not self.devices and self.extents:
            raise Invalid(offset, "second extent in an archive without devices "
                                  "(it must have exactly one empty extent)")
        self.extents += 1

        entries = struct.unpack_from(f">{ENTRIES_PER_EXTENT}Q", header, 40)
        used = []
        for slot, entry in enumerate(entries):
            entry_offset = offset + 40 + 8 * slot
            dev_id = entry >> 32 & 0xFF
            if not dev_id:
                if entry:
                    raise Invalid(entry_offset, f"blockinfo slot {slot} has dev_id 0 but is not "
                                                f"all zero (0x{entry:016x})")
                if any(entries[slot:]):
                    later = next(i for i in range(slot, ENTRIES_PER_EXTENT) if entries[i])
                    raise Invalid(offset + 40 + 8 * later, f"blockinfo slot {later} is used "
                                                           f"after the unused slot {slot}")
                break
            used.append((entry_offset, entry >> 48, entry >> 40 & 0xFF, dev_id, entry & 0xFFFFFFFF))

        if not used and self.devices:
            raise Invalid(offset, "empty extent (no used blockinfo entry) in an archive "
                                  "with devices")

        announced = 0
        for entry_offset, mask, reserved, dev_id, cluster in used:
            if reserved:
                raise Invalid(entry_offset + 2, f"blockinfo reserved byte is 0x{reserved:02x}")
            device = self.devices.get(dev_id)
            if device is None:
                declared = f"1..{len(self.devices)}" if self.devices else "none"
                raise Invalid(entry_offset + 3, f"blockinfo has unknown dev_id {dev_id} "
                                                f"(declared: {declared})")
            if cluster >= device.cluster_count:
                raise Invalid(entry_offset + 4, f"{device.label()}: cluster {cluster} is past the "
                                                f"end (the device has {device.cluster_count} "
                                                f"clusters)")
            bit = 1 << (cluster & 7)
            if device.bitmap[cluster >> 3] & bit:
                raise Invalid(entry_offset, f"{device.label()}: duplicate cluster {cluster}")
            device.bitmap[cluster >> 3] |= bit
            device.seen += 1
            self.missing_clusters -= 1
            if self.present is not None:
                self.present.append((dev_id, cluster, mask))
            if cluster == device.cluster_count - 1 and mask & ~device.last_cluster_mask:
                block = (mask & ~device.last_cluster_mask & 0xFFFF).bit_length() - 1
                raise Invalid(entry_offset, f"{device.label()}: mask 0x{mask:04x} stores block "
                                            f"{block} of cluster {cluster}, which starts at or "
                                            f"past the device end ({device.size} bytes)")
            announced += mask.bit_count()
        if block_count > announced:
            raise Invalid(offset + 6, f"block_count {block_count} is higher than the "
                                      f"{announced} blocks announced by the masks")
        if block_count < announced:
            raise Invalid(offset + 6, f"block_count {block_count} is lower than the "
                                      f"{announced} blocks announced by the masks")
        self.clusters += len(used)
        self.stored_blocks += block_count

        data_offset = self.input.offset
        data = self.input.read(block_count * BLOCK)
        if len(data) < block_count * BLOCK:
            raise Invalid(self.input.offset, f"truncated extent: input ends after {len(data)} "
                                             f"of {block_count * BLOCK} data bytes")
        self.check_blocks(data_offset, data, used)

    def check_blocks(self, data_offset, data, used):
        position = 0
        for _entry_offset, mask, _reserved, dev_id, cluster in used:
            if not mask:
                continue
            device = self.devices[dev_id]
            last = cluster == device.cluster_count - 1
            for block in range(BLOCKS_PER_CLUSTER):
                if not mask >> block & 1:
                    continue
                stored = data[position:position + BLOCK]
                where = data_offset + position
                if stored == ZERO_BLOCK:
                    self.zero_block(where, device, cluster, block)
                if last and device.last_block_used < BLOCK and \
                        (cluster * CLUSTER + (block + 1) * BLOCK > device.size):
                    tail = stored[device.last_block_used:]
                    if tail.count(0) != len(tail):
                        raise Invalid(where + device.last_block_used,
                                      f"{device.label()}: block {block} of cluster {cluster} has "
                                      f"non-zero bytes past the device end ({device.size} bytes)")
                position += BLOCK

    def zero_block(self, where, device, cluster, block):
        message = (f"{device.label()}: stored block {block} of cluster {cluster} is all zero "
                   f"(writers omit zero blocks)")
        if self.strict:
            raise Invalid(where, message)
        if not self.zero_blocks:
            print(f"{PROG}: {where}: warning: {message}", file=sys.stderr)
        self.zero_blocks += 1

    # ---- result -------------------------------------------------------------------

    def summary(self, as_json):
        if as_json:
            return json.dumps({
                "uuid": str(self.uuid),
                "ctime": self.ctime,
                "configs": [{"name": printable(n), "size": s} for n, s in self.configs],
                "devices": [{"dev_id": d.dev_id, "name": printable(d.name), "size": d.size}
                            for d in self.devices.values()],
                "extents": self.extents,
                "clusters": self.clusters,
                "stored_blocks": self.stored_blocks,
            })
        return (f"ok: {len(self.configs)} configs, {len(self.devices)} devices, "
                f"{self.extents} extents, {self.clusters} clusters, "
                f"{self.stored_blocks} stored blocks")


def main():
    parser = argparse.ArgumentParser(prog=PROG, description="Strictly validate an uncompressed "
                                     "VMA archive (ARCHIVE or - for stdin).")
    parser.add_argument("archive", metavar="ARCHIVE|-")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("--incremental", action="store_true",
                        help="clusters may be missing (an incremental archive)")
    parser.add_argument("--clusters", action="store_true",
                        help="list the clusters present instead of the summary")
    parser.add_argument("--strict", action="store_true",
                        help="a stored all-zero 4 KiB block is an error, not a warning")
    args = parser.parse_args()
    try:
        stream = sys.stdin.buffer if args.archive == "-" else open(args.archive, "rb")
    except OSError as error:
        print(f"{PROG}: {args.archive}: {error.strerror}", file=sys.stderr)
        return 1
    checker = Checker(stream, args.strict, args.incremental, args.clusters)
    try:
        checker.check_header()
        checker.check_extents()
    except Invalid as problem:
        print(f"{PROG}: {problem.offset}: {problem.message}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{PROG}: {args.archive}: read failed: {error.strerror}", file=sys.stderr)
        return 1
    if checker.zero_blocks:
        print(f"{PROG}: warning: {checker.zero_blocks} stored blocks are all zero",
              file=sys.stderr)
    if args.clusters:
        for dev_id, cluster, mask in sorted(checker.present):
            name = checker.devices[dev_id].name.decode(errors="replace")
            print(f"{name} {cluster} {'data' if mask else 'zero'}")
        return 0
    print(checker.summary(args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
