/* One whole frame per piece (frame_codecs.h): a gzip member through zlib's deflate, a zstd
 * frame with its content size and checksum through ZSTD_compress2. */
#include <stdio.h>
#include <stdlib.h>

#include "codecs.h"
#include "frame_codecs.h"

static void *gzip_start(int level, size_t piece, size_t *out_cap, char *err, size_t errlen)
{
	z_stream *z = calloc(1, sizeof(*z));
	/* 16 + the window bits: a gzip header and trailer around each member. */
	if (!z || codec_deflateInit2(z, level, 16 + MAX_WBITS) != Z_OK) {
		free(z);
		snprintf(err, errlen, "cannot start gzip encoder");
		return NULL;
	}
	*out_cap = libz.deflateBound(z, piece);
	return z;
}

static size_t gzip_compress(void *state, const void *in, size_t in_len, void *out, size_t out_cap,
			    char *err, size_t errlen)
{
	z_stream *z = state;
	int r = libz.deflateReset(z);
	if (r == Z_OK) {
		z->next_in = (Bytef *)in;
		z->avail_in = (uInt)in_len;
		z->next_out = out;
		z->avail_out = (uInt)out_cap;
		/* out_cap is deflateBound's: one call finishes the member. */
		r = libz.deflate(z, Z_FINISH);
		if (r == Z_STREAM_END)
			return out_cap - z->avail_out;
		if (r == Z_OK)
			r = Z_BUF_ERROR;
	}
	snprintf(err, errlen, "gzip: zlib error %d", r);
	return 0;
}

static void gzip_stop(void *state)
{
	libz.deflateEnd(state);
	free(state);
}

void frame_codec_gzip(struct framepar_codec *c, int level)
{
	*c = (struct framepar_codec){GZIP_PIECE, level, gzip_start, gzip_compress, gzip_stop};
}

static void *zstd_start(int level, size_t piece, size_t *out_cap, char *err, size_t errlen)
{
	ZSTD_CCtx *z = libzstd.ZSTD_createCCtx();
	if (!z) {
		snprintf(err, errlen, "cannot create zstd context");
		return NULL;
	}
	libzstd.ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, level);
	libzstd.ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
	*out_cap = libzstd.ZSTD_compressBound(piece);
	return z;
}

static size_t zstd_compress(void *state, const void *in, size_t in_len, void *out, size_t out_cap,
			    char *err, size_t errlen)
{
	size_t n = libzstd.ZSTD_compress2(state, out, out_cap, in, in_len);
	if (!libzstd.ZSTD_isError(n))
		return n;
	snprintf(err, errlen, "zstd: %s", libzstd.ZSTD_getErrorName(n));
	return 0;
}

static void zstd_stop(void *state) { libzstd.ZSTD_freeCCtx(state); }

void frame_codec_zstd(struct framepar_codec *c, int level)
{
	*c = (struct framepar_codec){ZSTD_FRAME, level, zstd_start, zstd_compress, zstd_stop};
}
