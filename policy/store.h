/*
 * The inventory of the policy daemon: every certificate it asked the signer
 * for, the bootstrap tokens, the CRL number.  One interface, so that a
 * PostgreSQL back end can follow the SQLite one (store_sqlite.c).
 *
 * A row is added PENDING before the signer is asked and completed (ISSUED,
 * with serial and DER) or FAILED after; at start the daemon reconciles the
 * PENDING rows against the signer's audit log.  Serials are unique over the
 * whole table, so a serial can never be recorded twice.
 *
 * Every call is safe from one thread at a time per store; the daemon uses
 * one store from its event loop.  Strings in results are owned by the
 * result and freed by store_cert_clear().
 */
#ifndef HSMCA_STORE_H
#define HSMCA_STORE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum store_rc {
	STORE_OK = 0,
	STORE_NOTFOUND,		/* no such row (or token) */
	STORE_CONFLICT,		/* state forbids it: already revoked, not issued, serial used */
	STORE_EXPIRED,		/* bootstrap token past its expiry */
	STORE_EXHAUSTED,	/* bootstrap token has no use left */
	STORE_ERROR,		/* the back end failed; err says why */
	STORE_CALLER_REVOKED	/* the caller's certificate is no longer issued */
};

enum store_status {
	STORE_PENDING = 0,
	STORE_ISSUED,
	STORE_FAILED,
	STORE_REVOKED
};

struct store_cert {
	int64_t			 id;
	enum store_status	 status;
	char			 request_id[33];	/* IPC request id, lowercase hex */
	char			 serial[41];		/* lowercase hex, no leading zeros; "" while pending */
	char			*requester;	/* who asked (token requester or mTLS identity) */
	char			*rule;		/* policy rule that allowed it */
	char			*profile;	/* svid, server, client, peer, subca */
	char			*key_name;	/* signer key that signs it */
	char			*identity;	/* SPIFFE ID, else first DNS name */
	char			*subject;	/* RFC 2253 text, may be "" */
	char			*sans;		/* JSON array of "DNS:..", "URI:..", "IP:.." */
	char			*renewed_from;	/* serial this one renews, or NULL */
	char			*renewed_by;	/* serial that renewed this one, or NULL */
	char			*failure;	/* why, for STORE_FAILED; else NULL */
	int64_t			 created_at;	/* Unix seconds */
	int64_t			 not_before;	/* 0 while pending */
	int64_t			 not_after;
	int64_t			 revoked_at;	/* 0 unless revoked */
	int			 reason;	/* RFC 5280 CRLReason code; -1 unless revoked */
	uint8_t			*der;		/* the certificate; NULL while pending */
	size_t			 derlen;
};

void	store_cert_clear(struct store_cert *);

struct store_filter {
	int		 status;	/* an enum store_status, or -1 for any */
	const char	*identity;	/* exact match, or NULL */
	const char	*requester;	/* exact match, or NULL */
	int64_t		 not_after_before;	/* only rows with not_after < this; 0 = no bound */
	int64_t		 not_after_from;	/* only rows with not_after >= this; 0 = no bound */
	size_t		 limit;		/* 0 = no limit */
};

/* Called per row; a non-zero return stops the walk and is returned. */
typedef int (*store_cert_cb)(const struct store_cert *, void *arg);

struct store;

/*
 * Opens (creating it and its schema when absent) the store named by uri:
 * "sqlite:PATH" or a plain PATH means SQLite in WAL mode with
 * synchronous=FULL, file created 0600.  Returns STORE_OK or STORE_ERROR
 * with a reason in err.
 */
int	store_open(const char *uri, struct store **, char *err, size_t errlen);
void	store_close(struct store *);
/* The back end's last error text, for logs. */
const char *store_error(const struct store *);

/*
 * Certificates.  store_pending_add records c's request_id, requester, rule,
 * profile, key_name, identity, subject, sans, renewed_from and created_at
 * as a PENDING row and returns its id.  A request_id already present is
 * STORE_CONFLICT.
 */
int	store_pending_add(struct store *, const struct store_cert *c, int64_t *id);
/*
 * store_pending_add and store_token_use in one transaction: the row is
 * added only with a use of the token spent, and a use is spent only with
 * the row (one commit, one flush to stable storage, instead of two).
 * The token's errors are store_token_use's.
 */
int	store_pending_add_spend(struct store *, const struct store_cert *c,
	    const uint8_t hash[32], int64_t now, int64_t *id);
/*
 * store_pending_add for a caller authenticated by a certificate of this
 * inventory: the row is added only if caller_serial is still ISSUED in
 * the same transaction, else STORE_CALLER_REVOKED (revoked, failed or
 * gone), so that a revocation committed before the row stops the
 * issuance however long the request took to get here.
 */
int	store_pending_add_caller(struct store *, const struct store_cert *c,
	    const char *caller_serial, int64_t *id);
/* PENDING -> ISSUED; sets renewed_by on the renewed_from row in the same
 * transaction.  A serial already used anywhere is STORE_CONFLICT. */
int	store_complete(struct store *, int64_t id, const char *serial,
	    const uint8_t *der, size_t derlen, int64_t not_before,
	    int64_t not_after);
/* PENDING -> FAILED with the reason. */
int	store_fail(struct store *, int64_t id, const char *why);
/* Every PENDING row, oldest first. */
int	store_pending(struct store *, store_cert_cb, void *arg);
int	store_get(struct store *, const char *serial, struct store_cert *out);
int	store_get_by_request(struct store *, const char *request_id,
	    struct store_cert *out);
/* Rows matching f, ordered by not_after then id. */
int	store_list(struct store *, const struct store_filter *f,
	    store_cert_cb, void *arg);
/* ISSUED -> REVOKED.  Unknown serial: STORE_NOTFOUND; pending, failed or
 * already revoked: STORE_CONFLICT. */
int	store_revoke(struct store *, const char *serial, int reason,
	    int64_t when);
/* Counts by status and profile, for metrics: cb(status, profile, count). */
int	store_count(struct store *,
	    void (*cb)(enum store_status, const char *profile, int64_t n,
	    void *arg), void *arg);

/*
 * The issued certificates, neither revoked nor renewed, that have not
 * expired at now (not_after >= now), for /metrics without reading whole
 * rows: for each profile that has any expiring before the last of
 * before[0..n-1] (1 to STORE_EXPIRY_MAX bounds, ascending, after now),
 * cb(profile, counts, arg) once, with counts[i] how many expire before
 * before[i]; and in *soonest the earliest not_after among all of them,
 * however far (0: none).  The callbacks run after the reading is done.
 */
#define STORE_EXPIRY_MAX	8
int	store_expiring(struct store *, int64_t now, const int64_t *before,
	    size_t n, void (*cb)(const char *profile, const uint64_t *counts,
	    void *arg), void *arg, int64_t *soonest);

/*
 * Bootstrap tokens, stored only as SHA-256 of the token text.  A token is
 * bound to one requester, expires, and has a number of uses.
 * store_token_use checks and spends one use in one transaction and copies
 * the requester name out.
 */
int	store_token_add(struct store *, const uint8_t hash[32],
	    const char *requester, int64_t expires_at, int uses);
int	store_token_use(struct store *, const uint8_t hash[32], int64_t now,
	    char *requester, size_t requesterlen);
/* What store_token_use checks, and the requester, without spending a use:
 * a request the policy then denies keeps its use. */
int	store_token_check(struct store *, const uint8_t hash[32], int64_t now,
	    char *requester, size_t requesterlen);
/* Next CRL number (monotonic, starts at 1), persisted before it returns. */
int	store_crl_next(struct store *, int64_t *number);

/*
 * Group commit.  Between store_batch_begin and store_batch_end every call
 * runs inside one transaction, each write in a savepoint of its own: a
 * write that fails undoes only itself, and store_batch_end(s, 1) commits
 * the others with one flush to stable storage.  Until store_batch_end
 * returns STORE_OK nothing of the batch is stored, so a write's STORE_OK
 * is provisional until then: a caller acts on it (tells a client, asks the
 * signer) only after the commit.  store_batch_end(s, 0) undoes the batch.
 * When the back end lost the transaction on its own (a full disk, an I/O
 * error) every later write of the batch and its end return STORE_ERROR.
 * Batches do not nest.
 */
int	store_batch_begin(struct store *);
int	store_batch_end(struct store *, int commit);

/*
 * Several connections of one process to the same store (a thread's and
 * the event loop's) share lock: every write, and every batch from begin
 * to end, holds it, so a write waits for the other connection's current
 * write or batch instead of polling in the back end's busy handler.
 * NULL: none (the default).  Not while a batch is open.
 */
void	store_share_write_lock(struct store *, pthread_mutex_t *lock);

/*
 * The back end interface, for store.c and the back ends only.  store.c
 * checks the syntax and range of every argument and clears every output
 * before it calls one of these, so a back end sees only well-formed
 * input; a back end answers with the same codes as the functions above.
 */
struct store_ops {
	const char	*so_name;	/* "sqlite" */
	int		(*so_open)(const char *target, void **be, char *err,
			    size_t errlen);
	void		(*so_close)(void *be);
	const char	*(*so_error)(const void *be);
	/* token_hash NULL: no token use to spend with the row;
	 * caller_serial NULL: no caller certificate to check with it. */
	int		(*so_pending_add)(void *be, const struct store_cert *,
			    const uint8_t *token_hash, int64_t now,
			    const char *caller_serial, int64_t *id);
	int		(*so_complete)(void *be, int64_t id, const char *serial,
			    const uint8_t *der, size_t derlen, int64_t not_before,
			    int64_t not_after);
	int		(*so_fail)(void *be, int64_t id, const char *why);
	int		(*so_pending)(void *be, store_cert_cb, void *arg);
	int		(*so_get)(void *be, const char *serial,
			    struct store_cert *out);
	int		(*so_get_by_request)(void *be, const char *request_id,
			    struct store_cert *out);
	int		(*so_list)(void *be, const struct store_filter *f,
			    store_cert_cb, void *arg);
	int		(*so_revoke)(void *be, const char *serial, int reason,
			    int64_t when);
	int		(*so_count)(void *be, void (*)(enum store_status,
			    const char *, int64_t, void *), void *arg);
	int		(*so_expiring)(void *be, int64_t now,
			    const int64_t *before, size_t n,
			    void (*)(const char *, const uint64_t *, void *),
			    void *arg, int64_t *soonest);
	int		(*so_token_add)(void *be, const uint8_t hash[32],
			    const char *requester, int64_t expires_at, int uses);
	int		(*so_token_use)(void *be, const uint8_t hash[32],
			    int64_t now, char *requester, size_t requesterlen);
	int		(*so_token_check)(void *be, const uint8_t hash[32],
			    int64_t now, char *requester, size_t requesterlen);
	int		(*so_crl_next)(void *be, int64_t *number);
	int		(*so_batch_begin)(void *be);
	int		(*so_batch_end)(void *be, int commit);
};

/* store_sqlite.c */
extern const struct store_ops store_sqlite_ops;

#endif
