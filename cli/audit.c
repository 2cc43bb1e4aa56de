/*
 * hsmca audit verify|report: checks the signer's audit log (the hash chain
 * and the signed checkpoints, signer/audit.h) and summarises key use.
 * Both read a file the signer wrote and trust none of it: report counts
 * what parses and says so when the chain does not check out.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "audit.h"
#include "cli.h"
#include "log.h"

/* Longer lines are skipped by report (the writer never makes them). */
#define AUDIT_CLI_MAX_LINE	(32u * 1024 * 1024)

enum { OPT_KEY = 256, OPT_HELP, OPT_JSON, OPT_SINCE, OPT_UNTIL,
    OPT_REQUESTER, OPT_AUDIT_KEY };

static void
audit_usage(FILE *f)
{
	fprintf(f,
"usage: hsmca audit verify [--key AUDIT_PUBKEY_PEM] LOG\n"
"       hsmca audit report [--json] [--since T] [--until T] [--key NAME]\n"
"                          [--requester R] [--audit-key PEM] LOG\n"
"\n"
"  verify   checks every record's sequence number and hash chain and, with\n"
"           --key, every checkpoint signature; exit 0 good, 1 bad (the first\n"
"           bad record is named), 2 usage or I/O error\n"
"  report   counts key uses (signatures and refusals) by key, requester,\n"
"           object kind and outcome; see hsmca audit report --help\n");
}

static void
verify_usage(FILE *f)
{
	fprintf(f,
"usage: hsmca audit verify [--key AUDIT_PUBKEY_PEM] LOG\n"
"\n"
"Checks the audit log LOG: every line a JSON object, sequence numbers\n"
"without gaps, each record's \"prev\" the SHA-256 of the line before, and\n"
"every checkpoint's head, record count, key and signature.\n"
"\n"
"  --key FILE   the audit public key (PEM, audit-key.pem from the ceremony);\n"
"               without it checkpoint signatures are not checked\n"
"\n"
"Exit 0: good (prints the last seq and the checkpoints checked, and warns\n"
"about records after the last checkpoint); 1: bad (prints the first bad\n"
"record's line and seq and what is wrong); 2: usage or I/O error.\n");
}

static void
report_usage(FILE *f)
{
	fprintf(f,
"usage: hsmca audit report [--json] [--since T] [--until T] [--key NAME]\n"
"                          [--requester R] [--audit-key PEM] LOG\n"
"\n"
"Counts key uses in the audit log (\"issue\" and \"crl\" records, signed,\n"
"and \"refusal\" records) by key, by requester, by object kind and by\n"
"outcome, with refusals by code.\n"
"\n"
"  --json           JSON instead of a text table\n"
"  --since T        only records at or after T\n"
"  --until T        only records before T\n"
"                   T: RFC 3339 (2026-11-27T21:05:17Z, +01:00 offsets,\n"
"                   or a date 2026-11-27) or a duration before now: 90s,\n"
"                   30m, 24h, 7d, 2w\n"
"  --key NAME       only uses of the signing key NAME\n"
"  --requester R    only requests from R\n"
"  --audit-key PEM  also check checkpoint signatures\n"
"\n"
"The chain is verified first; if it is broken the report is still printed,\n"
"a warning goes to stderr and the exit status is 1.  Exit 2: usage or I/O.\n");
}

static EVP_PKEY *
audit_load_pub(const char *path)
{
	EVP_PKEY *pub;
	FILE *f;

	if ((f = fopen(path, "re")) == NULL) {
		log_warn("%s", path);
		return NULL;
	}
	pub = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	if (pub == NULL) {
		log_warnx("%s: not a PEM public key", path);
		ERR_clear_error();
	}
	return pub;
}

/*
 * Calls fn for every line of path (without its "\n"; a torn last line
 * too); lines longer than the writer ever makes are counted in *skipped.
 * Returns 0 or -1 on an I/O error.
 */
static int
audit_each_line(const char *path, void (*fn)(void *, const char *, size_t),
    void *arg, uint64_t *skipped)
{
	char *buf, *nl;
	size_t cap = 1 << 16, start = 0, end = 0, scan = 0, room;
	ssize_t n;
	int fd, eof = 0, discarding = 0, ret = -1;

	*skipped = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		log_warn("%s", path);
		return -1;
	}
	if ((buf = malloc(cap)) == NULL)
		goto out;
	for (;;) {
		nl = memchr(buf + scan, '\n', end - scan);
		if (nl != NULL) {
			if (!discarding)
				fn(arg, buf + start, (size_t)(nl - buf) - start);
			discarding = 0;
			start = scan = (size_t)(nl - buf) + 1;
			continue;
		}
		scan = end;
		if (eof) {
			if (start < end && !discarding)
				fn(arg, buf + start, end - start);
			break;
		}
		if (end - start > AUDIT_CLI_MAX_LINE) {
			/* Drop what we have and skip to the next newline. */
			if (!discarding)
				(*skipped)++;
			discarding = 1;
			start = scan = end = 0;
		}
		if (start > 0) {
			memmove(buf, buf + start, end - start);
			end -= start;
			scan -= start;
			start = 0;
		}
		if (end == cap) {
			char *nbuf;

			if ((nbuf = realloc(buf, cap * 2)) == NULL)
				goto out;
			buf = nbuf;
			cap *= 2;
		}
		/* Never more than one line over the limit in memory. */
		room = cap - end;
		if (room > AUDIT_CLI_MAX_LINE + 1 - (end - start))
			room = AUDIT_CLI_MAX_LINE + 1 - (end - start);
		n = read(fd, buf + end, room);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_warn("%s: read", path);
			goto out;
		}
		if (n == 0)
			eof = 1;
		end += (size_t)n;
	}
	ret = 0;
 out:
	free(buf);
	close(fd);
	return ret;
}

static json_t *
audit_parse_line(const char *line, size_t len)
{
	json_t *rec;

	rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	if (rec != NULL && !json_is_object(rec)) {
		json_decref(rec);
		rec = NULL;
	}
	return rec;
}

static void
count_checkpoint(void *arg, const char *line, size_t len)
{
	uint64_t *n = arg;
	json_t *rec;
	const char *type;

	if ((rec = audit_parse_line(line, len)) == NULL)
		return;
	type = json_string_value(json_object_get(rec, "type"));
	if (type != NULL && strcmp(type, "checkpoint") == 0)
		(*n)++;
	json_decref(rec);
}

static int
audit_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "key",	required_argument, NULL, OPT_KEY },
		{ "help",	no_argument,	   NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 }
	};
	EVP_PKEY *pub = NULL;
	const char *keypath = NULL, *path;
	uint64_t last_seq, uncovered, checkpoints = 0, skipped;
	int ch, ret = 2, st;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case OPT_KEY:
			keypath = optarg;
			break;
		case OPT_HELP:
			verify_usage(stdout);
			return 0;
		default:
			verify_usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 1) {
		verify_usage(stderr);
		return 2;
	}
	path = argv[optind];
	if (keypath != NULL && (pub = audit_load_pub(keypath)) == NULL)
		goto out;

	st = audit_verify_file(path, pub, &last_seq, &uncovered);
	if (st < 0) {
		log_warnx("%s", audit_error_detail());
		goto out;
	}
	if (st > 0) {
		printf("%s: BAD: %s\n", path, audit_error_detail());
		ret = 1;
		goto out;
	}
	if (audit_each_line(path, count_checkpoint, &checkpoints,
	    &skipped) != 0)
		goto out;
	if (pub != NULL)
		printf("%s: OK: last seq %" PRIu64 ", %" PRIu64
		    " checkpoint signatures checked\n", path, last_seq,
		    checkpoints);
	else
		printf("%s: chain OK: last seq %" PRIu64 ", %" PRIu64
		    " checkpoints NOT checked\n", path, last_seq, checkpoints);
	if (pub == NULL)
		printf("warning: no --key: checkpoint signatures were not "
		    "checked, whoever can write the file can rewrite it\n");
	if (last_seq == 0)
		printf("warning: the log is empty\n");
	else if (uncovered > 0)
		printf("warning: %" PRIu64 " records after the last checkpoint "
		    "(seq %" PRIu64 "-%" PRIu64 ") are not covered by a "
		    "signature: the signer is running or stopped uncleanly, or "
		    "the tail was cut\n", uncovered, last_seq - uncovered + 1,
		    last_seq);
	ret = 0;
 out:
	EVP_PKEY_free(pub);
	return ret;
}

/* Report. */

struct report {
	int64_t		 since_ms;	/* INT64_MIN: no bound */
	int64_t		 until_ms;	/* INT64_MAX: no bound */
	const char	*key;
	const char	*requester;
	uint64_t	 unreadable;	/* lines that are not JSON objects */
	uint64_t	 records;	/* records read */
	uint64_t	 uses;		/* key uses in the window */
	json_t		*by_key;
	json_t		*by_requester;
	json_t		*by_kind;
	json_t		*by_outcome;
	json_t		*by_code;
	int		 oom;
};

static int64_t
days_from_civil(int64_t y, int m, int d)
{
	/* Days since 1970-01-01 in the proleptic Gregorian calendar. */
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int
parse_digits(const char **s, int n, int min, int max)
{
	int v = 0, i;

	for (i = 0; i < n; i++) {
		if ((*s)[i] < '0' || (*s)[i] > '9')
			return -1;
		v = v * 10 + ((*s)[i] - '0');
	}
	*s += n;
	return v < min || v > max ? -1 : v;
}

/* RFC 3339 date-time, or a full-date (midnight UTC); returns 0 and *ms. */
static int
parse_rfc3339(const char *s, int64_t *ms)
{
	int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0, digits, off = 0, oh, om;
	int64_t t;

	if ((y = parse_digits(&s, 4, 0, 9999)) < 0 || *s++ != '-' ||
	    (mo = parse_digits(&s, 2, 1, 12)) < 0 || *s++ != '-' ||
	    (d = parse_digits(&s, 2, 1, 31)) < 0)
		return -1;
	if (*s != '\0') {
		if (*s != 'T' && *s != 't' && *s != ' ')
			return -1;
		s++;
		if ((h = parse_digits(&s, 2, 0, 23)) < 0 || *s++ != ':' ||
		    (mi = parse_digits(&s, 2, 0, 59)) < 0 || *s++ != ':' ||
		    (sec = parse_digits(&s, 2, 0, 60)) < 0)
			return -1;
		if (*s == '.') {
			s++;
			for (digits = 0; *s >= '0' && *s <= '9'; s++, digits++)
				if (digits < 3)
					frac = frac * 10 + (*s - '0');
			if (digits == 0)
				return -1;
			for (; digits < 3; digits++)
				frac *= 10;
		}
		if (*s == 'Z' || *s == 'z')
			s++;
		else if (*s == '+' || *s == '-') {
			int sign = *s++ == '-' ? -1 : 1;

			if ((oh = parse_digits(&s, 2, 0, 23)) < 0 ||
			    *s++ != ':' || (om = parse_digits(&s, 2, 0, 59)) < 0)
				return -1;
			off = sign * (oh * 60 + om);
		} else
			return -1;
		if (*s != '\0')
			return -1;
	}
	t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec -
	    (int64_t)off * 60;
	*ms = t * 1000 + frac;
	return 0;
}

/* T: RFC 3339 or a duration before now ("24h"). */
static int
parse_when(const char *s, int64_t *ms)
{
	const char *errstr;
	char num[32];
	long long n, unit;
	size_t len = strlen(s);
	struct timespec now;

	if (parse_rfc3339(s, ms) == 0)
		return 0;
	if (len < 2 || len >= sizeof(num))
		return -1;
	switch (s[len - 1]) {
	case 's': unit = 1; break;
	case 'm': unit = 60; break;
	case 'h': unit = 3600; break;
	case 'd': unit = 86400; break;
	case 'w': unit = 7 * 86400; break;
	default: return -1;
	}
	memcpy(num, s, len - 1);
	num[len - 1] = '\0';
	n = cli_strtonum(num, 0, 100LL * 366 * 86400 / unit, &errstr);
	if (errstr != NULL)
		return -1;
	clock_gettime(CLOCK_REALTIME, &now);
	*ms = ((int64_t)now.tv_sec - n * unit) * 1000 + now.tv_nsec / 1000000;
	return 0;
}

static void
report_bump(struct report *r, json_t *table, const char *name,
    const char *column)
{
	json_t *row, *cell;

	if ((row = json_object_get(table, name)) == NULL) {
		if ((row = json_pack("{s:i,s:i}", "signed", 0, "refused",
		    0)) == NULL || json_object_set_new(table, name, row) != 0) {
			r->oom = 1;
			return;
		}
	}
	cell = json_object_get(row, column);
	if (json_object_set_new(row, column, json_integer(
	    (cell ? json_integer_value(cell) : 0) + 1)) != 0)
		r->oom = 1;
}

static void
report_count(struct report *r, json_t *table, const char *name)
{
	json_t *cell = json_object_get(table, name);

	if (json_object_set_new(table, name, json_integer(
	    (cell ? json_integer_value(cell) : 0) + 1)) != 0)
		r->oom = 1;
}

static const char *
record_string(json_t *rec, const char *field, const char *dflt)
{
	const char *s = json_string_value(json_object_get(rec, field));

	return s != NULL && s[0] != '\0' ? s : dflt;
}

static void
report_line(void *arg, const char *line, size_t len)
{
	struct report *r = arg;
	const char *type, *outcome, *time, *key, *requester, *kind;
	json_t *rec;
	int64_t t;

	if ((rec = audit_parse_line(line, len)) == NULL) {
		r->unreadable++;
		return;
	}
	r->records++;
	type = record_string(rec, "type", "");
	if (strcmp(type, "issue") != 0 && strcmp(type, "crl") != 0 &&
	    strcmp(type, "refusal") != 0)
		goto out;
	time = json_string_value(json_object_get(rec, "time"));
	if (time == NULL || parse_rfc3339(time, &t) != 0) {
		r->unreadable++;
		goto out;
	}
	if (t < r->since_ms || t >= r->until_ms)
		goto out;
	key = record_string(rec, "key", "(unknown)");
	requester = record_string(rec, "requester", "(unknown)");
	if (r->key != NULL && strcmp(key, r->key) != 0)
		goto out;
	if (r->requester != NULL && strcmp(requester, r->requester) != 0)
		goto out;
	outcome = strcmp(type, "refusal") == 0 ? "refused" : "signed";
	kind = record_string(rec, "kind",
	    strcmp(type, "crl") == 0 ? "crl" : "(unknown)");
	r->uses++;
	report_bump(r, r->by_key, key, outcome);
	report_bump(r, r->by_requester, requester, outcome);
	report_bump(r, r->by_kind, kind, outcome);
	report_count(r, r->by_outcome, outcome);
	if (strcmp(outcome, "refused") == 0)
		report_count(r, r->by_code, record_string(rec, "code",
		    "(none)"));
 out:
	json_decref(rec);
}

static int
compare_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The names of an object's members, sorted; NULL when empty or on error. */
static const char **
sorted_names(json_t *obj, size_t *n)
{
	const char **names, *k;
	json_t *v;
	size_t i = 0;

	*n = json_object_size(obj);
	if (*n == 0 || (names = calloc(*n, sizeof(*names))) == NULL)
		return NULL;
	json_object_foreach(obj, k, v)
		if (i < *n)
			names[i++] = k;
	qsort(names, i, sizeof(*names), compare_names);
	*n = i;
	return names;
}

static json_int_t
cell_value(json_t *row, const char *column)
{
	return json_integer_value(json_object_get(row, column));
}

static void
print_table(const char *title, json_t *table)
{
	const char **names;
	json_t *row;
	size_t i, n;

	printf("\n%-32s %10s %10s\n", title, "signed", "refused");
	names = sorted_names(table, &n);
	for (i = 0; names != NULL && i < n; i++) {
		row = json_object_get(table, names[i]);
		printf("  %-30s %10" JSON_INTEGER_FORMAT " %10"
		    JSON_INTEGER_FORMAT "\n", names[i],
		    cell_value(row, "signed"), cell_value(row, "refused"));
	}
	free(names);
}

static void
format_ms(int64_t ms, char *buf, size_t len)
{
	struct tm tm;
	time_t t = (time_t)(ms / 1000);

	if (ms < 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "?");
}

static int
report_print_text(struct report *r, const char *path)
{
	const char **names;
	char a[64], b[64];
	size_t i, n;

	if (r->since_ms != INT64_MIN)
		format_ms(r->since_ms, a, sizeof(a));
	else
		snprintf(a, sizeof(a), "the beginning");
	if (r->until_ms != INT64_MAX)
		format_ms(r->until_ms, b, sizeof(b));
	else
		snprintf(b, sizeof(b), "the end");
	printf("audit report for %s, from %s to %s\n", path, a, b);
	if (r->key != NULL)
		printf("key: %s\n", r->key);
	if (r->requester != NULL)
		printf("requester: %s\n", r->requester);
	printf("key uses: %" PRIu64 " (%" JSON_INTEGER_FORMAT " signed, %"
	    JSON_INTEGER_FORMAT " refused) in %" PRIu64 " records\n", r->uses,
	    json_integer_value(json_object_get(r->by_outcome, "signed")),
	    json_integer_value(json_object_get(r->by_outcome, "refused")),
	    r->records);
	if (r->unreadable > 0)
		printf("unreadable lines: %" PRIu64 "\n", r->unreadable);
	print_table("by key", r->by_key);
	print_table("by requester", r->by_requester);
	print_table("by kind", r->by_kind);
	printf("\n%-32s %10s\n", "refusals by code", "count");
	names = sorted_names(r->by_code, &n);
	for (i = 0; names != NULL && i < n; i++)
		printf("  %-30s %10" JSON_INTEGER_FORMAT "\n", names[i],
		    json_integer_value(json_object_get(r->by_code, names[i])));
	free(names);
	return fflush(stdout) == 0 ? 0 : -1;
}

static int
report_print_json(struct report *r, const char *path)
{
	json_t *out, *window;
	char a[64], b[64];
	int ret = -1;

	format_ms(r->since_ms, a, sizeof(a));
	format_ms(r->until_ms, b, sizeof(b));
	window = json_pack("{s:o,s:o}",
	    "since", r->since_ms != INT64_MIN ? json_string(a) : json_null(),
	    "until", r->until_ms != INT64_MAX ? json_string(b) : json_null());
	out = json_pack("{s:s,s:o*,s:o,s:o,s:I,s:I,s:I,s:I,s:I,s:O,s:O,s:O,"
	    "s:O,s:O}",
	    "log", path,
	    "window", window,
	    "key", r->key ? json_string(r->key) : json_null(),
	    "requester", r->requester ? json_string(r->requester) : json_null(),
	    "records", (json_int_t)r->records,
	    "unreadable", (json_int_t)r->unreadable,
	    "uses", (json_int_t)r->uses,
	    "signed", json_integer_value(json_object_get(r->by_outcome,
	    "signed")),
	    "refused", json_integer_value(json_object_get(r->by_outcome,
	    "refused")),
	    "by_key", r->by_key,
	    "by_requester", r->by_requester,
	    "by_kind", r->by_kind,
	    "by_outcome", r->by_outcome,
	    "refusals_by_code", r->by_code);
	if (out != NULL && json_dumpf(out, stdout, JSON_INDENT(2) |
	    JSON_SORT_KEYS) == 0 && putchar('\n') != EOF &&
	    fflush(stdout) == 0)
		ret = 0;
	json_decref(out);
	return ret;
}

static int
audit_report(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json",	no_argument,	   NULL, OPT_JSON },
		{ "since",	required_argument, NULL, OPT_SINCE },
		{ "until",	required_argument, NULL, OPT_UNTIL },
		{ "key",	required_argument, NULL, OPT_KEY },
		{ "requester",	required_argument, NULL, OPT_REQUESTER },
		{ "audit-key",	required_argument, NULL, OPT_AUDIT_KEY },
		{ "help",	no_argument,	   NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 }
	};
	struct report r;
	EVP_PKEY *pub = NULL;
	const char *path, *pubpath = NULL;
	uint64_t last_seq, uncovered, skipped;
	int ch, json = 0, ret = 2, st;

	memset(&r, 0, sizeof(r));
	r.since_ms = INT64_MIN;
	r.until_ms = INT64_MAX;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case OPT_JSON:
			json = 1;
			break;
		case OPT_SINCE:
			if (parse_when(optarg, &r.since_ms) != 0) {
				log_warnx("--since %s: not RFC 3339 or a "
				    "duration like 24h", optarg);
				return 2;
			}
			break;
		case OPT_UNTIL:
			if (parse_when(optarg, &r.until_ms) != 0) {
				log_warnx("--until %s: not RFC 3339 or a "
				    "duration like 24h", optarg);
				return 2;
			}
			break;
		case OPT_KEY:
			r.key = optarg;
			break;
		case OPT_REQUESTER:
			r.requester = optarg;
			break;
		case OPT_AUDIT_KEY:
			pubpath = optarg;
			break;
		case OPT_HELP:
			report_usage(stdout);
			return 0;
		default:
			report_usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 1) {
		report_usage(stderr);
		return 2;
	}
	path = argv[optind];
	if (pubpath != NULL && (pub = audit_load_pub(pubpath)) == NULL)
		goto out;
	st = audit_verify_file(path, pub, &last_seq, &uncovered);
	if (st < 0) {
		log_warnx("%s", audit_error_detail());
		goto out;
	}
	r.by_key = json_object();
	r.by_requester = json_object();
	r.by_kind = json_object();
	r.by_outcome = json_pack("{s:i,s:i}", "signed", 0, "refused", 0);
	r.by_code = json_object();
	if (r.by_key == NULL || r.by_requester == NULL || r.by_kind == NULL ||
	    r.by_outcome == NULL || r.by_code == NULL) {
		log_warnx("out of memory");
		goto out;
	}
	if (audit_each_line(path, report_line, &r, &skipped) != 0)
		goto out;
	r.unreadable += skipped;
	if (r.oom) {
		log_warnx("out of memory");
		goto out;
	}
	if ((json ? report_print_json(&r, path) :
	    report_print_text(&r, path)) != 0) {
		log_warnx("cannot write the report");
		goto out;
	}
	if (st > 0) {
		fprintf(stderr, "warning: %s: the audit chain is broken, these "
		    "counts cannot be trusted: %s\n", path,
		    audit_error_detail());
		ret = 1;
	} else
		ret = 0;
 out:
	json_decref(r.by_key);
	json_decref(r.by_requester);
	json_decref(r.by_kind);
	json_decref(r.by_outcome);
	json_decref(r.by_code);
	EVP_PKEY_free(pub);
	return ret;
}

int
audit_main(int argc, char **argv)
{
	if (argc < 2) {
		audit_usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		audit_usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "verify") == 0)
		return audit_verify(argc - 1, argv + 1);
	if (strcmp(argv[1], "report") == 0)
		return audit_report(argc - 1, argv + 1);
	log_warnx("audit: unknown command \"%s\"", argv[1]);
	audit_usage(stderr);
	return 2;
}
