#!/bin/bash
# make demo: a live, point-in-time backup of a throw-away running VM with vzdump.sh, shown step
# by step. QEMU (TCG, no OS) runs with two disks of known content, a raw image on virtio-blk and
# a qcow2 image on scsi-hd, its QMP socket where Proxmox has it (RUNDIR/VMID.qmp) and its config
# in qemu-server.conf syntax. vzdump.sh backs it up into a zstd-compressed VMA archive; the
# archive is listed, verified and restored with vma-extract, and every restored disk is compared
# with the disk content at backup time.
#
# With GUEST=1 the VM is the cached test guest (tests/lib/guest.bash), booted, with qemu-ga:
# vzdump.sh freezes its filesystem through the real agent, and the restored ext4 disk, which the
# guest kept writing to, must be clean (e2fsck -fn) and hold the counter of the freeze instant.
# Then qmrestore.sh restores the archive as a new VM 200 with qcow2 images, and QEMU boots it:
# its agent must answer, and its writer go on from the counter in the backup.
#
#   VZ_BIN  folder of the built tools (default: build/cc/bin)
#   GUEST   1 for the booted guest (default 0)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${VZ_BIN:-$top/build/cc/bin}" && pwd)
if [ ! -x "$bin/vma-create" ]; then
	echo "demo: no built tools in $bin (run make first)" >&2
	exit 1
fi
PATH="$bin:$top:$PATH"
case ${GUEST:-0} in
0 | '') guest=0 ;;
1) guest=1 ;;
*)
	echo "demo: GUEST must be 0 or 1, not '$GUEST'" >&2
	exit 2
	;;
esac
# shellcheck source=tests/lib/guest.bash
source "$top/tests/lib/guest.bash"

vmid=100
work=$(mktemp -d /var/tmp/vzdump-demo.XXXXXX)
vm=$work/vm     # disk images (and, with GUEST=1, the guest's sockets and console log)
rundir=$work/run # RUNDIR: VMID.qmp, VMID.qga, VMID.pid
confdir=$work/conf # CONFDIR: VMID.conf
dumpdir=$work/dump # DUMPDIR: the archive and its log
mkdir "$vm" "$rundir" "$confdir" "$dumpdir" "$work/tmp"
started=$(date +%s)
echo "W=$work  (the demo's private work folder, removed at the end)"

# QEMU started by the bare demo (-daemonize): quit it through QMP, or kill it by its pid file.
# shellcheck disable=SC2317 # run by the EXIT trap
stop_bare() {
	local pid i
	pid=$(cat "$rundir/$vmid.pid" 2>/dev/null) || return 0
	grep -qa qemu-system "/proc/$pid/cmdline" 2>/dev/null || return 0
	qmpctl -s "$rundir/$vmid.qmp" -t 5 quit >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.05
	done
	kill -KILL "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # run by the traps
cleanup() {
	local status=$?
	trap - EXIT INT TERM HUP
	if [ "$guest" = 1 ]; then
		guest_stop "$vm" >/dev/null 2>&1 || true
		guest_stop "$work/vm200" >/dev/null 2>&1 || true
	else
		stop_bare
	fi
	rm -rf "$work"
	exit "$status"
}
trap cleanup EXIT
trap 'echo "demo: interrupted; cleaning up" >&2; exit 130' INT
trap 'echo "demo: terminated; cleaning up" >&2; exit 143' TERM HUP
cd "$work"

# Commands are shown with the work folder as $W, so that they can be pasted after W=... .
say() {
	local text=$*
	text=${text//"$work"/\$W}
	if [ -t 1 ]; then printf '\n\033[1m$ %s\033[0m\n' "$text"; else printf '\n$ %s\n' "$text"; fi
}
run() { say "$*"; "$@"; }
note() {
	if [ -t 1 ]; then printf '\n\033[1m# %s\033[0m\n' "$*"; else printf '\n# %s\n' "$*"; fi
}

# Prints a command line one option per line, as a user would write it in a script.
show_command() { # ARG...
	local arg line=$1
	shift
	for arg in "$@"; do
		case $arg in *[!A-Za-z0-9_./=:,+@%-]*) arg="'$arg'" ;; esac
		arg=${arg//"$work"/\$W}
		case $arg in
		-*)
			printf '%s \\\n' "$line"
			line="    $arg"
			;;
		*) line+=" $arg" ;;
		esac
	done
	printf '%s\n' "$line"
}

# Seconds, with one decimal, since a time in ms (date +%s%3N).
seconds_since() { # MS
	local ms=$(($(date +%s%3N) - $1))
	echo "$((ms / 1000)).$((ms % 1000 / 100))"
}

# sha256 of a disk's guest-visible bytes; -U, as the running QEMU holds the image's lock.
disk_sha() { # IMAGE FORMAT
	local raw=$work/sha.raw
	if [ "$2" = raw ]; then
		sha256sum <"$1" | cut -d' ' -f1
	else
		qemu-img convert -U -f "$2" -O raw "$1" "$raw"
		sha256sum <"$raw" | cut -d' ' -f1
		rm -f "$raw"
	fi
}

random_part=$work/random.bin
head -c 16M /dev/urandom >"$random_part"

# The qcow2 disk, in both variants: 256 MiB + 3.5 KiB (a size that is no multiple of the 64 KiB
# VMA cluster), a pattern, random data and a pattern in the odd tail; the rest never written.
disk1=$vm/vm-$vmid-disk-1.qcow2
qemu-img create -q -f qcow2 "$disk1" $((256 * 1024 * 1024 + 3584))
qemu-io -f qcow2 -c "write -P 0x42 64M 16M" -c "write -s $random_part 200M 8M" \
	-c "write -P 0x5a 256M 3584" "$disk1" >/dev/null
# shellcheck disable=SC2054 # the commas are inside QEMU options
scsi_args=(
	-device virtio-scsi-pci,id=scsihw0
	-blockdev "driver=file,node-name=f1,filename=$disk1"
	-blockdev driver=qcow2,node-name=drive-scsi0,file=f1
	-device scsi-hd,drive=drive-scsi0,id=scsi0,bus=scsihw0.0
)

if [ "$guest" = 0 ]; then
	echo "A throw-away VM $vmid: QEMU under TCG with no OS (its firmware finds nothing to boot and"
	echo "writes nothing), a 128 MiB raw disk on virtio-blk and a 256 MiB qcow2 disk on scsi-hd."
	disk0=$vm/vm-$vmid-disk-0.raw
	truncate -s 128M "$disk0"
	dd if="$random_part" of="$disk0" bs=1M seek=8 conv=notrunc status=none
	qemu-io -f raw -c "write -P 0xa5 100M 4M" "$disk0" >/dev/null
	# shellcheck disable=SC2054 # the commas are inside QEMU options
	qemu=(qemu-system-x86_64 -name "vm$vmid" -machine q35,accel=tcg -nodefaults -display none
		-m 128 -S -daemonize -pidfile "$rundir/$vmid.pid"
		-qmp "unix:$rundir/$vmid.qmp,server=on,wait=off"
		-blockdev "driver=file,node-name=f0,filename=$disk0"
		-blockdev driver=raw,node-name=drive-virtio0,file=f0
		-device virtio-blk-pci,drive=drive-virtio0,id=virtio0
		"${scsi_args[@]}")
	note "QEMU as vzdump.sh expects it: QMP on RUNDIR/$vmid.qmp, each disk a node drive-KEY on a device KEY"
	show_command "${qemu[@]}"
	"${qemu[@]}"
	run qmpctl -s "$rundir/$vmid.qmp" cont
	cat >"$confdir/$vmid.conf" <<-CONF
		name: demo
		memory: 128
		virtio0: $disk0,size=128M
		scsi0: $disk1,size=268439040
	CONF
else
	echo "A throw-away VM $vmid: the test guest (Linux with qemu-ga, booted under TCG) writing a"
	echo "counter into its 64 MiB ext4 disk on virtio-blk every 100 ms, and a 256 MiB qcow2 disk on"
	echo "scsi-hd that it does not touch."
	echo "(built from Debian packages on first use, which downloads its kernel and takes a while,"
	echo "then cached in ${VZ_TEST_CACHE:-/var/cache/vzdump-qemu-tests})"
	guest_build
	echo "guest kernel and initrd: ${GUEST_INITRD%/*}"
	disk0=$vm/guestdisk.raw
	boot=$(date +%s%3N)
	guest_start "$vm" "${scsi_args[@]}"
	echo "booted in $(seconds_since "$boot") s"
	mapfile -d '' -t qemu <"/proc/$(cat "$vm/qemu.pid")/cmdline"
	note "QEMU as started by tests/lib/guest.bash (its QMP and agent sockets linked into RUNDIR)"
	show_command "${qemu[@]}"
	ln -s "$vm/qmp.sock" "$rundir/$vmid.qmp"
	ln -s "$vm/qga.sock" "$rundir/$vmid.qga"
	run ls -l "$rundir"
	cat >"$confdir/$vmid.conf" <<-CONF
		name: demo-guest
		memory: 256
		agent: 1
		virtio0: $disk0,size=64M
		scsi0: $disk1,size=268439040
	CONF
fi
run qmpctl -s "$rundir/$vmid.qmp" query-status
run cat "$confdir/$vmid.conf"

# The content at backup time: the bare VM writes nothing, so its disk files are that content;
# the guest only writes to its own disk, which is checked by its filesystem instead.
note "sha256 of the disks' content as the backup starts"
sha_virtio0=
[ "$guest" = 1 ] || sha_virtio0=$(disk_sha "$disk0" raw)
sha_scsi0=$(disk_sha "$disk1" qcow2)
[ "$guest" = 1 ] || echo "virtio0  $sha_virtio0"
echo "scsi0    $sha_scsi0"

backup_start=$(date +%s%3N)
say "vzdump.sh --compress zstd --dumpdir $dumpdir --tmpdir $work/tmp --confdir $confdir --rundir $rundir $vmid"
if ! vzdump.sh --compress zstd --dumpdir "$dumpdir" --tmpdir "$work/tmp" --confdir "$confdir" \
	--rundir "$rundir" "$vmid" 2>"$work/vzdump.err"; then
	cat "$work/vzdump.err"
	echo "demo: vzdump.sh failed" >&2
	exit 1
fi
backup_secs=$(seconds_since "$backup_start")
echo "($backup_secs s; its task log went to stderr, and to the .log file next to the archive)"
archive=$(echo "$dumpdir"/vzdump-qemu-$vmid-*.vma.zst)
logfile=${archive%.vma.zst}.log
run ls -l "$dumpdir"
run cat "$logfile"
if [ "$guest" = 1 ]; then
	note "the freeze, from the log"
	grep -E "fs-freeze|fs-thaw|frozen for" "$logfile"
	# The hook lines and the counter lines around them; the writer blocks while frozen.
	note "the guest's console around the freeze (its qemu-ga fsfreeze hook prints FSFREEZE-HOOK)"
	tr -d '\r' <"$vm/console.log" >"$work/console.txt"
	first=$(grep -n -m1 '^FSFREEZE-HOOK freeze' "$work/console.txt" | cut -d: -f1)
	last=$(grep -n -m1 '^FSFREEZE-HOOK thaw' "$work/console.txt" | cut -d: -f1)
	if [ -z "$first" ] || [ -z "$last" ]; then
		echo "demo: the guest's console shows no FSFREEZE-HOOK freeze and thaw" >&2
		exit 1
	fi
	sed -n "$((first > 3 ? first - 3 : 1)),$((last + 3))p" "$work/console.txt"
	before=$(head -n "$first" "$work/console.txt" | sed -n 's/^COUNTER \([0-9]*\)$/\1/p' | tail -n 1)
	after=$(tail -n "+$last" "$work/console.txt" | sed -n 's/^COUNTER \([0-9]*\)$/\1/p' | head -n 1)
fi

run vma-extract -l "$archive"
run vma-extract -c qemu-server.conf "$archive"
run vma-extract -t -v "$archive"
run vma-extract -v "$archive" "$work/restored"
run ls -ls "$work/restored"

status=0
# Compares the restored disk KEY with its sha256 at backup time; a difference fails the demo.
compare_disk() { # KEY SHA256
	local got
	got=$(sha256sum <"$work/restored/disk-drive-$1.raw" | cut -d' ' -f1)
	if [ "$got" = "$2" ]; then
		echo "IDENTICAL  $1  sha256 $got"
	else
		echo "DIFFERENT  $1  sha256 $got, at backup time $2"
		status=1
	fi
}
if [ "$guest" = 0 ]; then
	note "the restored disks against the content at backup time"
	compare_disk virtio0 "$sha_virtio0"
	compare_disk scsi0 "$sha_scsi0"
else
	note "the restored scsi0 disk, which the guest does not write, against its content at backup time"
	compare_disk scsi0 "$sha_scsi0"
	note "the restored ext4 disk, which the guest kept writing to: a consistent filesystem?"
	restored0=$work/restored/disk-drive-virtio0.raw
	run e2fsck -fn "$restored0" || status=1
	say "debugfs -R 'cat /counter' $restored0"
	counter=$(debugfs -R 'cat /counter' "$restored0" 2>/dev/null)
	echo "$counter"
	say "debugfs -R 'cat /hook.log' $restored0"
	debugfs -R 'cat /hook.log' "$restored0" 2>/dev/null
	if [[ $counter =~ ^[0-9]+$ ]] && [ "$counter" -ge "${before:-0}" ] &&
		[ "$counter" -le "${after:-0}" ]; then
		echo "CONSISTENT  the counter in the image, $counter, is from the freeze (the guest printed $before before it, $after after the thaw)"
	else
		echo "INCONSISTENT  the counter in the image is '$counter'; the guest printed $before before the freeze, $after after the thaw"
		status=1
	fi
fi
if grep -v '^#qmdump#' "$work/restored/qemu-server.conf" | cmp -s - "$confdir/$vmid.conf"; then
	echo "IDENTICAL  qemu-server.conf  (the config, plus vzdump's #qmdump#map lines)"
else
	echo "DIFFERENT  qemu-server.conf"
	status=1
fi
if [ "$guest" = 1 ]; then
	note "qmrestore.sh: the archive back as a new VM 200, its images qcow2, and booted"
	mkdir "$work/images" "$work/conf200" "$work/vm200"
	run qmrestore.sh --storage "$work/images" --confdir "$work/conf200" --rundir "$rundir" \
		--format qcow2 "$archive" 200
	run cat "$work/conf200/200.conf"
	run ls -l "$work/images/200"
	# QEMU on the restored virtio0 image, as tests/lib/guest.bash starts the guest.
	ln -s "$work/images/200/vm-200-disk-0.qcow2" "$work/vm200/guestdisk.qcow2"
	boot=$(date +%s%3N)
	if ! guest_start "$work/vm200"; then
		echo "demo: the restored VM 200 does not boot" >&2
		exit 1
	fi
	echo "VM 200 booted in $(seconds_since "$boot") s"
	say "guest agent of VM 200: cat /mnt/hook.log"
	guest_exec "$work/vm200" /bin/cat /mnt/hook.log || status=1
	first200=$(tr -d '\r' <"$work/vm200/console.log" | sed -n 's/^COUNTER \([0-9]*\)$/\1/p' | head -n 1)
	if [ -n "$first200" ] && [ "$first200" = "$((counter + 1))" ]; then
		echo "RESTORED  VM 200 booted from its qcow2 image, its agent answers, and its writer went on from the backup's counter $counter with $first200"
	else
		echo "NOT RESTORED  VM 200's writer began with '$first200', the backup's counter is $counter"
		status=1
	fi
fi
echo
if [ "$status" = 0 ]; then
	echo "demo done in $(($(date +%s) - started)) s (the backup took $backup_secs s); removing $work"
else
	echo "demo FAILED: the restored VM is not what was backed up; removing $work" >&2
fi
exit "$status"
