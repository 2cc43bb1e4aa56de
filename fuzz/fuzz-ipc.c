/*
 * libFuzzer target for everything the signer decodes from its socket:
 * ipc_open on the raw bytes (with a fixed key and any time accepted), then,
 * for each message type, the body decoder on the same bytes, so the body
 * decoders are reached without having to forge a MAC.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include <openssl/asn1.h>

#include "ipc.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[IPC_KEY_LEN] = {
		0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
		16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31 };
	struct ipc_message m;
	void *v;
	int type;

	if (ipc_open(key, data, size, 1700000000000LL, INT64_MAX / 4, &m) == 0 &&
	    ipc_decode(ipc_type_item(m.im_type), m.im_body, m.im_bodylen,
	    "body", &v) == 0)
		ASN1_item_free(v, ipc_type_item(m.im_type));
	ipc_message_clear(&m);
	for (type = 1; type <= IPC_TYPE_MAX; type++) {
		if (ipc_decode(ipc_type_item(type), data, size, "body",
		    &v) == 0)
			ASN1_item_free(v, ipc_type_item(type));
	}
	return 0;
}
