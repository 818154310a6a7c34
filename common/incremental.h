/* The config blob that makes a VMA archive an incremental one (man vma-create, INCREMENTAL
 * ARCHIVES): which archive it builds on (parent), which full its chain starts from, how deep
 * it is, and for each device its size and the dirty bitmap its clusters came from. Its
 * devices hold only the clusters written since the parent; a cluster it lacks is the
 * parent's. */
#ifndef VZ_INCREMENTAL_H
#define VZ_INCREMENTAL_H
#include <stddef.h>
#include <stdint.h>

#define INC_BLOB_NAME "vzdump-incremental.json"
#define INC_FORMAT "vzdump-qemu-incremental"
#define INC_VERSION 1
#define INC_MAX_DEPTH 1000 /* a chain longer than this is a mistake, not a schedule */

struct inc_device {
	char *name;
	uint64_t size;
	char *bitmap;
};

struct inc_info {
	uint8_t parent_uuid[16];
	char *parent_file; /* a file name in the parent's folder, without '/' */
	uint8_t full_uuid[16];
	unsigned depth; /* 1 for the first incremental after the full */
	int ndevices;
	struct inc_device *devices;
};

/* Parses and checks the blob. 0, or -1 with why in err (nothing to free then). */
int inc_info_parse(const void *data, size_t len, struct inc_info *out, char *err, size_t errlen);
void inc_info_free(struct inc_info *info);
/* The device of that name, or NULL. */
const struct inc_device *inc_info_device(const struct inc_info *info, const char *name);

#endif
