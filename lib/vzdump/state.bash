# shellcheck shell=bash
# lib/vzdump/state.bash: every variable of the driver's state, in one place — one VM's (each VM's
# task is a subshell, so it starts afresh for every VM) and the job's. The opt_* settings are
# in options.bash.
# shellcheck disable=SC2034 # the driver's files share their globals (state.bash)

vmid=
failure=          # why the backup failed, for the log, the hooks and the JSON
private_dir=      # TMPDIR/vzdumptmp.XXXXXX: config, sockets, scratch images, the writer's log
tmp_archive=      # DUMPDIR/NAME.dat while it is written
final_archive=    # the archive, once renamed: complete, and never removed by a later failure
archive_sum=      # its SHA-256 in hex, from the writer (writer_sha256)
log_target=       # DUMPDIR/NAME.log (the hooks' LOGFILE), where the log is delivered
logfile_fd=       # PRIVATE_DIR/log, where log() writes with time stamps (job.bash)
hook_target=      # the hooks' TARGET
backup_start=     # seconds since the epoch
qmp_sock=
qga_sock=
copy_start=
vm_status=        # QEMU's run state before the snapshot
stray_file=       # PRIVATE_DIR/stderr: what the task printed on stderr other than its log
# read_config: the VM's config
vm_name=
agent_enabled=0
agent_freeze=1
bios=
conf_file=
conf_disk_keys=() # every disk line's key, in the config's order; its value in conf_disk_value
declare -gA conf_disk_value=()
included_keys=()  # the config disks to back up (select_config_disks)
# The disks to back up, in vzdump's order (config keys sorted as strings), each by its key:
# its volume, the QEMU node it is on, the device path for qom-set (empty for a node without a
# device, and offline), the size in bytes and the image format. add_disk adds one.
disk_keys=()
declare -gA disk_vol=() disk_node=() disk_qdev=() disk_size=() disk_fmt=()
# What was done, so that it can be undone (journal.bash).
undo=()           # the undo record: QMP commands, in the order recorded
we_paused=0       # we sent `stop`; cont must follow whatever happens
job_ids=()        # backup jobs started in QEMU
state_file=       # STATEDIR/VMID.state
recover_error=
swept=0
writer_pid=       # vma-create
writer_lines_done=0
hook_pid=         # a VM hook running in the background
poll_pid=         # wait_jobs' qmpctl --poll, which holds the QMP monitor while it waits
maybe_frozen=0    # gafreeze's thaw failed: the guest may still be frozen
frozen_ms=
freeze_ms=
qmp_ms=
thaw_ms=
snapshot_ms=
# The modes (modes.bash).
backup_mode=      # the effective mode, as the hooks get it
vm_alive=0        # QEMU listens on its QMP socket
stop_time=        # when the VM was suspended or stopped (seconds since the epoch)
suspended=0       # we paused the VM (suspend mode); cont is owed
resume_hooks=0    # suspend mode: pre-restart and post-restart are owed in the exit handler
restart=          # owed after a stop: reset (QEMU in shutdown state) or exited (QEMU gone)
nbd_pids=()       # qemu-nbd servers of the offline copy
# Incremental backups (incremental.bash).
archive_base=     # vzdump-qemu-VMID-TIME: the archive's name without folder and extensions
backup_kind=full  # full or incremental
full_reason=      # with --incremental 1, why this one is a full
inc_parent=       # an incremental's parent archive (its path), its listing and its depth
inc_listing=
inc_depth=0
bitmap_new=       # the bitmap this backup adds at its instant (bitmaps on), named archive_base
bitmap_old=       # the one an incremental backup reads: named after inc_parent
bitmaps_switched=0 # the switch may have happened: keep_bitmaps or roll_back_bitmaps is owed

# The job's own.
job_dir=          # TMPDIR/vzdumpjob.XXXXXX, with --json or mail: the results, failed VMs' logs
results=          # JOB_DIR/results: one line per VM (record_result)
job_start=        # seconds since the epoch, for the mail's running time
task_pid=
interrupted=0

