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

/* In a folder others may write to, only the files of the user running us or of the folder's
 * owner count (on NFS with root squashed, root's files are the folder owner's): a backup or a
 * protection marker another user planted there (with a newer date, say) must not make root
 * remove the real backups, nor keep them for ever. Whether NAME in DIR_FD counts. */
bool file_counts(int dir_fd, const char *name);
void backup_list_free(struct backup_list *list);

#endif
