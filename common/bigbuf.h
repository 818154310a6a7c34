/* Buffers of megabytes that the data path streams through (the extent being written): mapped
 * on their own, 2 MiB-aligned and backed by transparent huge pages where the kernel allows, so
 * that filling them costs two page faults instead of a thousand and their TLB entries stay few.
 * The memory is zeroed, as from calloc. */
#ifndef VZ_BIGBUF_H
#define VZ_BIGBUF_H
#include <stddef.h>

/* NULL (errno set) when no memory is left. */
void *bigbuf_alloc(size_t size);
void bigbuf_free(void *buf, size_t size);

#endif
