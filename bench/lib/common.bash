# shellcheck shell=bash
# Shared by the bench scripts: they set VZ_BIN, then check what they need and
# make their folder with these.

# MESSAGE: on stderr as bench/SCRIPT: MESSAGE, and exit 1.
die() {
	echo "bench/${0##*/}: $1" >&2
	exit 1
}

# TOOL...: each built in VZ_BIN.
need_tools() {
	local t
	for t; do
		[ -x "$VZ_BIN/$t" ] || die "$VZ_BIN/$t: not built"
	done
}

# COMMAND...: each on PATH.
need_commands() {
	local c
	for c; do
		command -v "$c" >/dev/null || die "$c is missing"
	done
}

# NAME: a new folder NAME.XXXXXX of our own under BENCH_DIR (default /var/tmp), since the
# caller removes all of it at the end.
bench_dir() {
	mkdir -p "${BENCH_DIR:-/var/tmp}"
	mktemp -d "$(cd "${BENCH_DIR:-/var/tmp}" && pwd)/$1.XXXXXX"
}
