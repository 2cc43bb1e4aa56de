/*
 * CSR checks off the event loop (csrpool.h).
 *
 * One mutex guards both lists.  Workers take jobs from the queue, parse
 * outside the lock and put them on the done list; the worker that makes
 * the done list non-empty writes one byte to the pipe, and the loop
 * empties the pipe before it takes the whole list, so a job is never left
 * on the list without a byte to announce it.  A cancelled job is only
 * marked: whoever holds it (the queue, a worker, the done list) finishes
 * with it and the loop frees it without calling back.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>

#include "csrpool.h"
#include "log.h"

struct csrpool_job {
	struct csrpool_job	*j_next;
	char			*j_pem;
	size_t			 j_pemlen;
	csrpool_cb		 j_cb;
	void			*j_arg;
	int			 j_cancelled;	/* loop thread only */
	int			 j_rv;
	struct csr_info		 j_info;
	struct csr_error	 j_err;
};

struct csrpool {
	pthread_mutex_t		 p_lock;
	pthread_cond_t		 p_cond;	/* queue not empty, or stop */
	struct csrpool_job	*p_queue, **p_queue_tail;
	struct csrpool_job	*p_done, **p_done_tail;
	int			 p_stop;
	pthread_t		 p_thread[CSRPOOL_MAX_THREADS];
	int			 p_nthreads;
	int			 p_pipe[2];	/* workers write, the loop reads */
	struct event		*p_event;
};

static void
csrpool_job_free(struct csrpool_job *job)
{
	if (job == NULL)
		return;
	csr_info_clear(&job->j_info);
	free(job->j_pem);
	free(job);
}

static void *
csrpool_worker(void *arg)
{
	struct csrpool *p = arg;
	struct csrpool_job *job;
	int was_empty;
	ssize_t n;

	for (;;) {
		pthread_mutex_lock(&p->p_lock);
		while (p->p_queue == NULL && !p->p_stop)
			pthread_cond_wait(&p->p_cond, &p->p_lock);
		if (p->p_stop) {
			pthread_mutex_unlock(&p->p_lock);
			break;
		}
		job = p->p_queue;
		if ((p->p_queue = job->j_next) == NULL)
			p->p_queue_tail = &p->p_queue;
		job->j_next = NULL;
		pthread_mutex_unlock(&p->p_lock);

		job->j_rv = csr_parse(job->j_pem, job->j_pemlen, &job->j_info,
		    &job->j_err);

		pthread_mutex_lock(&p->p_lock);
		was_empty = p->p_done == NULL;
		*p->p_done_tail = job;
		p->p_done_tail = &job->j_next;
		pthread_mutex_unlock(&p->p_lock);
		if (was_empty) {
			do
				n = write(p->p_pipe[1], "", 1);
			while (n == -1 && errno == EINTR);
			/* EAGAIN: the pipe is full of wakeups already */
		}
	}
	ERR_clear_error();
	OPENSSL_thread_stop();
	return NULL;
}

static void
csrpool_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct csrpool *p = arg;
	struct csrpool_job *list, *job;
	char buf[256];
	ssize_t n;

	(void)what;
	do
		n = read(fd, buf, sizeof(buf));
	while (n > 0 || (n == -1 && errno == EINTR));

	pthread_mutex_lock(&p->p_lock);
	list = p->p_done;
	p->p_done = NULL;
	p->p_done_tail = &p->p_done;
	pthread_mutex_unlock(&p->p_lock);

	while ((job = list) != NULL) {
		list = job->j_next;
		if (!job->j_cancelled) {
			/* The callback owns the result now. */
			job->j_cb(job->j_arg, job->j_rv, &job->j_info,
			    &job->j_err);
			memset(&job->j_info, 0, sizeof(job->j_info));
		}
		csrpool_job_free(job);
	}
}

struct csrpool *
csrpool_new(struct event_base *base, int threads)
{
	struct csrpool *p;
	sigset_t all, old;
	long ncpu;
	int i, rc;

	if (threads < 0 || threads > CSRPOOL_MAX_THREADS)
		return NULL;
	if (threads == 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		threads = ncpu < 1 ? 1 : ncpu > CSRPOOL_MAX_THREADS ?
		    CSRPOOL_MAX_THREADS : (int)ncpu;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->p_pipe[0] = p->p_pipe[1] = -1;
	p->p_queue_tail = &p->p_queue;
	p->p_done_tail = &p->p_done;
	if (pthread_mutex_init(&p->p_lock, NULL) != 0) {
		free(p);
		return NULL;
	}
	if (pthread_cond_init(&p->p_cond, NULL) != 0) {
		pthread_mutex_destroy(&p->p_lock);
		free(p);
		return NULL;
	}
	if (pipe2(p->p_pipe, O_CLOEXEC | O_NONBLOCK) == -1 ||
	    (p->p_event = event_new(base, p->p_pipe[0], EV_READ | EV_PERSIST,
	    csrpool_on_done, p)) == NULL ||
	    event_add(p->p_event, NULL) != 0)
		goto fail;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < threads; i++) {
		if ((rc = pthread_create(&p->p_thread[i], NULL,
		    csrpool_worker, p)) != 0) {
			log_warnx("csrpool: thread %d: %s", i, strerror(rc));
			break;
		}
		p->p_nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (p->p_nthreads != threads)
		goto fail;
	return p;
 fail:
	csrpool_free(p);
	return NULL;
}

void
csrpool_free(struct csrpool *p)
{
	struct csrpool_job *job;
	int i;

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->p_lock);
	p->p_stop = 1;
	pthread_cond_broadcast(&p->p_cond);
	pthread_mutex_unlock(&p->p_lock);
	for (i = 0; i < p->p_nthreads; i++)
		pthread_join(p->p_thread[i], NULL);
	while ((job = p->p_queue) != NULL) {
		p->p_queue = job->j_next;
		csrpool_job_free(job);
	}
	while ((job = p->p_done) != NULL) {
		p->p_done = job->j_next;
		csrpool_job_free(job);
	}
	if (p->p_event != NULL)
		event_free(p->p_event);
	if (p->p_pipe[0] != -1)
		close(p->p_pipe[0]);
	if (p->p_pipe[1] != -1)
		close(p->p_pipe[1]);
	pthread_cond_destroy(&p->p_cond);
	pthread_mutex_destroy(&p->p_lock);
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
	pthread_mutex_lock(&p->p_lock);
	*p->p_queue_tail = job;
	p->p_queue_tail = &job->j_next;
	pthread_cond_signal(&p->p_cond);
	pthread_mutex_unlock(&p->p_lock);
	return job;
}

void
csrpool_cancel(struct csrpool *p, struct csrpool_job *job)
{
	if (p == NULL || job == NULL)
		return;
	pthread_mutex_lock(&p->p_lock);
	job->j_cancelled = 1;
	pthread_mutex_unlock(&p->p_lock);
}

int
csrpool_threads(const struct csrpool *p)
{
	return p != NULL ? p->p_nthreads : 0;
}
