# shellcheck shell=bash
# Helpers for the VMA tool tests: `load lib/vma` after `load lib/common`.
#
#   vma_check [--strict] [--json] ARCHIVE|-   the independent Python checker (tests/lib/vma_check.py)
#   vma_corrupt IN OUT DEFECT                 a copy of IN with one named defect
#   nbd_serve SOCKET FORMAT IMAGE             qemu-nbd exporting IMAGE read-only on SOCKET
#   nbd_stop SOCKET                           stops that qemu-nbd
#   roundtrip NAME=FILE...                    vma-create, check, vma-extract, compare sha256

vma_check() { python3 "$TOP/tests/lib/vma_check.py" "$@"; }
vma_corrupt() { python3 "$TOP/tests/lib/vma_corrupt.py" "$@"; }

nbd_serve() { # SOCKET FORMAT IMAGE
	local i
	qemu-nbd --read-only --persistent --shared=4 --format="$2" --socket="$1" \
		--pid-file="$1.pid" "$3" </dev/null >/dev/null 2>"$1.err" 3>&- &
	for ((i = 0; i < 200; i++)); do
		[ -S "$1" ] && [ -s "$1.pid" ] && return 0
		sleep 0.05
	done
	cat "$1.err" >&2
	return 1
}

nbd_stop() { # SOCKET
	[ -s "$1.pid" ] && kill "$(cat "$1.pid")" 2>/dev/null
	rm -f "$1.pid"
	return 0
}

# Backs up the given NAME=FILE devices into one archive, checks it with the independent
# checker, restores it, and compares every restored disk with its source.
roundtrip() {
	local dir=$BATS_TEST_TMPDIR/rt spec
	rm -rf "$dir" "$BATS_TEST_TMPDIR/rt.vma"
	vma-create -o "$BATS_TEST_TMPDIR/rt.vma" "$@"
	vma_check --strict "$BATS_TEST_TMPDIR/rt.vma" >/dev/null
	vma-extract "$BATS_TEST_TMPDIR/rt.vma" "$dir"
	for spec in "$@"; do
		[ "$(sha "$dir/disk-${spec%%=*}.raw")" = "$(sha "${spec#*=}")" ] ||
			fail "restored ${spec%%=*} differs from ${spec#*=}"
	done
}
