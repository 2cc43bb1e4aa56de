/*
 * Inventory writes off the event loop, with group commit (storeq.h), on a
 * work queue (workq.h) of one thread that takes up to STOREQ_BATCH_MAX
 * writes at a time: while one batch is being flushed the next gathers.
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "storeq.h"
#include "workq.h"

enum storeq_kind {
	STOREQ_ADD,
	STOREQ_COMPLETE,
	STOREQ_FAIL
};

struct storeq_op {
	struct workq_item	 o_item;	/* first */
	enum storeq_kind	 o_kind;
	struct store_cert	 o_cert;	/* ADD: the row; strings owned */
	uint8_t			 o_hash[32];	/* ADD: the token, if o_token */
	int			 o_token;
	char			*o_caller;	/* ADD: the caller's certificate */
	int64_t			 o_now;
	int64_t			 o_id;		/* COMPLETE, FAIL: the row */
	char			 o_serial[41];
	uint8_t			*o_der;
	size_t			 o_derlen;
	int64_t			 o_not_before;
	int64_t			 o_not_after;
	char			*o_why;		/* FAIL */
	storeq_cb		 o_cb;
	void			*o_arg;
	int			 o_rc;		/* the result */
	int64_t			 o_newid;
	char			 o_err[256];
};

struct storeq {
	struct workq		*q_work;
	struct store		*q_store;	/* the thread's connection */
	struct store		*q_shared;	/* the loop's, sharing q_wlock */
	pthread_mutex_t		 q_wlock;	/* the two connections' writes */
	int			 q_wlock_made;
	pthread_mutex_t		 q_stats_lock;
	int			 q_stats_made;
	uint64_t		 q_commits;
	uint64_t		 q_writes;
};

static void
storeq_op_free(struct storeq_op *op)
{
	store_cert_clear(&op->o_cert);
	free(op->o_der);
	free(op->o_why);
	free(op->o_caller);
	free(op);
}

static void
storeq_run_one(struct storeq *q, struct storeq_op *op)
{
	struct store *s = q->q_store;

	switch (op->o_kind) {
	case STOREQ_ADD:
		if (op->o_token)
			op->o_rc = store_pending_add_spend(s, &op->o_cert,
			    op->o_hash, op->o_now, &op->o_newid);
		else if (op->o_caller != NULL)
			op->o_rc = store_pending_add_caller(s, &op->o_cert,
			    op->o_caller, &op->o_newid);
		else
			op->o_rc = store_pending_add(s, &op->o_cert,
			    &op->o_newid);
		break;
	case STOREQ_COMPLETE:
		op->o_rc = store_complete(s, op->o_id, op->o_serial,
		    op->o_der, op->o_derlen, op->o_not_before,
		    op->o_not_after);
		break;
	case STOREQ_FAIL:
		op->o_rc = store_fail(s, op->o_id, op->o_why);
		break;
	}
	if (op->o_rc != STORE_OK) {
		op->o_newid = 0;
		snprintf(op->o_err, sizeof(op->o_err), "%s", store_error(s));
	}
}

/*
 * One batch, on the thread: every write in a savepoint, one commit.  When
 * the batch cannot begin or commit, nothing of it is stored, and every
 * write says so (a write that failed on its own keeps its own reason).
 */
static void
storeq_run(void *ctx, struct workq_item *batch)
{
	struct storeq *q = ctx;
	struct workq_item *it;
	struct storeq_op *op;
	char why[200];
	int n = 0;

	if (store_batch_begin(q->q_store) != STORE_OK) {
		snprintf(why, sizeof(why), "%s", store_error(q->q_store));
		for (it = batch; it != NULL; it = it->wi_next) {
			op = (struct storeq_op *)it;
			op->o_rc = STORE_ERROR;
			op->o_newid = 0;
			snprintf(op->o_err, sizeof(op->o_err), "%s", why);
		}
		return;
	}
	for (it = batch; it != NULL; it = it->wi_next, n++)
		storeq_run_one(q, (struct storeq_op *)it);
	if (store_batch_end(q->q_store, 1) != STORE_OK) {
		snprintf(why, sizeof(why), "%s", store_error(q->q_store));
		log_warnx("inventory: a batch of %d writes was not committed: "
		    "%s", n, why);
		for (it = batch; it != NULL; it = it->wi_next) {
			op = (struct storeq_op *)it;
			if (op->o_rc != STORE_OK)
				continue;
			op->o_rc = STORE_ERROR;
			op->o_newid = 0;
			snprintf(op->o_err, sizeof(op->o_err), "not committed: "
			    "%s", why);
		}
		return;
	}
	pthread_mutex_lock(&q->q_stats_lock);
	q->q_commits++;
	q->q_writes += (uint64_t)n;
	pthread_mutex_unlock(&q->q_stats_lock);
}

/* On the loop, after the commit: the write's callback, then it goes. */
static void
storeq_done(void *ctx, struct workq_item *it)
{
	struct storeq_op *op = (struct storeq_op *)it;

	(void)ctx;
	if (op->o_cb != NULL)
		op->o_cb(op->o_arg, op->o_rc, op->o_newid,
		    op->o_rc == STORE_OK ? "" : op->o_err);
	storeq_op_free(op);
}

static const struct workq_ops storeq_ops = {
	.wo_run = storeq_run,
	.wo_done = storeq_done,
};

struct storeq *
storeq_new(struct event_base *base, const char *uri, struct store *shared,
    char *err, size_t errlen)
{
	struct storeq *q;

	if ((q = calloc(1, sizeof(*q))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (pthread_mutex_init(&q->q_stats_lock, NULL) != 0) {
		snprintf(err, errlen, "cannot make a mutex");
		goto fail;
	}
	q->q_stats_made = 1;
	if (pthread_mutex_init(&q->q_wlock, NULL) != 0) {
		snprintf(err, errlen, "cannot make a mutex");
		goto fail;
	}
	q->q_wlock_made = 1;
	if (store_open(uri, &q->q_store, err, errlen) != STORE_OK)
		goto fail;
	store_share_write_lock(q->q_store, &q->q_wlock);
	store_share_write_lock(shared, &q->q_wlock);
	q->q_shared = shared;
	if ((q->q_work = workq_new(base, 1, STOREQ_BATCH_MAX, &storeq_ops, q,
	    err, errlen)) == NULL)
		goto fail;
	return q;
 fail:
	storeq_free(q);
	return NULL;
}

void
storeq_free(struct storeq *q)
{
	if (q == NULL)
		return;
	/* Runs and calls back what is queued, and what that queues. */
	workq_free(q->q_work);
	if (q->q_store != NULL)
		log_info("inventory: %llu issuance writes in %llu commits",
		    (unsigned long long)q->q_writes,
		    (unsigned long long)q->q_commits);
	store_close(q->q_store);
	store_share_write_lock(q->q_shared, NULL);
	if (q->q_wlock_made)
		pthread_mutex_destroy(&q->q_wlock);
	if (q->q_stats_made)
		pthread_mutex_destroy(&q->q_stats_lock);
	free(q);
}

static void
storeq_push(struct storeq *q, struct storeq_op *op)
{
	workq_push(q->q_work, &op->o_item);
}

static char *
storeq_strdup(const char *s, int *bad)
{
	char *d;

	if (s == NULL)
		return NULL;
	if ((d = strdup(s)) == NULL)
		*bad = 1;
	return d;
}

int
storeq_pending_add(struct storeq *q, const struct store_cert *c,
    const uint8_t *token_hash, int64_t now, const char *caller_serial,
    storeq_cb cb, void *arg)
{
	struct storeq_op *op;
	int bad = 0;

	if (q == NULL || c == NULL ||
	    (token_hash != NULL && caller_serial != NULL) ||
	    (op = calloc(1, sizeof(*op))) == NULL)
		return -1;
	op->o_caller = storeq_strdup(caller_serial, &bad);
	op->o_kind = STOREQ_ADD;
	memcpy(op->o_cert.request_id, c->request_id,
	    sizeof(op->o_cert.request_id));
	op->o_cert.request_id[sizeof(op->o_cert.request_id) - 1] = '\0';
	op->o_cert.requester = storeq_strdup(c->requester, &bad);
	op->o_cert.rule = storeq_strdup(c->rule, &bad);
	op->o_cert.profile = storeq_strdup(c->profile, &bad);
	op->o_cert.key_name = storeq_strdup(c->key_name, &bad);
	op->o_cert.identity = storeq_strdup(c->identity, &bad);
	op->o_cert.subject = storeq_strdup(c->subject, &bad);
	op->o_cert.sans = storeq_strdup(c->sans, &bad);
	op->o_cert.renewed_from = storeq_strdup(c->renewed_from, &bad);
	op->o_cert.created_at = c->created_at;
	if (bad) {
		storeq_op_free(op);
		return -1;
	}
	if (token_hash != NULL) {
		memcpy(op->o_hash, token_hash, sizeof(op->o_hash));
		op->o_token = 1;
	}
	op->o_now = now;
	op->o_cb = cb;
	op->o_arg = arg;
	storeq_push(q, op);
	return 0;
}

int
storeq_complete(struct storeq *q, int64_t id, const char *serial,
    const uint8_t *der, size_t derlen, int64_t not_before, int64_t not_after,
    storeq_cb cb, void *arg)
{
	struct storeq_op *op;

	if (q == NULL || serial == NULL || der == NULL || derlen == 0 ||
	    (op = calloc(1, sizeof(*op))) == NULL)
		return -1;
	op->o_kind = STOREQ_COMPLETE;
	op->o_id = id;
	/* store_complete checks it: a longer one is cut and then refused */
	snprintf(op->o_serial, sizeof(op->o_serial), "%s", serial);
	if (strlen(serial) >= sizeof(op->o_serial))
		op->o_serial[0] = '\0';
	if ((op->o_der = malloc(derlen)) == NULL) {
		storeq_op_free(op);
		return -1;
	}
	memcpy(op->o_der, der, derlen);
	op->o_derlen = derlen;
	op->o_not_before = not_before;
	op->o_not_after = not_after;
	op->o_cb = cb;
	op->o_arg = arg;
	storeq_push(q, op);
	return 0;
}

int
storeq_fail(struct storeq *q, int64_t id, const char *why, storeq_cb cb,
    void *arg)
{
	struct storeq_op *op;

	if (q == NULL || why == NULL || (op = calloc(1, sizeof(*op))) == NULL)
		return -1;
	op->o_kind = STOREQ_FAIL;
	op->o_id = id;
	if ((op->o_why = strdup(why)) == NULL) {
		storeq_op_free(op);
		return -1;
	}
	op->o_cb = cb;
	op->o_arg = arg;
	storeq_push(q, op);
	return 0;
}

void
storeq_stats(struct storeq *q, uint64_t *commits, uint64_t *writes)
{
	pthread_mutex_lock(&q->q_stats_lock);
	*commits = q->q_commits;
	*writes = q->q_writes;
	pthread_mutex_unlock(&q->q_stats_lock);
}
