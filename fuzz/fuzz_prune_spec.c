/* fuzz-sources: vzdump-prune/policy.c vzdump-prune/rule.c */
/*
 * vzdump-prune's retention settings: the input, split at NUL bytes, is a list of specs as
 * --prune-backups, --check and vzdump.sh's prune-backups setting take them
 * (policy_parse_string, policy_check), and of counts as --keep-* takes them
 * (policy_parse_count). A count is accepted exactly when it is all decimal digits; a spec
 * that parsed, written back as KEY=VALUE pairs, parses to the same policy.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_count(const char *text)
{
	size_t digits = strspn(text, "0123456789");
	bool all_digits = digits > 0 && text[digits] == '\0';
	unsigned count = 0;
	bool ok = policy_parse_count(text, &count);

	if (ok != all_digits)
		abort();
	if (ok) {
		unsigned long long v = strtoull(text, NULL, 10);

		/* strtoull saturates at ULLONG_MAX, which is above UINT_MAX too. */
		if (count != (v > UINT_MAX ? UINT_MAX : (unsigned)v))
			abort();
	}
}

static void check_round_trip(const struct policy *p, const struct policy_given *given)
{
	char text[256], err[256];
	size_t len = 0;
	struct policy again = {0};
	struct policy_given again_given = {0};

	if (given->keep_all)
		len += (size_t)snprintf(text + len, sizeof(text) - len, "keep-all=%d,",
					p->keep_all ? 1 : 0);
	for (int r = 0; r < RULE_COUNT; r++)
		if (given->keep[r])
			len += (size_t)snprintf(text + len, sizeof(text) - len, "%s=%u,",
						rule_option((enum rule)r), p->keep[r]);
	if (!policy_parse_string(text, &again, &again_given, err, sizeof(err)) ||
	    again.keep_all != p->keep_all || again_given.keep_all != given->keep_all)
		abort();
	for (int r = 0; r < RULE_COUNT; r++)
		if (again.keep[r] != p->keep[r] || again_given.keep[r] != given->keep[r])
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1), err[256];

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	for (size_t start = 0; start <= size;) {
		const char *text = copy + start;
		struct policy p = {0};
		struct policy_given given = {0};

		err[0] = '\0';
		if (policy_parse_string(text, &p, &given, err, sizeof(err))) {
			(void)policy_check(&p, err, sizeof(err));
			(void)policy_keeps_all(&p);
			check_round_trip(&p, &given);
		} else if (err[0] == '\0') {
			abort(); /* refused without saying why */
		}
		check_count(text);
		start += strlen(text) + 1;
	}
	free(copy);
	return 0;
}
