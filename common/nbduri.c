/* NBD URIs told apart from file names (see nbduri.h). */
#include "nbduri.h"

#include <string.h>

bool nbd_is_uri(const char *spec)
{
	static const char *schemes[] = {"nbd://",       "nbds://",      "nbd+unix://",
					"nbds+unix://", "nbd+vsock://", "nbds+vsock://"};
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (strncmp(spec, schemes[i], strlen(schemes[i])) == 0)
			return true;
	return false;
}
