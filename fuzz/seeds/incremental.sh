#!/bin/bash
# Seeds for fuzz_incremental: incremental blobs as vzdump.sh writes them, and broken ones.
set -euo pipefail

out=${1:?usage: incremental.sh DIR}
mkdir -p "$out"

u=7b412a1d-028e-4005-bc56-e9f83fdb0865
f=a76e247d-db92-4a04-8675-e11186ff2844
dev='{"name":"drive-scsi0","size":34359738368,"bitmap":"vzdump-2026_12_03-02_00_00"}'
dev2='{"name":"drive-virtio1","size":3149824,"bitmap":"vzdump-2026_12_03-02_00_00"}'
blob() { # NAME DEPTH DEVICES [EXTRA]
	printf '{"format":"vzdump-qemu-incremental","version":1,"parent":{"uuid":"%s","file":"vzdump-qemu-100-2026_12_02-02_00_00.inc.vma.zst"},"full":{"uuid":"%s"},"depth":%s,"devices":[%s]%s}' \
		"$u" "$f" "$2" "$3" "${4:-}" >"$out/$1"
}
blob one-disk 2 "$dev"
blob two-disks 1 "$dev,$dev2"
blob no-disks 1 ''
blob deep 1000 "$dev"
blob too-deep 1001 "$dev"
blob twice 1 "$dev,$dev"
blob extra-key 3 "$dev" ',"comment":"kept"'
blob duplicate-key 3 "$dev" ',"depth":4'
printf '{"format":"vzdump-qemu-incremental","version":2}' >"$out/version-2"
printf '[1,2,3]' >"$out/array"
printf '{"format":"vzdump-qemu-incremental","version":1,"parent":{"uuid":"%s\\u0000","file":"a"}}' "$u" >"$out/nul-in-uuid"
