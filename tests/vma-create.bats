#!/usr/bin/env bats
# vma-create: archives that the independent checker accepts and vma-extract restores bit for bit.

setup() {
	load lib/common
	load lib/vma
	enter_work_dir
}

teardown() {
	for s in "$BATS_TEST_TMPDIR"/work/*.sock; do
		[ -e "$s" ] && nbd_stop "$s"
	done
	if [ -s "$BATS_TEST_TMPDIR/loop" ]; then
		losetup -d "$(cat "$BATS_TEST_TMPDIR/loop")"
	fi
	return 0
}

@test "vma-create round-trips random data of sizes 1, 4095, 4097, 65535 and 65537 bytes" {
	for size in 1 4095 4097 65535 65537; do
		random_file "d$size.raw" "$size"
		roundtrip "drive-scsi0=d$size.raw"
	done
}

@test "vma-create stores zero runs and holes as omitted blocks and restores them exactly" {
	truncate -s 10M mixed.raw
	random_file chunk 300000
	dd if=chunk of=mixed.raw bs=4096 seek=100 conv=notrunc status=none
	dd if=/dev/zero of=mixed.raw bs=4096 seek=1000 count=256 conv=notrunc status=none
	printf 'end' | dd of=mixed.raw bs=1 seek=$((10 * 1048576 - 3)) conv=notrunc status=none
	roundtrip drive-virtio0=mixed.raw
	# 300000 bytes span 74 blocks (73 full + 1 partial); the tail adds 1: nothing else is stored.
	run -0 vma_check --json rt.vma
	assert_equal "$(jq -r .stored_blocks <<<"$output")" 75
	assert_equal "$(jq -r .clusters <<<"$output")" 160
}

@test "vma-create round-trips a 100 MiB + 3.5 KiB disk with data, zeros and holes" {
	size=$((100 * 1048576 + 3584))
	truncate -s "$size" big.raw
	random_file chunk 8M
	dd if=chunk of=big.raw bs=1M seek=3 conv=notrunc status=none
	dd if=chunk of=big.raw bs=1M seek=60 conv=notrunc status=none
	random_file tail 3584
	dd if=tail of=big.raw bs=1 seek=$((100 * 1048576)) conv=notrunc status=none
	roundtrip drive-scsi0=big.raw
	assert_equal "$(stat -c %s rt/disk-drive-scsi0.raw)" "$size"
}

@test "vma-create stores a hole that runs to the end of a disk of 16 clusters and 1000 bytes" {
	truncate -s $((1048576 + 1000)) tailhole.raw
	printf 'head' | dd of=tailhole.raw conv=notrunc status=none
	roundtrip drive-scsi0=tailhole.raw
	assert_equal "$(stat -c %s rt/disk-drive-scsi0.raw)" $((1048576 + 1000))
	run -0 vma_check --json rt.vma
	assert_equal "$(jq -r .stored_blocks <<<"$output")" 1
	assert_equal "$(jq -r .clusters <<<"$output")" 17
}

@test "vma-create writes 20 devices into one archive and each comes back unchanged" {
	specs=()
	for i in $(seq 0 19); do
		random_file "d$i.raw" $((i * 10000 + 1))
		specs+=("drive-scsi$i=d$i.raw")
	done
	roundtrip "${specs[@]}"
	run -0 vma-extract -l rt.vma
	assert_equal "$(grep -c '^DEV: ' <<<"$output")" 20
	assert_line --index 19 "DEV: dev_id=20 size: 190001 devname: drive-scsi19"
}

@test "vma-create stores configs of 0 and 65535 bytes by their base names" {
	mkdir etc
	: >etc/empty.conf
	random_file etc/qemu-server.conf 65535
	random_file d.raw 5000
	run -0 vma-create -o a.vma -c etc/empty.conf -c etc/qemu-server.conf drive-scsi0=d.raw
	vma_check --strict a.vma
	run -0 vma-extract -l a.vma
	assert_line --index 0 "CFG: size: 0 name: empty.conf"
	assert_line --index 1 "CFG: size: 65535 name: qemu-server.conf"
	vma-extract a.vma out
	assert_equal "$(sha out/qemu-server.conf)" "$(sha etc/qemu-server.conf)"
	assert_equal "$(stat -c %s out/empty.conf)" 0
}

@test "vma-create refuses a config of 65536 bytes before writing anything" {
	random_file big.conf 65536
	random_file d.raw 5000
	run -2 vma-create -o a.vma -c big.conf drive-scsi0=d.raw
	assert_output "vma-create: config big.conf: larger than 65535 bytes"
	[ ! -e a.vma ]
	assert_equal "$(ls -A)" "$(printf 'big.conf\nd.raw')"
}

@test "vma-create refuses configs that need a header above Proxmox's 512 KiB, writing nothing" {
	random_file d.raw 5000
	args=()
	for i in 1 2 3 4 5 6 7 8 9; do
		random_file "c$i" 65535
		args+=(-c "c$i")
	done
	run -1 vma-create -o a.vma "${args[@]}" drive-scsi0=d.raw
	assert_output "vma-create: configs and names need a 602624-byte header; Proxmox's limit is 524288"
	run --separate-stderr -1 bash -c 'set -o pipefail; vma-create "$@" drive-scsi0=d.raw | wc -c' _ "${args[@]}"
	assert_output 0
	rm c[1-9]
	assert_equal "$(ls -A)" d.raw
}

@test "vma-create with no device writes the header and one empty extent" {
	echo "name: nodisk" >qemu-server.conf
	run -0 vma-create -o a.vma -c qemu-server.conf
	run -0 vma_check --strict --json a.vma
	assert_equal "$(jq -c '[.extents, .clusters, (.devices | length)]' <<<"$output")" "[1,0,0]"
	# header 12800 bytes (12288 + blobs rounded to 512) + one 512-byte extent
	assert_equal "$(stat -c %s a.vma)" 13312
	vma-extract a.vma out
	assert_equal "$(ls out)" "qemu-server.conf"
}

@test "vma-create compresses with zstd and xz into streams the standard tools decompress" {
	random_file d.raw 3000000
	truncate -s 8M d.raw
	vma-create -o plain.vma drive-scsi0=d.raw
	for codec in zstd zstd:12 xz xz:1; do
		vma-create -z "$codec" -T 2 -o "a.$codec" drive-scsi0=d.raw
		case $codec in
		zstd*) zstd -q -d -c "a.$codec" >"a.$codec.vma" ;;
		xz*) xz -d -c "a.$codec" >"a.$codec.vma" ;;
		esac
		vma_check --strict "a.$codec.vma"
		rm -rf out
		vma-extract "a.$codec" out
		assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha d.raw)"
	done
	# The compressed archives hold the same stream, apart from uuid, ctime and MD5s.
	assert_equal "$(stat -c %s a.zstd.vma)" "$(stat -c %s plain.vma)"
	[ "$(stat -c %s a.zstd)" -lt "$(stat -c %s plain.vma)" ]
	run -0 vma-create -z none -o none.vma drive-scsi0=d.raw
	assert_equal "$(head -c 4 none.vma)" "VMA"
}

@test "vma-create -z gzip and -z lzo: gzip -dc and lzop -dc give the uncompressed archive, byte for byte" {
	random_file d.raw 3000000
	truncate -s 8M d.raw
	random_file d2.raw 70000
	echo "name: vm100" >qemu-server.conf
	vma-create -o plain.vma -c qemu-server.conf drive-scsi0=d.raw drive-scsi1=d2.raw
	vma_sans_ids plain.vma plain.ids
	for codec in gzip gzip:1 gzip:9 lzo; do
		vma-create -z "$codec" -o "a.$codec" -c qemu-server.conf drive-scsi0=d.raw drive-scsi1=d2.raw
		case $codec in
		gzip*) gzip -t "a.$codec" && gzip -dc "a.$codec" >"a.$codec.vma" ;;
		lzo) lzop -t "a.$codec" && lzop -dc "a.$codec" >"a.$codec.vma" ;;
		esac
		vma_sans_ids "a.$codec.vma" "a.$codec.ids"
		cmp plain.ids "a.$codec.ids"
		vma_check --strict "a.$codec.vma"
		rm -rf out
		vma-extract "a.$codec" out
		assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha d.raw)"
		assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha d2.raw)"
	done
	[ "$(stat -c %s a.gzip:9)" -le "$(stat -c %s a.gzip:1)" ]
	# Only a config: an archive of one small block.
	for codec in gzip lzo; do
		vma-create -z "$codec" -o "conf.$codec" -c qemu-server.conf
		run -0 vma-extract -c qemu-server.conf "conf.$codec"
		assert_output "name: vm100"
	done
	gzip -t conf.gzip
	lzop -t conf.lzo
}

@test "vma-create -z gzip -T N: N threads write gzip members in order, one stream to gzip -d" {
	# Pieces of 1 MiB: 30 MiB of text, so that every thread has several.
	seq 1 5000000 | head -c 30M >t.raw
	echo "name: vm100" >qemu-server.conf
	vma-create -o plain.vma -c qemu-server.conf drive-scsi0=t.raw
	vma_sans_ids plain.vma plain.ids
	for t in 1 2 3 8; do
		vma-create -z gzip -T "$t" -o "a.$t.gz" -c qemu-server.conf drive-scsi0=t.raw
		gzip -t "a.$t.gz"
		gzip -dc "a.$t.gz" >"a.$t.vma"
		vma_sans_ids "a.$t.vma" "a.$t.ids"
		cmp plain.ids "a.$t.ids"
		rm -rf out
		vma-extract "a.$t.gz" out
		assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha t.raw)"
	done
	# Independent members cost little: within 1 % of one stream.
	[ "$(stat -c %s a.8.gz)" -lt "$(($(stat -c %s a.1.gz) * 101 / 100))" ]
	# Only a config, with many threads: one member.
	vma-create -z gzip -T 4 -o conf.gz -c qemu-server.conf
	gzip -t conf.gz
	run -0 vma-extract -l conf.gz
}

@test "vma-create loads a codec's library only when -z chooses it: when it cannot, exit 1 before writing" {
	random_file d.raw 69632
	mkdir broken
	: >broken/libzstd.so.1
	: >broken/liblzma.so.5
	: >broken/libz.so.1
	: >broken/liblzo2.so.2
	for codec in zstd:5 xz gzip lzo; do
		case $codec in
		zstd*) lib=libzstd.so.1 ;;
		xz) lib=liblzma.so.5 ;;
		gzip) lib=libz.so.1 ;;
		lzo) lib=liblzo2.so.2 ;;
		esac
		run --separate-stderr env LD_LIBRARY_PATH="$PWD/broken" vma-create -z "$codec" -o a.vma drive-scsi0=d.raw
		assert_failure 1
		assert_equal "$stderr" "vma-create: -z $codec: cannot load $lib: $PWD/broken/$lib: file too short"
		[ ! -e a.vma ]
	done
	# Uncompressed, none of them is needed (nor by vma-extract: python3 itself needs zlib).
	LD_LIBRARY_PATH="$PWD/broken" vma-create -o plain.vma drive-scsi0=d.raw
	LD_LIBRARY_PATH="$PWD/broken" vma-create -z none -o none.vma drive-scsi0=d.raw
	LD_LIBRARY_PATH="$PWD/broken" vma-extract none.vma out
	assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha d.raw)"
	vma_check --strict plain.vma
	vma_check --strict none.vma
}

@test "vma-create rejects an unknown codec or level as a usage error" {
	random_file d.raw 100
	for z in gz zstd:0 zstd:23 xz:10 "zstd:" none:1 gzip:0 gzip:10 lzo:1 lzop pigz; do
		run -2 vma-create -z "$z" -o a.vma drive-scsi0=d.raw
		assert_line --index 0 --partial "invalid codec '$z'"
	done
	[ ! -e a.vma ]
}

@test "vma-create writes to a pipe and vma-extract reads it from stdin" {
	random_file d.raw 777777
	echo "memory: 512" >qemu-server.conf
	run -0 bash -c 'vma-create -c qemu-server.conf drive-scsi0=d.raw | vma-extract - out'
	assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha d.raw)"
	assert_equal "$(cat out/qemu-server.conf)" "memory: 512"
	run -0 bash -c 'vma-create -z zstd drive-scsi0=d.raw | vma-extract -t -'
}

@test "vma-create reads raw and qcow2 images exported by qemu-nbd" {
	qemu-img create -q -f qcow2 disk.qcow2 64M
	random_file chunk 2M
	qemu-io -f qcow2 -c "write -P 0x5a 1M 1M" -c "write -z 8M 1M" -c "write -P 0x11 63M 4k" disk.qcow2 >/dev/null
	qemu-img convert -O raw disk.qcow2 expected.raw
	# QEMU rounds an export up to whole 512-byte sectors: 4999680 is that, but not whole 4 KiB.
	cp chunk raw.img
	truncate -s 4999680 raw.img
	nbd_serve "$PWD/q.sock" qcow2 disk.qcow2
	nbd_serve "$PWD/r.sock" raw raw.img
	vma-create -o a.vma "drive-scsi0=nbd+unix:///?socket=$PWD/q.sock" \
		"drive-scsi1=nbd+unix:///?socket=$PWD/r.sock"
	vma_check --strict a.vma
	vma-extract a.vma out
	assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha expected.raw)"
	assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha raw.img)"
	# Data: 1 MiB of 0x5a and 4 KiB of 0x11 in the qcow2, the 2 MiB of random bytes in the raw image.
	run -0 vma_check --json a.vma
	assert_equal "$(jq .stored_blocks <<<"$output")" $((256 + 1 + 512))
}

@test "vma-create reads only the allocated parts of an NBD export (block status)" {
	# nbdkit's data plugin is sparse; its log filter records every request QEMU-style clients make.
	nbdkit -U "$PWD/k.sock" -P "$PWD/k.pid" --filter=log data \
		data="@1048576 1 2 3 @^65536 4 @10485760 5" size=64M logfile="$PWD/nbd.log" 3>&-
	for ((i = 0; i < 100; i++)); do [ -S k.sock ] && break; sleep 0.05; done
	vma-create -o a.vma "drive-scsi0=nbd+unix:///?socket=$PWD/k.sock"
	kill "$(cat k.pid)"
	read_bytes=$(sed -n 's/.* Read .*count=\(0x[0-9a-f]*\|[0-9]*\).*/\1/p' nbd.log |
		while read -r n; do echo $((n)); done | paste -sd+ | bc)
	# three data clusters at most, out of 1024
	[ "$read_bytes" -le $((3 * 65536)) ] || fail "read $read_bytes bytes of a sparse export"
	[ "$read_bytes" -gt 0 ] || fail "the log shows no read at all: $(cat nbd.log)"
	run -0 vma_check --json a.vma
	assert_equal "$(jq .clusters <<<"$output")" 1024
}

@test "vma-create exits 3 when an NBD source cannot be reached, and writes nothing" {
	run --separate-stderr vma-create -o a.vma "drive-scsi0=nbd+unix:///?socket=$PWD/nonexistent"
	assert_failure 3
	[[ $stderr == "vma-create: nbd+unix:///?socket=$PWD/nonexistent: "?* ]] || fail "$stderr"
	[ ! -e a.vma ]
}

@test "vma-create loads libnbd only for an NBD source: when it cannot, an NBD source fails (exit 1), a file source works" {
	random_file d.raw 69632
	nbd_serve "$PWD/r.sock" raw d.raw
	uri="nbd+unix:///?socket=$PWD/r.sock"
	# A libnbd.so.0 that is not a library, then one that lacks libnbd's functions.
	mkdir empty missing
	: >empty/libnbd.so.0
	ln -s "$(ldconfig -p | sed -n 's|.*libz\.so\.1 (libc6,x86-64) => ||p' | head -1)" missing/libnbd.so.0
	run --separate-stderr env LD_LIBRARY_PATH="$PWD/empty" vma-create -o a.vma "drive-scsi0=$uri"
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "vma-create: $uri: cannot load libnbd.so.0: $PWD/empty/libnbd.so.0: file too short"
	run --separate-stderr env LD_LIBRARY_PATH="$PWD/missing" vma-create -o a.vma "drive-scsi0=$uri"
	assert_failure 1
	[[ $stderr == "vma-create: $uri: cannot load libnbd.so.0: "*"undefined symbol: nbd_"* ]] || fail "$stderr"
	[ ! -e a.vma ]
	# A file source never needs it; the NBD source works with the real library.
	LD_LIBRARY_PATH="$PWD/empty" roundtrip drive-scsi0=d.raw
	vma-create -o a.vma drive-scsi0=d.raw "drive-scsi1=$uri"
	vma-extract a.vma out
	assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha d.raw)"
}

# An NBD server on SOCKET that accepts connections and never says a word (no greeting), until
# killed (pid in SOCKET.pid, for nbd_stop).
mute_server() { # SOCKET
	"$VZ_PYTHON" -c '
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
open(sys.argv[1] + ".pid", "w").write(str(os.getpid()))
conns = []
while True:
    conns.append(s.accept()[0])
' "$1" </dev/null >/dev/null 2>&1 3>&- &
	for ((i = 0; i < 200; i++)); do [ -s "$1.pid" ] && return 0; sleep 0.05; done
	return 1
}

# nbdkit on SOCKET with the delay filter: PLUGIN and the filter's ARGS.
slow_nbdkit() { # SOCKET PLUGIN-AND-ARGS...
	local sock=$1
	shift
	nbdkit -U "$sock" -P "$sock.pid" --filter=delay "$@" 3>&-
	for ((i = 0; i < 100; i++)); do [ -S "$sock" ] && return 0; sleep 0.05; done
	return 1
}

@test "vma-create -t: an NBD source that never finishes its handshake times out, exit 3, nothing written" {
	mute_server "$PWD/mute.sock"
	run --separate-stderr timeout 60 vma-create -t 1 -o a.vma "drive-scsi0=nbd+unix:///?socket=$PWD/mute.sock"
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "vma-create: nbd+unix:///?socket=$PWD/mute.sock: NBD handshake: timed out after 1 s"
	run --separate-stderr timeout 60 vma-create --timeout=0.5 "drive-scsi0=nbd+unix:///?socket=$PWD/mute.sock"
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "vma-create: nbd+unix:///?socket=$PWD/mute.sock: NBD handshake: timed out after 0.5 s"
	assert_equal "$(ls -A)" "$(printf 'mute.sock\nmute.sock.pid')"
}

@test "vma-create --idle-timeout: an NBD source that stalls on a read or a block status times out, exit 3, no archive" {
	# pattern has no block status (all data, read); memory answers it (all hole)
	slow_nbdkit "$PWD/r.sock" pattern size=1M rdelay=60
	run --separate-stderr timeout 60 vma-create --idle-timeout 1 -o a.vma "drive-scsi0=nbd+unix:///?socket=$PWD/r.sock"
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "vma-create: nbd+unix:///?socket=$PWD/r.sock: read: timed out after 1 s"
	slow_nbdkit "$PWD/e.sock" memory size=1M delay-extents=60
	run --separate-stderr timeout 60 vma-create --idle-timeout=1 -z zstd -o a.vma.zst "drive-scsi0=nbd+unix:///?socket=$PWD/e.sock"
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "vma-create: nbd+unix:///?socket=$PWD/e.sock: block status: timed out after 1 s"
	# neither the archives nor their temporary files
	assert_equal "$(ls -A | grep -v '^[re]\.sock')" ""
}

@test "vma-create -t and --idle-timeout reject what is not a number of seconds" {
	touch d.raw
	for t in -1 x 1s ''; do
		run --separate-stderr vma-create -t "$t" -o a.vma drive-scsi0=d.raw
		assert_failure 2
		assert_equal "${stderr_lines[0]}" "vma-create: invalid timeout '$t': expected seconds (0: none)"
		run --separate-stderr vma-create --idle-timeout "$t" -o a.vma drive-scsi0=d.raw
		assert_failure 2
		assert_equal "${stderr_lines[0]}" "vma-create: invalid idle timeout '$t': expected seconds (0: none)"
	done
	assert_equal "$(ls -A)" d.raw
}

@test "vma-create with neither a device nor a config is a usage error, not an empty archive" {
	run --separate-stderr vma-create -o a.vma
	assert_failure 2
	assert_output ''
	assert_equal "${stderr_lines[0]}" "vma-create: nothing to archive: expected name=source devices or a config (-c)"
	assert_equal "${stderr_lines[1]}" "usage: vma-create [-v | --progress | --no-progress] [-o archive] [-c configfile]"
	run --separate-stderr vma-create --listen "$PWD/s.sock" -o a.vma -c /dev/null
	assert_failure 2
	assert_equal "${stderr_lines[0]}" "vma-create: --listen needs at least one name=size device"
	assert_equal "$(ls -A)" ""
}

@test "vma-create keeps several NBD reads in flight, none above the export's maximum block size" {
	# Requests above 64 KiB fail; the delay makes requests overlap at the server.
	nbdkit -U "$PWD/k.sock" -P "$PWD/k.sock.pid" --filter=log --filter=delay \
		--filter=blocksize-policy pattern size=4M rdelay=20ms blocksize-maximum=65536 \
		blocksize-error-policy=error logfile="$PWD/nbd.log" 3>&-
	for ((i = 0; i < 100; i++)); do [ -S k.sock ] && break; sleep 0.05; done
	vma-create -o a.vma "drive-scsi0=nbd+unix:///?socket=$PWD/k.sock"
	nbd_stop "$PWD/k.sock"
	assert_equal "$(grep -o ' Read id=.* count=0x[0-9a-f]*' nbd.log | sed 's/.*count=//' | sort | uniq -c | xargs)" "64 0x10000"
	in_flight=$(awk '/ Read id=/ { n++; if (n > max) max = n } /\.\.\.Read id=/ { n-- } END { print max }' nbd.log)
	[ "$in_flight" -ge 4 ] || fail "at most $in_flight reads in flight"
	vma-extract a.vma out
	# the pattern plugin: every 8 bytes hold their own offset, big-endian
	"$VZ_PYTHON" -c 'import struct, sys; sys.stdout.buffer.write(b"".join(struct.pack(">Q", i) for i in range(0, 4 << 20, 8)))' >expected.raw
	assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha expected.raw)"
}

@test "vma-create never reads the holes of a sparse file" {
	truncate -s 64G sparse.raw
	printf 'data' | dd of=sparse.raw bs=1 seek=$((40 * 1073741824)) conv=notrunc status=none
	# LeakSanitizer cannot run under ptrace
	# LeakSanitizer cannot run under ptrace; -y names each fd's file, so only reads of the
	# disk count (not the loader's or the sanitizer's).
	ASAN_OPTIONS=detect_leaks=0 strace -f -qq -y -e trace=read,pread64 -o trace \
		vma-create -o a.vma drive-scsi0=sparse.raw
	total=$(grep 'sparse.raw>' trace | sed -n 's/.*= \([0-9][0-9]*\)$/\1/p' | paste -sd+ | bc)
	[ "$total" -gt 0 ] || fail "no read of the disk seen at all"
	[ "$total" -le $((65536 * 2)) ] || fail "read $total bytes of a 64 GiB file holding 4"
	vma_check --strict a.vma
	run -0 vma-extract -d drive-scsi0 a.vma out
	assert_equal "$(dd if=out/disk-drive-scsi0.raw bs=1 skip=$((40 * 1073741824)) count=4 status=none)" data
	[ "$(du -k out/disk-drive-scsi0.raw | cut -f1)" -lt 1024 ]
}

@test "vma-create fails when a sparse file shrinks while it is read, instead of storing zeros" {
	# 1 MiB of data, a hole, 1 MiB of data at 8 MiB: the hole map is asked again at 1 MiB, once
	# the first MiB is read
	random_file part 1M
	dd if=part of=s.raw status=none
	dd if=part of=s.raw bs=1M seek=8 status=none
	vma-create --bwlimit 256 -o a.vma drive-scsi0=s.raw 2>err 3>&- &
	pid=$!
	# the first MiB is read in four pieces, and after the last the rate limit holds
	# vma-create for about a second
	for ((i = 0; i < 200; i++)); do
		rchar=$(sed -n 's/^rchar: //p' "/proc/$pid/io" 2>/dev/null) || break
		[ "${rchar:-0}" -ge 1048576 ] && break
		sleep 0.02
	done
	truncate -s 512K s.raw
	code=0
	wait "$pid" || code=$?
	assert_equal "$code" 1
	assert_equal "$(cat err)" "vma-create: s.raw: at offset 1048576: file shrank while being read (512.0 KiB of 9.0 MiB left)"
	[ ! -e a.vma ]
}

@test "vma-create reads a block device, sized by the device and not by its inode" {
	# 1 MiB + 512 bytes: a loop device's size, and not a multiple of 64 KiB
	random_file disk.img 600000
	truncate -s $((1048576 + 512)) disk.img
	losetup -f --show disk.img >"$BATS_TEST_TMPDIR/loop" 2>/dev/null ||
		skip "no loop device available"
	dev=$(cat "$BATS_TEST_TMPDIR/loop")
	vma-create -o a.vma "drive-scsi0=$dev"
	vma_check --strict a.vma >/dev/null
	run -0 vma-extract -l a.vma
	assert_line --index 0 "DEV: dev_id=1 size: 1049088 devname: drive-scsi0"
	vma-extract a.vma out
	assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha disk.img)"
}

@test "vma-create refuses a qcow2 image file and says to export it with qemu-nbd" {
	qemu-img create -q -f qcow2 disk.qcow2 1M
	run --separate-stderr -1 vma-create drive-scsi0=disk.qcow2
	assert_output ""
	[[ $stderr == "vma-create: disk.qcow2: is a qcow2 image"*"qemu-nbd"* ]] || fail "$stderr"
}

@test "vma-create rejects bad device names before writing anything" {
	random_file d.raw 100
	for spec in "=d.raw" "a/b=d.raw" "$(printf 'a\tb')=d.raw" ".=d.raw" "..=d.raw"; do
		run -2 vma-create -o a.vma "$spec"
		assert_output --partial "device name"
	done
	run -2 vma-create -o a.vma drive-scsi0=d.raw drive-scsi0=d.raw
	assert_output "vma-create: device name 'drive-scsi0' given twice"
	run -2 vma-create -o a.vma nonsense
	assert_line --index 0 "vma-create: 'nonsense': expected name=source"
	specs=()
	for i in $(seq 1 255); do specs+=("d$i=d.raw"); done
	run -2 vma-create -o a.vma "${specs[@]}"
	assert_output "vma-create: 255 devices given; an archive holds at most 254"
	[ ! -e a.vma ]
}

@test "vma-create refuses names too long to be extracted as files, and takes spaces and UTF-8" {
	random_file d.raw 5000
	long=$(printf 'n%.0s' $(seq 1 243))
	run -2 vma-create -o a.vma "$long=d.raw"
	assert_output "vma-create: device name '${long:0:40}...': longer than 242 bytes"
	cp d.raw "$long"
	run -2 vma-create -o a.vma -c "$long" drive-scsi0=d.raw
	assert_output "vma-create: config name '${long:0:40}...': longer than 242 bytes"
	[ ! -e a.vma ]
	rm "$long"
	roundtrip "${long%n}=d.raw" "drive scsi1=d.raw" "drïve-ü=d.raw"
}

@test "vma-create accepts 254 devices, the format's limit" {
	random_file d.raw 100
	specs=()
	for i in $(seq 1 254); do specs+=("d$i=d.raw"); done
	vma-create -o a.vma "${specs[@]}"
	vma_check --strict a.vma
}

@test "vma-create -o never replaces an existing file and leaves nothing when a source is missing" {
	random_file d.raw 100
	echo keep >a.vma
	run -1 vma-create -o a.vma drive-scsi0=d.raw
	assert_output "vma-create: a.vma: already exists; not replacing it"
	assert_equal "$(cat a.vma)" keep
	run -1 vma-create -o b.vma drive-scsi0=d.raw drive-scsi1=missing.raw
	assert_output "vma-create: missing.raw: No such file or directory"
	assert_equal "$(ls -A)" "$(printf 'a.vma\nd.raw')"
}

@test "vma-create interrupted by SIGTERM leaves neither the archive nor its temporary file" {
	random_file d.raw 4M
	vma-create --bwlimit 1024 -o a.vma drive-scsi0=d.raw 3>&- &
	pid=$!
	sleep 1
	kill -TERM "$pid"
	code=0
	wait "$pid" || code=$?
	assert_equal "$code" 143
	assert_equal "$(ls -A)" d.raw
}

@test "vma-create -o and --stats write files of mode 0600 whatever the umask, through a symlinked folder too" {
	random_file d.raw 4M
	mkdir real
	ln -s real link
	# the temporary file, .NAME.tmp.PID (vzdump.sh removes that after a killed writer), is
	# 0600 from the start
	bash -c 'umask 0; exec vma-create --bwlimit 2048 -o link/a.vma --stats link/a.json drive-scsi0=d.raw' 3>&- &
	pid=$!
	for ((i = 0; i < 100; i++)); do
		[ -e "real/.a.vma.tmp.$pid" ] && break
		sleep 0.05
	done
	assert_equal "$(stat -c '%a %n' real/.a.vma.tmp.* real/.a.json.tmp.*)" "600 real/.a.vma.tmp.$pid
600 real/.a.json.tmp.$pid"
	wait "$pid"
	assert_equal "$(stat -c '%a %n' real/*)" "600 real/a.json
600 real/a.vma"
	vma_check --strict real/a.vma >/dev/null
	assert_equal "$(find . -name '.*.tmp.*')" ""
}

@test "vma-create fails cleanly when the output cannot be written" {
	random_file d.raw 300000
	run --separate-stderr -1 bash -c 'vma-create drive-scsi0=d.raw >/dev/full'
	assert_equal "$stderr" "vma-create: write failed: No space left on device"
}

@test "vma-create refuses to write an archive to a terminal" {
	random_file d.raw 100
	run script -qec "vma-create drive-scsi0=d.raw" /dev/null
	assert_equal "$status" 2
	assert_output --partial "vma-create: refusing to write an archive to a terminal"
}

@test "vma-create -v prints vzdump's progress format and one summary line per device" {
	truncate -s 1M z.raw
	random_file d.raw 200000
	run --separate-stderr -0 bash -c 'vma-create -v drive-scsi0=d.raw drive-scsi1=z.raw >/dev/null'
	lines=()
	mapfile -t lines <<<"$stderr"
	assert_regex "${lines[0]}" '^100% \(1\.2 MiB of 1\.2 MiB\) in [0-9]+s, read: [0-9.]+ [KMG]?i?B/s, write: [0-9.]+ [KMG]?i?B/s$'
	assert_equal "${lines[1]}" "image drive-scsi0: size=200000 zeros=0 saved=200000"
	assert_equal "${lines[2]}" "image drive-scsi1: size=1048576 zeros=1048576 saved=0"
	assert_equal "${#lines[@]}" 3
}

@test "vma-create --stats writes the figures of the archive and its sha256 as one line of JSON" {
	truncate -s 1M z.raw
	random_file d.raw 200000
	run --separate-stderr -0 vma-create -v -z zstd -o a.vma.zst --stats s.json \
		drive-scsi0=d.raw drive-scsi1=z.raw
	assert_equal "$(wc -l <s.json)" 1
	# The same figures as -v's image lines; the stream and archive sizes as they are on disk.
	assert_equal "$(jq -c 'del(.elapsed_ms, .vma_bytes, .archive_bytes, .sha256)' s.json)" \
		'{"devices":[{"name":"drive-scsi0","size":200000,"zeros":0,"saved":200000},{"name":"drive-scsi1","size":1048576,"zeros":1048576,"saved":0}],"size":1248576,"zeros":1048576,"saved":200000}'
	assert_equal "$(jq -c 'keys_unsorted' s.json)" \
		'["devices","size","zeros","saved","vma_bytes","archive_bytes","elapsed_ms","sha256"]'
	assert_equal "$(jq .archive_bytes s.json)" "$(stat -c %s a.vma.zst)"
	assert_equal "$(jq -r .sha256 s.json)" "$(sha256sum <a.vma.zst | cut -d ' ' -f 1)"
	assert_equal "$(jq .vma_bytes s.json)" "$(zstd -q -d -c a.vma.zst | wc -c)"
	assert_equal "$(jq '.elapsed_ms | type == "number" and . >= 0 and . == floor' s.json)" true
	[[ $stderr == *"image drive-scsi1: size=1048576 zeros=1048576 saved=0"* ]] || fail "$stderr"
	# To standard output, the archive bytes are what went down the pipe; a stats file is replaced.
	vma-create --stats s.json drive-scsi0=d.raw >b.vma
	assert_equal "$(jq .archive_bytes s.json)" "$(stat -c %s b.vma)"
	assert_equal "$(jq .vma_bytes s.json)" "$(stat -c %s b.vma)"
	assert_equal "$(jq -r .sha256 s.json)" "$(sha256sum <b.vma | cut -d ' ' -f 1)"
	# Each codec's output, as it is on disk (lzop's blocks, gzip's members from threads).
	for z in gzip lzo xz "gzip -T 3"; do
		# shellcheck disable=SC2086 # the codec and its threads
		rm -f c && vma-create -z $z -o c --stats s.json drive-scsi0=d.raw drive-scsi1=z.raw
		assert_equal "$z $(jq -r .sha256 s.json)" "$z $(sha256sum <c | cut -d ' ' -f 1)"
	done
}

@test "vma-create --stats leaves no file when the archive fails, and refuses what it cannot write" {
	random_file d.raw 300000
	run --separate-stderr -1 bash -c 'vma-create --stats s.json drive-scsi0=d.raw >/dev/full'
	run -1 vma-create -o a.vma --stats s.json drive-scsi0=d.raw drive-scsi1=missing.raw
	# A stats file that cannot be created stops the run before the archive is written.
	run -1 vma-create -o a.vma --stats nodir/s.json drive-scsi0=d.raw
	assert_output "vma-create: nodir/s.json: No such file or directory"
	# JSON holds only UTF-8 names; without --stats such a name is fine.
	run -2 vma-create -o a.vma --stats s.json $'drive-\xff=d.raw'
	assert_output "vma-create: device name 'drive-"$'\xff'"': not UTF-8, which --stats cannot write"
	assert_equal "$(ls -A)" d.raw
}

@test "vma-create --bwlimit holds the read rate under the limit" {
	random_file d.raw 3M
	start=$(date +%s%N)
	vma-create --bwlimit 2048 -o a.vma --stats s.json drive-scsi0=d.raw
	elapsed_ms=$((($(date +%s%N) - start) / 1000000))
	# 3 MiB at 2 MiB/s cannot take less than 1 s (only a lower bound: the limit is a ceiling).
	[ "$elapsed_ms" -ge 1000 ] || fail "3 MiB took only $elapsed_ms ms at 2 MiB/s"
	# --stats measures the same copy.
	copy_ms=$(jq .elapsed_ms s.json)
	[ "$copy_ms" -ge 1000 ] && [ "$copy_ms" -le "$elapsed_ms" ] || fail "$copy_ms of $elapsed_ms ms"
	run -2 vma-create --bwlimit 0 -o b.vma drive-scsi0=d.raw
	run -2 vma-create --bwlimit -5 -o b.vma drive-scsi0=d.raw
}

@test "vma-create keeps its resident memory under 64 MiB on a 1 GiB disk with zstd" {
	[ "${SANITIZE:-0}" != 1 ] || skip "AddressSanitizer's shadow memory inflates the resident size"
	random_file chunk 64M
	truncate -s 1G d.raw
	for i in 0 4 8 12; do dd if=chunk of=d.raw bs=64M seek=$i conv=notrunc status=none; done
	/usr/bin/time -f '%M' -o rss vma-create -z zstd -T 2 drive-scsi0=d.raw >/dev/null
	[ "$(cat rss)" -lt 65536 ] || fail "peak RSS $(cat rss) KiB"
}

@test "vma-create -o writes its archive with direct I/O, and the archive extracts to the same disk" {
	# 1 MiB of data, 1 MiB of zeros and an odd tail: extents of every size
	random_file disk.raw 1M
	truncate -s $((2 * 1048576 + 3000)) disk.raw
	printf 'tail' >>disk.raw
	ASAN_OPTIONS=detect_leaks=0 strace -qq -f -e trace=fcntl,write -o trace \
		vma-create -o a.vma drive-scsi0=disk.raw
	grep -q 'F_SETFL, .*O_DIRECT' trace || fail "no O_DIRECT set: $(cat trace)"
	# In whole 4 KiB blocks but the last write: anything else is the file system's slow path.
	grep -E ' write\(' trace | sed -E 's/.* = ([0-9]+)$/\1/' >sizes
	[ "$(wc -l <sizes)" -gt 1 ] || fail "$(cat trace)"
	head -n -1 sizes | awk '$1 % 4096 { exit 1 }' || fail "writes of $(tr '\n' ' ' <sizes)bytes"
	vma_check --strict a.vma
	run -0 vma-extract a.vma out
	assert_equal "$(sha256sum <out/disk-drive-scsi0.raw)" "$(sha256sum <disk.raw)"
}

@test "vma-create -o writes behind: many extents come out in order, with their sha256" {
	# 16 MiB of data around 8 MiB of holes: full extents, and short ones in the page cache.
	random_file data 16M
	dd if=data of=disk.raw bs=1M count=8 status=none
	dd if=data of=disk.raw bs=1M skip=8 seek=16 status=none
	vma-create -o a.vma --stats s.json drive-scsi0=disk.raw drive-scsi1=data
	assert_equal "$(jq -r .sha256 s.json)" "$(sha256sum <a.vma | cut -d ' ' -f 1)"
	vma_check --strict a.vma
	vma-extract a.vma out
	assert_equal "$(sha256sum <out/disk-drive-scsi0.raw)" "$(sha256sum <disk.raw)"
	assert_equal "$(sha256sum <out/disk-drive-scsi1.raw)" "$(sha256sum <data)"
}

@test "vma-create -o: a file system that fills up half-way stops the run with the reason, and leaves nothing" {
	[ "$(id -u)" = 0 ] || skip "mounting a small tmpfs needs root"
	random_file disk.raw 24M
	mkdir small
	mount -t tmpfs -o size=4M tmpfs small || skip "cannot mount a tmpfs here"
	run --separate-stderr -1 vma-create -o small/a.vma --stats small/s.json drive-scsi0=disk.raw
	left=$(ls -A small)
	umount small
	assert_equal "$stderr" "vma-create: write failed: No space left on device"
	assert_equal "$output" ""
	assert_equal "$left" ""
}

@test "vma-create -o: a source that fails while extents wait to be written stops their writes before the file goes" {
	# Reads fail once ./trigger exists; strace slows every write, so extents are still
	# queued for the output thread when the read fails.
	nbdkit -U "$PWD/k.sock" -P "$PWD/k.sock.pid" --filter=error pattern size=64M \
		error-pread=EIO error-pread-rate=100% error-pread-file="$PWD/trigger" 3>&-
	for ((i = 0; i < 100; i++)); do [ -S k.sock ] && break; sleep 0.05; done
	(sleep 1 && touch trigger) 3>&- &
	run --separate-stderr -1 env ASAN_OPTIONS=detect_leaks=0 strace -f -qq -e trace=write,close,unlinkat \
		-e inject=write:delay_enter=300000 -o trace \
		vma-create -o a.vma "drive-scsi0=nbd+unix:///?socket=$PWD/k.sock"
	[[ $stderr == *"Input/output error"* ]] || fail "$stderr"
	# The temporary file's descriptor is closed after the output thread's last write.
	fd=$(sed -nE 's/.*write\(([0-9]+), "VMA\\0.*/\1/p' trace | head -n 1)
	[ -n "$fd" ] || fail "no header write: $(cat trace)"
	awk -v w="write($fd," -v c="close($fd)" 'index($0, w) && /"VMA\\0/ { opened = 1 }
		opened && index($0, c) { closed = 1 } closed && index($0, w) { exit 1 }' trace ||
		fail "$(cat trace)"
	assert_equal "$(ls -A | grep -c tmp)" 0
}

@test "vma-create never sets direct I/O on a descriptor it inherited: what follows in the file is written" {
	random_file disk.raw 1M
	{
		vma-create drive-scsi0=disk.raw
		printf 'after'
	} >a.vma
	assert_equal "$(tail -c 5 a.vma)" after
	head -c -5 a.vma >b.vma
	vma_check --strict b.vma
}
