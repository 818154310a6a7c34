/* fuzz-sources: vma-create/listen.c vma-create/progress.c */
/* vma-create --listen's NBD server, fed the fuzz input as everything one client sends: the
 * flags word, options, then requests with their payloads. The input goes in through a
 * socketpair from a thread that also drains and discards the server's replies; the server is
 * the tool's own serve_devices_on() with the callbacks that cut writes into clusters for the
 * VMA writer, whose archive goes to /dev/null. The exports are those of
 *   vma-create --listen S drive-scsi0=200704 drive-efidisk0=131072 drive-scsi1=5368709120 \
 *       drive-tpmstate0=5000
 * (a partial last cluster, whole clusters, past 4 GiB, a partial last sector), which the
 * client sessions of fuzz/seeds/nbd_server.sh write. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listen.h"
#include "progress.h"
#include "sink.h"
#include "vma_writer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct {
	const char *name;
	uint64_t size;
} devices[] = {
	{"drive-scsi0", 200704},
	{"drive-efidisk0", 131072},
	{"drive-scsi1", 5368709120},
	{"drive-tpmstate0", 5000},
};

/* A stalled step would be a bug; fail it in a second instead of the tool's minutes. */
static const struct nbd_timeouts timeouts = {.handshake_ms = 1000, .idle_ms = 1000};

struct client {
	int fd;
	const uint8_t *data;
	size_t size;
};

/* The client: sends the input while reading whatever comes back, until the server hangs up. */
static void *client_run(void *arg)
{
	struct client *cl = arg;
	size_t sent = 0;
	bool writing = true;
	if (cl->size == 0) {
		shutdown(cl->fd, SHUT_WR);
		writing = false;
	}
	for (;;) {
		struct pollfd pfd = {.fd = cl->fd, .events = POLLIN | (writing ? POLLOUT : 0)};
		if (poll(&pfd, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			char buf[65536];
			ssize_t n = recv(cl->fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
		}
		if (writing && pfd.revents & POLLOUT) {
			ssize_t n = send(cl->fd, cl->data + sent, cl->size - sent,
					 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n > 0)
				sent += (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				writing = false; /* the server hung up: read to the end */
			if (sent == cl->size) {
				shutdown(cl->fd, SHUT_WR);
				writing = false;
			}
		}
	}
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
	    fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0)
		abort();
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	char why[512];
	struct sink *sink = sink_open(null, SINK_PLAIN, -1, 1, why, sizeof(why));
	struct vma_writer *w = vma_writer_new();
	if (null < 0 || !sink || !w)
		abort();
	for (size_t i = 0; i < sizeof(devices) / sizeof(devices[0]); i++)
		if (vma_writer_add_device(w, devices[i].name, devices[i].size) < 0)
			abort();
	struct progress progress;
	progress_start(&progress, false, METER_NEVER, vma_writer_stats(w, 0).size);
	if (vma_writer_begin(w, sink) < 0)
		abort();

	struct client cl = {.fd = sv[1], .data = data, .size = size};
	pthread_t t;
	if (pthread_create(&t, NULL, client_run, &cl) != 0)
		abort();
	/* As main() does after --listen: the archive is finished when the server succeeded. */
	if (serve_devices_on(w, -1, sv[0], &timeouts, &progress, NULL, why, sizeof(why)) == 0 &&
	    vma_writer_finish(w) == 0)
		sink_finish(sink);
	pthread_join(t, NULL);

	close(sv[1]);
	sink_free(sink);
	vma_writer_free(w);
	close(null);
	return 0;
}
