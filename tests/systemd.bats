#!/usr/bin/env bats
# shellcheck disable=SC2154,SC2016 # bats sets $stderr; bash -c programs are single-quoted
# The systemd units of dist/: systemd-analyze verify accepts them, and a job stopped the way
# systemd stops a unit (SIGTERM to every process of its cgroup, SIGKILL to what is left after
# TimeoutStopSec; lib/faults.bash, fault_stop_like_systemd) leaves nothing the next job cannot
# recover: the next job succeeds. Against a real QEMU (VMID 300, bare, one 4 MiB disk of
# random data) and the guest-agent double for a freeze; no systemd needs to run.

setup() {
	load lib/common
	load lib/vzdump
	load lib/guest
	load lib/faults
	export FAULT_DIR=$BATS_FILE_TMPDIR/fault
	unset FAULT_QMP FAULT_WHEN FAULT_MV VZDUMP_CONF
	driver=
	export VZDUMP_FREEZE_MAX=3
}

setup_file() {
	load lib/common
	load lib/vzdump
	load lib/faults
	export FAULT_DIR=$BATS_FILE_TMPDIR/fault
	fault_shims "$FAULT_DIR/bin"
	export VM=$BATS_FILE_TMPDIR/vm
	mkdir -p "$VM"
	vz_start_one_disk "$VM" 300 'agent: 1'
	vz_state "$VM" >"$VM/before"
}

teardown() {
	if [ -n "${driver:-}" ] && kill -0 "$driver" 2>/dev/null; then
		kill -KILL -- "-$driver" 2>/dev/null || true
		sleep 0.5
	fi
	touch "$FAULT_DIR/release"
	qga_double_stop "$VM/run/300.qga"
	rm -f "$VM/run/300.qga"
	if [ -z "${BATS_TEST_COMPLETED:-}" ]; then
		"$TOP/vzdump.sh" --cleanup --rundir "$VM/run" --tmpdir "$VM/tmp" --dumpdir "$VM/dump" 300 >/dev/null 2>&1 || true
	fi
	find "$VM/dump" "$VM/tmp" -mindepth 1 -delete
}

teardown_file() {
	load lib/common
	load lib/vzdump
	qemu_stop "$VM"
}

# The units of dist/ in DIR, run from the checkout: ExecStart's /usr/bin/vzdump.sh is the
# checkout's (systemd-analyze checks that it is executable), and MANPATH finds
# Documentation=man:vzdump.sh(1).
units_in() { # DIR
	mkdir -p "$1/man/man1"
	cp "$TOP/man/vzdump.sh.1" "$1/man/man1/"
	for u in vzdump.service vzdump.timer vzdump@.service; do
		sed "s|/usr/bin/vzdump.sh|$TOP/vzdump.sh|" "$TOP/dist/$u" >"$1/$u"
	done
	cp "$1/vzdump@.service" "$1/vzdump@300.service"
}

@test "systemd-analyze verify accepts vzdump.service, vzdump.timer, vzdump@.service and an instance" {
	command -v systemd-analyze >/dev/null || skip "no systemd-analyze (package systemd)"
	units_in "$BATS_TEST_TMPDIR/u"
	cd "$BATS_TEST_TMPDIR/u"
	run -0 env MANPATH="$PWD/man" systemd-analyze verify "$PWD/vzdump.service" \
		"$PWD/vzdump.timer" "$PWD/vzdump@.service" "$PWD/vzdump@300.service"
	assert_output ""
}

@test "the units: vzdump.sh --all nightly (persistent, random delay), one VMID per instance, state folder kept" {
	u=$TOP/dist
	grep -qx 'ExecStart=/usr/bin/vzdump.sh --all' "$u/vzdump.service"
	grep -qx 'ExecStart=/usr/bin/vzdump.sh %i' "$u/vzdump@.service"
	grep -qx 'Type=oneshot' "$u/vzdump.service"
	grep -qx 'OnCalendar=\*-\*-\* 02:00:00' "$u/vzdump.timer"
	grep -qx 'Persistent=true' "$u/vzdump.timer"
	grep -qE '^RandomizedDelaySec=[1-9]' "$u/vzdump.timer"
	# The state file of a killed job must outlive it; no private /tmp (QEMU opens the
	# scratch images by path).
	for s in vzdump.service vzdump@.service; do
		grep -qx 'RuntimeDirectory=vzdump' "$u/$s"
		grep -qx 'RuntimeDirectoryPreserve=yes' "$u/$s"
		# (ProtectClock implies DeviceAllow=char-rtc r: no block device could be read.)
		run grep -E '^(PrivateTmp|PrivateDevices|PrivateNetwork|ProtectClock|DeviceAllow|DevicePolicy)=' "$u/$s"
		assert_output ""
		# The two services differ only in what they back up.
		assert_equal "$(grep -v -e '^#' -e '^ExecStart=' -e '^Description=' "$u/$s")" \
			"$(grep -v -e '^#' -e '^ExecStart=' -e '^Description=' "$u/vzdump.service")"
	done
	# The stop timeout the driver's own cleanup gets before SIGKILL.
	grep -qx 'TimeoutStopSec=3min' "$u/vzdump.service"
}

@test "dist/vzdump.conf has every key vzdump.sh reads, commented out; uncommented, the defaults are accepted" {
	keys=$(bash -c 'PROG=x; source "$1/lib/vzdump/options.bash"; echo ${VALUE_OPTIONS//--/}' _ "$TOP")
	for k in $keys; do
		grep -qE "^#$k: " "$TOP/dist/vzdump.conf" || fail "no #$k: in dist/vzdump.conf"
	done
	run grep -vE '^(#.*)?$' "$TOP/dist/vzdump.conf"
	assert_output ""
	# The keys with a default, uncommented, into a job with the test's folders.
	grep -E '^#[a-z-]+: ' "$TOP/dist/vzdump.conf" | sed 's/^#//' |
		grep -vE '^(dumpdir|tmpdir|confdir|rundir|statedir|script|exclude|notes-template|mailto|node|maxfiles):' \
			>"$BATS_TEST_TMPDIR/vzdump.conf"
	VZDUMP_CONF=$BATS_TEST_TMPDIR/vzdump.conf run --separate-stderr -0 vz_backup "$VM" 300
	grep -qxF 'INFO: Backup job finished successfully' <<<"$stderr" || fail "$stderr"
	run grep -F ignoring <<<"$stderr"
	assert_output ""
}

# The job as vzdump.service runs it: --all, the rest from a vzdump.conf (here with the test's
# folders and a bandwidth limit that keeps the copy going for a while).
start_job_copying() {
	cat >"$VM/vzdump.conf" <<END
dumpdir: $VM/dump
tmpdir: $VM/tmp
confdir: $VM/conf
rundir: $VM/run
bwlimit: 256
END
	export VZDUMP_CONF=$VM/vzdump.conf
	fault_start "$VM" --all
	fault_wait_log '^INFO: starting backup via QMP command$'
}

@test "stopped like systemd during the copy: the job undoes itself within the timeout; the next job succeeds" {
	before=$(cat "$VM/before")
	start_job_copying
	fault_stop_like_systemd 30
	assert_equal "$stop_killed" 0
	assert_equal "$driver_rc" 1
	grep -qxF 'ERROR: Backup of VM 300 failed - interrupted by signal' "$VM/err" || fail "$(cat "$VM/err")"
	grep -qxF 'ERROR: Backup job failed - interrupted by signal' "$VM/err"
	unset VZDUMP_CONF
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "stopped like systemd inside the freeze window: thawed, undone within the timeout; the next job succeeds" {
	before=$(cat "$VM/before")
	qga_double_start "$VM/run/300.qga"
	export FAULT_QMP=snapshot.qmp FAULT_WHEN=after
	fault_start "$VM" 300
	fault_reach
	fault_stop_like_systemd 30
	assert_equal "$stop_killed" 0
	assert_equal "$driver_rc" 1
	[ "$(gafreeze -s "$VM/run/300.qga" -t 2 status)" = thawed ] || fail "the agent is still frozen"
	run bash -c 'jq -r ".execute // empty" "$1" | grep fsfreeze' _ "$VM/run/300.qga.log"
	assert_line guest-fsfreeze-thaw
	qga_double_stop "$VM/run/300.qga"
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "stopped like systemd while a hook ignores SIGTERM: SIGKILL after the timeout, the next job recovers and succeeds" {
	before=$(cat "$VM/before")
	# At pre-freeze the scratch images are attached: there is something to undo, and the
	# driver's own undo waits 10 s for the hook, longer than this stop timeout of 3 s.
	cat >"$VM/hook" <<'END'
#!/bin/bash
if [ "$1" = pre-freeze ]; then
	trap '' TERM
	: >"${DUMPDIR:?}/../hook-reached"
	sleep 60
fi
exit 0
END
	chmod +x "$VM/hook"
	rm -f "$VM/hook-reached"
	fault_start "$VM" 300 --script "$VM/hook"
	for ((i = 0; i < 300; i++)); do
		[ ! -e "$VM/hook-reached" ] || break
		sleep 0.1
	done
	[ -e "$VM/hook-reached" ] || fail "the hook did not run: $(cat "$VM/err")"
	fault_stop_like_systemd 3
	assert_equal "$stop_killed" 1
	assert_equal "$driver_rc" 137
	[ -s "$VZDUMP_STATEDIR/300.state" ] || fail "no state file left"
	run pgrep -f -- "$VM/hook"
	assert_output ""
	run --separate-stderr -0 vz_backup "$VM" 300
	grep -qE '^INFO: cleaning up after an earlier backup of VM 300 that did not finish \(pid [0-9]+\)$' <<<"$stderr" ||
		fail "$stderr"
	grep -qxF 'INFO: Backup job finished successfully' <<<"$stderr"
	run bash -c 'ls "$1" | grep -c "\.vma$"' _ "$VM/dump"
	assert_output 1
	rm -f "$VM"/dump/*.vma "$VM"/dump/*.vma.sha256
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}
