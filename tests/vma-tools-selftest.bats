#!/usr/bin/env bats
# Self-tests of the independent VMA test tooling: tests/lib/vma_check.py (strict validator)
# and tests/lib/vma_corrupt.py (plants one defect), fed by tests/lib/vma_make.py (test-only
# generator). They do not use the C tools, so they also run before those exist.
# shellcheck disable=SC2030,SC2031  # bats runs each test in a subshell on purpose

setup() { load lib/common; }

setup_file() {
	LIB="$BATS_TEST_DIRNAME/lib"
	export LIB
	local dir="$BATS_FILE_TMPDIR"
	# The archive every defect is planted in: two configs, three devices (one ends 1152
	# bytes into a block and 10 blocks into its last cluster), several extents.
	printf 'name: selftest\ncores: 1\n' >"$dir/qemu-server.conf"
	printf '[OPTIONS]\nenable: 1\n' >"$dir/qemu-server.fw"
	head -c 300000 /dev/urandom >"$dir/disk0"
	head -c 70000 /dev/urandom >"$dir/disk1"
	head -c 131072 /dev/urandom >"$dir/disk2"
	python3 "$LIB/vma_make.py" --entries 3 --uuid 6c1a4f0e-2b7d-4c55-9e1f-0a1b2c3d4e5f \
		--ctime 1700000000 -c qemu-server.conf="$dir/qemu-server.conf" \
		-c qemu-server.fw="$dir/qemu-server.fw" -d drive-scsi0="$dir/disk0" \
		-d drive-scsi1="$dir/disk1" -d drive-efidisk0="$dir/disk2" "$dir/base.vma"
}

# Runs vma_make with the arguments given, writing $BATS_TEST_TMPDIR/a.vma.
make_archive() {
	python3 "$LIB/vma_make.py" "$@" "$BATS_TEST_TMPDIR/a.vma"
}

# A device of SIZE random bytes is accepted, with the expected cluster and block counts.
accepts_device_of_size() { # SIZE CLUSTERS BLOCKS
	random_file "$BATS_TEST_TMPDIR/disk" "$1"
	make_archive -d drive-scsi0="$BATS_TEST_TMPDIR/disk"
	run --separate-stderr python3 "$LIB/vma_check.py" --strict "$BATS_TEST_TMPDIR/a.vma"
	assert_success
	assert_output "ok: 0 configs, 1 devices, 1 extents, $2 clusters, $3 stored blocks"
	[ -z "$stderr" ]
}

@test "vma_check accepts a 1-byte device (one partial block, zero-filled past the end)" {
	accepts_device_of_size 1 1 1
}

@test "vma_check accepts a 4095-byte device" {
	accepts_device_of_size 4095 1 1
}

@test "vma_check accepts a 4097-byte device (a second, 1-byte block)" {
	accepts_device_of_size 4097 1 2
}

@test "vma_check accepts a 65535-byte device (16 blocks, the last one partial)" {
	accepts_device_of_size 65535 1 16
}

@test "vma_check accepts a 65537-byte device (a second cluster holding one byte)" {
	accepts_device_of_size 65537 2 17
}

@test "vma_check accepts an archive with no device: the header plus one empty extent" {
	make_archive
	assert_equal "$(stat -c %s "$BATS_TEST_TMPDIR/a.vma")" 13312
	run --separate-stderr python3 "$LIB/vma_check.py" --strict "$BATS_TEST_TMPDIR/a.vma"
	assert_success
	assert_output "ok: 0 configs, 0 devices, 1 extents, 0 clusters, 0 stored blocks"
}

@test "vma_check accepts 20 devices of different sizes spread over several extents" {
	local args=() i
	for i in $(seq 1 20); do
		random_file "$BATS_TEST_TMPDIR/disk$i" $((i * 20000))
		args+=(-d "drive-virtio$i=$BATS_TEST_TMPDIR/disk$i")
	done
	make_archive "${args[@]}"
	run --separate-stderr python3 "$LIB/vma_check.py" --strict --json "$BATS_TEST_TMPDIR/a.vma"
	assert_success
	# 20000*i bytes: sum(ceil(20000*i/65536)) clusters, sum(ceil(20000*i/4096)) blocks.
	assert_equal "$(jq -c '[.extents, .clusters, .stored_blocks, (.devices|length)]' <<<"$output")" \
		'[2,74,1035,20]'
	assert_equal "$(jq -c '.devices[19]' <<<"$output")" \
		'{"dev_id":20,"name":"drive-virtio20","size":400000}'
}

@test "vma_check --json reports 0-byte and 65535-byte configs, uuid and ctime exactly" {
	: >"$BATS_TEST_TMPDIR/empty.conf"
	random_file "$BATS_TEST_TMPDIR/big.conf" 65535
	random_file "$BATS_TEST_TMPDIR/disk" 5000
	make_archive --uuid 0f2e1d3c-4b5a-4697-8877-665544332211 --ctime 1635680622 \
		-c empty.conf="$BATS_TEST_TMPDIR/empty.conf" -c big.conf="$BATS_TEST_TMPDIR/big.conf" \
		-d drive-scsi0="$BATS_TEST_TMPDIR/disk"
	run --separate-stderr python3 "$LIB/vma_check.py" --strict --json "$BATS_TEST_TMPDIR/a.vma"
	assert_success
	assert_equal "$(jq -S -c . <<<"$output")" \
		'{"clusters":1,"configs":[{"name":"empty.conf","size":0},{"name":"big.conf","size":65535}],"ctime":1635680622,"devices":[{"dev_id":1,"name":"drive-scsi0","size":5000}],"extents":1,"stored_blocks":2,"uuid":"0f2e1d3c-4b5a-4697-8877-665544332211"}'
}

@test "vma_check accepts clusters of several devices shuffled across extents, read from stdin" {
	random_file "$BATS_TEST_TMPDIR/disk0" 1000000
	random_file "$BATS_TEST_TMPDIR/disk1" 300001
	make_archive --entries 5 -d a="$BATS_TEST_TMPDIR/disk0" -d b="$BATS_TEST_TMPDIR/disk1"
	mv "$BATS_TEST_TMPDIR/a.vma" "$BATS_TEST_TMPDIR/ordered.vma"
	make_archive --entries 5 --shuffle -d a="$BATS_TEST_TMPDIR/disk0" -d b="$BATS_TEST_TMPDIR/disk1"
	# Same length, different bytes: the order really changed.
	assert_equal "$(stat -c %s "$BATS_TEST_TMPDIR/a.vma")" "$(stat -c %s "$BATS_TEST_TMPDIR/ordered.vma")"
	[ "$(sha "$BATS_TEST_TMPDIR/a.vma")" != "$(sha "$BATS_TEST_TMPDIR/ordered.vma")" ]
	# shellcheck disable=SC2016  # expanded by the inner shell
	run --separate-stderr bash -c 'python3 "$LIB/vma_check.py" --strict - <"$1"' _ "$BATS_TEST_TMPDIR/a.vma"
	assert_success
	assert_output "ok: 0 configs, 2 devices, 5 extents, 21 clusters, 319 stored blocks"
}

@test "vma_check warns about a stored all-zero block, and fails on it with --strict" {
	head -c 8192 /dev/zero >"$BATS_TEST_TMPDIR/disk"
	random_file "$BATS_TEST_TMPDIR/tail" 4096
	cat "$BATS_TEST_TMPDIR/tail" >>"$BATS_TEST_TMPDIR/disk"
	make_archive --keep-zero-blocks -d d="$BATS_TEST_TMPDIR/disk"
	run --separate-stderr python3 "$LIB/vma_check.py" "$BATS_TEST_TMPDIR/a.vma"
	assert_success
	assert_output "ok: 0 configs, 1 devices, 1 extents, 1 clusters, 3 stored blocks"
	assert_equal "$stderr" "vma_check: 13312: warning: device 1 'd': stored block 0 of cluster 0 is all zero (writers omit zero blocks)
vma_check: warning: 2 stored blocks are all zero"
	run --separate-stderr python3 "$LIB/vma_check.py" --strict "$BATS_TEST_TMPDIR/a.vma"
	assert_failure 1
	assert_output ""
	assert_equal "$stderr" "vma_check: 13312: device 1 'd': stored block 0 of cluster 0 is all zero (writers omit zero blocks)"
}

@test "vma_check exits 2 on usage errors and 1 on an unreadable file" {
	run --separate-stderr python3 "$LIB/vma_check.py"
	assert_failure 2
	run --separate-stderr python3 "$LIB/vma_check.py" --bogus x
	assert_failure 2
	run --separate-stderr python3 "$LIB/vma_check.py" "$BATS_TEST_TMPDIR/missing.vma"
	assert_failure 1
	assert_equal "$stderr" "vma_check: $BATS_TEST_TMPDIR/missing.vma: No such file or directory"
}

@test "vma_check reports a short file as a truncated header, not a crash" {
	printf 'VMA\0' >"$BATS_TEST_TMPDIR/short.vma"
	run --separate-stderr python3 "$LIB/vma_check.py" "$BATS_TEST_TMPDIR/short.vma"
	assert_failure 1
	assert_equal "$stderr" "vma_check: 4: truncated header: input ends after 4 of 12288 bytes"
	: >"$BATS_TEST_TMPDIR/empty.vma"
	run --separate-stderr python3 "$LIB/vma_check.py" "$BATS_TEST_TMPDIR/empty.vma"
	assert_failure 1
	assert_equal "$stderr" "vma_check: 0: truncated header: input ends after 0 of 12288 bytes"
}

@test "vma_check calls fewer than 512 bytes after a complete archive trailing garbage" {
	cp "$BATS_FILE_TMPDIR/base.vma" "$BATS_TEST_TMPDIR/a.vma"
	local size
	size=$(stat -c %s "$BATS_TEST_TMPDIR/a.vma")
	printf 'x%.0s' $(seq 100) >>"$BATS_TEST_TMPDIR/a.vma"
	run --separate-stderr python3 "$LIB/vma_check.py" "$BATS_TEST_TMPDIR/a.vma"
	assert_failure 1
	assert_equal "$stderr" "vma_check: $size: trailing garbage: 100 bytes after the last extent"
}

@test "the base archive of the defect tests is valid" {
	run --separate-stderr python3 "$LIB/vma_check.py" --strict "$BATS_FILE_TMPDIR/base.vma"
	assert_success
	assert_output "ok: 2 configs, 3 devices, 3 extents, 9 clusters, 124 stored blocks"
}

# Plants DEFECT in the base archive, then expects vma_check to fail with exactly one line,
# at the offset vma_corrupt reported, whose text matches REGEX (it names the defect).
rejects_defect() { # DEFECT REGEX
	run --separate-stderr python3 "$LIB/vma_corrupt.py" "$BATS_FILE_TMPDIR/base.vma" \
		"$BATS_TEST_TMPDIR/bad.vma" "$1"
	assert_success
	assert_regex "$output" "^$1: .* at offset [0-9]+\$"
	local offset=${output##* }
	run --separate-stderr python3 "$LIB/vma_check.py" --strict "$BATS_TEST_TMPDIR/bad.vma"
	assert_failure 1
	assert_output ""
	assert_regex "$stderr" "^vma_check: $offset: $2\$"
}

@test "vma_check rejects a bad magic" {
	rejects_defect bad-magic "bad magic 564d5800 \(expected 564d4100 'VMA.0'\)"
}

@test "vma_check rejects a version other than 1" {
	rejects_defect bad-version "bad version 2 \(expected 1\)"
}

@test "vma_check rejects a wrong header MD5" {
	rejects_defect bad-header-md5 "header MD5 mismatch: stored [0-9a-f]{32}, computed [0-9a-f]{32}"
}

@test "vma_check rejects a wrong extent MD5" {
	rejects_defect bad-extent-md5 "extent header MD5 mismatch: stored [0-9a-f]{32}, computed [0-9a-f]{32}"
}

@test "vma_check rejects a bad extent magic" {
	rejects_defect bad-extent-magic "bad extent magic 564d4158 \(expected 564d4145 'VMAE'\)"
}

@test "vma_check rejects a non-zero extent reserved1" {
	rejects_defect extent-reserved "extent reserved1 is 1 \(must be 0\)"
}

@test "vma_check rejects an extent whose uuid differs from the header's" {
	rejects_defect uuid-mismatch "extent uuid 6c1a4f0e-2b7d-4c55-9e1f-0a1b2c3d4e5e differs from the header uuid 6c1a4f0e-2b7d-4c55-9e1f-0a1b2c3d4e5f"
}

@test "vma_check rejects a block_count above the mask bits" {
	rejects_defect block-count-high "block_count 49 is higher than the 48 blocks announced by the masks"
}

@test "vma_check rejects a block_count below the mask bits" {
	rejects_defect block-count-low "block_count 47 is lower than the 48 blocks announced by the masks"
}

@test "vma_check rejects a cluster stored twice" {
	rejects_defect duplicate-cluster "device 1 'drive-scsi0': duplicate cluster 0"
}

@test "vma_check rejects a cluster past the device end" {
	rejects_defect cluster-past-end "device 1 'drive-scsi0': cluster 5 is past the end \(the device has 5 clusters\)"
}

@test "vma_check rejects a mask bit for a block past the device end" {
	rejects_defect block-past-end "device 1 'drive-scsi0': mask 0x07ff stores block 10 of cluster 4, which starts at or past the device end \(300000 bytes\)"
}

@test "vma_check rejects an undeclared dev_id" {
	rejects_defect unknown-dev-id "blockinfo has unknown dev_id 4 \(declared: 1..3\)"
}

@test "vma_check rejects a blob pointer that is not a blob start" {
	rejects_defect bad-blob-pointer "config 0 name pointer 2 does not land on a blob start"
}

@test "vma_check rejects a blob buffer running past header_size" {
	rejects_defect blob-past-end "blob buffer runs past the header end: blob_buffer_offset 12288 \+ blob_buffer_size 513 > header_size 12800"
}

@test "vma_check rejects a device name containing a slash" {
	rejects_defect name-slash "device 1 name 'sub/drive-scsi0' contains '/'"
}

@test "vma_check rejects the config name .." {
	rejects_defect name-dotdot "config 0 name is '..'"
}

@test "vma_check rejects an empty name" {
	rejects_defect name-empty "config 0 name is empty"
}

@test "vma_check rejects a control character in a name" {
	rejects_defect name-control "device 1 name b'drive-scsi0.x01x' contains control character 0x01"
}

@test "vma_check rejects non-zero bytes past the device end in a partial last block" {
	rejects_defect tail-not-zero "device 1 'drive-scsi0': block 9 of cluster 4 has non-zero bytes past the device end \(300000 bytes\)"
}

@test "vma_check rejects an archive cut inside an extent's data" {
	rejects_defect truncate-extent "truncated extent: input ends after 2048 of [0-9]+ data bytes"
}

@test "vma_check rejects an archive cut inside the header" {
	rejects_defect truncate-header "truncated header: input ends after 12544 of header_size 12800 bytes"
}

@test "vma_check rejects an archive cut at an extent boundary as missing clusters" {
	rejects_defect truncate-at-boundary "input ends with missing clusters: device 2 'drive-scsi1': 1 of 2 clusters missing \(first: 1\); device 3 'drive-efidisk0': 2 of 2 clusters missing \(first: 0\)"
}

@test "vma_check rejects garbage after the last extent" {
	rejects_defect trailing-garbage "trailing garbage after the last extent \(no VMAE magic, found 74726169\)"
}

@test "vma_corrupt lists every defect and refuses unknown ones and unsuitable archives" {
	run python3 "$LIB/vma_corrupt.py" --list
	assert_success
	assert_equal "$(echo "$output" | tr '\n' ' ')" "bad-magic bad-version bad-header-md5 bad-extent-md5 bad-extent-magic extent-reserved uuid-mismatch block-count-high block-count-low duplicate-cluster cluster-past-end block-past-end unknown-dev-id bad-blob-pointer blob-past-end name-slash name-dotdot name-empty name-control tail-not-zero truncate-extent truncate-header truncate-at-boundary trailing-garbage "
	run --separate-stderr python3 "$LIB/vma_corrupt.py" "$BATS_FILE_TMPDIR/base.vma" "$BATS_TEST_TMPDIR/x" no-such-defect
	assert_failure 2
	random_file "$BATS_TEST_TMPDIR/disk" 131072
	make_archive -d d="$BATS_TEST_TMPDIR/disk"
	run --separate-stderr python3 "$LIB/vma_corrupt.py" "$BATS_TEST_TMPDIR/a.vma" "$BATS_TEST_TMPDIR/x" block-past-end
	assert_failure 1
	assert_output ""
	assert_equal "$stderr" "vma_corrupt: $BATS_TEST_TMPDIR/a.vma: cannot apply block-past-end: no device has a last cluster with a 4 KiB block wholly past its end (needs a size whose remainder modulo 65536 is at most 61440)"
	[ ! -e "$BATS_TEST_TMPDIR/x" ]
}

# The genuine Proxmox archive: 58 entries per extent, clusters out of order, truncated at an
# extent boundary. Only the missing clusters may be reported.
fixture() {
	FIXTURE="$SHARED/fixtures/pve-live-backup-truncated.vma.gz"
	[ -f "$FIXTURE" ] || skip "fixture $FIXTURE is absent"
}

@test "vma_check reads the real Proxmox archive and reports only its missing clusters" {
	fixture
	# shellcheck disable=SC2016  # expanded by the inner shell
	run --separate-stderr bash -c 'gzip -dc "$1" | python3 "$LIB/vma_check.py" --strict -' _ "$FIXTURE"
	assert_failure 1
	assert_output ""
	assert_equal "$stderr" "vma_check: 538112: input ends with missing clusters: device 1 'drive-scsi0': 163724 of 163840 clusters missing (first: 23)"
}

@test "vma_check finds a duplicate cluster planted in the real Proxmox archive" {
	fixture
	gzip -dc "$FIXTURE" >"$BATS_TEST_TMPDIR/pve.vma"
	run python3 "$LIB/vma_corrupt.py" "$BATS_TEST_TMPDIR/pve.vma" "$BATS_TEST_TMPDIR/bad.vma" duplicate-cluster
	assert_success
	assert_output "duplicate-cluster: dev 1 cluster 0 stored a second time (with its blocks) at offset 79352"
	run --separate-stderr python3 "$LIB/vma_check.py" "$BATS_TEST_TMPDIR/bad.vma"
	assert_failure 1
	assert_equal "$stderr" "vma_check: 79352: device 1 'drive-scsi0': duplicate cluster 0"
}
