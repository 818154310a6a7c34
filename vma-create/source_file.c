/* Regular files and block devices: holes found with SEEK_DATA/SEEK_HOLE, data read with
 * large pread()s. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "source.h"
#include "vma.h"
#include "xalloc.h"

struct file_source {
	struct source s;
	int fd;
	bool seek_data; /* false once SEEK_DATA turned out unsupported */
};

static int file_extent(struct source *src, uint64_t off, uint64_t *len, bool *zero)
{
	struct file_source *f = (struct file_source *)src;
	*zero = false;
	*len = src->size - off;
	if (!f->seek_data)
		return 0;
	off_t data = lseek(f->fd, (off_t)off, SEEK_DATA);
	if (data < 0 && errno == ENXIO) { /* only a hole up to the end, or off is past the end */
		/* A file cut short since it was opened also gives ENXIO: its lost tail must not be
		 * stored as zeros. */
		struct stat st;
		if (fstat(f->fd, &st) == 0 && (uint64_t)st.st_size < src->size) {
			char now[32], was[32];
			vma_render_bytes(now, sizeof(now), (double)st.st_size, 1);
			vma_render_bytes(was, sizeof(was), (double)src->size, 1);
			snprintf(src->err, sizeof(src->err),
				 "at offset %llu: file shrank while being read (%s of %s left)",
				 (unsigned long long)off, now, was);
			return -1;
		}
		*zero = true;
		return 0;
	}
	if (data < 0) {
		f->seek_data = false; /* e.g. EINVAL: this file system cannot tell */
		return 0;
	}
	if ((uint64_t)data > off) {
		*zero = true;
		*len = ((uint64_t)data < src->size ? (uint64_t)data : src->size) - off;
		return 0;
	}
	off_t hole = lseek(f->fd, (off_t)off, SEEK_HOLE);
	if (hole > (off_t)off && (uint64_t)hole < src->size)
		*len = (uint64_t)hole - off;
	return 0;
}

static int file_read(struct source *src, uint64_t off, void *buf, size_t len)
{
	struct file_source *f = (struct file_source *)src;
	char *p = buf;
	while (len > 0) {
		ssize_t n = pread(f->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(src->err, sizeof(src->err), "read at offset %llu: %s",
				 (unsigned long long)off, strerror(errno));
			return -1;
		}
		if (n == 0) {
			snprintf(src->err, sizeof(src->err),
				 "read at offset %llu: file shrank while being read",
				 (unsigned long long)off);
			return -1;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static void file_close(struct source *src)
{
	struct file_source *f = (struct file_source *)src;
	close(f->fd);
	free(f);
}

struct source *source_open_file(const char *spec, char *errbuf, size_t errlen)
{
	struct stat st;
	uint64_t size;
	unsigned char magic[4];
	int fd = open(spec, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(errbuf, errlen, "%s", strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0) {
		snprintf(errbuf, errlen, "%s", strerror(errno));
		goto bad;
	}
	if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
			snprintf(errbuf, errlen, "cannot get the block device's size: %s",
				 strerror(errno));
			goto bad;
		}
	} else {
		snprintf(errbuf, errlen, "not a regular file, a block device or an NBD URI");
		goto bad;
	}
	if (pread(fd, magic, 4, 0) == 4 && memcmp(magic, "QFI\xfb", 4) == 0) {
		snprintf(errbuf, errlen,
			 "is a qcow2 image, and its bytes would be stored as they are; export it "
			 "raw with 'qemu-nbd -r -f qcow2 -k SOCKET %s' and give "
			 "'nbd+unix:///?socket=SOCKET' instead",
			 spec);
		goto bad;
	}
	if (size == 0) {
		snprintf(errbuf, errlen, "is empty (size 0)");
		goto bad;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	struct file_source *f = xcalloc(1, sizeof(*f));
	f->fd = fd;
	f->seek_data = S_ISREG(st.st_mode);
	f->s.spec = spec;
	f->s.size = size;
	f->s.read_clusters = 4; /* 256 KiB */
	f->s.extent = file_extent;
	f->s.read = file_read;
	f->s.close = file_close;
	return &f->s;
bad:
	close(fd);
	return NULL;
}
