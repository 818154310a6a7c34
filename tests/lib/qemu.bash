# shellcheck shell=bash
# Bare QEMU for tests: `load lib/qemu` from a bats file.
#
#   qemu_start_bare WORKDIR [QEMU-ARGS...]
#       starts qemu-system-x86_64 -machine q35,accel=tcg -nodefaults -display none -S with
#       QMP on WORKDIR/qmp.sock, the extra arguments appended; pid in WORKDIR/qemu.pid,
#       QEMU's stdout in WORKDIR/qemu.out (HMP qemu-io results land there, line-buffered),
#       its stderr in WORKDIR/qemu.err. Returns once the QMP socket exists.
#   qemu_stop WORKDIR
#       quits that QEMU through QMP (kills it if that does not work) and waits until it is gone.
#   qmp_raw WORKDIR JSON...
#       sends each JSON command over WORKDIR/qmp.sock after negotiating, and prints each reply
#       line exactly as received (events are skipped). Exit 1 if a reply was an error, 3 if
#       QMP could not be reached or did not answer in $QMP_RAW_TIMEOUT seconds (default 30).
#       For test setup only, so fixtures do not depend on the tool under test.
#
# QEMU is not started with -daemonize: that sends its stdout to /dev/null. It runs in the
# background in its own session instead, with fd 3 (bats' output channel) closed.

_QEMU_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The system Python (python3 from packages.txt), not whatever python3 comes first on PATH.
_VZ_PYTHON=/usr/bin/python3
[ -x "$_VZ_PYTHON" ] || _VZ_PYTHON=python3

# Starts QEMU in the background: _qemu_launch WORKDIR QEMU-ARGS...
# WORKDIR must be absolute (QEMU gets absolute paths only).
_qemu_launch() {
	local wd=$1 pid i
	shift
	rm -f "$wd/qemu.pid" "$wd/qmp.sock"
	# stdbuf: qemu-io results are printf'd to stdout, which would sit in a 4 KiB buffer.
	setsid -w stdbuf -oL qemu-system-x86_64 "$@" -pidfile "$wd/qemu.pid" \
		</dev/null >"$wd/qemu.out" 2>"$wd/qemu.err" 3>&- &
	pid=$!
	# QEMU writes the pid file and creates the QMP socket during start-up (about 0.1 s).
	for ((i = 0; i < 300; i++)); do
		if [ -s "$wd/qemu.pid" ] && [ -S "$wd/qmp.sock" ]; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "qemu: qemu-system-x86_64 exited during start-up:" >&2
			cat "$wd/qemu.err" >&2
			return 1
		fi
		sleep 0.05
	done
	echo "qemu: no QMP socket $wd/qmp.sock after 15 s" >&2
	cat "$wd/qemu.err" >&2
	return 1
}

qemu_start_bare() { # WORKDIR [QEMU-ARGS...]
	local wd
	wd=$(cd "$1" && pwd) || return 1
	shift
	_qemu_launch "$wd" -machine q35,accel=tcg -nodefaults -display none -S \
		-qmp "unix:$wd/qmp.sock,server=on,wait=off" "$@"
}

# The pid in WORKDIR/qemu.pid if that process is still a QEMU, else nothing.
_qemu_pid() { # WORKDIR
	local pid
	pid=$(cat "$1/qemu.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && grep -qa qemu-system "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

# Waits up to SECONDS for process PID to be gone.
_qemu_wait_gone() { # PID SECONDS
	local i
	for ((i = 0; i < $2 * 20; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.05
	done
	return 1
}

qemu_stop() { # WORKDIR
	local wd=$1 pid
	pid=$(_qemu_pid "$wd") || return 0
	QMP_RAW_TIMEOUT=5 qmp_raw "$wd" '{"execute":"quit"}' >/dev/null 2>&1
	_qemu_wait_gone "$pid" 10 && return 0
	kill -TERM "$pid" 2>/dev/null
	_qemu_wait_gone "$pid" 5 && return 0
	kill -KILL "$pid" 2>/dev/null
	_qemu_wait_gone "$pid" 5
}

qmp_raw() { # WORKDIR JSON...
	local wd=$1
	shift
	"$_VZ_PYTHON" - "$wd/qmp.sock" "${QMP_RAW_TIMEOUT:-30}" "$@" 3>&- <<'EOF'
import json, socket, sys, time

path, timeout, commands = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
deadline = time.monotonic() + timeout
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
buf = b""

def give_up(why):
    print(f"qmp_raw: {path}: {why}", file=sys.stderr)
    sys.exit(3)

def line():
    global buf
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            give_up("no answer in time")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            give_up("no answer in time")
        if not chunk:
            give_up("connection closed")
        buf += chunk
    text, _, buf = buf.partition(b"\n")
    return text.decode().rstrip("\r")

def reply():
    while True:
        text = line()
        message = json.loads(text)
        if "event" not in message:
            return text, message

while True:
    try:
        sock.connect(path)
        break
    except OSError as exc:
        if time.monotonic() >= deadline:
            give_up(exc.strerror)
        time.sleep(0.05)
line()  # the greeting
sock.sendall(b'{"execute": "qmp_capabilities"}\n')
reply()
status = 0
for command in commands:
    sock.sendall(command.encode() + b"\n")
    text, message = reply()
    print(text, flush=True)
    if "error" in message:
        status = 1
sys.exit(status)
EOF
}
