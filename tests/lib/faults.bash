# shellcheck shell=bash
# shellcheck disable=SC2016,SC2034 # single-quoted programs; globals for the bats file
# Helpers for tests/vzdump-faults.bats: `load lib/faults` after lib/common and lib/vzdump.
#
#   fault_shims DIR
#       writes DIR/qmpctl and DIR/mv, shims to put first on PATH. Each runs the real tool,
#       except where the environment asks it to stop at a phase: it touches $FAULT_DIR/reached
#       and waits (up to 60 s) until $FAULT_DIR/release exists.
#         FAULT_QMP=NAME.qmp  qmpctl -f …/NAME.qmp (scratch, snapshot, jobs) stops
#         FAULT_WHEN=before   … before running the batch (for snapshot.qmp: after the
#                             go of gafreeze hold --sync-fd, the guest frozen); after
#                             (default): once it has run (snapshot.qmp: the guest frozen)
#         FAULT_MV=1          mv of a .dat (the rename to the final name) stops before it
#   fault_start WD VMID [ARGS...]
#       starts vzdump.sh (folders under WD, as vz_backup) in a session of its own with the
#       shims first on PATH; its pid (= its process group) in $driver, stderr in WD/err.
#   fault_reach [SECONDS]
#       waits until the shim has stopped the driver at its phase.
#   fault_kill_group
#       SIGKILL to the driver's whole process group; waits until the driver is gone.
#   fault_stop_like_systemd SECONDS
#       stops the job as systemd stops a unit with its default KillMode=control-group
#       (vzdump.service's): SIGTERM and SIGCONT to every process of the job, then SIGKILL to
#       whatever is left after SECONDS (TimeoutStopSec), until nothing is; waits until the
#       driver is gone (status in $driver_rc). $stop_killed says whether SIGKILL was needed.
#       The job's processes stand for its cgroup, which a container does not give it: those
#       of the driver's session and those carrying the job's mark (FAULT_JOB, set by
#       fault_start) in their environment, such as gafreeze's watchdog in its own session.
#   fault_wait_driver [SECONDS]
#       waits for the driver to exit; its status in $driver_rc.
#   fault_assert_clean WD VMID BEFORE
#       every invariant after a failed or killed backup: block graph, jobs, fdsets and run
#       state as BEFORE (vz_state); no archive, .dat or .tmp in the dump folder (logs only);
#       nothing in --tmpdir; no state file; no writer left; both locks free.
#   fault_assert_backup_works WD VMID BEFORE
#       a new backup of the VM succeeds (the strongest check that nothing is held) and
#       leaves the VM as BEFORE; its archive and log are removed again.
#   fault_record
#       appends "test name<TAB>ok|FAILED" to $BATS_FILE_TMPDIR/scenarios (from teardown).
#   fault_print_table
#       prints that table to fd 3 as TAP comments (from teardown_file).

fault_shims() { # DIR
	local dir=$1
	mkdir -p "$dir"
	cat >"$dir/fault-hold" <<'END'
#!/bin/bash
# Marks the phase as reached and waits to be released (or killed).
touch "$FAULT_DIR/reached"
for ((i = 0; i < 600; i++)); do
	[ ! -e "$FAULT_DIR/release" ] || exit 0
	sleep 0.1
done
END
	cat >"$dir/qmpctl" <<END
#!/bin/bash
real=$VZ_BIN/qmpctl
hold=$dir/fault-hold
END
	cat >>"$dir/qmpctl" <<'END'
match=0 prev=
if [ -n "${FAULT_QMP:-}" ]; then
	for a in "$@"; do
		[ "$prev" != -f ] || [ "${a##*/}" != "$FAULT_QMP" ] || match=1
		prev=$a
	done
fi
[ "$match" = 1 ] || exec "$real" "$@"
if [ "${FAULT_WHEN:-after}" = before ]; then
	# Inside gafreeze hold --sync-fd: the shim speaks the handshake itself, so that it stops
	# with the guest frozen and the batch not yet sent, then runs qmpctl without it.
	args=() sync= prev=
	for a in "$@"; do
		if [ "$prev" = --sync-fd ]; then
			sync=$a
		elif [ "$a" != --sync-fd ]; then
			args+=("$a")
		fi
		prev=$a
	done
	if [ -n "$sync" ]; then
		echo ready >&"$sync"
		read -r go <&"$sync" && [ "$go" = go ] || exit 3
		exec {sync}>&-
	fi
	"$hold"
	exec "$real" "${args[@]}"
fi
rc=0
out=$("$real" "$@") || rc=$?
"$hold"
[ -z "$out" ] || printf '%s\n' "$out"
exit "$rc"
END
	cat >"$dir/mv" <<END
#!/bin/bash
hold=$dir/fault-hold
END
	cat >>"$dir/mv" <<'END'
if [ "${FAULT_MV:-0}" = 1 ]; then
	for a in "$@"; do
		case $a in *.dat) "$hold" ;; esac
	done
fi
exec /usr/bin/mv "$@"
END
	cat >"$dir/vzdump-prune" <<END
#!/bin/bash
hold=$dir/fault-hold
real=$VZ_BIN/vzdump-prune
END
	cat >>"$dir/vzdump-prune" <<'END'
if [ "${FAULT_PRUNE:-0}" = 1 ]; then
	for a in "$@"; do
		[ "$a" != --prune-backups ] || "$hold"
	done
fi
exec "$real" "$@"
END
	chmod +x "$dir/fault-hold" "$dir/qmpctl" "$dir/mv" "$dir/vzdump-prune"
}

fault_start() { # WD VMID [ARGS...]
	local wd=$1 vmid=$2 i
	shift 2
	rm -f "$wd/driver.pid" "$FAULT_DIR/reached" "$FAULT_DIR/release"
	fault_job=vzjob-$$-$RANDOM
	FAULT_JOB=$fault_job PATH="$FAULT_DIR/bin:$PATH" setsid bash -c 'echo $$ >"$0"; exec "$@"' "$wd/driver.pid" \
		"$TOP/vzdump.sh" --dumpdir "$wd/dump" --tmpdir "$wd/tmp" --confdir "$wd/conf" \
		--rundir "$wd/run" "$@" "$vmid" </dev/null >"$wd/out" 2>"$wd/err" 3>&- &
	driver_bg=$!
	for ((i = 0; i < 100; i++)); do
		[ -s "$wd/driver.pid" ] && break
		sleep 0.05
	done
	driver=$(cat "$wd/driver.pid") || fail "the driver did not start"
	driver_wd=$wd
}

fault_reach() { # [SECONDS]
	local i
	for ((i = 0; i < ${1:-60} * 10; i++)); do
		[ ! -e "$FAULT_DIR/reached" ] || return 0
		kill -0 "$driver" 2>/dev/null || fail "the driver ended before the phase: $(cat "$driver_wd/err")"
		sleep 0.1
	done
	fail "the phase was not reached: $(cat "$driver_wd/err")"
}

# Waits until the driver's log has a line matching the extended regular expression RE.
fault_wait_log() { # RE [SECONDS]
	local i
	for ((i = 0; i < ${2:-60} * 10; i++)); do
		grep -qE -- "$1" "$driver_wd/err" && return 0
		kill -0 "$driver" 2>/dev/null || fail "the driver ended before '$1': $(cat "$driver_wd/err")"
		sleep 0.1
	done
	fail "no '$1' in the log: $(cat "$driver_wd/err")"
}

fault_wait_driver() { # [SECONDS]
	local i
	for ((i = 0; i < ${1:-60} * 10; i++)); do
		kill -0 "$driver" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$driver" 2>/dev/null && fail "the driver still runs after ${1:-60} s: $(cat "$driver_wd/err")"
	driver_rc=0
	wait "$driver_bg" || driver_rc=$?
	driver=
}

fault_kill_group() {
	kill -KILL -- "-$driver"
	fault_wait_driver 10
}

# The job's processes, alive (zombies left out), as fault_stop_like_systemd counts them.
fault_job_pids() {
	# (A zombie's environ reads empty.)
	{
		ps -e -o pid=,sid=,stat= | awk -v sid="$driver" '$2 == sid && $3 !~ /^Z/ { print $1 }'
		grep -lzxF "FAULT_JOB=$fault_job" /proc/[0-9]*/environ 2>/dev/null |
			sed 's|^/proc/||; s|/environ$||'
	} | sort -u
}

fault_stop_like_systemd() { # SECONDS
	local end
	local -a pids
	mapfile -t pids < <(fault_job_pids)
	[ ${#pids[@]} = 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
	[ ${#pids[@]} = 0 ] || kill -CONT "${pids[@]}" 2>/dev/null || true
	end=$((SECONDS + $1))
	while [ "$SECONDS" -lt "$end" ] && [ -n "$(fault_job_pids)" ]; do
		sleep 0.1
	done
	stop_killed=0
	end=$((SECONDS + 10))
	while [ "$SECONDS" -lt "$end" ]; do
		mapfile -t pids < <(fault_job_pids)
		[ ${#pids[@]} -gt 0 ] || break
		kill -KILL "${pids[@]}" 2>/dev/null || true
		stop_killed=1
		sleep 0.1
	done
	fault_wait_driver 10
}

fault_assert_clean() { # WD VMID BEFORE
	local wd=$1 vmid=$2
	assert_equal "$(vz_state "$wd")" "$3"
	run ls -A "$wd/tmp"
	assert_output ""
	run bash -c 'ls -A "$1" | grep -v "^vzdump-qemu-[0-9]*-[0-9_-]*\.log$"' _ "$wd/dump"
	assert_output ""
	[ ! -e "$VZDUMP_STATEDIR/$vmid.state" ] || fail "state file left: $(cat "$VZDUMP_STATEDIR/$vmid.state")"
	run pgrep -f -- "vma-create .*$wd/tmp/"
	assert_output ""
	flock -n "$wd/run/vzdump.lock" true || fail "the node lock is held"
	flock -n "$wd/run/$vmid.vzdump.lock" true || fail "the VM lock is held"
}

fault_assert_backup_works() { # WD VMID BEFORE
	local wd=$1 vmid=$2
	vz_backup "$wd" "$vmid" 2>"$wd/err2" || fail "a new backup failed: $(cat "$wd/err2")"
	run bash -c 'ls "$1" | grep -c "\.vma$"' _ "$wd/dump"
	assert_output 1
	assert_equal "$(vz_state "$wd")" "$3"
	rm -f "$wd"/dump/*
}

fault_record() {
	local result=FAILED
	[ -z "${BATS_TEST_COMPLETED:-}" ] || result=ok
	printf '%s\t%s\n' "$BATS_TEST_DESCRIPTION" "$result" >>"$BATS_FILE_TMPDIR/scenarios"
}

fault_print_table() {
	[ -f "$BATS_FILE_TMPDIR/scenarios" ] || return 0
	{
		echo "# scenario table (vzdump-faults.bats)"
		awk -F '\t' '{ printf "#   %-6s  %s\n", $2, $1 }' "$BATS_FILE_TMPDIR/scenarios"
	} >&3
}
