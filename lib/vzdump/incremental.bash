# shellcheck shell=bash
# lib/vzdump/incremental.bash: incremental backups (--incremental 1). Whether this backup can be
# one (decide_kind), its blob for the writer (incremental_blob), and the dirty bitmaps that
# count the changes: switched at the snapshot's instant (graph.jq's bitmap_switch, in the
# snapshot batch), kept when the archive is complete (keep_bitmaps), given their changes back
# when it is not (roll_back_bitmaps), pruned when no chain needs them (prune_bitmaps).
#
# A bitmap is named after the archive it counts from, vzdump-qemu-VMID-TIME (the archive's name
# without its extensions), so the next job matches the newest archive of the dump folder to its
# bitmap without a state file of its own. The state file records the switch ("bitmaps NEW OLD
# NODE..."), so that a killed backup's changes are given back by whoever recovers it.
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

# The name stem of this VM's archives, as a regular expression, and a full archive name.
archive_stem() { echo "vzdump-qemu-$vmid-[0-9]{4}_[0-9]{2}_[0-9]{2}-[0-9]{2}_[0-9]{2}_[0-9]{2}"; }
ARCHIVE_SUFFIX='(\.inc)?\.vma(\.(gz|lzo|zst|bz2|xz))?'

# The newest archive of this VM in the dump folder, full or incremental (by the time in its
# name), or nothing.
newest_archive() {
	local f name best='' re
	re="^$(archive_stem)$ARCHIVE_SUFFIX$"
	for f in "$opt_dumpdir/vzdump-qemu-$vmid-"*; do
		name=${f##*/}
		if ! [[ $name =~ $re ]] || [ ! -f "$f" ] || [ -L "$f" ]; then
			continue
		fi
		# (The same prefix and a fixed-width time: the names sort as the times do.)
		[[ -n $best && ! $name > ${best##*/} ]] || best=$f
	done
	printf '%s' "$best"
}

# The bitmap that counts from ARCHIVE: its name without a folder and extensions.
bitmap_of() { # ARCHIVE
	local name=${1##*/}
	printf '%s' "${name%%.*}"
}

# Sets backup_kind (full or incremental) and, for a full, full_reason; with bitmaps on
# (bitmap_new), this backup switches them. --incremental 0: a full, as always, and nothing
# said. Called once the disks are known (prepare) and the mode chosen.
decide_kind() {
	backup_kind=full
	full_reason=
	bitmap_new='' bitmap_old=''
	[ "$opt_incremental" = 1 ] || return 0
	if [ "$opt_stdout" = 1 ]; then
		full_reason="--stdout: there is no dump folder to keep a chain in"
	elif [ "$vm_alive" = 0 ] || [ "$restart" = exited ]; then
		full_reason="the VM is not running (no dirty bitmaps)"
	elif [ "$backup_mode" = stop ]; then
		full_reason="stop mode (a guest that shuts down may take its QEMU and the bitmaps with it)"
	elif [ "$(disks_with_device)" = 0 ]; then
		full_reason="no disk with a device to count changes on"
	else
		bitmap_new=$archive_base
		incremental_base
	fi
	if [ "$backup_kind" = incremental ]; then
		bitmap_old=$(bitmap_of "$inc_parent")
		info "incremental backup: the changes since ${inc_parent##*/} (chain depth $inc_depth of at most $opt_full_every)"
	else
		info "full backup: $full_reason"
	fi
}

disks_with_device() {
	local key n=0
	for key in "${disk_keys[@]}"; do
		[ -z "${disk_qdev[$key]}" ] || n=$((n + 1))
	done
	echo "$n"
}

# Whether the newest archive can be this backup's parent: it lists with its whole chain, the
# chain is not --full-every long yet, its devices are the disks now (names and sizes), and
# every disk has its bitmap, recording and consistent. Sets backup_kind, or full_reason.
incremental_base() {
	local prev listing problems nodes
	prev=$(newest_archive)
	if [ -z "$prev" ]; then
		full_reason="no earlier backup of VM $vmid in $opt_dumpdir"
		return 0
	fi
	if ! listing=$(vma-extract -l --json "$prev" 2>&1); then
		full_reason="the previous backup ${prev##*/} cannot be read: ${listing##*vma-extract: }"
		return 0
	fi
	inc_depth=$(jq '(.chain // [{}])[0].depth // 0' <<<"$listing")
	if [ "$inc_depth" -ge "$opt_full_every" ]; then
		full_reason="the chain has $inc_depth incremental backups already (--full-every $opt_full_every)"
		return 0
	fi
	# shellcheck disable=SC2016 # jq variables
	problems=$(disks_json | graph_jq -r --argjson prev "$listing" 'g::device_changes($prev)')
	if [ -n "$problems" ]; then
		full_reason="${problems//$'\n'/, } since ${prev##*/}"
		return 0
	fi
	nodes=$(qmp query-named-block-nodes flat=true 2>"$private_dir/qmp.err") ||
		fail "query-named-block-nodes failed$(why_of "$private_dir/qmp.err")"
	# shellcheck disable=SC2016 # jq variables
	problems=$(graph_jq -r --argjson disks "$(disks_json)" --arg name "$(bitmap_of "$prev")" \
		'g::bitmap_problems($name; $disks)' <<<"$nodes")
	if [ -n "$problems" ]; then
		full_reason=${problems%%$'\n'*}
		return 0
	fi
	backup_kind=incremental
	inc_parent=$prev
	inc_listing=$listing
	inc_depth=$((inc_depth + 1))
}

# The writer's --incremental blob, in the private folder; its path.
incremental_blob() {
	local blob=$private_dir/incremental.json
	# shellcheck disable=SC2016 # jq variables
	disks_json | graph_jq -c --argjson prev "$inc_listing" --arg file "${inc_parent##*/}" \
		--arg old "$bitmap_old" 'g::incremental_blob($prev; $file; $old)' >"$blob" ||
		fail "internal error: jq"
	printf '%s' "$blob"
}

# An incremental backup's changes, logged as vzdump logs them with dirty bitmaps: each disk's,
# then all of them, counted by the old bitmaps, which stopped counting when they were disabled
# at the instant. A disk with no bitmap (the TPM state) is sent whole and counted so.
log_dirty() {
	[ "$backup_kind" = incremental ] || return 0
	local nodes key how count size dirty=0 total=0
	nodes=$(qmp query-named-block-nodes flat=true 2>/dev/null) || return 0
	# shellcheck disable=SC2016 # jq variables
	while read -r key how count size; do
		if [ "$how" = bitmap ]; then
			info "$key: dirty-bitmap status: OK ($(render_bytes "$count" 1) of $(render_bytes "$size" 1) dirty)"
		else
			info "$key: no dirty bitmap, sent whole ($(render_bytes "$size" 1))"
		fi
		dirty=$((dirty + count)) total=$((total + size))
	done < <(graph_jq -r --argjson disks "$(disks_json)" --arg name "$bitmap_old" \
		'g::dirty_counts($name; $disks)' <<<"$nodes")
	info "using fast incremental mode (dirty-bitmap), $(render_bytes "$dirty" 1) dirty of $(render_bytes "$total" 1) total"
}

# For the snapshot plan: {new, old} or null (no bitmaps switched).
bitmap_plan_json() {
	# shellcheck disable=SC2016 # jq variables
	jq -nc --arg new "$bitmap_new" --arg old "$bitmap_old" \
		'if $new == "" then null else {new: $new, old: (if $old == "" then null else $old end)} end'
}

# The nodes of the disks with a device, where the bitmaps are.
bitmap_nodes() {
	local key
	for key in "${disk_keys[@]}"; do
		[ -z "${disk_qdev[$key]}" ] || printf '%s\n' "${disk_node[$key]}"
	done
}

# Recorded before the snapshot batch that switches the bitmaps.
record_bitmap_switch() {
	[ -n "$bitmap_new" ] || return 0
	local -a nodes
	mapfile -t nodes < <(bitmap_nodes)
	state "bitmaps $bitmap_new ${bitmap_old:--} ${nodes[*]}"
	bitmaps_switched=1
}

# The archive is complete: the new bitmap counts from it on, and every other of ours goes.
keep_bitmaps() {
	[ "$bitmaps_switched" = 1 ] || return 0
	bitmaps_switched=0
	prune_bitmaps "$bitmap_new" "$(bitmap_nodes)" || warn "removing the bitmaps no backup needs any more failed"
	state "bitmaps-kept"
}

# The backup failed before its archive was complete: the changes since the switch go back
# into the bitmap they were taken from, which counts on (a full's new bitmap just goes).
roll_back_bitmaps() {
	[ "$bitmaps_switched" = 1 ] || return 0
	bitmaps_switched=0
	bitmap_rollback "$bitmap_new" "$bitmap_old" "$(bitmap_nodes)"
	state "bitmaps-kept"
}

# The rollback of a switch NEW (OLD: the one it read, or empty) on the nodes NODES (one a line),
# as far as QEMU still has them: errors are expected and ignored (a raw disk's bitmaps after
# QEMU restarted, a switch that never happened).
bitmap_rollback() { # NEW OLD NODES
	local batch
	# shellcheck disable=SC2016 # jq variables
	batch=$(jq -L "$LIBDIR" -nr --arg new "$1" --arg old "$2" --arg nodes "$3" \
		'import "graph" as g; g::bitmap_rollback($new; (if $old == "" then null else $old end);
			$nodes | g::lines_or_null // [])') || return 0
	[ -z "$batch" ] || qmp -k -f - <<<"$batch" >/dev/null 2>&1 || true
}

# Removes this VM's bitmaps (vzdump-qemu-VMID-*) but KEEP on the nodes NODES (one a line; all
# nodes when empty); QUERY is query-named-block-nodes' answer when the caller has it.
prune_bitmaps() { # KEEP NODES [QUERY]
	local query=${3:-} batch
	[ -n "$query" ] || query=$(qmp query-named-block-nodes flat=true 2>/dev/null) || return 1
	# shellcheck disable=SC2016 # jq variables
	batch=$(graph_jq -r --arg prefix "vzdump-qemu-$vmid-" --arg keep "$1" --arg only "$2" \
		'g::bitmap_prune($prefix; $keep; $only | g::lines_or_null)' <<<"$query") || return 1
	[ -z "$batch" ] || qmp -k -f - <<<"$batch" >/dev/null 2>&1
}

# --cleanup: this VM's bitmaps that no chain needs go, on every node: all but the one named
# after the newest archive in the dump folder (a backup into another dump folder starts its
# chain with a full afterwards).
sweep_bitmaps() {
	local nodes keep n
	nodes=$(qmp query-named-block-nodes flat=true 2>/dev/null) || return 0
	keep=$(bitmap_of "$(newest_archive)")
	# shellcheck disable=SC2016 # jq variables
	n=$(graph_jq -r --arg prefix "vzdump-qemu-$vmid-" --arg keep "$keep" \
		'[g::bitmap_prune($prefix; $keep; null)] | length' <<<"$nodes") || return 0
	[ "$n" != 0 ] || return 0
	swept=1
	info "removing $n dirty bitmap(s) of VM $vmid that no backup in $opt_dumpdir counts on"
	prune_bitmaps "$keep" "" "$nodes" || warn "removing the bitmaps failed"
}
