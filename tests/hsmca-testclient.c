/*
 * hsmca-testclient: a client of hsmca-signerd's IPC for the integration
 * and crash tests.  It seals one request (or many, from many threads),
 * sends it on a cooked nanomsg REQ socket, checks every answer (MAC,
 * freshness, request id, type, and for a certificate its serial and
 * public key) and prints one line per answer.
 *
 * A hidden command, fake-server, answers like a tiny signer so that the
 * client's own paths can be tested without one (tests/testclient.sh).
 *
 * Exit status: 0 every answer was good, 2 an error answer, 3 no answer
 * within the timeout, 1 a usage or local error or an answer that does not
 * verify ("MISMATCH").
 */
#include "config.h"

#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ipc.h"

/* Exit status and the outcome of one exchange, worst last. */
#define TC_OK			0
#define TC_REFUSED		2
#define TC_TIMEOUT		3
#define TC_LOCAL		1

#define TC_DEFAULT_TIMEOUT	10000
#define TC_MAX_TIMEOUT		3600000
/* How far an answer's timestamp may be from our clock. */
#define TC_WINDOW_MS		30000
/* The REQ socket must never resend on its own within our wait. */
#define TC_RESEND_MARGIN	60000
#define TC_MAX_FILE		(16 * 1024 * 1024)
#define TC_MAX_SANS		256
#define TC_MAX_REVOKED		4096
#define TC_MAX_REPEAT		1000000
#define TC_MAX_COUNT		100000000L
#define TC_MAX_THREADS		256
#define TC_MAX_OFFSET_MS	(INT64_C(100) * 366 * 86400 * 1000)
#define TC_MAX_REL_S		(INT64_C(100) * 366 * 86400)
#define TC_MAX_EPOCH		INT64_C(253402300799)	/* 9999-12-31 */
#define TC_REASON_MAX		512
#define FAKE_CACHE		256

struct options {
	const char	*url;
	const char	*keyfile;
	int		 timeout_ms;
	int		 have_id;
	uint8_t		 id[IPC_ID_LEN];
	int64_t		 time_offset_ms;
	int		 bad_mac;
	long		 repeat;
	const char	*out;
	const char	*save;		/* the sealed request, for raw */
	uint8_t		 key[IPC_KEY_LEN];
};

/* A request and what its answer is checked against. */
struct request {
	int			 type;
	int			 resp_type;
	uint8_t			*body;		/* OPENSSL_free */
	size_t			 bodylen;
	const uint8_t		*spki;		/* issue: the key sent */
	size_t			 spkilen;
	const IPC_CRL_REQ	*crl;		/* crl: the entries asked for */
	const char		*key_name;	/* info: "" for every key */
	int64_t			 nonce;		/* health */
};

/* What one answer said. */
struct result {
	int			 status;	/* TC_* */
	int			 type;
	uint8_t			 id[IPC_ID_LEN];	/* the answer's */
	int			 code;		/* refusal */
	char			 reason[TC_REASON_MAX];
	char			*serial;	/* lower-case hex (OPENSSL_free) */
	char			*audit_seq;	/* decimal (OPENSSL_free) */
	int64_t			 token_up;
	uint8_t			*object;	/* DER for --out (OPENSSL_free) */
	size_t			 objectlen;
	IPC_CA_INFO_RESP	*info;
};

struct issue_params {
	const char	*key_name;
	const char	*profile;
	const char	*spki_file;
	const char	*spki_gen;
	const char	*subject;
	const char	*sans[TC_MAX_SANS];
	size_t		 nsans;
	int64_t		 not_before;
	int64_t		 not_after;
	const char	*requester;
	const char	*rule;
};

static const char *progname = "hsmca-testclient";

static void	 warnx_(const char *, ...)
		    __attribute__((format(printf, 1, 2)));
static void	 mismatch(struct result *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

static void
warnx_(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
usage(void)
{
	fprintf(stderr,
"usage: %s -s URL -k MACKEY_FILE [-t TIMEOUT_MS] [--id HEX32]\n"
"           [--time-offset MS] [--bad-mac] [--repeat N] [--out FILE]\n"
"           [--save FILE]\n"
"           COMMAND [options]\n"
"commands:\n"
"  issue --key NAME --profile P [--spki FILE | --spki-gen ALG]\n"
"        [--subject /CN=a/O=b] [--san DNS:x|URI:u|IP:a|email:e]...\n"
"        [--not-before N] [--not-after N] [--requester R] [--rule R]\n"
"        ALG: ec-p256 ec-p384 ec-p521 ec-secp256k1 rsa-2048 rsa-1024 ed25519\n"
"        N: epoch seconds, or +S / -S seconds from now\n"
"  crl --key NAME [--revoked SERIALHEX:EPOCH:REASON]... [--this-update N]\n"
"        [--next-update N] [--number N] [--requester R]\n"
"  info [--key NAME]\n"
"  health\n"
"  raw FILE\n"
"  load --count N --concurrency C issue-options...\n",
	    progname);
}

/* --- small parsers ----------------------------------------------------- */

static int
parse_ll(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* N: absolute epoch seconds, or +S / -S relative to now. */
static int
parse_time(const char *s, int64_t now, int64_t *out)
{
	long long v;

	if (s[0] == '+' || s[0] == '-') {
		if (!isdigit((unsigned char)s[1]) ||
		    parse_ll(s + 1, 0, TC_MAX_REL_S, &v) != 0)
			return -1;
		*out = s[0] == '+' ? now + v : now - v;
		return 0;
	}
	if (!isdigit((unsigned char)s[0]) ||
	    parse_ll(s, 0, TC_MAX_EPOCH, &v) != 0)
		return -1;
	*out = v;
	return 0;
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
parse_id(const char *s, uint8_t id[IPC_ID_LEN])
{
	size_t i;
	int hi, lo;

	if (strlen(s) != 2 * IPC_ID_LEN)
		return -1;
	for (i = 0; i < IPC_ID_LEN; i++) {
		if ((hi = hexval(s[2 * i])) < 0 ||
		    (lo = hexval(s[2 * i + 1])) < 0)
			return -1;
		id[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static void
id_hex(const uint8_t id[IPC_ID_LEN], char out[2 * IPC_ID_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < IPC_ID_LEN; i++) {
		out[2 * i] = digits[id[i] >> 4];
		out[2 * i + 1] = digits[id[i] & 0xf];
	}
	out[2 * IPC_ID_LEN] = '\0';
}

/* Text from the peer, made printable on one line. */
static void
clean_string(const ASN1_STRING *s, char *buf, size_t bufsz)
{
	const unsigned char *p;
	size_t i, n;
	int len;

	buf[0] = '\0';
	if (s == NULL || (len = ASN1_STRING_length(s)) <= 0 || bufsz == 0)
		return;
	p = ASN1_STRING_get0_data(s);
	n = (size_t)len < bufsz - 1 ? (size_t)len : bufsz - 1;
	for (i = 0; i < n; i++)
		buf[i] = p[i] < 0x20 || p[i] == 0x7f ? '?' : (char)p[i];
	buf[n] = '\0';
}

static char *
int_text(const ASN1_INTEGER *a, int hex)
{
	BIGNUM *bn;
	char *s, *p;

	if (a == NULL || (bn = ASN1_INTEGER_to_BN(a, NULL)) == NULL)
		return NULL;
	s = hex ? BN_bn2hex(bn) : BN_bn2dec(bn);
	BN_free(bn);
	if (s != NULL && hex)
		for (p = s; *p != '\0'; p++)
			*p = (char)tolower((unsigned char)*p);
	return s;
}

static int
read_file(const char *path, uint8_t **out, size_t *outlen)
{
	FILE *f;
	struct stat st;
	uint8_t *buf;
	size_t n;

	*out = NULL;
	*outlen = 0;
	if ((f = fopen(path, "rb")) == NULL) {
		warnx_("%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(f), &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_size > TC_MAX_FILE) {
		warnx_("%s: not a regular file of at most %d bytes", path,
		    TC_MAX_FILE);
		fclose(f);
		return -1;
	}
	if ((buf = OPENSSL_malloc((size_t)st.st_size + 1)) == NULL) {
		warnx_("%s: out of memory", path);
		fclose(f);
		return -1;
	}
	n = fread(buf, 1, (size_t)st.st_size + 1, f);
	if (ferror(f) || n != (size_t)st.st_size) {
		warnx_("%s: read error or the file changed", path);
		OPENSSL_free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	*out = buf;
	*outlen = n;
	return 0;
}

static int
write_file(const char *path, const uint8_t *buf, size_t len)
{
	FILE *f;

	if ((f = fopen(path, "wb")) == NULL) {
		warnx_("%s: %s", path, strerror(errno));
		return -1;
	}
	if (len > 0 && fwrite(buf, 1, len, f) != len) {
		warnx_("%s: write error", path);
		fclose(f);
		return -1;
	}
	if (fclose(f) != 0) {
		warnx_("%s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* --- subject keys -------------------------------------------------------- */

static const struct {
	const char	*name;
	const char	*type;
	const char	*group;		/* EC */
	size_t		 bits;		/* RSA */
} key_algs[] = {
	{ "ec-p256",		"EC",		"P-256",	0 },
	{ "ec-p384",		"EC",		"P-384",	0 },
	{ "ec-p521",		"EC",		"P-521",	0 },
	{ "ec-secp256k1",	"EC",		"secp256k1",	0 },
	{ "rsa-2048",		"RSA",		NULL,		2048 },
	{ "rsa-1024",		"RSA",		NULL,		1024 },
	{ "ed25519",		"ED25519",	NULL,		0 },
};

static int
key_alg_index(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(key_algs) / sizeof(key_algs[0]); i++)
		if (strcmp(key_algs[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* A fresh key pair's SubjectPublicKeyInfo, DER (OPENSSL_free). */
static int
spki_generate(const char *alg, uint8_t **out, size_t *outlen)
{
	EVP_PKEY *pk;
	unsigned char *der = NULL;
	int i, len;

	*out = NULL;
	*outlen = 0;
	if ((i = key_alg_index(alg)) < 0) {
		warnx_("--spki-gen %s: unknown algorithm", alg);
		return -1;
	}
	if (key_algs[i].group != NULL)
		pk = EVP_PKEY_Q_keygen(NULL, NULL, key_algs[i].type,
		    key_algs[i].group);
	else if (key_algs[i].bits != 0)
		pk = EVP_PKEY_Q_keygen(NULL, NULL, key_algs[i].type,
		    key_algs[i].bits);
	else
		pk = EVP_PKEY_Q_keygen(NULL, NULL, key_algs[i].type);
	if (pk == NULL) {
		warnx_("--spki-gen %s: key generation failed", alg);
		ERR_print_errors_fp(stderr);
		return -1;
	}
	len = i2d_PUBKEY(pk, &der);
	EVP_PKEY_free(pk);
	if (len <= 0) {
		warnx_("--spki-gen %s: cannot encode the public key", alg);
		return -1;
	}
	*out = der;
	*outlen = (size_t)len;
	return 0;
}

/*
 * The bytes of a SubjectPublicKeyInfo file, PEM ("PUBLIC KEY") or DER.
 * They are sent as they are, unparsed: the signer's checks of odd keys
 * are what the tests want to see.
 */
static int
spki_load(const char *path, uint8_t **out, size_t *outlen)
{
	BIO *bio;
	uint8_t *buf;
	size_t len;
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long dlen = 0;

	*out = NULL;
	*outlen = 0;
	if (read_file(path, &buf, &len) != 0)
		return -1;
	if (len == 0) {
		warnx_("--spki %s: empty file", path);
		OPENSSL_free(buf);
		return -1;
	}
	buf[len] = '\0';
	if (strstr((char *)buf, "-----BEGIN") == NULL) {
		if (len > IPC_MAX_MESSAGE) {
			warnx_("--spki %s: %zu bytes", path, len);
			OPENSSL_free(buf);
			return -1;
		}
		*out = buf;
		*outlen = len;
		return 0;
	}
	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL ||
	    PEM_read_bio(bio, &name, &header, &data, &dlen) != 1) {
		warnx_("--spki %s: not a PEM file", path);
		ERR_clear_error();
		BIO_free(bio);
		OPENSSL_free(buf);
		return -1;
	}
	BIO_free(bio);
	OPENSSL_free(buf);
	if (strcmp(name, "PUBLIC KEY") != 0 || dlen <= 0 ||
	    dlen > IPC_MAX_MESSAGE) {
		warnx_("--spki %s: a PEM \"%s\" of %ld bytes, expected a "
		    "PUBLIC KEY", path, name, dlen);
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(data);
		return -1;
	}
	OPENSSL_free(name);
	OPENSSL_free(header);
	*out = data;
	*outlen = (size_t)dlen;
	return 0;
}

/* --- request bodies ------------------------------------------------------ */

/* "/CN=a/O=b", "\/" and "\\" escaped; "" or "/" is the empty name. */
static X509_NAME *
parse_subject(const char *s)
{
	X509_NAME *n;
	char *buf, *p, *q, *attr, *val;
	int last;

	if ((n = X509_NAME_new()) == NULL)
		return NULL;
	if (s[0] == '\0' || strcmp(s, "/") == 0)
		return n;
	if (s[0] != '/') {
		warnx_("--subject %s: must start with /", s);
		X509_NAME_free(n);
		return NULL;
	}
	if ((buf = strdup(s + 1)) == NULL) {
		X509_NAME_free(n);
		return NULL;
	}
	for (p = buf, last = 0; !last; ) {
		/* One component: unescape in place up to an unescaped '/'. */
		attr = q = p;
		for (;;) {
			if (*p == '\\' && p[1] != '\0') {
				*q++ = p[1];
				p += 2;
			} else if (*p == '/' || *p == '\0') {
				last = *p == '\0';
				p++;
				break;
			} else
				*q++ = *p++;
		}
		*q = '\0';
		if ((val = strchr(attr, '=')) == NULL || val == attr) {
			warnx_("--subject %s: \"%s\" is not ATTRIBUTE=value",
			    s, attr);
			goto fail;
		}
		*val++ = '\0';
		if (X509_NAME_add_entry_by_txt(n, attr, MBSTRING_UTF8,
		    (const unsigned char *)val, -1, -1, 0) != 1) {
			warnx_("--subject %s: attribute %s refused", s, attr);
			ERR_clear_error();
			goto fail;
		}
	}
	free(buf);
	return n;
 fail:
	free(buf);
	X509_NAME_free(n);
	return NULL;
}

static GENERAL_NAME *
parse_san(const char *s)
{
	static const struct {
		const char	*prefix;
		int		 type;
	} kinds[] = {
		{ "DNS:", GEN_DNS }, { "URI:", GEN_URI },
		{ "email:", GEN_EMAIL }, { "IP:", GEN_IPADD },
	};
	GENERAL_NAME *gn;
	ASN1_STRING *v = NULL;
	const char *val = NULL;
	size_t i, plen;
	int type = -1;

	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		plen = strlen(kinds[i].prefix);
		if (strncasecmp(s, kinds[i].prefix, plen) == 0) {
			type = kinds[i].type;
			val = s + plen;
			break;
		}
	}
	if (val == NULL) {
		warnx_("--san %s: expected DNS:, URI:, IP: or email:", s);
		return NULL;
	}
	if (type == GEN_IPADD) {
		if ((v = a2i_IPADDRESS(val)) == NULL) {
			warnx_("--san %s: not an IP address", s);
			ERR_clear_error();
			return NULL;
		}
	} else if (strlen(val) > IPC_MAX_MESSAGE ||
	    (v = ASN1_IA5STRING_new()) == NULL ||
	    ASN1_STRING_set(v, val, (int)strlen(val)) != 1) {
		warnx_("--san %s: cannot be encoded", s);
		ASN1_STRING_free(v);
		return NULL;
	}
	if ((gn = GENERAL_NAME_new()) == NULL) {
		ASN1_STRING_free(v);
		return NULL;
	}
	GENERAL_NAME_set0_value(gn, type, v);
	return gn;
}

static int
set_utf8(ASN1_UTF8STRING *s, const char *v)
{
	size_t len = strlen(v);

	if (len > IPC_MAX_MESSAGE)
		return -1;
	return ASN1_STRING_set(s, v, (int)len) == 1 ? 0 : -1;
}

static int
encode_body(int type, const void *value, uint8_t **body, size_t *bodylen)
{
	int err;

	if ((err = ipc_encode(ipc_type_item(type), value, body,
	    bodylen)) != 0) {
		warnx_("%s: %s: %s", ipc_type_name(type), ipc_strerror(err),
		    ipc_error_detail());
		return -1;
	}
	return 0;
}

static int
issue_body(const struct issue_params *ip, const uint8_t *spki,
    size_t spkilen, uint8_t **body, size_t *bodylen)
{
	IPC_ISSUE_REQ *req;
	X509_NAME *subject = NULL;
	GENERAL_NAME *gn;
	size_t i;
	int ret = -1;

	if ((req = IPC_ISSUE_REQ_new()) == NULL)
		return -1;
	if (req->sans == NULL && (req->sans = sk_GENERAL_NAME_new_null()) ==
	    NULL)
		goto out;
	if (set_utf8(req->key_name, ip->key_name) != 0 ||
	    set_utf8(req->profile, ip->profile) != 0 ||
	    set_utf8(req->requester, ip->requester) != 0 ||
	    set_utf8(req->rule, ip->rule) != 0 ||
	    spkilen > IPC_MAX_MESSAGE ||
	    ASN1_OCTET_STRING_set(req->spki, spki, (int)spkilen) != 1 ||
	    ASN1_INTEGER_set_int64(req->not_before, ip->not_before) != 1 ||
	    ASN1_INTEGER_set_int64(req->not_after, ip->not_after) != 1) {
		warnx_("issue: a field cannot be encoded");
		goto out;
	}
	if ((subject = parse_subject(ip->subject)) == NULL ||
	    X509_NAME_set(&req->subject, subject) != 1)
		goto out;
	for (i = 0; i < ip->nsans; i++) {
		if ((gn = parse_san(ip->sans[i])) == NULL)
			goto out;
		if (sk_GENERAL_NAME_push(req->sans, gn) <= 0) {
			GENERAL_NAME_free(gn);
			goto out;
		}
	}
	ret = encode_body(IPC_T_ISSUE_CERT_REQ, req, body, bodylen);
 out:
	X509_NAME_free(subject);
	IPC_ISSUE_REQ_free(req);
	return ret;
}

static const char *crl_reasons[] = {
	"unspecified", "keyCompromise", "cACompromise", "affiliationChanged",
	"superseded", "cessationOfOperation", "certificateHold", "unused",
	"removeFromCRL", "privilegeWithdrawn", "aACompromise",
};

/* SERIALHEX:EPOCH:REASON, REASON a number or an RFC 5280 name. */
static IPC_REVOKED *
parse_revoked(const char *s)
{
	IPC_REVOKED *r = NULL;
	BIGNUM *bn = NULL;
	char *buf, *at, *reason;
	long long v, code = -1;
	size_t i;

	if ((buf = strdup(s)) == NULL)
		return NULL;
	if ((at = strchr(buf, ':')) == NULL ||
	    (reason = strchr(at + 1, ':')) == NULL)
		goto bad;
	*at++ = '\0';
	*reason++ = '\0';
	for (i = 0; i < sizeof(crl_reasons) / sizeof(crl_reasons[0]); i++)
		if (strcasecmp(reason, crl_reasons[i]) == 0)
			code = (long long)i;
	if (code < 0 && parse_ll(reason, 0, 255, &code) != 0)
		goto bad;
	if (buf[0] == '\0' || strlen(buf) > 128 ||
	    strspn(buf, "0123456789abcdefABCDEF") != strlen(buf) ||
	    BN_hex2bn(&bn, buf) <= 0 || parse_ll(at, 0, TC_MAX_EPOCH, &v) != 0)
		goto bad;
	if ((r = IPC_REVOKED_new()) == NULL ||
	    BN_to_ASN1_INTEGER(bn, r->serial) == NULL ||
	    ASN1_INTEGER_set_int64(r->revoked_at, v) != 1 ||
	    ASN1_ENUMERATED_set(r->reason, (long)code) != 1) {
		IPC_REVOKED_free(r);
		r = NULL;
	}
	BN_free(bn);
	free(buf);
	return r;
 bad:
	warnx_("--revoked %s: expected SERIALHEX:EPOCH:REASON", s);
	BN_free(bn);
	free(buf);
	return NULL;
}

/* --- the socket ---------------------------------------------------------- */

static int
tc_socket(const struct options *o)
{
	int s, v;

	if ((s = nn_socket(AF_SP, NN_REQ)) < 0) {
		warnx_("nn_socket: %s", nn_strerror(nn_errno()));
		return -1;
	}
	v = IPC_MAX_MESSAGE;
	if (nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &v, sizeof(v)) < 0)
		goto fail;
	v = o->timeout_ms;
	if (nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &v, sizeof(v)) < 0 ||
	    nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDTIMEO, &v, sizeof(v)) < 0)
		goto fail;
	v = o->timeout_ms + TC_RESEND_MARGIN;
	if (nn_setsockopt(s, NN_REQ, NN_REQ_RESEND_IVL, &v, sizeof(v)) < 0)
		goto fail;
	if (nn_connect(s, o->url) < 0) {
		warnx_("%s: %s", o->url, nn_strerror(nn_errno()));
		nn_close(s);
		return -1;
	}
	return s;
 fail:
	warnx_("nn_setsockopt: %s", nn_strerror(nn_errno()));
	nn_close(s);
	return -1;
}

/*
 * One request, one answer.  Returns TC_OK and *ans (nn_freemsg),
 * TC_TIMEOUT, or TC_LOCAL.  *sent tells whether the request left.
 */
static int
exchange(int s, const uint8_t *msg, size_t len, void **ans, size_t *anslen,
    int *sent)
{
	int n;

	*ans = NULL;
	*anslen = 0;
	*sent = 0;
	if (nn_send(s, msg, len, 0) < 0) {
		if (nn_errno() == ETIMEDOUT || nn_errno() == EAGAIN)
			return TC_TIMEOUT;
		warnx_("nn_send: %s", nn_strerror(nn_errno()));
		return TC_LOCAL;
	}
	*sent = 1;
	for (;;) {
		if ((n = nn_recv(s, ans, NN_MSG, 0)) >= 0)
			break;
		if (nn_errno() == EINTR)
			continue;
		if (nn_errno() == ETIMEDOUT || nn_errno() == EAGAIN)
			return TC_TIMEOUT;
		warnx_("nn_recv: %s", nn_strerror(nn_errno()));
		return TC_LOCAL;
	}
	*anslen = (size_t)n;
	return TC_OK;
}

static int
seal_request(const struct options *o, int type, const uint8_t id[IPC_ID_LEN],
    const uint8_t *body, size_t bodylen, uint8_t **msg, size_t *msglen)
{
	int err;

	if ((err = ipc_seal(o->key, type, id, ipc_now_ms() + o->time_offset_ms,
	    body, bodylen, msg, msglen)) != 0) {
		warnx_("seal: %s: %s", ipc_strerror(err), ipc_error_detail());
		return -1;
	}
	if (o->bad_mac) {
		/* The MAC is the envelope's last field: 04 20, 32 bytes. */
		if (*msglen < IPC_MAC_LEN + 2 ||
		    (*msg)[*msglen - IPC_MAC_LEN - 2] != V_ASN1_OCTET_STRING ||
		    (*msg)[*msglen - IPC_MAC_LEN - 1] != IPC_MAC_LEN) {
			warnx_("--bad-mac: the envelope does not end in its MAC");
			OPENSSL_free(*msg);
			*msg = NULL;
			return -1;
		}
		(*msg)[*msglen - 1] ^= 0x01;
	}
	return 0;
}

static void
random_id(uint8_t id[IPC_ID_LEN])
{
	if (RAND_bytes(id, IPC_ID_LEN) != 1) {
		/* Never reached with a working OpenSSL; do not go on. */
		warnx_("RAND_bytes failed");
		abort();
	}
}

/* --- checking answers ---------------------------------------------------- */

static void
mismatch(struct result *r, const char *fmt, ...)
{
	va_list ap;

	r->status = TC_LOCAL;
	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
}

static void
result_clear(struct result *r)
{
	OPENSSL_free(r->serial);
	OPENSSL_free(r->audit_seq);
	OPENSSL_free(r->object);
	IPC_CA_INFO_RESP_free(r->info);
	memset(r, 0, sizeof(*r));
}

static int
decode_body(const struct ipc_message *m, struct result *r, void **out)
{
	int err;

	if ((err = ipc_decode(ipc_type_item(m->im_type), m->im_body,
	    m->im_bodylen, ipc_type_name(m->im_type), out)) != 0) {
		mismatch(r, "%s does not decode: %s", ipc_type_name(m->im_type),
		    ipc_error_detail());
		return -1;
	}
	return 0;
}

static void
check_issue(const struct request *rq, const struct ipc_message *m,
    struct result *r)
{
	IPC_ISSUE_RESP *resp = NULL;
	X509 *x = NULL;
	const unsigned char *p;
	unsigned char *spki = NULL;
	int len, spkilen;

	if (decode_body(m, r, (void **)&resp) != 0)
		return;
	if ((r->serial = int_text(resp->serial, 1)) == NULL ||
	    (r->audit_seq = int_text(resp->audit_seq, 0)) == NULL) {
		mismatch(r, "out of memory");
		goto out;
	}
	len = ASN1_STRING_length(resp->certificate);
	p = ASN1_STRING_get0_data(resp->certificate);
	if (len <= 0 || (x = d2i_X509(NULL, &p, len)) == NULL ||
	    p != ASN1_STRING_get0_data(resp->certificate) + len) {
		mismatch(r, "certificate (%d bytes) does not decode to exactly "
		    "one X.509 certificate", len);
		ERR_clear_error();
		goto out;
	}
	if (ASN1_INTEGER_cmp(X509_get0_serialNumber(x), resp->serial) != 0) {
		mismatch(r, "certificate serial differs from serial=%s",
		    r->serial);
		goto out;
	}
	if ((spkilen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki)) <= 0 ||
	    (size_t)spkilen != rq->spkilen ||
	    memcmp(spki, rq->spki, rq->spkilen) != 0) {
		mismatch(r, "certificate serial=%s public key differs from the "
		    "SPKI sent", r->serial);
		goto out;
	}
	if ((r->object = OPENSSL_memdup(ASN1_STRING_get0_data(
	    resp->certificate), (size_t)len)) == NULL) {
		mismatch(r, "out of memory");
		goto out;
	}
	r->objectlen = (size_t)len;
	r->status = TC_OK;
 out:
	OPENSSL_free(spki);
	X509_free(x);
	IPC_ISSUE_RESP_free(resp);
}

static void
check_crl(const struct request *rq, const struct ipc_message *m,
    struct result *r)
{
	IPC_CRL_RESP *resp = NULL;
	X509_CRL *crl = NULL;
	X509_REVOKED *rev;
	const unsigned char *p;
	char *s;
	int i, len;

	if (decode_body(m, r, (void **)&resp) != 0)
		return;
	if ((r->audit_seq = int_text(resp->audit_seq, 0)) == NULL) {
		mismatch(r, "out of memory");
		goto out;
	}
	len = ASN1_STRING_length(resp->crl);
	p = ASN1_STRING_get0_data(resp->crl);
	if (len <= 0 || (crl = d2i_X509_CRL(NULL, &p, len)) == NULL ||
	    p != ASN1_STRING_get0_data(resp->crl) + len) {
		mismatch(r, "CRL (%d bytes) does not decode to exactly one CRL",
		    len);
		ERR_clear_error();
		goto out;
	}
	for (i = 0; i < sk_IPC_REVOKED_num(rq->crl->revoked); i++) {
		const IPC_REVOKED *want = sk_IPC_REVOKED_value(rq->crl->revoked,
		    i);

		if (X509_CRL_get0_by_serial(crl, &rev, want->serial) != 1) {
			s = int_text(want->serial, 1);
			mismatch(r, "CRL does not list serial %s",
			    s != NULL ? s : "?");
			OPENSSL_free(s);
			goto out;
		}
	}
	if ((r->object = OPENSSL_memdup(ASN1_STRING_get0_data(resp->crl),
	    (size_t)len)) == NULL) {
		mismatch(r, "out of memory");
		goto out;
	}
	r->objectlen = (size_t)len;
	r->status = TC_OK;
 out:
	X509_CRL_free(crl);
	IPC_CRL_RESP_free(resp);
}

static void
check_info(const struct request *rq, const struct ipc_message *m,
    struct result *r)
{
	IPC_CA_INFO_RESP *resp = NULL;
	const IPC_KEY_INFO *k;
	X509 *x;
	BIO *chains = NULL;
	const unsigned char *p, *end;
	char name[256];
	BUF_MEM *bm;
	int i, len;

	if (decode_body(m, r, (void **)&resp) != 0)
		return;
	if ((chains = BIO_new(BIO_s_mem())) == NULL) {
		mismatch(r, "out of memory");
		goto out;
	}
	for (i = 0; i < sk_IPC_KEY_INFO_num(resp->keys); i++) {
		k = sk_IPC_KEY_INFO_value(resp->keys, i);
		clean_string(k->name, name, sizeof(name));
		if (rq->key_name[0] != '\0' &&
		    strcmp(name, rq->key_name) != 0) {
			mismatch(r, "asked for key %s, answered key %s",
			    rq->key_name, name);
			goto out;
		}
		len = ASN1_STRING_length(k->chain);
		p = ASN1_STRING_get0_data(k->chain);
		end = p + (len > 0 ? len : 0);
		if (len <= 0) {
			mismatch(r, "key %s: empty chain", name);
			goto out;
		}
		while (p < end) {
			if ((x = d2i_X509(NULL, &p, end - p)) == NULL) {
				mismatch(r, "key %s: the chain is not DER "
				    "certificates", name);
				ERR_clear_error();
				goto out;
			}
			X509_free(x);
		}
		if (BIO_write(chains, ASN1_STRING_get0_data(k->chain), len) !=
		    len) {
			mismatch(r, "out of memory");
			goto out;
		}
	}
	BIO_get_mem_ptr(chains, &bm);
	if (bm->length > 0) {
		if ((r->object = OPENSSL_memdup(bm->data, bm->length)) ==
		    NULL) {
			mismatch(r, "out of memory");
			goto out;
		}
		r->objectlen = bm->length;
	}
	r->info = resp;
	resp = NULL;
	r->status = TC_OK;
 out:
	BIO_free(chains);
	IPC_CA_INFO_RESP_free(resp);
}

static void
check_health(const struct request *rq, const struct ipc_message *m,
    struct result *r)
{
	IPC_HEALTH_RESP *resp = NULL;
	int64_t nonce;

	if (decode_body(m, r, (void **)&resp) != 0)
		return;
	if (ASN1_INTEGER_get_int64(&nonce, resp->nonce) != 1 ||
	    nonce != rq->nonce) {
		mismatch(r, "health answer does not echo the nonce");
		goto out;
	}
	if (ASN1_INTEGER_get_int64(&r->token_up, resp->token_up) != 1 ||
	    (r->token_up != 0 && r->token_up != 1)) {
		mismatch(r, "health answer: token_up is not 0 or 1");
		goto out;
	}
	if ((r->audit_seq = int_text(resp->audit_seq, 0)) == NULL) {
		mismatch(r, "out of memory");
		goto out;
	}
	r->status = TC_OK;
 out:
	IPC_HEALTH_RESP_free(resp);
}

static void
check_error(const struct ipc_message *m, struct result *r)
{
	IPC_ERROR_RESP *resp = NULL;
	int64_t code;

	if (decode_body(m, r, (void **)&resp) != 0)
		return;
	if (ASN1_INTEGER_get_int64(&code, resp->code) != 1 ||
	    code < INT_MIN || code > INT_MAX) {
		mismatch(r, "error answer: code out of range");
		goto out;
	}
	r->code = (int)code;
	clean_string(resp->reason, r->reason, sizeof(r->reason));
	r->status = TC_REFUSED;
 out:
	IPC_ERROR_RESP_free(resp);
}

/*
 * Checks an answer: it opens with our key within the window, carries the
 * request's id, and is the expected type or an error.  rq NULL (raw):
 * any id and type.
 */
static void
check_answer(const struct options *o, const struct request *rq,
    const uint8_t id[IPC_ID_LEN], const uint8_t *buf, size_t len,
    struct result *r)
{
	struct ipc_message m;
	char want[2 * IPC_ID_LEN + 1], got[2 * IPC_ID_LEN + 1];
	int err;

	memset(r, 0, sizeof(*r));
	r->status = TC_LOCAL;
	if ((err = ipc_open(o->key, buf, len, ipc_now_ms(), TC_WINDOW_MS,
	    &m)) != 0) {
		mismatch(r, "answer of %zu bytes does not open: %s: %s", len,
		    ipc_strerror(err), ipc_error_detail());
		ipc_message_clear(&m);
		return;
	}
	r->type = m.im_type;
	memcpy(r->id, m.im_id, IPC_ID_LEN);
	if (rq != NULL && memcmp(m.im_id, id, IPC_ID_LEN) != 0) {
		id_hex(m.im_id, got);
		id_hex(id, want);
		mismatch(r, "answer id %s, request id %s", got, want);
	} else if (m.im_type == IPC_T_ERROR_RESP)
		check_error(&m, r);
	else if (rq == NULL)
		r->status = TC_OK;
	else if (m.im_type != rq->resp_type)
		mismatch(r, "answer is a %s, expected a %s",
		    ipc_type_name(m.im_type), ipc_type_name(rq->resp_type));
	else if (m.im_type == IPC_T_ISSUE_CERT_RESP)
		check_issue(rq, &m, r);
	else if (m.im_type == IPC_T_SIGN_CRL_RESP)
		check_crl(rq, &m, r);
	else if (m.im_type == IPC_T_CA_INFO_RESP)
		check_info(rq, &m, r);
	else if (m.im_type == IPC_T_HEALTH_RESP)
		check_health(rq, &m, r);
	else
		mismatch(r, "answer is a %s", ipc_type_name(m.im_type));
	ipc_message_clear(&m);
}

/* --- single requests ----------------------------------------------------- */

static int
worse(int a, int b)
{
	static const int rank[] = { 0, 3, 1, 2 };	/* OK, LOCAL, REF, TO */

	return rank[b] > rank[a] ? b : a;
}

static void
print_result(const struct request *rq, const uint8_t id[IPC_ID_LEN],
    const struct result *r, size_t anslen)
{
	const IPC_KEY_INFO *k;
	char idhex[2 * IPC_ID_LEN + 1], name[256], alg[256], prof[256];
	char *usage, *limit;
	int i, j;
	size_t n;

	id_hex(id, idhex);
	if (r->status == TC_LOCAL) {
		printf("MISMATCH %s\n", r->reason);
		return;
	}
	if (r->status == TC_REFUSED) {
		printf("ERROR %s %s\n", ipc_refusal_name(r->code), r->reason);
		return;
	}
	if (rq == NULL) {
		printf("ANSWER type=%s id=%s len=%zu\n", ipc_type_name(r->type),
		    idhex, anslen);
		return;
	}
	switch (rq->resp_type) {
	case IPC_T_ISSUE_CERT_RESP:
		printf("OK serial=%s audit_seq=%s id=%s\n", r->serial,
		    r->audit_seq, idhex);
		break;
	case IPC_T_SIGN_CRL_RESP:
		printf("OK crl audit_seq=%s id=%s\n", r->audit_seq, idhex);
		break;
	case IPC_T_HEALTH_RESP:
		printf("OK token_up=%d audit_seq=%s\n", (int)r->token_up,
		    r->audit_seq);
		break;
	case IPC_T_CA_INFO_RESP:
		for (i = 0; i < sk_IPC_KEY_INFO_num(r->info->keys); i++) {
			k = sk_IPC_KEY_INFO_value(r->info->keys, i);
			clean_string(k->name, name, sizeof(name));
			clean_string(k->algorithm, alg, sizeof(alg));
			usage = int_text(k->usage, 0);
			limit = int_text(k->usage_limit, 0);
			printf("KEY name=%s algorithm=%s usage=%s limit=%s "
			    "profiles=", name, alg, usage ? usage : "?",
			    limit ? limit : "?");
			OPENSSL_free(usage);
			OPENSSL_free(limit);
			for (j = 0; j < sk_ASN1_UTF8STRING_num(k->profiles);
			    j++) {
				clean_string(sk_ASN1_UTF8STRING_value(
				    k->profiles, j), prof, sizeof(prof));
				for (n = 0; prof[n] != '\0'; n++)
					if (prof[n] == ' ')
						prof[n] = '?';
				printf("%s%s", j > 0 ? "," : "", prof);
			}
			printf("\n");
		}
		break;
	}
}

static int
run_single(const struct options *o, const struct request *rq)
{
	struct result r;
	uint8_t id[IPC_ID_LEN], *msg = NULL;
	size_t msglen, anslen;
	void *ans;
	long i;
	int s, st, sent, rc = TC_OK;

	if (o->have_id)
		memcpy(id, o->id, IPC_ID_LEN);
	else
		random_id(id);
	if (seal_request(o, rq->type, id, rq->body, rq->bodylen, &msg,
	    &msglen) != 0)
		return TC_LOCAL;
	if (o->save != NULL && write_file(o->save, msg, msglen) != 0) {
		OPENSSL_free(msg);
		return TC_LOCAL;
	}
	if ((s = tc_socket(o)) < 0) {
		OPENSSL_free(msg);
		return TC_LOCAL;
	}
	for (i = 0; i < o->repeat; i++) {
		st = exchange(s, msg, msglen, &ans, &anslen, &sent);
		if (st == TC_TIMEOUT)
			printf("TIMEOUT\n");
		if (st != TC_OK) {
			rc = worse(rc, st);
			fflush(stdout);
			continue;
		}
		check_answer(o, rq, id, ans, anslen, &r);
		nn_freemsg(ans);
		print_result(rq, id, &r, anslen);
		fflush(stdout);
		if (r.status == TC_OK && o->out != NULL &&
		    write_file(o->out, r.object, r.objectlen) != 0)
			r.status = TC_LOCAL;
		rc = worse(rc, r.status);
		result_clear(&r);
	}
	nn_close(s);
	OPENSSL_free(msg);
	return rc;
}

/* raw FILE: the bytes as they are; any answer is shown, verified or not. */
static int
run_raw(const struct options *o, const char *path)
{
	struct result r;
	uint8_t *buf, none[IPC_ID_LEN] = { 0 };
	size_t len, anslen;
	void *ans;
	long i;
	int s, st, sent, rc = TC_OK;

	if (read_file(path, &buf, &len) != 0)
		return TC_LOCAL;
	if ((s = tc_socket(o)) < 0) {
		OPENSSL_free(buf);
		return TC_LOCAL;
	}
	for (i = 0; i < o->repeat; i++) {
		st = exchange(s, buf, len, &ans, &anslen, &sent);
		if (st == TC_TIMEOUT)
			printf("TIMEOUT\n");
		if (st != TC_OK) {
			rc = worse(rc, st);
			fflush(stdout);
			continue;
		}
		check_answer(o, NULL, none, ans, anslen, &r);
		nn_freemsg(ans);
		if (r.status == TC_LOCAL)
			printf("ANSWER len=%zu not verified: %s\n", anslen,
			    r.reason);
		else
			print_result(NULL, r.id, &r, anslen);
		fflush(stdout);
		rc = worse(rc, r.status);
		result_clear(&r);
	}
	nn_close(s);
	OPENSSL_free(buf);
	return rc;
}

/* --- load: many issue requests from many threads ------------------------- */

struct load_ctx {
	const struct options	*o;
	long			 count;
	long			 next;
	pthread_mutex_t		 lock;
	FILE			*out;
	long			 sent;
	long			 nsigned;
	long			 refused;
	long			 timeouts;
	long			 mismatches;
};

struct load_worker {
	pthread_t		 thread;
	struct load_ctx		*ctx;
	struct request		 rq;
	uint8_t			*spki;		/* OPENSSL_free, unless shared */
	int			 failed;
};

static void *
load_run(void *arg)
{
	struct load_worker *w = arg;
	struct load_ctx *c = w->ctx;
	const struct options *o = c->o;
	struct result r;
	uint8_t id[IPC_ID_LEN], *msg;
	char idhex[2 * IPC_ID_LEN + 1];
	size_t msglen, anslen;
	void *ans;
	int s, st, sent;

	if ((s = tc_socket(o)) < 0) {
		w->failed = 1;
		return NULL;
	}
	for (;;) {
		pthread_mutex_lock(&c->lock);
		if (c->next >= c->count) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		c->next++;
		pthread_mutex_unlock(&c->lock);

		if (o->have_id)
			memcpy(id, o->id, IPC_ID_LEN);
		else
			random_id(id);
		id_hex(id, idhex);
		if (seal_request(o, w->rq.type, id, w->rq.body, w->rq.bodylen,
		    &msg, &msglen) != 0) {
			w->failed = 1;
			break;
		}
		st = exchange(s, msg, msglen, &ans, &anslen, &sent);
		OPENSSL_free(msg);
		memset(&r, 0, sizeof(r));
		if (st == TC_OK) {
			check_answer(o, &w->rq, id, ans, anslen, &r);
			nn_freemsg(ans);
		}

		pthread_mutex_lock(&c->lock);
		if (sent)
			c->sent++;
		if (st == TC_TIMEOUT) {
			fprintf(c->out, "TIMEOUT %s\n", idhex);
			c->timeouts++;
		} else if (st != TC_OK)
			w->failed = 1;
		else if (r.status == TC_OK) {
			fprintf(c->out, "SIGNED %s %s %s\n", r.serial,
			    r.audit_seq, idhex);
			c->nsigned++;
		} else if (r.status == TC_REFUSED) {
			fprintf(c->out, "REFUSED %s %s\n",
			    ipc_refusal_name(r.code), idhex);
			c->refused++;
		} else {
			fprintf(c->out, "MISMATCH %s %s\n", idhex, r.reason);
			c->mismatches++;
		}
		fflush(c->out);
		pthread_mutex_unlock(&c->lock);
		result_clear(&r);
		if (w->failed)
			break;
	}
	nn_close(s);
	return NULL;
}

static int
run_load(const struct options *o, const struct issue_params *ip, long count,
    long concurrency)
{
	struct load_ctx c;
	struct load_worker *w;
	struct timespec t0, t1;
	uint8_t *shared = NULL;
	size_t sharedlen = 0;
	double secs;
	long i, started = 0;
	int failed = 0, err;

	memset(&c, 0, sizeof(c));
	c.o = o;
	c.count = count;
	if ((w = calloc((size_t)concurrency, sizeof(*w))) == NULL) {
		warnx_("out of memory");
		return TC_LOCAL;
	}
	if (ip->spki_file != NULL && spki_load(ip->spki_file, &shared,
	    &sharedlen) != 0) {
		free(w);
		return TC_LOCAL;
	}
	/* One key per thread, made before the clock starts. */
	for (i = 0; i < concurrency; i++) {
		w[i].ctx = &c;
		w[i].rq.type = IPC_T_ISSUE_CERT_REQ;
		w[i].rq.resp_type = IPC_T_ISSUE_CERT_RESP;
		if (shared != NULL) {
			w[i].rq.spki = shared;
			w[i].rq.spkilen = sharedlen;
		} else {
			if (spki_generate(ip->spki_gen, &w[i].spki,
			    &w[i].rq.spkilen) != 0)
				goto out;
			w[i].rq.spki = w[i].spki;
		}
		if (issue_body(ip, w[i].rq.spki, w[i].rq.spkilen,
		    &w[i].rq.body, &w[i].rq.bodylen) != 0)
			goto out;
	}
	if (o->out == NULL)
		c.out = stdout;
	else if ((c.out = fopen(o->out, "w")) == NULL) {
		warnx_("%s: %s", o->out, strerror(errno));
		goto out;
	}
	if ((err = pthread_mutex_init(&c.lock, NULL)) != 0) {
		warnx_("pthread_mutex_init: %s", strerror(err));
		goto out;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < concurrency; i++) {
		if ((err = pthread_create(&w[i].thread, NULL, load_run,
		    &w[i])) != 0) {
			warnx_("pthread_create: %s", strerror(err));
			failed = 1;
			/* The started threads share out the whole count. */
			break;
		}
		started++;
	}
	for (i = 0; i < started; i++) {
		pthread_join(w[i].thread, NULL);
		failed |= w[i].failed;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pthread_mutex_destroy(&c.lock);
	secs = (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("load: %ld sent, %ld signed, %ld refused, %ld timeouts, "
	    "%.1f per second\n", c.sent, c.nsigned, c.refused, c.timeouts,
	    secs > 0 ? (double)(c.nsigned + c.refused) / secs : 0.0);
	fflush(stdout);
	if (c.mismatches > 0)
		warnx_("load: %ld answers did not verify", c.mismatches);
	if (failed)
		warnx_("load: a thread stopped on a local error");
 out:
	if (c.out != NULL && c.out != stdout && fclose(c.out) != 0) {
		warnx_("%s: write error", o->out);
		failed = 1;
	}
	for (i = 0; i < concurrency; i++) {
		OPENSSL_free(w[i].rq.body);
		OPENSSL_free(w[i].spki);
	}
	OPENSSL_free(shared);
	free(w);
	if (started == 0 || failed || c.mismatches > 0)
		return TC_LOCAL;
	if (c.timeouts > 0)
		return TC_TIMEOUT;
	if (c.refused > 0)
		return TC_REFUSED;
	return TC_OK;
}

/* --- fake-server: a stand-in signer for the client's own tests ----------- */

/* How the fake server may lie, to test the client's checks. */
enum fake_lie { LIE_NONE, LIE_KEY, LIE_SERIAL, LIE_ID };

struct fake {
	const struct options	*o;
	enum fake_lie		 lie;
	EVP_PKEY		*ca;
	int64_t			 seq;
	struct {
		uint8_t		 id[IPC_ID_LEN];
		uint8_t		*msg;
		size_t		 len;
	}			 cache[FAKE_CACHE];
	size_t			 next;
};

static int
fake_error(int code, const char *reason, int *type, uint8_t **body,
    size_t *bodylen)
{
	IPC_ERROR_RESP *e;
	int ret = -1;

	*type = IPC_T_ERROR_RESP;
	if ((e = IPC_ERROR_RESP_new()) != NULL &&
	    ASN1_INTEGER_set(e->code, code) == 1 &&
	    set_utf8(e->reason, reason) == 0)
		ret = encode_body(IPC_T_ERROR_RESP, e, body, bodylen);
	IPC_ERROR_RESP_free(e);
	return ret;
}

static int
fake_issue(struct fake *f, const struct ipc_message *m, int *type,
    uint8_t **body, size_t *bodylen)
{
	IPC_ISSUE_REQ *req = NULL;
	IPC_ISSUE_RESP *resp = NULL;
	X509 *x = NULL;
	X509_NAME *fallback = NULL;
	const X509_NAME *name;
	EVP_PKEY *pk = NULL;
	BIGNUM *bn = NULL;
	const unsigned char *p;
	unsigned char *der = NULL, sb[16];
	int64_t nb, na;
	int len, ret = -1;

	if (ipc_decode(IPC_ISSUE_REQ_it(), m->im_body, m->im_bodylen,
	    "issue request", (void **)&req) != 0)
		return fake_error(IPC_REFUSE_BAD_MESSAGE, ipc_error_detail(),
		    type, body, bodylen);
	len = ASN1_STRING_length(req->spki);
	p = ASN1_STRING_get0_data(req->spki);
	if (len <= 0 || (pk = d2i_PUBKEY(NULL, &p, len)) == NULL ||
	    p != ASN1_STRING_get0_data(req->spki) + len) {
		ERR_clear_error();
		ret = fake_error(IPC_REFUSE_KEY_ALGORITHM,
		    "the SPKI does not decode", type, body, bodylen);
		goto out;
	}
	if (ASN1_INTEGER_get_int64(&nb, req->not_before) != 1 ||
	    ASN1_INTEGER_get_int64(&na, req->not_after) != 1 ||
	    nb < 0 || na < nb || na > TC_MAX_EPOCH) {
		ret = fake_error(IPC_REFUSE_VALIDITY, "bad validity", type,
		    body, bodylen);
		goto out;
	}
	if (RAND_bytes(sb, sizeof(sb)) != 1)
		goto internal;
	sb[0] = (sb[0] & 0x7f) | 0x40;		/* positive, 128 bits */
	name = req->subject;
	if (X509_NAME_entry_count(name) == 0) {
		if ((fallback = X509_NAME_new()) == NULL ||
		    X509_NAME_add_entry_by_txt(fallback, "CN", MBSTRING_UTF8,
		    (const unsigned char *)"hsmca fake server", -1, -1, 0) != 1)
			goto internal;
		name = fallback;
	}
	if ((x = X509_new()) == NULL ||
	    X509_set_version(x, X509_VERSION_3) != 1 ||
	    (bn = BN_bin2bn(sb, sizeof(sb), NULL)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
	    X509_set_subject_name(x, name) != 1 ||
	    X509_set_issuer_name(x, name) != 1 ||
	    ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na) == NULL ||
	    X509_set_pubkey(x, f->lie == LIE_KEY ? f->ca : pk) != 1)
		goto internal;
	if (sk_GENERAL_NAME_num(req->sans) > 0 &&
	    X509_add1_ext_i2d(x, NID_subject_alt_name, req->sans, 0,
	    X509V3_ADD_DEFAULT) != 1)
		goto internal;
	if (X509_sign(x, f->ca, EVP_sha256()) <= 0 ||
	    (len = i2d_X509(x, &der)) <= 0)
		goto internal;
	if ((resp = IPC_ISSUE_RESP_new()) == NULL)
		goto internal;
	ASN1_INTEGER_free(resp->serial);
	if ((resp->serial = ASN1_INTEGER_dup(X509_get0_serialNumber(x))) ==
	    NULL ||
	    ASN1_OCTET_STRING_set(resp->certificate, der, len) != 1 ||
	    ASN1_INTEGER_set_int64(resp->audit_seq, ++f->seq) != 1)
		goto internal;
	if (f->lie == LIE_SERIAL && ASN1_INTEGER_set(resp->serial, 1) != 1)
		goto internal;
	*type = IPC_T_ISSUE_CERT_RESP;
	ret = encode_body(IPC_T_ISSUE_CERT_RESP, resp, body, bodylen);
	goto out;
 internal:
	ERR_clear_error();
	ret = fake_error(IPC_REFUSE_INTERNAL, "the fake server failed", type,
	    body, bodylen);
 out:
	OPENSSL_free(der);
	BN_free(bn);
	X509_free(x);
	X509_NAME_free(fallback);
	EVP_PKEY_free(pk);
	IPC_ISSUE_RESP_free(resp);
	IPC_ISSUE_REQ_free(req);
	return ret;
}

static int
fake_health(struct fake *f, const struct ipc_message *m, int *type,
    uint8_t **body, size_t *bodylen)
{
	IPC_HEALTH_REQ *req = NULL;
	IPC_HEALTH_RESP *resp = NULL;
	int ret = -1;

	if (ipc_decode(IPC_HEALTH_REQ_it(), m->im_body, m->im_bodylen,
	    "health request", (void **)&req) != 0)
		return fake_error(IPC_REFUSE_BAD_MESSAGE, ipc_error_detail(),
		    type, body, bodylen);
	if ((resp = IPC_HEALTH_RESP_new()) != NULL) {
		ASN1_INTEGER_free(resp->nonce);
		if ((resp->nonce = ASN1_INTEGER_dup(req->nonce)) != NULL &&
		    ASN1_INTEGER_set(resp->token_up, 1) == 1 &&
		    ASN1_INTEGER_set_int64(resp->audit_seq, f->seq) == 1) {
			*type = IPC_T_HEALTH_RESP;
			ret = encode_body(IPC_T_HEALTH_RESP, resp, body,
			    bodylen);
		}
	}
	IPC_HEALTH_RESP_free(resp);
	IPC_HEALTH_REQ_free(req);
	return ret;
}

/*
 * The answer to one message, or none (*out NULL) when it does not open:
 * a bad MAC gets silence.  A repeated id gets its first answer again.
 */
static void
fake_answer(struct fake *f, const uint8_t *buf, size_t len, uint8_t **out,
    size_t *outlen)
{
	struct ipc_message m;
	uint8_t *body = NULL;
	size_t bodylen = 0, i, slot;
	int err, type = 0, ret;

	*out = NULL;
	*outlen = 0;
	err = ipc_open(f->o->key, buf, len, ipc_now_ms(), TC_WINDOW_MS, &m);
	if (err != 0 && err != IPC_ERR_STALE && err != IPC_ERR_TYPE) {
		warnx_("fake-server: no answer to %zu bytes: %s: %s", len,
		    ipc_strerror(err), ipc_error_detail());
		ipc_message_clear(&m);
		return;
	}
	for (i = 0; i < FAKE_CACHE; i++) {
		if (f->cache[i].msg != NULL &&
		    memcmp(f->cache[i].id, m.im_id, IPC_ID_LEN) == 0) {
			if ((*out = OPENSSL_memdup(f->cache[i].msg,
			    f->cache[i].len)) != NULL)
				*outlen = f->cache[i].len;
			ipc_message_clear(&m);
			return;
		}
	}
	if (err == IPC_ERR_STALE)
		ret = fake_error(IPC_REFUSE_STALE, ipc_error_detail(), &type,
		    &body, &bodylen);
	else if (err == IPC_ERR_TYPE)
		ret = fake_error(IPC_REFUSE_BAD_MESSAGE, ipc_error_detail(),
		    &type, &body, &bodylen);
	else if (m.im_type == IPC_T_ISSUE_CERT_REQ)
		ret = fake_issue(f, &m, &type, &body, &bodylen);
	else if (m.im_type == IPC_T_HEALTH_REQ)
		ret = fake_health(f, &m, &type, &body, &bodylen);
	else
		ret = fake_error(IPC_REFUSE_BAD_MESSAGE, "the fake server "
		    "answers only issue and health requests", &type, &body,
		    &bodylen);
	if (f->lie == LIE_ID)
		m.im_id[0] ^= 0x80;
	if (ret != 0 || ipc_seal(f->o->key, type, m.im_id, ipc_now_ms(), body,
	    bodylen, out, outlen) != 0) {
		warnx_("fake-server: cannot answer: %s", ipc_error_detail());
		*out = NULL;
		*outlen = 0;
	} else {
		slot = f->next++ % FAKE_CACHE;
		OPENSSL_free(f->cache[slot].msg);
		memcpy(f->cache[slot].id, m.im_id, IPC_ID_LEN);
		if ((f->cache[slot].msg = OPENSSL_memdup(*out, *outlen)) !=
		    NULL)
			f->cache[slot].len = *outlen;
	}
	OPENSSL_free(body);
	ipc_message_clear(&m);
}

static int
run_fake_server(const struct options *o, long count, enum fake_lie lie)
{
	struct fake *f;
	struct timespec pause = { 0, 200 * 1000 * 1000 };
	uint8_t *ans;
	size_t anslen, i;
	void *buf;
	long n;
	int s, v, len, rc = TC_OK;

	if ((f = calloc(1, sizeof(*f))) == NULL)
		return TC_LOCAL;
	f->o = o;
	f->lie = lie;
	if ((f->ca = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")) == NULL) {
		warnx_("fake-server: key generation failed");
		free(f);
		return TC_LOCAL;
	}
	if ((s = nn_socket(AF_SP, NN_REP)) < 0) {
		warnx_("nn_socket: %s", nn_strerror(nn_errno()));
		rc = TC_LOCAL;
		goto out;
	}
	v = IPC_MAX_MESSAGE;
	if (nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &v, sizeof(v)) < 0 ||
	    (v = o->timeout_ms, nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO,
	    &v, sizeof(v))) < 0 ||
	    nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDTIMEO, &v, sizeof(v)) < 0 ||
	    nn_bind(s, o->url) < 0) {
		warnx_("fake-server: %s: %s", o->url, nn_strerror(nn_errno()));
		rc = TC_LOCAL;
		goto close;
	}
	/* Idle longer than the timeout: the test has gone away. */
	for (n = 0; n < count; ) {
		if ((len = nn_recv(s, &buf, NN_MSG, 0)) < 0) {
			if (nn_errno() == EINTR)
				continue;
			warnx_("fake-server: %s after %ld requests",
			    nn_strerror(nn_errno()), n);
			rc = nn_errno() == ETIMEDOUT ? TC_TIMEOUT : TC_LOCAL;
			break;
		}
		n++;
		fake_answer(f, buf, (size_t)len, &ans, &anslen);
		nn_freemsg(buf);
		if (ans != NULL && nn_send(s, ans, anslen, 0) < 0)
			warnx_("fake-server: nn_send: %s",
			    nn_strerror(nn_errno()));
		OPENSSL_free(ans);
	}
	/* nanomsg 1.1.5 has no linger: let the last answer leave. */
	nanosleep(&pause, NULL);
 close:
	nn_close(s);
 out:
	for (i = 0; i < FAKE_CACHE; i++)
		OPENSSL_free(f->cache[i].msg);
	EVP_PKEY_free(f->ca);
	free(f);
	return rc;
}

/* --- commands ------------------------------------------------------------ */

enum {
	O_ID = 256, O_TIME_OFFSET, O_BAD_MAC, O_REPEAT, O_OUT, O_SAVE, O_HELP,
	O_KEY, O_PROFILE, O_SPKI, O_SPKI_GEN, O_SUBJECT, O_SAN, O_NOT_BEFORE,
	O_NOT_AFTER, O_REQUESTER, O_RULE, O_COUNT, O_CONCURRENCY, O_REVOKED,
	O_THIS_UPDATE, O_NEXT_UPDATE, O_NUMBER, O_LIE,
};

static int
bad_arg(const char *opt, const char *arg)
{
	warnx_("%s %s: invalid value", opt, arg);
	return TC_LOCAL;
}

/* issue and load share the issue options; load adds two. */
static int
cmd_issue(const struct options *o, int argc, char *argv[], int load)
{
	static const struct option lopts[] = {
		{ "key", required_argument, NULL, O_KEY },
		{ "profile", required_argument, NULL, O_PROFILE },
		{ "spki", required_argument, NULL, O_SPKI },
		{ "spki-gen", required_argument, NULL, O_SPKI_GEN },
		{ "subject", required_argument, NULL, O_SUBJECT },
		{ "san", required_argument, NULL, O_SAN },
		{ "not-before", required_argument, NULL, O_NOT_BEFORE },
		{ "not-after", required_argument, NULL, O_NOT_AFTER },
		{ "requester", required_argument, NULL, O_REQUESTER },
		{ "rule", required_argument, NULL, O_RULE },
		{ "count", required_argument, NULL, O_COUNT },
		{ "concurrency", required_argument, NULL, O_CONCURRENCY },
		{ NULL, 0, NULL, 0 },
	};
	struct issue_params ip;
	struct request rq;
	long long count = -1, conc = -1;
	int64_t now = (int64_t)time(NULL);
	int ch, rc;

	memset(&ip, 0, sizeof(ip));
	ip.subject = "";
	ip.requester = "test";
	ip.rule = "test";
	ip.not_before = now;
	ip.not_after = now + 3600;
	optind = 0;
	while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (ch) {
		case O_KEY:		ip.key_name = optarg; break;
		case O_PROFILE:		ip.profile = optarg; break;
		case O_SPKI:		ip.spki_file = optarg; break;
		case O_SPKI_GEN:
			if (key_alg_index(optarg) < 0)
				return bad_arg("--spki-gen", optarg);
			ip.spki_gen = optarg;
			break;
		case O_SUBJECT:		ip.subject = optarg; break;
		case O_SAN:
			if (ip.nsans >= TC_MAX_SANS) {
				warnx_("more than %d --san", TC_MAX_SANS);
				return TC_LOCAL;
			}
			ip.sans[ip.nsans++] = optarg;
			break;
		case O_NOT_BEFORE:
			if (parse_time(optarg, now, &ip.not_before) != 0)
				return bad_arg("--not-before", optarg);
			break;
		case O_NOT_AFTER:
			if (parse_time(optarg, now, &ip.not_after) != 0)
				return bad_arg("--not-after", optarg);
			break;
		case O_REQUESTER:	ip.requester = optarg; break;
		case O_RULE:		ip.rule = optarg; break;
		case O_COUNT:
			if (!load || parse_ll(optarg, 1, TC_MAX_COUNT,
			    &count) != 0)
				return bad_arg("--count", optarg);
			break;
		case O_CONCURRENCY:
			if (!load || parse_ll(optarg, 1, TC_MAX_THREADS,
			    &conc) != 0)
				return bad_arg("--concurrency", optarg);
			break;
		default:
			usage();
			return TC_LOCAL;
		}
	}
	if (optind != argc) {
		warnx_("%s: unexpected argument %s", argv[0], argv[optind]);
		return TC_LOCAL;
	}
	if (ip.key_name == NULL || ip.profile == NULL) {
		warnx_("%s: --key and --profile are required", argv[0]);
		return TC_LOCAL;
	}
	if (ip.spki_file != NULL && ip.spki_gen != NULL) {
		warnx_("%s: --spki and --spki-gen exclude each other",
		    argv[0]);
		return TC_LOCAL;
	}
	if (ip.spki_file == NULL && ip.spki_gen == NULL)
		ip.spki_gen = "ec-p256";
	if (load) {
		if (count < 0 || conc < 0) {
			warnx_("load: --count and --concurrency are required");
			return TC_LOCAL;
		}
		if (o->repeat != 1 || o->save != NULL) {
			warnx_("load: --repeat and --save do not apply");
			return TC_LOCAL;
		}
		return run_load(o, &ip, (long)count, (long)conc);
	}
	memset(&rq, 0, sizeof(rq));
	rq.type = IPC_T_ISSUE_CERT_REQ;
	rq.resp_type = IPC_T_ISSUE_CERT_RESP;
	{
		uint8_t *spki = NULL;
		size_t spkilen = 0;

		if ((ip.spki_file != NULL ? spki_load(ip.spki_file, &spki,
		    &spkilen) : spki_generate(ip.spki_gen, &spki,
		    &spkilen)) != 0)
			return TC_LOCAL;
		rq.spki = spki;
		rq.spkilen = spkilen;
		if (issue_body(&ip, spki, spkilen, &rq.body, &rq.bodylen) != 0)
			rc = TC_LOCAL;
		else
			rc = run_single(o, &rq);
		OPENSSL_free(rq.body);
		OPENSSL_free(spki);
	}
	return rc;
}

static int
cmd_crl(const struct options *o, int argc, char *argv[])
{
	static const struct option lopts[] = {
		{ "key", required_argument, NULL, O_KEY },
		{ "revoked", required_argument, NULL, O_REVOKED },
		{ "this-update", required_argument, NULL, O_THIS_UPDATE },
		{ "next-update", required_argument, NULL, O_NEXT_UPDATE },
		{ "number", required_argument, NULL, O_NUMBER },
		{ "requester", required_argument, NULL, O_REQUESTER },
		{ NULL, 0, NULL, 0 },
	};
	IPC_CRL_REQ *req;
	IPC_REVOKED *rev;
	struct request rq;
	const char *key = NULL, *requester = "test";
	int64_t now = (int64_t)time(NULL), thisu, nextu;
	long long number;
	int ch, rc = TC_LOCAL;

	thisu = now;
	nextu = now + 86400;
	number = now;		/* grows from run to run */
	if ((req = IPC_CRL_REQ_new()) == NULL)
		return TC_LOCAL;
	if (req->revoked == NULL &&
	    (req->revoked = sk_IPC_REVOKED_new_null()) == NULL)
		goto out;
	optind = 0;
	while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (ch) {
		case O_KEY:		key = optarg; break;
		case O_REQUESTER:	requester = optarg; break;
		case O_REVOKED:
			if (sk_IPC_REVOKED_num(req->revoked) >= TC_MAX_REVOKED) {
				warnx_("more than %d --revoked",
				    TC_MAX_REVOKED);
				goto out;
			}
			if ((rev = parse_revoked(optarg)) == NULL)
				goto out;
			if (sk_IPC_REVOKED_push(req->revoked, rev) <= 0) {
				IPC_REVOKED_free(rev);
				goto out;
			}
			break;
		case O_THIS_UPDATE:
			if (parse_time(optarg, now, &thisu) != 0) {
				rc = bad_arg("--this-update", optarg);
				goto out;
			}
			break;
		case O_NEXT_UPDATE:
			if (parse_time(optarg, now, &nextu) != 0) {
				rc = bad_arg("--next-update", optarg);
				goto out;
			}
			break;
		case O_NUMBER:
			if (parse_ll(optarg, 0, LLONG_MAX, &number) != 0) {
				rc = bad_arg("--number", optarg);
				goto out;
			}
			break;
		default:
			usage();
			goto out;
		}
	}
	if (optind != argc || key == NULL) {
		warnx_("crl: --key is required, and nothing else");
		goto out;
	}
	if (set_utf8(req->key_name, key) != 0 ||
	    set_utf8(req->requester, requester) != 0 ||
	    ASN1_INTEGER_set_int64(req->this_update, thisu) != 1 ||
	    ASN1_INTEGER_set_int64(req->next_update, nextu) != 1 ||
	    ASN1_INTEGER_set_int64(req->crl_number, number) != 1)
		goto out;
	memset(&rq, 0, sizeof(rq));
	rq.type = IPC_T_SIGN_CRL_REQ;
	rq.resp_type = IPC_T_SIGN_CRL_RESP;
	rq.crl = req;
	if (encode_body(rq.type, req, &rq.body, &rq.bodylen) != 0)
		goto out;
	rc = run_single(o, &rq);
	OPENSSL_free(rq.body);
 out:
	IPC_CRL_REQ_free(req);
	return rc;
}

static int
cmd_info(const struct options *o, int argc, char *argv[])
{
	static const struct option lopts[] = {
		{ "key", required_argument, NULL, O_KEY },
		{ NULL, 0, NULL, 0 },
	};
	IPC_CA_INFO_REQ *req;
	struct request rq;
	int ch, rc = TC_LOCAL;

	memset(&rq, 0, sizeof(rq));
	rq.key_name = "";
	optind = 0;
	while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		if (ch != O_KEY) {
			usage();
			return TC_LOCAL;
		}
		rq.key_name = optarg;
	}
	if (optind != argc) {
		warnx_("info: unexpected argument %s", argv[optind]);
		return TC_LOCAL;
	}
	rq.type = IPC_T_CA_INFO_REQ;
	rq.resp_type = IPC_T_CA_INFO_RESP;
	if ((req = IPC_CA_INFO_REQ_new()) == NULL)
		return TC_LOCAL;
	if (set_utf8(req->key_name, rq.key_name) == 0 &&
	    encode_body(rq.type, req, &rq.body, &rq.bodylen) == 0) {
		rc = run_single(o, &rq);
		OPENSSL_free(rq.body);
	}
	IPC_CA_INFO_REQ_free(req);
	return rc;
}

static int
cmd_health(const struct options *o, int argc, char *argv[])
{
	IPC_HEALTH_REQ *req;
	struct request rq;
	uint8_t nb[8];
	uint64_t n = 0;
	size_t i;
	int rc = TC_LOCAL;

	if (argc != 1) {
		warnx_("health: unexpected argument %s", argv[1]);
		return TC_LOCAL;
	}
	if (RAND_bytes(nb, sizeof(nb)) != 1)
		return TC_LOCAL;
	for (i = 0; i < sizeof(nb); i++)
		n = n << 8 | nb[i];
	memset(&rq, 0, sizeof(rq));
	rq.type = IPC_T_HEALTH_REQ;
	rq.resp_type = IPC_T_HEALTH_RESP;
	rq.nonce = (int64_t)(n >> 2);
	if ((req = IPC_HEALTH_REQ_new()) == NULL)
		return TC_LOCAL;
	if (ASN1_INTEGER_set_int64(req->nonce, rq.nonce) == 1 &&
	    encode_body(rq.type, req, &rq.body, &rq.bodylen) == 0) {
		rc = run_single(o, &rq);
		OPENSSL_free(rq.body);
	}
	IPC_HEALTH_REQ_free(req);
	return rc;
}

static int
cmd_fake_server(const struct options *o, int argc, char *argv[])
{
	static const struct option lopts[] = {
		{ "count", required_argument, NULL, O_COUNT },
		{ "lie", required_argument, NULL, O_LIE },
		{ NULL, 0, NULL, 0 },
	};
	enum fake_lie lie = LIE_NONE;
	long long count = -1;
	int ch;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		if (ch == O_COUNT && parse_ll(optarg, 1, TC_MAX_COUNT,
		    &count) == 0)
			continue;
		if (ch == O_LIE && strcmp(optarg, "key") == 0)
			lie = LIE_KEY;
		else if (ch == O_LIE && strcmp(optarg, "serial") == 0)
			lie = LIE_SERIAL;
		else if (ch == O_LIE && strcmp(optarg, "id") == 0)
			lie = LIE_ID;
		else {
			warnx_("fake-server --count N [--lie key|serial|id]");
			return TC_LOCAL;
		}
	}
	if (optind != argc || count < 0) {
		warnx_("fake-server --count N [--lie key|serial|id]");
		return TC_LOCAL;
	}
	return run_fake_server(o, (long)count, lie);
}

int
main(int argc, char *argv[])
{
	static const struct option lopts[] = {
		{ "id", required_argument, NULL, O_ID },
		{ "time-offset", required_argument, NULL, O_TIME_OFFSET },
		{ "bad-mac", no_argument, NULL, O_BAD_MAC },
		{ "repeat", required_argument, NULL, O_REPEAT },
		{ "out", required_argument, NULL, O_OUT },
		{ "save", required_argument, NULL, O_SAVE },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	struct options o;
	long long v;
	const char *cmd;
	int ch, err, rc;

	memset(&o, 0, sizeof(o));
	o.timeout_ms = TC_DEFAULT_TIMEOUT;
	o.repeat = 1;
	while ((ch = getopt_long(argc, argv, "+s:k:t:h", lopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			o.url = optarg;
			break;
		case 'k':
			o.keyfile = optarg;
			break;
		case 't':
			if (parse_ll(optarg, 1, TC_MAX_TIMEOUT, &v) != 0)
				return bad_arg("-t", optarg);
			o.timeout_ms = (int)v;
			break;
		case O_ID:
			if (parse_id(optarg, o.id) != 0) {
				warnx_("--id %s: expected %d hex digits",
				    optarg, 2 * IPC_ID_LEN);
				return TC_LOCAL;
			}
			o.have_id = 1;
			break;
		case O_TIME_OFFSET:
			if (parse_ll(optarg, -TC_MAX_OFFSET_MS,
			    TC_MAX_OFFSET_MS, &v) != 0)
				return bad_arg("--time-offset", optarg);
			o.time_offset_ms = v;
			break;
		case O_BAD_MAC:
			o.bad_mac = 1;
			break;
		case O_REPEAT:
			if (parse_ll(optarg, 1, TC_MAX_REPEAT, &v) != 0)
				return bad_arg("--repeat", optarg);
			o.repeat = (long)v;
			break;
		case O_OUT:
			o.out = optarg;
			break;
		case O_SAVE:
			o.save = optarg;
			break;
		case 'h':
		case O_HELP:
			usage();
			return TC_OK;
		default:
			usage();
			return TC_LOCAL;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1) {
		warnx_("no command");
		usage();
		return TC_LOCAL;
	}
	if (o.url == NULL || o.keyfile == NULL) {
		warnx_("-s URL and -k MACKEY_FILE are required");
		return TC_LOCAL;
	}
	if (strlen(o.url) >= 128) {
		warnx_("-s %s: too long for a socket address", o.url);
		return TC_LOCAL;
	}
	if ((err = ipc_key_load(o.keyfile, o.key)) != 0) {
		warnx_("-k %s: %s: %s", o.keyfile, ipc_strerror(err),
		    ipc_error_detail());
		return TC_LOCAL;
	}
	cmd = argv[0];
	if (strcmp(cmd, "issue") == 0)
		rc = cmd_issue(&o, argc, argv, 0);
	else if (strcmp(cmd, "load") == 0)
		rc = cmd_issue(&o, argc, argv, 1);
	else if (strcmp(cmd, "crl") == 0)
		rc = cmd_crl(&o, argc, argv);
	else if (strcmp(cmd, "info") == 0)
		rc = cmd_info(&o, argc, argv);
	else if (strcmp(cmd, "health") == 0)
		rc = cmd_health(&o, argc, argv);
	else if (strcmp(cmd, "raw") == 0) {
		if (argc != 2) {
			warnx_("raw FILE");
			rc = TC_LOCAL;
		} else
			rc = run_raw(&o, argv[1]);
	} else if (strcmp(cmd, "fake-server") == 0)
		rc = cmd_fake_server(&o, argc, argv);
	else {
		warnx_("%s: unknown command", cmd);
		usage();
		rc = TC_LOCAL;
	}
	OPENSSL_cleanse(o.key, sizeof(o.key));
	if (fflush(stdout) != 0 || ferror(stdout)) {
		warnx_("stdout: write error");
		rc = TC_LOCAL;
	}
	return rc;
}
