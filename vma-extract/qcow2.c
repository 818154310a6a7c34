/* Restoring into qcow2 images through qemu-img and qemu-nbd (qcow2.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "deadline.h"
#include "exitcode.h"
#include "outfile.h"
#include "qcow2.h"
#include "xalloc.h"

/* qemu-nbd must listen within this time, and exit within it once we have disconnected. */
#define START_TIMEOUT 30.0

static void pause_briefly(void)
{
	struct timespec ts = {0, 20 * 1000 * 1000};
	nanosleep(&ts, NULL);
}

/* Starts argv with standard input and output on /dev/null (its messages go to our standard
 * error); its pid, or -1. */
static pid_t spawn(char *const argv[])
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	int null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0)
		_exit(127);
	/* a fatal signal ends the restore, then qemu-nbd sees its only client go and exits;
	 * a signal for the process group reaches it directly */
	signal(SIGPIPE, SIG_DFL);
	execvp(argv[0], argv);
	fprintf(stderr, "vma-extract: %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

static void describe_status(int status, char *err, size_t errlen, const char *what)
{
	if (WIFEXITED(status))
		snprintf(err, errlen, "%s exited with status %d", what, WEXITSTATUS(status));
	else
		snprintf(err, errlen, "%s was killed by signal %d", what, WTERMSIG(status));
}

int qcow2_start(struct qcow2_out *q, int fd, uint64_t size, char *err, size_t errlen)
{
	*q = (struct qcow2_out){.dir_slot = -1, .sock_slot = -1, .t = {.fd = -1}};
	char *image = xasprintf("/proc/%d/fd/%d", (int)getpid(), fd);
	char *size_arg = xasprintf("%llu", (unsigned long long)size);
	char *create[] = {"qemu-img", "create", "-q", "-f", "qcow2", image, size_arg, NULL};
	int status = -1, rc = -1;
	pid_t pid = spawn(create);
	if (pid < 0 || waitpid(pid, &status, 0) < 0) {
		snprintf(err, errlen, "qemu-img: %s", strerror(errno));
		goto out;
	}
	if (status != 0) {
		describe_status(status, err, errlen, "qemu-img create");
		goto out;
	}
	const char *tmp = getenv("TMPDIR");
	q->tmpdir = xasprintf("%s/vma-extract.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(q->tmpdir)) {
		snprintf(err, errlen, "%s: %s", q->tmpdir, strerror(errno));
		free(q->tmpdir);
		q->tmpdir = NULL;
		goto out;
	}
	q->dir_slot = outfile_track_at(AT_FDCWD, q->tmpdir, true);
	q->sock = xasprintf("%s/nbd.sock", q->tmpdir);
	q->sock_slot = outfile_track(q->sock);
	q->uri = xasprintf("nbd+unix:///?socket=%s", q->sock);
	char *socket_arg = xasprintf("--socket=%s", q->sock);
	char *serve[] = {"qemu-nbd", "--format=qcow2", socket_arg, image, NULL};
	q->nbd_pid = spawn(serve);
	free(socket_arg);
	if (q->nbd_pid < 0) {
		q->nbd_pid = 0;
		snprintf(err, errlen, "qemu-nbd: %s", strerror(errno));
		goto out;
	}
	/* Until it listens: tried again while it is starting, for START_TIMEOUT at most. */
	deadline_t d = deadline_in(START_TIMEOUT);
	for (;;) {
		if (waitpid(q->nbd_pid, &status, WNOHANG) == q->nbd_pid) {
			q->nbd_pid = 0;
			describe_status(status, err, errlen, "qemu-nbd");
			goto out;
		}
		struct stat st;
		int peer = 0;
		if (stat(q->sock, &st) == 0 && S_ISSOCK(st.st_mode)) {
			if (target_open(&q->t, q->uri, true, &peer, err, errlen) == 0) {
				q->connected = true;
				rc = 0;
				goto out;
			}
			target_close(&q->t);
			if (peer != EXIT_PEER) /* not "nobody answered yet" */
				goto out;
		}
		if (deadline_passed(d)) {
			snprintf(err, errlen, "qemu-nbd: not listening after %g s", START_TIMEOUT);
			goto out;
		}
		pause_briefly();
	}
out:
	free(image);
	free(size_arg);
	return rc;
}

int qcow2_finish(struct qcow2_out *q, char *err, size_t errlen)
{
	if (target_finish(&q->t, err, errlen) < 0)
		return -1;
	target_close(&q->t); /* qemu-nbd exits once its only client has gone */
	q->connected = false;
	deadline_t d = deadline_in(START_TIMEOUT);
	int status;
	while (q->nbd_pid > 0) {
		pid_t got = waitpid(q->nbd_pid, &status, WNOHANG);
		if (got == q->nbd_pid) {
			q->nbd_pid = 0;
			if (status != 0) {
				describe_status(status, err, errlen, "qemu-nbd");
				return -1;
			}
			break;
		}
		if (got < 0 || deadline_passed(d)) {
			snprintf(err, errlen, "qemu-nbd: still running after %g s", START_TIMEOUT);
			return -1;
		}
		pause_briefly();
	}
	return 0;
}

void qcow2_stop(struct qcow2_out *q)
{
	if (q->connected)
		target_close(&q->t);
	q->connected = false;
	if (q->nbd_pid > 0) {
		kill(q->nbd_pid, SIGTERM);
		waitpid(q->nbd_pid, NULL, 0);
		q->nbd_pid = 0;
	}
	if (q->sock) {
		unlink(q->sock);
		outfile_untrack(q->sock_slot);
	}
	if (q->tmpdir) {
		rmdir(q->tmpdir);
		outfile_untrack(q->dir_slot);
	}
	free(q->sock);
	free(q->tmpdir);
	free(q->uri);
	q->sock = q->tmpdir = q->uri = NULL;
}
