/* qmpctl: run QMP commands against a QEMU monitor socket (or a guest agent with -a), for
 * people at a prompt and for scripts that need exit statuses and clean JSON on stdout. */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli.h"
#include "handshake.h"
#include "qga.h"
#include "qmpctl.h"
#include "xalloc.h"

#define DEFAULT_TIMEOUT 10.0

static const char short_opts[] = "acef:hH:km:ps:t:w:";

enum { OPT_JSON = CHAR_MAX + 1, OPT_FD, OPT_ADD_FD, OPT_SYNC_FD, OPT_POLL };

static const struct option long_opts[] = {
	{"agent", no_argument, NULL, 'a'},
	{"compact", no_argument, NULL, 'c'},
	{"events", no_argument, NULL, 'e'},
	{"file", required_argument, NULL, 'f'},
	{"help", no_argument, NULL, 'h'},
	{"hmp", required_argument, NULL, 'H'},
	{"keep-going", no_argument, NULL, 'k'},
	{"match", required_argument, NULL, 'm'},
	{"pretty", no_argument, NULL, 'p'},
	{"socket", required_argument, NULL, 's'},
	{"timeout", required_argument, NULL, 't'},
	{"wait-event", required_argument, NULL, 'w'},
	{"json", required_argument, NULL, OPT_JSON},
	{"fd", required_argument, NULL, OPT_FD},
	{"add-fd", required_argument, NULL, OPT_ADD_FD},
	{"sync-fd", required_argument, NULL, OPT_SYNC_FD},
	{"poll", required_argument, NULL, OPT_POLL},
	CLI_LIST_OPTIONS,
	{NULL, 0, NULL, 0},
};

/* Exactly the SYNOPSIS of man/qmpctl.1. */
const char usage_synopsis[] =
	"qmpctl -s socket [-acekp] [-t seconds] [--fd name=spec] [--add-fd set=spec]\n"
	"       [--sync-fd fd] [-w event[,event ...]] [-m key=value] [--poll seconds]\n"
	"       [-f file | -H hmp-command | --json object | command [key=value ...]]\n";

struct options {
	const char *socket;
	double timeout;
	bool agent, compact, pretty, events, keep_going;
	const char *file, *hmp, *json;
	struct event_filter wait;
	bool waiting;
	const char **fd_args;
	bool *fd_is_add;
	int nfds;
	int sync_fd; /* --sync-fd, or -1 */
	double poll; /* --poll SECONDS, or 0 */
};

int status_to_exit(enum qmp_status st)
{
	return st == QMP_OK ? EXIT_OK : st == QMP_ERROR ? EXIT_FAIL : EXIT_PEER;
}

void print_json(FILE *out, json_t *value, int json_flags)
{
	json_dumpf(value, out, json_flags | JSON_ENCODE_ANY);
	fputc('\n', out);
}

static const char *socket_path;

/* The one place that tells the two dialects apart: the commands are the same, the framing
 * is not (ids and fds for QMP, resyncs for the agent). -a excludes fds. */
enum qmp_status execute_command(struct qmp *q, bool agent, json_t *cmd, deadline_t d,
				json_t **reply)
{
	return agent ? qga_execute(q, cmd, d, reply) : qmp_execute(q, cmd, NULL, 0, d, reply);
}

void report_failure(struct qmp *q, json_t *cmd, enum qmp_status st)
{
	const char *name = json_string_value(json_object_get(cmd, "execute"));
	json_t *line = json_object_get(cmd, "line");
	char where[32] = "";

	if (line)
		snprintf(where, sizeof(where), "line %d: ", (int)json_integer_value(line));
	if (st == QMP_ERROR)
		warnx("%s%s: %s", where, name ? name : "command", q->why);
	else
		warnx("%s: %s%s", socket_path, where, q->why);
}

/* HMP text as a terminal expects it: QEMU ends its lines with CRLF. */
static void print_hmp_text(FILE *out, const char *text)
{
	for (; *text; text++)
		if (!(text[0] == '\r' && text[1] == '\n'))
			fputc(*text, out);
}

/* HMP has no error replies: human-monitor-command succeeds and its text says what went wrong.
 * An unknown command is told by the text QEMU prints for it (7.2: "unknown command: 'foo'"),
 * returned trimmed of its line end, or NULL. */
static const char *hmp_unknown_command(const char *text, int *len)
{
	static const char prefix[] = "unknown command: ";

	if (strncmp(text, prefix, sizeof(prefix) - 1) != 0)
		return NULL;
	*len = (int)strcspn(text, "\r\n");
	return text;
}

static char *read_all(FILE *fp)
{
	char *text = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&text, &len);
	char buf[8192];
	size_t n;

	while ((n = fread(buf, 1, sizeof(buf), fp)) > 0)
		fwrite(buf, 1, n, mem);
	fclose(mem);
	return text;
}

/* Reads a batch (one command per line); a bad line is a usage error naming its place. */
static json_t *read_batch(const char *path)
{
	FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	json_t *cmds = json_array();
	char *line = NULL, why[512];
	size_t cap = 0;
	int lineno = 0;

	if (!fp)
		err(EXIT_FAIL, "%s", path);
	while (getline(&line, &cap, fp) >= 0) {
		json_t *cmd;

		line[strcspn(line, "\r\n")] = '\0';
		cmd = command_from_line(line, why, sizeof(why));
		lineno++;
		if (!cmd && why[0] != '\0') {
			errx(EXIT_USAGE, "%s:%d: %s", strcmp(path, "-") ? path : "stdin", lineno,
			     why);
		}
		if (cmd) {
			json_object_set_new(cmd, "line", json_integer(lineno));
			json_array_append_new(cmds, cmd);
		}
	}
	free(line);
	if (fp != stdin)
		fclose(fp);
	return cmds;
}

static void parse_options(int argc, char **argv, struct options *o)
{
	char why[512];
	int c;

	memset(o, 0, sizeof(*o));
	o->timeout = DEFAULT_TIMEOUT;
	o->sync_fd = -1;
	o->fd_args = xcalloc((size_t)argc, sizeof(*o->fd_args));
	o->fd_is_add = xcalloc((size_t)argc, sizeof(*o->fd_is_add));
	while ((c = cli_getopt(argc, argv, short_opts, long_opts)) != -1) {
		switch (c) {
		case 'a':
			o->agent = true;
			break;
		case 'c':
			o->compact = true;
			break;
		case 'e':
			o->events = true;
			break;
		case 'f':
			o->file = optarg;
			break;
		case 'H':
			o->hmp = optarg;
			break;
		case 'k':
			o->keep_going = true;
			break;
		case 'm':
			if (!event_filter_add_match(&o->wait, optarg, why, sizeof(why)))
				usage_error("%s", why);
			break;
		case 'p':
			o->pretty = true;
			break;
		case 's':
			if (*optarg == '\0')
				usage_error("-s: expected a socket path, not an empty one");
			o->socket = optarg;
			break;
		case 't':
			if (!parse_seconds(optarg, &o->timeout))
				usage_error("-t: expected a number of seconds");
			break;
		case 'w':
			if (!event_filter_add_names(&o->wait, optarg))
				usage_error("-w: expected event names");
			o->waiting = true;
			break;
		case OPT_JSON:
			o->json = optarg;
			break;
		case OPT_POLL:
			if (!parse_seconds(optarg, &o->poll) || o->poll <= 0)
				usage_error("--poll: expected a positive number of seconds");
			break;
		case OPT_SYNC_FD:
			if (!parse_fd_number(optarg, &o->sync_fd))
				usage_error("--sync-fd: expected a descriptor number");
			if (fcntl(o->sync_fd, F_GETFD) < 0)
				usage_error("--sync-fd %d: not an open descriptor", o->sync_fd);
			break;
		case OPT_FD:
		case OPT_ADD_FD:
			o->fd_is_add[o->nfds] = c == OPT_ADD_FD;
			o->fd_args[o->nfds++] = optarg;
			break;
		}
	}
	if (!o->socket)
		usage_error("-s SOCKET is required");
	if (o->compact && o->pretty)
		usage_error("-c and -p exclude each other");
	if (o->events && o->waiting)
		usage_error("-e and -w exclude each other");
	if (o->wait.match && !o->waiting)
		usage_error("-m needs -w");
	if (o->poll > 0 && !o->waiting)
		usage_error("--poll needs -w");
	if (o->sync_fd >= 0 && o->sync_fd <= STDERR_FILENO)
		usage_error("--sync-fd: not standard input, output or error");
	if (o->agent && (o->events || o->waiting || o->nfds > 0 || o->hmp))
		usage_error("-a does not go with events, fds or -H");
}

/* Everything the command line asks to run, as a JSON array of command objects. NULL means
 * no command at all (interactive, or only fds/events). */
static json_t *commands_from_args(struct options *o, int argc, char **argv)
{
	int sources = (argc > 0) + (o->file != NULL) + (o->hmp != NULL) + (o->json != NULL);
	json_t *cmds = json_array(), *cmd = NULL;
	char why[512];

	if (sources > 1)
		usage_error("give one of: a command, -f, -H, --json");
	if (o->file) {
		json_decref(cmds);
		return read_batch(o->file);
	}
	if (o->hmp) {
		cmd = qmp_command("human-monitor-command",
				  json_pack("{s:s}", "command-line", o->hmp));
		json_object_set_new(cmd, "hmp", json_true());
	} else if (o->json || (argc == 1 && strcmp(argv[0], "-") == 0)) {
		char *text = o->json && strcmp(o->json, "-") != 0 ? xstrdup(o->json)
								  : read_all(stdin);

		cmd = command_from_json(text, why, sizeof(why));
		free(text);
		if (!cmd)
			usage_error("%s", why);
	} else if (argc > 0) {
		cmd = command_from_words(argv, argc, why, sizeof(why));
		if (!cmd)
			usage_error("%s", why);
	} else if (!o->events && !o->waiting && o->nfds == 0 && !isatty(STDIN_FILENO)) {
		json_decref(cmds);
		return read_batch("-");
	} else {
		json_decref(cmds);
		return NULL;
	}
	json_array_append_new(cmds, cmd);
	return cmds;
}

/* Runs the commands, writing each result to OUT. Returns an exit status. */
static int run_commands(struct options *o, struct qmp *q, json_t *cmds, deadline_t d, FILE *out,
			int json_flags)
{
	bool batch = json_array_size(cmds) > 1 || o->file != NULL;
	int status = EXIT_OK;
	size_t i;
	json_t *cmd;

	json_array_foreach(cmds, i, cmd)
	{
		json_t *line = json_incref(json_object_get(cmd, "line"));
		bool hmp = json_object_get(cmd, "hmp") != NULL;
		json_t *reply = NULL, *ret;
		enum qmp_status st;
		const char *unknown = NULL;
		int unknown_len = 0;

		/* Our own annotations must not reach QEMU. */
		json_object_del(cmd, "line");
		json_object_del(cmd, "hmp");
		st = execute_command(q, o->agent, cmd, d, &reply);
		if (line)
			json_object_set(cmd, "line", line);
		ret = st == QMP_OK ? json_object_get(reply, "return") : NULL;
		if (hmp && json_is_string(ret))
			unknown = hmp_unknown_command(json_string_value(ret), &unknown_len);
		if (unknown) {
			warnx("human-monitor-command: %.*s", unknown_len, unknown);
			json_decref(line);
			json_decref(reply);
			return EXIT_FAIL;
		}
		if (st == QMP_OK) {
			if (hmp && json_is_string(ret))
				print_hmp_text(out, json_string_value(ret));
			else
				print_json(out, ret, batch ? JSON_COMPACT : json_flags);
		} else {
			report_failure(q, cmd, st);
			if (st == QMP_ERROR && o->keep_going) {
				/* Keep one output line per command so results stay aligned. */
				print_json(out, reply, JSON_COMPACT);
				status = EXIT_FAIL;
			} else {
				json_decref(line);
				json_decref(reply);
				return status_to_exit(st);
			}
		}
		json_decref(line);
		json_decref(reply);
	}
	return status;
}

/* -w: the first matching event to OUT. With --poll, none before the poll's end is no error. */
static int wait_for_event(struct options *o, struct qmp *q, deadline_t d, FILE *out, int json_flags)
{
	if (o->poll > 0)
		d = deadline_min(d, deadline_in(o->poll));
	for (;;) {
		json_t *ev = NULL;
		enum qmp_status st = qmp_next_event(q, d, &ev);

		if (st == QMP_TIMEOUT && o->poll > 0)
			return EXIT_OK;
		if (st != QMP_OK) {
			warnx("%s: waiting for %s: %s", o->socket, o->wait.names[0],
			      st == QMP_TIMEOUT ? "timed out" : q->why);
			return EXIT_PEER;
		}
		if (event_matches(&o->wait, ev)) {
			print_json(out, ev, json_flags);
			json_decref(ev);
			return EXIT_OK;
		}
		json_decref(ev);
	}
}

/* --events: every event as one line until the deadline, or until SIGINT, SIGTERM or SIGHUP
 * (taken through a signalfd, so a signal ends the wait cleanly with status 0). */
static int print_events(struct qmp *q, deadline_t d)
{
	sigset_t stop;
	int sigfd;

	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGHUP);
	sigprocmask(SIG_BLOCK, &stop, NULL);
	sigfd = signalfd(-1, &stop, SFD_CLOEXEC);
	q->jl.wake_fd = sigfd;
	for (;;) {
		json_t *ev = NULL;
		enum qmp_status st = qmp_next_event(q, d, &ev);

		if (st == QMP_TIMEOUT || st == QMP_WOKEN) {
			/* the natural ends of --events */
			q->jl.wake_fd = -1;
			if (sigfd >= 0)
				close(sigfd);
			return EXIT_OK;
		}
		if (st != QMP_OK) {
			warnx("%s: %s", socket_path, q->why);
			if (sigfd >= 0)
				close(sigfd);
			return EXIT_PEER;
		}
		print_json(stdout, ev, JSON_COMPACT);
		json_decref(ev);
		if (fflush(stdout) != 0) {
			/* SIGPIPE is ignored, so a reader that left (| head -n 1) shows up here:
			 * the natural end of --events too. Any other failure is one. */
			int saved = errno;

			q->jl.wake_fd = -1;
			if (sigfd >= 0)
				close(sigfd);
			clearerr(stdout);
			if (saved == EPIPE)
				return EXIT_OK;
			errno = saved;
			warn("stdout");
			return EXIT_FAIL;
		}
	}
}

/* --sync-fd: connected, negotiated and the descriptors handed over, say "ready" and wait
 * for "go" before running anything. End-of-file or another word means: run nothing. */
static int await_go(int fd, deadline_t d)
{
	struct handshake h = {.fd = fd};
	enum handshake_status st;

	if (!handshake_say(fd, HANDSHAKE_READY)) {
		warn("--sync-fd %d: saying ready", fd);
		return EXIT_PEER;
	}
	st = handshake_expect(&h, HANDSHAKE_GO, d);
	if (st == HANDSHAKE_LINE) {
		close(fd);
		return EXIT_OK;
	}
	if (st == HANDSHAKE_EOF)
		warnx("--sync-fd %d: no go (end of file): nothing was run", fd);
	else if (st == HANDSHAKE_TIMEOUT)
		warnx("--sync-fd %d: timed out waiting for go: nothing was run", fd);
	else
		warn("--sync-fd %d: no go: nothing was run", fd);
	return EXIT_PEER;
}

int main(int argc, char **argv)
{
	struct options o;
	struct fd_spec *fds;
	struct qmp q;
	json_t *cmds;
	deadline_t d;
	char *outbuf = NULL;
	size_t outlen = 0;
	FILE *out;
	int json_flags, status = EXIT_OK;
	enum qmp_status st;

	signal(SIGPIPE, SIG_IGN);
	parse_options(argc, argv, &o);
	argc -= optind;
	argv += optind;
	socket_path = o.socket;
	json_flags = o.compact                      ? JSON_COMPACT
		: o.pretty || isatty(STDOUT_FILENO) ? JSON_INDENT(4)
						    : JSON_COMPACT;
	cmds = commands_from_args(&o, argc, argv);
	/* Nothing to run: the prompt. */
	bool interactive = !cmds && !o.events && !o.waiting && o.nfds == 0;
	if (interactive && o.sync_fd >= 0)
		usage_error("--sync-fd needs something to run: a command, -f, -w or -e");
	d = deadline_in(o.timeout);

	fds = xcalloc((size_t)o.nfds + 1, sizeof(*fds));
	for (int i = 0; i < o.nfds; i++) {
		status = fd_spec_setup(&fds[i], o.fd_args[i], o.fd_is_add[i], d);
		if (status != EXIT_OK)
			goto out_nofds;
	}
	/* The prompt's line editor is loaded before QEMU is bothered. */
	char why[512];
	if (interactive && interactive_load(why, sizeof(why)) < 0) {
		warnx("%s", why);
		status = EXIT_FAIL;
		goto out_nofds;
	}
	st = o.agent ? qga_open(&q, o.socket, d) : qmp_open(&q, o.socket, d);
	if (st != QMP_OK) {
		warnx("%s: %s", o.socket, q.why);
		status = status_to_exit(st);
		goto out;
	}
	if (interactive) {
		status = run_interactive(&q, o.agent, o.timeout,
					 o.compact ? JSON_COMPACT : JSON_INDENT(4));
		goto out;
	}
	out = open_memstream(&outbuf, &outlen);
	for (int i = 0; i < o.nfds && status == EXIT_OK; i++) {
		status = fd_spec_send(&fds[i], &q, d, out, json_flags);
		fd_spec_close(&fds[i]);
	}
	if (status == EXIT_OK && o.sync_fd >= 0)
		status = await_go(o.sync_fd, d);
	if (status == EXIT_OK && cmds)
		status = run_commands(&o, &q, cmds, d, out, json_flags);
	if (status == EXIT_OK && o.waiting && o.poll > 0) {
		/* --poll: the replies go out before the wait, so that a script can read them
		 * and decide while the wait goes on; the event, if one comes, after them. */
		fclose(out);
		out = stdout;
		fwrite(outbuf, 1, outlen, stdout);
		if (fflush(stdout) != 0) {
			warn("stdout");
			status = EXIT_FAIL;
		}
	}
	if (status == EXIT_OK && o.waiting)
		status = wait_for_event(&o, &q, d, out, json_flags);
	if (out != stdout) {
		fclose(out);
		/* Atomic output: all of it when everything worked (or --keep-going), none
		 * otherwise. */
		if (status == EXIT_OK || (o.keep_going && status == EXIT_FAIL))
			fwrite(outbuf, 1, outlen, stdout);
	}
	if (status == EXIT_OK && o.events) {
		fflush(stdout);
		status = print_events(&q, d);
	}
	free(outbuf);
out:
	qmp_close(&q);
out_nofds:
	for (int i = 0; i < o.nfds; i++)
		fd_spec_close(&fds[i]);
	free(fds);
	json_decref(cmds);
	event_filter_free(&o.wait);
	free(o.fd_args);
	free(o.fd_is_add);
	if (fflush(stdout) != 0 && status == EXIT_OK) {
		warn("stdout");
		status = EXIT_FAIL;
	}
	return status;
}
