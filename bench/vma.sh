#!/bin/bash
# Benchmarks of vma-create and vma-extract against baselines measured in the same run (issue
# #14's figures, each goal printed beside its ratio: reported, never asserted):
#   file-512M    512 MiB of incompressible data in the page cache -> /dev/null, against cat
#                (goal: 0.95x)
#   file-2G      the same with 2 GiB (goal: 0.95x)
#   sparse       a 4 GiB sparse file holding 40 MiB of data, against cat (goal: 40x); and
#                /bin/true against cat, for reference (the start of a process alone)
#   nbd          the 2 GiB file exported by qemu-nbd, against nbdcopy to null:
#   zstd         -z zstd -T 2, against zstd -T2 compressing the same uncompressed VMA
#                (goal: 1.1x)
#   zstd-files   -z zstd -T 2 of 256 MiB of real files (a tar of /usr/lib), where the
#                seekable archive's frames of 1 MiB cost ratio, against one zstd frame:
#                vma-create piped into zstd -T2 (as vzdump does it); time (goal: 0.95x, at
#                most 5 % slower) and size (goal: at most 1.02x)
#   restore      vma-extract ARCHIVE DIR of the archive of a 512 MiB disk of random data, to
#                the disk, against cp of the raw disk file + sync (goal: 0.9x)
#   verify-zstd  vma-extract -t of that archive compressed by zstd, against zstd -d -c to
#                /dev/null (goal: 1x)
#   gzip         -z gzip -T 1 of a 128 MiB disk, half text, half random data, against gzip -c
#                compressing the same uncompressed VMA (level 6 both); gzip-T2: -z gzip -T 2
#                (independent members of 1 MiB), against pigz -p 2; lzo: -z lzo, against lzop -c.
#                Each also prints both archives' sizes and their ratio (ours / baseline's).
# One line per figure: both times (best of RUNS, the two sides taking turns), the throughput
# ratio (baseline time / our time: above 1 means faster), and both peak RSS values (goal: ours
# at most 64 MiB).
#   VZ_BIN     folder of the built tools (default: build/cc/bin)
#   BENCH_DIR  where a new folder for the 2 GiB of test files is made (default: /var/tmp)
#   RUNS       repetitions per side, the fastest counts (default: 5)
#   FIGURES    the figures to measure (default: all of them, "file-512M file-2G sparse nbd
#              zstd zstd-files restore verify-zstd gzip gzip-T2 lzo")
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
VZ_BIN=${VZ_BIN:-$top/build/cc/bin}
RUNS=${RUNS:-5}
FIGURES=${FIGURES:-file-512M file-2G sparse nbd zstd zstd-files restore verify-zstd gzip gzip-T2 lzo}
create=$VZ_BIN/vma-create
extract=$VZ_BIN/vma-extract
# shellcheck source=bench/lib/common.bash
source "$top/bench/lib/common.bash"
need_tools vma-create vma-extract
dir=$(bench_dir vma-bench)
trap '[ -s "$dir/nbd.pid" ] && kill "$(cat "$dir/nbd.pid")"; rm -rf "$dir"' EXIT

# best_of CMD...: runs CMD (its stdout to /dev/null) RUNS times, each after the command in
# $BEFORE (untimed, when set); sets BEST (seconds) and RSS (KiB). The clock is the shell's own
# (no process started around the timed run: a run of a few milliseconds would otherwise
# measure mostly `date` and `time`); the peak RSS comes from one more run under
# /usr/bin/time, untimed (none when RSS_TOO=0: RSS is then left as it was).
best_of() {
	local i start end t
	BEST=''
	for ((i = 0; i < RUNS; i++)); do
		[ -z "${BEFORE:-}" ] || $BEFORE
		start=${EPOCHREALTIME/./}
		"$@" >/dev/null
		end=${EPOCHREALTIME/./}
		t=$(echo "scale=6; ($end - $start) / 1000000" | bc)
		if [ -z "$BEST" ] || [ "$(echo "$t < $BEST" | bc)" = 1 ]; then BEST=$t; fi
	done
	[ "${RSS_TOO:-1}" = 1 ] || return 0
	[ -z "${BEFORE:-}" ] || $BEFORE
	/usr/bin/time -f %M -o "$dir/rss" "$@" >/dev/null
	RSS=$(cat "$dir/rss")
}

report() { # NAME TOOL BASELINE-NAME [GOAL]: uses BASE_T BASE_RSS OUR_T OUR_RSS
	local ratio goal=''
	ratio=$(echo "scale=4; $BASE_T / $OUR_T" | bc)
	if [ -n "${4:-}" ]; then
		goal=" (goal ${4}x: $([ "$(echo "$ratio >= $4" | bc)" = 1 ] && echo met || echo missed))"
	fi
	printf '%-11s %-11s %7.3f s (peak RSS %6d KiB)   %-8s %7.3f s (peak RSS %6d KiB)   ratio %.2fx%s\n' \
		"$1" "$2" "$OUR_T" "$OUR_RSS" "$3" "$BASE_T" "$BASE_RSS" "$ratio" "$goal"
}

# best_of_turns: best_of for the baseline "${base[@]}" and for ours "${ours[@]}", one run of
# each in turn, so that a change in the machine's load meets both alike; sets BASE_T, BASE_RSS,
# OUR_T and OUR_RSS.
best_of_turns() {
	local i
	BASE_T='' BASE_RSS=0 OUR_T='' OUR_RSS=0
	for ((i = 0; i < RUNS; i++)); do
		RSS_TOO=$((i == 0)) RUNS=1 best_of "${base[@]}"
		if [ -z "$BASE_T" ] || [ "$(echo "$BEST < $BASE_T" | bc)" = 1 ]; then BASE_T=$BEST; fi
		[ "$i" != 0 ] || BASE_RSS=$RSS
		RSS_TOO=$((i == 0)) RUNS=1 best_of "${ours[@]}"
		if [ -z "$OUR_T" ] || [ "$(echo "$BEST < $OUR_T" | bc)" = 1 ]; then OUR_T=$BEST; fi
		[ "$i" != 0 ] || OUR_RSS=$RSS
	done
}

wanted() { [[ " $FIGURES " == *" $1 "* ]]; }

# size_report NAME OUR-FILE BASELINE-FILE [GOAL]: both sizes and their ratio (ours /
# baseline's), and whether it is at most GOAL.
size_report() {
	local ours base ratio goal=''
	ours=$(stat -c %s "$2")
	base=$(stat -c %s "$3")
	ratio=$(echo "scale=6; $ours / $base" | bc)
	if [ -n "${4:-}" ]; then
		goal=" (goal at most ${4}x: $([ "$(echo "$ratio <= $4" | bc)" = 1 ] && echo met || echo missed))"
	fi
	printf '%-11s size %d bytes, baseline %d bytes: ratio %.4f%s\n' "$1" "$ours" "$base" \
		"$ratio" "$goal"
}

echo "bench/vma.sh: $(nproc) CPUs, files in $dir"
# The 2 GiB of random data, for the figures that read it.
for f in file-512M file-2G sparse nbd zstd restore verify-zstd; do
	if wanted "$f"; then
		head -c 2G /dev/urandom >"$dir/data.raw"
		cat "$dir/data.raw" >/dev/null # into the page cache
		break
	fi
done

if wanted file-512M; then
	head -c 512M "$dir/data.raw" >"$dir/data512.raw"
	cat "$dir/data512.raw" >/dev/null
	base=(cat "$dir/data512.raw")
	ours=("$create" drive-scsi0="$dir/data512.raw")
	best_of_turns
	report file-512M vma-create cat 0.95
	rm -f "$dir/data512.raw"
fi

if wanted file-2G; then
	cat "$dir/data.raw" >/dev/null
	base=(cat "$dir/data.raw")
	ours=("$create" drive-scsi0="$dir/data.raw")
	best_of_turns
	report file-2G vma-create cat 0.95
fi

if wanted sparse; then
	truncate -s 4G "$dir/sparse.raw"
	# 40 MiB of data in 10 pieces of 4 MiB spread over the disk
	for ((i = 0; i < 10; i++)); do
		dd if="$dir/data.raw" of="$dir/sparse.raw" bs=4M skip="$i" seek=$((i * 100)) count=1 \
			conv=notrunc status=none
	done
	base=(cat "$dir/sparse.raw")
	ours=("$create" drive-scsi0="$dir/sparse.raw")
	best_of_turns
	report sparse vma-create cat 40
	# For reference: the start of a process alone, against the same cat. The goal leaves
	# (1/40 - 1/this ratio) of cat's time for the whole of the archive's work.
	ours=(/bin/true)
	best_of_turns
	printf '%-11s reference: /bin/true %7.3f s, against cat %.2fx (what a process start alone reaches)\n' \
		sparse "$OUR_T" "$(echo "scale=4; $BASE_T / $OUR_T" | bc)"
	rm -f "$dir/sparse.raw"
fi

if wanted nbd; then
	qemu-nbd --read-only --persistent --shared=8 --format=raw --socket="$dir/nbd.sock" \
		--pid-file="$dir/nbd.pid" "$dir/data.raw" </dev/null >/dev/null 2>&1 &
	for ((i = 0; i < 100; i++)); do [ -S "$dir/nbd.sock" ] && break; sleep 0.05; done
	uri="nbd+unix:///?socket=$dir/nbd.sock"
	best_of nbdcopy "$uri" null:
	BASE_T=$BEST BASE_RSS=$RSS
	best_of "$create" drive-scsi0="$uri"
	OUR_T=$BEST OUR_RSS=$RSS
	report nbd vma-create nbdcopy
fi

if wanted zstd; then
	"$create" drive-scsi0="$dir/data.raw" >"$dir/plain.vma"
	base=(zstd -q -T2 -c "$dir/plain.vma")
	ours=("$create" -z zstd -T 2 drive-scsi0="$dir/data.raw")
	best_of_turns
	report zstd vma-create "zstd -T2" 1.1
	rm -f "$dir/plain.vma"
fi

# The restore writes to the same file system as the copy; before each run, what the last one
# wrote goes and everything is flushed, untimed. Both read their input from the page cache.
fresh_target() {
	rm -rf "$dir/restored" "$dir/copy.raw"
	sync
}

if wanted restore || wanted verify-zstd; then
	head -c 512M "$dir/data.raw" >"$dir/disk.raw"
	"$create" -o "$dir/disk.vma" drive-scsi0="$dir/disk.raw"
	cat "$dir/disk.raw" "$dir/disk.vma" >/dev/null
fi

if wanted restore; then
	BEFORE=fresh_target
	# the copy, then the flush to disk that vma-extract's fsync does
	# shellcheck disable=SC2016 # sh -c's program is single-quoted: its $1 and $2 are its own
	base=(sh -c 'cp "$1" "$2" && sync' sh "$dir/disk.raw" "$dir/copy.raw")
	ours=("$extract" "$dir/disk.vma" "$dir/restored")
	best_of_turns
	cmp "$dir/disk.raw" "$dir/restored/disk-drive-scsi0.raw"
	fresh_target
	BEFORE=
	report restore vma-extract "cp+sync" 0.9
fi

if wanted verify-zstd; then
	zstd -q -T2 -c "$dir/disk.vma" >"$dir/disk.vma.zst"
	cat "$dir/disk.vma.zst" >/dev/null
	base=(zstd -q -d -c "$dir/disk.vma.zst")
	ours=("$extract" -t "$dir/disk.vma.zst")
	best_of_turns
	report verify-zstd "vma-extract" "zstd -d" 1
fi

# gzip and lzo compress: a disk half text (which they shrink), half random data (which they
# store), compressed by vma-create and, uncompressed, by the tool Proxmox pipes it through.
if wanted gzip || wanted gzip-T2 || wanted lzo; then
	{
		seq 1 20000000 | head -c 64M
		head -c 64M /dev/urandom
	} >"$dir/mixed.raw"
	"$create" -o "$dir/mixed.vma" drive-scsi0="$dir/mixed.raw"
	cat "$dir/mixed.raw" "$dir/mixed.vma" >/dev/null
fi

# compress_figure NAME BASELINE-NAME GOAL OUR-ARGS... -- BASELINE...: the time, then the sizes
# (against $SIZE_GOAL when set).
compress_figure() {
	local name=$1 base_name=$2 goal=$3
	shift 3
	ours=()
	while [ "$1" != -- ]; do
		ours+=("$1")
		shift
	done
	shift
	base=("$@")
	best_of_turns
	report "$name" vma-create "$base_name" "$goal"
	"${ours[@]}" >"$dir/ours.out"
	"${base[@]}" >"$dir/base.out"
	size_report "$name" "$dir/ours.out" "$dir/base.out" "${SIZE_GOAL:-}"
	rm -f "$dir/ours.out" "$dir/base.out"
}

if wanted gzip; then
	compress_figure gzip "gzip" "" "$create" -z gzip -T 1 drive-scsi0="$dir/mixed.raw" -- \
		gzip -c "$dir/mixed.vma"
fi
if wanted gzip-T2; then
	compress_figure gzip-T2 "pigz -p2" "" "$create" -z gzip -T 2 drive-scsi0="$dir/mixed.raw" -- \
		pigz -p 2 -c "$dir/mixed.vma"
fi
if wanted zstd-files; then
	tar -cf - /usr/lib 2>/dev/null | head -c 256M >"$dir/files.raw" || true
	cat "$dir/files.raw" >/dev/null
	# shellcheck disable=SC2016 # sh -c's program is single-quoted: its $1 and $2 are its own
	SIZE_GOAL=1.02 compress_figure zstd-files "|zstd -T2" 0.95 \
		"$create" -z zstd -T 2 drive-scsi0="$dir/files.raw" -- \
		sh -c '"$1" drive-scsi0="$2" | zstd -q -T2 -c' sh "$create" "$dir/files.raw"
	rm -f "$dir/files.raw"
fi
if wanted lzo; then
	compress_figure lzo "lzop" "" "$create" -z lzo drive-scsi0="$dir/mixed.raw" -- \
		lzop -c "$dir/mixed.vma"
fi
