#!/usr/bin/env python3
"""Writes a copy of a valid VMA archive with exactly one defect (test tooling).

usage: vma_corrupt.py IN OUT DEFECT
       vma_corrupt.py --list

MD5s are recomputed wherever the change touched a checksummed header, so that the named
defect, not a checksum error, is the first thing a reader meets (except for the two
*-md5 defects).  Besides the defects named in the task there is tail-not-zero: a non-zero
byte past the device end inside a stored partial last block.  Prints one line on stdout: what was changed and at which byte offset of
OUT.  Exit 1 if the archive cannot carry that defect (for example block-past-end needs
a device whose last 64 KiB cluster has a 4 KiB block wholly past the end), 2 on usage
errors.  Written from ../shared/spec/vma-format.md.
"""

import argparse
import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vma_make import build_header  # noqa: E402  (the test generator's header builder)

import uuid  # noqa: E402

PROG = "vma_corrupt"
HEADER_FIXED = 12288
BLOCK = 4096
CLUSTER = 65536
ENTRIES_PER_EXTENT = 59
GARBAGE_BLOCK = bytes(range(256)) * 16          # a non-zero 4 KiB block


class Unsuitable(Exception):
    """The input archive cannot carry the requested defect."""


def seal(header, md5_at):
    """Recomputes an MD5 over HEADER with its own 16-byte field zeroed."""
    header[md5_at:md5_at + 16] = bytes(16)
    header[md5_at:md5_at + 16] = hashlib.md5(header).digest()


class Extent:
    def __init__(self, header, data):
        self.header = bytearray(header)
        self.data = bytearray(data)

    @property
    def block_count(self):
        return struct.unpack_from(">H", self.header, 6)[0]

    @block_count.setter
    def block_count(self, value):
        struct.pack_into(">H", self.header, 6, value)

    def entries(self):
        found = []
        for slot in range(ENTRIES_PER_EXTENT):
            (entry,) = struct.unpack_from(">Q", self.header, 40 + 8 * slot)
            if not entry >> 32 & 0xFF:
                break
            found.append(entry)
        return found

    def set_entry(self, slot, entry):
        struct.pack_into(">Q", self.header, 40 + 8 * slot, entry)

    def seal(self):
        seal(self.header, 24)

    def size(self):
        return len(self.header) + len(self.data)


class Archive:
    def __init__(self, raw):
        if len(raw) < HEADER_FIXED or raw[:4] != b"VMA\0":
            raise Unsuitable("input is not a VMA archive")
        (self.header_size,) = struct.unpack_from(">I", raw, 56)
        self.header = bytearray(raw[:self.header_size])
        self.extents = []
        pos = self.header_size
        while pos < len(raw):
            header = raw[pos:pos + 512]
            if len(header) < 512 or header[:4] != b"VMAE":
                raise Unsuitable(f"no extent header at offset {pos}")
            (block_count,) = struct.unpack_from(">H", header, 6)
            end = pos + 512 + block_count * BLOCK
            if end > len(raw):
                raise Unsuitable(f"extent at offset {pos} is truncated")
            self.extents.append(Extent(header, raw[pos + 512:end]))
            pos = end
        self.tail = b""

    # -- header contents ----------------------------------------------------------

    def blob(self, pointer):
        start = HEADER_FIXED + pointer
        length = self.header[start] | self.header[start + 1] << 8
        return bytes(self.header[start + 2:start + 2 + length])

    def configs(self):
        found = []
        for slot in range(256):
            name_ptr, = struct.unpack_from(">I", self.header, 2044 + 4 * slot)
            data_ptr, = struct.unpack_from(">I", self.header, 3068 + 4 * slot)
            if name_ptr and data_ptr:
                found.append((self.blob(name_ptr)[:-1], self.blob(data_ptr)))
        return found

    def devices(self):
        """[(dev_id, name, size)] for the used dev_info slots."""
        found = []
        for dev_id in range(1, 256):
            name_ptr, _, size = struct.unpack_from(">IIQ", self.header, 4096 + 32 * dev_id)
            if name_ptr and size:
                found.append((dev_id, self.blob(name_ptr)[:-1], size))
        return found

    def rebuild_header(self, configs, devices):
        """Replaces the header with one holding these names; uuid and ctime are kept."""
        archive_uuid = uuid.UUID(bytes=bytes(self.header[8:24]))
        (ctime,) = struct.unpack_from(">q", self.header, 24)
        self.header = bytearray(build_header(archive_uuid, ctime, configs,
                                             [(name, size) for _, name, size in devices]))
        self.header_size = len(self.header)

    def locate_blob(self, content):
        """Offset in the header of the first blob holding CONTENT."""
        (blob_size,) = struct.unpack_from(">I", self.header, 52)
        pos = 1
        while pos < blob_size:
            length = self.header[HEADER_FIXED + pos] | self.header[HEADER_FIXED + pos + 1] << 8
            if self.blob(pos) == content:
                return HEADER_FIXED + pos
            pos += 2 + length
        raise AssertionError("blob not found")

    # -- layout -------------------------------------------------------------------

    def extent_offset(self, index):
        return len(self.header) + sum(e.size() for e in self.extents[:index])

    def entry_offset(self, index, slot):
        return self.extent_offset(index) + 40 + 8 * slot

    def data_offset_of(self, index, slot):
        """Offset in the data area of extent INDEX where the blocks of entry SLOT start."""
        before = self.extents[index].entries()[:slot]
        return sum((e >> 48).bit_count() for e in before) * BLOCK

    def add_entry(self, entry, data):
        """Appends a blockinfo entry (and its blocks) to the last extent, or to a new one
        when that is full.  Returns (extent index, slot)."""
        if not self.extents or len(self.extents[-1].entries()) == ENTRIES_PER_EXTENT:
            header = bytearray(512)
            header[0:4] = b"VMAE"
            header[8:24] = self.header[8:24]
            self.extents.append(Extent(header, b""))
        target = self.extents[-1]
        slot = len(target.entries())
        target.set_entry(slot, entry)
        target.data += data
        target.block_count += len(data) // BLOCK
        target.seal()
        return len(self.extents) - 1, slot

    def serialize(self):
        parts = [bytes(self.header)]
        for extent in self.extents:
            parts += [bytes(extent.header), bytes(extent.data)]
        parts.append(self.tail)
        return b"".join(parts)


def need_devices(archive):
    devices = archive.devices()
    if not devices:
        raise Unsuitable("the archive has no device")
    return devices


def first_extent_with_data(archive, last=False):
    indexes = range(len(archive.extents))
    for index in (reversed(indexes) if last else indexes):
        if archive.extents[index].block_count:
            return index
    raise Unsuitable("no extent stores any block")


# ---- the defects (each returns a description with the byte offset in OUT) ------------

def bad_magic(a):
    a.header[2:3] = b"X"
    seal(a.header, 32)
    return "header magic changed to 'VMX\\0' (MD5 recomputed) at offset 0"


def bad_version(a):
    struct.pack_into(">I", a.header, 4, 2)
    seal(a.header, 32)
    return "header version changed from 1 to 2 (MD5 recomputed) at offset 4"


def bad_header_md5(a):
    a.header[32] ^= 0xFF
    return "header MD5 byte flipped at offset 32"


def bad_extent_md5(a):
    if not a.extents:
        raise Unsuitable("the archive has no extent")
    a.extents[0].header[24] ^= 0xFF
    return f"MD5 byte of the first extent flipped at offset {a.extent_offset(0) + 24}"


def bad_extent_magic(a):
    if not a.extents:
        raise Unsuitable("the archive has no extent")
    a.extents[0].header[3:4] = b"X"
    a.extents[0].seal()
    return f"first extent magic changed to 'VMAX' (MD5 recomputed) at offset {a.extent_offset(0)}"


def extent_reserved(a):
    if not a.extents:
        raise Unsuitable("the archive has no extent")
    struct.pack_into(">H", a.extents[0].header, 4, 1)
    a.extents[0].seal()
    return f"first extent reserved1 set to 1 (MD5 recomputed) at offset {a.extent_offset(0) + 4}"


def uuid_mismatch(a):
    if not a.extents:
        raise Unsuitable("the archive has no extent")
    a.extents[0].header[23] ^= 0x01
    a.extents[0].seal()
    return (f"uuid of the first extent changed in its last byte (MD5 recomputed) at offset "
            f"{a.extent_offset(0) + 8}")


def block_count_high(a):
    if not a.extents:
        raise Unsuitable("the archive has no extent")
    extent = a.extents[0]
    extent.block_count += 1
    extent.data += GARBAGE_BLOCK               # so the extent is still complete
    extent.seal()
    return (f"first extent block_count raised to {extent.block_count} and one unannounced "
            f"block appended to its data (MD5 recomputed) at offset {a.extent_offset(0) + 6}")


def block_count_low(a):
    index = first_extent_with_data(a)
    extent = a.extents[index]
    extent.block_count -= 1
    del extent.data[-BLOCK:]                   # so the extent length matches block_count
    extent.seal()
    return (f"extent {index} block_count lowered to {extent.block_count} and its last block "
            f"removed (MD5 recomputed) at offset {a.extent_offset(index) + 6}")


def duplicate_cluster(a):
    need_devices(a)
    original = a.extents[0].entries()[0]
    data = a.extents[0].data[:(original >> 48).bit_count() * BLOCK]
    index, slot = a.add_entry(original, bytes(data))
    return (f"dev {original >> 32 & 0xFF} cluster {original & 0xFFFFFFFF} stored a second "
            f"time (with its blocks) at offset {a.entry_offset(index, slot)}")


def cluster_past_end(a):
    dev_id, _, size = need_devices(a)[0]
    cluster = (size + CLUSTER - 1) // CLUSTER
    index, slot = a.add_entry(dev_id << 32 | cluster, b"")
    return (f"entry for dev {dev_id} cluster {cluster} (one past the last) added, its cluster "
            f"field at offset {a.entry_offset(index, slot) + 4}")


def block_past_end(a):
    for dev_id, _, size in need_devices(a):
        last = (size - 1) // CLUSTER
        inside = (size - last * CLUSTER + BLOCK - 1) // BLOCK     # blocks touching the device
        if inside == 16:
            continue
        for index, extent in enumerate(a.extents):
            for slot, entry in enumerate(extent.entries()):
                if entry >> 32 & 0xFF != dev_id or entry & 0xFFFFFFFF != last:
                    continue
                mask = entry >> 48
                # The new bit is above every existing one, so its block goes after theirs.
                at = a.data_offset_of(index, slot) + mask.bit_count() * BLOCK
                extent.data[at:at] = GARBAGE_BLOCK
                extent.set_entry(slot, entry | 1 << (48 + inside))
                extent.block_count += 1
                extent.seal()
                return (f"dev {dev_id} (size {size}) cluster {last}: mask bit of block {inside} "
                        f"(wholly past the end) set and a block stored for it (MD5 recomputed) "
                        f"at offset {a.entry_offset(index, slot)}")
    raise Unsuitable("no device has a last cluster with a 4 KiB block wholly past its end "
                     "(needs a size whose remainder modulo 65536 is at most 61440)")


def unknown_dev_id(a):
    dev_id = len(a.devices()) + 1
    index, slot = a.add_entry(dev_id << 32, b"")
    return (f"entry for the undeclared dev_id {dev_id} added, its dev_id byte at offset "
            f"{a.entry_offset(index, slot) + 3}")


def bad_blob_pointer(a):
    (pointer,) = struct.unpack_from(">I", a.header, 2044)
    field, what = 2044, "config 0 name pointer"
    if not pointer:
        field, what = 4096 + 32, "device 1 name pointer"
        (pointer,) = struct.unpack_from(">I", a.header, field)
        if not pointer:
            raise Unsuitable("the archive has neither a config nor a device")
    # pointer + 1 is the second byte of the length prefix: never a blob start.
    struct.pack_into(">I", a.header, field, pointer + 1)
    seal(a.header, 32)
    return f"{what} moved from {pointer} to {pointer + 1} (MD5 recomputed) at offset {field}"


def blob_past_end(a):
    size = a.header_size - HEADER_FIXED + 1
    struct.pack_into(">I", a.header, 52, size)
    seal(a.header, 32)
    return (f"blob_buffer_size set to {size}, one past header_size {a.header_size} "
            f"(MD5 recomputed) at offset 52")


def rename(a, prefer, new_name):
    """Gives config 0 or device 1 (PREFER first, the other if absent) a new name."""
    configs, devices = a.configs(), a.devices()
    order = ["config", "device"] if prefer == "config" else ["device", "config"]
    for kind in order:
        if kind == "config" and configs:
            old = configs[0][0]
            configs[0] = (new_name(old), configs[0][1])
            label = "config 0"
        elif kind == "device" and devices:
            old = devices[0][1]
            devices[0] = (devices[0][0], new_name(old), devices[0][2])
            label = "device 1"
        else:
            continue
        a.rebuild_header(configs, devices)
        new = new_name(old)
        at = a.locate_blob(new + b"\0")
        return (f"{label} name {old!r} renamed {new!r} (blob buffer rebuilt, header_size "
                f"{a.header_size}, MD5 recomputed) at offset {at}")
    raise Unsuitable("the archive has neither a config nor a device")


def name_slash(a):
    return rename(a, "device", lambda old: b"sub/" + old)


def name_dotdot(a):
    return rename(a, "config", lambda old: b"..")


def name_empty(a):
    return rename(a, "config", lambda old: b"")


def name_control(a):
    return rename(a, "device", lambda old: old + b"\x01x")


def tail_not_zero(a):
    for dev_id, _, size in need_devices(a):
        used = size % BLOCK
        if not used:
            continue
        last = (size - 1) // CLUSTER
        for index, extent in enumerate(a.extents):
            for slot, entry in enumerate(extent.entries()):
                if entry >> 32 & 0xFF != dev_id or entry & 0xFFFFFFFF != last:
                    continue
                mask = entry >> 48
                if not mask >> ((size - 1) % CLUSTER // BLOCK) & 1:
                    continue                    # the partial block was all zero: omitted
                # The partial block has the highest set bit, so its data comes last.
                at = a.data_offset_of(index, slot) + (mask.bit_count() - 1) * BLOCK + used
                extent.data[at] = 0xA5          # data is not checksummed: no MD5 to redo
                where = a.extent_offset(index) + 512 + at
                return (f"dev {dev_id} (size {size}): first byte past the device end in the "
                        f"stored last block set to 0xa5 at offset {where}")
    raise Unsuitable("no device has a stored partial last block (a size that is not a "
                     "multiple of 4096 and non-zero data in its last block)")


def truncate_extent(a):
    index = first_extent_with_data(a, last=True)
    cut = a.extent_offset(index) + 512 + BLOCK // 2
    del a.extents[index + 1:]
    a.extents[index].data = a.extents[index].data[:BLOCK // 2]
    return (f"file cut inside the data of extent {index} (which starts at "
            f"{a.extent_offset(index)}) at offset {cut}")


def truncate_header(a):
    cut = a.header_size - 256
    a.header = a.header[:cut]
    a.extents = []
    return f"file cut inside the header (header_size {a.header_size}) at offset {cut}"


def truncate_at_boundary(a):
    if not a.extents:
        raise Unsuitable("the archive has no extent")
    index = len(a.extents) - 1
    at = a.extent_offset(index)
    dropped = len(a.extents[index].entries())
    del a.extents[index]
    return f"last extent ({dropped} clusters) dropped: the file now ends at offset {at}"


def trailing_garbage(a):
    at = a.extent_offset(len(a.extents))
    a.tail = b"trailing garbage, not an extent\n" * 32
    return f"{len(a.tail)} bytes of garbage appended at offset {at}"


DEFECTS = {
    "bad-magic": bad_magic,
    "bad-version": bad_version,
    "bad-header-md5": bad_header_md5,
    "bad-extent-md5": bad_extent_md5,
    "bad-extent-magic": bad_extent_magic,
    "extent-reserved": extent_reserved,
    "uuid-mismatch": uuid_mismatch,
    "block-count-high": block_count_high,
    "block-count-low": block_count_low,
    "duplicate-cluster": duplicate_cluster,
    "cluster-past-end": cluster_past_end,
    "block-past-end": block_past_end,
    "unknown-dev-id": unknown_dev_id,
    "bad-blob-pointer": bad_blob_pointer,
    "blob-past-end": blob_past_end,
    "name-slash": name_slash,
    "name-dotdot": name_dotdot,
    "name-empty": name_empty,
    "name-control": name_control,
    "tail-not-zero": tail_not_zero,
    "truncate-extent": truncate_extent,
    "truncate-header": truncate_header,
    "truncate-at-boundary": truncate_at_boundary,
    "trailing-garbage": trailing_garbage,
}


def main():
    if sys.argv[1:] == ["--list"]:
        print("\n".join(DEFECTS))
        return 0
    parser = argparse.ArgumentParser(prog=PROG, usage="%(prog)s IN OUT DEFECT | --list",
                                     description="Copy a valid VMA archive with one defect.")
    parser.add_argument("input", metavar="IN")
    parser.add_argument("output", metavar="OUT")
    parser.add_argument("defect", metavar="DEFECT", choices=DEFECTS,
                        help="one of: " + ", ".join(DEFECTS))
    args = parser.parse_args()
    try:
        with open(args.input, "rb") as file:
            archive = Archive(file.read())
        description = DEFECTS[args.defect](archive)
        with open(args.output, "wb") as file:
            file.write(archive.serialize())
    except Unsuitable as problem:
        print(f"{PROG}: {args.input}: cannot apply {args.defect}: {problem}", file=sys.stderr)
        return 1
    except (struct.error, IndexError, ValueError) as problem:
        print(f"{PROG}: {args.input}: not a valid VMA archive ({problem})", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{PROG}: {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    print(f"{args.defect}: {description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
