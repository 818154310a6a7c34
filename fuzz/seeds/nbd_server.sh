#!/bin/bash
# Seeds for fuzz_nbd_server: each is everything one NBD client sends to vma-create --listen on
# one connection, for the exports the target serves (fuzz/fuzz_nbd_server.c):
#   drive-scsi0=200704 drive-efidisk0=131072 drive-scsi1=5368709120 drive-tpmstate0=5000
# Sessions of real clients (nbdinfo, nbdcopy, qemu-img, libnbd's nbdsh), recorded by
# fuzz/seeds/nbd-record.py between them and the built vma-create --listen, when those are
# installed; and sessions built here with printf from the protocol (doc/proto.md of the NBD
# project) for what real clients never send: NBD_OPT_EXPORT_NAME, with and without the 124
# zeroes, aborts, unknown options and commands, reads, pieces of clusters, errors.
# Usage: fuzz/seeds/nbd_server.sh DIR   (VZ_BIN: the folder of the built tools)
set -euo pipefail
# shellcheck source=fuzz/seeds/random-bytes.bash
source "$(dirname -- "${BASH_SOURCE[0]}")/random-bytes.bash"
out=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
devices=(drive-scsi0=200704 drive-efidisk0=131072 drive-scsi1=5368709120 drive-tpmstate0=5000)

# --- built with printf ---

# Big-endian integers of 2, 4 or 8 bytes.
be() { # BYTES VALUE
	local i
	for ((i = $1 - 1; i >= 0; i--)); do
		# shellcheck disable=SC2059 # the format is the byte itself
		printf "\\x$(printf %02x $((($2 >> (8 * i)) & 255)))"
	done
}
flags() { be 4 "$1"; } # the client's flags: 1 fixed newstyle, 2 no zeroes
# An option: IHAVEOPT, the option and its length; the data follows.
option_header() { # OPTION LENGTH
	be 8 0x49484156454f5054
	be 4 "$1"
	be 4 "$2"
}
option() { option_header "$1" "${#2}" && printf %s "$2"; } # OPTION TEXT
# NBD_OPT_GO (7) or NBD_OPT_INFO (6) for an export, with the information requests given.
go() { # OPTION NAME [INFO...]
	local opt=$1 name=$2
	shift 2
	option_header "$opt" $((4 + ${#name} + 2 + 2 * $#))
	be 4 "${#name}"
	printf %s "$name"
	be 2 $#
	for i in "$@"; do be 2 "$i"; done
}
# A request: type 0 read, 1 write (the payload follows), 2 disc, 3 flush, 4 trim, 5 cache,
# 6 write zeroes, 7 block status.
request() { # TYPE HANDLE OFFSET LENGTH [FLAGS]
	be 4 0x25609513
	be 2 "${5:-0}"
	be 2 "$1"
	be 8 "$2"
	be 8 "$3"
	be 4 "$4"
}
payload() { head -c "$1" /dev/zero | tr '\0' "${2:-x}"; } # LENGTH [CHAR]

{
	flags 3
	option 1 drive-efidisk0
	request 6 1 0 131072
	request 3 2 0 0
	request 2 3 0 0
} >"$out/export-name"
{
	flags 1
	option 1 drive-tpmstate0
	request 1 1 0 5000
	payload 5000 t
	request 2 2 0 0
} >"$out/export-name-zeroes"
{
	flags 3
	option 3 ""
	option 2 ""
} >"$out/list-abort"
{
	flags 3
	option 3 ""
	go 6 drive-scsi0 3
	go 6 drive-scsi1 0 1 2 3
	option 8 ""
	option_header 10 $((4 + 11 + 4 + 4 + 15)) # NBD_OPT_SET_META_CONTEXT
	be 4 11
	printf drive-scsi0
	be 4 1
	be 4 15
	printf base:allocation
	option 5 ""
	option 99 "unknown"
	go 7 "" 3
	go 7 nosuch 3
	go 7 drive-scsi1 3
	request 0 1 0 512
	request 7 2 0 65536
	request 4 3 0 65536
	request 5 4 0 65536
	request 0x55 5 0 0
	request 6 6 4294967296 65536
	request 1 7 $((5368709120 - 512)) 512 1
	payload 512 e
	request 6 8 $((5368709120 - 65536)) $((65536 - 512))
	request 3 9 0 0
	request 2 10 0 0
} >"$out/options-and-commands"
{
	flags 3
	go 7 drive-efidisk0 3
	request 1 1 512 512
	payload 512 b
	request 1 2 0 512
	payload 512 a
	request 6 3 1024 $((65536 - 1024))
	request 1 4 65536 65536 1
	payload 65536 c
	request 2 5 0 0
} >"$out/pieces"
{
	flags 3
	go 7 drive-scsi0
	request 6 1 0 65536
	request 6 2 0 512
} >"$out/twice"
{
	flags 3
	go 7 drive-scsi0
	request 1 1 $((200704 - 4096)) 8192
} >"$out/past-the-end"
{ # a sector of 257 clusters: more than the 256 that may wait for their other pieces
	flags 3
	go 7 drive-scsi1
	for ((k = 0; k < 257; k++)); do request 6 "$k" $((k * 65536 + 512)) 512; done
} >"$out/pending-limit"
{ # pieces that overlap, and a piece of a cluster that is complete already
	flags 3
	go 7 drive-efidisk0
	request 6 1 0 512
	request 6 2 0 1024
} >"$out/overlap"
{
	flags 3
	go 7 drive-efidisk0
	request 6 1 65536 65536
	request 6 2 65536 512
} >"$out/piece-of-complete"

# --- recorded from real clients ---

vma_create=${VZ_BIN:-}/vma-create
python=/usr/bin/python3 # Debian's, with libnbd's module for nbdsh
missing=()
for tool in "$vma_create" nbdinfo nbdcopy qemu-img qemu-io "$python"; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "fuzz/seeds/nbd_server.sh: no recorded sessions, missing: ${missing[*]}" >&2
	exit 0
fi

tmp=$(mktemp -d)
server=
stop_server() {
	if [ -n "$server" ]; then
		kill "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
		server=
	fi
}
trap 'stop_server; rm -rf "$tmp"' EXIT
cd "$tmp"

# A fresh server for each session, so that one that fails it (nbdinfo reads, which a
# write-only export refuses; a client leaves an export unwritten) leaves the others alone.
record() { # NAME EXPORT COMMAND ARGS... ("{}" in ARGS: the export's URI)
	local name=$1 uri="nbd+unix:///$2?socket={}"
	shift 2
	rm -f s.sock
	"$vma_create" --listen "$PWD/s.sock" "${devices[@]}" >/dev/null 2>server.err &
	server=$!
	for ((i = 0; i < 100; i++)); do
		[ -S s.sock ] && break
		sleep 0.05
	done
	"$python" "$here/nbd-record.py" s.sock "$out/$name" -- "${@//\{\}/$uri}" >/dev/null
	stop_server
}

# drive-scsi0: sparse, a block of data at the start and one in the last, partial, cluster
truncate -s 200704 a.raw
bytes 4096 a | dd of=a.raw conv=notrunc status=none
bytes 4096 b | dd of=a.raw bs=4096 seek=48 conv=notrunc status=none
# drive-efidisk0: 8 KiB of data in the second cluster, zeros around it
truncate -s 131072 b.raw
bytes 8192 c | dd of=b.raw bs=4096 seek=17 conv=notrunc status=none
# drive-scsi0 again, from a qcow2 image with a data cluster and a zeroed one
qemu-img create -q -f qcow2 c.qcow2 200704
qemu-io -f qcow2 -c "write -P 7 64k 64k" -c "write -z 128k 64k" -c "write -P 9 196608 512" \
	c.qcow2 >/dev/null
# drive-scsi1 (5 GiB) is left to the sessions above: a real client zeroes it in 5120 requests,
# a seed of 210 KiB that would slow every run down.

record nbdinfo-list "" nbdinfo --list "{}"
record nbdinfo drive-scsi0 nbdinfo "{}"
record nbdcopy drive-scsi0 nbdcopy a.raw "{}"
record qemu-img-raw drive-efidisk0 qemu-img convert -n -f raw -O raw b.raw "{}"
record qemu-img-out-of-order drive-efidisk0 qemu-img convert -n -W -m 8 -f raw -O raw b.raw "{}"
record qemu-img-qcow2 drive-scsi0 qemu-img convert -n -f qcow2 -O raw c.qcow2 "{}"
# libnbd without its alignment checks, for the tail that is not a whole sector
record nbdsh-tail drive-tpmstate0 "$python" -m nbd -u "{}" -c 'h.set_strict_mode(0)' \
	-c 'h.pwrite(b"t" * 4096, 0)' -c 'h.pwrite(b"u" * 904, 4096)' -c 'h.flush()'
