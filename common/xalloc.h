/* Allocation that cannot fail: out of memory, the tool exits with status 1 (err(3)). Tools
 * use these; the libraries in common/ that report errors to their caller do not. */
#ifndef VZ_XALLOC_H
#define VZ_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
