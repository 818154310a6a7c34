/* The compression libraries, loaded when a stream first needs one (dynlib.h): libzstd, liblzma,
 * zlib (gzip) and liblzo2 (LZO1X, inside lzop's container: lzop.h) for the archives vma-create
 * writes and vma-extract reads. A plain archive never maps any of them. instream.c, sink.c and
 * lzop.c call them only through these tables, never directly. */
#ifndef VZ_CODECS_H
#define VZ_CODECS_H

#include <lzma.h>
#include <lzo/lzo1x.h>
#include <stddef.h>
#include <zlib.h>
#include <zstd.h>

#include "dynlib.h"

#define LIBZSTD_FUNCTIONS(X)                                                                       \
	X(ZSTD_isError)                                                                            \
	X(ZSTD_getErrorName)                                                                       \
	X(ZSTD_maxCLevel)                                                                          \
	X(ZSTD_createCCtx)                                                                         \
	X(ZSTD_CCtx_setParameter)                                                                  \
	X(ZSTD_compress2)                                                                          \
	X(ZSTD_compressBound)                                                                      \
	X(ZSTD_freeCCtx)                                                                           \
	X(ZSTD_createDCtx)                                                                         \
	X(ZSTD_DCtx_setParameter)                                                                  \
	X(ZSTD_decompressStream)                                                                   \
	X(ZSTD_decompressDCtx)                                                                     \
	X(ZSTD_freeDCtx)
#define LIBLZMA_FUNCTIONS(X)                                                                       \
	X(lzma_stream_encoder_mt)                                                                  \
	X(lzma_stream_decoder)                                                                     \
	X(lzma_code)                                                                               \
	X(lzma_end)
/* inflateInit2() and deflateInit2() are macros around inflateInit2_() and deflateInit2_():
 * call them as codec_inflateInit2() and codec_deflateInit2(). */
#define LIBZ_FUNCTIONS(X)                                                                          \
	X(inflateInit2_)                                                                           \
	X(inflate)                                                                                 \
	X(inflateReset)                                                                            \
	X(inflateEnd)                                                                              \
	X(deflateInit2_)                                                                           \
	X(deflate)                                                                                 \
	X(deflateReset)                                                                            \
	X(deflateBound)                                                                            \
	X(deflateEnd)
/* lzo_init() is a macro around __lzo_init_v2(): codec_load_lzo() calls it. */
#define LIBLZO2_FUNCTIONS(X)                                                                       \
	X(__lzo_init_v2)                                                                           \
	X(lzo_version)                                                                             \
	X(lzo1x_1_compress)                                                                        \
	X(lzo1x_decompress_safe)                                                                   \
	X(lzo_adler32)                                                                             \
	X(lzo_crc32)

extern struct libzstd {
	LIBZSTD_FUNCTIONS(DYNLIB_POINTER)
} libzstd;
extern struct liblzma {
	LIBLZMA_FUNCTIONS(DYNLIB_POINTER)
} liblzma;
extern struct libz {
	LIBZ_FUNCTIONS(DYNLIB_POINTER)
} libz;
extern struct liblzo2 {
	LIBLZO2_FUNCTIONS(DYNLIB_POINTER)
} liblzo2;

#define codec_inflateInit2(strm, window_bits)                                                      \
	libz.inflateInit2_((strm), (window_bits), ZLIB_VERSION, (int)sizeof(z_stream))
#define codec_deflateInit2(strm, level, window_bits)                                               \
	libz.deflateInit2_((strm), (level), Z_DEFLATED, (window_bits), 8, Z_DEFAULT_STRATEGY,      \
			   ZLIB_VERSION, (int)sizeof(z_stream))

/* Load a table's library, the first time: 0, or -1 with "cannot load SONAME: why" in err. */
int codec_load_zstd(char *err, size_t errlen);
int codec_load_lzma(char *err, size_t errlen);
int codec_load_z(char *err, size_t errlen);
/* Also runs lzo_init() the first time (its check of the library's build against ours). */
int codec_load_lzo(char *err, size_t errlen);

#endif
