# Helpers for tests/vzdump-prune.bats: build dump directories from wall-clock stamps and show
# vzdump-prune's decisions in a compact, exact form.
# shellcheck shell=bash

# The archive name vzdump gives guest VMID's backup at STAMP (YYYY_MM_DD-HH_MM_SS).
backup_name() { # VMID STAMP [EXTENSION]
	printf 'vzdump-qemu-%s-%s.vma%s\n' "$1" "$2" "${3-.zst}"
}

# The name of an incremental backup: the full's with .inc before .vma.
inc_name() { # VMID STAMP [EXTENSION]
	printf 'vzdump-qemu-%s-%s.inc.vma%s\n' "$1" "$2" "${3-.zst}"
}

# Creates empty incremental backups of guest VMID at each STAMP in DIR.
make_incs() { # DIR VMID STAMP...
	local dir=$1 vmid=$2 stamp
	shift 2
	mkdir -p "$dir"
	for stamp in "$@"; do
		: >"$dir/$(inc_name "$vmid" "$stamp")"
	done
}

# Creates empty backups of guest VMID at each STAMP in DIR.
make_backups() { # DIR VMID STAMP...
	local dir=$1 vmid=$2 stamp
	shift 2
	mkdir -p "$dir"
	for stamp in "$@"; do
		: >"$dir/$(backup_name "$vmid" "$stamp")"
	done
}

# Marks the backup of guest VMID at STAMP in DIR as protected.
protect() { # DIR VMID STAMP
	: >"$1/$(backup_name "$2" "$3").protected"
}

# Runs vzdump-prune --json ARGS and prints one "MARK NAME" line per backup, with the
# standard names shortened to their stamp (and VMID when it is not 100), an incremental's
# followed by " inc", and "needed by" with the same short name of the backup that needs it.
decisions() { # ARGS...
	local json
	json=$(vzdump-prune --json "$@") || return
	jq -r '.[] | "\(.mark) \(.file)" + if .needed_by then " needed by \(.needed_by)" else "" end' \
		<<<"$json" |
		sed -E 's/vzdump-qemu-100-([0-9_-]+)\.inc\.vma\.zst( |$)/\1 inc\2/g;
			s/vzdump-qemu-([0-9]+)-([0-9_-]+)\.inc\.vma\.zst( |$)/\1:\2 inc\3/g;
			s/vzdump-qemu-100-([0-9_-]+)\.vma\.zst( |$)/\1\2/g;
			s/vzdump-qemu-([0-9]+)-([0-9_-]+)\.vma\.zst( |$)/\1:\2\3/g'
}

# The sorted list of files left in DIR.
files_in() { # DIR
	(cd "$1" && LC_ALL=C ls -A)
}
