/*
 * The policy file (policy/rules.c): every load error with its line, the
 * pattern language in both directions, and rules_decide's answers.
 * Policy files are written into a temporary directory at run time.
 */
#include "config.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rules.h"

static char	tmpdir[64];
static int	seq;

#define NAMES(...)	((const char *const[]){ __VA_ARGS__ })
#define NNAMES(...)	(sizeof(NAMES(__VA_ARGS__)) / sizeof(const char *))

/* A rule that allows ec-p256 server certificates for whatever it names. */
#define HEAD(rulebody)							\
	"[requester t]\n"						\
	"tokens = yes\n"						\
	"rules = r\n"							\
	"[rule r]\n"							\
	"key = k\n"							\
	"profiles = server, svid, subca\n"				\
	"key_algorithms = ec-p256\n"					\
	rulebody

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
	size_t len = strlen(text), off = 0;
	ssize_t n;
	int fd;

	(void)unlink(path);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0600)) == -1)
		fail_msg("%s: %s", path, strerror(errno));
	while (off < len) {
		if ((n = write(fd, text + off, len - off)) <= 0)
			fail_msg("%s: write: %s", path, strerror(errno));
		off += (size_t)n;
	}
	if (fchmod(fd, mode) == -1)
		fail_msg("%s: chmod: %s", path, strerror(errno));
	close(fd);
}

static void
new_path(char *buf, size_t len)
{
	snprintf(buf, len, "%s/policy-%d.ini", tmpdir, seq++);
}

static struct rules *
load_ok(const char *text)
{
	char path[128], err[512];
	struct rules *r = NULL;

	new_path(path, sizeof(path));
	write_file(path, text, 0644);
	if (rules_load(path, &r, err, sizeof(err)) != 0)
		fail_msg("rules_load: %s\n--- policy:\n%s", err, text);
	assert_non_null(r);
	unlink(path);
	return r;
}

/* The load fails and says "PATH:line: ...what...". */
static void
load_fails_at(const char *text, int line, const char *what)
{
	char path[128], err[1024], want[192];
	struct rules *r = (struct rules *)&seq;

	new_path(path, sizeof(path));
	write_file(path, text, 0644);
	if (rules_load(path, &r, err, sizeof(err)) == 0) {
		rules_free(r);
		unlink(path);
		fail_msg("loaded, expected line %d '%s'\n--- policy:\n%s",
		    line, what, text);
	}
	assert_null(r);
	unlink(path);
	snprintf(want, sizeof(want), "%s:%d: ", path, line);
	if (strncmp(err, want, strlen(want)) != 0 || strstr(err, what) == NULL)
		fail_msg("expected \"%s...%s...\", got \"%s\"", want, what,
		    err);
}

static int
ask(const struct rules *r, const char *token, const char *identity,
    const char *profile, const char *dns, const char *uri,
    struct rules_decision *d)
{
	struct rules_caller c = { token, identity };
	struct rules_request q;
	const char *dnsv[1] = { dns }, *uriv[1] = { uri };

	memset(&q, 0, sizeof(q));
	q.profile = profile;
	q.alg = RULES_ALG_EC_P256;
	q.dns = dnsv;
	q.ndns = dns != NULL;
	q.uris = uriv;
	q.nuris = uri != NULL;
	return rules_decide(r, &c, &q, d);
}

static void
assert_denied(int ret, const struct rules_decision *d, const char *code,
    const char *in_message)
{
	if (ret != -1 || d->code == NULL || strcmp(d->code, code) != 0 ||
	    (in_message != NULL && strstr(d->message, in_message) == NULL))
		fail_msg("expected %s with '%s', got %d %s '%s'", code,
		    in_message ? in_message : "", ret,
		    d->code ? d->code : "(no code)", d->message);
}

/*
 * rules_parse_duration, the algorithm names.
 */
static void
test_duration(void **state)
{
	static const struct {
		const char	*in;
		long		 want;
	} cases[] = {
		{ "1s", 1 }, { "90s", 90 }, { "15m", 900 }, { "24h", 86400 },
		{ "7d", 604800 }, { "3650d", 3650L * 86400 },
		{ "315360000s", 315360000 }, { "007m", 420 },
		{ "0s", -1 }, { "3651d", -1 }, { "315360001s", -1 },
		{ "87601h", -1 }, { "24", -1 }, { "", -1 }, { "h", -1 },
		{ "1w", -1 }, { "1H", -1 }, { " 1h", -1 }, { "1h ", -1 },
		{ "+1h", -1 }, { "-1h", -1 }, { "1hh", -1 }, { "1.5h", -1 },
		{ "99999999999999999999999999s", -1 },
		{ "18446744073709551617d", -1 }, { "1 h", -1 },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (rules_parse_duration(cases[i].in) != cases[i].want)
			fail_msg("'%s': got %ld, want %ld", cases[i].in,
			    rules_parse_duration(cases[i].in), cases[i].want);
	assert_int_equal(rules_parse_duration(NULL), -1);
}

static void
test_alg_names(void **state)
{
	static const char *const names[] = { "ec-p256", "ec-p384", "rsa-2048",
	    "rsa-3072", "rsa-4096", "ed25519" };
	size_t i;

	(void)state;
	for (i = 0; i < 6; i++) {
		assert_int_equal(rules_alg_from_name(names[i]), 1 << i);
		assert_string_equal(rules_alg_name(1 << i), names[i]);
	}
	assert_int_equal(rules_alg_from_name("rsa"), 0);
	assert_int_equal(rules_alg_from_name("EC-P256"), 0);
	assert_int_equal(rules_alg_from_name(NULL), 0);
	assert_string_equal(rules_alg_name(3), "unknown");
}

/*
 * Loading.
 */
static void
test_load_valid(void **state)
{
	struct rules_decision d;
	struct rules *r;

	(void)state;
	/* Comments, continuation lines, inline comments, odd spacing. */
	r = load_ok(
	    "; a policy\n"
	    "# another comment\n"
	    "\n"
	    "[requester web]\n"
	    "tokens = yes ; inline\n"
	    "identities = spiffe://example.org/web/*,\n"
	    "    *.web.example.com ; continued\n"
	    "rules = web-server,\n"
	    "  web-client\n"
	    "[ rule web-server ]\n"
	    "key=issuing-1\n"
	    "profiles=server,peer\n"
	    "dns_names = *.web.example.com WWW.Example.COM\n"
	    "key_algorithms = ec-p256, ed25519\n"
	    "max_ttl = 2d\n"
	    "default_ttl = 36h\n"
	    "renew = any\n"
	    "[rule web-client]\n"
	    "key = issuing-1\n"
	    "profiles = client\n"
	    "spiffe_ids = spiffe://example.org/web/*\n"
	    "key_algorithms = ec-p384\n");
	assert_int_equal(ask(r, "web", NULL, "server", "www.example.com",
	    NULL, &d), 0);
	assert_string_equal(d.requester, "web");
	assert_string_equal(d.rule, "web-server");
	assert_string_equal(d.key, "issuing-1");
	assert_int_equal(d.ttl, 36 * 3600);
	assert_null(d.code);
	rules_free(r);

	/* A rule named before its section; max_ttl alone shortens the
	 * default. */
	r = load_ok(
	    "[requester a]\n"
	    "tokens = yes\n"
	    "rules = late\n"
	    "[rule late]\n"
	    "key = k\n"
	    "profiles = server\n"
	    "key_algorithms = ec-p256\n"
	    "dns_names = a.example\n"
	    "max_ttl = 10m\n");
	assert_int_equal(ask(r, "a", NULL, "server", "a.example", NULL, &d),
	    0);
	assert_int_equal(d.ttl, 600);
	rules_free(r);

	/* Neither max_ttl nor default_ttl: 24 h and 1 h. */
	r = load_ok(HEAD("dns_names = a.example\n"));
	assert_int_equal(ask(r, "t", NULL, "server", "a.example", NULL, &d),
	    0);
	assert_int_equal(d.ttl, 3600);
	rules_free(r);
}

static void
test_load_empty(void **state)
{
	struct rules_decision d;
	struct rules *r;

	(void)state;
	r = load_ok("");
	assert_int_equal(ask(r, "t", NULL, "server", "a.example", NULL, &d),
	    -1);
	assert_string_equal(d.code, "unknown_requester");
	assert_int_equal(ask(r, NULL, "spiffe://example.org/x", "svid", NULL,
	    "spiffe://example.org/x", &d), -1);
	assert_string_equal(d.code, "unknown_requester");
	assert_false(rules_is_admin(r, "spiffe://example.org/x"));
	rules_free(r);
	r = load_ok("; only a comment\n\n");
	rules_free(r);
	rules_free(NULL);
}

static void
test_load_errors(void **state)
{
	(void)state;
	load_fails_at("[requestor a]\ntokens = yes\n", 1,
	    "unknown section kind 'requestor'");
	load_fails_at("\n[signer]\n", 2, "unknown section kind");
	load_fails_at("tokens = yes\n", 1, "outside a section");
	load_fails_at("[requester a]\ntokens = yes\nfoo = 1\n", 3,
	    "unknown setting 'foo' in [requester a]");
	load_fails_at("[requester a]\nkey = k\n", 2,
	    "unknown setting 'key' in [requester a]");
	load_fails_at(HEAD("dns_names = a\nidentities = x\n"), 9,
	    "unknown setting 'identities' in [rule r]");
	load_fails_at("[requester a]\ntokens = yes\n[requester b]\n"
	    "[requester a]\n", 4, "requester 'a' defined twice (first on "
	    "line 1)");
	load_fails_at(HEAD("dns_names = a\n[rule r]\nkey = k\n"), 9,
	    "rule 'r' defined twice (first on line 4)");
	load_fails_at("[requester a]\ntokens = yes\n\ntokens = no\n", 4,
	    "tokens given twice in [requester a] (first on line 2)");
	load_fails_at(HEAD("dns_names = a\ndns_names = b\n"), 9,
	    "dns_names given twice");
	load_fails_at(HEAD("dns_names = a\nmax_ttl = 1h\n  2h\n"), 10,
	    "max_ttl takes one value");
	load_fails_at("[rule Bad]\n", 1, "bad name 'Bad'");
	load_fails_at("[rule -a]\n", 1, "bad name '-a'");
	load_fails_at("[requester a b]\n", 1, "bad name 'a b'");
	load_fails_at("[rule]\n", 1, "bad name ''");
	load_fails_at("[requester a/b]\n", 1, "bad name");
	load_fails_at("[rule "
	    "a1234567890123456789012345678901234567890123456789012345678901234"
	    "]\n", 1, "bad name");
	load_fails_at("[rule "
	    "a123456789012345678901234567890123456789012345678901234567890123"
	    "]\nkey = k\nx = y\n", 3, "unknown setting 'x' in [rule "
	    "a123456789012345678901234567890123456789012345678901234567890123"
	    "]");
	load_fails_at("[rule r\nkey = k\n", 1, "without ']'");
	load_fails_at("[rule r] x\n", 1, "text after");
	load_fails_at("[requester a]\nthis line is junk\n", 2,
	    "not a setting");
	load_fails_at("[requester a]\ntokens =\n", 2, "tokens is empty");
	load_fails_at("[requester a]\ntokens = maybe\n", 2,
	    "tokens must be yes or no: 'maybe'");
	load_fails_at("[requester a]\nadmin = true\n", 2,
	    "admin must be yes or no");
	load_fails_at("[requester a]\nrules = Bad\n", 2,
	    "bad rule name 'Bad'");
	load_fails_at("[rule r]\nkey = k\nprofiles = server, mail\n", 3,
	    "unknown profile 'mail'");
	load_fails_at("[rule r]\nkey = k\nkey_algorithms = ec-p521\n", 3,
	    "unknown key algorithm 'ec-p521'");
	load_fails_at("[rule r]\nkey = k/1\n", 2, "bad signer key name");
	load_fails_at("[rule r]\nkey = k\nrenew = sometimes\n", 3,
	    "renew must be own, any or no");
	load_fails_at(HEAD("dns_names = a\nmax_ttl = 24\n"), 9,
	    "max_ttl must be a duration");
	load_fails_at(HEAD("dns_names = a\nmax_ttl = 1w\n"), 9,
	    "max_ttl must be a duration");
	load_fails_at(HEAD("dns_names = a\ndefault_ttl = 0s\n"), 9,
	    "default_ttl must be a duration");
	load_fails_at(HEAD("dns_names = a\nmax_ttl = 3651d\n"), 9,
	    "max_ttl must be a duration");
	/* default_ttl above max_ttl: the default_ttl line. */
	load_fails_at(HEAD("default_ttl = 2h\nmax_ttl = 1h\n"
	    "dns_names = a\n"), 8, "default_ttl (7200s) is above max_ttl "
	    "(3600s)");
	load_fails_at(HEAD("dns_names = a\ndefault_ttl = 25h\n"
	    "[requester b]\n"), 9, "above max_ttl (86400s when not given)");
	/* A rule that does not exist: the line of its rules = entry. */
	load_fails_at("[requester a]\ntokens = yes\nrules = r,\n  ghost\n"
	    "[rule r]\nkey = k\nprofiles = server\nkey_algorithms = ec-p256\n",
	    4, "requester 'a' names rule 'ghost', which does not exist");
	load_fails_at("[requester a]\nrules = ghost\n", 2,
	    "names rule 'ghost'");
	/* A rule without key =: its header's line. */
	load_fails_at("[rule r]\nprofiles = server\nkey_algorithms = ec-p256\n"
	    "[rule s]\nkey = k\n", 1, "[rule r] has no key =");
	load_fails_at("\n\n[rule r]\n", 3, "has no key =");
	load_fails_at("[rule r]\nkey = k\nkey_algorithms = ec-p256\n", 1,
	    "has no profiles");
	load_fails_at("[rule r]\nkey = k\nprofiles = svid\n", 1,
	    "has no key_algorithms");
	load_fails_at("\xef\xbb\xbf[rule r]\nkey = k\nbad\n", 3,
	    "not a setting");
}

static void
test_load_bad_patterns(void **state)
{
	static const struct {
		const char	*setting;
		const char	*pattern;
		const char	*why;
	} cases[] = {
		{ "spiffe_ids", "spiffe://*.example.org/a", "wildcard is not "
		    "allowed in the trust domain" },
		{ "spiffe_ids", "spiffe://example.*/a", "wildcard" },
		{ "spiffe_ids", "spiffe://{requester}.org/a", "placeholder is "
		    "not allowed in the trust domain" },
		{ "spiffe_ids", "spiffe://Example.org/a", "lower case" },
		{ "spiffe_ids", "spiffe://example.org:8443/a", "trust domain "
		    "has a character" },
		{ "spiffe_ids", "spiffe://u@example.org/a", "trust domain" },
		{ "spiffe_ids", "spiffe:///a", "no trust domain" },
		{ "spiffe_ids", "example.org/a", "does not begin with "
		    "spiffe://" },
		{ "spiffe_ids", "SPIFFE://example.org/a", "does not begin" },
		{ "spiffe_ids", "spiffe://example.org/**/a", "'**' is only "
		    "allowed as the whole last path segment" },
		{ "spiffe_ids", "spiffe://example.org/a**", "'**'" },
		{ "spiffe_ids", "spiffe://example.org/***", "'**'" },
		{ "spiffe_ids", "spiffe://example.org/a//b", "empty path "
		    "segment" },
		{ "spiffe_ids", "spiffe://example.org/a/", "empty path "
		    "segment" },
		{ "spiffe_ids", "spiffe://example.org/a/../b", "'..'" },
		{ "spiffe_ids", "spiffe://example.org/./b", "'.'" },
		{ "spiffe_ids", "spiffe://example.org/a?x", "query" },
		{ "spiffe_ids", "spiffe://example.org/a#x", "fragment" },
		{ "spiffe_ids", "spiffe://example.org/a%20", "a path has only" },
		{ "spiffe_ids", "spiffe://example.org/{user}", "'{' begins no "
		    "placeholder" },
		{ "spiffe_ids", "spiffe://example.org/a}", "'}' ends no" },
		{ "spiffe_ids", "spiffe://example.org/x/{identity}", "may only "
		    "begin" },
		{ "spiffe_ids", "{identity}x", "followed by '/'" },
		{ "dns_names", "**.example.com", "'**' is only allowed" },
		{ "dns_names", "a..example.com", "empty label" },
		{ "dns_names", ".example.com", "begins with '.'" },
		{ "dns_names", "example.com.", "ends with '.'" },
		{ "dns_names", "ex_ample.com", "a DNS name pattern has only" },
		{ "dns_names", "spiffe://example.org/a", "not a DNS name "
		    "pattern" },
		{ "dns_names", "{requester", "'{' begins no placeholder" },
		{ "dns_names", "a123456789012345678901234567890123456789012345"
		    "678901234567890123.com", "label longer than 63" },
		{ "identities", "{identity}", "{identity} cannot name who" },
		{ "identities", "*.{identity}", "{identity} cannot name who" },
	};
	char text[4096];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (strcmp(cases[i].setting, "identities") == 0)
			snprintf(text, sizeof(text), "[requester a]\n"
			    "tokens = no\nidentities = x.example, %s\n",
			    cases[i].pattern);
		else if (strcmp(cases[i].setting, "dns_names") == 0)
			snprintf(text, sizeof(text),
			    HEAD("dns_names = ok.example, %s\n"),
			    cases[i].pattern);
		else
			snprintf(text, sizeof(text),
			    HEAD("spiffe_ids = spiffe://example.org/ok %s\n"),
			    cases[i].pattern);
		load_fails_at(text, cases[i].setting[0] == 'i' ? 3 : 8,
		    cases[i].why);
	}
	/* The message names the list and the pattern. */
	load_fails_at(HEAD("spiffe_ids = spiffe://example.org/ok,\n"
	    "  spiffe://*.example.org/x\n"), 9, "spiffe_ids: bad pattern "
	    "'spiffe://*.example.org/x': a wildcard");
}

static void
test_load_limits(void **state)
{
	char *text, *p, *pat;
	size_t i, cap = 1 << 20;

	(void)state;
	text = malloc(cap);
	pat = malloc(4096);
	assert_non_null(text);
	assert_non_null(pat);

	/* A pattern of 2048 bytes is fine, of 2049 refused. */
	strcpy(pat, "spiffe://example.org/");
	memset(pat + strlen(pat), 'a', 2048 - strlen(pat));
	pat[2048] = '\0';
	snprintf(text, cap, HEAD("spiffe_ids = %s\n"), pat);
	rules_free(load_ok(text));
	strcat(pat, "b");
	snprintf(text, cap, HEAD("spiffe_ids = %s\n"), pat);
	load_fails_at(text, 8, "longer than 2048 bytes");
	memset(pat, 'a', 2049);
	pat[2049] = '\0';
	snprintf(text, cap, HEAD("dns_names = %s\n"), pat);
	load_fails_at(text, 8, "longer than 2048 bytes");

	/* 64 patterns in a list, over two lines, and no more. */
	p = text + snprintf(text, cap, HEAD("dns_names = "));
	for (i = 0; i < 64; i++) {
		p += sprintf(p, "h%zu.example.com,", i);
		if (i == 31)
			p += sprintf(p, "\n  ");
	}
	strcpy(p, "\n");
	rules_free(load_ok(text));
	strcpy(p, "\n  one-more.example.com\n");
	load_fails_at(text, 10, "dns_names: more than 64 entries");

	/* 256 requesters and 256 rules, and no more. */
	p = text;
	for (i = 0; i < 256; i++)
		p += sprintf(p, "[requester r%zu]\ntokens = yes\n"
		    "[rule r%zu]\nkey = k\nprofiles = server\n"
		    "key_algorithms = ec-p256\n", i, i);
	rules_free(load_ok(text));
	strcpy(p, "[requester r256]\n");
	load_fails_at(text, 256 * 6 + 1, "more than 256 requesters");
	strcpy(p, "[rule r256]\n");
	load_fails_at(text, 256 * 6 + 1, "more than 256 rules");

	/* A line longer than 8192 characters. */
	p = text + snprintf(text, cap, "[requester a]\nidentities = ");
	for (i = 0; i < 500; i++)
		p += sprintf(p, "host%03zu.example.com ", i);
	strcpy(p, "\n");
	load_fails_at(text, 2, "longer than 8192 characters");
	free(pat);
	free(text);
}

static void
test_load_file_checks(void **state)
{
	char path[128], err[512];
	struct rules *r = NULL;

	(void)state;
	new_path(path, sizeof(path));
	write_file(path, "", 0664);
	assert_int_equal(rules_load(path, &r, err, sizeof(err)), -1);
	assert_null(r);
	assert_non_null(strstr(err, "writable by group or others"));
	assert_int_equal(strncmp(err, path, strlen(path)), 0);
	write_file(path, "", 0646);
	assert_int_equal(rules_load(path, &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "writable by group or others"));
	/* Readable by all is fine: a policy holds no secret. */
	write_file(path, "", 0444);
	assert_int_equal(rules_load(path, &r, err, sizeof(err)), 0);
	rules_free(r);
	unlink(path);

	assert_int_equal(rules_load(tmpdir, &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a regular file"));
	assert_int_equal(rules_load("/dev/null", &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a regular file"));

	new_path(path, sizeof(path));
	if (mkfifo(path, 0600) == 0) {
		assert_int_equal(rules_load(path, &r, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "not a regular file"));
		unlink(path);
	}
	assert_int_equal(rules_load(path, &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot open"));
	/* A NUL byte in a line. */
	new_path(path, sizeof(path));
	{
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);

		assert_true(fd >= 0);
		assert_int_equal(write(fd, "[rule r]\nkey = k\0x\n", 19), 19);
		close(fd);
	}
	assert_int_equal(rules_load(path, &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":2: a NUL byte"));
	/* No error buffer: still refused, nothing written anywhere. */
	assert_int_equal(rules_load(path, &r, NULL, 0), -1);
	unlink(path);
}

/*
 * The pattern language, through rules_decide.
 */
struct match_case {
	const char	*pattern;	/* spiffe:// or {identity}: spiffe_ids */
	const char	*name;		/* spiffe://: a URI SAN */
	int		 want;
};

static void
run_match_table(const struct match_case *cases, size_t n,
    const char *identity_rule)
{
	struct rules_decision d;
	struct rules *r;
	char text[8192];
	const char *identity = NULL, *token = "t";
	size_t i;
	int spiffe_pat, spiffe_name, ret;

	for (i = 0; i < n; i++) {
		spiffe_name = strncmp(cases[i].name, "spiffe:", 7) == 0 ||
		    strncmp(cases[i].name, "SPIFFE:", 7) == 0;
		/* "{identity}" alone goes where the name goes. */
		spiffe_pat = strncmp(cases[i].pattern, "spiffe:", 7) == 0 ||
		    (strncmp(cases[i].pattern, "{identity}", 10) == 0 &&
		    (cases[i].pattern[10] != '\0' || spiffe_name));
		if (identity_rule != NULL) {
			snprintf(text, sizeof(text),
			    "[requester t]\nidentities = %s\nrules = r\n"
			    "[rule r]\nkey = k\nprofiles = server\n"
			    "key_algorithms = ec-p256\n%s = %s\n",
			    identity_rule,
			    spiffe_pat ? "spiffe_ids" : "dns_names",
			    cases[i].pattern);
			identity = identity_rule[0] == 's' ?
			    "spiffe://example.org/ns/prod/sa/web" :
			    "Node-1.nodes.example.com";
			token = NULL;
		} else
			snprintf(text, sizeof(text), HEAD("%s = %s\n"),
			    spiffe_pat ? "spiffe_ids" : "dns_names",
			    cases[i].pattern);
		r = load_ok(text);
		ret = ask(r, token, identity, "server",
		    spiffe_name ? NULL : cases[i].name,
		    spiffe_name ? cases[i].name : NULL, &d);
		if (ret != (cases[i].want ? 0 : -1) || (ret != 0 &&
		    strcmp(d.code, "name_not_allowed") != 0))
			fail_msg("pattern '%s' name '%.80s': got %d %s (%s), "
			    "want %s", cases[i].pattern, cases[i].name, ret,
			    d.code ? d.code : "", d.message,
			    cases[i].want ? "a match" : "none");
		if (ret != 0 && strstr(d.message, "rule 'r'") == NULL)
			fail_msg("message names no rule: %s", d.message);
		rules_free(r);
	}
}

static void
test_match_spiffe(void **state)
{
	static char long_ok[2100], long_bad[2100];
	static const char *prefix = "spiffe://example.org/";
	struct match_case cases[] = {
		{ "spiffe://example.org/ns/*/sa/web",
		    "spiffe://example.org/ns/prod/sa/web", 1 },
		{ "spiffe://example.org/ns/*/sa/web",
		    "spiffe://example.org/ns/prod/x/sa/web", 0 },
		{ "spiffe://example.org/ns/*/sa/web",
		    "spiffe://example.org/ns/sa/web", 0 },
		{ "spiffe://example.org/ns/p*",
		    "spiffe://example.org/ns/prod", 1 },
		{ "spiffe://example.org/ns/p*",
		    "spiffe://example.org/ns/p", 0 },
		{ "spiffe://example.org/ns/*d",
		    "spiffe://example.org/ns/prod", 1 },
		{ "spiffe://example.org/ns/*-*-x",
		    "spiffe://example.org/ns/a-b-c-x", 1 },
		{ "spiffe://example.org/ns/*-*-x",
		    "spiffe://example.org/ns/a--x", 0 },
		{ "spiffe://example.org/*", "spiffe://example.org/a/b", 0 },
		{ "spiffe://example.org/**", "spiffe://example.org/a", 1 },
		{ "spiffe://example.org/**", "spiffe://example.org/a/b/c", 1 },
		{ "spiffe://example.org/**", "spiffe://example.org", 0 },
		{ "spiffe://example.org/a/**", "spiffe://example.org/a", 0 },
		{ "spiffe://example.org/a/**", "spiffe://example.org/a/b", 1 },
		{ "spiffe://example.org/a/**", "spiffe://example.org/ab/c", 0 },
		{ "spiffe://example.org/*/**", "spiffe://example.org/a/b", 1 },
		{ "spiffe://example.org", "spiffe://example.org", 1 },
		{ "spiffe://example.org", "spiffe://example.org/a", 0 },
		{ "spiffe://example.org/x", "spiffe://example.org/x", 1 },
		{ "spiffe://example.org/x", "spiffe://example.org/X", 0 },
		{ "spiffe://example.org/x", "spiffe://other.org/x", 0 },
		{ "spiffe://example.org/x", "spiffe://example.org.evil/x", 0 },
		{ "spiffe://example.org/x", "spiffe://xexample.org/x", 0 },
		{ "spiffe://example.org/x", "spiffe://example.org/x/y", 0 },
		{ "spiffe://example.org/**", "spiffe://example.org/a/../b", 0 },
		{ "spiffe://example.org/**", "spiffe://example.org/a/./b", 0 },
		{ "spiffe://example.org/**", "spiffe://example.org/a//b", 0 },
		{ "spiffe://example.org/**", "spiffe://example.org/a/", 0 },
		{ "spiffe://example.org/**", "spiffe://example.org/a?x=1", 0 },
		{ "spiffe://example.org/**", "spiffe://example.org/a#f", 0 },
		{ "spiffe://example.org/**", "spiffe://example.org:443/a", 0 },
		{ "spiffe://example.org/**", "spiffe://u@example.org/a", 0 },
		{ "spiffe://example.org/**", "spiffe://Example.org/a", 0 },
		{ "spiffe://example.org/**", "SPIFFE://example.org/a", 0 },
		{ "spiffe://example.org/**", "spiffe://example.org/a%41", 0 },
		{ "spiffe://example.org/**", "spiffe://example.org/a b", 0 },
		{ "spiffe://example.org/**", long_ok, 1 },
		{ "spiffe://example.org/**", long_bad, 0 },
		/* {requester} is the requester's name only. */
		{ "spiffe://example.org/{requester}/*",
		    "spiffe://example.org/t/w", 1 },
		{ "spiffe://example.org/{requester}/*",
		    "spiffe://example.org/u/w", 0 },
		{ "spiffe://example.org/x-{requester}",
		    "spiffe://example.org/x-t", 1 },
		{ "spiffe://example.org/{requester}",
		    "spiffe://example.org/%7Brequester%7D", 0 },
		/* {identity} never matches for a token caller. */
		{ "{identity}", "spiffe://example.org/t", 0 },
		{ "{identity}/**", "spiffe://example.org/t/x", 0 },
	};
	size_t n;

	(void)state;
	/* 2048 bytes exactly, and 2049. */
	n = strlen(prefix);
	memcpy(long_ok, prefix, n);
	memset(long_ok + n, 'a', 2048 - n);
	long_ok[2048] = '\0';
	memcpy(long_bad, long_ok, 2048);
	strcpy(long_bad + 2048, "b");
	run_match_table(cases, sizeof(cases) / sizeof(cases[0]), NULL);
}

static void
test_match_dns(void **state)
{
	static char label64[128], long254[300], long253[300];
	struct match_case cases[] = {
		{ "*.example.com", "www.example.com", 1 },
		{ "*.example.com", "WWW.Example.COM", 1 },
		{ "*.Example.COM", "www.example.com", 1 },
		{ "*.example.com", "a.b.example.com", 0 },
		{ "*.example.com", "example.com", 0 },
		{ "*.example.com", "www.example.org", 0 },
		{ "*.example.com", "www.example.com.evil", 0 },
		{ "*.example.com", "wwwexample.com", 0 },
		{ "web-*.example.com", "web-1.example.com", 1 },
		{ "web-*.example.com", "web-.example.com", 0 },
		{ "*-web.*.example.com", "a-web.eu.example.com", 1 },
		{ "*-web.*.example.com", "a-web.example.com", 0 },
		{ "*", "localhost", 1 },
		{ "*", "a.b", 0 },
		{ "example.com", "example.com", 1 },
		{ "example.com", "example.com.", 0 },
		{ "*.com", ".example.com", 0 },
		{ "*.example.com", "a..example.com", 0 },
		{ "*.example.com", "ex_ample.example.com", 0 },
		{ "*.example.com", "*.example.com", 0 },
		{ "*.example.com", "a b.example.com", 0 },
		{ "*.example.com", label64, 0 },
		{ "*.*.*.*.*", long254, 0 },
		{ "*.*.*.*", long253, 1 },
		{ "{requester}.nodes.example.com", "t.nodes.example.com", 1 },
		{ "{requester}.nodes.example.com", "u.nodes.example.com", 0 },
		{ "*.{requester}.example.com", "a.t.example.com", 1 },
		{ "{identity}", "t", 0 },
		{ "*.{identity}", "a.t", 0 },
	};
	size_t i;

	(void)state;
	/* A 64-character label; a 254- and a 253-character name. */
	memset(label64, 'a', 64);
	strcpy(label64 + 64, ".example.com");
	for (i = 0; i < 4; i++) {
		memset(long253 + i * 64, 'b', 63);
		long253[i * 64 + 63] = '.';
	}
	long253[4 * 64 - 1] = '\0';
	/* 255 so far minus the last '.': trim to 253. */
	long253[253] = '\0';
	assert_int_equal(strlen(long253), 253);
	memcpy(long254, long253, 253);
	strcpy(long254 + 253, "c");
	long254[250] = '.';
	run_match_table(cases, sizeof(cases) / sizeof(cases[0]), NULL);
}

static void
test_match_identity(void **state)
{
	/* The caller is spiffe://example.org/ns/prod/sa/web. */
	static const struct match_case spiffe_cases[] = {
		{ "{identity}", "spiffe://example.org/ns/prod/sa/web", 1 },
		{ "{identity}", "spiffe://example.org/ns/prod/sa/db", 0 },
		{ "{identity}", "spiffe://example.org/ns/prod/sa/web/x", 0 },
		{ "{identity}/**", "spiffe://example.org/ns/prod/sa/web/x/y",
		    1 },
		{ "{identity}/**", "spiffe://example.org/ns/prod/sa/web", 0 },
		{ "{identity}/*", "spiffe://example.org/ns/prod/sa/web/x", 1 },
		/* A SPIFFE identity is no DNS label sequence. */
		{ "{identity}", "web", 0 },
		{ "*.{identity}", "a.web", 0 },
	};
	/* The caller is Node-1.nodes.example.com: its lower case. */
	static const struct match_case dns_cases[] = {
		{ "{identity}", "node-1.nodes.example.com", 1 },
		{ "{identity}", "NODE-1.nodes.example.com", 1 },
		{ "{identity}", "node-2.nodes.example.com", 0 },
		{ "*.{identity}", "x.node-1.nodes.example.com", 1 },
		{ "*.{identity}", "node-1.nodes.example.com", 0 },
		{ "{identity}", "spiffe://example.org/node-1", 0 },
	};

	(void)state;
	run_match_table(spiffe_cases, sizeof(spiffe_cases) /
	    sizeof(spiffe_cases[0]), "spiffe://example.org/ns/*/sa/*");
	run_match_table(dns_cases, sizeof(dns_cases) / sizeof(dns_cases[0]),
	    "*.nodes.example.com");
}

/* A placeholder whose value is no valid label never matches. */
static void
test_match_placeholder_values(void **state)
{
	struct rules_decision d;
	struct rules *r;

	(void)state;
	r = load_ok(
	    "[requester my_app]\ntokens = yes\nrules = r\n"
	    "[rule r]\nkey = k\nprofiles = server\nkey_algorithms = ec-p256\n"
	    "dns_names = {requester}.example.com, *-{requester}.example.com\n"
	    "spiffe_ids = spiffe://example.org/{requester}\n");
	assert_denied(ask(r, "my_app", NULL, "server", "my_app.example.com",
	    NULL, &d), &d, "name_not_allowed", "is not valid");
	assert_denied(ask(r, "my_app", NULL, "server", "my-app.example.com",
	    NULL, &d), &d, "name_not_allowed", "matches no dns_names");
	assert_denied(ask(r, "my_app", NULL, "server", "x-my.example.com",
	    NULL, &d), &d, "name_not_allowed", "matches no dns_names");
	/* In a SPIFFE path '_' is fine. */
	assert_int_equal(ask(r, "my_app", NULL, "server", NULL,
	    "spiffe://example.org/my_app", &d), 0);
	rules_free(r);

	/* {requester} in identities: each requester's own name. */
	r = load_ok(
	    "[requester db]\nidentities = spiffe://example.org/svc/{requester}"
	    "\nrules = r\n"
	    "[requester web]\nidentities = spiffe://example.org/svc/{requester}"
	    ", {requester}.example.com\nrules = r\n"
	    "[rule r]\nkey = k\nprofiles = svid\nkey_algorithms = ec-p256\n"
	    "spiffe_ids = spiffe://example.org/svc/{requester}\n");
	assert_int_equal(ask(r, NULL, "spiffe://example.org/svc/web", "svid",
	    NULL, "spiffe://example.org/svc/web", &d), 0);
	assert_string_equal(d.requester, "web");
	assert_int_equal(ask(r, NULL, "spiffe://example.org/svc/db", "svid",
	    NULL, "spiffe://example.org/svc/db", &d), 0);
	assert_string_equal(d.requester, "db");
	assert_denied(ask(r, NULL, "spiffe://example.org/svc/db", "svid",
	    NULL, "spiffe://example.org/svc/web", &d), &d, "name_not_allowed",
	    NULL);
	assert_denied(ask(r, NULL, "spiffe://example.org/svc/mail", "svid",
	    NULL, "spiffe://example.org/svc/mail", &d), &d,
	    "unknown_requester", NULL);
	assert_denied(ask(r, NULL, "db.example.com", "svid", NULL,
	    "spiffe://example.org/svc/db", &d), &d, "unknown_requester", NULL);
	assert_true(ask(r, NULL, "WEB.example.com", "svid", NULL,
	    "spiffe://example.org/svc/web", &d) == 0);
	rules_free(r);

	/* An identity with characters outside the syntax. */
	r = load_ok(
	    "[requester a]\nidentities = *.example.com, spiffe://example.org/**"
	    "\nrules = r\n"
	    "[rule r]\nkey = k\nprofiles = server\nkey_algorithms = ec-p256\n"
	    "dns_names = {identity}\nspiffe_ids = {identity}\n");
	assert_int_equal(ask(r, NULL, "a.example.com", "server",
	    "a.example.com", NULL, &d), 0);
	assert_denied(ask(r, NULL, "a_b.example.com", "server",
	    "a_b.example.com", NULL, &d), &d, "unknown_requester", NULL);
	assert_denied(ask(r, NULL, "spiffe://example.org/a", "server",
	    "a.example.com", NULL, &d), &d, "name_not_allowed", NULL);
	assert_int_equal(ask(r, NULL, "spiffe://example.org/a", "server",
	    NULL, "spiffe://example.org/a", &d), 0);
	rules_free(r);
}

/* Hostile patterns and names: bounded, not exponential. */
static void
test_match_hostile(void **state)
{
	static char pattern[2100], name[2100], text[4096 + 512];
	struct rules_decision d;
	struct rules *r;
	const char *prefix = "spiffe://example.org/";
	double t0, spent;
	size_t n, i;
	int k;

	(void)state;
	n = strlen(prefix);
	memcpy(pattern, prefix, n);
	for (i = n; i + 2 < 2047; i += 2)
		memcpy(pattern + i, "*a", 2);
	pattern[i] = 'b';
	pattern[i + 1] = '\0';
	memcpy(name, prefix, n);
	memset(name + n, 'a', 2048 - n);
	name[2048] = '\0';
	snprintf(text, sizeof(text), HEAD("spiffe_ids = %s\n"
	    "dns_names = *a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a"
	    "*a*a*a*b.*a*a*a*b.com\n"), pattern);
	r = load_ok(text);
	t0 = now();
	for (k = 0; k < 5; k++)
		assert_denied(ask(r, "t", NULL, "server", NULL, name, &d), &d,
		    "name_not_allowed", "matches no spiffe_ids");
	for (k = 0; k < 100; k++)
		assert_denied(ask(r, "t", NULL, "server",
		    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		    "aaaa.aaaaaaaaaaaaaaaaaaaaaa.com", NULL, &d), &d,
		    "name_not_allowed", "matches no dns_names");
	spent = now() - t0;
	/* Milliseconds natively; generous for valgrind. */
	if (spent > 10.0)
		fail_msg("hostile matching took %.2f s", spent);
	/* And the same pattern still matches what it should. */
	name[2047] = 'b';
	assert_int_equal(ask(r, "t", NULL, "server", NULL, name, &d), 0);
	rules_free(r);
}

/*
 * rules_decide.
 */
static const char *const policy_main =
    "[requester ops]\n"
    "identities = spiffe://example.org/ops/*\n"
    "admin = yes\n"
    "rules = ops\n"
    "[requester web]\n"
    "tokens = yes\n"
    "identities = spiffe://example.org/ns/web/**, *.web.example.com\n"
    "rules = web-svid, web-server, web-any\n"
    "[requester shadow]\n"
    "identities = spiffe://example.org/ns/web/**\n"
    "admin = yes\n"
    "[requester notoken]\n"
    "tokens = no\n"
    "rules = web-svid\n"
    "[rule ops]\n"
    "key = k-ops\n"
    "profiles = client\n"
    "spiffe_ids = {identity}\n"
    "key_algorithms = ec-p256\n"
    "[rule web-svid]\n"
    "key = k-svid\n"
    "profiles = svid\n"
    "spiffe_ids = spiffe://example.org/ns/web/**\n"
    "key_algorithms = ec-p256, ed25519\n"
    "max_ttl = 1h\n"
    "default_ttl = 10m\n"
    "[rule web-server]\n"
    "key = k-server\n"
    "profiles = server, peer\n"
    "dns_names = *.web.example.com\n"
    "spiffe_ids = spiffe://example.org/ns/web/*\n"
    "key_algorithms = ec-p256\n"
    "max_ttl = 30d\n"
    "renew = no\n"
    "[rule web-any]\n"
    "key = k-any\n"
    "profiles = server, subca\n"
    "dns_names = *.web.example.com, *.web2.example.com, web.example.com\n"
    "spiffe_ids = spiffe://example.org/ns/web/**, spiffe://web.example/x,\n"
    "  spiffe://whole.example/**\n"
    "key_algorithms = ec-p256, ec-p384\n"
    "max_ttl = 2h\n"
    "renew = any\n"
    "[rule unused]\n"
    "key = k\n"
    "profiles = client\n"
    "key_algorithms = rsa-2048\n";

static void
test_decide_requester(void **state)
{
	struct rules_decision d;
	struct rules *r;

	(void)state;
	r = load_ok(policy_main);
	assert_denied(ask(r, "nobody", NULL, "svid", NULL,
	    "spiffe://example.org/ns/web/a", &d), &d, "unknown_requester",
	    "no requester 'nobody' takes bootstrap tokens");
	assert_null(d.requester);
	/* tokens = no, or not given. */
	assert_denied(ask(r, "notoken", NULL, "svid", NULL,
	    "spiffe://example.org/ns/web/a", &d), &d, "unknown_requester",
	    NULL);
	assert_denied(ask(r, "ops", NULL, "client", NULL,
	    "spiffe://example.org/ops/a", &d), &d, "unknown_requester",
	    NULL);
	assert_denied(ask(r, NULL, "spiffe://example.org/other/a", "svid",
	    NULL, "spiffe://example.org/other/a", &d), &d,
	    "unknown_requester", "spiffe://example.org/other/a");
	assert_denied(ask(r, NULL, NULL, "svid", NULL,
	    "spiffe://example.org/ns/web/a", &d), &d, "unknown_requester",
	    "neither");
	/* The token names the requester exactly. */
	assert_denied(ask(r, "WEB", NULL, "svid", NULL,
	    "spiffe://example.org/ns/web/a", &d), &d, "unknown_requester",
	    NULL);
	assert_int_equal(ask(r, "web", NULL, "svid", NULL,
	    "spiffe://example.org/ns/web/a", &d), 0);
	assert_string_equal(d.requester, "web");
	assert_string_equal(d.rule, "web-svid");
	assert_string_equal(d.key, "k-svid");
	/* First requester in file order: web, not shadow. */
	assert_int_equal(ask(r, NULL, "spiffe://example.org/ns/web/a/b",
	    "svid", NULL, "spiffe://example.org/ns/web/a/b", &d), 0);
	assert_string_equal(d.requester, "web");
	/* A DNS identity, in any case. */
	assert_int_equal(ask(r, NULL, "A.Web.Example.Com", "server",
	    "a.web.example.com", NULL, &d), 0);
	assert_string_equal(d.requester, "web");
	/* An identity that is no valid name is nobody. */
	assert_denied(ask(r, NULL, "spiffe://example.org/ns/web/../x", "svid",
	    NULL, "spiffe://example.org/ns/web/x", &d), &d,
	    "unknown_requester", NULL);
	rules_free(r);
}

static void
test_decide_codes(void **state)
{
	struct rules_caller c = { "web", NULL };
	struct rules_request q;
	struct rules_decision d;
	struct rules *r;

	(void)state;
	r = load_ok(policy_main);
	assert_denied(ask(r, "web", NULL, "client", NULL,
	    "spiffe://example.org/ns/web/a", &d), &d, "profile_not_allowed",
	    "no rule of requester 'web' allows profile client");
	assert_string_equal(d.requester, "web");
	assert_denied(ask(r, "web", NULL, "email", NULL,
	    "spiffe://example.org/ns/web/a", &d), &d, "profile_not_allowed",
	    "unknown profile 'email'");
	assert_denied(ask(r, "web", NULL, NULL, NULL,
	    "spiffe://example.org/ns/web/a", &d), &d, "profile_not_allowed",
	    NULL);
	/* A name of no rule: the first rule with the profile explains. */
	assert_denied(ask(r, "web", NULL, "svid", NULL,
	    "spiffe://example.org/ns/db/a", &d), &d, "name_not_allowed",
	    "URI 'spiffe://example.org/ns/db/a' matches no spiffe_ids "
	    "pattern of rule 'web-svid'");
	assert_string_equal(d.rule, "web-svid");
	assert_null(d.key);
	assert_denied(ask(r, "web", NULL, "server", "www.example.com", NULL,
	    &d), &d, "name_not_allowed", "DNS name 'www.example.com' matches "
	    "no dns_names pattern of rule 'web-server'");
	assert_denied(ask(r, "web", NULL, "server", "a.web.example.com.",
	    NULL, &d), &d, "name_not_allowed", "is not valid");
	/* svid: one URI, no DNS name, and a path. */
	assert_denied(ask(r, "web", NULL, "svid", "a.web.example.com",
	    "spiffe://example.org/ns/web/a", &d), &d, "name_not_allowed",
	    "profile svid takes exactly one spiffe:// URI and no DNS name");
	assert_non_null(strstr(d.message, "rule 'web-svid'"));
	assert_denied(ask(r, "web", NULL, "svid", "a.web.example.com", NULL,
	    &d), &d, "name_not_allowed", "exactly one");
	assert_denied(ask(r, "web", NULL, "svid", NULL,
	    "spiffe://example.org", &d), &d, "name_not_allowed",
	    "has no path");
	memset(&q, 0, sizeof(q));
	q.profile = "svid";
	q.alg = RULES_ALG_EC_P256;
	q.uris = NAMES("spiffe://example.org/ns/web/a",
	    "spiffe://example.org/ns/web/b");
	q.nuris = 2;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "name_not_allowed",
	    "exactly one");
	/* no_names. */
	assert_denied(ask(r, "web", NULL, "server", NULL, NULL, &d), &d,
	    "no_names", "profile server needs at least one name (rule "
	    "'web-server')");
	assert_denied(ask(r, "web", NULL, "svid", NULL, NULL, &d), &d,
	    "no_names", NULL);
	/* key_not_allowed. */
	q.nuris = 1;
	q.alg = RULES_ALG_RSA_2048;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "key_not_allowed",
	    "key algorithm rsa-2048 is not allowed by rule 'web-svid'");
	q.alg = RULES_ALG_ED25519;
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	q.alg = RULES_ALG_EC_P256 | RULES_ALG_ED25519;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "key_not_allowed",
	    NULL);
	q.alg = 0;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "key_not_allowed",
	    NULL);
	q.alg = 1 << 6;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "key_not_allowed",
	    NULL);
	/* ttl: the default, granted, too long. */
	q.alg = RULES_ALG_EC_P256;
	q.ttl = 0;
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	assert_int_equal(d.ttl, 600);
	q.ttl = 1800;
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	assert_int_equal(d.ttl, 1800);
	q.ttl = 3600;
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	assert_int_equal(d.ttl, 3600);
	q.ttl = 3601;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "ttl_too_long",
	    "ttl 3601s is above max_ttl 3600s of rule 'web-svid'");
	assert_int_equal(d.ttl, 0);
	q.ttl = -5;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "ttl_too_long", NULL);
	/* A hostile name is quoted short and printable. */
	q.ttl = 0;
	q.uris = NAMES("spiffe://example.org/\x1b[31m/\n");
	assert_denied(rules_decide(r, &c, &q, &d), &d, "name_not_allowed",
	    "spiffe://example.org/?[31m/?");
	assert_true(strlen(d.message) < sizeof(d.message));
	rules_free(r);
}

static void
test_decide_first_rule_wins(void **state)
{
	struct rules_decision d;
	struct rules *r;

	(void)state;
	r = load_ok(policy_main);
	/* Both web-server and web-any allow it: web-server, listed first. */
	assert_int_equal(ask(r, "web", NULL, "server", "a.web.example.com",
	    NULL, &d), 0);
	assert_string_equal(d.rule, "web-server");
	assert_string_equal(d.key, "k-server");
	assert_int_equal(d.ttl, 3600);
	/* web-server refuses the name, web-any allows it. */
	assert_int_equal(ask(r, "web", NULL, "server", "a.web2.example.com",
	    NULL, &d), 0);
	assert_string_equal(d.rule, "web-any");
	assert_string_equal(d.key, "k-any");
	/* web-server refuses the multi-segment URI, web-any takes it. */
	assert_int_equal(ask(r, "web", NULL, "server", NULL,
	    "spiffe://example.org/ns/web/a/b", &d), 0);
	assert_string_equal(d.rule, "web-any");
	/* Both refuse: the first one's reason. */
	assert_denied(ask(r, "web", NULL, "server", "b.example.com", NULL,
	    &d), &d, "name_not_allowed", "rule 'web-server'");
	assert_string_equal(d.rule, "web-server");
	/* peer: web-server only. */
	assert_denied(ask(r, "web", NULL, "peer", "a.web2.example.com", NULL,
	    &d), &d, "name_not_allowed", "rule 'web-server'");
	rules_free(r);
}

static void
test_decide_subca(void **state)
{
	struct rules_caller c = { "web", NULL };
	struct rules_request q;
	struct rules_decision d;
	struct rules *r;

	(void)state;
	r = load_ok(policy_main);
	memset(&q, 0, sizeof(q));
	q.profile = "subca";
	q.alg = RULES_ALG_EC_P384;
	q.dns = NAMES("web.example.com");
	q.ndns = 1;
	q.uris = NAMES("spiffe://whole.example");
	q.nuris = 1;
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	assert_string_equal(d.rule, "web-any");
	/* A pattern for a part of a trust domain grants no sub-CA for all
	 * of it. */
	q.uris = NAMES("spiffe://whole.example", "spiffe://example.org");
	q.nuris = 2;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "name_not_allowed",
	    "trust domain 'example.org' is not wholly allowed");
	q.uris = NAMES("spiffe://web.example");
	q.nuris = 1;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "name_not_allowed",
	    "trust domain 'web.example' is not wholly allowed");
	q.uris = NAMES("spiffe://other.example");
	assert_denied(rules_decide(r, &c, &q, &d), &d, "name_not_allowed",
	    "trust domain 'other.example' is not wholly allowed by a "
	    "spiffe_ids pattern spiffe://DOMAIN/** of rule 'web-any'");
	q.uris = NAMES("spiffe://example.org/ns");
	assert_denied(rules_decide(r, &c, &q, &d), &d, "name_not_allowed",
	    "no path");
	q.nuris = 0;
	q.dns = NAMES("example.com");
	assert_denied(rules_decide(r, &c, &q, &d), &d, "name_not_allowed",
	    "'example.com'");
	q.ndns = 0;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "no_names", NULL);
	rules_free(r);
}

static void
test_decide_renewal(void **state)
{
	const char *id = "spiffe://example.org/ns/web/a";
	struct rules_caller c = { NULL, id };
	struct rules_request q;
	struct rules_decision d;
	struct rules *r;

	(void)state;
	r = load_ok(policy_main);
	memset(&q, 0, sizeof(q));
	q.profile = "svid";
	q.alg = RULES_ALG_EC_P256;
	q.renewal = 1;
	q.uris = NAMES("spiffe://example.org/ns/web/a");
	q.nuris = 1;
	/* renew = own (the default): its own identity, and only that. */
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	assert_string_equal(d.rule, "web-svid");
	q.uris = NAMES("spiffe://example.org/ns/web/b");
	assert_denied(rules_decide(r, &c, &q, &d), &d, "renewal_not_allowed",
	    "own identity 'spiffe://example.org/ns/web/a'");
	assert_non_null(strstr(d.message, "web-svid"));
	/* Not a renewal: the same name is fine. */
	q.renewal = 0;
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	/* A token caller has no identity to renew. */
	q.renewal = 1;
	c.token_requester = "web";
	q.uris = NAMES("spiffe://example.org/ns/web/a");
	assert_denied(rules_decide(r, &c, &q, &d), &d, "renewal_not_allowed",
	    "no mTLS identity");
	c.token_requester = NULL;
	/* renew = no. */
	q.profile = "peer";
	q.uris = NAMES("spiffe://example.org/ns/web/a");
	assert_denied(rules_decide(r, &c, &q, &d), &d, "renewal_not_allowed",
	    "rule 'web-server' does not allow renewal");
	/* renew = any: any name the rule allows. */
	q.profile = "server";
	q.uris = NAMES("spiffe://example.org/ns/web/b/c");
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	assert_string_equal(d.rule, "web-any");
	/* And still only names the rule allows. */
	q.uris = NAMES("spiffe://example.org/ns/db/b");
	assert_denied(rules_decide(r, &c, &q, &d), &d, "renewal_not_allowed",
	    "rule 'web-server'");
	rules_free(r);

	/* A DNS identity: its names must include it. */
	r = load_ok(
	    "[requester n]\nidentities = *.nodes.example.com\nrules = r\n"
	    "[rule r]\nkey = k\nprofiles = server\nkey_algorithms = ec-p256\n"
	    "dns_names = *.nodes.example.com, *.svc.example.com\n");
	c.identity = "N1.nodes.example.com";
	q.profile = "server";
	q.uris = NULL;
	q.nuris = 0;
	q.dns = NAMES("x.svc.example.com", "n1.nodes.example.com");
	q.ndns = 2;
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	q.dns = NAMES("x.svc.example.com", "n2.nodes.example.com");
	assert_denied(rules_decide(r, &c, &q, &d), &d, "renewal_not_allowed",
	    "'n1.nodes.example.com'");
	/* Not a renewal: any names the rule allows. */
	q.renewal = 0;
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	rules_free(r);
}

static void
test_decide_identity_vs_token(void **state)
{
	struct rules_caller c;
	struct rules_request q;
	struct rules_decision d;
	struct rules *r;

	(void)state;
	r = load_ok(policy_main);
	memset(&q, 0, sizeof(q));
	q.profile = "client";
	q.alg = RULES_ALG_EC_P256;
	q.uris = NAMES("spiffe://example.org/ops/alice");
	q.nuris = 1;
	c.token_requester = NULL;
	c.identity = "spiffe://example.org/ops/alice";
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	assert_string_equal(d.requester, "ops");
	assert_string_equal(d.key, "k-ops");
	/* {identity} is the caller's own, exactly. */
	q.uris = NAMES("spiffe://example.org/ops/bob");
	assert_denied(rules_decide(r, &c, &q, &d), &d, "name_not_allowed",
	    NULL);
	rules_free(r);

	/* A token caller never matches {identity}, identity or not. */
	r = load_ok(
	    "[requester a]\ntokens = yes\nidentities = spiffe://example.org/a\n"
	    "rules = r\n"
	    "[rule r]\nkey = k\nprofiles = svid\nkey_algorithms = ec-p256\n"
	    "spiffe_ids = {identity}\n");
	q.profile = "svid";
	q.uris = NAMES("spiffe://example.org/a");
	c.identity = "spiffe://example.org/a";
	assert_int_equal(rules_decide(r, &c, &q, &d), 0);
	c.token_requester = "a";
	assert_denied(rules_decide(r, &c, &q, &d), &d, "name_not_allowed",
	    NULL);
	c.identity = NULL;
	assert_denied(rules_decide(r, &c, &q, &d), &d, "name_not_allowed",
	    NULL);
	rules_free(r);
}

static void
test_is_admin(void **state)
{
	struct rules *r;

	(void)state;
	r = load_ok(policy_main);
	assert_true(rules_is_admin(r, "spiffe://example.org/ops/alice"));
	assert_false(rules_is_admin(r, "spiffe://example.org/ops/alice/x"));
	assert_false(rules_is_admin(r, "spiffe://example.org/ops"));
	assert_false(rules_is_admin(r, "a.web.example.com"));
	assert_false(rules_is_admin(r, "spiffe://example.org/other/x"));
	assert_false(rules_is_admin(r, NULL));
	assert_false(rules_is_admin(NULL, "spiffe://example.org/ops/alice"));
	/* shadow, an admin requester, matches after web. */
	assert_true(rules_is_admin(r, "spiffe://example.org/ns/web/a"));
	rules_free(r);
	r = load_ok("[requester a]\nidentities = spiffe://example.org/a\n"
	    "admin = no\n");
	assert_false(rules_is_admin(r, "spiffe://example.org/a"));
	rules_free(r);
}

static int
setup_dir(void **state)
{
	const char *base = getenv("TMPDIR");

	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "%s/test-rules.XXXXXX",
	    base != NULL && strlen(base) < 32 ? base : "/tmp");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	return 0;
}

/* Removes what a failed test left behind, then the directory. */
static int
teardown_dir(void **state)
{
	char path[128];
	int i;

	(void)state;
	for (i = 0; i < seq; i++) {
		snprintf(path, sizeof(path), "%s/policy-%d.ini", tmpdir, i);
		(void)unlink(path);
	}
	return rmdir(tmpdir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_alg_names),
		cmocka_unit_test(test_load_valid),
		cmocka_unit_test(test_load_empty),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_bad_patterns),
		cmocka_unit_test(test_load_limits),
		cmocka_unit_test(test_load_file_checks),
		cmocka_unit_test(test_match_spiffe),
		cmocka_unit_test(test_match_dns),
		cmocka_unit_test(test_match_identity),
		cmocka_unit_test(test_match_placeholder_values),
		cmocka_unit_test(test_match_hostile),
		cmocka_unit_test(test_decide_requester),
		cmocka_unit_test(test_decide_codes),
		cmocka_unit_test(test_decide_first_rule_wins),
		cmocka_unit_test(test_decide_subca),
		cmocka_unit_test(test_decide_renewal),
		cmocka_unit_test(test_decide_identity_vs_token),
		cmocka_unit_test(test_is_admin),
	};

	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
