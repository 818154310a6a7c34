#!/usr/bin/env bats
# The inputs the fuzzers found (tests/fuzz-regressions/NAME/, fuzz/README.md), replayed: through
# the real tools, which must refuse or accept each without crashing (a sanitizer build aborts on
# any memory error), and through the fuzz target binaries when `make fuzz-build` has built them.

setup() {
	load lib/common
	R=$TOP/tests/fuzz-regressions
}

inputs() { # NAME: the target's regression inputs into the array files; none: skip the test
	mapfile -t files < <(find "$R/$1" -type f 2>/dev/null | LC_ALL=C sort)
	[ ${#files[@]} -gt 0 ] || skip "no regression input in tests/fuzz-regressions/$1"
}

# Exit 0 (accepted) or 1 (refused, one message); never a crash, an abort or a usage error.
refused_or_accepted() { # INPUT COMMAND...
	local input=$1
	shift
	run timeout 60 "$@"
	[ "$status" -le 1 ] || fail "${input##*/}: $* exited $status: $output"
}

@test "fuzz regressions of vma_reader: vma-extract -l, -l --json and -t -v survive each" {
	inputs vma_reader
	for f in "${files[@]}"; do
		refused_or_accepted "$f" vma-extract -l "$f"
		refused_or_accepted "$f" vma-extract -l --json "$f"
		refused_or_accepted "$f" vma-extract -t -v "$f"
	done
}

@test "fuzz regressions: each built fuzz target replays its inputs without a crash" {
	[ -d "$TOP/build/fuzz/bin" ] || skip "no build/fuzz/bin (make fuzz-build)"
	local d name replayed=0
	for d in "$R"/*/; do
		name=${d%/}
		name=${name##*/}
		[ -x "$TOP/build/fuzz/bin/fuzz_$name" ] || continue
		mapfile -t files < <(find "$d" -type f | LC_ALL=C sort)
		[ ${#files[@]} -gt 0 ] || continue
		run -0 "$TOP/build/fuzz/bin/fuzz_$name" -timeout=30 "${files[@]}"
		replayed=$((replayed + ${#files[@]}))
	done
	[ "$replayed" -gt 0 ] || skip "no regression input for a built target"
}
