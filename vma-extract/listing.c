/* The listings of `vma-extract -l` and `-l --json` (and the summary of `-t -v`). */
#include <err.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <uuid/uuid.h>

#include "exitcode.h"
#include "listing.h"

char *vma_listing(const struct vma_reader *r)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		err(EXIT_FAIL, "out of memory");
	for (int i = 0; i < r->nconfigs; i++)
		fprintf(f, "CFG: size: %u name: %s\n", r->configs[i].len, r->configs[i].name);
	for (int id = 1; id < 255; id++)
		if (r->devs[id].name)
			fprintf(f, "DEV: dev_id=%d size: %llu devname: %s\n", id,
				(unsigned long long)r->devs[id].size, r->devs[id].name);
	/* ctime() ends with a newline; for a time no calendar reaches it is NULL. */
	const char *when = ctime(&r->ctime);
	if (when)
		fprintf(f, "CTIME: %s", when);
	else
		fprintf(f, "CTIME: %lld\n", (long long)r->ctime);
	if (fclose(f) != 0)
		err(EXIT_FAIL, "out of memory");
	return text;
}

static unsigned link_depth(const struct chain_link *l) { return l->incremental ? l->inc.depth : 0; }

char *vma_chain_listing(const struct chain *c)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		err(EXIT_FAIL, "out of memory");
	for (int i = 0; c->n > 1 && i < c->n; i++) {
		char uuid[37];
		uuid_unparse_lower(c->links[i].r.uuid, uuid);
		fprintf(f, "CHAIN: depth: %u uuid: %s file: %s\n", link_depth(&c->links[i]), uuid,
			c->links[i].path);
	}
	if (fclose(f) != 0)
		err(EXIT_FAIL, "out of memory");
	return text;
}

/* The "chain" list of the JSON listing. */
static json_t *chain_json(const struct chain *c)
{
	json_t *links = json_array();
	for (int i = 0; i < c->n; i++) {
		char uuid[37];
		uuid_unparse_lower(c->links[i].r.uuid, uuid);
		json_t *link = json_pack("{s:s, s:s, s:i}", "file", c->links[i].path, "uuid", uuid,
					 "depth", (int)link_depth(&c->links[i]));
		if (json_array_append_new(links, link) < 0) {
			json_decref(links);
			return NULL;
		}
	}
	return links;
}

char *vma_listing_json(const struct vma_reader *r, const struct chain *c, char *why, size_t whylen)
{
	char uuid[37];
	uuid_unparse_lower(r->uuid, uuid);
	json_t *configs = json_array(), *devices = json_array();
	/* json_pack fails on a name that is not UTF-8: say so rather than drop the entry. */
	for (int i = 0; i < r->nconfigs; i++)
		if (json_array_append_new(configs,
					  json_pack("{s:s, s:I}", "name", r->configs[i].name,
						    "size", (json_int_t)r->configs[i].len)) < 0) {
			snprintf(why, whylen,
				 "config %d: the name is not UTF-8; JSON cannot hold it (use -l)",
				 i);
			goto fail;
		}
	for (int id = 1; id < 255; id++)
		if (r->devs[id].name &&
		    json_array_append_new(devices,
					  json_pack("{s:i, s:s, s:I}", "dev_id", id, "name",
						    r->devs[id].name, "size",
						    (json_int_t)r->devs[id].size)) < 0) {
			snprintf(why, whylen,
				 "device %d: the name is not UTF-8; JSON cannot hold it (use -l)",
				 id);
			goto fail;
		}
	json_t *root = json_pack("{s:s, s:I, s:o, s:o}", "uuid", uuid, "ctime",
				 (json_int_t)r->ctime, "configs", configs, "devices", devices);
	if (root && c && c->n > 1) {
		json_t *links = chain_json(c);
		if (!links || json_object_set_new(root, "chain", links) < 0) {
			json_decref(root);
			snprintf(why, whylen,
				 "a file name of the chain is not UTF-8; JSON cannot "
				 "hold it (use -l)");
			return NULL;
		}
	}
	char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(root);
	if (!text)
		snprintf(why, whylen, "cannot build the JSON listing");
	return text;
fail:
	json_decref(configs);
	json_decref(devices);
	return NULL;
}
