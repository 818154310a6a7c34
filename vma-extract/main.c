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

#include "cli.h"
#include "instream.h"
#include "listing.h"
#include "meter.h"
#include "outfile.h"
#include "reader.h"
#include "sink.h"
#include "xalloc.h"

/* Exactly the SYNOPSIS of man/vma-extract.1. */
const char usage_synopsis[] = "vma-extract -l [--json] archive\n"
			      "vma-extract -t [-v] [--progress | --no-progress] archive\n"
			      "vma-extract [-v] [--progress | --no-progress] [-d name[,name ...]]\n"
			      "            archive dir\n"
			      "vma-extract -c config archive\n";

static const char short_opts[] = "ltvd:c:h";
enum { OPT_JSON = 256, OPT_PROGRESS, OPT_NO_PROGRESS };
static const struct option long_opts[] = {
	{"list", no_argument, NULL, 'l'},
	{"json", no_argument, NULL, OPT_JSON},
	{"verify", no_argument, NULL, 't'},
	{"verbose", no_argument, NULL, 'v'},
	{"progress", no_argument, NULL, OPT_PROGRESS},
	{"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
	{"devices", required_argument, NULL, 'd'},
	{"config", required_argument, NULL, 'c'},
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

/* Opens the archive (or stdin) and reads its header; exits 1 on any defect. */
static void open_archive(const char *path, struct vma_reader *r)
{
	char why[256];
	int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		err(EXIT_FAIL, "%s", path);
	struct instream *in = instream_open(fd, why, sizeof(why));
	if (!in)
		errx(EXIT_FAIL, "%s: %s", path, why);
	if (vma_reader_open(r, in) < 0)
		errx(EXIT_FAIL, "%s: %s", path, r->err);
}

static void close_archive(struct vma_reader *r)
{
	struct instream *in = r->in;
	vma_reader_close(r);
	instream_free(in);
}

static int do_list(const char *path, bool json)
{
	struct vma_reader r;
	open_archive(path, &r);
	char why[256];
	char *text = json ? vma_listing_json(&r, why, sizeof(why)) : vma_listing(&r);
	if (!text)
		errx(EXIT_FAIL, "%s: %s", path, why);
	printf("%s%s", text, json ? "\n" : "");
	free(text);
	close_archive(&r);
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

static int do_verify(const char *path, bool verbose)
{
	struct vma_reader r;
	open_archive(path, &r);
	vma_reader_cover_all(&r);
	struct meter meter;
	start_meter(&r, &meter);
	if (vma_reader_run(&r, NULL, NULL, NULL) != 0) {
		meter_break();
		errx(EXIT_FAIL, "%s: %s", path, r.err);
	}
	meter_finish(&meter, r.stored_bytes + r.zero_bytes);
	if (verbose) {
		char *text = vma_listing(&r);
		uint64_t total = r.stored_bytes + r.zero_bytes;
		printf("%stotal bytes read %llu, sparse bytes %llu (%.3g%%)\n", text,
		       (unsigned long long)total, (unsigned long long)r.zero_bytes,
		       total ? (double)r.zero_bytes * 100 / (double)total : 0.0);
		free(text);
	}
	close_archive(&r);
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
	bool wanted[256];
	int ncreated;
	char *created[512];
	int created_slot[512];
	int dir_slot;
	struct pending pending;
	uint64_t unflushed[256]; /* by dev_id: bytes written since its writeback was last started */
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
		int fd = x->disks[run->dev_id].fd;
		if (rc == 0 && write_run(fd, p, run) < 0) {
			snprintf(r->err, sizeof(r->err), "%s/%s: %s", x->dir,
				 x->disks[run->dev_id].tmp_name, strerror(errno));
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
	return rc;
}

/* Queues each stored block, clipped to the device end; zero blocks are skipped: the file,
 * sized beforehand, stays sparse there. */
static int restore_cluster(void *opaque, struct vma_reader *r, int dev_id, uint64_t cluster,
			   uint16_t mask, const uint8_t *blocks)
{
	struct extraction *x = opaque;
	if (!x->wanted[dev_id] || mask == 0)
		return 0;
	uint64_t size = r->devs[dev_id].size;
	for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++) {
		if (!(mask & (1u << b)))
			continue;
		uint64_t off = cluster * VMA_CLUSTER_SIZE + (uint64_t)b * VMA_BLOCK_SIZE;
		const uint8_t *block = blocks;
		blocks += VMA_BLOCK_SIZE;
		if (off >= size || vma_block_is_zero(block))
			continue;
		size_t len = size - off < VMA_BLOCK_SIZE ? (size_t)(size - off) : VMA_BLOCK_SIZE;
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

static int do_extract(const char *path, const char *dir, char *devices, bool verbose)
{
	struct vma_reader r;
	struct extraction *x = xcalloc(1, sizeof(*x));
	int parentfd;
	char *base;
	open_archive(path, &r);
	select_devices(&r, x, devices);
	make_target(x, dir, &parentfd, &base);
	for (int id = 0; id < 256; id++)
		x->pending.open_run[id] = -1;
	int status = 0;
	for (int id = 1; id < 255 && status == 0; id++) {
		if (!x->wanted[id])
			continue;
		r.devs[id].check_coverage = true;
		char *final = xasprintf("disk-%s.raw", r.devs[id].name);
		char *tmp = xasprintf("tmp-disk-%s.raw", r.devs[id].name);
		if (outfile_create_at(&x->disks[id], x->dirfd, final, tmp) < 0 ||
		    ftruncate(x->disks[id].fd, (off_t)r.devs[id].size) < 0) {
			warn("%s/%s", dir, final);
			if (x->disks[id].fd >= 0)
				outfile_abort(&x->disks[id]);
			x->wanted[id] = false;
			status = -1;
		}
		free(final);
		free(tmp);
	}
	struct meter meter;
	start_meter(&r, &meter);
	if (status == 0 && vma_reader_run(&r, restore_cluster, write_pending, x) != 0) {
		meter_break();
		warnx("%s: %s", path, r.err);
		status = -1;
	}
	/* Every byte is read and checked: the flushes and renames that follow are quick or fail
	 * with a message of their own. */
	if (status == 0)
		meter_finish(&meter, r.stored_bytes + r.zero_bytes);
	for (int i = 0; i < r.nconfigs && status == 0; i++)
		status = write_config(x, &r.configs[i]);
	for (int id = 1; id < 255; id++) {
		if (!x->wanted[id])
			continue;
		if (status == 0 && outfile_commit(&x->disks[id], 1) < 0) {
			warn("%s/disk-%s.raw", dir, r.devs[id].name);
			status = -1;
		} else if (status != 0) {
			outfile_abort(&x->disks[id]);
		} else {
			char *final = xasprintf("disk-%s.raw", r.devs[id].name);
			record_created(x, final);
			if (verbose)
				fprintf(stderr, "restored %s: %llu bytes to %s/%s\n",
					r.devs[id].name, (unsigned long long)r.devs[id].size, dir,
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
	close_archive(&r);
	free(x);
	return status == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	int ch, mode = 0;
	bool json = false, verbose = false, progress_asked = false;
	char *devices = NULL;
	const char *config = NULL;
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
		case 'd':
			if (strspn(optarg, ",") == strlen(optarg))
				usage_error("-d: expected device names, not '%s'", optarg);
			devices = optarg;
			break;
		}
	}
	argc -= optind;
	argv += optind;
	if (json && mode != 'l')
		usage_error("--json needs -l");
	if (devices && mode)
		usage_error("-d is for extracting, not with -l, -t or -c");
	if (verbose && (mode == 'l' || mode == 'c'))
		usage_error("-v does not go with -l or -c");
	if (progress_asked && (mode == 'l' || mode == 'c'))
		usage_error("--progress does not go with -l or -c");
	if (argc != (mode ? 1 : 2))
		usage_error(mode ? "expected one archive" : "expected an archive and a directory");
	for (int i = 0; i < argc; i++)
		if (argv[i][0] == '\0')
			usage_error("expected a file name, not an empty one");
	archive_name = argv[0];
	switch (mode) {
	case 'l':
		return do_list(argv[0], json);
	case 't':
		return do_verify(argv[0], verbose);
	case 'c':
		return do_config(argv[0], config);
	default:
		return do_extract(argv[0], argv[1], devices, verbose);
	}
}
