/*
 * The policy file (rules.h): requesters, rules and the name patterns each
 * rule may certify.  Read with libinih through a reader of our own that
 * counts lines and reads section headers itself, so that every error names
 * file:line and nothing inih truncates (section names, long lines) goes
 * unseen.  Deny by default: a rule allows nothing it does not name.
 *
 * Matching is segment by segment: "*" never crosses '.' or '/', so a
 * pattern is matched against a name one label (or path segment) at a
 * time, each in at most O(pattern * name) steps, never exponentially.
 */
#include "config.h"

#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "rules.h"

#define RULES_MAX_REQUESTERS	256
#define RULES_MAX_RULES		256
#define RULES_MAX_LIST		64	/* entries of one list setting */
#define RULES_MAX_PATTERN	2048	/* bytes of one pattern */
#define RULES_MAX_URI		2048	/* bytes of a SPIFFE ID */
#define RULES_MAX_DNS		253
#define RULES_MAX_LABEL		63
#define RULES_MAX_DOMAIN	255	/* a trust domain */
#define RULES_MAX_NAME		64	/* requester, rule and key names */
#define RULES_MAX_LINE		8192	/* characters of one line */
#define RULES_MAX_FILE		(1024 * 1024)
#define RULES_MAX_DURATION	(3650L * 86400)
#define RULES_DEFAULT_MAX_TTL	86400L	/* when a rule names none */
#define RULES_DEFAULT_TTL	3600L	/* or max_ttl when that is shorter */

#define SPIFFE_SCHEME		"spiffe://"
#define SPIFFE_SCHEME_LEN	9
#define PH_REQUESTER		"{requester}"
#define PH_IDENTITY		"{identity}"

#define RULES_ALG_ALL	(RULES_ALG_EC_P256 | RULES_ALG_EC_P384 |	\
	RULES_ALG_RSA_2048 | RULES_ALG_RSA_3072 | RULES_ALG_RSA_4096 |	\
	RULES_ALG_ED25519)

enum rules_profile {
	PROFILE_SVID,
	PROFILE_SERVER,
	PROFILE_CLIENT,
	PROFILE_PEER,
	PROFILE_SUBCA,
	PROFILE_COUNT
};

static const char *const rules_profile_names[PROFILE_COUNT] = {
	[PROFILE_SVID] = "svid",
	[PROFILE_SERVER] = "server",
	[PROFILE_CLIENT] = "client",
	[PROFILE_PEER] = "peer",
	[PROFILE_SUBCA] = "subca",
};

static const struct {
	const char		*name;
	enum rules_key_alg	 bit;
} rules_algs[] = {
	{ "ec-p256", RULES_ALG_EC_P256 },
	{ "ec-p384", RULES_ALG_EC_P384 },
	{ "rsa-2048", RULES_ALG_RSA_2048 },
	{ "rsa-3072", RULES_ALG_RSA_3072 },
	{ "rsa-4096", RULES_ALG_RSA_4096 },
	{ "ed25519", RULES_ALG_ED25519 },
};

enum rules_renew {
	RENEW_OWN,	/* the default */
	RENEW_ANY,
	RENEW_NO
};

enum rules_section_kind {
	SECTION_NONE,
	SECTION_REQUESTER,
	SECTION_RULE
};

enum rules_setting {
	SET_TOKENS,
	SET_IDENTITIES,
	SET_ADMIN,
	SET_RULES,
	SET_KEY,
	SET_PROFILES,
	SET_SPIFFE_IDS,
	SET_DNS_NAMES,
	SET_KEY_ALGORITHMS,
	SET_MAX_TTL,
	SET_DEFAULT_TTL,
	SET_RENEW,
	SET_COUNT
};

static const struct {
	const char		*name;
	enum rules_section_kind	 section;
	int			 list;	/* may continue on indented lines */
} rules_settings[SET_COUNT] = {
	[SET_TOKENS] = { "tokens", SECTION_REQUESTER, 0 },
	[SET_IDENTITIES] = { "identities", SECTION_REQUESTER, 1 },
	[SET_ADMIN] = { "admin", SECTION_REQUESTER, 0 },
	[SET_RULES] = { "rules", SECTION_REQUESTER, 1 },
	[SET_KEY] = { "key", SECTION_RULE, 0 },
	[SET_PROFILES] = { "profiles", SECTION_RULE, 1 },
	[SET_SPIFFE_IDS] = { "spiffe_ids", SECTION_RULE, 1 },
	[SET_DNS_NAMES] = { "dns_names", SECTION_RULE, 1 },
	[SET_KEY_ALGORITHMS] = { "key_algorithms", SECTION_RULE, 1 },
	[SET_MAX_TTL] = { "max_ttl", SECTION_RULE, 0 },
	[SET_DEFAULT_TTL] = { "default_ttl", SECTION_RULE, 0 },
	[SET_RENEW] = { "renew", SECTION_RULE, 0 },
};

/* Where a pattern may stand; it decides its kind and its placeholders. */
enum rules_pattern_use {
	USE_IDENTITIES,		/* SPIFFE or DNS by prefix; no {identity} */
	USE_SPIFFE,
	USE_DNS
};

struct rules_pattern {
	char	*rp_text;		/* DNS patterns lower-cased */
	int	 rp_spiffe;
	int	 rp_placeholders;	/* holds {requester} or {identity} */
	char	*rp_domain;		/* trust domain; NULL: {identity}'s */
};

struct rules_patterns {
	struct rules_pattern	*rl_items;
	size_t			 rl_count;
};

struct rules_rule {
	char			*ru_name;
	int			 ru_line;
	char			*ru_key;
	unsigned int		 ru_profiles;	/* 1 << enum rules_profile */
	unsigned int		 ru_algs;
	struct rules_patterns	 ru_spiffe;
	struct rules_patterns	 ru_dns;
	long			 ru_max_ttl;
	long			 ru_default_ttl;
	enum rules_renew	 ru_renew;
};

struct rules_ref {
	char			*rf_name;
	int			 rf_line;	/* of its rules = line */
	struct rules_rule	*rf_rule;
};

struct rules_requester {
	char			*rq_name;
	int			 rq_line;
	int			 rq_tokens;
	int			 rq_admin;
	struct rules_patterns	 rq_identities;
	struct rules_ref	*rq_refs;
	size_t			 rq_nrefs;
};

struct rules {
	struct rules_requester	*r_requesters[RULES_MAX_REQUESTERS];
	size_t			 r_nrequesters;
	struct rules_rule	*r_rules[RULES_MAX_RULES];
	size_t			 r_nrules;
};

struct rules_parse {
	struct rules		*pp_rules;
	const char		*pp_path;
	FILE			*pp_file;
	char			*pp_buf;	/* the line as read */
	size_t			 pp_bufsize;
	int			 pp_line;
	int			 pp_failed;
	char			*pp_err;
	size_t			 pp_errlen;
	int			 pp_have_setting; /* inih's prev_name */
	int			 pp_continuation; /* this line continues one */
	enum rules_section_kind	 pp_kind;
	int			 pp_section_line;
	struct rules_requester	*pp_requester;
	struct rules_rule	*pp_rule;
	int			 pp_seen[SET_COUNT]; /* line of each setting */
};

/* What decide needs to expand placeholders. */
struct rules_ctx {
	const char	*cx_requester;
	const char	*cx_spiffe;	/* the caller's valid SPIFFE ID */
	const char	*cx_dns;	/* the caller's valid DNS name, lower case */
};

static void
rules_error(struct rules_parse *pp, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
rules_error(struct rules_parse *pp, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (pp->pp_failed)
		return;		/* the first error is the one to fix */
	pp->pp_failed = 1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (pp->pp_err != NULL && pp->pp_errlen > 0)
		snprintf(pp->pp_err, pp->pp_errlen, "%s:%d: %s", pp->pp_path,
		    line, msg);
}

/*
 * A printable, shortened copy of s for a message: names come from
 * requests and may hold anything.
 */
static const char *
rules_quote(char *buf, size_t len, const char *s)
{
	size_t i, n = 0, max = len > 4 ? len - 4 : 0;

	if (len == 0)
		return "";
	if (s == NULL)
		s = "(null)";
	for (i = 0; s[i] != '\0' && n < max; i++)
		buf[n++] = isprint((unsigned char)s[i]) ? s[i] : '?';
	if (s[i] != '\0' && len >= 4) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

/* Requester and rule names: [a-z0-9][a-z0-9._-]{0,63}. */
static int
rules_name_ok(const char *s)
{
	size_t i, len = strlen(s);

	if (len == 0 || len > RULES_MAX_NAME)
		return 0;
	if (!islower((unsigned char)s[0]) && !isdigit((unsigned char)s[0]))
		return 0;
	for (i = 1; i < len; i++)
		if (!(s[i] >= 'a' && s[i] <= 'z') &&
		    !(s[i] >= '0' && s[i] <= '9') &&
		    s[i] != '.' && s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

/* Signer key names, as the signer takes them. */
static int
rules_key_name_ok(const char *s)
{
	size_t i, len = strlen(s);

	if (len == 0 || len > RULES_MAX_NAME)
		return 0;
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' &&
		    s[i] != '_' && s[i] != '.')
			return 0;
	return 1;
}

static int
rules_dns_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

static int
rules_domain_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	    c == '.' || c == '-' || c == '_';
}

static int
rules_path_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

/*
 * Checks a DNS name and writes its lower-case form to lower (at least
 * RULES_MAX_DNS + 1 bytes).  Returns NULL when valid, else why not.
 */
static const char *
rules_dns_name_check(const char *name, char *lower, size_t lowerlen)
{
	size_t i, len, label = 0;
	int c;

	if (name == NULL || *name == '\0')
		return "it is empty";
	len = strnlen(name, RULES_MAX_DNS + 1);
	if (len > RULES_MAX_DNS)
		return "it is longer than 253 characters";
	if (lowerlen < len + 1)
		return "it is too long";
	if (name[0] == '.' || name[len - 1] == '.')
		return "it begins or ends with '.'";
	for (i = 0; i < len; i++) {
		c = tolower((unsigned char)name[i]);
		if (c == '.') {
			if (label == 0)
				return "it has an empty label";
			label = 0;
		} else if (rules_dns_char(c)) {
			if (++label > RULES_MAX_LABEL)
				return "it has a label longer than 63 "
				    "characters";
		} else
			return "it has a character other than a-z, 0-9, "
			    "'-' and '.'";
		lower[i] = (char)c;
	}
	lower[len] = '\0';
	return NULL;
}

/*
 * Checks the path of a SPIFFE ID ("/seg/seg", or "" for none).  Returns
 * NULL when valid, else why not.
 */
static const char *
rules_spiffe_path_check(const char *p)
{
	size_t n;

	while (*p != '\0') {
		if (*p != '/')
			return "its path has a character other than "
			    "A-Z, a-z, 0-9, '.', '-' and '_'";
		p++;
		n = strcspn(p, "/?#");
		if (n == 0 && (*p == '\0' || *p == '/'))
			return "it has an empty path segment";
		if ((n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.'))
			return "it has a '.' or '..' path segment";
		for (; *p != '\0' && *p != '/'; p++) {
			if (*p == '?')
				return "it has a query";
			if (*p == '#')
				return "it has a fragment";
			if (!rules_path_char((unsigned char)*p))
				return "its path has a character other than "
				    "A-Z, a-z, 0-9, '.', '-' and '_'";
		}
	}
	return NULL;
}

/*
 * Checks a SPIFFE ID (the SPIFFE ID standard, section 2).  need_path: an
 * SVID's, which names a workload and not a whole trust domain.  On success
 * *pathp points at its path ("" for none).  Returns NULL when valid, else
 * why not.
 */
static const char *
rules_spiffe_id_check(const char *id, int need_path, const char **pathp)
{
	const char *p;
	size_t n;

	if (id == NULL || *id == '\0')
		return "it is empty";
	if (strnlen(id, RULES_MAX_URI + 1) > RULES_MAX_URI)
		return "it is longer than 2048 characters";
	if (strncmp(id, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) != 0)
		return "it does not begin with spiffe://";
	p = id + SPIFFE_SCHEME_LEN;
	for (n = 0; p[n] != '\0' && p[n] != '/'; n++) {
		if (p[n] >= 'A' && p[n] <= 'Z')
			return "its trust domain is not lower case";
		if (p[n] == '@')
			return "it has user information";
		if (p[n] == ':')
			return "it has a port";
		if (p[n] == '?')
			return "it has a query";
		if (p[n] == '#')
			return "it has a fragment";
		if (!rules_domain_char((unsigned char)p[n]))
			return "its trust domain has a character other than "
			    "a-z, 0-9, '.', '-' and '_'";
	}
	if (n == 0)
		return "it has no trust domain";
	if (n > RULES_MAX_DOMAIN)
		return "its trust domain is longer than 255 characters";
	p += n;
	if (*p == '\0' && need_path)
		return "it has no path (an SVID names a workload)";
	if (pathp != NULL)
		*pathp = p;
	return rules_spiffe_path_check(p);
}

/*
 * Patterns.  A placeholder is checked as if it were one ordinary
 * character; its value is checked when it is expanded.
 */
static size_t
rules_placeholder(const char *p)
{
	if (strncmp(p, PH_REQUESTER, sizeof(PH_REQUESTER) - 1) == 0)
		return sizeof(PH_REQUESTER) - 1;
	if (strncmp(p, PH_IDENTITY, sizeof(PH_IDENTITY) - 1) == 0)
		return sizeof(PH_IDENTITY) - 1;
	return 0;
}

static const char *
rules_dns_pattern_check(const char *text, int allow_identity)
{
	const char *p = text;
	size_t label = 0, total = 0, ph;

	if (strncmp(text, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) == 0)
		return "a spiffe:// pattern is not a DNS name pattern";
	if (*p == '.')
		return "it begins with '.'";
	while (*p != '\0') {
		if (*p == '{') {
			if ((ph = rules_placeholder(p)) == 0)
				return "'{' begins no placeholder "
				    "({requester} or {identity})";
			if (!allow_identity && strncmp(p, PH_IDENTITY,
			    sizeof(PH_IDENTITY) - 1) == 0)
				return "{identity} cannot name who the caller "
				    "is";
			p += ph;
			label++;
			total++;
			continue;
		}
		if (*p == '}')
			return "'}' ends no placeholder";
		if (*p == '.') {
			if (label == 0)
				return "it has an empty label";
			if (p[1] == '\0')
				return "it ends with '.'";
			label = 0;
		} else if (*p == '*') {
			if (p[1] == '*')
				return "'**' is only allowed as the last "
				    "segment of a spiffe:// pattern";
			label++;
		} else if (rules_dns_char((unsigned char)*p))
			label++;
		else
			return "a DNS name pattern has only a-z, 0-9, '-', "
			    "'.', '*' and placeholders";
		if (label > RULES_MAX_LABEL)
			return "it has a label longer than 63 characters";
		total++;
		p++;
	}
	if (total > RULES_MAX_DNS)
		return "it is longer than a DNS name can be (253 characters)";
	return NULL;
}

static const char *
rules_spiffe_pattern_check(const char *text, int allow_identity,
    char **domain)
{
	const char *p, *seg;
	size_t n, ph;
	int literal;

	*domain = NULL;
	if (strncmp(text, PH_IDENTITY, sizeof(PH_IDENTITY) - 1) == 0) {
		/* The caller's own SPIFFE ID, and what lies below it. */
		if (!allow_identity)
			return "{identity} cannot name who the caller is";
		p = text + sizeof(PH_IDENTITY) - 1;
		if (*p != '\0' && *p != '/')
			return "{identity} must end the pattern or be "
			    "followed by '/'";
	} else {
		if (strncmp(text, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) != 0)
			return "it does not begin with spiffe:// and a trust "
			    "domain";
		p = text + SPIFFE_SCHEME_LEN;
		for (n = 0; p[n] != '\0' && p[n] != '/'; n++) {
			if (p[n] == '*')
				return "a wildcard is not allowed in the trust "
				    "domain";
			if (p[n] == '{' || p[n] == '}')
				return "a placeholder is not allowed in the "
				    "trust domain";
			if (p[n] >= 'A' && p[n] <= 'Z')
				return "the trust domain must be lower case";
			if (!rules_domain_char((unsigned char)p[n]))
				return "the trust domain has a character "
				    "other than a-z, 0-9, '.', '-' and '_'";
		}
		if (n == 0)
			return "it has no trust domain";
		if (n > RULES_MAX_DOMAIN)
			return "the trust domain is longer than 255 "
			    "characters";
		if ((*domain = strndup(p, n)) == NULL)
			return "out of memory";
		p += n;
	}
	while (*p != '\0') {
		p++;		/* the '/' */
		seg = p;
		literal = 1;
		while (*p != '\0' && *p != '/') {
			if (*p == '{') {
				if ((ph = rules_placeholder(p)) == 0)
					return "'{' begins no placeholder "
					    "({requester} or {identity})";
				if (strncmp(p, PH_IDENTITY,
				    sizeof(PH_IDENTITY) - 1) == 0)
					return "{identity} may only begin a "
					    "spiffe_ids pattern";
				p += ph;
				literal = 0;
				continue;
			}
			if (*p == '}')
				return "'}' ends no placeholder";
			if (*p == '*')
				literal = 0;
			else if (*p == '?')
				return "a query is not allowed";
			else if (*p == '#')
				return "a fragment is not allowed";
			else if (!rules_path_char((unsigned char)*p))
				return "a path has only A-Z, a-z, 0-9, '.', "
				    "'-', '_', '*', '**' and placeholders";
			p++;
		}
		n = (size_t)(p - seg);
		if (n == 0)
			return "it has an empty path segment";
		if (literal && ((n == 1 && seg[0] == '.') ||
		    (n == 2 && seg[0] == '.' && seg[1] == '.')))
			return "it has a '.' or '..' path segment";
		if (memmem(seg, n, "**", 2) != NULL &&
		    (n != 2 || *p != '\0'))
			return "'**' is only allowed as the whole last path "
			    "segment";
	}
	return NULL;
}

/* Parses one pattern into rp; returns NULL or why it is refused. */
static const char *
rules_pattern_parse(const char *text, enum rules_pattern_use use,
    struct rules_pattern *rp)
{
	const char *why;
	size_t i;

	memset(rp, 0, sizeof(*rp));
	if (strlen(text) > RULES_MAX_PATTERN)
		return "it is longer than 2048 bytes";
	if ((rp->rp_text = strdup(text)) == NULL)
		return "out of memory";
	if (use == USE_SPIFFE || (use == USE_IDENTITIES &&
	    strncmp(text, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) == 0)) {
		rp->rp_spiffe = 1;
		why = rules_spiffe_pattern_check(text, use != USE_IDENTITIES,
		    &rp->rp_domain);
	} else {
		/* DNS names compare without case. */
		for (i = 0; rp->rp_text[i] != '\0'; i++)
			rp->rp_text[i] = (char)tolower(
			    (unsigned char)rp->rp_text[i]);
		why = rules_dns_pattern_check(rp->rp_text,
		    use != USE_IDENTITIES);
	}
	if (why != NULL) {
		free(rp->rp_text);
		free(rp->rp_domain);
		memset(rp, 0, sizeof(*rp));
		return why;
	}
	rp->rp_placeholders = strchr(text, '{') != NULL;
	return NULL;
}

/*
 * Matching.  "*" is one or more characters of one unit: the classic
 * two-pointer glob, backtracking only to the last star, so at most
 * plen * slen steps.
 */
static int
rules_glob_unit(const char *p, size_t plen, const char *s, size_t slen)
{
	size_t pi = 0, si = 0, star_pi = SIZE_MAX, star_si = 0;

	while (si < slen) {
		if (pi < plen && p[pi] == '*') {
			/* The character it must take, then any more. */
			pi++;
			si++;
			star_pi = pi;
			star_si = si;
		} else if (pi < plen && p[pi] == s[si]) {
			pi++;
			si++;
		} else if (star_pi != SIZE_MAX) {
			si = ++star_si;
			pi = star_pi;
		} else
			return 0;
	}
	return pi == plen;
}

/*
 * Matches unit sequences (labels or path segments, both non-empty and
 * without empty units).  globstar: a last pattern unit "**" takes one or
 * more units.
 */
static int
rules_match_units(const char *p, const char *s, int sep, int globstar)
{
	const char seps[2] = { (char)sep, '\0' };
	size_t plen, slen;

	for (;;) {
		plen = strcspn(p, seps);
		slen = strcspn(s, seps);
		if (globstar && plen == 2 && p[0] == '*' && p[1] == '*' &&
		    p[2] == '\0')
			return 1;	/* s still has a unit here */
		if (!rules_glob_unit(p, plen, s, slen))
			return 0;
		p += plen;
		s += slen;
		if (*p == '\0' || *s == '\0')
			return *p == '\0' && *s == '\0';
		p++;
		s++;
	}
}

static int
rules_match_spiffe(const char *p, const char *s)
{
	size_t plen, slen;

	if (strncmp(p, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) != 0 ||
	    strncmp(s, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) != 0)
		return 0;
	p += SPIFFE_SCHEME_LEN;
	s += SPIFFE_SCHEME_LEN;
	plen = strcspn(p, "/");
	slen = strcspn(s, "/");
	if (plen != slen || memcmp(p, s, plen) != 0)
		return 0;
	p += plen;
	s += slen;
	if (*p == '\0' || *s == '\0')
		return *p == '\0' && *s == '\0';
	return rules_match_units(p + 1, s + 1, '/', 1);
}

/* A {requester} value inside a SPIFFE path: whole valid segments. */
static int
rules_segments_ok(const char *v)
{
	char path[RULES_MAX_NAME + 2];

	if (snprintf(path, sizeof(path), "/%s", v) >= (int)sizeof(path))
		return 0;
	return rules_spiffe_path_check(path) == NULL;
}

/*
 * Writes the pattern with its placeholders replaced into out.  Returns -1
 * when a placeholder has no valid value here (it then matches nothing) or
 * the result is longer than any name could be.
 */
static int
rules_expand(const struct rules_pattern *rp, const struct rules_ctx *cx,
    char *out, size_t outlen)
{
	char lower[RULES_MAX_DNS + 1];
	const char *p = rp->rp_text, *v;
	size_t n = 0, vlen, ph;

	while (*p != '\0') {
		if (*p == '{' && (ph = rules_placeholder(p)) != 0) {
			if (p[1] == 'r') {
				v = cx->cx_requester;
				if (v == NULL)
					return -1;
				if (rp->rp_spiffe ? !rules_segments_ok(v) :
				    rules_dns_name_check(v, lower,
				    sizeof(lower)) != NULL ||
				    strcmp(v, lower) != 0)
					return -1;
			} else {
				v = rp->rp_spiffe ? cx->cx_spiffe : cx->cx_dns;
				if (v == NULL)
					return -1;
			}
			vlen = strlen(v);
			if (vlen >= outlen - n)
				return -1;
			memcpy(out + n, v, vlen);
			n += vlen;
			p += ph;
			continue;
		}
		if (n + 1 >= outlen)
			return -1;
		out[n++] = *p++;
	}
	out[n] = '\0';
	return 0;
}

/*
 * Whether name (valid, and lower case when DNS) matches the pattern.  A
 * match consumes at least a character of name per character of the
 * expanded pattern, so an expansion longer than a SPIFFE ID cannot match.
 */
static int
rules_pattern_match(const struct rules_pattern *rp, const char *name,
    const struct rules_ctx *cx)
{
	char buf[RULES_MAX_URI + 1];
	const char *p = rp->rp_text;

	if (rp->rp_placeholders) {
		if (rules_expand(rp, cx, buf, sizeof(buf)) != 0)
			return 0;
		p = buf;
	}
	if (rp->rp_spiffe)
		return rules_match_spiffe(p, name);
	return rules_match_units(p, name, '.', 0);
}

static int
rules_patterns_match(const struct rules_patterns *rl, int spiffe,
    const char *name, const struct rules_ctx *cx)
{
	size_t i;

	for (i = 0; i < rl->rl_count; i++)
		if (rl->rl_items[i].rp_spiffe == spiffe &&
		    rules_pattern_match(&rl->rl_items[i], name, cx))
			return 1;
	return 0;
}

/* Whether a valid caller identity is one of rq's identities. */
static int
rules_identity_match(const struct rules_requester *rq,
    const struct rules_ctx *caller)
{
	struct rules_ctx cx;

	/* {identity} cannot stand in identities; {requester} is rq. */
	memset(&cx, 0, sizeof(cx));
	cx.cx_requester = rq->rq_name;
	if (caller->cx_spiffe != NULL)
		return rules_patterns_match(&rq->rq_identities, 1,
		    caller->cx_spiffe, &cx);
	if (caller->cx_dns != NULL)
		return rules_patterns_match(&rq->rq_identities, 0,
		    caller->cx_dns, &cx);
	return 0;
}

/*
 * Durations, algorithms, profiles.
 */
long
rules_parse_duration(const char *s)
{
	long v = 0, mult;
	const char *p;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -1;
	for (p = s; isdigit((unsigned char)*p); p++) {
		v = v * 10 + (*p - '0');
		if (v > RULES_MAX_DURATION)
			return -1;	/* before it can overflow */
	}
	switch (*p) {
	case 's':
		mult = 1;
		break;
	case 'm':
		mult = 60;
		break;
	case 'h':
		mult = 3600;
		break;
	case 'd':
		mult = 86400;
		break;
	default:
		return -1;
	}
	if (p[1] != '\0' || v == 0 || v > RULES_MAX_DURATION / mult)
		return -1;
	return v * mult;
}

enum rules_key_alg
rules_alg_from_name(const char *name)
{
	size_t i;

	if (name == NULL)
		return 0;
	for (i = 0; i < sizeof(rules_algs) / sizeof(rules_algs[0]); i++)
		if (strcmp(name, rules_algs[i].name) == 0)
			return rules_algs[i].bit;
	return 0;
}

const char *
rules_alg_name(enum rules_key_alg alg)
{
	size_t i;

	for (i = 0; i < sizeof(rules_algs) / sizeof(rules_algs[0]); i++)
		if (alg == rules_algs[i].bit)
			return rules_algs[i].name;
	return "unknown";
}

static int
rules_profile_from_name(const char *name)
{
	int i;

	if (name == NULL)
		return -1;
	for (i = 0; i < PROFILE_COUNT; i++)
		if (strcmp(name, rules_profile_names[i]) == 0)
			return i;
	return -1;
}

/*
 * Loading.
 */
static void
rules_patterns_free(struct rules_patterns *rl)
{
	size_t i;

	for (i = 0; i < rl->rl_count; i++) {
		free(rl->rl_items[i].rp_text);
		free(rl->rl_items[i].rp_domain);
	}
	free(rl->rl_items);
	rl->rl_items = NULL;
	rl->rl_count = 0;
}

static void
rules_rule_free(struct rules_rule *ru)
{
	if (ru == NULL)
		return;
	free(ru->ru_name);
	free(ru->ru_key);
	rules_patterns_free(&ru->ru_spiffe);
	rules_patterns_free(&ru->ru_dns);
	free(ru);
}

static void
rules_requester_free(struct rules_requester *rq)
{
	size_t i;

	if (rq == NULL)
		return;
	free(rq->rq_name);
	rules_patterns_free(&rq->rq_identities);
	for (i = 0; i < rq->rq_nrefs; i++)
		free(rq->rq_refs[i].rf_name);
	free(rq->rq_refs);
	free(rq);
}

void
rules_free(struct rules *r)
{
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->r_nrequesters; i++)
		rules_requester_free(r->r_requesters[i]);
	for (i = 0; i < r->r_nrules; i++)
		rules_rule_free(r->r_rules[i]);
	free(r);
}

static struct rules_rule *
rules_find_rule(const struct rules *r, const char *name)
{
	size_t i;

	for (i = 0; i < r->r_nrules; i++)
		if (strcmp(r->r_rules[i]->ru_name, name) == 0)
			return r->r_rules[i];
	return NULL;
}

static struct rules_requester *
rules_find_requester(const struct rules *r, const char *name)
{
	size_t i;

	for (i = 0; i < r->r_nrequesters; i++)
		if (strcmp(r->r_requesters[i]->rq_name, name) == 0)
			return r->r_requesters[i];
	return NULL;
}

static const char *
rules_section_label(const struct rules_parse *pp, char *buf, size_t len)
{
	if (pp->pp_kind == SECTION_REQUESTER)
		snprintf(buf, len, "[requester %s]",
		    pp->pp_requester->rq_name);
	else if (pp->pp_kind == SECTION_RULE)
		snprintf(buf, len, "[rule %s]", pp->pp_rule->ru_name);
	else
		snprintf(buf, len, "(no section)");
	return buf;
}

/* The checks that need the whole section. */
static void
rules_section_end(struct rules_parse *pp)
{
	struct rules_rule *ru = pp->pp_rule;
	char q[32];
	int line;

	if (pp->pp_kind != SECTION_RULE || ru == NULL)
		return;
	if (ru->ru_key == NULL)
		rules_error(pp, ru->ru_line, "[rule %s] has no key = (the "
		    "signer key that signs)", ru->ru_name);
	else if (ru->ru_profiles == 0)
		rules_error(pp, ru->ru_line, "[rule %s] has no profiles =: "
		    "it would allow nothing", ru->ru_name);
	else if (ru->ru_algs == 0)
		rules_error(pp, ru->ru_line, "[rule %s] has no "
		    "key_algorithms =: it would allow nothing", ru->ru_name);
	if (pp->pp_failed)
		return;
	if (ru->ru_max_ttl == 0)
		ru->ru_max_ttl = RULES_DEFAULT_MAX_TTL;
	if (ru->ru_default_ttl == 0)
		ru->ru_default_ttl = ru->ru_max_ttl < RULES_DEFAULT_TTL ?
		    ru->ru_max_ttl : RULES_DEFAULT_TTL;
	else if (ru->ru_default_ttl > ru->ru_max_ttl) {
		line = pp->pp_seen[SET_DEFAULT_TTL];
		snprintf(q, sizeof(q), "%lds", ru->ru_max_ttl);
		rules_error(pp, line, "default_ttl (%lds) is above max_ttl "
		    "(%s%s)", ru->ru_default_ttl, q,
		    pp->pp_seen[SET_MAX_TTL] ? "" : " when not given");
	}
}

/* A "[kind NAME]" line; start points at the '['. */
static void
rules_section(struct rules_parse *pp, char *start)
{
	struct rules *r = pp->pp_rules;
	struct rules_requester *rq;
	struct rules_rule *ru;
	char *end, *kind, *name, *p, q[80];
	int line = pp->pp_line;

	if ((end = strchr(start, ']')) == NULL) {
		rules_error(pp, line, "a section header without ']'");
		return;
	}
	for (p = end + 1; isspace((unsigned char)*p); p++)
		;
	if (*p != '\0' && *p != ';' && *p != '#') {
		rules_error(pp, line, "text after the section header's ']'");
		return;
	}
	*end = '\0';
	rules_section_end(pp);
	if (pp->pp_failed)
		return;
	pp->pp_kind = SECTION_NONE;
	pp->pp_requester = NULL;
	pp->pp_rule = NULL;
	pp->pp_have_setting = 0;
	memset(pp->pp_seen, 0, sizeof(pp->pp_seen));

	for (kind = start + 1; isspace((unsigned char)*kind); kind++)
		;
	for (p = end; p > kind && isspace((unsigned char)p[-1]); p--)
		p[-1] = '\0';
	for (name = kind; *name != '\0' && !isspace((unsigned char)*name);
	    name++)
		;
	if (*name != '\0') {
		*name++ = '\0';
		while (isspace((unsigned char)*name))
			name++;
	}
	if (strcmp(kind, "requester") != 0 && strcmp(kind, "rule") != 0) {
		rules_error(pp, line, "unknown section kind '%s' ([requester "
		    "NAME] or [rule NAME])", rules_quote(q, sizeof(q), kind));
		return;
	}
	if (!rules_name_ok(name)) {
		rules_error(pp, line, "[%s]: bad name '%s' (1 to 64 of a-z, "
		    "0-9, '.', '_', '-', beginning with a letter or digit)",
		    kind, rules_quote(q, sizeof(q), name));
		return;
	}
	if (strcmp(kind, "requester") == 0) {
		if ((rq = rules_find_requester(r, name)) != NULL) {
			rules_error(pp, line, "requester '%s' defined twice "
			    "(first on line %d)", name, rq->rq_line);
			return;
		}
		if (r->r_nrequesters >= RULES_MAX_REQUESTERS) {
			rules_error(pp, line, "more than %d requesters",
			    RULES_MAX_REQUESTERS);
			return;
		}
		if ((rq = calloc(1, sizeof(*rq))) == NULL ||
		    (rq->rq_name = strdup(name)) == NULL) {
			free(rq);
			rules_error(pp, line, "out of memory");
			return;
		}
		rq->rq_line = line;
		r->r_requesters[r->r_nrequesters++] = rq;
		pp->pp_requester = rq;
		pp->pp_kind = SECTION_REQUESTER;
	} else {
		if ((ru = rules_find_rule(r, name)) != NULL) {
			rules_error(pp, line, "rule '%s' defined twice (first "
			    "on line %d)", name, ru->ru_line);
			return;
		}
		if (r->r_nrules >= RULES_MAX_RULES) {
			rules_error(pp, line, "more than %d rules",
			    RULES_MAX_RULES);
			return;
		}
		if ((ru = calloc(1, sizeof(*ru))) == NULL ||
		    (ru->ru_name = strdup(name)) == NULL) {
			free(ru);
			rules_error(pp, line, "out of memory");
			return;
		}
		ru->ru_line = line;
		ru->ru_renew = RENEW_OWN;
		r->r_rules[r->r_nrules++] = ru;
		pp->pp_rule = ru;
		pp->pp_kind = SECTION_RULE;
	}
	pp->pp_section_line = line;
}

/*
 * Sorts the line as inih will (ini.c, ini_parse_stream) so that the
 * handler knows a continuation line, and handles section headers here:
 * inih truncates their names and says nothing of empty sections.
 */
static void
rules_classify(struct rules_parse *pp, char *line)
{
	char *s = line, *end, *p;
	int was_space = 0;

	if (pp->pp_line == 1 && (unsigned char)s[0] == 0xef &&
	    (unsigned char)s[1] == 0xbb && (unsigned char)s[2] == 0xbf)
		s += 3;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	while (isspace((unsigned char)*s))
		s++;
	pp->pp_continuation = 0;
	if (*s == '\0' || *s == ';' || *s == '#')
		return;
	if (pp->pp_have_setting && s > line) {
		pp->pp_continuation = 1;
		return;
	}
	if (*s == '[') {
		rules_section(pp, s);
		return;
	}
	for (p = s; *p != '\0' && *p != '=' && *p != ':'; p++) {
		if (was_space && *p == ';')
			break;
		was_space = isspace((unsigned char)*p);
	}
	if (*p != '=' && *p != ':') {
		rules_error(pp, pp->pp_line, "not a setting (NAME = VALUE), "
		    "a section header or a comment");
		return;
	}
	pp->pp_have_setting = 1;
}

/* inih's reader: one whole line at a time, so that we know its number. */
static char *
rules_reader(char *buf, int size, void *stream)
{
	struct rules_parse *pp = stream;
	ssize_t n;

	if (pp->pp_failed)
		return NULL;	/* stop at the first error */
	errno = 0;
	if ((n = getline(&pp->pp_buf, &pp->pp_bufsize, pp->pp_file)) < 0) {
		if (ferror(pp->pp_file))
			rules_error(pp, pp->pp_line + 1, "cannot be read: %s",
			    strerror(errno ? errno : EIO));
		return NULL;
	}
	pp->pp_line++;
	if (memchr(pp->pp_buf, '\0', (size_t)n) != NULL) {
		rules_error(pp, pp->pp_line, "a NUL byte in the line");
		return NULL;
	}
	/* inih needs room for "\r\n" and the NUL after the text. */
	if (size < 4 || (size_t)n > (size_t)size - 1 ||
	    (size_t)n > RULES_MAX_LINE + 2) {
		rules_error(pp, pp->pp_line, "the line is longer than %d "
		    "characters", size < 4 || size - 3 > RULES_MAX_LINE ?
		    RULES_MAX_LINE : size - 3);
		return NULL;
	}
	memcpy(buf, pp->pp_buf, (size_t)n + 1);
	rules_classify(pp, pp->pp_buf);
	return pp->pp_failed ? NULL : buf;
}

/* Splits a list at spaces and commas; calls fn for each entry. */
static void
rules_words(struct rules_parse *pp, const char *value, const char *name,
    void (*fn)(struct rules_parse *, const char *, const char *, void *),
    void *arg)
{
	char *copy, *p, *w;
	int was_space = 1;

	if ((copy = strdup(value)) == NULL) {
		rules_error(pp, pp->pp_line, "out of memory");
		return;
	}
	/* inih leaves inline comments on continuation lines. */
	for (p = copy; *p != '\0'; p++) {
		if (was_space && *p == ';') {
			*p = '\0';
			break;
		}
		was_space = isspace((unsigned char)*p);
	}
	p = copy;
	while (!pp->pp_failed) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		if (*p == '\0')
			break;
		w = p;
		while (*p != '\0' && *p != ',' && !isspace((unsigned char)*p))
			p++;
		if (*p != '\0')
			*p++ = '\0';
		fn(pp, w, name, arg);
	}
	free(copy);
}

static void
rules_add_pattern(struct rules_parse *pp, const char *word, const char *name,
    void *arg)
{
	struct rules_patterns *rl = arg;
	struct rules_pattern rp, *items;
	enum rules_pattern_use use;
	const char *why;
	char q[80];

	if (rl->rl_count >= RULES_MAX_LIST) {
		rules_error(pp, pp->pp_line, "%s: more than %d entries", name,
		    RULES_MAX_LIST);
		return;
	}
	if (strcmp(name, "spiffe_ids") == 0)
		use = USE_SPIFFE;
	else if (strcmp(name, "dns_names") == 0)
		use = USE_DNS;
	else
		use = USE_IDENTITIES;
	if ((why = rules_pattern_parse(word, use, &rp)) != NULL) {
		rules_error(pp, pp->pp_line, "%s: bad pattern '%s': %s", name,
		    rules_quote(q, sizeof(q), word), why);
		return;
	}
	if ((items = reallocarray(rl->rl_items, rl->rl_count + 1,
	    sizeof(*items))) == NULL) {
		free(rp.rp_text);
		free(rp.rp_domain);
		rules_error(pp, pp->pp_line, "out of memory");
		return;
	}
	rl->rl_items = items;
	rl->rl_items[rl->rl_count++] = rp;
}

static void
rules_add_ref(struct rules_parse *pp, const char *word, const char *name,
    void *arg)
{
	struct rules_requester *rq = arg;
	struct rules_ref *refs;
	char q[80];

	if (!rules_name_ok(word)) {
		rules_error(pp, pp->pp_line, "%s: bad rule name '%s'", name,
		    rules_quote(q, sizeof(q), word));
		return;
	}
	if (rq->rq_nrefs >= RULES_MAX_LIST) {
		rules_error(pp, pp->pp_line, "%s: more than %d entries", name,
		    RULES_MAX_LIST);
		return;
	}
	if ((refs = reallocarray(rq->rq_refs, rq->rq_nrefs + 1,
	    sizeof(*refs))) == NULL) {
		rules_error(pp, pp->pp_line, "out of memory");
		return;
	}
	rq->rq_refs = refs;
	memset(&refs[rq->rq_nrefs], 0, sizeof(*refs));
	if ((refs[rq->rq_nrefs].rf_name = strdup(word)) == NULL) {
		rules_error(pp, pp->pp_line, "out of memory");
		return;
	}
	refs[rq->rq_nrefs].rf_line = pp->pp_line;
	rq->rq_nrefs++;
}

static void
rules_add_profile(struct rules_parse *pp, const char *word, const char *name,
    void *arg)
{
	unsigned int *mask = arg;
	char q[80];
	int id;

	if ((id = rules_profile_from_name(word)) < 0) {
		rules_error(pp, pp->pp_line, "%s: unknown profile '%s' (svid, "
		    "server, client, peer, subca)", name,
		    rules_quote(q, sizeof(q), word));
		return;
	}
	*mask |= 1u << id;
}

static void
rules_add_alg(struct rules_parse *pp, const char *word, const char *name,
    void *arg)
{
	unsigned int *mask = arg;
	enum rules_key_alg alg;
	char q[80];

	if ((alg = rules_alg_from_name(word)) == 0) {
		rules_error(pp, pp->pp_line, "%s: unknown key algorithm '%s' "
		    "(ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, "
		    "ed25519)", name, rules_quote(q, sizeof(q), word));
		return;
	}
	*mask |= alg;
}

static void
rules_yes_no(struct rules_parse *pp, int *dst, const char *value,
    const char *name)
{
	char q[80];

	if (strcmp(value, "yes") == 0)
		*dst = 1;
	else if (strcmp(value, "no") == 0)
		*dst = 0;
	else
		rules_error(pp, pp->pp_line, "%s must be yes or no: '%s'",
		    name, rules_quote(q, sizeof(q), value));
}

static void
rules_duration(struct rules_parse *pp, long *dst, const char *value,
    const char *name)
{
	char q[80];

	if ((*dst = rules_parse_duration(value)) < 0) {
		*dst = 0;
		rules_error(pp, pp->pp_line, "%s must be a duration from 1s "
		    "to 3650d (digits and s, m, h or d): '%s'", name,
		    rules_quote(q, sizeof(q), value));
	}
}

static void
rules_setting(struct rules_parse *pp, enum rules_setting id,
    const char *value)
{
	struct rules_requester *rq = pp->pp_requester;
	struct rules_rule *ru = pp->pp_rule;
	const char *name = rules_settings[id].name;
	char q[80];

	switch (id) {
	case SET_TOKENS:
		rules_yes_no(pp, &rq->rq_tokens, value, name);
		break;
	case SET_ADMIN:
		rules_yes_no(pp, &rq->rq_admin, value, name);
		break;
	case SET_IDENTITIES:
		rules_words(pp, value, name, rules_add_pattern,
		    &rq->rq_identities);
		break;
	case SET_RULES:
		rules_words(pp, value, name, rules_add_ref, rq);
		break;
	case SET_KEY:
		if (!rules_key_name_ok(value)) {
			rules_error(pp, pp->pp_line, "key: bad signer key name "
			    "'%s' (1 to 64 of letters, digits, '-', '_' and "
			    "'.')", rules_quote(q, sizeof(q), value));
			break;
		}
		if ((ru->ru_key = strdup(value)) == NULL)
			rules_error(pp, pp->pp_line, "out of memory");
		break;
	case SET_PROFILES:
		rules_words(pp, value, name, rules_add_profile,
		    &ru->ru_profiles);
		break;
	case SET_SPIFFE_IDS:
		rules_words(pp, value, name, rules_add_pattern,
		    &ru->ru_spiffe);
		break;
	case SET_DNS_NAMES:
		rules_words(pp, value, name, rules_add_pattern, &ru->ru_dns);
		break;
	case SET_KEY_ALGORITHMS:
		rules_words(pp, value, name, rules_add_alg, &ru->ru_algs);
		break;
	case SET_MAX_TTL:
		rules_duration(pp, &ru->ru_max_ttl, value, name);
		break;
	case SET_DEFAULT_TTL:
		rules_duration(pp, &ru->ru_default_ttl, value, name);
		break;
	case SET_RENEW:
		if (strcmp(value, "own") == 0)
			ru->ru_renew = RENEW_OWN;
		else if (strcmp(value, "any") == 0)
			ru->ru_renew = RENEW_ANY;
		else if (strcmp(value, "no") == 0)
			ru->ru_renew = RENEW_NO;
		else
			rules_error(pp, pp->pp_line, "renew must be own, any "
			    "or no: '%s'", rules_quote(q, sizeof(q), value));
		break;
	case SET_COUNT:
		break;
	}
}

static int
rules_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct rules_parse *pp = user;
	char label[RULES_MAX_NAME + 16], q[80];
	int i, id = -1;

	(void)section;	/* ours, from rules_section: inih's is truncated */
	if (pp->pp_failed)
		return 1;
	if (pp->pp_kind == SECTION_NONE) {
		rules_error(pp, pp->pp_line, "'%s' is outside a section "
		    "([requester NAME] or [rule NAME])",
		    rules_quote(q, sizeof(q), name));
		return 1;
	}
	for (i = 0; i < SET_COUNT; i++)
		if (rules_settings[i].section == pp->pp_kind &&
		    strcmp(name, rules_settings[i].name) == 0)
			id = i;
	if (id < 0) {
		rules_error(pp, pp->pp_line, "unknown setting '%s' in %s",
		    rules_quote(q, sizeof(q), name),
		    rules_section_label(pp, label, sizeof(label)));
		return 1;
	}
	if (pp->pp_continuation) {
		if (!rules_settings[id].list) {
			rules_error(pp, pp->pp_line, "%s takes one value: an "
			    "indented line cannot continue it", name);
			return 1;
		}
	} else {
		if (pp->pp_seen[id] != 0) {
			rules_error(pp, pp->pp_line, "%s given twice in %s "
			    "(first on line %d)", name,
			    rules_section_label(pp, label, sizeof(label)),
			    pp->pp_seen[id]);
			return 1;
		}
		pp->pp_seen[id] = pp->pp_line;
		if (*value == '\0') {
			rules_error(pp, pp->pp_line, "%s is empty", name);
			return 1;
		}
	}
	rules_setting(pp, id, value);
	return 1;
}

/* Every rule a requester names must exist. */
static void
rules_resolve(struct rules_parse *pp)
{
	struct rules *r = pp->pp_rules;
	struct rules_requester *rq;
	size_t i, j;

	for (i = 0; i < r->r_nrequesters && !pp->pp_failed; i++) {
		rq = r->r_requesters[i];
		for (j = 0; j < rq->rq_nrefs; j++) {
			rq->rq_refs[j].rf_rule = rules_find_rule(r,
			    rq->rq_refs[j].rf_name);
			if (rq->rq_refs[j].rf_rule == NULL) {
				rules_error(pp, rq->rq_refs[j].rf_line,
				    "requester '%s' names rule '%s', which "
				    "does not exist", rq->rq_name,
				    rq->rq_refs[j].rf_name);
				break;
			}
		}
	}
}

int
rules_load(const char *path, struct rules **out, char *err, size_t errlen)
{
	struct rules_parse pp;
	struct stat st;
	FILE *fp = NULL;
	int fd, ret, saved_max_line;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	memset(&pp, 0, sizeof(pp));
	pp.pp_path = path;
	pp.pp_err = err;
	pp.pp_errlen = errlen;

#define LOAD_FAIL(...) do {						\
		if (err != NULL && errlen > 0)				\
			snprintf(err, errlen, __VA_ARGS__);		\
		pp.pp_failed = 1;					\
		goto out;						\
	} while (0)

	/* O_NONBLOCK: a FIFO must not hang us before fstat refuses it. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY |
	    O_NONBLOCK)) == -1)
		LOAD_FAIL("%s: cannot open: %s", path, strerror(errno));
	if (fstat(fd, &st) == -1) {
		close(fd);
		LOAD_FAIL("%s: cannot stat: %s", path, strerror(errno));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		LOAD_FAIL("%s: not a regular file", path);
	}
	/* Whoever may write the policy may give himself any certificate. */
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		close(fd);
		LOAD_FAIL("%s: writable by group or others (mode %04o): "
		    "chmod go-w it", path, (unsigned int)st.st_mode & 07777);
	}
	if (st.st_size > RULES_MAX_FILE) {
		close(fd);
		LOAD_FAIL("%s: larger than %d bytes", path, RULES_MAX_FILE);
	}
	if ((fp = fdopen(fd, "r")) == NULL) {
		close(fd);
		LOAD_FAIL("%s: %s", path, strerror(errno));
	}
	if ((pp.pp_rules = calloc(1, sizeof(*pp.pp_rules))) == NULL)
		LOAD_FAIL("%s: out of memory", path);
	pp.pp_file = fp;

	/*
	 * inih's default line buffer is 200 bytes; a pattern may have 2048.
	 * Debian's libinih takes the limit at run time.
	 */
	saved_max_line = ini_max_line;
	ini_max_line = RULES_MAX_LINE + 3;
	ret = ini_parse_stream(rules_reader, &pp, rules_handler, &pp);
	ini_max_line = saved_max_line;
	if (!pp.pp_failed && ret == -2)
		LOAD_FAIL("%s: out of memory", path);
	if (!pp.pp_failed && ret != 0)
		rules_error(&pp, ret > 0 ? ret : pp.pp_line, "not a setting "
		    "(NAME = VALUE), a section header or a comment");
	rules_section_end(&pp);
	rules_resolve(&pp);
#undef LOAD_FAIL
 out:
	if (fp != NULL)
		fclose(fp);
	free(pp.pp_buf);
	if (pp.pp_failed) {
		rules_free(pp.pp_rules);
		return -1;
	}
	*out = pp.pp_rules;
	return 0;
}

/*
 * Deciding.
 */
static void
rules_deny(struct rules_decision *d, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
rules_deny(struct rules_decision *d, const char *code, const char *fmt, ...)
{
	va_list ap;

	d->code = code;
	va_start(ap, fmt);
	vsnprintf(d->message, sizeof(d->message), fmt, ap);
	va_end(ap);
}

/* Whether the caller renews its own identity only (renew = own). */
static int
rules_own_names(const struct rules_ctx *cx, const struct rules_request *req)
{
	char lower[RULES_MAX_DNS + 1];
	size_t i;

	if (cx->cx_spiffe != NULL)
		return req->ndns == 0 && req->nuris == 1 &&
		    req->uris[0] != NULL &&
		    strcmp(req->uris[0], cx->cx_spiffe) == 0;
	if (cx->cx_dns != NULL)
		for (i = 0; i < req->ndns; i++)
			if (rules_dns_name_check(req->dns[i], lower,
			    sizeof(lower)) == NULL &&
			    strcmp(lower, cx->cx_dns) == 0)
				return 1;
	return 0;
}

/*
 * A subca's URI name constraint hands out a whole trust domain, so only
 * a pattern that already allows the whole domain (spiffe://TD followed
 * by the two-star segment) allows it; one for a part of it does not.
 */
static int
rules_domain_allowed(const struct rules_rule *ru, const char *domain,
    const struct rules_ctx *cx)
{
	const struct rules_pattern *rp;
	size_t i, n;

	for (i = 0; i < ru->ru_spiffe.rl_count; i++) {
		rp = &ru->ru_spiffe.rl_items[i];
		if (rp->rp_domain != NULL) {
			n = strlen(rp->rp_domain);
			if (strcmp(rp->rp_domain, domain) == 0 &&
			    strlen(rp->rp_text) == SPIFFE_SCHEME_LEN + n + 3 &&
			    strcmp(rp->rp_text + SPIFFE_SCHEME_LEN + n,
			    "/**") == 0)
				return 1;
		} else if (cx->cx_spiffe != NULL && strcmp(rp->rp_text,
		    "{identity}/**") == 0) {
			n = strcspn(cx->cx_spiffe + SPIFFE_SCHEME_LEN, "/");
			if (strlen(domain) == n && strncmp(domain,
			    cx->cx_spiffe + SPIFFE_SCHEME_LEN, n) == 0)
				return 1;
		}
	}
	return 0;
}

/* One rule that has the profile: 0 when it allows the request. */
static int
rules_rule_decide(const struct rules_rule *ru, const struct rules_ctx *cx,
    const struct rules_request *req, int profile, struct rules_decision *d)
{
	char lower[RULES_MAX_DNS + 1], q[72], q2[72];
	const char *why, *path, *pname = rules_profile_names[profile];
	size_t i;
	long ttl;

	d->rule = ru->ru_name;
	if (req->ndns + req->nuris == 0 ||
	    (req->ndns > 0 && req->dns == NULL) ||
	    (req->nuris > 0 && req->uris == NULL)) {
		rules_deny(d, "no_names", "profile %s needs at least one name "
		    "(rule '%s')", pname, ru->ru_name);
		return -1;
	}
	if (profile == PROFILE_SVID && (req->nuris != 1 || req->ndns != 0)) {
		rules_deny(d, "name_not_allowed", "profile svid takes exactly "
		    "one spiffe:// URI and no DNS name; the request has %zu "
		    "URIs and %zu DNS names (rule '%s')", req->nuris,
		    req->ndns, ru->ru_name);
		return -1;
	}
	if (req->renewal) {
		if (ru->ru_renew == RENEW_NO) {
			rules_deny(d, "renewal_not_allowed", "rule '%s' does "
			    "not allow renewal", ru->ru_name);
			return -1;
		}
		if (ru->ru_renew == RENEW_OWN && !rules_own_names(cx, req)) {
			if (cx->cx_spiffe == NULL && cx->cx_dns == NULL)
				rules_deny(d, "renewal_not_allowed", "rule "
				    "'%s' renews only the caller's own "
				    "identity, and the caller has no mTLS "
				    "identity", ru->ru_name);
			else
				rules_deny(d, "renewal_not_allowed", "rule "
				    "'%s' renews only the caller's own "
				    "identity '%s', which the request does "
				    "not name alone", ru->ru_name,
				    rules_quote(q, sizeof(q), cx->cx_spiffe ?
				    cx->cx_spiffe : cx->cx_dns));
			return -1;
		}
	}
	for (i = 0; i < req->ndns; i++) {
		if ((why = rules_dns_name_check(req->dns[i], lower,
		    sizeof(lower))) != NULL) {
			rules_deny(d, "name_not_allowed", "DNS name '%s' is "
			    "not valid: %s (rule '%s')", rules_quote(q,
			    sizeof(q), req->dns[i]), why, ru->ru_name);
			return -1;
		}
		if (!rules_patterns_match(&ru->ru_dns, 0, lower, cx)) {
			rules_deny(d, "name_not_allowed", "DNS name '%s' "
			    "matches no dns_names pattern of rule '%s'",
			    rules_quote(q, sizeof(q), lower), ru->ru_name);
			return -1;
		}
	}
	for (i = 0; i < req->nuris; i++) {
		if ((why = rules_spiffe_id_check(req->uris[i],
		    profile == PROFILE_SVID, &path)) != NULL) {
			rules_deny(d, "name_not_allowed", "URI '%s' is not a "
			    "valid SPIFFE ID: %s (rule '%s')", rules_quote(q,
			    sizeof(q), req->uris[i]), why, ru->ru_name);
			return -1;
		}
		if (profile == PROFILE_SUBCA) {
			/* A name constraint: a whole trust domain. */
			if (*path != '\0') {
				rules_deny(d, "name_not_allowed", "URI '%s': "
				    "a subca's URI constraint is a trust "
				    "domain (spiffe://DOMAIN, no path) (rule "
				    "'%s')", rules_quote(q, sizeof(q),
				    req->uris[i]), ru->ru_name);
				return -1;
			}
			if (!rules_domain_allowed(ru, req->uris[i] +
			    SPIFFE_SCHEME_LEN, cx)) {
				rules_deny(d, "name_not_allowed", "trust "
				    "domain '%s' is not wholly allowed by a "
				    "spiffe_ids pattern spiffe://DOMAIN/** "
				    "of rule '%s'", rules_quote(q, sizeof(q),
				    req->uris[i] + SPIFFE_SCHEME_LEN),
				    ru->ru_name);
				return -1;
			}
			continue;
		}
		if (!rules_patterns_match(&ru->ru_spiffe, 1, req->uris[i],
		    cx)) {
			rules_deny(d, "name_not_allowed", "URI '%s' matches "
			    "no spiffe_ids pattern of rule '%s'",
			    rules_quote(q, sizeof(q), req->uris[i]),
			    ru->ru_name);
			return -1;
		}
	}
	if ((ru->ru_algs & req->alg) == 0) {
		rules_deny(d, "key_not_allowed", "key algorithm %s is not "
		    "allowed by rule '%s'", rules_alg_name(req->alg),
		    ru->ru_name);
		return -1;
	}
	if (req->ttl < 0) {
		rules_deny(d, "ttl_too_long", "ttl %lds is not a lifetime "
		    "(rule '%s')", req->ttl, ru->ru_name);
		return -1;
	}
	ttl = req->ttl == 0 ? ru->ru_default_ttl : req->ttl;
	if (ttl > ru->ru_max_ttl) {
		snprintf(q2, sizeof(q2), "%lds", ru->ru_max_ttl);
		rules_deny(d, "ttl_too_long", "ttl %lds is above max_ttl %s "
		    "of rule '%s'", ttl, q2, ru->ru_name);
		return -1;
	}
	d->key = ru->ru_key;
	d->ttl = ttl;
	return 0;
}

/* Reads the caller's mTLS identity (SPIFFE ID, else DNS name). */
static void
rules_caller_identity(const char *identity, struct rules_ctx *cx,
    char *lower, size_t lowerlen)
{
	cx->cx_spiffe = NULL;
	cx->cx_dns = NULL;
	if (identity == NULL)
		return;
	if (strncmp(identity, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) == 0) {
		if (rules_spiffe_id_check(identity, 0, NULL) == NULL)
			cx->cx_spiffe = identity;
	} else if (rules_dns_name_check(identity, lower, lowerlen) == NULL)
		cx->cx_dns = lower;
}

int
rules_decide(const struct rules *r, const struct rules_caller *c,
    const struct rules_request *req, struct rules_decision *d)
{
	struct rules_decision first, try;
	struct rules_requester *rq = NULL;
	struct rules_ctx cx;
	char lower[RULES_MAX_DNS + 1], q[72];
	size_t i;
	int profile, have_profile = 0;

	memset(d, 0, sizeof(*d));
	memset(&cx, 0, sizeof(cx));
	if (r == NULL || c == NULL || req == NULL) {
		rules_deny(d, "unknown_requester", "no policy or no caller");
		return -1;
	}
	if (c->token_requester != NULL) {
		/* A token caller has no {identity}, even with a certificate. */
		rq = rules_find_requester(r, c->token_requester);
		if (rq == NULL || !rq->rq_tokens) {
			rules_deny(d, "unknown_requester", "no requester '%s' "
			    "takes bootstrap tokens", rules_quote(q, sizeof(q),
			    c->token_requester));
			return -1;
		}
	} else if (c->identity != NULL) {
		rules_caller_identity(c->identity, &cx, lower, sizeof(lower));
		for (i = 0; i < r->r_nrequesters && rq == NULL; i++)
			if (rules_identity_match(r->r_requesters[i], &cx))
				rq = r->r_requesters[i];
		if (rq == NULL) {
			rules_deny(d, "unknown_requester", "no requester has "
			    "the identity '%s'", rules_quote(q, sizeof(q),
			    c->identity));
			return -1;
		}
	} else {
		rules_deny(d, "unknown_requester", "the caller has neither a "
		    "bootstrap token nor an mTLS identity");
		return -1;
	}
	cx.cx_requester = rq->rq_name;
	d->requester = rq->rq_name;

	if ((profile = rules_profile_from_name(req->profile)) < 0) {
		rules_deny(d, "profile_not_allowed", "unknown profile '%s' "
		    "(svid, server, client, peer, subca)",
		    rules_quote(q, sizeof(q), req->profile));
		return -1;
	}
	if (req->alg == 0 || (req->alg & (req->alg - 1)) != 0 ||
	    (req->alg & ~RULES_ALG_ALL) != 0) {
		rules_deny(d, "key_not_allowed", "not one known key algorithm");
		return -1;
	}
	memset(&first, 0, sizeof(first));
	for (i = 0; i < rq->rq_nrefs; i++) {
		if ((rq->rq_refs[i].rf_rule->ru_profiles & (1u << profile)) ==
		    0)
			continue;
		memset(&try, 0, sizeof(try));
		try.requester = rq->rq_name;
		if (rules_rule_decide(rq->rq_refs[i].rf_rule, &cx, req,
		    profile, &try) == 0) {
			*d = try;
			return 0;
		}
		if (!have_profile)
			first = try;
		have_profile = 1;
	}
	if (!have_profile) {
		rules_deny(d, "profile_not_allowed", "no rule of requester "
		    "'%s' allows profile %s", rq->rq_name,
		    rules_profile_names[profile]);
		return -1;
	}
	*d = first;
	d->key = NULL;
	d->ttl = 0;
	return -1;
}

int
rules_is_admin(const struct rules *r, const char *identity)
{
	struct rules_ctx cx;
	char lower[RULES_MAX_DNS + 1];
	size_t i;

	if (r == NULL || identity == NULL)
		return 0;
	memset(&cx, 0, sizeof(cx));
	rules_caller_identity(identity, &cx, lower, sizeof(lower));
	for (i = 0; i < r->r_nrequesters; i++)
		if (r->r_requesters[i]->rq_admin &&
		    rules_identity_match(r->r_requesters[i], &cx))
			return 1;
	return 0;
}
