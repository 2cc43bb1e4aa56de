/*
 * CSR checks off the event loop (csrpool.h), on a work queue (workq.h):
 * each thread takes one job at a time.  A cancelled job is only marked:
 * whoever holds it (the queue, a thread, the done list) finishes with it
 * and the loop frees it without calling back.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "csrpool.h"
#include "log.h"
#include "workq.h"

struct csrpool_job {
	struct workq_item	 j_item;	/* first */
	char			*j_pem;
	size_t			 j_pemlen;
	csrpool_cb		 j_cb;
	void			*j_arg;
	int			 j_cancelled;	/* under the queue's lock */
	int			 j_rv;
	struct csr_info		 j_info;
	struct csr_error	 j_err;
};

struct csrpool {
	struct workq		*p_q;
};

static void
csrpool_run(void *ctx, struct workq_item *batch)
{
	struct csrpool *p = ctx;
	struct workq_item *it;
	struct csrpool_job *job;
	int cancelled;

	for (it = batch; it != NULL; it = it->wi_next) {
		job = (struct csrpool_job *)it;
		/* A client that left costs no signature check. */
		workq_lock(p->p_q);
		cancelled = job->j_cancelled;
		workq_unlock(p->p_q);
		if (cancelled)
			continue;
		job->j_rv = csr_parse(job->j_pem, job->j_pemlen,
		    &job->j_info, &job->j_err);
	}
}

static void
csrpool_done(void *ctx, struct workq_item *it)
{
	struct csrpool *p = ctx;
	struct csrpool_job *job = (struct csrpool_job *)it;
	int cancelled;

	workq_lock(p->p_q);
	cancelled = job->j_cancelled;
	workq_unlock(p->p_q);
	if (!cancelled) {
		/* The callback owns the result now. */
		job->j_cb(job->j_arg, job->j_rv, &job->j_info, &job->j_err);
		memset(&job->j_info, 0, sizeof(job->j_info));
	}
	csr_info_clear(&job->j_info);
	free(job->j_pem);
	free(job);
}

static void
csrpool_thread_end(void *ctx)
{
	(void)ctx;
	ERR_clear_error();
	OPENSSL_thread_stop();
}

static const struct workq_ops csrpool_ops = {
	.wo_run = csrpool_run,
	.wo_done = csrpool_done,
	.wo_thread_end = csrpool_thread_end,
};

struct csrpool *
csrpool_new(struct event_base *base, int threads)
{
	struct csrpool *p;
	char err[128];
	long ncpu;

	if (threads < 0 || threads > CSRPOOL_MAX_THREADS)
		return NULL;
	if (threads == 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		threads = ncpu < 1 ? 1 : ncpu > CSRPOOL_MAX_THREADS ?
		    CSRPOOL_MAX_THREADS : (int)ncpu;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	if ((p->p_q = workq_new(base, threads, 1, &csrpool_ops, p, err,
	    sizeof(err))) == NULL) {
		log_warnx("csrpool: %s", err);
		free(p);
		return NULL;
	}
	return p;
}

void
csrpool_free(struct csrpool *p)
{
	if (p == NULL)
		return;
	workq_free(p->p_q);
	free(p);
}

struct csrpool_job *
csrpool_submit(struct csrpool *p, const char *pem, size_t pemlen,
    csrpool_cb cb, void *arg)
{
	struct csrpool_job *job;

	if (p == NULL || cb == NULL || (pem == NULL && pemlen != 0) ||
	    pemlen >= SIZE_MAX || (job = calloc(1, sizeof(*job))) == NULL)
		return NULL;
	/* One byte more, so that an empty CSR is not malloc(0). */
	if ((job->j_pem = malloc(pemlen + 1)) == NULL) {
		free(job);
		return NULL;
	}
	if (pemlen > 0)
		memcpy(job->j_pem, pem, pemlen);
	job->j_pem[pemlen] = '\0';
	job->j_pemlen = pemlen;
	job->j_cb = cb;
	job->j_arg = arg;
	workq_push(p->p_q, &job->j_item);
	return job;
}

void
csrpool_cancel(struct csrpool *p, struct csrpool_job *job)
{
	if (p == NULL || job == NULL)
		return;
	workq_lock(p->p_q);
	job->j_cancelled = 1;
	workq_unlock(p->p_q);
}

int
csrpool_threads(const struct csrpool *p)
{
	return p != NULL ? workq_threads(p->p_q) : 0;
}
