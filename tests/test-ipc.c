/*
 * The IPC codec: round trips, a golden encoding, and every way a message
 * can be wrong (a flipped bit anywhere, truncation, trailing bytes, BER,
 * wrong key, stale or future time, other version, unknown type, size).
 */
#include "config.h"

#include <sys/stat.h>

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/x509v3.h>

#include "ipc.h"
#include "testlib.h"

#define WINDOW_MS	30000

static uint8_t key[IPC_KEY_LEN];
static const uint8_t id[IPC_ID_LEN] = {
	0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };

static void
health(uint8_t **out, size_t *outlen, int64_t ts)
{
	IPC_HEALTH_REQ *h = IPC_HEALTH_REQ_new();
	uint8_t *body;
	size_t len;

	assert_non_null(h);
	ASN1_INTEGER_set(h->nonce, 42);
	assert_int_equal(ipc_encode(IPC_HEALTH_REQ_it(), h, &body, &len), 0);
	assert_int_equal(ipc_seal(key, IPC_T_HEALTH_REQ, id, ts, body, len,
	    out, outlen), 0);
	OPENSSL_free(body);
	IPC_HEALTH_REQ_free(h);
}

static void
test_issue_round_trip(void **state)
{
	IPC_ISSUE_REQ *r = IPC_ISSUE_REQ_new(), *back = NULL;
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	GENERAL_NAME *gn;
	ASN1_IA5STRING *ia5;
	struct ipc_message m;
	uint8_t *spki = NULL, *body, *msg;
	size_t blen, mlen;
	int slen;
	int64_t now = ipc_now_ms();

	(void)state;
	slen = i2d_PUBKEY(pk, &spki);
	ASN1_STRING_set(r->key_name, "issuing", -1);
	ASN1_STRING_set(r->profile, "svid", -1);
	ASN1_OCTET_STRING_set(r->spki, spki, slen);
	X509_NAME_add_entry_by_txt(r->subject, "O", MBSTRING_ASC,
	    (const unsigned char *)"hsmca", -1, -1, 0);
	gn = GENERAL_NAME_new();
	ia5 = ASN1_IA5STRING_new();
	ASN1_STRING_set(ia5, "spiffe://td.example/ns/a/sa/b", -1);
	GENERAL_NAME_set0_value(gn, GEN_URI, ia5);
	sk_GENERAL_NAME_push(r->sans, gn);
	ASN1_INTEGER_set_int64(r->not_before, now / 1000);
	ASN1_INTEGER_set_int64(r->not_after, now / 1000 + 3600);
	ASN1_STRING_set(r->requester, "token:ci", -1);
	ASN1_STRING_set(r->rule, "workloads", -1);

	assert_int_equal(ipc_encode(IPC_ISSUE_REQ_it(), r, &body, &blen), 0);
	assert_int_equal(ipc_seal(key, IPC_T_ISSUE_CERT_REQ, id, now, body,
	    blen, &msg, &mlen), 0);
	assert_int_equal(ipc_open(key, msg, mlen, now, WINDOW_MS, &m), 0);
	assert_int_equal(m.im_type, IPC_T_ISSUE_CERT_REQ);
	assert_memory_equal(m.im_id, id, IPC_ID_LEN);
	assert_true(m.im_timestamp_ms == now);
	assert_int_equal(m.im_bodylen, blen);
	assert_int_equal(ipc_decode(ipc_type_item(m.im_type), m.im_body,
	    m.im_bodylen, "body", (void **)&back), 0);
	assert_int_equal(ASN1_STRING_cmp(back->spki, r->spki), 0);
	assert_int_equal(X509_NAME_cmp(back->subject, r->subject), 0);
	assert_int_equal(sk_GENERAL_NAME_num(back->sans), 1);
	assert_int_equal(GENERAL_NAME_cmp(sk_GENERAL_NAME_value(back->sans, 0),
	    gn), 0);
	assert_string_equal(ASN1_STRING_get0_data(back->profile), "svid");

	ipc_message_clear(&m);
	IPC_ISSUE_REQ_free(back);
	IPC_ISSUE_REQ_free(r);
	OPENSSL_free(body);
	OPENSSL_free(msg);
	OPENSSL_free(spki);
	EVP_PKEY_free(pk);
}

/*
 * A fixed key, id, time and body give these bytes on every machine.
 * Checked independently of this code: `openssl asn1parse` shows the
 * Envelope and Content of ipc.h, and Python's hmac module computes the same
 * HMAC-SHA256 of the content under key 00 01 .. 1f.
 */
static void
test_golden(void **state)
{
	static const char golden[] =
	    "304d042930270201010410000102030405060708090a0b0c0d0e0f"
	    "0206018bcfe568000201070405300302012a"
	    "0420412475da7cee8cafd12cb0cf09e1b230de2e9e86a47de35d6f8a269c009bcbd3";
	uint8_t *msg;
	size_t len, i;
	char hex[1024];

	(void)state;
	health(&msg, &len, 1700000000000LL);
	assert_true(len * 2 < sizeof(hex));
	for (i = 0; i < len; i++)
		snprintf(hex + 2 * i, 3, "%02x", msg[i]);
	assert_string_equal(hex, golden);
	OPENSSL_free(msg);
}

static void
test_every_bit_flip_refused(void **state)
{
	struct ipc_message m;
	uint8_t *msg;
	size_t len, i;
	int bit, ret;
	int64_t now = ipc_now_ms();

	(void)state;
	health(&msg, &len, now);
	for (i = 0; i < len; i++) {
		for (bit = 0; bit < 8; bit++) {
			msg[i] ^= (uint8_t)(1 << bit);
			ret = ipc_open(key, msg, len, now, WINDOW_MS, &m);
			assert_int_not_equal(ret, 0);
			ipc_message_clear(&m);
			msg[i] ^= (uint8_t)(1 << bit);
		}
	}
	assert_int_equal(ipc_open(key, msg, len, now, WINDOW_MS, &m), 0);
	ipc_message_clear(&m);
	OPENSSL_free(msg);
}

static void
test_truncated_and_trailing(void **state)
{
	struct ipc_message m;
	uint8_t *msg, *longer;
	size_t len, i;
	int64_t now = ipc_now_ms();

	(void)state;
	health(&msg, &len, now);
	for (i = 0; i < len; i++)
		assert_int_equal(ipc_open(key, msg, i, now, WINDOW_MS, &m),
		    IPC_ERR_DECODE);
	longer = malloc(len + 1);
	memcpy(longer, msg, len);
	longer[len] = 0;
	assert_int_equal(ipc_open(key, longer, len + 1, now, WINDOW_MS, &m),
	    IPC_ERR_DECODE);
	assert_non_null(strstr(ipc_error_detail(), "left over"));
	free(longer);
	OPENSSL_free(msg);
}

/* A long-form length where a short one fits is BER, not DER. */
static void
test_ber_refused(void **state)
{
	struct ipc_message m;
	uint8_t *msg, *ber;
	size_t len;
	int64_t now = ipc_now_ms();

	(void)state;
	health(&msg, &len, now);
	assert_true(msg[0] == 0x30 && msg[1] < 0x80);
	ber = malloc(len + 1);
	ber[0] = 0x30;
	ber[1] = 0x81;
	memcpy(ber + 2, msg + 1, len - 1);
	assert_int_equal(ipc_open(key, ber, len + 1, now, WINDOW_MS, &m),
	    IPC_ERR_DECODE);
	assert_non_null(strstr(ipc_error_detail(), "not in DER"));
	free(ber);
	OPENSSL_free(msg);
}

static void
test_wrong_key(void **state)
{
	struct ipc_message m;
	uint8_t other[IPC_KEY_LEN], *msg;
	size_t len;
	int64_t now = ipc_now_ms();

	(void)state;
	memcpy(other, key, sizeof(other));
	other[31] ^= 1;
	health(&msg, &len, now);
	assert_int_equal(ipc_open(other, msg, len, now, WINDOW_MS, &m),
	    IPC_ERR_MAC);
	OPENSSL_free(msg);
}

static void
test_stale_and_future(void **state)
{
	struct ipc_message m;
	uint8_t *msg;
	size_t len;
	int64_t now = ipc_now_ms();

	(void)state;
	health(&msg, &len, now - WINDOW_MS - 1);
	assert_int_equal(ipc_open(key, msg, len, now, WINDOW_MS, &m),
	    IPC_ERR_STALE);
	/* The id is known, so the refusal can be answered and audited. */
	assert_memory_equal(m.im_id, id, IPC_ID_LEN);
	ipc_message_clear(&m);
	OPENSSL_free(msg);
	health(&msg, &len, now + WINDOW_MS + 1);
	assert_int_equal(ipc_open(key, msg, len, now, WINDOW_MS, &m),
	    IPC_ERR_STALE);
	ipc_message_clear(&m);
	OPENSSL_free(msg);
	health(&msg, &len, now + WINDOW_MS);
	assert_int_equal(ipc_open(key, msg, len, now, WINDOW_MS, &m), 0);
	ipc_message_clear(&m);
	OPENSSL_free(msg);
}

/* Seals a Content by hand, for versions and types ipc_seal refuses. */
static void
seal_raw(long version, long type, uint8_t **out, size_t *outlen)
{
	IPC_CONTENT *c = IPC_CONTENT_new();
	IPC_ENVELOPE *e = IPC_ENVELOPE_new();
	uint8_t *content, mac[32];
	size_t clen;
	unsigned int maclen;

	ASN1_INTEGER_set(c->version, version);
	ASN1_OCTET_STRING_set(c->request_id, id, IPC_ID_LEN);
	ASN1_INTEGER_set_int64(c->timestamp, ipc_now_ms());
	ASN1_INTEGER_set(c->type, type);
	ASN1_OCTET_STRING_set(c->body, (const unsigned char *)"\x30\x00", 2);
	assert_int_equal(ipc_encode(IPC_CONTENT_it(), c, &content, &clen), 0);
	HMAC(EVP_sha256(), key, IPC_KEY_LEN, content, clen, mac, &maclen);
	ASN1_OCTET_STRING_set(e->content, content, (int)clen);
	ASN1_OCTET_STRING_set(e->mac, mac, (int)maclen);
	assert_int_equal(ipc_encode(IPC_ENVELOPE_it(), e, out, outlen), 0);
	OPENSSL_free(content);
	IPC_CONTENT_free(c);
	IPC_ENVELOPE_free(e);
}

static void
test_version_and_type(void **state)
{
	struct ipc_message m;
	uint8_t *msg;
	size_t len;

	(void)state;
	seal_raw(IPC_VERSION + 1, IPC_T_HEALTH_REQ, &msg, &len);
	assert_int_equal(ipc_open(key, msg, len, ipc_now_ms(), WINDOW_MS, &m),
	    IPC_ERR_VERSION);
	OPENSSL_free(msg);
	seal_raw(IPC_VERSION, 99, &msg, &len);
	assert_int_equal(ipc_open(key, msg, len, ipc_now_ms(), WINDOW_MS, &m),
	    IPC_ERR_TYPE);
	assert_non_null(strstr(ipc_error_detail(), "unknown type 99"));
	ipc_message_clear(&m);
	OPENSSL_free(msg);
	assert_int_equal(ipc_seal(key, 99, id, 0, NULL, 0, &msg, &len),
	    IPC_ERR_TYPE);
}

static void
test_size_limits(void **state)
{
	struct ipc_message m;
	uint8_t *big = calloc(1, IPC_MAX_MESSAGE + 1), *msg;
	size_t len;

	(void)state;
	assert_int_equal(ipc_open(key, big, IPC_MAX_MESSAGE + 1, 0, WINDOW_MS,
	    &m), IPC_ERR_TOO_LARGE);
	assert_int_equal(ipc_seal(key, IPC_T_HEALTH_REQ, id, 0, big,
	    IPC_MAX_MESSAGE + 1, &msg, &len), IPC_ERR_TOO_LARGE);
	assert_int_equal(ipc_open(key, big, 0, 0, WINDOW_MS, &m),
	    IPC_ERR_DECODE);
	free(big);
}

static void
test_body_decode_strict(void **state)
{
	IPC_HEALTH_REQ *h = NULL;
	static const uint8_t ok[] = { 0x30, 0x03, 0x02, 0x01, 0x2a };
	static const uint8_t extra[] = { 0x30, 0x03, 0x02, 0x01, 0x2a, 0x00 };
	static const uint8_t wrong[] = { 0x30, 0x03, 0x04, 0x01, 0x2a };
	static const uint8_t empty[] = { 0x30, 0x00 };

	(void)state;
	assert_int_equal(ipc_decode(IPC_HEALTH_REQ_it(), ok, sizeof(ok), "t",
	    (void **)&h), 0);
	IPC_HEALTH_REQ_free(h);
	assert_int_equal(ipc_decode(IPC_HEALTH_REQ_it(), extra, sizeof(extra),
	    "t", (void **)&h), IPC_ERR_DECODE);
	assert_int_equal(ipc_decode(IPC_HEALTH_REQ_it(), wrong, sizeof(wrong),
	    "t", (void **)&h), IPC_ERR_DECODE);
	/* A missing field is not a default. */
	assert_int_equal(ipc_decode(IPC_HEALTH_REQ_it(), empty, sizeof(empty),
	    "t", (void **)&h), IPC_ERR_DECODE);
	assert_null(h);
}

static void
test_key_file(void **state)
{
	char dir[] = "/tmp/hsmca-ipc-XXXXXX", path[64];
	uint8_t k[IPC_KEY_LEN];
	const char *hex64 =
	    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/mac.key", dir);
	testlib_write_file(path, hex64, 0600);
	assert_int_equal(ipc_key_load(path, k), 0);
	assert_int_equal(k[0], 0);
	assert_int_equal(k[31], 0x1f);
	testlib_write_file(path, hex64, 0640);
	assert_int_equal(ipc_key_load(path, k), IPC_ERR_KEY_FILE);
	assert_non_null(strstr(ipc_error_detail(), "group or other"));
	testlib_write_file(path, "0001", 0600);
	assert_int_equal(ipc_key_load(path, k), IPC_ERR_KEY_FILE);
	assert_non_null(strstr(ipc_error_detail(), "expected 64 hex"));
	testlib_write_file(path,
	    "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	    0600);
	assert_int_equal(ipc_key_load(path, k), IPC_ERR_KEY_FILE);
	unlink(path);
	rmdir(dir);
}

static void
test_names(void **state)
{
	int a, b;

	(void)state;
	for (a = 1; a <= IPC_TYPE_MAX; a++) {
		assert_non_null(ipc_type_item(a));
		assert_string_not_equal(ipc_type_name(a), "unknown-type");
	}
	assert_null(ipc_type_item(0));
	assert_null(ipc_type_item(IPC_TYPE_MAX + 1));
	for (a = 1; a <= IPC_REFUSE_MAX; a++)
		for (b = a + 1; b <= IPC_REFUSE_MAX; b++)
			assert_string_not_equal(ipc_refusal_name(a),
			    ipc_refusal_name(b));
	for (a = IPC_ERR_KEY_FILE; a <= 0; a++)
		assert_string_not_equal(ipc_strerror(a), "unknown error");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_issue_round_trip),
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_every_bit_flip_refused),
		cmocka_unit_test(test_truncated_and_trailing),
		cmocka_unit_test(test_ber_refused),
		cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_stale_and_future),
		cmocka_unit_test(test_version_and_type),
		cmocka_unit_test(test_size_limits),
		cmocka_unit_test(test_body_decode_strict),
		cmocka_unit_test(test_key_file),
		cmocka_unit_test(test_names),
	};
	size_t i;

	for (i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)i;
	return cmocka_run_group_tests_name("ipc", tests, NULL, NULL);
}
