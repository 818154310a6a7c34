/* gafreeze: make a guest's filesystems consistent for the instant of a snapshot through
 * qemu-ga, and make sure they are thawed again. */
#include <err.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "gafreeze.h"

#define DEFAULT_TIMEOUT 10.0
#define DEFAULT_MAX 10.0

static const char short_opts[] = "hs:t:";

enum { OPT_MAX = CHAR_MAX + 1, OPT_JSON, OPT_SYNC_FD };

static const struct option long_opts[] = {
	{"help", no_argument, NULL, 'h'},
	{"socket", required_argument, NULL, 's'},
	{"timeout", required_argument, NULL, 't'},
	{"max", required_argument, NULL, OPT_MAX},
	{"json", no_argument, NULL, OPT_JSON},
	{"sync-fd", required_argument, NULL, OPT_SYNC_FD},
	CLI_LIST_OPTIONS,
	{NULL, 0, NULL, 0},
};

/* Exactly the SYNOPSIS of man/gafreeze.1. */
const char usage_synopsis[] =
	"gafreeze -s socket [-t seconds] [--json] ping | info | status\n"
	"gafreeze -s socket [-t seconds] [--json] freeze [mountpoint ...]\n"
	"gafreeze -s socket [-t seconds] [--json] thaw\n"
	"gafreeze -s socket [-t seconds] [--max seconds] [--sync-fd fd] [--json] hold --\n"
	"         command [arg ...]\n";

/* Prints TEXT, or the JSON value with --json, at the very end (nothing on failure). */
static void print_result(bool json, json_t *value, const char *text)
{
	if (json) {
		json_dumpf(value, stdout, JSON_COMPACT | JSON_ENCODE_ANY);
		putchar('\n');
	} else if (text) {
		puts(text);
	}
}

static int cmd_simple(struct agent *a, const char *name, bool json)
{
	json_t *ret;
	int st = agent_call(a, name, NULL, DEADLINE_NEVER, &ret);

	if (st != EXIT_OK) {
		warnx("%s", a->why);
		return st;
	}
	if (strcmp(name, "guest-fsfreeze-status") == 0)
		print_result(json, ret, json_is_string(ret) ? json_string_value(ret) : "?");
	else
		print_result(json, ret, NULL);
	json_decref(ret);
	return EXIT_OK;
}

/* info: the agent's version and whether the freeze commands are enabled. */
static int cmd_info(struct agent *a, bool json)
{
	static const char *const wanted[] = {"guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list",
					     "guest-fsfreeze-status", "guest-fsfreeze-thaw"};
	json_t *ret, *cmds, *c;
	char *text = NULL;
	size_t len = 0, i;
	FILE *out;
	int st = agent_call(a, "guest-info", NULL, DEADLINE_NEVER, &ret);

	if (st != EXIT_OK) {
		warnx("%s", a->why);
		return st;
	}
	out = open_memstream(&text, &len);
	fprintf(out, "version %s\n", json_string_value(json_object_get(ret, "version")) ?: "?");
	cmds = json_object_get(ret, "supported_commands");
	for (size_t w = 0; w < sizeof(wanted) / sizeof(wanted[0]); w++) {
		const char *state = "missing";

		json_array_foreach(cmds, i, c)
		{
			const char *name = json_string_value(json_object_get(c, "name"));

			if (name && strcmp(name, wanted[w]) == 0)
				state = json_is_true(json_object_get(c, "enabled")) ? "enabled"
										    : "disabled";
		}
		fprintf(out, "%s %s\n", wanted[w], state);
	}
	fclose(out);
	if (json)
		print_result(true, ret, NULL);
	else
		fputs(text, stdout);
	free(text);
	json_decref(ret);
	return EXIT_OK;
}

static int cmd_freeze(struct agent *a, char **mounts, int nmounts, bool json)
{
	deadline_t ceiling = deadline_in(a->timeout * CEILING_FACTOR);
	struct freeze_result r;
	struct thaw_result tr;
	char count[32];
	int st = freeze_guest(a, mounts, nmounts, ceiling, &r);

	if (st == EXIT_OK) {
		json_t *v = r.nfrozen >= 0 ? json_integer(r.nfrozen) : json_null();

		snprintf(count, sizeof(count), "%ld", r.nfrozen);
		print_result(json, v, r.nfrozen >= 0 ? count : "unknown");
		json_decref(v);
		return EXIT_OK;
	}
	if (!r.sent)
		return st; /* refused before any freeze was asked for: nothing to undo */
	/* The freeze failed or never answered: the agent may have frozen some filesystems
	 * anyway. Always thaw, and confirm it. */
	warnx("thawing, since the freeze did not complete");
	if (thaw_guest(a, deadline_in(a->timeout * CEILING_FACTOR), &tr) != EXIT_OK)
		return GF_THAW_FAILED;
	return st;
}

static int cmd_thaw(struct agent *a, bool json)
{
	struct thaw_result r;
	char count[32];
	int st = thaw_guest(a, deadline_in(a->timeout * CEILING_FACTOR), &r);
	json_t *v;

	if (st != EXIT_OK)
		return st;
	v = r.nthawed >= 0 ? json_integer(r.nthawed) : json_null();
	snprintf(count, sizeof(count), "%ld", r.nthawed);
	print_result(json, v, r.nthawed >= 0 ? count : "unknown");
	json_decref(v);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL, *sub;
	double timeout = DEFAULT_TIMEOUT;
	struct hold_options ho = {.max_seconds = DEFAULT_MAX, .sync_fd = -1};
	bool json = false;
	struct agent a;
	int c, st;

	/* hold's watchdog is a second process on the same stderr. Unbuffered, each message goes
	 * out in three writes (name, text, line end) and the two processes' lines can cut into
	 * each other ("gafreeze: gafreeze: …"), so that the last line, which the driver takes as
	 * the reason, is a fragment. Line-buffered, each line is one write. */
	setvbuf(stderr, NULL, _IOLBF, 0);
	while ((c = cli_getopt(argc, argv, short_opts, long_opts)) != -1) {
		switch (c) {
		case 's':
			if (*optarg == '\0')
				usage_error("-s: expected a socket path, not an empty one");
			socket_path = optarg;
			break;
		case 't':
			if (!parse_seconds(optarg, &timeout) || timeout <= 0)
				usage_error("-t: expected a positive number of seconds");
			break;
		case OPT_MAX:
			if (!parse_seconds(optarg, &ho.max_seconds) || ho.max_seconds <= 0)
				usage_error("--max: expected a positive number of seconds");
			break;
		case OPT_JSON:
			json = true;
			break;
		case OPT_SYNC_FD:
			if (!parse_fd_number(optarg, &ho.sync_fd) || ho.sync_fd <= STDERR_FILENO)
				usage_error("--sync-fd: expected a descriptor number above 2");
			break;
		}
	}
	argc -= optind;
	argv += optind;
	if (!socket_path)
		usage_error("-s SOCKET is required");
	if (argc < 1)
		usage_error("which command: ping, info, status, freeze, thaw or hold?");
	sub = argv[0];
	if (ho.sync_fd >= 0 && strcmp(sub, "hold") != 0)
		usage_error("--sync-fd is for hold only");
	agent_init(&a, socket_path, timeout);
	if (strcmp(sub, "hold") == 0) {
		if (argc < 2)
			usage_error("hold needs a command to run");
		ho.json = json;
		st = hold(&a, &ho, argv + 1);
	} else if (strcmp(sub, "freeze") == 0) {
		for (int i = 1; i < argc; i++) {
			json_t *probe = json_string(argv[i]);

			/* json_array_append_new would drop it silently, freezing the others. */
			if (!probe)
				usage_error("%s: a mountpoint must be UTF-8 (JSON cannot carry it)",
					    argv[i]);
			json_decref(probe);
		}
		st = cmd_freeze(&a, argv + 1, argc - 1, json);
	} else if (argc > 1) {
		usage_error("too many arguments");
	} else if (strcmp(sub, "ping") == 0) {
		st = cmd_simple(&a, "guest-ping", json);
	} else if (strcmp(sub, "status") == 0) {
		st = cmd_simple(&a, "guest-fsfreeze-status", json);
	} else if (strcmp(sub, "info") == 0) {
		st = cmd_info(&a, json);
	} else if (strcmp(sub, "thaw") == 0) {
		st = cmd_thaw(&a, json);
	} else {
		usage_error("unknown command");
	}
	agent_close(&a);
	if (fflush(stdout) != 0 && st == EXIT_OK)
		err(EXIT_FAIL, "stdout");
	return st;
}
