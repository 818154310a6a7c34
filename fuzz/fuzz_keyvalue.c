/* fuzz-sources: qmpctl/keyvalue.c qmpctl/events.c */
/*
 * qmpctl's command syntax: the input split at NUL bytes into words is its command line
 * (`qmpctl -s SOCK command key=value ...`: command_from_words), each word is also a line of
 * a batch file or of the prompt (command_from_line: JSON, or split_words and the key=value
 * form) and an argument of -m and -w (the event filter). Every command built is dumped as
 * qmpctl sends it, and must be a command object.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qmpctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_WORDS 64

static void check_command(json_t *cmd)
{
	char *text;

	if (!cmd)
		return;
	if (!json_is_object(cmd) || !json_is_string(json_object_get(cmd, "execute")))
		abort();
	text = json_dumps(cmd, JSON_COMPACT);
	if (!text)
		abort(); /* a command qmpctl could not send */
	free(text);
	json_decref(cmd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1), *words[MAX_WORDS], err[256];
	struct event_filter filter = {0};
	int n = 0;

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	for (size_t start = 0; start <= size && n < MAX_WORDS;) {
		words[n++] = copy + start;
		start += strlen(copy + start) + 1;
	}
	err[0] = '\0';
	check_command(command_from_words(words, n, err, sizeof(err)));
	for (int i = 0; i < n; i++) {
		err[0] = '\0';
		check_command(command_from_line(words[i], err, sizeof(err)));
		if (i > 0)
			event_filter_add_match(&filter, words[i], err, sizeof(err));
		else
			event_filter_add_names(&filter, words[i]);
	}
	event_filter_free(&filter);
	free(copy);
	return 0;
}
