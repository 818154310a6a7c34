/* The framing both dialects share, for qmp.c and qga.c only: the tools go through qmp.h and
 * qga.h, so that which dialect a connection speaks is decided once, when it is opened. */
#ifndef VZ_QMP_PRIV_H
#define VZ_QMP_PRIV_H

#include "qmp.h"

/* Resets Q and connects to PATH, retrying until D; nothing is read or sent yet. */
enum qmp_status qmp_connect(struct qmp *q, const char *path, deadline_t d);
/* Sends one object, PREFIX bytes first (the agent's 0xFF), with FDS attached. */
enum qmp_status qmp_send(struct qmp *q, const char *prefix, json_t *obj, const int *fds,
			 size_t nfds, deadline_t d);
/* Reads one JSON object. */
enum qmp_status qmp_receive(struct qmp *q, deadline_t d, json_t **msg);
/* Sets q->why from FMT and returns ST. */
enum qmp_status qmp_fail(struct qmp *q, enum qmp_status st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
