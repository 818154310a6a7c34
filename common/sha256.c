/* SHA-256 through libcrypto's EVP interface (sha256.h). */
#include "sha256.h"

#include <openssl/evp.h>
#include <stdio.h>

#include "dynlib.h"

#define LIBCRYPTO_FUNCTIONS(X)                                                                     \
	X(EVP_MD_CTX_new)                                                                          \
	X(EVP_MD_CTX_free)                                                                         \
	X(EVP_sha256)                                                                              \
	X(EVP_DigestInit_ex)                                                                       \
	X(EVP_DigestUpdate)                                                                        \
	X(EVP_DigestFinal_ex)
DYNLIB_TABLE(libcrypto, "libcrypto.so.3", LIBCRYPTO_FUNCTIONS)

int sha256_start(struct sha256 *h, char *err, size_t errlen)
{
	h->ctx = NULL;
	if (libcrypto_load(err, errlen) < 0)
		return -1;
	EVP_MD_CTX *ctx = libcrypto.EVP_MD_CTX_new();
	if (!ctx || libcrypto.EVP_DigestInit_ex(ctx, libcrypto.EVP_sha256(), NULL) != 1) {
		libcrypto.EVP_MD_CTX_free(ctx);
		snprintf(err, errlen, "cannot start SHA-256 (libcrypto)");
		return -1;
	}
	h->ctx = ctx;
	return 0;
}

void sha256_update(struct sha256 *h, const void *buf, size_t len)
{
	libcrypto.EVP_DigestUpdate(h->ctx, buf, len);
}

void sha256_finish(struct sha256 *h, char hex[SHA256_HEX_SIZE])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	libcrypto.EVP_DigestFinal_ex(h->ctx, md, &len);
	for (unsigned i = 0; i < len && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	hex[64] = '\0';
	sha256_free(h);
}

void sha256_free(struct sha256 *h)
{
	if (h->ctx)
		libcrypto.EVP_MD_CTX_free(h->ctx);
	h->ctx = NULL;
}
