/* The compression libraries' tables (see codecs.h). */
#include "codecs.h"

struct libzstd libzstd;
struct liblzma liblzma;
struct libz libz;

#define LIBZSTD_ENTRY(f) DYNLIB_ENTRY(struct libzstd, f)
#define LIBLZMA_ENTRY(f) DYNLIB_ENTRY(struct liblzma, f)
#define LIBZ_ENTRY(f) DYNLIB_ENTRY(struct libz, f)
static const struct dynlib_fn libzstd_fns[] = {LIBZSTD_FUNCTIONS(LIBZSTD_ENTRY)};
static const struct dynlib_fn liblzma_fns[] = {LIBLZMA_FUNCTIONS(LIBLZMA_ENTRY)};
static const struct dynlib_fn libz_fns[] = {LIBZ_FUNCTIONS(LIBZ_ENTRY)};
static struct dynlib libzstd_lib = DYNLIB("libzstd.so.1", libzstd, libzstd_fns);
static struct dynlib liblzma_lib = DYNLIB("liblzma.so.5", liblzma, liblzma_fns);
static struct dynlib libz_lib = DYNLIB("libz.so.1", libz, libz_fns);

int codec_load_zstd(char *err, size_t errlen) { return dynlib_load(&libzstd_lib, err, errlen); }
int codec_load_lzma(char *err, size_t errlen) { return dynlib_load(&liblzma_lib, err, errlen); }
int codec_load_z(char *err, size_t errlen) { return dynlib_load(&libz_lib, err, errlen); }
