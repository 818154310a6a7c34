#!/bin/bash
# Seeds for fuzz_qmp_reply: what QEMU 7.2 sends on its monitor socket, byte for byte
# (../shared/spec/qemu-recipes.md §1: "\r\n" line ends, ", " and ": " separators), each after
# the control byte of fuzz/peer.h (0x00: one write, then EOF; 0x07: 7-byte pieces; 0x80: the
# connection stays open). The client's ids are vz-0 (qmp_capabilities), vz-1, vz-2, ...
set -euo pipefail

out=${1:?usage: qmp_reply.sh DIR}
mkdir -p "$out"

greeting='{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n'
ret() { printf '{"return": %s, "id": "vz-%s"}\\r\\n' "$2" "$1"; }
event() {
	printf '{"timestamp": {"seconds": 1764990001, "microseconds": %s}, "event": "%s"%s}\\r\\n' \
		"$1" "$2" "${3:+, \"data\": $3}"
}

status='{"status": "running", "singlestep": false, "running": true}'
block='[{"io-status": "ok", "device": "drive-scsi0", "locked": false, "removable": false, "inserted": {"iops_rd": 0, "detect_zeroes": "off", "image": {"virtual-size": 67108864, "filename": "/vm/100-disk-0.raw", "format": "raw", "actual-size": 4096, "dirty-flag": false}, "node-name": "#block120", "drv": "raw", "ro": false, "encrypted": false, "file": "/vm/100-disk-0.raw", "cache": {"no-flush": false, "direct": false, "writeback": true}}, "qdev": "scsi0", "type": "unknown"}]'
job_done='{"device": "drive-scsi0", "len": 67108864, "offset": 67108864, "speed": 0, "type": "backup"}'

# The whole happy session, then the events qmpctl -w waits for.
session="$greeting$(ret 0 '{}')$(ret 1 "$status")$(ret 2 "$block")"
session+="$(event 5 RESUME)$(ret 3 '{}')"
session+="$(event 7 JOB_STATUS_CHANGE '{"status": "concluded", "id": "drive-scsi0"}')"
session+="$(event 9 BLOCK_JOB_COMPLETED "$job_done")"
session+="$(event 11 SHUTDOWN '{"guest": false, "reason": "host-qmp-quit"}')$(ret 4 '{}')"

# shellcheck disable=SC2059 # the format strings are the seeds, escapes included
{
	printf "\\x00$greeting" >"$out/greeting-only"
	printf "\\x00$session" >"$out/session"
	printf "\\x07$session" >"$out/session-in-pieces"
	printf "\\x80$session" >"$out/session-kept-open"
	printf "\\x01$greeting$(ret 0 '{}')" >"$out/byte-by-byte"
	# Refusals: a command QEMU does not know, and one refused before its id was read.
	printf "\\x00$greeting$(ret 0 '{}')%s\\r\\n" \
		'{"error": {"class": "CommandNotFound", "desc": "The command query-status has not been found"}, "id": "vz-1"}' \
		>"$out/error-reply"
	printf "\\x00$greeting$(ret 0 '{}')%s\\r\\n" \
		'{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}' \
		>"$out/error-without-id"
	# Events and someone else's reply before ours, a repeated greeting, blank lines.
	printf "\\x00$greeting$(event 1 STOP)$(ret 0 '{}')\\r\\n$(ret 7 '{}')$greeting$(ret 1 "$status")" \
		>"$out/interleaved"
	# Not QMP: the guest agent's answer, a line that is not JSON, a NUL inside a line.
	printf '\x00{"return": {}}\n' >"$out/agent-socket"
	printf "\\x00$greeting%s\\r\\n" 'not json' >"$out/garbage-line"
	printf "\\x00$greeting{\"return\": {}, \"id\": \"vz-0\"\\x00}\\r\\n" >"$out/nul-in-line"
	printf "\\x00$greeting%s\\r\\n" '{"id": "vz-0"}' >"$out/neither-return-nor-error"
	printf "\\x00$greeting%s\\r\\n" '{"return": {}, "id": "vz-0", "id": "vz-0"}' >"$out/duplicate-key"
}
