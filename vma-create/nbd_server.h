/* A write-only NBD server for QEMU's backup job and other NBD clients (fixed newstyle
 * handshake, simple replies). Protocol only: what happens to the data is up to the caller's
 * callbacks. One thread, poll(); exactly one client per export: a connection beyond what the
 * exports still without a client can take is closed at once. */
#ifndef VMA_CREATE_NBD_SERVER_H
#define VMA_CREATE_NBD_SERVER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NBD_MAX_WRITE (1u << 20) /* advertised maximum block size */

struct nbd_export {
	const char *name;
	uint64_t size;
};

struct nbd_conn;

/* Reads exactly len bytes of the current request's payload into buf. 0, or -1 (connection
 * lost or too slow). */
int nbd_conn_recv(struct nbd_conn *c, void *buf, size_t len);

struct nbd_server_ops {
	/* WRITE of len bytes at off (inside the export, checked): the callback must read exactly
	 * len payload bytes with nbd_conn_recv. Returns 0, or an NBD errno value (EINVAL, ENOSPC,
	 * EIO…) with a message in err; the server replies with it and stops with failure. */
	int (*write)(void *ctx, int export, uint64_t off, uint32_t len, struct nbd_conn *c,
		     char *err, size_t errlen);
	/* WRITE_ZEROES of len bytes at off; same contract, no payload. */
	int (*zero)(void *ctx, int export, uint64_t off, uint64_t len, char *err, size_t errlen);
	/* A client that had chosen export `export` disconnected. Returns 0, or -1 with a message
	 * in err when that is a failure (e.g. data missing). */
	int (*closed)(void *ctx, int export, char *err, size_t errlen);
	/* True when the work is complete: the server returns once this holds and no client is
	 * connected. */
	bool (*complete)(void *ctx);
	/* True when export `export` has all its data: its client may then stay idle. */
	bool (*export_complete)(void *ctx, int export);
	/* The pace (vma-create --bwlimit), or NULL: a monotonic_ms() time before which the server
	 * reads no request from a client in transmission and sends no reply to one; 0 or a time
	 * passed for none. Clients still negotiating are served meanwhile, and a client waiting
	 * for a reply, or with a request unread, is not idle. */
	int64_t (*hold_until)(void *ctx);
};

/* How long a client may stall, in milliseconds; 0 waits forever. */
struct nbd_timeouts {
	int handshake_ms; /* from a connection to its choice of export */
	/* an export still without a client and no client doing anything (the wait for a client);
	 * a client that sends no request while its export is incomplete; a request or reply that
	 * stops moving half-way */
	int idle_ms;
};

/* nbd_serve's result when a client, or the wait for one, timed out. */
#define NBD_SERVE_TIMEOUT (-2)

/* Serves clients accepted on listen_fd until ops->complete() holds with no client left (0), or
 * a failure (-1 with a message in err; NBD_SERVE_TIMEOUT when it was a timeout). client_fd,
 * unless -1, is a client already connected, served like an accepted one (and closed); with
 * listen_fd -1 nothing is accepted and the server returns once that client is gone. A client
 * whose handshake times out is dropped with a warning: it has taken nothing yet. */
int nbd_serve(int listen_fd, int client_fd, const struct nbd_export *exports, int nexports,
	      const struct nbd_server_ops *ops, void *ctx, const struct nbd_timeouts *timeouts,
	      char *err, size_t errlen);

#endif
