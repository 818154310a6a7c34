# shellcheck shell=bash
# A real tiny Linux guest with qemu-ga, and the guest-agent test double, for bats tests:
# `load lib/guest` (it loads lib/qemu too).
#
#   guest_build
#       builds the guest (tests/lib/build-guest.sh) once per set of inputs and caches it in
#       ${VZ_TEST_CACHE:-/var/cache/vzdump-qemu-tests}/guest-KEY; sets and exports
#       GUEST_KERNEL and GUEST_INITRD. Fails loudly (never skips) when it cannot.
#   guest_start WORKDIR [QEMU-ARGS...]
#       boots the guest under TCG and returns once it printed GUEST-READY (at most 90 s).
#       WORKDIR gets guestdisk.raw (64 MiB ext4, made if missing; the guest's /dev/vda on
#       /mnt), console.log, qga.sock (the agent's chardev), qmp.sock, qemu.pid, qemu.out,
#       qemu.err. The disk is node drive-virtio0 (over file node gfile) on the
#       virtio-blk-pci device virtio0; WORKDIR/guestdisk.qcow2 instead, as qcow2, when it
#       exists (a restored disk). Extra QEMU arguments are appended (more disks).
#   guest_stop WORKDIR
#       quits QEMU through QMP, or kills it, and waits until it is gone.
#   guest_exec WORKDIR PROGRAM [ARG...]
#       runs PROGRAM in the guest with guest-exec; prints its stdout (its stderr goes to
#       stderr); exit status is the program's. Not while the guest is frozen (the agent
#       refuses guest-exec then).
#   guest_counter WORKDIR
#       prints the last "COUNTER n" value the guest's writer printed on the console
#       (works while the guest is frozen, unlike guest_exec).
#   qga_double_start SOCKET [qga-double.py OPTIONS...]
#       starts tests/lib/qga-double.py on SOCKET (log in SOCKET.log unless --log is given,
#       pid in SOCKET.pid) and returns once it listens.
#   qga_double_stop SOCKET
#       stops it (SIGTERM) and waits until it is gone.
#   host_qga_start SOCKET
#       starts the host's real qemu-ga in unix-listen mode on SOCKET (state folder
#       SOCKET.state, pid in SOCKET.pid, output in SOCKET.out) with every RPC blocked except
#       a few read-only ones (HOST_QGA_ALLOWED): guest-sync-delimited, guest-sync,
#       guest-ping, guest-info, guest-get-time, guest-get-timezone, guest-get-osinfo,
#       guest-get-host-name. For wire-protocol tests against the real agent. Never send it a
#       guest-fsfreeze-* command, blocked or not: it would act on this machine.
#   host_qga_stop SOCKET
# Also: $QGA_CLIENT (tests/lib/qga-client.py) and $QGA_DOUBLE (tests/lib/qga-double.py).

_GUEST_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib/qemu.bash
source "$_GUEST_LIB_DIR/qemu.bash"
QGA_CLIENT=$_GUEST_LIB_DIR/qga-client.py
QGA_DOUBLE=$_GUEST_LIB_DIR/qga-double.py

guest_build() {
	local script=$_GUEST_LIB_DIR/build-guest.sh
	local cache=${VZ_TEST_CACHE:-/var/cache/vzdump-qemu-tests}
	local inputs key dir
	if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
		echo "guest_build: cannot write the cache folder $cache (set VZ_TEST_CACHE)" >&2
		return 1
	fi
	inputs=$("$script" --inputs) || {
		echo "guest_build: $script --inputs failed" >&2
		return 1
	}
	# The key changes with the build script and with the kernel, qemu-ga and busybox versions.
	key=$({
		cat "$script"
		echo "$inputs"
	} | sha256sum | cut -c1-16)
	dir=$cache/guest-$key
	if [ ! -s "$dir/initrd.img" ]; then
		# One builder at a time; the others wait and then find the result. The build goes to a
		# temporary folder that is renamed into place, so a reader never sees half a guest.
		(
			flock -w 900 9 || {
				echo "guest_build: timed out waiting for $cache/.lock" >&2
				exit 1
			}
			[ -s "$dir/initrd.img" ] && exit 0
			# Holding the lock, any temporary build folder is a leftover of a killed build.
			rm -rf "$cache"/.build-*
			tmp=$(mktemp -d "$cache/.build-XXXXXX") || exit 1
			if ! "$script" "$tmp" >"$tmp/build.log" 2>&1; then
				echo "guest_build: $script failed:" >&2
				cat "$tmp/build.log" >&2
				rm -rf "$tmp"
				exit 1
			fi
			chmod 755 "$tmp"
			mv -T "$tmp" "$dir" || exit 1
			# Guests built from older inputs are of no further use.
			find "$cache" -mindepth 1 -maxdepth 1 -name 'guest-*' ! -name "guest-$key" \
				-exec rm -rf {} +
		) 9>"$cache/.lock" 3>&- || return 1
	fi
	export GUEST_KERNEL=$dir/vmlinuz GUEST_INITRD=$dir/initrd.img
}

guest_start() { # WORKDIR [QEMU-ARGS...]
	local wd i pid disk fmt=raw drv=file
	wd=$(cd "$1" && pwd) || return 1
	shift
	if [ -z "${GUEST_KERNEL:-}" ] || [ -z "${GUEST_INITRD:-}" ]; then
		guest_build || return 1
	fi
	disk=$wd/guestdisk.raw
	if [ -e "$wd/guestdisk.qcow2" ]; then
		disk=$wd/guestdisk.qcow2
		fmt=qcow2
	elif [ ! -e "$wd/guestdisk.raw" ]; then
		truncate -s 64M "$wd/guestdisk.raw" && mkfs.ext4 -q -F "$wd/guestdisk.raw" || return 1
	fi
	# (guestdisk.raw may be a link to a block device, which QEMU opens as a host_device.)
	[ ! -b "$disk" ] || drv=host_device
	rm -f "$wd/console.log" "$wd/qga.sock"
	_qemu_launch "$wd" -machine q35,accel=tcg -nodefaults -display none \
		-qmp "unix:$wd/qmp.sock,server=on,wait=off" \
		-m 256 -smp 1 -no-reboot \
		-kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" -append "console=ttyS0 panic=-1 quiet" \
		-chardev "file,id=con0,path=$wd/console.log" -serial chardev:con0 \
		-device virtio-serial-pci,id=vser0 \
		-chardev "socket,id=qga0,path=$wd/qga.sock,server=on,wait=off" \
		-device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0 \
		-blockdev "driver=$drv,node-name=gfile,filename=$disk" \
		-blockdev "driver=$fmt,node-name=drive-virtio0,file=gfile" \
		-device virtio-blk-pci,drive=drive-virtio0,id=virtio0 \
		"$@" || return 1
	pid=$(cat "$wd/qemu.pid")
	# Boot takes 5-7 s under TCG on 2 cores; allow for a loaded CI machine.
	for ((i = 0; i < 900; i++)); do
		if grep -q '^GUEST-READY' "$wd/console.log" 2>/dev/null; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "guest_start: QEMU exited before GUEST-READY" >&2
			break
		fi
		sleep 0.1
	done
	[ "$i" -lt 900 ] || echo "guest_start: no GUEST-READY within 90 s" >&2
	grep -a '^GUEST-FAILED' "$wd/console.log" >&2 2>/dev/null
	echo "--- qemu.err:" >&2
	cat "$wd/qemu.err" >&2
	echo "--- last lines of console.log:" >&2
	tail -n 30 "$wd/console.log" >&2 2>/dev/null
	qemu_stop "$wd"
	return 1
}

guest_stop() { # WORKDIR
	qemu_stop "$1"
}

guest_exec() { # WORKDIR PROGRAM [ARG...]
	local wd=$1
	shift
	"$QGA_CLIENT" --timeout 30 "$wd/qga.sock" exec "$@" 3>&-
}

guest_counter() { # WORKDIR
	sed -n 's/^COUNTER \([0-9][0-9]*\).*/\1/p' "$1/console.log" | tail -n 1
}

qga_double_start() { # SOCKET [OPTIONS...]
	local sock=$1 i pid log=()
	shift
	case " $* " in
	*" --log "*) ;;
	*) log=(--log "$sock.log") ;;
	esac
	rm -f "$sock.pid"
	"$QGA_DOUBLE" "$sock" --pidfile "$sock.pid" "${log[@]}" "$@" \
		</dev/null >"$sock.out" 2>&1 3>&- &
	pid=$!
	# The pid file is written once the socket listens.
	for ((i = 0; i < 200; i++)); do
		[ -s "$sock.pid" ] && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "qga_double_start: qga-double.py exited:" >&2
			cat "$sock.out" >&2
			return 1
		fi
		sleep 0.05
	done
	echo "qga_double_start: $sock not ready after 10 s" >&2
	return 1
}

qga_double_stop() { # SOCKET
	local pid
	pid=$(cat "$1.pid" 2>/dev/null) || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	_qemu_wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null
	return 0
}

HOST_QGA_ALLOWED="guest-sync-delimited guest-sync guest-ping guest-info guest-get-time guest-get-timezone guest-get-osinfo guest-get-host-name"

host_qga_start() { # SOCKET
	local sock=$1 rpc blocked='' i pid
	# Block by allowlist, so that an RPC added in a later qemu-ga is blocked too.
	for rpc in $(qemu-ga -b help 2>/dev/null); do
		case " $HOST_QGA_ALLOWED " in
		*" $rpc "*) ;;
		*) blocked=$blocked${blocked:+,}$rpc ;;
		esac
	done
	case ,$blocked, in
	*,guest-fsfreeze-freeze,*) ;;
	*)
		echo "host_qga_start: cannot get qemu-ga's RPC list to block; not starting it" >&2
		return 1
		;;
	esac
	mkdir -p "$sock.state"
	rm -f "$sock" "$sock.pid"
	qemu-ga -m unix-listen -p "$sock" -t "$sock.state" -b "$blocked" \
		</dev/null >"$sock.out" 2>&1 3>&- &
	pid=$!
	echo "$pid" >"$sock.pid"
	for ((i = 0; i < 200; i++)); do
		[ -S "$sock" ] && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "host_qga_start: qemu-ga exited:" >&2
			cat "$sock.out" >&2
			return 1
		fi
		sleep 0.05
	done
	echo "host_qga_start: no socket $sock after 10 s" >&2
	return 1
}

host_qga_stop() { # SOCKET
	qga_double_stop "$1"
	rm -f "$1" "$1.pid"
}
