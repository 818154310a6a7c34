#!/usr/bin/env bats
# shellcheck disable=SC2154,SC2016 # bats sets $stderr; bash -c programs are single-quoted
# qmrestore.sh against real components: VM 100 (the two disks of vz_start_two_disks, a raw
# one on virtio0 and a qcow2 one on scsi0, in a QEMU left in prelaunch) backed up once by
# vzdump.sh; each test restores that archive into a scratch storage and config folder of its
# own and checks the images (content, format), the config (the whole file) and what is left.

setup_file() {
	load lib/common
	load lib/vzdump
	load lib/vma
	export W=$BATS_FILE_TMPDIR/w VM=$BATS_FILE_TMPDIR/vm
	mkdir -p "$W/run" "$W/conf" "$W/tmp" "$W/dump" "$VM"
	vz_start_two_disks "$VM"
	ln -s "$VM/qmp.sock" "$W/run/100.qmp"
	{
		echo 'name: web'
		echo 'net0: virtio=BC:24:11:12:34:56,bridge=vmbr0,firewall=1'
		echo 'net1: e1000,bridge=vmbr1,macaddr=BC:24:11:AB:CD:EF'
		echo 'smbios1: uuid=6e0e0e3c-1111-2222-3333-444455556666,manufacturer=YWNtZQ==,base64=1'
		echo 'vmgenid: 0b6b4f58-aaaa-bbbb-cccc-ddddeeeeffff'
		echo "virtio0: $VM/d0.raw,size=64M,cache=writeback"
		echo "scsi0: $VM/d1.qcow2,format=qcow2,discard=on,size=104861184"
		echo 'ide2: none,media=cdrom'
		echo "scsi1: $VM/nowhere.raw,backup=0,size=1M"
		echo 'lock: backup'
	} >"$W/conf/100.conf"
	"$TOP/vzdump.sh" --dumpdir "$W/dump" --tmpdir "$W/tmp" --confdir "$W/conf" \
		--rundir "$W/run" 100 2>"$W/backup.log" || { cat "$W/backup.log" >&3 && return 1; }
	export ARCHIVE
	ARCHIVE=$(echo "$W"/dump/vzdump-qemu-100-*.vma)
	vz_disk_sha "$VM/d0.raw" >"$VM/d0.sha"
	vz_disk_sha "$VM/d1.qcow2" >"$VM/d1.sha"
	# A copy whose last extent is cut short: its header and config read fine.
	vma_corrupt "$ARCHIVE" "$W/truncated.vma" truncate-extent >/dev/null
}

teardown_file() {
	load lib/common
	load lib/vzdump
	qemu_stop "$VM"
}

setup() {
	load lib/common
	load lib/vzdump
	load lib/vma
	S=$BATS_TEST_TMPDIR/store
	C=$BATS_TEST_TMPDIR/conf
	mkdir -p "$S" "$C"
	MNT= LOOPDEV=
}

teardown() {
	[ -z "$MNT" ] || umount "$MNT" 2>/dev/null || true
	[ -z "$LOOPDEV" ] || losetup -d "$LOOPDEV" 2>/dev/null || true
}

# qmrestore.sh into this test's storage and config folders, with the shared run folder.
restore() { # ARGS...
	"$TOP/qmrestore.sh" --storage "$S" --confdir "$C" --rundir "$W/run" "$@"
}

# Every file and folder under the storage and config folders, with size and mode.
tree() {
	find "$S" "$C" -printf '%p %s %m\n' | LC_ALL=C sort
}

# VMID's two images hold VM 100's disks: disk 0 raw, disk 1 qcow2 (by default).
assert_same_disks() { # VMID
	assert_equal "$(vz_disk_sha "$S/$1/vm-$1-disk-0.raw")" "$(cat "$VM/d0.sha")"
	assert_equal "$(vz_disk_sha "$S/$1/vm-$1-disk-1.qcow2")" "$(cat "$VM/d1.sha")"
}

# The storage and config folders hold VMID's config and its two images and nothing else, and
# the images hold VM 100's disks.
assert_restored_only() { # VMID
	assert_equal "$(find "$C" "$S" | LC_ALL=C sort)" "$C
$C/$1.conf
$S
$S/$1
$S/$1/vm-$1-disk-0.raw
$S/$1/vm-$1-disk-1.qcow2"
	assert_same_disks "$1"
}

# The config qmrestore.sh writes for VM VMID with images IMAGE0 and IMAGE1, the vmgenid
# VMGENID and the net and smbios1 lines given.
expected_config() { # IMAGE0 IMAGE1 VMGENID NET0 NET1 SMBIOS1
	cat <<END
name: web
net0: $4
net1: $5
smbios1: $6
vmgenid: $3
virtio0: $1,size=64M,cache=writeback
scsi0: $2,discard=on,size=104861184
ide2: none,media=cdrom
#scsi1: $VM/nowhere.raw,backup=0,size=1M
END
}

UUID='[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'

@test "a VM from its archive: each disk into a new image of its format, the config rewritten, nothing on stdout" {
	run --separate-stderr -0 restore "$ARCHIVE" 200
	assert_output ""
	assert_restored_only 200
	assert_equal "$(qemu-img info --output=json "$S/200/vm-200-disk-0.raw" | jq -r '.format, ."virtual-size"')" "raw
67108864"
	assert_equal "$(qemu-img info --output=json "$S/200/vm-200-disk-1.qcow2" | jq -r '.format, ."virtual-size"')" "qcow2
104861184"
	# vmgenid is always new (qemu-server's restore_update_config_line); the rest as it was.
	gen=$(sed -n 's/^vmgenid: //p' "$C/200.conf")
	[[ $gen =~ ^$UUID$ ]] || fail "vmgenid: $gen"
	[ "$gen" != 0b6b4f58-aaaa-bbbb-cccc-ddddeeeeffff ] || fail "vmgenid not renewed"
	assert_equal "$(cat "$C/200.conf")" "$(expected_config "$S/200/vm-200-disk-0.raw" \
		"$S/200/vm-200-disk-1.qcow2" "$gen" 'virtio=BC:24:11:12:34:56,bridge=vmbr0,firewall=1' \
		'e1000,bridge=vmbr1,macaddr=BC:24:11:AB:CD:EF' \
		'uuid=6e0e0e3c-1111-2222-3333-444455556666,manufacturer=YWNtZQ==,base64=1')"
	assert_equal "$stderr" "INFO: restore vma archive: $ARCHIVE to VM 200
INFO: restoring 2 disk(s) from '$ARCHIVE'
INFO: disk 'virtio0' (drive-virtio0): $S/200/vm-200-disk-0.raw (raw, 64M)
INFO: disk 'scsi0' (drive-scsi0): $S/200/vm-200-disk-1.qcow2 (qcow2, 104861184)
INFO: wrote $C/200.conf
INFO: restore of VM 200 finished"
}

@test "--format qcow2: every image qcow2, with the same content" {
	run --separate-stderr -0 restore --format qcow2 "$ARCHIVE" 201
	assert_equal "$(ls "$S/201")" "vm-201-disk-0.qcow2
vm-201-disk-1.qcow2"
	assert_equal "$(qemu-img info --output=json "$S/201/vm-201-disk-0.qcow2" | jq -r .format)" qcow2
	assert_equal "$(stat -c %a "$S/201/vm-201-disk-0.qcow2" "$S/201/vm-201-disk-1.qcow2")" "600
600"
	assert_equal "$(vz_disk_sha "$S/201/vm-201-disk-0.qcow2")" "$(cat "$VM/d0.sha")"
	assert_equal "$(vz_disk_sha "$S/201/vm-201-disk-1.qcow2")" "$(cat "$VM/d1.sha")"
	grep -qx "virtio0: $S/201/vm-201-disk-0.qcow2,size=64M,cache=writeback" "$C/201.conf"
}

@test "--dry-run prints the plan exactly and writes nothing" {
	before=$(tree)
	run --separate-stderr -0 restore --dry-run "$ARCHIVE" 202
	assert_output "virtio0: drive-virtio0 -> $S/202/vm-202-disk-0.raw (raw, 64M)
scsi0: drive-scsi0 -> $S/202/vm-202-disk-1.qcow2 (qcow2, 104861184)
config: $C/202.conf"
	assert_equal "$(tree)" "$before"
	[ ! -e "$W/run/202.vzdump.lock" ] || fail "--dry-run created a lock file"
}

@test "--json prints the result as one object" {
	run --separate-stderr -0 restore --json "$ARCHIVE" 203
	assert_output "{\"vmid\":203,\"config\":\"$C/203.conf\",\"disks\":[{\"key\":\"virtio0\",\"device\":\"drive-virtio0\",\"image\":\"$S/203/vm-203-disk-0.raw\",\"format\":\"raw\",\"size\":67108864},{\"key\":\"scsi0\",\"device\":\"drive-scsi0\",\"image\":\"$S/203/vm-203-disk-1.qcow2\",\"format\":\"qcow2\",\"size\":104861184}]}"
	[ -f "$C/203.conf" ] || fail "no config"
	# With --dry-run: the same object, nothing written.
	run --separate-stderr -0 restore --json --dry-run "$ARCHIVE" 204
	assert_output "{\"vmid\":204,\"config\":\"$C/204.conf\",\"disks\":[{\"key\":\"virtio0\",\"device\":\"drive-virtio0\",\"image\":\"$S/204/vm-204-disk-0.raw\",\"format\":\"raw\",\"size\":67108864},{\"key\":\"scsi0\",\"device\":\"drive-scsi0\",\"image\":\"$S/204/vm-204-disk-1.qcow2\",\"format\":\"qcow2\",\"size\":104861184}]}"
	[ ! -e "$S/204" ] && [ ! -e "$C/204.conf" ] || fail "--dry-run wrote something"
}

@test "--unique: new locally administered MAC addresses and a new smbios1 uuid" {
	run --separate-stderr -0 restore --unique "$ARCHIVE" 205
	mac='[0-9A-F][26AE](:[0-9A-F]{2}){5}'
	run -0 grep '^net' "$C/205.conf"
	assert_line --index 0 --regexp "^net0: virtio=$mac,bridge=vmbr0,firewall=1$"
	assert_line --index 1 --regexp "^net1: e1000,bridge=vmbr1,macaddr=$mac$"
	[[ $output != *BC:24:11:12:34:56* && $output != *BC:24:11:AB:CD:EF* ]] || fail "old MAC kept: $output"
	run -0 grep '^smbios1: ' "$C/205.conf"
	assert_output --regexp "^smbios1: uuid=$UUID,manufacturer=YWNtZQ==,base64=1$"
	refute_output --partial 6e0e0e3c-1111-2222-3333-444455556666
}

@test "an existing config is refused without --force, and nothing changes" {
	echo 'name: old' >"$C/206.conf"
	before=$(tree)
	run --separate-stderr -1 restore "$ARCHIVE" 206
	assert_output ""
	assert_equal "$stderr" "qmrestore.sh: cannot restore VM 206: $C/206.conf exists (--force replaces the VM)"
	assert_equal "$(tree)" "$before"
}

@test "--force while the VM runs is refused, and nothing changes" {
	cp "$W/conf/100.conf" "$C/100.conf"
	before=$(tree)
	run --separate-stderr -1 restore --force "$ARCHIVE" 100
	assert_equal "$stderr" "qmrestore.sh: cannot restore VM 100: it is running (QEMU answers on $W/run/100.qmp)"
	assert_equal "$(tree)" "$before"
}

@test "--force while a QEMU without a socket here holds an image of the old config is refused, and nothing changes" {
	# VM 100's QEMU has its disks open (and locked); VM 231's config names them, no socket.
	sed 's/^lock: .*//' "$W/conf/100.conf" >"$C/231.conf"
	before=$(tree)
	run --separate-stderr -1 restore --force "$ARCHIVE" 231
	assert_equal "$stderr" "qmrestore.sh: cannot restore VM 231: its image $VM/d1.qcow2 is in use (QEMU holds its lock)"
	assert_equal "$(tree)" "$before"
}

@test "--force on a stopped VM: new images swapped in at the end, the old ones removed then" {
	run --separate-stderr -0 restore "$ARCHIVE" 207
	echo 'scratch' >"$S/207/unrelated"
	# A failed forced restore leaves the old VM exactly as it was.
	before=$(tree)
	run --separate-stderr -1 restore --force --format qcow2 "$W/truncated.vma" 207
	assert_equal "$(tree)" "$before"
	assert_equal "$(vz_disk_sha "$S/207/vm-207-disk-0.raw")" "$(cat "$VM/d0.sha")"
	# Now for real: disk 0 becomes qcow2 (the old raw image is removed), disk 1 is replaced.
	old1=$(stat -c %i "$S/207/vm-207-disk-1.qcow2")
	run --separate-stderr -0 restore --force --format qcow2 "$ARCHIVE" 207
	assert_equal "$(ls "$S/207")" "unrelated
vm-207-disk-0.qcow2
vm-207-disk-1.qcow2"
	[ "$(stat -c %i "$S/207/vm-207-disk-1.qcow2")" != "$old1" ] || fail "disk 1 not replaced"
	assert_equal "$(vz_disk_sha "$S/207/vm-207-disk-0.qcow2")" "$(cat "$VM/d0.sha")"
	grep -qx "virtio0: $S/207/vm-207-disk-0.qcow2,size=64M,cache=writeback" "$C/207.conf"
	# The config was in place before the old image went.
	wrote=$(grep -n "^INFO: wrote $C/207.conf$" <<<"$stderr" | cut -d: -f1)
	removed=$(grep -n "^INFO: removing the old image $S/207/vm-207-disk-0.raw$" <<<"$stderr" | cut -d: -f1)
	[ -n "$wrote" ] && [ -n "$removed" ] && [ "$wrote" -lt "$removed" ] || fail "order: $stderr"
}

@test "a truncated archive: a clear error, exit 1, nothing left in storage or config folder" {
	before=$(tree)
	run --separate-stderr -1 restore "$W/truncated.vma" 208
	assert_output ""
	assert_equal "${stderr_lines[-1]}" "qmrestore.sh: $W/truncated.vma: cannot restore the disks: offset $(stat -c %s "$W/truncated.vma"): archive truncated inside extent data"
	assert_equal "$(tree)" "$before"
}

@test "a config that maps a disk to a device the archive lacks is refused before anything is written" {
	vma-extract -c qemu-server.conf "$ARCHIVE" | sed 's/^#qmdump#map:scsi0:drive-scsi0:/#qmdump#map:scsi0:drive-scsi5:/' >"$BATS_TEST_TMPDIR/qemu-server.conf"
	random_file "$BATS_TEST_TMPDIR/a.raw" 65536
	random_file "$BATS_TEST_TMPDIR/b.raw" 65536
	vma-create -o "$BATS_TEST_TMPDIR/bad.vma" -c "$BATS_TEST_TMPDIR/qemu-server.conf" \
		drive-virtio0="$BATS_TEST_TMPDIR/a.raw" drive-scsi0="$BATS_TEST_TMPDIR/b.raw"
	before=$(tree)
	run --separate-stderr -1 restore "$BATS_TEST_TMPDIR/bad.vma" 209
	assert_equal "$stderr" "qmrestore.sh: the archive's config: disk 'scsi0' is in device 'drive-scsi5', which the archive does not have"
	assert_equal "$(tree)" "$before"
}

@test "the storage fills up mid-restore: a clear error, exit 1, nothing left" {
	[ "$(id -u)" = 0 ] || skip "mounting a small tmpfs needs root"
	MNT=$BATS_TEST_TMPDIR/small
	mkdir "$MNT"
	mount -t tmpfs -o size=2M tmpfs "$MNT" || { MNT= && skip "cannot mount a tmpfs here"; }
	S=$MNT
	before=$(tree)
	run --separate-stderr -1 restore "$ARCHIVE" 210
	[[ $stderr == *$'\n'"qmrestore.sh: $ARCHIVE: cannot restore the disks: "*"No space left on device"* ]] ||
		fail "stderr: $stderr"
	assert_equal "$(tree)" "$before"
}

@test "a VMID outside 100..999999999 or a missing archive is refused" {
	run --separate-stderr -2 restore "$ARCHIVE" 99
	assert_output ""
	assert_equal "${stderr_lines[0]}" "qmrestore.sh: invalid VMID: 99 (100 to 999999999)"
	assert_equal "${stderr_lines[1]}" "usage: qmrestore.sh [--storage dir] [--confdir dir] [--rundir dir] [--format raw | qcow2]"
	run --separate-stderr -2 restore "$ARCHIVE" 1000000000
	assert_equal "${stderr_lines[0]}" "qmrestore.sh: invalid VMID: 1000000000 (100 to 999999999)"
	run --separate-stderr -2 restore "$ARCHIVE"
	assert_equal "${stderr_lines[0]}" "qmrestore.sh: an archive and a VMID, and nothing else"
	run --separate-stderr -1 restore "$BATS_TEST_TMPDIR/none.vma" 211
	assert_equal "$stderr" "qmrestore.sh: $BATS_TEST_TMPDIR/none.vma: cannot read the archive: no such file"
}

@test "an EFI vars disk and a TPM state: numbered in config order, the TPM state raw even with --format qcow2" {
	d=$BATS_TEST_TMPDIR
	random_file "$d/efi" 131072
	random_file "$d/tpm" 65536
	random_file "$d/s0" 1048576
	cat >"$d/qemu-server.conf" <<END
bios: ovmf
efidisk0: /old/efi.raw,efitype=4m,size=128K
scsi0: /old/s0.raw,size=1M
tpmstate0: /old/tpm.raw,size=64K,version=v2.0
#qmdump#map:efidisk0:drive-efidisk0::raw:
#qmdump#map:scsi0:drive-scsi0::raw:
#qmdump#map:tpmstate0:drive-tpmstate0-backup::raw:
END
	vma-create -o "$d/efi.vma" -c "$d/qemu-server.conf" drive-efidisk0="$d/efi" \
		drive-scsi0="$d/s0" drive-tpmstate0-backup="$d/tpm"
	run --separate-stderr -0 restore --format qcow2 --dry-run "$d/efi.vma" 212
	assert_output "efidisk0: drive-efidisk0 -> $S/212/vm-212-disk-0.qcow2 (qcow2, 128K)
scsi0: drive-scsi0 -> $S/212/vm-212-disk-1.qcow2 (qcow2, 1M)
tpmstate0: drive-tpmstate0-backup -> $S/212/vm-212-disk-2.raw (raw, 64K)
config: $C/212.conf"
	run --separate-stderr -0 restore "$d/efi.vma" 212
	assert_equal "$(cat "$C/212.conf")" "bios: ovmf
efidisk0: $S/212/vm-212-disk-0.raw,efitype=4m,size=128K
scsi0: $S/212/vm-212-disk-1.raw,size=1M
tpmstate0: $S/212/vm-212-disk-2.raw,size=64K,version=v2.0"
	assert_equal "$(sha "$S/212/vm-212-disk-0.raw")" "$(sha "$d/efi")"
	assert_equal "$(sha "$S/212/vm-212-disk-1.raw")" "$(sha "$d/s0")"
	assert_equal "$(sha "$S/212/vm-212-disk-2.raw")" "$(sha "$d/tpm")"
}

@test "an archive device without a map line is refused (qemu-server's 'no device mapping')" {
	d=$BATS_TEST_TMPDIR
	random_file "$d/a" 65536
	printf 'scsi0: /old/a.raw,size=64K\n' >"$d/qemu-server.conf"
	vma-create -o "$d/nomap.vma" -c "$d/qemu-server.conf" drive-scsi0="$d/a"
	before=$(tree)
	run --separate-stderr -1 restore "$d/nomap.vma" 213
	assert_equal "$stderr" "qmrestore.sh: the archive's config: found no device mapping information for device 'drive-scsi0'"
	assert_equal "$(tree)" "$before"
}

@test "a VM whose backup lock is held (vzdump.sh's, a backup running) is not restored" {
	exec {fd}>>"$W/run/214.vzdump.lock"
	flock -n "$fd"
	before=$(tree)
	run --separate-stderr -1 restore "$ARCHIVE" 214
	exec {fd}>&-
	assert_equal "$stderr" "qmrestore.sh: VM 214 is locked (backup)"
	assert_equal "$(tree)" "$before"
}

@test "a zstd-compressed archive is restored as the plain one" {
	zstd -q -c "$ARCHIVE" >"$BATS_TEST_TMPDIR/a.vma.zst"
	run --separate-stderr -0 restore "$BATS_TEST_TMPDIR/a.vma.zst" 215
	assert_same_disks 215
}

# The config of the first test's restore, for VM VMID (its vmgenid read back, checked new).
expected_plain_config() { # VMID
	local gen
	gen=$(sed -n 's/^vmgenid: //p' "$C/$1.conf")
	[[ $gen =~ ^$UUID$ ]] && [ "$gen" != 0b6b4f58-aaaa-bbbb-cccc-ddddeeeeffff ] || fail "vmgenid: $gen"
	expected_config "$S/$1/vm-$1-disk-0.raw" "$S/$1/vm-$1-disk-1.qcow2" "$gen" \
		'virtio=BC:24:11:12:34:56,bridge=vmbr0,firewall=1' \
		'e1000,bridge=vmbr1,macaddr=BC:24:11:AB:CD:EF' \
		'uuid=6e0e0e3c-1111-2222-3333-444455556666,manufacturer=YWNtZQ==,base64=1'
}

@test "standard input, plain and zstd: read once, the same images and config as from the file" {
	run --separate-stderr -0 bash -c 'cat "$1" | "$2" --storage "$3" --confdir "$4" --rundir "$5" - 220' \
		_ "$ARCHIVE" "$TOP/qmrestore.sh" "$S" "$C" "$W/run"
	assert_output ""
	assert_restored_only 220
	assert_equal "$(qemu-img info --output=json "$S/220/vm-220-disk-1.qcow2" | jq -r .format)" qcow2
	assert_equal "$(cat "$C/220.conf")" "$(expected_plain_config 220)"
	assert_equal "$stderr" "INFO: restore vma archive: - to VM 220
INFO: reading the archive from standard input
INFO: restoring 2 disk(s) from '-'
INFO: disk 'virtio0' (drive-virtio0): $S/220/vm-220-disk-0.raw (raw, 64M)
INFO: disk 'scsi0' (drive-scsi0): $S/220/vm-220-disk-1.qcow2 (qcow2, 104861184)
INFO: wrote $C/220.conf
INFO: restore of VM 220 finished"
	# The .vma.zst itself piped in: vma-extract decompresses it.
	zstd -q -c "$ARCHIVE" >"$BATS_TEST_TMPDIR/a.vma.zst"
	run --separate-stderr -0 bash -c 'cat "$1" | "$2" --storage "$3" --confdir "$4" --rundir "$5" - 221' \
		_ "$BATS_TEST_TMPDIR/a.vma.zst" "$TOP/qmrestore.sh" "$S" "$C" "$W/run"
	assert_same_disks 221
	assert_equal "$(cat "$C/221.conf")" "$(expected_plain_config 221)"
	assert_equal "$(ls -A "$S/221")" "vm-221-disk-0.raw
vm-221-disk-1.qcow2"
}

@test "standard input cut short: a clear error, exit 1, nothing left" {
	before=$(tree)
	run --separate-stderr -1 bash -c '"$1" --storage "$2" --confdir "$3" --rundir "$4" - 222 <"$5"' \
		_ "$TOP/qmrestore.sh" "$S" "$C" "$W/run" "$W/truncated.vma"
	assert_output ""
	assert_equal "${stderr_lines[-1]}" "qmrestore.sh: -: cannot restore the disks: offset $(stat -c %s "$W/truncated.vma"): archive truncated inside extent data"
	assert_equal "$(tree)" "$before"
	# An existing config is refused before standard input is read: the stream stays unread.
	echo 'name: old' >"$C/223.conf"
	before=$(tree)
	printf unread >"$BATS_TEST_TMPDIR/stream"
	run --separate-stderr -1 bash -c '{ "$1" --storage "$2" --confdir "$3" --rundir "$4" - 223
		rc=$? && cat && exit "$rc"; } <"$5"' _ "$TOP/qmrestore.sh" "$S" "$C" "$W/run" "$BATS_TEST_TMPDIR/stream"
	assert_output "unread"
	assert_equal "$stderr" "qmrestore.sh: cannot restore VM 223: $C/223.conf exists (--force replaces the VM)"
}

@test "--dry-run from standard input: the plan from the archive's header, nothing written" {
	before=$(tree)
	run --separate-stderr -0 bash -c 'zstd -q -c "$1" | "$2" --storage "$3" --confdir "$4" --rundir "$5" --dry-run - 224' \
		_ "$ARCHIVE" "$TOP/qmrestore.sh" "$S" "$C" "$W/run"
	assert_output "virtio0: drive-virtio0 -> $S/224/vm-224-disk-0.raw (raw, 64M)
scsi0: drive-scsi0 -> $S/224/vm-224-disk-1.qcow2 (qcow2, 104861184)
config: $C/224.conf"
	assert_equal "$stderr" ""
	assert_equal "$(tree)" "$before"
}

@test "--target: refused from standard input, for a key the archive lacks, and onto a non-device" {
	run --separate-stderr -2 restore --target scsi0=/dev/null - 225
	assert_equal "${stderr_lines[0]}" "qmrestore.sh: --target needs an archive file: a device is written only after the archive is checked, a second read"
	run --separate-stderr -2 restore --target scsi0 "$ARCHIVE" 225
	assert_equal "${stderr_lines[0]}" "qmrestore.sh: --target needs KEY=DEVICE, a disk key and a block device's absolute path, not 'scsi0'"
	run --separate-stderr -2 restore --target net0=/dev/x "$ARCHIVE" 225
	assert_equal "${stderr_lines[0]}" "qmrestore.sh: --target needs KEY=DEVICE, a disk key and a block device's absolute path, not 'net0=/dev/x'"
	run --separate-stderr -2 restore --target scsi0=/dev/a --target=scsi0=/dev/b "$ARCHIVE" 225
	assert_equal "${stderr_lines[0]}" "qmrestore.sh: --target scsi0 given twice"
	before=$(tree)
	touch "$BATS_TEST_TMPDIR/file"
	run --separate-stderr -1 restore --target "scsi0=$BATS_TEST_TMPDIR/file" "$ARCHIVE" 225
	assert_equal "$stderr" "qmrestore.sh: $BATS_TEST_TMPDIR/file: cannot restore disk 'scsi0' onto it: not a block device"
	[ "$(id -u)" = 0 ] && [ -b /dev/loop-control ] || return 0
	dev=$(losetup -f --show "$BATS_TEST_TMPDIR/file" 2>/dev/null) || return 0
	run --separate-stderr -1 restore --target "scsi3=$dev" "$ARCHIVE" 225
	losetup -d "$dev"
	assert_equal "$stderr" "qmrestore.sh: --target scsi3: the archive has no disk 'scsi3'"
	assert_equal "$(tree)" "$before"
}

@test "--target: disk scsi0 onto a loop device, verified first; the config names the device" {
	[ "$(id -u)" = 0 ] || skip "losetup needs root"
	truncate -s 104861184 "$BATS_TEST_TMPDIR/dev.img"
	LOOPDEV=$(losetup -f --show "$BATS_TEST_TMPDIR/dev.img") || skip "losetup -f failed: no loop device here"
	# A damaged archive leaves the device untouched: vma-extract checks it whole first.
	printf 'old bytes' | dd of="$LOOPDEV" conv=notrunc status=none
	before=$(tree)
	run --separate-stderr -1 restore --target "scsi0=$LOOPDEV" "$W/truncated.vma" 226
	assert_equal "$(tree)" "$before"
	assert_equal "$(head -c 9 "$LOOPDEV")" "old bytes"
	run --separate-stderr -0 restore --target "scsi0=$LOOPDEV" "$ARCHIVE" 226
	assert_equal "$(ls -A "$S/226")" "vm-226-disk-0.raw"
	assert_equal "$(vz_disk_sha "$S/226/vm-226-disk-0.raw")" "$(cat "$VM/d0.sha")"
	assert_equal "$(vz_disk_sha "$LOOPDEV")" "$(cat "$VM/d1.sha")"
	grep -qx "scsi0: $LOOPDEV,discard=on,size=104861184" "$C/226.conf" || fail "$(cat "$C/226.conf")"
	grep -qxF "INFO: disk 'scsi0' (drive-scsi0): $LOOPDEV (raw, 104861184)" <<<"$stderr" || fail "$stderr"
}

@test "SIGTERM to the restore's process group mid-restore: exit 1, nothing left" {
	# A vma-extract that, once the disks are out (its name=target form), waits: the signal
	# comes while the staging folder is full.
	mkdir "$BATS_TEST_TMPDIR/bin"
	cat >"$BATS_TEST_TMPDIR/bin/vma-extract" <<END
#!/bin/bash
"$VZ_BIN/vma-extract" "\$@" || exit
case " \$* " in *" drive-"*) touch "$BATS_TEST_TMPDIR/extracted" && sleep 60 ;; esac
END
	chmod +x "$BATS_TEST_TMPDIR/bin/vma-extract"
	before=$(tree)
	PATH=$BATS_TEST_TMPDIR/bin:$PATH setsid "$TOP/qmrestore.sh" --storage "$S" --confdir "$C" \
		--rundir "$W/run" "$ARCHIVE" 217 2>"$BATS_TEST_TMPDIR/err" 3>&- &
	pid=$!
	for ((i = 0; i < 300; i++)); do
		[ ! -e "$BATS_TEST_TMPDIR/extracted" ] || break
		sleep 0.1
	done
	[ -e "$BATS_TEST_TMPDIR/extracted" ] || fail "the disks were never extracted"
	[ -n "$(ls -A "$S/217")" ] || fail "no staging folder during the restore"
	kill -TERM -- "-$pid"
	rc=0
	wait "$pid" || rc=$?
	assert_equal "$rc" 1
	assert_equal "$(tail -n 1 "$BATS_TEST_TMPDIR/err")" "qmrestore.sh: interrupted by signal"
	assert_equal "$(tree)" "$before"
}

@test "on a terminal vma-extract's progress line shows between the log lines; not otherwise" {
	# (Not a terminal: the first test's stderr is the log lines alone.)
	SHELL=/bin/bash script -qefc "'$TOP/qmrestore.sh' --storage '$S' --confdir '$C' --rundir '$W/run' '$ARCHIVE' 230" \
		/dev/null </dev/null >"$BATS_TEST_TMPDIR/tty.raw" 3>&-
	sed 's/\r$//' "$BATS_TEST_TMPDIR/tty.raw" >"$BATS_TEST_TMPDIR/tty"
	mapfile -t lines <"$BATS_TEST_TMPDIR/tty"
	assert_equal "${#lines[@]}" 7
	assert_equal "${lines[0]}" "INFO: restore vma archive: $ARCHIVE to VM 230"
	assert_equal "${lines[1]}" "INFO: restoring 2 disk(s) from '$ARCHIVE'"
	# The meter's line: states each after a '\r', the last the final one.
	[ "${lines[2]:0:1}" = $'\r' ] || fail "no meter: $(cat -A "$BATS_TEST_TMPDIR/tty")"
	[[ ${lines[2]##*$'\r'} =~ ^100%\ \(164\.0\ MiB\ of\ 164\.0\ MiB\)\ in\ [0-9hms\ ]+,\ [0-9.]+\ (B|KiB|MiB|GiB)/s\ *$ ]] ||
		fail "final state: $(cat -A "$BATS_TEST_TMPDIR/tty")"
	assert_equal "${lines[3]}" "INFO: disk 'virtio0' (drive-virtio0): $S/230/vm-230-disk-0.raw (raw, 64M)"
	assert_equal "${lines[6]}" "INFO: restore of VM 230 finished"
	assert_equal "$(vz_disk_sha "$S/230/vm-230-disk-0.raw")" "$(cat "$VM/d0.sha")"
	# From standard input too, while the archive is staged.
	SHELL=/bin/bash script -qefc "cat '$ARCHIVE' | '$TOP/qmrestore.sh' --storage '$S' --confdir '$C' --rundir '$W/run' - 231" \
		/dev/null </dev/null >"$BATS_TEST_TMPDIR/tty.raw" 3>&-
	sed 's/\r$//' "$BATS_TEST_TMPDIR/tty.raw" >"$BATS_TEST_TMPDIR/tty"
	mapfile -t lines <"$BATS_TEST_TMPDIR/tty"
	assert_equal "${lines[1]}" "INFO: reading the archive from standard input"
	[[ ${lines[2]##*$'\r'} =~ ^100%\ \(164\.0\ MiB\ of\ 164\.0\ MiB\) ]] || fail "$(cat -A "$BATS_TEST_TMPDIR/tty")"
	assert_equal "${lines[-1]}" "INFO: restore of VM 231 finished"
}
