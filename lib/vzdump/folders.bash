# shellcheck shell=bash
# lib/vzdump/folders.bash: the folders that steer what root does — the state folder (whose
# files --cleanup acts on), the run folder (the VMs' sockets and the locks) and the tmpdir —
# checked before the job touches them, as sshd's StrictModes checks a user's files.
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

# Refuses (exit 2, the folder and the fix named) a folder that another user could change under
# root: it and every folder above it must belong to root or to the user running the job, and
# none may be writable by group or others. A folder above may be, with the sticky bit (as
# /tmp): others cannot rename or remove what is ours in it. With sticky-ok that holds for the
# folder itself too: the tmpdir, where the job only works in a new private folder of its own
# (mktemp -d, 0700). Prints the folder's real path, which the job uses from then on.
safe_folder() { # WHAT DIR [sticky-ok]
	local what=$1 dir=$2 sticky_ok=${3:-} real p uid mode owner i
	local -a paths=() stats=()
	if ! real=$(realpath -e -- "$dir" 2>/dev/null) || [ ! -d "$real" ]; then
		folder_refused "the $what $dir does not exist or is no folder"
	fi
	p=$real
	while :; do
		paths+=("$p")
		[ "$p" != / ] || break
		p=${p%/*}
		p=${p:-/}
	done
	# One stat for the whole walk (each process costs milliseconds); when it fails, the
	# first folder that cannot be read is named.
	mapfile -t stats < <(stat -c '%u %a' -- "${paths[@]}" 2>/dev/null)
	if [ "${#stats[@]}" -ne "${#paths[@]}" ]; then
		for p in "${paths[@]}"; do
			stat -- "$p" >/dev/null 2>&1 ||
				folder_refused "cannot check the $what $dir: cannot stat $p"
		done
		folder_refused "cannot check the $what $dir: cannot stat it"
	fi
	for i in "${!paths[@]}"; do
		p=${paths[i]}
		read -r uid mode <<<"${stats[i]}"
		if [ "$uid" != 0 ] && [ "$uid" != "$EUID" ]; then
			owner=$(stat -c %U -- "$p")
			folder_refused "the $what $dir is not safe: $p belongs to user $owner - make it root's (chown root $p) or choose another folder"
		fi
		# (i = 0: the folder itself.)
		if (((8#$mode & 8#022) != 0)) && ! { (((8#$mode & 8#1000) != 0)) && { [ "$i" != 0 ] || [ -n "$sticky_ok" ]; }; }; then
			folder_refused "the $what $dir is not safe: $p is writable by group or others (mode $mode) - make it root's alone (chmod go-w $p) or choose another folder"
		fi
	done
	printf '%s\n' "$real"
}

folder_refused() { # MESSAGE
	printf '%s: %s\n' "$PROG" "$1" >&2
	exit 2
}

# The job's folders, checked, by their real paths; the state folder is made (0700) if missing.
check_folders() {
	opt_rundir=$(safe_folder "run folder" "$opt_rundir")
	if [ ! -d "$opt_statedir" ] && [ ! -L "$opt_statedir" ]; then
		safe_folder "state folder's parent" "$(dirname -- "$opt_statedir")" >/dev/null
		mkdir -m 0700 -- "$opt_statedir" 2>/dev/null ||
			folder_refused "cannot create the state folder $opt_statedir"
	fi
	opt_statedir=$(safe_folder "state folder" "$opt_statedir")
	opt_tmpdir=$(safe_folder tmpdir "$opt_tmpdir" sticky-ok)
	# The dump folder may be shared: it only has to be there (what is written there is
	# written by vzdump-put).
	if [ "$opt_cleanup" = 0 ] && [ "$opt_stdout" = 0 ] && [ ! -d "$opt_dumpdir" ]; then
		folder_refused "the dump folder $opt_dumpdir does not exist or is no folder"
	fi
}
