/* fuzz-sources: vma-extract/reader.c vma-extract/listing.c */
/* The VMA reader of vma-extract, through the decompressing input (plain, zstd, xz, gzip), as
 * `vma-extract -l`, `-l --json` and `-t -v` use them: open and list the header, then read and
 * check every extent with the coverage check on. */
#include <stdlib.h>
#include <unistd.h>

#include "instream.h"
#include "listing.h"
#include "reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[256];
	int fd = fuzz_memfd(data, size);
	struct instream *in = instream_open(fd, why, sizeof(why));
	if (!in) {
		close(fd);
		return 0;
	}
	struct vma_reader r;
	if (vma_reader_open(&r, in) == 0) {
		free(vma_listing(&r));
		free(vma_listing_json(&r, NULL, why, sizeof(why)));
		vma_reader_cover_all(&r);
		if (vma_reader_run(&r, NULL, NULL, NULL) == 0)
			free(vma_listing(&r));
	}
	vma_reader_close(&r);
	instream_free(in);
	close(fd);
	return 0;
}
