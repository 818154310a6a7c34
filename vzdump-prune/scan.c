/*
 * One pass over the directory: archives become entries, "ARCHIVE.protected" markers are
 * collected into a sorted list so that each archive's protection is a binary search, not a
 * system call. Everything else in the directory is ignored.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup_name.h"
#include "scan.h"
#include "xalloc.h"

static const char protected_suffix[] = ".protected";

struct names {
	char **items;
	size_t count, capacity;
};

static bool grow(void **items, size_t *capacity, size_t count, size_t item_size)
{
	size_t want;
	void *p;

	if (count < *capacity)
		return true;
	want = *capacity ? *capacity * 2 : 256;
	p = reallocarray(*items, want, item_size);
	if (!p)
		return false;
	*items = p;
	*capacity = want;
	return true;
}

/* Keeps "X" for a file named "X.protected". */
static bool add_protected(struct names *markers, const char *name)
{
	size_t len = strlen(name), suffix_len = sizeof(protected_suffix) - 1;
	char *stem;

	if (len <= suffix_len || strcmp(name + len - suffix_len, protected_suffix) != 0)
		return true;
	if (!grow((void **)&markers->items, &markers->capacity, markers->count,
		  sizeof(*markers->items)))
		return false;
	stem = xstrndup(name, len - suffix_len);
	markers->items[markers->count++] = stem;
	return true;
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int compare_key(const void *key, const void *item)
{
	return strcmp(key, *(char *const *)item);
}

static void free_names(struct names *n)
{
	for (size_t i = 0; i < n->count; i++)
		free(n->items[i]);
	free(n->items);
}

void backup_list_free(struct backup_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		free(list->items[i].name);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

bool file_counts(int dir_fd, const char *name)
{
	struct stat dir, st;
	if (fstat(dir_fd, &dir) != 0 || (dir.st_mode & (S_IWGRP | S_IWOTH)) == 0)
		return true;
	return fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
		(st.st_uid == geteuid() || st.st_uid == dir.st_uid);
}

bool scan_dumpdir(DIR *dir, long vmid, struct backup_list *out)
{
	struct names markers = {0};
	size_t capacity = 0;
	struct dirent *d;
	bool ok = false;
	int saved_errno;

	out->items = NULL;
	out->count = 0;
	for (;;) {
		struct backup b;
		char *name;

		errno = 0;
		d = readdir(dir);
		if (!d) {
			if (errno != 0)
				goto out;
			break;
		}
		if (!file_counts(dirfd(dir), d->d_name))
			continue;
		if (!add_protected(&markers, d->d_name))
			goto out;
		if (!backup_name_parse(d->d_name, &b) || (vmid != VMID_UNKNOWN && b.vmid != vmid))
			continue;
		if (!grow((void **)&out->items, &capacity, out->count, sizeof(*out->items)))
			goto out;
		/* d_name is reused by the next readdir() */
		name = xstrdup(d->d_name);
		b.name = name;
		if (!b.standard) {
			b.mark = MARK_RENAMED;
			b.why = WHY_RENAMED;
		}
		out->items[out->count++] = b;
	}

	if (markers.count > 0) {
		qsort(markers.items, markers.count, sizeof(*markers.items), compare_strings);
		for (size_t i = 0; i < out->count; i++) {
			struct backup *b = &out->items[i];

			if (bsearch(b->name, markers.items, markers.count, sizeof(*markers.items),
				    compare_key)) {
				b->mark = MARK_PROTECTED;
				b->why = WHY_PROTECTED;
			}
		}
	}
	ok = true;
out:
	saved_errno = errno;
	free_names(&markers);
	if (!ok)
		backup_list_free(out);
	errno = saved_errno;
	return ok;
}
