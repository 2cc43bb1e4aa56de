/*
 * hsmca ceremony: the CA's keys are born in the token and the root and
 * issuing certificates are signed there.  Nothing is overwritten: every
 * output file and every key label must be new.
 */
#include "config.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "cli.h"
#include "log.h"
#include "token.h"

#define CEREMONY_MAX_CONSTRAINTS	32
#define CEREMONY_MAX_DAYS		(100 * 366)

struct ceremony {
	const char	*module;
	const char	*token_uri;
	const char	*pin_file;
	int		 pin_fd;
	const char	*out_dir;
	const char	*label_prefix;
	const char	*root_key;
	const char	*intermediate_key;
	const char	*audit_key;
	const char	*root_subject;
	const char	*intermediate_subject;
	long		 root_days;
	long		 intermediate_days;
	const char	*permitted_dns[CEREMONY_MAX_CONSTRAINTS];
	int		 npermitted_dns;
	const char	*permitted_uri[CEREMONY_MAX_CONSTRAINTS];
	int		 npermitted_uri;
	/* Strings from a config file, freed at exit. */
	char		*owned[64 + 2 * CEREMONY_MAX_CONSTRAINTS];
	int		 nowned;
	const char	*config_path;
};

enum {
	OPT_MODULE = 256, OPT_TOKEN, OPT_PIN_FILE, OPT_OUT, OPT_PREFIX,
	OPT_ROOT_KEY, OPT_INT_KEY, OPT_AUDIT_KEY, OPT_ROOT_SUBJECT,
	OPT_INT_SUBJECT, OPT_ROOT_DAYS, OPT_INT_DAYS, OPT_PERMIT_DNS,
	OPT_PERMIT_URI, OPT_CONFIG, OPT_HELP, OPT_PIN_FD,
};

static const struct option ceremony_options[] = {
	{ "module",		required_argument, NULL, OPT_MODULE },
	{ "token",		required_argument, NULL, OPT_TOKEN },
	{ "pin-file",		required_argument, NULL, OPT_PIN_FILE },
	{ "pin-fd",		required_argument, NULL, OPT_PIN_FD },
	{ "out",		required_argument, NULL, OPT_OUT },
	{ "label-prefix",	required_argument, NULL, OPT_PREFIX },
	{ "root-key",		required_argument, NULL, OPT_ROOT_KEY },
	{ "intermediate-key",	required_argument, NULL, OPT_INT_KEY },
	{ "audit-key",		required_argument, NULL, OPT_AUDIT_KEY },
	{ "root-subject",	required_argument, NULL, OPT_ROOT_SUBJECT },
	{ "intermediate-subject", required_argument, NULL, OPT_INT_SUBJECT },
	{ "root-days",		required_argument, NULL, OPT_ROOT_DAYS },
	{ "intermediate-days",	required_argument, NULL, OPT_INT_DAYS },
	{ "permitted-dns",	required_argument, NULL, OPT_PERMIT_DNS },
	{ "permitted-uri-domain", required_argument, NULL, OPT_PERMIT_URI },
	{ "config",		required_argument, NULL, OPT_CONFIG },
	{ "help",		no_argument,	   NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 }
};

static void
ceremony_usage(FILE *f)
{
	fprintf(f,
"usage: hsmca ceremony --token URI --pin-file FILE|--pin-fd N [options]\n"
"\n"
"Generates in the token a root CA key, an issuing intermediate key and an\n"
"audit-checkpoint key; writes the self-signed root and the intermediate\n"
"(path length 0) it signs, and prints their SHA-256 fingerprints.\n"
"\n"
"  --module PATH|NAME          PKCS#11 module file or p11-kit name [softhsm2]\n"
"  --token URI                 pkcs11: URI naming exactly one token\n"
"  --pin-file FILE             user PIN, mode 0600, one line\n"
"  --pin-fd N                  read the user PIN from descriptor N instead\n"
"  --out DIR                   where the PEM files go [.]\n"
"  --label-prefix P            key labels P-root, P-intermediate, P-audit [hsmca]\n"
"  --root-key TYPE             ec-p256 ec-p384 rsa-2048 rsa-3072 rsa-4096 [ec-p384]\n"
"  --intermediate-key TYPE     [ec-p256]\n"
"  --audit-key TYPE            also ed25519 [ec-p256]\n"
"  --root-subject DN           /CN=.../O=... [/CN=hsmca Root CA]\n"
"  --intermediate-subject DN   [/CN=hsmca Issuing CA]\n"
"  --root-days N               [3650]\n"
"  --intermediate-days N       [1095]\n"
"  --permitted-dns NAME        name constraint on the intermediate (repeatable)\n"
"  --permitted-uri-domain D    URI name constraint, e.g. a SPIFFE trust domain\n"
"  --config FILE               the same settings as key = value lines\n"
"\n"
"Writes root.pem, intermediate.pem, chain.pem and audit-key.pem; refuses to\n"
"overwrite any file or reuse any key label.\n");
}

static int
ceremony_set(struct ceremony *c, int opt, const char *value, char *errbuf,
    size_t errlen)
{
	const char *errstr = NULL;
	long long days;

	switch (opt) {
	case OPT_MODULE:	c->module = value; break;
	case OPT_TOKEN:		c->token_uri = value; break;
	case OPT_PIN_FILE:	c->pin_file = value; break;
	case OPT_PIN_FD:
		c->pin_fd = (int)cli_strtonum(value, 0, INT_MAX, &errstr);
		if (errstr != NULL) {
			snprintf(errbuf, errlen, "descriptor \"%s\" is %s",
			    value, errstr);
			return -1;
		}
		break;
	case OPT_OUT:		c->out_dir = value; break;
	case OPT_PREFIX:	c->label_prefix = value; break;
	case OPT_ROOT_KEY:	c->root_key = value; break;
	case OPT_INT_KEY:	c->intermediate_key = value; break;
	case OPT_AUDIT_KEY:	c->audit_key = value; break;
	case OPT_ROOT_SUBJECT:	c->root_subject = value; break;
	case OPT_INT_SUBJECT:	c->intermediate_subject = value; break;
	case OPT_ROOT_DAYS:
	case OPT_INT_DAYS:
		days = cli_strtonum(value, 1, CEREMONY_MAX_DAYS, &errstr);
		if (errstr != NULL) {
			snprintf(errbuf, errlen, "days \"%s\" is %s", value,
			    errstr);
			return -1;
		}
		if (opt == OPT_ROOT_DAYS)
			c->root_days = (long)days;
		else
			c->intermediate_days = (long)days;
		break;
	case OPT_PERMIT_DNS:
		if (c->npermitted_dns == CEREMONY_MAX_CONSTRAINTS) {
			snprintf(errbuf, errlen, "more than %d DNS constraints",
			    CEREMONY_MAX_CONSTRAINTS);
			return -1;
		}
		c->permitted_dns[c->npermitted_dns++] = value;
		break;
	case OPT_PERMIT_URI:
		if (c->npermitted_uri == CEREMONY_MAX_CONSTRAINTS) {
			snprintf(errbuf, errlen, "more than %d URI constraints",
			    CEREMONY_MAX_CONSTRAINTS);
			return -1;
		}
		c->permitted_uri[c->npermitted_uri++] = value;
		break;
	default:
		snprintf(errbuf, errlen, "unknown setting");
		return -1;
	}
	return 0;
}

static int
ceremony_ini_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct ceremony *c = user;
	const struct option *o;
	char errbuf[256], *copy;

	if (section[0] != '\0' && strcmp(section, "ceremony") != 0) {
		log_warnx("%s: unknown section [%s]", c->config_path, section);
		return 0;
	}
	for (o = ceremony_options; o->name != NULL; o++) {
		if (strcmp(o->name, name) == 0 && o->has_arg &&
		    o->val != OPT_CONFIG)
			break;
	}
	if (o->name == NULL) {
		log_warnx("%s: unknown setting \"%s\"", c->config_path, name);
		return 0;
	}
	if (c->nowned == (int)(sizeof(c->owned) / sizeof(c->owned[0])) ||
	    (copy = strdup(value)) == NULL) {
		log_warnx("%s: too many settings", c->config_path);
		return 0;
	}
	c->owned[c->nowned++] = copy;
	if (ceremony_set(c, o->val, copy, errbuf, sizeof(errbuf)) != 0) {
		log_warnx("%s: %s: %s", c->config_path, name, errbuf);
		return 0;
	}
	return 1;
}

/* "/CN=x/O=y", with "\/" for a slash inside a value. */
static X509_NAME *
ceremony_parse_dn(const char *dn)
{
	X509_NAME *name;
	char buf[1024], *field, *value;
	const char *p = dn;
	size_t len;

	if (dn[0] != '/' || (name = X509_NAME_new()) == NULL)
		return NULL;
	p++;
	while (*p != '\0') {
		len = 0;
		while (*p != '\0' && *p != '/') {
			if (*p == '\\' && p[1] != '\0')
				p++;
			if (len == sizeof(buf) - 1)
				goto bad;
			buf[len++] = *p++;
		}
		buf[len] = '\0';
		if (*p == '/')
			p++;
		field = buf;
		if ((value = strchr(field, '=')) == NULL || value == field ||
		    value[1] == '\0')
			goto bad;
		*value++ = '\0';
		if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
		    (unsigned char *)value, -1, -1, 0) != 1)
			goto bad;
	}
	if (X509_NAME_entry_count(name) == 0)
		goto bad;
	return name;
 bad:
	X509_NAME_free(name);
	return NULL;
}

static const EVP_MD *
ceremony_md(EVP_PKEY *pub)
{
	return EVP_PKEY_get_bits(pub) == 384 &&
	    EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC ? EVP_sha384() :
	    EVP_sha256();
}

static int
ceremony_add_ext(X509 *x, int nid, void *value, int critical)
{
	return X509_add1_ext_i2d(x, nid, value, critical, X509V3_ADD_REPLACE) == 1;
}

/*
 * Builds a CA certificate from structures: basicConstraints and keyUsage
 * critical, SKI by RFC 5280 method 1, AKI from the issuer's SKI.
 */
static X509 *
ceremony_build(X509_NAME *subject, EVP_PKEY *pub, X509 *issuer,
    X509_NAME *issuer_name, long days, long pathlen, const struct ceremony *c)
{
	X509 *x = NULL;
	BIGNUM *bn = NULL;
	ASN1_INTEGER *serial = NULL;
	BASIC_CONSTRAINTS *bc = NULL;
	ASN1_BIT_STRING *ku = NULL;
	ASN1_OCTET_STRING *ski = NULL;
	AUTHORITY_KEYID *akid = NULL;
	NAME_CONSTRAINTS *nc = NULL;
	GENERAL_SUBTREE *st;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	int i, ok = 0;

	if ((x = X509_new()) == NULL || X509_set_version(x, X509_VERSION_3) != 1)
		goto out;
	/* 127 CSPRNG bits: positive, 16 octets at most. */
	if ((bn = BN_new()) == NULL ||
	    BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
	    BN_is_zero(bn) || (serial = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
	    X509_set_serialNumber(x, serial) != 1)
		goto out;
	if (X509_set_subject_name(x, subject) != 1 ||
	    X509_set_issuer_name(x, issuer_name) != 1 ||
	    X509_set_pubkey(x, pub) != 1)
		goto out;
	/* Backdated a little for clocks behind ours. */
	if (X509_gmtime_adj(X509_getm_notBefore(x), -300) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) == NULL)
		goto out;
	if (issuer != NULL &&
	    ASN1_TIME_compare(X509_get0_notAfter(x),
	    X509_get0_notAfter(issuer)) > 0) {
		log_warnx("the intermediate would outlive the root; shorten "
		    "--intermediate-days");
		goto out;
	}

	if ((bc = BASIC_CONSTRAINTS_new()) == NULL)
		goto out;
	bc->ca = 1;
	if (pathlen >= 0 && ((bc->pathlen = ASN1_INTEGER_new()) == NULL ||
	    ASN1_INTEGER_set(bc->pathlen, pathlen) != 1))
		goto out;
	if (!ceremony_add_ext(x, NID_basic_constraints, bc, 1))
		goto out;

	if ((ku = ASN1_BIT_STRING_new()) == NULL ||
	    ASN1_BIT_STRING_set_bit(ku, 5, 1) != 1 ||	/* keyCertSign */
	    ASN1_BIT_STRING_set_bit(ku, 6, 1) != 1 ||	/* cRLSign */
	    !ceremony_add_ext(x, NID_key_usage, ku, 1))
		goto out;

	if (X509_pubkey_digest(x, EVP_sha1(), md, &mdlen) != 1 ||
	    (ski = ASN1_OCTET_STRING_new()) == NULL ||
	    ASN1_OCTET_STRING_set(ski, md, (int)mdlen) != 1 ||
	    !ceremony_add_ext(x, NID_subject_key_identifier, ski, 0))
		goto out;

	if ((akid = AUTHORITY_KEYID_new()) == NULL)
		goto out;
	if (issuer != NULL) {
		const ASN1_OCTET_STRING *iski = X509_get0_subject_key_id(issuer);

		if (iski == NULL ||
		    (akid->keyid = ASN1_OCTET_STRING_dup(iski)) == NULL)
			goto out;
	} else if ((akid->keyid = ASN1_OCTET_STRING_dup(ski)) == NULL)
		goto out;
	if (!ceremony_add_ext(x, NID_authority_key_identifier, akid, 0))
		goto out;

	if (c != NULL && c->npermitted_dns + c->npermitted_uri > 0) {
		if ((nc = NAME_CONSTRAINTS_new()) == NULL ||
		    (nc->permittedSubtrees = sk_GENERAL_SUBTREE_new_null()) ==
		    NULL)
			goto out;
		for (i = 0; i < c->npermitted_dns + c->npermitted_uri; i++) {
			int dns = i < c->npermitted_dns;
			const char *v = dns ? c->permitted_dns[i] :
			    c->permitted_uri[i - c->npermitted_dns];
			ASN1_IA5STRING *ia5;

			if ((st = GENERAL_SUBTREE_new()) == NULL)
				goto out;
			if (sk_GENERAL_SUBTREE_push(nc->permittedSubtrees,
			    st) == 0) {
				GENERAL_SUBTREE_free(st);
				goto out;
			}
			if ((ia5 = ASN1_IA5STRING_new()) == NULL ||
			    ASN1_STRING_set(ia5, v, -1) != 1) {
				ASN1_IA5STRING_free(ia5);
				goto out;
			}
			GENERAL_NAME_set0_value(st->base, dns ? GEN_DNS :
			    GEN_URI, ia5);
		}
		/* RFC 5280 4.2.1.10: name constraints MUST be critical. */
		if (!ceremony_add_ext(x, NID_name_constraints, nc, 1))
			goto out;
	}
	ok = 1;
 out:
	BN_free(bn);
	ASN1_INTEGER_free(serial);
	BASIC_CONSTRAINTS_free(bc);
	ASN1_BIT_STRING_free(ku);
	ASN1_OCTET_STRING_free(ski);
	AUTHORITY_KEYID_free(akid);
	NAME_CONSTRAINTS_free(nc);
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Signs with the token key, then proves the result with the public key. */
static int
ceremony_sign(X509 *x, struct token_key *signer)
{
	EVP_PKEY *pkey = NULL;
	int ret;

	if ((ret = token_key_evp(signer, &pkey)) != 0) {
		log_warnx("key %s: %s: %s", token_key_label(signer),
		    token_strerror(ret), token_error_detail());
		return -1;
	}
	ret = X509_sign(x, pkey, ceremony_md(token_key_public(signer))) > 0 &&
	    X509_verify(x, token_key_public(signer)) == 1 ? 0 : -1;
	if (ret != 0)
		log_warnx("signing with %s failed: %s (%s)",
		    token_key_label(signer), token_error_detail(),
		    ERR_reason_error_string(ERR_peek_last_error()));
	EVP_PKEY_free(pkey);
	return ret;
}

static int
ceremony_path(char *buf, size_t len, const char *dir, const char *name)
{
	if ((size_t)snprintf(buf, len, "%s/%s", dir, name) >= len) {
		log_warnx("%s/%s: path too long", dir, name);
		return -1;
	}
	return 0;
}

/* Creates a new file (never replacing one) holding the given certificates
 * or public key as PEM, flushed to disk. */
static int
ceremony_write(const char *path, X509 *a, X509 *b, EVP_PKEY *pub)
{
	FILE *f;
	int fd, ok;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0644)) == -1) {
		log_warn("%s", path);
		return -1;
	}
	if ((f = fdopen(fd, "w")) == NULL) {
		log_warn("%s", path);
		close(fd);
		return -1;
	}
	ok = (a == NULL || PEM_write_X509(f, a) == 1) &&
	    (b == NULL || PEM_write_X509(f, b) == 1) &&
	    (pub == NULL || PEM_write_PUBKEY(f, pub) == 1) &&
	    fflush(f) == 0 && fsync(fileno(f)) == 0;
	if (fclose(f) != 0)
		ok = 0;
	if (!ok) {
		log_warnx("%s: write failed", path);
		return -1;
	}
	return 0;
}

static void
ceremony_fingerprint(const char *what, X509 *x, EVP_PKEY *pub)
{
	unsigned char md[EVP_MAX_MD_SIZE], *der = NULL;
	unsigned int len = 0, i;
	int dlen;

	if (x != NULL)
		X509_digest(x, EVP_sha256(), md, &len);
	else if ((dlen = i2d_PUBKEY(pub, &der)) > 0) {
		EVP_Digest(der, (size_t)dlen, md, &len, EVP_sha256(), NULL);
		OPENSSL_free(der);
	}
	printf("%-13s SHA256 Fingerprint=", what);
	for (i = 0; i < len; i++)
		printf("%02X%s", md[i], i + 1 < len ? ":" : "\n");
}

static int
ceremony_generate(struct token *tok, const char *typename, const char *prefix,
    const char *role, struct token_key **out)
{
	enum token_keytype type;
	char label[160];
	int ret;

	if ((ret = token_keytype_parse(typename, &type)) != 0) {
		log_warnx("%s key: %s", role, token_error_detail());
		return -1;
	}
	snprintf(label, sizeof(label), "%s-%s", prefix, role);
	if ((ret = token_key_generate(tok, type, label, out)) != 0) {
		log_warnx("generating %s key \"%s\": %s: %s", role, label,
		    token_strerror(ret), token_error_detail());
		return -1;
	}
	printf("%-13s key generated in the token: label %s, id %s, %s\n", role,
	    label, token_key_id_hex(*out), typename);
	return 0;
}

int
ceremony_main(int argc, char **argv)
{
	struct ceremony c;
	struct token_config tc;
	struct token *tok = NULL;
	struct token_key *root = NULL, *inter = NULL, *audit = NULL;
	struct secret *pin = NULL;
	X509_NAME *rootdn = NULL, *interdn = NULL;
	X509 *rootcert = NULL, *intercert = NULL;
	char paths[4][PATH_MAX], errbuf[256];
	static const char *names[4] = {
		"root.pem", "intermediate.pem", "chain.pem", "audit-key.pem"
	};
	enum token_keytype type;
	struct stat st;
	int ch, i, ret, status = 1, line;

	memset(&c, 0, sizeof(c));
	c.pin_fd = -1;
	c.module = "softhsm2";
	c.out_dir = ".";
	c.label_prefix = "hsmca";
	c.root_key = "ec-p384";
	c.intermediate_key = "ec-p256";
	c.audit_key = "ec-p256";
	c.root_subject = "/CN=hsmca Root CA";
	c.intermediate_subject = "/CN=hsmca Issuing CA";
	c.root_days = 3650;
	c.intermediate_days = 1095;

	/* The config file first, so that options given with it win. */
	for (i = 1; i < argc - 1; i++) {
		if (strcmp(argv[i], "--config") == 0) {
			c.config_path = argv[i + 1];
			if ((line = ini_parse(c.config_path,
			    ceremony_ini_handler, &c)) != 0) {
				if (line < 0)
					log_warnx("%s: cannot read",
					    c.config_path);
				else
					log_warnx("%s:%d: bad line",
					    c.config_path, line);
				goto out;
			}
		}
	}
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", ceremony_options, NULL)) != -1) {
		switch (ch) {
		case OPT_HELP:
			ceremony_usage(stdout);
			status = 0;
			goto out;
		case OPT_CONFIG:
			break;
		case '?':
			ceremony_usage(stderr);
			goto out;
		default:
			if (ceremony_set(&c, ch, optarg, errbuf,
			    sizeof(errbuf)) != 0) {
				log_warnx("%s", errbuf);
				goto out;
			}
		}
	}
	if (optind != argc) {
		log_warnx("unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	if (c.token_uri == NULL || (c.pin_file == NULL) == (c.pin_fd < 0)) {
		log_warnx("--token and one of --pin-file or --pin-fd are "
		    "required");
		ceremony_usage(stderr);
		goto out;
	}
	if (token_keytype_parse(c.root_key, &type) != 0 ||
	    type == TOKEN_KEY_ED25519 ||
	    token_keytype_parse(c.intermediate_key, &type) != 0 ||
	    type == TOKEN_KEY_ED25519 ||
	    token_keytype_parse(c.audit_key, &type) != 0) {
		log_warnx("CA keys are ec-p256, ec-p384 or rsa-2048/3072/4096 "
		    "(Ed25519 only for the audit key): %s",
		    token_error_detail());
		goto out;
	}
	if ((rootdn = ceremony_parse_dn(c.root_subject)) == NULL ||
	    (interdn = ceremony_parse_dn(c.intermediate_subject)) == NULL) {
		log_warnx("a subject is not of the form /CN=name/O=org");
		goto out;
	}
	if (X509_NAME_cmp(rootdn, interdn) == 0) {
		log_warnx("root and intermediate need different subjects");
		goto out;
	}
	if (c.intermediate_days > c.root_days) {
		log_warnx("the intermediate (%ld days) would outlive the root "
		    "(%ld days); shorten --intermediate-days",
		    c.intermediate_days, c.root_days);
		goto out;
	}
	if (stat(c.out_dir, &st) == -1 || !S_ISDIR(st.st_mode)) {
		log_warnx("%s: not a directory", c.out_dir);
		goto out;
	}
	for (i = 0; i < 4; i++) {
		if (ceremony_path(paths[i], sizeof(paths[i]), c.out_dir,
		    names[i]) != 0)
			goto out;
		if (lstat(paths[i], &st) == 0 || errno != ENOENT) {
			log_warnx("%s exists; the ceremony never overwrites",
			    paths[i]);
			goto out;
		}
	}

	if ((ret = c.pin_file != NULL ? secret_read_file(c.pin_file, &pin) :
	    secret_read_fd(c.pin_fd, "PIN descriptor", &pin)) != 0) {
		log_warnx("PIN: %s", token_error_detail());
		goto out;
	}
	memset(&tc, 0, sizeof(tc));
	tc.module = c.module;
	tc.uri = c.token_uri;
	if ((ret = token_open(&tc, &tok)) != 0) {
		log_warnx("%s: %s", token_strerror(ret), token_error_detail());
		goto out;
	}
	ret = token_login(tok, pin);
	pin = NULL;
	if (ret != 0) {
		log_warnx("login: %s: %s", token_strerror(ret),
		    token_error_detail());
		goto out;
	}
	/* All three labels must be free before any key is made. */
	{
		const char *roles[3] = { "root", "intermediate", "audit" };
		char uri[512];
		struct token_key *k;

		for (i = 0; i < 3; i++) {
			snprintf(uri, sizeof(uri), "pkcs11:object=%s-%s",
			    c.label_prefix, roles[i]);
			ret = token_key_find(tok, uri, &k);
			if (ret == 0)
				token_key_free(k);
			if (ret != TOKEN_ERR_NO_KEY) {
				log_warnx("key label %s-%s is already used in "
				    "the token", c.label_prefix, roles[i]);
				goto out;
			}
		}
	}
	if (ceremony_generate(tok, c.root_key, c.label_prefix, "root",
	    &root) != 0 ||
	    ceremony_generate(tok, c.intermediate_key, c.label_prefix,
	    "intermediate", &inter) != 0 ||
	    ceremony_generate(tok, c.audit_key, c.label_prefix, "audit",
	    &audit) != 0)
		goto out;

	if ((rootcert = ceremony_build(rootdn, token_key_public(root), NULL,
	    rootdn, c.root_days, -1, NULL)) == NULL ||
	    ceremony_sign(rootcert, root) != 0) {
		log_warnx("root certificate not made");
		goto out;
	}
	if ((intercert = ceremony_build(interdn, token_key_public(inter),
	    rootcert, rootdn, c.intermediate_days, 0, &c)) == NULL || ceremony_sign(intercert, root) != 0) {
		log_warnx("intermediate certificate not made");
		goto out;
	}
	if (ceremony_write(paths[0], rootcert, NULL, NULL) != 0 ||
	    ceremony_write(paths[1], intercert, NULL, NULL) != 0 ||
	    ceremony_write(paths[2], intercert, rootcert, NULL) != 0 ||
	    ceremony_write(paths[3], NULL, NULL, token_key_public(audit)) != 0)
		goto out;
	ceremony_fingerprint("root", rootcert, NULL);
	ceremony_fingerprint("intermediate", intercert, NULL);
	ceremony_fingerprint("audit key", NULL, token_key_public(audit));
	printf("wrote %s, %s, %s, %s\n", paths[0], paths[1], paths[2],
	    paths[3]);
	status = 0;
 out:
	secret_free(pin);
	token_key_free(root);
	token_key_free(inter);
	token_key_free(audit);
	token_close(tok);
	X509_free(rootcert);
	X509_free(intercert);
	X509_NAME_free(rootdn);
	X509_NAME_free(interdn);
	for (i = 0; i < c.nowned; i++)
		free(c.owned[i]);
	return status;
}
