# shellcheck shell=bash
# lib/vzdump/live.bash: the live path — the writer (vma-create --listen), the scratch nodes, the
# instant (copy-before-write inside the guest's freeze), QEMU's backup jobs pushing into the
# writer, and the block graph put back. The QMP commands themselves are in graph.jq.
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

writer_output_args() {
	case $opt_compress in
	gzip | lzo | zstd | xz) args+=(-z "$opt_compress") ;;
	esac
	case $opt_compress in
	zstd | xz) [ -z "$opt_zstd" ] || [ "$opt_zstd" = 0 ] || args+=(-T "$opt_zstd") ;;
	# vzdump's pigz: 0 is gzip's one thread, 1 half the CPUs, N that many.
	gzip) args+=(-T "$(gzip_threads)") ;;
	esac
	# Its figures for the summary, as JSON (written when it succeeds).
	args+=(--stats "$private_dir/writer.json")
	if [ "$opt_stdout" = 1 ]; then
		args+=(-o -)
	else
		args+=(-o "$tmp_archive")
	fi
}

# The threads for --compress gzip, from --pigz as vzdump reads it.
gzip_threads() {
	local cpus
	case $opt_pigz in
	0) echo 1 ;;
	1)
		cpus=$(nproc)
		echo $((cpus > 1 ? cpus / 2 : 1))
		;;
	*) echo "$opt_pigz" ;;
	esac
}

# Starts vma-create's NBD server, one export per disk, writing the archive.
start_writer() {
	local key
	local -a args=(-v -c "$private_dir/qemu-server.conf")
	[ ${#disk_keys[@]} -eq 0 ] || args+=(--listen "$private_dir/nbd.sock")
	# The limit is kept here, for the whole VM: what QEMU's jobs push in is paced as one
	# stream, a disk that is done leaves the rest to the others, and holes cost nothing.
	[ "$opt_bwlimit" = 0 ] || args+=(--bwlimit "$opt_bwlimit")
	[ "$backup_kind" != incremental ] || args+=(--incremental "$(incremental_blob)")
	writer_output_args
	for key in "${disk_keys[@]}"; do
		args+=("$(archive_devname "$key")=${disk_size[$key]}")
	done
	spawn vma-create "${args[@]}" 2>"$private_dir/writer.log"
	writer_pid=$spawned_pid
	state_proc "$writer_pid" vma-create
	[ ${#disk_keys[@]} -gt 0 ] || return 0
	wait_until 10 socket_or_exit "$private_dir/nbd.sock" "$writer_pid" || true
	[ -S "$private_dir/nbd.sock" ] ||
		fail "vma-create did not start: $(tail -n 3 "$private_dir/writer.log")"
}

# A server's socket is there, or the server PID is gone.
socket_or_exit() { # SOCKET PID
	[ -S "$1" ] || ! kill -0 "$2" 2>/dev/null
}

# Runs a plan of graph.jq over the disks, which prints lines "U <undo command>" and
# "B <command>"; records the undo lines and leaves the batch in the file BATCH. One jq run per
# phase (jq takes a tenth of a second to start on a busy machine).
plan() { # BATCH [JQ-ARGS...] JQ-PROGRAM
	local batch=$1 line lines
	shift
	lines=$(disks_json | graph_jq -r "$@") || fail "internal error: jq"
	: >"$batch"
	while IFS= read -r line; do
		case $line in
		'U '*) undo_push "${line#U }" ;;
		'B '*) printf '%s\n' "${line#B }" >>"$batch" ;;
		esac
	done <<<"$lines"
}

# Scratch qcow2 images, one per disk, opened, unlinked at once and handed to QEMU as fdsets,
# then attached as nodes. Nothing of them is left on disk, whatever happens next.
# QEMU 7.2 closes the fds of a removed fdset only while the VM runs, so for a VM that is not
# running the images are attached by path instead and unlinked as soon as QEMU has them open.
attach_scratch() {
	local key i=0 base=0 img fd out by_path=0 rc=0
	local -a addfd=() fds=()
	[ "$vm_status" = running ] || by_path=1
	if [ "$by_path" = 0 ]; then
		out=$(qmp query-fdsets 2>"$private_dir/qmp.err") ||
			fail "query-fdsets failed$(why_of "$private_dir/qmp.err")"
		base=$(jq '[.[]["fdset-id"]] | (max // 0) + 1' <<<"$out") || fail "query-fdsets failed"
	fi
	for key in "${disk_keys[@]}"; do
		i=$((i + 1))
		# A node without a device (the TPM state) is copied as it is (see prepare_tpmstate).
		if [ -z "${disk_qdev[$key]}" ]; then
			info "attaching TPM drive to QEMU for backup"
			continue
		fi
		img=$private_dir/scratch-$key.qcow2
		qemu-img create -q -f qcow2 "$img" "${disk_size[$key]}" >/dev/null 2>"$private_dir/img.err" ||
			fail "cannot create the scratch image $img$(why_of "$private_dir/img.err")"
		if [ "$by_path" = 0 ]; then
			exec {fd}<>"$img"
			rm -f "$img"
			fds+=("$fd")
			addfd+=(--add-fd "$((base + i - 1))=$fd")
		fi
	done
	# shellcheck disable=SC2016 # jq variables
	plan "$private_dir/scratch.qmp" --argjson base "$base" --arg dir "$private_dir" \
		'g::scratch_plan($base; $dir)'
	out=$(qmp -f "$private_dir/scratch.qmp" "${addfd[@]}" 2>&1) || rc=$?
	for fd in "${fds[@]}"; do exec {fd}>&-; done
	[ "$by_path" = 0 ] || rm -f "$private_dir"/scratch-*.qcow2
	[ "$rc" = 0 ] || fail "attaching the scratch images failed: ${out##*qmpctl: }"
}

# The instant: stop (if running), a copy-before-write filter over each disk writing the old
# data to its scratch node, the device switched onto the filter, cont, all in one qmpctl batch
# (the snapshot-access node the job reads comes after the thaw, in start_jobs). Run inside gafreeze hold when the agent answers: qmpctl
# connects and negotiates first and says ready on descriptor 3, gafreeze freezes and says go,
# so that only the batch itself runs while the guest is frozen (--sync-fd, gafreeze(1)). Its
# -t then also covers the freeze (bounded by --max).
snapshot() {
	local status=$vm_status out rc=0 t0 t1 qmp_t=$QMP_TIMEOUT
	local -a freeze=() sync=() figures=()
	# shellcheck disable=SC2016 # jq variables
	plan "$private_dir/snapshot.qmp" --arg status "$status" --argjson bm "$(bitmap_plan_json)" \
		'g::snapshot_plan($status; $bm)'
	record_bitmap_switch

	if freeze_applicable; then
		freeze=(gafreeze -s "$qga_sock" --max "$FREEZE_MAX" --sync-fd 3 --json hold --)
		sync=(--sync-fd 3)
		qmp_t=$((QMP_TIMEOUT + FREEZE_MAX))
	fi
	if [ "$status" = running ]; then
		we_paused=1
		state paused
	fi
	if [ ${#freeze[@]} -gt 0 ]; then
		info "issuing guest-agent 'fs-freeze' command"
		state freeze
	fi
	t0=$(now_ms)
	out=$(unlocked "${freeze[@]}" qmpctl -s "$qmp_sock" -t "$qmp_t" "${sync[@]}" -k \
		-f "$private_dir/snapshot.qmp" 2>"$private_dir/snapshot.err") || rc=$?
	t1=$(now_ms)
	# gafreeze exits 4 only when the guest may still be frozen (cleanup tries once more).
	if [ ${#freeze[@]} -gt 0 ]; then
		if [ "$rc" = 4 ]; then maybe_frozen=1; else state thawed; fi
	fi
	[ ${#freeze[@]} -eq 0 ] || info "issuing guest-agent 'fs-thaw' command"
	snapshot_check "$status" "$out" "$rc" "${#freeze[@]}"
	snapshot_ms=$((t1 - t0))
	if [ ${#freeze[@]} -gt 0 ]; then
		# The window and its steps, from gafreeze's summary: the freeze's round trip, the
		# batch (go to qmpctl's exit), the thaw. A figure gafreeze could not measure is null.
		mapfile -t figures < <(jq -r '.frozen_ms, .freeze_ms, .command_ms, .thaw_ms' \
			<<<"${out##*$'\n'}" 2>/dev/null) || true
		frozen_ms=$(ms_or_empty "${figures[0]:-}")
		freeze_ms=$(ms_or_empty "${figures[1]:-}")
		qmp_ms=$(ms_or_empty "${figures[2]:-}")
		thaw_ms=$(ms_or_empty "${figures[3]:-}")
		info "guest filesystems frozen for ${frozen_ms:-?} ms"
	else
		info "snapshot taken in $((t1 - t0)) ms (guest filesystems not frozen)"
	fi
	[ "$status" != running ] || info "resuming VM again"
}

# A number of milliseconds as it is, anything else as nothing.
ms_or_empty() { # TEXT
	if [[ $1 =~ ^[0-9]+$ ]]; then printf '%s\n' "$1"; fi
}

# After gafreeze's thaw failed (exit 4), one more try; if the guest still does not thaw, the
# state file stays behind for --cleanup and the next job, and the log says so.
thaw_again() {
	[ "$maybe_frozen" = 1 ] || return 0
	if unlocked gafreeze -s "$qga_sock" -t 10 thaw >/dev/null 2>&1; then
		maybe_frozen=0
		state thawed
		info "guest filesystems thawed on a second try"
		return 0
	fi
	log ERROR "the guest may still be frozen: vzdump.sh --cleanup $vmid (or gafreeze -s $qga_sock thaw) thaws it once its agent answers"
}

# Checks every reply of the snapshot batch: the cont must have succeeded (else it is sent
# again at once), and any error fails the backup.
snapshot_check() { # STATUS OUTPUT RC FROZEN
	local line n=0 err=
	local -a lines=()
	mapfile -t lines <<<"$2"
	# gafreeze's JSON summary is the last line after qmpctl's replies.
	[ "$4" = 0 ] || unset 'lines[-1]'
	for line in "${lines[@]}"; do
		n=$((n + 1))
		if is_error_line "$line"; then
			[ -n "$err" ] || err=$(jq -r '.error.desc' <<<"$line")
		fi
	done
	if [ "$1" = running ] && [ "$n" -gt 0 ] && ! is_error_line "${lines[-1]}"; then
		resumed
	fi
	if [ "$we_paused" = 1 ]; then
		qmp cont >/dev/null 2>&1 && resumed
	fi
	[ -z "$err" ] || fail "snapshot failed: $err"
	# gafreeze's last line is its summary of the window: the line before says what failed
	# (with exit status 4: THAW FAILED, THE GUEST MAY STILL BE FROZEN).
	# qmpctl's own "no go" after a failed freeze is not the reason.
	[ "$3" = 0 ] || fail "snapshot failed: $(grep -v -e '^gafreeze: guest frozen for ' \
		-e '^qmpctl: --sync-fd [0-9]*: no go' "$private_dir/snapshot.err" | tail -n 1)"
	[ "$n" = "$(wc -l <"$private_dir/snapshot.qmp")" ] || fail "snapshot failed: missing QMP replies"
}

# Whether to freeze: the agent is enabled (or, with no config, its socket exists) and answers.
freeze_applicable() {
	# A paused guest cannot answer the agent; a stopped one has nothing to freeze.
	case $backup_mode in
	suspend)
		info "skipping guest filesystem freeze - the guest is paused (suspend mode, backup is not frozen)"
		return 1
		;;
	stop) return 1 ;;
	esac
	if [ -n "$conf_file" ] && [ "$agent_enabled" != 1 ]; then
		info "skipping guest filesystem freeze - no guest agent enabled in VM options (backup is not frozen)"
		return 1
	fi
	if [ "$agent_freeze" = 0 ]; then
		info "skipping guest filesystem freeze - disabled in VM options (backup is not frozen)"
		return 1
	fi
	if [ ! -S "$qga_sock" ]; then
		info "skipping guest filesystem freeze - no guest agent socket $qga_sock (backup is not frozen)"
		return 1
	fi
	if ! gafreeze -s "$qga_sock" -t 3 ping 2>/dev/null; then
		info "skipping guest filesystem freeze - agent configured but not running? (backup is not frozen)"
		return 1
	fi
	if [ "$(gafreeze -s "$qga_sock" -t 3 status 2>/dev/null)" = frozen ]; then
		info "skipping guest filesystem freeze - already frozen (backup is not frozen by us)"
		return 1
	fi
	return 0
}

# After the thaw: a snapshot-access node over each filter, a socket connected to the writer
# per disk handed to QEMU, an NBD target node on each, and all backup jobs started in one
# transaction, at full speed (the writer keeps --bwlimit).
start_jobs() {
	local key i=0 out
	local -a fdargs=()
	for key in "${disk_keys[@]}"; do
		fdargs+=(--fd "t$i=unix-connect:$private_dir/nbd.sock")
		i=$((i + 1))
		job_ids+=("vzdump-drive-$key")
		state "job vzdump-drive-$key"
	done
	# shellcheck disable=SC2016 # jq variables
	plan "$private_dir/jobs.qmp" --argjson workers "${opt_max_workers:-null}" \
		--arg old "$([ "$backup_kind" != incremental ] || echo "$bitmap_old")" \
		'g::jobs_plan($workers; (if $old == "" then null else $old end))'
	info "starting backup via QMP command"
	out=$(qmp -f "$private_dir/jobs.qmp" "${fdargs[@]}" 2>&1) ||
		fail "starting the backup jobs failed: ${out##*qmpctl: }"
	log_dirty # after the start, which it would only delay
}

# Waits until every job has concluded, passing the writer's progress lines on to the log.
# QEMU does the copying on a machine whose cores it may well keep busy, so each round is
# cheap: one qmpctl and one jq, and the liveness check only when the query fails. The
# round's qmpctl prints the jobs and then waits on the same connection for their next status
# change (--poll): a job that ends while jq judges the list is not missed, as it was between
# a query and a second connection waiting for the event (which then waited out its 2 s).
wait_jobs() {
	local ids jobs verdict failures=0 fd
	ids=$(jq -nc '$ARGS.positional' --args "${job_ids[@]}")
	while :; do
		forward_writer_log
		exec {fd}< <(exec qmpctl -s "$qmp_sock" -t "$QMP_TIMEOUT" --poll 2 \
			-w JOB_STATUS_CHANGE query-jobs </dev/null 2>/dev/null \
			{global_lock_fd}>&- {vm_lock_fd}>&-)
		poll_pid=$!
		if ! IFS= read -r -u "$fd" jobs; then
			poll_done "$fd"
			qemu_alive || fail "QEMU is gone (nothing listens on $qmp_sock)"
			failures=$((failures + 1))
			[ "$failures" -lt 3 ] || fail "lost QMP: $(qmp query-status 2>&1 | tail -n 1)"
			continue
		fi
		failures=0
		# shellcheck disable=SC2016 # jq variables
		verdict=$(graph_jq -r --argjson ids "$ids" 'g::jobs_verdict($ids)' <<<"$jobs")
		# Still running: on to the next status change, or two seconds.
		[ "$verdict" != running ] || while IFS= read -r -u "$fd" _; do :; done
		poll_done "$fd"
		case $verdict in
		missing) fail "a backup job vanished from QEMU" ;;
		done) return 0 ;;
		error\ *) fail "backup job failed: ${verdict#error }$(writer_failure)" ;;
		esac
	done
}

# The end of a round's qmpctl --poll: its output closed, and it stopped if it still waits
# (also on the way out after a failure, so that the undo finds the monitor free at once).
poll_done() { # [FD]
	local fd=${1:-}
	[ -z "$fd" ] || exec {fd}<&-
	[ -n "$poll_pid" ] || return 0
	kill "$poll_pid" 2>/dev/null || true
	wait "$poll_pid" 2>/dev/null || true
	poll_pid=
}

# When a job failed because the writer ended (the dump folder is full, say), the job only
# says "Input/output error": the writer's own last error, as " (vma-create: why)".
writer_failure() {
	local why
	[ -n "$writer_pid" ] || return 0
	! kill -0 "$writer_pid" 2>/dev/null || return 0
	why=$(grep -v -e '%' -e '^image ' "$private_dir/writer.log" 2>/dev/null | tail -n 1) || true
	[ -z "$why" ] || printf ' (%s)' "$why"
}

forward_writer_log() {
	local line n=0
	[ -f "$private_dir/writer.log" ] || return 0
	while IFS= read -r line; do
		n=$((n + 1))
		[ "$n" -gt "$writer_lines_done" ] || continue
		case $line in
		*%\ \(*) info "$line" ;;
		esac
	done <"$private_dir/writer.log"
	writer_lines_done=$n
}

# The end of a live copy that went well: the block graph put back as it was (the undo record
# in reverse), then the writer finishes the archive once its clients are gone.
finish_live_copy() {
	run_undo strict || fail "restoring the VM's block graph failed"
	wait_writer
}

# Waits for the writer to end; fails with its own last words. Once the copy is over it only
# has to finish the archive: a writer still running after WRITER_WAIT seconds (held up by
# anything at all) is stopped, and the backup fails saying so, instead of holding the VM's and
# the job's locks for ever.
wait_writer() {
	local rc=0
	if ! wait_until -i 0.2 "$WRITER_WAIT" proc_ended "$writer_pid"; then
		stop_writer
		forward_writer_log
		fail "vma-create did not finish the archive within $WRITER_WAIT s after the copy ended - stopped it"
	fi
	reap "$writer_pid" || rc=$?
	writer_pid=
	forward_writer_log
	[ "$rc" = 0 ] || fail "vma-create failed: $(writer_last_words "$rc")"
}

# The writer's last two lines of error, or the signal that ended it.
writer_last_words() { # EXIT-STATUS
	local words
	words=$(grep -v '%' "$private_dir/writer.log" 2>/dev/null | tail -n 2) || true
	if [ "$1" -gt 128 ]; then
		words+="${words:+ }(killed by signal $(kill -l "$(($1 - 128))" 2>/dev/null || echo "$(($1 - 128))"))"
	fi
	printf '%s\n' "$words"
}

stop_writer() {
	[ -n "$writer_pid" ] || return 0
	stop_child "$writer_pid" || true
	writer_pid=
}
