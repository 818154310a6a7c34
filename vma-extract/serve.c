/* vma-extract --serve. One pass over the archive, through the reader that -t uses (every check
 * of it, every cluster present), builds an index: per 64 KiB cluster of each device, one
 * 64-bit word saying where its stored 4 KiB blocks are (see LINK_BITS). 8 bytes per 64 KiB:
 * 128 MiB for a 1 TiB disk. A read then goes straight to the blocks it needs, in:
 *
 * - an uncompressed archive in a regular file: pread(2) on the archive;
 * - a zstd archive in the seekable format (its seek table at the end, common/seektable.h):
 *   the frames holding those bytes, decompressed on their own, checked and kept in a small
 *   cache with read-ahead for sequential readers (frame_cache.h);
 * - anything else (a compressed archive without a seek table, a pipe): a copy of the
 *   decompressed stream written during the index pass into an unlinked temporary file in
 *   TMPDIR, read as an uncompressed archive.
 *
 * An incremental archive is served with its chain (chain.h), each link read as above: the
 * index pass reads the full first and then each incremental, oldest to newest, each entry
 * replacing the older one of its cluster, so that the index ends up naming, per cluster, the
 * newest link that holds it (a cluster an incremental stores as zero is zero). The index stays
 * 8 bytes per cluster however long the chain; the frame cache is one for all links.
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
#include <sys/uio.h>
#include <unistd.h>

#include "bytes.h"
#include "chain.h"
#include "cli.h"
#include "codecs.h"
#include "frame_cache.h"
#include "nbd_server.h"
#include "outfile.h"
#include "reader.h"
#include "seektable.h"
#include "serve.h"
#include "unixsock.h"
#include "xalloc.h"

/* The largest frame served (a seek table with larger ones is refused: the cache would not be
 * small); a frame compressed into more than zstd's bound for MAX_FRAME is refused too. */
#define MAX_FRAME (32u << 20)
#define MAX_COMPRESSED_FRAME (MAX_FRAME + MAX_FRAME / 128 + 65536)

/* An index entry: bits 0-15 the cluster's block mask, 16-25 the link of the chain that holds
 * it (0: the archive asked for), 26-63 where its first stored block is in that link's stream,
 * in 512-byte units past the end of the header (every extent is 512 bytes and whole 4 KiB
 * blocks, so every block starts a whole number of units past it): 128 TiB of stream per link.
 * A zero cluster, or one never stored, is 0. */
#define LINK_BITS 10
#define UNIT 512u
#define MAX_UNITS (1ull << (64 - 16 - LINK_BITS))
_Static_assert(INC_MAX_DEPTH + 1 <= 1 << LINK_BITS, "every link of a chain has a number");

struct device {
	char *name;
	uint64_t size;
	uint64_t *index; /* per cluster: an entry, as LINK_BITS describes it */
};

/* One archive of the chain (the only one for a full), as its blocks are read. */
struct source {
	const char *path; /* for messages */
	int fd;           /* where its (uncompressed) stream is read: archive or copy */
	bool copy;        /* fd is the decompressed copy, made during the index pass */
	uint64_t base;    /* where stream offset `from` is in fd */
	uint64_t from;    /* for a copy, the stream offset of its first byte: the header's end */
	uint64_t first;   /* the header's end: the index's offsets count from there */
	bool seekable;    /* fd is the compressed archive, read by frames */
	struct seektable table;
};

struct served {
	struct chain chain; /* the archives, open (their readers closed after the index pass) */
	struct source *src; /* by link */
	/* The frames of the links read by frames, by link (table NULL for the others), and
	 * their largest sizes, for the cache. */
	struct frame_file *files;
	size_t max_frame;
	uint32_t max_cframe;
	struct frame_cache frames;
	/* The slots pinned for the reply being sent (on_read_pieces), till on_release. */
	struct frame_slot *held[CACHE_FRAMES];
	int nheld;
	struct device devs[VMA_MAX_DEVICES];
	int ndevs;
	int export_of[256]; /* by dev_id of links[0] */
	int indexing;       /* the link the index pass is reading */
};

/* Where the bytes of link's stream from off on are, in a frame of the cache (its slot
 * pinned, into *slot) and how many of the len asked for are there (*n); NULL after saying why
 * (EIO for the client). */
static const uint8_t *frame_bytes(struct served *sv, int link, uint64_t off, size_t len,
				  struct frame_slot **slot, size_t *n)
{
	const struct source *src = &sv->src[link];
	if (off >= src->table.d_total) {
		warnx("%s: stream offset %llu is past the end of the seek table", src->path,
		      (unsigned long long)off);
		return NULL;
	}
	size_t f = seektable_find(&src->table, off);
	const struct seek_frame *fr = &src->table.frames[f];
	if (!(*slot = frame_cache_get(&sv->frames, link, f)))
		return NULL;
	uint64_t in = off - fr->d_off;
	*n = fr->d_size - in < len ? (size_t)(fr->d_size - in) : len;
	return (*slot)->data + in;
}

/* len bytes of link's stream at off into buf: 0, or EIO after saying why. */
static int stream_read(struct served *sv, int link, uint64_t off, uint8_t *buf, size_t len)
{
	const struct source *src = &sv->src[link];
	while (len > 0) {
		size_t n;
		if (src->seekable) {
			struct frame_slot *slot;
			const uint8_t *data = frame_bytes(sv, link, off, len, &slot, &n);
			if (!data)
				return EIO;
			memcpy(buf, data, n);
			frame_cache_unpin(&sv->frames, slot);
		} else {
			uint64_t at = src->base + off - src->from;
			ssize_t r = pread(src->fd, buf, len, (off_t)at);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				warnx("%s: reading %zu bytes at offset %llu: %s", src->path, len,
				      (unsigned long long)at,
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

/* The bytes from off on, within len, in one run of blocks alike (stored, or not) of the
 * cluster of entry. */
static uint32_t alike_run(uint64_t entry, uint64_t off, uint32_t len)
{
	uint16_t mask = (uint16_t)entry;
	unsigned in = (unsigned)(off % VMA_CLUSTER_SIZE), b = in / VMA_BLOCK_SIZE;
	unsigned end = (b + 1) * VMA_BLOCK_SIZE;
	while (end < VMA_CLUSTER_SIZE && end - in < len &&
	       stored(mask, end / VMA_BLOCK_SIZE) == stored(mask, b))
		end += VMA_BLOCK_SIZE;
	return end - in < len ? end - in : len;
}

/* The link whose stream holds the byte at device offset off (of the cluster of entry), and
 * where in that stream (*at); -1 when it is a zero. */
static int stored_at(const struct served *sv, uint64_t entry, uint64_t off, uint64_t *at)
{
	uint16_t mask = (uint16_t)entry;
	unsigned in = (unsigned)(off % VMA_CLUSTER_SIZE), b = in / VMA_BLOCK_SIZE;
	*at = 0;
	if (!stored(mask, b))
		return -1;
	int link = (int)(entry >> 16 & ((1u << LINK_BITS) - 1));
	unsigned before = (unsigned)__builtin_popcount(mask & ((1u << b) - 1));
	*at = sv->src[link].first + (entry >> (16 + LINK_BITS)) * UNIT +
		(uint64_t)before * VMA_BLOCK_SIZE + in % VMA_BLOCK_SIZE;
	return link;
}

static int on_read(void *ctx, int export, uint64_t off, uint32_t len, void *buf)
{
	struct served *sv = ctx;
	const struct device *d = &sv->devs[export];
	uint8_t *out = buf;
	while (len > 0) {
		uint64_t entry = d->index[off / VMA_CLUSTER_SIZE];
		uint64_t at;
		uint32_t n = alike_run(entry, off, len);
		int link = stored_at(sv, entry, off, &at);
		if (link >= 0) {
			int rc = stream_read(sv, link, at, out, n);
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

/* Never written: what zero runs of a reply are sent from (the kernel's zero page). */
static uint8_t zeros[1 << 20];

/* Appends len bytes at p to the n pieces of iov (at most max), joined to the last one when
 * they follow it; false when there is no room. */
static bool add_piece(struct iovec *iov, int max, int *n, const uint8_t *p, size_t len)
{
	struct iovec *last = *n ? &iov[*n - 1] : NULL;
	if (last && (uint8_t *)last->iov_base + last->iov_len == p && p != zeros) {
		last->iov_len += len;
		return true;
	}
	if (*n == max)
		return false;
	iov[(*n)++] = (struct iovec){(void *)p, len};
	return true;
}

/* Whether slot (pinned, or NULL) holds the byte at stream offset at of link. */
static bool holds(const struct served *sv, const struct frame_slot *slot, int link, uint64_t at)
{
	if (!slot || slot->file != link)
		return false;
	const struct seek_frame *fr = &sv->src[link].table.frames[slot->frame];
	return at >= fr->d_off && at - fr->d_off < fr->d_size;
}

/* The pieces of a run of n bytes of a served device: zeros, or link's stream from at on
 * (frames it pins, in held[]). 0, EIO, or -1 when they do not fit. */
static int run_pieces(struct served *sv, int link, uint64_t at, uint32_t n, struct iovec *iov,
		      int max, int *count)
{
	while (n > 0) {
		size_t got;
		const uint8_t *p;
		if (link < 0) {
			got = n < sizeof(zeros) ? n : sizeof(zeros);
			p = zeros;
		} else {
			struct frame_slot *last = sv->nheld ? sv->held[sv->nheld - 1] : NULL;
			if (sv->nheld == sv->frames.slots - 1 && !holds(sv, last, link, at))
				return -1; /* one slot is left for the frames not cached */
			struct frame_slot *slot;
			if (!(p = frame_bytes(sv, link, at, n, &slot, &got)))
				return EIO;
			if (slot == last)
				frame_cache_unpin(&sv->frames, slot); /* held once is enough */
			else
				sv->held[sv->nheld++] = slot;
		}
		if (!add_piece(iov, max, count, p, got))
			return -1;
		at += got;
		n -= (uint32_t)got;
	}
	return 0;
}

static void on_release(void *ctx)
{
	struct served *sv = ctx;
	while (sv->nheld > 0)
		frame_cache_unpin(&sv->frames, sv->held[--sv->nheld]);
}

/* A read replied to straight from the frame cache, when every stored block it covers is in a
 * link read by frames (see nbd_server_ops.read_pieces). */
static int on_read_pieces(void *ctx, int export, uint64_t off, uint32_t len, struct iovec *iov,
			  int max, int *count)
{
	struct served *sv = ctx;
	const struct device *d = &sv->devs[export];
	*count = 0;
	while (len > 0) {
		uint64_t entry = d->index[off / VMA_CLUSTER_SIZE];
		uint64_t at;
		uint32_t n = alike_run(entry, off, len);
		int link = stored_at(sv, entry, off, &at);
		int rc = link >= 0 && !sv->src[link].seekable
			? -1
			: run_pieces(sv, link, at, n, iov, max, count);
		if (rc) {
			on_release(sv);
			return rc;
		}
		off += n;
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

/* The index pass: each entry of every extent of the link being read into the index, over
 * what an older link put there. */
static int index_cluster(void *opaque, struct vma_reader *r, int dev_id, uint64_t cluster,
			 uint16_t mask, const uint8_t *blocks)
{
	struct served *sv = opaque;
	const struct source *src = &sv->src[sv->indexing];
	int id = sv->chain.links[sv->indexing].map[dev_id];
	uint64_t at = r->extent_start + (uint64_t)(blocks - r->extent);
	uint64_t past = at - src->first;
	if (at < src->first || past % UNIT != 0) { /* cannot be: see LINK_BITS */
		snprintf(r->err, sizeof(r->err), "offset %llu: not where --serve expects blocks",
			 (unsigned long long)at);
		return -1;
	}
	if (past / UNIT >= MAX_UNITS) {
		snprintf(r->err, sizeof(r->err),
			 "offset %llu: past the 128 TiB of an archive --serve can index",
			 (unsigned long long)at);
		return -1;
	}
	uint64_t entry = (past / UNIT) << (16 + LINK_BITS) | (uint64_t)sv->indexing << 16 | mask;
	sv->devs[sv->export_of[id]].index[cluster] = mask ? entry : 0;
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

/* Whether link k, a zstd file, has a seek table --serve can read it by; its frames' largest
 * sizes into sv. Exits 1 on a table that does not fit the file or has too large frames. */
static bool read_by_frames(struct served *sv, int k, uint64_t file_size)
{
	struct source *src = &sv->src[k];
	int fd = sv->chain.links[k].fd;
	char why[512];
	int rc = seektable_read(fd, file_size, &src->table, why, sizeof(why));
	if (rc < 0)
		errx(EXIT_FAIL, "%s: %s", src->path, why);
	if (rc == 0 || !frames_checked(fd, &src->table, src->path))
		return false;
	for (size_t i = 0; i < src->table.count; i++) {
		const struct seek_frame *fr = &src->table.frames[i];
		if (fr->d_size > MAX_FRAME || fr->c_size > MAX_COMPRESSED_FRAME)
			errx(EXIT_FAIL,
			     "%s: frame %zu holds %u bytes (%u compressed); --serve reads "
			     "frames of up to %u bytes",
			     src->path, i, fr->d_size, fr->c_size, MAX_FRAME);
		if (fr->d_size > sv->max_frame)
			sv->max_frame = fr->d_size;
		if (fr->c_size > sv->max_cframe)
			sv->max_cframe = fr->c_size;
	}
	return true;
}

/* Chooses how link k is read: the file as it is, by frames, or a copy (made in the index
 * pass). Exits 1 on failure. */
static void choose_access(struct served *sv, int k)
{
	const struct chain_link *l = &sv->chain.links[k];
	struct source *src = &sv->src[k];
	*src = (struct source){.path = l->path, .fd = -1};
	struct stat st;
	if (fstat(l->fd, &st) < 0)
		err(EXIT_FAIL, "%s", l->path);
	bool regular = S_ISREG(st.st_mode) && l->start >= 0;
	uint8_t magic[4] = {0};
	if (regular && pread(l->fd, magic, 4, l->start) == 4 && memcmp(magic, VMA_MAGIC, 4) == 0) {
		src->fd = l->fd;
		src->base = (uint64_t)l->start;
	} else if (regular && memcmp(magic, "\x28\xb5\x2f\xfd", 4) == 0 && l->start == 0 &&
		   read_by_frames(sv, k, (uint64_t)st.st_size)) {
		src->seekable = true;
		src->fd = l->fd;
	} else {
		src->copy = true;
		if ((src->fd = scratch_file()) < 0)
			err(EXIT_FAIL, "%s: a temporary file for the decompressed archive",
			    getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	}
}

/* The frame cache, for the links read by frames. */
static void start_frames(struct served *sv)
{
	const char *path = NULL;
	sv->files = xcalloc((size_t)sv->chain.n, sizeof(*sv->files));
	for (int k = 0; k < sv->chain.n; k++) {
		const struct source *src = &sv->src[k];
		if (!src->seekable)
			continue;
		sv->files[k] = (struct frame_file){src->path, src->fd, &src->table};
		if (!path)
			path = src->path;
	}
	if (path)
		frame_cache_start(&sv->frames, sv->files, sv->max_frame, sv->max_cframe, path);
}

/* Reads link k whole, as -t reads it (its header is read already), into the index; the full,
 * the last link, must hold every cluster. Its reader is closed then, and the archive too when
 * it is served from a copy. Exits 1 on failure. */
static void index_link(struct served *sv, int k, enum meter_mode meter_mode)
{
	struct chain_link *l = &sv->chain.links[k];
	struct source *src = &sv->src[k];
	struct vma_reader *r = &l->r;
	bool full = k == sv->chain.n - 1;
	char why[1024];
	if (!r->in && chain_reopen(&sv->chain, k, why, sizeof(why)) < 0)
		errx(EXIT_FAIL, "%s", why);
	src->first = r->offset;
	if (src->copy) { /* the stream from the header's end on */
		src->from = r->offset;
		instream_tee(r->in, src->fd);
	}
	struct meter meter;
	if (full) { /* the one link that is read whole, and the longest */
		uint64_t total = 0;
		for (int id = 1; id < 255; id++)
			total += r->devs[id].size;
		vma_reader_cover_all(r);
		meter_start(&meter, meter_mode, total);
		r->meter = &meter;
	}
	sv->indexing = k;
	if (vma_reader_run(r, index_cluster, NULL, sv) != 0) {
		meter_break();
		errx(EXIT_FAIL, "%s: %s", l->path, r->err);
	}
	if (full)
		meter_finish(&meter, r->stored_bytes + r->zero_bytes);
	struct instream *in = r->in;
	vma_reader_close(r);
	instream_free(in);
	r->in = NULL;
	if (src->copy && l->fd != STDIN_FILENO) {
		close(l->fd);
		l->fd = -1;
	}
}

/* Opens the archive and its chain, chooses how each is read (seekable zstd, the file as it
 * is, or a copy) and builds the index, oldest link first. Exits 1 on failure. */
static void open_served(struct served *sv, const char *path, char *const *bases, int nbases,
			enum meter_mode meter_mode)
{
	char why[1024];
	if (chain_open(&sv->chain, path, bases, nbases, false, why, sizeof(why)) < 0)
		errx(EXIT_FAIL, "%s", why);
	const struct vma_reader *r = &sv->chain.links[0].r;
	for (int id = 1; id < 255; id++) {
		const struct vma_device *d = &r->devs[id];
		if (!d->name)
			continue;
		sv->export_of[id] = sv->ndevs;
		sv->devs[sv->ndevs++] = (struct device){xstrdup(d->name), d->size,
							xcalloc(d->clusters, sizeof(uint64_t))};
	}
	if (sv->ndevs == 0)
		errx(EXIT_FAIL, "%s: the archive holds no disk to serve", path);
	/* Until its turn, a link that can be read again from its start holds only its file: a
	 * long chain's buffers are not all held at once. */
	for (int k = 0; k < sv->chain.n; k++)
		if (sv->chain.links[k].start >= 0)
			chain_release(&sv->chain, k);
	sv->src = xcalloc((size_t)sv->chain.n, sizeof(*sv->src));
	for (int k = 0; k < sv->chain.n; k++)
		choose_access(sv, k);
	start_frames(sv);
	for (int k = sv->chain.n - 1; k >= 0; k--)
		index_link(sv, k, meter_mode);
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

struct served *served_open(const char *archive, char *const *bases, int nbases,
			   enum meter_mode meter_mode)
{
	struct served *sv = xcalloc(1, sizeof(*sv));
	open_served(sv, archive, bases, nbases, meter_mode);
	return sv;
}

int served_serve(struct served *sv, int listen_fd, int client_fd, int stop_fd,
		 const struct nbd_timeouts *timeouts, char *err, size_t errlen)
{
	struct nbd_export exports[VMA_MAX_DEVICES];
	for (int i = 0; i < sv->ndevs; i++)
		exports[i] = (struct nbd_export){sv->devs[i].name, sv->devs[i].size};
	/* Replies from the cache need a slot left for the frames that are not in it. */
	bool pieces = sv->frames.slots > 1;
	const struct nbd_server_ops ops = {.read = on_read,
					   .read_pieces = pieces ? on_read_pieces : NULL,
					   .release = on_release,
					   .block_status = on_block_status,
					   .stop_fd = stop_fd};
	return nbd_serve(listen_fd, client_fd, exports, sv->ndevs, &ops, sv, timeouts, err, errlen);
}

void served_free(struct served *sv)
{
	frame_cache_free(&sv->frames);
	for (int k = 0; k < sv->chain.n; k++) {
		if (sv->src[k].copy)
			close(sv->src[k].fd);
		seektable_free(&sv->src[k].table);
	}
	free(sv->src);
	chain_close(&sv->chain);
	for (int i = 0; i < sv->ndevs; i++) {
		free(sv->devs[i].name);
		free(sv->devs[i].index);
	}
	free(sv->files);
	free(sv);
}

int serve_archive(const char *archive, char *const *bases, int nbases, const char *socket,
		  enum meter_mode meter_mode)
{
	struct served *sv = served_open(archive, bases, nbases, meter_mode);
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
