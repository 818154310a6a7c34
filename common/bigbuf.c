/* Huge-page-backed data buffers (bigbuf.h). */
#include <stdint.h>
#include <sys/mman.h>

#include "bigbuf.h"

#define HUGE_PAGE ((size_t)2 << 20)

static size_t rounded(size_t size) { return (size + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE; }

void *bigbuf_alloc(size_t size)
{
	size_t len = rounded(size);
	/* One huge page more than needed, so that an aligned start can be cut out of it. */
	uint8_t *map = mmap(NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return NULL;
	uintptr_t start = ((uintptr_t)map + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
	uint8_t *buf = (uint8_t *)start;
	if (buf > map)
		munmap(map, (size_t)(buf - map));
	munmap(buf + len, (size_t)(map + HUGE_PAGE - buf));
	/* Advice only: a kernel without transparent huge pages maps small ones. */
	(void)madvise(buf, len, MADV_HUGEPAGE);
	return buf;
}

void bigbuf_free(void *buf, size_t size)
{
	if (buf)
		munmap(buf, rounded(size));
}
