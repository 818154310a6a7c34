#!/usr/bin/env bats
# Golden tests of lib/vzdump/graph.jq, the QMP graph changes of vzdump.sh: for each line of
# tests/graph/cases, the program's output on its input must be exactly NAME.out, so that a change
# to what the driver sends QEMU is a deliberate diff. VZ_GOLDEN_UPDATE=1 rewrites the .out files.

setup() {
	load lib/common
}

@test "every graph.jq program gives exactly its golden output" {
	local name input program n=0
	while read -r name input program; do
		case $name in '#'* | '') continue ;; esac
		n=$((n + 1))
		run -0 jq -r -L "$TOP/lib/vzdump" "import \"graph\" as g; $program" "$TOP/tests/graph/$input"
		if [ "${VZ_GOLDEN_UPDATE:-0}" = 1 ]; then
			printf '%s\n' "$output" | sed '${/^$/d}' >"$TOP/tests/graph/$name.out"
		fi
		diff -u "$TOP/tests/graph/$name.out" <(printf '%s\n' "$output" | sed '${/^$/d}') ||
			fail "graph case $name differs from tests/graph/$name.out"
	done <"$TOP/tests/graph/cases"
	[ "$n" -ge 20 ]
}

@test "every definition in graph.jq has a golden case" {
	local def
	for def in $(sed -n 's/^def \([a-z_]*\).*/\1/p' "$TOP/lib/vzdump/graph.jq"); do
		case $def in undo | step | blockdev_del | qid | ours) continue ;; esac
		grep -q "g::$def\b" "$TOP/tests/graph/cases" || fail "graph.jq: $def has no case in tests/graph/cases"
	done
}

@test "a changed plan is caught: the snapshot batch without its cont differs from the golden file" {
	run -0 jq -r -L "$TOP/lib/vzdump" 'import "graph" as g; g::snapshot_plan("running")' \
		"$TOP/tests/graph/disks.json"
	assert_equal "$output" "$(cat "$TOP/tests/graph/snapshot-running.out")"
	run -0 jq -r -L "$TOP/lib/vzdump" 'import "graph" as g; g::snapshot_plan("paused")' \
		"$TOP/tests/graph/disks.json"
	[ "$output" != "$(cat "$TOP/tests/graph/snapshot-running.out")" ]
	refute_output --partial '"cont"'
}

@test "every undo command the plans record passes undo_ok, so a real state file is never refused" {
	local line n=0
	while IFS= read -r line; do
		[ "$line" != "U cancel-jobs" ] || continue
		n=$((n + 1))
		run -0 jq -e -L "$TOP/lib/vzdump" 'import "graph" as g; g::undo_ok("drive-tpmstate0-backup")' <<<"${line#U }"
	done < <(cat "$TOP"/tests/graph/*.out | grep '^U ')
	[ "$n" -ge 10 ] || fail "only $n undo lines in the golden files"
}
