/* vma-extract: list, verify and restore VMA archives, Proxmox's included. */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "chain.h"
#include "cli.h"
#include "consolidate.h"
#include "instream.h"
#include "listing.h"
#include "meter.h"
#include "outfile.h"
#include "qcow2.h"
#include "reader.h"
#include "serve.h"
#include "sink.h"
#include "target.h"
#include "xalloc.h"

/* Exactly the SYNOPSIS of man/vma-extract.1. */
const char usage_synopsis[] =
	"vma-extract -l [--json] [--base file ...] archive\n"
	"vma-extract -t [-v] [--progress | --no-progress] [--base file ...] archive\n"
	"vma-extract [-v] [--progress | --no-progress] [-d name[,name ...]]\n"
	"            [--format raw | qcow2] [--base file ...] archive dir\n"
	"vma-extract [-v] [--progress | --no-progress] [--force] [--no-verify]\n"
	"            [--base file ...] archive name=target ...\n"
	"vma-extract --to-vma output [-z codec] [-T threads]\n"
	"            [--progress | --no-progress] [--base file ...] archive\n"
	"vma-extract -c config archive\n"
	"vma-extract --serve socket [--progress | --no-progress] [--base file ...]\n"
	"            archive\n";

static const char short_opts[] = "ltvd:c:z:T:h";
enum {
	OPT_JSON = 256,
	OPT_PROGRESS,
	OPT_NO_PROGRESS,
	OPT_FORCE,
	OPT_NO_VERIFY,
	OPT_FORMAT,
	OPT_SERVE,
	OPT_BASE,
	OPT_TO_VMA
};
static const struct option long_opts[] = {
	{"list", no_argument, NULL, 'l'},
	{"json", no_argument, NULL, OPT_JSON},
	{"verify", no_argument, NULL, 't'},
	{"verbose", no_argument, NULL, 'v'},
	{"progress", no_argument, NULL, OPT_PROGRESS},
	{"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
	{"devices", required_argument, NULL, 'd'},
	{"config", required_argument, NULL, 'c'},
	{"force", no_argument, NULL, OPT_FORCE},
	{"no-verify", no_argument, NULL, OPT_NO_VERIFY},
	{"format", required_argument, NULL, OPT_FORMAT},
	{"serve", required_argument, NULL, OPT_SERVE},
	{"base", required_argument, NULL, OPT_BASE},
	{"to-vma", required_argument, NULL, OPT_TO_VMA},
	{"compress", required_argument, NULL, 'z'},
	{"threads", required_argument, NULL, 'T'},
	{"help", no_argument, NULL, 'h'},
	CLI_LIST_OPTIONS,
	{NULL, 0, NULL, 0},
};

static const char *archive_name;
static enum meter_mode meter_mode; /* --progress, --no-progress */

/* The meter of -t and of extracting: over the data of every device in the archive, read and
 * checked, whether it is restored or not. */
static void start_meter(struct vma_reader *r, struct meter *m)
{
	uint64_t total = 0;
	for (int id = 1; id < 255; id++)
		total += r->devs[id].size; /* the header's sizes fit in 64 bits together */
	meter_start(m, meter_mode, total);
	r->meter = m;
}

/* Reads the header of the archive at fd; exits 1 on any defect. */
static void read_archive_header(int fd, const char *path, struct vma_reader *r)
{
	char why[256];
	struct instream *in = instream_open(fd, why, sizeof(why));
	if (!in)
		errx(EXIT_FAIL, "%s: %s", path, why);
	if (vma_reader_open(r, in) < 0)
		errx(EXIT_FAIL, "%s: %s", path, r->err);
}

/* The archive's descriptor (stdin for "-"); exits 1 when it cannot be opened. */
static int archive_fd(const char *path)
{
	int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		err(EXIT_FAIL, "%s", path);
	return fd;
}

/* Opens the archive (or stdin) and reads its header; exits 1 on any defect. */
static void open_archive(const char *path, struct vma_reader *r)
{
	read_archive_header(archive_fd(path), path, r);
}

static void close_archive(struct vma_reader *r)
{
	struct instream *in = r->in;
	vma_reader_close(r);
	instream_free(in);
}

/* The --base files, in the order given. */
static char **bases;
static int nbases;

/* Opens the archive and, when it is incremental, its chain; exits 1 naming the link that is
 * missing or does not fit. With hash, the links that have a .sha256 are hashed as they are
 * read (chain_check_sum). */
static void open_chain(const char *path, struct chain *c, bool hash)
{
	char why[1024];
	if (chain_open(c, path, bases, nbases, hash, why, sizeof(why)) < 0)
		errx(EXIT_FAIL, "%s", why);
}

static int do_list(const char *path, bool json)
{
	struct chain c;
	open_chain(path, &c, false);
	struct vma_reader *r = &c.links[0].r;
	char why[256];
	char *text = json ? vma_listing_json(r, &c, why, sizeof(why)) : vma_listing(r);
	if (!text)
		errx(EXIT_FAIL, "%s: %s", path, why);
	char *chain = json ? xstrdup("\n") : vma_chain_listing(&c);
	printf("%s%s", text, chain);
	free(chain);
	free(text);
	chain_close(&c);
	return 0;
}

static int do_config(const char *path, const char *name)
{
	struct vma_reader r;
	open_archive(path, &r);
	for (int i = 0; i < r.nconfigs; i++) {
		if (strcmp(r.configs[i].name, name) != 0)
			continue;
		if (write_all(STDOUT_FILENO, r.configs[i].data, r.configs[i].len) < 0)
			err(EXIT_FAIL, "stdout");
		close_archive(&r);
		return 0;
	}
	errx(EXIT_FAIL, "%s: no config named '%s'", path, name);
}

/* Reads link l whole and checks it, with its .sha256 (a full must have every cluster, an
 * incremental has what changed); exits 1 on a defect, SUFFIX after the message. */
static void check_whole(struct chain_link *l, const char *suffix)
{
	char why[1024];
	struct meter meter;
	if (!l->incremental) {
		vma_reader_cover_all(&l->r);
		start_meter(&l->r, &meter);
	}
	if (chain_run_link(l, NULL, NULL, NULL, why, sizeof(why)) < 0) {
		meter_break();
		errx(EXIT_FAIL, "%s%s", why, suffix);
	}
	if (!l->incremental)
		meter_finish(&meter, l->r.stored_bytes + l->r.zero_bytes);
}

/* One link of -t: read and checked whole, with its ARCHIVE.sha256 when it has one. A full
 * must have every cluster; an incremental has what changed. With verbose, what -v prints for it
 * goes to out. */
static void verify_link(const struct chain *c, int k, bool verbose, FILE *out)
{
	struct chain_link *l = &c->links[k];
	struct vma_reader *r = &l->r;
	check_whole(l, "");
	if (!verbose)
		return;
	char *text = vma_listing(r);
	uint64_t total = r->stored_bytes + r->zero_bytes;
	if (c->n > 1)
		fprintf(out, "archive %s (chain depth %u)\n", l->path,
			l->incremental ? l->inc.depth : 0);
	fprintf(out, "%stotal bytes read %llu, sparse bytes %llu (%.3g%%)\n", text,
		(unsigned long long)total, (unsigned long long)r->zero_bytes,
		total ? (double)r->zero_bytes * 100 / (double)total : 0.0);
	if (l->hashed)
		fprintf(out, "sha256 %s matches %s\n", l->got, l->sum_path);
	else if (!l->sum_path)
		fprintf(out, "sha256 not checked: standard input\n");
	else
		fprintf(out, "sha256 not checked: no %s\n", l->sum_path);
	free(text);
}

/* -t: every archive of the chain read and checked once, newest first; the bytes of a file are
 * hashed as they are read and checked against ARCHIVE.sha256 when there is one (never for
 * standard input). -v's lines are printed once every link has checked out: nothing on
 * standard output when one fails. */
static int do_verify(const char *path, bool verbose)
{
	struct chain c;
	char why[1024], *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	if (!out)
		err(EXIT_FAIL, "out of memory");
	if (chain_open(&c, path, bases, nbases, true, why, sizeof(why)) < 0)
		errx(EXIT_FAIL, "%s", why);
	for (int k = 0; k < c.n; k++)
		verify_link(&c, k, verbose, out);
	if (fclose(out) != 0)
		err(EXIT_FAIL, "out of memory");
	fputs(text, stdout);
	free(text);
	chain_close(&c);
	return 0;
}

/* Blocks to be written, gathered over one part of an extent's data and written once the reader
 * has handed over all of it, straight from the extent buffer: one pwritev per run of blocks
 * that are adjacent in a disk, each run made of the pieces that are adjacent in the buffer too.
 * A disk backed up in order thus takes one write per part (512 KiB) instead of one per 4 KiB
 * block. A part holds at most an extent's blocks. */
#define MAX_PIECES (VMA_ENTRIES_PER_EXTENT * VMA_BLOCKS_PER_CLUSTER)

struct piece {
	const uint8_t *data;
	size_t len;
	int next; /* the run's next piece, -1 after its last */
};

struct run {
	int dev_id;
	uint64_t off, len;
	int first, last; /* pieces */
};

struct pending {
	struct piece pieces[MAX_PIECES];
	struct run runs[MAX_PIECES];
	struct iovec iov[MAX_PIECES];
	int npieces, nruns;
	int open_run[256]; /* by dev_id: the run its next block may extend, or -1 */
};

/* Extraction targets, by dev_id, and what this run has created in the target folder: on
 * failure exactly that is removed, by these names relative to dirfd, never by a path. */
struct extraction {
	const char *dir; /* as given, for messages */
	int dirfd;
	struct outfile disks[256];
	int fd[256];      /* by dev_id: where its blocks are written (not an NBD target) */
	char *label[256]; /* by dev_id: that file's name for messages */
	bool wanted[256];
	/* name=target: the targets by dev_id, or NULL; those that are not new files have the
	 * archive's zero blocks zeroed, in ranges gathered across parts and extents */
	struct target *targets[256];
	bool zeroing[256];
	uint64_t zero_off[256], zero_len[256];
	int nbd_ids[256], nnbd;
	struct qcow2_out qcow2[256]; /* --format qcow2: by dev_id */
	int ncreated;
	char *created[512];
	int created_slot[512];
	int dir_slot;
	struct pending pending;
	uint64_t unflushed[256]; /* by dev_id: bytes written since its writeback was last started */
	/* The archive asked for: dev_ids above are its. An incremental one is restored with its
	 * chain, newest first: map turns the link being read's dev_ids into those, and each
	 * cluster is taken from the first link that has it. */
	const struct vma_reader *newest;
	const int *map;
	struct chain_taken taken;
};

/* How much a disk may have written before its writeback is started: the flush then runs while
 * the archive is still being read, instead of all of it in the final fsync. */
#define WRITEBACK_STEP (16u << 20)

/* Adds the block of len bytes at data, for offset off of the disk dev_id, to that disk's last
 * run when it continues it, or starts a run. Every block of a part fits. */
static void queue_block(struct pending *p, int dev_id, uint64_t off, const uint8_t *data,
			size_t len)
{
	int ri = p->open_run[dev_id];
	if (ri >= 0 && p->runs[ri].off + p->runs[ri].len == off) {
		struct run *run = &p->runs[ri];
		struct piece *last = &p->pieces[run->last];
		run->len += len;
		if (last->data + last->len == data) {
			last->len += len;
			return;
		}
		p->pieces[p->npieces] = (struct piece){data, len, -1};
		last->next = p->npieces;
		run->last = p->npieces++;
		return;
	}
	p->pieces[p->npieces] = (struct piece){data, len, -1};
	p->runs[p->nruns] = (struct run){dev_id, off, len, p->npieces, p->npieces};
	p->open_run[dev_id] = p->nruns++;
	p->npieces++;
}

/* Writes one run with as few pwritev calls as the kernel allows. */
static int write_run(int fd, struct pending *p, const struct run *run)
{
	struct iovec *v = p->iov;
	int n = 0;
	for (int i = run->first; i >= 0; i = p->pieces[i].next)
		v[n++] = (struct iovec){(void *)p->pieces[i].data, p->pieces[i].len};
	uint64_t off = run->off;
	while (n > 0) {
		ssize_t done = pwritev(fd, v, n < IOV_MAX ? n : IOV_MAX, (off_t)off);
		if (done < 0 && errno == EINTR)
			continue;
		if (done < 0)
			return -1;
		if (done == 0) { /* no progress and no error: do not spin */
			errno = EIO;
			return -1;
		}
		off += (uint64_t)done;
		for (size_t left = (size_t)done; left > 0;) {
			if (left < v->iov_len) {
				v->iov_base = (uint8_t *)v->iov_base + left;
				v->iov_len -= left;
				break;
			}
			left -= v->iov_len;
			v++;
			n--;
		}
	}
	return 0;
}

/* A run for an NBD target: one write request (or a few) per piece, kept in flight until the
 * end of the part. */
static int write_run_nbd(struct extraction *x, struct vma_reader *r, struct pending *p,
			 const struct run *run)
{
	char why[256];
	uint64_t off = run->off;
	for (int i = run->first; i >= 0; i = p->pieces[i].next) {
		if (target_nbd_write(x->targets[run->dev_id], p->pieces[i].data, p->pieces[i].len,
				     off, why, sizeof(why)) < 0) {
			snprintf(r->err, sizeof(r->err), "%s: %s", x->label[run->dev_id], why);
			return -1;
		}
		off += p->pieces[i].len;
	}
	return 0;
}

/* The end of a part: its blocks are written while they are in the CPU's cache, and before the
 * next extent overwrites them. */
static int write_pending(void *opaque, struct vma_reader *r)
{
	struct extraction *x = opaque;
	struct pending *p = &x->pending;
	int rc = 0;
	for (int i = 0; i < p->nruns; i++) {
		const struct run *run = &p->runs[i];
		p->open_run[run->dev_id] = -1;
		int fd = x->fd[run->dev_id];
		if (fd < 0) { /* an NBD target */
			if (rc == 0)
				rc = write_run_nbd(x, r, p, run);
			continue;
		}
		if (rc == 0 && write_run(fd, p, run) < 0) {
			snprintf(r->err, sizeof(r->err), "%s: %s", x->label[run->dev_id],
				 strerror(errno));
			rc = -1;
		}
		x->unflushed[run->dev_id] += run->len;
		if (rc == 0 && x->unflushed[run->dev_id] >= WRITEBACK_STEP) {
			/* Only started, never waited for; the fsync at the end still checks. */
			sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
			x->unflushed[run->dev_id] = 0;
		}
	}
	p->npieces = p->nruns = 0;
	/* The NBD writes point into the extent buffer, which the next part overwrites. */
	for (int i = 0; i < x->nnbd && rc == 0; i++) {
		char why[256];
		if (target_nbd_wait(x->targets[x->nbd_ids[i]], why, sizeof(why)) < 0) {
			snprintf(r->err, sizeof(r->err), "%s: %s", x->label[x->nbd_ids[i]], why);
			rc = -1;
		}
	}
	return rc;
}

/* Zeroes the range of zero blocks gathered for dev_id. */
static int flush_zeros(struct extraction *x, struct vma_reader *r, int dev_id)
{
	char why[256];
	if (x->zero_len[dev_id] == 0)
		return 0;
	int rc = target_zero(x->targets[dev_id], x->zero_off[dev_id], x->zero_len[dev_id], why,
			     sizeof(why));
	if (rc < 0)
		snprintf(r->err, sizeof(r->err), "%s: %s", x->label[dev_id], why);
	x->zero_len[dev_id] = 0;
	return rc;
}

/* Adds a zero block to dev_id's range of them, or zeroes that range and starts another. */
static int zero_block(struct extraction *x, struct vma_reader *r, int dev_id, uint64_t off,
		      uint64_t len)
{
	if (x->zero_len[dev_id] > 0 && x->zero_off[dev_id] + x->zero_len[dev_id] == off) {
		x->zero_len[dev_id] += len;
		return 0;
	}
	if (flush_zeros(x, r, dev_id) < 0)
		return -1;
	x->zero_off[dev_id] = off;
	x->zero_len[dev_id] = len;
	return 0;
}

/* Queues each stored block, clipped to the device end; zero blocks are skipped: a new file,
 * sized beforehand, stays sparse there. Targets with old content have them zeroed. */
static int restore_cluster(void *opaque, struct vma_reader *r, int dev_id, uint64_t cluster,
			   uint16_t mask, const uint8_t *blocks)
{
	struct extraction *x = opaque;
	dev_id = x->map[dev_id];
	if (!dev_id || !x->wanted[dev_id] || !chain_take(&x->taken, x->newest, dev_id, cluster))
		return 0;
	bool zeroing = x->zeroing[dev_id];
	if (!x->wanted[dev_id] || (mask == 0 && !zeroing))
		return 0;
	uint64_t size = x->newest->devs[dev_id].size;
	for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++) {
		const uint8_t *block = NULL;
		if (mask & (1u << b)) {
			block = blocks;
			blocks += VMA_BLOCK_SIZE;
		} else if (!zeroing) {
			continue;
		}
		uint64_t off = cluster * VMA_CLUSTER_SIZE + (uint64_t)b * VMA_BLOCK_SIZE;
		if (off >= size)
			continue;
		size_t len = size - off < VMA_BLOCK_SIZE ? (size_t)(size - off) : VMA_BLOCK_SIZE;
		if (!block || vma_block_is_zero(block)) {
			if (zeroing && zero_block(x, r, dev_id, off, len) < 0)
				return -1;
			continue;
		}
		queue_block(&x->pending, dev_id, off, block, len);
	}
	return 0;
}

static void select_devices(struct vma_reader *r, struct extraction *x, char *list)
{
	if (!list) {
		for (int id = 1; id < 255; id++)
			x->wanted[id] = r->devs[id].name != NULL;
		return;
	}
	for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
		int id = 1;
		while (id < 255 && !(r->devs[id].name && strcmp(r->devs[id].name, name) == 0))
			id++;
		if (id == 255)
			errx(EXIT_FAIL, "%s: no device named '%s'", archive_name, name);
		x->wanted[id] = true;
	}
}

/* Records a file this run gave its final name, so that a later failure or a fatal signal
 * removes it again. */
static void record_created(struct extraction *x, const char *name)
{
	char *copy = xstrdup(name);
	x->created_slot[x->ncreated] = outfile_track_at(x->dirfd, copy, false);
	x->created[x->ncreated++] = copy;
}

/* Creates dir, which must not exist, and opens it: the folder it is in as the user named it,
 * dir itself without following a link. A swap of dir for a symlink or another folder after that
 * no longer matters: everything else is done relative to the descriptor. (Its owner is not
 * checked: on NFS with root_squash root's own new folder is nobody's. A folder swapped in before
 * the open only gets files it cannot read, created new.) Exits on failure. */
static void make_target(struct extraction *x, const char *dir, int *parentfd, char **base)
{
	char *dircopy = xstrdup(dir), *basecopy = xstrdup(dir);
	*parentfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*parentfd < 0)
		err(EXIT_FAIL, "%s", dir);
	*base = xstrdup(basename(basecopy));
	free(dircopy);
	free(basecopy);
	/* 0700 whatever the umask: no one else may plant a file in it while root restores. */
	if (mkdirat(*parentfd, *base, 0700) < 0) {
		int e = errno;
		free(*base); /* (nothing may look leaked at exit: LeakSanitizer) */
		errno = e;
		if (errno == EEXIST)
			errx(EXIT_USAGE, "%s: already exists; give a directory that does not", dir);
		err(EXIT_FAIL, "%s", dir);
	}
	x->dir = dir;
	x->dir_slot = outfile_track_at(*parentfd, *base, true);
	x->dirfd = openat(*parentfd, *base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (x->dirfd < 0)
		err(EXIT_FAIL, "%s: opening the directory just made", dir);
}

static int write_config(struct extraction *x, const struct vma_config *c)
{
	struct outfile f;
	int rc = outfile_create_at(&f, x->dirfd, c->name, NULL);
	if (rc == 0 && write_all(f.fd, c->data, c->len) < 0) {
		outfile_abort(&f);
		rc = -1;
	}
	if (rc == 0)
		rc = outfile_commit(&f, 1);
	if (rc < 0)
		warn("%s/%s", x->dir, c->name);
	else
		record_created(x, c->name);
	return rc;
}

/* Reads the archive, or its chain newest first, restoring through x: every cluster comes
 * from the newest link that has it, and the full must have every cluster of the devices
 * restored. 0, or -1 after saying why. */
static int run_chain(struct chain *c, struct extraction *x)
{
	char why[1024];
	struct chain_link *full = &c->links[c->n - 1];
	x->newest = &c->links[0].r;
	for (int id = 1; id < 255; id++)
		full->r.devs[id].check_coverage = full->map[id] && x->wanted[full->map[id]];
	if (chain_read(c, &x->map, restore_cluster, write_pending, x, meter_mode, why,
		       sizeof(why)) < 0) {
		warnx("%s", why);
		return -1;
	}
	return 0;
}

static int do_extract(const char *path, const char *dir, char *devices, bool qcow2, bool verbose)
{
	const char *ext = qcow2 ? "qcow2" : "raw";
	struct chain c;
	struct extraction *x = xcalloc(1, sizeof(*x));
	int parentfd;
	char *base;
	open_chain(path, &c, true);
	struct vma_reader *r = &c.links[0].r;
	select_devices(r, x, devices);
	make_target(x, dir, &parentfd, &base);
	for (int id = 0; id < 256; id++)
		x->pending.open_run[id] = -1;
	int status = 0;
	for (int id = 1; id < 255 && status == 0; id++) {
		if (!x->wanted[id])
			continue;
		char *final = xasprintf("disk-%s.%s", r->devs[id].name, ext);
		char *tmp = xasprintf("tmp-disk-%s.%s", r->devs[id].name, ext);
		x->label[id] = xasprintf("%s/%s", dir, tmp);
		if (outfile_create_at(&x->disks[id], x->dirfd, final, tmp) < 0 ||
		    (!qcow2 && ftruncate(x->disks[id].fd, (off_t)r->devs[id].size) < 0)) {
			warn("%s/%s", dir, final);
			if (x->disks[id].fd >= 0)
				outfile_abort(&x->disks[id]);
			x->wanted[id] = false;
			status = -1;
		}
		x->fd[id] = x->disks[id].fd;
		char why[512];
		if (status == 0 && qcow2) {
			/* an empty image reads as zeros: zero blocks need not be written */
			x->fd[id] = -1;
			x->targets[id] = &x->qcow2[id].t;
			x->nbd_ids[x->nnbd++] = id;
			if (qcow2_start(&x->qcow2[id], x->disks[id].fd, r->devs[id].size, why,
					sizeof(why)) < 0) {
				warnx("%s: %s", x->label[id], why);
				status = -1;
			}
		}
		free(final);
		free(tmp);
	}
	/* Every byte is read and checked: the flushes and renames that follow are quick or fail
	 * with a message of their own. */
	if (status == 0)
		status = run_chain(&c, x);
	/* The VM's configs; an incremental archive's own blob is about the archive, not the VM
	 * (the restored disks are whole). */
	for (int i = 0; i < r->nconfigs && status == 0; i++)
		if (strcmp(r->configs[i].name, INC_BLOB_NAME) != 0)
			status = write_config(x, &r->configs[i]);
	for (int id = 1; qcow2 && id < 255; id++) {
		char why[512];
		if (x->wanted[id] && status == 0 &&
		    qcow2_finish(&x->qcow2[id], why, sizeof(why)) < 0) {
			warnx("%s: %s", x->label[id], why);
			status = -1;
		}
		qcow2_stop(&x->qcow2[id]);
	}
	for (int id = 1; id < 255; id++) {
		if (!x->wanted[id])
			continue;
		if (status == 0 && outfile_commit(&x->disks[id], 1) < 0) {
			warn("%s/disk-%s.%s", dir, r->devs[id].name, ext);
			status = -1;
		} else if (status != 0) {
			outfile_abort(&x->disks[id]);
		} else {
			char *final = xasprintf("disk-%s.%s", r->devs[id].name, ext);
			record_created(x, final);
			if (verbose)
				fprintf(stderr, "restored %s: %llu bytes to %s/%s\n",
					r->devs[id].name, (unsigned long long)r->devs[id].size, dir,
					final);
			free(final);
		}
	}
	/* Leave nothing behind: what was renamed before a later failure goes too. Only the names
	 * this run created, and in the folder it made, wherever that folder is now. */
	for (int i = 0; i < x->ncreated; i++) {
		if (status != 0)
			unlinkat(x->dirfd, x->created[i], 0);
		outfile_untrack(x->created_slot[i]);
		free(x->created[i]);
	}
	if (status != 0)
		unlinkat(parentfd, base, AT_REMOVEDIR); /* only an empty folder, never a link */
	outfile_untrack(x->dir_slot);
	close(x->dirfd);
	close(parentfd);
	free(base);
	chain_close(&c);
	chain_taken_free(&x->taken);
	for (int id = 0; id < 256; id++)
		free(x->label[id]);
	free(x);
	return status == 0 ? 0 : 1;
}

/* The devices named on the command line and where they go. */
struct restore {
	int n;
	char **names, **specs;
	bool force, no_verify, verbose;
};

/* Which archive of the chain the opened target t is: 1 + its link, or 0 for none. (Asked link
 * by link, with nothing allocated that an exit on a bad target would leave behind.) */
static int target_archive(const struct chain *c, const struct target *t)
{
	for (int k = 0; k < c->n && t->fd >= 0; k++) {
		struct stat st;
		if (fstat(c->links[k].fd, &st) < 0)
			err(EXIT_FAIL, "%s", c->links[k].path);
		if (t->kind == TARGET_BLOCK ? S_ISBLK(st.st_mode) && st.st_rdev == t->dev
					    : st.st_dev == t->dev && st.st_ino == t->ino)
			return k + 1;
	}
	return 0;
}

/* Opens every target and checks it against its device, before anything is written; exits on
 * a target that does not fit. */
static void open_targets(const struct chain *c, const struct restore *o, struct target *t, int *ids)
{
	const struct vma_reader *r = &c->links[0].r;
	for (int i = 0; i < o->n; i++) {
		int id = 1;
		while (id < 255 &&
		       !(r->devs[id].name && strcmp(r->devs[id].name, o->names[i]) == 0))
			id++;
		if (id == 255)
			errx(EXIT_FAIL, "%s: no device named '%s'", archive_name, o->names[i]);
		ids[i] = id;
	}
	for (int i = 0; i < o->n; i++) {
		char why[512];
		int status;
		if (target_open(&t[i], o->specs[i], o->force, &status, why, sizeof(why)) < 0)
			errx(status, "%s: %s", o->specs[i], why);
		int archive = target_archive(c, &t[i]);
		if (archive)
			errx(EXIT_USAGE, "%s: is the archive%s", o->specs[i],
			     archive > 1 ? " of the chain" : " itself");
		uint64_t size = r->devs[ids[i]].size;
		if (t[i].kind == TARGET_NEW_FILE)
			continue;
		if (t[i].size < size)
			errx(EXIT_FAIL, "%s: %llu bytes, smaller than %s (%llu bytes)", o->specs[i],
			     (unsigned long long)t[i].size, o->names[i], (unsigned long long)size);
		if (t[i].size > size && !o->force)
			errx(EXIT_FAIL,
			     "%s: %llu bytes, larger than %s (%llu bytes); give --force to restore "
			     "into its first %llu bytes",
			     o->specs[i], (unsigned long long)t[i].size, o->names[i],
			     (unsigned long long)size, (unsigned long long)size);
		for (int j = 0; j < i; j++)
			if (t[j].fd >= 0 && t[i].fd >= 0 && t[j].kind == t[i].kind &&
			    t[j].dev == t[i].dev && t[j].ino == t[i].ino)
				errx(EXIT_USAGE, "%s and %s are the same target", o->specs[j],
				     o->specs[i]);
	}
}

/* The first pass over an archive (and its chain) before targets are overwritten in place: the
 * whole of it read and checked, as -t does, then each stream opened again from its start. The
 * header must be the same: the file may not be replaced in between. */
static void verify_first(struct chain *c)
{
	for (int k = 0; k < c->n; k++) {
		struct chain_link *l = &c->links[k];
		struct stat st;
		char why[512];
		if (fstat(l->fd, &st) < 0 || !S_ISREG(st.st_mode) || l->start < 0)
			errx(EXIT_USAGE,
			     "%s: not a regular file, so it cannot be verified before a target is "
			     "overwritten in place; give --no-verify to write while reading",
			     l->path);
		check_whole(l, " (nothing was written)");
		if (chain_reopen(c, k, why, sizeof(why)) < 0)
			errx(EXIT_FAIL, "%s", why);
	}
}

/* vma-extract archive name=target ...: only the named devices, each into its target. */
static int do_restore(const char *path, const struct restore *o)
{
	struct chain c;
	struct extraction *x = xcalloc(1, sizeof(*x));
	struct target *t = xcalloc((size_t)o->n, sizeof(*t));
	int *ids = xcalloc((size_t)o->n, sizeof(*ids));
	open_chain(path, &c, true);
	struct vma_reader *r = &c.links[0].r;
	open_targets(&c, o, t, ids);
	bool in_place = false;
	for (int i = 0; i < o->n; i++)
		in_place |= t[i].kind != TARGET_NEW_FILE;
	if (in_place && !o->no_verify)
		verify_first(&c);
	for (int id = 0; id < 256; id++)
		x->pending.open_run[id] = -1;
	int status = 0;
	char why[512];
	for (int i = 0; i < o->n; i++) {
		int id = ids[i];
		x->wanted[id] = true;
		x->targets[id] = &t[i];
		x->zeroing[id] = t[i].kind != TARGET_NEW_FILE;
		x->label[id] = xstrdup(o->specs[i]);
		if (t[i].kind == TARGET_NBD)
			x->nbd_ids[x->nnbd++] = id;
		if (status == 0 && t[i].kind == TARGET_NEW_FILE &&
		    target_create(&t[i], r->devs[id].size, why, sizeof(why)) < 0) {
			warnx("%s: %s", o->specs[i], why);
			status = -1;
		}
		x->fd[id] = t[i].fd;
	}
	if (status == 0)
		status = run_chain(&c, x);
	/* The last zero ranges, then everything flushed: the targets written in place first, the
	 * new files renamed last, once all else has succeeded. */
	for (int i = 0; i < o->n && status == 0; i++)
		if (flush_zeros(x, r, ids[i]) < 0) {
			warnx("%s", r->err);
			status = -1;
		}
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < o->n && status == 0; i++) {
			if ((t[i].kind == TARGET_NEW_FILE) != (pass == 1))
				continue;
			if (target_finish(&t[i], why, sizeof(why)) < 0) {
				warnx("%s: %s", o->specs[i], why);
				status = -1;
				/* the new files renamed already go again (by their names: the
				 * moment between the two is what a rename cannot close) */
				for (int j = 0; j < i; j++)
					if (t[j].kind == TARGET_NEW_FILE)
						unlink(o->specs[j]);
			}
		}
	for (int i = 0; i < o->n; i++) {
		if (status == 0 && o->verbose)
			fprintf(stderr, "restored %s: %llu bytes to %s\n", o->names[i],
				(unsigned long long)r->devs[ids[i]].size, o->specs[i]);
		target_close(&t[i]);
	}
	chain_close(&c);
	chain_taken_free(&x->taken);
	for (int id = 0; id < 256; id++)
		free(x->label[id]);
	free(x);
	free(t);
	free(ids);
	return status == 0 ? 0 : 1;
}

/* Whether an operand is name=target rather than a folder: an '=' with a name before it that
 * has no '/' (a folder with an '=' in its name is given as ./a=b). */
static bool is_target_operand(const char *arg)
{
	const char *eq = strchr(arg, '=');
	return eq && eq != arg && !memchr(arg, '/', (size_t)(eq - arg));
}

/* Cuts every name=target operand at its '='; exits 2 on one that is not, or on a name or
 * target given twice. */
static void split_targets(int argc, char **argv, struct restore *o)
{
	if (argc > VMA_MAX_DEVICES)
		usage_error("%d devices given; an archive holds at most %d", argc, VMA_MAX_DEVICES);
	o->n = argc;
	o->names = xcalloc((size_t)argc, sizeof(char *));
	o->specs = xcalloc((size_t)argc, sizeof(char *));
	for (int i = 0; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!is_target_operand(argv[i]) || eq[1] == '\0')
			usage_error("'%s': expected name=target", argv[i]);
		*eq = '\0';
		o->names[i] = argv[i];
		o->specs[i] = eq + 1;
		for (int j = 0; j < i; j++) {
			if (strcmp(o->names[j], o->names[i]) == 0)
				usage_error("device '%s' named twice", o->names[i]);
			if (strcmp(o->specs[j], o->specs[i]) == 0)
				usage_error("target '%s' given twice", o->specs[i]);
		}
	}
}

/* --to-vma: the output's codec from -z, else from its name; -T threads. Exits 2 on a bad -z
 * or -T, 1 when the codec's library cannot be loaded. */
static int do_to_vma(const char *path, const char *output, const char *codec, const char *threads)
{
	struct consolidation o = {.output = output, .meter = meter_mode, .level = -1};
	char why[512];
	const char *spec = codec ? codec : codec_of_name(output);
	if (sink_parse_codec(spec, &o.codec, &o.level, why, sizeof(why)) < 0) {
		if (why[0])
			errx(EXIT_FAIL, "-z %s: %s", spec, why);
		usage_error("invalid codec '%s': expected zstd[:1-22], xz[:1-9], gzip[:1-9], lzo "
			    "or none",
			    spec);
	}
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	o.threads = cpus > 0 ? (int)cpus : 1;
	if (threads) {
		char *end;
		long n = strtol(threads, &end, 10);
		if (end == threads || *end || n < 1 || n > 256)
			usage_error("invalid thread count '%s': expected a number from 1 to 256",
				    threads);
		o.threads = (int)n;
	}
	if (strcmp(output, "-") == 0 && isatty(STDOUT_FILENO))
		errx(EXIT_USAGE, "refusing to write an archive to a terminal: give a file name");
	struct chain c;
	open_chain(path, &c, true);
	int rc = consolidate(&c, &o);
	chain_close(&c);
	return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	int ch, mode = 0;
	bool json = false, verbose = false, progress_asked = false, force = false,
	     no_verify = false, qcow2 = false, format_asked = false;
	char *devices = NULL;
	const char *config = NULL, *serve = NULL, *to_vma = NULL, *codec = NULL, *threads = NULL;
	while ((ch = cli_getopt(argc, argv, short_opts, long_opts)) != -1) {
		switch (ch) {
		case 'l':
		case 't':
			if (mode && mode != ch)
				usage_error("-l, -t and -c exclude each other");
			mode = ch;
			break;
		case 'c':
			if (mode && mode != ch)
				usage_error("-l, -t and -c exclude each other");
			mode = ch;
			config = optarg;
			break;
		case OPT_JSON:
			json = true;
			break;
		case 'v':
			verbose = true;
			break;
		case OPT_PROGRESS:
			meter_mode = METER_ALWAYS;
			progress_asked = true;
			break;
		case OPT_NO_PROGRESS:
			meter_mode = METER_NEVER;
			break;
		case OPT_FORCE:
			force = true;
			break;
		case OPT_NO_VERIFY:
			no_verify = true;
			break;
		case OPT_FORMAT:
			if (strcmp(optarg, "raw") != 0 && strcmp(optarg, "qcow2") != 0)
				usage_error("--format: expected raw or qcow2, not '%s'", optarg);
			qcow2 = strcmp(optarg, "qcow2") == 0;
			format_asked = true;
			break;
		case OPT_SERVE:
			if (*optarg == '\0')
				usage_error("--serve: expected a socket, not an empty name");
			serve = optarg;
			break;
		case OPT_TO_VMA:
			if (*optarg == '\0')
				usage_error("--to-vma: expected a file name, not an empty one");
			to_vma = optarg;
			break;
		case 'z':
			codec = optarg;
			break;
		case 'T':
			threads = optarg;
			break;
		case OPT_BASE:
			if (*optarg == '\0')
				usage_error("--base: expected an archive, not an empty name");
			if (nbases == INC_MAX_DEPTH)
				usage_error("--base: more than %d given", INC_MAX_DEPTH);
			bases = xrealloc(bases, ((size_t)nbases + 1) * sizeof(*bases));
			bases[nbases++] = optarg;
			break;
		case 'd':
			if (strspn(optarg, ",") == strlen(optarg))
				usage_error("-d: expected device names, not '%s'", optarg);
			devices = optarg;
			break;
		}
	}
	argc -= optind;
	argv += optind;
	if (serve) {
		if (mode || json || verbose || devices || force || no_verify || format_asked ||
		    to_vma || codec || threads)
			usage_error("--serve goes with --base, --progress or --no-progress only");
		if (argc != 1 || argv[0][0] == '\0')
			usage_error("--serve: expected one archive");
		archive_name = argv[0];
		return serve_archive(argv[0], bases, nbases, serve, meter_mode);
	}
	if ((codec || threads) && !to_vma)
		usage_error("-z and -T are for --to-vma");
	/* Standard input is read once: as the archive or as one --base, not both. */
	int stdins = argc > 0 && strcmp(argv[0], "-") == 0;
	for (int i = 0; i < nbases; i++)
		stdins += strcmp(bases[i], "-") == 0;
	if (stdins > 1)
		usage_error("-: standard input is given more than once; it can be read only once");
	if (to_vma) {
		if (mode || json || verbose || devices || force || no_verify || format_asked)
			usage_error(
				"--to-vma goes with -z, -T, --base, --progress or --no-progress "
				"only");
		if (argc != 1 || argv[0][0] == '\0')
			usage_error("--to-vma: expected one archive");
		archive_name = argv[0];
		return do_to_vma(argv[0], to_vma, codec, threads);
	}
	if (json && mode != 'l')
		usage_error("--json needs -l");
	if (nbases && mode == 'c')
		usage_error("--base does not go with -c");
	if (devices && mode)
		usage_error("-d is for extracting, not with -l, -t or -c");
	if (verbose && (mode == 'l' || mode == 'c'))
		usage_error("-v does not go with -l or -c");
	if (progress_asked && (mode == 'l' || mode == 'c'))
		usage_error("--progress does not go with -l or -c");
	bool targets = !mode && argc >= 2 && is_target_operand(argv[1]);
	if ((force || no_verify) && !targets)
		usage_error("--force and --no-verify are for name=target operands");
	if (format_asked && (mode || targets))
		usage_error("--format is for extracting into a directory");
	if (targets && devices)
		usage_error(
			"-d is for extracting into a directory; name the devices as name=target");
	if (!targets && argc != (mode ? 1 : 2))
		usage_error(mode ? "expected one archive" : "expected an archive and a directory");
	for (int i = 0; i < argc; i++)
		if (argv[i][0] == '\0')
			usage_error("expected a file name, not an empty one");
	archive_name = argv[0];
	if (targets) {
		struct restore o = {.force = force, .no_verify = no_verify, .verbose = verbose};
		split_targets(argc - 1, argv + 1, &o);
		int rc = do_restore(argv[0], &o);
		free(o.names);
		free(o.specs);
		return rc;
	}
	switch (mode) {
	case 'l':
		return do_list(argv[0], json);
	case 't':
		return do_verify(argv[0], verbose);
	case 'c':
		return do_config(argv[0], config);
	default:
		return do_extract(argv[0], argv[1], devices, qcow2, verbose);
	}
}
