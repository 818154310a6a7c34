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
 *
 * With --sync-fd the command is started first and the freeze waits for its "ready" on a
 * socket (handshake.h); the "go" follows the freeze's acknowledgement, so that only the
 * command's real work falls inside the frozen window, not its start-up and connecting.
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
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gafreeze.h"
#include "handshake.h"
#include "qga.h"

#define MSG_HANDOVER 'F' /* the freeze is over (whatever its outcome): the socket is yours */
#define MSG_THAW 'T'     /* thaw now and report */
#define MSG_QUIT 'Q'     /* nothing was frozen by us: leave without thawing */

/* Time the watchdog gives a gafreeze that is still freezing at --max before killing it. */
#define HANDOVER_GRACE_MS 2000
/* Time a command that was not let go has to leave, before SIGTERM and again before SIGKILL. */
#define STOP_GRACE_MS 2000

struct report {
	char kind; /* 'R' answer to MSG_THAW, 'M' thawed on its own at --max */
	int status;
	long nthawed;
	long long started_ms, acked_ms; /* monotonic: the thaw began, the agent acknowledged it */
};

static deadline_t thaw_ceiling(const struct agent *a)
{
	return deadline_in(a->timeout * CEILING_FACTOR);
}

static void send_report(int fd, const struct report *r)
{
	char line[128];
	int n = snprintf(line, sizeof(line), "%c %d %ld %lld %lld\n", r->kind, r->status,
			 r->nthawed, r->started_ms, r->acked_ms);

	if (write(fd, line, (size_t)n) != n)
		warn("watchdog: reporting to gafreeze");
}

/* Thaws through A from this process, into R (all but its kind). */
static void thaw_here(struct agent *a, struct report *r)
{
	struct thaw_result tr;

	/* The stream position is unknown (a freeze may still be in flight): resync first. */
	r->started_ms = monotonic_ms();
	qga_mark_unsynced(&a->q);
	r->status = thaw_guest(a, thaw_ceiling(a), &tr);
	r->nthawed = tr.nthawed;
	r->acked_ms = tr.acked_ms;
}

static void watchdog_thaw(struct agent *a, struct report *r, char kind)
{
	thaw_here(a, r);
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
	return sscanf(line, "%c %d %ld %lld %lld", &r->kind, &r->status, &r->nthawed,
		      &r->started_ms, &r->acked_ms) == 5;
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
	long long asked;

	if (h->thawed)
		return;
	asked = monotonic_ms();
	if (write(h->to_wd, &msg, 1) == 1 &&
	    read_report(h->from_wd, deadline_in(h->a->timeout * CEILING_FACTOR + 5), &h->thaw)) {
		h->thaw.started_ms = asked; /* the hop to the watchdog is part of the thaw */
		h->thawed = true;
		return;
	}
	warnx("the watchdog did not answer; thawing from here");
	thaw_here(h->a, &h->thaw);
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

/* Forks COMMAND with the signal mask it had; with SYNC >= 0, the socket CHILD_END is its
 * descriptor SYNC (and nothing else of ours is: the rest is close-on-exec). */
static pid_t start_command(char **argv, const sigset_t *old_mask, int child_end, int sync)
{
	pid_t pid = fork();

	if (pid == 0) {
		sigprocmask(SIG_SETMASK, old_mask, NULL);
		signal(SIGPIPE, SIG_DFL);
		if (sync >= 0 &&
		    (child_end == sync ? fcntl(sync, F_SETFD, 0) : dup2(child_end, sync)) < 0) {
			warn("--sync-fd %d", sync);
			_exit(126);
		}
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

/* The next signal from SIGFD before D: its number, 0 when D passed. */
static int next_signal(int sigfd, deadline_t d)
{
	for (;;) {
		struct pollfd p = {.fd = sigfd, .events = POLLIN};
		struct signalfd_siginfo si;
		int ready = poll(&p, 1, deadline_poll_timeout(d));

		if (ready < 0 && errno != EINTR)
			err(1, "poll");
		if (ready == 0)
			return 0;
		if (ready > 0 && read(sigfd, &si, sizeof(si)) == sizeof(si))
			return (int)si.ssi_signo;
	}
}

/* Reaps CHILD before D; false when it is still running then. Other signals are passed on. */
static bool reap_before(pid_t child, int sigfd, deadline_t d, int *wstatus)
{
	int sig;

	while (waitpid(child, wstatus, WNOHANG) != child) {
		sig = next_signal(sigfd, d);
		if (sig == 0)
			return false;
		if (sig != SIGCHLD)
			kill(child, sig);
	}
	return true;
}

/* Ends a command that was not let go (no "go" came, and it will not): its end of the
 * handshake is closed already, which makes qmpctl --sync-fd leave by itself; anything still
 * running after a grace period gets SIGTERM, then SIGKILL. Returns its exit status. */
static int end_command(pid_t child, int sigfd, const char *name)
{
	int wstatus;

	if (reap_before(child, sigfd, deadline_in(STOP_GRACE_MS / 1000.0), &wstatus))
		return status_of(wstatus);
	warnx("%s is still running: sending it SIGTERM", name);
	kill(child, SIGTERM);
	if (reap_before(child, sigfd, deadline_in(STOP_GRACE_MS / 1000.0), &wstatus))
		return status_of(wstatus);
	warnx("%s is still running: sending it SIGKILL", name);
	kill(child, SIGKILL);
	while (waitpid(child, &wstatus, 0) < 0 && errno == EINTR)
		;
	return status_of(wstatus);
}

/* --sync-fd: waits until CHILD says "ready" on SYNC (its connection made, say), within D.
 * Signals meanwhile are passed on to it. False, with CHILD ended and reaped and nothing
 * frozen, when it ended first, said something else, or D passed. */
static bool await_ready(pid_t child, int sync, int sigfd, deadline_t d, double t, const char *name)
{
	struct handshake hs = {.fd = sync};
	bool reaped = false, told = true; /* told: why it failed was said */
	int wstatus = 0;

	for (;;) {
		struct pollfd p[2] = {{.fd = sigfd, .events = POLLIN},
				      {.fd = sync, .events = POLLIN}};
		struct signalfd_siginfo si;
		enum handshake_status st;
		int ready = poll(p, 2, deadline_poll_timeout(d));

		if (ready < 0 && errno != EINTR)
			err(1, "poll");
		if (ready == 0) {
			warnx("%s was not ready within %g s: nothing was frozen", name, t);
			break;
		}
		if (ready < 0)
			continue;
		if (p[1].revents) {
			st = handshake_read(&hs);
			if (st == HANDSHAKE_AGAIN)
				continue;
			if (st == HANDSHAKE_LINE && strcmp(hs.line, HANDSHAKE_READY) == 0)
				return true;
			if (st == HANDSHAKE_LINE)
				warnx("%s said '%s' on --sync-fd, not '%s': nothing was frozen",
				      name, hs.line, HANDSHAKE_READY);
			else if (st == HANDSHAKE_ERROR)
				warn("%s: --sync-fd: nothing was frozen", name);
			/* end-of-file: it closed its end, and is leaving, most likely */
			told = st != HANDSHAKE_EOF;
			break;
		}
		if (!(p[0].revents & POLLIN) || read(sigfd, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.ssi_signo != SIGCHLD) {
			kill(child, (int)si.ssi_signo);
		} else if (waitpid(child, &wstatus, WNOHANG) == child) {
			reaped = true;
			told = false;
			break;
		}
	}
	close(sync);
	if (!told) {
		/* It ended, or closed its end: say how it ended. */
		int status = reaped ? status_of(wstatus) : end_command(child, sigfd, name);

		warnx("%s ended (status %d) before it was ready: nothing was frozen", name, status);
	} else {
		end_command(child, sigfd, name);
	}
	return false;
}

/* Waits for CHILD, thawing early on a signal or when the watchdog hit --max. Returns its exit
 * status (128+N for signal N) and sets *ENDED_MS to when it was reaped. */
static int supervise(struct holder *h, pid_t child, const char *name, int sigfd,
		     long long *ended_ms)
{
	int forwarded = 0;

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
				      name);
			} else {
				warnx("the watchdog is gone; thawing now");
				request_thaw(h);
			}
		}
		if (!(p[0].revents & POLLIN) || read(sigfd, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.ssi_signo == SIGCHLD) {
			if (waitpid(child, &wstatus, WNOHANG) == child) {
				*ended_ms = monotonic_ms();
				return status_of(wstatus);
			}
			continue;
		}
		/* SIGINT, SIGTERM, SIGHUP: thaw first, then pass it on to COMMAND. */
		warnx("got signal %d: thawing, then passing it to %s", (int)si.ssi_signo, name);
		request_thaw(h);
		if (forwarded == 0)
			kill(child, (int)si.ssi_signo);
		forwarded = (int)si.ssi_signo;
	}
}

/* The window and its steps, in milliseconds: -1 for what was not measured. */
struct timings {
	long long freeze_ms, frozen_ms, command_ms, thaw_ms;
};

static long long span(long long from, long long to) { return from > 0 && to > 0 ? to - from : -1; }

static void report_window(const struct freeze_result *fr, const struct holder *h,
			  const struct timings *t, bool json, int command_status)
{
	fprintf(stderr,
		"gafreeze: guest frozen for %lld ms (filesystems frozen: %ld, thawed: %ld)\n",
		t->frozen_ms, fr->nfrozen, h->thaw.nthawed);
	if (json) {
		json_t *o = json_pack(
			"{s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:b,s:b}", "frozen_ms",
			(json_int_t)t->frozen_ms, "freeze_ms", (json_int_t)t->freeze_ms,
			"command_ms", (json_int_t)t->command_ms, "thaw_ms", (json_int_t)t->thaw_ms,
			"frozen", (json_int_t)fr->nfrozen, "thawed", (json_int_t)h->thaw.nthawed,
			"command_status", command_status, "max_reached", h->max_reached, "thaw_ok",
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

int hold(struct agent *a, const struct hold_options *o, char **argv)
{
	deadline_t max_d, freeze_ceiling;
	struct holder h = {.a = a, .thaw = {.status = EXIT_OK, .nthawed = -1}};
	struct freeze_result fr;
	struct timings t;
	sigset_t mask, old_mask;
	int to_wd[2], from_wd[2], sync[2] = {-1, -1}, sigfd, st, command_status = 0;
	pid_t wd, child = -1;
	long long go_ms, ended_ms = 0;
	json_t *ret;
	char msg;

	/* A watchdog that died must not take us with it when we write to its pipe. */
	signal(SIGPIPE, SIG_IGN);
	/* Connect (and resync) before the watchdog exists: it shares this connection. */
	st = agent_call(a, "guest-ping", NULL, deadline_in(a->timeout * CEILING_FACTOR), &ret);
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
	if (sigfd < 0)
		err(1, "signalfd");
	fflush(NULL);
	if (o->sync_fd >= 0) {
		/* The command first: whatever it needs before the instant (connecting to QEMU,
		 * negotiating) happens before the freeze, outside the window. */
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sync) < 0)
			err(1, "socketpair");
		child = start_command(argv, &old_mask, sync[1], o->sync_fd);
		close(sync[1]);
		if (child < 0)
			return EXIT_FAIL;
		if (!await_ready(child, sync[0], sigfd, deadline_in(a->timeout), a->timeout,
				 argv[0]))
			return EXIT_FAIL;
	}
	/* --max counts from here, the freeze. */
	max_d = deadline_in(o->max_seconds);
	freeze_ceiling = deadline_min(deadline_in(a->timeout * CEILING_FACTOR), max_d);
	if (pipe2(to_wd, O_CLOEXEC) < 0 || pipe2(from_wd, O_CLOEXEC) < 0)
		err(1, "setting up the watchdog");
	wd = fork();
	if (wd < 0)
		err(1, "fork");
	if (wd == 0) {
		/* A session of its own: a signal to gafreeze's process group (Ctrl-C, kill -KILL
		 * -PGID when a job is stopped) must not take the one process that thaws with it. */
		setsid();
		sigprocmask(SIG_SETMASK, &old_mask, NULL);
		close(sigfd);
		if (sync[0] >= 0)
			close(sync[0]); /* the command must see end-of-file when gafreeze is gone */
		close(to_wd[1]);
		close(from_wd[0]);
		watchdog(a, to_wd[0], from_wd[1], max_d, o->max_seconds);
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
	if (st != EXIT_OK) {
		/* No go for a command that is waiting: end-of-file tells it to do nothing. */
		if (sync[0] >= 0)
			close(sync[0]);
		/* A freeze was asked for and may have half happened: always thaw (and confirm). */
		if (st != GF_ALREADY_FROZEN && fr.sent) {
			request_thaw(&h);
			st = h.thaw.status == EXIT_OK ? st : GF_THAW_FAILED;
		}
		if (child > 0)
			end_command(child, sigfd, argv[0]);
		finish_watchdog(&h, wd);
		return st;
	}
	if (child > 0) {
		/* A command that has gone meanwhile does not read it: its exit ends the window. */
		if (!handshake_say(sync[0], HANDSHAKE_GO))
			warn("%s: saying go on --sync-fd", argv[0]);
		go_ms = monotonic_ms();
		close(sync[0]);
	} else {
		go_ms = monotonic_ms();
		child = start_command(argv, &old_mask, -1, -1);
	}
	command_status = child < 0 ? 1 : supervise(&h, child, argv[0], sigfd, &ended_ms);
	request_thaw(&h);
	finish_watchdog(&h, wd);
	t.freeze_ms = span(fr.sent_ms, fr.acked_ms);
	t.frozen_ms = span(fr.acked_ms, h.thaw.acked_ms);
	t.command_ms = span(go_ms, ended_ms);
	t.thaw_ms = span(h.thaw.started_ms, h.thaw.acked_ms);
	report_window(&fr, &h, &t, o->json, command_status);
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
