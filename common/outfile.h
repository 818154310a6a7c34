/* Files that appear under their final name only when complete: written under a temporary name
 * in the same folder, flushed, then renamed. Temporary files are removed on failure and on
 * SIGINT/SIGTERM/SIGHUP/SIGPIPE.
 *
 * Everything is done relative to a descriptor of the folder, opened once: the temporary is
 * created with O_CREAT|O_EXCL|O_NOFOLLOW (never an existing file, never through a link), written
 * by its descriptor, renamed and removed with renameat/unlinkat. Whoever swaps a component of the
 * path for a symlink after that cannot redirect what the tools create or remove as root. */
#ifndef VZ_OUTFILE_H
#define VZ_OUTFILE_H

#include <stdbool.h>

struct outfile {
	int fd;
	int dirfd;      /* the folder: renames and removals are relative to it */
	bool own_dirfd; /* opened by outfile_create, closed with the outfile */
	char *name;     /* the final name in dirfd */
	char *tmp_name; /* the temporary's name in dirfd */
	int slot;       /* index in the list the signal handler cleans up */
};

/* Creates the temporary file for path, mode 0600 (it holds a VM's disk or config: readable by
 * its owner only, whatever the umask). The folder part of path is opened as given, symlinks
 * included: it is the caller's choice. tmp_name, when not NULL, is the temporary's name in that
 * folder; otherwise it is ".NAME.tmp.PID", or ".tmp.PID.N" when that would be longer than
 * NAME_MAX. O_EXCL: an existing file is never reused. Returns 0, or -1 with errno set.
 * An outfile initialised as {.fd = -1, .slot = -1} may be given to outfile_abort. */
int outfile_create(struct outfile *f, const char *path, const char *tmp_name);
/* The same in the folder dirfd (not a path: no symlink can be swapped in), which the caller
 * keeps open until the outfile is committed or aborted. */
int outfile_create_at(struct outfile *f, int dirfd, const char *name, const char *tmp_name);
/* fsync, rename to the final name (refusing to replace an existing file when no_replace),
 * fsync the folder. Returns 0, or -1 with errno set (the temporary is then removed). */
int outfile_commit(struct outfile *f, int no_replace);
/* Removes the temporary file; safe to call on a committed or never-created outfile. */
void outfile_abort(struct outfile *f);

/* Removes path (kept by reference, not copied) too when a fatal signal ends the process, e.g.
 * a socket; returns a handle for outfile_untrack, or -1 when too many are tracked. */
int outfile_track(char *path);
/* The same for name (kept by reference) in the folder dirfd; with rmdir, name is a folder,
 * removed after every file. */
int outfile_track_at(int dirfd, const char *name, bool rmdir);
void outfile_untrack(int handle);

#endif
