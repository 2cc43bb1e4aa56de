/*
 * API v1 (DESIGN.md "Policy daemon"): one dispatch over method and path,
 * JSON in and out through jansson.  Every refusal is a 4xx or 5xx with
 * {"error": code, "message": text}; nothing is issued on any error.
 *
 * Issuance: authenticate (bootstrap token or mTLS certificate we issued
 * and have not revoked), check the CSR (csr.c), decide (rules.c), write a
 * PENDING inventory row, ask the signer, complete the row, answer.  The
 * signer answers asynchronously through the link; if the HTTP client went
 * away meanwhile the row is still completed.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "csr.h"
#include "csrpool.h"
#include "storeq.h"
#include "https.h"
#include "ipc.h"
#include "log.h"
#include "policyd.h"
#include "rules.h"
#include "store.h"

#define BEARER			"Bearer "
#define TOKEN_MAX		256
#define IDENTITY_MAX		2048
/* Signer round trip histogram bounds, milliseconds. */
static const double latency_bounds[12] = {
	1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000
};

const char *const profile_names[5] = {
	"svid", "server", "client", "peer", "subca"
};

int
profile_index(const char *name)
{
	int i;

	for (i = 0; i < 5; i++)
		if (name != NULL && strcmp(name, profile_names[i]) == 0)
			return i;
	return -1;
}

/* --- answers ----------------------------------------------------------- */

static void
reply_json(struct https_request *req, int status, json_t *body)
{
	char *text;

	if (body == NULL || (text = json_dumps(body, JSON_COMPACT)) == NULL) {
		static const char oom[] = "{\"error\":\"internal\","
		    "\"message\":\"out of memory\"}";
		https_reply(req, 500, "application/json", oom, sizeof(oom) - 1,
		    NULL);
		json_decref(body);
		return;
	}
	https_reply(req, status, "application/json", text, strlen(text), NULL);
	free(text);
	json_decref(body);
}

/* Error codes are a small fixed set of static strings: count each. */
static void
count_denial(struct policyd_metrics *m, const char *code)
{
	size_t i, n = sizeof(m->denied_by) / sizeof(m->denied_by[0]);

	m->denied++;
	for (i = 0; i < n && m->denied_by[i].code != NULL; i++)
		if (strcmp(m->denied_by[i].code, code) == 0)
			break;
	if (i == n) {
		m->denied_other++;
		return;
	}
	m->denied_by[i].code = code;
	m->denied_by[i].n++;
}

static void token_refused(struct policyd *, struct https_request *, int,
		    const char *);
static void reply_error(struct policyd *, struct https_request *, int,
    const char *, const char *, ...) __attribute__((format(printf, 5, 6)));

static void
reply_error(struct policyd *pd, struct https_request *req, int status,
    const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (status >= 400 && status < 500)
		count_denial(&pd->pd_metrics, code);
	log_info("%s %s from %s: %d %s: %s", https_method(req),
	    https_path(req), https_peer_addr(req), status, code, msg);
	reply_json(req, status, json_pack("{s:s,s:s}", "error", code,
	    "message", msg));
}

static void
rfc3339(int64_t t, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "1970-01-01T00:00:00Z");
}

/* PEM of DER bytes the signer already checked: no decode on the way. */
static char *
pem_of_der(const uint8_t *der, size_t len)
{
	BIO *b;
	BUF_MEM *m;
	char *out = NULL;

	if ((b = BIO_new(BIO_s_mem())) == NULL)
		return NULL;
	if (PEM_write_bio(b, PEM_STRING_X509, "", der, (long)len) > 0 &&
	    BIO_get_mem_ptr(b, &m) == 1)
		out = strndup(m->data, m->length);
	BIO_free(b);
	return out;
}

/* One DER TLV at *p within end: its whole span and its content. */
static int
der_next(const unsigned char **p, const unsigned char *end, int want_tag,
    int want_class, const unsigned char **tlv, size_t *tlvlen,
    const unsigned char **content, size_t *contentlen)
{
	const unsigned char *start = *p;
	long l;
	int tag, cls, r;

	if (start >= end)
		return -1;
	r = ASN1_get_object(p, &l, &tag, &cls, (long)(end - start));
	if ((r & 0x80) != 0 || r == 0x21 || tag != want_tag ||
	    cls != want_class || l < 0 || l > end - *p)
		return -1;
	if (tlv != NULL) {
		*tlv = start;
		*tlvlen = (size_t)(*p - start) + (size_t)l;
	}
	if (content != NULL) {
		*content = *p;
		*contentlen = (size_t)l;
	}
	*p += l;
	return 0;
}

/*
 * The SubjectPublicKeyInfo of a DER certificate, found by walking its
 * TLVs: OpenSSL 3.0 decodes a key through its provider decoders on every
 * certificate parse, which costs more than the signature.
 */
static int
cert_spki(const uint8_t *der, size_t len, const uint8_t **spki,
    size_t *spkilen)
{
	const unsigned char *p = der, *end = der + len, *c, *tend;
	size_t clen;
	int i;

	if (der_next(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, NULL, NULL,
	    &c, &clen) != 0 || p != end)
		return -1;
	p = c;
	end = c + clen;
	if (der_next(&p, end, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, NULL, NULL,
	    &c, &clen) != 0)
		return -1;
	p = c;
	tend = c + clen;
	/* [0] version, then serial, signature, issuer, validity, subject. */
	if (der_next(&p, tend, 0, V_ASN1_CONTEXT_SPECIFIC, NULL, NULL, NULL,
	    NULL) != 0 || der_next(&p, tend, V_ASN1_INTEGER, V_ASN1_UNIVERSAL,
	    NULL, NULL, NULL, NULL) != 0)
		return -1;
	for (i = 0; i < 4; i++)
		if (der_next(&p, tend, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, NULL,
		    NULL, NULL, NULL) != 0)
			return -1;
	return der_next(&p, tend, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, spki,
	    spkilen, NULL, NULL);
}

/* Lower-case hex without leading zeros, as the inventory keeps serials. */
int
policyd_serial_hex(const ASN1_INTEGER *ai, char *out, size_t outlen)
{
	BIGNUM *bn;
	char *hex, *p;
	int ret = -1;

	if ((bn = ASN1_INTEGER_to_BN(ai, NULL)) == NULL)
		return -1;
	if (!BN_is_negative(bn) && !BN_is_zero(bn) &&
	    (hex = BN_bn2hex(bn)) != NULL) {
		for (p = hex; *p == '0'; p++)
			;
		if (strlen(p) < outlen) {
			for (ret = 0; *p != '\0'; p++)
				out[ret++] = (char)tolower((unsigned char)*p);
			out[ret] = '\0';
			ret = 0;
		}
		OPENSSL_free(hex);
	}
	BN_free(bn);
	return ret;
}

/* --- callers ----------------------------------------------------------- */

struct caller {
	char		 requester[128];	/* token callers */
	char		 identity[IDENTITY_MAX + 1];	/* mTLS callers */
	char		 serial[41];		/* of the mTLS certificate */
	uint8_t		 token_hash[32];	/* spent with the pending row */
	int		 token;
	int		 mtls;
};

/* The identity of a certificate: its SPIFFE ID, else its first DNS name. */
static int
cert_identity(X509 *x, char *out, size_t outlen)
{
	GENERAL_NAMES *gens;
	const GENERAL_NAME *gn;
	const ASN1_IA5STRING *s;
	int i, pass, len;

	if ((gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
	    NULL)) == NULL)
		return -1;
	for (pass = 0; pass < 2; pass++)
		for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
			gn = sk_GENERAL_NAME_value(gens, i);
			if (pass == 0 && gn->type == GEN_URI)
				s = gn->d.uniformResourceIdentifier;
			else if (pass == 1 && gn->type == GEN_DNS)
				s = gn->d.dNSName;
			else
				continue;
			len = ASN1_STRING_length(s);
			if (pass == 0 && (len < 9 || strncmp((const char *)
			    ASN1_STRING_get0_data(s), "spiffe://", 9) != 0))
				continue;
			if (len <= 0 || (size_t)len >= outlen ||
			    memchr(ASN1_STRING_get0_data(s), '\0',
			    (size_t)len) != NULL)
				continue;
			memcpy(out, ASN1_STRING_get0_data(s), (size_t)len);
			out[len] = '\0';
			GENERAL_NAMES_free(gens);
			return 0;
		}
	GENERAL_NAMES_free(gens);
	return -1;
}

/*
 * mTLS: the TLS layer verified the chain to our bundle; the certificate
 * must also be one we issued and still consider good.  Returns 0, or
 * answers the request and returns -1.
 */
static int
caller_mtls(struct policyd *pd, struct https_request *req, struct caller *c)
{
	X509 *x;
	struct store_cert sc;
	int rc;

	if ((x = https_peer_cert(req)) == NULL)
		return 0;
	if (policyd_serial_hex(X509_get0_serialNumber(x), c->serial,
	    sizeof(c->serial)) != 0 ||
	    cert_identity(x, c->identity, sizeof(c->identity)) != 0) {
		reply_error(pd, req, 403, "certificate_not_allowed", "the "
		    "client certificate has no SPIFFE ID or DNS name");
		return -1;
	}
	memset(&sc, 0, sizeof(sc));
	rc = store_get(pd->pd_store, c->serial, &sc);
	if (rc == STORE_OK && sc.status == STORE_ISSUED)
		c->mtls = 1;
	else if (rc == STORE_OK && sc.status == STORE_REVOKED)
		reply_error(pd, req, 403, "certificate_revoked", "the client "
		    "certificate %s is revoked", c->serial);
	else if (rc == STORE_NOTFOUND || rc == STORE_OK)
		reply_error(pd, req, 403, "certificate_unknown", "the client "
		    "certificate %s is not in this CA's inventory", c->serial);
	else
		reply_error(pd, req, 500, "internal", "inventory: %s",
		    store_error(pd->pd_store));
	store_cert_clear(&sc);
	return c->mtls ? 0 : -1;
}

/* A bearer token: spends one use.  Returns 1 when a token was given and
 * is good, 0 when none was given, -1 when the request was answered. */
static int
caller_token(struct policyd *pd, struct https_request *req, struct caller *c)
{
	const char *auth, *tok;
	uint8_t hash[32];
	size_t len;
	int rc;

	if ((auth = https_header(req, "Authorization")) == NULL)
		return 0;
	/* The scheme name is case-insensitive (RFC 9110 11.1). */
	if (strncasecmp(auth, BEARER, strlen(BEARER)) != 0) {
		reply_error(pd, req, 401, "authentication_required", "the "
		    "Authorization header is not \"Bearer TOKEN\"");
		return -1;
	}
	tok = auth + strlen(BEARER);
	len = strlen(tok);
	if (len == 0 || len > TOKEN_MAX) {
		reply_error(pd, req, 401, "token_unknown", "the bearer token "
		    "is empty or longer than %d bytes", TOKEN_MAX);
		return -1;
	}
	if (EVP_Digest(tok, len, hash, NULL, EVP_sha256(), NULL) != 1) {
		reply_error(pd, req, 500, "internal", "cannot hash the token");
		return -1;
	}
	/* Checked now, spent with the pending row (issue_start): a request
	 * refused before it keeps its use. */
	rc = store_token_check(pd->pd_store, hash, (int64_t)time(NULL),
	    c->requester, sizeof(c->requester));
	if (rc == STORE_OK) {
		memcpy(c->token_hash, hash, sizeof(hash));
		c->token = 1;
		return 1;
	}
	token_refused(pd, req, rc, NULL);
	return -1;
}

/* The answer to a token store_token_check or the spend refused; err is
 * the store's reason for STORE_ERROR, NULL for the loop's store's. */
static void
token_refused(struct policyd *pd, struct https_request *req, int rc,
    const char *err)
{
	switch (rc) {
	case STORE_NOTFOUND:
		reply_error(pd, req, 401, "token_unknown", "the bearer token "
		    "is not known");
		break;
	case STORE_EXPIRED:
		reply_error(pd, req, 401, "token_expired", "the bearer token "
		    "has expired");
		break;
	case STORE_EXHAUSTED:
		reply_error(pd, req, 401, "token_used", "the bearer token "
		    "has no use left");
		break;
	case STORE_CALLER_REVOKED:
		/* revoked between the TLS handshake and the pending row */
		reply_error(pd, req, 403, "certificate_revoked", "%s",
		    err != NULL ? err : "the client certificate is revoked");
		break;
	default:
		reply_error(pd, req, 500, "internal", "inventory: %s",
		    err != NULL ? err : store_error(pd->pd_store));
		break;
	}
}

/* --- issuance ---------------------------------------------------------- */

struct issue_op {
	struct policyd		*io_pd;
	struct https_request	*io_req;	/* NULL once the client left */
	int64_t			 io_row;
	int			 io_profile;
	int			 io_renewal;
	int64_t			 io_not_before;
	int64_t			 io_not_after;
	char			*io_key;
	uint8_t			*io_spki;
	size_t			 io_spkilen;
	struct timespec		 io_start;
	uint8_t			 io_id[IPC_ID_LEN];	/* the signer request's */
	uint8_t			*io_body;	/* its body, until sent */
	size_t			 io_bodylen;
	char			 io_serial[41];	/* the answer, until stored */
	uint8_t			*io_der;
	size_t			 io_derlen;
};

static void
issue_op_free(struct issue_op *op)
{
	free(op->io_key);
	free(op->io_spki);
	OPENSSL_free(op->io_body);
	free(op->io_der);
	free(op);
}

/* The end of an issuance: the client (if still there) has its answer. */
static void
issue_finish(struct issue_op *op)
{
	if (op->io_req != NULL)
		https_on_abort(op->io_req, NULL, NULL);
	issue_op_free(op);
}

static void
issue_aborted(void *arg)
{
	struct issue_op *op = arg;

	op->io_req = NULL;
}

static void
observe_latency(struct policyd *pd, const struct timespec *start)
{
	struct timespec now;
	double ms;
	int i;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (double)(now.tv_sec - start->tv_sec) * 1e3 +
	    (double)(now.tv_nsec - start->tv_nsec) / 1e6;
	for (i = 0; i < 12; i++)
		if (ms <= latency_bounds[i])
			pd->pd_metrics.latency_buckets[i]++;
	pd->pd_metrics.latency_count++;
	pd->pd_metrics.latency_sum += ms / 1e3;
}

/* The certificate the signer returned must be for the key we asked for. */
static int
issue_check_cert(struct issue_op *op, const uint8_t *der, size_t len)
{
	const uint8_t *spki;
	size_t spkilen;

	return cert_spki(der, len, &spki, &spkilen) == 0 &&
	    spkilen == op->io_spkilen &&
	    memcmp(spki, op->io_spki, spkilen) == 0 ? 0 : -1;
}

/* A row that will not be completed; the loop does not wait for it. */
static void
issue_fail_row(struct issue_op *op, const char *why)
{
	if (storeq_fail(op->io_pd->pd_storeq, op->io_row, why, NULL,
	    NULL) != 0)
		log_warnx("inventory row %lld: out of memory; left pending "
		    "for reconciliation", (long long)op->io_row);
}

/* After the completed row is committed: the answer to the client. */
static void
issue_completed(void *arg, int rc, int64_t id, const char *err)
{
	struct issue_op *op = arg;
	struct policyd *pd = op->io_pd;
	struct https_request *req = op->io_req;
	const struct ca_key_info *ki;
	char nb[32], na[32], *pem = NULL;

	(void)id;
	if (req != NULL)
		https_on_abort(req, NULL, NULL);
	op->io_req = NULL;
	if (rc != STORE_OK) {
		log_warnx("inventory row %lld: serial %s not recorded: %s",
		    (long long)op->io_row, op->io_serial, err);
		if (req != NULL)
			reply_error(pd, req, 500, "internal", "the certificate "
			    "could not be recorded; it is not delivered");
		goto out;
	}
	if (op->io_renewal)
		pd->pd_metrics.renewed[op->io_profile]++;
	else
		pd->pd_metrics.issued[op->io_profile]++;
	log_info("issued %s serial %s (row %lld)",
	    profile_names[op->io_profile], op->io_serial,
	    (long long)op->io_row);
	if (req == NULL)
		goto out;
	if ((pem = pem_of_der(op->io_der, op->io_derlen)) == NULL) {
		reply_error(pd, req, 500, "internal", "out of memory");
		goto out;
	}
	ki = policyd_key(pd, op->io_key);
	rfc3339(op->io_not_before, nb, sizeof(nb));
	rfc3339(op->io_not_after, na, sizeof(na));
	reply_json(req, 201, json_pack("{s:s,s:s,s:s,s:s,s:s}",
	    "serial", op->io_serial, "certificate", pem,
	    "chain", ki != NULL && ki->chain_pem != NULL ? ki->chain_pem : "",
	    "not_before", nb, "not_after", na));
 out:
	free(pem);
	issue_finish(op);
}

/* The signer's answer: the row completed (then issue_completed) or failed. */
static void
issue_done(void *arg, int status, const struct ipc_message *msg)
{
	struct issue_op *op = arg;
	struct policyd *pd = op->io_pd;
	struct https_request *req = op->io_req;
	IPC_ISSUE_RESP *resp = NULL;
	IPC_ERROR_RESP *er = NULL;
	char reason[256];
	const uint8_t *der;
	size_t derlen;
	int code;

	observe_latency(pd, &op->io_start);
	if (status != 0) {
		/* Maybe signed, maybe not: the row stays pending and the
		 * reconciliation against the audit log settles it. */
		pd->pd_metrics.signer_errors++;
		log_warnx("inventory row %lld: the signer did not answer "
		    "(%s); left pending for reconciliation",
		    (long long)op->io_row, link_strerror(status));
		if (req != NULL) {
			https_on_abort(req, NULL, NULL);
			reply_error(pd, req, 503, "signer_unavailable", "the "
			    "signer did not answer in time; nothing was "
			    "delivered");
		}
		goto out;
	}
	if (msg->im_type == IPC_T_ERROR_RESP) {
		pd->pd_metrics.signer_errors++;
		code = IPC_REFUSE_INTERNAL;
		snprintf(reason, sizeof(reason), "no reason given");
		if (ipc_decode(IPC_ERROR_RESP_it(), msg->im_body,
		    msg->im_bodylen, "error answer", (void **)&er) == 0) {
			code = (int)ASN1_INTEGER_get(er->code);
			snprintf(reason, sizeof(reason), "%.*s",
			    ASN1_STRING_length(er->reason),
			    (const char *)ASN1_STRING_get0_data(er->reason));
		}
		issue_fail_row(op, reason);
		if (req == NULL)
			goto out;
		https_on_abort(req, NULL, NULL);
		if (code == IPC_REFUSE_UNAVAILABLE || code == IPC_REFUSE_BUSY ||
		    code == IPC_REFUSE_AUDIT || code == IPC_REFUSE_INTERNAL)
			reply_error(pd, req, 503, "signer_unavailable",
			    "the signer cannot sign now (%s): %s",
			    ipc_refusal_name(code), reason);
		else
			reply_error(pd, req, 403, "signer_refused", "the "
			    "signer refused (%s): %s", ipc_refusal_name(code),
			    reason);
		goto out;
	}
	if (msg->im_type != IPC_T_ISSUE_CERT_RESP ||
	    ipc_decode(IPC_ISSUE_RESP_it(), msg->im_body, msg->im_bodylen,
	    "issue answer", (void **)&resp) != 0 ||
	    policyd_serial_hex(resp->serial, op->io_serial,
	    sizeof(op->io_serial)) != 0 ||
	    issue_check_cert(op, ASN1_STRING_get0_data(resp->certificate),
	    (size_t)ASN1_STRING_length(resp->certificate)) != 0) {
		log_warnx("inventory row %lld: the signer's answer is not a "
		    "certificate for the requested key", (long long)op->io_row);
		issue_fail_row(op, "malformed answer");
		if (req != NULL) {
			https_on_abort(req, NULL, NULL);
			reply_error(pd, req, 502, "signer_answer_invalid",
			    "the signer's answer was not usable");
		}
		goto out;
	}
	der = ASN1_STRING_get0_data(resp->certificate);
	derlen = (size_t)ASN1_STRING_length(resp->certificate);
	if ((op->io_der = malloc(derlen)) == NULL) {
		/* The row stays pending; the reconciliation completes it. */
		log_warnx("inventory row %lld: out of memory; left pending "
		    "for reconciliation", (long long)op->io_row);
		if (req != NULL) {
			https_on_abort(req, NULL, NULL);
			reply_error(pd, req, 500, "internal", "out of memory");
		}
		goto out;
	}
	memcpy(op->io_der, der, derlen);
	op->io_derlen = derlen;
	if (storeq_complete(pd->pd_storeq, op->io_row, op->io_serial,
	    op->io_der, op->io_derlen, op->io_not_before, op->io_not_after,
	    issue_completed, op) != 0) {
		log_warnx("inventory row %lld: out of memory; left pending "
		    "for reconciliation", (long long)op->io_row);
		if (req != NULL) {
			https_on_abort(req, NULL, NULL);
			reply_error(pd, req, 500, "internal", "out of memory");
		}
		goto out;
	}
	op = NULL;	/* issue_completed has it */
 out:
	IPC_ISSUE_RESP_free(resp);
	IPC_ERROR_RESP_free(er);
	if (op != NULL) {
		op->io_req = NULL;	/* answered above, if at all */
		issue_finish(op);
	}
}

int
policyd_push_name(GENERAL_NAMES *gens, int type, const char *v)
{
	GENERAL_NAME *gn;
	ASN1_IA5STRING *s;

	if ((gn = GENERAL_NAME_new()) == NULL)
		return -1;
	if ((s = ASN1_IA5STRING_new()) == NULL ||
	    ASN1_STRING_set(s, v, (int)strlen(v)) != 1) {
		ASN1_IA5STRING_free(s);
		GENERAL_NAME_free(gn);
		return -1;
	}
	GENERAL_NAME_set0_value(gn, type, s);
	if (sk_GENERAL_NAME_push(gens, gn) <= 0) {
		GENERAL_NAME_free(gn);
		return -1;
	}
	return 0;
}

static json_t *
sans_json(const struct csr_info *ci)
{
	json_t *a = json_array();
	char buf[CSR_MAX_NAME + 8];
	size_t i;

	for (i = 0; a != NULL && i < ci->ndns; i++) {
		snprintf(buf, sizeof(buf), "DNS:%s", ci->dns[i]);
		json_array_append_new(a, json_string(buf));
	}
	for (i = 0; a != NULL && i < ci->nuris; i++) {
		snprintf(buf, sizeof(buf), "URI:%s", ci->uris[i]);
		json_array_append_new(a, json_string(buf));
	}
	return a;
}

/* Seconds a pending row may take to be committed before the signer is
 * asked; reconcile_after must exceed the signer's time window by more. */
#define ISSUE_MAX_STORE_WAIT	2

/* After the pending row is committed: the signer is asked. */
static void
issue_added(void *arg, int rc, int64_t id, const char *err)
{
	struct issue_op *op = arg;
	struct policyd *pd = op->io_pd;
	struct https_request *req = op->io_req;
	int lrc;

	if (rc != STORE_OK) {
		if (req != NULL) {
			https_on_abort(req, NULL, NULL);
			token_refused(pd, req, rc, err);
		}
		op->io_req = NULL;
		issue_finish(op);
		return;
	}
	op->io_row = id;
	if (req == NULL) {
		/* Nobody to give it to: not worth a signature. */
		issue_fail_row(op, "the client went away before the signer "
		    "was asked");
		issue_finish(op);
		return;
	}
	/*
	 * The reconciliation takes a row that is reconcile_after old as
	 * settled by the signer's audit log, which is safe only while the
	 * signer's time window for the request closes before that; the
	 * window opens when the request is sent, not when the row was
	 * made.  A row that waited long for its commit is failed instead.
	 */
	if ((int64_t)time(NULL) - op->io_not_before > ISSUE_MAX_STORE_WAIT) {
		issue_fail_row(op, "the inventory took too long to record the "
		    "request");
		https_on_abort(req, NULL, NULL);
		op->io_req = NULL;
		reply_error(pd, req, 503, "inventory_busy", "the inventory "
		    "took more than %d s to record the request; nothing was "
		    "signed", ISSUE_MAX_STORE_WAIT);
		issue_finish(op);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &op->io_start);
	if ((lrc = link_send(pd->pd_link, IPC_T_ISSUE_CERT_REQ, op->io_body,
	    op->io_bodylen, op->io_id, issue_done, op, NULL)) != 0) {
		issue_fail_row(op, "the signer could not be reached");
		https_on_abort(req, NULL, NULL);
		op->io_req = NULL;
		reply_error(pd, req, 503, "signer_unavailable", "the signer "
		    "cannot be reached (%s)", link_strerror(lrc));
		issue_finish(op);
		return;
	}
	OPENSSL_free(op->io_body);
	op->io_body = NULL;
}

/*
 * Asks the signer for a certificate for ci as decided, recording it in
 * the inventory first: the pending row (with the token's use) goes to the
 * store's thread, issue_added asks the signer once it is committed,
 * issue_done queues the completed row, and issue_completed answers req
 * (if still there) once that is committed.  Returns 0, or answers req and
 * returns -1.
 */
static int
issue_start(struct policyd *pd, struct https_request *req,
    const struct caller *c, const char *profile,
    const struct rules_decision *d, const struct csr_info *ci,
    const char *renewed_from)
{
	struct store_cert row;
	struct issue_op *op = NULL;
	IPC_ISSUE_REQ *ir = NULL;
	uint8_t id[IPC_ID_LEN], *body = NULL;
	size_t bodylen, i;
	json_t *sans = NULL;
	char *sanstext = NULL, cn[80], subject[96] = "";
	int64_t now = (int64_t)time(NULL);
	int ret = -1;

	memset(&row, 0, sizeof(row));
	if ((op = calloc(1, sizeof(*op))) == NULL ||
	    (op->io_key = strdup(d->key)) == NULL ||
	    (op->io_spki = malloc(ci->spkilen)) == NULL)
		goto nomem;
	op->io_pd = pd;
	op->io_req = req;
	op->io_profile = profile_index(profile);
	op->io_renewal = renewed_from != NULL;
	op->io_not_before = now;
	op->io_not_after = now + d->ttl;
	memcpy(op->io_spki, ci->spki, ci->spkilen);
	op->io_spkilen = ci->spkilen;

	if ((ir = IPC_ISSUE_REQ_new()) == NULL ||
	    ASN1_STRING_set(ir->key_name, d->key, -1) != 1 ||
	    ASN1_STRING_set(ir->profile, profile, -1) != 1 ||
	    ASN1_STRING_set(ir->spki, ci->spki, (int)ci->spkilen) != 1 ||
	    ASN1_INTEGER_set_int64(ir->not_before, op->io_not_before) != 1 ||
	    ASN1_INTEGER_set_int64(ir->not_after, op->io_not_after) != 1 ||
	    ASN1_STRING_set(ir->requester, d->requester, -1) != 1 ||
	    ASN1_STRING_set(ir->rule, d->rule, -1) != 1)
		goto nomem;
	/*
	 * A CA needs a subject (RFC 5280 4.1.2.6): the CSR's CN, which
	 * csr.c limited to 64 printable bytes, else one made of its first
	 * name.  Leaves get none: their names are in the SAN.
	 */
	if (strcmp(profile, "subca") == 0) {
		const char *base = "sub";

		if (ci->ndns > 0)
			base = ci->dns[0];
		else if (ci->nuris > 0)
			base = strncmp(ci->uris[0], "spiffe://", 9) == 0 ?
			    ci->uris[0] + 9 : ci->uris[0];
		if (ci->cn != NULL && ci->cn[0] != '\0')
			snprintf(cn, sizeof(cn), "%s", ci->cn);
		else
			snprintf(cn, sizeof(cn), "%.60s CA", base);
		snprintf(subject, sizeof(subject), "CN=%s", cn);
		if (X509_NAME_add_entry_by_NID(ir->subject, NID_commonName,
		    MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) != 1)
			goto nomem;
	}
	for (i = 0; i < ci->ndns; i++)
		if (policyd_push_name(ir->sans, GEN_DNS, ci->dns[i]) != 0)
			goto nomem;
	for (i = 0; i < ci->nuris; i++)
		if (policyd_push_name(ir->sans, GEN_URI, ci->uris[i]) != 0)
			goto nomem;
	if (ipc_encode(IPC_ISSUE_REQ_it(), ir, &body, &bodylen) != 0 ||
	    RAND_bytes(id, sizeof(id)) != 1 ||
	    (sans = sans_json(ci)) == NULL ||
	    (sanstext = json_dumps(sans, JSON_COMPACT)) == NULL)
		goto nomem;

	/* The row exists before the signer is asked. */
	for (i = 0; i < IPC_ID_LEN; i++)
		snprintf(row.request_id + 2 * i, 3, "%02x", id[i]);
	row.requester = (char *)(uintptr_t)(c->mtls ? c->identity :
	    c->requester);
	row.rule = (char *)(uintptr_t)d->rule;
	row.profile = (char *)(uintptr_t)profile;
	row.key_name = (char *)(uintptr_t)d->key;
	row.identity = ci->nuris > 0 ? ci->uris[0] :
	    ci->ndns > 0 ? ci->dns[0] : (char *)(uintptr_t)"";
	row.subject = subject;
	row.sans = sanstext;
	row.renewed_from = (char *)(uintptr_t)renewed_from;
	row.created_at = now;
	op->io_body = body;
	op->io_bodylen = bodylen;
	memcpy(op->io_id, id, sizeof(id));
	body = NULL;
	/* The token's use is spent, or the caller's certificate is checked
	 * again, in the row's own transaction. */
	if (storeq_pending_add(pd->pd_storeq, &row, c->token ?
	    c->token_hash : NULL, now, c->mtls ? c->serial : NULL,
	    issue_added, op) != 0)
		goto nomem;
	/* From here the op is issue_added's; a client that goes meanwhile
	 * only clears io_req. */
	https_on_abort(req, issue_aborted, op);
	op = NULL;
	ret = 0;
	goto out;
 nomem:
	reply_error(pd, req, 500, "internal", "out of memory");
 out:
	if (op != NULL)
		issue_op_free(op);
	IPC_ISSUE_REQ_free(ir);
	OPENSSL_free(body);
	json_decref(sans);
	free(sanstext);
	return ret;
}

/* {"csr": PEM, "profile": NAME, "ttl": DURATION}; extra fields ignored. */
static json_t *
parse_body(struct policyd *pd, struct https_request *req, const char **csr,
    const char **profile, long *ttl)
{
	const uint8_t *body;
	size_t len;
	json_t *j, *v;
	json_error_t je;
	const char *ctype;

	ctype = https_header(req, "Content-Type");
	if (ctype != NULL && strncmp(ctype, "application/json", 16) != 0) {
		reply_error(pd, req, 415, "unsupported_media_type", "the body "
		    "must be application/json, not %.64s", ctype);
		return NULL;
	}
	body = https_body(req, &len);
	if ((j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES,
	    &je)) == NULL) {
		reply_error(pd, req, 400, "invalid_json", "the body is not "
		    "JSON: %s at line %d column %d", je.text, je.line,
		    je.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		reply_error(pd, req, 400, "invalid_json", "the body is not a "
		    "JSON object");
		goto bad;
	}
	if ((v = json_object_get(j, "csr")) == NULL || !json_is_string(v)) {
		reply_error(pd, req, 400, "csr_missing", "\"csr\" (a PEM "
		    "certificate request) is missing or not a string");
		goto bad;
	}
	*csr = json_string_value(v);
	*profile = NULL;
	if ((v = json_object_get(j, "profile")) != NULL) {
		if (!json_is_string(v) || profile_index(json_string_value(v)) <
		    0) {
			reply_error(pd, req, 400, "profile_unknown", "\"profile\" "
			    "must be one of svid, server, client, peer, subca");
			goto bad;
		}
		*profile = json_string_value(v);
	}
	*ttl = 0;
	if ((v = json_object_get(j, "ttl")) != NULL) {
		if (!json_is_string(v) ||
		    (*ttl = rules_parse_duration(json_string_value(v))) <= 0) {
			reply_error(pd, req, 400, "ttl_invalid", "\"ttl\" must "
			    "be a duration such as \"24h\" (units s, m, h, d)");
			goto bad;
		}
	}
	return j;
 bad:
	json_decref(j);
	return NULL;
}

/*
 * An issuance or renewal while its CSR is checked off the loop: what
 * handle_issue found out so far.  The body holds the CSR text and the
 * profile name, or the certificate renewed holds the profile.
 */
struct issue_parse {
	struct policyd		*ip_pd;
	struct https_request	*ip_req;
	struct csrpool_job	*ip_job;
	json_t			*ip_body;
	struct store_cert	 ip_old;
	struct caller		 ip_caller;
	const char		*ip_profile;
	long			 ip_ttl;
	int			 ip_renew;
};

static void
issue_parse_free(struct issue_parse *ip)
{
	store_cert_clear(&ip->ip_old);
	json_decref(ip->ip_body);
	explicit_bzero(&ip->ip_caller, sizeof(ip->ip_caller));
	free(ip);
}

/* The client went while its CSR was being checked. */
static void
issue_parse_aborted(void *arg)
{
	struct issue_parse *ip = arg;

	csrpool_cancel(ip->ip_pd->pd_csrpool, ip->ip_job);
	issue_parse_free(ip);
}

/* The rest of handle_issue, with the CSR checked. */
static void
issue_parsed(void *arg, int parsed, struct csr_info *ci,
    const struct csr_error *ce)
{
	struct issue_parse *ip = arg;
	struct policyd *pd = ip->ip_pd;
	struct https_request *req = ip->ip_req;
	struct caller *c = &ip->ip_caller;
	struct rules_caller rc;
	struct rules_request rr;
	struct rules_decision d;
	int renew = ip->ip_renew, t;

	ip->ip_job = NULL;
	https_on_abort(req, NULL, NULL);
	if (parsed != 0) {
		reply_error(pd, req, ce->code != NULL &&
		    strcmp(ce->code, "csr_too_large") == 0 ? 413 : 400,
		    ce->code != NULL ? ce->code : "csr_malformed", "%s",
		    ce->message);
		goto out;
	}
	/* The cheap checks are done; only now is the token looked up. */
	if (!renew && !c->mtls) {
		if ((t = caller_token(pd, req, c)) < 0)
			goto out;
		if (t == 0) {
			reply_error(pd, req, 401, "authentication_required",
			    "give a bootstrap token (Authorization: Bearer) "
			    "or a client certificate issued by this CA");
			goto out;
		}
	}
	memset(&rc, 0, sizeof(rc));
	rc.token_requester = c->token ? c->requester : NULL;
	rc.identity = c->mtls ? c->identity : NULL;
	memset(&rr, 0, sizeof(rr));
	rr.profile = ip->ip_profile;
	rr.ttl = ip->ip_ttl;
	rr.alg = ci->alg;
	rr.dns = (const char *const *)ci->dns;
	rr.ndns = ci->ndns;
	rr.uris = (const char *const *)ci->uris;
	rr.nuris = ci->nuris;
	rr.renewal = renew;
	memset(&d, 0, sizeof(d));
	if (rules_decide(pd->pd_rules, &rc, &rr, &d) != 0) {
		reply_error(pd, req, 403, d.code != NULL ? d.code : "denied",
		    "%s", d.message);
		goto out;
	}
	issue_start(pd, req, c, ip->ip_profile, &d, ci,
	    renew ? c->serial : NULL);
 out:
	csr_info_clear(ci);
	issue_parse_free(ip);
}

/*
 * The body, the caller's certificate and the profile are checked here;
 * the CSR goes to the pool, and issue_parsed goes on when it is checked.
 */
static void
handle_issue(struct policyd *pd, struct https_request *req, int renew)
{
	struct issue_parse *ip;
	const char *csr, *profile;
	long ttl;
	json_t *j;

	if ((j = parse_body(pd, req, &csr, &profile, &ttl)) == NULL)
		return;
	if ((ip = calloc(1, sizeof(*ip))) == NULL) {
		json_decref(j);
		reply_error(pd, req, 500, "internal", "out of memory");
		return;
	}
	ip->ip_pd = pd;
	ip->ip_req = req;
	ip->ip_body = j;
	ip->ip_ttl = ttl;
	ip->ip_renew = renew;
	if (caller_mtls(pd, req, &ip->ip_caller) != 0)
		goto out;
	if (renew) {
		if (!ip->ip_caller.mtls) {
			reply_error(pd, req, 401, "authentication_required",
			    "renewal needs the certificate being renewed as "
			    "the TLS client certificate");
			goto out;
		}
		if (store_get(pd->pd_store, ip->ip_caller.serial,
		    &ip->ip_old) != STORE_OK) {
			reply_error(pd, req, 500, "internal", "inventory: %s",
			    store_error(pd->pd_store));
			goto out;
		}
		if (profile == NULL)
			profile = ip->ip_old.profile;
	}
	if (profile == NULL) {
		reply_error(pd, req, 400, "profile_missing", "\"profile\" is "
		    "missing (svid, server, client, peer, subca)");
		goto out;
	}
	ip->ip_profile = profile;
	if ((ip->ip_job = csrpool_submit(pd->pd_csrpool, csr, strlen(csr),
	    issue_parsed, ip)) == NULL) {
		reply_error(pd, req, 500, "internal", "out of memory");
		goto out;
	}
	https_on_abort(req, issue_parse_aborted, ip);
	return;
 out:
	issue_parse_free(ip);
}

/* --- revocation and inventory ------------------------------------------ */

static const char *const reason_names[] = {
	"unspecified", "keyCompromise", "cACompromise", "affiliationChanged",
	"superseded", "cessationOfOperation", "certificateHold", NULL,
	"removeFromCRL", "privilegeWithdrawn", "aACompromise"
};

static int
valid_serial(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= 40 && s[0] != '0' &&
	    strspn(s, "0123456789abcdef") == n;
}

static void
handle_revoke(struct policyd *pd, struct https_request *req,
    const char *serial)
{
	struct caller c;
	const uint8_t *body;
	json_t *j = NULL, *v;
	json_error_t je;
	size_t len, i;
	int reason = 0, rc;
	int64_t now = (int64_t)time(NULL);
	char at[32];

	memset(&c, 0, sizeof(c));
	if (!valid_serial(serial)) {
		reply_error(pd, req, 400, "serial_invalid", "the serial must "
		    "be lower-case hex without leading zeros");
		return;
	}
	if (caller_mtls(pd, req, &c) != 0)
		return;
	if (!c.mtls) {
		reply_error(pd, req, 401, "authentication_required", "revoking "
		    "needs the certificate itself or an admin's as the TLS "
		    "client certificate");
		return;
	}
	if (strcmp(c.serial, serial) != 0 &&
	    !rules_is_admin(pd->pd_rules, c.identity)) {
		reply_error(pd, req, 403, "not_allowed", "%s may revoke only "
		    "its own certificate", c.identity);
		return;
	}
	body = https_body(req, &len);
	if (len > 0) {
		if ((j = json_loadb((const char *)body, len,
		    JSON_REJECT_DUPLICATES, &je)) == NULL || !json_is_object(j)) {
			reply_error(pd, req, 400, "invalid_json", "the body is "
			    "not a JSON object");
			json_decref(j);
			return;
		}
		if ((v = json_object_get(j, "reason")) != NULL) {
			reason = -1;
			for (i = 0; json_is_string(v) &&
			    i < sizeof(reason_names) / sizeof(reason_names[0]);
			    i++)
				if (reason_names[i] != NULL &&
				    strcmp(reason_names[i],
				    json_string_value(v)) == 0)
					reason = (int)i;
			if (reason < 0 || reason == 8) {
				reply_error(pd, req, 400, "reason_invalid",
				    "\"reason\" must be an RFC 5280 reason "
				    "name such as keyCompromise");
				json_decref(j);
				return;
			}
		}
		json_decref(j);
	}
	rc = store_revoke(pd->pd_store, serial, reason, now);
	if (rc == STORE_NOTFOUND) {
		reply_error(pd, req, 404, "not_found", "no certificate with "
		    "serial %s", serial);
		return;
	}
	if (rc == STORE_CONFLICT) {
		reply_error(pd, req, 409, "not_revocable", "certificate %s is "
		    "not an issued, unrevoked certificate", serial);
		return;
	}
	if (rc != STORE_OK) {
		reply_error(pd, req, 500, "internal", "inventory: %s",
		    store_error(pd->pd_store));
		return;
	}
	pd->pd_metrics.revoked++;
	log_info("revoked serial %s (%s) by %s", serial, reason_names[reason],
	    c.identity);
	policyd_crl_refresh(pd);
	rfc3339(now, at, sizeof(at));
	reply_json(req, 200, json_pack("{s:s,s:s,s:s}", "serial", serial,
	    "revoked_at", at, "reason", reason_names[reason]));
}

static const char *const status_names[] = {
	"pending", "issued", "failed", "revoked"
};

static int
inventory_row(const struct store_cert *sc, void *arg)
{
	json_t *a = arg, *o, *sans = NULL;
	char nb[32], na[32], ra[32];

	rfc3339(sc->not_before, nb, sizeof(nb));
	rfc3339(sc->not_after, na, sizeof(na));
	rfc3339(sc->revoked_at, ra, sizeof(ra));
	/* Rows written by older code, or by hand, may hold no JSON here. */
	if (sc->sans == NULL || (sans = json_loads(sc->sans, 0, NULL)) ==
	    NULL || !json_is_array(sans)) {
		json_decref(sans);
		sans = json_array();
	}
	o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:s?,s:s?}",
	    "serial", sc->serial, "status", status_names[sc->status],
	    "profile", sc->profile ? sc->profile : "",
	    "identity", sc->identity ? sc->identity : "",
	    "requester", sc->requester ? sc->requester : "",
	    "not_before", sc->not_before ? nb : "",
	    "not_after", sc->not_after ? na : "",
	    "sans", sans,
	    "renewed_from", sc->renewed_from,
	    "renewed_by", sc->renewed_by);
	if (o == NULL)
		return -1;
	if (sc->status == STORE_REVOKED)
		json_object_set_new(o, "revoked_at", json_string(ra));
	return json_array_append_new(a, o) == 0 ? 0 : -1;
}

static void
handle_inventory(struct policyd *pd, struct https_request *req)
{
	struct caller c;
	struct store_filter f;
	const char *v;
	json_t *a;
	long d;
	int i, rc;

	memset(&c, 0, sizeof(c));
	if (caller_mtls(pd, req, &c) != 0)
		return;
	if (!c.mtls || !rules_is_admin(pd->pd_rules, c.identity)) {
		reply_error(pd, req, 403, "not_allowed", "the inventory is "
		    "for admins (mTLS with an admin identity)");
		return;
	}
	memset(&f, 0, sizeof(f));
	f.status = -1;
	f.limit = 10000;
	if ((v = https_query(req, "expiring_within")) != NULL) {
		if ((d = rules_parse_duration(v)) <= 0) {
			reply_error(pd, req, 400, "filter_invalid",
			    "expiring_within must be a duration such as 72h");
			return;
		}
		f.not_after_before = (int64_t)time(NULL) + d;
		f.status = STORE_ISSUED;
	}
	if ((v = https_query(req, "status")) != NULL) {
		for (i = 0; i < 4 && strcmp(v, status_names[i]) != 0; i++)
			;
		if (i == 4) {
			reply_error(pd, req, 400, "filter_invalid", "status "
			    "must be pending, issued, failed or revoked");
			return;
		}
		f.status = i;
	}
	f.identity = https_query(req, "identity");
	if ((a = json_array()) == NULL) {
		reply_error(pd, req, 500, "internal", "out of memory");
		return;
	}
	if ((rc = store_list(pd->pd_store, &f, inventory_row, a)) !=
	    STORE_OK) {
		json_decref(a);
		/* A callback's stop is ours (memory); the rest the store's. */
		reply_error(pd, req, 500, "internal", "inventory: %s",
		    rc == -1 ? "out of memory" : store_error(pd->pd_store));
		return;
	}
	reply_json(req, 200, json_pack("{s:o}", "certificates", a));
}

/* --- the rest ---------------------------------------------------------- */

static void
handle_metrics(struct policyd *pd, struct https_request *req);

static void
handle_health(struct policyd *pd, struct https_request *req)
{
	int up = link_up(pd->pd_link);

	reply_json(req, up ? 200 : 503, json_pack("{s:s,s:s,s:i}",
	    "status", up ? "ok" : "degraded",
	    "signer", up ? "up" : "down",
	    "inflight", (int)link_inflight(pd->pd_link)));
}

/*
 * /metrics shows what is issued to whom and how often: scrapers on this
 * host (loopback) and admins over mTLS only.  Returns 1, or answers and
 * returns 0.
 */
static int
metrics_allowed(struct policyd *pd, struct https_request *req)
{
	const char *a = https_peer_addr(req);
	struct caller c;

	if (strncmp(a, "127.", 4) == 0 || strncmp(a, "[::1]:", 6) == 0)
		return 1;
	memset(&c, 0, sizeof(c));
	if (caller_mtls(pd, req, &c) != 0)
		return 0;
	if (c.mtls && rules_is_admin(pd->pd_rules, c.identity))
		return 1;
	reply_error(pd, req, 403, "not_allowed", "/metrics is served to "
	    "this host and to admins over mTLS");
	return 0;
}

void
api_handle(struct https_request *req, void *arg)
{
	struct policyd *pd = arg;
	const char *m = https_method(req), *p = https_path(req);
	const struct ca_key_info *ki;
	const char *serial;
	char buf[64];
	size_t n;

	if (strcmp(m, "POST") == 0) {
		if (strcmp(p, "/v1/certificates") == 0)
			handle_issue(pd, req, 0);
		else if (strcmp(p, "/v1/certificates/renew") == 0)
			handle_issue(pd, req, 1);
		else if (strncmp(p, "/v1/certificates/", 17) == 0 &&
		    (n = strlen(p)) > 17 + 7 &&
		    strcmp(p + n - 7, "/revoke") == 0 && n - 24 < sizeof(buf)) {
			serial = p + 17;
			memcpy(buf, serial, n - 24);
			buf[n - 24] = '\0';
			handle_revoke(pd, req, buf);
		} else
			reply_error(pd, req, 404, "not_found", "no such "
			    "endpoint: POST %.128s", p);
		return;
	}
	if (strcmp(m, "GET") != 0) {
		reply_error(pd, req, 405, "method_not_allowed", "%s is not "
		    "served", m);
		return;
	}
	if (strcmp(p, "/healthz") == 0)
		handle_health(pd, req);
	else if (strcmp(p, "/metrics") == 0) {
		if (metrics_allowed(pd, req))
			handle_metrics(pd, req);
	}
	else if (strcmp(p, "/v1/certificates") == 0)
		handle_inventory(pd, req);
	else if (strcmp(p, "/v1/ca/bundle") == 0)
		https_reply(req, 200, "application/pem-certificate-chain",
		    pd->pd_bundle_pem, pd->pd_bundle_len, NULL);
	else if (strcmp(p, "/v1/ca/chain") == 0) {
		ki = policyd_key(pd, https_query(req, "key") != NULL ?
		    https_query(req, "key") : pd->pd_conf->pc_tls_key_name);
		if (ki == NULL || ki->chain_pem == NULL)
			reply_error(pd, req, 404, "not_found", "no such key, "
			    "or its chain is not known yet");
		else
			https_reply(req, 200,
			    "application/pem-certificate-chain", ki->chain_pem,
			    strlen(ki->chain_pem), NULL);
	} else if (strcmp(p, "/v1/crl") == 0) {
		if (pd->pd_crl == NULL)
			reply_error(pd, req, 503, "crl_unavailable", "no CRL "
			    "has been signed yet");
		else
			https_reply(req, 200, "application/pkix-crl",
			    pd->pd_crl, pd->pd_crllen, NULL);
	} else
		reply_error(pd, req, 404, "not_found", "no such endpoint: "
		    "GET %.128s", p);
}

/* Prometheus text format 0.0.4. */
static void
count_cb(enum store_status st, const char *profile, int64_t n, void *arg)
{
	BIO *b = arg;

	BIO_printf(b, "hsmca_certificates{status=\"%s\",profile=\"%s\"} "
	    "%lld\n", status_names[st], profile, (long long)n);
}

/* Expiry: issued, unexpired certificates by profile within a window. */
#define EXPIRY_WINDOWS	3

static void
expiry_profile(const char *profile, const uint64_t *counts, void *arg)
{
	uint64_t (*n)[EXPIRY_WINDOWS] = arg;
	int i, j;

	/* A profile this daemon does not know is not on its gauges. */
	if ((i = profile_index(profile)) < 0)
		return;
	for (j = 0; j < EXPIRY_WINDOWS; j++)
		n[i][j] += counts[j];
}

static void
metrics_expiry(struct policyd *pd, BIO *b)
{
	static const struct {
		const char	*label;
		int64_t		 seconds;
	} windows[EXPIRY_WINDOWS] = {
		{ "1h", 3600 }, { "24h", 86400 }, { "7d", 7 * 86400 }
	};
	uint64_t n[5][EXPIRY_WINDOWS];
	int64_t now = (int64_t)time(NULL), soonest = 0;
	int64_t before[EXPIRY_WINDOWS];
	struct tm tm;
	size_t i, k;
	int j, have;
	char subject[256];
	X509 *x;

	memset(n, 0, sizeof(n));
	for (i = 0; i < EXPIRY_WINDOWS; i++)
		before[i] = now + windows[i].seconds;
	/* Counts, not rows: a scrape costs the same whatever the
	 * certificates hold, and is left out when the store fails. */
	have = store_expiring(pd->pd_store, now, before, EXPIRY_WINDOWS,
	    expiry_profile, n, &soonest) == STORE_OK;
	if (!have)
		log_warnx("metrics: expiry figures: %s",
		    store_error(pd->pd_store));
	BIO_printf(b, "# HELP hsmca_certificates_expiring Issued certificates, "
	    "neither revoked nor renewed, that expire within the window.\n"
	    "# TYPE hsmca_certificates_expiring gauge\n");
	for (i = 0; have && i < EXPIRY_WINDOWS; i++)
		for (j = 0; j < 5; j++)
			BIO_printf(b, "hsmca_certificates_expiring{profile=\"%s\","
			    "within=\"%s\"} %llu\n", profile_names[j],
			    windows[i].label, (unsigned long long)n[j][i]);
	BIO_printf(b, "# HELP hsmca_certificate_soonest_expiry_timestamp_seconds "
	    "The earliest notAfter of the issued certificates neither expired, "
	    "revoked nor renewed (0: "
	    "none).\n# TYPE hsmca_certificate_soonest_expiry_timestamp_seconds "
	    "gauge\n");
	if (have)
		BIO_printf(b, "hsmca_certificate_soonest_expiry_timestamp_seconds "
		    "%lld\n", (long long)soonest);
	BIO_printf(b, "# HELP hsmca_ca_not_after_timestamp_seconds notAfter of "
	    "each CA certificate in the signer's chains.\n"
	    "# TYPE hsmca_ca_not_after_timestamp_seconds gauge\n");
	for (k = 0; k < pd->pd_nkeys; k++)
		for (j = 0; j < sk_X509_num(pd->pd_keys[k].chain); j++) {
			x = sk_X509_value(pd->pd_keys[k].chain, j);
			if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1 ||
			    X509_NAME_oneline(X509_get_subject_name(x),
			    subject, sizeof(subject)) == NULL)
				continue;
			/* Label values: no quote, backslash or newline. */
			for (i = 0; subject[i] != '\0'; i++)
				if (subject[i] == '"' || subject[i] == '\\' ||
				    subject[i] == '\n')
					subject[i] = '_';
			BIO_printf(b, "hsmca_ca_not_after_timestamp_seconds{key="
			    "\"%s\",depth=\"%d\",subject=\"%s\"} %lld\n",
			    pd->pd_keys[k].name, j, subject,
			    (long long)timegm(&tm));
		}
}

static void
handle_metrics(struct policyd *pd, struct https_request *req)
{
	struct policyd_metrics *m = &pd->pd_metrics;
	BUF_MEM *bm;
	BIO *b;
	int i;

	if ((b = BIO_new(BIO_s_mem())) == NULL) {
		reply_error(pd, req, 500, "internal", "out of memory");
		return;
	}
	BIO_printf(b, "# HELP hsmca_issued_total Certificates issued.\n"
	    "# TYPE hsmca_issued_total counter\n");
	for (i = 0; i < 5; i++)
		BIO_printf(b, "hsmca_issued_total{profile=\"%s\"} %llu\n",
		    profile_names[i], (unsigned long long)m->issued[i]);
	BIO_printf(b, "# HELP hsmca_renewed_total Certificates renewed.\n"
	    "# TYPE hsmca_renewed_total counter\n");
	for (i = 0; i < 5; i++)
		BIO_printf(b, "hsmca_renewed_total{profile=\"%s\"} %llu\n",
		    profile_names[i], (unsigned long long)m->renewed[i]);
	BIO_printf(b, "# HELP hsmca_revoked_total Certificates revoked.\n"
	    "# TYPE hsmca_revoked_total counter\n"
	    "hsmca_revoked_total %llu\n"

	    "# HELP hsmca_signer_errors_total Signer refusals and timeouts.\n"
	    "# TYPE hsmca_signer_errors_total counter\n"
	    "hsmca_signer_errors_total %llu\n"
	    "# HELP hsmca_signer_up Whether the signer answers with its "
	    "token up.\n# TYPE hsmca_signer_up gauge\nhsmca_signer_up %d\n"
	    "# HELP hsmca_signer_inflight Requests awaiting the signer.\n"
	    "# TYPE hsmca_signer_inflight gauge\nhsmca_signer_inflight %u\n"
	    "# HELP hsmca_https_connections Open HTTPS connections.\n"
	    "# TYPE hsmca_https_connections gauge\n"
	    "hsmca_https_connections %d\n",
	    (unsigned long long)m->revoked,
	    (unsigned long long)m->signer_errors, link_up(pd->pd_link),
	    link_inflight(pd->pd_link), https_connections(pd->pd_https));
	BIO_printf(b, "# HELP hsmca_denied_total Requests refused with a "
	    "4xx, by error code.\n# TYPE hsmca_denied_total counter\n");
	for (i = 0; i < (int)(sizeof(m->denied_by) / sizeof(m->denied_by[0])) &&
	    m->denied_by[i].code != NULL; i++)
		BIO_printf(b, "hsmca_denied_total{reason=\"%s\"} %llu\n",
		    m->denied_by[i].code,
		    (unsigned long long)m->denied_by[i].n);
	BIO_printf(b, "hsmca_denied_total{reason=\"other\"} %llu\n",
	    (unsigned long long)m->denied_other);
	BIO_printf(b, "# HELP hsmca_signing_seconds Signer round trip.\n"
	    "# TYPE hsmca_signing_seconds histogram\n");
	for (i = 0; i < 12; i++)
		BIO_printf(b, "hsmca_signing_seconds_bucket{le=\"%g\"} %llu\n",
		    latency_bounds[i] / 1e3,
		    (unsigned long long)m->latency_buckets[i]);
	BIO_printf(b, "hsmca_signing_seconds_bucket{le=\"+Inf\"} %llu\n"
	    "hsmca_signing_seconds_sum %.6f\n"
	    "hsmca_signing_seconds_count %llu\n",
	    (unsigned long long)m->latency_count, m->latency_sum,
	    (unsigned long long)m->latency_count);
	BIO_printf(b, "# HELP hsmca_certificates Inventory rows by status "
	    "and profile.\n# TYPE hsmca_certificates gauge\n");
	store_count(pd->pd_store, count_cb, b);
	metrics_expiry(pd, b);
	BIO_get_mem_ptr(b, &bm);
	https_reply(req, 200, "text/plain; version=0.0.4", bm->data,
	    bm->length, NULL);
	BIO_free(b);
}
