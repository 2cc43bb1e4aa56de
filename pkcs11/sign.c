/*
 * Signing with a token key.  The token returns raw signatures; this file
 * puts them in the encodings X.509 uses and refuses any answer whose shape
 * is wrong for the key.
 */
#include "config.h"

#include <string.h>

#include <openssl/ecdsa.h>
#include <openssl/x509.h>

#include "token-internal.h"

#define SIGN_RAW_MAX	512	/* RSA-4096 */
#define SIGN_MSG_MAX	(1u << 20)

/* DER DigestInfo for PKCS#1 v1.5, built by OpenSSL's own encoder. */
static int
sign_digest_info(const EVP_MD *md, const uint8_t *dgst, size_t len,
    uint8_t **out, int *outlen)
{
	X509_SIG *xs;
	X509_ALGOR *alg;
	ASN1_OCTET_STRING *digest;
	int ok;

	*out = NULL;
	if ((xs = X509_SIG_new()) == NULL)
		return TOKEN_ERR_CRYPTO;
	X509_SIG_getm(xs, &alg, &digest);
	ok = X509_ALGOR_set0(alg, OBJ_nid2obj(EVP_MD_get_type(md)),
	    V_ASN1_NULL, NULL) == 1 &&
	    ASN1_OCTET_STRING_set(digest, dgst, (int)len) == 1 &&
	    (*outlen = i2d_X509_SIG(xs, out)) > 0;
	X509_SIG_free(xs);
	return ok ? 0 : TOKEN_ERR_CRYPTO;
}

/* r||s, each exactly half, into a DER ECDSA-Sig-Value. */
static int
sign_ecdsa_der(const uint8_t *raw, size_t rawlen, size_t field, uint8_t *sig,
    size_t *siglen)
{
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *p = sig;
	int len, ret = TOKEN_ERR_CRYPTO;

	if (rawlen != 2 * field) {
		token_set_detail("token returned a %zu-byte ECDSA signature, "
		    "expected %zu", rawlen, 2 * field);
		return TOKEN_ERR_FAILED;
	}
	if ((es = ECDSA_SIG_new()) == NULL ||
	    (r = BN_bin2bn(raw, (int)field, NULL)) == NULL ||
	    (s = BN_bin2bn(raw + field, (int)field, NULL)) == NULL)
		goto out;
	if (BN_is_zero(r) || BN_is_zero(s)) {
		token_set_detail("token returned an ECDSA signature with a "
		    "zero component");
		ret = TOKEN_ERR_FAILED;
		goto out;
	}
	if (ECDSA_SIG_set0(es, r, s) != 1)
		goto out;
	r = s = NULL;
	if ((len = i2d_ECDSA_SIG(es, NULL)) <= 0 || (size_t)len > *siglen)
		goto out;
	if ((len = i2d_ECDSA_SIG(es, &p)) <= 0)
		goto out;
	*siglen = (size_t)len;
	ret = 0;
 out:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return ret;
}

/*
 * One C_SignInit/C_Sign on a session the caller holds.  Returns 0,
 * TOKEN_ERR_INVALID, TOKEN_ERR_CRYPTO, or TOKEN_ERR_FAILED with *rv set to
 * the token's answer (CKR_OK if the answer was malformed).
 */
int
token_sign_session(struct token_key *key, CK_SESSION_HANDLE sh,
    CK_OBJECT_HANDLE priv, const EVP_MD *md, const uint8_t *in, size_t inlen,
    uint8_t *sig, size_t *siglen, CK_RV *rv)
{
	CK_FUNCTION_LIST *fl = key->k_tok->tk_fl;
	CK_MECHANISM mech = { 0, NULL, 0 };
	uint8_t raw[SIGN_RAW_MAX], *di = NULL;
	CK_ULONG rawlen = sizeof(raw);
	const uint8_t *data = in;
	size_t datalen = inlen, field = 0;
	int dilen, ret;

	*rv = CKR_OK;
	if (*siglen < key->k_sigmax) {
		token_set_detail("signature buffer of %zu bytes, %zu needed",
		    *siglen, key->k_sigmax);
		return TOKEN_ERR_INVALID;
	}
	switch (key->k_type) {
	case TOKEN_KEY_EC_P256:
	case TOKEN_KEY_EC_P384:
		field = key->k_type == TOKEN_KEY_EC_P256 ? 32 : 48;
		if (inlen == 0 || inlen > 64 ||
		    (md != NULL && inlen != (size_t)EVP_MD_get_size(md))) {
			token_set_detail("ECDSA input of %zu bytes is not a "
			    "digest", inlen);
			return TOKEN_ERR_INVALID;
		}
		mech.mechanism = CKM_ECDSA;
		break;
	case TOKEN_KEY_RSA_2048:
	case TOKEN_KEY_RSA_3072:
	case TOKEN_KEY_RSA_4096:
		if (md == NULL || inlen != (size_t)EVP_MD_get_size(md)) {
			token_set_detail("RSA signing needs a digest and its "
			    "algorithm");
			return TOKEN_ERR_INVALID;
		}
		if ((ret = sign_digest_info(md, in, inlen, &di, &dilen)) != 0)
			return ret;
		data = di;
		datalen = (size_t)dilen;
		mech.mechanism = CKM_RSA_PKCS;
		break;
	case TOKEN_KEY_ED25519:
		if (md != NULL || inlen > SIGN_MSG_MAX) {
			token_set_detail("Ed25519 signs the message itself, of at "
			    "most %u bytes", SIGN_MSG_MAX);
			return TOKEN_ERR_INVALID;
		}
		mech.mechanism = CKM_EDDSA;
		break;
	default:
		return TOKEN_ERR_INVALID;
	}

	if ((*rv = fl->C_SignInit(sh, &mech, priv)) != CKR_OK) {
		token_set_detail("C_SignInit: %s", token_ckr_name(*rv));
		ret = TOKEN_ERR_FAILED;
		goto out;
	}
	if ((*rv = fl->C_Sign(sh, (CK_BYTE_PTR)(uintptr_t)data,
	    (CK_ULONG)datalen, raw, &rawlen)) != CKR_OK) {
		token_set_detail("C_Sign: %s", token_ckr_name(*rv));
		ret = TOKEN_ERR_FAILED;
		goto out;
	}
	if (rawlen > sizeof(raw)) {
		token_set_detail("token claims a %lu-byte signature",
		    (unsigned long)rawlen);
		ret = TOKEN_ERR_FAILED;
		goto out;
	}
	switch (key->k_type) {
	case TOKEN_KEY_EC_P256:
	case TOKEN_KEY_EC_P384:
		ret = sign_ecdsa_der(raw, rawlen, field, sig, siglen);
		break;
	default:
		if (rawlen != key->k_sigmax) {
			token_set_detail("token returned a %lu-byte signature, "
			    "expected %zu", (unsigned long)rawlen,
			    key->k_sigmax);
			ret = TOKEN_ERR_FAILED;
			break;
		}
		memcpy(sig, raw, rawlen);
		*siglen = rawlen;
		ret = 0;
		break;
	}
 out:
	OPENSSL_free(di);
	return ret;
}

static int
token_sign_once(struct token_key *key, const EVP_MD *md, const uint8_t *in,
    size_t inlen, uint8_t *sig, size_t *siglen, int *retry)
{
	struct token *tok = key->k_tok;
	struct token_session *s;
	CK_OBJECT_HANDLE priv;
	size_t buflen = *siglen;
	CK_RV rv;
	int ret;

	*retry = 0;
	if ((ret = token_session_get(tok, key, &s, &priv)) != 0)
		return ret;
	token_call_begin(s, "C_Sign");
	ret = token_sign_session(key, s->ts_handle, priv, md, in, inlen, sig,
	    siglen, &rv);
	token_call_end(s);
	if (ret == TOKEN_ERR_FAILED && rv != CKR_OK) {
		ret = token_rv_error(tok, s, "C_Sign", rv);
		*retry = ret == TOKEN_ERR_UNAVAILABLE &&
		    token_rv_needs_recovery(rv);
	}
	if (token_session_put(tok, s, rv)) {
		/* The watchdog already declared this call lost and took the
		 * token down; a late answer does not bring it back. */
		OPENSSL_cleanse(sig, buflen);
		token_set_detail("C_Sign exceeded the watchdog timeout");
		ret = TOKEN_ERR_UNAVAILABLE;
		*retry = 0;
	}
	if (ret != 0)
		*siglen = buflen;
	return ret;
}

/*
 * A signature that failed because the token needs recovery is tried once
 * more, after the recovery attempt it triggered: when the token answers
 * again (and the key passed its self-test) the caller never sees the
 * outage; when it does not, the caller gets "unavailable" within the
 * acquire timeout.  No signature was produced by the failed call, so the
 * retry cannot make two.
 */
int
token_sign(struct token_key *key, const EVP_MD *md, const uint8_t *in,
    size_t inlen, uint8_t *sig, size_t *siglen)
{
	int ret, retry;

	if (key->k_tok == NULL) {
		token_set_detail("the key's token is closed");
		return TOKEN_ERR_INVALID;
	}
	ret = token_sign_once(key, md, in, inlen, sig, siglen, &retry);
	if (ret != 0 && retry)
		ret = token_sign_once(key, md, in, inlen, sig, siglen, &retry);
	return ret;
}
