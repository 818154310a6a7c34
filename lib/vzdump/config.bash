# shellcheck shell=bash
# lib/vzdump/config.bash: the VM's config (qemu-server.conf syntax) and its disks — which to
# back up, where QEMU has them, and the config stored in the archive.
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

# Proxmox's node and archive name for the TPM state (see prepare_tpmstate).
TPM_NODE=drive-tpmstate0-backup

# The disks to back up (disk_keys, disk_vol, ...: see state.bash) are added one by one.
add_disk() { # KEY VOLUME NODE QDEV SIZE FORMAT
	disk_keys+=("$1")
	disk_vol[$1]=$2
	disk_node[$1]=$3
	disk_qdev[$1]=$4
	disk_size[$1]=$5
	disk_fmt[$1]=$6
}

# The disks as the JSON array graph.jq works on.
disks_json() {
	local key
	local -a fields=()
	for key in "${disk_keys[@]}"; do
		fields+=("$key" "${disk_vol[$key]}" "${disk_node[$key]}" "${disk_qdev[$key]}"
			"${disk_size[$key]}" "${disk_fmt[$key]}")
	done
	jq -L "$LIBDIR" -nc --arg tpm "$TPM_NODE" \
		'import "graph" as g; $ARGS.positional | g::disk_list($tpm)' --args "${fields[@]}"
}

# The device's name in the archive: drive-KEY, but the TPM state's has its own.
archive_devname() { # KEY
	if [ "$1" = tpmstate0 ]; then echo "$TPM_NODE"; else echo "drive-$1"; fi
}

log_included_disks() {
	local key
	# As vzdump does, a VM without disks gets an archive with just its config.
	[ ${#disk_keys[@]} -gt 0 ] || info "backup contains no disks"
	for key in "${disk_keys[@]}"; do
		info "include disk '$key' '${disk_vol[$key]}' $(format_disk_size "${disk_size[$key]}")"
	done
}

# Reads CONFDIR/VMID.conf (qemu-server.conf syntax) into the globals below; only the main
# section, up to the first [section], describes the running VM.
read_config() {
	local line key value
	conf_file=$opt_confdir/$vmid.conf
	if [ ! -e "$conf_file" ]; then
		conf_file=
		return 0
	fi
	[ -r "$conf_file" ] || fail "cannot read $conf_file"
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in
		'['*) break ;;
		'#'* | '') continue ;;
		esac
		key=${line%%:*}
		[ "$key" != "$line" ] || continue
		value=${line#*:}
		value=${value#"${value%%[! ]*}"}
		case $key in
		name) vm_name=$value ;;
		bios) bios=$value ;;
		agent) parse_agent "$value" ;;
		*)
			disk_key "$key" || continue
			conf_disk_keys+=("$key")
			conf_disk_value["$key"]=$value
			;;
		esac
	done <"$conf_file"
}

# Whether a config key names a disk (qemu-server's drive keys).
disk_key() { # KEY
	case $1 in
	ide[0-3] | sata[0-5] | scsi[0-9] | scsi[12][0-9] | scsi30 | virtio[0-9] | virtio1[0-5] | \
		efidisk0 | tpmstate0) return 0 ;;
	esac
	return 1
}

# agent: 1 | 0 | [enabled=]1,freeze-fs=0,... (freeze-fs-on-backup is the old name)
parse_agent() { # VALUE
	local item
	local -a items
	IFS=, read -r -a items <<<"$1"
	for item in "${items[@]}"; do
		case $item in
		1 | enabled=1) agent_enabled=1 ;;
		0 | enabled=0) agent_enabled=0 ;;
		freeze-fs=0 | freeze-fs-on-backup=0) agent_freeze=0 ;;
		freeze-fs=1 | freeze-fs-on-backup=1) agent_freeze=1 ;;
		esac
	done
}

# A drive's property string is VOLUME,NAME=VALUE,...; the value of NAME among the items after
# the volume (fails if none).
drive_option() { # VALUE NAME
	local item
	local -a items
	IFS=, read -r -a items <<<"$1"
	for item in "${items[@]:1}"; do
		if [ "${item%%=*}" = "$2" ] && [ "$item" != "$2" ]; then
			printf '%s\n' "${item#*=}"
			return 0
		fi
	done
	return 1
}

# The volume: the first item (or file=VOLUME anywhere).
drive_volume() { # VALUE
	local first=${1%%,*}
	case $first in file=*) printf '%s\n' "${first#file=}" && return ;; esac
	drive_option "$1" file || printf '%s\n' "$first"
}

# Finds config disks in QEMU, or, with no config, takes every disk QEMU has.
prepare() {
	local blocks
	blocks=$(qmp query-block 2>"$private_dir/qmp.err") ||
		fail "query-block failed$(why_of "$private_dir/qmp.err")"
	if [ -n "$conf_file" ]; then
		prepare_from_config "$blocks"
	else
		prepare_from_qemu "$blocks"
	fi
	log_included_disks
}

# The config's disks to back up, in vzdump's order (keys sorted as strings), into
# included_keys: CD-ROMs left out, the excluded ones logged as vzdump does.
select_config_disks() {
	local key value vol
	included_keys=()
	for key in $(printf '%s\n' "${conf_disk_keys[@]}" | LC_ALL=C sort); do
		value=${conf_disk_value[$key]}
		vol=$(drive_volume "$value")
		if [ "$(drive_option "$value" media)" = cdrom ] || [ "$vol" = none ]; then
			continue
		fi
		if [[ $(drive_option "$value" backup) == @(0|no) ]]; then
			info "exclude disk '$key' '$vol' (backup=no)"
			continue
		fi
		if [ "$key" = efidisk0 ] && [ "$bios" != ovmf ]; then
			info "exclude disk '$key' '$vol' (efidisk but no OVMF BIOS)"
			continue
		fi
		included_keys+=("$key")
	done
}

prepare_from_config() { # QUERY-BLOCK-JSON
	local key value vol found node qdev size fmt rp used=' '
	select_config_disks
	for key in "${included_keys[@]}"; do
		value=${conf_disk_value[$key]}
		vol=$(drive_volume "$value")
		if [ "$key" = tpmstate0 ]; then
			prepare_tpmstate "$vol"
			continue
		fi
		rp=$(realpath -m -- "$vol" 2>/dev/null) || rp=$vol
		# shellcheck disable=SC2016 # jq variables
		found=$(graph_jq -r --arg k "$key" --arg p "$vol" --arg rp "$rp" \
			'g::find_block($k; $p; $rp)' <<<"$1") || fail "cannot read query-block"
		[ -n "$found" ] || fail "disk '$key' ($vol) not found in the running QEMU: give its node or drive the name 'drive-$key' (-blockdev ...,node-name=drive-$key) or its device the id '$key' (-device ...,id=$key)"
		IFS=$'\x1f' read -r node qdev size fmt <<<"$found"
		[ -n "$qdev" ] || fail "disk '$key': QEMU node '$node' is not attached to a device"
		case $used in *" $node "*) fail "disk '$key': QEMU node '$node' is already used by another config disk" ;; esac
		used+="$node "
		add_disk "$key" "$vol" "$node" "$qdev" "$size" "$fmt"
	done
}

# swtpm, not QEMU, has the TPM state file open, so (as Proxmox does) it is attached to QEMU
# read-only as its own node drive-tpmstate0-backup, stored under that name, and copied from
# that node directly: no device writes it through QEMU, so it needs no copy-before-write.
prepare_tpmstate() { # VOLUME
	local vol=$1 size
	[ -e "$vol" ] || fail "disk 'tpmstate0': $vol does not exist"
	size=$(qemu-img info -U -f raw --output=json -- "$vol" 2>/dev/null) ||
		fail "disk 'tpmstate0': cannot read the size of $vol"
	size=$(jq -r '.["virtual-size"]' <<<"$size") || size=
	[[ $size =~ ^[0-9]+$ ]] || fail "disk 'tpmstate0': cannot read the size of $vol"
	add_disk tpmstate0 "$vol" "$TPM_NODE" "" "$size" raw
}

# No config: every disk with a device (CD-ROMs and empty drives left out). The key comes from
# a drive-KEY name or a KEY qdev id when there is one, else virtioN or scsiN by device kind.
prepare_from_qemu() { # QUERY-BLOCK-JSON
	local list key node qdev size fmt file nv=0 ns=0 generated=
	list=$(graph_jq -r 'g::qemu_disks' <<<"$1") || fail "cannot read query-block"
	while IFS=$'\x1f' read -r key node qdev size fmt file; do
		[ -n "$node" ] || continue
		if [ -z "$key" ]; then
			case $qdev in
			*/virtio-backend)
				while [[ " $generated " == *" virtio$nv "* ]]; do nv=$((nv + 1)); done
				key=virtio$nv
				;;
			*)
				while [[ " $generated " == *" scsi$ns "* ]]; do ns=$((ns + 1)); done
				key=scsi$ns
				;;
			esac
		fi
		generated+=" $key"
		add_disk "$key" "$file" "$node" "$qdev" "$size" "$fmt"
	done <<<"$list"
	[ ${#disk_keys[@]} -gt 0 ] || return 0
	mapfile -t disk_keys < <(printf '%s\n' "${disk_keys[@]}" | LC_ALL=C sort)
}

# The qemu-server.conf stored in the archive, as vzdump's assemble writes it.
assemble() {
	local out=$private_dir/qemu-server.conf line key vol fmt store
	: >"$out"
	if [ -n "$conf_file" ]; then
		while IFS= read -r line || [ -n "$line" ]; do
			case $line in
			'#vzdump#'* | '#qmdump#'*) continue ;;
			'[PENDING]'*)
				info "pending configuration changes found (not included into backup)"
				break
				;;
			'[special:'*)
				info "special config section found (not included into backup)"
				break
				;;
			'['*)
				info "snapshots found (not included into backup)"
				break
				;;
			esac
			key=${line%%:*}
			case $key in
			unused[0-9]*)
				vol=${line#*:}
				vol=${vol#"${vol%%[! ]*}"}
				info "skip unused drive '$vol' (not included into backup)"
				continue
				;;
			lock | parent) continue ;;
			esac
			printf '%s\n' "$line" >>"$out"
		done <"$conf_file"
	else
		printf 'name: vm%s\n' "$vmid" >>"$out"
		for key in "${disk_keys[@]}"; do
			vol=${disk_vol[$key]}
			printf '%s: %s,size=%s\n' "$key" "${vol:-drive-$key}" \
				"$(format_disk_size "${disk_size[$key]}")" >>"$out"
		done
	fi
	for key in "${disk_keys[@]}"; do
		vol=${disk_vol[$key]}
		fmt=${disk_fmt[$key]}
		store=
		case $vol in /*) ;; *:*) store=${vol%%:*} ;; esac
		case $fmt in raw | qcow2 | vmdk | qed | vpc | vdi) ;; *) fmt= ;; esac
		printf '#qmdump#map:%s:%s:%s:%s:\n' "$key" "$(archive_devname "$key")" "$store" "$fmt" >>"$out"
	done
}

