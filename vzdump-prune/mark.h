/* Proxmox's prune marking (prune_mark_backup_group in pve-storage), group by group. */
#ifndef VZDUMP_PRUNE_MARK_H
#define VZDUMP_PRUNE_MARK_H

#include <stdbool.h>
#include <stddef.h>

#include "backup.h"
#include "policy.h"

/*
 * Orders LIST for marking and for the report: standard names grouped by VMID (ascending),
 * newest first inside a group (equal times by name); non-standard names last, by name.
 */
void sort_backups(struct backup *list, size_t n);

/*
 * Marks every entry of the sorted LIST that is not already protected or renamed as keep or
 * remove, following policy P. Returns false when out of memory.
 */
bool mark_backups(struct backup *list, size_t n, const struct policy *p);

#endif
