/* vma-extract --serve. One pass over the archive, through the reader that -t uses (every check
 * of it, every cluster present), builds an index: per 64 KiB cluster of each device, one
 * 64-bit word, the stream offset of its first stored 4 KiB block (48 bits) and its block mask
 * (16 bits; the stored blocks follow each other in the extent). 8 bytes per 64 KiB: 128 MiB
 * for a 1 TiB disk. A read then goes straight to the blocks it needs, in:
 *
 * - an uncompressed archive in a regular file: pread(2) on the archive;
 * - a zstd archive in the seekable format (its seek table at the end, common/seektable.h):
 *   the frames holding those bytes, decompressed on their own (ZSTD_decompressDCtx checks
 *   each frame's content checksum; the table's copy of it is compared too) and kept in a
 *   small cache (CACHE_FRAMES frames, CACHE_BYTES at most);
 * - anything else (a compressed archive without a seek table, a pipe): a copy of the
 *   decompressed stream written during the index pass into an unlinked temporary file in
 *   TMPDIR, read as an uncompressed archive.
 *
 * The exports are served by common/nbd_server.c in its read-only mode until SIGTERM or SIGINT
 * (a signalfd in its poll loop). */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "cli.h"
#include "codecs.h"
#include "incremental.h"
#include "nbd_server.h"
#include "outfile.h"
#include "reader.h"
#include "seektable.h"
#include "serve.h"
#include "unixsock.h"
#include "xalloc.h"

/* Decompressed frames kept, at most CACHE_BYTES of them together (but always one), and the
 * largest frame served (a seek table with larger ones is refused: the cache would not be small);
 * a frame compressed into more than zstd's bound for MAX_FRAME is refused too. */
#define CACHE_FRAMES 8
#define CACHE_BYTES (64u << 20)
#define MAX_FRAME (32u << 20)
#define MAX_COMPRESSED_FRAME (MAX_FRAME + MAX_FRAME / 128 + 65536)
/* Stream offsets must fit the index's 48 bits (256 TiB). */
#define MAX_STREAM_OFFSET (1ull << 48)

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

struct frame_slot {
	size_t frame; /* its index in the seek table */
	uint8_t *data;
	uint64_t used; /* when last used; 0: empty */
};

struct device {
	char *name;
	uint64_t size;
	uint64_t *index; /* per cluster: stream offset << 16 | block mask */
};

struct served {
	const char *archive; /* for messages */
	int fd;              /* where the (uncompressed) stream is read: archive or copy */
	uint64_t base;       /* where the stream starts in fd */
	bool seekable;       /* fd is the compressed archive, read by frames */
	struct seektable table;
	ZSTD_DCtx *dctx;
	uint8_t *cbuf; /* a compressed frame */
	struct frame_slot cache[CACHE_FRAMES];
	int slots;        /* of cache[] used: CACHE_BYTES / max_frame, 1 to CACHE_FRAMES */
	size_t max_frame; /* the largest frame's decompressed size */
	uint64_t clock;
	struct device devs[VMA_MAX_DEVICES];
	int ndevs;
	int export_of[256]; /* by dev_id */
};

/* The frame of the seek table, decompressed and checked, from the cache or into it; NULL after
 * saying why on standard error. */
static const uint8_t *frame_data(struct served *sv, size_t f)
{
	struct frame_slot *slot = &sv->cache[0];
	for (int i = 0; i < sv->slots; i++) {
		struct frame_slot *s = &sv->cache[i];
		if (s->used && s->frame == f) {
			s->used = ++sv->clock;
			return s->data;
		}
		if (s->used < slot->used)
			slot = s;
	}
	const struct seek_frame *fr = &sv->table.frames[f];
	slot->used = 0; /* emptied until the frame checks out */
	if (!slot->data)
		slot->data = xmalloc(sv->max_frame ? sv->max_frame : 1);
	const char *why = NULL;
	char zerr[128];
	ssize_t n = 0;
	for (uint32_t done = 0; done < fr->c_size; done += (uint32_t)n) {
		n = pread(sv->fd, sv->cbuf + done, fr->c_size - done, (off_t)(fr->c_off + done));
		if (n < 0 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n <= 0) {
			why = n < 0 ? strerror(errno)
				    : "the file is shorter than its seek table says";
			break;
		}
	}
	/* The table's copy of the frame's checksum, when both have it (the frame header's
	 * Content_Checksum_flag): the frame's own last 4 bytes. */
	if (!why && sv->table.checksums && fr->c_size >= 8 && sv->cbuf[4] & 4 &&
	    le32(sv->cbuf + fr->c_size - 4) != fr->checksum)
		why = "its checksum differs from the seek table's";
	if (!why) {
		size_t r = libzstd.ZSTD_decompressDCtx(sv->dctx, slot->data, fr->d_size, sv->cbuf,
						       fr->c_size);
		if (libzstd.ZSTD_isError(r)) {
			snprintf(zerr, sizeof(zerr), "zstd: %s", libzstd.ZSTD_getErrorName(r));
			why = zerr;
		} else if (r != fr->d_size) {
			why = "it decompresses to another size than the seek table's";
		}
	}
	if (why) {
		warnx("%s: the frame at offset %llu (%u bytes) is damaged: %s; reads of its data "
		      "fail with EIO",
		      sv->archive, (unsigned long long)fr->c_off, fr->c_size, why);
		return NULL;
	}
	slot->frame = f;
	slot->used = ++sv->clock;
	return slot->data;
}

/* len bytes of the stream at off into buf: 0, or EIO after saying why. */
static int stream_read(struct served *sv, uint64_t off, uint8_t *buf, size_t len)
{
	while (len > 0) {
		size_t n;
		if (sv->seekable) {
			if (off >= sv->table.d_total) {
				warnx("%s: stream offset %llu is past the end of the seek table",
				      sv->archive, (unsigned long long)off);
				return EIO;
			}
			size_t f = seektable_find(&sv->table, off);
			const struct seek_frame *fr = &sv->table.frames[f];
			const uint8_t *data = frame_data(sv, f);
			if (!data)
				return EIO;
			uint64_t in = off - fr->d_off;
			n = fr->d_size - in < len ? (size_t)(fr->d_size - in) : len;
			memcpy(buf, data + in, n);
		} else {
			ssize_t r = pread(sv->fd, buf, len, (off_t)(sv->base + off));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				warnx("%s: reading %zu bytes at offset %llu: %s", sv->archive, len,
				      (unsigned long long)(sv->base + off),
				      r < 0 ? strerror(errno) : "the file has shrunk");
				return EIO;
			}
			n = (size_t)r;
		}
		off += n;
		buf += n;
		len -= n;
	}
	return 0;
}

static bool stored(uint16_t mask, unsigned b) { return mask >> b & 1; }

static int on_read(void *ctx, int export, uint64_t off, uint32_t len, void *buf)
{
	struct served *sv = ctx;
	const struct device *d = &sv->devs[export];
	uint8_t *out = buf;
	while (len > 0) {
		uint64_t cluster = off / VMA_CLUSTER_SIZE, entry = d->index[cluster];
		uint16_t mask = (uint16_t)entry;
		unsigned in = (unsigned)(off % VMA_CLUSTER_SIZE), b = in / VMA_BLOCK_SIZE;
		/* the run of blocks from b on that are alike (stored, or not), within len */
		unsigned end = (b + 1) * VMA_BLOCK_SIZE;
		while (end < VMA_CLUSTER_SIZE && end - in < len &&
		       stored(mask, end / VMA_BLOCK_SIZE) == stored(mask, b))
			end += VMA_BLOCK_SIZE;
		uint32_t n = end - in < len ? end - in : len;
		if (stored(mask, b)) {
			unsigned before = (unsigned)__builtin_popcount(mask & ((1u << b) - 1));
			uint64_t at = (entry >> 16) + (uint64_t)before * VMA_BLOCK_SIZE +
				in % VMA_BLOCK_SIZE;
			int rc = stream_read(sv, at, out, n);
			if (rc)
				return rc;
		} else {
			memset(out, 0, n);
		}
		off += n;
		out += n;
		len -= n;
	}
	return 0;
}

/* A 4 KiB block is a hole (never stored: a zero cluster, or a zero block of a cluster). */
static uint32_t on_block_status(void *ctx, int export, uint64_t off, uint64_t len, uint64_t *run)
{
	struct served *sv = ctx;
	const struct device *d = &sv->devs[export];
	uint64_t block = off / VMA_BLOCK_SIZE, end = off + len;
	bool data = stored((uint16_t)d->index[block / VMA_BLOCKS_PER_CLUSTER],
			   block % VMA_BLOCKS_PER_CLUSTER);
	uint64_t pos = (block + 1) * VMA_BLOCK_SIZE;
	while (pos < end) {
		uint16_t mask = (uint16_t)d->index[pos / VMA_CLUSTER_SIZE];
		if (pos % VMA_CLUSTER_SIZE == 0 && mask == (data ? 0xffff : 0)) {
			pos += VMA_CLUSTER_SIZE; /* a whole cluster alike */
			continue;
		}
		if (stored(mask, (unsigned)(pos / VMA_BLOCK_SIZE % VMA_BLOCKS_PER_CLUSTER)) != data)
			break;
		pos += VMA_BLOCK_SIZE;
	}
	*run = (pos < end ? pos : end) - off;
	return data ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO;
}

/* The index pass: each entry of every extent into its device's index. */
static int index_cluster(void *opaque, struct vma_reader *r, int dev_id, uint64_t cluster,
			 uint16_t mask, const uint8_t *blocks)
{
	struct served *sv = opaque;
	uint64_t at = r->extent_start + (uint64_t)(blocks - r->extent);
	if (at >= MAX_STREAM_OFFSET) {
		snprintf(r->err, sizeof(r->err), "offset %llu: past the 256 TiB --serve can index",
			 (unsigned long long)at);
		return -1;
	}
	sv->devs[sv->export_of[dev_id]].index[cluster] = mask ? at << 16 | mask : 0;
	return 0;
}

/* A temporary file for the decompressed copy, already unlinked. */
static int scratch_file(void)
{
	const char *dir = getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	int fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR))
		return fd;
	char *path = xasprintf("%s/vma-extract.XXXXXX", dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		unlink(path);
	free(path);
	return fd;
}

/* Whether every frame of the table carries zstd's content checksum (its header's
 * Content_Checksum_flag), which ZSTD_decompressDCtx checks: a frame without one could be served
 * damaged. When one lacks it, the archive is served from a checked decompressed copy instead,
 * as one without a seek table is: said on standard error. */
static bool frames_checked(int fd, const struct seektable *t, const char *path)
{
	for (size_t i = 0; i < t->count; i++) {
		uint8_t head[5];
		if (pread(fd, head, sizeof(head), (off_t)t->frames[i].c_off) != sizeof(head) ||
		    memcmp(head, "\x28\xb5\x2f\xfd", 4) != 0 || !(head[4] & 4)) {
			warnx("%s: the frame at offset %llu carries no checksum: serving a "
			      "decompressed copy, checked as it is made",
			      path, (unsigned long long)t->frames[i].c_off);
			return false;
		}
	}
	return true;
}

/* Opens the archive and chooses how it is read (seekable zstd, the file as it is, or a copy);
 * builds the index. Exits 1 on failure. */
static void open_served(struct served *sv, const char *path, enum meter_mode meter_mode)
{
	char why[512];
	sv->archive = path;
	sv->fd = -1;
	int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		err(EXIT_FAIL, "%s", path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		err(EXIT_FAIL, "%s", path);
	off_t start = lseek(fd, 0, SEEK_CUR);
	bool regular = S_ISREG(st.st_mode) && start >= 0;
	uint8_t magic[4] = {0};
	if (regular && pread(fd, magic, 4, start) == 4 && memcmp(magic, VMA_MAGIC, 4) == 0) {
		sv->fd = fd;
		sv->base = (uint64_t)start;
	} else if (regular && memcmp(magic, "\x28\xb5\x2f\xfd", 4) == 0 && start == 0) {
		int rc = seektable_read(fd, (uint64_t)st.st_size, &sv->table, why, sizeof(why));
		if (rc < 0)
			errx(EXIT_FAIL, "%s: %s", path, why);
		sv->seekable = rc == 1 && frames_checked(fd, &sv->table, path);
		uint32_t max_c = 0;
		for (size_t i = 0; sv->seekable && i < sv->table.count; i++) {
			const struct seek_frame *fr = &sv->table.frames[i];
			if (fr->d_size > MAX_FRAME || fr->c_size > MAX_COMPRESSED_FRAME)
				errx(EXIT_FAIL,
				     "%s: frame %zu holds %u bytes (%u compressed); --serve reads "
				     "frames of up to %u bytes",
				     path, i, fr->d_size, fr->c_size, MAX_FRAME);
			if (fr->d_size > sv->max_frame)
				sv->max_frame = fr->d_size;
			if (fr->c_size > max_c)
				max_c = fr->c_size;
		}
		if (sv->seekable) {
			size_t fit = sv->max_frame ? CACHE_BYTES / sv->max_frame : CACHE_FRAMES;
			sv->slots = fit < 1 ? 1 : fit > CACHE_FRAMES ? CACHE_FRAMES : (int)fit;
			if (codec_load_zstd(why, sizeof(why)) < 0)
				errx(EXIT_FAIL, "%s: %s", path, why);
			sv->fd = fd;
			sv->dctx = libzstd.ZSTD_createDCtx();
			sv->cbuf = xmalloc(max_c ? max_c : 1);
			if (!sv->dctx)
				errx(EXIT_FAIL, "%s: cannot create a zstd context", path);
		}
	}
	bool copy = !sv->seekable && sv->fd != fd;
	if (copy && (sv->fd = scratch_file()) < 0)
		err(EXIT_FAIL, "%s: a temporary file for the decompressed archive",
		    getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	/* The index pass: the archive read as -t reads it, from its start. */
	struct instream *in = instream_open(fd, why, sizeof(why));
	if (!in)
		errx(EXIT_FAIL, "%s: %s", path, why);
	if (copy)
		instream_tee(in, sv->fd);
	struct vma_reader r;
	if (vma_reader_open(&r, in) < 0)
		errx(EXIT_FAIL, "%s: %s", path, r.err);
	/* Its clusters alone are not the disks: said so, not found "incomplete" after a pass. */
	for (int i = 0; i < r.nconfigs; i++)
		if (strcmp(r.configs[i].name, INC_BLOB_NAME) == 0)
			errx(EXIT_FAIL,
			     "%s: an incremental archive, which --serve does not serve; write its "
			     "chain as one archive with --to-vma first",
			     path);
	vma_reader_cover_all(&r);
	uint64_t total = 0;
	for (int id = 1; id < 255; id++) {
		struct vma_device *d = &r.devs[id];
		if (!d->name)
			continue;
		total += d->size;
		sv->export_of[id] = sv->ndevs;
		sv->devs[sv->ndevs++] = (struct device){(char *)d->name, d->size,
							xcalloc(d->clusters, sizeof(uint64_t))};
	}
	if (sv->ndevs == 0)
		errx(EXIT_FAIL, "%s: the archive holds no disk to serve", path);
	struct meter meter;
	meter_start(&meter, meter_mode, total);
	r.meter = &meter;
	if (vma_reader_run(&r, index_cluster, NULL, sv) != 0) {
		meter_break();
		errx(EXIT_FAIL, "%s: %s", path, r.err);
	}
	meter_finish(&meter, r.stored_bytes + r.zero_bytes);
	for (int i = 0; i < sv->ndevs; i++) /* the names outlive the reader */
		sv->devs[i].name = xstrdup(sv->devs[i].name);
	vma_reader_close(&r);
	instream_free(in);
	if (sv->fd != fd && fd != STDIN_FILENO)
		close(fd);
}

/* The listening socket: fd:N inherited, or a new one at path (which must not exist). */
static int listen_on(const char *spec, bool *created)
{
	int fd;
	*created = false;
	if (strncmp(spec, "fd:", 3) == 0) {
		int accepting = 0;
		socklen_t len = sizeof(accepting);
		if (!parse_fd_number(spec + 3, &fd))
			usage_error("--serve: '%s' is not fd:N", spec);
		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0 || !accepting)
			errx(EXIT_USAGE, "--serve %s: not a listening socket", spec);
	} else {
		struct stat st;
		if (lstat(spec, &st) == 0)
			errx(EXIT_USAGE, "%s: already exists", spec);
		fd = unixsock_listen(spec, 0600);
		if (fd < 0)
			err(EXIT_FAIL, "%s", spec);
		*created = true;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		err(EXIT_FAIL, "%s", spec);
	return fd;
}

struct served *served_open(const char *archive, enum meter_mode meter_mode)
{
	struct served *sv = xcalloc(1, sizeof(*sv));
	open_served(sv, archive, meter_mode);
	return sv;
}

int served_serve(struct served *sv, int listen_fd, int client_fd, int stop_fd,
		 const struct nbd_timeouts *timeouts, char *err, size_t errlen)
{
	struct nbd_export exports[VMA_MAX_DEVICES];
	for (int i = 0; i < sv->ndevs; i++)
		exports[i] = (struct nbd_export){sv->devs[i].name, sv->devs[i].size};
	const struct nbd_server_ops ops = {.read = on_read,
					   .block_status = on_block_status,
					   .stop_fd = stop_fd};
	return nbd_serve(listen_fd, client_fd, exports, sv->ndevs, &ops, sv, timeouts, err, errlen);
}

void served_free(struct served *sv)
{
	if (sv->fd >= 0)
		close(sv->fd);
	for (int i = 0; i < sv->ndevs; i++) {
		free(sv->devs[i].name);
		free(sv->devs[i].index);
	}
	for (int i = 0; i < CACHE_FRAMES; i++)
		free(sv->cache[i].data);
	if (sv->dctx)
		libzstd.ZSTD_freeDCtx(sv->dctx);
	free(sv->cbuf);
	seektable_free(&sv->table);
	free(sv);
}

int serve_archive(const char *archive, const char *socket, enum meter_mode meter_mode)
{
	struct served *sv = served_open(archive, meter_mode);
	/* SIGTERM and SIGINT end the service cleanly: read from a signalfd in the poll loop. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	if (sigprocmask(SIG_BLOCK, &stop, NULL) < 0)
		err(EXIT_FAIL, "sigprocmask");
	int sfd = signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		err(EXIT_FAIL, "signalfd");
	bool created;
	char *sock_path = xstrdup(socket);
	int lfd = listen_on(socket, &created);
	int track = created ? outfile_track(sock_path) : -1; /* SIGHUP, SIGPIPE */
	/* Requests are served one at a time: a client that stops reading its reply (or sending
	 * its request) for 60 s is dropped, so that it holds up the others no longer. Handshakes
	 * get 30 s. */
	const struct nbd_timeouts timeouts = {30000, 60000};
	char why[512];
	int rc = served_serve(sv, lfd, -1, sfd, &timeouts, why, sizeof(why));
	if (rc < 0)
		warnx("%s", why);
	if (created)
		unlink(socket);
	outfile_untrack(track);
	close(lfd);
	close(sfd);
	free(sock_path);
	served_free(sv);
	return rc < 0 ? EXIT_FAIL : 0;
}
