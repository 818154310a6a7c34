/* Unix-domain sockets: connect with retries until a deadline, listen, send fds (SCM_RIGHTS). */
#ifndef VZ_UNIXSOCK_H
#define VZ_UNIXSOCK_H

#include <stddef.h>
#include <sys/types.h>

#include "deadline.h"

/* At most this many fds travel in one message (QEMU's own limit is 16 per message). */
#define UNIXSOCK_MAX_FDS 16

/*
 * Connects to the stream socket at PATH, retrying every 50 ms while the socket is missing or
 * refuses (QEMU creates it asynchronously and accepts one client at a time) until D.
 * Returns a non-blocking, close-on-exec fd, or -1 with errno set to the last failure.
 */
int unixsock_connect(const char *path, deadline_t d);

/* Creates a socket listening at PATH with permissions MODE; PATH appears only once it
 * accepts connections. A stale socket file there is replaced, one that someone listens on is
 * an error (EADDRINUSE), and so is any other file (EEXIST). Returns a blocking, close-on-exec
 * fd, or -1 with errno. */
int unixsock_listen(const char *path, mode_t mode);

/*
 * Writes all LEN bytes of BUF to the socket FD before D, with the NFDS descriptors in FDS
 * attached to the first sendmsg() (QEMU takes received fds together with the command bytes).
 * Returns 0, or -1 with errno (ETIMEDOUT when D passed).
 */
int unixsock_send(int fd, const void *buf, size_t len, const int *fds, size_t nfds, deadline_t d);

#endif
