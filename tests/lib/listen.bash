# shellcheck shell=bash
# vma-create --listen in the background, for the tests that push into it (SOCK: its socket;
# SERVER: its PID, killed by the file's teardown when still running).
# shellcheck disable=SC2034 # CODE is for the tests that load this

# Starts vma-create --listen in the background with the given arguments; waits for the socket.
# With BOUND set, the server is killed after that many seconds (status 124), so a server that
# would wait forever fails the test instead of hanging it.
serve() {
	local -a bound=()
	[ -z "${BOUND:-}" ] || bound=(timeout "$BOUND")
	"${bound[@]}" vma-create --listen "$SOCK" -o "${OUT:-out.vma}" "$@" 2>server.err 3>&- &
	SERVER=$!
	await_socket "$SOCK" "$SERVER"
}

# Waits for the server to end; sets CODE to its exit status.
server_result() {
	CODE=0
	wait "$SERVER" || CODE=$?
	SERVER=
}

uri() { echo "nbd+unix:///$1?socket=$SOCK"; }

# QEMU (started in ./vm) backs up each node NAME into the server's export NAME with its own
# backup job, all at once, at full speed; waits until they have concluded, asserts that they
# succeeded, then removes them and their targets. With PUSH_BITMAP set, only the clusters
# that bitmap of the node marks (sync=incremental: the bitmap is cleared on success).
qemu_push() { # NAME...
	local i=0 name jobs n expected='' sync='"sync":"full"'
	[ -z "${PUSH_BITMAP:-}" ] || sync="\"sync\":\"incremental\",\"bitmap\":\"$PUSH_BITMAP\""
	for name in "$@"; do
		qmp_raw vm "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"nbd\",\"node-name\":\"t$i\",\"server\":{\"type\":\"unix\",\"path\":\"$SOCK\"},\"export\":\"$name\"}}" >/dev/null
		qmp_raw vm "{\"execute\":\"blockdev-backup\",\"arguments\":{\"job-id\":\"j$i\",\"device\":\"$name\",\"target\":\"t$i\",$sync,\"auto-dismiss\":false}}" >/dev/null
		expected+="${expected:+,}{\"device\":\"j$i\",\"status\":\"concluded\",\"error\":null}"
		i=$((i + 1))
	done
	for ((n = 0; n < 1200; n++)); do
		jobs=$(qmp_raw vm '{"execute":"query-block-jobs"}')
		[ "$(jq '[.return[] | select(.status != "concluded")] | length' <<<"$jobs")" = 0 ] && break
		sleep 0.1
	done
	assert_equal "$(jq -c '[.return[] | {device, status, error}] | sort_by(.device)' <<<"$jobs")" "[$expected]"
	for ((i = 0; i < $#; i++)); do
		qmp_raw vm "{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":\"j$i\"}}" >/dev/null
		qmp_raw vm "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"t$i\"}}" >/dev/null
	done
}
