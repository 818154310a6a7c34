#!/usr/bin/env bats
# Every tool: -h prints its man page's SYNOPSIS, and every option in the code is in the man page.
# Convention the tools follow so this can read their options: the getopt string is
# `static const char short_opts[] = "…";` and long options are `{"name", …}` lines in
# `static const struct option long_opts[]`.

setup() {
	load lib/common
}

tools() {
	local d
	for d in "$TOP"/*/; do
		d=${d%/}
		case ${d##*/} in common | tests | bench | build | man | build-aux) continue ;; esac
		ls "$d"/*.c >/dev/null 2>&1 && echo "${d##*/}"
	done
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
		run -0 "$t" -h
		got=$(printf '%s\n' "$output" | tr -s ' \n\t' ' ' | sed 's/^ //;s/ $//')
		assert_equal "$got" "$(synopsis_of_man "$t")"
	done
}

@test "every option a tool's code accepts is documented in its man page" {
	for t in $(tools); do
		src=$(cat "$TOP/$t"/*.c)
		shorts=$(printf '%s\n' "$src" | sed -n 's/.*short_opts\[\] = "\([^"]*\)".*/\1/p' | tr -d ':+')
		[ -n "$shorts" ] || fail "$t: no short_opts found in the code"
		rendered=$(mandoc -Tascii "$TOP/man/$t.1" | col -b)
		for ((i = 0; i < ${#shorts}; i++)); do
			o=${shorts:i:1}
			grep -qE -- "(^|[^[:alnum:]-])-$o([^[:alnum:]-]|$)" <<<"$rendered" ||
				fail "$t: option -$o is not in man/$t.1"
		done
		for o in $(printf '%s\n' "$src" | sed -n 's/^[[:space:]]*{[[:space:]]*"\([a-z0-9-]*\)",.*/\1/p'); do
			grep -qE -- "--$o([^[:alnum:]-]|$)" <<<"$rendered" ||
				fail "$t: option --$o is not in man/$t.1"
		done
	done
}

@test "an unknown option is a usage error: exit 2, the synopsis on stderr, nothing on stdout" {
	for t in $(tools); do
		run --separate-stderr -2 "$t" --no-such-option
		assert_output ""
		[[ $stderr == *"$t"* ]] || fail "$t: stderr does not show the usage: $stderr"
	done
}
