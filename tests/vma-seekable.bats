#!/usr/bin/env bats
# Seekable .vma.zst: vma-create -z zstd writes independent frames of 1 MiB and zstd's seek table;
# the archive stays an ordinary zstd stream, and a damaged frame is named by its offset.

setup() {
	load lib/common
	load lib/vma
	enter_work_dir
}

seektable() { "$VZ_PYTHON" "$TOP/tests/lib/seektable.py" "$@"; }

# The decompressed sizes the seek table of a stream of BYTES must list: 1 MiB each, the rest
# in the last frame.
expected_frames() { # BYTES
	local left=$1
	while ((left > 1048576)); do
		echo 1048576
		left=$((left - 1048576))
	done
	echo "$left"
}

@test "vma-create -z zstd: 1 MiB frames and a seek table, with any number of threads; zstd -d gives the plain archive" {
	seq 1 3000000 | head -c 9M >t.raw
	random_file r.raw 3000000
	echo "name: vm100" >qemu-server.conf
	vma-create -o plain.vma -c qemu-server.conf drive-scsi0=t.raw drive-scsi1=r.raw
	vma_sans_ids plain.vma plain.ids
	for t in 1 2 3; do
		vma-create -z zstd -T "$t" -o "a.$t.zst" -c qemu-server.conf drive-scsi0=t.raw drive-scsi1=r.raw
		zstd -q -t "a.$t.zst"
		zstd -q -d -c "a.$t.zst" >"a.$t.vma"
		vma_sans_ids "a.$t.vma" "a.$t.ids"
		cmp plain.ids "a.$t.ids"
		vma_check --strict "a.$t.vma"
		run -0 seektable "a.$t.zst"
		assert_equal "$(cut -d' ' -f2 <<<"$output")" "$(expected_frames "$(stat -c %s plain.vma)")"
		rm -rf out
		vma-extract "a.$t.zst" out
		assert_equal "$(sha out/disk-drive-scsi0.raw)" "$(sha t.raw)"
		assert_equal "$(sha out/disk-drive-scsi1.raw)" "$(sha r.raw)"
	done
	# Each frame decompresses on its own, to its part of the plain archive.
	zstd -q -d -c a.2.zst >a.2.vma
	mapfile -t frames < <(seektable a.2.zst)
	frames+=("$(($(stat -c %s a.2.zst) - 8 - 12 * ${#frames[@]} - 9)) 0")
	for ((i = 0; i + 1 < ${#frames[@]}; i++)); do
		read -r off size <<<"${frames[i]}"
		read -r next _ <<<"${frames[i + 1]}"
		tail -c +$((off + 1)) a.2.zst | head -c $((next - off)) | zstd -q -d -c >frame
		cmp frame <(tail -c +$((i * 1048576 + 1)) a.2.vma | head -c "$size")
	done
}

@test "vma-create -z zstd of a config alone: one frame and the seek table" {
	echo "name: vm100" >qemu-server.conf
	vma-create -z zstd -o conf.zst -c qemu-server.conf
	zstd -q -t conf.zst
	run -0 seektable conf.zst
	assert_equal "$(wc -l <<<"$output")" 1
	run -0 vma-extract -c qemu-server.conf conf.zst
	assert_output "name: vm100"
}

@test "a byte flipped inside a frame: vma-extract -t and extraction fail naming the frame's archive offset" {
	random_file r.raw 3000000
	seq 1 3000000 | head -c 9M >t.raw
	vma-create -z zstd -o a.zst drive-scsi0=t.raw drive-scsi1=r.raw
	# the middle of the third frame
	frame=$(seektable a.zst | sed -n 3p | cut -d' ' -f1)
	end=$(seektable a.zst | sed -n 4p | cut -d' ' -f1)
	cp a.zst bad.zst
	flip_byte bad.zst $(((frame + end) / 2))
	cmp -s a.zst bad.zst && fail "the byte was not changed"
	run -1 --separate-stderr vma-extract -t bad.zst
	assert_output ""
	assert_regex "$stderr" "^vma-extract: bad\.zst: offset [0-9]+: zstd frame at archive offset $frame: [^:]+$"
	run -1 --separate-stderr vma-extract bad.zst out
	assert_regex "$stderr" "zstd frame at archive offset $frame: "
	# the undamaged archive passes
	run -0 vma-extract -t a.zst
}
