/* The scripted peer of the QMP and guest-agent fuzz targets (see peer.h). */
#include "peer.h"

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "unixsock.h"

#define MAX_CHUNKS 64
/* A fault of the machine, not of the input: said, and an abort (libFuzzer takes exit() for a
 * failure of the target too, without the stack). */
#define fail(...) (warn(__VA_ARGS__), abort())

static char dir[64], path[128];
static int listen_fd = -1;
static int stop_pipe[2] = {-1, -1}; /* ends the wait for a client that never came */

static void remove_socket(void)
{
	unlink(path);
	rmdir(dir);
}

const char *fuzz_peer_path(void)
{
	if (listen_fd >= 0)
		return path;
	snprintf(dir, sizeof(dir), "%s/vz-fuzz-peer.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(dir))
		fail("mkdtemp %s", dir);
	snprintf(path, sizeof(path), "%s/sock", dir);
	listen_fd = unixsock_listen(path, 0600);
	if (listen_fd < 0)
		fail("listen %s", path);
	if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		fail("pipe");
	atexit(remove_socket);
	return path;
}

static bool send_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false; /* the client left */
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* Until the client has read everything sent so far (or closed: its queue is dropped). */
static void wait_consumed(int fd)
{
	const struct timespec pause = {.tv_nsec = 20000};

	for (int i = 0; i < 50000; i++) {
		int queued = 0;

		if (ioctl(fd, SIOCOUTQ, &queued) < 0 || queued == 0)
			return;
		nanosleep(&pause, NULL);
	}
}

static void serve(const struct fuzz_peer *p, int fd)
{
	size_t off = 0;
	char sink[4096];

	for (int chunks = 0; off < p->size; chunks++) {
		size_t n = p->size - off;

		if (p->chunk && chunks < MAX_CHUNKS && n > p->chunk)
			n = p->chunk;
		if (!send_all(fd, p->data + off, n))
			break;
		off += n;
		if (p->chunk && off < p->size)
			wait_consumed(fd);
	}
	if (!p->keep_open)
		shutdown(fd, SHUT_WR);
	/* Swallow the requests until the client closes. */
	for (;;) {
		ssize_t r = read(fd, sink, sizeof(sink));

		if (r == 0 || (r < 0 && errno != EINTR))
			break;
	}
	close(fd);
}

static void *peer_main(void *arg)
{
	const struct fuzz_peer *p = arg;
	struct pollfd fds[2] = {{.fd = listen_fd, .events = POLLIN},
				{.fd = stop_pipe[0], .events = POLLIN}};

	for (;;) {
		int fd;

		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fail("poll");
		}
		/* A client that connected and left already is served too, so that its
		 * connection does not wait in the backlog for the next input. */
		if (!(fds[0].revents & POLLIN))
			return NULL;
		fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			fail("accept");
		}
		serve(p, fd);
		return NULL;
	}
}

bool fuzz_peer_start(struct fuzz_peer *p, const uint8_t *data, size_t size)
{
	int e;

	if (size == 0)
		return false;
	fuzz_peer_path();
	p->keep_open = data[0] & 0x80;
	p->chunk = data[0] & 0x7f;
	p->data = data + 1;
	p->size = size - 1;
	e = pthread_create(&p->thread, NULL, peer_main, p);
	if (e != 0) {
		errno = e;
		fail("pthread_create");
	}
	return true;
}

void fuzz_peer_finish(struct fuzz_peer *p)
{
	char byte = 0;

	if (write(stop_pipe[1], &byte, 1) < 0)
		fail("write");
	pthread_join(p->thread, NULL);
	while (read(stop_pipe[0], &byte, 1) > 0)
		;
}
