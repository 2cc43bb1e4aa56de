/*
 * Inventory writes of issuance off the event loop, with group commit.
 *
 * A thread with its own connection to the store takes every write queued
 * since its last commit, runs them in one batch (store_batch_begin: each
 * in a savepoint) and commits them with one flush to stable storage, so
 * that N certificates in flight cost one fsync instead of N, and the loop
 * never waits for one.  Callbacks run on the loop after the commit: a
 * STORE_OK there is durable.  Writes run in the order they were queued.
 *
 * The loop keeps its own connection for everything else (reads, token
 * checks, revocations, the reconciliation); the two connections' writes
 * take turns under one mutex, so a write from the loop waits for the
 * thread's batches (usually one: the mutex is not fair) rather than
 * polling in SQLite's busy handler.
 */
#ifndef HSMCA_STOREQ_H
#define HSMCA_STOREQ_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct event_base;
struct storeq;

#define STOREQ_BATCH_MAX	128	/* writes per commit at most */

/*
 * rc is the store's; id is the new row's for an added row (0 otherwise);
 * err is the store's text when rc is not STORE_OK, else "".
 */
typedef void (*storeq_cb)(void *arg, int rc, int64_t id, const char *err);

/*
 * Opens uri (see store_open) a second time for the thread and starts it,
 * with every signal blocked.  shared, the loop's own connection to the
 * same store (or NULL), gets the write lock the thread's connection holds
 * for each batch (store_share_write_lock), until storeq_free.  NULL with
 * err filled on failure.
 */
struct storeq	*storeq_new(struct event_base *, const char *uri,
		    struct store *shared, char *err, size_t errlen);

/*
 * Runs every write still queued (and any their callbacks queue), calls
 * their callbacks from here rather than the loop, stops the thread and
 * closes its connection.
 */
void		 storeq_free(struct storeq *);

/*
 * store_pending_add; store_pending_add_spend when token_hash is not NULL,
 * store_pending_add_caller when caller_serial is not NULL (not both).
 * Everything is copied.  0, or -1 when out of memory or both are given
 * (cb has not run and will not).  cb may be NULL.
 */
int		 storeq_pending_add(struct storeq *, const struct store_cert *c,
		    const uint8_t *token_hash, int64_t now,
		    const char *caller_serial, storeq_cb cb, void *arg);
int		 storeq_complete(struct storeq *, int64_t id, const char *serial,
		    const uint8_t *der, size_t derlen, int64_t not_before,
		    int64_t not_after, storeq_cb cb, void *arg);
int		 storeq_fail(struct storeq *, int64_t id, const char *why,
		    storeq_cb cb, void *arg);

/* Commits so far and writes committed, for tests and the log. */
void		 storeq_stats(struct storeq *, uint64_t *commits,
		    uint64_t *writes);

#endif
