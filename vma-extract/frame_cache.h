/* The frame cache of vma-extract --serve: frames of seekable zstd files (common/seektable.h),
 * each decompressed on its own (ZSTD_decompressDCtx checks the frame's content checksum; the
 * seek table's copy of it is compared too) and kept in a few slots, CACHE_BYTES at most. A
 * read of the frame after the one read before (a client reading sequentially) has a second
 * thread decompress the next AHEAD frames meanwhile, so that decompressing overlaps sending; a
 * frame enters the cache only checked, whichever thread decompressed it. */
#ifndef VMA_EXTRACT_FRAME_CACHE_H
#define VMA_EXTRACT_FRAME_CACHE_H
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codecs.h"
#include "seektable.h"

/* The slots kept at most (fewer when frames are large: CACHE_BYTES of them together, but always
 * one). */
#define CACHE_FRAMES 8
#define CACHE_BYTES (64u << 20)

/* Frames decompressed ahead of a sequential reader, and the read-ahead requests queued at most
 * (older ones are dropped: a reader that moved on no longer needs them). Read-ahead needs room
 * beside the frames being read: none with fewer than MIN_AHEAD_SLOTS slots. */
#define AHEAD 2
#define AHEAD_QUEUE 8
#define MIN_AHEAD_SLOTS 4

/* A file read by frames: its seek table, and where its frames are read. */
struct frame_file {
	const char *path; /* for messages */
	int fd;
	const struct seektable *table; /* NULL: not read by frames */
};

enum slot_state { SLOT_EMPTY, SLOT_LOADING, SLOT_READY };

/* A cache slot. Its fields are under frame_cache.lock; data is written only by the thread
 * that turned the slot LOADING, and read only once READY. */
struct frame_slot {
	int file;     /* its index in frame_cache.files */
	size_t frame; /* its index in that file's seek table */
	uint8_t *data;
	uint64_t used; /* when last used, for the choice of a slot to reuse */
	enum slot_state state;
	int pins; /* the server thread's uses of it (a copy, a reply being sent): kept till 0 */
};

/* What decompresses one frame at a time: each thread has its own. */
struct unpacker {
	ZSTD_DCtx *dctx;
	uint8_t *cbuf; /* a compressed frame */
};

struct frame_ref {
	int file;
	size_t frame;
};

struct frame_cache {
	const struct frame_file *files;
	size_t max_frame;              /* the largest frame's decompressed size, over all files */
	uint32_t max_cframe;           /* and compressed size */
	struct unpacker main_unpacker; /* the server thread's */
	struct frame_slot cache[CACHE_FRAMES];
	int slots; /* of cache[] used: CACHE_BYTES / max_frame, 1 to CACHE_FRAMES */
	uint64_t clock;
	/* The read-ahead thread (when there is room for it), and what it shares with the server
	 * thread, under lock: the slots, its queue, quit. */
	bool ahead;
	pthread_t ahead_thread;
	struct unpacker ahead_unpacker;
	pthread_mutex_t lock;
	pthread_cond_t loaded; /* a slot left LOADING (the server thread may wait for one) */
	pthread_cond_t work;   /* a request was queued, or quit (the read-ahead thread waits) */
	struct frame_ref queue[AHEAD_QUEUE];
	int queued;
	bool quit;
};

/* Ready to read frames of files (kept by the caller while the cache lives) with frames of up
 * to max_frame bytes (max_cframe compressed): libzstd loaded, the slots sized, the read-ahead
 * thread started when there is room. Exits 1 on failure, naming path. */
void frame_cache_start(struct frame_cache *fc, const struct frame_file *files, size_t max_frame,
		       uint32_t max_cframe, const char *path);
/* Frame f of file's seek table, decompressed and checked, from the cache or into it, its slot
 * pinned until frame_cache_unpin(); NULL after saying why on standard error. */
struct frame_slot *frame_cache_get(struct frame_cache *fc, int file, size_t f);
void frame_cache_unpin(struct frame_cache *fc, struct frame_slot *slot);
/* The read-ahead thread stopped (after the frame it may be decompressing), all freed. */
void frame_cache_free(struct frame_cache *fc);

#endif
