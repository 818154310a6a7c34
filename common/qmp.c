/* QMP connections (see qmp.h). */
#include "qmp_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "unixsock.h"

enum qmp_status qmp_fail(struct qmp *q, enum qmp_status st, const char *fmt, ...)
{
	char text[sizeof(q->why)];
	va_list ap;

	/* Callers often pass q->why itself as an argument ("%s: %s", name, q->why): format
	 * into a copy, since vsnprintf into its own source is undefined (and garbles it). */
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	memcpy(q->why, text, sizeof(q->why));
	return st;
}

/* Maps a framing failure to a status and a message naming what we were waiting for. */
static enum qmp_status framing_failure(struct qmp *q, enum jsonline_status st, json_t *bad)
{
	switch (st) {
	case JSONLINE_TIMEOUT:
		return qmp_fail(q, QMP_TIMEOUT, "timed out");
	case JSONLINE_EOF:
		return qmp_fail(q, QMP_DROPPED, "connection closed by the peer");
	case JSONLINE_WOKEN:
		return qmp_fail(q, QMP_WOKEN, "interrupted");
	case JSONLINE_BADJSON:
		return qmp_fail(q, QMP_PROTOCOL, "not a JSON object from the peer: %.200s",
				json_string_value(bad));
	default:
		return qmp_fail(q, QMP_DROPPED, "%s", jsonline_strstatus(&q->jl, st));
	}
}

enum qmp_status qmp_send(struct qmp *q, const char *prefix, json_t *obj, const int *fds,
			 size_t nfds, deadline_t d)
{
	enum jsonline_status st = jsonline_write(&q->jl, prefix, obj, fds, nfds, d);

	if (st == JSONLINE_OK)
		return QMP_OK;
	if (st == JSONLINE_TIMEOUT)
		return qmp_fail(q, QMP_TIMEOUT, "timed out sending");
	return framing_failure(q, st, NULL);
}

enum qmp_status qmp_receive(struct qmp *q, deadline_t d, json_t **msg)
{
	enum jsonline_status st = jsonline_read(&q->jl, d, msg);
	enum qmp_status r;

	if (st == JSONLINE_OK)
		return QMP_OK;
	r = framing_failure(q, st, st == JSONLINE_BADJSON ? *msg : NULL);
	if (st == JSONLINE_BADJSON)
		json_decref(*msg);
	*msg = NULL;
	return r;
}

json_t *qmp_command(const char *name, json_t *args)
{
	json_t *cmd = json_pack("{s:s}", "execute", name);

	if (args)
		json_object_set_new(cmd, "arguments", args);
	return cmd;
}

const char *qmp_error_text(json_t *reply)
{
	static char text[1024];
	json_t *error = json_object_get(reply, "error");
	const char *cls = json_string_value(json_object_get(error, "class"));
	const char *desc = json_string_value(json_object_get(error, "desc"));

	snprintf(text, sizeof(text), "%s: %s", cls ? cls : "GenericError",
		 desc ? desc : "(no description)");
	return text;
}

static const char *command_name(json_t *cmd)
{
	const char *name = json_string_value(json_object_get(cmd, "execute"));

	return name ? name : "command";
}

enum qmp_status qmp_execute(struct qmp *q, json_t *cmd, const int *fds, size_t nfds, deadline_t d,
			    json_t **reply)
{
	json_t *sent = json_copy(cmd);
	char id[32];
	enum qmp_status st;

	*reply = NULL;
	snprintf(id, sizeof(id), "vz-%lu", q->seq++);
	json_object_set_new(sent, "id", json_string(id));
	st = qmp_send(q, NULL, sent, fds, nfds, d);
	json_decref(sent);
	if (st != QMP_OK)
		return qmp_fail(q, st, "%s: %s", command_name(cmd), q->why);
	for (;;) {
		json_t *msg = NULL, *msg_id;

		st = qmp_receive(q, d, &msg);
		if (st != QMP_OK) {
			const char *what = st == QMP_TIMEOUT ? "timed out waiting for the reply"
							     : q->why;
			char copy[sizeof(q->why)];

			snprintf(copy, sizeof(copy), "%s", what);
			return qmp_fail(q, st, "%s: %s", command_name(cmd), copy);
		}
		if (json_object_get(msg, "event")) {
			json_array_append_new(q->events, msg);
			continue;
		}
		msg_id = json_object_get(msg, "id");
		/* An error without id is QEMU refusing the request before reading its id. */
		if ((msg_id && json_is_string(msg_id) &&
		     strcmp(json_string_value(msg_id), id) == 0) ||
		    (!msg_id && json_object_get(msg, "error"))) {
			json_object_del(msg, "id");
			*reply = msg;
			if (json_object_get(msg, "return"))
				return QMP_OK;
			if (json_object_get(msg, "error"))
				return qmp_fail(q, QMP_ERROR, "%s", qmp_error_text(msg));
			json_decref(msg);
			*reply = NULL;
			return qmp_fail(q, QMP_PROTOCOL, "%s: reply with neither return nor error",
					command_name(cmd));
		}
		/* The greeting repeated, or a reply to someone else's id: not ours, drop it. */
		json_decref(msg);
	}
}

enum qmp_status qmp_next_event(struct qmp *q, deadline_t d, json_t **event)
{
	*event = NULL;
	while (json_array_size(q->events) == 0) {
		json_t *msg = NULL;
		enum qmp_status st = qmp_receive(q, d, &msg);

		if (st != QMP_OK)
			return st;
		if (json_object_get(msg, "event"))
			json_array_append_new(q->events, msg);
		else
			json_decref(msg); /* a late reply nobody waits for */
	}
	*event = json_incref(json_array_get(q->events, 0));
	json_array_remove(q->events, 0);
	return QMP_OK;
}

enum qmp_status qmp_connect(struct qmp *q, const char *path, deadline_t d)
{
	int fd;

	memset(q, 0, sizeof(*q));
	q->path = path;
	q->events = json_array();
	jsonline_init(&q->jl, -1);
	fd = unixsock_connect(path, d);
	if (fd < 0) {
		if (errno == ETIMEDOUT)
			return qmp_fail(q, QMP_TIMEOUT, "connect: timed out");
		return qmp_fail(q, QMP_DROPPED, "connect: %s", strerror(errno));
	}
	q->jl.fd = fd;
	return QMP_OK;
}

enum qmp_status qmp_open(struct qmp *q, const char *path, deadline_t d)
{
	json_t *greeting = NULL, *reply = NULL, *negotiate;
	enum qmp_status st = qmp_connect(q, path, d);

	if (st != QMP_OK)
		return st;
	st = qmp_receive(q, d, &greeting);
	if (st != QMP_OK) {
		if (st == QMP_TIMEOUT)
			return qmp_fail(q, st,
					"timed out waiting for the QMP greeting "
					"(another client connected, or QEMU not running?)");
		return qmp_fail(q, st, "reading the QMP greeting: %.400s", q->why);
	}
	if (!json_object_get(greeting, "QMP")) {
		json_decref(greeting);
		return qmp_fail(q, QMP_PROTOCOL,
				"no QMP greeting (is this a guest-agent "
				"socket? try -a)");
	}
	q->greeting = greeting;
	negotiate = qmp_command("qmp_capabilities", NULL);
	st = qmp_execute(q, negotiate, NULL, 0, d, &reply);
	json_decref(negotiate);
	json_decref(reply);
	return st;
}

void qmp_close(struct qmp *q)
{
	if (q->jl.fd >= 0)
		close(q->jl.fd);
	q->jl.fd = -1;
	jsonline_free(&q->jl);
	json_decref(q->events);
	json_decref(q->greeting);
	q->events = q->greeting = NULL;
}
