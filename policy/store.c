/*
 * The inventory store, back end independent part: picks the back end from
 * the URI scheme, checks the syntax of every argument (everything here may
 * come from the network) and clears every output, then forwards to the
 * back end's ops table.  A PostgreSQL back end is one more table in
 * store_backends[].
 */
#include "config.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define STORE_TEXT_MAX		65536		/* any one text field */
#define STORE_DER_MAX		(1024 * 1024)	/* one certificate */
#define STORE_TOKEN_USES_MAX	1000000

struct store {
	const struct store_ops	*st_ops;
	void			*st_be;
	int			 st_err_here;	/* st_err, not the back end's */
	int			 st_batch;	/* between batch begin and end */
	pthread_mutex_t		*st_wlock;	/* shared write lock, or NULL */
	char			 st_err[256];
};

static const struct {
	const char		*sb_scheme;	/* with the colon */
	const struct store_ops	*sb_ops;
} store_backends[] = {
	{ "sqlite:", &store_sqlite_ops },
};

static int	store_fail_arg(struct store *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

void
store_cert_clear(struct store_cert *c)
{
	if (c == NULL)
		return;
	free(c->requester);
	free(c->rule);
	free(c->profile);
	free(c->key_name);
	free(c->identity);
	free(c->subject);
	free(c->sans);
	free(c->renewed_from);
	free(c->renewed_by);
	free(c->failure);
	free(c->der);
	memset(c, 0, sizeof(*c));
}

static void
store_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
store_set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Records an argument error; the next store_error() returns it. */
static int
store_fail_arg(struct store *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->st_err, sizeof(s->st_err), fmt, ap);
	va_end(ap);
	s->st_err_here = 1;
	return STORE_ERROR;
}

/* A back end's answer; after a failure its text is the current one (a
 * back end also explains STORE_NOTFOUND, STORE_CONFLICT and the rest). */
static int
store_from_backend(struct store *s, int rc)
{
	if (rc != STORE_OK)
		s->st_err_here = 0;
	return rc;
}

/*
 * Writes of this process's connections to one store take turns under the
 * lock they share (store_share_write_lock), so that one never waits in the
 * back end's busy handler for another.  Inside a batch the batch holds it.
 */
static void
store_write_lock(struct store *s)
{
	if (s->st_wlock != NULL && !s->st_batch)
		pthread_mutex_lock(s->st_wlock);
}

static void
store_write_unlock(struct store *s)
{
	if (s->st_wlock != NULL && !s->st_batch)
		pthread_mutex_unlock(s->st_wlock);
}

void
store_share_write_lock(struct store *s, pthread_mutex_t *lock)
{
	if (s != NULL && !s->st_batch)
		s->st_wlock = lock;
}

/*
 * A scheme is letters, digits, '+', '-' and '.' before the first colon,
 * starting with a letter.  A plain path that looks like one ("a:b.db") is
 * refused rather than guessed at; "./a:b.db" is a path.
 */
static int
store_has_scheme(const char *uri)
{
	const char *p = uri;

	if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
		return 0;
	for (p++; *p != '\0' && *p != ':'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' ||
		    *p == '.'))
			return 0;
	return *p == ':';
}

int
store_open(const char *uri, struct store **out, char *err, size_t errlen)
{
	const struct store_ops *ops = NULL;
	const char *target = NULL;
	struct store *s;
	size_t i, n;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out == NULL) {
		store_set_err(err, errlen, "store_open: no output pointer");
		return STORE_ERROR;
	}
	*out = NULL;
	if (uri == NULL || uri[0] == '\0') {
		store_set_err(err, errlen, "store: empty store URI");
		return STORE_ERROR;
	}
	for (i = 0; i < sizeof(store_backends) / sizeof(store_backends[0]);
	    i++) {
		n = strlen(store_backends[i].sb_scheme);
		if (strncmp(uri, store_backends[i].sb_scheme, n) == 0) {
			ops = store_backends[i].sb_ops;
			target = uri + n;
			break;
		}
	}
	if (ops == NULL) {
		if (store_has_scheme(uri)) {
			store_set_err(err, errlen, "store: \"%.*s\": unknown "
			    "store scheme (this build knows sqlite:)",
			    (int)(strchr(uri, ':') - uri + 1), uri);
			return STORE_ERROR;
		}
		ops = &store_sqlite_ops;
		target = uri;
	}
	if (target[0] == '\0') {
		store_set_err(err, errlen, "store: \"%s\": no path after the "
		    "scheme", uri);
		return STORE_ERROR;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		store_set_err(err, errlen, "store: out of memory");
		return STORE_ERROR;
	}
	s->st_ops = ops;
	if (ops->so_open(target, &s->st_be, err, errlen) != STORE_OK) {
		free(s);
		return STORE_ERROR;
	}
	*out = s;
	return STORE_OK;
}

void
store_close(struct store *s)
{
	if (s == NULL)
		return;
	s->st_ops->so_close(s->st_be);
	free(s);
}

const char *
store_error(const struct store *s)
{
	if (s == NULL)
		return "no store";
	if (s->st_err_here)
		return s->st_err;
	return s->st_ops->so_error(s->st_be);
}

static int
store_hex_valid(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* Up to 40 bytes of untrusted text, fit for an error message and a log
 * line: anything but printable ASCII becomes '?'. */
static const char *
store_printable(const char *in, char out[44])
{
	size_t i;

	for (i = 0; i < 40 && in[i] != '\0'; i++)
		out[i] = (in[i] >= 0x20 && in[i] < 0x7f && in[i] != '"') ?
		    in[i] : '?';
	if (i == 40 && in[i] != '\0') {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
	return out;
}

/* Lowercase hex, 1 to 40 digits, no leading zero, not zero (RFC 5280
 * serials are positive). */
static int
store_check_serial(struct store *s, const char *op, const char *serial)
{
	char text[44];
	size_t len;

	if (serial == NULL)
		return store_fail_arg(s, "%s: no serial", op);
	len = strnlen(serial, 41);
	if (len == 0 || len > 40 || !store_hex_valid(serial, len) ||
	    serial[0] == '0')
		return store_fail_arg(s, "%s: serial \"%s\" is not 1 to 40 "
		    "lowercase hex digits without leading zeros", op,
		    store_printable(serial, text));
	return STORE_OK;
}

static int
store_check_request_id(struct store *s, const char *op, const char *rid)
{
	char text[44];
	size_t len;

	if (rid == NULL)
		return store_fail_arg(s, "%s: no request id", op);
	len = strnlen(rid, 33);
	if (len != 32 || !store_hex_valid(rid, len))
		return store_fail_arg(s, "%s: request id \"%s\" is not 32 "
		    "lowercase hex digits", op, store_printable(rid, text));
	return STORE_OK;
}

static int
store_check_text(struct store *s, const char *op, const char *field,
    const char *text, int nullok)
{
	if (text == NULL) {
		if (nullok)
			return STORE_OK;
		return store_fail_arg(s, "%s: %s missing", op, field);
	}
	if (strnlen(text, STORE_TEXT_MAX + 1) > STORE_TEXT_MAX)
		return store_fail_arg(s, "%s: %s longer than %d bytes", op,
		    field, STORE_TEXT_MAX);
	return STORE_OK;
}

static int
store_pending_check(struct store *s, const char *op,
    const struct store_cert *c, int64_t *id)
{
	if (id != NULL)
		*id = 0;
	if (c == NULL || id == NULL)
		return store_fail_arg(s, "%s: no certificate or id", op);
	if (store_check_request_id(s, op, c->request_id) != STORE_OK ||
	    store_check_text(s, op, "requester", c->requester, 0) != STORE_OK ||
	    store_check_text(s, op, "rule", c->rule, 0) != STORE_OK ||
	    store_check_text(s, op, "profile", c->profile, 0) != STORE_OK ||
	    store_check_text(s, op, "key_name", c->key_name, 0) != STORE_OK ||
	    store_check_text(s, op, "identity", c->identity, 0) != STORE_OK ||
	    store_check_text(s, op, "subject", c->subject, 0) != STORE_OK ||
	    store_check_text(s, op, "sans", c->sans, 0) != STORE_OK)
		return STORE_ERROR;
	if (c->renewed_from != NULL &&
	    store_check_serial(s, "pending_add: renewed_from",
	    c->renewed_from) != STORE_OK)
		return STORE_ERROR;
	return STORE_OK;
}

int
store_pending_add(struct store *s, const struct store_cert *c, int64_t *id)
{
	int rc;

	if (s == NULL)
		return STORE_ERROR;
	if (store_pending_check(s, "pending_add", c, id) != STORE_OK)
		return STORE_ERROR;
	store_write_lock(s);
	rc = store_from_backend(s, s->st_ops->so_pending_add(s->st_be, c,
	    NULL, 0, NULL, id));
	store_write_unlock(s);
	return rc;
}

int
store_pending_add_spend(struct store *s, const struct store_cert *c,
    const uint8_t hash[32], int64_t now, int64_t *id)
{
	int rc;

	if (s == NULL)
		return STORE_ERROR;
	if (store_pending_check(s, "pending_add", c, id) != STORE_OK)
		return STORE_ERROR;
	if (hash == NULL)
		return store_fail_arg(s, "pending_add: no token hash");
	store_write_lock(s);
	rc = store_from_backend(s, s->st_ops->so_pending_add(s->st_be, c,
	    hash, now, NULL, id));
	store_write_unlock(s);
	return rc;
}

int
store_pending_add_caller(struct store *s, const struct store_cert *c,
    const char *caller_serial, int64_t *id)
{
	int rc;

	if (s == NULL)
		return STORE_ERROR;
	if (store_pending_check(s, "pending_add", c, id) != STORE_OK ||
	    store_check_serial(s, "pending_add", caller_serial) != STORE_OK)
		return STORE_ERROR;
	store_write_lock(s);
	rc = store_from_backend(s, s->st_ops->so_pending_add(s->st_be, c,
	    NULL, 0, caller_serial, id));
	store_write_unlock(s);
	return rc;
}

int
store_complete(struct store *s, int64_t id, const char *serial,
    const uint8_t *der, size_t derlen, int64_t not_before, int64_t not_after)
{
	int rc;

	if (s == NULL)
		return STORE_ERROR;
	if (store_check_serial(s, "complete", serial) != STORE_OK)
		return STORE_ERROR;
	if (der == NULL || derlen == 0 || derlen > STORE_DER_MAX)
		return store_fail_arg(s, "complete: certificate of %zu bytes "
		    "(1 to %d)", der == NULL ? 0 : derlen, STORE_DER_MAX);
	store_write_lock(s);
	rc = store_from_backend(s, s->st_ops->so_complete(s->st_be, id,
	    serial, der, derlen, not_before, not_after));
	store_write_unlock(s);
	return rc;
}

int
store_fail(struct store *s, int64_t id, const char *why)
{
	int rc;

	if (s == NULL)
		return STORE_ERROR;
	if (store_check_text(s, "fail", "reason", why, 0) != STORE_OK)
		return STORE_ERROR;
	store_write_lock(s);
	rc = store_from_backend(s, s->st_ops->so_fail(s->st_be, id, why));
	store_write_unlock(s);
	return rc;
}

int
store_pending(struct store *s, store_cert_cb cb, void *arg)
{
	if (s == NULL)
		return STORE_ERROR;
	if (cb == NULL)
		return store_fail_arg(s, "pending: no callback");
	return store_from_backend(s, s->st_ops->so_pending(s->st_be, cb, arg));
}

int
store_get(struct store *s, const char *serial, struct store_cert *out)
{
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (s == NULL)
		return STORE_ERROR;
	if (out == NULL)
		return store_fail_arg(s, "get: no output");
	if (store_check_serial(s, "get", serial) != STORE_OK)
		return STORE_ERROR;
	return store_from_backend(s, s->st_ops->so_get(s->st_be, serial, out));
}

int
store_get_by_request(struct store *s, const char *request_id,
    struct store_cert *out)
{
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (s == NULL)
		return STORE_ERROR;
	if (out == NULL)
		return store_fail_arg(s, "get_by_request: no output");
	if (store_check_request_id(s, "get_by_request", request_id) !=
	    STORE_OK)
		return STORE_ERROR;
	return store_from_backend(s, s->st_ops->so_get_by_request(s->st_be,
	    request_id, out));
}

int
store_list(struct store *s, const struct store_filter *f, store_cert_cb cb,
    void *arg)
{
	static const struct store_filter any = { .status = -1 };

	if (s == NULL)
		return STORE_ERROR;
	if (cb == NULL)
		return store_fail_arg(s, "list: no callback");
	if (f == NULL)
		f = &any;
	if (f->status < -1 || f->status > STORE_REVOKED)
		return store_fail_arg(s, "list: status filter %d unknown",
		    f->status);
	if (store_check_text(s, "list", "identity", f->identity, 1) !=
	    STORE_OK ||
	    store_check_text(s, "list", "requester", f->requester, 1) !=
	    STORE_OK)
		return STORE_ERROR;
	return store_from_backend(s, s->st_ops->so_list(s->st_be, f, cb, arg));
}

/* RFC 5280 CRLReason codes that revoke: 7 is unused and removeFromCRL (8)
 * only undoes a hold in a delta CRL. */
static int
store_reason_valid(int reason)
{
	return (reason >= 0 && reason <= 6) || reason == 9 || reason == 10;
}

int
store_revoke(struct store *s, const char *serial, int reason, int64_t when)
{
	int rc;

	if (s == NULL)
		return STORE_ERROR;
	if (store_check_serial(s, "revoke", serial) != STORE_OK)
		return STORE_ERROR;
	if (!store_reason_valid(reason))
		return store_fail_arg(s, "revoke: reason code %d is not an RFC "
		    "5280 revocation reason", reason);
	if (when <= 0)
		return store_fail_arg(s, "revoke: revocation time %lld is not "
		    "after the epoch", (long long)when);
	store_write_lock(s);
	rc = store_from_backend(s, s->st_ops->so_revoke(s->st_be, serial,
	    reason, when));
	store_write_unlock(s);
	return rc;
}

int
store_count(struct store *s, void (*cb)(enum store_status, const char *,
    int64_t, void *), void *arg)
{
	if (s == NULL)
		return STORE_ERROR;
	if (cb == NULL)
		return store_fail_arg(s, "count: no callback");
	return store_from_backend(s, s->st_ops->so_count(s->st_be, cb, arg));
}

int
store_expiring(struct store *s, int64_t now, const int64_t *before, size_t n,
    void (*cb)(const char *, const uint64_t *, void *), void *arg,
    int64_t *soonest)
{
	size_t i;

	if (s == NULL)
		return STORE_ERROR;
	if (cb == NULL || soonest == NULL || before == NULL)
		return store_fail_arg(s, "expiring: no callback, bounds or "
		    "result");
	if (n < 1 || n > STORE_EXPIRY_MAX)
		return store_fail_arg(s, "expiring: %zu bounds (1 to %d)", n,
		    STORE_EXPIRY_MAX);
	for (i = 0; i < n; i++)
		if (before[i] <= (i == 0 ? now : before[i - 1]))
			return store_fail_arg(s, "expiring: bound %zu is not "
			    "after %s", i, i == 0 ? "now" : "the one before");
	return store_from_backend(s, s->st_ops->so_expiring(s->st_be, now,
	    before, n, cb, arg, soonest));
}

int
store_token_add(struct store *s, const uint8_t hash[32],
    const char *requester, int64_t expires_at, int uses)
{
	const char *op = "token_add";
	int rc;

	if (s == NULL)
		return STORE_ERROR;
	if (hash == NULL)
		return store_fail_arg(s, "%s: no token hash", op);
	if (store_check_text(s, op, "requester", requester, 0) != STORE_OK)
		return STORE_ERROR;
	if (requester[0] == '\0')
		return store_fail_arg(s, "%s: empty requester", op);
	if (expires_at <= 0)
		return store_fail_arg(s, "%s: expiry %lld is not after the "
		    "epoch", op, (long long)expires_at);
	if (uses < 1 || uses > STORE_TOKEN_USES_MAX)
		return store_fail_arg(s, "%s: %d uses (1 to %d)", op, uses,
		    STORE_TOKEN_USES_MAX);
	store_write_lock(s);
	rc = store_from_backend(s, s->st_ops->so_token_add(s->st_be, hash,
	    requester, expires_at, uses));
	store_write_unlock(s);
	return rc;
}

static int
store_token_args(struct store *s, const char *op, const uint8_t hash[32],
    char *requester, size_t requesterlen)
{
	if (requester != NULL && requesterlen > 0)
		requester[0] = '\0';
	if (s == NULL)
		return STORE_ERROR;
	if (hash == NULL)
		return store_fail_arg(s, "%s: no token hash", op);
	if (requester == NULL || requesterlen == 0)
		return store_fail_arg(s, "%s: no requester buffer", op);
	return STORE_OK;
}

int
store_token_use(struct store *s, const uint8_t hash[32], int64_t now,
    char *requester, size_t requesterlen)
{
	int rc;

	if (store_token_args(s, "token_use", hash, requester, requesterlen) !=
	    STORE_OK)
		return STORE_ERROR;
	store_write_lock(s);
	rc = store_from_backend(s, s->st_ops->so_token_use(s->st_be, hash,
	    now, requester, requesterlen));
	store_write_unlock(s);
	return rc;
}

int
store_token_check(struct store *s, const uint8_t hash[32], int64_t now,
    char *requester, size_t requesterlen)
{
	if (store_token_args(s, "token_check", hash, requester,
	    requesterlen) != STORE_OK)
		return STORE_ERROR;
	return store_from_backend(s, s->st_ops->so_token_check(s->st_be, hash,
	    now, requester, requesterlen));
}

int
store_crl_next(struct store *s, int64_t *number)
{
	int rc;

	if (number != NULL)
		*number = 0;
	if (s == NULL)
		return STORE_ERROR;
	if (number == NULL)
		return store_fail_arg(s, "crl_next: no output");
	store_write_lock(s);
	rc = store_from_backend(s, s->st_ops->so_crl_next(s->st_be, number));
	store_write_unlock(s);
	return rc;
}

int
store_batch_begin(struct store *s)
{
	if (s == NULL)
		return STORE_ERROR;
	if (s->st_batch)
		return store_fail_arg(s, "batch: one is open already");
	s->st_err_here = 0;
	store_write_lock(s);
	if (s->st_ops->so_batch_begin(s->st_be) != STORE_OK) {
		store_write_unlock(s);
		return STORE_ERROR;
	}
	s->st_batch = 1;
	return STORE_OK;
}

int
store_batch_end(struct store *s, int commit)
{
	int rc;

	if (s == NULL)
		return STORE_ERROR;
	if (!s->st_batch)
		return store_fail_arg(s, "batch: none is open");
	s->st_batch = 0;
	s->st_err_here = 0;
	rc = s->st_ops->so_batch_end(s->st_be, commit);
	store_write_unlock(s);
	return rc;
}
