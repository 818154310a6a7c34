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
	start=${EPOCHREALTIME/./}
	run -1 wait_until -i 0.05 0.3 false
	elapsed=$(((${EPOCHREALTIME/./} - start) / 1000))
	[ "$elapsed" -ge 300 ] && [ "$elapsed" -lt 2000 ] || fail "gave up after $elapsed ms"
}

@test "spawn gives the command's own pid, without the lock fds; reap hides bash's Killed line" {
	spawn sleep 30
	pid=$spawned_pid
	assert_equal "$(cat "/proc/$pid/comm")" sleep
	[ ! -e "/proc/$pid/fd/$global_lock_fd" ] || fail "the global lock fd was inherited"
	[ ! -e "/proc/$pid/fd/$vm_lock_fd" ] || fail "the VM lock fd was inherited"
	kill -KILL "$pid"
	rc=0
	reap "$pid" 2>"$BATS_TEST_TMPDIR/err" || rc=$?
	assert_equal "$rc" 137
	assert_equal "$(cat "$BATS_TEST_TMPDIR/err")" ""
}
