/*
 * vzdump-prune: apply Proxmox's prune-backups retention to a dump directory, with exactly
 * Proxmox's semantics, and say why each backup is kept or removed.
 */
#include <dirent.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup.h"
#include "chain.h"
#include "cli.h"
#include "mark.h"
#include "policy.h"
#include "remove.h"
#include "report.h"
#include "scan.h"

/* Exactly the SYNOPSIS of man/vzdump-prune.1. */
const char usage_synopsis[] =
	"vzdump-prune [-n | --dry-run] [--json] [--vmid id] [--keep-all]\n"
	"             [--keep-last n] [--keep-hourly n] [--keep-daily n]\n"
	"             [--keep-weekly n] [--keep-monthly n] [--keep-yearly n]\n"
	"             [--prune-backups spec] dumpdir\n"
	"vzdump-prune --check spec ...\n"
	"vzdump-prune -h | --help\n";

enum long_only {
	OPT_JSON = 256,
	OPT_VMID,
	OPT_KEEP_ALL,
	OPT_KEEP_LAST, /* OPT_KEEP_LAST + rule, in enum rule's order */
	OPT_KEEP_HOURLY,
	OPT_KEEP_DAILY,
	OPT_KEEP_WEEKLY,
	OPT_KEEP_MONTHLY,
	OPT_KEEP_YEARLY,
	OPT_PRUNE_BACKUPS,
	OPT_CHECK,
};

static const char short_opts[] = "hn";
static const struct option long_opts[] = {
	{"help", no_argument, NULL, 'h'},
	{"dry-run", no_argument, NULL, 'n'},
	{"json", no_argument, NULL, OPT_JSON},
	{"vmid", required_argument, NULL, OPT_VMID},
	{"keep-all", no_argument, NULL, OPT_KEEP_ALL},
	{"keep-last", required_argument, NULL, OPT_KEEP_LAST},
	{"keep-hourly", required_argument, NULL, OPT_KEEP_HOURLY},
	{"keep-daily", required_argument, NULL, OPT_KEEP_DAILY},
	{"keep-weekly", required_argument, NULL, OPT_KEEP_WEEKLY},
	{"keep-monthly", required_argument, NULL, OPT_KEEP_MONTHLY},
	{"keep-yearly", required_argument, NULL, OPT_KEEP_YEARLY},
	{"prune-backups", required_argument, NULL, OPT_PRUNE_BACKUPS},
	{"check", no_argument, NULL, OPT_CHECK},
	CLI_LIST_OPTIONS,
	{NULL, 0, NULL, 0},
};

struct options {
	bool check;
	bool dry_run;
	bool json;
	long vmid;
	struct policy policy;
	const char *dumpdir;
};

static long parse_vmid(const char *text)
{
	unsigned count;

	if (!policy_parse_count(text, &count) || count == 0 || count > 999999999)
		usage_error("--vmid: '%s' is not a VMID", text);
	return (long)count;
}

/* Single --keep-* options override the same key in --prune-backups. */
static void parse_options(int argc, char **argv, struct options *o)
{
	struct policy single = {0}, spec = {0};
	struct policy_given single_given = {0}, spec_given = {0};
	char err[256];
	int c, given = 0;

	memset(o, 0, sizeof(*o));
	o->vmid = VMID_UNKNOWN;
	while ((c = cli_getopt(argc, argv, short_opts, long_opts)) != -1) {
		given++;
		switch (c) {
		case OPT_CHECK:
			o->check = true;
			break;
		case 'n':
			o->dry_run = true;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_VMID:
			o->vmid = parse_vmid(optarg);
			break;
		case OPT_KEEP_ALL:
			single.keep_all = true;
			single_given.keep_all = true;
			break;
		case OPT_KEEP_LAST:
		case OPT_KEEP_HOURLY:
		case OPT_KEEP_DAILY:
		case OPT_KEEP_WEEKLY:
		case OPT_KEEP_MONTHLY:
		case OPT_KEEP_YEARLY: {
			enum rule r = (enum rule)(c - OPT_KEEP_LAST);

			if (!policy_parse_count(optarg, &single.keep[r])) {
				snprintf(err, sizeof(err), "--%s: '%s' is not an integer >= 0",
					 rule_option(r), optarg);
				usage_error("%s", err);
			}
			single_given.keep[r] = true;
			break;
		}
		case OPT_PRUNE_BACKUPS:
			/* Given twice, the last one counts, like any other option. */
			memset(&spec, 0, sizeof(spec));
			memset(&spec_given, 0, sizeof(spec_given));
			if (!policy_parse_string(optarg, &spec, &spec_given, err, sizeof(err)))
				usage_error("--prune-backups: %s", err);
			break;
		}
	}
	if (o->check) {
		/* --check SPEC...: the specs are the arguments; no other option goes with it. */
		if (given != 1)
			usage_error("--check takes no other option");
		if (optind == argc)
			usage_error("--check needs at least one spec");
		return;
	}
	if (argc - optind != 1)
		usage_error("expected one dumpdir");
	o->dumpdir = argv[optind];

	o->policy = spec;
	if (single_given.keep_all)
		o->policy.keep_all = single.keep_all;
	for (int r = 0; r < RULE_COUNT; r++)
		if (single_given.keep[r])
			o->policy.keep[r] = single.keep[r];
	if (!policy_check(&o->policy, err, sizeof(err)))
		usage_error("%s", err);
}

/*
 * --check: reads each SPEC as --prune-backups would, and says what is wrong with the first bad
 * one, in the same words; prints nothing when all are valid.
 */
static int check_specs(char **specs, int count)
{
	char err[256];

	for (int i = 0; i < count; i++) {
		struct policy p = {0};
		struct policy_given given = {0};

		if (!policy_parse_string(specs[i], &p, &given, err, sizeof(err)) ||
		    !policy_check(&p, err, sizeof(err))) {
			warnx("--prune-backups: %s", err);
			return EXIT_USAGE;
		}
	}
	return 0;
}

static DIR *open_dumpdir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir;

	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR) {
			warn("%s", path);
			exit(EXIT_USAGE);
		}
		err(EXIT_FAIL, "%s", path);
	}
	dir = fdopendir(fd);
	if (!dir)
		err(EXIT_FAIL, "%s", path);
	return dir;
}

static bool same_stem(const struct backup *a, const struct backup *b)
{
	return a->standard && b->standard && a->vmid == b->vmid && a->ctime == b->ctime &&
		a->stem_len == b->stem_len && memcmp(a->name, b->name, a->stem_len) == 0;
}

/*
 * vzdump names the log without the archive extension, so archives of one backup time in two
 * formats share it; it must stay while one of them stays (kept or protected). Archives of
 * one stem have the same VMID and time, so the sorted list holds them next to each other.
 */
static bool log_still_needed(const struct backup_list *list, size_t i)
{
	const struct backup *b = &list->items[i];

	for (size_t j = i; j > 0 && same_stem(&list->items[j - 1], b); j--)
		if (list->items[j - 1].mark != MARK_REMOVE)
			return true;
	for (size_t j = i + 1; j < list->count && same_stem(&list->items[j], b); j++)
		if (list->items[j].mark != MARK_REMOVE)
			return true;
	return false;
}

/* Tries every removal, even after a failure; returns the number that failed. */
static size_t remove_marked(int dir_fd, const struct backup_list *list)
{
	size_t failed = 0;

	for (size_t i = 0; i < list->count; i++)
		if (list->items[i].mark == MARK_REMOVE &&
		    !remove_backup(dir_fd, &list->items[i], log_still_needed(list, i)))
			failed++;
	return failed;
}

int main(int argc, char **argv)
{
	struct options o;
	struct backup_list list;
	DIR *dir;
	char *report;
	size_t failed = 0;

	parse_options(argc, argv, &o);
	if (o.check)
		return check_specs(argv + optind, argc - optind);
	/* Period ids depend on the local time zone; read it once, before the first mktime(). */
	tzset();
	dir = open_dumpdir(o.dumpdir);
	if (!scan_dumpdir(dir, o.vmid, &list))
		err(EXIT_FAIL, "read %s", o.dumpdir);
	sort_backups(list.items, list.count);
	if (!mark_backups(list.items, list.count, &o.policy))
		err(EXIT_FAIL, "decide");
	keep_chains(list.items, list.count);
	for (size_t i = 0; i < list.count; i++)
		if (list.items[i].broken_chain)
			warnx("%s: its chain has no full backup", list.items[i].name);
	report = o.json ? report_json(list.items, list.count) : report_text(list.items, list.count);
	if (!report)
		err(EXIT_FAIL, "build the report");
	if (!o.dry_run)
		failed = remove_marked(dirfd(dir), &list);

	if (failed > 0)
		warnx("%zu of the backups to remove could not be removed", failed);
	else
		fputs(report, stdout);
	free(report);
	backup_list_free(&list);
	closedir(dir);
	if (fflush(stdout) != 0 || ferror(stdout))
		err(EXIT_FAIL, "write the report");
	return failed > 0 ? EXIT_FAIL : EXIT_OK;
}
