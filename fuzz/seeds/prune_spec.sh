#!/bin/bash
# Seeds for fuzz_prune_spec: prune-backups specs and --keep-* counts as people write them in
# vzdump.conf, on the command line and in Proxmox's storage.cfg, one per NUL-separated piece.
set -euo pipefail

out=${1:?usage: prune_spec.sh DIR}
mkdir -p "$out"

# shellcheck source=fuzz/seeds/nul-seed.bash
source "$(dirname -- "${BASH_SOURCE[0]}")/nul-seed.bash"

seed nightly 'keep-daily=7,keep-weekly=4'
seed all-rules 'keep-last=3,keep-hourly=24,keep-daily=7,keep-weekly=4,keep-monthly=12,keep-yearly=10'
seed keep-all 'keep-all=1' 'keep-all=yes' 'keep-all=Off' 'keep-all=TRUE,keep-last=0' 'keep-all=1,keep-last=1'
seed empty-items ',,keep-last=1,, ,' '' ' ' ','
seed refused 'keep-last=-1' 'keep-last= 1' 'keep-last=+1' 'keep-last=1x' 'keep-lastt=1' 'keep-last' \
	'keep-last=1,keep-last=2' 'keep-all=2' '=1' 'keep-last=0x10'
seed big 'keep-last=4294967295' 'keep-last=4294967296' 'keep-daily=18446744073709551616' \
	'keep-yearly=000000000000000000000000000000007'
seed counts 0 7 007 4294967296 '' -1 ' 1' 1.5 99999999999999999999999999
