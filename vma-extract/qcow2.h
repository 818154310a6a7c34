/* --format qcow2: a disk restored into a qcow2 image through a qemu-nbd of our own. The image
 * is a file the caller has created (under its temporary name, O_EXCL, mode 0600); qemu-img and
 * qemu-nbd reach it through /proc/PID/fd/FD, our descriptor, never through a path someone could
 * swap. qemu-nbd listens on a socket in a private folder (mkdtemp, 0700) and serves only us; the
 * disk is then written as to any NBD target (target.h). */
#ifndef VMA_EXTRACT_QCOW2_H
#define VMA_EXTRACT_QCOW2_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "target.h"

struct qcow2_out {
	pid_t nbd_pid; /* qemu-nbd, or 0 */
	char *tmpdir, *sock, *uri;
	int dir_slot, sock_slot; /* removed by the signal handler too (outfile.h) */
	struct target t;
	bool connected;
};

/* qemu-img create -f qcow2 on the file fd of size bytes, then qemu-nbd on it and a connection
 * to it in q->t. 0, or -1 with the reason in err (q must still be stopped). */
int qcow2_start(struct qcow2_out *q, int fd, uint64_t size, char *err, size_t errlen);
/* Flushes, disconnects, and waits for qemu-nbd to have exited cleanly. */
int qcow2_finish(struct qcow2_out *q, char *err, size_t errlen);
/* Ends qemu-nbd if it still runs, and removes the socket and its folder; safe to call twice,
 * and on a zeroed q. */
void qcow2_stop(struct qcow2_out *q);

#endif
