/* gafreeze: freeze and thaw a guest's filesystems through qemu-ga, and guarantee the thaw. */
#ifndef GAFREEZE_H
#define GAFREEZE_H

#include <jansson.h>
#include <stdbool.h>

#include "deadline.h"
#include "exitcode.h"
#include "qmp.h"

/* gafreeze's own exit statuses, after the common ones (gafreeze(1) EXIT STATUS): EXIT_FAIL is
 * an error reply of the agent, EXIT_PEER an agent that is not there or does not answer. */
enum {
	GF_THAW_FAILED = EXIT_TOOL_SPECIFIC, /* 4: the guest may still be frozen */
	GF_ALREADY_FROZEN,                   /* 5: frozen by someone else; left alone */
};

/* A freeze not answered within -t is followed by status polls up to this many times -t. */
#define CEILING_FACTOR 6

struct agent {
	struct qmp q;
	const char *path;
	double timeout; /* -t: the bound on each request */
	bool connected;
	char why[600]; /* the last failure, for messages */
};

void agent_init(struct agent *a, const char *path, double timeout);
/* Runs NAME with ARGS (stolen, may be NULL) bounded by -t and by CEILING; connects (again)
 * when needed. *RET gets the "return" value (new reference) on success. Returns an exit
 * status: EXIT_OK, EXIT_FAIL (error reply) or EXIT_PEER. */
int agent_call(struct agent *a, const char *name, json_t *args, deadline_t ceiling, json_t **ret);
void agent_close(struct agent *a);
/* The agent's freeze status ("thawed"/"frozen") into STATUS (a static string). */
int agent_status(struct agent *a, deadline_t ceiling, const char **status);

struct freeze_result {
	bool sent;        /* a freeze request went out (so a thaw is owed) */
	long nfrozen;     /* -1 when the freeze was only confirmed by a status poll */
	int64_t sent_ms;  /* monotonic time the freeze request went out */
	int64_t acked_ms; /* monotonic time the agent acknowledged */
};
/* Checks the status, freezes (the listed mountpoints, or all), and when the reply is late
 * polls the status up to CEILING. Returns an exit status; GF_ALREADY_FROZEN refuses. */
int freeze_guest(struct agent *a, char **mounts, int nmounts, deadline_t ceiling,
		 struct freeze_result *r);

struct thaw_result {
	long nthawed;
	int64_t acked_ms;
};
/* Thaws and confirms "thawed" with a status call, retrying until CEILING. Returns EXIT_OK or
 * GF_THAW_FAILED (after saying so loudly). */
int thaw_guest(struct agent *a, deadline_t ceiling, struct thaw_result *r);

/* hold.c */
struct hold_options {
	double max_seconds; /* --max */
	bool json;
	int sync_fd; /* --sync-fd: the command's end of the ready/go socket, or -1 */
};
int hold(struct agent *a, const struct hold_options *o, char **argv);

#endif
