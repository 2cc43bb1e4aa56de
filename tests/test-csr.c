/*
 * CSR parsing (policy/csr.c): keys and CSRs made here with the OpenSSL
 * API, then every way a CSR from the network can be wrong: the armour,
 * the base64, BER and trailing bytes, the key, the signature, the names.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "csr.h"

static EVP_PKEY *p256, *p256b, *p384, *rsa2048, *ed25519;

static int
setup_keys(void **state)
{
	(void)state;
	p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	p256b = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	rsa2048 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	ed25519 = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (p256 == NULL || p256b == NULL || p384 == NULL ||
	    rsa2048 == NULL || ed25519 == NULL)
		return -1;
	return 0;
}

static int
teardown_keys(void **state)
{
	(void)state;
	EVP_PKEY_free(p256);
	EVP_PKEY_free(p256b);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(rsa2048);
	EVP_PKEY_free(ed25519);
	return 0;
}

/* A CSR for pub with an optional CN and SANs in OpenSSL's config syntax. */
static X509_REQ *
req_new(EVP_PKEY *pub, const char *cn, const char *san)
{
	X509_REQ *req = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *exts;
	X509_EXTENSION *ext;

	assert_non_null(req);
	assert_int_equal(X509_REQ_set_pubkey(req, pub), 1);
	if (cn != NULL)
		assert_int_equal(X509_NAME_add_entry_by_txt(
		    X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
		    (const unsigned char *)cn, -1, -1, 0), 1);
	if (san != NULL) {
		ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name,
		    san);
		assert_non_null(ext);
		exts = sk_X509_EXTENSION_new_null();
		sk_X509_EXTENSION_push(exts, ext);
		assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	}
	return req;
}

static void
req_sign(X509_REQ *req, EVP_PKEY *key, const EVP_MD *md)
{
	assert_true(X509_REQ_sign(req, key, md) > 0);
}

static char *
req_pem(X509_REQ *req)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *s;
	long n;

	assert_non_null(b);
	assert_int_equal(PEM_write_bio_X509_REQ(b, req), 1);
	n = BIO_get_mem_data(b, &data);
	s = malloc(n + 1);
	assert_non_null(s);
	memcpy(s, data, n);
	s[n] = '\0';
	BIO_free(b);
	return s;
}

static void
req_der(X509_REQ *req, uint8_t **der, size_t *len)
{
	int n;

	*der = NULL;
	n = i2d_X509_REQ(req, der);
	assert_true(n > 0);
	*len = (size_t)n;
}

/* Armours der; linelen 0 puts the base64 on one line. */
static char *
armour(const uint8_t *der, size_t len, const char *label, size_t linelen,
    const char *eol)
{
	size_t b64len = 4 * ((len + 2) / 3), cap, i, n;
	unsigned char *b64 = malloc(b64len + 1);
	char *s, *p;

	assert_non_null(b64);
	assert_int_equal(EVP_EncodeBlock(b64, der, (int)len), (int)b64len);
	cap = 2 * strlen(label) + 64 + b64len + 4 * (b64len / 16 + 2);
	s = p = malloc(cap);
	assert_non_null(s);
	p += sprintf(p, "-----BEGIN %s-----%s", label, eol);
	if (linelen == 0)
		linelen = b64len;
	for (i = 0; i < b64len; i += n) {
		n = b64len - i < linelen ? b64len - i : linelen;
		memcpy(p, b64 + i, n);
		p += n;
		p += sprintf(p, "%s", eol);
	}
	sprintf(p, "-----END %s-----%s", label, eol);
	free(b64);
	return s;
}

static char *
cat3(const char *a, const char *b, const char *c)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
	char *s = malloc(la + lb + lc + 1);

	assert_non_null(s);
	memcpy(s, a, la);
	memcpy(s + la, b, lb);
	memcpy(s + la + lb, c, lc + 1);
	return s;
}

static int
all_zero(const void *p, size_t n)
{
	const unsigned char *c = p;

	while (n-- > 0)
		if (*c++ != 0)
			return 0;
	return 1;
}

/*
 * Parse must fail with code, a message containing what (if not NULL),
 * out cleared and OpenSSL's error queue empty.
 */
static void
expect_fail_len(const char *pem, size_t len, const char *code,
    const char *what)
{
	struct csr_info info;
	struct csr_error err;

	memset(&info, 0xa5, sizeof(info));
	memset(&err, 0xa5, sizeof(err));
	if (csr_parse(pem, len, &info, &err) != -1)
		fail_msg("accepted, expected %s (%s)", code,
		    what != NULL ? what : "");
	assert_non_null(err.code);
	if (strcmp(err.code, code) != 0)
		fail_msg("code %s (%s), expected %s", err.code, err.message,
		    code);
	assert_non_null(memchr(err.message, '\0', sizeof(err.message)));
	assert_true(strlen(err.message) > 0);
	if (what != NULL && strstr(err.message, what) == NULL)
		fail_msg("message \"%s\" does not say \"%s\"", err.message,
		    what);
	assert_true(all_zero(&info, sizeof(info)));
	assert_int_equal(ERR_peek_error(), 0);
	csr_info_clear(&info);
}

static void
expect_fail(const char *pem, const char *code, const char *what)
{
	expect_fail_len(pem, strlen(pem), code, what);
}

static void
expect_ok_len(const char *pem, size_t len, struct csr_info *info)
{
	struct csr_error err;

	memset(info, 0xa5, sizeof(*info));
	if (csr_parse(pem, len, info, &err) != 0)
		fail_msg("refused: %s: %s", err.code, err.message);
	assert_int_equal(ERR_peek_error(), 0);
	assert_non_null(info->spki);
	assert_true(info->spkilen > 0);
}

static void
expect_ok(const char *pem, struct csr_info *info)
{
	expect_ok_len(pem, strlen(pem), info);
}

static void
assert_spki(const struct csr_info *info, EVP_PKEY *key)
{
	uint8_t *spki = NULL;
	int n = i2d_PUBKEY(key, &spki);

	assert_true(n > 0);
	assert_int_equal(info->spkilen, (size_t)n);
	assert_memory_equal(info->spki, spki, n);
	OPENSSL_free(spki);
}

/* Signs a CSR for key with the SANs and expects the failure. */
static void
expect_req_fail(EVP_PKEY *key, const char *cn, const char *san,
    const char *code, const char *what)
{
	X509_REQ *req = req_new(key, cn, san);
	char *pem;

	req_sign(req, key, EVP_sha256());
	pem = req_pem(req);
	expect_fail(pem, code, what);
	free(pem);
	X509_REQ_free(req);
}

static void
test_ec_p256_names(void **state)
{
	X509_REQ *req;
	struct csr_info info;
	char *pem;

	(void)state;
	req = req_new(p256, "svc.example", "DNS:a.example,"
	    "URI:spiffe://td.example/ns/a/sa/x,DNS:b.example,"
	    "URI:spiffe://td.example/ns/b/sa/y,DNS:*.c.example");
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	expect_ok(pem, &info);
	assert_int_equal(info.alg, RULES_ALG_EC_P256);
	assert_spki(&info, p256);
	assert_non_null(info.cn);
	assert_string_equal(info.cn, "svc.example");
	assert_int_equal(info.ndns, 3);
	assert_string_equal(info.dns[0], "a.example");
	assert_string_equal(info.dns[1], "b.example");
	assert_string_equal(info.dns[2], "*.c.example");
	assert_int_equal(info.nuris, 2);
	assert_string_equal(info.uris[0], "spiffe://td.example/ns/a/sa/x");
	assert_string_equal(info.uris[1], "spiffe://td.example/ns/b/sa/y");
	csr_info_clear(&info);
	assert_true(all_zero(&info, sizeof(info)));
	csr_info_clear(&info);	/* twice is safe */
	csr_info_clear(NULL);
	free(pem);
	X509_REQ_free(req);
}

static void
test_ec_p384_no_names(void **state)
{
	X509_REQ *req;
	struct csr_info info;
	char *pem;

	(void)state;
	req = req_new(p384, NULL, NULL);
	req_sign(req, p384, EVP_sha384());
	pem = req_pem(req);
	expect_ok(pem, &info);
	assert_int_equal(info.alg, RULES_ALG_EC_P384);
	assert_spki(&info, p384);
	assert_null(info.cn);
	assert_int_equal(info.ndns, 0);
	assert_null(info.dns);
	assert_int_equal(info.nuris, 0);
	assert_null(info.uris);
	csr_info_clear(&info);
	free(pem);
	X509_REQ_free(req);
}

static void
test_ec_other_curves(void **state)
{
	EVP_PKEY *k;

	(void)state;
	k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
	assert_non_null(k);
	expect_req_fail(k, NULL, "DNS:a.example", "key_unsupported",
	    "secp521r1");
	EVP_PKEY_free(k);
	k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1");
	assert_non_null(k);
	expect_req_fail(k, NULL, "DNS:a.example", "key_unsupported",
	    "secp256k1");
	EVP_PKEY_free(k);
}

static void
test_ec_explicit_parameters(void **state)
{
	EVP_PKEY *k;

	(void)state;
	k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(k);
	assert_int_equal(EVP_PKEY_set_utf8_string_param(k,
	    OSSL_PKEY_PARAM_EC_ENCODING, OSSL_PKEY_EC_ENCODING_EXPLICIT), 1);
	expect_req_fail(k, NULL, NULL, "key_unsupported", "explicit");
	EVP_PKEY_free(k);
}

/* A point off the curve: the last byte of Y flipped in the DER. */
static void
test_ec_bad_point(void **state)
{
	X509_REQ *req;
	uint8_t *der, *pt = NULL, *at;
	size_t len, ptlen;
	char *pem;

	(void)state;
	req = req_new(p256, NULL, NULL);
	req_sign(req, p256, EVP_sha256());
	req_der(req, &der, &len);
	ptlen = EVP_PKEY_get1_encoded_public_key(p256, &pt);
	assert_int_equal(ptlen, 65);
	at = memmem(der, len, pt, ptlen);
	assert_non_null(at);
	at[ptlen - 1] ^= 0x01;
	pem = armour(der, len, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_malformed", "public key");
	free(pem);
	OPENSSL_free(pt);
	OPENSSL_free(der);
	X509_REQ_free(req);
}

static void
test_rsa(void **state)
{
	EVP_PKEY *k;
	X509_REQ *req;
	struct csr_info info;
	char *pem;

	(void)state;
	req = req_new(rsa2048, "rsa.example", "DNS:rsa.example");
	req_sign(req, rsa2048, EVP_sha256());
	pem = req_pem(req);
	expect_ok(pem, &info);
	assert_int_equal(info.alg, RULES_ALG_RSA_2048);
	assert_spki(&info, rsa2048);
	assert_int_equal(info.ndns, 1);
	assert_string_equal(info.dns[0], "rsa.example");
	csr_info_clear(&info);
	free(pem);
	X509_REQ_free(req);

	k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	assert_non_null(k);
	expect_req_fail(k, NULL, "DNS:a.example", "key_too_weak", "1024");
	EVP_PKEY_free(k);
}

/* A public-only RSA key with the given modulus and exponent. */
static EVP_PKEY *
rsa_public(const BIGNUM *n, const BIGNUM *e)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	EVP_PKEY *k = NULL;

	assert_non_null(bld);
	assert_non_null(ctx);
	assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N,
	    n), 1);
	assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E,
	    e), 1);
	params = OSSL_PARAM_BLD_to_param(bld);
	assert_non_null(params);
	assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
	assert_int_equal(EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY,
	    params), 1);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	EVP_PKEY_CTX_free(ctx);
	return k;
}

/*
 * RSA shapes without generating keys: the key is checked before the
 * signature, so a CSR carrying a public-only key (signed by another key)
 * shows which key checks pass.
 */
static void
expect_rsa_shape(const BIGNUM *n, const BIGNUM *e, const char *code,
    const char *what)
{
	EVP_PKEY *k = rsa_public(n, e);
	X509_REQ *req = req_new(k, NULL, NULL);
	char *pem;

	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	expect_fail(pem, code, what);
	free(pem);
	X509_REQ_free(req);
	EVP_PKEY_free(k);
}

/*
 * A random odd modulus that OpenSSL's public key check accepts: no prime
 * factor up to 751 (trial division below 1000 first, which is cheap) and
 * "composite, not a prime power" from its Miller-Rabin test, which a
 * random candidate fails now and then, hence the bounded retries.
 * Without e, only the trial division.
 */
static BIGNUM *
odd_modulus(int bits, const BIGNUM *e)
{
	BIGNUM *n = BN_new();
	EVP_PKEY *k;
	EVP_PKEY_CTX *ctx;
	BN_ULONG p;
	int tries, clean, good = 0;

	assert_non_null(n);
	for (tries = 0; tries < 1000 && !good; tries++) {
		assert_int_equal(BN_rand(n, bits, BN_RAND_TOP_ONE,
		    BN_RAND_BOTTOM_ODD), 1);
		clean = 1;
		for (p = 3; p < 1000 && clean; p += 2)
			if (BN_mod_word(n, p) == 0)
				clean = 0;
		if (!clean)
			continue;
		if (e == NULL) {	/* refused before the check anyway */
			good = 1;
			break;
		}
		k = rsa_public(n, e);
		ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
		assert_non_null(ctx);
		good = EVP_PKEY_public_check(ctx) == 1;
		EVP_PKEY_CTX_free(ctx);
		EVP_PKEY_free(k);
	}
	ERR_clear_error();
	assert_true(good);
	assert_int_equal(BN_num_bits(n), bits);
	return n;
}

static void
test_rsa_shapes(void **state)
{
	BIGNUM *n2048 = NULL, *n, *e = BN_new();

	(void)state;
	assert_non_null(e);
	assert_int_equal(EVP_PKEY_get_bn_param(rsa2048, OSSL_PKEY_PARAM_RSA_N,
	    &n2048), 1);

	/* Exponents: too small, even, 2^256 + 1 */
	BN_set_word(e, 3);
	expect_rsa_shape(n2048, e, "key_too_weak", "exponent");
	BN_set_word(e, 65538);
	expect_rsa_shape(n2048, e, "key_unsupported", "exponent");
	BN_set_word(e, 1);
	BN_lshift(e, e, 256);
	BN_add_word(e, 1);
	expect_rsa_shape(n2048, e, "key_unsupported", "exponent");
	/* 2^255 + 1 is below 2^256: the key passes, the signature does not */
	BN_set_word(e, 1);
	BN_lshift(e, e, 255);
	BN_add_word(e, 1);
	expect_rsa_shape(n2048, e, "csr_signature_invalid", NULL);

	/* Sizes: 3072 and 4096 pass the key checks, others do not */
	BN_set_word(e, 65537);
	n = odd_modulus(3072, e);
	expect_rsa_shape(n, e, "csr_signature_invalid", NULL);
	BN_free(n);
	n = odd_modulus(4096, e);
	expect_rsa_shape(n, e, "csr_signature_invalid", NULL);
	BN_free(n);
	n = odd_modulus(2050, NULL);
	expect_rsa_shape(n, e, "key_too_weak", "2050");
	BN_free(n);
	n = odd_modulus(8192, NULL);
	expect_rsa_shape(n, e, "key_too_weak", "8192");
	BN_free(n);
	n = odd_modulus(2047, NULL);
	expect_rsa_shape(n, e, "key_too_weak", "2047");
	BN_free(n);
	BN_free(n2048);
	BN_free(e);
}

static void
test_ed25519(void **state)
{
	X509_REQ *req;
	struct csr_info info;
	char *pem;

	(void)state;
	req = req_new(ed25519, "ed.example", "URI:spiffe://td.example/ed");
	req_sign(req, ed25519, NULL);
	pem = req_pem(req);
	expect_ok(pem, &info);
	assert_int_equal(info.alg, RULES_ALG_ED25519);
	assert_spki(&info, ed25519);
	assert_int_equal(info.ndns, 0);
	assert_int_equal(info.nuris, 1);
	assert_string_equal(info.uris[0], "spiffe://td.example/ed");
	csr_info_clear(&info);
	free(pem);
	X509_REQ_free(req);
}

static void
test_other_key_types(void **state)
{
	EVP_PKEY *k;

	(void)state;
	/* Ed448 (signed properly) and X25519 (cannot sign): refused */
	k = EVP_PKEY_Q_keygen(NULL, NULL, "ED448");
	assert_non_null(k);
	{
		X509_REQ *req = req_new(k, NULL, NULL);
		char *pem;

		req_sign(req, k, NULL);
		pem = req_pem(req);
		expect_fail(pem, "key_unsupported", "ED448");
		free(pem);
		X509_REQ_free(req);
	}
	EVP_PKEY_free(k);
	k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	assert_non_null(k);
	{
		X509_REQ *req = req_new(k, NULL, NULL);
		char *pem;

		req_sign(req, p256, EVP_sha256());
		pem = req_pem(req);
		expect_fail(pem, "key_unsupported", "X25519");
		free(pem);
		X509_REQ_free(req);
	}
	EVP_PKEY_free(k);
}

static void
test_san_types_refused(void **state)
{
	(void)state;
	expect_req_fail(p256, NULL, "DNS:a.example,IP:192.0.2.1",
	    "name_unsupported", "IP address");
	expect_req_fail(p256, NULL, "IP:2001:db8::1", "name_unsupported",
	    "IP address");
	expect_req_fail(p256, NULL, "email:a@example.com",
	    "name_unsupported", "email");
	expect_req_fail(p256, NULL, "RID:1.2.3.4", "name_unsupported",
	    "registeredID");
	expect_req_fail(p256, NULL, "otherName:1.2.3.4;UTF8:x",
	    "name_unsupported", "otherName");
}

static char *
many_names(const char *type, int n, const char *pre, const char *post)
{
	size_t cap = (size_t)n * 64 + 1;
	char *s = malloc(cap), *p = s;
	int i;

	assert_non_null(s);
	*p = '\0';
	for (i = 0; i < n; i++) {
		p += sprintf(p, "%s%s:%s%d%s", i > 0 ? "," : "", type, pre, i,
		    post);
	}
	return s;
}

static void
test_name_counts(void **state)
{
	X509_REQ *req;
	struct csr_info info;
	char *san, *san2, *both, *pem;

	(void)state;
	san = many_names("DNS", CSR_MAX_NAMES, "n", ".example");
	san2 = many_names("URI", CSR_MAX_NAMES, "spiffe://td.example/w/", "");
	both = cat3(san, ",", san2);
	req = req_new(p256, NULL, both);
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	expect_ok(pem, &info);
	assert_int_equal(info.ndns, CSR_MAX_NAMES);
	assert_int_equal(info.nuris, CSR_MAX_NAMES);
	assert_string_equal(info.dns[0], "n0.example");
	assert_string_equal(info.dns[63], "n63.example");
	assert_string_equal(info.uris[63], "spiffe://td.example/w/63");
	csr_info_clear(&info);
	free(pem);
	X509_REQ_free(req);
	free(both);
	free(san);
	free(san2);

	san = many_names("DNS", CSR_MAX_NAMES + 1, "n", ".example");
	expect_req_fail(p256, NULL, san, "csr_too_large", "65 DNS");
	free(san);
	san = many_names("URI", CSR_MAX_NAMES + 1, "spiffe://td/", "");
	expect_req_fail(p256, NULL, san, "csr_too_large", "65 URI");
	free(san);
}

/* Adds a SAN extension holding the names as given, unchecked. */
static X509_REQ *
req_with_names(EVP_PKEY *key, const char *const *names, const int *lens,
    int type, size_t n)
{
	X509_REQ *req = req_new(key, NULL, NULL);
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	GENERAL_NAME *gen;
	ASN1_IA5STRING *ia5;
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_EXTENSION *ext;
	size_t i;

	for (i = 0; i < n; i++) {
		gen = GENERAL_NAME_new();
		ia5 = ASN1_IA5STRING_new();
		assert_int_equal(ASN1_STRING_set(ia5, names[i], lens[i]), 1);
		GENERAL_NAME_set0_value(gen, type, ia5);
		sk_GENERAL_NAME_push(gens, gen);
	}
	ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
	assert_non_null(ext);
	sk_X509_EXTENSION_push(exts, ext);
	assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gens);
	req_sign(req, key, EVP_sha256());
	return req;
}

static void
expect_names_fail(const char *name, int len, int type, const char *code,
    const char *what)
{
	const char *names[2] = { "ok.example", name };
	int lens[2] = { 10, len };
	X509_REQ *req = req_with_names(p256, names, lens, type, 2);
	char *pem = req_pem(req);

	expect_fail(pem, code, what);
	free(pem);
	X509_REQ_free(req);
}

static void
test_name_values(void **state)
{
	X509_REQ *req;
	struct csr_info info;
	char *pem, *longname;
	const char *names[1];
	int lens[1];

	(void)state;
	expect_names_fail("a b.example", 11, GEN_DNS, "name_unsupported",
	    "0x20");
	expect_names_fail("a\0b.example", 11, GEN_DNS, "name_unsupported",
	    "0x00");
	expect_names_fail("caf\xc3\xa9.example", 13, GEN_DNS,
	    "name_unsupported", "0xc3");
	expect_names_fail("a\x7f", 2, GEN_URI, "name_unsupported", "0x7f");
	expect_names_fail("tab\there", 8, GEN_URI, "name_unsupported",
	    "URI name #2");
	expect_names_fail("", 0, GEN_DNS, "name_unsupported", "empty");

	longname = malloc(CSR_MAX_NAME + 2);
	assert_non_null(longname);
	memset(longname, 'a', CSR_MAX_NAME + 1);
	longname[CSR_MAX_NAME + 1] = '\0';
	expect_names_fail(longname, CSR_MAX_NAME + 1, GEN_DNS,
	    "csr_too_large", "2049 bytes");
	names[0] = longname;
	lens[0] = CSR_MAX_NAME;
	req = req_with_names(p256, names, lens, GEN_URI, 1);
	pem = req_pem(req);
	expect_ok(pem, &info);
	assert_int_equal(info.nuris, 1);
	assert_int_equal(strlen(info.uris[0]), CSR_MAX_NAME);
	csr_info_clear(&info);
	free(pem);
	X509_REQ_free(req);
	free(longname);
}

static void
test_duplicate_san(void **state)
{
	X509_REQ *req = req_new(p256, NULL, NULL);
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	char *pem;

	(void)state;
	sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(NULL, NULL,
	    NID_subject_alt_name, "DNS:a.example"));
	sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(NULL, NULL,
	    NID_basic_constraints, "CA:FALSE"));
	sk_X509_EXTENSION_push(exts, X509V3_EXT_conf_nid(NULL, NULL,
	    NID_subject_alt_name, "DNS:evil.example"));
	assert_int_equal(sk_X509_EXTENSION_num(exts), 3);
	assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	expect_fail(pem, "csr_malformed", "more than one subjectAltName");
	free(pem);
	X509_REQ_free(req);
}

/* An extension request attribute with the given DER, as is. */
static void
expect_raw_extensions(const uint8_t *ext, size_t len, int twice,
    const char *code, const char *what)
{
	X509_REQ *req = req_new(p256, NULL, NULL);
	struct csr_info info;
	char *pem;
	int i;

	/* OpenSSL refuses a second ext_req: the second is Microsoft's OID */
	for (i = 0; i <= twice; i++)
		assert_int_equal(X509_REQ_add1_attr_by_NID(req,
		    i == 0 ? NID_ext_req : NID_ms_ext_req, V_ASN1_SEQUENCE,
		    ext, (int)len), 1);
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	if (code == NULL) {
		expect_ok(pem, &info);
		assert_int_equal(info.ndns, 1);
		assert_string_equal(info.dns[0], "example.com");
		csr_info_clear(&info);
	} else
		expect_fail(pem, code, what);
	free(pem);
	X509_REQ_free(req);
}

static void
test_extension_encodings(void **state)
{
	/* Extensions { { subjectAltName, OCTET STRING { dNSName } } } */
	static const uint8_t good[] = {
		0x30, 0x18, 0x30, 0x16, 0x06, 0x03, 0x55, 0x1d, 0x11,
		0x04, 0x0f, 0x30, 0x0d, 0x82, 0x0b,
		'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm' };
	/* critical FALSE written out: DER omits a default */
	static const uint8_t explicit_false[] = {
		0x30, 0x1b, 0x30, 0x19, 0x06, 0x03, 0x55, 0x1d, 0x11,
		0x01, 0x01, 0x00,
		0x04, 0x0f, 0x30, 0x0d, 0x82, 0x0b,
		'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm' };
	/* the GeneralNames length in long form: BER */
	static const uint8_t san_ber[] = {
		0x30, 0x19, 0x30, 0x17, 0x06, 0x03, 0x55, 0x1d, 0x11,
		0x04, 0x10, 0x30, 0x81, 0x0d, 0x82, 0x0b,
		'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm' };
	/* a byte after the GeneralNames inside the OCTET STRING */
	static const uint8_t san_trailing[] = {
		0x30, 0x19, 0x30, 0x17, 0x06, 0x03, 0x55, 0x1d, 0x11,
		0x04, 0x10, 0x30, 0x0d, 0x82, 0x0b,
		'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm', 0x00 };
	/* a GeneralNames with no name */
	static const uint8_t san_empty[] = {
		0x30, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x1d, 0x11,
		0x04, 0x02, 0x30, 0x00 };

	(void)state;
	expect_raw_extensions(good, sizeof(good), 0, NULL, NULL);
	expect_raw_extensions(good, sizeof(good), 1, "csr_malformed",
	    "more than one extension request");
	expect_raw_extensions(explicit_false, sizeof(explicit_false), 0,
	    "csr_malformed", "not DER");
	expect_raw_extensions(san_ber, sizeof(san_ber), 0, "csr_malformed",
	    "not DER");
	expect_raw_extensions(san_trailing, sizeof(san_trailing), 0,
	    "csr_malformed", "trailing");
	expect_raw_extensions(san_empty, sizeof(san_empty), 0,
	    "csr_malformed", "empty");
}

static void
test_common_name(void **state)
{
	X509_REQ *req;
	struct csr_info info;
	char cn[CSR_MAX_NAME];
	char *pem;

	(void)state;
	/* UTF-8 text is kept as it is */
	req = req_new(p256, "gr\xc3\xbc\xc3\x9f" "e.example", NULL);
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	expect_ok(pem, &info);
	assert_string_equal(info.cn, "gr\xc3\xbc\xc3\x9f" "e.example");
	csr_info_clear(&info);
	free(pem);
	X509_REQ_free(req);

	/* a BMPString is converted */
	req = req_new(p256, NULL, NULL);
	assert_int_equal(X509_NAME_add_entry_by_txt(
	    X509_REQ_get_subject_name(req), "CN", V_ASN1_BMPSTRING,
	    (const unsigned char *)"\0b\0m\0p", 6, -1, 0), 1);
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	expect_ok(pem, &info);
	assert_string_equal(info.cn, "bmp");
	csr_info_clear(&info);
	free(pem);
	X509_REQ_free(req);

	/* 64 bytes is fine, 65 is not */
	memset(cn, 'c', 64);
	cn[64] = '\0';
	req = req_new(p256, cn, NULL);
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	expect_ok(pem, &info);
	assert_string_equal(info.cn, cn);
	csr_info_clear(&info);
	free(pem);
	X509_REQ_free(req);
	/* (OpenSSL's string table stops a 65-byte CN made the usual way) */
	cn[64] = 'c';
	cn[65] = '\0';
	req = req_new(p256, NULL, NULL);
	assert_int_equal(X509_NAME_add_entry_by_txt(
	    X509_REQ_get_subject_name(req), "CN", V_ASN1_UTF8STRING,
	    (const unsigned char *)cn, -1, -1, 0), 1);
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	expect_fail(pem, "csr_malformed", "65 bytes");
	free(pem);
	X509_REQ_free(req);

	/* two CNs */
	req = req_new(p256, "one.example", NULL);
	assert_int_equal(X509_NAME_add_entry_by_txt(
	    X509_REQ_get_subject_name(req), "CN", MBSTRING_ASC,
	    (const unsigned char *)"two.example", -1, -1, 0), 1);
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	expect_fail(pem, "csr_malformed", "more than one CN");
	free(pem);
	X509_REQ_free(req);

	expect_req_fail(p256, "bad\nname", NULL, "csr_malformed", "control");
}

static void
test_too_large(void **state)
{
	X509_REQ *req;
	struct csr_info info;
	size_t big = 1024 * 1024, len;
	char *pem, *buf;

	(void)state;
	req = req_new(p256, NULL, "DNS:a.example");
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	len = strlen(pem);

	/* 1 MiB: a valid CSR padded with newlines */
	buf = malloc(big);
	assert_non_null(buf);
	memset(buf, '\n', big);
	memcpy(buf, pem, len);
	expect_fail_len(buf, big, "csr_too_large", "1048576");
	/* exactly the limit is accepted, one byte more is not */
	expect_ok_len(buf, CSR_MAX_PEM, &info);
	assert_int_equal(info.ndns, 1);
	csr_info_clear(&info);
	expect_fail_len(buf, CSR_MAX_PEM + 1, "csr_too_large", NULL);
	/* the limit is checked before anything else: junk is too large */
	memset(buf, 0, big);
	expect_fail_len(buf, big, "csr_too_large", NULL);
	free(buf);
	free(pem);
	X509_REQ_free(req);
}

static void
test_signature(void **state)
{
	X509_REQ *req;
	uint8_t *der;
	size_t len;
	char *pem;
	EVP_PKEY *rsa;

	(void)state;
	/* a byte of the signature flipped */
	req = req_new(p256, NULL, "DNS:a.example");
	req_sign(req, p256, EVP_sha256());
	req_der(req, &der, &len);
	der[len - 1] ^= 0x01;
	pem = armour(der, len, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_signature_invalid", "does not verify");
	free(pem);
	OPENSSL_free(der);
	X509_REQ_free(req);

	/* a byte of the signed part flipped: "a.example" becomes "a.exampld" */
	req = req_new(p256, NULL, "DNS:a.example");
	req_sign(req, p256, EVP_sha256());
	req_der(req, &der, &len);
	{
		uint8_t *at = memmem(der, len, "a.example", 9);

		assert_non_null(at);
		at[8] = 'd';
	}
	pem = armour(der, len, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_signature_invalid", "does not verify");
	free(pem);
	OPENSSL_free(der);
	X509_REQ_free(req);

	/* signed by another key */
	req = req_new(p256, NULL, "DNS:a.example");
	req_sign(req, p256b, EVP_sha256());
	pem = req_pem(req);
	expect_fail(pem, "csr_signature_invalid", "does not verify");
	free(pem);
	X509_REQ_free(req);

	/* signed by a key of another type */
	req = req_new(p256, NULL, "DNS:a.example");
	req_sign(req, rsa2048, EVP_sha256());
	pem = req_pem(req);
	expect_fail(pem, "csr_signature_invalid", NULL);
	free(pem);
	X509_REQ_free(req);

	/* SHA-1 and MD5 */
	req = req_new(p256, NULL, "DNS:a.example");
	req_sign(req, p256, EVP_sha1());
	pem = req_pem(req);
	expect_fail(pem, "csr_signature_invalid", "SHA-1");
	free(pem);
	X509_REQ_free(req);
	rsa = rsa2048;
	req = req_new(rsa, NULL, NULL);
	req_sign(req, rsa, EVP_sha1());
	pem = req_pem(req);
	expect_fail(pem, "csr_signature_invalid", "sha1WithRSAEncryption");
	free(pem);
	X509_REQ_free(req);
	req = req_new(rsa, NULL, NULL);
	if (X509_REQ_sign(req, rsa, EVP_md5()) > 0) {
		pem = req_pem(req);
		expect_fail(pem, "csr_signature_invalid", "MD5");
		free(pem);
	}
	ERR_clear_error();
	X509_REQ_free(req);
}

/* RSASSA-PSS: SHA-256 accepted, SHA-1 (the default) refused. */
static void
expect_pss(const EVP_MD *md, const char *code)
{
	X509_REQ *req = req_new(rsa2048, NULL, "DNS:pss.example");
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	struct csr_info info;
	char *pem;

	assert_non_null(mctx);
	assert_int_equal(EVP_DigestSignInit(mctx, &pctx, md, NULL, rsa2048),
	    1);
	assert_true(EVP_PKEY_CTX_set_rsa_padding(pctx,
	    RSA_PKCS1_PSS_PADDING) > 0);
	assert_true(X509_REQ_sign_ctx(req, mctx) > 0);
	pem = req_pem(req);
	if (code == NULL) {
		expect_ok(pem, &info);
		assert_int_equal(info.alg, RULES_ALG_RSA_2048);
		csr_info_clear(&info);
	} else
		expect_fail(pem, code, "PSS");
	free(pem);
	EVP_MD_CTX_free(mctx);
	X509_REQ_free(req);
}

static void
test_pss(void **state)
{
	(void)state;
	expect_pss(EVP_sha256(), NULL);
	expect_pss(EVP_sha1(), "csr_signature_invalid");
}

static void
test_pem_armour(void **state)
{
	X509_REQ *req;
	struct csr_info info;
	uint8_t *der;
	size_t len;
	char *pem, *s, *t, *b64start;

	(void)state;
	req = req_new(p256, "armour.example", "DNS:a.example");
	req_sign(req, p256, EVP_sha256());
	req_der(req, &der, &len);
	pem = armour(der, len, "CERTIFICATE REQUEST", 64, "\n");

	/* whitespace around, CRLF, one line, the NEW label, no final EOL */
	s = cat3(" \n\t\r\n", pem, "\n\n  \t\r\n");
	expect_ok(s, &info);
	assert_string_equal(info.dns[0], "a.example");
	csr_info_clear(&info);
	free(s);
	s = armour(der, len, "CERTIFICATE REQUEST", 64, "\r\n");
	expect_ok(s, &info);
	csr_info_clear(&info);
	free(s);
	s = armour(der, len, "CERTIFICATE REQUEST", 0, "\n");
	expect_ok(s, &info);
	csr_info_clear(&info);
	free(s);
	s = armour(der, len, "NEW CERTIFICATE REQUEST", 76, "\n");
	expect_ok(s, &info);
	csr_info_clear(&info);
	free(s);
	expect_ok_len(pem, strlen(pem) - 1, &info);
	csr_info_clear(&info);

	/* around the block */
	s = cat3("", pem, "garbage\n");
	expect_fail(s, "csr_malformed", "after the PEM block");
	free(s);
	s = cat3(pem, "\n", pem);
	expect_fail(s, "csr_malformed", "more than one PEM block");
	free(s);
	s = cat3("hello\n", pem, "");
	expect_fail(s, "csr_malformed", "before the PEM block");
	free(s);
	s = cat3(pem, "\0", "");
	expect_fail_len(s, strlen(pem) + 1, "csr_malformed", "NUL");
	free(s);
	s = cat3("-----BEGIN CERTIFICATE REQUEST-----\n",
	    "Proc-Type: 4,ENCRYPTED\n\n", strchr(pem, '\n') + 1);
	expect_fail(s, "csr_malformed", "headers");
	free(s);
	expect_fail("", "csr_malformed", "empty");
	expect_fail_len(NULL, 0, "csr_malformed", "empty");
	expect_fail(" \n\t\r\n", "csr_malformed", "empty");

	/* inside the block */
	b64start = strchr(pem, '\n') + 1;
	s = strdup(pem);
	s[b64start - pem + 10] = '*';
	expect_fail(s, "csr_malformed", "0x2a is not base64");
	s[b64start - pem + 10] = ' ';
	expect_fail(s, "csr_malformed", "0x20 is not base64");
	s[b64start - pem + 10] = '=';
	expect_fail(s, "csr_malformed", "'='");
	free(s);
	s = strdup(pem);
	t = strstr(s, "-----END");
	*t = '\0';
	t = cat3(s, "\n", strstr(pem, "-----END"));
	expect_fail(t, "csr_malformed", "empty line");
	free(t);
	free(s);
	s = strdup(pem);
	t = strstr(s, "-----END");
	*t = '\0';
	t = cat3(s, "-----END NEW CERTIFICATE REQUEST-----\n", "");
	expect_fail(t, "csr_malformed", "END line does not match");
	free(t);
	expect_fail(s, "csr_malformed", "no END line");
	free(s);
	s = strdup(pem);
	t = strstr(s, "-----END");
	t[-2] = '\n';		/* drops a character: not a multiple of 4 */
	t[-1] = '\0';
	t = cat3(s, strstr(pem, "-----END"), "");
	expect_fail(t, "csr_malformed", "multiple of 4");
	free(t);
	free(s);
	s = cat3("-----BEGIN CERTIFICATE REQUEST----- x\n", b64start, "");
	expect_fail(s, "csr_malformed", "after the BEGIN line");
	free(s);
	free(pem);

	/* non-canonical padding: a DER whose length leaves unused bits */
	pem = armour(der, len % 3 != 0 ? len : len - 1, "CERTIFICATE REQUEST",
	    64, "\n");
	t = strstr(pem, "=\n-----END");
	assert_non_null(t);
	while (t[-1] == '=')
		t--;
	{
		static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "abcdefghijklmnopqrstuvwxyz0123456789+/";
		const char *c = strchr(alphabet, t[-1]);

		assert_non_null(c);
		assert_int_equal((c - alphabet) & 1, 0);
		t[-1] = alphabet[(c - alphabet) | 1];
	}
	expect_fail(pem, "csr_malformed", "not canonical");
	free(pem);
	OPENSSL_free(der);
	X509_REQ_free(req);
}

static void
test_der(void **state)
{
	X509_REQ *req;
	uint8_t *der, *bad;
	size_t len;
	char *pem;

	(void)state;
	req = req_new(p256, "der.example", "DNS:a.example,"
	    "URI:spiffe://td.example/a/long/enough/path/for/two/length/bytes,"
	    "URI:spiffe://td.example/another/long/enough/path/for/the/length");
	req_sign(req, p256, EVP_sha256());
	req_der(req, &der, &len);
	assert_true(len > 255 && len < 65536);
	assert_int_equal(der[0], 0x30);
	assert_int_equal(der[1], 0x82);
	bad = malloc(len + 16);
	assert_non_null(bad);

	/* bytes after the CSR, inside the PEM block */
	memcpy(bad, der, len);
	bad[len] = 0x05;
	bad[len + 1] = 0x00;
	pem = armour(bad, len + 2, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_malformed", "2 trailing bytes");
	free(pem);

	/* bytes inside the outer SEQUENCE, after the signature */
	memcpy(bad, der, len);
	bad[len] = 0x05;
	bad[len + 1] = 0x00;
	bad[2] = (len - 4 + 2) >> 8;
	bad[3] = (len - 4 + 2) & 0xff;
	pem = armour(bad, len + 2, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_malformed", NULL);
	free(pem);

	/* the outer length in a longer form than needed: BER */
	bad[0] = 0x30;
	bad[1] = 0x83;
	bad[2] = 0;
	memcpy(bad + 3, der + 2, len - 2);
	pem = armour(bad, len + 1, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_malformed", "not DER");
	free(pem);

	/* the same inside the signed part (OpenSSL keeps its bytes) */
	assert_int_equal(der[4], 0x30);
	assert_int_equal(der[5], 0x82);
	memcpy(bad, der, 4);
	bad[2] = (len - 4 + 1) >> 8;
	bad[3] = (len - 4 + 1) & 0xff;
	bad[4] = 0x30;
	bad[5] = 0x83;		/* 00 LL LL for LL LL */
	bad[6] = 0;
	memcpy(bad + 7, der + 6, len - 6);
	pem = armour(bad, len + 1, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_malformed", "not DER");
	free(pem);

	/* version 2 (encoded 1): refused by OpenSSL or by us */
	memcpy(bad, der, len);
	assert_memory_equal(bad + 8, "\x02\x01\x00", 3);
	bad[10] = 1;
	pem = armour(bad, len, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_malformed", NULL);
	free(pem);

	/* a truncated CSR */
	pem = armour(der, len - 10, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_malformed", "does not hold a CSR");
	free(pem);
	free(bad);
	OPENSSL_free(der);
	X509_REQ_free(req);
}

/*
 * A BER subject: OpenSSL keeps a name's bytes as received, so the BER
 * survives X509_REQ_set_subject_name and signing, the signature covers
 * it and verifies, and only the DER check can refuse it.
 */
static void
test_subject_ber(void **state)
{
	/* CN=ber.example with the UTF8String length as 0x81 0x0b */
	static const uint8_t name_ber[] = {
		0x30, 0x17, 0x31, 0x15, 0x30, 0x13, 0x06, 0x03, 0x55, 0x04,
		0x03, 0x0c, 0x81, 0x0b,
		'b', 'e', 'r', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e' };
	const unsigned char *p = name_ber;
	X509_NAME *name;
	X509_REQ *req, *back;
	uint8_t *der;
	size_t len;
	char *pem;

	(void)state;
	name = d2i_X509_NAME(NULL, &p, sizeof(name_ber));
	assert_non_null(name);
	req = req_new(p256, NULL, NULL);
	assert_int_equal(X509_REQ_set_subject_name(req, name), 1);
	req_sign(req, p256, EVP_sha256());
	req_der(req, &der, &len);
	assert_non_null(memmem(der, len, name_ber, sizeof(name_ber)));
	p = der;
	back = d2i_X509_REQ(NULL, &p, (long)len);
	assert_non_null(back);
	assert_int_equal(X509_REQ_verify(back, p256), 1);
	pem = armour(der, len, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_malformed", "subject is not DER");
	free(pem);
	X509_REQ_free(back);
	OPENSSL_free(der);
	X509_REQ_free(req);
	X509_NAME_free(name);
}

/*
 * The RSA exponent's length in long form inside the SPKI: OpenSSL keeps
 * the BIT STRING as received and signs over it, so the signature
 * verifies and only the DER check of the key refuses it.
 */
static void
test_spki_ber(void **state)
{
	X509_REQ *req, *back;
	uint8_t *der, *spki = NULL, *bad, *at;
	const uint8_t *p;
	size_t len, off;
	int slen;
	char *pem;

	(void)state;
	req = req_new(rsa2048, NULL, NULL);
	req_sign(req, rsa2048, EVP_sha256());
	req_der(req, &der, &len);
	slen = i2d_PUBKEY(rsa2048, &spki);
	assert_int_equal(slen, 294);
	assert_memory_equal(spki + slen - 5, "\x02\x03\x01\x00\x01", 5);
	at = memmem(der, len, spki, slen);
	assert_non_null(at);
	off = at - der;
	bad = malloc(len + 1);
	assert_non_null(bad);
	memcpy(bad, der, off + slen - 5);
	memcpy(bad + off + slen - 5, "\x02\x81\x03\x01\x00\x01", 6);
	memcpy(bad + off + slen + 1, der + off + slen, len - off - slen);
	/* one byte more in: outer, TBS, SPKI, BIT STRING, RSAPublicKey */
	assert_int_equal(bad[1], 0x82);
	assert_int_equal(bad[5], 0x82);
	assert_memory_equal(bad + off, "\x30\x82\x01\x22", 4);
	assert_memory_equal(bad + off + 19, "\x03\x82\x01\x0f\x00", 5);
	assert_memory_equal(bad + off + 24, "\x30\x82\x01\x0a", 4);
	bad[3]++;
	bad[7]++;
	bad[off + 3]++;
	bad[off + 22]++;
	bad[off + 27]++;
	/* re-signed: OpenSSL signs what it holds, BER included */
	p = bad;
	back = d2i_X509_REQ(NULL, &p, (long)len + 1);
	assert_non_null(back);
	req_sign(back, rsa2048, EVP_sha256());
	OPENSSL_free(der);
	req_der(back, &der, &len);
	assert_non_null(memmem(der, len, "\x02\x81\x03\x01\x00\x01", 6));
	pem = armour(der, len, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_malformed", "public key is not DER");
	free(pem);
	free(bad);
	OPENSSL_free(spki);
	OPENSSL_free(der);
	X509_REQ_free(back);
	X509_REQ_free(req);
}

/*
 * A compressed EC point is a DER encoding too, but the signer issues for
 * uncompressed points only (RFC 5480's mandatory form).
 */
static void
test_ec_compressed(void **state)
{
	EVP_PKEY *k;
	X509_REQ *req;
	char *pem;

	(void)state;
	k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	assert_non_null(k);
	assert_int_equal(EVP_PKEY_set_utf8_string_param(k,
	    OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
	    OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED), 1);
	req = req_new(k, NULL, NULL);
	req_sign(req, k, EVP_sha384());
	pem = req_pem(req);
	/* the signer refuses them: refused here, before any token use */
	expect_fail(pem, "key_unsupported", "compressed");
	free(pem);
	X509_REQ_free(req);
	EVP_PKEY_free(k);
}

static void
test_certificate(void **state)
{
	X509 *x = X509_new();
	BIO *b = BIO_new(BIO_s_mem());
	uint8_t *der = NULL;
	char *data, *pem;
	long n;
	int len;

	(void)state;
	assert_non_null(x);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
	    MBSTRING_ASC, (const unsigned char *)"cert", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, p256);
	assert_true(X509_sign(x, p256, EVP_sha256()) > 0);
	assert_int_equal(PEM_write_bio_X509(b, x), 1);
	n = BIO_get_mem_data(b, &data);
	pem = strndup(data, n);
	expect_fail(pem, "csr_malformed", "not a CERTIFICATE REQUEST");
	free(pem);
	len = i2d_X509(x, &der);
	assert_true(len > 0);
	pem = armour(der, len, "CERTIFICATE REQUEST", 64, "\n");
	expect_fail(pem, "csr_malformed", "does not hold a CSR");
	free(pem);
	OPENSSL_free(der);
	BIO_free(b);
	X509_free(x);
}

/* Every single-byte change of a good CSR is refused, cleanly. */
static void
test_byte_flips(void **state)
{
	X509_REQ *req;
	struct csr_info info;
	struct csr_error err;
	uint8_t *der;
	size_t len, i;
	char *pem;

	(void)state;
	req = req_new(p256, "flip.example", "DNS:a.example,URI:spiffe://td/x");
	req_sign(req, p256, EVP_sha256());
	req_der(req, &der, &len);
	for (i = 0; i < len; i++) {
		der[i] ^= 0x41;
		pem = armour(der, len, "CERTIFICATE REQUEST", 64, "\n");
		memset(&info, 0xa5, sizeof(info));
		if (csr_parse(pem, strlen(pem), &info, &err) == 0)
			fail_msg("byte %zu changed, still accepted", i);
		assert_non_null(err.code);
		assert_true(all_zero(&info, sizeof(info)));
		assert_int_equal(ERR_peek_error(), 0);
		free(pem);
		der[i] ^= 0x41;
	}
	OPENSSL_free(der);
	X509_REQ_free(req);
}

/* Errors of one parse never reach the next one. */
static void
test_error_queue(void **state)
{
	X509_REQ *req;
	struct csr_info info;
	char *pem;

	(void)state;
	ERR_raise_data(ERR_LIB_X509, ERR_R_INTERNAL_ERROR, "left over");
	req = req_new(p256, NULL, "DNS:a.example");
	req_sign(req, p256, EVP_sha256());
	pem = req_pem(req);
	expect_ok(pem, &info);
	csr_info_clear(&info);
	free(pem);
	X509_REQ_free(req);
	/* err NULL is allowed */
	assert_int_equal(csr_parse("x", 1, &info, NULL), -1);
	assert_int_equal(ERR_peek_error(), 0);
}

/* CSRs made by the openssl command parse. */
static void
test_openssl_cli(void **state)
{
	static const char *const cmds[] = {
		"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
		    "-nodes -keyout /dev/null -subj /CN=cli.example "
		    "-addext subjectAltName=DNS:cli.example,"
		    "URI:spiffe://td.example/cli 2>/dev/null",
		"openssl req -new -newkey ed25519 -nodes -keyout /dev/null "
		    "-subj /O=x/CN=ed.example 2>/dev/null",
	};
	static const enum rules_key_alg algs[] = {
		RULES_ALG_EC_P256, RULES_ALG_ED25519 };
	struct csr_info info;
	char buf[8192];
	size_t i, n;
	FILE *f;

	(void)state;
	if (access("/usr/bin/openssl", X_OK) != 0)
		skip();
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		f = popen(cmds[i], "r");
		assert_non_null(f);
		n = fread(buf, 1, sizeof(buf) - 1, f);
		assert_int_equal(pclose(f), 0);
		buf[n] = '\0';
		expect_ok(buf, &info);
		assert_int_equal(info.alg, algs[i]);
		assert_non_null(info.cn);
		if (i == 0) {
			assert_string_equal(info.cn, "cli.example");
			assert_int_equal(info.ndns, 1);
			assert_string_equal(info.dns[0], "cli.example");
			assert_int_equal(info.nuris, 1);
			assert_string_equal(info.uris[0],
			    "spiffe://td.example/cli");
		} else
			assert_string_equal(info.cn, "ed.example");
		csr_info_clear(&info);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ec_p256_names),
		cmocka_unit_test(test_ec_p384_no_names),
		cmocka_unit_test(test_ec_other_curves),
		cmocka_unit_test(test_ec_explicit_parameters),
		cmocka_unit_test(test_ec_bad_point),
		cmocka_unit_test(test_rsa),
		cmocka_unit_test(test_rsa_shapes),
		cmocka_unit_test(test_ed25519),
		cmocka_unit_test(test_other_key_types),
		cmocka_unit_test(test_san_types_refused),
		cmocka_unit_test(test_name_counts),
		cmocka_unit_test(test_name_values),
		cmocka_unit_test(test_duplicate_san),
		cmocka_unit_test(test_extension_encodings),
		cmocka_unit_test(test_common_name),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_signature),
		cmocka_unit_test(test_pss),
		cmocka_unit_test(test_pem_armour),
		cmocka_unit_test(test_der),
		cmocka_unit_test(test_subject_ber),
		cmocka_unit_test(test_spki_ber),
		cmocka_unit_test(test_ec_compressed),
		cmocka_unit_test(test_certificate),
		cmocka_unit_test(test_byte_flips),
		cmocka_unit_test(test_error_queue),
		cmocka_unit_test(test_openssl_cli),
	};

	return cmocka_run_group_tests(tests, setup_keys, teardown_keys);
}
