# shellcheck shell=bash
# Helpers for the VMA tool tests: `load lib/vma` after `load lib/common`.
#
#   vma_check [--strict] [--json] ARCHIVE|-   the independent Python checker (tests/lib/vma_check.py)
#   vma_corrupt IN OUT DEFECT                 a copy of IN with one named defect
#   nbd_serve SOCKET FORMAT IMAGE             qemu-nbd exporting IMAGE read-only on SOCKET
#   nbd_stop SOCKET                           stops that qemu-nbd
#   roundtrip NAME=FILE...                    vma-create, check, vma-extract, compare sha256

# Debian's python3, not a slower shim that may come first on PATH.
VZ_PYTHON=/usr/bin/python3
[ -x "$VZ_PYTHON" ] || VZ_PYTHON=python3
vma_check() { "$VZ_PYTHON" "$TOP/tests/lib/vma_check.py" "$@"; }
vma_corrupt() { "$VZ_PYTHON" "$TOP/tests/lib/vma_corrupt.py" "$@"; }
vma_make() { "$VZ_PYTHON" "$TOP/tests/lib/vma_make.py" "$@"; }

# A qemu-nbd on SOCKET with QEMU-NBD-ARGS, in the background, once it listens.
nbd_start() { # SOCKET QEMU-NBD-ARGS...
	local i sock=$1
	shift
	qemu-nbd --socket="$sock" --pid-file="$sock.pid" "$@" </dev/null >/dev/null 2>"$sock.err" 3>&- &
	for ((i = 0; i < 200; i++)); do
		[ -S "$sock" ] && [ -s "$sock.pid" ] && return 0
		sleep 0.05
	done
	cat "$sock.err" >&2
	return 1
}

# IMAGE read-only, for several clients, until nbd_stop.
nbd_serve() { # SOCKET FORMAT IMAGE
	nbd_start "$1" --read-only --persistent --shared=4 --format="$2" "$3"
}

nbd_stop() { # SOCKET
	[ -s "$1.pid" ] && kill "$(cat "$1.pid")" 2>/dev/null
	rm -f "$1.pid"
	return 0
}

# Backs up the given NAME=FILE devices into one archive, checks it with the independent
# checker, restores it, and compares every restored disk with its source.
roundtrip() { # in the current folder: rt.vma, restored into rt/
	local spec
	rm -rf rt rt.vma
	vma-create -o rt.vma "$@"
	vma_check --strict rt.vma >/dev/null
	vma-extract rt.vma rt
	for spec in "$@"; do
		[ "$(sha "rt/disk-${spec%%=*}.raw")" = "$(sha "${spec#*=}")" ] ||
			fail "restored ${spec%%=*} differs from ${spec#*=}"
	done
}

# The archive with its uuid, its time and its MD5s zeroed, in the header and in every extent:
# what two runs of vma-create over the same input have in common, byte for byte.
vma_sans_ids() { # IN OUT
	"$VZ_PYTHON" - "$1" "$2" <<'END'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
data[8:48] = bytes(40)  # uuid, ctime, md5
pos = struct.unpack(">I", data[56:60])[0]
while pos < len(data):
    assert data[pos:pos + 4] == b"VMAE", pos
    blocks = struct.unpack(">H", data[pos + 6:pos + 8])[0]
    data[pos + 8:pos + 40] = bytes(32)  # uuid, md5
    pos += 512 + blocks * 4096
open(sys.argv[2], "wb").write(data)
END
}
