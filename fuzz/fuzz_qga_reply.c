/* fuzz-sources: fuzz/peer.c */
/*
 * What a guest agent sends (a guest controls its agent's answers), played by fuzz/peer.c
 * after a control byte (peer.h), into the agent client gafreeze and qmpctl -a use: qga_open,
 * then the calls of a gafreeze run through qga_execute, each resyncing when the stream is
 * unsynced (0xFF, guest-sync-delimited, skipping through the next 0xFF, ids compared).
 * Must neither crash nor hang: when the peer ends with EOF, running into the deadline instead
 * is a hang, and aborts.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "peer.h"
#include "qga.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * qga.c draws each guest-sync-delimited id from getrandom(). While an input runs, the ids
 * are 1, 2, 3, ... instead, so that an input can answer a resync ("\xff{"return": 1}") as
 * the agent would; everything else gets the kernel's random bytes.
 */
static bool counting_ids;
static uint64_t next_id;

ssize_t getrandom(void *buf, size_t len, unsigned int flags)
{
	uint64_t v;

	if (!counting_ids || len != sizeof(v))
		return syscall(SYS_getrandom, buf, len, flags);
	v = next_id++; /* random_id() adds 1 */
	memcpy(buf, &v, sizeof(v));
	return (ssize_t)len;
}

static const char *const commands[] = {
	"guest-ping",          "guest-fsfreeze-status", "guest-fsfreeze-freeze",
	"guest-fsfreeze-thaw", "guest-fsfreeze-status",
};

/*
 * Each wait: with EOF at the end, long (only a hang reaches it: abort). With the connection
 * left open, 10 ms the first time; once a wait has timed out, everything the peer sent has
 * been read, so later calls only get what is buffered already: an expired deadline.
 */
static deadline_t next_deadline(const struct fuzz_peer *p, bool timed_out)
{
	if (!p->keep_open)
		return deadline_in(5.0);
	return timed_out ? monotonic_ms() : deadline_in(0.01);
}

static void run_session(struct qmp *q, const struct fuzz_peer *p)
{
	bool timed_out = false;
	enum qmp_status st;

	st = qga_open(q, fuzz_peer_path(), next_deadline(p, false));
	if (st != QMP_OK)
		return;
	/* gafreeze goes on after a timeout (resyncing first), so does this. */
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		json_t *cmd = qmp_command(commands[i], NULL), *reply = NULL;

		st = qga_execute(q, cmd, next_deadline(p, timed_out), &reply);
		json_decref(cmd);
		if (st == QMP_OK)
			(void)json_string_value(json_object_get(reply, "return"));
		json_decref(reply);
		if (st == QMP_TIMEOUT && !p->keep_open)
			abort(); /* the stream had ended: the client missed the EOF */
		timed_out = timed_out || st == QMP_TIMEOUT;
	}
	/* qmpctl -a's prompt after an interrupted command: an explicit resync. */
	qga_mark_unsynced(q);
	st = qga_resync(q, next_deadline(p, timed_out));
	if (st == QMP_TIMEOUT && !p->keep_open)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_peer peer;
	struct qmp q;

	if (!fuzz_peer_start(&peer, data, size))
		return 0;
	next_id = 0;
	counting_ids = true;
	run_session(&q, &peer);
	counting_ids = false;
	qmp_close(&q);
	fuzz_peer_finish(&peer);
	return 0;
}
