#!/usr/bin/env bats
# shellcheck disable=SC2154,SC2016 # bats sets $stderr; bash -c programs are single-quoted
# Fault injection: vzdump.sh against a real QEMU (VMID 300, bare, one 4 MiB disk of random
# data, shared by the file) and the real booted test guest (VMID 100, for a real freeze),
# killed or failing at each phase. After each scenario every invariant is checked
# (fault_assert_clean): guest thawed, VM run state, block graph, jobs and fdsets as before, no
# archive, .dat or .tmp, nothing in --tmpdir, no state file, locks free; and a new backup of
# the VM succeeds. The driver is stopped at a phase by shims first on PATH (lib/faults.bash):
# qmpctl for the scratch, snapshot (inside the freeze) and jobs batches, mv for the rename,
# vzdump-prune for the pruning after it.
# The suite ends with a table of the scenarios and their results (TAP comments).

setup() {
	load lib/common
	load lib/vzdump
	load lib/guest
	load lib/faults
	export FAULT_DIR=$BATS_FILE_TMPDIR/fault
	unset FAULT_QMP FAULT_WHEN FAULT_MV
	driver=
	# A freeze window the tests can wait out.
	export VZDUMP_FREEZE_MAX=3
}

setup_file() {
	load lib/common
	load lib/vzdump
	load lib/guest
	load lib/faults
	export FAULT_DIR=$BATS_FILE_TMPDIR/fault
	fault_shims "$FAULT_DIR/bin"
	export VM=$BATS_FILE_TMPDIR/vm
	mkdir -p "$VM"
	# The agent is enabled; a test that wants a freeze starts the double on run/300.qga.
	vz_start_one_disk "$VM" 300 'agent: 1'
	vz_state "$VM" >"$VM/before"
	vz_guest_start
}

teardown() {
	# A driver still running (a failed test) is killed with its group and cleaned up after.
	if [ -n "${driver:-}" ] && kill -0 "$driver" 2>/dev/null; then
		kill -KILL -- "-$driver" 2>/dev/null || true
		sleep 0.5
	fi
	touch "$FAULT_DIR/release"
	qga_double_stop "$VM/run/300.qga"
	rm -f "$VM/run/300.qga"
	if mountpoint -q "$VM/full" 2>/dev/null; then
		umount "$VM/full" || true
	fi
	# A passed test checked that all is clean; after a failed one, the next tests need it so.
	if [ -z "${BATS_TEST_COMPLETED:-}" ]; then
		"$TOP/vzdump.sh" --cleanup --rundir "$VM/run" --tmpdir "$VM/tmp" --dumpdir "$VM/dump" 300 >/dev/null 2>&1 || true
		if [ "$(gafreeze -s "$GUEST_WD/qga.sock" -t 5 status 2>/dev/null)" = frozen ]; then
			gafreeze -s "$GUEST_WD/qga.sock" -t 5 thaw >/dev/null 2>&1 || true
		fi
		"$TOP/vzdump.sh" --cleanup --rundir "$GUEST_WD/run" --tmpdir "$GUEST_WD/tmp" --dumpdir "$GUEST_WD/dump" 100 >/dev/null 2>&1 || true
	fi
	find "$VM/dump" "$VM/tmp" "$GUEST_WD/dump" "$GUEST_WD/tmp" -mindepth 1 -delete
	fault_record
}

teardown_file() {
	load lib/common
	load lib/vzdump
	load lib/guest
	load lib/faults
	qemu_stop "$VM"
	guest_stop "$GUEST_WD"
	fault_print_table
}

vz_cleanup() { # WD VMID
	"$TOP/vzdump.sh" --cleanup --rundir "$1/run" --tmpdir "$1/tmp" --dumpdir "$1/dump" "$2"
}

# Starts a backup of VM 300 stopped at PHASE: before-freeze (scratch images attached),
# freeze (inside the guest's freeze, the snapshot taken; the agent double answers),
# freeze-before (frozen, the snapshot's undo recorded but its batch not yet sent), copy
# (jobs running, held to 256 KiB/s by the writer's --bwlimit), jobs (the jobs just started,
# at full speed), rename (all done but the rename of the .dat).
start_at() { # PHASE [ARGS...]
	local phase=$1
	shift
	case $phase in
	before-freeze) export FAULT_QMP=scratch.qmp FAULT_WHEN=after ;;
	freeze)
		qga_double_start "$VM/run/300.qga"
		export FAULT_QMP=snapshot.qmp FAULT_WHEN=after
		;;
	freeze-before)
		qga_double_start "$VM/run/300.qga"
		export FAULT_QMP=snapshot.qmp FAULT_WHEN=before
		;;
	rename) export FAULT_MV=1 ;;
	prune)
		export FAULT_PRUNE=1
		set -- --prune-backups keep-last=5 "$@"
		;;
	jobs) export FAULT_QMP=jobs.qmp FAULT_WHEN=after ;;
	esac
	if [ "$phase" = copy ]; then
		fault_start "$VM" 300 --bwlimit 256 "$@"
		fault_wait_log '^INFO: starting backup via QMP command$'
		wait_job_running "$VM"
	else
		fault_start "$VM" 300 "$@"
		fault_reach
	fi
}

# Waits until QEMU runs a backup job of ours.
wait_job_running() { # WD
	local i
	for ((i = 0; i < 100; i++)); do
		qmp_raw "$1" '{"execute":"query-jobs"}' |
			jq -e '.return[] | select(.id == "vzdump-drive-virtio0" and .status == "running")' >/dev/null &&
			return 0
		sleep 0.1
	done
	fail "no running backup job"
}

# The agent double's requests, one command name a line.
qga_commands() {
	jq -r '.execute // empty' "$VM/run/300.qga.log" | grep -v '^guest-sync'
}

# Waits up to SECONDS until the double (or the guest's agent at SOCKET) says thawed; fails
# if it does not.
assert_thawed_within() { # SECONDS [SOCKET]
	local sock=${2:-$VM/run/300.qga} i s
	for ((i = 0; i < $1 * 10; i++)); do
		s=$(gafreeze -s "$sock" -t 2 status 2>/dev/null) || s=
		[ "$s" != thawed ] || return 0
		sleep 0.1
	done
	fail "the guest is still $s after $1 s"
}

# After a SIGKILL: the state file is left, and names the owner.
assert_state_left() { # VMID
	[ -s "$VZDUMP_STATEDIR/$1.state" ] || fail "no state file left"
	grep -qE '^owner [0-9]+ [0-9]+$' "$VZDUMP_STATEDIR/$1.state"
}

# The killed backup's log gets the reason from whoever cleaned up.
assert_log_says_killed() { # WD VMID
	grep -qE "^[0-9-]+ [0-9:]+ ERROR: Backup of VM $2 failed - the backup process was killed \\(cleaned up by pid [0-9]+\\)\$" \
		"$1"/dump/vzdump-qemu-"$2"-*.log || fail "log: $(cat "$1"/dump/*.log)"
}

# SIGKILL of the whole job at PHASE, then --cleanup restores everything.
kill_then_cleanup() { # PHASE
	before=$(cat "$VM/before")
	start_at "$1"
	fault_kill_group
	assert_equal "$driver_rc" 137
	assert_state_left 300
	run --separate-stderr -0 vz_cleanup "$VM" 300
	[[ $stderr == "INFO: cleaning up after an earlier backup of VM 300 that did not finish (pid "* ]] || fail "$stderr"
	assert_log_says_killed "$VM" 300
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}

# SIGKILL of the whole job at PHASE, then a new backup recovers by itself and succeeds.
kill_then_backup() { # PHASE
	before=$(cat "$VM/before")
	start_at "$1"
	fault_kill_group
	assert_state_left 300
	qga_double_stop "$VM/run/300.qga"
	run --separate-stderr -0 vz_backup "$VM" 300
	grep -qE '^INFO: cleaning up after an earlier backup of VM 300 that did not finish \(pid [0-9]+\)$' <<<"$stderr" ||
		fail "$stderr"
	grep -qxF 'INFO: Backup job finished successfully' <<<"$stderr"
	run bash -c 'ls "$1" | grep -c "\.vma$"' _ "$VM/dump"
	assert_output 1
	rm -f "$VM"/dump/*.vma "$VM"/dump/*.vma.sha256
	fault_assert_clean "$VM" 300 "$before"
}

# SIGTERM to the driver stopped at PHASE, then let go on: it must end with status 1.
term_driver_at() { # PHASE
	before=$(cat "$VM/before")
	start_at "$1"
	kill -TERM "$driver"
	touch "$FAULT_DIR/release"
	fault_wait_driver 30
	assert_equal "$driver_rc" 1
}

# SIGTERM to the driver at PHASE, once the rename is under way or done: the backup fails, and
# the complete archive stays (and verifies); everything else is undone.
term_after_rename() { # PHASE
	term_driver_at "$1"
	archive=$(ls "$VM"/dump/vzdump-qemu-300-*.vma)
	grep -qxF "ERROR: Backup of VM 300 failed - interrupted by signal (the archive $archive is complete and kept)" \
		"$VM/err" || fail "$(cat "$VM/err")"
	grep -qxF 'ERROR: Backup job failed - interrupted by signal' "$VM/err"
	run -0 vma-extract -t "$archive"
	# Its .sha256 comes after the archive's rename: interrupted at the rename, the archive is
	# kept without one; later (in pruning) it has one, which matches.
	if [ "$1" = rename ]; then
		[ ! -e "$archive.sha256" ] || fail "a .sha256 was written after the signal: $(cat "$archive.sha256")"
	else
		(cd "$VM/dump" && sha256sum --quiet -c "${archive##*/}.sha256") || fail "sha256sum -c"
	fi
	rm -f "$archive" "$archive.sha256"
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}

# SIGTERM to the driver at PHASE (the step under way is let finish): everything is undone.
term_at() { # PHASE
	term_driver_at "$1"
	grep -qxF 'ERROR: Backup of VM 300 failed - interrupted by signal' "$VM/err" || fail "$(cat "$VM/err")"
	grep -qxF 'ERROR: Backup job failed - interrupted by signal' "$VM/err"
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "SIGKILL before the freeze (scratch images attached): the state file is left and --cleanup undoes everything" {
	kill_then_cleanup before-freeze
}

@test "SIGKILL before the freeze: the next backup cleans up by itself and succeeds" {
	kill_then_backup before-freeze
}

@test "SIGTERM before the freeze: the backup fails as interrupted and everything is undone" {
	term_at before-freeze
}

@test "SIGKILL inside the freeze window: the watchdog thaws the agent within --max, --cleanup undoes the rest" {
	start_at freeze
	# (gafreeze holds the agent's one connection: its log tells.)
	assert_equal "$(qga_commands | grep fsfreeze | tail -n 1)" guest-fsfreeze-freeze
	fault_kill_group
	assert_thawed_within $((VZDUMP_FREEZE_MAX + 5))
	run qga_commands
	assert_line guest-fsfreeze-freeze
	assert_line guest-fsfreeze-thaw
	kill_then_cleanup_rest
}

# The rest of kill_then_cleanup, the kill done.
kill_then_cleanup_rest() {
	before=$(cat "$VM/before")
	assert_state_left 300
	run --separate-stderr -0 vz_cleanup "$VM" 300
	[[ $stderr == "INFO: cleaning up after an earlier backup of VM 300 that did not finish (pid "* ]] || fail "$stderr"
	assert_log_says_killed "$VM" 300
	fault_assert_clean "$VM" 300 "$before"
	[ "$(gafreeze -s "$VM/run/300.qga" -t 2 status)" = thawed ]
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "SIGKILL of the job and of gafreeze's watchdog inside the freeze: --cleanup thaws the agent itself" {
	start_at freeze
	# The watchdog is in a session of its own; all of them die at once (as a node-wide OOM
	# kill might). Stopped first, so that it cannot thaw when gafreeze dies, nor gafreeze
	# when it dies.
	watchdogs=()
	for p in $(pgrep -f -- "gafreeze -s $VM/run/300.qga"); do
		[ "$(ps -o sid= -p "$p" | tr -d ' ')" = "$driver" ] || watchdogs+=("$p")
	done
	[ ${#watchdogs[@]} = 1 ] || fail "watchdogs: ${watchdogs[*]}"
	kill -STOP "${watchdogs[@]}"
	fault_kill_group
	kill -KILL "${watchdogs[@]}"
	[ "$(gafreeze -s "$VM/run/300.qga" -t 2 status)" = frozen ] || fail "the agent is not frozen any more"
	run --separate-stderr -0 vz_cleanup "$VM" 300
	grep -qxF "INFO: issuing guest-agent 'fs-thaw' command" <<<"$stderr" || fail "$stderr"
	assert_thawed_within 1
	fault_assert_clean "$VM" 300 "$(cat "$VM/before")"
	fault_assert_backup_works "$VM" 300 "$(cat "$VM/before")"
}

@test "SIGKILL inside the freeze window before the snapshot batch: --cleanup undoes only what was done, QEMU lives" {
	kill_then_cleanup freeze-before
	run qga_commands
	assert_line guest-fsfreeze-thaw
}

@test "SIGKILL inside the freeze window: the next backup cleans up by itself and succeeds" {
	kill_then_backup freeze
}

@test "SIGTERM inside the freeze window: the guest is thawed, the backup fails as interrupted, everything is undone" {
	term_at freeze
	run qga_commands
	assert_line guest-fsfreeze-thaw
	[ "$(gafreeze -s "$VM/run/300.qga" -t 2 status)" = thawed ]
}

@test "SIGKILL during the copy: --cleanup cancels the job and undoes everything" {
	kill_then_cleanup copy
}

@test "SIGKILL during the copy: the next backup cleans up by itself and succeeds" {
	kill_then_backup copy
}

@test "SIGTERM during the copy: the backup fails as interrupted and everything is undone" {
	term_at copy
}

@test "SIGKILL during the rename: --cleanup removes the .dat, no archive is left" {
	kill_then_cleanup rename
}

@test "SIGKILL during the rename: the next backup cleans up by itself and succeeds" {
	kill_then_backup rename
}

@test "SIGTERM during the rename: the backup fails as interrupted and keeps the renamed archive" {
	term_after_rename rename
}

@test "SIGKILL during pruning: --cleanup keeps the complete archive of the killed backup" {
	before=$(cat "$VM/before")
	start_at prune
	fault_kill_group
	assert_state_left 300
	run --separate-stderr -0 vz_cleanup "$VM" 300
	archive=$(ls "$VM"/dump/vzdump-qemu-300-*.vma)
	run -0 vma-extract -t -v "$archive"
	assert_line "sha256 $(sha "$archive") matches $archive.sha256"
	grep -qE "^[0-9-]+ [0-9:]+ ERROR: Backup of VM 300 failed after its archive $archive was complete - the backup process was killed \(cleaned up by pid [0-9]+\); the archive is kept\$" \
		"${archive%.vma}.log" || fail "log: $(cat "${archive%.vma}.log")"
	rm -f "$archive" "$archive.sha256"
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "SIGKILL during pruning: the next backup cleans up by itself, keeps that archive and succeeds" {
	before=$(cat "$VM/before")
	start_at prune
	fault_kill_group
	assert_state_left 300
	run --separate-stderr -0 vz_backup "$VM" 300
	grep -qxF 'INFO: Backup job finished successfully' <<<"$stderr"
	run bash -c 'ls "$1" | grep -c "\.vma$"' _ "$VM/dump"
	assert_output 2
	for a in "$VM"/dump/*.vma; do vma-extract -t "$a" || fail "$a does not verify"; done
	rm -f "$VM"/dump/*.vma "$VM"/dump/*.vma.sha256
	fault_assert_clean "$VM" 300 "$before"
}

@test "SIGTERM during pruning: the backup fails as interrupted and keeps the complete archive" {
	term_after_rename prune
}

@test "SIGKILL inside the real guest's freeze: thawed within --max, --cleanup undoes the rest, a new backup works" {
	before=$(vz_state "$GUEST_WD")
	export FAULT_QMP=snapshot.qmp FAULT_WHEN=after
	fault_start "$GUEST_WD" 100
	fault_reach
	# (gafreeze holds the agent's one connection: the guest's freeze hook tells.)
	assert_equal "$(tr -d '\r' <"$GUEST_WD/console.log" | grep '^FSFREEZE-HOOK' | tail -n 1)" "FSFREEZE-HOOK freeze"
	fault_kill_group
	assert_thawed_within $((VZDUMP_FREEZE_MAX + 10)) "$GUEST_WD/qga.sock"
	# The guest's writer counts again.
	c=$(guest_counter "$GUEST_WD")
	for ((i = 0; i < 100; i++)); do
		[ "$(guest_counter "$GUEST_WD")" -le "$c" ] || break
		sleep 0.1
	done
	[ "$(guest_counter "$GUEST_WD")" -gt "$c" ] || fail "the guest does not count after the thaw"
	assert_state_left 100
	run --separate-stderr -0 vz_cleanup "$GUEST_WD" 100
	[[ $stderr == "INFO: cleaning up after an earlier backup of VM 100 that did not finish (pid "* ]] || fail "$stderr"
	fault_assert_clean "$GUEST_WD" 100 "$before"
	fault_assert_backup_works "$GUEST_WD" 100 "$before"
}

@test "vma-create killed mid-copy: the backup fails with the job's error and everything is undone" {
	before=$(cat "$VM/before")
	start_at copy
	pkill -KILL -f -- "vma-create .*--listen $VM/tmp/vzdumptmp"
	fault_wait_driver 30
	assert_equal "$driver_rc" 1
	grep -qE '^ERROR: Backup of VM 300 failed - backup job failed: vzdump-drive-virtio0: ' "$VM/err" ||
		fail "$(cat "$VM/err")"
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}

# A dump folder of 1 MiB (a tmpfs, unmounted in teardown) for the 4 MiB of random data.
full_dumpdir() {
	mkdir -p "$VM/full"
	mount -t tmpfs -o size=1m tmpfs "$VM/full"
}

@test "the dump folder fills up: the backup fails saying so, the .dat is removed, everything is undone" {
	before=$(cat "$VM/before")
	full_dumpdir
	run --separate-stderr -1 vz_backup "$VM" --dumpdir "$VM/full" 300
	grep -qE '^ERROR: Backup of VM 300 failed - .*No space left on device' <<<"$stderr" || fail "$stderr"
	run ls -A "$VM/full"
	assert_output --regexp '^vzdump-qemu-300-[0-9_-]{19}\.log$'
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "the compressor fails (dump folder full during --compress zstd): a clear error, everything is undone" {
	before=$(cat "$VM/before")
	full_dumpdir
	run --separate-stderr -1 vz_backup "$VM" --dumpdir "$VM/full" --compress zstd 300
	grep -qE '^ERROR: Backup of VM 300 failed - .*No space left on device' <<<"$stderr" || fail "$stderr"
	run ls -A "$VM/full"
	assert_output --regexp '^vzdump-qemu-300-[0-9_-]{19}\.log$'
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "QEMU killed mid-copy: the backup fails at once with the reason, nothing is left, --cleanup has nothing to do" {
	OWN=$BATS_TEST_TMPDIR/own
	mkdir -p "$OWN"
	random_file "$OWN/d.raw" $((4 * 1024 * 1024))
	qemu_start_bare "$OWN" -blockdev "driver=file,node-name=f,filename=$OWN/d.raw" \
		-blockdev driver=raw,node-name=drive-virtio0,file=f \
		-device virtio-blk-pci,drive=drive-virtio0,id=vblk0
	qmp_raw "$OWN" '{"execute":"cont"}' >/dev/null
	vz_dirs "$OWN" 310
	fault_start "$OWN" 310 --bwlimit 256
	fault_wait_log '^INFO: starting backup via QMP command$'
	wait_job_running "$OWN"
	kill -KILL "$(cat "$OWN/qemu.pid")"
	fault_wait_driver 30
	assert_equal "$driver_rc" 1
	grep -qxF "ERROR: Backup of VM 310 failed - QEMU is gone (nothing listens on $OWN/run/310.qmp)" "$OWN/err" ||
		fail "$(cat "$OWN/err")"
	run ls -A "$OWN/tmp"
	assert_output ""
	run ls -A "$OWN/dump"
	assert_output --regexp '^vzdump-qemu-310-[0-9_-]{19}\.log$'
	[ ! -e "$VZDUMP_STATEDIR/310.state" ]
	run pgrep -f -- "vma-create .*$OWN/tmp/"
	assert_output ""
	run --separate-stderr -0 vz_cleanup "$OWN" 310
	assert_equal "$stderr" "INFO: VM 310: nothing to clean up (no state file, QEMU not running)"
}

@test "the agent never answers the freeze: no frozen guest is left, the backup fails clearly and is undone" {
	before=$(cat "$VM/before")
	qga_double_start "$VM/run/300.qga" --hang guest-fsfreeze-freeze
	run --separate-stderr vz_backup "$VM" 300
	fault_agent_outcome
}

# A freeze that went wrong: either the backup went on unfrozen and said so, or it failed
# with a reason; the agent is thawed at the end, the VM as before.
fault_agent_outcome() {
	local s
	if [ "$status" = 0 ]; then
		grep -qE '^INFO: (guest filesystems frozen for [0-9]+ ms|.*\(backup is not frozen\))$' <<<"$stderr" ||
			fail "succeeded without saying whether it was frozen: $stderr"
		rm -f "$VM"/dump/*.vma "$VM"/dump/*.vma.sha256
	else
		assert_equal "$status" 1
		grep -qE '^ERROR: Backup of VM 300 failed - snapshot failed: gafreeze: .+' <<<"$stderr" || fail "$stderr"
		if grep '^ERROR' <<<"$stderr" | grep -q 'guest frozen for'; then
			fail "the error is gafreeze's summary: $stderr"
		fi
	fi
	s=$(gafreeze -s "$VM/run/300.qga" -t 5 status) || fail "the agent does not answer"
	assert_equal "$s" thawed
	fault_assert_clean "$VM" 300 "$before"
	qga_double_stop "$VM/run/300.qga"
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "the agent answers the freeze late (within --max): the backup is frozen and succeeds" {
	before=$(cat "$VM/before")
	qga_double_start "$VM/run/300.qga" --delay guest-fsfreeze-freeze=1
	run --separate-stderr -0 vz_backup "$VM" 300
	grep -qE '^INFO: guest filesystems frozen for [0-9]+ ms$' <<<"$stderr" || fail "$stderr"
	assert_equal "$(gafreeze -s "$VM/run/300.qga" -t 5 status)" thawed
	rm -f "$VM"/dump/*.vma "$VM"/dump/*.vma.sha256
	fault_assert_clean "$VM" 300 "$before"
}

@test "the agent answers the freeze after --max: no frozen guest is left, the backup fails clearly and is undone" {
	before=$(cat "$VM/before")
	qga_double_start "$VM/run/300.qga" --delay guest-fsfreeze-freeze=$((VZDUMP_FREEZE_MAX + 2))
	run --separate-stderr vz_backup "$VM" 300
	fault_agent_outcome
}

@test "the agent drops the connection on the freeze: the backup fails clearly, nothing frozen or left" {
	before=$(cat "$VM/before")
	qga_double_start "$VM/run/300.qga" --drop guest-fsfreeze-freeze
	run --separate-stderr vz_backup "$VM" 300
	fault_agent_outcome
}

@test "the agent drops the connection on every thaw: the backup fails saying the guest may still be frozen" {
	before=$(cat "$VM/before")
	qga_double_start "$VM/run/300.qga" --drop guest-fsfreeze-thaw
	run --separate-stderr -1 vz_backup "$VM" 300
	grep -qxF "ERROR: Backup of VM 300 failed - snapshot failed: gafreeze: THAW FAILED, THE GUEST MAY STILL BE FROZEN: $VM/run/300.qga: guest-fsfreeze-thaw: connection closed by the peer" <<<"$stderr" ||
		fail "$stderr"
	[[ $stderr == *"ERROR: the guest may still be frozen: vzdump.sh --cleanup 300 (or gafreeze -s $VM/run/300.qga thaw) thaws it once its agent answers"* ]] ||
		fail "$stderr"
	# The state file stays for a later thaw; an agent that answers again (still frozen) is
	# thawed by --cleanup, and then all is as before.
	[ -s "$VZDUMP_STATEDIR/300.state" ] || fail "the state file is gone"
	qga_double_stop "$VM/run/300.qga"
	qga_double_start "$VM/run/300.qga" --frozen --log "$VM/run/300.qga.log2"
	run -0 "$TOP/vzdump.sh" --cleanup --rundir "$VM/run" --tmpdir "$VM/tmp" --dumpdir "$VM/dump" 300
	assert_line "INFO: issuing guest-agent 'fs-thaw' command"
	run grep -c '"guest-fsfreeze-thaw"' "$VM/run/300.qga.log2"
	assert_output 1
	fault_assert_clean "$VM" 300 "$before"
	qga_double_stop "$VM/run/300.qga"
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "the first thaw fails: it is retried, the guest is thawed, nothing left" {
	before=$(cat "$VM/before")
	qga_double_start "$VM/run/300.qga" --thaw-fails 1
	run --separate-stderr vz_backup "$VM" 300
	fault_agent_outcome
}

# A hook that blocks (HOOK hang) or fails (HOOK fail) at PHASE and does nothing elsewhere.
make_hook() { # PATH hang|fail PHASE
	cat >"$1" <<END
#!/bin/bash
[ "\$1" = "$3" ] || exit 0
echo "hook at \$1"
[ "$2" = fail ] && exit 5
: >"$FAULT_DIR/reached"
exec /usr/bin/sleep 127
END
	chmod +x "$1"
}

@test "a hook that fails at pre-freeze: the backup fails with the hook's exit code, everything undone" {
	before=$(cat "$VM/before")
	make_hook "$BATS_TEST_TMPDIR/hook" fail pre-freeze
	run --separate-stderr -1 vz_backup "$VM" --script "$BATS_TEST_TMPDIR/hook" 300
	grep -qxF "ERROR: Backup of VM 300 failed - command '$BATS_TEST_TMPDIR/hook pre-freeze snapshot 300' failed: exit code 5" <<<"$stderr" ||
		fail "$stderr"
	fault_assert_clean "$VM" 300 "$before"
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "a hook that hangs at pre-freeze, then SIGTERM: the driver stops at once and everything is undone" {
	before=$(cat "$VM/before")
	make_hook "$BATS_TEST_TMPDIR/hook" hang pre-freeze
	rm -f "$FAULT_DIR/reached"
	fault_start "$VM" 300 --script "$BATS_TEST_TMPDIR/hook"
	fault_reach
	kill -TERM "$driver"
	fault_wait_driver 15
	assert_equal "$driver_rc" 1
	grep -qxF 'ERROR: Backup of VM 300 failed - interrupted by signal' "$VM/err" || fail "$(cat "$VM/err")"
	fault_assert_clean "$VM" 300 "$before"
	run pgrep -fx '/usr/bin/sleep 127'
	assert_output ""
	fault_assert_backup_works "$VM" 300 "$before"
}

@test "a second job for the VM with the same --rundir is refused clearly; the first succeeds" {
	before=$(cat "$VM/before")
	start_at jobs
	run --separate-stderr -1 vz_backup "$VM" --lockwait 0 300
	assert_equal "$stderr" "INFO: trying to get global lock - waiting...
ERROR: Backup job failed - can't acquire lock '$VM/run/vzdump.lock' - got timeout"
	touch "$FAULT_DIR/release"
	fault_wait_driver 60
	assert_equal "$driver_rc" 0
	grep -qxF 'INFO: Backup job finished successfully' "$VM/err"
	rm -f "$VM"/dump/*.vma "$VM"/dump/*.vma.sha256
	fault_assert_clean "$VM" 300 "$before"
}

@test "a second job for the VM with another --rundir is refused clearly; the first succeeds" {
	before=$(cat "$VM/before")
	start_at jobs
	mkdir -p "$BATS_TEST_TMPDIR/run2"
	ln -s "$VM/qmp.sock" "$BATS_TEST_TMPDIR/run2/300.qmp"
	run --separate-stderr "$TOP/vzdump.sh" --dumpdir "$VM/dump" --tmpdir "$VM/tmp" \
		--confdir "$VM/conf" --rundir "$BATS_TEST_TMPDIR/run2" 300
	[ "$status" = 1 ] || fail "exit $status: $stderr"
	grep -qE '^ERROR: Backup of VM 300 failed - a backup of VM 300 is still running \(pid [0-9]+\)$' <<<"$stderr" ||
		fail "$stderr"
	# The first job's files and state are untouched.
	assert_state_left 300
	touch "$FAULT_DIR/release"
	fault_wait_driver 60
	assert_equal "$driver_rc" 0
	grep -qxF 'INFO: Backup job finished successfully' "$VM/err"
	run bash -c 'ls "$1" | grep -c "\.vma$"' _ "$VM/dump"
	assert_output 1
	rm -f "$VM"/dump/*.vma "$VM"/dump/*.vma.sha256
	fault_assert_clean "$VM" 300 "$before"
}

@test "--cleanup while a backup runs is refused (same or another --rundir), and the backup goes on and succeeds" {
	before=$(cat "$VM/before")
	start_at jobs
	run --separate-stderr -1 vz_cleanup "$VM" 300
	assert_equal "$stderr" "ERROR: VM 300 is locked (backup): a backup of it is running"
	# From another lock folder, the state file's owner is found alive.
	mkdir -p "$BATS_TEST_TMPDIR"/other/{run,tmp,dump}
	ln -s "$VM/qmp.sock" "$BATS_TEST_TMPDIR/other/run/300.qmp"
	run --separate-stderr -1 vz_cleanup "$BATS_TEST_TMPDIR/other" 300
	[[ $stderr =~ ^'ERROR: a backup of VM 300 is still running (pid '[0-9]+')'$ ]] || fail "$stderr"
	touch "$FAULT_DIR/release"
	fault_wait_driver 60
	assert_equal "$driver_rc" 0
	rm -f "$VM"/dump/*.vma "$VM"/dump/*.vma.sha256
	fault_assert_clean "$VM" 300 "$before"
}

@test "--cleanup with nothing to do says so" {
	run --separate-stderr -0 vz_cleanup "$VM" 300
	assert_equal "$stderr" "INFO: VM 300: nothing to clean up"
	assert_equal "$(vz_state "$VM")" "$(cat "$VM/before")"
}
