#!/bin/bash
# vzdump.sh: a point-in-time backup of running QEMU VMs into Proxmox VMA archives, on stock QEMU.
# QEMU's own backup job pushes each disk, through a copy-before-write snapshot whose scratch image
# is local ("fleecing"), into vma-create's NBD server over a socket handed over QMP. See
# man/vzdump.sh.1 for the conventions and the sequence.
#
# Structure: one function per vzdump phase; each VM is backed up in a subshell whose EXIT trap
# (cleanup) undoes what was recorded as done, in reverse. Nothing here evals data.
set -eu

PROG=vzdump.sh
QMP_TIMEOUT=${VZDUMP_QMP_TIMEOUT:-10}
# The longest the guest may stay frozen (gafreeze's watchdog thaws it then).
FREEZE_MAX=${VZDUMP_FREEZE_MAX:-10}
# Proxmox's node and archive name for the TPM state (see prepare_tpmstate).
TPM_NODE=drive-tpmstate0-backup

usage() {
	cat <<'END'
vzdump.sh [--dumpdir dir] [--tmpdir dir] [--confdir dir] [--rundir dir]
[--compress 0 | zstd | xz] [--zstd threads] [--bwlimit kib]
[--ionice priority] [--lockwait minutes] [--script hook] [--stdout]
[--mode snapshot | suspend | stop] [--stopwait minutes]
[--quiet] [--json] [--statedir dir]
[--prune-backups spec] [--remove 0 | 1] [--notes-template text] [--protected 0 | 1]
vmid ... | --all [--exclude vmid,...]
vzdump.sh --cleanup [--rundir dir] [--statedir dir] vmid ...
END
}

die_usage() {
	# A bad value in vzdump.conf: where it is, without the synopsis.
	if [ -n "$option_source" ]; then
		printf '%s: %s: %s\n' "$PROG" "$option_source" "$1" >&2
		exit 2
	fi
	printf '%s: %s\n' "$PROG" "$1" >&2
	printf 'usage: ' >&2
	usage >&2
	exit 2
}

# --- options ---------------------------------------------------------------------------------

opt_dumpdir=/var/lib/vz/dump
opt_tmpdir=/var/tmp
opt_confdir=${VZDUMP_CONFDIR:-/etc/vzdump/qemu-server}
opt_rundir=${VZDUMP_RUNDIR:-/run/qemu-server}
opt_compress=0
opt_zstd=
opt_bwlimit=0
opt_stdout=0
opt_quiet=0
opt_script=
opt_lockwait=180
opt_ionice=7
opt_json=0
opt_statedir=${VZDUMP_STATEDIR:-/run/vzdump}
opt_cleanup=0
opt_mode=snapshot
opt_stopwait=10
vmids=()
# Job level: --all/--exclude, retention, notes and protection (see select_guests,
# prune_backups, mark_backup).
opt_all=0
opt_exclude=
conf_exclude=
opt_remove=1
opt_notes=
opt_protected=0
prune_spec=      # the policy normalised for vzdump-prune, e.g. keep-daily=7,keep-last=3
prune_log=       # the same as vzdump logs it: keep-daily=7, keep-last=3
prune_keep_all=1 # no positive keep-* count, or keep-all=1: nothing is ever pruned
prune_limit=0    # the sum of the keep-* counts
# Where the option being set comes from when that is not the command line (vzdump.conf).
option_source=

# The options that take a value (as --name value or --name=value).
VALUE_OPTIONS=" --dumpdir --tmpdir --confdir --rundir --compress --zstd --bwlimit --script
 --lockwait --ionice --statedir --mode --stopwait --exclude --prune-backups --remove
 --notes-template --protected "
VALUE_OPTIONS=${VALUE_OPTIONS//$'\n'/}

# Whether the arguments ask for help (-h or --help as an option, not as an option's value):
# then vzdump.conf is not read, so that a broken one cannot stand in the way.
wants_help() {
	while [ $# -gt 0 ]; do
		case $1 in
		-h | --help) return 0 ;;
		--) return 1 ;;
		--*=*) ;;
		--*) [[ $VALUE_OPTIONS != *" $1 "* ]] || shift ;;
		esac
		[ $# -gt 0 ] && shift
	done
	return 1
}

parse_options() {
	local arg name value
	while [ $# -gt 0 ]; do
		arg=$1
		shift
		case $arg in
		-h | --help)
			usage
			exit 0
			;;
		--stdout) opt_stdout=1 ;;
		--quiet) opt_quiet=1 ;;
		--json) opt_json=1 ;;
		--cleanup) opt_cleanup=1 ;;
		--all) opt_all=1 ;;
		--)
			vmids+=("$@")
			break
			;;
		--*)
			name=${arg%%=*}
			[[ $VALUE_OPTIONS == *" $name "* ]] || die_usage "unknown option: $arg"
			if [ "$name" != "$arg" ]; then
				value=${arg#*=}
			else
				[ $# -gt 0 ] || die_usage "option $name needs a value"
				value=$1
				shift
			fi
			set_option "$name" "$value"
			;;
		-*) die_usage "unknown option: $arg" ;;
		*) vmids+=("$arg") ;;
		esac
	done
	if [ "$opt_all" = 1 ] && [ ${#vmids[@]} -gt 0 ]; then
		die_usage "$([ -n "$opt_exclude" ] && echo --exclude || echo --all) conflicts with a VMID list"
	fi
	[ ${#vmids[@]} -gt 0 ] || [ "$opt_all" = 1 ] || die_usage "no VMID given"
	if [ "$opt_stdout" = 1 ] && [ "$opt_all" = 1 ]; then
		die_usage "--stdout backs up exactly one VM"
	fi
	local id
	for id in "${vmids[@]}"; do
		[[ $id =~ ^[1-9][0-9]{2,8}$ ]] || die_usage "invalid VMID: $id (100 to 999999999)"
	done
	if [ "$opt_stdout" = 1 ] && [ ${#vmids[@]} -ne 1 ]; then
		die_usage "--stdout backs up exactly one VM"
	fi
	if [ "$opt_stdout" = 1 ] && [ "$opt_json" = 1 ]; then
		die_usage "--json and --stdout both want standard output"
	fi
	if [ "$opt_cleanup" = 1 ] && [ "$opt_stdout" = 1 ]; then
		die_usage "--cleanup writes no archive: --stdout makes no sense with it"
	fi
}

set_option() { # NAME VALUE
	case $1 in
	--dumpdir) opt_dumpdir=$2 ;;
	--tmpdir) opt_tmpdir=$2 ;;
	--confdir) opt_confdir=$2 ;;
	--rundir) opt_rundir=$2 ;;
	--statedir) opt_statedir=$2 ;;
	--compress)
		case $2 in
		0 | zstd | xz) opt_compress=$2 ;;
		*) die_usage "--compress must be 0, zstd or xz, not '$2'" ;;
		esac
		;;
	--zstd)
		[[ $2 =~ ^[0-9]{1,3}$ ]] || die_usage "--zstd needs a number of threads, not '$2'"
		opt_zstd=$2
		;;
	--ionice)
		[[ $2 =~ ^[0-8]$ ]] || die_usage "--ionice needs a priority from 0 to 8, not '$2'"
		opt_ionice=$2
		;;
	--lockwait)
		[[ $2 =~ ^[0-9]{1,6}$ ]] || die_usage "--lockwait needs minutes as a number, not '$2'"
		opt_lockwait=$((10#$2))
		;;
	--script)
		if [ ! -f "$2" ] || [ ! -x "$2" ]; then
			die_usage "the hook script '$2' is not an executable file"
		fi
		# Absolute: the hook runs with an empty environment, so no PATH lookup.
		opt_script=$(realpath -- "$2")
		;;
	--bwlimit)
		[[ $2 =~ ^[0-9]{1,12}$ ]] || die_usage "--bwlimit needs KiB/s as a number, not '$2'"
		opt_bwlimit=$((10#$2))
		;;
	--exclude)
		opt_exclude=$(parse_vmid_list "$2") || exit 2
		opt_all=1
		;;
	--prune-backups) parse_prune_spec "$2" ;;
	--remove) opt_remove=$(parse_bool --remove "$2") || exit 2 ;;
	--protected) opt_protected=$(parse_bool --protected "$2") || exit 2 ;;
	--notes-template)
		check_notes_template "$2"
		opt_notes=$2
		;;
	--mode)
		case $2 in
		snapshot | suspend | stop) opt_mode=$2 ;;
		*) die_usage "--mode must be snapshot, suspend or stop, not '$2'" ;;
		esac
		;;
	--stopwait)
		[[ $2 =~ ^[0-9]{1,6}$ ]] || die_usage "--stopwait needs minutes as a number, not '$2'"
		opt_stopwait=$((10#$2))
		;;
	*) return 1 ;;
	esac
}

# --- job-level option values ------------------------------------------------------------------

# A pve-vmid-list (VMIDs separated by commas, semicolons or spaces), printed space-separated.
parse_vmid_list() { # LIST
	local id out=
	local -a ids
	IFS=',; ' read -r -a ids <<<"$1"
	[ ${#ids[@]} -gt 0 ] || die_usage "--exclude needs a list of VMIDs"
	for id in "${ids[@]}"; do
		[[ $id =~ ^[1-9][0-9]{2,8}$ ]] || die_usage "--exclude: invalid VMID: $id (100 to 999999999)"
		out+=" $id"
	done
	printf '%s\n' "${out# }"
}

# Proxmox's boolean values; prints 1 or 0.
parse_bool() { # OPTION VALUE
	case ${2,,} in
	1 | on | yes | true) echo 1 ;;
	0 | off | no | false) echo 0 ;;
	*) die_usage "$1 must be 0 or 1, not '$2'" ;;
	esac
}

# prune-backups as Proxmox validates it (spec §4.1): keep-all=BOOL and keep-last ... keep-yearly
# as counts; keep-all=1 with a positive count is an error; no positive count means keep-all.
# Sets prune_spec, prune_log, prune_keep_all and prune_limit.
parse_prune_spec() { # SPEC
	local item key value seen=' ' positive=0 keep_all=0 sum=0
	local -a items pairs=()
	IFS=, read -r -a items <<<"$1"
	[ ${#items[@]} -gt 0 ] || die_usage "--prune-backups needs keep-N=COUNT,... or keep-all=1"
	for item in "${items[@]}"; do
		[[ $item == *=* ]] || die_usage "--prune-backups: '$item' is not key=value"
		key=${item%%=*}
		value=${item#*=}
		case $seen in *" $key "*) die_usage "--prune-backups: duplicate key '$key'" ;; esac
		seen+="$key "
		case $key in
		keep-all)
			value=$(parse_bool "--prune-backups keep-all" "$value") || exit 2
			keep_all=$value
			;;
		keep-last | keep-hourly | keep-daily | keep-weekly | keep-monthly | keep-yearly)
			[[ $value =~ ^[0-9]{1,10}$ ]] ||
				die_usage "--prune-backups: $key needs a count, not '$value'"
			value=$((10#$value))
			[ "$value" = 0 ] || positive=1
			sum=$((sum + value))
			;;
		*) die_usage "--prune-backups: unknown key '$key'" ;;
		esac
		pairs+=("$key=$value")
	done
	if [ "$keep_all" = 1 ] && [ "$positive" = 1 ]; then
		die_usage "--prune-backups: keep-all cannot be set together with other options"
	fi
	mapfile -t pairs < <(printf '%s\n' "${pairs[@]}" | LC_ALL=C sort)
	prune_spec=$(IFS=,; echo "${pairs[*]}")
	prune_log=${prune_spec//,/, }
	prune_limit=$sum
	prune_keep_all=$((keep_all == 1 || positive == 0 ? 1 : 0))
}

# The notes template as vzdump checks it (spec §3.3): one line of at most 1024 characters,
# the variables {{cluster}}, {{guestname}}, {{node}} and {{vmid}}, the escapes \n and \\.
check_notes_template() { # TEMPLATE
	local t=$1 i c rest
	[[ $t != *$'\n'* ]] || die_usage "--notes-template contains a line feed"
	[ ${#t} -le 1024 ] || die_usage "--notes-template is longer than 1024 characters"
	for ((i = 0; i < ${#t}; i++)); do
		c=${t:i:1}
		rest=${t:i}
		if [ "$c" = "\\" ] && [ -n "${t:i+1:1}" ]; then
			case ${t:i+1:1} in
			n | "\\") i=$((i + 1)) ;;
			*) die_usage "--notes-template: unknown escape sequence '\\${t:i+1:1}' at char $i" ;;
			esac
		elif [[ $rest =~ ^\{\{([^[:space:]{}]+)\}\} ]]; then
			case ${BASH_REMATCH[1]} in
			cluster | guestname | node | vmid) ;;
			*) die_usage "--notes-template: unknown variable '{{${BASH_REMATCH[1]}}}' at char $i" ;;
			esac
			i=$((i + ${#BASH_REMATCH[0]} - 1))
		fi
	done
}

# The notes of this VM's backup: escapes and variables expanded in one pass from the left,
# so that a value is never expanded again.
expand_notes() { # TEMPLATE
	local t=$1 i c rest out='' node
	node=$(uname -n)
	node=${node%%.*}
	for ((i = 0; i < ${#t}; i++)); do
		c=${t:i:1}
		rest=${t:i}
		if [ "$c" = "\\" ] && [ "${t:i+1:1}" = n ]; then
			out+=$'\n'
			i=$((i + 1))
		elif [ "$c" = "\\" ] && [ "${t:i+1:1}" = "\\" ]; then
			out+="\\"
			i=$((i + 1))
		elif [[ $rest =~ ^\{\{(cluster|guestname|node|vmid)\}\} ]]; then
			case ${BASH_REMATCH[1]} in
			cluster) out+='standalone node' ;;
			guestname) out+=${vm_name:-VM $vmid} ;;
			node) out+=$node ;;
			vmid) out+=$vmid ;;
			esac
			i=$((i + ${#BASH_REMATCH[0]} - 1))
		else
			out+=$c
		fi
	done
	printf '%s' "$out"
}

# /etc/vzdump.conf (or $VZDUMP_CONF): defaults in vzdump's `key: value` syntax, the keys being
# the option names without dashes; read before the command line, which therefore wins. As
# vzdump does, a key it does not know is a warning; a bad value is an error. Its exclude
# applies to --all only (as a command-line --exclude, it would conflict with a VMID list).
vzdump_conf=${VZDUMP_CONF:-/etc/vzdump.conf}
conf_warnings=()
read_vzdump_conf() {
	local file=$vzdump_conf line key value n=0
	[ -e "$file" ] || return 0
	option_source=$file
	if [ ! -f "$file" ] || [ ! -r "$file" ]; then
		die_usage "cannot read the file"
	fi
	while IFS= read -r line || [ -n "$line" ]; do
		n=$((n + 1))
		line=${line#"${line%%[! $'\t']*}"}
		line=${line%"${line##*[! $'\t'$'\r']}"}
		case $line in '' | '#'*) continue ;; esac
		option_source="$file line $n"
		if ! [[ $line =~ ^([^[:space:]:]+):[[:space:]]*(.*)$ ]]; then
			conf_warnings+=("$option_source: ignoring '$line' (not 'key: value')")
			continue
		fi
		key=${BASH_REMATCH[1]}
		value=${BASH_REMATCH[2]}
		case $key in
		exclude) conf_exclude=$(parse_vmid_list "$value") || exit 2 ;;
		*)
			set_option "--$key" "$value" ||
				conf_warnings+=("$option_source: ignoring unknown or unsupported key '$key'")
			;;
		esac
	done <"$file"
	option_source=
}

# --- logging ---------------------------------------------------------------------------------
# stderr gets `INFO: msg` as vzdump's task log; the per-VM log file gets a timestamp in front.

logfile=
# The log's own copy of stderr: a signal trap can run while a function's stderr is redirected
# (to /dev/null, say), and the error must still be seen.
log_fd=2

# Logging never fails: a full dump folder or a closed stderr must not cut a cleanup short.
log() { # LEVEL MESSAGE
	# stdout is pointed at the log first, then printf's own complaint goes nowhere.
	# shellcheck disable=SC2261
	printf '%s: %s\n' "$1" "$2" >&"$log_fd" 2>/dev/null || true
	if [ -n "$logfile" ]; then
		printf '%s %s: %s\n' "$(date '+%F %T')" "$1" "$2" 2>/dev/null >>"$logfile" || true
	fi
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
hook_pid=
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
		env -i "${env[@]}" "$opt_script" "${args[@]}" </dev/null >"$private_dir/hook.out" 2>&1 \
			{global_lock_fd}>&- {vm_lock_fd}>&- &
		hook_pid=$!
		wait "$hook_pid" || rc=$?
		hook_pid=
		out=$(cat "$private_dir/hook.out")
	else
		out=$(env -i "${env[@]}" "$opt_script" "${args[@]}" </dev/null 2>&1 \
			{global_lock_fd}>&- {vm_lock_fd}>&-) || rc=$?
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

now_ms() { date +%s%3N; }

# --- QMP -------------------------------------------------------------------------------------

qmp() { qmpctl -s "$qmp_sock" -t "$QMP_TIMEOUT" "$@" {global_lock_fd}>&- {vm_lock_fd}>&-; }

# Whether QEMU still listens on its QMP socket. A busy monitor still accepts connections
# (it serves one client at a time), so only a dead QEMU fails this; qmpctl alone cannot tell,
# as it retries a refused connect until its deadline.
qemu_alive() {
	local path
	path=$(realpath -e -- "$qmp_sock" 2>/dev/null) || return 1
	[ -n "$(ss -xlnH src "$path" 2>/dev/null)" ] && return 0
	# A socket QEMU bound by a relative path is listed under that path: ask QEMU itself.
	qmpctl -s "$qmp_sock" -t 2 query-status >/dev/null 2>&1
}

# True when a line of qmpctl -k output is an error object.
is_error_line() { case $1 in '{"error":'*) return 0 ;; esac; return 1; }

# --- the undo record -------------------------------------------------------------------------
# Each step is recorded *before* it is attempted, as the QMP command that undoes it (or a
# pseudo-command). The teardown and cleanup run the record in reverse with qmpctl -k, so an
# undo of a step that never took effect just gets an error reply, which is ignored on the
# failure path.

undo=()
we_paused=0  # we sent `stop`; cont must follow whatever happens
writer_pid=  # vma-create --listen
job_ids=()   # backup jobs started in QEMU

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
# A backup that ends, well or not, removes its file; a file whose owner is gone is recovered
# by the next job for the VM or by --cleanup (recover_state).

state_file=
state() { # RECORD
	[ -n "$state_file" ] || return 0
	printf '%s\n' "$1" >>"$state_file" 2>/dev/null || warn "cannot write the state file $state_file"
}

# The start time of process PID (field 22 of /proc/PID/stat), which tells a live owner from
# a new process that got the same pid.
proc_start() { # PID
	local stat
	local -a fields
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	# The command name in parentheses may hold spaces: the fields after it are plain.
	read -r -a fields <<<"${stat##*) }"
	[ -n "${fields[19]:-}" ] || return 1
	printf '%s\n' "${fields[19]}"
}

# A zombie (killed, its parent gone, not yet reaped by init) counts as gone.
proc_alive() { # PID START
	local stat
	local -a fields
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	read -r -a fields <<<"${stat##*) }"
	[ "${fields[0]:-}" != Z ] && [ "${fields[19]:-}" = "$2" ]
}

state_proc() { # PID NAME
	state "proc $1 $(proc_start "$1" || echo 0) $2"
}

# Starts the VM's state file, after first recovering a stale one of an earlier backup that
# was killed. Called with the VM's lock held, before anything is done to the VM.
state_begin() {
	[ -d "$opt_statedir" ] || mkdir -m 0700 "$opt_statedir" 2>/dev/null ||
		fail "cannot create the state folder $opt_statedir"
	local file=$opt_statedir/$vmid.state
	if [ -e "$file" ]; then
		recover_state "$file" || fail "$recover_error"
	fi
	state_file=$file
	# This process, named outside the subshell and the command substitution below (each has
	# a $BASHPID of its own, gone at once: another job would take the owner for dead).
	local owner=$BASHPID owner_start
	owner_start=$(proc_start "$owner")
	# noclobber: two jobs with different lock folders must not share one state file.
	if ! (set -C && printf 'owner %s %s\n' "$owner" "$owner_start" >"$file") 2>/dev/null; then
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
	pid=$(ss -xlpnH src "$path" 2>/dev/null | sed -n 's/.*users:(("[^"]*",pid=\([0-9]*\),.*/\1/p' | head -n 1)
	[ -n "$pid" ] || return 0
	printf '%s:%s\n' "$pid" "$(proc_start "$pid" || true)"
}

state_end() {
	[ -n "$state_file" ] || return 0
	rm -f "$state_file"
	state_file=
}

# Undoes what the state FILE says a killed backup left behind: cont if it had paused the VM,
# thaw if it had frozen the guest, stop its writer, run its undo record, sweep any of our
# nodes and jobs still in QEMU, and remove its .dat and private folder. Fails (with
# recover_error) only when the owner still runs.
recover_error=
recover_state() { # FILE
	local file=$1 key rest owner='' start='' r_qmp='' r_qga='' r_tmp='' r_dat='' r_log='' frozen=0
	local p pid pstart name blocks was_shutdown=0 i r_qemu='' same=1 status r_final=
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
		esac
	done <"$file"
	if [ -n "$owner" ] && proc_alive "$owner" "$start"; then
		undo=() job_ids=()
		we_paused=0
		recover_error="a backup of VM $vmid is still running (pid $owner)"
		return 1
	fi
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
			for ((i = 0; i < 100; i++)); do
				status=$(qemu_status)
				[ "$status" = shutdown ] || break
				sleep 0.1
			done
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
	else
		undo=() job_ids=()
	fi
	job_ids=()
	if [ -n "$r_dat" ]; then
		# With the .dat, the temporary file vma-create writes it as (.NAME.tmp.PID).
		rm -f "$r_dat" "$(dirname -- "$r_dat")/.$(basename -- "$r_dat").tmp."*
	fi
	# Killed after the rename (during pruning, say): the backup failed, so no archive.
	[ -z "$r_final" ] || rm -f "$r_final" "$r_final.notes" "$r_final.protected"
	if [ -n "$r_log" ] && [ -f "$r_log" ]; then
		printf '%s ERROR: Backup of VM %s failed - the backup process was killed (cleaned up by pid %s)\n' \
			"$(date '+%F %T')" "$vmid" "$$" >>"$r_log" || true
	fi
	case $r_tmp in */vzdumptmp.*) rm -rf "$r_tmp" ;; esac
	rm -f "$file"
	qmp_sock=$saved_qmp
	return 0
}

# SIGTERM, then SIGKILL after 5 s, to a process that is not our child.
stop_process() { # PID START
	local i
	kill -TERM "$1" 2>/dev/null || return 0
	for ((i = 0; i < 50; i++)); do
		proc_alive "$1" "$2" || return 0
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
}

swept=0
# Removes from QEMU what carries our names (jobs vzdump-drive-*, nodes vz-tgt-*, vz-acc-*,
# vz-cbw-*, vz-fl-* and drive-tpmstate0-backup) even with no state file to tell: a device
# still on one of our filters gets its own node back first. The fdsets of our scratch nodes
# are found through the nodes' /dev/fdset/N file names.
sweep_leftovers() {
	local jobs nodes graph batch id ours
	nodes=$(qmp query-named-block-nodes flat=true 2>/dev/null) || return 0
	jobs=$(qmp query-jobs 2>/dev/null) || return 0
	# shellcheck disable=SC2016 # jq variables
	ours=$(jq -n --argjson nodes "$nodes" --argjson jobs "$jobs" --arg tpm "$TPM_NODE" '
		[$jobs[] | select(.id | startswith("vzdump-drive-"))] + [$nodes[]
		| select(.["node-name"] | test("^vz-(tgt|acc|cbw|fl)-") or . == $tpm)] | length')
	[ "$ours" != 0 ] || return 0
	swept=1
	info "found leftovers of an earlier backup in QEMU - removing them"
	while IFS= read -r id; do
		[ -n "$id" ] || continue
		qmp job-cancel "id=$id" >/dev/null 2>&1 || true
	done < <(jq -r '.[] | select(.id | startswith("vzdump-drive-")) | select(.status != "concluded") | .id' <<<"$jobs")
	local i pending
	for ((i = 0; i < 100; i++)); do
		pending=$(qmp query-jobs 2>/dev/null | jq -r '[.[] | select(.id | startswith("vzdump-drive-"))
			| select(.status != "concluded")] | length') || break
		[ "$pending" != 0 ] || break
		sleep 0.1
	done
	graph=$(qmp x-debug-query-block-graph 2>/dev/null) || graph='{"nodes":[],"edges":[]}'
	blocks=$(qmp query-block 2>/dev/null) || blocks='[]'
	jobs=$(qmp query-jobs 2>/dev/null) || jobs='[]'
	# shellcheck disable=SC2016 # jq variables
	batch=$(jq -nr --argjson nodes "$nodes" --argjson jobs "$jobs" --argjson graph "$graph" \
		--argjson blocks "$blocks" --arg tpm "$TPM_NODE" '
		def byname($n): $graph.nodes[] | select(.name == $n) | .id;
		def child($id): [$graph.edges[] | select(.parent == $id and .name == "file") | .child][0];
		def nameof($id): [$graph.nodes[] | select(.id == $id) | .name][0];
		def named($re): $nodes[] | .["node-name"] | select(test($re));
		($jobs[] | select(.id | startswith("vzdump-drive-"))
		 | {execute: "job-dismiss", arguments: {id: .id}}),
		(named("^vz-tgt-") | {execute: "blockdev-del", arguments: {"node-name": .}}),
		(named("^vz-acc-") | {execute: "blockdev-del", arguments: {"node-name": .}}),
		($blocks[] | select(.qdev and ((.inserted["node-name"] // "") | startswith("vz-cbw-")))
		 | {execute: "qom-set", arguments: {path: .qdev, property: "drive",
			value: nameof(child(byname(.inserted["node-name"])))}}),
		(named("^vz-cbw-") | {execute: "blockdev-del", arguments: {"node-name": .}}),
		([$nodes[] | select(.["node-name"] | test("^vz-fl-")) | .file
		  | capture("^/dev/fdset/(?<n>[0-9]+)$").n | tonumber] as $sets
		 | (named("^vz-fl-") | {execute: "blockdev-del", arguments: {"node-name": .}}),
		   ($sets[] | {execute: "remove-fd", arguments: {"fdset-id": .}})),
		(named("^" + $tpm + "$") | {execute: "blockdev-del", arguments: {"node-name": .}})
		| tojson') || return 0
	[ -z "$batch" ] || qmp -k -f - <<<"$batch" >/dev/null 2>&1 || true
}

# Cancels our jobs that have not concluded and waits (bounded) until they have.
cancel_jobs() {
	local i ids
	[ ${#job_ids[@]} -gt 0 ] || return 0
	ids=$(printf '%s\n' "${job_ids[@]}" | jq -Rsc 'split("\n") | map(select(. != ""))')
	for ((i = 0; i < 300; i++)); do
		local running
		running=$(qmp query-jobs 2>/dev/null | jq -r --argjson ids "$ids" \
			'.[] | select(.id as $i | $ids | index($i)) | select(.status != "concluded") | .id') ||
			return 1
		[ -n "$running" ] || return 0
		if [ "$i" = 0 ]; then
			local id
			while IFS= read -r id; do
				qmp job-cancel "id=$id" >/dev/null 2>&1 || true
			done <<<"$running"
		fi
		sleep 0.1
	done
	return 1
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
	jq -e --argjson c "$2" '$c.arguments as $a
		| [.[] | select(.qdev == $a.path) | .inserted["node-name"] // empty] | first
		| . != null and . != $a.value' <<<"$1" >/dev/null 2>&1
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

stop_writer() {
	[ -n "$writer_pid" ] || return 0
	kill -TERM "$writer_pid" 2>/dev/null || true
	wait "$writer_pid" 2>/dev/null || true
	writer_pid=
}

# After gafreeze's thaw failed (exit 4), one more try; if the guest still does not thaw, the
# state file stays behind for --cleanup and the next job, and the log says so.
maybe_frozen=0
thaw_again() {
	[ "$maybe_frozen" = 1 ] || return 0
	if gafreeze -s "$qga_sock" -t 10 thaw >/dev/null 2>&1 {global_lock_fd}>&- {vm_lock_fd}>&-; then
		maybe_frozen=0
		state thawed
		info "guest filesystems thawed on a second try"
		return 0
	fi
	log ERROR "the guest may still be frozen: vzdump.sh --cleanup $vmid (or gafreeze -s $qga_sock thaw) thaws it once its agent answers"
}

# The EXIT trap of each VM's subshell: undo whatever was recorded, in reverse.
cleanup() {
	local status=$?
	# Whatever fails or arrives now, the cleanup runs to its end: no set -e, and a further
	# signal (a second Ctrl-C, systemd's TERM to the whole group) is noted, not obeyed.
	set +e
	trap - EXIT
	trap 'failure=${failure:-interrupted by signal}' INT TERM HUP
	if [ -n "$hook_pid" ]; then
		kill -TERM "$hook_pid" 2>/dev/null || true
		wait "$hook_pid" 2>/dev/null || true
		hook_pid=
	fi
	if [ "$status" != 0 ]; then
		# The writer goes first: running jobs then end with an I/O error instead of copying on.
		stop_writer
		if qemu_alive; then
			run_undo lax || true
		elif [ ${#undo[@]} -gt 0 ]; then
			warn "QEMU is gone: its block graph needs no undo"
		fi
		stop_nbd
		restore_power_state
		thaw_again
		# With the .dat, the temporary file a killed writer left (.NAME.tmp.PID, see
		# recover_state).
		[ -z "$tmp_archive" ] || rm -f "$tmp_archive" \
			"$(dirname -- "$tmp_archive")/.$(basename -- "$tmp_archive").tmp."*
		# Interrupted once the archive was renamed (the signal came during the rename or
		# after): an interrupted backup leaves no archive, as one interrupted earlier.
		if [ -n "$final_archive" ] && [ "$failure" = "interrupted by signal" ]; then
			rm -f "$final_archive" "$final_archive.notes" "$final_archive.protected"
			final_archive=
		fi
		log ERROR "Backup of VM $vmid failed - ${failure:-exit status $status}"
		info "Failed at $(date '+%F %T')"
		[ -z "$vmid" ] || run_hook backup-abort vm || warn "$hook_error"
	fi
	record_result "$status"
	# The log is complete: log-end's output goes to the task log only.
	logfile=
	[ -z "$vmid" ] || run_hook log-end vm || warn "$hook_error"
	[ -z "$private_dir" ] || rm -rf "$private_dir"
	# A guest that may still be frozen keeps its state file: --cleanup or the next job thaws.
	[ "$maybe_frozen" = 1 ] || state_end
	exit "$status"
}

# One JSON line per VM for --json, appended to the job's results file.
record_result() { # EXIT-STATUS
	[ -n "$results" ] || return 0
	local size=null
	[ -z "$final_archive" ] || size=$(stat -c %s "$final_archive" 2>/dev/null) || size=null
	jq -nc --argjson vmid "$vmid" --arg status "$([ "$1" = 0 ] && echo ok || echo error)" \
		--arg archive "$final_archive" --argjson size "$size" \
		--argjson start "${backup_start:-null}" --argjson finish "$(date +%s)" \
		--argjson frozen "${frozen_ms:-null}" --argjson snap "${snapshot_ms:-null}" \
		--arg error "$([ "$1" = 0 ] || echo "${failure:-exit status $1}")" \
		'{vmid: $vmid, status: $status,
		  archive: (if $archive == "" then null else $archive end), size: $size,
		  start: $start, "end": $finish, frozen_ms: $frozen, snapshot_ms: $snap,
		  error: (if $error == "" then null else $error end)}' >>"$results" || true
}

# --- phases ----------------------------------------------------------------------------------

# Reads CONFDIR/VMID.conf (qemu-server.conf syntax) into the globals below; only the main
# section, up to the first [section], describes the running VM.
vm_name=
agent_enabled=0
agent_freeze=1
bios=
conf_file=
conf_disks=() # KEY<US>VOLUME<US>OPTIONS of every disk line
read_config() {
	local line key value
	conf_file=$opt_confdir/$vmid.conf
	if [ ! -e "$conf_file" ]; then
		conf_file=
		return 0
	fi
	[ -r "$conf_file" ] || fail "cannot read $conf_file"
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in
		'['*) break ;;
		'#'* | '') continue ;;
		esac
		key=${line%%:*}
		[ "$key" != "$line" ] || continue
		value=${line#*:}
		value=${value#"${value%%[! ]*}"}
		case $key in
		name) vm_name=$value ;;
		bios) bios=$value ;;
		agent) parse_agent "$value" ;;
		ide[0-3] | sata[0-5] | scsi[0-9] | scsi[12][0-9] | scsi30 | virtio[0-9] | virtio1[0-5] | \
			efidisk0 | tpmstate0)
			conf_disks+=("$key"$'\x1f'"$value")
			;;
		esac
	done <"$conf_file"
}

# agent: 1 | 0 | [enabled=]1,freeze-fs=0,... (freeze-fs-on-backup is the old name)
parse_agent() { # VALUE
	local item
	local -a items
	IFS=, read -r -a items <<<"$1"
	for item in "${items[@]}"; do
		case $item in
		1 | enabled=1) agent_enabled=1 ;;
		0 | enabled=0) agent_enabled=0 ;;
		freeze-fs=0 | freeze-fs-on-backup=0) agent_freeze=0 ;;
		freeze-fs=1 | freeze-fs-on-backup=1) agent_freeze=1 ;;
		esac
	done
}

# The first item of a drive's property string is its volume (or file=VOLUME anywhere).
drive_volume() { # VALUE
	local item
	local -a items
	IFS=, read -r -a items <<<"$1"
	for item in "${items[@]}"; do
		case $item in
		file=*)
			printf '%s\n' "${item#file=}"
			return
			;;
		esac
	done
	printf '%s\n' "${items[0]:-}"
}

drive_has() { # VALUE OPTION=VALUE
	local item
	local -a items
	IFS=, read -r -a items <<<"$1"
	for item in "${items[@]:1}"; do
		[ "$item" != "$2" ] || return 0
	done
	return 1
}

# Disks to back up, in vzdump's order (drive keys sorted as strings):
# KEY, VOLUME, NODE (QEMU node name), QDEV (device path for qom-set), SIZE, FORMAT.
disks=()

# Finds config disks in QEMU, or, with no config, takes every disk QEMU has.
prepare() {
	local blocks
	blocks=$(qmp query-block) || fail "query-block failed"
	if [ -n "$conf_file" ]; then
		prepare_from_config "$blocks"
	else
		prepare_from_qemu "$blocks"
	fi
	# As vzdump does, a VM without disks gets an archive with just its config.
	[ ${#disks[@]} -gt 0 ] || info "backup contains no disks"
	local d key vol node qdev size fmt
	for d in "${disks[@]}"; do
		IFS=$'\x1f' read -r key vol node qdev size fmt <<<"$d"
		info "include disk '$key' '$vol' $(format_disk_size "$size")"
	done
}

# The jq program that finds a config disk KEY with volume PATH among query-block's entries:
# drive id or node name drive-KEY, else qdev id KEY, else the image file PATH.
# shellcheck disable=SC2016 # jq variables
find_block_jq='
	def qid: (.qdev // "") | if startswith("/machine/peripheral/")
		then split("/")[3] else . end;
	[.[] | select(.inserted)] as $b
	| ([$b[] | select(.device == "drive-" + $k or .inserted["node-name"] == "drive-" + $k)]
	  + [$b[] | select(qid == $k)]
	  + [$b[] | select(.inserted.file == $p or .inserted.file == $rp)])
	| first // empty
	| [.inserted["node-name"], (.qdev // ""), (.inserted.image["virtual-size"] | tostring),
	   .inserted.drv] | join("\u001f")'

# The config's disks to back up, in vzdump's order (keys sorted as strings), as lines
# KEY<US>VOLUME<US>VALUE: CD-ROMs left out, the excluded ones logged as vzdump does.
included_config_disks() {
	local entry key value vol sorted
	[ ${#conf_disks[@]} -gt 0 ] || return 0
	sorted=$(printf '%s\n' "${conf_disks[@]}" | LC_ALL=C sort -t $'\x1f' -k1,1)
	while IFS= read -r entry; do
		[ -n "$entry" ] || continue
		key=${entry%%$'\x1f'*}
		value=${entry#*$'\x1f'}
		vol=$(drive_volume "$value")
		if drive_has "$value" media=cdrom || [ "$vol" = none ]; then
			continue
		fi
		if drive_has "$value" backup=0 || drive_has "$value" backup=no; then
			info "exclude disk '$key' '$vol' (backup=no)"
			continue
		fi
		if [ "$key" = efidisk0 ] && [ "$bios" != ovmf ]; then
			info "exclude disk '$key' '$vol' (efidisk but no OVMF BIOS)"
			continue
		fi
		printf '%s\x1f%s\x1f%s\n' "$key" "$vol" "$value"
	done <<<"$sorted"
}

prepare_from_config() { # QUERY-BLOCK-JSON
	local key value vol found node qdev size fmt rp used=' '
	while IFS=$'\x1f' read -r key vol value; do
		if [ "$key" = tpmstate0 ]; then
			prepare_tpmstate "$vol" "$value"
			continue
		fi
		rp=$(realpath -m -- "$vol" 2>/dev/null) || rp=$vol
		found=$(jq -r --arg k "$key" --arg p "$vol" --arg rp "$rp" "$find_block_jq" <<<"$1")
		[ -n "$found" ] || fail "disk '$key' ($vol) not found in the running QEMU: give its node or drive the name 'drive-$key' (-blockdev ...,node-name=drive-$key) or its device the id '$key' (-device ...,id=$key)"
		IFS=$'\x1f' read -r node qdev size fmt <<<"$found"
		[ -n "$qdev" ] || fail "disk '$key': QEMU node '$node' is not attached to a device"
		case $used in *" $node "*) fail "disk '$key': QEMU node '$node' is already used by another config disk" ;; esac
		used+="$node "
		disks+=("$key"$'\x1f'"$vol"$'\x1f'"$node"$'\x1f'"$qdev"$'\x1f'"$size"$'\x1f'"$fmt")
	done < <(included_config_disks)
}

# swtpm, not QEMU, has the TPM state file open, so (as Proxmox does) it is attached to QEMU
# read-only as its own node drive-tpmstate0-backup, stored under that name, and copied from
# that node directly: no device writes it through QEMU, so it needs no copy-before-write.
prepare_tpmstate() { # VOLUME VALUE
	local vol=$1 size
	[ -e "$vol" ] || fail "disk 'tpmstate0': $vol does not exist"
	size=$(qemu-img info -U -f raw --output=json -- "$vol" 2>/dev/null | jq -r '.["virtual-size"]') ||
		fail "disk 'tpmstate0': cannot read the size of $vol"
	[[ $size =~ ^[0-9]+$ ]] || fail "disk 'tpmstate0': cannot read the size of $vol"
	disks+=("tpmstate0"$'\x1f'"$vol"$'\x1f'"$TPM_NODE"$'\x1f'$'\x1f'"$size"$'\x1f'raw)
}

# No config: every disk with a device (CD-ROMs and empty drives left out). The key comes from
# a drive-KEY name or a KEY qdev id when there is one, else virtioN or scsiN by device kind.
prepare_from_qemu() { # QUERY-BLOCK-JSON
	local list line key node qdev size fmt file nv=0 ns=0 generated=
	# shellcheck disable=SC2016 # jq variables
	list=$(jq -r '
		def qid: (.qdev // "") | if startswith("/machine/peripheral/")
			then split("/")[3] else . end;
		def diskkey: test("^(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5])|efidisk0)$");
		.[] | select(.inserted and (.qdev // "") != "" and .type != "cdrom"
			and (.inserted.ro | not))
		| ([.device, .inserted["node-name"]] | map(select(startswith("drive-")) | ltrimstr("drive-"))
			| map(select(diskkey)) | first) as $named
		| [($named // (qid | select(diskkey)) // ""),
		   .inserted["node-name"], .qdev, (.inserted.image["virtual-size"] | tostring),
		   .inserted.drv, (.inserted.file // "")] | join("\u001f")' <<<"$1") ||
		fail "cannot read query-block"
	local -a found=()
	while IFS=$'\x1f' read -r key node qdev size fmt file; do
		[ -n "$node" ] || continue
		if [ -z "$key" ]; then
			case $qdev in
			*/virtio-backend)
				while [[ " $generated " == *" virtio$nv "* ]]; do nv=$((nv + 1)); done
				key=virtio$nv
				;;
			*)
				while [[ " $generated " == *" scsi$ns "* ]]; do ns=$((ns + 1)); done
				key=scsi$ns
				;;
			esac
		fi
		generated+=" $key"
		found+=("$key"$'\x1f'"$file"$'\x1f'"$node"$'\x1f'"$qdev"$'\x1f'"$size"$'\x1f'"$fmt")
	done <<<"$list"
	[ ${#found[@]} -gt 0 ] || return 0
	mapfile -t disks < <(printf '%s\n' "${found[@]}" | LC_ALL=C sort -t $'\x1f' -k1,1)
}

# The qemu-server.conf stored in the archive, as vzdump's assemble writes it.
assemble() {
	local out=$private_dir/qemu-server.conf line key d vol node qdev size fmt store
	: >"$out"
	if [ -n "$conf_file" ]; then
		while IFS= read -r line || [ -n "$line" ]; do
			case $line in
			'#vzdump#'* | '#qmdump#'*) continue ;;
			'[PENDING]'*)
				info "pending configuration changes found (not included into backup)"
				break
				;;
			'[special:'*)
				info "special config section found (not included into backup)"
				break
				;;
			'['*)
				info "snapshots found (not included into backup)"
				break
				;;
			esac
			key=${line%%:*}
			case $key in
			unused[0-9]*)
				vol=${line#*:}
				vol=${vol#"${vol%%[! ]*}"}
				info "skip unused drive '$vol' (not included into backup)"
				continue
				;;
			lock | parent) continue ;;
			esac
			printf '%s\n' "$line" >>"$out"
		done <"$conf_file"
	else
		printf 'name: vm%s\n' "$vmid" >>"$out"
		for d in "${disks[@]}"; do
			IFS=$'\x1f' read -r key vol node qdev size fmt <<<"$d"
			printf '%s: %s,size=%s\n' "$key" "${vol:-drive-$key}" "$(format_disk_size "$size")" >>"$out"
		done
	fi
	for d in "${disks[@]}"; do
		IFS=$'\x1f' read -r key vol node qdev size fmt <<<"$d"
		store=
		case $vol in /*) ;; *:*) store=${vol%%:*} ;; esac
		case $fmt in raw | qcow2 | vmdk | qed | vpc | vdi) ;; *) fmt= ;; esac
		printf '#qmdump#map:%s:%s:%s:%s:\n' "$key" "$(archive_devname "$key")" "$store" "$fmt" >>"$out"
	done
}

# vma-create's compression and output options, added to the caller's array args.
writer_output_args() {
	case $opt_compress in
	zstd) args+=(-z zstd) ;;
	xz) args+=(-z xz) ;;
	esac
	[ -z "$opt_zstd" ] || [ "$opt_zstd" = 0 ] || args+=(-T "$opt_zstd")
	if [ "$opt_stdout" = 1 ]; then
		args+=(-o -)
	else
		args+=(-o "$tmp_archive")
	fi
}

# Starts vma-create's NBD server, one export per disk, writing the archive.
start_writer() {
	local d key vol node qdev size fmt i
	local -a args=(-v -c "$private_dir/qemu-server.conf")
	[ ${#disks[@]} -eq 0 ] || args+=(--listen "$private_dir/nbd.sock")
	writer_output_args
	for d in "${disks[@]}"; do
		IFS=$'\x1f' read -r key vol node qdev size fmt <<<"$d"
		args+=("$(archive_devname "$key")=$size")
	done
	vma-create "${args[@]}" 2>"$private_dir/writer.log" 3>&- {global_lock_fd}>&- {vm_lock_fd}>&- &
	writer_pid=$!
	state_proc "$writer_pid" vma-create
	[ ${#disks[@]} -gt 0 ] || return 0
	for ((i = 0; i < 200; i++)); do
		[ -S "$private_dir/nbd.sock" ] && return 0
		kill -0 "$writer_pid" 2>/dev/null || break
		sleep 0.05
	done
	fail "vma-create did not start: $(tail -n 3 "$private_dir/writer.log")"
}

# The disks as a JSON array of {key, vol, node, qdev, size, fmt, dev}, for the jq programs
# below; dev is the device's name in the archive (and its NBD export).
disks_json() {
	printf '%s\n' "${disks[@]}" | jq -Rsc --arg tpm "$TPM_NODE" 'split("\n")
		| map(select(. != "") | split("\u001f")
		| {key: .[0], vol: .[1], node: .[2], qdev: .[3], size: (.[4] | tonumber), fmt: .[5],
		   dev: (if .[0] == "tpmstate0" then $tpm else "drive-" + .[0] end)})'
}

# The device's name in the archive: drive-KEY, but the TPM state's has its own.
archive_devname() { # KEY
	if [ "$1" = tpmstate0 ]; then echo "$TPM_NODE"; else echo "drive-$1"; fi
}

# Runs a jq program over the disks that prints lines "U <undo command>" and "B <command>";
# records the undo lines and leaves the batch in the file BATCH. One jq run per phase (jq
# takes a tenth of a second to start on a busy machine).
plan() { # BATCH [JQ-ARGS...] JQ-PROGRAM
	local batch=$1 line lines
	shift
	lines=$(jq -nr --argjson disks "$(disks_json)" "$@") || fail "internal error: jq"
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
	local d key vol node qdev size fmt i=0 base=0 img fd out by_path=0 rc=0
	local -a addfd=() fds=()
	[ "$vm_status" = running ] || by_path=1
	if [ "$by_path" = 0 ]; then
		base=$(qmp query-fdsets | jq '[.[]["fdset-id"]] | (max // 0) + 1') ||
			fail "query-fdsets failed"
	fi
	for d in "${disks[@]}"; do
		IFS=$'\x1f' read -r key vol node qdev size fmt <<<"$d"
		i=$((i + 1))
		# A node without a device (the TPM state) is copied as it is (see prepare_tpmstate).
		if [ -z "$qdev" ]; then
			info "attaching TPM drive to QEMU for backup"
			continue
		fi
		img=$private_dir/scratch-$key.qcow2
		qemu-img create -q -f qcow2 "$img" "$size" >/dev/null ||
			fail "cannot create the scratch image $img"
		if [ "$by_path" = 0 ]; then
			exec {fd}<>"$img"
			rm -f "$img"
			fds+=("$fd")
			addfd+=(--add-fd "$((base + i - 1))=$fd")
		fi
	done
	# shellcheck disable=SC2016 # jq variables
	plan "$private_dir/scratch.qmp" --argjson base "$base" --arg dir "$private_dir" '
		$disks | to_entries[] | .key as $i | .value
		| if .qdev == "" then
		  ("U " + ({execute: "blockdev-del", arguments: {"node-name": .node}} | tojson)),
		  ("B " + ({execute: "blockdev-add", arguments: {driver: "raw", "node-name": .node,
			"read-only": true, file: {driver: "file", filename: .vol}}} | tojson))
		  else
		  (if $base > 0 then "U " + ({execute: "remove-fd",
			arguments: {"fdset-id": ($base + $i)}} | tojson) else empty end),
		  ("U " + ({execute: "blockdev-del", arguments: {"node-name": ("vz-fl-" + .key)}} | tojson)),
		  ("B " + ({execute: "blockdev-add", arguments: {driver: "qcow2",
			"node-name": ("vz-fl-" + .key), discard: "unmap",
			file: {driver: "file", filename: (if $base > 0
				then "/dev/fdset/" + ($base + $i | tostring)
				else $dir + "/scratch-" + .key + ".qcow2" end)}}} | tojson))
		  end'
	out=$(qmp -f "$private_dir/scratch.qmp" "${addfd[@]}" 2>&1) || rc=$?
	for fd in "${fds[@]}"; do exec {fd}>&-; done
	[ "$by_path" = 0 ] || rm -f "$private_dir"/scratch-*.qcow2
	[ "$rc" = 0 ] || fail "attaching the scratch images failed: ${out##*qmpctl: }"
}

# The instant: stop (if running), a copy-before-write filter over each disk writing the old
# data to its scratch node, the device switched onto the filter, a snapshot-access node over it,
# cont. Run inside gafreeze hold when the agent answers.
frozen_ms=
snapshot_ms=
snapshot() {
	local status=$vm_status out rc=0 t0 t1
	local -a freeze=()
	# shellcheck disable=SC2016 # jq variables
	plan "$private_dir/snapshot.qmp" --arg status "$status" '
		(if $status == "running" then "B {\"execute\":\"stop\"}" else empty end),
		($disks[] | select(.qdev != "") |
		  ("U " + ({execute: "blockdev-del", arguments: {"node-name": ("vz-cbw-" + .key)}} | tojson)),
		  ("U " + ({execute: "qom-set", arguments: {path: .qdev, property: "drive",
			value: .node}} | tojson)),
		  ("U " + ({execute: "blockdev-del", arguments: {"node-name": ("vz-acc-" + .key)}} | tojson)),
		  ("B " + ({execute: "blockdev-add", arguments: {driver: "copy-before-write",
			"node-name": ("vz-cbw-" + .key), file: .node, target: ("vz-fl-" + .key),
			"on-cbw-error": "break-snapshot", "cbw-timeout": 30}} | tojson)),
		  ("B " + ({execute: "qom-set", arguments: {path: .qdev, property: "drive",
			value: ("vz-cbw-" + .key)}} | tojson)),
		  ("B " + ({execute: "blockdev-add", arguments: {driver: "snapshot-access",
			"node-name": ("vz-acc-" + .key), file: ("vz-cbw-" + .key)}} | tojson))),
		(if $status == "running" then "B {\"execute\":\"cont\"}" else empty end)'

	freeze_applicable && freeze=(gafreeze -s "$qga_sock" --max "$FREEZE_MAX" --json hold --)
	if [ "$status" = running ]; then
		we_paused=1
		state paused
	fi
	if [ ${#freeze[@]} -gt 0 ]; then
		info "issuing guest-agent 'fs-freeze' command"
		state freeze
	fi
	t0=$(now_ms)
	out=$("${freeze[@]}" qmpctl {global_lock_fd}>&- {vm_lock_fd}>&- -s "$qmp_sock" -t "$QMP_TIMEOUT" -k \
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
		frozen_ms=$(tail -n 1 <<<"$out" | jq -r '.frozen_ms // empty' 2>/dev/null) || frozen_ms=
		[[ $frozen_ms =~ ^[0-9]+$ ]] || frozen_ms=
		info "guest filesystems frozen for ${frozen_ms:-?} ms"
	else
		info "snapshot taken in $((t1 - t0)) ms (guest filesystems not frozen)"
	fi
	[ "$status" != running ] || info "resuming VM again"
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
	[ "$3" = 0 ] || fail "snapshot failed: $(grep -v '^gafreeze: guest frozen for ' "$private_dir/snapshot.err" |
		tail -n 1)"
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

# After the thaw: hand QEMU a socket connected to the writer per disk, an NBD target node on
# each, and start all backup jobs in one transaction.
start_jobs() {
	local d i speed=0 out
	local -a fdargs=()
	if [ "$opt_bwlimit" -gt 0 ]; then
		# The limit is for the whole VM; the jobs run side by side.
		speed=$((opt_bwlimit * 1024 / ${#disks[@]}))
		[ "$speed" -gt 0 ] || speed=1
	fi
	for ((i = 0; i < ${#disks[@]}; i++)); do
		fdargs+=(--fd "t$i=unix-connect:$private_dir/nbd.sock")
		d=${disks[i]}
		job_ids+=("vzdump-drive-${d%%$'\x1f'*}")
		state "job vzdump-drive-${d%%$'\x1f'*}"
	done
	# shellcheck disable=SC2016 # jq variables
	plan "$private_dir/jobs.qmp" --argjson speed "$speed" '
		($disks | to_entries[] | .key as $i | .value
		 | ("U " + ({execute: "blockdev-del", arguments: {"node-name": ("vz-tgt-" + .key)}} | tojson)),
		   ("B " + ({execute: "blockdev-add", arguments: {driver: "raw",
			"node-name": ("vz-tgt-" + .key), file: {driver: "nbd", export: .dev,
			server: {type: "fd", str: ("t" + ($i | tostring))}}}} | tojson))),
		($disks[] | "U " + ({execute: "job-dismiss", arguments: {id: ("vzdump-drive-" + .key)}}
			| tojson)),
		"U cancel-jobs",
		"B " + ({execute: "transaction", arguments: {actions: [$disks[] | {type: "blockdev-backup",
			data: {"job-id": ("vzdump-drive-" + .key),
			device: (if .qdev == "" then .node else "vz-acc-" + .key end),
			target: ("vz-tgt-" + .key), sync: "full", "auto-dismiss": false,
			speed: $speed}}]}} | tojson)'
	info "starting backup via QMP command"
	out=$(qmp -f "$private_dir/jobs.qmp" "${fdargs[@]}" 2>&1) ||
		fail "starting the backup jobs failed: ${out##*qmpctl: }"
}

# Waits until every job has concluded, passing the writer's progress lines on to the log.
# QEMU does the copying on a machine whose cores it may well keep busy, so each round is
# cheap: one query and one jq, and the liveness check only when the query fails.
wait_jobs() {
	local ids jobs verdict failures=0
	ids=$(printf '%s\n' "${job_ids[@]}" | jq -Rsc 'split("\n") | map(select(. != ""))')
	while :; do
		forward_writer_log
		if ! jobs=$(qmp query-jobs 2>/dev/null); then
			qemu_alive || fail "QEMU is gone (nothing listens on $qmp_sock)"
			failures=$((failures + 1))
			[ "$failures" -lt 3 ] || fail "lost QMP: $(qmp query-status 2>&1 | tail -n 1)"
			continue
		fi
		failures=0
		# shellcheck disable=SC2016 # jq variables
		verdict=$(jq -r --argjson ids "$ids" '
			[.[] | select(.id as $i | $ids | index($i))] as $ours
			| if ($ours | length) < ($ids | length) then "missing"
			  elif any($ours[]; .status != "concluded") then "running"
			  else [$ours[] | select(.error) | "\(.id): \(.error)"] | join("; ")
			  | if . == "" then "done" else "error " + . end end' <<<"$jobs")
		case $verdict in
		missing) fail "a backup job vanished from QEMU" ;;
		done) return 0 ;;
		error\ *) fail "backup job failed: ${verdict#error }$(writer_failure)" ;;
		esac
		# Woken by the next status change, or after two seconds (the event may have gone by
		# between the two connections).
		qmp -t 2 -w JOB_STATUS_CHANGE </dev/null >/dev/null 2>&1 || true
	done
}

# When a job failed because the writer ended (the dump folder is full, say), the job only
# says "Input/output error": the writer's own last error, as " (vma-create: why)".
writer_failure() {
	local why
	[ -n "$writer_pid" ] || return 0
	! kill -0 "$writer_pid" 2>/dev/null || return 0
	why=$(grep -v '%' "$private_dir/writer.log" 2>/dev/null | grep -v '^image ' | tail -n 1)
	[ -z "$why" ] || printf ' (%s)' "$why"
}

writer_lines_done=0
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

# Teardown in reverse, then the writer finishes the archive once its clients are gone.
teardown() {
	run_undo strict || fail "restoring the VM's block graph failed"
	local rc=0
	wait "$writer_pid" || rc=$?
	writer_pid=
	forward_writer_log
	[ "$rc" = 0 ] || fail "vma-create failed: $(grep -v '%' "$private_dir/writer.log" | tail -n 2)"
}

summary() {
	local total zeros secs
	total=$(sed -n 's/^image .* size=\([0-9]*\) .*/\1/p' "$private_dir/writer.log" |
		awk '{ s += $1 } END { printf "%.0f\n", s }')
	zeros=$(sed -n 's/^image .* zeros=\([0-9]*\) .*/\1/p' "$private_dir/writer.log" |
		awk '{ s += $1 } END { printf "%.0f\n", s }')
	secs=$(($(date +%s) - copy_start))
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
# The lock fds are closed (`{global_lock_fd}>&- {vm_lock_fd}>&-`) for every process that may
# outlive the driver (the writer, qemu-nbd, hooks, gafreeze's watchdog): bash cannot mark them
# close-on-exec, and a lock held by an orphan would stop every later job and --cleanup.
# Until taken they are /dev/null (main opens them).
global_lock_fd=
vm_lock_fd=
global_lock() {
	local path=$opt_rundir/vzdump.lock deadline
	exec {global_lock_fd}>&-
	exec {global_lock_fd}>>"$path" || job_abort "can't open lock '$path'"
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
	exec {vm_lock_fd}>>"$path" || fail "can't open lock '$path'"
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
# standard names, as vzdump-prune lists them.
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

# Two backups of one VM in the same second would get the same names. The log is created first
# with O_EXCL (noclobber), so of two jobs only one gets the name; a finished archive or a .dat
# of that name (whose log is gone) also means the name is taken.
claim_backup_name() { # BASENAME
	local base=$opt_dumpdir/$1 taken='' ext
	if ! (set -o noclobber && : >"$base.log") 2>/dev/null; then
		taken=$base.log
	else
		for ext in vma vma.zst vma.xz vma.gz vma.lzo dat; do
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

# After the rename, as vzdump does with a storage (we allow it with a dump folder): the notes,
# then the protection marker. A failure of the notes is only a warning, of the marker fatal.
mark_backup() { # ARCHIVE
	local notes
	if [ -n "$opt_notes" ]; then
		info "adding notes to backup"
		notes=$(expand_notes "$opt_notes"; echo .)
		notes=${notes%.}
		if [ -z "$notes" ]; then
			rm -f "$1.notes" || warn "unable to add notes - cannot remove $1.notes"
		elif ! printf '%s' "$notes" 2>/dev/null >"$1.notes"; then
			warn "unable to add notes - cannot write $1.notes"
		fi
	fi
	if [ "$opt_protected" = 1 ]; then
		info "marking backup as protected"
		: 2>/dev/null >>"$1.protected" || fail "cannot create $1.protected"
	fi
}

# Retention after a successful backup (the new archive counts), through vzdump-prune, with
# vzdump's log lines for a plain dump folder (removals in name order, as its glob lists them).
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
	info "pruned $n backup(s) not covered by keep-retention policy"
}

# --- backup modes and VMs that are not running ---------------------------------------------
# snapshot: the VM keeps running (see snapshot). suspend: the VM is paused from `suspending
# guest` until the snapshot is in place, then continues while the copy runs. stop: a clean
# shutdown (system_powerdown), the snapshot, and a restart (system_reset + cont) when QEMU
# stays alive in `shutdown` state (-no-shutdown); when QEMU exits instead, the image files are
# read offline, as for a VM that was not running at all.

backup_mode=   # the effective mode, as the hooks get it
vm_alive=0     # QEMU listens on its QMP socket
stop_time=     # when the VM was suspended or stopped (seconds since the epoch)
suspended=0    # we paused the VM (suspend mode); cont is owed
resume_hooks=0 # suspend mode: pre-restart and post-restart are owed in the cleanup
restart=       # owed after a stop: reset (QEMU in shutdown state) or exited (QEMU gone)
nbd_pids=()    # qemu-nbd servers of the offline copy

# vzdump's stopwait is in minutes; VZDUMP_STOPWAIT_SECONDS overrides it (tests need seconds).
stopwait_seconds() {
	if [[ ${VZDUMP_STOPWAIT_SECONDS:-} =~ ^[0-9]{1,6}$ ]]; then
		echo "$((10#$VZDUMP_STOPWAIT_SECONDS))"
	else
		echo "$((opt_stopwait * 60))"
	fi
}

# Whether the VM runs: something listens on its QMP socket. A VM that does not is backed up
# offline from its config, which it then must have.
check_running() {
	if [ -S "$qmp_sock" ] && qemu_alive; then
		vm_alive=1
		return 0
	fi
	vm_alive=0
	backup_mode=stop
	[ -z "$conf_file" ] || return 0
	info "no config $opt_confdir/$vmid.conf: a VM that is not running is backed up from its config"
	if [ -S "$qmp_sock" ]; then
		fail "VM $vmid is not running (nothing listens on $qmp_sock)"
	fi
	fail "VM $vmid is not running (no QMP socket $qmp_sock)"
}

# A VM that is not running is backed up in stop mode, as vzdump does (see check_running).
choose_mode() {
	if [ "$backup_mode" != "$opt_mode" ]; then
		info "VM is not running: $opt_mode mode is not possible, using stop mode"
	fi
}

# QEMU's run state (running, paused, prelaunch, shutdown, ...).
qemu_status() {
	qmp -t 5 query-status 2>/dev/null | jq -r '.status // empty' 2>/dev/null
}

# Suspend mode: pause a running VM until the snapshot is in place (see resume_after_snapshot).
# A VM that is not running (paused, prelaunch) is left as it is.
suspend_vm() {
	local status
	info "suspending guest"
	stop_time=$(date +%s)
	hook_or_fail pre-stop
	resume_hooks=1
	status=$(qemu_status) || status=
	[ -n "$status" ] || fail "query-status failed"
	[ "$status" = running ] || return 0
	# Recorded first: whatever fails from here on, the cleanup continues the VM.
	suspended=1
	state paused
	qmp stop >/dev/null || fail "pausing the VM failed"
}

# Stop mode on a running VM: a clean shutdown, waiting up to --stopwait for QEMU to reach
# `shutdown` state (-no-shutdown) or to exit. Never forced: on timeout the backup fails and the
# VM is left as it is. A VM that is not running cannot shut down and needs no shutdown.
stop_vm() {
	local status wait deadline
	status=$(qemu_status) || status=
	[ -n "$status" ] || fail "query-status failed"
	case $status in
	running) ;;
	shutdown)
		info "guest is already shut down (QEMU status 'shutdown'): no shutdown needed, it stays so"
		return 0
		;;
	*)
		info "guest is not running (QEMU status '$status'): no shutdown, backing it up as it is, and it stays so"
		return 0
		;;
	esac
	info "stopping virtual guest"
	stop_time=$(date +%s)
	hook_or_fail pre-stop
	# Before it is sent: a guest that goes down after we were killed is restarted by recovery.
	state powerdown
	qmp system_powerdown >/dev/null || fail "system_powerdown failed"
	wait=$(stopwait_seconds)
	deadline=$(($(date +%s) + wait))
	while :; do
		if ! qemu_alive; then
			restart=exited
			info "QEMU exited on shutdown: reading the disk images offline"
			return 0
		fi
		if [ "$(qemu_status)" = shutdown ]; then
			restart=reset
			state shutdown
			return 0
		fi
		[ "$(date +%s)" -lt "$deadline" ] || break
		sleep 0.5
	done
	fail "VM $vmid did not shut down within $wait seconds (--stopwait) - not forcing it off, the VM is left as it is"
}

# Right after the snapshot is in place: a suspended VM continues, a stopped one (QEMU in
# `shutdown` state) is restarted, so that the guest is down only for that long; the copy then
# runs while the guest works (its writes go through the copy-before-write filter).
resume_after_snapshot() {
	if [ "$suspended" = 1 ]; then
		qmp cont >/dev/null || fail "continuing the VM failed"
		suspended=0
		state resumed
		info "resuming VM again after $(($(date +%s) - stop_time)) seconds"
	fi
	[ "$restart" != reset ] || restart_vm
}

# system_reset + cont of a VM in `shutdown` state, between the pre-restart and post-restart
# hooks (whose failure is only a warning: the VM must come back anyway).
restart_vm() {
	local i status
	restart=
	run_hook pre-restart vm || warn "$hook_error"
	info "restarting vm"
	qmp system_reset >/dev/null || warn "system_reset failed"
	# The reset is carried out asynchronously; cont is refused until it is (the VM then waits
	# in prelaunch).
	for ((i = 0; i < 100; i++)); do
		status=$(qemu_status) || status=
		[ "$status" != shutdown ] && [ -n "$status" ] && break
		sleep 0.1
	done
	if qmp cont >/dev/null 2>&1; then
		state restarted
		run_hook post-restart vm || warn "$hook_error"
		info "guest is online again after $(($(date +%s) - stop_time)) seconds"
	else
		warn "restarting the VM failed (QEMU status '${status:-unknown}')"
		run_hook post-restart vm || warn "$hook_error"
	fi
}

# What vzdump does in its cleanup after a suspend or stop: pre-restart, resume or restart
# (when still owed, e.g. after a failure), post-restart. Never fails: it runs on the failure
# path too.
restore_power_state() {
	[ "$backup_mode" = suspend ] || [ "$backup_mode" = stop ] || return 0
	if [ "$restart" = reset ]; then
		if qemu_alive; then
			restart_vm
		else
			restart=exited
		fi
	fi
	if [ "$resume_hooks" = 1 ]; then
		resume_hooks=0
		run_hook pre-restart vm || warn "$hook_error"
		if [ "$suspended" = 1 ]; then
			info "resume vm"
			if qmp cont >/dev/null 2>&1; then
				suspended=0
				state resumed
				info "guest is online again after $(($(date +%s) - stop_time)) seconds"
			else
				warn "continuing the VM failed"
			fi
		fi
		run_hook post-restart vm || warn "$hook_error"
	elif [ "$restart" = exited ]; then
		restart=
		run_hook pre-restart vm || warn "$hook_error"
		info "VM $vmid is left stopped: QEMU exited on shutdown and vzdump.sh cannot start it (it does not know its command line); start it from the post-restart hook, or run QEMU with -no-shutdown"
		run_hook post-restart vm || warn "$hook_error"
	fi
	return 0
}

# The images of a VM that is not running, from its config: KEY, VOLUME (a path), no node or
# device, SIZE, FORMAT. The same disks as prepare_from_config picks.
prepare_offline() {
	local key value vol
	while IFS=$'\x1f' read -r key vol value; do
		offline_disk "$key" "$vol" "$(drive_format "$key" "$vol" "$value")"
	done < <(included_config_disks)
	[ ${#disks[@]} -gt 0 ] || info "backup contains no disks"
	local d size fmt
	for d in "${disks[@]}"; do
		IFS=$'\x1f' read -r key vol _ _ size fmt <<<"$d"
		info "include disk '$key' '$vol' $(format_disk_size "$size")"
	done
}

# An image's format: format= in the config, else its name's extension, else raw (qemu-server
# does not guess formats from content either: a raw image may start with any bytes).
drive_format() { # KEY VOLUME VALUE
	local item
	local -a items
	[ "$1" != tpmstate0 ] || { echo raw; return; }
	IFS=, read -r -a items <<<"$3"
	for item in "${items[@]:1}"; do
		case $item in format=*) echo "${item#format=}"; return ;; esac
	done
	case $2 in
	*.qcow2) echo qcow2 ;;
	*.vmdk) echo vmdk ;;
	*.qed) echo qed ;;
	*.vdi) echo vdi ;;
	*.vhd | *.vpc) echo vpc ;;
	*) echo raw ;;
	esac
}

# Adds one offline disk after checking that nothing holds it open: QEMU locks the images it
# uses, and a (size 0) conversion of the file, which wants no writer beside it, fails then.
offline_disk() { # KEY VOLUME FORMAT
	local key=$1 vol=$2 fmt=$3 size protocol=file err
	case $vol in
	/*) ;;
	*) fail "disk '$key': '$vol' is not a path: a VM that is not running is read from image files or block devices given by path" ;;
	esac
	[ -e "$vol" ] || fail "disk '$key': $vol does not exist"
	[ ! -b "$vol" ] || protocol=host_device
	if ! err=$(qemu-img convert --image-opts \
		"driver=raw,size=0,file.driver=$protocol,file.filename=${vol//,/,,}" \
		-O raw "$private_dir/lock-probe.raw" 2>&1); then
		rm -f "$private_dir/lock-probe.raw"
		case $err in
		*lock*) fail "disk '$key': $vol is in use by a running QEMU (it holds the image lock); not reading it offline" ;;
		*) fail "disk '$key': cannot open $vol: ${err%%$'\n'*}" ;;
		esac
	fi
	rm -f "$private_dir/lock-probe.raw"
	size=$(qemu-img info -U -f "$fmt" --output=json -- "$vol" 2>&1) ||
		fail "disk '$key': cannot read $vol as $fmt: ${size%%$'\n'*}"
	size=$(jq -r '.["virtual-size"]' <<<"$size")
	[[ $size =~ ^[0-9]+$ ]] || fail "disk '$key': cannot read the size of $vol"
	disks+=("$key"$'\x1f'"$vol"$'\x1f'$'\x1f'$'\x1f'"$size"$'\x1f'"$fmt")
}

# After QEMU exited on shutdown (stop mode): the disks found in the running QEMU become image
# files read offline; QEMU may still hold its image locks for a moment while it exits.
offline_after_exit() {
	local d key vol node qdev size fmt i
	local -a found=("${disks[@]}")
	disks=()
	for d in "${found[@]}"; do
		IFS=$'\x1f' read -r key vol node qdev size fmt <<<"$d"
		[ "$key" != tpmstate0 ] || fmt=raw
		# Up to 10 s for the lock; a volume that is no file fails at once below.
		for ((i = 0; i < 50; i++)); do
			[ -e "$vol" ] || break
			if (offline_disk "$key" "$vol" "$fmt") >/dev/null 2>&1; then
				break
			fi
			sleep 0.2
		done
		offline_disk "$key" "$vol" "$fmt"
	done
}

# The offline copy: vma-create reads raw images and block devices itself (sparse-aware), other
# formats through a read-only qemu-nbd each on a socket in the private folder.
offline_copy() {
	local d key vol node qdev size fmt sock i rc=0
	local -a args=(-v -c "$private_dir/qemu-server.conf")
	writer_output_args
	[ "$opt_bwlimit" = 0 ] || args+=(--bwlimit "$opt_bwlimit")
	for d in "${disks[@]}"; do
		IFS=$'\x1f' read -r key vol node qdev size fmt <<<"$d"
		if [ "$fmt" = raw ]; then
			args+=("$(archive_devname "$key")=$vol")
			continue
		fi
		sock=$private_dir/nbd-$key.sock
		qemu-nbd -r -t -f "$fmt" -k "$sock" -- "$vol" </dev/null >/dev/null {global_lock_fd}>&- {vm_lock_fd}>&- \
			2>"$private_dir/nbd-$key.err" 3>&- &
		nbd_pids+=("$!")
		state_proc "$!" qemu-nbd
		for ((i = 0; i < 200; i++)); do
			[ -S "$sock" ] && break
			kill -0 "$!" 2>/dev/null || break
			sleep 0.05
		done
		[ -S "$sock" ] || fail "disk '$key': qemu-nbd failed: $(tail -n 1 "$private_dir/nbd-$key.err")"
		args+=("$(archive_devname "$key")=nbd+unix:///?socket=$(jq -rn --arg p "$sock" '$p | @uri')")
	done
	copy_start=$(date +%s)
	vma-create "${args[@]}" 2>"$private_dir/writer.log" 3>&- {global_lock_fd}>&- {vm_lock_fd}>&- &
	writer_pid=$!
	state_proc "$writer_pid" vma-create
	while kill -0 "$writer_pid" 2>/dev/null; do
		forward_writer_log
		sleep 0.5
	done
	wait "$writer_pid" || rc=$?
	writer_pid=
	forward_writer_log
	stop_nbd
	[ "$rc" = 0 ] || fail "vma-create failed: $(grep -v '%' "$private_dir/writer.log" | tail -n 2)"
}

# The qemu-nbd servers run with --persistent (vma-create may connect more than once), so they
# are ended here, after the copy or in the cleanup.
stop_nbd() {
	local pid
	for pid in "${nbd_pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	nbd_pids=()
}

# --- one VM ----------------------------------------------------------------------------------

vmid=
failure=
private_dir=
tmp_archive=
log_target=
hook_target=
final_archive=
backup_start=
results=
qmp_sock=
qga_sock=
copy_start=
vm_status=

backup_vm() {
	local start basename archive ext
	start=$(date +%s)
	backup_start=$start
	backup_mode=$opt_mode
	basename=vzdump-qemu-$vmid-$(date +%Y_%m_%d-%H_%M_%S)
	case $opt_compress in
	zstd) ext=vma.zst ;;
	xz) ext=vma.xz ;;
	*) ext=vma ;;
	esac
	archive=$opt_dumpdir/$basename.$ext
	private_dir=$(mktemp -d "$opt_tmpdir/vzdumptmp.XXXXXX") ||
		fail "cannot create a private folder under $opt_tmpdir"
	hook_target=-
	if [ "$opt_stdout" = 0 ]; then
		[ -d "$opt_dumpdir" ] || fail "dump folder $opt_dumpdir does not exist"
		check_backup_limit
		claim_backup_name "$basename"
		log_target=$opt_dumpdir/$basename.log
		tmp_archive=${archive%.*}.dat
		hook_target=$archive
		logfile=$log_target
	else
		logfile=$private_dir/qemu-$vmid.log
	fi
	qmp_sock=$opt_rundir/$vmid.qmp
	qga_sock=$opt_rundir/$vmid.qga

	info "Starting Backup of VM $vmid (qemu)"
	info "Backup started at $(date '+%F %T')"
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
		vm_status=$(qmp query-status | jq -r .status) || fail "query-status failed"
		copy_start=$(date +%s)
		if [ ${#disks[@]} -gt 0 ]; then
			attach_scratch
			hook_or_fail pre-freeze
			snapshot
			resume_after_snapshot
			hook_or_fail post-thaw
			copy_start=$(date +%s)
			start_jobs
			wait_jobs
		else
			resume_after_snapshot
		fi
		teardown
	fi
	summary
	if [ "$opt_stdout" = 0 ]; then
		final_archive=$archive
		# Recorded first: a backup killed from here on is failed, and recovery removes it.
		state "final $archive"
		mv -f "$tmp_archive" "$archive" || { final_archive= && fail "cannot rename $tmp_archive"; }
		tmp_archive=
		info "archive file size: $(format_archive_size "$(stat -c %s "$archive")")"
		mark_backup "$archive"
		prune_backups
	fi
	hook_or_fail backup-end
	restore_power_state
	info "Finished Backup of VM $vmid ($(format_time $(($(date +%s) - start))))"
	info "Backup finished at $(date '+%F %T')"
}

# Each VM in its own subshell, so that its EXIT trap cleans up exactly its own state; the
# parent passes SIGINT/SIGTERM/SIGHUP on and waits for that cleanup.
task_pid=
interrupted=0
on_signal() {
	interrupted=1
	[ -z "$task_pid" ] || kill -TERM "$task_pid" 2>/dev/null || true
}

run_task() { # VMID
	local rc=0
	(
		set -e
		vmid=$1
		exec {log_fd}>&2
		trap cleanup EXIT
		trap 'failure="interrupted by signal"; exit 1' INT TERM HUP
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
cleanup_vm() { # VMID
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
	exit 1
}

# --json: the job's summary on standard output, one object.
print_json() { # STATUS [ERROR]
	[ -n "$results" ] || return 0
	jq -sc --arg status "$1" --arg error "${2:-}" '{status: $status,
		error: (if $error == "" then null else $error end), vms: .}' "$results" >&"$json_fd"
}

main() {
	local id rc errors=0
	# Writes to a log reader that went away fail (EPIPE) instead of killing the driver
	# before its cleanup could run.
	trap '' PIPE
	wants_help "$@" || read_vzdump_conf
	parse_options "$@"
	# --json goes to the real stdout even with --quiet.
	exec {json_fd}>&1 {global_lock_fd}</dev/null {vm_lock_fd}</dev/null
	if [ "$opt_quiet" = 1 ]; then
		exec 2>/dev/null
		[ "$opt_stdout" = 1 ] || exec >/dev/null
	fi
	[ -d "$opt_tmpdir" ] || { printf '%s: tmpdir %s does not exist\n' "$PROG" "$opt_tmpdir" >&2; exit 1; }
	# QEMU opens files under it by path, from its own working folder.
	opt_tmpdir=$(realpath -- "$opt_tmpdir")
	# Idle class for 8, as vzdump; the writer's compression inherits it.
	if [ "$opt_ionice" = 8 ]; then
		ionice -c3 -p $$ 2>/dev/null || warn "ionice failed"
	else
		ionice -c2 -n "$opt_ionice" -p $$ 2>/dev/null || warn "ionice failed"
	fi
	if [ "$opt_cleanup" = 1 ]; then
		for id in $(printf '%s\n' "${vmids[@]}" | sort -n -u); do
			(cleanup_vm "$id") || errors=$((errors + 1))
		done
		[ "$errors" = 0 ] || exit 1
		exit 0
	fi
	if [ "$opt_json" = 1 ]; then
		results=$(mktemp "$opt_tmpdir/vzdump-results.XXXXXX")
	fi
	trap on_signal INT TERM HUP
	trap 'rm -f "$results"' EXIT
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
		exit 1
	fi
	info "Backup job finished successfully"
}

main "$@"
