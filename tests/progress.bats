#!/usr/bin/env bats
# The progress meter of vma-create and vma-extract (common/meter.c): on a terminal one line
# rewritten in place and ended with the 100% state; with --progress elsewhere plain lines; else
# nothing on standard error; never anything on standard output. util-linux's script(1) gives
# the tools a pseudo-terminal.

setup() {
	load lib/common
	load lib/vma
	enter_work_dir
}

teardown() {
	# a --listen server (under script) that a failed test left waiting
	[ -n "${server:-}" ] && kill "$server" 2>/dev/null
	return 0
}

# Runs the shell command CMD with a pseudo-terminal as its standard input, output and error
# (CMD redirects its standard output elsewhere when that is to be kept apart) and writes what
# the terminal showed to FILE, the terminal's "\r\n" for each "\n" turned back into "\n".
# Returns CMD's status.
on_tty() { # FILE CMD
	local rc=0
	SHELL=/bin/bash script -qefc "$2" /dev/null </dev/null >"$1.raw" || rc=$?
	sed 's/\r$//' "$1.raw" >"$1"
	return "$rc"
}

# A size as the meter renders it, and the patterns of its states.
B='[0-9]+\.[0-9] (B|KiB|MiB|GiB)'
running() { # TOTAL: a state on the way, with its rate and, while bytes are left, the ETA
	printf '^ *[0-9]{1,2}%% \(%s of %s\), %s/s(, ETA [0-9hms ]+)? *$' "$B" "$1" "$B"
}
final() { # TOTAL
	printf '^100%% \(%s of %s\) in [0-9hms ]+, %s/s *$' "$1" "$1" "$B"
}

# TTY_FILE holds the meter's in-place line and nothing else: states each after a '\r', the
# last the final one, then the newline. Sets UPDATES to the number of states before the last.
assert_meter_line() { # TTY_FILE TOTAL
	local text states i
	text=$(cat "$1")
	[ "$(wc -l <"$1")" = 1 ] || fail "not one line: $(cat -A "$1")"
	[ "${text:0:1}" = $'\r' ] || fail "does not start with \\r: $(cat -A "$1")"
	IFS=$'\r' read -ra states <<<"${text:1}"
	UPDATES=$((${#states[@]} - 1))
	for ((i = 0; i < UPDATES; i++)); do
		[[ ${states[i]} =~ $(running "$2") ]] || fail "state $i: '${states[i]}'"
	done
	[[ ${states[UPDATES]} =~ $(final "$2") ]] || fail "final state: '${states[UPDATES]}'"
}

# FILE holds plain newline-terminated lines only, the last the final state. Sets LINES.
assert_meter_lines() { # FILE TOTAL
	local line n=0 total
	grep -q $'\r' "$1" && fail "a \\r in: $(cat -A "$1")"
	[ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" = '\n' ] || fail "no final newline"
	LINES=$(wc -l <"$1")
	while IFS= read -r line; do
		n=$((n + 1))
		if [ "$n" -lt "$LINES" ]; then
			[[ $line =~ $(running "$2") ]] || fail "line $n: '$line'"
		else
			[[ $line =~ $(final "$2") ]] || fail "last line: '$line'"
		fi
	done <"$1"
}

# TTY_FILE holds two lines: the meter's, ended where it was (at least MIN states, each still on
# the way), then the error. (The caller checks the second.)
assert_cut_meter_line() { # TTY_FILE TOTAL MIN
	local states s
	[ "$(wc -l <"$1")" = 2 ] || fail "not two lines: $(cat -A "$1")"
	[ "$(head -n 1 "$1" | cut -c 1)" = $'\r' ] || fail "no meter: $(cat -A "$1")"
	IFS=$'\r' read -ra states < <(head -n 1 "$1" | cut -c 2-)
	[ "${#states[@]}" -ge "$3" ] || fail "fewer than $3 states: $(cat -A "$1")"
	for s in "${states[@]}"; do
		[[ $s =~ $(running "$2") ]] || fail "state: '$s' in $(cat -A "$1")"
	done
}

# An archive of two devices, 200000 bytes and 8 MiB, 8.2 MiB together, in many extents.
make_archive() {
	random_file d0.raw 200000
	random_file d1.raw 8M
	echo "name: vm100" >qemu-server.conf
	vma-create -o a.vma -c qemu-server.conf drive-scsi0=d0.raw drive-scsi1=d1.raw
}

# The archive through a pipe that stalls for SECONDS half-way: the meter has something to show.
slow_cat() { # ARCHIVE SECONDS [BYTES]: only BYTES of it, when given
	local size half
	size=$(stat -c %s "$1")
	half=$((size / 2))
	{
		head -c "$half" "$1"
		sleep "$2"
		tail -c +$((half + 1)) "$1" | head -c $((${3:-$size} - half))
	}
}

@test "vma-create on a terminal rewrites one line in place and ends it with the 100% state" {
	random_file d.raw 24M
	# 16 MiB/s: 1.5 s of reading, several updates at 4 a second
	on_tty tty "vma-create --bwlimit 16384 -o a.vma drive-scsi0=d.raw"
	assert_meter_line tty "24.0 MiB"
	[ "$UPDATES" -ge 3 ] || fail "only $UPDATES updates: $(cat -A tty)"
	vma_check --strict a.vma >/dev/null
}

@test "vma-create --progress without a terminal prints plain lines, one every 2 s at most" {
	random_file d.raw 24M
	# 8 MiB/s: 3 s of reading
	vma-create --progress --bwlimit 8192 -o a.vma drive-scsi0=d.raw >out 2>err
	[ ! -s out ]
	assert_meter_lines err "24.0 MiB"
	[ "$LINES" -ge 2 ] && [ "$LINES" -le 3 ] || fail "$LINES lines: $(cat err)"
}

@test "vma-create prints no progress when standard error is not a terminal, or with --no-progress" {
	random_file d.raw 1M
	vma-create -o a.vma drive-scsi0=d.raw 2>err
	[ ! -s err ] || fail "stderr: $(cat -A err)"
	on_tty tty "vma-create --no-progress -o b.vma drive-scsi0=d.raw"
	[ ! -s tty ] || fail "tty: $(cat -A tty)"
	# the last of the two counts
	on_tty tty "vma-create --no-progress --progress -o c.vma drive-scsi0=d.raw"
	assert_meter_line tty "1.0 MiB"
	run -0 vma-create --progress --no-progress -o e.vma drive-scsi0=d.raw
	assert_output ""
}

@test "vma-create -v on a terminal prints vzdump's lines as ever and no meter; -v --progress is a usage error" {
	random_file d.raw 1M
	on_tty tty "vma-create -v -o a.vma drive-scsi0=d.raw"
	grep -q $'\r' tty && fail "a \\r on the terminal: $(cat -A tty)"
	run cat tty
	assert_line --index 0 --regexp '^100% \(1\.0 MiB of 1\.0 MiB\) in 0s, read: [0-9.]+ [KMG]?i?B/s, write: [0-9.]+ [KMG]?i?B/s$'
	assert_line --index 1 "image drive-scsi0: size=1048576 zeros=0 saved=1048576"
	[ "${#lines[@]}" = 2 ] || fail "$output"
	run --separate-stderr -2 vma-create -v --progress -o b.vma drive-scsi0=d.raw
	assert_output ""
	assert_equal "${stderr_lines[0]}" "vma-create: --progress does not go with -v, whose lines show the progress"
	[ ! -e b.vma ]
}

@test "vma-create writes the same archive to standard output with the meter on a terminal" {
	random_file d.raw 3M
	truncate -s 5M d.raw
	on_tty tty "vma-create drive-scsi0=d.raw >on.vma"
	assert_meter_line tty "5.0 MiB"
	vma-create --no-progress -c /dev/null drive-scsi0=d.raw >off.vma 2>err
	[ ! -s err ]
	# Two runs differ only in their uuid, time and checksums: same length, both valid,
	# the same disk in both.
	assert_equal "$(stat -c %s on.vma)" "$(stat -c %s off.vma)"
	vma_check --strict on.vma >/dev/null
	vma_check --strict off.vma >/dev/null
	vma-extract on.vma on
	cmp on/disk-drive-scsi0.raw d.raw
}

@test "vma-create whose source fails mid-way ends the meter's line first: the error has a line of its own" {
	random_file d.raw 24M
	# 16 MiB/s: the file is cut to 4 MiB while the reading is past it
	(sleep 0.8 && truncate -s 4M d.raw) &
	run -1 on_tty tty "vma-create --bwlimit 16384 -o a.vma drive-scsi0=d.raw"
	wait
	assert_cut_meter_line tty "24.0 MiB" 2
	run tail -n 1 tty
	assert_output --regexp '^vma-create: d\.raw: .+$'
	[ ! -e a.vma ]
}

@test "vma-extract -t on a terminal shows the meter over the archive's disk bytes, ending at 100%" {
	make_archive
	on_tty tty "$(declare -f slow_cat); slow_cat a.vma 0.6 | vma-extract -t -"
	assert_meter_line tty "8.2 MiB"
	[ "$UPDATES" -ge 1 ] || fail "no update before the final state: $(cat -A tty)"
}

@test "vma-extract restores the same disks with the meter on a terminal, and counts every device with -d" {
	make_archive
	on_tty tty "vma-extract a.vma out"
	assert_meter_line tty "8.2 MiB"
	cmp out/disk-drive-scsi0.raw d0.raw
	cmp out/disk-drive-scsi1.raw d1.raw
	cmp out/qemu-server.conf qemu-server.conf
	# -d restores one disk, but reads and checks all of the archive
	on_tty tty "vma-extract -d drive-scsi0 a.vma one"
	assert_meter_line tty "8.2 MiB"
	cmp one/disk-drive-scsi0.raw d0.raw
}

@test "vma-extract -t -v writes the same on standard output with the meter on and off" {
	make_archive
	on_tty tty "vma-extract -t -v a.vma >on.txt"
	assert_meter_line tty "8.2 MiB"
	vma-extract -t -v a.vma >off.txt 2>err
	[ ! -s err ]
	[ -s off.txt ]
	cmp on.txt off.txt
	# and the config on standard output, where no meter ever is
	on_tty tty "vma-extract -c qemu-server.conf a.vma >conf.txt"
	[ ! -s tty ] || fail "tty: $(cat -A tty)"
	cmp conf.txt qemu-server.conf
}

@test "vma-extract --progress without a terminal prints plain lines, an early one after 2 s" {
	make_archive
	slow_cat a.vma 2.5 | vma-extract --progress -t - 2>err
	assert_meter_lines err "8.2 MiB"
	assert_equal "$LINES" 2
	vma-extract --progress a.vma out 2>err
	assert_meter_lines err "8.2 MiB"
	assert_equal "$LINES" 1
}

@test "vma-extract prints no progress when standard error is not a terminal, with --no-progress, or with -l" {
	make_archive
	vma-extract -t a.vma 2>err
	vma-extract a.vma out 2>>err
	[ ! -s err ] || fail "stderr: $(cat -A err)"
	on_tty tty "vma-extract --no-progress -t a.vma"
	[ ! -s tty ] || fail "tty: $(cat -A tty)"
	on_tty tty "vma-extract --progress --no-progress a.vma out2"
	[ ! -s tty ] || fail "tty: $(cat -A tty)"
	on_tty tty "vma-extract -l a.vma >list.txt"
	[ ! -s tty ] || fail "tty: $(cat -A tty)"
	run --separate-stderr -2 vma-extract -l --progress a.vma
	assert_output ""
	assert_equal "${stderr_lines[0]}" "vma-extract: --progress does not go with -l or -c"
}

@test "vma-extract that fails mid-way ends the meter's line first: the error has a line of its own" {
	make_archive
	size=$(stat -c %s a.vma)
	cut=$((size * 3 / 4 + 1000))
	head -c "$cut" a.vma | vma-extract -t - 2>expected && fail "a cut archive passed"
	run cat expected
	assert_output --regexp '^vma-extract: -: offset [0-9]+: archive truncated inside extent data$'
	run -1 on_tty tty "$(declare -f slow_cat); slow_cat a.vma 0.6 $cut | vma-extract -t -"
	# the meter's line, ended where it was
	assert_cut_meter_line tty "8.2 MiB" 1
	# then exactly the message, from the start of its line
	assert_equal "$(tail -n 1 tty)" "$(cat expected)"
	# and the restore fails the same way, leaving nothing
	run -1 on_tty tty "$(declare -f slow_cat); slow_cat a.vma 0.6 $cut | vma-extract - out"
	assert_equal "$(tail -n 1 tty)" "$(cat expected)"
	[ "$(head -n 1 tty | cut -c 1)" = $'\r' ]
	[ ! -e out ]
}

@test "vma-create --listen on a terminal shows the meter over what the client writes" {
	random_file d.raw 24M
	sock=$PWD/s.sock
	# 16 MiB/s: 1.5 s of writes, several updates at 4 a second
	script -qefc "vma-create --listen '$sock' --bwlimit 16384 --idle-timeout 30 -o a.vma drive-scsi0=25165824" \
		/dev/null </dev/null >tty.raw 3>&- &
	server=$!
	for ((i = 0; i < 200; i++)); do
		[ -S "$sock" ] && break
		sleep 0.05
	done
	nbdcopy d.raw "nbd+unix:///drive-scsi0?socket=$sock"
	wait "$server"
	server=
	sed 's/\r$//' tty.raw >tty
	assert_meter_line tty "24.0 MiB"
	[ "$UPDATES" -ge 3 ] || fail "only $UPDATES updates: $(cat -A tty)"
	vma-extract a.vma out
	cmp out/disk-drive-scsi0.raw d.raw
}
