/* Decompressing reader. The codec is chosen by the first bytes, so a pipe works as well as a
 * file; concatenated frames/members/files are read as one stream, as the command-line tools do.
 * The codec's library is loaded then (codecs.h): a plain archive needs none. lzop's container
 * is read by lzop.c, which takes its bytes from here. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
/* The fuzz targets' build (fuzz/README.md) ignores the checksums of zstd frames and xz blocks
 * (and lzop.c those of lzop), which a fuzzer cannot forge, so that mutated data gets
 * decompressed and on to the reader.
 * gzip's CRC-32 cannot be switched off in zlib: its member still ends at the first mismatch. */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_d_forceIgnoreChecksum, in zstd since 1.4.9 */
#define FUZZ_XZ_FLAGS LZMA_IGNORE_CHECK
#else
#define FUZZ_XZ_FLAGS 0
#endif

#include "codecs.h"
#include "instream.h"
#include "lzop.h"
#include "sha256.h"

#define RAW_SIZE (1 << 20)

enum codec { CODEC_NONE, CODEC_ZSTD, CODEC_XZ, CODEC_GZIP, CODEC_LZO };

struct instream {
	int fd;
	enum codec codec;
	uint8_t *raw; /* compressed bytes read from fd, [raw_pos, raw_len) not consumed yet */
	size_t raw_pos, raw_len;
	bool raw_eof;
	bool frame_open;      /* inside a compressed frame that has not ended yet */
	uint64_t raw_used;    /* compressed bytes consumed */
	uint64_t frame_start; /* where in the compressed input the current zstd frame began */
	uint64_t delivered;
	int tee_fd; /* a copy of what is delivered goes there, or -1 */
	ZSTD_DCtx *zstd;
	lzma_stream xz;
	z_stream gz;
	struct lzop_reader lzo;
	bool hashing; /* instream_hash: every byte read from fd goes into sha */
	struct sha256 sha;
	char err[256];
};

/* Plain input (and lzop's) is buffered in small amounts: a large read gets what is buffered,
 * then the rest straight from fd into its own buffer, without a copy (an extent's data: up to
 * 3.7 MiB; an lzop block). */
#define PLAIN_FILL (64 << 10)

/* One read(2) of up to len bytes: their count (0 at the end of the input), or -1 with the
 * message set. */
static ssize_t read_some(struct instream *s, uint8_t *buf, size_t len)
{
	for (;;) {
		ssize_t n = read(s->fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			snprintf(s->err, sizeof(s->err), "read failed: %s", strerror(errno));
		/* Every byte of the input passes here once, in order, before any decoding. */
		if (n > 0 && s->hashing)
			sha256_update(&s->sha, buf, (size_t)n);
		return n;
	}
}

/* Refills the empty buffer with up to len bytes. */
static int fill_raw(struct instream *s, size_t len)
{
	if (s->raw_pos < s->raw_len || s->raw_eof)
		return 0;
	ssize_t n = read_some(s, s->raw, len);
	if (n < 0)
		return -1;
	s->raw_pos = 0;
	s->raw_len = (size_t)n;
	s->raw_eof = n == 0;
	return 0;
}

struct instream *instream_open(int fd, char *errbuf, size_t errlen)
{
	struct instream *s = calloc(1, sizeof(*s));
	lzma_stream xz_init = LZMA_STREAM_INIT;
	if (!s || !(s->raw = calloc(1, RAW_SIZE))) {
		snprintf(errbuf, errlen, "out of memory");
		free(s);
		return NULL;
	}
	s->fd = fd;
	s->tee_fd = -1;
	s->xz = xz_init;
	/* Collect at least 6 bytes (or the whole stream) to see the magic. */
	while (s->raw_len < LZOP_MAGIC_LEN && !s->raw_eof) {
		ssize_t n = read_some(s, s->raw + s->raw_len, RAW_SIZE - s->raw_len);
		if (n < 0) {
			snprintf(errbuf, errlen, "%s", s->err);
			goto bad;
		}
		s->raw_len += (size_t)n;
		s->raw_eof = n == 0;
	}
	const uint8_t *m = s->raw;
	if (s->raw_len >= 4 && memcmp(m, "\x28\xb5\x2f\xfd", 4) == 0) {
		if (codec_load_zstd(errbuf, errlen) < 0)
			goto bad;
		s->codec = CODEC_ZSTD;
		if (!(s->zstd = libzstd.ZSTD_createDCtx())) {
			snprintf(errbuf, errlen, "cannot create zstd context");
			goto bad;
		}
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
		libzstd.ZSTD_DCtx_setParameter(s->zstd, ZSTD_d_forceIgnoreChecksum,
					       ZSTD_d_ignoreChecksum);
#endif
	} else if (s->raw_len >= 6 &&
		   memcmp(m,
			  "\xfd"
			  "7zXZ\0",
			  6) == 0) {
		if (codec_load_lzma(errbuf, errlen) < 0)
			goto bad;
		s->codec = CODEC_XZ;
		if (liblzma.lzma_stream_decoder(&s->xz, UINT64_MAX,
						LZMA_CONCATENATED | FUZZ_XZ_FLAGS) != LZMA_OK) {
			snprintf(errbuf, errlen, "cannot start xz decoder");
			goto bad;
		}
	} else if (s->raw_len >= 2 && m[0] == 0x1f && m[1] == 0x8b) {
		if (codec_load_z(errbuf, errlen) < 0)
			goto bad;
		s->codec = CODEC_GZIP;
		if (codec_inflateInit2(&s->gz, 16 + MAX_WBITS) != Z_OK) {
			snprintf(errbuf, errlen, "cannot start gzip decoder");
			goto bad;
		}
	} else if (s->raw_len >= LZOP_MAGIC_LEN && memcmp(m, lzop_magic, LZOP_MAGIC_LEN) == 0) {
		if (codec_load_lzo(errbuf, errlen) < 0)
			goto bad;
		s->codec = CODEC_LZO;
	}
	return s;
bad:
	instream_free(s);
	return NULL;
}

/* Up to len bytes of the raw input, fewer only at its end: what is buffered, then large reads
 * straight from fd into buf. Each byte is added to *counted (if not NULL) as it arrives, so
 * that a read that then fails still counts what it delivered. */
static ssize_t read_raw(struct instream *s, uint8_t *buf, size_t len, uint64_t *counted)
{
	size_t got = 0;
	while (got < len) {
		size_t n;
		if (s->raw_pos == s->raw_len && !s->raw_eof && len - got >= PLAIN_FILL) {
			ssize_t r = read_some(s, buf + got, len - got);
			if (r < 0)
				return -1;
			s->raw_eof = r == 0;
			n = (size_t)r;
		} else {
			if (fill_raw(s, PLAIN_FILL) < 0)
				return -1;
			/* Not raw_eof: the magic's reads may have reached the end with bytes
			 * buffered. */
			if (s->raw_pos == s->raw_len)
				break;
			n = s->raw_len - s->raw_pos < len - got ? s->raw_len - s->raw_pos
								: len - got;
			memcpy(buf + got, s->raw + s->raw_pos, n);
			s->raw_pos += n;
		}
		if (counted)
			*counted += n;
		got += n;
	}
	return (ssize_t)got;
}

static ssize_t read_plain(struct instream *s, uint8_t *buf, size_t len)
{
	return read_raw(s, buf, len, &s->delivered);
}

/* lzop.c's source of bytes: exactly len of the raw input, fewer only at its end. */
static ssize_t take_raw(void *ctx, uint8_t *buf, size_t len)
{
	return read_raw(ctx, buf, len, NULL);
}

/* lzop: block by block, until buf is full or the stream ends. */
static ssize_t read_lzo(struct instream *s, uint8_t *buf, size_t len)
{
	struct lzop_reader *r = &s->lzo;
	size_t got = 0;
	while (got < len) {
		if (r->out_pos == r->out_len) {
			int rc = lzop_next_block(r, take_raw, s);
			if (rc < 0 && !r->take_failed)
				snprintf(s->err, sizeof(s->err), "%s", r->err);
			if (rc < 0)
				return -1;
			if (rc == 0)
				break;
		}
		size_t n = r->out_len - r->out_pos < len - got ? r->out_len - r->out_pos
							       : len - got;
		memcpy(buf + got, r->out + r->out_pos, n);
		r->out_pos += n;
		s->delivered += n;
		got += n;
	}
	return (ssize_t)got;
}

/* Runs the decoder until buf is full or the input ends. */
static ssize_t read_decoded(struct instream *s, uint8_t *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		if (fill_raw(s, RAW_SIZE) < 0)
			return -1;
		/* At the end of the input, a decoder may still hold output of an open frame. */
		if (s->raw_eof && s->raw_pos == s->raw_len && !s->frame_open)
			break;
		size_t in_avail = s->raw_len - s->raw_pos;
		const uint8_t *in = s->raw + s->raw_pos;
		size_t used, made;
		if (s->codec == CODEC_ZSTD) {
			ZSTD_inBuffer zin = {in, in_avail, 0};
			ZSTD_outBuffer zout = {buf + got, len - got, 0};
			size_t r = libzstd.ZSTD_decompressStream(s->zstd, &zout, &zin);
			/* zstd checks each frame's checksum at its end: a seekable archive's
			 * frames are small, so the offset names where the damage is. */
			if (libzstd.ZSTD_isError(r)) {
				snprintf(s->err, sizeof(s->err),
					 "zstd frame at archive offset %llu: %s",
					 (unsigned long long)s->frame_start,
					 libzstd.ZSTD_getErrorName(r));
				return -1;
			}
			s->frame_open = r != 0;
			if (r == 0) /* one call ends at most one frame */
				s->frame_start = s->raw_used + zin.pos;
			used = zin.pos;
			made = zout.pos;
		} else if (s->codec == CODEC_XZ) {
			s->xz.next_in = in;
			s->xz.avail_in = in_avail;
			s->xz.next_out = buf + got;
			s->xz.avail_out = len - got;
			lzma_ret r = liblzma.lzma_code(&s->xz, s->raw_eof ? LZMA_FINISH : LZMA_RUN);
			if (r != LZMA_OK && r != LZMA_STREAM_END) {
				snprintf(s->err, sizeof(s->err),
					 "xz: corrupt or truncated (liblzma error %d)", r);
				return -1;
			}
			s->frame_open = r != LZMA_STREAM_END;
			used = in_avail - s->xz.avail_in;
			made = len - got - s->xz.avail_out;
		} else {
			s->gz.next_in = (Bytef *)in;
			s->gz.avail_in = (uInt)in_avail;
			s->gz.next_out = buf + got;
			s->gz.avail_out = (uInt)(len - got);
			int r = libz.inflate(&s->gz, Z_NO_FLUSH);
			if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) {
				snprintf(s->err, sizeof(s->err), "gzip: %s",
					 s->gz.msg ? s->gz.msg : "corrupt data");
				return -1;
			}
			used = in_avail - s->gz.avail_in;
			made = len - got - s->gz.avail_out;
			s->frame_open = r != Z_STREAM_END;
			if (r == Z_STREAM_END)
				libz.inflateReset(
					&s->gz); /* a following member continues the stream */
		}
		s->raw_pos += used;
		s->raw_used += used;
		s->delivered += made;
		got += made;
		/* lzma with LZMA_FINISH and no progress would spin: the input is exhausted. */
		if (used == 0 && made == 0 && s->raw_eof && s->raw_pos == s->raw_len) {
			if (s->frame_open) {
				snprintf(s->err, sizeof(s->err),
					 "the compressed stream is truncated");
				return -1;
			}
			break;
		}
	}
	return (ssize_t)got;
}

static ssize_t read_any(struct instream *s, void *buf, size_t len)
{
	if (s->codec == CODEC_LZO)
		return read_lzo(s, buf, len);
	return s->codec == CODEC_NONE ? read_plain(s, buf, len) : read_decoded(s, buf, len);
}

ssize_t instream_read(struct instream *s, void *buf, size_t len)
{
	ssize_t n = read_any(s, buf, len);
	for (ssize_t done = 0; s->tee_fd >= 0 && n > 0 && done < n;) {
		ssize_t w = write(s->tee_fd, (char *)buf + done, (size_t)(n - done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			snprintf(s->err, sizeof(s->err), "writing the decompressed copy: %s",
				 w < 0 ? strerror(errno) : "no progress");
			return -1;
		}
		done += w;
	}
	return n;
}

void instream_tee(struct instream *s, int fd) { s->tee_fd = fd; }

int instream_hash(struct instream *s, char *err, size_t errlen)
{
	if (sha256_start(&s->sha, err, errlen) < 0)
		return -1;
	/* What instream_open read to see the magic, all of it still in the buffer. */
	sha256_update(&s->sha, s->raw, s->raw_len);
	s->hashing = true;
	return 0;
}

int instream_sha256(struct instream *s, char hex[INSTREAM_SHA256_HEX])
{
	/* The rest of the input, which the decoder left (nothing, for a stream read whole):
	 * read through the buffer, whose unread bytes are hashed already. */
	while (!s->raw_eof) {
		ssize_t n = read_some(s, s->raw, RAW_SIZE);
		if (n < 0)
			return -1;
		s->raw_pos = s->raw_len = 0;
		s->raw_eof = n == 0;
	}
	sha256_finish(&s->sha, hex);
	s->hashing = false;
	return 0;
}

uint64_t instream_offset(const struct instream *s) { return s->delivered; }

const char *instream_error(const struct instream *s) { return s->err; }

const char *instream_codec(const struct instream *s)
{
	static const char *names[] = {"none", "zstd", "xz", "gzip", "lzo"};
	return names[s->codec];
}

void instream_free(struct instream *s)
{
	if (!s)
		return;
	sha256_free(&s->sha);
	if (s->zstd)
		libzstd.ZSTD_freeDCtx(s->zstd);
	if (s->codec == CODEC_XZ)
		liblzma.lzma_end(&s->xz);
	if (s->codec == CODEC_GZIP)
		libz.inflateEnd(&s->gz);
	lzop_reader_free(&s->lzo);
	free(s->raw);
	free(s);
}
