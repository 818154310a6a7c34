/* Shared libraries that only some runs need (libnbd for an NBD source, libedit for qmpctl's
 * prompt, the compression libraries for a compressed archive: codecs.h), loaded with
 * dlopen(3) when first needed instead of by the dynamic linker at every start: each maps and
 * relocates its own dependencies (libnbd: gnutls, libxml2, icu, ...).
 *
 * A caller lists the functions it uses once, as an X-macro, and gets a table of pointers typed
 * from the library's own header, so the compiler still checks every call:
 *
 *	#define LIBFOO_FUNCTIONS(X) X(foo_open) X(foo_close)
 *	DYNLIB_TABLE(libfoo, "libfoo.so.1", LIBFOO_FUNCTIONS)
 *	...
 *	if (libfoo_load(err, sizeof(err)) < 0)
 *		...;
 *	libfoo.foo_open(...);
 *
 * (A table shared between files, as codecs.h's, is declared in a header and spelt out with
 * DYNLIB_POINTER, DYNLIB_ENTRY and DYNLIB, as DYNLIB_TABLE does.)
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

/* A file's own table: static struct TABLE TABLE, with a pointer for each function FUNCTIONS
 * lists, and static int TABLE_load(char *err, size_t errlen), which fills it from SONAME the
 * first time (dynlib_load). */
#define DYNLIB_TABLE(table, soname, FUNCTIONS)                                                     \
	static struct table {                                                                      \
		FUNCTIONS(DYNLIB_POINTER)                                                          \
	} table;                                                                                   \
	static int table##_load(char *err, size_t errlen)                                          \
	{                                                                                          \
		typedef struct table dynlib_table;                                                 \
		static const struct dynlib_fn table##_fns[] = {FUNCTIONS(DYNLIB_TABLE_ENTRY)};     \
		static struct dynlib table##_lib = DYNLIB(soname, table, table##_fns);             \
		return dynlib_load(&table##_lib, err, errlen);                                     \
	}
/* (The table's type is the typedef dynlib_table of the function it is expanded in.) */
#define DYNLIB_TABLE_ENTRY(f) DYNLIB_ENTRY(dynlib_table, f)

/* Opens lib->soname and fills its table, the first time; later calls return at once. 0, or -1
 * with "cannot load SONAME: why" (dlerror(3)) in err: the library or one of the functions is
 * missing. Not thread-safe: call it before starting threads that use the library. */
int dynlib_load(struct dynlib *lib, char *err, size_t errlen);

#endif
