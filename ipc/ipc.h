/*
 * hsmca IPC: the messages between hsmca-policyd and hsmca-signerd.
 *
 * Every message is declared once, in ipc/schema.c, as an ASN.1 template
 * that OpenSSL's encoder and decoder walk: no byte of a message is parsed
 * by hand.  A message on the wire is an Envelope:
 *
 *   Envelope ::= SEQUENCE {
 *       content  OCTET STRING,  -- DER of Content, exactly as MAC'd
 *       mac      OCTET STRING   -- HMAC-SHA256(key, content), 32 bytes
 *   }
 *   Content ::= SEQUENCE {
 *       version    INTEGER,     -- IPC_VERSION
 *       requestId  OCTET STRING,-- 16 random bytes
 *       timestamp  INTEGER,     -- milliseconds since the epoch
 *       type       INTEGER,     -- enum ipc_type
 *       body       OCTET STRING -- DER of the type's body
 *   }
 *
 * The MAC is checked, in constant time, before Content is decoded.  Every
 * decode is strict: the input must be exactly one DER encoding (it must
 * re-encode to the same bytes), with nothing left over.
 *
 * Functions return 0 or a negative IPC_ERR_* code; ipc_error_detail()
 * names what was wrong for the log.
 */
#ifndef HSMCA_IPC_H
#define HSMCA_IPC_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/asn1.h>
#include <openssl/x509v3.h>

/* Changes whenever the set of messages or any message changes. */
#define IPC_VERSION		1
#define IPC_ID_LEN		16
#define IPC_MAC_LEN		32
#define IPC_KEY_LEN		32
/* The largest message either side accepts; also NN_RCVMAXSIZE. */
#define IPC_MAX_MESSAGE		(64 * 1024)

enum ipc_type {
	IPC_T_ISSUE_CERT_REQ = 1,
	IPC_T_ISSUE_CERT_RESP = 2,
	IPC_T_SIGN_CRL_REQ = 3,
	IPC_T_SIGN_CRL_RESP = 4,
	IPC_T_CA_INFO_REQ = 5,
	IPC_T_CA_INFO_RESP = 6,
	IPC_T_HEALTH_REQ = 7,
	IPC_T_HEALTH_RESP = 8,
	IPC_T_ERROR_RESP = 9,
};
#define IPC_TYPE_MAX		IPC_T_ERROR_RESP

/* Typed refusals the signer answers with (IPC_T_ERROR_RESP.code). */
enum ipc_refusal {
	IPC_REFUSE_BAD_MESSAGE = 1,	/* malformed, unknown type, wrong version */
	IPC_REFUSE_BAD_MAC = 2,
	IPC_REFUSE_STALE = 3,		/* timestamp outside the window */
	IPC_REFUSE_UNKNOWN_KEY = 4,
	IPC_REFUSE_PROFILE = 5,		/* profile unknown or not allowed for the key */
	IPC_REFUSE_VALIDITY = 6,
	IPC_REFUSE_KEY_ALGORITHM = 7,	/* subject key algorithm or size */
	IPC_REFUSE_NAME = 8,		/* subject or SAN outside the key's limits */
	IPC_REFUSE_OBJECT_KIND = 9,	/* e.g. a CRL from a key that may not sign one */
	IPC_REFUSE_USAGE_LIMIT = 10,
	IPC_REFUSE_UNAVAILABLE = 11,	/* token down */
	IPC_REFUSE_BUSY = 12,		/* queue full */
	IPC_REFUSE_AUDIT = 13,		/* audit log not writable: nothing signed */
	IPC_REFUSE_LINT = 14,		/* the built object failed its own checks */
	IPC_REFUSE_INTERNAL = 15,
};
#define IPC_REFUSE_MAX		IPC_REFUSE_INTERNAL

enum ipc_error {
	IPC_OK = 0,
	IPC_ERR_INVALID = -1,		/* bad argument */
	IPC_ERR_NOMEM = -2,
	IPC_ERR_TOO_LARGE = -3,
	IPC_ERR_DECODE = -4,		/* not exactly one DER encoding of the type */
	IPC_ERR_MAC = -5,
	IPC_ERR_VERSION = -6,
	IPC_ERR_STALE = -7,
	IPC_ERR_TYPE = -8,		/* unknown type */
	IPC_ERR_KEY_FILE = -9,
};

/* --- the schema (schema.c): one C type per ASN.1 type ------------------ */

typedef struct ipc_content_st {
	ASN1_INTEGER		*version;
	ASN1_OCTET_STRING	*request_id;
	ASN1_INTEGER		*timestamp;
	ASN1_INTEGER		*type;
	ASN1_OCTET_STRING	*body;
} IPC_CONTENT;

typedef struct ipc_envelope_st {
	ASN1_OCTET_STRING	*content;
	ASN1_OCTET_STRING	*mac;
} IPC_ENVELOPE;

/* Issue a certificate: everything the signer needs to build it from its
 * own profile, and what it writes to the audit log. */
typedef struct ipc_issue_req_st {
	ASN1_UTF8STRING		*key_name;
	ASN1_UTF8STRING		*profile;
	ASN1_OCTET_STRING	*spki;		/* SubjectPublicKeyInfo, DER */
	X509_NAME		*subject;	/* may be empty */
	GENERAL_NAMES		*sans;
	ASN1_INTEGER		*not_before;	/* seconds since the epoch */
	ASN1_INTEGER		*not_after;
	ASN1_UTF8STRING		*requester;
	ASN1_UTF8STRING		*rule;
} IPC_ISSUE_REQ;

typedef struct ipc_issue_resp_st {
	ASN1_INTEGER		*serial;
	ASN1_OCTET_STRING	*certificate;	/* DER */
	ASN1_INTEGER		*audit_seq;	/* the audit record of the signature */
} IPC_ISSUE_RESP;

typedef struct ipc_revoked_st {
	ASN1_INTEGER		*serial;
	ASN1_INTEGER		*revoked_at;	/* seconds since the epoch */
	ASN1_ENUMERATED		*reason;	/* RFC 5280 CRLReason */
} IPC_REVOKED;
DEFINE_STACK_OF(IPC_REVOKED)

typedef struct ipc_crl_req_st {
	ASN1_UTF8STRING		*key_name;
	STACK_OF(IPC_REVOKED)	*revoked;
	ASN1_INTEGER		*this_update;
	ASN1_INTEGER		*next_update;
	ASN1_INTEGER		*crl_number;
	ASN1_UTF8STRING		*requester;
} IPC_CRL_REQ;

typedef struct ipc_crl_resp_st {
	ASN1_OCTET_STRING	*crl;		/* DER */
	ASN1_INTEGER		*audit_seq;
} IPC_CRL_RESP;

typedef struct ipc_ca_info_req_st {
	ASN1_UTF8STRING		*key_name;	/* empty: every key */
} IPC_CA_INFO_REQ;

typedef struct ipc_key_info_st {
	ASN1_UTF8STRING		*name;
	ASN1_UTF8STRING		*algorithm;
	ASN1_OCTET_STRING	*chain;		/* DER certificates, issuing first */
	STACK_OF(ASN1_UTF8STRING) *profiles;
	ASN1_INTEGER		*usage;		/* signatures so far */
	ASN1_INTEGER		*usage_limit;	/* 0: none */
} IPC_KEY_INFO;
DEFINE_STACK_OF(IPC_KEY_INFO)

typedef struct ipc_ca_info_resp_st {
	STACK_OF(IPC_KEY_INFO)	*keys;
} IPC_CA_INFO_RESP;

typedef struct ipc_health_req_st {
	ASN1_INTEGER		*nonce;
} IPC_HEALTH_REQ;

typedef struct ipc_health_resp_st {
	ASN1_INTEGER		*nonce;
	ASN1_INTEGER		*token_up;	/* 1 when the token answers */
	ASN1_INTEGER		*audit_seq;	/* last audit record */
} IPC_HEALTH_RESP;

typedef struct ipc_error_resp_st {
	ASN1_INTEGER		*code;		/* enum ipc_refusal */
	ASN1_UTF8STRING		*reason;	/* for a person */
} IPC_ERROR_RESP;

DECLARE_ASN1_FUNCTIONS(IPC_CONTENT)
DECLARE_ASN1_FUNCTIONS(IPC_ENVELOPE)
DECLARE_ASN1_FUNCTIONS(IPC_ISSUE_REQ)
DECLARE_ASN1_FUNCTIONS(IPC_ISSUE_RESP)
DECLARE_ASN1_FUNCTIONS(IPC_REVOKED)
DECLARE_ASN1_FUNCTIONS(IPC_CRL_REQ)
DECLARE_ASN1_FUNCTIONS(IPC_CRL_RESP)
DECLARE_ASN1_FUNCTIONS(IPC_CA_INFO_REQ)
DECLARE_ASN1_FUNCTIONS(IPC_KEY_INFO)
DECLARE_ASN1_FUNCTIONS(IPC_CA_INFO_RESP)
DECLARE_ASN1_FUNCTIONS(IPC_HEALTH_REQ)
DECLARE_ASN1_FUNCTIONS(IPC_HEALTH_RESP)
DECLARE_ASN1_FUNCTIONS(IPC_ERROR_RESP)

/* schema.c */
const char	*ipc_type_name(int type);
const char	*ipc_refusal_name(int code);
/* The body type of a message type, for generic encode and decode. */
const ASN1_ITEM	*ipc_type_item(int type);

/* codec.c */
const char	*ipc_strerror(int err);
const char	*ipc_error_detail(void);
/* Decodes exactly one DER encoding of it from buf; anything else (BER,
 * trailing bytes, a short buffer) is IPC_ERR_DECODE naming what.  Returns
 * 0 and *out, to be freed with ASN1_item_free. */
int		 ipc_decode(const ASN1_ITEM *it, const uint8_t *buf, size_t len,
		    const char *what, void **out);
/* DER-encodes a value of it.  Returns 0 and *out (OPENSSL_free). */
int		 ipc_encode(const ASN1_ITEM *it, const void *value, uint8_t **out,
		    size_t *outlen);

/* envelope.c */
struct ipc_message {
	int		 im_type;
	uint8_t		 im_id[IPC_ID_LEN];
	int64_t		 im_timestamp_ms;
	uint8_t		*im_body;	/* DER of the body (OPENSSL_free) */
	size_t		 im_bodylen;
};

/* Reads the MAC key: a file of 64 hex digits (and a newline), held to the
 * PIN file rules (owner, mode 0600).  Returns 0 or IPC_ERR_KEY_FILE. */
int		 ipc_key_load(const char *path, uint8_t key[IPC_KEY_LEN]);
/* Seals a body: Content with the given id and time, MAC'd with key.
 * Returns 0 and *out (OPENSSL_free). */
int		 ipc_seal(const uint8_t key[IPC_KEY_LEN], int type,
		    const uint8_t id[IPC_ID_LEN], int64_t timestamp_ms,
		    const uint8_t *body, size_t bodylen, uint8_t **out,
		    size_t *outlen);
/* Opens a message: size, Envelope, MAC (constant time), Content, version,
 * known type, and a timestamp within window_ms of now_ms.  On
 * IPC_ERR_STALE and IPC_ERR_TYPE, *msg is still filled in (the id lets the
 * refusal be answered and audited).  Returns 0 or an IPC_ERR_* code. */
int		 ipc_open(const uint8_t key[IPC_KEY_LEN], const uint8_t *buf,
		    size_t len, int64_t now_ms, int64_t window_ms,
		    struct ipc_message *msg);
void		 ipc_message_clear(struct ipc_message *msg);
int64_t		 ipc_now_ms(void);

#endif
