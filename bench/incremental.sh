#!/bin/bash
# Benchmark of incremental archives (vma-create --listen --incremental, vma-extract of a
# chain) against baselines measured in the same run, each goal printed beside its figure
# (reported, never asserted). A bare QEMU (TCG, no guest, paused) has a raw disk of random
# data on virtio-blk; between backups, 1 % of its 64 KiB clusters are changed by scattered
# 64 KiB writes made through QEMU (HMP qemu-io on the device), so that its dirty bitmap sees
# them. Every backup is QEMU's own backup job pushing the disk into vma-create --listen.
#   backup   the incremental (sync=incremental, the bitmap cleared after the full), against
#            the full (sync=full) of the same disk, taking turns: from starting vma-create to
#            its end, the archive written and synced (goal: at most 0.10x of the full's time).
#            Also, for reference, an incremental of no change at all (the fixed cost).
#   size     the incremental archive's size, against the changed data (clusters x 64 KiB) plus
#            the header (the size of that incremental of no change: the same devices and
#            configurations, no cluster) (goal: at most 1.1x)
#   restore  vma-extract of a full and 6 incrementals (each 1 % changed, scattered, no cluster
#            changed twice) into a folder, against vma-extract of the full alone, both with
#            vma-extract's own fsync of the disk, both archives' files in the page cache, the
#            output removed and everything synced before each run, untimed (goal: at most
#            1.2x of the full's time). Both restored disks are checked against the disk as it
#            was at those backups (sha256).
# Times are the best of several runs, the two sides taking turns. The restores include writing
# and syncing the whole disk, which varies most on a busy machine (from 1.2 s to 6 s for the
# same 2 GiB in one minute, seen on a shared one): it gets more turns.
#   VZ_BIN        folder of the built tools (default: build/cc/bin)
#   SIZE_MIB      the disk's size in MiB (default: 2048)
#   BENCH_DIR     where a new folder for the disk and the archives is made (default: /var/tmp)
#   RUNS          backups per side, the fastest counts (default: 3)
#   RESTORE_RUNS  restores per side, the fastest counts (default: 5)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
VZ_BIN=${VZ_BIN:-$top/build/cc/bin}
SIZE_MIB=${SIZE_MIB:-2048}
RUNS=${RUNS:-3}
RESTORE_RUNS=${RESTORE_RUNS:-5}
PATH=$VZ_BIN:$PATH
me=bench/incremental.sh
CLUSTER=65536
INCREMENTALS=6

# shellcheck source=bench/lib/common.bash
source "$top/bench/lib/common.bash"
need_tools vma-create vma-extract qmpctl
need_commands qemu-system-x86_64 jq bc shuf sha256sum

# shellcheck source=tests/lib/qemu.bash
source "$top/tests/lib/qemu.bash"

dir=$(bench_dir incremental-bench)
server=
cleanup() {
	if [ -n "$server" ]; then
		kill "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
	fi
	qemu_stop "$dir/vm" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

size=$((SIZE_MIB * 1048576))
clusters=$(((size + CLUSTER - 1) / CLUSTER))
changed=$((clusters / 100))
[ "$changed" -gt 0 ] || die "SIZE_MIB=$SIZE_MIB: too small for 1 % of its clusters to be one"
qmp=$dir/vm/qmp.sock
sock=$dir/push.sock
dev=drive0

# The archives of the chain, named as vzdump.sh names them (parents are found by name).
full=$dir/vzdump-qemu-100-2026_12_01-00_00_00.vma
inc_name() { printf '%s/vzdump-qemu-100-2026_12_%02d-00_00_00.inc.vma' "$dir" $(($1 + 1)); }

# Seconds, from two microsecond stamps.
secs() { echo "scale=6; ($2 - $1) / 1000000" | bc; }
# The smaller of a best so far (or nothing) and a time.
best() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc)" = 1 ]; then echo "$2"; else echo "$1"; fi; }

# backup ARCHIVE [--incremental BLOB]: QEMU's backup job pushes the disk into vma-create
# --listen -o ARCHIVE: sync=full, or with a blob sync=incremental of the bitmap bm (cleared
# when the job succeeds). Sets TOOK: seconds from starting vma-create to its end (the job's
# conclusion waited for as an event, the target removed, the archive synced).
backup() {
	local out=$1 sync='"sync":"full"' start end rc=0 jobs
	shift
	[ $# = 0 ] || sync='"sync":"incremental","bitmap":"bm"'
	rm -f "$sock" "$out"
	start=${EPOCHREALTIME/./}
	vma-create --listen "$sock" -o "$out" "$@" "$dev=$size" 2>"$dir/server.err" &
	server=$!
	until [ -S "$sock" ]; do
		kill -0 "$server" 2>/dev/null || die "vma-create --listen failed: $(cat "$dir/server.err")"
		sleep 0.01
	done
	qmpctl -s "$qmp" -t 3600 -w JOB_STATUS_CHANGE -m id=j0 -m status=concluded -f - >/dev/null <<EOF ||
{"execute":"blockdev-add","arguments":{"driver":"nbd","node-name":"t0","server":{"type":"unix","path":"$sock"},"export":"$dev"}}
{"execute":"blockdev-backup","arguments":{"job-id":"j0","device":"$dev","target":"t0",$sync,"auto-dismiss":false}}
EOF
		die "the backup job into $out did not conclude"
	jobs=$(qmpctl -s "$qmp" -f - <<EOF
{"execute":"query-jobs"}
{"execute":"job-dismiss","arguments":{"id":"j0"}}
{"execute":"blockdev-del","arguments":{"node-name":"t0"}}
EOF
	) || die "dismissing the backup job into $out failed"
	wait "$server" || rc=$?
	end=${EPOCHREALTIME/./}
	server=
	[ "$(head -n 1 <<<"$jobs" | jq -r '.[] | select(.id == "j0") | .error // "none"')" = none ] ||
		die "the backup job into $out failed: $(head -n 1 <<<"$jobs")"
	[ "$rc" = 0 ] || die "vma-create --listen -o $out failed (exit $rc): $(cat "$dir/server.err")"
	TOOK=$(secs "$start" "$end")
}

# The incremental blob of an archive building on PARENT (depth DEPTH) in the chain of $full.
blob() { # PARENT DEPTH
	# shellcheck disable=SC2016 # jq's variables
	jq -n --arg pu "$(vma-extract -l --json "$1" | jq -r .uuid)" --arg pf "${1##*/}" \
		--arg fu "$(vma-extract -l --json "$full" | jq -r .uuid)" --argjson depth "$2" \
		--arg dev "$dev" --argjson size "$size" \
		'{format: "vzdump-qemu-incremental", version: 1, parent: {uuid: $pu, file: $pf},
		  full: {uuid: $fu}, depth: $depth,
		  devices: [{name: $dev, size: $size, bitmap: "bm"}]}' >"$dir/inc.json"
}

# change SET PATTERN: writes 64 KiB of the byte PATTERN (never 0) over each cluster of change
# set SET, through QEMU, in one batch of HMP commands.
change() {
	local c
	for c in "${sets[@]:$(($1 * changed)):changed}"; do
		printf '{"execute":"human-monitor-command","arguments":{"command-line":"qemu-io -d /machine/peripheral/virtio0/virtio-backend \\"write -P %d %d 64k\\""}}\n' \
			"$2" $((c * CLUSTER))
	done | qmpctl -s "$qmp" -t 600 -f - >"$dir/hmp.out" || die "writing change set $1 failed"
	! grep -qv '^""$' "$dir/hmp.out" || die "writing change set $1: $(grep -v '^""$' "$dir/hmp.out" | head -n 3)"
}

echo "$me: $(nproc) CPUs, files in $dir; load at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$me: a $SIZE_MIB MiB disk, $clusters clusters of 64 KiB, $changed changed (1 %) before each incremental"

# The change sets: INCREMENTALS sets of distinct clusters, scattered over the disk.
mapfile -t sets < <(shuf -i 0-$((clusters - 1)) -n $((INCREMENTALS * changed)))

head -c "${SIZE_MIB}M" /dev/urandom >"$dir/disk.raw"
cat "$dir/disk.raw" >/dev/null # into the page cache
mkdir "$dir/vm"
qemu_start_bare "$dir/vm" \
	-blockdev "driver=file,node-name=file0,filename=$dir/disk.raw" \
	-blockdev "driver=raw,node-name=$dev,file=file0" \
	-device "virtio-blk-pci,drive=$dev,id=virtio0" || die "QEMU did not start"
qmpctl -s "$qmp" block-dirty-bitmap-add node="$dev" name=bm persistent=false >/dev/null ||
	die "block-dirty-bitmap-add failed"

# --- backup and size -----------------------------------------------------------------------
# Each turn: a full, the bitmap cleared, an incremental of no change (the header), change set
# 0, the incremental. The last turn's full and incremental start the chain.
full_t='' inc_t='' none_t=''
for ((i = 0; i < RUNS; i++)); do
	backup "$full"
	full_t=$(best "$full_t" "$TOOK")
	qmpctl -s "$qmp" block-dirty-bitmap-clear node="$dev" name=bm >/dev/null ||
		die "block-dirty-bitmap-clear failed"
	[ "$i" != $((RUNS - 1)) ] || full_sha=$(sha256sum <"$dir/disk.raw")
	blob "$full" 1
	backup "$dir/none.inc.vma" --incremental "$dir/inc.json"
	none_t=$(best "$none_t" "$TOOK")
	change 0 $((i % 255 + 1))
	backup "$(inc_name 1)" --incremental "$dir/inc.json"
	inc_t=$(best "$inc_t" "$TOOK")
done
ratio=$(echo "scale=6; $inc_t / $full_t" | bc)
printf 'backup   incremental %8.3f s   full %8.3f s   ratio %.4fx (goal at most 0.10x: %s); no change: %.3f s\n' \
	"$inc_t" "$full_t" "$ratio" "$([ "$(echo "$ratio <= 0.10" | bc)" = 1 ] && echo met || echo missed)" \
	"$none_t"

inc_size=$(stat -c %s "$(inc_name 1)")
header=$(stat -c %s "$dir/none.inc.vma")
expected=$((changed * CLUSTER + header))
ratio=$(echo "scale=6; $inc_size / $expected" | bc)
printf 'size     incremental %d bytes   changed data + header %d bytes (%d x 64 KiB + %d)   ratio %.4fx (goal at most 1.1x: %s)\n' \
	"$inc_size" "$expected" "$changed" "$header" "$ratio" \
	"$([ "$(echo "$ratio <= 1.1" | bc)" = 1 ] && echo met || echo missed)"

# --- restore -------------------------------------------------------------------------------
for ((n = 2; n <= INCREMENTALS; n++)); do
	change $((n - 1)) $((n * 37 % 255 + 1))
	blob "$(inc_name $((n - 1)))" "$n"
	backup "$(inc_name "$n")" --incremental "$dir/inc.json"
done
qemu_stop "$dir/vm"
chain_sha=$(sha256sum <"$dir/disk.raw")
[ "$chain_sha" != "$full_sha" ] || die "the changes did not change the disk"
rm -f "$dir/disk.raw" "$dir/none.inc.vma"
last=$(inc_name "$INCREMENTALS")
cat "$full" "$dir"/*.inc.vma >/dev/null # into the page cache

fresh_target() {
	rm -rf "$dir/r-full" "$dir/r-chain"
	sync
}
chain_t='' alone_t=''
for ((i = 0; i < RESTORE_RUNS; i++)); do
	fresh_target
	start=${EPOCHREALTIME/./}
	vma-extract "$full" "$dir/r-full"
	end=${EPOCHREALTIME/./}
	alone_t=$(best "$alone_t" "$(secs "$start" "$end")")
	[ "$i" != $((RESTORE_RUNS - 1)) ] || [ "$(sha256sum <"$dir/r-full/disk-$dev.raw")" = "$full_sha" ] ||
		die "the full restored a disk that differs from the disk at its backup"
	fresh_target
	start=${EPOCHREALTIME/./}
	vma-extract "$last" "$dir/r-chain"
	end=${EPOCHREALTIME/./}
	chain_t=$(best "$chain_t" "$(secs "$start" "$end")")
done
[ "$(sha256sum <"$dir/r-chain/disk-$dev.raw")" = "$chain_sha" ] || die "the chain restored a disk that differs from the disk at its last backup"
ratio=$(echo "scale=6; $chain_t / $alone_t" | bc)
printf 'restore  full+%d incrementals %8.3f s   full alone %8.3f s   ratio %.4fx (goal at most 1.2x: %s); both disks checked\n' \
	"$INCREMENTALS" "$chain_t" "$alone_t" "$ratio" \
	"$([ "$(echo "$ratio <= 1.2" | bc)" = 1 ] && echo met || echo missed)"
