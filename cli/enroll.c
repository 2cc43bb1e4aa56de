/*
 * hsmca enroll, renew, revoke, inventory: the policy daemon's clients.
 * The key is made here and never leaves the machine; the CSR carries
 * only the names, and the policy daemon decides the rest.  Files are
 * replaced atomically (temporary file in the same directory, fsync,
 * rename, fsync of the directory), the key first and the certificate
 * last, and a key file is never readable by others, not even for a
 * moment.
 */
#include "config.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli.h"
#include "rules.h"
#include "token.h"

#define CLIENT_MAX_NAMES	64	/* of each kind, as the server's CSR limit */
#define CLIENT_MAX_NAME		2048
#define CLIENT_TOKEN_MAX	512
#define CLIENT_SERVER_MAX	2048
#define CLIENT_FILE_MAX		(256 * 1024)	/* a key or certificate file */
#define CLIENT_CHAIN_MAX	8		/* certificates in a chain */
#define CLIENT_SERIAL_MAX	40

enum client_opt {
	O_SERVER = 256, O_CA_BUNDLE, O_TOKEN_FILE, O_PROFILE, O_SPIFFE_ID,
	O_DNS, O_TTL, O_KEY_TYPE, O_KEY, O_CERT, O_CHAIN, O_RESOLVE,
	O_REUSE_KEY, O_REASON, O_JSON, O_STATUS, O_IDENTITY, O_EXPIRING,
	O_HELP
};

#define OPT_ARG(n, id)	{ n, required_argument, NULL, id }
#define OPT_FLAG(n, id)	{ n, no_argument, NULL, id }
#define OPT_COMMON \
	OPT_ARG("server", O_SERVER), OPT_ARG("ca-bundle", O_CA_BUNDLE), \
	OPT_ARG("resolve", O_RESOLVE), OPT_FLAG("help", O_HELP)

struct client_names {
	char		*cn_dns[CLIENT_MAX_NAMES];
	size_t		 cn_ndns;
	char		*cn_uris[CLIENT_MAX_NAMES];
	size_t		 cn_nuris;
};

struct client {
	const char		*cl_cmd;
	void			(*cl_usage)(FILE *);
	struct http_options	 cl_http;
	char			*cl_server;
	const char		*cl_token_file;
	const char		*cl_profile;
	const char		*cl_ttl;
	const char		*cl_key_type;
	const char		*cl_key;
	const char		*cl_cert;
	const char		*cl_chain;
	const char		*cl_reason;
	const char		*cl_status;
	const char		*cl_identity;
	const char		*cl_expiring;
	struct client_names	 cl_names;
	int			 cl_reuse_key;
	int			 cl_json;
	char			 cl_token[CLIENT_TOKEN_MAX + 1];
	/* mTLS: the current key and certificate as read, and parsed */
	char			*cl_key_pem;
	size_t			 cl_key_pem_len;
	char			*cl_cert_pem;
	size_t			 cl_cert_pem_len;
	EVP_PKEY		*cl_cur_key;
	X509			*cl_cur_cert;
};

/* One file to replace: a temporary file beside it until commit. */
struct client_file {
	const char	*cf_path;
	mode_t		 cf_mode;
	char		*cf_tmp;
	int		 cf_fd;
	int		 cf_renamed;
};

static const struct {
	const char	*name;
	int		 type;		/* EVP_PKEY_EC, _RSA, _ED25519 */
	const char	*group;		/* EC */
	unsigned int	 bits;		/* RSA */
} key_types[] = {
	{ "ec-p256", EVP_PKEY_EC, "P-256", 0 },
	{ "ec-p384", EVP_PKEY_EC, "P-384", 0 },
	{ "rsa-2048", EVP_PKEY_RSA, NULL, 2048 },
	{ "rsa-3072", EVP_PKEY_RSA, NULL, 3072 },
	{ "ed25519", EVP_PKEY_ED25519, NULL, 0 },
};

static void client_err(const struct client *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static void
client_err(const struct client *cl, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "hsmca %s: ", cl->cl_cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The last OpenSSL error, for a message; the queue is emptied. */
static const char *
client_ssl_error(void)
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

/* What the server says is shown, but never a terminal control byte. */
static void
client_clean(const char *s, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; s != NULL && s[i] != '\0' && i + 1 < outlen; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	out[i] = '\0';
}

static const char *
client_jstr(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A non-2xx answer: the server's {"error", "message"} as "code: message". */
static void
client_server_error(const struct client *cl, const struct http_response *r)
{
	json_t *j;
	char code[128], msg[1024];

	j = json_loadb(r->hr_body, r->hr_len, 0, NULL);
	if (json_is_object(j) && client_jstr(j, "error") != NULL) {
		client_clean(client_jstr(j, "error"), code, sizeof(code));
		client_clean(client_jstr(j, "message"), msg, sizeof(msg));
		client_err(cl, "%s: %s", code, msg[0] != '\0' ? msg :
		    "(no message)");
	} else
		client_err(cl, "http_%ld: the server answered HTTP %ld without "
		    "a JSON error", r->hr_status, r->hr_status);
	json_decref(j);
}

static void
client_names_clear(struct client_names *n)
{
	size_t i;

	for (i = 0; i < n->cn_ndns; i++)
		free(n->cn_dns[i]);
	for (i = 0; i < n->cn_nuris; i++)
		free(n->cn_uris[i]);
	memset(n, 0, sizeof(*n));
}

/* A name for the CSR: printable ASCII without spaces, bounded. */
static int
client_name_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > CLIENT_MAX_NAME)
		return 0;
	for (i = 0; i < len; i++)
		if (s[i] <= 0x20 || s[i] >= 0x7f)
			return 0;
	return 1;
}

static int
client_name_add(char **arr, size_t *n, const char *s, size_t len)
{
	if (*n >= CLIENT_MAX_NAMES || !client_name_ok(s, len))
		return -1;
	if ((arr[*n] = strndup(s, len)) == NULL)
		return -1;
	(*n)++;
	return 0;
}

static void
client_free_file(char *buf, size_t len)
{
	if (buf != NULL)
		OPENSSL_cleanse(buf, len);
	free(buf);
}

/* Reads a whole regular file of at most CLIENT_FILE_MAX bytes,
 * NUL-terminated.  Returns 0, or -1 after saying why. */
static int
client_read_file(const struct client *cl, const char *path, char **out,
    size_t *outlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd, ret = -1;

	*out = NULL;
	*outlen = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		client_err(cl, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		client_err(cl, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > CLIENT_FILE_MAX) {
		client_err(cl, "%s: not a regular file of at most %d bytes",
		    path, CLIENT_FILE_MAX);
		goto out;
	}
	if ((buf = malloc(CLIENT_FILE_MAX + 1)) == NULL) {
		client_err(cl, "out of memory");
		goto out;
	}
	for (;;) {
		if (len == CLIENT_FILE_MAX) {
			client_err(cl, "%s: longer than %d bytes", path,
			    CLIENT_FILE_MAX);
			goto out;
		}
		n = read(fd, buf + len, CLIENT_FILE_MAX - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			client_err(cl, "%s: %s", path, strerror(errno));
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
	client_free_file(buf, CLIENT_FILE_MAX + 1);
	close(fd);
	return ret;
}

/* Never prompt on the terminal for a passphrase: encrypted keys are
 * refused with a message instead. */
static int
client_no_pass(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/*
 * Loads the current key and certificate (renew, revoke, inventory): the
 * bytes are kept for the TLS client and both must belong together.
 */
static int
client_load_identity(struct client *cl)
{
	BIO *b = NULL;
	int ret = -1;

	if (client_read_file(cl, cl->cl_key, &cl->cl_key_pem,
	    &cl->cl_key_pem_len) != 0 ||
	    client_read_file(cl, cl->cl_cert, &cl->cl_cert_pem,
	    &cl->cl_cert_pem_len) != 0)
		goto out;
	if ((b = BIO_new_mem_buf(cl->cl_key_pem, (int)cl->cl_key_pem_len)) ==
	    NULL || (cl->cl_cur_key = PEM_read_bio_PrivateKey(b, NULL,
	    client_no_pass, NULL)) == NULL) {
		client_err(cl, "%s: not an unencrypted PEM private key (%s)",
		    cl->cl_key, client_ssl_error());
		goto out;
	}
	BIO_free(b);
	if ((b = BIO_new_mem_buf(cl->cl_cert_pem,
	    (int)cl->cl_cert_pem_len)) == NULL ||
	    (cl->cl_cur_cert = PEM_read_bio_X509(b, NULL, client_no_pass,
	    NULL)) == NULL) {
		client_err(cl, "%s: not a PEM certificate (%s)", cl->cl_cert,
		    client_ssl_error());
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(cl->cl_cur_cert), cl->cl_cur_key) !=
	    1) {
		client_err(cl, "%s is not the key of %s", cl->cl_key,
		    cl->cl_cert);
		goto out;
	}
	cl->cl_http.ho_key = cl->cl_key_pem;
	cl->cl_http.ho_key_len = cl->cl_key_pem_len;
	cl->cl_http.ho_cert = cl->cl_cert_pem;
	cl->cl_http.ho_cert_len = cl->cl_cert_pem_len;
	ret = 0;
 out:
	ERR_clear_error();
	BIO_free(b);
	return ret;
}

/*
 * The bootstrap token: from --token-file (owned by us or root, closed to
 * group and other, one line) or from HSMCA_BOOTSTRAP_TOKEN, which is
 * wiped from the environment once read.  Never from argv: every user
 * can read another's argv.
 */
static int
client_read_token(struct client *cl)
{
	struct secret *s = NULL;
	const char *src;
	char *env;
	size_t len, i;
	int ret = -1;

	if (cl->cl_token_file != NULL) {
		if (secret_read_file(cl->cl_token_file, &s) != 0) {
			client_err(cl, "bootstrap token: %s",
			    token_error_detail());
			return -1;
		}
		src = (const char *)secret_data(s);
		len = secret_len(s);
	} else if ((env = getenv("HSMCA_BOOTSTRAP_TOKEN")) != NULL) {
		len = strlen(env);
		if (len <= CLIENT_TOKEN_MAX)
			memcpy(cl->cl_token, env, len);
		explicit_bzero(env, len);
		unsetenv("HSMCA_BOOTSTRAP_TOKEN");
		src = cl->cl_token;
	} else {
		client_err(cl, "no bootstrap token: give --token-file or set "
		    "HSMCA_BOOTSTRAP_TOKEN");
		return -1;
	}
	if (len == 0 || len > CLIENT_TOKEN_MAX) {
		client_err(cl, "bootstrap token: empty or longer than %d bytes",
		    CLIENT_TOKEN_MAX);
		goto out;
	}
	for (i = 0; i < len; i++)
		if (src[i] <= 0x20 || src[i] >= 0x7f) {
			client_err(cl, "bootstrap token: a byte that is not "
			    "printable ASCII");
			goto out;
		}
	memmove(cl->cl_token, src, len);
	cl->cl_token[len] = '\0';
	ret = 0;
 out:
	if (ret != 0)
		explicit_bzero(cl->cl_token, sizeof(cl->cl_token));
	secret_free(s);
	return ret;
}

static EVP_PKEY *
client_keygen(const struct client *cl, const char *type)
{
	EVP_PKEY *k = NULL;
	size_t i;

	for (i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++)
		if (strcmp(type, key_types[i].name) == 0)
			break;
	if (i == sizeof(key_types) / sizeof(key_types[0])) {
		client_err(cl, "key type %s is not supported", type);
		return NULL;
	}
	switch (key_types[i].type) {
	case EVP_PKEY_EC:
		k = EVP_EC_gen(key_types[i].group);
		break;
	case EVP_PKEY_RSA:
		k = EVP_RSA_gen(key_types[i].bits);
		break;
	default:
		k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
		break;
	}
	if (k == NULL)
		client_err(cl, "%s key generation failed: %s", type,
		    client_ssl_error());
	return k;
}

/* The key type name of an existing key, to make its successor. */
static const char *
client_key_type_of(EVP_PKEY *k)
{
	char group[64];
	size_t i, glen;
	int type = EVP_PKEY_get_base_id(k);

	for (i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++) {
		if (key_types[i].type != type)
			continue;
		if (type == EVP_PKEY_RSA &&
		    (unsigned)EVP_PKEY_get_bits(k) != key_types[i].bits)
			continue;
		if (type == EVP_PKEY_EC && (EVP_PKEY_get_group_name(k, group,
		    sizeof(group), &glen) != 1 ||
		    strcmp(EC_curve_nid2nist(OBJ_sn2nid(group)) != NULL ?
		    EC_curve_nid2nist(OBJ_sn2nid(group)) : group,
		    key_types[i].group) != 0))
			continue;
		return key_types[i].name;
	}
	return NULL;
}

static int
client_push_name(GENERAL_NAMES *gens, int type, const char *v)
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

/* A memory BIO's contents as a new NUL-terminated string. */
static char *
client_bio_string(BIO *b)
{
	char *p, *s;
	long n = BIO_get_mem_data(b, &p);

	if (n < 0 || (s = malloc((size_t)n + 1)) == NULL)
		return NULL;
	memcpy(s, p, (size_t)n);
	s[n] = '\0';
	return s;
}

/*
 * The CSR in PEM: an empty subject (the names are in the SAN, critical
 * as RFC 5280 wants when the subject is empty), signed by the key.
 */
static char *
client_csr(const struct client *cl, EVP_PKEY *k, const struct client_names *n)
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
	for (i = 0; i < n->cn_nuris; i++)
		if (client_push_name(gens, GEN_URI, n->cn_uris[i]) != 0)
			goto fail;
	for (i = 0; i < n->cn_ndns; i++)
		if (client_push_name(gens, GEN_DNS, n->cn_dns[i]) != 0)
			goto fail;
	if (X509V3_add1_i2d(&exts, NID_subject_alt_name, gens, 1,
	    X509V3_ADD_DEFAULT) != 1 ||
	    X509_REQ_add_extensions(req, exts) != 1 ||
	    X509_REQ_sign(req, k, md) <= 0 ||
	    (b = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509_REQ(b, req) != 1 ||
	    (pem = client_bio_string(b)) == NULL)
		goto fail;
	goto out;
 fail:
	client_err(cl, "the certificate request could not be made: %s",
	    client_ssl_error());
 out:
	BIO_free(b);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gens);
	X509_REQ_free(req);
	return pem;
}

/* The DNS and URI names of the certificate being renewed. */
static int
client_names_of(struct client *cl, X509 *x, struct client_names *n)
{
	GENERAL_NAMES *gens;
	GENERAL_NAME *gn;
	const ASN1_STRING *s;
	int i, type, ret = -1;

	if ((gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
	    NULL)) == NULL) {
		client_err(cl, "%s has no subjectAltName to renew",
		    cl->cl_cert);
		return -1;
	}
	for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		gn = sk_GENERAL_NAME_value(gens, i);
		s = GENERAL_NAME_get0_value(gn, &type);
		if (type != GEN_DNS && type != GEN_URI) {
			client_err(cl, "%s has a subjectAltName that is not a "
			    "DNS name or URI", cl->cl_cert);
			goto out;
		}
		if (client_name_add(type == GEN_DNS ? n->cn_dns : n->cn_uris,
		    type == GEN_DNS ? &n->cn_ndns : &n->cn_nuris,
		    (const char *)ASN1_STRING_get0_data(s),
		    (size_t)ASN1_STRING_length(s)) != 0) {
			client_err(cl, "%s: a subjectAltName is malformed, or "
			    "there are more than %d", cl->cl_cert,
			    CLIENT_MAX_NAMES);
			goto out;
		}
	}
	if (n->cn_ndns + n->cn_nuris == 0) {
		client_err(cl, "%s has no DNS name or URI to renew",
		    cl->cl_cert);
		goto out;
	}
	ret = 0;
 out:
	GENERAL_NAMES_free(gens);
	return ret;
}

/* --- files ------------------------------------------------------------- */

/*
 * Makes the temporary files first, before anything is asked of the
 * server, so that an unwritable directory does not spend a token.
 * mkstemp creates them 0600: a key is never readable by others.
 */
static int
client_files_open(const struct client *cl, struct client_file *f, size_t n)
{
	const char *slash;
	size_t i, len;

	for (i = 0; i < n; i++) {
		f[i].cf_fd = -1;
		f[i].cf_tmp = NULL;
		f[i].cf_renamed = 0;
	}
	for (i = 0; i < n; i++) {
		if (f[i].cf_path == NULL)
			continue;
		len = strlen(f[i].cf_path) + 16;
		if ((f[i].cf_tmp = malloc(len)) == NULL) {
			client_err(cl, "out of memory");
			return -1;
		}
		if ((slash = strrchr(f[i].cf_path, '/')) == NULL)
			snprintf(f[i].cf_tmp, len, ".%s.XXXXXX",
			    f[i].cf_path);
		else
			snprintf(f[i].cf_tmp, len, "%.*s/.%s.XXXXXX",
			    (int)(slash - f[i].cf_path), f[i].cf_path,
			    slash + 1);
		if ((f[i].cf_fd = mkostemp(f[i].cf_tmp, O_CLOEXEC)) == -1) {
			client_err(cl, "%s: cannot create a file beside it: "
			    "%s", f[i].cf_path, strerror(errno));
			free(f[i].cf_tmp);
			f[i].cf_tmp = NULL;
			return -1;
		}
	}
	return 0;
}

static int
client_file_write(const struct client *cl, struct client_file *f,
    const char *data, size_t len)
{
	size_t off = 0;
	ssize_t w;

	while (off < len) {
		w = write(f->cf_fd, data + off, len - off);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1) {
			client_err(cl, "%s: %s", f->cf_tmp, strerror(errno));
			return -1;
		}
		off += (size_t)w;
	}
	if (fchmod(f->cf_fd, f->cf_mode) == -1 || fsync(f->cf_fd) == -1) {
		client_err(cl, "%s: %s", f->cf_tmp, strerror(errno));
		return -1;
	}
	if (close(f->cf_fd) == -1) {
		f->cf_fd = -1;
		client_err(cl, "%s: %s", f->cf_tmp, strerror(errno));
		return -1;
	}
	f->cf_fd = -1;
	return 0;
}

static int
client_fsync_dir(const struct client *cl, const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	int fd, ret = 0;

	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    fsync(fd) == -1) {
		client_err(cl, "%s: %s", dir, strerror(errno));
		ret = -1;
	}
	if (fd != -1)
		close(fd);
	return ret;
}

/* Renames in the order given: the key, the chain, the certificate. */
static int
client_files_commit(const struct client *cl, struct client_file *f, size_t n)
{
	size_t i;
	int ret = 0;

	for (i = 0; i < n; i++) {
		if (f[i].cf_tmp == NULL)
			continue;
		if (rename(f[i].cf_tmp, f[i].cf_path) == -1) {
			client_err(cl, "%s: %s", f[i].cf_path,
			    strerror(errno));
			return -1;
		}
		f[i].cf_renamed = 1;
	}
	for (i = 0; i < n; i++)
		if (f[i].cf_renamed && client_fsync_dir(cl, f[i].cf_path) != 0)
			ret = -1;
	return ret;
}

static void
client_files_close(struct client_file *f, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (f[i].cf_fd != -1)
			close(f[i].cf_fd);
		if (f[i].cf_tmp != NULL && !f[i].cf_renamed)
			unlink(f[i].cf_tmp);
		free(f[i].cf_tmp);
		f[i].cf_tmp = NULL;
		f[i].cf_fd = -1;
	}
}

/* --- issuance (enroll and renew) --------------------------------------- */

static int
client_serial_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	return n > 0 && n <= CLIENT_SERIAL_MAX &&
	    strspn(s, "0123456789abcdef") == n;
}

/*
 * Checks an issuance answer: the certificate is for our key, the chain
 * is certificates.  Both come back re-encoded as PEM.
 */
static int
client_take_cert(const struct client *cl, json_t *j, EVP_PKEY *k,
    char **certpem, char **chainpem)
{
	const char *cert, *chain;
	BIO *in = NULL, *out = NULL;
	X509 *x = NULL;
	int nchain = 0, ret = -1;

	*certpem = *chainpem = NULL;
	cert = client_jstr(j, "certificate");
	chain = client_jstr(j, "chain");
	if (!client_serial_ok(client_jstr(j, "serial")) || cert == NULL ||
	    client_jstr(j, "not_after") == NULL) {
		client_err(cl, "the server's answer lacks serial, certificate "
		    "or not_after");
		goto out;
	}
	if ((in = BIO_new_mem_buf(cert, -1)) == NULL ||
	    (x = PEM_read_bio_X509(in, NULL, client_no_pass, NULL)) == NULL) {
		client_err(cl, "the server's certificate is not PEM: %s",
		    client_ssl_error());
		goto out;
	}
	if (EVP_PKEY_eq(X509_get0_pubkey(x), k) != 1) {
		client_err(cl, "the server's certificate is not for our key");
		goto out;
	}
	if ((out = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509(out, x) != 1 ||
	    (*certpem = client_bio_string(out)) == NULL)
		goto nomem;
	BIO_free(in);
	BIO_free(out);
	in = out = NULL;
	if (cl->cl_chain == NULL) {
		ret = 0;
		goto out;
	}
	if (chain == NULL || (in = BIO_new_mem_buf(chain, -1)) == NULL ||
	    (out = BIO_new(BIO_s_mem())) == NULL)
		goto badchain;
	for (;;) {
		X509_free(x);
		if ((x = PEM_read_bio_X509(in, NULL, client_no_pass,
		    NULL)) == NULL)
			break;
		if (++nchain > CLIENT_CHAIN_MAX ||
		    PEM_write_bio_X509(out, x) != 1)
			goto badchain;
	}
	/* The end of the text, or a broken block? */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE ||
	    nchain == 0)
		goto badchain;
	ERR_clear_error();
	if ((*chainpem = client_bio_string(out)) == NULL)
		goto nomem;
	ret = 0;
	goto out;
 badchain:
	client_err(cl, "the server's chain is not 1 to %d PEM certificates",
	    CLIENT_CHAIN_MAX);
	goto out;
 nomem:
	client_err(cl, "out of memory");
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

/*
 * POSTs a CSR for k to path and, on success, replaces the files: key
 * (when newkey), chain, certificate.  Returns the exit status.
 */
static int
client_issue(struct client *cl, const char *path, EVP_PKEY *k, int newkey,
    const char *bearer)
{
	struct client_file f[3];
	struct http_response r;
	BIO *kb = NULL;
	BUF_MEM *kmem;
	json_t *req = NULL, *j = NULL;
	char *csr = NULL, *body = NULL, *certpem = NULL, *chainpem = NULL;
	char err[1024], serial[64], na[64];
	int ret = 1;

	memset(&r, 0, sizeof(r));
	memset(f, 0, sizeof(f));
	f[0].cf_path = newkey ? cl->cl_key : NULL;
	f[0].cf_mode = 0600;
	f[1].cf_path = cl->cl_chain;
	f[1].cf_mode = 0644;
	f[2].cf_path = cl->cl_cert;
	f[2].cf_mode = 0644;
	if (client_files_open(cl, f, 3) != 0)
		goto out;
	if ((csr = client_csr(cl, k, &cl->cl_names)) == NULL)
		goto out;
	if ((req = json_pack("{s:s,s:s*,s:s*}", "csr", csr, "profile",
	    cl->cl_profile, "ttl", cl->cl_ttl)) == NULL ||
	    (body = json_dumps(req, JSON_COMPACT)) == NULL) {
		client_err(cl, "out of memory");
		goto out;
	}
	if (http_request(&cl->cl_http, "POST", path, body, bearer, &r, err,
	    sizeof(err)) != 0) {
		client_err(cl, "%s", err);
		goto out;
	}
	explicit_bzero(cl->cl_token, sizeof(cl->cl_token));
	if (r.hr_status != 200 && r.hr_status != 201) {
		client_server_error(cl, &r);
		goto out;
	}
	if ((j = json_loadb(r.hr_body, r.hr_len, 0, NULL)) == NULL ||
	    !json_is_object(j)) {
		client_err(cl, "the server's answer is not a JSON object");
		goto out;
	}
	if (client_take_cert(cl, j, k, &certpem, &chainpem) != 0)
		goto out;
	/* The key goes from a secure-heap BIO (wiped when freed) straight
	 * to its file. */
	if (newkey && ((kb = BIO_new(BIO_s_secmem())) == NULL ||
	    PEM_write_bio_PrivateKey(kb, k, NULL, NULL, 0, NULL, NULL) != 1 ||
	    BIO_get_mem_ptr(kb, &kmem) != 1)) {
		client_err(cl, "the key cannot be encoded: %s",
		    client_ssl_error());
		goto out;
	}
	if ((newkey && client_file_write(cl, &f[0], kmem->data,
	    kmem->length) != 0) ||
	    (chainpem != NULL && client_file_write(cl, &f[1], chainpem,
	    strlen(chainpem)) != 0) ||
	    client_file_write(cl, &f[2], certpem, strlen(certpem)) != 0 ||
	    client_files_commit(cl, f, 3) != 0)
		goto out;
	client_clean(client_jstr(j, "serial"), serial, sizeof(serial));
	client_clean(client_jstr(j, "not_after"), na, sizeof(na));
	printf("serial %s, valid until %s\n", serial, na);
	ret = 0;
 out:
	client_files_close(f, 3);
	BIO_free(kb);
	free(csr);
	free(body);
	free(certpem);
	free(chainpem);
	json_decref(req);
	json_decref(j);
	http_response_clear(&r);
	return ret;
}

/* --- options ----------------------------------------------------------- */

static int
client_server(struct client *cl, const char *url)
{
	size_t n = strlen(url);

	if (strncmp(url, "https://", 8) != 0 || n <= 8 ||
	    n > CLIENT_SERVER_MAX || strpbrk(url, "?# \t\r\n") != NULL) {
		client_err(cl, "--server %s: an https:// URL without query is "
		    "needed", url);
		return -1;
	}
	free(cl->cl_server);
	if ((cl->cl_server = strdup(url)) == NULL)
		return -1;
	while (n > 8 && cl->cl_server[n - 1] == '/')
		cl->cl_server[--n] = '\0';
	cl->cl_http.ho_server = cl->cl_server;
	return 0;
}

/*
 * Parses the options of one command.  Returns -1 to go on, or the exit
 * status: 0 after --help, 2 for a usage error.
 */
static int
client_options(struct client *cl, int argc, char **argv,
    const struct option *opts)
{
	struct curl_slist *sl;
	const char *s;
	size_t i;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case O_SERVER:
			if (client_server(cl, optarg) != 0)
				return 2;
			break;
		case O_CA_BUNDLE:
			cl->cl_http.ho_ca_bundle = optarg;
			break;
		case O_RESOLVE:
			if (strlen(optarg) > 512 ||
			    (sl = curl_slist_append(cl->cl_http.ho_resolve,
			    optarg)) == NULL) {
				client_err(cl, "--resolve %s: too long", optarg);
				return 2;
			}
			cl->cl_http.ho_resolve = sl;
			break;
		case O_TOKEN_FILE:
			cl->cl_token_file = optarg;
			break;
		case O_PROFILE:
			cl->cl_profile = optarg;
			break;
		case O_SPIFFE_ID:
			if (strncmp(optarg, "spiffe://", 9) != 0 ||
			    client_name_add(cl->cl_names.cn_uris,
			    &cl->cl_names.cn_nuris, optarg,
			    strlen(optarg)) != 0) {
				client_err(cl, "--spiffe-id %s: a spiffe:// URI "
				    "of printable ASCII is needed", optarg);
				return 2;
			}
			break;
		case O_DNS:
			if (client_name_add(cl->cl_names.cn_dns,
			    &cl->cl_names.cn_ndns, optarg,
			    strlen(optarg)) != 0) {
				client_err(cl, "--dns %s: not a DNS name, or "
				    "more than %d", optarg, CLIENT_MAX_NAMES);
				return 2;
			}
			break;
		case O_TTL:
		case O_EXPIRING:
			if (rules_parse_duration(optarg) <= 0) {
				client_err(cl, "--%s %s: not a duration (a "
				    "number and one of s, m, h, d)",
				    ch == O_TTL ? "ttl" : "expiring", optarg);
				return 2;
			}
			if (ch == O_TTL)
				cl->cl_ttl = optarg;
			else
				cl->cl_expiring = optarg;
			break;
		case O_KEY_TYPE:
			for (i = 0; i < sizeof(key_types) /
			    sizeof(key_types[0]); i++)
				if (strcmp(optarg, key_types[i].name) == 0)
					break;
			if (i == sizeof(key_types) / sizeof(key_types[0])) {
				client_err(cl, "--key-type %s: one of ec-p256, "
				    "ec-p384, rsa-2048, rsa-3072, ed25519",
				    optarg);
				return 2;
			}
			cl->cl_key_type = optarg;
			break;
		case O_KEY:
			cl->cl_key = optarg;
			break;
		case O_CERT:
			cl->cl_cert = optarg;
			break;
		case O_CHAIN:
			cl->cl_chain = optarg;
			break;
		case O_REUSE_KEY:
			cl->cl_reuse_key = 1;
			break;
		case O_REASON:
			cl->cl_reason = optarg;
			break;
		case O_JSON:
			cl->cl_json = 1;
			break;
		case O_STATUS:
			s = optarg;
			if (strcmp(s, "pending") != 0 &&
			    strcmp(s, "issued") != 0 &&
			    strcmp(s, "failed") != 0 &&
			    strcmp(s, "revoked") != 0) {
				client_err(cl, "--status %s: one of pending, "
				    "issued, failed, revoked", s);
				return 2;
			}
			cl->cl_status = s;
			break;
		case O_IDENTITY:
			cl->cl_identity = optarg;
			break;
		case O_HELP:
			cl->cl_usage(stdout);
			return 0;
		default:
			cl->cl_usage(stderr);
			return 2;
		}
	}
	if (cl->cl_server == NULL || cl->cl_http.ho_ca_bundle == NULL) {
		client_err(cl, "--server and --ca-bundle are needed");
		cl->cl_usage(stderr);
		return 2;
	}
	return -1;
}

/* Output files must be three different paths. */
static int
client_paths_differ(const struct client *cl)
{
	if (strcmp(cl->cl_key, cl->cl_cert) == 0 || (cl->cl_chain != NULL &&
	    (strcmp(cl->cl_chain, cl->cl_key) == 0 ||
	    strcmp(cl->cl_chain, cl->cl_cert) == 0))) {
		client_err(cl, "--key, --cert and --chain must be different "
		    "files");
		return 0;
	}
	return 1;
}

static void
client_init(struct client *cl, const char *cmd, void (*usage)(FILE *))
{
	memset(cl, 0, sizeof(*cl));
	cl->cl_cmd = cmd;
	cl->cl_usage = usage;
}

static void
client_done(struct client *cl)
{
	explicit_bzero(cl->cl_token, sizeof(cl->cl_token));
	client_names_clear(&cl->cl_names);
	curl_slist_free_all(cl->cl_http.ho_resolve);
	free(cl->cl_server);
	client_free_file(cl->cl_key_pem, cl->cl_key_pem_len);
	client_free_file(cl->cl_cert_pem, cl->cl_cert_pem_len);
	EVP_PKEY_free(cl->cl_cur_key);
	X509_free(cl->cl_cur_cert);
	memset(cl, 0, sizeof(*cl));
}

#define USAGE_TLS \
	"  --server URL        the policy daemon, https://host[:port]\n" \
	"  --ca-bundle FILE    the only roots trusted for the server\n" \
	"  --resolve H:P:ADDR  connect to ADDR for host H port P (as curl's)\n"

/* --- enroll ------------------------------------------------------------ */

static void
enroll_usage(FILE *f)
{
	fprintf(f, "usage: hsmca enroll --server URL --ca-bundle FILE "
	    "[--token-file FILE]\n"
	    "         --profile NAME [--spiffe-id URI] [--dns NAME]... "
	    "[--ttl DURATION]\n"
	    "         [--key-type TYPE] --key OUT --cert OUT [--chain OUT] "
	    "[--resolve H:P:ADDR]\n"
	    "  makes a key here and gets a certificate for it with a "
	    "bootstrap token\n"
	    USAGE_TLS
	    "  --token-file FILE   the bootstrap token (mode 0600 or "
	    "stricter); else from\n"
	    "                      the environment variable "
	    "HSMCA_BOOTSTRAP_TOKEN\n"
	    "  --profile NAME      svid, server, client, peer or subca\n"
	    "  --spiffe-id URI     the SPIFFE ID (a URI SAN)\n"
	    "  --dns NAME          a DNS name; repeatable\n"
	    "  --ttl DURATION      e.g. 24h (units s, m, h, d); default the "
	    "policy's\n"
	    "  --key-type TYPE     ec-p256 (default), ec-p384, rsa-2048, "
	    "rsa-3072, ed25519\n"
	    "  --key, --cert, --chain OUT   where to write the key (0600), "
	    "the certificate\n"
	    "                      and the issuing chain (0644), each "
	    "replaced atomically\n");
}

int
enroll_main(int argc, char **argv)
{
	static const struct option opts[] = {
		OPT_COMMON,
		OPT_ARG("token-file", O_TOKEN_FILE),
		OPT_ARG("profile", O_PROFILE),
		OPT_ARG("spiffe-id", O_SPIFFE_ID),
		OPT_ARG("dns", O_DNS),
		OPT_ARG("ttl", O_TTL),
		OPT_ARG("key-type", O_KEY_TYPE),
		OPT_ARG("key", O_KEY),
		OPT_ARG("cert", O_CERT),
		OPT_ARG("chain", O_CHAIN),
		{ NULL, 0, NULL, 0 }
	};
	struct client cl;
	EVP_PKEY *k = NULL;
	int ret;

	client_init(&cl, "enroll", enroll_usage);
	if ((ret = client_options(&cl, argc, argv, opts)) >= 0)
		goto out;
	ret = 2;
	if (optind != argc || cl.cl_profile == NULL || cl.cl_key == NULL ||
	    cl.cl_cert == NULL) {
		client_err(&cl, "--profile, --key and --cert are needed, and "
		    "no other arguments");
		goto out;
	}
	if (cl.cl_names.cn_ndns + cl.cl_names.cn_nuris == 0) {
		client_err(&cl, "give at least one name: --spiffe-id or --dns");
		goto out;
	}
	if (!client_paths_differ(&cl))
		goto out;
	ret = 1;
	if (client_read_token(&cl) != 0)
		goto out;
	if (http_init() != 0) {
		client_err(&cl, "libcurl could not be initialised");
		goto out;
	}
	if ((k = client_keygen(&cl, cl.cl_key_type != NULL ? cl.cl_key_type :
	    "ec-p256")) != NULL)
		ret = client_issue(&cl, "/v1/certificates", k, 1, cl.cl_token);
	http_cleanup();
 out:
	EVP_PKEY_free(k);
	client_done(&cl);
	return ret;
}

/* --- renew ------------------------------------------------------------- */

static void
renew_usage(FILE *f)
{
	fprintf(f, "usage: hsmca renew --server URL --ca-bundle FILE --key "
	    "FILE --cert FILE\n"
	    "         [--chain FILE] [--ttl DURATION] [--profile NAME] "
	    "[--reuse-key]\n"
	    "         [--resolve H:P:ADDR]\n"
	    "  renews the certificate over mTLS with it and its key, for the "
	    "same names,\n"
	    "  and replaces the files atomically\n"
	    USAGE_TLS
	    "  --key, --cert FILE  the current key and certificate; replaced\n"
	    "  --chain FILE        also replace the issuing chain\n"
	    "  --ttl DURATION      e.g. 24h; default the policy's\n"
	    "  --profile NAME      default the current certificate's\n"
	    "  --reuse-key         keep the key (default: a new key of the "
	    "same type)\n");
}

int
renew_main(int argc, char **argv)
{
	static const struct option opts[] = {
		OPT_COMMON,
		OPT_ARG("profile", O_PROFILE),
		OPT_ARG("ttl", O_TTL),
		OPT_ARG("key", O_KEY),
		OPT_ARG("cert", O_CERT),
		OPT_ARG("chain", O_CHAIN),
		OPT_FLAG("reuse-key", O_REUSE_KEY),
		{ NULL, 0, NULL, 0 }
	};
	struct client cl;
	EVP_PKEY *k = NULL;
	const char *type;
	int ret;

	client_init(&cl, "renew", renew_usage);
	if ((ret = client_options(&cl, argc, argv, opts)) >= 0)
		goto out;
	ret = 2;
	if (optind != argc || cl.cl_key == NULL || cl.cl_cert == NULL) {
		client_err(&cl, "--key and --cert are needed, and no other "
		    "arguments");
		goto out;
	}
	if (!client_paths_differ(&cl))
		goto out;
	ret = 1;
	if (client_load_identity(&cl) != 0 ||
	    client_names_of(&cl, cl.cl_cur_cert, &cl.cl_names) != 0)
		goto out;
	if (cl.cl_reuse_key) {
		if (EVP_PKEY_up_ref(cl.cl_cur_key) != 1)
			goto out;
		k = cl.cl_cur_key;
	} else {
		if ((type = client_key_type_of(cl.cl_cur_key)) == NULL) {
			client_err(&cl, "%s: a key type hsmca does not make; "
			    "use --reuse-key", cl.cl_key);
			goto out;
		}
		if ((k = client_keygen(&cl, type)) == NULL)
			goto out;
	}
	if (http_init() != 0) {
		client_err(&cl, "libcurl could not be initialised");
		goto out;
	}
	ret = client_issue(&cl, "/v1/certificates/renew", k,
	    !cl.cl_reuse_key, NULL);
	http_cleanup();
 out:
	EVP_PKEY_free(k);
	client_done(&cl);
	return ret;
}

/* --- revoke ------------------------------------------------------------ */

static void
revoke_usage(FILE *f)
{
	fprintf(f, "usage: hsmca revoke --server URL --ca-bundle FILE --key "
	    "FILE --cert FILE\n"
	    "         [--reason NAME] [--resolve H:P:ADDR] SERIAL\n"
	    "  revokes certificate SERIAL (hex) over mTLS: as its holder, or "
	    "as an admin\n"
	    USAGE_TLS
	    "  --key, --cert FILE  the TLS client key and certificate\n"
	    "  --reason NAME       an RFC 5280 reason, e.g. keyCompromise, "
	    "superseded\n");
}

int
revoke_main(int argc, char **argv)
{
	static const struct option opts[] = {
		OPT_COMMON,
		OPT_ARG("key", O_KEY),
		OPT_ARG("cert", O_CERT),
		OPT_ARG("reason", O_REASON),
		{ NULL, 0, NULL, 0 }
	};
	struct client cl;
	struct http_response r;
	json_t *req = NULL, *j = NULL;
	char *body = NULL, path[128], serial[CLIENT_SERIAL_MAX + 1];
	char err[1024], s[64], at[64], reason[64];
	size_t i, n;
	int ret;

	memset(&r, 0, sizeof(r));
	client_init(&cl, "revoke", revoke_usage);
	if ((ret = client_options(&cl, argc, argv, opts)) >= 0)
		goto out;
	ret = 2;
	if (optind + 1 != argc || cl.cl_key == NULL || cl.cl_cert == NULL) {
		client_err(&cl, "--key, --cert and one SERIAL are needed");
		goto out;
	}
	/* Lower-case hex without leading zeros, as the server names it. */
	n = strlen(argv[optind]);
	for (i = 0; i < n && i < CLIENT_SERIAL_MAX && argv[optind][i] == '0';
	    i++)
		;
	if (n == 0 || n > CLIENT_SERIAL_MAX || i == n ||
	    strspn(argv[optind], "0123456789abcdefABCDEF") != n) {
		client_err(&cl, "%s: a serial is 1 to %d hex digits",
		    argv[optind], CLIENT_SERIAL_MAX);
		goto out;
	}
	snprintf(serial, sizeof(serial), "%s", argv[optind] + i);
	for (i = 0; serial[i] != '\0'; i++)
		if (serial[i] >= 'A' && serial[i] <= 'F')
			serial[i] = (char)(serial[i] - 'A' + 'a');
	ret = 1;
	if (client_load_identity(&cl) != 0)
		goto out;
	if ((req = cl.cl_reason != NULL ? json_pack("{s:s}", "reason",
	    cl.cl_reason) : json_object()) == NULL ||
	    (body = json_dumps(req, JSON_COMPACT)) == NULL) {
		client_err(&cl, "out of memory");
		goto out;
	}
	snprintf(path, sizeof(path), "/v1/certificates/%s/revoke", serial);
	if (http_init() != 0) {
		client_err(&cl, "libcurl could not be initialised");
		goto out;
	}
	if (http_request(&cl.cl_http, "POST", path, body, NULL, &r, err,
	    sizeof(err)) != 0)
		client_err(&cl, "%s", err);
	else if (r.hr_status != 200)
		client_server_error(&cl, &r);
	else if ((j = json_loadb(r.hr_body, r.hr_len, 0, NULL)) == NULL ||
	    !json_is_object(j) || client_jstr(j, "revoked_at") == NULL)
		client_err(&cl, "the server's answer lacks revoked_at");
	else {
		client_clean(client_jstr(j, "serial"), s, sizeof(s));
		client_clean(client_jstr(j, "revoked_at"), at, sizeof(at));
		client_clean(client_jstr(j, "reason"), reason, sizeof(reason));
		printf("serial %s revoked at %s%s%s%s\n", s, at,
		    reason[0] != '\0' ? " (" : "", reason,
		    reason[0] != '\0' ? ")" : "");
		ret = 0;
	}
	http_cleanup();
 out:
	http_response_clear(&r);
	json_decref(req);
	json_decref(j);
	free(body);
	client_done(&cl);
	return ret;
}

/* --- inventory --------------------------------------------------------- */

static void
inventory_usage(FILE *f)
{
	fprintf(f, "usage: hsmca inventory --server URL --ca-bundle FILE --key "
	    "FILE --cert FILE\n"
	    "         [--json] [--status S] [--identity I] [--expiring "
	    "DURATION]\n"
	    "         [--resolve H:P:ADDR]\n"
	    "  lists the certificates issued (admins only, over mTLS)\n"
	    USAGE_TLS
	    "  --key, --cert FILE  an admin's TLS client key and certificate\n"
	    "  --json              print the server's JSON\n"
	    "  --status S          pending, issued, failed or revoked\n"
	    "  --identity I        one identity (SPIFFE ID or DNS name)\n"
	    "  --expiring D        issued certificates that expire within D; "
	    "then the exit\n"
	    "                      status is 1 when any do and 0 when none "
	    "do\n");
}

/* Appends &name=value, percent-encoded. */
static void
inventory_query(char *q, size_t qlen, const char *name, const char *value)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = strlen(q), i;
	unsigned char c;

	if (value == NULL || o + strlen(name) + 3 >= qlen)
		return;
	o += (size_t)snprintf(q + o, qlen - o, "%c%s=", o == 0 ? '?' : '&',
	    name);
	for (i = 0; value[i] != '\0' && o + 4 < qlen; i++) {
		c = (unsigned char)value[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr("-._~", c) != NULL)
			q[o++] = (char)c;
		else {
			q[o++] = '%';
			q[o++] = hex[c >> 4];
			q[o++] = hex[c & 15];
		}
	}
	q[o] = '\0';
}

static int
inventory_print(const struct client *cl, json_t *a)
{
	static const char *const cols[] = { "serial", "status", "profile",
	    "identity", "not_after" };
	static const char *const heads[] = { "SERIAL", "STATUS", "PROFILE",
	    "IDENTITY", "NOT_AFTER" };
	size_t w[5], i, c, n;
	char v[512];
	json_t *o;

	for (c = 0; c < 5; c++)
		w[c] = strlen(heads[c]);
	json_array_foreach(a, i, o) {
		if (!json_is_object(o)) {
			client_err(cl, "the inventory holds a non-object");
			return -1;
		}
		for (c = 0; c < 5; c++) {
			client_clean(client_jstr(o, cols[c]), v, sizeof(v));
			if ((n = strlen(v)) > w[c])
				w[c] = n;
		}
	}
	for (c = 0; c < 5; c++)
		printf("%-*s%s", c < 4 ? (int)w[c] : 0, heads[c],
		    c < 4 ? "  " : "\n");
	json_array_foreach(a, i, o) {
		for (c = 0; c < 5; c++) {
			client_clean(client_jstr(o, cols[c]), v, sizeof(v));
			printf("%-*s%s", c < 4 ? (int)w[c] : 0,
			    v[0] != '\0' ? v : "-", c < 4 ? "  " : "\n");
		}
	}
	return 0;
}

int
inventory_main(int argc, char **argv)
{
	static const struct option opts[] = {
		OPT_COMMON,
		OPT_ARG("key", O_KEY),
		OPT_ARG("cert", O_CERT),
		OPT_FLAG("json", O_JSON),
		OPT_ARG("status", O_STATUS),
		OPT_ARG("identity", O_IDENTITY),
		OPT_ARG("expiring", O_EXPIRING),
		{ NULL, 0, NULL, 0 }
	};
	struct client cl;
	struct http_response r;
	json_t *j = NULL, *a;
	char path[3 * CLIENT_MAX_NAME + 256], q[3 * CLIENT_MAX_NAME + 200];
	char err[1024], *out = NULL;
	int ret;

	memset(&r, 0, sizeof(r));
	client_init(&cl, "inventory", inventory_usage);
	if ((ret = client_options(&cl, argc, argv, opts)) >= 0)
		goto out;
	ret = 2;
	if (optind != argc || cl.cl_key == NULL || cl.cl_cert == NULL) {
		client_err(&cl, "--key and --cert are needed, and no other "
		    "arguments");
		goto out;
	}
	if (cl.cl_identity != NULL && strlen(cl.cl_identity) > CLIENT_MAX_NAME) {
		client_err(&cl, "--identity: longer than %d bytes",
		    CLIENT_MAX_NAME);
		goto out;
	}
	ret = 1;
	if (client_load_identity(&cl) != 0)
		goto out;
	q[0] = '\0';
	inventory_query(q, sizeof(q), "status", cl.cl_status);
	inventory_query(q, sizeof(q), "identity", cl.cl_identity);
	inventory_query(q, sizeof(q), "expiring_within", cl.cl_expiring);
	snprintf(path, sizeof(path), "/v1/certificates%s", q);
	if (http_init() != 0) {
		client_err(&cl, "libcurl could not be initialised");
		goto out;
	}
	if (http_request(&cl.cl_http, "GET", path, NULL, NULL, &r, err,
	    sizeof(err)) != 0)
		client_err(&cl, "%s", err);
	else if (r.hr_status != 200)
		client_server_error(&cl, &r);
	else if ((j = json_loadb(r.hr_body, r.hr_len, 0, NULL)) == NULL ||
	    !json_is_array(a = json_object_get(j, "certificates")))
		client_err(&cl, "the server's answer has no \"certificates\" "
		    "array");
	else if (cl.cl_json) {
		if ((out = json_dumps(j, JSON_INDENT(2))) == NULL)
			client_err(&cl, "out of memory");
		else {
			printf("%s\n", out);
			ret = cl.cl_expiring != NULL &&
			    json_array_size(a) > 0 ? 1 : 0;
		}
	} else if (inventory_print(&cl, a) == 0)
		ret = cl.cl_expiring != NULL && json_array_size(a) > 0 ? 1 : 0;
	http_cleanup();
 out:
	free(out);
	http_response_clear(&r);
	json_decref(j);
	client_done(&cl);
	return ret;
}
