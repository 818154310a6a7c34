/* The listings of an opened archive, built in memory so that nothing is printed on failure. */
#ifndef VMA_EXTRACT_LISTING_H
#define VMA_EXTRACT_LISTING_H
#include <stddef.h>

#include "reader.h"

/* Proxmox's `vma list` lines, which restore tools parse. The caller frees the text. */
char *vma_listing(const struct vma_reader *r);
/* The same as one JSON object; NULL with the reason in why (a name that is not UTF-8). */
char *vma_listing_json(const struct vma_reader *r, char *why, size_t whylen);

#endif
