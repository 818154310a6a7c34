#!/usr/bin/env bats
# Smoke tests of the test fixtures themselves (tests/lib/guest.bash, qemu.bash,
# qga-client.py, qga-double.py) against the real components: one booted guest shared by
# the file, the guest agent inside it, a bare QEMU, and the guest-agent test double.

setup() {
	load lib/common
	load lib/guest
}

setup_file() {
	load lib/guest
	guest_build
	export GUEST_WD=$BATS_FILE_TMPDIR/guest
	mkdir -p "$GUEST_WD"
	guest_start "$GUEST_WD"
}

teardown_file() {
	load lib/guest
	guest_stop "$GUEST_WD"
}

teardown() {
	# A failed freeze test must not leave the shared guest frozen for the next ones.
	if [ -n "${FROZE:-}" ]; then
		"$QGA_CLIENT" --timeout 5 "$GUEST_WD/qga.sock" guest-fsfreeze-thaw >/dev/null || true
	fi
	if [ -n "${DOUBLE:-}" ]; then
		qga_double_stop "$DOUBLE"
	fi
	if [ -n "${HOST_QGA:-}" ]; then
		host_qga_stop "$HOST_QGA"
	fi
	if [ -n "${BARE:-}" ]; then
		qemu_stop "$BARE"
	fi
}

# Waits up to 10 s for the guest's counter to exceed $1.
wait_counter_above() {
	local i
	for ((i = 0; i < 100; i++)); do
		[ "$(guest_counter "$GUEST_WD")" -gt "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

@test "the guest's agent answers guest-ping and reports its filesystems thawed" {
	run "$QGA_CLIENT" "$GUEST_WD/qga.sock" guest-ping
	assert_success
	assert_output '{}'
	run "$QGA_CLIENT" "$GUEST_WD/qga.sock" guest-fsfreeze-status
	assert_success
	assert_output '"thawed"'
}

@test "the guest's agent answers a 0xFF resync with the parse-error line first" {
	run "$QGA_CLIENT" "$GUEST_WD/qga.sock" raw \
		'\xff{"execute":"guest-sync-delimited","arguments":{"id":77}}' --lines 2
	assert_success
	assert_line --index 0 '{"error": {"class": "GenericError", "desc": "JSON parse error, stray '"'"'\\uFFFD'"'"'"}}'
	assert_line --index 1 '\xff{"return": 77}'
}

@test "guest_exec prints the guest's counter file, and the counter increases" {
	run guest_exec "$GUEST_WD" cat /mnt/counter
	assert_success
	assert_regex "$output" '^[0-9]+$'
	first=$output
	for ((i = 0; i < 100; i++)); do
		second=$(guest_exec "$GUEST_WD" cat /mnt/counter)
		[ "$second" -gt "$first" ] && break
		sleep 0.1
	done
	[ "$second" -gt "$first" ]
}

@test "guest_exec passes on the program's stdout, stderr and exit status" {
	run --separate-stderr guest_exec "$GUEST_WD" sh -c 'echo out; echo err >&2; exit 7'
	assert_equal "$status" 7
	assert_equal "$output" out
	# shellcheck disable=SC2154 # run --separate-stderr sets $stderr
	assert_equal "$stderr" err
}

@test "freezing the guest stops its counter, and thawing resumes it and runs the hook" {
	hook_lines=$(grep -c '^FSFREEZE-HOOK' "$GUEST_WD/console.log") || true
	FROZE=1
	run "$QGA_CLIENT" "$GUEST_WD/qga.sock" guest-fsfreeze-freeze
	assert_success
	assert_output 1
	run "$QGA_CLIENT" "$GUEST_WD/qga.sock" guest-fsfreeze-status
	assert_output '"frozen"'
	# The writer may print one more line for a write done before the freeze; then it blocks.
	sleep 0.5
	frozen_at=$(guest_counter "$GUEST_WD")
	sleep 1
	assert_equal "$(guest_counter "$GUEST_WD")" "$frozen_at"
	run guest_exec "$GUEST_WD" cat /mnt/counter
	assert_failure 1
	assert_output --partial 'Command guest-exec has been disabled: the agent is in frozen state'

	run "$QGA_CLIENT" "$GUEST_WD/qga.sock" guest-fsfreeze-thaw
	assert_success
	assert_output 1
	wait_counter_above "$frozen_at"
	run bash -c "tr -d '\r' <'$GUEST_WD/console.log' | grep '^FSFREEZE-HOOK' | tail -n +$((hook_lines + 1))"
	assert_output - <<-'EOF'
		FSFREEZE-HOOK freeze
		FSFREEZE-HOOK thaw
	EOF
	run guest_exec "$GUEST_WD" cat /mnt/hook.log
	assert_output 'FSFREEZE-HOOK freeze'
}

@test "qga-double answers a 0xFF resync exactly as qemu-ga 7.2 does, also after a partial request" {
	DOUBLE=$BATS_TEST_TMPDIR/qga.sock
	qga_double_start "$DOUBLE"
	run "$QGA_CLIENT" "$DOUBLE" raw '{"execute": "guest-pi' --lines 0
	run "$QGA_CLIENT" "$DOUBLE" raw \
		'\xff{"execute": "guest-sync-delimited", "arguments": {"id": 7}}{"execute":"guest-ping"}' --lines 3
	assert_success
	assert_output - <<-'EOF'
		{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\\"guest-pi\\uFFFD'"}}
		\xff{"return": 7}
		{"return": {}}
	EOF
	run "$QGA_CLIENT" "$DOUBLE" raw '{"execute":"guest-sync","arguments":{"id":42},"id":"abc"}'
	assert_output '{"return": 42, "id": "abc"}'
	run "$QGA_CLIENT" "$DOUBLE" raw '{"execute":"no-such-command"}'
	assert_output '{"error": {"class": "CommandNotFound", "desc": "The command no-such-command has not been found"}}'
}

@test "qga-double keeps a freeze state, refuses other commands while frozen and logs every request" {
	DOUBLE=$BATS_TEST_TMPDIR/qga.sock
	qga_double_start "$DOUBLE" --fs-count 2
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-freeze
	assert_output 2
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-freeze
	assert_failure 1
	assert_output 'qga-client: CommandNotFound: Command guest-fsfreeze-freeze has been disabled: the agent is in frozen state'
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-status
	assert_output '"frozen"'
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-thaw
	assert_output 2
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-thaw
	assert_output 0
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-freeze-list '{"mountpoints": ["/mnt"]}'
	assert_output 1
	run bash -c "grep -v guest-sync-delimited '$DOUBLE.log'"
	assert_output - <<-'EOF'
		{"execute": "guest-fsfreeze-freeze"}
		{"execute": "guest-fsfreeze-freeze"}
		{"execute": "guest-fsfreeze-status"}
		{"execute": "guest-fsfreeze-thaw"}
		{"execute": "guest-fsfreeze-thaw"}
		{"execute": "guest-fsfreeze-freeze-list", "arguments": {"mountpoints": ["/mnt"]}}
	EOF
	run grep -c '"guest-sync-delimited"' "$DOUBLE.log"
	assert_output 6
}

@test "qga-double --hang freezes without answering, and later requests are answered" {
	DOUBLE=$BATS_TEST_TMPDIR/qga.sock
	qga_double_start "$DOUBLE" --hang guest-fsfreeze-freeze
	run "$QGA_CLIENT" --timeout 1 "$DOUBLE" guest-fsfreeze-freeze
	assert_failure 3
	assert_output 'qga-client: no answer in time'
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-status
	assert_output '"frozen"'
}

@test "qga-double --stall answers nothing after the given command" {
	DOUBLE=$BATS_TEST_TMPDIR/qga.sock
	qga_double_start "$DOUBLE" --stall guest-fsfreeze-freeze
	run "$QGA_CLIENT" --timeout 1 "$DOUBLE" guest-fsfreeze-freeze
	assert_failure 3
	run "$QGA_CLIENT" --timeout 1 "$DOUBLE" guest-ping
	assert_failure 3
	run grep -c '"guest-ping"' "$DOUBLE.log"
	assert_output 0
	run grep -c '"guest-sync-delimited"' "$DOUBLE.log"
	assert_output 2
}

@test "qga-double --drop closes the connection without carrying out the command" {
	DOUBLE=$BATS_TEST_TMPDIR/qga.sock
	qga_double_start "$DOUBLE" --drop guest-fsfreeze-freeze
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-freeze
	assert_failure 3
	assert_output 'qga-client: the agent closed the connection'
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-status
	assert_output '"thawed"'
}

@test "qga-double --delay answers late, and --garbage sends stale bytes before the sync reply" {
	DOUBLE=$BATS_TEST_TMPDIR/qga.sock
	qga_double_start "$DOUBLE" --delay guest-fsfreeze-freeze=1 --garbage
	start=$SECONDS
	run "$QGA_CLIENT" --timeout 10 "$DOUBLE" guest-fsfreeze-freeze
	assert_output 1
	[ $((SECONDS - start)) -ge 1 ]
	run "$QGA_CLIENT" "$DOUBLE" raw '\xff{"execute":"guest-sync-delimited","arguments":{"id":5}}' --lines 5
	assert_output - <<-'EOF'
		{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\\uFFFD'"}}
		{"return": 4711}
		\x00stale}{junk
		\xff{"return": 4711}
		\xff{"return": 5}
	EOF
}

@test "qga-double --frozen starts frozen and --thaw-fails 1 fails only the first thaw" {
	DOUBLE=$BATS_TEST_TMPDIR/qga.sock
	qga_double_start "$DOUBLE" --frozen --thaw-fails 1
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-status
	assert_output '"frozen"'
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-thaw
	assert_failure 1
	assert_output 'qga-client: GenericError: failed to thaw /mnt: Device or resource busy'
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-status
	assert_output '"frozen"'
	run "$QGA_CLIENT" "$DOUBLE" guest-fsfreeze-thaw
	assert_output 1
	qga_double_stop "$DOUBLE"
	[ ! -e "$DOUBLE" ] && [ ! -e "$DOUBLE.pid" ]
}

@test "host_qga_start runs the host's qemu-ga with only read-only RPCs enabled" {
	# Only guest-ping and guest-info are sent: never a guest-fsfreeze-* to a host agent.
	HOST_QGA=$BATS_TEST_TMPDIR/host-qga.sock
	host_qga_start "$HOST_QGA"
	run "$QGA_CLIENT" "$HOST_QGA" guest-ping
	assert_success
	assert_output '{}'
	run bash -c "'$QGA_CLIENT' '$HOST_QGA' guest-info |
		jq -r '.supported_commands[] | select(.enabled) | .name' | sort | tr '\n' ' '"
	assert_output 'guest-get-host-name guest-get-osinfo guest-get-time guest-get-timezone guest-info guest-ping guest-sync guest-sync-delimited '
}

@test "a bare QEMU answers query-status prelaunch and writes qemu-io results to qemu.out" {
	BARE=$BATS_TEST_TMPDIR/bare
	mkdir -p "$BARE"
	truncate -s 1M "$BARE/disk.raw"
	qemu_start_bare "$BARE" -blockdev "driver=file,node-name=f0,filename=$BARE/disk.raw" \
		-blockdev driver=raw,node-name=drive0,file=f0 -device virtio-blk-pci,drive=drive0,id=vblk0
	run qmp_raw "$BARE" '{"execute":"query-status"}'
	assert_success
	assert_output '{"return": {"status": "prelaunch", "singlestep": false, "running": false}}'
	run qmp_raw "$BARE" '{"execute":"human-monitor-command","arguments":{"command-line":"qemu-io -d /machine/peripheral/vblk0/virtio-backend \"write -P 0x55 0 4k\""}}'
	assert_output '{"return": ""}'
	run grep -c '^wrote 4096/4096 bytes at offset 0$' "$BARE/qemu.out"
	assert_output 1
	run qmp_raw "$BARE" '{"execute":"no-such-command"}'
	assert_failure 1
	assert_output '{"error": {"class": "CommandNotFound", "desc": "The command no-such-command has not been found"}}'
	pid=$(cat "$BARE/qemu.pid")
	qemu_stop "$BARE"
	run kill -0 "$pid"
	assert_failure
}

@test "guest_build finds the cached guest again" {
	kernel=$GUEST_KERNEL
	GUEST_KERNEL='' GUEST_INITRD=''
	guest_build
	assert_equal "$GUEST_KERNEL" "$kernel"
	[ -s "$GUEST_INITRD" ]
}
