/* The project's one NBD server (fixed newstyle handshake), in two modes chosen by the callbacks:
 *
 * - write-only (ops->write set), for vma-create --listen: QEMU's backup job and other clients
 *   push the devices in; simple replies; exactly one client per export: a connection beyond
 *   what the exports still without a client can take is closed at once; the server returns
 *   once the work is complete and the clients are gone.
 * - read-only (ops->write NULL, ops->read set), for vma-extract --serve: any number of clients
 *   (up to NBD_MAX_CLIENTS at once) read any export, with structured replies and the
 *   base:allocation meta context (NBD_CMD_BLOCK_STATUS) when they ask for them; writes, trims
 *   and zero writes get EPERM. A client that misbehaves is disconnected, the others go on;
 *   the server returns when ops->stop_fd becomes readable (a signalfd).
 *
 * Protocol only: what happens to the data is up to the caller's callbacks. One thread,
 * poll(). NBD_INFO_BLOCK_SIZE is advertised in both modes on NBD_OPT_INFO and NBD_OPT_GO. */
#ifndef VZ_NBD_SERVER_H
#define VZ_NBD_SERVER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NBD_MAX_WRITE (1u << 20) /* advertised maximum block size, write-only mode */
#define NBD_MAX_READ (8u << 20)  /* the same, read-only mode */
#define NBD_MAX_CLIENTS 256      /* connections at once */
#define NBD_STATE_HOLE 1u        /* base:allocation: not allocated... */
#define NBD_STATE_ZERO 2u        /* ...and reads as zeros */

struct nbd_export {
	const char *name;
	uint64_t size;
};

struct nbd_conn;
struct iovec;

/* Reads exactly len bytes of the current request's payload into buf. 0, or -1 (connection
 * lost or too slow). */
int nbd_conn_recv(struct nbd_conn *c, void *buf, size_t len);

struct nbd_server_ops {
	/* Write-only mode. WRITE of len bytes at off (inside the export, checked): the callback
	 * must read exactly len payload bytes with nbd_conn_recv. Returns 0, or an NBD errno
	 * value (EINVAL, ENOSPC, EIO…) with a message in err; the server replies with it and
	 * stops with failure. NULL: the server is read-only. */
	int (*write)(void *ctx, int export, uint64_t off, uint32_t len, struct nbd_conn *c,
		     char *err, size_t errlen);
	/* WRITE_ZEROES of len bytes at off; same contract, no payload. */
	int (*zero)(void *ctx, int export, uint64_t off, uint64_t len, char *err, size_t errlen);
	/* A client that had chosen export `export` disconnected: after NBD_CMD_DISC (said_bye)
	 * or not (killed, say). Returns 0, or -1 with a message in err when that is a failure
	 * (e.g. data missing). May be NULL. */
	int (*closed)(void *ctx, int export, bool said_bye, char *err, size_t errlen);
	/* True when the work is complete: the server returns once this holds and no client is
	 * connected. Write-only mode. */
	bool (*complete)(void *ctx);
	/* True when export `export` has all its data: its client may then stay idle. Write-only
	 * mode. */
	bool (*export_complete)(void *ctx, int export);
	/* The pace (vma-create --bwlimit), or NULL: a monotonic_ms() time before which the server
	 * reads no request from a client in transmission and sends no reply to one; 0 or a time
	 * passed for none. Clients still negotiating are served meanwhile, and a client waiting
	 * for a reply, or with a request unread, is not idle. */
	int64_t (*hold_until)(void *ctx);

	/* Read-only mode. READ of len bytes (<= NBD_MAX_READ) at off (inside the export,
	 * checked) into buf. 0, or an errno value (EIO) for the client; the callback says why on
	 * standard error itself. The server goes on. */
	int (*read)(void *ctx, int export, uint64_t off, uint32_t len, void *buf);
	/* Optional, tried before read: the READ's data as at most max pieces of the callback's
	 * own memory, into iov (*n of them), left unchanged until release(ctx), which the server
	 * calls once the reply is sent or has failed. 0, an errno value as read (nothing to
	 * release then), or -1 when it cannot (read is called instead). Saves copying the data
	 * into a buffer before sending it. */
	int (*read_pieces)(void *ctx, int export, uint64_t off, uint32_t len, struct iovec *iov,
			   int max, int *n);
	void (*release)(void *ctx);
	/* Block status: the flags (NBD_STATE_HOLE | NBD_STATE_ZERO, or 0 for data) of the bytes
	 * from off on, and in *run how many of the next len bytes (> 0) have them (1 to len). */
	uint32_t (*block_status)(void *ctx, int export, uint64_t off, uint64_t len, uint64_t *run);
	/* A descriptor that becomes readable when the server is to stop (a signalfd), or -1. */
	int stop_fd;
};

/* How long a client may stall, in milliseconds; 0 waits forever. */
struct nbd_timeouts {
	int handshake_ms; /* from a connection to its choice of export */
	/* an export still without a client and no client doing anything (the wait for a client);
	 * a client that sends no request while its export is incomplete; a request or reply that
	 * stops moving half-way (read-only mode: only the last) */
	int idle_ms;
};

/* nbd_serve's result when a client, or the wait for one, timed out. */
#define NBD_SERVE_TIMEOUT (-2)

/* Serves clients accepted on listen_fd until ops->complete() holds with no client left (0), or
 * a failure (-1 with a message in err; NBD_SERVE_TIMEOUT when it was a timeout); read-only:
 * until ops->stop_fd is readable (0). client_fd, unless -1, is a client already connected,
 * served like an accepted one (and closed); with listen_fd -1 nothing is accepted and the
 * server returns once that client is gone. A client whose handshake times out is dropped with
 * a warning: it has taken nothing yet. */
int nbd_serve(int listen_fd, int client_fd, const struct nbd_export *exports, int nexports,
	      const struct nbd_server_ops *ops, void *ctx, const struct nbd_timeouts *timeouts,
	      char *err, size_t errlen);

#endif
