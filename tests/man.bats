#!/usr/bin/env bats
# Every tool (and qmrestore.sh): -h prints its man page's SYNOPSIS, and every option it accepts is in the man page.
# The tools list what they accept themselves, one option a line, with the hidden
# --short-options and --long-options (common/cli.c), as nbdinfo does.

setup() {
	load lib/common
}

tools() {
	local d
	for d in "$TOP"/*/; do
		d=${d%/}
		case ${d##*/} in common | tests | bench | build | man | build-aux | fuzz) continue ;; esac
		ls "$d"/*.c >/dev/null 2>&1 && echo "${d##*/}"
	done
	# The shell drivers that list their options as the tools do (vzdump.sh does not yet).
	echo qmrestore.sh
}

# How to run a tool: the drivers from the checkout, the built tools from PATH.
cmd() { # TOOL
	if [ -f "$TOP/$1" ] && [ -x "$TOP/$1" ]; then echo "$TOP/$1"; else echo "$1"; fi
}

synopsis_of_man() { # TOOL: the SYNOPSIS section as mandoc renders it, whitespace folded
	mandoc -Tascii "$TOP/man/$1.1" | col -b |
		sed -n '/^SYNOPSIS/,/^[A-Z]/p' | sed '1d;$d' | tr -s ' \n\t' ' ' | sed 's/^ //;s/ $//'
}

@test "every tool has a man page that mandoc -Tlint accepts" {
	for t in $(tools); do
		[ -f "$TOP/man/$t.1" ] || fail "man/$t.1 is missing"
		run mandoc -Tlint -Wwarning "$TOP/man/$t.1"
		assert_output ""
	done
}

@test "every tool's -h prints exactly its man page SYNOPSIS and exits 0" {
	for t in $(tools); do
		run -0 "$(cmd "$t")" -h
		got=$(printf '%s\n' "$output" | tr -s ' \n\t' ' ' | sed 's/^ //;s/ $//')
		assert_equal "$got" "$(synopsis_of_man "$t")"
	done
}

@test "every option a tool accepts is documented in its man page" {
	for t in $(tools); do
		run -0 "$(cmd "$t")" --short-options
		shorts=$output
		[ -n "$shorts" ] || fail "$t: --short-options listed nothing"
		run -0 "$(cmd "$t")" --long-options
		longs=$output
		[[ $longs == *--help* ]] || fail "$t: --long-options does not list --help: $longs"
		rendered=$(mandoc -Tascii "$TOP/man/$t.1" | col -b)
		for o in $shorts; do
			grep -qE -- "(^|[^[:alnum:]-])$o([^[:alnum:]-]|$)" <<<"$rendered" ||
				fail "$t: option $o is not in man/$t.1"
		done
		for o in $longs; do
			# The two listing options themselves are for tests and completion only.
			case $o in --long-options | --short-options) continue ;; esac
			grep -qE -- "$o([^[:alnum:]-]|$)" <<<"$rendered" ||
				fail "$t: option $o is not in man/$t.1"
		done
	done
}

@test "--short-options and --long-options print one option a line, and nothing else" {
	for t in $(tools); do
		run --separate-stderr -0 "$(cmd "$t")" --short-options
		assert_equal "$stderr" ""
		printf '%s\n' "$output" | grep -vqE '^-[[:alnum:]]$' && fail "$t --short-options: $output"
		run --separate-stderr -0 "$(cmd "$t")" --long-options
		assert_equal "$stderr" ""
		printf '%s\n' "$output" | grep -vqE '^--[a-z0-9-]+$' && fail "$t --long-options: $output"
		assert_line -- --long-options
		assert_line -- --short-options
	done
}

@test "an unknown option is a usage error: exit 2, the synopsis on stderr, nothing on stdout" {
	for t in $(tools); do
		run --separate-stderr -2 "$(cmd "$t")" --no-such-option
		assert_output ""
		[[ $stderr == *"$t"* ]] || fail "$t: stderr does not show the usage: $stderr"
	done
}
