#!/bin/bash
# Benchmark of vma-extract --serve (issue #18's figures, each goal printed beside its figure:
# reported, never asserted), on seekable .vma.zst archives of two 2 GiB disks: real files (a
# tar of /usr, compressible as a VM's disk is: each frame read costs decompressing 1 MiB) and
# random data (stored, which zstd reads back at the speed of a copy):
#   random      1 000 reads of 4 KiB at random offsets by one qemu-io over the served export,
#               against the same reads by qemu-io over qemu-nbd serving the extracted raw disk
#               (goal: at least 1 000 reads/s)
#   sequential  nbdcopy of the served export to null:, against zstd -d -c of the archive to
#               /dev/null (goal: 0.8x its throughput)
#   server      our NBD server core (common/nbd_server.c) against nbdkit's: an uncompressed
#               .vma of the files disk served by --serve, against the raw disk served by
#               nbdkit's file plugin, both read-only on a unix socket; the same random reads
#               and nbdcopy as above (no goal: the figure behind the man page's choice of a
#               server of our own)
# One line per figure: both times (best of RUNS), the reads per second or the ratio, and the
# server's peak RSS.
#   VZ_BIN     folder of the built tools (default: build/cc/bin)
#   BENCH_DIR  where a new folder for the test files is made (default: /var/tmp)
#   RUNS       repetitions per side, the fastest counts (default: 3)
#   PARTS      which of them to run (default: "files server random": the two disks' figures,
#              and the server row on the files disk)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
VZ_BIN=${VZ_BIN:-$top/build/cc/bin}
RUNS=${RUNS:-3}
PARTS=" ${PARTS:-files server random} "
create=$VZ_BIN/vma-create
extract=$VZ_BIN/vma-extract
# shellcheck source=bench/lib/common.bash
source "$top/bench/lib/common.bash"
need_tools vma-create vma-extract
need_commands qemu-io qemu-nbd nbdcopy nbdkit zstd bc
dir=$(bench_dir serve-bench)
stop() { # PIDFILE
	[ -s "$1" ] || return 0
	kill "$(cat "$1")" 2>/dev/null || true
	while kill -0 "$(cat "$1")" 2>/dev/null; do sleep 0.05; done
	rm -f "$1"
}
trap 'stop "$dir/serve.pid"; stop "$dir/nbd.pid"; rm -rf "$dir"' EXIT

wait_socket() { # SOCKET
	local i
	for ((i = 0; i < 600; i++)); do
		[ -S "$1" ] && return 0
		sleep 0.05
	done
	echo "bench/serve.sh: $1 never appeared" >&2
	return 1
}

# best CMD...: the fastest of RUNS runs (seconds) in BEST, by the shell's own clock.
best() {
	local i start end t
	BEST=''
	for ((i = 0; i < RUNS; i++)); do
		start=${EPOCHREALTIME/./}
		"$@" >/dev/null
		end=${EPOCHREALTIME/./}
		t=$(echo "scale=6; ($end - $start) / 1000000" | bc)
		if [ -z "$BEST" ] || [ "$(echo "$t < $BEST" | bc)" = 1 ]; then BEST=$t; fi
	done
}

# serve_both ARCHIVE: ARCHIVE served by --serve (pid in serve.pid) beside the baseline server
# the caller started on nbd.sock (pid in nbd.pid); both awaited, their URIs in ours and theirs.
serve_both() {
	"$extract" --serve "$dir/serve.sock" "$1" 2>"$dir/serve.err" &
	echo $! >"$dir/serve.pid"
	wait_socket "$dir/serve.sock"
	wait_socket "$dir/nbd.sock"
	ours="nbd+unix:///drive-scsi0?socket=$dir/serve.sock"
	theirs="nbd+unix:///?socket=$dir/nbd.sock"
}

stop_both() {
	stop "$dir/serve.pid"
	stop "$dir/nbd.pid"
	rm -f "$dir/serve.sock" "$dir/nbd.sock"
}

# The 1 000 random reads from both servers: the best times in our_t and base_t.
random_reads() {
	best qemu-io -r -f raw "$ours" "${reads[@]}"
	our_t=$BEST
	best qemu-io -r -f raw "$theirs" "${reads[@]}"
	base_t=$BEST
}

# peak_rss PIDFILE: the peak resident size (KiB) of the process PIDFILE names.
peak_rss() {
	awk '/VmHWM/ { print $2 }' "/proc/$(cat "$dir/$1")/status"
}

# figures KIND: both figures on the disk in $dir/disk.raw, labelled KIND.
figures() {
	local kind=$1 our_t base_t per_s ratio ours theirs
	rm -f "$dir/disk.vma.zst"
	"$create" -z zstd -o "$dir/disk.vma.zst" drive-scsi0="$dir/disk.raw"
	cat "$dir/disk.vma.zst" >/dev/null
	qemu-nbd --read-only --persistent --shared=8 --format=raw --socket="$dir/nbd.sock" \
		--pid-file="$dir/nbd.pid" "$dir/disk.raw" </dev/null >/dev/null 2>&1 &
	serve_both "$dir/disk.vma.zst"

	random_reads
	per_s=$(echo "scale=0; 1000 / $our_t" | bc)
	printf '%-6s random      --serve %7.3f s (%d reads/s)   qemu-nbd of the raw disk %7.3f s (%d reads/s)   (goal 1000 reads/s: %s)\n' \
		"$kind" "$our_t" "$per_s" "$base_t" "$(echo "scale=0; 1000 / $base_t" | bc)" \
		"$([ "$per_s" -ge 1000 ] && echo met || echo missed)"

	best nbdcopy "$ours" null:
	our_t=$BEST
	best zstd -q -d -c "$dir/disk.vma.zst"
	base_t=$BEST
	ratio=$(echo "scale=4; $base_t / $our_t" | bc)
	printf '%-6s sequential  --serve %7.3f s   zstd -d %7.3f s   ratio %.2fx (goal 0.8x: %s)\n' \
		"$kind" "$our_t" "$base_t" "$ratio" \
		"$([ "$(echo "$ratio >= 0.8" | bc)" = 1 ] && echo met || echo missed)"
	echo "$kind peak RSS of vma-extract --serve: $(peak_rss serve.pid) KiB"
	stop_both
}

# server_figures: --serve of an uncompressed archive of $dir/disk.raw against nbdkit's file
# plugin serving the disk itself.
server_figures() {
	local our_t base_t ours theirs
	rm -f "$dir/disk.vma"
	"$create" -o "$dir/disk.vma" drive-scsi0="$dir/disk.raw"
	cat "$dir/disk.vma" "$dir/disk.raw" >/dev/null
	nbdkit --readonly --unix "$dir/nbd.sock" --pidfile "$dir/nbd.pid" file "$dir/disk.raw"
	serve_both "$dir/disk.vma"
	random_reads
	printf 'server random      --serve of a .vma %7.3f s (%d reads/s)   nbdkit file of the raw disk %7.3f s (%d reads/s)   ratio %.2fx\n' \
		"$our_t" "$(echo "scale=0; 1000 / $our_t" | bc)" "$base_t" \
		"$(echo "scale=0; 1000 / $base_t" | bc)" "$(echo "scale=4; $base_t / $our_t" | bc)"
	best nbdcopy "$ours" null:
	our_t=$BEST
	best nbdcopy "$theirs" null:
	base_t=$BEST
	printf 'server sequential  --serve of a .vma %7.3f s   nbdkit file of the raw disk %7.3f s   ratio %.2fx\n' \
		"$our_t" "$base_t" "$(echo "scale=4; $base_t / $our_t" | bc)"
	echo "server peak RSS of vma-extract --serve: $(peak_rss serve.pid) KiB, of nbdkit: $(peak_rss nbd.pid) KiB"
	stop_both
	rm -f "$dir/disk.vma"
}

# The same 1 000 random offsets for every server, 4 KiB-aligned, as a file system reads.
reads=()
for ((i = 0; i < 1000; i++)); do
	reads+=(-c "read $(((RANDOM * 32768 + RANDOM) % 524288 * 4096)) 4k")
done

echo "bench/serve.sh: $(nproc) CPUs, files in $dir"
{
	tar -cf - /usr 2>/dev/null || true
} | head -c 2G >"$dir/disk.raw"
truncate -s 2G "$dir/disk.raw"
case $PARTS in *" files "*) figures files ;; esac
case $PARTS in *" server "*) server_figures ;; esac
if [[ $PARTS == *" random "* ]]; then
	head -c 2G /dev/urandom >"$dir/disk.raw"
	figures random
fi
