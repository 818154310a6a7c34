# shellcheck shell=bash
# lib/vzdump/job.bash: the job's plumbing around each archive — the log, hook scripts, locks,
# names, sizes and times as vzdump prints them, the notes and protection marks, retention, and
# the JSON results.
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

# --- logging ---------------------------------------------------------------------------------
# stderr gets `INFO: msg` as vzdump's task log; the VM's log gets a timestamp in front. As in
# vzdump, that log is written where only root writes (PRIVATE_DIR/log: one descriptor, opened
# once, never a name looked up again) and delivered into the dump folder at the end
# (deliver_log), by vzdump-put, which never follows a link another user planted there.
# log_fd is the log's own copy of stderr: a signal trap can run while a function's stderr is
# redirected (to /dev/null, say), and the error must still be seen.
log_fd=2

# Logging never fails: a full dump folder or a closed stderr must not cut a cleanup short.
log() { # LEVEL MESSAGE
	# stdout is pointed at the log first, then printf's own complaint goes nowhere.
	# shellcheck disable=SC2261
	printf '%s: %s\n' "$1" "$2" >&"$log_fd" 2>/dev/null || true
	if [ -n "$logfile_fd" ]; then
		# shellcheck disable=SC2261
		printf '%(%F %T)T %s: %s\n' -1 "$1" "$2" 2>/dev/null >&"$logfile_fd" || true
	fi
}

# The VM's log from here on: PRIVATE_DIR/log (created, never followed: the folder is ours).
open_log() {
	{ exec {logfile_fd}>"$private_dir/log"; } 2>/dev/null ||
		fail "cannot create the log $private_dir/log"
}

# The log is complete: log() writes to the task log only from now on.
close_log() {
	[ -n "$logfile_fd" ] || return 0
	exec {logfile_fd}>&-
	logfile_fd=
}

# Standard input as the file PATH in the dump folder (mode 0644, as Proxmox's .log, .notes and
# .protected), by vzdump-put: a link planted under the name is replaced, never followed; with
# -x the name must be new. vzdump-put opens the folder itself without following a link, so it
# gets the folder's real path (a dump folder is often reached through one).
put_file() { # [-x] PATH
	local -a opts=(-m 0644)
	local dir
	if [ "$1" = -x ]; then
		opts+=(-x)
		shift
	fi
	dir=$(realpath -e -- "${1%/*}" 2>/dev/null) || {
		echo "vzdump-put: ${1%/*}: No such file or directory" >&2
		return 1
	}
	vzdump-put "${opts[@]}" "$dir" "${1##*/}"
}

# The log into the dump folder under its final name (replacing the empty claim), as vzdump
# copies its log there at the end, on success and on failure.
deliver_log() { # PRIVATE-LOG DUMPDIR/NAME.log
	[ -n "$2" ] && [ -f "$1" ] || return 0
	put_file "$2" <"$1" 2>/dev/null || warn "cannot write the log $2"
}
info() { log INFO "$1"; }
warn() { log WARN "$1"; }

# Aborts the current VM's backup (the subshell) with a reason; cleanup runs from the EXIT trap.
fail() {
	failure=$1
	exit 1
}

# --- hook script ---------------------------------------------------------------------------
# Called as vzdump calls it: `HOOK PHASE` for job phases, `HOOK PHASE MODE VMID` for a VM's,
# with only vzdump's variables in the environment (no PATH, no HOME). Its output is logged as
# INFO lines. On failure hook_error says why.
hook_error=
run_hook() { # PHASE [vm]
	[ -n "$opt_script" ] || return 0
	local out rc=0 line
	local -a env=("DUMPDIR=$opt_dumpdir") args=("$1")
	if [ $# -gt 1 ]; then
		args+=("$backup_mode" "$vmid")
		env+=(VMTYPE=qemu "TARGET=$hook_target")
		[ -z "$vm_name" ] || env+=("HOSTNAME=$vm_name")
		[ -z "$log_target" ] || env+=("LOGFILE=$log_target")
	fi
	if [ $# -gt 1 ] && [ -n "$private_dir" ] && [ -d "$private_dir" ]; then
		# A VM's hook runs in the background and is waited for: bash runs a trap only once a
		# foreground command is done, so a SIGTERM would wait for a hung hook; `wait` is cut
		# short by it. cleanup stops a hook left running.
		spawn env -i "${env[@]}" "$opt_script" "${args[@]}" </dev/null >"$private_dir/hook.out" 2>&1
		hook_pid=$spawned_pid
		reap "$hook_pid" || rc=$?
		hook_pid=
		out=$(cat "$private_dir/hook.out")
	else
		out=$(
			close_fds_above_2
			exec env -i "${env[@]}" "$opt_script" "${args[@]}" </dev/null 2>&1
		) || rc=$?
	fi
	if [ -n "$out" ]; then
		while IFS= read -r line; do info "$line"; done <<<"$out"
	fi
	[ "$rc" = 0 ] && return 0
	hook_error="command '$opt_script ${args[*]}' failed: exit code $rc"
	return 1
}

# Phases whose failure fails the VM's backup.
hook_or_fail() { # PHASE
	run_hook "$1" vm || fail "$hook_error"
}

# --- formatting as vzdump does ---------------------------------------------------------------

# PVE::JSONSchema::format_size: the largest unit that divides the size exactly.
format_disk_size() { # BYTES
	awk -v n="$1" 'BEGIN {
		split("K M G T", u, " "); s = n ""; i = 0
		while (i < 4 && n % 1024 == 0 && n > 0) { n /= 1024; i++; s = sprintf("%.0f%s", n, u[i]) }
		print s }'
}

# PVE::VZDump::format_size, used for `archive file size:`.
format_archive_size() { # BYTES
	awk -v n="$1" 'BEGIN {
		kb = n / 1024; mb = kb / 1024; gb = mb / 1024
		if (kb < 1024) printf "%dKB\n", kb
		else if (mb < 1024) printf "%dMB\n", mb
		else if (gb < 1024) printf "%.2fGB\n", gb
		else printf "%.2fTB\n", gb / 1024 }'
}

# PVE::Format::render_bytes with PRECISION decimals.
render_bytes() { # BYTES PRECISION
	awk -v n="$1" -v p="$2" 'BEGIN {
		split("B KiB MiB GiB TiB PiB", u, " "); i = 1
		while (n >= 1024 && i < 6) { n /= 1024; i++ }
		printf "%.*f %s\n", p, n, u[i] }'
}

# HH:MM:SS, as vzdump's format_time.
format_time() { # SECONDS
	printf '%02d:%02d:%02d\n' $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60))
}

record_result() { # EXIT-STATUS
	[ -n "$results" ] || return 0
	local size=null
	[ -z "$final_archive" ] || size=$(stat -c %s "$final_archive" 2>/dev/null) || size=null
	jq -nc --argjson vmid "$vmid" --arg name "$vm_name" --arg status "$([ "$1" = 0 ] && echo ok || echo error)" \
		--arg archive "$final_archive" --argjson size "$size" \
		--argjson start "${backup_start:-null}" --argjson finish "$EPOCHSECONDS" \
		--argjson frozen "${frozen_ms:-null}" --argjson freeze "${freeze_ms:-null}" \
		--argjson qmp "${qmp_ms:-null}" --argjson thaw "${thaw_ms:-null}" \
		--argjson snap "${snapshot_ms:-null}" --arg kind "$backup_kind" \
		--arg base "$inc_parent" --arg reason "$full_reason" --arg inc "$opt_incremental" \
		--arg error "$([ "$1" = 0 ] || echo "${failure:-exit status $1}")" \
		'{vmid: $vmid, name: (if $name == "" then null else $name end), status: $status,
		  archive: (if $archive == "" then null else $archive end), size: $size,
		  start: $start, "end": $finish, frozen_ms: $frozen, freeze_ms: $freeze,
		  qmp_ms: $qmp, thaw_ms: $thaw, snapshot_ms: $snap}
		+ (if $inc == "1" then {kind: $kind, base: (if $base == "" then null else $base end),
			full_reason: (if $reason == "" then null else $reason end)} else {} end)
		+ {error: (if $error == "" then null else $error end)}' >>"$results" || true
}

# The copy's figures as vzdump logs them, from the writer's --stats.
summary() {
	local total zeros secs
	# (What the writer received: the whole disks for a full, the changes for an incremental.)
	{ read -r total && read -r zeros; } < <(jq -r '.saved + .zeros, .zeros' "$private_dir/writer.json") ||
		fail "cannot read the writer's figures $private_dir/writer.json"
	secs=$((EPOCHSECONDS - copy_start))
	info "backup is sparse: $(render_bytes "$zeros" 2) ($((total > 0 ? zeros * 100 / total : 0))%) total zero data"
	if [ "$secs" -lt 1 ]; then
		info "transferred $(render_bytes "$total" 2) in <1 seconds"
	else
		info "transferred $(render_bytes "$total" 2) in $secs seconds ($(render_bytes $((total / secs)) 1)/s)"
	fi
}

# --- locks ---------------------------------------------------------------------------------

# The node-wide lock (one backup job at a time, as vzdump's /var/run/vzdump.lock), waiting up
# to --lockwait minutes; held until exit.
# (Every child is started without them: see unlocked and spawn.)
global_lock() {
	local path=$opt_rundir/vzdump.lock deadline
	exec {global_lock_fd}>&-
	# (The braces keep bash's own message about the open to themselves.)
	{ exec {global_lock_fd}>>"$path"; } 2>/dev/null || job_abort "can't open lock '$path'"
	if ! flock -n "$global_lock_fd"; then
		info "trying to get global lock - waiting..."
		# A second at a time, so that a signal ends the wait at once.
		deadline=$((SECONDS + opt_lockwait * 60))
		until flock -w 1 "$global_lock_fd"; do
			[ "$interrupted" = 0 ] || job_abort "interrupted by signal"
			[ "$SECONDS" -lt "$deadline" ] || job_abort "can't acquire lock '$path' - got timeout"
		done
		info "got global lock"
	fi
}

# The VM's own lock, so that two jobs with different lock folders cannot back it up at once.
vm_lock() {
	local path=$opt_rundir/$vmid.vzdump.lock
	exec {vm_lock_fd}>&-
	{ exec {vm_lock_fd}>>"$path"; } 2>/dev/null || fail "can't open lock '$path'"
	flock -n "$vm_lock_fd" || fail "VM $vmid is locked (backup)"
}

# --- job level: which VMs, and what happens around each archive -----------------------------

# --all: every CONFDIR/VMID.conf, less the excluded ones (the command line's --exclude, or
# else vzdump.conf's).
select_guests() {
	[ "$opt_all" = 1 ] || return 0
	[ -d "$opt_confdir" ] || job_abort "config folder $opt_confdir does not exist"
	local f id excluded=" ${opt_exclude:-$conf_exclude} "
	for f in "$opt_confdir"/*.conf; do
		[ -f "$f" ] || continue
		id=${f##*/}
		id=${id%.conf}
		[[ $id =~ ^[1-9][0-9]{2,8}$ ]] || continue
		[[ $excluded != *" $id "* ]] || continue
		vmids+=("$id")
	done
}

# With --remove 0 and a finite policy, vzdump refuses a backup that would exceed the policy's
# count, before anything is done to the VM. Counts this VM's unprotected backups with
# standard names, full and incremental, as vzdump-prune lists them.
check_backup_limit() {
	[ "$opt_remove" = 0 ] && [ "$prune_keep_all" = 0 ] || return 0
	local json count
	json=$(vzdump-prune -n --json --vmid "$vmid" --keep-all "$opt_dumpdir" \
		2>"$private_dir/prune.err") ||
		fail "cannot list the backups in $opt_dumpdir: $(tail -n 1 "$private_dir/prune.err")"
	count=$(jq '[.[] | select(.mark == "keep")] | length' <<<"$json") ||
		fail "cannot list the backups in $opt_dumpdir"
	[ "$count" -lt "$prune_limit" ] ||
		fail "There is a max backup limit of $prune_limit enforced by the target storage or the vzdump parameters. Either increase the limit or delete old backups."
}

# Two backups of one VM in the same second would get the same names. The log is created first,
# empty, by vzdump-put -x: only a new name (no link, no file of anybody's), so of two jobs only
# one gets it; a finished archive or a .dat of that name (whose log is gone) also means the
# name is taken.
claim_backup_name() { # BASENAME
	local base=$opt_dumpdir/$1 taken='' ext out
	if ! out=$(put_file -x "$base.log" </dev/null 2>&1); then
		[[ $out == *": File exists" ]] || fail "cannot create $base.log (${out#vzdump-put: })"
		taken=$base.log
	else
		for ext in vma vma.gz vma.lzo vma.zst vma.bz2 vma.xz inc.vma inc.vma.gz inc.vma.lzo \
			inc.vma.zst inc.vma.bz2 inc.vma.xz dat; do
			if [ -e "$base.$ext" ] || [ -L "$base.$ext" ]; then
				taken=$base.$ext
				rm -f "$base.log"
				break
			fi
		done
	fi
	[ -z "$taken" ] ||
		fail "backup name '$1' is taken: $taken exists (another backup of VM $vmid in the same second?)"
}

# The archive's SHA-256 into archive_sum, as the writer took it from the bytes it wrote
# (vma-create --stats): the archive is not read again. Before the rename, so that an archive
# whose sum is missing never gets its final name.
writer_sha256() {
	archive_sum=$(jq -r '.sha256 // empty' "$private_dir/writer.json" 2>/dev/null) || archive_sum=
	[[ $archive_sum =~ ^[0-9a-f]{64}$ ]] ||
		fail "cannot read the archive's sha256 from the writer's figures $private_dir/writer.json"
}

# ARCHIVE.sha256 in sha256sum's format (`cd DUMPDIR && sha256sum -c ARCHIVE.sha256`), by
# vzdump-put (a temporary, then a rename; a link planted under the name is replaced, never
# followed). Written after the archive's rename, never before: a backup killed in between
# leaves a complete archive without a .sha256, never a .sha256 that describes no archive or
# another one. (Our names need none of sha256sum's escapes.)
write_sha256() { # ARCHIVE SUM
	local out
	out=$(printf '%s  %s\n' "$2" "${1##*/}" | put_file "$1.sha256" 2>&1) ||
		fail "cannot create $1.sha256 (${out#vzdump-put: })"
}

# After the rename, as vzdump does with a storage (we allow it with a dump folder): the notes,
# then the protection marker, both by vzdump-put (a link planted under the name is replaced,
# never followed). A failure of the notes is only a warning, of the marker fatal.
mark_backup() { # ARCHIVE
	local notes out
	if [ -n "$opt_notes" ]; then
		info "adding notes to backup"
		notes=$(expand_notes "$opt_notes"; echo .)
		notes=${notes%.}
		if [ -z "$notes" ]; then
			# (unlink never follows a link either.)
			rm -f "$1.notes" || warn "unable to add notes - cannot remove $1.notes"
		elif ! printf '%s' "$notes" | put_file "$1.notes" 2>/dev/null; then
			warn "unable to add notes - cannot write $1.notes"
		fi
	fi
	if [ "$opt_protected" = 1 ]; then
		info "marking backup as protected"
		out=$(put_file "$1.protected" </dev/null 2>&1) ||
			fail "cannot create $1.protected (${out#vzdump-put: })"
	fi
}

# Retention after a successful backup (the new archive counts), through vzdump-prune, with
# vzdump's log lines for a plain dump folder (removals in name order, as its glob lists them).
# The names removed are vzdump-prune's, never matched here: incremental archives (.inc.vma)
# go, or stay for a chain, as it decides.
prune_backups() {
	[ "$opt_remove" = 1 ] && [ "$prune_keep_all" = 0 ] || return 0
	local json file n=0
	info "prune older backups with retention: $prune_log"
	json=$(vzdump-prune --json --vmid "$vmid" --prune-backups "$prune_spec" "$opt_dumpdir" \
		2>"$private_dir/prune.err") ||
		fail "pruning failed: $(tail -n 1 "$private_dir/prune.err")"
	while IFS= read -r file; do
		[ -n "$file" ] || continue
		info "delete old backup '$opt_dumpdir/$file'"
		n=$((n + 1))
	done < <(jq -r '[.[] | select(.mark == "remove") | .file] | sort[]' <<<"$json")
	# An older backup that only stays because an incremental one builds on it, and what
	# vzdump-prune warned about (a chain without its full).
	while IFS= read -r file; do
		[ -z "$file" ] || info "keep backup '$opt_dumpdir/${file%% *}': needed by ${file#* }"
	done < <(jq -r '.[] | select(.needed_by) | "\(.file) \(.needed_by)"' <<<"$json")
	while IFS= read -r file; do
		[ -z "$file" ] || warn "${file#vzdump-prune: }"
	done <"$private_dir/prune.err"
	info "pruned $n backup(s) not covered by keep-retention policy"
}
