/*
 * The CSR pool: every job's callback runs once on the loop with
 * csr_parse's answer, a cancelled job's never, and freeing the pool with
 * jobs in it loses nothing but those jobs (ASan and valgrind see leaks).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "csrpool.h"

#define NJOBS	64

static char *good_pem;		/* a P-256 CSR with one URI SAN */
static const char bad_pem[] = "-----BEGIN CERTIFICATE REQUEST-----\n"
    "AAAA\n-----END CERTIFICATE REQUEST-----\n";

struct seen {
	int		 calls[NJOBS];
	int		 rv[NJOBS];
	char		 code[NJOBS][32];
	int		 alg_ok[NJOBS];
	int		 total;
	int		 want;		/* stop the loop at this many */
	struct event_base *base;
	struct csrpool	*pool;		/* for callbacks that submit */
	int		 chain;		/* jobs still to submit from callbacks */
};

struct arg {
	struct seen	*seen;
	int		 i;
};

static struct arg args[NJOBS];

static int
setup(void **state)
{
	EVP_PKEY *k;
	X509_REQ *req;
	X509_EXTENSIONS *exts;
	X509_EXTENSION *ext;
	BIO *b;
	BUF_MEM *mem;

	(void)state;
	k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	req = X509_REQ_new();
	exts = sk_X509_EXTENSION_new_null();
	ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name,
	    "URI:spiffe://example.org/ns/a/sa/b");
	if (k == NULL || req == NULL || exts == NULL || ext == NULL ||
	    X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
	    X509_REQ_set_pubkey(req, k) != 1 ||
	    sk_X509_EXTENSION_push(exts, ext) <= 0 ||
	    X509_REQ_add_extensions(req, exts) != 1 ||
	    X509_REQ_sign(req, k, EVP_sha256()) <= 0)
		return -1;
	b = BIO_new(BIO_s_mem());
	if (b == NULL || PEM_write_bio_X509_REQ(b, req) != 1)
		return -1;
	BIO_get_mem_ptr(b, &mem);
	if ((good_pem = calloc(1, mem->length + 1)) == NULL)
		return -1;
	memcpy(good_pem, mem->data, mem->length);
	BIO_free(b);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	EVP_PKEY_free(k);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	free(good_pem);
	return 0;
}

static void
record(struct seen *s, int i, int rv, struct csr_info *ci,
    const struct csr_error *err)
{
	assert_true(i >= 0 && i < NJOBS);
	s->calls[i]++;
	s->rv[i] = rv;
	if (rv == 0) {
		s->alg_ok[i] = ci->alg == RULES_ALG_EC_P256 &&
		    ci->nuris == 1 && ci->ndns == 0 &&
		    strcmp(ci->uris[0], "spiffe://example.org/ns/a/sa/b") == 0;
		csr_info_clear(ci);
	} else
		snprintf(s->code[i], sizeof(s->code[i]), "%s",
		    err->code != NULL ? err->code : "(none)");
	s->total++;
}

static void
on_done(void *arg, int rv, struct csr_info *ci, const struct csr_error *err)
{
	struct arg *a = arg;

	record(a->seen, a->i, rv, ci, err);
	if (a->seen->total >= a->seen->want)
		event_base_loopbreak(a->seen->base);
}

/* Runs the loop until want callbacks or 20 s, whichever comes first. */
static void
run_until(struct seen *s, int want)
{
	struct timeval tv = { 20, 0 };

	s->want = want;
	if (s->total >= want)
		return;
	event_base_loopexit(s->base, &tv);
	event_base_dispatch(s->base);
}

/* A base and a pool of two threads, with NJOBS jobs of good_pem queued. */
static struct csrpool *
start_busy(struct seen *s, struct csrpool_job **jobs)
{
	struct csrpool *p;
	int i;

	memset(s, 0, sizeof(*s));
	assert_non_null(s->base = event_base_new());
	assert_non_null(p = csrpool_new(s->base, 2));
	for (i = 0; i < NJOBS; i++) {
		args[i].seen = s;
		args[i].i = i;
		jobs[i] = csrpool_submit(p, good_pem, strlen(good_pem),
		    on_done, &args[i]);
		assert_non_null(jobs[i]);
	}
	return p;
}

static void
test_results(void **state)
{
	struct seen s;
	struct csrpool *p;
	int i;

	(void)state;
	memset(&s, 0, sizeof(s));
	assert_non_null(s.base = event_base_new());
	assert_non_null(p = csrpool_new(s.base, 2));
	assert_int_equal(csrpool_threads(p), 2);
	for (i = 0; i < NJOBS; i++) {
		args[i].seen = &s;
		args[i].i = i;
		assert_non_null(csrpool_submit(p, i % 2 ? bad_pem : good_pem,
		    strlen(i % 2 ? bad_pem : good_pem), on_done, &args[i]));
	}
	run_until(&s, NJOBS);
	assert_int_equal(s.total, NJOBS);
	for (i = 0; i < NJOBS; i++) {
		assert_int_equal(s.calls[i], 1);
		if (i % 2) {
			assert_int_equal(s.rv[i], -1);
			assert_string_equal(s.code[i], "csr_malformed");
		} else {
			assert_int_equal(s.rv[i], 0);
			assert_true(s.alg_ok[i]);
		}
	}
	/* Empty and oversized bodies get csr_parse's own answers. */
	memset(&s.calls, 0, sizeof(s.calls));
	s.total = 0;
	assert_non_null(csrpool_submit(p, "", 0, on_done, &args[0]));
	run_until(&s, 1);
	assert_int_equal(s.rv[0], -1);
	assert_string_equal(s.code[0], "csr_malformed");
	{
		size_t big = CSR_MAX_PEM + 1;
		char *buf = malloc(big);

		assert_non_null(buf);
		memset(buf, 'A', big);
		assert_non_null(csrpool_submit(p, buf, big, on_done,
		    &args[1]));
		free(buf);	/* the pool has its own copy */
	}
	run_until(&s, 2);
	assert_int_equal(s.rv[1], -1);
	assert_string_equal(s.code[1], "csr_too_large");
	csrpool_free(p);
	event_base_free(s.base);
}

static void
test_cancel(void **state)
{
	struct csrpool_job *jobs[NJOBS];
	struct timeval tv = { 0, 200000 };
	struct seen s;
	struct csrpool *p;
	int i;

	(void)state;
	p = start_busy(&s, jobs);
	/* Some are still queued, some parsing, some maybe done. */
	for (i = 0; i < NJOBS; i += 2)
		csrpool_cancel(p, jobs[i]);
	run_until(&s, NJOBS / 2);
	/* Let any straggler show itself: it must not. */
	event_base_loopexit(s.base, &tv);
	event_base_dispatch(s.base);
	assert_int_equal(s.total, NJOBS / 2);
	for (i = 0; i < NJOBS; i++)
		assert_int_equal(s.calls[i], i % 2);
	csrpool_free(p);
	event_base_free(s.base);
}

/* A callback that submits the next job, as issue_parsed could. */
static void
on_done_chain(void *arg, int rv, struct csr_info *ci,
    const struct csr_error *err)
{
	struct arg *a = arg;
	struct seen *s = a->seen;

	record(s, a->i, rv, ci, err);
	if (s->chain > 0) {
		s->chain--;
		assert_non_null(csrpool_submit(s->pool, good_pem,
		    strlen(good_pem), on_done_chain, &args[a->i + 1]));
	}
	if (s->total >= s->want)
		event_base_loopbreak(s->base);
}

static void
test_chain(void **state)
{
	struct seen s;
	int i;

	(void)state;
	memset(&s, 0, sizeof(s));
	assert_non_null(s.base = event_base_new());
	assert_non_null(s.pool = csrpool_new(s.base, 1));
	for (i = 0; i < 10; i++) {
		args[i].seen = &s;
		args[i].i = i;
	}
	s.chain = 9;
	assert_non_null(csrpool_submit(s.pool, good_pem, strlen(good_pem),
	    on_done_chain, &args[0]));
	run_until(&s, 10);
	assert_int_equal(s.total, 10);
	for (i = 0; i < 10; i++) {
		assert_int_equal(s.calls[i], 1);
		assert_int_equal(s.rv[i], 0);
	}
	csrpool_free(s.pool);
	event_base_free(s.base);
}

/*
 * Freed with jobs queued, parsing and done: each job not cancelled is
 * called back once from csrpool_free, a cancelled one never; no leak.
 */
static void
test_free_busy(void **state)
{
	struct csrpool_job *jobs[NJOBS];
	struct seen s;
	struct csrpool *p;
	int i;

	(void)state;
	p = start_busy(&s, jobs);
	for (i = 0; i < NJOBS; i += 2)
		csrpool_cancel(p, jobs[i]);
	s.want = NJOBS + 1;	/* no loopbreak from the callbacks */
	csrpool_free(p);
	assert_int_equal(s.total, NJOBS / 2);
	for (i = 0; i < NJOBS; i++) {
		assert_int_equal(s.calls[i], i % 2);
		if (i % 2)
			assert_int_equal(s.rv[i], 0);
	}
	event_base_free(s.base);
}

static void
test_threads(void **state)
{
	struct event_base *base;
	struct csrpool *p;

	(void)state;
	assert_non_null(base = event_base_new());
	assert_non_null(p = csrpool_new(base, 0));
	assert_in_range(csrpool_threads(p), 1, CSRPOOL_MAX_THREADS);
	csrpool_free(p);
	assert_null(csrpool_new(base, CSRPOOL_MAX_THREADS + 1));
	assert_null(csrpool_new(base, -1));
	assert_null(csrpool_submit(NULL, good_pem, 1, on_done, NULL));
	csrpool_cancel(NULL, NULL);
	csrpool_free(NULL);
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_results),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_chain),
		cmocka_unit_test(test_free_busy),
		cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
