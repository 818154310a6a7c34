/* SHA-256 for the archives' .sha256 files, through libcrypto (OpenSSL), which uses the CPU's
 * SHA extensions where it has them: 1.3 GB/s on the 2-core development machine, against
 * 0.25 GB/s for libmd's portable code, and the live writer hashes every byte of every
 * archive. libcrypto is loaded with dlopen when a hash is first asked for (dynlib.h): runs
 * that hash nothing never map it. */
#ifndef VZ_SHA256_H
#define VZ_SHA256_H
#include <stddef.h>

#define SHA256_HEX_SIZE 65 /* 64 hex digits and the NUL */

struct sha256 {
	void *ctx; /* libcrypto's EVP_MD_CTX */
};

/* 0, or -1 with the reason in err (libcrypto cannot be loaded, out of memory). */
int sha256_start(struct sha256 *h, char *err, size_t errlen);
void sha256_update(struct sha256 *h, const void *buf, size_t len);
/* The digest in lowercase hex; h is finished (and may be started again). */
void sha256_finish(struct sha256 *h, char hex[SHA256_HEX_SIZE]);
/* Releases an unfinished h; nothing for one never started or finished. */
void sha256_free(struct sha256 *h);

#endif
