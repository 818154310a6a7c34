/*
 * A scripted peer for the fuzz targets that talk to QEMU or to its guest agent: the tools'
 * own code connects to a real unix socket, and a thread on the other end plays the fuzz input
 * as the bytes the peer sends, so that the framing, the deadlines and the reply matching run
 * exactly as in the tools.
 *
 * The input's first byte steers the delivery, the rest is what the peer sends:
 *   bit 7     keep the connection open after the last byte (the client's deadline ends the
 *             exchange), else the peer ends its side with EOF;
 *   bits 0-6  0: one write; N: writes of N bytes, each read by the client before the next is
 *             sent (the first 64; the rest in one write), so that lines arrive in pieces.
 * Whatever the client sends is read and dropped.
 */
#ifndef FUZZ_PEER_H
#define FUZZ_PEER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fuzz_peer {
	const uint8_t *data; /* what the peer sends */
	size_t size;
	size_t chunk; /* 0: all at once */
	bool keep_open;
	pthread_t thread;
};

/* The socket the peer listens on (created on the first call, removed at exit). */
const char *fuzz_peer_path(void);

/* Takes the control byte from DATA and starts serving the rest to the next connection.
 * Returns false (and starts nothing) for an empty input. */
bool fuzz_peer_start(struct fuzz_peer *p, const uint8_t *data, size_t size);

/* Waits for the peer once the client has closed its connection (or never connected). */
void fuzz_peer_finish(struct fuzz_peer *p);

#endif
