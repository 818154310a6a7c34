/* Frames compressed by several threads (see framepar.h). A ring of one slot more than there
 * are workers: the caller fills the current slot and marks it for work, then fills the next,
 * while any idle worker takes the oldest slot marked; a slot that comes round again is waited
 * for and its frame written before it is refilled. So frames go out in the order of the data,
 * the workers stay busy while the caller reads, and memory is bounded by the ring. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framepar.h"

enum { SLOT_FREE, SLOT_WORK, SLOT_BUSY, SLOT_DONE };

struct slot {
	void *state; /* the codec's compressor */
	uint8_t *in, *out;
	size_t in_len, out_cap, out_len; /* out_len 0: failed, with err */
	int state_of_work;               /* SLOT_*, under p->lock */
	uint64_t seq;                    /* order of hand-over: workers take the oldest first */
	char err[128];
};

struct framepar {
	const struct framepar_codec *codec;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* any slot's state changed, or quit */
	bool quit;
	struct slot *slots;
	int nslots, cur;
	pthread_t *threads;
	int nthreads; /* started */
	uint64_t handed;
	framepar_emit_fn *emit;
	void *ctx;
};

/* Under p->lock: the slot handed over first among those waiting for a worker. */
static struct slot *oldest_work(struct framepar *p)
{
	struct slot *best = NULL;
	for (int i = 0; i < p->nslots; i++) {
		struct slot *sl = &p->slots[i];
		if (sl->state_of_work == SLOT_WORK && (!best || sl->seq < best->seq))
			best = sl;
	}
	return best;
}

static void *worker(void *arg)
{
	struct framepar *p = arg;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct slot *sl;
		while (!p->quit && !(sl = oldest_work(p)))
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->quit)
			break;
		sl->state_of_work = SLOT_BUSY;
		pthread_mutex_unlock(&p->lock);
		sl->out_len = p->codec->compress(sl->state, sl->in, sl->in_len, sl->out,
						 sl->out_cap, sl->err, sizeof(sl->err));
		pthread_mutex_lock(&p->lock);
		sl->state_of_work = SLOT_DONE;
		pthread_cond_broadcast(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

struct framepar *framepar_open(const struct framepar_codec *codec, int threads,
			       framepar_emit_fn *emit, void *ctx, char *err, size_t errlen)
{
	struct framepar *p = calloc(1, sizeof(*p));
	if (!p || !(p->slots = calloc((size_t)threads + 1, sizeof(*p->slots))) ||
	    !(p->threads = calloc((size_t)threads, sizeof(*p->threads)))) {
		if (p)
			free(p->slots);
		free(p);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->codec = codec;
	p->nslots = threads + 1;
	p->emit = emit;
	p->ctx = ctx;
	for (int i = 0; i < p->nslots; i++) {
		struct slot *sl = &p->slots[i];
		sl->state = codec->start(codec->level, codec->piece, &sl->out_cap, err, errlen);
		if (!sl->state)
			goto bad;
		sl->in = malloc(codec->piece);
		sl->out = malloc(sl->out_cap);
		if (!sl->in || !sl->out) {
			snprintf(err, errlen, "out of memory");
			goto bad;
		}
	}
	/* The workers take no signals: they stay with the threads that handle them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (; p->nthreads < threads; p->nthreads++) {
		int e = pthread_create(&p->threads[p->nthreads], NULL, worker, p);
		if (e != 0) {
			pthread_sigmask(SIG_SETMASK, &old, NULL);
			snprintf(err, errlen, "cannot start a compression thread: %s", strerror(e));
			goto bad;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return p;
bad:
	framepar_free(p);
	return NULL;
}

static void hand_over(struct framepar *p)
{
	pthread_mutex_lock(&p->lock);
	p->slots[p->cur].state_of_work = SLOT_WORK;
	p->slots[p->cur].seq = p->handed++;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	p->cur = (p->cur + 1) % p->nslots;
}

/* Waits for the slot's frame, if it has one in the making, and writes it out. */
static int drain(struct framepar *p, struct slot *sl, char *err, size_t errlen)
{
	pthread_mutex_lock(&p->lock);
	bool pending = sl->state_of_work != SLOT_FREE;
	while (sl->state_of_work == SLOT_WORK || sl->state_of_work == SLOT_BUSY)
		pthread_cond_wait(&p->cond, &p->lock);
	sl->state_of_work = SLOT_FREE;
	pthread_mutex_unlock(&p->lock);
	if (!pending)
		return 0;
	size_t data_len = sl->in_len;
	sl->in_len = 0;
	if (sl->out_len == 0) {
		snprintf(err, errlen, "%s", sl->err);
		return -1;
	}
	return p->emit(p->ctx, sl->out, sl->out_len, data_len);
}

int framepar_write(struct framepar *p, const void *buf, size_t len, char *err, size_t errlen)
{
	const uint8_t *src = buf;
	size_t piece = p->codec->piece;
	while (len > 0) {
		struct slot *sl = &p->slots[p->cur];
		if (drain(p, sl, err, errlen) < 0)
			return -1;
		size_t n = piece - sl->in_len < len ? piece - sl->in_len : len;
		memcpy(sl->in + sl->in_len, src, n);
		sl->in_len += n;
		src += n;
		len -= n;
		if (sl->in_len == piece)
			hand_over(p);
	}
	return 0;
}

int framepar_finish(struct framepar *p, char *err, size_t errlen)
{
	if (p->slots[p->cur].in_len > 0 || p->handed == 0)
		hand_over(p);
	/* From the oldest piece in flight to the newest. */
	for (int i = 0; i < p->nslots; i++)
		if (drain(p, &p->slots[(p->cur + i) % p->nslots], err, errlen) < 0)
			return -1;
	return 0;
}

void framepar_free(struct framepar *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->quit = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	for (int i = 0; i < p->nslots; i++) {
		struct slot *sl = &p->slots[i];
		if (sl->state)
			p->codec->stop(sl->state);
		free(sl->in);
		free(sl->out);
	}
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p->threads);
	free(p->slots);
	free(p);
}
