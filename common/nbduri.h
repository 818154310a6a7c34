/* NBD URIs (nbd://, nbd+unix://, ...: libnbd's nbd_connect_uri(3)) told apart from file names,
 * without loading libnbd: vma-create's NBD sources, vma-extract's NBD targets. */
#ifndef VZ_NBDURI_H
#define VZ_NBDURI_H

#include <stdbool.h>

/* Whether spec starts with one of the NBD URI schemes. */
bool nbd_is_uri(const char *spec);

#endif
