/* The "command key=value ..." syntax of qmp-shell: values are JSON when they parse as JSON,
 * strings otherwise; dotted keys build nested objects (addr.data.path=/x). */
#include <stdlib.h>
#include <string.h>

#include "qmpctl.h"
#include "xalloc.h"

json_t *value_from_text(const char *value)
{
	json_t *v = json_loads(value, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);

	return v ? v : json_string(value);
}

bool set_dotted(json_t *obj, const char *key, json_t *value, char *err, size_t errlen)
{
	char *copy = xstrdup(key), *part = copy, *dot;
	json_t *node = obj, *probe = json_string(key);
	bool ok = false;

	/* jansson refuses keys that are not UTF-8 (and frees the value it was given). */
	json_decref(probe);
	if (!value || !probe) {
		snprintf(err, errlen, "%s: not valid UTF-8", key);
		goto out;
	}
	while ((dot = strchr(part, '.'))) {
		json_t *child;

		*dot = '\0';
		if (*part == '\0')
			goto empty;
		child = json_object_get(node, part);
		if (!child) {
			child = json_object();
			json_object_set_new(node, part, child);
		} else if (!json_is_object(child)) {
			snprintf(err, errlen, "%s: '%s' already has a value that is not an object",
				 key, part);
			goto out;
		}
		node = child;
		part = dot + 1;
	}
	if (*part == '\0')
		goto empty;
	if (json_object_get(node, part)) {
		snprintf(err, errlen, "%s: given twice", key);
		goto out;
	}
	json_object_set(node, part, value);
	ok = true;
	goto out;
empty:
	snprintf(err, errlen, "%s: empty key", key);
out:
	json_decref(value);
	free(copy);
	return ok;
}

json_t *command_from_words(char **words, int nwords, char *err, size_t errlen)
{
	json_t *args = json_object(), *name;

	if (nwords < 1 || words[0][0] == '\0' || strchr(words[0], '=')) {
		snprintf(err, errlen, "%s: not a command name", nwords < 1 ? "" : words[0]);
		json_decref(args);
		return NULL;
	}
	name = json_string(words[0]);
	if (!name) {
		snprintf(err, errlen, "%s: not valid UTF-8", words[0]);
		json_decref(args);
		return NULL;
	}
	json_decref(name);
	for (int i = 1; i < nwords; i++) {
		char *eq = strchr(words[i], '='), *key;
		bool ok;

		if (!eq || eq == words[i]) {
			snprintf(err, errlen, "%s: not KEY=VALUE", words[i]);
			json_decref(args);
			return NULL;
		}
		key = xstrndup(words[i], (size_t)(eq - words[i]));
		ok = set_dotted(args, key, value_from_text(eq + 1), err, errlen);
		free(key);
		if (!ok) {
			json_decref(args);
			return NULL;
		}
	}
	if (json_object_size(args) == 0) {
		json_decref(args);
		args = NULL;
	}
	return qmp_command(words[0], args);
}

json_t *command_from_json(const char *text, char *err, size_t errlen)
{
	json_error_t error;
	json_t *cmd = json_loads(text, JSON_REJECT_DUPLICATES, &error);

	if (!cmd) {
		snprintf(err, errlen, "not JSON: %s (line %d, column %d)", error.text, error.line,
			 error.column);
		return NULL;
	}
	if (!json_is_object(cmd) || !json_is_string(json_object_get(cmd, "execute"))) {
		snprintf(err, errlen, "a command must be a JSON object with \"execute\"");
		json_decref(cmd);
		return NULL;
	}
	return cmd;
}

static void append(char **word, size_t *len, char c)
{
	*word = xrealloc(*word, *len + 2);
	(*word)[(*len)++] = c;
	(*word)[*len] = '\0';
}

void free_words(char **words, int n)
{
	for (int i = 0; i < n; i++)
		free(words[i]);
	free(words);
}

int split_words(const char *line, char ***words, char *err, size_t errlen)
{
	char **list = NULL, *word = NULL;
	size_t len = 0;
	int n = 0, depth = 0;
	char quote = 0;

	for (const char *p = line;; p++) {
		char c = *p;

		if (c == '\0' ||
		    (quote == 0 && depth == 0 &&
		     (c == ' ' || c == '\t' || c == '\n' || c == '\r'))) {
			if (c == '\0' && (quote != 0 || depth != 0)) {
				snprintf(err, errlen, "unbalanced %s",
					 quote == '\''          ? "'"
						 : quote == '"' ? "\""
								: "brackets");
				free(word);
				free_words(list, n);
				return -1;
			}
			if (word) {
				list = xrealloc(list, sizeof(*list) * (size_t)(n + 1));
				list[n++] = word;
				word = NULL;
				len = 0;
			}
			if (c == '\0')
				break;
			continue;
		}
		if (quote == '\'') {
			if (c == '\'')
				quote = 0;
			else
				append(&word, &len, c);
			continue;
		}
		if (quote == '"') {
			append(&word, &len, c);
			if (c == '\\' && p[1] != '\0')
				append(&word, &len, *++p);
			else if (c == '"')
				quote = 0;
			continue;
		}
		if (c == '\'') {
			quote = c;
			if (!word) /* '' is an empty word, not nothing */
				word = xcalloc(1, 1);
			continue;
		}
		if (c == '"')
			quote = c;
		else if (c == '{' || c == '[')
			depth++;
		else if ((c == '}' || c == ']') && depth > 0)
			depth--;
		append(&word, &len, c);
	}
	*words = list;
	return n;
}

json_t *command_from_line(const char *line, char *err, size_t errlen)
{
	const char *p = line + strspn(line, " \t\r\n");
	char **words;
	json_t *cmd;
	int n;

	err[0] = '\0';
	if (*p == '\0' || *p == '#')
		return NULL;
	if (*p == '{')
		return command_from_json(p, err, errlen);
	n = split_words(p, &words, err, errlen);
	if (n < 0)
		return NULL;
	cmd = command_from_words(words, n, err, errlen);
	free_words(words, n);
	return cmd;
}
