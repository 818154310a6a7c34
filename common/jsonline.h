/* Line-framed JSON over a socket: one object per line, every wait bounded by a deadline. */
#ifndef VZ_JSONLINE_H
#define VZ_JSONLINE_H

#include <jansson.h>
#include <stddef.h>

#include "deadline.h"

/* A peer's line may not grow past this (libvirt and qemu.qmp use 10 MB too). */
#define JSONLINE_MAX (10 * 1024 * 1024)

enum jsonline_status {
	JSONLINE_OK = 0,
	JSONLINE_TIMEOUT, /* the deadline passed first */
	JSONLINE_EOF,     /* the peer closed the connection */
	JSONLINE_IOERR,   /* read/write failed: errno */
	JSONLINE_TOOLONG, /* a line longer than JSONLINE_MAX */
	JSONLINE_BADJSON, /* a line that is not a JSON object */
	JSONLINE_WOKEN,   /* wake_fd became readable (e.g. a signalfd): stop waiting */
};

struct jsonline {
	int fd;
	char *buf; /* bytes read but not consumed yet */
	size_t len;
	size_t cap;
	int saved_errno; /* for JSONLINE_IOERR */
	int wake_fd;     /* -1, or an fd whose readability ends a wait for input */
};

void jsonline_init(struct jsonline *jl, int fd);
/* Frees the buffer; does not close the fd. */
void jsonline_free(struct jsonline *jl);

/* Next line without its "\r\n" or "\n", NUL-terminated, to be freed by the caller. */
enum jsonline_status jsonline_read_line(struct jsonline *jl, deadline_t d, char **line);

/* Next non-blank line parsed as a JSON object into *OBJ (new reference). For
 * JSONLINE_BADJSON, *OBJ is a JSON string holding the offending line. */
enum jsonline_status jsonline_read(struct jsonline *jl, deadline_t d, json_t **obj);

/* Discards input up to and including the first byte equal to BYTE. */
enum jsonline_status jsonline_skip_through(struct jsonline *jl, unsigned char byte, deadline_t d);

/* Sends OBJ compactly followed by "\n", with FDS attached to the same sendmsg(). PREFIX
 * (may be NULL) is sent first in the same write, e.g. the 0xFF resync byte. */
enum jsonline_status jsonline_write(struct jsonline *jl, const char *prefix, json_t *obj,
				    const int *fds, size_t nfds, deadline_t d);

/* A short English description of a status (uses errno saved for JSONLINE_IOERR). */
const char *jsonline_strstatus(const struct jsonline *jl, enum jsonline_status st);

#endif
