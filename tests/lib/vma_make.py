#!/usr/bin/env python3
"""Test-only VMA archive generator, written from ../shared/spec/vma-format.md.

It exists so that vma_check.py and vma_corrupt.py can be tested without the C writer;
it is not a reference for that writer.

usage: vma_make.py [-c NAME=FILE]... [-d NAME=FILE]... [--entries N] [--shuffle]
                   [--interleave] [--seed N] [--keep-zero-blocks] [--uuid UUID]
                   [--ctime SECONDS] OUT|-

Each -d adds a device (dev ids 1, 2, ... in the order given) whose size and contents
are those of FILE; each -c adds a config NAME holding FILE's bytes.  Clusters are
written in order, device after device, or in a seeded random order across all devices
with --shuffle (as a live backup does), or with --interleave in order per device, the
devices taking turns cluster by cluster (as backup jobs running side by side do).  --keep-zero-blocks stores all-zero blocks
instead of omitting them (a sloppy writer, to test vma_check's warning).
"""

import argparse
import hashlib
import random
import struct
import sys
import time
import uuid

HEADER_FIXED = 12288
BLOCK = 4096
CLUSTER = 65536
ENTRIES_PER_EXTENT = 59
ZERO_BLOCK = bytes(BLOCK)


def name_and_file(text):
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=FILE")
    return name.encode(), path


def build_header(archive_uuid, ctime, configs, devices):
    """configs: [(name, data)], devices: [(name, size)]; returns the header bytes."""
    blobs = bytearray(1)                 # byte 0 reserved: pointer 0 means "no blob"

    def add_blob(data):
        if len(data) > 0xFFFF:
            sys.exit(f"vma_make: blob of {len(data)} bytes is above 65535")
        start = len(blobs)
        blobs.extend(struct.pack("<H", len(data)))       # the one little-endian field
        blobs.extend(data)
        return start

    config_ptrs = [(add_blob(name + b"\0"), add_blob(data)) for name, data in configs]
    device_ptrs = [add_blob(name + b"\0") for name, _ in devices]
    header_size = HEADER_FIXED + (len(blobs) + 511) // 512 * 512
    header = bytearray(header_size)
    header[0:4] = b"VMA\0"
    struct.pack_into(">I16sq", header, 4, 1, archive_uuid.bytes, ctime)
    struct.pack_into(">III", header, 48, HEADER_FIXED, len(blobs), header_size)
    for slot, (name_ptr, data_ptr) in enumerate(config_ptrs):
        struct.pack_into(">I", header, 2044 + 4 * slot, name_ptr)
        struct.pack_into(">I", header, 3068 + 4 * slot, data_ptr)
    for index, ((_, size), name_ptr) in enumerate(zip(devices, device_ptrs)):
        struct.pack_into(">IIQ", header, 4096 + 32 * (index + 1), name_ptr, 0, size)
    header[HEADER_FIXED:HEADER_FIXED + len(blobs)] = blobs
    header[32:48] = hashlib.md5(header).digest()
    return bytes(header)


def extent(archive_uuid, entries, data):
    header = bytearray(512)
    header[0:4] = b"VMAE"
    struct.pack_into(">HH16s", header, 4, 0, len(data) // BLOCK, archive_uuid.bytes)
    for slot, entry in enumerate(entries):
        struct.pack_into(">Q", header, 40 + 8 * slot, entry)
    header[24:40] = hashlib.md5(header).digest()
    return bytes(header) + bytes(data)


def cluster_entry(dev_id, cluster, size, content, keep_zero):
    """Returns (blockinfo, stored bytes) for one cluster of a device."""
    start = cluster * CLUSTER
    if len(content) < CLUSTER:
        content = content + bytes(CLUSTER - len(content))   # zero-fill past the device end
    mask = 0
    stored = bytearray()
    for block in range(16):
        if start + block * BLOCK >= size:
            break
        piece = content[block * BLOCK:(block + 1) * BLOCK]
        if piece == ZERO_BLOCK and not keep_zero:
            continue
        mask |= 1 << block
        stored += piece
    return mask << 48 | dev_id << 32 | cluster, stored


def main():
    parser = argparse.ArgumentParser(prog="vma_make", description="Write a test VMA archive.")
    parser.add_argument("out", metavar="OUT|-")
    parser.add_argument("-c", "--config", type=name_and_file, action="append", default=[])
    parser.add_argument("-d", "--device", type=name_and_file, action="append", default=[])
    parser.add_argument("--entries", type=int, default=ENTRIES_PER_EXTENT,
                        help="blockinfo entries per extent, 1..59 (Proxmox uses 58)")
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--interleave", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-zero-blocks", action="store_true")
    parser.add_argument("--uuid", type=uuid.UUID, default=None)
    parser.add_argument("--ctime", type=int, default=None)
    args = parser.parse_args()
    if not 1 <= args.entries <= ENTRIES_PER_EXTENT:
        parser.error("--entries must be 1..59")

    archive_uuid = args.uuid or uuid.uuid4()
    ctime = int(time.time()) if args.ctime is None else args.ctime
    configs = []
    for name, path in args.config:
        with open(path, "rb") as file:
            configs.append((name, file.read()))
    devices = []
    for name, path in args.device:
        file = open(path, "rb")
        file.seek(0, 2)
        devices.append((name, file.tell(), file))

    order = [(dev_id, cluster)
             for dev_id, (_, size, _) in enumerate(devices, 1)
             for cluster in range((size + CLUSTER - 1) // CLUSTER)]
    if args.shuffle:
        random.Random(args.seed).shuffle(order)
    elif args.interleave:
        order.sort(key=lambda dev_cluster: (dev_cluster[1], dev_cluster[0]))

    out = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")
    out.write(build_header(archive_uuid, ctime, configs, [(n, s) for n, s, _ in devices]))
    if not order:
        out.write(extent(archive_uuid, [], b""))          # a diskless archive: one empty extent
    for first in range(0, len(order), args.entries):
        entries, data = [], bytearray()
        for dev_id, cluster in order[first:first + args.entries]:
            _, size, file = devices[dev_id - 1]
            file.seek(cluster * CLUSTER)
            entry, stored = cluster_entry(dev_id, cluster, size, file.read(CLUSTER),
                                          args.keep_zero_blocks)
            entries.append(entry)
            data += stored
        out.write(extent(archive_uuid, entries, data))
    out.close()


if __name__ == "__main__":
    main()
