#!/usr/bin/env bats
# gafreeze: protocol paths against the real qemu-ga on the host (host_qga_start: every RPC
# blocked but a few read-only ones, and no guest-fsfreeze-* is ever sent to it, so nothing
# can freeze this machine), freeze paths against the protocol double
# tests/lib/qga-double.py, and end to end against a real tiny guest.

setup() {
	load lib/common
	load lib/guest
	WD=$BATS_TEST_TMPDIR
	QGA=$WD/qga.sock
}

teardown_file() {
	load lib/guest
	if [ -f "$BATS_FILE_TMPDIR/guest/qemu.pid" ]; then guest_stop "$BATS_FILE_TMPDIR/guest"; fi
}

teardown() {
	qga_double_stop "$QGA"
	if [ -f "$WD/orphan.pid" ]; then kill "$(cat "$WD/orphan.pid")" 2>/dev/null || true; fi
	if [ -d "$QGA.state" ]; then host_qga_stop "$QGA"; fi
	if [ -f "$WD/gafreeze.pid" ]; then kill -KILL "$(cat "$WD/gafreeze.pid")" 2>/dev/null || true; fi
	if [ -f "$WD/vm/qemu.pid" ]; then qemu_stop "$WD/vm"; fi
	true
}

# The requests the double received, one per line, as "name" or "name ARGUMENTS-JSON".
requests() {
	jq -rc 'if .arguments and (.execute != "guest-sync-delimited") then "\(.execute) \(.arguments | tojson)" else .execute end' "$QGA.log"
}

double_status() { "$QGA_CLIENT" --timeout 5 "$QGA" guest-fsfreeze-status; }

# --- the real qemu-ga on the host, only read-only RPCs allowed; never a guest-fsfreeze-* ---

@test "gafreeze ping succeeds silently against the real qemu-ga, after stale half-sent input" {
	host_qga_start "$QGA"
	# An earlier client that died mid-request: qemu-ga keeps the half-parsed input.
	python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"{\"execute\": \"guest-pi"); s.close()' "$QGA"
	run --separate-stderr gafreeze -s "$QGA" ping
	assert_success
	assert_output ''
	[ -z "$stderr" ]
	run gafreeze -s "$QGA" --json ping
	assert_output '{}'
}

@test "gafreeze info shows the real agent's version and its blocked freeze commands" {
	host_qga_start "$QGA"
	run gafreeze -s "$QGA" info
	assert_success
	assert_output "version 7.2.22
guest-fsfreeze-freeze disabled
guest-fsfreeze-freeze-list disabled
guest-fsfreeze-status disabled
guest-fsfreeze-thaw disabled"
	run bash -c "gafreeze -s '$QGA' --json info | jq -c '[.version, ([.supported_commands[] | select(.name == \"guest-ping\")][0].enabled)]'"
	assert_output '["7.2.22",true]'
}

@test "gafreeze status and freeze stop with exit 1 when the agent has the freeze commands disabled" {
	# The double, not the host's agent: nothing named guest-fsfreeze-* goes to a host agent.
	qga_double_start "$QGA" --disable guest-fsfreeze-status --disable guest-fsfreeze-freeze
	run --separate-stderr gafreeze -s "$QGA" status
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "gafreeze: guest-fsfreeze-status: CommandNotFound: Command guest-fsfreeze-status has been disabled"
	# freeze asks for the status first, so it stops there: no freeze, so no thaw either.
	run --separate-stderr gafreeze -s "$QGA" freeze
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "gafreeze: guest-fsfreeze-status: CommandNotFound: Command guest-fsfreeze-status has been disabled"
	run requests
	assert_output $'guest-sync-delimited\nguest-fsfreeze-status\nguest-sync-delimited\nguest-fsfreeze-status'
}

@test "gafreeze rejects an unknown command as a usage error without touching the agent" {
	run --separate-stderr gafreeze -s "$WD/nobody.sock" snapshot
	assert_failure 2
	assert_output ''
	[[ $stderr == "gafreeze: unknown command"$'\n'"usage: gafreeze -s socket"* ]]
	run --separate-stderr gafreeze ping
	assert_failure 2
	run --separate-stderr gafreeze -s "$QGA" hold
	assert_failure 2
}

@test "gafreeze exits 3 within -t when the agent socket does not exist" {
	run --separate-stderr gafreeze -s "$WD/missing.sock" -t 0.5 status
	assert_failure 3
	assert_output ''
	assert_equal "$stderr" "gafreeze: $WD/missing.sock: connect: No such file or directory"
}

@test "gafreeze writes each message in one piece, so that its watchdog's lines cannot cut into them" {
	# Both processes write to the same stderr: a line written in three pieces (name, text,
	# line end) could be split by the other's.
	# (LeakSanitizer cannot run under ptrace.)
	run -3 env ASAN_OPTIONS=detect_leaks=0 strace -qq -s 512 -e trace=write -e signal=none \
		-o "$WD/trace" gafreeze -s "$WD/missing.sock" -t 0.5 status
	run grep -c '^write(2, ' "$WD/trace"
	assert_output 1
	run grep '^write(2, ' "$WD/trace"
	assert_output --partial "write(2, \"gafreeze: $WD/missing.sock: connect: No such file or directory\\n\""
}

# --- the protocol double ---

@test "gafreeze resyncs past stale bytes and an old 0xFF reply sent before the real one" {
	qga_double_start "$QGA" --garbage
	run --separate-stderr gafreeze -s "$QGA" status
	assert_success
	assert_output thawed
	run requests
	assert_output $'guest-sync-delimited\nguest-fsfreeze-status'
	# The sync carried a fresh random id, not 4711 (the stale reply's).
	run jq -r 'select(.execute == "guest-sync-delimited") | .arguments.id' "$QGA.log"
	[[ $output =~ ^[0-9]+$ ]] && [ "$output" != 4711 ]
}

@test "gafreeze exits 3 when the agent channel accepts but nothing answers the sync" {
	qga_double_start "$QGA" --hang guest-sync-delimited
	run --separate-stderr gafreeze -s "$QGA" -t 0.5 ping
	assert_failure 3
	assert_equal "$stderr" "gafreeze: $QGA: timed out waiting for guest-sync-delimited (is the agent running in the guest?)"
}

@test "gafreeze freeze checks the status, freezes, and prints the number of filesystems" {
	qga_double_start "$QGA" --fs-count 3
	run --separate-stderr gafreeze -s "$QGA" freeze
	assert_success
	assert_output 3
	run requests
	assert_output $'guest-sync-delimited\nguest-fsfreeze-status\nguest-fsfreeze-freeze'
	run double_status
	assert_output '"frozen"'
}

@test "gafreeze freeze with mountpoints uses guest-fsfreeze-freeze-list" {
	qga_double_start "$QGA"
	run gafreeze -s "$QGA" --json freeze /mnt '/srv/with space'
	assert_success
	assert_output 2
	run requests
	assert_line --index 2 'guest-fsfreeze-freeze-list {"mountpoints":["/mnt","/srv/with space"]}'
}

@test "gafreeze freeze rejects a mountpoint that is not UTF-8 as a usage error, before any request" {
	qga_double_start "$QGA"
	run --separate-stderr gafreeze -s "$QGA" freeze /mnt $'/srv/\xff'
	assert_failure 2
	assert_output ''
	assert_equal "${stderr%%$'\n'*}" $'gafreeze: /srv/\xff: a mountpoint must be UTF-8 (JSON cannot carry it)'
	run requests
	assert_output ''
}

@test "gafreeze freeze refuses with exit 5 when the guest is already frozen, and sends no freeze" {
	qga_double_start "$QGA" --frozen
	run --separate-stderr gafreeze -s "$QGA" freeze
	assert_failure 5
	assert_output ''
	[[ $stderr == "gafreeze: the guest is already frozen"* ]]
	run requests
	assert_output $'guest-sync-delimited\nguest-fsfreeze-status'
}

@test "gafreeze freeze trusts the status when the freeze reply is late" {
	qga_double_start "$QGA" --delay guest-fsfreeze-freeze=1.5
	run --separate-stderr gafreeze -s "$QGA" -t 0.5 freeze
	assert_success
	assert_output unknown
	[[ $stderr == *"asking the agent for its freeze status"* ]]
	[[ $stderr == *"the agent reports the guest frozen (filesystem count unknown)"* ]]
	run requests
	assert_line --index 2 guest-fsfreeze-freeze
	assert_line --index 3 guest-sync-delimited
	assert_equal "${lines[-1]}" guest-fsfreeze-status
}

@test "gafreeze freeze trusts the status when the freeze reply never comes" {
	qga_double_start "$QGA" --hang guest-fsfreeze-freeze
	run --separate-stderr gafreeze -s "$QGA" -t 0.5 freeze
	assert_success
	assert_output unknown
	run double_status
	assert_output '"frozen"'
}

@test "gafreeze freeze gives up at the ceiling when the agent stops answering, tries to thaw, and exits 4" {
	qga_double_start "$QGA" --stall guest-fsfreeze-freeze
	start=$(date +%s%N)
	run --separate-stderr gafreeze -s "$QGA" -t 0.3 freeze
	elapsed=$((($(date +%s%N) - start) / 1000000))
	assert_failure 4
	assert_output ''
	[[ $stderr == *"gave up waiting for the freeze"* ]]
	[[ $stderr == *"THAW FAILED, THE GUEST MAY STILL BE FROZEN"* ]]
	# 6 x 0.3 s for the freeze, the same for the thaw.
	((elapsed >= 3400 && elapsed < 6000))
}

@test "gafreeze freeze reports a dropped connection with exit 3 and confirms the guest is thawed" {
	qga_double_start "$QGA" --drop guest-fsfreeze-freeze
	run --separate-stderr gafreeze -s "$QGA" -t 1 freeze
	assert_failure 3
	assert_output ''
	[[ $stderr == *"connection closed by the peer"* ]]
	[[ $stderr == *"the freeze did not take effect: the agent reports 'thawed'"* ]]
	run requests
	assert_line --index 1 guest-fsfreeze-status
	assert_line --index 2 guest-fsfreeze-freeze
	assert_line guest-fsfreeze-thaw
}

@test "gafreeze thaw thaws, confirms with a status call and prints the count" {
	qga_double_start "$QGA" --frozen --fs-count 2
	run --separate-stderr gafreeze -s "$QGA" thaw
	assert_success
	assert_output 2
	run requests
	assert_output $'guest-sync-delimited\nguest-fsfreeze-thaw\nguest-fsfreeze-status'
}

@test "gafreeze thaw retries a failing thaw within the deadline" {
	qga_double_start "$QGA" --frozen --thaw-fails 2
	run --separate-stderr gafreeze -s "$QGA" thaw
	assert_success
	assert_output 1
	[[ $stderr == "gafreeze: thaw not confirmed (guest-fsfreeze-thaw: GenericError: failed to thaw /mnt: Device or resource busy); retrying" ]]
	run bash -c "grep -c guest-fsfreeze-thaw '$QGA.log'"
	assert_output 3
}

@test "gafreeze thaw says so loudly and exits 4 when the thaw keeps failing" {
	qga_double_start "$QGA" --frozen --thaw-fails
	run --separate-stderr gafreeze -s "$QGA" -t 0.2 thaw
	assert_failure 4
	assert_output ''
	assert_equal "${stderr##*$'\n'}" "gafreeze: THAW FAILED, THE GUEST MAY STILL BE FROZEN: guest-fsfreeze-thaw: GenericError: failed to thaw /mnt: Device or resource busy"
}

@test "gafreeze hold freezes, runs the command, thaws after it, and passes its exit status on" {
	qga_double_start "$QGA"
	run --separate-stderr gafreeze -s "$QGA" --json hold -- sh -c 'echo running; sleep 0.3; exit 7'
	assert_failure 7
	assert_line --index 0 running
	run jq -c '[.frozen, .thawed, .command_status, .max_reached, .thaw_ok, (.frozen_ms >= 300 and .frozen_ms < 2000)]' <<<"${lines[1]}"
	assert_output '[1,1,7,false,true,true]'
	[[ $stderr =~ ^gafreeze:\ guest\ frozen\ for\ [0-9]+\ ms\ \(filesystems\ frozen:\ 1,\ thawed:\ 1\)$ ]]
	run requests
	assert_output $'guest-sync-delimited\nguest-ping\nguest-fsfreeze-status\nguest-fsfreeze-freeze\nguest-sync-delimited\nguest-fsfreeze-thaw\nguest-fsfreeze-status'
	run double_status
	assert_output '"thawed"'
}

@test "gafreeze hold thaws while the command is still running when it gets SIGTERM" {
	qga_double_start "$QGA"
	gafreeze -s "$QGA" hold -- sleep 30 >"$WD/out" 2>"$WD/err" 3>&- &
	echo $! >"$WD/gafreeze.pid"
	for _ in $(seq 100); do grep -q guest-fsfreeze-freeze "$QGA.log" 2>/dev/null && break; sleep 0.05; done
	sleep 0.2
	kill -TERM "$(cat "$WD/gafreeze.pid")"
	rc=0
	wait "$(cat "$WD/gafreeze.pid")" || rc=$?
	assert_equal "$rc" 143
	run cat "$WD/err"
	assert_line --index 0 "gafreeze: got signal 15: thawing, then passing it to sleep"
	run double_status
	assert_output '"thawed"'
}

@test "gafreeze hold's watchdog thaws at once when gafreeze is SIGKILLed" {
	qga_double_start "$QGA"
	# shellcheck disable=SC2016 # expanded by the inner sh
	gafreeze -s "$QGA" --max 20 hold -- sh -c 'echo $$ >"$1"; exec sleep 30' sh "$WD/orphan.pid" \
		>"$WD/out" 2>"$WD/err" 3>&- &
	echo $! >"$WD/gafreeze.pid"
	for _ in $(seq 100); do grep -q guest-fsfreeze-freeze "$QGA.log" 2>/dev/null && break; sleep 0.05; done
	sleep 0.2
	run double_status
	kill -KILL "$(cat "$WD/gafreeze.pid")"
	start=$(date +%s%N)
	for _ in $(seq 100); do grep -q guest-fsfreeze-thaw "$QGA.log" && break; sleep 0.05; done
	elapsed=$((($(date +%s%N) - start) / 1000000))
	((elapsed < 2000))
	run double_status
	assert_output '"thawed"'
	run cat "$WD/err"
	assert_output "gafreeze: watchdog: gafreeze is gone; thawing the guest"
}

@test "gafreeze hold's watchdog thaws when gafreeze's whole process group is SIGKILLed" {
	qga_double_start "$QGA"
	# A process group of its own, as a job started from a shell or a service would have.
	setsid gafreeze -s "$QGA" --max 20 hold -- sleep 30 >"$WD/out" 2>"$WD/err" 3>&- &
	echo $! >"$WD/gafreeze.pid"
	for _ in $(seq 100); do grep -q guest-fsfreeze-freeze "$QGA.log" 2>/dev/null && break; sleep 0.05; done
	sleep 0.2
	kill -KILL -- "-$(cat "$WD/gafreeze.pid")"
	for _ in $(seq 100); do grep -q guest-fsfreeze-thaw "$QGA.log" && break; sleep 0.05; done
	run double_status
	assert_output '"thawed"'
	run cat "$WD/err"
	assert_output "gafreeze: watchdog: gafreeze is gone; thawing the guest"
}

@test "gafreeze hold's watchdog thaws when --max passes, and the run then fails" {
	qga_double_start "$QGA"
	start=$(date +%s%N)
	run --separate-stderr gafreeze -s "$QGA" --max 1 --json hold -- sleep 2
	elapsed=$((($(date +%s%N) - start) / 1000000))
	assert_failure 1
	((elapsed >= 2000 && elapsed < 4000))
	run jq -c '[.max_reached, .thaw_ok, .frozen_ms >= 900 and .frozen_ms < 1500]' <<<"$output"
	assert_output '[true,true,true]'
	[[ $stderr == *"gafreeze: watchdog: --max 1 s reached; thawing the guest"* ]]
	[[ $stderr == *"gafreeze: --max reached while sleep was still running: the guest was thawed early"* ]]
}

@test "gafreeze hold does not run the command when the guest is already frozen" {
	qga_double_start "$QGA" --frozen
	run --separate-stderr gafreeze -s "$QGA" hold -- touch "$WD/ran"
	assert_failure 5
	[ ! -e "$WD/ran" ]
	run grep -c guest-fsfreeze-thaw "$QGA.log"
	assert_output 0
}

@test "gafreeze hold does not run the command when the freeze fails, and still thaws" {
	qga_double_start "$QGA" --disable guest-fsfreeze-freeze
	run --separate-stderr gafreeze -s "$QGA" hold -- touch "$WD/ran"
	assert_failure 1
	[ ! -e "$WD/ran" ]
	[[ $stderr == "gafreeze: guest-fsfreeze-freeze: CommandNotFound: Command guest-fsfreeze-freeze has been disabled" ]]
	run requests
	assert_line --index 5 guest-fsfreeze-thaw
}

@test "gafreeze hold's watchdog reaches the agent after gafreeze had to reconnect during the freeze" {
	# The agent drops the connection the watchdog shares; gafreeze reconnects to ask for the
	# status. The agent serves one client at a time, so gafreeze must let go of its new
	# connection, or the watchdog's thaw cannot get through and the run ends in THAW FAILED.
	qga_double_start "$QGA" --drop guest-fsfreeze-freeze
	run --separate-stderr gafreeze -s "$QGA" -t 1 hold -- touch "$WD/ran"
	assert_failure 3
	assert_output ''
	[ ! -e "$WD/ran" ]
	assert_equal "$stderr" "gafreeze: $QGA: guest-fsfreeze-freeze: connection closed by the peer; asking the agent for its freeze status
gafreeze: the freeze did not take effect: the agent reports 'thawed'"
	run requests
	assert_output $'guest-sync-delimited\nguest-ping\nguest-fsfreeze-status\nguest-fsfreeze-freeze\nguest-sync-delimited\nguest-fsfreeze-status\nguest-sync-delimited\nguest-fsfreeze-status'
}

@test "gafreeze hold exits 4 when the thaw after the command fails" {
	qga_double_start "$QGA" --thaw-fails
	run --separate-stderr gafreeze -s "$QGA" -t 0.2 hold -- true
	assert_failure 4
	[[ $stderr == *"THAW FAILED, THE GUEST MAY STILL BE FROZEN"* ]]
}

# --- hold --sync-fd: the command is started, and ready, before the freeze ---

# The requests in the double's log file $1 (a copy taken at some instant), as requests does.
requests_in() {
	jq -rc 'if .arguments and (.execute != "guest-sync-delimited") then "\(.execute) \(.arguments | tojson)" else .execute end' "$1"
}

@test "gafreeze hold --sync-fd starts the command before the freeze and says go only once the freeze is acknowledged" {
	qga_double_start "$QGA"
	# The command notes what the agent had received when it said ready, and when go came.
	# shellcheck disable=SC2016 # expanded by the inner sh
	run --separate-stderr gafreeze -s "$QGA" --sync-fd 3 --json hold -- sh -c '
		cp "$1" "$2/at-ready.log"; echo ready >&3
		read -r go <&3; cp "$1" "$2/at-go.log"; echo "got $go"' sh "$QGA.log" "$WD"
	assert_success
	assert_equal "${lines[0]}" "got go"
	summary=${lines[1]}
	run jq -c 'keys_unsorted' <<<"$summary"
	assert_output '["frozen_ms","freeze_ms","command_ms","thaw_ms","frozen","thawed","command_status","max_reached","thaw_ok"]'
	run jq -c '[.frozen, .thawed, .command_status, .max_reached, .thaw_ok, ([.frozen_ms, .freeze_ms, .command_ms, .thaw_ms] | all(type == "number" and . >= 0))]' <<<"$summary"
	assert_output '[1,1,0,false,true,true]'
	[[ $stderr =~ ^gafreeze:\ guest\ frozen\ for\ [0-9]+\ ms\ \(filesystems\ frozen:\ 1,\ thawed:\ 1\)$ ]]
	# Ready before any freeze request, go after the freeze and before the thaw.
	run requests_in "$WD/at-ready.log"
	assert_output $'guest-sync-delimited\nguest-ping'
	run requests_in "$WD/at-go.log"
	assert_output $'guest-sync-delimited\nguest-ping\nguest-fsfreeze-status\nguest-fsfreeze-freeze'
	run requests
	assert_output $'guest-sync-delimited\nguest-ping\nguest-fsfreeze-status\nguest-fsfreeze-freeze\nguest-sync-delimited\nguest-fsfreeze-thaw\nguest-fsfreeze-status'
	run double_status
	assert_output '"thawed"'
}

@test "gafreeze hold --sync-fd freezes nothing and exits 1 when the command ends before it is ready" {
	qga_double_start "$QGA"
	run --separate-stderr gafreeze -s "$QGA" --sync-fd 3 --json hold -- sh -c 'echo out; exit 7'
	assert_failure 1
	assert_output out
	assert_equal "$stderr" "gafreeze: sh ended (status 7) before it was ready: nothing was frozen"
	run --separate-stderr gafreeze -s "$QGA" --sync-fd 3 --json hold -- true
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "gafreeze: true ended (status 0) before it was ready: nothing was frozen"
	run requests
	assert_output $'guest-sync-delimited\nguest-ping\nguest-sync-delimited\nguest-ping'
}

@test "gafreeze hold --sync-fd freezes nothing when the command says something else, or is not ready within -t" {
	qga_double_start "$QGA"
	run --separate-stderr gafreeze -s "$QGA" --sync-fd 3 hold -- sh -c 'echo later >&3; exec sleep 30'
	assert_failure 1
	assert_equal "$stderr" "gafreeze: sh said 'later' on --sync-fd, not 'ready': nothing was frozen
gafreeze: sh is still running: sending it SIGTERM"
	run --separate-stderr gafreeze -s "$QGA" -t 0.5 --sync-fd 4 hold -- sleep 30
	assert_failure 1
	assert_equal "$stderr" "gafreeze: sleep was not ready within 0.5 s: nothing was frozen
gafreeze: sleep is still running: sending it SIGTERM"
	run requests
	assert_output $'guest-sync-delimited\nguest-ping\nguest-sync-delimited\nguest-ping'
}

@test "gafreeze hold --sync-fd: a command that hangs after go is still bounded by --max, and the guest is thawed" {
	qga_double_start "$QGA"
	# shellcheck disable=SC2016 # expanded by the inner sh
	run --separate-stderr gafreeze -s "$QGA" --max 1 --sync-fd 3 --json hold -- sh -c '
		echo ready >&3; read -r go <&3; sleep 2.5; cp "$1" "$2/after-max.log"; echo done' \
		sh "$QGA.log" "$WD"
	assert_failure 1
	assert_equal "${lines[0]}" done
	run jq -c '[.max_reached, .thaw_ok, .command_status]' <<<"${lines[1]}"
	assert_output '[true,true,0]'
	assert_equal "$(sed 's/frozen for [0-9]* ms/frozen for N ms/' <<<"$stderr")" "gafreeze: watchdog: --max 1 s reached; thawing the guest
gafreeze: --max reached while sh was still running: the guest was thawed early
gafreeze: guest frozen for N ms (filesystems frozen: 1, thawed: 1)
gafreeze: the guest was not frozen for the whole of sh"
	# Thawed while the command still ran.
	run requests_in "$WD/after-max.log"
	assert_output $'guest-sync-delimited\nguest-ping\nguest-fsfreeze-status\nguest-fsfreeze-freeze\nguest-sync-delimited\nguest-fsfreeze-thaw\nguest-fsfreeze-status'
	run double_status
	assert_output '"thawed"'
}

@test "gafreeze hold --sync-fd gives no go when the freeze fails or the guest is already frozen" {
	qga_double_start "$QGA" --disable guest-fsfreeze-freeze
	# shellcheck disable=SC2016 # expanded by the inner sh
	run --separate-stderr gafreeze -s "$QGA" --sync-fd 3 hold -- sh -c '
		echo ready >&3; if read -r go <&3; then echo "got $go"; else echo "no go"; fi >"$1"' sh "$WD/said"
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "gafreeze: guest-fsfreeze-freeze: CommandNotFound: Command guest-fsfreeze-freeze has been disabled"
	assert_equal "$(cat "$WD/said")" "no go"
	run requests
	assert_output $'guest-sync-delimited\nguest-ping\nguest-fsfreeze-status\nguest-fsfreeze-freeze\nguest-sync-delimited\nguest-fsfreeze-thaw\nguest-fsfreeze-status'
	qga_double_stop "$QGA"
	rm -f "$QGA.log" "$WD/said"
	qga_double_start "$QGA" --frozen
	# shellcheck disable=SC2016 # expanded by the inner sh
	run --separate-stderr gafreeze -s "$QGA" --sync-fd 3 hold -- sh -c '
		echo ready >&3; if read -r go <&3; then echo "got $go"; else echo "no go"; fi >"$1"' sh "$WD/said"
	assert_failure 5
	assert_equal "$(cat "$WD/said")" "no go"
	run requests
	assert_output $'guest-sync-delimited\nguest-ping\nguest-fsfreeze-status'
}

@test "gafreeze hold --sync-fd with qmpctl --sync-fd: the batch runs on a connection made before the freeze" {
	qga_double_start "$QGA"
	mkdir -p "$WD/vm"
	qemu_start_bare "$WD/vm"
	run --separate-stderr gafreeze -s "$QGA" --sync-fd 3 --json hold -- \
		qmpctl -s "$WD/vm/qmp.sock" --sync-fd 3 -f - <<<$'cont\nstop\nquery-status'
	assert_success
	assert_equal "${lines[0]}${lines[1]}" '{}{}'
	assert_equal "${lines[2]}" '{"status":"paused","singlestep":false,"running":false}'
	assert_equal "$(jq -c '[.frozen, .thawed, .command_status, .thaw_ok]' <<<"${lines[3]}")" '[1,1,0,true]'
	run double_status
	assert_output '"thawed"'
	# QEMU is not reachable: qmpctl fails before it is ready, and nothing is frozen.
	: >"$QGA.log"
	run --separate-stderr gafreeze -s "$QGA" --sync-fd 3 hold -- \
		qmpctl -s "$WD/vm/none.sock" -t 0.3 --sync-fd 3 cont
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "qmpctl: $WD/vm/none.sock: connect: No such file or directory
gafreeze: qmpctl ended (status 3) before it was ready: nothing was frozen"
	run requests
	assert_output $'guest-sync-delimited\nguest-ping'
	qemu_stop "$WD/vm"
}

@test "gafreeze --sync-fd is for hold only, and not for a standard stream" {
	run --separate-stderr gafreeze -s "$QGA" --sync-fd 3 status
	assert_failure 2
	assert_equal "${stderr%%$'\n'*}" "gafreeze: --sync-fd is for hold only"
	run --separate-stderr gafreeze -s "$QGA" --sync-fd 1 hold -- true
	assert_failure 2
	assert_equal "${stderr%%$'\n'*}" "gafreeze: --sync-fd: expected a descriptor number above 2"
}

# --- a real guest (one boot shared by the tests below, started by the first of them) ---

# Starts the shared guest unless it runs; sets GWD, GQGA, GQMP.
shared_guest() {
	GWD=$BATS_FILE_TMPDIR/guest
	GQGA=$GWD/qga.sock
	GQMP=$GWD/qmp.sock
	mkdir -p "$GWD"
	if ! [ -f "$GWD/qemu.pid" ] || ! kill -0 "$(cat "$GWD/qemu.pid")" 2>/dev/null; then
		guest_start "$GWD"
	fi
}

# Waits until the guest's writer has printed a counter above $1 (at most 10 s).
counter_moves_past() {
	local i c
	for ((i = 0; i < 100; i++)); do
		c=$(guest_counter "$GWD")
		[ -n "$c" ] && [ "$c" -gt "${1:-0}" ] && return 0
		sleep 0.1
	done
	return 1
}

# True when the ext4 image in $1 needs no journal replay and e2fsck -fn finds nothing.
clean_ext4() {
	! dumpe2fs -h "$1" 2>/dev/null | grep -q needs_recovery && e2fsck -fn "$1" >/dev/null 2>&1
}

@test "gafreeze freeze stops the guest's writer, a copy taken while frozen is clean, thaw resumes it" {
	shared_guest
	counter_moves_past "$(guest_counter "$GWD")"
	# Control: a copy taken while the guest writes needs journal replay, so the check can fail.
	cp --sparse=always "$GWD/guestdisk.raw" "$WD/unfrozen.raw"
	run clean_ext4 "$WD/unfrozen.raw"
	assert_failure
	run --separate-stderr gafreeze -s "$GQGA" -t 20 freeze
	assert_success
	assert_output 1
	run gafreeze -s "$GQGA" status
	assert_output frozen
	sleep 0.3
	frozen_at=$(guest_counter "$GWD")
	sleep 1.5
	assert_equal "$(guest_counter "$GWD")" "$frozen_at"
	cp --sparse=always "$GWD/guestdisk.raw" "$WD/frozen.raw"
	run gafreeze -s "$GQGA" -t 20 thaw
	assert_success
	assert_output 1
	counter_moves_past "$frozen_at"
	run clean_ext4 "$WD/frozen.raw"
	assert_success
	# The copy holds the counter value the writer had written last before the freeze, or
	# nothing: the writer's `echo N >/mnt/counter` truncates and writes in two system calls,
	# and the freeze may fall between them (the write then waits for the thaw).
	saved=$(debugfs -R 'cat /counter' "$WD/frozen.raw" 2>/dev/null)
	if [ -n "$saved" ]; then
		[[ $saved =~ ^[0-9]+$ ]]
		((saved >= frozen_at - 1 && saved <= frozen_at))
	fi
}

@test "gafreeze hold around a QMP backup job gives a clean point-in-time image and thaws right after" {
	shared_guest
	truncate -s 64M "$WD/backup.raw"
	cat >"$WD/backup.qmp" <<-END
	blockdev-add driver=raw node-name=backup0 file.driver=file file.filename=$WD/backup.raw
	blockdev-backup job-id=job0 device=drive-virtio0 target=backup0 sync=full
	END
	run --separate-stderr gafreeze -s "$GQGA" -t 20 --max 30 --json hold -- \
		qmpctl -s "$GQMP" -t 60 -w BLOCK_JOB_COMPLETED -m device=job0 -f "$WD/backup.qmp"
	assert_success
	assert_equal "${lines[0]}${lines[1]}" '{}{}'
	assert_equal "$(jq -r '.event + " " + .data.device' <<<"${lines[2]}")" 'BLOCK_JOB_COMPLETED job0'
	assert_equal "$(jq -c '[.frozen, .thawed, .thaw_ok, .max_reached]' <<<"${lines[3]}")" '[1,1,true,false]'
	run gafreeze -s "$GQGA" status
	assert_output thawed
	counter_moves_past "$(guest_counter "$GWD")"
	qmpctl -s "$GQMP" blockdev-del node-name=backup0
	run clean_ext4 "$WD/backup.raw"
	assert_success
}

@test "gafreeze hold SIGKILLed while the guest is frozen: the watchdog thaws the guest within --max" {
	shared_guest
	# shellcheck disable=SC2016 # expanded by the inner sh
	gafreeze -s "$GQGA" -t 20 --max 8 hold -- sh -c 'echo $$ >"$1"; exec sleep 60' sh "$WD/orphan.pid" \
		>"$WD/out" 2>"$WD/err" 3>&- &
	echo $! >"$WD/gafreeze.pid"
	for _ in $(seq 100); do [ -s "$WD/orphan.pid" ] && break; sleep 0.1; done
	[ -s "$WD/orphan.pid" ]
	sleep 0.5
	frozen_at=$(guest_counter "$GWD")
	sleep 1
	assert_equal "$(guest_counter "$GWD")" "$frozen_at"
	kill -KILL "$(cat "$WD/gafreeze.pid")"
	start=$(date +%s%N)
	counter_moves_past "$frozen_at"
	elapsed=$((($(date +%s%N) - start) / 1000000))
	((elapsed < 8000))
	run gafreeze -s "$GQGA" -t 20 status
	assert_output thawed
	run cat "$WD/err"
	assert_output "gafreeze: watchdog: gafreeze is gone; thawing the guest"
}
