/* The compression libraries, loaded when a stream first needs one (dynlib.h): libzstd and
 * liblzma for the archives vma-create writes and vma-extract reads, zlib for gzip input. A
 * plain archive never maps any of them. instream.c and sink.c call them only through these
 * tables, never directly. */
#ifndef VZ_CODECS_H
#define VZ_CODECS_H

#include <lzma.h>
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
	X(ZSTD_compressStream2)                                                                    \
	X(ZSTD_freeCCtx)                                                                           \
	X(ZSTD_createDCtx)                                                                         \
	X(ZSTD_DCtx_setParameter)                                                                  \
	X(ZSTD_decompressStream)                                                                   \
	X(ZSTD_freeDCtx)
#define LIBLZMA_FUNCTIONS(X)                                                                       \
	X(lzma_stream_encoder_mt)                                                                  \
	X(lzma_stream_decoder)                                                                     \
	X(lzma_code)                                                                               \
	X(lzma_end)
/* inflateInit2() is a macro around inflateInit2_(): call it as codec_inflateInit2(). */
#define LIBZ_FUNCTIONS(X)                                                                          \
	X(inflateInit2_)                                                                           \
	X(inflate)                                                                                 \
	X(inflateReset)                                                                            \
	X(inflateEnd)

extern struct libzstd {
	LIBZSTD_FUNCTIONS(DYNLIB_POINTER)
} libzstd;
extern struct liblzma {
	LIBLZMA_FUNCTIONS(DYNLIB_POINTER)
} liblzma;
extern struct libz {
	LIBZ_FUNCTIONS(DYNLIB_POINTER)
} libz;

#define codec_inflateInit2(strm, window_bits)                                                      \
	libz.inflateInit2_((strm), (window_bits), ZLIB_VERSION, (int)sizeof(z_stream))

/* Load a table's library, the first time: 0, or -1 with "cannot load SONAME: why" in err. */
int codec_load_zstd(char *err, size_t errlen);
int codec_load_lzma(char *err, size_t errlen);
int codec_load_z(char *err, size_t errlen);

#endif
