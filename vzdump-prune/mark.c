/*
 * The marking follows pve-storage's prune_mark_backup_group exactly, because people moving
 * between Proxmox and these tools must get the same survivors:
 *   - rules run in a fixed order (last, hourly, daily, weekly, monthly, yearly), each newest
 *     first over the backups that no earlier rule marked;
 *   - a period that already holds a backup kept by an earlier rule is skipped, and its
 *     backups are left for the coarser rules;
 *   - a rule keeps the newest backup of each new period and stops at its N+1-th period;
 *   - an older backup in a period the rule has just taken is marked remove for good;
 *   - protected and renamed entries are never counted and never cover a period;
 *   - whatever is still unmarked at the end is removed.
 */
#include <stdlib.h>
#include <string.h>

#include "mark.h"
#include "period_set.h"

static int compare_backups(const void *pa, const void *pb)
{
	const struct backup *a = pa, *b = pb;

	if (a->standard != b->standard)
		return a->standard ? -1 : 1;
	if (a->standard) {
		if (a->vmid != b->vmid)
			return a->vmid < b->vmid ? -1 : 1;
		if (a->ctime != b->ctime)
			return a->ctime > b->ctime ? -1 : 1;
	}
	return strcmp(a->name, b->name);
}

void sort_backups(struct backup *list, size_t n)
{
	if (n > 1)
		qsort(list, n, sizeof(*list), compare_backups);
}

/* One rule over one group (newest first), as pve-storage's $prune_mark. */
static void mark_rule(struct backup *group, size_t n, enum rule rule, unsigned limit,
		      struct period_set *already, struct period_set *taken)
{
	size_t i;
	unsigned count = 0;

	period_set_clear(already);
	period_set_clear(taken);
	for (i = 0; i < n; i++)
		if (group[i].mark == MARK_KEEP)
			period_set_add(already, group[i].period[rule]);

	for (i = 0; i < n; i++) {
		struct backup *b = &group[i];
		int64_t id = b->period[rule];

		if (b->mark != MARK_NONE)
			continue;
		b->rule = rule;
		if (period_set_contains(already, id)) {
			b->why = WHY_COVERED; /* final only if no later rule takes it */
			continue;
		}
		if (!period_set_contains(taken, id)) {
			if (count >= limit)
				break;
			period_set_add(taken, id);
			b->mark = MARK_KEEP;
			b->why = WHY_RULE;
			b->count = ++count;
			b->limit = limit;
		} else {
			b->mark = MARK_REMOVE;
			b->why = WHY_DUPLICATE;
		}
	}
	/* The rule stopped here: nothing older was looked at by it. */
	for (; i < n; i++) {
		if (group[i].mark == MARK_NONE) {
			group[i].rule = rule;
			group[i].why = WHY_BEYOND;
		}
	}
}

static void keep_everything(struct backup *group, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (group[i].mark == MARK_NONE) {
			group[i].mark = MARK_KEEP;
			group[i].why = WHY_KEEP_ALL;
		}
	}
}

static bool mark_group(struct backup *group, size_t n, const struct policy *p)
{
	struct period_set already, taken;

	if (p->keep_all || policy_keeps_all(p)) {
		keep_everything(group, n);
		return true;
	}
	if (!period_set_init(&already, n))
		return false;
	if (!period_set_init(&taken, n)) {
		period_set_free(&already);
		return false;
	}
	for (int r = 0; r < RULE_COUNT; r++)
		if (p->keep[r] > 0)
			mark_rule(group, n, (enum rule)r, p->keep[r], &already, &taken);
	/* The last rule left each remaining entry's reason: covered or beyond it. */
	for (size_t i = 0; i < n; i++)
		if (group[i].mark == MARK_NONE)
			group[i].mark = MARK_REMOVE;
	period_set_free(&already);
	period_set_free(&taken);
	return true;
}

bool mark_backups(struct backup *list, size_t n, const struct policy *p)
{
	size_t start = 0;

	while (start < n && list[start].standard) {
		size_t end = start + 1;

		while (end < n && list[end].standard && list[end].vmid == list[start].vmid)
			end++;
		if (!mark_group(list + start, end - start, p))
			return false;
		start = end;
	}
	return true;
}
