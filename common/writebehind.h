/* Write-behind: buffers handed to an output thread, which writes them in order while the caller
 * goes on filling the next one. The writer of a live backup receives from QEMU on one thread;
 * with this, the archive's direct-I/O writes, which wait for the disk, no longer stop it
 * receiving. */
#ifndef VZ_WRITEBEHIND_H
#define VZ_WRITEBEHIND_H
#include <stddef.h>

struct writebehind;

/* Writes all of buf, on the output thread: 0, or -1 after recording why in ctx. After the
 * first -1 it is not called again. */
typedef int (*writebehind_fn)(void *ctx, const void *buf, size_t len);

/* Starts the output thread. NULL with the reason in err when it cannot. */
struct writebehind *writebehind_start(writebehind_fn write, void *ctx, char *err, size_t errlen);
/* Queues buf for writing (waiting while the queue is full). The caller leaves buf alone until
 * writebehind_wait says it is written. 0, or -1 once a write has failed. */
int writebehind_submit(struct writebehind *wb, const void *buf, size_t len);
/* Waits until no queued or running write uses buf. 0, or -1 once a write has failed. */
int writebehind_wait(struct writebehind *wb, const void *buf);
/* Waits until everything queued is written. 0, or -1 once a write has failed. */
int writebehind_drain(struct writebehind *wb);
/* Stops the thread after the write it is doing (what is still queued is dropped: call
 * writebehind_drain first to keep it) and frees wb. NULL is fine. */
void writebehind_stop(struct writebehind *wb);

#endif
