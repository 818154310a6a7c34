/* Absolute monotonic deadlines (see deadline.h). */
#include "deadline.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

deadline_t deadline_in(double seconds)
{
	if (seconds <= 0 || seconds > 1e9)
		return DEADLINE_NEVER;
	return monotonic_ms() + (int64_t)(seconds * 1000.0 + 0.5);
}

deadline_t deadline_min(deadline_t a, deadline_t b) { return a < b ? a : b; }

bool deadline_passed(deadline_t d) { return d != DEADLINE_NEVER && monotonic_ms() >= d; }

int deadline_poll_timeout(deadline_t d)
{
	int64_t left;

	if (d == DEADLINE_NEVER)
		return -1;
	left = d - monotonic_ms();
	if (left <= 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

void deadline_sleep(int ms, deadline_t d)
{
	int left = deadline_poll_timeout(d);

	if (left >= 0 && left < ms)
		ms = left;
	if (ms > 0)
		poll(NULL, 0, ms);
}

bool parse_seconds(const char *text, double *seconds)
{
	char *end;
	double v;

	/* Digits and a point only: strtod would also take blanks, signs, hex and "inf". */
	if (text[strspn(text, "0123456789.")] != '\0')
		return false;
	errno = 0;
	v = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !isfinite(v) || v < 0 || v > 1e9)
		return false;
	*seconds = v;
	return true;
}
