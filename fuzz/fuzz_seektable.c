/* fuzz-sources: */
/* zstd's seek table (common/seektable.c) at the end of a file, as vma-extract --serve reads a
 * .vma.zst: the table is either absent, refused with a message, or describes the file exactly
 * (its frames end where it begins, every offset found lies in the frame returned), and encoding
 * it again gives the file's own last bytes (but for the descriptor's two unused bits, which
 * the format says readers ignore). */
#include <string.h>

#include "seektable.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = fuzz_memfd(data, size);
	struct seektable t;
	char err[256] = "";
	int r = seektable_read(fd, size, &t, err, sizeof(err));
	close(fd);
	if (r < 0 && !err[0])
		abort(); /* a refusal always says why */
	if (r <= 0)
		return 0;
	uint8_t *table;
	size_t len = seektable_encode(&t, &table);
	if (len == 0 || t.c_total + len != size)
		abort();
	uint8_t descriptor = data[size - 5] & ~3u;
	if (memcmp(table, data + t.c_total, len - 5) != 0 || table[len - 5] != descriptor ||
	    memcmp(table + len - 4, data + size - 4, 4) != 0)
		abort();
	free(table);
	for (uint64_t probe = 0; probe < t.d_total; probe += 1 + probe / 2) {
		size_t i = seektable_find(&t, probe);
		const struct seek_frame *f = &t.frames[i];
		if (i >= t.count || probe < f->d_off || probe >= f->d_off + f->d_size)
			abort();
	}
	seektable_free(&t);
	return 0;
}
