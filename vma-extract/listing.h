/* The listings of an opened archive, built in memory so that nothing is printed on failure. */
#ifndef VMA_EXTRACT_LISTING_H
#define VMA_EXTRACT_LISTING_H
#include <stddef.h>

#include "chain.h"
#include "reader.h"

/* Proxmox's `vma list` lines, which restore tools parse. The caller frees the text. */
char *vma_listing(const struct vma_reader *r);
/* The chain of an incremental archive, newest first, its full last: one line
 * "CHAIN: depth: N uuid: UUID file: PATH" per archive; "" for a full one. */
char *vma_chain_listing(const struct chain *c);
/* The same as one JSON object, with "chain" (a list of {file, uuid, depth}) for an incremental
 * archive when c is given; NULL with the reason in why (a name that is not UTF-8). */
char *vma_listing_json(const struct vma_reader *r, const struct chain *c, char *why, size_t whylen);

#endif
