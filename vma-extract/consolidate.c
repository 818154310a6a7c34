#include <err.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "consolidate.h"
#include "exitcode.h"
#include "outfile.h"
#include "vma_writer.h"

struct merge {
	struct vma_writer *w;
	const struct vma_reader *newest;
	const int *map;  /* the link being read's dev_ids -> links[0]'s */
	int out_id[256]; /* links[0]'s dev_ids -> the new archive's */
	struct chain_taken taken;
};

/* One cluster of a link: into the new archive unless a newer link gave it already. */
static int merge_cluster(void *opaque, struct vma_reader *r, int dev_id, uint64_t cluster,
			 uint16_t mask, const uint8_t *blocks)
{
	struct merge *m = opaque;
	int id = m->map[dev_id];
	if (!id || !chain_take(&m->taken, m->newest, id, cluster))
		return 0;
	int rc;
	if (mask == 0) {
		rc = vma_writer_put_zero(m->w, m->out_id[id], cluster);
	} else {
		unsigned n = 1;
		uint8_t *buf = vma_writer_reserve(m->w, &n);
		if (!buf)
			goto failed;
		for (unsigned b = 0; b < VMA_BLOCKS_PER_CLUSTER; b++, buf += VMA_BLOCK_SIZE) {
			if (mask & (1u << b)) {
				memcpy(buf, blocks, VMA_BLOCK_SIZE);
				blocks += VMA_BLOCK_SIZE;
			} else {
				memset(buf, 0, VMA_BLOCK_SIZE);
			}
		}
		rc = vma_writer_commit(m->w, m->out_id[id], cluster, 1);
	}
	if (rc == 0)
		return 0;
failed:
	snprintf(r->err, sizeof(r->err), "%s", vma_writer_error(m->w));
	return -1;
}

/* The new archive's header: links[0]'s configs but the incremental blob, and its devices. */
static int describe(struct merge *m, const struct vma_reader *r)
{
	for (int i = 0; i < r->nconfigs; i++)
		if (strcmp(r->configs[i].name, INC_BLOB_NAME) != 0 &&
		    vma_writer_add_config(m->w, r->configs[i].name, r->configs[i].data,
					  r->configs[i].len) < 0)
			return -1;
	for (int id = 1; id < 255; id++) {
		if (!r->devs[id].name)
			continue;
		m->out_id[id] = vma_writer_add_device(m->w, r->devs[id].name, r->devs[id].size);
		if (m->out_id[id] < 0)
			return -1;
	}
	return 0;
}

static int copy_links(struct chain *c, struct merge *m, enum meter_mode mode)
{
	char why[1024];
	vma_reader_cover_all(&c->links[c->n - 1].r);
	if (chain_read(c, &m->map, merge_cluster, NULL, m, mode, why, sizeof(why)) < 0) {
		warnx("%s", why);
		return -1;
	}
	return 0;
}

int consolidate(struct chain *c, const struct consolidation *o)
{
	struct merge m = {.w = vma_writer_new(), .newest = &c->links[0].r};
	struct outfile out = {.fd = -1, .slot = -1};
	struct sink *sink = NULL;
	char why[512];
	int rc = -1, fd = STDOUT_FILENO;
	bool to_stdout = strcmp(o->output, "-") == 0;
	struct stat st;
	if (!m.w) {
		warnx("out of memory");
		return -1;
	}
	if (describe(&m, &c->links[0].r) < 0) {
		warnx("%s", vma_writer_error(m.w));
		goto done;
	}
	if (!to_stdout && lstat(o->output, &st) == 0) {
		warnx("%s: already exists; not replacing it", o->output);
		goto done;
	}
	if (!to_stdout && outfile_create(&out, o->output, NULL) < 0) {
		warn("%s", o->output);
		goto done;
	}
	if (!to_stdout)
		fd = out.fd;
	sink = sink_open(fd, o->codec, o->level, o->threads, why, sizeof(why));
	if (!sink || (!to_stdout && sink_to_own_file(sink, why, sizeof(why)) < 0)) {
		warnx("%s", why);
		goto done;
	}
	if (vma_writer_begin(m.w, sink) < 0 || copy_links(c, &m, o->meter) < 0)
		goto writer;
	if (vma_writer_finish(m.w) < 0)
		goto writer;
	if (sink_finish(sink) < 0) {
		warnx("%s: %s", o->output, sink_error(sink));
		goto done;
	}
	if (!to_stdout && outfile_commit(&out, 1) < 0) {
		warn("%s", o->output);
		goto done;
	}
	rc = 0;
	goto done;
writer:
	if (vma_writer_error(m.w)[0])
		warnx("%s: %s", o->output, vma_writer_error(m.w));
done:
	/* First: the output thread may still be writing to the file outfile_abort closes. */
	sink_free(sink);
	if (rc < 0)
		outfile_abort(&out);
	vma_writer_free(m.w);
	chain_taken_free(&m.taken);
	return rc;
}

const char *codec_of_name(const char *name)
{
	static const char *const by_ext[][2] = {{".zst", "zstd"},
						{".gz", "gzip"},
						{".lzo", "lzo"},
						{".xz", "xz"}};
	size_t len = strlen(name);
	for (size_t i = 0; i < sizeof(by_ext) / sizeof(by_ext[0]); i++) {
		size_t n = strlen(by_ext[i][0]);
		if (len > n && strcmp(name + len - n, by_ext[i][0]) == 0)
			return by_ext[i][1];
	}
	return "none";
}
