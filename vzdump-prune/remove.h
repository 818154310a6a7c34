/* Removing a pruned backup and its companions, safely, inside the dump directory. */
#ifndef VZDUMP_PRUNE_REMOVE_H
#define VZDUMP_PRUNE_REMOVE_H

#include <stdbool.h>

#include "backup.h"

/*
 * Removes B's archive, then its .log (unless KEEP_LOG), .notes and .sha256, relative to the
 * directory DIR_FD. Refuses a protected backup and anything that is not a regular file. Reports
 * failures with warn(3); returns false if anything could not be removed.
 */
bool remove_backup(int dir_fd, const struct backup *b, bool keep_log);

#endif
