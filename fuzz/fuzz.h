/* Included by the Makefile in front of every fuzz target (-include fuzz/fuzz.h): the entry point
 * libFuzzer calls, declared for -Wmissing-prototypes, and helpers the targets may share. */
#ifndef FUZZ_FUZZ_H
#define FUZZ_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A file descriptor, at offset 0, of an anonymous in-memory file holding the input: for the
 * project's readers that take a descriptor, as the tools hand them a file or stdin. Aborts if
 * the file cannot be made (a fault of the machine, not of the input). */
static inline int fuzz_memfd(const uint8_t *data, size_t size)
{
	int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	for (size_t done = 0; done < size;) {
		ssize_t n = write(fd, data + done, size - done);
		if (n <= 0)
			abort();
		done += (size_t)n;
	}
	if (lseek(fd, 0, SEEK_SET) != 0)
		abort();
	return fd;
}

#endif
