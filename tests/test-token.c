/*
 * The token layer against a real SoftHSM2 token: login and its errors,
 * key generation for every type, non-extractability, lookup, binding to a
 * certificate, signing through OpenSSL, and parallel signing.
 */
#include "config.h"

#include <sys/stat.h>

#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "testlib.h"

static struct testtoken tt;

static struct token *
open_only(const char *module, const char *uri, int *err)
{
	struct token_config tc;
	struct token *tok = NULL;

	memset(&tc, 0, sizeof(tc));
	tc.module = module;
	tc.uri = uri;
	*err = token_open(&tc, &tok);
	return tok;
}

static void
test_open_and_login(void **state)
{
	struct token *tok;

	(void)state;
	tok = testlib_open(&tt, NULL, 2, 0);
	assert_int_equal(token_get_state(tok), TOKEN_STATE_UP);
	token_close(tok);
}

static void
test_module_by_p11kit_name(void **state)
{
	struct token *tok;
	int err;

	(void)state;
	tok = open_only("softhsm2", tt.uri, &err);
	assert_int_equal(err, 0);
	token_close(tok);
}

static void
test_missing_module(void **state)
{
	int err;

	(void)state;
	assert_null(open_only("/nonexistent/libnothing.so", tt.uri, &err));
	assert_int_equal(err, TOKEN_ERR_MODULE);
	assert_null(open_only("no-such-registered-module", tt.uri, &err));
	assert_int_equal(err, TOKEN_ERR_MODULE);
}

static void
test_missing_token(void **state)
{
	int err;

	(void)state;
	assert_null(open_only(tt.module, "pkcs11:token=no-such-token", &err));
	assert_int_equal(err, TOKEN_ERR_NO_TOKEN);
	assert_non_null(strstr(token_error_detail(), "no initialised token"));
}

static void
test_ambiguous_token(void **state)
{
	int err;

	(void)state;
	/* Two tokens share the label "twin": the URI must not pick one. */
	testlib_token_add(&tt, "twin", "12345678", "87654321");
	testlib_token_add(&tt, "twin", "12345678", "87654321");
	assert_null(open_only(tt.module, "pkcs11:token=twin", &err));
	assert_int_equal(err, TOKEN_ERR_AMBIGUOUS_TOKEN);
}

static void
test_uri_refusals(void **state)
{
	char uri[700];
	int err;

	(void)state;
	snprintf(uri, sizeof(uri), "%s?pin-value=1234", tt.uri);
	assert_null(open_only(tt.module, uri, &err));
	assert_int_equal(err, TOKEN_ERR_INVALID);
	assert_null(open_only(tt.module, "pkcs12:token=x", &err));
	assert_int_equal(err, TOKEN_ERR_INVALID);
	snprintf(uri, sizeof(uri), "%s;x-unknown=1", tt.uri);
	assert_null(open_only(tt.module, uri, &err));
	assert_int_equal(err, TOKEN_ERR_INVALID);
}

static void
test_wrong_pin_never_retried(void **state)
{
	struct token *tok;
	struct secret *pin;
	char path[700], good[128];
	int err;

	(void)state;
	snprintf(path, sizeof(path), "%s/wrong-pin", tt.dir);
	testlib_write_file(path, "000000\n", 0600);
	tok = open_only(tt.module, tt.uri, &err);
	assert_int_equal(err, 0);
	assert_int_equal(secret_read_file(path, &pin), 0);
	assert_int_equal(token_login(tok, pin), TOKEN_ERR_PIN_INCORRECT);
	assert_int_equal(token_get_state(tok), TOKEN_STATE_PIN_FAILED);
	/* The error names the failure, never the PIN. */
	assert_non_null(strstr(token_error_detail(), "CKR_PIN_INCORRECT"));
	assert_null(strstr(token_error_detail(), "000000"));

	/* Even the right PIN is not tried again by this process: a loop of
	 * retries is how a real HSM gets locked. */
	testlib_read_pin(tt.pinfile, good, sizeof(good));
	testlib_write_file(path, good, 0600);
	assert_int_equal(secret_read_file(path, &pin), 0);
	assert_int_equal(token_login(tok, pin), TOKEN_ERR_PIN_INCORRECT);
	assert_non_null(strstr(token_error_detail(), "not retrying"));
	token_close(tok);
}

static void
test_pin_file_rules(void **state)
{
	struct secret *pin;
	char path[700], link[700], good[128], withnl[160];
	int fds[2];

	(void)state;
	testlib_read_pin(tt.pinfile, good, sizeof(good));
	snprintf(path, sizeof(path), "%s/pin-test", tt.dir);

	testlib_write_file(path, good, 0644);
	assert_int_equal(secret_read_file(path, &pin), TOKEN_ERR_PIN_FILE);
	assert_non_null(strstr(token_error_detail(), "group or other"));

	testlib_write_file(path, good, 0640);
	assert_int_equal(secret_read_file(path, &pin), TOKEN_ERR_PIN_FILE);

	testlib_write_file(path, "", 0600);
	assert_int_equal(secret_read_file(path, &pin), TOKEN_ERR_PIN_FILE);
	assert_non_null(strstr(token_error_detail(), "empty"));

	testlib_write_file(path, "12\n34\n", 0600);
	assert_int_equal(secret_read_file(path, &pin), TOKEN_ERR_PIN_FILE);

	/* One trailing newline (or CRLF) is not part of the PIN. */
	snprintf(withnl, sizeof(withnl), "%s\r\n", good);
	testlib_write_file(path, withnl, 0600);
	assert_int_equal(secret_read_file(path, &pin), 0);
	assert_int_equal(secret_len(pin), strlen(good));
	assert_memory_equal(secret_data(pin), good, strlen(good));
	secret_free(pin);

	/* A symlink is not followed. */
	snprintf(link, sizeof(link), "%s/pin-link", tt.dir);
	unlink(link);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(secret_read_file(link, &pin), TOKEN_ERR_PIN_FILE);

	/* Owned by another user (tests run as root in CI). */
	if (geteuid() == 0) {
		assert_int_equal(chown(path, 65534, 65534), 0);
		assert_int_equal(secret_read_file(path, &pin),
		    TOKEN_ERR_PIN_FILE);
		assert_non_null(strstr(token_error_detail(), "owned by uid"));
	}

	/* From a descriptor: a pipe has no mode to check. */
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], withnl, strlen(withnl)),
	    (ssize_t)strlen(withnl));
	close(fds[1]);
	assert_int_equal(secret_read_fd(fds[0], "pipe", &pin), 0);
	assert_int_equal(secret_len(pin), strlen(good));
	secret_free(pin);
	close(fds[0]);

	assert_int_equal(secret_read_file("/nonexistent/pin", &pin),
	    TOKEN_ERR_PIN_FILE);
}

static void
check_non_extractable(struct token_key *key)
{
	int v;
	CK_RV rv;

	assert_int_equal(token_key_get_bool(key, CKA_EXTRACTABLE, &v), 0);
	assert_false(v);
	assert_int_equal(token_key_get_bool(key, CKA_NEVER_EXTRACTABLE, &v), 0);
	assert_true(v);
	assert_int_equal(token_key_get_bool(key, CKA_SENSITIVE, &v), 0);
	assert_true(v);
	assert_int_equal(token_key_get_bool(key, CKA_TOKEN, &v), 0);
	assert_true(v);
	assert_int_equal(token_key_get_bool(key, CKA_PRIVATE, &v), 0);
	assert_true(v);
	/* Reading the private value must fail, and say why. */
	assert_int_equal(token_key_try_read_value(key, &rv), TOKEN_ERR_FAILED);
	assert_int_equal(rv, CKR_ATTRIBUTE_SENSITIVE);
}

static X509 *
self_signed(EVP_PKEY *signer, EVP_PKEY *pub)
{
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();

	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	    (const unsigned char *)"bind test", -1, -1, 0);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_set_subject_name(x, n);
	X509_set_issuer_name(x, n);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pub);
	assert_true(X509_sign(x, signer, EVP_sha256()) > 0);
	X509_NAME_free(n);
	return x;
}

/* X509_sign with the token-backed EVP_PKEY: the path certificates take. */
static void
check_x509_sign(struct token_key *key)
{
	EVP_PKEY *pkey = NULL;
	X509 *x;

	assert_int_equal(token_key_evp(key, &pkey), 0);
	x = self_signed(pkey, token_key_public(key));
	assert_int_equal(X509_verify(x, token_key_public(key)), 1);
	EVP_PKEY_free(pkey);
	X509_free(x);
}

static void
generate_and_check(const char *typename, const char *label)
{
	struct token *tok = testlib_open(&tt, NULL, 2, 0);
	struct token_key *key = NULL, *again = NULL;
	enum token_keytype type;
	char uri[256];

	assert_int_equal(token_keytype_parse(typename, &type), 0);
	assert_int_equal(token_key_generate(tok, type, label, &key), 0);
	assert_int_equal(token_key_type(key), type);
	check_non_extractable(key);
	assert_int_equal(testlib_sign_verify(key), 0);
	assert_int_equal(token_key_selftest(key), 0);
	if (type != TOKEN_KEY_ED25519)
		check_x509_sign(key);
	else {
		EVP_PKEY *pkey = NULL;

		assert_int_equal(token_key_evp(key, &pkey),
		    TOKEN_ERR_UNSUPPORTED);
	}

	/* The label is taken now. */
	assert_int_equal(token_key_generate(tok, type, label, &again),
	    TOKEN_ERR_LABEL_EXISTS);
	/* And it names the key by URI. */
	snprintf(uri, sizeof(uri), "pkcs11:object=%s;type=private", label);
	assert_int_equal(token_key_find(tok, uri, &again), 0);
	assert_string_equal(token_key_id_hex(again), token_key_id_hex(key));
	assert_int_equal(EVP_PKEY_eq(token_key_public(again),
	    token_key_public(key)), 1);
	token_key_free(again);
	token_key_free(key);
	token_close(tok);
}

static void test_gen_p256(void **s) { (void)s; generate_and_check("ec-p256", "k-p256"); }
static void test_gen_p384(void **s) { (void)s; generate_and_check("ec-p384", "k-p384"); }
static void test_gen_rsa2048(void **s) { (void)s; generate_and_check("rsa-2048", "k-rsa2048"); }
static void test_gen_rsa3072(void **s) { (void)s; generate_and_check("rsa-3072", "k-rsa3072"); }
static void test_gen_rsa4096(void **s) { (void)s; generate_and_check("rsa-4096", "k-rsa4096"); }
static void test_gen_ed25519(void **s) { (void)s; generate_and_check("ed25519", "k-ed25519"); }

static void
test_find_errors(void **state)
{
	struct token *tok = testlib_open(&tt, NULL, 2, 0);
	struct token_key *key = NULL;
	enum token_keytype type;

	(void)state;
	assert_int_equal(token_key_find(tok, "pkcs11:object=absent", &key),
	    TOKEN_ERR_NO_KEY);
	assert_int_equal(token_key_find(tok, "pkcs11:token=other;object=k-p256",
	    &key), TOKEN_ERR_NO_KEY);
	assert_int_equal(token_key_find(tok, "pkcs11:type=private", &key),
	    TOKEN_ERR_INVALID);
	assert_int_equal(token_key_find(tok, "pkcs11:object=k-p256;type=cert",
	    &key), TOKEN_ERR_INVALID);
	assert_int_equal(token_keytype_parse("ec-p521", &type),
	    TOKEN_ERR_INVALID);
	assert_int_equal(token_key_generate(tok, TOKEN_KEY_EC_P256, "", &key),
	    TOKEN_ERR_INVALID);
	token_close(tok);
}

/* A second private key under a label: by hand, since hsmca refuses. */
static void
make_raw_p256(struct token *tok, const char *label, const uint8_t *id,
    size_t idlen)
{
	static const uint8_t p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
	    0x3d, 0x03, 0x01, 0x07 };
	CK_FUNCTION_LIST *fl = token_functions(tok);
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_ATTRIBUTE pub[] = {
		{ CKA_TOKEN, &t, sizeof(t) },
		{ CKA_EC_PARAMS, (void *)(uintptr_t)p256, sizeof(p256) },
		{ CKA_LABEL, (void *)(uintptr_t)label, strlen(label) },
		{ CKA_ID, (void *)(uintptr_t)id, idlen },
	};
	CK_ATTRIBUTE priv[] = {
		{ CKA_TOKEN, &t, sizeof(t) },
		{ CKA_PRIVATE, &t, sizeof(t) },
		{ CKA_SENSITIVE, &t, sizeof(t) },
		{ CKA_EXTRACTABLE, &f, sizeof(f) },
		{ CKA_SIGN, &t, sizeof(t) },
		{ CKA_LABEL, (void *)(uintptr_t)label, strlen(label) },
		{ CKA_ID, (void *)(uintptr_t)id, idlen },
	};
	CK_SESSION_HANDLE sh;
	CK_OBJECT_HANDLE hpub, hpriv;

	assert_int_equal(fl->C_OpenSession(token_slot(tok),
	    CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &sh), CKR_OK);
	assert_int_equal(fl->C_GenerateKeyPair(sh, &mech, pub, 4, priv, 7,
	    &hpub, &hpriv), CKR_OK);
	fl->C_CloseSession(sh);
}

static void
test_ambiguous_key(void **state)
{
	struct token *tok = testlib_open(&tt, NULL, 2, 0);
	struct token_key *key = NULL;

	(void)state;
	make_raw_p256(tok, "dup", (const uint8_t *)"\x01", 1);
	make_raw_p256(tok, "dup", (const uint8_t *)"\x02", 1);
	assert_int_equal(token_key_find(tok, "pkcs11:object=dup", &key),
	    TOKEN_ERR_AMBIGUOUS_KEY);
	assert_int_equal(token_key_find(tok, "pkcs11:object=dup;id=%01", &key),
	    0);
	token_key_free(key);
	token_close(tok);
}

static void
test_bind_cert(void **state)
{
	struct token *tok = testlib_open(&tt, NULL, 2, 0);
	struct token_key *key = NULL, *bound = NULL;
	EVP_PKEY *evp = NULL, *soft = NULL;
	CK_FUNCTION_LIST *fl = token_functions(tok);
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE find[2];
	CK_ATTRIBUTE newid = { CKA_ID, (void *)(uintptr_t)"\x77", 1 };
	CK_OBJECT_HANDLE h, copy;
	CK_ULONG n;
	CK_SESSION_HANDLE sh;
	X509 *cert, *other;
	uint8_t id[64];
	size_t idlen, i;
	const char *hex;

	(void)state;
	assert_int_equal(token_key_generate(tok, TOKEN_KEY_EC_P256, "bind-ca",
	    &key), 0);
	assert_int_equal(token_key_evp(key, &evp), 0);
	cert = self_signed(evp, token_key_public(key));
	assert_int_equal(token_key_bind_cert(tok, cert, &bound), 0);
	assert_string_equal(token_key_id_hex(bound), token_key_id_hex(key));
	token_key_free(bound);

	/* A certificate for a key the token does not hold. */
	soft = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	other = self_signed(soft, soft);
	assert_int_equal(token_key_bind_cert(tok, other, &bound),
	    TOKEN_ERR_NO_KEY);

	/* The same public key under a second CKA_ID: ambiguous. */
	hex = token_key_id_hex(key);
	idlen = strlen(hex) / 2;
	for (i = 0; i < idlen; i++)
		sscanf(hex + 2 * i, "%2hhx", &id[i]);
	find[0].type = CKA_CLASS;
	find[0].pValue = &cls;
	find[0].ulValueLen = sizeof(cls);
	find[1].type = CKA_ID;
	find[1].pValue = id;
	find[1].ulValueLen = idlen;
	assert_int_equal(fl->C_OpenSession(token_slot(tok),
	    CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &sh), CKR_OK);
	assert_int_equal(fl->C_FindObjectsInit(sh, find, 2), CKR_OK);
	assert_int_equal(fl->C_FindObjects(sh, &h, 1, &n), CKR_OK);
	fl->C_FindObjectsFinal(sh);
	assert_int_equal(n, 1);
	assert_int_equal(fl->C_CopyObject(sh, h, &newid, 1, &copy), CKR_OK);
	fl->C_CloseSession(sh);
	assert_int_equal(token_key_bind_cert(tok, cert, &bound),
	    TOKEN_ERR_AMBIGUOUS_KEY);

	X509_free(cert);
	X509_free(other);
	EVP_PKEY_free(evp);
	EVP_PKEY_free(soft);
	token_key_free(key);
	token_close(tok);
}

#define PAR_THREADS	6
#define PAR_SIGNS	150

struct par {
	struct token_key	*key;
	int			 ok;
	int			 failed;
};

static void *
par_main(void *arg)
{
	struct par *p = arg;
	int i;

	for (i = 0; i < PAR_SIGNS; i++) {
		if (testlib_sign_verify(p->key) == 0)
			p->ok++;
		else
			p->failed++;
	}
	return NULL;
}

static void
test_parallel_signing(void **state)
{
	struct token *tok = testlib_open(&tt, NULL, 4, 0);
	struct token_key *key = NULL;
	pthread_t th[PAR_THREADS];
	struct par p[PAR_THREADS];
	int i;

	(void)state;
	assert_int_equal(token_key_find(tok, "pkcs11:object=k-p256", &key), 0);
	for (i = 0; i < PAR_THREADS; i++) {
		p[i].key = key;
		p[i].ok = p[i].failed = 0;
		assert_int_equal(pthread_create(&th[i], NULL, par_main, &p[i]),
		    0);
	}
	/* Join every thread before asserting: they use p and key. */
	for (i = 0; i < PAR_THREADS; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < PAR_THREADS; i++) {
		assert_int_equal(p[i].failed, 0);
		assert_int_equal(p[i].ok, PAR_SIGNS);
	}
	token_key_free(key);
	token_close(tok);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_and_login),
		cmocka_unit_test(test_module_by_p11kit_name),
		cmocka_unit_test(test_missing_module),
		cmocka_unit_test(test_missing_token),
		cmocka_unit_test(test_uri_refusals),
		cmocka_unit_test(test_pin_file_rules),
		cmocka_unit_test(test_gen_p256),
		cmocka_unit_test(test_gen_p384),
		cmocka_unit_test(test_gen_rsa2048),
		cmocka_unit_test(test_gen_rsa3072),
		cmocka_unit_test(test_gen_rsa4096),
		cmocka_unit_test(test_gen_ed25519),
		cmocka_unit_test(test_find_errors),
		cmocka_unit_test(test_ambiguous_key),
		cmocka_unit_test(test_bind_cert),
		cmocka_unit_test(test_parallel_signing),
		cmocka_unit_test(test_wrong_pin_never_retried),
		cmocka_unit_test(test_ambiguous_token),
	};
	int ret;

	testlib_token_new(&tt, "hsmca-test");
	ret = cmocka_run_group_tests_name("token", tests, NULL, NULL);
	testlib_token_remove_dir(&tt);
	return ret;
}
