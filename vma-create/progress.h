/* Progress lines on stderr in vzdump's format, and the read-rate limit (--bwlimit). */
#ifndef VMA_CREATE_PROGRESS_H
#define VMA_CREATE_PROGRESS_H
#include <stdbool.h>
#include <stdint.h>

struct progress {
	bool enabled;
	uint64_t total;
	int64_t start_ms, last_ms; /* monotonic_ms() */
	uint64_t last_transferred, last_zero;
	int last_percent;
	bool begun;
};

void progress_start(struct progress *p, bool enabled, uint64_t total);
/* Marks the start of the copy, in --listen mode the first write a client sends: times and
 * rates count from here on. Later calls do nothing. */
void progress_begin(struct progress *p);
/* Prints a line when the percentage changed and more than 2 s passed, or when final. */
void progress_update(struct progress *p, uint64_t transferred, uint64_t zero, bool final);

struct throttle {
	uint64_t bytes_per_second; /* 0: no limit */
	int64_t start_ms;
	uint64_t bytes;
};

void throttle_start(struct throttle *t, uint64_t kib_per_second);
/* Accounts for `bytes` just read and sleeps until the average rate is back under the limit. */
void throttle_account(struct throttle *t, uint64_t bytes);

#endif
