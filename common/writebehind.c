/* Write-behind (see writebehind.h): a short ring of buffers waiting for one output thread. An
 * entry stays in the ring while it is being written, so that a waiter sees it until the write
 * has returned. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "writebehind.h"

/* Enough for every extent buffer of the archive writer and the sink's two small ones. */
#define QUEUE_LEN 8

struct entry {
	const void *buf;
	size_t len;
};

struct writebehind {
	pthread_mutex_t lock;
	pthread_cond_t changed; /* an entry was queued or written, or stop was asked */
	struct entry queue[QUEUE_LEN];
	unsigned head, count; /* queue[head] is written next (or now) */
	bool failed;          /* set by the thread only: after it, no more writes */
	bool quit;
	pthread_t thread;
	writebehind_fn write;
	void *ctx;
};

static void *output_thread(void *arg)
{
	struct writebehind *wb = arg;
	pthread_mutex_lock(&wb->lock);
	for (;;) {
		while (!wb->quit && wb->count == 0)
			pthread_cond_wait(&wb->changed, &wb->lock);
		if (wb->quit)
			break;
		struct entry e = wb->queue[wb->head];
		bool skip = wb->failed;
		pthread_mutex_unlock(&wb->lock);
		/* After a failure, what is queued is dropped: a waiter learns of it from failed. */
		int r = skip ? -1 : wb->write(wb->ctx, e.buf, e.len);
		pthread_mutex_lock(&wb->lock);
		if (r < 0)
			wb->failed = true;
		wb->head = (wb->head + 1) % QUEUE_LEN;
		wb->count--;
		pthread_cond_broadcast(&wb->changed);
	}
	pthread_mutex_unlock(&wb->lock);
	return NULL;
}

struct writebehind *writebehind_start(writebehind_fn write, void *ctx, char *err, size_t errlen)
{
	struct writebehind *wb = calloc(1, sizeof(*wb));
	if (!wb) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	wb->write = write;
	wb->ctx = ctx;
	pthread_mutex_init(&wb->lock, NULL);
	pthread_cond_init(&wb->changed, NULL);
	/* The thread takes no signals: they stay with the one that handles them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(&wb->thread, NULL, output_thread, wb);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e != 0) {
		snprintf(err, errlen, "cannot start the output thread: %s", strerror(e));
		pthread_cond_destroy(&wb->changed);
		pthread_mutex_destroy(&wb->lock);
		free(wb);
		return NULL;
	}
	return wb;
}

int writebehind_submit(struct writebehind *wb, const void *buf, size_t len)
{
	pthread_mutex_lock(&wb->lock);
	while (!wb->failed && wb->count == QUEUE_LEN)
		pthread_cond_wait(&wb->changed, &wb->lock);
	bool failed = wb->failed;
	if (!failed) {
		wb->queue[(wb->head + wb->count) % QUEUE_LEN] = (struct entry){buf, len};
		wb->count++;
		pthread_cond_broadcast(&wb->changed);
	}
	pthread_mutex_unlock(&wb->lock);
	return failed ? -1 : 0;
}

static bool queued(const struct writebehind *wb, const void *buf)
{
	for (unsigned i = 0; i < wb->count; i++)
		if (wb->queue[(wb->head + i) % QUEUE_LEN].buf == buf)
			return true;
	return false;
}

int writebehind_wait(struct writebehind *wb, const void *buf)
{
	pthread_mutex_lock(&wb->lock);
	while (!wb->failed && queued(wb, buf))
		pthread_cond_wait(&wb->changed, &wb->lock);
	bool failed = wb->failed;
	pthread_mutex_unlock(&wb->lock);
	return failed ? -1 : 0;
}

int writebehind_drain(struct writebehind *wb)
{
	pthread_mutex_lock(&wb->lock);
	while (!wb->failed && wb->count > 0)
		pthread_cond_wait(&wb->changed, &wb->lock);
	bool failed = wb->failed;
	pthread_mutex_unlock(&wb->lock);
	return failed ? -1 : 0;
}

void writebehind_stop(struct writebehind *wb)
{
	if (!wb)
		return;
	pthread_mutex_lock(&wb->lock);
	wb->quit = true;
	pthread_cond_broadcast(&wb->changed);
	pthread_mutex_unlock(&wb->lock);
	pthread_join(wb->thread, NULL);
	pthread_cond_destroy(&wb->changed);
	pthread_mutex_destroy(&wb->lock);
	free(wb);
}
