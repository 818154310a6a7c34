# Loaded by every bats file: assertions, the freshly built tools first on PATH, small helpers.
# shellcheck shell=bash
bats_require_minimum_version 1.7.0
bats_load_library bats-support
bats_load_library bats-assert

TOP=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
# shellcheck disable=SC2034 # used by the bats files
SHARED="$TOP/../shared"
export VZ_BIN="${VZ_BIN:-$TOP/build/cc/bin}"
PATH="$VZ_BIN:$PATH"
# Sanitizer reports must fail the run, not scroll past.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# sha256 of a file, nothing else.
sha() { sha256sum "$1" | cut -d' ' -f1; }

# Flips the lowest bit of the byte at OFFSET of FILE, in place.
flip_byte() { # FILE OFFSET
	local b
	b=$(od -An -tu1 -j "$2" -N 1 "$1")
	# shellcheck disable=SC2059 # the format is the byte
	printf "\\x$(printf %02x $((b ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# Writes SIZE bytes of random data to FILE.
random_file() { # FILE SIZE
	head -c "$2" /dev/urandom >"$1"
}

# Makes the test's own folder BATS_TEST_TMPDIR/work the current one (bats keeps files of its own
# in BATS_TEST_TMPDIR): for a setup() that works in the current folder.
enter_work_dir() {
	mkdir -p "$BATS_TEST_TMPDIR/work"
	cd "$BATS_TEST_TMPDIR/work" || exit 1
}

# vzdump.sh's state files: one folder per test file, so that test files running side by side
# (with the same VMIDs on different QEMUs) never see each other's backups.
export VZDUMP_STATEDIR="${VZDUMP_STATEDIR:-$BATS_FILE_TMPDIR/vzdump-state}"

# Waits up to SECONDS (default 10) for the socket SOCK that the background server PID makes;
# fails with the server's stderr (FILE, default server.err) when it exits first or never makes it.
await_socket() { # SOCK PID [SECONDS [FILE]]
	local i
	for ((i = 0; i < ${3:-10} * 20; i++)); do
		[ -S "$1" ] && return 0
		kill -0 "$2" 2>/dev/null || break
		sleep 0.05
	done
	cat "${4:-server.err}" >&2
	return 1
}
