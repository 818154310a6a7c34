/* The progress meter of long work, on standard error: on a terminal one line rewritten in place
 * ("\r"), elsewhere (when asked for) a plain line every few seconds, and never on standard
 * output. Cheap enough for the fast paths: meter_update is one comparison until enough bytes
 * have passed to look at the clock again. */
#ifndef VZ_METER_H
#define VZ_METER_H

#include <stdbool.h>
#include <stdint.h>

/* --progress / --no-progress, and neither: on when standard error is a terminal. */
enum meter_mode { METER_AUTO, METER_ALWAYS, METER_NEVER };

struct meter {
	uint64_t total;
	uint64_t next; /* the count at which to look at the clock again; UINT64_MAX when off */
	int64_t start_ms, shown_ms; /* monotonic_ms() */
	bool tty;                   /* rewrite one line in place, else a line each time */
	int last_percent;
	int width; /* of the line on the terminal, to blank what a shorter one leaves */
};

/* TOTAL is what 100% stands for, in bytes. The clock starts now. */
void meter_start(struct meter *m, enum meter_mode mode, uint64_t total);
/* Starts the clock again: the work begins only now (vma-create --listen's first write). */
void meter_begin(struct meter *m);
void meter_tick(struct meter *m, uint64_t done);
/* DONE bytes of the total so far. */
static inline void meter_update(struct meter *m, uint64_t done)
{
	if (done >= m->next)
		meter_tick(m, done);
}
/* The final state, DONE of the total (100% when the work is complete), on a line ended with a
 * newline; the meter is off afterwards. */
void meter_finish(struct meter *m, uint64_t done);
/* Ends the line a meter has left open on the terminal, if any, keeping its last state: call it
 * before printing a message on standard error, so that the message has a line of its own. */
void meter_break(void);

#endif
