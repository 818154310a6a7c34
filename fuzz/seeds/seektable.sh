#!/bin/bash
# Seeds for fuzz_seektable: seekable zstd archives by vma-create -z zstd (one frame, several,
# an empty last one), and the same with the data cut off before the table.
set -euo pipefail

out=${1:?usage: seektable.sh DIR}
: "${VZ_BIN:?VZ_BIN: the built tools}"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

head -c 5000 /dev/urandom >"$work/small.raw"
seq 1 380000 >"$work/text.raw"
echo "name: vm100" >"$work/qemu-server.conf"
"$VZ_BIN/vma-create" -z zstd drive-scsi0="$work/small.raw" >"$out/one-frame.zst"
"$VZ_BIN/vma-create" -z zstd drive-scsi0="$work/text.raw" >"$out/three-frames.zst"
"$VZ_BIN/vma-create" -z zstd -c "$work/qemu-server.conf" >"$out/config-only.zst"
# only the table: the frames' bytes dropped
size=$(stat -c %s "$out/three-frames.zst")
tail -c 53 "$out/three-frames.zst" >"$out/table-only.zst"
head -c $((size - 1)) "$out/three-frames.zst" >"$out/cut.zst"
