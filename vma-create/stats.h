/* vma-create --stats: the run's figures as one line of JSON, for scripts such as vzdump.sh. */
#ifndef VMA_CREATE_STATS_H
#define VMA_CREATE_STATS_H
#include <stdbool.h>

#include "sink.h"
#include "vma_writer.h"

/* True when JSON can hold the name (it is UTF-8). */
bool stats_name_ok(const char *name);

/* The line, with its "\n", to be freed by the caller; NULL when out of memory. sha256: the
 * archive's, in hex (sink_sha256). */
char *stats_json(const struct vma_writer *w, const struct sink *s, double elapsed,
		 const char *sha256);

#endif
