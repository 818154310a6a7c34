/* fuzz-sources: */
/* lzop's format (common/lzop.c) through the decompressing input (common/instream.c), as
 * vma-extract reads a .vma.lzo: the whole stream, in reads of an odd size. The input is taken
 * as an lzop file, its magic put in front when it does not start with it. Then the other way
 * round: the input's bytes written by lzop.c's writer, as vma-create -z lzo does, must read
 * back unchanged. The fuzzing build does not compare lzop's checksums (fuzz/README.md). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "codecs.h"
#include "instream.h"
#include "lzop.h"

#define READ_SIZE 70001

static uint8_t readbuf[READ_SIZE];

/* Reads everything from the stream in fd: the bytes in out (up to cap of them), their count,
 * or -1 when the stream was refused. */
static ssize_t read_all(int fd, uint8_t *out, size_t cap)
{
	char why[256];
	struct instream *in = instream_open(fd, why, sizeof(why));
	if (!in)
		return -1;
	size_t total = 0;
	ssize_t n;
	while ((n = instream_read(in, readbuf, sizeof(readbuf))) > 0) {
		if (out && total + (size_t)n <= cap)
			memcpy(out + total, readbuf, (size_t)n);
		total += (size_t)n;
	}
	if (n == 0 && instream_offset(in) != total)
		abort(); /* the offset is what was delivered */
	instream_free(in);
	return n < 0 ? -1 : (ssize_t)total;
}

/* The input as lzop.c's writer writes it, in blocks of up to LZOP_BLOCK_SIZE. */
static void roundtrip(const uint8_t *data, size_t size)
{
	char err[256];
	static uint8_t work[LZO1X_1_MEM_COMPRESS];
	size_t cap = LZOP_HEADER_MAX +
		(size / LZOP_BLOCK_SIZE + 1) * LZOP_BLOCK_BOUND(LZOP_BLOCK_SIZE) + LZOP_END_LEN;
	uint8_t *enc = malloc(cap), *dec = malloc(size + 1);
	if (!enc || !dec || codec_load_lzo(err, sizeof(err)) < 0)
		abort();
	size_t len = lzop_put_header(enc);
	for (size_t off = 0; off < size; off += LZOP_BLOCK_SIZE) {
		size_t n = size - off < LZOP_BLOCK_SIZE ? size - off : LZOP_BLOCK_SIZE;
		size_t made = lzop_put_block(enc + len, data + off, n, work);
		if (made == 0)
			abort();
		len += made;
	}
	memset(enc + len, 0, LZOP_END_LEN);
	len += LZOP_END_LEN;
	int fd = fuzz_memfd(enc, len);
	if (read_all(fd, dec, size) != (ssize_t)size || (size && memcmp(dec, data, size) != 0))
		abort();
	close(fd);
	free(enc);
	free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd;
	if (size >= LZOP_MAGIC_LEN && memcmp(data, lzop_magic, LZOP_MAGIC_LEN) == 0) {
		fd = fuzz_memfd(data, size);
	} else {
		uint8_t *file = malloc(LZOP_MAGIC_LEN + size);
		if (!file)
			return 0;
		memcpy(file, lzop_magic, LZOP_MAGIC_LEN);
		if (size)
			memcpy(file + LZOP_MAGIC_LEN, data, size);
		fd = fuzz_memfd(file, LZOP_MAGIC_LEN + size);
		free(file);
	}
	(void)read_all(fd, NULL, 0);
	close(fd);
	roundtrip(data, size);
	return 0;
}
