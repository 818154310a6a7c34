#!/usr/bin/env bats
# vzdump.sh --incremental 1 against a real QEMU (no guest) with a raw disk on virtio-blk and a
# qcow2 disk on scsi-hd: chains of incrementals whose every point restores to the disks as
# they were at that backup (a model of each disk gets the same writes as QEMU), the reasons
# for a full, the bitmaps after failures of every kind, retention with chains.

BATS_TEST_TIMEOUT=600

setup() {
	load lib/common
	load lib/vzdump
	load lib/vma
	VM=$BATS_TEST_TMPDIR/vm
	mkdir -p "$VM/states"
	# (A state file of its own: a test that fails must not hold up the next one.)
	export VZDUMP_STATEDIR=$BATS_TEST_TMPDIR/state
	mkdir -m 0700 "$VZDUMP_STATEDIR"
	vz_make_two_disks "$VM"
	# The models: the guest-visible bytes of each disk.
	cp "$VM/d0.raw" "$VM/m0.raw"
	qemu-img convert -f qcow2 -O raw "$VM/d1.qcow2" "$VM/m1.raw"
	start_vm both
	vz_dirs "$VM" 100
	printf 'name: chained\nvirtio0: %s\nscsi0: %s,format=qcow2\n' "$VM/d0.raw" "$VM/d1.qcow2" \
		>"$VM/conf/100.conf"
	LAST=
}

teardown() {
	qemu_stop "$VM"
}

# QEMU on the disks (both, or the qcow2 one alone), running.
start_vm() { # both|qcow2
	local -a raw=()
	[ "$1" = qcow2 ] || raw=(-blockdev "driver=file,node-name=file0,filename=$VM/d0.raw"
		-blockdev driver=raw,node-name=drive-virtio0,file=file0
		-device virtio-blk-pci,drive=drive-virtio0,id=virtio0)
	qemu_start_bare "$VM" "${raw[@]}" -device virtio-scsi-pci,id=vscsi \
		-blockdev "driver=file,node-name=file1,filename=$VM/d1.qcow2" \
		-blockdev driver=qcow2,node-name=n1,file=file1 \
		-device scsi-hd,drive=n1,id=scsi0,bus=vscsi.0
	qmp_raw "$VM" '{"execute":"cont"}' >/dev/null
}

# A write through QEMU into disk virtio0 or scsi0, and the same into its model.
vm_write() { # virtio0|scsi0 QEMU-IO-COMMAND
	local dev=scsi0 model=$VM/m1.raw
	if [ "$1" = virtio0 ]; then
		dev=/machine/peripheral/virtio0/virtio-backend
		model=$VM/m0.raw
	fi
	qmpctl -s "$VM/qmp.sock" -H "qemu-io -d $dev \"$2\"" >/dev/null
	qemu-io -f raw -c "$2" "$model" >/dev/null
	! grep -q 'failed' "$VM/qemu.out" || fail "a write failed: $(cat "$VM/qemu.out")"
}

# vzdump.sh --incremental 1 ARGS of VM 100, in a second of its own (names are by the second);
# LAST is its archive, whose disks' models are kept in states/.
backup() { # ARGS...
	local before
	before=$(date +%s)
	while [ "$(date +%s)" = "$before" ]; do sleep 0.1; done
	vz_backup "$VM" --incremental 1 "$@" 100 >"$VM/out" 2>"$VM/err" || fail "$(cat "$VM/err")"
	LAST=$(ls "$VM"/dump/vzdump-qemu-100-*.vma* | grep -v '\.sha256$' | sort | tail -n 1)
	cp "$VM/m0.raw" "$VM/states/${LAST##*/}.m0"
	cp "$VM/m1.raw" "$VM/states/${LAST##*/}.m1"
}

# The archive restores to the disks as they were at its backup, and nothing else is in it.
assert_restores() { # ARCHIVE [DEVICES: both|qcow2]
	local x=$BATS_TEST_TMPDIR/x-${1##*/}
	rm -rf "$x"
	vma-extract "$1" "$x"
	if [ "${2:-both}" = both ]; then
		assert_equal "$(sha "$x/disk-drive-virtio0.raw")" "$(sha "$VM/states/${1##*/}.m0")"
		assert_equal "$(ls "$x" | tr '\n' ' ')" "disk-drive-scsi0.raw disk-drive-virtio0.raw qemu-server.conf "
	fi
	assert_equal "$(sha "$x/disk-drive-scsi0.raw")" "$(sha "$VM/states/${1##*/}.m1")"
}

# Our bitmaps on each disk node: NODE NAME RECORDING, sorted (QEMU's own unnamed ones left out).
bitmaps() {
	qmp_raw "$VM" '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' |
		jq -r '.return[] | .["node-name"] as $n | .["dirty-bitmaps"] // [] | .[]
			| select(.name // "" | startswith("vzdump-")) | "\($n) \(.name) \(.recording)"' | sort
}

log_of() { cat "${1%%.*}.log"; }

@test "a full and three incrementals: each restores bit for bit, only the changed clusters stored, the log says which and why" {
	backup
	F=$LAST
	[[ ${F##*/} =~ ^vzdump-qemu-100-[0-9_-]+\.vma$ ]] || fail "the first backup is $F"
	run -0 log_of "$F"
	assert_line --partial "INFO: full backup: no earlier backup of VM 100 in $VM/dump"
	assert_equal "$(bitmaps)" "drive-virtio0 $(basename "${F%%.*}") true
n1 $(basename "${F%%.*}") true"

	vm_write virtio0 "write -P 0x11 5M 64k"
	vm_write scsi0 "write -P 0x12 10M 128k"
	vm_write scsi0 "write -P 0x13 104857600 3584"
	backup
	I1=$LAST
	[[ ${I1##*/} =~ ^vzdump-qemu-100-[0-9_-]+\.inc\.vma$ ]] || fail "the second backup is $I1"
	run -0 log_of "$I1"
	assert_line --partial "INFO: incremental backup: the changes since ${F##*/} (chain depth 1 of at most 6)"
	# vzdump's lines for dirty bitmaps: what each disk's bitmap counted, then all of it
	assert_line --regexp "^[0-9-]+ [0-9:]+ INFO: virtio0: dirty-bitmap status: OK \(64\.0 KiB of 64\.0 MiB dirty\)$"
	assert_line --regexp "^[0-9-]+ [0-9:]+ INFO: scsi0: dirty-bitmap status: OK \(192\.0 KiB of 100\.0 MiB dirty\)$"
	assert_line --regexp "^[0-9-]+ [0-9:]+ INFO: using fast incremental mode \(dirty-bitmap\), 256\.0 KiB dirty of 164\.0 MiB total$"
	run -0 vma_check --strict --incremental --clusters "$I1"
	assert_equal "$output" "drive-scsi0 160 data
drive-scsi0 161 data
drive-scsi0 1600 data
drive-virtio0 80 data"
	# Only the new bitmap is left, counting from this backup.
	assert_equal "$(bitmaps)" "drive-virtio0 $(basename "${I1%%.*}") true
n1 $(basename "${I1%%.*}") true"

	vm_write virtio0 "write -z 5M 1M"
	vm_write scsi0 "write -P 0x21 0 4k"
	backup --compress zstd
	I2=$LAST
	[[ $I2 == *.inc.vma.zst ]] || fail "the third backup is $I2"

	vm_write virtio0 "write -P 0x31 63M 1M"
	backup --json
	I3=$LAST
	assert_equal "$(jq -c '.vms[0] | [.kind, .base, .full_reason, (.snapshot_ms | type)]' "$VM/out")" \
		"[\"incremental\",\"$I2\",null,\"number\"]"

	for a in "$F" "$I1" "$I2" "$I3"; do assert_restores "$a"; done
	# The chain as one full archive, which Proxmox's strict reader takes.
	vma-extract --to-vma "$BATS_TEST_TMPDIR/all.vma" "$I3"
	vma_check --strict "$BATS_TEST_TMPDIR/all.vma"
	cp "$BATS_TEST_TMPDIR/all.vma" "$VM/all.vma"
	cp "$VM/states/${I3##*/}.m0" "$VM/states/all.vma.m0"
	cp "$VM/states/${I3##*/}.m1" "$VM/states/all.vma.m1"
	assert_restores "$VM/all.vma"
	# qmrestore.sh restores an incremental backup, chain and all.
	mkdir -p "$BATS_TEST_TMPDIR/store" "$BATS_TEST_TMPDIR/qconf"
	"$TOP/qmrestore.sh" --storage "$BATS_TEST_TMPDIR/store" --confdir "$BATS_TEST_TMPDIR/qconf" \
		--rundir "$VM/run" "$I2" 200
	assert_equal "$(vz_disk_sha "$BATS_TEST_TMPDIR/store/200/vm-200-disk-0.raw")" "$(sha "$VM/states/${I2##*/}.m0")"
	assert_equal "$(vz_disk_sha "$BATS_TEST_TMPDIR/store/200/vm-200-disk-1.qcow2")" "$(sha "$VM/states/${I2##*/}.m1")"
}

@test "--full-every, stop mode and a disk resized make fulls, each with its reason; suspend mode chains" {
	backup --full-every 2
	vm_write virtio0 "write -P 1 0 64k"
	backup --full-every 2 --mode suspend
	[[ $LAST == *.inc.vma ]] || fail "suspend mode made $LAST"
	backup --full-every 2
	[[ $LAST == *.inc.vma ]] || fail "the second incremental is $LAST"
	assert_restores "$LAST"
	backup --full-every 2
	run -0 log_of "$LAST"
	assert_line --partial "INFO: full backup: the chain has 2 incremental backups already (--full-every 2)"
	[[ $LAST != *.inc.* ]] || fail "$LAST"
	qmp_raw "$VM" '{"execute":"block_resize","arguments":{"node-name":"drive-virtio0","size":134217728}}' >/dev/null
	truncate -s 128M "$VM/m0.raw"
	backup
	run -0 log_of "$LAST"
	assert_line --partial "INFO: full backup: disk drive-virtio0 resized from 67108864 to 134217728 bytes since "
	assert_restores "$LAST"
	resized=$LAST
	backup --json
	[[ $LAST == *.inc.vma ]] || fail "$LAST"
	assert_restores "$LAST"
	# The archive that chain starts from has gone: the next one is a full, saying why.
	inc=$LAST
	mv "$resized" "$BATS_TEST_TMPDIR/"
	backup --json
	run -0 log_of "$LAST"
	assert_line --partial "INFO: full backup: the previous backup ${inc##*/} cannot be read: $inc: its parent $resized (uuid "
	assert_equal "$(jq -c '.vms[0] | [.kind, .base]' "$VM/out")" '["full",null]'
	[[ $(jq -r '.vms[0].full_reason' "$VM/out") == "the previous backup ${inc##*/} cannot be read: "* ]]
}

@test "QEMU restarted: the qcow2 disk's chain goes on, a raw disk's bitmap is gone and the next backup is a full saying so" {
	backup
	vm_write scsi0 "write -P 5 1M 64k"
	backup
	qemu_stop "$VM"
	start_vm both
	vm_write scsi0 "write -P 6 2M 64k"
	backup
	run -0 log_of "$LAST"
	assert_line --regexp "INFO: full backup: no bitmap vzdump-qemu-100-[0-9_-]+ on drive-virtio0"
	assert_restores "$LAST"
	# The qcow2 disk alone: a full first (a disk fewer), then its persistent bitmap outlives
	# QEMU, twice, and the chain goes on.
	qemu_stop "$VM"
	start_vm qcow2
	printf 'name: chained\nscsi0: %s,format=qcow2\n' "$VM/d1.qcow2" >"$VM/conf/100.conf"
	vm_write scsi0 "write -P 7 3M 64k"
	backup
	run -0 log_of "$LAST"
	assert_line --regexp "INFO: full backup: disk drive-virtio0 removed since vzdump-qemu-100-[0-9_-]+\.vma$"
	for p in 8 9; do
		qemu_stop "$VM"
		start_vm qcow2
		vm_write scsi0 "write -P $p ${p}M 64k"
		backup
		[[ $LAST == *.inc.vma ]] || fail "$(log_of "$LAST")"
	done
	assert_restores "$LAST" qcow2
	run -0 vma_check --strict --incremental --clusters "$LAST"
	assert_output "drive-scsi0 144 data"
}

@test "a backup that fails after the instant (a hook, the writer killed) gives its changes back: the next incremental has them all" {
	backup
	good=$LAST
	vm_write virtio0 "write -P 0x41 6M 64k"
	vm_write scsi0 "write -P 0x42 11M 64k"
	cat >"$VM/hook" <<-END
		#!/bin/bash
		[ "\$1" = post-thaw ] || exit 0
		"$VZ_BIN/qmpctl" -s "$VM/qmp.sock" -H 'qemu-io -d scsi0 "write -P 0x43 12M 64k"' >/dev/null
		exit 1
	END
	chmod +x "$VM/hook"
	qemu-io -f raw -c "write -P 0x43 12M 64k" "$VM/m1.raw" >/dev/null
	run -1 vz_backup "$VM" --incremental 1 --script "$VM/hook" 100
	assert_equal "$(ls "$VM"/dump/*.vma* | grep -cv sha256)" 1
	assert_equal "$(bitmaps)" "drive-virtio0 $(basename "${good%%.*}") true
n1 $(basename "${good%%.*}") true"
	# The writer killed in the middle of an incremental copy.
	vm_write virtio0 "write -P 0x44 20M 8M"
	cat >"$VM/hook" <<-END
		#!/bin/bash
		[ "\$1" = post-thaw ] || exit 0
		pkill -KILL -f -- "--listen $VM/tmp/" || exit 1
	END
	run -1 vz_backup "$VM" --incremental 1 --script "$VM/hook" 100
	assert_equal "$(ls "$VM"/dump/*.vma* | grep -cv sha256)" 1
	assert_equal "$(bitmaps)" "drive-virtio0 $(basename "${good%%.*}") true
n1 $(basename "${good%%.*}") true"
	backup
	[[ $LAST == *.inc.vma ]] || fail "$(log_of "$LAST")"
	assert_restores "$LAST"
	run -0 vma_check --strict --incremental --clusters "$LAST"
	assert_equal "$(grep -c . <<<"$output")" $((1 + 1 + 1 + 128))
}

@test "the driver SIGKILLed during an incremental: the next job gives the changes back, and its incremental has them" {
	backup
	good=$LAST
	vm_write virtio0 "write -P 0x51 7M 64k"
	cat >"$VM/hook" <<-END
		#!/bin/bash
		[ "\$1" = post-thaw ] || exit 0
		touch "$VM/at-instant"
		exec sleep 60
	END
	chmod +x "$VM/hook"
	vz_backup "$VM" --incremental 1 --script "$VM/hook" 100 >/dev/null 2>&1 3>&- &
	driver=$!
	for ((i = 0; i < 600; i++)); do [ -e "$VM/at-instant" ] && break; sleep 0.1; done
	[ -e "$VM/at-instant" ] || fail "the hook never ran"
	pkill -KILL -f -- "--dumpdir $VM/dump"
	pkill -KILL -f -- "$VM/hook" || true
	wait "$driver" || true
	# Both bitmaps are there now: the old one disabled, the new one counting.
	[ "$(bitmaps | grep -c ' false$')" = 2 ] || fail "$(bitmaps)"
	vm_write virtio0 "write -P 0x52 8M 64k"
	backup
	[[ $LAST == *.inc.vma ]] || fail "$(log_of "$LAST")"
	run -0 log_of "$LAST"
	assert_line --partial "giving the changes counted since the killed backup's instant back to its bitmaps"
	assert_restores "$LAST"
	run -0 vma_check --strict --incremental --clusters "$LAST"
	assert_output "drive-virtio0 112 data
drive-virtio0 128 data"
}

@test "retention keeps what an incremental needs; --cleanup removes the bitmaps no chain needs" {
	backup
	F=$LAST
	vm_write scsi0 "write -P 1 0 64k"
	backup
	I1=$LAST
	vm_write scsi0 "write -P 2 64k 64k"
	backup --prune-backups keep-last=1
	I2=$LAST
	assert_equal "$(cd "$VM/dump" && ls | tr '\n' ' ')" \
		"$(for a in "$F" "$I1" "$I2"; do n=${a##*/}; printf '%s %s %s ' "${n%%.*}.log" "$n" "$n.sha256"; done | tr ' ' '\n' | sort | tr '\n' ' ')"
	run -0 log_of "$I2"
	assert_line --partial "needed by"
	assert_restores "$I2"
	# A stray bitmap of ours (a backup to another dump folder, say) goes with --cleanup; the
	# one the newest archive's chain counts on stays.
	qmp_raw "$VM" '{"execute":"block-dirty-bitmap-add","arguments":{"node":"n1","name":"vzdump-qemu-100-2020_01_01-00_00_00"}}' >/dev/null
	qmp_raw "$VM" '{"execute":"block-dirty-bitmap-add","arguments":{"node":"n1","name":"someone-elses"}}' >/dev/null
	vz_backup "$VM" --cleanup 100
	assert_equal "$(bitmaps)" "drive-virtio0 $(basename "${I2%%.*}") true
n1 $(basename "${I2%%.*}") true"
	run -0 qmp_raw "$VM" '{"execute":"query-named-block-nodes","arguments":{"flat":true}}'
	assert_output --partial someone-elses
}
