#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "chain.h"
#include "errbuf.h"
#include "xalloc.h"

static void close_link(struct chain_link *l)
{
	if (l->r.in) {
		struct instream *in = l->r.in;
		vma_reader_close(&l->r);
		instream_free(in);
	}
	if (l->fd > STDIN_FILENO)
		close(l->fd);
	inc_info_free(&l->inc);
	free(l->kept_header);
	free(l->path);
	free(l->sum_path);
	*l = (struct chain_link){.fd = -1};
}

/* Whether l has an ARCHIVE.sha256 (vzdump.sh's, or sha256sum's), and its sum, in lowercase, in
 * l->want. -1 when it cannot be read, is not one line as sha256sum writes it or names another
 * file than the archive. */
static int expected_sha256(struct chain_link *l, char *err, size_t errlen)
{
	char text[PATH_MAX + 80];
	int fd = open(l->sum_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0)
		return errbuf_set(err, errlen, "%s: %s", l->sum_path, strerror(errno));
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, text + len, sizeof(text) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			close(fd);
			return errbuf_set(err, errlen, "%s: %s", l->sum_path, strerror(e));
		}
		len += (size_t)n;
		if (n == 0 || len == sizeof(text) - 1)
			break;
	}
	close(fd);
	text[len] = '\0';
	/* "HEX  NAME\n" or, from sha256sum -b, "HEX *NAME\n": one line, the name up to its end. */
	const size_t hexlen = INSTREAM_SHA256_HEX - 1;
	if (len > 0 && text[len - 1] == '\n')
		text[--len] = '\0';
	const char *name = text + hexlen + 2;
	if (len <= hexlen + 2 || strspn(text, "0123456789abcdefABCDEF") != hexlen ||
	    text[hexlen] != ' ' || (text[hexlen + 1] != ' ' && text[hexlen + 1] != '*') ||
	    strlen(text) != len || strchr(name, '\n'))
		return errbuf_set(err, errlen,
				  "%s: not one line '<sha256 in hex>  <file name>' as sha256sum "
				  "writes it",
				  l->sum_path);
	const char *slash = strrchr(l->path, '/');
	const char *base = slash ? slash + 1 : l->path;
	if (strcmp(name, base) != 0)
		return errbuf_set(err, errlen, "%s: names %s, not %s", l->sum_path, name, base);
	for (size_t i = 0; i < hexlen; i++)
		l->want[i] = (char)(text[i] >= 'A' && text[i] <= 'F' ? text[i] - 'A' + 'a'
								     : text[i]);
	l->want[hexlen] = '\0';
	l->hashed = true;
	return 0;
}

static int read_header(struct chain_link *l, bool hash, char *err, size_t errlen)
{
	char why[256];
	l->r.in = NULL;
	if (hash && l->sum_path && expected_sha256(l, err, errlen) < 0)
		return -1;
	struct instream *in = instream_open(l->fd, why, sizeof(why));
	if (!in)
		return errbuf_set(err, errlen, "%s: %s", l->path, why);
	if (l->hashed && instream_hash(in, why, sizeof(why)) < 0) {
		instream_free(in);
		return errbuf_set(err, errlen, "%s: %s", l->path, why);
	}
	if (vma_reader_open(&l->r, in) < 0) {
		errbuf_set(err, errlen, "%s: %s", l->path, l->r.err);
		vma_reader_close(&l->r);
		instream_free(in);
		l->r.in = NULL;
		return -1;
	}
	return 0;
}

/* Opens one archive, reads its header and its incremental blob, if any, which must describe
 * exactly the archive's devices. */
static int open_link(struct chain_link *l, const char *path, bool hash, char *err, size_t errlen)
{
	bool from_stdin = strcmp(path, "-") == 0;
	*l = (struct chain_link){.path = xstrdup(path), .fd = -1};
	l->sum_path = from_stdin ? NULL : xasprintf("%s.sha256", path);
	l->fd = from_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	if (l->fd < 0)
		return errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
	l->start = lseek(l->fd, 0, SEEK_CUR);
	if (read_header(l, hash, err, errlen) < 0)
		return -1;
	const struct vma_config *blob = NULL;
	for (int i = 0; i < l->r.nconfigs; i++)
		if (strcmp(l->r.configs[i].name, INC_BLOB_NAME) == 0)
			blob = &l->r.configs[i];
	if (!blob)
		return 0;
	char why[256];
	if (inc_info_parse(blob->data, blob->len, &l->inc, why, sizeof(why)) < 0)
		return errbuf_set(err, errlen, "%s: %s: %s", path, INC_BLOB_NAME, why);
	l->incremental = true;
	int ndevs = 0;
	for (int id = 1; id < 255; id++) {
		const struct vma_device *d = &l->r.devs[id];
		if (!d->name)
			continue;
		ndevs++;
		const struct inc_device *e = inc_info_device(&l->inc, d->name);
		if (!e || e->size != d->size)
			return errbuf_set(err, errlen, "%s: %s does not describe its device %s",
					  path, INC_BLOB_NAME, d->name);
	}
	if (ndevs != l->inc.ndevices)
		return errbuf_set(err, errlen, "%s: %s names devices the archive does not have",
				  path, INC_BLOB_NAME);
	return 0;
}

/* The device of that name in r, or 0. */
static int device_id(const struct vma_reader *r, const char *name)
{
	for (int id = 1; id < 255; id++)
		if (r->devs[id].name && strcmp(r->devs[id].name, name) == 0)
			return id;
	return 0;
}

/* Parent p of child c: the uuids and the depth as c says, the same devices. */
static int check_link(const struct chain_link *c, const struct chain_link *p, char *err,
		      size_t errlen)
{
	char want[37];
	uuid_unparse_lower(c->inc.parent_uuid, want);
	if (memcmp(p->r.uuid, c->inc.parent_uuid, 16) != 0)
		return errbuf_set(err, errlen, "%s: not the parent of %s (that is uuid %s)",
				  p->path, c->path, want);
	unsigned depth = p->incremental ? p->inc.depth : 0;
	const uint8_t *full = p->incremental ? p->inc.full_uuid : p->r.uuid;
	if (depth + 1 != c->inc.depth || memcmp(full, c->inc.full_uuid, 16) != 0)
		return errbuf_set(err, errlen, "%s: its chain does not match the one %s names",
				  p->path, c->path);
	for (int id = 1; id < 255; id++) {
		const struct vma_device *d = &c->r.devs[id];
		const struct vma_device *e = &p->r.devs[id];
		if (d->name) {
			int pid = device_id(&p->r, d->name);
			if (!pid)
				return errbuf_set(err, errlen, "%s: has no device %s, which %s has",
						  p->path, d->name, c->path);
			if (p->r.devs[pid].size != d->size)
				return errbuf_set(err, errlen,
						  "%s: device %s is %llu bytes, %llu bytes in %s",
						  p->path, d->name,
						  (unsigned long long)p->r.devs[pid].size,
						  (unsigned long long)d->size, c->path);
		}
		if (e->name && !device_id(&c->r, e->name))
			return errbuf_set(err, errlen, "%s: has a device %s, which %s has not",
					  p->path, e->name, c->path);
	}
	return 0;
}

/* path's folder joined with name: name alone for a path without a folder, but "./-" for "-",
 * which open_link would take for standard input. */
static char *beside(const char *path, const char *name)
{
	if (!strchr(path, '/'))
		return xstrdup(strcmp(name, "-") == 0 ? "./-" : name);
	char *copy = xstrdup(path);
	char *joined = xasprintf("%s/%s", dirname(copy), name);
	free(copy);
	return joined;
}

/* The parent of link c: a --base file with its uuid, or else its file name beside c, or
 * beside top, the archive asked for. */
static int open_parent(struct chain_link *c, const char *top, struct chain_link *bases, int nbases,
		       bool hash, struct chain_link *out, char *err, size_t errlen)
{
	for (int i = 0; i < nbases; i++)
		if (bases[i].fd >= 0 && memcmp(bases[i].r.uuid, c->inc.parent_uuid, 16) == 0) {
			*out = bases[i];
			bases[i] = (struct chain_link){.fd = -1};
			return 0;
		}
	char *path = beside(c->path, c->inc.parent_file);
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		char *other = beside(top, c->inc.parent_file);
		if (access(other, F_OK) == 0) {
			free(path);
			path = other;
		} else {
			free(other);
			char uuid[37];
			uuid_unparse_lower(c->inc.parent_uuid, uuid);
			errbuf_set(err, errlen,
				   "%s: its parent %s (uuid %s) is missing; give it with --base",
				   c->path, path, uuid);
			free(path);
			return -1;
		}
	}
	int rc = open_link(out, path, hash, err, errlen);
	free(path);
	return rc;
}

int chain_open(struct chain *c, const char *path, char *const *bases, int nbases, bool hash,
	       char *err, size_t errlen)
{
	*c = (struct chain){0};
	struct chain_link *base = xcalloc((size_t)nbases + 1, sizeof(*base));
	int rc = 0;
	for (int i = 0; i < nbases; i++)
		base[i].fd = -1;
	for (int i = 0; i < nbases && rc == 0; i++)
		rc = open_link(&base[i], bases[i], hash, err, errlen);
	c->links = xcalloc(1, sizeof(*c->links));
	if (rc == 0) {
		rc = open_link(&c->links[0], path, hash, err, errlen);
		c->n = 1;
	}
	while (rc == 0 && c->links[c->n - 1].incremental) {
		struct chain_link *child = &c->links[c->n - 1];
		if (c->n > INC_MAX_DEPTH) {
			rc = errbuf_set(err, errlen, "%s: a chain deeper than %d", path,
					INC_MAX_DEPTH);
			break;
		}
		struct chain_link parent = {.fd = -1};
		rc = open_parent(child, path, base, nbases, hash, &parent, err, errlen);
		c->links = xrealloc(c->links, ((size_t)c->n + 1) * sizeof(*c->links));
		c->links[c->n++] = parent;
		if (rc == 0)
			rc = check_link(&c->links[c->n - 2], &c->links[c->n - 1], err, errlen);
	}
	for (int k = 0; k < c->n && rc == 0; k++)
		for (int id = 1; id < 255; id++)
			if (c->links[k].r.devs[id].name)
				c->links[k].map[id] = device_id(&c->links[0].r,
								c->links[k].r.devs[id].name);
	for (int i = 0; i < nbases; i++)
		close_link(&base[i]);
	free(base);
	if (rc < 0)
		chain_close(c);
	return rc;
}

int chain_check_sum(struct chain_link *l, char *err, size_t errlen)
{
	if (!l->hashed)
		return 0;
	if (instream_sha256(l->r.in, l->got) < 0)
		return errbuf_set(err, errlen, "%s: %s", l->path, instream_error(l->r.in));
	if (strcmp(l->got, l->want) != 0)
		return errbuf_set(err, errlen, "%s: sha256 mismatch (%s says %s, archive is %s)",
				  l->path, l->sum_path, l->want, l->got);
	return 0;
}

int chain_run_link(struct chain_link *l, vma_cluster_fn fn, vma_part_fn done, void *opaque,
		   char *err, size_t errlen)
{
	if (vma_reader_run(&l->r, fn, done, opaque) != 0)
		return errbuf_set(err, errlen, "%s: %s", l->path, l->r.err);
	return chain_check_sum(l, err, errlen);
}

void chain_release(struct chain *c, int i)
{
	struct chain_link *l = &c->links[i];
	l->kept_size = l->r.header_size;
	l->kept_header = xmalloc(l->kept_size);
	memcpy(l->kept_header, l->r.header, l->kept_size);
	struct instream *in = l->r.in;
	vma_reader_close(&l->r);
	instream_free(in);
	l->r.in = NULL;
	l->hashed = false;
}

int chain_read(struct chain *c, const int **map, vma_cluster_fn fn, vma_part_fn done, void *opaque,
	       enum meter_mode mode, char *err, size_t errlen)
{
	for (int k = 0; k < c->n; k++) {
		struct chain_link *l = &c->links[k];
		bool full = k == c->n - 1;
		struct meter meter;
		*map = l->map;
		if (full) { /* the one link read whole, and the longest: the meter follows it */
			uint64_t total = 0;
			for (int id = 1; id < 255; id++)
				total += l->r.devs[id].size;
			meter_start(&meter, mode, total);
			l->r.meter = &meter;
		}
		if (chain_run_link(l, fn, done, opaque, err, errlen) < 0) {
			meter_break();
			return -1;
		}
		if (full) {
			meter_finish(&meter, l->r.stored_bytes + l->r.zero_bytes);
			l->r.meter = NULL;
		}
	}
	return 0;
}

int chain_reopen(struct chain *c, int i, char *err, size_t errlen)
{
	struct chain_link *l = &c->links[i];
	if (l->r.in)
		chain_release(c, i);
	uint32_t size = l->kept_size;
	uint8_t *header = l->kept_header;
	l->kept_header = NULL;
	int rc = 0;
	if (lseek(l->fd, l->start, SEEK_SET) != l->start)
		rc = errbuf_set(err, errlen, "%s: reading it again: %s", l->path, strerror(errno));
	if (rc == 0)
		rc = read_header(l, false, err, errlen);
	if (rc == 0 && (l->r.header_size != size || memcmp(l->r.header, header, size) != 0))
		rc = errbuf_set(err, errlen, "%s: changed between its verification and the restore",
				l->path);
	free(header);
	return rc;
}

void chain_close(struct chain *c)
{
	for (int i = 0; i < c->n; i++)
		close_link(&c->links[i]);
	free(c->links);
	*c = (struct chain){0};
}

bool chain_take(struct chain_taken *t, const struct vma_reader *newest, int dev_id,
		uint64_t cluster)
{
	if (!t->bits[dev_id])
		t->bits[dev_id] = xcalloc(newest->devs[dev_id].clusters / 8 + 1, 1);
	uint8_t *byte = &t->bits[dev_id][cluster / 8], bit = (uint8_t)(1u << (cluster % 8));
	if (*byte & bit)
		return false;
	*byte |= bit;
	return true;
}

void chain_taken_free(struct chain_taken *t)
{
	for (int id = 0; id < 256; id++)
		free(t->bits[id]);
}
