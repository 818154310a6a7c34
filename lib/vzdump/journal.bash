# shellcheck shell=bash
# lib/vzdump/journal.bash: the undo journal — what a backup did to the VM, recorded before each
# step, so that its own exit handler, a later job or --cleanup can undo it. Its interface:
#   state_begin, state RECORD, state_proc PID NAME, state_end    the state file on disk
#   undo_push COMMAND, run_undo strict|lax                         the undo record in memory
#   resumed                                                        the cont after our stop went through
#   recover_state FILE, sweep_leftovers                            after a backup that was killed
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

# --- the undo record -------------------------------------------------------------------------
# Each step is recorded *before* it is attempted, as the QMP command that undoes it (or a
# pseudo-command). The teardown and cleanup run the record in reverse with qmpctl -k, so an
# undo of a step that never took effect just gets an error reply, which is ignored on the
# failure path. (undo, we_paused and job_ids: see state.bash.)

# The cont after our stop went through.
resumed() {
	we_paused=0
	state resumed
}

undo_push() {
	undo+=("$1")
	state "undo $1"
}

# --- the state file --------------------------------------------------------------------------
# STATEDIR/VMID.state records, before each change to the VM is attempted, what a process that
# finds this backup killed must undo: one line per record, appended, so that whatever moment a
# SIGKILL hits, the file describes at least everything that was done. Records:
#   owner PID START      the VM's backup process (START: its start time, against pid reuse)
#   qmp PATH, qga PATH   the sockets
#   qemu ID              the QEMU instance (PID:START of the process on the QMP socket)
#   powerdown            stop mode asked the guest to shut down
#   tmp DIR, dat PATH    the private folder and the archive being written
#   final PATH           the archive's final name, just before the rename
#   log PATH             the backup's .log, which gets the reason it failed
#   proc PID START NAME  a helper process to stop (the writer)
#   freeze, thawed       gafreeze hold began, and ended with the guest thawed
#   paused, resumed      we sent stop, and cont went through
#   shutdown, restarted  stop mode shut the guest down (QEMU stays), and it was restarted
#   job ID               a backup job we start
#   undo COMMAND         as the undo record above; `undone` clears the ones before it
#   bitmaps NEW OLD NODE...  the dirty bitmaps switch (incremental.bash; OLD - for none);
#                        `bitmaps-kept` once kept or rolled back
# A backup that ends, well or not, removes its file; a file whose owner is gone is recovered
# by the next job for the VM or by --cleanup (recover_state).

state() { # RECORD
	[ -n "$state_file" ] || return 0
	printf '%s\n' "$1" >>"$state_file" 2>/dev/null || warn "cannot write the state file $state_file"
}

state_proc() { # PID NAME
	state "proc $1 $(proc_start "$1" || echo 0) $2"
}

# Starts the VM's state file, after first recovering a stale one of an earlier backup that
# was killed. Called with the VM's lock held, before anything is done to the VM.
state_begin() {
	# (The state folder exists and is root's: check_folders.)
	local file=$opt_statedir/$vmid.state
	if [ -e "$file" ]; then
		recover_state "$file" || fail "$recover_error"
	fi
	state_file=$file
	# This process, named outside the subshell and the command substitution below (each has
	# a $BASHPID of its own, gone at once: another job would take the owner for dead).
	local owner=$BASHPID owner_start
	owner_start=$(proc_start "$owner")
	# noclobber: two jobs with different lock folders must not share one state file. 0600: it
	# says what the backup does, to root alone.
	if ! (umask 077 && set -C && printf 'owner %s %s\n' "$owner" "$owner_start" >"$file") 2>/dev/null; then
		state_file=
		fail "cannot create the state file $file (another backup of VM $vmid?)"
	fi
	state "qmp $qmp_sock"
	state "qemu $(qemu_instance)"
	state "qga $qga_sock"
	state "tmp $private_dir"
	[ -z "$tmp_archive" ] || state "dat $tmp_archive"
	[ -z "$log_target" ] || state "log $log_target"
}

# Which QEMU listens on the QMP socket, as PID:START (the socket's inode is no name for it: a
# restarted VM's new socket often gets the old one's). A recovery only touches the instance the
# interrupted backup worked on. Empty when that cannot be told (nothing listens).
qemu_instance() {
	local path pid
	path=$(realpath -e -- "$qmp_sock" 2>/dev/null) || return 0
	pid=$(ss -xlpnH src "$path" 2>/dev/null | sed -n 's/.*users:(("[^"]*",pid=\([0-9]*\),.*/\1/p' | head -n 1) || true
	[ -n "$pid" ] || return 0
	printf '%s:%s\n' "$pid" "$(proc_start "$pid" || true)"
}

state_end() {
	[ -n "$state_file" ] || return 0
	rm -f "$state_file"
	state_file=
}

# --- a state file is data, not orders --------------------------------------------------------
# Before recover_state acts on a state file, every record must be one a backup of this VM in
# this job's folders writes: the VM's own sockets in the run folder, a private folder
# vzdumptmp.* directly in the tmpdir, this VM's names directly in the dump folder (each folder
# as checked and resolved by check_folders and main: a path with ".." or through another
# folder is no match), our helpers by name, undo commands of the shapes graph.jq makes.
# Anything else: the file is refused, nothing is run. (So --cleanup needs the folders of the
# backup it cleans up after, as vzdump.conf gives them to both.)

# Why RECORD (KEY REST) is not one of ours; nothing when it is.
bad_record() { # KEY REST
	local key=$1 rest=$2 stem="vzdump-qemu-$vmid-[0-9]{4}_[0-9]{2}_[0-9]{2}-[0-9]{2}_[0-9]{2}_[0-9]{2}"
	local pid start name
	case $key in
	owner) [[ $rest =~ ^[0-9]+\ [0-9]*$ ]] || echo "not a pid and start time" ;;
	qmp) [ "$rest" = "$opt_rundir/$vmid.qmp" ] || echo "not VM $vmid's QMP socket $opt_rundir/$vmid.qmp" ;;
	qga) [ "$rest" = "$opt_rundir/$vmid.qga" ] || echo "not VM $vmid's agent socket $opt_rundir/$vmid.qga" ;;
	qemu) [[ $rest =~ ^([0-9]+:[0-9]*)?$ ]] || echo "not a pid and start time" ;;
	tmp) in_folder "$rest" "$opt_tmpdir" '^vzdumptmp\.[A-Za-z0-9]{6}$' ||
		echo "not a private folder vzdumptmp.* of the tmpdir $opt_tmpdir" ;;
	dat) in_folder "$rest" "$opt_dumpdir" "^$stem(\.vma)?\.dat$" ||
		echo "not a .dat of VM $vmid in the dump folder $opt_dumpdir" ;;
	log) in_folder "$rest" "$opt_dumpdir" "^$stem\.log$" ||
		echo "not a .log of VM $vmid in the dump folder $opt_dumpdir" ;;
	final) in_folder "$rest" "$opt_dumpdir" "^$stem$ARCHIVE_SUFFIX$" ||
		echo "not an archive of VM $vmid in the dump folder $opt_dumpdir" ;;
	proc)
		read -r pid start name <<<"$rest"
		if ! [[ $rest =~ ^[0-9]+\ [0-9]+\ (vma-create|qemu-nbd)$ ]]; then
			echo "not a pid, start time and vma-create or qemu-nbd"
		elif proc_alive "$pid" "$start" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
			echo "process $pid is not $name"
		fi
		;;
	job) [[ $rest =~ ^vzdump-drive-[a-z]+[0-9]+$ ]] || echo "not a job of ours" ;;
	bitmaps)
		[[ $rest =~ ^$stem\ ($stem|-)(\ #?[A-Za-z0-9_.-]+)+$ ]] ||
			echo "not bitmaps of VM $vmid and node names"
		;;
	undo)
		# shellcheck disable=SC2016 # jq variables
		[ "$rest" = cancel-jobs ] ||
			graph_jq -e --arg tpm "$TPM_NODE" 'g::undo_ok($tpm)' <<<"$rest" >/dev/null 2>&1 ||
			echo "not an undo command of ours"
		;;
	freeze | thawed | paused | resumed | powerdown | shutdown | restarted | undone | bitmaps-kept)
		[ -z "$rest" ] || echo "unexpected arguments"
		;;
	*) echo "unknown record" ;;
	esac
}

# PATH is a name matching the regular expression NAME directly in FOLDER (a resolved path).
in_folder() { # PATH FOLDER NAME
	[ "${1%/*}" = "$2" ] && [[ ${1##*/} =~ $3 ]]
}

# Fails with recover_error when a record of FILE is not one of ours.
# A file or folder outside this job's folders (tmp, dat, log, final) is only left alone,
# with a warning: the state file may be another job's for the same VM, with other folders, and
# the VM must still get its cont and thaw. Their keys are left in left_alone.
check_state() { # FILE
	local key rest why n=0
	left_alone=' '
	while IFS=' ' read -r key rest; do
		n=$((n + 1))
		why=$(bad_record "$key" "$rest")
		[ -n "$why" ] || continue
		case $key in
		tmp | dat | log | final)
			warn "the state file $1, line $n ($key): $why - left alone"
			left_alone+="$key "
			continue
			;;
		esac
		recover_error="the state file $1 is refused, nothing was done: line $n ($key): $why - remove the file once the VM is checked"
		return 1
	done <"$1"
}

# Undoes what the state FILE says a killed backup left behind: cont if it had paused the VM,
# thaw if it had frozen the guest, stop its writer, run its undo record, sweep any of our
# nodes and jobs still in QEMU, and remove its .dat and private folder. Fails (with
# recover_error) when the owner still runs, or when the file is not one a backup writes
# (check_state).
recover_state() { # FILE
	local file=$1 key rest owner='' start='' r_qmp='' r_qga='' r_tmp='' r_dat='' r_log='' frozen=0
	local p pid pstart name was_shutdown=0 r_qemu='' same=1 status r_final='' r_bitmaps=''
	local -a procs=()
	undo=() job_ids=()
	we_paused=0
	while IFS=' ' read -r key rest; do
		case $key in
		owner) read -r owner start <<<"$rest" ;;
		qmp) r_qmp=$rest ;;
		qemu) r_qemu=$rest ;;
		qga) r_qga=$rest ;;
		tmp) r_tmp=$rest ;;
		dat) r_dat=$rest ;;
		final) r_final=$rest ;;
		log) r_log=$rest ;;
		proc) procs+=("$rest") ;;
		freeze) frozen=1 ;;
		thawed) frozen=0 ;;
		paused) we_paused=1 ;;
		resumed) we_paused=0 ;;
		powerdown | shutdown) was_shutdown=1 ;;
		restarted) was_shutdown=0 ;;
		job) job_ids+=("$rest") ;;
		undo) undo+=("$rest") ;;
		undone) undo=() ;;
		bitmaps) r_bitmaps=$rest ;;
		bitmaps-kept) r_bitmaps= ;;
		esac
	done <"$file"
	if [ -n "$owner" ] && proc_alive "$owner" "$start"; then
		undo=() job_ids=()
		we_paused=0
		recover_error="a backup of VM $vmid is still running (pid $owner)"
		return 1
	fi
	# (What was read so far is only remembered; from here on it is acted on.)
	local left_alone
	if ! check_state "$file"; then
		undo=() job_ids=()
		we_paused=0
		return 1
	fi
	[[ $left_alone != *" tmp "* ]] || r_tmp=
	[[ $left_alone != *" dat "* ]] || r_dat=
	[[ $left_alone != *" log "* ]] || r_log=
	[[ $left_alone != *" final "* ]] || r_final=
	info "cleaning up after an earlier backup of VM $vmid that did not finish (pid ${owner:-?})"
	local saved_qmp=$qmp_sock
	[ -z "$r_qmp" ] || qmp_sock=$r_qmp
	# A VM restarted since then is another QEMU: its run state, graph and fdsets are its own.
	if [ "$(qemu_instance)" != "$r_qemu" ]; then
		same=0
		undo=() job_ids=()
		we_paused=0 was_shutdown=0
		! qemu_alive || info "VM $vmid runs in another QEMU now: its state and block graph are left alone"
	fi
	if [ "$same" = 1 ] && qemu_alive; then
		# A paused guest cannot answer the thaw: cont first.
		if [ "$we_paused" = 1 ]; then
			info "resuming VM again"
			qmp cont >/dev/null 2>&1 || warn "cont failed"
			we_paused=0
		fi
		# Stop mode had shut the guest down and QEMU waits in `shutdown` state (or, reset
		# already, in prelaunch): restart it.
		status=$(qemu_status)
		if [ "$was_shutdown" = 1 ] && [ "$status" = shutdown ]; then
			info "restarting vm"
			qmp system_reset >/dev/null 2>&1 || warn "system_reset failed"
			wait_until 10 reset_done || true
			status=$(qemu_status)
		fi
		if [ "$was_shutdown" = 1 ] && [ "$status" = prelaunch ]; then
			qmp cont >/dev/null 2>&1 || warn "restarting the VM failed"
		fi
	fi
	if [ "$frozen" = 1 ] && [ -n "$r_qga" ] && [ -S "$r_qga" ]; then
		if [ "$(gafreeze -s "$r_qga" -t 5 status 2>/dev/null)" = frozen ]; then
			info "issuing guest-agent 'fs-thaw' command"
			gafreeze -s "$r_qga" -t 10 thaw >/dev/null || warn "thawing the guest failed"
		fi
	fi
	for p in "${procs[@]}"; do
		read -r pid pstart name <<<"$p"
		if proc_alive "$pid" "$pstart"; then
			info "stopping $name (pid $pid) left running"
			stop_process "$pid" "$pstart"
		fi
	done
	if qemu_alive; then
		run_undo lax || true
		sweep_leftovers
		# (Any QEMU: a qcow2's bitmaps outlive a restart.)
		[ -z "$r_bitmaps" ] || recover_bitmaps "$r_bitmaps" "$r_final"
	else
		undo=() job_ids=()
	fi
	job_ids=()
	if [ -n "$r_dat" ]; then
		# With the .dat, the temporary file vma-create writes it as (.NAME.tmp.PID).
		rm -f "$r_dat" "$(dirname -- "$r_dat")/.$(basename -- "$r_dat").tmp."*
	fi
	# Killed after the rename (during pruning, say): the archive is complete and stays, as
	# Proxmox leaves it. The log (in the private folder until delivered) gets what became of
	# the rest and goes where the killed backup would have put it.
	if [ -n "$r_log" ] && [ -n "$r_tmp" ] && [ -d "$r_tmp" ] && [ ! -L "$r_tmp" ] && [ -O "$r_tmp" ]; then
		if [ -n "$r_final" ] && [ -f "$r_final" ]; then
			printf '%(%F %T)T ERROR: Backup of VM %s failed after its archive %s was complete - the backup process was killed (cleaned up by pid %s); the archive is kept\n' \
				-1 "$vmid" "$r_final" "$$" >>"$r_tmp/log" || true
		else
			printf '%(%F %T)T ERROR: Backup of VM %s failed - the backup process was killed (cleaned up by pid %s)\n' \
				-1 "$vmid" "$$" >>"$r_tmp/log" || true
		fi
		deliver_log "$r_tmp/log" "$r_log"
	fi
	[ -z "$r_tmp" ] || [ ! -d "$r_tmp" ] || [ -L "$r_tmp" ] || [ ! -O "$r_tmp" ] || rm -rf "$r_tmp"
	rm -f "$file"
	qmp_sock=$saved_qmp
	return 0
}

# The bitmaps switch BITMAPS ("NEW OLD NODE...") of a killed backup: kept when its archive
# FINAL was complete, else rolled back (incremental.bash).
recover_bitmaps() { # BITMAPS FINAL
	local new old nodes
	read -r new old nodes <<<"$1"
	[ "$old" != - ] || old=
	if [ -n "$2" ] && [ -f "$2" ]; then
		prune_bitmaps "$new" "${nodes// /$'\n'}" || warn "removing the bitmaps no backup needs any more failed"
	else
		info "giving the changes counted since the killed backup's instant back to its bitmaps"
		bitmap_rollback "$new" "$old" "${nodes// /$'\n'}"
	fi
}

# Removes from QEMU what carries our names (jobs vzdump-drive-*, nodes vz-tgt-*, vz-acc-*,
# vz-cbw-*, vz-fl-* and drive-tpmstate0-backup) even with no state file to tell: a device
# still on one of our filters gets its own node back first. The fdsets of our scratch nodes
# are found through the nodes' /dev/fdset/N file names.
sweep_leftovers() {
	local jobs nodes graph blocks batch id ours
	nodes=$(qmp query-named-block-nodes flat=true 2>/dev/null) || return 0
	jobs=$(qmp query-jobs 2>/dev/null) || return 0
	# shellcheck disable=SC2016 # jq variables
	ours=$(graph_jq -n --argjson nodes "$nodes" --argjson jobs "$jobs" --arg tpm "$TPM_NODE" \
		'g::leftovers($nodes; $jobs; $tpm)') || return 0
	[ "$ours" != 0 ] || return 0
	swept=1
	info "found leftovers of an earlier backup in QEMU - removing them"
	while IFS= read -r id; do
		[ -n "$id" ] || continue
		qmp job-cancel "id=$id" >/dev/null 2>&1 || true
	done < <(jq -r '.[] | select(.id | startswith("vzdump-drive-")) | select(.status != "concluded") | .id' <<<"$jobs")
	wait_until 10 our_jobs_settled || true
	graph=$(qmp x-debug-query-block-graph 2>/dev/null) || graph='{"nodes":[],"edges":[]}'
	blocks=$(qmp query-block 2>/dev/null) || blocks='[]'
	jobs=$(qmp query-jobs 2>/dev/null) || jobs='[]'
	# shellcheck disable=SC2016 # jq variables
	batch=$(graph_jq -nr --argjson nodes "$nodes" --argjson jobs "$jobs" --argjson graph "$graph" \
		--argjson blocks "$blocks" --arg tpm "$TPM_NODE" \
		'g::sweep_batch($nodes; $jobs; $graph; $blocks; $tpm)') || return 0
	[ -z "$batch" ] || qmp -k -f - <<<"$batch" >/dev/null 2>&1 || true
}

# Whether every job named vzdump-drive-* has concluded, or QEMU no longer answers (then there
# is nothing to wait for).
our_jobs_settled() {
	local jobs
	jobs=$(qmp query-jobs 2>/dev/null) || return 0
	[ "$(jq '[.[] | select(.id | startswith("vzdump-drive-")) | select(.status != "concluded")] | length' <<<"$jobs")" = 0 ]
}

# Cancels our jobs that have not concluded and waits (bounded) until they have.
cancel_jobs() {
	[ ${#job_ids[@]} -gt 0 ] || return 0
	local ids running id
	ids=$(jq -nc '$ARGS.positional' --args "${job_ids[@]}")
	running=$(unconcluded_jobs "$ids") || return 1
	while IFS= read -r id; do
		[ -z "$id" ] || qmp job-cancel "id=$id" >/dev/null 2>&1 || true
	done <<<"$running"
	wait_until 30 no_unconcluded_jobs "$ids"
}

# The jobs among IDS (a JSON array) that have not concluded, one per line; fails when QEMU
# does not answer (then nobody can say they have).
unconcluded_jobs() { # IDS
	local jobs
	jobs=$(qmp query-jobs 2>/dev/null) || return 1
	# shellcheck disable=SC2016 # jq variables
	graph_jq -r --argjson ids "$1" 'g::unconcluded($ids)' <<<"$jobs"
}

no_unconcluded_jobs() { # IDS
	local running
	running=$(unconcluded_jobs "$1") && [ -z "$running" ]
}

# Runs the undo record in reverse. With MODE strict, an error reply fails (the normal
# teardown); with MODE lax, errors are expected and ignored (cleanup after a failure).
run_undo() { # MODE
	local mode=$1 i batch out rc=0 line
	[ ${#undo[@]} -gt 0 ] || return 0
	if [ "$we_paused" = 1 ]; then
		qmp cont >/dev/null 2>&1 && resumed
	fi
	batch=
	local blocks=
	for ((i = ${#undo[@]} - 1; i >= 0; i--)); do
		if [ "${undo[i]}" = cancel-jobs ]; then
			if [ -n "$batch" ]; then
				run_undo_batch "$mode" "$batch" || rc=1
				batch=
			fi
			cancel_jobs || rc=1
		else
			case ${undo[i]} in
			'{"execute":"qom-set"'*)
				[ -n "$blocks" ] || blocks=$(qmp query-block 2>/dev/null) || blocks='[]'
				drive_moved "$blocks" "${undo[i]}" || continue
				;;
			esac
			batch+=${undo[i]}$'\n'
		fi
	done
	if [ -n "$batch" ]; then
		run_undo_batch "$mode" "$batch" || rc=1
	fi
	undo=()
	state undone
	return "$rc"
}

# Whether the undo QOM-SET (a device back onto its own node) is needed: the device is on
# another node. QEMU 7.2 aborts (bdrv_replace_child_noperm: old_bs != new_bs) on a qom-set
# of a device's drive onto the node it already has, so an undo of a switch that never took
# place must not be sent.
drive_moved() { # QUERY-BLOCK-JSON QOM-SET
	# shellcheck disable=SC2016 # jq variables
	graph_jq -e --argjson c "$2" 'g::drive_moved($c)' <<<"$1" >/dev/null 2>&1
}

run_undo_batch() { # MODE BATCH
	local out rc=0 line
	out=$(qmp -k -f - <<<"$2" 2>/dev/null) || rc=$?
	[ "$1" = strict ] || return 0
	[ "$rc" = 0 ] && return 0
	while IFS= read -r line; do
		if is_error_line "$line"; then
			warn "teardown: $(jq -r '.error.desc' <<<"$line")"
		fi
	done <<<"$out"
	[ -n "$out" ] || warn "teardown: QMP failed (status $rc)"
	return 1
}
