/*
 * vzdump-put: write standard input to a file in a folder that other users may write to (a
 * shared dump folder), so that root never follows a link planted there. The folder is opened
 * once; the data goes into a new temporary created with O_EXCL|O_NOFOLLOW beside the target,
 * and a rename puts it in place: a rename replaces a planted link, it never follows it. With
 * -x the name must be new, and the file appears under it only if nothing had it. (The
 * temporary, the rename and the clean-up on a signal are common/outfile.c's.)
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "outfile.h"

/* Exactly the SYNOPSIS of man/vzdump-put.1. */
const char usage_synopsis[] = "vzdump-put [-x] [-m mode] dir name\n"
			      "vzdump-put -h | --help\n";

static const char short_opts[] = "hxm:";
static const struct option long_opts[] = {
	{"help", no_argument, NULL, 'h'},
	{"exclusive", no_argument, NULL, 'x'},
	{"mode", required_argument, NULL, 'm'},
	CLI_LIST_OPTIONS,
	{NULL, 0, NULL, 0},
};

static mode_t parse_mode(const char *text)
{
	char *end;
	unsigned long mode;

	errno = 0;
	mode = strtoul(text, &end, 8);
	if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || mode > 0777)
		usage_error("-m %s: not an octal mode of at most 0777", text);
	return (mode_t)mode;
}

/* A name in the folder, never a path: no '/', no "." or "..". */
static void check_name(const char *name)
{
	if (name[0] == '\0' || strchr(name, '/') || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		usage_error("%s: not a file name (a name in DIR, without '/')", name);
	if (strlen(name) > NAME_MAX)
		usage_error("%.40s...: name longer than %d bytes", name, NAME_MAX);
}

/* The folder, opened once; it must not itself be a link (its path is looked up here only). */
static int open_folder(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;

	/* (O_DIRECTORY|O_NOFOLLOW on a link fails with ENOTDIR or ELOOP.) */
	if (fd < 0 && (errno == ELOOP || errno == ENOTDIR) && lstat(dir, &st) == 0 &&
	    S_ISLNK(st.st_mode))
		errx(EXIT_USAGE, "%s: is a symbolic link (give the folder it points to)", dir);
	if (fd < 0)
		err(errno == ENOENT || errno == ENOTDIR ? EXIT_USAGE : EXIT_FAIL, "%s", dir);
	return fd;
}

/* A temporary name nobody can guess, so that there is nothing to plant in advance. */
static void random_tmp_name(char *buf, size_t size)
{
	unsigned char bytes[8];

	if (getrandom(bytes, sizeof(bytes), 0) != sizeof(bytes))
		err(EXIT_FAIL, "getrandom");
	snprintf(buf, size, ".vzdump-put.%02x%02x%02x%02x%02x%02x%02x%02x", bytes[0], bytes[1],
		 bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]);
}

static int copy_stdin(int fd)
{
	char buf[65536];

	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			warn("read standard input");
			return -1;
		}
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(fd, buf + done, (size_t)(n - done));
			if (w < 0) {
				if (errno == EINTR)
					continue;
				warn("write");
				return -1;
			}
			done += w;
		}
	}
}

int main(int argc, char **argv)
{
	int exclusive = 0, opt, dir_fd;
	mode_t mode = 0600;
	const char *name;
	char tmp_name[32];
	struct outfile out;

	while ((opt = cli_getopt(argc, argv, short_opts, long_opts)) != -1) {
		switch (opt) {
		case 'x':
			exclusive = 1;
			break;
		case 'm':
			mode = parse_mode(optarg);
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 2)
		usage_error(argc - optind < 2 ? "DIR and NAME are needed" : "too many operands");
	name = argv[optind + 1];
	check_name(name);
	dir_fd = open_folder(argv[optind]);

	random_tmp_name(tmp_name, sizeof(tmp_name));
	if (outfile_create_at(&out, dir_fd, name, tmp_name) != 0)
		err(EXIT_FAIL, "create a temporary file");
	if (copy_stdin(out.fd) != 0) {
		outfile_abort(&out);
		return EXIT_FAIL;
	}
	/* The mode is set on the descriptor, so the umask does not change it. */
	if (fchmod(out.fd, mode) != 0) {
		warn("chmod");
		outfile_abort(&out);
		return EXIT_FAIL;
	}
	if (outfile_commit(&out, exclusive) != 0)
		err(EXIT_FAIL, "%s", name);
	return EXIT_OK;
}
