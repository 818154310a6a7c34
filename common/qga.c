/* The guest-agent dialect (see qga.h). The agent's channel has no connection semantics: a
 * new client can inherit half-read input and unread output of an earlier one, hence the
 * resync before the first command and after every timeout. */
#include "qga.h"
#include "qmp_priv.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static json_int_t random_id(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
		v = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uint64_t)clock();
	/* Positive and exact in a double, so every JSON implementation echoes it intact. */
	return (json_int_t)(v & ((UINT64_C(1) << 52) - 1)) + 1;
}

enum qmp_status qga_open(struct qmp *q, const char *path, deadline_t d)
{
	enum qmp_status st = qmp_connect(q, path, d);

	q->need_sync = true;
	return st;
}

void qga_mark_unsynced(struct qmp *q) { q->need_sync = true; }

enum qmp_status qga_resync(struct qmp *q, deadline_t d)
{
	json_int_t id = random_id();
	json_t *sync = qmp_command("guest-sync-delimited", json_pack("{s:I}", "id", id));
	enum qmp_status st;

	q->need_sync = true;
	st = qmp_send(q, "\xff", sync, NULL, 0, d);
	json_decref(sync);
	if (st != QMP_OK)
		return qmp_fail(q, st, "guest-sync-delimited: %s", q->why);
	for (;;) {
		enum jsonline_status jst = jsonline_skip_through(&q->jl, 0xff, d);
		json_t *msg = NULL, *ret;

		if (jst == JSONLINE_TIMEOUT)
			return qmp_fail(q, QMP_TIMEOUT,
					"timed out waiting for guest-sync-delimited "
					"(is the agent running in the guest?)");
		if (jst != JSONLINE_OK)
			return qmp_fail(q, QMP_DROPPED, "guest-sync-delimited: %s",
					jsonline_strstatus(&q->jl, jst));
		st = qmp_receive(q, d, &msg);
		if (st == QMP_PROTOCOL)
			continue; /* noise after a stray 0xFF: look for the next one */
		if (st != QMP_OK)
			return qmp_fail(q, st, "guest-sync-delimited: %s",
					st == QMP_TIMEOUT ? "timed out" : q->why);
		ret = json_object_get(msg, "return");
		if (json_is_integer(ret) && json_integer_value(ret) == id) {
			json_decref(msg);
			q->need_sync = false;
			return QMP_OK;
		}
		json_decref(msg); /* the answer to an older sync: keep looking */
	}
}

enum qmp_status qga_execute(struct qmp *q, json_t *cmd, deadline_t d, json_t **reply)
{
	const char *name = json_string_value(json_object_get(cmd, "execute"));
	enum qmp_status st;

	*reply = NULL;
	if (!name)
		name = "command";
	if (q->need_sync) {
		st = qga_resync(q, d);
		if (st != QMP_OK)
			return st;
	}
	st = qmp_send(q, NULL, cmd, NULL, 0, d);
	if (st != QMP_OK) {
		q->need_sync = true;
		return qmp_fail(q, st, "%s: %s", name, q->why);
	}
	for (;;) {
		json_t *msg = NULL;

		st = qmp_receive(q, d, &msg);
		if (st != QMP_OK) {
			char copy[sizeof(q->why)];

			q->need_sync = true;
			snprintf(copy, sizeof(copy), "%s",
				 st == QMP_TIMEOUT ? "timed out waiting for the agent's reply"
						   : q->why);
			return qmp_fail(q, st, "%s: %s", name, copy);
		}
		if (json_object_get(msg, "return")) {
			*reply = msg;
			return QMP_OK;
		}
		if (json_object_get(msg, "error")) {
			*reply = msg;
			return qmp_fail(q, QMP_ERROR, "%s", qmp_error_text(msg));
		}
		json_decref(msg);
	}
}
