/* Checked allocation (see xalloc.h). */
#include "xalloc.h"

#include <err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exitcode.h"

static void *checked(void *p)
{
	if (!p)
		err(EXIT_FAIL, "out of memory");
	return p;
}

void *xmalloc(size_t size)
{
	/* malloc(0) may return NULL without failing. */
	return checked(malloc(size ? size : 1));
}

void *xcalloc(size_t n, size_t size) { return checked(calloc(n ? n : 1, size ? size : 1)); }

void *xrealloc(void *p, size_t size) { return checked(realloc(p, size ? size : 1)); }

char *xstrdup(const char *s) { return checked(strdup(s)); }

char *xstrndup(const char *s, size_t n) { return checked(strndup(s, n)); }

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	return checked(r < 0 ? NULL : s);
}
