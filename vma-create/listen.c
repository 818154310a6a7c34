/* The archive side of --listen: every write a client sends is cut into 64 KiB clusters that go
 * into the VMA stream in the order they arrive. A whole cluster is received straight into the
 * archive's extent buffer; one that arrives in pieces (512-byte aligned) waits in a small
 * table until complete. Each cluster is accepted exactly once.
 *
 * For an incremental archive (a partial writer) the clients send only the clusters that
 * changed, so nobody can tell from the data when a device is done: an export is done when its
 * client disconnects, and the archive when every export's client has. Whether the client sent
 * everything it had to is its own business (the driver checks QEMU's job). */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "listen.h"
#include "meter.h"
#include "nbd_server.h"
#include "outfile.h"
#include "unixsock.h"
#include "xalloc.h"

#define SECTOR 512
#define MAX_PENDING 256 /* clusters in pieces at once: 16 MiB at most */

struct pending {
	int dev_id;
	uint64_t cluster;
	uint8_t *data;
	uint64_t sectors[2]; /* which 512-byte sectors of the cluster have arrived */
};

struct listen_ctx {
	struct vma_writer *w;
	struct progress *progress;
	struct throttle *throttle; /* counts the data written, never the zeros */
	const struct nbd_export *exports;
	bool *disconnected; /* per export: its client has gone (incremental archives) */
	struct pending pending[MAX_PENDING];
	int npending;
};

static struct pending *find_pending(struct listen_ctx *x, int dev_id, uint64_t cluster)
{
	for (int i = 0; i < x->npending; i++)
		if (x->pending[i].dev_id == dev_id && x->pending[i].cluster == cluster)
			return &x->pending[i];
	return NULL;
}

static void drop_pending(struct listen_ctx *x, struct pending *p)
{
	free(p->data);
	*p = x->pending[--x->npending];
}

static bool sector_seen(const struct pending *p, unsigned s)
{
	return p->sectors[s / 64] & (1ull << (s % 64));
}

/* Takes bytes [in_cluster, in_cluster+len) of one cluster, from the client (c) or as zeros. */
static int take_piece(struct listen_ctx *x, int dev_id, uint64_t cluster, uint32_t in_cluster,
		      uint32_t len, uint32_t valid, struct nbd_conn *c, char *err, size_t errlen)
{
	const char *name = x->exports[dev_id - 1].name;
	struct pending *p = find_pending(x, dev_id, cluster);
	if (!p) {
		if (vma_writer_has_cluster(x->w, dev_id, cluster)) {
			snprintf(err, errlen, "%s: cluster %llu written twice", name,
				 (unsigned long long)cluster);
			return EINVAL;
		}
		if (x->npending == MAX_PENDING) {
			snprintf(err, errlen,
				 "%s: more than %d clusters arriving in pieces at once", name,
				 MAX_PENDING);
			return ENOMEM;
		}
		p = &x->pending[x->npending];
		*p = (struct pending){.dev_id = dev_id,
				      .cluster = cluster,
				      .data = calloc(1, VMA_CLUSTER_SIZE)};
		if (!p->data) {
			snprintf(err, errlen, "out of memory");
			return ENOMEM;
		}
		x->npending++;
	}
	if (in_cluster % SECTOR || (len % SECTOR && in_cluster + len != valid)) {
		snprintf(err, errlen, "%s: write at %llu of %u bytes is not 512-byte aligned", name,
			 (unsigned long long)(cluster * VMA_CLUSTER_SIZE + in_cluster), len);
		return EINVAL;
	}
	unsigned first = in_cluster / SECTOR, end = (in_cluster + len + SECTOR - 1) / SECTOR;
	for (unsigned s = first; s < end; s++) {
		if (sector_seen(p, s)) {
			snprintf(err, errlen, "%s: bytes at %llu written twice", name,
				 (unsigned long long)(cluster * VMA_CLUSTER_SIZE + s * SECTOR));
			return EINVAL;
		}
		p->sectors[s / 64] |= 1ull << (s % 64);
	}
	if (c && nbd_conn_recv(c, p->data + in_cluster, len) < 0) {
		snprintf(err, errlen, "%s: client disconnected in the middle of a write", name);
		return EIO;
	}
	for (unsigned s = 0; s < (valid + SECTOR - 1) / SECTOR; s++)
		if (!sector_seen(p, s))
			return 0;
	int rc = vma_writer_put(x->w, dev_id, cluster, p->data);
	drop_pending(x, p);
	if (rc < 0) {
		snprintf(err, errlen, "%s", vma_writer_error(x->w));
		return EIO;
	}
	return 0;
}

/* How many clusters from `cluster` on (which the caller found whole in the write and new) the
 * write's len bytes cover whole, each new and a full 64 KiB (not the device's short last
 * one): at least 1. */
static unsigned whole_run(struct listen_ctx *x, int dev_id, uint64_t cluster, uint64_t len)
{
	uint64_t full_clusters = x->exports[dev_id - 1].size / VMA_CLUSTER_SIZE;
	unsigned n = 1;
	while (n < VMA_ENTRIES_PER_EXTENT && (uint64_t)(n + 1) * VMA_CLUSTER_SIZE <= len &&
	       cluster + n < full_clusters && !vma_writer_has_cluster(x->w, dev_id, cluster + n) &&
	       !find_pending(x, dev_id, cluster + n))
		n++;
	return n;
}

/* A write (c != NULL) or a zero write (c == NULL) of len bytes at off. */
static int take(struct listen_ctx *x, int export, uint64_t off, uint64_t len, struct nbd_conn *c,
		char *err, size_t errlen)
{
	int dev_id = export + 1;
	uint64_t size = x->exports[export].size;
	progress_begin(x->progress);
	while (len > 0) {
		uint64_t cluster = off / VMA_CLUSTER_SIZE, start = cluster * VMA_CLUSTER_SIZE;
		uint32_t valid = vma_cluster_bytes(size, cluster);
		uint32_t in_cluster = (uint32_t)(off - start);
		uint32_t chunk = (uint32_t)(len < valid - in_cluster ? len : valid - in_cluster);
		int rc = 0;
		if (in_cluster == 0 && chunk == valid && !find_pending(x, dev_id, cluster)) {
			if (vma_writer_has_cluster(x->w, dev_id, cluster)) {
				snprintf(err, errlen, "%s: cluster %llu written twice",
					 x->exports[export].name, (unsigned long long)cluster);
				return EINVAL;
			}
			if (!c) {
				rc = vma_writer_put_zero(x->w, dev_id, cluster);
			} else {
				/* A run of whole clusters comes in with one receive (QEMU writes
				 * 1 MiB at a time), as far as the extent has room. */
				unsigned n = whole_run(x, dev_id, cluster, len);
				uint8_t *buf = vma_writer_reserve(x->w, &n);
				chunk += (uint32_t)(n - 1) * VMA_CLUSTER_SIZE;
				if (buf && nbd_conn_recv(c, buf, chunk) < 0) {
					snprintf(err, errlen,
						 "%s: client disconnected in the middle of a write",
						 x->exports[export].name);
					return EIO;
				}
				rc = buf ? vma_writer_commit(x->w, dev_id, cluster, n) : -1;
			}
			if (rc < 0) {
				snprintf(err, errlen, "%s", vma_writer_error(x->w));
				return EIO;
			}
		} else {
			rc = take_piece(x, dev_id, cluster, in_cluster, chunk, valid, c, err,
					errlen);
			if (rc)
				return rc;
		}
		off += chunk;
		len -= chunk;
	}
	struct vma_device_stats all = vma_writer_stats(x->w, 0);
	progress_update(x->progress, all.transferred, all.zero_bytes, false);
	return 0;
}

static int on_write(void *ctx, int export, uint64_t off, uint32_t len, struct nbd_conn *c,
		    char *err, size_t errlen)
{
	struct listen_ctx *x = ctx;
	throttle_add(x->throttle, len);
	return take(x, export, off, len, c, err, errlen);
}

static int on_zero(void *ctx, int export, uint64_t off, uint64_t len, char *err, size_t errlen)
{
	return take(ctx, export, off, len, NULL, err, errlen);
}

static bool has_pending(const struct listen_ctx *x, int export)
{
	for (int i = 0; i < x->npending; i++)
		if (x->pending[i].dev_id == export + 1)
			return true;
	return false;
}

static int on_closed(void *ctx, int export, bool said_bye, char *err, size_t errlen)
{
	struct listen_ctx *x = ctx;
	if (vma_writer_is_partial(x->w) && has_pending(x, export)) {
		snprintf(err, errlen, "%s: the client disconnected with a cluster half written",
			 x->exports[export].name);
		return -1;
	}
	/* Only the client knows that it sent all its changes: one that just went away (killed,
	 * crashed) may not have. */
	if (vma_writer_is_partial(x->w) && !said_bye) {
		snprintf(err, errlen,
			 "%s: the client went away without NBD's disconnect request, maybe before "
			 "it sent all its changes",
			 x->exports[export].name);
		return -1;
	}
	x->disconnected[export] = true;
	if (vma_writer_is_partial(x->w) || vma_writer_device_complete(x->w, export + 1))
		return 0;
	struct vma_device_stats s = vma_writer_stats(x->w, export + 1);
	snprintf(err, errlen, "%s: the client disconnected with %llu of %llu bytes not written",
		 x->exports[export].name, (unsigned long long)(s.size - s.transferred),
		 (unsigned long long)s.size);
	return -1;
}

static bool on_complete(void *ctx)
{
	struct listen_ctx *x = ctx;
	if (!vma_writer_is_partial(x->w))
		return x->npending == 0 && vma_writer_device_complete(x->w, 0);
	for (int i = 0; i < vma_writer_device_count(x->w); i++)
		if (!x->disconnected[i])
			return false;
	return x->npending == 0;
}

/* An incremental export is never "complete" while its client is there, but its client idling
 * is no stall either: it may have sent all that changed long ago; unless it stopped in the
 * middle of a cluster. */
static bool on_export_complete(void *ctx, int export)
{
	struct listen_ctx *x = ctx;
	if (vma_writer_is_partial(x->w))
		return !has_pending(x, export);
	return vma_writer_device_complete(x->w, export + 1);
}

static int64_t hold_until(void *ctx)
{
	struct listen_ctx *x = ctx;
	return throttle_due(x->throttle);
}

/* A non-blocking listening socket at path, which must not exist yet: like the archive with -o,
 * vma-create replaces nothing, not even a stale socket. */
static int listen_at(const char *path)
{
	struct stat st;
	if (lstat(path, &st) == 0) {
		warnx("%s: already exists", path);
		return -1;
	}
	int fd = unixsock_listen(path, 0600);
	if (fd < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
		warn("%s", path);
		if (fd >= 0) {
			unlink(path);
			close(fd);
		}
		return -1;
	}
	return fd;
}

int serve_devices_on(struct vma_writer *w, int listen_fd, int client_fd,
		     const struct nbd_timeouts *timeouts, struct progress *progress,
		     struct throttle *throttle, char *err, size_t errlen)
{
	int n = vma_writer_device_count(w);
	struct nbd_export *exports = xcalloc((size_t)n + 1, sizeof(*exports));
	for (int i = 0; i < n; i++) {
		struct vma_device_stats s = vma_writer_stats(w, i + 1);
		exports[i] = (struct nbd_export){s.name, s.size};
	}
	struct listen_ctx *x = xcalloc(1, sizeof(*x));
	*x = (struct listen_ctx){.w = w,
				 .progress = progress,
				 .throttle = throttle,
				 .exports = exports,
				 .disconnected = xcalloc((size_t)n + 1, sizeof(bool))};
	static const struct nbd_server_ops ops = {.write = on_write,
						  .zero = on_zero,
						  .closed = on_closed,
						  .complete = on_complete,
						  .export_complete = on_export_complete,
						  .hold_until = hold_until,
						  .stop_fd = -1};
	int rc = nbd_serve(listen_fd, client_fd, exports, n, &ops, x, timeouts, err, errlen);
	while (x->npending > 0)
		drop_pending(x, &x->pending[0]);
	free(x->disconnected);
	free(x);
	free(exports);
	return rc;
}

int serve_devices(struct vma_writer *w, const char *path, const struct nbd_timeouts *timeouts,
		  struct progress *progress, struct throttle *throttle)
{
	char *sock_path = xstrdup(path);
	int track = outfile_track(sock_path);
	int fd = listen_at(path);
	int rc = -1;
	if (fd >= 0) {
		char why[512];
		rc = serve_devices_on(w, fd, -1, timeouts, progress, throttle, why, sizeof(why));
		if (rc < 0) {
			meter_break();
			warnx("%s", why);
		}
		close(fd);
		unlink(path);
	}
	outfile_untrack(track);
	free(sock_path);
	return rc;
}
