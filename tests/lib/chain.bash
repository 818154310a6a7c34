# shellcheck shell=bash
# Chains of incremental archives, for the tests that read them (after `load lib/common` and
# `load lib/vma`): a full made by vma-create from files, then incrementals pushed cluster by
# cluster, as QEMU's backup job pushes them (tests/lib/push_changed.py), into
# vma-create --listen --incremental. Each archive's disks as they were at that backup are kept
# beside it, as ARCHIVE.d0 and ARCHIVE.d1, and its incremental blob as ARCHIVE.json.
#
# DEVS (NAME=SIZE...) are the devices the incrementals are made with. lib/listen.bash's
# serve, uri and server_result run in a subshell of their own, on the socket PUSH_SOCK
# (default: ./s.sock), so that a file with functions of those names (vma-extract --serve's
# tests) keeps its own.

push_changed() { "$VZ_PYTHON" "$TOP/tests/lib/push_changed.py" "$@"; }
uuid_of() { vma-extract -l --json "$1" | jq -r .uuid; }

# The incremental blob of an archive building on PARENT, in the chain of the full FULL.
inc_json() { # PARENT FULL DEPTH NAME=SIZE...
	local parent=$1 full=$2 depth=$3
	shift 3
	# shellcheck disable=SC2016 # jq's variables
	jq -n --arg pu "$(uuid_of "$parent")" --arg pf "${parent##*/}" --arg fu "$(uuid_of "$full")" \
		--argjson depth "$depth" '{format: "vzdump-qemu-incremental", version: 1,
			parent: {uuid: $pu, file: $pf}, full: {uuid: $fu}, depth: $depth,
			devices: [$ARGS.positional[] | split("=") |
				{name: .[0], size: (.[1] | tonumber), bitmap: ("vzdump-" + .[0])}]}' \
		--args "$@"
}

# The disks as they are now (d0.raw, d1.raw) saved beside an archive, as ARCHIVE.d0/.d1.
keep_disks() { cp d0.raw "$1.d0" && cp d1.raw "$1.d1"; }

full_backup() { # ARCHIVE [VMA-CREATE-ARGS...]
	local out=$1
	shift
	vma-create -o "$out" -c qemu-server.conf "$@" drive-scsi0=d0.raw drive-virtio1=d1.raw
	keep_disks "$out"
}

# An incremental of the disks since PARENT (whose disks keep_disks kept), pushed cluster by
# cluster into vma-create --listen --incremental. The clusters pushed are counted in ./pushed.
inc_backup() { # ARCHIVE PARENT FULL DEPTH [VMA-CREATE-ARGS...]
	local out=$1 parent=$2 full=$3 depth=$4
	shift 4
	inc_json "$parent" "$full" "$depth" "${DEVS[@]}" >inc.json
	(
		load lib/listen
		# shellcheck disable=SC2034 # lib/listen.bash's serve and uri use it
		SOCK=${PUSH_SOCK:-$PWD/s.sock}
		# a failure on the way must not leave the server waiting for its clients
		trap '[ -z "${SERVER:-}" ] || kill "$SERVER" 2>/dev/null' EXIT
		OUT=$out serve -c qemu-server.conf --incremental inc.json "$@" "${DEVS[@]}"
		push_changed "$parent.d0" d0.raw "$(uri drive-scsi0)" >pushed
		push_changed "$parent.d1" d1.raw "$(uri drive-virtio1)" >>pushed
		server_result
		[ "$CODE" = 0 ] || fail "vma-create: $(cat server.err)"
	)
	keep_disks "$out"
	cp inc.json "$out.json"
}

disk_write() { # FILE QEMU-IO-COMMAND...
	local file=$1 c
	local -a args=()
	shift
	for c in "$@"; do args+=(-c "$c"); done
	qemu-io -f raw "${args[@]}" "$file" >/dev/null
}

# A full and three incrementals (plain, zstd, gzip), with changes of every kind in between:
# a whole cluster, a few bytes of one, a cluster zeroed, the short last cluster, a cluster
# changed again in a later backup, a device without any change. DEVS must be
# (drive-scsi0=3149824 drive-virtio1=1048576).
# shellcheck disable=SC2034 # used by the files that load this
F=vzdump-qemu-100-2026_12_01-00_00_00.vma
# shellcheck disable=SC2034
I1=vzdump-qemu-100-2026_12_02-00_00_00.inc.vma
# shellcheck disable=SC2034
I2=vzdump-qemu-100-2026_12_03-00_00_00.inc.vma.zst
# shellcheck disable=SC2034
I3=vzdump-qemu-100-2026_12_04-00_00_00.inc.vma.gz
make_chain() {
	echo "name: chained" >qemu-server.conf
	random_file d0.raw 3149824
	truncate -s 1M d1.raw
	disk_write d1.raw "write -P 0x5a 128k 192k"
	full_backup "$F"
	disk_write d0.raw "write -P 0x11 64k 64k" "write -P 0x12 1000k 10k" "write -z 2M 128k" \
		"write -P 0x13 3145728 4096"
	inc_backup "$I1" "$F" "$F" 1
	assert_equal "$(cat pushed)" "$(printf '5\n0')"
	disk_write d0.raw "write -P 0x21 64k 64k"
	disk_write d1.raw "write -P 0x22 0 4k"
	inc_backup "$I2" "$I1" "$F" 2 -z zstd
	disk_write d0.raw "write -z 960k 64k" "write -P 0x31 3000k 64k"
	disk_write d1.raw "write -P 0x33 512k 64k" "write -z 128k 64k"
	inc_backup "$I3" "$I2" "$F" 3 -z gzip
}
