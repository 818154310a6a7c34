# shellcheck shell=bash
# dist/completion/vzdump-qemu.bash: bash completion for every command of vzdump-qemu (qmpctl,
# gafreeze, vma-create, vma-extract, vzdump-prune, vzdump-put, vzdump.sh). Installed once, as
# .../bash-completion/completions/vzdump-qemu, and linked there under each command's name, the
# name by which bash-completion loads it; sourcing it by hand works too. Plain bash (compgen,
# compopt): nothing of bash-completion's own helpers is used.
#
# What is completed:
#   - options: a C tool's own list (its hidden --long-options and --short-options), vzdump.sh's
#     from VZQ_DRIVER_OPTIONS below (tests/completion.bats holds it to lib/vzdump/options.bash);
#   - option values: files, folders, and the fixed values (--compress, --mode, ...);
#   - vzdump.sh's VMIDs: CONFDIR/VMID.conf, CONFDIR found as the driver finds it;
#   - vma-extract's archive: folders and *.vma, *.vma.zst, *.vma.gz, *.vma.lzo, *.vma.xz;
#   - qmpctl -s SOCKET: the monitor's commands (query-commands) and a command's argument names
#     (query-qmp-schema, with jq), each asked by qmpctl itself with a deadline of
#     VZQ_QMP_TIMEOUT seconds (1), so that a dead or busy monitor never holds up the shell.
#     Not with -a (a guest agent), -f, -H or --json.
# Words typed are data: nothing of them or of what QEMU or the file system returns is ever
# expanded or evaluated (no compgen -W).

VZQ_QMP_TIMEOUT=${VZQ_QMP_TIMEOUT:-1}

# vzdump.sh's options: VALUE_OPTIONS of lib/vzdump/options.bash and its flags.
VZQ_DRIVER_VALUE_OPTIONS="--dumpdir --tmpdir --confdir --rundir --compress --zstd --pigz
 --bwlimit --script --lockwait --ionice --statedir --mode --stopwait --exclude --prune-backups
 --remove --notes-template --protected --mailto --mailnotification --notification-mode
 --maxfiles --fleecing --performance --node --incremental --full-every"
VZQ_DRIVER_OPTIONS="$VZQ_DRIVER_VALUE_OPTIONS --stdout --quiet --json --cleanup --all -h --help"

# Walks the words before the one being completed, the way getopt_long reads them (options
# anywhere, "--" ends them, "-xVALUE", "--name=value" or "--name value"). VALUE_OPTIONS: the
# options that take a value, space-separated. Sets:
#   vzq_cur      the word being completed (after the "=" bash splits off --name=, the value)
#   vzq_valopt   the option whose value that word is, or empty
#   vzq_args     the words that are not options or their values, before it
#   vzq_dashdash the number of those that came before "--", or -1 when there was none
#   vzq_seen     " -x --name ... ": the options given, each short one of a cluster apart
_vzq_parse() { # VALUE_OPTIONS
	local valopts=" ${1//$'\n'/ } " n=$COMP_CWORD i=1 j w c pending=
	vzq_cur=${COMP_WORDS[n]-} vzq_valopt='' vzq_args=() vzq_dashdash=-1 vzq_seen=" "
	while [ "$i" -lt "$n" ]; do
		w=${COMP_WORDS[i]}
		if [ -n "$pending" ]; then
			pending=
		elif [ "$vzq_dashdash" -ge 0 ]; then
			vzq_args+=("$w")
		elif [ "$w" = -- ]; then
			vzq_dashdash=${#vzq_args[@]}
		elif [[ $w == --?* ]]; then
			vzq_seen+="${w%%=*} "
			if [[ $w != *=* && $valopts == *" $w "* ]]; then
				# "--name=value", which bash splits into "--name" "=" "value".
				if [ "${COMP_WORDS[i + 1]-}" = = ]; then
					i=$((i + 1))
				fi
				pending=$w
			fi
		elif [[ $w == -?* ]]; then
			for ((j = 1; j < ${#w}; j++)); do
				c=-${w:j:1}
				vzq_seen+="$c "
				if [[ $valopts == *" $c "* ]]; then
					# The rest of the word is the value, or else the next word is.
					[ $((j + 1)) -lt ${#w} ] || pending=$c
					break
				fi
			done
		else
			vzq_args+=("$w")
		fi
		i=$((i + 1))
	done
	vzq_valopt=$pending
	if [ -n "$pending" ] && [ "$vzq_cur" = = ]; then
		vzq_cur=
	fi
	return 0
}

# Whether any of the options was given before the word being completed.
_vzq_seen() { # OPTION...
	local o
	for o; do
		[[ $vzq_seen != *" $o "* ]] || return 0
	done
	return 1
}

# The value of the last of these options given before the word being completed (a leading ~/
# as the shell expands it), or nothing.
_vzq_option_value() { # OPTION...
	local n=$COMP_CWORD i w o value='' found=1
	for ((i = 1; i < n; i++)); do
		w=${COMP_WORDS[i]}
		[ "$w" != -- ] || break
		for o; do
			if [[ $o == --* && $w == "$o" ]]; then
				if [ "${COMP_WORDS[i + 1]-}" = = ]; then
					i=$((i + 1))
				fi
				if [ $((i + 1)) -lt "$n" ]; then
					value=${COMP_WORDS[i + 1]} found=0
				fi
			elif [[ $o == --* && $w == "$o="* ]]; then
				value=${w#*=} found=0
			elif [[ $o != --* && $w == "$o"* ]]; then
				if [ "$w" != "$o" ]; then
					value=${w#"$o"} found=0
				elif [ $((i + 1)) -lt "$n" ]; then
					value=${COMP_WORDS[i + 1]} found=0
				fi
			fi
		done
	done
	[ "$found" = 0 ] || return 1
	[[ $value != \~/* ]] || value=$HOME/${value#\~/}
	printf '%s\n' "$value"
}

# Adds to COMPREPLY the words that begin with the word being completed: the arguments, or with
# no arguments the lines of standard input.
_vzq_words() { # [WORD...]
	local w
	if [ $# -eq 0 ]; then
		while IFS= read -r w; do
			[[ $w != "$vzq_cur"* ]] || COMPREPLY+=("$w")
		done
		return 0
	fi
	for w; do
		[[ $w != "$vzq_cur"* ]] || COMPREPLY+=("$w")
	done
	return 0
}

_vzq_files() {
	compopt -o filenames 2>/dev/null || :
	mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -f -- "$vzq_cur")
}

_vzq_dirs() {
	compopt -o filenames 2>/dev/null || :
	mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -d -- "$vzq_cur")
}

# Folders, and the files vma-extract is given: Proxmox's archive names.
_vzq_archives() {
	local f
	compopt -o filenames 2>/dev/null || :
	while IFS= read -r f; do
		case $f in
		*.vma | *.vma.zst | *.vma.gz | *.vma.lzo | *.vma.xz) COMPREPLY+=("$f") ;;
		*) [ ! -d "$f" ] || COMPREPLY+=("$f") ;;
		esac
	done < <(compgen -f -- "$vzq_cur")
}

# A C tool's options, as it lists them itself, but the two listing options.
_vzq_tool_options() { # COMMAND
	local o
	while IFS= read -r o; do
		case $o in
		--long-options | --short-options) ;;
		*) _vzq_words "$o" ;;
		esac
	done < <(
		"$1" --long-options 2>/dev/null
		[[ $vzq_cur == --* ]] || "$1" --short-options 2>/dev/null
	)
}

# The driver's config folder as it finds it: the last --confdir before the word being
# completed, else confdir: of the defaults file (the last one), else $VZDUMP_CONFDIR, else
# /etc/vzdump/qemu-server.
_vzq_confdir() {
	local dir line
	if dir=$(_vzq_option_value --confdir); then
		printf '%s\n' "$dir"
		return 0
	fi
	dir=${VZDUMP_CONFDIR:-/etc/vzdump/qemu-server}
	if [ -f "${VZDUMP_CONF:-/etc/vzdump.conf}" ] && [ -r "${VZDUMP_CONF:-/etc/vzdump.conf}" ]; then
		while IFS= read -r line || [ -n "$line" ]; do
			line=${line#"${line%%[![:blank:]]*}"}
			line=${line%"${line##*[![:blank:]$'\r']}"}
			if [[ $line =~ ^confdir:[[:space:]]*(.+)$ ]]; then
				dir=${BASH_REMATCH[1]}
			fi
		done <"${VZDUMP_CONF:-/etc/vzdump.conf}"
	fi
	printf '%s\n' "$dir"
}

# The VMIDs with a config (CONFDIR/VMID.conf, as --all finds them), but those in SKIP.
_vzq_vmids() { # SKIP...
	local dir f id s
	dir=$(_vzq_confdir)
	for f in "$dir"/*.conf; do
		[ -f "$f" ] || continue
		id=${f##*/}
		id=${id%.conf}
		[[ $id =~ ^[1-9][0-9]{2,8}$ ]] || continue
		for s; do
			[ "$s" != "$id" ] || continue 2
		done
		printf '%s\n' "$id"
	done
}

# Runs qmpctl against the socket of -s/--socket with a short deadline: QMP-COMMAND's return
# value, as JSON.
_vzq_qmp() { # QMPCTL QMP-COMMAND
	local sock
	sock=$(_vzq_option_value -s --socket) || return 1
	[ -S "$sock" ] || return 1
	"$1" -s "$sock" -t "$VZQ_QMP_TIMEOUT" -c "$2" 2>/dev/null </dev/null
}

# The argument names of a QMP command, from the schema: its arg-type's members.
# shellcheck disable=SC2016 # jq's variables
VZQ_JQ_ARGS='. as $s | (.[] | select(.name == $c and ."meta-type" == "command") | ."arg-type")
	as $a | $s[] | select(.name == $a) | .members[]?.name'

_vzq_qmpctl() { # COMMAND
	local cmd arg given=" " w
	_vzq_parse "-s --socket -t --timeout -f --file -H --hmp --json --fd --add-fd --sync-fd
		-w --wait-event -m --match --poll"
	case $vzq_valopt in
	-s | --socket | -f | --file) _vzq_files ;;
	'') ;;
	*) return 0 ;;
	esac
	[ -z "$vzq_valopt" ] || return 0
	if [ "$vzq_dashdash" -lt 0 ] && [[ $vzq_cur == -* ]]; then
		_vzq_tool_options "$1"
		return 0
	fi
	! _vzq_seen -a --agent -f --file -H --hmp --json || return 0
	command -v jq >/dev/null 2>&1 || return 0
	if [ ${#vzq_args[@]} -eq 0 ]; then
		_vzq_words < <(_vzq_qmp "$1" query-commands | jq -r '.[].name' 2>/dev/null)
		return 0
	fi
	cmd=${vzq_args[0]}
	for w in "${vzq_args[@]:1}"; do
		given+="${w%%=*} "
	done
	while IFS= read -r arg; do
		[[ $given == *" $arg "* ]] || _vzq_words "$arg="
	done < <(_vzq_qmp "$1" query-qmp-schema | jq -r --arg c "$cmd" "$VZQ_JQ_ARGS" 2>/dev/null)
	compopt -o nospace 2>/dev/null || :
}

_vzq_gafreeze() { # COMMAND
	_vzq_parse "-s --socket -t --timeout --max --sync-fd"
	case $vzq_valopt in
	-s | --socket) _vzq_files ;;
	'') ;;
	esac
	[ -z "$vzq_valopt" ] || return 0
	if [ "$vzq_dashdash" -lt 0 ] && [[ $vzq_cur == -* ]]; then
		_vzq_tool_options "$1"
		[ "${vzq_args[0]-}" != hold ] || _vzq_words --
		return 0
	fi
	case ${#vzq_args[@]}:${vzq_args[0]-} in
	0:) _vzq_words ping info status freeze thaw hold ;;
	*:freeze) _vzq_dirs ;;
	*:hold)
		if [ "$vzq_dashdash" -lt 0 ]; then
			_vzq_words --
		elif [ ${#vzq_args[@]} -eq "$vzq_dashdash" ]; then
			mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -c -- "$vzq_cur")
		else
			_vzq_files
		fi
		;;
	esac
	return 0
}

_vzq_vma_create() { # COMMAND
	_vzq_parse "-o --output -c --config -z --compress -T --threads -t --timeout --idle-timeout
		--bwlimit --listen --stats --incremental"
	case $vzq_valopt in
	-o | --output | -c | --config | --listen | --stats | --incremental) _vzq_files ;;
	-z | --compress) _vzq_words none zstd gzip lzo xz ;;
	esac
	[ -z "$vzq_valopt" ] || return 0
	if [ "$vzq_dashdash" -lt 0 ] && [[ $vzq_cur == -* ]]; then
		_vzq_tool_options "$1"
	elif [ "${COMP_WORDS[COMP_CWORD - 1]}" = = ] || [ "$vzq_cur" = = ]; then
		# name=source: the source's file.
		[ "$vzq_cur" != = ] || vzq_cur=
		_vzq_files
	fi
	return 0
}

_vzq_vma_extract() { # COMMAND
	_vzq_parse "-d --devices -c --config --format --serve --base --to-vma -z --compress -T
		--threads"
	case $vzq_valopt in
	--format) _vzq_words raw qcow2 ;;
	--serve | --to-vma) _vzq_files ;;
	--base) _vzq_archives ;;
	-z | --compress) _vzq_words none zstd gzip lzo xz ;;
	esac
	[ -z "$vzq_valopt" ] || return 0
	if [ "$vzq_dashdash" -lt 0 ] && [[ $vzq_cur == -* ]]; then
		_vzq_tool_options "$1"
		return 0
	fi
	if [ "${COMP_WORDS[COMP_CWORD - 1]}" = = ] || [ "$vzq_cur" = = ]; then
		# name=target: the target's file or block device.
		[ "$vzq_cur" != = ] || vzq_cur=
		_vzq_files
		return 0
	fi
	case ${#vzq_args[@]} in
	0) _vzq_archives ;;
	1) _vzq_seen -l --list -t --verify -c --config || _vzq_dirs ;;
	esac
	return 0
}

_vzq_vzdump_prune() { # COMMAND
	_vzq_parse "--vmid --keep-last --keep-hourly --keep-daily --keep-weekly --keep-monthly
		--keep-yearly --prune-backups"
	[ -z "$vzq_valopt" ] || return 0
	if [ "$vzq_dashdash" -lt 0 ] && [[ $vzq_cur == -* ]]; then
		_vzq_tool_options "$1"
	elif [ ${#vzq_args[@]} -eq 0 ] && ! _vzq_seen --check; then
		_vzq_dirs
	fi
	return 0
}

_vzq_vzdump_put() { # COMMAND
	_vzq_parse "-m --mode"
	[ -z "$vzq_valopt" ] || return 0
	if [ "$vzq_dashdash" -lt 0 ] && [[ $vzq_cur == -* ]]; then
		_vzq_tool_options "$1"
	elif [ ${#vzq_args[@]} -eq 0 ]; then
		_vzq_dirs
	fi
	return 0
}

_vzq_vzdump() { # COMMAND
	local prefix ids
	_vzq_parse "$VZQ_DRIVER_VALUE_OPTIONS"
	case $vzq_valopt in
	--dumpdir | --tmpdir | --confdir | --rundir | --statedir) _vzq_dirs ;;
	--script) _vzq_files ;;
	--compress) _vzq_words 0 1 gzip lzo zstd xz ;;
	--mode) _vzq_words snapshot suspend stop ;;
	--remove | --protected | --incremental) _vzq_words 0 1 ;;
	--mailnotification) _vzq_words always failure ;;
	--notification-mode) _vzq_words auto legacy-sendmail ;;
	--ionice) _vzq_words 0 1 2 3 4 5 6 7 8 ;;
	--exclude)
		# A list: the VMIDs after the last comma, but those before it.
		prefix=
		[[ $vzq_cur != *,* ]] || prefix=${vzq_cur%,*},
		IFS=, read -r -a ids <<<"${prefix%,}"
		vzq_cur=${vzq_cur##*,}
		_vzq_words < <(_vzq_vmids "${ids[@]}")
		COMPREPLY=("${COMPREPLY[@]/#/$prefix}")
		;;
	esac
	[ -z "$vzq_valopt" ] || return 0
	if [ "$vzq_dashdash" -lt 0 ] && [[ $vzq_cur == -* ]]; then
		# (Unquoted: the list is the constant above, one option a word.)
		# shellcheck disable=SC2086
		_vzq_words $VZQ_DRIVER_OPTIONS
	else
		_vzq_words < <(_vzq_vmids "${vzq_args[@]}")
	fi
	return 0
}

_vzq_qmrestore() { # COMMAND
	_vzq_parse "--storage --confdir --rundir --format --target"
	case $vzq_valopt in
	--storage | --confdir | --rundir) _vzq_dirs ;;
	--format) _vzq_words raw qcow2 ;;
	esac
	[ -z "$vzq_valopt" ] || return 0
	if [ "${COMP_WORDS[COMP_CWORD - 1]}" = = ] || [ "$vzq_cur" = = ]; then
		# --target key=device: the block device's path.
		[ "$vzq_cur" != = ] || vzq_cur=
		_vzq_files
	elif [ "$vzq_dashdash" -lt 0 ] && [[ $vzq_cur == -* ]]; then
		# (It lists its options as the C tools do.)
		_vzq_tool_options "$1"
	elif [ ${#vzq_args[@]} -eq 0 ]; then
		_vzq_archives
	fi
	return 0
}

# The one completion function, for every command: bash calls it with the command's name.
_vzq_complete() { # COMMAND WORD PREVIOUS-WORD
	# What _vzq_parse sets, for the functions called from here only.
	local vzq_cur vzq_valopt vzq_args vzq_dashdash vzq_seen cmd=$1
	COMPREPLY=()
	# The command as typed is what is run for its options (and qmpctl for QMP): "~/" expanded.
	[[ $cmd != \~/* ]] || cmd=$HOME/${cmd#\~/}
	case ${cmd##*/} in
	qmpctl) _vzq_qmpctl "$cmd" ;;
	gafreeze) _vzq_gafreeze "$cmd" ;;
	vma-create) _vzq_vma_create "$cmd" ;;
	vma-extract) _vzq_vma_extract "$cmd" ;;
	vzdump-prune) _vzq_vzdump_prune "$cmd" ;;
	vzdump-put) _vzq_vzdump_put "$cmd" ;;
	vzdump.sh) _vzq_vzdump "$cmd" ;;
	qmrestore.sh) _vzq_qmrestore "$cmd" ;;
	esac
	return 0
}

complete -F _vzq_complete qmpctl gafreeze vma-create vma-extract vzdump-prune vzdump-put vzdump.sh \
	qmrestore.sh
