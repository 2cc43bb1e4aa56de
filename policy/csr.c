/*
 * Certificate signing requests from the network (csr.h).
 *
 * Everything here is untrusted input, so the parse is strict at every
 * layer: the PEM armour is checked by hand (OpenSSL's PEM reader accepts
 * headers, junk around the block and several blocks), the base64 is
 * checked character by character before it is decoded, and the DER must
 * be DER: OpenSSL keeps the bytes it received for the signed part, the
 * subject and the contents of attributes and extensions, so a plain
 * i2d() would hand back BER unchanged.  The signed part is therefore
 * re-encoded from its fields and the extension request and the
 * subjectAltName are decoded and re-encoded on their own.
 */
#include "config.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/asn1t.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "csr.h"

#define CSR_MAX_CN		64	/* bytes of the subject CN, UTF-8 */
#define CSR_RSA_MAX_E_BITS	256	/* exponent below 2^256 */

/*
 * The CSR (RFC 2986) through our own templates rather than X509_REQ:
 * OpenSSL 3.0 decodes an X509_PUBKEY into a key through its provider
 * decoders as soon as it is read, which costs twice the CSR's signature
 * check.  Here the key stays bytes until csr_check_key has looked at its
 * algorithm and builds the key from its parts.  No encoding is cached:
 * i2d encodes from the fields, which csr_check_der relies on.
 */
typedef struct {
	X509_ALGOR		*algor;
	ASN1_BIT_STRING		*key;
} CSR_SPKI;

typedef struct {
	ASN1_INTEGER		*version;
	X509_NAME		*subject;
	CSR_SPKI		*spki;
	STACK_OF(X509_ATTRIBUTE) *attributes;
} CSR_INFO;

typedef struct {
	CSR_INFO		*info;
	X509_ALGOR		*sigalg;
	ASN1_BIT_STRING		*signature;
} CSR_REQ;

DECLARE_ASN1_FUNCTIONS(CSR_SPKI)
DECLARE_ASN1_FUNCTIONS(CSR_INFO)
DECLARE_ASN1_FUNCTIONS(CSR_REQ)

ASN1_SEQUENCE(CSR_SPKI) = {
	ASN1_SIMPLE(CSR_SPKI, algor, X509_ALGOR),
	ASN1_SIMPLE(CSR_SPKI, key, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(CSR_SPKI)
IMPLEMENT_ASN1_FUNCTIONS(CSR_SPKI)

/* attributes is not OPTIONAL, unlike OpenSSL's lenient X509_REQ_INFO */
ASN1_SEQUENCE(CSR_INFO) = {
	ASN1_SIMPLE(CSR_INFO, version, ASN1_INTEGER),
	ASN1_SIMPLE(CSR_INFO, subject, X509_NAME),
	ASN1_SIMPLE(CSR_INFO, spki, CSR_SPKI),
	ASN1_IMP_SET_OF(CSR_INFO, attributes, X509_ATTRIBUTE, 0),
} ASN1_SEQUENCE_END(CSR_INFO)
IMPLEMENT_ASN1_FUNCTIONS(CSR_INFO)

ASN1_SEQUENCE(CSR_REQ) = {
	ASN1_SIMPLE(CSR_REQ, info, CSR_INFO),
	ASN1_SIMPLE(CSR_REQ, sigalg, X509_ALGOR),
	ASN1_SIMPLE(CSR_REQ, signature, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(CSR_REQ)
IMPLEMENT_ASN1_FUNCTIONS(CSR_REQ)

static const char csr_begin[] = "-----BEGIN ";
static const char csr_end[] = "-----END ";
static const char csr_dashes[] = "-----";
static const char *const csr_labels[] = {
	"CERTIFICATE REQUEST",
	"NEW CERTIFICATE REQUEST"
};

static int	csr_fail(struct csr_error *, const char *, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

/*
 * Fills err and returns -1.  The OpenSSL error queue is emptied by
 * csr_parse on the way out, so nothing of this request reaches the next.
 */
static int
csr_fail(struct csr_error *err, const char *code, const char *fmt, ...)
{
	va_list ap;

	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* The reason of OpenSSL's last error, for messages; never NULL. */
static const char *
csr_ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = NULL;

	if (e != 0)
		r = ERR_reason_error_string(e);
	return r != NULL ? r : "no detail";
}

static int
csr_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int
csr_is_base64(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* The value of a base64 character already checked by csr_is_base64. */
static unsigned int
csr_base64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : 63;
}

/*
 * Matches text at p (up to end) against s; returns the length of s when
 * it is there, else 0.
 */
static size_t
csr_match(const char *p, const char *end, const char *s)
{
	size_t n = strlen(s);

	if ((size_t)(end - p) < n || memcmp(p, s, n) != 0)
		return 0;
	return n;
}

/*
 * Finds the end of the line starting at p: returns the position of its
 * '\n' (or end), and sets *contentlen to the length without a final
 * '\r'.
 */
static const char *
csr_line_end(const char *p, const char *end, size_t *contentlen)
{
	const char *nl = memchr(p, '\n', end - p);

	if (nl == NULL)
		nl = end;
	*contentlen = nl - p;
	if (*contentlen > 0 && p[*contentlen - 1] == '\r')
		(*contentlen)--;
	return nl;
}

/*
 * Strict PEM: whitespace, one BEGIN line with a CSR label, base64 lines
 * (no headers, no empty lines), the matching END line, whitespace.  On
 * success *der (malloc'd) holds the decoded bytes.
 */
static int
csr_pem_decode(const char *pem, size_t pemlen, uint8_t **der, size_t *derlen,
    struct csr_error *err)
{
	const char *p = pem, *end = pem + pemlen, *nl, *label = NULL;
	char *b64 = NULL;
	uint8_t *out = NULL;
	size_t b64len = 0, len, n, i, pad;
	unsigned int line = 1, last;
	int rv = -1, outlen;

	*der = NULL;
	*derlen = 0;
	if (memchr(pem, '\0', pemlen) != NULL)
		return csr_fail(err, "csr_malformed", "the PEM text contains "
		    "a NUL byte");
	while (p < end && csr_is_space(*p)) {
		if (*p++ == '\n')
			line++;
	}
	if (p == end)
		return csr_fail(err, "csr_malformed", "no PEM block: the "
		    "input is empty");
	if ((n = csr_match(p, end, csr_begin)) == 0)
		return csr_fail(err, "csr_malformed", "line %u: text before "
		    "the PEM block (expected \"-----BEGIN CERTIFICATE "
		    "REQUEST-----\")", line);
	p += n;
	for (i = 0; i < sizeof(csr_labels) / sizeof(csr_labels[0]); i++) {
		if ((n = csr_match(p, end, csr_labels[i])) != 0 &&
		    csr_match(p + n, end, csr_dashes) != 0) {
			label = csr_labels[i];
			break;
		}
	}
	if (label == NULL)
		return csr_fail(err, "csr_malformed", "line %u: the PEM block "
		    "is not a CERTIFICATE REQUEST", line);
	p += n + strlen(csr_dashes);
	nl = csr_line_end(p, end, &len);
	if (len != 0)
		return csr_fail(err, "csr_malformed", "line %u: text after "
		    "the BEGIN line", line);
	if (nl == end)
		return csr_fail(err, "csr_malformed", "line %u: the PEM block "
		    "has no END line", line);
	p = nl + 1;
	line++;

	/* The base64 is never longer than the PEM text it comes from. */
	if ((b64 = malloc(pemlen + 1)) == NULL)
		return csr_fail(err, "csr_malformed", "out of memory");
	for (;;) {
		if (p == end) {
			csr_fail(err, "csr_malformed", "line %u: the PEM block "
			    "has no END line", line);
			goto out;
		}
		nl = csr_line_end(p, end, &len);
		if (csr_match(p, end, csr_dashes) != 0)
			break;
		if (len == 0) {
			csr_fail(err, "csr_malformed", "line %u: empty line "
			    "inside the PEM block", line);
			goto out;
		}
		if (memchr(p, ':', len) != NULL) {
			csr_fail(err, "csr_malformed", "line %u: PEM headers "
			    "(such as Proc-Type) are not accepted", line);
			goto out;
		}
		for (i = 0; i < len; i++) {
			if (!csr_is_base64(p[i]) && p[i] != '=') {
				csr_fail(err, "csr_malformed", "line %u, "
				    "column %zu: byte 0x%02x is not base64",
				    line, i + 1, (unsigned char)p[i]);
				goto out;
			}
		}
		memcpy(b64 + b64len, p, len);
		b64len += len;
		if (nl == end) {
			csr_fail(err, "csr_malformed", "line %u: the PEM block "
			    "has no END line", line + 1);
			goto out;
		}
		p = nl + 1;
		line++;
	}

	/* p is at the END line. */
	n = csr_match(p, end, csr_end);
	if (n == 0 || csr_match(p + n, end, label) == 0 ||
	    csr_match(p + n + strlen(label), end, csr_dashes) == 0) {
		csr_fail(err, "csr_malformed", "line %u: the END line does "
		    "not match \"-----BEGIN %s-----\"", line, label);
		goto out;
	}
	p += n + strlen(label) + strlen(csr_dashes);
	while (p < end && csr_is_space(*p)) {
		if (*p++ == '\n')
			line++;
	}
	if (p != end) {
		if (csr_match(p, end, csr_begin) != 0)
			csr_fail(err, "csr_malformed", "line %u: more than one "
			    "PEM block", line);
		else
			csr_fail(err, "csr_malformed", "line %u: text after "
			    "the PEM block", line);
		goto out;
	}

	/*
	 * Padding only at the very end, and the bits it stands for zero, so
	 * that one DER has exactly one base64 form.
	 */
	if (b64len == 0 || b64len % 4 != 0) {
		csr_fail(err, "csr_malformed", "the base64 is %zu characters, "
		    "not a non-zero multiple of 4", b64len);
		goto out;
	}
	pad = b64[b64len - 1] == '=' ? (b64[b64len - 2] == '=' ? 2 : 1) : 0;
	if (memchr(b64, '=', b64len - pad) != NULL) {
		csr_fail(err, "csr_malformed", "'=' inside the base64, before "
		    "its end");
		goto out;
	}
	if (pad > 0) {
		last = csr_base64_value(b64[b64len - pad - 1]);
		if ((pad == 2 && (last & 0x0f) != 0) ||
		    (pad == 1 && (last & 0x03) != 0)) {
			csr_fail(err, "csr_malformed", "the base64 padding is "
			    "not canonical (non-zero unused bits)");
			goto out;
		}
	}
	if ((out = malloc(b64len / 4 * 3)) == NULL) {
		csr_fail(err, "csr_malformed", "out of memory");
		goto out;
	}
	b64[b64len] = '\0';
	outlen = EVP_DecodeBlock(out, (unsigned char *)b64, (int)b64len);
	if (outlen < 0 || (size_t)outlen != b64len / 4 * 3) {
		csr_fail(err, "csr_malformed", "the base64 does not decode");
		goto out;
	}
	*der = out;
	*derlen = (size_t)outlen - pad;
	out = NULL;
	rv = 0;
 out:
	free(out);
	free(b64);
	return rv;
}

/*
 * DER is what d2i reads and i2d writes back.  CSR_REQ caches no encoding,
 * so i2d encodes it from its fields; the subject keeps its received bytes
 * even so, so it is rebuilt from its entries and compared on its own.
 */
static int
csr_check_der(CSR_REQ *req, const uint8_t *der, size_t derlen,
    struct csr_error *err)
{
	const X509_NAME *subject;
	X509_NAME *fresh = NULL;
	const X509_NAME_ENTRY *ne;
	uint8_t *re = NULL, *re2 = NULL;
	int relen, relen2, i, set, prevset = -1, rv = -1;

	if ((relen = i2d_CSR_REQ(req, &re)) <= 0) {
		csr_fail(err, "csr_malformed", "the CSR does not re-encode: %s",
		    csr_ssl_reason());
		goto out;
	}
	if ((size_t)relen != derlen || memcmp(re, der, derlen) != 0) {
		csr_fail(err, "csr_malformed", "the CSR is not DER (BER or a "
		    "non-canonical encoding)");
		goto out;
	}

	subject = req->info->subject;
	if ((fresh = X509_NAME_new()) == NULL)
		goto oom;
	for (i = 0; i < X509_NAME_entry_count(subject); i++) {
		ne = X509_NAME_get_entry(subject, i);
		set = X509_NAME_ENTRY_set(ne);
		/* -1: into the previous RDN (multi-valued); 0: a new RDN */
		if (!X509_NAME_add_entry(fresh, ne, -1,
		    i > 0 && set == prevset ? -1 : 0))
			goto oom;
		prevset = set;
	}
	relen = i2d_X509_NAME(subject, NULL);
	relen2 = i2d_X509_NAME(fresh, &re2);
	OPENSSL_free(re);
	re = NULL;
	if (relen <= 0 || relen2 <= 0 || i2d_X509_NAME(subject, &re) != relen) {
		csr_fail(err, "csr_malformed", "the subject does not "
		    "re-encode: %s", csr_ssl_reason());
		goto out;
	}
	if (relen != relen2 || memcmp(re, re2, relen) != 0) {
		csr_fail(err, "csr_malformed", "the subject is not DER (BER "
		    "or a non-canonical encoding)");
		goto out;
	}

	rv = 0;
	goto out;
 oom:
	csr_fail(err, "csr_malformed", "out of memory");
 out:
	X509_NAME_free(fresh);
	OPENSSL_free(re);
	OPENSSL_free(re2);
	return rv;
}

/* Name of an object for messages: its short name, else dotted. */
static void
csr_obj_name(const ASN1_OBJECT *obj, char *buf, size_t len)
{
	if (obj == NULL || OBJ_obj2txt(buf, (int)len, obj, 0) <= 0)
		snprintf(buf, len, "(unknown)");
}

/*
 * EC public keys from their curve and point, without the decoders: a key
 * holding only the curve is made once per curve, and each CSR's key is a
 * copy of it with the point set.  Making the curve's group costs three
 * times the copy (measured: EVP_PKEY_fromdata 41 us, this 10 us).
 */
static const char *const csr_ec_groups[] = {
	SN_X9_62_prime256v1,
	SN_secp384r1
};
static EVP_PKEY *csr_ec_curves[2];
static CRYPTO_ONCE csr_ec_once = CRYPTO_ONCE_STATIC_INIT;

static void
csr_ec_init(void)
{
	OSSL_PARAM params[2];
	EVP_PKEY_CTX *ctx;
	size_t i;

	for (i = 0; i < sizeof(csr_ec_groups) / sizeof(csr_ec_groups[0]);
	    i++) {
		params[0] = OSSL_PARAM_construct_utf8_string(
		    OSSL_PKEY_PARAM_GROUP_NAME,
		    (char *)(uintptr_t)csr_ec_groups[i], 0);
		params[1] = OSSL_PARAM_construct_end();
		if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC",
		    NULL)) == NULL)
			continue;
		if (EVP_PKEY_paramgen_init(ctx) != 1 ||
		    EVP_PKEY_CTX_set_params(ctx, params) != 1 ||
		    EVP_PKEY_paramgen(ctx, &csr_ec_curves[i]) != 1)
			csr_ec_curves[i] = NULL;
		EVP_PKEY_CTX_free(ctx);
	}
}

/* NULL if the point is not on the curve (or out of memory). */
static EVP_PKEY *
csr_ec_key(size_t curve, const unsigned char *pt, size_t ptlen)
{
	EVP_PKEY *pkey;

	if (curve >= sizeof(csr_ec_curves) / sizeof(csr_ec_curves[0]) ||
	    !CRYPTO_THREAD_run_once(&csr_ec_once, csr_ec_init) ||
	    csr_ec_curves[curve] == NULL ||
	    (pkey = EVP_PKEY_dup(csr_ec_curves[curve])) == NULL)
		return NULL;
	if (EVP_PKEY_set1_encoded_public_key(pkey, pt, ptlen) != 1) {
		EVP_PKEY_free(pkey);
		return NULL;
	}
	return pkey;
}

/*
 * The key: from the SPKI's algorithm first (so that an unknown curve is
 * named rather than failing to decode), then the key made from its parts.
 * EC points must be uncompressed and of their curve's length, and
 * OpenSSL refuses coordinates out of range and points off the curve when
 * it makes the key, so the received bytes are the one encoding of that
 * key.  RSA keys go through d2i_PUBKEY and are compared
 * with their re-encoding in csr_spki.  On success *pkeyp is the caller's.
 */
static int
csr_check_key(CSR_REQ *req, EVP_PKEY **pkeyp, enum rules_key_alg *alg,
    struct csr_error *err)
{
	const CSR_SPKI *spki = req->info->spki;
	const ASN1_OBJECT *kalg = NULL, *curve;
	const unsigned char *key, *p;
	const void *pval = NULL;
	uint8_t *der = NULL;
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	BIGNUM *e = NULL;
	char name[80];
	size_t fieldlen, curveidx;
	int knid, ptype = V_ASN1_UNDEF, bits, keylen, derlen, rv = -1;

	*pkeyp = NULL;
	*alg = 0;
	X509_ALGOR_get0(&kalg, &ptype, &pval, spki->algor);
	key = ASN1_STRING_get0_data(spki->key);
	keylen = ASN1_STRING_length(spki->key);
	if ((spki->key->flags & 0x07) != 0)
		return csr_fail(err, "csr_malformed", "the public key's BIT "
		    "STRING has %ld unused bits (0 expected)",
		    spki->key->flags & 0x07);
	if (key == NULL || keylen <= 0)
		return csr_fail(err, "csr_malformed", "the public key is "
		    "empty");
	knid = OBJ_obj2nid(kalg);
	switch (knid) {
	case NID_X9_62_id_ecPublicKey:
		if (ptype != V_ASN1_OBJECT)
			return csr_fail(err, "key_unsupported", "EC key "
			    "without a named curve (explicit or implicit "
			    "parameters are not accepted)");
		curve = pval;
		switch (OBJ_obj2nid(curve)) {
		case NID_X9_62_prime256v1:
			*alg = RULES_ALG_EC_P256;
			curveidx = 0;
			fieldlen = 32;
			break;
		case NID_secp384r1:
			*alg = RULES_ALG_EC_P384;
			curveidx = 1;
			fieldlen = 48;
			break;
		default:
			csr_obj_name(curve, name, sizeof(name));
			return csr_fail(err, "key_unsupported", "EC curve %s "
			    "is not supported (only P-256 and P-384)", name);
		}
		/* The signer issues for uncompressed points only (RFC 5480
		 * makes only that form mandatory to support): refusing the
		 * others here spends no token use on a certain refusal. */
		if ((size_t)keylen == 1 + fieldlen &&
		    (key[0] == 0x02 || key[0] == 0x03)) {
			csr_fail(err, "key_unsupported", "the EC public key is "
			    "a compressed point: only uncompressed points are "
			    "accepted");
			goto out;
		}
		if ((size_t)keylen != 1 + 2 * fieldlen || key[0] != 0x04) {
			csr_fail(err, "csr_malformed", "the public key is not "
			    "valid (%d bytes starting 0x%02x: not an "
			    "uncompressed point of the curve)", keylen, key[0]);
			goto out;
		}
		if ((pkey = csr_ec_key(curveidx, key, (size_t)keylen)) ==
		    NULL) {
			csr_fail(err, "csr_malformed", "the public key is not "
			    "valid (not a point on its curve)");
			goto out;
		}
		break;
	case NID_rsaEncryption:
		if ((derlen = i2d_CSR_SPKI(spki, &der)) <= 0) {
			csr_fail(err, "csr_malformed", "the public key does "
			    "not re-encode: %s", csr_ssl_reason());
			goto out;
		}
		p = der;
		if ((pkey = d2i_PUBKEY(NULL, &p, derlen)) == NULL ||
		    p != der + derlen) {
			csr_fail(err, "csr_malformed", "the public key is not "
			    "valid: %s", csr_ssl_reason());
			goto out;
		}
		break;
	case NID_ED25519:
		*alg = RULES_ALG_ED25519;
		/* RFC 8410: the parameters are absent, the key 32 bytes */
		if (ptype != V_ASN1_UNDEF || keylen != 32) {
			csr_fail(err, "csr_malformed", "the public key is not "
			    "valid (an Ed25519 key is 32 bytes without "
			    "parameters)");
			goto out;
		}
		if ((pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519",
		    NULL, key, (size_t)keylen)) == NULL) {
			csr_fail(err, "csr_malformed", "the public key is not "
			    "valid: %s", csr_ssl_reason());
			goto out;
		}
		break;
	default:
		csr_obj_name(kalg, name, sizeof(name));
		return csr_fail(err, "key_unsupported", "public key algorithm "
		    "%s is not supported (only EC P-256 and P-384, RSA and "
		    "Ed25519)", name);
	}

	if (knid == NID_rsaEncryption) {
		bits = EVP_PKEY_get_bits(pkey);
		switch (bits) {
		case 2048:
			*alg = RULES_ALG_RSA_2048;
			break;
		case 3072:
			*alg = RULES_ALG_RSA_3072;
			break;
		case 4096:
			*alg = RULES_ALG_RSA_4096;
			break;
		default:
			/* csr.h: an unsupported size is key_too_weak too. */
			csr_fail(err, "key_too_weak", "RSA key of %d bits: "
			    "only 2048, 3072 or 4096 bits are accepted", bits);
			goto out;
		}
		if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e)) {
			csr_fail(err, "csr_malformed", "the RSA key has no "
			    "public exponent");
			goto out;
		}
		if (!BN_is_odd(e) || BN_num_bits(e) > CSR_RSA_MAX_E_BITS) {
			csr_fail(err, "key_unsupported", "RSA public exponent "
			    "must be odd and below 2^256");
			goto out;
		}
		if (BN_num_bits(e) < 17) {	/* 65537 = 2^16 + 1 */
			csr_fail(err, "key_too_weak", "RSA public exponent "
			    "below 65537");
			goto out;
		}
	}

	if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)) == NULL) {
		csr_fail(err, "csr_malformed", "out of memory");
		goto out;
	}
	/*
	 * P-256 and P-384 have cofactor 1: a point on the curve, not at
	 * infinity, with coordinates in range, is in the prime-order group,
	 * so the quick check is the whole check (SP 800-56A 5.6.2.3.4), and
	 * it spares the scalar multiplication by the order that the full
	 * check costs (as much as the CSR's signature check).
	 */
	if ((knid == NID_X9_62_id_ecPublicKey ?
	    EVP_PKEY_public_check_quick(ctx) :
	    EVP_PKEY_public_check(ctx)) != 1) {
		csr_fail(err, "csr_malformed", "the public key is not valid "
		    "(%s)", knid == NID_X9_62_id_ecPublicKey ?
		    "not a point on its curve" : csr_ssl_reason());
		goto out;
	}
	*pkeyp = pkey;
	pkey = NULL;
	rv = 0;
 out:
	BN_free(e);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pkey);
	OPENSSL_free(der);
	if (rv != 0)
		*alg = 0;
	return rv;
}

static int
csr_md_allowed(int mdnid)
{
	switch (mdnid) {
	case NID_sha224:
	case NID_sha256:
	case NID_sha384:
	case NID_sha512:
	case NID_sha3_224:
	case NID_sha3_256:
	case NID_sha3_384:
	case NID_sha3_512:
		return 1;
	default:
		return 0;
	}
}

/*
 * RSASSA-PSS names its hashes in parameters; an absent one means SHA-1.
 * The mask generation function must be MGF1 with an accepted hash too.
 */
static int
csr_pss_allowed(const X509_ALGOR *sigalg)
{
	const ASN1_OBJECT *obj;
	const void *pval;
	RSA_PSS_PARAMS *pss;
	X509_ALGOR *mgf1md = NULL;
	int ptype, ok = 0;

	X509_ALGOR_get0(NULL, &ptype, &pval, sigalg);
	if (ptype != V_ASN1_SEQUENCE)
		return 0;
	pss = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(RSA_PSS_PARAMS),
	    sigalg->parameter);
	if (pss == NULL)
		return 0;
	if (pss->hashAlgorithm == NULL || pss->maskGenAlgorithm == NULL ||
	    OBJ_obj2nid(pss->maskGenAlgorithm->algorithm) != NID_mgf1 ||
	    pss->maskGenAlgorithm->parameter == NULL)
		goto out;
	mgf1md = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(X509_ALGOR),
	    pss->maskGenAlgorithm->parameter);
	if (mgf1md == NULL)
		goto out;
	X509_ALGOR_get0(&obj, NULL, NULL, pss->hashAlgorithm);
	ok = csr_md_allowed(OBJ_obj2nid(obj));
	X509_ALGOR_get0(&obj, NULL, NULL, mgf1md);
	ok = ok && csr_md_allowed(OBJ_obj2nid(obj));
 out:
	X509_ALGOR_free(mgf1md);
	RSA_PSS_PARAMS_free(pss);
	return ok;
}

/* Proof of possession, with a hash we still trust. */
static int
csr_check_signature(CSR_REQ *req, EVP_PKEY *pkey, struct csr_error *err)
{
	const ASN1_BIT_STRING *sig;
	const X509_ALGOR *sigalg;
	const ASN1_OBJECT *obj;
	char name[80];
	int signid, mdnid, pknid;

	sig = req->signature;
	sigalg = req->sigalg;
	X509_ALGOR_get0(&obj, NULL, NULL, sigalg);
	csr_obj_name(obj, name, sizeof(name));
	signid = OBJ_obj2nid(obj);
	if (signid == NID_undef ||
	    !OBJ_find_sigid_algs(signid, &mdnid, &pknid))
		return csr_fail(err, "csr_signature_invalid", "signature "
		    "algorithm %s is not supported", name);
	if (mdnid == NID_sha1 || mdnid == NID_md5 || mdnid == NID_md5_sha1 ||
	    mdnid == NID_md4 || mdnid == NID_md2)
		return csr_fail(err, "csr_signature_invalid", "the CSR is "
		    "signed with %s: SHA-1 and MD5 signatures are not "
		    "accepted", name);
	if (pknid == NID_rsassaPss) {
		if (!csr_pss_allowed(sigalg))
			return csr_fail(err, "csr_signature_invalid", "RSASSA-"
			    "PSS with a hash other than SHA-2 or SHA-3 (an "
			    "absent hash means SHA-1) is not accepted");
	} else if (pknid == NID_ED25519) {
		if (mdnid != NID_undef)
			return csr_fail(err, "csr_signature_invalid",
			    "signature algorithm %s is not supported", name);
	} else if (!csr_md_allowed(mdnid))
		return csr_fail(err, "csr_signature_invalid", "signature "
		    "algorithm %s is not supported", name);
	if (ASN1_item_verify(ASN1_ITEM_rptr(CSR_INFO), sigalg, sig, req->info,
	    pkey) != 1)
		return csr_fail(err, "csr_signature_invalid", "the CSR's "
		    "signature does not verify with its own public key (%s)",
		    name);
	return 0;
}

/*
 * The extension request, decoded here rather than with
 * X509_REQ_get_extensions: that one takes the first of several
 * attributes and the first of several values, and ignores trailing bytes.
 */
static int
csr_extensions(CSR_REQ *req, STACK_OF(X509_EXTENSION) **extsp,
    struct csr_error *err)
{
	static const int nids[] = { NID_ext_req, NID_ms_ext_req };
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_ATTRIBUTE *attr = NULL;
	const ASN1_TYPE *value;
	const unsigned char *p;
	uint8_t *re = NULL;
	size_t i;
	int idx, len, relen, rv = -1;

	*extsp = NULL;
	for (i = 0; i < sizeof(nids) / sizeof(nids[0]); i++) {
		idx = X509at_get_attr_by_NID(req->info->attributes, nids[i],
		    -1);
		if (idx < 0)
			continue;
		if (attr != NULL ||
		    X509at_get_attr_by_NID(req->info->attributes, nids[i],
		    idx) >= 0)
			return csr_fail(err, "csr_malformed", "more than one "
			    "extension request attribute");
		attr = X509at_get_attr(req->info->attributes, idx);
	}
	if (attr == NULL)
		return 0;
	if (X509_ATTRIBUTE_count(attr) != 1)
		return csr_fail(err, "csr_malformed", "the extension request "
		    "attribute has %d values, not one",
		    X509_ATTRIBUTE_count(attr));
	value = X509_ATTRIBUTE_get0_type(attr, 0);
	if (value == NULL || value->type != V_ASN1_SEQUENCE)
		return csr_fail(err, "csr_malformed", "the extension request "
		    "is not a SEQUENCE");
	p = value->value.sequence->data;
	len = value->value.sequence->length;
	exts = d2i_X509_EXTENSIONS(NULL, &p, len);
	if (exts == NULL) {
		csr_fail(err, "csr_malformed", "the extension request does "
		    "not decode: %s", csr_ssl_reason());
		goto out;
	}
	if (p != value->value.sequence->data + len) {
		csr_fail(err, "csr_malformed", "trailing bytes after the "
		    "requested extensions");
		goto out;
	}
	relen = i2d_X509_EXTENSIONS(exts, &re);
	if (relen != len || memcmp(re, value->value.sequence->data, len) != 0) {
		csr_fail(err, "csr_malformed", "the requested extensions are "
		    "not DER (BER or a non-canonical encoding)");
		goto out;
	}
	*extsp = exts;
	exts = NULL;
	rv = 0;
 out:
	OPENSSL_free(re);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return rv;
}

static const char *
csr_gen_type_name(int type)
{
	switch (type) {
	case GEN_OTHERNAME:
		return "otherName";
	case GEN_EMAIL:
		return "email (rfc822Name)";
	case GEN_DNS:
		return "DNS";
	case GEN_X400:
		return "x400Address";
	case GEN_DIRNAME:
		return "directoryName";
	case GEN_EDIPARTY:
		return "ediPartyName";
	case GEN_URI:
		return "URI";
	case GEN_IPADD:
		return "IP address";
	case GEN_RID:
		return "registeredID";
	default:
		return "unknown";
	}
}

/* Copies one DNS or URI value after checking it. */
static int
csr_copy_name(const ASN1_IA5STRING *s, const char *kind, size_t nth,
    char **copy, struct csr_error *err)
{
	const unsigned char *d = ASN1_STRING_get0_data(s);
	int i, len = ASN1_STRING_length(s);

	if (len <= 0)
		return csr_fail(err, "name_unsupported", "%s name #%zu is "
		    "empty", kind, nth);
	if (len > CSR_MAX_NAME)
		return csr_fail(err, "csr_too_large", "%s name #%zu is %d "
		    "bytes, more than %d", kind, nth, len, CSR_MAX_NAME);
	for (i = 0; i < len; i++) {
		if (d[i] < 0x21 || d[i] > 0x7e)
			return csr_fail(err, "name_unsupported", "%s name #%zu "
			    "has byte 0x%02x at offset %d (only printable "
			    "ASCII without spaces)", kind, nth, d[i], i);
	}
	if ((*copy = malloc((size_t)len + 1)) == NULL)
		return csr_fail(err, "csr_malformed", "out of memory");
	memcpy(*copy, d, len);
	(*copy)[len] = '\0';
	return 0;
}

/*
 * An extension re-encodes as it came, except for its critical flag:
 * OpenSSL remembers an explicit FALSE (which DER forbids, as the
 * default) and a TRUE that is not 0xff.  Comparing with an extension
 * made afresh from its parts catches both.
 */
static int
csr_check_extension(X509_EXTENSION *ext, struct csr_error *err)
{
	X509_EXTENSION *fresh;
	uint8_t *a = NULL, *b = NULL;
	int alen, blen, rv = -1;

	fresh = X509_EXTENSION_create_by_OBJ(NULL,
	    X509_EXTENSION_get_object(ext), X509_EXTENSION_get_critical(ext),
	    X509_EXTENSION_get_data(ext));
	if (fresh == NULL)
		return csr_fail(err, "csr_malformed", "out of memory");
	alen = i2d_X509_EXTENSION(ext, &a);
	blen = i2d_X509_EXTENSION(fresh, &b);
	if (alen <= 0 || alen != blen || memcmp(a, b, alen) != 0)
		csr_fail(err, "csr_malformed", "a requested extension is not "
		    "DER (its critical flag is encoded wrongly)");
	else
		rv = 0;
	OPENSSL_free(a);
	OPENSSL_free(b);
	X509_EXTENSION_free(fresh);
	return rv;
}

/* The subjectAltName, the only extension that matters here. */
static int
csr_names(CSR_REQ *req, struct csr_info *out, struct csr_error *err)
{
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *gens = NULL;
	X509_EXTENSION *ext, *san = NULL;
	const GENERAL_NAME *gen;
	const ASN1_OCTET_STRING *data;
	const unsigned char *p;
	uint8_t *re = NULL;
	size_t ndns = 0, nuris = 0;
	int i, relen, rv = -1;

	if (csr_extensions(req, &exts, err) == -1)
		return -1;
	for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		ext = sk_X509_EXTENSION_value(exts, i);
		if (csr_check_extension(ext, err) == -1)
			goto out;
		if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) !=
		    NID_subject_alt_name)
			continue;
		if (san != NULL) {
			csr_fail(err, "csr_malformed", "more than one "
			    "subjectAltName extension");
			goto out;
		}
		san = ext;
	}
	if (san == NULL) {
		rv = 0;
		goto out;
	}

	data = X509_EXTENSION_get_data(san);
	p = ASN1_STRING_get0_data(data);
	gens = d2i_GENERAL_NAMES(NULL, &p, ASN1_STRING_length(data));
	if (gens == NULL) {
		csr_fail(err, "csr_malformed", "the subjectAltName does not "
		    "decode: %s", csr_ssl_reason());
		goto out;
	}
	if (p != ASN1_STRING_get0_data(data) + ASN1_STRING_length(data)) {
		csr_fail(err, "csr_malformed", "trailing bytes after the "
		    "subjectAltName");
		goto out;
	}
	relen = i2d_GENERAL_NAMES(gens, &re);
	if (relen != ASN1_STRING_length(data) ||
	    memcmp(re, ASN1_STRING_get0_data(data), relen) != 0) {
		csr_fail(err, "csr_malformed", "the subjectAltName is not DER "
		    "(BER or a non-canonical encoding)");
		goto out;
	}
	if (sk_GENERAL_NAME_num(gens) <= 0) {
		csr_fail(err, "csr_malformed", "the subjectAltName extension "
		    "is empty");
		goto out;
	}

	/* Types and counts first, so that nothing is copied needlessly. */
	for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		gen = sk_GENERAL_NAME_value(gens, i);
		if (gen->type == GEN_DNS)
			ndns++;
		else if (gen->type == GEN_URI)
			nuris++;
		else {
			csr_fail(err, "name_unsupported", "subjectAltName "
			    "#%d is of type %s: only DNS and URI names are "
			    "accepted", i + 1, csr_gen_type_name(gen->type));
			goto out;
		}
	}
	if (ndns > CSR_MAX_NAMES || nuris > CSR_MAX_NAMES) {
		csr_fail(err, "csr_too_large", "%zu DNS and %zu URI names: at "
		    "most %d of each", ndns, nuris, CSR_MAX_NAMES);
		goto out;
	}
	if ((ndns > 0 &&
	    (out->dns = calloc(ndns, sizeof(char *))) == NULL) ||
	    (nuris > 0 &&
	    (out->uris = calloc(nuris, sizeof(char *))) == NULL)) {
		csr_fail(err, "csr_malformed", "out of memory");
		goto out;
	}
	for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		gen = sk_GENERAL_NAME_value(gens, i);
		if (gen->type == GEN_DNS) {
			if (csr_copy_name(gen->d.dNSName, "DNS",
			    out->ndns + 1, &out->dns[out->ndns], err) == -1)
				goto out;
			out->ndns++;
		} else {
			if (csr_copy_name(gen->d.uniformResourceIdentifier,
			    "URI", out->nuris + 1, &out->uris[out->nuris],
			    err) == -1)
				goto out;
			out->nuris++;
		}
	}
	rv = 0;
 out:
	OPENSSL_free(re);
	GENERAL_NAMES_free(gens);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return rv;
}

/* The subject CN, informational only: at most one, short UTF-8 text. */
static int
csr_common_name(CSR_REQ *req, struct csr_info *out, struct csr_error *err)
{
	const X509_NAME *subject = req->info->subject;
	const X509_NAME_ENTRY *ne;
	unsigned char *utf8 = NULL;
	int idx, len, i, rv = -1;

	idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	if (idx < 0)
		return 0;
	if (X509_NAME_get_index_by_NID(subject, NID_commonName, idx) >= 0)
		return csr_fail(err, "csr_malformed", "the subject has more "
		    "than one CN");
	ne = X509_NAME_get_entry(subject, idx);
	len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(ne));
	if (len < 0)
		return csr_fail(err, "csr_malformed", "the subject CN is not "
		    "valid text: %s", csr_ssl_reason());
	if (len == 0 || len > CSR_MAX_CN) {
		csr_fail(err, "csr_malformed", "the subject CN is %d bytes "
		    "(1 to %d accepted)", len, CSR_MAX_CN);
		goto out;
	}
	/* It may be logged: no NUL, no control characters. */
	for (i = 0; i < len; i++) {
		if (utf8[i] < 0x20 || utf8[i] == 0x7f) {
			csr_fail(err, "csr_malformed", "the subject CN has "
			    "control character 0x%02x", utf8[i]);
			goto out;
		}
	}
	if ((out->cn = malloc((size_t)len + 1)) == NULL) {
		csr_fail(err, "csr_malformed", "out of memory");
		goto out;
	}
	memcpy(out->cn, utf8, len);
	out->cn[len] = '\0';
	rv = 0;
 out:
	OPENSSL_free(utf8);
	return rv;
}

/*
 * The SPKI handed on is the one the requester signed, which csr_check_der
 * found to be DER.  csr_check_key made EC and Ed25519 keys from their
 * parts after checking that the bytes are the one encoding of the key;
 * an RSA key's inner encoding is compared here with its re-encoding, so
 * that BER or another encoding of the same key is refused.  OpenSSL 3.0's
 * i2d_PUBKEY goes through the encoder framework, which costs more than
 * the CSR's signature check, so only RSA keys take that path.  Returns
 * the length with *spki (malloc), or -1.
 */
static int
csr_spki(CSR_REQ *req, EVP_PKEY *pkey, enum rules_key_alg alg,
    uint8_t **spki, struct csr_error *err)
{
	uint8_t *re = NULL, *built = NULL;
	int relen, blen, rv = -1;

	*spki = NULL;
	if ((relen = i2d_CSR_SPKI(req->info->spki, &re)) <= 0)
		goto reencode;
	if (alg == RULES_ALG_RSA_2048 || alg == RULES_ALG_RSA_3072 ||
	    alg == RULES_ALG_RSA_4096) {
		if ((blen = i2d_PUBKEY(pkey, &built)) <= 0)
			goto reencode;
		if (blen != relen || memcmp(re, built, (size_t)relen) != 0) {
			csr_fail(err, "csr_malformed", "the public key is not "
			    "DER (BER or a non-canonical encoding)");
			goto out;
		}
	}
	if ((*spki = malloc((size_t)relen)) == NULL) {
		csr_fail(err, "csr_malformed", "out of memory");
		goto out;
	}
	memcpy(*spki, re, (size_t)relen);
	rv = relen;
	goto out;
 reencode:
	csr_fail(err, "csr_malformed", "the public key does not re-encode: %s",
	    csr_ssl_reason());
 out:
	OPENSSL_free(re);
	OPENSSL_free(built);
	return rv;
}

int
csr_parse(const char *pem, size_t pemlen, struct csr_info *out,
    struct csr_error *err)
{
	struct csr_error dummy;
	CSR_REQ *req = NULL;
	EVP_PKEY *pkey = NULL;
	uint8_t *der = NULL;
	const unsigned char *p;
	size_t derlen = 0;
	int64_t version;
	int len, rv = -1;

	if (err == NULL)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	if (out == NULL)
		return csr_fail(err, "csr_malformed", "no output");
	memset(out, 0, sizeof(*out));
	ERR_clear_error();

	if (pemlen > CSR_MAX_PEM) {
		csr_fail(err, "csr_too_large", "the CSR is %zu bytes of PEM, "
		    "more than %d", pemlen, CSR_MAX_PEM);
		goto out;
	}
	if (pem == NULL || pemlen == 0) {
		csr_fail(err, "csr_malformed", "no PEM block: the input is "
		    "empty");
		goto out;
	}
	if (csr_pem_decode(pem, pemlen, &der, &derlen, err) == -1)
		goto out;

	p = der;
	if ((req = d2i_CSR_REQ(NULL, &p, (long)derlen)) == NULL) {
		csr_fail(err, "csr_malformed", "the PEM block does not hold a "
		    "CSR: %s", csr_ssl_reason());
		goto out;
	}
	if (p != der + derlen) {
		csr_fail(err, "csr_malformed", "%zu trailing bytes after the "
		    "CSR inside the PEM block", derlen - (size_t)(p - der));
		goto out;
	}
	if (csr_check_der(req, der, derlen, err) == -1)
		goto out;
	if (!ASN1_INTEGER_get_int64(&version, req->info->version)) {
		csr_fail(err, "csr_malformed", "the CSR version is not a "
		    "small integer");
		goto out;
	}
	if (version != 0) {
		csr_fail(err, "csr_malformed", "CSR version %lld (only version "
		    "1, encoded 0, exists)", (long long)version);
		goto out;
	}

	if (csr_check_key(req, &pkey, &out->alg, err) == -1 ||
	    csr_check_signature(req, pkey, err) == -1 ||
	    csr_names(req, out, err) == -1 ||
	    csr_common_name(req, out, err) == -1)
		goto out;

	if ((len = csr_spki(req, pkey, out->alg, &out->spki, err)) < 0)
		goto out;
	out->spkilen = (size_t)len;
	rv = 0;
 out:
	if (rv != 0) {
		csr_info_clear(out);
		if (err->code == NULL)
			csr_fail(err, "csr_malformed", "the CSR was refused");
	}
	EVP_PKEY_free(pkey);
	CSR_REQ_free(req);
	free(der);
	ERR_clear_error();
	return rv;
}

void
csr_info_clear(struct csr_info *info)
{
	size_t i;

	if (info == NULL)
		return;
	free(info->spki);
	free(info->cn);
	for (i = 0; i < info->ndns; i++)
		free(info->dns[i]);
	free(info->dns);
	for (i = 0; i < info->nuris; i++)
		free(info->uris[i]);
	free(info->uris);
	memset(info, 0, sizeof(*info));
}
