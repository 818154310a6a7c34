/* Restore targets (target.h). libnbd is loaded by the first NBD target only (dynlib.h), and
 * driven through its asynchronous API against deadlines, as vma-create's NBD sources are: a
 * server that stops answering ends the restore with a timeout, never holds it forever. */
#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "deadline.h"
#include "dynlib.h"
#include "exitcode.h"
#include "nbduri.h"
#include "target.h"
#include "xalloc.h"

/* The deadlines of vma-create's defaults (its -t and --idle-timeout): the handshake, and silence
 * from a server with commands in flight. */
#define CONNECT_TIMEOUT 30.0
#define IDLE_TIMEOUT 600.0
#define MAX_IN_FLIGHT 64
#define DEFAULT_REQUEST (1u << 20)
#define MAX_ZERO_REQUEST (1u << 30)

#define LIBNBD_FUNCTIONS(X)                                                                        \
	X(nbd_create)                                                                              \
	X(nbd_close)                                                                               \
	X(nbd_get_error)                                                                           \
	X(nbd_get_errno)                                                                           \
	X(nbd_aio_connect_uri)                                                                     \
	X(nbd_aio_is_ready)                                                                        \
	X(nbd_aio_is_dead)                                                                         \
	X(nbd_aio_is_closed)                                                                       \
	X(nbd_poll)                                                                                \
	X(nbd_get_size)                                                                            \
	X(nbd_get_block_size)                                                                      \
	X(nbd_is_read_only)                                                                        \
	X(nbd_can_zero)                                                                            \
	X(nbd_can_flush)                                                                           \
	X(nbd_aio_pwrite)                                                                          \
	X(nbd_aio_zero)                                                                            \
	X(nbd_aio_flush)                                                                           \
	X(nbd_aio_command_completed)                                                               \
	X(nbd_aio_disconnect)
DYNLIB_TABLE(libnbd, "libnbd.so.0", LIBNBD_FUNCTIONS)

struct nbd_target {
	struct nbd_handle *nbd;
	bool can_zero, can_flush;
	bool broken; /* a command failed or timed out: no polite disconnect */
	size_t request;
	int64_t cookies[MAX_IN_FLIGHT];
	int ncookies;
};

/* Zeros to write where a target cannot make a hole (bss: no 1 MiB in the binary). */
static uint8_t zeros[1u << 20];

static int nbd_fail(struct nbd_target *n, const char *what, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: %s", what, libnbd.nbd_get_error());
	n->broken = true;
	return -1;
}

static int wait_for_command(struct nbd_target *n, int64_t cookie, const char *what, char *err,
			    size_t errlen)
{
	deadline_t d = deadline_in(IDLE_TIMEOUT);
	int r;
	while ((r = libnbd.nbd_aio_command_completed(n->nbd, (uint64_t)cookie)) == 0) {
		int moved = libnbd.nbd_poll(n->nbd, deadline_poll_timeout(d));
		if (moved < 0)
			return nbd_fail(n, what, err, errlen);
		if (moved > 0) {
			d = deadline_in(IDLE_TIMEOUT);
		} else if (deadline_passed(d)) {
			snprintf(err, errlen, "%s: timed out after %g s", what, IDLE_TIMEOUT);
			n->broken = true;
			return -1;
		}
	}
	return r < 0 ? nbd_fail(n, what, err, errlen) : 0;
}

int target_nbd_wait(struct target *t, char *err, size_t errlen)
{
	struct nbd_target *n = t->nbd;
	int rc = 0;
	for (int i = 0; i < n->ncookies && rc == 0; i++)
		rc = wait_for_command(n, n->cookies[i], "write", err, errlen);
	n->ncookies = 0;
	return rc;
}

/* Records a command just started; waits for all when as many as allowed are in flight. */
static int in_flight(struct target *t, int64_t cookie, const char *what, char *err, size_t errlen)
{
	struct nbd_target *n = t->nbd;
	if (cookie < 0)
		return nbd_fail(n, what, err, errlen);
	n->cookies[n->ncookies++] = cookie;
	return n->ncookies == MAX_IN_FLIGHT ? target_nbd_wait(t, err, errlen) : 0;
}

int target_nbd_write(struct target *t, const void *buf, size_t len, uint64_t off, char *err,
		     size_t errlen)
{
	struct nbd_target *n = t->nbd;
	for (size_t done = 0; done < len; done += n->request) {
		size_t count = len - done < n->request ? len - done : n->request;
		int64_t c = libnbd.nbd_aio_pwrite(n->nbd, (const uint8_t *)buf + done, count,
						  off + done, NBD_NULL_COMPLETION, 0);
		if (in_flight(t, c, "write", err, errlen) < 0)
			return -1;
	}
	return 0;
}

/* Whether a failed connect means that no server was there to answer. */
static bool unreachable(int e)
{
	return e == ENOENT || e == ECONNREFUSED || e == ETIMEDOUT || e == EHOSTUNREACH ||
		e == ENETUNREACH || e == ECONNRESET;
}

static int open_nbd(struct target *t, int *status, char *err, size_t errlen)
{
	if (libnbd_load(err, errlen) < 0)
		return -1;
	struct nbd_target *n = t->nbd = xcalloc(1, sizeof(*n));
	if (!(n->nbd = libnbd.nbd_create())) {
		snprintf(err, errlen, "%s", libnbd.nbd_get_error());
		return -1;
	}
	deadline_t d = deadline_in(CONNECT_TIMEOUT);
	bool ready = false;
	if (libnbd.nbd_aio_connect_uri(n->nbd, t->spec) == 0) {
		while (!libnbd.nbd_aio_is_ready(n->nbd) && !libnbd.nbd_aio_is_dead(n->nbd) &&
		       !libnbd.nbd_aio_is_closed(n->nbd)) {
			int moved = libnbd.nbd_poll(n->nbd, deadline_poll_timeout(d));
			if (moved < 0)
				break;
			if (moved == 0 && deadline_passed(d)) {
				snprintf(err, errlen, "NBD handshake: timed out after %g s",
					 CONNECT_TIMEOUT);
				*status = EXIT_PEER;
				n->broken = true;
				return -1;
			}
		}
		ready = libnbd.nbd_aio_is_ready(n->nbd);
	}
	if (!ready) {
		snprintf(err, errlen, "%s", libnbd.nbd_get_error());
		if (unreachable(libnbd.nbd_get_errno()))
			*status = EXIT_PEER;
		n->broken = true;
		return -1;
	}
	int64_t size = libnbd.nbd_get_size(n->nbd);
	if (size < 0)
		return nbd_fail(n, "size", err, errlen);
	if (libnbd.nbd_is_read_only(n->nbd) == 1) {
		snprintf(err, errlen, "the export is read-only");
		return -1;
	}
	t->size = (uint64_t)size;
	n->can_zero = libnbd.nbd_can_zero(n->nbd) == 1;
	n->can_flush = libnbd.nbd_can_flush(n->nbd) == 1;
	int64_t maximum = libnbd.nbd_get_block_size(n->nbd, LIBNBD_SIZE_MAXIMUM);
	n->request = DEFAULT_REQUEST;
	if (maximum > 0 && maximum < (int64_t)n->request)
		n->request = (size_t)maximum;
	return 0;
}

int target_open(struct target *t, const char *spec, bool force, int *status, char *err,
		size_t errlen)
{
	*t = (struct target){.spec = spec, .fd = -1, .out = {.fd = -1, .slot = -1}};
	*status = EXIT_FAIL;
	if (nbd_is_uri(spec)) {
		t->kind = TARGET_NBD;
		return open_nbd(t, status, err, errlen);
	}
	struct stat st;
	if (stat(spec, &st) < 0) {
		if (errno != ENOENT) {
			snprintf(err, errlen, "%s", strerror(errno));
			return -1;
		}
		t->kind = TARGET_NEW_FILE;
		return 0;
	}
	if (S_ISREG(st.st_mode) && !force) {
		snprintf(err, errlen, "exists already; give --force to overwrite it in place");
		*status = EXIT_USAGE;
		return -1;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		snprintf(err, errlen, "not a regular file, a block device or an NBD URI");
		return -1;
	}
	/* O_NONBLOCK: a FIFO swapped in meanwhile must not hang the open; O_EXCL: a block
	 * device in use by a file system is refused. */
	int flags = O_WRONLY | O_CLOEXEC | O_NONBLOCK | (S_ISBLK(st.st_mode) ? O_EXCL : 0);
	t->fd = open(spec, flags);
	if (t->fd < 0 || fstat(t->fd, &st) < 0 || fcntl(t->fd, F_SETFL, 0) < 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	t->dev = st.st_dev;
	t->ino = st.st_ino;
	if (S_ISBLK(st.st_mode)) {
		t->kind = TARGET_BLOCK;
		t->dev = st.st_rdev;
		t->ino = 0;
		if (ioctl(t->fd, BLKGETSIZE64, &t->size) < 0) {
			snprintf(err, errlen, "its size: %s", strerror(errno));
			return -1;
		}
	} else if (S_ISREG(st.st_mode)) {
		t->kind = TARGET_FILE;
		t->size = (uint64_t)st.st_size;
	} else {
		snprintf(err, errlen, "not a regular file, a block device or an NBD URI");
		return -1;
	}
	return 0;
}

int target_create(struct target *t, uint64_t size, char *err, size_t errlen)
{
	if (outfile_create(&t->out, t->spec, NULL) < 0 || ftruncate(t->out.fd, (off_t)size) < 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	t->fd = t->out.fd;
	return 0;
}

static int write_zeros(int fd, uint64_t off, uint64_t len, char *err, size_t errlen)
{
	while (len > 0) {
		size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
		ssize_t done = pwrite(fd, zeros, n, (off_t)off);
		if (done < 0 && errno == EINTR)
			continue;
		if (done <= 0) {
			snprintf(err, errlen, "writing zeros: %s",
				 done < 0 ? strerror(errno) : "no progress");
			return -1;
		}
		off += (uint64_t)done;
		len -= (uint64_t)done;
	}
	return 0;
}

/* Errors that mean "this way of zeroing is not supported here", not "the write failed". */
static bool unsupported(int e)
{
	return e == EOPNOTSUPP || e == ENOTTY || e == EINVAL || e == ENOSYS;
}

int target_zero(struct target *t, uint64_t off, uint64_t len, char *err, size_t errlen)
{
	switch (t->kind) {
	case TARGET_NEW_FILE: /* created sparse: a hole already */
		return 0;
	case TARGET_FILE:
		if (fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) == 0 ||
		    fallocate(t->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) == 0)
			return 0;
		if (!unsupported(errno)) {
			snprintf(err, errlen, "zeroing: %s", strerror(errno));
			return -1;
		}
		return write_zeros(t->fd, off, len, err, errlen);
	case TARGET_BLOCK:
		if (off % 512 == 0 && len % 512 == 0) {
			uint64_t range[2] = {off, len};
			if (ioctl(t->fd, BLKZEROOUT, range) == 0)
				return 0;
			if (!unsupported(errno)) {
				snprintf(err, errlen, "zeroing (BLKZEROOUT): %s", strerror(errno));
				return -1;
			}
		}
		return write_zeros(t->fd, off, len, err, errlen);
	case TARGET_NBD:
		if (!t->nbd->can_zero)
			for (uint64_t done = 0; done < len; done += sizeof(zeros)) {
				uint64_t n = len - done < sizeof(zeros) ? len - done
									: sizeof(zeros);
				if (target_nbd_write(t, zeros, (size_t)n, off + done, err, errlen) <
				    0)
					return -1;
			}
		else
			/* No NBD_CMD_FLAG_NO_HOLE: the server may punch a hole (qcow2 stays
			 * sparse). */
			for (uint64_t done = 0; done < len; done += MAX_ZERO_REQUEST) {
				uint64_t n = len - done < MAX_ZERO_REQUEST ? len - done
									   : MAX_ZERO_REQUEST;
				int64_t c = libnbd.nbd_aio_zero(t->nbd->nbd, n, off + done,
								NBD_NULL_COMPLETION, 0);
				if (in_flight(t, c, "write zeroes", err, errlen) < 0)
					return -1;
			}
		return 0;
	}
	return 0;
}

int target_finish(struct target *t, char *err, size_t errlen)
{
	switch (t->kind) {
	case TARGET_NEW_FILE:
		if (outfile_commit(&t->out, 1) < 0) {
			snprintf(err, errlen, "%s", strerror(errno));
			return -1;
		}
		t->fd = -1;
		return 0;
	case TARGET_FILE:
	case TARGET_BLOCK:
		if (fsync(t->fd) < 0) {
			snprintf(err, errlen, "fsync: %s", strerror(errno));
			return -1;
		}
		return 0;
	case TARGET_NBD:
		if (target_nbd_wait(t, err, errlen) < 0)
			return -1;
		if (t->nbd->can_flush) {
			int64_t c = libnbd.nbd_aio_flush(t->nbd->nbd, NBD_NULL_COMPLETION, 0);
			if (c < 0)
				return nbd_fail(t->nbd, "flush", err, errlen);
			if (wait_for_command(t->nbd, c, "flush", err, errlen) < 0)
				return -1;
		}
		return 0;
	}
	return 0;
}

void target_close(struct target *t)
{
	if (t->kind == TARGET_NEW_FILE) {
		outfile_abort(&t->out);
		t->fd = -1;
	}
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	struct nbd_target *n = t->nbd;
	if (!n)
		return;
	if (n->nbd) {
		/* A polite NBD_CMD_DISC, never waiting long on a server that stopped answering. */
		if (!n->broken && libnbd.nbd_aio_disconnect(n->nbd, 0) == 0) {
			deadline_t d = deadline_in(CONNECT_TIMEOUT);
			while (!libnbd.nbd_aio_is_closed(n->nbd) &&
			       !libnbd.nbd_aio_is_dead(n->nbd) &&
			       libnbd.nbd_poll(n->nbd, deadline_poll_timeout(d)) > 0)
				;
		}
		libnbd.nbd_close(n->nbd);
	}
	free(n);
	t->nbd = NULL;
}
