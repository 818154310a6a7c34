#!/usr/bin/env bats
# qmpctl against a real QEMU 7.2 (q35, TCG, -S, -nodefaults, one raw disk), real nbdinfo,
# nbdkit and qemu-io (over HMP), and a host qemu-ga allowed only read-only RPCs (host_qga_start).

setup() {
	load lib/common
	load lib/guest
	WD=$BATS_TEST_TMPDIR
	SOCK=$WD/qmp.sock
	truncate -s 64M "$WD/disk0.raw"
	# shellcheck disable=SC2054 # commas belong to QEMU option values
	DISK_ARGS=(-blockdev "driver=file,node-name=file0,filename=$WD/disk0.raw"
		-blockdev driver=raw,node-name=drive0,file=file0
		-device virtio-blk-pci,drive=drive0,id=vblk0)
}

teardown() {
	[ -f "$WD/stopped" ] && kill -CONT "$(cat "$WD/qemu.pid")" 2>/dev/null
	qemu_stop "$WD"
	if [ -f "$WD/nbdkit.pid" ]; then kill "$(cat "$WD/nbdkit.pid")" 2>/dev/null || true; fi
	if [ -f "$WD/qga.sock.pid" ]; then host_qga_stop "$WD/qga.sock"; fi
	if [ -f "$WD/late.pid" ]; then wait "$(cat "$WD/late.pid")" 2>/dev/null || true; fi
	if [ -f "$WD/fake.pid" ]; then kill "$(cat "$WD/fake.pid")" 2>/dev/null || true; fi
	true
}

# A misbehaving QMP peer on $WD/fake.sock for one client. Each argument is a step: a Python
# bytes expression to send (b'...', b'x' * N), "line" to read one request line, or "close".
# After the last step it keeps the connection open (silent) until killed.
fake_qmp() {
	rm -f "$WD/fake.sock" "$WD/fake.pid"
	"$_VZ_PYTHON" -c '
import os, socket, sys, time
path, pidfile, steps = sys.argv[1], sys.argv[2], sys.argv[3:]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))
c, _ = s.accept()
rf = c.makefile("rb")
for step in steps:
    if step == "line":
        rf.readline()
    elif step == "close":
        rf.close()
        c.close()
        break
    else:
        c.sendall(eval(step))
time.sleep(60)
' "$WD/fake.sock" "$WD/fake.pid" "$@" </dev/null >/dev/null 2>&1 3>&- &
	for _ in $(seq 100); do [ -s "$WD/fake.pid" ] && return 0; sleep 0.05; done
	return 1
}

GREETING="b'{\"QMP\": {\"version\": {}, \"capabilities\": []}}\\r\\n'"
NEGOTIATED="b'{\"return\": {}, \"id\": \"vz-0\"}\\r\\n'"

start_qemu() { qemu_start_bare "$WD" "${DISK_ARGS[@]}"; }

@test "qmpctl negotiates and prints only the return value of query-status, compact when piped" {
	start_qemu
	run --separate-stderr qmpctl -s "$SOCK" query-status
	assert_success
	assert_output '{"status":"prelaunch","singlestep":false,"running":false}'
	[ -z "$stderr" ]
}

@test "qmpctl -p pretty-prints with four-space indentation" {
	start_qemu
	run qmpctl -s "$SOCK" -p query-status
	assert_success
	assert_output "$(printf '{\n    "status": "prelaunch",\n    "singlestep": false,\n    "running": false\n}')"
}

@test "qmpctl pretty-prints when stdout is a terminal and -c forces compact there" {
	start_qemu
	run script -qec "qmpctl -s '$SOCK' query-status" /dev/null
	assert_success
	assert_line --index 0 $'{\r'
	assert_line --index 1 $'    "status": "prelaunch",\r'
	run script -qec "qmpctl -c -s '$SOCK' query-status" /dev/null
	assert_output $'{"status":"prelaunch","singlestep":false,"running":false}\r'
}

@test "qmpctl exits 1 on a QMP error reply with 'qmpctl: COMMAND: CLASS: desc' and no stdout" {
	start_qemu
	run --separate-stderr qmpctl -s "$SOCK" no-such-command
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "qmpctl: no-such-command: CommandNotFound: The command no-such-command has not been found"
}

@test "qmpctl exits 2 on usage errors and sends nothing" {
	start_qemu
	run --separate-stderr qmpctl query-status
	assert_failure 2
	assert_output ''
	[[ $stderr == *"-s SOCKET is required"* ]]
	[[ $stderr == *"usage: qmpctl -s socket"* ]]
	run --separate-stderr qmpctl -s "$SOCK" query-status oops
	assert_failure 2
	assert_equal "${stderr%%$'\n'*}" "qmpctl: oops: not KEY=VALUE"
	run --separate-stderr qmpctl -s "$SOCK" object-add a=1 a.b=2
	assert_failure 2
	assert_equal "${stderr%%$'\n'*}" "qmpctl: a.b: 'a' already has a value that is not an object"
	run --separate-stderr qmpctl -s "$SOCK" -t soon query-status
	assert_failure 2
	run --separate-stderr qmpctl -s "$SOCK" --json '[1]'
	assert_failure 2
	assert_equal "${stderr%%$'\n'*}" 'qmpctl: a command must be a JSON object with "execute"'
}

@test "qmpctl KEY=VALUE sends numbers as numbers and quoted numbers as strings" {
	start_qemu
	run qmpctl -s "$SOCK" object-add qom-type=memory-backend-ram id=mem0 size=1048576
	assert_success
	assert_output '{}'
	run qmp_raw "$WD" '{"execute":"qom-get","arguments":{"path":"/objects/mem0","property":"size"}}'
	assert_output '{"return": 1048576}'
	run --separate-stderr qmpctl -s "$SOCK" object-add qom-type=memory-backend-ram id=mem1 "size=\"1048576\""
	assert_failure 1
	assert_equal "$stderr" "qmpctl: object-add: GenericError: Parameter 'size' expects uint64"
}

@test "qmpctl KEY=VALUE builds nested objects from dotted keys and takes true, JSON objects and plain strings" {
	start_qemu
	truncate -s 1M "$WD/extra.raw"
	run qmpctl -s "$SOCK" blockdev-add driver=raw node-name=extra read-only=true \
		file.driver=file "file.filename=$WD/extra.raw"
	assert_success
	assert_output '{}'
	run qmpctl -s "$SOCK" blockdev-add driver=raw node-name=extra2 \
		"file={\"driver\": \"file\", \"filename\": \"$WD/extra.raw\", \"read-only\": true}" read-only=true
	assert_output '{}'
	run bash -c "qmpctl -s '$SOCK' query-named-block-nodes flat=true | jq -c '[.[] | select(.[\"node-name\"] | startswith(\"extra\")) | [.[\"node-name\"], .drv, .ro, .file]] | sort'"
	assert_output "[[\"extra\",\"raw\",true,\"$WD/extra.raw\"],[\"extra2\",\"raw\",true,\"$WD/extra.raw\"]]"
}

@test "qmpctl KEY=VALUE takes JSON arrays, on the command line and in a batch line with blanks inside" {
	start_qemu
	run qmpctl -s "$SOCK" -f - <<-'END'
	block-dirty-bitmap-add node=drive0 name=bm0
	block-dirty-bitmap-add node=drive0 name=bm1
	block-dirty-bitmap-merge node=drive0 target=bm1 bitmaps=["bm0", {"node": "drive0", "name": "bm0"}]
	END
	assert_success
	assert_output $'{}\n{}\n{}'
	run --separate-stderr qmpctl -s "$SOCK" block-dirty-bitmap-merge node=drive0 target=bm1 'bitmaps=["nope"]'
	assert_failure 1
	assert_equal "$stderr" "qmpctl: block-dirty-bitmap-merge: GenericError: Dirty bitmap 'nope' not found"
	# Not JSON, so a string: QEMU says what it wanted instead.
	run --separate-stderr qmpctl -s "$SOCK" block-dirty-bitmap-merge node=drive0 target=bm1 'bitmaps=[bm0]'
	assert_failure 1
	assert_equal "$stderr" "qmpctl: block-dirty-bitmap-merge: GenericError: Invalid parameter type for 'bitmaps', expected: array"
}

@test "qmpctl --json and - take a whole command as a JSON object" {
	start_qemu
	run qmpctl -s "$SOCK" --json '{"execute":"query-status"}'
	assert_output '{"status":"prelaunch","singlestep":false,"running":false}'
	run bash -c "echo '{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/machine\",\"property\":\"type\"}}' | qmpctl -s '$SOCK' -"
	assert_output '"pc-q35-7.2-machine"'
	run bash -c "echo '{\"execute\":\"query-name\"}' | qmpctl -s '$SOCK' --json -"
	assert_output '{}'
}

@test "qmpctl runs a batch on one connection, one JSON line per command, comments and blank lines skipped" {
	start_qemu
	cat >"$WD/batch" <<-'END'
	# a comment
	query-status

	  {"execute": "qom-get", "arguments": {"path": "/machine", "property": "type"}}
	object-add qom-type=memory-backend-ram id=m1 size=4096 'x-use-canonical-path-for-ramblock-id=false'
	human-monitor-command command-line='info status'
	qom-get path=/objects/m1 property=size
	END
	run --separate-stderr qmpctl -s "$SOCK" -f "$WD/batch"
	assert_success
	assert_equal "$output" '{"status":"prelaunch","singlestep":false,"running":false}
"pc-q35-7.2-machine"
{}
"VM status: paused (prelaunch)\r\n"
4096'
	run bash -c "printf '%s\n' 'query-status' '# stdin is a batch too' 'query-name' | qmpctl -s '$SOCK'"
	assert_success
	assert_output $'{"status":"prelaunch","singlestep":false,"running":false}\n{}'
}

@test "qmpctl's batch stops at the first error and prints nothing; --keep-going carries on" {
	start_qemu
	printf '%s\n' 'query-status' 'no-such-command' 'object-add qom-type=memory-backend-ram id=after size=4096' >"$WD/batch"
	run --separate-stderr qmpctl -s "$SOCK" -f "$WD/batch"
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "qmpctl: line 2: no-such-command: CommandNotFound: The command no-such-command has not been found"
	run qmp_raw "$WD" '{"execute":"qom-list","arguments":{"path":"/objects"}}'
	refute_output --partial '"after"'
	run --separate-stderr qmpctl -s "$SOCK" -k -f "$WD/batch"
	assert_failure 1
	assert_equal "$output" '{"status":"prelaunch","singlestep":false,"running":false}
{"error":{"class":"CommandNotFound","desc":"The command no-such-command has not been found"}}
{}'
}

@test "qmpctl reports a bad batch line with its number as a usage error before connecting" {
	printf '%s\n' 'query-status' 'qom-get path=' '{"execute": ' >"$WD/batch"
	run --separate-stderr qmpctl -s "$WD/nobody.sock" -f "$WD/batch"
	assert_failure 2
	assert_equal "$stderr" "qmpctl: $WD/batch:3: not JSON: unexpected token near end of file (line 1, column 12)"
}

@test "qmpctl --fd NAME=unix-listen:PATH lets QEMU serve NBD on a socket qmpctl created (nbdinfo reads it)" {
	start_qemu
	printf 'hello from drive0' | dd of="$WD/disk0.raw" conv=notrunc status=none
	run qmpctl -s "$SOCK" --fd nbd0=unix-listen:"$WD/nbd.sock" -f - <<-END
	nbd-server-start addr.type=fd addr.data.str=nbd0
	nbd-server-add device=drive0 name=d0
	END
	assert_success
	assert_output $'{}\n{}'
	assert_equal "$(stat -c %a "$WD/nbd.sock")" 600
	run nbdinfo --size "nbd+unix:///d0?socket=$WD/nbd.sock"
	assert_output 67108864
	run nbdcopy "nbd+unix:///d0?socket=$WD/nbd.sock" - 2>/dev/null
	[[ $output == "hello from drive0"* ]]
}

@test "qmpctl --fd NAME=unix-listen:PATH replaces a stale socket but never one that someone listens on" {
	start_qemu
	# A typo pointing at the live QMP socket must not unlink it.
	run --separate-stderr qmpctl -s "$SOCK" --fd nbd0=unix-listen:"$SOCK" query-status
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "qmpctl: nbd0=unix-listen:$SOCK: listen: Address already in use"
	run qmpctl -s "$SOCK" query-status
	assert_output '{"status":"prelaunch","singlestep":false,"running":false}'
	# A socket file nobody listens on is left over from an earlier run: replaced.
	"$_VZ_PYTHON" -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$WD/old.sock"
	run qmpctl -s "$SOCK" --fd old=unix-listen:"$WD/old.sock" closefd fdname=old
	assert_success
	assert_output '{}'
}

@test "qmpctl --fd NAME=N and --add-fd SET=N send inherited descriptors with getfd and add-fd" {
	start_qemu
	run bash -c "exec 7<>'$WD/disk0.raw'; qmpctl -s '$SOCK' --fd mine=7 closefd fdname=mine"
	assert_success
	assert_output '{}'
	run bash -c "exec 8<'$WD/disk0.raw'; qmpctl -s '$SOCK' --add-fd 5=8 query-fdsets | jq -c 'if type == \"array\" then [.[] | [.[\"fdset-id\"], [.fds[].opaque]]] else keys end'"
	assert_success
	assert_output $'["fd","fdset-id"]\n[[5,["5=8"]]]'
	run --separate-stderr qmpctl -s "$SOCK" --fd mine=9 query-status
	assert_failure 2
	assert_equal "$stderr" "qmpctl: mine=9: fd 9 is not open"
}

@test "qmpctl --add-fd opens a file for QEMU, prints the add-fd result, and blockdev-add uses /dev/fdset/N" {
	start_qemu
	truncate -s 1M "$WD/fdset.raw"
	run qmpctl -s "$SOCK" --add-fd 1="$WD/fdset.raw" blockdev-add driver=raw node-name=fdsdisk \
		file.driver=file file.filename=/dev/fdset/1
	assert_success
	[[ ${lines[0]} =~ ^\{\"fd\":[0-9]+,\"fdset-id\":1\}$ ]]
	assert_equal "${lines[1]}" '{}'
	run qmpctl -s "$SOCK" -H 'qemu-io fdsdisk "write -P 0x5a 4096 4096"'
	assert_success
	run od -An -tx1 -j4096 -N4 "$WD/fdset.raw"
	assert_output ' 5a 5a 5a 5a'
	run od -An -tx1 -j0 -N4 "$WD/fdset.raw"
	assert_output ' 00 00 00 00'
}

@test "qmpctl --add-fd SET=PATH:ro opens read-only, so a read-write node is refused" {
	start_qemu
	truncate -s 1M "$WD/ro.raw"
	run --separate-stderr qmpctl -s "$SOCK" --add-fd 2="$WD/ro.raw:ro" blockdev-add driver=raw node-name=rodisk \
		file.driver=file file.filename=/dev/fdset/2
	assert_failure 1
	[[ $stderr == *"Could not dup FD for /dev/fdset/2 flags 2: Permission denied"* ]]
	run qmpctl -s "$SOCK" --add-fd 2="$WD/ro.raw:ro" blockdev-add driver=raw node-name=rodisk \
		read-only=true file.driver=file file.filename=/dev/fdset/2 file.read-only=true
	assert_success
	assert_equal "${lines[1]}" '{}'
}

@test "qmpctl --fd NAME=unix-connect:PATH hands QEMU a connection to nbdkit; qemu-io over HMP reads it back" {
	start_qemu
	head -c 1048576 /dev/zero | tr '\0' '\125' >"$WD/served.img"
	nbdkit -U "$WD/kit.sock" -P "$WD/nbdkit.pid" file "$WD/served.img" 3>&-
	for _ in $(seq 50); do [ -S "$WD/kit.sock" ] && break; sleep 0.1; done
	run qmpctl -s "$SOCK" --fd kit=unix-connect:"$WD/kit.sock" blockdev-add driver=nbd node-name=nbd0 \
		server.type=fd server.str=kit
	assert_success
	assert_output '{}'
	run qmpctl -s "$SOCK" -H 'qemu-io nbd0 "read -P 0x55 0 1M"'
	assert_success
	run qmpctl -s "$SOCK" -H 'qemu-io nbd0 "read -P 0x56 0 512"'
	for _ in $(seq 50); do grep -q 'Pattern verification failed' "$WD/qemu.out" && break; sleep 0.1; done
	run cat "$WD/qemu.out"
	assert_line --index 0 'read 1048576/1048576 bytes at offset 0'
	assert_output --partial 'Pattern verification failed at offset 0, 512 bytes'
}

@test "qmpctl --fd NAME=unix-connect:PATH hands the socket over with a send buffer of 4 MiB" {
	start_qemu
	nbdkit -U "$WD/kit.sock" -P "$WD/nbdkit.pid" null size=1M 3>&-
	for _ in $(seq 50); do [ -S "$WD/kit.sock" ] && break; sleep 0.1; done
	run qmpctl -s "$SOCK" --fd kit=unix-connect:"$WD/kit.sock" blockdev-add driver=nbd node-name=nbd0 \
		server.type=fd server.str=kit
	assert_success
	# QEMU's connected unix sockets and their send buffers (the kernel doubles what was asked
	# for); only the handed-over one, not the monitor's, has the large one.
	qemu_pid=$(cat "$WD/qemu.pid")
	run bash -c "ss -xmpH state established | grep -A1 'pid=$qemu_pid,' | grep -o 'tb[0-9]*' | sort"
	assert_success
	assert_line 'tb8388608'
	assert_equal "$(grep -c 'tb8388608' <<<"$output")" 1
}

@test "qmpctl -w waits for the RESUME and STOP events that cont and stop cause" {
	start_qemu
	run qmpctl -s "$SOCK" -w STOP,RESUME cont
	assert_success
	assert_equal "${lines[0]}" '{}'
	assert_equal "$(jq -c 'del(.timestamp)' <<<"${lines[1]}")" '{"event":"RESUME"}'
	run qmpctl -s "$SOCK" query-status
	assert_output '{"status":"running","singlestep":false,"running":true}'
	run qmpctl -s "$SOCK" -w STOP stop
	assert_success
	assert_equal "${lines[0]}" '{}'
	assert_equal "$(jq -c 'del(.timestamp)' <<<"${lines[1]}")" '{"event":"STOP"}'
}

@test "qmpctl -w with -m waits for the event whose data matches, and exits 3 with no stdout when none comes" {
	start_qemu
	run qmpctl -s "$SOCK" -t 2 -w BLOCK_JOB_COMPLETED -m device=job0 \
		blockdev-add driver=null-co node-name=tgt size=67108864
	assert_failure 3
	assert_output --partial 'waiting for BLOCK_JOB_COMPLETED: timed out'
	run --separate-stderr qmpctl -s "$SOCK" -t 10 -w BLOCK_JOB_COMPLETED -m device=job0 -m len=67108864 \
		blockdev-backup job-id=job0 device=drive0 target=tgt sync=full
	assert_success
	assert_equal "${lines[0]}" '{}'
	assert_equal "$(jq -c '[.event, .data.device, .data.len]' <<<"${lines[1]}")" '["BLOCK_JOB_COMPLETED","job0",67108864]'
	run --separate-stderr qmpctl -s "$SOCK" -t 1 -w RESUME query-status
	assert_failure 3
	assert_output ''
}

@test "qmpctl --poll prints the results before the wait, so that a script reads them while it waits for the event" {
	# A second monitor, since QMP serves one client per socket.
	qemu_start_bare "$WD" "${DISK_ARGS[@]}" -qmp "unix:$WD/qmp2.sock,server=on,wait=off"
	exec {poll}< <(exec qmpctl -s "$SOCK" -t 20 --poll 15 -w RESUME query-status 2>"$WD/poll.err" 3>&-)
	poller=$!
	# The result is there while qmpctl still waits: nothing has resumed the VM yet.
	IFS= read -r -t 10 -u "$poll" first || fail "no result before the event"
	kill -0 "$poller" || fail "qmpctl did not wait"
	assert_equal "$(jq -c '[.status, .running]' <<<"$first")" '["prelaunch",false]'
	qmpctl -s "$WD/qmp2.sock" cont
	IFS= read -r -t 10 -u "$poll" event || fail "no event after cont"
	assert_equal "$(jq -r .event <<<"$event")" RESUME
	IFS= read -r -t 10 -u "$poll" more && fail "more output: $more"
	wait "$poller"
	exec {poll}<&-
	assert_equal "$(cat "$WD/poll.err")" ''
}

@test "qmpctl --poll: no event before the poll ends is no error, and the results alone are printed" {
	start_qemu
	run --separate-stderr qmpctl -s "$SOCK" -t 10 --poll 0.5 -w RESUME,STOP query-status
	assert_success
	assert_output '{"status":"prelaunch","singlestep":false,"running":false}'
	assert_equal "$stderr" ''
	# -t still bounds the whole run: a poll longer than it ends with -t, and no error either.
	run --separate-stderr qmpctl -s "$SOCK" -t 0.5 --poll 30 -w RESUME query-status
	assert_success
	assert_output '{"status":"prelaunch","singlestep":false,"running":false}'
	run qmpctl -s "$SOCK" --poll 1 query-status
	assert_failure 2
	assert_output --partial '--poll needs -w'
	run qmpctl -s "$SOCK" --poll 0 -w RESUME query-status
	assert_failure 2
	assert_output --partial '--poll: expected a positive number of seconds'
}

@test "qmpctl -e prints every event as one line until the deadline, including events during the commands" {
	start_qemu
	run --separate-stderr qmpctl -s "$SOCK" -t 1.5 -e -f - <<-'END'
	cont
	stop
	cont
	END
	assert_success
	assert_equal "${#lines[@]}" 6
	assert_equal "${lines[0]}${lines[1]}${lines[2]}" '{}{}{}'
	run bash -c "printf '%s\n' '${lines[3]}' '${lines[4]}' '${lines[5]}' | jq -r .event"
	assert_output $'RESUME\nSTOP\nRESUME'
}

@test "qmpctl -e -t 0 prints events until SIGTERM and then exits 0" {
	# A second monitor, since QMP serves one client per socket.
	qemu_start_bare "$WD" "${DISK_ARGS[@]}" -qmp "unix:$WD/qmp2.sock,server=on,wait=off"
	qmpctl -s "$SOCK" -t 0 -e >"$WD/events" 2>"$WD/events.err" 3>&- &
	pid=$!
	sleep 0.5
	qmpctl -s "$WD/qmp2.sock" cont
	for _ in $(seq 50); do [ -s "$WD/events" ] && break; sleep 0.1; done
	kill -TERM "$pid"
	rc=0
	wait "$pid" || rc=$?
	assert_equal "$rc" 0
	run jq -r .event "$WD/events"
	assert_output RESUME
	run cat "$WD/events.err"
	assert_output ''
}

@test "qmpctl -e ends with status 0 when the reader of its output goes away (| head -n 1)" {
	qemu_start_bare "$WD" "${DISK_ARGS[@]}" -qmp "unix:$WD/qmp2.sock,server=on,wait=off"
	# Events keep coming on the second monitor until the test ends.
	(for _ in $(seq 40); do qmpctl -s "$WD/qmp2.sock" cont && qmpctl -s "$WD/qmp2.sock" stop; sleep 0.2; done) \
		>/dev/null 2>&1 3>&- &
	echo $! >"$WD/late.pid"
	run --separate-stderr bash -c "timeout 10 qmpctl -s '$SOCK' -t 0 -e | head -n 1 | jq -r .event; echo \"\${PIPESTATUS[0]}\""
	kill "$(cat "$WD/late.pid")"
	assert_line --index 1 0
	[[ ${lines[0]} == RESUME || ${lines[0]} == STOP ]]
	assert_equal "$stderr" ''
}

@test "qmpctl -H runs a human-monitor command and prints its text" {
	start_qemu
	run qmpctl -s "$SOCK" -H 'info status'
	assert_success
	assert_output 'VM status: paused (prelaunch)'
}

@test "qmpctl -H with an unknown HMP command exits 1, says so on stderr, prints nothing" {
	start_qemu
	run --separate-stderr qmpctl -s "$SOCK" -H 'no-such-command 1'
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "qmpctl: human-monitor-command: unknown command: 'no-such-command'"
	run --separate-stderr qmpctl -s "$SOCK" -H 'info no-such-thing'
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "qmpctl: human-monitor-command: unknown command: 'info no-such-thing'"
}

@test "qmpctl exits 3 within the timeout when nobody listens on the socket" {
	python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$WD/dead.sock"
	start=$(date +%s%N)
	run --separate-stderr qmpctl -s "$WD/dead.sock" -t 1 query-status
	elapsed=$((($(date +%s%N) - start) / 1000000))
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "qmpctl: $WD/dead.sock: connect: Connection refused"
	((elapsed >= 900 && elapsed < 3000))
	run --separate-stderr qmpctl -s "$WD/missing.sock" -t 0.3 query-status
	assert_failure 3
	assert_equal "$stderr" "qmpctl: $WD/missing.sock: connect: No such file or directory"
}

@test "qmpctl times out with exit 3 against a SIGSTOPped QEMU" {
	start_qemu
	kill -STOP "$(cat "$WD/qemu.pid")"
	touch "$WD/stopped"
	run --separate-stderr qmpctl -s "$SOCK" -t 1 query-status
	assert_failure 3
	assert_output ''
	[[ $stderr == "qmpctl: $SOCK: timed out waiting for the QMP greeting"* ]]
	kill -CONT "$(cat "$WD/qemu.pid")"
	rm "$WD/stopped"
	run qmpctl -s "$SOCK" query-status
	assert_success
}

@test "qmpctl waits for a socket that appears late (QEMU started after it)" {
	(
		sleep 1
		qemu_start_bare "$WD" "${DISK_ARGS[@]}"
	) 3>&- &
	echo $! >"$WD/late.pid"
	run qmpctl -s "$SOCK" -t 15 query-status
	assert_success
	assert_output '{"status":"prelaunch","singlestep":false,"running":false}'
	wait "$(cat "$WD/late.pid")"
}

@test "qmpctl exits 3 when QEMU drops the connection before replying" {
	start_qemu
	run --separate-stderr qmpctl -s "$SOCK" -f - <<-'END'
	quit
	query-status
	END
	assert_failure 3
	assert_output ''
	[[ $stderr == *"query-status: "* ]]
}

@test "qmpctl -a speaks to a real qemu-ga (only read-only RPCs allowed): resync, guest-ping, blocked and unknown commands" {
	# host_qga_start blocks every RPC but a few read-only ones; no guest-fsfreeze-* is ever
	# sent to a host agent, blocked or not (it would act on this machine).
	host_qga_start "$WD/qga.sock"
	run qmpctl -a -s "$WD/qga.sock" guest-ping
	assert_success
	assert_output '{}'
	run --separate-stderr qmpctl -a -s "$WD/qga.sock" guest-get-fsinfo
	assert_failure 1
	assert_equal "$stderr" "qmpctl: guest-get-fsinfo: CommandNotFound: Command guest-get-fsinfo has been disabled"
	run --separate-stderr qmpctl -a -s "$WD/qga.sock" no-such-command
	assert_failure 1
	assert_equal "$stderr" "qmpctl: no-such-command: CommandNotFound: The command no-such-command has not been found"
	run bash -c "qmpctl -a -s '$WD/qga.sock' guest-info | jq -r .version"
	assert_output 7.2.22
}

@test "qmpctl with no command on a terminal offers a prompt with history, errors do not end it" {
	start_qemu
	# Keystrokes typed into a pty (script(1)); ESC [ A is the up arrow: the previous line again.
	run bash -c "(printf 'query-status\n'; sleep 0.5; printf 'no-such-command\n'; sleep 0.5
		printf 'cont\n'; sleep 0.5; printf '\033[A\033[A\033[A\n'; sleep 0.5; printf '\004') |
		HOME='$WD' script -qec \"qmpctl -s '$SOCK'\" /dev/null | tr -d '\r'"
	assert_success
	assert_line "connected to $SOCK; commands as: name key=value ... (Ctrl-D leaves)"
	assert_line '    "status": "prelaunch",'
	assert_line '(qemu) no-such-command'
	assert_line 'qmpctl: no-such-command: CommandNotFound: The command no-such-command has not been found'
	assert_line --partial '"event":"RESUME"'
	# The up arrows brought back query-status, which now sees a running VM.
	assert_line '    "status": "running",'
	run cat "$WD/.qmpctl_history"
	assert_output $'_HiStOrY_V2_\nquery-status\nno-such-command\ncont\nquery-status'
}

@test "qmpctl loads libedit only for the prompt: when it cannot, the prompt fails (exit 1) before connecting" {
	mkdir "$WD/lib"
	: >"$WD/lib/libedit.so.2"
	# On a terminal with no command: the prompt; the socket is never tried (that would be exit 3).
	run script -qec "LD_LIBRARY_PATH='$WD/lib' qmpctl -s '$WD/missing.sock'" /dev/null
	assert_failure 1
	assert_equal "$(tr -d '\r' <<<"$output")" "qmpctl: cannot load libedit.so.2: $WD/lib/libedit.so.2: file too short"
	# A command does not need it.
	start_qemu
	run --separate-stderr env LD_LIBRARY_PATH="$WD/lib" qmpctl -s "$SOCK" query-status
	assert_success
	assert_equal "$(jq -r .status <<<"$output")" prelaunch
}

@test "qmpctl removes the listening socket it made for --fd when QEMU never got it" {
	run --separate-stderr qmpctl -s "$WD/missing.sock" -t 0.3 --fd nbd0=unix-listen:"$WD/nbd.sock" query-status
	assert_failure 3
	[ ! -e "$WD/nbd.sock" ]
}

@test "qmpctl names a greeting that is not JSON once, readably, and exits 3" {
	fake_qmp "b'hello there\\r\\n'"
	run --separate-stderr qmpctl -s "$WD/fake.sock" -t 5 query-status
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "qmpctl: $WD/fake.sock: reading the QMP greeting: not a JSON object from the peer: hello there"
}

@test "qmpctl reports a peer that closes before the greeting, or in the middle of a reply, with exit 3" {
	fake_qmp close
	run --separate-stderr qmpctl -s "$WD/fake.sock" -t 5 query-status
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "qmpctl: $WD/fake.sock: reading the QMP greeting: connection closed by the peer"
	kill "$(cat "$WD/fake.pid")"
	fake_qmp "$GREETING" line "$NEGOTIATED" line "b'{\"return\": {\"status\": \"runn'" close
	run --separate-stderr qmpctl -s "$WD/fake.sock" -t 5 query-status
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "qmpctl: $WD/fake.sock: query-status: connection closed by the peer"
}

@test "qmpctl takes a reply line with a NUL byte in it for garbage, not for the JSON before the NUL" {
	fake_qmp "$GREETING" line "$NEGOTIATED" line "b'{\"return\": 5, \"id\": \"vz-1\"}\\x00junk\\r\\n'"
	run --separate-stderr qmpctl -s "$WD/fake.sock" -t 5 query-status
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "qmpctl: $WD/fake.sock: query-status: not a JSON object from the peer: {\"return\": 5, \"id\": \"vz-1\"}?junk"
}

@test "qmpctl refuses a reply line longer than 10 MB with exit 3 instead of buffering it all" {
	fake_qmp "b'{\"QMP\": \"' + b'x' * (11 << 20)"
	run --separate-stderr qmpctl -s "$WD/fake.sock" -t 10 query-status
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "qmpctl: $WD/fake.sock: reading the QMP greeting: reply line longer than 10 MB"
}

@test "qmpctl rejects keys and command names that are not UTF-8 as usage errors" {
	run --separate-stderr qmpctl -s "$WD/nobody.sock" -t 0.1 cmd $'\xff.a=1'
	assert_failure 2
	assert_equal "${stderr%%$'\n'*}" $'qmpctl: \xff.a: not valid UTF-8'
	run --separate-stderr qmpctl -s "$WD/nobody.sock" -t 0.1 $'\xff' a=1
	assert_failure 2
	assert_equal "${stderr%%$'\n'*}" $'qmpctl: \xff: not valid UTF-8'
}

# --- --sync-fd: the command's side of gafreeze hold --sync-fd (tests/lib/sync-peer.py) ---

SYNC_PEER=$BATS_TEST_DIRNAME/lib/sync-peer.py

# QEMU with a second monitor, to look at it while qmpctl holds the first.
start_qemu_two_monitors() {
	qemu_start_bare "$WD" "${DISK_ARGS[@]}" -qmp "unix:$WD/qmp2.sock,server=on,wait=off"
}

run_state() { qmpctl -s "$WD/qmp2.sock" query-status | jq -r .status; }

@test "qmpctl --sync-fd says ready once negotiated, runs nothing before go, then the commands" {
	start_qemu_two_monitors
	run --separate-stderr "$SYNC_PEER" "$WD/peer.log" 3 read "sh:qmpctl -s '$WD/qmp2.sock' query-status | jq -r .status" \
		say:go -- qmpctl -s "$SOCK" --sync-fd 3 -f - <<<$'cont\nquery-status'
	assert_success
	assert_output $'{}\n{"status":"running","singlestep":false,"running":true}'
	[ -z "$stderr" ]
	run cat "$WD/peer.log"
	assert_output $'read ready\nsh prelaunch\nsaid go'
	assert_equal "$(run_state)" running
}

@test "qmpctl --sync-fd says ready only after the negotiation has been answered" {
	# The peer reads qmp_capabilities and never answers it: no ready, exit 3 at -t.
	fake_qmp "$GREETING" line
	run --separate-stderr "$SYNC_PEER" "$WD/peer.log" 3 read -- \
		qmpctl -s "$WD/fake.sock" -t 1 --sync-fd 3 query-status
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "qmpctl: $WD/fake.sock: qmp_capabilities: timed out waiting for the reply"
	run cat "$WD/peer.log"
	assert_output 'read EOF'
}

@test "qmpctl --sync-fd runs nothing and exits 3 on end-of-file or another word instead of go" {
	start_qemu_two_monitors
	run --separate-stderr "$SYNC_PEER" "$WD/peer.log" 3 read close -- qmpctl -s "$SOCK" --sync-fd 3 cont
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "qmpctl: --sync-fd 3: no go (end of file): nothing was run"
	run cat "$WD/peer.log"
	assert_output $'read ready\nclosed'
	assert_equal "$(run_state)" prelaunch
	run --separate-stderr "$SYNC_PEER" "$WD/peer.log" 5 read say:stop -- qmpctl -s "$SOCK" --sync-fd 5 cont
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "qmpctl: --sync-fd 5: no go: nothing was run: Protocol error"
	assert_equal "$(run_state)" prelaunch
}

@test "qmpctl --sync-fd gives up waiting for go at -t, with exit 3" {
	start_qemu_two_monitors
	run --separate-stderr "$SYNC_PEER" "$WD/peer.log" 3 read "sh:sleep 2" -- \
		qmpctl -s "$SOCK" -t 1 --sync-fd 3 cont
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "qmpctl: --sync-fd 3: timed out waiting for go: nothing was run"
	assert_equal "$(run_state)" prelaunch
}

@test "qmpctl --sync-fd rejects standard streams, closed descriptors and an interactive run as usage errors" {
	run --separate-stderr qmpctl -s "$WD/nobody.sock" --sync-fd 1 query-status
	assert_failure 2
	assert_equal "${stderr%%$'\n'*}" "qmpctl: --sync-fd: not standard input, output or error"
	run --separate-stderr qmpctl -s "$WD/nobody.sock" --sync-fd 9 query-status 9>&-
	assert_failure 2
	assert_equal "${stderr%%$'\n'*}" "qmpctl: --sync-fd 9: not an open descriptor"
	run --separate-stderr qmpctl -s "$WD/nobody.sock" --sync-fd 3x query-status
	assert_failure 2
	assert_equal "${stderr%%$'\n'*}" "qmpctl: --sync-fd: expected a descriptor number"
	# With no command and a terminal, qmpctl would offer its prompt: nothing to say go to.
	run script -qec "qmpctl -s '$WD/nobody.sock' --sync-fd 4 4</dev/null" /dev/null
	assert_failure 2
	assert_line --index 0 --partial "qmpctl: --sync-fd needs something to run: a command, -f, -w or -e"
}
