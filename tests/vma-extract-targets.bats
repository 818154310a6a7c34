#!/usr/bin/env bats
# vma-extract ARCHIVE name=target ...: restoring named devices into new files, existing files
# (--force), block devices and NBD exports, with the size rules and the verify-first pass that
# keeps a damaged archive from touching a target written in place.

setup() {
	load lib/common
	load lib/vma
	enter_work_dir
}

teardown() {
	local f
	for f in "$BATS_TEST_TMPDIR"/work/*.sock.pid; do
		[ -e "$f" ] && nbd_stop "${f%.pid}"
	done
	if [ -n "${LOOPDEV:-}" ]; then
		losetup -d "$LOOPDEV" 2>/dev/null || true
	fi
	return 0
}

# A 16 MiB + 12345-byte disk with 3 MiB of data, a lone block far out and big holes, and a
# second one that is never named; the archive of both.
make_archive() {
	SIZE=$((16 * 1024 * 1024 + 12345))
	truncate -s "$SIZE" d0.raw
	random_file chunk 3M
	dd if=chunk of=d0.raw bs=1M seek=2 conv=notrunc status=none
	random_file chunk 100001
	dd if=chunk of=d0.raw bs=4096 seek=3000 conv=notrunc status=none
	random_file chunk 5000
	dd if=chunk of=d0.raw bs=1 seek=$((SIZE - 5000)) conv=notrunc status=none
	random_file d1.raw 70000
	vma-create -o a.vma drive-scsi0=d0.raw drive-scsi1=d1.raw
}

# The same layout in a disk of 16 MiB, a size a qcow2 image can have exactly.
make_nbd_archive() {
	truncate -s 16M n0.raw
	random_file chunk 3M
	dd if=chunk of=n0.raw bs=1M seek=1 conv=notrunc status=none
	random_file chunk 100001
	dd if=chunk of=n0.raw bs=4096 seek=3000 conv=notrunc status=none
	vma-create -o n.vma drive-scsi0=n0.raw
}

# A writable qemu-nbd on SOCKET for the qcow2 IMAGE, which exits after its one client.
nbd_rw() { # SOCKET IMAGE
	nbd_start "$1" --format=qcow2 "$2"
}

# Waits for that qemu-nbd to have exited (its client gone), so the image can be read.
nbd_gone() { # SOCKET
	local i pid
	pid=$(cat "$1.pid" 2>/dev/null) || return 0
	for ((i = 0; i < 200; i++)); do
		kill -0 "$pid" 2>/dev/null || { rm -f "$1.pid"; return 0; }
		sleep 0.05
	done
	nbd_stop "$1"
}

# The bytes of a qcow2 image, as raw.
qcow2_sha() { # IMAGE
	qemu-img convert -f qcow2 -O raw "$1" "$1.raw" && sha "$1.raw" && rm -f "$1.raw"
}

# How many bytes the qcow2 image has allocated as data.
qcow2_data_bytes() { # IMAGE
	qemu-img map --output=json -f qcow2 "$1" | jq '[.[] | select(.data) | .length] | add // 0'
}

@test "name=target restores only the named device into a new sparse file, renamed at the end" {
	make_archive
	mkdir out
	run --separate-stderr -0 vma-extract -v a.vma drive-scsi0=out/disk0.img
	assert_output ""
	assert_equal "$stderr" "restored drive-scsi0: $SIZE bytes to out/disk0.img"
	assert_equal "$(ls -A out)" "disk0.img"
	assert_equal "$(sha out/disk0.img)" "$(sha d0.raw)"
	assert_equal "$(stat -c %a out/disk0.img)" 600
	# about 3.1 MiB of data in 16 MiB: the holes stay holes
	[ "$(du -k out/disk0.img | cut -f1)" -le 3400 ] || fail "not sparse: $(du -k out/disk0.img)"
}

@test "name=target: an existing file is refused without --force and left as it was" {
	make_archive
	random_file old.img "$SIZE"
	before=$(sha old.img)
	run --separate-stderr -2 vma-extract a.vma drive-scsi0=old.img
	assert_equal "$stderr" "vma-extract: old.img: exists already; give --force to overwrite it in place"
	assert_equal "$(sha old.img)" "$before"
}

@test "name=target --force: an existing file full of old data gets the disk exactly, holes zeroed" {
	make_archive
	random_file old.img "$SIZE"
	run -0 vma-extract --force a.vma drive-scsi0=old.img
	assert_equal "$(sha old.img)" "$(sha d0.raw)"
	assert_equal "$(stat -c %s old.img)" "$SIZE"
}

@test "name=target: a smaller target is refused before anything is written, with both sizes" {
	make_archive
	random_file small.img 1000000
	before=$(sha small.img)
	run --separate-stderr -1 vma-extract --force a.vma drive-scsi0=small.img
	assert_equal "$stderr" "vma-extract: small.img: 1000000 bytes, smaller than drive-scsi0 ($SIZE bytes)"
	assert_equal "$(sha small.img)" "$before"
}

@test "name=target --force: into a larger file the disk's bytes come first, the tail is left alone" {
	make_archive
	random_file big.img $((SIZE + 300000))
	tail -c 300000 big.img >tail.want
	before=$(sha big.img)
	# (the size rule's own refusal, without --force, is in the loop device's test)
	run -0 vma-extract --force a.vma drive-scsi0=big.img
	assert_equal "$(head -c "$SIZE" big.img | sha256sum | cut -d' ' -f1)" "$(sha d0.raw)"
	assert_equal "$(tail -c 300000 big.img | sha256sum | cut -d' ' -f1)" "$(sha tail.want)"
	[ "$(sha big.img)" != "$before" ]
}

@test "name=target: an NBD export (qcow2 behind qemu-nbd) gets the disk and stays sparse" {
	make_nbd_archive
	qemu-img create -q -f qcow2 t.qcow2 16M
	nbd_rw "$PWD/t.sock" t.qcow2
	run --separate-stderr -0 vma-extract -v n.vma "drive-scsi0=nbd+unix:///?socket=$PWD/t.sock"
	assert_equal "$stderr" "restored drive-scsi0: 16777216 bytes to nbd+unix:///?socket=$PWD/t.sock"
	nbd_gone "$PWD/t.sock"
	run -0 qemu-img compare -q -f raw -F qcow2 n0.raw t.qcow2
	assert_equal "$(qcow2_sha t.qcow2)" "$(sha n0.raw)"
	# 3 MiB + 100001 bytes of data: at most those clusters allocated (64 KiB each)
	data=$(qcow2_data_bytes t.qcow2)
	[ "$data" -le $((3 * 1048576 + 3 * 65536)) ] || fail "qcow2 not sparse: $data bytes of data"
	# the hole from 4 MiB to 11 MiB is not data
	run -0 jq -e '[.[] | select(.start <= 4194304 and .start + .length >= 11534336 and .data == false)] | length == 1' \
		< <(qemu-img map --output=json -f qcow2 t.qcow2)
}

@test "name=target: an NBD export that held data gets its old data zeroed" {
	make_nbd_archive
	random_file old.raw 16M
	qemu-img convert -q -f raw -O qcow2 old.raw t.qcow2
	nbd_rw "$PWD/t.sock" t.qcow2
	run -0 vma-extract n.vma "drive-scsi0=nbd+unix:///?socket=$PWD/t.sock"
	nbd_gone "$PWD/t.sock"
	assert_equal "$(qcow2_sha t.qcow2)" "$(sha n0.raw)"
}

@test "name=target: a pipe is refused for a target written in place unless --no-verify is given" {
	make_archive
	random_file old.img "$SIZE"
	before=$(sha old.img)
	run -2 bash -c 'cat a.vma | vma-extract --force - drive-scsi0=old.img'
	assert_equal "$stderr" ""
	assert_equal "$output" "vma-extract: -: not a regular file, so it cannot be verified before a target is overwritten in place; give --no-verify to write while reading"
	assert_equal "$(sha old.img)" "$before"
	run -0 bash -c 'cat a.vma | vma-extract --force --no-verify - drive-scsi0=old.img'
	assert_equal "$(sha old.img)" "$(sha d0.raw)"
	# standard input redirected from a file can be read twice
	random_file old.img "$SIZE"
	run -0 vma-extract --force - drive-scsi0=old.img <a.vma
	assert_equal "$(sha old.img)" "$(sha d0.raw)"
	# a new file needs no second pass: a pipe is fine
	run -0 bash -c 'cat a.vma | vma-extract - drive-scsi0=new.img'
	assert_equal "$(sha new.img)" "$(sha d0.raw)"
}

@test "name=target: a compressed archive is read twice, verified then restored in place" {
	make_archive
	zstd -q -o a.vma.zst a.vma
	random_file old.img "$SIZE"
	run -0 vma-extract --force a.vma.zst drive-scsi0=old.img
	assert_equal "$(sha old.img)" "$(sha d0.raw)"
}

@test "name=target: a damaged archive writes nothing to an existing file or an NBD export (verified first)" {
	make_archive
	# the defect comes after all of the data: only a verification before writing catches it
	vma_corrupt a.vma bad.vma trailing-garbage >/dev/null
	random_file old.img "$SIZE"
	before=$(sha old.img)
	run --separate-stderr -1 vma-extract --force bad.vma drive-scsi0=old.img
	assert_regex "$stderr" '^vma-extract: bad.vma: offset [0-9]+: wrong extent magic .*\(nothing was written\)$'
	assert_equal "$(sha old.img)" "$before"

	make_nbd_archive
	vma_corrupt n.vma nbad.vma trailing-garbage >/dev/null
	qemu-img create -q -f qcow2 t.qcow2 16M
	nbd_rw "$PWD/t.sock" t.qcow2
	run -1 vma-extract nbad.vma "drive-scsi0=nbd+unix:///?socket=$PWD/t.sock"
	assert_output --partial "(nothing was written)"
	nbd_gone "$PWD/t.sock"
	assert_equal "$(qcow2_data_bytes t.qcow2)" 0
	assert_equal "$(qcow2_sha t.qcow2)" "$(head -c 16M /dev/zero | sha256sum | cut -d' ' -f1)"
}

@test "name=target: a damaged archive leaves no new file and no temporary behind" {
	make_archive
	vma_corrupt a.vma bad.vma truncate-extent >/dev/null
	mkdir out
	run -1 vma-extract bad.vma drive-scsi0=out/disk0.img
	assert_output --partial "archive truncated inside extent data"
	assert_equal "$(ls -A out)" ""
}

@test "name=target: a block device (loop) gets the disk exactly, its old data zeroed" {
	[ "$(id -u)" = 0 ] || skip "needs root for a loop device"
	make_archive
	# a loop device's size is a multiple of 512: the disk rounded up, so --force
	lsize=$(((SIZE + 511) / 512 * 512))
	random_file back.img "$lsize"
	tail -c $((lsize - SIZE)) back.img >tail.want
	LOOPDEV=$(losetup -f --show back.img 2>/dev/null) || skip "losetup -f does not work here"
	run --separate-stderr -1 vma-extract a.vma "drive-scsi0=$LOOPDEV"
	assert_equal "$stderr" "vma-extract: $LOOPDEV: $lsize bytes, larger than drive-scsi0 ($SIZE bytes); give --force to restore into its first $SIZE bytes"
	run -0 vma-extract --force a.vma "drive-scsi0=$LOOPDEV"
	assert_equal "$(head -c "$SIZE" "$LOOPDEV" | sha256sum | cut -d' ' -f1)" "$(sha d0.raw)"
	losetup -d "$LOOPDEV"
	LOOPDEV=
	assert_equal "$(head -c "$SIZE" back.img | sha256sum | cut -d' ' -f1)" "$(sha d0.raw)"
	assert_equal "$(tail -c $((lsize - SIZE)) back.img | sha256sum | cut -d' ' -f1)" "$(sha tail.want)"
}

@test "name=target: a device not in the archive and a target that is no file are refused" {
	make_archive
	run --separate-stderr -1 vma-extract a.vma drive-virtio9=x.img
	assert_equal "$stderr" "vma-extract: a.vma: no device named 'drive-virtio9'"
	[ ! -e x.img ]
	mkdir adir
	run --separate-stderr -1 vma-extract --force a.vma drive-scsi0=adir
	assert_equal "$stderr" "vma-extract: adir: not a regular file, a block device or an NBD URI"
}

@test "--format qcow2: the DIR form writes disk-NAME.qcow2 images, sparse, through a qemu-nbd of its own" {
	make_archive
	mkdir tmp
	run --separate-stderr -0 env TMPDIR="$PWD/tmp" vma-extract -v --format qcow2 a.vma out
	assert_equal "$stderr" "restored drive-scsi0: $SIZE bytes to out/disk-drive-scsi0.qcow2
restored drive-scsi1: 70000 bytes to out/disk-drive-scsi1.qcow2"
	assert_equal "$(ls -A out)" "$(printf 'disk-drive-scsi0.qcow2\ndisk-drive-scsi1.qcow2')"
	assert_equal "$(stat -c %a out/disk-drive-scsi0.qcow2)" 600
	assert_equal "$(qemu-img info --output=json out/disk-drive-scsi0.qcow2 | jq -r .format)" qcow2
	# (qemu-img rounds the virtual size up to 512 bytes: the bytes past the disk are zero)
	run -0 qemu-img compare -q -f raw -F qcow2 d0.raw out/disk-drive-scsi0.qcow2
	run -0 qemu-img compare -q -f raw -F qcow2 d1.raw out/disk-drive-scsi1.qcow2
	data=$(qcow2_data_bytes out/disk-drive-scsi0.qcow2)
	[ "$data" -le $((3 * 1048576 + 4 * 65536)) ] || fail "qcow2 not sparse: $data bytes of data"
	# the private folder and its socket are gone, and so is qemu-nbd with them
	assert_equal "$(ls -A tmp)" ""
}

@test "--format qcow2: a damaged archive leaves no image, no folder and no qemu-nbd behind" {
	make_archive
	vma_corrupt a.vma bad.vma truncate-extent >/dev/null
	mkdir tmp
	run -1 env TMPDIR="$PWD/tmp" vma-extract --format qcow2 bad.vma out
	assert_output --partial "archive truncated inside extent data"
	[ ! -e out ] || fail "left behind: $(ls -A out)"
	assert_equal "$(ls -A tmp)" ""
}

@test "name=target: an NBD export that is too small or read-only is refused, untouched" {
	make_nbd_archive
	random_file old.raw 8M
	qemu-img convert -q -f raw -O qcow2 old.raw t.qcow2
	nbd_rw "$PWD/t.sock" t.qcow2
	run --separate-stderr -1 vma-extract n.vma "drive-scsi0=nbd+unix:///?socket=$PWD/t.sock"
	assert_equal "$stderr" "vma-extract: nbd+unix:///?socket=$PWD/t.sock: 8388608 bytes, smaller than drive-scsi0 (16777216 bytes)"
	nbd_gone "$PWD/t.sock"
	assert_equal "$(qcow2_sha t.qcow2)" "$(sha old.raw)"
	qemu-img create -q -f qcow2 r.qcow2 16M
	nbd_serve "$PWD/r.sock" qcow2 r.qcow2
	run --separate-stderr -1 vma-extract n.vma "drive-scsi0=nbd+unix:///?socket=$PWD/r.sock"
	assert_equal "$stderr" "vma-extract: nbd+unix:///?socket=$PWD/r.sock: the export is read-only"
}
