/*
 * hsmca-signerd configuration: an INI file read with libinih.
 *
 *   [signer]            token, PIN, sockets, audit, sandbox, pool
 *   [key NAME]          one per CA key, with its hard limits (DESIGN.md
 *                       invariant 3)
 *
 * Every error names file:line.  Nothing has a default that widens what a
 * key may do: a key with no profiles, no algorithms or no names can sign
 * nothing.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "log.h"
#include "signerd.h"

#define DEFAULT_CHECKPOINT_EVERY	1000
#define DEFAULT_POOL_SIZE		4
#define DEFAULT_WORKERS			16
#define DEFAULT_QUEUE			256
#define DEFAULT_TIME_WINDOW		30
#define DEFAULT_BACKDATE		300
#define DEFAULT_MAX_CRL_VALIDITY	(7 * 86400)

static const char *const profile_names[PROFILE_COUNT] = {
	[PROFILE_SVID] = "svid",
	[PROFILE_SERVER] = "server",
	[PROFILE_CLIENT] = "client",
	[PROFILE_PEER] = "peer",
	[PROFILE_SUBCA] = "subca",
};

static const struct {
	const char	*name;
	unsigned int	 bits;
} alg_names[] = {
	{ "ec-p256", ALG_EC_P256 },
	{ "ec-p384", ALG_EC_P384 },
	{ "rsa-2048", ALG_RSA_2048 },
	{ "rsa-3072", ALG_RSA_3072 },
	{ "rsa-4096", ALG_RSA_4096 },
	{ "ed25519", ALG_ED25519 },
};

struct config_parse {
	struct signer_config	*cp_conf;
	const char		*cp_path;
	FILE			*cp_file;
	int			 cp_line;	/* the line inih is handling */
	int			 cp_errors;
	char			 cp_section[128];
	struct signer_key	*cp_key;
};

const char *
profile_name(enum profile_id id)
{
	if ((unsigned int)id >= PROFILE_COUNT)
		return "unknown";
	return profile_names[id];
}

int
profile_parse(const char *name, enum profile_id *out)
{
	int i;

	for (i = 0; i < PROFILE_COUNT; i++)
		if (strcmp(name, profile_names[i]) == 0) {
			*out = i;
			return 0;
		}
	return -1;
}

static void
config_error(struct config_parse *cp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
config_error(struct config_parse *cp, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warnx("%s:%d: %s", cp->cp_path, cp->cp_line, msg);
	cp->cp_errors++;
}

/* inih's reader: one line at a time, so that the handler knows its line. */
static char *
config_reader(char *buf, int size, void *stream)
{
	struct config_parse *cp = stream;
	char *s;

	if ((s = fgets(buf, size, cp->cp_file)) != NULL)
		cp->cp_line++;
	return s;
}

static int
config_strdup(struct config_parse *cp, char **dst, const char *value,
    const char *name)
{
	if (*dst != NULL) {
		config_error(cp, "%s given twice", name);
		return -1;
	}
	if (*value == '\0') {
		config_error(cp, "%s is empty", name);
		return -1;
	}
	if ((*dst = strdup(value)) == NULL) {
		config_error(cp, "out of memory");
		return -1;
	}
	return 0;
}

static int
config_path(struct config_parse *cp, char **dst, const char *value,
    const char *name)
{
	if (*value != '/') {
		config_error(cp, "%s must be an absolute path: '%s'", name,
		    value);
		return -1;
	}
	return config_strdup(cp, dst, value, name);
}

static int
config_uint(struct config_parse *cp, unsigned int *dst, const char *value,
    const char *name, unsigned long min, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(value, &end, 10);
	if (!isdigit((unsigned char)*value) || *end != '\0' || errno != 0 ||
	    v < min || v > max) {
		config_error(cp, "%s must be a number from %lu to %lu: '%s'",
		    name, min, max, value);
		return -1;
	}
	*dst = (unsigned int)v;
	return 0;
}

/* A duration: digits with an optional unit s, m, h or d. */
static int
config_duration(struct config_parse *cp, int64_t *dst, const char *value,
    const char *name, int64_t max)
{
	char *end;
	unsigned long long v;
	int64_t mult = 1;

	errno = 0;
	v = strtoull(value, &end, 10);
	if (!isdigit((unsigned char)*value) || errno != 0)
		goto bad;
	switch (*end) {
	case '\0':
	case 's':
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
		goto bad;
	}
	if (*end != '\0' && end[1] != '\0')
		goto bad;
	if (v == 0 || v > (unsigned long long)(max / mult))
		goto bad;
	*dst = (int64_t)v * mult;
	return 0;
 bad:
	config_error(cp, "%s must be a duration from 1s to %llds (digits "
	    "and s, m, h or d): '%s'", name, (long long)max, value);
	return -1;
}

static int
config_bool(struct config_parse *cp, int *dst, const char *value,
    const char *name)
{
	if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0)
		*dst = 1;
	else if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0)
		*dst = 0;
	else {
		config_error(cp, "%s must be yes or no: '%s'", name, value);
		return -1;
	}
	return 0;
}

/* Splits a list at spaces and commas; calls fn for each word. */
static int
config_words(struct config_parse *cp, const char *value, const char *name,
    int (*fn)(struct config_parse *, const char *, const char *, void *),
    void *arg)
{
	char word[256];
	const char *p = value;
	size_t n;
	int count = 0;

	while (*p != '\0') {
		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		n = strcspn(p, " ,\t");
		if (n >= sizeof(word)) {
			config_error(cp, "%s: an entry is longer than %zu "
			    "characters", name, sizeof(word) - 1);
			return -1;
		}
		memcpy(word, p, n);
		word[n] = '\0';
		p += n;
		if (fn(cp, word, name, arg) != 0)
			return -1;
		count++;
	}
	if (count == 0) {
		config_error(cp, "%s is empty", name);
		return -1;
	}
	return 0;
}

static int
config_add_profile(struct config_parse *cp, const char *word,
    const char *name, void *arg)
{
	unsigned int *mask = arg;
	enum profile_id id;

	if (profile_parse(word, &id) != 0) {
		config_error(cp, "%s: unknown profile '%s' (svid, server, "
		    "client, peer, subca)", name, word);
		return -1;
	}
	*mask |= 1u << id;
	return 0;
}

static int
config_add_alg(struct config_parse *cp, const char *word, const char *name,
    void *arg)
{
	unsigned int *mask = arg;
	size_t i;

	if (strcmp(word, "rsa") == 0) {
		*mask |= ALG_RSA_2048 | ALG_RSA_3072 | ALG_RSA_4096;
		return 0;
	}
	for (i = 0; i < sizeof(alg_names) / sizeof(alg_names[0]); i++)
		if (strcmp(word, alg_names[i].name) == 0) {
			*mask |= alg_names[i].bits;
			return 0;
		}
	config_error(cp, "%s: unknown key algorithm '%s' (ec-p256, ec-p384, "
	    "rsa, rsa-2048, rsa-3072, rsa-4096, ed25519)", name, word);
	return -1;
}

static int
config_add_object(struct config_parse *cp, const char *word,
    const char *name, void *arg)
{
	unsigned int *mask = arg;

	if (strcmp(word, "certificate") == 0)
		*mask |= OBJECT_CERTIFICATE;
	else if (strcmp(word, "crl") == 0)
		*mask |= OBJECT_CRL;
	else {
		config_error(cp, "%s: unknown object kind '%s' (certificate, "
		    "crl)", name, word);
		return -1;
	}
	return 0;
}

struct config_namelist {
	char	**names;
	size_t	 *count;
	int	   dns;		/* 1: DNS suffix, 0: trust domain */
};

static int
config_add_name(struct config_parse *cp, const char *word, const char *name,
    void *arg)
{
	struct config_namelist *nl = arg;
	size_t i, len = strlen(word);

	for (i = 0; i < len; i++)
		if (isupper((unsigned char)word[i])) {
			config_error(cp, "%s: '%s' must be lower case", name,
			    word);
			return -1;
		}
	if (!build_dns_name_ok(word, len)) {
		config_error(cp, "%s: '%s' is not a %s", name, word,
		    nl->dns ? "DNS name" : "trust domain name");
		return -1;
	}
	if (*nl->count >= CONFIG_MAX_NAMES) {
		config_error(cp, "%s: more than %d entries", name,
		    CONFIG_MAX_NAMES);
		return -1;
	}
	if ((nl->names[*nl->count] = strdup(word)) == NULL) {
		config_error(cp, "out of memory");
		return -1;
	}
	(*nl->count)++;
	return 0;
}

static int
config_add_ro(struct config_parse *cp, const char *word, const char *name,
    void *arg)
{
	struct signer_config *conf = arg;

	if (*word != '/') {
		config_error(cp, "%s: '%s' must be an absolute path", name,
		    word);
		return -1;
	}
	if (conf->sc_nro_paths >= CONFIG_MAX_NAMES) {
		config_error(cp, "%s: more than %d entries", name,
		    CONFIG_MAX_NAMES);
		return -1;
	}
	if ((conf->sc_ro_paths[conf->sc_nro_paths] = strdup(word)) == NULL) {
		config_error(cp, "out of memory");
		return -1;
	}
	conf->sc_nro_paths++;
	return 0;
}

static int
config_signer(struct config_parse *cp, const char *name, const char *value)
{
	struct signer_config *c = cp->cp_conf;

	if (strcmp(name, "module") == 0)
		return config_strdup(cp, &c->sc_module, value, name);
	if (strcmp(name, "token") == 0) {
		if (strncmp(value, "pkcs11:", 7) != 0) {
			config_error(cp, "token must be a pkcs11: URI");
			return -1;
		}
		return config_strdup(cp, &c->sc_token_uri, value, name);
	}
	if (strcmp(name, "pin_file") == 0)
		return config_path(cp, &c->sc_pin_file, value, name);
	if (strcmp(name, "mac_key") == 0)
		return config_path(cp, &c->sc_mac_key, value, name);
	if (strcmp(name, "socket_dir") == 0)
		return config_path(cp, &c->sc_socket_dir, value, name);
	if (strcmp(name, "audit_log") == 0)
		return config_path(cp, &c->sc_audit_log, value, name);
	if (strcmp(name, "audit_key") == 0)
		return config_path(cp, &c->sc_audit_key, value, name);
	if (strcmp(name, "token_dir") == 0)
		return config_path(cp, &c->sc_token_dir, value, name);
	if (strcmp(name, "read_only_paths") == 0)
		return config_words(cp, value, name, config_add_ro, c);
	if (strcmp(name, "user") == 0)
		return config_strdup(cp, &c->sc_user, value, name);
	if (strcmp(name, "client_group") == 0)
		return config_strdup(cp, &c->sc_client_group, value, name);
	if (strcmp(name, "checkpoint_every") == 0)
		return config_uint(cp, &c->sc_checkpoint_every, value, name, 1,
		    1000000);
	if (strcmp(name, "pool_size") == 0)
		return config_uint(cp, &c->sc_pool_size, value, name, 1, 64);
	if (strcmp(name, "workers") == 0)
		return config_uint(cp, &c->sc_workers, value, name, 1, 256);
	if (strcmp(name, "queue") == 0)
		return config_uint(cp, &c->sc_queue, value, name, 1, 65536);
	if (strcmp(name, "call_timeout") == 0)
		return config_uint(cp, &c->sc_call_timeout_ms, value, name,
		    100, 600000);
	if (strcmp(name, "time_window") == 0)
		return config_duration(cp, &c->sc_time_window, value, name,
		    600);
	if (strcmp(name, "backdate") == 0)
		return config_duration(cp, &c->sc_backdate, value, name,
		    86400);
	config_error(cp, "unknown setting '%s' in [signer]", name);
	return -1;
}

static int
config_key(struct config_parse *cp, struct signer_key *k, const char *name,
    const char *value)
{
	struct config_namelist nl;
	unsigned int limit;

	if (strcmp(name, "certificate") == 0)
		return config_path(cp, &k->sk_cert_path, value, name);
	if (strcmp(name, "chain") == 0)
		return config_path(cp, &k->sk_chain_path, value, name);
	if (strcmp(name, "objects") == 0)
		return config_words(cp, value, name, config_add_object,
		    &k->sk_objects);
	if (strcmp(name, "profiles") == 0)
		return config_words(cp, value, name, config_add_profile,
		    &k->sk_profiles);
	if (strcmp(name, "key_algorithms") == 0)
		return config_words(cp, value, name, config_add_alg,
		    &k->sk_algs);
	if (strcmp(name, "max_validity") == 0)
		return config_duration(cp, &k->sk_max_validity, value, name,
		    (int64_t)825 * 86400);
	if (strcmp(name, "max_ca_validity") == 0)
		return config_duration(cp, &k->sk_max_ca_validity, value, name,
		    (int64_t)3650 * 86400);
	if (strcmp(name, "max_crl_validity") == 0)
		return config_duration(cp, &k->sk_max_crl_validity, value,
		    name, (int64_t)366 * 86400);
	if (strcmp(name, "require_name_constraints") == 0)
		return config_bool(cp, &k->sk_require_nc, value, name);
	if (strcmp(name, "spiffe_trust_domains") == 0) {
		nl.names = k->sk_domains;
		nl.count = &k->sk_ndomains;
		nl.dns = 0;
		return config_words(cp, value, name, config_add_name, &nl);
	}
	if (strcmp(name, "dns_suffixes") == 0) {
		nl.names = k->sk_dns;
		nl.count = &k->sk_ndns;
		nl.dns = 1;
		return config_words(cp, value, name, config_add_name, &nl);
	}
	if (strcmp(name, "usage_limit") == 0) {
		if (config_uint(cp, &limit, value, name, 0, UINT_MAX) != 0)
			return -1;
		k->sk_usage_limit = limit;
		return 0;
	}
	if (strcmp(name, "crl_distribution_point") == 0) {
		if (strncmp(value, "http://", 7) != 0) {
			config_error(cp, "crl_distribution_point must be an "
			    "http:// URI (RFC 5280 4.2.1.13)");
			return -1;
		}
		return config_strdup(cp, &k->sk_crl_dp, value, name);
	}
	config_error(cp, "unknown setting '%s' in [key %s]", name, k->sk_name);
	return -1;
}

static int
config_new_key(struct config_parse *cp, const char *keyname)
{
	struct signer_config *c = cp->cp_conf;
	struct signer_key *k;
	size_t i, len = strlen(keyname);

	if (len == 0 || len > 64) {
		config_error(cp, "a key name is 1 to 64 characters");
		return -1;
	}
	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)keyname[i]) && keyname[i] != '-' &&
		    keyname[i] != '_' && keyname[i] != '.') {
			config_error(cp, "key name '%s': only letters, digits, "
			    "'-', '_' and '.'", keyname);
			return -1;
		}
	if (config_find_key(c, keyname) != NULL) {
		config_error(cp, "key '%s' defined twice", keyname);
		return -1;
	}
	if (c->sc_nkeys >= CONFIG_MAX_KEYS) {
		config_error(cp, "more than %d keys", CONFIG_MAX_KEYS);
		return -1;
	}
	if ((k = calloc(1, sizeof(*k))) == NULL ||
	    (k->sk_name = strdup(keyname)) == NULL) {
		free(k);
		config_error(cp, "out of memory");
		return -1;
	}
	k->sk_line = cp->cp_line;
	k->sk_max_crl_validity = DEFAULT_MAX_CRL_VALIDITY;
	k->sk_require_nc = 1;
	pthread_mutex_init(&k->sk_usage_lock, NULL);
	c->sc_keys[c->sc_nkeys++] = k;
	cp->cp_key = k;
	return 0;
}

static int
config_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct config_parse *cp = user;

	if (strcmp(section, cp->cp_section) != 0) {
		/* A new section (inih calls us once per setting only). */
		if (strlen(section) >= sizeof(cp->cp_section)) {
			config_error(cp, "section name too long");
			return 1;
		}
		snprintf(cp->cp_section, sizeof(cp->cp_section), "%s",
		    section);
		cp->cp_key = NULL;
		if (strncmp(section, "key ", 4) == 0)
			(void)config_new_key(cp, section + 4);
	}
	if (strcmp(section, "signer") == 0)
		(void)config_signer(cp, name, value);
	else if (strncmp(section, "key ", 4) == 0) {
		if (cp->cp_key != NULL)
			(void)config_key(cp, cp->cp_key, name, value);
	} else
		config_error(cp, "unknown section [%s] ([signer] or [key "
		    "NAME])", section);
	/* Keep going: report every error of the file, not just the first. */
	return 1;
}

static int
config_check(struct config_parse *cp)
{
	struct signer_config *c = cp->cp_conf;
	struct signer_key *k;
	size_t i;

#define REQUIRE(field, what)						\
	do {								\
		if (c->field == NULL) {					\
			log_warnx("%s: [signer] %s is missing",		\
			    cp->cp_path, what);				\
			cp->cp_errors++;				\
		}							\
	} while (0)
	REQUIRE(sc_module, "module");
	REQUIRE(sc_token_uri, "token");
	REQUIRE(sc_pin_file, "pin_file");
	REQUIRE(sc_mac_key, "mac_key");
	REQUIRE(sc_socket_dir, "socket_dir");
	REQUIRE(sc_audit_log, "audit_log");
	REQUIRE(sc_audit_key, "audit_key");
#undef REQUIRE
	if (c->sc_nkeys == 0) {
		log_warnx("%s: no [key NAME] section: nothing could be signed",
		    cp->cp_path);
		cp->cp_errors++;
	}
	if (c->sc_client_group != NULL && c->sc_user == NULL) {
		log_warnx("%s: client_group needs user (the signer's own "
		    "user owns the socket directory)", cp->cp_path);
		cp->cp_errors++;
	}
	for (i = 0; i < c->sc_nkeys; i++) {
		k = c->sc_keys[i];
#define KREQUIRE(cond, what)						\
		do {							\
			if (!(cond)) {					\
				log_warnx("%s:%d: [key %s] %s",		\
				    cp->cp_path, k->sk_line, k->sk_name,\
				    what);				\
				cp->cp_errors++;			\
			}						\
		} while (0)
		KREQUIRE(k->sk_cert_path != NULL, "certificate is missing");
		KREQUIRE(k->sk_objects != 0, "objects is missing "
		    "(certificate, crl)");
		if (k->sk_objects & OBJECT_CERTIFICATE) {
			KREQUIRE(k->sk_profiles != 0, "profiles is missing");
			KREQUIRE(k->sk_algs != 0, "key_algorithms is missing");
			KREQUIRE(k->sk_max_validity != 0,
			    "max_validity is missing");
			KREQUIRE(k->sk_ndomains + k->sk_ndns != 0,
			    "neither spiffe_trust_domains nor dns_suffixes: "
			    "no name could be certified");
		}
		if (k->sk_profiles & (1u << PROFILE_SVID))
			KREQUIRE(k->sk_ndomains != 0, "profile svid needs "
			    "spiffe_trust_domains");
		if (k->sk_profiles & (1u << PROFILE_SUBCA))
			KREQUIRE(k->sk_max_ca_validity != 0, "profile subca "
			    "needs max_ca_validity");
#undef KREQUIRE
	}
	return cp->cp_errors == 0 ? 0 : -1;
}

int
config_load(const char *path, struct signer_config **out)
{
	struct config_parse cp;
	struct signer_config *c;
	int ret;

	*out = NULL;
	memset(&cp, 0, sizeof(cp));
	cp.cp_path = path;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		log_warn("%s", path);
		return -1;
	}
	cp.cp_conf = c;
	if ((c->sc_path = strdup(path)) == NULL ||
	    (cp.cp_file = fopen(path, "re")) == NULL) {
		log_warn("%s", path);
		config_free(c);
		return -1;
	}
	ret = ini_parse_stream(config_reader, &cp, config_handler, &cp);
	fclose(cp.cp_file);
	if (ret != 0) {
		if (ret > 0)
			log_warnx("%s:%d: not a setting (NAME = VALUE), "
			    "section or comment", path, ret);
		else
			log_warnx("%s: cannot be read", path);
		cp.cp_errors++;
	}
	if (c->sc_checkpoint_every == 0)
		c->sc_checkpoint_every = DEFAULT_CHECKPOINT_EVERY;
	if (c->sc_pool_size == 0)
		c->sc_pool_size = DEFAULT_POOL_SIZE;
	if (c->sc_workers == 0)
		c->sc_workers = DEFAULT_WORKERS;
	if (c->sc_queue == 0)
		c->sc_queue = DEFAULT_QUEUE;
	if (c->sc_time_window == 0)
		c->sc_time_window = DEFAULT_TIME_WINDOW;
	if (c->sc_backdate == 0)
		c->sc_backdate = DEFAULT_BACKDATE;
	if (config_check(&cp) != 0) {
		config_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

struct signer_key *
config_find_key(struct signer_config *conf, const char *name)
{
	size_t i;

	for (i = 0; i < conf->sc_nkeys; i++)
		if (strcmp(conf->sc_keys[i]->sk_name, name) == 0)
			return conf->sc_keys[i];
	return NULL;
}

static void
config_key_free(struct signer_key *k)
{
	size_t i;

	free(k->sk_name);
	free(k->sk_cert_path);
	free(k->sk_chain_path);
	free(k->sk_crl_dp);
	for (i = 0; i < k->sk_ndomains; i++)
		free(k->sk_domains[i]);
	for (i = 0; i < k->sk_ndns; i++)
		free(k->sk_dns[i]);
	X509_free(k->sk_cert);
	sk_X509_pop_free(k->sk_chain, X509_free);
	EVP_PKEY_free(k->sk_pub);
	token_key_free(k->sk_key);
	X509_NAME_free(k->sk_issuer);
	ASN1_OCTET_STRING_free(k->sk_keyid);
	X509_ALGOR_free(k->sk_sigalg);
	pthread_mutex_destroy(&k->sk_usage_lock);
	free(k);
}

void
config_free(struct signer_config *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < c->sc_nkeys; i++)
		config_key_free(c->sc_keys[i]);
	for (i = 0; i < c->sc_nro_paths; i++)
		free(c->sc_ro_paths[i]);
	free(c->sc_path);
	free(c->sc_module);
	free(c->sc_token_uri);
	free(c->sc_pin_file);
	free(c->sc_mac_key);
	free(c->sc_socket_dir);
	free(c->sc_audit_log);
	free(c->sc_audit_key);
	free(c->sc_user);
	free(c->sc_client_group);
	free(c->sc_token_dir);
	free(c);
}
