/* A QMP connection to QEMU's monitor: framing, ids, replies, events queued while waiting.
 * The guest agent speaks a dialect of its own over the same struct (qga.h); which one a
 * connection speaks is the caller's choice when opening it, and qmp_execute is QMP only. */
#ifndef VZ_QMP_H
#define VZ_QMP_H

#include <jansson.h>
#include <stdbool.h>

#include "deadline.h"
#include "jsonline.h"

enum qmp_status {
	QMP_OK = 0,   /* a "return" reply */
	QMP_ERROR,    /* an "error" reply: the peer refused the command */
	QMP_TIMEOUT,  /* the deadline passed */
	QMP_DROPPED,  /* connection closed, or could not be made */
	QMP_PROTOCOL, /* the peer spoke something that is not QMP */
	QMP_WOKEN,    /* the connection's wake fd ended the wait (jsonline.h) */
};

struct qmp {
	struct jsonline jl;
	const char *path;  /* for messages */
	bool need_sync;    /* guest agent: the stream position is unknown; qga.c's own */
	unsigned long seq; /* next command id */
	json_t *events;    /* events received while waiting for replies, oldest first */
	json_t *greeting;
	char why[512]; /* what went wrong, for the caller's message */
};

/* Connects to the monitor at PATH (retrying until D), reads the greeting and negotiates
 * capabilities. */
enum qmp_status qmp_open(struct qmp *q, const char *path, deadline_t d);
/* Closes a connection of either dialect. */
void qmp_close(struct qmp *q);

/*
 * Runs CMD ({"execute": …, "arguments": …}; borrowed, an "id" is added for QMP) with FDS
 * attached to its bytes and waits for its reply until D. *REPLY gets the whole reply (new
 * reference) for QMP_OK and QMP_ERROR, NULL otherwise. Events meanwhile are queued.
 */
enum qmp_status qmp_execute(struct qmp *q, json_t *cmd, const int *fds, size_t nfds, deadline_t d,
			    json_t **reply);

/* Convenience: builds {"execute": NAME, "arguments": ARGS (stolen, may be NULL)}. */
json_t *qmp_command(const char *name, json_t *args);

/* The oldest queued event, or the next one to arrive before D (new reference). */
enum qmp_status qmp_next_event(struct qmp *q, deadline_t d, json_t **event);

/* "CLASS: desc" of an error reply, in a static buffer. */
const char *qmp_error_text(json_t *reply);

#endif
