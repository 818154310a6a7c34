/* Reads and checks a VMA stream: the header on open, then every extent, handing each cluster's
 * stored blocks to a callback. Every defect is reported with its byte offset in the (uncompressed)
 * stream. */
#ifndef VMA_EXTRACT_READER_H
#define VMA_EXTRACT_READER_H
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "instream.h"
#include "meter.h"
#include "vma.h"

struct vma_config {
	const char *name;
	const uint8_t *data;
	uint32_t len;
};

struct vma_device {
	const char *name; /* NULL: no device with this id */
	uint64_t size;
	uint64_t clusters;
	bool check_coverage; /* every cluster must be present at the end */
	uint8_t **seen;      /* one bit per cluster, in chunks allocated when first touched */
	uint64_t seen_count;
};

struct vma_reader {
	struct instream *in;
	uint64_t offset;       /* bytes of the stream consumed so far */
	uint64_t extent_start; /* where the extent being read starts in the stream: its
				* entries' blocks lie at extent_start + (blocks - extent) */
	uint8_t *header;
	uint32_t header_size;
	uint8_t uuid[16];
	time_t ctime;
	struct vma_config configs[VMA_MAX_CONFIGS];
	int nconfigs;
	struct vma_device devs[256]; /* index = dev_id */
	uint8_t *extent;
	uint64_t extents, stored_bytes, zero_bytes;
	uint64_t seen_chunks; /* chunks of the devices' bitmaps allocated so far */
	/* set after vma_reader_open: follows the data bytes read, part by part; or NULL */
	struct meter *meter;
	char err[512];
};

/* One entry of an extent: the blocks whose bit is set in mask, packed in ascending order. They
 * lie in r->extent, which the next extent overwrites: they may be kept until the next call of
 * the vma_part_fn, not longer. */
typedef int (*vma_cluster_fn)(void *opaque, struct vma_reader *r, int dev_id, uint64_t cluster,
			      uint16_t mask, const uint8_t *blocks);
/* Called when the entries of a part of an extent's data (up to 512 KiB of it, read at once)
 * have been handed to the vma_cluster_fn, the last part of each extent included: the time to
 * write them, while they are still in the CPU's cache. */
typedef int (*vma_part_fn)(void *opaque, struct vma_reader *r);

/* Reads and checks the header. 0, or -1 with r->err set. */
int vma_reader_open(struct vma_reader *r, struct instream *in);
/* Marks every device of the header for the coverage check of vma_reader_run (verify). */
void vma_reader_cover_all(struct vma_reader *r);
/* Reads every extent to the end of the stream, checking each, and calls fn for each entry and
 * done after each part (either may be NULL). At the end, devices marked check_coverage
 * must be complete. A non-zero return of fn or done stops the run and is returned. */
int vma_reader_run(struct vma_reader *r, vma_cluster_fn fn, vma_part_fn done, void *opaque);
void vma_reader_close(struct vma_reader *r);

#endif
