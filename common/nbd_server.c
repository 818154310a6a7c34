/* NBD server side, fixed newstyle negotiation (nbd_server.h for the two modes). Protocol
 * reference: the NBD project's doc/proto.md. Every client is handled one step at a time (a
 * flags word, an option, or a request with its payload) when poll() says it has data, with a
 * deadline for the rest of that step, so one stalled client cannot hang the others forever.
 * Between steps the deadlines of nbd_timeouts apply: to the handshake, to a client idle while
 * its export lacks data, and to the wait for a client while an export has none (the last two
 * in write-only mode only). The pace (ops->hold_until) is kept by holding back: while over the
 * limit no request of a client in transmission is read and no reply sent, so the clients' own
 * writes wait, all of them at once; the poll loop goes on serving handshakes and keeping the
 * deadlines. Structured replies and meta contexts are offered in read-only mode only: the
 * write-only mode's clients (QEMU's backup job) have never needed them. */
#include <err.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bytes.h"
#include "deadline.h"
#include "meter.h"
#include "nbd_server.h"

#define NBDMAGIC 0x4e42444d41474943ull
#define IHAVEOPT 0x49484156454f5054ull
#define OPT_REPLY_MAGIC 0x0003e889045565a9ull
#define REQUEST_MAGIC 0x25609513u
#define SIMPLE_REPLY_MAGIC 0x67446698u
#define STRUCTURED_REPLY_MAGIC 0x668e33efu

#define FLAG_FIXED_NEWSTYLE 1u
#define FLAG_NO_ZEROES 2u
#define FLAG_C_FIXED_NEWSTYLE 1u
#define FLAG_C_NO_ZEROES 2u

#define OPT_EXPORT_NAME 1u
#define OPT_ABORT 2u
#define OPT_LIST 3u
#define OPT_INFO 6u
#define OPT_GO 7u
#define OPT_STRUCTURED_REPLY 8u
#define OPT_LIST_META_CONTEXT 9u
#define OPT_SET_META_CONTEXT 10u

#define REP_ACK 1u
#define REP_SERVER 2u
#define REP_INFO 3u
#define REP_META_CONTEXT 4u
#define REP_ERR_UNSUP 0x80000001u
#define REP_ERR_POLICY 0x80000002u
#define REP_ERR_INVALID 0x80000003u
#define REP_ERR_UNKNOWN 0x80000006u

#define INFO_EXPORT 0u
#define INFO_BLOCK_SIZE 3u

#define TFLAG_HAS_FLAGS (1u << 0)
#define TFLAG_READ_ONLY (1u << 1)
#define TFLAG_SEND_FLUSH (1u << 2)
#define TFLAG_SEND_DF (1u << 7)
#define TFLAG_SEND_WRITE_ZEROES (1u << 6)
#define TFLAG_CAN_MULTI_CONN (1u << 8)
#define WRITE_ONLY_FLAGS (TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_WRITE_ZEROES)
/* Read-only: every connection sees the same unchanging bytes, so clients may use several. */
#define READ_ONLY_FLAGS                                                                            \
	(TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_SEND_FLUSH | TFLAG_SEND_DF |                    \
	 TFLAG_CAN_MULTI_CONN)

#define CMD_READ 0u
#define CMD_WRITE 1u
#define CMD_DISC 2u
#define CMD_FLUSH 3u
#define CMD_TRIM 4u
#define CMD_CACHE 5u
#define CMD_WRITE_ZEROES 6u
#define CMD_BLOCK_STATUS 7u
#define CMD_FLAG_REQ_ONE (1u << 3)

#define REPLY_FLAG_DONE 1u
#define REPLY_TYPE_NONE 0u
#define REPLY_TYPE_OFFSET_DATA 1u
#define REPLY_TYPE_BLOCK_STATUS 5u
#define REPLY_TYPE_ERROR ((1u << 15) + 1)

/* The one meta context: its id in this server, and its name. */
#define META_BASE_ALLOCATION 1u
#define BASE_ALLOCATION "base:allocation"
/* Descriptors in one block status reply at most. */
#define MAX_EXTENTS 1024

/* Block sizes advertised (NBD_INFO_BLOCK_SIZE): write-only mode takes 512-byte sectors and
 * likes whole VMA clusters; read-only mode reads any byte and likes the archive's 4 KiB blocks. */
#define WO_MIN_BLOCK 512u
#define WO_PREFERRED_BLOCK 65536u
#define RO_MIN_BLOCK 1u
#define RO_PREFERRED_BLOCK 4096u
#define MAX_OPTION_LENGTH 65536u
/* Write-only: no more connections than exports at once (one client per export); an archive
 * holds 254. */
#define MAX_CLIENTS NBD_MAX_CLIENTS
/* Read-only mode: the send buffer asked for each connection (see add_client). */
#define READ_SNDBUF (1 << 20)
/* Read-only mode: the pieces a read's data may come in from ops->read_pieces. */
#define READ_PIECES 64

enum state { WANT_FLAGS, WANT_OPTION, TRANSMISSION };

struct nbd_conn {
	int fd;
	enum state state;
	int export; /* -1 until chosen */
	bool no_zeroes;
	int idle_ms;
	deadline_t handshake_deadline; /* until the client has chosen its export */
	int64_t idle_since;            /* the end of its last step */
	bool timed_out;                /* its last transfer stopped at a deadline */
	bool said_bye;                 /* it sent NBD_CMD_DISC */
	bool held;                     /* a reply to it waits for the pace (held_handle) */
	uint64_t held_handle;
	bool structured; /* NBD_OPT_STRUCTURED_REPLY was negotiated */
	int meta_export; /* base:allocation was selected for this export, or -1 */
	/* Read-only mode: a step's input gathered without blocking before the step runs
	 * (gather_step), so that a client sending its bytes slowly holds up no other; and the
	 * stop fd, which ends any transfer at once. */
	bool read_only;
	int stop_fd;
	uint8_t *in;
	size_t in_len, in_pos, in_cap;
};

struct server {
	const struct nbd_export *exports;
	int nexports;
	const struct nbd_server_ops *ops;
	void *ctx;
	const struct nbd_timeouts *timeouts;
	struct nbd_conn conns[MAX_CLIENTS];
	int nconns;
	/* An export is served to one client only, ever: the first to choose it. A client that
	 * leaves early fails the run (ops->closed), so a second one would have nothing to do. */
	bool claimed[MAX_CLIENTS];
	int nclaimed, ntransmission;
	int64_t last_activity;  /* any client's last step, for the wait for a client */
	int64_t complete_since; /* when the archive had all its data (0: not yet) */
	int64_t hold_end;       /* the end of the pace's latest hold, maybe past (0: none yet) */
	bool failed, timed_out;
	bool read_only, stop;
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

static enum step fatal_timeout(struct server *s, const char *what, int ms)
{
	s->timed_out = !s->failed;
	return fatal(s, "%s: timed out after %g s", what, ms / 1000.0);
}

/* A client broke the protocol: in write-only mode that fails the run (the archive would lack
 * its data); in read-only mode only that client is disconnected, with a warning. */
static enum step client_fault(struct server *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static enum step client_fault(struct server *s, const char *fmt, ...)
{
	char why[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (!s->read_only)
		return fatal(s, "%s", why);
	warnx("%s; disconnected that client", why);
	return STEP_CLOSE;
}

/* The deadline of a transfer starting now. The handshake has one deadline for the whole of
 * it, so a client dripping bytes cannot hold a connection slot; in transmission a transfer (a
 * 1 MiB payload behind a busy archive writer) may take as long as it keeps moving, but in
 * read-only mode, where every other client waits meanwhile, only idle_ms in all. */
static deadline_t transfer_deadline(const struct nbd_conn *c)
{
	return c->state != TRANSMISSION ? c->handshake_deadline : deadline_in(c->idle_ms / 1000.0);
}

/* The deadline after some bytes moved: see transfer_deadline. */
static deadline_t moved(const struct nbd_conn *c, deadline_t d)
{
	return c->state == TRANSMISSION && !c->read_only ? deadline_in(c->idle_ms / 1000.0) : d;
}

/* Waits until the connection is ready for events: -1 on the deadline (then with c->timed_out
 * set) or the stop fd, 0 otherwise (also on EINTR: the caller tries again). */
static int wait_ready(struct nbd_conn *c, deadline_t d, short events)
{
	struct pollfd pfd[2] = {{.fd = c->fd, .events = events},
				{.fd = c->stop_fd, .events = POLLIN}};
	int left = deadline_poll_timeout(d);
	int r = left == 0 ? 0 : poll(pfd, 2, left);
	if (r == 0) {
		c->timed_out = true;
		return -1;
	}
	if (r > 0 && pfd[1].revents)
		return -1; /* stopping: the main loop sees the stop fd next */
	return 0;
}

/* recv all of buf before the deadline (transfer_deadline); -1 on end of stream, error,
 * timeout or the stop fd. What gather_step collected is taken first. */
static int receive(struct nbd_conn *c, void *buf, size_t len)
{
	deadline_t d = transfer_deadline(c);
	char *p = buf;
	if (c->in_pos < c->in_len) {
		size_t n = c->in_len - c->in_pos < len ? c->in_len - c->in_pos : len;
		memcpy(p, c->in + c->in_pos, n);
		c->in_pos += n;
		p += n;
		len -= n;
	}
	if (c->in_pos == c->in_len)
		c->in_pos = c->in_len = 0;
	while (len > 0) {
		ssize_t n = recv(c->fd, p, len, MSG_DONTWAIT);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			d = moved(c, d);
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR) || wait_ready(c, d, POLLIN) < 0)
			return -1;
	}
	return 0;
}

/* Sends the n pieces of iov (changed on the way) before the deadline, in as few system calls
 * as the socket takes them; -1 as receive. */
static int send_pieces(struct nbd_conn *c, struct iovec *iov, int n)
{
	deadline_t d = transfer_deadline(c);
	while (n > 0) {
		if (iov->iov_len == 0) {
			iov++;
			n--;
			continue;
		}
		struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t sent = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (sent > 0) {
			for (; n > 0 && (size_t)sent >= iov->iov_len; iov++, n--)
				sent -= (ssize_t)iov->iov_len;
			if (n > 0) {
				iov->iov_base = (char *)iov->iov_base + sent;
				iov->iov_len -= (size_t)sent;
			}
			d = moved(c, d);
			continue;
		}
		if (sent == 0 || (errno != EAGAIN && errno != EINTR) ||
		    wait_ready(c, d, POLLOUT) < 0)
			return -1;
	}
	return 0;
}

/* The bytes the next step reads before it can answer: its flags, an option with its data
 * (the header says how much), or a request's header (a write's payload is read in the step,
 * under its deadline). */
static size_t step_input(const struct nbd_conn *c)
{
	if (c->state == WANT_FLAGS)
		return 4;
	if (c->state != WANT_OPTION)
		return 28;
	if (c->in_len < 16)
		return 16;
	uint32_t len = get_be32(c->in + 12);
	return len > MAX_OPTION_LENGTH ? 16 : 16 + (size_t)len;
}

/* Read-only mode: collects what the client has sent of its next step, without waiting. 1 when
 * the step's input is all there, 0 when more is to come, -1 when the client is gone or out of
 * memory. */
static int gather_step(struct nbd_conn *c)
{
	if (c->in_pos == c->in_len)
		c->in_pos = c->in_len = 0;
	for (;;) {
		size_t need = step_input(c);
		if (c->in_len >= need)
			return 1;
		if (need > c->in_cap) {
			uint8_t *in = realloc(c->in, need);
			if (!in)
				return -1;
			c->in = in;
			c->in_cap = need;
		}
		ssize_t n = recv(c->fd, c->in + c->in_len, need - c->in_len, MSG_DONTWAIT);
		if (n > 0)
			c->in_len += (size_t)n;
		else if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		else
			return -1;
	}
}

int nbd_conn_recv(struct nbd_conn *c, void *buf, size_t len) { return receive(c, buf, len); }
static int conn_send(struct nbd_conn *c, const void *buf, size_t len)
{
	struct iovec iov = {(void *)buf, len};
	return send_pieces(c, &iov, 1);
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
	if (!s->read_only) {
		s->claimed[export] = true;
		s->nclaimed++;
	}
	s->ntransmission++;
}

/* NBD_FLAG_SEND_DF only for a client that negotiated structured replies: the protocol says the
 * server MUST leave it clear otherwise. */
static uint16_t transmission_flags(const struct server *s, const struct nbd_conn *c)
{
	if (!s->read_only)
		return WRITE_ONLY_FLAGS;
	return c->structured ? READ_ONLY_FLAGS : READ_ONLY_FLAGS & ~TFLAG_SEND_DF;
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
	if (option == OPT_GO && !s->read_only && s->claimed[export]) {
		static const char taken[] = "this export already has its client";
		return option_reply(c, option, REP_ERR_POLICY, taken, sizeof(taken) - 1) < 0
			? STEP_CLOSE
			: STEP_OK;
	}
	uint8_t info[14], sizes[14];
	put_be16(info, INFO_EXPORT);
	put_be64(info + 2, s->exports[export].size);
	put_be16(info + 10, transmission_flags(s, c));
	put_be16(sizes, INFO_BLOCK_SIZE);
	put_be32(sizes + 2, s->read_only ? RO_MIN_BLOCK : WO_MIN_BLOCK);
	put_be32(sizes + 6, s->read_only ? RO_PREFERRED_BLOCK : WO_PREFERRED_BLOCK);
	put_be32(sizes + 10, s->read_only ? NBD_MAX_READ : NBD_MAX_WRITE);
	if (option_reply(c, option, REP_INFO, info, 12) < 0 ||
	    option_reply(c, option, REP_INFO, sizes, 14) < 0 ||
	    option_reply(c, option, REP_ACK, NULL, 0) < 0)
		return STEP_CLOSE;
	if (option == OPT_GO) {
		if (c->meta_export != export) /* selected for another export: void */
			c->meta_export = -1;
		enter_transmission(s, c, export);
	}
	return STEP_OK;
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT (read-only mode): the one context
 * there is, base:allocation, listed for no query, "base:" or its name, selected for its name. */
static enum step answer_meta(struct server *s, struct nbd_conn *c, uint32_t option,
			     const uint8_t *data, uint32_t len)
{
	bool set = option == OPT_SET_META_CONTEXT;
	uint32_t namelen = len >= 4 ? get_be32(data) : 0;
	if (len < 8 || namelen > len - 8 || (set && !c->structured))
		return option_reply(c, option, REP_ERR_INVALID, NULL, 0) < 0 ? STEP_CLOSE : STEP_OK;
	int export = find_export(s, (const char *)data + 4, namelen);
	if (export < 0)
		return option_reply(c, option, REP_ERR_UNKNOWN, NULL, 0) < 0 ? STEP_CLOSE : STEP_OK;
	const uint8_t *p = data + 4 + namelen + 4, *end = data + len;
	uint32_t nqueries = get_be32(data + 4 + namelen);
	bool match = !set && nqueries == 0;
	for (uint32_t i = 0; i < nqueries; i++) {
		if (end - p < 4 || (uint64_t)(end - p) - 4 < get_be32(p))
			return option_reply(c, option, REP_ERR_INVALID, NULL, 0) < 0 ? STEP_CLOSE
										     : STEP_OK;
		uint32_t qlen = get_be32(p);
		const char *q = (const char *)p + 4;
		p += 4 + qlen;
		if ((qlen == strlen(BASE_ALLOCATION) && memcmp(q, BASE_ALLOCATION, qlen) == 0) ||
		    (!set && qlen == 5 && memcmp(q, "base:", 5) == 0))
			match = true;
	}
	if (p != end)
		return option_reply(c, option, REP_ERR_INVALID, NULL, 0) < 0 ? STEP_CLOSE : STEP_OK;
	if (set)
		c->meta_export = match ? export : -1;
	if (match) {
		uint8_t reply[4 + sizeof(BASE_ALLOCATION) - 1];
		put_be32(reply, META_BASE_ALLOCATION);
		memcpy(reply + 4, BASE_ALLOCATION, sizeof(BASE_ALLOCATION) - 1);
		if (option_reply(c, option, REP_META_CONTEXT, reply, sizeof(reply)) < 0)
			return STEP_CLOSE;
	}
	return option_reply(c, option, REP_ACK, NULL, 0) < 0 ? STEP_CLOSE : STEP_OK;
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
		return client_fault(s, "client sent garbage during negotiation (no option magic)");
	uint32_t option = get_be32(h + 8), len = get_be32(h + 12);
	if (len > MAX_OPTION_LENGTH)
		return client_fault(s, "client sent an option of %u bytes", len);
	uint8_t *data = malloc(len ? len : 1);
	if (!data)
		return fatal(s, "out of memory");
	enum step r = STEP_CLOSE;
	if (nbd_conn_recv(c, data, len) < 0)
		goto out;
	switch (option) {
	case OPT_EXPORT_NAME: {
		int export = find_export(s, (const char *)data, len);
		if (export < 0 || (!s->read_only && s->claimed[export]))
			goto out; /* this option has no error reply: hang up */
		uint8_t reply[10 + 124] = {0};
		put_be64(reply, s->exports[export].size);
		put_be16(reply + 8, transmission_flags(s, c));
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
	case OPT_STRUCTURED_REPLY:
		if (!s->read_only)
			goto unsupported;
		if (len == 0)
			c->structured = true;
		r = option_reply(c, option, len == 0 ? REP_ACK : REP_ERR_INVALID, NULL, 0) < 0
			? STEP_CLOSE
			: STEP_OK;
		break;
	case OPT_LIST_META_CONTEXT:
	case OPT_SET_META_CONTEXT:
		if (!s->read_only)
			goto unsupported;
		r = answer_meta(s, c, option, data, len);
		break;
	default: /* TLS…; write-only mode: structured replies, meta contexts */
	unsupported:
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

static int structured_header(struct nbd_conn *c, uint16_t flags, uint16_t type, uint64_t handle,
			     uint32_t len)
{
	uint8_t r[20];
	put_be32(r, STRUCTURED_REPLY_MAGIC);
	put_be16(r + 4, flags);
	put_be16(r + 6, type);
	put_be64(r + 8, handle);
	put_be32(r + 16, len);
	return conn_send(c, r, sizeof(r));
}

/* A READ's successful reply: its header (a structured reply's when off is given, with the
 * offset) into iov[0], sent with the data in the n pieces after it, together. */
static int data_reply(struct nbd_conn *c, uint64_t handle, const uint64_t *off, struct iovec *iov,
		      int n, uint32_t len)
{
	uint8_t h[28];
	size_t hlen = 16;
	if (off) {
		put_be32(h, STRUCTURED_REPLY_MAGIC);
		put_be16(h + 4, REPLY_FLAG_DONE);
		put_be16(h + 6, REPLY_TYPE_OFFSET_DATA);
		put_be64(h + 8, handle);
		put_be32(h + 16, 8 + len);
		put_be64(h + 20, *off);
		hlen = 28;
	} else {
		put_be32(h, SIMPLE_REPLY_MAGIC);
		put_be32(h + 4, 0);
		put_be64(h + 8, handle);
	}
	iov[0] = (struct iovec){h, hlen};
	return send_pieces(c, iov, n + 1);
}

/* The reply to a READ: the data, or the error. */
static enum step read_reply(struct nbd_conn *c, uint64_t handle, uint32_t error, uint64_t off,
			    const void *data, uint32_t len)
{
	int rc;
	struct iovec iov[2] = {{0}, {(void *)data, len}};
	if (!c->structured && !error) {
		rc = data_reply(c, handle, NULL, iov, 1, len);
	} else if (!c->structured) {
		rc = simple_reply(c, handle, error) == STEP_OK ? 0 : -1;
	} else if (error) {
		uint8_t e[6];
		put_be32(e, error);
		put_be16(e + 4, 0); /* no message */
		rc = structured_header(c, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, handle, sizeof(e));
		if (rc == 0)
			rc = conn_send(c, e, sizeof(e));
	} else if (len == 0) {
		rc = structured_header(c, REPLY_FLAG_DONE, REPLY_TYPE_NONE, handle, 0);
	} else {
		rc = data_reply(c, handle, &off, iov, 1, len);
	}
	return rc < 0 ? STEP_CLOSE : STEP_OK;
}

/* NBD_CMD_BLOCK_STATUS for base:allocation: the extents from off on, as the callback sees
 * them, adjacent ones with the same flags merged; one with REQ_ONE. */
static enum step block_status_reply(struct server *s, struct nbd_conn *c, uint64_t handle,
				    uint16_t flags, uint64_t off, uint32_t len)
{
	uint8_t buf[4 + 8 * MAX_EXTENTS];
	int max = flags & CMD_FLAG_REQ_ONE ? 1 : MAX_EXTENTS, n = 0;
	uint32_t last = 0;
	put_be32(buf, META_BASE_ALLOCATION);
	for (uint64_t left = len; left > 0;) {
		uint64_t run = 0;
		uint32_t state = s->ops->block_status(s->ctx, c->export, off, left, &run);
		if (run == 0 || run > left)
			run = left;
		if (n > 0 && state == last) {
			uint8_t *d = buf + 4 + 8 * (n - 1);
			put_be32(d, get_be32(d) + (uint32_t)run);
		} else if (n == max) {
			break;
		} else {
			put_be32(buf + 4 + 8 * n, (uint32_t)run);
			put_be32(buf + 8 + 8 * n, state);
			n++;
			last = state;
		}
		off += run;
		left -= run;
	}
	uint32_t size = 4 + 8 * (uint32_t)n;
	if (structured_header(c, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, handle, size) < 0 ||
	    conn_send(c, buf, size) < 0)
		return STEP_CLOSE;
	return STEP_OK;
}

/* A READ answered from the callback's own memory (ops->read_pieces), the outcome in *r; false
 * when it cannot be (then it is read into a buffer). */
static bool try_pieces(struct server *s, struct nbd_conn *c, uint64_t handle, uint64_t off,
		       uint32_t len, enum step *r)
{
	if (!s->ops->read_pieces)
		return false;
	struct iovec iov[1 + READ_PIECES];
	int n = 0;
	int error = s->ops->read_pieces(s->ctx, c->export, off, len, iov + 1, READ_PIECES, &n);
	if (error < 0)
		return false;
	if (error) {
		*r = read_reply(c, handle, (uint32_t)error, off, NULL, 0);
		return true;
	}
	int rc = data_reply(c, handle, c->structured ? &off : NULL, iov, n, len);
	s->ops->release(s->ctx);
	*r = rc < 0 ? STEP_CLOSE : STEP_OK;
	return true;
}

/* A request in read-only mode: reads and block status are served, writes refused (their
 * payload read and dropped first, so that the stream stays in step). */
static enum step handle_read_only(struct server *s, struct nbd_conn *c, uint16_t type,
				  uint16_t flags, uint64_t handle, uint64_t off, uint32_t len)
{
	const struct nbd_export *e = &s->exports[c->export];
	bool in_range = off <= e->size && len <= e->size - off;
	switch (type) {
	case CMD_READ: {
		if (!in_range || len > NBD_MAX_READ)
			return read_reply(c, handle, EINVAL, off, NULL, 0);
		enum step r;
		if (len && try_pieces(s, c, handle, off, len, &r))
			return r;
		uint8_t *buf = malloc(len ? len : 1);
		if (!buf)
			return read_reply(c, handle, ENOMEM, off, NULL, 0);
		int error = len ? s->ops->read(s->ctx, c->export, off, len, buf) : 0;
		r = read_reply(c, handle, (uint32_t)error, off, buf, len);
		free(buf);
		return r;
	}
	case CMD_WRITE: {
		if (len > NBD_MAX_READ)
			return client_fault(s, "%s: a client sent a write of %u bytes", e->name,
					    len);
		uint8_t sink[65536];
		for (uint32_t left = len; left > 0;) {
			uint32_t n = left < sizeof(sink) ? left : (uint32_t)sizeof(sink);
			if (nbd_conn_recv(c, sink, n) < 0)
				return STEP_CLOSE;
			left -= n;
		}
		return simple_reply(c, handle, EPERM);
	}
	case CMD_TRIM:
	case CMD_WRITE_ZEROES:
		return simple_reply(c, handle, EPERM);
	case CMD_FLUSH:
	case CMD_CACHE:
		return simple_reply(c, handle, 0);
	case CMD_DISC:
		return STEP_CLOSE;
	case CMD_BLOCK_STATUS:
		if (!c->structured || c->meta_export != c->export || !in_range || len == 0)
			return simple_reply(c, handle, EINVAL);
		return block_status_reply(s, c, handle, flags, off, len);
	default:
		return simple_reply(c, handle, EINVAL);
	}
}

/* Whether the pace holds the clients back now (asking it first). The end of its hold, even once
 * passed, counts as activity: the clients it held back were not idle. */
static bool holding(struct server *s)
{
	int64_t until = s->ops->hold_until ? s->ops->hold_until(s->ctx) : 0;
	if (until > s->hold_end)
		s->hold_end = until;
	return s->hold_end > monotonic_ms();
}

/* The success reply to a request, held back while over the pace: the client's write is not
 * done until the time its bytes may take (flush_held sends it). */
static enum step ok_reply(struct server *s, struct nbd_conn *c, uint64_t handle)
{
	if (!holding(s))
		return simple_reply(c, handle, 0);
	c->held = true;
	c->held_handle = handle;
	return STEP_OK;
}

static enum step handle_request(struct server *s, struct nbd_conn *c)
{
	uint8_t h[28];
	char why[512] = "";
	if (nbd_conn_recv(c, h, sizeof(h)) < 0)
		return STEP_CLOSE;
	if (get_be32(h) != REQUEST_MAGIC)
		return client_fault(s, "client of %s sent garbage (no request magic)",
				    s->exports[c->export].name);
	uint16_t type = get_be16(h + 6);
	uint64_t handle = get_be64(h + 8), off = get_be64(h + 16);
	uint32_t len = get_be32(h + 24);
	if (s->read_only)
		return handle_read_only(s, c, type, get_be16(h + 4), handle, off, len);
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
		return ok_reply(s, c, handle);
	case CMD_DISC:
		c->said_bye = true;
		return STEP_CLOSE;
	case CMD_READ:
		meter_break(); /* the message on a line of its own */
		warnx("%s: a client tried to read; exports are write-only", e->name);
		return simple_reply(c, handle, EINVAL);
	default:
		return simple_reply(c, handle, EINVAL);
	}
	if (error && c->timed_out)
		return fatal_timeout(s, "%s: the client stopped in the middle of a write",
				     s->timeouts->idle_ms);
	if (error) {
		simple_reply(c, handle, (uint32_t)error);
		return fatal(s, "%s", why);
	}
	return ok_reply(s, c, handle);
}

static enum step step_client(struct server *s, struct nbd_conn *c)
{
	if (c->read_only) {
		int r = gather_step(c);
		if (r <= 0)
			return r < 0 ? STEP_CLOSE : STEP_OK;
	}
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
	bool said_bye = c->said_bye;
	close(c->fd);
	free(c->in);
	s->conns[i] = s->conns[--s->nconns];
	if (export >= 0) {
		s->ntransmission--;
		char why[512] = "";
		if (notify && s->ops->closed &&
		    s->ops->closed(s->ctx, export, said_bye, why, sizeof(why)) < 0)
			fatal(s, "%s", why);
	}
}

/* A step of client i ended in a timeout: a client still in its handshake has taken nothing
 * and is dropped; one that had chosen its export fails the run (write-only mode) or is dropped
 * too (read-only mode). */
static void timed_out(struct server *s, int i)
{
	struct nbd_conn *c = &s->conns[i];
	if (c->state == TRANSMISSION && s->read_only) {
		warnx("%s: a client stopped in the middle of a request for %g s; disconnected it",
		      s->exports[c->export].name, s->timeouts->idle_ms / 1000.0);
		close_conn(s, i, false);
		return;
	}
	if (c->state != TRANSMISSION) {
		meter_break();
		warnx("client handshake: timed out after %g s; disconnected it",
		      s->timeouts->handshake_ms / 1000.0);
		close_conn(s, i, false);
		return;
	}
	char what[300];
	snprintf(what, sizeof(what), "%s: the client stopped in the middle of a request",
		 s->exports[c->export].name);
	fatal_timeout(s, what, s->timeouts->idle_ms);
}

/* Takes a connected client on fd (closed here on failure) and greets it. */
static void add_client(struct server *s, int fd)
{
	if (s->nconns == MAX_CLIENTS) {
		close(fd);
		return;
	}
	/* A read's reply goes out in fewer sends and wake-ups of its client when the socket
	 * takes more than its default (208 KiB on Linux: less than the 256 KiB nbdcopy asks
	 * for); the kernel caps it at net.core.wmem_max, and a failure leaves the default. */
	int sndbuf = READ_SNDBUF;
	if (s->read_only)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	struct nbd_conn *c = &s->conns[s->nconns++];
	*c = (struct nbd_conn){
		.fd = fd,
		.state = WANT_FLAGS,
		.export = -1,
		.idle_ms = s->timeouts->idle_ms,
		.handshake_deadline = deadline_in(s->timeouts->handshake_ms / 1000.0),
		.idle_since = monotonic_ms(),
		.meta_export = -1,
		.read_only = s->read_only,
		.stop_fd = s->read_only ? s->ops->stop_fd : -1};
	uint8_t greeting[18];
	put_be64(greeting, NBDMAGIC);
	put_be64(greeting + 8, IHAVEOPT);
	put_be16(greeting + 16, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
	if (conn_send(c, greeting, sizeof(greeting)) < 0)
		close_conn(s, s->nconns - 1, false);
}

/* Connections that may negotiate at once beyond one per export without a client. */
#define SPARE_NEGOTIATIONS 4

/* Accepts a connection while an export has no client yet; one that comes when every export
 * has its client is closed at once, so that it holds nothing, not even the end of the run: one
 * idle extra client once kept a live backup waiting for it. Connections still negotiating
 * are bounded, but not to one per export: a connection that idles in its handshake must not
 * keep out the client the export is for (the first to pick an export gets it; the idler is
 * dropped at its handshake deadline). */
static enum step accept_client(struct server *s, int listen_fd)
{
	int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0 && (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED))
		return STEP_OK;
	/* Serving read-only, a connection that cannot be taken is that client's loss, not the
	 * others': out of descriptors (waited out a little, since the listening socket stays
	 * readable), or a network error accept(2) says to treat as EAGAIN. */
	if (fd < 0 && s->read_only) {
		warnx("accept: %s", strerror(errno));
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			poll(NULL, 0, 100);
		return STEP_OK;
	}
	if (fd < 0)
		return fatal(s, "accept: %s", strerror(errno));
	if (s->read_only) {
		if (s->nconns == MAX_CLIENTS) {
			close(fd);
			warnx("refused a connection: %d clients already", MAX_CLIENTS);
		} else {
			add_client(s, fd);
		}
		return STEP_OK;
	}
	if (s->nclaimed == s->nexports ||
	    s->nconns - s->ntransmission >= s->nexports - s->nclaimed + SPARE_NEGOTIATIONS) {
		close(fd);
		meter_break();
		warnx("refused a connection: every export has its client");
		return STEP_OK;
	}
	add_client(s, fd);
	return STEP_OK;
}

static deadline_t after(int64_t since, int ms) { return ms > 0 ? since + ms : DEADLINE_NEVER; }

/* A time, but not before the pace's latest hold ends: a client it holds back is not idle, and
 * neither is the server pacing them. */
static int64_t past_hold(const struct server *s, int64_t t)
{
	return t > s->hold_end ? t : s->hold_end;
}

/* Sends the replies the pace held back, once it lets go; a client gone meanwhile is closed.
 * Whether there were any. */
static bool flush_held(struct server *s)
{
	bool any = false;
	for (int i = s->nconns - 1; i >= 0 && !s->failed; i--) {
		struct nbd_conn *c = &s->conns[i];
		if (!c->held)
			continue;
		any = true;
		c->held = false;
		c->timed_out = false;
		enum step r = simple_reply(c, c->held_handle, 0);
		c->idle_since = s->last_activity = monotonic_ms();
		if (r == STEP_CLOSE && c->timed_out)
			timed_out(s, i);
		else if (r == STEP_CLOSE)
			close_conn(s, i, true);
	}
	return any;
}

/* Whether client c's idle deadline counts: only while its export still lacks data (QEMU's
 * job for a small disk ends long before the one for a large disk), and not while it waits for
 * a reply the pace holds back. */
static bool idle_matters(const struct server *s, const struct nbd_conn *c)
{
	return !s->read_only && c->state == TRANSMISSION && !c->held &&
		!s->ops->export_complete(s->ctx, c->export);
}

static bool waiting_for_client(const struct server *s, int listen_fd)
{
	return !s->read_only && listen_fd >= 0 && s->nclaimed < s->nexports;
}

/* Whether the work is done: write-only mode, once complete (or the one client given is gone);
 * read-only mode, once told to stop (or the one client given is gone). */
static bool finished(const struct server *s, int listen_fd)
{
	if (s->read_only)
		return s->stop || (listen_fd < 0 && s->nconns == 0);
	return s->nconns == 0 && (listen_fd < 0 || s->ops->complete(s->ctx));
}

static bool complete(const struct server *s) { return !s->read_only && s->ops->complete(s->ctx); }

/* The nearest deadline of all, the end of a hold (held) included. */
static deadline_t next_deadline(const struct server *s, int listen_fd, bool held)
{
	deadline_t d = DEADLINE_NEVER;
	for (int i = 0; i < s->nconns; i++) {
		const struct nbd_conn *c = &s->conns[i];
		if (c->state != TRANSMISSION)
			d = deadline_min(d, c->handshake_deadline);
		else if (idle_matters(s, c))
			d = deadline_min(d, past_hold(s, after(c->idle_since, c->idle_ms)));
	}
	if (waiting_for_client(s, listen_fd))
		d = deadline_min(d, after(past_hold(s, s->last_activity), s->timeouts->idle_ms));
	if (s->complete_since)
		d = deadline_min(d, after(past_hold(s, s->complete_since), s->timeouts->idle_ms));
	if (held)
		d = deadline_min(d, s->hold_end);
	return d;
}

/* Data waiting on fd right now: a client whose request came in while the server was busy
 * with another one is not idle. */
static bool readable(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	return poll(&pfd, 1, 0) > 0;
}

static void check_deadlines(struct server *s, int listen_fd)
{
	for (int i = s->nconns - 1; i >= 0 && !s->failed; i--) {
		struct nbd_conn *c = &s->conns[i];
		if (c->state != TRANSMISSION && deadline_passed(c->handshake_deadline)) {
			timed_out(s, i);
		} else if (idle_matters(s, c) &&
			   deadline_passed(past_hold(s, after(c->idle_since, c->idle_ms))) &&
			   !readable(c->fd)) {
			char what[300];
			snprintf(what, sizeof(what), "%s: no request from its client",
				 s->exports[c->export].name);
			fatal_timeout(s, what, c->idle_ms);
		}
	}
	if (!s->failed && waiting_for_client(s, listen_fd) &&
	    deadline_passed(after(past_hold(s, s->last_activity), s->timeouts->idle_ms))) {
		int e = 0;
		while (s->claimed[e])
			e++;
		char what[300];
		snprintf(what, sizeof(what), "%s: waiting for a client", s->exports[e].name);
		fatal_timeout(s, what, s->timeouts->idle_ms);
	}
}

int nbd_serve(int listen_fd, int client_fd, const struct nbd_export *exports, int nexports,
	      const struct nbd_server_ops *ops, void *ctx, const struct nbd_timeouts *timeouts,
	      char *err, size_t errlen)
{
	struct server s = {.exports = exports,
			   .nexports = nexports,
			   .ops = ops,
			   .ctx = ctx,
			   .timeouts = timeouts,
			   .last_activity = monotonic_ms(),
			   .err = err,
			   .errlen = errlen,
			   .read_only = ops->write == NULL};
	if (nexports > MAX_CLIENTS) {
		snprintf(err, errlen, "%d exports; at most %d", nexports, MAX_CLIENTS);
		if (client_fd >= 0)
			close(client_fd);
		return -1;
	}
	if (client_fd >= 0)
		add_client(&s, client_fd);
	/* Without a listening socket (poll() skips the fd -1), until that one client is gone. */
	while (!s.failed && !finished(&s, listen_fd)) {
		bool held = holding(&s);
		if (!held && flush_held(&s))
			continue; /* the loop's condition again: a client may have gone */
		struct pollfd pfds[MAX_CLIENTS + 2];
		pfds[0] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
		/* While the pace holds, clients in transmission are not read (poll skips fd -1). */
		for (int i = 0; i < s.nconns; i++)
			pfds[i + 1] = (struct pollfd){
				.fd = held && s.conns[i].state == TRANSMISSION ? -1 : s.conns[i].fd,
				.events = POLLIN};
		int n = s.nconns;
		pfds[n + 1] = (struct pollfd){.fd = s.read_only ? ops->stop_fd : -1,
					      .events = POLLIN};
		if (poll(pfds, (nfds_t)n + 2,
			 deadline_poll_timeout(next_deadline(&s, listen_fd, held))) < 0) {
			if (errno == EINTR)
				continue;
			fatal(&s, "poll: %s", strerror(errno));
			break;
		}
		/* Clients first, from the last, so closing one does not skip another. */
		for (int i = n - 1; i >= 0 && !s.failed; i--) {
			if (!pfds[i + 1].revents)
				continue;
			struct nbd_conn *c = &s.conns[i];
			c->timed_out = false;
			enum step r = step_client(&s, c);
			c->idle_since = s.last_activity = monotonic_ms();
			if (r == STEP_CLOSE && c->timed_out)
				timed_out(&s, i);
			else if (r == STEP_CLOSE)
				close_conn(&s, i, true);
		}
		if (pfds[n + 1].revents) {
			s.stop = true;
			break;
		}
		if (!s.failed && pfds[0].revents & POLLIN)
			accept_client(&s, listen_fd);
		holding(&s); /* the latest hold's end, for the deadlines */
		if (!s.failed)
			check_deadlines(&s, listen_fd);
		/* Once the archive has all its data, a connection still negotiating can get
		 * nothing: it does not hold the end. */
		for (int i = s.nconns - 1; i >= 0 && !s.failed && complete(&s); i--)
			if (s.conns[i].state != TRANSMISSION)
				close_conn(&s, i, false);
		/* The clients still connected then get the idle timeout to hang up, and are
		 * disconnected after it: no client can hold the end of a complete archive. */
		if (!s.failed && listen_fd >= 0 && s.nconns > 0 && complete(&s)) {
			if (!s.complete_since) {
				s.complete_since = monotonic_ms();
			} else if (deadline_passed(after(past_hold(&s, s.complete_since),
							 timeouts->idle_ms))) {
				meter_break();
				warnx("the archive is complete; disconnected %d client(s) still "
				      "connected after %g s",
				      s.nconns, timeouts->idle_ms / 1000.0);
				while (s.nconns > 0)
					close_conn(&s, s.nconns - 1, false);
			}
		}
	}
	while (s.nconns > 0)
		close_conn(&s, s.nconns - 1, false);
	if (s.failed)
		return s.timed_out ? NBD_SERVE_TIMEOUT : -1;
	return 0;
}
