/* The guest-agent dialect on top of struct qmp: no greeting and no ids, a resync with 0xFF +
 * guest-sync-delimited instead. */
#ifndef VZ_QGA_H
#define VZ_QGA_H

#include "qmp.h"

/* Connects to the agent's socket at PATH (retrying until D); the first command resyncs.
 * Closed with qmp_close. */
enum qmp_status qga_open(struct qmp *q, const char *path, deadline_t d);

/* The stream position is unknown (someone else may have spoken on it, a request may still be
 * in flight): the next command resyncs first. */
void qga_mark_unsynced(struct qmp *q);

/*
 * Brings the stream back to a known point: sends 0xFF (so the agent drops half-read input)
 * and guest-sync-delimited with a random id, discards everything through the next 0xFF
 * (qemu-ga 7.2 first answers the 0xFF with a parse-error line) and skips replies with other
 * ids (late answers to commands that timed out) until its own id comes back.
 */
enum qmp_status qga_resync(struct qmp *q, deadline_t d);

/* Runs an agent command: resyncs first when needed, and marks the stream for resync after
 * any timeout, so a late reply is never taken for the answer to the next command. */
enum qmp_status qga_execute(struct qmp *q, json_t *cmd, deadline_t d, json_t **reply);

#endif
