/* The compression libraries' tables (see codecs.h). */
#include "codecs.h"

#include <stdbool.h>
#include <stdio.h>

struct libzstd libzstd;
struct liblzma liblzma;
struct libz libz;
struct liblzo2 liblzo2;

#define LIBZSTD_ENTRY(f) DYNLIB_ENTRY(struct libzstd, f)
#define LIBLZMA_ENTRY(f) DYNLIB_ENTRY(struct liblzma, f)
#define LIBZ_ENTRY(f) DYNLIB_ENTRY(struct libz, f)
#define LIBLZO2_ENTRY(f) DYNLIB_ENTRY(struct liblzo2, f)
static const struct dynlib_fn libzstd_fns[] = {LIBZSTD_FUNCTIONS(LIBZSTD_ENTRY)};
static const struct dynlib_fn liblzma_fns[] = {LIBLZMA_FUNCTIONS(LIBLZMA_ENTRY)};
static const struct dynlib_fn libz_fns[] = {LIBZ_FUNCTIONS(LIBZ_ENTRY)};
static const struct dynlib_fn liblzo2_fns[] = {LIBLZO2_FUNCTIONS(LIBLZO2_ENTRY)};
static struct dynlib libzstd_lib = DYNLIB("libzstd.so.1", libzstd, libzstd_fns);
static struct dynlib liblzma_lib = DYNLIB("liblzma.so.5", liblzma, liblzma_fns);
static struct dynlib libz_lib = DYNLIB("libz.so.1", libz, libz_fns);
static struct dynlib liblzo2_lib = DYNLIB("liblzo2.so.2", liblzo2, liblzo2_fns);

int codec_load_zstd(char *err, size_t errlen) { return dynlib_load(&libzstd_lib, err, errlen); }
int codec_load_lzma(char *err, size_t errlen) { return dynlib_load(&liblzma_lib, err, errlen); }
int codec_load_z(char *err, size_t errlen) { return dynlib_load(&libz_lib, err, errlen); }

int codec_load_lzo(char *err, size_t errlen)
{
	static bool initialised;
	if (dynlib_load(&liblzo2_lib, err, errlen) < 0)
		return -1;
	/* lzo_init() as lzoconf.h spells it, through the table. */
	if (!initialised &&
	    liblzo2.__lzo_init_v2(LZO_VERSION, (int)sizeof(short), (int)sizeof(int),
				  (int)sizeof(long), (int)sizeof(lzo_uint32_t),
				  (int)sizeof(lzo_uint), (int)lzo_sizeof_dict_t,
				  (int)sizeof(char *), (int)sizeof(lzo_voidp),
				  (int)sizeof(lzo_callback_t)) != LZO_E_OK) {
		snprintf(err, errlen, "liblzo2.so.2 does not match this build (lzo_init failed)");
		return -1;
	}
	initialised = true;
	return 0;
}
