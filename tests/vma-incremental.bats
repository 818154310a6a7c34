#!/usr/bin/env bats
# Incremental archives (vma-create --listen --incremental) and their chains: every point of a
# chain restored, listed, verified and consolidated by vma-extract, bit for bit against the
# disks as they were at that backup; missing, damaged and mismatched links refused. The
# clusters are pushed as QEMU's backup job pushes them (tests/lib/push_changed.py; the last
# test uses QEMU's own job, sync=bitmap).

BATS_TEST_TIMEOUT=300

setup() {
	load lib/common
	load lib/vma
	load lib/qemu
	load lib/listen
	load lib/chain
	enter_work_dir
	SOCK=$PWD/s.sock
	# A size that is not a multiple of 64 KiB (a short last cluster) and a small disk.
	DEVS=(drive-scsi0=3149824 drive-virtio1=1048576)
}

teardown() {
	[ -d "$BATS_TEST_TMPDIR/work/vm" ] && qemu_stop "$BATS_TEST_TMPDIR/work/vm"
	[ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null
	return 0
}

@test "every point of a chain of a full and three incrementals restores bit for bit, configs without the incremental blob" {
	make_chain
	for a in "$F" "$I1" "$I2" "$I3"; do
		vma-extract "$a" "x-$a"
		assert_equal "$(sha "x-$a/disk-drive-scsi0.raw")" "$(sha "$a.d0")"
		assert_equal "$(sha "x-$a/disk-drive-virtio1.raw")" "$(sha "$a.d1")"
		assert_equal "$(ls "x-$a" | tr '\n' ' ')" "disk-drive-scsi0.raw disk-drive-virtio1.raw qemu-server.conf "
		assert_equal "$(cat "x-$a/qemu-server.conf")" "name: chained"
	done
	# The states differ from each other: the test can fail.
	[ "$(sha "$I1.d0")" != "$(sha "$F.d0")" ] && [ "$(sha "$I3.d1")" != "$(sha "$I2.d1")" ]
	# One device of the chain (-d).
	vma-extract -d drive-virtio1 "$I3" xd
	assert_equal "$(ls xd | tr '\n' ' ')" "disk-drive-virtio1.raw qemu-server.conf "
	assert_equal "$(sha xd/disk-drive-virtio1.raw)" "$(sha "$I3.d1")"
}

@test "an incremental archive holds only the clusters written since its parent, zeros as zero clusters" {
	make_chain
	# I1: clusters 1, 15, 32 and 33 (zeroed), 48 (the last, 4 KiB) of drive-scsi0; nothing of
	# drive-virtio1.
	run -0 vma_check --strict --incremental --clusters "$I1"
	assert_equal "$output" "drive-scsi0 1 data
drive-scsi0 15 data
drive-scsi0 32 zero
drive-scsi0 33 zero
drive-scsi0 48 data"
	# 3 clusters of data (the last one 4 KiB) and the header: nothing else is stored.
	[ "$(stat -c %s "$I1")" -lt $((2 * 65536 + 4096 + 20480 + 512)) ]
	# A full is not an incremental.
	run -1 vma_check --incremental "$F"
	assert_output --partial "no config vzdump-incremental.json"
}

@test "a chain restores into name=target files, existing files in place, NBD and qcow2" {
	make_chain
	vma-extract "$I3" drive-scsi0=new0.raw drive-virtio1=new1.raw
	assert_equal "$(sha new0.raw)" "$(sha "$I3.d0")"
	assert_equal "$(sha new1.raw)" "$(sha "$I3.d1")"
	# In place: whatever was there is gone, the chain's zeros included.
	random_file old0.raw 3149824
	head -c 1048576 /dev/urandom >old1.raw
	vma-extract --force "$I2" drive-scsi0=old0.raw drive-virtio1=old1.raw
	assert_equal "$(sha old0.raw)" "$(sha "$I2.d0")"
	assert_equal "$(sha old1.raw)" "$(sha "$I2.d1")"
	vma-extract --format qcow2 "$I3" q
	qemu-img convert -O raw q/disk-drive-scsi0.qcow2 q0.raw
	assert_equal "$(sha q0.raw)" "$(sha "$I3.d0")"
	head -c 3149824 /dev/urandom >nbd0.raw
	nbd_start "$PWD/n.sock" --persistent --format=raw nbd0.raw
	vma-extract "$I1" "drive-scsi0=nbd+unix:///?socket=$PWD/n.sock"
	nbd_stop "$PWD/n.sock"
	assert_equal "$(sha nbd0.raw)" "$(sha "$I1.d0")"
	# No archive of the chain is a target, whichever link it is.
	cp "$F" full.copy
	run --separate-stderr -2 vma-extract --force "$I1" drive-scsi0="$F"
	assert_equal "$stderr" "vma-extract: $F: is the archive of the chain"
	run --separate-stderr -2 vma-extract --force "$I1" drive-scsi0="$I1"
	assert_equal "$stderr" "vma-extract: $I1: is the archive itself"
	cmp "$F" full.copy
}

@test "vma-extract -l and -l --json show the chain, newest first" {
	make_chain
	run -0 vma-extract -l "$I2"
	assert_equal "$(grep -v CTIME <<<"$output")" "CFG: size: $(stat -c %s qemu-server.conf) name: qemu-server.conf
CFG: size: $(stat -c %s "$I2.json") name: vzdump-incremental.json
DEV: dev_id=1 size: 3149824 devname: drive-scsi0
DEV: dev_id=2 size: 1048576 devname: drive-virtio1
CHAIN: depth: 2 uuid: $(uuid_of "$I2") file: $I2
CHAIN: depth: 1 uuid: $(uuid_of "$I1") file: $I1
CHAIN: depth: 0 uuid: $(uuid_of "$F") file: $F"
	run -0 vma-extract -l --json "$PWD/$I2"
	assert_equal "$(jq -c '.chain' <<<"$output")" \
		"[{\"file\":\"$PWD/$I2\",\"uuid\":\"$(uuid_of "$I2")\",\"depth\":2},{\"file\":\"$PWD/$I1\",\"uuid\":\"$(uuid_of "$I1")\",\"depth\":1},{\"file\":\"$PWD/$F\",\"uuid\":\"$(uuid_of "$F")\",\"depth\":0}]"
	# A full has no chain: its listing is as before.
	run -0 vma-extract -l --json "$F"
	assert_equal "$(jq -c 'has("chain")' <<<"$output")" false
	run -0 vma-extract -l "$F"
	refute_output --partial CHAIN
}

@test "vma-extract -t verifies every link, with its .sha256, and names a damaged one" {
	make_chain
	for a in "$F" "$I1" "$I2"; do sha256sum "$a" >"$a.sha256"; done
	run -0 vma-extract -t -v "$I3"
	assert_equal "$(grep -E '^(archive|sha256)' <<<"$output")" "archive $I3 (chain depth 3)
sha256 not checked: no $I3.sha256
archive $I2 (chain depth 2)
sha256 $(cut -d' ' -f1 "$I2.sha256") matches $I2.sha256
archive $I1 (chain depth 1)
sha256 $(cut -d' ' -f1 "$I1.sha256") matches $I1.sha256
archive $F (chain depth 0)
sha256 $(cut -d' ' -f1 "$F.sha256") matches $F.sha256"
	# A byte of the full's data flipped: only its .sha256 can tell.
	flip_byte "$F" 2000000
	run -1 vma-extract -t "$I3"
	assert_output --partial "$F: sha256 mismatch"
	run -1 vma-extract "$I3" x
	assert_output "vma-extract: $F: sha256 mismatch ($F.sha256 says $(cut -d' ' -f1 "$F.sha256"), archive is $(sha "$F"))"
	[ ! -e x ] || fail "a damaged chain left x behind"
}

@test "a missing parent is named, with its uuid, and nothing is written; --base finds it elsewhere" {
	make_chain
	mkdir elsewhere
	u1=$(uuid_of "$I1")
	mv "$I1" elsewhere/
	run -1 vma-extract "$I3" x
	assert_output "vma-extract: $I2: its parent $I1 (uuid $u1) is missing; give it with --base"
	[ ! -e x ] || fail "x was made"
	run -1 vma-extract -t "$I3"
	run -1 vma-extract -l "$I3"
	assert_equal "$output" "vma-extract: $I2: its parent $I1 (uuid $u1) is missing; give it with --base"
	vma-extract --base "elsewhere/$I1" "$I3" x
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha "$I3.d0")"
	vma-extract -t --base "elsewhere/$I1" "$I3"
	# A --base that is not in the chain changes nothing; the parent is still found by uuid.
	run -1 vma-extract --base "$F" "$I3" y
	assert_output --partial "its parent $I1"
}

@test "a parent replaced by another archive, a broken frame or a resized device is refused before anything is written" {
	make_chain
	# Another archive under the parent's name: its uuid gives it away.
	mv "$I1" keep.vma
	vma-create -o "$I1" -c qemu-server.conf drive-scsi0=d0.raw drive-virtio1=d1.raw
	run -1 vma-extract "$I3" x
	assert_output "vma-extract: $I1: not the parent of $I2 (that is uuid $(uuid_of keep.vma))"
	[ ! -e x ] || fail "x was made"
	rm "$I1"
	mv keep.vma "$I1"
	# A damaged zstd frame in a middle link: named, and the restore leaves nothing.
	cp "$I2" keep.zst
	flip_byte "$I2" 300
	run -1 vma-extract "$I3" x
	assert_output --partial "$I2: "
	[ ! -e x ] || fail "x was made"
	run -1 vma-extract -t "$I3"
	assert_output --partial "$I2: "
	mv keep.zst "$I2"
	# A parent whose device has another size does not belong to the chain.
	truncate -s 1114112 d1.raw
	vma-create -o other.vma -c qemu-server.conf drive-scsi0=d0.raw drive-virtio1=d1.raw
	truncate -s 1M d1.raw
	jq --arg u "$(uuid_of other.vma)" '.parent = {uuid: $u, file: "other.vma"} | .full.uuid = $u | .depth = 1' \
		inc.json >bad.json
	OUT=bad.inc.vma serve -c qemu-server.conf --incremental bad.json "${DEVS[@]}"
	push_changed d0.raw d0.raw "$(uri drive-scsi0)" >/dev/null
	push_changed d1.raw d1.raw "$(uri drive-virtio1)" >/dev/null
	server_result
	assert_equal "$CODE" 0
	run -1 vma-extract bad.inc.vma x
	assert_output "vma-extract: other.vma: device drive-virtio1 is 1114112 bytes, 1048576 bytes in bad.inc.vma"
	# The chain's own depth and full uuid must agree too.
	jq '.depth = 2' bad.json >deep.json
	OUT=deep.inc.vma serve -c qemu-server.conf --incremental deep.json "${DEVS[@]}"
	push_changed d0.raw d0.raw "$(uri drive-scsi0)" >/dev/null
	push_changed d1.raw d1.raw "$(uri drive-virtio1)" >/dev/null
	server_result
	run -1 vma-extract -t deep.inc.vma
	assert_output "vma-extract: other.vma: its chain does not match the one deep.inc.vma names"
}

@test "vma-extract --to-vma writes a chain as one full archive: Proxmox's strict reader takes it, same disks" {
	make_chain
	vma-extract --to-vma all.vma.zst "$I3"
	zstd -dq all.vma.zst -o all.vma
	vma_check --strict all.vma
	run -0 vma-extract -l all.vma
	refute_output --partial vzdump-incremental.json
	refute_output --partial CHAIN
	vma-extract all.vma.zst x
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha "$I3.d0")"
	assert_equal "$(sha x/disk-drive-virtio1.raw)" "$(sha "$I3.d1")"
	assert_equal "$(ls x | tr '\n' ' ')" "disk-drive-scsi0.raw disk-drive-virtio1.raw qemu-server.conf "
	# By name, or as -z says; into a pipe; never over an existing file.
	vma-extract --to-vma - -z none "$I1" >piped.vma
	vma-extract piped.vma y
	assert_equal "$(sha y/disk-drive-scsi0.raw)" "$(sha "$I1.d0")"
	# An uncompressed file of its own: direct I/O in whole 4 KiB blocks but the last write,
	# the same bytes as into the pipe but for the uuid and time of the header.
	ASAN_OPTIONS=detect_leaks=0 strace -qq -f -e trace=fcntl,write -o trace \
		vma-extract --to-vma file.vma "$I1"
	grep -q 'F_SETFL, .*O_DIRECT' trace || fail "no O_DIRECT set: $(cat trace)"
	grep -E ' write\(' trace | sed -E 's/.* = ([0-9]+)$/\1/' >sizes
	head -n -1 sizes | awk '$1 % 4096 { exit 1 }' || fail "writes of $(tr '\n' ' ' <sizes)bytes"
	vma_check --strict file.vma
	vma-extract file.vma z
	assert_equal "$(sha z/disk-drive-scsi0.raw)" "$(sha "$I1.d0")"
	assert_equal "$(sha z/disk-drive-virtio1.raw)" "$(sha "$I1.d1")"
	assert_equal "$(stat -c %s file.vma)" "$(stat -c %s piped.vma)"
	run -1 vma-extract --to-vma all.vma.zst "$I2"
	assert_output "vma-extract: all.vma.zst: already exists; not replacing it"
	# A missing link: no output at all.
	mv "$F" gone.vma
	run -1 vma-extract --to-vma none.vma "$I3"
	[ ! -e none.vma ] || fail "none.vma written"
	run -0 ls -A
	refute_output --partial .tmp
}

@test "vma-create --incremental: only with --listen, a blob that describes the devices exactly, its name reserved" {
	echo "name: x" >qemu-server.conf
	random_file d0.raw 65536
	vma-create -o full.vma drive-scsi0=d0.raw
	u=$(uuid_of full.vma)
	good() { jq -n --arg u "$u" '{format: "vzdump-qemu-incremental", version: 1,
		parent: {uuid: $u, file: "full.vma"}, full: {uuid: $u}, depth: 1,
		devices: [{name: "drive-scsi0", size: 65536, bitmap: "b"}]}'; }
	good >inc.json
	run -2 vma-create --incremental inc.json -o x.vma drive-scsi0=d0.raw
	assert_output --partial "vma-create: --incremental needs --listen"
	check() { # EXPECTED-MESSAGE JQ-FILTER
		good | jq "$2" >bad.json
		run -2 vma-create --listen s.sock --incremental bad.json -o x.vma drive-scsi0=65536
		assert_output "vma-create: --incremental bad.json: $1"
		[ ! -e x.vma ] && [ ! -e s.sock ]
	}
	check 'format: not "vzdump-qemu-incremental"' '.format = "x"'
	check 'version: not 1 (a newer vma-create wrote it?)' '.version = 2'
	check 'parent.uuid: not a uuid' '.parent.uuid = "abc"'
	check 'full.uuid: not a uuid' 'del(.full)'
	check 'parent.file: not a file name' '.parent.file = "../x.vma"'
	check 'depth: not a number from 1 to 1000' '.depth = 0'
	check 'devices[0].size: not a positive integer' '.devices[0].size = "1"'
	check 'devices[0].bitmap: not a bitmap name' '.devices[0].bitmap = ""'
	check 'devices[1].name: "drive-scsi0" twice' '.devices += .devices'
	check 'drive-scsi0 is 65537 bytes there, 65536 here' '.devices[0].size = 65537'
	check 'no device drive-scsi0 in it' '.devices[0].name = "drive-scsi1"'
	printf '{"format": 1' >bad.json
	run -2 vma-create --listen s.sock --incremental bad.json -o x.vma drive-scsi0=65536
	assert_output --partial "vma-create: --incremental bad.json: not JSON: "
	# Only --incremental makes an incremental archive.
	good >vzdump-incremental.json
	run -2 vma-create -c vzdump-incremental.json -o x.vma drive-scsi0=d0.raw
	assert_output "vma-create: config vzdump-incremental.json: that name is --incremental's"
}

@test "vma-create --listen --incremental ends when every client has gone, not before; a half-written cluster fails it" {
	random_file d0.raw 3149824
	truncate -s 1M d1.raw
	echo "name: x" >qemu-server.conf
	full_backup full.vma
	inc_json full.vma full.vma 1 "${DEVS[@]}" >inc.json
	# One export's client comes and goes without writing; the other's stays: still running.
	OUT=i.vma BOUND=60 serve --incremental inc.json "${DEVS[@]}"
	qemu-io -f raw -c "write -P 1 0 64k" "$(uri drive-scsi0)" >/dev/null
	sleep 1
	kill -0 "$SERVER" || fail "the server ended with a client still to come"
	[ ! -e i.vma ]
	nbdinfo "$(uri drive-virtio1)" >/dev/null || fail "$(cat server.err)"
	server_result
	assert_equal "$CODE" 0
	vma-extract i.vma x
	disk_write d0.raw "write -P 1 0 64k"
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha d0.raw)"
	assert_equal "$(sha x/disk-drive-virtio1.raw)" "$(sha d1.raw)"
	# Half a cluster, then the client goes: no archive.
	OUT=j.vma BOUND=60 serve --incremental inc.json "${DEVS[@]}"
	qemu-io -f raw -c "write -P 2 64k 4k" "$(uri drive-scsi0)" >/dev/null
	server_result
	assert_equal "$CODE" 1
	assert_equal "$(cat server.err)" "vma-create: drive-scsi0: the client disconnected with a cluster half written"
	[ ! -e j.vma ]
}

@test "QEMU's backup job with sync=bitmap pushes an incremental that restores to the disk as it was" {
	echo "name: qemu" >qemu-server.conf
	mkdir vm
	qemu-img create -q -f qcow2 disk.qcow2 4M
	qemu-io -f qcow2 -c "write -P 0x41 0 1M" -c "write -P 0x42 3M 512k" disk.qcow2 >/dev/null
	qemu_start_bare "$PWD/vm" -blockdev "driver=file,filename=$PWD/disk.qcow2,node-name=file0" \
		-blockdev driver=qcow2,file=file0,node-name=drive0 \
		-device virtio-blk-pci,drive=drive0,id=virtio0
	qmp_raw vm '{"execute":"block-dirty-bitmap-add","arguments":{"node":"drive0","name":"bm","persistent":true}}' >/dev/null
	DEVS=(drive0=4194304)
	OUT=full.vma serve -c qemu-server.conf "${DEVS[@]}"
	qemu_push drive0
	server_result
	assert_equal "$CODE" 0
	qemu-img convert -U -f qcow2 -O raw disk.qcow2 full.raw
	qmp_raw vm '{"execute":"human-monitor-command","arguments":{"command-line":"qemu-io -d /machine/peripheral/virtio0/virtio-backend \"write -P 0x55 128k 64k\""}}' >/dev/null
	qmp_raw vm '{"execute":"human-monitor-command","arguments":{"command-line":"qemu-io -d /machine/peripheral/virtio0/virtio-backend \"write -z 3M 64k\""}}' >/dev/null
	inc_json full.vma full.vma 1 "${DEVS[@]}" >inc.json
	OUT=inc.inc.vma serve -c qemu-server.conf --incremental inc.json "${DEVS[@]}"
	PUSH_BITMAP=bm qemu_push drive0
	server_result
	assert_equal "$CODE" 0
	# (QEMU keeps the zeroed cluster in its qcow2 metadata cache until it closes the image)
	qemu_stop "$PWD/vm"
	qemu-img convert -f qcow2 -O raw disk.qcow2 now.raw
	[ "$(sha now.raw)" != "$(sha full.raw)" ]
	vma-extract inc.inc.vma x
	assert_equal "$(sha x/disk-drive0.raw)" "$(sha now.raw)"
	run -0 vma_check --strict --incremental --clusters inc.inc.vma
	assert_equal "$output" "drive0 2 data
drive0 48 zero"
}

@test "vma-extract -t -v prints nothing on standard output when a later link of the chain fails" {
	make_chain
	sha256sum "$F" >"$F.sha256"
	flip_byte "$F" 2000000
	run -1 --separate-stderr vma-extract -t -v "$I3"
	assert_output ""
	[[ "$stderr" == *"$F: sha256 mismatch"* ]] || fail "stderr: $stderr"
}

@test "a parent named - is the file of that name beside the archive, never standard input" {
	echo "name: x" >qemu-server.conf
	random_file d0.raw 3149824
	truncate -s 1M d1.raw
	full_backup full.vma
	cp full.vma ./-
	inc_json full.vma full.vma 1 "${DEVS[@]}" | jq '.parent.file = "-"' >inc.json
	disk_write d0.raw "write -P 1 0 64k"
	OUT=i.vma serve --incremental inc.json "${DEVS[@]}"
	push_changed full.vma.d0 d0.raw "$(uri drive-scsi0)" >/dev/null
	push_changed full.vma.d1 d1.raw "$(uri drive-virtio1)" >/dev/null
	server_result
	assert_equal "$CODE" 0
	vma-extract i.vma x </dev/null
	assert_equal "$(sha x/disk-drive-scsi0.raw)" "$(sha d0.raw)"
	vma-extract -t i.vma <full.vma
}

@test "standard input named twice, as --base - and the archive or two --base -, is a usage error" {
	for args in "--base - -t -" "--base - --base - -t x.vma" "--base - - x" "--to-vma o.vma --base - -"; do
		# shellcheck disable=SC2086 # the words of args
		run -2 vma-extract $args </dev/null
		assert_line --index 0 "vma-extract: -: standard input is given more than once; it can be read only once"
	done
	[ ! -e x ] && [ ! -e o.vma ]
}

@test "vma-extract --to-vma - on a terminal is a usage error, status 2, as for vma-create" {
	random_file d0.raw 65536
	vma-create -o full.vma drive-scsi0=d0.raw
	run script -qec "vma-extract --to-vma - full.vma" /dev/null
	assert_equal "$status" 2
	assert_output --partial "vma-extract: refusing to write an archive to a terminal: give a file name"
}

@test "vma-create --listen --incremental: a client that goes away without NBD's disconnect, or stalls inside a cluster, fails the run" {
	echo "name: x" >qemu-server.conf
	random_file d0.raw 3149824
	truncate -s 1M d1.raw
	full_backup full.vma
	inc_json full.vma full.vma 1 "${DEVS[@]}" >inc.json
	# Killed after a whole cluster: its changes may not all be there.
	OUT=k.vma BOUND=60 serve --incremental inc.json "${DEVS[@]}"
	"$VZ_PYTHON" - "$(uri drive-scsi0)" <<-'EOF2'
		import os, sys
		import nbd
		h = nbd.NBD()
		h.connect_uri(sys.argv[1])
		h.pwrite(b"\x01" * 65536, 0)
		os._exit(0)
	EOF2
	nbdinfo "$(uri drive-virtio1)" >/dev/null || true
	server_result
	assert_equal "$CODE" 1
	assert_equal "$(cat server.err)" "vma-create: drive-scsi0: the client went away without NBD's disconnect request, maybe before it sent all its changes"
	[ ! -e k.vma ]
	# Half a cluster and then silence: the idle timeout ends it (status 3).
	OUT=s.vma BOUND=60 serve --incremental inc.json --idle-timeout 2 "${DEVS[@]}"
	nbdinfo "$(uri drive-virtio1)" >/dev/null
	"$VZ_PYTHON" - "$(uri drive-scsi0)" <<-'EOF2' 3>&- &
		import sys, time
		import nbd
		h = nbd.NBD()
		h.connect_uri(sys.argv[1])
		h.pwrite(b"\x02" * 4096, 0)
		time.sleep(30)
	EOF2
	CLIENT=$!
	server_result
	kill "$CLIENT" 2>/dev/null || true
	assert_equal "$CODE" 3
	grep -q 'drive-scsi0: no request from its client' server.err || fail "$(cat server.err)"
	[ ! -e s.vma ]
}
