#!/bin/bash
# Seeds for fuzz_qga_reply: what qemu-ga 7.2 sends, byte for byte (../shared/spec/
# qemu-recipes.md §6: "\n" line ends; a 0xFF resync is answered by a parse-error line, then
# 0xFF and the sync's reply), each after the control byte of fuzz/peer.h (0x00: one write,
# then EOF; 0x05: 5-byte pieces; 0x80: the connection stays open). The target's resyncs use
# the ids 1, 2, 3, ... in turn; its calls are guest-ping, guest-fsfreeze-status, -freeze,
# -thaw, -status, then one more resync.
set -euo pipefail

out=${1:?usage: qga_reply.sh DIR}
mkdir -p "$out"

# Written with %s: QEMU's JSON escapes U+FFFD as the six characters \uFFFD.
stray='{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\''\uFFFD'\''"}}'
sync() { printf '%s\n\xff{"return": %s}\n' "$stray" "$1"; }
ret() { printf '{"return": %s}\n' "$1"; }

session() { sync 1; ret '{}'; ret '"thawed"'; ret 1; ret 1; ret '"thawed"'; sync 2; }
disabled='{"error": {"class": "CommandNotFound", "desc": "Command guest-fsfreeze-freeze has been disabled"}}'

{ printf '\x00'; session; } >"$out/session"
{ printf '\x05'; session; } >"$out/session-in-pieces"
{ printf '\x01'; sync 1; ret '{}'; } >"$out/session-byte-by-byte"
{ printf '\x80'; sync 1; ret '{}'; ret '"thawed"'; } >"$out/session-kept-open"
# An earlier client's unread answers, and the answer to an older sync, before ours.
{ printf '\x00'; ret '"frozen"'; sync 4503599627370496; sync 1; ret '{}'; } >"$out/leftovers"
# The agent refuses the freeze; the guest is already frozen.
{ printf '\x00'; sync 1; ret '{}'; ret '"thawed"'; printf '%s\n' "$disabled"; ret 0; } \
	>"$out/freeze-disabled"
{ printf '\x00'; sync 1; ret '{}'; ret '"frozen"'; } >"$out/already-frozen"
# Noise after a stray 0xFF; the command's id echoed; an answer without its newline; answers
# that are not objects; a QMP greeting (qmpctl -a on a monitor socket).
{ printf '\x00\xffgarbage\n'; sync 1; ret '{}'; } >"$out/stray-ff"
printf '\x00\xff{"return": 1, "id": "abc"}\n{"return": {}}\n' >"$out/id-echoed"
{ printf '\x00'; sync 1; printf '{"return": {}}'; } >"$out/no-newline"
{ printf '\x00'; sync 1; printf '[1, 2]\n"thawed"\n'; } >"$out/not-an-object"
printf '\x00%s\r\n' '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}' \
	>"$out/qmp-greeting"
