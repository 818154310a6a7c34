#!/usr/bin/env bats
# vma-extract --serve: a backup's disks as read-only NBD exports, read by real clients
# (nbdfuse and debugfs, nbdcopy, nbdinfo, qemu-img, libnbd's Python binding) and compared with
# what `vma-extract ARCHIVE DIR` restores; an incremental archive with its chain (made as
# tests/vma-incremental.bats makes it, tests/lib/chain.bash) compared with the disks as they
# were at that backup.

# A server that never stops must not hang the suite.
BATS_TEST_TIMEOUT=120

setup_file() {
	# One archive for every test: an ext4 file system with a marker file, a disk whose holes
	# and data lie at known places (its size not a multiple of 4 KiB), and random data with
	# a zero cluster in it. Its extraction is what every export must read as.
	cd "$BATS_FILE_TMPDIR" || exit 1
	export PATH="$VZ_BIN:$PATH"
	mkdir root
	echo "marker $RANDOM$RANDOM in the backup" >root/marker
	truncate -s 16M fs.img
	mkfs.ext4 -q -d root fs.img
	# pattern: cluster 0 full, blocks 3 and 7 of cluster 2, cluster 10 full, 1000 bytes at 4 MiB
	truncate -s $((4194304 + 1000)) pattern.img
	head -c 65536 /dev/urandom | dd of=pattern.img bs=4096 seek=0 conv=notrunc status=none
	head -c 4096 /dev/urandom | dd of=pattern.img bs=4096 seek=$((32 + 3)) conv=notrunc status=none
	head -c 4096 /dev/urandom | dd of=pattern.img bs=4096 seek=$((32 + 7)) conv=notrunc status=none
	head -c 65536 /dev/urandom | dd of=pattern.img bs=4096 seek=160 conv=notrunc status=none
	head -c 1000 /dev/urandom | dd of=pattern.img bs=4096 seek=1024 conv=notrunc status=none
	head -c 3145728 /dev/urandom >random.img
	dd if=/dev/zero of=random.img bs=65536 seek=20 count=1 conv=notrunc status=none
	vma-create -o a.vma drive-scsi0=fs.img drive-scsi1=pattern.img drive-virtio2=random.img
	vma-extract a.vma ex
}

setup() {
	load lib/common
	load lib/vma
	load lib/chain
	mkdir -p "$BATS_TEST_TMPDIR/work"
	cd "$BATS_TEST_TMPDIR/work" || exit 1
	A=$BATS_FILE_TMPDIR/a.vma
	EX=$BATS_FILE_TMPDIR/ex
	SOCK=$PWD/s.sock
	DEVICES=(drive-scsi0 drive-scsi1 drive-virtio2)
}

teardown() {
	mountpoint -q mnt 2>/dev/null && umount mnt
	[ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null
	return 0
}

# libnbd's Python binding on Debian's python3, which has it.
nbdpy() { "$VZ_PYTHON" "$@"; }

uri() { echo "nbd+unix:///$1?socket=$SOCK"; }

# Starts vma-extract --serve SOCK ARGS... in the background (stderr in server.err) and waits
# for the socket.
serve() {
	# (<&0: a background command's standard input is /dev/null otherwise)
	vma-extract --serve "$SOCK" "$@" 2>server.err 3>&- <&0 &
	SERVER=$!
	await_socket "$SOCK" "$SERVER" 30
}

# Stops the server with SIGNAL (TERM); CODE is its exit status.
stop_server() {
	kill -"${1:-TERM}" "$SERVER"
	CODE=0
	wait "$SERVER" || CODE=$?
	SERVER=
}

# The chain of lib/chain.bash in the current folder: the full $F, then $I1 (plain), $I2
# (seekable zstd) and $I3 (gzip); the disks as they were at each, ARCHIVE.d0 and ARCHIVE.d1.
chain_here() {
	DEVS=(drive-scsi0=3149824 drive-virtio1=1048576)
	PUSH_SOCK=$PWD/push.sock make_chain
	# I2's link is read by its frames: vma-create -z zstd wrote its seek table
	"$VZ_PYTHON" "$TOP/tests/lib/seektable.py" "$I2" >/dev/null
	# the states differ, so that serving an older one (or the full alone) cannot pass
	[ "$(sha "$I3.d0")" != "$(sha "$I2.d0")" ] && [ "$(sha "$I2.d0")" != "$(sha "$I1.d0")" ] &&
		[ "$(sha "$I1.d0")" != "$(sha "$F.d0")" ] && [ "$(sha "$I3.d1")" != "$(sha "$I2.d1")" ] &&
		[ "$(sha "$I2.d1")" != "$(sha "$F.d1")" ]
}

# Every export copied with nbdcopy is the disk vma-extract restores, bit for bit.
assert_exports_match() {
	local d
	for d in "${DEVICES[@]}"; do
		nbdcopy "$(uri "$d")" "$d.raw"
		assert_equal "$(sha "$d.raw")" "$(sha "$EX/disk-$d.raw")"
	done
}

# ARCHIVE (seekable) is served by its frames, with no decompressed copy anywhere (TMPDIR
# empty, no deleted file open), every export the restored disk, and a clean exit.
assert_served_by_frames() {
	mkdir tmp
	TMPDIR=$PWD/tmp serve "$1"
	run -0 ls -l "/proc/$SERVER/fd/"
	refute_output --partial "(deleted)"
	assert_exports_match
	stop_server
	assert_equal "$CODE" 0
	assert_equal "$(cat server.err)" ""
}

# VMA OUT [CHECK]: the archive cut into 256 KiB frames compressed alone (zstd --check: each
# ends in its content checksum; CHECK --no-check: none, and the seek table with none either),
# followed by zstd's seek table: the seekable format, made here without vma-create.
make_seekable() {
	nbdpy - "$1" "$2" "${3:---check}" <<'EOF'
import struct, subprocess, sys
src, out, check = sys.argv[1:4]
data = open(src, "rb").read()
entries = []
with open(out, "wb") as f:
    for i in range(0, len(data), 1 << 18):
        chunk = data[i:i + (1 << 18)]
        c = subprocess.run(["zstd", "-q", check, "-c"], input=chunk,
                           stdout=subprocess.PIPE, check=True).stdout
        f.write(c)
        entries.append((len(c), len(chunk), struct.unpack("<I", c[-4:])[0]))
    sums = check == "--check"
    body = b"".join(struct.pack("<III", *e) if sums else struct.pack("<II", *e[:2])
                    for e in entries)
    f.write(struct.pack("<II", 0x184D2A5E, len(body) + 9) + body +
            struct.pack("<IBI", len(entries), 0x80 if sums else 0, 0x8F92EAB1))
for c, d, _ in entries:
    print(c, d)
EOF
}

# N FRAMES: the archive offset and compressed length of the Nth frame (from 1) of the list
# make_seekable prints.
frame_at() {
	awk -v n="$1" 'NR == n { print off, $1; exit } { off += $1 } BEGIN { off = 0 }' "$2"
}

@test "--serve: a marker file read out of the ext4 file system of a served disk (nbdfuse, debugfs)" {
	serve "$A"
	mkdir mnt
	nbdfuse -r mnt/disk "$(uri drive-scsi0)" 3>&- &
	for ((i = 0; i < 100; i++)); do
		[ -f mnt/disk ] && break
		sleep 0.1
	done
	run -0 stat -c %s mnt/disk
	assert_output 16777216
	run -0 debugfs -R 'cat /marker' mnt/disk
	assert_output --partial "$(cat "$BATS_FILE_TMPDIR/root/marker")"
	umount mnt
	stop_server
	assert_equal "$CODE" 0
}

@test "--serve: one export per device, named after it, of exactly its size, read-only, multi-conn, block sizes advertised" {
	serve "$A"
	run -0 nbdinfo --list --json "nbd+unix:///?socket=$SOCK"
	list=$output
	run -0 jq -r '.exports[] | "\(."export-name") \(."export-size") \(."is_read_only") \(."can_multi_conn") \(."block_size_minimum") \(."block_size_preferred") \(."block_size_maximum")"' <<<"$list"
	assert_output "drive-scsi0 16777216 true true 1 4096 8388608
drive-scsi1 4195304 true true 1 4096 8388608
drive-virtio2 3145728 true true 1 4096 8388608"
	run -0 jq -r '.exports[0].contexts[]' <<<"$list"
	assert_output base:allocation
	# the socket: mode 0600
	assert_equal "$(stat -c %a "$SOCK")" 600
}

@test "--serve: 1,000 random reads of 4 KiB at random offsets return the restored disks' bytes" {
	serve "$A"
	run -0 nbdpy - "$SOCK" "$EX" "${DEVICES[@]}" <<'EOF'
import nbd, random, sys
sock, ex, devices = sys.argv[1], sys.argv[2], sys.argv[3:]
rnd = random.Random(18)
bad = total = 0
for dev in devices:
    data = open(f"{ex}/disk-{dev}.raw", "rb").read()
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///{dev}?socket={sock}")
    assert h.get_size() == len(data)
    for _ in range(1000 if dev == devices[0] else 300):
        off = rnd.randrange(0, len(data) - 4096 + 1)
        total += 1
        if h.pread(4096, off) != data[off:off + 4096]:
            bad += 1
    # the last bytes, a read of the most the server takes (8 MiB, or the whole disk), 1 byte
    total += 3
    bad += h.pread(100, len(data) - 100) != data[-100:]
    most = min(len(data), 8 << 20)
    bad += h.pread(most, len(data) - most) != data[len(data) - most:]
    bad += h.pread(1, 65535) != data[65535:65536]
print(f"{bad} of {total} reads differ")
EOF
	assert_output "0 of 1609 reads differ"
}

@test "--serve: block status shows the holes exactly where the disk's zero clusters and blocks are" {
	serve "$A"
	run -0 nbdinfo --map "$(uri drive-scsi1)"
	got=$(tr -s ' ' <<<"$output" | sed 's/^ //')
	assert_equal "$got" "0 65536 0 data
65536 77824 3 hole,zero
143360 4096 0 data
147456 12288 3 hole,zero
159744 4096 0 data
163840 491520 3 hole,zero
655360 65536 0 data
720896 3473408 3 hole,zero
4194304 1000 0 data"
	run -0 nbdinfo --map "$(uri drive-virtio2)"
	got=$(tr -s ' ' <<<"$output" | sed 's/^ //')
	assert_equal "$got" "0 1310720 0 data
1310720 65536 3 hole,zero
1376256 1769472 0 data"
	# and nbdinfo --map --totals: a sparse file system is mostly holes
	run -0 nbdinfo --map --totals "$(uri drive-scsi0)"
	assert_line --regexp '^ *[0-9]+ +[0-9.]+% +3 hole,zero$'
}

@test "--serve: nbdcopy and qemu-img convert of each export are the restored disks (uncompressed archive)" {
	serve "$A"
	assert_exports_match
	# (QEMU rounds the size up to whole sectors: the bytes past the device's end are zeros)
	qemu-img convert -f raw -O raw "$(uri drive-scsi1)" scsi1.raw
	cmp -n 4195304 scsi1.raw "$EX/disk-drive-scsi1.raw"
	# qemu-img convert skips the holes: the copy is as sparse as the restored disk
	[ "$(du -k scsi1.raw | cut -f1)" -le $(($(du -k "$EX/disk-drive-scsi1.raw" | cut -f1) + 4)) ]
	stop_server
	assert_equal "$CODE" 0
}

@test "--serve: archives without a seek table (gzip, zstd through a pipe, a pipe) are served from a decompressed copy" {
	gzip -c "$A" >a.vma.gz
	zstd -q -c <"$A" >a.vma.zst
	for f in a.vma.gz a.vma.zst; do
		mkdir -p tmp
		TMPDIR=$PWD/tmp serve "$f"
		# the copy is in TMPDIR, held open and unlinked
		run -0 ls -A tmp
		assert_output ""
		run -0 ls -l "/proc/$SERVER/fd/"
		assert_output --regexp " -> $PWD/tmp/.* \(deleted\)"
		assert_exports_match
		stop_server
		assert_equal "$CODE" 0
	done
	serve - < <(cat "$A")
	assert_exports_match
	stop_server
	assert_equal "$CODE" 0
}

@test "--serve: a seekable .vma.zst is read by frames through its seek table" {
	make_seekable "$A" a.vma.zst >frames
	[ "$(wc -l <frames)" -gt 10 ]
	assert_served_by_frames a.vma.zst
}

@test "--serve: vma-create -z zstd's seekable archive is read by frames, from its seek table" {
	vma-create -z zstd -o a.vma.zst drive-scsi0="$BATS_FILE_TMPDIR/fs.img" \
		drive-scsi1="$BATS_FILE_TMPDIR/pattern.img" drive-virtio2="$BATS_FILE_TMPDIR/random.img"
	run -0 "$VZ_PYTHON" "$TOP/tests/lib/seektable.py" a.vma.zst
	[ "${#lines[@]}" -ge 2 ] || fail "one frame only: $output"
	assert_served_by_frames a.vma.zst
}

@test "--serve: a frame of vma-create's seekable archive damaged while served: EIO for its reads, its offset on stderr" {
	vma-create -z zstd -o a.vma.zst drive-scsi0="$BATS_FILE_TMPDIR/fs.img" \
		drive-scsi1="$BATS_FILE_TMPDIR/pattern.img" drive-virtio2="$BATS_FILE_TMPDIR/random.img"
	run -0 "$VZ_PYTHON" "$TOP/tests/lib/seektable.py" a.vma.zst
	second=${lines[1]%% *}
	serve a.vma.zst
	printf 'XXXXXXXX' | dd of=a.vma.zst bs=1 seek=$((second + 100000)) conv=notrunc status=none
	# drive-virtio2's random data is the last in the archive: in the second frame
	run nbdcopy "$(uri drive-virtio2)" v.raw
	assert_failure
	assert_output --partial "Input/output error"
	run -0 cat server.err
	assert_output --regexp "a.vma.zst: the frame at offset $second \([0-9]+ bytes\) is damaged: "
	# what lies in the first frame still reads right
	run -0 nbdpy -m nbd -u "$(uri drive-scsi1)" -c 'print(bytes(h.pread(65536, 0)).hex())'
	assert_output "$(head -c 65536 "$EX/disk-drive-scsi1.raw" | od -An -v -tx1 | tr -d ' \n')"
	stop_server
	assert_equal "$CODE" 0
}

@test "--serve: a frame damaged after the index pass fails its reads with EIO, names its offset, never returns wrong bytes" {
	make_seekable "$A" a.vma.zst >frames
	serve a.vma.zst
	# the 6th frame (inside drive-scsi0's data) damaged in its middle, the 9th in its checksum
	read -r bad1 bad1_len < <(frame_at 6 frames)
	read -r bad2 bad2_len < <(frame_at 9 frames)
	printf 'XXXX' | dd of=a.vma.zst bs=1 seek=$((bad1 + bad1_len / 2)) conv=notrunc status=none
	printf 'XXXX' | dd of=a.vma.zst bs=1 seek=$((bad2 + bad2_len - 4)) conv=notrunc status=none
	# every byte the server hands out is right; the reads it refuses are EIO
	run -0 nbdpy - "$SOCK" "$EX" "${DEVICES[@]}" <<'EOF'
import nbd, sys
sock, ex, devices = sys.argv[1], sys.argv[2], sys.argv[3:]
wrong = failed = 0
for dev in devices:
    data = open(f"{ex}/disk-{dev}.raw", "rb").read()
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///{dev}?socket={sock}")
    for off in range(0, len(data), 65536):
        try:
            wrong += h.pread(min(65536, len(data) - off), off) != data[off:off + 65536]
        except nbd.Error as e:
            assert e.errnum == 5, e  # EIO
            failed += 1
print(f"wrong {wrong} failed {int(failed > 0)}")
EOF
	assert_output "wrong 0 failed 1"
	run -0 cat server.err
	assert_output --partial "a.vma.zst: the frame at offset $bad1 ($bad1_len bytes) is damaged: zstd: "
	assert_output --partial "a.vma.zst: the frame at offset $bad2 ($bad2_len bytes) is damaged: its checksum differs from the seek table's"
	stop_server
	assert_equal "$CODE" 0
}

@test "--serve: read-ahead changes no read's outcome: a damaged frame it meets fails only the reads that need it" {
	make_seekable "$A" a.vma.zst >frames
	serve a.vma.zst
	read -r bad bad_len < <(frame_at 7 frames)
	printf 'XXXX' | dd of=a.vma.zst bs=1 seek=$((bad + bad_len / 2)) conv=notrunc status=none
	# Forwards, each frame after the one read is decompressed ahead; backwards, none is. The
	# same reads fail (EIO), the others return the right bytes, up to the end of each export
	# (read-ahead past the last frame).
	run -0 nbdpy - "$SOCK" "$EX" "${DEVICES[@]}" <<'EOF'
import nbd, sys
sock, ex, devices = sys.argv[1], sys.argv[2], sys.argv[3:]
def failing(forwards):
    bad, wrong = set(), 0
    for dev in devices:
        data = open(f"{ex}/disk-{dev}.raw", "rb").read()
        h = nbd.NBD()
        h.connect_uri(f"nbd+unix:///{dev}?socket={sock}")
        offs = range(0, len(data), 16384)
        for off in (offs if forwards else reversed(offs)):
            try:
                wrong += h.pread(min(16384, len(data) - off), off) != data[off:off + 16384]
            except nbd.Error as e:
                assert e.errnum == 5, e  # EIO
                bad.add((dev, off))
        h.shutdown()
    return bad, wrong
fw, fw_wrong = failing(True)
bw, bw_wrong = failing(False)
print(f"wrong {fw_wrong + bw_wrong} failed {int(len(fw) > 0)} same {int(fw == bw)}")
EOF
	assert_output "wrong 0 failed 1 same 1"
	run -0 cat server.err
	assert_output --partial "a.vma.zst: the frame at offset $bad ($bad_len bytes) is damaged: zstd: "
	stop_server
	assert_equal "$CODE" 0
}

@test "--serve: SIGTERM or SIGINT while frames are decompressed ahead of a sequential reader stops it at once, status 0" {
	head -c 48M /dev/urandom >big.img
	vma-create -z zstd -o big.vma.zst drive-scsi0=big.img
	for sig in TERM INT; do
		serve big.vma.zst
		nbdcopy "$(uri drive-scsi0)" null: 3>&- 2>/dev/null &
		client=$!
		sleep 0.1
		start=$SECONDS
		stop_server "$sig"
		assert_equal "$CODE" 0
		[ $((SECONDS - start)) -le 5 ] || fail "SIG$sig took $((SECONDS - start)) s"
		[ ! -e "$SOCK" ] || fail "the socket is left after SIG$sig"
		wait "$client" || :
	done
}

@test "--serve: writes, zero writes and trims are refused with EPERM; the archive is unchanged" {
	before=$(sha "$A")
	serve "$A"
	# libnbd refuses a write to a read-only export itself: strict mode off, the server answers
	for op in 'h.pwrite(b"x" * 4096, 0)' 'h.zero(4096, 0)' 'h.trim(4096, 0)'; do
		run nbdpy -m nbd -u "$(uri drive-scsi1)" -c 'h.set_strict_mode(0)' -c "$op"
		assert_failure
		assert_output --partial "Operation not permitted"
	done
	# the connection is still in step after a refused write: a read returns the data
	run -0 nbdpy -m nbd -u "$(uri drive-scsi1)" -c 'h.set_strict_mode(0)' \
		-c 'try: h.pwrite(b"x" * 65536, 0)
except nbd.Error: pass' -c 'print(h.pread(4, 0).hex())'
	assert_output "$(head -c 4 "$EX/disk-drive-scsi1.raw" | od -An -tx1 | tr -d ' \n')"
	run qemu-io -f raw -c 'write 0 4k' "$(uri drive-scsi1)"
	assert_failure
	stop_server
	assert_equal "$CODE" 0
	assert_equal "$(sha "$A")" "$before"
}

@test "--serve: several clients at once, on one export and on different ones" {
	serve "$A"
	run -0 nbdpy - "$SOCK" "$EX" <<'EOF'
import nbd, sys
sock, ex = sys.argv[1:3]
a = open(f"{ex}/disk-drive-virtio2.raw", "rb").read()
b = open(f"{ex}/disk-drive-scsi1.raw", "rb").read()
hs = []
for dev in ["drive-virtio2", "drive-virtio2", "drive-scsi1", "drive-virtio2"]:
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///{dev}?socket={sock}")
    hs.append((h, a if dev == "drive-virtio2" else b))
ok = 0
for off in range(0, 3145728, 65536 * 3):
    for h, data in hs:
        ok += h.pread(65536, off) == data[off:off + 65536]
print(ok)
EOF
	assert_output $((16 * 4))
	# nbdcopy with 4 connections, twice at once
	nbdcopy -C 4 "$(uri drive-virtio2)" one.raw &
	nbdcopy -C 4 "$(uri drive-virtio2)" two.raw
	wait $!
	cmp one.raw "$EX/disk-drive-virtio2.raw"
	cmp two.raw "$EX/disk-drive-virtio2.raw"
}

@test "--serve: SIGTERM and SIGINT stop it with status 0 and the socket removed; a client connected then does not hold it" {
	for sig in TERM INT; do
		serve "$A"
		nbdpy -m nbd -u "$(uri drive-scsi0)" -c 'import time; time.sleep(30)' 3>&- &
		client=$!
		sleep 0.5
		stop_server "$sig"
		assert_equal "$CODE" 0
		[ ! -e "$SOCK" ] || fail "the socket is left after SIG$sig"
		kill "$client" 2>/dev/null || :
		wait "$client" || :
	done
}

@test "--serve fd:N: an inherited listening socket is served, and neither made nor removed" {
	"$VZ_PYTHON" -c 'import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen()
os.dup2(s.fileno(), 5)
os.execvp("vma-extract", ["vma-extract", "--serve", "fd:5", sys.argv[2]])' "$SOCK" "$A" \
		2>server.err 3>&- &
	SERVER=$!
	for ((i = 0; i < 100; i++)); do
		nbdinfo --size "$(uri drive-scsi1)" >size 2>/dev/null && break
		sleep 0.1
	done
	assert_equal "$(cat size)" 4195304
	stop_server
	assert_equal "$CODE" 0
	[ -S "$SOCK" ] || fail "the inherited socket was removed"
	run -2 vma-extract --serve fd:0 "$A" </dev/null
	assert_output --partial "not a listening socket"
}

@test "--serve: a damaged archive is refused before anything listens; an existing socket path is not replaced" {
	head -c 500000 "$A" >cut.vma
	run -1 vma-extract --serve "$SOCK" cut.vma
	assert_output --partial "cut.vma: "
	[ ! -e "$SOCK" ] || fail "a socket was made for a damaged archive"
	touch "$SOCK"
	run -2 vma-extract --serve "$SOCK" "$A"
	assert_output --partial "already exists"
	[ -f "$SOCK" ]
	run -2 vma-extract --serve "$SOCK" -t "$A"
	run -2 vma-extract --serve "$SOCK" "$A" dir
}

@test "--serve: a 1 TiB disk is served with less than 256 MiB of memory" {
	[ "${SANITIZE:-0}" != 1 ] || skip "AddressSanitizer's shadow memory is no measure"
	truncate -s 1T big.img
	printf 'end of the terabyte' | dd of=big.img bs=1 seek=$(((1 << 40) - 19)) conv=notrunc status=none
	vma-create -o big.vma drive-scsi0=big.img
	rm big.img
	serve big.vma
	run -0 nbdpy -m nbd -u "$(uri drive-scsi0)" -c 'print(h.get_size(), bytes(h.pread(19, (1 << 40) - 19)).decode())'
	assert_output "1099511627776 end of the terabyte"
	peak=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER/status")
	echo "peak resident size: $peak KiB" >&3
	[ "$peak" -lt $((256 * 1024)) ] || fail "peak resident size $peak KiB"
	[ "$peak" -gt $((128 * 1024)) ] || fail "peak $peak KiB: the index (128 MiB) was not all touched?"
}

@test "--serve: NBD_FLAG_SEND_DF only for a client that negotiated structured replies" {
	serve "$A"
	# A raw handshake (libnbd hides the flag without structured replies): NBD_OPT_GO's
	# NBD_INFO_EXPORT flags, and NBD_OPT_EXPORT_NAME's, with and without structured replies.
	run -0 "$VZ_PYTHON" - "$SOCK" <<'PY'
import socket, struct, sys
def recvn(s, n):
    b = b""
    while len(b) < n:
        x = s.recv(n - len(b))
        assert x, "server hung up"
        b += x
    return b
def opt(s, o, data):
    s.sendall(struct.pack(">QII", 0x49484156454F5054, o, len(data)) + data)
def reply(s):
    _, _, t, n = struct.unpack(">QIII", recvn(s, 20))
    return t, recvn(s, n)
for structured in (False, True):
    for go in (True, False):
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        recvn(s, 18)
        s.sendall(struct.pack(">I", 3))
        if structured:
            opt(s, 8, b"")
            assert reply(s)[0] == 1
        name = b"drive-scsi0"
        if go:
            opt(s, 7, struct.pack(">I", len(name)) + name + b"\0\0")
            while True:
                t, d = reply(s)
                if t == 3 and d[:2] == b"\0\0":
                    flags = struct.unpack(">H", d[10:12])[0]
                if t == 1:
                    break
        else:
            opt(s, 1, name)
            flags = struct.unpack(">H", recvn(s, 10)[8:10])[0]
        print("structured" if structured else "simple", "go" if go else "export-name",
              "df" if flags & 0x80 else "no-df")
        s.close()
PY
	assert_output "simple go no-df
simple export-name no-df
structured go df
structured export-name df"
}

@test "--serve: a seekable archive whose frames carry no checksum is served from a checked copy, with a warning" {
	make_seekable "$A" nock.vma.zst --no-check >frames
	serve nock.vma.zst
	run -0 cat server.err
	assert_output "vma-extract: nock.vma.zst: the frame at offset 0 carries no checksum: serving a decompressed copy, checked as it is made"
	# damaged now, after the copy: what is served is still the archive as it was checked
	nbdpy - <<'EOF'
f = open("nock.vma.zst", "r+b"); f.seek(300000); b = f.read(1); f.seek(300000); f.write(bytes([b[0] ^ 0xff]))
EOF
	assert_exports_match
	stop_server
	assert_equal "$CODE" 0
}

@test "--serve: a client stalled half-way through its handshake or a request holds up no other; SIGTERM ends the server at once" {
	serve "$A"
	run -0 nbdpy - "$SOCK" "$SERVER" <<'EOF'
import nbd, os, signal, socket, struct, sys, time
sock, pid = sys.argv[1], int(sys.argv[2])
def recvn(s, n):
    b = b""
    while len(b) < n:
        b += s.recv(n - len(b))
    return b
# one client sends 2 of its 4 bytes of flags
a = socket.socket(socket.AF_UNIX); a.connect(sock); recvn(a, 18); a.sendall(b"\0\0")
# another chooses its export, then sends 10 of a request's 28 bytes
b = socket.socket(socket.AF_UNIX); b.connect(sock); recvn(b, 18)
b.sendall(struct.pack(">I", 3))
name = b"drive-virtio2"
b.sendall(struct.pack(">QII", 0x49484156454F5054, 1, len(name)) + name)
recvn(b, 10)
b.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, 0, 4096)[:10])
time.sleep(0.5)
# a third reads at once (the stalls used to hold it 30 s)
t = time.monotonic()
h = nbd.NBD(); h.connect_uri(f"nbd+unix:///drive-virtio2?socket={sock}")
h.pread(4096, 0)
print("served" if time.monotonic() - t < 10 else "held up")
# SIGTERM with both stalled clients still connected: gone at once (it used to take 60 s)
t = time.monotonic()
os.kill(pid, signal.SIGTERM)
while os.path.exists(sock) and time.monotonic() - t < 10:
    time.sleep(0.05)
print("stopped" if not os.path.exists(sock) else "still serving")
EOF
	assert_output "served
stopped"
	CODE=0
	wait "$SERVER" || CODE=$?
	SERVER=
	assert_equal "$CODE" 0
}

@test "--serve: connections it has no descriptor for are refused alone; the server goes on" {
	(
		ulimit -n 12
		exec vma-extract --serve "$SOCK" "$A" 2>server.err 3>&-
	) &
	SERVER=$!
	for ((i = 0; i < 200; i++)); do [ -S "$SOCK" ] && break; sleep 0.05; done
	run -0 nbdpy - "$SOCK" <<'EOF'
import nbd, socket, sys, time
sock = sys.argv[1]
held = []
for _ in range(12):
    s = socket.socket(socket.AF_UNIX); s.connect(sock); held.append(s)
time.sleep(1)
for s in held:
    s.close()
time.sleep(0.5)
h = nbd.NBD(); h.connect_uri(f"nbd+unix:///drive-virtio2?socket={sock}")
print(len(h.pread(4096, 0)))
EOF
	assert_output 4096
	grep -q "^vma-extract: accept: Too many open files$" server.err
	stop_server
	assert_equal "$CODE" 0
}

@test "--serve: an archive with no disk is refused: nothing to serve" {
	echo "name: vm100" >qemu-server.conf
	vma-create -o c.vma -c qemu-server.conf
	run -1 --separate-stderr vma-extract --serve "$SOCK" c.vma
	assert_output ""
	assert_equal "$stderr" "vma-extract: c.vma: the archive holds no disk to serve"
	[ ! -e "$SOCK" ]
}

@test "--serve: each point of a chain (plain, seekable zstd and gzip links) is served as its disks were then, bit for bit" {
	chain_here
	mkdir tmp
	for a in "$F" "$I1" "$I2" "$I3"; do
		TMPDIR=$PWD/tmp serve "$a"
		# only the gzip link is served from a decompressed copy; the others are read in place
		run -0 ls -l "/proc/$SERVER/fd/"
		copies=$(grep -c "(deleted)" <<<"$output" || :)
		assert_equal "$copies" "$([ "$a" = "$I3" ] && echo 1 || echo 0)"
		nbdcopy "$(uri drive-scsi0)" d0.served
		nbdcopy "$(uri drive-virtio1)" d1.served
		assert_equal "$(sha d0.served)" "$(sha "$a.d0")"
		assert_equal "$(sha d1.served)" "$(sha "$a.d1")"
		stop_server
		assert_equal "$CODE" 0
		assert_equal "$(cat server.err)" ""
		[ ! -e "$SOCK" ]
	done
}

@test "--serve: block status of a served chain shows holes exactly where the newest state's zero blocks are" {
	chain_here
	serve "$I3"
	for d in 0 1; do
		dev=$([ $d = 0 ] && echo drive-scsi0 || echo drive-virtio1)
		run -0 nbdinfo --map "$(uri "$dev")"
		got=$(tr -s ' ' <<<"$output" | sed 's/^ //')
		# the map the disk's all-zero 4 KiB blocks make, as nbdinfo prints it
		expected=$("$VZ_PYTHON" - "$I3.d$d" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
runs = []
for off in range(0, len(data), 4096):
    block = data[off:off + 4096]
    zero = block.count(0) == len(block)
    if runs and runs[-1][2] == zero:
        runs[-1][1] += len(block)
    else:
        runs.append([off, len(block), zero])
for off, n, zero in runs:
    print(off, n, "3 hole,zero" if zero else "0 data")
EOF
)
		assert_equal "$got" "$expected"
	done
	# drive-scsi0's cluster 15, written in $I1 and zeroed in $I3, and the two zeroed in $I1
	run -0 nbdinfo --map "$(uri drive-scsi0)"
	assert_line --regexp '^ *983040 +65536 +3 +hole,zero$'
	assert_line --regexp '^ *2097152 +131072 +3 +hole,zero$'
	# drive-virtio1: $I2's block at 0, then holes up to what $I3 left of the full's data
	run -0 nbdinfo --map "$(uri drive-virtio1)"
	assert_line --index 0 --regexp '^ *0 +4096 +0 +data$'
	assert_line --index 1 --regexp '^ *4096 +192512 +3 +hole,zero$'
	stop_server
	assert_equal "$CODE" 0
}

@test "--serve: 200 random 4 KiB reads of a served chain, and reads across its links, return the restored disk's bytes" {
	chain_here
	vma-extract "$I3" ex
	assert_equal "$(sha ex/disk-drive-scsi0.raw)" "$(sha "$I3.d0")"
	serve "$I3"
	run -0 nbdpy - "$SOCK" ex <<'EOF'
import nbd, random, sys
sock, ex = sys.argv[1:3]
rnd = random.Random(7)
bad = total = 0
for dev, count in (("drive-scsi0", 150), ("drive-virtio1", 50)):
    data = open(f"{ex}/disk-{dev}.raw", "rb").read()
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///{dev}?socket={sock}")
    assert h.get_size() == len(data)
    for _ in range(count):
        off = rnd.randrange(0, len(data) - 4096 + 1)
        total += 1
        bad += h.pread(4096, off) != data[off:off + 4096]
    # one read over every cluster, whichever link holds it, and the last bytes
    total += 2
    bad += h.pread(len(data), 0) != data
    bad += h.pread(100, len(data) - 100) != data[-100:]
print(f"{bad} of {total} reads differ")
EOF
	assert_output "0 of 204 reads differ"
	stop_server
	assert_equal "$CODE" 0
}

@test "--serve: a missing or mismatched link of a chain is refused with chain_open's message before anything listens; --base finds a parent elsewhere" {
	chain_here
	mkdir elsewhere
	u1=$(uuid_of "$I1")
	mv "$I1" elsewhere/
	# (timeout: a server that wrongly starts must fail the test, not hang it)
	run -1 --separate-stderr timeout 20 vma-extract --serve "$SOCK" "$I3"
	assert_equal "$stderr" "vma-extract: $I2: its parent $I1 (uuid $u1) is missing; give it with --base"
	[ ! -e "$SOCK" ] || fail "a socket was made for a broken chain"
	# given with --base (more than once), it is found by its uuid
	serve --base "$F" --base "elsewhere/$I1" "$I3"
	nbdcopy "$(uri drive-scsi0)" d0.served
	assert_equal "$(sha d0.served)" "$(sha "$I3.d0")"
	stop_server
	assert_equal "$CODE" 0
	# another archive under the parent's name: its uuid gives it away
	vma-create -o "$I1" -c qemu-server.conf drive-scsi0=d0.raw drive-virtio1=d1.raw
	run -1 --separate-stderr timeout 20 vma-extract --serve "$SOCK" "$I3"
	assert_equal "$stderr" "vma-extract: $I1: not the parent of $I2 (that is uuid $u1)"
	[ ! -e "$SOCK" ] || fail "a socket was made for a broken chain"
	# a link cut short is found in the index pass: named, nothing listens
	rm "$I1"
	head -c 100000 "elsewhere/$I1" >"$I1"
	run -1 --separate-stderr timeout 20 vma-extract --serve "$SOCK" "$I3"
	assert_regex "$stderr" "^vma-extract: $I1: offset [0-9]+: archive truncated"
	[ ! -e "$SOCK" ] || fail "a socket was made for a damaged chain"
}

@test "--serve: a 1 TiB disk with an incremental archive on top is served with less than 256 MiB of memory" {
	[ "${SANITIZE:-0}" != 1 ] || skip "AddressSanitizer's shadow memory is no measure"
	truncate -s 1T big.img
	printf 'end of the terabyte' | dd of=big.img bs=1 seek=$(((1 << 40) - 19)) conv=notrunc status=none
	vma-create -o big.vma drive-scsi0=big.img
	rm big.img
	# the incremental: the last cluster changed, pushed whole, as QEMU's backup job does
	inc_json big.vma big.vma 1 drive-scsi0=1099511627776 >inc.json
	vma-create --listen "$PWD/push.sock" --incremental inc.json -o big.inc.vma \
		drive-scsi0=1099511627776 2>push.err 3>&- &
	pusher=$!
	for ((i = 0; i < 200; i++)); do [ -S push.sock ] && break; sleep 0.05; done
	nbdpy -m nbd -u "nbd+unix:///drive-scsi0?socket=$PWD/push.sock" \
		-c 'h.pwrite(bytes(65536 - 19) + b"the changed end....", (1 << 40) - 65536)' \
		-c 'h.shutdown()'
	wait "$pusher" || fail "vma-create: $(cat push.err)"
	serve big.inc.vma
	run -0 nbdpy -m nbd -u "$(uri drive-scsi0)" -c 'print(h.get_size(), bytes(h.pread(19, (1 << 40) - 19)).decode())'
	assert_output "1099511627776 the changed end...."
	peak=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER/status")
	echo "peak resident size: $peak KiB" >&3
	[ "$peak" -lt $((256 * 1024)) ] || fail "peak resident size $peak KiB"
	[ "$peak" -gt $((128 * 1024)) ] || fail "peak $peak KiB: the index (128 MiB) was not all touched?"
	stop_server
	assert_equal "$CODE" 0
}
