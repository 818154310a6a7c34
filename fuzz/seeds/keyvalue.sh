#!/bin/bash
# Seeds for fuzz_keyvalue: qmpctl command lines, one word per NUL-separated piece (each word
# is also tried as a batch line and as -m/-w arguments), as the man page and vzdump.sh use
# them.
set -euo pipefail

out=${1:?usage: keyvalue.sh DIR}
mkdir -p "$out"

# shellcheck source=fuzz/seeds/nul-seed.bash
source "$(dirname -- "${BASH_SOURCE[0]}")/nul-seed.bash"

seed plain query-status
seed dotted nbd-server-start addr.type=unix addr.data.path=/run/vz/nbd.sock
seed json-values blockdev-add driver=qcow2 node-name=fl-drive-scsi0 discard=unmap \
	'file={"driver":"file","filename":"/tmp/fleece.qcow2"}' read-only=false cache.direct=true
seed numbers block-job-set-speed device=vzdump-drive-scsi0 speed=0 'x=1.5e3' 'y=-7' 'z=null'
seed qom-set qom-set path=scsi0 property=drive value=cbw-drive-scsi0
seed transaction transaction \
	'actions=[{"type":"block-dirty-bitmap-add","data":{"node":"drive0","name":"bm"}}]'
seed batch-line 'blockdev-del node-name='\''acc drive0'\'' # not a comment' \
	'{"execute": "query-block"}' '  # a comment' '' \
	'human-monitor-command command-line="info block" x={"a": [1, {"b": "]"}]}'
seed quotes "getfd fdname='' extra=\"a\\\"b\"" "cmd a='unterminated" 'cmd b="x' 'cmd c={[}'
seed twice cmd a=1 a=2 b.c=1 b=2 c=2 c.d=1 .e=1 f.=1 'g..h=1'
seed bad-words '=x' cmd '=y' 'noequals'
seed utf8 $'cmd k\xc3\xa9=v\xff' $'\xff=1' $'cmd\xe9'
seed events BLOCK_JOB_COMPLETED,JOB_STATUS_CHANGE,,SHUTDOWN device=drive-scsi0 'data.status=concluded' =x
