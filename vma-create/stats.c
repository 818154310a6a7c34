/* vma-create --stats: one JSON object on one line, keys in this order, all numbers integers:
 * {"devices":[{"name":"drive-scsi0","size":S,"zeros":Z,"saved":D},...],
 *  "size":S,"zeros":Z,"saved":D,"vma_bytes":V,"archive_bytes":A,"elapsed_ms":T,
 *  "sha256":"HEX"}
 * size, zeros and saved are the figures of -v's "image" lines (saved: the bytes received that
 * are not zero, for an incremental archive only those of the clusters it has); the totals sum
 * the devices;
 * sha256 is that of the archive_bytes written, as sha256sum prints it. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "stats.h"

bool stats_name_ok(const char *name)
{
	json_t *s = json_string(name);
	bool ok = s != NULL;

	json_decref(s);
	return ok;
}

char *stats_json(const struct vma_writer *w, const struct sink *s, double elapsed,
		 const char *sha256)
{
	struct vma_device_stats all = vma_writer_stats(w, 0);
	json_t *devices = json_array(), *root;
	char *text, *line = NULL;

	for (int i = 1; devices && i <= vma_writer_device_count(w); i++) {
		struct vma_device_stats d = vma_writer_stats(w, i);

		if (json_array_append_new(
			    devices,
			    json_pack("{s:s, s:I, s:I, s:I}", "name", d.name, "size",
				      (json_int_t)d.size, "zeros", (json_int_t)d.zero_bytes,
				      "saved", (json_int_t)(d.transferred - d.zero_bytes))) < 0) {
			json_decref(devices);
			devices = NULL;
		}
	}
	/* "o" takes devices over, also when json_pack fails. */
	root = json_pack("{s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "devices", devices, "size",
			 (json_int_t)all.size, "zeros", (json_int_t)all.zero_bytes, "saved",
			 (json_int_t)(all.transferred - all.zero_bytes), "vma_bytes",
			 (json_int_t)sink_bytes_in(s), "archive_bytes",
			 (json_int_t)sink_bytes_out(s), "elapsed_ms", (json_int_t)(elapsed * 1000),
			 "sha256", sha256);
	text = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(root);
	if (text && asprintf(&line, "%s\n", text) < 0)
		line = NULL;
	free(text);
	return line;
}
