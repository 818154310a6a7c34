/* VMA stream writer. Format: ../shared/spec/vma-format.md; checklist in its §8. */
#include <md5.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "bigbuf.h"
#include "bytes.h"
#include "vma_writer.h"

/* Names become file names on restore, "tmp-disk-NAME.raw" for devices and ".NAME.tmp.PID" for
 * configs: longer names give archives that cannot be extracted (NAME_MAX is 255). */
#define MAX_NAME_LEN (255 - (int)sizeof("tmp-disk-.raw") + 1)

/* With write-behind: one extent being filled while one is written and one waits, so that a
 * short stall of the disk does not stop the reading. */
#define EXTENT_BUFFERS 3

struct device {
	char *name;
	uint64_t size;
	uint64_t clusters;
	uint8_t *seen; /* one bit per cluster: written already */
	uint64_t seen_count;
	uint64_t transferred, zero_bytes;
};

struct config {
	char *name;
	uint8_t *data;
	size_t len;
};

struct vma_writer {
	struct sink *out;
	uuid_t uuid;
	bool begun, failed;
	bool partial; /* an incremental archive: clusters not written are the parent's */
	struct config configs[VMA_MAX_CONFIGS];
	int nconfigs;
	struct device devs[VMA_MAX_DEVICES + 1]; /* index = dev_id; 0 unused */
	int ndevs;
	/* The extent being filled: 512-byte header, then the stored blocks. It is one of
	 * extents[], taken in turn while the sink writes the others behind (sink_write_held). */
	uint8_t *extent;
	uint8_t *extents[EXTENT_BUFFERS];
	unsigned current;
	unsigned entries;  /* blockinfo entries used */
	size_t data_bytes; /* stored bytes after the header */
	uint64_t extents_written;
	char err[512];
};

static int fail(struct vma_writer *w, const char *fmt, ...)
{
	if (!w->failed) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(w->err, sizeof(w->err), fmt, ap);
		va_end(ap);
		w->failed = true;
	}
	return -1;
}

const char *vma_writer_error(const struct vma_writer *w) { return w->err; }

struct vma_writer *vma_writer_new(void)
{
	struct vma_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->extent = w->extents[0] = bigbuf_alloc(VMA_MAX_EXTENT_SIZE);
	if (!w->extent) {
		free(w);
		return NULL;
	}
	return w;
}

void vma_writer_free(struct vma_writer *w)
{
	if (!w)
		return;
	for (int i = 0; i < w->nconfigs; i++) {
		free(w->configs[i].name);
		free(w->configs[i].data);
	}
	for (int i = 1; i <= w->ndevs; i++) {
		free(w->devs[i].name);
		free(w->devs[i].seen);
	}
	for (int i = 0; i < EXTENT_BUFFERS; i++)
		bigbuf_free(w->extents[i], VMA_MAX_EXTENT_SIZE);
	free(w);
}

int vma_writer_add_config(struct vma_writer *w, const char *name, const void *data, size_t len)
{
	const char *defect = vma_name_defect(name);
	if (w->begun)
		return fail(w, "config %s: added after the header was written", name);
	/* (A long name first, and shortened, so that every later message fits in w->err.) */
	if (strlen(name) > MAX_NAME_LEN)
		return fail(w, "config name '%.40s...': longer than %d bytes", name, MAX_NAME_LEN);
	if (defect)
		return fail(w, "config name '%s': %s", name, defect);
	if (w->nconfigs >= VMA_MAX_CONFIGS)
		return fail(w, "config %s: more than %d configs", name, VMA_MAX_CONFIGS);
	if (len > VMA_MAX_BLOB)
		return fail(w, "config %s: %zu bytes, more than %d", name, len, VMA_MAX_BLOB);
	for (int i = 0; i < w->nconfigs; i++)
		if (strcmp(w->configs[i].name, name) == 0)
			return fail(w, "config %s: given twice", name);
	struct config *c = &w->configs[w->nconfigs];
	c->name = strdup(name);
	c->data = malloc(len ? len : 1);
	if (!c->name || !c->data) {
		free(c->name);
		free(c->data);
		return fail(w, "out of memory");
	}
	memcpy(c->data, data, len);
	c->len = len;
	w->nconfigs++;
	return 0;
}

int vma_writer_add_device(struct vma_writer *w, const char *name, uint64_t size)
{
	const char *defect = vma_name_defect(name);
	if (w->begun)
		return fail(w, "device %s: added after the header was written", name);
	if (strlen(name) > MAX_NAME_LEN)
		return fail(w, "device name '%.40s...': longer than %d bytes", name, MAX_NAME_LEN);
	if (defect)
		return fail(w, "device name '%s': %s", name, defect);
	if (w->ndevs >= VMA_MAX_DEVICES)
		return fail(w, "device %s: more than %d devices", name, VMA_MAX_DEVICES);
	if (size == 0)
		return fail(w, "device %s: size is 0", name);
	if (vma_cluster_count(size) > UINT32_MAX)
		return fail(w, "device %s: larger than the format's 256 TiB", name);
	for (int i = 1; i <= w->ndevs; i++)
		if (strcmp(w->devs[i].name, name) == 0)
			return fail(w, "device %s: given twice", name);
	struct device *d = &w->devs[w->ndevs + 1];
	d->name = strdup(name);
	d->size = size;
	d->clusters = vma_cluster_count(size);
	d->seen = calloc(1, (size_t)((d->clusters + 7) / 8));
	if (!d->name || !d->seen) {
		free(d->name);
		free(d->seen);
		return fail(w, "out of memory");
	}
	return ++w->ndevs;
}

/* Appends a u16-LE-length-prefixed blob; returns its offset in the blob buffer. */
static uint32_t put_blob(uint8_t *blobs, size_t *used, const void *data, size_t len)
{
	uint32_t at = (uint32_t)*used;
	put_le16(blobs + at, (uint16_t)len);
	memcpy(blobs + at + 2, data, len);
	*used += 2 + len;
	return at;
}

int vma_writer_begin(struct vma_writer *w, struct sink *out)
{
	size_t blob_size = 1; /* byte 0 is reserved so that pointer 0 means "none" */
	for (int i = 0; i < w->nconfigs; i++)
		blob_size += 2 + strlen(w->configs[i].name) + 1 + 2 + w->configs[i].len;
	for (int i = 1; i <= w->ndevs; i++)
		blob_size += 2 + strlen(w->devs[i].name) + 1;
	size_t header_size = (VMA_FIXED_HEADER_SIZE + blob_size + 511) / 512 * 512;
	if (header_size > VMA_MAX_HEADER_SIZE)
		return fail(w, "configs and names need a %zu-byte header; Proxmox's limit is %d",
			    header_size, VMA_MAX_HEADER_SIZE);
	uint8_t *h = calloc(1, header_size);
	if (!h)
		return fail(w, "out of memory");
	uint8_t *blobs = h + VMA_FIXED_HEADER_SIZE;
	size_t used = 1;

	uuid_generate_random(w->uuid);
	memcpy(h, VMA_MAGIC, 4);
	put_be32(h + VMA_OFF_VERSION, VMA_VERSION);
	memcpy(h + VMA_OFF_UUID, w->uuid, 16);
	put_be64(h + VMA_OFF_CTIME, (uint64_t)time(NULL));
	for (int i = 0; i < w->nconfigs; i++) {
		struct config *c = &w->configs[i];
		put_be32(h + VMA_OFF_CONFIG_NAMES + 4 * i,
			 put_blob(blobs, &used, c->name, strlen(c->name) + 1));
		put_be32(h + VMA_OFF_CONFIG_DATA + 4 * i, put_blob(blobs, &used, c->data, c->len));
	}
	for (int i = 1; i <= w->ndevs; i++) {
		uint8_t *info = h + VMA_OFF_DEV_INFO + VMA_DEV_INFO_SIZE * i;
		put_be32(info,
			 put_blob(blobs, &used, w->devs[i].name, strlen(w->devs[i].name) + 1));
		put_be64(info + 8, w->devs[i].size);
	}
	put_be32(h + VMA_OFF_BLOB_OFFSET, VMA_FIXED_HEADER_SIZE);
	put_be32(h + VMA_OFF_BLOB_SIZE, (uint32_t)used);
	put_be32(h + VMA_OFF_HEADER_SIZE, (uint32_t)header_size);

	MD5_CTX md5;
	MD5Init(&md5);
	MD5Update(&md5, h, header_size);
	MD5Final(h + VMA_OFF_MD5, &md5);

	w->out = out;
	w->begun = true;
	int rc = sink_write(out, h, header_size);
	free(h);
	if (rc < 0)
		return fail(w, "%s", sink_error(out));
	return 0;
}

/* The sink keeps the extent just written: the next buffer in turn becomes the one filled, once
 * the sink is done with it (a new one the first time round). */
static int next_extent(struct vma_writer *w)
{
	w->current = (w->current + 1) % EXTENT_BUFFERS;
	uint8_t **next = &w->extents[w->current];
	if (*next && sink_reclaim(w->out, *next) < 0)
		return fail(w, "%s", sink_error(w->out));
	if (!*next && !(*next = bigbuf_alloc(VMA_MAX_EXTENT_SIZE)))
		return fail(w, "out of memory");
	w->extent = *next;
	return 0;
}

static int flush_extent(struct vma_writer *w)
{
	uint8_t *e = w->extent;
	memcpy(e, VMA_EXTENT_MAGIC, 4);
	put_be16(e + VMA_EXT_OFF_RESERVED, 0);
	put_be16(e + VMA_EXT_OFF_BLOCK_COUNT, (uint16_t)(w->data_bytes / VMA_BLOCK_SIZE));
	memcpy(e + VMA_EXT_OFF_UUID, w->uuid, 16);
	memset(e + VMA_EXT_OFF_MD5, 0, 16);
	MD5_CTX md5;
	MD5Init(&md5);
	MD5Update(&md5, e, VMA_EXTENT_HEADER_SIZE);
	MD5Final(e + VMA_EXT_OFF_MD5, &md5);
	int held = sink_write_held(w->out, e, VMA_EXTENT_HEADER_SIZE + w->data_bytes);
	if (held < 0)
		return fail(w, "%s", sink_error(w->out));
	if (held && next_extent(w) < 0)
		return -1;
	memset(w->extent + VMA_EXT_OFF_BLOCKINFO, 0, 8 * VMA_ENTRIES_PER_EXTENT);
	w->entries = 0;
	w->data_bytes = 0;
	w->extents_written++;
	return 0;
}

static int make_room(struct vma_writer *w)
{
	if (w->failed)
		return -1;
	if (!w->begun)
		return fail(w, "data written before the header");
	if (w->entries == VMA_ENTRIES_PER_EXTENT)
		return flush_extent(w);
	return 0;
}

uint8_t *vma_writer_reserve(struct vma_writer *w, unsigned *n)
{
	if (make_room(w) < 0)
		return NULL;
	unsigned room = VMA_ENTRIES_PER_EXTENT - w->entries;
	if (*n > room)
		*n = room;
	return w->extent + VMA_EXTENT_HEADER_SIZE + w->data_bytes;
}

/* Marks a cluster as written; refuses a second write or a cluster past the end. */
static int claim(struct vma_writer *w, int dev_id, uint64_t cluster)
{
	if (dev_id < 1 || dev_id > w->ndevs)
		return fail(w, "no device with id %d", dev_id);
	struct device *d = &w->devs[dev_id];
	if (cluster >= d->clusters)
		return fail(w, "device %s: cluster %llu is past the end (%llu clusters)", d->name,
			    (unsigned long long)cluster, (unsigned long long)d->clusters);
	uint8_t bit = (uint8_t)(1u << (cluster % 8));
	if (d->seen[cluster / 8] & bit)
		return fail(w, "device %s: cluster %llu written twice", d->name,
			    (unsigned long long)cluster);
	d->seen[cluster / 8] |= bit;
	d->seen_count++;
	return 0;
}

static void add_entry(struct vma_writer *w, uint16_t mask, int dev_id, uint64_t cluster)
{
	uint64_t info = (uint64_t)mask << 48 | (uint64_t)dev_id << 32 | (cluster & 0xffffffffu);
	put_be64(w->extent + VMA_EXT_OFF_BLOCKINFO + 8 * w->entries, info);
	w->entries++;
}

int vma_writer_commit(struct vma_writer *w, int dev_id, uint64_t first, unsigned n)
{
	uint8_t *src = w->extent + VMA_EXTENT_HEADER_SIZE + w->data_bytes;
	if (w->failed)
		return -1;
	if (w->entries + n > VMA_ENTRIES_PER_EXTENT)
		return fail(w, "commit of more clusters than were reserved");
	for (unsigned i = 0; i < n; i++, src += VMA_CLUSTER_SIZE) {
		uint64_t cluster = first + i;
		if (claim(w, dev_id, cluster) < 0)
			return -1;
		struct device *d = &w->devs[dev_id];
		uint64_t valid = vma_cluster_bytes(d->size, cluster);
		/* The tail of a partial last block is zero-filled: never leak stale memory. */
		if (valid % VMA_BLOCK_SIZE)
			memset(src + valid, 0, VMA_BLOCK_SIZE - valid % VMA_BLOCK_SIZE);
		uint16_t mask = 0;
		for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++) {
			uint64_t bstart = (uint64_t)b * VMA_BLOCK_SIZE;
			if (bstart >= valid)
				break;
			const uint8_t *block = src + bstart;
			if (vma_block_is_zero(block)) {
				d->zero_bytes += valid - bstart < VMA_BLOCK_SIZE ? valid - bstart
										 : VMA_BLOCK_SIZE;
				continue;
			}
			uint8_t *dst = w->extent + VMA_EXTENT_HEADER_SIZE + w->data_bytes;
			/* Stored blocks are packed down over skipped ones; never overlap forwards. */
			if (dst != block)
				memmove(dst, block, VMA_BLOCK_SIZE);
			w->data_bytes += VMA_BLOCK_SIZE;
			mask |= (uint16_t)(1u << b);
		}
		d->transferred += valid;
		add_entry(w, mask, dev_id, cluster);
	}
	return 0;
}

int vma_writer_put_zeros(struct vma_writer *w, int dev_id, uint64_t first, uint64_t n)
{
	if (w->failed)
		return -1;
	if (dev_id < 1 || dev_id > w->ndevs)
		return fail(w, "no device with id %d", dev_id);
	struct device *d = &w->devs[dev_id];
	/* A hole of a large disk is many thousand clusters: checked and entered in one tight
	 * loop per extent rather than one call each. */
	while (n > 0) {
		if (make_room(w) < 0)
			return -1;
		unsigned room = VMA_ENTRIES_PER_EXTENT - w->entries;
		unsigned k = n < room ? (unsigned)n : room;
		for (unsigned i = 0; i < k; i++) {
			uint64_t cluster = first + i;
			if (cluster >= d->clusters || d->seen[cluster / 8] & (1u << (cluster % 8)))
				return claim(w, dev_id, cluster); /* fails with the reason */
			d->seen[cluster / 8] |= (uint8_t)(1u << (cluster % 8));
			add_entry(w, 0, dev_id, cluster);
		}
		d->seen_count += k;
		uint64_t start = first * VMA_CLUSTER_SIZE, end = (first + k) * VMA_CLUSTER_SIZE;
		uint64_t bytes = (end < d->size ? end : d->size) - start;
		d->transferred += bytes;
		d->zero_bytes += bytes;
		first += k;
		n -= k;
	}
	return 0;
}

int vma_writer_put_zero(struct vma_writer *w, int dev_id, uint64_t cluster)
{
	return vma_writer_put_zeros(w, dev_id, cluster, 1);
}

int vma_writer_put(struct vma_writer *w, int dev_id, uint64_t cluster, const uint8_t *data)
{
	unsigned n = 1;
	uint8_t *dst = vma_writer_reserve(w, &n);
	if (!dst)
		return -1;
	memcpy(dst, data, VMA_CLUSTER_SIZE);
	return vma_writer_commit(w, dev_id, cluster, 1);
}

bool vma_writer_has_cluster(const struct vma_writer *w, int dev_id, uint64_t cluster)
{
	const struct device *d = &w->devs[dev_id];
	return cluster < d->clusters && d->seen[cluster / 8] & (1u << (cluster % 8));
}

bool vma_writer_device_complete(const struct vma_writer *w, int dev_id)
{
	for (int i = 1; i <= w->ndevs; i++)
		if ((!dev_id || i == dev_id) && w->devs[i].seen_count != w->devs[i].clusters)
			return false;
	return true;
}

int vma_writer_finish(struct vma_writer *w)
{
	if (w->failed)
		return -1;
	for (int i = 1; i <= w->ndevs && !w->partial; i++) {
		struct device *d = &w->devs[i];
		if (d->seen_count != d->clusters)
			return fail(w, "device %s: %llu of %llu clusters missing", d->name,
				    (unsigned long long)(d->clusters - d->seen_count),
				    (unsigned long long)d->clusters);
	}
	/* A diskless archive still has one (empty) extent, as Proxmox writes it. */
	if (w->entries > 0 || w->extents_written == 0)
		return flush_extent(w);
	return 0;
}

void vma_writer_set_partial(struct vma_writer *w) { w->partial = true; }
bool vma_writer_is_partial(const struct vma_writer *w) { return w->partial; }

const uint8_t *vma_writer_uuid(const struct vma_writer *w) { return w->uuid; }
int vma_writer_device_count(const struct vma_writer *w) { return w->ndevs; }

struct vma_device_stats vma_writer_stats(const struct vma_writer *w, int dev_id)
{
	struct vma_device_stats s = {0};
	for (int i = 1; i <= w->ndevs; i++) {
		if (dev_id && i != dev_id)
			continue;
		s.name = dev_id ? w->devs[i].name : NULL;
		s.size += w->devs[i].size;
		s.transferred += w->devs[i].transferred;
		s.zero_bytes += w->devs[i].zero_bytes;
	}
	return s;
}
