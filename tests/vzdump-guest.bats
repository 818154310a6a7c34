#!/usr/bin/env bats
# shellcheck disable=SC2154,SC2016 # bats sets $stderr; bash -c programs are single-quoted
# vzdump.sh against the real tiny test guest under TCG with its real qemu-ga: the snapshot
# is taken inside the guest's filesystem freeze, so the archived ext4 is clean, holds the
# freeze hook's line and the counter of the instant, and the VM is left as it was.
# One guest boot (VMID 100, config `agent: 1`) is shared by the file.
#
# The guest's writer rewrites /mnt/counter every 100 ms and prints "COUNTER n" after each
# write; qemu-ga's hook prints "FSFREEZE-HOOK freeze" before freezing (and appends it to
# /mnt/hook.log) and "FSFREEZE-HOOK thaw" after thawing. So with the snapshot taken inside
# the freeze and counter m in the image, write m+1 is held by the freeze until the thaw:
# "COUNTER m+1" comes after the freeze hook's line, and it usually comes before the thaw
# hook's line too (qemu-ga runs the thaw hook only after FITHAW woke the writer). Between the
# two hook lines there can be only "COUNTER m" (a write finished just before FIFREEZE) and
# "COUNTER m+1" (the held write), never a third write.

setup() {
	load lib/common
	load lib/vzdump
	load lib/guest
	load lib/vma
}

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
}

teardown() {
	# A failed test must not leave the shared guest frozen for the next ones.
	if [ "$(gafreeze -s "$GUEST_WD/qga.sock" -t 5 status 2>/dev/null)" = frozen ]; then
		gafreeze -s "$GUEST_WD/qga.sock" -t 5 thaw >/dev/null 2>&1 || true
	fi
	# vma-extract --serve's test: its FUSE mount and server
	if mountpoint -q "$BATS_TEST_TMPDIR/serve/mnt" 2>/dev/null; then
		umount "$BATS_TEST_TMPDIR/serve/mnt"
	fi
	[ -z "${server:-}" ] || kill "$server" 2>/dev/null || true
	rm -rf "${GUEST_WD:?}"/dump/* "$BATS_TEST_TMPDIR/x"
}

# The number of complete lines on the guest's console so far.
console_mark() {
	wc -l <"$GUEST_WD/console.log"
}

# The writer's and the hook's lines on the console after MARK lines, without the \r.
console_since() { # MARK
	tail -n +$(($1 + 1)) "$GUEST_WD/console.log" | tr -d '\r' |
		grep -E '^(COUNTER [0-9]+|FSFREEZE-HOOK (freeze|thaw))$'
}

# Waits up to 10 s until the guest's writer printed a counter above N.
wait_counter_above() { # N
	local i
	for ((i = 0; i < 100; i++)); do
		[ "$(guest_counter "$GUEST_WD")" -gt "$1" ] && return 0
		sleep 0.1
	done
	fail "the guest stopped counting at $(guest_counter "$GUEST_WD") (expected above $1)"
}

# Asserts that IMAGE is ext4 without needs_recovery, and that e2fsck -fn passes it without a
# word about the journal (it says "skipping journal recovery" for a snapshot taken unfrozen).
assert_clean_ext4() { # IMAGE
	run dumpe2fs -h "$1"
	assert_success
	assert_line --regexp '^Filesystem magic number: +0xEF53$'
	assert_line --regexp '^Filesystem features: +has_journal '
	refute_output --partial needs_recovery
	run e2fsck -fn "$1"
	assert_success
	assert_line 'Pass 5: Checking group summary information'
	refute_output --regexp '[Jj]ournal|[Rr]ecover'
}

# The one archive in the dump folder, extracted to $BATS_TEST_TMPDIR/x; prints the disk image.
extract_disk() {
	local archives=("$GUEST_WD"/dump/vzdump-qemu-100-*.vma*)
	[ ${#archives[@]} = 1 ] || fail "not one archive: ${archives[*]}"
	vma-extract "${archives[0]}" "$BATS_TEST_TMPDIR/x" >/dev/null || fail "vma-extract failed"
	echo "$BATS_TEST_TMPDIR/x/disk-drive-virtio0.raw"
}

# Prints the number of lines of FILE inside the ext4 IMAGE that equal TEXT (and fails when
# the file has any other line).
count_lines_in_image() { # IMAGE FILE TEXT
	local content
	content=$(debugfs -R "cat $2" "$1" 2>/dev/null)
	if grep -qvxF -- "$3" <<<"$content"; then
		fail "$2 in the image has other lines: $content"
	fi
	grep -cxF -- "$3" <<<"$content"
}

@test "a backup with agent: 1 is taken inside the guest's freeze: clean ext4 with the hook's line and the counter of the instant" {
	mark=$(console_mark)
	freezes_before=$(tr -d '\r' <"$GUEST_WD/console.log" | grep -cx 'FSFREEZE-HOOK freeze') || true
	run --separate-stderr -0 vz_backup "$GUEST_WD" 100
	assert_output ""
	# The log: freeze, thaw, the window, then the copy.
	run grep -E '^INFO: (issuing guest-agent|guest filesystems frozen|skipping guest filesystem freeze|resuming VM again|starting backup via QMP)' <<<"$stderr"
	assert_line --index 0 "INFO: issuing guest-agent 'fs-freeze' command"
	assert_line --index 1 "INFO: issuing guest-agent 'fs-thaw' command"
	assert_line --index 2 --regexp '^INFO: guest filesystems frozen for [0-9]+ ms$'
	assert_line --index 3 "INFO: resuming VM again"
	assert_line --index 4 "INFO: starting backup via QMP command"
	[ "${#lines[@]}" = 5 ] || fail "$output"

	# The image: clean, with every freeze hook line so far (this backup's included).
	image=$(extract_disk)
	assert_clean_ext4 "$image"
	assert_equal "$(count_lines_in_image "$image" /hook.log 'FSFREEZE-HOOK freeze')" $((freezes_before + 1))
	m=$(debugfs -R 'cat /counter' "$image" 2>/dev/null)
	[[ $m =~ ^[0-9]+$ ]] || fail "counter in the image: '$m'"

	# The guest keeps counting; then its console, from this backup on.
	wait_counter_above $((m + 1))
	console=$(console_since "$mark")
	run grep '^FSFREEZE-HOOK' <<<"$console"
	assert_output "FSFREEZE-HOOK freeze
FSFREEZE-HOOK thaw"
	before_thaw=$(sed '/^FSFREEZE-HOOK thaw$/,$d' <<<"$console")
	after_freeze=$(sed '1,/^FSFREEZE-HOOK freeze$/d' <<<"$console")
	window=$(sed '1,/^FSFREEZE-HOOK freeze$/d; /^FSFREEZE-HOOK thaw$/,$d' <<<"$console")
	# Counter m was written and printed before the thaw, m+1 only after the freeze: the
	# image holds the counter of the instant inside the freeze.
	grep -qxF "COUNTER $m" <<<"$before_thaw" || fail "COUNTER $m not before the thaw: $console"
	grep -qxF "COUNTER $((m + 1))" <<<"$after_freeze" || fail "COUNTER $((m + 1)) not after the freeze: $console"
	# The writer was held while frozen: at most writes m and m+1 show between the hook lines.
	run grep -vxE "COUNTER ($m|$((m + 1)))" <<<"$window"
	assert_output ""
}

@test "after a frozen backup the block graph, jobs, fdsets and run state are as before, nothing is left, the agent says thawed" {
	blocks() {
		qmp_raw "$GUEST_WD" '{"execute":"query-block"}' |
			jq -c '[.return[] | [.device, .qdev, .inserted["node-name"]]]'
	}
	before=$(vz_state "$GUEST_WD")
	[[ $before == *'"running"' ]] || fail "guest not running: $before"
	blocks_before=$(blocks)
	[[ $blocks_before == *'"/machine/peripheral/virtio0/virtio-backend","drive-virtio0"]'* ]] ||
		fail "$blocks_before"
	run --separate-stderr -0 vz_backup "$GUEST_WD" --json 100
	assert_equal "$(vz_state "$GUEST_WD")" "$before"
	assert_equal "$(blocks)" "$blocks_before"
	# --json reports the freeze window the log gave.
	frozen=$(sed -n 's/^INFO: guest filesystems frozen for \([0-9]*\) ms$/\1/p' <<<"$stderr")
	[ -n "$frozen" ] || fail "$stderr"
	summary=$output
	run jq -c '[.status, .vms[0].status, .vms[0].frozen_ms]' <<<"$summary"
	assert_output "[\"ok\",\"ok\",$frozen]"
	run jq -c '.vms[0] | keys_unsorted' <<<"$summary"
	assert_output '["vmid","name","status","archive","size","start","end","frozen_ms","freeze_ms","qmp_ms","thaw_ms","snapshot_ms","error"]'
	# The steps are numbers, and the batch and the thaw follow each other inside the window
	# (one clock: go after the freeze's acknowledgement, the thaw asked after qmpctl's exit).
	run jq -c '.vms[0] | [(.freeze_ms, .qmp_ms, .thaw_ms | type), .qmp_ms + .thaw_ms <= .frozen_ms]' <<<"$summary"
	assert_output '["number","number","number",true]'
	run ls -A "$GUEST_WD/tmp"
	assert_output ""
	run ls "$GUEST_WD/dump"
	assert_line --index 0 --regexp '^vzdump-qemu-100-[0-9]{4}_[0-9]{2}_[0-9]{2}-[0-9]{2}_[0-9]{2}_[0-9]{2}\.log$'
	assert_line --index 1 "${lines[0]%.log}.vma"
	assert_line --index 2 "${lines[0]%.log}.vma.sha256"
	[ "${#lines[@]}" = 3 ] || fail "extra files: $output"
	run gafreeze -s "$GUEST_WD/run/100.qga" status
	assert_success
	assert_output thawed
}

@test "with --compress zstd, the post-thaw hook runs after the guest's thaw and the archive is clean" {
	# The hook records, at pre-freeze and post-thaw, how many freeze and thaw lines the
	# guest's hook printed so far and what the agent says.
	cat >"$BATS_TEST_TMPDIR/hook" <<END
#!/bin/bash
case \$1 in pre-freeze | post-thaw) ;; *) exit 0 ;; esac
con=\$(/usr/bin/tr -d '\r' <"$GUEST_WD/console.log")
f=\$(/usr/bin/grep -cx 'FSFREEZE-HOOK freeze' <<<"\$con")
t=\$(/usr/bin/grep -cx 'FSFREEZE-HOOK thaw' <<<"\$con")
echo "\$1 \$f \$t \$("$VZ_BIN/gafreeze" -s "$GUEST_WD/run/100.qga" status 2>&1)" >>"$BATS_TEST_TMPDIR/hook.log"
END
	chmod +x "$BATS_TEST_TMPDIR/hook"
	con=$(tr -d '\r' <"$GUEST_WD/console.log")
	f=$(grep -cx 'FSFREEZE-HOOK freeze' <<<"$con") || true
	t=$(grep -cx 'FSFREEZE-HOOK thaw' <<<"$con") || true
	run --separate-stderr vz_backup "$GUEST_WD" --compress zstd --script "$BATS_TEST_TMPDIR/hook" 100
	[ "$status" = 0 ] || fail "exit $status: $stderr"
	run cat "$BATS_TEST_TMPDIR/hook.log"
	assert_output "pre-freeze $f $t thawed
post-thaw $((f + 1)) $((t + 1)) thawed"
	archive=$(echo "$GUEST_WD"/dump/vzdump-qemu-100-*.vma.zst)
	[ -f "$archive" ] || fail "no .vma.zst: $(ls "$GUEST_WD/dump")"
	run -0 vma-extract -l "$archive"
	assert_line --index 1 "DEV: dev_id=1 size: 67108864 devname: drive-virtio0"
	assert_clean_ext4 "$(extract_disk)"
}

@test "the guest's backup served by vma-extract --serve: its files read through nbdfuse are the restored disk's" {
	run --separate-stderr vz_backup "$GUEST_WD" --compress zstd 100
	[ "$status" = 0 ] || fail "exit $status: $stderr"
	archive=$(echo "$GUEST_WD"/dump/vzdump-qemu-100-*.vma.zst)
	[ -f "$archive" ] || fail "no .vma.zst: $(ls "$GUEST_WD/dump")"
	image=$(extract_disk)
	w=$BATS_TEST_TMPDIR/serve
	mkdir -p "$w/mnt"
	vma-extract --serve "$w/sock" "$archive" 2>"$w/err" 3>&- &
	server=$!
	for ((i = 0; i < 200; i++)); do
		[ -S "$w/sock" ] && break
		sleep 0.05
	done
	nbdfuse -r "$w/mnt/disk" "nbd+unix:///drive-virtio0?socket=$w/sock" 3>&- &
	for ((i = 0; i < 100; i++)); do
		[ -f "$w/mnt/disk" ] && break
		sleep 0.1
	done
	for f in /counter /hook.log; do
		got=$(debugfs -R "cat $f" "$w/mnt/disk" 2>/dev/null)
		[ -n "$got" ] || fail "$f: nothing read through nbdfuse"
		assert_equal "$got" "$(debugfs -R "cat $f" "$image" 2>/dev/null)"
	done
	umount "$w/mnt"
	kill -TERM "$server"
	wait "$server" || fail "vma-extract --serve: exit $?: $(cat "$w/err")"
	server=
	[ ! -e "$w/sock" ]
}

@test "incremental backups of the guest, frozen each time: the chain restores a clean ext4 with its own instant's counter, and stores little" {
	run --separate-stderr -0 vz_backup "$GUEST_WD" --incremental 1 --compress zstd 100
	full=$(ls "$GUEST_WD"/dump/vzdump-qemu-100-*.vma.zst)
	vma-extract "$full" "$BATS_TEST_TMPDIR/x0" >/dev/null
	m1=$(debugfs -R 'cat /counter' "$BATS_TEST_TMPDIR/x0/disk-drive-virtio0.raw" 2>/dev/null)
	[[ $m1 =~ ^[0-9]+$ ]] || fail "counter in the full: '$m1'"
	# The guest writes on; the next backup holds what it wrote since the first.
	wait_counter_above $((m1 + 10))
	run --separate-stderr -0 vz_backup "$GUEST_WD" --incremental 1 100
	inc=$(ls "$GUEST_WD"/dump/vzdump-qemu-100-*.inc.vma)
	grep -qxF "INFO: incremental backup: the changes since ${full##*/} (chain depth 1 of at most 6)" <<<"$stderr" ||
		fail "$stderr"
	grep -qxE 'INFO: guest filesystems frozen for [0-9]+ ms' <<<"$stderr" || fail "$stderr"
	vma-extract "$inc" "$BATS_TEST_TMPDIR/x" >/dev/null
	image=$BATS_TEST_TMPDIR/x/disk-drive-virtio0.raw
	assert_clean_ext4 "$image"
	m2=$(debugfs -R 'cat /counter' "$image" 2>/dev/null)
	[[ $m2 =~ ^[0-9]+$ ]] && [ "$m2" -gt "$m1" ] || fail "counter: $m1 in the full, '$m2' in the chain"
	# A few clusters of the guest's writes (the counter, its journal, the hook's log), not the disk.
	clusters=$(vma_check --incremental --clusters "$inc" | wc -l)
	total=$(($(stat -c %s "$GUEST_WD/guestdisk.raw") / 65536))
	[ "$clusters" -gt 0 ] && [ $((clusters * 10)) -lt "$total" ] || fail "$clusters of $total clusters"
}
