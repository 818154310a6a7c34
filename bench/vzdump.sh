#!/bin/bash
# Benchmarks of vzdump.sh against baselines measured in the same run (issue figures):
#   copy    a live backup (no compression) of a running QEMU's 2 GiB disk of random data on
#           virtio-blk, against QEMU's own backup job pushing the same disk into nbdkit's null
#           plugin over the same kind of socket (connected, handed to QEMU with getfd).
#           Goal: at least 0.9x the baseline's throughput. For reference, also dd of the disk
#           into the dump folder with fsync (the archive's write path alone), and the CPU time
#           of each side (QEMU's included). Goal: the writer at most 1 CPU-s per GiB (its CPU
#           time taken by /usr/bin/time, which a vma-create of the bench's own on PATH puts
#           around the real one).
#   frozen  the guest's frozen window (freeze acknowledged -> thaw acknowledged, frozen_ms of
#           the --json summary) over FREEZE_RUNS backups of the test guest with `agent: 1`,
#           against a bare `gafreeze hold -- true` on the same guest (the least a freeze and a
#           thaw cost there), the two alternating. Goal: median <= the bare hold's median
#           + 5 ms. Also the steps of each: the freeze's round trip (freeze_ms), the QMP batch
#           inside the window (qmp_ms; the bare hold's `true`), the thaw (thaw_ms).
#   pause   the pause of an incremental backup (stop ... cont, the dirty bitmaps switched
#           inside it: the QMP batch, qmp_ms) over FREEZE_RUNS incremental backups of the test
#           guest, alternating with as many full ones (--incremental 0) as the baseline.
#           Goal: median <= 30 ms.
# Runs alternate baseline and vzdump.sh (so that a change in machine load hits both) and the
# median counts; goals are reported, never asserted. Exit 1 only when a backup or the
# baseline fails.
#   VZ_BIN       folder of the built tools (default: build/cc/bin)
#   VZDUMP       the script under test (default: vzdump.sh of this tree)
#   BENCH_DIR    where a new folder for the 2 GiB disk, the archives and the VMs' sockets
#                is made (default: /var/tmp; the archive is on the disk's filesystem)
#   RUNS         copy runs per side (default: 3)
#   FREEZE_RUNS  backups of the guest, and bare holds (default: 20)
#   PARTS        which of them to run (default: "copy frozen pause")
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
VZ_BIN=${VZ_BIN:-$top/build/cc/bin}
VZDUMP=${VZDUMP:-$top/vzdump.sh}
RUNS=${RUNS:-3}
FREEZE_RUNS=${FREEZE_RUNS:-20}
PARTS=" ${PARTS:-copy frozen pause} "
PATH=$VZ_BIN:$PATH
SIZE_MIB=2048

me=bench/vzdump.sh
# shellcheck source=bench/lib/common.bash
source "$top/bench/lib/common.bash"
need_tools qmpctl gafreeze vma-create
need_commands nbdkit qemu-system-x86_64 jq /usr/bin/time
nbdkit null --version >/dev/null 2>&1 || die "nbdkit's null plugin is missing"

# shellcheck source=tests/lib/guest.bash
source "$top/tests/lib/guest.bash"

dir=$(bench_dir vzdump-bench)
nbdkit_pid=
cleanup() {
	[ -z "$nbdkit_pid" ] || kill "$nbdkit_pid" 2>/dev/null || true
	qemu_stop "$dir/vm" >/dev/null 2>&1 || true
	guest_stop "$dir/guest" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

mkdir -p "$dir/vm" "$dir/guest" "$dir/run" "$dir/dump" "$dir/conf" "$dir/tmp"
ln -s "$dir/vm/qmp.sock" "$dir/run/100.qmp"
ln -s "$dir/guest/qmp.sock" "$dir/run/101.qmp"
ln -s "$dir/guest/qga.sock" "$dir/run/101.qga"

# Microseconds since the epoch.
now_us() { echo "${EPOCHREALTIME/./}"; }

# The middle value of its arguments (the lower middle for an even count), and min/max.
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
minimum() { printf '%s\n' "$@" | sort -n | head -n 1; }
maximum() { printf '%s\n' "$@" | sort -n | tail -n 1; }

# Each line of standard input with its arrival time (microseconds) in front.
stamp() {
	local line
	while IFS= read -r line; do printf '%s %s\n' "${EPOCHREALTIME/./}" "$line"; done
}

# CPU time (user + system, all threads) of a running process, in milliseconds.
clk_tck=$(getconf CLK_TCK)
cpu_ms() { # PID
	awk -v hz="$clk_tck" '{ sub(/^.*\) /, ""); printf "%d\n", ($12 + $13) * 1000 / hz }' "/proc/$1/stat"
}

# The arrival time of the first stamped line of FILE whose text starts with PREFIX.
stamp_of() { # FILE PREFIX
	awk -v p="$2" 'index(substr($0, index($0, " ") + 1), p) == 1 { print $1; exit }' "$1"
}

# Runs vzdump.sh over the bench's folders, the JSON summary to OUT.json, the stamped log to
# OUT.log; fails (with the log) unless the backup succeeded. Sets RUN_CPU_MS: the CPU time of
# vzdump.sh and everything it ran (vma-create, qmpctl, jq ...), not QEMU's.
run_vzdump() { # OUT ARGS...
	local out=$1 rc
	shift
	set +e
	{
		/usr/bin/time -f '%U %S' -o "$out.cpu" "$VZDUMP" --dumpdir "${DUMP_DIR:-$dir/dump}" \
			--tmpdir "$dir/tmp" --confdir "$dir/conf" --rundir "$dir/run" --json "$@" \
			2>&1 >"$out.json"
	} | stamp >"$out.log"
	rc=${PIPESTATUS[0]}
	set -e
	# The last line: GNU time puts "Command exited with non-zero status" before it.
	RUN_CPU_MS=$(tail -n 1 "$out.cpu" | awk '{ printf "%d\n", ($1 + $2) * 1000 }')
	if [ "$rc" != 0 ] || [ "$(jq -r .status "$out.json" 2>/dev/null)" != ok ]; then
		cut -d' ' -f2- "$out.log" >&2
		die "vzdump.sh $* failed (exit $rc)"
	fi
}

load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "$me: $(nproc) CPUs, files in $dir; load at start $(load)"

# --- copy: a 2 GiB disk of random data on a running (OS-less) QEMU --------------------------

if [[ $PARTS == *" copy "* ]]; then

head -c "${SIZE_MIB}M" /dev/urandom >"$dir/disk.raw"
cat "$dir/disk.raw" >/dev/null # into the page cache, for both sides alike
qemu_start_bare "$dir/vm" \
	-blockdev "driver=file,node-name=file0,filename=$dir/disk.raw" \
	-blockdev driver=raw,node-name=drive-virtio0,file=file0 \
	-device virtio-blk-pci,drive=drive-virtio0,id=virtio0 || die "QEMU did not start"
qmp=$dir/vm/qmp.sock
qemu_pid=$(cat "$dir/vm/qemu.pid")
qmpctl -s "$qmp" cont >/dev/null
printf 'virtio0: %s,size=2G\n' "$dir/disk.raw" >"$dir/conf/100.conf"

nbdkit -f -U "$dir/null.sock" null size="${SIZE_MIB}M" </dev/null >"$dir/nbdkit.log" 2>&1 &
nbdkit_pid=$!
for ((i = 0; i < 200; i++)); do [ -S "$dir/null.sock" ] && break; sleep 0.05; done
[ -S "$dir/null.sock" ] || die "nbdkit did not start: $(cat "$dir/nbdkit.log")"

# One baseline run: QEMU's backup job from the disk node into nbdkit's null plugin, the
# connected socket handed over with getfd; sets BASE_US (blockdev-backup to BLOCK_JOB_COMPLETED)
# and BASE_CPU_MS (QEMU's and nbdkit's CPU time meanwhile).
baseline() {
	local start end event cpu0
	qmpctl -s "$qmp" --fd "null0=unix-connect:$dir/null.sock" --json \
		'{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"bench-null",
		  "file":{"driver":"nbd","export":"","server":{"type":"fd","str":"null0"}}}}' >/dev/null ||
		die "blockdev-add of the nbdkit target failed"
	cpu0=$(($(cpu_ms "$qemu_pid") + $(cpu_ms "$nbdkit_pid")))
	start=$(now_us)
	qmpctl -s "$qmp" -t 600 -w BLOCK_JOB_COMPLETED -m device=bench-base \
		blockdev-backup job-id=bench-base device=drive-virtio0 target=bench-null sync=full \
		>"$dir/event" || die "the baseline backup job failed"
	end=$(now_us)
	BASE_CPU_MS=$(($(cpu_ms "$qemu_pid") + $(cpu_ms "$nbdkit_pid") - cpu0))
	event=$(tail -n 1 "$dir/event")
	[ "$(jq -r '.data | (.error == null and .offset == .len)' <<<"$event")" = true ] ||
		die "the baseline backup job failed: $event"
	qmpctl -s "$qmp" blockdev-del node-name=bench-null >/dev/null ||
		die "blockdev-del of the nbdkit target failed"
	BASE_US=$((end - start))
}

# The writer's CPU time: the driver finds vma-create on PATH, and this one runs the real one
# under /usr/bin/time, which appends "USER SYSTEM" seconds to $dir/writer.cpu.
mkdir "$dir/wrap"
printf '#!/bin/sh\nexec /usr/bin/time -a -f "%%U %%S" -o "%s" "%s" "$@"\n' \
	"$dir/writer.cpu" "$VZ_BIN/vma-create" >"$dir/wrap/vma-create"
chmod +x "$dir/wrap/vma-create"

# One vzdump.sh run; sets OUR_US (the whole run), COPY_US (from "starting backup via QMP
# command" to "backup is sparse", logged once the writer has finished the archive) and
# OUR_CPU_MS (QEMU's CPU time and vzdump.sh's with all it ran) and WRITER_CPU_MS.
ours() {
	local start end t0 t1 archive cpu0
	cpu0=$(cpu_ms "$qemu_pid")
	start=$(now_us)
	rm -f "$dir/writer.cpu"
	PATH=$dir/wrap:$PATH run_vzdump "$dir/copy" 100
	end=$(now_us)
	OUR_CPU_MS=$(($(cpu_ms "$qemu_pid") - cpu0 + RUN_CPU_MS))
	WRITER_CPU_MS=$(awk '{ printf "%d\n", ($1 + $2) * 1000 }' "$dir/writer.cpu")
	archive=$(jq -r '.vms[0].archive' "$dir/copy.json")
	[ "$(stat -c %s "$archive")" -gt $((SIZE_MIB * 1048576)) ] || die "$archive is too small"
	t0=$(stamp_of "$dir/copy.log" "INFO: starting backup via QMP command")
	t1=$(stamp_of "$dir/copy.log" "INFO: backup is sparse")
	OUR_US=$((end - start))
	COPY_US=$((t1 - t0))
	rm -f "$dir/dump"/*
}

# For reference, not a goal: the cost of the archive's write path alone, the disk copied into
# a file on the dump folder's filesystem and fsynced, as vma-create does with the archive.
# Sets DD_US.
write_path() {
	local start
	start=$(now_us)
	dd if="$dir/disk.raw" of="$dir/dump/dd.raw" bs=4M conv=fsync status=none ||
		die "dd into $dir/dump failed"
	DD_US=$(($(now_us) - start))
	rm -f "$dir/dump/dd.raw"
}

base_all=() our_all=() copy_all=() base_cpu=() our_cpu=() writer_cpu=() dd_all=()
for ((r = 0; r < RUNS; r++)); do
	baseline
	base_all+=("$BASE_US")
	base_cpu+=("$BASE_CPU_MS")
	write_path
	dd_all+=("$DD_US")
	ours
	our_all+=("$OUR_US")
	copy_all+=("$COPY_US")
	our_cpu+=("$OUR_CPU_MS")
	writer_cpu+=("$WRITER_CPU_MS")
done
load_copy=$(load)
kill "$nbdkit_pid" 2>/dev/null || true
nbdkit_pid=
qemu_stop "$dir/vm"
rm -f "$dir/disk.raw"

# Report lines: NAME, the median time, its throughput, every run, and against the baseline.
awk -v mib="$SIZE_MIB" -v runs="$RUNS" -v load="$load_copy" \
	-v b="$(median "${base_all[@]}")" -v ball="${base_all[*]}" \
	-v bcpu="$(median "${base_cpu[@]}")" \
	-v o="$(median "${our_all[@]}")" -v oall="${our_all[*]}" \
	-v ocpu="$(median "${our_cpu[@]}")" -v wcpu="$(median "${writer_cpu[@]}")" \
	-v c="$(median "${copy_all[@]}")" -v call="${copy_all[*]}" \
	-v d="$(median "${dd_all[@]}")" -v dall="${dd_all[*]}" '
function s(us) { return us / 1e6 }
function secs(list,   n, i, a, out) {
	n = split(list, a, " "); out = ""
	for (i = 1; i <= n; i++) out = out sprintf("%s%.2f", i > 1 ? " " : "", s(a[i]))
	return out
}
function line(name, t, all) {
	printf "copy    %-36s %6.2f s %6.1f MiB/s  (runs %s s)", name, s(t), mib / s(t), secs(all)
}
BEGIN {
	printf "copy    %d MiB of random data, median of %d runs each (load %s)\n", mib, runs, load
	line("baseline: QEMU backup -> nbdkit null", b, ball)
	printf "\n"
	line("vzdump.sh, whole run", o, oall)
	printf "  ratio %.2fx (goal >= 0.90x: %s)\n", b / o, (b / o >= 0.9 ? "met" : "missed")
	line("vzdump.sh, jobs started -> archive", c, call)
	printf "  ratio %.2fx\n", b / c
	line("reference: dd into the dump folder", d, dall)
	printf "  (the archive write path alone)\n"
	printf "copy    CPU time (QEMU + the rest): baseline %.2f s, vzdump.sh %.2f s, ratio %.2fx\n",
		bcpu / 1000, ocpu / 1000, bcpu / ocpu
	printf "copy    CPU time of the writer (vma-create): %.2f s, %.2f s per GiB (goal <= 1: %s)\n",
		wcpu / 1000, wcpu / 1000 / (mib / 1024), (wcpu / 1000 / (mib / 1024) <= 1 ? "met" : "missed")
}'
fi

# --- frozen: the test guest with its agent, FREEZE_RUNS backups -----------------------------

[[ $PARTS == *" frozen "* || $PARTS == *" pause "* ]] || exit 0

guest_build || die "cannot build the test guest"
guest_start "$dir/guest" || die "the test guest did not boot"
printf 'agent: 1\nvirtio0: %s\n' "$dir/guest/guestdisk.raw" >"$dir/conf/101.conf"

# A figure of a JSON object, or -1 when it is missing (tools that do not report it).
figure() { # JSON JQ-PATH
	jq -r "$2 // -1" <<<"$1"
}

our_frozen=() our_freeze=() our_qmp=() our_thaw=() took_all=()
bare_frozen=() bare_freeze=() bare_cmd=() bare_thaw=()
# One backup of the guest: its window and steps from vzdump.sh's --json summary.
frozen_ours() {
	local start out
	start=$(now_us)
	run_vzdump "$dir/frozen" 101
	took_all+=($((($(now_us) - start) / 1000)))
	out=$(jq -c '.vms[0]' "$dir/frozen.json")
	[[ $(figure "$out" .frozen_ms) =~ ^[0-9]+$ ]] || die "no frozen_ms in $out"
	our_frozen+=("$(figure "$out" .frozen_ms)")
	our_freeze+=("$(figure "$out" .freeze_ms)")
	our_qmp+=("$(figure "$out" .qmp_ms)")
	our_thaw+=("$(figure "$out" .thaw_ms)")
	rm -f "$dir/dump"/*
}
# The least a freeze costs with this guest and agent: nothing done while frozen.
frozen_bare() {
	local out
	out=$(gafreeze -s "$dir/guest/qga.sock" --json hold -- true 2>/dev/null) ||
		die "gafreeze hold on the test guest failed"
	[[ $(figure "$out" .frozen_ms) =~ ^[0-9]+$ ]] || die "no frozen_ms from gafreeze: $out"
	bare_frozen+=("$(figure "$out" .frozen_ms)")
	bare_freeze+=("$(figure "$out" .freeze_ms)")
	bare_cmd+=("$(figure "$out" .command_ms)")
	bare_thaw+=("$(figure "$out" .thaw_ms)")
}
for ((r = 0; r < FREEZE_RUNS; r++)); do
	[[ $PARTS == *" frozen "* ]] || break
	if ((r % 2 == 0)); then
		frozen_ours
		frozen_bare
	else
		frozen_bare
		frozen_ours
	fi
done

stats() { # VALUES...
	printf 'min %4d  median %4d  max %4d ms' "$(minimum "$@")" "$(median "$@")" "$(maximum "$@")"
}
# The median of each step, or "-" when the tools did not report it.
step() { # VALUES...
	local m
	m=$(median "$@")
	if [ "$m" -lt 0 ]; then printf '   -'; else printf '%4d' "$m"; fi
}
# --- pause: incremental backups of the test guest, and full ones --------------------------

inc_qmp=() full_qmp=()
# One backup of the guest into its own dump folder; its QMP batch (the pause) into the array
# named ARRAY. The incrementals' folder keeps its chain (--full-every above the runs).
pause_run() { # ARRAY DUMP-FOLDER ARGS...
	local -n into=$1
	local out
	mkdir -p "$2"
	DUMP_DIR=$2 run_vzdump "$dir/pause" "${@:3}" 101
	out=$(jq -c '.vms[0]' "$dir/pause.json")
	[[ $(figure "$out" .qmp_ms) =~ ^[0-9]+$ ]] || die "no qmp_ms in $out"
	into+=("$(figure "$out" .qmp_ms)")
}
if [[ $PARTS == *" pause "* ]]; then
	# The chain's full first.
	pause_run full_qmp "$dir/dump-inc" --incremental 1 --full-every 1000
	full_qmp=()
	for ((r = 0; r < FREEZE_RUNS; r++)); do
		pause_run inc_qmp "$dir/dump-inc" --incremental 1 --full-every 1000
		[ "$(jq -r '.vms[0].kind' "$dir/pause.json")" = incremental ] ||
			die "backup $((r + 1)) was a full: $(jq -r '.vms[0].full_reason' "$dir/pause.json")"
		pause_run full_qmp "$dir/dump-full"
		rm -f "$dir/dump-full"/*
	done
	printf 'pause   %d incremental backups of the test guest, alternating with as many full ones (load %s)\n' \
		"$FREEZE_RUNS" "$(load)"
	printf 'pause   incremental: stop ... cont  %s  (goal median <= 30 ms: %s)\n' \
		"$(stats "${inc_qmp[@]}")" "$([ "$(median "${inc_qmp[@]}")" -le 30 ] && echo met || echo missed)"
	printf 'pause   full:        stop ... cont  %s  (no bitmaps switched)\n' "$(stats "${full_qmp[@]}")"
fi
[[ $PARTS == *" frozen "* ]] || exit 0

med=$(median "${our_frozen[@]}")
bare=$(median "${bare_frozen[@]}")
printf 'frozen  %d backups of the test guest (agent: 1, 64 MiB disk), alternating with as many bare holds (load %s)\n' \
	"$FREEZE_RUNS" "$(load)"
printf 'frozen  vzdump.sh frozen_ms            %s  (goal median <= %d + 5 ms: %s)\n' \
	"$(stats "${our_frozen[@]}")" "$bare" "$([ "$med" -le $((bare + 5)) ] && echo met || echo missed)"
printf 'frozen  gafreeze hold -- true          %s  (freeze and thaw alone)\n' \
	"$(stats "${bare_frozen[@]}")"
printf 'frozen  medians of the steps: vzdump.sh freeze %s, QMP batch %s, thaw %s ms; bare hold freeze %s, true %s, thaw %s ms\n' \
	"$(step "${our_freeze[@]}")" "$(step "${our_qmp[@]}")" "$(step "${our_thaw[@]}")" \
	"$(step "${bare_freeze[@]}")" "$(step "${bare_cmd[@]}")" "$(step "${bare_thaw[@]}")"
printf 'frozen  every run: vzdump.sh %s ms; bare hold %s ms; each backup took a median of %d ms\n' \
	"${our_frozen[*]}" "${bare_frozen[*]}" "$(median "${took_all[@]}")"
