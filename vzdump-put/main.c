/*
 * vzdump-put: write standard input to a file in a folder that other users may write to (a
 * shared dump folder), so that root never follows a link planted there. The folder is opened
 * once; the data goes into a new temporary created with O_EXCL|O_NOFOLLOW beside the target,
 * and a rename puts it in place: a rename replaces a planted link, it never follows it. With
 * -x the name must be new, and the file appears under it only if nothing had it.
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

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

/* The temporary, for the signal handler: unlinkat is async-signal-safe. */
static volatile sig_atomic_t tmp_created;
static int dir_fd = -1;
static char tmp_name[32];

static void on_fatal_signal(int sig)
{
	if (tmp_created)
		unlinkat(dir_fd, tmp_name, 0);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void remove_tmp(void)
{
	if (tmp_created)
		unlinkat(dir_fd, tmp_name, 0);
	tmp_created = 0;
}

static _Noreturn void fail(const char *what)
{
	int saved = errno;

	remove_tmp();
	errno = saved;
	err(EXIT_FAIL, "%s", what);
}

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

/* A new temporary with a random name: O_EXCL|O_NOFOLLOW never opens what another user put
 * there, and a name nobody can guess leaves nothing to plant in advance. */
static int create_tmp(void)
{
	for (int attempt = 0; attempt < 16; attempt++) {
		unsigned char bytes[8];
		int fd;

		if (getrandom(bytes, sizeof(bytes), 0) != sizeof(bytes))
			fail("getrandom");
		snprintf(tmp_name, sizeof(tmp_name), ".vzdump-put.");
		for (size_t i = 0; i < sizeof(bytes); i++)
			snprintf(tmp_name + strlen(tmp_name), 3, "%02x", bytes[i]);
		fd = openat(dir_fd, tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			    0600);
		if (fd >= 0) {
			tmp_created = 1;
			return fd;
		}
		if (errno != EEXIST)
			fail("create a temporary file");
	}
	errno = EEXIST;
	fail("create a temporary file");
}

static void copy_stdin(int fd)
{
	char buf[65536];

	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
		if (n == 0)
			return;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail("read standard input");
		}
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(fd, buf + done, (size_t)(n - done));
			if (w < 0) {
				if (errno == EINTR)
					continue;
				fail("write");
			}
			done += w;
		}
	}
}

/* -x: the name must be new. renameat2 says so atomically; where the file system cannot
 * (EINVAL: some NFS servers), a hard link does, as it never replaces either. */
static void commit_exclusive(const char *name)
{
	if (renameat2(dir_fd, tmp_name, dir_fd, name, RENAME_NOREPLACE) == 0) {
		tmp_created = 0;
		return;
	}
	if (errno != EINVAL && errno != ENOSYS)
		fail(name);
	if (linkat(dir_fd, tmp_name, dir_fd, name, 0) != 0)
		fail(name);
	remove_tmp();
}

int main(int argc, char **argv)
{
	int exclusive = 0, opt, fd;
	mode_t mode = 0600;
	const char *dir, *name;

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
	dir = argv[optind];
	name = argv[optind + 1];
	check_name(name);

	/* The folder itself must not be a link either: its path is looked up once, here. */
	dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	/* (O_DIRECTORY|O_NOFOLLOW on a link fails with ENOTDIR or ELOOP.) */
	if (dir_fd < 0 && (errno == ELOOP || errno == ENOTDIR) && lstat(dir, &st) == 0 &&
	    S_ISLNK(st.st_mode))
		errx(EXIT_USAGE, "%s: is a symbolic link (give the folder it points to)", dir);
	if (dir_fd < 0)
		err(errno == ENOENT || errno == ENOTDIR ? EXIT_USAGE : EXIT_FAIL, "%s", dir);
	int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], on_fatal_signal);

	fd = create_tmp();
	copy_stdin(fd);
	/* The mode is set on the descriptor, so the umask does not change it. */
	if (fchmod(fd, mode) != 0)
		fail("chmod");
	if (fsync(fd) != 0)
		fail("fsync");
	if (close(fd) != 0)
		fail("close");
	if (exclusive) {
		commit_exclusive(name);
	} else if (renameat(dir_fd, tmp_name, dir_fd, name) != 0) {
		fail(name);
	} else {
		tmp_created = 0;
	}
	/* The rename itself must survive a crash too. */
	if (fsync(dir_fd) != 0 && errno != EINVAL)
		err(EXIT_FAIL, "fsync %s", dir);
	return EXIT_OK;
}
