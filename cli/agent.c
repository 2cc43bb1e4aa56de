/*
 * hsmca agent: keeps certificates fresh without a person.  Each
 * [cert NAME] of the configuration is enrolled once with its bootstrap
 * token, then renewed over mTLS with itself when renew_fraction of its
 * lifetime has passed (less a random jitter), at once when it is
 * missing, broken, expired or listed in the CRL.  Files are replaced
 * atomically, the key first and the certificate last, and the old pair
 * stays in place whenever anything fails; failures back off
 * exponentially.  "--once" does what is due now and exits (cron), the
 * daemon keeps one timer per certificate.  The state (status.json) and
 * the Prometheus metrics (agent.prom) are written atomically to
 * state_dir after every cycle.
 */
#include "config.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <ini.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli.h"
#include "log.h"
#include "rules.h"
#include "token.h"

#define AGENT_MAX_CERTS		64
#define AGENT_MAX_NAMES		64	/* of each kind, as the server's limit */
#define AGENT_MAX_NAME		2048
#define AGENT_NAME_MAX		64	/* a [cert NAME] */
#define AGENT_TOKEN_MAX		512
#define AGENT_FILE_MAX		(256 * 1024)
#define AGENT_CHAIN_MAX		8
#define AGENT_ERR_MAX		512
#define AGENT_RELOAD_TIMEOUT	60	/* seconds a reload command may take */
#define AGENT_TICK_MS		1000	/* the daemon's longest sleep */
#define AGENT_STATUS_FILE	"status.json"
#define AGENT_METRICS_FILE	"agent.prom"
#define AGENT_LOCK_FILE		"agent.lock"

#define DEFAULT_RENEW_FRACTION	(2.0 / 3.0)
#define DEFAULT_JITTER		0.10
#define DEFAULT_BACKOFF_MIN	5
#define DEFAULT_BACKOFF_MAX	300
#define DEFAULT_CHECK_INTERVAL	300

/* What one certificate needs, from the files and the CRL. */
enum agent_need {
	NEED_NOTHING = 0,
	NEED_RENEW,		/* over mTLS with the current pair */
	NEED_ENROLL,		/* with the bootstrap token */
};

/* The run-time state of one certificate: kept across SIGHUP and, through
 * status.json, across runs. */
struct agent_state {
	char		 as_serial[64];
	time_t		 as_not_before;
	time_t		 as_not_after;
	time_t		 as_renew_at;		/* for as_serial, jitter applied */
	time_t		 as_next;		/* the daemon's next cycle */
	time_t		 as_last_success;
	time_t		 as_last_error_at;
	char		 as_last_error[AGENT_ERR_MAX];
	unsigned int	 as_failures;		/* in a row */
	char		 as_reload[AGENT_ERR_MAX];	/* "" when never run */
	int		 as_reload_ok;
	time_t		 as_reload_at;
	unsigned long	 as_renew_ok;
	unsigned long	 as_renew_err;
	unsigned long	 as_reload_fail;
};

struct agent_cert {
	char			*ac_name;
	int			 ac_line;
	char			*ac_profile;
	char			*ac_uris[AGENT_MAX_NAMES];
	size_t			 ac_nuris;
	char			*ac_dns[AGENT_MAX_NAMES];
	size_t			 ac_ndns;
	char			*ac_ttl;
	char			*ac_key_type;
	char			*ac_key;
	char			*ac_cert;
	char			*ac_chain;
	char			*ac_owner;
	char			*ac_group;
	uid_t			 ac_uid;
	gid_t			 ac_gid;
	int			 ac_key_mode;	/* -1 until given */
	int			 ac_cert_mode;
	char			*ac_token_file;
	char			*ac_reload_command;
	int			 ac_reload_signal;
	char			*ac_pid_file;
	int			 ac_reuse_key;	/* -1 until given */
	struct agent_state	 ac_st;
};

struct agent_config {
	char			*cf_path;
	char			*cf_server;
	char			*cf_ca_bundle;
	char			*cf_resolve;
	char			*cf_state_dir;
	double			 cf_renew_fraction;	/* < 0 until given */
	double			 cf_jitter;
	long			 cf_backoff_min;	/* 0 until given */
	long			 cf_backoff_max;
	long			 cf_check_interval;
	int			 cf_crl_check;		/* -1 until given */
	struct agent_cert	*cf_certs[AGENT_MAX_CERTS];
	size_t			 cf_ncerts;
	struct curl_slist	*cf_resolve_list;
};

struct agent_parse {
	const char		*ap_path;
	FILE			*ap_file;
	int			 ap_line;
	int			 ap_errors;
	char			 ap_section[128];
	struct agent_cert	*ap_cert;
	struct agent_config	*ap_conf;
};

/* The current key and certificate of one [cert], as read from disk. */
struct agent_ident {
	char		*ai_key_pem;
	size_t		 ai_key_len;
	char		*ai_cert_pem;
	size_t		 ai_cert_len;
	EVP_PKEY	*ai_key;
	X509		*ai_cert;
};

/* One file to replace: a temporary file beside it until it is renamed. */
struct agent_file {
	const char	*af_path;
	mode_t		 af_mode;
	char		*af_tmp;
	int		 af_fd;
	int		 af_renamed;
};

static const struct {
	const char	*name;
	int		 type;
	const char	*group;
	unsigned int	 bits;
} agent_key_types[] = {
	{ "ec-p256", EVP_PKEY_EC, "P-256", 0 },
	{ "ec-p384", EVP_PKEY_EC, "P-384", 0 },
	{ "rsa-2048", EVP_PKEY_RSA, NULL, 2048 },
	{ "rsa-3072", EVP_PKEY_RSA, NULL, 3072 },
	{ "ed25519", EVP_PKEY_ED25519, NULL, 0 },
};

static const struct {
	const char	*name;
	int		 sig;
} agent_signals[] = {
	{ "HUP", SIGHUP }, { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 },
	{ "TERM", SIGTERM }, { "INT", SIGINT }, { "QUIT", SIGQUIT },
	{ "WINCH", SIGWINCH },
};

static volatile sig_atomic_t agent_quit;
static volatile sig_atomic_t agent_hup;

static void agent_seterr(char *, size_t, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static void agent_config_error(struct agent_parse *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static void
agent_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* The last OpenSSL error, for a message; the queue is emptied. */
static const char *
agent_ssl_error(void)
{
	static char buf[256];
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(buf, sizeof(buf), "no detail");
	else
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

/* What a server or a file says is shown, never a terminal control byte. */
static void
agent_clean(const char *s, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; s != NULL && s[i] != '\0' && i + 1 < outlen; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	out[i] = '\0';
}

static const char *
agent_jstr(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static void
agent_time_str(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (t <= 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "-");
}

/* A uniformly random integer in [0, n]. */
static long
agent_random(long n)
{
	uint64_t r;

	if (n <= 0)
		return 0;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint64_t)time(NULL) ^ (uint64_t)getpid();
	return (long)(r % ((uint64_t)n + 1));
}

/* --- configuration ----------------------------------------------------- */

static void
agent_config_error(struct agent_parse *ap, const char *fmt, ...)
{
	va_list ap2;
	char msg[1024];

	va_start(ap2, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap2);
	va_end(ap2);
	log_warnx("%s:%d: %s", ap->ap_path, ap->ap_line, msg);
	ap->ap_errors++;
}

static void
agent_cert_free(struct agent_cert *c)
{
	size_t i;

	if (c == NULL)
		return;
	free(c->ac_name);
	free(c->ac_profile);
	for (i = 0; i < c->ac_nuris; i++)
		free(c->ac_uris[i]);
	for (i = 0; i < c->ac_ndns; i++)
		free(c->ac_dns[i]);
	free(c->ac_ttl);
	free(c->ac_key_type);
	free(c->ac_key);
	free(c->ac_cert);
	free(c->ac_chain);
	free(c->ac_owner);
	free(c->ac_group);
	free(c->ac_token_file);
	free(c->ac_reload_command);
	free(c->ac_pid_file);
	free(c);
}

static void
agent_config_free(struct agent_config *cf)
{
	size_t i;

	if (cf == NULL)
		return;
	for (i = 0; i < cf->cf_ncerts; i++)
		agent_cert_free(cf->cf_certs[i]);
	curl_slist_free_all(cf->cf_resolve_list);
	free(cf->cf_path);
	free(cf->cf_server);
	free(cf->cf_ca_bundle);
	free(cf->cf_resolve);
	free(cf->cf_state_dir);
	free(cf);
}

static char *
agent_config_reader(char *buf, int size, void *stream)
{
	struct agent_parse *ap = stream;
	char *s;

	if ((s = fgets(buf, size, ap->ap_file)) != NULL)
		ap->ap_line++;
	return s;
}

static int
agent_config_str(struct agent_parse *ap, char **dst, const char *value,
    const char *name)
{
	if (*dst != NULL) {
		agent_config_error(ap, "%s given twice", name);
		return -1;
	}
	if (*value == '\0') {
		agent_config_error(ap, "%s is empty", name);
		return -1;
	}
	if (strlen(value) > PATH_MAX) {
		agent_config_error(ap, "%s is longer than %d bytes", name,
		    PATH_MAX);
		return -1;
	}
	if ((*dst = strdup(value)) == NULL) {
		agent_config_error(ap, "out of memory");
		return -1;
	}
	return 0;
}

static int
agent_config_path(struct agent_parse *ap, char **dst, const char *value,
    const char *name)
{
	if (*value != '/') {
		agent_config_error(ap, "%s must be an absolute path: '%s'",
		    name, value);
		return -1;
	}
	return agent_config_str(ap, dst, value, name);
}

static int
agent_config_bool(struct agent_parse *ap, int *dst, const char *value,
    const char *name)
{
	if (*dst != -1) {
		agent_config_error(ap, "%s given twice", name);
		return -1;
	}
	if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0)
		*dst = 1;
	else if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0)
		*dst = 0;
	else {
		agent_config_error(ap, "%s must be yes or no: '%s'", name,
		    value);
		return -1;
	}
	return 0;
}

static int
agent_config_duration(struct agent_parse *ap, long *dst, const char *value,
    const char *name)
{
	if (*dst != 0) {
		agent_config_error(ap, "%s given twice", name);
		return -1;
	}
	if ((*dst = rules_parse_duration(value)) <= 0) {
		*dst = 0;
		agent_config_error(ap, "%s must be a duration (digits and s, "
		    "m, h or d): '%s'", name, value);
		return -1;
	}
	return 0;
}

/* A fraction in (0, 1): "2/3", "0.66" or "66%". */
static int
agent_config_fraction(struct agent_parse *ap, double *dst, const char *value,
    const char *name, int zero_ok)
{
	char *end;
	double v, d;

	if (*dst >= 0) {
		agent_config_error(ap, "%s given twice", name);
		return -1;
	}
	errno = 0;
	v = strtod(value, &end);
	if (end != value && errno == 0 && *end == '/') {
		d = strtod(end + 1, &end);
		v = d > 0 && errno == 0 ? v / d : -1;
	} else if (end != value && *end == '%') {
		v /= 100;
		end++;
	}
	if (end == value || *end != '\0' || errno != 0 || !(v >= 0) ||
	    v >= 1 || (v == 0 && !zero_ok) || value[0] == '-' ||
	    value[0] == '+' || value[0] == ' ') {
		agent_config_error(ap, "%s must be a fraction %s 0 and below 1 "
		    "(e.g. 2/3, 0.5 or 10%%): '%s'", name,
		    zero_ok ? "from" : "above", value);
		return -1;
	}
	*dst = v;
	return 0;
}

static int
agent_config_mode(struct agent_parse *ap, int *dst, const char *value,
    const char *name)
{
	char *end;
	long v;

	if (*dst != -1) {
		agent_config_error(ap, "%s given twice", name);
		return -1;
	}
	errno = 0;
	v = strtol(value, &end, 8);
	if (*value < '0' || *value > '7' || *end != '\0' || errno != 0 ||
	    v < 0 || v > 0777 || (v & 0400) == 0) {
		agent_config_error(ap, "%s must be an octal mode the owner can "
		    "read, at most 0777: '%s'", name, value);
		return -1;
	}
	if (strcmp(name, "key_mode") == 0 && (v & 0007) != 0) {
		agent_config_error(ap, "key_mode %s gives other users access to "
		    "the private key", value);
		return -1;
	}
	*dst = (int)v;
	return 0;
}

/* Printable ASCII without spaces, bounded. */
static int
agent_name_ok(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > AGENT_MAX_NAME)
		return 0;
	for (i = 0; i < n; i++)
		if (s[i] <= 0x20 || s[i] >= 0x7f)
			return 0;
	return 1;
}

/* dns = a.example.com, b.example.com (and repeatable). */
static void
agent_config_names(struct agent_parse *ap, struct agent_cert *c,
    const char *value, int uri)
{
	char buf[AGENT_MAX_NAME + 1];
	const char *p = value, *e;
	size_t n;

	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		for (e = p; *e != '\0' && *e != ',' && *e != ' ' && *e != '\t';
		    e++)
			;
		n = (size_t)(e - p);
		if (n > AGENT_MAX_NAME) {
			agent_config_error(ap, "a name longer than %d bytes",
			    AGENT_MAX_NAME);
			return;
		}
		memcpy(buf, p, n);
		buf[n] = '\0';
		p = e;
		if (!agent_name_ok(buf) || (uri &&
		    strncmp(buf, "spiffe://", 9) != 0)) {
			agent_config_error(ap, "%s: %s is needed: '%s'",
			    uri ? "spiffe_id" : "dns", uri ? "a spiffe:// URI" :
			    "a DNS name of printable ASCII", buf);
			continue;
		}
		if ((uri ? c->ac_nuris : c->ac_ndns) >= AGENT_MAX_NAMES) {
			agent_config_error(ap, "more than %d names of a kind",
			    AGENT_MAX_NAMES);
			return;
		}
		if (uri) {
			if ((c->ac_uris[c->ac_nuris] = strdup(buf)) == NULL)
				agent_config_error(ap, "out of memory");
			else
				c->ac_nuris++;
		} else {
			if ((c->ac_dns[c->ac_ndns] = strdup(buf)) == NULL)
				agent_config_error(ap, "out of memory");
			else
				c->ac_ndns++;
		}
	}
}

static void
agent_config_agent(struct agent_parse *ap, const char *name,
    const char *value)
{
	struct agent_config *cf = ap->ap_conf;
	size_t n;

	if (strcmp(name, "server") == 0) {
		n = strlen(value);
		if (strncmp(value, "https://", 8) != 0 || n <= 8 ||
		    n > 2048 || strpbrk(value, "?# \t\r\n") != NULL) {
			agent_config_error(ap, "server must be an https:// URL "
			    "without a query: '%s'", value);
			return;
		}
		if (agent_config_str(ap, &cf->cf_server, value, name) == 0)
			while (n > 8 && cf->cf_server[n - 1] == '/')
				cf->cf_server[--n] = '\0';
	} else if (strcmp(name, "ca_bundle") == 0)
		(void)agent_config_path(ap, &cf->cf_ca_bundle, value, name);
	else if (strcmp(name, "resolve") == 0) {
		if (strlen(value) > 512 || strchr(value, ':') == NULL) {
			agent_config_error(ap, "resolve must be HOST:PORT:ADDR: "
			    "'%s'", value);
			return;
		}
		(void)agent_config_str(ap, &cf->cf_resolve, value, name);
	} else if (strcmp(name, "state_dir") == 0)
		(void)agent_config_path(ap, &cf->cf_state_dir, value, name);
	else if (strcmp(name, "renew_fraction") == 0)
		(void)agent_config_fraction(ap, &cf->cf_renew_fraction, value,
		    name, 0);
	else if (strcmp(name, "jitter") == 0)
		(void)agent_config_fraction(ap, &cf->cf_jitter, value, name, 1);
	else if (strcmp(name, "backoff_min") == 0)
		(void)agent_config_duration(ap, &cf->cf_backoff_min, value,
		    name);
	else if (strcmp(name, "backoff_max") == 0)
		(void)agent_config_duration(ap, &cf->cf_backoff_max, value,
		    name);
	else if (strcmp(name, "check_interval") == 0)
		(void)agent_config_duration(ap, &cf->cf_check_interval, value,
		    name);
	else if (strcmp(name, "crl_check") == 0)
		(void)agent_config_bool(ap, &cf->cf_crl_check, value, name);
	else
		agent_config_error(ap, "unknown setting %s in [agent]", name);
}

static void
agent_config_cert(struct agent_parse *ap, struct agent_cert *c,
    const char *name, const char *value)
{
	size_t i;

	if (strcmp(name, "profile") == 0) {
		if (strcmp(value, "svid") != 0 && strcmp(value, "server") != 0 &&
		    strcmp(value, "client") != 0 && strcmp(value, "peer") != 0) {
			agent_config_error(ap, "profile must be svid, server, "
			    "client or peer: '%s'", value);
			return;
		}
		(void)agent_config_str(ap, &c->ac_profile, value, name);
	} else if (strcmp(name, "spiffe_id") == 0)
		agent_config_names(ap, c, value, 1);
	else if (strcmp(name, "dns") == 0)
		agent_config_names(ap, c, value, 0);
	else if (strcmp(name, "ttl") == 0) {
		if (rules_parse_duration(value) <= 0) {
			agent_config_error(ap, "ttl must be a duration (digits "
			    "and s, m, h or d): '%s'", value);
			return;
		}
		(void)agent_config_str(ap, &c->ac_ttl, value, name);
	} else if (strcmp(name, "key_type") == 0) {
		for (i = 0; i < sizeof(agent_key_types) /
		    sizeof(agent_key_types[0]); i++)
			if (strcmp(value, agent_key_types[i].name) == 0)
				break;
		if (i == sizeof(agent_key_types) / sizeof(agent_key_types[0])) {
			agent_config_error(ap, "key_type must be one of ec-p256, "
			    "ec-p384, rsa-2048, rsa-3072, ed25519: '%s'", value);
			return;
		}
		(void)agent_config_str(ap, &c->ac_key_type, value, name);
	} else if (strcmp(name, "key") == 0)
		(void)agent_config_path(ap, &c->ac_key, value, name);
	else if (strcmp(name, "cert") == 0)
		(void)agent_config_path(ap, &c->ac_cert, value, name);
	else if (strcmp(name, "chain") == 0)
		(void)agent_config_path(ap, &c->ac_chain, value, name);
	else if (strcmp(name, "owner") == 0) {
		struct passwd *pw;

		if (agent_config_str(ap, &c->ac_owner, value, name) != 0)
			return;
		if ((pw = getpwnam(value)) == NULL)
			agent_config_error(ap, "owner %s: no such user", value);
		else
			c->ac_uid = pw->pw_uid;
	} else if (strcmp(name, "group") == 0) {
		struct group *gr;

		if (agent_config_str(ap, &c->ac_group, value, name) != 0)
			return;
		if ((gr = getgrnam(value)) == NULL)
			agent_config_error(ap, "group %s: no such group", value);
		else
			c->ac_gid = gr->gr_gid;
	} else if (strcmp(name, "key_mode") == 0)
		(void)agent_config_mode(ap, &c->ac_key_mode, value, name);
	else if (strcmp(name, "cert_mode") == 0)
		(void)agent_config_mode(ap, &c->ac_cert_mode, value, name);
	else if (strcmp(name, "token_file") == 0)
		(void)agent_config_path(ap, &c->ac_token_file, value, name);
	else if (strcmp(name, "reload_command") == 0)
		(void)agent_config_str(ap, &c->ac_reload_command, value, name);
	else if (strcmp(name, "pid_file") == 0)
		(void)agent_config_path(ap, &c->ac_pid_file, value, name);
	else if (strcmp(name, "reload_signal") == 0) {
		const char *s = strncmp(value, "SIG", 3) == 0 ? value + 3 :
		    value;

		if (c->ac_reload_signal != 0) {
			agent_config_error(ap, "reload_signal given twice");
			return;
		}
		for (i = 0; i < sizeof(agent_signals) /
		    sizeof(agent_signals[0]); i++)
			if (strcmp(s, agent_signals[i].name) == 0)
				c->ac_reload_signal = agent_signals[i].sig;
		if (c->ac_reload_signal == 0)
			agent_config_error(ap, "reload_signal must be one of "
			    "HUP, USR1, USR2, TERM, INT, QUIT, WINCH: '%s'",
			    value);
	} else if (strcmp(name, "reuse_key") == 0)
		(void)agent_config_bool(ap, &c->ac_reuse_key, value, name);
	else
		agent_config_error(ap, "unknown setting %s in [cert %s]", name,
		    c->ac_name);
}

static void
agent_config_new_cert(struct agent_parse *ap, const char *name)
{
	struct agent_config *cf = ap->ap_conf;
	struct agent_cert *c;
	size_t i, n = strlen(name);

	ap->ap_cert = NULL;
	if (n == 0 || n > AGENT_NAME_MAX ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789._-") != n) {
		agent_config_error(ap, "[cert %s]: a name is 1 to %d letters, "
		    "digits, '.', '_' or '-'", name, AGENT_NAME_MAX);
		return;
	}
	for (i = 0; i < cf->cf_ncerts; i++)
		if (strcmp(cf->cf_certs[i]->ac_name, name) == 0) {
			agent_config_error(ap, "[cert %s] given twice", name);
			return;
		}
	if (cf->cf_ncerts >= AGENT_MAX_CERTS) {
		agent_config_error(ap, "more than %d [cert] sections",
		    AGENT_MAX_CERTS);
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL ||
	    (c->ac_name = strdup(name)) == NULL) {
		free(c);
		agent_config_error(ap, "out of memory");
		return;
	}
	c->ac_line = ap->ap_line;
	c->ac_key_mode = c->ac_cert_mode = c->ac_reuse_key = -1;
	c->ac_uid = (uid_t)-1;
	c->ac_gid = (gid_t)-1;
	cf->cf_certs[cf->cf_ncerts++] = c;
	ap->ap_cert = c;
}

static int
agent_config_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct agent_parse *ap = user;

	if (strcmp(section, ap->ap_section) != 0) {
		if (strlen(section) >= sizeof(ap->ap_section)) {
			agent_config_error(ap, "section name too long");
			return 1;
		}
		snprintf(ap->ap_section, sizeof(ap->ap_section), "%s",
		    section);
		ap->ap_cert = NULL;
		if (strncmp(section, "cert ", 5) == 0)
			agent_config_new_cert(ap, section + 5);
	}
	if (strcmp(section, "agent") == 0)
		agent_config_agent(ap, name, value);
	else if (strncmp(section, "cert ", 5) == 0) {
		if (ap->ap_cert != NULL)
			agent_config_cert(ap, ap->ap_cert, name, value);
	} else
		agent_config_error(ap, "unknown section [%s] ([agent] or [cert "
		    "NAME])", section);
	return 1;	/* report every error, not just the first */
}

/* Settings that need others, and the defaults; errors at the line of
 * the section concerned. */
static void
agent_config_check(struct agent_parse *ap)
{
	struct agent_config *cf = ap->ap_conf;
	struct agent_cert *c;
	struct curl_slist *sl;
	size_t i, j;

	ap->ap_line = 1;
	if (cf->cf_server == NULL)
		agent_config_error(ap, "[agent] server is needed");
	if (cf->cf_ca_bundle == NULL)
		agent_config_error(ap, "[agent] ca_bundle is needed");
	if (cf->cf_state_dir == NULL)
		agent_config_error(ap, "[agent] state_dir is needed");
	if (cf->cf_renew_fraction < 0)
		cf->cf_renew_fraction = DEFAULT_RENEW_FRACTION;
	if (cf->cf_jitter < 0)
		cf->cf_jitter = DEFAULT_JITTER;
	if (cf->cf_jitter >= cf->cf_renew_fraction)
		agent_config_error(ap, "[agent] jitter must be below "
		    "renew_fraction");
	if (cf->cf_backoff_min == 0)
		cf->cf_backoff_min = DEFAULT_BACKOFF_MIN;
	if (cf->cf_backoff_max == 0)
		cf->cf_backoff_max = cf->cf_backoff_min > DEFAULT_BACKOFF_MAX ?
		    cf->cf_backoff_min : DEFAULT_BACKOFF_MAX;
	if (cf->cf_backoff_max < cf->cf_backoff_min)
		agent_config_error(ap, "[agent] backoff_max is below "
		    "backoff_min");
	if (cf->cf_check_interval == 0)
		cf->cf_check_interval = DEFAULT_CHECK_INTERVAL;
	if (cf->cf_crl_check == -1)
		cf->cf_crl_check = 1;
	if (cf->cf_resolve != NULL) {
		if ((sl = curl_slist_append(NULL, cf->cf_resolve)) == NULL)
			agent_config_error(ap, "out of memory");
		cf->cf_resolve_list = sl;
	}
	if (cf->cf_ncerts == 0 && ap->ap_errors == 0)
		agent_config_error(ap, "no [cert NAME] section");
	for (i = 0; i < cf->cf_ncerts; i++) {
		c = cf->cf_certs[i];
		ap->ap_line = c->ac_line;
		if (c->ac_profile == NULL)
			agent_config_error(ap, "[cert %s]: profile is needed",
			    c->ac_name);
		if (c->ac_nuris + c->ac_ndns == 0)
			agent_config_error(ap, "[cert %s]: spiffe_id or dns is "
			    "needed", c->ac_name);
		if (c->ac_key == NULL || c->ac_cert == NULL)
			agent_config_error(ap, "[cert %s]: key and cert are "
			    "needed", c->ac_name);
		else if (strcmp(c->ac_key, c->ac_cert) == 0 ||
		    (c->ac_chain != NULL && (strcmp(c->ac_chain,
		    c->ac_key) == 0 || strcmp(c->ac_chain, c->ac_cert) == 0)))
			agent_config_error(ap, "[cert %s]: key, cert and chain "
			    "must be different files", c->ac_name);
		for (j = 0; j < i && c->ac_key != NULL; j++)
			if (cf->cf_certs[j]->ac_key != NULL &&
			    (strcmp(cf->cf_certs[j]->ac_key, c->ac_key) == 0 ||
			    strcmp(cf->cf_certs[j]->ac_cert, c->ac_cert) == 0))
				agent_config_error(ap, "[cert %s]: the same "
				    "files as [cert %s]", c->ac_name,
				    cf->cf_certs[j]->ac_name);
		if (c->ac_reload_command != NULL && (c->ac_reload_signal != 0 ||
		    c->ac_pid_file != NULL))
			agent_config_error(ap, "[cert %s]: reload_command or "
			    "reload_signal with pid_file, not both", c->ac_name);
		else if ((c->ac_reload_signal != 0) != (c->ac_pid_file != NULL))
			agent_config_error(ap, "[cert %s]: reload_signal and "
			    "pid_file go together", c->ac_name);
		if (c->ac_key_mode == -1)
			c->ac_key_mode = 0600;
		if (c->ac_cert_mode == -1)
			c->ac_cert_mode = 0644;
		if (c->ac_reuse_key == -1)
			c->ac_reuse_key = 0;
	}
}

/* Reads and checks a whole configuration: NULL after logging every
 * error as FILE:LINE: message. */
static struct agent_config *
agent_config_load(const char *path)
{
	struct agent_parse ap;
	struct agent_config *cf;
	int ret;

	memset(&ap, 0, sizeof(ap));
	ap.ap_path = path;
	if ((cf = calloc(1, sizeof(*cf))) == NULL ||
	    (cf->cf_path = strdup(path)) == NULL) {
		log_warn("%s", path);
		agent_config_free(cf);
		return NULL;
	}
	cf->cf_renew_fraction = cf->cf_jitter = -1;
	cf->cf_crl_check = -1;
	ap.ap_conf = cf;
	if ((ap.ap_file = fopen(path, "re")) == NULL) {
		log_warn("%s", path);
		agent_config_free(cf);
		return NULL;
	}
	ret = ini_parse_stream(agent_config_reader, &ap, agent_config_handler,
	    &ap);
	fclose(ap.ap_file);
	if (ret != 0) {
		if (ret > 0)
			log_warnx("%s:%d: not a setting (NAME = VALUE), section "
			    "or comment", path, ret);
		else
			log_warnx("%s: cannot be read", path);
		ap.ap_errors++;
	}
	agent_config_check(&ap);
	if (ap.ap_errors > 0) {
		agent_config_free(cf);
		return NULL;
	}
	return cf;
}

/* --- files ------------------------------------------------------------- */

static void
agent_free_buf(char *buf, size_t len)
{
	if (buf != NULL)
		OPENSSL_cleanse(buf, len);
	free(buf);
}

/* Reads a whole regular file of at most AGENT_FILE_MAX bytes,
 * NUL-terminated.  Returns 0, 1 when it does not exist, or -1. */
static int
agent_read_file(const char *path, char **out, size_t *outlen, char *err,
    size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd, ret = -1;

	*out = NULL;
	*outlen = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		agent_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return errno == ENOENT ? 1 : -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_size > AGENT_FILE_MAX) {
		agent_seterr(err, errlen, "%s: not a regular file of at most "
		    "%d bytes", path, AGENT_FILE_MAX);
		goto out;
	}
	if ((buf = malloc(AGENT_FILE_MAX + 1)) == NULL) {
		agent_seterr(err, errlen, "out of memory");
		goto out;
	}
	for (;;) {
		if (len == AGENT_FILE_MAX) {
			agent_seterr(err, errlen, "%s: longer than %d bytes",
			    path, AGENT_FILE_MAX);
			goto out;
		}
		n = read(fd, buf + len, AGENT_FILE_MAX - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			agent_seterr(err, errlen, "%s: %s", path,
			    strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	buf = NULL;
	ret = 0;
 out:
	agent_free_buf(buf, AGENT_FILE_MAX + 1);
	close(fd);
	return ret;
}

static int
agent_no_pass(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static void
agent_ident_clear(struct agent_ident *id)
{
	agent_free_buf(id->ai_key_pem, id->ai_key_len);
	agent_free_buf(id->ai_cert_pem, id->ai_cert_len);
	EVP_PKEY_free(id->ai_key);
	X509_free(id->ai_cert);
	memset(id, 0, sizeof(*id));
}

/* Loads the current pair.  Returns 0, or -1 with the reason in err: a
 * missing file, a broken one, or a key that is not the certificate's. */
static int
agent_ident_load(const struct agent_cert *c, struct agent_ident *id,
    char *err, size_t errlen)
{
	BIO *b = NULL;
	int ret = -1;

	memset(id, 0, sizeof(*id));
	if (agent_read_file(c->ac_key, &id->ai_key_pem, &id->ai_key_len, err,
	    errlen) != 0 || agent_read_file(c->ac_cert, &id->ai_cert_pem,
	    &id->ai_cert_len, err, errlen) != 0)
		goto out;
	if ((b = BIO_new_mem_buf(id->ai_key_pem, (int)id->ai_key_len)) ==
	    NULL || (id->ai_key = PEM_read_bio_PrivateKey(b, NULL,
	    agent_no_pass, NULL)) == NULL) {
		agent_seterr(err, errlen, "%s: not an unencrypted PEM private "
		    "key (%s)", c->ac_key, agent_ssl_error());
		goto out;
	}
	BIO_free(b);
	if ((b = BIO_new_mem_buf(id->ai_cert_pem, (int)id->ai_cert_len)) ==
	    NULL || (id->ai_cert = PEM_read_bio_X509(b, NULL, agent_no_pass,
	    NULL)) == NULL) {
		agent_seterr(err, errlen, "%s: not a PEM certificate (%s)",
		    c->ac_cert, agent_ssl_error());
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(id->ai_cert), id->ai_key) != 1) {
		agent_seterr(err, errlen, "%s is not the key of %s", c->ac_key,
		    c->ac_cert);
		goto out;
	}
	ret = 0;
 out:
	ERR_clear_error();
	BIO_free(b);
	if (ret != 0)
		agent_ident_clear(id);
	return ret;
}

static time_t
agent_asn1_time(const ASN1_TIME *t)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return timegm(&tm);
}

/* The serial as the server names it: lower-case hex, no leading zeros. */
static void
agent_serial_of(X509 *x, char *out, size_t outlen)
{
	BIGNUM *bn;
	char *hex = NULL, *p;
	size_t i;

	out[0] = '\0';
	if ((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL)) !=
	    NULL && (hex = BN_bn2hex(bn)) != NULL) {
		for (p = hex; *p == '0' && p[1] != '\0'; p++)
			;
		snprintf(out, outlen, "%s", p);
		for (i = 0; out[i] != '\0'; i++)
			if (out[i] >= 'A' && out[i] <= 'F')
				out[i] = (char)(out[i] - 'A' + 'a');
	}
	OPENSSL_free(hex);
	BN_free(bn);
}

/* Random name beside the target, created with the final mode (and, as
 * root, the configured owner) before anything is written to it. */
static int
agent_file_open(struct agent_file *f, const struct agent_cert *c, char *err,
    size_t errlen)
{
	const char *slash;
	unsigned char rnd[6];
	size_t len;
	int tries;

	f->af_fd = -1;
	f->af_renamed = 0;
	len = strlen(f->af_path) + 32;
	if ((f->af_tmp = malloc(len)) == NULL) {
		agent_seterr(err, errlen, "out of memory");
		return -1;
	}
	slash = strrchr(f->af_path, '/');
	for (tries = 0; tries < 16; tries++) {
		if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
			agent_seterr(err, errlen, "no random bytes");
			return -1;
		}
		snprintf(f->af_tmp, len, "%.*s/.%s.%02x%02x%02x%02x%02x%02x",
		    (int)(slash - f->af_path), f->af_path, slash + 1, rnd[0],
		    rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
		f->af_fd = open(f->af_tmp, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, f->af_mode);
		if (f->af_fd != -1 || errno != EEXIST)
			break;
	}
	if (f->af_fd == -1) {
		agent_seterr(err, errlen, "%s: cannot create a file beside it: "
		    "%s", f->af_path, strerror(errno));
		free(f->af_tmp);
		f->af_tmp = NULL;
		return -1;
	}
	/* The umask may have taken bits away; never added any. */
	if (fchmod(f->af_fd, f->af_mode) == -1 || (geteuid() == 0 &&
	    (c->ac_owner != NULL || c->ac_group != NULL) &&
	    fchown(f->af_fd, c->ac_owner != NULL ? c->ac_uid : (uid_t)-1,
	    c->ac_group != NULL ? c->ac_gid : (gid_t)-1) == -1)) {
		agent_seterr(err, errlen, "%s: %s", f->af_tmp,
		    strerror(errno));
		return -1;
	}
	return 0;
}

static int
agent_file_write(struct agent_file *f, const char *data, size_t len,
    char *err, size_t errlen)
{
	size_t off = 0;
	ssize_t w;

	while (off < len) {
		w = write(f->af_fd, data + off, len - off);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1) {
			agent_seterr(err, errlen, "%s: %s", f->af_tmp,
			    strerror(errno));
			return -1;
		}
		off += (size_t)w;
	}
	if (fsync(f->af_fd) == -1) {
		agent_seterr(err, errlen, "%s: %s", f->af_tmp, strerror(errno));
		return -1;
	}
	if (close(f->af_fd) == -1) {
		f->af_fd = -1;
		agent_seterr(err, errlen, "%s: %s", f->af_tmp, strerror(errno));
		return -1;
	}
	f->af_fd = -1;
	return 0;
}

static int
agent_fsync_dir(const char *path, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	int fd, ret = 0;

	if (slash == NULL || slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    fsync(fd) == -1) {
		agent_seterr(err, errlen, "%s: %s", dir, strerror(errno));
		ret = -1;
	}
	if (fd != -1)
		close(fd);
	return ret;
}

/* Renames in the order given (key, chain, certificate), each followed by
 * an fsync of its directory. */
static int
agent_files_commit(struct agent_file *f, size_t n, char *err, size_t errlen)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (f[i].af_tmp == NULL)
			continue;
		if (rename(f[i].af_tmp, f[i].af_path) == -1) {
			agent_seterr(err, errlen, "%s: %s", f[i].af_path,
			    strerror(errno));
			return -1;
		}
		f[i].af_renamed = 1;
		if (agent_fsync_dir(f[i].af_path, err, errlen) != 0)
			return -1;
	}
	return 0;
}

static void
agent_files_close(struct agent_file *f, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (f[i].af_fd != -1)
			close(f[i].af_fd);
		if (f[i].af_tmp != NULL && !f[i].af_renamed)
			unlink(f[i].af_tmp);
		free(f[i].af_tmp);
		f[i].af_tmp = NULL;
		f[i].af_fd = -1;
	}
}

/* Writes a small file of state_dir atomically (status, metrics). */
static int
agent_write_state_file(const char *dir, const char *name, const char *data,
    size_t len)
{
	struct agent_file f;
	struct agent_cert none;
	char path[PATH_MAX], err[AGENT_ERR_MAX];
	int ret = -1;

	memset(&none, 0, sizeof(none));
	memset(&f, 0, sizeof(f));
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >=
	    sizeof(path)) {
		log_warnx("%s/%s: path too long", dir, name);
		return -1;
	}
	f.af_path = path;
	f.af_mode = 0644;
	if (agent_file_open(&f, &none, err, sizeof(err)) == 0 &&
	    agent_file_write(&f, data, len, err, sizeof(err)) == 0 &&
	    agent_files_commit(&f, 1, err, sizeof(err)) == 0)
		ret = 0;
	else
		log_warnx("%s", err);
	agent_files_close(&f, 1);
	return ret;
}

/* --- keys and requests ------------------------------------------------- */

static EVP_PKEY *
agent_keygen(const char *type, char *err, size_t errlen)
{
	EVP_PKEY *k = NULL;
	size_t i;

	for (i = 0; i < sizeof(agent_key_types) / sizeof(agent_key_types[0]);
	    i++)
		if (strcmp(type, agent_key_types[i].name) == 0)
			break;
	if (i == sizeof(agent_key_types) / sizeof(agent_key_types[0])) {
		agent_seterr(err, errlen, "key type %s is not supported", type);
		return NULL;
	}
	switch (agent_key_types[i].type) {
	case EVP_PKEY_EC:
		k = EVP_EC_gen(agent_key_types[i].group);
		break;
	case EVP_PKEY_RSA:
		k = EVP_RSA_gen(agent_key_types[i].bits);
		break;
	default:
		k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
		break;
	}
	if (k == NULL)
		agent_seterr(err, errlen, "%s key generation failed: %s", type,
		    agent_ssl_error());
	return k;
}

static int
agent_push_name(GENERAL_NAMES *gens, int type, const char *v)
{
	GENERAL_NAME *gn;
	ASN1_IA5STRING *s;

	if ((gn = GENERAL_NAME_new()) == NULL)
		return -1;
	if ((s = ASN1_IA5STRING_new()) == NULL ||
	    ASN1_STRING_set(s, v, (int)strlen(v)) != 1) {
		ASN1_IA5STRING_free(s);
		GENERAL_NAME_free(gn);
		return -1;
	}
	GENERAL_NAME_set0_value(gn, type, s);
	if (sk_GENERAL_NAME_push(gens, gn) <= 0) {
		GENERAL_NAME_free(gn);
		return -1;
	}
	return 0;
}

static char *
agent_bio_string(BIO *b)
{
	char *p, *s;
	long n = BIO_get_mem_data(b, &p);

	if (n < 0 || (s = malloc((size_t)n + 1)) == NULL)
		return NULL;
	memcpy(s, p, (size_t)n);
	s[n] = '\0';
	return s;
}

/* The CSR in PEM: an empty subject, the names in a critical SAN. */
static char *
agent_csr(const struct agent_cert *c, EVP_PKEY *k, char *err, size_t errlen)
{
	X509_REQ *req = NULL;
	GENERAL_NAMES *gens = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	const EVP_MD *md = EVP_sha256();
	BIO *b = NULL;
	char *pem = NULL, group[64];
	size_t i, glen;

	if (EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519)
		md = NULL;
	else if (EVP_PKEY_get_base_id(k) == EVP_PKEY_EC &&
	    EVP_PKEY_get_group_name(k, group, sizeof(group), &glen) == 1 &&
	    OBJ_sn2nid(group) == NID_secp384r1)
		md = EVP_sha384();
	if ((req = X509_REQ_new()) == NULL ||
	    X509_REQ_set_version(req, 0) != 1 ||
	    X509_REQ_set_pubkey(req, k) != 1 ||
	    (gens = sk_GENERAL_NAME_new_null()) == NULL)
		goto fail;
	for (i = 0; i < c->ac_nuris; i++)
		if (agent_push_name(gens, GEN_URI, c->ac_uris[i]) != 0)
			goto fail;
	for (i = 0; i < c->ac_ndns; i++)
		if (agent_push_name(gens, GEN_DNS, c->ac_dns[i]) != 0)
			goto fail;
	if (X509V3_add1_i2d(&exts, NID_subject_alt_name, gens, 1,
	    X509V3_ADD_DEFAULT) != 1 ||
	    X509_REQ_add_extensions(req, exts) != 1 ||
	    X509_REQ_sign(req, k, md) <= 0 ||
	    (b = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509_REQ(b, req) != 1 ||
	    (pem = agent_bio_string(b)) == NULL)
		goto fail;
	goto out;
 fail:
	agent_seterr(err, errlen, "the certificate request could not be made: "
	    "%s", agent_ssl_error());
 out:
	BIO_free(b);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gens);
	X509_REQ_free(req);
	return pem;
}

/* A non-2xx answer as "code: message"; code also alone in codebuf. */
static void
agent_server_error(const struct http_response *r, char *code, size_t codelen,
    char *err, size_t errlen)
{
	json_t *j;
	char msg[AGENT_ERR_MAX];

	code[0] = '\0';
	j = json_loadb(r->hr_body, r->hr_len, 0, NULL);
	if (json_is_object(j) && agent_jstr(j, "error") != NULL) {
		agent_clean(agent_jstr(j, "error"), code, codelen);
		agent_clean(agent_jstr(j, "message"), msg, sizeof(msg));
		agent_seterr(err, errlen, "%s: %s", code, msg[0] != '\0' ? msg :
		    "(no message)");
	} else
		agent_seterr(err, errlen, "the server answered HTTP %ld without "
		    "a JSON error", r->hr_status);
	json_decref(j);
}

/* The bootstrap token: a file owned by us or root, closed to group and
 * other (secret_read_file's rules), one line of printable ASCII. */
static int
agent_read_token(const struct agent_cert *c, char *tok, size_t toklen,
    char *err, size_t errlen)
{
	struct secret *s = NULL;
	const char *src;
	size_t len, i;
	int ret = -1;

	if (c->ac_token_file == NULL) {
		agent_seterr(err, errlen, "no token_file to enroll with");
		return -1;
	}
	if (secret_read_file(c->ac_token_file, &s) != 0) {
		agent_seterr(err, errlen, "token_file: %s",
		    token_error_detail());
		return -1;
	}
	src = (const char *)secret_data(s);
	len = secret_len(s);
	if (len == 0 || len > AGENT_TOKEN_MAX || len >= toklen) {
		agent_seterr(err, errlen, "token_file %s: empty or longer than "
		    "%d bytes", c->ac_token_file, AGENT_TOKEN_MAX);
		goto out;
	}
	for (i = 0; i < len; i++)
		if (src[i] <= 0x20 || src[i] >= 0x7f) {
			agent_seterr(err, errlen, "token_file %s: a byte that is "
			    "not printable ASCII", c->ac_token_file);
			goto out;
		}
	memcpy(tok, src, len);
	tok[len] = '\0';
	ret = 0;
 out:
	secret_free(s);
	return ret;
}

/* The certificate (re-encoded) and the chain (1 to AGENT_CHAIN_MAX
 * certificates) of an issuance answer; the certificate must be for k. */
static int
agent_take_cert(const struct agent_cert *c, json_t *j, EVP_PKEY *k,
    char **certpem, char **chainpem, char *err, size_t errlen)
{
	const char *cert, *chain, *serial;
	BIO *in = NULL, *out = NULL;
	X509 *x = NULL;
	size_t n;
	int nchain = 0, ret = -1;

	*certpem = *chainpem = NULL;
	cert = agent_jstr(j, "certificate");
	chain = agent_jstr(j, "chain");
	serial = agent_jstr(j, "serial");
	n = serial != NULL ? strlen(serial) : 0;
	if (n == 0 || n > 40 || strspn(serial, "0123456789abcdef") != n ||
	    cert == NULL) {
		agent_seterr(err, errlen, "the server's answer lacks a serial "
		    "or a certificate");
		goto out;
	}
	if ((in = BIO_new_mem_buf(cert, -1)) == NULL ||
	    (x = PEM_read_bio_X509(in, NULL, agent_no_pass, NULL)) == NULL) {
		agent_seterr(err, errlen, "the server's certificate is not "
		    "PEM: %s", agent_ssl_error());
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(x), k) != 1) {
		agent_seterr(err, errlen, "the server's certificate is not for "
		    "our key");
		goto out;
	}
	if ((out = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509(out, x) != 1 ||
	    (*certpem = agent_bio_string(out)) == NULL)
		goto nomem;
	BIO_free(in);
	BIO_free(out);
	in = out = NULL;
	if (c->ac_chain == NULL) {
		ret = 0;
		goto out;
	}
	if (chain == NULL || (in = BIO_new_mem_buf(chain, -1)) == NULL ||
	    (out = BIO_new(BIO_s_mem())) == NULL)
		goto badchain;
	for (;;) {
		X509_free(x);
		if ((x = PEM_read_bio_X509(in, NULL, agent_no_pass, NULL)) ==
		    NULL)
			break;
		if (++nchain > AGENT_CHAIN_MAX ||
		    PEM_write_bio_X509(out, x) != 1)
			goto badchain;
	}
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE ||
	    nchain == 0)
		goto badchain;
	ERR_clear_error();
	if ((*chainpem = agent_bio_string(out)) == NULL)
		goto nomem;
	ret = 0;
	goto out;
 badchain:
	agent_seterr(err, errlen, "the server's chain is not 1 to %d PEM "
	    "certificates", AGENT_CHAIN_MAX);
	goto out;
 nomem:
	agent_seterr(err, errlen, "out of memory");
 out:
	ERR_clear_error();
	if (ret != 0) {
		free(*certpem);
		free(*chainpem);
		*certpem = *chainpem = NULL;
	}
	X509_free(x);
	BIO_free(in);
	BIO_free(out);
	return ret;
}

static void
agent_http_options(const struct agent_config *cf, struct http_options *o,
    const struct agent_ident *id)
{
	memset(o, 0, sizeof(*o));
	o->ho_server = cf->cf_server;
	o->ho_ca_bundle = cf->cf_ca_bundle;
	o->ho_resolve = cf->cf_resolve_list;
	if (id != NULL) {
		o->ho_cert = id->ai_cert_pem;
		o->ho_cert_len = id->ai_cert_len;
		o->ho_key = id->ai_key_pem;
		o->ho_key_len = id->ai_key_len;
	}
}

/*
 * One issuance: enroll (id NULL, with the token) or renew (over mTLS
 * with id).  The temporary files are made before the server is asked,
 * so an unwritable directory spends no token; the old files stay until
 * the new ones are complete.  Returns 0, or -1 with err (and the
 * server's error code in code when it gave one).
 */
static int
agent_issue(const struct agent_config *cf, struct agent_cert *c,
    const struct agent_ident *id, char *code, size_t codelen, char *err,
    size_t errlen)
{
	struct agent_file f[3];
	struct http_options o;
	struct http_response r;
	EVP_PKEY *k = NULL;
	BIO *kb = NULL;
	BUF_MEM *kmem = NULL;
	json_t *req = NULL, *j = NULL;
	char *csr = NULL, *body = NULL, *certpem = NULL, *chainpem = NULL;
	char tok[AGENT_TOKEN_MAX + 1], herr[AGENT_ERR_MAX];
	int newkey, ret = -1;
	size_t i;

	code[0] = '\0';
	tok[0] = '\0';
	memset(&r, 0, sizeof(r));
	memset(f, 0, sizeof(f));
	for (i = 0; i < 3; i++)
		f[i].af_fd = -1;
	newkey = id == NULL || !c->ac_reuse_key;
	if (id == NULL && agent_read_token(c, tok, sizeof(tok), err,
	    errlen) != 0)
		goto out;
	f[0].af_path = newkey ? c->ac_key : NULL;
	f[0].af_mode = (mode_t)c->ac_key_mode;
	f[1].af_path = c->ac_chain;
	f[1].af_mode = (mode_t)c->ac_cert_mode;
	f[2].af_path = c->ac_cert;
	f[2].af_mode = (mode_t)c->ac_cert_mode;
	for (i = 0; i < 3; i++)
		if (f[i].af_path != NULL && agent_file_open(&f[i], c, err,
		    errlen) != 0)
			goto out;
	if (newkey) {
		if ((k = agent_keygen(c->ac_key_type != NULL ? c->ac_key_type :
		    "ec-p256", err, errlen)) == NULL)
			goto out;
	} else {
		if (EVP_PKEY_up_ref(id->ai_key) != 1) {
			agent_seterr(err, errlen, "out of memory");
			goto out;
		}
		k = id->ai_key;
	}
	if ((csr = agent_csr(c, k, err, errlen)) == NULL)
		goto out;
	if ((req = json_pack("{s:s,s:s,s:s*}", "csr", csr, "profile",
	    c->ac_profile, "ttl", c->ac_ttl)) == NULL ||
	    (body = json_dumps(req, JSON_COMPACT)) == NULL) {
		agent_seterr(err, errlen, "out of memory");
		goto out;
	}
	agent_http_options(cf, &o, id);
	if (http_request(&o, "POST", id == NULL ? "/v1/certificates" :
	    "/v1/certificates/renew", body, id == NULL ? tok : NULL, &r, herr,
	    sizeof(herr)) != 0) {
		agent_seterr(err, errlen, "%s", herr);
		goto out;
	}
	if (r.hr_status != 200 && r.hr_status != 201) {
		agent_server_error(&r, code, codelen, err, errlen);
		goto out;
	}
	if ((j = json_loadb(r.hr_body, r.hr_len, 0, NULL)) == NULL ||
	    !json_is_object(j)) {
		agent_seterr(err, errlen, "the server's answer is not a JSON "
		    "object");
		goto out;
	}
	if (agent_take_cert(c, j, k, &certpem, &chainpem, err, errlen) != 0)
		goto out;
	if (newkey && ((kb = BIO_new(BIO_s_secmem())) == NULL ||
	    PEM_write_bio_PrivateKey(kb, k, NULL, NULL, 0, NULL, NULL) != 1 ||
	    BIO_get_mem_ptr(kb, &kmem) != 1)) {
		agent_seterr(err, errlen, "the key cannot be encoded: %s",
		    agent_ssl_error());
		goto out;
	}
	if ((newkey && agent_file_write(&f[0], kmem->data, kmem->length, err,
	    errlen) != 0) ||
	    (chainpem != NULL && agent_file_write(&f[1], chainpem,
	    strlen(chainpem), err, errlen) != 0) ||
	    agent_file_write(&f[2], certpem, strlen(certpem), err,
	    errlen) != 0 ||
	    agent_files_commit(f, 3, err, errlen) != 0)
		goto out;
	ret = 0;
 out:
	explicit_bzero(tok, sizeof(tok));
	agent_files_close(f, 3);
	BIO_free(kb);
	EVP_PKEY_free(k);
	free(csr);
	free(body);
	free(certpem);
	free(chainpem);
	json_decref(req);
	json_decref(j);
	http_response_clear(&r);
	return ret;
}

/*
 * Is the current certificate in the CA's CRL?  The CRL comes over TLS
 * from the server trusted through ca_bundle; it must name our
 * certificate's issuer, and when the chain file holds that issuer its
 * signature is checked too.  Returns 1 listed, 0 not, -1 unknown (err).
 */
static int
agent_crl_listed(const struct agent_config *cf, const struct agent_cert *c,
    const struct agent_ident *id, char *err, size_t errlen)
{
	struct http_options o;
	struct http_response r;
	const unsigned char *p;
	X509_CRL *crl = NULL;
	X509_REVOKED *rev;
	X509 *x = NULL;
	BIO *b = NULL;
	char herr[AGENT_ERR_MAX], *chain = NULL;
	size_t chainlen = 0;
	int ret = -1;

	memset(&r, 0, sizeof(r));
	agent_http_options(cf, &o, NULL);
	if (http_request(&o, "GET", "/v1/crl", NULL, NULL, &r, herr,
	    sizeof(herr)) != 0) {
		agent_seterr(err, errlen, "CRL: %s", herr);
		goto out;
	}
	if (r.hr_status != 200) {
		agent_seterr(err, errlen, "CRL: the server answered HTTP %ld",
		    r.hr_status);
		goto out;
	}
	p = (const unsigned char *)r.hr_body;
	if (r.hr_len > LONG_MAX || (crl = d2i_X509_CRL(NULL, &p,
	    (long)r.hr_len)) == NULL) {
		agent_seterr(err, errlen, "CRL: not a DER CRL (%s)",
		    agent_ssl_error());
		goto out;
	}
	if (X509_NAME_cmp(X509_CRL_get_issuer(crl),
	    X509_get_issuer_name(id->ai_cert)) != 0) {
		agent_seterr(err, errlen, "CRL: not from the issuer of %s",
		    c->ac_cert);
		goto out;
	}
	if (c->ac_chain != NULL && agent_read_file(c->ac_chain, &chain,
	    &chainlen, herr, sizeof(herr)) == 0 &&
	    (b = BIO_new_mem_buf(chain, (int)chainlen)) != NULL) {
		while ((x = PEM_read_bio_X509(b, NULL, agent_no_pass,
		    NULL)) != NULL) {
			if (X509_NAME_cmp(X509_get_subject_name(x),
			    X509_CRL_get_issuer(crl)) == 0)
				break;
			X509_free(x);
		}
		ERR_clear_error();
		if (x != NULL && X509_CRL_verify(crl,
		    X509_get0_pubkey(x)) != 1) {
			agent_seterr(err, errlen, "CRL: the signature does not "
			    "verify with the issuer in %s", c->ac_chain);
			goto out;
		}
	}
	ret = X509_CRL_get0_by_serial(crl, &rev,
	    X509_get0_serialNumber(id->ai_cert)) == 1 ? 1 : 0;
 out:
	ERR_clear_error();
	X509_free(x);
	BIO_free(b);
	free(chain);
	X509_CRL_free(crl);
	http_response_clear(&r);
	return ret;
}

/* --- reload ------------------------------------------------------------ */

extern char **environ;

static int
agent_reload_signal(struct agent_cert *c, char *msg, size_t msglen)
{
	char *buf = NULL, err[AGENT_ERR_MAX];
	size_t len;
	long pid;
	char *end;
	int ret = -1;

	if (agent_read_file(c->ac_pid_file, &buf, &len, err,
	    sizeof(err)) != 0) {
		agent_seterr(msg, msglen, "pid_file %s", err);
		return -1;
	}
	errno = 0;
	pid = strtol(buf, &end, 10);
	while (*end == '\n' || *end == ' ' || *end == '\t')
		end++;
	if (buf[0] < '0' || buf[0] > '9' || *end != '\0' || errno != 0 ||
	    pid <= 1 || pid > INT_MAX)
		agent_seterr(msg, msglen, "pid_file %s: not a process ID",
		    c->ac_pid_file);
	else if (kill((pid_t)pid, c->ac_reload_signal) == -1)
		agent_seterr(msg, msglen, "signal %d to pid %ld: %s",
		    c->ac_reload_signal, pid, strerror(errno));
	else {
		agent_seterr(msg, msglen, "signal %d sent to pid %ld",
		    c->ac_reload_signal, pid);
		ret = 0;
	}
	agent_free_buf(buf, len);
	return ret;
}

/* reload_command through /bin/sh -c, stdin from /dev/null, with the
 * certificate's name and files in its environment; it may take
 * AGENT_RELOAD_TIMEOUT seconds and is killed after. */
static int
agent_reload_command(struct agent_cert *c, char *msg, size_t msglen)
{
	char **envp = NULL, *argv[4], sh[] = "sh", dashc[] = "-c";
	char v[4][PATH_MAX + 32];
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	size_t n, i;
	pid_t pid, w;
	int status, fd, ticks, ret = -1;

	for (n = 0; environ[n] != NULL; n++)
		;
	if ((envp = calloc(n + 5, sizeof(*envp))) == NULL) {
		agent_seterr(msg, msglen, "out of memory");
		return -1;
	}
	snprintf(v[0], sizeof(v[0]), "HSMCA_AGENT_NAME=%s", c->ac_name);
	snprintf(v[1], sizeof(v[1]), "HSMCA_AGENT_KEY=%s", c->ac_key);
	snprintf(v[2], sizeof(v[2]), "HSMCA_AGENT_CERT=%s", c->ac_cert);
	snprintf(v[3], sizeof(v[3]), "HSMCA_AGENT_SERIAL=%s",
	    c->ac_st.as_serial);
	for (i = 0; i < 4; i++)
		envp[i] = v[i];
	for (i = 0; i < n; i++)
		envp[i + 4] = environ[i];
	argv[0] = sh;
	argv[1] = dashc;
	argv[2] = c->ac_reload_command;
	argv[3] = NULL;
	if ((pid = fork()) == -1) {
		agent_seterr(msg, msglen, "fork: %s", strerror(errno));
		free(envp);
		return -1;
	}
	if (pid == 0) {
		if ((fd = open("/dev/null", O_RDONLY)) != -1) {
			(void)dup2(fd, STDIN_FILENO);
			if (fd != STDIN_FILENO)
				(void)close(fd);
		}
		execve("/bin/sh", argv, envp);
		_exit(127);
	}
	free(envp);
	for (ticks = 0; ; ticks++) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == -1 && errno == EINTR)
			continue;
		if (w != 0)
			break;
		if (ticks >= AGENT_RELOAD_TIMEOUT * 20) {
			(void)kill(pid, SIGKILL);
			while ((w = waitpid(pid, &status, 0)) == -1 &&
			    errno == EINTR)
				;
			agent_seterr(msg, msglen, "reload_command timed out "
			    "after %ds, killed", AGENT_RELOAD_TIMEOUT);
			return -1;
		}
		(void)nanosleep(&ts, NULL);
	}
	if (w == -1)
		agent_seterr(msg, msglen, "waitpid: %s", strerror(errno));
	else if (WIFEXITED(status)) {
		agent_seterr(msg, msglen, "reload_command exited %d",
		    WEXITSTATUS(status));
		ret = WEXITSTATUS(status) == 0 ? 0 : -1;
	} else if (WIFSIGNALED(status))
		agent_seterr(msg, msglen, "reload_command killed by signal %d",
		    WTERMSIG(status));
	else
		agent_seterr(msg, msglen, "reload_command ended strangely");
	return ret;
}

/* After a rotation; the result is logged and kept in the state. */
static int
agent_reload(struct agent_cert *c)
{
	char msg[AGENT_ERR_MAX];
	int ret;

	if (c->ac_reload_command != NULL)
		ret = agent_reload_command(c, msg, sizeof(msg));
	else if (c->ac_reload_signal != 0)
		ret = agent_reload_signal(c, msg, sizeof(msg));
	else
		return 0;
	snprintf(c->ac_st.as_reload, sizeof(c->ac_st.as_reload), "%s", msg);
	c->ac_st.as_reload_ok = ret == 0;
	c->ac_st.as_reload_at = time(NULL);
	if (ret == 0)
		log_info("%s: reload: %s", c->ac_name, msg);
	else {
		c->ac_st.as_reload_fail++;
		log_warnx("%s: reload failed: %s", c->ac_name, msg);
	}
	return ret;
}

/* --- state, status.json and agent.prom --------------------------------- */

static json_t *
agent_state_json(const struct agent_config *cf)
{
	const struct agent_cert *c;
	const struct agent_state *s;
	json_t *root, *a, *o;
	char na[32], nx[32], ea[32], sa[32], ra[32];
	size_t i;

	if ((root = json_object()) == NULL || (a = json_array()) == NULL ||
	    json_object_set_new(root, "version", json_integer(1)) != 0 ||
	    json_object_set_new(root, "certificates", a) != 0) {
		json_decref(root);
		return NULL;
	}
	for (i = 0; i < cf->cf_ncerts; i++) {
		c = cf->cf_certs[i];
		s = &c->ac_st;
		agent_time_str(s->as_not_after, na, sizeof(na));
		agent_time_str(s->as_renew_at, nx, sizeof(nx));
		agent_time_str(s->as_last_error_at, ea, sizeof(ea));
		agent_time_str(s->as_last_success, sa, sizeof(sa));
		agent_time_str(s->as_reload_at, ra, sizeof(ra));
		o = json_pack("{s:s,s:s?,s:s?,s:I,s:I,s:s?,s:I,s:I,s:I,s:s?,"
		    "s:s?,s:I,s:s?,s:{s:s?,s:b,s:s?,s:I},s:I,s:I,s:I}",
		    "name", c->ac_name,
		    "serial", s->as_serial[0] != '\0' ? s->as_serial : NULL,
		    "not_after", s->as_not_after > 0 ? na : NULL,
		    "not_after_unix", (json_int_t)s->as_not_after,
		    "not_before_unix", (json_int_t)s->as_not_before,
		    "next_renewal", s->as_renew_at > 0 ? nx : NULL,
		    "next_renewal_unix", (json_int_t)s->as_renew_at,
		    "next_attempt_unix", (json_int_t)s->as_next,
		    "consecutive_failures", (json_int_t)s->as_failures,
		    "last_error", s->as_last_error[0] != '\0' ?
		    s->as_last_error : NULL,
		    "last_error_at", s->as_last_error_at > 0 ? ea : NULL,
		    "last_error_at_unix", (json_int_t)s->as_last_error_at,
		    "last_success_at", s->as_last_success > 0 ? sa : NULL,
		    "last_reload",
		    "result", s->as_reload[0] != '\0' ? s->as_reload : NULL,
		    "ok", s->as_reload_ok,
		    "at", s->as_reload_at > 0 ? ra : NULL,
		    "at_unix", (json_int_t)s->as_reload_at,
		    "renewals_ok", (json_int_t)s->as_renew_ok,
		    "renewals_error", (json_int_t)s->as_renew_err,
		    "reload_failures", (json_int_t)s->as_reload_fail);
		if (o == NULL || json_array_append_new(a, o) != 0) {
			json_decref(root);
			return NULL;
		}
	}
	return root;
}

static json_int_t
agent_jint(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);

	return json_is_integer(v) && json_integer_value(v) >= 0 ?
	    json_integer_value(v) : 0;
}

/* Takes back what a previous run left in status.json: counters, the
 * last error and reload, and the planned renewal (with its jitter) of
 * the serial it was planned for.  A missing or broken file is no
 * error: it is only history. */
static void
agent_state_restore(struct agent_config *cf)
{
	char path[PATH_MAX], *buf = NULL, err[AGENT_ERR_MAX];
	struct agent_state *s;
	json_t *root = NULL, *a, *o, *rl;
	size_t len, i, k;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", cf->cf_state_dir,
	    AGENT_STATUS_FILE) >= sizeof(path) ||
	    agent_read_file(path, &buf, &len, err, sizeof(err)) != 0)
		goto out;
	if ((root = json_loadb(buf, len, 0, NULL)) == NULL ||
	    !json_is_array(a = json_object_get(root, "certificates")))
		goto out;
	json_array_foreach(a, k, o) {
		for (i = 0; i < cf->cf_ncerts; i++)
			if (agent_jstr(o, "name") != NULL &&
			    strcmp(agent_jstr(o, "name"),
			    cf->cf_certs[i]->ac_name) == 0)
				break;
		if (i == cf->cf_ncerts)
			continue;
		s = &cf->cf_certs[i]->ac_st;
		agent_clean(agent_jstr(o, "serial"), s->as_serial,
		    sizeof(s->as_serial));
		s->as_not_after = (time_t)agent_jint(o, "not_after_unix");
		s->as_not_before = (time_t)agent_jint(o, "not_before_unix");
		s->as_renew_at = (time_t)agent_jint(o, "next_renewal_unix");
		s->as_failures = (unsigned int)agent_jint(o,
		    "consecutive_failures");
		agent_clean(agent_jstr(o, "last_error"), s->as_last_error,
		    sizeof(s->as_last_error));
		s->as_last_error_at = (time_t)agent_jint(o,
		    "last_error_at_unix");
		s->as_renew_ok = (unsigned long)agent_jint(o, "renewals_ok");
		s->as_renew_err = (unsigned long)agent_jint(o,
		    "renewals_error");
		s->as_reload_fail = (unsigned long)agent_jint(o,
		    "reload_failures");
		if (json_is_object(rl = json_object_get(o, "last_reload"))) {
			agent_clean(agent_jstr(rl, "result"), s->as_reload,
			    sizeof(s->as_reload));
			s->as_reload_ok = json_is_true(json_object_get(rl,
			    "ok"));
			s->as_reload_at = (time_t)agent_jint(rl, "at_unix");
		}
	}
 out:
	json_decref(root);
	free(buf);
}

static void
agent_metrics_add(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
agent_metrics_add(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	va_list ap;
	char *nb;
	int n;

	if (*buf == NULL)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			free(*buf);
			*buf = NULL;
			return;
		}
		if ((size_t)n < *cap - *len) {
			*len += (size_t)n;
			return;
		}
		if ((nb = realloc(*buf, *cap * 2 + (size_t)n)) == NULL) {
			free(*buf);
			*buf = NULL;
			return;
		}
		*buf = nb;
		*cap = *cap * 2 + (size_t)n;
	}
}

/* status.json and agent.prom (node_exporter's textfile format), each
 * replaced atomically. */
static void
agent_state_save(const struct agent_config *cf)
{
	const struct agent_state *s;
	json_t *j;
	char *out, *m;
	size_t i, len = 0, cap = 4096;

	if ((j = agent_state_json(cf)) == NULL ||
	    (out = json_dumps(j, JSON_INDENT(2))) == NULL)
		log_warnx("%s: out of memory", AGENT_STATUS_FILE);
	else {
		(void)agent_write_state_file(cf->cf_state_dir,
		    AGENT_STATUS_FILE, out, strlen(out));
		free(out);
	}
	json_decref(j);
	m = malloc(cap);
	agent_metrics_add(&m, &len, &cap,
	    "# HELP hsmca_agent_cert_not_after_seconds The current "
	    "certificate's notAfter (Unix time).\n"
	    "# TYPE hsmca_agent_cert_not_after_seconds gauge\n");
	for (i = 0; i < cf->cf_ncerts; i++)
		agent_metrics_add(&m, &len, &cap,
		    "hsmca_agent_cert_not_after_seconds{name=\"%s\"} %lld\n",
		    cf->cf_certs[i]->ac_name,
		    (long long)cf->cf_certs[i]->ac_st.as_not_after);
	agent_metrics_add(&m, &len, &cap,
	    "# HELP hsmca_agent_next_renewal_seconds When the current "
	    "certificate is due for renewal (Unix time).\n"
	    "# TYPE hsmca_agent_next_renewal_seconds gauge\n");
	for (i = 0; i < cf->cf_ncerts; i++)
		agent_metrics_add(&m, &len, &cap,
		    "hsmca_agent_next_renewal_seconds{name=\"%s\"} %lld\n",
		    cf->cf_certs[i]->ac_name,
		    (long long)cf->cf_certs[i]->ac_st.as_renew_at);
	agent_metrics_add(&m, &len, &cap,
	    "# HELP hsmca_agent_renewals_total Enrollments and renewals "
	    "attempted, by result.\n"
	    "# TYPE hsmca_agent_renewals_total counter\n");
	for (i = 0; i < cf->cf_ncerts; i++) {
		s = &cf->cf_certs[i]->ac_st;
		agent_metrics_add(&m, &len, &cap,
		    "hsmca_agent_renewals_total{name=\"%s\",result=\"ok\"} "
		    "%lu\n"
		    "hsmca_agent_renewals_total{name=\"%s\",result=\"error\"} "
		    "%lu\n", cf->cf_certs[i]->ac_name, s->as_renew_ok,
		    cf->cf_certs[i]->ac_name, s->as_renew_err);
	}
	agent_metrics_add(&m, &len, &cap,
	    "# HELP hsmca_agent_reload_failures_total Reload commands or "
	    "signals that failed after a rotation.\n"
	    "# TYPE hsmca_agent_reload_failures_total counter\n");
	for (i = 0; i < cf->cf_ncerts; i++)
		agent_metrics_add(&m, &len, &cap,
		    "hsmca_agent_reload_failures_total{name=\"%s\"} %lu\n",
		    cf->cf_certs[i]->ac_name,
		    cf->cf_certs[i]->ac_st.as_reload_fail);
	if (m == NULL)
		log_warnx("%s: out of memory", AGENT_METRICS_FILE);
	else
		(void)agent_write_state_file(cf->cf_state_dir,
		    AGENT_METRICS_FILE, m, len);
	free(m);
}

/* --- one cycle of one certificate -------------------------------------- */

/* Notes the current certificate; a new serial gets a new planned
 * renewal: renew_fraction of its lifetime, less a random jitter. */
static void
agent_note(const struct agent_config *cf, struct agent_cert *c,
    const struct agent_ident *id)
{
	struct agent_state *s = &c->ac_st;
	char serial[sizeof(s->as_serial)];
	time_t nb, na, life;

	agent_serial_of(id->ai_cert, serial, sizeof(serial));
	nb = agent_asn1_time(X509_get0_notBefore(id->ai_cert));
	na = agent_asn1_time(X509_get0_notAfter(id->ai_cert));
	if (strcmp(serial, s->as_serial) == 0 && s->as_not_before == nb &&
	    s->as_not_after == na && s->as_renew_at >= nb &&
	    s->as_renew_at < na)
		return;
	snprintf(s->as_serial, sizeof(s->as_serial), "%s", serial);
	s->as_not_before = nb;
	s->as_not_after = na;
	life = na > nb ? na - nb : 0;
	s->as_renew_at = nb + (time_t)((double)life * cf->cf_renew_fraction) -
	    (time_t)agent_random((long)((double)life * cf->cf_jitter));
}

/* The wait before the next attempt after failures in a row: doubling
 * from backoff_min up to backoff_max, then a random half of it taken
 * off so that many agents do not come back together; never so long
 * that fewer than about four attempts fit before the certificate
 * expires. */
static long
agent_backoff(const struct agent_config *cf, const struct agent_state *s,
    time_t now)
{
	long d = cf->cf_backoff_min;
	unsigned int i;

	for (i = 1; i < s->as_failures && d < cf->cf_backoff_max; i++)
		d *= 2;
	if (d > cf->cf_backoff_max)
		d = cf->cf_backoff_max;
	d -= agent_random(d / 2);
	if (s->as_not_after > now && d > (s->as_not_after - now) / 4)
		d = (long)((s->as_not_after - now) / 4);
	return d < 1 ? 1 : d;
}

#define CYCLE_OK		0
#define CYCLE_FAILED		1	/* nothing changed: back off */
#define CYCLE_RELOAD_FAILED	2	/* rotated, but the reload failed */

static void
agent_fail(struct agent_cert *c, const char *msg)
{
	struct agent_state *s = &c->ac_st;
	size_t n = strnlen(msg, sizeof(s->as_last_error) - 1);

	/* Cut to the status' size, on purpose. */
	memcpy(s->as_last_error, msg, n);
	s->as_last_error[n] = '\0';
	s->as_last_error_at = time(NULL);
	s->as_failures++;
	log_warnx("%s: %s", c->ac_name, msg);
}

/*
 * Does what one certificate needs now: nothing, a renewal over mTLS (due,
 * or force), or an enrollment with the token (no usable pair, expired,
 * revoked).  A renewal the server refuses as certificate_revoked falls
 * back to the token too.
 */
static int
agent_cycle(const struct agent_config *cf, struct agent_cert *c, int force)
{
	struct agent_state *s = &c->ac_st;
	struct agent_ident id, nid;
	enum agent_need need = NEED_NOTHING;
	char why[2 * AGENT_ERR_MAX], err[AGENT_ERR_MAX];
	char msg[4 * AGENT_ERR_MAX];
	char code[64], t1[32], t2[32];
	time_t now = time(NULL);
	int listed, crl_failed = 0, r;

	memset(&nid, 0, sizeof(nid));
	if (agent_ident_load(c, &id, err, sizeof(err)) != 0) {
		need = NEED_ENROLL;
		snprintf(why, sizeof(why), "no usable key and certificate (%s)",
		    err);
	} else {
		agent_note(cf, c, &id);
		agent_time_str(s->as_not_after, t1, sizeof(t1));
		if (now >= s->as_not_after) {
			need = NEED_ENROLL;
			snprintf(why, sizeof(why), "serial %s expired at %s",
			    s->as_serial, t1);
		} else if (cf->cf_crl_check) {
			listed = agent_crl_listed(cf, c, &id, err, sizeof(err));
			if (listed == 1) {
				need = NEED_ENROLL;
				snprintf(why, sizeof(why), "serial %s is "
				    "revoked (listed in the CRL)", s->as_serial);
			} else if (listed == -1) {
				crl_failed = 1;
				agent_fail(c, err);
			}
		}
		if (need == NEED_NOTHING && (force || now >= s->as_renew_at)) {
			need = NEED_RENEW;
			agent_time_str(s->as_renew_at, t2, sizeof(t2));
			if (now < s->as_renew_at)
				snprintf(why, sizeof(why), "serial %s: renewal "
				    "forced (due %s, valid until %s)",
				    s->as_serial, t2, t1);
			else
				snprintf(why, sizeof(why), "serial %s due since "
				    "%s (valid until %s)", s->as_serial, t2, t1);
		}
	}
	if (need == NEED_NOTHING) {
		agent_ident_clear(&id);
		if (crl_failed)
			return CYCLE_FAILED;
		s->as_failures = 0;
		return CYCLE_OK;
	}
	log_info("%s: %s: %s", c->ac_name, need == NEED_RENEW ? "renewing" :
	    "enrolling", why);
	r = agent_issue(cf, c, need == NEED_RENEW ? &id : NULL, code,
	    sizeof(code), err, sizeof(err));
	if (r != 0 && need == NEED_RENEW &&
	    strcmp(code, "certificate_revoked") == 0 &&
	    c->ac_token_file != NULL) {
		log_warnx("%s: renewal refused (%s): enrolling with the token",
		    c->ac_name, err);
		need = NEED_ENROLL;
		snprintf(why, sizeof(why), "serial %s is revoked (the server "
		    "says)", s->as_serial);
		r = agent_issue(cf, c, NULL, code, sizeof(code), err,
		    sizeof(err));
	}
	agent_ident_clear(&id);
	if (r != 0) {
		s->as_renew_err++;
		if (need == NEED_ENROLL)
			snprintf(msg, sizeof(msg), "cannot enroll: %s; %s",
			    why, err);
		else
			snprintf(msg, sizeof(msg), "cannot renew serial %s: %s",
			    s->as_serial, err);
		agent_fail(c, msg);
		return CYCLE_FAILED;
	}
	s->as_renew_ok++;
	s->as_failures = 0;
	s->as_last_success = time(NULL);
	if (agent_ident_load(c, &nid, err, sizeof(err)) != 0) {
		/* Someone changed the files under us this very moment. */
		agent_fail(c, err);
		return CYCLE_FAILED;
	}
	agent_note(cf, c, &nid);
	agent_ident_clear(&nid);
	agent_time_str(s->as_not_after, t1, sizeof(t1));
	agent_time_str(s->as_renew_at, t2, sizeof(t2));
	log_info("%s: %s serial %s, valid until %s, next renewal %s",
	    c->ac_name, need == NEED_RENEW ? "renewed:" : "enrolled:",
	    s->as_serial, t1, t2);
	if (agent_reload(c) != 0)
		return CYCLE_RELOAD_FAILED;
	return CYCLE_OK;
}

/* When the daemon looks at this certificate again. */
static void
agent_schedule(const struct agent_config *cf, struct agent_cert *c,
    int result, time_t now)
{
	struct agent_state *s = &c->ac_st;

	if (result == CYCLE_FAILED)
		s->as_next = now + agent_backoff(cf, s, now);
	else {
		s->as_next = now + cf->cf_check_interval;
		if (s->as_renew_at > 0 && s->as_renew_at < s->as_next)
			s->as_next = s->as_renew_at;
		if (s->as_next <= now)
			s->as_next = now + 1;
	}
}

/* --- the state directory ----------------------------------------------- */

/* One agent per state directory: a daemon and a cron job must not
 * rotate the same files at once. */
static int
agent_lock(const struct agent_config *cf)
{
	char path[PATH_MAX];
	struct stat st;
	int fd;

	if (mkdir(cf->cf_state_dir, 0755) == -1 && errno != EEXIST) {
		log_warn("state_dir %s", cf->cf_state_dir);
		return -1;
	}
	if (stat(cf->cf_state_dir, &st) == -1 || !S_ISDIR(st.st_mode)) {
		log_warnx("state_dir %s: not a directory", cf->cf_state_dir);
		return -1;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", cf->cf_state_dir,
	    AGENT_LOCK_FILE) >= sizeof(path)) {
		log_warnx("state_dir %s: path too long", cf->cf_state_dir);
		return -1;
	}
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
	    0644)) == -1) {
		log_warn("%s", path);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK)
			log_warnx("%s: another hsmca agent uses state_dir %s",
			    path, cf->cf_state_dir);
		else
			log_warn("%s", path);
		close(fd);
		return -1;
	}
	return fd;
}

/* --- modes ------------------------------------------------------------- */

static int
agent_once(struct agent_config *cf, int force)
{
	size_t i;
	time_t now;
	int r, ret = 0;

	for (i = 0; i < cf->cf_ncerts; i++) {
		r = agent_cycle(cf, cf->cf_certs[i], force);
		now = time(NULL);
		agent_schedule(cf, cf->cf_certs[i], r, now);
		if (r != CYCLE_OK)
			ret = 1;
	}
	agent_state_save(cf);
	return ret;
}

static void
agent_signal(int sig)
{
	if (sig == SIGHUP)
		agent_hup = 1;
	else
		agent_quit = 1;
}

/* SIGHUP: a new configuration, or the old one kept when the new one is
 * broken (every error logged as FILE:LINE).  The state of a certificate
 * goes with its name; each is looked at again at once. */
static struct agent_config *
agent_reconfigure(struct agent_config *cf)
{
	struct agent_config *ncf;
	size_t i, j;

	log_info("SIGHUP: reading %s", cf->cf_path);
	if ((ncf = agent_config_load(cf->cf_path)) == NULL) {
		log_warnx("%s is not valid: keeping the configuration in use",
		    cf->cf_path);
		return cf;
	}
	if (strcmp(ncf->cf_state_dir, cf->cf_state_dir) != 0) {
		log_warnx("%s: state_dir cannot change without a restart: "
		    "keeping the configuration in use", cf->cf_path);
		agent_config_free(ncf);
		return cf;
	}
	for (i = 0; i < ncf->cf_ncerts; i++) {
		for (j = 0; j < cf->cf_ncerts; j++)
			if (strcmp(ncf->cf_certs[i]->ac_name,
			    cf->cf_certs[j]->ac_name) == 0)
				ncf->cf_certs[i]->ac_st = cf->cf_certs[j]->ac_st;
		ncf->cf_certs[i]->ac_st.as_next = 0;
	}
	agent_config_free(cf);
	log_info("%s: new configuration with %zu certificate(s)", ncf->cf_path,
	    ncf->cf_ncerts);
	return ncf;
}

static int
agent_daemon(struct agent_config **cfp)
{
	struct sigaction sa;
	struct timespec ts;
	struct agent_config *cf;
	struct agent_cert *c;
	time_t now, wake;
	size_t i;
	int dirty;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = agent_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL) == -1 ||
	    sigaction(SIGINT, &sa, NULL) == -1 ||
	    sigaction(SIGHUP, &sa, NULL) == -1) {
		log_warn("sigaction");
		return 1;
	}
	sa.sa_handler = SIG_IGN;
	(void)sigaction(SIGPIPE, &sa, NULL);
	log_info("started with %zu certificate(s), state in %s",
	    (*cfp)->cf_ncerts, (*cfp)->cf_state_dir);
	while (!agent_quit) {
		if (agent_hup) {
			agent_hup = 0;
			*cfp = agent_reconfigure(*cfp);
		}
		cf = *cfp;
		dirty = 0;
		for (i = 0; i < cf->cf_ncerts && !agent_quit && !agent_hup;
		    i++) {
			c = cf->cf_certs[i];
			if (time(NULL) < c->ac_st.as_next)
				continue;
			agent_schedule(cf, c, agent_cycle(cf, c, 0),
			    time(NULL));
			dirty = 1;
		}
		if (dirty)
			agent_state_save(cf);
		if (agent_quit || agent_hup)
			continue;
		/* A bounded sleep: signals and the clock are looked at
		 * again within AGENT_TICK_MS. */
		now = time(NULL);
		wake = now + 1;
		for (i = 0; i < cf->cf_ncerts; i++)
			if (cf->cf_certs[i]->ac_st.as_next < wake)
				wake = cf->cf_certs[i]->ac_st.as_next;
		if (wake <= now)
			continue;
		ts.tv_sec = 0;
		ts.tv_nsec = AGENT_TICK_MS * 1000L * 1000L - 1;
		(void)nanosleep(&ts, NULL);
	}
	log_info("SIGTERM: stopping");
	agent_state_save(*cfp);
	return 0;
}

/* --- hsmca agent status ------------------------------------------------ */

static void
agent_status_print(const struct agent_config *cf, json_t *a)
{
	json_t *o, *rl;
	const char *name;
	char v[AGENT_ERR_MAX], t[64], when[64];
	size_t i, k;

	for (i = 0; i < cf->cf_ncerts; i++) {
		name = cf->cf_certs[i]->ac_name;
		o = NULL;
		json_array_foreach(a, k, o)
			if (agent_jstr(o, "name") != NULL &&
			    strcmp(agent_jstr(o, "name"), name) == 0)
				break;
		printf("%s%s\n", i > 0 ? "\n" : "", name);
		if (k == json_array_size(a)) {
			printf("  (no status yet)\n");
			continue;
		}
		agent_clean(agent_jstr(o, "serial"), v, sizeof(v));
		printf("  serial          %s\n", v[0] != '\0' ? v : "-");
		agent_clean(agent_jstr(o, "not_after"), v, sizeof(v));
		printf("  not after       %s\n", v[0] != '\0' ? v : "-");
		agent_clean(agent_jstr(o, "next_renewal"), v, sizeof(v));
		printf("  next renewal    %s\n", v[0] != '\0' ? v : "-");
		printf("  renewals        %lld ok, %lld failed\n",
		    (long long)agent_jint(o, "renewals_ok"),
		    (long long)agent_jint(o, "renewals_error"));
		printf("  failures        %lld in a row\n",
		    (long long)agent_jint(o, "consecutive_failures"));
		agent_clean(agent_jstr(o, "last_error"), v, sizeof(v));
		agent_clean(agent_jstr(o, "last_error_at"), t, sizeof(t));
		printf("  last error      %s%s%s\n", t[0] != '\0' ? t : "",
		    t[0] != '\0' ? " " : "", v[0] != '\0' ? v : "-");
		rl = json_object_get(o, "last_reload");
		agent_clean(agent_jstr(rl, "result"), v, sizeof(v));
		agent_clean(agent_jstr(rl, "at"), when, sizeof(when));
		if (v[0] == '\0')
			printf("  last reload     -\n");
		else
			printf("  last reload     %s %s: %s\n", when,
			    json_is_true(json_object_get(rl, "ok")) ? "ok" :
			    "FAILED", v);
		printf("  reload failures %lld\n",
		    (long long)agent_jint(o, "reload_failures"));
	}
}

static void
agent_status_usage(FILE *f)
{
	fprintf(f, "usage: hsmca agent status -c FILE [--json]\n"
	    "  shows what the agent last did for each certificate, from "
	    "state_dir/status.json\n");
}

static int
agent_status_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct agent_config *cf = NULL;
	const char *conf = NULL;
	char path[PATH_MAX], err[AGENT_ERR_MAX], *buf = NULL, *out = NULL;
	json_t *j = NULL, *a;
	size_t len = 0;
	int ch, json = 0, ret = 2;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			conf = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			agent_status_usage(stdout);
			return 0;
		default:
			agent_status_usage(stderr);
			return 2;
		}
	}
	if (conf == NULL || optind != argc) {
		agent_status_usage(stderr);
		return 2;
	}
	ret = 1;
	if ((cf = agent_config_load(conf)) == NULL)
		goto out;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", cf->cf_state_dir,
	    AGENT_STATUS_FILE) >= sizeof(path)) {
		log_warnx("state_dir: path too long");
		goto out;
	}
	if (agent_read_file(path, &buf, &len, err, sizeof(err)) != 0) {
		log_warnx("no status: %s (has the agent run?)", err);
		goto out;
	}
	if ((j = json_loadb(buf, len, 0, NULL)) == NULL ||
	    !json_is_array(a = json_object_get(j, "certificates"))) {
		log_warnx("%s: not the agent's status", path);
		goto out;
	}
	if (json) {
		if ((out = json_dumps(j, JSON_INDENT(2))) == NULL) {
			log_warnx("out of memory");
			goto out;
		}
		printf("%s\n", out);
	} else
		agent_status_print(cf, a);
	ret = 0;
 out:
	free(out);
	free(buf);
	json_decref(j);
	agent_config_free(cf);
	return ret;
}

/* --- hsmca agent ------------------------------------------------------- */

static void
agent_usage(FILE *f)
{
	fprintf(f, "usage: hsmca agent -c FILE [-d] [-v] [-n] [--once "
	    "[--force]]\n"
	    "       hsmca agent status -c FILE [--json]\n"
	    "  keeps the certificates of FILE enrolled and renewed\n"
	    "  -c FILE     the configuration ([agent] and one [cert NAME] "
	    "per certificate)\n"
	    "  -d          stay in the foreground and log to stderr (else "
	    "syslog)\n"
	    "  -v          log more\n"
	    "  -n          check the configuration and exit\n"
	    "  --once      do what is due now and exit: 0 success, 1 any "
	    "failure\n"
	    "  --force     with --once: renew every certificate now\n"
	    "  status      what the agent last did, from state_dir\n");
}

int
agent_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "once", no_argument, NULL, 'o' },
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct agent_config *cf = NULL;
	const char *conf = NULL;
	int ch, once = 0, force = 0, fg = 0, verbose = 0, check = 0;
	int lockfd = -1, ret = 2;

	if (argc >= 2 && strcmp(argv[1], "status") == 0)
		return agent_status_main(argc - 1, argv + 1);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:dnv", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			conf = optarg;
			break;
		case 'd':
			fg = 1;
			break;
		case 'n':
			check = 1;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'o':
			once = 1;
			break;
		case 'f':
			force = 1;
			break;
		case 'h':
			agent_usage(stdout);
			return 0;
		default:
			agent_usage(stderr);
			return 2;
		}
	}
	if (conf == NULL || optind != argc || (force && !once)) {
		if (conf == NULL)
			log_warnx("agent: -c FILE is needed");
		else if (force && !once)
			log_warnx("agent: --force goes with --once");
		agent_usage(stderr);
		return 2;
	}
	/* --once and -n talk to the terminal or cron's mail; the daemon
	 * to syslog unless -d. */
	log_init("hsmca agent", once || check || fg, verbose);
	if ((cf = agent_config_load(conf)) == NULL)
		return 1;
	if (check) {
		printf("%s: OK, %zu certificate(s)\n", conf, cf->cf_ncerts);
		ret = 0;
		goto out;
	}
	ret = 1;
	if ((lockfd = agent_lock(cf)) == -1)
		goto out;
	if (http_init() != 0) {
		log_warnx("libcurl could not be initialised");
		goto out;
	}
	agent_state_restore(cf);
	if (once)
		ret = agent_once(cf, force);
	else
		ret = agent_daemon(&cf);
	http_cleanup();
 out:
	if (lockfd != -1)
		close(lockfd);
	agent_config_free(cf);
	return ret;
}
