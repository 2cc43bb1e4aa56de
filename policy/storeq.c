/*
 * Inventory writes off the event loop, with group commit (storeq.h).
 *
 * The queue and the done list share one mutex.  The thread takes up to
 * STOREQ_BATCH_MAX writes, runs them in one batch outside the lock and
 * moves them to the done list; the thread that makes the done list
 * non-empty writes one byte to the pipe, and the loop empties the pipe
 * before it takes the list, so no finished write waits unannounced.
 * While one batch is being flushed the next one gathers in the queue:
 * that is the group commit.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "storeq.h"

enum storeq_kind {
	STOREQ_ADD,
	STOREQ_COMPLETE,
	STOREQ_FAIL
};

struct storeq_op {
	struct storeq_op	*o_next;
	enum storeq_kind	 o_kind;
	struct store_cert	 o_cert;	/* ADD: the row; strings owned */
	uint8_t			 o_hash[32];	/* ADD: the token, if o_token */
	int			 o_token;
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
	struct store		*q_store;	/* the thread's connection */
	struct store		*q_shared;	/* the loop's, sharing q_wlock */
	pthread_mutex_t		 q_wlock;	/* the two connections' writes */
	int			 q_wlock_made;
	pthread_mutex_t		 q_lock;
	pthread_cond_t		 q_cond;	/* queue not empty, or stop */
	struct storeq_op	*q_queue, **q_queue_tail;
	struct storeq_op	*q_done, **q_done_tail;
	int			 q_stop;
	int			 q_running;	/* the thread exists */
	pthread_t		 q_thread;
	int			 q_pipe[2];	/* the thread writes, the loop reads */
	struct event		*q_event;
	uint64_t		 q_commits;
	uint64_t		 q_writes;
};

static void
storeq_op_free(struct storeq_op *op)
{
	store_cert_clear(&op->o_cert);
	free(op->o_der);
	free(op->o_why);
	free(op);
}

static void
storeq_run_one(struct storeq *q, struct storeq_op *op)
{
	struct store *s = q->q_store;

	switch (op->o_kind) {
	case STOREQ_ADD:
		op->o_rc = op->o_token ?
		    store_pending_add_spend(s, &op->o_cert, op->o_hash,
		    op->o_now, &op->o_newid) :
		    store_pending_add(s, &op->o_cert, &op->o_newid);
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
 * One batch: every write in a savepoint, one commit.  When the batch
 * cannot begin or commit, nothing of it is stored, and every write says
 * so (a write that failed on its own keeps its own reason).
 */
static void
storeq_run_batch(struct storeq *q, struct storeq_op *batch)
{
	struct storeq_op *op;
	char why[200];
	int n = 0;

	if (store_batch_begin(q->q_store) != STORE_OK) {
		snprintf(why, sizeof(why), "%s", store_error(q->q_store));
		for (op = batch; op != NULL; op = op->o_next) {
			op->o_rc = STORE_ERROR;
			op->o_newid = 0;
			snprintf(op->o_err, sizeof(op->o_err), "%s", why);
		}
		return;
	}
	for (op = batch; op != NULL; op = op->o_next, n++)
		storeq_run_one(q, op);
	if (store_batch_end(q->q_store, 1) != STORE_OK) {
		snprintf(why, sizeof(why), "%s", store_error(q->q_store));
		log_warnx("inventory: a batch of %d writes was not committed: "
		    "%s", n, why);
		for (op = batch; op != NULL; op = op->o_next) {
			if (op->o_rc != STORE_OK)
				continue;
			op->o_rc = STORE_ERROR;
			op->o_newid = 0;
			snprintf(op->o_err, sizeof(op->o_err), "not committed: "
			    "%s", why);
		}
		return;
	}
	pthread_mutex_lock(&q->q_lock);
	q->q_commits++;
	q->q_writes += (uint64_t)n;
	pthread_mutex_unlock(&q->q_lock);
}

/* Takes up to STOREQ_BATCH_MAX queued writes; with the lock held. */
static struct storeq_op *
storeq_take_locked(struct storeq *q)
{
	struct storeq_op *batch = q->q_queue, *last = NULL, *op;
	int n = 0;

	for (op = q->q_queue; op != NULL && n < STOREQ_BATCH_MAX;
	    op = op->o_next, n++)
		last = op;
	if (last == NULL)
		return NULL;
	if ((q->q_queue = last->o_next) == NULL)
		q->q_queue_tail = &q->q_queue;
	last->o_next = NULL;
	return batch;
}

static void *
storeq_thread(void *arg)
{
	struct storeq *q = arg;
	struct storeq_op *batch, *last;
	int was_empty;
	ssize_t w;

	for (;;) {
		pthread_mutex_lock(&q->q_lock);
		while (q->q_queue == NULL && !q->q_stop)
			pthread_cond_wait(&q->q_cond, &q->q_lock);
		if (q->q_queue == NULL) {	/* stopping, nothing left */
			pthread_mutex_unlock(&q->q_lock);
			break;
		}
		batch = storeq_take_locked(q);
		pthread_mutex_unlock(&q->q_lock);

		storeq_run_batch(q, batch);

		for (last = batch; last->o_next != NULL; last = last->o_next)
			;
		pthread_mutex_lock(&q->q_lock);
		was_empty = q->q_done == NULL;
		*q->q_done_tail = batch;
		q->q_done_tail = &last->o_next;
		pthread_mutex_unlock(&q->q_lock);
		if (was_empty) {
			do
				w = write(q->q_pipe[1], "", 1);
			while (w == -1 && errno == EINTR);
			/* EAGAIN: the pipe is full of wakeups already */
		}
	}
	return NULL;
}

/* Calls back and frees every finished write; from the loop's thread. */
static void
storeq_deliver(struct storeq *q)
{
	struct storeq_op *list, *op;

	pthread_mutex_lock(&q->q_lock);
	list = q->q_done;
	q->q_done = NULL;
	q->q_done_tail = &q->q_done;
	pthread_mutex_unlock(&q->q_lock);
	while ((op = list) != NULL) {
		list = op->o_next;
		if (op->o_cb != NULL)
			op->o_cb(op->o_arg, op->o_rc, op->o_newid,
			    op->o_rc == STORE_OK ? "" : op->o_err);
		storeq_op_free(op);
	}
}

static void
storeq_on_done(evutil_socket_t fd, short what, void *arg)
{
	char buf[256];
	ssize_t n;

	(void)what;
	do
		n = read(fd, buf, sizeof(buf));
	while (n > 0 || (n == -1 && errno == EINTR));
	storeq_deliver(arg);
}

struct storeq *
storeq_new(struct event_base *base, const char *uri, struct store *shared,
    char *err, size_t errlen)
{
	struct storeq *q;
	sigset_t all, old;
	int rc;

	if ((q = calloc(1, sizeof(*q))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	q->q_pipe[0] = q->q_pipe[1] = -1;
	q->q_queue_tail = &q->q_queue;
	q->q_done_tail = &q->q_done;
	if (pthread_mutex_init(&q->q_lock, NULL) != 0) {
		free(q);
		snprintf(err, errlen, "cannot make a mutex");
		return NULL;
	}
	if (pthread_cond_init(&q->q_cond, NULL) != 0) {
		pthread_mutex_destroy(&q->q_lock);
		free(q);
		snprintf(err, errlen, "cannot make a condition variable");
		return NULL;
	}
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
	if (pipe2(q->q_pipe, O_CLOEXEC | O_NONBLOCK) == -1 ||
	    (q->q_event = event_new(base, q->q_pipe[0], EV_READ | EV_PERSIST,
	    storeq_on_done, q)) == NULL ||
	    event_add(q->q_event, NULL) != 0) {
		snprintf(err, errlen, "cannot watch a pipe: %s",
		    strerror(errno));
		goto fail;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&q->q_thread, NULL, storeq_thread, q);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start a thread: %s",
		    strerror(rc));
		goto fail;
	}
	q->q_running = 1;
	return q;
 fail:
	storeq_free(q);
	return NULL;
}

void
storeq_free(struct storeq *q)
{
	struct storeq_op *batch;

	if (q == NULL)
		return;
	if (q->q_running) {
		pthread_mutex_lock(&q->q_lock);
		q->q_stop = 1;
		pthread_cond_broadcast(&q->q_cond);
		pthread_mutex_unlock(&q->q_lock);
		pthread_join(q->q_thread, NULL);
		q->q_running = 0;
	}
	/*
	 * The thread ran all it had.  Callbacks may queue more (fail a row
	 * whose client went away): run those here, in batches still, until
	 * none is left.  Bounded: a write's callback queues at most one.
	 */
	for (;;) {
		storeq_deliver(q);
		if ((batch = storeq_take_locked(q)) == NULL)
			break;
		if (q->q_store != NULL)
			storeq_run_batch(q, batch);
		*q->q_done_tail = batch;
		while (*q->q_done_tail != NULL)
			q->q_done_tail = &(*q->q_done_tail)->o_next;
	}
	if (q->q_store != NULL)
		log_info("inventory: %llu issuance writes in %llu commits",
		    (unsigned long long)q->q_writes,
		    (unsigned long long)q->q_commits);
	if (q->q_event != NULL)
		event_free(q->q_event);
	if (q->q_pipe[0] != -1)
		close(q->q_pipe[0]);
	if (q->q_pipe[1] != -1)
		close(q->q_pipe[1]);
	store_close(q->q_store);
	store_share_write_lock(q->q_shared, NULL);
	if (q->q_wlock_made)
		pthread_mutex_destroy(&q->q_wlock);
	pthread_cond_destroy(&q->q_cond);
	pthread_mutex_destroy(&q->q_lock);
	free(q);
}

static void
storeq_push(struct storeq *q, struct storeq_op *op)
{
	pthread_mutex_lock(&q->q_lock);
	*q->q_queue_tail = op;
	q->q_queue_tail = &op->o_next;
	pthread_cond_signal(&q->q_cond);
	pthread_mutex_unlock(&q->q_lock);
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
    const uint8_t *token_hash, int64_t now, storeq_cb cb, void *arg)
{
	struct storeq_op *op;
	int bad = 0;

	if (q == NULL || c == NULL || (op = calloc(1, sizeof(*op))) == NULL)
		return -1;
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
	pthread_mutex_lock(&q->q_lock);
	*commits = q->q_commits;
	*writes = q->q_writes;
	pthread_mutex_unlock(&q->q_lock);
}
