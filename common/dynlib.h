/* Shared libraries that only some runs need (libnbd for an NBD source, libedit for qmpctl's
 * prompt, the compression libraries for a compressed archive: codecs.h), loaded with
 * dlopen(3) when first needed instead of by the dynamic linker at every start: each maps and
 * relocates its own dependencies (libnbd: gnutls, libxml2, icu, ...).
 *
 * A caller lists the functions it uses once, as an X-macro, and gets a table of pointers typed
 * from the library's own header, so the compiler still checks every call:
 *
 *	#define LIBFOO_FUNCTIONS(X) X(foo_open) X(foo_close)
 *	static struct libfoo {
 *		LIBFOO_FUNCTIONS(DYNLIB_POINTER)
 *	} libfoo;
 *	#define LIBFOO_ENTRY(f) DYNLIB_ENTRY(struct libfoo, f)
 *	static const struct dynlib_fn libfoo_fns[] = {LIBFOO_FUNCTIONS(LIBFOO_ENTRY)};
 *	static struct dynlib libfoo_lib = DYNLIB("libfoo.so.1", libfoo, libfoo_fns);
 *	...
 *	if (dynlib_load(&libfoo_lib, err, sizeof(err)) < 0)
 *		...;
 *	libfoo.foo_open(...);
 *
 * The binary must not reference the library's symbols directly, so that the linker
 * (-Wl,--as-needed) leaves it out; tests/build.bats checks that with ldd. */
#ifndef VZ_DYNLIB_H
#define VZ_DYNLIB_H

#include <stdbool.h>
#include <stddef.h>

struct dynlib_fn {
	const char *name; /* the symbol */
	size_t offset;    /* of its pointer in the table */
};

struct dynlib {
	const char *soname;
	void *table;
	const struct dynlib_fn *fns;
	size_t nfns;
	bool loaded;
};

/* In the table's struct: one pointer named and typed like the function. */
#define DYNLIB_POINTER(f) __typeof__(f) *f;
/* In the table's array of dynlib_fn: where function f's pointer goes in struct TYPE. */
#define DYNLIB_ENTRY(type, f) {#f, offsetof(type, f)},
#define DYNLIB(soname, table, fns)                                                                 \
	{                                                                                          \
		(soname), &(table), (fns), sizeof(fns) / sizeof((fns)[0]), false                   \
	}

/* Opens lib->soname and fills its table, the first time; later calls return at once. 0, or -1
 * with "cannot load SONAME: why" (dlerror(3)) in err: the library or one of the functions is
 * missing. Not thread-safe: call it before starting threads that use the library. */
int dynlib_load(struct dynlib *lib, char *err, size_t errlen);

#endif
