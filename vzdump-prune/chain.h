/* Incremental backups and the backups they are built on. */
#ifndef VZDUMP_PRUNE_CHAIN_H
#define VZDUMP_PRUNE_CHAIN_H

#include <stddef.h>

#include "backup.h"

/*
 * After mark_backups, over the same sorted LIST: every incremental that stays (kept or
 * protected) keeps its chain. Each backup of the chain marked remove is kept instead, with
 * WHY_NEEDED and needed_by. An incremental the policy or a marker keeps whose chain has no
 * full gets broken_chain set.
 */
void keep_chains(struct backup *list, size_t n);

#endif
