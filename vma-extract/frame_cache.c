/* vma-extract --serve's frame cache and its read-ahead thread (frame_cache.h). */
#include <err.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "frame_cache.h"
#include "xalloc.h"

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Frame f of ff's seek table into out, decompressed and checked with u: NULL, or why not. */
static const char *unpack_frame(const struct frame_file *ff, struct unpacker *u, size_t f,
				uint8_t *out, char *zerr, size_t zerrlen)
{
	const struct seek_frame *fr = &ff->table->frames[f];
	ssize_t n = 0;
	for (uint32_t done = 0; done < fr->c_size; done += (uint32_t)n) {
		n = pread(ff->fd, u->cbuf + done, fr->c_size - done, (off_t)(fr->c_off + done));
		if (n < 0 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n <= 0)
			return n < 0 ? strerror(errno)
				     : "the file is shorter than its seek table says";
	}
	/* The table's copy of the frame's checksum, when both have it (the frame header's
	 * Content_Checksum_flag): the frame's own last 4 bytes. */
	if (ff->table->checksums && fr->c_size >= 8 && u->cbuf[4] & 4 &&
	    le32(u->cbuf + fr->c_size - 4) != fr->checksum)
		return "its checksum differs from the seek table's";
	size_t r = libzstd.ZSTD_decompressDCtx(u->dctx, out, fr->d_size, u->cbuf, fr->c_size);
	if (libzstd.ZSTD_isError(r)) {
		snprintf(zerr, zerrlen, "zstd: %s", libzstd.ZSTD_getErrorName(r));
		return zerr;
	}
	return r != fr->d_size ? "it decompresses to another size than the seek table's" : NULL;
}

/* The slot holding or loading frame f of file, or NULL. Under lock. */
static struct frame_slot *cached(struct frame_cache *fc, int file, size_t f)
{
	for (int i = 0; i < fc->slots; i++) {
		struct frame_slot *s = &fc->cache[i];
		if (s->state != SLOT_EMPTY && s->file == file && s->frame == f)
			return s;
	}
	return NULL;
}

/* The least recently used slot that neither thread is using, or NULL. Under lock. */
static struct frame_slot *victim(struct frame_cache *fc)
{
	struct frame_slot *v = NULL;
	for (int i = 0; i < fc->slots; i++) {
		struct frame_slot *s = &fc->cache[i];
		if (s->state != SLOT_LOADING && !s->pins && (!v || s->used < v->used))
			v = s;
	}
	return v;
}

/* Decompresses frame f of file into slot (LOADING, reserved by the caller under lock) with u,
 * the lock released meanwhile; the slot READY, or EMPTY and why not. Under lock. */
static const char *load_slot(struct frame_cache *fc, struct frame_slot *slot, int file, size_t f,
			     struct unpacker *u, char *zerr, size_t zerrlen)
{
	slot->file = file;
	slot->frame = f;
	slot->state = SLOT_LOADING;
	if (!slot->data)
		slot->data = xmalloc(fc->max_frame ? fc->max_frame : 1);
	pthread_mutex_unlock(&fc->lock);
	const char *why = unpack_frame(&fc->files[file], u, f, slot->data, zerr, zerrlen);
	pthread_mutex_lock(&fc->lock);
	slot->state = why ? SLOT_EMPTY : SLOT_READY;
	slot->used = why ? 0 : ++fc->clock;
	pthread_cond_broadcast(&fc->loaded);
	return why;
}

static bool queued(const struct frame_cache *fc, int file, size_t f)
{
	for (int i = 0; i < fc->queued; i++)
		if (fc->queue[i].file == file && fc->queue[i].frame == f)
			return true;
	return false;
}

/* Asks the read-ahead thread for the AHEAD frames after f of file, those not cached. Under
 * lock. */
static void read_ahead(struct frame_cache *fc, int file, size_t f)
{
	for (size_t k = f + 1; k <= f + AHEAD && k < fc->files[file].table->count; k++) {
		if (cached(fc, file, k) || queued(fc, file, k))
			continue;
		if (fc->queued == AHEAD_QUEUE) { /* the oldest request goes */
			memmove(fc->queue, fc->queue + 1, sizeof(fc->queue[0]) * (AHEAD_QUEUE - 1));
			fc->queued--;
		}
		fc->queue[fc->queued++] = (struct frame_ref){file, k};
		pthread_cond_signal(&fc->work);
	}
}

/* The read-ahead thread: frames asked for, the newest request first, decompressed into slots
 * nobody uses. A frame that fails is left out silently: a read that needs it decompresses it
 * again and says why. */
static void *ahead_main(void *arg)
{
	struct frame_cache *fc = arg;
	char zerr[128];
	pthread_mutex_lock(&fc->lock);
	while (!fc->quit) {
		if (fc->queued == 0) {
			pthread_cond_wait(&fc->work, &fc->lock);
			continue;
		}
		struct frame_ref want = fc->queue[--fc->queued];
		struct frame_slot *slot = NULL;
		if (!cached(fc, want.file, want.frame) && (slot = victim(fc)))
			load_slot(fc, slot, want.file, want.frame, &fc->ahead_unpacker, zerr,
				  sizeof(zerr));
	}
	pthread_mutex_unlock(&fc->lock);
	return NULL;
}

struct frame_slot *frame_cache_get(struct frame_cache *fc, int file, size_t f)
{
	char zerr[128];
	const char *why = NULL;
	pthread_mutex_lock(&fc->lock);
	struct frame_slot *slot;
	for (;;) {
		slot = cached(fc, file, f);
		if (slot && slot->state == SLOT_READY)
			break;
		if (!slot && (slot = victim(fc))) {
			why = load_slot(fc, slot, file, f, &fc->main_unpacker, zerr, sizeof(zerr));
			if (why)
				slot = NULL;
			break;
		}
		/* loading in the other thread, or every slot busy (the server thread leaves one
		 * unpinned, so the other thread is loading it): until that load is over */
		pthread_cond_wait(&fc->loaded, &fc->lock);
	}
	if (slot) {
		slot->used = ++fc->clock;
		slot->pins++;
		if (fc->ahead && f > 0 && cached(fc, file, f - 1))
			read_ahead(fc, file, f);
	}
	pthread_mutex_unlock(&fc->lock);
	if (why) {
		const struct frame_file *ff = &fc->files[file];
		const struct seek_frame *fr = &ff->table->frames[f];
		warnx("%s: the frame at offset %llu (%u bytes) is damaged: %s; reads of its data "
		      "fail with EIO",
		      ff->path, (unsigned long long)fr->c_off, fr->c_size, why);
	}
	return slot;
}

void frame_cache_unpin(struct frame_cache *fc, struct frame_slot *slot)
{
	pthread_mutex_lock(&fc->lock);
	slot->pins--; /* the read-ahead thread, which never waits for a slot, wakes not */
	pthread_mutex_unlock(&fc->lock);
}

static void unpacker_start(struct frame_cache *fc, struct unpacker *u, const char *path)
{
	u->dctx = libzstd.ZSTD_createDCtx();
	u->cbuf = xmalloc(fc->max_cframe ? fc->max_cframe : 1);
	if (!u->dctx)
		errx(EXIT_FAIL, "%s: cannot create a zstd context", path);
}

static void unpacker_free(struct unpacker *u)
{
	if (u->dctx)
		libzstd.ZSTD_freeDCtx(u->dctx);
	free(u->cbuf);
}

/* The read-ahead thread, with every signal blocked: SIGTERM and SIGINT are for the server
 * thread's signalfd, the others for its handlers. */
static void start_ahead(struct frame_cache *fc, const char *path)
{
	sigset_t all, old;
	sigfillset(&all);
	unpacker_start(fc, &fc->ahead_unpacker, path);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&fc->ahead_thread, NULL, ahead_main, fc);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		errx(EXIT_FAIL, "%s: a thread to read ahead: %s", path, strerror(rc));
	fc->ahead = true;
}

void frame_cache_start(struct frame_cache *fc, const struct frame_file *files, size_t max_frame,
		       uint32_t max_cframe, const char *path)
{
	*fc = (struct frame_cache){.files = files,
				   .max_frame = max_frame,
				   .max_cframe = max_cframe};
	pthread_mutex_init(&fc->lock, NULL);
	pthread_cond_init(&fc->loaded, NULL);
	pthread_cond_init(&fc->work, NULL);
	char why[512];
	size_t fit = max_frame ? CACHE_BYTES / max_frame : CACHE_FRAMES;
	fc->slots = fit < 1 ? 1 : fit > CACHE_FRAMES ? CACHE_FRAMES : (int)fit;
	if (codec_load_zstd(why, sizeof(why)) < 0)
		errx(EXIT_FAIL, "%s: %s", path, why);
	unpacker_start(fc, &fc->main_unpacker, path);
	if (fc->slots >= MIN_AHEAD_SLOTS)
		start_ahead(fc, path);
}

void frame_cache_free(struct frame_cache *fc)
{
	if (!fc->files)
		return;  /* never started */
	if (fc->ahead) { /* after the frame it may be decompressing */
		pthread_mutex_lock(&fc->lock);
		fc->quit = true;
		pthread_cond_signal(&fc->work);
		pthread_mutex_unlock(&fc->lock);
		pthread_join(fc->ahead_thread, NULL);
		unpacker_free(&fc->ahead_unpacker);
	}
	for (int i = 0; i < CACHE_FRAMES; i++)
		free(fc->cache[i].data);
	unpacker_free(&fc->main_unpacker);
	pthread_cond_destroy(&fc->loaded);
	pthread_cond_destroy(&fc->work);
	pthread_mutex_destroy(&fc->lock);
}
