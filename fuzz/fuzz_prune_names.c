/* fuzz-sources: vzdump-prune/backup_name.c vzdump-prune/chain.c vzdump-prune/mark.c vzdump-prune/period_set.c vzdump-prune/policy.c vzdump-prune/report.c vzdump-prune/rule.c vzdump-prune/scan.c */
/*
 * vzdump-prune on a dump directory full of hostile file names. The input's first byte picks
 * the time zone (bits 0-1), the retention policy (bits 2-4) and --vmid 100 (bit 5); the rest,
 * split at newlines and NUL bytes, are file names. Each name goes through backup_name_parse
 * as it is; those that can be files are created in a private directory, which then goes
 * through what vzdump-prune -n does: scan_dumpdir, sort_backups, mark_backups, keep_chains,
 * and both reports. A file name must never keep the report from being built, break its one line per
 * backup, or make its JSON unreadable.
 */
#include <dirent.h>
#include <err.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backup_name.h"
#include "chain.h"
#include "mark.h"
#include "policy.h"
#include "report.h"
#include "scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_NAMES 256
/* A fault of the machine, not of the input: said, and an abort (libFuzzer takes exit() for a
 * failure of the target too, without the stack). */
#define fail(...) (warn(__VA_ARGS__), abort())

static const char *const zones[] = {"UTC", "Europe/Berlin", "Pacific/Auckland", "America/New_York"};
static const char *const policies[] = {
	"keep-last=3",
	"keep-daily=7,keep-weekly=4,keep-monthly=6",
	"keep-hourly=2,keep-yearly=1",
	"keep-all=1",
	"keep-last=1,keep-hourly=1,keep-daily=1,keep-weekly=1,keep-monthly=1,keep-yearly=1",
	"keep-last=0",
	"keep-weekly=2,keep-yearly=3",
	"keep-last=4294967295,keep-daily=2",
};

static char dir_path[64];
static int dir_fd = -1;

static void remove_dir(void) { rmdir(dir_path); }

static int dumpdir(void)
{
	if (dir_fd >= 0)
		return dir_fd;
	snprintf(dir_path, sizeof(dir_path), "%s/vz-fuzz-prune.XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(dir_path))
		fail("mkdtemp %s", dir_path);
	dir_fd = open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		fail("%s", dir_path);
	atexit(remove_dir);
	return dir_fd;
}

static bool can_be_file(const char *name)
{
	return name[0] != '\0' && strlen(name) <= 255 && !strchr(name, '/') &&
		strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* The report's lines: one per backup in the text, one object per backup in the JSON. */
static void check_reports(const struct backup_list *list)
{
	char *text = report_text(list->items, list->count);
	char *json = report_json(list->items, list->count);
	size_t lines = 0;
	json_t *parsed;

	if (!text || !json)
		abort(); /* vzdump-prune: "build the report" */
	for (const char *p = text; *p; p++)
		lines += *p == '\n';
	if (lines != list->count)
		abort();
	parsed = json_loads(json, 0, NULL);
	if (!json_is_array(parsed) || json_array_size(parsed) != list->count)
		abort();
	json_decref(parsed);
	free(text);
	free(json);
}

static void run_dumpdir(char **names, size_t n, long vmid, const struct policy *policy)
{
	int fd = dumpdir(), scan_fd;
	bool *made = calloc(n, sizeof(*made));
	struct backup_list list;
	DIR *dir;

	if (!made)
		return;
	for (size_t i = 0; i < n; i++) {
		int f;

		if (!can_be_file(names[i]))
			continue;
		f = openat(fd, names[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (f >= 0) {
			close(f);
			made[i] = true;
		}
	}
	scan_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	dir = scan_fd >= 0 ? fdopendir(scan_fd) : NULL;
	if (!dir)
		fail("%s", dir_path);
	if (!scan_dumpdir(dir, vmid, &list))
		fail("read %s", dir_path);
	sort_backups(list.items, list.count);
	if (!mark_backups(list.items, list.count, policy))
		fail("decide");
	keep_chains(list.items, list.count);
	check_reports(&list);
	backup_list_free(&list);
	closedir(dir);
	for (size_t i = 0; i < n; i++)
		if (made[i])
			unlinkat(fd, names[i], 0);
	free(made);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy, *names[MAX_NAMES], err[256];
	struct policy policy = {0};
	struct policy_given given = {0};
	size_t n = 0;

	if (size == 0)
		return 0;
	setenv("TZ", zones[data[0] & 3], 1);
	tzset();
	if (!policy_parse_string(policies[(data[0] >> 2) & 7], &policy, &given, err, sizeof(err)))
		abort();
	copy = malloc(size);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	copy[size - 1] = '\0';
	for (char *p = copy, *end = copy + size - 1; p <= end && n < MAX_NAMES;) {
		size_t len = strcspn(p, "\n");

		p[len] = '\0';
		names[n++] = p;
		p += len + 1;
	}
	for (size_t i = 0; i < n; i++) {
		struct backup b;

		(void)backup_name_parse(names[i], &b);
	}
	run_dumpdir(names, n, data[0] & 0x20 ? 100 : VMID_UNKNOWN, &policy);
	free(copy);
	return 0;
}
