/*
 * Keys in the token: generation, lookup by URI, binding to a CA
 * certificate by public key, and the sign/verify self-test.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <p11-kit/uri.h>

#include "token-internal.h"

#define KEYS_MAX_CANDIDATES	1024
#define KEYS_ATTR_MAX		2048

static const struct {
	enum token_keytype	 type;
	const char		*name;
} token_keytypes[] = {
	{ TOKEN_KEY_EC_P256,	"ec-p256" },
	{ TOKEN_KEY_EC_P384,	"ec-p384" },
	{ TOKEN_KEY_RSA_2048,	"rsa-2048" },
	{ TOKEN_KEY_RSA_3072,	"rsa-3072" },
	{ TOKEN_KEY_RSA_4096,	"rsa-4096" },
	{ TOKEN_KEY_ED25519,	"ed25519" },
};

/* DER OIDs for CKA_EC_PARAMS. */
static const uint8_t oid_p256[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const uint8_t oid_p384[] = {
	0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
static const uint8_t oid_ed25519[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };
/* PKCS#11 3.0 also names the curve as a PrintableString; older tokens
 * know only that form. */
static const uint8_t str_ed25519[] = {
	0x13, 0x0c, 'e', 'd', 'w', 'a', 'r', 'd', 's', '2', '5', '5', '1', '9' };

int
token_keytype_parse(const char *name, enum token_keytype *out)
{
	size_t i;

	for (i = 0; i < sizeof(token_keytypes) / sizeof(token_keytypes[0]); i++) {
		if (strcmp(name, token_keytypes[i].name) == 0) {
			*out = token_keytypes[i].type;
			return 0;
		}
	}
	token_set_detail("unknown key type \"%s\" (ec-p256, ec-p384, "
	    "rsa-2048, rsa-3072, rsa-4096, ed25519)", name);
	return TOKEN_ERR_INVALID;
}

const char *
token_keytype_name(enum token_keytype type)
{
	size_t i;

	for (i = 0; i < sizeof(token_keytypes) / sizeof(token_keytypes[0]); i++)
		if (token_keytypes[i].type == type)
			return token_keytypes[i].name;
	return "none";
}

static size_t
token_keytype_sigmax(enum token_keytype type)
{
	switch (type) {
	case TOKEN_KEY_EC_P256:		return 72;
	case TOKEN_KEY_EC_P384:		return 104;
	case TOKEN_KEY_RSA_2048:	return 256;
	case TOKEN_KEY_RSA_3072:	return 384;
	case TOKEN_KEY_RSA_4096:	return 512;
	case TOKEN_KEY_ED25519:		return 64;
	case TOKEN_KEY_NONE:		break;
	}
	return 0;
}

/* The key type of a public key, or TOKEN_KEY_NONE if hsmca has no use for
 * it (another curve, an RSA size we do not sign with). */
static enum token_keytype
token_keytype_of(EVP_PKEY *pkey)
{
	char group[64];
	size_t len;

	switch (EVP_PKEY_get_base_id(pkey)) {
	case EVP_PKEY_EC:
		if (!EVP_PKEY_get_utf8_string_param(pkey,
		    OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len))
			return TOKEN_KEY_NONE;
		if (strcmp(group, "prime256v1") == 0)
			return TOKEN_KEY_EC_P256;
		if (strcmp(group, "secp384r1") == 0)
			return TOKEN_KEY_EC_P384;
		return TOKEN_KEY_NONE;
	case EVP_PKEY_RSA:
		switch (EVP_PKEY_get_bits(pkey)) {
		case 2048:	return TOKEN_KEY_RSA_2048;
		case 3072:	return TOKEN_KEY_RSA_3072;
		case 4096:	return TOKEN_KEY_RSA_4096;
		}
		return TOKEN_KEY_NONE;
	case EVP_PKEY_ED25519:
		return TOKEN_KEY_ED25519;
	}
	return TOKEN_KEY_NONE;
}

int
token_find_objects(struct token *tok, CK_SESSION_HANDLE sh, CK_ATTRIBUTE *tmpl,
    CK_ULONG n, CK_OBJECT_HANDLE *found, CK_ULONG max, CK_ULONG *count)
{
	CK_FUNCTION_LIST *fl = tok->tk_fl;
	CK_RV rv;

	*count = 0;
	if ((rv = fl->C_FindObjectsInit(sh, tmpl, n)) != CKR_OK)
		return token_rv_error(tok, NULL, "C_FindObjectsInit", rv);
	rv = fl->C_FindObjects(sh, found, max, count);
	(void)fl->C_FindObjectsFinal(sh);
	if (rv != CKR_OK)
		return token_rv_error(tok, NULL, "C_FindObjects", rv);
	return 0;
}

/* Reads one attribute into a fresh buffer; *len is its length. */
static int
token_get_attr(struct token *tok, CK_SESSION_HANDLE sh, CK_OBJECT_HANDLE h,
    CK_ATTRIBUTE_TYPE type, uint8_t **out, size_t *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	CK_RV rv;

	*out = NULL;
	*len = 0;
	if ((rv = tok->tk_fl->C_GetAttributeValue(sh, h, &a, 1)) != CKR_OK)
		return token_rv_error(tok, NULL, "C_GetAttributeValue", rv);
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen == 0 ||
	    a.ulValueLen > KEYS_ATTR_MAX) {
		token_set_detail("attribute 0x%lx: unusable length",
		    (unsigned long)type);
		return TOKEN_ERR_FAILED;
	}
	if ((a.pValue = malloc(a.ulValueLen)) == NULL)
		return TOKEN_ERR_NOMEM;
	if ((rv = tok->tk_fl->C_GetAttributeValue(sh, h, &a, 1)) != CKR_OK) {
		free(a.pValue);
		return token_rv_error(tok, NULL, "C_GetAttributeValue", rv);
	}
	*out = a.pValue;
	*len = a.ulValueLen;
	return 0;
}

/*
 * An EC point as PKCS#11 gives it: a DER OCTET STRING per the standard, a
 * bare point from some tokens.  Returns a pointer into buf and its length.
 */
static const uint8_t *
token_unwrap_point(const uint8_t *buf, size_t len, size_t *plen)
{
	const uint8_t *p = buf;
	ASN1_OCTET_STRING *os;

	if (len > 2 && buf[0] == 0x04 &&
	    (os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)len)) != NULL) {
		size_t inner = (size_t)ASN1_STRING_length(os);

		ASN1_OCTET_STRING_free(os);
		if (p == buf + len && inner < len) {
			*plen = inner;
			return buf + len - inner;
		}
	}
	*plen = len;
	return buf;
}

/* Builds the public key of a token public key object. */
static int
token_read_public(struct token *tok, CK_SESSION_HANDLE sh, CK_OBJECT_HANDLE h,
    EVP_PKEY **out)
{
	CK_KEY_TYPE kt;
	CK_ATTRIBUTE a = { CKA_KEY_TYPE, &kt, sizeof(kt) };
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	uint8_t *b1 = NULL, *b2 = NULL;
	size_t l1, l2, plen;
	const uint8_t *p;
	ASN1_OBJECT *obj = NULL;
	BIGNUM *n = NULL, *e = NULL;
	int ret = TOKEN_ERR_CRYPTO, nid;
	CK_RV rv;

	*out = NULL;
	if ((rv = tok->tk_fl->C_GetAttributeValue(sh, h, &a, 1)) != CKR_OK)
		return token_rv_error(tok, NULL, "C_GetAttributeValue", rv);
	switch (kt) {
	case CKK_EC:
		if ((ret = token_get_attr(tok, sh, h, CKA_EC_PARAMS, &b1,
		    &l1)) != 0 || (ret = token_get_attr(tok, sh, h,
		    CKA_EC_POINT, &b2, &l2)) != 0)
			goto out;
		ret = TOKEN_ERR_UNSUPPORTED;
		p = b1;
		if ((obj = d2i_ASN1_OBJECT(NULL, &p, (long)l1)) == NULL ||
		    p != b1 + l1 ||
		    ((nid = OBJ_obj2nid(obj)) != NID_X9_62_prime256v1 &&
		    nid != NID_secp384r1)) {
			token_set_detail("EC key on a curve hsmca does not use");
			goto out;
		}
		p = token_unwrap_point(b2, l2, &plen);
		ret = TOKEN_ERR_CRYPTO;
		if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
		    !OSSL_PARAM_BLD_push_utf8_string(bld,
		    OSSL_PKEY_PARAM_GROUP_NAME, OBJ_nid2sn(nid), 0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld,
		    OSSL_PKEY_PARAM_PUB_KEY, p, plen) ||
		    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
		    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
		    EVP_PKEY_fromdata_init(ctx) != 1 ||
		    EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY,
		    params) != 1) {
			token_set_detail("EC public key from the token is "
			    "malformed");
			goto out;
		}
		break;
	case CKK_RSA:
		if ((ret = token_get_attr(tok, sh, h, CKA_MODULUS, &b1,
		    &l1)) != 0 || (ret = token_get_attr(tok, sh, h,
		    CKA_PUBLIC_EXPONENT, &b2, &l2)) != 0)
			goto out;
		ret = TOKEN_ERR_CRYPTO;
		if ((n = BN_bin2bn(b1, (int)l1, NULL)) == NULL ||
		    (e = BN_bin2bn(b2, (int)l2, NULL)) == NULL ||
		    (bld = OSSL_PARAM_BLD_new()) == NULL ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
		    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
		    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
		    EVP_PKEY_fromdata_init(ctx) != 1 ||
		    EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY,
		    params) != 1) {
			token_set_detail("RSA public key from the token is "
			    "malformed");
			goto out;
		}
		break;
	case CKK_EC_EDWARDS:
		if ((ret = token_get_attr(tok, sh, h, CKA_EC_POINT, &b2,
		    &l2)) != 0)
			goto out;
		p = token_unwrap_point(b2, l2, &plen);
		ret = TOKEN_ERR_CRYPTO;
		if (plen != 32 || (*out = EVP_PKEY_new_raw_public_key(
		    EVP_PKEY_ED25519, NULL, p, plen)) == NULL) {
			token_set_detail("Ed25519 public key from the token is "
			    "malformed");
			goto out;
		}
		break;
	default:
		token_set_detail("key type 0x%lx not used by hsmca",
		    (unsigned long)kt);
		ret = TOKEN_ERR_UNSUPPORTED;
		goto out;
	}
	ret = 0;
 out:
	free(b1);
	free(b2);
	ASN1_OBJECT_free(obj);
	BN_free(n);
	BN_free(e);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	EVP_PKEY_CTX_free(ctx);
	return ret;
}

/*
 * Verifies in software a signature made by token_sign over data (a digest
 * for ECDSA and RSA, the message for Ed25519).  Returns 1 if it verifies.
 */
int
token_key_check_signature(const struct token_key *key, const EVP_MD *md,
    const uint8_t *data, size_t len, const uint8_t *sig, size_t siglen)
{
	EVP_PKEY_CTX *ctx = NULL;
	EVP_MD_CTX *mctx = NULL;
	int ok;

	if (key->k_type == TOKEN_KEY_ED25519) {
		ok = (mctx = EVP_MD_CTX_new()) != NULL &&
		    EVP_DigestVerifyInit(mctx, NULL, NULL, NULL,
		    key->k_pub) == 1 &&
		    EVP_DigestVerify(mctx, sig, siglen, data, len) == 1;
		EVP_MD_CTX_free(mctx);
	} else {
		ok = (ctx = EVP_PKEY_CTX_new(key->k_pub, NULL)) != NULL &&
		    EVP_PKEY_verify_init(ctx) == 1 &&
		    (md == NULL || EVP_PKEY_CTX_set_signature_md(ctx, md) == 1) &&
		    EVP_PKEY_verify(ctx, sig, siglen, data, len) == 1;
		EVP_PKEY_CTX_free(ctx);
	}
	return ok;
}

/* The digest and challenge of a self-test. */
static const EVP_MD *
token_selftest_challenge(const struct token_key *key, uint8_t *chal, size_t len)
{
	if (RAND_bytes(chal, (int)len) != 1)
		memset(chal, 0x5a, len);
	return key->k_type == TOKEN_KEY_ED25519 ? NULL : EVP_sha256();
}

/* The second half of every self-test: the token's answer must verify. */
static int
token_selftest_check(const struct token_key *key, const EVP_MD *md,
    const uint8_t *chal, size_t len, const uint8_t *sig, size_t siglen)
{
	if (!token_key_check_signature(key, md, chal, len, sig, siglen)) {
		token_set_detail("key %s: the token's signature does not "
		    "verify with the public key", key->k_label);
		return TOKEN_ERR_SELFTEST;
	}
	return 0;
}

int
token_key_selftest_session(struct token_key *key, CK_SESSION_HANDLE sh,
    CK_OBJECT_HANDLE priv)
{
	uint8_t chal[32], sig[1024];
	size_t siglen = sizeof(sig);
	const EVP_MD *md = token_selftest_challenge(key, chal, sizeof(chal));
	CK_RV rv;
	int ret;

	if ((ret = token_sign_session(key, sh, priv, md, chal, sizeof(chal),
	    sig, &siglen, &rv)) != 0)
		return ret == TOKEN_ERR_FAILED ?
		    token_rv_error(key->k_tok, NULL, "C_Sign", rv) : ret;
	return token_selftest_check(key, md, chal, sizeof(chal), sig, siglen);
}

int
token_key_selftest(struct token_key *key)
{
	uint8_t chal[32], sig[1024];
	size_t siglen = sizeof(sig);
	const EVP_MD *md = token_selftest_challenge(key, chal, sizeof(chal));
	int ret;

	if ((ret = token_sign(key, md, chal, sizeof(chal), sig, &siglen)) != 0)
		return ret;
	return token_selftest_check(key, md, chal, sizeof(chal), sig, siglen);
}

static int
token_key_new(struct token *tok, const uint8_t *id, size_t idlen,
    const char *label, EVP_PKEY *pub, struct token_key **out)
{
	struct token_key *key;
	size_t i;

	*out = NULL;
	if (idlen == 0 || idlen > sizeof(key->k_id)) {
		token_set_detail("CKA_ID of %zu bytes", idlen);
		return TOKEN_ERR_INVALID;
	}
	if ((key = calloc(1, sizeof(*key))) == NULL)
		return TOKEN_ERR_NOMEM;
	if ((key->k_label = strdup(label != NULL ? label : "")) == NULL) {
		free(key);
		return TOKEN_ERR_NOMEM;
	}
	key->k_tok = tok;
	memcpy(key->k_id, id, idlen);
	key->k_idlen = idlen;
	for (i = 0; i < idlen; i++)
		snprintf(key->k_idhex + 2 * i, 3, "%02x", id[i]);
	key->k_type = token_keytype_of(pub);
	key->k_sigmax = token_keytype_sigmax(key->k_type);
	key->k_pub = pub;
	if (key->k_type == TOKEN_KEY_NONE) {
		token_set_detail("key %s: algorithm or size not used by hsmca",
		    key->k_label);
		key->k_pub = NULL;
		free(key->k_label);
		free(key);
		return TOKEN_ERR_UNSUPPORTED;
	}
	*out = key;
	return 0;
}

/* Refuses a private key a CA must not use: one that can leave the token,
 * or that cannot sign. */
static int
token_check_private(struct token *tok, CK_SESSION_HANDLE sh,
    CK_OBJECT_HANDLE h, const char *label)
{
	CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, sign = CK_FALSE;
	CK_ATTRIBUTE a[] = {
		{ CKA_SENSITIVE, &sensitive, sizeof(sensitive) },
		{ CKA_EXTRACTABLE, &extractable, sizeof(extractable) },
		{ CKA_SIGN, &sign, sizeof(sign) },
	};
	CK_RV rv;

	if ((rv = tok->tk_fl->C_GetAttributeValue(sh, h, a, 3)) != CKR_OK)
		return token_rv_error(tok, NULL, "C_GetAttributeValue", rv);
	if (!sensitive || extractable) {
		token_set_detail("key %s is extractable or not sensitive; a CA "
		    "key must never leave the token", label);
		return TOKEN_ERR_MISMATCH;
	}
	if (!sign) {
		token_set_detail("key %s may not sign (CKA_SIGN false)", label);
		return TOKEN_ERR_MISMATCH;
	}
	return 0;
}

/*
 * Completes a key whose private handle and CKA_ID are known: reads the
 * public key object with the same CKA_ID (exactly one), checks the private
 * key's attributes, registers and self-tests it.
 */
static int
token_key_complete(struct token *tok, CK_SESSION_HANDLE sh,
    CK_OBJECT_HANDLE priv, const uint8_t *id, size_t idlen, const char *label,
    EVP_PKEY *known_pub, struct token_key **out)
{
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, (void *)(uintptr_t)id, idlen },
	};
	CK_OBJECT_HANDLE found[2];
	CK_ULONG count;
	EVP_PKEY *pub = NULL;
	struct token_key *key = NULL;
	int ret;

	*out = NULL;
	if ((ret = token_check_private(tok, sh, priv, label)) != 0)
		return ret;
	if (known_pub != NULL) {
		if (!EVP_PKEY_up_ref(known_pub))
			return TOKEN_ERR_CRYPTO;
		pub = known_pub;
	} else {
		if ((ret = token_find_objects(tok, sh, tmpl, 2, found, 2,
		    &count)) != 0)
			return ret;
		if (count == 0) {
			token_set_detail("key %s: no public key object with "
			    "its CKA_ID", label);
			return TOKEN_ERR_NO_KEY;
		}
		if (count > 1) {
			token_set_detail("key %s: two public key objects with "
			    "its CKA_ID", label);
			return TOKEN_ERR_AMBIGUOUS_KEY;
		}
		if ((ret = token_read_public(tok, sh, found[0], &pub)) != 0)
			return ret;
	}
	if ((ret = token_key_new(tok, id, idlen, label, pub, &key)) != 0) {
		EVP_PKEY_free(pub);
		return ret;
	}
	key->k_priv = priv;
	if ((ret = token_key_selftest_session(key, sh, priv)) != 0) {
		token_key_free(key);
		return ret;
	}
	token_key_register(tok, key);
	*out = key;
	return 0;
}

int
token_key_generate(struct token *tok, enum token_keytype type,
    const char *label, struct token_key **out)
{
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_ULONG bits = 0;
	uint8_t exponent[] = { 0x01, 0x00, 0x01 };
	uint8_t id[16];
	CK_MECHANISM mech = { 0, NULL, 0 };
	CK_ATTRIBUTE pub[8], priv[12], q;
	CK_ULONG npub = 0, npriv = 0, count;
	CK_OBJECT_HANDLE hpub, hpriv, found[1];
	struct token_session *s = NULL;
	const uint8_t *params = NULL;
	size_t paramslen = 0, labellen;
	int ret, tried_string = 0;
	CK_RV rv;

	*out = NULL;
	if (label == NULL || (labellen = strlen(label)) == 0 ||
	    labellen > 128) {
		token_set_detail("a key label of 1 to 128 bytes is required");
		return TOKEN_ERR_INVALID;
	}
	switch (type) {
	case TOKEN_KEY_EC_P256:
		mech.mechanism = CKM_EC_KEY_PAIR_GEN;
		params = oid_p256;
		paramslen = sizeof(oid_p256);
		break;
	case TOKEN_KEY_EC_P384:
		mech.mechanism = CKM_EC_KEY_PAIR_GEN;
		params = oid_p384;
		paramslen = sizeof(oid_p384);
		break;
	case TOKEN_KEY_RSA_2048:
		bits = 2048;
		break;
	case TOKEN_KEY_RSA_3072:
		bits = 3072;
		break;
	case TOKEN_KEY_RSA_4096:
		bits = 4096;
		break;
	case TOKEN_KEY_ED25519:
		mech.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
		params = oid_ed25519;
		paramslen = sizeof(oid_ed25519);
		break;
	default:
		token_set_detail("unknown key type");
		return TOKEN_ERR_INVALID;
	}
	if (bits != 0)
		mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
	if (RAND_bytes(id, sizeof(id)) != 1)
		return TOKEN_ERR_CRYPTO;

	if ((ret = token_session_get(tok, NULL, &s, NULL)) != 0)
		return ret;

	/* A label names one key pair: refuse to add a second. */
	q.type = CKA_LABEL;
	q.pValue = (void *)(uintptr_t)label;
	q.ulValueLen = labellen;
	if ((ret = token_find_objects(tok, s->ts_handle, &q, 1, found, 1,
	    &count)) != 0)
		goto out;
	if (count > 0) {
		token_set_detail("the token already holds an object labelled "
		    "\"%s\"", label);
		ret = TOKEN_ERR_LABEL_EXISTS;
		goto out;
	}

#define ADD(arr, n, t, v, l) do {					\
	(arr)[(n)].type = (t);						\
	(arr)[(n)].pValue = (void *)(uintptr_t)(v);			\
	(arr)[(n)].ulValueLen = (l);					\
	(n)++;								\
} while (0)
 again:
	npub = npriv = 0;
	ADD(pub, npub, CKA_TOKEN, &t, sizeof(t));
	ADD(pub, npub, CKA_PRIVATE, &f, sizeof(f));
	ADD(pub, npub, CKA_VERIFY, &t, sizeof(t));
	ADD(pub, npub, CKA_LABEL, label, labellen);
	ADD(pub, npub, CKA_ID, id, sizeof(id));
	if (bits != 0) {
		ADD(pub, npub, CKA_MODULUS_BITS, &bits, sizeof(bits));
		ADD(pub, npub, CKA_PUBLIC_EXPONENT, exponent, sizeof(exponent));
		ADD(pub, npub, CKA_ENCRYPT, &f, sizeof(f));
	} else
		ADD(pub, npub, CKA_EC_PARAMS, params, paramslen);

	ADD(priv, npriv, CKA_TOKEN, &t, sizeof(t));
	ADD(priv, npriv, CKA_PRIVATE, &t, sizeof(t));
	ADD(priv, npriv, CKA_SENSITIVE, &t, sizeof(t));
	ADD(priv, npriv, CKA_EXTRACTABLE, &f, sizeof(f));
	ADD(priv, npriv, CKA_SIGN, &t, sizeof(t));
	ADD(priv, npriv, CKA_LABEL, label, labellen);
	ADD(priv, npriv, CKA_ID, id, sizeof(id));
	if (bits != 0) {
		ADD(priv, npriv, CKA_DECRYPT, &f, sizeof(f));
		ADD(priv, npriv, CKA_UNWRAP, &f, sizeof(f));
	} else
		ADD(priv, npriv, CKA_DERIVE, &f, sizeof(f));
#undef ADD

	token_call_begin(s, "C_GenerateKeyPair");
	rv = tok->tk_fl->C_GenerateKeyPair(s->ts_handle, &mech, pub, npub,
	    priv, npriv, &hpub, &hpriv);
	token_call_end(s);
	if ((rv == CKR_ATTRIBUTE_VALUE_INVALID ||
	    rv == CKR_DOMAIN_PARAMS_INVALID || rv == CKR_CURVE_NOT_SUPPORTED) &&
	    type == TOKEN_KEY_ED25519 && !tried_string) {
		tried_string = 1;
		params = str_ed25519;
		paramslen = sizeof(str_ed25519);
		goto again;
	}
	if (rv == CKR_MECHANISM_INVALID) {
		token_set_detail("the token cannot generate %s keys",
		    token_keytype_name(type));
		ret = TOKEN_ERR_UNSUPPORTED;
		goto out;
	}
	if (rv != CKR_OK) {
		ret = token_rv_error(tok, s, "C_GenerateKeyPair", rv);
		goto out;
	}
	ret = token_key_complete(tok, s->ts_handle, hpriv, id, sizeof(id),
	    label, NULL, out);
 out:
	token_session_put(tok, s, CKR_OK);
	return ret;
}

/* Finds private keys matching tmpl: exactly one is an answer. */
static int
token_find_one_private(struct token *tok, CK_SESSION_HANDLE sh,
    CK_ATTRIBUTE *tmpl, CK_ULONG n, const char *what, CK_OBJECT_HANDLE *out)
{
	CK_OBJECT_HANDLE found[2];
	CK_ULONG count;
	int ret;

	if ((ret = token_find_objects(tok, sh, tmpl, n, found, 2, &count)) != 0)
		return ret;
	if (count == 0) {
		token_set_detail("no private key matches %s", what);
		return TOKEN_ERR_NO_KEY;
	}
	if (count > 1) {
		token_set_detail("more than one private key matches %s", what);
		return TOKEN_ERR_AMBIGUOUS_KEY;
	}
	*out = found[0];
	return 0;
}

static int
token_get_label(struct token *tok, CK_SESSION_HANDLE sh, CK_OBJECT_HANDLE h,
    char **out)
{
	uint8_t *buf;
	size_t len;
	int ret;

	*out = NULL;
	if ((ret = token_get_attr(tok, sh, h, CKA_LABEL, &buf, &len)) != 0) {
		/* An unlabelled key is allowed; it is named by its ID. */
		*out = strdup("");
		return *out == NULL ? TOKEN_ERR_NOMEM : 0;
	}
	if ((*out = strndup((char *)buf, len)) == NULL)
		ret = TOKEN_ERR_NOMEM;
	free(buf);
	return ret;
}

/* token_key_complete for a key found in the token, named by its label. */
static int
token_key_complete_labelled(struct token *tok, CK_SESSION_HANDLE sh,
    CK_OBJECT_HANDLE priv, const uint8_t *id, size_t idlen,
    EVP_PKEY *known_pub, struct token_key **out)
{
	char *label;
	int ret;

	if ((ret = token_get_label(tok, sh, priv, &label)) != 0)
		return ret;
	ret = token_key_complete(tok, sh, priv, id, idlen, label, known_pub,
	    out);
	free(label);
	return ret;
}

int
token_key_find(struct token *tok, const char *uristr, struct token_key **out)
{
	P11KitUri *uri = NULL;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[3], *a;
	CK_ULONG n = 0;
	CK_OBJECT_HANDLE priv;
	CK_TOKEN_INFO info;
	struct token_session *s = NULL;
	uint8_t *id = NULL;
	size_t idlen;
	int ret;
	CK_RV rv;

	*out = NULL;
	if ((uri = p11_kit_uri_new()) == NULL)
		return TOKEN_ERR_NOMEM;
	if ((ret = p11_kit_uri_parse(uristr, P11_KIT_URI_FOR_OBJECT_ON_TOKEN,
	    uri)) != P11_KIT_URI_OK) {
		token_set_detail("key URI: %s", p11_kit_uri_message(ret));
		ret = TOKEN_ERR_INVALID;
		goto out;
	}
	if (p11_kit_uri_any_unrecognized(uri) ||
	    p11_kit_uri_get_pin_value(uri) != NULL) {
		token_set_detail("key URI has unknown attributes or a PIN");
		ret = TOKEN_ERR_INVALID;
		goto out;
	}
	tmpl[n].type = CKA_CLASS;
	tmpl[n].pValue = &cls;
	tmpl[n++].ulValueLen = sizeof(cls);
	if ((a = p11_kit_uri_get_attribute(uri, CKA_CLASS)) != NULL &&
	    (a->ulValueLen != sizeof(cls) ||
	    *(CK_OBJECT_CLASS *)a->pValue != CKO_PRIVATE_KEY)) {
		token_set_detail("key URI names an object that is not a "
		    "private key");
		ret = TOKEN_ERR_INVALID;
		goto out;
	}
	if ((a = p11_kit_uri_get_attribute(uri, CKA_LABEL)) != NULL)
		tmpl[n++] = *a;
	if ((a = p11_kit_uri_get_attribute(uri, CKA_ID)) != NULL)
		tmpl[n++] = *a;
	if (n == 1) {
		token_set_detail("key URI names no object (object= or id=)");
		ret = TOKEN_ERR_INVALID;
		goto out;
	}

	if ((ret = token_session_get(tok, NULL, &s, NULL)) != 0)
		goto out;
	if ((rv = tok->tk_fl->C_GetTokenInfo(token_slot(tok), &info)) != CKR_OK) {
		ret = token_rv_error(tok, s, "C_GetTokenInfo", rv);
		goto out;
	}
	if (!p11_kit_uri_match_token_info(uri, &info)) {
		token_set_detail("key URI names another token");
		ret = TOKEN_ERR_NO_KEY;
		goto out;
	}
	if ((ret = token_find_one_private(tok, s->ts_handle, tmpl, n, uristr,
	    &priv)) != 0)
		goto out;
	if ((ret = token_get_attr(tok, s->ts_handle, priv, CKA_ID, &id,
	    &idlen)) != 0) {
		token_set_detail("key %s has no CKA_ID", uristr);
		ret = TOKEN_ERR_NO_KEY;
		goto out;
	}
	ret = token_key_complete_labelled(tok, s->ts_handle, priv, id, idlen,
	    NULL, out);
 out:
	if (s != NULL)
		token_session_put(tok, s, CKR_OK);
	free(id);
	p11_kit_uri_free(uri);
	return ret;
}

int
token_key_bind_cert(struct token *tok, X509 *cert, struct token_key **out)
{
	EVP_PKEY *certpub;

	*out = NULL;
	if ((certpub = X509_get0_pubkey(cert)) == NULL) {
		token_set_detail("certificate has no usable public key");
		return TOKEN_ERR_INVALID;
	}
	return token_key_bind_pubkey(tok, certpub, out);
}

int
token_key_bind_pubkey(struct token *tok, EVP_PKEY *certpub,
    struct token_key **out)
{
	EVP_PKEY *pub = NULL;
	enum token_keytype type;
	CK_OBJECT_CLASS pubcls = CKO_PUBLIC_KEY, privcls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt;
	CK_ATTRIBUTE tmpl[2] = {
		{ CKA_CLASS, &pubcls, sizeof(pubcls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
	};
	CK_ATTRIBUTE ptmpl[2];
	CK_OBJECT_HANDLE *found = NULL, priv;
	CK_ULONG count, i;
	struct token_session *s = NULL;
	uint8_t *id = NULL, *cid;
	size_t idlen = 0, cidlen;
	int ret;

	*out = NULL;
	if (certpub == NULL)
		return TOKEN_ERR_INVALID;
	switch ((type = token_keytype_of(certpub))) {
	case TOKEN_KEY_EC_P256:
	case TOKEN_KEY_EC_P384:
		kt = CKK_EC;
		break;
	case TOKEN_KEY_RSA_2048:
	case TOKEN_KEY_RSA_3072:
	case TOKEN_KEY_RSA_4096:
		kt = CKK_RSA;
		break;
	case TOKEN_KEY_ED25519:
		kt = CKK_EC_EDWARDS;
		break;
	default:
		token_set_detail("certificate key algorithm not used by hsmca");
		return TOKEN_ERR_UNSUPPORTED;
	}
	if ((found = calloc(KEYS_MAX_CANDIDATES, sizeof(*found))) == NULL)
		return TOKEN_ERR_NOMEM;
	if ((ret = token_session_get(tok, NULL, &s, NULL)) != 0)
		goto out;
	if ((ret = token_find_objects(tok, s->ts_handle, tmpl, 2, found,
	    KEYS_MAX_CANDIDATES, &count)) != 0)
		goto out;
	/* The public key decides; CKA_ID then leads to the private key.  Two
	 * public key objects that match under different IDs are ambiguous. */
	for (i = 0; i < count; i++) {
		if (token_read_public(tok, s->ts_handle, found[i], &pub) != 0)
			continue;
		if (EVP_PKEY_eq(pub, certpub) == 1) {
			if (token_get_attr(tok, s->ts_handle, found[i], CKA_ID,
			    &cid, &cidlen) != 0) {
				EVP_PKEY_free(pub);
				continue;
			}
			if (id != NULL && (cidlen != idlen ||
			    memcmp(cid, id, idlen) != 0)) {
				free(cid);
				EVP_PKEY_free(pub);
				token_set_detail("two token keys with different "
				    "CKA_IDs match the certificate's public "
				    "key");
				ret = TOKEN_ERR_AMBIGUOUS_KEY;
				goto out;
			}
			if (id == NULL) {
				id = cid;
				idlen = cidlen;
			} else
				free(cid);
		}
		EVP_PKEY_free(pub);
		pub = NULL;
	}
	if (id == NULL) {
		token_set_detail("no public key in the token matches the "
		    "certificate (%lu %s keys looked at)", (unsigned long)count,
		    token_keytype_name(type));
		ret = TOKEN_ERR_NO_KEY;
		goto out;
	}
	ptmpl[0].type = CKA_CLASS;
	ptmpl[0].pValue = &privcls;
	ptmpl[0].ulValueLen = sizeof(privcls);
	ptmpl[1].type = CKA_ID;
	ptmpl[1].pValue = id;
	ptmpl[1].ulValueLen = idlen;
	if ((ret = token_find_one_private(tok, s->ts_handle, ptmpl, 2,
	    "the certificate's CKA_ID", &priv)) != 0)
		goto out;
	ret = token_key_complete_labelled(tok, s->ts_handle, priv, id, idlen,
	    certpub, out);
 out:
	if (s != NULL)
		token_session_put(tok, s, CKR_OK);
	free(found);
	free(id);
	return ret;
}

/*
 * After recovery: the private key with the same CKA_ID, exactly one.  The
 * caller self-tests it against the public key bound at start.
 */
int
token_key_rebind(struct token *tok, CK_SESSION_HANDLE sh,
    struct token_key *key, CK_OBJECT_HANDLE *handle)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, key->k_id, key->k_idlen },
	};
	int ret;

	if ((ret = token_find_one_private(tok, sh, tmpl, 2, key->k_label,
	    handle)) != 0)
		return ret == TOKEN_ERR_NO_KEY || ret == TOKEN_ERR_AMBIGUOUS_KEY ?
		    TOKEN_ERR_UNAVAILABLE : ret;
	return token_key_selftest_session(key, sh, *handle);
}

int
token_key_get_bool(struct token_key *key, CK_ATTRIBUTE_TYPE type, int *value)
{
	struct token *tok = key->k_tok;
	struct token_session *s;
	CK_OBJECT_HANDLE h;
	CK_BBOOL b = CK_FALSE;
	CK_ATTRIBUTE a = { type, &b, sizeof(b) };
	CK_RV rv;
	int ret;

	if ((ret = token_session_get(tok, key, &s, &h)) != 0)
		return ret;
	rv = tok->tk_fl->C_GetAttributeValue(s->ts_handle, h, &a, 1);
	if (rv == CKR_OK)
		*value = b == CK_TRUE;
	else
		ret = token_rv_error(tok, s, "C_GetAttributeValue", rv);
	token_session_put(tok, s, rv);
	return ret;
}

int
token_key_try_read_value(struct token_key *key, CK_RV *rvout)
{
	struct token *tok = key->k_tok;
	struct token_session *s;
	CK_OBJECT_HANDLE h;
	uint8_t buf[KEYS_ATTR_MAX];
	/* The attribute that holds the secret, per key type. */
	CK_ATTRIBUTE a = { CKA_VALUE, buf, sizeof(buf) };
	CK_RV rv;
	int ret;

	*rvout = CKR_OK;
	if (key->k_type == TOKEN_KEY_RSA_2048 ||
	    key->k_type == TOKEN_KEY_RSA_3072 ||
	    key->k_type == TOKEN_KEY_RSA_4096)
		a.type = CKA_PRIVATE_EXPONENT;
	if ((ret = token_session_get(tok, key, &s, &h)) != 0)
		return ret;
	rv = tok->tk_fl->C_GetAttributeValue(s->ts_handle, h, &a, 1);
	if (rv == CKR_OK && a.ulValueLen != CK_UNAVAILABLE_INFORMATION) {
		OPENSSL_cleanse(buf, sizeof(buf));
		token_set_detail("the token revealed the private key");
		ret = 0;
	} else {
		token_set_detail("reading the private value: %s",
		    token_ckr_name(rv));
		ret = TOKEN_ERR_FAILED;
	}
	*rvout = rv;
	token_session_put(tok, s, CKR_OK);
	return ret;
}

EVP_PKEY *
token_key_public(const struct token_key *key)
{
	return key->k_pub;
}

enum token_keytype
token_key_type(const struct token_key *key)
{
	return key->k_type;
}

const char *
token_key_label(const struct token_key *key)
{
	return key->k_label;
}

const char *
token_key_id_hex(const struct token_key *key)
{
	return key->k_idhex;
}

size_t
token_sign_max(const struct token_key *key)
{
	return key->k_sigmax;
}

void
token_key_free(struct token_key *key)
{
	if (key == NULL)
		return;
	if (key->k_tok != NULL)
		token_key_unregister(key->k_tok, key);
	EVP_PKEY_free(key->k_pub);
	free(key->k_label);
	free(key);
}
