/* fuzz-sources: vma-extract/serve.c vma-extract/frame_cache.c vma-extract/reader.c vma-extract/chain.c */
/* vma-extract --serve's NBD server (common/nbd_server.c in its read-only mode, with serve.c's
 * reads and block status), fed the fuzz input as everything one client sends: the flags word,
 * options (structured replies, meta contexts, GO/INFO/LIST/EXPORT_NAME), then requests (reads,
 * block status, refused writes with their payloads). The input goes in through a socketpair
 * from a thread that also drains and discards the server's replies. The archive is made once,
 * in memory, by vma-create's writer:
 *   drive-scsi0 (200704 bytes): cluster 0 data, cluster 1 zero, cluster 2 with blocks 1 and 5
 *   only, the last (partial) cluster data; drive-tpmstate0 (5000 bytes): data
 * and served uncompressed, through the index built by served_open() as the tool builds it.
 * Sessions to start from: fuzz/seeds/nbd_serve.sh. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve.h"
#include "sink.h"
#include "vma_writer.h"

/* cli.c's usage_error() (for --serve fd:N, which this target never parses) needs it. */
const char usage_synopsis[] = "";

/* A stalled step would be a bug; fail it in a second instead of the tool's minute. */
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

/* The archive, written once into an in-memory file; its path for served_open(). */
static const char *archive_path(void)
{
	static char path[64];
	if (path[0])
		return path;
	int fd = memfd_create("fuzz-archive", 0);
	char why[256];
	struct sink *sink = fd < 0 ? NULL : sink_open(fd, SINK_PLAIN, -1, 1, why, sizeof(why));
	struct vma_writer *w = vma_writer_new();
	if (!sink || !w || vma_writer_add_device(w, "drive-scsi0", 200704) != 1 ||
	    vma_writer_add_device(w, "drive-tpmstate0", 5000) != 2 || vma_writer_begin(w, sink) < 0)
		abort();
	static uint8_t data[VMA_CLUSTER_SIZE], sparse[VMA_CLUSTER_SIZE];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + i / 4096 + 1);
	memcpy(sparse + 1 * VMA_BLOCK_SIZE, data, VMA_BLOCK_SIZE);
	memcpy(sparse + 5 * VMA_BLOCK_SIZE, data, VMA_BLOCK_SIZE);
	if (vma_writer_put(w, 1, 0, data) < 0 || vma_writer_put_zero(w, 1, 1) < 0 ||
	    vma_writer_put(w, 1, 2, sparse) < 0 || vma_writer_put(w, 1, 3, data) < 0 ||
	    vma_writer_put(w, 2, 0, data) < 0 || vma_writer_finish(w) < 0 || sink_finish(sink) < 0)
		abort();
	sink_free(sink);
	vma_writer_free(w);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd); /* kept open for every input */
	return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct served *sv;
	if (!sv)
		sv = served_open(archive_path(), NULL, 0, METER_NEVER);
	int pair[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0 ||
	    fcntl(pair[0], F_SETFL, O_NONBLOCK) < 0)
		abort();
	struct client cl = {.fd = pair[1], .data = data, .size = size};
	pthread_t t;
	if (pthread_create(&t, NULL, client_run, &cl) != 0)
		abort();
	char why[512];
	served_serve(sv, -1, pair[0], -1, &timeouts, why, sizeof(why));
	pthread_join(t, NULL);
	close(pair[1]);
	return 0;
}
