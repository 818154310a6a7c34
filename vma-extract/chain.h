/* An archive and, when it is incremental (common/incremental.h), the archives it builds on,
 * back to its full: found by the parent's uuid among the --base files, else under the parent's
 * file name in the archive's own folder, and every link checked before anything is read past
 * the headers: the uuids, the depth, and the devices (same names, same sizes). Restoring reads
 * the newest first; a cluster is taken from the first archive that holds it. */
#ifndef VMA_EXTRACT_CHAIN_H
#define VMA_EXTRACT_CHAIN_H
#include <stdbool.h>

#include "incremental.h"
#include "meter.h"
#include "reader.h"

struct chain_link {
	char *path;
	int fd;
	off_t start;         /* where the archive starts in fd, for a second pass */
	struct vma_reader r; /* header read */
	bool incremental;
	struct inc_info inc; /* when incremental */
	int map[256];        /* this archive's dev_id -> the same device's in links[0] (0: none) */
	char *sum_path;      /* PATH.sha256; NULL for standard input */
	bool hashed;         /* chain_open(hash): sum_path exists; its sum is in want, and the
			      * bytes are hashed as they are read (instream_sha256) */
	char want[INSTREAM_SHA256_HEX];
	char got[INSTREAM_SHA256_HEX]; /* after chain_check_sum */
	uint8_t *kept_header;          /* chain_release: the header, for chain_reopen */
	uint32_t kept_size;
};

struct chain {
	int n;
	struct chain_link *links; /* [0] the archive asked for, [n-1] its full */
};

/* Opens path ("-": standard input) and its parents. bases are the --base files. With hash,
 * every link with a PATH.sha256 (in sha256sum's format, naming the archive) is hashed from
 * its first byte. 0, or -1 with why in err, naming the link that is missing or does not fit;
 * nothing is left open then. */
int chain_open(struct chain *c, const char *path, char *const *bases, int nbases, bool hash,
	       char *err, size_t errlen);
/* Once link l has been read to its end: when it was hashed, its sum (into l->got) must be the
 * one its .sha256 gives. 0, or -1 with why in err. */
int chain_check_sum(struct chain_link *l, char *err, size_t errlen);
/* Reads link l to its end through fn and done (as vma_reader_run), then chain_check_sum. 0, or
 * -1 with why in err ("PATH: what is wrong"). */
int chain_run_link(struct chain_link *l, vma_cluster_fn fn, vma_part_fn done, void *opaque,
		   char *err, size_t errlen);
/* Closes link i's reader and input, keeping its file open and a copy of its header, so that
 * the memory of reading it (about 1 MiB of buffers) is given back until chain_reopen. The
 * file must be one that can be read again from its start (l->start >= 0). */
void chain_release(struct chain *c, int i);
/* Reads the whole chain, newest first, each link through chain_run_link; *map is set to the
 * link's dev_id map before it is read. The progress meter (mode) follows the full, the one
 * link read whole. 0, or -1 with why in err. */
int chain_read(struct chain *c, const int **map, vma_cluster_fn fn, vma_part_fn done, void *opaque,
	       enum meter_mode mode, char *err, size_t errlen);
/* Reads link i again from its start (for a pass after a verification, or after
 * chain_release): the header must be the same. It is not hashed again. 0, or -1 with why in
 * err. */
int chain_reopen(struct chain *c, int i, char *err, size_t errlen);
void chain_close(struct chain *c);

/* Per device of links[0], one bit per cluster: which clusters a newer link has given already. */
struct chain_taken {
	uint8_t *bits[256];
};
/* True the first time a cluster of dev_id (links[0]'s numbering) is asked for. */
bool chain_take(struct chain_taken *t, const struct vma_reader *newest, int dev_id,
		uint64_t cluster);
void chain_taken_free(struct chain_taken *t);

#endif
