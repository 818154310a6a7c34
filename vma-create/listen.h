/* vma-create --listen: devices arrive over NBD, pushed by QEMU's backup job or any NBD client. */
#ifndef VMA_CREATE_LISTEN_H
#define VMA_CREATE_LISTEN_H
#include "progress.h"
#include "vma_writer.h"

/* Listens on a unix socket at path (mode 0600; it appears only once it accepts connections),
 * serves one write-only export per device of w, named after it, until every cluster of every
 * device has arrived and the clients are gone. 0, or -1 after printing why. The socket is
 * removed in any case. */
int serve_devices(struct vma_writer *w, const char *path, struct progress *progress);

/* The same service on sockets already open (see nbd_serve for listen_fd, client_fd and
 * idle_timeout_ms): 0, or -1 with why in err. */
int serve_devices_on(struct vma_writer *w, int listen_fd, int client_fd, int idle_timeout_ms,
		     struct progress *progress, char *err, size_t errlen);

#endif
