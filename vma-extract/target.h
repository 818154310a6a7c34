/* Where a device named on the command line (name=target) is restored to: a new file, created
 * sparse under a temporary name and renamed at the end; an existing file (--force) or a block
 * device, written in place; or an NBD export, written through libnbd, loaded when first needed.
 * Blocks that are zero in the archive become holes in a new file and are zeroed explicitly in
 * everything else, so that nothing of the target's old content survives. */
#ifndef VMA_EXTRACT_TARGET_H
#define VMA_EXTRACT_TARGET_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "outfile.h"

enum target_kind { TARGET_NEW_FILE, TARGET_FILE, TARGET_BLOCK, TARGET_NBD };

struct nbd_target;

struct target {
	const char *spec; /* as given, for messages */
	enum target_kind kind;
	int fd;             /* files and block devices, or -1 */
	struct outfile out; /* TARGET_NEW_FILE */
	uint64_t size;      /* an existing target's size */
	dev_t dev;          /* an existing file's or block device's identity */
	ino_t ino;
	struct nbd_target *nbd;
};

/* Opens spec for writing, without writing anything: an NBD export (connected), a block device
 * (opened O_EXCL, so not one that is mounted), an existing regular file (only when force), or
 * else the name of a new file, created later by target_create. 0, or -1 with the reason in err
 * and the exit status in *status (EXIT_PEER: an NBD server that cannot be reached). */
int target_open(struct target *t, const char *spec, bool force, int *status, char *err,
		size_t errlen);
/* TARGET_NEW_FILE: creates the temporary file next to the target's name, sized. */
int target_create(struct target *t, uint64_t size, char *err, size_t errlen);
/* Makes len bytes at off read as zeros: a hole where the target can have one. */
int target_zero(struct target *t, uint64_t off, uint64_t len, char *err, size_t errlen);
/* NBD: starts writing len bytes at off from buf, which must stay unchanged until
 * target_nbd_wait returns. */
int target_nbd_write(struct target *t, const void *buf, size_t len, uint64_t off, char *err,
		     size_t errlen);
/* NBD: waits until every write and zero started so far has been done. */
int target_nbd_wait(struct target *t, char *err, size_t errlen);
/* Flushes what was written to stable storage (fsync, NBD flush); a new file is then renamed to
 * its name, never replacing a file that has appeared there meanwhile. */
int target_finish(struct target *t, char *err, size_t errlen);
/* Closes the target; a new file's temporary, if still there, is removed. */
void target_close(struct target *t);

#endif
