# lib/vzdump/graph.jq: every change vzdump.sh makes to QEMU's block graph, as jq definitions
# that turn JSON in (the disks, QEMU's replies) into QMP commands out. Each has golden tests in
# tests/graph/ (input, program, expected output), so a change here is a deliberate diff.
#
# A disk is {key, vol, node, qdev, size, fmt, dev}: the config key (scsi0), its volume, the
# QEMU node it is on, the device path for qom-set ("" for a node without a device: the TPM
# state), the size in bytes, the format, and its name in the archive and NBD export.
#
# The plans print lines "U <command>" (the undo of a step, recorded before it is tried) and
# "B <command>" (the step itself, a line of the QMP batch).

# The disks from the driver's flat list of fields KEY VOL NODE QDEV SIZE FMT, six per disk.
def disk_list($tpm):
	[range(0; length; 6) as $i | .[$i:$i + 6]
	 | {key: .[0], vol: .[1], node: .[2], qdev: .[3], size: (.[4] | tonumber), fmt: .[5],
	    dev: (if .[0] == "tpmstate0" then $tpm else "drive-" + .[0] end)}];

def undo(c): "U " + (c | tojson);
def step(c): "B " + (c | tojson);
def blockdev_del($node): {execute: "blockdev-del", arguments: {"node-name": $node}};

# A device's id from its qdev path (/machine/peripheral/ID/virtio-backend gives ID).
def qid: (.qdev // "") | if startswith("/machine/peripheral/") then split("/")[3] else . end;

# A list the driver keeps one item a line (input), as an array; null when the string is empty,
# which the driver's callers mean as "every one" (a list of blank lines is none).
def lines_or_null: if . == "" then null else split("\n") | map(select(. != "")) end;

# --- finding the disks in QEMU (input: query-block) ----------------------------------------

# The config disk $k with volume $p (or real path $rp): drive id or node name drive-KEY, else
# qdev id KEY, else the image file. Output: NODE US QDEV US SIZE US FORMAT, or nothing.
def find_block($k; $p; $rp):
	[.[] | select(.inserted)] as $b
	| ([$b[] | select(.device == "drive-" + $k or .inserted["node-name"] == "drive-" + $k)]
	  + [$b[] | select(qid == $k)]
	  + [$b[] | select(.inserted.file == $p or .inserted.file == $rp)])
	| first // empty
	| [.inserted["node-name"], (.qdev // ""), (.inserted.image["virtual-size"] | tostring),
	   .inserted.drv] | join("\u001f");

# With no config: every writable disk with a device, CD-ROMs left out. Lines
# KEY US NODE US QDEV US SIZE US FORMAT US FILE, KEY empty when neither a drive-KEY name nor a
# KEY qdev id says which it is.
def qemu_disks:
	def diskkey: test("^(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5])|efidisk0)$");
	.[] | select(.inserted and (.qdev // "") != "" and .type != "cdrom" and (.inserted.ro | not))
	| ([.device, .inserted["node-name"]] | map(select(startswith("drive-")) | ltrimstr("drive-"))
		| map(select(diskkey)) | first) as $named
	| [($named // (qid | select(diskkey)) // ""),
	   .inserted["node-name"], .qdev, (.inserted.image["virtual-size"] | tostring),
	   .inserted.drv, (.inserted.file // "")] | join("\u001f");

# --- the backup's steps (input: the disks) -------------------------------------------------

# The scratch ("fleecing") node of each disk: a qcow2 on fdset $base + i, or by path under
# $dir when $base is 0. A disk without a device (the TPM state) is attached read-only instead.
def scratch_plan($base; $dir):
	to_entries[] | .key as $i | .value
	| if .qdev == "" then
		undo(blockdev_del(.node)),
		step({execute: "blockdev-add", arguments: {driver: "raw", "node-name": .node,
			"read-only": true, file: {driver: "file", filename: .vol}}})
	  else
		(if $base > 0 then undo({execute: "remove-fd", arguments: {"fdset-id": ($base + $i)}})
		 else empty end),
		undo(blockdev_del("vz-fl-" + .key)),
		step({execute: "blockdev-add", arguments: {driver: "qcow2",
			"node-name": ("vz-fl-" + .key), discard: "unmap",
			file: {driver: "file", filename: (if $base > 0
				then "/dev/fdset/" + ($base + $i | tostring)
				else $dir + "/scratch-" + .key + ".qcow2" end)}}})
	  end;

# --- incremental backups: the dirty bitmaps ------------------------------------------------
# A bitmap is named after the archive it counts from (vzdump-qemu-VMID-TIME): the next job
# matches it to the newest archive of the dump folder without a state file of its own.
# $bm: {new: the name of this backup's, old: the one an incremental backup reads, or null}.

# At the instant, in one transaction: the new bitmap on every disk with a device (persistent on
# qcow2, where it survives QEMU; transient elsewhere) and, for an incremental backup, the old
# one disabled: it keeps exactly the changes up to the instant, the new one those after.
def bitmap_switch($bm):
	if $bm == null then empty else
	[.[] | select(.qdev != "") | .node as $n
	 | (if $bm.old == null then empty
	    else {type: "block-dirty-bitmap-disable", data: {node: $n, name: $bm.old}} end),
	   {type: "block-dirty-bitmap-add", data: {node: $n, name: $bm.new, granularity: 65536,
		persistent: (.fmt == "qcow2")}}]
	| if length == 0 then empty else step({execute: "transaction", arguments: {actions: .}}) end
	end;

# After a backup that failed: the changes since the switch go back into $old, which counts on
# as if nothing had happened (for a full, $old is null: the new bitmap just goes). One
# transaction per node in $nodes, so that a disk whose bitmaps are gone (a raw disk's, after
# QEMU restarted) does not hold up the others.
def bitmap_rollback($new; $old; $nodes):
	$nodes[] as $n
	| if $old == null then {execute: "block-dirty-bitmap-remove", arguments: {node: $n, name: $new}}
	  else {execute: "transaction", arguments: {actions: [
		{type: "block-dirty-bitmap-merge", data: {node: $n, target: $old, bitmaps: [$new]}},
		{type: "block-dirty-bitmap-enable", data: {node: $n, name: $old}},
		{type: "block-dirty-bitmap-remove", data: {node: $n, name: $new}}]}} end
	| tojson;

# The bitmaps named $prefix* on the nodes $nodes (every node when null) but $keep, removed: no
# chain needs them (input: query-named-block-nodes; QEMU's own bitmaps have no name).
def bitmap_prune($prefix; $keep; $nodes):
	.[] | .["node-name"] as $n | select($nodes == null or ($nodes | index($n)))
	| .["dirty-bitmaps"] // [] | .[] | (.name // "") | select(startswith($prefix) and . != $keep)
	| {execute: "block-dirty-bitmap-remove", arguments: {node: $n, name: .}} | tojson;

# Why the bitmap $name cannot be the base of an incremental backup of the disks $disks, one
# line per disk with a problem; nothing when all are fine (input: query-named-block-nodes).
def bitmap_problems($name; $disks):
	. as $nodes
	| $disks[] | select(.qdev != "") | .dev as $dev | .node as $n
	| ([$nodes[] | select(.["node-name"] == $n) | .["dirty-bitmaps"] // [] | .[]
	    | select(.name == $name)] | first) as $b
	| if $b == null and .fmt != "qcow2"
	  then "no bitmap \($name) on \($dev) (only a qcow2 disk's outlive QEMU)"
	  elif $b == null then "no bitmap \($name) on \($dev)"
	  elif $b.inconsistent then "bitmap \($name) on \($dev) is inconsistent (QEMU was not shut down cleanly)"
	  elif ($b.recording | not) then "bitmap \($name) on \($dev) is disabled (a backup did not finish)"
	  elif $b.granularity != 65536 then "bitmap \($name) on \($dev) has a granularity of \($b.granularity) bytes, not 64 KiB"
	  else empty end;

# What an incremental backup sends of each of the disks $disks, one line "KEY HOW BYTES SIZE"
# each: HOW is "bitmap" and BYTES what the bitmap $name counts as changed, or, for a disk with
# no device to count on (the TPM state), "whole" and its size (input: query-named-block-nodes).
def dirty_counts($name; $disks):
	. as $nodes
	| $disks[] | .node as $n
	| if .qdev == "" then "\(.key) whole \(.size) \(.size)"
	  else ([$nodes[] | select(.["node-name"] == $n) | .["dirty-bitmaps"] // [] | .[]
		| select(.name == $name) | .count] | first) as $count
	  | select($count != null) | "\(.key) bitmap \($count) \(.size)" end;

# How the disks (input) differ from the devices of the previous backup ($prev: its
# `vma-extract -l --json`), one line each; nothing when they match.
def device_changes($prev):
	(map({name: .dev, size}) | sort_by(.name)) as $after
	| ($prev.devices | map({name, size}) | sort_by(.name)) as $before
	| ($before | map(.name)) as $before_names | ($after | map(.name)) as $after_names
	| ($after[] | select(.name as $x | $before_names | index($x) | not) | "disk \(.name) added"),
	  ($before[] | select(.name as $x | $after_names | index($x) | not) | "disk \(.name) removed"),
	  ($after[] | . as $d | $before[] | select(.name == $d.name and .size != $d.size)
	   | "disk \(.name) resized from \(.size) to \($d.size) bytes");

# The incremental blob (vma-create --incremental) of a backup whose parent is $prev (its
# listing, file name $file), reading the bitmap $old (input: the disks).
def incremental_blob($prev; $file; $old):
	(($prev.chain // [$prev]) | last | .uuid) as $full
	| ((($prev.chain // []) | first | .depth) // 0) as $depth
	| {format: "vzdump-qemu-incremental", version: 1,
	   parent: {uuid: $prev.uuid, file: $file}, full: {uuid: $full}, depth: ($depth + 1),
	   devices: [.[] | {name: .dev, size, bitmap: $old}]};

# The instant: (stop,) per disk a copy-before-write filter onto its scratch node and the device
# switched onto the filter, (cont). $status is QEMU's run state. The snapshot-access node the
# job reads comes after (jobs_plan): the filter alone fixes the instant, and every command
# less here is a millisecond less of a frozen guest. With incremental backups on, the dirty
# bitmaps switch at the same instant (bitmap_switch($bm)).
def snapshot_plan($status; $bm):
	(if $status == "running" then step({execute: "stop"}) else empty end),
	bitmap_switch($bm),
	(.[] | select(.qdev != "")
	 | undo(blockdev_del("vz-cbw-" + .key)),
	   undo({execute: "qom-set", arguments: {path: .qdev, property: "drive", value: .node}}),
	   step({execute: "blockdev-add", arguments: {driver: "copy-before-write",
		"node-name": ("vz-cbw-" + .key), file: .node, target: ("vz-fl-" + .key),
		"on-cbw-error": "break-snapshot", "cbw-timeout": 30}}),
	   step({execute: "qom-set", arguments: {path: .qdev, property: "drive",
		value: ("vz-cbw-" + .key)}})),
	(if $status == "running" then step({execute: "cont"}) else empty end);
def snapshot_plan($status): snapshot_plan($status; null);

# A snapshot-access node over each disk's filter (the instant's view the job reads), an NBD
# target node per disk on the passed fd tN, and all backup jobs in one transaction. The
# jobs run at full speed (speed 0): --bwlimit is kept by the writer, for the whole backup and
# on the data alone, as vzdump's is. $workers: performance's max-workers, QEMU's x-perf of
# each job (null: QEMU's default). $old: for an incremental backup, the bitmap it reads (null
# for a full): copied onto the snapshot-access node, the only place the job looks for its
# bitmap, as vz-inc; the job then pushes only those clusters (a disk without a device, the
# TPM state, is small and pushed whole). "U cancel-jobs" is the driver's own pseudo-command.
def jobs_plan($workers; $old):
	. as $disks
	| ($disks[] | select(.qdev != "")
	   | undo(blockdev_del("vz-acc-" + .key)),
	     step({execute: "blockdev-add", arguments: {driver: "snapshot-access",
		"node-name": ("vz-acc-" + .key), file: ("vz-cbw-" + .key)}}),
	     (if $old == null then empty else
		step({execute: "block-dirty-bitmap-add", arguments: {node: ("vz-acc-" + .key),
			name: "vz-inc", granularity: 65536}}),
		step({execute: "block-dirty-bitmap-merge", arguments: {node: ("vz-acc-" + .key),
			target: "vz-inc", bitmaps: [{node: .node, name: $old}]}}) end)),
	  ($disks | to_entries[] | .key as $i | .value
	   | undo(blockdev_del("vz-tgt-" + .key)),
	     step({execute: "blockdev-add", arguments: {driver: "raw",
		"node-name": ("vz-tgt-" + .key), file: {driver: "nbd", export: .dev,
		server: {type: "fd", str: ("t" + ($i | tostring))}}}})),
	  ($disks[] | undo({execute: "job-dismiss", arguments: {id: ("vzdump-drive-" + .key)}})),
	  "U cancel-jobs",
	  step({execute: "transaction", arguments: {actions: [$disks[] | {type: "blockdev-backup",
		data: ({"job-id": ("vzdump-drive-" + .key),
		device: (if .qdev == "" then .node else "vz-acc-" + .key end),
		target: ("vz-tgt-" + .key)}
		+ (if $old == null or .qdev == "" then {sync: "full"}
		   else {sync: "bitmap", bitmap: "vz-inc", "bitmap-mode": "never"} end)
		+ {"auto-dismiss": false, speed: 0}
		+ (if $workers == null then {} else {"x-perf": {"max-workers": $workers}} end))}]}});
def jobs_plan($workers): jobs_plan($workers; null);

# Whether an undo command read back from a state file is of a shape the plans above make: a
# state file is data, and anything else in it is refused, never sent ($tpm: the TPM's node).
# A device's path is its QOM path, or its bare id: query-block gives a scsi-hd's id.
def undo_ok($tpm):
	def args($k): (keys == ["arguments", "execute"]) and (.arguments | type == "object")
		and (.arguments | keys == $k);
	type == "object" and
	((.execute == "blockdev-del" and args(["node-name"])
	 and (.arguments["node-name"] | type == "string"
		and (. == $tpm or test("^vz-(fl|cbw|acc|tgt)-[a-z]+[0-9]+$"))))
	or (.execute == "remove-fd" and args(["fdset-id"])
	    and (.arguments["fdset-id"] | type == "number" and . >= 0 and floor == .))
	or (.execute == "qom-set" and args(["path", "property", "value"])
	    and .arguments.property == "drive"
	    and (.arguments.path | type == "string"
		and (startswith("/machine/") or test("^[A-Za-z][A-Za-z0-9_.-]*$")))
	    and (.arguments.value | type == "string"))
	or (.execute == "job-dismiss" and args(["id"])
	    and (.arguments.id | type == "string" and test("^vzdump-drive-[a-z]+[0-9]+$"))));

# --- watching the jobs (input: query-jobs) ---------------------------------------------------

def ours: .id | startswith("vzdump-drive-");

# The ids among $ids of jobs that have not concluded, one per line.
def unconcluded($ids): .[] | select(.id as $i | $ids | index($i)) | select(.status != "concluded") | .id;

# missing (a job of $ids is gone), running, done, or "error ID: WHY; ...".
def jobs_verdict($ids):
	[.[] | select(.id as $i | $ids | index($i))] as $mine
	| if ($mine | length) < ($ids | length) then "missing"
	  elif any($mine[]; .status != "concluded") then "running"
	  else [$mine[] | select(.error) | "\(.id): \(.error)"] | join("; ")
	  | if . == "" then "done" else "error " + . end end;

# --- the undo ------------------------------------------------------------------------------

# Whether the undo $c (a qom-set of a device back onto its own node) is needed: the device is
# on another node (input: query-block). QEMU 7.2 aborts on a qom-set of a device's drive onto
# the node it already has.
def drive_moved($c):
	$c.arguments as $a
	| [.[] | select(.qdev == $a.path) | .inserted["node-name"] // empty] | first
	| . != null and . != $a.value;

# --- leftovers of a killed backup, found by name (input: null) -------------------------------

# How many of our jobs and nodes are in QEMU.
def leftovers($nodes; $jobs; $tpm):
	[$jobs[] | select(ours)] + [$nodes[]
	| select(.["node-name"] | test("^vz-(tgt|acc|cbw|fl)-") or . == $tpm)] | length;

# The batch that removes them: our jobs dismissed, the target and access nodes deleted, each
# device still on one of our filters back onto the filter's child, the filters, the scratch
# nodes and their fdsets (found through the /dev/fdset/N file names), the TPM state's node.
def sweep_batch($nodes; $jobs; $graph; $blocks; $tpm):
	def byname($n): $graph.nodes[] | select(.name == $n) | .id;
	def child($id): [$graph.edges[] | select(.parent == $id and .name == "file") | .child][0];
	def nameof($id): [$graph.nodes[] | select(.id == $id) | .name][0];
	def named($re): $nodes[] | .["node-name"] | select(test($re));
	($jobs[] | select(ours) | {execute: "job-dismiss", arguments: {id: .id}}),
	(named("^vz-tgt-") | blockdev_del(.)),
	(named("^vz-acc-") | blockdev_del(.)),
	($blocks[] | select(.qdev and ((.inserted["node-name"] // "") | startswith("vz-cbw-")))
	 | {execute: "qom-set", arguments: {path: .qdev, property: "drive",
		value: nameof(child(byname(.inserted["node-name"])))}}),
	(named("^vz-cbw-") | blockdev_del(.)),
	([$nodes[] | select(.["node-name"] | test("^vz-fl-")) | .file
	  | capture("^/dev/fdset/(?<n>[0-9]+)$").n | tonumber] as $sets
	 | (named("^vz-fl-") | blockdev_del(.)),
	   ($sets[] | {execute: "remove-fd", arguments: {"fdset-id": .}})),
	(named("^" + $tpm + "$") | blockdev_del(.))
	| tojson;
