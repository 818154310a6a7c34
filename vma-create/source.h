/* Where a device's bytes come from: a regular file, a block device, or an NBD export. */
#ifndef VMA_CREATE_SOURCE_H
#define VMA_CREATE_SOURCE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct source {
	const char *spec; /* as given on the command line */
	uint64_t size;
	/* The most clusters one read should cover: small for a file, whose data is copied and
	 * zero-tested while still in the CPU's cache; the whole extent for an NBD export, whose
	 * reads are split into requests kept in flight together. */
	unsigned read_clusters;
	/* Describes the run starting at off: *len bytes (> 0) that are all known zero (a hole)
	 * or data. 0, or -1 with err set. */
	int (*extent)(struct source *s, uint64_t off, uint64_t *len, bool *zero);
	/* Reads exactly len bytes at off (inside the device). 0, or -1 with err set. */
	int (*read)(struct source *s, uint64_t off, void *buf, size_t len);
	void (*close)(struct source *s);
	char err[512];
	bool timed_out; /* the last failure was the peer not answering in time */
};

/* How long an NBD source may keep vma-create waiting, in seconds; 0 waits forever. */
struct source_timeouts {
	double connect; /* connection and handshake */
	double idle;    /* no reply moving, during a read or block status */
};

/* Open the source named by spec; NULL with a message in errbuf on failure. */
struct source *source_open_file(const char *spec, char *errbuf, size_t errlen);
/* The same for an NBD URI; *status tells an unreachable server (EXIT_PEER: no socket, refused,
 * timed out) from any other failure (EXIT_FAIL). */
struct source *source_open_nbd(const char *uri, const struct source_timeouts *timeouts, int *status,
			       char *errbuf, size_t errlen);

#endif
