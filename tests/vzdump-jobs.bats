#!/usr/bin/env bats
# shellcheck disable=SC2154,SC2016,SC2030,SC2031 # bats sets $stderr; bash -c programs are single-quoted; each test its own TZ
# vzdump.sh at job level against real QEMU (bare, no guest): --all/--exclude, vzdump.conf
# defaults, retention through vzdump-prune, the --remove 0 limit, notes and protection, and
# backup names that are already taken.
#
# Two QEMUs, shared by all tests and left in prelaunch (no CPU spent): VM 100 has the two
# disks of vz_start_two_disks, VM 102 one small raw disk. VM 101's config names a disk that its
# QEMU (VM 102's) does not have, so its backup fails.

setup() {
	load lib/common
	load lib/vzdump
	# The machine's own /etc/vzdump.conf must not change what the tests see.
	export VZDUMP_CONF=$BATS_TEST_TMPDIR/no-vzdump.conf
	D=$BATS_TEST_TMPDIR/dump
	mkdir -p "$D"
}

setup_file() {
	load lib/common
	load lib/vzdump
	export W=$BATS_FILE_TMPDIR/w VM=$BATS_FILE_TMPDIR/vm SMALL=$BATS_FILE_TMPDIR/small
	mkdir -p "$W/run" "$W/conf" "$W/tmp" "$VM" "$SMALL"
	vz_start_two_disks "$VM"
	random_file "$SMALL/s0.raw" $((4 * 1024 * 1024))
	qemu_start_bare "$SMALL" \
		-blockdev "driver=file,node-name=file0,filename=$SMALL/s0.raw" \
		-blockdev driver=raw,node-name=drive-virtio0,file=file0 \
		-device virtio-blk-pci,drive=drive-virtio0,id=virtio0
	ln -s "$VM/qmp.sock" "$W/run/100.qmp"
	ln -s "$SMALL/qmp.sock" "$W/run/102.qmp"
	ln -s "$SMALL/qmp.sock" "$W/run/101.qmp"
	printf 'name: big\nvirtio0: %s,size=64M\nscsi0: %s,size=104861184\n' "$VM/d0.raw" \
		"$VM/d1.qcow2" >"$W/conf/100.conf"
	printf 'name: broken\nscsi0: /nowhere/101.raw,size=4M\n' >"$W/conf/101.conf"
	# A name with braces: the notes must not expand a value again.
	printf 'name: web{{vmid}}\nvirtio0: %s,size=4M\n' "$SMALL/s0.raw" >"$W/conf/102.conf"
	# Not VMIDs: --all leaves them alone.
	printf 'name: x\n' >"$W/conf/99.conf"
	printf 'name: x\n' >"$W/conf/template.conf"
	vz_disk_sha "$VM/d0.raw" >"$VM/d0.sha"
	vz_disk_sha "$VM/d1.qcow2" >"$VM/d1.sha"
	sha "$SMALL/s0.raw" >"$SMALL/s0.sha"
}

teardown_file() {
	load lib/common
	load lib/vzdump
	qemu_stop "$VM"
	qemu_stop "$SMALL"
}

# vzdump.sh on the shared VMs, writing to $D.
job() {
	"$TOP/vzdump.sh" --dumpdir "$D" --tmpdir "$W/tmp" --confdir "$W/conf" --rundir "$W/run" "$@"
}

# The one archive of VM VMID in $D.
archive_of() { # VMID
	local -a found
	mapfile -t found < <(find "$D" -maxdepth 1 \( -name "vzdump-qemu-$1-*.vma" -o \
		-name "vzdump-qemu-$1-*.vma.zst" \))
	[ ${#found[@]} = 1 ] || fail "not one archive of $1: ${found[*]}"
	printf '%s\n' "${found[0]}"
}

# The archive extracted; the sha256 of its disks, in the order given.
restored_shas() { # ARCHIVE DEVICE...
	local a=$1 x
	x=$BATS_TEST_TMPDIR/x.$RANDOM
	shift
	vma-extract "$a" "$x" >/dev/null
	for dev in "$@"; do sha "$x/disk-$dev.raw"; done
	rm -rf "$x"
}

# The names in a folder, sorted bytewise.
files_in() { (cd "$1" && LC_ALL=C ls -A); }

# A sendmail on PATH that keeps its arguments and the mail it is given in $BATS_TEST_TMPDIR
# (sendmail.args, sendmail.mail), exiting with STATUS after printing MESSAGE on stderr.
fake_sendmail() { # [STATUS [MESSAGE]]
	mkdir -p "$BATS_TEST_TMPDIR/mta"
	printf '#!/bin/sh
printf "%%s\n" "$@" >%s
cat >%s
%s
exit %s
' \
		"$BATS_TEST_TMPDIR/sendmail.args" "$BATS_TEST_TMPDIR/sendmail.mail" \
		"${2:+echo \"$2\" >&2}" "${1:-0}" >"$BATS_TEST_TMPDIR/mta/sendmail"
	chmod +x "$BATS_TEST_TMPDIR/mta/sendmail"
	PATH=$BATS_TEST_TMPDIR/mta:$PATH
}

# A hook script that records the phases it runs in.
phase_hook() { # FILE
	printf '#!/bin/sh\necho "$1" >>%s\n' "$1.log" >"$1"
	chmod +x "$1"
}

@test "--all backs up every VMID config in order; VM 101 failing does not stop the others, the status and --json report each" {
	before=$(vz_state "$VM")
	run --separate-stderr -1 job --all --json
	after=$(vz_state "$VM")
	assert_equal "$after" "$before"
	a100=$(archive_of 100)
	a102=$(archive_of 102)
	run jq -c '.vms[] |= (.start |= type | .end |= type | .snapshot_ms |= type
		| .error |= (if . then sub(": give .*"; "") else . end))' <<<"$output"
	assert_output "{\"status\":\"error\",\"error\":null,\"vms\":[{\"vmid\":100,\"name\":\"big\",\"status\":\"ok\",\"archive\":\"$a100\",\"size\":$(stat -c %s "$a100"),\"start\":\"number\",\"end\":\"number\",\"frozen_ms\":null,\"freeze_ms\":null,\"qmp_ms\":null,\"thaw_ms\":null,\"snapshot_ms\":\"number\",\"error\":null},{\"vmid\":101,\"name\":\"broken\",\"status\":\"error\",\"archive\":null,\"size\":null,\"start\":\"number\",\"end\":\"number\",\"frozen_ms\":null,\"freeze_ms\":null,\"qmp_ms\":null,\"thaw_ms\":null,\"snapshot_ms\":\"null\",\"error\":\"disk 'scsi0' (/nowhere/101.raw) not found in the running QEMU\"},{\"vmid\":102,\"name\":\"web{{vmid}}\",\"status\":\"ok\",\"archive\":\"$a102\",\"size\":$(stat -c %s "$a102"),\"start\":\"number\",\"end\":\"number\",\"frozen_ms\":null,\"freeze_ms\":null,\"qmp_ms\":null,\"thaw_ms\":null,\"snapshot_ms\":\"number\",\"error\":null}]}"
	run grep -E '^(INFO|ERROR): (Starting Backup|Finished Backup|Backup of VM|Backup job)' <<<"$stderr"
	assert_output --regexp '^INFO: Starting Backup of VM 100 \(qemu\)
INFO: Finished Backup of VM 100 \([0-9:]{8}\)
INFO: Starting Backup of VM 101 \(qemu\)
ERROR: Backup of VM 101 failed - disk .scsi0. \(/nowhere/101.raw\) not found in the running QEMU: .*
INFO: Starting Backup of VM 102 \(qemu\)
INFO: Finished Backup of VM 102 \([0-9:]{8}\)
INFO: Backup job finished with errors$'
	run restored_shas "$a100" drive-virtio0 drive-scsi0
	assert_output "$(cat "$VM/d0.sha" "$VM/d1.sha")"
	run restored_shas "$a102" drive-virtio0
	assert_output "$(cat "$SMALL/s0.sha")"
	run -0 vma-extract -c qemu-server.conf "$a102"
	assert_line --index 0 'name: web{{vmid}}'
	# A failed VM leaves its log, and nothing else.
	run bash -c 'cd "$1" && ls | sed -E "s/[0-9]{4}(_[0-9]{2}){2}-[0-9]{2}(_[0-9]{2}){2}/T/" | LC_ALL=C sort' _ "$D"
	assert_output "vzdump-qemu-100-T.log
vzdump-qemu-100-T.vma
vzdump-qemu-100-T.vma.sha256
vzdump-qemu-101-T.log
vzdump-qemu-102-T.log
vzdump-qemu-102-T.vma
vzdump-qemu-102-T.vma.sha256"
}

@test "--exclude implies --all and leaves its VMs out; --all or --exclude with VMIDs is a usage error" {
	run --separate-stderr -0 job --exclude 100,101 --json
	a102=$(archive_of 102)
	run jq -c '[.status, (.vms[] | [.vmid, .status])]' <<<"$output"
	assert_output '["ok",[102,"ok"]]'
	run files_in "$D"
	assert_output "$(basename "${a102%.vma}").log
$(basename "$a102")
$(basename "$a102").sha256"
	run --separate-stderr -2 job --exclude 101 100
	assert_output ""
	[[ $stderr == "vzdump.sh: --exclude conflicts with a VMID list"$'\n'"usage: vzdump.sh "* ]] || fail "$stderr"
	run --separate-stderr -2 job --all 102
	[[ $stderr == "vzdump.sh: --all conflicts with a VMID list"$'\n'"usage: "* ]] || fail "$stderr"
	run --separate-stderr -2 job --exclude 100,12
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --exclude: invalid VMID: 12 (100 to 999999999)"
	run --separate-stderr -2 job --all --stdout
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --stdout backs up exactly one VM"
}

@test "retention after the backup: the new archive counts, older ones go with their .log, .notes and .sha256, protected and renamed ones stay" {
	export TZ=UTC
	touch "$D"/vzdump-qemu-102-2024_01_0{1,2,3,4}-02_00_00.vma
	touch "$D/vzdump-qemu-102-2024_01_03-02_00_00.log" "$D/vzdump-qemu-102-2024_01_03-02_00_00.vma.notes"
	touch "$D/vzdump-qemu-102-2024_01_03-02_00_00.vma.sha256" "$D/vzdump-qemu-102-2024_01_01-02_00_00.vma.sha256"
	touch "$D/vzdump-qemu-102-2024_01_01-02_00_00.vma.protected"
	touch "$D/vzdump-qemu-102-renamed.vma" "$D/vzdump-qemu-100-2024_01_01-02_00_00.vma"
	run --separate-stderr -0 job --prune-backups keep-last=1,keep-daily=1,keep-weekly=0 102
	new=$(cd "$D" && ls vzdump-qemu-102-2026*.vma)
	run grep -A 5 '^INFO: archive file size' <<<"$stderr"
	assert_output --regexp "^INFO: archive file size: [0-9]+MB
INFO: prune older backups with retention: keep-daily=1, keep-last=1, keep-weekly=0
INFO: delete old backup '$D/vzdump-qemu-102-2024_01_02-02_00_00.vma'
INFO: delete old backup '$D/vzdump-qemu-102-2024_01_03-02_00_00.vma'
INFO: pruned 2 backup\(s\) not covered by keep-retention policy
INFO: Finished Backup of VM 102"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_01-02_00_00.vma
vzdump-qemu-102-2024_01_01-02_00_00.vma
vzdump-qemu-102-2024_01_01-02_00_00.vma.protected
vzdump-qemu-102-2024_01_01-02_00_00.vma.sha256
vzdump-qemu-102-2024_01_04-02_00_00.vma
${new%.vma}.log
$new
$new.sha256
vzdump-qemu-102-renamed.vma"
	# The .log file has the same lines.
	grep -qxE "[0-9-]+ [0-9:]+ INFO: pruned 2 backup\(s\) not covered by keep-retention policy" "$D/${new%.vma}.log"
	# keep-all, or no positive count, prunes nothing and says nothing about it.
	run --separate-stderr -0 job --prune-backups keep-last=0 102
	[[ $stderr != *"INFO: prune"* ]] || fail "$stderr"
	[ "$(find "$D" -name 'vzdump-qemu-102-2*.vma' | wc -l)" = 4 ] || fail "$(ls "$D")"
}

@test "retention after the backup: incremental archives (.inc.vma) are counted and pruned, and the chain of one that stays is kept" {
	export TZ=UTC
	touch "$D"/vzdump-qemu-102-2024_01_0{1,3}-02_00_00.vma "$D/vzdump-qemu-102-2024_01_02-02_00_00.inc.vma" \
		"$D/vzdump-qemu-102-2024_01_04-02_00_00.inc.vma.zst"
	touch "$D/vzdump-qemu-102-2024_01_02-02_00_00.log" "$D/vzdump-qemu-102-2024_01_02-02_00_00.inc.vma.sha256"
	run --separate-stderr -0 job --prune-backups keep-last=2 102
	new=$(cd "$D" && ls vzdump-qemu-102-2026*.vma)
	run grep -A 5 '^INFO: archive file size' <<<"$stderr"
	assert_output --regexp "^INFO: archive file size: [0-9]+MB
INFO: prune older backups with retention: keep-last=2
INFO: delete old backup '$D/vzdump-qemu-102-2024_01_01-02_00_00.vma'
INFO: delete old backup '$D/vzdump-qemu-102-2024_01_02-02_00_00.inc.vma'
INFO: keep backup '$D/vzdump-qemu-102-2024_01_03-02_00_00.vma': needed by vzdump-qemu-102-2024_01_04-02_00_00.inc.vma.zst
INFO: pruned 2 backup\(s\) not covered by keep-retention policy$"
	run files_in "$D"
	assert_output "vzdump-qemu-102-2024_01_03-02_00_00.vma
vzdump-qemu-102-2024_01_04-02_00_00.inc.vma.zst
${new%.vma}.log
$new
$new.sha256"
}

@test "--prune-backups is checked as Proxmox does: keep-all with a count, unknown keys, bad counts" {
	for spec in keep-all=1,keep-last=2 keep-lasts=2 keep-last=-1 keep-last=2,keep-last=3 keep-all=maybe ''; do
		run --separate-stderr -2 job --prune-backups "$spec" 102
		assert_output ""
		[[ $stderr == *"usage: vzdump.sh "* ]] || fail "$spec: $stderr"
	done
	run --separate-stderr -2 job --prune-backups keep-all=1,keep-last=2 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --prune-backups: keep-all cannot be set together with other options"
	run --separate-stderr -2 job --prune-backups keep-lasts=2 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --prune-backups: unknown key 'keep-lasts'"
	run files_in "$D"
	assert_output ""
}

@test "--remove 0 refuses a backup at the policy's limit before touching the VM, protected ones not counted; below it, nothing is pruned" {
	touch "$D"/vzdump-qemu-102-2024_01_0{1,2,3}-02_00_00.vma "$D/vzdump-qemu-102-renamed.vma"
	touch "$D/vzdump-qemu-102-2024_01_01-02_00_00.vma.protected"
	before_files=$(files_in "$D")
	before=$(vz_state "$SMALL")
	phase_hook "$BATS_TEST_TMPDIR/hook"
	run --separate-stderr -1 job --script "$BATS_TEST_TMPDIR/hook" --prune-backups keep-last=1,keep-daily=1 --remove 0 102
	run grep -v '^INFO: Failed at ' <<<"$stderr"
	assert_output "INFO: starting new backup job: vzdump.sh --dumpdir $D --tmpdir $W/tmp --confdir $W/conf --rundir $W/run --script $BATS_TEST_TMPDIR/hook --prune-backups keep-last=1,keep-daily=1 --remove 0 102
ERROR: Backup of VM 102 failed - There is a max backup limit of 2 enforced by the target storage or the vzdump parameters. Either increase the limit or delete old backups.
INFO: Backup job finished with errors"
	assert_equal "$(vz_state "$SMALL")" "$before"
	assert_equal "$(files_in "$D")" "$before_files"
	run cat "$BATS_TEST_TMPDIR/hook.log"
	assert_output "job-start
backup-abort
log-end
job-end"
	# One more allowed: the backup is made and nothing is pruned.
	run --separate-stderr -0 job --prune-backups keep-last=2,keep-daily=1 --remove 0 102
	[[ $stderr != *"INFO: prune"* ]] || fail "$stderr"
	[ "$(find "$D" -name 'vzdump-qemu-102-2*.vma' | wc -l)" = 4 ] || fail "$(ls "$D")"
}

@test "notes from the template and the protected marker beside the archive; the name in local time (TZ)" {
	export TZ=XYZ-5:45
	t0=$(date +%s)
	run --separate-stderr -0 job --notes-template '{{guestname}} ({{vmid}})\n{{node}}/{{cluster}} \\n {{x y}}' --protected 1 102
	t1=$(date +%s)
	a=$(archive_of 102)
	stamp=${a##*/vzdump-qemu-102-}
	stamp=${stamp%.vma}
	[[ ! $stamp < $(date -d "@$t0" +%Y_%m_%d-%H_%M_%S) ]] || fail "$stamp is before the start (local $TZ)"
	[[ ! $stamp > $(date -d "@$t1" +%Y_%m_%d-%H_%M_%S) ]] || fail "$stamp is after the end (local $TZ)"
	printf '%s (102)\n%s/standalone node \\n {{x y}}' 'web{{vmid}}' "$(uname -n | cut -d. -f1)" >"$BATS_TEST_TMPDIR/want"
	cmp "$a.notes" "$BATS_TEST_TMPDIR/want"
	[ -f "$a.protected" ] || fail "no $a.protected"
	[ ! -s "$a.protected" ] || fail "$a.protected is not empty"
	run grep -A 3 '^INFO: archive file size' <<<"$stderr"
	assert_line --index 1 "INFO: adding notes to backup"
	assert_line --index 2 "INFO: marking backup as protected"
	assert_line --index 3 --partial "INFO: Finished Backup of VM 102"
}

@test "a notes template with another variable, escape or a line feed is a usage error" {
	for t in '{{hostname}}' 'a\tb' $'two\nlines' "$(printf '%1025s' x)"; do
		run --separate-stderr -2 job --notes-template "$t" 102
		assert_output ""
		[[ $stderr == "vzdump.sh: --notes-template"*"usage: vzdump.sh "* ]] || fail "'$t': $stderr"
	done
	run --separate-stderr -2 job --notes-template 'x {{hostname}}' 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --notes-template: unknown variable '{{hostname}}' at char 2"
	run --separate-stderr -2 job --notes-template 'a\tb' 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --notes-template: unknown escape sequence '\\t' at char 1"
	run files_in "$D"
	assert_output ""
}

@test "vzdump.conf gives defaults in key: value syntax, the command line wins, unknown keys are warnings, bad values errors" {
	cat >"$BATS_TEST_TMPDIR/vzdump.conf" <<END
# vzdump defaults
compress: zstd
  notes-template: {{vmid}}
exclude: 100,101
protected: 1
storage: local
tmpdir: /nowhere
END
	export VZDUMP_CONF=$BATS_TEST_TMPDIR/vzdump.conf
	# --all with the file's exclude; compression and notes from the file, tmpdir from the
	# command line.
	run --separate-stderr -0 job --all
	a=$(archive_of 102)
	[[ $a == *.vma.zst ]] || fail "not zstd: $a"
	# seekable: its last frame is zstd's seek table
	python3 "$TOP/tests/lib/seektable.py" "$a" >/dev/null
	assert_equal "$(cat "$a.notes")" 102
	[ -f "$a.protected" ]
	[[ $stderr == *"WARN: $VZDUMP_CONF line 6: ignoring 'storage: local': there is no Proxmox storage layer here: set dumpdir to the folder the backups go to"* ]] || fail "$stderr"
	run restored_shas "$a" drive-virtio0
	assert_output "$(cat "$SMALL/s0.sha")"
	rm -f "$D"/*
	run --separate-stderr -0 job --compress 0 --notes-template 'n{{vmid}}' --protected 0 102
	a=$(archive_of 102)
	[[ $a == *-[0-9_]*.vma ]] || fail "not uncompressed: $a"
	assert_equal "$(cat "$a.notes")" n102
	[ ! -e "$a.protected" ]
	# A bad value: where it is, exit 2, nothing done.
	rm -f "$D"/*
	printf '# x\ncompress: bz2\n' >"$VZDUMP_CONF"
	run --separate-stderr -2 job 102
	assert_equal "$stderr" "vzdump.sh: $VZDUMP_CONF line 2: --compress must be 0, 1, gzip, lzo, zstd or xz, not 'bz2'"
	printf 'prune-backups: keep-all=1,keep-daily=3\n' >"$VZDUMP_CONF"
	run --separate-stderr -2 job 102
	assert_equal "$stderr" "vzdump.sh: $VZDUMP_CONF line 1: --prune-backups: keep-all cannot be set together with other options"
	run files_in "$D"
	assert_output ""
}

@test "a backup name already taken in the same second (its .log, archive or .dat) fails that VM clearly and touches nothing" {
	now=$(date +%s)
	for ext in log vma.zst dat; do
		rm -f "$D"/*
		# Every name the next minute could give.
		for ((t = now - 1; t < now + 60; t++)); do
			echo taken >"$D/vzdump-qemu-102-$(date -d "@$t" +%Y_%m_%d-%H_%M_%S).$ext"
		done
		before=$(files_in "$D")
		run --separate-stderr -1 job --json 102
		json=$output
		[[ $stderr == *"ERROR: Backup of VM 102 failed - backup name 'vzdump-qemu-102-"*"' is taken: $D/vzdump-qemu-102-"*".$ext exists (another backup of VM 102 in the same second?)"* ]] ||
			fail "$ext: $stderr"
		assert_equal "$(files_in "$D")" "$before"
		run bash -c 'cat "$1"/* | grep -c -vx taken' _ "$D"
		assert_output 0
	done
	run jq -c '.vms[] | [.status, .archive]' <<<"$json"
	assert_output '["error",null]'
}

@test "--mailto: one mail per job through sendmail -t -i, vzdump's subject, the table of VMs, the failed VM's log" {
	fake_sendmail
	run --separate-stderr -1 job --mailto 'root; admin@example.org' --all
	a100=$(archive_of 100)
	a102=$(archive_of 102)
	grep -qxF 'INFO: mail sent to root, admin@example.org' <<<"$stderr" || fail "$stderr"
	assert_equal "$(cat "$BATS_TEST_TMPDIR/sendmail.args")" $'-t\n-i'
	mail=$(cat "$BATS_TEST_TMPDIR/sendmail.mail")
	host=$(timeout 2 hostname -f 2>/dev/null) || host=
	[[ $host == *.* ]] || host=$(uname -n)
	# The headers, the error line and the table, exactly (times and sizes by pattern).
	run sed -n '1,/^Total size/p' <<<"$mail"
	assert_output --regexp "^To: root, admin@example.org
Subject: vzdump backup status \(${host//./\\.}\): backup failed
Auto-Submitted: auto-generated
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

Backup job finished with errors

Details
=======
VMID  Name         Status  Time      Size +Filename
100   big          ok      00:00:[0-9]{2}  [0-9.]+[KMG]B +${a100//./\\.}
101   broken       err     00:00:[0-9]{2}  - +-
102   web\{\{vmid\}\}  ok      00:00:[0-9]{2}  [0-9.]+[KMG]B +${a102//./\\.}

Total running time: 00:00:[0-9]{2}
Total size: [0-9.]+[KMG]B\$"
	# The log of VM 101 only, each line with its VMID in front, ending with the failure.
	run sed -n '/^Logs of VM/,$p' <<<"$mail"
	assert_line --index 0 'Logs of VM 101'
	assert_line --index 1 '=============='
	assert_line --index 2 --regexp '^101: [0-9-]{10} [0-9:]{8} INFO: Starting Backup of VM 101 \(qemu\)$'
	assert_line --regexp "^101: [0-9-]{10} [0-9:]{8} ERROR: Backup of VM 101 failed - disk 'scsi0' \(/nowhere/101.raw\) not found in the running QEMU"
	run grep -c '^Logs of VM' <<<"$mail"
	assert_output 1
	run grep -vc '^101: ' < <(sed -n '/^Logs of VM/,$p' <<<"$mail" | sed 1,2d)
	assert_output 0
}

@test "--mailnotification failure mails only a failed job; always mails a successful one without logs" {
	fake_sendmail
	run --separate-stderr -0 job --mailto root --mailnotification failure 102
	[ ! -e "$BATS_TEST_TMPDIR/sendmail.mail" ] || fail "mailed: $(cat "$BATS_TEST_TMPDIR/sendmail.mail")"
	run grep -cE '(mail sent|no mail|sending the mail)' <<<"$stderr"
	assert_output 0
	run --separate-stderr -1 job --mailto root --mailnotification failure 101
	grep -qxF 'Subject: vzdump backup status ('*'): backup failed' "$BATS_TEST_TMPDIR/sendmail.mail" ||
		grep -q '^Subject: vzdump backup status (.*): backup failed$' "$BATS_TEST_TMPDIR/sendmail.mail" ||
		fail "$(cat "$BATS_TEST_TMPDIR/sendmail.mail")"
	rm "$BATS_TEST_TMPDIR/sendmail.mail"
	# always (the default), from vzdump.conf
	printf 'mailto: root\n' >"$VZDUMP_CONF"
	run --separate-stderr -0 job 102
	mail=$(cat "$BATS_TEST_TMPDIR/sendmail.mail")
	grep -q '^Subject: vzdump backup status (.*): backup successful$' <<<"$mail" || fail "$mail"
	run grep -cE '^(Logs|Backup job finished)' <<<"$mail"
	assert_output 0
	grep -qE "^102 +web\{\{vmid\}\} +ok +" <<<"$mail" || fail "$mail"
}

@test "mail that cannot be sent (no sendmail, sendmail failing) is a warning; the backup's result stands" {
	fake_sendmail 75 'sendmail: cannot connect to the mail server'
	run --separate-stderr -0 job --mailto root 102
	grep -qxF 'WARN: sending the mail to root failed: sendmail: cannot connect to the mail server' <<<"$stderr" ||
		fail "$stderr"
	archive_of 102 >/dev/null
	rm -f "$D"/*
	# No sendmail at all: a PATH of the tools only (and none where cron's PATH misses it).
	for f in /usr/sbin/sendmail /usr/lib/sendmail; do
		[ ! -e "$f" ] || skip "this machine has $f"
	done
	mkdir "$BATS_TEST_TMPDIR/bin"
	for t in bash jq qmpctl gafreeze vma-create vma-extract vzdump-prune vzdump-put flock stat \
		date mktemp realpath ionice rm mv cat sed awk grep sort tr timeout hostname uname cut \
		head tail cp dirname basename env sleep kill mkdir ls ss qemu-img qemu-nbd wc chmod \
		rmdir touch printf id stty find ln sync; do
		p=$(command -v "$t") && ln -s "$p" "$BATS_TEST_TMPDIR/bin/$t"
	done
	run --separate-stderr -0 env PATH="$BATS_TEST_TMPDIR/bin" "$TOP/vzdump.sh" --dumpdir "$D" \
		--tmpdir "$W/tmp" --confdir "$W/conf" --rundir "$W/run" --mailto root 102
	grep -qxF 'WARN: no mail sent to root: there is no sendmail (install an MTA, such as exim4 or msmtp-mta)' <<<"$stderr" ||
		fail "$stderr"
	run restored_shas "$(archive_of 102)" drive-virtio0
	assert_output "$(cat "$SMALL/s0.sha")"
}

@test "--mailto and --mailnotification refuse what could break a mail header" {
	run --separate-stderr -2 job --mailto $'root\nBcc: x@example.org' 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --mailto: not a mail address or user name: 'Bcc:'"
	run --separate-stderr -2 job --mailto 'a@b,c d@e>' 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --mailto: not a mail address or user name: 'd@e>'"
	run --separate-stderr -2 job --mailto root --mailnotification sometimes 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --mailnotification must be always or failure, not 'sometimes'"
	run files_in "$D"
	assert_output ""
}

@test "a vzdump.conf from a Proxmox node with every key set: each honoured, or ignored with its own reason" {
	fake_sendmail
	phase_hook "$BATS_TEST_TMPDIR/hook"
	node=$(uname -n | cut -d. -f1)
	old1=vzdump-qemu-102-2020_01_01-00_00_00.vma.zst old2=vzdump-qemu-102-2020_01_02-00_00_00.vma.zst
	touch "$D/$old1" "$D/$old2"
	cat >"$VZDUMP_CONF" <<END
# vzdump default settings
tmpdir: $W/tmp
dumpdir: $D
storage: local
mode: snapshot
compress: zstd
bwlimit: 0
ionice: 7
lockwait: 180
stopwait: 10
maxfiles: 1
script: $BATS_TEST_TMPDIR/hook
exclude-path: /tmp/?*
mailto: root
pigz: 0
zstd: 1
performance: max-workers=8,pbs-entries-max=1048576
fleecing: enabled=1,storage=local-lvm
prune-backups: keep-last=2
remove: 1
notes-template: {{guestname}}
protected: 0
mailnotification: always
notification-mode: auto
pool: prod
stdexcludes: 1
pbs-change-detection-mode: metadata
quiet: 0
node: $node
job-id: backup-1a2b3c4d-e5f6
size: 1024
notification-policy: always
notification-target: mail-to-root
all: 0
stdout: 0
stop: 0
exclude: 100,101
confdir: $W/conf
rundir: $W/run
END
	run --separate-stderr -0 "$TOP/vzdump.sh" --all
	c=$VZDUMP_CONF
	run grep '^WARN: ' <<<"$stderr"
	assert_output "WARN: $c line 4: ignoring 'storage: local': there is no Proxmox storage layer here: set dumpdir to the folder the backups go to
WARN: $c line 13: ignoring 'exclude-path: /tmp/?*': for container backups only; vzdump.sh backs up QEMU VMs
WARN: $c line 18: fleecing storage 'local-lvm' is a Proxmox storage ID: the scratch images go under the tmpdir (give storage=/folder to choose)
WARN: $c line 25: ignoring 'pool: prod': there are no resource pools here: name the VMIDs, or use --all with --exclude
WARN: $c line 26: ignoring 'stdexcludes: 1': for container backups only; vzdump.sh backs up QEMU VMs
WARN: $c line 27: ignoring 'pbs-change-detection-mode: metadata': for container backups only; vzdump.sh backs up QEMU VMs
WARN: $c line 29: ignoring 'node: $node': a job's node is given on the command line (--node), as in Proxmox
WARN: $c line 30: ignoring 'job-id: backup-1a2b3c4d-e5f6': set by Proxmox's job scheduler; here vzdump.timer runs the job (man vzdump.sh, FILES)
WARN: $c line 31: ignoring 'size: 1024': removed in Proxmox VE 7 (the LVM snapshot size of container backups)
WARN: $c line 32: ignoring 'notification-policy: always': removed in Proxmox VE 9: use mailto and mailnotification
WARN: $c line 33: ignoring 'notification-target: mail-to-root': removed in Proxmox VE 9: use mailto and mailnotification
WARN: $c: ignoring 'maxfiles: 1': prune-backups is set"
	# prune-backups wins over maxfiles: the new backup and the newest old one are kept.
	grep -qxF 'INFO: prune older backups with retention: keep-last=2' <<<"$stderr" || fail "$stderr"
	a=$(find "$D" -name 'vzdump-qemu-102-*.vma.zst' ! -name "$old2")
	[ -f "$a" ] || fail "no new zstd archive: $a"
	run files_in "$D"
	assert_output "$old2
$(basename "$a" .vma.zst).log
${a##*/}
${a##*/}.notes
${a##*/}.sha256"
	assert_equal "$(cat "$a.notes")" 'web{{vmid}}'
	assert_equal "$(head -n 1 "$BATS_TEST_TMPDIR/hook.log")" job-start
	grep -q '^Subject: vzdump backup status (.*): backup successful$' "$BATS_TEST_TMPDIR/sendmail.mail"
	run restored_shas "$a" drive-virtio0
	assert_output "$(cat "$SMALL/s0.sha")"
	# Without prune-backups, maxfiles: 1 is keep-last=1.
	sed -i '/^prune-backups:/d' "$VZDUMP_CONF"
	sleep 1
	run --separate-stderr -0 "$TOP/vzdump.sh" --all
	grep -qxF 'INFO: prune older backups with retention: keep-last=1' <<<"$stderr" || fail "$stderr"
	run bash -c 'ls "$1" | grep -c "\.vma\.zst$"' _ "$D"
	assert_output 1
	# A job for another node (on the command line) does nothing, successfully.
	before=$(files_in "$D")
	run --separate-stderr -0 "$TOP/vzdump.sh" --all --node elsewhere
	assert_equal "$stderr" "INFO: skipping the job: it is for node elsewhere, this is $node"
	assert_equal "$(files_in "$D")" "$before"
	# maxfiles on the command line wins over vzdump.conf's prune-backups.
	printf 'prune-backups: keep-last=5\n' >"$VZDUMP_CONF"
	sleep 1
	run --separate-stderr -0 job --maxfiles 1 102
	grep -qxF 'INFO: prune older backups with retention: keep-last=1' <<<"$stderr" || fail "$stderr"
}

@test "fleecing storage=FOLDER is where the scratch images go; QEMU takes the jobs with max-workers" {
	mkdir -m 0700 "$BATS_TEST_TMPDIR/fleece"
	printf '#!/bin/sh\n[ "$1" != backup-start ] || ls %s >%s\n' "$BATS_TEST_TMPDIR/fleece" \
		"$BATS_TEST_TMPDIR/fleece.ls" >"$BATS_TEST_TMPDIR/hook"
	chmod +x "$BATS_TEST_TMPDIR/hook"
	printf 'fleecing: 1,storage=%s\nperformance: max-workers=2\n' "$BATS_TEST_TMPDIR/fleece" >"$VZDUMP_CONF"
	run --separate-stderr -0 "$TOP/vzdump.sh" --dumpdir "$D" --confdir "$W/conf" --rundir "$W/run" \
		--script "$BATS_TEST_TMPDIR/hook" 100
	run cat "$BATS_TEST_TMPDIR/fleece.ls"
	assert_output --regexp '^vzdumptmp\.[A-Za-z0-9]{6}$'
	run ls -A "$BATS_TEST_TMPDIR/fleece"
	assert_output ""
	run restored_shas "$(archive_of 100)" drive-scsi0 drive-virtio0
	assert_output "$(cat "$VM/d1.sha" "$VM/d0.sha")"
	# The command line's --tmpdir wins over the fleecing folder.
	rm -f "$D"/* "$BATS_TEST_TMPDIR/fleece.ls"
	run --separate-stderr -0 job --script "$BATS_TEST_TMPDIR/hook" 102
	run cat "$BATS_TEST_TMPDIR/fleece.ls"
	assert_output ""
	# Proxmox's fleecing off: its storage is not used, the tmpdir of vzdump.conf is.
	rm -f "$D"/* "$BATS_TEST_TMPDIR/fleece.ls"
	printf 'tmpdir: %s\nfleecing: enabled=0,storage=%s\n' "$W/tmp" "$BATS_TEST_TMPDIR/fleece" >"$VZDUMP_CONF"
	run --separate-stderr -0 "$TOP/vzdump.sh" --dumpdir "$D" --confdir "$W/conf" --rundir "$W/run" \
		--script "$BATS_TEST_TMPDIR/hook" 102
	run cat "$BATS_TEST_TMPDIR/fleece.ls"
	assert_output ""
}

@test "vzdump's options that mean nothing here are usage errors on the command line, each with its reason" {
	run --separate-stderr -2 job --storage local 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --storage: there is no Proxmox storage layer here: set dumpdir to the folder the backups go to"
	run --separate-stderr -2 job --stop
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --stop: no task registry here: stop the running job with 'systemctl stop vzdump.service' or SIGTERM to vzdump.sh"
	run --separate-stderr -2 job --pool=prod
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --pool: there are no resource pools here: name the VMIDs, or use --all with --exclude"
	run --separate-stderr -2 job --notification-mode notification-system 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --notification-mode: no Proxmox notification system here: set mailto, and mail goes through sendmail"
	run --separate-stderr -2 job --performance max-workers=0 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --performance: max-workers must be 1 to 256, not '0'"
	run --separate-stderr -2 job --fleecing enabled=maybe 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --fleecing enabled must be 0 or 1, not 'maybe'"
	run --separate-stderr -2 job --maxfiles -1 102
	assert_equal "${stderr%%$'\n'*}" "vzdump.sh: --maxfiles needs a number of backups, not '-1'"
	printf 'all: 1\nstdout: yes\nstop: 1\nquiet: maybe\n' >"$VZDUMP_CONF"
	run --separate-stderr -2 job 102
	assert_equal "$stderr" "vzdump.sh: $VZDUMP_CONF line 4: quiet must be 0 or 1, not 'maybe'"
	printf 'all: 1\nstdout: yes\nstop: 1\n' >"$VZDUMP_CONF"
	run --separate-stderr -0 job 102
	run grep '^WARN: ' <<<"$stderr"
	assert_output "WARN: $VZDUMP_CONF line 1: ignoring 'all': name the machines on the command line, or give --all there
WARN: $VZDUMP_CONF line 2: ignoring 'stdout': --stdout is for one run on the command line
WARN: $VZDUMP_CONF line 3: ignoring 'stop': no task registry here: stop the running job with 'systemctl stop vzdump.service' or SIGTERM to vzdump.sh"
}

@test "mail: nothing on stdout (a --stdout stream stays the archive alone); a job that cannot take its lock mails its failure" {
	fake_sendmail
	run --separate-stderr -0 job --mailto root 102
	assert_output ""
	job --mailto root --stdout 102 >"$BATS_TEST_TMPDIR/stream.vma" 2>/dev/null
	run -0 vma-extract -t "$BATS_TEST_TMPDIR/stream.vma"
	run -0 vma-extract -l --json "$BATS_TEST_TMPDIR/stream.vma"
	grep -q '^Subject: vzdump backup status (.*): backup successful$' "$BATS_TEST_TMPDIR/sendmail.mail"
	rm "$BATS_TEST_TMPDIR/sendmail.mail"
	# The node's lock held by another job.
	hold_lock "$W/run/vzdump.lock"
	run --separate-stderr -1 job --mailto root --lockwait 0 102
	kill "$holder"
	wait "$holder" || true
	mail=$(cat "$BATS_TEST_TMPDIR/sendmail.mail")
	grep -q '^Subject: vzdump backup status (.*): backup failed$' <<<"$mail" || fail "$mail"
	grep -qxF "can't acquire lock '$W/run/vzdump.lock' - got timeout" <<<"$mail" || fail "$mail"
	# The job's private folder is gone.
	run ls -A "$W/tmp"
	assert_output ""
}

@test "a sendmail that ignores TERM is killed after VZDUMP_MAIL_TIMEOUT; the backup stands" {
	mkdir -p "$BATS_TEST_TMPDIR/mta"
	printf '#!/bin/bash\ntrap "" TERM\ncat >/dev/null\nsleep 60\n' >"$BATS_TEST_TMPDIR/mta/sendmail"
	chmod +x "$BATS_TEST_TMPDIR/mta/sendmail"
	PATH=$BATS_TEST_TMPDIR/mta:$PATH
	start=$SECONDS
	VZDUMP_MAIL_TIMEOUT=2 run --separate-stderr -0 job --mailto root 102
	[ $((SECONDS - start)) -lt 30 ] || fail "took $((SECONDS - start)) s: $stderr"
	grep -qxF 'WARN: sending the mail to root failed: timed out after 2 s' <<<"$stderr" || fail "$stderr"
	run restored_shas "$(archive_of 102)" drive-virtio0
	assert_output "$(cat "$SMALL/s0.sha")"
}
