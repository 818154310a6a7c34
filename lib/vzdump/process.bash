# shellcheck shell=bash
# lib/vzdump/process.bash: the driver's children — where its tools are, starting them without
# the lock fds, waiting for them and for conditions against one deadline, and QMP.
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

# The tools of this project: beside the driver's own real path first (an installed copy run
# from cron with PATH=/usr/bin:/bin still finds /usr/local/bin/qmpctl), then on PATH. gafreeze
# runs qmpctl by name, so the folder goes onto PATH rather than into variables.
# (find_tools runs before the options are read, which may need vzdump-prune; check_tools after.)
OUR_TOOLS=(qmpctl gafreeze vma-create vzdump-prune vzdump-put)
find_tools() {
	if [ -x "$SELF_DIR/qmpctl" ] && [ -f "$SELF_DIR/qmpctl" ]; then
		PATH=$SELF_DIR:$PATH
	fi
}

check_tools() { # [TOOL...]: by default OUR_TOOLS
	local tool
	[ $# -gt 0 ] || set -- "${OUR_TOOLS[@]}"
	for tool in "$@"; do
		if ! command -v "$tool" >/dev/null 2>&1; then
			printf '%s: %s not found in %s or PATH\n' "$PROG" "$tool" "$SELF_DIR" >&2
			exit 1
		fi
	done
}

# The lock fds are closed for every process the driver starts: bash cannot mark them
# close-on-exec, and a lock held by an orphan (the writer, qemu-nbd, a hook, gafreeze's
# watchdog) would stop every later job and --cleanup. Until taken they are /dev/null.
global_lock_fd=
vm_lock_fd=

# Runs COMMAND in the foreground without the lock fds.
unlocked() { # COMMAND...
	"$@" {global_lock_fd}>&- {vm_lock_fd}>&-
}

# In a subshell about to exec a command that may outlive its step (a hook and whatever it
# leaves running, the writer, qemu-nbd): every descriptor above 2 closed. Besides the locks,
# the driver keeps its log and the --json stream open, and passes on what it inherited; a
# hook's background child holding the caller's pipe keeps `$(vzdump.sh ...)` or a service
# waiting long after the job. (255 is bash's own, close-on-exec.)
close_fds_above_2() {
	local fd
	for fd in /proc/self/fd/*; do
		fd=${fd##*/}
		[ "$fd" -le 2 ] || [ "$fd" = 255 ] || eval "exec $fd>&-"
	done
}

# Starts COMMAND in the background with only descriptors 0 to 2; its pid is left in
# spawned_pid. exec keeps the pid the command's own, so that a signal sent to it reaches the
# command.
spawned_pid=
spawn() { # COMMAND...
	(
		close_fds_above_2
		exec "$@"
	) &
	spawned_pid=$!
}

# The exit status of a child started by spawn, without bash's own "Killed" line.
reap() { # PID
	local rc=0
	wait "$1" 2>/dev/null || rc=$?
	return "$rc"
}

# Runs CONDITION every INTERVAL seconds (default 0.1) until it succeeds (0) or SECONDS have
# passed (1). The deadline is taken once, so slow conditions do not stretch it.
wait_until() { # [-i INTERVAL] SECONDS CONDITION...
	local interval=0.1 end now whole frac=
	if [ "$1" = -i ]; then
		interval=$2
		shift 2
	fi
	# SECONDS as microseconds, in bash's own arithmetic (no process per call).
	whole=${1%.*}
	[[ $1 != *.* ]] || frac=${1#*.}
	frac=${frac}000000
	now=${EPOCHREALTIME//[!0-9]/}
	end=$((now + 10#${whole:-0} * 1000000 + 10#${frac:0:6}))
	shift
	while :; do
		"$@" && return 0
		now=${EPOCHREALTIME//[!0-9]/}
		[ "$now" -lt "$end" ] || return 1
		sleep "$interval"
	done
}

now_ms() { echo "$((${EPOCHREALTIME//[!0-9]/} / 1000))"; }

# The start time of process PID (field 22 of /proc/PID/stat), which tells a live process from
# a new one that got the same pid.
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

proc_gone() { ! proc_alive "$@"; }

# SIGTERM to our child PID, SIGKILL if it has not ended after 10 s (a hook that traps TERM, a
# writer stuck on a hung NFS mount), then its status: an exit handler never waits for ever
# while it holds the locks.
stop_child() { # PID
	kill -TERM "$1" 2>/dev/null || true
	wait_until -i 0.1 10 proc_ended "$1" || kill -KILL "$1" 2>/dev/null || true
	reap "$1"
}

# Our child PID has ended (bash reaps it at once and keeps its status for reap).
proc_ended() { # PID
	! kill -0 "$1" 2>/dev/null
}

# SIGTERM, then SIGKILL after 5 s, to a process that is not our child.
stop_process() { # PID START
	kill -TERM "$1" 2>/dev/null || return 0
	wait_until 5 proc_gone "$1" "$2" || kill -KILL "$1" 2>/dev/null || true
}

# --- QMP ---------------------------------------------------------------------------------------

qmp() { unlocked qmpctl -s "$qmp_sock" -t "$QMP_TIMEOUT" "$@"; }

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

# QEMU's run state (running, paused, prelaunch, shutdown, ...); empty when QEMU does not answer.
qemu_status() {
	local out
	out=$(qmp -t 5 query-status 2>/dev/null) || return 0
	jq -r '.status // empty' <<<"$out" 2>/dev/null || true
}

# The why of a failed command from the file its stderr went to: ": LAST LINE", or nothing.
why_of() { # FILE
	local line
	line=$(tail -n 1 "$1" 2>/dev/null) || true
	[ -z "$line" ] || printf ': %s' "$line"
}

# True when a line of qmpctl -k output is an error object.
is_error_line() { case $1 in '{"error":'*) return 0 ;; esac; return 1; }

# Runs a program of graph.jq (the QMP graph changes) with ARGS; the module is found beside
# the driver's other files.
graph_jq() { # JQ-ARGS... PROGRAM
	local -a args=("$@")
	local program=${args[-1]}
	unset 'args[-1]'
	jq -L "$LIBDIR" "${args[@]}" "import \"graph\" as g; $program"
}
