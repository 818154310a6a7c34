#!/bin/bash
# vzdump.sh: a point-in-time backup of running QEMU VMs into Proxmox VMA archives, on stock QEMU.
# QEMU's own backup job pushes each disk, through a copy-before-write snapshot whose scratch image
# is local ("fleecing"), into vma-create's NBD server over a socket handed over QMP. See
# man/vzdump.sh.1 for the conventions and the sequence.
#
# This file reads as vzdump's phases: the job (main), each VM's task (run_task, backup_vm) and,
# right after backup_vm, the handler that undoes it on exit; --cleanup. The rest is in its
# library folder, one file per concern, each saying what it owns. Nothing here evals data.
set -euo pipefail

PROG=vzdump.sh
# The library folder: where make install put it (it writes the next line), else beside the real
# path of this file (a checkout), else ../lib/vzdump or ../share/vzdump from it (an installed
# tree unpacked elsewhere, such as a package extracted with dpkg -x).
INSTALLED_LIBDIR=
SELF_DIR=$(dirname -- "$(realpath -- "${BASH_SOURCE[0]}")")
for LIBDIR in ${INSTALLED_LIBDIR:+"$INSTALLED_LIBDIR"} "$SELF_DIR/lib/vzdump" \
	"${SELF_DIR%/*}/lib/vzdump" "${SELF_DIR%/*}/share/vzdump" ""; do
	[ -z "$LIBDIR" ] || [ ! -f "$LIBDIR/graph.jq" ] || break
done
if [ -z "$LIBDIR" ]; then
	printf '%s: cannot find the library folder lib/vzdump beside %s\n' "$PROG" "$SELF_DIR" >&2
	exit 1
fi
# shellcheck source=lib/vzdump/state.bash
source "$LIBDIR/state.bash"
# shellcheck source=lib/vzdump/options.bash
source "$LIBDIR/options.bash"
# shellcheck source=lib/vzdump/process.bash
source "$LIBDIR/process.bash"
# shellcheck source=lib/vzdump/folders.bash
source "$LIBDIR/folders.bash"
# shellcheck source=lib/vzdump/job.bash
source "$LIBDIR/job.bash"
# shellcheck source=lib/vzdump/journal.bash
source "$LIBDIR/journal.bash"
# shellcheck source=lib/vzdump/config.bash
source "$LIBDIR/config.bash"
# shellcheck source=lib/vzdump/live.bash
source "$LIBDIR/live.bash"
# shellcheck source=lib/vzdump/modes.bash
source "$LIBDIR/modes.bash"
# shellcheck source=lib/vzdump/incremental.bash
source "$LIBDIR/incremental.bash"
# shellcheck source=lib/vzdump/mail.bash
source "$LIBDIR/mail.bash"

usage() {
	cat <<'END'
vzdump.sh [--dumpdir dir] [--tmpdir dir] [--confdir dir] [--rundir dir]
[--compress 0 | 1 | gzip | lzo | zstd | xz] [--pigz threads] [--zstd threads]
[--bwlimit kib] [--ionice priority] [--lockwait minutes] [--script hook] [--stdout]
[--mode snapshot | suspend | stop] [--stopwait minutes]
[--quiet] [--json] [--statedir dir]
[--prune-backups spec] [--remove 0 | 1] [--notes-template text] [--protected 0 | 1]
[--mailto address,...] [--mailnotification always | failure] [--performance max-workers=n]
[--fleecing spec] [--maxfiles n] [--notification-mode mode] [--node name]
[--incremental 0 | 1] [--full-every n]
vmid ... | --all [--exclude vmid,...]
vzdump.sh --cleanup [--dumpdir dir] [--tmpdir dir] [--rundir dir] [--statedir dir] vmid ...
END
}

backup_vm() {
	local start basename archive ext out when
	start=$EPOCHSECONDS
	backup_start=$start
	backup_mode=$opt_mode
	printf -v basename 'vzdump-qemu-%s-%(%Y_%m_%d-%H_%M_%S)T' "$vmid" "$start"
	archive_base=$basename
	case $opt_compress in
	gzip) ext=vma.gz ;;
	lzo) ext=vma.lzo ;;
	zstd) ext=vma.zst ;;
	xz) ext=vma.xz ;;
	*) ext=vma ;;
	esac
	archive=$opt_dumpdir/$basename.$ext
	out=$(mktemp -d "$opt_tmpdir/vzdumptmp.XXXXXX" 2>&1) ||
		fail "cannot create a private folder under $opt_tmpdir: ${out#mktemp: }"
	private_dir=$out
	# From here on what a command or bash itself prints on stderr goes to the private folder
	# (see run_task), which the next job or --cleanup removes even after a SIGKILL.
	stray_file=$private_dir/stderr
	exec 2>"$stray_file"
	open_log
	hook_target=-
	if [ "$opt_stdout" = 0 ]; then
		[ -d "$opt_dumpdir" ] || fail "dump folder $opt_dumpdir does not exist"
		check_backup_limit
		claim_backup_name "$basename"
		log_target=$opt_dumpdir/$basename.log
		tmp_archive=${archive%.*}.dat
		hook_target=$archive
	fi
	qmp_sock=$opt_rundir/$vmid.qmp
	qga_sock=$opt_rundir/$vmid.qga

	info "Starting Backup of VM $vmid (qemu)"
	printf -v when '%(%F %T)T' "$start"
	info "Backup started at $when"
	read_config
	check_running
	vm_lock
	state_begin
	if [ "$vm_alive" = 1 ]; then
		info "status = running"
	else
		info "status = stopped"
	fi
	[ -n "$vm_name" ] && info "VM Name: $vm_name"
	if [ "$vm_alive" = 1 ]; then
		[ -n "$conf_file" ] || info "no config $opt_confdir/$vmid.conf: backing up every disk QEMU has"
		prepare
	else
		prepare_offline
	fi
	choose_mode
	info "backup mode: $backup_mode"
	decide_kind
	if [ "$backup_kind" = incremental ]; then
		# (The .dat keeps its name: the state file has it already.)
		archive=$opt_dumpdir/$basename.inc.$ext
		[ "$opt_stdout" = 1 ] || hook_target=$archive
	fi
	[ "$opt_bwlimit" = 0 ] || info "bandwidth limit: $opt_bwlimit KiB/s"
	info "ionice priority: $opt_ionice"
	hook_or_fail backup-start
	if [ "$vm_alive" = 1 ]; then
		case $backup_mode in
		snapshot)
			# As in vzdump's snapshot mode, the stop/restart hooks all run before anything happens.
			hook_or_fail pre-stop
			hook_or_fail pre-restart
			hook_or_fail post-restart
			;;
		suspend) suspend_vm ;;
		stop) stop_vm ;;
		esac
	fi
	[ "$restart" != exited ] || offline_after_exit
	assemble
	if [ "$opt_stdout" = 1 ]; then
		info "sending archive to stdout"
	else
		info "creating vzdump archive '$archive'"
	fi
	if [ "$vm_alive" = 0 ] || [ "$restart" = exited ]; then
		offline_copy
	else
		start_writer
		vm_status=$(qmp query-status 2>"$private_dir/qmp.err") ||
			fail "query-status failed$(why_of "$private_dir/qmp.err")"
		vm_status=$(jq -r '.status // empty' <<<"$vm_status")
		copy_start=$EPOCHSECONDS
		if [ ${#disk_keys[@]} -gt 0 ]; then
			attach_scratch
			hook_or_fail pre-freeze
			snapshot
			resume_after_snapshot
			hook_or_fail post-thaw
			copy_start=$EPOCHSECONDS
			start_jobs
			wait_jobs
		else
			resume_after_snapshot
		fi
		finish_live_copy
	fi
	summary
	if [ "$opt_stdout" = 0 ]; then
		writer_sha256
		# Recorded first: a backup killed or interrupted from here on has a complete archive
		# (once the rename is done), which stays.
		state "final $archive"
		final_archive=$archive
		# (-T: a folder planted under the archive's name gets nothing moved into it.)
		mv -T -f "$tmp_archive" "$archive" || { final_archive= && fail "cannot rename $tmp_archive"; }
		tmp_archive=
		# Its checksum after it (see write_sha256).
		write_sha256 "$archive" "$archive_sum"
		keep_bitmaps
		info "archive file size: $(format_archive_size "$(stat -c %s "$archive")")"
		mark_backup "$archive"
		prune_backups
	fi
	hook_or_fail backup-end
	restore_power_state
	info "Finished Backup of VM $vmid ($(format_time $((EPOCHSECONDS - start))))"
	printf -v when '%(%F %T)T' -1
	info "Backup finished at $when"
}

# The EXIT trap of each VM's task, right after the sequence it reverses: whatever backup_vm
# recorded as done is undone, in reverse; on failure the log, the hooks and the JSON say why.
undo_on_exit() {
	local status=$? stray when
	# Whatever fails or arrives now, the cleanup runs to its end: no set -e, and a further
	# signal (a second Ctrl-C, systemd's TERM to the whole group and the job's own TERM to
	# the task) is noted, not obeyed. So these come first, before anything that takes time.
	trap 'failure=${failure:-interrupted by signal}' INT TERM HUP
	trap - EXIT
	set +e
	# (Before the undo: what it prints on stderr must not pass for the reason.)
	stray=$(stray_error)
	if [ -n "$hook_pid" ]; then
		stop_child "$hook_pid" || true
		hook_pid=
	fi
	if [ "$status" != 0 ]; then
		poll_done
		# The writer goes first: running jobs then end with an I/O error instead of copying on.
		stop_writer
		if qemu_alive; then
			run_undo lax || true
		elif [ ${#undo[@]} -gt 0 ]; then
			warn "QEMU is gone: its block graph needs no undo"
		fi
		stop_nbd
		# A complete archive keeps its bitmap (killed while pruning, say); else the changes
		# since the switch go back where they were counted.
		if [ -n "$final_archive" ] && [ -f "$final_archive" ]; then
			keep_bitmaps
		elif qemu_alive; then
			roll_back_bitmaps
		fi
		restore_power_state
		thaw_again
		# With the .dat, the temporary file a killed writer left (.NAME.tmp.PID, see
		# recover_state).
		[ -z "$tmp_archive" ] || rm -f "$tmp_archive" \
			"$(dirname -- "$tmp_archive")/.$(basename -- "$tmp_archive").tmp."*
		[ -n "$failure" ] || failure="exit status $status$stray"
		# (A signal during the rename: whether it took place, the file system says.)
		[ -z "$final_archive" ] || [ -f "$final_archive" ] || final_archive=
		# Failed once the archive had its final name (in pruning, the backup-end hook): the
		# archive is complete and stays, as Proxmox leaves it.
		[ -z "$final_archive" ] || failure+=" (the archive $final_archive is complete and kept)"
		log ERROR "Backup of VM $vmid failed - $failure"
		printf -v when '%(%F %T)T' -1
		info "Failed at $when"
		[ -z "$vmid" ] || run_hook backup-abort vm || warn "$hook_error"
	fi
	record_result "$status"
	keep_failed_log "$status"
	# The log is complete and delivered: log-end's output goes to the task log only.
	close_log
	deliver_log "$private_dir/log" "$log_target"
	[ -z "$vmid" ] || run_hook log-end vm || warn "$hook_error"
	[ -z "$private_dir" ] || rm -rf "$private_dir"
	# A guest that may still be frozen keeps its state file: --cleanup or the next job thaws.
	[ "$maybe_frozen" = 1 ] || state_end
	exit "$status"
}

# The last line the task printed on stderr that was not the driver's own (a command's error,
# bash's own), as " (LINE)"; bash's notes about children killed by a signal are left out.
stray_error() {
	local line
	[ -n "$stray_file" ] && [ -s "$stray_file" ] || return 0
	line=$(grep -v -E '^.*line [0-9]+: +[0-9]+ [A-Z][a-z]+' "$stray_file" | tail -n 1) || true
	[ -z "$line" ] || printf ' (%s)' "$line"
}

# Each VM in its own subshell, so that its EXIT trap cleans up exactly its own state; the
# parent passes SIGINT/SIGTERM/SIGHUP on and waits for that cleanup.
on_signal() {
	interrupted=1
	[ -z "$task_pid" ] || kill -TERM "$task_pid" 2>/dev/null || true
}

run_task() { # VMID
	local rc=0
	(
		set -e
		vmid=$1
		# What the user sees comes through log (on log_fd); anything else that a command or
		# bash itself prints (such as bash's "Killed" line for a writer killed by a signal)
		# goes nowhere until backup_vm points it at the stray file, whose last line explains
		# an unexpected exit.
		exec {log_fd}>&2 2>/dev/null
		trap undo_on_exit EXIT
		# The first thing a signal does is make the next one harmless: a TERM to the whole
		# process group is followed at once by the job's own TERM to the task, which must not
		# cut the exit handler short (see undo_on_exit).
		trap 'trap "failure=\${failure:-interrupted by signal}" INT TERM HUP
			failure="interrupted by signal"; exit 1' INT TERM HUP
		backup_vm
	) &
	task_pid=$!
	while :; do
		rc=0
		wait "$task_pid" || rc=$?
		# wait returns early (status > 128) when a trapped signal arrives; the task lives on.
		kill -0 "$task_pid" 2>/dev/null || break
	done
	task_pid=
	return "$rc"
}

# --cleanup: for each VM, under its lock, what a killed backup left behind (recover_state), and
# any of our nodes and jobs still in QEMU.
recover_vm() { # VMID
	local fd file
	vmid=$1
	qmp_sock=$opt_rundir/$vmid.qmp
	qga_sock=$opt_rundir/$vmid.qga
	file=$opt_statedir/$vmid.state
	# (exec's own redirection of stderr would last: the braces keep it to the open.)
	if ! { exec {fd}>>"$opt_rundir/$vmid.vzdump.lock"; } 2>/dev/null; then
		log ERROR "VM $vmid: can't open lock '$opt_rundir/$vmid.vzdump.lock'"
		return 1
	fi
	# A few seconds: a killed backup's last short-lived children may still hold the lock.
	if ! flock -w 5 "$fd"; then
		log ERROR "VM $vmid is locked (backup): a backup of it is running"
		return 1
	fi
	if [ -e "$file" ]; then
		if ! recover_state "$file"; then
			log ERROR "$recover_error"
			return 1
		fi
	elif qemu_alive; then
		sweep_leftovers
		sweep_bitmaps
		[ "$swept" = 1 ] || info "VM $vmid: nothing to clean up"
	else
		info "VM $vmid: nothing to clean up (no state file, QEMU not running)"
	fi
	return 0
}

job_abort() { # REASON
	run_hook job-abort || warn "$hook_error"
	log ERROR "Backup job failed - $1"
	print_json error "$1"
	send_mail error "$1"
	exit 1
}

# --json: the job's summary on standard output, one object.
print_json() { # STATUS [ERROR]
	[ "$opt_json" = 1 ] && [ -n "$results" ] || return 0
	jq -sc --arg status "$1" --arg error "${2:-}" '{status: $status,
		error: (if $error == "" then null else $error end), vms: .}' "$results" >&"$json_fd"
}

main() {
	local id rc errors=0
	# Writes to a log reader that went away fail (EPIPE) instead of killing the driver
	# before its cleanup could run.
	trap '' PIPE
	find_tools
	wants_help "$@" || read_vzdump_conf
	parse_options "$@"
	finish_options
	read_environment
	# As vzdump: a job for another node does nothing here, successfully.
	if [ -n "$opt_node" ] && [ "$opt_node" != "$(uname -n | cut -d. -f1)" ]; then
		info "skipping the job: it is for node $opt_node, this is $(uname -n | cut -d. -f1)"
		exit 0
	fi
	check_tools
	# Every path handed on (the JSON, the hooks' TARGET and LOGFILE) is absolute.
	opt_dumpdir=$(realpath -ms -- "$opt_dumpdir")
	# --json goes to the real stdout even with --quiet.
	exec {json_fd}>&1 {global_lock_fd}</dev/null {vm_lock_fd}</dev/null
	if [ "$opt_quiet" = 1 ]; then
		exec 2>/dev/null
		[ "$opt_stdout" = 1 ] || exec >/dev/null
	fi
	# The folders that steer root, checked and by their real paths from here on (QEMU opens
	# files under the tmpdir by path, from its own working folder), before any lock is taken;
	# and the dump folder (as vzdump does), rather than once for every VM.
	check_folders
	# Idle class for 8, as vzdump; the writer's compression inherits it.
	if [ "$opt_ionice" = 8 ]; then
		ionice -c3 -p $$ 2>/dev/null || warn "ionice failed"
	else
		ionice -c2 -n "$opt_ionice" -p $$ 2>/dev/null || warn "ionice failed"
	fi
	if [ "$opt_cleanup" = 1 ]; then
		for id in $(printf '%s\n' "${vmids[@]}" | sort -n -u); do
			(recover_vm "$id") || errors=$((errors + 1))
		done
		[ "$errors" = 0 ] || exit 1
		exit 0
	fi
	job_start=$EPOCHSECONDS
	if [ "$opt_json" = 1 ] || mail_wanted; then
		# The job's own private folder (0700, as each VM's): the results, and for the mail
		# the failed VMs' logs, under names no other user can plant anything.
		job_dir=$(mktemp -d "$opt_tmpdir/vzdumpjob.XXXXXX")
		results=$job_dir/results
		: >"$results"
	fi
	trap on_signal INT TERM HUP
	trap 'rm -rf ${job_dir:+"$job_dir"}' EXIT
	global_lock
	info "starting new backup job: $PROG $*"
	for id in "${conf_warnings[@]}"; do warn "$id"; done
	select_guests
	run_hook job-start || job_abort "$hook_error"
	for id in $(printf '%s\n' "${vmids[@]}" | sort -n -u); do
		[ "$interrupted" = 0 ] || break
		# Not `run_task || …`: that context would switch set -e off inside the task too.
		set +e
		run_task "$id"
		rc=$?
		set -e
		[ "$rc" = 0 ] || errors=$((errors + 1))
	done
	[ "$interrupted" = 0 ] || job_abort "interrupted by signal"
	run_hook job-end || job_abort "$hook_error"
	print_json "$([ "$errors" = 0 ] && echo ok || echo error)"
	if [ "$errors" -gt 0 ]; then
		info "Backup job finished with errors"
		send_mail error
		exit 1
	fi
	info "Backup job finished successfully"
	send_mail ok
}

main "$@"
