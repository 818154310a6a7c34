/* Atomic output files, with clean-up of temporaries when a signal ends the process. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outfile.h"

#define MAX_PENDING 512

/* Paths the signal handler unlinks. Written only with signals blocked. */
static char *volatile pending[MAX_PENDING];
static int handlers_installed;

static void on_fatal_signal(int sig)
{
	/* Only async-signal-safe calls: unlink, then die of the same signal. */
	for (int i = 0; i < MAX_PENDING; i++)
		if (pending[i])
			unlink(pending[i]);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void block_signals(sigset_t *old)
{
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, old);
}

static int remember(char *path)
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
		if (!pending[i]) {
			pending[i] = path;
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
	pending[f->slot] = NULL;
	sigprocmask(SIG_SETMASK, &old, NULL);
	f->slot = -1;
}

int outfile_track(char *path) { return remember(path); }

void outfile_untrack(int handle)
{
	struct outfile f = {.slot = handle};
	forget(&f);
}

int outfile_create(struct outfile *f, const char *final_path, const char *tmp_name)
{
	char *dircopy = strdup(final_path), *basecopy = strdup(final_path);
	int rc = -1;
	memset(f, 0, sizeof(*f));
	f->fd = -1;
	f->slot = -1;
	if (!dircopy || !basecopy)
		goto out;
	const char *dir = dirname(dircopy);
	if (tmp_name) {
		if (asprintf(&f->tmp_path, "%s/%s", dir, tmp_name) < 0)
			goto out;
	} else if (asprintf(&f->tmp_path, "%s/.%s.tmp.%ld", dir, basename(basecopy),
			    (long)getpid()) < 0) {
		goto out;
	}
	f->final_path = strdup(final_path);
	if (!f->final_path)
		goto out;
	f->slot = remember(f->tmp_path);
	if (f->slot < 0) {
		errno = EMFILE;
		goto out;
	}
	f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (f->fd < 0) {
		int saved = errno;
		forget(f);
		errno = saved;
		goto out;
	}
	rc = 0;
out:
	free(dircopy);
	free(basecopy);
	if (rc < 0) {
		int saved = errno;
		free(f->tmp_path);
		free(f->final_path);
		f->tmp_path = f->final_path = NULL;
		errno = saved;
	}
	return rc;
}

static void fsync_parent(const char *path)
{
	char *copy = strdup(path);
	if (!copy)
		return;
	int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	free(copy);
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
	if (rc == 0) {
		if (no_replace)
			rc = renameat2(AT_FDCWD, f->tmp_path, AT_FDCWD, f->final_path,
				       RENAME_NOREPLACE);
		else
			rc = rename(f->tmp_path, f->final_path);
	}
	if (rc < 0) {
		int saved = errno;
		outfile_abort(f);
		errno = saved;
		return -1;
	}
	forget(f);
	fsync_parent(f->final_path);
	free(f->tmp_path);
	free(f->final_path);
	f->tmp_path = f->final_path = NULL;
	return 0;
}

void outfile_abort(struct outfile *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->tmp_path)
		unlink(f->tmp_path);
	forget(f);
	free(f->tmp_path);
	free(f->final_path);
	f->tmp_path = f->final_path = NULL;
}
