/* The names of the retention rules, as options and as keys of --prune-backups. */
#include "backup.h"

const char *rule_option(enum rule r)
{
	static const char *const names[RULE_COUNT] = {
		"keep-last",   "keep-hourly",  "keep-daily",
		"keep-weekly", "keep-monthly", "keep-yearly",
	};

	return names[r];
}
