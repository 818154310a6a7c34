#!/bin/bash
# Seeds for fuzz_lzop: what the real lzop writes (every level, CRC-32 checksums, a file's name,
# stored and compressed blocks, several blocks, an empty input, two files in one) and what the
# built vma-create -z lzo writes. Each file stays under 64 KiB.
# Usage: fuzz/seeds/lzop.sh DIR   (VZ_BIN: the folder of the built tools)
set -euo pipefail
# shellcheck source=fuzz/seeds/random-bytes.bash
source "$(dirname -- "${BASH_SOURCE[0]}")/random-bytes.bash"
out=$(realpath "$1")
vma_create=${VZ_BIN:?VZ_BIN must name the folder of the built tools}/vma-create
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"


bytes 3000 a >random-3k
seq 1 4000 >text
# Three blocks of 256 KiB, the last one short: zeros, text, zeros.
{
	head -c 300000 /dev/zero
	seq 1 20000
	head -c 300000 /dev/zero
} >blocks
printf 'name: fuzz\nmemory: 128\n' >qemu-server.conf
truncate -s 70000 disk
bytes 5000 b | dd of=disk conv=notrunc status=none

mkdir seeds
lzop -c </dev/null >seeds/empty.lzo
lzop -c <random-3k >seeds/stored.lzo
lzop -c <text >seeds/text.lzo
lzop -1 -c <text >seeds/text-1.lzo
lzop -9 -c <text >seeds/text-9.lzo
lzop --crc32 -c <text >seeds/text-crc32.lzo
lzop -c <blocks >seeds/blocks.lzo
lzop -o seeds/named.lzo text
cat seeds/text.lzo seeds/stored.lzo >seeds/two-files.lzo
"$vma_create" -z lzo -o seeds/config.vma.lzo -c qemu-server.conf
"$vma_create" -z lzo -o seeds/disk.vma.lzo -c qemu-server.conf drive-scsi0=disk
# The fuzz target also writes every input with lzop.c's writer: plain data is a seed too.
cp text seeds/plain-text
mv -f seeds/* "$out/"
