#!/usr/bin/env bats
# shellcheck disable=SC2154,SC2016 # bats sets $stderr; bash -c programs are single-quoted
# vzdump.sh against real QEMU (bare, no guest): the snapshot path, naming, the stored config,
# and that the VM is left exactly as it was.

setup() {
	load lib/common
	load lib/vzdump
}

# One running VM with two disks for the tests that leave it as it was.
setup_file() {
	load lib/common
	load lib/vzdump
	export VM=$BATS_FILE_TMPDIR/vm
	mkdir -p "$VM"
	vz_start_two_disks "$VM"
	vz_dirs "$VM" 100
	qmp_raw "$VM" '{"execute":"cont"}' >/dev/null
	# The tests never write to these disks.
	vz_disk_sha "$VM/d0.raw" >"$VM/d0.sha"
	vz_disk_sha "$VM/d1.qcow2" >"$VM/d1.sha"
}

teardown_file() {
	load lib/common
	load lib/vzdump
	qemu_stop "$VM"
}

teardown() {
	[ -z "${OWN:-}" ] || qemu_stop "$OWN"
}

synopsis_of_man() {
	mandoc -Tascii "$TOP/man/vzdump.sh.1" | col -b |
		sed -n '/^SYNOPSIS/,/^[A-Z]/p' | sed '1d;$d' | tr -s ' \n\t' ' ' | sed 's/^ //;s/ $//'
}

@test "-h prints exactly the man page's SYNOPSIS and exits 0" {
	run -0 "$TOP/vzdump.sh" -h
	got=$(printf '%s\n' "$output" | tr -s ' \n\t' ' ' | sed 's/^ //;s/ $//')
	assert_equal "$got" "$(synopsis_of_man)"
}

@test "usage errors exit 2 with a reason and the synopsis on stderr, nothing on stdout" {
	for args in "--no-such-option 100" "" "99" "12a" "--compress bz2 100" "--bwlimit x 100" \
		"--stdout 100 101" "--dumpdir"; do
		# shellcheck disable=SC2086 # word splitting wanted
		run --separate-stderr -2 "$TOP/vzdump.sh" $args
		assert_output ""
		[[ $stderr == "vzdump.sh: "*"usage: vzdump.sh [--dumpdir dir]"* ]] ||
			fail "args '$args': stderr is: $stderr"
	done
	run --separate-stderr -2 "$TOP/vzdump.sh" --compress bz2 100
	[[ $stderr == "vzdump.sh: --compress must be 0, 1, gzip, lzo, zstd or xz, not 'bz2'"* ]] || fail "$stderr"
	run --separate-stderr -2 "$TOP/vzdump.sh" --pigz x 100
	[[ $stderr == "vzdump.sh: --pigz needs a number of threads, not 'x'"* ]] || fail "$stderr"
}

@test "every option in vzdump.sh is in its man page" {
	rendered=$(mandoc -Tascii "$TOP/man/vzdump.sh.1" | col -b)
	# The options parse_options accepts: its flags, and those with a value (VALUE_OPTIONS).
	opts=$({
		sed -n '/^parse_options() {/,/^}/p' "$TOP/lib/vzdump/options.bash"
		sed -n '/^VALUE_OPTIONS="/,/"$/p' "$TOP/lib/vzdump/options.bash"
	} | grep -o -- '--[a-z][a-z-]*' | sort -u)
	[ "$(wc -l <<<"$opts")" -ge 24 ] || fail "found only: $opts"
	for o in $opts; do
		grep -qE -- "$o([^[:alnum:]-]|$)" <<<"$rendered" || fail "$o is not in the man page"
	done
}

@test "every environment variable the driver reads is in the man page's ENVIRONMENT" {
	environment=$(mandoc -Tascii "$TOP/man/vzdump.sh.1" | col -b | sed -n '/^ENVIRONMENT/,/^FILES/p')
	vars=$(cat "$TOP/vzdump.sh" "$TOP"/lib/vzdump/*.bash | grep -o 'VZDUMP_[A-Z_]*' | sort -u)
	[ "$(wc -l <<<"$vars")" -ge 7 ] || fail "found only: $vars"
	for v in $vars; do
		grep -qw -- "$v" <<<"$environment" || fail "$v is not in the man page's ENVIRONMENT"
	done
}

@test "a bad VZDUMP_QMP_TIMEOUT, VZDUMP_FREEZE_MAX, VZDUMP_STOPWAIT_SECONDS or VZDUMP_WRITER_WAIT is a usage error" {
	for v in VZDUMP_QMP_TIMEOUT VZDUMP_FREEZE_MAX VZDUMP_STOPWAIT_SECONDS VZDUMP_WRITER_WAIT; do
		for bad in x 0 -1 1.5 1234567; do
			run --separate-stderr -2 env "$v=$bad" "$TOP/vzdump.sh" 100
			assert_output ""
			assert_equal "$stderr" "vzdump.sh: environment: $v must be a whole number of seconds from 1 to 999999, not '$bad'"
		done
	done
}

@test "a missing --rundir fails with the program's own message only" {
	for args in "" "--cleanup" "--json"; do
		# shellcheck disable=SC2086 # the words are the arguments
		run --separate-stderr -2 "$TOP/vzdump.sh" --rundir "$BATS_TEST_TMPDIR/nonexistent" \
			--tmpdir "$BATS_TEST_TMPDIR" $args 100
		assert_output ""
		assert_equal "$stderr" "vzdump.sh: the run folder $BATS_TEST_TMPDIR/nonexistent does not exist or is no folder"
	done
}

@test "a missing --dumpdir fails before the job starts, with the program's own message only" {
	mkdir "$BATS_TEST_TMPDIR/run"
	run --separate-stderr -2 "$TOP/vzdump.sh" --rundir "$BATS_TEST_TMPDIR/run" \
		--tmpdir "$BATS_TEST_TMPDIR" --dumpdir "$BATS_TEST_TMPDIR/nonexistent" 100
	assert_output ""
	assert_equal "$stderr" "vzdump.sh: the dump folder $BATS_TEST_TMPDIR/nonexistent does not exist or is no folder"
	# No lock taken, nothing written.
	run ls -A "$BATS_TEST_TMPDIR/run"
	assert_output ""
}

@test "a 400,000-line vzdump.conf is read in one pass: over 1 MiB it is refused, under it parsed" {
	conf=$BATS_TEST_TMPDIR/vzdump.conf
	# 3.4 MB: refused, naming the file and the limit, before anything is done.
	for ((i = 0; i < 100000; i++)); do printf '# a comment\nbwlimit: 100\n\nzstd: 1\n'; done >"$conf"
	[ "$(wc -l <"$conf")" = 400000 ] || fail "not 400,000 lines"
	VZDUMP_CONF=$conf run --separate-stderr -2 timeout 10 "$TOP/vzdump.sh" 100
	assert_output ""
	assert_equal "$stderr" "vzdump.sh: $conf: 3400000 bytes; a vzdump.conf may have at most 1048576 (1 MiB)"
	# 850 KB: comments, blank lines and one key given 49,999 times (the last value counts);
	# a bad value on line 399,999 is found and named.
	{
		printf '\n\n\n\n'
		for ((i = 0; i < 49999; i++)); do printf '#\n\n\n \n\n#\n\nzstd:2\n'; done
	} >"$conf"
	printf 'x\n#\nmode: fast\nfoo: 1\n' >>"$conf"
	[ "$(wc -l <"$conf")" = 400000 ] || fail "not 400,000 lines"
	VZDUMP_CONF=$conf run --separate-stderr -2 timeout 10 "$TOP/vzdump.sh" 100
	assert_output ""
	assert_equal "$stderr" "vzdump.sh: $conf line 399999: --mode must be snapshot, suspend or stop, not 'fast'"
}

@test "vzdump.conf: 20 warnings at most, then how many more lines were ignored" {
	export VZDUMP_CONF=$BATS_TEST_TMPDIR/vzdump.conf
	{
		for ((i = 0; i < 30; i++)); do echo "not a setting"; done
		printf 'frobnicate: local\n\tmode:\tstop\r\n'
	} >"$VZDUMP_CONF"
	mkdir "$BATS_TEST_TMPDIR/run" "$BATS_TEST_TMPDIR/dump"
	run --separate-stderr -1 timeout 20 "$TOP/vzdump.sh" --rundir "$BATS_TEST_TMPDIR/run" \
		--tmpdir "$BATS_TEST_TMPDIR" --dumpdir "$BATS_TEST_TMPDIR/dump" 100
	assert_output ""
	warnings=$(grep '^WARN: ' <<<"$stderr")
	assert_equal "$(wc -l <<<"$warnings")" 21
	assert_equal "$(sed -n 1p <<<"$warnings")" "WARN: $VZDUMP_CONF line 1: ignoring 'not a setting' (not 'key: value')"
	assert_equal "$(sed -n 20p <<<"$warnings")" "WARN: $VZDUMP_CONF line 20: ignoring 'not a setting' (not 'key: value')"
	assert_equal "$(sed -n 21p <<<"$warnings")" "WARN: $VZDUMP_CONF: and 11 more lines ignored"
}

@test "a running VM without config: both disks at one instant, VM and block graph unchanged" {
	before=$(vz_state "$VM")
	[[ $before == *'"running"'* ]] || fail "VM not running: $before"
	run -0 vz_backup "$VM" 100
	after=$(vz_state "$VM")
	assert_equal "$after" "$before"
	# No scratch image, socket or private folder is left, and nothing but the archive, its
	# .sha256 and the log.
	run ls -A "$VM/tmp"
	assert_output ""
	run ls -A "$VM/dump"
	assert_line --index 0 --regexp '^vzdump-qemu-100-[0-9]{4}_[0-9]{2}_[0-9]{2}-[0-9]{2}_[0-9]{2}_[0-9]{2}\.log$'
	assert_line --index 1 --regexp '^vzdump-qemu-100-[0-9]{4}_[0-9]{2}_[0-9]{2}-[0-9]{2}_[0-9]{2}_[0-9]{2}\.vma$'
	[ "${#lines[@]}" = 3 ] || fail "extra files: $output"
	base=${lines[1]%.vma}
	[ "${lines[0]}" = "$base.log" ] || fail "log and archive names differ"
	assert_equal "${lines[2]}" "$base.vma.sha256"
	archive=$VM/dump/${lines[1]}
	# sha256sum's own format, checked by hand in the dump folder; and by vma-extract -t.
	assert_equal "$(cat "$archive.sha256")" "$(sha "$archive")  $base.vma"
	run -0 bash -c 'cd "$1" && sha256sum -c "$2"' _ "$VM/dump" "$base.vma.sha256"
	assert_output "$base.vma: OK"
	run -0 vma-extract -t -v "$archive"
	assert_line "sha256 $(sha "$archive") matches $archive.sha256"

	run -0 vma-extract -l "$archive"
	assert_line --index 1 "DEV: dev_id=1 size: 104861184 devname: drive-scsi0"
	assert_line --index 2 "DEV: dev_id=2 size: 67108864 devname: drive-virtio0"
	run -0 vma-extract -c qemu-server.conf "$archive"
	assert_output "name: vm100
scsi0: $VM/d1.qcow2,size=104861184
virtio0: $VM/d0.raw,size=64M
#qmdump#map:scsi0:drive-scsi0::qcow2:
#qmdump#map:virtio0:drive-virtio0::raw:"
	vma-extract "$archive" "$BATS_TEST_TMPDIR/x"
	assert_equal "$(sha "$BATS_TEST_TMPDIR/x/disk-drive-virtio0.raw")" "$(cat "$VM/d0.sha")"
	assert_equal "$(sha "$BATS_TEST_TMPDIR/x/disk-drive-scsi0.raw")" "$(cat "$VM/d1.sha")"
}

@test "the log is in vzdump's format, on stderr and with time stamps in the .log file" {
	run --separate-stderr -0 vz_backup "$VM" 100
	assert_output ""
	archives=("$VM"/dump/*.vma)
	archive=${archives[-1]}
	printf '%s\n' "$stderr" >"$BATS_TEST_TMPDIR/err"
	# The lines that do not depend on timing, in order.
	run grep -vE '^INFO: +[0-9]+% |^INFO: (Backup started at|Backup finished at|backup is sparse|transferred|archive file size|snapshot taken in)' "$BATS_TEST_TMPDIR/err"
	assert_output "INFO: starting new backup job: vzdump.sh --dumpdir $VM/dump --tmpdir $VM/tmp --confdir $VM/conf --rundir $VM/run 100
INFO: Starting Backup of VM 100 (qemu)
INFO: status = running
INFO: no config $VM/conf/100.conf: backing up every disk QEMU has
INFO: include disk 'scsi0' '$VM/d1.qcow2' 104861184
INFO: include disk 'virtio0' '$VM/d0.raw' 64M
INFO: backup mode: snapshot
INFO: ionice priority: 7
INFO: creating vzdump archive '$archive'
INFO: skipping guest filesystem freeze - no guest agent socket $VM/run/100.qga (backup is not frozen)
INFO: resuming VM again
INFO: starting backup via QMP command
$(sed -n 's/^INFO: Finished/&/p' "$BATS_TEST_TMPDIR/err")
INFO: Backup job finished successfully"
	grep -qE '^INFO: Finished Backup of VM 100 \([0-9]{2}:[0-9]{2}:[0-9]{2}\)$' "$BATS_TEST_TMPDIR/err"
	grep -qE '^INFO: snapshot taken in [0-9]+ ms \(guest filesystems not frozen\)$' "$BATS_TEST_TMPDIR/err"
	grep -qE '^INFO: 100% \(164\.0 MiB of 164\.0 MiB\) in ' "$BATS_TEST_TMPDIR/err"
	grep -qE '^INFO: backup is sparse: 1[0-9]{2}\.[0-9]{2} MiB \(9[0-9]%\) total zero data$' "$BATS_TEST_TMPDIR/err"
	grep -qE '^INFO: archive file size: [0-9]+MB$' "$BATS_TEST_TMPDIR/err"
	# The .log file: the per-VM lines (not the job lines), each with a time stamp.
	log=${archive%.vma}.log
	run sed -E 's/^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} //' "$log"
	assert_output "$(grep -vE '^INFO: (starting new backup job|Backup job finished)' "$BATS_TEST_TMPDIR/err")"
	run grep -cvE '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} INFO: ' "$log"
	assert_output 0
}

@test "a config maps disks by node name, device id and file; the stored config is vzdump's" {
	cat >"$VM/conf/100.conf" <<END
# a description line
name: web \$(touch $BATS_TEST_TMPDIR/evaluated) one
agent: 0
lock: backup
scsi0: $VM/d1.qcow2,size=100M
virtio0: local:100/vm-100-disk-0.raw,size=64M
ide2: none,media=cdrom
sata1: /nowhere.raw,backup=0
unused0: local:100/vm-100-disk-9.raw
parent: snap1

[snap1]
virtio0: $VM/d0.raw
END
	before=$(vz_state "$VM")
	run --separate-stderr -0 vz_backup "$VM" --compress zstd 100
	assert_equal "$(vz_state "$VM")" "$before"
	[ ! -e "$BATS_TEST_TMPDIR/evaluated" ] || fail "the VM name was evaluated"
	printf '%s\n' "$stderr" >"$BATS_TEST_TMPDIR/err"
	grep -qxF "INFO: VM Name: web \$(touch $BATS_TEST_TMPDIR/evaluated) one" "$BATS_TEST_TMPDIR/err"
	grep -qxF "INFO: include disk 'scsi0' '$VM/d1.qcow2' 104861184" "$BATS_TEST_TMPDIR/err"
	grep -qxF "INFO: include disk 'virtio0' 'local:100/vm-100-disk-0.raw' 64M" "$BATS_TEST_TMPDIR/err"
	grep -qxF "INFO: exclude disk 'sata1' '/nowhere.raw' (backup=no)" "$BATS_TEST_TMPDIR/err"
	grep -qxF "INFO: skip unused drive 'local:100/vm-100-disk-9.raw' (not included into backup)" "$BATS_TEST_TMPDIR/err"
	grep -qxF "INFO: snapshots found (not included into backup)" "$BATS_TEST_TMPDIR/err"
	grep -qxF "INFO: skipping guest filesystem freeze - no guest agent enabled in VM options (backup is not frozen)" "$BATS_TEST_TMPDIR/err"
	archive=$(echo "$VM"/dump/*.vma.zst)
	[[ ${archive##*/} =~ ^vzdump-qemu-100-[0-9_-]{19}\.vma\.zst$ ]] || fail "name: $archive"
	run -0 vma-extract -c qemu-server.conf "$archive"
	assert_output "# a description line
name: web \$(touch $BATS_TEST_TMPDIR/evaluated) one
agent: 0
scsi0: $VM/d1.qcow2,size=100M
virtio0: local:100/vm-100-disk-0.raw,size=64M
ide2: none,media=cdrom
sata1: /nowhere.raw,backup=0

#qmdump#map:scsi0:drive-scsi0::qcow2:
#qmdump#map:virtio0:drive-virtio0:local:raw:"
	vma-extract "$archive" "$BATS_TEST_TMPDIR/x"
	assert_equal "$(sha "$BATS_TEST_TMPDIR/x/disk-drive-virtio0.raw")" "$(cat "$VM/d0.sha")"
	assert_equal "$(sha "$BATS_TEST_TMPDIR/x/disk-drive-scsi0.raw")" "$(cat "$VM/d1.sha")"
	rm -f "$VM/conf/100.conf" "$archive"
}

@test "a config disk QEMU does not have fails clearly, leaving no archive and the VM as it was" {
	rm -f "$VM"/dump/*
	printf 'scsi0: %s\nscsi1: /srv/missing.raw\n' "$VM/d1.qcow2" >"$VM/conf/100.conf"
	before=$(vz_state "$VM")
	run --separate-stderr -1 vz_backup "$VM" 100
	rm -f "$VM/conf/100.conf"
	assert_output ""
	assert_equal "$(vz_state "$VM")" "$before"
	[[ $stderr == *"ERROR: Backup of VM 100 failed - disk 'scsi1' (/srv/missing.raw) not found in the running QEMU: give its node or drive the name 'drive-scsi1' (-blockdev ...,node-name=drive-scsi1) or its device the id 'scsi1' (-device ...,id=scsi1)"* ]] ||
		fail "$stderr"
	[[ $stderr == *"INFO: Backup job finished with errors" ]] || fail "$stderr"
	run ls "$VM/dump" "$VM/tmp"
	refute_output --partial ".vma"
	refute_output --partial ".dat"
	refute_output --partial "vzdumptmp"
	# The failed backup's log is kept, with the error.
	grep -q "ERROR: Backup of VM 100 failed - disk 'scsi1'" "$VM"/dump/*.log
	rm -f "$VM"/dump/*.log
}

@test "--stdout writes the archive to stdout, xz-compressed, and nothing to the dump folder" {
	rm -f "$VM"/dump/*
	run -0 bash -c '"$1/vzdump.sh" --stdout --quiet --compress xz --tmpdir "$2/tmp" --rundir "$2/run" --confdir "$2/conf" 100 | vma-extract -l -' _ "$TOP" "$VM"
	assert_line --index 0 --regexp '^CFG: size: [0-9]+ name: qemu-server.conf$'
	assert_line --index 1 "DEV: dev_id=1 size: 104861184 devname: drive-scsi0"
	run ls -A "$VM/dump" "$VM/tmp"
	assert_output "$VM/dump:

$VM/tmp:"
}

@test "every compression setting writes Proxmox's file name and format, and the archive verifies" {
	rm -f "$VM"/dump/*
	# vzdump's 0, 1 (lzo), gzip, lzo and zstd, with vzdump's threads; xz, our extra; the same
	# keys in vzdump.conf.
	for c in "0 vma 564d4100" "1 vma.lzo 894c5a4f000d0a1a0a" "gzip vma.gz 1f8b08" \
		"gzip:1 vma.gz 1f8b08" "gzip:2 vma.gz 1f8b08" "lzo vma.lzo 894c5a4f000d0a1a0a" \
		"zstd vma.zst 28b52ffd" "xz vma.xz fd377a585a00" "conf:gzip vma.gz 1f8b08" \
		"conf:1 vma.lzo 894c5a4f000d0a1a0a"; do
		read -r comp ext magic <<<"$c"
		case $comp in
		conf:*)
			printf 'compress: %s\npigz: 2\n' "${comp#conf:}" >"$BATS_TEST_TMPDIR/vzdump.conf"
			VZDUMP_CONF=$BATS_TEST_TMPDIR/vzdump.conf vz_backup "$VM" 100 2>"$BATS_TEST_TMPDIR/err"
			;;
		gzip:*) vz_backup "$VM" --compress gzip --pigz "${comp#gzip:}" 100 2>"$BATS_TEST_TMPDIR/err" ;;
		*) vz_backup "$VM" --compress "$comp" --zstd 2 100 2>"$BATS_TEST_TMPDIR/err" ;;
		esac || fail "$comp: $(cat "$BATS_TEST_TMPDIR/err")"
		run ls -A "$VM/dump"
		assert_line --index 0 --regexp '^vzdump-qemu-100-[0-9]{4}_[0-9]{2}_[0-9]{2}-[0-9]{2}_[0-9]{2}_[0-9]{2}\.log$'
		assert_line --index 1 --regexp "^vzdump-qemu-100-[0-9]{4}_[0-9]{2}_[0-9]{2}-[0-9]{2}_[0-9]{2}_[0-9]{2}\\.${ext//./\\.}\$"
		assert_line --index 2 "${lines[1]}.sha256"
		[ "${#lines[@]}" = 3 ] || fail "$comp: $output"
		archive=$VM/dump/${lines[1]}
		# Every kind of archive gets its .sha256, of its bytes as they are on disk.
		(cd "$VM/dump" && sha256sum --quiet -c "${lines[1]}.sha256") || fail "$comp: sha256sum -c"
		assert_equal "$(cat "$archive.sha256")" "$(sha "$archive")  ${lines[1]}"
		assert_equal "$(head -c "$((${#magic} / 2))" "$archive" | od -An -tx1 | tr -d ' \n')" "$magic"
		# What Proxmox's own tools check it with.
		case $ext in
		vma.gz) gzip -t "$archive" ;;
		vma.lzo) lzop -t "$archive" ;;
		vma.zst) zstd -q -t "$archive" ;;
		esac
		run -0 vma-extract -t "$archive"
		vma-extract "$archive" "$BATS_TEST_TMPDIR/x"
		assert_equal "$(sha "$BATS_TEST_TMPDIR/x/disk-drive-virtio0.raw")" "$(cat "$VM/d0.sha")"
		assert_equal "$(sha "$BATS_TEST_TMPDIR/x/disk-drive-scsi0.raw")" "$(cat "$VM/d1.sha")"
		rm -rf "$BATS_TEST_TMPDIR/x" "$VM"/dump/*
	done
}

@test "a VM in prelaunch (legacy -drive) is backed up and stays as it was; a second VM id fails alone" {
	OWN=$BATS_TEST_TMPDIR/own
	mkdir -p "$OWN"
	truncate -s 4M "$OWN/d.raw"
	printf 'hello' | dd of="$OWN/d.raw" conv=notrunc status=none
	# A legacy -drive this time: found by its drive id, which it keeps.
	qemu_start_bare "$OWN" -drive "file=$OWN/d.raw,if=none,id=drive-sata0,format=raw" \
		-device ahci,id=ahci -device ide-hd,drive=drive-sata0,bus=ahci.0,id=disk0
	vz_dirs "$OWN" 200
	blocks() { qmp_raw "$OWN" '{"execute":"query-block"}' | jq -c '[.return[] | [.device, .qdev, .inserted["node-name"]]]'; }
	blocks_before=$(blocks)
	before=$(vz_state "$OWN")
	[[ $before == *'"prelaunch"' ]] || fail "$before"
	run --separate-stderr -1 vz_backup "$OWN" 200 201
	assert_equal "$(vz_state "$OWN")" "$before"
	assert_equal "$(blocks)" "$blocks_before"
	[[ $blocks_before == '[["drive-sata0","disk0","#block'* ]] || fail "$blocks_before"
	[[ $stderr == *"ERROR: Backup of VM 201 failed - VM 201 is not running (no QMP socket $OWN/run/201.qmp)"* ]] || fail "$stderr"
	[[ $stderr != *"resuming VM again"* ]] || fail "a paused VM was resumed"
	vma-extract "$OWN"/dump/vzdump-qemu-200-*.vma "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-sata0.raw")" "$(sha "$OWN/d.raw")"
}

@test "the archive holds the disks as they were at the snapshot, not the writes made during the copy" {
	OWN=$BATS_TEST_TMPDIR/own
	mkdir -p "$OWN"
	random_file "$OWN/d.raw" $((4 * 1024 * 1024))
	cp "$OWN/d.raw" "$OWN/orig.raw"
	qemu_start_bare "$OWN" -blockdev "driver=file,node-name=f,filename=$OWN/d.raw" \
		-blockdev driver=raw,node-name=drive-virtio0,file=f \
		-device virtio-blk-pci,drive=drive-virtio0,id=vblk0
	qmp_raw "$OWN" '{"execute":"cont"}' >/dev/null
	vz_dirs "$OWN" 300
	# 1 MiB/s: the copy of 4 MiB takes about 4 s; the guest writes meanwhile, through the device.
	vz_backup "$OWN" --bwlimit 1024 300 2>"$OWN/err" 3>&- &
	bk=$!
	for ((i = 0; i < 200; i++)); do
		grep -q 'starting backup via QMP command' "$OWN/err" && break
		sleep 0.05
	done
	qmp_raw "$OWN" '{"execute":"human-monitor-command","arguments":{"command-line":"qemu-io -d /machine/peripheral/vblk0/virtio-backend \"write -P 0x55 0 4M\""}}' >/dev/null
	wait "$bk" || fail "backup failed: $(cat "$OWN/err")"
	# The write reached the disk, and the archive has the content of before it.
	[ "$(sha "$OWN/d.raw")" != "$(sha "$OWN/orig.raw")" ] || fail "the guest write did not happen"
	vma-extract "$OWN"/dump/vzdump-qemu-300-*.vma "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$(sha "$OWN/orig.raw")"
	grep -qxF 'INFO: bandwidth limit: 1024 KiB/s' "$OWN/err"
}

@test "--bwlimit is for the whole backup and its data alone: the writer keeps it, QEMU's jobs run at full speed" {
	local err=$BATS_TEST_TMPDIR/err i jobs= writer= t0 t1
	rm -f "$VM"/dump/*
	# The two disks hold 3 MiB and 2 MiB + 3.5 KiB of data in 164 MiB.
	t0=${EPOCHREALTIME/./}
	vz_backup "$VM" --bwlimit 1024 100 2>"$err" 3>&- &
	bk=$!
	for ((i = 0; i < 600; i++)); do
		jobs=$(qmp_raw "$VM" '{"execute":"query-block-jobs"}' |
			jq -c '[.return[] | {device, speed}] | sort_by(.device)')
		[ "$jobs" = '[]' ] || break
		sleep 0.1
	done
	writer=$(pgrep -f -- "vma-create .*--listen $VM/tmp/vzdumptmp" | head -n 1)
	[ -z "$writer" ] || writer=$(tr '\0' ' ' <"/proc/$writer/cmdline")
	wait "$bk" || fail "backup failed: $(cat "$err")"
	t1=${EPOCHREALTIME/./}
	assert_equal "$jobs" '[{"device":"vzdump-drive-scsi0","speed":0},{"device":"vzdump-drive-virtio0","speed":0}]'
	[[ $writer == *" --bwlimit 1024 "* ]] || fail "the writer's command line: '$writer'"
	grep -qxF 'INFO: bandwidth limit: 1024 KiB/s' "$err"
	# 5 MiB of data at 1 MiB/s take 5 s at least (the 159 MiB of holes nothing, or the
	# backup would take minutes).
	[ $((t1 - t0)) -ge 4900000 ] || fail "took $((t1 - t0)) us: faster than 1 MiB/s"
	vma-extract "$VM"/dump/vzdump-qemu-100-*.vma "$BATS_TEST_TMPDIR/x"
	assert_equal "$(sha "$BATS_TEST_TMPDIR/x/disk-drive-virtio0.raw")" "$(cat "$VM/d0.sha")"
	assert_equal "$(sha "$BATS_TEST_TMPDIR/x/disk-drive-scsi0.raw")" "$(cat "$VM/d1.sha")"
	rm -f "$VM"/dump/*
}

# A VM of its own with one 4 MiB disk of random data, running, as VMID 300; QEMU gets the
# extra arguments.
own_vm() { # [QEMU-ARGS...]
	OWN=$BATS_TEST_TMPDIR/own
	mkdir -p "$OWN"
	random_file "$OWN/d.raw" $((4 * 1024 * 1024))
	cp "$OWN/d.raw" "$OWN/orig.raw"
	qemu_start_bare "$OWN" -blockdev "driver=file,node-name=f,filename=$OWN/d.raw" \
		-blockdev driver=raw,node-name=drive-virtio0,file=f \
		-device virtio-blk-pci,drive=drive-virtio0,id=vblk0 "$@"
	qmp_raw "$OWN" '{"execute":"cont"}' >/dev/null
	vz_dirs "$OWN" 300
}

# Starts a slow backup of VM 300 in the background (pid in $bk) and returns once its jobs run.
slow_backup() {
	"$TOP/vzdump.sh" --dumpdir "$OWN/dump" --tmpdir "$OWN/tmp" --confdir "$OWN/conf" \
		--rundir "$OWN/run" --bwlimit 512 300 2>"$OWN/err" 3>&- &
	bk=$!
	for ((i = 0; i < 200; i++)); do
		grep -q 'starting backup via QMP command' "$OWN/err" && sleep 0.5 && return 0
		sleep 0.05
	done
	fail "the backup did not start: $(cat "$OWN/err")"
}

# The guest writes through its device; prints the HMP reply (empty when the write worked).
guest_write() {
	qmp_raw "$OWN" '{"execute":"human-monitor-command","arguments":{"command-line":"qemu-io -d /machine/peripheral/vblk0/virtio-backend \"write -P 0x66 1M 64k\""}}' |
		jq -r .return
}

# After a failed backup: nothing left in the dump and tmp folders but the log.
assert_nothing_left() {
	run ls -A "$OWN/tmp"
	assert_output ""
	run ls "$OWN/dump"
	assert_output --regexp '^vzdump-qemu-300-[0-9_-]{19}\.log$'
}

@test "vma-create killed mid-copy: the guest keeps writing, the backup fails and undoes everything" {
	own_vm
	before=$(vz_state "$OWN")
	slow_backup
	writer=$(pgrep -f -- "--listen $OWN/tmp/vzdumptmp")
	[ -n "$writer" ] || fail "no writer found"
	kill -KILL "$writer"
	# The guest is not exposed to the target's failure.
	assert_equal "$(guest_write)" ""
	rc=0
	wait "$bk" || rc=$?
	assert_equal "$rc" 1
	grep -qE '^ERROR: Backup of VM 300 failed - backup job failed: vzdump-drive-virtio0: ' "$OWN/err" ||
		fail "$(cat "$OWN/err")"
	grep -qxF 'INFO: Backup job finished with errors' "$OWN/err"
	assert_equal "$(vz_state "$OWN")" "$before"
	assert_nothing_left
	assert_equal "$(guest_write)" ""
	# Every line is the program's own: no "line N: PID Killed vma-create ..." from bash.
	if grep -E 'line [0-9]+: |Killed' "$OWN/err"; then
		fail "bash's own lines reached stderr: $(cat "$OWN/err")"
	fi
}

@test "SIGTERM to the driver during the copy: jobs cancelled, graph restored, nothing left" {
	own_vm
	before=$(vz_state "$OWN")
	slow_backup
	kill -TERM "$bk"
	rc=0
	wait "$bk" || rc=$?
	assert_equal "$rc" 1
	grep -qxF 'ERROR: Backup of VM 300 failed - interrupted by signal' "$OWN/err" || fail "$(cat "$OWN/err")"
	grep -qxF 'ERROR: Backup job failed - interrupted by signal' "$OWN/err"
	assert_equal "$(vz_state "$OWN")" "$before"
	assert_nothing_left
	[ -z "$(pgrep -f -- "--listen $OWN/tmp/vzdumptmp")" ] || fail "the writer is still running"
}

@test "a job terminated from its backup-end hook keeps the complete archive and reports the failure" {
	own_vm
	# The hook ends the whole job (its process group) once the archive has its final name.
	cat >"$OWN/hook" <<'END'
#!/bin/bash
[ "$1" = backup-end ] || exit 0
kill -TERM -- -"$(/usr/bin/ps -o pgid= -p $$ | /usr/bin/tr -d ' ')"
/usr/bin/sleep 5
END
	chmod +x "$OWN/hook"
	rc=0
	setsid "$TOP/vzdump.sh" --dumpdir "$OWN/dump" --tmpdir "$OWN/tmp" --confdir "$OWN/conf" \
		--rundir "$OWN/run" --script "$OWN/hook" --json 300 >"$OWN/out" 2>"$OWN/err" || rc=$?
	assert_equal "$rc" 1
	archive=$(ls "$OWN"/dump/vzdump-qemu-300-*.vma)
	run -0 vma-extract -t "$archive"
	grep -qxF "ERROR: Backup of VM 300 failed - interrupted by signal (the archive $archive is complete and kept)" \
		"$OWN/err" || fail "$(cat "$OWN/err")"
	run -0 jq -r '.vms[0] | [.status, .archive, .error] | join("|")' "$OWN/out"
	assert_output "error|$archive|interrupted by signal (the archive $archive is complete and kept)"
	grep -qF "Backup of VM 300 failed - interrupted by signal" "${archive%.vma}.log"
	# Neither --cleanup nor the next job takes it away.
	run -0 "$TOP/vzdump.sh" --cleanup --rundir "$OWN/run" --tmpdir "$OWN/tmp" --dumpdir "$OWN/dump" 300
	[ -f "$archive" ] || fail "--cleanup removed the archive"
	run -0 vz_backup "$OWN" 300
	[ -f "$archive" ] || fail "the next backup removed the archive"
	[ ! -e "$VZDUMP_STATEDIR/300.state" ] || fail "a state file was left"
}

@test "an installed copy finds its tools beside its real path with PATH=/usr/bin:/bin; a missing one is named" {
	own_vm
	inst=$BATS_TEST_TMPDIR/inst
	mkdir -p "$inst/bin" "$inst/lib/vzdump" "$BATS_TEST_TMPDIR/elsewhere"
	cp "$VZ_BIN"/{qmpctl,gafreeze,vma-create,vzdump-prune,vzdump-put} "$TOP/vzdump.sh" "$inst/bin/"
	cp "$TOP"/lib/vzdump/* "$inst/lib/vzdump/"
	# Run through a symbolic link elsewhere, as from a cron job's own folder.
	ln -s "$inst/bin/vzdump.sh" "$BATS_TEST_TMPDIR/elsewhere/vzdump"
	run --separate-stderr -0 env PATH=/usr/bin:/bin "$BATS_TEST_TMPDIR/elsewhere/vzdump" \
		--dumpdir "$OWN/dump" --tmpdir "$OWN/tmp" --confdir "$OWN/conf" --rundir "$OWN/run" 300
	archive=$(ls "$OWN"/dump/vzdump-qemu-300-*.vma)
	run -0 vma-extract -t "$archive"
	rm "$inst/bin/gafreeze"
	run --separate-stderr -1 env PATH=/usr/bin:/bin "$inst/bin/vzdump.sh" --dumpdir "$OWN/dump" \
		--tmpdir "$OWN/tmp" --confdir "$OWN/conf" --rundir "$OWN/run" 300
	assert_output ""
	assert_equal "$stderr" "vzdump.sh: gafreeze not found in $inst/bin or PATH"
}

@test "a relative --dumpdir: the JSON and the hooks get absolute paths" {
	own_vm
	make_hook "$OWN/hook"
	cd "$OWN"
	run --separate-stderr -0 "$TOP/vzdump.sh" --dumpdir dump --tmpdir tmp --confdir conf \
		--rundir run --script "$OWN/hook" --json 300
	archive=$(ls "$OWN"/dump/vzdump-qemu-300-*.vma)
	assert_equal "$(jq -r '.vms[0].archive' <<<"$output")" "$archive"
	run -0 grep '^backup-end ' "$OWN/hook.log"
	assert_output --partial ";TARGET=$archive"
	assert_output --partial "LOGFILE=${archive%.vma}.log;"
	assert_output --partial "DUMPDIR=$OWN/dump;"
}

@test "with an agent that answers, the snapshot is taken inside gafreeze hold and the window logged" {
	load lib/guest
	own_vm
	printf 'agent: 1\nvirtio0: %s\n' "$OWN/d.raw" >"$OWN/conf/300.conf"
	qga_double_start "$OWN/run/300.qga"
	run --separate-stderr vz_backup "$OWN" 300
	qga_double_stop "$OWN/run/300.qga"
	assert_success
	[[ $stderr == *"INFO: issuing guest-agent 'fs-freeze' command
INFO: issuing guest-agent 'fs-thaw' command
INFO: guest filesystems frozen for "*" ms
INFO: resuming VM again
INFO: starting backup via QMP command"* ]] || fail "$stderr"
	run jq -r '.execute | select(startswith("guest-fsfreeze-freeze") or . == "guest-fsfreeze-thaw")' "$OWN/run/300.qga.log"
	assert_output "guest-fsfreeze-freeze
guest-fsfreeze-thaw"
}

@test "agent: freeze-fs=0 and an agent that does not answer mean no freeze, said in the log" {
	load lib/guest
	own_vm
	printf 'agent: 1,freeze-fs=0\nvirtio0: %s\n' "$OWN/d.raw" >"$OWN/conf/300.conf"
	qga_double_start "$OWN/run/300.qga"
	run --separate-stderr -0 vz_backup "$OWN" 300
	[[ $stderr == *"INFO: skipping guest filesystem freeze - disabled in VM options (backup is not frozen)"* ]] || fail "$stderr"
	qga_double_stop "$OWN/run/300.qga"
	run grep -c fsfreeze-freeze "$OWN/run/300.qga.log"
	assert_output 0
	# A socket nobody listens on.
	python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$OWN/run/300.qga"
	printf 'agent: 1\nvirtio0: %s\n' "$OWN/d.raw" >"$OWN/conf/300.conf"
	run --separate-stderr -0 vz_backup "$OWN" 300
	[[ $stderr == *"INFO: skipping guest filesystem freeze - agent configured but not running? (backup is not frozen)"* ]] || fail "$stderr"
}

@test "QEMU killed mid-copy: the backup fails at once with the reason, nothing is left" {
	own_vm
	slow_backup
	kill -KILL "$(cat "$OWN/qemu.pid")"
	rc=0
	wait "$bk" || rc=$?
	assert_equal "$rc" 1
	grep -qxF "ERROR: Backup of VM 300 failed - QEMU is gone (nothing listens on $OWN/run/300.qmp)" "$OWN/err" ||
		fail "$(cat "$OWN/err")"
	grep -qxF "WARN: QEMU is gone: its block graph needs no undo" "$OWN/err"
	assert_nothing_left
	[ -z "$(pgrep -f -- "--listen $OWN/tmp/vzdumptmp")" ] || fail "the writer is still running"
}

# A hook that appends "phase args | the exported environment" to $1.log (without what bash
# itself exports: PWD, SHLVL, _), fails in phase $2 (if given), and on post-thaw writes 4 MiB
# through VM 300's device.
make_hook() { # PATH [FAILING-PHASE]
	cat >"$1" <<END
#!/bin/bash
printf '%s | %s\n' "\$*" "\$(/usr/bin/env | /usr/bin/grep -vE '^(PWD|SHLVL|_)=' | /usr/bin/sort | /usr/bin/paste -sd';')" >>"$1.log"
echo "hook says \$1"
[ "\$1" != "${2:-}" ] || exit 3
if [ "\$1" = post-thaw ]; then
	"$VZ_BIN/qmpctl" -s "$OWN/run/300.qmp" -H 'qemu-io -d /machine/peripheral/vblk0/virtio-backend "write -P 0x55 0 4M"' >/dev/null
fi
END
	chmod +x "$1"
}

@test "hooks run in vzdump's order with its arguments and environment; post-thaw writes miss the archive" {
	own_vm
	printf 'name: db one\nvirtio0: %s\n' "$OWN/d.raw" >"$OWN/conf/300.conf"
	make_hook "$OWN/hook"
	run --separate-stderr -0 vz_backup "$OWN" --script "$OWN/hook" 300
	archive=$(echo "$OWN"/dump/*.vma)
	log=${archive%.vma}.log
	d=$OWN/dump
	run cat "$OWN/hook.log"
	assert_output "job-start | DUMPDIR=$d
backup-start snapshot 300 | DUMPDIR=$d;HOSTNAME=db one;LOGFILE=$log;TARGET=$archive;VMTYPE=qemu
pre-stop snapshot 300 | DUMPDIR=$d;HOSTNAME=db one;LOGFILE=$log;TARGET=$archive;VMTYPE=qemu
pre-restart snapshot 300 | DUMPDIR=$d;HOSTNAME=db one;LOGFILE=$log;TARGET=$archive;VMTYPE=qemu
post-restart snapshot 300 | DUMPDIR=$d;HOSTNAME=db one;LOGFILE=$log;TARGET=$archive;VMTYPE=qemu
pre-freeze snapshot 300 | DUMPDIR=$d;HOSTNAME=db one;LOGFILE=$log;TARGET=$archive;VMTYPE=qemu
post-thaw snapshot 300 | DUMPDIR=$d;HOSTNAME=db one;LOGFILE=$log;TARGET=$archive;VMTYPE=qemu
backup-end snapshot 300 | DUMPDIR=$d;HOSTNAME=db one;LOGFILE=$log;TARGET=$archive;VMTYPE=qemu
log-end snapshot 300 | DUMPDIR=$d;HOSTNAME=db one;LOGFILE=$log;TARGET=$archive;VMTYPE=qemu
job-end | DUMPDIR=$d"
	# Hook output is logged; log-end's only on stderr.
	grep -qxF 'INFO: hook says backup-end' <<<"$stderr"
	grep -qxF 'INFO: hook says log-end' <<<"$stderr"
	grep -qE '^[0-9-]+ [0-9:]+ INFO: hook says post-thaw$' "$log"
	run grep -c 'hook says log-end' "$log"
	assert_output 0
	# The post-thaw write reached the disk, after the instant of the archive.
	[ "$(sha "$OWN/d.raw")" != "$(sha "$OWN/orig.raw")" ] || fail "the hook did not write"
	vma-extract "$archive" "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$(sha "$OWN/orig.raw")"
}

@test "hooks, and what they leave running, hold none of the driver's descriptors (locks, log, --json)" {
	own_vm
	# Each phase's hook lists the descriptors that a command it starts gets: ls's own are 0, 1
	# and 2, and 3 for the folder it reads.
	cat >"$OWN/hook" <<END
#!/bin/bash
echo "\$1 \$(/usr/bin/ls /proc/self/fd | /usr/bin/sort -n | /usr/bin/tr '\n' ' ')" >>"$OWN/fds"
END
	chmod +x "$OWN/hook"
	run --separate-stderr -0 vz_backup "$OWN" --script "$OWN/hook" --json 300
	run cat "$OWN/fds"
	assert_output "job-start 0 1 2 3 
backup-start 0 1 2 3 
pre-stop 0 1 2 3 
pre-restart 0 1 2 3 
post-restart 0 1 2 3 
pre-freeze 0 1 2 3 
post-thaw 0 1 2 3 
backup-end 0 1 2 3 
log-end 0 1 2 3 
job-end 0 1 2 3 "
}

@test "a hook failing in backup-start aborts that VM with backup-abort and leaves nothing" {
	own_vm
	before=$(vz_state "$OWN")
	make_hook "$OWN/hook" backup-start
	run --separate-stderr -1 vz_backup "$OWN" --script "$OWN/hook" 300
	[[ $stderr == *"ERROR: Backup of VM 300 failed - command '$OWN/hook backup-start snapshot 300' failed: exit code 3"* ]] ||
		fail "$stderr"
	run cut -d' ' -f1 "$OWN/hook.log"
	assert_output "job-start
backup-start
backup-abort
log-end
job-end"
	assert_equal "$(vz_state "$OWN")" "$before"
	assert_nothing_left
}

@test "a hook failing in job-start aborts the job with job-abort, before any VM" {
	own_vm
	make_hook "$OWN/hook" job-start
	run --separate-stderr -1 vz_backup "$OWN" --script "$OWN/hook" 300
	[[ $stderr == *"ERROR: Backup job failed - command '$OWN/hook job-start' failed: exit code 3" ]] || fail "$stderr"
	run cut -d' ' -f1 "$OWN/hook.log"
	assert_output "job-start
job-abort"
	run ls -A "$OWN/dump" "$OWN/tmp"
	assert_output "$OWN/dump:

$OWN/tmp:"
}

@test "a node-wide lock held by another job fails the job after --lockwait; a VM locked elsewhere fails alone" {
	own_vm
	hold_lock "$OWN/run/vzdump.lock"
	run --separate-stderr -1 vz_backup "$OWN" --lockwait 0 300
	kill "$holder"
	wait "$holder" || true
	assert_equal "$stderr" "INFO: trying to get global lock - waiting...
ERROR: Backup job failed - can't acquire lock '$OWN/run/vzdump.lock' - got timeout"
	# The VM's own lock, held by another job with another lock folder.
	hold_lock "$OWN/run/300.vzdump.lock"
	run --separate-stderr -1 vz_backup "$OWN" 300
	kill "$holder"
	wait "$holder" || true
	[[ $stderr == *"ERROR: Backup of VM 300 failed - VM 300 is locked (backup)"* ]] || fail "$stderr"
	assert_nothing_left
}

@test "--json prints the job summary on stdout, also with --quiet, with each VM's result" {
	rm -f "$VM"/dump/*
	run --separate-stderr -1 vz_backup "$VM" --json --quiet --ionice 8 101 100
	assert_equal "$stderr" ""
	archive=$(echo "$VM"/dump/*.vma)
	[ -f "$archive" ] || fail "no archive: $archive"
	run jq -c '.vms[] |= (.start |= type | .end |= type | .snapshot_ms |= type)' <<<"$output"
	assert_output "{\"status\":\"error\",\"error\":null,\"vms\":[{\"vmid\":100,\"name\":null,\"status\":\"ok\",\"archive\":\"$archive\",\"size\":$(stat -c %s "$archive"),\"start\":\"number\",\"end\":\"number\",\"frozen_ms\":null,\"freeze_ms\":null,\"qmp_ms\":null,\"thaw_ms\":null,\"snapshot_ms\":\"number\",\"error\":null},{\"vmid\":101,\"name\":null,\"status\":\"error\",\"archive\":null,\"size\":null,\"start\":\"number\",\"end\":\"number\",\"frozen_ms\":null,\"freeze_ms\":null,\"qmp_ms\":null,\"thaw_ms\":null,\"snapshot_ms\":\"null\",\"error\":\"VM 101 is not running (no QMP socket $VM/run/101.qmp)\"}]}"
	grep -qxE '[0-9-]+ [0-9:]+ INFO: ionice priority: 8' "${archive%.vma}.log"
	run ls -A "$VM/tmp"
	assert_output ""
}

@test "an iothread disk: twenty backups in a row, each with the data of its instant, the VM alive" {
	OWN=$BATS_TEST_TMPDIR/own
	mkdir -p "$OWN"
	random_file "$OWN/d.raw" $((4 * 1024 * 1024))
	qemu_start_bare "$OWN" -object iothread,id=io0 \
		-blockdev "driver=file,node-name=f,filename=$OWN/d.raw" \
		-blockdev driver=raw,node-name=drive-virtio0,file=f \
		-device virtio-blk-pci,drive=drive-virtio0,id=vblk0,iothread=io0
	qmp_raw "$OWN" '{"execute":"cont"}' >/dev/null
	vz_dirs "$OWN" 300
	before=$(vz_state "$OWN")
	for i in $(seq 20); do
		cp "$OWN/d.raw" "$OWN/expected.raw"
		vz_backup "$OWN" --compress zstd 300 2>"$OWN/err" || fail "backup $i: $(cat "$OWN/err")"
		archive=$(echo "$OWN"/dump/*.vma.zst)
		vma-extract "$archive" "$OWN/x"
		assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$(sha "$OWN/expected.raw")"
		rm -rf "$OWN/x" "$OWN"/dump/*
		qmp_raw "$OWN" "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"qemu-io -d /machine/peripheral/vblk0/virtio-backend \\\"write -P $i 0 1M\\\"\"}}" >/dev/null
	done
	assert_equal "$(vz_state "$OWN")" "$before"
	[ "$(sha "$OWN/d.raw")" != "$(sha "$OWN/expected.raw")" ] || fail "the last write did not happen"
}

@test "point in time on two disks (virtio-blk raw, scsi-hd qcow2 of 100 MiB + 3.5 KiB): post-thaw writes miss the archive" {
	OWN=$BATS_TEST_TMPDIR/own
	mkdir -p "$OWN"
	vz_start_two_disks "$OWN"
	qmp_raw "$OWN" '{"execute":"cont"}' >/dev/null
	vz_dirs "$OWN" 100
	sha0=$(vz_disk_sha "$OWN/d0.raw")
	sha1=$(vz_disk_sha "$OWN/d1.qcow2")
	# Writes through both devices right after the thaw, the scsi one into the odd tail.
	cat >"$OWN/hook" <<END
#!/bin/bash
[ "\$1" = post-thaw ] || exit 0
for cmd in 'qemu-io -d /machine/peripheral/virtio0/virtio-backend "write -P 0x77 5M 2M"' \
	'qemu-io -d scsi0 "write -P 0x78 104857600 3584"' 'qemu-io -d scsi0 "write -P 0x79 0 1M"'; do
	"$VZ_BIN/qmpctl" -s "$OWN/run/100.qmp" -H "\$cmd" >/dev/null || exit 1
done
END
	chmod +x "$OWN/hook"
	vz_backup "$OWN" --script "$OWN/hook" --bwlimit 65536 100 2>"$OWN/err" || fail "$(cat "$OWN/err")"
	grep -c 'wrote ' "$OWN/qemu.out" | grep -qx 3 || fail "the guest writes did not all happen: $(cat "$OWN/qemu.out")"
	[ "$(vz_disk_sha "$OWN/d0.raw")" != "$sha0" ] || fail "disk 0 unchanged"
	[ "$(vz_disk_sha "$OWN/d1.qcow2")" != "$sha1" ] || fail "disk 1 unchanged"
	vma-extract "$OWN"/dump/*.vma "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$sha0"
	assert_equal "$(sha "$OWN/x/disk-drive-scsi0.raw")" "$sha1"
}

@test "tpmstate0 is attached read-only as drive-tpmstate0-backup, stored under that name, and detached" {
	own_vm
	random_file "$OWN/tpm.raw" $((4 * 1024 * 1024 + 4096))
	printf 'virtio0: %s\ntpmstate0: %s,size=4M,version=v2.0\n' "$OWN/d.raw" "$OWN/tpm.raw" >"$OWN/conf/300.conf"
	before=$(vz_state "$OWN")
	run --separate-stderr -0 vz_backup "$OWN" 300
	assert_equal "$(vz_state "$OWN")" "$before"
	[[ $stderr == *"INFO: include disk 'tpmstate0' '$OWN/tpm.raw' 4100K"*"INFO: include disk 'virtio0' '$OWN/d.raw' 4M"*"INFO: attaching TPM drive to QEMU for backup"* ]] ||
		fail "$stderr"
	archive=$(echo "$OWN"/dump/*.vma)
	run -0 vma-extract -l "$archive"
	assert_line --index 1 "DEV: dev_id=1 size: 4198400 devname: drive-tpmstate0-backup"
	assert_line --index 2 "DEV: dev_id=2 size: 4194304 devname: drive-virtio0"
	run -0 vma-extract -c qemu-server.conf "$archive"
	assert_output "virtio0: $OWN/d.raw
tpmstate0: $OWN/tpm.raw,size=4M,version=v2.0
#qmdump#map:tpmstate0:drive-tpmstate0-backup::raw:
#qmdump#map:virtio0:drive-virtio0::raw:"
	vma-extract "$archive" "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-tpmstate0-backup.raw")" "$(sha "$OWN/tpm.raw")"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$(sha "$OWN/orig.raw")"
	rm -f "$OWN"/dump/*
	# A missing state file fails before anything is done.
	printf 'virtio0: %s\ntpmstate0: %s/none.raw\n' "$OWN/d.raw" "$OWN" >"$OWN/conf/300.conf"
	run --separate-stderr -1 vz_backup "$OWN" 300
	[[ $stderr == *"ERROR: Backup of VM 300 failed - disk 'tpmstate0': $OWN/none.raw does not exist"* ]] || fail "$stderr"
	assert_equal "$(vz_state "$OWN")" "$before"
}

@test "efidisk0 on the machine's pflash is backed up with bios: ovmf; left out without, the archive holds just the config" {
	OWN=$BATS_TEST_TMPDIR/own
	mkdir -p "$OWN"
	cp /usr/share/OVMF/OVMF_VARS_4M.fd "$OWN/vars.fd"
	qemu_start_bare "$OWN" -machine pflash0=code,pflash1=vars \
		-blockdev driver=file,node-name=codef,filename=/usr/share/OVMF/OVMF_CODE_4M.fd,read-only=on \
		-blockdev driver=raw,node-name=code,file=codef,read-only=on \
		-blockdev "driver=file,node-name=varsf,filename=$OWN/vars.fd" \
		-blockdev driver=raw,node-name=vars,file=varsf
	vz_dirs "$OWN" 400
	before=$(vz_state "$OWN")
	printf 'bios: ovmf\nefidisk0: %s,efitype=4m,size=528K\n' "$OWN/vars.fd" >"$OWN/conf/400.conf"
	# Relative folders too: QEMU (in prelaunch) opens the scratch image by path from elsewhere.
	cd "$OWN"
	run --separate-stderr -0 "$TOP/vzdump.sh" --dumpdir dump --tmpdir tmp --confdir conf --rundir run 400
	assert_equal "$(vz_state "$OWN")" "$before"
	run -0 vma-extract -c qemu-server.conf "$OWN"/dump/*.vma
	assert_output "bios: ovmf
efidisk0: $OWN/vars.fd,efitype=4m,size=528K
#qmdump#map:efidisk0:drive-efidisk0::raw:"
	vma-extract "$OWN"/dump/*.vma "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-efidisk0.raw")" "$(sha "$OWN/vars.fd")"
	rm -rf "$OWN"/dump/*
	printf 'efidisk0: %s\n' "$OWN/vars.fd" >"$OWN/conf/400.conf"
	run --separate-stderr -0 vz_backup "$OWN" 400
	[[ $stderr == *"INFO: exclude disk 'efidisk0' '$OWN/vars.fd' (efidisk but no OVMF BIOS)
INFO: backup contains no disks"* ]] || fail "$stderr"
	# As vzdump does, the archive then holds just the config.
	run -0 vma-extract -l "$OWN"/dump/*.vma
	assert_line --index 0 "CFG: size: $(($(stat -c %s "$OWN/conf/400.conf"))) name: qemu-server.conf"
	refute_output --partial "DEV:"
	assert_equal "$(vz_state "$OWN")" "$before"
}

@test "a person holding the QMP monitor for seconds during the copy does not fail the backup" {
	own_vm
	before=$(vz_state "$OWN")
	slow_backup
	# qmpctl waiting for an event that never comes keeps the one QMP connection for 4 s.
	run -3 qmpctl -s "$OWN/run/300.qmp" -t 4 -w NO_SUCH_EVENT
	wait "$bk" || fail "backup failed: $(cat "$OWN/err")"
	grep -qE '^INFO: Finished Backup of VM 300 ' "$OWN/err" || fail "$(cat "$OWN/err")"
	vma-extract "$OWN"/dump/vzdump-qemu-300-*.vma "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$(sha "$OWN/orig.raw")"
	assert_equal "$(vz_state "$OWN")" "$before"
}

@test "a job that ends while the driver judges the job list is not missed: no wait for its status change runs out" {
	# A second monitor, for the jq shim to watch the job while the driver holds the first.
	own_vm -qmp "unix:$BATS_TEST_TMPDIR/own/qmp2.sock,server=on,wait=off"
	mkdir "$OWN/shims"
	echo "virtio0: $OWN/d.raw" >"$OWN/conf/300.conf"
	# The driver's first judgement of the job list (a slow machine) lasts until the job has
	# concluded; the moment is written down.
	cat >"$OWN/shims/jq" <<-END
	#!/bin/bash
	if [[ "\$*" == *jobs_verdict* ]] && mkdir "$OWN/judged" 2>/dev/null; then
		for ((i = 0; i < 600; i++)); do
			$VZ_BIN/qmpctl -s "$OWN/qmp2.sock" query-jobs | grep -q '"status": *"concluded"' && break
			sleep 0.05
		done
		echo "\${EPOCHREALTIME/./}" >"$OWN/concluded"
	fi
	exec $(command -v jq) "\$@"
	END
	# Every qmpctl that waits for JOB_STATUS_CHANGE: when it started, and how it ended (its
	# exit status, or killed).
	cat >"$OWN/shims/qmpctl" <<-END
	#!/bin/bash
	[[ " \$* " == *" JOB_STATUS_CHANGE "* ]] || exec $VZ_BIN/qmpctl "\$@"
	start=\${EPOCHREALTIME/./}
	$VZ_BIN/qmpctl "\$@" &
	child=\$!
	trap 'kill \$child 2>/dev/null; echo "\$start killed" >>"$OWN/waits"; exit 143' TERM
	wait \$child
	rc=\$?
	echo "\$start \$rc" >>"$OWN/waits"
	exit \$rc
	END
	chmod +x "$OWN/shims/jq" "$OWN/shims/qmpctl"
	PATH=$OWN/shims:$PATH run -0 --separate-stderr "$TOP/vzdump.sh" --dumpdir "$OWN/dump" \
		--tmpdir "$OWN/tmp" --confdir "$OWN/conf" --rundir "$OWN/run" --bwlimit 8192 300
	[ -s "$OWN/concluded" ] || fail "the job never concluded while being judged"
	# Waits begun after the job had concluded wait for nothing: the driver must stop them
	# at once (killed), never wait them out (a timeout, or a poll that ran out).
	run awk -v c="$(cat "$OWN/concluded")" '$1 > c && $2 != "killed"' "$OWN/waits"
	assert_output ''
	vma-extract "$OWN"/dump/vzdump-qemu-300-*.vma "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$(sha "$OWN/d.raw")"
}

@test "a disk over 2 GiB: the summary adds sizes beyond 32 bits and the archive restores" {
	OWN=$BATS_TEST_TMPDIR/own
	mkdir -p "$OWN"
	# 3 GiB + 64 KiB, sparse, 1 MiB of data in its last part: the log's sizes need 64-bit sums.
	truncate -s $((3 * 1024 * 1024 * 1024 + 65536)) "$OWN/big.raw"
	random_file "$OWN/r1m" $((1024 * 1024))
	dd if="$OWN/r1m" of="$OWN/big.raw" bs=1M seek=3000 conv=notrunc status=none
	qemu_start_bare "$OWN" -blockdev "driver=file,node-name=f,filename=$OWN/big.raw" \
		-blockdev driver=raw,node-name=drive-virtio0,file=f \
		-device virtio-blk-pci,drive=drive-virtio0,id=virtio0
	vz_dirs "$OWN" 300
	run --separate-stderr -0 vz_backup "$OWN" 300
	[[ $stderr == *"INFO: include disk 'virtio0' '$OWN/big.raw' 3145792K"* ]] || fail "$stderr"
	[[ $stderr == *"INFO: backup is sparse: 3.00 GiB (99%) total zero data"* ]] || fail "$stderr"
	[[ $stderr =~ INFO:\ transferred\ 3\.00\ GiB\ in\ ([0-9]+\ seconds\ \(|\<1\ seconds) ]] || fail "$stderr"
	vma-extract "$OWN"/dump/*.vma "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$(sha "$OWN/big.raw")"
}

@test "-h as an option's value is no help request: vzdump.conf is still read" {
	W=$BATS_TEST_TMPDIR/w
	mkdir -p "$W/alt" "$W/run" "$W/tmp"
	printf 'dumpdir: %s\n' "$W/alt" >"$W/vzdump.conf"
	VZDUMP_CONF=$W/vzdump.conf run --separate-stderr -1 "$TOP/vzdump.sh" --notes-template 'nightly -h run' \
		--tmpdir "$W/tmp" --rundir "$W/run" --confdir "$W" 999
	[[ $stderr == *"ERROR: Backup of VM 999 failed - VM 999 is not running"* ]] || fail "$stderr"
	run ls "$W/alt"
	assert_output --regexp '^vzdump-qemu-999-[0-9_-]{19}\.log$'
	VZDUMP_CONF=$W/vzdump.conf run -0 "$TOP/vzdump.sh" --notes-template x -h
	assert_line --index 0 --partial "vzdump.sh [--dumpdir dir]"
}

@test "a log reader that goes away (stderr to a closed pipe) does not stop the backup half-way" {
	own_vm
	before=$(vz_state "$OWN")
	run bash -c '"$1/vzdump.sh" --dumpdir "$2/dump" --tmpdir "$2/tmp" --confdir "$2/conf" \
		--rundir "$2/run" --mode suspend 300 2>&1 | head -n 2' _ "$TOP" "$OWN"
	assert_line --index 0 --partial "INFO: starting new backup job"
	# The driver goes on writing into the closed pipe: it must not die of SIGPIPE.
	for ((i = 0; i < 300; i++)); do
		pgrep -f -- "--rundir $OWN/run" >/dev/null || break
		sleep 0.1
	done
	assert_equal "$(vz_state "$OWN")" "$before"
	vma-extract "$OWN"/dump/vzdump-qemu-300-*.vma "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$(sha "$OWN/orig.raw")"
	run ls -A "$OWN/tmp"
	assert_output ""
	run ls -A "$VZDUMP_STATEDIR"
	assert_output ""
}

@test "SIGTERM while waiting for the node lock ends the job at once" {
	mkdir -p "$BATS_TEST_TMPDIR/run"
	flock "$BATS_TEST_TMPDIR/run/vzdump.lock" sleep 60 3>&- &
	holder=$!
	"$TOP/vzdump.sh" --rundir "$BATS_TEST_TMPDIR/run" --lockwait 1 --tmpdir "$BATS_TEST_TMPDIR" \
		--dumpdir "$BATS_TEST_TMPDIR" 300 \
		2>"$BATS_TEST_TMPDIR/err" 3>&- &
	bk=$!
	for ((i = 0; i < 100; i++)); do
		grep -q 'trying to get global lock' "$BATS_TEST_TMPDIR/err" && break
		sleep 0.1
	done
	kill -TERM "$bk"
	start=$SECONDS
	rc=0
	wait "$bk" || rc=$?
	kill "$holder"
	assert_equal "$rc" 1
	((SECONDS - start <= 3)) || fail "took $((SECONDS - start)) s"
	run cat "$BATS_TEST_TMPDIR/err"
	assert_line "ERROR: Backup job failed - interrupted by signal"
}

@test "a second SIGTERM during the cleanup does not cut it short: the suspended VM is resumed" {
	own_vm
	before=$(vz_state "$OWN")
	cat >"$OWN/hook" <<END
#!/bin/bash
case \$1 in
pre-freeze) touch "$OWN/paused"; sleep 4 ;;
pre-restart) touch "$OWN/restarting"; sleep 3 ;;
esac
exit 0
END
	chmod +x "$OWN/hook"
	"$TOP/vzdump.sh" --dumpdir "$OWN/dump" --tmpdir "$OWN/tmp" --confdir "$OWN/conf" \
		--rundir "$OWN/run" --mode suspend --script "$OWN/hook" 300 2>"$OWN/err" 3>&- &
	bk=$!
	for ((i = 0; i < 200; i++)); do [ -e "$OWN/paused" ] && break; sleep 0.05; done
	[ -e "$OWN/paused" ] || fail "no pre-freeze: $(cat "$OWN/err")"
	kill -TERM "$bk"
	for ((i = 0; i < 200; i++)); do [ -e "$OWN/restarting" ] && break; sleep 0.05; done
	[ -e "$OWN/restarting" ] || fail "no pre-restart: $(cat "$OWN/err")"
	kill -TERM "$bk"
	rc=0
	wait "$bk" || rc=$?
	assert_equal "$rc" 1
	assert_equal "$(vz_state "$OWN")" "$before"
	grep -qF 'ERROR: Backup of VM 300 failed - interrupted by signal' "$OWN/err" || fail "$(cat "$OWN/err")"
	run ls -A "$OWN/tmp"
	assert_output ""
	run ls -A "$VZDUMP_STATEDIR"
	assert_output ""
}

@test "a hook given by a relative path runs (it gets no PATH to be looked up in)" {
	own_vm
	printf '#!/bin/sh\necho "hook $1" >>"%s/phases"\n' "$OWN" >"$OWN/hook"
	chmod +x "$OWN/hook"
	cd "$OWN"
	run --separate-stderr -0 "$TOP/vzdump.sh" --dumpdir dump --tmpdir tmp --confdir conf --rundir run \
		--script hook 300
	run head -n 2 "$OWN/phases"
	assert_output "hook job-start
hook backup-start"
}

@test "recovery after a SIGKILL leaves a VM restarted since alone: it stays paused and keeps its fdsets" {
	own_vm
	printf '#!/bin/sh\n[ "$1" = pre-freeze ] && touch "%s/paused" && sleep 60\nexit 0\n' "$OWN" >"$OWN/hook"
	chmod +x "$OWN/hook"
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$OWN/pgid" "$TOP/vzdump.sh" --dumpdir "$OWN/dump" \
		--tmpdir "$OWN/tmp" --confdir "$OWN/conf" --rundir "$OWN/run" --mode suspend \
		--script "$OWN/hook" 300 2>"$OWN/err" 3>&- &
	for ((i = 0; i < 300; i++)); do [ -e "$OWN/paused" ] && break; sleep 0.05; done
	[ -e "$OWN/paused" ] || fail "$(cat "$OWN/err")"
	kill -KILL -- "-$(cat "$OWN/pgid")"
	[ -s "$VZDUMP_STATEDIR/300.state" ] || fail "no state file"
	# The admin restarts the VM, paused, with an fdset of their own as number 1.
	qemu_stop "$OWN"
	qemu_start_bare "$OWN" -add-fd fd=5,set=1,opaque=admin \
		-blockdev "driver=file,node-name=f,filename=$OWN/d.raw" \
		-blockdev driver=raw,node-name=drive-virtio0,file=f \
		-device virtio-blk-pci,drive=drive-virtio0,id=vblk0 5<"$OWN/orig.raw"
	before=$(vz_state "$OWN")
	[[ $before == *'"opaque":"admin"'*'"prelaunch"' ]] || fail "$before"
	run -0 "$TOP/vzdump.sh" --cleanup --rundir "$OWN/run" --tmpdir "$OWN/tmp" --dumpdir "$OWN/dump" 300
	assert_line "INFO: VM 300 runs in another QEMU now: its state and block graph are left alone"
	assert_equal "$(vz_state "$OWN")" "$before"
	[ ! -e "$VZDUMP_STATEDIR/300.state" ] || fail "the state file is left"
}

@test "after a SIGKILL of the driver alone, its orphaned writer holds no lock: --cleanup and a new backup work" {
	own_vm
	before=$(vz_state "$OWN")
	slow_backup
	writer=$(pgrep -f -- "--listen $OWN/tmp/vzdumptmp")
	[ -n "$writer" ] || fail "no writer"
	owner=$(awk '$1 == "owner" { print $2 }' "$VZDUMP_STATEDIR/300.state")
	kill -KILL "$bk" "$owner"
	wait "$bk" 2>/dev/null || true
	kill -0 "$writer" || fail "the writer is gone already: nothing to test"
	run -0 "$TOP/vzdump.sh" --cleanup --rundir "$OWN/run" --tmpdir "$OWN/tmp" --dumpdir "$OWN/dump" 300
	assert_line "INFO: stopping vma-create (pid $writer) left running"
	assert_equal "$(vz_state "$OWN")" "$before"
	run -0 vz_backup "$OWN" --lockwait 0 300
	assert_equal "$(vz_state "$OWN")" "$before"
}

@test "with no state file, --cleanup still finds our nodes and jobs by their names and restores the graph" {
	own_vm
	before=$(vz_state "$OWN")
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$OWN/pgid" "$TOP/vzdump.sh" --dumpdir "$OWN/dump" \
		--tmpdir "$OWN/tmp" --confdir "$OWN/conf" --rundir "$OWN/run" --bwlimit 256 300 2>"$OWN/err" 3>&- &
	for ((i = 0; i < 300; i++)); do grep -q 'starting backup via QMP' "$OWN/err" && break; sleep 0.05; done
	sleep 0.5
	kill -KILL -- "-$(cat "$OWN/pgid")"
	mid=$(vz_state "$OWN")
	[[ $mid == *vz-cbw-virtio0*vz-fl-virtio0*vz-tgt-virtio0*'"fdset-id":'* ]] || fail "$mid"
	rm -f "$VZDUMP_STATEDIR/300.state"
	run -0 "$TOP/vzdump.sh" --cleanup --rundir "$OWN/run" --tmpdir "$OWN/tmp" --dumpdir "$OWN/dump" 300
	assert_output "INFO: found leftovers of an earlier backup in QEMU - removing them"
	assert_equal "$(vz_state "$OWN")" "$before"
}

@test "an idle extra client on the writer's socket does not hold the job: the backup ends, the archive restores" {
	own_vm
	# In pre-freeze the writer listens and QEMU has not connected yet: a client connects to its
	# socket first, and then says nothing.
	cat >"$OWN/hook" <<END
#!/bin/bash
[ "\$1" = pre-freeze ] || exit 0
sock=\$(/usr/bin/ls "$OWN"/tmp/vzdumptmp.*/nbd.sock)
/usr/bin/setsid /usr/bin/python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(120)' "\$sock" \
	</dev/null >/dev/null 2>&1 &
echo \$! >"$OWN/idle.pid"
/usr/bin/sleep 0.5
END
	chmod +x "$OWN/hook"
	run --separate-stderr timeout 100 "$TOP/vzdump.sh" --dumpdir "$OWN/dump" --tmpdir "$OWN/tmp" \
		--confdir "$OWN/conf" --rundir "$OWN/run" --script "$OWN/hook" 300
	kill "$(cat "$OWN/idle.pid")" 2>/dev/null || true
	[ "$status" = 0 ] || fail "exit $status: $stderr"
	archive=$(ls "$OWN"/dump/vzdump-qemu-300-*.vma)
	run -0 vma-extract -t "$archive"
	vma-extract "$archive" "$OWN/x"
	assert_equal "$(sha "$OWN"/x/disk-drive-virtio0.raw)" "$(sha "$OWN/orig.raw")"
}

@test "a writer that does not end once the copy is over is stopped after VZDUMP_WRITER_WAIT: the backup fails saying so" {
	own_vm
	# A vma-create that lingers after the real one has finished.
	mkdir "$OWN/wrap"
	cat >"$OWN/wrap/vma-create" <<END
#!/bin/bash
trap 'kill \$sleeper 2>/dev/null; exit 143' TERM
"$VZ_BIN/vma-create" "\$@" || exit
sleep 600 &
sleeper=\$!
wait \$sleeper
END
	chmod +x "$OWN/wrap/vma-create"
	run --separate-stderr -1 env PATH="$OWN/wrap:$PATH" VZDUMP_WRITER_WAIT=2 timeout 100 "$TOP/vzdump.sh" \
		--dumpdir "$OWN/dump" --tmpdir "$OWN/tmp" --confdir "$OWN/conf" --rundir "$OWN/run" 300
	grep -qx "ERROR: Backup of VM 300 failed - vma-create did not finish the archive within 2 s after the copy ended - stopped it" <<<"$stderr" ||
		fail "$stderr"
	run -0 ls -A "$OWN/dump" "$OWN/tmp"
	assert_output --regexp "^$OWN/dump:
vzdump-qemu-300-[0-9_-]+\.log

$OWN/tmp:\$"
	# The locks went with the job: the next backup works.
	run --separate-stderr -0 vz_backup "$OWN" 300
}
