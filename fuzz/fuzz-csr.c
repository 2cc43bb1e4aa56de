/*
 * libFuzzer target for csr_parse.  Each input is tried twice: as the PEM
 * text itself (the armour and base64 checks), and as the DER inside a
 * well-formed PEM block (so that mutations reach the DER, key, signature
 * and name checks instead of breaking the base64).  Whatever the answer,
 * the contract must hold: on success a key, one algorithm bit and names
 * that are printable ASCII; on failure a code, a message and nothing
 * kept; never an OpenSSL error left in the queue.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "csr.h"

#define FUZZ_MAX_DER	(16 * 1024)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
fuzz_check_names(char **names, size_t n)
{
	size_t i, j, len;

	if (n > CSR_MAX_NAMES || (n > 0 && names == NULL))
		abort();
	for (i = 0; i < n; i++) {
		len = strlen(names[i]);
		if (len == 0 || len > CSR_MAX_NAME)
			abort();
		for (j = 0; j < len; j++)
			if (names[i][j] < 0x21 || names[i][j] > 0x7e)
				abort();
	}
}

static void
fuzz_parse(const char *pem, size_t len)
{
	static const struct csr_info zero;
	struct csr_info info;
	struct csr_error err;
	unsigned int alg;

	if (csr_parse(pem, len, &info, &err) == 0) {
		alg = info.alg;
		if (info.spki == NULL || info.spkilen == 0 || alg == 0 ||
		    (alg & (alg - 1)) != 0)
			abort();
		fuzz_check_names(info.dns, info.ndns);
		fuzz_check_names(info.uris, info.nuris);
		if (info.cn != NULL && strlen(info.cn) > 64)
			abort();
	} else {
		if (err.code == NULL || err.message[0] == '\0' ||
		    memchr(err.message, '\0', sizeof(err.message)) == NULL ||
		    memcmp(&info, &zero, sizeof(info)) != 0)
			abort();
	}
	if (ERR_peek_error() != 0)
		abort();
	csr_info_clear(&info);
	csr_info_clear(&info);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char begin[] = "-----BEGIN CERTIFICATE REQUEST-----\n";
	static const char end[] = "-----END CERTIFICATE REQUEST-----\n";
	static char pem[sizeof(begin) + sizeof(end) +
	    4 * (FUZZ_MAX_DER / 48 + 1) * 65];
	size_t off, n, len;

	fuzz_parse((const char *)data, size);
	if (size == 0 || size > FUZZ_MAX_DER)
		return 0;
	len = strlen(begin);
	memcpy(pem, begin, len);
	for (off = 0; off < size; off += n) {
		n = size - off < 48 ? size - off : 48;
		len += EVP_EncodeBlock((unsigned char *)pem + len, data + off,
		    (int)n);
		pem[len++] = '\n';
	}
	memcpy(pem + len, end, strlen(end));
	len += strlen(end);
	fuzz_parse(pem, len);
	return 0;
}
