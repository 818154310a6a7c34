/* The codecs framepar.h compresses in parallel: gzip members and zstd frames. */
#ifndef VZ_FRAME_CODECS_H
#define VZ_FRAME_CODECS_H
#include "framepar.h"

/* gzip: 1 MiB pieces, as pigz cuts them. */
#define GZIP_PIECE (1u << 20)
/* zstd: the frames of a seekable archive (seektable.h), each decompressible on its own. The
 * size trades the ratio (each frame starts with an empty window) against the work to read one
 * byte at random (a whole frame is decompressed to check its checksum). Measured with
 * bench/vma.sh's zstd-files and bench/serve.sh on the 2-core machine: 2 MiB frames cost 0.8 %
 * in size and allowed 616 random 4 KiB reads/s of a disk of real files; 1 MiB frames 1.6 %
 * and 980 reads/s (the goals: at most 2 %, 1 000 reads/s). */
#define ZSTD_FRAME (1u << 20)

/* Fills *c for the codec at level; its library must be loaded (codecs.h). */
void frame_codec_gzip(struct framepar_codec *c, int level);
void frame_codec_zstd(struct framepar_codec *c, int level);

#endif
