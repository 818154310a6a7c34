#!/usr/bin/env bats
# vzdump-put: root writes into a folder other users write to (a sticky, world-writable dump
# folder here) and never follows what they planted there.

setup() {
	load lib/common
	load lib/attacker
	attack_dir
	D=$ATTACK_DIR/dump
	mkdir "$D"
	chmod 1777 "$D"
	# A root-only file that a planted link points at.
	VICTIM=$BATS_TEST_TMPDIR/victim
	printf 'secret\n' >"$VICTIM"
	chmod 600 "$VICTIM"
}

teardown() {
	attack_cleanup
}

listing() { # the folder's names and modes, hidden ones included
	(cd "$1" && stat -c '%A %U %n' -- * .[!.]* 2>/dev/null | sort -k3)
}

@test "standard input lands under the name, with the mode asked for and no temporary left" {
	run --separate-stderr -0 vzdump-put -m 0644 "$D" notes <<<"first line"
	assert_output ""
	assert_equal "$stderr" ""
	assert_equal "$(cat "$D/notes")" "first line"
	assert_equal "$(listing "$D")" "-rw-r--r-- root notes"
	# The default mode is 0600, whatever the umask.
	(umask 0 && printf 'x' | vzdump-put "$D" other)
	assert_equal "$(stat -c %a "$D/other")" 600
}

@test "a link planted under the name is replaced, never followed" {
	as_nobody ln -s "$VICTIM" "$D/vzdump-qemu-100-2026_12_06-02_00_00.vma.notes"
	run --separate-stderr -0 vzdump-put "$D" vzdump-qemu-100-2026_12_06-02_00_00.vma.notes <<<"notes"
	assert_equal "$(cat "$VICTIM")" "secret"
	assert_equal "$(listing "$D")" "-rw------- root vzdump-qemu-100-2026_12_06-02_00_00.vma.notes"
	assert_equal "$(cat "$D/vzdump-qemu-100-2026_12_06-02_00_00.vma.notes")" "notes"
}

@test "-x: a name anybody has already (a link, even a dangling one, or a file) is left alone" {
	as_nobody ln -s "$VICTIM" "$D/a.log"
	as_nobody ln -s "$D/nowhere" "$D/b.log"
	as_nobody touch "$D/c.log"
	before=$(listing "$D")
	for n in a b c; do
		run --separate-stderr -1 vzdump-put -x "$D" "$n.log" <<<"claim"
		assert_output ""
		assert_equal "$stderr" "vzdump-put: $n.log: File exists"
	done
	assert_equal "$(listing "$D")" "$before"
	assert_equal "$(cat "$VICTIM")" "secret"
	run -0 vzdump-put -x "$D" d.log </dev/null
	assert_equal "$(stat -c '%s %U' "$D/d.log")" "0 root"
}

@test "a name that is a folder is not replaced, and nothing is left behind" {
	as_nobody mkdir "$D/x.notes"
	run --separate-stderr -1 vzdump-put "$D" x.notes <<<"notes"
	assert_equal "$stderr" "vzdump-put: x.notes: Is a directory"
	assert_equal "$(listing "$D")" "drwxr-xr-x nobody x.notes"
}

@test "the folder must not be a link, and a name is a name: exit 2, nothing written" {
	as_nobody ln -s "$BATS_TEST_TMPDIR" "$D/link"
	run --separate-stderr -2 vzdump-put "$D/link" f <<<"data"
	assert_equal "$stderr" "vzdump-put: $D/link: is a symbolic link (give the folder it points to)"
	for name in ../f a/b . .. ""; do
		run --separate-stderr -2 vzdump-put "$D" "$name" <<<"data"
		assert_equal "${stderr_lines[0]}" "vzdump-put: $name: not a file name (a name in DIR, without '/')"
	done
	run --separate-stderr -2 vzdump-put -m 1777 "$D" f <<<"data"
	assert_equal "${stderr_lines[0]}" "vzdump-put: -m 1777: not an octal mode of at most 0777"
	run --separate-stderr -2 vzdump-put "$D/none" f <<<"data"
	assert_equal "${stderr_lines[0]}" "vzdump-put: $D/none: No such file or directory"
	assert_equal "$(listing "$D")" "lrwxrwxrwx nobody link"
	assert_equal "$(ls "$BATS_TEST_TMPDIR" | grep -v ^separate-stderr-)" "victim"
}

@test "killed while reading its input, it leaves no temporary file" {
	mkfifo "$BATS_TEST_TMPDIR/fifo"
	vzdump-put "$D" f <"$BATS_TEST_TMPDIR/fifo" &
	pid=$!
	exec 7>"$BATS_TEST_TMPDIR/fifo"
	printf 'part' >&7
	# The temporary exists once the first bytes are in.
	for _ in $(seq 50); do [ -n "$(listing "$D")" ] && break; sleep 0.1; done
	assert_regex "$(listing "$D")" '^-rw------- root \.vzdump-put\.[0-9a-f]{16}$'
	kill -TERM "$pid"
	exec 7>&-
	wait "$pid" || true
	assert_equal "$(listing "$D")" ""
}
