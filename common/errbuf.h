/* Failures reported into the caller's buffer (char *err, size_t errlen), as the readers and
 * parsers in common/ do: the message, and -1 to return at once. */
#ifndef VZ_ERRBUF_H
#define VZ_ERRBUF_H
#include <stddef.h>

__attribute__((format(printf, 3, 4))) int errbuf_set(char *err, size_t errlen, const char *fmt,
						     ...);

#endif
