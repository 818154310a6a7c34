# shellcheck shell=bash
# fuzz/seeds/random-bytes.bash: deterministic bytes for the seed scripts, so that the seeds are
# the same from run to run.
# bytes SIZE SEED: SIZE pseudo-random bytes from SEED on standard output.
bytes() {
	/usr/bin/python3 -c 'import random, sys; sys.stdout.buffer.write(random.Random(sys.argv[2]).randbytes(int(sys.argv[1])))' "$1" "$2"
}
