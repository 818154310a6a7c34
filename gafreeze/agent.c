/* gafreeze's side of the agent connection: one request at a time, each bounded by -t,
 * reconnecting when the agent dropped us. */
#include <stdio.h>
#include <string.h>

#include "gafreeze.h"
#include "qga.h"

void agent_init(struct agent *a, const char *path, double timeout)
{
	memset(a, 0, sizeof(*a));
	a->path = path;
	a->timeout = timeout;
}

void agent_close(struct agent *a)
{
	if (a->connected)
		qmp_close(&a->q);
	a->connected = false;
}

int agent_call(struct agent *a, const char *name, json_t *args, deadline_t ceiling, json_t **ret)
{
	deadline_t d = deadline_min(deadline_in(a->timeout), ceiling);
	json_t *cmd = qmp_command(name, args), *reply = NULL;
	enum qmp_status st;

	*ret = NULL;
	if (!a->connected) {
		st = qga_open(&a->q, a->path, d);
		if (st != QMP_OK) {
			snprintf(a->why, sizeof(a->why), "%s: %s", a->path, a->q.why);
			qmp_close(&a->q);
			json_decref(cmd);
			return EXIT_PEER;
		}
		a->connected = true;
	}
	st = qga_execute(&a->q, cmd, d, &reply);
	json_decref(cmd);
	if (st == QMP_OK) {
		*ret = json_incref(json_object_get(reply, "return"));
		json_decref(reply);
		return EXIT_OK;
	}
	json_decref(reply);
	if (st == QMP_ERROR) {
		snprintf(a->why, sizeof(a->why), "%s: %s", name, a->q.why);
		return EXIT_FAIL;
	}
	snprintf(a->why, sizeof(a->why), "%s: %s", a->path, a->q.why);
	if (st != QMP_TIMEOUT)
		agent_close(a); /* dropped or garbled: start afresh next time */
	return EXIT_PEER;
}

int agent_status(struct agent *a, deadline_t ceiling, const char **status)
{
	static char text[32];
	json_t *ret;
	int r = agent_call(a, "guest-fsfreeze-status", NULL, ceiling, &ret);

	if (r != EXIT_OK)
		return r;
	snprintf(text, sizeof(text), "%s", json_is_string(ret) ? json_string_value(ret) : "?");
	json_decref(ret);
	*status = text;
	return EXIT_OK;
}
