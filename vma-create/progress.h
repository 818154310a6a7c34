/* Progress lines on stderr in vzdump's format (-v) or the terminal's meter (common/meter.h),
 * and the read-rate limit (--bwlimit). */
#ifndef VMA_CREATE_PROGRESS_H
#define VMA_CREATE_PROGRESS_H
#include <stdbool.h>
#include <stdint.h>

#include "meter.h"

struct progress {
	bool enabled;
	uint64_t total;
	int64_t start_ms, last_ms; /* monotonic_ms() */
	uint64_t last_transferred, last_zero;
	int last_percent;
	bool begun;
	struct meter meter; /* off with -v: its lines are the progress then */
};

/* ENABLED: vzdump's lines (-v); METER: --progress, --no-progress or neither. */
void progress_start(struct progress *p, bool enabled, enum meter_mode meter, uint64_t total);
/* Marks the start of the copy, in --listen mode the first write a client sends: times and
 * rates count from here on. Later calls do nothing. */
void progress_begin(struct progress *p);
/* Prints a line when the percentage changed and more than 2 s passed, or when final; the meter
 * follows every call but the final one (see main: it ends when the reading does). */
void progress_update(struct progress *p, uint64_t transferred, uint64_t zero, bool final);

/* The rate limit of --bwlimit, on average since the first bytes accounted for: an idle start
 * (a --listen server waiting for its clients) earns no credit. */
struct throttle {
	uint64_t bytes_per_second; /* 0: no limit */
	int64_t start_ms;          /* monotonic_ms() of the first bytes */
	uint64_t bytes;
};

void throttle_start(struct throttle *t, uint64_t kib_per_second);
/* Accounts for `bytes` just read (t may be NULL: no limit). */
void throttle_add(struct throttle *t, uint64_t bytes);
/* When the average rate is back under the limit (monotonic_ms()); 0 when there is no limit or
 * nothing was accounted for yet. */
int64_t throttle_due(const struct throttle *t);
/* throttle_add, then sleeps until throttle_due. */
void throttle_account(struct throttle *t, uint64_t bytes);

#endif
