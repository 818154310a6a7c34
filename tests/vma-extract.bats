#!/usr/bin/env bats
# vma-extract: listing, verifying and restoring, Proxmox's own archives included, and refusing
# every kind of damaged or hostile archive with one clear message.

FIXTURE_NAME=pve-live-backup-truncated.vma.gz

setup() {
	load lib/common
	load lib/vma
	load lib/attacker
	enter_work_dir
	FIXTURE="$SHARED/fixtures/$FIXTURE_NAME"
}

need_fixture() {
	[ -f "$FIXTURE" ] || skip "$FIXTURE_NAME is not in ../shared/fixtures"
}

# A small archive with two devices (one of them not a multiple of 64 KiB) and one config, and
# enough clusters for several extents.
make_archive() {
	random_file d0.raw 200000
	truncate -s 8M d1.raw
	random_file chunk 5M
	dd if=chunk of=d1.raw conv=notrunc status=none
	echo "name: vm100" >qemu-server.conf
	vma-create -o base.vma -c qemu-server.conf drive-scsi0=d0.raw drive-scsi1=d1.raw
}

@test "vma-extract -l lists a genuine Proxmox archive line for line as 'vma list' does" {
	need_fixture
	run -0 env TZ=UTC vma-extract -l "$FIXTURE"
	assert_output "CFG: size: 417 name: qemu-server.conf
DEV: dev_id=1 size: 10737418240 devname: drive-scsi0
CTIME: Sun Oct 31 11:43:42 2021"
}

@test "vma-extract -l --json gives the same listing as one JSON object" {
	need_fixture
	run -0 vma-extract -l --json "$FIXTURE"
	assert_equal "$(jq -c . <<<"$output")" \
		'{"uuid":"04fc12eb-0fed-4322-9aaa-f4e412f68096","ctime":1635680622,"configs":[{"name":"qemu-server.conf","size":417}],"devices":[{"dev_id":1,"name":"drive-scsi0","size":10737418240}]}'
}

@test "vma-extract -c prints the stored config of a Proxmox archive byte for byte" {
	need_fixture
	run -0 bash -c "vma-extract -c qemu-server.conf '$FIXTURE' | wc -c"
	assert_output 417
	run -0 vma-extract -c qemu-server.conf "$FIXTURE"
	assert_line --index 0 --regexp '^[a-z]+: '
	run --separate-stderr -1 vma-extract -c nope.conf "$FIXTURE"
	assert_output ""
	assert_equal "$stderr" "vma-extract: $FIXTURE: no config named 'nope.conf'"
}

@test "vma-extract -t and extraction refuse the truncated Proxmox archive with a missing-cluster message" {
	need_fixture
	run --separate-stderr -1 vma-extract -t "$FIXTURE"
	assert_output ""
	assert_equal "$stderr" "vma-extract: $FIXTURE: offset 538112: archive incomplete: cluster 23 of drive-scsi0 is missing (163724 of 163840 clusters missing)"
	run -1 vma-extract "$FIXTURE" out
	assert_output --partial "archive incomplete: cluster 23 of drive-scsi0 is missing"
	[ ! -e out ] || fail "left behind: $(ls -A out)"
}

@test "vma-extract restores every device and config exactly, with holes for zero blocks" {
	make_archive
	run -0 vma-extract -v base.vma out
	assert_output "restored drive-scsi0: 200000 bytes to out/disk-drive-scsi0.raw
restored drive-scsi1: 8388608 bytes to out/disk-drive-scsi1.raw"
	assert_equal "$(ls out)" "$(printf 'disk-drive-scsi0.raw\ndisk-drive-scsi1.raw\nqemu-server.conf')"
	assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha d0.raw)"
	assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha d1.raw)"
	assert_equal "$(cat out/qemu-server.conf)" "name: vm100"
	# 5 MiB of data in an 8 MiB disk: the 3 MiB of zeros are not allocated
	[ "$(du -k out/disk-drive-scsi1.raw | cut -f1)" -le 5200 ]
}

@test "vma-extract -d restores only the chosen devices" {
	make_archive
	vma-extract -d drive-scsi1 base.vma out
	assert_equal "$(ls out)" "$(printf 'disk-drive-scsi1.raw\nqemu-server.conf')"
	assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha d1.raw)"
	run -1 vma-extract -d drive-scsi9 base.vma out2
	assert_output "vma-extract: base.vma: no device named 'drive-scsi9'"
	[ ! -e out2 ]
}

@test "vma-extract refuses a target directory that exists" {
	make_archive
	mkdir out
	run -2 vma-extract base.vma out
	assert_output "vma-extract: out: already exists; give a directory that does not"
	assert_equal "$(ls -A out)" ""
}

@test "vma-extract -t -v prints the listing and the zero-data share after a full check" {
	make_archive
	run -0 vma-extract -t -v base.vma
	assert_line --index 0 "CFG: size: 12 name: qemu-server.conf"
	assert_line --index 1 "DEV: dev_id=1 size: 200000 devname: drive-scsi0"
	assert_line --index 2 "DEV: dev_id=2 size: 8388608 devname: drive-scsi1"
	assert_line --index 4 "total bytes read 8588608, sparse bytes 3145728 (36.6%)"
}

# --- ARCHIVE.sha256 (vzdump.sh writes one beside each archive) ----------------------------

@test "vma-extract -t catches a byte flipped in a data cluster through ARCHIVE.sha256: exit 1, both sums named" {
	make_archive
	sha256sum base.vma >base.vma.sha256
	good=$(sha base.vma)
	run -0 vma-extract -t -v base.vma
	assert_line --index 5 "sha256 $good matches base.vma.sha256"
	# In the 5 MiB of random data of drive-scsi1: the VMA format's MD5s (header, extent
	# headers) do not cover it.
	flip_byte base.vma 2000000
	bad=$(sha base.vma)
	run --separate-stderr -1 vma-extract -t base.vma
	assert_equal "$stderr" "vma-extract: base.vma: sha256 mismatch (base.vma.sha256 says $good, archive is $bad)"
	assert_output ""
	run --separate-stderr -1 vma-extract -t -v "$PWD/base.vma"
	assert_equal "$stderr" "vma-extract: $PWD/base.vma: sha256 mismatch ($PWD/base.vma.sha256 says $good, archive is $bad)"
	assert_output ""
}

@test "vma-extract -t without ARCHIVE.sha256 passes a byte flipped in a data cluster of an uncompressed archive (documents the limit)" {
	make_archive
	flip_byte base.vma 2000000
	run -0 vma-extract -t -v base.vma
	assert_line --index 4 "total bytes read 8588608, sparse bytes 3145728 (36.6%)"
	assert_line --index 5 "sha256 not checked: no base.vma.sha256"
	# Read from standard input, none is looked for, even when one is there.
	sha256sum base.vma >base.vma.sha256
	echo garbage >./-.sha256
	run -0 bash -c 'vma-extract -t -v - <base.vma'
	assert_line --index 5 "sha256 not checked: standard input"
}

@test "vma-extract -t hashes a compressed archive's own bytes, as sha256sum does; -b's '*' is read too" {
	make_archive
	zstd -q -c base.vma >a.vma.zst
	sha256sum -b a.vma.zst >a.vma.zst.sha256
	run -0 vma-extract -t -v a.vma.zst
	assert_line --index 5 "sha256 $(sha a.vma.zst) matches a.vma.zst.sha256"
	# The sum of the stream inside is not the archive's.
	echo "$(sha base.vma)  a.vma.zst" >a.vma.zst.sha256
	run --separate-stderr -1 vma-extract -t a.vma.zst
	assert_equal "$stderr" "vma-extract: a.vma.zst: sha256 mismatch (a.vma.zst.sha256 says $(sha base.vma), archive is $(sha a.vma.zst))"
	# Uppercase hex, as sha256sum -c takes it.
	echo "$(sha a.vma.zst | tr a-f A-F)  a.vma.zst" >a.vma.zst.sha256
	run -0 vma-extract -t a.vma.zst
}

@test "vma-extract -t refuses an ARCHIVE.sha256 that is malformed or names another file, before reading the archive" {
	make_archive
	for text in "garbage" "$(sha base.vma)" "$(sha base.vma) base.vma" "$(sha base.vma | cut -c 2-)  base.vma" \
		"$(sha base.vma)  base.vma"$'\n'"$(sha base.vma)  base.vma" "$(sha base.vma | tr 0-9 g-p)  base.vma"; do
		printf '%s\n' "$text" >base.vma.sha256
		run --separate-stderr -1 vma-extract -t base.vma
		assert_equal "$stderr" "vma-extract: base.vma.sha256: not one line '<sha256 in hex>  <file name>' as sha256sum writes it"
	done
	: >base.vma.sha256
	run --separate-stderr -1 vma-extract -t base.vma
	assert_equal "$stderr" "vma-extract: base.vma.sha256: not one line '<sha256 in hex>  <file name>' as sha256sum writes it"
	echo "$(sha base.vma)  other.vma" >base.vma.sha256
	run --separate-stderr -1 vma-extract -t base.vma
	assert_equal "$stderr" "vma-extract: base.vma.sha256: names other.vma, not base.vma"
	mkdir sub && mv base.vma sub/
	echo "$(sha sub/base.vma)  sub/base.vma" >sub/base.vma.sha256
	run --separate-stderr -1 vma-extract -t sub/base.vma
	assert_equal "$stderr" "vma-extract: sub/base.vma.sha256: names sub/base.vma, not base.vma"
	# One that cannot be read is an error too, not a check left out.
	rm sub/base.vma.sha256 && mkdir sub/base.vma.sha256
	run --separate-stderr -1 vma-extract -t sub/base.vma
	assert_equal "$stderr" "vma-extract: sub/base.vma.sha256: Is a directory"
}

@test "vma-extract reads a plain input shorter than the longest magic (lzop's 9 bytes) whole" {
	# Refused at the offset where it ended, from a file and from a pipe: its bytes were read.
	printf 'XYZ\0\0\0' >six
	run --separate-stderr -1 vma-extract -l six
	assert_equal "$stderr" "vma-extract: six: offset 6: archive truncated inside the header"
	run --separate-stderr -1 bash -c 'cat six | vma-extract -l -'
	assert_equal "$stderr" "vma-extract: -: offset 6: archive truncated inside the header"
	printf 'VMA\0\0' >five
	run --separate-stderr -1 vma-extract -l five
	assert_equal "$stderr" "vma-extract: five: offset 5: archive truncated inside the header"
}

@test "vma-extract reads zstd, xz, gzip and lzop archives, from files and from stdin" {
	make_archive
	zstd -q -c base.vma >a.vma.zst
	xz -1 -T2 -c base.vma >a.vma.xz
	gzip -c base.vma >a.vma.gz
	lzop -c base.vma >a.vma.lzo
	for f in a.vma.zst a.vma.xz a.vma.gz a.vma.lzo; do
		rm -rf out
		vma-extract "$f" out
		assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha d0.raw)"
		assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha d1.raw)"
		run -0 bash -c "vma-extract -t - <$f"
		run -0 vma-extract -l "$f"
		assert_line --index 2 "DEV: dev_id=2 size: 8388608 devname: drive-scsi1"
	done
	# two gzip members are one stream, as gzip -d reads them
	head -c 100000 base.vma | gzip -c >two.gz
	tail -c +100001 base.vma | gzip -c >>two.gz
	run -0 vma-extract -t two.gz
}

@test "vma-extract reads what lzop writes at every level, with CRC-32s, with a name, and two files in one" {
	make_archive
	lzop -1 -c base.vma >l1.lzo
	lzop -9 -c base.vma >l9.lzo
	lzop --crc32 -c base.vma >crc.lzo
	# From a file: lzop records its name, mode and time in the header.
	lzop -o named.lzo base.vma
	head -c 100000 base.vma | lzop -c >two.lzo
	tail -c +100001 base.vma | lzop -c >>two.lzo
	for f in l1.lzo l9.lzo crc.lzo named.lzo two.lzo; do
		rm -rf out
		run -0 vma-extract -t "$f"
		vma-extract "$f" out
		assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha d0.raw)"
		assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha d1.raw)"
	done
}

@test "vma-extract refuses lzop input with a bad checksum, a bad header or an oversized block" {
	make_archive
	# from stdin: a header without a name, 38 bytes with the magic
	lzop -c <base.vma >a.lzo
	# the first block's Adler-32 of its data (a bit flipped: a byte written over it can be
	# the one already there, as 0xff was once in 256 runs of random data)
	cp a.lzo sum.lzo
	flip_byte sum.lzo 46
	run --separate-stderr -1 vma-extract -t sum.lzo
	assert_equal "$stderr" "vma-extract: sum.lzo: offset 0: lzop: data checksum mismatch"
	# the header's method byte: not LZO1X
	cp a.lzo method.lzo
	printf '\x40' | dd of=method.lzo bs=1 seek=15 conv=notrunc status=none
	run --separate-stderr -1 vma-extract -t method.lzo
	assert_equal "$stderr" "vma-extract: method.lzo: offset 0: lzop: unsupported method 64 (not LZO1X)"
	# the header's mode: its checksum no longer matches
	cp a.lzo header.lzo
	printf '\x01' | dd of=header.lzo bs=1 seek=22 conv=notrunc status=none
	run --separate-stderr -1 vma-extract -t header.lzo
	assert_equal "$stderr" "vma-extract: header.lzo: offset 0: lzop: header checksum mismatch"
	# the first block's length: 64 MiB + 1
	cp a.lzo big.lzo
	printf '\x04\x00\x00\x01' | dd of=big.lzo bs=1 seek=38 conv=notrunc status=none
	run --separate-stderr -1 vma-extract -t big.lzo
	assert_equal "$stderr" "vma-extract: big.lzo: offset 0: lzop: a block of 67108865 bytes (lzop's limit: 67108864)"
	# compressed longer than it is
	cp a.lzo long.lzo
	printf '\x00\x04\x00\x01' | dd of=long.lzo bs=1 seek=42 conv=notrunc status=none
	run --separate-stderr -1 vma-extract -t long.lzo
	assert_equal "$stderr" "vma-extract: long.lzo: offset 0: lzop: a block of 262144 bytes compressed into 262145"
	run -1 vma-extract long.lzo out
	[ ! -e out ]
}

@test "vma-extract loads a codec's library only for input that needs it: when it cannot, exit 1" {
	make_archive
	zstd -q -c base.vma >a.vma.zst
	xz -1 -c base.vma >a.vma.xz
	gzip -c base.vma >a.vma.gz
	lzop -c base.vma >a.vma.lzo
	mkdir broken
	for lib in libzstd.so.1 liblzma.so.5 libz.so.1 liblzo2.so.2; do : >"broken/$lib"; done
	for f in a.vma.zst:libzstd.so.1 a.vma.xz:liblzma.so.5 a.vma.gz:libz.so.1 a.vma.lzo:liblzo2.so.2; do
		run --separate-stderr env LD_LIBRARY_PATH="$PWD/broken" vma-extract -t "${f%%:*}"
		assert_failure 1
		assert_equal "$stderr" "vma-extract: ${f%%:*}: cannot load ${f#*:}: $PWD/broken/${f#*:}: file too short"
	done
	# A plain archive needs none of them.
	run -0 env LD_LIBRARY_PATH="$PWD/broken" vma-extract base.vma out
	assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha d1.raw)"
}

@test "vma-extract reports a truncated compressed stream" {
	make_archive
	zstd -q -c base.vma | head -c 300000 >cut.zst
	run -1 vma-extract -t cut.zst
	assert_output --partial "the compressed stream is truncated"
	xz -1 -c base.vma | head -c 300000 >cut.xz
	run -1 vma-extract -t cut.xz
	assert_output --regexp "xz: corrupt or truncated|the compressed stream is truncated"
}

@test "vma-extract reads archives of other writers: shuffled clusters and 58 entries per extent" {
	random_file d0.raw 300000
	random_file d1.raw 70000
	echo "cores: 2" >qemu-server.conf
	vma_make --shuffle --entries 58 -c qemu-server.conf=qemu-server.conf \
		-d drive-scsi0=d0.raw -d drive-scsi1=d1.raw other.vma
	vma-extract other.vma out
	assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha d0.raw)"
	assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha d1.raw)"
	assert_equal "$(cat out/qemu-server.conf)" "cores: 2"
}

# --- Restoring in runs: blocks adjacent in a disk are written together ----------------------

# Writes a disk of SIZE bytes whose 4 KiB blocks are data or zero in runs of 1 to 40 blocks
# (inside clusters and across their boundaries, whole zero clusters among them), with blocks
# that are zero but for their first or last byte, and data in its last, partial block; prints
# how many KiB of it are data.
mixed_file() { # FILE SIZE SEED
	"$VZ_PYTHON" - "$@" <<'PY'
import random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
out, blocks, is_data, stored = bytearray(size), (size + 4095) // 4096, [], 0
while len(is_data) < blocks:  # alternating runs, zero first
    is_data += [len(is_data) > 0 and not is_data[-1]] * rnd.randint(1, 40)
is_data[blocks - 1] = True
for i in range(blocks):
    if not is_data[i]:
        continue
    length = min(4096, size - i * 4096)
    block = bytearray(rnd.randbytes(length))
    if rnd.random() < 0.1:  # almost zero: one byte at either end
        block = bytearray(length)
        block[0 if rnd.random() < 0.5 else length - 1] = 1
    out[i * 4096:i * 4096 + length] = block
    stored += 4
open(path, "wb").write(out)
print(stored)
PY
}

@test "vma-extract restores a disk of mixed zero and data blocks byte for byte, the zeros as holes" {
	data_kib=$(mixed_file m.raw $((3 * 1048576 + 5000)) 1)
	vma-create -o a.vma drive-scsi0=m.raw
	# a writer that stores zero blocks too: they become holes all the same
	vma_make --keep-zero-blocks -d drive-scsi0=m.raw kept.vma
	for archive in a.vma kept.vma; do
		rm -rf out
		vma-extract "$archive" out
		assert_equal "$(stat -c %s out/disk-drive-scsi0.raw)" "$(stat -c %s m.raw)"
		assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha m.raw)"
		allocated=$(du -k out/disk-drive-scsi0.raw | cut -f1)
		[ "$allocated" -le $((data_kib + 64)) ] ||
			fail "$archive: $allocated KiB allocated for $data_kib KiB of data"
	done
}

@test "vma-extract restores clusters interleaved between devices, shuffled or in short extents, byte for byte" {
	mixed_file m0.raw $((2 * 1048576 + 12345)) 2 >/dev/null
	mixed_file m1.raw $((3 * 1048576)) 3 >/dev/null
	random_file r2.raw 1000000 # all data: runs of whole clusters
	devs=(-d drive-scsi0=m0.raw -d drive-scsi1=m1.raw -d drive-scsi2=r2.raw)
	vma_make --interleave "${devs[@]}" inter.vma
	vma_make --interleave --entries 7 --keep-zero-blocks "${devs[@]}" inter7.vma
	vma_make --shuffle --seed 5 "${devs[@]}" shuffled.vma
	vma_make --shuffle --seed 6 --entries 13 --keep-zero-blocks "${devs[@]}" shuffled13.vma
	for archive in inter.vma inter7.vma shuffled.vma shuffled13.vma; do
		rm -rf out
		vma-extract "$archive" out
		assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha m0.raw)"
		assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha m1.raw)"
		assert_equal "$(sha out/disk-drive-scsi2.raw)" "$(sha r2.raw)"
	done
	# one device of an interleaved archive: the others' blocks between its own are left out
	vma-extract -d drive-scsi1 inter.vma one
	assert_equal "$(ls one)" "disk-drive-scsi1.raw"
	assert_equal "$(sha one/disk-drive-scsi1.raw)" "$(sha m1.raw)"
}

@test "vma-extract that runs out of space names the disk, exits 1 and leaves nothing" {
	[ "$(id -u)" -eq 0 ] || skip "needs root to mount a small tmpfs"
	random_file d0.raw 4M
	vma-create -o base.vma drive-scsi0=d0.raw
	mkdir small
	mount -t tmpfs -o size=1m tmpfs small || skip "cannot mount a tmpfs here"
	SMALL_MOUNT=$PWD/small
	run --separate-stderr -1 vma-extract base.vma small/out
	assert_output ""
	assert_equal "$stderr" "vma-extract: base.vma: small/out/tmp-disk-drive-scsi0.raw: No space left on device"
	assert_equal "$(ls -A small)" ""
}

# One test per defect: exit 1, one message naming the defect and its offset, no output files.
hostile() { # DEFECT EXPECTED-MESSAGE-PART
	make_archive
	vma_corrupt base.vma bad.vma "$1" >/dev/null
	run --separate-stderr -1 vma-extract -t bad.vma
	assert_output ""
	[[ $stderr == "vma-extract: bad.vma: offset "[0-9]*": "*"$2"* ]] ||
		fail "defect $1: expected '$2', got: $stderr"
	[ "$(wc -l <<<"$stderr")" -eq 1 ] || fail "more than one line: $stderr"
	run -1 vma-extract bad.vma out
	[[ $output == *"$2"* ]] || fail "extract, defect $1: $output"
	[ ! -e out ] || fail "defect $1 left behind: $(ls -A out)"
	assert_equal "$(ls -A)" "$(printf 'bad.vma\nbase.vma\nchunk\nd0.raw\nd1.raw\nqemu-server.conf')"
}

@test "vma-extract refuses an archive with the wrong magic" { hostile bad-magic "not a VMA archive (wrong magic)"; }
@test "vma-extract refuses an unknown version" { hostile bad-version "unsupported VMA version 2"; }
@test "vma-extract refuses a wrong header MD5" { hostile bad-header-md5 "wrong header checksum (MD5)"; }
@test "vma-extract refuses a wrong extent MD5" { hostile bad-extent-md5 "wrong extent checksum (MD5)"; }
@test "vma-extract refuses a wrong extent magic" { hostile bad-extent-magic "wrong extent magic"; }
@test "vma-extract refuses non-zero reserved extent bits" { hostile extent-reserved "reserved extent field is not zero"; }
@test "vma-extract refuses an extent whose uuid differs from the header's" { hostile uuid-mismatch "extent uuid differs from the header's"; }
@test "vma-extract refuses a block count above the stored blocks" { hostile block-count-high "but the entries store"; }
@test "vma-extract refuses a block count below the stored blocks" { hostile block-count-low "but the entries store"; }
@test "vma-extract refuses a duplicate cluster" { hostile duplicate-cluster "duplicate cluster"; }
@test "vma-extract refuses a cluster past the device end" { hostile cluster-past-end "is past the device end"; }
@test "vma-extract refuses a block past the device end" { hostile block-past-end "of drive-scsi0 is past the device end"; }
@test "vma-extract refuses an unknown device id" { hostile unknown-dev-id "block entry for unknown device id"; }
@test "vma-extract refuses a blob pointer into the middle of a blob" { hostile bad-blob-pointer "invalid name pointer"; }
@test "vma-extract refuses a blob buffer past the header" { hostile blob-past-end "outside the"; }
@test "vma-extract refuses a device name with a slash" { hostile name-slash "unsafe name: name contains '/'"; }
@test "vma-extract refuses a config named .." { hostile name-dotdot "unsafe name: name is . or .."; }
@test "vma-extract refuses an empty name" { hostile name-empty "unsafe name: empty name"; }
@test "vma-extract refuses a name with a control character" { hostile name-control "unsafe name: name contains a control character"; }
@test "vma-extract refuses an archive cut inside an extent" { hostile truncate-extent "archive truncated inside extent data"; }
@test "vma-extract refuses an archive cut inside the header" { hostile truncate-header "archive truncated inside the header"; }
@test "vma-extract refuses an archive cut at an extent boundary" { hostile truncate-at-boundary "archive incomplete: cluster"; }
@test "vma-extract refuses data after the last extent" { hostile trailing-garbage "wrong extent magic (not an extent, or data after the last one)"; }

@test "vma-extract refuses a file that is not an archive at all, and an empty one" {
	head -c 20000 /dev/urandom >noise
	run -1 vma-extract -t noise
	assert_output "vma-extract: noise: offset 0: not a VMA archive (wrong magic)"
	: >empty
	run -1 vma-extract -l empty
	assert_output "vma-extract: empty: offset 0: archive truncated inside the header"
	run -1 vma-extract -l missing
	assert_output "vma-extract: missing: No such file or directory"
}

@test "vma-extract rejects wrong option combinations as usage errors" {
	run -2 vma-extract -l -t a.vma
	assert_line --index 0 "vma-extract: -l, -t and -c exclude each other"
	run -2 vma-extract --json -t a.vma
	assert_line --index 0 "vma-extract: --json needs -l"
	run -2 vma-extract -l a.vma extra
	run -2 vma-extract a.vma
	assert_line --index 0 "vma-extract: expected an archive and a directory"
	assert_line --index 1 "usage: vma-extract -l [--json] [--base file ...] archive"
}

# A copy of base.vma with one big-endian header field replaced and the header MD5 recomputed,
# so that only the field's own check can refuse it.
patch_header() { # OUT OFFSET STRUCT-FORMAT VALUE
	"$VZ_PYTHON" - "$@" <<'PY'
import hashlib, struct, sys
out, offset, fmt, value = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4], 0)
b = bytearray(open("base.vma", "rb").read())
struct.pack_into(fmt, b, offset, value)
size = struct.unpack_from(">I", b, 56)[0]
b[32:48] = bytes(16)
b[32:48] = hashlib.md5(bytes(b[:size])).digest()
open(out, "wb").write(b)
PY
}

@test "vma-extract refuses a device size whose cluster count overflows 64 bits" {
	make_archive
	patch_header huge.vma 4136 ">Q" 0xffffffffffffffff
	run -1 vma-extract -l huge.vma
	assert_output "vma-extract: huge.vma: offset 4136: device 1 (drive-scsi0): size 18446744073709551615 too large"
	run -1 vma-extract -t huge.vma
	assert_output "vma-extract: huge.vma: offset 4136: device 1 (drive-scsi0): size 18446744073709551615 too large"
}

@test "vma-extract -l prints a creation time past any calendar as its seconds, on a line of its own" {
	make_archive
	patch_header late.vma 24 ">q" 0x7fffffffffffffff
	run -0 vma-extract -l late.vma
	assert_line --index 3 "CTIME: 9223372036854775807"
	run -0 vma-extract -t -v late.vma
	assert_line --index 3 "CTIME: 9223372036854775807"
	assert_line --index 4 --partial "total bytes read "
}

@test "vma-extract names the truncation of an archive on stdin cut at any of 40 offsets" {
	random_file d.raw 200000
	vma-create -o full.vma drive-scsi0=d.raw
	size=$(stat -c %s full.vma) # a 12800-byte header, then one extent
	offsets=(1 3 4 5 47 48 60 2043 4095 4096 4127 4136 12287 12288 12289 12799 12800 12801
		12840 13311 13312 13313 17407 17408 17409 $((size / 2)) $((size - 4097))
		$((size - 4096)) $((size - 1)))
	for ((o = 12801; o < 13312; o += 37)); do offsets+=("$o"); done
	for o in "${offsets[@]}"; do
		run --separate-stderr bash -c "head -c $o full.vma | vma-extract -t -"
		[ "$status" -eq 1 ] || fail "cut at $o: exit $status: $stderr"
		[[ $stderr =~ ^vma-extract:\ -:\ offset\ [0-9]+:\ (archive\ truncated\ inside|archive\ has\ no\ extent|archive\ incomplete) ]] ||
			fail "cut at $o: $stderr"
		[ "$(wc -l <<<"$stderr")" -eq 1 ] || fail "cut at $o: more than one line: $stderr"
		assert_output ""
	done
}

# A copy of base.vma whose first extent's blockinfo entry INDEX is XORed with MASK (a u64),
# with the extent MD5 recomputed.
patch_entry() { # OUT INDEX MASK
	"$VZ_PYTHON" - "$@" <<'PY'
import hashlib, struct, sys
out, index, mask = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 0)
b = bytearray(open("base.vma", "rb").read())
at = struct.unpack_from(">I", b, 56)[0]
entry = at + 40 + 8 * index
struct.pack_into(">Q", b, entry, struct.unpack_from(">Q", b, entry)[0] ^ mask)
b[at + 24:at + 40] = bytes(16)
b[at + 24:at + 40] = hashlib.md5(bytes(b[at:at + 512])).digest()
open(out, "wb").write(b)
PY
}

@test "vma-extract refuses reserved bits in a block entry and a used entry of device 0" {
	make_archive
	hs=$(od -An -tu1 -j56 -N4 base.vma | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
	patch_entry reserved.vma 0 0x0000010000000000
	run -1 vma-extract -t reserved.vma
	assert_output "vma-extract: reserved.vma: offset $((hs + 40)): reserved bits set in a block entry"
	# entry 0 is dev 1, cluster 0: clearing the device id leaves a "free" slot with a mask
	patch_entry dev0.vma 0 0x0000000100000000
	run -1 vma-extract -t dev0.vma
	assert_output "vma-extract: dev0.vma: offset $((hs + 40)): block entry with device id 0"
	# device 1 becomes 255, the slot no writer may use
	patch_entry dev255.vma 0 0x000000fe00000000
	run -1 vma-extract -t dev255.vma
	assert_output "vma-extract: dev255.vma: offset $((hs + 40)): block entry for unknown device id 255"
}

@test "vma-extract refuses compressed archives followed by garbage" {
	make_archive
	for codec in zstd xz gzip lzop; do
		"$codec" -c base.vma >a.z
		printf 'garbage after the compressed stream' >>a.z
		run --separate-stderr -1 vma-extract -t a.z
		[[ $stderr =~ ^vma-extract:\ a\.z:\ offset\ [0-9]+:\ (zstd|xz|gzip|lzop|the\ compressed) ]] ||
			fail "$codec: $stderr"
		[ "$(wc -l <<<"$stderr")" -eq 1 ] || fail "$codec: more than one line: $stderr"
		run -1 vma-extract a.z out
		[ ! -e out ] || fail "$codec: left $(ls -A out)"
	done
}

@test "vma-extract checks a header of 254 devices of almost 256 TiB in little memory" {
	# header only, plus one empty extent: each device lacks every cluster
	"$VZ_PYTHON" - <<'PY'
import hashlib, struct
blobs, ptrs = bytearray(1), []
for i in range(254):
    name = b"d%d\0" % i
    ptrs.append(len(blobs))
    blobs += struct.pack("<H", len(name)) + name
size = 12288 + (len(blobs) + 511) // 512 * 512
h = bytearray(size)
h[0:4] = b"VMA\0"
struct.pack_into(">I16sq", h, 4, 1, b"u" * 16, 0)
struct.pack_into(">III", h, 48, 12288, len(blobs), size)
h[12288:12288 + len(blobs)] = blobs
for i, p in enumerate(ptrs):
    struct.pack_into(">IIQ", h, 4096 + 32 * (i + 1), p, 0, (1 << 48) - 65536)
h[32:48] = hashlib.md5(bytes(h)).digest()
e = bytearray(512)
e[0:4], e[8:24] = b"VMAE", b"u" * 16
e[24:40] = hashlib.md5(bytes(e)).digest()
open("big.vma", "wb").write(bytes(h) + bytes(e))
PY
	# 1 GiB of address space; a sanitizer build cannot start in that, so only time bounds it
	limit="ulimit -v 1048576;"
	bash -c "$limit vma-extract -h" >/dev/null 2>&1 || limit=""
	run -0 timeout 60 bash -c "$limit vma-extract -l big.vma"
	assert_line --index 253 "DEV: dev_id=254 size: 281474976645120 devname: d253"
	run -1 timeout 60 bash -c "$limit vma-extract -t big.vma"
	assert_output "vma-extract: big.vma: offset 14848: archive incomplete: cluster 0 of d0 is missing (4294967295 of 4294967295 clusters missing)"
}

@test "vma-extract refuses clusters scattered over 64 GiB regions before they take gigabytes" {
	# one device of almost 256 TiB, then extents of empty entries (8 bytes each, no data), one
	# in each 64 GiB region: each would cost a 128 KiB bitmap chunk
	"$VZ_PYTHON" - <<'PY'
import hashlib, struct
name = b"drive-scsi0\0"
blobs = bytearray(1) + struct.pack("<H", len(name)) + name
size = 12288 + 512
h = bytearray(size)
h[0:4] = b"VMA\0"
struct.pack_into(">I16sq", h, 4, 1, b"u" * 16, 0)
struct.pack_into(">III", h, 48, 12288, len(blobs), size)
h[12288:12288 + len(blobs)] = blobs
struct.pack_into(">IIQ", h, 4096 + 32, 1, 0, (1 << 48) - 65536)
h[32:48] = hashlib.md5(bytes(h)).digest()
out = bytearray(h)
for first in range(0, 4096, 59):
    e = bytearray(512)
    e[0:4], e[8:24] = b"VMAE", b"u" * 16
    for i, region in enumerate(range(first, min(first + 59, 4096))):
        struct.pack_into(">Q", e, 40 + 8 * i, 1 << 32 | region << 20)
    e[24:40] = hashlib.md5(bytes(e)).digest()
    out += e
open("scattered.vma", "wb").write(bytes(out))
PY
	# the 513th region, entry 40 of the 9th extent: 512 regions are free, the stream is short
	run -1 vma-extract -t scattered.vma
	assert_output "vma-extract: scattered.vma: offset $((12800 + 8 * 512 + 40 + 8 * 40)): cluster $((512 << 20)) of drive-scsi0: the clusters so far lie in 513 different 64 GiB regions, too many for a $((12800 + 9 * 512))-byte stream (a hostile archive?)"
}

@test "vma-extract -l --json refuses a name that is not UTF-8 instead of leaving the device out" {
	random_file d.raw 5000
	vma-create -o a.vma "$(printf 'drive\xff')=d.raw" drive-scsi1=d.raw
	run -0 vma-extract -l a.vma
	assert_line --index 0 "$(printf 'DEV: dev_id=1 size: 5000 devname: drive\xff')"
	run --separate-stderr -1 vma-extract -l --json a.vma
	assert_output ""
	assert_equal "$stderr" "vma-extract: a.vma: device 1: the name is not UTF-8; JSON cannot hold it (use -l)"
}

# --- Restoring as root into a folder another user can change (issue #13) -------------------

teardown() {
	[ -z "${EXTRACT_PID:-}" ] || kill "$EXTRACT_PID" 2>/dev/null || true
	[ -z "${SMALL_MOUNT:-}" ] || umount "$SMALL_MOUNT"
	attack_cleanup
}

# $ATTACK/p: a folder nobody owns, where root restores to p/out; $ATTACK/victim: a folder of
# root's holding a file named like the archive's config. base.vma: one disk and that config.
attack_setup() {
	[ "$(id -u)" -eq 0 ] || skip "needs root: the attack is on what root deletes and writes"
	restore_setup
	chown 65534:65534 "$ATTACK/p"
}

# The same folders, all of them ours.
restore_setup() {
	attack_dir
	ATTACK=$ATTACK_DIR
	mkdir "$ATTACK/p" "$ATTACK/victim"
	echo precious >"$ATTACK/victim/qemu-server.conf"
	random_file d0.raw 200000
	echo "name: vm100" >qemu-server.conf
	vma-create -o base.vma -c qemu-server.conf drive-scsi0=d0.raw
	HEADER_SIZE=$(od -An -tu1 -j56 -N4 base.vma | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
}

# Starts vma-extract - "$@" on a FIFO, feeds it the header and waits until the disk's temporary
# file exists: the restore then waits for the data. resume_extract feeds it the rest.
pause_extract() { # ARGS...
	mkfifo "$ATTACK/fifo"
	# (fd 3 is bats' own: the background process must not hold it)
	vma-extract - "$@" <"$ATTACK/fifo" >"$ATTACK/out" 2>"$ATTACK/err" 3>&- &
	EXTRACT_PID=$!
	exec 7>"$ATTACK/fifo"
	head -c "$HEADER_SIZE" base.vma >&7
	local i
	for ((i = 0; i < 400; i++)); do
		compgen -G "$ATTACK/p/*/tmp-disk-drive-scsi0.raw" >/dev/null && return 0
		sleep 0.05
	done
	fail "vma-extract did not start the restore: $(cat "$ATTACK/err")"
}

resume_extract() { # BYTES (of the data after the header; all when not given)
	if [ -n "${1:-}" ]; then
		tail -c +$((HEADER_SIZE + 1)) base.vma | head -c "$1" >&7
	else
		tail -c +$((HEADER_SIZE + 1)) base.vma >&7
	fi
	exec 7>&-
	EXTRACT_STATUS=0
	wait "$EXTRACT_PID" || EXTRACT_STATUS=$?
	EXTRACT_PID=
}

# The target folder swapped for a symlink to the victim's folder during the restore.
swap_target() {
	as_nobody mv "$ATTACK/p/out" "$ATTACK/p/moved"
	as_nobody ln -s "$ATTACK/victim" "$ATTACK/p/out"
}

@test "vma-extract that fails after its folder was swapped for a symlink deletes nothing in the link's target" {
	attack_setup
	pause_extract "$ATTACK/p/out"
	swap_target
	resume_extract 100000 # a truncated stream: the restore fails and cleans up
	assert_equal "$EXTRACT_STATUS" 1
	assert_equal "$(cat "$ATTACK/err")" "vma-extract: -: offset $((HEADER_SIZE + 100000)): archive truncated inside extent data"
	assert_equal "$(ls -A "$ATTACK/victim")" "qemu-server.conf"
	assert_equal "$(cat "$ATTACK/victim/qemu-server.conf")" "precious"
	# the folder it made, wherever it is now, is empty again
	assert_equal "$(ls -A "$ATTACK/p/moved")" ""
	assert_equal "$(cat "$ATTACK/out")" ""
}

@test "vma-extract whose folder was swapped for a symlink restores into its own folder, not the link's target" {
	attack_setup
	pause_extract -v "$ATTACK/p/out"
	swap_target
	resume_extract
	assert_equal "$EXTRACT_STATUS" 0
	assert_equal "$(ls -A "$ATTACK/victim")" "qemu-server.conf"
	assert_equal "$(cat "$ATTACK/victim/qemu-server.conf")" "precious"
	assert_equal "$(ls -A "$ATTACK/p/moved")" "$(printf 'disk-drive-scsi0.raw\nqemu-server.conf')"
	assert_equal "$(sha "$ATTACK/p/moved/disk-drive-scsi0.raw")" "$(sha d0.raw)"
	assert_equal "$(cat "$ATTACK/p/moved/qemu-server.conf")" "name: vm100"
}

@test "vma-extract refuses a target that exists as someone else's folder or a symlink, writing nothing through it" {
	attack_setup
	# nobody's folder where the target should be made: mkdir says it exists (exit 2)
	as_nobody mkdir "$ATTACK/p/out"
	run -2 vma-extract base.vma "$ATTACK/p/out"
	assert_output "vma-extract: $ATTACK/p/out: already exists; give a directory that does not"
	# a symlink in its place likewise, and the link's target gets nothing
	as_nobody ln -s "$ATTACK/victim" "$ATTACK/p/link"
	run -2 vma-extract base.vma "$ATTACK/p/link"
	assert_equal "$(ls -A "$ATTACK/victim")" "qemu-server.conf"
}

@test "vma-extract makes its folder 0700 and every file 0600, whatever the umask" {
	make_archive
	run -0 bash -c "umask 0; vma-extract base.vma out"
	assert_equal "$(stat -c '%a %n' out out/*)" "700 out
600 out/disk-drive-scsi0.raw
600 out/disk-drive-scsi1.raw
600 out/qemu-server.conf"
}

@test "vma-extract never removes a file it did not create, even one of a config's name" {
	attack_setup
	pause_extract "$ATTACK/p/out"
	# planted while the restore runs (by root here: no one else may write in the 0700 folder)
	echo planted >"$ATTACK/p/out/qemu-server.conf"
	run -1 as_nobody touch "$ATTACK/p/out/x"
	resume_extract
	assert_equal "$EXTRACT_STATUS" 1
	assert_equal "$(cat "$ATTACK/err")" "vma-extract: $ATTACK/p/out/qemu-server.conf: File exists"
	assert_equal "$(ls -A "$ATTACK/p/out")" "qemu-server.conf"
	assert_equal "$(cat "$ATTACK/p/out/qemu-server.conf")" "planted"
	assert_equal "$(stat -c %a "$ATTACK/p/out")" 700
}

@test "vma-extract removes disks it already renamed when a later one fails, and only those" {
	restore_setup
	random_file d1.raw 70000
	rm base.vma
	vma-create -o base.vma -c qemu-server.conf drive-scsi0=d0.raw drive-scsi1=d1.raw
	HEADER_SIZE=$(od -An -tu1 -j56 -N4 base.vma | awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
	pause_extract "$ATTACK/p/out"
	echo planted >"$ATTACK/p/out/disk-drive-scsi1.raw" # the second disk cannot take its name
	resume_extract
	assert_equal "$EXTRACT_STATUS" 1
	assert_equal "$(cat "$ATTACK/err")" "vma-extract: $ATTACK/p/out/disk-drive-scsi1.raw: File exists"
	assert_equal "$(ls -A "$ATTACK/p/out")" "disk-drive-scsi1.raw"
	assert_equal "$(cat "$ATTACK/p/out/disk-drive-scsi1.raw")" "planted"
}

@test "vma-extract ended by SIGTERM mid-restore removes its temporary files and its folder" {
	restore_setup
	pause_extract "$ATTACK/p/out"
	kill -TERM "$EXTRACT_PID"
	EXTRACT_STATUS=0
	wait "$EXTRACT_PID" || EXTRACT_STATUS=$?
	EXTRACT_PID=
	exec 7>&-
	assert_equal "$EXTRACT_STATUS" 143
	assert_equal "$(ls -A "$ATTACK/p")" ""
}

@test "vma-extract refuses config names with a slash or .., and writes nothing anywhere" {
	echo x >c
	random_file d.raw 5000
	for name in ../escaped sub/passwd .. /etc/passwd; do
		rm -f bad.vma
		vma_make -c "$name=c" -d drive-scsi0=d.raw bad.vma
		run -1 vma-extract bad.vma out
		[[ $output == "vma-extract: bad.vma: offset 2044: config 0: unsafe name: "* ]] ||
			fail "$name: $output"
		assert_equal "$(ls -A)" "$(printf 'bad.vma\nc\nd.raw')"
		[ ! -e ../escaped ] || fail "$name: ../escaped was written"
	done
}

@test "vma-extract restores a config name of 255 bytes (NAME_MAX) and refuses longer names in -t already" {
	random_file d.raw 5000
	echo "cores: 1" >c
	n255=$(printf 'c%.0s' $(seq 1 255))
	vma_make -c "$n255=c" -d drive-scsi0=d.raw ok.vma
	run -0 vma-extract -t ok.vma
	run -0 vma-extract ok.vma out
	assert_equal "$(ls -A out)" "$(printf '%s\ndisk-drive-scsi0.raw' "$n255")"
	assert_equal "$(cat "out/$n255")" "cores: 1"
	vma_make -c "${n255}c=c" -d drive-scsi0=d.raw long.vma
	run -1 vma-extract -t long.vma
	assert_output "vma-extract: long.vma: offset 2044: config 0: unsafe name: longer than 255 bytes, too long for a file name"
	# a device becomes tmp-disk-NAME.raw: 242 bytes is the longest that fits, as vma-create says
	d242=$(printf 'd%.0s' $(seq 1 242))
	vma_make -d "$d242=d.raw" dev.vma
	run -0 vma-extract dev.vma out2
	assert_equal "$(sha "out2/disk-$d242.raw")" "$(sha d.raw)"
	vma_make -d "${d242}d=d.raw" dev2.vma
	run -1 vma-extract -l dev2.vma
	assert_output "vma-extract: dev2.vma: offset 4128: device 1: unsafe name: longer than 242 bytes, too long for a file name"
}

@test "vma-extract names the offset where a truncated zstd, xz, gzip or lzop stream ended" {
	make_archive
	for codec in zstd xz gzip lzop; do
		"$codec" -c base.vma | head -c 300000 >cut.z
		# where the data ended: what the codec's own tool gets out of the cut stream
		ended=$("$codec" -dc cut.z 2>/dev/null | wc -c)
		run --separate-stderr -1 vma-extract -t cut.z
		assert_equal "$stderr" "vma-extract: cut.z: offset $ended: the compressed stream is truncated"
	done
}
