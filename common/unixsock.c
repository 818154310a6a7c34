/* Unix-domain socket helpers (see unixsock.h). */
#include "unixsock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONNECT_RETRY_MS 50

static int fill_address(struct sockaddr_un *addr, const char *path)
{
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(addr->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr->sun_path, path);
	return 0;
}

int unixsock_connect(const char *path, deadline_t d)
{
	struct sockaddr_un addr;

	if (fill_address(&addr, path) < 0)
		return -1;
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		int saved;

		if (fd < 0)
			return -1;
		/* A unix-socket connect() completes at once or fails; EAGAIN means the
		 * listener's backlog is full (someone else is connecting): try again. */
		if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
			return fd;
		saved = errno;
		close(fd);
		errno = saved;
		if (saved != ENOENT && saved != ECONNREFUSED && saved != EAGAIN && saved != EINTR)
			return -1;
		if (deadline_passed(d))
			return -1;
		deadline_sleep(CONNECT_RETRY_MS, d);
	}
}

int unixsock_listen(const char *path, mode_t mode)
{
	struct sockaddr_un addr, tmp;
	struct stat st;
	mode_t old_umask;
	char tmp_path[sizeof(tmp.sun_path)];
	int fd, r, saved;

	if (fill_address(&addr, path) < 0)
		return -1;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			errno = EEXIST;
			return -1;
		}
		/* Only a stale socket is replaced: one that someone still listens on (a typo
		 * naming QEMU's own monitor socket) would be cut off from its clients. */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		r = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
		saved = errno;
		close(fd);
		if (r == 0 || saved == EAGAIN) {
			errno = EADDRINUSE;
			return -1;
		}
	}
	/* Bound under a temporary name and renamed once listening, so that a client waiting
	 * for PATH to appear never finds it refusing connections. */
	if ((size_t)snprintf(tmp_path, sizeof(tmp_path), "%s.%ld", path, (long)getpid()) >=
		    sizeof(tmp_path) ||
	    fill_address(&tmp, tmp_path) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* Nobody else may connect between bind() and chmod(): create it private. */
	old_umask = umask(0177);
	r = bind(fd, (struct sockaddr *)&tmp, sizeof(tmp));
	umask(old_umask);
	if (r < 0 || chmod(tmp_path, mode) < 0 || listen(fd, 16) < 0 ||
	    rename(tmp_path, path) < 0) {
		saved = errno;
		if (r == 0)
			unlink(tmp_path);
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

static int wait_writable(int fd, deadline_t d)
{
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int r;

	do
		r = poll(&p, 1, deadline_poll_timeout(d));
	while (r < 0 && errno == EINTR);
	if (r == 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	return r < 0 ? -1 : 0;
}

int unixsock_send(int fd, const void *buf, size_t len, const int *fds, size_t nfds, deadline_t d)
{
	union {
		char space[CMSG_SPACE(sizeof(int) * UNIXSOCK_MAX_FDS)];
		struct cmsghdr align;
	} control;
	const char *p = buf;
	bool fds_sent = nfds == 0;

	if (nfds > UNIXSOCK_MAX_FDS) {
		errno = EINVAL;
		return -1;
	}
	while (len > 0 || !fds_sent) {
		struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (!fds_sent) {
			struct cmsghdr *cmsg;

			memset(&control, 0, sizeof(control));
			msg.msg_control = control.space;
			msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			cmsg = CMSG_FIRSTHDR(&msg);
			cmsg->cmsg_level = SOL_SOCKET;
			cmsg->cmsg_type = SCM_RIGHTS;
			cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
		}
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (wait_writable(fd, d) < 0)
					return -1;
				continue;
			}
			return -1;
		}
		fds_sent = true;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
