/* NBD server side, fixed newstyle negotiation and simple replies only, write-only exports.
 * Protocol reference: the NBD project's doc/proto.md. Every client is handled one step at a
 * time (a flags word, an option, or a request with its payload) when poll() says it has data,
 * with a deadline for the rest of that step, so one stalled client cannot hang the others
 * forever. */
#include <err.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bytes.h"
#include "deadline.h"
#include "nbd_server.h"

#define NBDMAGIC 0x4e42444d41474943ull
#define IHAVEOPT 0x49484156454f5054ull
#define OPT_REPLY_MAGIC 0x0003e889045565a9ull
#define REQUEST_MAGIC 0x25609513u
#define SIMPLE_REPLY_MAGIC 0x67446698u

#define FLAG_FIXED_NEWSTYLE 1u
#define FLAG_NO_ZEROES 2u
#define FLAG_C_FIXED_NEWSTYLE 1u
#define FLAG_C_NO_ZEROES 2u

#define OPT_EXPORT_NAME 1u
#define OPT_ABORT 2u
#define OPT_LIST 3u
#define OPT_INFO 6u
#define OPT_GO 7u

#define REP_ACK 1u
#define REP_SERVER 2u
#define REP_INFO 3u
#define REP_ERR_UNSUP 0x80000001u
#define REP_ERR_INVALID 0x80000003u
#define REP_ERR_UNKNOWN 0x80000006u

#define INFO_EXPORT 0u
#define INFO_BLOCK_SIZE 3u

#define TFLAG_HAS_FLAGS (1u << 0)
#define TFLAG_SEND_FLUSH (1u << 2)
#define TFLAG_SEND_WRITE_ZEROES (1u << 6)
#define TRANSMISSION_FLAGS (TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_WRITE_ZEROES)

#define CMD_READ 0u
#define CMD_WRITE 1u
#define CMD_DISC 2u
#define CMD_FLUSH 3u
#define CMD_WRITE_ZEROES 6u

#define MIN_BLOCK 512u
#define PREFERRED_BLOCK 65536u
#define MAX_OPTION_LENGTH 65536u
#define MAX_CLIENTS 64

enum state { WANT_FLAGS, WANT_OPTION, TRANSMISSION };

struct nbd_conn {
	int fd;
	enum state state;
	int export; /* -1 until chosen */
	bool no_zeroes;
	int timeout_ms;
};

struct server {
	const struct nbd_export *exports;
	int nexports;
	const struct nbd_server_ops *ops;
	void *ctx;
	struct nbd_conn conns[MAX_CLIENTS];
	int nconns;
	int per_export[256]; /* connections in transmission, by export */
	bool failed;
	char *err;
	size_t errlen;
};

/* Outcome of one step with a client. */
enum step { STEP_OK, STEP_CLOSE, STEP_FATAL };

static enum step fatal(struct server *s, const char *fmt, ...)
{
	if (!s->failed) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(s->err, s->errlen, fmt, ap);
		va_end(ap);
		s->failed = true;
	}
	return STEP_FATAL;
}

/* recv or send all of buf before the deadline; -1 on end of stream, error or timeout. */
static int transfer(struct nbd_conn *c, void *buf, size_t len, bool sending)
{
	deadline_t d = deadline_in(c->timeout_ms / 1000.0);
	char *p = buf;
	while (len > 0) {
		ssize_t n = sending ? send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT)
				    : recv(c->fd, p, len, MSG_DONTWAIT);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			return -1;
		struct pollfd pfd = {.fd = c->fd, .events = sending ? POLLOUT : POLLIN};
		int left = deadline_poll_timeout(d);
		if (left == 0 || poll(&pfd, 1, left) == 0)
			return -1;
	}
	return 0;
}

int nbd_conn_recv(struct nbd_conn *c, void *buf, size_t len)
{
	return transfer(c, buf, len, false);
}
static int conn_send(struct nbd_conn *c, const void *buf, size_t len)
{
	return transfer(c, (void *)buf, len, true);
}

static int option_reply(struct nbd_conn *c, uint32_t option, uint32_t type, const void *data,
			uint32_t len)
{
	uint8_t h[20];
	put_be64(h, OPT_REPLY_MAGIC);
	put_be32(h + 8, option);
	put_be32(h + 12, type);
	put_be32(h + 16, len);
	if (conn_send(c, h, sizeof(h)) < 0)
		return -1;
	return len ? conn_send(c, data, len) : 0;
}

/* The export a name refers to; "" is the only export when there is exactly one. */
static int find_export(const struct server *s, const char *name, size_t len)
{
	if (len == 0 && s->nexports == 1)
		return 0;
	for (int i = 0; i < s->nexports; i++)
		if (strlen(s->exports[i].name) == len && memcmp(s->exports[i].name, name, len) == 0)
			return i;
	return -1;
}

static void enter_transmission(struct server *s, struct nbd_conn *c, int export)
{
	c->state = TRANSMISSION;
	c->export = export;
	s->per_export[export]++;
}

static enum step answer_info_or_go(struct server *s, struct nbd_conn *c, uint32_t option,
				   const uint8_t *data, uint32_t len)
{
	uint32_t namelen = len >= 4 ? get_be32(data) : 0;
	if (len < 6 || namelen > len - 6 ||
	    (len - 6 - namelen) != 2u * get_be16(data + 4 + namelen))
		return option_reply(c, option, REP_ERR_INVALID, NULL, 0) < 0 ? STEP_CLOSE : STEP_OK;
	int export = find_export(s, (const char *)data + 4, namelen);
	if (export < 0)
		return option_reply(c, option, REP_ERR_UNKNOWN, NULL, 0) < 0 ? STEP_CLOSE : STEP_OK;
	uint8_t info[14], sizes[14];
	put_be16(info, INFO_EXPORT);
	put_be64(info + 2, s->exports[export].size);
	put_be16(info + 10, TRANSMISSION_FLAGS);
	put_be16(sizes, INFO_BLOCK_SIZE);
	put_be32(sizes + 2, MIN_BLOCK);
	put_be32(sizes + 6, PREFERRED_BLOCK);
	put_be32(sizes + 10, NBD_MAX_WRITE);
	if (option_reply(c, option, REP_INFO, info, 12) < 0 ||
	    option_reply(c, option, REP_INFO, sizes, 14) < 0 ||
	    option_reply(c, option, REP_ACK, NULL, 0) < 0)
		return STEP_CLOSE;
	if (option == OPT_GO)
		enter_transmission(s, c, export);
	return STEP_OK;
}

static enum step answer_list(struct server *s, struct nbd_conn *c, uint32_t len)
{
	if (len != 0)
		return option_reply(c, OPT_LIST, REP_ERR_INVALID, NULL, 0) < 0 ? STEP_CLOSE
									       : STEP_OK;
	for (int i = 0; i < s->nexports; i++) {
		uint8_t buf[4 + 256];
		size_t n = strlen(s->exports[i].name);
		if (n > 256)
			n = 256;
		put_be32(buf, (uint32_t)n);
		memcpy(buf + 4, s->exports[i].name, n);
		if (option_reply(c, OPT_LIST, REP_SERVER, buf, (uint32_t)(4 + n)) < 0)
			return STEP_CLOSE;
	}
	return option_reply(c, OPT_LIST, REP_ACK, NULL, 0) < 0 ? STEP_CLOSE : STEP_OK;
}

static enum step handle_option(struct server *s, struct nbd_conn *c)
{
	uint8_t h[16];
	if (nbd_conn_recv(c, h, sizeof(h)) < 0)
		return STEP_CLOSE;
	if (get_be64(h) != IHAVEOPT)
		return fatal(s, "client sent garbage during negotiation (no option magic)");
	uint32_t option = get_be32(h + 8), len = get_be32(h + 12);
	if (len > MAX_OPTION_LENGTH)
		return fatal(s, "client sent an option of %u bytes", len);
	uint8_t *data = malloc(len ? len : 1);
	if (!data)
		return fatal(s, "out of memory");
	enum step r = STEP_CLOSE;
	if (nbd_conn_recv(c, data, len) < 0)
		goto out;
	switch (option) {
	case OPT_EXPORT_NAME: {
		int export = find_export(s, (const char *)data, len);
		if (export < 0)
			goto out; /* this option has no error reply: hang up */
		uint8_t reply[10 + 124] = {0};
		put_be64(reply, s->exports[export].size);
		put_be16(reply + 8, TRANSMISSION_FLAGS);
		if (conn_send(c, reply, c->no_zeroes ? 10 : sizeof(reply)) < 0)
			goto out;
		enter_transmission(s, c, export);
		r = STEP_OK;
		break;
	}
	case OPT_ABORT:
		option_reply(c, option, REP_ACK, NULL, 0);
		break;
	case OPT_LIST:
		r = answer_list(s, c, len);
		break;
	case OPT_INFO:
	case OPT_GO:
		r = answer_info_or_go(s, c, option, data, len);
		break;
	default: /* TLS, structured replies, meta contexts…: simple replies only */
		r = option_reply(c, option, REP_ERR_UNSUP, NULL, 0) < 0 ? STEP_CLOSE : STEP_OK;
	}
out:
	free(data);
	return r;
}

static enum step simple_reply(struct nbd_conn *c, uint64_t handle, uint32_t error)
{
	uint8_t r[16];
	put_be32(r, SIMPLE_REPLY_MAGIC);
	put_be32(r + 4, error);
	put_be64(r + 8, handle);
	return conn_send(c, r, sizeof(r)) < 0 ? STEP_CLOSE : STEP_OK;
}

static enum step handle_request(struct server *s, struct nbd_conn *c)
{
	uint8_t h[28];
	char why[512] = "";
	if (nbd_conn_recv(c, h, sizeof(h)) < 0)
		return STEP_CLOSE;
	if (get_be32(h) != REQUEST_MAGIC)
		return fatal(s, "client of %s sent garbage (no request magic)",
			     s->exports[c->export].name);
	uint16_t type = get_be16(h + 6);
	uint64_t handle = get_be64(h + 8), off = get_be64(h + 16);
	uint32_t len = get_be32(h + 24);
	const struct nbd_export *e = &s->exports[c->export];
	bool in_range = off <= e->size && len <= e->size - off;
	int error = 0;
	switch (type) {
	case CMD_WRITE:
		if (len > NBD_MAX_WRITE)
			return fatal(s, "%s: write of %u bytes, more than the %u advertised",
				     e->name, len, NBD_MAX_WRITE);
		if (!in_range) {
			simple_reply(c, handle, ENOSPC);
			return fatal(s, "%s: write past the end (%u bytes at %llu, size %llu)",
				     e->name, len, (unsigned long long)off,
				     (unsigned long long)e->size);
		}
		error = s->ops->write(s->ctx, c->export, off, len, c, why, sizeof(why));
		break;
	case CMD_WRITE_ZEROES:
		if (!in_range) {
			simple_reply(c, handle, ENOSPC);
			return fatal(s, "%s: zero write past the end (%u bytes at %llu, size %llu)",
				     e->name, len, (unsigned long long)off,
				     (unsigned long long)e->size);
		}
		error = s->ops->zero(s->ctx, c->export, off, len, why, sizeof(why));
		break;
	case CMD_FLUSH: /* the archive is flushed once, when complete */
		return simple_reply(c, handle, 0);
	case CMD_DISC:
		return STEP_CLOSE;
	case CMD_READ:
		warnx("%s: a client tried to read; exports are write-only", e->name);
		return simple_reply(c, handle, EINVAL);
	default:
		return simple_reply(c, handle, EINVAL);
	}
	if (error) {
		simple_reply(c, handle, (uint32_t)error);
		return fatal(s, "%s", why);
	}
	return simple_reply(c, handle, 0);
}

static enum step step_client(struct server *s, struct nbd_conn *c)
{
	if (c->state == WANT_FLAGS) {
		uint8_t f[4];
		if (nbd_conn_recv(c, f, 4) < 0)
			return STEP_CLOSE;
		uint32_t flags = get_be32(f);
		if (!(flags & FLAG_C_FIXED_NEWSTYLE) ||
		    flags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES))
			return STEP_CLOSE; /* an old or unknown client: the spec says hang up */
		c->no_zeroes = flags & FLAG_C_NO_ZEROES;
		c->state = WANT_OPTION;
		return STEP_OK;
	}
	return c->state == WANT_OPTION ? handle_option(s, c) : handle_request(s, c);
}

static void close_conn(struct server *s, int i, bool notify)
{
	struct nbd_conn *c = &s->conns[i];
	int export = c->export;
	close(c->fd);
	s->conns[i] = s->conns[--s->nconns];
	if (export >= 0) {
		s->per_export[export]--;
		char why[512] = "";
		if (notify && s->per_export[export] == 0 &&
		    s->ops->closed(s->ctx, export, why, sizeof(why)) < 0)
			fatal(s, "%s", why);
	}
}

/* Takes a connected client on fd (closed here on failure) and greets it. */
static void add_client(struct server *s, int fd, int timeout_ms)
{
	if (s->nconns == MAX_CLIENTS) {
		close(fd);
		return;
	}
	struct nbd_conn *c = &s->conns[s->nconns++];
	*c = (struct nbd_conn){.fd = fd,
			       .state = WANT_FLAGS,
			       .export = -1,
			       .timeout_ms = timeout_ms};
	uint8_t greeting[18];
	put_be64(greeting, NBDMAGIC);
	put_be64(greeting + 8, IHAVEOPT);
	put_be16(greeting + 16, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
	if (conn_send(c, greeting, sizeof(greeting)) < 0)
		close_conn(s, s->nconns - 1, false);
}

static enum step accept_client(struct server *s, int listen_fd, int timeout_ms)
{
	int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return errno == EINTR || errno == EAGAIN || errno == ECONNABORTED
			? STEP_OK
			: fatal(s, "accept: %s", strerror(errno));
	add_client(s, fd, timeout_ms);
	return STEP_OK;
}

int nbd_serve(int listen_fd, int client_fd, const struct nbd_export *exports, int nexports,
	      const struct nbd_server_ops *ops, void *ctx, int idle_timeout_ms, char *err,
	      size_t errlen)
{
	struct server s = {.exports = exports,
			   .nexports = nexports,
			   .ops = ops,
			   .ctx = ctx,
			   .err = err,
			   .errlen = errlen};
	int timeout_ms = idle_timeout_ms > 0 ? idle_timeout_ms : 60000;
	if (client_fd >= 0)
		add_client(&s, client_fd, timeout_ms);
	/* Without a listening socket (poll() skips the fd -1), until that one client is gone. */
	while (!s.failed && !(s.nconns == 0 && (listen_fd < 0 || ops->complete(ctx)))) {
		struct pollfd pfds[MAX_CLIENTS + 1];
		pfds[0] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
		for (int i = 0; i < s.nconns; i++)
			pfds[i + 1] = (struct pollfd){.fd = s.conns[i].fd, .events = POLLIN};
		int n = s.nconns;
		if (poll(pfds, (nfds_t)n + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			fatal(&s, "poll: %s", strerror(errno));
			break;
		}
		/* Clients first, from the last, so closing one does not skip another. */
		for (int i = n - 1; i >= 0 && !s.failed; i--) {
			if (!pfds[i + 1].revents)
				continue;
			if (step_client(&s, &s.conns[i]) == STEP_CLOSE)
				close_conn(&s, i, true);
		}
		if (!s.failed && pfds[0].revents & POLLIN)
			accept_client(&s, listen_fd, timeout_ms);
	}
	while (s.nconns > 0)
		close_conn(&s, s.nconns - 1, false);
	return s.failed ? -1 : 0;
}
