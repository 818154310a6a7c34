/* A set of period ids (64-bit integers): open addressing, sized once for its worst case. */
#ifndef VZDUMP_PRUNE_PERIOD_SET_H
#define VZDUMP_PRUNE_PERIOD_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct period_set {
	int64_t *ids;
	unsigned char *used;
	size_t mask; /* capacity - 1; capacity is a power of two */
	size_t size;
};

/* Room for up to MAX_IDS ids. Returns false when out of memory. */
bool period_set_init(struct period_set *s, size_t max_ids);
void period_set_free(struct period_set *s);
void period_set_clear(struct period_set *s);
bool period_set_contains(const struct period_set *s, int64_t id);
/* Adds ID; never fails within the size given to period_set_init(). */
void period_set_add(struct period_set *s, int64_t id);

#endif
