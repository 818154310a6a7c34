/* vma-extract --to-vma: a chain written out as one full archive, which every VMA reader,
 * Proxmox's included, restores to the same disks as the chain. */
#ifndef VMA_EXTRACT_CONSOLIDATE_H
#define VMA_EXTRACT_CONSOLIDATE_H
#include "chain.h"
#include "meter.h"
#include "sink.h"

struct consolidation {
	const char *output; /* a file that must not exist yet, or "-" for standard output */
	enum sink_codec codec;
	int level, threads;
	enum meter_mode meter;
};

/* 0, or -1 after saying why on standard error; no file is left under output's name then. */
int consolidate(struct chain *c, const struct consolidation *o);

/* The codec (for sink_parse_codec) an output file's name asks for, as vzdump names archives:
 * .zst zstd, .gz gzip, .lzo lzo, .xz xz, anything else none. */
const char *codec_of_name(const char *name);

#endif
