/*
 * What the signer makes: certificates and CRLs built from its own
 * profiles, never from bytes it was handed (DESIGN.md invariant 1).
 *
 * A request is checked against the key's hard limits (invariants 2-5),
 * each failure a typed refusal.  The TBS is then built from structures
 * with OpenSSL's ASN.1 templates (the TBSCertificate and TBSCertList
 * templates below), linted as a parsed certificate or CRL, signed by the
 * token, assembled, parsed again and verified with the CA's public key.
 */
#include "config.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "signerd.h"

/* --- the templates ----------------------------------------------------- */

/*
 * SubjectPublicKeyInfo and RSAPublicKey as plain ASN.1: OpenSSL 3.0's
 * X509_PUBKEY decodes the key through its provider decoders on every
 * parse (measured: 230 us, under a global lock), more than the token's
 * signature.  The signer checks the key itself (algorithm, curve, point
 * on the curve, modulus size) and carries the bytes.
 */
typedef struct signer_spki_st {
	X509_ALGOR		*algorithm;
	ASN1_BIT_STRING		*key;
} SIGNER_SPKI;

DECLARE_ASN1_FUNCTIONS(SIGNER_SPKI)

ASN1_SEQUENCE(SIGNER_SPKI) = {
	ASN1_SIMPLE(SIGNER_SPKI, algorithm, X509_ALGOR),
	ASN1_SIMPLE(SIGNER_SPKI, key, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(SIGNER_SPKI)
IMPLEMENT_ASN1_FUNCTIONS(SIGNER_SPKI)

typedef struct signer_rsa_pub_st {
	ASN1_INTEGER		*modulus;
	ASN1_INTEGER		*exponent;
} SIGNER_RSA_PUB;

DECLARE_ASN1_FUNCTIONS(SIGNER_RSA_PUB)

ASN1_SEQUENCE(SIGNER_RSA_PUB) = {
	ASN1_SIMPLE(SIGNER_RSA_PUB, modulus, ASN1_INTEGER),
	ASN1_SIMPLE(SIGNER_RSA_PUB, exponent, ASN1_INTEGER),
} ASN1_SEQUENCE_END(SIGNER_RSA_PUB)
IMPLEMENT_ASN1_FUNCTIONS(SIGNER_RSA_PUB)

typedef struct signer_tbs_cert_st {
	ASN1_INTEGER		*version;
	ASN1_INTEGER		*serial;
	X509_ALGOR		*signature;
	X509_NAME		*issuer;
	X509_VAL		*validity;
	X509_NAME		*subject;
	SIGNER_SPKI		*key;
	STACK_OF(X509_EXTENSION) *extensions;
} SIGNER_TBS_CERT;

DECLARE_ASN1_FUNCTIONS(SIGNER_TBS_CERT)

ASN1_SEQUENCE(SIGNER_TBS_CERT) = {
	ASN1_EXP_OPT(SIGNER_TBS_CERT, version, ASN1_INTEGER, 0),
	ASN1_SIMPLE(SIGNER_TBS_CERT, serial, ASN1_INTEGER),
	ASN1_SIMPLE(SIGNER_TBS_CERT, signature, X509_ALGOR),
	ASN1_SIMPLE(SIGNER_TBS_CERT, issuer, X509_NAME),
	ASN1_SIMPLE(SIGNER_TBS_CERT, validity, X509_VAL),
	ASN1_SIMPLE(SIGNER_TBS_CERT, subject, X509_NAME),
	ASN1_SIMPLE(SIGNER_TBS_CERT, key, SIGNER_SPKI),
	ASN1_EXP_SEQUENCE_OF_OPT(SIGNER_TBS_CERT, extensions, X509_EXTENSION, 3),
} ASN1_SEQUENCE_END(SIGNER_TBS_CERT)
IMPLEMENT_ASN1_FUNCTIONS(SIGNER_TBS_CERT)

typedef struct signer_tbs_crl_st {
	ASN1_INTEGER		*version;
	X509_ALGOR		*signature;
	X509_NAME		*issuer;
	ASN1_TIME		*this_update;
	ASN1_TIME		*next_update;
	STACK_OF(X509_REVOKED)	*revoked;
	STACK_OF(X509_EXTENSION) *extensions;
} SIGNER_TBS_CRL;

DECLARE_ASN1_FUNCTIONS(SIGNER_TBS_CRL)

ASN1_SEQUENCE(SIGNER_TBS_CRL) = {
	ASN1_OPT(SIGNER_TBS_CRL, version, ASN1_INTEGER),
	ASN1_SIMPLE(SIGNER_TBS_CRL, signature, X509_ALGOR),
	ASN1_SIMPLE(SIGNER_TBS_CRL, issuer, X509_NAME),
	ASN1_SIMPLE(SIGNER_TBS_CRL, this_update, ASN1_TIME),
	ASN1_OPT(SIGNER_TBS_CRL, next_update, ASN1_TIME),
	ASN1_SEQUENCE_OF_OPT(SIGNER_TBS_CRL, revoked, X509_REVOKED),
	ASN1_EXP_SEQUENCE_OF_OPT(SIGNER_TBS_CRL, extensions, X509_EXTENSION, 0),
} ASN1_SEQUENCE_END(SIGNER_TBS_CRL)
IMPLEMENT_ASN1_FUNCTIONS(SIGNER_TBS_CRL)

/* Certificate and CertificateList share this outer shape. */
typedef struct signer_signed_st {
	ASN1_TYPE		*tbs;		/* the TBS DER, as a SEQUENCE */
	X509_ALGOR		*algorithm;
	ASN1_BIT_STRING		*signature;
} SIGNER_SIGNED;

DECLARE_ASN1_FUNCTIONS(SIGNER_SIGNED)

ASN1_SEQUENCE(SIGNER_SIGNED) = {
	ASN1_SIMPLE(SIGNER_SIGNED, tbs, ASN1_ANY),
	ASN1_SIMPLE(SIGNER_SIGNED, algorithm, X509_ALGOR),
	ASN1_SIMPLE(SIGNER_SIGNED, signature, ASN1_BIT_STRING),
} ASN1_SEQUENCE_END(SIGNER_SIGNED)
IMPLEMENT_ASN1_FUNCTIONS(SIGNER_SIGNED)

struct build_tbs {
	struct signer_key	*bt_key;
	int			 bt_crl;
	enum profile_id		 bt_profile;
	uint8_t			*bt_der;	/* TBS DER */
	int			 bt_derlen;
	uint8_t			 bt_sha256[32];
	ASN1_INTEGER		*bt_serial;	/* or CRL number */
	char			*bt_subject;
	int64_t			 bt_now;
	int64_t			 bt_backdate;
};

#define MAX_SANS		32
#define MAX_REVOKED		100000
#define SPIFFE_MAX		2048

static int
refuse(struct build_refusal *why, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
refuse(struct build_refusal *why, int code, const char *fmt, ...)
{
	va_list ap;

	why->code = code;
	va_start(ap, fmt);
	vsnprintf(why->reason, sizeof(why->reason), fmt, ap);
	va_end(ap);
	return -1;
}

/* --- names ------------------------------------------------------------- */

/* A host name: LDH labels of 1-63, 253 in all, no leading or trailing
 * hyphen, no wildcard, not all-numeric last label. */
int
build_dns_name_ok(const char *name, size_t len)
{
	size_t i, label = 0;
	int alpha_in_last = 0;

	if (len == 0 || len > 253 || name[0] == '.' || name[len - 1] == '.')
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c == '.') {
			if (label == 0 || name[i - 1] == '-')
				return 0;
			label = 0;
			alpha_in_last = 0;
			continue;
		}
		if (!isalnum(c) && c != '-')
			return 0;
		if (c == '-' && label == 0)
			return 0;
		if (isalpha(c) || c == '-')
			alpha_in_last = 1;
		if (++label > 63)
			return 0;
	}
	if (name[len - 1] == '-')
		return 0;
	return alpha_in_last;
}

/*
 * A SPIFFE ID (SPIFFE ID spec): "spiffe://" trust domain of [a-z0-9.-_],
 * then a path of segments of [a-zA-Z0-9.-_], none empty, "." or "..", no
 * trailing slash, no query, fragment, port or user info, 2048 bytes at
 * most.  The trust domain goes to td.
 */
int
build_spiffe_id_ok(const char *uri, size_t len, int need_path, char *td,
    size_t tdlen)
{
	const char *p, *end = uri + len, *seg;
	size_t n;

	if (len > SPIFFE_MAX || len < 10 || memcmp(uri, "spiffe://", 9) != 0)
		return 0;
	p = uri + 9;
	for (n = 0; p + n < end && p[n] != '/'; n++) {
		unsigned char c = (unsigned char)p[n];

		if (!(islower(c) || isdigit(c) || c == '.' || c == '-' ||
		    c == '_'))
			return 0;
	}
	if (n == 0 || n >= tdlen)
		return 0;
	memcpy(td, p, n);
	td[n] = '\0';
	p += n;
	if (p == end)
		return !need_path;
	/* p points at '/': segments follow. */
	while (p < end) {
		p++;
		seg = p;
		while (p < end && *p != '/') {
			unsigned char c = (unsigned char)*p;

			if (!(isalnum(c) || c == '.' || c == '-' || c == '_'))
				return 0;
			p++;
		}
		n = (size_t)(p - seg);
		if (n == 0 || (n == 1 && seg[0] == '.') ||
		    (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return 0;
	}
	return 1;
}

static int
name_in_suffixes(const char *name, size_t len, char *const *list, size_t n)
{
	size_t i, sl;

	for (i = 0; i < n; i++) {
		sl = strlen(list[i]);
		if (len == sl && strncasecmp(name, list[i], len) == 0)
			return 1;
		if (len > sl + 1 && name[len - sl - 1] == '.' &&
		    strncasecmp(name + len - sl, list[i], sl) == 0)
			return 1;
	}
	return 0;
}

static int
domain_listed(const char *td, char *const *list, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(td, list[i]) == 0)
			return 1;
	return 0;
}

char *
build_general_name_text(const GENERAL_NAME *gn)
{
	const ASN1_IA5STRING *s;
	const char *prefix;
	char *out;
	int len;

	switch (gn->type) {
	case GEN_DNS:
		prefix = "DNS:";
		s = gn->d.dNSName;
		break;
	case GEN_URI:
		prefix = "URI:";
		s = gn->d.uniformResourceIdentifier;
		break;
	default:
		return NULL;
	}
	len = ASN1_STRING_length(s);
	if (len < 0 || len > 4096 || (out = malloc((size_t)len + 5)) == NULL)
		return NULL;
	memcpy(out, prefix, 4);
	if (len > 0)
		memcpy(out + 4, ASN1_STRING_get0_data(s), (size_t)len);
	out[len + 4] = '\0';
	return out;
}

/* An IA5String with no NUL or control character and printable ASCII. */
static int
ia5_clean(const ASN1_IA5STRING *s)
{
	const unsigned char *d = ASN1_STRING_get0_data(s);
	int i, len = ASN1_STRING_length(s);

	if (ASN1_STRING_type(s) != V_ASN1_IA5STRING || len <= 0)
		return 0;
	for (i = 0; i < len; i++)
		if (d[i] < 0x21 || d[i] > 0x7e)
			return 0;
	return 1;
}

/*
 * Checks the SANs of a leaf profile against the key's names.  Counts URI
 * SANs into *nuri.
 */
static int
check_sans(struct signer_key *key, enum profile_id profile,
    const GENERAL_NAMES *sans, int *nuri, struct build_refusal *why)
{
	const GENERAL_NAME *gn;
	const char *v;
	char td[256];
	int i, n, len;

	*nuri = 0;
	n = sans == NULL ? 0 : sk_GENERAL_NAME_num(sans);
	if (n == 0)
		return refuse(why, IPC_REFUSE_NAME, "profile %s needs at "
		    "least one subject alternative name",
		    profile_name(profile));
	if (n > MAX_SANS)
		return refuse(why, IPC_REFUSE_NAME, "%d subject alternative "
		    "names (at most %d)", n, MAX_SANS);
	for (i = 0; i < n; i++) {
		gn = sk_GENERAL_NAME_value(sans, i);
		switch (gn->type) {
		case GEN_DNS:
			if (!ia5_clean(gn->d.dNSName))
				return refuse(why, IPC_REFUSE_NAME, "SAN %d: "
				    "DNS name is not printable ASCII", i + 1);
			v = (const char *)ASN1_STRING_get0_data(gn->d.dNSName);
			len = ASN1_STRING_length(gn->d.dNSName);
			if (!build_dns_name_ok(v, (size_t)len))
				return refuse(why, IPC_REFUSE_NAME, "SAN %d: "
				    "'%.*s' is not a host name", i + 1,
				    len > 80 ? 80 : len, v);
			if (!name_in_suffixes(v, (size_t)len, key->sk_dns,
			    key->sk_ndns))
				return refuse(why, IPC_REFUSE_NAME, "SAN %d: "
				    "DNS name '%.*s' is outside the DNS "
				    "suffixes of key %s", i + 1,
				    len > 80 ? 80 : len, v, key->sk_name);
			break;
		case GEN_URI:
			if (!ia5_clean(gn->d.uniformResourceIdentifier))
				return refuse(why, IPC_REFUSE_NAME, "SAN %d: "
				    "URI is not printable ASCII", i + 1);
			v = (const char *)ASN1_STRING_get0_data(
			    gn->d.uniformResourceIdentifier);
			len = ASN1_STRING_length(
			    gn->d.uniformResourceIdentifier);
			if (!build_spiffe_id_ok(v, (size_t)len, 1, td,
			    sizeof(td)))
				return refuse(why, IPC_REFUSE_NAME, "SAN %d: "
				    "'%.*s' is not a SPIFFE ID with a path",
				    i + 1, len > 80 ? 80 : len, v);
			if (!domain_listed(td, key->sk_domains,
			    key->sk_ndomains))
				return refuse(why, IPC_REFUSE_NAME, "SAN %d: "
				    "trust domain '%s' is not one of key %s",
				    i + 1, td, key->sk_name);
			(*nuri)++;
			break;
		default:
			return refuse(why, IPC_REFUSE_NAME, "SAN %d: only DNS "
			    "names and SPIFFE IDs are issued", i + 1);
		}
	}
	if (profile == PROFILE_SVID && *nuri != 1)
		return refuse(why, IPC_REFUSE_NAME, "an SVID has exactly one "
		    "URI SAN, the SPIFFE ID (request has %d)", *nuri);
	if (*nuri > 1)
		return refuse(why, IPC_REFUSE_NAME, "more than one SPIFFE ID");
	return 0;
}

/* The subject: only CN, O, OU, C; a CN must also be one of the SANs (a
 * legacy client reading the CN must not learn a name the SANs lack). */
static int
check_subject(enum profile_id profile, const X509_NAME *subject,
    const GENERAL_NAMES *sans, struct build_refusal *why)
{
	const X509_NAME_ENTRY *e;
	const ASN1_STRING *v;
	const GENERAL_NAME *gn;
	const ASN1_IA5STRING *s;
	int i, j, n, nid, found;

	n = X509_NAME_entry_count(subject);
	if (n > 8)
		return refuse(why, IPC_REFUSE_NAME, "subject has %d "
		    "attributes (at most 8)", n);
	if (profile == PROFILE_SUBCA && n == 0)
		return refuse(why, IPC_REFUSE_NAME, "a CA certificate needs "
		    "a subject");
	for (i = 0; i < n; i++) {
		e = X509_NAME_get_entry(subject, i);
		nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
		v = X509_NAME_ENTRY_get_data(e);
		switch (nid) {
		case NID_commonName:
		case NID_organizationName:
		case NID_organizationalUnitName:
			if (ASN1_STRING_length(v) < 1 ||
			    ASN1_STRING_length(v) > 64)
				return refuse(why, IPC_REFUSE_NAME, "subject "
				    "attribute %d: 1 to 64 characters", i + 1);
			if (ASN1_STRING_type(v) != V_ASN1_UTF8STRING &&
			    ASN1_STRING_type(v) != V_ASN1_PRINTABLESTRING)
				return refuse(why, IPC_REFUSE_NAME, "subject "
				    "attribute %d: UTF8String or "
				    "PrintableString only", i + 1);
			break;
		case NID_countryName:
			if (ASN1_STRING_length(v) != 2 ||
			    ASN1_STRING_type(v) != V_ASN1_PRINTABLESTRING)
				return refuse(why, IPC_REFUSE_NAME, "subject "
				    "country: two letters, PrintableString");
			break;
		default:
			return refuse(why, IPC_REFUSE_NAME, "subject attribute "
			    "%d: only CN, O, OU and C are issued", i + 1);
		}
		if (nid != NID_commonName || profile == PROFILE_SUBCA)
			continue;
		found = 0;
		for (j = 0; sans != NULL && j < sk_GENERAL_NAME_num(sans);
		    j++) {
			gn = sk_GENERAL_NAME_value(sans, j);
			if (gn->type == GEN_DNS)
				s = gn->d.dNSName;
			else if (gn->type == GEN_URI)
				s = gn->d.uniformResourceIdentifier;
			else
				continue;
			if (ASN1_STRING_length(s) == ASN1_STRING_length(v) &&
			    memcmp(ASN1_STRING_get0_data(s),
			    ASN1_STRING_get0_data(v),
			    (size_t)ASN1_STRING_length(v)) == 0)
				found = 1;
		}
		if (!found)
			return refuse(why, IPC_REFUSE_NAME, "the subject CN "
			    "is not one of the SANs");
	}
	return 0;
}

/* Decodes exactly one DER encoding of it, nothing left over. */
static void *
strict_d2i(const ASN1_ITEM *it, const unsigned char *der, long len)
{
	const unsigned char *p = der;
	unsigned char *re = NULL;
	ASN1_VALUE *v;
	int relen;

	if (len <= 0 || (v = ASN1_item_d2i(NULL, &p, len, it)) == NULL)
		return NULL;
	relen = ASN1_item_i2d(v, &re, it);
	if (p != der + len || relen != len || memcmp(re, der, (size_t)len)) {
		ASN1_item_free(v, it);
		v = NULL;
	}
	OPENSSL_free(re);
	return v;
}

static pthread_once_t curves_once = PTHREAD_ONCE_INIT;
static EC_GROUP *curve_p256, *curve_p384;

static void
curves_init(void)
{
	curve_p256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	curve_p384 = EC_GROUP_new_by_curve_name(NID_secp384r1);
}

/* An uncompressed point on the curve. */
static int
ec_point_ok(const EC_GROUP *group, const unsigned char *d, int len)
{
	EC_POINT *pt;
	int ok;

	if (group == NULL || len < 1 || d[0] != 0x04 ||
	    (pt = EC_POINT_new(group)) == NULL)
		return 0;
	ok = EC_POINT_oct2point(group, pt, d, (size_t)len, NULL) == 1 &&
	    !EC_POINT_is_at_infinity(group, pt);
	EC_POINT_free(pt);
	return ok;
}

/* Subject key: one DER SubjectPublicKeyInfo of an algorithm, curve and
 * size the key's profile allows, and a valid key of it. */
static int
check_spki(struct signer_key *key, const ASN1_OCTET_STRING *spki,
    SIGNER_SPKI **out, struct build_refusal *why)
{
	SIGNER_SPKI *k;
	SIGNER_RSA_PUB *rsa = NULL;
	const ASN1_OBJECT *obj;
	const void *pval;
	const unsigned char *d;
	BIGNUM *n = NULL, *e = NULL;
	unsigned int alg = 0;
	int ptype, nid, len, bits, ret = -1;

	*out = NULL;
	if (ASN1_STRING_length(spki) > 4096 || (k = strict_d2i(
	    ASN1_ITEM_rptr(SIGNER_SPKI), ASN1_STRING_get0_data(spki),
	    ASN1_STRING_length(spki))) == NULL)
		return refuse(why, IPC_REFUSE_KEY_ALGORITHM, "subject public "
		    "key is not one DER SubjectPublicKeyInfo");
	d = ASN1_STRING_get0_data(k->key);
	len = ASN1_STRING_length(k->key);
	if ((k->key->flags & ASN1_STRING_FLAG_BITS_LEFT) &&
	    (k->key->flags & 0x07) != 0) {
		refuse(why, IPC_REFUSE_KEY_ALGORITHM, "subject public key is "
		    "not a whole number of bytes");
		goto out;
	}
	X509_ALGOR_get0(&obj, &ptype, &pval, k->algorithm);
	switch ((nid = OBJ_obj2nid(obj))) {
	case NID_X9_62_id_ecPublicKey:
		pthread_once(&curves_once, curves_init);
		nid = ptype == V_ASN1_OBJECT ? OBJ_obj2nid(pval) : NID_undef;
		if (nid == NID_X9_62_prime256v1 && len == 65 &&
		    ec_point_ok(curve_p256, d, len))
			alg = ALG_EC_P256;
		else if (nid == NID_secp384r1 && len == 97 &&
		    ec_point_ok(curve_p384, d, len))
			alg = ALG_EC_P384;
		else if (nid == NID_X9_62_prime256v1 || nid == NID_secp384r1) {
			refuse(why, IPC_REFUSE_KEY_ALGORITHM, "EC public key "
			    "is not an uncompressed point on its curve");
			goto out;
		} else {
			refuse(why, IPC_REFUSE_KEY_ALGORITHM, "EC curve %s is "
			    "not issued (P-256, P-384)", nid == NID_undef ?
			    "(not a named curve)" : OBJ_nid2sn(nid));
			goto out;
		}
		break;
	case NID_rsaEncryption:
		if (ptype != V_ASN1_NULL ||
		    (rsa = strict_d2i(ASN1_ITEM_rptr(SIGNER_RSA_PUB), d,
		    len)) == NULL ||
		    (n = ASN1_INTEGER_to_BN(rsa->modulus, NULL)) == NULL ||
		    (e = ASN1_INTEGER_to_BN(rsa->exponent, NULL)) == NULL ||
		    BN_is_negative(n) || BN_is_negative(e) || !BN_is_odd(e) ||
		    BN_is_one(e) || BN_num_bits(e) > 256) {
			refuse(why, IPC_REFUSE_KEY_ALGORITHM, "not one DER "
			    "RSAPublicKey with an odd exponent above 1");
			goto out;
		}
		bits = BN_num_bits(n);
		if (bits == 2048)
			alg = ALG_RSA_2048;
		else if (bits == 3072)
			alg = ALG_RSA_3072;
		else if (bits == 4096)
			alg = ALG_RSA_4096;
		else {
			refuse(why, IPC_REFUSE_KEY_ALGORITHM, "RSA-%d is not "
			    "issued (2048, 3072, 4096)", bits);
			goto out;
		}
		break;
	case NID_ED25519:
		if (ptype != V_ASN1_UNDEF || len != 32) {
			refuse(why, IPC_REFUSE_KEY_ALGORITHM, "Ed25519 key "
			    "with parameters or not 32 bytes");
			goto out;
		}
		alg = ALG_ED25519;
		break;
	default:
		refuse(why, IPC_REFUSE_KEY_ALGORITHM, "subject key algorithm "
		    "%s is not issued", nid == NID_undef ? "(unknown)" :
		    OBJ_nid2sn(nid));
		goto out;
	}
	if ((key->sk_algs & alg) == 0) {
		refuse(why, IPC_REFUSE_KEY_ALGORITHM, "key %s may not certify "
		    "this key algorithm", key->sk_name);
		goto out;
	}
	*out = k;
	k = NULL;
	ret = 0;
 out:
	BN_free(n);
	BN_free(e);
	SIGNER_RSA_PUB_free(rsa);
	SIGNER_SPKI_free(k);
	return ret;
}

static int
asn1_int64(const ASN1_INTEGER *a, int64_t *out)
{
	return a != NULL && ASN1_INTEGER_get_int64(out, a) == 1 ? 0 : -1;
}

/* --- key preparation --------------------------------------------------- */

int
build_key_init(struct signer_key *key)
{
	const ASN1_OCTET_STRING *ski;
	X509_PUBKEY *xpub;
	const unsigned char *bits;
	unsigned char md[SHA_DIGEST_LENGTH];
	int nid, bitslen, ptype = V_ASN1_UNDEF;
	time_t t;

	if ((key->sk_issuer = X509_NAME_dup(X509_get_subject_name(
	    key->sk_cert))) == NULL)
		return -1;
	/* The issued certificates' AKI is the CA's own SKI; without one, the
	 * RFC 5280 method 1 hash of its key. */
	if ((ski = X509_get0_subject_key_id(key->sk_cert)) != NULL)
		key->sk_keyid = ASN1_OCTET_STRING_dup(ski);
	else {
		xpub = X509_get_X509_PUBKEY(key->sk_cert);
		if (X509_PUBKEY_get0_param(NULL, &bits, &bitslen, NULL,
		    xpub) != 1)
			return -1;
		SHA1(bits, (size_t)bitslen, md);
		if ((key->sk_keyid = ASN1_OCTET_STRING_new()) != NULL &&
		    ASN1_OCTET_STRING_set(key->sk_keyid, md, sizeof(md)) != 1)
			return -1;
	}
	if (key->sk_keyid == NULL)
		return -1;
	switch (token_key_type(key->sk_key)) {
	case TOKEN_KEY_EC_P256:
		nid = NID_ecdsa_with_SHA256;
		key->sk_md = EVP_sha256();
		break;
	case TOKEN_KEY_EC_P384:
		nid = NID_ecdsa_with_SHA384;
		key->sk_md = EVP_sha384();
		break;
	case TOKEN_KEY_RSA_2048:
	case TOKEN_KEY_RSA_3072:
	case TOKEN_KEY_RSA_4096:
		nid = NID_sha256WithRSAEncryption;
		ptype = V_ASN1_NULL;
		key->sk_md = EVP_sha256();
		break;
	case TOKEN_KEY_ED25519:
		nid = NID_ED25519;
		key->sk_md = NULL;
		break;
	default:
		return -1;
	}
	if ((key->sk_sigalg = X509_ALGOR_new()) == NULL ||
	    X509_ALGOR_set0(key->sk_sigalg, OBJ_nid2obj(nid), ptype, NULL) != 1)
		return -1;
	{
		struct tm tm;

		if (ASN1_TIME_to_tm(X509_get0_notBefore(key->sk_cert),
		    &tm) != 1)
			return -1;
		t = timegm(&tm);
		key->sk_ca_not_before = t;
		if (ASN1_TIME_to_tm(X509_get0_notAfter(key->sk_cert),
		    &tm) != 1)
			return -1;
		t = timegm(&tm);
		key->sk_ca_not_after = t;
	}
	return 0;
}

/* --- extensions -------------------------------------------------------- */

static int
push_ext(STACK_OF(X509_EXTENSION) *exts, int nid, int crit, void *value)
{
	X509_EXTENSION *ext;

	if ((ext = X509V3_EXT_i2d(nid, crit, value)) == NULL)
		return -1;
	if (sk_X509_EXTENSION_push(exts, ext) <= 0) {
		X509_EXTENSION_free(ext);
		return -1;
	}
	return 0;
}

static int
add_basic_constraints(STACK_OF(X509_EXTENSION) *exts, int ca)
{
	BASIC_CONSTRAINTS *bc;
	int ret = -1;

	if ((bc = BASIC_CONSTRAINTS_new()) == NULL)
		return -1;
	if (ca) {
		bc->ca = 0xff;
		if ((bc->pathlen = ASN1_INTEGER_new()) == NULL ||
		    ASN1_INTEGER_set(bc->pathlen, 0) != 1)
			goto out;
	}
	ret = push_ext(exts, NID_basic_constraints, 1, bc);
 out:
	BASIC_CONSTRAINTS_free(bc);
	return ret;
}

static int
add_key_usage(STACK_OF(X509_EXTENSION) *exts, int ca)
{
	ASN1_BIT_STRING *ku;
	int ret = -1;

	if ((ku = ASN1_BIT_STRING_new()) == NULL)
		return -1;
	if (ca) {
		if (ASN1_BIT_STRING_set_bit(ku, 5, 1) != 1 ||	/* keyCertSign */
		    ASN1_BIT_STRING_set_bit(ku, 6, 1) != 1)	/* cRLSign */
			goto out;
	} else if (ASN1_BIT_STRING_set_bit(ku, 0, 1) != 1) /* digitalSignature */
		goto out;
	ret = push_ext(exts, NID_key_usage, 1, ku);
 out:
	ASN1_BIT_STRING_free(ku);
	return ret;
}

static int
add_eku(STACK_OF(X509_EXTENSION) *exts, int server, int client)
{
	EXTENDED_KEY_USAGE *eku;
	int ret = -1;

	if ((eku = sk_ASN1_OBJECT_new_null()) == NULL)
		return -1;
	if ((server && sk_ASN1_OBJECT_push(eku,
	    OBJ_nid2obj(NID_server_auth)) <= 0) ||
	    (client && sk_ASN1_OBJECT_push(eku,
	    OBJ_nid2obj(NID_client_auth)) <= 0))
		goto out;
	ret = push_ext(exts, NID_ext_key_usage, 0, eku);
 out:
	sk_ASN1_OBJECT_free(eku);	/* the objects are static */
	return ret;
}

/* RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
static void
key_id(const SIGNER_SPKI *spki, unsigned char md[SHA_DIGEST_LENGTH])
{
	SHA1(ASN1_STRING_get0_data(spki->key),
	    (size_t)ASN1_STRING_length(spki->key), md);
}

static int
add_key_ids(STACK_OF(X509_EXTENSION) *exts, struct signer_key *key,
    const SIGNER_SPKI *spki)
{
	ASN1_OCTET_STRING *ski;
	AUTHORITY_KEYID *aki;
	unsigned char md[SHA_DIGEST_LENGTH];
	int ret = -1;

	key_id(spki, md);
	if ((ski = ASN1_OCTET_STRING_new()) == NULL)
		return -1;
	if (ASN1_OCTET_STRING_set(ski, md, sizeof(md)) == 1)
		ret = push_ext(exts, NID_subject_key_identifier, 0, ski);
	ASN1_OCTET_STRING_free(ski);
	if (ret != 0)
		return -1;
	if ((aki = AUTHORITY_KEYID_new()) == NULL)
		return -1;
	if ((aki->keyid = ASN1_OCTET_STRING_dup(key->sk_keyid)) == NULL)
		ret = -1;
	else
		ret = push_ext(exts, NID_authority_key_identifier, 0, aki);
	AUTHORITY_KEYID_free(aki);
	return ret;
}

static int
add_crl_dp(STACK_OF(X509_EXTENSION) *exts, const char *uri)
{
	CRL_DIST_POINTS *dps = NULL;
	DIST_POINT *dp = NULL;
	GENERAL_NAME *gn = NULL;
	ASN1_IA5STRING *s = NULL;
	int ret = -1;

	if ((dps = sk_DIST_POINT_new_null()) == NULL ||
	    (dp = DIST_POINT_new()) == NULL ||
	    (dp->distpoint = DIST_POINT_NAME_new()) == NULL ||
	    (dp->distpoint->name.fullname = GENERAL_NAMES_new()) == NULL ||
	    (s = ASN1_IA5STRING_new()) == NULL ||
	    ASN1_STRING_set(s, uri, -1) != 1 ||
	    (gn = GENERAL_NAME_new()) == NULL)
		goto out;
	dp->distpoint->type = 0;
	GENERAL_NAME_set0_value(gn, GEN_URI, s);
	s = NULL;
	if (sk_GENERAL_NAME_push(dp->distpoint->name.fullname, gn) <= 0)
		goto out;
	gn = NULL;
	if (sk_DIST_POINT_push(dps, dp) <= 0)
		goto out;
	dp = NULL;
	ret = push_ext(exts, NID_crl_distribution_points, 0, dps);
 out:
	ASN1_IA5STRING_free(s);
	GENERAL_NAME_free(gn);
	DIST_POINT_free(dp);
	sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
	return ret;
}

/*
 * Name constraints of a sub-CA: the request's names are the permitted
 * subtrees (DNS names, and SPIFFE trust domains as URI host constraints),
 * each inside the key's own limits.
 */
static int
add_name_constraints(STACK_OF(X509_EXTENSION) *exts, struct signer_key *key,
    const GENERAL_NAMES *names, struct build_refusal *why)
{
	NAME_CONSTRAINTS *nc = NULL;
	GENERAL_SUBTREE *st = NULL;
	const GENERAL_NAME *gn;
	ASN1_IA5STRING *s = NULL;
	const char *v;
	char td[256];
	int i, n, len, ret = -1, type;

	n = names == NULL ? 0 : sk_GENERAL_NAME_num(names);
	if (n == 0) {
		if (key->sk_require_nc)
			return refuse(why, IPC_REFUSE_NAME, "key %s issues "
			    "sub-CAs only with name constraints: give the "
			    "permitted DNS names and SPIFFE trust domains",
			    key->sk_name);
		return 0;
	}
	if (n > MAX_SANS)
		return refuse(why, IPC_REFUSE_NAME, "%d name constraints (at "
		    "most %d)", n, MAX_SANS);
	if ((nc = NAME_CONSTRAINTS_new()) == NULL ||
	    (nc->permittedSubtrees = sk_GENERAL_SUBTREE_new_null()) == NULL)
		goto nomem;
	for (i = 0; i < n; i++) {
		gn = sk_GENERAL_NAME_value(names, i);
		if (gn->type == GEN_DNS) {
			if (!ia5_clean(gn->d.dNSName))
				goto badname;
			v = (const char *)ASN1_STRING_get0_data(gn->d.dNSName);
			len = ASN1_STRING_length(gn->d.dNSName);
			if (!build_dns_name_ok(v, (size_t)len) ||
			    !name_in_suffixes(v, (size_t)len, key->sk_dns,
			    key->sk_ndns)) {
				refuse(why, IPC_REFUSE_NAME, "name constraint "
				    "%d: DNS subtree '%.*s' is outside the DNS "
				    "suffixes of key %s", i + 1,
				    len > 80 ? 80 : len, v, key->sk_name);
				goto out;
			}
			type = GEN_DNS;
		} else if (gn->type == GEN_URI) {
			if (!ia5_clean(gn->d.uniformResourceIdentifier))
				goto badname;
			v = (const char *)ASN1_STRING_get0_data(
			    gn->d.uniformResourceIdentifier);
			len = ASN1_STRING_length(
			    gn->d.uniformResourceIdentifier);
			if (!build_spiffe_id_ok(v, (size_t)len, 0, td,
			    sizeof(td)) || (size_t)len != 9 + strlen(td) ||
			    !domain_listed(td, key->sk_domains,
			    key->sk_ndomains)) {
				refuse(why, IPC_REFUSE_NAME, "name constraint "
				    "%d: give a trust domain of key %s as "
				    "spiffe://DOMAIN", i + 1, key->sk_name);
				goto out;
			}
			v = td;
			len = (int)strlen(td);
			type = GEN_URI;
		} else
			goto badname;
		if ((st = GENERAL_SUBTREE_new()) == NULL ||
		    (s = ASN1_IA5STRING_new()) == NULL ||
		    ASN1_STRING_set(s, v, len) != 1)
			goto nomem;
		GENERAL_NAME_set0_value(st->base, type, s);
		s = NULL;
		if (sk_GENERAL_SUBTREE_push(nc->permittedSubtrees, st) <= 0)
			goto nomem;
		st = NULL;
	}
	if (push_ext(exts, NID_name_constraints, 1, nc) != 0)
		goto nomem;
	ret = 0;
	goto out;
 badname:
	refuse(why, IPC_REFUSE_NAME, "name constraint %d: only DNS names and "
	    "spiffe://DOMAIN", i + 1);
	goto out;
 nomem:
	refuse(why, IPC_REFUSE_INTERNAL, "out of memory building name "
	    "constraints");
 out:
	ASN1_IA5STRING_free(s);
	GENERAL_SUBTREE_free(st);
	NAME_CONSTRAINTS_free(nc);
	return ret;
}

/* --- serials ----------------------------------------------------------- */

/* 127 bits from the CSPRNG: positive, below 2^159, at least 64 random
 * bits; never one the serial_ok callback has seen. */
static int
new_serial(int (*serial_ok)(void *, const ASN1_INTEGER *), void *arg,
    ASN1_INTEGER **out)
{
	unsigned char buf[16];
	BIGNUM *bn;
	int tries;

	for (tries = 0; tries < 8; tries++) {
		if (RAND_bytes(buf, sizeof(buf)) != 1)
			return -1;
		buf[0] &= 0x7f;
		buf[0] |= 0x40;		/* always 16 bytes long */
		if ((bn = BN_bin2bn(buf, sizeof(buf), NULL)) == NULL)
			return -1;
		*out = BN_to_ASN1_INTEGER(bn, NULL);
		BN_free(bn);
		OPENSSL_cleanse(buf, sizeof(buf));
		if (*out == NULL)
			return -1;
		if (serial_ok == NULL || serial_ok(arg, *out))
			return 0;
		ASN1_INTEGER_free(*out);
		*out = NULL;
	}
	return -1;
}

/* --- certificates ------------------------------------------------------ */

static char *
name_text(const X509_NAME *name)
{
	BIO *b;
	char *out = NULL;
	long len;
	char *data;

	if ((b = BIO_new(BIO_s_mem())) == NULL)
		return NULL;
	if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0 &&
	    (len = BIO_get_mem_data(b, &data)) >= 0 &&
	    (out = malloc((size_t)len + 1)) != NULL) {
		/* An empty name leaves the BIO without a buffer. */
		if (len > 0)
			memcpy(out, data, (size_t)len);
		out[len] = '\0';
	}
	BIO_free(b);
	return out;
}

static void *strict_d2i(const ASN1_ITEM *, const unsigned char *, long);
static int lint_certificate(struct build_tbs *, const SIGNER_TBS_CERT *,
    struct build_refusal *);

int
build_certificate(struct signer_key *key, const IPC_ISSUE_REQ *req,
    int64_t now, int64_t backdate,
    int (*serial_ok)(void *, const ASN1_INTEGER *), void *arg,
    struct build_tbs **out, struct build_refusal *why)
{
	SIGNER_TBS_CERT *tbs = NULL;
	struct build_tbs *bt = NULL;
	SIGNER_SPKI *xpub = NULL;
	SIGNER_TBS_CERT *parsed = NULL;
	uint8_t *der = NULL;
	enum profile_id profile;
	char pname[16];
	int64_t nb, na, maxv;
	int ca, nuri, len, ret = -1;

	*out = NULL;
	memset(why, 0, sizeof(*why));
	if ((key->sk_objects & OBJECT_CERTIFICATE) == 0)
		return refuse(why, IPC_REFUSE_OBJECT_KIND, "key %s does not "
		    "sign certificates", key->sk_name);
	/* Profile. */
	len = ASN1_STRING_length(req->profile);
	if (len <= 0 || (size_t)len >= sizeof(pname))
		return refuse(why, IPC_REFUSE_PROFILE, "unknown profile");
	memcpy(pname, ASN1_STRING_get0_data(req->profile), (size_t)len);
	pname[len] = '\0';
	if (strlen(pname) != (size_t)len || profile_parse(pname, &profile) != 0)
		return refuse(why, IPC_REFUSE_PROFILE, "unknown profile '%s'",
		    pname);
	if ((key->sk_profiles & (1u << profile)) == 0)
		return refuse(why, IPC_REFUSE_PROFILE, "key %s may not issue "
		    "profile %s", key->sk_name, pname);
	ca = profile == PROFILE_SUBCA;
	/* Validity (invariant 4). */
	if (asn1_int64(req->not_before, &nb) != 0 ||
	    asn1_int64(req->not_after, &na) != 0)
		return refuse(why, IPC_REFUSE_VALIDITY, "validity is not two "
		    "64-bit times");
	maxv = ca ? key->sk_max_ca_validity : key->sk_max_validity;
	if (nb < now - backdate)
		return refuse(why, IPC_REFUSE_VALIDITY, "notBefore is %llds "
		    "in the past (at most %llds)", (long long)(now - nb),
		    (long long)backdate);
	if (nb > now + backdate)
		return refuse(why, IPC_REFUSE_VALIDITY, "notBefore is %llds "
		    "in the future (at most %llds)", (long long)(nb - now),
		    (long long)backdate);
	if (na <= nb)
		return refuse(why, IPC_REFUSE_VALIDITY, "notAfter is not "
		    "after notBefore");
	if (na - nb > maxv)
		return refuse(why, IPC_REFUSE_VALIDITY, "validity %llds is "
		    "longer than key %s allows for %s (%llds)",
		    (long long)(na - nb), key->sk_name, pname,
		    (long long)maxv);
	if (na > key->sk_ca_not_after)
		return refuse(why, IPC_REFUSE_VALIDITY, "notAfter is past "
		    "the CA certificate's own notAfter");
	if (nb < key->sk_ca_not_before)
		return refuse(why, IPC_REFUSE_VALIDITY, "notBefore is before "
		    "the CA certificate's own notBefore");
	/* Subject key (invariant 3). */
	if (check_spki(key, req->spki, &xpub, why) != 0)
		goto out;
	/* Names. */
	if (!ca && check_sans(key, profile, req->sans, &nuri, why) != 0)
		goto out;
	if (check_subject(profile, req->subject, req->sans, why) != 0)
		goto out;

	/* Build (invariants 1, 2, 5). */
	if ((bt = calloc(1, sizeof(*bt))) == NULL ||
	    (tbs = SIGNER_TBS_CERT_new()) == NULL ||
	    (tbs->version = ASN1_INTEGER_new()) == NULL ||
	    ASN1_INTEGER_set(tbs->version, 2) != 1)
		goto nomem;
	bt->bt_key = key;
	bt->bt_profile = profile;
	bt->bt_now = now;
	bt->bt_backdate = backdate;
	if (new_serial(serial_ok, arg, &bt->bt_serial) != 0) {
		refuse(why, IPC_REFUSE_INTERNAL, "no fresh serial number");
		goto out;
	}
	ASN1_INTEGER_free(tbs->serial);
	if ((tbs->serial = ASN1_INTEGER_dup(bt->bt_serial)) == NULL)
		goto nomem;
	X509_ALGOR_free(tbs->signature);
	X509_NAME_free(tbs->issuer);
	X509_NAME_free(tbs->subject);
	SIGNER_SPKI_free(tbs->key);
	tbs->key = NULL;
	if ((tbs->signature = X509_ALGOR_dup(key->sk_sigalg)) == NULL ||
	    (tbs->issuer = X509_NAME_dup(key->sk_issuer)) == NULL ||
	    (tbs->subject = X509_NAME_dup(req->subject)) == NULL ||
	    ASN1_TIME_set(tbs->validity->notBefore, (time_t)nb) == NULL ||
	    ASN1_TIME_set(tbs->validity->notAfter, (time_t)na) == NULL ||
	    (tbs->extensions = sk_X509_EXTENSION_new_null()) == NULL)
		goto nomem;
	tbs->key = xpub;
	xpub = NULL;
	if (add_basic_constraints(tbs->extensions, ca) != 0 ||
	    add_key_usage(tbs->extensions, ca) != 0)
		goto nomem;
	if (!ca && add_eku(tbs->extensions,
	    profile == PROFILE_SERVER || profile == PROFILE_PEER ||
	    profile == PROFILE_SVID,
	    profile == PROFILE_CLIENT || profile == PROFILE_PEER ||
	    profile == PROFILE_SVID) != 0)
		goto nomem;
	if (add_key_ids(tbs->extensions, key, tbs->key) != 0)
		goto nomem;
	if (!ca && push_ext(tbs->extensions, NID_subject_alt_name,
	    X509_NAME_entry_count(req->subject) == 0, req->sans) != 0)
		goto nomem;
	if (ca && add_name_constraints(tbs->extensions, key, req->sans,
	    why) != 0)
		goto out;
	if (!ca && key->sk_crl_dp != NULL &&
	    add_crl_dp(tbs->extensions, key->sk_crl_dp) != 0)
		goto nomem;
	if ((len = i2d_SIGNER_TBS_CERT(tbs, &der)) <= 0)
		goto nomem;
	bt->bt_der = der;
	bt->bt_derlen = len;
	der = NULL;
	SHA256(bt->bt_der, (size_t)bt->bt_derlen, bt->bt_sha256);
	if ((bt->bt_subject = name_text(req->subject)) == NULL)
		goto nomem;

	/* Lint the TBS as decoded afresh from its DER. */
	if ((parsed = strict_d2i(ASN1_ITEM_rptr(SIGNER_TBS_CERT), bt->bt_der,
	    bt->bt_derlen)) == NULL) {
		refuse(why, IPC_REFUSE_LINT, "the built TBSCertificate is not "
		    "one DER encoding");
		goto out;
	}
	if (lint_certificate(bt, parsed, why) != 0)
		goto out;
	*out = bt;
	bt = NULL;
	ret = 0;
	goto out;
 nomem:
	refuse(why, IPC_REFUSE_INTERNAL, "out of memory building the "
	    "certificate");
 out:
	SIGNER_TBS_CERT_free(parsed);
	OPENSSL_free(der);
	SIGNER_SPKI_free(xpub);
	SIGNER_TBS_CERT_free(tbs);
	build_tbs_free(bt);
	return ret;
}

/* The extension with this NID, decoded; *count how many there are. */
static void *
ext_d2i(const STACK_OF(X509_EXTENSION) *exts, int nid, int *crit)
{
	X509_EXTENSION *ext;
	int i;

	for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
		ext = sk_X509_EXTENSION_value(exts, i);
		if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) == nid) {
			*crit = X509_EXTENSION_get_critical(ext);
			return X509V3_EXT_d2i(ext);
		}
	}
	return NULL;
}

/* RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050. */
static int
time_ok(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;

	if (ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	*out = (int64_t)timegm(&tm);
	return ASN1_STRING_type(t) == (tm.tm_year + 1900 < 2050 ?
	    V_ASN1_UTCTIME : V_ASN1_GENERALIZEDTIME);
}

/*
 * The built TBSCertificate, decoded afresh, must be what the profile says:
 * v3, the CA's signature algorithm, issuer and AKI, a serial of 64 to 159
 * bits, validity inside the profile and the CA's, the subject key's SKI,
 * the profile's extensions and no other, names inside the key's limits.
 */
static int
lint_certificate(struct build_tbs *bt, const SIGNER_TBS_CERT *t,
    struct build_refusal *why)
{
	static const int leaf_exts[] = {
		NID_basic_constraints, NID_key_usage, NID_ext_key_usage,
		NID_subject_key_identifier, NID_authority_key_identifier,
		NID_subject_alt_name, NID_crl_distribution_points,
	};
	static const int ca_exts[] = {
		NID_basic_constraints, NID_key_usage,
		NID_subject_key_identifier, NID_authority_key_identifier,
		NID_name_constraints,
	};
	struct signer_key *key = bt->bt_key;
	const int *allowed;
	X509_EXTENSION *ext;
	BASIC_CONSTRAINTS *bc = NULL;
	ASN1_BIT_STRING *ku = NULL;
	EXTENDED_KEY_USAGE *eku = NULL;
	AUTHORITY_KEYID *aki = NULL;
	ASN1_OCTET_STRING *ski = NULL;
	GENERAL_NAMES *sans = NULL;
	NAME_CONSTRAINTS *nc = NULL;
	BIGNUM *bn = NULL;
	unsigned char md[SHA_DIGEST_LENGTH];
	int64_t nb, na, v;
	int i, j, n, nid, nallowed, ca, nuri, crit, bit, want, ret = -1;
	int server = 0, client = 0;
	struct build_refusal inner;

	ca = bt->bt_profile == PROFILE_SUBCA;
#define LINT(cond, ...)							\
	do {								\
		if (!(cond)) {						\
			refuse(why, IPC_REFUSE_LINT, __VA_ARGS__);	\
			goto out;					\
		}							\
	} while (0)
	LINT(t->version != NULL && ASN1_INTEGER_get_int64(&v, t->version) == 1 &&
	    v == 2, "not a v3 certificate");
	LINT(X509_ALGOR_cmp(t->signature, key->sk_sigalg) == 0,
	    "signature algorithm is not the CA key's");
	bn = ASN1_INTEGER_to_BN(t->serial, NULL);
	LINT(bn != NULL && !BN_is_negative(bn) && BN_num_bits(bn) >= 64 &&
	    BN_num_bits(bn) <= 159, "serial number is not positive with 64 to "
	    "159 bits");
	LINT(time_ok(t->validity->notBefore, &nb) &&
	    time_ok(t->validity->notAfter, &na), "validity is not in RFC 5280 "
	    "time encoding");
	LINT(nb >= bt->bt_now - bt->bt_backdate && na > nb &&
	    na - nb <= (ca ? key->sk_max_ca_validity : key->sk_max_validity) &&
	    na <= key->sk_ca_not_after && nb >= key->sk_ca_not_before,
	    "validity outside the profile or the CA's");
	LINT(X509_NAME_cmp(t->issuer, key->sk_issuer) == 0,
	    "issuer is not the CA's subject");
	if (ca)
		LINT(check_subject(bt->bt_profile, t->subject, NULL,
		    &inner) == 0, "subject: %s", inner.reason);
	/* Exactly the profile's extensions, each once. */
	allowed = ca ? ca_exts : leaf_exts;
	nallowed = ca ? (int)(sizeof(ca_exts) / sizeof(ca_exts[0])) :
	    (int)(sizeof(leaf_exts) / sizeof(leaf_exts[0]));
	n = sk_X509_EXTENSION_num(t->extensions);
	for (i = 0; i < n; i++) {
		ext = sk_X509_EXTENSION_value(t->extensions, i);
		nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
		for (j = 0; j < nallowed && allowed[j] != nid; j++)
			;
		LINT(j < nallowed, "extension %s is not in profile %s",
		    OBJ_nid2sn(nid), profile_name(bt->bt_profile));
		for (j = i + 1; j < n; j++)
			LINT(OBJ_obj2nid(X509_EXTENSION_get_object(
			    sk_X509_EXTENSION_value(t->extensions, j))) != nid,
			    "extension %s twice", OBJ_nid2sn(nid));
	}
	bc = ext_d2i(t->extensions, NID_basic_constraints, &crit);
	LINT(bc != NULL && crit && (bc->ca != 0) == ca &&
	    (ca ? bc->pathlen != NULL && ASN1_INTEGER_get(bc->pathlen) == 0 :
	    bc->pathlen == NULL), "basic constraints do not match profile %s",
	    profile_name(bt->bt_profile));
	ku = ext_d2i(t->extensions, NID_key_usage, &crit);
	LINT(ku != NULL && crit, "key usage missing or not critical");
	for (bit = 0; bit < 9; bit++) {
		want = ca ? (bit == 5 || bit == 6) : bit == 0;
		LINT(ASN1_BIT_STRING_get_bit(ku, bit) == want,
		    "key usage bit %d does not match profile %s", bit,
		    profile_name(bt->bt_profile));
	}
	LINT(ASN1_STRING_length(ku) <= 2, "key usage has unknown bits");
	aki = ext_d2i(t->extensions, NID_authority_key_identifier, &crit);
	LINT(aki != NULL && !crit && aki->keyid != NULL &&
	    aki->issuer == NULL && aki->serial == NULL &&
	    ASN1_OCTET_STRING_cmp(aki->keyid, key->sk_keyid) == 0,
	    "authority key identifier is not the CA's");
	ski = ext_d2i(t->extensions, NID_subject_key_identifier, &crit);
	key_id(t->key, md);
	LINT(ski != NULL && !crit && ASN1_STRING_length(ski) == (int)sizeof(md) &&
	    memcmp(ASN1_STRING_get0_data(ski), md, sizeof(md)) == 0,
	    "subject key identifier is not the subject key's");
	if (ca) {
		nc = ext_d2i(t->extensions, NID_name_constraints, &crit);
		LINT(nc == NULL ? !key->sk_require_nc : crit &&
		    nc->excludedSubtrees == NULL &&
		    sk_GENERAL_SUBTREE_num(nc->permittedSubtrees) > 0,
		    "name constraints missing, not critical or empty");
	} else {
		eku = ext_d2i(t->extensions, NID_ext_key_usage, &crit);
		LINT(eku != NULL && !crit, "extended key usage missing");
		for (i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
			nid = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i));
			LINT(nid == NID_server_auth || nid == NID_client_auth,
			    "extended key usage %s not in the profile",
			    OBJ_nid2sn(nid));
			server |= nid == NID_server_auth;
			client |= nid == NID_client_auth;
		}
		LINT(server == (bt->bt_profile != PROFILE_CLIENT) &&
		    client == (bt->bt_profile != PROFILE_SERVER) &&
		    sk_ASN1_OBJECT_num(eku) == server + client,
		    "extended key usage does not match profile %s",
		    profile_name(bt->bt_profile));
		sans = ext_d2i(t->extensions, NID_subject_alt_name, &crit);
		LINT(sans != NULL, "no subject alternative names");
		LINT(crit || X509_NAME_entry_count(t->subject) > 0,
		    "SAN must be critical with an empty subject");
		LINT(check_sans(key, bt->bt_profile, sans, &nuri, &inner) == 0,
		    "SANs: %s", inner.reason);
		LINT(check_subject(bt->bt_profile, t->subject, sans,
		    &inner) == 0, "subject: %s", inner.reason);
	}
#undef LINT
	ret = 0;
 out:
	BASIC_CONSTRAINTS_free(bc);
	ASN1_BIT_STRING_free(ku);
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
	AUTHORITY_KEYID_free(aki);
	ASN1_OCTET_STRING_free(ski);
	GENERAL_NAMES_free(sans);
	NAME_CONSTRAINTS_free(nc);
	BN_free(bn);
	return ret;
}

/* --- CRLs -------------------------------------------------------------- */

static int
revoked_cmp(const X509_REVOKED *const *a, const X509_REVOKED *const *b)
{
	return ASN1_INTEGER_cmp(X509_REVOKED_get0_serialNumber(*a),
	    X509_REVOKED_get0_serialNumber(*b));
}

/* A Certificate or CertificateList: the TBS bytes exactly as built, the
 * key's signature algorithm and sig (empty for linting the unsigned
 * object as a parsed one).  Returns the DER (OPENSSL_free) or NULL. */
static uint8_t *
signed_object(const struct build_tbs *bt, uint8_t *sigbytes, size_t siglen,
    int *len)
{
	SIGNER_SIGNED *sig;
	ASN1_STRING *seq;
	uint8_t *der = NULL;

	if ((sig = SIGNER_SIGNED_new()) == NULL)
		return NULL;
	if ((seq = ASN1_STRING_new()) == NULL ||
	    ASN1_STRING_set(seq, bt->bt_der, bt->bt_derlen) != 1 ||
	    (sig->tbs == NULL && (sig->tbs = ASN1_TYPE_new()) == NULL)) {
		ASN1_STRING_free(seq);
		goto out;
	}
	ASN1_TYPE_set(sig->tbs, V_ASN1_SEQUENCE, seq);
	X509_ALGOR_free(sig->algorithm);
	if ((sig->algorithm = X509_ALGOR_dup(bt->bt_key->sk_sigalg)) == NULL ||
	    (siglen > 0 && ASN1_BIT_STRING_set(sig->signature, sigbytes,
	    (int)siglen) != 1))
		goto out;
	/* All bits used: OpenSSL must not trim trailing zero bits. */
	sig->signature->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
	sig->signature->flags |= ASN1_STRING_FLAG_BITS_LEFT;
	if ((*len = i2d_SIGNER_SIGNED(sig, &der)) <= 0) {
		OPENSSL_free(der);
		der = NULL;
	}
 out:
	SIGNER_SIGNED_free(sig);
	return der;
}

/* The built CRL, parsed back: DER round trip, v2, the CA's issuer and
 * AKI, the dates asked for, every entry. */
static int
lint_crl(struct build_tbs *bt, int nrevoked, struct build_refusal *why)
{
	X509_CRL *crl = NULL;
	uint8_t *der, *re = NULL;
	const unsigned char *p;
	const ASN1_OCTET_STRING *aki;
	AUTHORITY_KEYID *akid = NULL;
	int len = 0, relen, ret = -1;
	STACK_OF(X509_REVOKED) *revs;

	if ((der = signed_object(bt, NULL, 0, &len)) == NULL)
		return refuse(why, IPC_REFUSE_INTERNAL, "out of memory linting "
		    "the CRL");
	p = der;
	if ((crl = d2i_X509_CRL(NULL, &p, len)) == NULL || p != der + len) {
		refuse(why, IPC_REFUSE_LINT, "the built CRL does not parse");
		goto out;
	}
	relen = i2d_X509_CRL(crl, &re);
	if (relen != len || memcmp(re, der, (size_t)len) != 0) {
		refuse(why, IPC_REFUSE_LINT, "CRL DER does not round-trip");
		goto out;
	}
	revs = X509_CRL_get_REVOKED(crl);
	akid = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, NULL,
	    NULL);
	aki = akid != NULL && akid->keyid != NULL &&
	    ASN1_OCTET_STRING_cmp(akid->keyid, bt->bt_key->sk_keyid) == 0 ?
	    akid->keyid : NULL;
	if (X509_CRL_get_version(crl) != X509_CRL_VERSION_2 ||
	    X509_NAME_cmp(X509_CRL_get_issuer(crl), bt->bt_key->sk_issuer) != 0 ||
	    X509_CRL_get0_nextUpdate(crl) == NULL || aki == NULL ||
	    (revs == NULL ? 0 : sk_X509_REVOKED_num(revs)) != nrevoked) {
		refuse(why, IPC_REFUSE_LINT, "CRL version, issuer, "
		    "nextUpdate, AKI or entries are not what was built");
		goto out;
	}
	ret = 0;
 out:
	AUTHORITY_KEYID_free(akid);
	X509_CRL_free(crl);
	OPENSSL_free(re);
	OPENSSL_free(der);
	return ret;
}

int
build_crl(struct signer_key *key, const IPC_CRL_REQ *req, int64_t now,
    int64_t backdate, struct build_tbs **out, struct build_refusal *why)
{
	SIGNER_TBS_CRL *tbs = NULL;
	struct build_tbs *bt = NULL;
	X509_REVOKED *rev = NULL;
	AUTHORITY_KEYID *aki = NULL;
	ASN1_ENUMERATED *reason = NULL;
	ASN1_TIME *t = NULL;
	BIGNUM *bn = NULL;
	const IPC_REVOKED *r;
	uint8_t *der = NULL;
	int64_t tu, nu, at, rc;
	int i, n, len, ret = -1;

	*out = NULL;
	memset(why, 0, sizeof(*why));
	if ((key->sk_objects & OBJECT_CRL) == 0)
		return refuse(why, IPC_REFUSE_OBJECT_KIND, "key %s does not "
		    "sign CRLs", key->sk_name);
	if (asn1_int64(req->this_update, &tu) != 0 ||
	    asn1_int64(req->next_update, &nu) != 0)
		return refuse(why, IPC_REFUSE_VALIDITY, "thisUpdate and "
		    "nextUpdate must be 64-bit times");
	if (tu < now - backdate || tu > now + backdate)
		return refuse(why, IPC_REFUSE_VALIDITY, "thisUpdate is more "
		    "than %llds from now", (long long)backdate);
	if (nu <= tu || nu - tu > key->sk_max_crl_validity)
		return refuse(why, IPC_REFUSE_VALIDITY, "nextUpdate must be "
		    "after thisUpdate by at most %llds",
		    (long long)key->sk_max_crl_validity);
	if (nu > key->sk_ca_not_after)
		return refuse(why, IPC_REFUSE_VALIDITY, "nextUpdate is past "
		    "the CA certificate's notAfter");
	if ((bn = ASN1_INTEGER_to_BN(req->crl_number, NULL)) == NULL ||
	    BN_is_negative(bn) || BN_num_bits(bn) > 159) {
		BN_free(bn);
		return refuse(why, IPC_REFUSE_BAD_MESSAGE, "CRL number must be "
		    "0 to 2^159");
	}
	BN_free(bn);
	bn = NULL;
	n = req->revoked == NULL ? 0 : sk_IPC_REVOKED_num(req->revoked);
	if (n > MAX_REVOKED)
		return refuse(why, IPC_REFUSE_BAD_MESSAGE, "%d revoked entries "
		    "(at most %d)", n, MAX_REVOKED);

	if ((bt = calloc(1, sizeof(*bt))) == NULL ||
	    (tbs = SIGNER_TBS_CRL_new()) == NULL ||
	    (tbs->version = ASN1_INTEGER_new()) == NULL ||
	    ASN1_INTEGER_set(tbs->version, 1) != 1)
		goto nomem;
	bt->bt_key = key;
	bt->bt_crl = 1;
	bt->bt_now = now;
	bt->bt_backdate = backdate;
	X509_ALGOR_free(tbs->signature);
	X509_NAME_free(tbs->issuer);
	ASN1_TIME_free(tbs->this_update);
	tbs->this_update = NULL;
	if ((tbs->signature = X509_ALGOR_dup(key->sk_sigalg)) == NULL ||
	    (tbs->issuer = X509_NAME_dup(key->sk_issuer)) == NULL ||
	    (tbs->this_update = ASN1_TIME_set(NULL, (time_t)tu)) == NULL ||
	    (tbs->next_update = ASN1_TIME_set(NULL, (time_t)nu)) == NULL ||
	    (bt->bt_serial = ASN1_INTEGER_dup(req->crl_number)) == NULL)
		goto nomem;
	if (n > 0 && (tbs->revoked = sk_X509_REVOKED_new(revoked_cmp)) == NULL)
		goto nomem;
	for (i = 0; i < n; i++) {
		r = sk_IPC_REVOKED_value(req->revoked, i);
		if ((bn = ASN1_INTEGER_to_BN(r->serial, NULL)) == NULL ||
		    BN_is_negative(bn) || BN_is_zero(bn) ||
		    BN_num_bits(bn) > 159) {
			refuse(why, IPC_REFUSE_BAD_MESSAGE, "revoked entry %d: "
			    "serial must be positive, at most 159 bits", i + 1);
			goto out;
		}
		BN_free(bn);
		bn = NULL;
		if (asn1_int64(r->revoked_at, &at) != 0 || at > now + backdate ||
		    at < 0) {
			refuse(why, IPC_REFUSE_BAD_MESSAGE, "revoked entry %d: "
			    "revocation time in the future", i + 1);
			goto out;
		}
		rc = ASN1_ENUMERATED_get(r->reason);
		if (rc < 0 || rc > 10 || rc == 7) {
			refuse(why, IPC_REFUSE_BAD_MESSAGE, "revoked entry %d: "
			    "reason %lld is not an RFC 5280 CRLReason", i + 1,
			    (long long)rc);
			goto out;
		}
		if ((rev = X509_REVOKED_new()) == NULL ||
		    X509_REVOKED_set_serialNumber(rev, r->serial) != 1 ||
		    (t = ASN1_TIME_set(NULL, (time_t)at)) == NULL ||
		    X509_REVOKED_set_revocationDate(rev, t) != 1)
			goto nomem;
		ASN1_TIME_free(t);
		t = NULL;
		/* unspecified (0) is expressed by leaving the reason out. */
		if (rc != 0) {
			if ((reason = ASN1_ENUMERATED_new()) == NULL ||
			    ASN1_ENUMERATED_set(reason, (long)rc) != 1 ||
			    X509_REVOKED_add1_ext_i2d(rev, NID_crl_reason,
			    reason, 0, 0) != 1)
				goto nomem;
			ASN1_ENUMERATED_free(reason);
			reason = NULL;
		}
		if (sk_X509_REVOKED_push(tbs->revoked, rev) <= 0)
			goto nomem;
		rev = NULL;
	}
	if (tbs->revoked != NULL) {
		sk_X509_REVOKED_sort(tbs->revoked);
		for (i = 1; i < n; i++)
			if (ASN1_INTEGER_cmp(X509_REVOKED_get0_serialNumber(
			    sk_X509_REVOKED_value(tbs->revoked, i - 1)),
			    X509_REVOKED_get0_serialNumber(
			    sk_X509_REVOKED_value(tbs->revoked, i))) == 0) {
				refuse(why, IPC_REFUSE_BAD_MESSAGE, "a serial "
				    "is listed twice");
				goto out;
			}
	}
	if ((tbs->extensions = sk_X509_EXTENSION_new_null()) == NULL ||
	    (aki = AUTHORITY_KEYID_new()) == NULL ||
	    (aki->keyid = ASN1_OCTET_STRING_dup(key->sk_keyid)) == NULL ||
	    push_ext(tbs->extensions, NID_authority_key_identifier, 0,
	    aki) != 0 ||
	    push_ext(tbs->extensions, NID_crl_number, 0,
	    req->crl_number) != 0)
		goto nomem;
	if ((len = i2d_SIGNER_TBS_CRL(tbs, &der)) <= 0)
		goto nomem;
	bt->bt_der = der;
	bt->bt_derlen = len;
	der = NULL;
	SHA256(bt->bt_der, (size_t)bt->bt_derlen, bt->bt_sha256);
	if (lint_crl(bt, n, why) != 0)
		goto out;
	*out = bt;
	bt = NULL;
	ret = 0;
	goto out;
 nomem:
	refuse(why, IPC_REFUSE_INTERNAL, "out of memory building the CRL");
 out:
	BN_free(bn);
	ASN1_TIME_free(t);
	ASN1_ENUMERATED_free(reason);
	AUTHORITY_KEYID_free(aki);
	X509_REVOKED_free(rev);
	OPENSSL_free(der);
	SIGNER_TBS_CRL_free(tbs);
	build_tbs_free(bt);
	return ret;
}

/* --- signing ----------------------------------------------------------- */

const uint8_t *
build_tbs_sha256(const struct build_tbs *tbs)
{
	return tbs->bt_sha256;
}

const ASN1_INTEGER *
build_tbs_serial(const struct build_tbs *tbs)
{
	return tbs->bt_serial;
}

const char *
build_tbs_profile(const struct build_tbs *tbs)
{
	return tbs->bt_crl ? "crl" : profile_name(tbs->bt_profile);
}

/* Verifies a token signature with the CA certificate's public key: over
 * the digest for ECDSA and RSA, over the TBS for Ed25519. */
static int
verify_signature(struct signer_key *key, const uint8_t *tbs, size_t tbslen,
    const uint8_t *digest, size_t digestlen, const uint8_t *sig,
    size_t siglen)
{
	EVP_PKEY_CTX *ctx = NULL;
	EVP_MD_CTX *mctx = NULL;
	int ok = 0;

	if (key->sk_md == NULL) {
		ok = (mctx = EVP_MD_CTX_new()) != NULL &&
		    EVP_DigestVerifyInit(mctx, NULL, NULL, NULL,
		    key->sk_pub) == 1 &&
		    EVP_DigestVerify(mctx, sig, siglen, tbs, tbslen) == 1;
		EVP_MD_CTX_free(mctx);
	} else {
		ok = (ctx = EVP_PKEY_CTX_new(key->sk_pub, NULL)) != NULL &&
		    EVP_PKEY_verify_init(ctx) == 1 &&
		    (EVP_PKEY_get_base_id(key->sk_pub) != EVP_PKEY_RSA ||
		    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1) &&
		    EVP_PKEY_CTX_set_signature_md(ctx, key->sk_md) == 1 &&
		    EVP_PKEY_verify(ctx, sig, siglen, digest, digestlen) == 1;
		EVP_PKEY_CTX_free(ctx);
	}
	ERR_clear_error();
	return ok ? 0 : -1;
}

int
build_sign(struct build_tbs *bt, struct build_result *res,
    struct build_refusal *why)
{
	struct signer_key *key = bt->bt_key;
	uint8_t md[EVP_MAX_MD_SIZE], sigbuf[1024];
	const uint8_t *in;
	size_t inlen, siglen = sizeof(sigbuf);
	unsigned int mdlen;
	uint8_t *der = NULL;
	int len, ret = -1, err;

	memset(res, 0, sizeof(*res));
	memset(why, 0, sizeof(*why));
	if (key->sk_md != NULL) {
		if (EVP_Digest(bt->bt_der, (size_t)bt->bt_derlen, md, &mdlen,
		    key->sk_md, NULL) != 1)
			goto nomem;
		in = md;
		inlen = mdlen;
	} else {
		in = bt->bt_der;
		inlen = (size_t)bt->bt_derlen;
	}
	if (token_sign_max(key->sk_key) > sizeof(sigbuf)) {
		refuse(why, IPC_REFUSE_INTERNAL, "signature too large");
		goto out;
	}
	if ((err = token_sign(key->sk_key, key->sk_md, in, inlen, sigbuf,
	    &siglen)) != 0) {
		refuse(why, err == TOKEN_ERR_UNAVAILABLE ?
		    IPC_REFUSE_UNAVAILABLE : IPC_REFUSE_INTERNAL,
		    "token: %s", token_strerror(err));
		goto out;
	}
	/* The token's signature, checked with the CA certificate's key
	 * before anything leaves; the assembled object carries exactly the
	 * TBS bytes that were linted and hashed. */
	if (verify_signature(key, bt->bt_der, (size_t)bt->bt_derlen, in, inlen,
	    sigbuf, siglen) != 0)
		goto badsig;
	if ((der = signed_object(bt, sigbuf, siglen, &len)) == NULL)
		goto nomem;
	res->br_der = der;
	res->br_derlen = (size_t)len;
	der = NULL;
	memcpy(res->br_tbs_sha256, bt->bt_sha256, 32);
	if ((res->br_serial = ASN1_INTEGER_dup(bt->bt_serial)) == NULL ||
	    (bt->bt_subject != NULL &&
	    (res->br_subject = strdup(bt->bt_subject)) == NULL))
		goto nomem;
	ret = 0;
	goto out;
 badsig:
	refuse(why, IPC_REFUSE_INTERNAL, "the token's signature does not "
	    "verify with the CA certificate's public key");
	goto out;
 nomem:
	refuse(why, IPC_REFUSE_INTERNAL, "out of memory signing");
 out:
	OPENSSL_cleanse(md, sizeof(md));
	OPENSSL_free(der);
	if (ret != 0)
		build_result_clear(res);
	return ret;
}

void
build_tbs_free(struct build_tbs *bt)
{
	if (bt == NULL)
		return;
	OPENSSL_free(bt->bt_der);
	ASN1_INTEGER_free(bt->bt_serial);
	free(bt->bt_subject);
	free(bt);
}

void
build_result_clear(struct build_result *res)
{
	OPENSSL_free(res->br_der);
	ASN1_INTEGER_free(res->br_serial);
	free(res->br_subject);
	free(res->br_profile);
	memset(res, 0, sizeof(*res));
}
