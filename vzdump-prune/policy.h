/* The prune-backups policy: keep-all and the six keep-* counts. */
#ifndef VZDUMP_PRUNE_POLICY_H
#define VZDUMP_PRUNE_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "backup.h"

struct policy {
	bool keep_all;
	unsigned keep[RULE_COUNT]; /* 0 = rule not used */
};

/* Which fields were given, so that single options can override the property string. */
struct policy_given {
	bool keep_all;
	bool keep[RULE_COUNT];
};

/* Reads a count for --keep-*: a decimal integer >= 0; above UINT_MAX it is UINT_MAX. */
bool policy_parse_count(const char *text, unsigned *count);

/*
 * Reads Proxmox's property-string form, e.g. "keep-last=3,keep-daily=7" or "keep-all=1",
 * into *p and records which keys appeared in *given. Empty items are skipped, as Proxmox
 * does, but a string without any KEY=VALUE is refused. On error writes a message to ERR.
 */
bool policy_parse_string(const char *text, struct policy *p, struct policy_given *given, char *err,
			 size_t err_size);

/* Refuses keep-all together with a positive keep-* count, as Proxmox does; message in ERR. */
bool policy_check(const struct policy *p, char *err, size_t err_size);

/* True when no keep-* count is positive: then everything is kept. */
bool policy_keeps_all(const struct policy *p);

#endif
