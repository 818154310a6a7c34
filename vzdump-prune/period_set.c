/*
 * Period ids of a rule mostly come in runs, but not always in order (a clock set back by a
 * zone change repeats wall-clock hours), so membership is a real set, not a "last seen" check.
 */
#include <stdlib.h>
#include <string.h>

#include "period_set.h"

static size_t slot_of(const struct period_set *s, int64_t id)
{
	/* Fibonacci hashing spreads the dense, structured ids (e.g. 20240110) over the table. */
	return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ULL) >> 17) & s->mask;
}

bool period_set_init(struct period_set *s, size_t max_ids)
{
	size_t capacity = 16;

	while (capacity < 2 * max_ids)
		capacity *= 2;
	s->ids = malloc(capacity * sizeof(*s->ids));
	s->used = calloc(capacity, 1);
	s->mask = capacity - 1;
	s->size = 0;
	if (!s->ids || !s->used) {
		period_set_free(s);
		return false;
	}
	return true;
}

void period_set_free(struct period_set *s)
{
	free(s->ids);
	free(s->used);
	s->ids = NULL;
	s->used = NULL;
}

void period_set_clear(struct period_set *s)
{
	memset(s->used, 0, s->mask + 1);
	s->size = 0;
}

bool period_set_contains(const struct period_set *s, int64_t id)
{
	for (size_t i = slot_of(s, id);; i = (i + 1) & s->mask) {
		if (!s->used[i])
			return false;
		if (s->ids[i] == id)
			return true;
	}
}

void period_set_add(struct period_set *s, int64_t id)
{
	size_t i = slot_of(s, id);

	for (; s->used[i]; i = (i + 1) & s->mask)
		if (s->ids[i] == id)
			return;
	s->used[i] = 1;
	s->ids[i] = id;
	s->size++;
}
