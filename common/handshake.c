/* The ready/go handshake (handshake.h). */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "handshake.h"

bool handshake_say(int fd, const char *word)
{
	char line[sizeof(((struct handshake *)0)->line)];
	size_t len = strlen(word);
	ssize_t n;

	if (len + 1 > sizeof(line)) {
		errno = EINVAL;
		return false;
	}
	memcpy(line, word, len);
	line[len++] = '\n';
	do
		n = write(fd, line, len);
	while (n < 0 && errno == EINTR);
	if (n >= 0 && (size_t)n != len)
		errno = EIO; /* a few bytes into an empty socket: not expected to happen */
	return n >= 0 && (size_t)n == len;
}

enum handshake_status handshake_read(struct handshake *h)
{
	ssize_t n;
	char *nl;

	/* One byte at a time: what follows the line (nothing, in this protocol) stays unread. */
	do
		n = read(h->fd, h->line + h->len, 1);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN ? HANDSHAKE_AGAIN : HANDSHAKE_ERROR;
	if (n == 0)
		return HANDSHAKE_EOF;
	h->len++;
	nl = memchr(h->line, '\n', h->len);
	if (nl) {
		*nl = '\0';
		h->len = 0;
		return HANDSHAKE_LINE;
	}
	if (h->len >= sizeof(h->line) - 1) {
		errno = EPROTO;
		return HANDSHAKE_ERROR;
	}
	return HANDSHAKE_AGAIN;
}

enum handshake_status handshake_expect(struct handshake *h, const char *word, deadline_t d)
{
	for (;;) {
		struct pollfd p = {.fd = h->fd, .events = POLLIN};
		enum handshake_status st;
		int ready = poll(&p, 1, deadline_poll_timeout(d));

		if (ready < 0 && errno == EINTR)
			continue;
		if (ready < 0)
			return HANDSHAKE_ERROR;
		if (ready == 0)
			return HANDSHAKE_TIMEOUT;
		st = handshake_read(h);
		if (st == HANDSHAKE_AGAIN)
			continue;
		if (st == HANDSHAKE_LINE && strcmp(h->line, word) != 0) {
			errno = EPROTO;
			return HANDSHAKE_ERROR;
		}
		return st;
	}
}
