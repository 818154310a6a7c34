#!/bin/bash
# qmrestore.sh: a VM back from a vzdump archive, as Proxmox's qmrestore does it: each disk of
# the archive into a new image in a storage folder, then the VM's config with the disks'
# volumes rewritten to those images. See man/qmrestore.sh.1.
#
# This file reads as the restore's phases: the checks (check_target), the plan (plan_restore),
# the images (restore_images, whose one extraction step is extract_devices), the swap that
# puts them and the config in place (commit_restore), and right after it the handler that
# undoes it all on failure. The config parsing, locks and logging are vzdump.sh's, in its
# library folder; the archive's config read back is in restore.bash there.
set -euo pipefail

PROG=qmrestore.sh
# The library folder, found as vzdump.sh finds it (make install writes the next line).
INSTALLED_LIBDIR=
SELF_DIR=$(dirname -- "$(realpath -- "${BASH_SOURCE[0]}")")
for LIBDIR in ${INSTALLED_LIBDIR:+"$INSTALLED_LIBDIR"} "$SELF_DIR/lib/vzdump" \
	"${SELF_DIR%/*}/lib/vzdump" "${SELF_DIR%/*}/share/vzdump" ""; do
	[ -z "$LIBDIR" ] || [ ! -f "$LIBDIR/restore.bash" ] || break
done
if [ -z "$LIBDIR" ]; then
	printf '%s: cannot find the library folder lib/vzdump beside %s\n' "$PROG" "$SELF_DIR" >&2
	exit 1
fi
# shellcheck source=lib/vzdump/state.bash
source "$LIBDIR/state.bash"
# shellcheck source=lib/vzdump/options.bash
source "$LIBDIR/options.bash"
# shellcheck source=lib/vzdump/process.bash
source "$LIBDIR/process.bash"
# shellcheck source=lib/vzdump/job.bash
source "$LIBDIR/job.bash"
# shellcheck source=lib/vzdump/config.bash
source "$LIBDIR/config.bash"
# shellcheck source=lib/vzdump/restore.bash
source "$LIBDIR/restore.bash"

usage() {
	cat <<'END'
qmrestore.sh [--storage dir] [--confdir dir] [--rundir dir] [--format raw | qcow2]
[--target key=device] [--force] [--unique] [--dry-run] [--json] archive vmid
END
}

# What the restore did, for the undo (undo_restore), in the order done.
opt_storage=/var/lib/vz/images
opt_format=
opt_force=0
opt_unique=0
opt_dry_run=0
declare -A opt_target=() # --target KEY=DEVICE: the block device disk KEY is restored onto
archive=         # a file, or - for standard input (read once: staged whole, then planned)
archive_devices= # its devices, as `vma-extract -l --json` lists them
conf_target=     # CONFDIR/VMID.conf
vm_dir=          # STORAGE/VMID
made_vm_dir=0    # we created it
staging=         # STORAGE/VMID/.qmrestore.XXXXXX: the images while they are made
conf_tmp=        # CONFDIR/.VMID.conf.tmp.PID while it is written
placed=()        # new images renamed into place
declare -A moved_aside=() # an old image of that name, kept in the staging folder until the end
committed=0      # the config is in place: nothing is undone from then on
err_dir=         # a private folder for the tools' stderr (not the storage: it may be full)
json_fd=1

LONG_OPTIONS=(--storage --confdir --rundir --format --target --force --unique --dry-run --json --help)

parse_restore_options() {
	local arg name value
	local -a args=()
	while [ $# -gt 0 ]; do
		arg=$1
		shift
		case $arg in
		-h | --help)
			usage
			exit 0
			;;
		--short-options)
			echo -h
			exit 0
			;;
		--long-options)
			printf '%s\n' "${LONG_OPTIONS[@]}" --long-options --short-options
			exit 0
			;;
		--force) opt_force=1 ;;
		--unique) opt_unique=1 ;;
		--dry-run) opt_dry_run=1 ;;
		--json) opt_json=1 ;;
		--)
			args+=("$@")
			break
			;;
		--storage* | --confdir* | --rundir* | --format* | --target*)
			split_option " --storage --confdir --rundir --format --target " "$arg" "${@:1:1}"
			shift "$option_took"
			name=$option_name value=$option_value
			case $name in
			--format)
				[[ $value == @(raw|qcow2) ]] || die_usage "--format must be raw or qcow2, not '$value'"
				opt_format=$value
				;;
			--target)
				if ! [[ $value =~ ^([a-z]+[0-9]+)=(/.+)$ ]] || ! disk_key "${BASH_REMATCH[1]}"; then
					die_usage "--target needs KEY=DEVICE, a disk key and a block device's absolute path, not '$value'"
				fi
				[ -z "${opt_target[${BASH_REMATCH[1]}]+set}" ] ||
					die_usage "--target ${BASH_REMATCH[1]} given twice"
				opt_target[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
				;;
			*)
				[ -n "$value" ] || die_usage "$name needs a folder, not ''"
				case $name in
				--storage) opt_storage=$value ;;
				--confdir) opt_confdir=$value ;;
				--rundir) opt_rundir=$value ;;
				esac
				;;
			esac
			;;
		-?*) die_usage "unknown option: $arg" ;;
		*) args+=("$arg") ;;
		esac
	done
	[ ${#args[@]} = 2 ] || die_usage "an archive and a VMID, and nothing else"
	archive=${args[0]}
	vmid=${args[1]}
	# (vma-extract writes a device in place only after a first pass checked the archive.)
	[ "$archive" != - ] || [ ${#opt_target[@]} = 0 ] ||
		die_usage "--target needs an archive file: a device is written only after the archive is checked, a second read"
	[[ $vmid =~ ^[1-9][0-9]{2,8}$ ]] || die_usage "invalid VMID: $vmid (100 to 999999999)"
}

# The folders and the VM: the config must not exist (but with --force), the VM must not run
# (under its backup lock, the one vzdump.sh takes, held until exit).
check_target() {
	local key
	if [ "$archive" != - ] && { [ ! -f "$archive" ] || [ ! -r "$archive" ]; }; then
		fail "$archive: cannot read the archive: no such file"
	fi
	for key in "${!opt_target[@]}"; do
		[ -b "${opt_target[$key]}" ] ||
			fail "${opt_target[$key]}: cannot restore disk '$key' onto it: not a block device"
	done
	[ -d "$opt_storage" ] || fail "$opt_storage: cannot restore into the storage folder: no such folder"
	opt_storage=$(realpath -e -- "$opt_storage")
	[ -d "$opt_confdir" ] || fail "$opt_confdir: cannot write the VM's config: no such folder"
	opt_confdir=$(realpath -e -- "$opt_confdir")
	conf_target=$opt_confdir/$vmid.conf
	vm_dir=$opt_storage/$vmid
	qmp_sock=$opt_rundir/$vmid.qmp
	# (Without a run folder no VM of that VMID runs or is backed up: the lock is needed to
	# replace one, --force.)
	if [ "$opt_dry_run" = 0 ] && { [ "$opt_force" = 1 ] || [ -d "$opt_rundir" ]; }; then
		[ -d "$opt_rundir" ] || fail "cannot lock VM $vmid: the run folder $opt_rundir does not exist"
		vm_lock
	fi
	if [ -e "$conf_target" ] && [ "$opt_force" = 0 ]; then
		fail "cannot restore VM $vmid: $conf_target exists (--force replaces the VM)"
	fi
	if [ -S "$qmp_sock" ] && qemu_alive; then
		fail "cannot restore VM $vmid: it is running (QEMU answers on $qmp_sock)"
	fi
	# The images the old config names, read as vzdump.sh reads a config.
	[ ! -e "$conf_target" ] || { read_config && check_images_unlocked; }
}

# A VM running without its QMP socket where we look still has its images locked: QEMU takes
# a write lock on every image it opens, which qemu-img info, asking to read, runs into.
check_images_unlocked() {
	local key vol err=$err_dir/lock.err
	for key in "${conf_disk_keys[@]}"; do
		vol=$(drive_volume "${conf_disk_value[$key]}")
		[ -f "$vol" ] || [ -b "$vol" ] || continue
		if ! qemu-img info -- "$vol" >/dev/null 2>"$err" && grep -q 'lock' "$err"; then
			fail "cannot restore VM $vmid: its image $vol is in use (QEMU holds its lock)"
		fi
	done
}

# Standard input, read once: the whole archive (its disks and config files) into the staging
# folder's x/ by vma-extract's DIR form, which renames its files only once the whole stream is
# read and checked. The plan is then made from what is there.
stage_archive() {
	local err=$err_dir/extract.err
	info "reading the archive from standard input"
	run_extract "$err" - "$staging/x" ||
		fail "$archive: cannot restore the disks$(tool_why "$err")"
}

# The archive's devices (as `vma-extract -l --json` lists them) and its config (archive_conf),
# from the archive file, from the staged archive (standard input), or, for --dry-run from
# standard input, from its header alone: read by two vma-extracts at once through tee, the
# rest of the stream left unread.
read_archive() {
	local err=$err_dir/plan.err f dev fifo=$err_dir/config.fifo pid
	if [ "$archive" != - ]; then
		archive_devices=$(vma-extract -l --json "$archive" 2>"$err") ||
			fail "$archive: cannot read the archive$(tool_why "$err")"
		archive_conf=$(vma-extract -c qemu-server.conf "$archive" 2>"$err") ||
			fail "$archive: cannot read the config in the archive$(tool_why "$err")"
	elif [ -n "$staging" ]; then
		[ -f "$staging/x/qemu-server.conf" ] ||
			fail "$archive: cannot read the config in the archive: no config 'qemu-server.conf' in the archive"
		archive_conf=$(cat -- "$staging/x/qemu-server.conf") ||
			fail "$archive: cannot read the config in the archive"
		archive_devices=
		for f in "$staging/x"/disk-*.raw; do
			[ -e "$f" ] || continue
			dev=${f##*/disk-}
			archive_devices+=$(jq -nc --arg n "${dev%.raw}" --argjson s "$(stat -c %s -- "$f")" \
				'{name: $n, size: $s}')
		done
		archive_devices=$(jq -sc '{devices: .}' <<<"$archive_devices")
	else
		mkfifo -- "$fifo" || fail "cannot make a FIFO in $err_dir"
		vma-extract -c qemu-server.conf - <"$fifo" >"$err_dir/config" 2>"$err_dir/config.err" &
		pid=$!
		archive_devices=$(tee -p -- "$fifo" | vma-extract -l --json - 2>"$err") ||
			fail "$archive: cannot read the archive$(tool_why "$err")"
		wait "$pid" || fail "$archive: cannot read the config in the archive$(tool_why "$err_dir/config.err")"
		archive_conf=$(cat -- "$err_dir/config")
	fi
}

# The archive's devices and config, the disks to restore and their new images.
plan_restore() {
	local key old
	read_archive
	parse_archive_config "$archive_devices"
	plan_images "$opt_storage" "$vmid" "$opt_format"
	# A disk restored onto a block device: raw, the device's path in the config.
	for key in "${!opt_target[@]}"; do
		[ -n "${map_dev[$key]+set}" ] || fail "--target $key: the archive has no disk '$key'"
		new_image[$key]=${opt_target[$key]}
		new_fmt[$key]=raw
	done
	# An image of that name must be the old config's own (--force replaces it), never a file
	# no config names.
	for key in "${map_keys[@]}"; do
		[ -z "${opt_target[$key]+set}" ] || continue
		[ -e "${new_image[$key]}" ] || [ -L "${new_image[$key]}" ] || continue
		for old in "${conf_disk_keys[@]}"; do
			[ "$(drive_volume "${conf_disk_value[$old]}")" != "${new_image[$key]}" ] || continue 2
		done
		fail "cannot restore disk '$key': ${new_image[$key]} exists and is no image of the VM's config"
	done
}

# The plan on stdout (--dry-run), one line per disk, then the config.
print_plan() {
	local key
	for key in "${map_keys[@]}"; do
		printf '%s: %s -> %s (%s, %s)\n' "$key" "${map_dev[$key]}" "${new_image[$key]}" \
			"${new_fmt[$key]}" "$(format_disk_size "${archive_dev_size[${map_dev[$key]}]}")"
	done
	printf 'config: %s\n' "$conf_target"
} >&"$json_fd"

# --json: the result as one object.
print_json() {
	local key
	local -a fields=()
	for key in "${map_keys[@]}"; do
		fields+=("$key" "${map_dev[$key]}" "${new_image[$key]}" "${new_fmt[$key]}"
			"${archive_dev_size[${map_dev[$key]}]}")
	done
	jq -nc --argjson vmid "$vmid" --arg config "$conf_target" '$ARGS.positional as $f |
		{vmid: $vmid, config: $config, disks: [range(0; $f | length; 5) as $i |
		{key: $f[$i], device: $f[$i + 1], image: $f[$i + 2], format: $f[$i + 3],
		 size: ($f[$i + 4] | tonumber)}]}' --args "${fields[@]}" >&"$json_fd"
}

# vma-extract ARGS..., its stderr (with the progress meter it shows on a terminal) on the
# terminal when stderr is one, and then its message is on the line above ours; otherwise into
# ERR-FILE, for tool_why, and no meter.
run_extract() { # ERR-FILE ARGS...
	local err=$1
	shift
	: >"$err"
	if [ -t 2 ]; then
		vma-extract "$@"
	else
		vma-extract "$@" 2>"$err"
	fi
}

# The one step that gets each device's raw bytes out of the archive: DEVICE=PATH each, PATH a
# new file in the staging folder or a block device (--target). From a file, vma-extract's
# name=target form writes each one (a device only after a first pass checked the archive: the
# device is then untouched by a damaged one); from standard input, each disk is renamed from
# the staged archive (the same file system).
extract_devices() { # ARCHIVE DEVICE=PATH...
	local a=$1 pair err=$err_dir/extract.err
	shift
	if [ "$a" = - ]; then
		for pair in "$@"; do
			mv -T -- "$staging/x/disk-${pair%%=*}.raw" "${pair#*=}" ||
				fail "cannot move the disk ${pair%%=*} into place"
		done
		rm -rf -- "$staging/x"
	else
		run_extract "$err" "$a" "$@" || fail "$a: cannot restore the disks$(tool_why "$err")"
	fi
}

# Every disk into its new image in the staging folder, STAGING/N.FORMAT (or onto its --target
# device). A qcow2 image is restored raw, then converted: writing every byte twice, but faster
# than vma-extract's qcow2 through qemu-nbd (`vma-extract --format qcow2`, the same path as a
# name=nbd+unix:// target), measured on a 512 MiB disk on this 2-core machine under a CI load:
# 256 MiB of data in 4 MiB runs, raw + convert 0.61-0.70 s (convert 0.23-0.28 s) against
# 0.99-1.15 s; all 512 MiB random, 0.98-1.95 s (convert 0.28-0.30 s) against 3.05-3.91 s.
restore_images() {
	local key n=0 err=$err_dir/convert.err
	local -a pairs=()
	for key in "${map_keys[@]}"; do
		if [ -n "${opt_target[$key]+set}" ]; then
			pairs+=("${map_dev[$key]}=${opt_target[$key]}")
		else
			pairs+=("${map_dev[$key]}=$staging/$n.raw")
		fi
		n=$((n + 1))
	done
	info "restoring ${#map_keys[@]} disk(s) from '$archive'"
	extract_devices "$archive" "${pairs[@]}"
	n=0
	for key in "${map_keys[@]}"; do
		if [ "${new_fmt[$key]}" = qcow2 ]; then
			# (Mode 0600, as vma-extract's raw images: a VM's disk is for its owner alone.)
			(umask 077 && exec qemu-img convert -f raw -O qcow2 "$staging/$n.raw" "$staging/$n.qcow2") 2>"$err" ||
				fail "${new_image[$key]}: cannot write the qcow2 image$(tool_why "$err")"
			rm -f -- "$staging/$n.raw"
		fi
		info "disk '$key' (${map_dev[$key]}): ${new_image[$key]} (${new_fmt[$key]}, $(format_disk_size "${archive_dev_size[${map_dev[$key]}]}"))"
		n=$((n + 1))
	done
}

# The images into place (an old image of the same name aside into the staging folder, for the
# undo), then the config, written under a temporary name and renamed: from then on the restore
# stands; then the old config's images that are no longer named are removed.
commit_restore() {
	local key n=0 final old vol keep
	conf_tmp=$opt_confdir/.$vmid.conf.tmp.$$
	rewrite_config "$opt_unique" <<<"$archive_conf" >"$conf_tmp" ||
		fail "$conf_target: cannot write the config"
	for key in "${map_keys[@]}"; do
		final=${new_image[$key]}
		if [ -n "${opt_target[$key]+set}" ]; then
			n=$((n + 1))
			continue
		fi
		if [ -e "$final" ] || [ -L "$final" ]; then
			mv -T -- "$final" "$staging/old-$n" || fail "$final: cannot move the old image aside"
			moved_aside[$final]=$staging/old-$n
		fi
		mv -T -- "$staging/$n.${new_fmt[$key]}" "$final" || fail "$final: cannot move the image into place"
		placed+=("$final")
		n=$((n + 1))
	done
	mv -T -- "$conf_tmp" "$conf_target" || fail "$conf_target: cannot write the config"
	committed=1
	conf_tmp=
	info "wrote $conf_target"
	# Only images of this storage's VM folder named as ours: a config may name any file.
	for old in "${conf_disk_keys[@]}"; do
		vol=$(drive_volume "${conf_disk_value[$old]}")
		case $vol in "$vm_dir/vm-$vmid-disk-"*) ;; *) continue ;; esac
		keep=0
		for final in "${placed[@]}"; do [ "$final" != "$vol" ] || keep=1; done
		[ "$keep" = 0 ] || continue
		info "removing the old image $vol"
		rm -f -- "$vol" || warn "cannot remove the old image $vol"
	done
}

# Why a tool failed, from the file its stderr went to: ": WHY", the tool's name and the
# archive's path (which the message names already) left out.
tool_why() { # FILE
	local why
	why=$(tail -n 1 "$1" 2>/dev/null) || why=
	why=${why#vma-extract: }
	why=${why#qemu-img: }
	why=${why#"$archive: "}
	[ -z "$why" ] || printf ': %s' "$why"
}

# The VM's image folder (made if missing, for the undo) and the staging folder in it.
make_staging() {
	if [ ! -d "$vm_dir" ]; then
		mkdir -- "$vm_dir" || fail "$vm_dir: cannot create the VM's image folder"
		made_vm_dir=1
	fi
	staging=$(mktemp -d "$vm_dir/.qmrestore.XXXXXX") ||
		fail "$vm_dir: cannot create a staging folder"
}

restore_vm() {
	err_dir=$(mktemp -d) || fail "cannot create a private folder under ${TMPDIR:-/tmp}"
	check_target
	# (Standard input is staged whole first; its plan is made from what was staged.)
	if [ "$archive" = - ] && [ "$opt_dry_run" = 0 ]; then
		info "restore vma archive: $archive to VM $vmid"
		make_staging
		stage_archive
	fi
	plan_restore
	if [ "$opt_dry_run" = 1 ]; then
		if [ "$opt_json" = 1 ]; then print_json; else print_plan; fi
		return 0
	fi
	if [ -z "$staging" ]; then
		info "restore vma archive: $archive to VM $vmid"
		make_staging
	fi
	restore_images
	commit_restore
	rm -rf -- "$staging"
	staging=
	# (Every disk onto a --target device: no image folder made for nothing.)
	[ "$made_vm_dir" = 0 ] || rmdir -- "$vm_dir" 2>/dev/null || :
	[ "$opt_json" = 0 ] || print_json
	info "restore of VM $vmid finished"
}

# The EXIT trap, right after what it reverses: before the config is in place, every image
# made is removed and every old one put back; a failure says what and why on stderr.
undo_restore() {
	local status=$? final
	trap '' INT TERM HUP
	trap - EXIT
	set +e
	if [ "$status" != 0 ] && [ "$committed" = 0 ]; then
		[ -z "$conf_tmp" ] || rm -f -- "$conf_tmp"
		for final in "${placed[@]}"; do rm -f -- "$final"; done
		for final in "${!moved_aside[@]}"; do mv -T -- "${moved_aside[$final]}" "$final"; done
		[ -z "$staging" ] || rm -rf -- "$staging"
		[ "$made_vm_dir" = 0 ] || rmdir -- "$vm_dir" 2>/dev/null
	elif [ -n "$staging" ]; then
		rm -rf -- "$staging"
	fi
	[ -z "$err_dir" ] || rm -rf -- "$err_dir"
	[ "$status" = 0 ] || [ -z "$failure" ] || printf '%s: %s\n' "$PROG" "$failure" >&2
	exit "$status"
}

main() {
	trap '' PIPE
	find_tools
	parse_restore_options "$@"
	read_environment
	check_tools vma-extract qmpctl
	exec {json_fd}>&1 >/dev/null {global_lock_fd}</dev/null {vm_lock_fd}</dev/null
	trap undo_restore EXIT
	trap 'failure="interrupted by signal"; exit 1' INT TERM HUP
	restore_vm
}

main "$@"
