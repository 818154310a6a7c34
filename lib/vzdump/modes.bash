# shellcheck shell=bash
# lib/vzdump/modes.bash: suspend and stop mode around the snapshot, the VM's power state put
# back, and the offline copy of a VM that is not running (or whose QEMU exited on shutdown).
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

# snapshot: the VM keeps running (see snapshot). suspend: the VM is paused from `suspending
# guest` until the snapshot is in place, then continues while the copy runs. stop: a clean
# shutdown (system_powerdown), the snapshot, and a restart (system_reset + cont) when QEMU
# stays alive in `shutdown` state (-no-shutdown); when QEMU exits instead, the image files are
# read offline, as for a VM that was not running at all.

# vzdump's stopwait is in minutes; VZDUMP_STOPWAIT_SECONDS overrides it (tests need seconds).
stopwait_seconds() {
	if [ -n "${VZDUMP_STOPWAIT_SECONDS:-}" ]; then # checked by read_environment
		echo "$((10#$VZDUMP_STOPWAIT_SECONDS))"
	else
		echo "$((opt_stopwait * 60))"
	fi
}

# Whether the VM runs: something listens on its QMP socket. A VM that does not is backed up
# offline from its config, which it then must have.
check_running() {
	if [ -S "$qmp_sock" ] && qemu_alive; then
		vm_alive=1
		return 0
	fi
	vm_alive=0
	backup_mode=stop
	[ -z "$conf_file" ] || return 0
	info "no config $opt_confdir/$vmid.conf: a VM that is not running is backed up from its config"
	if [ -S "$qmp_sock" ]; then
		fail "VM $vmid is not running (nothing listens on $qmp_sock)"
	fi
	fail "VM $vmid is not running (no QMP socket $qmp_sock)"
}

# A VM that is not running is backed up in stop mode, as vzdump does (see check_running).
choose_mode() {
	if [ "$backup_mode" != "$opt_mode" ]; then
		info "VM is not running: $opt_mode mode is not possible, using stop mode"
	fi
}

# Suspend mode: pause a running VM until the snapshot is in place (see resume_after_snapshot).
# A VM that is not running (paused, prelaunch) is left as it is.
suspend_vm() {
	local status
	info "suspending guest"
	stop_time=$EPOCHSECONDS
	hook_or_fail pre-stop
	resume_hooks=1
	status=$(qemu_status) || status=
	[ -n "$status" ] || fail "query-status failed"
	[ "$status" = running ] || return 0
	# Recorded first: whatever fails from here on, the cleanup continues the VM.
	suspended=1
	state paused
	qmp stop >/dev/null 2>"$private_dir/qmp.err" ||
		fail "pausing the VM failed$(why_of "$private_dir/qmp.err")"
}

# Stop mode on a running VM: a clean shutdown, waiting up to --stopwait for QEMU to reach
# `shutdown` state (-no-shutdown) or to exit. Never forced: on timeout the backup fails and the
# VM is left as it is. A VM that is not running cannot shut down and needs no shutdown.
stop_vm() {
	local status wait
	status=$(qemu_status) || status=
	[ -n "$status" ] || fail "query-status failed"
	case $status in
	running) ;;
	shutdown)
		info "guest is already shut down (QEMU status 'shutdown'): no shutdown needed, it stays so"
		return 0
		;;
	*)
		info "guest is not running (QEMU status '$status'): no shutdown, backing it up as it is, and it stays so"
		return 0
		;;
	esac
	info "stopping virtual guest"
	stop_time=$EPOCHSECONDS
	hook_or_fail pre-stop
	# Before it is sent: a guest that goes down after we were killed is restarted by recovery.
	state powerdown
	qmp system_powerdown >/dev/null || fail "system_powerdown failed"
	wait=$(stopwait_seconds)
	wait_until -i 0.5 "$wait" guest_down ||
		fail "VM $vmid did not shut down within $wait seconds (--stopwait) - not forcing it off, the VM is left as it is"
	if [ "$restart" = exited ]; then
		info "QEMU exited on shutdown: reading the disk images offline"
	else
		state shutdown
	fi
}

# Whether the guest is down: QEMU exited (restart=exited) or waits in `shutdown` state
# (restart=reset).
guest_down() {
	if ! qemu_alive; then
		restart=exited
	elif [ "$(qemu_status)" = shutdown ]; then
		restart=reset
	else
		return 1
	fi
}

# Whether a system_reset has been carried out: QEMU answers, in another state than shutdown.
reset_done() {
	local status
	status=$(qemu_status)
	[ -n "$status" ] && [ "$status" != shutdown ]
}

# Right after the snapshot is in place: a suspended VM continues, a stopped one (QEMU in
# `shutdown` state) is restarted, so that the guest is down only for that long; the copy then
# runs while the guest works (its writes go through the copy-before-write filter).
resume_after_snapshot() {
	if [ "$suspended" = 1 ]; then
		qmp cont >/dev/null || fail "continuing the VM failed"
		suspended=0
		state resumed
		info "resuming VM again after $((EPOCHSECONDS - stop_time)) seconds"
	fi
	[ "$restart" != reset ] || restart_vm
}

# system_reset + cont of a VM in `shutdown` state, between the pre-restart and post-restart
# hooks (whose failure is only a warning: the VM must come back anyway).
restart_vm() {
	local status
	restart=
	run_hook pre-restart vm || warn "$hook_error"
	info "restarting vm"
	qmp system_reset >/dev/null || warn "system_reset failed"
	# The reset is carried out asynchronously; cont is refused until it is (the VM then waits
	# in prelaunch).
	wait_until 10 reset_done || true
	status=$(qemu_status)
	if qmp cont >/dev/null 2>&1; then
		state restarted
		run_hook post-restart vm || warn "$hook_error"
		info "guest is online again after $((EPOCHSECONDS - stop_time)) seconds"
	else
		warn "restarting the VM failed (QEMU status '${status:-unknown}')"
		run_hook post-restart vm || warn "$hook_error"
	fi
}

# What vzdump does in its cleanup after a suspend or stop: pre-restart, resume or restart
# (when still owed, e.g. after a failure), post-restart. Never fails: it runs on the failure
# path too.
restore_power_state() {
	[ "$backup_mode" = suspend ] || [ "$backup_mode" = stop ] || return 0
	if [ "$restart" = reset ]; then
		if qemu_alive; then
			restart_vm
		else
			restart=exited
		fi
	fi
	if [ "$resume_hooks" = 1 ]; then
		resume_hooks=0
		run_hook pre-restart vm || warn "$hook_error"
		if [ "$suspended" = 1 ]; then
			info "resume vm"
			if qmp cont >/dev/null 2>&1; then
				suspended=0
				state resumed
				info "guest is online again after $((EPOCHSECONDS - stop_time)) seconds"
			else
				warn "continuing the VM failed"
			fi
		fi
		run_hook post-restart vm || warn "$hook_error"
	elif [ "$restart" = exited ]; then
		restart=
		run_hook pre-restart vm || warn "$hook_error"
		info "VM $vmid is left stopped: QEMU exited on shutdown and vzdump.sh cannot start it (it does not know its command line); start it from the post-restart hook, or run QEMU with -no-shutdown"
		run_hook post-restart vm || warn "$hook_error"
	fi
	return 0
}

# The images of a VM that is not running, from its config: KEY, VOLUME (a path), no node or
# device, SIZE, FORMAT. The same disks as prepare_from_config picks.
prepare_offline() {
	local key value vol
	select_config_disks
	for key in "${included_keys[@]}"; do
		value=${conf_disk_value[$key]}
		vol=$(drive_volume "$value")
		offline_disk "$key" "$vol" "$(drive_format "$key" "$vol" "$value")"
	done
	log_included_disks
}

# An image's format: format= in the config, else its name's extension, else raw (qemu-server
# does not guess formats from content either: a raw image may start with any bytes).
drive_format() { # KEY VOLUME VALUE
	[ "$1" != tpmstate0 ] || { echo raw; return; }
	drive_option "$3" format && return
	case $2 in
	*.qcow2) echo qcow2 ;;
	*.vmdk) echo vmdk ;;
	*.qed) echo qed ;;
	*.vdi) echo vdi ;;
	*.vhd | *.vpc) echo vpc ;;
	*) echo raw ;;
	esac
}

# Adds one offline disk after checking that nothing holds it open: QEMU locks the images it
# uses, and a (size 0) conversion of the file, which wants no writer beside it, fails then.
offline_disk() { # KEY VOLUME FORMAT
	local key=$1 vol=$2 fmt=$3 size protocol=file err
	case $vol in
	/*) ;;
	*) fail "disk '$key': '$vol' is not a path: a VM that is not running is read from image files or block devices given by path" ;;
	esac
	[ -e "$vol" ] || fail "disk '$key': $vol does not exist"
	[ ! -b "$vol" ] || protocol=host_device
	if ! err=$(qemu-img convert --image-opts \
		"driver=raw,size=0,file.driver=$protocol,file.filename=${vol//,/,,}" \
		-O raw "$private_dir/lock-probe.raw" 2>&1); then
		rm -f "$private_dir/lock-probe.raw"
		case $err in
		*lock*) fail "disk '$key': $vol is in use by a running QEMU (it holds the image lock); not reading it offline" ;;
		*) fail "disk '$key': cannot open $vol: ${err%%$'\n'*}" ;;
		esac
	fi
	rm -f "$private_dir/lock-probe.raw"
	size=$(qemu-img info -U -f "$fmt" --output=json -- "$vol" 2>&1) ||
		fail "disk '$key': cannot read $vol as $fmt: ${size%%$'\n'*}"
	size=$(jq -r '.["virtual-size"]' <<<"$size")
	[[ $size =~ ^[0-9]+$ ]] || fail "disk '$key': cannot read the size of $vol"
	add_disk "$key" "$vol" "" "" "$size" "$fmt"
}

# After QEMU exited on shutdown (stop mode): the disks found in the running QEMU become image
# files read offline; QEMU may still hold its image locks for a moment while it exits.
offline_after_exit() {
	local key vol fmt
	local -a found=("${disk_keys[@]}")
	disk_keys=()
	for key in "${found[@]}"; do
		vol=${disk_vol[$key]}
		fmt=${disk_fmt[$key]}
		[ "$key" != tpmstate0 ] || fmt=raw
		# Up to 10 s for the lock; a volume that is no file fails at once below.
		wait_until -i 0.2 10 offline_disk_readable "$key" "$vol" "$fmt" || true
		offline_disk "$key" "$vol" "$fmt"
	done
}

# Whether offline_disk would take the disk now (tried in a subshell, which changes nothing);
# a volume that does not exist gives up at once.
offline_disk_readable() { # KEY VOLUME FORMAT
	[ -e "$2" ] || return 0
	(offline_disk "$@") >/dev/null 2>&1
}

# The offline copy: vma-create reads raw images and block devices itself (sparse-aware), other
# formats through a read-only qemu-nbd each on a socket in the private folder.
offline_copy() {
	local key vol fmt sock
	local -a args=(-v -c "$private_dir/qemu-server.conf")
	writer_output_args
	[ "$opt_bwlimit" = 0 ] || args+=(--bwlimit "$opt_bwlimit")
	for key in "${disk_keys[@]}"; do
		vol=${disk_vol[$key]}
		fmt=${disk_fmt[$key]}
		if [ "$fmt" = raw ]; then
			args+=("$(archive_devname "$key")=$vol")
			continue
		fi
		sock=$private_dir/nbd-$key.sock
		spawn qemu-nbd -r -t -f "$fmt" -k "$sock" -- "$vol" </dev/null >/dev/null \
			2>"$private_dir/nbd-$key.err"
		nbd_pids+=("$spawned_pid")
		state_proc "$spawned_pid" qemu-nbd
		wait_until 10 socket_or_exit "$sock" "$spawned_pid" || true
		[ -S "$sock" ] || fail "disk '$key': qemu-nbd failed: $(tail -n 1 "$private_dir/nbd-$key.err")"
		# shellcheck disable=SC2016 # jq variables
		args+=("$(archive_devname "$key")=nbd+unix:///?socket=$(jq -rn --arg p "$sock" '$p | @uri')")
	done
	copy_start=$EPOCHSECONDS
	spawn vma-create "${args[@]}" 2>"$private_dir/writer.log"
	writer_pid=$spawned_pid
	state_proc "$writer_pid" vma-create
	while kill -0 "$writer_pid" 2>/dev/null; do
		forward_writer_log
		sleep 0.5
	done
	# (A failed writer fails the backup here; the exit handler stops the servers then.)
	wait_writer
	stop_nbd
}

# The qemu-nbd servers run with --persistent (vma-create may connect more than once), so they
# are ended here, after the copy or in the cleanup.
stop_nbd() {
	local pid
	for pid in "${nbd_pids[@]}"; do
		stop_child "$pid" || true
	done
	nbd_pids=()
}
