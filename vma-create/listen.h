/* vma-create --listen: devices arrive over NBD, pushed by QEMU's backup job or any NBD client. */
#ifndef VMA_CREATE_LISTEN_H
#define VMA_CREATE_LISTEN_H
#include "nbd_server.h"
#include "progress.h"
#include "vma_writer.h"

/* Listens on a unix socket at path (mode 0600; it appears only once it accepts connections),
 * serves one write-only export per device of w, named after it, until every cluster of every
 * device has arrived and the clients are gone. 0, or -1 after printing why (NBD_SERVE_TIMEOUT
 * when a client, or the wait for one, timed out). The socket is removed in any case.
 * throttle (or NULL) paces the clients, all of them together: the data they write counts
 * against it, their zero writes do not. */
int serve_devices(struct vma_writer *w, const char *path, const struct nbd_timeouts *timeouts,
		  struct progress *progress, struct throttle *throttle);

/* The same service on sockets already open (see nbd_serve for listen_fd, client_fd and
 * timeouts): 0, or -1 or NBD_SERVE_TIMEOUT with why in err. */
int serve_devices_on(struct vma_writer *w, int listen_fd, int client_fd,
		     const struct nbd_timeouts *timeouts, struct progress *progress,
		     struct throttle *throttle, char *err, size_t errlen);

#endif
