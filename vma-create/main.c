/* vma-create: write disk images, block devices or NBD exports into a Proxmox VMA archive. */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "deadline.h"
#include "incremental.h"
#include "listen.h"
#include "nbd_server.h"
#include "nbduri.h"
#include "outfile.h"
#include "progress.h"
#include "sink.h"
#include "source.h"
#include "stats.h"
#include "vma_writer.h"
#include "xalloc.h"

/* Exactly the SYNOPSIS of man/vma-create.1. */
const char usage_synopsis[] =
	"vma-create [-v | --progress | --no-progress] [-o archive] [-c configfile]\n"
	"           [-z codec] [-T threads] [-t seconds] [--idle-timeout seconds]\n"
	"           [--bwlimit kib] [--stats file] name=source ...\n"
	"vma-create --listen socket [-v | --progress | --no-progress] [-o archive]\n"
	"           [-c configfile] [-z codec] [-T threads] [-t seconds]\n"
	"           [--idle-timeout seconds] [--bwlimit kib] [--stats file]\n"
	"           [--incremental file] name=size ...\n";

/* The defaults of -t and --idle-timeout (man page, TIMEOUTS): a handshake is a few round trips,
 * so 30 s is ample even for a loaded host; QEMU's backup job may be slowed by a busy source or
 * a speed limit of its own and the driver connects only after the guest's freeze, so 10
 * minutes of silence (time held back by --bwlimit is not silence). */
#define DEFAULT_TIMEOUT 30.0
#define DEFAULT_IDLE_TIMEOUT 600.0

static const char short_opts[] = "vo:c:z:T:t:h";
enum {
	OPT_BWLIMIT = 256,
	OPT_LISTEN,
	OPT_STATS,
	OPT_IDLE_TIMEOUT,
	OPT_PROGRESS,
	OPT_NO_PROGRESS,
	OPT_INCREMENTAL
};
static const struct option long_opts[] = {
	{"verbose", no_argument, NULL, 'v'},
	{"progress", no_argument, NULL, OPT_PROGRESS},
	{"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
	{"output", required_argument, NULL, 'o'},
	{"config", required_argument, NULL, 'c'},
	{"compress", required_argument, NULL, 'z'},
	{"threads", required_argument, NULL, 'T'},
	{"timeout", required_argument, NULL, 't'},
	{"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
	{"bwlimit", required_argument, NULL, OPT_BWLIMIT},
	{"listen", required_argument, NULL, OPT_LISTEN},
	{"stats", required_argument, NULL, OPT_STATS},
	{"incremental", required_argument, NULL, OPT_INCREMENTAL},
	{"help", no_argument, NULL, 'h'},
	CLI_LIST_OPTIONS,
	{NULL, 0, NULL, 0},
};

struct options {
	bool verbose;
	enum meter_mode meter; /* --progress, --no-progress; off with -v */
	const char *output;
	const char *configs[VMA_MAX_CONFIGS + 1];
	int nconfigs;
	enum sink_codec codec;
	int level;
	int threads;
	uint64_t bwlimit_kib;
	const char *listen;      /* serve the devices over NBD on this socket instead of reading */
	const char *stats;       /* write the figures there as JSON when the archive is complete */
	const char *incremental; /* an incremental archive: its INC_BLOB_NAME blob, from here */
	double timeout;          /* -t: connecting and the NBD handshake */
	double idle_timeout;     /* a peer silent in the middle of the copy */
};

static uint64_t parse_number(const char *arg, const char *what, uint64_t min, uint64_t max)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(arg, &end, 10);
	if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max)
		usage_error("invalid %s '%s': expected a number from %llu to %llu", what, arg,
			    (unsigned long long)min, (unsigned long long)max);
	return v;
}

/* Reads a config file whole; exits 2 when it is unusable (nothing has been written yet). */
static uint8_t *read_config(const char *path, size_t *len)
{
	uint8_t *buf = xmalloc(VMA_MAX_BLOB + 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;
	if (fd < 0)
		err(EXIT_USAGE, "config %s", path);
	for (;;) {
		ssize_t n = read(fd, buf + got, VMA_MAX_BLOB + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			err(EXIT_USAGE, "config %s", path);
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > VMA_MAX_BLOB)
			errx(EXIT_USAGE, "config %s: larger than %d bytes", path, VMA_MAX_BLOB);
	}
	close(fd);
	*len = got;
	return buf;
}

static void add_configs(struct vma_writer *w, const struct options *o)
{
	for (int i = 0; i < o->nconfigs; i++) {
		size_t len;
		uint8_t *data = read_config(o->configs[i], &len);
		char *copy = xstrdup(o->configs[i]);
		/* Only --incremental makes an archive incremental, after checking the blob. */
		if (strcmp(basename(copy), INC_BLOB_NAME) == 0)
			errx(EXIT_USAGE, "config %s: that name is --incremental's", o->configs[i]);
		int rc = vma_writer_add_config(w, basename(copy), data, len);
		free(copy);
		free(data);
		if (rc < 0)
			errx(EXIT_USAGE, "%s", vma_writer_error(w));
	}
}

/* Cuts every name=value argument at its '=' in place, so argv[i] is the name and values[i] the
 * value; exits 2 on more devices than an archive holds or on an argument that is not FORM. */
static void split_devices(int argc, char **argv, const char *form, char *values[VMA_MAX_DEVICES])
{
	if (argc > VMA_MAX_DEVICES)
		errx(EXIT_USAGE, "%d devices given; an archive holds at most %d", argc,
		     VMA_MAX_DEVICES);
	for (int i = 0; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq || eq[1] == '\0')
			usage_error("'%s': expected %s", argv[i], form);
		*eq = '\0';
		values[i] = eq + 1;
	}
}

/* Registers name=size devices for --listen; exits 2 on a bad name or size. */
static void add_listen_devices(struct vma_writer *w, int argc, char **argv)
{
	char *sizes[VMA_MAX_DEVICES];
	split_devices(argc, argv, "name=size", sizes);
	for (int i = 0; i < argc; i++) {
		uint64_t size = parse_number(sizes[i], "device size", 1,
					     (uint64_t)UINT32_MAX << 16);
		if (vma_writer_add_device(w, argv[i], size) < 0)
			errx(EXIT_USAGE, "%s", vma_writer_error(w));
	}
}

/* --incremental: the blob must be valid and describe exactly the devices given (names and
 * sizes), since every reader of the chain relies on it; exits 2 when it does not. */
static void add_incremental(struct vma_writer *w, const char *path)
{
	size_t len;
	uint8_t *data = read_config(path, &len);
	struct inc_info info;
	char why[512];
	if (inc_info_parse(data, len, &info, why, sizeof(why)) < 0)
		errx(EXIT_USAGE, "--incremental %s: %s", path, why);
	int n = vma_writer_device_count(w);
	for (int i = 1; i <= n; i++) {
		struct vma_device_stats s = vma_writer_stats(w, i);
		const struct inc_device *d = inc_info_device(&info, s.name);
		if (!d)
			errx(EXIT_USAGE, "--incremental %s: no device %s in it", path, s.name);
		if (d->size != s.size)
			errx(EXIT_USAGE, "--incremental %s: %s is %llu bytes there, %llu here",
			     path, s.name, (unsigned long long)d->size, (unsigned long long)s.size);
	}
	if (info.ndevices != n)
		errx(EXIT_USAGE, "--incremental %s: %d devices in it, %d given", path,
		     info.ndevices, n);
	inc_info_free(&info);
	if (vma_writer_add_config(w, INC_BLOB_NAME, data, len) < 0)
		errx(EXIT_USAGE, "%s", vma_writer_error(w));
	free(data);
	vma_writer_set_partial(w);
}

/* Opens every source and registers it as a device; exits 2 on a bad name, 1 on a bad source,
 * 3 on an NBD server that cannot be reached or does not finish its handshake in time. */
static struct source **add_devices(struct vma_writer *w, int argc, char **argv,
				   const struct options *o)
{
	const struct source_timeouts timeouts = {o->timeout, o->idle_timeout};
	char *specs[VMA_MAX_DEVICES];
	split_devices(argc, argv, "name=source", specs);
	struct source **sources = xcalloc((size_t)argc + 1, sizeof(*sources));
	for (int i = 0; i < argc; i++) {
		const char *name = argv[i], *spec = specs[i];
		const char *defect = vma_name_defect(name);
		if (defect)
			errx(EXIT_USAGE, "device name '%s': %s", name, defect);
		for (int j = 0; j < i; j++)
			if (strcmp(argv[j], name) == 0)
				errx(EXIT_USAGE, "device name '%s' given twice", name);
		char why[512];
		int status = EXIT_FAIL;
		if (nbd_is_uri(spec))
			sources[i] = source_open_nbd(spec, &timeouts, &status, why, sizeof(why));
		else
			sources[i] = source_open_file(spec, why, sizeof(why));
		if (!sources[i])
			errx(status, "%s: %s", spec, why);
		if (vma_writer_add_device(w, name, sources[i]->size) < 0)
			errx(EXIT_USAGE, "%s", vma_writer_error(w));
	}
	return sources;
}

/* What the source says about the area around the clusters being copied, asked once per run. */
struct hole_map {
	struct source *src;
	uint64_t run_end;
	bool run_zero;
};

/* Sets *hole when cluster k lies wholly inside an area the source reports as zero. Clusters
 * must be asked about in ascending order. */
static int cluster_is_hole(struct hole_map *m, uint64_t k, bool *hole)
{
	uint64_t start = k * VMA_CLUSTER_SIZE, size = m->src->size;
	uint64_t end = start + VMA_CLUSTER_SIZE < size ? start + VMA_CLUSTER_SIZE : size;
	if (start >= m->run_end) {
		uint64_t len;
		if (m->src->extent(m->src, start, &len, &m->run_zero) < 0)
			return -1;
		m->run_end = start + len;
	}
	*hole = m->run_zero && m->run_end >= end;
	return 0;
}

/* How many clusters from k on (k itself in a hole, as cluster_is_hole found) lie wholly
 * inside the hole: up to the device's end when the hole reaches it. */
static uint64_t hole_clusters(const struct hole_map *m, uint64_t k, uint64_t clusters)
{
	uint64_t last = m->run_end >= m->src->size ? clusters : m->run_end / VMA_CLUSTER_SIZE;
	return last - k;
}

/* Copies one device: runs of data clusters are read straight into the archive's extent buffer,
 * clusters inside holes are recorded as zero without reading. Returns 0, -1 for a source
 * error, -2 for a writer error. */
static int copy_device(struct vma_writer *w, int dev_id, struct source *src,
		       struct throttle *throttle, struct progress *progress)
{
	uint64_t clusters = vma_cluster_count(src->size);
	struct hole_map map = {.src = src};
	bool hole;
	for (uint64_t c = 0; c < clusters;) {
		if (cluster_is_hole(&map, c, &hole) < 0)
			return -1;
		if (hole) { /* the whole hole at once, then one progress update */
			uint64_t n = hole_clusters(&map, c, clusters);
			if (vma_writer_put_zeros(w, dev_id, c, n) < 0)
				return -2;
			c += n;
		} else {
			/* Each piece is committed at once: the writer's zero test then finds a
			 * file's data still in the CPU's cache. */
			unsigned n = clusters - c < src->read_clusters ? (unsigned)(clusters - c)
								       : src->read_clusters;
			uint8_t *buf = vma_writer_reserve(w, &n);
			if (!buf)
				return -2;
			unsigned k = 1;
			for (; k < n; k++) {
				if (cluster_is_hole(&map, c + k, &hole) < 0)
					return -1;
				if (hole)
					break;
			}
			uint64_t off = c * VMA_CLUSTER_SIZE;
			uint64_t len = (uint64_t)k * VMA_CLUSTER_SIZE;
			if (off + len > src->size)
				len = src->size - off;
			if (src->read(src, off, buf, (size_t)len) < 0)
				return -1;
			throttle_account(throttle, len);
			if (vma_writer_commit(w, dev_id, c, k) < 0)
				return -2;
			c += k;
		}
		struct vma_device_stats all = vma_writer_stats(w, 0);
		progress_update(progress, all.transferred, all.zero_bytes, false);
	}
	return 0;
}

/* --stats: checked before anything is written; the file appears only with the archive. */
static void open_stats(const struct options *o, const struct vma_writer *w, struct outfile *f)
{
	if (!o->stats)
		return;
	for (int i = 1; i <= vma_writer_device_count(w); i++) {
		const char *name = vma_writer_stats(w, i).name;
		if (!stats_name_ok(name))
			errx(2, "device name '%s': not UTF-8, which --stats cannot write", name);
	}
	if (outfile_create(f, o->stats, NULL) < 0)
		err(EXIT_FAIL, "%s", o->stats);
}

static int write_stats(struct outfile *f, const struct vma_writer *w, struct sink *s,
		       double elapsed)
{
	char sha256[SINK_SHA256_HEX];
	sink_sha256(s, sha256);
	char *line = stats_json(w, s, elapsed, sha256);
	int rc = -1;
	if (!line)
		errno = ENOMEM;
	else if (write_all(f->fd, line, strlen(line)) == 0 && outfile_commit(f, 0) == 0)
		rc = 0;
	free(line);
	return rc;
}

static int open_output(const struct options *o, struct outfile *out)
{
	if (!o->output) {
		if (isatty(STDOUT_FILENO))
			errx(EXIT_USAGE,
			     "refusing to write an archive to a terminal: use -o or a pipe");
		return STDOUT_FILENO;
	}
	struct stat st;
	if (lstat(o->output, &st) == 0)
		errx(EXIT_FAIL, "%s: already exists; not replacing it", o->output);
	if (outfile_create(out, o->output, NULL) < 0)
		err(EXIT_FAIL, "%s", o->output);
	return out->fd;
}

/* A file name given to an option: an empty one is a usage error (open would only say ENOENT). */
static char *file_arg(char *arg, const char *option)
{
	if (*arg == '\0')
		usage_error("%s: expected a file name, not an empty one", option);
	return arg;
}

/* -z: a bad codec is a usage error; its library that cannot be loaded, a failure. */
static void parse_codec(const char *spec, struct options *o)
{
	char why[512];
	if (sink_parse_codec(spec, &o->codec, &o->level, why, sizeof(why)) == 0)
		return;
	if (why[0] != '\0')
		errx(EXIT_FAIL, "-z %s: %s", spec, why);
	usage_error("invalid codec '%s': expected zstd[:1-22], xz[:1-9], gzip[:1-9], lzo or none",
		    spec);
}

static void parse_options(int argc, char **argv, struct options *o)
{
	int ch;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	*o = (struct options){.codec = SINK_PLAIN,
			      .level = -1,
			      .threads = cpus > 0 ? (int)cpus : 1,
			      .timeout = DEFAULT_TIMEOUT,
			      .idle_timeout = DEFAULT_IDLE_TIMEOUT};
	while ((ch = cli_getopt(argc, argv, short_opts, long_opts)) != -1) {
		switch (ch) {
		case 'v':
			o->verbose = true;
			break;
		case OPT_PROGRESS:
			o->meter = METER_ALWAYS;
			break;
		case OPT_NO_PROGRESS:
			o->meter = METER_NEVER;
			break;
		case 'o':
			/* "-o -" is standard output, as for most tools that take -o */
			o->output = strcmp(optarg, "-") == 0 ? NULL : file_arg(optarg, "-o");
			break;
		case 'c':
			if (o->nconfigs == VMA_MAX_CONFIGS)
				errx(EXIT_USAGE, "more than %d configs", VMA_MAX_CONFIGS);
			o->configs[o->nconfigs++] = file_arg(optarg, "-c");
			break;
		case 'z':
			parse_codec(optarg, o);
			break;
		case 'T':
			o->threads = (int)parse_number(optarg, "thread count", 1, 256);
			break;
		case OPT_BWLIMIT:
			o->bwlimit_kib = parse_number(optarg, "bandwidth limit", 1,
						      UINT64_MAX / 2048);
			break;
		case OPT_LISTEN:
			o->listen = file_arg(optarg, "--listen");
			break;
		case OPT_STATS:
			o->stats = file_arg(optarg, "--stats");
			break;
		case OPT_INCREMENTAL:
			o->incremental = file_arg(optarg, "--incremental");
			break;
		case 't':
			if (!parse_seconds(optarg, &o->timeout))
				usage_error("invalid timeout '%s': expected seconds (0: none)",
					    optarg);
			break;
		case OPT_IDLE_TIMEOUT:
			if (!parse_seconds(optarg, &o->idle_timeout))
				usage_error("invalid idle timeout '%s': expected seconds (0: none)",
					    optarg);
			break;
		}
	}
	/* -v's lines are the progress already; a meter between them would garble both. */
	if (o->verbose && o->meter == METER_ALWAYS)
		usage_error("--progress does not go with -v, whose lines show the progress");
	/* An archive of configs alone is a backup of a VM without disks (the driver writes one);
	 * with neither, nothing was asked for, and an empty archive would hide the mistake. */
	/* Only QEMU's backup job knows which clusters changed: it pushes them. */
	if (o->incremental && !o->listen)
		usage_error("--incremental needs --listen");
	if (optind == argc && o->listen)
		usage_error("--listen needs at least one name=size device");
	if (optind == argc && o->nconfigs == 0)
		usage_error("nothing to archive: expected name=source devices or a config (-c)");
}

/* Milliseconds for the NBD server; 0 waits forever, as deadline_in() has it. */
static int to_ms(double seconds)
{
	return seconds <= 0 || seconds > 1e6 ? 0 : (int)(seconds * 1000.0 + 0.5);
}

int main(int argc, char **argv)
{
	struct options o;
	struct outfile out = {.fd = -1, .slot = -1}, stats = {.fd = -1, .slot = -1};
	char why[512];
	parse_options(argc, argv, &o);
	argc -= optind;
	argv += optind;

	struct vma_writer *w = vma_writer_new();
	if (!w)
		err(EXIT_FAIL, "out of memory");
	add_configs(w, &o);
	struct source **sources = NULL;
	if (o.listen)
		add_listen_devices(w, argc, argv);
	if (o.incremental)
		add_incremental(w, o.incremental);
	if (!o.listen)
		sources = add_devices(w, argc, argv, &o);
	open_stats(&o, w, &stats);
	int fd = open_output(&o, &out);
	struct sink *sink = sink_open(fd, o.codec, o.level, o.threads, why, sizeof(why));
	if (!sink) {
		outfile_abort(&out);
		outfile_abort(&stats);
		errx(EXIT_FAIL, "%s", why);
	}
	/* --stats has the archive's SHA-256 (vzdump.sh's ARCHIVE.sha256), taken from the bytes as
	 * they are written: the archive is not read again. Into a file of our own, writing
	 * (which waits for the disk) is the output thread's, while this one hashes and reads or
	 * receives the next extent. */
	if ((o.stats && sink_hash(sink, why, sizeof(why)) < 0) ||
	    (out.fd >= 0 && sink_to_own_file(sink, why, sizeof(why)) < 0)) {
		outfile_abort(&out);
		outfile_abort(&stats);
		errx(EXIT_FAIL, "%s", why);
	}

	struct progress progress;
	struct throttle throttle;
	progress_start(&progress, o.verbose, o.meter, vma_writer_stats(w, 0).size);
	throttle_start(&throttle, o.bwlimit_kib);
	int status = 0;
	bool peer_timed_out = false;
	if (vma_writer_begin(w, sink) < 0)
		status = -2;
	if (!o.listen)
		progress_begin(&progress);
	if (status == 0 && o.listen) {
		const struct nbd_timeouts timeouts = {to_ms(o.timeout), to_ms(o.idle_timeout)};
		int rc = serve_devices(w, o.listen, &timeouts, &progress, &throttle);
		peer_timed_out = rc == NBD_SERVE_TIMEOUT;
		if (rc < 0)
			status = -1;
	}
	for (int i = 0; status == 0 && !o.listen && i < argc; i++) {
		status = copy_device(w, i + 1, sources[i], &throttle, &progress);
		if (status == -1) {
			meter_break();
			warnx("%s: %s", sources[i]->spec, sources[i]->err);
			peer_timed_out = sources[i]->timed_out;
		}
	}
	/* The meter's work is done with the reading: what may still fail later has a line of
	 * its own. */
	if (status == 0)
		meter_finish(&progress.meter, vma_writer_stats(w, 0).transferred);
	meter_break();
	if (status == 0 && vma_writer_finish(w) < 0)
		status = -2;
	if (status == -2)
		warnx("%s", vma_writer_error(w));
	if (status == 0 && sink_finish(sink) < 0) {
		warnx("%s", sink_error(sink));
		status = -1;
	}
	if (status == 0 && o.stats &&
	    write_stats(&stats, w, sink, (double)(monotonic_ms() - progress.start_ms) / 1000.0) <
		    0) {
		warn("%s", o.stats);
		status = -1;
	}
	if (status == 0 && o.output && outfile_commit(&out, 1) < 0) {
		warn("%s", o.output);
		if (o.stats)
			unlink(o.stats);
		status = -1;
	}
	/* First: after a failure, the output thread may still be writing to the file that
	 * outfile_abort closes (and the descriptor could be someone else's then). */
	sink_free(sink);
	if (status != 0) {
		outfile_abort(&out);
		outfile_abort(&stats);
	} else {
		struct vma_device_stats all = vma_writer_stats(w, 0);
		progress_update(&progress, all.transferred, all.zero_bytes, true);
		for (int i = 0; o.verbose && i < argc; i++) {
			struct vma_device_stats s = vma_writer_stats(w, i + 1);
			fprintf(stderr, "image %s: size=%llu zeros=%llu saved=%llu\n", s.name,
				(unsigned long long)s.size, (unsigned long long)s.zero_bytes,
				(unsigned long long)(s.transferred - s.zero_bytes));
		}
	}
	for (int i = 0; sources && i < argc; i++)
		sources[i]->close(sources[i]);
	free(sources);
	vma_writer_free(w);
	if (status == 0)
		return EXIT_OK;
	return peer_timed_out ? EXIT_PEER : EXIT_FAIL;
}
