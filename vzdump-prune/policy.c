/* Parsing the prune-backups settings the way Proxmox's schema accepts them. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy.h"
#include "xalloc.h"

bool policy_parse_count(const char *text, unsigned *count)
{
	char *end;
	unsigned long v;

	if (text[0] < '0' || text[0] > '9')
		return false; /* also refuses signs and spaces, which strtoul would take */
	/*
	 * Proxmox's schema takes any integer >= 0. More periods than a 32-bit count can hold
	 * cannot hold backups anyway, so larger counts (even beyond unsigned long) are capped.
	 */
	errno = 0;
	v = strtoul(text, &end, 10);
	if (*end != '\0')
		return false;
	*count = errno == ERANGE || v > UINT_MAX ? UINT_MAX : (unsigned)v;
	return true;
}

/* Proxmox's boolean spellings. */
static bool parse_bool(const char *text, bool *value)
{
	static const char *const yes[] = {"1", "yes", "on", "true"};
	static const char *const no[] = {"0", "no", "off", "false"};

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*value = true;
			return true;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*value = false;
			return true;
		}
	}
	return false;
}

static bool parse_pair(char *pair, struct policy *p, struct policy_given *given, char *err,
		       size_t err_size)
{
	char *value = strchr(pair, '=');

	if (!value) {
		snprintf(err, err_size, "'%s' is not KEY=VALUE", pair);
		return false;
	}
	*value++ = '\0';
	if (strcmp(pair, "keep-all") == 0) {
		if (given->keep_all) {
			snprintf(err, err_size, "duplicate key '%s'", pair);
			return false;
		}
		if (!parse_bool(value, &p->keep_all)) {
			snprintf(err, err_size, "keep-all: '%s' is not a boolean", value);
			return false;
		}
		given->keep_all = true;
		return true;
	}
	for (int r = 0; r < RULE_COUNT; r++) {
		if (strcmp(pair, rule_option((enum rule)r)) != 0)
			continue;
		if (given->keep[r]) {
			snprintf(err, err_size, "duplicate key '%s'", pair);
			return false;
		}
		if (!policy_parse_count(value, &p->keep[r])) {
			snprintf(err, err_size, "%s: '%s' is not an integer >= 0", pair, value);
			return false;
		}
		given->keep[r] = true;
		return true;
	}
	snprintf(err, err_size, "unknown key '%s'", pair);
	return false;
}

bool policy_parse_string(const char *text, struct policy *p, struct policy_given *given, char *err,
			 size_t err_size)
{
	char *copy = xstrdup(text), *rest = copy, *pair;
	bool ok = true, any = false;

	while (ok && (pair = strsep(&rest, ","))) {
		if (pair[strspn(pair, " \t")] == '\0')
			continue; /* empty items are allowed, as in Proxmox */
		ok = parse_pair(pair, p, given, err, err_size);
		any = true;
	}
	free(copy);
	if (ok && !any) {
		snprintf(err, err_size,
			 "needs KEY=VALUE pairs, e.g. keep-last=3,keep-daily=7 or keep-all=1");
		return false;
	}
	return ok;
}

bool policy_check(const struct policy *p, char *err, size_t err_size)
{
	if (p->keep_all && !policy_keeps_all(p)) {
		snprintf(err, err_size, "keep-all cannot be set together with other options");
		return false;
	}
	return true;
}

bool policy_keeps_all(const struct policy *p)
{
	for (int r = 0; r < RULE_COUNT; r++)
		if (p->keep[r] > 0)
			return false;
	return true;
}
