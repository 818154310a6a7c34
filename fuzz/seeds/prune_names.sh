#!/bin/bash
# Seeds for fuzz_prune_names: dump directories as vzdump leaves them (archives in every
# format, full and incremental, .log, .notes and .protected companions, other guests' files,
# renamed archives), one file name a line after the settings byte of fuzz_prune_names.c
# (bits 0-1: UTC, Berlin, Auckland, New York; bits 2-4: the policy; bit 5: --vmid 100).
set -euo pipefail

out=${1:?usage: prune_names.sh DIR}
mkdir -p "$out"

# seed NAME SETTINGS FILE...
seed() {
	local name=$1 settings=$2
	shift 2
	{
		# shellcheck disable=SC2059 # the settings byte, as a \xHH escape
		printf "\\x$settings"
		printf '%s\n' "$@"
	} >"$out/$name"
}

b=vzdump-qemu
seed one-backup 00 "$b-100-2026_11_22-02_00_01.vma.zst" "$b-100-2026_11_22-02_00_01.log"
seed formats 04 "$b-100-2026_11_22-02_00_01.vma" "$b-100-2026_11_21-02_00_01.vma.zst" \
	"$b-100-2026_11_20-02_00_01.vma.xz" "$b-100-2026_11_19-02_00_01.vma.gz" \
	"$b-100-2026_11_18-02_00_01.vma.lzo" "$b-100-2026_11_17-02_00_01.vma.bz2" \
	"$b-100-2026_11_16-02_00_01.vma.ZST" "$b-100-2026_11_15-02_00_01.vma.bz3" \
	"$b-100-2026_11_18-02_00_01.log"
seed companions 08 "$b-101-2026_11_22-02_00_01.vma.zst" "$b-101-2026_11_22-02_00_01.log" \
	"$b-101-2026_11_22-02_00_01.vma.zst.notes" "$b-101-2026_11_22-02_00_01.vma.zst.protected" \
	"$b-101-2026_11_15-02_00_01.vma.zst" "$b-101-2026_11_15-02_00_01.vma.zst.notes"
seed two-guests 20 "$b-100-2026_11_22-02_00_01.vma.zst" "$b-999999999-2026_11_22-02_00_01.vma" \
	"$b-100-2026_01_01-00_00_00.vma" "$b-100-2025_12_31-23_59_59.vma" \
	"vzdump-lxc-100-2026_11_22-02_00_01.tar.zst" "vzdump-qemu-100-2026_11_22-02_00_01.tmp"
# Same stem in two formats; weeks across a year's end; a leap day; Berlin's hour that
# happens twice and the one that is skipped; Auckland's.
seed stems 11 "$b-100-2026_11_22-02_00_01.vma" "$b-100-2026_11_22-02_00_01.vma.zst" \
	"$b-100-2019_12_30-12_00_00.vma" "$b-100-2020_12_31-12_00_00.vma" \
	"$b-100-2024_02_29-12_00_00.vma" "$b-100-2026_10_25-02_30_00.vma" \
	"$b-100-2026_03_29-02_30_00.vma"
seed auckland 12 "$b-100-2026_04_05-02_30_00.vma" "$b-100-2026_09_27-02_30_00.vma" \
	"$b-100-2026_04_05-01_59_59.vma"
# Renamed and odd: no time, a bad date, VMID too short or with a leading zero, extra text,
# only the prefix, control characters and bytes that are not UTF-8.
seed renamed 1c "$b-100-manual.vma.zst" "$b-100-2026_02_30-02_00_01.vma" \
	"$b-10-2026_11_22-02_00_01.vma" "$b-0100-2026_11_22-02_00_01.vma" \
	"$b-100-2026_11_22-02_00_01-copy.vma" "$b-.vma" "$b-.vma.zst" "vzdump-qemu-" \
	"$b-1234567890-2026_11_22-02_00_01.vma" $'vzdump-qemu-100-\r\t.vma' \
	$'vzdump-qemu-100-\xff\xfe.vma.zst' $'vzdump-qemu-100-\xc3\xa9.vma' \
	"$b-100-0000_01_01-00_00_00.vma" "$b-100-9999_12_31-23_59_59.vma" \
	"$b-100-2026_11_22-24_00_00.vma" "$b-100-2026_11_22-02_60_01.vma"
# Incrementals: a chain on a full, in every format; a protected one; chains of two guests,
# one without its full; other spellings of .inc.
seed incremental-chain 00 "$b-100-2026_11_19-02_00_01.vma.zst" \
	"$b-100-2026_11_20-02_00_01.inc.vma.zst" "$b-100-2026_11_21-02_00_01.inc.vma" \
	"$b-100-2026_11_22-02_00_01.inc.vma.zst" "$b-100-2026_11_22-02_00_01.log" \
	"$b-100-2026_11_22-02_00_01.inc.vma.zst.notes" "$b-100-2026_11_22-02_00_01.inc.vma.zst.sha256"
seed incremental-formats 04 "$b-100-2026_11_15-02_00_01.vma" \
	"$b-100-2026_11_16-02_00_01.inc.vma.gz" "$b-100-2026_11_17-02_00_01.inc.vma.lzo" \
	"$b-100-2026_11_18-02_00_01.inc.vma.zst" "$b-100-2026_11_19-02_00_01.inc.vma.bz2" \
	"$b-100-2026_11_20-02_00_01.inc.vma.xz" "$b-100-2026_11_21-02_00_01.inc.vma" \
	"$b-100-2026_11_21-02_00_01.inc.vma.zst" "$b-100-2026_11_22-02_00_01.INC.vma" \
	"$b-100-2026_11_22-02_00_01.inc.inc.vma" "$b-100-2026_11_22-02_00_01inc.vma" \
	"$b-100-2026_11_22-02_00_01.inc" "$b-100-.inc.vma"
seed incremental-protected 20 "$b-100-2026_11_01-02_00_01.vma.zst" \
	"$b-100-2026_11_02-02_00_01.inc.vma.zst" "$b-100-2026_11_02-02_00_01.inc.vma.zst.protected" \
	"$b-100-2026_11_20-02_00_01.vma.zst" "$b-100-2026_11_21-02_00_01.inc.vma.zst" \
	"$b-100-2026_11_22-02_00_01.inc.vma.zst"
seed incremental-broken 18 "$b-100-2026_11_21-02_00_01.inc.vma.zst" \
	"$b-100-2026_11_22-02_00_01.inc.vma.zst" "$b-101-2026_11_20-02_00_01.vma" \
	"$b-101-2026_11_21-02_00_01.inc.vma" "$b-101-2026_11_22-02_00_01.inc.vma" \
	"$b-101-2026_11_22-12_00_01.inc.vma"
seed protected-only 00 "$b-100-2026_11_22-02_00_01.vma.zst.protected" ".protected" \
	"$b-100-2026_11_22-02_00_01.vma.protected.protected"
