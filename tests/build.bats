#!/usr/bin/env bats
# The Makefile: CFLAGS, CPPFLAGS and LDFLAGS given on the command line (make CFLAGS=-O1,
# dpkg-buildflags) add to the project's own flags instead of replacing them, and a pkg-config
# failure stops the build with pkg-config's own message; the tools built map at start-up only the
# libraries every run needs.

setup() {
	load lib/common
	B=$BATS_TEST_TMPDIR/build
}

@test "make CFLAGS=-O1 CPPFLAGS=... LDFLAGS=... keeps the project's flags and builds tools that run" {
	run -0 make -C "$TOP" -j2 BUILD="$B" SANITIZE=0 CFLAGS=-O1 CPPFLAGS=-DVZ_BUILD_TEST \
		LDFLAGS=-Wl,-z,now all
	# Every compile has the project's flags and the user's, every link the user's LDFLAGS.
	compiles=$(grep -c -- ' -c -o ' <<<"$output")
	[ "$compiles" -gt 0 ] || fail "no compile line: $output"
	[ "$(grep -- ' -c -o ' <<<"$output" | grep -- '-std=c11 ' | grep -- '-Icommon' |
		grep -- ' -O1 ' | grep -c -- '-DVZ_BUILD_TEST')" = "$compiles" ] || fail "$output"
	[ "$(grep -c -- "-o $B/bin/.* -Wl,-z,now\|-Wl,-z,now .*-o $B/bin/" <<<"$output")" = 6 ] ||
		fail "$output"
	for t in qmpctl gafreeze vma-create vma-extract vzdump-prune vzdump-put; do
		run -0 "$B/bin/$t" --help
		[ -n "$output" ] || fail "$t --help printed nothing"
	done
}

@test "a library pkg-config does not know stops the build with pkg-config's message" {
	run -2 make -C "$TOP" BUILD="$B" LIBS_PKG=vz-no-such-library all
	assert_output --partial "Package vz-no-such-library was not found"
	assert_output --partial "pkg-config --cflags vz-no-such-library failed"
	[ ! -e "$B/bin" ] || fail "$(ls "$B/bin")"
}

@test "the tools do not map at start-up the libraries only one mode needs (libnbd, libedit, codecs, libcrypto)" {
	# libnbd (with gnutls, libxml2, icu, libstdc++) for vma-create's NBD sources, libedit (with
	# libtinfo, libbsd) for qmpctl's prompt, libzstd, liblzma, zlib and liblzo2 for compressed
	# archives, libcrypto for the SHA-256 of --stats and -t are loaded with dlopen when used.
	for t in qmpctl gafreeze vma-create vma-extract vzdump-prune vzdump-put; do
		run -0 ldd "$VZ_BIN/$t"
		for lib in libnbd libgnutls libxml2 libstdc++ libedit libtinfo libzstd liblzma libz.so liblzo2 \
			libcrypto; do
			refute_output --partial "$lib"
		done
	done
}
