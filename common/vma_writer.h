/* Writes a VMA stream: header, then extents of up to 59 clusters, clusters in any order, each
 * exactly once. Data is placed straight into the extent buffer (vma_writer_reserve) so that a
 * reader can read() into it without an extra copy. */
#ifndef VZ_VMA_WRITER_H
#define VZ_VMA_WRITER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sink.h"
#include "vma.h"

struct vma_writer;

struct vma_device_stats {
	const char *name;
	uint64_t size;
	uint64_t transferred; /* bytes of the device covered so far */
	uint64_t zero_bytes;  /* of those, bytes in all-zero blocks (not stored) */
};

struct vma_writer *vma_writer_new(void);
void vma_writer_free(struct vma_writer *w);
/* The first error, for every call that returned -1. */
const char *vma_writer_error(const struct vma_writer *w);

/* Before vma_writer_begin. add_config stores name and a copy of data; add_device returns the
 * dev_id (1, 2, …). Both return -1 on invalid input, with the reason in vma_writer_error. */
int vma_writer_add_config(struct vma_writer *w, const char *name, const void *data, size_t len);
int vma_writer_add_device(struct vma_writer *w, const char *name, uint64_t size);

/* Builds and writes the header (fresh uuid, ctime now) to out. */
int vma_writer_begin(struct vma_writer *w, struct sink *out);

/* Space for up to *n whole clusters (64 KiB each) in the current extent; *n is lowered to what
 * fits. The caller fills it and then commits those clusters, in the same order. */
uint8_t *vma_writer_reserve(struct vma_writer *w, unsigned *n);
/* Adds n consecutive clusters of dev_id starting at cluster `first`, whose data the caller put
 * at the reserved space. Bytes past the device end are ignored (zeroed). */
int vma_writer_commit(struct vma_writer *w, int dev_id, uint64_t first, unsigned n);
/* Adds one all-zero cluster without data; put_zeros adds n consecutive ones. */
int vma_writer_put_zero(struct vma_writer *w, int dev_id, uint64_t cluster);
int vma_writer_put_zeros(struct vma_writer *w, int dev_id, uint64_t first, uint64_t n);
/* Copies one cluster in (for callers whose data is elsewhere). */
int vma_writer_put(struct vma_writer *w, int dev_id, uint64_t cluster, const uint8_t *data);

/* True when that cluster has been written already. */
bool vma_writer_has_cluster(const struct vma_writer *w, int dev_id, uint64_t cluster);
/* True when every cluster of dev_id (of every device, for 0) has been written. */
bool vma_writer_device_complete(const struct vma_writer *w, int dev_id);

/* An incremental archive (common/incremental.h): vma_writer_finish then accepts devices with
 * clusters missing, since those are the parent's. */
void vma_writer_set_partial(struct vma_writer *w);
bool vma_writer_is_partial(const struct vma_writer *w);

/* Writes the last extent (an empty one for an archive without clusters) and checks that every
 * cluster of every device was written (unless partial). */
int vma_writer_finish(struct vma_writer *w);

const uint8_t *vma_writer_uuid(const struct vma_writer *w);
int vma_writer_device_count(const struct vma_writer *w);
/* Totals over all devices; dev_id 0 sums all. */
struct vma_device_stats vma_writer_stats(const struct vma_writer *w, int dev_id);

#endif
