/* The ready/go handshake of gafreeze hold --sync-fd and qmpctl --sync-fd over one stream
 * socket: the command connects to its peer, says "ready", and waits; gafreeze freezes the
 * guest and says "go"; the command does its work and exits. Each word is one line. Anything
 * else, or end-of-file, means "no": the command does nothing, gafreeze freezes nothing. */
#ifndef VZ_HANDSHAKE_H
#define VZ_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>

#include "deadline.h"

#define HANDSHAKE_READY "ready"
#define HANDSHAKE_GO "go"

enum handshake_status {
	HANDSHAKE_LINE,    /* a whole line arrived: in line, without its newline */
	HANDSHAKE_AGAIN,   /* part of one; call again when the fd is readable */
	HANDSHAKE_EOF,     /* the other side closed its end */
	HANDSHAKE_ERROR,   /* a read failed, or a line too long for a handshake word */
	HANDSHAKE_TIMEOUT, /* handshake_expect: the deadline passed */
};

struct handshake {
	int fd;
	size_t len;
	char line[16];
};

/* Writes WORD and a newline to FD. False (errno set) when that failed. */
bool handshake_say(int fd, const char *word);
/* One read from H->fd, for a caller that polls it among other fds. */
enum handshake_status handshake_read(struct handshake *h);
/* Waits until D for a line; HANDSHAKE_LINE only when it is WORD, HANDSHAKE_ERROR for another
 * line. */
enum handshake_status handshake_expect(struct handshake *h, const char *word, deadline_t d);

#endif
