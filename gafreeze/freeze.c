/* Freeze and thaw with the checks a freeze needs: refuse a second freeze, trust the status
 * when the freeze reply is late, confirm every thaw, and retry a thaw until the ceiling. */
#include <err.h>
#include <string.h>

#include "gafreeze.h"

#define THAW_RETRY_MS 200

int freeze_guest(struct agent *a, char **mounts, int nmounts, deadline_t ceiling,
		 struct freeze_result *r)
{
	const char *status;
	json_t *args = NULL, *ret;
	const char *cmd = "guest-fsfreeze-freeze";
	int st, lost;

	r->sent = false;
	r->nfrozen = -1;
	r->sent_ms = 0;
	r->acked_ms = 0;
	st = agent_status(a, ceiling, &status);
	if (st != EXIT_OK) {
		warnx("%s", a->why);
		return st;
	}
	if (strcmp(status, "frozen") == 0) {
		warnx("the guest is already frozen (by another tool, or a run that died); "
		      "not freezing it again: check, then 'gafreeze thaw'");
		return GF_ALREADY_FROZEN;
	}
	if (nmounts > 0) {
		json_t *list = json_array();

		for (int i = 0; i < nmounts; i++)
			json_array_append_new(list, json_string(mounts[i]));
		args = json_pack("{s:o}", "mountpoints", list);
		cmd = "guest-fsfreeze-freeze-list";
	}
	r->sent = true;
	r->sent_ms = monotonic_ms();
	st = agent_call(a, cmd, args, ceiling, &ret);
	if (st == EXIT_OK) {
		r->acked_ms = monotonic_ms();
		r->nfrozen = json_is_integer(ret) ? (long)json_integer_value(ret) : -1;
		json_decref(ret);
		return EXIT_OK;
	}
	if (st == EXIT_FAIL) {
		warnx("%s", a->why);
		return st;
	}
	/* A late freeze: the agent answers requests in order, so a status reply means the
	 * freeze has finished one way or the other. Poll until the ceiling. */
	warnx("%s; asking the agent for its freeze status", a->why);
	lost = st;
	while (!deadline_passed(ceiling)) {
		st = agent_status(a, ceiling, &status);
		if (st == EXIT_OK && strcmp(status, "frozen") == 0) {
			r->acked_ms = monotonic_ms();
			warnx("the agent reports the guest frozen (filesystem count unknown)");
			return EXIT_OK;
		}
		if (st == EXIT_OK) {
			warnx("the freeze did not take effect: the agent reports '%s'", status);
			return lost;
		}
		if (st == EXIT_FAIL) {
			warnx("%s", a->why);
			return st;
		}
		deadline_sleep(THAW_RETRY_MS, ceiling);
	}
	warnx("%s: gave up waiting for the freeze", a->path);
	return EXIT_PEER;
}

/* Why the thaw is not confirmed, for the final report: a call cut short by our own ceiling
 * (the last attempt, started just before it) says less than what the agent did before, so it
 * replaces an earlier reason only when there is none. */
static void keep_reason(char *last, size_t len, const char *why, int attempts, deadline_t ceiling)
{
	if (attempts == 0 || !deadline_passed(ceiling))
		snprintf(last, len, "%s", why);
}

int thaw_guest(struct agent *a, deadline_t ceiling, struct thaw_result *r)
{
	char last[sizeof(a->why)] = "no attempt made";
	int attempts = 0;

	r->nthawed = -1;
	r->acked_ms = 0;
	do {
		const char *status;
		json_t *ret;
		bool answered;
		int st = agent_call(a, "guest-fsfreeze-thaw", NULL, ceiling, &ret);

		answered = st == EXIT_OK;
		if (answered) {
			r->nthawed = json_is_integer(ret) ? (long)json_integer_value(ret) : -1;
			r->acked_ms = monotonic_ms();
			json_decref(ret);
		} else {
			keep_reason(last, sizeof(last), a->why, attempts, ceiling);
		}
		/* The thaw's own answer is not enough (another tool may have frozen again, a
		 * hook may have failed): believe the status. */
		st = agent_status(a, ceiling, &status);
		if (st == EXIT_OK && strcmp(status, "thawed") == 0) {
			if (r->acked_ms == 0)
				r->acked_ms = monotonic_ms();
			return EXIT_OK;
		}
		if (st != EXIT_OK)
			keep_reason(last, sizeof(last), a->why, attempts, ceiling);
		else if (answered)
			snprintf(last, sizeof(last),
				 "guest-fsfreeze-thaw answered, but the agent "
				 "still reports '%s'",
				 status);
		if (attempts++ == 0 && !deadline_passed(ceiling))
			warnx("thaw not confirmed (%s); retrying", last);
		deadline_sleep(THAW_RETRY_MS, ceiling);
	} while (!deadline_passed(ceiling));
	warnx("THAW FAILED, THE GUEST MAY STILL BE FROZEN: %s", last);
	return GF_THAW_FAILED;
}
