#!/usr/bin/env bats
# vma-create --listen: the write-only NBD server that QEMU's backup job pushes into, driven by
# real clients (nbdcopy, qemu-img, libnbd's nbdsh, QEMU itself) and by malformed ones.

# A server waiting for a client that never comes must not hang the suite.
BATS_TEST_TIMEOUT=120

# libnbd's shell (nbdsh is python3 -m nbd) on Debian's python3, which has the module.
nbdsh() { "$VZ_PYTHON" -m nbd "$@"; }

setup() {
	load lib/common
	load lib/vma
	load lib/qemu
	load lib/listen
	enter_work_dir
	SOCK=$PWD/s.sock
}

teardown() {
	[ -d "$BATS_TEST_TMPDIR/work/vm" ] && qemu_stop "$BATS_TEST_TMPDIR/work/vm"
	[ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null
	[ -n "${CLIENTS:-}" ] && kill $CLIENTS 2>/dev/null
	return 0
}


# A server for a 1 MiB drive-scsi0 that nbdsh's commands (ARGS) make fail: the client sees an
# error, the server exits 1 saying only "vma-create: drive-scsi0: MESSAGE", and leaves nothing
# but its stderr.
refused_writes() { # MESSAGE NBDSH-ARGS...
	local message=$1
	shift
	serve drive-scsi0=1048576
	run nbdsh -u "$(uri drive-scsi0)" "$@"
	assert_failure
	server_result
	assert_equal "$CODE" 1
	assert_equal "$(cat server.err)" "vma-create: drive-scsi0: $message"
	assert_equal "$(ls -A)" server.err
}

# Microseconds on the wall clock.
now_us() { echo "${EPOCHREALTIME/./}"; }

# In the background (pid in CLIENTS): a connection to the server that says nothing for 30 s;
# the file FLAG appears once it is connected.
silent_client() { # FLAG
	timeout 60 "$VZ_PYTHON" -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
open(sys.argv[2], "w").close()
time.sleep(30)' "$SOCK" "$1" 3>&- &
	CLIENTS=$!
}

@test "vma-create --listen lists one export per device with its exact size" {
	serve drive-scsi0=5242880 drive-virtio1=70144
	run -0 nbdinfo --json --list "$(uri)"
	assert_equal "$(jq -c '[.exports[] | {"export-name", "export-size", "block_size_maximum", "is_read_only"}]' <<<"$output")" \
		'[{"export-name":"drive-scsi0","export-size":5242880,"block_size_maximum":1048576,"is_read_only":false},{"export-name":"drive-virtio1","export-size":70144,"block_size_maximum":1048576,"is_read_only":false}]'
	# NBD_INFO_BLOCK_SIZE. (QEMU 7.2's backup job still warns
	# that "the target block device doesn't provide information about the block size": its
	# NBD block driver has no bdrv_get_info, whatever the server advertises.)
	assert_equal "$(jq -c '[.exports[] | [.block_size_minimum, .block_size_preferred]]' <<<"$output")" '[[512,65536],[512,65536]]'
	[ "$(stat -c %a "$SOCK")" = 600 ]
}

@test "vma-create --listen writes what nbdcopy and qemu-img convert push into it" {
	random_file a.raw 3000000
	truncate -s 5M a.raw
	random_file b.raw 70144
	qemu-img create -q -f qcow2 c.qcow2 10M
	qemu-io -f qcow2 -c "write -P 7 100k 20k" -c "write -z 1M 1M" c.qcow2 >/dev/null
	qemu-img convert -O raw c.qcow2 c.raw
	echo "name: pushed" >qemu-server.conf
	serve -c qemu-server.conf drive-scsi0=5242880 drive-scsi1=70144 drive-scsi2=10485760
	nbdcopy a.raw "$(uri drive-scsi0)"
	qemu-img convert -n -f raw -O raw b.raw "$(uri drive-scsi1)"
	qemu-img convert -n -f qcow2 -O raw c.qcow2 "$(uri drive-scsi2)"
	server_result
	assert_equal "$CODE" 0
	[ ! -e "$SOCK" ] || fail "the socket is left behind"
	vma_check --strict out.vma
	vma-extract out.vma x
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha a.raw)"
	assert_equal "$(sha x/disk-drive-scsi1.raw)" "$(sha b.raw)"
	assert_equal "$(sha x/disk-drive-scsi2.raw)" "$(sha c.raw)"
	assert_equal "$(cat x/qemu-server.conf)" "name: pushed"
}

@test "vma-create --listen --stats: the figures, timed from the first write a client sends, and the archive's sha256" {
	random_file a.raw 300000
	truncate -s 1M a.raw
	serve --stats s.json drive-scsi0=1048576 drive-scsi1=65536
	# The time waited for the clients is not part of the copy.
	sleep 2
	nbdcopy a.raw "$(uri drive-scsi0)"
	nbdsh -u "$(uri drive-scsi1)" -c 'h.zero(65536, 0)'
	server_result
	assert_equal "$CODE" 0
	assert_equal "$(jq -r .sha256 s.json)" "$(sha out.vma)"
	assert_equal "$(jq -c 'del(.elapsed_ms, .sha256)' s.json)" \
		"{\"devices\":[{\"name\":\"drive-scsi0\",\"size\":1048576,\"zeros\":$((1048576 - 303104)),\"saved\":303104},{\"name\":\"drive-scsi1\",\"size\":65536,\"zeros\":65536,\"saved\":0}],\"size\":1114112,\"zeros\":$((1114112 - 303104)),\"saved\":303104,\"vma_bytes\":$(stat -c %s out.vma),\"archive_bytes\":$(stat -c %s out.vma)}"
	ms=$(jq .elapsed_ms s.json)
	[ "$ms" -lt 2000 ] || fail "elapsed_ms $ms counts the wait for the clients"
}

@test "vma-create --listen takes the backup that QEMU's own backup job pushes into it" {
	random_file d0.raw 4M
	truncate -s $((100 * 1048576 + 3584)) d0.raw
	qemu-img create -q -f qcow2 d1.qcow2 32M
	qemu-io -f qcow2 -c "write -P 0x33 5M 3M" d1.qcow2 >/dev/null
	qemu-img convert -O raw d1.qcow2 d1.raw
	mkdir vm
	qemu_start_bare "$PWD/vm" \
		-blockdev "driver=file,node-name=f0,filename=$PWD/d0.raw" \
		-blockdev driver=raw,node-name=drive-scsi0,file=f0 \
		-blockdev "driver=file,node-name=f1,filename=$PWD/d1.qcow2" \
		-blockdev driver=qcow2,node-name=drive-virtio1,file=f1
	serve -z zstd drive-scsi0=$((100 * 1048576 + 3584)) drive-virtio1=33554432
	qemu_push drive-scsi0 drive-virtio1
	server_result
	assert_equal "$CODE" 0
	zstd -q -d -c out.vma | vma_check --strict -
	vma-extract out.vma x
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha d0.raw)"
	assert_equal "$(sha x/disk-drive-virtio1.raw)" "$(sha d1.raw)"
}

@test "vma-create --listen fails cleanly when a client writes a cluster twice" {
	refused_writes "cluster 1 written twice" \
		-c 'h.pwrite(b"x" * 65536, 65536)' -c 'h.pwrite(b"y" * 65536, 65536)'
}

@test "vma-create --listen fails cleanly when pieces of a cluster overlap" {
	refused_writes "bytes at 11776 written twice" \
		-c 'h.pwrite(b"x" * 4096, 8192)' -c 'h.pwrite(b"y" * 1024, 12288 - 512)'
}

@test "vma-create --listen takes writes of many clusters whole, across extents, next to clusters in pieces and zeroed" {
	# 4 MiB + 1536 bytes: 64 whole clusters and a short last one.
	serve drive-scsi0=$((4 * 1048576 + 1536))
	nbdsh -u "$(uri drive-scsi0)" -c 'h.pwrite(b"p" * 512, 3 * 65536)' \
		-c 'h.zero(65536, 4 * 65536)' -c 'h.pwrite(b"a" * 65536, 5 * 65536)' \
		-c 'h.pwrite(b"b" * (3 * 65536), 0)' -c 'h.pwrite(b"c" * 65024, 3 * 65536 + 512)' \
		-c 'end = 4 * 1048576 + 1536' \
		-c 'for o in range(6 * 65536, end, 1048576): h.pwrite(b"d" * min(1048576, end - o), o)'
	server_result
	assert_equal "$CODE" 0
	vma_check --strict out.vma
	vma-extract out.vma x
	{
		head -c $((3 * 65536)) /dev/zero | tr '\0' b
		head -c 512 /dev/zero | tr '\0' p
		head -c 65024 /dev/zero | tr '\0' c
		head -c 65536 /dev/zero
		head -c 65536 /dev/zero | tr '\0' a
		head -c $((4 * 1048576 + 1536 - 6 * 65536)) /dev/zero | tr '\0' d
	} >expected
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha expected)"
}

@test "vma-create --listen: a write of many clusters over one written before, or begun in pieces, fails there" {
	refused_writes "cluster 2 written twice" \
		-c 'h.pwrite(b"x" * 65536, 2 * 65536)' -c 'h.pwrite(b"y" * (4 * 65536), 0)'
	refused_writes "bytes at 131584 written twice" \
		-c 'h.pwrite(b"x" * 512, 2 * 65536 + 512)' -c 'h.pwrite(b"y" * (4 * 65536), 0)'
}

@test "vma-create --listen assembles a cluster that arrives in 512-byte-aligned pieces" {
	serve drive-scsi0=131072
	nbdsh -u "$(uri drive-scsi0)" -c 'h.pwrite(b"b" * 512, 512)' -c 'h.zero(512, 0)' \
		-c 'h.pwrite(b"c" * 64512, 1024)' -c 'h.pwrite(b"d" * 65536, 65536)'
	server_result
	assert_equal "$CODE" 0
	vma_check --strict out.vma
	vma-extract out.vma x
	{
		head -c 512 /dev/zero
		printf 'b%.0s' $(seq 512)
		head -c 64512 /dev/zero | tr '\0' c
		head -c 65536 /dev/zero | tr '\0' d
	} >expected
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha expected)"
}

@test "vma-create --listen fails cleanly on a write past the end of a device" {
	refused_writes "write past the end (65536 bytes at 1048576, size 1048576)" \
		-c 'h.set_strict_mode(0)' -c 'h.pwrite(b"x" * 65536, 1048576)'
}

@test "vma-create --listen fails cleanly when a client disconnects with data missing" {
	serve drive-scsi0=1048576 drive-scsi1=65536
	nbdsh -u "$(uri drive-scsi0)" -c 'h.pwrite(b"x" * 65536, 0)'
	server_result
	assert_equal "$CODE" 1
	assert_equal "$(cat server.err)" "vma-create: drive-scsi0: the client disconnected with 983040 of 1048576 bytes not written"
	assert_equal "$(ls -A)" server.err
}

@test "vma-create --listen fails cleanly on garbage instead of a request" {
	serve drive-scsi0=1048576
	run "$VZ_PYTHON" - "$SOCK" <<'PY'
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.recv(18)                                   # NBDMAGIC IHAVEOPT flags
s.sendall(struct.pack(">I", 3))              # fixed newstyle, no zeroes
name = b"drive-scsi0"
s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, len(name)) + name)  # NBD_OPT_EXPORT_NAME
s.recv(10)
s.sendall(b"this is not an NBD request at all!")
s.recv(1)
PY
	server_result
	assert_equal "$CODE" 1
	assert_equal "$(cat server.err)" "vma-create: client of drive-scsi0 sent garbage (no request magic)"
	assert_equal "$(ls -A)" server.err
}

@test "vma-create --listen answers a read with an error and carries on" {
	serve drive-scsi0=65536
	run -0 nbdsh -u "$(uri drive-scsi0)" -c '
try:
    h.pread(512, 0)
except nbd.Error as e:
    print("read refused:", e.string)
h.pwrite(b"z" * 65536, 0)
'
	assert_output --partial "read refused: nbd_pread: read: command failed: Invalid argument"
	server_result
	assert_equal "$CODE" 0
	assert_equal "$(cat server.err)" "vma-create: drive-scsi0: a client tried to read; exports are write-only"
	vma_check --strict out.vma
}

@test "vma-create --listen ends without a file when it is terminated" {
	serve drive-scsi0=1048576
	nbdsh -u "$(uri drive-scsi0)" -c 'h.pwrite(b"x" * 65536, 0)' -c 'import time; time.sleep(2)' 3>&- &
	client=$!
	sleep 0.5
	kill -TERM "$SERVER"
	server_result
	assert_equal "$CODE" 143
	wait "$client" || true
	assert_equal "$(ls -A)" server.err
}

@test "vma-create --listen rejects bad sizes, names and bandwidth limits as usage errors" {
	run -2 vma-create --listen "$SOCK" -o out.vma drive-scsi0=0
	run -2 vma-create --listen "$SOCK" -o out.vma drive-scsi0=12k
	run -2 vma-create --listen "$SOCK" -o out.vma a/b=65536
	run -2 vma-create --listen "$SOCK" --bwlimit 0 -o out.vma drive-scsi0=65536
	assert_line --index 0 "vma-create: invalid bandwidth limit '0': expected a number from 1 to 9007199254740991"
	[ ! -e "$SOCK" ] && [ ! -e out.vma ]
}

@test "vma-create --listen --bwlimit paces two QEMU backup jobs together, on their data alone" {
	# 3 MiB and 1 MiB of data in 16 MiB and 8 MiB disks; QEMU's jobs run at full speed.
	random_file d0.raw 3M
	truncate -s 16M d0.raw
	truncate -s 8M d1.raw
	random_file part 1M
	dd if=part of=d1.raw bs=1M seek=4 conv=notrunc status=none
	mkdir vm
	qemu_start_bare "$PWD/vm" \
		-blockdev "driver=file,node-name=f0,filename=$PWD/d0.raw" \
		-blockdev driver=raw,node-name=drive-scsi0,file=f0 \
		-blockdev "driver=file,node-name=f1,filename=$PWD/d1.raw" \
		-blockdev driver=raw,node-name=drive-scsi1,file=f1
	t0=$(now_us)
	serve --bwlimit 512 --stats s.json drive-scsi0=16777216 drive-scsi1=8388608
	qemu_push drive-scsi0 drive-scsi1
	server_result
	t1=$(now_us)
	assert_equal "$CODE" 0
	# 4 MiB of data at 512 KiB/s take 8 s at least, for the two jobs together (the next test
	# shows that the holes cost nothing).
	[ $((t1 - t0)) -ge 7800000 ] || fail "took $((t1 - t0)) us: faster than 512 KiB/s"
	assert_equal "$(jq .saved s.json)" $((4 * 1048576))
	vma_check --strict out.vma
	vma-extract out.vma x
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha d0.raw)"
	assert_equal "$(sha x/disk-drive-scsi1.raw)" "$(sha d1.raw)"
}

@test "vma-create --listen --bwlimit: holes cost nothing, 1 MiB of data in a 1 GiB disk at 512 KiB/s" {
	random_file d0.raw 1M
	truncate -s 1G d0.raw
	mkdir vm
	qemu_start_bare "$PWD/vm" \
		-blockdev "driver=file,node-name=f0,filename=$PWD/d0.raw" \
		-blockdev driver=raw,node-name=drive-scsi0,file=f0
	t0=$(now_us)
	serve --bwlimit 512 drive-scsi0=1073741824
	qemu_push drive-scsi0
	server_result
	t1=$(now_us)
	assert_equal "$CODE" 0
	# 2 s for the data; charging the 1023 MiB of holes would take over 30 minutes.
	[ $((t1 - t0)) -ge 1800000 ] || fail "took $((t1 - t0)) us: faster than 512 KiB/s"
	[ $((t1 - t0)) -lt 120000000 ] || fail "took $((t1 - t0)) us: the holes were charged"
	vma-extract out.vma x
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha d0.raw)"
}

@test "vma-create --listen --bwlimit: clients held back are not idle, and a new client's handshake is served meanwhile" {
	random_file a.raw 2M
	random_file b.raw 256K
	# Each 1 MiB write at 128 KiB/s holds the clients back 8 s, longer than -t and
	# --idle-timeout. Client a writes 1 MiB, then (once its first write is answered) the
	# second; b connects while a's second write is held, and writes while it is.
	timeout 100 "$VZ_PYTHON" - "$SOCK" "$(uri drive-scsi0)" <<'PY' 3>&- &
import nbd, os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
h = nbd.NBD()
h.connect_uri(sys.argv[2])
data = open("a.raw", "rb").read()
h.pwrite(data[: 1 << 20], 0)
open("first", "w").close()
h.pwrite(data[1 << 20 :], 1 << 20)
h.shutdown()
PY
	CLIENTS=$!
	timeout 100 "$VZ_PYTHON" - "$(uri drive-scsi1)" <<'PY' 3>&- &
import nbd, os, sys, time
while not os.path.exists("first"):
    time.sleep(0.01)
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(open("b.raw", "rb").read(), 0)
h.shutdown()
PY
	CLIENTS+=" $!"
	t0=$(now_us)
	BOUND=100 serve -t 1 --idle-timeout 4 --bwlimit 128 drive-scsi0=2097152 drive-scsi1=262144
	server_result
	t1=$(now_us)
	assert_equal "$(cat server.err)" ""
	assert_equal "$CODE" 0
	[ $((t1 - t0)) -ge 17800000 ] || fail "took $((t1 - t0)) us: 2.25 MiB faster than 128 KiB/s"
	vma-extract out.vma x
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha a.raw)"
	assert_equal "$(sha x/disk-drive-scsi1.raw)" "$(sha b.raw)"
}

@test "vma-create --listen --idle-timeout: no client comes, exit 3, no archive, no socket" {
	BOUND=60 serve --idle-timeout 1 drive-scsi0=65536 drive-scsi1=65536
	server_result
	assert_equal "$CODE" 3
	assert_equal "$(cat server.err)" "vma-create: drive-scsi0: waiting for a client: timed out after 1 s"
	assert_equal "$(ls -A)" server.err
}

@test "vma-create --listen --idle-timeout: a client that sends nothing more while its export lacks data, exit 3" {
	# The client is started first and connects as soon as the socket is there, so that python's
	# start-up does not count against the wait for a client.
	timeout 60 "$VZ_PYTHON" - "$SOCK" "$(uri drive-scsi0)" <<'PY' 3>&- &
import nbd, os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
h = nbd.NBD()
h.connect_uri(sys.argv[2])
h.pwrite(b"x" * 65536, 0)
time.sleep(30)
PY
	CLIENTS=$!
	BOUND=60 serve --idle-timeout=1 drive-scsi0=1048576
	server_result
	assert_equal "$CODE" 3
	assert_equal "$(cat server.err)" "vma-create: drive-scsi0: no request from its client: timed out after 1 s"
	assert_equal "$(ls -A)" server.err
}

@test "vma-create --listen -t: a connection that never finishes its handshake is dropped; the export's client comes after" {
	BOUND=60 serve -t 1 drive-scsi0=65536
	# connects and says nothing: it holds the only slot until its handshake times out
	silent_client connected
	for ((i = 0; i < 200; i++)); do [ -e connected ] && break; sleep 0.05; done
	for ((i = 0; i < 100; i++)); do grep -q handshake server.err && break; sleep 0.1; done
	run -0 timeout 60 "$VZ_PYTHON" -m nbd -u "$(uri drive-scsi0)" -c 'h.pwrite(b"y" * 65536, 0)'
	server_result
	assert_equal "$CODE" 0
	assert_equal "$(cat server.err)" "vma-create: client handshake: timed out after 1 s; disconnected it"
	vma_check --strict out.vma
}

@test "vma-create --listen serves one client per export: a second connection is refused at once and holds nothing" {
	random_file d.raw 4194304
	BOUND=60 serve drive-scsi0=4194304
	# the client: writes half, waits for "go", writes the rest
	timeout 60 "$VZ_PYTHON" - "$(uri drive-scsi0)" <<'PY' 3>&- &
import nbd, os, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
data = open("d.raw", "rb").read()
M = 1 << 20  # the most the server takes in one write
for off in range(0, 2 * M, M):
    h.pwrite(data[off : off + M], off)
open("half", "w").close()
while not os.path.exists("go"):
    time.sleep(0.05)
for off in range(2 * M, 4 * M, M):
    h.pwrite(data[off : off + M], off)
h.shutdown()
PY
	first=$!
	for ((i = 0; i < 400; i++)); do [ -e half ] && break; sleep 0.05; done
	# a second NBD client is turned away, not kept waiting
	run timeout 30 nbdinfo "$(uri drive-scsi0)"
	assert_failure
	[ "$status" != 124 ] || fail "nbdinfo was kept waiting"
	# a connection that would idle gets no greeting, only the end of the stream
	run -0 timeout 30 "$VZ_PYTHON" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
print(s.recv(18))' "$SOCK"
	assert_output "b''"
	# and one kept open, idle, does not hold up the end
	silent_client idle
	for ((i = 0; i < 400; i++)); do [ -e idle ] && break; sleep 0.05; done
	touch go
	wait "$first"
	server_result
	assert_equal "$CODE" 0
	assert_equal "$(cat server.err)" "$(printf 'vma-create: refused a connection: every export has its client\n%.0s' 1 2 3)"
	vma_check --strict out.vma
	vma-extract out.vma x
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha d.raw)"
}

@test "vma-create --listen refuses a client that chooses an export that already has its client" {
	BOUND=60 serve drive-scsi0=65536 drive-scsi1=65536
	timeout 60 "$VZ_PYTHON" -m nbd -u "$(uri drive-scsi0)" -c 'open("in", "w").close()' -c 'import time; time.sleep(30)' 3>&- &
	CLIENTS=$!
	for ((i = 0; i < 400; i++)); do [ -e in ] && break; sleep 0.05; done
	run timeout 30 "$VZ_PYTHON" -m nbd -u "$(uri drive-scsi0)" -c 'pass'
	assert_failure 1
	assert_output "nbdsh: command line script failed: nbd_connect_uri: handshake: server policy prevents NBD_OPT_GO"
	# that refusal took nothing: drive-scsi1 still gets its client; then drive-scsi0's writes
	run -0 timeout 30 "$VZ_PYTHON" -m nbd -u "$(uri drive-scsi1)" -c 'h.pwrite(b"1" * 65536, 0)'
	kill "$CLIENTS"
	CLIENTS=
	server_result
	assert_equal "$CODE" 1
	assert_equal "$(cat server.err)" "vma-create: drive-scsi0: the client disconnected with 65536 of 65536 bytes not written"
}

@test "vma-create --listen: a client still connected once the archive is complete is disconnected after --idle-timeout" {
	random_file d.raw 65536
	# (--idle-timeout also bounds the wait for the first client: Python's start on a loaded
	# machine takes more than a second)
	BOUND=60 serve --idle-timeout 5 drive-scsi0=65536
	# writes everything, then keeps the connection open, as a client that never hangs up
	timeout 60 "$VZ_PYTHON" -m nbd -u "$(uri drive-scsi0)" -c 'h.pwrite(open("d.raw", "rb").read(), 0)' \
		-c 'open("written", "w").close()' -c 'import time; time.sleep(30)' 3>&- &
	CLIENTS=$!
	server_result
	assert_equal "$CODE" 0
	[ -e written ] || fail "the client did not write"
	assert_equal "$(cat server.err)" "vma-create: the archive is complete; disconnected 1 client(s) still connected after 5 s"
	vma_check --strict out.vma
	vma-extract out.vma x
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha d.raw)"
}
