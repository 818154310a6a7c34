/* The decision report: one line (or JSON object) per backup, in list order. */
#ifndef VZDUMP_PRUNE_REPORT_H
#define VZDUMP_PRUNE_REPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "backup.h"

/* "keep", "remove", "protected" or "renamed". */
const char *mark_name(enum mark m);

/* The report as text or JSON, in a malloc'd string; NULL when out of memory. */
char *report_text(const struct backup *list, size_t n);
char *report_json(const struct backup *list, size_t n);

#endif
