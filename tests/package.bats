#!/usr/bin/env bats
# shellcheck disable=SC2154,SC2016 # bats sets $stderr; bash -c programs are single-quoted
# The Debian package (make deb, debian/): built if build/deb has none or an older one than
# the tree, unpacked with
# dpkg -x into a scratch root (never installed over the machine's own /usr), and used from
# there: a backup of a running QEMU by the installed vzdump.sh --all with the installed
# example vzdump.conf, and its restore by the installed vma-extract, bit for bit.

setup_file() {
	load lib/common
	arch=$(dpkg --print-architecture)
	DEB=$(ls "$TOP"/build/deb/vzdump-qemu_*_"$arch".deb 2>/dev/null | tail -n 1) || DEB=
	# Built again when a file of the tree (but the tests, benchmarks and fuzzers) is newer
	# than the package.
	if [ -n "$DEB" ] && [ -n "$(find "$TOP" \( -path "$TOP/build" -o -path "$TOP/.git" -o \
		-path "$TOP/tests" -o -path "$TOP/bench" -o -path "$TOP/fuzz" \) -prune \
		-o -type f -newer "$DEB" -print -quit)" ]; then
		DEB=
	fi
	if [ -z "$DEB" ]; then
		make -C "$TOP" deb >"$BATS_FILE_TMPDIR/make-deb.log" 2>&1 ||
			{ tail -n 30 "$BATS_FILE_TMPDIR/make-deb.log" >&3 && return 1; }
		DEB=$(ls "$TOP"/build/deb/vzdump-qemu_*_"$arch".deb | tail -n 1)
	fi
	export DEB
	export ROOT=$BATS_FILE_TMPDIR/root
	dpkg -x "$DEB" "$ROOT"
}

setup() {
	load lib/common
	load lib/vzdump
	VM=
}

teardown() {
	[ -z "$VM" ] || qemu_stop "$VM"
}

@test "the package holds the tools, vzdump.sh and its library, the man pages, the completions, the units, the run folder and the conffile" {
	completions=$ROOT/usr/share/bash-completion/completions
	cmp "$TOP/dist/completion/vzdump-qemu.bash" "$completions/vzdump-qemu"
	for t in qmpctl gafreeze vma-create vma-extract vzdump-prune vzdump-put vzdump.sh qmrestore.sh; do
		[ -x "$ROOT/usr/bin/$t" ] || fail "no /usr/bin/$t"
		[ -f "$ROOT/usr/share/man/man1/$t.1.gz" ] || fail "no man page for $t"
		# bash-completion loads the file by the command's name.
		assert_equal "$(readlink "$completions/$t")" vzdump-qemu
		run -0 bash -c 'source "$1" && complete -p "$2"' _ "$completions/$t" "$t"
		assert_output "complete -F _vzq_complete $t"
	done
	for f in "$TOP"/lib/vzdump/*; do
		cmp "$f" "$ROOT/usr/share/vzdump/${f##*/}" || fail "/usr/share/vzdump/${f##*/}"
	done
	grep -qx 'INSTALLED_LIBDIR=/usr/share/vzdump' "$ROOT/usr/bin/vzdump.sh"
	# qmrestore.sh, the second driver, shares the library.
	grep -qx 'INSTALLED_LIBDIR=/usr/share/vzdump' "$ROOT/usr/bin/qmrestore.sh"
	run -0 env PATH=/usr/bin:/bin "$ROOT/usr/bin/qmrestore.sh" --help
	assert_line --index 0 --partial 'qmrestore.sh [--storage dir]'
	for u in vzdump.service vzdump.timer vzdump@.service; do
		cmp "$TOP/dist/$u" "$ROOT/lib/systemd/system/$u"
	done
	cmp "$TOP/dist/vzdump.conf" "$ROOT/etc/vzdump.conf"
	# The run folder is made at boot (and at installation), so the nightly job finds it.
	assert_equal "$(grep -v '^#' "$ROOT/usr/lib/tmpfiles.d/vzdump-qemu.conf")" \
		"d /run/qemu-server 0755 root root -"
	run -0 bash -c 'dpkg-deb --ctrl-tarfile "$1" | tar -xOf - ./postinst' _ "$DEB"
	assert_output --regexp "systemd-tmpfiles [^\n]*--create vzdump-qemu\.conf"
	run -0 bash -c 'dpkg-deb --ctrl-tarfile "$1" | tar -xOf - ./conffiles' _ "$DEB"
	assert_output /etc/vzdump.conf
	# The commands the driver runs, and the libraries the tools load with dlopen.
	run -0 dpkg-deb -f "$DEB" Depends
	for p in jq util-linux iproute2 qemu-utils libnbd0 libzstd1 liblzma5 zlib1g libjansson4; do
		[[ ", $output," == *", $p"[\ ,]* ]] || fail "Depends lacks $p: $output"
	done
	run -0 dpkg-deb -f "$DEB" Recommends
	assert_output libedit2
	# Built with the hardening flags: immediate binding, stack protector.
	run -0 readelf -d "$ROOT/usr/bin/vma-create"
	assert_output --partial BIND_NOW
}

@test "from the scratch root: a live backup by vzdump.sh --all with the installed vzdump.conf, restored bit for bit" {
	VM=$BATS_TEST_TMPDIR/vm
	mkdir -p "$VM"
	vz_start_one_disk "$VM" 300 'name: pkg'
	sha "$VM/d.raw" >"$VM/d.sha"
	# The installed example, its folders set for the test, the rest left at the defaults.
	{
		cat "$ROOT/etc/vzdump.conf"
		printf 'dumpdir: %s\ntmpdir: %s\nconfdir: %s\nrundir: %s\ncompress: zstd\n' \
			"$VM/dump" "$VM/tmp" "$VM/conf" "$VM/run"
	} >"$VM/vzdump.conf"
	# Nothing from the checkout on PATH: the installed tools only.
	run --separate-stderr -0 env PATH="$ROOT/usr/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
		VZDUMP_CONF="$VM/vzdump.conf" "$ROOT/usr/bin/vzdump.sh" --all
	grep -qxF 'INFO: Backup job finished successfully' <<<"$stderr" || fail "$stderr"
	run -0 bash -c 'ls "$1"/vzdump-qemu-300-*.vma.zst' _ "$VM/dump"
	archive=$output
	run -0 env PATH="$ROOT/usr/bin:/usr/sbin:/usr/bin:/sbin:/bin" vma-extract -t "$archive"
	run -0 "$ROOT/usr/bin/vma-extract" "$archive" "$BATS_TEST_TMPDIR/x"
	assert_equal "$(sha "$BATS_TEST_TMPDIR/x/disk-drive-virtio0.raw")" "$(cat "$VM/d.sha")"
	run -0 "$ROOT/usr/bin/vma-extract" -c qemu-server.conf "$archive"
	assert_line 'name: pkg'
	# And as a VM again, by the installed qmrestore.sh.
	mkdir "$BATS_TEST_TMPDIR/images"
	run -0 env PATH=/usr/bin:/bin "$ROOT/usr/bin/qmrestore.sh" --storage "$BATS_TEST_TMPDIR/images" \
		--confdir "$BATS_TEST_TMPDIR" --rundir "$BATS_TEST_TMPDIR" "$archive" 900
	assert_equal "$(sha "$BATS_TEST_TMPDIR/images/900/vm-900-disk-0.raw")" "$(cat "$VM/d.sha")"
	grep -qx 'name: pkg' "$BATS_TEST_TMPDIR/900.conf"
}

@test "the installed vzdump.sh finds its library beside it under ../share/vzdump, and its tools there" {
	# (/usr/share/vzdump, written into it, is not on this machine: the package is unpacked
	# elsewhere.)
	[ ! -e /usr/share/vzdump ] || skip "the package is installed on this machine"
	run --separate-stderr -0 env PATH=/usr/bin:/bin "$ROOT/usr/bin/vzdump.sh" --help
	assert_line --index 0 --partial 'vzdump.sh [--dumpdir dir]'
	run --separate-stderr -2 env PATH=/usr/bin:/bin "$ROOT/usr/bin/vzdump.sh" \
		--prune-backups keep-daily=x 100
	[[ $stderr == *"keep-daily"* ]] || fail "$stderr"
}
