/*
 * hsmca-policyd configuration: one [policyd] section of an INI file read
 * with libinih.  Who may ask for what lives in the separate policy file
 * (rules.c), which SIGHUP reloads; this file says where things are.
 * Every error names file:line.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "log.h"
#include "policyd.h"
#include "rules.h"

#define DEFAULT_MAX_BODY	(64 * 1024)
#define DEFAULT_MAX_HEADERS	(16 * 1024)
#define DEFAULT_MAX_CONN	256
#define DEFAULT_CLIENT_TIMEOUT	30
#define DEFAULT_SIGNER_TIMEOUT	5000
#define DEFAULT_MAX_INFLIGHT	256
#define DEFAULT_TLS_TTL		(24 * 3600)
#define DEFAULT_CRL_VALIDITY	(24 * 3600)
#define DEFAULT_RECONCILE_AFTER	60
#define MAX_TLS_NAMES		16

struct config_parse {
	struct policyd_config	*cp_conf;
	const char		*cp_path;
	FILE			*cp_file;
	int			 cp_line;
	int			 cp_errors;
};

static void config_error(struct config_parse *, const char *, ...)
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
config_string(struct config_parse *cp, char **dst, const char *name,
    const char *value, int path)
{
	if (*dst != NULL) {
		config_error(cp, "%s given twice", name);
		return 0;
	}
	if (*value == '\0') {
		config_error(cp, "%s is empty", name);
		return 0;
	}
	if (path && value[0] != '/') {
		config_error(cp, "%s: '%s' is not an absolute path", name,
		    value);
		return 0;
	}
	if ((*dst = strdup(value)) == NULL)
		config_error(cp, "out of memory");
	return 0;
}

static int
config_number(struct config_parse *cp, const char *name, const char *value,
    long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' || v < min || v > max) {
		config_error(cp, "%s: '%s' is not a number from %ld to %ld",
		    name, value, min, max);
		return -1;
	}
	*out = v;
	return 0;
}

static int
config_duration(struct config_parse *cp, const char *name, const char *value,
    long *out)
{
	long v;

	if ((v = rules_parse_duration(value)) <= 0) {
		config_error(cp, "%s: '%s' is not a duration (a number and "
		    "one of s, m, h, d)", name, value);
		return -1;
	}
	*out = v;
	return 0;
}

/* "ADDR:PORT", ADDR an IPv4 literal or [IPv6]. */
static void
config_listen(struct config_parse *cp, const char *value)
{
	struct policyd_config *c = cp->cp_conf;
	const char *colon;
	long port;
	size_t alen;

	if (c->pc_listen_addr != NULL) {
		config_error(cp, "listen given twice");
		return;
	}
	if ((colon = strrchr(value, ':')) == NULL || colon == value) {
		config_error(cp, "listen: '%s' is not ADDRESS:PORT", value);
		return;
	}
	if (config_number(cp, "listen port", colon + 1, 0, 65535, &port) != 0)
		return;
	alen = (size_t)(colon - value);
	if (value[0] == '[') {
		if (alen < 3 || value[alen - 1] != ']') {
			config_error(cp, "listen: '%s': an IPv6 address goes "
			    "in brackets", value);
			return;
		}
		value++;
		alen -= 2;
	}
	if ((c->pc_listen_addr = strndup(value, alen)) == NULL)
		config_error(cp, "out of memory");
	c->pc_listen_port = (int)port;
}

static void
config_names(struct config_parse *cp, const char *value)
{
	struct policyd_config *c = cp->cp_conf;
	char *copy, *p, *tok, *save = NULL;

	if (c->pc_ntls_names != 0) {
		config_error(cp, "tls_names given twice");
		return;
	}
	if ((copy = strdup(value)) == NULL ||
	    (c->pc_tls_names = calloc(MAX_TLS_NAMES,
	    sizeof(*c->pc_tls_names))) == NULL) {
		free(copy);
		config_error(cp, "out of memory");
		return;
	}
	for (p = copy; (tok = strtok_r(p, ", \t", &save)) != NULL; p = NULL) {
		if (c->pc_ntls_names == MAX_TLS_NAMES) {
			config_error(cp, "tls_names: more than %d names",
			    MAX_TLS_NAMES);
			break;
		}
		if (strspn(tok, "abcdefghijklmnopqrstuvwxyz0123456789.-") !=
		    strlen(tok) || tok[0] == '.' || tok[0] == '-' ||
		    strlen(tok) > 253) {
			config_error(cp, "tls_names: '%s' is not a lower-case "
			    "DNS name", tok);
			continue;
		}
		if ((c->pc_tls_names[c->pc_ntls_names] = strdup(tok)) == NULL) {
			config_error(cp, "out of memory");
			break;
		}
		c->pc_ntls_names++;
	}
	free(copy);
}

static int
config_handler(void *arg, const char *section, const char *name,
    const char *value)
{
	struct config_parse *cp = arg;
	struct policyd_config *c = cp->cp_conf;
	long v;

	if (strcmp(section, "policyd") != 0) {
		config_error(cp, "unknown section [%s] (only [policyd])",
		    section);
		return 1;
	}
	if (name == NULL)
		return 1;
	if (strcmp(name, "listen") == 0)
		config_listen(cp, value);
	else if (strcmp(name, "signer") == 0) {
		if (strncmp(value, "ipc:///", 7) != 0)
			config_error(cp, "signer: '%s' is not an ipc:///PATH "
			    "URL", value);
		else
			config_string(cp, &c->pc_signer_url, name, value, 0);
	} else if (strcmp(name, "mac_key") == 0)
		config_string(cp, &c->pc_mac_key, name, value, 1);
	else if (strcmp(name, "store") == 0)
		config_string(cp, &c->pc_store, name, value, 0);
	else if (strcmp(name, "policy") == 0)
		config_string(cp, &c->pc_policy, name, value, 1);
	else if (strcmp(name, "audit_log") == 0)
		config_string(cp, &c->pc_audit_log, name, value, 1);
	else if (strcmp(name, "ca_bundle") == 0)
		config_string(cp, &c->pc_ca_bundle, name, value, 1);
	else if (strcmp(name, "tls_dir") == 0)
		config_string(cp, &c->pc_tls_dir, name, value, 1);
	else if (strcmp(name, "tls_key_name") == 0)
		config_string(cp, &c->pc_tls_key_name, name, value, 0);
	else if (strcmp(name, "tls_profile") == 0) {
		if (strcmp(value, "server") != 0 && strcmp(value, "peer") != 0)
			config_error(cp, "tls_profile: '%s' (server or peer)",
			    value);
		else
			config_string(cp, &c->pc_tls_profile, name, value, 0);
	} else if (strcmp(name, "tls_names") == 0)
		config_names(cp, value);
	else if (strcmp(name, "tls_ttl") == 0)
		config_duration(cp, name, value, &c->pc_tls_ttl);
	else if (strcmp(name, "crl_key") == 0)
		config_string(cp, &c->pc_crl_key, name, value, 0);
	else if (strcmp(name, "crl_validity") == 0)
		config_duration(cp, name, value, &c->pc_crl_validity);
	else if (strcmp(name, "reconcile_after") == 0)
		config_duration(cp, name, value, &c->pc_reconcile_after);
	else if (strcmp(name, "max_body") == 0) {
		if (config_number(cp, name, value, 1024, 1024 * 1024, &v) == 0)
			c->pc_max_body = (size_t)v;
	} else if (strcmp(name, "max_headers") == 0) {
		if (config_number(cp, name, value, 1024, 256 * 1024, &v) == 0)
			c->pc_max_headers = (size_t)v;
	} else if (strcmp(name, "max_connections") == 0) {
		if (config_number(cp, name, value, 1, 65536, &v) == 0)
			c->pc_max_connections = (int)v;
	} else if (strcmp(name, "client_timeout") == 0) {
		if (config_number(cp, name, value, 1, 3600, &v) == 0)
			c->pc_client_timeout = (int)v;
	} else if (strcmp(name, "signer_timeout") == 0) {
		if (config_number(cp, name, value, 100, 600000, &v) == 0)
			c->pc_signer_timeout = (unsigned int)v;
	} else if (strcmp(name, "max_inflight") == 0) {
		if (config_number(cp, name, value, 1, 4096, &v) == 0)
			c->pc_max_inflight = (unsigned int)v;
	} else
		config_error(cp, "unknown setting '%s'", name);
	return 1;
}

static void
config_check(struct config_parse *cp)
{
	struct policyd_config *c = cp->cp_conf;
	static const struct {
		const char	*name;
		size_t		 offset;
	} required[] = {
		{ "listen", offsetof(struct policyd_config, pc_listen_addr) },
		{ "signer", offsetof(struct policyd_config, pc_signer_url) },
		{ "mac_key", offsetof(struct policyd_config, pc_mac_key) },
		{ "store", offsetof(struct policyd_config, pc_store) },
		{ "policy", offsetof(struct policyd_config, pc_policy) },
		{ "ca_bundle", offsetof(struct policyd_config, pc_ca_bundle) },
		{ "tls_dir", offsetof(struct policyd_config, pc_tls_dir) },
		{ "tls_key_name",
		    offsetof(struct policyd_config, pc_tls_key_name) },
	};
	size_t i;

	for (i = 0; i < sizeof(required) / sizeof(required[0]); i++)
		if (*(char **)(void *)((char *)c + required[i].offset) ==
		    NULL) {
			log_warnx("%s: %s is missing", cp->cp_path,
			    required[i].name);
			cp->cp_errors++;
		}
	/* The listener ends a request its client_timeout after it came in,
	 * so the signer must be given up on first. */
	if (c->pc_signer_timeout >= (unsigned int)c->pc_client_timeout * 1000) {
		log_warnx("%s: signer_timeout (%u ms) must be shorter than "
		    "client_timeout (%d s)", cp->cp_path, c->pc_signer_timeout,
		    c->pc_client_timeout);
		cp->cp_errors++;
	}
	if (c->pc_ntls_names == 0) {
		log_warnx("%s: tls_names is missing (the DNS names clients "
		    "use to reach this daemon)", cp->cp_path);
		cp->cp_errors++;
	}
}

int
config_load(const char *path, struct policyd_config **out)
{
	struct config_parse cp;
	struct policyd_config *c;
	int ret;

	*out = NULL;
	memset(&cp, 0, sizeof(cp));
	cp.cp_path = path;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		log_warn("%s", path);
		return -1;
	}
	cp.cp_conf = c;
	if ((c->pc_path = strdup(path)) == NULL ||
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
	if (c->pc_tls_ttl == 0)
		c->pc_tls_ttl = DEFAULT_TLS_TTL;
	if (c->pc_crl_validity == 0)
		c->pc_crl_validity = DEFAULT_CRL_VALIDITY;
	if (c->pc_max_body == 0)
		c->pc_max_body = DEFAULT_MAX_BODY;
	if (c->pc_max_headers == 0)
		c->pc_max_headers = DEFAULT_MAX_HEADERS;
	if (c->pc_max_connections == 0)
		c->pc_max_connections = DEFAULT_MAX_CONN;
	if (c->pc_client_timeout == 0)
		c->pc_client_timeout = DEFAULT_CLIENT_TIMEOUT;
	if (c->pc_signer_timeout == 0)
		c->pc_signer_timeout = DEFAULT_SIGNER_TIMEOUT;
	if (c->pc_max_inflight == 0)
		c->pc_max_inflight = DEFAULT_MAX_INFLIGHT;
	if (c->pc_reconcile_after == 0)
		c->pc_reconcile_after = DEFAULT_RECONCILE_AFTER;
	config_check(&cp);
	if (cp.cp_errors != 0) {
		config_free(c);
		return -1;
	}
	if (c->pc_tls_profile == NULL &&
	    (c->pc_tls_profile = strdup("server")) == NULL) {
		config_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

void
config_free(struct policyd_config *c)
{
	size_t i;

	if (c == NULL)
		return;
	free(c->pc_path);
	free(c->pc_listen_addr);
	free(c->pc_signer_url);
	free(c->pc_mac_key);
	free(c->pc_store);
	free(c->pc_policy);
	free(c->pc_audit_log);
	free(c->pc_ca_bundle);
	free(c->pc_tls_dir);
	free(c->pc_tls_key_name);
	free(c->pc_tls_profile);
	for (i = 0; i < c->pc_ntls_names; i++)
		free(c->pc_tls_names[i]);
	free(c->pc_tls_names);
	free(c->pc_crl_key);
	free(c);
}
