/*
 * hsmca-signerd's answer to a request (DESIGN.md "What the signer does
 * with a request"): authenticate, check against the key's profile, build,
 * lint, journal the intent, sign, verify, record the outcome, answer.
 *
 * Requests are dispatched through a table of permitted types; anything
 * else is refused before a handler sees it.  Requests that use a CA key
 * are idempotent (invariant 6): a repeated request id gets the answer the
 * first one got, from memory, or after a restart from the audit log, and
 * never a second signature.  An id is remembered for twice the time
 * window: a repeat older than that is refused as stale anyway.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "audit.h"
#include "log.h"
#include "signerd.h"

#define IDEM_BUCKETS		65536
#define IDEM_MAX		(1u << 20)	/* remembered answers */
#define IDEM_WAIT_MS		30000		/* a repeat waits this long for the first */
#define SERIAL_BUCKETS		65536

struct idem_entry {
	struct idem_entry	*ie_next;
	uint8_t			 ie_id[IPC_ID_LEN];
	uint8_t			 ie_request_sha256[32];
	int64_t			 ie_expires_ms;
	int			 ie_done;
	int			 ie_type;	/* answer type */
	uint8_t			*ie_body;	/* answer body DER (OPENSSL_free) */
	size_t			 ie_bodylen;
};

struct serial_entry {
	struct serial_entry	*se_next;
	uint8_t			 se_len;
	uint8_t			 se_bytes[20];
};

struct request_state {
	pthread_mutex_t		 rs_lock;
	pthread_cond_t		 rs_done;
	struct idem_entry	*rs_idem[IDEM_BUCKETS];
	size_t			 rs_nidem;
	int64_t			 rs_next_sweep_ms;
	struct serial_entry	*rs_serials[SERIAL_BUCKETS];
	size_t			 rs_nserials;
	int64_t			 rs_window_ms;
};

/* --- small helpers ----------------------------------------------------- */

static int
unhex(const char *in, uint8_t *out, size_t outlen)
{
	size_t i;
	int hi, lo;

	if (strlen(in) != 2 * outlen)
		return -1;
	for (i = 0; i < outlen; i++) {
		hi = OPENSSL_hexchar2int((unsigned char)in[2 * i]);
		lo = OPENSSL_hexchar2int((unsigned char)in[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* Serial (or CRL number) as lower-case hex of its magnitude. */
static char *
serial_hex(const ASN1_INTEGER *a)
{
	const unsigned char *d = ASN1_STRING_get0_data(a);
	int len = ASN1_STRING_length(a);
	char *out;

	if (len <= 0 || len > 20 || (out = malloc((size_t)len * 2 + 1)) == NULL)
		return NULL;
	audit_hex(d, (size_t)len, out);
	return out;
}

static char *
base64(const uint8_t *in, size_t len)
{
	char *out;

	if (len > 1024 * 1024 ||
	    (out = malloc(4 * ((len + 2) / 3) + 1)) == NULL)
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

/* A base64 field of a record, decoded into new memory (free). */
static uint8_t *
unbase64(const char *in, size_t *outlen)
{
	size_t len = strlen(in);
	uint8_t *out;
	int n;

	if (len < 4 || len > 2 * 1024 * 1024 ||
	    (out = malloc(len / 4 * 3)) == NULL)
		return NULL;
	if ((n = audit_base64_decode(in, out, len / 4 * 3)) < 0) {
		free(out);
		return NULL;
	}
	*outlen = (size_t)n;
	return out;
}

static unsigned int
bucket(const uint8_t *b, size_t len, unsigned int nbuckets)
{
	uint32_t h = 2166136261u;
	size_t i;

	/* The ids and serials are random: FNV-1a spreads them enough. */
	for (i = 0; i < len; i++)
		h = (h ^ b[i]) * 16777619u;
	return h % nbuckets;
}

/* --- serials: never signed twice (invariant 5) ------------------------- */

/* Adds a serial; returns 1 when it was new, 0 when already used, -1. */
static int
serial_add_locked(struct request_state *rs, const uint8_t *b, size_t len)
{
	struct serial_entry *e;
	unsigned int h;

	if (len == 0 || len > sizeof(e->se_bytes))
		return -1;
	h = bucket(b, len, SERIAL_BUCKETS);
	for (e = rs->rs_serials[h]; e != NULL; e = e->se_next)
		if (e->se_len == len && memcmp(e->se_bytes, b, len) == 0)
			return 0;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return -1;
	e->se_len = (uint8_t)len;
	memcpy(e->se_bytes, b, len);
	e->se_next = rs->rs_serials[h];
	rs->rs_serials[h] = e;
	rs->rs_nserials++;
	return 1;
}

/* build_certificate's question: takes the serial if it is fresh. */
static int
serial_claim(void *arg, const ASN1_INTEGER *serial)
{
	struct request_state *rs = arg;
	int ret;

	pthread_mutex_lock(&rs->rs_lock);
	ret = serial_add_locked(rs, ASN1_STRING_get0_data(serial),
	    (size_t)ASN1_STRING_length(serial));
	pthread_mutex_unlock(&rs->rs_lock);
	return ret == 1;
}

/* --- idempotency ------------------------------------------------------- */

static void
idem_free(struct idem_entry *e)
{
	OPENSSL_free(e->ie_body);
	free(e);
}

static void
idem_sweep_locked(struct request_state *rs, int64_t now_ms)
{
	struct idem_entry **pp, *e;
	unsigned int i;

	for (i = 0; i < IDEM_BUCKETS; i++) {
		pp = &rs->rs_idem[i];
		while ((e = *pp) != NULL) {
			if (e->ie_done && e->ie_expires_ms < now_ms) {
				*pp = e->ie_next;
				idem_free(e);
				rs->rs_nidem--;
			} else
				pp = &e->ie_next;
		}
	}
	rs->rs_next_sweep_ms = now_ms + rs->rs_window_ms;
}

static struct idem_entry *
idem_find_locked(struct request_state *rs, const uint8_t *id)
{
	struct idem_entry *e;

	for (e = rs->rs_idem[bucket(id, IPC_ID_LEN, IDEM_BUCKETS)]; e != NULL;
	    e = e->ie_next)
		if (memcmp(e->ie_id, id, IPC_ID_LEN) == 0)
			return e;
	return NULL;
}

static struct idem_entry *
idem_insert_locked(struct request_state *rs, const uint8_t *id,
    const uint8_t *request_sha256, int64_t now_ms)
{
	struct idem_entry *e;
	unsigned int h;

	if (now_ms >= rs->rs_next_sweep_ms || rs->rs_nidem >= IDEM_MAX)
		idem_sweep_locked(rs, now_ms);
	if (rs->rs_nidem >= IDEM_MAX || (e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	memcpy(e->ie_id, id, IPC_ID_LEN);
	memcpy(e->ie_request_sha256, request_sha256, 32);
	e->ie_expires_ms = now_ms + 2 * rs->rs_window_ms + 5000;
	h = bucket(id, IPC_ID_LEN, IDEM_BUCKETS);
	e->ie_next = rs->rs_idem[h];
	rs->rs_idem[h] = e;
	rs->rs_nidem++;
	return e;
}

/* --- answers ----------------------------------------------------------- */

static int
seal_answer(struct signerd *sd, int type, const uint8_t *id,
    const uint8_t *body, size_t bodylen, uint8_t **resp, size_t *resplen)
{
	uint8_t *out = NULL;
	size_t outlen;

	if (ipc_seal(sd->sd_mac_key, type, id, ipc_now_ms(), body, bodylen,
	    &out, &outlen) != 0) {
		log_warnx("cannot seal an answer: %s", ipc_error_detail());
		return -1;
	}
	/* The transport frees with free(). */
	if ((*resp = malloc(outlen)) == NULL) {
		OPENSSL_free(out);
		return -1;
	}
	memcpy(*resp, out, outlen);
	*resplen = outlen;
	OPENSSL_free(out);
	return 0;
}

static int
error_body(int code, const char *reason, uint8_t **body, size_t *bodylen)
{
	IPC_ERROR_RESP *e;
	int ret = -1;

	if ((e = IPC_ERROR_RESP_new()) == NULL)
		return -1;
	if (ASN1_INTEGER_set(e->code, code) == 1 &&
	    ASN1_STRING_set(e->reason, reason, -1) == 1 &&
	    ipc_encode(IPC_ERROR_RESP_it(), e, body, bodylen) == 0)
		ret = 0;
	IPC_ERROR_RESP_free(e);
	return ret;
}

static int
answer_error(struct signerd *sd, const uint8_t *id, int code,
    const char *reason, uint8_t **resp, size_t *resplen)
{
	uint8_t *body = NULL;
	size_t bodylen;
	int ret;

	if (error_body(code, reason, &body, &bodylen) != 0)
		return -1;
	ret = seal_answer(sd, IPC_T_ERROR_RESP, id, body, bodylen, resp,
	    resplen);
	OPENSSL_free(body);
	return ret;
}

/* --- audit records ----------------------------------------------------- */

static void
iso_time(int64_t t, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
}

static json_t *
record_new(const char *type, const struct ipc_message *msg,
    const uint8_t *request_sha256)
{
	char idhex[2 * IPC_ID_LEN + 1], shahex[65];
	json_t *r;

	if ((r = json_object()) == NULL)
		return NULL;
	audit_hex(msg->im_id, IPC_ID_LEN, idhex);
	if (json_object_set_new(r, "type", json_string(type)) != 0 ||
	    json_object_set_new(r, "request_id", json_string(idhex)) != 0) {
		json_decref(r);
		return NULL;
	}
	if (request_sha256 != NULL) {
		audit_hex(request_sha256, 32, shahex);
		if (json_object_set_new(r, "request_sha256",
		    json_string(shahex)) != 0) {
			json_decref(r);
			return NULL;
		}
	}
	return r;
}

/* Sets a string field from an ASN1 string that may hold anything: jansson
 * takes only valid UTF-8, so other bytes are refused rather than stored. */
static int
set_asn1_text(json_t *r, const char *field, const ASN1_STRING *s)
{
	json_t *v;

	if (s == NULL)
		return json_object_set_new(r, field, json_string(""));
	v = json_stringn((const char *)ASN1_STRING_get0_data(s),
	    (size_t)ASN1_STRING_length(s));
	if (v == NULL)
		v = json_string("(not UTF-8)");
	return json_object_set_new(r, field, v);
}

static int64_t
elapsed_us(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(now.tv_sec - start->tv_sec) * 1000000 +
	    (now.tv_nsec - start->tv_nsec) / 1000;
}

/* Appends and waits for stable storage; any failure is -1 (nothing may
 * be signed or answered on a record that is not durable). */
static int
record_append(struct signerd *sd, json_t *r, uint64_t *seq)
{
	uint64_t s = 0;
	int ret;

	ret = audit_append(sd->sd_audit, r, &s);
	if (ret != 0)
		log_warnx("audit log: %s", audit_error_detail());
	if (seq != NULL)
		*seq = s;
	return ret;
}

/* --- handlers ---------------------------------------------------------- */

struct request_ctx {
	struct signerd		*rc_sd;
	const struct ipc_message *rc_msg;
	uint8_t			 rc_request_sha256[32];
	struct timespec		 rc_start;
	/* The answer. */
	int			 rc_type;
	uint8_t			*rc_body;
	size_t			 rc_bodylen;
};

/*
 * Records a refusal in the audit log and makes it the answer.  When the
 * refusal cannot be recorded, the answer says so (audit) instead.
 */
static int
refuse(struct request_ctx *rc, const char *kind, const char *key,
    const char *profile, const ASN1_STRING *requester, const ASN1_STRING *rule,
    int code, const char *reason)
{
	json_t *r;
	int ret = -1;

	log_info("refused %s %s: %s: %s", kind, key != NULL ? key : "-",
	    ipc_refusal_name(code), reason);
	if ((r = record_new("refusal", rc->rc_msg,
	    rc->rc_request_sha256)) == NULL)
		goto out;
	if (json_object_set_new(r, "kind", json_string(kind)) != 0 ||
	    (key != NULL && json_object_set_new(r, "key",
	    json_string(key)) != 0) ||
	    (profile != NULL && json_object_set_new(r, "profile",
	    json_string(profile)) != 0) ||
	    (requester != NULL && set_asn1_text(r, "requester",
	    requester) != 0) ||
	    (rule != NULL && set_asn1_text(r, "rule", rule) != 0) ||
	    json_object_set_new(r, "outcome", json_string("refused")) != 0 ||
	    json_object_set_new(r, "code",
	    json_string(ipc_refusal_name(code))) != 0 ||
	    json_object_set_new(r, "reason", json_string(reason)) != 0 ||
	    json_object_set_new(r, "latency_us",
	    json_integer(elapsed_us(&rc->rc_start))) != 0)
		goto out;
	if (record_append(rc->rc_sd, r, NULL) != 0) {
		code = IPC_REFUSE_AUDIT;
		reason = "the audit log cannot be written";
	}
	ret = 0;
 out:
	json_decref(r);
	if (ret != 0) {
		code = IPC_REFUSE_AUDIT;
		reason = "the refusal cannot be recorded";
	}
	rc->rc_type = IPC_T_ERROR_RESP;
	return error_body(code, reason, &rc->rc_body, &rc->rc_bodylen);
}

static int
add_sans(json_t *r, const GENERAL_NAMES *sans)
{
	json_t *a;
	char *t;
	int i;

	if ((a = json_array()) == NULL)
		return -1;
	for (i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
		if ((t = build_general_name_text(
		    sk_GENERAL_NAME_value(sans, i))) == NULL)
			continue;
		json_array_append_new(a, json_string(t));
		free(t);
	}
	return json_object_set_new(r, "sans", a);
}

/* Reserves one use of the key; 0, or -1 when its limit is reached. */
static int
usage_reserve(struct signer_key *key)
{
	int ret = 0;

	pthread_mutex_lock(&key->sk_usage_lock);
	if (key->sk_usage_limit != 0 && key->sk_usage >= key->sk_usage_limit)
		ret = -1;
	else
		key->sk_usage++;
	pthread_mutex_unlock(&key->sk_usage_lock);
	return ret;
}

/*
 * The common path of every signature: intent on stable storage, sign,
 * verify, outcome on stable storage.  The caller has built tbs.
 */
static int
sign_and_record(struct request_ctx *rc, struct signer_key *key,
    struct build_tbs *tbs, const char *kind, const ASN1_STRING *requester,
    const ASN1_STRING *rule, const GENERAL_NAMES *sans, int64_t not_before,
    int64_t not_after, struct build_result *res, uint64_t *seq)
{
	struct build_refusal why;
	json_t *intent = NULL, *r = NULL;
	char shahex[65], *serial = NULL, *obj = NULL, tb[32];
	uint64_t intent_seq;
	const char *profile = build_tbs_profile(tbs);
	int ret = -1;

	if (token_get_state(rc->rc_sd->sd_token) == TOKEN_STATE_PIN_FAILED)
		return refuse(rc, kind, key->sk_name, profile, requester, rule,
		    IPC_REFUSE_UNAVAILABLE, "token login was refused; the "
		    "signer needs an operator");
	if (usage_reserve(key) != 0)
		return refuse(rc, kind, key->sk_name, profile, requester, rule,
		    IPC_REFUSE_USAGE_LIMIT, "the key's usage limit is reached");
	audit_hex(build_tbs_sha256(tbs), 32, shahex);
	if ((serial = serial_hex(build_tbs_serial(tbs))) == NULL ||
	    (intent = record_new("intent", rc->rc_msg,
	    rc->rc_request_sha256)) == NULL ||
	    json_object_set_new(intent, "key", json_string(key->sk_name)) ||
	    json_object_set_new(intent, "kind", json_string(kind)) ||
	    json_object_set_new(intent, "profile", json_string(profile)) ||
	    json_object_set_new(intent, "serial", json_string(serial)) ||
	    json_object_set_new(intent, "tbs_sha256", json_string(shahex)) ||
	    set_asn1_text(intent, "requester", requester) ||
	    set_asn1_text(intent, "rule", rule))
		goto internal;
	if (record_append(rc->rc_sd, intent, &intent_seq) != 0) {
		/* Nothing is signed without its intent on disk (invariant 7). */
		rc->rc_type = IPC_T_ERROR_RESP;
		ret = error_body(IPC_REFUSE_AUDIT, "the audit log cannot be "
		    "written: nothing was signed", &rc->rc_body,
		    &rc->rc_bodylen);
		goto out;
	}
	if (build_sign(tbs, res, &why) != 0) {
		ret = refuse(rc, kind, key->sk_name, profile, requester, rule,
		    why.code, why.reason);
		goto out;
	}
	if ((obj = base64(res->br_der, res->br_derlen)) == NULL ||
	    (r = record_new(strcmp(kind, "crl") == 0 ? "crl" : "issue",
	    rc->rc_msg, rc->rc_request_sha256)) == NULL ||
	    json_object_set_new(r, "key", json_string(key->sk_name)) ||
	    json_object_set_new(r, "kind", json_string(kind)) ||
	    json_object_set_new(r, "profile", json_string(profile)) ||
	    json_object_set_new(r, "serial", json_string(serial)) ||
	    json_object_set_new(r, "subject", json_string(
	    res->br_subject != NULL ? res->br_subject : "")) ||
	    add_sans(r, sans) ||
	    (iso_time(not_before, tb, sizeof(tb)),
	    json_object_set_new(r, "not_before", json_string(tb))) ||
	    (iso_time(not_after, tb, sizeof(tb)),
	    json_object_set_new(r, "not_after", json_string(tb))) ||
	    json_object_set_new(r, "tbs_sha256", json_string(shahex)) ||
	    json_object_set_new(r, "object", json_string(obj)) ||
	    set_asn1_text(r, "requester", requester) ||
	    set_asn1_text(r, "rule", rule) ||
	    json_object_set_new(r, "outcome", json_string("signed")) ||
	    json_object_set_new(r, "intent_seq", json_integer(
	    (json_int_t)intent_seq)) ||
	    json_object_set_new(r, "latency_us",
	    json_integer(elapsed_us(&rc->rc_start))))
		goto internal;
	if (record_append(rc->rc_sd, r, seq) != 0) {
		/* Signed but not recorded: the signature never leaves. */
		build_result_clear(res);
		rc->rc_type = IPC_T_ERROR_RESP;
		ret = error_body(IPC_REFUSE_AUDIT, "the audit log cannot be "
		    "written: the signature was discarded", &rc->rc_body,
		    &rc->rc_bodylen);
		goto out;
	}
	log_info("signed %s %s serial %s for %.*s", kind, key->sk_name, serial,
	    requester != NULL ? ASN1_STRING_length(requester) : 1,
	    requester != NULL ? (const char *)ASN1_STRING_get0_data(requester) :
	    "-");
	ret = 1;	/* signed: the caller builds the answer */
	goto out;
 internal:
	build_result_clear(res);
	ret = refuse(rc, kind, key->sk_name, profile, requester, rule,
	    IPC_REFUSE_INTERNAL, "out of memory recording the signature");
 out:
	json_decref(intent);
	json_decref(r);
	free(serial);
	free(obj);
	return ret;
}

static int
key_name(const ASN1_STRING *s, char *buf, size_t len)
{
	int n = ASN1_STRING_length(s);

	if (n <= 0 || (size_t)n >= len ||
	    memchr(ASN1_STRING_get0_data(s), '\0', (size_t)n) != NULL)
		return -1;
	memcpy(buf, ASN1_STRING_get0_data(s), (size_t)n);
	buf[n] = '\0';
	return 0;
}

static int
handle_issue(struct request_ctx *rc)
{
	struct signerd *sd = rc->rc_sd;
	IPC_ISSUE_REQ *req = NULL;
	IPC_ISSUE_RESP *resp = NULL;
	struct signer_key *key;
	struct build_tbs *tbs = NULL;
	struct build_refusal why;
	struct build_result res;
	char name[80], profile[16];
	int64_t now = time(NULL), nb = 0, na = 0;
	uint64_t seq = 0;
	int ret;

	memset(&res, 0, sizeof(res));
	if (ipc_decode(IPC_ISSUE_REQ_it(), rc->rc_msg->im_body,
	    rc->rc_msg->im_bodylen, "issue request", (void **)&req) != 0) {
		ret = refuse(rc, "certificate", NULL, NULL, NULL, NULL,
		    IPC_REFUSE_BAD_MESSAGE, ipc_error_detail());
		goto out;
	}
	if (key_name(req->key_name, name, sizeof(name)) != 0 ||
	    (key = config_find_key(sd->sd_conf, name)) == NULL) {
		ret = refuse(rc, "certificate", NULL, NULL, req->requester,
		    req->rule, IPC_REFUSE_UNKNOWN_KEY, "no such key is "
		    "configured");
		goto out;
	}
	if (key_name(req->profile, profile, sizeof(profile)) != 0)
		snprintf(profile, sizeof(profile), "?");
	if (build_certificate(key, req, now, sd->sd_conf->sc_backdate,
	    serial_claim, sd->sd_requests, &tbs, &why) != 0) {
		ret = refuse(rc, "certificate", key->sk_name, profile,
		    req->requester, req->rule, why.code, why.reason);
		goto out;
	}
	(void)ASN1_INTEGER_get_int64(&nb, req->not_before);
	(void)ASN1_INTEGER_get_int64(&na, req->not_after);
	ret = sign_and_record(rc, key, tbs, "certificate", req->requester,
	    req->rule, req->sans, nb, na, &res, &seq);
	if (ret != 1)
		goto out;
	ret = -1;
	if ((resp = IPC_ISSUE_RESP_new()) == NULL ||
	    ASN1_STRING_copy(resp->serial, res.br_serial) != 1 ||
	    ASN1_OCTET_STRING_set(resp->certificate, res.br_der,
	    (int)res.br_derlen) != 1 ||
	    ASN1_INTEGER_set_uint64(resp->audit_seq, seq) != 1 ||
	    ipc_encode(IPC_ISSUE_RESP_it(), resp, &rc->rc_body,
	    &rc->rc_bodylen) != 0)
		goto out;
	rc->rc_type = IPC_T_ISSUE_CERT_RESP;
	ret = 0;
 out:
	build_result_clear(&res);
	build_tbs_free(tbs);
	IPC_ISSUE_RESP_free(resp);
	IPC_ISSUE_REQ_free(req);
	return ret;
}

static int
handle_crl(struct request_ctx *rc)
{
	struct signerd *sd = rc->rc_sd;
	IPC_CRL_REQ *req = NULL;
	IPC_CRL_RESP *resp = NULL;
	struct signer_key *key;
	struct build_tbs *tbs = NULL;
	struct build_refusal why;
	struct build_result res;
	char name[80];
	int64_t now = time(NULL), tu = 0, nu = 0;
	uint64_t seq = 0;
	int ret;

	memset(&res, 0, sizeof(res));
	if (ipc_decode(IPC_CRL_REQ_it(), rc->rc_msg->im_body,
	    rc->rc_msg->im_bodylen, "CRL request", (void **)&req) != 0) {
		ret = refuse(rc, "crl", NULL, NULL, NULL, NULL,
		    IPC_REFUSE_BAD_MESSAGE, ipc_error_detail());
		goto out;
	}
	if (key_name(req->key_name, name, sizeof(name)) != 0 ||
	    (key = config_find_key(sd->sd_conf, name)) == NULL) {
		ret = refuse(rc, "crl", NULL, NULL, req->requester, NULL,
		    IPC_REFUSE_UNKNOWN_KEY, "no such key is configured");
		goto out;
	}
	if (build_crl(key, req, now, sd->sd_conf->sc_backdate, &tbs,
	    &why) != 0) {
		ret = refuse(rc, "crl", key->sk_name, "crl", req->requester,
		    NULL, why.code, why.reason);
		goto out;
	}
	(void)ASN1_INTEGER_get_int64(&tu, req->this_update);
	(void)ASN1_INTEGER_get_int64(&nu, req->next_update);
	ret = sign_and_record(rc, key, tbs, "crl", req->requester, NULL, NULL,
	    tu, nu, &res, &seq);
	if (ret != 1)
		goto out;
	ret = -1;
	if ((resp = IPC_CRL_RESP_new()) == NULL ||
	    ASN1_OCTET_STRING_set(resp->crl, res.br_der,
	    (int)res.br_derlen) != 1 ||
	    ASN1_INTEGER_set_uint64(resp->audit_seq, seq) != 1 ||
	    ipc_encode(IPC_CRL_RESP_it(), resp, &rc->rc_body,
	    &rc->rc_bodylen) != 0)
		goto out;
	rc->rc_type = IPC_T_SIGN_CRL_RESP;
	ret = 0;
 out:
	build_result_clear(&res);
	build_tbs_free(tbs);
	IPC_CRL_RESP_free(resp);
	IPC_CRL_REQ_free(req);
	return ret;
}

static int
append_der(ASN1_OCTET_STRING *os, X509 *x)
{
	uint8_t *der = NULL, *buf;
	int len, old = ASN1_STRING_length(os), ret = -1;

	if ((len = i2d_X509(x, &der)) <= 0)
		return -1;
	if ((buf = malloc((size_t)old + (size_t)len)) != NULL) {
		if (old > 0)	/* an empty string may have no buffer */
			memcpy(buf, ASN1_STRING_get0_data(os), (size_t)old);
		memcpy(buf + old, der, (size_t)len);
		if (ASN1_OCTET_STRING_set(os, buf, old + len) == 1)
			ret = 0;
		free(buf);
	}
	OPENSSL_free(der);
	return ret;
}

static int
handle_info(struct request_ctx *rc)
{
	struct signerd *sd = rc->rc_sd;
	IPC_CA_INFO_REQ *req = NULL;
	IPC_CA_INFO_RESP *resp = NULL;
	IPC_KEY_INFO *ki = NULL;
	ASN1_UTF8STRING *p = NULL;
	struct signer_key *key;
	char name[80];
	size_t i;
	int j, ret = -1, all;

	if (ipc_decode(IPC_CA_INFO_REQ_it(), rc->rc_msg->im_body,
	    rc->rc_msg->im_bodylen, "CA info request", (void **)&req) != 0) {
		rc->rc_type = IPC_T_ERROR_RESP;
		return error_body(IPC_REFUSE_BAD_MESSAGE, ipc_error_detail(),
		    &rc->rc_body, &rc->rc_bodylen);
	}
	all = ASN1_STRING_length(req->key_name) == 0;
	if (!all && (key_name(req->key_name, name, sizeof(name)) != 0 ||
	    config_find_key(sd->sd_conf, name) == NULL)) {
		IPC_CA_INFO_REQ_free(req);
		rc->rc_type = IPC_T_ERROR_RESP;
		return error_body(IPC_REFUSE_UNKNOWN_KEY, "no such key is "
		    "configured", &rc->rc_body, &rc->rc_bodylen);
	}
	if ((resp = IPC_CA_INFO_RESP_new()) == NULL)
		goto out;
	for (i = 0; i < sd->sd_conf->sc_nkeys; i++) {
		key = sd->sd_conf->sc_keys[i];
		if (!all && strcmp(key->sk_name, name) != 0)
			continue;
		if ((ki = IPC_KEY_INFO_new()) == NULL ||
		    ASN1_STRING_set(ki->name, key->sk_name, -1) != 1 ||
		    ASN1_STRING_set(ki->algorithm, token_keytype_name(
		    token_key_type(key->sk_key)), -1) != 1 ||
		    append_der(ki->chain, key->sk_cert) != 0)
			goto out;
		for (j = 0; key->sk_chain != NULL &&
		    j < sk_X509_num(key->sk_chain); j++)
			if (append_der(ki->chain,
			    sk_X509_value(key->sk_chain, j)) != 0)
				goto out;
		for (j = 0; j < PROFILE_COUNT; j++) {
			if ((key->sk_profiles & (1u << j)) == 0)
				continue;
			if ((p = ASN1_UTF8STRING_new()) == NULL ||
			    ASN1_STRING_set(p, profile_name(j), -1) != 1 ||
			    sk_ASN1_UTF8STRING_push(ki->profiles, p) <= 0)
				goto out;
			p = NULL;
		}
		pthread_mutex_lock(&key->sk_usage_lock);
		j = ASN1_INTEGER_set_uint64(ki->usage, key->sk_usage);
		pthread_mutex_unlock(&key->sk_usage_lock);
		if (j != 1 || ASN1_INTEGER_set_uint64(ki->usage_limit,
		    key->sk_usage_limit) != 1 ||
		    sk_IPC_KEY_INFO_push(resp->keys, ki) <= 0)
			goto out;
		ki = NULL;
	}
	if (ipc_encode(IPC_CA_INFO_RESP_it(), resp, &rc->rc_body,
	    &rc->rc_bodylen) != 0)
		goto out;
	rc->rc_type = IPC_T_CA_INFO_RESP;
	ret = 0;
 out:
	ASN1_UTF8STRING_free(p);
	IPC_KEY_INFO_free(ki);
	IPC_CA_INFO_RESP_free(resp);
	IPC_CA_INFO_REQ_free(req);
	return ret;
}

static int
handle_health(struct request_ctx *rc)
{
	struct signerd *sd = rc->rc_sd;
	IPC_HEALTH_REQ *req = NULL;
	IPC_HEALTH_RESP *resp = NULL;
	int ret = -1, up;

	if (ipc_decode(IPC_HEALTH_REQ_it(), rc->rc_msg->im_body,
	    rc->rc_msg->im_bodylen, "health request", (void **)&req) != 0) {
		rc->rc_type = IPC_T_ERROR_RESP;
		return error_body(IPC_REFUSE_BAD_MESSAGE, ipc_error_detail(),
		    &rc->rc_body, &rc->rc_bodylen);
	}
	up = token_get_state(sd->sd_token) == TOKEN_STATE_UP &&
	    !audit_failed(sd->sd_audit);
	if ((resp = IPC_HEALTH_RESP_new()) != NULL &&
	    ASN1_STRING_copy(resp->nonce, req->nonce) == 1 &&
	    ASN1_INTEGER_set(resp->token_up, up) == 1 &&
	    ASN1_INTEGER_set_uint64(resp->audit_seq,
	    audit_last_seq(sd->sd_audit)) == 1 &&
	    ipc_encode(IPC_HEALTH_RESP_it(), resp, &rc->rc_body,
	    &rc->rc_bodylen) == 0) {
		rc->rc_type = IPC_T_HEALTH_RESP;
		ret = 0;
	}
	IPC_HEALTH_RESP_free(resp);
	IPC_HEALTH_REQ_free(req);
	return ret;
}

/* The permitted requests.  Types not listed are refused unread. */
static const struct {
	int	  type;
	int	(*handler)(struct request_ctx *);
	int	  uses_key;	/* idempotent and audited */
} request_table[] = {
	{ IPC_T_ISSUE_CERT_REQ,	handle_issue,	1 },
	{ IPC_T_SIGN_CRL_REQ,	handle_crl,	1 },
	{ IPC_T_CA_INFO_REQ,	handle_info,	0 },
	{ IPC_T_HEALTH_REQ,	handle_health,	0 },
};

/* Audits a request that never got as far as a handler. */
static void
audit_unread(struct signerd *sd, const struct ipc_message *msg,
    const char *code, const char *reason)
{
	json_t *r;

	if ((r = json_object()) == NULL)
		return;
	if (json_object_set_new(r, "type", json_string("refusal")) == 0 &&
	    (msg == NULL || json_object_set_new(r, "request_id",
	    json_string("")) == 0) &&
	    json_object_set_new(r, "outcome", json_string("refused")) == 0 &&
	    json_object_set_new(r, "code", json_string(code)) == 0 &&
	    json_object_set_new(r, "reason", json_string(reason)) == 0) {
		if (msg != NULL) {
			char idhex[2 * IPC_ID_LEN + 1];

			audit_hex(msg->im_id, IPC_ID_LEN, idhex);
			json_object_set_new(r, "request_id",
			    json_string(idhex));
		}
		(void)record_append(sd, r, NULL);
	}
	json_decref(r);
}

int
request_handle(void *arg, const uint8_t *req, size_t len, uint8_t **resp,
    size_t *resplen)
{
	struct signerd *sd = arg;
	struct request_state *rs = sd->sd_requests;
	struct ipc_message msg;
	struct request_ctx rc;
	struct idem_entry *e = NULL;
	EVP_MD_CTX *mdctx;
	uint8_t typebyte;
	int64_t now_ms = ipc_now_ms(), deadline;
	size_t i;
	int err, ret = -1;
	char reason[256];

	*resp = NULL;
	memset(&msg, 0, sizeof(msg));
	memset(&rc, 0, sizeof(rc));
	clock_gettime(CLOCK_MONOTONIC, &rc.rc_start);
	err = ipc_open(sd->sd_mac_key, req, len, now_ms, rs->rs_window_ms,
	    &msg);
	if (err == IPC_ERR_STALE || err == IPC_ERR_TYPE) {
		/* Authentic: the id can be answered. */
		snprintf(reason, sizeof(reason), "%s", ipc_error_detail());
		log_warnx("refused a request: %s", reason);
		audit_unread(sd, &msg, ipc_refusal_name(err == IPC_ERR_STALE ?
		    IPC_REFUSE_STALE : IPC_REFUSE_BAD_MESSAGE), reason);
		ret = answer_error(sd, msg.im_id, err == IPC_ERR_STALE ?
		    IPC_REFUSE_STALE : IPC_REFUSE_BAD_MESSAGE, reason, resp,
		    resplen);
		goto out;
	}
	if (err != 0) {
		/* Not from the policy daemon, or damaged: no answer, since
		 * an answer would be an oracle for whoever sent it. */
		snprintf(reason, sizeof(reason), "%s", ipc_error_detail());
		log_warnx("dropped a message: %s: %s", ipc_strerror(err),
		    reason);
		audit_unread(sd, NULL, ipc_refusal_name(err == IPC_ERR_MAC ?
		    IPC_REFUSE_BAD_MAC : IPC_REFUSE_BAD_MESSAGE), reason);
		goto out;
	}
	for (i = 0; i < sizeof(request_table) / sizeof(request_table[0]); i++)
		if (request_table[i].type == msg.im_type)
			break;
	if (i == sizeof(request_table) / sizeof(request_table[0])) {
		snprintf(reason, sizeof(reason), "%s is not a request the "
		    "signer answers", ipc_type_name(msg.im_type));
		audit_unread(sd, &msg, "bad_message", reason);
		ret = answer_error(sd, msg.im_id, IPC_REFUSE_BAD_MESSAGE,
		    reason, resp, resplen);
		goto out;
	}
	rc.rc_sd = sd;
	rc.rc_msg = &msg;
	if (!request_table[i].uses_key) {
		if (request_table[i].handler(&rc) != 0)
			goto out;
		ret = seal_answer(sd, rc.rc_type, msg.im_id, rc.rc_body,
		    rc.rc_bodylen, resp, resplen);
		goto out;
	}

	/* Idempotent requests: the same id gets the same answer. */
	typebyte = (uint8_t)msg.im_type;
	if ((mdctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(mdctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(mdctx, &typebyte, 1) != 1 ||
	    EVP_DigestUpdate(mdctx, msg.im_body, msg.im_bodylen) != 1 ||
	    EVP_DigestFinal_ex(mdctx, rc.rc_request_sha256, NULL) != 1) {
		EVP_MD_CTX_free(mdctx);
		goto out;
	}
	EVP_MD_CTX_free(mdctx);
	pthread_mutex_lock(&rs->rs_lock);
	deadline = now_ms + IDEM_WAIT_MS;
	/* An entry is re-found after every wait: a first request that was
	 * refused for a passing reason is forgotten, and this one runs. */
	while ((e = idem_find_locked(rs, msg.im_id)) != NULL) {
		struct timespec ts;

		if (e->ie_done)
			break;
		if (ipc_now_ms() >= deadline) {
			pthread_mutex_unlock(&rs->rs_lock);
			ret = answer_error(sd, msg.im_id, IPC_REFUSE_BUSY,
			    "the first request with this id is still being "
			    "answered", resp, resplen);
			goto out;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&rs->rs_done, &rs->rs_lock, &ts);
	}
	if (e != NULL) {
		if (memcmp(e->ie_request_sha256, rc.rc_request_sha256,
		    32) != 0) {
			pthread_mutex_unlock(&rs->rs_lock);
			log_warnx("request id reused for a different request");
			audit_unread(sd, &msg, "bad_message", "request id "
			    "reused for a different request");
			ret = answer_error(sd, msg.im_id,
			    IPC_REFUSE_BAD_MESSAGE, "request id already used "
			    "for a different request", resp, resplen);
			goto out;
		}
		/* The original answer, sealed anew. */
		ret = seal_answer(sd, e->ie_type, msg.im_id, e->ie_body,
		    e->ie_bodylen, resp, resplen);
		pthread_mutex_unlock(&rs->rs_lock);
		log_debug("repeated request answered from memory");
		goto out;
	}
	e = idem_insert_locked(rs, msg.im_id, rc.rc_request_sha256, now_ms);
	pthread_mutex_unlock(&rs->rs_lock);
	if (e == NULL) {
		ret = answer_error(sd, msg.im_id, IPC_REFUSE_BUSY, "too many "
		    "requests remembered within the time window", resp,
		    resplen);
		goto out;
	}
	if (audit_failed(sd->sd_audit)) {
		rc.rc_type = IPC_T_ERROR_RESP;
		err = error_body(IPC_REFUSE_AUDIT, "the audit log has failed: "
		    "nothing is signed", &rc.rc_body, &rc.rc_bodylen);
	} else
		err = request_table[i].handler(&rc);
	if (err != 0 || rc.rc_body == NULL) {
		OPENSSL_free(rc.rc_body);
		rc.rc_body = NULL;
		rc.rc_type = IPC_T_ERROR_RESP;
		if (error_body(IPC_REFUSE_INTERNAL, "internal error",
		    &rc.rc_body, &rc.rc_bodylen) != 0)
			rc.rc_bodylen = 0;
	}
	ret = seal_answer(sd, rc.rc_type, msg.im_id, rc.rc_body,
	    rc.rc_bodylen, resp, resplen);
	pthread_mutex_lock(&rs->rs_lock);
	/* Transient refusals are not remembered: a retry may succeed. */
	if (rc.rc_type == IPC_T_ERROR_RESP && rc.rc_body != NULL) {
		IPC_ERROR_RESP *er = NULL;
		int64_t code = 0;

		if (ipc_decode(IPC_ERROR_RESP_it(), rc.rc_body,
		    rc.rc_bodylen, "error", (void **)&er) == 0)
			(void)ASN1_INTEGER_get_int64(&code, er->code);
		IPC_ERROR_RESP_free(er);
		if (code == IPC_REFUSE_UNAVAILABLE || code == IPC_REFUSE_BUSY ||
		    code == IPC_REFUSE_AUDIT || code == IPC_REFUSE_INTERNAL)
			e->ie_expires_ms = 0;
	}
	e->ie_type = rc.rc_type;
	e->ie_body = rc.rc_body;
	e->ie_bodylen = rc.rc_bodylen;
	rc.rc_body = NULL;
	e->ie_done = 1;
	if (e->ie_expires_ms == 0) {
		/* Forget it now (unlink from its bucket). */
		struct idem_entry **pp;

		pp = &rs->rs_idem[bucket(e->ie_id, IPC_ID_LEN, IDEM_BUCKETS)];
		while (*pp != NULL && *pp != e)
			pp = &(*pp)->ie_next;
		if (*pp == e) {
			*pp = e->ie_next;
			rs->rs_nidem--;
			pthread_cond_broadcast(&rs->rs_done);
			pthread_mutex_unlock(&rs->rs_lock);
			/* A waiter woken now finds no entry and retries. */
			idem_free(e);
			goto out;
		}
	}
	pthread_cond_broadcast(&rs->rs_done);
	pthread_mutex_unlock(&rs->rs_lock);
 out:
	OPENSSL_free(rc.rc_body);
	ipc_message_clear(&msg);
	return ret;
}

int
request_busy(void *arg, const uint8_t *req, size_t len, uint8_t **resp,
    size_t *resplen)
{
	struct signerd *sd = arg;
	struct ipc_message msg;
	int ret = -1;

	memset(&msg, 0, sizeof(msg));
	if (ipc_open(sd->sd_mac_key, req, len, ipc_now_ms(),
	    sd->sd_requests->rs_window_ms, &msg) == 0)
		ret = answer_error(sd, msg.im_id, IPC_REFUSE_BUSY, "the "
		    "signer's queue is full", resp, resplen);
	ipc_message_clear(&msg);
	return ret;
}

/* --- replay of the audit log at start ---------------------------------- */

static const char *
jstr(const json_t *r, const char *field)
{
	const char *s = json_string_value(json_object_get(r, field));

	return s != NULL ? s : "";
}

static int
refusal_code(const char *name)
{
	int i;

	for (i = 1; i <= IPC_REFUSE_MAX; i++)
		if (strcmp(ipc_refusal_name(i), name) == 0)
			return i;
	return IPC_REFUSE_INTERNAL;
}

static int64_t
record_time_ms(const json_t *r)
{
	struct tm tm;
	const char *t = jstr(r, "time"), *end;
	int ms = 0;

	memset(&tm, 0, sizeof(tm));
	if ((end = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return 0;
	if (*end == '.')
		ms = atoi(end + 1);
	return (int64_t)timegm(&tm) * 1000 + ms;
}

/* Rebuilds the answer a recorded outcome gave. */
static int
replay_answer(const json_t *r, int *type, uint8_t **body, size_t *bodylen)
{
	const char *t = jstr(r, "type");
	IPC_ISSUE_RESP *ir = NULL;
	IPC_CRL_RESP *cr = NULL;
	BIGNUM *bn = NULL;
	uint8_t *obj = NULL;
	size_t objlen = 0;
	json_int_t seq = json_integer_value(json_object_get(r, "seq"));
	int ret = -1;

	if (strcmp(t, "refusal") == 0) {
		*type = IPC_T_ERROR_RESP;
		return error_body(refusal_code(jstr(r, "code")),
		    jstr(r, "reason"), body, bodylen);
	}
	if ((obj = unbase64(jstr(r, "object"), &objlen)) == NULL)
		return -1;
	if (strcmp(t, "issue") == 0) {
		if ((ir = IPC_ISSUE_RESP_new()) == NULL ||
		    BN_hex2bn(&bn, jstr(r, "serial")) == 0 ||
		    BN_to_ASN1_INTEGER(bn, ir->serial) == NULL ||
		    ASN1_OCTET_STRING_set(ir->certificate, obj,
		    (int)objlen) != 1 ||
		    ASN1_INTEGER_set_int64(ir->audit_seq, seq) != 1 ||
		    ipc_encode(IPC_ISSUE_RESP_it(), ir, body, bodylen) != 0)
			goto out;
		*type = IPC_T_ISSUE_CERT_RESP;
	} else if (strcmp(t, "crl") == 0) {
		if ((cr = IPC_CRL_RESP_new()) == NULL ||
		    ASN1_OCTET_STRING_set(cr->crl, obj, (int)objlen) != 1 ||
		    ASN1_INTEGER_set_int64(cr->audit_seq, seq) != 1 ||
		    ipc_encode(IPC_CRL_RESP_it(), cr, body, bodylen) != 0)
			goto out;
		*type = IPC_T_SIGN_CRL_RESP;
	} else
		goto out;
	ret = 0;
 out:
	BN_free(bn);
	free(obj);
	IPC_ISSUE_RESP_free(ir);
	IPC_CRL_RESP_free(cr);
	return ret;
}

void
request_scan(void *arg, const json_t *r)
{
	struct signerd *sd = arg;
	struct request_state *rs = sd->sd_requests;
	struct signer_key *key;
	struct idem_entry *e;
	const char *type = jstr(r, "type"), *code;
	uint8_t id[IPC_ID_LEN], sha[32], serial[20];
	BIGNUM *bn = NULL;
	int64_t t, now = ipc_now_ms();
	int n;

	if (strcmp(type, "intent") == 0) {
		/* Every intent is a use of the key, signed or not. */
		if ((key = config_find_key(sd->sd_conf, jstr(r, "key"))) !=
		    NULL)
			key->sk_usage++;
		if (strcmp(jstr(r, "kind"), "certificate") == 0 &&
		    BN_hex2bn(&bn, jstr(r, "serial")) != 0 &&
		    (n = BN_bn2bin(bn, serial)) > 0 && n <= 20)
			(void)serial_add_locked(rs, serial, (size_t)n);
		BN_free(bn);
		return;
	}
	if (strcmp(type, "issue") != 0 && strcmp(type, "crl") != 0 &&
	    strcmp(type, "refusal") != 0)
		return;
	/* Only answers that could still be asked for again. */
	t = record_time_ms(r);
	if (t + 2 * rs->rs_window_ms + 5000 < now)
		return;
	if (unhex(jstr(r, "request_id"), id, sizeof(id)) != 0 ||
	    unhex(jstr(r, "request_sha256"), sha, sizeof(sha)) != 0)
		return;
	if (strcmp(type, "refusal") == 0) {
		code = jstr(r, "code");
		if (refusal_code(code) == IPC_REFUSE_UNAVAILABLE ||
		    refusal_code(code) == IPC_REFUSE_BUSY ||
		    refusal_code(code) == IPC_REFUSE_AUDIT ||
		    refusal_code(code) == IPC_REFUSE_INTERNAL)
			return;
	}
	if ((e = idem_find_locked(rs, id)) == NULL &&
	    (e = idem_insert_locked(rs, id, sha, t)) == NULL)
		return;
	OPENSSL_free(e->ie_body);
	e->ie_body = NULL;
	if (replay_answer(r, &e->ie_type, &e->ie_body, &e->ie_bodylen) != 0) {
		log_warnx("audit record %lld: its answer cannot be rebuilt",
		    (long long)json_integer_value(json_object_get(r, "seq")));
		e->ie_expires_ms = 0;
	}
	memcpy(e->ie_request_sha256, sha, 32);
	e->ie_done = 1;
}

int
request_audit_sign(void *arg, const uint8_t *msg, size_t msglen, uint8_t *sig,
    size_t *siglen)
{
	struct signerd *sd = arg;
	uint8_t md[32];
	int err;

	/* The log is held while a checkpoint is signed: with the token down
	 * it waits for the next record rather than for the token. */
	if (token_get_state(sd->sd_token) != TOKEN_STATE_UP)
		return -1;
	if (token_key_type(sd->sd_audit_key) == TOKEN_KEY_ED25519)
		err = token_sign(sd->sd_audit_key, NULL, msg, msglen, sig,
		    siglen);
	else {
		SHA256(msg, msglen, md);
		err = token_sign(sd->sd_audit_key, EVP_sha256(), md,
		    sizeof(md), sig, siglen);
	}
	if (err != 0) {
		log_warnx("audit checkpoint: %s: %s", token_strerror(err),
		    token_error_detail());
		return -1;
	}
	return 0;
}

int
request_init(struct signerd *sd)
{
	struct request_state *rs;

	if ((rs = calloc(1, sizeof(*rs))) == NULL)
		return -1;
	pthread_mutex_init(&rs->rs_lock, NULL);
	pthread_cond_init(&rs->rs_done, NULL);
	rs->rs_window_ms = sd->sd_conf->sc_time_window * 1000;
	sd->sd_requests = rs;
	return 0;
}

void
request_free(struct signerd *sd)
{
	struct request_state *rs = sd->sd_requests;
	struct idem_entry *e, *en;
	struct serial_entry *s, *sn;
	unsigned int i;

	if (rs == NULL)
		return;
	for (i = 0; i < IDEM_BUCKETS; i++)
		for (e = rs->rs_idem[i]; e != NULL; e = en) {
			en = e->ie_next;
			idem_free(e);
		}
	for (i = 0; i < SERIAL_BUCKETS; i++)
		for (s = rs->rs_serials[i]; s != NULL; s = sn) {
			sn = s->se_next;
			free(s);
		}
	pthread_mutex_destroy(&rs->rs_lock);
	pthread_cond_destroy(&rs->rs_done);
	free(rs);
	sd->sd_requests = NULL;
}
