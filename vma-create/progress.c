/* vzdump's progress line: "%3d%% (X of Y) in T, read: R/s, write: W/s", at most one every 2 s
 * and only when the percentage moved, plus a final 100 % line. */
#include <limits.h>
#include <stdio.h>

#include "deadline.h"
#include "progress.h"
#include "vma.h"

void progress_start(struct progress *p, bool enabled, enum meter_mode meter, uint64_t total)
{
	*p = (struct progress){.enabled = enabled, .total = total, .last_percent = -1};
	p->start_ms = p->last_ms = monotonic_ms();
	meter_start(&p->meter, enabled ? METER_NEVER : meter, total);
}

void progress_begin(struct progress *p)
{
	if (p->begun)
		return;
	p->begun = true;
	p->start_ms = p->last_ms = monotonic_ms();
	meter_begin(&p->meter);
}

void progress_update(struct progress *p, uint64_t transferred, uint64_t zero, bool final)
{
	if (!final)
		meter_update(&p->meter, transferred);
	if (!p->enabled)
		return;
	int64_t now = monotonic_ms();
	int percent = p->total ? (int)(transferred * 100 / p->total) : 100;
	if (!final && (percent == p->last_percent || now - p->last_ms <= 2000))
		return;
	if (final && p->last_percent == 100)
		return;
	double dt = now > p->last_ms ? (double)(now - p->last_ms) / 1000.0 : 1e-3;
	uint64_t read = transferred - p->last_transferred;
	uint64_t written = read - (zero - p->last_zero);
	char done[32], total[32], took[32], rrate[32], wrate[32];
	vma_render_bytes(done, sizeof(done), (double)transferred, 1);
	vma_render_bytes(total, sizeof(total), (double)p->total, 1);
	vma_render_duration(took, sizeof(took), (double)(now - p->start_ms) / 1000.0);
	vma_render_bytes(rrate, sizeof(rrate), (double)read / dt, 1);
	vma_render_bytes(wrate, sizeof(wrate), (double)written / dt, 1);
	fprintf(stderr, "%3d%% (%s of %s) in %s, read: %s/s, write: %s/s\n", percent, done, total,
		took, rrate, wrate);
	p->last_ms = now;
	p->last_transferred = transferred;
	p->last_zero = zero;
	p->last_percent = percent;
}

void throttle_start(struct throttle *t, uint64_t kib_per_second)
{
	*t = (struct throttle){.bytes_per_second = kib_per_second * 1024};
}

void throttle_add(struct throttle *t, uint64_t bytes)
{
	if (!t || !t->bytes_per_second)
		return;
	if (!t->bytes)
		t->start_ms = monotonic_ms();
	t->bytes += bytes;
}

int64_t throttle_due(const struct throttle *t)
{
	if (!t || !t->bytes_per_second || !t->bytes)
		return 0;
	return t->start_ms + (int64_t)((double)t->bytes * 1000.0 / (double)t->bytes_per_second);
}

void throttle_account(struct throttle *t, uint64_t bytes)
{
	throttle_add(t, bytes);
	if (throttle_due(t))
		deadline_sleep(INT_MAX, throttle_due(t));
}
