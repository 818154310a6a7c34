/*
 * An incremental archive holds only what changed since the backup it was made on: the next
 * older backup of its VMID in the folder (vzdump.sh makes it on the VM's newest backup there),
 * full or incremental. Its chain is that parent, the parent's parent and so on, back to and
 * including the nearest older full. Archives of one time (the same backup in two formats) are
 * one step of a chain: each could be the one it was made on, so all of them are kept.
 *
 * The marking (mark.c) stays Proxmox's, incrementals counted as any backup; only then does
 * every incremental that stays keep its chain. A group is walked newest first, so the backup
 * that needs an older one is the first staying incremental whose chain reaches it. A chain
 * walked once is not walked again: an older incremental inside it has its chain inside it
 * too, so each group is one pass.
 */
#include <stdbool.h>

#include "chain.h"

static bool stays(const struct backup *b)
{
	return b->mark == MARK_KEEP || b->mark == MARK_PROTECTED;
}

static void need(struct backup *b, const struct backup *by)
{
	if (b->mark != MARK_REMOVE)
		return;
	b->mark = MARK_KEEP;
	b->why = WHY_NEEDED;
	b->needed_by = by->name;
}

/* One VMID's backups, newest first. */
static void keep_group_chains(struct backup *group, size_t n)
{
	size_t reach = 0;       /* the chains walked so far cover group[0 .. reach) */
	bool reach_full = true; /* ... and end at a full, not at the oldest backup */

	for (size_t i = 0; i < n; i++) {
		struct backup *b = &group[i];
		size_t j = i + 1;

		if (!b->incremental || !stays(b))
			continue;
		if (i >= reach) {
			/* Its own time's other archives are not its parents. */
			while (j < n && group[j].ctime == b->ctime)
				j++;
			reach_full = false;
			while (j < n && !reach_full) {
				time_t step = group[j].ctime;

				for (; j < n && group[j].ctime == step; j++) {
					need(&group[j], b);
					reach_full = reach_full || !group[j].incremental;
				}
			}
			reach = j;
		}
		if (!reach_full && b->why != WHY_NEEDED)
			b->broken_chain = true;
	}
}

void keep_chains(struct backup *list, size_t n)
{
	size_t start = 0;

	while (start < n && list[start].standard) {
		size_t end = start + 1;

		while (end < n && list[end].standard && list[end].vmid == list[start].vmid)
			end++;
		keep_group_chains(list + start, end - start);
		start = end;
	}
}
