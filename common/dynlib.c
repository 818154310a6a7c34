/* Libraries loaded when first needed (see dynlib.h). */
#include "dynlib.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int load_failed(const struct dynlib *lib, char *err, size_t errlen)
{
	const char *why = dlerror();
	snprintf(err, errlen, "cannot load %s: %s", lib->soname, why ? why : "unknown error");
	return -1;
}

int dynlib_load(struct dynlib *lib, char *err, size_t errlen)
{
	if (lib->loaded)
		return 0;
	void *h = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		return load_failed(lib, err, errlen);
	for (size_t i = 0; i < lib->nfns; i++) {
		dlerror();
		void *p = dlsym(h, lib->fns[i].name);
		if (!p) {
			load_failed(lib, err, errlen);
			dlclose(h);
			return -1;
		}
		/* POSIX: a function's address survives the trip through void *. */
		memcpy((char *)lib->table + lib->fns[i].offset, &p, sizeof(p));
	}
	/* The handle stays open for the rest of the run: the table points into it. */
	lib->loaded = true;
	return 0;
}
