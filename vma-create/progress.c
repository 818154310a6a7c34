/* vzdump's progress line: "%3d%% (X of Y) in T, read: R/s, write: W/s", at most one every 2 s
 * and only when the percentage moved, plus a final 100 % line. */
#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "progress.h"
#include "vma.h"

double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void render_duration(char *buf, size_t len, double seconds)
{
	long s = (long)seconds, h = s / 3600, m = s / 60 % 60;
	if (h)
		snprintf(buf, len, "%ldh %ldm %lds", h, m, s % 60);
	else if (m)
		snprintf(buf, len, "%ldm %lds", m, s % 60);
	else
		snprintf(buf, len, "%lds", s);
}

void progress_start(struct progress *p, bool enabled, uint64_t total)
{
	*p = (struct progress){.enabled = enabled, .total = total, .last_percent = -1};
	p->start = p->last_time = now_seconds();
}

void progress_begin(struct progress *p)
{
	if (p->begun)
		return;
	p->begun = true;
	p->start = p->last_time = now_seconds();
}

void progress_update(struct progress *p, uint64_t transferred, uint64_t zero, bool final)
{
	if (!p->enabled)
		return;
	double now = now_seconds();
	int percent = p->total ? (int)(transferred * 100 / p->total) : 100;
	if (!final && (percent == p->last_percent || now - p->last_time <= 2.0))
		return;
	if (final && p->last_percent == 100)
		return;
	double dt = now - p->last_time > 1e-6 ? now - p->last_time : 1e-6;
	uint64_t read = transferred - p->last_transferred;
	uint64_t written = read - (zero - p->last_zero);
	char done[32], total[32], took[32], rrate[32], wrate[32];
	vma_render_bytes(done, sizeof(done), (double)transferred, 1);
	vma_render_bytes(total, sizeof(total), (double)p->total, 1);
	render_duration(took, sizeof(took), now - p->start);
	vma_render_bytes(rrate, sizeof(rrate), (double)read / dt, 1);
	vma_render_bytes(wrate, sizeof(wrate), (double)written / dt, 1);
	fprintf(stderr, "%3d%% (%s of %s) in %s, read: %s/s, write: %s/s\n", percent, done, total,
		took, rrate, wrate);
	p->last_time = now;
	p->last_transferred = transferred;
	p->last_zero = zero;
	p->last_percent = percent;
}

void throttle_start(struct throttle *t, uint64_t kib_per_second)
{
	*t = (struct throttle){.bytes_per_second = kib_per_second * 1024, .start = now_seconds()};
}

void throttle_account(struct throttle *t, uint64_t bytes)
{
	if (!t->bytes_per_second)
		return;
	t->bytes += bytes;
	double due = t->start + (double)t->bytes / (double)t->bytes_per_second;
	double wait = due - now_seconds();
	if (wait > 0) {
		struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
}
