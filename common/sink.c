/* Output stream with in-process compression. The archive writer hands whole extents here; zstd
 * (always) and gzip with more than one thread are cut into frames compressed by worker threads
 * (framepar.h), xz runs its own, so compression overlaps with reading; gzip with one thread, as
 * `gzip` does, and lzo (lzop's format, lzop.h), as `lzop` does, compress in the caller's
 * thread. zstd's frames are listed in a seek table at the end (seektable.h), which makes the
 * archive seekable and leaves it an ordinary .zst. The codec's library is loaded when it is
 * chosen (codecs.h): a plain archive needs none. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codecs.h"
#include "frame_codecs.h"
#include "framepar.h"
#include "lzop.h"
#include "seektable.h"
#include "sha256.h"
#include "sink.h"
#include "writebehind.h"

#define OUTBUF_SIZE (1 << 20)
/* Direct I/O needs buffers at this alignment and lengths in whole sectors. */
#define DIRECT_ALIGN 4096u
#define SECTOR 512u
#define XZ_BLOCK_SIZE (4 << 20)
/* gzip's default, as `gzip` and `pigz` use it. */
#define GZIP_LEVEL 6
_Static_assert(LZOP_BLOCK_BOUND(LZOP_BLOCK_SIZE) <= OUTBUF_SIZE, "an lzop block fits outbuf");

struct sink {
	int fd;
	enum sink_codec codec;
	struct framepar_codec frame_codec;
	struct framepar *frames;    /* zstd, and gzip with several threads */
	struct seektable seektable; /* zstd's frames */
	lzma_stream xz;
	z_stream gz;        /* gzip, one thread */
	uint8_t *lzo_block; /* lzo: the block being collected, lzo_used bytes of LZOP_BLOCK_SIZE */
	size_t lzo_used;
	void *lzo_work;
	bool lzo_started; /* its header written */
	uint8_t *outbuf;
	size_t outbuf_used; /* uncompressed output collected, so small writes go out together */
	struct writebehind *behind; /* sink_to_own_file: plain output written by a thread */
	uint8_t *spare_outbuf;      /* with it: outbuf's twin, filled while the other is written */
	uint64_t bytes_in, bytes_out;
	bool direct;       /* fd has O_DIRECT set (sink_to_own_file) */
	uint8_t *joint;    /* with it: the start of a file-system block not yet written */
	size_t joint_used; /* (put_direct) */
	bool hashing;      /* sink_hash: every byte written goes into sha */
	struct sha256 sha;
	char err[256];
};

static int fail(struct sink *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	return -1;
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			poll(&pfd, 1, -1);
			continue;
		}
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Back to writes through the page cache: for a write direct I/O cannot take. */
static void drop_direct(struct sink *s)
{
	int flags = fcntl(s->fd, F_GETFL);
	if (flags >= 0)
		fcntl(s->fd, F_SETFL, flags & ~O_DIRECT);
	s->direct = false;
}

/* write(2) of all of buf: with direct I/O while the writes take it, the rest through the page
 * cache (write_all). */
static int write_through(struct sink *s, const char *p, size_t left)
{
	while (s->direct && left > 0) {
		ssize_t n = write(s->fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EINVAL && errno != EAGAIN)
			return fail(s, "write failed: %s", strerror(errno));
		if (n > 0) {
			p += n;
			left -= (size_t)n;
		}
		/* EINVAL: the file system wants another alignment (a 4 KiB sector, say); a short
		 * write leaves the file at an offset direct I/O may not take. write_all does the
		 * rest, and waits out EAGAIN. */
		if (left > 0)
			drop_direct(s);
	}
	if (write_all(s->fd, p, left) < 0)
		return fail(s, "write failed: %s", strerror(errno));
	return 0;
}

/* What waits in joint (put_direct), a whole number of sectors: at the end of the output, or
 * before the page cache takes over. */
static int finish_direct(struct sink *s)
{
	size_t waiting = s->joint_used;
	s->joint_used = 0;
	return write_through(s, (const char *)s->joint, waiting);
}

/* Direct I/O is fast in whole file-system blocks only: a write that starts or ends inside one
 * takes the file system's slow path (an extent, 512 bytes and 59 clusters, is not a whole
 * number of 4 KiB blocks: 2 GiB in writes of that size took 2.5 times as long as in 4 MiB
 * ones). So what a piece has past its last whole block waits in `joint`, and goes out in one
 * block with the start of the next piece; only the end of the output (finish_direct) is
 * written short. Pieces in whole 512-byte sectors, as every piece of a VMA stream is. */
static int put_direct(struct sink *s, const char *p, size_t len)
{
	if ((uintptr_t)p % SECTOR || len % SECTOR) {
		/* Through the page cache from here on, what waited first. */
		drop_direct(s);
		if (finish_direct(s) < 0)
			return -1;
		return write_through(s, p, len);
	}
	if (s->joint_used) {
		size_t n = DIRECT_ALIGN - s->joint_used < len ? DIRECT_ALIGN - s->joint_used : len;
		memcpy(s->joint + s->joint_used, p, n);
		s->joint_used += n;
		p += n;
		len -= n;
		if (s->joint_used < DIRECT_ALIGN)
			return 0;
		s->joint_used = 0;
		if (write_through(s, (const char *)s->joint, DIRECT_ALIGN) < 0)
			return -1;
	}
	/* (All of it, once direct I/O was dropped on the way.) */
	size_t whole = s->direct ? len / DIRECT_ALIGN * DIRECT_ALIGN : len;
	if (write_through(s, p, whole) < 0)
		return -1;
	if (!s->direct)
		return write_through(s, p + whole, len - whole);
	memcpy(s->joint, p + whole, len - whole);
	s->joint_used = len - whole;
	return 0;
}

/* Writes all of buf, in order after everything before it. On the output thread with
 * write-behind (a writebehind_fn), else in emit. */
static int put_out(void *ctx, const void *buf, size_t len)
{
	struct sink *s = ctx;
	return s->direct ? put_direct(s, buf, len) : write_through(s, buf, len);
}

/* Every byte of the output passes here or through hand_over, in order, on the caller's
 * thread (gzpar's members too). The hash is taken here, so that with write-behind the
 * output thread only writes. */
static void count_out(struct sink *s, const void *buf, size_t len)
{
	if (s->hashing)
		sha256_update(&s->sha, buf, len);
	s->bytes_out += len;
}

static int emit(struct sink *s, const void *buf, size_t len)
{
	count_out(s, buf, len);
	return put_out(s, buf, len);
}

/* Write-behind: buf goes to the output thread, and stays its own until writebehind_wait. A
 * failed write's reason is in s->err (put_out). */
static int hand_over(struct sink *s, const void *buf, size_t len)
{
	count_out(s, buf, len);
	return writebehind_submit(s->behind, buf, len);
}

int sink_hash(struct sink *s, char *err, size_t errlen)
{
	if (sha256_start(&s->sha, err, errlen) < 0)
		return -1;
	s->hashing = true;
	return 0;
}

void sink_sha256(struct sink *s, char hex[SINK_SHA256_HEX])
{
	sha256_finish(&s->sha, hex);
	s->hashing = false;
}

int sink_to_own_file(struct sink *s, char *err, size_t errlen)
{
	/* Compressed output comes in pieces of any length, which direct I/O does not take, and
	 * through buffers of the codecs' own, reused at once. */
	if (s->codec != SINK_PLAIN || s->behind)
		return 0;
	if (posix_memalign((void **)&s->joint, DIRECT_ALIGN, DIRECT_ALIGN) != 0 ||
	    posix_memalign((void **)&s->spare_outbuf, DIRECT_ALIGN, OUTBUF_SIZE) != 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int flags = fcntl(s->fd, F_GETFL);
	/* Refused on some file systems (tmpfs on older kernels): then the page cache it is. */
	if (flags >= 0 && fcntl(s->fd, F_SETFL, flags | O_DIRECT) == 0)
		s->direct = true;
	s->behind = writebehind_start(put_out, s, err, errlen);
	return s->behind ? 0 : -1;
}

/* Frames go out as any compressed output does; zstd's are entered in the seek table, with
 * their content checksum (the low 32 bits of its XXH64: the frame's last 4 bytes, little
 * endian), which the table repeats. */
static int frame_emit(void *ctx, const void *frame, size_t len, size_t data_len)
{
	struct sink *s = ctx;
	if (s->codec == SINK_ZSTD) {
		const uint8_t *end = (const uint8_t *)frame + len - 4;
		uint32_t checksum = (uint32_t)end[0] | (uint32_t)end[1] << 8 |
			(uint32_t)end[2] << 16 | (uint32_t)end[3] << 24;
		if (seektable_add(&s->seektable, (uint32_t)len, (uint32_t)data_len, checksum) < 0)
			return fail(s, "out of memory");
	}
	return emit(s, frame, len);
}

/* The codec's library (none for SINK_PLAIN): 0, or -1 with the reason in err. */
static int load_codec(enum sink_codec codec, char *err, size_t errlen)
{
	if (codec == SINK_ZSTD)
		return codec_load_zstd(err, errlen);
	if (codec == SINK_XZ)
		return codec_load_lzma(err, errlen);
	if (codec == SINK_GZIP)
		return codec_load_z(err, errlen);
	if (codec == SINK_LZO)
		return codec_load_lzo(err, errlen);
	return 0;
}

int sink_parse_codec(const char *spec, enum sink_codec *codec, int *level, char *err, size_t errlen)
{
	*err = '\0';
	const char *colon = strchr(spec, ':');
	size_t namelen = colon ? (size_t)(colon - spec) : strlen(spec);
	*level = -1;
	if (namelen == 4 && strncmp(spec, "none", 4) == 0 && !colon)
		*codec = SINK_PLAIN;
	else if (namelen == 4 && strncmp(spec, "zstd", 4) == 0)
		*codec = SINK_ZSTD;
	else if (namelen == 2 && strncmp(spec, "xz", 2) == 0)
		*codec = SINK_XZ;
	else if (namelen == 4 && strncmp(spec, "gzip", 4) == 0)
		*codec = SINK_GZIP;
	else if (namelen == 3 && strncmp(spec, "lzo", 3) == 0 && !colon)
		*codec = SINK_LZO;
	else
		return -1;
	/* zstd's highest level is the library's to say. */
	if (load_codec(*codec, err, errlen) < 0)
		return -1;
	if (colon) {
		char *end;
		long v = strtol(colon + 1, &end, 10);
		int max = *codec == SINK_ZSTD ? libzstd.ZSTD_maxCLevel() : 9;
		if (colon[1] == '\0' || *end || v < 1 || v > max)
			return -1;
		*level = (int)v;
	}
	return 0;
}

struct sink *sink_open(int fd, enum sink_codec codec, int level, int threads, char *errbuf,
		       size_t errlen)
{
	struct sink *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	s->fd = fd;
	if (load_codec(codec, errbuf, errlen) < 0)
		goto bad;
	s->codec = codec;
	if (posix_memalign((void **)&s->outbuf, DIRECT_ALIGN, OUTBUF_SIZE) != 0) {
		s->outbuf = NULL;
		snprintf(errbuf, errlen, "out of memory");
		goto bad;
	}
	if (codec == SINK_ZSTD || (codec == SINK_GZIP && threads > 1)) {
		if (codec == SINK_ZSTD) {
			frame_codec_zstd(&s->frame_codec, level < 0 ? ZSTD_CLEVEL_DEFAULT : level);
			s->seektable.checksums = true;
		} else {
			frame_codec_gzip(&s->frame_codec, level < 0 ? GZIP_LEVEL : level);
		}
		s->frames = framepar_open(&s->frame_codec, threads, frame_emit, s, errbuf, errlen);
		if (!s->frames)
			goto bad;
	} else if (codec == SINK_GZIP) {
		/* 16 + the window bits: a gzip header and trailer around the deflate stream. */
		if (codec_deflateInit2(&s->gz, level < 0 ? GZIP_LEVEL : level, 16 + MAX_WBITS) !=
		    Z_OK) {
			snprintf(errbuf, errlen, "cannot start gzip encoder");
			goto bad;
		}
	} else if (codec == SINK_LZO) {
		s->lzo_block = malloc(LZOP_BLOCK_SIZE);
		s->lzo_work = malloc(lzop_work_size());
		if (!s->lzo_block || !s->lzo_work) {
			snprintf(errbuf, errlen, "out of memory");
			goto bad;
		}
	} else if (codec == SINK_XZ) {
		lzma_stream init = LZMA_STREAM_INIT;
		lzma_mt mt = {
			.threads = (uint32_t)threads,
			.preset = level < 0 ? LZMA_PRESET_DEFAULT : (uint32_t)level,
			.check = LZMA_CHECK_CRC64,
			/* Each thread buffers a block in and out; the default, three dictionaries, makes
			 * the resident size grow past 100 MiB at level 3. */
			.block_size = XZ_BLOCK_SIZE,
		};
		s->xz = init;
		lzma_ret r = liblzma.lzma_stream_encoder_mt(&s->xz, &mt);
		if (r != LZMA_OK) {
			snprintf(errbuf, errlen, "cannot start xz encoder (liblzma error %d)", r);
			goto bad;
		}
	}
	return s;
bad:
	sink_free(s);
	return NULL;
}

/* zstd: the last frame, then the seek table as a skippable frame of its own. */
static int zstd_finish(struct sink *s)
{
	if (framepar_finish(s->frames, s->err, sizeof(s->err)) < 0)
		return -1;
	uint8_t *table;
	size_t len = seektable_encode(&s->seektable, &table);
	if (len == 0)
		return fail(s, "out of memory");
	int r = emit(s, table, len);
	free(table);
	return r;
}

static int xz_run(struct sink *s, const void *buf, size_t len, lzma_action action)
{
	s->xz.next_in = buf;
	s->xz.avail_in = len;
	for (;;) {
		s->xz.next_out = s->outbuf;
		s->xz.avail_out = OUTBUF_SIZE;
		lzma_ret r = liblzma.lzma_code(&s->xz, action);
		if (r != LZMA_OK && r != LZMA_STREAM_END)
			return fail(s, "xz: liblzma error %d", r);
		size_t n = OUTBUF_SIZE - s->xz.avail_out;
		if (n && emit(s, s->outbuf, n) < 0)
			return -1;
		if (action == LZMA_FINISH ? r == LZMA_STREAM_END : s->xz.avail_in == 0)
			return 0;
	}
}

static int gzip_run(struct sink *s, const void *buf, size_t len, int flush)
{
	if (s->frames && flush == Z_FINISH)
		return framepar_finish(s->frames, s->err, sizeof(s->err));
	if (s->frames)
		return framepar_write(s->frames, buf, len, s->err, sizeof(s->err));
	s->gz.next_in = (Bytef *)buf;
	s->gz.avail_in = (uInt)len; /* the writer's pieces are far below 4 GiB */
	for (;;) {
		s->gz.next_out = s->outbuf;
		s->gz.avail_out = OUTBUF_SIZE;
		int r = libz.deflate(&s->gz, flush);
		if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR)
			return fail(s, "gzip: zlib error %d", r);
		size_t n = OUTBUF_SIZE - s->gz.avail_out;
		if (n && emit(s, s->outbuf, n) < 0)
			return -1;
		if (flush == Z_FINISH ? r == Z_STREAM_END : s->gz.avail_in == 0)
			return 0;
	}
}

/* lzo: the header before the first block; then each full block of LZOP_BLOCK_SIZE. */
static int lzo_put(struct sink *s, const uint8_t *buf, size_t len)
{
	size_t n;
	if (!s->lzo_started) {
		n = lzop_put_header(s->outbuf);
		s->lzo_started = true;
		if (emit(s, s->outbuf, n) < 0)
			return -1;
	}
	for (;;) {
		if (s->lzo_used == LZOP_BLOCK_SIZE) {
			n = lzop_put_block(s->outbuf, s->lzo_block, s->lzo_used, s->lzo_work);
			if (n == 0)
				return fail(s, "lzo: compression failed");
			s->lzo_used = 0;
			if (emit(s, s->outbuf, n) < 0)
				return -1;
		}
		if (len == 0)
			return 0;
		size_t take = LZOP_BLOCK_SIZE - s->lzo_used < len ? LZOP_BLOCK_SIZE - s->lzo_used
								  : len;
		memcpy(s->lzo_block + s->lzo_used, buf, take);
		s->lzo_used += take;
		buf += take;
		len -= take;
	}
}

/* The last, partial block, and the end marker. */
static int lzo_finish(struct sink *s)
{
	if (lzo_put(s, NULL, 0) < 0)
		return -1;
	size_t n = 0;
	if (s->lzo_used > 0) {
		n = lzop_put_block(s->outbuf, s->lzo_block, s->lzo_used, s->lzo_work);
		if (n == 0)
			return fail(s, "lzo: compression failed");
		s->lzo_used = 0;
	}
	memset(s->outbuf + n, 0, LZOP_END_LEN);
	return emit(s, s->outbuf, n + LZOP_END_LEN);
}

static int flush_plain(struct sink *s)
{
	size_t used = s->outbuf_used;
	s->outbuf_used = 0;
	if (!used)
		return 0;
	if (!s->behind)
		return emit(s, s->outbuf, used);
	/* Collecting goes on in the twin while this one is written. */
	uint8_t *full = s->outbuf;
	s->outbuf = s->spare_outbuf;
	s->spare_outbuf = full;
	if (hand_over(s, full, used) < 0)
		return -1;
	return writebehind_wait(s->behind, s->outbuf);
}

/* Uncompressed: small writes (an extent of zero clusters is 512 bytes) are collected, so that
 * a sparse disk does not cost one system call per extent; large ones go straight out. 0, 1
 * when the output thread keeps buf (only if may_hold), or -1. */
static int write_plain(struct sink *s, const void *buf, size_t len, bool may_hold)
{
	/* What was collected goes out first, whenever this write does not join it. */
	bool large = len >= OUTBUF_SIZE / 2;
	if ((large || s->outbuf_used + len > OUTBUF_SIZE) && flush_plain(s) < 0)
		return -1;
	if (large && !s->behind)
		return emit(s, buf, len);
	if (large) {
		if (hand_over(s, buf, len) < 0)
			return -1;
		return may_hold ? 1 : writebehind_wait(s->behind, buf);
	}
	memcpy(s->outbuf + s->outbuf_used, buf, len);
	s->outbuf_used += len;
	return 0;
}

int sink_write_held(struct sink *s, const void *buf, size_t len)
{
	if (s->codec != SINK_PLAIN)
		return sink_write(s, buf, len);
	s->bytes_in += len;
	return write_plain(s, buf, len, true);
}

int sink_reclaim(struct sink *s, const void *buf)
{
	return s->behind ? writebehind_wait(s->behind, buf) : 0;
}

int sink_write(struct sink *s, const void *buf, size_t len)
{
	s->bytes_in += len;
	switch (s->codec) {
	case SINK_ZSTD:
		return framepar_write(s->frames, buf, len, s->err, sizeof(s->err));
	case SINK_XZ:
		return xz_run(s, buf, len, LZMA_RUN);
	case SINK_GZIP:
		return gzip_run(s, buf, len, Z_NO_FLUSH);
	case SINK_LZO:
		return lzo_put(s, buf, len);
	default:
		return write_plain(s, buf, len, false) < 0 ? -1 : 0;
	}
}

int sink_finish(struct sink *s)
{
	switch (s->codec) {
	case SINK_ZSTD:
		return zstd_finish(s);
	case SINK_XZ:
		return xz_run(s, NULL, 0, LZMA_FINISH);
	case SINK_GZIP:
		return gzip_run(s, NULL, 0, Z_FINISH);
	case SINK_LZO:
		return lzo_finish(s);
	default:
		if (flush_plain(s) < 0 || (s->behind && writebehind_drain(s->behind) < 0))
			return -1;
		/* (The output thread is idle now.) */
		return finish_direct(s);
	}
}

const char *sink_error(const struct sink *s) { return s->err; }
uint64_t sink_bytes_in(const struct sink *s) { return s->bytes_in; }
uint64_t sink_bytes_out(const struct sink *s) { return s->bytes_out; }

void sink_free(struct sink *s)
{
	if (!s)
		return;
	/* First: the thread may be writing from any buffer, the sink's own included. */
	writebehind_stop(s->behind);
	free(s->spare_outbuf);
	free(s->joint);
	sha256_free(&s->sha);
	if (s->codec == SINK_XZ)
		liblzma.lzma_end(&s->xz);
	framepar_free(s->frames);
	seektable_free(&s->seektable);
	if (s->codec == SINK_GZIP && !s->frames)
		libz.deflateEnd(&s->gz);
	free(s->lzo_block);
	free(s->lzo_work);
	free(s->outbuf);
	free(s);
}
