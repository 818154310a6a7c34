/* gzip members compressed by several threads (see gzpar.h). A ring of one slot per worker: the
 * caller fills the current slot and hands it to its worker, then fills the next; a slot that
 * comes round again is waited for and its member written before it is refilled, so members
 * go out in the order of the data, and at most one piece per worker is in flight. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codecs.h"
#include "gzpar.h"

enum { SLOT_FREE, SLOT_WORK, SLOT_DONE };

struct slot {
	struct gzpar *g;
	pthread_t thread;
	bool started;
	z_stream z;
	bool z_ok;
	uint8_t *in, *out;
	size_t in_len, out_cap, out_len;
	int state; /* under g->lock */
	int zerr;  /* deflate's result, when not Z_STREAM_END */
};

struct gzpar {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* any slot's state changed, or quit */
	bool quit;
	struct slot *slots;
	int n, cur;
	bool any; /* a piece was handed over: an empty stream still gets one member */
	gzpar_emit_fn *emit;
	void *ctx;
};

static void compress_piece(struct slot *sl)
{
	sl->zerr = libz.deflateReset(&sl->z);
	if (sl->zerr != Z_OK)
		return;
	sl->z.next_in = sl->in;
	sl->z.avail_in = (uInt)sl->in_len;
	sl->z.next_out = sl->out;
	sl->z.avail_out = (uInt)sl->out_cap;
	/* out_cap is deflateBound's: one call finishes the member. */
	int r = libz.deflate(&sl->z, Z_FINISH);
	sl->zerr = r == Z_STREAM_END ? Z_OK : r == Z_OK ? Z_BUF_ERROR : r;
	sl->out_len = sl->out_cap - sl->z.avail_out;
}

static void *worker(void *arg)
{
	struct slot *sl = arg;
	struct gzpar *g = sl->g;
	pthread_mutex_lock(&g->lock);
	for (;;) {
		while (!g->quit && sl->state != SLOT_WORK)
			pthread_cond_wait(&g->cond, &g->lock);
		if (g->quit)
			break;
		pthread_mutex_unlock(&g->lock);
		compress_piece(sl);
		pthread_mutex_lock(&g->lock);
		sl->state = SLOT_DONE;
		pthread_cond_broadcast(&g->cond);
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

struct gzpar *gzpar_open(int level, int threads, gzpar_emit_fn *emit, void *ctx, char *err,
			 size_t errlen)
{
	struct gzpar *g = calloc(1, sizeof(*g));
	if (!g || !(g->slots = calloc((size_t)threads, sizeof(*g->slots)))) {
		free(g);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	g->n = threads;
	g->emit = emit;
	g->ctx = ctx;
	/* The workers take no signals: they stay with the threads that handle them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (int i = 0; i < threads; i++) {
		struct slot *sl = &g->slots[i];
		sl->g = g;
		if (codec_deflateInit2(&sl->z, level, 16 + MAX_WBITS) != Z_OK) {
			snprintf(err, errlen, "cannot start gzip encoder");
			goto bad;
		}
		sl->z_ok = true;
		sl->out_cap = libz.deflateBound(&sl->z, GZPAR_PIECE);
		sl->in = malloc(GZPAR_PIECE);
		sl->out = malloc(sl->out_cap);
		if (!sl->in || !sl->out) {
			snprintf(err, errlen, "out of memory");
			goto bad;
		}
		int e = pthread_create(&sl->thread, NULL, worker, sl);
		if (e != 0) {
			snprintf(err, errlen, "cannot start a gzip thread: %s", strerror(e));
			goto bad;
		}
		sl->started = true;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return g;
bad:
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	gzpar_free(g);
	return NULL;
}

static void hand_over(struct gzpar *g)
{
	pthread_mutex_lock(&g->lock);
	g->slots[g->cur].state = SLOT_WORK;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	g->cur = (g->cur + 1) % g->n;
	g->any = true;
}

/* Waits for the slot's member, if it has one in the making, and writes it out. */
static int drain(struct gzpar *g, struct slot *sl, char *err, size_t errlen)
{
	pthread_mutex_lock(&g->lock);
	bool pending = sl->state != SLOT_FREE;
	while (sl->state == SLOT_WORK)
		pthread_cond_wait(&g->cond, &g->lock);
	sl->state = SLOT_FREE;
	pthread_mutex_unlock(&g->lock);
	if (!pending)
		return 0;
	sl->in_len = 0;
	if (sl->zerr != Z_OK) {
		snprintf(err, errlen, "gzip: zlib error %d", sl->zerr);
		return -1;
	}
	return g->emit(g->ctx, sl->out, sl->out_len);
}

int gzpar_write(struct gzpar *g, const void *buf, size_t len, char *err, size_t errlen)
{
	const uint8_t *p = buf;
	while (len > 0) {
		struct slot *sl = &g->slots[g->cur];
		if (drain(g, sl, err, errlen) < 0)
			return -1;
		size_t n = GZPAR_PIECE - sl->in_len < len ? GZPAR_PIECE - sl->in_len : len;
		memcpy(sl->in + sl->in_len, p, n);
		sl->in_len += n;
		p += n;
		len -= n;
		if (sl->in_len == GZPAR_PIECE)
			hand_over(g);
	}
	return 0;
}

int gzpar_finish(struct gzpar *g, char *err, size_t errlen)
{
	if (g->slots[g->cur].in_len > 0 || !g->any)
		hand_over(g);
	/* From the oldest piece in flight to the newest. */
	for (int i = 0; i < g->n; i++)
		if (drain(g, &g->slots[(g->cur + i) % g->n], err, errlen) < 0)
			return -1;
	return 0;
}

void gzpar_free(struct gzpar *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->quit = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	for (int i = 0; i < g->n; i++) {
		struct slot *sl = &g->slots[i];
		if (sl->started)
			pthread_join(sl->thread, NULL);
		if (sl->z_ok)
			libz.deflateEnd(&sl->z);
		free(sl->in);
		free(sl->out);
	}
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cond);
	free(g->slots);
	free(g);
}
