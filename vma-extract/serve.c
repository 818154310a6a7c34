/* vma-extract --serve. One pass over the archive, through the reader that -t uses (every check
 * of it, every cluster present), builds an index: per 64 KiB cluster of each device, one
 * 64-bit word saying where its stored 4 KiB blocks are (see LINK_BITS). 8 bytes per 64 KiB:
 * 128 MiB for a 1 TiB disk. A read then goes straight to the blocks it needs, in:
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
#include <unistd.h>

#include "bytes.h"
#include "chain.h"
#include "cli.h"
#include "codecs.h"
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

/* An index entry: bits 0-15 the cluster's block mask, 16-25 the link of the chain that holds
 * it (0: the archive asked for), 26-63 where its first stored block is in that link's stream,
 * in 512-byte units past the end of the header (every extent is 512 bytes and whole 4 KiB
 * blocks, so every block starts a whole number of units past it): 128 TiB of stream per link.
 * A zero cluster, or one never stored, is 0. */
#define LINK_BITS 10
#define UNIT 512u
#define MAX_UNITS (1ull << (64 - 16 - LINK_BITS))
_Static_assert(INC_MAX_DEPTH + 1 <= 1 << LINK_BITS, "every link of a chain has a number");

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

struct frame_slot {
	int link;
	size_t frame; /* its index in that link's seek table */
	uint8_t *data;
	uint64_t used; /* when last used; 0: empty */
};

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
	ZSTD_DCtx *dctx;    /* for every seekable link */
	uint8_t *cbuf;      /* a compressed frame */
	uint32_t max_cframe;
	struct frame_slot cache[CACHE_FRAMES];
	int slots;        /* of cache[] used: CACHE_BYTES / max_frame, 1 to CACHE_FRAMES */
	size_t max_frame; /* the largest frame's decompressed size, over all links */
	uint64_t clock;
	struct device devs[VMA_MAX_DEVICES];
	int ndevs;
	int export_of[256]; /* by dev_id of links[0] */
	int indexing;       /* the link the index pass is reading */
};

/* Frame f of link's seek table, decompressed and checked, from the cache or into it; NULL
 * after saying why on standard error. */
static const uint8_t *frame_data(struct served *sv, int link, size_t f)
{
	const struct source *src = &sv->src[link];
	struct frame_slot *slot = &sv->cache[0];
	for (int i = 0; i < sv->slots; i++) {
		struct frame_slot *s = &sv->cache[i];
		if (s->used && s->link == link && s->frame == f) {
			s->used = ++sv->clock;
			return s->data;
		}
		if (s->used < slot->used)
			slot = s;
	}
	const struct seek_frame *fr = &src->table.frames[f];
	slot->used = 0; /* emptied until the frame checks out */
	if (!slot->data)
		slot->data = xmalloc(sv->max_frame ? sv->max_frame : 1);
	const char *why = NULL;
	char zerr[128];
	ssize_t n = 0;
	for (uint32_t done = 0; done < fr->c_size; done += (uint32_t)n) {
		n = pread(src->fd, sv->cbuf + done, fr->c_size - done, (off_t)(fr->c_off + done));
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
	if (!why && src->table.checksums && fr->c_size >= 8 && sv->cbuf[4] & 4 &&
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
		      src->path, (unsigned long long)fr->c_off, fr->c_size, why);
		return NULL;
	}
	slot->link = link;
	slot->frame = f;
	slot->used = ++sv->clock;
	return slot->data;
}

/* len bytes of link's stream at off into buf: 0, or EIO after saying why. */
static int stream_read(struct served *sv, int link, uint64_t off, uint8_t *buf, size_t len)
{
	const struct source *src = &sv->src[link];
	while (len > 0) {
		size_t n;
		if (src->seekable) {
			if (off >= src->table.d_total) {
				warnx("%s: stream offset %llu is past the end of the seek table",
				      src->path, (unsigned long long)off);
				return EIO;
			}
			size_t f = seektable_find(&src->table, off);
			const struct seek_frame *fr = &src->table.frames[f];
			const uint8_t *data = frame_data(sv, link, f);
			if (!data)
				return EIO;
			uint64_t in = off - fr->d_off;
			n = fr->d_size - in < len ? (size_t)(fr->d_size - in) : len;
			memcpy(buf, data + in, n);
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
			int link = (int)(entry >> 16 & ((1u << LINK_BITS) - 1));
			unsigned before = (unsigned)__builtin_popcount(mask & ((1u << b) - 1));
			uint64_t at = sv->src[link].first + (entry >> (16 + LINK_BITS)) * UNIT +
				(uint64_t)before * VMA_BLOCK_SIZE + in % VMA_BLOCK_SIZE;
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

/* The frame cache and what decompresses into it, for the links read by frames. */
static void start_frames(struct served *sv)
{
	const char *path = NULL;
	for (int k = 0; k < sv->chain.n && !path; k++)
		if (sv->src[k].seekable)
			path = sv->src[k].path;
	if (!path)
		return;
	char why[512];
	size_t fit = sv->max_frame ? CACHE_BYTES / sv->max_frame : CACHE_FRAMES;
	sv->slots = fit < 1 ? 1 : fit > CACHE_FRAMES ? CACHE_FRAMES : (int)fit;
	if (codec_load_zstd(why, sizeof(why)) < 0)
		errx(EXIT_FAIL, "%s: %s", path, why);
	sv->dctx = libzstd.ZSTD_createDCtx();
	sv->cbuf = xmalloc(sv->max_cframe ? sv->max_cframe : 1);
	if (!sv->dctx)
		errx(EXIT_FAIL, "%s: cannot create a zstd context", path);
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
	const struct nbd_server_ops ops = {.read = on_read,
					   .block_status = on_block_status,
					   .stop_fd = stop_fd};
	return nbd_serve(listen_fd, client_fd, exports, sv->ndevs, &ops, sv, timeouts, err, errlen);
}

void served_free(struct served *sv)
{
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
	for (int i = 0; i < CACHE_FRAMES; i++)
		free(sv->cache[i].data);
	if (sv->dctx)
		libzstd.ZSTD_freeDCtx(sv->dctx);
	free(sv->cbuf);
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
