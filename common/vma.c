/* Small helpers of the VMA format used by both the writer and the reader. */
#include <stdio.h>
#include <string.h>

#include "vma.h"

const char *vma_name_defect(const char *name)
{
	if (name[0] == '\0')
		return "empty name";
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return "name is . or ..";
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (*p == '/')
			return "name contains '/'";
		if (*p < 0x20 || *p == 0x7f)
			return "name contains a control character";
	}
	return NULL;
}

bool vma_block_is_zero(const uint8_t *p)
{
	/* Compare the block with itself shifted by 16 bytes once the first 16 are known zero:
	 * memcmp is vectorised, a byte loop is not. */
	static const uint8_t zero16[16];
	return memcmp(p, zero16, 16) == 0 && memcmp(p, p + 16, VMA_BLOCK_SIZE - 16) == 0;
}

void vma_render_bytes(char *buf, size_t len, double bytes, int decimals)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	size_t u = 0;
	while (bytes >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		bytes /= 1024;
		u++;
	}
	snprintf(buf, len, "%.*f %s", decimals, bytes, units[u]);
}

void vma_render_duration(char *buf, size_t len, double seconds)
{
	long s = (long)seconds, h = s / 3600, m = s / 60 % 60;
	if (h)
		snprintf(buf, len, "%ldh %ldm %lds", h, m, s % 60);
	else if (m)
		snprintf(buf, len, "%ldm %lds", m, s % 60);
	else
		snprintf(buf, len, "%lds", s);
}
