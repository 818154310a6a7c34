#!/usr/bin/env bats
# Every tool over a table of bad inputs (tests/bad-input/table): the exit status, the message
# (tool: what: why, then at most the usage), nothing on stdout, and nothing written, neither in
# the empty folder the case runs in nor among the fixtures. One test per tool; a failing case is
# named by its line in the table.

setup_file() {
	load lib/common
	export FX=$BATS_FILE_TMPDIR/fx
	mkdir -p "$FX/dir" "$FX/dumps" "$FX/vz/run" "$FX/vz/dump" "$FX/vz/tmp" "$FX/vz/conf" \
		"$FX/vz/state"
	cd "$FX" || return 1
	: >empty
	random_file garbage 4096
	random_file d0.raw 300000
	echo "name: vm100" >vm.conf
	vma-create -o good.vma -c vm.conf drive-scsi0=d0.raw
	head -c 5000 good.vma >head5000.vma
	zstd -q -o good.vma.zst good.vma
	head -c 1000 good.vma.zst >head1000.vma.zst
	lzop -c <good.vma >good.vma.lzo
	head -c 1000 good.vma.lzo >head1000.vma.lzo
	head -c 30 good.vma.lzo >head30.vma.lzo
	python3 "$TOP/tests/lib/vma_make.py" -c vm.conf=vm.conf -d drive-scsi0=d0.raw made.vma
	for defect in truncate-header truncate-extent bad-magic bad-header-md5 name-dotdot \
		trailing-garbage uuid-mismatch; do
		python3 "$TOP/tests/lib/vma_corrupt.py" made.vma "$defect.vma" "$defect" >/dev/null
	done
	rm made.vma
	printf '# a bad value\nmode: fast\n' >conf.badmode
	printf 'exclude: abc\n' >conf.badexclude
	printf 'prune-backups: garbage\n' >conf.badprune
}

setup() {
	load lib/common
	TABLE=$TOP/tests/bad-input/table
}

# The fixtures, as a listing to compare before and after: names, types, and the sizes and times
# of all but folders (a tool may make and remove a temporary file beside its output).
fixtures() {
	find "$FX" \( -type d -printf '%P d\n' \) -o -printf '%P %y %s %T@\n' | LC_ALL=C sort
}

# Sets trimmed to TEXT without the blanks around it (no subshell: the table is long).
trim() { # TEXT
	trimmed=$1
	trimmed=${trimmed#"${trimmed%%[![:space:]]*}"}
	trimmed=${trimmed%"${trimmed##*[![:space:]]}"}
}

# Runs every case of TOOL in the table; fails listing each case that went wrong.
run_table() { # TOOL
	local tool=$1 line n=0 name want stdin args_text want_re expect_usage case_dir trimmed long
	local -a args envs words err left
	local failures='' before after got first rest usage_text cases=0 skipped=0
	# Messages may quote bytes that are no characters (a garbage file's): regular expressions
	# match bytes. (Not exported: the tools run in the caller's locale.)
	local LC_ALL=C
	usage_text=$(env VZDUMP_CONF=/nonexistent "$tool" -h)
	expect_usage="usage: $usage_text"
	long=$(printf 'x%.0s' {1..300})
	before=$(fixtures)
	shopt -s nullglob dotglob
	while IFS= read -r line || [ -n "$line" ]; do
		n=$((n + 1))
		case $line in '' | '#'*) continue ;; esac
		IFS='|' read -r name want stdin args_text want_re <<<"$line"
		trim "$name"
		[ "$trimmed" = "$tool" ] || continue
		if [[ $want_re =~ \ \#\ fixed\ on\ [^\ ]+$ ]]; then
			skipped=$((skipped + 1))
			continue
		fi
		cases=$((cases + 1))
		trim "$want"
		want=$trimmed
		trim "$stdin"
		stdin=$trimmed
		trim "$want_re"
		want_re=$trimmed
		# The arguments: words, with @FX, '' and @LONG300 replaced; leading NAME=VALUE words
		# go to the environment.
		read -r -a words <<<"$args_text"
		args=()
		envs=(VZDUMP_CONF="$FX/none" VZDUMP_RUNDIR="$FX/vz/run" VZDUMP_CONFDIR="$FX/vz/conf"
			VZDUMP_STATEDIR="$FX/vz/state")
		for w in "${words[@]}"; do
			w=${w//@FX/$FX}
			w=${w//@LONG300/$long}
			[ "$w" != "''" ] || w=
			if [ ${#args[@]} = 0 ] && [[ $w =~ ^[A-Z_]+= ]]; then
				envs+=("$w")
			else
				args+=("$w")
			fi
		done
		[ "$stdin" != - ] || stdin=/dev/null
		stdin=${stdin//@FX/$FX}
		case_dir=$BATS_TEST_TMPDIR/case$n
		mkdir "$case_dir"
		got=0
		env -C "$case_dir" "${envs[@]}" timeout 20 "$tool" "${args[@]}" \
			<"$stdin" >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" || got=$?
		mapfile -t err <"$BATS_TEST_TMPDIR/err"
		first=${err[0]-}
		printf -v rest '%s\n' "${err[@]:1}"
		rest=${rest%$'\n'}
		left=("$case_dir"/*)
		if [ "$got" != "$want" ]; then
			failures+="line $n: exit status $got, not $want: $first"$'\n'
		elif ! [[ $first =~ ^$tool:\ ($want_re)$ ]]; then
			failures+="line $n: stderr '$first' does not match '$tool: $want_re'"$'\n'
		elif [ -n "$rest" ] && [ "$rest" != "$expect_usage" ] &&
			grep -q -v "^$tool: " <<<"$rest"; then
			failures+="line $n: stderr has more than the tool's messages or the usage: $rest"$'\n'
		elif [ -s "$BATS_TEST_TMPDIR/out" ]; then
			failures+="line $n: stdout is not empty: $(head -c 200 "$BATS_TEST_TMPDIR/out")"$'\n'
		elif [ ${#left[@]} != 0 ]; then
			failures+="line $n: left in its folder: ${left[*]##*/}"$'\n'
		fi
		after=$(fixtures)
		if [ "$after" != "$before" ]; then
			failures+="line $n: changed the fixtures: $(diff <(echo "$before") <(echo "$after") | tr '\n' ' ')"$'\n'
			before=$after
		fi
	done <"$TABLE"
	shopt -u nullglob dotglob
	[ "$cases" -ge 10 ] || fail "only $cases cases for $tool"
	[ -z "$failures" ] || fail "$tool, $cases cases ($skipped skipped), failed:"$'\n'"$failures"
}

@test "qmpctl: every bad input in the table" {
	run_table qmpctl
}

@test "gafreeze: every bad input in the table" {
	run_table gafreeze
}

@test "vma-create: every bad input in the table" {
	run_table vma-create
}

@test "vma-extract: every bad input in the table" {
	run_table vma-extract
}

@test "vzdump-prune: every bad input in the table" {
	run_table vzdump-prune
}

@test "vzdump.sh: every bad input in the table" {
	PATH=$TOP:$PATH run_table vzdump.sh
}

@test "the table holds every tool, and every case names a tool and an exit status" {
	run -0 bash -c "grep -v -e '^#' -e '^\$' '$TABLE' | cut -d'|' -f1 | tr -d ' ' | sort -u"
	assert_output "gafreeze
qmpctl
vma-create
vma-extract
vzdump-prune
vzdump.sh"
	run -1 grep -n -v -E -e '^#' -e '^$' -e '^[a-z.-]+ \| [0-4] \| [^|]+ \|[^|]*\| .+$' "$TABLE"
	assert_output ""
}
