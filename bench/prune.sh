#!/bin/bash
# Benchmark: vzdump-prune deciding over 100 000 backups in one directory, against listing the
# same directory with `ls -f` (the cheapest way to read it) measured in the same run.
# Prints one line: both times (best of RUNS), the ratio, and both peak RSS values.
#   VZ_BIN  folder of the built tools (default: build/cc/bin)
#   COUNT   number of backups (default: 100000)
#   RUNS    repetitions per side, the fastest counts (default: 5)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
VZ_BIN=${VZ_BIN:-$top/build/cc/bin}
COUNT=${COUNT:-100000}
RUNS=${RUNS:-5}
prune=$VZ_BIN/vzdump-prune
export TZ=UTC LC_ALL=C

[ -x "$prune" ] || { echo "bench/prune.sh: $prune: not built" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench/prune.sh: /usr/bin/time is missing (package time)" >&2; exit 1; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# 100 guests, one backup every hour back from 2025-01-01.
make_names() {
	local per_vm=$(((COUNT + 99) / 100)) vmid i t made=0 start=1735689600
	for ((vmid = 100; vmid < 200 && made < COUNT; vmid++)); do
		for ((i = 0; i < per_vm && made < COUNT; i++, made++)); do
			t=$((start - i * 3600 - vmid))
			printf "vzdump-qemu-%d-%(%Y_%m_%d-%H_%M_%S)T.vma.zst\n" "$vmid" "$t"
		done
	done
}
(cd "$dir" && make_names | xargs touch)
found=$(find "$dir" -name 'vzdump-qemu-*' | wc -l)
[ "$found" -eq "$COUNT" ] || { echo "bench/prune.sh: made $found files, wanted $COUNT" >&2; exit 1; }

# Best wall time of RUNS runs of "$@", in microseconds.
best_us() {
	local best=0 start end us r
	for ((r = 0; r < RUNS; r++)); do
		start=${EPOCHREALTIME/./}
		"$@" >/dev/null
		end=${EPOCHREALTIME/./}
		us=$((end - start))
		if [ "$best" -eq 0 ] || [ "$us" -lt "$best" ]; then best=$us; fi
	done
	echo "$best"
}

# Peak resident set size of one run of "$@", in KiB.
peak_kib() {
	/usr/bin/time -f '%M' -o "$dir.rss" "$@" >/dev/null
	cat "$dir.rss"
	rm -f "$dir.rss"
}

policy=(--keep-last 3 --keep-hourly 24 --keep-daily 7 --keep-weekly 4 --keep-monthly 12
	--keep-yearly 5)
baseline_us=$(best_us ls -f "$dir")
prune_us=$(best_us "$prune" -n "${policy[@]}" "$dir")
baseline_kib=$(peak_kib ls -f "$dir")
prune_kib=$(peak_kib "$prune" -n "${policy[@]}" "$dir")
removed=$("$prune" -n "${policy[@]}" "$dir" | grep -c '^remove')

awk -v n="$COUNT" -v p="$prune_us" -v b="$baseline_us" -v pk="$prune_kib" -v bk="$baseline_kib" \
	-v rm="$removed" 'BEGIN {
	printf "prune: %d backups (%d to remove): vzdump-prune -n %.3f s, ls -f %.3f s, ratio %.1fx; peak RSS %d KiB vs %d KiB\n",
		n, rm, p / 1e6, b / 1e6, (b > 0 ? p / b : 0), pk, bk
}'
