/* lzop's file format (see lzop.h). Field by field as lzop 1.04 writes and reads them; a reader
 * of hostile input: every length is checked before it is used, and nothing is allocated beyond
 * one block's two buffers (at most LZOP_MAX_BLOCK_SIZE each). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "codecs.h"
#include "lzop.h"

const uint8_t lzop_magic[LZOP_MAGIC_LEN] = {0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a};

/* The header's flags. */
#define F_ADLER32_D 0x00000001u
#define F_ADLER32_C 0x00000002u
#define F_STDIN 0x00000004u
#define F_STDOUT 0x00000008u
#define F_H_EXTRA_FIELD 0x00000040u
#define F_CRC32_D 0x00000100u
#define F_CRC32_C 0x00000200u
#define F_MULTIPART 0x00000400u
#define F_H_FILTER 0x00000800u
#define F_H_CRC32 0x00001000u
#define F_MASK 0x00003fffu
#define F_OS_UNIX 0x03000000u
#define F_OS_MASK 0xff000000u
#define F_CS_MASK 0x00f00000u

/* The methods that are LZO1X (one decompressor reads them all): -1, -2..-6, -7..-9. */
#define M_LZO1X_1 1
#define M_LZO1X_1_15 2
#define M_LZO1X_999 3

/* The lzop version we write as, and the newest format we read. */
#define LZOP_VERSION 0x1040
#define LZOP_VERSION_NEEDED 0x0940

static uint32_t lzop_adler32(const uint8_t *p, size_t n) { return liblzo2.lzo_adler32(1, p, n); }
static uint32_t lzop_crc32(const uint8_t *p, size_t n) { return liblzo2.lzo_crc32(0, p, n); }

static uint8_t *put16(uint8_t *p, uint16_t v)
{
	put_be16(p, v);
	return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	put_be32(p, v);
	return p + 4;
}

size_t lzop_put_header(uint8_t *out)
{
	uint8_t *p = out;
	memcpy(p, lzop_magic, LZOP_MAGIC_LEN);
	p += LZOP_MAGIC_LEN;
	uint8_t *h = p;
	uint64_t now = (uint64_t)time(NULL);
	p = put16(p, LZOP_VERSION);
	p = put16(p, (uint16_t)liblzo2.lzo_version());
	p = put16(p, LZOP_VERSION_NEEDED);
	*p++ = M_LZO1X_1;
	*p++ = 5; /* the level lzop's default -3 records */
	p = put32(p, F_ADLER32_D | F_STDIN | F_STDOUT | F_OS_UNIX);
	p = put32(p, 0);             /* mode: none, as from a pipe */
	p = put32(p, (uint32_t)now); /* mtime, low and high halves */
	p = put32(p, (uint32_t)(now >> 32));
	*p++ = 0; /* no name */
	p = put32(p, lzop_adler32(h, (size_t)(p - h)));
	return (size_t)(p - out);
}

size_t lzop_work_size(void) { return LZO1X_1_MEM_COMPRESS; }

size_t lzop_put_block(uint8_t *out, const uint8_t *in, size_t len, void *work)
{
	uint8_t *data = out + 12;
	lzo_uint clen = LZOP_BLOCK_BOUND(len) - 12;
	if (liblzo2.lzo1x_1_compress(in, len, data, &clen, work) != LZO_E_OK)
		return 0;
	if (clen >= len) {
		memcpy(data, in, len);
		clen = len;
	}
	put32(out, (uint32_t)len);
	put32(out + 4, (uint32_t)clen);
	put32(out + 8, lzop_adler32(in, len));
	return 12 + clen;
}

/* --- reading --- */

enum { R_START, R_BLOCKS, R_BETWEEN, R_DONE };

static int fail(struct lzop_reader *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	r->take_failed = false;
	return -1;
}

/* Exactly n bytes: 0, or -1 (truncated, or the callback's read error). */
static int take_all(struct lzop_reader *r, lzop_take_fn *take, void *ctx, uint8_t *buf, size_t n)
{
	ssize_t got = take(ctx, buf, n);
	if (got < 0) {
		r->take_failed = true;
		return -1;
	}
	if ((size_t)got < n)
		return fail(r, "the compressed stream is truncated");
	return 0;
}

static int check(struct lzop_reader *r, const char *what, uint32_t want, uint32_t got)
{
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
	if (want != got)
		return fail(r, "lzop: %s checksum mismatch", what);
#endif
	return 0;
}

/* The header after the magic, its bytes collected for its checksum. */
struct header {
	uint8_t bytes[2 + 2 + 2 + 1 + 1 + 4 + 4 + 4 + 4 + 1 + 255];
	size_t len;
};

static int field(struct lzop_reader *r, lzop_take_fn *take, void *ctx, struct header *h, size_t n,
		 uint32_t *value)
{
	uint8_t *p = h->bytes + h->len;
	if (take_all(r, take, ctx, p, n) < 0)
		return -1;
	h->len += n;
	*value = 0;
	for (size_t i = 0; i < n; i++)
		*value = *value << 8 | p[i];
	return 0;
}

static int read_header(struct lzop_reader *r, lzop_take_fn *take, void *ctx)
{
	struct header h = {.len = 0};
	uint32_t version, lib_version, needed = 0, method, level = 0, flags, mode, mtime,
				       mtime_high, name_len;
	uint8_t sumbuf[4];
	if (field(r, take, ctx, &h, 2, &version) < 0 ||
	    field(r, take, ctx, &h, 2, &lib_version) < 0)
		return -1;
	if (version < 0x0900)
		return fail(r, "lzop: unsupported format version 0x%04x", version);
	if (version >= 0x0940 && field(r, take, ctx, &h, 2, &needed) < 0)
		return -1;
	if (needed > LZOP_VERSION)
		return fail(r, "lzop: the file needs lzop version 0x%04x to be read", needed);
	if (field(r, take, ctx, &h, 1, &method) < 0)
		return -1;
	if (method != M_LZO1X_1 && method != M_LZO1X_1_15 && method != M_LZO1X_999)
		return fail(r, "lzop: unsupported method %u (not LZO1X)", method);
	if (version >= 0x0940 && field(r, take, ctx, &h, 1, &level) < 0)
		return -1;
	if (field(r, take, ctx, &h, 4, &flags) < 0)
		return -1;
	if (flags & ~(F_MASK | F_OS_MASK | F_CS_MASK))
		return fail(r, "lzop: unknown flags 0x%08x", flags);
	if (flags & F_H_FILTER)
		return fail(r, "lzop: filters are not supported");
	if (flags & F_MULTIPART)
		return fail(r, "lzop: multipart files are not supported");
	if (flags & F_H_EXTRA_FIELD)
		return fail(r, "lzop: header extra fields are not supported");
	if (field(r, take, ctx, &h, 4, &mode) < 0 || field(r, take, ctx, &h, 4, &mtime) < 0)
		return -1;
	if (version >= 0x0940 && field(r, take, ctx, &h, 4, &mtime_high) < 0)
		return -1;
	if (field(r, take, ctx, &h, 1, &name_len) < 0)
		return -1;
	if (name_len > 0 && take_all(r, take, ctx, h.bytes + h.len, name_len) < 0)
		return -1;
	h.len += name_len;
	if (take_all(r, take, ctx, sumbuf, 4) < 0)
		return -1;
	uint32_t want = flags & F_H_CRC32 ? lzop_crc32(h.bytes, h.len)
					  : lzop_adler32(h.bytes, h.len);
	if (check(r, "header", get_be32(sumbuf), want) < 0)
		return -1;
	r->flags = flags;
	return 0;
}

/* Grows *buf to at least n bytes (n <= LZOP_MAX_BLOCK_SIZE). */
static int reserve(struct lzop_reader *r, uint8_t **buf, size_t *cap, size_t n)
{
	if (*cap >= n)
		return 0;
	uint8_t *p = realloc(*buf, n);
	if (!p)
		return fail(r, "out of memory");
	*buf = p;
	*cap = n;
	return 0;
}

/* The checksums the flags ask for, of p[0, n): the Adler-32 and CRC-32 flags given. */
static int checksums(struct lzop_reader *r, const char *what, uint32_t adler_flag,
		     uint32_t crc_flag, const uint8_t *sums, const uint8_t *p, size_t n)
{
	if ((r->flags & adler_flag) && check(r, what, get_be32(sums), lzop_adler32(p, n)) < 0)
		return -1;
	if (r->flags & adler_flag)
		sums += 4;
	if ((r->flags & crc_flag) && check(r, what, get_be32(sums), lzop_crc32(p, n)) < 0)
		return -1;
	return 0;
}

/* One block after its uncompressed length dlen (not 0). */
static int read_block(struct lzop_reader *r, lzop_take_fn *take, void *ctx, uint32_t dlen)
{
	uint8_t buf[4], dsums[8], csums[8];
	size_t nd = 4 * (!!(r->flags & F_ADLER32_D) + !!(r->flags & F_CRC32_D));
	size_t nc = 4 * (!!(r->flags & F_ADLER32_C) + !!(r->flags & F_CRC32_C));
	if (dlen > LZOP_MAX_BLOCK_SIZE)
		return fail(r, "lzop: a block of %u bytes (lzop's limit: %u)", dlen,
			    LZOP_MAX_BLOCK_SIZE);
	if (take_all(r, take, ctx, buf, 4) < 0)
		return -1;
	uint32_t clen = get_be32(buf);
	if (clen == 0 || clen > dlen)
		return fail(r, "lzop: a block of %u bytes compressed into %u", dlen, clen);
	if (nd && take_all(r, take, ctx, dsums, nd) < 0)
		return -1;
	/* The compressed data's checksums are there only when it is compressed. */
	if (clen == dlen)
		nc = 0;
	if (nc && take_all(r, take, ctx, csums, nc) < 0)
		return -1;
	if (reserve(r, &r->out, &r->out_cap, dlen) < 0)
		return -1;
	if (clen == dlen) {
		if (take_all(r, take, ctx, r->out, dlen) < 0)
			return -1;
	} else {
		if (reserve(r, &r->in, &r->in_cap, clen) < 0 ||
		    take_all(r, take, ctx, r->in, clen) < 0)
			return -1;
		if (nc &&
		    checksums(r, "compressed data", F_ADLER32_C, F_CRC32_C, csums, r->in, clen) < 0)
			return -1;
		lzo_uint made = dlen;
		int e = liblzo2.lzo1x_decompress_safe(r->in, clen, r->out, &made, NULL);
		if (e != LZO_E_OK || made != dlen)
			return fail(r, "lzop: corrupt block (LZO error %d)", e);
	}
	if (nd && checksums(r, "data", F_ADLER32_D, F_CRC32_D, dsums, r->out, dlen) < 0)
		return -1;
	r->out_pos = 0;
	r->out_len = dlen;
	return 1;
}

int lzop_next_block(struct lzop_reader *r, lzop_take_fn *take, void *ctx)
{
	uint8_t buf[LZOP_MAGIC_LEN];
	for (;;) {
		switch (r->state) {
		case R_DONE:
			return 0;
		case R_START:
		case R_BETWEEN: {
			ssize_t got = take(ctx, buf, LZOP_MAGIC_LEN);
			if (got < 0) {
				r->take_failed = true;
				return -1;
			}
			if (got == 0 && r->state == R_BETWEEN) {
				r->state = R_DONE;
				return 0;
			}
			if ((size_t)got < LZOP_MAGIC_LEN ||
			    memcmp(buf, lzop_magic, LZOP_MAGIC_LEN) != 0)
				return fail(r,
					    r->state == R_START ? "lzop: not an lzop file"
								: "lzop: data after the end of the "
								  "stream");
			if (read_header(r, take, ctx) < 0)
				return -1;
			r->state = R_BLOCKS;
			break;
		}
		case R_BLOCKS:
			if (take_all(r, take, ctx, buf, 4) < 0)
				return -1;
			uint32_t dlen = get_be32(buf);
			if (dlen == 0) {
				r->state = R_BETWEEN;
				break;
			}
			return read_block(r, take, ctx, dlen);
		}
	}
}

void lzop_reader_free(struct lzop_reader *r)
{
	free(r->in);
	free(r->out);
	r->in = r->out = NULL;
	r->in_cap = r->out_cap = 0;
}
