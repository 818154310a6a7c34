/* lzop's file format: the container `lzop` writes around LZO1X blocks and `lzop -d` reads,
 * which Proxmox's vzdump writes as .vma.lzo. Written by sink.c, read by instream.c; the LZO1X
 * code itself is liblzo2's (codecs.h), loaded by the caller with codec_load_lzo().
 *
 * A file is the magic, one header (version, method, flags, mode, mtime, name, checksum), then
 * blocks of {uncompressed length, compressed length, checksums, data}, ended by a zero
 * length; a block whose two lengths are equal is stored. Numbers are big-endian. Concatenated
 * files are one stream, as `lzop -d` reads them. */
#ifndef VZ_LZOP_H
#define VZ_LZOP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LZOP_MAGIC_LEN 9
extern const uint8_t lzop_magic[LZOP_MAGIC_LEN];

/* The block size we write (lzop's default), and the largest lzop writes or we read. */
#define LZOP_BLOCK_SIZE (256u << 10)
#define LZOP_MAX_BLOCK_SIZE (64u << 20)

/* --- writing --- */
/* The magic and header `lzop -c <file` writes (method LZO1X-1, Adler-32 of each block's data,
 * no name): at most LZOP_HEADER_MAX bytes at out; returns their count. */
#define LZOP_HEADER_MAX 64
size_t lzop_put_header(uint8_t *out);
/* Work memory lzop_put_block needs, and the most bytes one block of len bytes takes. */
size_t lzop_work_size(void);
#define LZOP_BLOCK_BOUND(len) (12 + (len) + (len) / 16 + 64 + 3)
/* One block of 1 to LZOP_BLOCK_SIZE bytes, compressed (or stored, when that is no smaller),
 * with its block header, into out (LZOP_BLOCK_BOUND(len) bytes): returns the bytes written,
 * 0 if liblzo2 failed. */
size_t lzop_put_block(uint8_t *out, const uint8_t *in, size_t len, void *work);
/* The end of the stream: a zero length. */
#define LZOP_END_LEN 4

/* --- reading (untrusted input) --- */
/* Reads exactly len bytes into buf: their count, fewer only at the end of the input, or -1 on a
 * read error (the callback keeps its message). */
typedef ssize_t lzop_take_fn(void *ctx, uint8_t *buf, size_t len);

struct lzop_reader {
	int state;
	uint32_t flags;    /* of the current file's header */
	uint8_t *in, *out; /* a block's compressed and decompressed bytes */
	size_t in_cap, out_cap;
	size_t out_pos, out_len; /* [out_pos, out_len) of out not handed out yet */
	bool take_failed;        /* the last error was the callback's read error */
	char err[160];
};

/* Decodes the next block into r->out (r->out_pos = 0, r->out_len its length): 1, or 0 at the
 * end of the stream (after a zero length and the end of the input), or -1: r->err says why
 * (unless r->take_failed: then the callback's message does). Empty input is an error. */
int lzop_next_block(struct lzop_reader *r, lzop_take_fn *take, void *ctx);
void lzop_reader_free(struct lzop_reader *r);

#endif
