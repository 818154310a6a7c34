# shellcheck shell=bash
# fuzz/seeds/nul-seed.bash: for the seed scripts whose target splits its input at NUL bytes.
# seed NAME PIECE...: writes the pieces joined by NUL bytes to $out/NAME.
seed() {
	local name=$1
	shift
	printf '%s\0' "$@" | head -c -1 >"${out:?}/$name"
}
