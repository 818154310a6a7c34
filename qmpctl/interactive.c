/* The prompt: line editing and history from libedit, commands in the key=value syntax (or
 * JSON), results pretty-printed, errors reported without leaving. */
#include <editline/readline.h>
#include <err.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qmpctl.h"

#define HISTORY_LINES 1000

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

	using_history();
	stifle_history(HISTORY_LINES);
	if (hist)
		read_history(hist);
	printf("connected to %s; commands as: name key=value ... (Ctrl-D leaves)\n", q->path);
	for (;;) {
		json_t *cmd, *reply = NULL;
		enum qmp_status st;

		show_queued_events(q);
		fflush(stdout);
		line = readline(agent ? "(agent) " : "(qemu) ");
		if (!line)
			break;
		cmd = command_from_line(line, err, sizeof(err));
		if (line[strspn(line, " \t")] != '\0')
			add_history(line);
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
		write_history(hist);
	free(hist);
	if (status == EXIT_OK)
		putchar('\n');
	return status;
}
