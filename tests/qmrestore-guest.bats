#!/usr/bin/env bats
# shellcheck disable=SC2154 # bats sets $stderr
# The boot proof of qmrestore.sh: the real tiny test guest (TCG, its own qemu-ga) gets a marker
# file on its ext4 disk and is backed up live by vzdump.sh, once for the file; each test
# restores that archive with qmrestore.sh as a new VM (in qcow2; raw onto a loop device) and
# boots QEMU on what was restored: the guest's agent answers and reads the marker back. Slow
# (three guest boots).

setup_file() {
	load lib/common
	load lib/vzdump
	load lib/guest
	vz_guest_start
	export MARKER=marker-$RANDOM-$RANDOM ARCHIVE
	guest_exec "$GUEST_WD" /bin/sh -c "echo $MARKER >/mnt/marker && sync" >/dev/null
	vz_backup "$GUEST_WD" 100 2>"$BATS_FILE_TMPDIR/backup.log" ||
		{ cat "$BATS_FILE_TMPDIR/backup.log" >&3 && return 1; }
	ARCHIVE=$(echo "$GUEST_WD"/dump/vzdump-qemu-100-*.vma)
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
	LOOPDEV= ONLOOP_WD=
}

teardown() {
	[ -z "$ONLOOP_WD" ] || guest_stop "$ONLOOP_WD"
	[ -z "$LOOPDEV" ] || losetup -d "$LOOPDEV" || true
}

@test "a guest backed up live, restored as a new VM in qcow2, boots and reads its marker back" {
	marker=$MARKER
	archive=$ARCHIVE
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

@test "the guest's backup restored raw onto a loop device (--target) boots and reads its marker back" {
	[ "$(id -u)" = 0 ] || skip "losetup needs root"
	truncate -s 64M "$BATS_TEST_TMPDIR/loop.img"
	LOOPDEV=$(losetup -f --show "$BATS_TEST_TMPDIR/loop.img" 2>"$BATS_TEST_TMPDIR/losetup.err") ||
		skip "losetup -f --show failed: $(cat "$BATS_TEST_TMPDIR/losetup.err")"
	S=$BATS_TEST_TMPDIR/store C=$BATS_TEST_TMPDIR/conf
	mkdir -p "$S" "$C"
	run --separate-stderr -0 "$TOP/qmrestore.sh" --storage "$S" --confdir "$C" \
		--rundir "$GUEST_WD/run" --target "virtio0=$LOOPDEV" "$ARCHIVE" 301
	assert_equal "$(cat "$C/301.conf")" "agent: 1
virtio0: $LOOPDEV"
	# Nothing in the storage: no image, no empty image folder.
	assert_equal "$(find "$S")" "$S"
	ONLOOP_WD=$BATS_TEST_TMPDIR/onloop
	mkdir -p "$ONLOOP_WD"
	ln -s "$LOOPDEV" "$ONLOOP_WD/guestdisk.raw"
	guest_start "$ONLOOP_WD"
	run -0 guest_exec "$ONLOOP_WD" /bin/cat /mnt/marker
	assert_output "$MARKER"
}
