/* NBD exports, read with libnbd: holes from block status (base:allocation), data with several
 * asynchronous reads in flight, sized to the export's preferred and maximum block sizes.
 * Everything goes through libnbd's asynchronous API and nbd_poll() against a deadline, so a
 * server that stops answering (in the handshake or in the middle of the copy) ends the run
 * with a timeout instead of holding it forever.
 *
 * libnbd (and gnutls, libxml2, icu, libstdc++ behind it) is loaded by the first NBD source,
 * not at every start of vma-create (dynlib.h): its functions are called through the table
 * libnbd, never directly. */
#include <errno.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "dynlib.h"
#include "exitcode.h"
#include "source.h"
#include "vma.h"
#include "xalloc.h"

#define STATUS_SPAN (1ull << 30) /* ask block status for up to 1 GiB at a time */
/* Per read request, unless the export prefers larger: one extent (3.7 MiB) is then ~15 requests
 * in flight at once. With 1 MiB requests qemu-nbd sat idle between extents (3x slower). */
#define DEFAULT_REQUEST (256u << 10)
#define MAX_REQUEST (4u << 20)
#define MAX_IN_FLIGHT 64

/* Every libnbd function this file calls. */
#define LIBNBD_FUNCTIONS(X)                                                                        \
	X(nbd_create)                                                                              \
	X(nbd_close)                                                                               \
	X(nbd_get_error)                                                                           \
	X(nbd_get_errno)                                                                           \
	X(nbd_add_meta_context)                                                                    \
	X(nbd_can_meta_context)                                                                    \
	X(nbd_aio_connect_uri)                                                                     \
	X(nbd_aio_is_ready)                                                                        \
	X(nbd_aio_is_dead)                                                                         \
	X(nbd_aio_is_closed)                                                                       \
	X(nbd_poll)                                                                                \
	X(nbd_get_size)                                                                            \
	X(nbd_get_block_size)                                                                      \
	X(nbd_aio_block_status)                                                                    \
	X(nbd_aio_pread)                                                                           \
	X(nbd_aio_command_completed)                                                               \
	X(nbd_aio_disconnect)
DYNLIB_TABLE(libnbd, "libnbd.so.0", LIBNBD_FUNCTIONS)

struct run {
	uint64_t start, len;
	bool zero;
};

struct nbd_source {
	struct source s;
	struct nbd_handle *nbd;
	struct source_timeouts timeouts;
	bool has_status;
	bool broken;    /* a command failed or timed out: no polite disconnect */
	size_t request; /* bytes per read request */
	struct run *runs;
	size_t nruns, cap;
	uint64_t cached_end;
};

static int nbd_fail(struct source *s, const char *what)
{
	snprintf(s->err, sizeof(s->err), "%s: %s", what, libnbd.nbd_get_error());
	((struct nbd_source *)s)->broken = true;
	return -1;
}

static int nbd_timed_out(struct source *s, const char *what, double seconds)
{
	snprintf(s->err, sizeof(s->err), "%s: timed out after %g s", what, seconds);
	s->timed_out = true;
	((struct nbd_source *)s)->broken = true;
	return -1;
}

/* Runs libnbd's state machine until command cookie has completed: 0, or -1 on failure or once
 * nothing has moved on the connection for the idle timeout. */
static int wait_for_command(struct nbd_source *n, int64_t cookie, const char *what)
{
	deadline_t d = deadline_in(n->timeouts.idle);
	int r;
	while ((r = libnbd.nbd_aio_command_completed(n->nbd, (uint64_t)cookie)) == 0) {
		int moved = libnbd.nbd_poll(n->nbd, deadline_poll_timeout(d));
		if (moved < 0)
			return nbd_fail(&n->s, what);
		if (moved > 0)
			d = deadline_in(n->timeouts.idle);
		else if (deadline_passed(d))
			return nbd_timed_out(&n->s, what, n->timeouts.idle);
	}
	return r < 0 ? nbd_fail(&n->s, what) : 0;
}

static int collect_runs(void *opaque, const char *context, uint64_t offset, uint32_t *entries,
			size_t nr_entries, int *error)
{
	struct nbd_source *n = opaque;
	if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
		return 0;
	for (size_t i = 0; i + 1 < nr_entries; i += 2) {
		if (n->nruns == n->cap) {
			size_t cap = n->cap ? n->cap * 2 : 64;
			struct run *r = realloc(n->runs, cap * sizeof(*r));
			if (!r) {
				*error = 12; /* ENOMEM */
				return -1;
			}
			n->runs = r;
			n->cap = cap;
		}
		n->runs[n->nruns++] = (struct run){offset, entries[i],
						   (entries[i + 1] & LIBNBD_STATE_ZERO) != 0};
		offset += entries[i];
	}
	n->cached_end = offset;
	return 0;
}

static int nbd_extent(struct source *src, uint64_t off, uint64_t *len, bool *zero)
{
	struct nbd_source *n = (struct nbd_source *)src;
	*zero = false;
	*len = src->size - off;
	if (!n->has_status)
		return 0;
	if (off >= n->cached_end || n->nruns == 0 || off < n->runs[0].start) {
		uint64_t span = src->size - off < STATUS_SPAN ? src->size - off : STATUS_SPAN;
		n->nruns = 0;
		n->cached_end = off;
		nbd_extent_callback cb = {.callback = collect_runs, .user_data = n};
		int64_t c = libnbd.nbd_aio_block_status(n->nbd, span, off, cb, NBD_NULL_COMPLETION,
							0);
		if (c < 0)
			return nbd_fail(src, "block status");
		if (wait_for_command(n, c, "block status") < 0)
			return -1;
		if (n->cached_end <= off) { /* a server answering nothing: treat as data */
			n->has_status = false;
			return 0;
		}
	}
	for (size_t i = 0; i < n->nruns; i++) {
		struct run *r = &n->runs[i];
		if (off >= r->start && off < r->start + r->len) {
			uint64_t end = r->start + r->len;
			/* Merge following runs of the same kind so callers see long runs. */
			for (; i + 1 < n->nruns && n->runs[i + 1].zero == r->zero; i++)
				end = n->runs[i + 1].start + n->runs[i + 1].len;
			*zero = r->zero;
			*len = (end < src->size ? end : src->size) - off;
			return 0;
		}
	}
	return 0;
}

static int wait_for(struct source *src, int64_t *cookies, size_t ncookies)
{
	for (size_t i = 0; i < ncookies; i++)
		if (wait_for_command((struct nbd_source *)src, cookies[i], "read") < 0)
			return -1;
	return 0;
}

static int nbd_read(struct source *src, uint64_t off, void *buf, size_t len)
{
	struct nbd_source *n = (struct nbd_source *)src;
	int64_t cookies[MAX_IN_FLIGHT];
	size_t ncookies = 0;
	for (size_t done = 0; done < len; done += n->request) {
		size_t count = len - done < n->request ? len - done : n->request;
		int64_t c = libnbd.nbd_aio_pread(n->nbd, (char *)buf + done, count, off + done,
						 NBD_NULL_COMPLETION, 0);
		if (c < 0)
			return nbd_fail(src, "read");
		cookies[ncookies++] = c;
		if (ncookies == MAX_IN_FLIGHT) {
			if (wait_for(src, cookies, ncookies) < 0)
				return -1;
			ncookies = 0;
		}
	}
	return wait_for(src, cookies, ncookies);
}

static void nbd_source_close(struct source *src)
{
	struct nbd_source *n = (struct nbd_source *)src;
	/* A polite NBD_CMD_DISC, but never waiting on a server that has stopped answering
	 * (nbd_shutdown would wait for its reply as long as it takes). */
	if (!n->broken && libnbd.nbd_aio_disconnect(n->nbd, 0) == 0) {
		deadline_t d = deadline_in(n->timeouts.connect);
		while (!libnbd.nbd_aio_is_closed(n->nbd) && !libnbd.nbd_aio_is_dead(n->nbd) &&
		       libnbd.nbd_poll(n->nbd, deadline_poll_timeout(d)) > 0)
			;
	}
	libnbd.nbd_close(n->nbd);
	free(n->runs);
	free(n);
}

/* Whether a failed connect means that no server was there to answer, rather than a bad URI or
 * a server that refused us. */
static bool unreachable(int err)
{
	return err == ENOENT || err == ECONNREFUSED || err == ETIMEDOUT || err == EHOSTUNREACH ||
		err == ENETUNREACH || err == ECONNRESET;
}

/* nbd_connect_uri(), with a deadline for the connection and the whole handshake. */
static int connect_before(struct nbd_source *n, const char *uri, int *status, char *errbuf,
			  size_t errlen)
{
	deadline_t d = deadline_in(n->timeouts.connect);
	if (libnbd.nbd_aio_connect_uri(n->nbd, uri) == 0) {
		while (!libnbd.nbd_aio_is_ready(n->nbd) && !libnbd.nbd_aio_is_dead(n->nbd) &&
		       !libnbd.nbd_aio_is_closed(n->nbd)) {
			int moved = libnbd.nbd_poll(n->nbd, deadline_poll_timeout(d));
			if (moved < 0)
				break;
			if (moved == 0 && deadline_passed(d)) {
				snprintf(errbuf, errlen, "NBD handshake: timed out after %g s",
					 n->timeouts.connect);
				*status = EXIT_PEER;
				return -1;
			}
		}
		if (libnbd.nbd_aio_is_ready(n->nbd))
			return 0;
	}
	snprintf(errbuf, errlen, "%s", libnbd.nbd_get_error());
	if (unreachable(libnbd.nbd_get_errno()))
		*status = EXIT_PEER;
	return -1;
}

struct source *source_open_nbd(const char *uri, const struct source_timeouts *timeouts, int *status,
			       char *errbuf, size_t errlen)
{
	*status = EXIT_FAIL;
	if (libnbd_load(errbuf, errlen) < 0)
		return NULL;
	struct nbd_source *n = xcalloc(1, sizeof(*n));
	n->timeouts = *timeouts;
	if (!(n->nbd = libnbd.nbd_create())) {
		snprintf(errbuf, errlen, "%s", libnbd.nbd_get_error());
		free(n);
		return NULL;
	}
	if (libnbd.nbd_add_meta_context(n->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0) {
		snprintf(errbuf, errlen, "%s", libnbd.nbd_get_error());
		goto bad;
	}
	if (connect_before(n, uri, status, errbuf, errlen) < 0)
		goto bad;
	int64_t size = libnbd.nbd_get_size(n->nbd);
	if (size < 0) {
		snprintf(errbuf, errlen, "%s", libnbd.nbd_get_error());
		goto bad;
	}
	if (size == 0) {
		snprintf(errbuf, errlen, "the export is empty (size 0)");
		goto bad;
	}
	n->has_status = libnbd.nbd_can_meta_context(n->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
	int64_t preferred = libnbd.nbd_get_block_size(n->nbd, LIBNBD_SIZE_PREFERRED);
	int64_t maximum = libnbd.nbd_get_block_size(n->nbd, LIBNBD_SIZE_MAXIMUM);
	n->request = DEFAULT_REQUEST;
	if (preferred > (int64_t)n->request && preferred <= MAX_REQUEST)
		n->request = (size_t)preferred;
	if (maximum > 0 && maximum < (int64_t)n->request)
		n->request = (size_t)maximum;
	n->s.spec = uri;
	n->s.size = (uint64_t)size;
	n->s.read_clusters = VMA_ENTRIES_PER_EXTENT;
	n->s.extent = nbd_extent;
	n->s.read = nbd_read;
	n->s.close = nbd_source_close;
	return &n->s;
bad:
	libnbd.nbd_close(n->nbd);
	free(n);
	return NULL;
}
