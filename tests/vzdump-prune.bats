#!/usr/bin/env bats
# vzdump-prune: Proxmox's prune-backups semantics over a dump directory.
# The vectors A…I are the spec's §4.5 (vzdump-reference.md), computed with TZ=UTC.

setup() {
	load lib/common
	load lib/prune
	load lib/attacker
	export TZ=UTC
	D=$BATS_TEST_TMPDIR/dump
	mkdir -p "$D"
}

teardown() {
	attack_cleanup
}

# A dump folder that the unprivileged user can reach.
reachable_dir() {
	attack_dir
	D=$ATTACK_DIR/dump
	mkdir "$D"
}

# --- §4.5 vectors -----------------------------------------------------------------------

@test "A: keep-last=3 keeps the three newest of ten daily backups and removes the rest" {
	make_backups "$D" 100 2024_01_{01,02,03,04,05,06,07,08,09,10}-02_00_00
	run -0 decisions -n --keep-last 3 "$D"
	assert_output "keep 2024_01_10-02_00_00
keep 2024_01_09-02_00_00
keep 2024_01_08-02_00_00
remove 2024_01_07-02_00_00
remove 2024_01_06-02_00_00
remove 2024_01_05-02_00_00
remove 2024_01_04-02_00_00
remove 2024_01_03-02_00_00
remove 2024_01_02-02_00_00
remove 2024_01_01-02_00_00"
	run -0 vzdump-prune --keep-last 3 "$D"
	run files_in "$D"
	assert_output "$(backup_name 100 2024_01_08-02_00_00)
$(backup_name 100 2024_01_09-02_00_00)
$(backup_name 100 2024_01_10-02_00_00)"
}

@test "B: keep-daily=3 keeps the newest backup of each of three days, older ones of a kept day are removed" {
	make_backups "$D" 100 2024_01_10-14_00_00 2024_01_10-02_00_00 2024_01_09-02_00_00 \
		2024_01_08-20_00_00 2024_01_08-02_00_00 2024_01_07-02_00_00
	run -0 decisions -n --keep-daily 3 "$D"
	assert_output "keep 2024_01_10-14_00_00
remove 2024_01_10-02_00_00
keep 2024_01_09-02_00_00
keep 2024_01_08-20_00_00
remove 2024_01_08-02_00_00
remove 2024_01_07-02_00_00"
}

@test "B: the text report gives every decision with its reason, newest first" {
	make_backups "$D" 100 2024_01_10-14_00_00 2024_01_10-02_00_00 2024_01_09-02_00_00 \
		2024_01_08-20_00_00 2024_01_08-02_00_00 2024_01_07-02_00_00
	run -0 vzdump-prune -n --keep-daily 3 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_10-14_00_00.vma.zst keep-daily 1/3
remove    vzdump-qemu-100-2024_01_10-02_00_00.vma.zst same day as a newer kept backup
keep      vzdump-qemu-100-2024_01_09-02_00_00.vma.zst keep-daily 2/3
keep      vzdump-qemu-100-2024_01_08-20_00_00.vma.zst keep-daily 3/3
remove    vzdump-qemu-100-2024_01_08-02_00_00.vma.zst same day as a newer kept backup
remove    vzdump-qemu-100-2024_01_07-02_00_00.vma.zst beyond keep-daily"
}

@test "C: keep-last=1,keep-daily=2 skips the day keep-last covered, so keep-daily reaches two older days" {
	make_backups "$D" 100 2024_01_10-14_00_00 2024_01_10-02_00_00 2024_01_09-02_00_00 \
		2024_01_08-02_00_00 2024_01_07-02_00_00
	run -0 decisions -n --keep-last 1 --keep-daily 2 "$D"
	assert_output "keep 2024_01_10-14_00_00
remove 2024_01_10-02_00_00
keep 2024_01_09-02_00_00
keep 2024_01_08-02_00_00
remove 2024_01_07-02_00_00"
}

@test "C: --json gives file, vmid, ctime, mark and reason for every backup" {
	make_backups "$D" 100 2024_01_10-14_00_00 2024_01_10-02_00_00 2024_01_09-02_00_00 \
		2024_01_08-02_00_00 2024_01_07-02_00_00
	run -0 bash -c 'vzdump-prune -n --json --prune-backups keep-last=1,keep-daily=2 "$1" | jq -c ".[]"' _ "$D"
	assert_output '{"file":"vzdump-qemu-100-2024_01_10-14_00_00.vma.zst","vmid":100,"ctime":1704895200,"mark":"keep","reason":"keep-last 1/1"}
{"file":"vzdump-qemu-100-2024_01_10-02_00_00.vma.zst","vmid":100,"ctime":1704852000,"mark":"remove","reason":"day already covered by a kept backup"}
{"file":"vzdump-qemu-100-2024_01_09-02_00_00.vma.zst","vmid":100,"ctime":1704765600,"mark":"keep","reason":"keep-daily 1/2"}
{"file":"vzdump-qemu-100-2024_01_08-02_00_00.vma.zst","vmid":100,"ctime":1704679200,"mark":"keep","reason":"keep-daily 2/2"}
{"file":"vzdump-qemu-100-2024_01_07-02_00_00.vma.zst","vmid":100,"ctime":1704592800,"mark":"remove","reason":"beyond keep-daily"}'
}

@test "D: keep-weekly=2 uses ISO weeks, so 2019-12-30 and 2019-12-31 belong to 2020-W01" {
	make_backups "$D" 100 2020_01_06-02_00_00 2020_01_05-02_00_00 2020_01_01-02_00_00 \
		2019_12_31-02_00_00 2019_12_30-02_00_00
	run -0 decisions -n --keep-weekly 2 "$D"
	assert_output "keep 2020_01_06-02_00_00
keep 2020_01_05-02_00_00
remove 2020_01_01-02_00_00
remove 2019_12_31-02_00_00
remove 2019_12_30-02_00_00"
}

@test "F: keep-last=2 does not count protected backups and never removes them" {
	make_backups "$D" 100 2024_01_0{5,4,3,2,1}-02_00_00
	protect "$D" 100 2024_01_04-02_00_00
	protect "$D" 100 2024_01_01-02_00_00
	run -0 decisions -n --keep-last 2 "$D"
	assert_output "keep 2024_01_05-02_00_00
protected 2024_01_04-02_00_00
keep 2024_01_03-02_00_00
remove 2024_01_02-02_00_00
protected 2024_01_01-02_00_00"
	run -0 vzdump-prune --keep-last 2 "$D"
	run files_in "$D"
	assert_output "$(backup_name 100 2024_01_01-02_00_00)
$(backup_name 100 2024_01_01-02_00_00).protected
$(backup_name 100 2024_01_03-02_00_00)
$(backup_name 100 2024_01_04-02_00_00)
$(backup_name 100 2024_01_04-02_00_00).protected
$(backup_name 100 2024_01_05-02_00_00)"
}

@test "F2: keep-daily=1 keeps the newest unprotected backup of a day whose newest backup is protected" {
	make_backups "$D" 100 2024_01_05-14_00_00 2024_01_05-02_00_00 2024_01_04-02_00_00
	protect "$D" 100 2024_01_05-14_00_00
	run -0 decisions -n --keep-daily 1 "$D"
	assert_output "protected 2024_01_05-14_00_00
keep 2024_01_05-02_00_00
remove 2024_01_04-02_00_00"
}

@test "G: keep-last=0,keep-daily=0 keeps everything and removes nothing" {
	make_backups "$D" 100 2024_01_0{5,4,3,2,1}-02_00_00
	run -0 decisions -n --prune-backups keep-last=0,keep-daily=0 "$D"
	assert_output "keep 2024_01_05-02_00_00
keep 2024_01_04-02_00_00
keep 2024_01_03-02_00_00
keep 2024_01_02-02_00_00
keep 2024_01_01-02_00_00"
	run -0 vzdump-prune --keep-last 0 --keep-daily 0 "$D"
	assert_line --index 0 "keep      $(backup_name 100 2024_01_05-02_00_00) keep-all"
	run files_in "$D"
	assert_equal "$(wc -l <<<"$output")" 5
}

@test "I: keep-hourly=2 keeps the newest backup of each of the two newest hours (PBS test_prune_hourly)" {
	make_backups "$D" 100 2019_11_15-11_59_15 2019_11_15-11_49_15 2019_11_15-11_39_15 \
		2019_11_15-10_59_15 2019_11_15-10_49_15 2019_11_15-09_39_15
	run -0 decisions -n --keep-hourly 2 "$D"
	assert_output "keep 2019_11_15-11_59_15
remove 2019_11_15-11_49_15
remove 2019_11_15-11_39_15
keep 2019_11_15-10_59_15
remove 2019_11_15-10_49_15
remove 2019_11_15-09_39_15"
}

@test "keep-yearly=1 with backups from 1970 and 2070 keeps 2070 and removes 1970" {
	make_backups "$D" 100 1970_01_01-00_00_00 2070_06_01-12_00_00
	run -0 bash -c 'vzdump-prune -n --json --keep-yearly 1 "$1" | jq -c ".[] | [.file, .ctime, .mark]"' _ "$D"
	assert_output '["vzdump-qemu-100-2070_06_01-12_00_00.vma.zst",3168849600,"keep"]
["vzdump-qemu-100-1970_01_01-00_00_00.vma.zst",0,"remove"]'
}

@test "a name that looks like a backup but does not parse is reported as renamed and kept" {
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	: >"$D/vzdump-qemu-novmid.vma"
	: >"$D/vzdump-qemu-100-2024_02_30-02_00_00.vma.zst" # no 30 February
	: >"$D/vzdump-qemu-99-2024_01_01-02_00_00.vma"      # VMIDs have at least 3 digits
	: >"$D/vzdump-qemu-100-2024_01_01-24_00_00.vma.gz"  # no hour 24
	run -0 vzdump-prune --keep-last 1 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_02-02_00_00.vma.zst keep-last 1/1
remove    vzdump-qemu-100-2024_01_01-02_00_00.vma.zst beyond keep-last
renamed   vzdump-qemu-100-2024_01_01-24_00_00.vma.gz not a standard vzdump name
renamed   vzdump-qemu-100-2024_02_30-02_00_00.vma.zst not a standard vzdump name
renamed   vzdump-qemu-99-2024_01_01-02_00_00.vma not a standard vzdump name
renamed   vzdump-qemu-novmid.vma not a standard vzdump name"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_01-24_00_00.vma.gz
vzdump-qemu-100-2024_01_02-02_00_00.vma.zst
vzdump-qemu-100-2024_02_30-02_00_00.vma.zst
vzdump-qemu-99-2024_01_01-02_00_00.vma
vzdump-qemu-novmid.vma"
}

@test "backups of other guest types are neither listed nor touched" {
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	: >"$D/vzdump-lxc-100-2024_01_01-02_00_00.tar.zst"
	: >"$D/vzdump-lxc-novmid.tar.gz"
	: >"$D/vzdump-openvz-100-2024_01_01-02_00_00.tgz"
	run -0 decisions --keep-last 1 "$D"
	assert_output "keep 2024_01_02-02_00_00
remove 2024_01_01-02_00_00"
	run files_in "$D"
	assert_output "vzdump-lxc-100-2024_01_01-02_00_00.tar.zst
vzdump-lxc-novmid.tar.gz
vzdump-openvz-100-2024_01_01-02_00_00.tgz
vzdump-qemu-100-2024_01_02-02_00_00.vma.zst"
}

# --- further vectors --------------------------------------------------------------------

@test "keep-weekly at year edges: 2021-01-03 is still 2020-W53 and 2024-12-30 already 2025-W01" {
	make_backups "$D" 100 2021_01_04-02_00_00 2021_01_03-02_00_00 2021_01_01-02_00_00 \
		2020_12_31-02_00_00 2020_12_27-02_00_00
	make_backups "$D" 101 2025_01_06-02_00_00 2024_12_30-02_00_00 2024_12_29-02_00_00 \
		2024_12_23-02_00_00 2024_12_22-02_00_00
	run -0 decisions -n --keep-weekly 3 "$D"
	assert_output "keep 2021_01_04-02_00_00
keep 2021_01_03-02_00_00
remove 2021_01_01-02_00_00
remove 2020_12_31-02_00_00
keep 2020_12_27-02_00_00
keep 101:2025_01_06-02_00_00
keep 101:2024_12_30-02_00_00
keep 101:2024_12_29-02_00_00
remove 101:2024_12_23-02_00_00
remove 101:2024_12_22-02_00_00"
}

@test "keep-yearly follows the calendar year, not the ISO week-year: 2024-12-30 is in 2024" {
	make_backups "$D" 100 2025_01_01-02_00_00 2024_12_30-02_00_00 2024_01_01-02_00_00
	run -0 decisions -n --keep-yearly 2 "$D"
	assert_output "keep 2025_01_01-02_00_00
keep 2024_12_30-02_00_00
remove 2024_01_01-02_00_00"
}

@test "keep-hourly across midnight: 00:10 and 23:50 of the day before are different hours" {
	make_backups "$D" 100 2024_01_10-00_10_00 2024_01_09-23_50_00 2024_01_09-23_10_00 \
		2024_01_09-22_00_00
	run -0 vzdump-prune -n --keep-hourly 2 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_10-00_10_00.vma.zst keep-hourly 1/2
keep      vzdump-qemu-100-2024_01_09-23_50_00.vma.zst keep-hourly 2/2
remove    vzdump-qemu-100-2024_01_09-23_10_00.vma.zst same hour as a newer kept backup
remove    vzdump-qemu-100-2024_01_09-22_00_00.vma.zst beyond keep-hourly"
}

@test "keep-hourly: the same hour on two days is two periods" {
	make_backups "$D" 100 2024_01_10-23_00_00 2024_01_09-23_00_00 2024_01_08-23_00_00
	run -0 decisions -n --keep-hourly 2 "$D"
	assert_output "keep 2024_01_10-23_00_00
keep 2024_01_09-23_00_00
remove 2024_01_08-23_00_00"
}

@test "a month with 31 days: 31 January 23:59:59 is January, 1 February 00:00:00 is February" {
	make_backups "$D" 100 2024_02_01-00_00_00 2024_01_31-23_59_59 2024_01_31-02_00_00 \
		2024_01_01-00_00_00 2023_12_31-23_59_59
	run -0 decisions -n --keep-monthly 2 "$D"
	assert_output "keep 2024_02_01-00_00_00
keep 2024_01_31-23_59_59
remove 2024_01_31-02_00_00
remove 2024_01_01-00_00_00
remove 2023_12_31-23_59_59"
	run -0 decisions -n --keep-daily 3 "$D"
	assert_output "keep 2024_02_01-00_00_00
keep 2024_01_31-23_59_59
remove 2024_01_31-02_00_00
keep 2024_01_01-00_00_00
remove 2023_12_31-23_59_59"
}

@test "day 31 exists only in long months; 29 February only in leap years" {
	make_backups "$D" 100 2024_01_31-02_00_00 2024_02_29-02_00_00 2024_03_31-02_00_00
	: >"$D/$(backup_name 100 2024_04_31-02_00_00)"
	: >"$D/$(backup_name 100 2023_02_29-02_00_00)"
	run -0 decisions -n --keep-monthly 5 "$D"
	assert_output "keep 2024_03_31-02_00_00
keep 2024_02_29-02_00_00
keep 2024_01_31-02_00_00
renamed 2023_02_29-02_00_00
renamed 2024_04_31-02_00_00"
}

@test "1970 and 2070: keep-yearly=2 and keep-monthly count periods that hold backups, decades apart" {
	make_backups "$D" 100 2070_12_31-23_59_59 2070_01_01-00_00_00 1970_12_31-23_59_59 \
		1970_01_01-00_00_00
	run -0 decisions -n --keep-yearly 2 "$D"
	assert_output "keep 2070_12_31-23_59_59
remove 2070_01_01-00_00_00
keep 1970_12_31-23_59_59
remove 1970_01_01-00_00_00"
	run -0 decisions -n --keep-monthly 3 "$D"
	assert_output "keep 2070_12_31-23_59_59
keep 2070_01_01-00_00_00
keep 1970_12_31-23_59_59
remove 1970_01_01-00_00_00"
}

@test "a time just before the epoch in the local zone (time_t -1) is a valid backup time" {
	make_backups "$D" 100 1970_01_01-00_00_00 1969_12_31-18_59_59 1969_12_31-18_00_00
	TZ=America/New_York run -0 bash -c 'vzdump-prune -n --json --keep-daily 1 --keep-yearly 2 "$1" | jq -c ".[] | [.ctime, .mark, .reason]"' _ "$D"
	assert_output '[18000,"keep","keep-daily 1/1"]
[-1,"keep","keep-yearly 1/2"]
[-3600,"remove","same year as a newer kept backup"]'
}

@test "a rule asking for more periods than there are backups keeps them all" {
	make_backups "$D" 100 2024_01_03-02_00_00 2024_01_02-02_00_00 2024_01_01-02_00_00
	run -0 vzdump-prune --keep-daily 30 --keep-yearly 10 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_03-02_00_00.vma.zst keep-daily 1/30
keep      vzdump-qemu-100-2024_01_02-02_00_00.vma.zst keep-daily 2/30
keep      vzdump-qemu-100-2024_01_01-02_00_00.vma.zst keep-daily 3/30"
	run files_in "$D"
	assert_equal "$(wc -l <<<"$output")" 3
}

@test "two VMIDs in one directory are pruned separately, each by the whole policy" {
	make_backups "$D" 101 2024_01_05-02_00_00 2024_01_04-02_00_00 2024_01_03-02_00_00
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	run -0 decisions -n --keep-last 2 "$D"
	assert_output "keep 2024_01_02-02_00_00
keep 2024_01_01-02_00_00
keep 101:2024_01_05-02_00_00
keep 101:2024_01_04-02_00_00
remove 101:2024_01_03-02_00_00"
}

@test "--vmid limits listing and removal to one guest" {
	make_backups "$D" 101 2024_01_05-02_00_00 2024_01_04-02_00_00
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	: >"$D/vzdump-qemu-101-renamed.vma"
	: >"$D/vzdump-qemu-100-renamed.vma"
	run -0 decisions --vmid 101 --keep-last 1 "$D"
	assert_output "keep 101:2024_01_05-02_00_00
remove 101:2024_01_04-02_00_00
renamed vzdump-qemu-101-renamed.vma"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_01-02_00_00.vma.zst
vzdump-qemu-100-2024_01_02-02_00_00.vma.zst
vzdump-qemu-100-renamed.vma
vzdump-qemu-101-2024_01_05-02_00_00.vma.zst
vzdump-qemu-101-renamed.vma"
}

@test "with TZ=Pacific/Auckland the file name's wall clock decides the day, not UTC" {
	# 00:30 and 23:30 local are both 9 January in UTC; read as local, they are two days.
	make_backups "$D" 100 2024_01_10-00_30_00 2024_01_09-23_30_00 2024_01_09-02_00_00
	TZ=Pacific/Auckland run -0 bash -c 'vzdump-prune -n --json --keep-daily 2 "$1" | jq -c ".[] | [.file, .ctime, .mark]"' _ "$D"
	assert_output '["vzdump-qemu-100-2024_01_10-00_30_00.vma.zst",1704799800,"keep"]
["vzdump-qemu-100-2024_01_09-23_30_00.vma.zst",1704796200,"keep"]
["vzdump-qemu-100-2024_01_09-02_00_00.vma.zst",1704718800,"remove"]'
}

@test "around DST changes names are read as Perl's timelocal() reads them: twice-occurring is earlier, skipped is later" {
	# Europe/Berlin: 2024-10-27 02:07:43 happens twice (CEST, then CET): the earlier is taken.
	# 2024-03-31 02:30:00 never happens; it is read as 03:30 CEST, newer than 03:10.
	make_backups "$D" 100 2024_12_01-12_00_00 2024_10_27-02_07_43 2024_07_01-12_00_00 \
		2024_03_31-03_10_00 2024_03_31-02_30_00
	TZ=Europe/Berlin run -0 bash -c 'vzdump-prune -n --json --keep-hourly 5 "$1" | jq -c ".[] | [.file, .ctime, .mark]"' _ "$D"
	assert_output '["vzdump-qemu-100-2024_12_01-12_00_00.vma.zst",1733050800,"keep"]
["vzdump-qemu-100-2024_10_27-02_07_43.vma.zst",1729987663,"keep"]
["vzdump-qemu-100-2024_07_01-12_00_00.vma.zst",1719828000,"keep"]
["vzdump-qemu-100-2024_03_31-02_30_00.vma.zst",1711848600,"keep"]
["vzdump-qemu-100-2024_03_31-03_10_00.vma.zst",1711847400,"remove"]'
}

@test "exactly the archive names Proxmox's storage layer knows, and .vma.xz, are backups; one time with two archives keeps one" {
	# PVE::Storage: vma, optionally .gz, .lzo, .zst or .bz2 (case matters); .xz is our extra.
	for ext in "" .gz .lzo .zst .bz2 .xz; do
		: >"$D/$(backup_name 100 2024_01_01-02_00_00 "$ext")"
	done
	for ext in .Gz .ZST .bz3 .lz4 .gzip .zstd .lzop .zst.tmp .gz.notes .xz.log ".zst " .; do
		: >"$D/$(backup_name 100 2024_01_01-02_00_00 "$ext")"
	done
	: >"$D/vzdump-qemu-100-2024_01_01-02_00_00.VMA"
	: >"$D/vzdump-qemu-100-2024_01_01-02_00_00.tar.zst"
	: >"$D/vzdump-lxc-100-2024_01_01-02_00_00.tar.gz"
	run -0 vzdump-prune -n --keep-last 1 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_01-02_00_00.vma keep-last 1/1
remove    vzdump-qemu-100-2024_01_01-02_00_00.vma.bz2 same time as a kept backup
remove    vzdump-qemu-100-2024_01_01-02_00_00.vma.gz same time as a kept backup
remove    vzdump-qemu-100-2024_01_01-02_00_00.vma.lzo same time as a kept backup
remove    vzdump-qemu-100-2024_01_01-02_00_00.vma.xz same time as a kept backup
remove    vzdump-qemu-100-2024_01_01-02_00_00.vma.zst same time as a kept backup"
}

# --- removal ----------------------------------------------------------------------------

@test "removing a backup also removes its .log, .notes and .sha256, and nothing of the kept ones" {
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	for s in 2024_01_02-02_00_00 2024_01_01-02_00_00; do
		: >"$D/vzdump-qemu-100-$s.log"
		: >"$D/$(backup_name 100 "$s").notes"
		: >"$D/$(backup_name 100 "$s").sha256"
	done
	run -0 vzdump-prune --keep-last 1 "$D"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_02-02_00_00.log
vzdump-qemu-100-2024_01_02-02_00_00.vma.zst
vzdump-qemu-100-2024_01_02-02_00_00.vma.zst.notes
vzdump-qemu-100-2024_01_02-02_00_00.vma.zst.sha256"
}

@test "a .log shared with an archive that stays (same time, other extension) is not removed" {
	# vzdump names the log without the archive extension, so two archives of one time share it.
	make_backups "$D" 100 2024_01_03-02_00_00
	: >"$D/$(backup_name 100 2024_01_02-02_00_00 .gz)"
	: >"$D/$(backup_name 100 2024_01_02-02_00_00)"
	protect "$D" 100 2024_01_02-02_00_00
	: >"$D/$(backup_name 100 2024_01_01-02_00_00 '')"
	: >"$D/$(backup_name 100 2024_01_01-02_00_00 .lzo)"
	: >"$D/$(backup_name 100 2024_01_01-02_00_00 .lzo).notes"
	for s in 2024_01_02-02_00_00 2024_01_01-02_00_00; do
		: >"$D/vzdump-qemu-100-$s.log"
	done
	run -0 vzdump-prune --keep-last 2 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_03-02_00_00.vma.zst keep-last 1/2
keep      vzdump-qemu-100-2024_01_02-02_00_00.vma.gz keep-last 2/2
protected vzdump-qemu-100-2024_01_02-02_00_00.vma.zst has a .protected marker
remove    vzdump-qemu-100-2024_01_01-02_00_00.vma beyond keep-last
remove    vzdump-qemu-100-2024_01_01-02_00_00.vma.lzo beyond keep-last"
	run -0 vzdump-prune --keep-last 1 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_03-02_00_00.vma.zst keep-last 1/1
remove    vzdump-qemu-100-2024_01_02-02_00_00.vma.gz beyond keep-last
protected vzdump-qemu-100-2024_01_02-02_00_00.vma.zst has a .protected marker"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_02-02_00_00.log
vzdump-qemu-100-2024_01_02-02_00_00.vma.zst
vzdump-qemu-100-2024_01_02-02_00_00.vma.zst.protected
vzdump-qemu-100-2024_01_03-02_00_00.vma.zst"
}

@test "two archives of one time: the duplicate is removed, the kept one keeps the shared .log" {
	: >"$D/$(backup_name 100 2024_01_01-02_00_00 '')"
	: >"$D/$(backup_name 100 2024_01_01-02_00_00)"
	: >"$D/vzdump-qemu-100-2024_01_01-02_00_00.log"
	run -0 decisions --keep-last 1 "$D"
	assert_output "keep vzdump-qemu-100-2024_01_01-02_00_00.vma
remove 2024_01_01-02_00_00"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_01-02_00_00.log
vzdump-qemu-100-2024_01_01-02_00_00.vma"
}

@test "protected backups and their companions are left untouched by a real run" {
	make_backups "$D" 100 2024_01_03-02_00_00 2024_01_02-02_00_00 2024_01_01-02_00_00
	protect "$D" 100 2024_01_01-02_00_00
	: >"$D/vzdump-qemu-100-2024_01_01-02_00_00.log"
	: >"$D/$(backup_name 100 2024_01_01-02_00_00).notes"
	: >"$D/$(backup_name 100 2024_01_01-02_00_00).sha256"
	run -0 decisions --keep-last 1 "$D"
	assert_output "keep 2024_01_03-02_00_00
remove 2024_01_02-02_00_00
protected 2024_01_01-02_00_00"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_01-02_00_00.log
vzdump-qemu-100-2024_01_01-02_00_00.vma.zst
vzdump-qemu-100-2024_01_01-02_00_00.vma.zst.notes
vzdump-qemu-100-2024_01_01-02_00_00.vma.zst.protected
vzdump-qemu-100-2024_01_01-02_00_00.vma.zst.sha256
vzdump-qemu-100-2024_01_03-02_00_00.vma.zst"
}

@test "files that are not finished qemu backups are never listed or touched" {
	make_backups "$D" 100 2024_01_03-02_00_00 2024_01_02-02_00_00
	others=(
		vzdump-qemu-100-2024_01_01-02_00_00.dat          # in progress, uncompressed
		vzdump-qemu-100-2024_01_01-02_00_00.vma.dat      # in progress, compressed
		vzdump-qemu-100-2024_01_01-02_00_00.tmp
		vzdump-qemu-100-2024_01_01-02_00_00.log          # log of a backup that is gone
		vzdump-qemu-100-2024_01_01-02_00_00.vma.zst.notes
		vzdump-qemu-100-2024_01_01-02_00_00.vma.zst.sha256 # a lone .sha256 is no backup
		vzdump-qemu-100-2024_01_01-02_00_00.vma.bz3      # not an extension Proxmox knows
		vzdump-qemu-100-2024_01_01-02_00_00.vma.zst.orig
		vzdump-qemu-.vma
		vzdump-qemu-100.vmax
		qemu-100-2024_01_01-02_00_00.vma
		README
	)
	for f in "${others[@]}"; do : >"$D/$f"; done
	run -0 decisions --keep-last 1 "$D"
	assert_output "keep 2024_01_03-02_00_00
remove 2024_01_02-02_00_00"
	run files_in "$D"
	assert_output "$(printf '%s\n' "${others[@]}" "$(backup_name 100 2024_01_03-02_00_00)" | LC_ALL=C sort)"
}

@test "--dry-run decides and prints but deletes nothing" {
	make_backups "$D" 100 2024_01_0{5,4,3,2,1}-02_00_00
	: >"$D/vzdump-qemu-100-2024_01_01-02_00_00.log"
	before=$(files_in "$D")
	run -0 vzdump-prune --dry-run --keep-last 1 "$D"
	assert_line --index 4 "remove    $(backup_name 100 2024_01_01-02_00_00) beyond keep-last"
	assert_equal "$(files_in "$D")" "$before"
}

@test "a symlink or directory named like a backup is refused; the other removals are done; exit 1" {
	outside=$BATS_TEST_TMPDIR/outside
	echo precious >"$outside"
	make_backups "$D" 100 2024_01_04-02_00_00 2024_01_02-02_00_00
	ln -s "$outside" "$D/$(backup_name 100 2024_01_03-02_00_00)"
	mkdir "$D/$(backup_name 100 2024_01_01-02_00_00)"
	: >"$D/vzdump-qemu-100-2024_01_02-02_00_00.log"
	run --separate-stderr -1 vzdump-prune --keep-last 1 "$D"
	assert_output ""
	assert_equal "$stderr" "vzdump-prune: remove vzdump-qemu-100-2024_01_03-02_00_00.vma.zst: not a regular file, left in place
vzdump-prune: remove vzdump-qemu-100-2024_01_01-02_00_00.vma.zst: not a regular file, left in place
vzdump-prune: 2 of the backups to remove could not be removed"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_01-02_00_00.vma.zst
vzdump-qemu-100-2024_01_03-02_00_00.vma.zst
vzdump-qemu-100-2024_01_04-02_00_00.vma.zst"
	assert_equal "$(cat "$outside")" precious
}

@test "a .log that is a directory or a symlink out of DUMPDIR is left alone: archive removed, exit 1" {
	outside=$BATS_TEST_TMPDIR/outside.log
	echo precious >"$outside"
	make_backups "$D" 100 2024_01_03-02_00_00 2024_01_02-02_00_00 2024_01_01-02_00_00
	mkdir "$D/vzdump-qemu-100-2024_01_02-02_00_00.log"
	ln -s "$outside" "$D/vzdump-qemu-100-2024_01_01-02_00_00.log"
	: >"$D/$(backup_name 100 2024_01_01-02_00_00).notes"
	run --separate-stderr -1 vzdump-prune --keep-last 1 "$D"
	assert_output ""
	assert_equal "$stderr" "vzdump-prune: remove vzdump-qemu-100-2024_01_02-02_00_00.log: not a regular file, left in place
vzdump-prune: remove vzdump-qemu-100-2024_01_01-02_00_00.log: not a regular file, left in place
vzdump-prune: 2 of the backups to remove could not be removed"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_01-02_00_00.log
vzdump-qemu-100-2024_01_02-02_00_00.log
vzdump-qemu-100-2024_01_03-02_00_00.vma.zst"
	assert_equal "$(cat "$outside")" precious
}

@test "in a read-only directory every removal fails and is reported: exit 1, nothing on stdout" {
	reachable_dir
	make_backups "$D" 100 2024_01_03-02_00_00 2024_01_02-02_00_00 2024_01_01-02_00_00
	chown -R 65534:65534 "$D" 2>/dev/null || true
	chmod 555 "$D"
	run --separate-stderr -1 as_nobody "$VZ_BIN/vzdump-prune" --keep-last 1 "$D"
	assert_output ""
	assert_equal "$stderr" "vzdump-prune: remove vzdump-qemu-100-2024_01_02-02_00_00.vma.zst: Permission denied
vzdump-prune: remove vzdump-qemu-100-2024_01_01-02_00_00.vma.zst: Permission denied
vzdump-prune: 2 of the backups to remove could not be removed"
	run files_in "$D"
	assert_equal "$(wc -l <<<"$output")" 3
}

@test "one removal that fails (a file the user may not delete) does not stop the others: exit 1" {
	[ "$(id -u)" -eq 0 ] || skip "needs root to create a file another user cannot delete"
	reachable_dir
	chmod 1777 "$D" # sticky: only a file's owner may delete it
	make_backups "$D" 100 2024_01_04-02_00_00 2024_01_03-02_00_00 2024_01_02-02_00_00 \
		2024_01_01-02_00_00
	for s in 2024_01_03-02_00_00 2024_01_01-02_00_00; do
		: >"$D/vzdump-qemu-100-$s.log"
	done
	chown 65534:65534 "$D"/*
	chown 0:0 "$D/$(backup_name 100 2024_01_02-02_00_00)"
	run --separate-stderr -1 as_nobody "$VZ_BIN/vzdump-prune" --keep-last 1 "$D"
	assert_output ""
	assert_equal "$stderr" "vzdump-prune: remove vzdump-qemu-100-2024_01_02-02_00_00.vma.zst: Operation not permitted
vzdump-prune: 1 of the backups to remove could not be removed"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_02-02_00_00.vma.zst
vzdump-qemu-100-2024_01_04-02_00_00.vma.zst"
}

# --- incremental backups ----------------------------------------------------------------

@test "incrementals count as backups: keep-last=2 keeps the two newest and their chain, each 'needed by' the newest" {
	make_backups "$D" 100 2023_12_31-02_00_00 2024_01_01-02_00_00
	make_incs "$D" 100 2024_01_0{2,3,4}-02_00_00
	run -0 vzdump-prune -n --keep-last 2 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst keep-last 1/2
keep      vzdump-qemu-100-2024_01_03-02_00_00.inc.vma.zst keep-last 2/2
keep      vzdump-qemu-100-2024_01_02-02_00_00.inc.vma.zst needed by vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst
keep      vzdump-qemu-100-2024_01_01-02_00_00.vma.zst needed by vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst
remove    vzdump-qemu-100-2023_12_31-02_00_00.vma.zst beyond keep-last"
	run -0 vzdump-prune --keep-last 2 "$D"
	run files_in "$D"
	assert_output "$(backup_name 100 2024_01_01-02_00_00)
$(inc_name 100 2024_01_02-02_00_00)
$(inc_name 100 2024_01_03-02_00_00)
$(inc_name 100 2024_01_04-02_00_00)"
}

@test "incrementals in --json: mark keep, reason 'needed by NAME' and needed_by NAME; other objects as before" {
	make_backups "$D" 100 2023_12_31-02_00_00 2024_01_01-02_00_00
	make_incs "$D" 100 2024_01_0{2,3,4}-02_00_00
	run -0 bash -c 'vzdump-prune -n --json --keep-last 2 "$1" | jq -c ".[]"' _ "$D"
	assert_output '{"file":"vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst","vmid":100,"ctime":1704333600,"mark":"keep","reason":"keep-last 1/2"}
{"file":"vzdump-qemu-100-2024_01_03-02_00_00.inc.vma.zst","vmid":100,"ctime":1704247200,"mark":"keep","reason":"keep-last 2/2"}
{"file":"vzdump-qemu-100-2024_01_02-02_00_00.inc.vma.zst","vmid":100,"ctime":1704160800,"mark":"keep","reason":"needed by vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst","needed_by":"vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst"}
{"file":"vzdump-qemu-100-2024_01_01-02_00_00.vma.zst","vmid":100,"ctime":1704074400,"mark":"keep","reason":"needed by vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst","needed_by":"vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst"}
{"file":"vzdump-qemu-100-2023_12_31-02_00_00.vma.zst","vmid":100,"ctime":1703988000,"mark":"remove","reason":"beyond keep-last"}'
	# The lines themselves, as jansson writes them.
	run -0 vzdump-prune -n --json --keep-last 2 "$D"
	assert_line --index 3 '  {"file": "vzdump-qemu-100-2024_01_02-02_00_00.inc.vma.zst", "vmid": 100, "ctime": 1704160800, "mark": "keep", "reason": "needed by vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst", "needed_by": "vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst"},'
	assert_line --index 5 '  {"file": "vzdump-qemu-100-2023_12_31-02_00_00.vma.zst", "vmid": 100, "ctime": 1703988000, "mark": "remove", "reason": "beyond keep-last"}'
}

@test "a protected incremental keeps its chain back to its full; a newer chain is kept apart" {
	make_backups "$D" 100 2024_01_01-02_00_00 2024_01_04-02_00_00
	make_incs "$D" 100 2024_01_02-02_00_00 2024_01_03-02_00_00 2024_01_05-02_00_00
	: >"$D/$(inc_name 100 2024_01_03-02_00_00).protected"
	run -0 decisions -n --keep-last 1 "$D"
	assert_output "keep 2024_01_05-02_00_00 inc
keep 2024_01_04-02_00_00 needed by 2024_01_05-02_00_00 inc
protected 2024_01_03-02_00_00 inc
keep 2024_01_02-02_00_00 inc needed by 2024_01_03-02_00_00 inc
keep 2024_01_01-02_00_00 needed by 2024_01_03-02_00_00 inc"
	run -0 vzdump-prune --keep-last 1 "$D"
	run files_in "$D"
	assert_output "$(backup_name 100 2024_01_01-02_00_00)
$(inc_name 100 2024_01_02-02_00_00)
$(inc_name 100 2024_01_03-02_00_00)
$(inc_name 100 2024_01_03-02_00_00).protected
$(backup_name 100 2024_01_04-02_00_00)
$(inc_name 100 2024_01_05-02_00_00)"
}

@test "keep-daily=3 over a week of daily chains (a full every third day): the three days' newest and their chains survive" {
	# 02:00 a full on 1, 4 and 7 January, an incremental on the other days; 14:00 an
	# incremental every day.
	make_backups "$D" 100 2024_01_0{1,4,7}-02_00_00
	make_incs "$D" 100 2024_01_0{2,3,5,6}-02_00_00 2024_01_0{1,2,3,4,5,6,7}-14_00_00
	run -0 decisions -n --keep-daily 3 "$D"
	assert_output "keep 2024_01_07-14_00_00 inc
keep 2024_01_07-02_00_00 needed by 2024_01_07-14_00_00 inc
keep 2024_01_06-14_00_00 inc
keep 2024_01_06-02_00_00 inc needed by 2024_01_06-14_00_00 inc
keep 2024_01_05-14_00_00 inc
keep 2024_01_05-02_00_00 inc needed by 2024_01_06-14_00_00 inc
keep 2024_01_04-14_00_00 inc needed by 2024_01_06-14_00_00 inc
keep 2024_01_04-02_00_00 needed by 2024_01_06-14_00_00 inc
remove 2024_01_03-14_00_00 inc
remove 2024_01_03-02_00_00 inc
remove 2024_01_02-14_00_00 inc
remove 2024_01_02-02_00_00 inc
remove 2024_01_01-14_00_00 inc
remove 2024_01_01-02_00_00"
	run -0 vzdump-prune --keep-daily 3 "$D"
	run files_in "$D"
	assert_output "$(backup_name 100 2024_01_04-02_00_00)
$(inc_name 100 2024_01_04-14_00_00)
$(inc_name 100 2024_01_05-02_00_00)
$(inc_name 100 2024_01_05-14_00_00)
$(inc_name 100 2024_01_06-02_00_00)
$(inc_name 100 2024_01_06-14_00_00)
$(backup_name 100 2024_01_07-02_00_00)
$(inc_name 100 2024_01_07-14_00_00)"
}

@test "a full no staying incremental needs is removed with its .log, .notes and .sha256; an incremental's .log has no .inc" {
	make_backups "$D" 100 2024_01_01-02_00_00 2024_01_03-02_00_00
	make_incs "$D" 100 2024_01_02-02_00_00 2024_01_04-02_00_00
	for s in 2024_01_0{1,3}-02_00_00; do
		: >"$D/vzdump-qemu-100-$s.log"
		: >"$D/$(backup_name 100 "$s").notes"
		: >"$D/$(backup_name 100 "$s").sha256"
	done
	for s in 2024_01_0{2,4}-02_00_00; do
		: >"$D/vzdump-qemu-100-$s.log"
		: >"$D/$(inc_name 100 "$s").notes"
		: >"$D/$(inc_name 100 "$s").sha256"
	done
	run -0 vzdump-prune --keep-last 1 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst keep-last 1/1
keep      vzdump-qemu-100-2024_01_03-02_00_00.vma.zst needed by vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst
remove    vzdump-qemu-100-2024_01_02-02_00_00.inc.vma.zst beyond keep-last
remove    vzdump-qemu-100-2024_01_01-02_00_00.vma.zst beyond keep-last"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_03-02_00_00.log
vzdump-qemu-100-2024_01_03-02_00_00.vma.zst
vzdump-qemu-100-2024_01_03-02_00_00.vma.zst.notes
vzdump-qemu-100-2024_01_03-02_00_00.vma.zst.sha256
vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst
vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst.notes
vzdump-qemu-100-2024_01_04-02_00_00.inc.vma.zst.sha256
vzdump-qemu-100-2024_01_04-02_00_00.log"
}

@test "a chain without a full keeps what exists of it and warns for each incremental the policy keeps; exit 0" {
	make_incs "$D" 100 2024_01_0{1,2,3}-02_00_00
	make_backups "$D" 101 2024_01_01-02_00_00
	make_incs "$D" 101 2024_01_02-02_00_00
	run --separate-stderr -0 decisions --keep-last 2 "$D"
	assert_output "keep 2024_01_03-02_00_00 inc
keep 2024_01_02-02_00_00 inc
keep 2024_01_01-02_00_00 inc needed by 2024_01_03-02_00_00 inc
keep 101:2024_01_02-02_00_00 inc
keep 101:2024_01_01-02_00_00"
	assert_equal "$stderr" "vzdump-prune: vzdump-qemu-100-2024_01_03-02_00_00.inc.vma.zst: its chain has no full backup
vzdump-prune: vzdump-qemu-100-2024_01_02-02_00_00.inc.vma.zst: its chain has no full backup"
	run -0 vzdump-prune --keep-last 1 "$D"
	run files_in "$D"
	assert_equal "$(wc -l <<<"$output")" 5
}

@test "a parent's time with archives in two formats is one step of the chain: both are kept; the incremental's own other format is not" {
	: >"$D/$(backup_name 100 2024_01_01-02_00_00 '')"
	make_backups "$D" 100 2023_12_31-02_00_00 2024_01_01-02_00_00
	: >"$D/$(inc_name 100 2024_01_02-02_00_00 '')"
	make_incs "$D" 100 2024_01_02-02_00_00
	run -0 decisions --keep-last 1 "$D"
	assert_output "keep vzdump-qemu-100-2024_01_02-02_00_00.inc.vma
remove 2024_01_02-02_00_00 inc
keep vzdump-qemu-100-2024_01_01-02_00_00.vma needed by vzdump-qemu-100-2024_01_02-02_00_00.inc.vma
keep 2024_01_01-02_00_00 needed by vzdump-qemu-100-2024_01_02-02_00_00.inc.vma
remove 2023_12_31-02_00_00"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_01-02_00_00.vma
vzdump-qemu-100-2024_01_01-02_00_00.vma.zst
vzdump-qemu-100-2024_01_02-02_00_00.inc.vma"
}

@test "incrementals in every format are backups; other spellings of .inc are renamed or ignored" {
	make_backups "$D" 100 2024_01_01-02_00_00
	for ext in "" .gz .lzo .zst .bz2 .xz; do
		: >"$D/$(inc_name 100 2024_01_02-02_00_00 "$ext")"
	done
	for ext in .ZST .bz3 .zst.tmp .gz.notes; do
		: >"$D/$(inc_name 100 2024_01_02-02_00_00 "$ext")"
	done
	for f in .INC.vma .inc.inc.vma inc.vma .inc .inc.log .inc.dat; do
		: >"$D/vzdump-qemu-100-2024_01_02-02_00_00$f"
	done
	run -0 vzdump-prune -n --keep-last 1 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_02-02_00_00.inc.vma keep-last 1/1
remove    vzdump-qemu-100-2024_01_02-02_00_00.inc.vma.bz2 same time as a kept backup
remove    vzdump-qemu-100-2024_01_02-02_00_00.inc.vma.gz same time as a kept backup
remove    vzdump-qemu-100-2024_01_02-02_00_00.inc.vma.lzo same time as a kept backup
remove    vzdump-qemu-100-2024_01_02-02_00_00.inc.vma.xz same time as a kept backup
remove    vzdump-qemu-100-2024_01_02-02_00_00.inc.vma.zst same time as a kept backup
keep      vzdump-qemu-100-2024_01_01-02_00_00.vma.zst needed by vzdump-qemu-100-2024_01_02-02_00_00.inc.vma
renamed   vzdump-qemu-100-2024_01_02-02_00_00.INC.vma not a standard vzdump name
renamed   vzdump-qemu-100-2024_01_02-02_00_00.inc.inc.vma not a standard vzdump name
renamed   vzdump-qemu-100-2024_01_02-02_00_00inc.vma not a standard vzdump name"
}

# --- options ----------------------------------------------------------------------------

@test "--prune-backups accepts Proxmox's property string; single --keep-* options win over it" {
	make_backups "$D" 100 2024_01_0{5,4,3,2,1}-02_00_00
	run -0 decisions -n --prune-backups 'keep-last=4,keep-daily=1' --keep-last 1 "$D"
	assert_output "keep 2024_01_05-02_00_00
keep 2024_01_04-02_00_00
remove 2024_01_03-02_00_00
remove 2024_01_02-02_00_00
remove 2024_01_01-02_00_00"
	run -0 decisions -n --keep-last 1 --prune-backups 'keep-last=4' "$D"
	assert_line --index 1 "remove 2024_01_04-02_00_00"
	run -0 decisions -n --prune-backups keep-last=1 --prune-backups ',keep-last=2,' "$D"
	assert_line --index 1 "keep 2024_01_04-02_00_00"
	assert_line --index 2 "remove 2024_01_03-02_00_00"
}

@test "control characters in a renamed name print as '?'; in JSON, a name that is not UTF-8 gets '?' per byte" {
	make_backups "$D" 100 2024_01_01-02_00_00
	: >"$D/vzdump-qemu-100-my"$'\n'"backup"$'\xff'".vma"
	run -0 vzdump-prune -n --keep-last 1 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_01-02_00_00.vma.zst keep-last 1/1
renamed   vzdump-qemu-100-my?backup"$'\xff'".vma not a standard vzdump name"
	run -0 bash -c 'vzdump-prune -n --json --keep-last 1 "$1" | jq -c ".[1]"' _ "$D"
	assert_output '{"file":"vzdump-qemu-100-my\nbackup?.vma","vmid":100,"ctime":null,"mark":"renamed","reason":"not a standard vzdump name"}'
}

@test "no keep option, or --keep-all, keeps everything" {
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	run -0 vzdump-prune "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_02-02_00_00.vma.zst keep-all
keep      vzdump-qemu-100-2024_01_01-02_00_00.vma.zst keep-all"
	run -0 decisions --keep-all "$D"
	assert_output "keep 2024_01_02-02_00_00
keep 2024_01_01-02_00_00"
	run -0 decisions --prune-backups keep-all=1 --keep-daily 0 "$D"
	assert_output "keep 2024_01_02-02_00_00
keep 2024_01_01-02_00_00"
}

@test "keep-all together with a positive keep-* count is a usage error" {
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	run --separate-stderr -2 vzdump-prune --keep-all --keep-daily 1 "$D"
	assert_output ""
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: keep-all cannot be set together with other options"
	run --separate-stderr -2 vzdump-prune --prune-backups keep-all=yes,keep-last=2 "$D"
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: keep-all cannot be set together with other options"
	run files_in "$D"
	assert_equal "$(wc -l <<<"$output")" 2
}

@test "huge counts are accepted like Proxmox's schema accepts them, and are capped at 4294967295" {
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	run -0 vzdump-prune -n --keep-last 99999999999999999999 "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_02-02_00_00.vma.zst keep-last 1/4294967295
keep      vzdump-qemu-100-2024_01_01-02_00_00.vma.zst keep-last 2/4294967295"
	run -0 decisions -n --prune-backups keep-daily=2147483648 "$D"
	assert_output "keep 2024_01_02-02_00_00
keep 2024_01_01-02_00_00"
	run --separate-stderr -2 vzdump-prune --vmid 99999999999999999999 "$D"
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: --vmid: '99999999999999999999' is not a VMID"
}

@test "bad counts and property strings are usage errors that name the problem" {
	run --separate-stderr -2 vzdump-prune --keep-daily -1 "$D"
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: --keep-daily: '-1' is not an integer >= 0"
	run --separate-stderr -2 vzdump-prune --keep-last 3x "$D"
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: --keep-last: '3x' is not an integer >= 0"
	run --separate-stderr -2 vzdump-prune --prune-backups keep-fortnightly=2 "$D"
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: --prune-backups: unknown key 'keep-fortnightly'"
	run --separate-stderr -2 vzdump-prune --prune-backups keep-last=1,keep-last=2 "$D"
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: --prune-backups: duplicate key 'keep-last'"
	run --separate-stderr -2 vzdump-prune --prune-backups keep-last "$D"
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: --prune-backups: 'keep-last' is not KEY=VALUE"
	run --separate-stderr -2 vzdump-prune --prune-backups keep-all=maybe "$D"
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: --prune-backups: keep-all: 'maybe' is not a boolean"
	run --separate-stderr -2 vzdump-prune --vmid abc "$D"
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: --vmid: 'abc' is not a VMID"
	assert_output ""
}

@test "a --prune-backups spec without any KEY=VALUE pair is a usage error, not keep-all" {
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	for spec in '' , ' , '; do
		run --separate-stderr -2 vzdump-prune --prune-backups "$spec" "$D"
		assert_output ""
		assert_equal "${stderr%%$'\n'*}" "vzdump-prune: --prune-backups: needs KEY=VALUE pairs, e.g. keep-last=3,keep-daily=7 or keep-all=1"
	done
}

# --- --check ----------------------------------------------------------------------------

@test "--check accepts valid specs silently, as --prune-backups reads them, and touches no directory" {
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	before=$(files_in "$D")
	run --separate-stderr -0 vzdump-prune --check keep-last=3,keep-daily=7 keep-all=1 \
		keep-all=YES,keep-daily=0 keep-last=0 ',keep-last=2,' keep-weekly=007 \
		keep-monthly=99999999999999999999 keep-hourly=1,keep-yearly=1,keep-all=off
	assert_output ""
	assert_equal "$stderr" ""
	assert_equal "$(files_in "$D")" "$before"
}

@test "--check refuses what vzdump.sh refuses, with --prune-backups' message, on one line, exit 2" {
	check() { # SPEC MESSAGE
		run --separate-stderr -2 vzdump-prune --check -- "$1"
		assert_output ""
		assert_equal "$stderr" "vzdump-prune: --prune-backups: $2"
	}
	check keep-all=1,keep-last=2 "keep-all cannot be set together with other options"
	check keep-last=2,keep-all=true "keep-all cannot be set together with other options"
	check keep-lasts=2 "unknown key 'keep-lasts'"
	check keep-last=-1 "keep-last: '-1' is not an integer >= 0"
	check keep-last= "keep-last: '' is not an integer >= 0"
	check 'keep-last=1 ' "keep-last: '1 ' is not an integer >= 0"
	check keep-last=2,keep-last=3 "duplicate key 'keep-last'"
	check keep-all=maybe "keep-all: 'maybe' is not a boolean"
	check keep-last "'keep-last' is not KEY=VALUE"
	check -keep-last=1 "unknown key '-keep-last'"
	check '' "needs KEY=VALUE pairs, e.g. keep-last=3,keep-daily=7 or keep-all=1"
	# The first bad one of several is named.
	run --separate-stderr -2 vzdump-prune --check keep-last=1 keep-daily=x keep-x=1
	assert_equal "$stderr" "vzdump-prune: --prune-backups: keep-daily: 'x' is not an integer >= 0"
}

@test "--check needs a spec and takes no other option" {
	run --separate-stderr -2 vzdump-prune --check
	assert_output ""
	[[ $stderr == "vzdump-prune: --check needs at least one spec"$'\n'"usage: vzdump-prune "* ]] ||
		fail "$stderr"
	for args in "--check -n keep-last=1" "--keep-last 1 --check keep-last=1" \
		"--check --json keep-last=1"; do
		# shellcheck disable=SC2086 # the words are the arguments
		run --separate-stderr -2 vzdump-prune $args
		assert_output ""
		[[ $stderr == "vzdump-prune: --check takes no other option"$'\n'"usage: vzdump-prune "* ]] ||
			fail "$args: $stderr"
	done
}

@test "a missing DUMPDIR, or one that is not a directory, exits 2; no DUMPDIR prints the usage" {
	run --separate-stderr -2 vzdump-prune --keep-last 1 "$D/nope"
	assert_equal "$stderr" "vzdump-prune: $D/nope: No such file or directory"
	: >"$D/file"
	run --separate-stderr -2 vzdump-prune --keep-last 1 "$D/file"
	assert_equal "$stderr" "vzdump-prune: $D/file: Not a directory"
	run --separate-stderr -2 vzdump-prune --keep-last 1
	assert_output ""
	assert_equal "${stderr%%$'\n'*}" "vzdump-prune: expected one dumpdir"
	[[ $stderr == *$'\n'"usage: vzdump-prune [-n | --dry-run] [--json] [--vmid id] [--keep-all]"$'\n'* ]]
}

@test "DUMPDIR may be relative or end in a slash; the names in the report stay bare" {
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	cd "$BATS_TEST_TMPDIR"
	run -0 vzdump-prune -n --keep-last 1 dump/
	assert_output "keep      vzdump-qemu-100-2024_01_02-02_00_00.vma.zst keep-last 1/1
remove    vzdump-qemu-100-2024_01_01-02_00_00.vma.zst beyond keep-last"
	cd "$D"
	run -0 vzdump-prune --keep-last 1 .
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_02-02_00_00.vma.zst"
}

@test "keep-all still reports protected and renamed backups as such" {
	make_backups "$D" 100 2024_01_02-02_00_00 2024_01_01-02_00_00
	protect "$D" 100 2024_01_01-02_00_00
	: >"$D/vzdump-qemu-100-mine.vma"
	run -0 vzdump-prune --keep-all "$D"
	assert_output "keep      vzdump-qemu-100-2024_01_02-02_00_00.vma.zst keep-all
protected vzdump-qemu-100-2024_01_01-02_00_00.vma.zst has a .protected marker
renamed   vzdump-qemu-100-mine.vma not a standard vzdump name"
}

@test "an empty directory gives an empty report and an empty JSON array" {
	run -0 vzdump-prune --keep-last 1 "$D"
	assert_output ""
	run -0 bash -c 'vzdump-prune --json --keep-last 1 "$1" | jq -c .' _ "$D"
	assert_output "[]"
}

@test "in a folder others may write to, backups and markers another user planted count for nothing" {
	[ "$(id -u)" -eq 0 ] || skip "needs root and another user"
	reachable_dir
	chmod 1777 "$D"
	make_backups "$D" 100 2024_01_01-02_00_00 2024_01_02-02_00_00 2024_01_03-02_00_00
	# Newer "backups" (they would push the real ones out of keep-last), and a marker that
	# would keep one for ever.
	for s in 2099_01_01-02_00_00 2099_01_02-02_00_00 2099_01_03-02_00_00; do
		as_nobody touch "$D/$(backup_name 100 "$s")"
	done
	as_nobody touch "$D/$(backup_name 100 2024_01_01-02_00_00).protected"
	run --separate-stderr -0 vzdump-prune --keep-last 2 --vmid 100 "$D"
	run files_in "$D"
	assert_output "vzdump-qemu-100-2024_01_01-02_00_00.vma.zst.protected
vzdump-qemu-100-2024_01_02-02_00_00.vma.zst
vzdump-qemu-100-2024_01_03-02_00_00.vma.zst
vzdump-qemu-100-2099_01_01-02_00_00.vma.zst
vzdump-qemu-100-2099_01_02-02_00_00.vma.zst
vzdump-qemu-100-2099_01_03-02_00_00.vma.zst"
}
