/*
 * Envelopes: seal a body with id, time and MAC; open one, checking the MAC
 * before anything inside is decoded.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ipc.h"
#include "token.h"

void	ipc_set_detail(const char *, ...) __attribute__((format(printf, 1, 2)));

int64_t
ipc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
ipc_hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
ipc_key_load(const char *path, uint8_t key[IPC_KEY_LEN])
{
	struct secret *s = NULL;
	const uint8_t *hex;
	size_t i;
	int hi, lo, ret = IPC_ERR_KEY_FILE;

	if (secret_read_file(path, &s) != 0) {
		ipc_set_detail("MAC key: %s", token_error_detail());
		return IPC_ERR_KEY_FILE;
	}
	if (secret_len(s) != 2 * IPC_KEY_LEN) {
		ipc_set_detail("MAC key %s: %zu characters, expected %d hex "
		    "digits", path, secret_len(s), 2 * IPC_KEY_LEN);
		goto out;
	}
	hex = secret_data(s);
	for (i = 0; i < IPC_KEY_LEN; i++) {
		if ((hi = ipc_hexval(hex[2 * i])) < 0 ||
		    (lo = ipc_hexval(hex[2 * i + 1])) < 0) {
			ipc_set_detail("MAC key %s: not hexadecimal", path);
			OPENSSL_cleanse(key, IPC_KEY_LEN);
			goto out;
		}
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	ret = 0;
 out:
	secret_free(s);
	return ret;
}

static int
ipc_mac(const uint8_t key[IPC_KEY_LEN], const uint8_t *data, size_t len,
    uint8_t mac[IPC_MAC_LEN])
{
	unsigned int maclen = 0;

	if (HMAC(EVP_sha256(), key, IPC_KEY_LEN, data, len, mac,
	    &maclen) == NULL || maclen != IPC_MAC_LEN)
		return IPC_ERR_NOMEM;
	return 0;
}

int
ipc_seal(const uint8_t key[IPC_KEY_LEN], int type, const uint8_t id[IPC_ID_LEN],
    int64_t timestamp_ms, const uint8_t *body, size_t bodylen, uint8_t **out,
    size_t *outlen)
{
	IPC_CONTENT *c = NULL;
	IPC_ENVELOPE *e = NULL;
	uint8_t *content = NULL, mac[IPC_MAC_LEN];
	size_t clen;
	int ret = IPC_ERR_NOMEM;

	*out = NULL;
	*outlen = 0;
	if (ipc_type_item(type) == NULL) {
		ipc_set_detail("seal: unknown type %d", type);
		return IPC_ERR_TYPE;
	}
	if (bodylen > IPC_MAX_MESSAGE) {
		ipc_set_detail("seal: body of %zu bytes", bodylen);
		return IPC_ERR_TOO_LARGE;
	}
	if ((c = IPC_CONTENT_new()) == NULL ||
	    ASN1_INTEGER_set(c->version, IPC_VERSION) != 1 ||
	    ASN1_OCTET_STRING_set(c->request_id, id, IPC_ID_LEN) != 1 ||
	    ASN1_INTEGER_set_int64(c->timestamp, timestamp_ms) != 1 ||
	    ASN1_INTEGER_set(c->type, type) != 1 ||
	    ASN1_OCTET_STRING_set(c->body, body, (int)bodylen) != 1)
		goto out;
	if ((ret = ipc_encode(IPC_CONTENT_it(), c, &content, &clen)) != 0)
		goto out;
	if ((ret = ipc_mac(key, content, clen, mac)) != 0)
		goto out;
	ret = IPC_ERR_NOMEM;
	if ((e = IPC_ENVELOPE_new()) == NULL ||
	    ASN1_OCTET_STRING_set(e->content, content, (int)clen) != 1 ||
	    ASN1_OCTET_STRING_set(e->mac, mac, IPC_MAC_LEN) != 1)
		goto out;
	ret = ipc_encode(IPC_ENVELOPE_it(), e, out, outlen);
 out:
	OPENSSL_free(content);
	IPC_CONTENT_free(c);
	IPC_ENVELOPE_free(e);
	return ret;
}

void
ipc_message_clear(struct ipc_message *msg)
{
	OPENSSL_free(msg->im_body);
	memset(msg, 0, sizeof(*msg));
}

int
ipc_open(const uint8_t key[IPC_KEY_LEN], const uint8_t *buf, size_t len,
    int64_t now_ms, int64_t window_ms, struct ipc_message *msg)
{
	IPC_ENVELOPE *e = NULL;
	IPC_CONTENT *c = NULL;
	uint8_t mac[IPC_MAC_LEN];
	int64_t version, type, ts;
	int ret;

	memset(msg, 0, sizeof(*msg));
	if (len > IPC_MAX_MESSAGE) {
		ipc_set_detail("message of %zu bytes, more than %d", len,
		    IPC_MAX_MESSAGE);
		return IPC_ERR_TOO_LARGE;
	}
	if ((ret = ipc_decode(IPC_ENVELOPE_it(), buf, len, "envelope",
	    (void **)&e)) != 0)
		return ret;
	/* Nothing inside is read before the MAC holds. */
	if (ASN1_STRING_length(e->mac) != IPC_MAC_LEN) {
		ipc_set_detail("envelope: MAC of %d bytes",
		    ASN1_STRING_length(e->mac));
		ret = IPC_ERR_MAC;
		goto out;
	}
	if ((ret = ipc_mac(key, ASN1_STRING_get0_data(e->content),
	    (size_t)ASN1_STRING_length(e->content), mac)) != 0)
		goto out;
	if (CRYPTO_memcmp(mac, ASN1_STRING_get0_data(e->mac),
	    IPC_MAC_LEN) != 0) {
		ipc_set_detail("envelope: MAC does not verify");
		ret = IPC_ERR_MAC;
		goto out;
	}
	if ((ret = ipc_decode(IPC_CONTENT_it(),
	    ASN1_STRING_get0_data(e->content),
	    (size_t)ASN1_STRING_length(e->content), "content",
	    (void **)&c)) != 0)
		goto out;
	ret = IPC_ERR_DECODE;
	if (ASN1_INTEGER_get_int64(&version, c->version) != 1 ||
	    ASN1_INTEGER_get_int64(&type, c->type) != 1 ||
	    ASN1_INTEGER_get_int64(&ts, c->timestamp) != 1) {
		ipc_set_detail("content: an integer is out of range");
		goto out;
	}
	if (ASN1_STRING_length(c->request_id) != IPC_ID_LEN) {
		ipc_set_detail("content: request id of %d bytes, expected %d",
		    ASN1_STRING_length(c->request_id), IPC_ID_LEN);
		goto out;
	}
	if (version != IPC_VERSION) {
		ipc_set_detail("content: version %lld, this side speaks %d",
		    (long long)version, IPC_VERSION);
		ret = IPC_ERR_VERSION;
		goto out;
	}
	memcpy(msg->im_id, ASN1_STRING_get0_data(c->request_id), IPC_ID_LEN);
	msg->im_timestamp_ms = ts;
	msg->im_type = type >= 1 && type <= IPC_TYPE_MAX ? (int)type : 0;
	if ((msg->im_bodylen = (size_t)ASN1_STRING_length(c->body)) > 0 &&
	    (msg->im_body = OPENSSL_memdup(ASN1_STRING_get0_data(c->body),
	    msg->im_bodylen)) == NULL) {
		ret = IPC_ERR_NOMEM;
		goto out;
	}
	if (ipc_type_item((int)msg->im_type) == NULL) {
		ipc_set_detail("content: unknown type %lld", (long long)type);
		ret = IPC_ERR_TYPE;
		goto out;
	}
	if (ts < now_ms - window_ms || ts > now_ms + window_ms) {
		ipc_set_detail("%s: timestamp %lld ms from now, window %lld",
		    ipc_type_name(msg->im_type), (long long)(ts - now_ms),
		    (long long)window_ms);
		ret = IPC_ERR_STALE;
		goto out;
	}
	ret = 0;
 out:
	if (ret != 0 && ret != IPC_ERR_STALE && ret != IPC_ERR_TYPE)
		ipc_message_clear(msg);
	IPC_CONTENT_free(c);
	IPC_ENVELOPE_free(e);
	OPENSSL_cleanse(mac, sizeof(mac));
	return ret;
}
