/*
 * Token keys as OpenSSL EVP_PKEYs, so that X509_sign and X509_CRL_sign
 * work with a key that never leaves the token.
 *
 * OpenSSL 3.0 still routes a key whose EC_KEY_METHOD or RSA_METHOD is not
 * its own through the legacy path and calls our sign functions; that is how
 * the pkcs11 engine itself works.  Doing it here rather than through the
 * engine keeps every token call on our session pool, watchdog and recovery
 * (see README, "Why not the pkcs11 engine for signing").  Those methods are
 * deprecated API, confined to this file.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "config.h"

#include <pthread.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/rsa.h>

#include "token-internal.h"

static pthread_once_t	 evp_once = PTHREAD_ONCE_INIT;
static EC_KEY_METHOD	*evp_ec_method;
static RSA_METHOD	*evp_rsa_method;
static int		 evp_ec_index = -1;
static int		 evp_rsa_index = -1;

static int
evp_ec_sign(int type, const unsigned char *dgst, int dlen,
    unsigned char *sig, unsigned int *siglen, const BIGNUM *kinv,
    const BIGNUM *r, EC_KEY *ec)
{
	struct token_key *key = EC_KEY_get_ex_data(ec, evp_ec_index);
	size_t len;

	(void)type;
	(void)kinv;
	(void)r;
	if (key == NULL || dlen <= 0)
		return 0;
	len = token_sign_max(key);
	if (token_sign(key, NULL, dgst, (size_t)dlen, sig, &len) != 0)
		return 0;
	*siglen = (unsigned int)len;
	return 1;
}

static ECDSA_SIG *
evp_ec_sign_sig(const unsigned char *dgst, int dlen, const BIGNUM *kinv,
    const BIGNUM *r, EC_KEY *ec)
{
	unsigned char der[128];
	const unsigned char *p = der;
	unsigned int len = sizeof(der);

	if (evp_ec_sign(0, dgst, dlen, der, &len, kinv, r, ec) != 1)
		return NULL;
	return d2i_ECDSA_SIG(NULL, &p, (long)len);
}

static int
evp_ec_sign_setup(EC_KEY *ec, BN_CTX *ctx, BIGNUM **kinv, BIGNUM **r)
{
	(void)ec;
	(void)ctx;
	(void)kinv;
	(void)r;
	return 1;
}

static int
evp_rsa_sign(int type, const unsigned char *m, unsigned int mlen,
    unsigned char *sig, unsigned int *siglen, const RSA *rsa)
{
	struct token_key *key = RSA_get_ex_data(rsa, evp_rsa_index);
	const EVP_MD *md = EVP_get_digestbynid(type);
	size_t len;

	if (key == NULL || md == NULL)
		return 0;
	len = token_sign_max(key);
	if (token_sign(key, md, m, mlen, sig, &len) != 0)
		return 0;
	*siglen = (unsigned int)len;
	return 1;
}

/* Raw private-key operations are never offered: the token signs digests
 * it is told the algorithm of, nothing else. */
static int
evp_rsa_refuse(int flen, const unsigned char *from, unsigned char *to,
    RSA *rsa, int padding)
{
	(void)flen;
	(void)from;
	(void)to;
	(void)rsa;
	(void)padding;
	return -1;
}

static void
evp_init(void)
{
	const EC_KEY_METHOD *ecdef = EC_KEY_OpenSSL();

	evp_ec_index = EC_KEY_get_ex_new_index(0, NULL, NULL,
	    NULL, NULL);
	evp_rsa_index = RSA_get_ex_new_index(0, NULL, NULL, NULL,
	    NULL);
	if ((evp_ec_method = EC_KEY_METHOD_new(ecdef)) != NULL) {
		EC_KEY_METHOD_set_sign(evp_ec_method, evp_ec_sign,
		    evp_ec_sign_setup, evp_ec_sign_sig);
	}
	if ((evp_rsa_method = RSA_meth_dup(RSA_PKCS1_OpenSSL())) != NULL) {
		RSA_meth_set1_name(evp_rsa_method, "hsmca token");
		RSA_meth_set_sign(evp_rsa_method, evp_rsa_sign);
		RSA_meth_set_priv_enc(evp_rsa_method, evp_rsa_refuse);
		RSA_meth_set_priv_dec(evp_rsa_method, evp_rsa_refuse);
	}
}

int
token_key_evp(struct token_key *key, EVP_PKEY **out)
{
	EVP_PKEY *pkey = NULL;
	EC_KEY *ec = NULL, *cached;
	RSA *rsa = NULL, *rcached;
	int ret = TOKEN_ERR_CRYPTO;

	*out = NULL;
	pthread_once(&evp_once, evp_init);
	if (evp_ec_method == NULL || evp_rsa_method == NULL ||
	    evp_ec_index < 0 || evp_rsa_index < 0)
		return TOKEN_ERR_CRYPTO;
	if ((pkey = EVP_PKEY_new()) == NULL)
		goto out;
	switch (key->k_type) {
	case TOKEN_KEY_EC_P256:
	case TOKEN_KEY_EC_P384:
		/* A copy of the public key, with our method and no private
		 * scalar: OpenSSL can compute nothing private with it.  The
		 * legacy key get1 returns is cached inside k_pub, hence the
		 * copy. */
		if ((cached = EVP_PKEY_get1_EC_KEY(key->k_pub)) == NULL)
			goto out;
		ec = EC_KEY_dup(cached);
		EC_KEY_free(cached);
		if (ec == NULL || EC_KEY_set_method(ec, evp_ec_method) != 1 ||
		    EC_KEY_set_ex_data(ec, evp_ec_index, key) != 1 ||
		    EVP_PKEY_assign_EC_KEY(pkey, ec) != 1)
			goto out;
		ec = NULL;
		break;
	case TOKEN_KEY_RSA_2048:
	case TOKEN_KEY_RSA_3072:
	case TOKEN_KEY_RSA_4096:
		if ((rcached = EVP_PKEY_get1_RSA(key->k_pub)) == NULL)
			goto out;
		rsa = RSAPublicKey_dup(rcached);
		RSA_free(rcached);
		if (rsa == NULL || RSA_set_method(rsa, evp_rsa_method) != 1 ||
		    RSA_set_ex_data(rsa, evp_rsa_index, key) != 1 ||
		    EVP_PKEY_assign_RSA(pkey, rsa) != 1)
			goto out;
		rsa = NULL;
		break;
	default:
		token_set_detail("%s keys cannot be wrapped as an EVP_PKEY "
		    "(OpenSSL 3.0 has no method hook for them)",
		    token_keytype_name(key->k_type));
		ret = TOKEN_ERR_UNSUPPORTED;
		goto out;
	}
	*out = pkey;
	pkey = NULL;
	ret = 0;
 out:
	EC_KEY_free(ec);
	RSA_free(rsa);
	EVP_PKEY_free(pkey);
	return ret;
}
