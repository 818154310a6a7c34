/* Absolute deadlines on the monotonic clock: compute once, poll() against it everywhere. */
#ifndef VZ_DEADLINE_H
#define VZ_DEADLINE_H

#include <stdbool.h>
#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC. DEADLINE_NEVER waits forever. */
typedef int64_t deadline_t;
#define DEADLINE_NEVER INT64_MAX

int64_t monotonic_ms(void);
/* A deadline SECONDS from now; SECONDS <= 0 means never. */
deadline_t deadline_in(double seconds);
deadline_t deadline_min(deadline_t a, deadline_t b);
bool deadline_passed(deadline_t d);
/* The timeout argument for poll(): -1 for never, 0 once passed. */
int deadline_poll_timeout(deadline_t d);
/* Sleeps MS milliseconds but never past D. */
void deadline_sleep(int ms, deadline_t d);
/* Parses a non-negative number of seconds ("10", "2.5"); false when it is not one. */
bool parse_seconds(const char *text, double *seconds);

#endif
