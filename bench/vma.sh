#!/bin/bash
# Benchmarks of vma-create against baselines measured in the same run (issue #14's figures, the
# goal printed beside each; reported, never asserted):
#   file-512M  512 MiB of incompressible data in the page cache -> /dev/null, against cat
#              (goal >= 0.95x)
#   file-2G    the same with 2 GiB (goal >= 0.95x)
#   sparse     a 4 GiB sparse file holding 40 MiB of data, against cat (goal >= 40x)
#   nbd        the 2 GiB file exported by qemu-nbd, against nbdcopy to null:
#   zstd       -z zstd -T 2, against zstd -T2 compressing the same uncompressed VMA (goal >= 1.1x)
# One line per figure: both times (best of RUNS), the throughput ratio (baseline time / our
# time: above 1 means faster), and both peak RSS values (goal: ours <= 64 MiB).
#   VZ_BIN     folder of the built tools (default: build/cc/bin)
#   BENCH_DIR  where the 2 GiB of test files go (default: a new folder under /var/tmp)
#   RUNS       repetitions per side, the fastest counts (default: 5)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
VZ_BIN=${VZ_BIN:-$top/build/cc/bin}
RUNS=${RUNS:-5}
create=$VZ_BIN/vma-create
[ -x "$create" ] || { echo "bench/vma.sh: $create: not built" >&2; exit 1; }
dir=${BENCH_DIR:-$(mktemp -d /var/tmp/vma-bench.XXXXXX)}
mkdir -p "$dir"
trap '[ -s "$dir/nbd.pid" ] && kill "$(cat "$dir/nbd.pid")"; rm -rf "$dir"' EXIT

# best_of CMD...: runs CMD (its stdout to /dev/null) RUNS times; sets BEST (seconds) and RSS (KiB).
best_of() {
	local i start end t
	BEST='' RSS=0
	for ((i = 0; i < RUNS; i++)); do
		start=$(date +%s%N)
		/usr/bin/time -f %M -o "$dir/rss" "$@" >/dev/null
		end=$(date +%s%N)
		t=$(echo "scale=4; ($end - $start) / 1000000000" | bc)
		if [ -z "$BEST" ] || [ "$(echo "$t < $BEST" | bc)" = 1 ]; then BEST=$t; fi
		if [ "$(cat "$dir/rss")" -gt "$RSS" ]; then RSS=$(cat "$dir/rss"); fi
	done
}

report() { # NAME BASELINE-NAME [GOAL]: uses BASE_T BASE_RSS OUR_T OUR_RSS
	local ratio goal=''
	ratio=$(echo "scale=4; $BASE_T / $OUR_T" | bc)
	if [ -n "${3:-}" ]; then
		goal=" (goal >= ${3}x: $([ "$(echo "$ratio >= $3" | bc)" = 1 ] && echo met || echo missed))"
	fi
	printf '%-10s vma-create %7.3f s (peak RSS %6d KiB)   %-8s %7.3f s (peak RSS %6d KiB)   ratio %.2fx%s\n' \
		"$1" "$OUR_T" "$OUR_RSS" "$2" "$BASE_T" "$BASE_RSS" "$ratio" "$goal"
}

echo "bench/vma.sh: $(nproc) CPUs, files in $dir"
head -c 2G /dev/urandom >"$dir/data.raw"
head -c 512M "$dir/data.raw" >"$dir/data512.raw"
cat "$dir/data.raw" "$dir/data512.raw" >/dev/null # into the page cache

best_of cat "$dir/data512.raw"
BASE_T=$BEST BASE_RSS=$RSS
best_of "$create" drive-scsi0="$dir/data512.raw"
OUR_T=$BEST OUR_RSS=$RSS
report file-512M cat 0.95
rm -f "$dir/data512.raw"

best_of cat "$dir/data.raw"
BASE_T=$BEST BASE_RSS=$RSS
best_of "$create" drive-scsi0="$dir/data.raw"
OUR_T=$BEST OUR_RSS=$RSS
report file-2G cat 0.95

truncate -s 4G "$dir/sparse.raw"
# 40 MiB of data in 10 pieces of 4 MiB spread over the disk
for ((i = 0; i < 10; i++)); do
	dd if="$dir/data.raw" of="$dir/sparse.raw" bs=4M skip="$i" seek=$((i * 100)) count=1 \
		conv=notrunc status=none
done
best_of cat "$dir/sparse.raw"
BASE_T=$BEST BASE_RSS=$RSS
best_of "$create" drive-scsi0="$dir/sparse.raw"
OUR_T=$BEST OUR_RSS=$RSS
report sparse cat 40
rm -f "$dir/sparse.raw"

qemu-nbd --read-only --persistent --shared=8 --format=raw --socket="$dir/nbd.sock" \
	--pid-file="$dir/nbd.pid" "$dir/data.raw" </dev/null >/dev/null 2>&1 &
for ((i = 0; i < 100; i++)); do [ -S "$dir/nbd.sock" ] && break; sleep 0.05; done
uri="nbd+unix:///?socket=$dir/nbd.sock"
best_of nbdcopy "$uri" null:
BASE_T=$BEST BASE_RSS=$RSS
best_of "$create" drive-scsi0="$uri"
OUR_T=$BEST OUR_RSS=$RSS
report nbd nbdcopy

"$create" drive-scsi0="$dir/data.raw" >"$dir/plain.vma"
best_of zstd -q -T2 -c "$dir/plain.vma"
BASE_T=$BEST BASE_RSS=$RSS
best_of "$create" -z zstd -T 2 drive-scsi0="$dir/data.raw"
OUR_T=$BEST OUR_RSS=$RSS
report zstd "zstd -T2" 1.1
