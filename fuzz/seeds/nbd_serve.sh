#!/bin/bash
# Seeds for fuzz_nbd_serve: each is everything one NBD client sends to vma-extract --serve on
# one connection, for the exports the target serves (fuzz/fuzz_nbd_serve.c):
#   drive-scsi0 (200704 bytes), drive-tpmstate0 (5000 bytes)
# Sessions of real clients (nbdinfo --list and --map, nbdcopy, libnbd's nbdsh), recorded by
# fuzz/seeds/nbd-record.py between them and the built vma-extract --serve, when those are
# installed; and sessions built here with printf from the protocol (doc/proto.md of the NBD
# project) for what real clients never send: meta context queries of every kind, block status
# without structured replies, refused writes with their payloads, reads past the end.
# Usage: fuzz/seeds/nbd_serve.sh DIR   (VZ_BIN: the folder of the built tools)
set -euo pipefail
# shellcheck source=fuzz/seeds/random-bytes.bash
source "$(dirname -- "${BASH_SOURCE[0]}")/random-bytes.bash"
out=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)

# --- built with printf ---

# Big-endian integers of 2, 4 or 8 bytes.
be() { # BYTES VALUE
	local i
	for ((i = $1 - 1; i >= 0; i--)); do
		# shellcheck disable=SC2059 # the format is the byte itself
		printf "\\x$(printf %02x $((($2 >> (8 * i)) & 255)))"
	done
}
flags() { be 4 "$1"; }
option_header() { # OPTION LENGTH
	be 8 0x49484156454f5054
	be 4 "$1"
	be 4 "$2"
}
option() { option_header "$1" "${#2}" && printf %s "$2"; } # OPTION TEXT
go() { # OPTION NAME [INFO...]
	local opt=$1 name=$2
	shift 2
	option_header "$opt" $((4 + ${#name} + 2 + 2 * $#))
	be 4 "${#name}"
	printf %s "$name"
	be 2 $#
	for i in "$@"; do be 2 "$i"; done
}
# NBD_OPT_LIST_META_CONTEXT (9) or NBD_OPT_SET_META_CONTEXT (10) for an export and queries.
meta() { # OPTION NAME [QUERY...]
	local opt=$1 name=$2 len q
	shift 2
	len=$((4 + ${#name} + 4))
	for q in "$@"; do len=$((len + 4 + ${#q})); done
	option_header "$opt" "$len"
	be 4 "${#name}"
	printf %s "$name"
	be 4 $#
	for q in "$@"; do
		be 4 "${#q}"
		printf %s "$q"
	done
}
request() { # TYPE HANDLE OFFSET LENGTH [FLAGS]
	be 4 0x25609513
	be 2 "${5:-0}"
	be 2 "$1"
	be 8 "$2"
	be 8 "$3"
	be 4 "$4"
}

{
	flags 3
	option 8 ""
	meta 9 drive-scsi0
	meta 9 drive-scsi0 base: qemu:dirty-bitmap:x base:allocation
	meta 10 drive-scsi0 nosuch: base:allocation
	go 7 drive-scsi0 3
	request 7 1 0 200704
	request 7 2 65536 131072 8 # NBD_CMD_FLAG_REQ_ONE
	request 7 3 135000 7
	request 0 4 0 200704
	request 0 5 200000 704 4 # NBD_CMD_FLAG_DF
	request 0 6 200000 705
	request 0 7 0 0
	request 2 8 0 0
} >"$out/structured-map-and-reads"
{
	flags 3
	meta 10 drive-scsi0 base:allocation # before structured replies: refused
	go 7 drive-tpmstate0
	request 7 1 0 4096 # no context: EINVAL
	request 0 2 4000 1000
	request 1 3 0 4096
	bytes 4096 w
	request 6 4 0 4096
	request 4 5 0 4096
	request 3 6 0 0
	request 5 7 0 4096
	request 0x55 8 0 0
	request 0 9 0 5000
} >"$out/simple-and-refused"
{
	flags 3
	option 8 ""
	meta 10 drive-tpmstate0 base:allocation
	go 7 drive-scsi0 # another export: the context does not follow
	request 7 1 0 65536
	option 3 ""
} >"$out/context-of-another-export"
{
	flags 1
	option 1 drive-tpmstate0
	request 0 1 0 5000
} >"$out/export-name"

# --- recorded from real clients ---

vma_create=${VZ_BIN:-}/vma-create
vma_extract=${VZ_BIN:-}/vma-extract
python=/usr/bin/python3 # Debian's, with libnbd's module for nbdsh
missing=()
for tool in "$vma_create" "$vma_extract" nbdinfo nbdcopy "$python"; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "fuzz/seeds/nbd_serve.sh: no recorded sessions, missing: ${missing[*]}" >&2
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

# The exports of the target, with data, a zero cluster and a sparse one.
truncate -s 200704 a.raw
bytes 65536 a | dd of=a.raw conv=notrunc status=none
bytes 4096 b | dd of=a.raw bs=4096 seek=33 conv=notrunc status=none
bytes 4096 c | dd of=a.raw bs=4096 seek=48 conv=notrunc status=none
bytes 5000 d >t.raw
"$vma_create" -o a.vma drive-scsi0=a.raw drive-tpmstate0=t.raw
"$vma_extract" --serve "$PWD/s.sock" a.vma 2>server.err &
server=$!
for ((i = 0; i < 100; i++)); do
	[ -S s.sock ] && break
	sleep 0.05
done

record() { # NAME EXPORT COMMAND ARGS... ("{}" in ARGS: the export's URI)
	local name=$1 uri="nbd+unix:///$2?socket={}"
	shift 2
	"$python" "$here/nbd-record.py" s.sock "$out/$name" -- "${@//\{\}/$uri}" >/dev/null
}

record nbdinfo-list "" nbdinfo --list "{}"
record nbdinfo-map drive-scsi0 nbdinfo --map "{}"
record nbdcopy drive-scsi0 nbdcopy "{}" null:
record nbdsh-reads drive-tpmstate0 "$python" -m nbd -u "{}" -c 'h.pread(1000, 4000)' \
	-c 'h.set_strict_mode(0)' -c 'h.pread(4096, 0)' \
	-c 'try: h.pwrite(b"x" * 512, 0)
except nbd.Error: pass'
