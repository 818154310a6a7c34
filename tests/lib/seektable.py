#!/usr/bin/env python3
"""Reads the seek table of a .zst file in zstd's seekable format (contrib/seekable_format),
independently of the project's C code, and checks it against the file: the frames it lists
cover the file up to the table exactly, each starts with zstd's frame magic, and each entry's
checksum is the frame's own content checksum (its last 4 bytes). Prints one line per frame,
"OFFSET DECOMPRESSED-SIZE", to stdout; exits 1 with the reason on stderr when anything does
not hold, or when the file has no seek table."""
import struct
import sys

SKIPPABLE = 0x184D2A5E
SEEKABLE = 0x8F92EAB1
ZSTD_FRAME = 0xFD2FB528


def fail(why):
    sys.exit("seektable.py: %s" % why)


data = open(sys.argv[1], "rb").read()
if len(data) < 17:
    fail("too short for a seek table")
count, desc, magic = struct.unpack("<IBI", data[-9:])
if magic != SEEKABLE:
    fail("no seek table")
if desc & 0x7C:
    fail("reserved bits set")
entry = 12 if desc & 0x80 else 8
table = 8 + count * entry + 9
start = len(data) - table
skip_magic, skip_size = struct.unpack("<II", data[start:start + 8])
if skip_magic != SKIPPABLE or skip_size != table - 8:
    fail("bad skippable frame header")
offset = 0
for i in range(count):
    fields = struct.unpack("<III" if entry == 12 else "<II",
                           data[start + 8 + i * entry:start + 8 + (i + 1) * entry])
    c_size, d_size = fields[0], fields[1]
    frame = data[offset:offset + c_size]
    if struct.unpack("<I", frame[:4])[0] != ZSTD_FRAME:
        fail("frame %d at %d: not a zstd frame" % (i, offset))
    if entry == 12 and frame[-4:] != struct.pack("<I", fields[2]):
        fail("frame %d at %d: checksum differs from the frame's" % (i, offset))
    print(offset, d_size)
    offset += c_size
if offset != start:
    fail("frames end at %d, the table starts at %d" % (offset, start))
