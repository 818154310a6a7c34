/* fuzz-sources: fuzz/peer.c qmpctl/events.c qmpctl/keyvalue.c */
/*
 * What QEMU sends on its monitor socket (greeting, replies, events), played by fuzz/peer.c
 * after a control byte (peer.h), into the QMP client the tools use: qmp_open (greeting and
 * qmp_capabilities), a few qmp_execute calls as qmpctl and vzdump.sh make them, then
 * qmpctl's --wait-event loop (qmp_next_event, event_matches) until the stream ends.
 * Must neither crash nor hang: when the peer ends with EOF, running into the deadline
 * instead is a hang, and aborts.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "peer.h"
#include "qmp.h"
#include "qmpctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const commands[] = {"query-status", "query-block", "cont", "quit"};

/* Each wait: short when the peer keeps the connection open (the deadline is the end of
 * the exchange), long otherwise (only a hang reaches it). */
static deadline_t step_deadline(const struct fuzz_peer *p)
{
	return deadline_in(p->keep_open ? 0.01 : 5.0);
}

static void check_no_hang(const struct fuzz_peer *p, enum qmp_status st)
{
	if (st == QMP_TIMEOUT && !p->keep_open)
		abort(); /* the stream had ended: the client missed the EOF */
}

static void run_session(struct qmp *q, const struct fuzz_peer *p)
{
	struct event_filter filter = {0};
	char err[256];
	enum qmp_status st;
	json_t *reply = NULL, *event = NULL;

	st = qmp_open(q, fuzz_peer_path(), step_deadline(p));
	check_no_hang(p, st);
	if (st != QMP_OK)
		return;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		json_t *cmd = qmp_command(commands[i], NULL);

		st = qmp_execute(q, cmd, NULL, 0, step_deadline(p), &reply);
		json_decref(cmd);
		check_no_hang(p, st);
		if (st == QMP_ERROR)
			(void)qmp_error_text(reply);
		json_decref(reply);
		if (st != QMP_OK && st != QMP_ERROR)
			return;
	}
	/* qmpctl -w BLOCK_JOB_COMPLETED,JOB_STATUS_CHANGE -m device=drive-scsi0 */
	event_filter_add_names(&filter, "BLOCK_JOB_COMPLETED,JOB_STATUS_CHANGE");
	event_filter_add_match(&filter, "device=drive-scsi0", err, sizeof(err));
	for (;;) {
		st = qmp_next_event(q, step_deadline(p), &event);
		check_no_hang(p, st);
		if (st != QMP_OK)
			break;
		(void)event_matches(&filter, event);
		json_decref(event);
	}
	event_filter_free(&filter);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_peer peer;
	struct qmp q;

	if (!fuzz_peer_start(&peer, data, size))
		return 0;
	run_session(&q, &peer);
	qmp_close(&q);
	fuzz_peer_finish(&peer);
	return 0;
}
