/* The codecs framepar.h compresses in parallel: gzip members and zstd frames. */
#ifndef VZ_FRAME_CODECS_H
#define VZ_FRAME_CODECS_H
#include "framepar.h"

/* gzip: 1 MiB pieces, as pigz cuts them. */
#define GZIP_PIECE (1u << 20)
/* zstd: the frames of a seekable archive (seektable.h), each decompressible on its own. The
 * size trades the ratio (each frame starts with an empty window: level 3's window is 2 MiB,
 * so frames of that size lose little; measured in bench/vma.sh) against the work to read one
 * byte at random (a whole frame is decompressed to check its checksum). */
#define ZSTD_FRAME (2u << 20)

/* Fills *c for the codec at level; its library must be loaded (codecs.h). */
void frame_codec_gzip(struct framepar_codec *c, int level);
void frame_codec_zstd(struct framepar_codec *c, int level);

#endif
