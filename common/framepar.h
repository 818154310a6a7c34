/* Independent frames compressed by several threads, for the sink (sink.c): the stream is cut
 * into pieces of a fixed size, each compressed on its own into a complete frame of its codec
 * (a gzip member, a zstd frame), and the frames are written in the order of the data. A
 * codec's decoder reads concatenated frames as one stream (the gzip and zstd formats both say
 * so); what it costs against one long stream (each piece starts with an empty window) is
 * measured by bench/vma.sh's gzip and zstd rows. */
#ifndef VZ_FRAMEPAR_H
#define VZ_FRAMEPAR_H
#include <stddef.h>

/* How one codec compresses a piece. The codec's library must be loaded (codecs.h). */
struct framepar_codec {
	size_t piece; /* uncompressed bytes per frame; the last may be shorter */
	int level;
	/* A compressor for one slot, and the most a piece can compress to: NULL with the reason
	 * in err. */
	void *(*start)(int level, size_t piece, size_t *out_cap, char *err, size_t errlen);
	/* in_len (<= piece) bytes into one whole frame at out: its length, or 0 with the reason
	 * in err. */
	size_t (*compress)(void *state, const void *in, size_t in_len, void *out, size_t out_cap,
			   char *err, size_t errlen);
	void (*stop)(void *state);
};

struct framepar;

/* Where the frames go, in order, with the length of the data each holds: 0, or -1 (the
 * callback keeps its message). */
typedef int framepar_emit_fn(void *ctx, const void *frame, size_t len, size_t data_len);

/* threads >= 1 workers; the caller's thread fills the next piece meanwhile. NULL with the
 * reason in err. */
struct framepar *framepar_open(const struct framepar_codec *codec, int threads,
			       framepar_emit_fn *emit, void *ctx, char *err, size_t errlen);
/* 0, or -1 with the reason in err; when emit failed, emit's own message stands. */
int framepar_write(struct framepar *p, const void *buf, size_t len, char *err, size_t errlen);
/* Compresses and writes out what is left: the last frame (an empty stream still gets one). */
int framepar_finish(struct framepar *p, char *err, size_t errlen);
/* Stops and joins the workers. */
void framepar_free(struct framepar *p);

#endif
