# shellcheck shell=bash
# lib/vzdump/options.bash: the command line, /etc/vzdump.conf and the environment, checked as
# vzdump checks them, into the opt_* settings; the notes template.
# shellcheck disable=SC2034,SC2154 # the driver's files share their globals (state.bash)

die_usage() {
	# A bad value in vzdump.conf: where it is, without the synopsis.
	if [ -n "$option_source" ]; then
		printf '%s: %s: %s\n' "$PROG" "$option_source" "$1" >&2
		exit 2
	fi
	printf '%s: %s\n' "$PROG" "$1" >&2
	printf 'usage: ' >&2
	usage >&2
	exit 2
}

opt_dumpdir=/var/lib/vz/dump
opt_tmpdir=/var/tmp
opt_confdir=${VZDUMP_CONFDIR:-/etc/vzdump/qemu-server}
opt_rundir=${VZDUMP_RUNDIR:-/run/qemu-server}
opt_compress=0
opt_zstd=
opt_pigz=0
opt_bwlimit=0
opt_stdout=0
opt_quiet=0
opt_script=
opt_lockwait=180
opt_ionice=7
opt_json=0
opt_statedir=${VZDUMP_STATEDIR:-/run/vzdump}
opt_cleanup=0
opt_mode=snapshot
opt_stopwait=10
opt_node=
# Mail (mail.bash): the addresses, and always or failure.
opt_mailto=
opt_mailnotification=always
# performance: max-workers (QEMU's x-perf of each backup job); empty: QEMU's default.
opt_max_workers=
# fleecing: storage=FOLDER is the tmpdir unless one is given (finish_options).
fleecing_dir=
tmpdir_given=0
maxfiles=
prune_given=0
vmids=()
# Job level: --all/--exclude, retention, notes and protection (see select_guests,
# prune_backups, mark_backup).
opt_all=0
opt_exclude=
conf_exclude=
opt_remove=1
opt_notes=
opt_protected=0
opt_incremental=0 # incremental.bash
opt_full_every=6
prune_spec=      # the policy normalised for vzdump-prune, e.g. keep-daily=7,keep-last=3
prune_log=       # the same as vzdump logs it: keep-daily=7, keep-last=3
prune_keep_all=1 # no positive keep-* count, or keep-all=1: nothing is ever pruned
prune_limit=0    # the sum of the keep-* counts
# Where the option being set comes from when that is not the command line (vzdump.conf).
option_source=

# The environment the driver reads (each in the man page's ENVIRONMENT). A bad value is a usage
# error, as a bad option is.
QMP_TIMEOUT=10 # seconds for one QMP command
FREEZE_MAX=10  # the longest the guest may stay frozen (gafreeze's watchdog thaws it then)
WRITER_WAIT=3600 # the longest the writer may take to finish the archive once the copy is over
MAIL_TIMEOUT=120 # the longest sendmail may take (mail.bash)
read_environment() {
	local name value
	option_source=environment
	for name in VZDUMP_QMP_TIMEOUT VZDUMP_FREEZE_MAX VZDUMP_STOPWAIT_SECONDS VZDUMP_WRITER_WAIT \
		VZDUMP_MAIL_TIMEOUT; do
		value=${!name-}
		if [ -n "$value" ] && ! [[ $value =~ ^[0-9]{1,6}$ && $value =~ [1-9] ]]; then
			die_usage "$name must be a whole number of seconds from 1 to 999999, not '$value'"
		fi
	done
	option_source=
	QMP_TIMEOUT=$((10#${VZDUMP_QMP_TIMEOUT:-10}))
	FREEZE_MAX=$((10#${VZDUMP_FREEZE_MAX:-10}))
	WRITER_WAIT=$((10#${VZDUMP_WRITER_WAIT:-3600}))
	MAIL_TIMEOUT=$((10#${VZDUMP_MAIL_TIMEOUT:-120}))
}

# The options that take a value (as --name value or --name=value).
VALUE_OPTIONS=" --dumpdir --tmpdir --confdir --rundir --compress --zstd --pigz --bwlimit --script
 --lockwait --ionice --statedir --mode --stopwait --exclude --prune-backups --remove
 --notes-template --protected --mailto --mailnotification --notification-mode --maxfiles
 --fleecing --performance --node --incremental --full-every "
VALUE_OPTIONS=${VALUE_OPTIONS//$'\n'/}
# vzdump's options that have no meaning here; each is refused with its own reason
# (foreign_option): on the command line a usage error, in vzdump.conf a warning, so that a file
# moved over from a Proxmox node still runs its jobs.
FOREIGN_OPTIONS=" --storage --pool --job-id --stdexcludes --exclude-path --pbs-change-detection-mode
 --size --notification-policy --notification-target "
FOREIGN_OPTIONS=${FOREIGN_OPTIONS//$'\n'/}
# vzdump's boolean flags, as vzdump.conf keys (key: 0 or 1).
CONF_FLAGS=" quiet all stdout stop "

# An option that takes a value, ARG as --NAME=VALUE or --NAME with its value in NEXT (the
# argument after it, if any): sets option_name, option_value and option_took (how many of NEXT
# the value took: 0 or 1). A NAME not in NAMES (" --a --b "), or no value: a usage error.
split_option() { # NAMES ARG [NEXT]
	option_name=${2%%=*}
	[[ $1 == *" $option_name "* ]] || die_usage "unknown option: $2"
	if [ "$option_name" != "$2" ]; then
		option_value=${2#*=}
		option_took=0
	else
		[ $# -gt 2 ] || die_usage "option $option_name needs a value"
		option_value=$3
		option_took=1
	fi
}

# Whether the arguments ask for help (-h or --help as an option, not as an option's value):
# then vzdump.conf is not read, so that a broken one cannot stand in the way.
wants_help() {
	while [ $# -gt 0 ]; do
		case $1 in
		-h | --help) return 0 ;;
		--) return 1 ;;
		--*=*) ;;
		--*) [[ $VALUE_OPTIONS$FOREIGN_OPTIONS != *" $1 "* ]] || shift ;;
		esac
		[ $# -gt 0 ] && shift
	done
	return 1
}

parse_options() {
	local arg
	while [ $# -gt 0 ]; do
		arg=$1
		shift
		case $arg in
		-h | --help)
			usage
			exit 0
			;;
		--stdout) opt_stdout=1 ;;
		--quiet) opt_quiet=1 ;;
		--json) opt_json=1 ;;
		--cleanup) opt_cleanup=1 ;;
		--all) opt_all=1 ;;
		--stop) foreign_option stop ;;
		--)
			vmids+=("$@")
			break
			;;
		--*)
			split_option "$VALUE_OPTIONS$FOREIGN_OPTIONS" "$arg" "${@:1:1}"
			shift "$option_took"
			set_option "$option_name" "$option_value"
			;;
		-*) die_usage "unknown option: $arg" ;;
		*) vmids+=("$arg") ;;
		esac
	done
	if [ "$opt_all" = 1 ] && [ ${#vmids[@]} -gt 0 ]; then
		die_usage "$([ -n "$opt_exclude" ] && echo --exclude || echo --all) conflicts with a VMID list"
	fi
	[ ${#vmids[@]} -gt 0 ] || [ "$opt_all" = 1 ] || die_usage "no VMID given"
	if [ "$opt_stdout" = 1 ] && [ "$opt_all" = 1 ]; then
		die_usage "--stdout backs up exactly one VM"
	fi
	local id
	for id in "${vmids[@]}"; do
		[[ $id =~ ^[1-9][0-9]{2,8}$ ]] || die_usage "invalid VMID: $id (100 to 999999999)"
	done
	if [ "$opt_stdout" = 1 ] && [ ${#vmids[@]} -ne 1 ]; then
		die_usage "--stdout backs up exactly one VM"
	fi
	if [ "$opt_stdout" = 1 ] && [ "$opt_json" = 1 ]; then
		die_usage "--json and --stdout both want standard output"
	fi
	if [ "$opt_cleanup" = 1 ] && [ "$opt_stdout" = 1 ]; then
		die_usage "--cleanup writes no archive: --stdout makes no sense with it"
	fi
}

set_option() { # NAME VALUE
	case $1 in
	--dumpdir | --tmpdir | --confdir | --rundir | --statedir)
		[ -n "$2" ] || die_usage "$1 needs a folder, not ''"
		;;
	esac
	case $1 in
	--dumpdir) opt_dumpdir=$2 ;;
	--tmpdir)
		opt_tmpdir=$2
		[ -n "$option_source" ] || tmpdir_given=1
		;;
	--confdir) opt_confdir=$2 ;;
	--rundir) opt_rundir=$2 ;;
	--statedir) opt_statedir=$2 ;;
	--compress)
		# vzdump's values (1 is lzo), and xz, which Proxmox's storage layer does not know.
		case $2 in
		0 | gzip | lzo | zstd | xz) opt_compress=$2 ;;
		1) opt_compress=lzo ;;
		*) die_usage "--compress must be 0, 1, gzip, lzo, zstd or xz, not '$2'" ;;
		esac
		;;
	--zstd)
		[[ $2 =~ ^[0-9]{1,3}$ ]] || die_usage "--zstd needs a number of threads, not '$2'"
		opt_zstd=$2
		;;
	--pigz)
		[[ $2 =~ ^[0-9]{1,3}$ ]] || die_usage "--pigz needs a number of threads, not '$2'"
		opt_pigz=$((10#$2))
		;;
	--ionice)
		[[ $2 =~ ^[0-8]$ ]] || die_usage "--ionice needs a priority from 0 to 8, not '$2'"
		opt_ionice=$2
		;;
	--lockwait)
		[[ $2 =~ ^[0-9]{1,6}$ ]] || die_usage "--lockwait needs minutes as a number, not '$2'"
		opt_lockwait=$((10#$2))
		;;
	--script)
		if [ ! -f "$2" ] || [ ! -x "$2" ]; then
			die_usage "the hook script '$2' is not an executable file"
		fi
		# Absolute: the hook runs with an empty environment, so no PATH lookup.
		opt_script=$(realpath -- "$2")
		;;
	--bwlimit)
		[[ $2 =~ ^[0-9]{1,12}$ ]] || die_usage "--bwlimit needs KiB/s as a number, not '$2'"
		opt_bwlimit=$((10#$2))
		;;
	--exclude)
		opt_exclude=$(parse_vmid_list "$2") || exit 2
		opt_all=1
		;;
	--prune-backups)
		parse_prune_spec "$2"
		prune_given=1
		;;
	--maxfiles)
		# Proxmox's old retention (removed in PVE 9): keep-last=N, 0 keeping everything; see
		# resolve_maxfiles.
		[[ $2 =~ ^[0-9]{1,10}$ ]] || die_usage "--maxfiles needs a number of backups, not '$2'"
		maxfiles=$((10#$2))
		;;
	--mailto) opt_mailto=$(parse_mail_list "$2") || exit 2 ;;
	--mailnotification)
		case $2 in
		always | failure) opt_mailnotification=$2 ;;
		*) die_usage "--mailnotification must be always or failure, not '$2'" ;;
		esac
		;;
	--notification-mode)
		case $2 in
		auto | legacy-sendmail) ;;
		notification-system) foreign_option notification-mode "$2" ;;
		*) die_usage "--notification-mode must be auto, legacy-sendmail or notification-system, not '$2'" ;;
		esac
		;;
	--fleecing) parse_fleecing "$2" ;;
	--performance) parse_performance "$2" ;;
	--node)
		[[ $2 =~ ^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$ ]] ||
			die_usage "--node needs a node name, not '$2'"
		opt_node=$2
		;;
	--storage | --pool | --job-id | --stdexcludes | --exclude-path | --pbs-change-detection-mode | \
		--size | --notification-policy | --notification-target)
		foreign_option "${1#--}" "$2"
		;;
	--remove) opt_remove=$(parse_bool --remove "$2") || exit 2 ;;
	--protected) opt_protected=$(parse_bool --protected "$2") || exit 2 ;;
	--incremental) opt_incremental=$(parse_bool --incremental "$2") || exit 2 ;;
	--full-every)
		if ! [[ $2 =~ ^[0-9]{1,4}$ ]] || [ "$((10#$2))" -lt 1 ] || [ "$((10#$2))" -gt 1000 ]; then
			die_usage "--full-every needs a number of incremental backups from 1 to 1000, not '$2'"
		fi
		opt_full_every=$((10#$2))
		;;
	--notes-template)
		check_notes_template "$2"
		opt_notes=$2
		;;
	--mode)
		case $2 in
		snapshot | suspend | stop) opt_mode=$2 ;;
		*) die_usage "--mode must be snapshot, suspend or stop, not '$2'" ;;
		esac
		;;
	--stopwait)
		[[ $2 =~ ^[0-9]{1,6}$ ]] || die_usage "--stopwait needs minutes as a number, not '$2'"
		opt_stopwait=$((10#$2))
		;;
	*) return 1 ;;
	esac
}

# One of vzdump's options that means nothing here, with the reason why and what to use
# instead: a usage error on the command line, a warning from vzdump.conf (the key ignored).
foreign_option() { # NAME [VALUE]
	local why
	case $1 in
	storage) why="there is no Proxmox storage layer here: set dumpdir to the folder the backups go to" ;;
	pool) why="there are no resource pools here: name the VMIDs, or use --all with --exclude" ;;
	job-id) why="set by Proxmox's job scheduler; here vzdump.timer runs the job (man vzdump.sh, FILES)" ;;
	stop) why="no task registry here: stop the running job with 'systemctl stop vzdump.service' or SIGTERM to vzdump.sh" ;;
	stdexcludes | exclude-path | pbs-change-detection-mode) why="for container backups only; vzdump.sh backs up QEMU VMs" ;;
	size) why="removed in Proxmox VE 7 (the LVM snapshot size of container backups)" ;;
	notification-policy | notification-target) why="removed in Proxmox VE 9: use mailto and mailnotification" ;;
	notification-mode) why="no Proxmox notification system here: set mailto, and mail goes through sendmail" ;;
	all) why="name the machines on the command line, or give --all there" ;;
	stdout) why="--stdout is for one run on the command line" ;;
	esac
	if [ -n "$option_source" ]; then
		conf_warnings+=("$option_source: ignoring '$1${2:+: $2}': $why")
		return 0
	fi
	die_usage "--$1: $why"
}

# mailto as vzdump takes it: addresses or local user names, separated by commas, semicolons or
# blanks; printed comma-separated, as sendmail's To: header takes them. Nothing that could end
# a header line or start another gets through.
parse_mail_list() { # LIST
	local a out=
	local -a list
	# (Every line: one after a line feed must be refused, not left out.)
	IFS=$',; \t\n' read -r -d '' -a list <<<"$1" || true
	[ ${#list[@]} -gt 0 ] || die_usage "--mailto needs one or more mail addresses"
	for a in "${list[@]}"; do
		[[ $a =~ ^[A-Za-z0-9._%+~-]+(@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)?$ ]] ||
			die_usage "--mailto: not a mail address or user name: '$a'"
		out+=", $a"
	done
	printf '%s\n' "${out#, }"
}

# A Proxmox property string, key=value,key=value, split into the arrays property_keys and
# property_values; an item without '=' is the value of DEFAULT_KEY when one is given (fleecing's
# [enabled=]BOOL), else both its key and its value.
property_items() { # SPEC [DEFAULT_KEY]
	local item
	local -a items
	property_keys=() property_values=()
	IFS=, read -r -a items <<<"$1"
	for item in "${items[@]}"; do
		if [[ $item == *=* ]]; then
			property_keys+=("${item%%=*}") property_values+=("${item#*=}")
		else
			property_keys+=("${2:-$item}") property_values+=("$item")
		fi
	done
}

# fleecing as vzdump's property string, [enabled=]BOOL,storage=ID. Backups here always fleece
# (the scratch images are what fixes the instant), so enabled is checked and otherwise moot; a
# storage that is a folder (an absolute path) is where the scratch images go, the tmpdir, unless
# one is given (finish_options); a Proxmox storage ID means nothing here.
parse_fleecing() { # SPEC
	local i key value enabled=1 storage=
	property_items "$1" enabled
	for i in "${!property_keys[@]}"; do
		key=${property_keys[i]} value=${property_values[i]}
		case $key in
		enabled) enabled=$(parse_bool "--fleecing enabled" "$value") || exit 2 ;;
		storage)
			[[ $value == /* || $value =~ ^[A-Za-z][A-Za-z0-9._-]*$ ]] ||
				die_usage "--fleecing: storage must be a storage ID or an absolute folder, not '$value'"
			storage=$value
			;;
		*) die_usage "--fleecing: unknown key '$key' (enabled, storage)" ;;
		esac
	done
	# (Proxmox's fleecing off: its storage is not used; here the tmpdir is.)
	[ "$enabled" = 1 ] && [ -n "$storage" ] || return 0
	if [[ $storage == /* ]]; then
		fleecing_dir=$storage
	else
		conf_warnings+=("${option_source:-command line}: fleecing storage '$storage' is a Proxmox storage ID: the scratch images go under the tmpdir (give storage=/folder to choose)")
	fi
}

# performance as vzdump's property string: max-workers=1..256 (QEMU's x-perf.max-workers of
# each backup job), pbs-entries-max=N (container backups only: checked, no effect).
parse_performance() { # SPEC
	local i key value
	property_items "$1"
	for i in "${!property_keys[@]}"; do
		key=${property_keys[i]} value=${property_values[i]}
		case $key in
		max-workers)
			if ! [[ $value =~ ^[0-9]{1,3}$ ]] || ((10#$value < 1 || 10#$value > 256)); then
				die_usage "--performance: max-workers must be 1 to 256, not '$value'"
			fi
			opt_max_workers=$((10#$value))
			;;
		pbs-entries-max)
			[[ $value =~ ^[0-9]{1,10}$ ]] ||
				die_usage "--performance: pbs-entries-max must be a number, not '$value'"
			;;
		*) die_usage "--performance: unknown key '$key' (max-workers, pbs-entries-max)" ;;
		esac
	done
}

# maxfiles as Proxmox VE 8 read it, once for each source (vzdump.conf, then the command line):
# the source's prune-backups wins over its maxfiles (which is then warned about), and either
# wins over what an earlier source said.
resolve_maxfiles() { # SOURCE
	if [ -n "$maxfiles" ] && [ "$prune_given" = 1 ]; then
		conf_warnings+=("$1: ignoring 'maxfiles: $maxfiles': prune-backups is set")
	elif [ -n "$maxfiles" ] && [ "$maxfiles" = 0 ]; then
		parse_prune_spec keep-all=1
	elif [ -n "$maxfiles" ]; then
		parse_prune_spec "keep-last=$maxfiles"
	fi
	maxfiles=
	prune_given=0
}

# What the options mean together, once all are read (vzdump.conf, then the command line).
finish_options() {
	resolve_maxfiles "command line"
	# The scratch images go into the fleecing folder, unless the command line names a tmpdir.
	if [ -n "$fleecing_dir" ] && [ "$tmpdir_given" = 0 ]; then
		opt_tmpdir=$fleecing_dir
	fi
}

# A pve-vmid-list (VMIDs separated by commas, semicolons or spaces), printed space-separated.
parse_vmid_list() { # LIST
	local id out=
	local -a ids
	# (Every line: one after a line feed must be read, not left out.)
	IFS=$',; \t\n' read -r -d '' -a ids <<<"$1" || true
	[ ${#ids[@]} -gt 0 ] || die_usage "--exclude needs a list of VMIDs"
	for id in "${ids[@]}"; do
		[[ $id =~ ^[1-9][0-9]{2,8}$ ]] || die_usage "--exclude: invalid VMID: $id (100 to 999999999)"
		out+=" $id"
	done
	printf '%s\n' "${out# }"
}

# Proxmox's boolean values; prints 1 or 0.
parse_bool() { # OPTION VALUE
	case ${2,,} in
	1 | on | yes | true) echo 1 ;;
	0 | off | no | false) echo 0 ;;
	*) die_usage "$1 must be 0 or 1, not '$2'" ;;
	esac
}

# prune-backups as Proxmox validates it (spec §4.1), through `vzdump-prune --check`, the one
# parser of retention specs; here the valid spec is only normalised: sets prune_spec (sorted, for
# vzdump-prune), prune_log (as vzdump logs it), prune_keep_all (no positive count, or
# keep-all=1: nothing is ever pruned) and prune_limit (the sum of the counts).
parse_prune_spec() { # SPEC
	local why rc=0 item key value positive=0 keep_all=0 sum=0
	local -a items pairs=()
	why=$(vzdump-prune --check -- "$1" 2>&1) || rc=$?
	case $rc:$why in
	0:*) ;;
	"2:vzdump-prune: --prune-backups: "*) die_usage "${why#vzdump-prune: }" ;;
	*)
		# Not the spec's fault: no vzdump-prune, or one that has no --check.
		check_tools
		printf '%s: --prune-backups: vzdump-prune --check failed (exit status %s): %s\n' \
			"$PROG" "$rc" "${why%%$'\n'*}" >&2
		exit 1
		;;
	esac
	IFS=, read -r -a items <<<"$1"
	for item in "${items[@]}"; do
		# (vzdump-prune passes over blank items and blanks around them.)
		item=${item//[[:space:]]/}
		[ -n "$item" ] || continue
		key=${item%%=*}
		value=${item#*=}
		if [ "$key" = keep-all ]; then
			case ${value,,} in 1 | on | yes | true) keep_all=1 value=1 ;; *) value=0 ;; esac
		else
			# vzdump-prune reads the count as a number (leading zeros and all) and caps it at
			# 2^32 - 1, and so does this sum.
			value=${value#"${value%%[!0]*}"}
			value=${value:-0}
			if [ "${#value}" -gt 10 ] || [ "$((10#$value))" -gt 4294967295 ]; then
				value=4294967295
			fi
			value=$((10#$value))
			[ "$value" = 0 ] || positive=1
			sum=$((sum + value))
		fi
		pairs+=("$key=$value")
	done
	mapfile -t pairs < <(printf '%s\n' "${pairs[@]}" | LC_ALL=C sort)
	prune_spec=$(IFS=,; echo "${pairs[*]}")
	prune_log=${prune_spec//,/, }
	prune_limit=$sum
	prune_keep_all=$((keep_all == 1 || positive == 0 ? 1 : 0))
}

# The notes template as vzdump checks it (spec §3.3): one line of at most 1024 characters,
# the variables {{cluster}}, {{guestname}}, {{node}} and {{vmid}}, the escapes \n and \\.
check_notes_template() { # TEMPLATE
	local t=$1 i c rest
	[[ $t != *$'\n'* ]] || die_usage "--notes-template contains a line feed"
	[ ${#t} -le 1024 ] || die_usage "--notes-template is longer than 1024 characters"
	for ((i = 0; i < ${#t}; i++)); do
		c=${t:i:1}
		rest=${t:i}
		if [ "$c" = "\\" ] && [ -n "${t:i+1:1}" ]; then
			case ${t:i+1:1} in
			n | "\\") i=$((i + 1)) ;;
			*) die_usage "--notes-template: unknown escape sequence '\\${t:i+1:1}' at char $i" ;;
			esac
		elif [[ $rest =~ ^\{\{([^[:space:]{}]+)\}\} ]]; then
			case ${BASH_REMATCH[1]} in
			cluster | guestname | node | vmid) ;;
			*) die_usage "--notes-template: unknown variable '{{${BASH_REMATCH[1]}}}' at char $i" ;;
			esac
			i=$((i + ${#BASH_REMATCH[0]} - 1))
		fi
	done
}

# The notes of this VM's backup: escapes and variables expanded in one pass from the left,
# so that a value is never expanded again.
expand_notes() { # TEMPLATE
	local t=$1 i c rest out='' node
	node=$(uname -n)
	node=${node%%.*}
	for ((i = 0; i < ${#t}; i++)); do
		c=${t:i:1}
		rest=${t:i}
		if [ "$c" = "\\" ] && [ "${t:i+1:1}" = n ]; then
			out+=$'\n'
			i=$((i + 1))
		elif [ "$c" = "\\" ] && [ "${t:i+1:1}" = "\\" ]; then
			out+="\\"
			i=$((i + 1))
		elif [[ $rest =~ ^\{\{(cluster|guestname|node|vmid)\}\} ]]; then
			case ${BASH_REMATCH[1]} in
			cluster) out+='standalone node' ;;
			guestname) out+=${vm_name:-VM $vmid} ;;
			node) out+=$node ;;
			vmid) out+=$vmid ;;
			esac
			i=$((i + ${#BASH_REMATCH[0]} - 1))
		else
			out+=$c
		fi
	done
	printf '%s' "$out"
}

# /etc/vzdump.conf (or $VZDUMP_CONF): defaults in vzdump's `key: value` syntax, the keys being
# the option names without dashes; read before the command line, which therefore wins. As
# vzdump does, a key it does not know is a warning, and of a key given twice the last value
# counts; a bad value is an error. Its exclude applies to --all only (as a command-line
# --exclude, it would conflict with a VMID list). One awk pass (conf.awk) reads the lines, so
# that a long file costs no shell loop; one larger than CONF_MAX_BYTES is refused.
vzdump_conf=${VZDUMP_CONF:-/etc/vzdump.conf}
CONF_MAX_BYTES=1048576
CONF_AWK=${BASH_SOURCE[0]%/*}/conf.awk
conf_warnings=()
read_vzdump_conf() {
	local file=$vzdump_conf records kind n key value size flag
	[ -e "$file" ] || return 0
	option_source=$file
	if [ ! -f "$file" ] || [ ! -r "$file" ]; then
		die_usage "cannot read the file"
	fi
	size=$(stat -L -c %s -- "$file") || die_usage "cannot read the file"
	if [ "$size" -gt "$CONF_MAX_BYTES" ]; then
		die_usage "$size bytes; a vzdump.conf may have at most $CONF_MAX_BYTES (1 MiB)"
	fi
	# (NUL bytes dropped first, as bash's read would: a command substitution warns of them.)
	records=$(tr -d '\000' <"$file" | awk -v known="${VALUE_OPTIONS//--/}${FOREIGN_OPTIONS//--/}$CONF_FLAGS" -f "$CONF_AWK") ||
		die_usage "cannot read the file"
	while IFS=$'\t' read -r kind n key value; do
		option_source="$file line $n"
		case $kind in
		W)
			if [ "$key" = line ]; then
				conf_warnings+=("$option_source: ignoring '$value' (not 'key: value')")
			else
				conf_warnings+=("$option_source: ignoring unknown or unsupported key '$value'")
			fi
			;;
		M) conf_warnings+=("$file: and $n more lines ignored") ;;
		K)
			case $key in
			exclude) conf_exclude=$(parse_vmid_list "$value") || exit 2 ;;
			node) conf_warnings+=("$option_source: ignoring 'node: $value': a job's node is given on the command line (--node), as in Proxmox") ;;
			quiet) opt_quiet=$(parse_bool quiet "$value") || exit 2 ;;
			all | stdout | stop)
				flag=$(parse_bool "$key" "$value") || exit 2
				[ "$flag" = 0 ] || foreign_option "$key"
				;;
			*) set_option "--$key" "$value" ;;
			esac
			;;
		esac
	done <<<"$records"
	option_source=
	resolve_maxfiles "$file"
}
