#!/usr/bin/env bats
# shellcheck disable=SC2030,SC2031 # each test's environment is its own
# Bash completion (dist/completion/vzdump-qemu.bash): sourced here, the completion function is
# called as bash calls it (COMP_WORDS split at blanks and at "=", as COMP_WORDBREAKS has it),
# and COMPREPLY, sorted, must be exactly what is expected. qmpctl's commands come from a real
# QEMU.

COMPLETION=dist/completion/vzdump-qemu.bash
COMMANDS=(qmpctl gafreeze vma-create vma-extract vzdump-prune vzdump-put vzdump.sh qmrestore.sh)

setup() {
	load lib/common
	load lib/qemu
	# Nothing of this machine's vzdump configuration.
	export VZDUMP_CONF=$BATS_TEST_TMPDIR/no-vzdump.conf
	unset VZDUMP_CONFDIR
	# shellcheck source=dist/completion/vzdump-qemu.bash
	source "$TOP/$COMPLETION"
	VM= LISTENER=
	cd "$BATS_TEST_TMPDIR"
}

teardown() {
	[ -z "$VM" ] || qemu_stop "$VM"
	[ -z "$LISTENER" ] || { kill "$LISTENER" 2>/dev/null && wait "$LISTENER" 2>/dev/null; } || :
}

# Completes the last of WORDS (empty for a fresh word) as bash would, the cursor at its end;
# prints COMPREPLY sorted, one a line.
comp() { # WORD...
	COMP_WORDS=("$@")
	COMP_CWORD=$(($# - 1))
	COMP_LINE="$*"
	COMP_POINT=${#COMP_LINE}
	_vzq_complete "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	[ ${#COMPREPLY[@]} -eq 0 ] || printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort
}

lines() { printf '%s\n' "$@"; }

@test "the one file registers one function for every command, and each installed name is it" {
	for c in "${COMMANDS[@]}"; do
		run -0 complete -p "$c"
		assert_output "complete -F _vzq_complete $c"
	done
	# (The tools of VZ_BIN, already built: install builds nothing more.)
	make -s -C "$TOP" install BUILD="${VZ_BIN%/bin}" DESTDIR="$BATS_TEST_TMPDIR/root" \
		PREFIX=/usr >/dev/null
	dir=$BATS_TEST_TMPDIR/root/usr/share/bash-completion/completions
	cmp "$TOP/$COMPLETION" "$dir/vzdump-qemu"
	for c in "${COMMANDS[@]}"; do
		assert_equal "$(readlink "$dir/$c")" vzdump-qemu
	done
	assert_equal "$(ls "$dir" | LC_ALL=C sort | tr '\n' ' ')" \
		"gafreeze qmpctl qmrestore.sh vma-create vma-extract vzdump-prune vzdump-put vzdump-qemu vzdump.sh "
}

@test "vma-extract --: exactly its long options; -: its short ones too" {
	assert_equal "$(comp vma-extract --)" \
		"$(lines --base --compress --config --devices --force --format --help --json --list --no-progress --no-verify --progress --serve --threads --to-vma --verbose --verify)"
	assert_equal "$(comp vma-extract -)" \
		"$(lines --base --compress --config --devices --force --format --help --json --list --no-progress --no-verify --progress --serve --threads --to-vma --verbose --verify -T -c -d -h -l -t -v -z)"
	assert_equal "$(comp vma-extract --ver)" "$(lines --verbose --verify)"
}

@test "every C tool's options are those it lists itself, but the two listing options" {
	for t in qmpctl gafreeze vma-create vma-extract vzdump-prune vzdump-put; do
		expected=$("$t" --long-options | grep -vxE -- '--(long|short)-options' | LC_ALL=C sort)
		[ -n "$expected" ] || fail "$t lists no options"
		assert_equal "$(comp "$t" --)" "$expected"
	done
}

@test "vzdump.sh --: exactly VALUE_OPTIONS of lib/vzdump/options.bash, its flags and --help" {
	value_options=$(bash -c 'source "$1" && printf "%s\n" $VALUE_OPTIONS' _ \
		"$TOP/lib/vzdump/options.bash")
	[ -n "$value_options" ]
	assert_equal "$(comp vzdump.sh --)" "$(lines $value_options --stdout --quiet --json \
		--cleanup --all --help | LC_ALL=C sort)"
	# Every option of the man page's SYNOPSIS is among them.
	for o in $(mandoc -Tascii "$TOP/man/vzdump.sh.1" | col -b | sed -n '/^SYNOPSIS/,/^DESC/p' |
		grep -oE -- '--[a-z-]+' | sort -u); do
		grep -qxF -- "$o" <<<"$(comp vzdump.sh --)" || fail "$o is not completed"
	done
	assert_equal "$(comp vzdump.sh -)" "$(comp vzdump.sh --; echo -h)"
}

@test "the fixed values: --compress, --mode, --remove, --protected, --incremental, --ionice; vma-create -z" {
	assert_equal "$(comp vzdump.sh --compress '')" "$(lines 0 1 gzip lzo xz zstd)"
	assert_equal "$(comp vzdump.sh --compress = z)" zstd
	assert_equal "$(comp vzdump.sh --mode '')" "$(lines snapshot stop suspend)"
	assert_equal "$(comp vzdump.sh 100 --mode = s)" "$(lines snapshot stop suspend)"
	assert_equal "$(comp vzdump.sh --mode =)" "$(lines snapshot stop suspend)"
	assert_equal "$(comp vzdump.sh --remove '')" "$(lines 0 1)"
	assert_equal "$(comp vzdump.sh --protected '')" "$(lines 0 1)"
	assert_equal "$(comp vzdump.sh --incremental '')" "$(lines 0 1)"
	assert_equal "$(comp vzdump.sh --ionice '')" "$(lines 0 1 2 3 4 5 6 7 8)"
	assert_equal "$(comp vma-create -z '')" "$(lines gzip lzo none xz zstd)"
	assert_equal "$(comp vma-create --compress = g)" gzip
	assert_equal "$(comp vma-extract --format '')" "$(lines qcow2 raw)"
	assert_equal "$(comp vma-extract --format = q)" qcow2
	# A value with no fixed set is not guessed at.
	assert_equal "$(comp vzdump.sh --bwlimit '')" ""
	assert_equal "$(comp qmpctl -t '')" ""
}

@test "folders where a folder goes, files where a file goes" {
	mkdir -p d/sub1 d/sub2
	touch d/file
	for o in --dumpdir --tmpdir --confdir --rundir --statedir; do
		assert_equal "$(comp vzdump.sh "$o" d/)" "$(lines d/sub1 d/sub2)"
	done
	assert_equal "$(comp vzdump-prune --keep-last 3 d/)" "$(lines d/sub1 d/sub2)"
	assert_equal "$(comp vzdump-put -m 0644 d/)" "$(lines d/sub1 d/sub2)"
	assert_equal "$(comp gafreeze -s x freeze d/)" "$(lines d/sub1 d/sub2)"
	assert_equal "$(comp vzdump.sh --script d/)" "$(lines d/file d/sub1 d/sub2)"
	assert_equal "$(comp vma-create -o d/)" "$(lines d/file d/sub1 d/sub2)"
	assert_equal "$(comp vma-create -c d/f)" d/file
	assert_equal "$(comp vma-create drive-scsi0 = d/f)" d/file
	assert_equal "$(comp vma-extract b.vma drive-scsi0 = d/f)" d/file
	assert_equal "$(comp qmpctl --socket = d/f)" d/file
	assert_equal "$(comp qmpctl -f d/f)" d/file
}

@test "vzdump.sh: the VMIDs with a config in --confdir, VZDUMP_CONFDIR or vzdump.conf's confdir" {
	mkdir -p conf conf2 envconf/400.conf
	touch conf/101.conf conf/205.conf conf/abc.conf conf/42.conf conf/300.txt conf/0100.conf
	touch conf2/777.conf envconf/555.conf
	assert_equal "$(comp vzdump.sh --confdir conf '')" "$(lines 101 205)"
	assert_equal "$(comp vzdump.sh --confdir = conf --mode stop 2)" 205
	# Those already given are not offered again; the last --confdir counts.
	assert_equal "$(comp vzdump.sh --confdir conf 101 '')" 205
	assert_equal "$(comp vzdump.sh --confdir conf2 --confdir conf '')" "$(lines 101 205)"
	# A --confdir after the word being completed does not count; the default then does.
	VZDUMP_CONFDIR=$PWD/envconf
	export VZDUMP_CONFDIR
	assert_equal "$(comp vzdump.sh '')" 555
	# vzdump.conf's confdir wins over the environment, the command line over both.
	printf 'mode: stop\n  confdir:   %s  \n' "$PWD/conf2" >"$VZDUMP_CONF"
	assert_equal "$(comp vzdump.sh '')" 777
	assert_equal "$(comp vzdump.sh --confdir conf '')" "$(lines 101 205)"
	# --exclude: a list, the VMIDs after the last comma.
	assert_equal "$(comp vzdump.sh --confdir conf --all --exclude '')" "$(lines 101 205)"
	assert_equal "$(comp vzdump.sh --confdir conf --all --exclude 101,)" 101,205
	# After "--", VMIDs only.
	assert_equal "$(comp vzdump.sh --confdir conf -- -)" ""
}

@test "vma-extract: archives (Proxmox's names) and folders first, then the target folder" {
	mkdir -p a/sub
	touch a/b.vma a/c.vma.zst a/d.vma.gz a/e.vma.lzo a/f.vma.xz a/g.vma.bz2 a/h.txt a/vma
	assert_equal "$(comp vma-extract a/)" \
		"$(lines a/b.vma a/c.vma.zst a/d.vma.gz a/e.vma.lzo a/f.vma.xz a/sub)"
	assert_equal "$(comp vma-extract -v -d drive-scsi0 a/c)" a/c.vma.zst
	assert_equal "$(comp vma-extract -t a/)" "$(comp vma-extract a/)"
	assert_equal "$(comp vma-extract a/b.vma a/)" a/sub
	# Listing, verifying and printing a config take no folder.
	assert_equal "$(comp vma-extract -l a/b.vma a/)" ""
	assert_equal "$(comp vma-extract -c qemu-server.conf a/b.vma a/)" ""
}

@test "gafreeze: its commands, then -- and a command after hold" {
	assert_equal "$(comp gafreeze -s x '')" "$(lines freeze hold info ping status thaw)"
	assert_equal "$(comp gafreeze -s x --max 5 hold '')" --
	assert_equal "$(comp gafreeze -s x hold -- vma-ex)" vma-extract
}

@test "qmpctl -s SOCKET: the commands the monitor reports, and a command's argument names" {
	VM=$BATS_TEST_TMPDIR/vm
	mkdir -p "$VM"
	qemu_start_bare "$VM"
	sock=$VM/qmp.sock
	run -0 qmp_raw "$VM" '{"execute":"query-commands"}'
	all=$(jq -r '.return[].name' <<<"$output" | LC_ALL=C sort)
	grep -qx query-status <<<"$all"
	grep -qx qmp_capabilities <<<"$all"
	assert_equal "$(comp qmpctl -s "$sock" '')" "$all"
	assert_equal "$(comp qmpctl -s "$sock" query-st)" "$(grep '^query-st' <<<"$all")"
	assert_equal "$(comp qmpctl -s "$sock" query-st | grep -c .)" \
		"$(grep -c '^query-st' <<<"$all")"
	assert_equal "$(comp qmpctl --socket = "$sock" -p query-statu)" query-status
	# Argument names as name=, from the schema; those given are not offered again.
	assert_equal "$(comp qmpctl -s "$sock" block-job-cancel '')" "$(lines device= force=)"
	assert_equal "$(comp qmpctl -s "$sock" block-job-cancel device=j '')" force=
	assert_equal "$(comp qmpctl -s "$sock" query-status '')" ""
	# Not for a guest agent, a batch, HMP or a JSON object; options still.
	assert_equal "$(comp qmpctl -a -s "$sock" '')" ""
	assert_equal "$(comp qmpctl -s "$sock" -H '')" ""
	assert_equal "$(comp qmpctl -s "$sock" --json '{}' '')" ""
	assert_equal "$(comp qmpctl -s "$sock" query-status --pre)" --pretty
}

@test "qmpctl: a dead socket or a monitor that never answers gives nothing, within 2 s" {
	# (qmpctl waits for a socket that refuses until its deadline, as for a QEMU starting up:
	# VZQ_QMP_TIMEOUT, 1 s.)
	quick() { # WORD...: comp, which must print nothing and take less than 2 s
		local start elapsed
		start=$(date +%s%N)
		assert_equal "$(comp "$@")" ""
		elapsed=$((($(date +%s%N) - start) / 1000000))
		[ "$elapsed" -lt 2000 ] || fail "$*: took $elapsed ms"
	}
	# A socket file nobody listens on any more.
	/usr/bin/python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' \
		"$PWD/dead.sock"
	[ -S dead.sock ]
	quick qmpctl -s dead.sock query
	quick qmpctl -s dead.sock block-job-cancel ''
	# One that accepts connections but never greets.
	/usr/bin/python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8); time.sleep(60)' \
		"$PWD/mute.sock" 3>&- &
	LISTENER=$!
	for ((i = 0; i < 100; i++)); do
		[ ! -S mute.sock ] || break
		sleep 0.05
	done
	[ -S mute.sock ]
	quick qmpctl -s mute.sock query
	quick qmpctl -s mute.sock block-job-cancel ''
	# No socket at all: qmpctl is not even run.
	quick qmpctl -s nothing.sock query
	quick qmpctl query
}

@test "qmrestore.sh: its own options, its fixed values and folders, archives first" {
	expected=$("$TOP/qmrestore.sh" --long-options | grep -vxE -- '--(long|short)-options' | LC_ALL=C sort)
	assert_equal "$(comp "$TOP/qmrestore.sh" --)" "$expected"
	grep -qxF -- --unique <<<"$expected" || fail "$expected"
	assert_equal "$(comp qmrestore.sh --format '')" "$(lines qcow2 raw)"
	mkdir -p a/sub
	touch a/b.vma a/c.vma.zst a/h.txt
	assert_equal "$(comp qmrestore.sh --force a/)" "$(lines a/b.vma a/c.vma.zst a/sub)"
	assert_equal "$(comp qmrestore.sh --storage a/)" a/sub
	assert_equal "$(comp qmrestore.sh a/b.vma '')" ""
	# --target key=device (bash splits the word at '='): the device's path after it.
	assert_equal "$(comp qmrestore.sh --target scsi0 = a/s)" a/sub
	assert_equal "$(comp qmrestore.sh --target scsi0 =)" "$(lines a)"
}
