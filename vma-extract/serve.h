/* vma-extract --serve: the disks of an archive as read-only NBD exports (common/nbd_server.h),
 * read at random through an index built in one pass over the archive. */
#ifndef VMA_EXTRACT_SERVE_H
#define VMA_EXTRACT_SERVE_H
#include "meter.h"
#include "nbd_server.h"

struct served;

/* The archive (a file, or "-") opened and indexed, ready to serve; an incremental one with its
 * chain (chain_open: bases are the --base files), as the VM was at that backup. Exits 1 when
 * a link is missing, does not fit, cannot be read or is damaged (after saying why). */
struct served *served_open(const char *archive, char *const *bases, int nbases,
			   enum meter_mode meter_mode);
/* Its devices served by nbd_serve (see there for listen_fd, client_fd, the result and err),
 * until stop_fd is readable or, without listen_fd, client_fd's client is gone. */
int served_serve(struct served *sv, int listen_fd, int client_fd, int stop_fd,
		 const struct nbd_timeouts *timeouts, char *err, size_t errlen);
void served_free(struct served *sv);

/* Serves archive (a file, or "-"; with bases, as served_open) on socket: a path, created with mode 0600 and removed at the
 * end, or "fd:N", an inherited listening socket. Runs until SIGTERM or SIGINT; returns the
 * exit status (0 then), after printing why on failure. */
int serve_archive(const char *archive, char *const *bases, int nbases, const char *socket,
		  enum meter_mode meter_mode);

#endif
