/* The prompt: line editing and history from libedit, commands in the key=value syntax (or
 * JSON), results pretty-printed, errors reported without leaving. libedit (and libtinfo,
 * libbsd behind it) is loaded only for the prompt (dynlib.h), its functions called through
 * the table libedit. */
#include <editline/readline.h>
#include <err.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dynlib.h"
#include "qmpctl.h"

#define HISTORY_LINES 1000

/* Every libedit function this file calls: its readline(3) compatible interface. */
#define LIBEDIT_FUNCTIONS(X)                                                                       \
	X(readline)                                                                                \
	X(add_history)                                                                             \
	X(using_history)                                                                           \
	X(stifle_history)                                                                          \
	X(read_history)                                                                            \
	X(write_history)
DYNLIB_TABLE(libedit, "libedit.so.2", LIBEDIT_FUNCTIONS)

int interactive_load(char *err, size_t errlen) { return libedit_load(err, errlen); }

static char *history_path(void)
{
	const char *home = getenv("HOME");
	char *path = NULL;

	if (!home || *home == '\0')
		return NULL;
	if (asprintf(&path, "%s/.qmpctl_history", home) < 0)
		return NULL;
	return path;
}

/* Events arrive between commands; show them before the next prompt, like qmp-shell. */
static void show_queued_events(struct qmp *q)
{
	while (json_array_size(q->events) > 0) {
		print_json(stdout, json_array_get(q->events, 0), JSON_COMPACT);
		json_array_remove(q->events, 0);
	}
}

int run_interactive(struct qmp *q, bool agent, double timeout, int json_flags)
{
	char *hist = history_path(), *line, err[512];
	int status = EXIT_OK;

	libedit.using_history();
	libedit.stifle_history(HISTORY_LINES);
	if (hist)
		libedit.read_history(hist);
	printf("connected to %s; commands as: name key=value ... (Ctrl-D leaves)\n", q->path);
	for (;;) {
		json_t *cmd, *reply = NULL;
		enum qmp_status st;

		show_queued_events(q);
		fflush(stdout);
		line = libedit.readline(agent ? "(agent) " : "(qemu) ");
		if (!line)
			break;
		cmd = command_from_line(line, err, sizeof(err));
		if (line[strspn(line, " \t")] != '\0')
			libedit.add_history(line);
		free(line);
		if (!cmd) {
			if (err[0] != '\0')
				warnx("%s", err);
			continue;
		}
		st = execute_command(q, agent, cmd, deadline_in(timeout), &reply);
		if (st == QMP_OK)
			print_json(stdout, json_object_get(reply, "return"), json_flags);
		else
			report_failure(q, cmd, st);
		json_decref(cmd);
		json_decref(reply);
		if (st != QMP_OK && st != QMP_ERROR) {
			status = status_to_exit(st);
			break;
		}
	}
	if (hist)
		libedit.write_history(hist);
	free(hist);
	if (status == EXIT_OK)
		putchar('\n');
	return status;
}
