/*
 * vzdump names an archive vzdump-qemu-VMID-YYYY_MM_DD-HH_MM_SS.vma, optionally followed by
 * the compressor's extension; an incremental one has ".inc" before the ".vma" (a name
 * Proxmox's storage layer does not list, on purpose). The time in the name is the local wall
 * clock when the backup started, so it is read back in the local time zone, like Proxmox's
 * timelocal().
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup_name.h"

static const char prefix[] = "vzdump-qemu-";
static const char incremental_mark[] = ".inc";
/* Proxmox's storage layer knows vma and vma.{gz,lzo,zst,bz2} (PVE::Storage's backup file
 * pattern); vma.xz is this project's own extra. */
static const char *const archive_suffixes[] = {
	".vma", ".vma.gz", ".vma.lzo", ".vma.zst", ".vma.bz2", ".vma.xz",
};

static bool ends_with(const char *s, size_t len, const char *suffix, size_t *stem_len)
{
	size_t n = strlen(suffix);

	if (len < n || memcmp(s + len - n, suffix, n) != 0)
		return false;
	*stem_len = len - n;
	return true;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Reads exactly N digits at *p and advances past them. */
static bool take_digits(const char **p, const char *end, int n, int *value)
{
	int v = 0;

	if (end - *p < n)
		return false;
	for (int i = 0; i < n; i++) {
		if (!is_digit((*p)[i]))
			return false;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*value = v;
	return true;
}

static bool take_char(const char **p, const char *end, char c)
{
	if (*p >= end || **p != c)
		return false;
	(*p)++;
	return true;
}

static bool is_leap(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

static int days_in_month(int year, int month)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	return month == 2 && is_leap(year) ? 29 : days[month - 1];
}

/* The VMID that Proxmox's volume parser reads from "vzdump-qemu-DIGITS-", even in odd names. */
static long leading_vmid(const char *p, const char *end)
{
	long vmid = 0;
	const char *start = p;

	while (p < end && is_digit(*p) && p - start < 9)
		vmid = vmid * 10 + (*p++ - '0');
	if (p == start || p >= end || *p != '-')
		return VMID_UNKNOWN;
	return vmid;
}

static void set_periods(struct backup *b, const struct tm *tm)
{
	char week[32];
	int iso_year = 0, iso_week = 0;
	int64_t year = tm->tm_year + 1900LL, month = tm->tm_mon + 1;
	int64_t day = ((year * 100) + month) * 100 + tm->tm_mday;

	/* ISO 8601 week and its year: 2019-12-30 belongs to 2020-W01. */
	if (strftime(week, sizeof(week), "%G %V", tm) > 0)
		sscanf(week, "%d %d", &iso_year, &iso_week);

	b->period[RULE_LAST] = (int64_t)b->ctime;
	b->period[RULE_HOURLY] = day * 100 + tm->tm_hour;
	b->period[RULE_DAILY] = day;
	b->period[RULE_WEEKLY] = (int64_t)iso_year * 100 + iso_week;
	b->period[RULE_MONTHLY] = year * 100 + month;
	b->period[RULE_YEARLY] = year;
}

/* The UTC offset in force at T, in seconds east. */
static bool offset_at(time_t t, long *offset)
{
	struct tm tm;

	if (!localtime_r(&t, &tm))
		return false;
	*offset = tm.tm_gmtoff;
	return true;
}

/*
 * The instant a local wall-clock time names, as Perl's timelocal() (which Proxmox uses)
 * gives it: a time that occurs twice (clock set back) is the earlier instant; a time that
 * was skipped (clock set forward) is read with the offset in force before, so it lands as
 * much later as the clock jumped. mktime() with tm_isdst = -1 is not used on purpose: for a
 * time that occurs twice, glibc's answer depends on the previous call, and so the decisions
 * would depend on the order of the directory.
 */
static bool wall_clock_to_time(const struct tm *wall, time_t *out)
{
	struct tm as_utc = *wall;
	time_t clock_seconds, best = 0;
	long offsets[3];
	bool found = false;

	/* The wall-clock reading counted as if it were UTC: instant + offset at the instant. */
	errno = 0;
	clock_seconds = timegm(&as_utc);
	if (clock_seconds == (time_t)-1 && errno != 0)
		return false;
	/* Offsets are within a day of UTC, so any candidate lies inside this window. */
	if (!offset_at(clock_seconds - 86400, &offsets[0]) ||
	    !offset_at(clock_seconds, &offsets[1]) ||
	    !offset_at(clock_seconds + 86400, &offsets[2]))
		return false;
	for (int i = 0; i < 3; i++) {
		time_t t = clock_seconds - offsets[i];
		long at_t;

		if ((i > 0 && offsets[i] == offsets[i - 1]) || (i == 2 && offsets[2] == offsets[0]))
			continue; /* the same candidate again */
		if (offset_at(t, &at_t) && at_t == offsets[i] && (!found || t < best)) {
			best = t;
			found = true;
		}
	}
	*out = found ? best : clock_seconds - offsets[0];
	return true;
}

/* Parses "VMID-YYYY_MM_DD-HH_MM_SS" in [p, end). */
static bool parse_standard(const char *p, const char *end, struct backup *b)
{
	const char *vmid_start = p;
	int year, month, day, hour, minute, second;
	struct tm tm;
	time_t t;

	/* VMIDs are 100 ... 999999999. */
	if (p >= end || *p == '0')
		return false;
	while (p < end && is_digit(*p))
		p++;
	if (p - vmid_start < 3 || p - vmid_start > 9)
		return false;
	if (!take_char(&p, end, '-') || !take_digits(&p, end, 4, &year) ||
	    !take_char(&p, end, '_') || !take_digits(&p, end, 2, &month) ||
	    !take_char(&p, end, '_') || !take_digits(&p, end, 2, &day) ||
	    !take_char(&p, end, '-') || !take_digits(&p, end, 2, &hour) ||
	    !take_char(&p, end, '_') || !take_digits(&p, end, 2, &minute) ||
	    !take_char(&p, end, '_') || !take_digits(&p, end, 2, &second) || p != end)
		return false;
	if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23 ||
	    minute > 59 || second > 59)
		return false;

	memset(&tm, 0, sizeof(tm));
	tm.tm_year = year - 1900;
	tm.tm_mon = month - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = minute;
	tm.tm_sec = second;
	if (!wall_clock_to_time(&tm, &t))
		return false;

	b->vmid = strtol(vmid_start, NULL, 10);
	b->ctime = t;
	/* Periods come from localtime() of that instant, as in Proxmox. */
	if (!localtime_r(&t, &tm))
		return false;
	set_periods(b, &tm);
	return true;
}

bool backup_name_parse(char *name, struct backup *b)
{
	size_t len = strlen(name), stem_len = 0, inc_stem_len = 0;
	const size_t prefix_len = sizeof(prefix) - 1;
	bool archive = false;

	if (strncmp(name, prefix, prefix_len) != 0)
		return false;
	for (size_t i = 0; i < sizeof(archive_suffixes) / sizeof(archive_suffixes[0]); i++) {
		if (ends_with(name, len, archive_suffixes[i], &stem_len)) {
			archive = true;
			break;
		}
	}
	/* Something must stand between the prefix and the suffix. */
	if (!archive || stem_len <= prefix_len)
		return false;

	memset(b, 0, sizeof(*b));
	b->name = name;
	b->stem_len = stem_len;
	/* An incremental's stem, the name of its .log, is the full's: without ".inc". */
	if (ends_with(name, stem_len, incremental_mark, &inc_stem_len) &&
	    parse_standard(name + prefix_len, name + inc_stem_len, b)) {
		b->stem_len = inc_stem_len;
		b->standard = true;
		b->incremental = true;
		return true;
	}
	b->standard = parse_standard(name + prefix_len, name + stem_len, b);
	if (!b->standard)
		b->vmid = leading_vmid(name + prefix_len, name + stem_len);
	return true;
}
