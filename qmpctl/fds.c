/* --fd NAME=SPEC (getfd) and --add-fd SET=SPEC (add-fd): descriptors handed to QEMU on the
 * same connection as the commands that use them, attached to the command's own bytes. */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"
#include "qmpctl.h"
#include "unixsock.h"
#include "xalloc.h"

/* QEMU writes a backup job's NBD requests (1 MiB each, several in flight) into a socket it is
 * handed for its target. With the default send buffer (208 KiB) each request crosses in pieces
 * that wake the reader once each; with 4 MiB whole requests go through, and the writer in
 * vzdump.sh's backups costs a sixth less CPU. Root is not held to net.core.wmem_max
 * (SO_SNDBUFFORCE); otherwise the kernel caps the size there, and a refusal keeps the default. */
#define HANDOVER_SNDBUF (4 << 20)

static void widen_send_buffer(int fd)
{
	int size = HANDOVER_SNDBUF;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}

static int open_spec(struct fd_spec *spec, const char *what, deadline_t d)
{
	int fd;

	if (parse_fd_number(what, &fd)) {
		if (fcntl(fd, F_GETFD) < 0) {
			warnx("%s: fd %d is not open", spec->arg, fd);
			return EXIT_USAGE;
		}
		spec->fd = fd;
		return EXIT_OK;
	}
	if (!spec->add_fd && strncmp(what, "unix-listen:", 12) == 0) {
		spec->fd = unixsock_listen(what + 12, 0600);
		if (spec->fd < 0) {
			warn("%s: listen", spec->arg);
			return EXIT_FAIL;
		}
		spec->listen_path = xstrdup(what + 12);
	} else if (!spec->add_fd && strncmp(what, "unix-connect:", 13) == 0) {
		spec->fd = unixsock_connect(what + 13, d);
		if (spec->fd < 0) {
			warn("%s: connect", spec->arg);
			return EXIT_PEER;
		}
		/* Hand over an ordinary blocking socket; QEMU sets its own flags. */
		fcntl(spec->fd, F_SETFL, fcntl(spec->fd, F_GETFL) & ~O_NONBLOCK);
		widen_send_buffer(spec->fd);
	} else if (spec->add_fd) {
		size_t len = strlen(what);
		bool ro = len > 3 && strcmp(what + len - 3, ":ro") == 0;
		char *path = xstrndup(what, ro ? len - 3 : len);

		spec->fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
		if (spec->fd < 0) {
			warn("%s: open %s", spec->arg, path);
			free(path);
			return EXIT_FAIL;
		}
		free(path);
	} else {
		warnx("%s: expected NAME=FD, NAME=unix-listen:PATH or NAME=unix-connect:PATH",
		      spec->arg);
		return EXIT_USAGE;
	}
	spec->opened = true;
	return EXIT_OK;
}

int fd_spec_setup(struct fd_spec *spec, const char *arg, bool add_fd, deadline_t d)
{
	const char *eq = strchr(arg, '=');

	memset(spec, 0, sizeof(*spec));
	spec->fd = -1;
	spec->arg = arg;
	spec->add_fd = add_fd;
	if (!eq || eq == arg || eq[1] == '\0') {
		warnx("%s: expected %s=SPEC", arg, add_fd ? "SET" : "NAME");
		return EXIT_USAGE;
	}
	spec->name = xstrndup(arg, (size_t)(eq - arg));
	if (add_fd) {
		char *end;

		errno = 0;
		spec->fdset = strtol(spec->name, &end, 10);
		if (errno != 0 || *end != '\0' || spec->fdset < 0 || spec->fdset > INT_MAX) {
			warnx("%s: the fdset id must be a number", arg);
			return EXIT_USAGE;
		}
	}
	return open_spec(spec, eq + 1, d);
}

int fd_spec_send(struct fd_spec *spec, struct qmp *q, deadline_t d, FILE *out, int json_flags)
{
	json_t *cmd, *reply = NULL;
	enum qmp_status st;

	if (spec->add_fd)
		cmd = qmp_command("add-fd",
				  json_pack("{s:I,s:s}", "fdset-id", (json_int_t)spec->fdset,
					    "opaque", spec->arg));
	else
		cmd = qmp_command("getfd", json_pack("{s:s}", "fdname", spec->name));
	st = qmp_execute(q, cmd, &spec->fd, 1, d, &reply);
	if (st != QMP_OK) {
		report_failure(q, cmd, st);
		json_decref(cmd);
		json_decref(reply);
		return status_to_exit(st);
	}
	spec->sent = true;
	if (spec->add_fd)
		print_json(out, json_object_get(reply, "return"), json_flags);
	json_decref(cmd);
	json_decref(reply);
	return EXIT_OK;
}

void fd_spec_close(struct fd_spec *spec)
{
	/* QEMU holds its own copy now; ours would only keep the other end from seeing EOF. */
	if (spec->opened && spec->fd >= 0)
		close(spec->fd);
	spec->fd = -1;
	if (spec->listen_path && !spec->sent)
		unlink(spec->listen_path);
	free(spec->listen_path);
	spec->listen_path = NULL;
	free(spec->name);
	spec->name = NULL;
}
