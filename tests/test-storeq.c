/*
 * The store's write thread: every write's callback runs once on the
 * loop, after its commit (another connection sees the row by then);
 * writes queued together share commits; one write's failure is its own;
 * freeing the queue commits what is still queued, including what the
 * callbacks queue meanwhile.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "storeq.h"

#define NROWS	200

struct fixture {
	char			 dir[64];
	char			 path[128];
	struct event_base	*base;
	struct storeq		*q;
	struct store		*check;		/* a connection of the test's */
};

struct result {
	struct fixture	*f;
	int		 calls;
	int		 rc;
	int64_t		 id;
	char		 err[256];
	int		 seen_committed;	/* the row was visible at callback */
	unsigned int	 n;
};

static struct result results[NROWS];
static int ncalls, nwant;

static void
request_id(unsigned int n, char out[33])
{
	snprintf(out, 33, "%032x", n);
}

static void
make_cert(struct store_cert *c, unsigned int n)
{
	memset(c, 0, sizeof(*c));
	request_id(n, c->request_id);
	c->requester = (char *)(uintptr_t)"bob";
	c->rule = (char *)(uintptr_t)"rule-web";
	c->profile = (char *)(uintptr_t)"svid";
	c->key_name = (char *)(uintptr_t)"issuing-1";
	c->identity = (char *)(uintptr_t)"spiffe://td/a";
	c->subject = (char *)(uintptr_t)"";
	c->sans = (char *)(uintptr_t)"[]";
	c->created_at = 1000 + n;
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/hsmca-storeq-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/inventory.db", f->dir);
	/* The test's connection first: it is the one the queue shares its
	 * write lock with, as the daemon's loop does. */
	if ((f->base = event_base_new()) == NULL ||
	    store_open(f->path, &f->check, err, sizeof(err)) != STORE_OK ||
	    (f->q = storeq_new(f->base, f->path, f->check, err,
	    sizeof(err))) == NULL) {
		fprintf(stderr, "setup: %s\n", err);
		return -1;
	}
	memset(results, 0, sizeof(results));
	ncalls = nwant = 0;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char p[200];

	storeq_free(f->q);
	store_close(f->check);
	event_base_free(f->base);
	snprintf(p, sizeof(p), "%s/inventory.db", f->dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/inventory.db-wal", f->dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/inventory.db-shm", f->dir);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void
on_done(void *arg, int rc, int64_t id, const char *err)
{
	struct result *r = arg;
	struct store_cert got;
	char rid[33];

	r->calls++;
	r->rc = rc;
	r->id = id;
	assert_non_null(err);
	snprintf(r->err, sizeof(r->err), "%s", err);
	if (rc == STORE_OK && id > 0) {
		/* durable and visible to another connection already */
		request_id(r->n, rid);
		if (store_get_by_request(r->f->check, rid, &got) ==
		    STORE_OK && got.id == id)
			r->seen_committed = 1;
		store_cert_clear(&got);
	}
	if (++ncalls >= nwant)
		event_base_loopbreak(r->f->base);
}

static void
run_until(struct fixture *f, int want)
{
	struct timeval tv = { 20, 0 };

	nwant = want;
	if (ncalls >= want)
		return;
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

static void
test_adds_batched(void **state)
{
	struct fixture *f = *state;
	struct store_cert c;
	uint64_t commits, writes;
	uint8_t hash[32];
	char who[32];
	unsigned int i;

	for (i = 0; i < NROWS; i++) {
		make_cert(&c, i + 1);
		results[i].f = f;
		results[i].n = i + 1;
		assert_int_equal(storeq_pending_add(f->q, &c, NULL, 1000,
		    NULL, on_done, &results[i]), 0);
	}
	/* The caller's strings were copied: nothing points at c. */
	memset(&c, 0xa5, sizeof(c));
	/* A write of the other connection meanwhile waits for the batch
	 * being written, not for the busy timeout, and succeeds. */
	memset(hash, 1, sizeof(hash));
	assert_int_equal(store_token_add(f->check, hash, "carol", 5000, 3),
	    STORE_OK);
	run_until(f, NROWS);
	assert_int_equal(ncalls, NROWS);
	for (i = 0; i < NROWS; i++) {
		assert_int_equal(results[i].calls, 1);
		assert_int_equal(results[i].rc, STORE_OK);
		assert_true(results[i].id > 0);
		assert_string_equal(results[i].err, "");
		assert_true(results[i].seen_committed);
		/* in queue order */
		if (i > 0)
			assert_true(results[i].id > results[i - 1].id);
	}
	assert_int_equal(store_token_check(f->check, hash, 1000, who,
	    sizeof(who)), STORE_OK);
	assert_string_equal(who, "carol");
	storeq_stats(f->q, &commits, &writes);
	assert_int_equal(writes, NROWS);
	/* 200 writes queued at once: STOREQ_BATCH_MAX per commit at most,
	 * and fewer commits than writes. */
	assert_true(commits >= (NROWS + STOREQ_BATCH_MAX - 1) /
	    STOREQ_BATCH_MAX);
	assert_true(commits < NROWS / 2);
}

static void
test_complete_fail_conflict(void **state)
{
	struct fixture *f = *state;
	static const uint8_t der[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
	struct store_cert c, got;
	uint8_t hash[32];
	int64_t id1, id2;
	int i;

	for (i = 0; i < 8; i++)
		results[i].f = f;
	results[0].n = 1;
	results[1].n = 2;
	make_cert(&c, 2);
	assert_int_equal(storeq_pending_add(f->q, &c, NULL, 1000, NULL,
	    on_done, &results[1]), 0);
	make_cert(&c, 1);
	assert_int_equal(storeq_pending_add(f->q, &c, NULL, 1000, NULL,
	    on_done, &results[0]), 0);
	run_until(f, 2);
	id1 = results[0].id;
	id2 = results[1].id;
	assert_true(id1 > 0 && id2 > 0);

	/* In one batch: a complete, the same serial again (conflict), a
	 * fail, a duplicate request id, a token that does not exist. */
	memset(hash, 7, sizeof(hash));
	assert_int_equal(storeq_complete(f->q, id1, "1a", der, sizeof(der),
	    900, 5000, on_done, &results[2]), 0);
	assert_int_equal(storeq_complete(f->q, id2, "1a", der, sizeof(der),
	    900, 5000, on_done, &results[3]), 0);
	assert_int_equal(storeq_fail(f->q, id2, "no answer", on_done,
	    &results[4]), 0);
	assert_int_equal(storeq_pending_add(f->q, &c, NULL, 1000, NULL,
	    on_done, &results[5]), 0);
	make_cert(&c, 9);
	assert_int_equal(storeq_pending_add(f->q, &c, hash, 1000, NULL,
	    on_done, &results[6]), 0);
	/* a caller whose certificate is not issued (id2 is failed below,
	 * but "2b" was never issued at all): no row */
	make_cert(&c, 10);
	assert_int_equal(storeq_pending_add(f->q, &c, NULL, 1000, "2b",
	    on_done, &results[7]), 0);
	assert_int_equal(storeq_fail(f->q, id1, "too late", NULL, NULL), 0);
	run_until(f, 8);
	assert_int_equal(results[7].rc, STORE_CALLER_REVOKED);
	assert_int_equal(results[7].id, 0);
	assert_non_null(strstr(results[7].err, "2b"));
	assert_int_equal(results[2].rc, STORE_OK);
	assert_int_equal(results[3].rc, STORE_CONFLICT);
	assert_non_null(strstr(results[3].err, "1a"));
	assert_int_equal(results[4].rc, STORE_OK);
	assert_int_equal(results[5].rc, STORE_CONFLICT);
	assert_int_equal(results[5].id, 0);
	assert_int_equal(results[6].rc, STORE_NOTFOUND);
	assert_int_equal(store_get(f->check, "1a", &got), STORE_OK);
	assert_int_equal(got.id, id1);
	assert_int_equal(got.status, STORE_ISSUED);
	store_cert_clear(&got);
	request_id(2, c.request_id);
	assert_int_equal(store_get_by_request(f->check, c.request_id, &got),
	    STORE_OK);
	assert_int_equal(got.status, STORE_FAILED);
	store_cert_clear(&got);
	/* an unknown token adds no row; "too late" cannot fail an issued
	 * row (checked above: still issued) */
	request_id(9, c.request_id);
	assert_int_equal(store_get_by_request(f->check, c.request_id, &got),
	    STORE_NOTFOUND);
}

/* A callback at free time queues one more write: it is committed too. */
static void
on_done_then_fail(void *arg, int rc, int64_t id, const char *err)
{
	struct result *r = arg;

	(void)err;
	r->calls++;
	r->rc = rc;
	r->id = id;
	if (rc == STORE_OK)
		assert_int_equal(storeq_fail(r->f->q, id, "client gone", NULL,
		    NULL), 0);
}

static void
test_free_commits_queued(void **state)
{
	struct fixture *f = *state;
	struct store_cert c, got;
	char err[256];
	unsigned int i;

	for (i = 0; i < 50; i++) {
		make_cert(&c, 100 + i);
		results[i].f = f;
		results[i].n = 100 + i;
		assert_int_equal(storeq_pending_add(f->q, &c, NULL, 1000, NULL,
		    on_done_then_fail, &results[i]), 0);
	}
	storeq_free(f->q);	/* without running the loop */
	for (i = 0; i < 50; i++) {
		assert_int_equal(results[i].calls, 1);
		assert_int_equal(results[i].rc, STORE_OK);
		request_id(100 + i, c.request_id);
		assert_int_equal(store_get_by_request(f->check, c.request_id,
		    &got), STORE_OK);
		assert_int_equal(got.status, STORE_FAILED);
		assert_string_equal(got.failure, "client gone");
		store_cert_clear(&got);
	}
	/* teardown frees a fresh one */
	assert_non_null(f->q = storeq_new(f->base, f->path, f->check, err,
	    sizeof(err)));
}

static void
test_bad_arguments(void **state)
{
	struct fixture *f = *state;
	struct store_cert c;
	uint8_t hash[32];
	char err[256] = "";

	make_cert(&c, 1);
	assert_int_equal(storeq_pending_add(NULL, &c, NULL, 0, NULL, NULL,
	    NULL), -1);
	assert_int_equal(storeq_pending_add(f->q, NULL, NULL, 0, NULL, NULL,
	    NULL), -1);
	memset(hash, 1, sizeof(hash));
	/* a token and a caller certificate at once: refused */
	assert_int_equal(storeq_pending_add(f->q, &c, hash, 0, "1a", NULL,
	    NULL), -1);
	assert_int_equal(storeq_complete(f->q, 1, "1a", NULL, 0, 0, 0, NULL,
	    NULL), -1);
	assert_int_equal(storeq_fail(f->q, 1, NULL, NULL, NULL), -1);
	assert_null(storeq_new(f->base, "/nonexistent/dir/x.db", NULL, err,
	    sizeof(err)));
	assert_true(strlen(err) > 0);
	storeq_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_adds_batched, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_complete_fail_conflict,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_commits_queued,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_arguments, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
