# shellcheck shell=bash
# lib/vzdump/restore.bash: the config stored in an archive read back, as qmrestore reads it —
# vzdump's #qmdump#map: lines (which archive device holds which disk), the new images' names,
# and the config rewritten for the restored VM (restore_update_config_line in qemu-server).
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

# The archive's config and what the restore makes of it (parse_archive_config):
archive_conf=       # the qemu-server.conf text
archive_devs=()     # the archive's device names, in its order
declare -gA archive_dev_size=() # each one's size in bytes
map_keys=()         # the disks to restore, in the config's order
declare -gA map_dev=() map_fmt=() # each one's archive device and format hint (#qmdump#map:)
declare -gA new_image=() new_fmt=() # each one's new image and its format (plan_images)

# Reads `vma-extract -l --json` (ARCHIVE's devices) and the #qmdump#map: lines of the config.
# Each map line must name a device of the archive, each device of the archive must have one
# (qemu-server's "found no device mapping information for device"), and each disk once.
parse_archive_config() { # DEVICES-JSON
	local line key dev fmt name size rest
	local -a order=()
	while IFS=$'\t' read -r name size; do
		[ -n "$name" ] || continue
		archive_devs+=("$name")
		archive_dev_size[$name]=$size
	done < <(jq -r '.devices[] | "\(.name)\t\(.size)"' <<<"$1")
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in
		'#qmdump#map:'*)
			[[ $line =~ ^#qmdump#map:([^:[:space:]]+):([^:[:space:]]+):([^:[:space:]]*):([^:[:space:]]*):$ ]] ||
				fail "the archive's config: a map line qemu-server would not read: $line"
			key=${BASH_REMATCH[1]}
			dev=${BASH_REMATCH[2]}
			fmt=${BASH_REMATCH[4]}
			disk_key "$key" || fail "the archive's config: the map line of '$key' names no disk key"
			[ -z "${map_dev[$key]+set}" ] || fail "the archive's config: disk '$key' is mapped twice"
			[ -n "${archive_dev_size[$dev]+set}" ] ||
				fail "the archive's config: disk '$key' is in device '$dev', which the archive does not have"
			map_dev[$key]=$dev
			map_fmt[$key]=$fmt
			order+=("$key")
			;;
		esac
	done <<<"$archive_conf"
	for dev in "${archive_devs[@]}"; do
		[ "$dev" != vmstate ] || fail "the archive holds a VM's memory state (vmstate): not restorable here"
		rest=
		for key in "${order[@]}"; do [ "${map_dev[$key]}" != "$dev" ] || rest=1; done
		[ -n "$rest" ] || fail "the archive's config: found no device mapping information for device '$dev'"
	done
	# The config's order; a mapped disk without a line of its own comes last, in map order.
	while IFS= read -r line; do
		[ "${line#\[}" = "$line" ] || break
		key=${line%%:*}
		if [ "$key" = "$line" ] || [ -z "${map_dev[$key]+set}" ]; then continue; fi
		[[ " ${map_keys[*]} " == *" $key "* ]] || map_keys+=("$key")
	done <<<"$archive_conf"
	for key in "${order[@]}"; do
		[[ " ${map_keys[*]} " == *" $key "* ]] || map_keys+=("$key")
	done
}

# The format of a disk's new image: FORCED (--format) if given, else the map line's, else the
# volume's extension; qcow2 stays qcow2, anything else becomes raw. The TPM state is always raw.
restore_format() { # KEY FORCED
	local key=$1 fmt=${map_fmt[$1]} line vol
	[ "$key" != tpmstate0 ] || { echo raw; return; }
	[ -z "$2" ] || { echo "$2"; return; }
	if [ -z "$fmt" ]; then
		line=$(grep -m 1 "^$key:" <<<"$archive_conf") || line=
		line=${line#*:}
		vol=$(drive_volume "${line#"${line%%[! ]*}"}")
		case $vol in *.qcow2) fmt=qcow2 ;; esac
	fi
	if [ "$fmt" = qcow2 ]; then echo qcow2; else echo raw; fi
}

# The new images, named as Proxmox names volumes: STORAGE/VMID/vm-VMID-disk-N.FORMAT, N
# counting from 0 in the config's order.
plan_images() { # STORAGE VMID FORCED-FORMAT
	local key n=0
	for key in "${map_keys[@]}"; do
		new_fmt[$key]=$(restore_format "$key" "$3")
		new_image[$key]=$1/$2/vm-$2-disk-$n.${new_fmt[$key]}
		n=$((n + 1))
	done
}

# A locally administered unicast MAC address, as PVE::Tools::random_ether_address makes one.
random_mac() {
	local -a b
	read -r -a b < <(od -An -N6 -tu1 /dev/urandom)
	printf '%02X:%02X:%02X:%02X:%02X:%02X\n' $(((b[0] & 0xfe) | 0x02)) "${b[1]}" "${b[2]}" \
		"${b[3]}" "${b[4]}" "${b[5]}"
}

new_uuid() { cat /proc/sys/kernel/random/uuid; }

# The restored VM's config from the archive's, as qemu-server's restore_update_config_line:
# vzdump's #qmdump#/#vzdump# lines and lock, parent and unusedN dropped; each restored disk's
# volume replaced by its new image (format= dropped: the image's name says it; the other
# options, size= among them, kept in their order); a disk with backup=0 commented out (it was
# not in the backup); vmgenid always new (unless 0); with UNIQUE (1) new MAC addresses and a
# new smbios1 uuid (in its place). Reads the config on stdin, writes the new one on stdout.
rewrite_config() { # UNIQUE
	local line key value item sep out
	local -a items
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in
		'#qmdump#'* | '#vzdump#'*) continue ;;
		'['*) break ;;
		esac
		key=${line%%:*}
		value=${line#*:}
		value=${value#"${value%%[! ]*}"}
		if [ "$key" = "$line" ] || [[ $key == \#* ]]; then
			printf '%s\n' "$line"
			continue
		fi
		case $key in
		lock | parent | unused[0-9]*) continue ;;
		vmgenid)
			[ "$value" = 0 ] || value=$(new_uuid)
			printf 'vmgenid: %s\n' "$value"
			continue
			;;
		net[0-9]*)
			if [ "$1" = 1 ]; then
				IFS=, read -r -a items <<<"$value"
				out='' sep=''
				for item in "${items[@]}"; do
					if [[ $item =~ ^([A-Za-z0-9_-]+)=([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$ ]]; then
						item=${BASH_REMATCH[1]}=$(random_mac)
					fi
					out+=$sep$item
					sep=,
				done
				value=$out
			fi
			printf '%s: %s\n' "$key" "$value"
			continue
			;;
		smbios1)
			if [ "$1" = 1 ]; then
				IFS=, read -r -a items <<<"$value"
				out='' sep=''
				for item in "${items[@]}"; do
					[[ $item != uuid=* ]] || item=uuid=$(new_uuid)
					out+=$sep$item
					sep=,
				done
				# (None yet: one, first, as qemu-server's --unique adds it.)
				[[ ,$out, == *,uuid=* ]] || out=uuid=$(new_uuid)${out:+,$out}
				value=$out
			fi
			printf '%s: %s\n' "$key" "$value"
			continue
			;;
		esac
		if disk_key "$key" && [[ $(drive_option "$value" backup) == @(0|no|off|false) ]]; then
			printf '#%s\n' "$line"
		elif disk_key "$key" && [ -n "${new_image[$key]+set}" ]; then
			IFS=, read -r -a items <<<"$value"
			out=${new_image[$key]}
			for item in "${items[@]:1}"; do
				case $item in file=* | format=*) continue ;; esac
				out+=,$item
			done
			# (A first item that is an option, the volume given as file= further on.)
			case ${items[0]} in file=* | format=*) ;; *=*) out+=,${items[0]} ;; esac
			printf '%s: %s\n' "$key" "$out"
		else
			printf '%s\n' "$line"
		fi
	done
}
