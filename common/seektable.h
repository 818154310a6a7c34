/* zstd's seekable format (zstd's contrib/seekable_format): a compressed stream cut into
 * independent frames, followed by a skippable frame holding one entry per frame (compressed
 * size, decompressed size, the low 32 bits of the XXH64 of the frame's content). Every zstd
 * decoder skips the table, so the stream stays an ordinary .zst; a reader that finds the
 * table at the end of the file can decompress any frame on its own. */
#ifndef VZ_SEEKTABLE_H
#define VZ_SEEKTABLE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEEKTABLE_SKIPPABLE_MAGIC 0x184D2A5Eu
#define SEEKTABLE_MAGIC 0x8F92EAB1u
#define SEEKTABLE_FOOTER_SIZE 9u
/* The format's limit on one frame's decompressed size (its reference code's). */
#define SEEKTABLE_MAX_FRAME (1u << 30)

struct seek_frame {
	uint64_t c_off, d_off; /* where the frame starts, compressed and decompressed */
	uint32_t c_size, d_size;
	uint32_t checksum; /* low 32 bits of XXH64(content); only when the table has them */
};

struct seektable {
	struct seek_frame *frames;
	size_t count, cap;
	bool checksums;
	uint64_t c_total, d_total; /* the frames' sums: the table itself not included */
};

/* Appends a frame's entry (tables being built). 0, or -1 when out of memory. */
int seektable_add(struct seektable *t, uint32_t c_size, uint32_t d_size, uint32_t checksum);
/* The table as the skippable frame that ends the stream, in a malloc'd buffer (*out); its
 * length, or 0 when out of memory. */
size_t seektable_encode(const struct seektable *t, uint8_t **out);
/* Reads the table at the end of the file fd of file_size bytes. 1 with *t filled, 0 when the
 * file ends in no table (not seekable: an ordinary .zst), -1 with a message in err when a table
 * is there but does not describe the file (its frames must cover it exactly). */
int seektable_read(int fd, uint64_t file_size, struct seektable *t, char *err, size_t errlen);
/* The frame holding decompressed offset d_off (< t->d_total). */
size_t seektable_find(const struct seektable *t, uint64_t d_off);
void seektable_free(struct seektable *t);

#endif
