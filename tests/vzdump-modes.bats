#!/usr/bin/env bats
# shellcheck disable=SC2154,SC2016,SC2030,SC2031 # SHA0/SHA1 are per test; bats sets $stderr; bash -c programs are single-quoted
# vzdump.sh's backup modes (snapshot, suspend, stop) and VMs that are not running, against
# real QEMU (bare, no guest OS). A bare QEMU ignores system_powerdown; where a test needs a
# guest that shuts down, a helper does what a guest OS does on the ACPI power button: it writes
# S5 to the PM1a control register (port 0x604 on q35 once SeaBIOS has set it up).

setup() {
	load lib/common
	load lib/vzdump
}

teardown() {
	[ -z "${OTHER:-}" ] || qemu_stop "$OTHER"
	[ -z "${OWN:-}" ] || qemu_stop "$OWN"
}

# VM 300 in $OWN: a 4 MiB raw disk of random data on virtio-blk (node drive-virtio0, device
# vblk0) and a 3 MiB + 512 B qcow2 disk on scsi-hd (node drive-scsi0, device scsi0), a config
# naming them (and a CD-ROM), the disks' sha256 in $SHA0 and $SHA1. QEMU is started with the
# extra arguments and left in prelaunch; with --offline it is not started at all.
mode_vm() { # [--offline | QEMU-ARGS...]
	OWN=$BATS_TEST_TMPDIR/own
	mkdir -p "$OWN"
	random_file "$OWN/d0.raw" $((4 * 1024 * 1024))
	qemu-img create -q -f qcow2 "$OWN/d1.qcow2" $((3 * 1024 * 1024 + 512))
	qemu-io -f qcow2 -c "write -P 0x33 1M 1M" -c "write -P 0x44 3M 512" "$OWN/d1.qcow2" >/dev/null
	vz_dirs "$OWN" 300
	cat >"$OWN/conf/300.conf" <<END
name: modes
scsi0: $OWN/d1.qcow2,size=3073K
virtio0: $OWN/d0.raw,size=4M
ide2: none,media=cdrom
END
	SHA0=$(vz_disk_sha "$OWN/d0.raw")
	SHA1=$(vz_disk_sha "$OWN/d1.qcow2")
	[ "${1:-}" != --offline ] || return 0
	qemu_start_bare "$OWN" "$@" \
		-blockdev "driver=file,node-name=f0,filename=$OWN/d0.raw" \
		-blockdev driver=raw,node-name=drive-virtio0,file=f0 \
		-device virtio-blk-pci,drive=drive-virtio0,id=vblk0 \
		-device virtio-scsi-pci,id=vscsi \
		-blockdev "driver=file,node-name=f1,filename=$OWN/d1.qcow2" \
		-blockdev driver=qcow2,node-name=drive-scsi0,file=f1 \
		-device scsi-hd,drive=drive-scsi0,id=scsi0,bus=vscsi.0
}

status_of() { # WORKDIR
	qmp_raw "$1" '{"execute":"query-status"}' | jq -r .return.status
}

# Continues VM 300 and waits until SeaBIOS has set up the ACPI PM registers, so that the
# power-off helper works.
run_vm_acpi() {
	qmp_raw "$OWN" '{"execute":"cont"}' >/dev/null
	for ((i = 0; i < 300; i++)); do
		qmp_raw "$OWN" '{"execute":"human-monitor-command","arguments":{"command-line":"i /w 0x604"}}' |
			grep -q 'ffffffff' || return 0
		sleep 0.1
	done
	fail "SeaBIOS did not set up the ACPI PM registers"
}

# A hook that appends "phase mode vmid QEMU-STATUS" (or "gone") for each VM phase to
# $OWN/hook.log. In pre-stop of stop mode it starts the power-off helper (the guest reacting
# to system_powerdown) unless $OWN/no-poweroff exists; in post-thaw it writes through both
# devices (these writes must not be in the archive). It fails in the phase named in
# $OWN/fail-in, if any.
make_hook() {
	cat >"$OWN/poweroff" <<END
#!/bin/bash
# What a guest OS does on the ACPI power button, a moment after it was pressed.
sleep 1
"$VZ_BIN/qmpctl" -s "$OWN/qmp.sock" -t 20 -H 'o /w 0x604 0x2000' >/dev/null
END
	cat >"$OWN/hook" <<END
#!/bin/bash
[ \$# -gt 1 ] || exit 0
st=
if [ -S "$OWN/run/300.qmp" ]; then
	st=\$("$VZ_BIN/qmpctl" -s "$OWN/run/300.qmp" -t 2 query-status 2>/dev/null | /usr/bin/jq -r .status) || st=
fi
echo "\$1 \$2 \$3 \${st:-gone}" >>"$OWN/hook.log"
[ "\$1" != "\$(cat "$OWN/fail-in" 2>/dev/null)" ] || exit 3
if [ "\$1" = pre-stop ] && [ "\$2" = stop ] && [ ! -e "$OWN/no-poweroff" ]; then
	/usr/bin/setsid "$OWN/poweroff" </dev/null >/dev/null 2>&1 &
fi
if [ "\$1" = post-thaw ]; then
	for cmd in 'qemu-io -d /machine/peripheral/vblk0/virtio-backend "write -P 0x55 0 2M"' \\
		'qemu-io -d scsi0 "write -P 0x56 3M 512"'; do
		"$VZ_BIN/qmpctl" -s "$OWN/run/300.qmp" -H "\$cmd" >/dev/null || exit 1
	done
fi
exit 0
END
	chmod +x "$OWN/hook" "$OWN/poweroff"
}

# The archive of VM 300 holds both disks exactly as they were when mode_vm made them.
assert_archive_has_the_disks() {
	local archive
	archive=$(echo "$OWN"/dump/vzdump-qemu-300-*.vma)
	[ -f "$archive" ] || fail "no archive: $(ls "$OWN/dump")"
	rm -rf "$OWN/x"
	vma-extract "$archive" "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$SHA0"
	assert_equal "$(sha "$OWN/x/disk-drive-scsi0.raw")" "$SHA1"
	run -0 vma-extract -c qemu-server.conf "$archive"
	assert_output "$(cat "$OWN/conf/300.conf")
#qmdump#map:scsi0:drive-scsi0::qcow2:
#qmdump#map:virtio0:drive-virtio0::raw:"
}

# Nothing but the log in the dump folder, nothing in tmp, no qemu-nbd of ours left.
assert_nothing_left() {
	run ls -A "$OWN/tmp"
	assert_output ""
	run ls "$OWN/dump"
	assert_output --regexp '^vzdump-qemu-300-[0-9_-]{19}\.log$'
	[ -z "$(pgrep -f -- "-k $OWN/tmp/")" ] || fail "a qemu-nbd is still running"
}

# The log lines that do not depend on timing or sizes.
stable_lines() { # FILE
	grep -vE '^INFO: +[0-9]+% |^INFO: (Backup started at|Backup finished at|backup is sparse|transferred|archive file size|snapshot taken in|Finished Backup of VM)' "$1"
}

@test "--mode and --stopwait reject bad values as usage errors" {
	for args in "--mode fast 100" "--mode" "--stopwait x 100" "--stopwait -1 100"; do
		# shellcheck disable=SC2086 # word splitting wanted
		run --separate-stderr -2 "$TOP/vzdump.sh" $args
		assert_output ""
		[[ $stderr == "vzdump.sh: "*"usage: vzdump.sh [--dumpdir dir]"* ]] || fail "args '$args': $stderr"
	done
	run --separate-stderr -2 "$TOP/vzdump.sh" --mode=fast 100
	[[ $stderr == "vzdump.sh: --mode must be snapshot, suspend or stop, not 'fast'"* ]] || fail "$stderr"
}

@test "suspend mode: paused for the snapshot only, no freeze, resumed at once, hooks in vzdump's order, data of the instant" {
	load lib/guest
	mode_vm
	qmp_raw "$OWN" '{"execute":"cont"}' >/dev/null
	make_hook
	# An agent that answers: a paused guest's could not, so it is not even asked.
	echo 'agent: 1' >>"$OWN/conf/300.conf"
	qga_double_start "$OWN/run/300.qga"
	before=$(vz_state "$OWN")
	vz_backup "$OWN" --mode suspend --script "$OWN/hook" 300 2>"$OWN/err" || fail "$(cat "$OWN/err")"
	qga_double_stop "$OWN/run/300.qga"
	run grep -c fsfreeze "$OWN/run/300.qga.log"
	assert_output 0
	assert_equal "$(vz_state "$OWN")" "$before"
	assert_equal "$(status_of "$OWN")" running
	# The guest was paused from pre-stop to the snapshot, running when the copy ran.
	run cat "$OWN/hook.log"
	assert_output "backup-start suspend 300 running
pre-stop suspend 300 running
pre-freeze suspend 300 paused
post-thaw suspend 300 running
backup-end suspend 300 running
pre-restart suspend 300 running
post-restart suspend 300 running
log-end suspend 300 running"
	run stable_lines "$OWN/err"
	assert_output "INFO: starting new backup job: vzdump.sh --dumpdir $OWN/dump --tmpdir $OWN/tmp --confdir $OWN/conf --rundir $OWN/run --mode suspend --script $OWN/hook 300
INFO: Starting Backup of VM 300 (qemu)
INFO: status = running
INFO: VM Name: modes
INFO: include disk 'scsi0' '$OWN/d1.qcow2' 3146240
INFO: include disk 'virtio0' '$OWN/d0.raw' 4M
INFO: backup mode: suspend
INFO: ionice priority: 7
INFO: suspending guest
INFO: creating vzdump archive '$(echo "$OWN"/dump/*.vma)'
INFO: skipping guest filesystem freeze - the guest is paused (suspend mode, backup is not frozen)
$(grep '^INFO: resuming VM again after [0-9]* seconds$' "$OWN/err")
INFO: starting backup via QMP command
INFO: Backup job finished successfully"
	# The post-thaw writes reached the disks, and the archive has the data of before them.
	[ "$(vz_disk_sha "$OWN/d0.raw")" != "$SHA0" ] || fail "the guest write did not happen"
	[ "$(vz_disk_sha "$OWN/d1.qcow2")" != "$SHA1" ] || fail "the guest write did not happen"
	assert_archive_has_the_disks
}

@test "a paused VM stays paused and one in prelaunch stays so, in every mode" {
	mode_vm
	make_hook
	for state in prelaunch paused; do
		if [ "$state" = paused ]; then
			qmp_raw "$OWN" '{"execute":"cont"}' '{"execute":"stop"}' >/dev/null
		fi
		before=$(vz_state "$OWN")
		[[ $before == *"\"$state\"" ]] || fail "$before"
		# (snapshot mode in prelaunch is in vzdump.bats)
		modes=(suspend stop)
		[ "$state" = prelaunch ] || modes+=(snapshot)
		for mode in "${modes[@]}"; do
			rm -f "$OWN"/dump/* "$OWN/hook.log"
			# What the disks hold now (the hook of the last round wrote to them).
			SHA0=$(vz_disk_sha "$OWN/d0.raw")
			SHA1=$(vz_disk_sha "$OWN/d1.qcow2")
			vz_backup "$OWN" --mode "$mode" --script "$OWN/hook" 300 2>"$OWN/err" ||
				fail "$state $mode: $(cat "$OWN/err")"
			assert_equal "$(vz_state "$OWN")" "$before"
			! grep -q 'resum' "$OWN/err" || fail "$state $mode: $(grep resum "$OWN/err")"
			grep -qxF "INFO: backup mode: $mode" "$OWN/err"
			run cut -d' ' -f1,2,4 "$OWN/hook.log"
			if [ "$mode" = stop ]; then
				# No shutdown of a guest that does not run, so no pre-stop and no restart.
				assert_output "backup-start stop $state
pre-freeze stop $state
post-thaw stop $state
backup-end stop $state
log-end stop $state"
				grep -qxF "INFO: guest is not running (QEMU status '$state'): no shutdown, backing it up as it is, and it stays so" "$OWN/err"
			elif [ "$mode" = suspend ]; then
				assert_output "backup-start suspend $state
pre-stop suspend $state
pre-freeze suspend $state
post-thaw suspend $state
backup-end suspend $state
pre-restart suspend $state
post-restart suspend $state
log-end suspend $state"
			else
				assert_output "backup-start snapshot $state
pre-stop snapshot $state
pre-restart snapshot $state
post-restart snapshot $state
pre-freeze snapshot $state
post-thaw snapshot $state
backup-end snapshot $state
log-end snapshot $state"
			fi
			assert_archive_has_the_disks
		done
	done
}

@test "stop mode with -no-shutdown: clean shutdown, snapshot, system_reset and cont; the VM runs again; data of the shutdown" {
	mode_vm -no-shutdown
	run_vm_acpi
	make_hook
	before=$(vz_state "$OWN")
	vz_backup "$OWN" --mode stop --script "$OWN/hook" 300 2>"$OWN/err" || fail "$(cat "$OWN/err")"
	assert_equal "$(vz_state "$OWN")" "$before"
	assert_equal "$(status_of "$OWN")" running
	run cat "$OWN/hook.log"
	assert_output "backup-start stop 300 running
pre-stop stop 300 running
pre-freeze stop 300 shutdown
pre-restart stop 300 shutdown
post-restart stop 300 running
post-thaw stop 300 running
backup-end stop 300 running
log-end stop 300 running"
	run stable_lines "$OWN/err"
	assert_output "INFO: starting new backup job: vzdump.sh --dumpdir $OWN/dump --tmpdir $OWN/tmp --confdir $OWN/conf --rundir $OWN/run --mode stop --script $OWN/hook 300
INFO: Starting Backup of VM 300 (qemu)
INFO: status = running
INFO: VM Name: modes
INFO: include disk 'scsi0' '$OWN/d1.qcow2' 3146240
INFO: include disk 'virtio0' '$OWN/d0.raw' 4M
INFO: backup mode: stop
INFO: ionice priority: 7
INFO: stopping virtual guest
INFO: creating vzdump archive '$(echo "$OWN"/dump/*.vma)'
INFO: restarting vm
$(grep '^INFO: guest is online again after [0-9]* seconds$' "$OWN/err")
INFO: starting backup via QMP command
INFO: Backup job finished successfully"
	# The writes after the restart are on the disks, not in the archive.
	[ "$(vz_disk_sha "$OWN/d0.raw")" != "$SHA0" ] || fail "the guest write did not happen"
	assert_archive_has_the_disks
}

@test "stop mode, QEMU exits on shutdown: the images are read offline, the VM is left stopped and said so, restart hooks run" {
	mode_vm
	run_vm_acpi
	make_hook
	run --separate-stderr -0 vz_backup "$OWN" --mode stop --script "$OWN/hook" 300
	[ -z "$(_qemu_pid "$OWN")" ] || fail "QEMU still runs"
	run cat "$OWN/hook.log"
	assert_output "backup-start stop 300 running
pre-stop stop 300 running
backup-end stop 300 gone
pre-restart stop 300 gone
post-restart stop 300 gone
log-end stop 300 gone"
	printf '%s\n' "$stderr" >"$OWN/err"
	run stable_lines "$OWN/err"
	assert_output "INFO: starting new backup job: vzdump.sh --dumpdir $OWN/dump --tmpdir $OWN/tmp --confdir $OWN/conf --rundir $OWN/run --mode stop --script $OWN/hook 300
INFO: Starting Backup of VM 300 (qemu)
INFO: status = running
INFO: VM Name: modes
INFO: include disk 'scsi0' '$OWN/d1.qcow2' 3146240
INFO: include disk 'virtio0' '$OWN/d0.raw' 4M
INFO: backup mode: stop
INFO: ionice priority: 7
INFO: stopping virtual guest
INFO: QEMU exited on shutdown: reading the disk images offline
INFO: creating vzdump archive '$(echo "$OWN"/dump/*.vma)'
INFO: VM 300 is left stopped: QEMU exited on shutdown and vzdump.sh cannot start it (it does not know its command line); start it from the post-restart hook, or run QEMU with -no-shutdown
INFO: Backup job finished successfully"
	grep -qE '^INFO: 100% \(7\.0 MiB of 7\.0 MiB\) in ' "$OWN/err" || fail "no progress line: $(cat "$OWN/err")"
	grep -qE '^INFO: transferred 7\.00 MiB in ' "$OWN/err"
	assert_archive_has_the_disks
	run ls -A "$OWN/tmp"
	assert_output ""
}

@test "stop mode on a guest that ignores the power button fails after --stopwait without forcing it; the VM keeps running" {
	mode_vm
	qmp_raw "$OWN" '{"execute":"cont"}' >/dev/null
	make_hook
	touch "$OWN/no-poweroff"
	before=$(vz_state "$OWN")
	start=$(date +%s)
	VZDUMP_STOPWAIT_SECONDS=2 run --separate-stderr -1 vz_backup "$OWN" --mode stop --script "$OWN/hook" 300
	[ $(($(date +%s) - start)) -lt 30 ] || fail "took too long"
	[[ $stderr == *"INFO: stopping virtual guest
ERROR: Backup of VM 300 failed - VM 300 did not shut down within 2 seconds (--stopwait) - not forcing it off, the VM is left as it is"* ]] ||
		fail "$stderr"
	assert_equal "$(vz_state "$OWN")" "$before"
	assert_equal "$(status_of "$OWN")" running
	run cat "$OWN/hook.log"
	assert_output "backup-start stop 300 running
pre-stop stop 300 running
backup-abort stop 300 running
log-end stop 300 running"
	assert_nothing_left
}

@test "a stopped VM is backed up offline from its config (raw, qcow2, tpmstate0) in stop mode, byte for byte" {
	mode_vm --offline
	random_file "$OWN/tpm.raw" $((16 * 1024 + 512))
	cat >>"$OWN/conf/300.conf" <<END
tpmstate0: $OWN/tpm.raw,size=16K,version=v2.0
sata1: /nowhere.raw,backup=0
unused0: $OWN/old.raw
END
	make_hook
	run --separate-stderr -0 vz_backup "$OWN" --script "$OWN/hook" 300
	printf '%s\n' "$stderr" >"$OWN/err"
	archive=$(echo "$OWN"/dump/*.vma)
	run stable_lines "$OWN/err"
	assert_output "INFO: starting new backup job: vzdump.sh --dumpdir $OWN/dump --tmpdir $OWN/tmp --confdir $OWN/conf --rundir $OWN/run --script $OWN/hook 300
INFO: Starting Backup of VM 300 (qemu)
INFO: status = stopped
INFO: VM Name: modes
INFO: exclude disk 'sata1' '/nowhere.raw' (backup=no)
INFO: include disk 'scsi0' '$OWN/d1.qcow2' 3146240
INFO: include disk 'tpmstate0' '$OWN/tpm.raw' 16896
INFO: include disk 'virtio0' '$OWN/d0.raw' 4M
INFO: VM is not running: snapshot mode is not possible, using stop mode
INFO: backup mode: stop
INFO: ionice priority: 7
INFO: skip unused drive '$OWN/old.raw' (not included into backup)
INFO: creating vzdump archive '$archive'
INFO: Backup job finished successfully"
	grep -qE '^INFO: 100% \(7\.0 MiB of 7\.0 MiB\) in ' "$OWN/err" || fail "no progress line: $(cat "$OWN/err")"
	# No pre-stop and no restart for a VM that was not running.
	run cat "$OWN/hook.log"
	assert_output "backup-start stop 300 gone
backup-end stop 300 gone
log-end stop 300 gone"
	vma-extract "$archive" "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$SHA0"
	assert_equal "$(sha "$OWN/x/disk-drive-scsi0.raw")" "$SHA1"
	assert_equal "$(sha "$OWN/x/disk-drive-tpmstate0-backup.raw")" "$(sha "$OWN/tpm.raw")"
	run -0 vma-extract -c qemu-server.conf "$archive"
	assert_output "name: modes
scsi0: $OWN/d1.qcow2,size=3073K
virtio0: $OWN/d0.raw,size=4M
ide2: none,media=cdrom
tpmstate0: $OWN/tpm.raw,size=16K,version=v2.0
sata1: /nowhere.raw,backup=0
#qmdump#map:scsi0:drive-scsi0::qcow2:
#qmdump#map:tpmstate0:drive-tpmstate0-backup::raw:
#qmdump#map:virtio0:drive-virtio0::raw:"
	run ls -A "$OWN/tmp"
	assert_output ""
	[ -z "$(pgrep -f -- "-k $OWN/tmp/")" ] || fail "a qemu-nbd is still running"
}

@test "a stale QMP socket means stopped too; zstd and --bwlimit apply to the offline copy" {
	mode_vm --offline
	rm -f "$OWN/run/300.qmp"
	python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$OWN/run/300.qmp"
	run --separate-stderr -0 vz_backup "$OWN" --mode suspend --compress zstd --bwlimit 102400 300
	[[ $stderr == *"INFO: status = stopped"*"INFO: VM is not running: suspend mode is not possible, using stop mode
INFO: backup mode: stop
INFO: bandwidth limit: 102400 KiB/s"* ]] || fail "$stderr"
	archive=$(echo "$OWN"/dump/*.vma.zst)
	vma-extract "$archive" "$OWN/x"
	assert_equal "$(sha "$OWN/x/disk-drive-virtio0.raw")" "$SHA0"
	assert_equal "$(sha "$OWN/x/disk-drive-scsi0.raw")" "$SHA1"
}

@test "a VM that is not running and has no config fails, saying why" {
	mode_vm --offline
	rm -f "$OWN/conf/300.conf"
	run --separate-stderr -1 vz_backup "$OWN" 300
	[[ $stderr == *"INFO: no config $OWN/conf/300.conf: a VM that is not running is backed up from its config
ERROR: Backup of VM 300 failed - VM 300 is not running (no QMP socket $OWN/run/300.qmp)"* ]] || fail "$stderr"
	assert_nothing_left
}

@test "an image in use by a QEMU whose socket is not in the run folder is refused before anything is read" {
	mode_vm --offline
	make_hook
	OTHER=$BATS_TEST_TMPDIR/other
	mkdir -p "$OTHER"
	for disk in d0.raw d1.qcow2; do
		case $disk in
		*.raw) fmt=raw key=virtio0 ;;
		*) fmt=qcow2 key=scsi0 ;;
		esac
		qemu_start_bare "$OTHER" -blockdev "driver=file,node-name=f,filename=$OWN/$disk" \
			-blockdev "driver=$fmt,node-name=d,file=f" -device virtio-blk-pci,drive=d,id=v
		rm -f "$OWN"/dump/* "$OWN/hook.log"
		run --separate-stderr -1 vz_backup "$OWN" --script "$OWN/hook" 300
		[[ $stderr == *"INFO: status = stopped"*"ERROR: Backup of VM 300 failed - disk '$key': $OWN/$disk is in use by a running QEMU (it holds the image lock); not reading it offline"* ]] ||
			fail "$disk: $stderr"
		[[ $stderr != *"creating vzdump archive"* ]] || fail "$disk: $stderr"
		run cat "$OWN/hook.log"
		assert_output "backup-abort stop 300 gone
log-end stop 300 gone"
		assert_nothing_left
		qemu_stop "$OTHER"
	done
	assert_equal "$(vz_disk_sha "$OWN/d0.raw")" "$SHA0"
	assert_equal "$(vz_disk_sha "$OWN/d1.qcow2")" "$SHA1"
}

@test "suspend mode: a failure while the VM is paused continues it, with the restart hooks, and undoes everything" {
	mode_vm
	qmp_raw "$OWN" '{"execute":"cont"}' >/dev/null
	make_hook
	echo pre-freeze >"$OWN/fail-in"
	before=$(vz_state "$OWN")
	run --separate-stderr -1 vz_backup "$OWN" --mode suspend --script "$OWN/hook" 300
	assert_equal "$(vz_state "$OWN")" "$before"
	run cat "$OWN/hook.log"
	assert_output "backup-start suspend 300 running
pre-stop suspend 300 running
pre-freeze suspend 300 paused
pre-restart suspend 300 paused
post-restart suspend 300 running
backup-abort suspend 300 running
log-end suspend 300 running"
	[[ $stderr == *"INFO: resume vm
INFO: guest is online again after "*" seconds
ERROR: Backup of VM 300 failed - command '$OWN/hook pre-freeze suspend 300' failed: exit code 3"* ]] || fail "$stderr"
	assert_nothing_left
}

@test "stop mode with -no-shutdown: a failure after the shutdown still restarts the VM" {
	mode_vm -no-shutdown
	run_vm_acpi
	make_hook
	echo pre-freeze >"$OWN/fail-in"
	before=$(vz_state "$OWN")
	run --separate-stderr -1 vz_backup "$OWN" --mode stop --script "$OWN/hook" 300
	assert_equal "$(vz_state "$OWN")" "$before"
	run cat "$OWN/hook.log"
	assert_output "backup-start stop 300 running
pre-stop stop 300 running
pre-freeze stop 300 shutdown
pre-restart stop 300 shutdown
post-restart stop 300 running
backup-abort stop 300 running
log-end stop 300 running"
	[[ $stderr == *"INFO: restarting vm
INFO: guest is online again after "*" seconds
ERROR: Backup of VM 300 failed - command '$OWN/hook pre-freeze stop 300' failed: exit code 3"* ]] || fail "$stderr"
	assert_nothing_left
}

@test "SIGTERM during an offline copy ends vma-create and qemu-nbd and leaves nothing" {
	mode_vm --offline
	# 1 MiB/s: the 7 MiB take about 7 s.
	"$TOP/vzdump.sh" --dumpdir "$OWN/dump" --tmpdir "$OWN/tmp" --confdir "$OWN/conf" \
		--rundir "$OWN/run" --bwlimit 1024 300 2>"$OWN/err" 3>&- &
	bk=$!
	for ((i = 0; i < 300; i++)); do
		grep -q 'creating vzdump archive' "$OWN/err" && break
		sleep 0.05
	done
	sleep 1
	[ -n "$(pgrep -f -- "-k $OWN/tmp/")" ] || fail "no qemu-nbd running: $(cat "$OWN/err")"
	kill -TERM "$bk"
	rc=0
	wait "$bk" || rc=$?
	assert_equal "$rc" 1
	grep -qxF 'ERROR: Backup of VM 300 failed - interrupted by signal' "$OWN/err" || fail "$(cat "$OWN/err")"
	assert_nothing_left
	[ -z "$(pgrep -f -- "-o $OWN/dump/")" ] || fail "vma-create is still running"
}
