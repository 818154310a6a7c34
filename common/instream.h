/* An input byte stream that is decompressed in-process when it starts with the zstd, xz, gzip or
 * lzop magic. */
#ifndef VZ_INSTREAM_H
#define VZ_INSTREAM_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct instream;

/* Reads from fd (not closed by the stream). NULL with a message in errbuf on failure. */
struct instream *instream_open(int fd, char *errbuf, size_t errlen);
/* Reads up to len bytes; fewer only at the end of the stream. -1 on error (instream_error). */
ssize_t instream_read(struct instream *s, void *buf, size_t len);
const char *instream_error(const struct instream *s);
/* Called right after instream_open, before any read: from the first byte on, the input is
 * hashed with SHA-256 (sha256.h) as it is read from fd (the raw bytes, compressed or not). 0,
 * or -1 with the reason in err. */
int instream_hash(struct instream *s, char *err, size_t errlen);
/* After the last read: reads what is left of the input to its end, then gives the SHA-256 of
 * all of it in lowercase hex, as sha256sum prints it. 0, or -1 (instream_error). */
#define INSTREAM_SHA256_HEX 65
int instream_sha256(struct instream *s, char hex[INSTREAM_SHA256_HEX]);
/* Bytes of (decompressed) data delivered so far, those of a read that then failed included:
 * where a truncated or corrupt stream ended. */
uint64_t instream_offset(const struct instream *s);
/* The codec in use: "none", "zstd", "xz", "gzip" or "lzo". */
const char *instream_codec(const struct instream *s);
/* From now on, every byte instream_read delivers is also written to fd (vma-extract --serve's
 * decompressed copy of an archive that cannot be read at random); a write that fails fails the
 * read. */
void instream_tee(struct instream *s, int fd);
void instream_free(struct instream *s);

#endif
