/* --wait-event NAME[,NAME...] and --match KEY=VALUE: which event ends the wait. */
#include <stdlib.h>
#include <string.h>

#include "qmpctl.h"
#include "xalloc.h"

bool event_filter_add_names(struct event_filter *f, const char *list)
{
	char *copy = xstrdup(list), *save = NULL;

	for (char *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
		f->names = xrealloc(f->names, sizeof(*f->names) * (size_t)(f->nnames + 1));
		f->names[f->nnames++] = xstrdup(name);
	}
	free(copy);
	return f->nnames > 0;
}

bool event_filter_add_match(struct event_filter *f, const char *keyvalue, char *err, size_t errlen)
{
	const char *eq = strchr(keyvalue, '=');
	char *key;
	bool ok;

	if (!eq || eq == keyvalue) {
		snprintf(err, errlen, "--match %s: expected KEY=VALUE", keyvalue);
		return false;
	}
	if (!f->match)
		f->match = json_object();
	key = xstrndup(keyvalue, (size_t)(eq - keyvalue));
	/* Kept flat: each dotted key is looked up as a path into the event's data. */
	ok = json_object_get(f->match, key) == NULL;
	if (ok)
		json_object_set_new(f->match, key, value_from_text(eq + 1));
	else
		snprintf(err, errlen, "--match %s: key given twice", keyvalue);
	free(key);
	return ok;
}

/* The member at dotted PATH below OBJ, or NULL. */
static json_t *lookup(json_t *obj, const char *path)
{
	char *copy = xstrdup(path), *save = NULL;
	json_t *node = obj;

	for (char *part = strtok_r(copy, ".", &save); part && node;
	     part = strtok_r(NULL, ".", &save))
		node = json_object_get(node, part);
	free(copy);
	return node;
}

bool event_matches(const struct event_filter *f, json_t *event)
{
	const char *name = json_string_value(json_object_get(event, "event"));
	json_t *data = json_object_get(event, "data");
	const char *key;
	json_t *want;
	bool named = f->nnames == 0;

	for (int i = 0; i < f->nnames && name; i++)
		if (strcmp(f->names[i], name) == 0)
			named = true;
	if (!named)
		return false;
	json_object_foreach(f->match, key, want)
	{
		if (!json_equal(lookup(data, key), want))
			return false;
	}
	return true;
}

void event_filter_free(struct event_filter *f)
{
	for (int i = 0; i < f->nnames; i++)
		free(f->names[i]);
	free(f->names);
	json_decref(f->match);
	memset(f, 0, sizeof(*f));
}
