/* Reading the dump directory into a list of backups. */
#ifndef VZDUMP_PRUNE_SCAN_H
#define VZDUMP_PRUNE_SCAN_H

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>

#include "backup.h"

struct backup_list {
	struct backup *items;
	size_t count;
};

/*
 * Lists the QEMU backup archives in DIR (of VMID only, unless it is VMID_UNKNOWN), with
 * protected and renamed entries already marked. Returns false with errno set on failure.
 */
bool scan_dumpdir(DIR *dir, long vmid, struct backup_list *out);
void backup_list_free(struct backup_list *list);

#endif
