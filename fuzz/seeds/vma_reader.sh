#!/bin/bash
# Seeds for fuzz_vma_reader: small real archives written by the built vma-create (several
# devices, odd sizes, sparse and dense data, two configs), each plain, zstd, xz and gzip, plus
# Proxmox's own archive from ../shared/fixtures when it is there. Each file stays under 64 KiB.
# Usage: fuzz/seeds/vma_reader.sh DIR   (VZ_BIN: the folder of the built tools)
set -euo pipefail
# shellcheck source=fuzz/seeds/random-bytes.bash
source "$(dirname -- "${BASH_SOURCE[0]}")/random-bytes.bash"
out=$(realpath "$1")
top=$(cd "$(dirname "$0")/../.." && pwd)
vma_create=${VZ_BIN:?VZ_BIN must name the folder of the built tools}/vma-create
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"


bytes 4096 a >dense-4k
bytes 5000 b >odd-5000
bytes 40000 c >dense-40000
# 1 MiB, all zero but one block at 300 KiB and the last byte
truncate -s 1M sparse-1m
bytes 4096 d | dd of=sparse-1m bs=1024 seek=300 conv=notrunc status=none
printf x | dd of=sparse-1m bs=1 seek=$((1048576 - 1)) conv=notrunc status=none
printf y >one-byte
bytes 511 e >odd-511
truncate -s 65536 zero-64k
truncate -s 65537 zero-64k-plus-1
printf z | dd of=zero-64k-plus-1 bs=1 seek=65536 conv=notrunc status=none
printf 'name: fuzz\ncores: 1\nmemory: 128\n' >qemu-server.conf
printf 'a firewall config\n' >qemu-server.fw

# vma-create never replaces a file: the seeds are made here, then moved over the old ones.
mkdir seeds
archive() { # NAME ARGS...
	local name=$1
	shift
	"$vma_create" -o "seeds/$name.vma" "$@"
	"$vma_create" -z zstd -o "seeds/$name.vma.zst" "$@"
	"$vma_create" -z xz -o "seeds/$name.vma.xz" "$@"
	gzip -9n <"seeds/$name.vma" >"seeds/$name.vma.gz"
}

archive one-dense -c qemu-server.conf drive-scsi0=dense-4k
archive two-devices -c qemu-server.conf drive-scsi0=odd-5000 drive-virtio1=sparse-1m
archive dense-40k drive-sata0=dense-40000
archive tiny-devices -c qemu-server.conf -c qemu-server.fw drive-scsi0=one-byte \
	drive-scsi1=odd-511 drive-scsi2=zero-64k drive-scsi3=zero-64k-plus-1 drive-efidisk0=dense-4k

fixture=$top/../shared/fixtures/pve-live-backup-truncated.vma.gz
if [ -f "$fixture" ]; then
	install -m 0644 "$fixture" seeds/pve-live-backup-truncated.vma.gz
fi
mv -f seeds/* "$out"/
