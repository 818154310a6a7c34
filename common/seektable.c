/* Building, writing and reading zstd's seek table (seektable.h). */
#include "seektable.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ENTRY_SIZE(checksums) ((checksums) ? 12u : 8u)
#define CHECKSUM_FLAG 0x80u
#define RESERVED_BITS 0x7cu

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int seektable_add(struct seektable *t, uint32_t c_size, uint32_t d_size, uint32_t checksum)
{
	if (t->count == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 256;
		struct seek_frame *f = realloc(t->frames, cap * sizeof(*f));
		if (!f)
			return -1;
		t->frames = f;
		t->cap = cap;
	}
	t->frames[t->count++] = (struct seek_frame){t->c_total, t->d_total, c_size, d_size,
						    checksum};
	t->c_total += c_size;
	t->d_total += d_size;
	return 0;
}

size_t seektable_encode(const struct seektable *t, uint8_t **out)
{
	size_t entry = ENTRY_SIZE(t->checksums);
	size_t len = 8 + t->count * entry + SEEKTABLE_FOOTER_SIZE;
	uint8_t *buf = malloc(len), *p = buf;
	if (!buf)
		return 0;
	put_le32(p, SEEKTABLE_SKIPPABLE_MAGIC);
	put_le32(p + 4, (uint32_t)(len - 8));
	p += 8;
	for (size_t i = 0; i < t->count; i++, p += entry) {
		put_le32(p, t->frames[i].c_size);
		put_le32(p + 4, t->frames[i].d_size);
		if (t->checksums)
			put_le32(p + 8, t->frames[i].checksum);
	}
	put_le32(p, (uint32_t)t->count);
	p[4] = t->checksums ? CHECKSUM_FLAG : 0;
	put_le32(p + 5, SEEKTABLE_MAGIC);
	*out = buf;
	return len;
}

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO; /* the file shrank under us */
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

static int bad(char *err, size_t errlen, const char *why)
{
	snprintf(err, errlen, "bad seek table: %s", why);
	return -1;
}

int seektable_read(int fd, uint64_t file_size, struct seektable *t, char *err, size_t errlen)
{
	uint8_t foot[SEEKTABLE_FOOTER_SIZE];
	memset(t, 0, sizeof(*t));
	if (file_size < 8 + SEEKTABLE_FOOTER_SIZE)
		return 0;
	if (read_at(fd, foot, sizeof(foot), file_size - sizeof(foot)) < 0) {
		snprintf(err, errlen, "reading the seek table: %s", strerror(errno));
		return -1;
	}
	if (get_le32(foot + 5) != SEEKTABLE_MAGIC)
		return 0;
	uint32_t count = get_le32(foot);
	uint8_t desc = foot[4];
	if (desc & RESERVED_BITS)
		return bad(err, errlen, "reserved bits set");
	t->checksums = desc & CHECKSUM_FLAG;
	uint64_t entry = ENTRY_SIZE(t->checksums);
	uint64_t table = 8 + count * entry + SEEKTABLE_FOOTER_SIZE;
	if (table > file_size)
		return bad(err, errlen, "larger than the file");
	uint8_t head[8];
	uint64_t start = file_size - table;
	if (read_at(fd, head, 8, start) < 0) {
		snprintf(err, errlen, "reading the seek table: %s", strerror(errno));
		return -1;
	}
	if (get_le32(head) != SEEKTABLE_SKIPPABLE_MAGIC || get_le32(head + 4) != table - 8)
		return bad(err, errlen, "its frame header does not match its footer");
	uint8_t *raw = malloc(count * entry + 1);
	t->frames = calloc(count ? count : 1, sizeof(*t->frames));
	if (!raw || !t->frames) {
		free(raw);
		seektable_free(t);
		return bad(err, errlen, "out of memory");
	}
	t->cap = count;
	if (read_at(fd, raw, count * entry, start + 8) < 0) {
		snprintf(err, errlen, "reading the seek table: %s", strerror(errno));
		free(raw);
		seektable_free(t);
		return -1;
	}
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *p = raw + i * entry;
		uint32_t d_size = get_le32(p + 4);
		if (d_size > SEEKTABLE_MAX_FRAME) {
			free(raw);
			seektable_free(t);
			return bad(err, errlen, "a frame larger than the format allows");
		}
		t->frames[i] = (struct seek_frame){t->c_total, t->d_total, get_le32(p), d_size,
						   t->checksums ? get_le32(p + 8) : 0};
		t->c_total += get_le32(p);
		t->d_total += d_size;
		t->count++;
	}
	free(raw);
	if (t->c_total != start) {
		seektable_free(t);
		return bad(err, errlen, "its frames do not add up to the file");
	}
	return 1;
}

size_t seektable_find(const struct seektable *t, uint64_t d_off)
{
	size_t lo = 0, hi = t->count;
	/* the last frame starting at or before d_off: an empty frame shares its start with the
	 * frame after it, so it is never the last one */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->frames[mid].d_off <= d_off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

void seektable_free(struct seektable *t)
{
	free(t->frames);
	memset(t, 0, sizeof(*t));
}
