/* What every tool's command line shares: usage messages in one format, and the hidden
 * --long-options and --short-options that list what the tool accepts (as nbdinfo has them),
 * for tests/man.bats and shell completion. */
#ifndef VZ_CLI_H
#define VZ_CLI_H

#include <getopt.h>
#include <stdbool.h>

#include "exitcode.h"

/* Each tool defines it: exactly the SYNOPSIS of its man page. */
extern const char usage_synopsis[];

/* -h: the synopsis on standard output, exit 0. */
_Noreturn void usage_help(void);
/* "usage: " and the synopsis on standard error, exit 2: for getopt's own errors, which it has
 * already explained. */
_Noreturn void usage(void);
/* "tool: what was wrong", then usage(). */
_Noreturn void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Values no tool uses for an option of its own. */
enum { OPT_LONG_OPTIONS = 0x10000, OPT_SHORT_OPTIONS };
/* The last entries of every tool's long option table, before the terminating zeros. */
#define CLI_LIST_OPTIONS                                                                           \
	{"long-options", no_argument, NULL, OPT_LONG_OPTIONS},                                     \
	{                                                                                          \
		"short-options", no_argument, NULL, OPT_SHORT_OPTIONS                              \
	}

/* For OPT_LONG_OPTIONS, every "--name" of LONG_OPTS, else every "-x" of the getopt string
 * SHORT_OPTS, one a line on standard output; exits 0. */
_Noreturn void list_options(int which, const char *short_opts, const struct option *long_opts);

/* getopt_long(3), doing itself what every tool does alike: -h (usage_help), the two option
 * lists, and usage() after getopt's own message about an unknown option or a missing
 * argument. Returns the tool's own options and -1. */
int cli_getopt(int argc, char **argv, const char *short_opts, const struct option *long_opts);

/* A descriptor number: digits only, up to INT_MAX. False when TEXT is not one. */
bool parse_fd_number(const char *text, int *fd);

#endif
