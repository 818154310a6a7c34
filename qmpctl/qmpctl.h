/* qmpctl: a QMP client for people and scripts. Declarations shared by its files. */
#ifndef QMPCTL_H
#define QMPCTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "deadline.h"
#include "exitcode.h"
#include "qmp.h"

/* keyvalue.c: qmp-shell's "command key=value ..." syntax. */
json_t *command_from_words(char **words, int nwords, char *err, size_t errlen);
/* Splits a line into words: blanks separate words except inside quotes or {} []; single
 * quotes are removed, double quotes stay (they are JSON). Returns the count or -1. */
int split_words(const char *line, char ***words, char *err, size_t errlen);
void free_words(char **words, int n);
/* A line of a batch file or the prompt: a JSON object, or the key=value form. NULL with an
 * empty ERR for a blank or comment line. */
json_t *command_from_line(const char *line, char *err, size_t errlen);
/* A JSON text that must be a whole command object. */
json_t *command_from_json(const char *text, char *err, size_t errlen);
/* VALUE as JSON when it parses as JSON, else as a string. */
json_t *value_from_text(const char *value);
/* Sets the dotted KEY in OBJ to VALUE (stolen). */
bool set_dotted(json_t *obj, const char *key, json_t *value, char *err, size_t errlen);

/* fds.c: --fd and --add-fd. */
struct fd_spec {
	bool add_fd; /* add-fd into an fdset, else getfd by name */
	char *name;  /* fdname, or the fdset id as text */
	long fdset;
	int fd;            /* the descriptor to send, once opened */
	bool opened;       /* we opened it (close after sending) */
	bool sent;         /* QEMU has it */
	char *listen_path; /* a socket we created: removed again if QEMU never got it */
	const char *arg;   /* as given, for messages */
};
/* Parses NAME=SPEC (getfd) or SET=SPEC (add-fd) and opens what SPEC names. Returns an exit
 * status (EXIT_OK on success) after printing the reason. */
int fd_spec_setup(struct fd_spec *spec, const char *arg, bool add_fd, deadline_t d);
/* Sends the fd with getfd or add-fd; prints add-fd's result to OUT. */
int fd_spec_send(struct fd_spec *spec, struct qmp *q, deadline_t d, FILE *out, int json_flags);
void fd_spec_close(struct fd_spec *spec);

/* events.c: --wait-event and --match. */
struct event_filter {
	char **names;
	int nnames;
	json_t *match; /* object: dotted key -> value, all must equal */
};
bool event_filter_add_names(struct event_filter *f, const char *list);
bool event_filter_add_match(struct event_filter *f, const char *keyvalue, char *err, size_t errlen);
bool event_matches(const struct event_filter *f, json_t *event);
void event_filter_free(struct event_filter *f);

/* interactive.c: the prompt, for QEMU or (AGENT) a guest agent. Returns an exit status.
 * interactive_load() first loads libedit: 0, or -1 with "cannot load ...: why" in err. */
int interactive_load(char *err, size_t errlen);
int run_interactive(struct qmp *q, bool agent, double timeout, int json_flags);

/* main.c helpers used by the others. */
/* Runs CMD in QMP, or with AGENT (-a) in the guest agent's dialect. */
enum qmp_status execute_command(struct qmp *q, bool agent, json_t *cmd, deadline_t d,
				json_t **reply);
int status_to_exit(enum qmp_status st);
void print_json(FILE *out, json_t *value, int json_flags);
void report_failure(struct qmp *q, json_t *cmd, enum qmp_status st);

#endif
