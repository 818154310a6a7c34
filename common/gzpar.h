/* gzip with several threads, for the sink (sink.c): the stream is cut into pieces of
 * GZPAR_PIECE bytes, each compressed by its own thread into a gzip member of its own, and the
 * members are written in order. Concatenated members are one gzip stream to `gzip -d`, zlib and
 * Proxmox's `zcat`, as the gzip format says; what this costs against one deflate stream (each
 * piece starts with an empty window) is measured by bench/vma.sh's gzip row. zlib must be
 * loaded (codec_load_z). */
#ifndef VZ_GZPAR_H
#define VZ_GZPAR_H
#include <stddef.h>

#define GZPAR_PIECE (1u << 20)

struct gzpar;

/* Where the members go, in order: 0, or -1 (the callback keeps its message). */
typedef int gzpar_emit_fn(void *ctx, const void *buf, size_t len);

/* threads >= 2 workers at the zlib level: NULL with the reason in err. */
struct gzpar *gzpar_open(int level, int threads, gzpar_emit_fn *emit, void *ctx, char *err,
			 size_t errlen);
/* 0, or -1 with the reason in err; when emit failed, emit's own message stands. */
int gzpar_write(struct gzpar *g, const void *buf, size_t len, char *err, size_t errlen);
/* Compresses and writes out what is left; the last member. */
int gzpar_finish(struct gzpar *g, char *err, size_t errlen);
/* Stops and joins the workers. */
void gzpar_free(struct gzpar *g);

#endif
