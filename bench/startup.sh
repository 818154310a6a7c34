#!/bin/bash
# Benchmark: start-up time of every tool, as `TOOL -h` against `/bin/true -h`, both started the
# same way from the same loop (one fork and exec each, stdout to /dev/null), in batches that
# alternate so that load on the machine falls on both alike (issue #14; goal: 2 ms over
# /bin/true). Per tool, one line of differences to /bin/true:
#   cpu   the mean CPU time (user + system) of one call, from the shell's `times` around each
#         batch: the work of mapping and relocating the libraries, little changed by load
#   wall  the median wall time of one call: what a caller waits, inflated by a loaded machine
# and the number of shared libraries the tool maps at start-up (ldd).
#   VZ_BIN  folder of the built tools (default: build/cc/bin)
#   RUNS    calls of each tool and of /bin/true (default: 500), in batches of BATCH (50)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
VZ_BIN=${VZ_BIN:-$top/build/cc/bin}
RUNS=${RUNS:-500}
BATCH=${BATCH:-50}
TOOLS=(vma-create vma-extract qmpctl gafreeze vzdump-prune vzdump-put)
export LC_ALL=C

for t in "${TOOLS[@]}"; do
	[ -x "$VZ_BIN/$t" ] || { echo "bench/startup.sh: $VZ_BIN/$t: not built" >&2; exit 1; }
done

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# Sets CHILDREN_US to the CPU time of all children so far (user + system), in microseconds.
# `times` is a builtin: redirected, it runs in this shell (in $(...) it would count the
# subshell's children).
children_us() {
	local user sys
	times >"$dir/times"
	read -r user sys < <(sed -n 2p "$dir/times")
	CHILDREN_US=$(awk -v u="$user" -v s="$sys" 'function us(t, p) { split(t, p, /[ms]/)
		return (p[1] * 60 + p[2]) * 1000000 } BEGIN { printf "%d\n", us(u) + us(s) + 0.5 }')
}

# median FILE: the median of the numbers in FILE, one a line.
median() {
	sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# batch WALL-FILE CMD...: BATCH calls of CMD, each call's wall time (us) appended to WALL-FILE;
# sets CPU_US to the batch's CPU time.
batch() {
	local file=$1 i start end cpu0
	shift
	children_us
	cpu0=$CHILDREN_US
	for ((i = 0; i < BATCH; i++)); do
		start=${EPOCHREALTIME/./}
		"$@" >/dev/null
		end=${EPOCHREALTIME/./}
		echo $((end - start)) >>"$file"
	done
	children_us
	CPU_US=$((CHILDREN_US - cpu0))
}

echo "bench/startup.sh: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $RUNS calls each, against /bin/true -h"
for t in "${TOOLS[@]}"; do
	: >"$dir/base" && : >"$dir/tool"
	base_cpu=0 tool_cpu=0
	for ((n = 0; n < RUNS; n += BATCH)); do
		batch "$dir/base" /bin/true -h
		base_cpu=$((base_cpu + CPU_US))
		batch "$dir/tool" "$VZ_BIN/$t" -h
		tool_cpu=$((tool_cpu + CPU_US))
	done
	calls=$(wc -l <"$dir/tool")
	libs=$(ldd "$VZ_BIN/$t" | grep -c '=> /')
	awk -v t="$t" -v n="$calls" -v bc="$base_cpu" -v tc="$tool_cpu" -v bw="$(median "$dir/base")" \
		-v tw="$(median "$dir/tool")" -v l="$libs" 'BEGIN {
		c = (tc - bc) / n / 1000; w = (tw - bw) / 1000
		printf "startup %-12s cpu %+6.2f ms (%5.2f against %5.2f)   wall %+6.2f ms (median %5.2f against %5.2f)   goal <= 2 ms: %-6s  %2d shared libraries\n",
			t, c, tc / n / 1000, bc / n / 1000, w, tw / 1000, bw / 1000, c <= 2 ? "met" : "missed", l }'
done
