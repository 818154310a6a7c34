#!/usr/bin/env bats
# shellcheck disable=SC2154 # bats sets $stderr
# vzdump.sh run by root next to a local attacker (user nobody): links planted in a shared dump
# folder, folders that steer root owned or writable by others, forged state files. Every case
# was reproduced against the driver before this was fixed (issue 13); each must now be refused
# or harmless. The VM is offline (a config and a raw image, no QEMU): the attack surface is
# the same, and the backups are quick.

setup() {
	load lib/common
	load lib/attacker
	export VZDUMP_CONF=$BATS_TEST_TMPDIR/no-vzdump.conf
	attack_dir
	W=$ATTACK_DIR
	mkdir -m 0755 "$W/run" "$W/conf" "$W/img"
	mkdir -m 0700 "$W/tmp" "$W/state"
	# The dump folder is shared: anybody may write in it, nobody may take root's files away.
	mkdir -m 1777 "$W/dump"
	export VZDUMP_STATEDIR=$W/state
	random_file "$W/img/100.raw" $((1024 * 1024))
	printf 'name: web\nvirtio0: %s,size=1M\n' "$W/img/100.raw" >"$W/conf/100.conf"
	# What the attacker wants root to overwrite, append to or create.
	VICTIM=$BATS_TEST_TMPDIR/victim
	printf 'root only\n' >"$VICTIM"
	chmod 600 "$VICTIM"
	VICTIM_SHA=$(sha "$VICTIM")
	mkdir -m 0777 "$W/elsewhere"
}

teardown() {
	[ -z "${sleeper:-}" ] || kill "$sleeper" 2>/dev/null || true
	attack_cleanup
}

backup() {
	"$TOP/vzdump.sh" --dumpdir "$W/dump" --tmpdir "$W/tmp" --confdir "$W/conf" \
		--rundir "$W/run" "$@"
}

# As nobody: LINK -> TARGET under the names a backup of VM 100 starting in the next seconds
# gets (names are predictable to the second), for each SUFFIX (".vma.notes", ".log", ...).
plant_links() { # TARGET SUFFIX...
	local target=$1 i suffix t now=$EPOCHSECONDS
	local -a names=()
	shift
	# A minute of names: a backup on a loaded machine has been seen to start over 10 s later.
	# From one instant: "+i seconds" from each step's own clock skips a second whenever the
	# loop crosses one.
	for i in $(seq 0 59); do
		t=$(date -d "@$((now + i))" +%Y_%m_%d-%H_%M_%S)
		for suffix in "$@"; do
			names+=("$W/dump/vzdump-qemu-100-$t$suffix")
		done
	done
	# One process for all of them: planting must not take the seconds it plants for.
	as_nobody bash -c 'target=$1; shift; for n; do ln -sf "$target" "$n" || exit 1; done' \
		plant "$target" "${names[@]}"
}

the_archive() {
	ls "$W"/dump/vzdump-qemu-100-*.vma
}

@test "a link planted as the .notes or the .sha256 is replaced: the victim keeps its bytes, each is a file of root's" {
	plant_links "$VICTIM" .vma.notes .vma.sha256
	run --separate-stderr -0 backup --notes-template 'nightly {{guestname}}' 100
	archive=$(the_archive)
	assert_equal "$(sha "$VICTIM")" "$VICTIM_SHA"
	[ ! -L "$archive.notes" ] || fail "the notes are still a link"
	assert_equal "$(cat "$archive.notes")" "nightly web"
	assert_equal "$(stat -c '%U %a' "$archive.notes")" "root 644"
	[ ! -L "$archive.sha256" ] || fail "the .sha256 is still a link"
	assert_equal "$(cat "$archive.sha256")" "$(sha "$archive")  ${archive##*/}"
	assert_equal "$(stat -c '%U %a' "$archive.sha256")" "root 644"
}

@test "a folder planted as the .sha256 fails the backup saying so; the complete archive is kept, and -t refuses the folder" {
	local i t now=$EPOCHSECONDS
	# a minute of names, as plant_links
	for i in $(seq 0 59); do
		t=$(date -d "@$((now + i))" +%Y_%m_%d-%H_%M_%S)
		as_nobody mkdir -p "$W/dump/vzdump-qemu-100-$t.vma.sha256/x"
	done
	run --separate-stderr -1 backup 100
	archive=$(the_archive)
	grep -qxF "ERROR: Backup of VM 100 failed - cannot create $archive.sha256 (${archive##*/}.sha256: Is a directory) (the archive $archive is complete and kept)" <<<"$stderr" ||
		fail "$stderr"
	# Written whole: its sum is the writer's, and it holds the disk.
	vma-extract -c qemu-server.conf "$archive" >/dev/null
	run --separate-stderr -1 vma-extract -t "$archive"
	assert_equal "$stderr" "vma-extract: $archive.sha256: Is a directory"
}

@test "a link planted as the .protected creates nothing where it points" {
	plant_links "$W/elsewhere/created-by-root" .vma.protected
	run --separate-stderr -0 backup --protected 1 100
	archive=$(the_archive)
	[ ! -e "$W/elsewhere/created-by-root" ] || fail "root created the link's target"
	assert_equal "$(stat -c '%F %U %s' "$archive.protected")" "regular empty file root 0"
}

@test "a .log planted under the backup's name (a link to /dev/null or a file) takes the name: refused, nothing written" {
	plant_links /dev/null .log
	run --separate-stderr -1 backup 100
	assert_output ""
	grep -qE "^ERROR: Backup of VM 100 failed - backup name 'vzdump-qemu-100-[0-9_-]+' is taken: $W/dump/vzdump-qemu-100-[0-9_-]+\.log exists" <<<"$stderr" ||
		fail "$stderr"
	run -0 find "$W/dump" -type f
	assert_output ""
	plant_links "$VICTIM" .log
	run --separate-stderr -1 backup 100
	assert_equal "$(sha "$VICTIM")" "$VICTIM_SHA"
}

@test "a .log swapped for a link while the backup runs: the job's lines never reach the link's target" {
	# A folder where nobody may remove root's files is no help here: any user may.
	chmod 0777 "$W/dump"
	cat >"$W/hook" <<END
#!/bin/bash
[ "\$1" = backup-start ] || exit 0
/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups /bin/sh -c \
	'rm -f "\$0" && ln -s "$VICTIM" "\$0"' "\$LOGFILE"
END
	chmod 755 "$W/hook"
	run --separate-stderr -0 backup --script "$W/hook" 100
	archive=$(the_archive)
	assert_equal "$(sha "$VICTIM")" "$VICTIM_SHA"
	log=${archive%.vma}.log
	[ ! -L "$log" ] || fail "the log is a link"
	grep -qE '^[0-9-]+ [0-9:]+ INFO: Finished Backup of VM 100 ' "$log" || fail "log: $(cat "$log")"
}

@test "the archive, the log, the notes and the .sha256: 0600 for the archive (a whole disk), 0644 for the rest" {
	run --separate-stderr -0 backup --notes-template n 100
	archive=$(the_archive)
	run -0 stat -c '%a %U %n' "$archive" "${archive%.vma}.log" "$archive.notes" "$archive.sha256"
	assert_output "600 root $archive
644 root ${archive%.vma}.log
644 root $archive.notes
644 root $archive.sha256"
}

@test "a run folder others may write to is refused before any lock is opened: a planted lock link creates nothing" {
	chmod 1777 "$W/run"
	as_nobody ln -s "$W/elsewhere/created-by-root" "$W/run/vzdump.lock"
	as_nobody ln -s "$W/elsewhere/created-by-root-too" "$W/run/100.vzdump.lock"
	run --separate-stderr -2 backup 100
	assert_output ""
	assert_equal "$stderr" "vzdump.sh: the run folder $W/run is not safe: $W/run is writable by group or others (mode 1777) - make it root's alone (chmod go-w $W/run) or choose another folder"
	run --separate-stderr -2 "$TOP/vzdump.sh" --cleanup --rundir "$W/run" --tmpdir "$W/tmp" --dumpdir "$W/dump" 100
	assert_equal "$stderr" "vzdump.sh: the run folder $W/run is not safe: $W/run is writable by group or others (mode 1777) - make it root's alone (chmod go-w $W/run) or choose another folder"
	run -0 ls -A "$W/elsewhere"
	assert_output ""
}

@test "a state folder, run folder or tmpdir owned by another user, or group-writable, is refused, naming the fix" {
	chown nobody "$W/state"
	run --separate-stderr -2 backup 100
	assert_equal "$stderr" "vzdump.sh: the state folder $W/state is not safe: $W/state belongs to user nobody - make it root's (chown root $W/state) or choose another folder"
	chown root "$W/state"
	chmod 0770 "$W/tmp"
	run --separate-stderr -2 backup 100
	assert_equal "$stderr" "vzdump.sh: the tmpdir $W/tmp is not safe: $W/tmp is writable by group or others (mode 770) - make it root's alone (chmod go-w $W/tmp) or choose another folder"
	# A folder above that others may write to (without the sticky bit) is as bad.
	chmod 0700 "$W/tmp"
	mkdir -m 0700 "$W/elsewhere/run"
	run --separate-stderr -2 backup --rundir "$W/elsewhere/run" 100
	assert_equal "$stderr" "vzdump.sh: the run folder $W/elsewhere/run is not safe: $W/elsewhere is writable by group or others (mode 777) - make it root's alone (chmod go-w $W/elsewhere) or choose another folder"
	# A sticky tmpdir (as /var/tmp) is fine: the job works in a new private folder there.
	chmod 1777 "$W/tmp"
	run --separate-stderr -0 backup 100
	run -0 ls -A "$W/tmp"
	assert_output ""
	run -0 ls -A "$W/dump"
	[ "${#lines[@]}" = 3 ] || fail "dump folder: $output"
}

@test "a missing state folder is made 0700, under a parent that is safe" {
	rmdir "$W/state"
	run --separate-stderr -0 backup 100
	assert_equal "$(stat -c '%a %U' "$W/state")" "700 root"
	export VZDUMP_STATEDIR=$W/elsewhere/state
	run --separate-stderr -2 backup 100
	assert_equal "$stderr" "vzdump.sh: the state folder's parent $W/elsewhere is not safe: $W/elsewhere is writable by group or others (mode 777) - make it root's alone (chmod go-w $W/elsewhere) or choose another folder"
	[ ! -e "$W/elsewhere/state" ] || fail "the state folder was made under an unsafe parent"
}

@test "a forged state file is refused and reported, and nothing it names is removed or killed" {
	mkdir -m 0700 "$W/tmp/keep" "$W/elsewhere/vzdumptmp.abcdef"
	printf 'precious\n' >"$W/elsewhere/vzdump-qemu-100-2026_01_01-00_00_00.dat"
	sleep 600 &
	sleeper=$!
	start=$(cut -d' ' -f22 "/proc/$sleeper/stat")
	forge() { # RECORD: a state file of a dead owner with that record
		printf 'owner 999999 1\nqmp %s\ntmp %s\n%s\n' "$W/run/100.qmp" "$W/tmp/vzdumptmp.ABC123" \
			"$1" >"$W/state/100.state"
	}
	# --cleanup of a state file with RECORD, by the job's own folders.
	cleanup_forged() { # RECORD
		forge "$1"
		run --separate-stderr "$TOP/vzdump.sh" --cleanup --rundir "$W/run" --tmpdir "$W/tmp" --dumpdir "$W/dump" 100
	}
	untouched() { # RECORD
		[ -d "$W/tmp/keep" ] && [ -d "$W/elsewhere/vzdumptmp.abcdef" ] || fail "a folder was removed ($1)"
		[ -f "$W/elsewhere/vzdump-qemu-100-2026_01_01-00_00_00.dat" ] || fail "a file was removed ($1)"
		kill -0 "$sleeper" || fail "the process was killed ($1)"
	}
	# What would make root signal a process or send QEMU a command: the whole file is refused.
	local -a records=(
		"proc $sleeper $start vma-create"
		"proc $sleeper $start sleep"
		"qmp $W/elsewhere/100.qmp"
		"undo {\"execute\":\"quit\"}"
		"undo {\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"quit\"}}"
		"rm -rf /"
	)
	local -a whys=(
		"(proc): process $sleeper is not vma-create"
		"(proc): not a pid, start time and vma-create or qemu-nbd"
		"(qmp): not VM 100's QMP socket $W/run/100.qmp"
		"(undo): not an undo command of ours"
		"(undo): not an undo command of ours"
		"(rm): unknown record"
	)
	for r in "${!records[@]}"; do
		cleanup_forged "${records[r]}"
		[ "$status" = 1 ] || fail "${records[r]}: exit $status: $stderr"
		assert_equal "$stderr" "ERROR: the state file $W/state/100.state is refused, nothing was done: line 4 ${whys[r]} - remove the file once the VM is checked"
		untouched "${records[r]}"
		# The next backup of the VM is refused the same way, and touches nothing either.
		run --separate-stderr -1 backup 100
		grep -qE "^ERROR: Backup of VM 100 failed - the state file .* is refused, nothing was done: line 4 " <<<"$stderr" ||
			fail "$stderr"
		untouched "${records[r]}"
		# (Its log: the next backup may come in the same second.)
		rm -f "$W"/dump/*.log
	done
	# The state file is left for the admin.
	[ -f "$W/state/100.state" ]
	# A path outside the job's folders (a state file of a job with other folders, or forged)
	# is left alone and reported; the rest of the recovery goes on.
	records=(
		"tmp $W/tmp/../tmp/keep"
		"tmp $W/elsewhere/vzdumptmp.abcdef"
		"dat $W/elsewhere/vzdump-qemu-100-2026_01_01-00_00_00.dat"
		"dat $W/dump/../elsewhere/vzdump-qemu-100-2026_01_01-00_00_00.dat"
		"dat $W/dump/passwd"
	)
	whys=(
		"(tmp): not a private folder vzdumptmp.* of the tmpdir $W/tmp"
		"(tmp): not a private folder vzdumptmp.* of the tmpdir $W/tmp"
		"(dat): not a .dat of VM 100 in the dump folder $W/dump"
		"(dat): not a .dat of VM 100 in the dump folder $W/dump"
		"(dat): not a .dat of VM 100 in the dump folder $W/dump"
	)
	for r in "${!records[@]}"; do
		cleanup_forged "${records[r]}"
		[ "$status" = 0 ] || fail "${records[r]}: exit $status: $stderr"
		assert_equal "${stderr_lines[0]}" "WARN: the state file $W/state/100.state, line 4 ${whys[r]} - left alone"
		untouched "${records[r]}"
		[ ! -e "$W/state/100.state" ] || fail "the state file is left"
	done
	# What a real backup writes passes (the .dat of an uncompressed archive and of a compressed
	# one): its own leftovers are cleaned up.
	for dat in vzdump-qemu-100-2026_01_01-00_00_00.dat vzdump-qemu-100-2026_01_01-00_00_00.vma.dat; do
		mkdir -m 0700 "$W/tmp/vzdumptmp.ABC123"
		: >"$W/dump/$dat"
		cleanup_forged "dat $W/dump/$dat"
		assert_equal "$status" 0
		[ ! -e "$W/tmp/vzdumptmp.ABC123" ] && [ ! -e "$W/dump/$dat" ] &&
			[ ! -e "$W/state/100.state" ] || fail "a real state file was not recovered: $stderr"
	done
}

@test "a dump folder reached through a link (as /var/lib/vz/dump often is) gets its log, notes, marker and .sha256" {
	ln -s "$W/dump" "$W/dumplink"
	run --separate-stderr -0 "$TOP/vzdump.sh" --dumpdir "$W/dumplink" --tmpdir "$W/tmp" \
		--confdir "$W/conf" --rundir "$W/run" --notes-template n --protected 1 100
	archive=$(the_archive)
	run -0 ls "$W/dump"
	assert_output "$(basename "${archive%.vma}").log
${archive##*/}
${archive##*/}.notes
${archive##*/}.protected
${archive##*/}.sha256"
	grep -q 'INFO: Finished Backup of VM 100' "${archive%.vma}.log"
}

@test "a dump folder root cannot write to fails the backup with the reason, not as a taken name" {
	chattr +i "$W/dump" 2>/dev/null || skip "no chattr +i here"
	run --separate-stderr -1 backup 100
	chattr -i "$W/dump"
	grep -qE "^ERROR: Backup of VM 100 failed - cannot create $W/dump/vzdump-qemu-100-[0-9_-]+\.log \(create a temporary file: Operation not permitted\)$" <<<"$stderr" ||
		fail "$stderr"
}
