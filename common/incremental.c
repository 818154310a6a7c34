#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "errbuf.h"
#include "incremental.h"
#include "vma.h"
#include "xalloc.h"

#define MAX_BITMAP_NAME 1023 /* QEMU's own limit for a dirty bitmap's name */

static int get_uuid(json_t *obj, const char *where, uint8_t out[16], char *err, size_t errlen)
{
	const char *s = json_string_value(json_object_get(obj, "uuid"));
	if (!s || strlen(s) != 36 || uuid_parse(s, out) != 0)
		return errbuf_set(err, errlen, "%s.uuid: not a uuid", where);
	return 0;
}

static int get_device(json_t *d, int i, struct inc_device *out, char *err, size_t errlen)
{
	const char *name = json_string_value(json_object_get(d, "name"));
	json_t *size = json_object_get(d, "size");
	const char *bitmap = json_string_value(json_object_get(d, "bitmap"));
	if (!name || vma_name_defect(name))
		return errbuf_set(err, errlen, "devices[%d].name: not a device name", i);
	if (!json_is_integer(size) || json_integer_value(size) <= 0)
		return errbuf_set(err, errlen, "devices[%d].size: not a positive integer", i);
	if (!bitmap || !bitmap[0] || strlen(bitmap) > MAX_BITMAP_NAME)
		return errbuf_set(err, errlen, "devices[%d].bitmap: not a bitmap name", i);
	*out = (struct inc_device){xstrdup(name), (uint64_t)json_integer_value(size),
				   xstrdup(bitmap)};
	return 0;
}

static int parse_object(json_t *root, struct inc_info *out, char *err, size_t errlen)
{
	const char *format = json_string_value(json_object_get(root, "format"));
	json_t *version = json_object_get(root, "version");
	json_t *parent = json_object_get(root, "parent");
	json_t *depth = json_object_get(root, "depth");
	json_t *devices = json_object_get(root, "devices");
	if (!format || strcmp(format, INC_FORMAT) != 0)
		return errbuf_set(err, errlen, "format: not \"%s\"", INC_FORMAT);
	if (!json_is_integer(version) || json_integer_value(version) != INC_VERSION)
		return errbuf_set(err, errlen, "version: not %d (a newer vma-create wrote it?)",
				  INC_VERSION);
	if (get_uuid(parent, "parent", out->parent_uuid, err, errlen) < 0 ||
	    get_uuid(json_object_get(root, "full"), "full", out->full_uuid, err, errlen) < 0)
		return -1;
	const char *file = json_string_value(json_object_get(parent, "file"));
	if (!file || vma_name_defect(file))
		return errbuf_set(err, errlen, "parent.file: not a file name");
	if (!json_is_integer(depth) || json_integer_value(depth) < 1 ||
	    json_integer_value(depth) > INC_MAX_DEPTH)
		return errbuf_set(err, errlen, "depth: not a number from 1 to %d", INC_MAX_DEPTH);
	if (!json_is_array(devices) || json_array_size(devices) > VMA_MAX_DEVICES)
		return errbuf_set(err, errlen, "devices: not an array of at most %d devices",
				  VMA_MAX_DEVICES);
	out->parent_file = xstrdup(file);
	out->depth = (unsigned)json_integer_value(depth);
	out->devices = xcalloc(json_array_size(devices) + 1, sizeof(*out->devices));
	for (size_t i = 0; i < json_array_size(devices); i++) {
		struct inc_device *d = &out->devices[i];
		if (get_device(json_array_get(devices, i), (int)i, d, err, errlen) < 0)
			return -1;
		out->ndevices++;
		if (inc_info_device(out, d->name) != d)
			return errbuf_set(err, errlen, "devices[%zu].name: \"%s\" twice", i,
					  d->name);
	}
	return 0;
}

int inc_info_parse(const void *data, size_t len, struct inc_info *out, char *err, size_t errlen)
{
	json_error_t jerr;
	*out = (struct inc_info){0};
	json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return errbuf_set(err, errlen, "not JSON: %s", jerr.text);
	int rc = json_is_object(root) ? parse_object(root, out, err, errlen)
				      : errbuf_set(err, errlen, "not a JSON object");
	json_decref(root);
	if (rc < 0)
		inc_info_free(out);
	return rc;
}

void inc_info_free(struct inc_info *info)
{
	for (int i = 0; i < info->ndevices; i++) {
		free(info->devices[i].name);
		free(info->devices[i].bitmap);
	}
	free(info->devices);
	free(info->parent_file);
	*info = (struct inc_info){0};
}

const struct inc_device *inc_info_device(const struct inc_info *info, const char *name)
{
	for (int i = 0; i < info->ndevices; i++)
		if (strcmp(info->devices[i].name, name) == 0)
			return &info->devices[i];
	return NULL;
}
