/* Usage messages and the option lists (see cli.h). */
#include "cli.h"

#include <err.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void usage_help(void)
{
	fputs(usage_synopsis, stdout);
	exit(EXIT_OK);
}

void usage(void)
{
	fprintf(stderr, "usage: %s", usage_synopsis);
	exit(EXIT_USAGE);
}

void usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarnx(fmt, ap);
	va_end(ap);
	usage();
}

void list_options(int which, const char *short_opts, const struct option *long_opts)
{
	if (which == OPT_LONG_OPTIONS) {
		for (; long_opts->name; long_opts++)
			printf("--%s\n", long_opts->name);
	} else {
		for (; *short_opts != '\0'; short_opts++)
			if (*short_opts != ':' && *short_opts != '+' && *short_opts != '-')
				printf("-%c\n", *short_opts);
	}
	if (fflush(stdout) != 0)
		err(EXIT_FAIL, "stdout");
	exit(EXIT_OK);
}

int cli_getopt(int argc, char **argv, const char *short_opts, const struct option *long_opts)
{
	int c = getopt_long(argc, argv, short_opts, long_opts, NULL);

	switch (c) {
	case 'h':
		usage_help();
	case OPT_LONG_OPTIONS:
	case OPT_SHORT_OPTIONS:
		list_options(c, short_opts, long_opts);
	case '?':
		usage();
	default:
		return c;
	}
}

bool parse_fd_number(const char *text, int *fd)
{
	char *end;
	long v;

	if (*text < '0' || *text > '9')
		return false;
	errno = 0;
	v = strtol(text, &end, 10);
	if (errno != 0 || *end != '\0' || v > INT_MAX)
		return false;
	*fd = (int)v;
	return true;
}
