/*
 * Strict encode and decode over the schema's templates, and error names.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/asn1t.h>
#include <openssl/err.h>

#include "ipc.h"

static __thread char ipc_detail[256];

void	ipc_set_detail(const char *, ...) __attribute__((format(printf, 1, 2)));

void
ipc_set_detail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ipc_detail, sizeof(ipc_detail), fmt, ap);
	va_end(ap);
}

const char *
ipc_error_detail(void)
{
	return ipc_detail;
}

const char *
ipc_strerror(int err)
{
	switch (err) {
	case IPC_OK:		return "success";
	case IPC_ERR_INVALID:	return "invalid argument";
	case IPC_ERR_NOMEM:	return "out of memory";
	case IPC_ERR_TOO_LARGE:	return "message too large";
	case IPC_ERR_DECODE:	return "malformed message";
	case IPC_ERR_MAC:	return "MAC does not verify";
	case IPC_ERR_VERSION:	return "unsupported protocol version";
	case IPC_ERR_STALE:	return "timestamp outside the window";
	case IPC_ERR_TYPE:	return "unknown message type";
	case IPC_ERR_KEY_FILE:	return "MAC key file refused";
	}
	return "unknown error";
}

int
ipc_encode(const ASN1_ITEM *it, const void *value, uint8_t **out,
    size_t *outlen)
{
	unsigned char *der = NULL;
	int len;

	*out = NULL;
	*outlen = 0;
	if ((len = ASN1_item_i2d((const ASN1_VALUE *)value, &der, it)) <= 0) {
		ipc_set_detail("%s: cannot be encoded (a required field is "
		    "missing)", it->sname);
		ERR_clear_error();
		return IPC_ERR_INVALID;
	}
	if (len > IPC_MAX_MESSAGE) {
		OPENSSL_free(der);
		ipc_set_detail("%s: %d bytes, more than %d", it->sname, len,
		    IPC_MAX_MESSAGE);
		return IPC_ERR_TOO_LARGE;
	}
	*out = der;
	*outlen = (size_t)len;
	return 0;
}

/*
 * DER only: OpenSSL's decoder also takes some BER (indefinite lengths,
 * long-form short lengths), so the value must re-encode to the very bytes
 * it came from.
 */
int
ipc_decode(const ASN1_ITEM *it, const uint8_t *buf, size_t len,
    const char *what, void **out)
{
	const unsigned char *p = buf;
	ASN1_VALUE *v;
	unsigned char *der = NULL;
	int dlen, ret = IPC_ERR_DECODE;

	*out = NULL;
	if (len == 0 || len > IPC_MAX_MESSAGE) {
		ipc_set_detail("%s: %zu bytes", what, len);
		return len == 0 ? IPC_ERR_DECODE : IPC_ERR_TOO_LARGE;
	}
	if ((v = ASN1_item_d2i(NULL, &p, (long)len, it)) == NULL) {
		ipc_set_detail("%s: not a valid %s", what, it->sname);
		goto out;
	}
	if (p != buf + len) {
		ipc_set_detail("%s: %zu bytes left over after the %s", what,
		    (size_t)(buf + len - p), it->sname);
		goto out;
	}
	if ((dlen = ASN1_item_i2d(v, &der, it)) <= 0 || (size_t)dlen != len ||
	    memcmp(der, buf, len) != 0) {
		ipc_set_detail("%s: %s is not in DER", what, it->sname);
		goto out;
	}
	*out = v;
	v = NULL;
	ret = 0;
 out:
	ERR_clear_error();
	OPENSSL_free(der);
	ASN1_item_free(v, it);
	return ret;
}
