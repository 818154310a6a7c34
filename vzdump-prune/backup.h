/* A backup found in the dump directory, and the decision taken about it. */
#ifndef VZDUMP_PRUNE_BACKUP_H
#define VZDUMP_PRUNE_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* The retention rules, in the order Proxmox runs them: finest period first. */
enum rule {
	RULE_LAST,
	RULE_HOURLY,
	RULE_DAILY,
	RULE_WEEKLY,
	RULE_MONTHLY,
	RULE_YEARLY,
	RULE_COUNT
};

enum mark {
	MARK_NONE, /* not decided yet; whatever is left at the end is removed */
	MARK_KEEP,
	MARK_REMOVE,
	MARK_PROTECTED,
	MARK_RENAMED
};

/* Why a backup got its mark; together with rule/count it makes the report's last column. */
enum why {
	WHY_NONE,
	WHY_RULE,      /* kept by `rule` as its count-th period */
	WHY_KEEP_ALL,  /* no rule asks for anything: everything is kept */
	WHY_DUPLICATE, /* an older backup in a period `rule` has already taken */
	WHY_COVERED,   /* its period (for `rule`) already holds a backup kept by an earlier rule */
	WHY_BEYOND,    /* `rule` had taken all its periods before reaching it */
	WHY_PROTECTED, /* a NAME.protected marker exists */
	WHY_RENAMED,   /* looks like a backup, but the name is not vzdump's standard one */
	WHY_NEEDED     /* in the chain of `needed_by`, an incremental that stays (chain.c) */
};

#define VMID_UNKNOWN (-1L)

struct backup {
	char *name;       /* file name inside DUMPDIR */
	size_t stem_len;  /* length without "[.inc].vma[.EXT]": the .log companion's base name */
	long vmid;        /* VMID_UNKNOWN when the name does not carry one */
	bool standard;    /* vzdump-qemu-VMID-YYYY_MM_DD-HH_MM_SS[.inc].vma[.EXT] */
	bool incremental; /* standard, with ".inc": made on the VMID's next older backup */
	time_t ctime;     /* backup time read from the name as local wall clock */
	int64_t period[RULE_COUNT]; /* period id per rule, from the broken-down local time */

	enum mark mark;
	enum why why;
	enum rule rule;
	unsigned count; /* with WHY_RULE: this is period `count` of `limit` */
	unsigned limit;
	const char *needed_by; /* with WHY_NEEDED: the name of the incremental that needs it */
	bool broken_chain; /* an incremental kept by the policy or a marker: no full in its chain */
};

/* Name of a rule as an option, e.g. "keep-daily" (rule.c). */
const char *rule_option(enum rule r);

#endif
