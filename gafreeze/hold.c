/*
 * gafreeze hold: freeze, run COMMAND, thaw as soon as it exits (or on SIGINT/SIGTERM/SIGHUP),
 * with a watchdog process that thaws when --max passes or when gafreeze dies, SIGKILL
 * included.
 *
 * The agent serves one client at a time, so the watchdog shares gafreeze's connection
 * instead of opening its own. Ownership of that connection is passed over a pipe so that
 * the two never talk to the agent at once: gafreeze owns it while freezing, then hands it
 * over ('F'); from then on only the watchdog speaks, and it thaws when asked ('T'), when
 * --max passes, or when the pipe reaches end-of-file (only gafreeze holds the write end,
 * so that happens exactly when gafreeze is gone). Its report comes back on a second pipe.
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gafreeze.h"
#include "qga.h"

#define MSG_HANDOVER 'F' /* the freeze is over (whatever its outcome): the socket is yours */
#define MSG_THAW 'T'     /* thaw now and report */
#define MSG_QUIT 'Q'     /* nothing was frozen by us: leave without thawing */

/* Time the watchdog gives a gafreeze that is still freezing at --max before killing it. */
#define HANDOVER_GRACE_MS 2000

struct report {
	char kind; /* 'R' answer to MSG_THAW, 'M' thawed on its own at --max */
	int status;
	long nthawed;
	long long acked_ms;
};

static deadline_t thaw_ceiling(const struct agent *a)
{
	return deadline_in(a->timeout * CEILING_FACTOR);
}

static void send_report(int fd, const struct report *r)
{
	char line[128];
	int n = snprintf(line, sizeof(line), "%c %d %ld %lld\n", r->kind, r->status, r->nthawed,
			 r->acked_ms);

	if (write(fd, line, (size_t)n) != n)
		warn("watchdog: reporting to gafreeze");
}

static void watchdog_thaw(struct agent *a, struct report *r, char kind)
{
	struct thaw_result tr;

	/* The stream position is unknown (a freeze may still be in flight): resync first. */
	qga_mark_unsynced(&a->q);
	r->status = thaw_guest(a, thaw_ceiling(a), &tr);
	r->nthawed = tr.nthawed;
	r->acked_ms = tr.acked_ms;
	r->kind = kind;
}

static _Noreturn void watchdog(struct agent *a, int from_parent, int to_parent, deadline_t max_d,
			       double max_s)
{
	pid_t parent = getppid();
	bool handed = false, thawed = false;
	struct report r = {.kind = 'R'};
	int null = open("/dev/null", O_RDWR);

	/* Outlive whatever ends gafreeze: the thaw is the point of this process. */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	/* Do not hold gafreeze's stdout open after it is gone. */
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		close(null);
	}
	for (;;) {
		struct pollfd p = {.fd = from_parent, .events = POLLIN};
		deadline_t until = thawed ? DEADLINE_NEVER
			: handed          ? max_d
					  : max_d + HANDOVER_GRACE_MS;
		char msg;
		ssize_t n;
		int ready = poll(&p, 1, deadline_poll_timeout(until));

		if (ready < 0 && errno == EINTR)
			continue;
		if (ready == 0) {
			if (!handed) {
				warnx("watchdog: still freezing at --max %g s; stopping gafreeze",
				      max_s);
				kill(parent, SIGKILL);
			} else {
				warnx("watchdog: --max %g s reached; thawing the guest", max_s);
			}
			watchdog_thaw(a, &r, 'M');
			thawed = true;
			send_report(to_parent, &r);
			continue;
		}
		n = read(from_parent, &msg, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (!thawed) {
				warnx("watchdog: gafreeze is gone; thawing the guest");
				watchdog_thaw(a, &r, 'R');
			}
			_exit(r.status);
		}
		if (msg == MSG_QUIT)
			_exit(0);
		if (msg == MSG_HANDOVER)
			handed = true;
		if (msg == MSG_THAW) {
			if (!thawed)
				watchdog_thaw(a, &r, 'R');
			thawed = true;
			r.kind = 'R';
			send_report(to_parent, &r);
			_exit(r.status);
		}
	}
}

/* Reads the watchdog's report line before D. False on end-of-file or timeout. */
static bool read_report(int fd, deadline_t d, struct report *r)
{
	char line[128];
	size_t len = 0;

	while (len < sizeof(line) - 1) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int ready = poll(&p, 1, deadline_poll_timeout(d));
		ssize_t n;

		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0)
			return false;
		n = read(fd, line + len, 1);
		if (n <= 0)
			return false;
		if (line[len++] == '\n')
			break;
	}
	line[len] = '\0';
	return sscanf(line, "%c %d %ld %lld", &r->kind, &r->status, &r->nthawed, &r->acked_ms) == 4;
}

struct holder {
	struct agent *a;
	int to_wd, from_wd;
	bool thawed, max_reached;
	struct report thaw;
};

/* Asks the watchdog to thaw; does it here if the watchdog is gone or silent. */
static void request_thaw(struct holder *h)
{
	char msg = MSG_THAW;

	if (h->thawed)
		return;
	if (write(h->to_wd, &msg, 1) == 1 &&
	    read_report(h->from_wd, deadline_in(h->a->timeout * CEILING_FACTOR + 5), &h->thaw)) {
		h->thawed = true;
		return;
	}
	warnx("the watchdog did not answer; thawing from here");
	{
		struct thaw_result tr;

		qga_mark_unsynced(&h->a->q);
		h->thaw.status = thaw_guest(h->a, thaw_ceiling(h->a), &tr);
		h->thaw.nthawed = tr.nthawed;
		h->thaw.acked_ms = tr.acked_ms;
	}
	h->thawed = true;
}

/* The watchdog leaves once the pipe from us closes (after it thawed, or with nothing to do). */
static void finish_watchdog(struct holder *h, pid_t wd)
{
	int wstatus;

	close(h->to_wd);
	h->to_wd = -1;
	while (waitpid(wd, &wstatus, 0) < 0 && errno == EINTR)
		;
}

static pid_t start_command(char **argv, const sigset_t *old_mask)
{
	pid_t pid = fork();

	if (pid == 0) {
		sigprocmask(SIG_SETMASK, old_mask, NULL);
		signal(SIGPIPE, SIG_DFL);
		execvp(argv[0], argv);
		warn("%s", argv[0]);
		_exit(errno == ENOENT ? 127 : 126);
	}
	if (pid < 0)
		warn("fork");
	return pid;
}

static int status_of(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return 1;
}

/* Runs COMMAND and waits for it, thawing early on a signal or when the watchdog hit --max.
 * Returns COMMAND's exit status (128+N for signal N). */
static int supervise(struct holder *h, char **argv, int sigfd, const sigset_t *old_mask)
{
	pid_t child = start_command(argv, old_mask);
	int forwarded = 0;

	if (child < 0)
		return 1;
	for (;;) {
		struct pollfd p[2] = {{.fd = sigfd, .events = POLLIN},
				      {.fd = h->thawed ? -1 : h->from_wd, .events = POLLIN}};
		struct signalfd_siginfo si;
		int wstatus;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			err(1, "poll");
		if (p[1].revents) {
			if (read_report(h->from_wd, deadline_in(1), &h->thaw)) {
				h->thawed = true;
				h->max_reached = h->thaw.kind == 'M';
				warnx("--max reached while %s was still running: the guest was "
				      "thawed early",
				      argv[0]);
			} else {
				warnx("the watchdog is gone; thawing now");
				request_thaw(h);
			}
		}
		if (!(p[0].revents & POLLIN) || read(sigfd, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.ssi_signo == SIGCHLD) {
			if (waitpid(child, &wstatus, WNOHANG) == child)
				return status_of(wstatus);
			continue;
		}
		/* SIGINT, SIGTERM, SIGHUP: thaw first, then pass it on to COMMAND. */
		warnx("got signal %d: thawing, then passing it to %s", (int)si.ssi_signo, argv[0]);
		request_thaw(h);
		if (forwarded == 0)
			kill(child, (int)si.ssi_signo);
		forwarded = (int)si.ssi_signo;
	}
}

static void report_window(const struct freeze_result *fr, const struct holder *h, bool json,
			  int command_status)
{
	long long ms = h->thaw.acked_ms > 0 && fr->acked_ms > 0 ? h->thaw.acked_ms - fr->acked_ms
								: -1;

	fprintf(stderr,
		"gafreeze: guest frozen for %lld ms (filesystems frozen: %ld, thawed: %ld)\n", ms,
		fr->nfrozen, h->thaw.nthawed);
	if (json) {
		json_t *o = json_pack("{s:I,s:I,s:I,s:i,s:b,s:b}", "frozen_ms", (json_int_t)ms,
				      "frozen", (json_int_t)fr->nfrozen, "thawed",
				      (json_int_t)h->thaw.nthawed, "command_status", command_status,
				      "max_reached", h->max_reached, "thaw_ok",
				      h->thaw.status == EXIT_OK);

		if (fr->nfrozen < 0)
			json_object_set_new(o, "frozen", json_null());
		if (h->thaw.nthawed < 0)
			json_object_set_new(o, "thawed", json_null());
		json_dumpf(o, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(o);
	}
}

int hold(struct agent *a, double max_seconds, bool json, char **argv)
{
	deadline_t max_d = deadline_in(max_seconds);
	deadline_t freeze_ceiling = deadline_min(deadline_in(a->timeout * CEILING_FACTOR), max_d);
	struct holder h = {.a = a, .thaw = {.status = EXIT_OK, .nthawed = -1}};
	struct freeze_result fr;
	sigset_t mask, old_mask;
	int to_wd[2], from_wd[2], sigfd, st, command_status = 0;
	pid_t wd;
	json_t *ret;
	char msg;

	/* A watchdog that died must not take us with it when we write to its pipe. */
	signal(SIGPIPE, SIG_IGN);
	/* Connect (and resync) before the watchdog exists: it shares this connection. */
	st = agent_call(a, "guest-ping", NULL, freeze_ceiling, &ret);
	json_decref(ret);
	if (st != EXIT_OK) {
		warnx("%s", a->why);
		return st;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, &old_mask);
	sigfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sigfd < 0 || pipe2(to_wd, O_CLOEXEC) < 0 || pipe2(from_wd, O_CLOEXEC) < 0)
		err(1, "setting up the watchdog");
	fflush(NULL);
	wd = fork();
	if (wd < 0)
		err(1, "fork");
	if (wd == 0) {
		/* A session of its own: a signal to gafreeze's process group (Ctrl-C, kill -KILL
		 * -PGID when a job is stopped) must not take the one process that thaws with it. */
		setsid();
		sigprocmask(SIG_SETMASK, &old_mask, NULL);
		close(sigfd);
		close(to_wd[1]);
		close(from_wd[0]);
		watchdog(a, to_wd[0], from_wd[1], max_d, max_seconds);
	}
	close(to_wd[0]);
	close(from_wd[1]);
	h.to_wd = to_wd[1];
	h.from_wd = from_wd[0];

	st = freeze_guest(a, NULL, 0, freeze_ceiling, &fr);
	/* From here on only the watchdog speaks. Let go of our connection: if the agent dropped
	 * the shared one and freeze_guest reconnected, the agent (one client at a time) would
	 * not answer the watchdog while we hold the new one. The shared one stays open in the
	 * watchdog. */
	agent_close(a);
	msg = fr.sent ? MSG_HANDOVER : MSG_QUIT;
	if (write(h.to_wd, &msg, 1) != 1)
		warn("talking to the watchdog");
	if (st != EXIT_OK && st != GF_ALREADY_FROZEN && fr.sent) {
		/* A freeze was asked for and may have half happened: always thaw (and confirm). */
		request_thaw(&h);
		st = h.thaw.status == EXIT_OK ? st : GF_THAW_FAILED;
	}
	if (st != EXIT_OK) {
		finish_watchdog(&h, wd);
		return st;
	}
	command_status = supervise(&h, argv, sigfd, &old_mask);
	request_thaw(&h);
	finish_watchdog(&h, wd);
	report_window(&fr, &h, json, command_status);
	if (h.thaw.status != EXIT_OK)
		return GF_THAW_FAILED;
	if (fr.nfrozen >= 0 && h.thaw.nthawed >= 0 && fr.nfrozen != h.thaw.nthawed)
		warnx("froze %ld filesystems but thawed %ld: something else froze or thawed "
		      "meanwhile",
		      fr.nfrozen, h.thaw.nthawed);
	if (h.max_reached && command_status == 0) {
		warnx("the guest was not frozen for the whole of %s", argv[0]);
		return EXIT_FAIL;
	}
	return command_status;
}
