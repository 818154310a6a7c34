/* The progress meter (see meter.h):
 *    42% (1.3 GiB of 3.0 GiB), 330.1 MiB/s, ETA 5s
 *   100% (3.0 GiB of 3.0 GiB) in 9s, 330.1 MiB/s
 * The rate is the average since the start, the ETA what is left at that rate. */
#include "meter.h"

#include <stdio.h>
#include <unistd.h>

#include "deadline.h"
#include "vma.h"

/* How many bytes pass between two looks at the clock: at memory speed a few thousand a second,
 * nothing next to the copying. */
#define CHECK_STEP (256u << 10)
/* How often the line is rewritten on a terminal, and how often a plain line may be printed
 * (then only when the percentage moved), in milliseconds. */
#define TTY_INTERVAL 250
#define PLAIN_INTERVAL 2000

/* The meter whose line on the terminal has no newline yet. */
static struct meter *open_line;

void meter_start(struct meter *m, enum meter_mode mode, uint64_t total)
{
	bool tty = isatty(STDERR_FILENO);
	bool on = mode == METER_ALWAYS || (mode == METER_AUTO && tty);
	*m = (struct meter){.total = total,
			    .next = on ? 0 : UINT64_MAX,
			    .tty = tty,
			    .last_percent = -1};
	m->start_ms = m->shown_ms = monotonic_ms();
}

void meter_begin(struct meter *m) { m->start_ms = m->shown_ms = monotonic_ms(); }

/* Prints the state at NOW: in place on a terminal, else as a line of its own. */
static void show(struct meter *m, uint64_t done, int64_t now, bool final)
{
	int percent = m->total ? (int)(done >= m->total ? 100 : done * 100 / m->total) : 100;
	double seconds = (double)(now - m->start_ms) / 1000.0;
	double rate = (double)done / (seconds > 1e-3 ? seconds : 1e-3);
	char sdone[32], stotal[32], srate[32], stime[32], line[160];
	vma_render_bytes(sdone, sizeof(sdone), (double)done, 1);
	vma_render_bytes(stotal, sizeof(stotal), (double)m->total, 1);
	vma_render_bytes(srate, sizeof(srate), rate, 1);
	int n;
	if (final) {
		vma_render_duration(stime, sizeof(stime), seconds);
		n = snprintf(line, sizeof(line), "%3d%% (%s of %s) in %s, %s/s", percent, sdone,
			     stotal, stime, srate);
	} else if (done > 0 && done < m->total) {
		/* rounded up: "ETA 0s" only when nothing is left */
		vma_render_duration(stime, sizeof(stime), (double)(m->total - done) / rate + 0.999);
		n = snprintf(line, sizeof(line), "%3d%% (%s of %s), %s/s, ETA %s", percent, sdone,
			     stotal, srate, stime);
	} else {
		n = snprintf(line, sizeof(line), "%3d%% (%s of %s), %s/s", percent, sdone, stotal,
			     srate);
	}
	if (n < 0)
		return;
	if (n >= (int)sizeof(line))
		n = (int)sizeof(line) - 1;
	if (m->tty) {
		/* Spaces over what a longer line before left, in one write with the line. */
		fprintf(stderr, "\r%s%*s%s", line, m->width > n ? m->width - n : 0, "",
			final ? "\n" : "");
		m->width = n;
		open_line = final ? NULL : m;
	} else {
		fprintf(stderr, "%s\n", line);
	}
	m->shown_ms = now;
	m->last_percent = percent;
}

void meter_tick(struct meter *m, uint64_t done)
{
	m->next = done + CHECK_STEP;
	int64_t now = monotonic_ms();
	if (m->tty) {
		if (now - m->shown_ms >= TTY_INTERVAL)
			show(m, done, now, false);
		return;
	}
	int percent = m->total ? (int)(done >= m->total ? 100 : done * 100 / m->total) : 100;
	if (now - m->shown_ms >= PLAIN_INTERVAL && percent != m->last_percent && percent < 100)
		show(m, done, now, false);
}

void meter_finish(struct meter *m, uint64_t done)
{
	if (m->next == UINT64_MAX)
		return;
	show(m, done, monotonic_ms(), true);
	m->next = UINT64_MAX;
}

void meter_break(void)
{
	if (!open_line)
		return;
	fputs("\n", stderr);
	open_line->width = 0;
	open_line = NULL;
}
