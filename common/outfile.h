/* Files that appear under their final name only when complete: written under a temporary name
 * in the same directory, flushed, then renamed. Temporary files are removed on failure and on
 * SIGINT/SIGTERM/SIGHUP/SIGPIPE. */
#ifndef VZ_OUTFILE_H
#define VZ_OUTFILE_H

struct outfile {
	int fd;
	char *final_path;
	char *tmp_path;
	int slot; /* index in the list the signal handler cleans up */
};

/* Creates the temporary file for final_path (mode 0644 less umask). tmp_name, when not NULL, is
 * the temporary file's name in the same directory; otherwise one is made up. O_EXCL: an
 * existing temporary is never reused. Returns 0, or -1 with errno set. */
int outfile_create(struct outfile *f, const char *final_path, const char *tmp_name);
/* fsync, rename to the final name (refusing to replace an existing file when no_replace),
 * fsync the directory. Returns 0, or -1 with errno set (the temporary is then removed). */
int outfile_commit(struct outfile *f, int no_replace);
/* Removes the temporary file; safe to call on a committed or never-created outfile. */
void outfile_abort(struct outfile *f);

/* Removes path (kept by reference, not copied) too when a fatal signal ends the process, e.g.
 * a socket; returns a handle for outfile_untrack, or -1 when too many are tracked. */
int outfile_track(char *path);
void outfile_untrack(int handle);

#endif
