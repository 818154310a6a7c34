/* VMA reader with every check Proxmox's `vma verify` makes, plus coverage of every cluster and
 * a refusal of names that are unsafe as file names. Format: ../shared/spec/vma-format.md. */
#include <limits.h>
#include <md5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "reader.h"

/* A fuzzer cannot forge an MD5: the fuzz targets' build (fuzz/README.md) skips the two checksum
 * comparisons, so that mutated headers and extents reach the checks behind them. Never defined
 * in the tools' build; tests/vma-extract.bats proves they still refuse a wrong MD5. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define FUZZING 1
#else
#define FUZZING 0
#endif

/* Names become file names on extraction: a config's as it is, a device's as tmp-disk-NAME.raw
 * (the name Proxmox's vma uses too, and vma_writer.c's limit). A name -t accepts must extract. */
#define MAX_CONFIG_NAME NAME_MAX
#define MAX_DEVICE_NAME (NAME_MAX - (int)sizeof("tmp-disk-.raw") + 1)

/* A header larger than this is refused before it is allocated: 256 configs of the maximum size
 * and 254 names fit well below it. */
#define MAX_HEADER_SIZE (24u << 20)

/* The bitmap of seen clusters is kept in chunks of 2^20 clusters (128 KiB), allocated when an
 * entry first lands in one: a header may declare 254 devices of 256 TiB each, and a bitmap for
 * all of that up front would be 127 GiB of address space for a few-KiB archive. */
#define SEEN_CHUNK_SHIFT 20
#define SEEN_CHUNK_CLUSTERS (1u << SEEN_CHUNK_SHIFT)

/* And a hostile archive that lands one entry (8 bytes) in each chunk would still take 128 KiB of
 * memory per 8 bytes: 127 GiB for a 9 MiB archive. So the chunks are rationed: 512 (64 MiB, the
 * bitmaps of 32 TiB of disks) freely, then one more per 128 KiB of the stream read. A genuine
 * archive, even of huge disks written out of order, never comes near: it stores a cluster's data
 * for nearly every chunk it opens. */
#define SEEN_CHUNKS_FREE 512
#define SEEN_CHUNK_STREAM_BYTES (SEEN_CHUNK_CLUSTERS / 8)

static bool seen_test(const struct vma_device *d, uint64_t cluster)
{
	const uint8_t *chunk = d->seen[cluster >> SEEN_CHUNK_SHIFT];
	uint32_t i = (uint32_t)(cluster & (SEEN_CHUNK_CLUSTERS - 1));
	return chunk && chunk[i / 8] & (1u << (i % 8));
}

/* Marks the cluster; -1 when its chunk cannot be allocated. */
static int seen_set(struct vma_device *d, uint64_t cluster)
{
	uint8_t **chunk = &d->seen[cluster >> SEEN_CHUNK_SHIFT];
	uint32_t i = (uint32_t)(cluster & (SEEN_CHUNK_CLUSTERS - 1));
	if (!*chunk && !(*chunk = calloc(1, SEEN_CHUNK_CLUSTERS / 8)))
		return -1;
	(*chunk)[i / 8] |= (uint8_t)(1u << (i % 8));
	return 0;
}

static int fail_at(struct vma_reader *r, uint64_t offset, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(r->err, sizeof(r->err), "offset %llu: ", (unsigned long long)offset);
	va_start(ap, fmt);
	vsnprintf(r->err + n, sizeof(r->err) - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* Reads exactly len bytes, or fails naming what was cut short. */
static int read_exact(struct vma_reader *r, void *buf, size_t len, const char *what)
{
	ssize_t n = instream_read(r->in, buf, len);
	if (n < 0) /* where the decompressed data ended, not where this read began */
		return fail_at(r, instream_offset(r->in), "%s", instream_error(r->in));
	if ((size_t)n < len)
		return fail_at(r, r->offset + (uint64_t)n, "archive truncated inside %s", what);
	r->offset += len;
	return 0;
}

static void md5_with_hole(const uint8_t *buf, size_t len, size_t hole, uint8_t digest[16])
{
	/* The stored digest's own 16 bytes count as zero. */
	static const uint8_t zero[16];
	MD5_CTX md5;
	MD5Init(&md5);
	MD5Update(&md5, buf, hole);
	MD5Update(&md5, zero, 16);
	MD5Update(&md5, buf + hole + 16, len - hole - 16);
	MD5Final(digest, &md5);
}

/* Blob starts are marked in a table so that a pointer into the middle of a blob is refused. */
struct blobs {
	const uint8_t *base;
	uint32_t size;
	uint8_t *is_start;
};

static int parse_blobs(struct vma_reader *r, struct blobs *b, uint32_t buf_offset)
{
	b->is_start = calloc(1, b->size ? b->size : 1);
	if (!b->is_start)
		return fail_at(r, 0, "out of memory");
	for (uint32_t pos = 1; pos < b->size;) {
		if (pos + 2 > b->size)
			return fail_at(r, buf_offset + pos,
				       "blob length runs past the blob buffer");
		uint32_t len = get_le16(b->base + pos);
		if (pos + 2 + len > b->size)
			return fail_at(r, buf_offset + pos,
				       "blob of %u bytes runs past the blob buffer", len);
		b->is_start[pos] = 1;
		pos += 2 + len;
	}
	return 0;
}

static const uint8_t *blob_at(const struct blobs *b, uint32_t ptr, uint32_t *len)
{
	if (ptr == 0 || ptr >= b->size || !b->is_start[ptr])
		return NULL;
	*len = get_le16(b->base + ptr);
	return b->base + ptr + 2;
}

/* A string blob: NUL-terminated, no NUL inside. */
static const char *string_at(const struct blobs *b, uint32_t ptr)
{
	uint32_t len;
	const uint8_t *p = blob_at(b, ptr, &len);
	if (!p || len == 0 || p[len - 1] != '\0' || memchr(p, '\0', len - 1))
		return NULL;
	return (const char *)p;
}

/* A device's or config's name (WHAT, for the message) must be usable as a file name in the
 * restore folder: safe, and short enough for the names made from it. */
static int check_name(struct vma_reader *r, uint64_t at, const char *what, const char *name,
		      size_t max)
{
	const char *defect = vma_name_defect(name);
	if (defect)
		return fail_at(r, at, "%s: unsafe name: %s", what, defect);
	if (strlen(name) > max)
		return fail_at(r, at,
			       "%s: unsafe name: longer than %zu bytes, too long for a file name",
			       what, max);
	return 0;
}

static int read_devices(struct vma_reader *r, const struct blobs *b)
{
	for (int id = 0; id < 256; id++) {
		uint32_t at = VMA_OFF_DEV_INFO + VMA_DEV_INFO_SIZE * (uint32_t)id;
		const uint8_t *info = r->header + at;
		uint32_t ptr = get_be32(info);
		uint64_t size = get_be64(info + 8);
		if (ptr == 0 && size == 0)
			continue;
		if (id == 0 || id == 255)
			return fail_at(r, at, "device slot %d is reserved but used", id);
		const char *name = string_at(b, ptr);
		if (!name)
			return fail_at(r, at, "device %d: invalid name pointer %u", id, ptr);
		char what[32];
		snprintf(what, sizeof(what), "device %d", id);
		if (check_name(r, at, what, name, MAX_DEVICE_NAME) < 0)
			return -1;
		if (size == 0)
			return fail_at(r, at + 8, "device %d (%s): size 0", id, name);
		if (vma_cluster_count(size) > UINT32_MAX)
			return fail_at(r, at + 8, "device %d (%s): size %llu too large", id, name,
				       (unsigned long long)size);
		for (int j = 1; j < id; j++)
			if (r->devs[j].name && strcmp(r->devs[j].name, name) == 0)
				return fail_at(r, at, "device name '%s' used twice", name);
		struct vma_device *d = &r->devs[id];
		d->name = name;
		d->size = size;
		d->clusters = vma_cluster_count(size);
		d->seen = calloc(
			(size_t)((d->clusters + SEEN_CHUNK_CLUSTERS - 1) >> SEEN_CHUNK_SHIFT),
			sizeof(*d->seen));
		if (!d->seen)
			return fail_at(r, at, "out of memory");
	}
	return 0;
}

static int read_configs(struct vma_reader *r, const struct blobs *b)
{
	for (uint32_t i = 0; i < VMA_MAX_CONFIGS; i++) {
		uint32_t name_at = VMA_OFF_CONFIG_NAMES + 4 * i,
			 data_at = VMA_OFF_CONFIG_DATA + 4 * i;
		uint32_t name_ptr = get_be32(r->header + name_at);
		uint32_t data_ptr = get_be32(r->header + data_at);
		if (name_ptr == 0 && data_ptr == 0)
			continue;
		const char *name = string_at(b, name_ptr);
		uint32_t len;
		const uint8_t *data = blob_at(b, data_ptr, &len);
		if (!name)
			return fail_at(r, name_at, "config %u: invalid name pointer %u", i,
				       name_ptr);
		if (!data)
			return fail_at(r, data_at, "config %u: invalid data pointer %u", i,
				       data_ptr);
		char what[32];
		snprintf(what, sizeof(what), "config %u", i);
		if (check_name(r, name_at, what, name, MAX_CONFIG_NAME) < 0)
			return -1;
		for (int j = 0; j < r->nconfigs; j++)
			if (strcmp(r->configs[j].name, name) == 0)
				return fail_at(r, name_at, "config name '%s' used twice", name);
		if (strncmp(name, "disk-", 5) == 0 || strncmp(name, "tmp-disk-", 9) == 0)
			return fail_at(r, name_at, "config name '%s' would clash with a disk file",
				       name);
		r->configs[r->nconfigs++] = (struct vma_config){name, data, len};
	}
	return 0;
}

int vma_reader_open(struct vma_reader *r, struct instream *in)
{
	memset(r, 0, sizeof(*r));
	r->in = in;
	r->header = malloc(VMA_FIXED_HEADER_SIZE);
	if (!r->header)
		return fail_at(r, 0, "out of memory");
	if (read_exact(r, r->header, VMA_FIXED_HEADER_SIZE, "the header") < 0)
		return -1;
	if (memcmp(r->header, VMA_MAGIC, 4) != 0)
		return fail_at(r, 0, "not a VMA archive (wrong magic)");
	uint32_t header_size = get_be32(r->header + VMA_OFF_HEADER_SIZE);
	if (header_size <= VMA_FIXED_HEADER_SIZE || header_size > MAX_HEADER_SIZE)
		return fail_at(r, VMA_OFF_HEADER_SIZE, "invalid header size %u", header_size);
	uint8_t *h = realloc(r->header, header_size);
	if (!h)
		return fail_at(r, 0, "out of memory");
	r->header = h;
	r->header_size = header_size;
	if (read_exact(r, h + VMA_FIXED_HEADER_SIZE, header_size - VMA_FIXED_HEADER_SIZE,
		       "the header") < 0)
		return -1;
	uint8_t digest[16];
	md5_with_hole(h, header_size, VMA_OFF_MD5, digest);
	if (!FUZZING && memcmp(digest, h + VMA_OFF_MD5, 16) != 0)
		return fail_at(r, VMA_OFF_MD5, "wrong header checksum (MD5)");
	uint32_t version = get_be32(h + VMA_OFF_VERSION);
	if (version != VMA_VERSION)
		return fail_at(r, VMA_OFF_VERSION, "unsupported VMA version %u", version);
	memcpy(r->uuid, h + VMA_OFF_UUID, 16);
	r->ctime = (time_t)(int64_t)get_be64(h + VMA_OFF_CTIME);

	uint32_t blob_offset = get_be32(h + VMA_OFF_BLOB_OFFSET);
	uint32_t blob_size = get_be32(h + VMA_OFF_BLOB_SIZE);
	if (blob_offset < VMA_FIXED_HEADER_SIZE || blob_offset > header_size ||
	    blob_size > header_size - blob_offset)
		return fail_at(r, VMA_OFF_BLOB_OFFSET,
			       "blob buffer (offset %u, size %u) outside the %u-byte header",
			       blob_offset, blob_size, header_size);
	struct blobs b = {h + blob_offset, blob_size, NULL};
	int rc = parse_blobs(r, &b, blob_offset);
	if (rc == 0)
		rc = read_devices(r, &b);
	if (rc == 0)
		rc = read_configs(r, &b);
	free(b.is_start);
	if (rc < 0)
		return -1;
	r->extent = malloc(VMA_MAX_EXTENT_SIZE);
	if (!r->extent)
		return fail_at(r, 0, "out of memory");
	return 0;
}

/* An extent's data, up to 3.7 MiB, is read and handed over in parts of whole entries of up to
 * this size: a restore then writes each part while it is still in the CPU's cache (with whole
 * extents, the time spent copying to the page cache doubled or tripled). */
#define READ_PART (512u << 10)

static unsigned stored_blocks(uint16_t mask)
{
	return mask == 0xffff ? VMA_BLOCKS_PER_CLUSTER : (unsigned)__builtin_popcount(mask);
}

/* Checks one blockinfo entry against the header and the clusters seen so far. */
static int check_entry(struct vma_reader *r, uint64_t at, int dev_id, uint64_t cluster,
		       uint16_t mask, unsigned reserved)
{
	struct vma_device *d = &r->devs[dev_id];
	if (reserved)
		return fail_at(r, at, "reserved bits set in a block entry");
	if (!d->name)
		return fail_at(r, at, "block entry for unknown device id %d", dev_id);
	if (cluster >= d->clusters)
		return fail_at(r, at, "cluster %llu of %s is past the device end (%llu clusters)",
			       (unsigned long long)cluster, d->name,
			       (unsigned long long)d->clusters);
	/* A full mask on the partial last cluster is tolerated, as Proxmox does; a partial mask
	 * with a block past the end is not. */
	if (mask != 0xffff)
		for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++)
			if (mask & (1u << b) &&
			    cluster * VMA_CLUSTER_SIZE + (uint64_t)b * VMA_BLOCK_SIZE >= d->size)
				return fail_at(
					r, at,
					"block %u of cluster %llu of %s is past the device end", b,
					(unsigned long long)cluster, d->name);
	if (seen_test(d, cluster))
		return fail_at(r, at, "duplicate cluster %llu of %s", (unsigned long long)cluster,
			       d->name);
	if (!d->seen[cluster >> SEEN_CHUNK_SHIFT]) {
		if (r->seen_chunks >= SEEN_CHUNKS_FREE + r->offset / SEEN_CHUNK_STREAM_BYTES)
			return fail_at(r, at,
				       "cluster %llu of %s: the clusters so far lie in %llu "
				       "different 64 GiB regions, too many for a %llu-byte stream "
				       "(a hostile archive?)",
				       (unsigned long long)cluster, d->name,
				       (unsigned long long)r->seen_chunks + 1,
				       (unsigned long long)r->offset);
		r->seen_chunks++;
	}
	if (seen_set(d, cluster) < 0)
		return fail_at(r, at, "out of memory");
	d->seen_count++;
	return 0;
}

/* The bytes of data of the entries from *end on, as many as fit READ_PART (at least one);
 * *end becomes the first entry after them. */
static size_t next_part(const uint8_t *e, unsigned *end)
{
	size_t part = 0;
	for (; *end < VMA_ENTRIES_PER_EXTENT; (*end)++) {
		/* (an unused slot is all zero: it stores nothing) */
		uint16_t mask = (uint16_t)(get_be64(e + VMA_EXT_OFF_BLOCKINFO + 8 * *end) >> 48);
		size_t stored = stored_blocks(mask) * (size_t)VMA_BLOCK_SIZE;
		if (part > 0 && part + stored > READ_PART)
			break;
		part += stored;
	}
	return part;
}

/* The extent's 512-byte header, which started at `start`, is in r->extent already. */
static int read_extent(struct vma_reader *r, uint64_t start, vma_cluster_fn fn, vma_part_fn done,
		       void *opaque)
{
	uint8_t *e = r->extent, digest[16];
	/* Magic first (Proxmox checks the MD5 first): bytes that are no extent at all, such as
	 * garbage after the last one, are then named for what they are. */
	if (memcmp(e, VMA_EXTENT_MAGIC, 4) != 0)
		return fail_at(r, start,
			       "wrong extent magic (not an extent, or data after the last one)");
	md5_with_hole(e, VMA_EXTENT_HEADER_SIZE, VMA_EXT_OFF_MD5, digest);
	if (!FUZZING && memcmp(digest, e + VMA_EXT_OFF_MD5, 16) != 0)
		return fail_at(r, start + VMA_EXT_OFF_MD5, "wrong extent checksum (MD5)");
	if (memcmp(e + VMA_EXT_OFF_UUID, r->uuid, 16) != 0)
		return fail_at(r, start + VMA_EXT_OFF_UUID,
			       "extent uuid differs from the header's");
	if (get_be16(e + VMA_EXT_OFF_RESERVED) != 0)
		return fail_at(r, start + VMA_EXT_OFF_RESERVED,
			       "reserved extent field is not zero");
	unsigned block_count = get_be16(e + VMA_EXT_OFF_BLOCK_COUNT), blocks = 0;
	for (unsigned i = 0; i < VMA_ENTRIES_PER_EXTENT; i++) {
		uint64_t at = start + VMA_EXT_OFF_BLOCKINFO + 8 * i;
		uint64_t info = get_be64(e + VMA_EXT_OFF_BLOCKINFO + 8 * i);
		int dev_id = (int)(info >> 32 & 0xff);
		if (dev_id == 0) { /* an unused slot */
			if (info != 0)
				return fail_at(r, at, "block entry with device id 0");
			continue;
		}
		uint16_t mask = (uint16_t)(info >> 48);
		if (check_entry(r, at, dev_id, info & 0xffffffffu, mask,
				(unsigned)(info >> 40 & 0xff)) < 0)
			return -1;
		blocks += stored_blocks(mask);
	}
	if (blocks != block_count)
		return fail_at(r, start + VMA_EXT_OFF_BLOCK_COUNT,
			       "block count %u, but the entries store %u blocks", block_count,
			       blocks);
	/* The data is read in parts, each handed over (fn, then done) before the next is read. */
	uint8_t *data = e + VMA_EXTENT_HEADER_SIZE;
	unsigned part_end = 0; /* the first entry whose data is not read yet */
	for (unsigned i = 0; i < VMA_ENTRIES_PER_EXTENT; i++) {
		if (i == part_end) {
			int rc = i > 0 && done ? done(opaque, r) : 0;
			if (rc)
				return rc;
			if (i > 0 && r->meter) /* by parts: a slow input moves it too */
				meter_update(r->meter, r->stored_bytes + r->zero_bytes);
			size_t part = next_part(e, &part_end);
			if (part > 0 && read_exact(r, data, part, "extent data") < 0)
				return -1;
		}
		uint64_t info = get_be64(e + VMA_EXT_OFF_BLOCKINFO + 8 * i);
		int dev_id = (int)(info >> 32 & 0xff);
		if (!dev_id)
			continue;
		uint16_t mask = (uint16_t)(info >> 48);
		uint64_t cluster = info & 0xffffffffu;
		uint64_t valid = vma_cluster_bytes(r->devs[dev_id].size, cluster);
		uint64_t stored = (uint64_t)stored_blocks(mask) * VMA_BLOCK_SIZE;
		r->stored_bytes += stored < valid ? stored : valid;
		r->zero_bytes += stored < valid ? valid - stored : 0;
		if (fn) {
			int rc = fn(opaque, r, dev_id, cluster, mask, data);
			if (rc)
				return rc;
		}
		data += stored;
	}
	r->extents++;
	if (r->meter)
		meter_update(r->meter, r->stored_bytes + r->zero_bytes);
	return done ? done(opaque, r) : 0;
}

void vma_reader_cover_all(struct vma_reader *r)
{
	for (int id = 1; id < 255; id++)
		r->devs[id].check_coverage = r->devs[id].name != NULL;
}

int vma_reader_run(struct vma_reader *r, vma_cluster_fn fn, vma_part_fn done, void *opaque)
{
	for (;;) {
		/* The stream ends exactly on an extent boundary, or it is truncated. */
		ssize_t n = instream_read(r->in, r->extent, VMA_EXTENT_HEADER_SIZE);
		if (n < 0)
			return fail_at(r, instream_offset(r->in), "%s", instream_error(r->in));
		if (n == 0)
			break;
		if (n < VMA_EXTENT_HEADER_SIZE)
			return fail_at(r, r->offset + (uint64_t)n,
				       "archive truncated inside an extent header");
		uint64_t start = r->extent_start = r->offset;
		r->offset += VMA_EXTENT_HEADER_SIZE;
		int rc = read_extent(r, start, fn, done, opaque);
		if (rc)
			return rc;
	}
	if (r->extents == 0)
		return fail_at(r, r->offset, "archive has no extent (truncated after the header)");
	for (int id = 1; id < 255; id++) {
		struct vma_device *d = &r->devs[id];
		if (!d->name || !d->check_coverage || d->seen_count == d->clusters)
			continue;
		uint64_t missing = 0;
		while (seen_test(d, missing))
			missing++;
		return fail_at(r, r->offset,
			       "archive incomplete: cluster %llu of %s is missing (%llu of %llu "
			       "clusters missing)",
			       (unsigned long long)missing, d->name,
			       (unsigned long long)(d->clusters - d->seen_count),
			       (unsigned long long)d->clusters);
	}
	return 0;
}

void vma_reader_close(struct vma_reader *r)
{
	for (int id = 0; id < 256; id++) {
		struct vma_device *d = &r->devs[id];
		for (uint64_t c = 0; d->seen && c < d->clusters; c += SEEN_CHUNK_CLUSTERS)
			free(d->seen[c >> SEEN_CHUNK_SHIFT]);
		free(d->seen);
	}
	free(r->header);
	free(r->extent);
	r->header = r->extent = NULL;
}
