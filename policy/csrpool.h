/*
 * CSR checks off the event loop.  csr_parse costs about as much as the
 * rest of an issuance on the policy daemon's single loop (the ECDSA
 * verification alone is 120 us), so a few threads do it and hand the
 * result back through a pipe that the loop watches.  Callbacks run on
 * the loop, in the thread that owns the event base.
 */
#ifndef HSMCA_CSRPOOL_H
#define HSMCA_CSRPOOL_H

#include <stddef.h>

#include "csr.h"

struct event_base;
struct csrpool;
struct csrpool_job;

#define CSRPOOL_MAX_THREADS	8

/*
 * rv and err are csr_parse's; on success ci is filled and the callback
 * owns it (csr_info_clear).  The callback may submit and cancel jobs.
 */
typedef void (*csrpool_cb)(void *arg, int rv, struct csr_info *ci,
    const struct csr_error *err);

/*
 * threads: 1 to CSRPOOL_MAX_THREADS, or 0 for the online CPUs (at most
 * CSRPOOL_MAX_THREADS).  NULL if a thread, the pipe or the event cannot
 * be made.  Threads are started with every signal blocked.
 */
struct csrpool	*csrpool_new(struct event_base *, int threads);

/*
 * Checks what is still queued and calls back every job not cancelled,
 * from here, then stops the threads.  The daemon frees its HTTP server
 * first, whose abort callbacks cancel every job.
 */
void		 csrpool_free(struct csrpool *);

/*
 * Queues a copy of pem (the HTTP body limit bounds it).  NULL when out of
 * memory; cb has not run then.
 */
struct csrpool_job *csrpool_submit(struct csrpool *, const char *pem,
		    size_t pemlen, csrpool_cb cb, void *arg);

/* Its callback will not run; the pool frees the job.  From the loop only. */
void		 csrpool_cancel(struct csrpool *, struct csrpool_job *);

/* Threads running, for tests and the log. */
int		 csrpool_threads(const struct csrpool *);

#endif
