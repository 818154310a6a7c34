/* An output byte stream, optionally compressed in-process: zstd or xz with worker threads, gzip
 * (zlib) or lzo (lzop's format) in the caller's thread. */
#ifndef VZ_SINK_H
#define VZ_SINK_H
#include <stddef.h>
#include <stdint.h>

enum sink_codec { SINK_PLAIN, SINK_ZSTD, SINK_XZ, SINK_GZIP, SINK_LZO };

struct sink;

/* Writes to fd (not closed by the sink). level < 0 means the codec's default; threads >= 1.
 * Returns NULL with a message in errbuf on failure. */
struct sink *sink_open(int fd, enum sink_codec codec, int level, int threads, char *errbuf,
		       size_t errlen);
/* For a file the caller created for this output alone, before the first write. Uncompressed
 * output only (a compressed one is left alone: its codec's threads overlap already):
 * - written with direct I/O (O_DIRECT) where the file system allows it, in whole 4 KiB
 *   blocks, so that an archive of many GiB does not pass through the page cache (a copy per
 *   byte, then all of it written back at the final fsync); writes direct I/O cannot take
 *   quietly go through the page cache instead;
 * - by a thread of its own (write-behind), so that the caller goes on while a write waits for
 *   the disk. sink_free stops it: call it before the file is closed or removed.
 * Never for an inherited descriptor: the O_DIRECT flag is shared with its other users. And
 * not for a pipe or /dev/null, which take the bytes at once: there the thread would only cost
 * the cache its one hot buffer. 0, or -1 with the reason in err. */
int sink_to_own_file(struct sink *s, char *err, size_t errlen);
/* From here on (before the first write), every byte written out is hashed with SHA-256
 * (sha256.h). 0, or -1 with the reason in err. */
int sink_hash(struct sink *s, char *err, size_t errlen);
/* After sink_finish: the SHA-256 of everything written since sink_hash, in lowercase hex, as
 * sha256sum prints it. Once only. */
#define SINK_SHA256_HEX 65
void sink_sha256(struct sink *s, char hex[SINK_SHA256_HEX]);
/* 0 on success, -1 with sink_error() set. */
int sink_write(struct sink *s, const void *buf, size_t len);
/* As sink_write, but with write-behind the sink may keep buf to write it later: 1 when it does,
 * and then the caller leaves buf alone until sink_reclaim(buf) has returned 0; 0 when buf is
 * free again at once; -1 with sink_error() set. */
int sink_write_held(struct sink *s, const void *buf, size_t len);
/* Waits until buf, given to sink_write_held, is written (at once without write-behind). 0, or
 * -1 with sink_error() set. */
int sink_reclaim(struct sink *s, const void *buf);
/* Ends the compressed stream and writes out everything pending; the fd stays open. */
int sink_finish(struct sink *s);
const char *sink_error(const struct sink *s);
uint64_t sink_bytes_in(const struct sink *s);
uint64_t sink_bytes_out(const struct sink *s);
void sink_free(struct sink *s);

/* Parses "zstd", "zstd:LEVEL", "xz", "xz:LEVEL", "gzip", "gzip:LEVEL", "lzo" or "none", and
 * loads the codec's library.
 * Returns 0, or -1: err is empty when spec is invalid, else says why the library cannot be
 * loaded. */
int sink_parse_codec(const char *spec, enum sink_codec *codec, int *level, char *err,
		     size_t errlen);

/* write(2) until everything is written; retries on EINTR and waits out EAGAIN. */
int write_all(int fd, const void *buf, size_t len);

#endif
