/*
 * Every name is used relative to the directory's file descriptor and comes from readdir(),
 * so it has no '/': nothing outside DUMPDIR can be reached. fstatat(AT_SYMLINK_NOFOLLOW)
 * makes sure we only unlink regular files; unlinkat() itself never follows a symlink.
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "remove.h"
#include "scan.h"
#include "xalloc.h"

enum presence { ABSENT, REGULAR, OTHER, UNKNOWN };

static enum presence look_at(int dir_fd, const char *name)
{
	struct stat st;

	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return errno == ENOENT ? ABSENT : UNKNOWN;
	return S_ISREG(st.st_mode) ? REGULAR : OTHER;
}

/* Removes NAME if it is a regular file; a missing file is fine only if MAY_BE_MISSING. */
static bool remove_regular(int dir_fd, const char *name, bool may_be_missing)
{
	switch (look_at(dir_fd, name)) {
	case ABSENT:
		if (may_be_missing)
			return true;
		warnx("remove %s: it disappeared", name);
		return false;
	case OTHER:
		warnx("remove %s: not a regular file, left in place", name);
		return false;
	case UNKNOWN:
		warn("remove %s", name);
		return false;
	case REGULAR:
		break;
	}
	if (unlinkat(dir_fd, name, 0) != 0) {
		if (errno == ENOENT && may_be_missing)
			return true;
		warn("remove %s", name);
		return false;
	}
	return true;
}

bool remove_backup(int dir_fd, const struct backup *b, bool keep_log)
{
	char *marker = xasprintf("%s.protected", b->name);
	char *log = xasprintf("%.*s.log", (int)b->stem_len, b->name);
	char *notes = xasprintf("%s.notes", b->name);
	char *sha256 = xasprintf("%s.sha256", b->name);
	bool ok = false;

	/* The marker may have appeared since the directory was read (one of another user's
	 * counts for nothing, see file_counts). */
	switch (look_at(dir_fd, marker)) {
	case ABSENT:
		break;
	case REGULAR:
		if (!file_counts(dir_fd, marker))
			break;
		warnx("remove %s: refused, it is protected by %s", b->name, marker);
		goto out;
	case UNKNOWN:
		warn("remove %s: cannot check %s", b->name, marker);
		goto out;
	default:
		warnx("remove %s: refused, it is protected by %s", b->name, marker);
		goto out;
	}
	if (!remove_regular(dir_fd, b->name, false))
		goto out;
	/* Separate calls: a failing .log must not keep the .notes or the .sha256. (Removed after
	 * the archive: interrupted in between, a lone .sha256 is left, which is no backup.) */
	ok = keep_log || remove_regular(dir_fd, log, true);
	ok = remove_regular(dir_fd, notes, true) && ok;
	ok = remove_regular(dir_fd, sha256, true) && ok;
out:
	free(marker);
	free(log);
	free(notes);
	free(sha256);
	return ok;
}
