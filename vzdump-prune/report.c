/* Turns the marks into words. The report is built in memory and printed only on success. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"
#include "xalloc.h"

const char *mark_name(enum mark m)
{
	switch (m) {
	case MARK_KEEP:
		return "keep";
	case MARK_PROTECTED:
		return "protected";
	case MARK_RENAMED:
		return "renamed";
	case MARK_NONE:
	case MARK_REMOVE:
		break;
	}
	return "remove";
}

/*
 * File names are bytes. A non-standard name could hold control characters (which would break
 * the one-line-per-backup text) or invalid UTF-8 (which JSON cannot carry): such bytes are
 * shown as '?'. Standard names are plain ASCII and always shown as they are.
 */
static json_t *json_name(const char *name)
{
	json_t *s = json_string(name);
	char *copy;

	if (s)
		return s;
	copy = xstrdup(name);
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	s = json_string(copy);
	free(copy);
	return s;
}

static bool is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

static void print_name(FILE *f, const char *name)
{
	const char *p;

	for (p = name; *p && !is_control((unsigned char)*p); p++)
		;
	if (*p == '\0') { /* the usual case: print it as it is */
		fwrite(name, 1, (size_t)(p - name), f);
		return;
	}
	for (p = name; *p; p++)
		fputc(is_control((unsigned char)*p) ? '?' : *p, f);
}

/* What one period of a rule is called in a sentence. */
static const char *period_noun(enum rule r)
{
	static const char *const nouns[RULE_COUNT] = {
		"time", "hour", "day", "week", "month", "year",
	};

	return nouns[r];
}

/* The longest reason: "needed by " and a standard name (under 70 bytes). */
#define REASON_MAX 160

/* Writes the reason for B's mark into BUF. */
static void reason(const struct backup *b, char *buf, size_t size)
{
	switch (b->why) {
	case WHY_RULE:
		snprintf(buf, size, "%s %u/%u", rule_option(b->rule), b->count, b->limit);
		return;
	case WHY_KEEP_ALL:
		snprintf(buf, size, "keep-all");
		return;
	case WHY_DUPLICATE:
		if (b->rule == RULE_LAST)
			snprintf(buf, size, "same time as a kept backup");
		else
			snprintf(buf, size, "same %s as a newer kept backup", period_noun(b->rule));
		return;
	case WHY_COVERED:
		snprintf(buf, size, "%s already covered by a kept backup", period_noun(b->rule));
		return;
	case WHY_BEYOND:
		snprintf(buf, size, "beyond %s", rule_option(b->rule));
		return;
	case WHY_PROTECTED:
		snprintf(buf, size, "has a .protected marker");
		return;
	case WHY_RENAMED:
		snprintf(buf, size, "not a standard vzdump name");
		return;
	case WHY_NEEDED: /* a standard name: nothing to replace in it */
		snprintf(buf, size, "needed by %s", b->needed_by);
		return;
	case WHY_NONE:
		break;
	}
	snprintf(buf, size, "undecided");
}

char *report_text(const struct backup *list, size_t n)
{
	char *text = NULL, why[REASON_MAX];
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	if (!f)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		reason(&list[i], why, sizeof(why));
		fprintf(f, "%-9s ", mark_name(list[i].mark));
		print_name(f, list[i].name);
		fprintf(f, " %s\n", why);
	}
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	return text;
}

/* One object per line, built and dumped one at a time, so memory stays flat. */
char *report_json(const struct backup *list, size_t n)
{
	char *text = NULL, why[REASON_MAX];
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);
	bool ok = true;

	if (!f)
		return NULL;
	fputs(n == 0 ? "[" : "[\n", f);
	for (size_t i = 0; ok && i < n; i++) {
		const struct backup *b = &list[i];
		json_t *entry;
		char *line;

		reason(b, why, sizeof(why));
		entry = json_pack("{s:o, s:o, s:o, s:s, s:s}", "file", json_name(b->name), "vmid",
				  b->vmid == VMID_UNKNOWN ? json_null() : json_integer(b->vmid),
				  "ctime",
				  b->standard ? json_integer((json_int_t)b->ctime) : json_null(),
				  "mark", mark_name(b->mark), "reason", why);
		/* Only where there is one, so that the other objects stay as they were. */
		if (entry && b->why == WHY_NEEDED &&
		    json_object_set_new(entry, "needed_by", json_string(b->needed_by)) != 0) {
			json_decref(entry);
			entry = NULL;
		}
		line = entry ? json_dumps(entry, JSON_PRESERVE_ORDER) : NULL;
		if (line)
			fprintf(f, "  %s%s\n", line, i + 1 < n ? "," : "");
		else
			ok = false;
		free(line);
		json_decref(entry);
	}
	fputs("]\n", f);
	if (fclose(f) != 0 || !ok) {
		free(text);
		return NULL;
	}
	return text;
}
