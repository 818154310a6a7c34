/* fuzz-sources: */
/* The incremental blob (common/incremental.c) as vma-create --incremental and every reader of a
 * chain take it from an archive: refused with a message, or parsed into something that holds
 * what the readers rely on (a depth from 1 to INC_MAX_DEPTH, at most VMA_MAX_DEVICES devices
 * with valid, distinct names, positive sizes, a parent file name without '/'), and that parses
 * to the same again once written back as JSON. */
#include <jansson.h>
#include <string.h>
#include <uuid/uuid.h>

#include "incremental.h"
#include "vma.h"

static char *write_back(const struct inc_info *info)
{
	char parent[37], full[37];
	uuid_unparse_lower(info->parent_uuid, parent);
	uuid_unparse_lower(info->full_uuid, full);
	json_t *devices = json_array();
	for (int i = 0; i < info->ndevices; i++)
		json_array_append_new(devices,
				      json_pack("{s:s, s:I, s:s}", "name", info->devices[i].name,
						"size", (json_int_t)info->devices[i].size, "bitmap",
						info->devices[i].bitmap));
	json_t *root = json_pack("{s:s, s:i, s:{s:s, s:s}, s:{s:s}, s:i, s:o}", "format",
				 INC_FORMAT, "version", INC_VERSION, "parent", "uuid", parent,
				 "file", info->parent_file, "full", "uuid", full, "depth",
				 (int)info->depth, "devices", devices);
	if (!root)
		abort(); /* every string parsed was UTF-8 */
	char *text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return text;
}

static void check(const struct inc_info *info)
{
	if (info->depth < 1 || info->depth > INC_MAX_DEPTH || info->ndevices < 0 ||
	    info->ndevices > VMA_MAX_DEVICES || strchr(info->parent_file, '/'))
		abort();
	for (int i = 0; i < info->ndevices; i++) {
		const struct inc_device *d = &info->devices[i];
		if (vma_name_defect(d->name) || d->size == 0 || !d->bitmap[0] ||
		    inc_info_device(info, d->name) != d)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct inc_info info, again;
	char err[512] = "";
	if (inc_info_parse(data, size, &info, err, sizeof(err)) < 0) {
		if (!err[0])
			abort(); /* a refusal always says why */
		return 0;
	}
	check(&info);
	char *text = write_back(&info);
	if (inc_info_parse(text, strlen(text), &again, err, sizeof(err)) < 0)
		abort();
	if (memcmp(info.parent_uuid, again.parent_uuid, 16) != 0 ||
	    memcmp(info.full_uuid, again.full_uuid, 16) != 0 || info.depth != again.depth ||
	    strcmp(info.parent_file, again.parent_file) != 0 || info.ndevices != again.ndevices)
		abort();
	for (int i = 0; i < info.ndevices; i++)
		if (strcmp(info.devices[i].name, again.devices[i].name) != 0 ||
		    info.devices[i].size != again.devices[i].size ||
		    strcmp(info.devices[i].bitmap, again.devices[i].bitmap) != 0)
			abort();
	free(text);
	inc_info_free(&info);
	inc_info_free(&again);
	return 0;
}
