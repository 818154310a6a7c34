/* Atomic output files, with clean-up of temporaries when a signal ends the process. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outfile.h"

/* vma-extract tracks up to 254 disk temporaries, 256 configs and its folder at once. */
#define MAX_PENDING 1024

/* What the signal handler removes: name relative to dirfd. Written only with signals blocked. */
static struct pending {
	int dirfd;
	const char *name;
	int flags; /* 0 or AT_REMOVEDIR */
} volatile pending[MAX_PENDING];
static int handlers_installed;

static void on_fatal_signal(int sig)
{
	/* Only async-signal-safe calls: unlinkat, then die of the same signal. Files go before
	 * folders, which are removed only once empty. */
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < MAX_PENDING; i++)
			if (pending[i].name && (pending[i].flags != 0) == pass)
				unlinkat(pending[i].dirfd, pending[i].name, pending[i].flags);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void block_signals(sigset_t *old)
{
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, old);
}

static int remember(int dirfd, const char *name, int flags)
{
	sigset_t old;
	int slot = -1;
	block_signals(&old);
	if (!handlers_installed) {
		int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
		for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
			struct sigaction sa = {.sa_handler = on_fatal_signal};
			struct sigaction prev;
			sigaction(sigs[i], NULL, &prev);
			/* A signal the caller chose to ignore stays ignored. */
			if (prev.sa_handler != SIG_IGN)
				sigaction(sigs[i], &sa, NULL);
		}
		handlers_installed = 1;
	}
	for (int i = 0; i < MAX_PENDING; i++)
		if (!pending[i].name) {
			pending[i].dirfd = dirfd;
			pending[i].flags = flags;
			pending[i].name = name;
			slot = i;
			break;
		}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return slot;
}

static void forget(struct outfile *f)
{
	sigset_t old;
	if (f->slot < 0)
		return;
	block_signals(&old);
	pending[f->slot].name = NULL;
	sigprocmask(SIG_SETMASK, &old, NULL);
	f->slot = -1;
}

int outfile_track(char *path) { return remember(AT_FDCWD, path, 0); }

int outfile_track_at(int dirfd, const char *name, bool rmdir)
{
	return remember(dirfd, name, rmdir ? AT_REMOVEDIR : 0);
}

void outfile_untrack(int handle)
{
	struct outfile f = {.slot = handle};
	forget(&f);
}

/* Frees what the outfile holds and closes its folder when it opened it. */
static void release(struct outfile *f)
{
	int saved = errno;
	if (f->own_dirfd && f->dirfd >= 0)
		close(f->dirfd);
	f->own_dirfd = false;
	f->dirfd = -1;
	free(f->tmp_name);
	free(f->name);
	f->tmp_name = f->name = NULL;
	errno = saved;
}

/* ".NAME.tmp.PID", the name vzdump.sh looks for after a killed vma-create; a name that long
 * would not fit NAME_MAX gets a short one of its own, unique in the process. */
static char *make_tmp_name(const char *name)
{
	static unsigned counter;
	char *tmp;
	if (asprintf(&tmp, ".%s.tmp.%ld", name, (long)getpid()) < 0)
		return NULL;
	if (strlen(tmp) <= NAME_MAX)
		return tmp;
	free(tmp);
	if (asprintf(&tmp, ".tmp.%ld.%u", (long)getpid(), counter++) < 0)
		return NULL;
	return tmp;
}

int outfile_create_at(struct outfile *f, int dirfd, const char *name, const char *tmp_name)
{
	*f = (struct outfile){.fd = -1, .dirfd = dirfd, .slot = -1};
	f->name = strdup(name);
	f->tmp_name = tmp_name ? strdup(tmp_name) : make_tmp_name(name);
	if (!f->name || !f->tmp_name)
		goto fail;
	f->slot = remember(dirfd, f->tmp_name, 0);
	if (f->slot < 0) {
		errno = EMFILE;
		goto fail;
	}
	/* 0600 whatever the umask says: the file holds a whole disk or config of a VM. */
	f->fd = openat(dirfd, f->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		       0600);
	if (f->fd < 0)
		goto fail;
	return 0;
fail:;
	int saved = errno;
	forget(f);
	release(f);
	errno = saved;
	return -1;
}

int outfile_create(struct outfile *f, const char *path, const char *tmp_name)
{
	char *dircopy = strdup(path), *basecopy = strdup(path);
	int rc = -1;
	*f = (struct outfile){.fd = -1, .dirfd = -1, .slot = -1};
	if (!dircopy || !basecopy)
		goto out;
	/* The folder as the user named it: it may well be reached through a symlink. */
	int dirfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		goto out;
	rc = outfile_create_at(f, dirfd, basename(basecopy), tmp_name);
	if (rc < 0) {
		int saved = errno;
		close(dirfd);
		errno = saved;
	} else {
		f->own_dirfd = true;
	}
out:
	free(dircopy);
	free(basecopy);
	return rc;
}

int outfile_commit(struct outfile *f, int no_replace)
{
	int rc = fsync(f->fd);
	/* fsync on a pipe or some special files is not supported; that is not a failure here. */
	if (rc < 0 && (errno == EINVAL || errno == EROFS))
		rc = 0;
	if (close(f->fd) < 0)
		rc = -1;
	f->fd = -1;
	if (rc == 0)
		rc = renameat2(f->dirfd, f->tmp_name, f->dirfd, f->name,
			       no_replace ? RENAME_NOREPLACE : 0);
	/* A file system that cannot refuse to replace in a rename (NFS: EINVAL) still can with a
	 * hard link, which never replaces either; the temporary then goes. */
	if (rc < 0 && no_replace && (errno == EINVAL || errno == ENOSYS)) {
		rc = linkat(f->dirfd, f->tmp_name, f->dirfd, f->name, 0);
		if (rc == 0)
			unlinkat(f->dirfd, f->tmp_name, 0);
	}
	if (rc < 0) {
		int saved = errno;
		outfile_abort(f);
		errno = saved;
		return -1;
	}
	forget(f);
	fsync(f->dirfd);
	release(f);
	return 0;
}

void outfile_abort(struct outfile *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->tmp_name)
		unlinkat(f->dirfd, f->tmp_name, 0);
	forget(f);
	release(f);
}
