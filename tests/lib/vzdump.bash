# shellcheck shell=bash
# Helpers for tests/vzdump.bats: `load lib/vzdump` after `load lib/common` (it loads lib/qemu).
#
#   vz_dirs WORKDIR VMID
#       makes WORKDIR/{run,dump,conf,tmp} and links WORKDIR/run/VMID.qmp to WORKDIR/qmp.sock
#       (the QMP socket of qemu_start_bare), the socket layout vzdump.sh expects.
#   vz_start_two_disks WORKDIR
#       QEMU with a 64 MiB raw disk on virtio-blk (node drive-virtio0, device virtio0) and a
#       100 MiB + 3.5 KiB qcow2 disk on scsi-hd (node n1 over file1, device scsi0), both
#       with some data; left in prelaunch. vz_make_two_disks WORKDIR makes the two images
#       alone (WORKDIR/d0.raw, WORKDIR/d1.qcow2).
#   vz_start_one_disk WORKDIR VMID [CONFIG-LINE...]
#       a running QEMU with one 4 MiB raw disk of random data, WORKDIR/d.raw, on virtio-blk
#       (node drive-virtio0, device vblk0), the folders of vz_dirs, and WORKDIR/conf/VMID.conf
#       with the CONFIG-LINEs and virtio0: WORKDIR/d.raw.
#   vz_state WORKDIR
#       prints the VM's block node names (sorted), block jobs, jobs, fdsets and run state,
#       read with qmp_raw (independent of the tools under test).
#   vz_disk_sha FILE
#       sha256 of a disk's guest-visible bytes (qcow2 read through qemu-img, shared).
#   vz_backup WORKDIR ARGS...
#       runs vzdump.sh with --dumpdir/--tmpdir/--confdir/--rundir under WORKDIR.
#   vz_guest_start
#       boots the test guest (lib/guest) as VM 100 in $BATS_FILE_TMPDIR/guest, exported as
#       GUEST_WD, with its sockets in GUEST_WD/run and a config with `agent: 1` (its ext4
#       disk as virtio0). Needs `load lib/guest` first.

_VZ_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib/qemu.bash
source "$_VZ_LIB_DIR/qemu.bash"

vz_dirs() { # WORKDIR VMID
	mkdir -p "$1/run" "$1/dump" "$1/conf" "$1/tmp"
	ln -sf "$1/qmp.sock" "$1/run/$2.qmp"
}

vz_make_two_disks() { # WORKDIR
	local wd=$1
	truncate -s 64M "$wd/d0.raw"
	random_file "$wd/r3m" $((3 * 1024 * 1024))
	dd if="$wd/r3m" of="$wd/d0.raw" bs=1M seek=5 conv=notrunc status=none
	qemu-img create -q -f qcow2 "$wd/d1.qcow2" 104861184
	qemu-io -f qcow2 -c "write -P 0x33 10M 2M" -c "write -P 0x44 104857600 3584" \
		"$wd/d1.qcow2" >/dev/null
}

vz_start_two_disks() { # WORKDIR
	local wd=$1
	vz_make_two_disks "$wd"
	qemu_start_bare "$wd" \
		-blockdev "driver=file,node-name=file0,filename=$wd/d0.raw" \
		-blockdev driver=raw,node-name=drive-virtio0,file=file0 \
		-device virtio-blk-pci,drive=drive-virtio0,id=virtio0 \
		-device virtio-scsi-pci,id=vscsi \
		-blockdev "driver=file,node-name=file1,filename=$wd/d1.qcow2" \
		-blockdev driver=qcow2,node-name=n1,file=file1 \
		-device scsi-hd,drive=n1,id=scsi0,bus=vscsi.0
}

vz_start_one_disk() { # WORKDIR VMID [CONFIG-LINE...]
	local wd=$1 vmid=$2
	shift 2
	random_file "$wd/d.raw" $((4 * 1024 * 1024))
	qemu_start_bare "$wd" -blockdev "driver=file,node-name=f,filename=$wd/d.raw" \
		-blockdev driver=raw,node-name=drive-virtio0,file=f \
		-device virtio-blk-pci,drive=drive-virtio0,id=vblk0 || return 1
	qmp_raw "$wd" '{"execute":"cont"}' >/dev/null
	vz_dirs "$wd" "$vmid"
	printf '%s\n' "$@" "virtio0: $wd/d.raw" >"$wd/conf/$vmid.conf"
}

vz_state() { # WORKDIR
	# One connection (one Python start) for all five.
	qmp_raw "$1" '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' \
		'{"execute":"query-block-jobs"}' '{"execute":"query-jobs"}' \
		'{"execute":"query-fdsets"}' '{"execute":"query-status"}' | jq -c '.return | if type == "array" and (.[0] | has("node-name")? // false)
		then [.[]["node-name"]] | sort elif type == "object" then .status else . end'
}

vz_disk_sha() { # FILE
	case $1 in
	*.qcow2) qemu-img convert -U -f qcow2 -O raw "$1" "$1.raw" && sha "$1.raw" && rm -f "$1.raw" ;;
	*) sha "$1" ;;
	esac
}

vz_backup() { # WORKDIR ARGS...
	local wd=$1
	shift
	"$TOP/vzdump.sh" --dumpdir "$wd/dump" --tmpdir "$wd/tmp" --confdir "$wd/conf" \
		--rundir "$wd/run" "$@"
}

vz_guest_start() {
	guest_build
	export GUEST_WD=$BATS_FILE_TMPDIR/guest
	mkdir -p "$GUEST_WD"
	guest_start "$GUEST_WD"
	vz_dirs "$GUEST_WD" 100
	ln -sf "$GUEST_WD/qga.sock" "$GUEST_WD/run/100.qga"
	printf 'agent: 1\nvirtio0: %s\n' "$GUEST_WD/guestdisk.raw" >"$GUEST_WD/conf/100.conf"
}

# Holds an flock on PATH in a process of its own (pid in $holder) until killed.
hold_lock() { # PATH
	(
		exec 8>>"$1"
		flock 8
		exec sleep 30
	) 3>&- &
	# shellcheck disable=SC2034 # the caller stops it
	holder=$!
	for ((i = 0; i < 100; i++)); do
		flock -n "$1" true || return 0
		sleep 0.05
	done
	fail "could not lock $1"
}
