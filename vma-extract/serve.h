/* vma-extract --serve: the disks of an archive as read-only NBD exports (common/nbd_server.h),
 * read at random through an index built in one pass over the archive. */
#ifndef VMA_EXTRACT_SERVE_H
#define VMA_EXTRACT_SERVE_H
#include "meter.h"

/* Serves archive (a file, or "-") on socket: a path, created with mode 0600 and removed at the
 * end, or "fd:N", an inherited listening socket. Runs until SIGTERM or SIGINT; returns the
 * exit status (0 then), after printing why on failure. */
int serve_archive(const char *archive, const char *socket, enum meter_mode meter_mode);

#endif
