/* Line-framed JSON (see jsonline.h). Fixed framing rules: QEMU ends lines with "\r\n" (QMP)
 * or "\n" (qemu-ga); both are accepted. */
#include "jsonline.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unixsock.h"

void jsonline_init(struct jsonline *jl, int fd)
{
	memset(jl, 0, sizeof(*jl));
	jl->fd = fd;
	jl->wake_fd = -1;
}

void jsonline_free(struct jsonline *jl)
{
	free(jl->buf);
	jl->buf = NULL;
	jl->len = jl->cap = 0;
}

/* Reads whatever is available (at least one byte) into the buffer, waiting until D. */
static enum jsonline_status fill(struct jsonline *jl, deadline_t d)
{
	struct pollfd p[2] = {{.fd = jl->fd, .events = POLLIN},
			      {.fd = jl->wake_fd, .events = POLLIN}};
	ssize_t n;
	int r;

	if (jl->len >= JSONLINE_MAX)
		return JSONLINE_TOOLONG;
	if (jl->cap - jl->len < 4096) {
		size_t cap = jl->cap ? jl->cap * 2 : 8192;
		char *nb = realloc(jl->buf, cap);

		if (!nb) {
			jl->saved_errno = ENOMEM;
			return JSONLINE_IOERR;
		}
		jl->buf = nb;
		jl->cap = cap;
	}
	for (;;) {
		n = read(jl->fd, jl->buf + jl->len, jl->cap - jl->len);
		if (n > 0) {
			jl->len += (size_t)n;
			return JSONLINE_OK;
		}
		if (n == 0)
			return JSONLINE_EOF;
		if (errno == EINTR)
			continue;
		if (errno == ECONNRESET)
			return JSONLINE_EOF;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			jl->saved_errno = errno;
			return JSONLINE_IOERR;
		}
		r = poll(p, 2, deadline_poll_timeout(d));
		if (r < 0 && errno != EINTR) {
			jl->saved_errno = errno;
			return JSONLINE_IOERR;
		}
		if (r == 0)
			return JSONLINE_TIMEOUT;
		if (p[1].revents & POLLIN)
			return JSONLINE_WOKEN;
	}
}

static void consume(struct jsonline *jl, size_t n)
{
	memmove(jl->buf, jl->buf + n, jl->len - n);
	jl->len -= n;
}

/* jsonline_read_line, also giving the line's length (it may hold NUL bytes). */
static enum jsonline_status read_line(struct jsonline *jl, deadline_t d, char **line,
				      size_t *length)
{
	size_t scanned = 0;

	for (;;) {
		char *nl = jl->len > scanned ? memchr(jl->buf + scanned, '\n', jl->len - scanned)
					     : NULL;
		enum jsonline_status st;

		if (nl) {
			size_t n = (size_t)(nl - jl->buf);
			size_t keep = n;

			if (keep > 0 && jl->buf[keep - 1] == '\r')
				keep--;
			*line = malloc(keep + 1);
			if (!*line) {
				jl->saved_errno = ENOMEM;
				return JSONLINE_IOERR;
			}
			memcpy(*line, jl->buf, keep);
			(*line)[keep] = '\0';
			*length = keep;
			consume(jl, n + 1);
			return JSONLINE_OK;
		}
		scanned = jl->len;
		st = fill(jl, d);
		if (st != JSONLINE_OK)
			return st;
	}
}

enum jsonline_status jsonline_read_line(struct jsonline *jl, deadline_t d, char **line)
{
	size_t length;

	return read_line(jl, d, line, &length);
}

static bool blank(const char *s) { return s[strspn(s, " \t\r")] == '\0'; }

enum jsonline_status jsonline_read(struct jsonline *jl, deadline_t d, json_t **obj)
{
	for (;;) {
		char *line = NULL;
		size_t length = 0;
		enum jsonline_status st = read_line(jl, d, &line, &length);
		json_error_t error;

		if (st != JSONLINE_OK)
			return st;
		if (strlen(line) == length && blank(line)) {
			free(line);
			continue;
		}
		/* By length: a NUL byte inside the line makes it garbage, not its end. */
		*obj = json_loadb(line, length, JSON_REJECT_DUPLICATES, &error);
		if (!*obj || !json_is_object(*obj)) {
			json_decref(*obj);
			/* Keep the line for the caller's message, in printable ASCII. */
			for (size_t i = 0; i < length; i++)
				if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] >= 0x7f)
					line[i] = '?';
			*obj = json_string(line);
			free(line);
			return JSONLINE_BADJSON;
		}
		free(line);
		return JSONLINE_OK;
	}
}

enum jsonline_status jsonline_skip_through(struct jsonline *jl, unsigned char byte, deadline_t d)
{
	for (;;) {
		char *hit = jl->len ? memchr(jl->buf, byte, jl->len) : NULL;
		enum jsonline_status st;

		if (hit) {
			consume(jl, (size_t)(hit - jl->buf) + 1);
			return JSONLINE_OK;
		}
		jl->len = 0;
		st = fill(jl, d);
		if (st != JSONLINE_OK)
			return st;
	}
}

enum jsonline_status jsonline_write(struct jsonline *jl, const char *prefix, json_t *obj,
				    const int *fds, size_t nfds, deadline_t d)
{
	char *text = json_dumps(obj, JSON_COMPACT);
	char *msg;
	size_t plen = prefix ? strlen(prefix) : 0, tlen;
	int r;

	if (!text) {
		jl->saved_errno = ENOMEM;
		return JSONLINE_IOERR;
	}
	tlen = strlen(text);
	msg = malloc(plen + tlen + 2);
	if (!msg) {
		free(text);
		jl->saved_errno = ENOMEM;
		return JSONLINE_IOERR;
	}
	if (plen)
		memcpy(msg, prefix, plen);
	memcpy(msg + plen, text, tlen);
	msg[plen + tlen] = '\n';
	r = unixsock_send(jl->fd, msg, plen + tlen + 1, fds, nfds, d);
	free(text);
	free(msg);
	if (r == 0)
		return JSONLINE_OK;
	if (errno == ETIMEDOUT)
		return JSONLINE_TIMEOUT;
	if (errno == EPIPE || errno == ECONNRESET)
		return JSONLINE_EOF;
	jl->saved_errno = errno;
	return JSONLINE_IOERR;
}

const char *jsonline_strstatus(const struct jsonline *jl, enum jsonline_status st)
{
	switch (st) {
	case JSONLINE_OK:
		return "ok";
	case JSONLINE_TIMEOUT:
		return "timed out";
	case JSONLINE_EOF:
		return "connection closed by the peer";
	case JSONLINE_IOERR:
		return strerror(jl->saved_errno);
	case JSONLINE_TOOLONG:
		return "reply line longer than 10 MB";
	case JSONLINE_BADJSON:
		return "peer sent a line that is not a JSON object";
	case JSONLINE_WOKEN:
		return "interrupted";
	}
	return "unknown error";
}
