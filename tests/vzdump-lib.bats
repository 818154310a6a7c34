#!/usr/bin/env bats
# Unit tests of the driver's library (lib/vzdump/*.bash) with QMP stood in for by a function:
# the failure paths that a real QEMU seldom shows on cue.

setup() {
	load lib/common
	PROG=vzdump.sh
	LIBDIR=$TOP/lib/vzdump
	QMP_TIMEOUT=2
	# shellcheck source=lib/vzdump/state.bash
	source "$LIBDIR/state.bash"
	# shellcheck source=lib/vzdump/process.bash
	source "$LIBDIR/process.bash"
	# shellcheck source=lib/vzdump/job.bash
	source "$LIBDIR/job.bash"
	# shellcheck source=lib/vzdump/journal.bash
	source "$LIBDIR/journal.bash"
	exec {global_lock_fd}</dev/null {vm_lock_fd}</dev/null
	set -o pipefail
	TPM_NODE=drive-tpmstate0-backup
}

@test "cancel_jobs fails when QEMU does not answer query-jobs (it took that for 'all concluded')" {
	qmp() { return 3; }
	job_ids=(vzdump-drive-scsi0)
	run cancel_jobs
	assert_failure
}

@test "cancel_jobs cancels the jobs still running and waits until they have concluded" {
	qmp() {
		case $1 in
		query-jobs)
			if [ -e "$BATS_TEST_TMPDIR/cancelled" ]; then
				echo '[{"id":"vzdump-drive-scsi0","status":"concluded"}]'
			else
				echo '[{"id":"vzdump-drive-scsi0","status":"running"},{"id":"other","status":"running"}]'
			fi
			;;
		job-cancel) echo "$2" >>"$BATS_TEST_TMPDIR/cancelled" ;;
		esac
	}
	job_ids=(vzdump-drive-scsi0)
	run -0 cancel_jobs
	assert_equal "$(cat "$BATS_TEST_TMPDIR/cancelled")" "id=vzdump-drive-scsi0"
}

@test "sweep_leftovers stops waiting for jobs as soon as QEMU stops answering" {
	qmp() {
		local n
		n=$(($(cat "$BATS_TEST_TMPDIR/n" 2>/dev/null || echo 0) + 1))
		echo "$n" >"$BATS_TEST_TMPDIR/n"
		case $1 in
		query-named-block-nodes) echo '[{"node-name":"vz-tgt-scsi0","file":"x"}]' ;;
		query-jobs) [ "$n" -le 2 ] && echo '[{"id":"vzdump-drive-scsi0","status":"running"}]' ;;
		*) return 3 ;;
		esac
	}
	start=$SECONDS
	sweep_leftovers 2>/dev/null
	[ $((SECONDS - start)) -le 3 ] || fail "sweep_leftovers waited $((SECONDS - start)) s for a QEMU that does not answer"
	assert_equal "$swept" 1
}

@test "wait_until polls until the condition holds, and gives up at its deadline" {
	echo 0 >"$BATS_TEST_TMPDIR/n"
	third_call() {
		local n=$(($(cat "$BATS_TEST_TMPDIR/n") + 1))
		echo "$n" >"$BATS_TEST_TMPDIR/n"
		[ "$n" -ge 3 ]
	}
	run -0 wait_until 5 third_call
	assert_equal "$(cat "$BATS_TEST_TMPDIR/n")" 3
	start=${EPOCHREALTIME//[!0-9]/}
	run -1 wait_until -i 0.05 0.3 false
	elapsed=$(((${EPOCHREALTIME//[!0-9]/} - start) / 1000))
	[ "$elapsed" -ge 300 ] && [ "$elapsed" -lt 2000 ] || fail "gave up after $elapsed ms"
}

@test "spawn gives the command's own pid, without the lock fds; reap gives its exit status" {
	spawn sleep 30
	pid=$spawned_pid
	# (The subshell execs the command: until then its comm is bash's.)
	is_sleep() { [ "$(cat "/proc/$pid/comm")" = sleep ]; }
	wait_until 5 is_sleep || fail "pid $pid is $(cat "/proc/$pid/comm"), not the command"
	[ ! -e "/proc/$pid/fd/$global_lock_fd" ] || fail "the global lock fd was inherited"
	[ ! -e "/proc/$pid/fd/$vm_lock_fd" ] || fail "the VM lock fd was inherited"
	kill -KILL "$pid"
	rc=0
	reap "$pid" || rc=$?
	assert_equal "$rc" 137
	# (bash may print its "Killed" note at any later command, not only at the wait: that the
	# user never sees it is the task's stderr routing, tested in tests/vzdump.bats.)
}

@test "wait_until and now_ms keep time under a locale that writes decimals with a comma" {
	command -v localedef >/dev/null && [ -d /usr/share/i18n/locales ] || skip "no localedef"
	mkdir -p "$BATS_TEST_TMPDIR/locale"
	localedef -i de_DE -f UTF-8 "$BATS_TEST_TMPDIR/locale/de_DE.UTF-8" 2>/dev/null ||
		skip "localedef cannot build de_DE"
	run -0 env LOCPATH="$BATS_TEST_TMPDIR/locale" LC_ALL=de_DE.UTF-8 bash -c '
		[[ $EPOCHREALTIME == *,* ]] || { echo "the locale did not take"; exit 1; }
		source "$1/state.bash"; source "$1/process.bash"
		echo 0 >"$2/n"
		third() { local n=$(($(cat "$2/n") + 1)); echo "$n" >"$2/n"; [ "$n" -ge 3 ]; }
		t0=$(now_ms)
		wait_until 5 third "$@" || { echo "gave up after $(cat "$2/n") tries"; exit 1; }
		t1=$(now_ms)
		[ "$((t1 - t0))" -ge 150 ] && [ "$((t1 - t0))" -lt 5000 ] || { echo "now_ms: $t0 .. $t1"; exit 1; }
		echo "tries $(cat "$2/n")"' _ "$LIBDIR" "$BATS_TEST_TMPDIR"
	assert_output "tries 3"
}

@test "thaw_again: a second thaw that works clears the frozen mark (the state file then goes)" {
	# shellcheck source=lib/vzdump/live.bash
	source "$LIBDIR/live.bash"
	gafreeze() { return 0; }
	maybe_frozen=1
	qga_sock=/nonexistent
	thaw_again 2>/dev/null
	assert_equal "$maybe_frozen" 0
}

@test "parse_prune_spec normalises what vzdump-prune --check accepts: blank items, leading zeros, huge counts" {
	# shellcheck source=lib/vzdump/options.bash
	source "$LIBDIR/options.bash"
	parse_prune_spec 'keep-last=3, ,keep-daily=007'
	assert_equal "$prune_spec" keep-daily=7,keep-last=3
	assert_equal "$prune_log" "keep-daily=7, keep-last=3"
	assert_equal "$prune_limit" 10
	assert_equal "$prune_keep_all" 0
	parse_prune_spec 'keep-last=000000000003'
	assert_equal "$prune_spec" keep-last=3
	parse_prune_spec 'keep-weekly=99999999999999999999999'
	assert_equal "$prune_spec" keep-weekly=4294967295
	parse_prune_spec 'keep-all=yes'
	assert_equal "$prune_spec" keep-all=1
	assert_equal "$prune_keep_all" 1
	parse_prune_spec 'keep-last=0'
	assert_equal "$prune_keep_all" 1
}

@test "parse_vmid_list and parse_mail_list take every line of a value: a line feed separates, nothing after it is dropped" {
	# shellcheck source=lib/vzdump/options.bash
	source "$LIBDIR/options.bash"
	run -0 parse_vmid_list $'100,101\n102;103 104'
	assert_output "100 101 102 103 104"
	run -2 parse_vmid_list $'100\nx'
	assert_output --partial "--exclude: invalid VMID: x"
	run -0 parse_mail_list $'root\nadmin@example.org'
	assert_output "root, admin@example.org"
}
