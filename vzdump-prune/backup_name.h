/* Recognising vzdump's archive names. */
#ifndef VZDUMP_PRUNE_BACKUP_NAME_H
#define VZDUMP_PRUNE_BACKUP_NAME_H

#include <stdbool.h>

#include "backup.h"

/*
 * Fills *b from the file name NAME (which is not copied: b->name is set to NAME).
 * Returns false when NAME is no QEMU backup archive at all (such files are never touched).
 * Returns true for an archive; b->standard says whether the VMID and time could be read,
 * and if so b->ctime and b->period are set from the name taken as local wall-clock time, and
 * b->incremental says whether it is an incremental (".inc.vma[.EXT]").
 */
bool backup_name_parse(char *name, struct backup *b);

#endif
