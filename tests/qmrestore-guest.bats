#!/usr/bin/env bats
# shellcheck disable=SC2154 # bats sets $stderr
# The boot proof of qmrestore.sh: the real tiny test guest (TCG, its own qemu-ga) gets a marker
# file on its ext4 disk, is backed up live by vzdump.sh, and restored by qmrestore.sh as a new
# VM in qcow2; QEMU started on the restored image boots the guest, whose agent answers and
# reads the marker back. Slow (two guest boots).

setup_file() {
	load lib/common
	load lib/vzdump
	load lib/guest
	vz_guest_start
}

teardown_file() {
	load lib/common
	load lib/guest
	guest_stop "$GUEST_WD"
	[ ! -d "$BATS_FILE_TMPDIR/restored" ] || guest_stop "$BATS_FILE_TMPDIR/restored"
}

setup() {
	load lib/common
	load lib/vzdump
	load lib/guest
}

@test "a guest backed up live, restored as a new VM in qcow2, boots and reads its marker back" {
	marker=marker-$RANDOM-$RANDOM
	run -0 guest_exec "$GUEST_WD" /bin/sh -c "echo $marker >/mnt/marker && sync"
	run --separate-stderr -0 vz_backup "$GUEST_WD" 100
	archive=$(echo "$GUEST_WD"/dump/vzdump-qemu-100-*.vma)
	[ -f "$archive" ] || fail "no archive: $(ls "$GUEST_WD/dump")"
	S=$BATS_TEST_TMPDIR/store C=$BATS_TEST_TMPDIR/conf
	mkdir -p "$S" "$C"
	run --separate-stderr -0 "$TOP/qmrestore.sh" --storage "$S" --confdir "$C" \
		--rundir "$GUEST_WD/run" --format qcow2 "$archive" 300
	assert_equal "$(cat "$C/300.conf")" "agent: 1
virtio0: $S/300/vm-300-disk-0.qcow2"
	run -0 qemu-img check -q "$S/300/vm-300-disk-0.qcow2"
	RESTORED_WD=$BATS_FILE_TMPDIR/restored
	mkdir -p "$RESTORED_WD"
	ln -s "$S/300/vm-300-disk-0.qcow2" "$RESTORED_WD/guestdisk.qcow2"
	guest_start "$RESTORED_WD"
	run -0 guest_exec "$RESTORED_WD" /bin/cat /mnt/marker
	assert_output "$marker"
	# The restored VM's agent is its own: the original's answers too, with its own disk.
	run -0 guest_exec "$GUEST_WD" /bin/cat /mnt/marker
	assert_output "$marker"
}
