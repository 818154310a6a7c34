#!/bin/bash
# make demo: back up a throw-away stopped VM's two disks (a raw image and a qcow2 image served by
# qemu-nbd) into a compressed VMA archive with one pipe, list and verify it, restore it, and
# show that every restored disk is bit for bit the original.
#   VZ_BIN  folder of the built tools (default: build/cc/bin)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
PATH="${VZ_BIN:-$top/build/cc/bin}:$PATH"
work=$(mktemp -d /var/tmp/vzdump-demo.XXXXXX)
nbd_pid=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	[ -n "$nbd_pid" ] && kill "$nbd_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
say() {
	if [ -t 1 ]; then printf '\n\033[1m$ %s\033[0m\n' "$*"; else printf '\n$ %s\n' "$*"; fi
}
run() { say "$*"; "$@"; }

echo "A throw-away VM 100 with a 256 MiB raw disk and a 1 GiB qcow2 disk, partly written:"
truncate -s 256M vm-100-disk-0.raw
head -c 48M /dev/urandom | dd of=vm-100-disk-0.raw bs=1M seek=16 conv=notrunc status=none
qemu-img create -q -f qcow2 vm-100-disk-1.qcow2 1G
qemu-io -f qcow2 -c "write -P 0x42 100M 32M" -c "write -z 500M 64M" vm-100-disk-1.qcow2 >/dev/null
cat >100.conf <<'CONF'
name: demo
memory: 1024
scsi0: /var/lib/vms/vm-100-disk-0.raw,size=256M
scsi1: /var/lib/vms/vm-100-disk-1.qcow2,size=1G
CONF
qemu-nbd --read-only --persistent --format=qcow2 --socket="$work/disk1.sock" \
	vm-100-disk-1.qcow2 </dev/null >/dev/null 2>&1 &
nbd_pid=$!
for ((i = 0; i < 100; i++)); do [ -S disk1.sock ] && break; sleep 0.05; done

archive=vzdump-qemu-100-$(date +%Y_%m_%d-%H_%M_%S).vma.zst
say "vma-create -v -z zstd -c 100.conf drive-scsi0=vm-100-disk-0.raw drive-scsi1=nbd+unix:///?socket=$work/disk1.sock > $archive"
vma-create -v -z zstd -c 100.conf drive-scsi0=vm-100-disk-0.raw \
	"drive-scsi1=nbd+unix:///?socket=$work/disk1.sock" >"$archive"
run ls -l "$archive"
run vma-extract -l "$archive"
run vma-extract -t -v "$archive"
run vma-extract -v "$archive" restored
run ls -ls restored

say "compare the restored disks with the originals"
qemu-img convert -O raw vm-100-disk-1.qcow2 disk-1.raw
status=0
for pair in "vm-100-disk-0.raw restored/disk-drive-scsi0.raw" "disk-1.raw restored/disk-drive-scsi1.raw"; do
	read -r orig copy <<<"$pair"
	if cmp -s "$orig" "$copy"; then
		echo "identical: $orig  $copy  sha256 $(sha256sum <"$copy" | cut -c1-16)…"
	else
		echo "DIFFERENT: $orig  $copy"
		status=1
	fi
done
if cmp -s 100.conf restored/100.conf; then echo "identical: 100.conf"; else status=1; fi
exit $status
