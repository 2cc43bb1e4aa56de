/*
 * Work for threads, finished on the event loop (workq.h).
 *
 * One mutex guards the queue and the done list.  A thread takes up to
 * batch_max items, runs them outside the lock and appends them to the
 * done list; the thread that makes the done list non-empty writes one
 * byte to the pipe, and the loop empties the pipe before it takes the
 * list, so no finished item waits unannounced.  While a thread runs one
 * batch the next gathers in the queue (the store's group commit).
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

#include "workq.h"

struct workq {
	const struct workq_ops	*q_ops;
	void			*q_ctx;
	size_t			 q_batch_max;
	pthread_mutex_t		 q_lock;
	pthread_cond_t		 q_cond;	/* queue not empty, or stop */
	struct workq_item	*q_queue, **q_queue_tail;
	struct workq_item	*q_done, **q_done_tail;
	int			 q_stop;
	pthread_t		 q_thread[WORKQ_MAX_THREADS];
	int			 q_nthreads;
	int			 q_sync_made;
	int			 q_pipe[2];	/* threads write, the loop reads */
	struct event		*q_event;
};

/* Up to q_batch_max queued items, as a list; with the lock held. */
static struct workq_item *
workq_take_locked(struct workq *q)
{
	struct workq_item *batch = q->q_queue, *last = NULL, *it;
	size_t n = 0;

	for (it = q->q_queue; it != NULL && n < q->q_batch_max;
	    it = it->wi_next, n++)
		last = it;
	if (last == NULL)
		return NULL;
	if ((q->q_queue = last->wi_next) == NULL)
		q->q_queue_tail = &q->q_queue;
	last->wi_next = NULL;
	return batch;
}

/* Appends a finished list to the done list; with the lock held.  Returns
 * whether the list was empty before. */
static int
workq_done_locked(struct workq *q, struct workq_item *batch)
{
	int was_empty = q->q_done == NULL;

	*q->q_done_tail = batch;
	while (*q->q_done_tail != NULL)
		q->q_done_tail = &(*q->q_done_tail)->wi_next;
	return was_empty;
}

static void *
workq_thread(void *arg)
{
	struct workq *q = arg;
	struct workq_item *batch;
	int was_empty;
	ssize_t n;

	for (;;) {
		pthread_mutex_lock(&q->q_lock);
		while (q->q_queue == NULL && !q->q_stop)
			pthread_cond_wait(&q->q_cond, &q->q_lock);
		if ((batch = workq_take_locked(q)) == NULL) {
			/* stopping, and nothing is left */
			pthread_mutex_unlock(&q->q_lock);
			break;
		}
		pthread_mutex_unlock(&q->q_lock);

		q->q_ops->wo_run(q->q_ctx, batch);

		pthread_mutex_lock(&q->q_lock);
		was_empty = workq_done_locked(q, batch);
		pthread_mutex_unlock(&q->q_lock);
		if (was_empty) {
			do
				n = write(q->q_pipe[1], "", 1);
			while (n == -1 && errno == EINTR);
			/* EAGAIN: the pipe is full of wakeups already */
		}
	}
	if (q->q_ops->wo_thread_end != NULL)
		q->q_ops->wo_thread_end(q->q_ctx);
	return NULL;
}

/* Calls done for every finished item, in order; from the loop's thread. */
static void
workq_deliver(struct workq *q)
{
	struct workq_item *list, *it;

	pthread_mutex_lock(&q->q_lock);
	list = q->q_done;
	q->q_done = NULL;
	q->q_done_tail = &q->q_done;
	pthread_mutex_unlock(&q->q_lock);
	while ((it = list) != NULL) {
		list = it->wi_next;
		it->wi_next = NULL;
		q->q_ops->wo_done(q->q_ctx, it);
	}
}

static void
workq_on_done(evutil_socket_t fd, short what, void *arg)
{
	char buf[256];
	ssize_t n;

	(void)what;
	do
		n = read(fd, buf, sizeof(buf));
	while (n > 0 || (n == -1 && errno == EINTR));
	workq_deliver(arg);
}

struct workq *
workq_new(struct event_base *base, int threads, size_t batch_max,
    const struct workq_ops *ops, void *ctx, char *err, size_t errlen)
{
	struct workq *q;
	sigset_t all, old;
	int i, rc;

	if (threads < 1 || threads > WORKQ_MAX_THREADS || batch_max < 1 ||
	    ops == NULL || ops->wo_run == NULL || ops->wo_done == NULL) {
		snprintf(err, errlen, "work queue: bad arguments");
		return NULL;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL) {
		snprintf(err, errlen, "work queue: out of memory");
		return NULL;
	}
	q->q_ops = ops;
	q->q_ctx = ctx;
	q->q_batch_max = batch_max;
	q->q_pipe[0] = q->q_pipe[1] = -1;
	q->q_queue_tail = &q->q_queue;
	q->q_done_tail = &q->q_done;
	if (pthread_mutex_init(&q->q_lock, NULL) != 0) {
		free(q);
		snprintf(err, errlen, "work queue: cannot make a mutex");
		return NULL;
	}
	if (pthread_cond_init(&q->q_cond, NULL) != 0) {
		pthread_mutex_destroy(&q->q_lock);
		free(q);
		snprintf(err, errlen, "work queue: cannot make a condition "
		    "variable");
		return NULL;
	}
	q->q_sync_made = 1;
	if (pipe2(q->q_pipe, O_CLOEXEC | O_NONBLOCK) == -1 ||
	    (q->q_event = event_new(base, q->q_pipe[0], EV_READ | EV_PERSIST,
	    workq_on_done, q)) == NULL ||
	    event_add(q->q_event, NULL) != 0) {
		snprintf(err, errlen, "work queue: cannot watch a pipe: %s",
		    strerror(errno));
		goto fail;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < threads; i++) {
		if ((rc = pthread_create(&q->q_thread[i], NULL, workq_thread,
		    q)) != 0) {
			snprintf(err, errlen, "work queue: thread %d: %s", i,
			    strerror(rc));
			break;
		}
		q->q_nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (q->q_nthreads != threads)
		goto fail;
	return q;
 fail:
	workq_free(q);
	return NULL;
}

void
workq_push(struct workq *q, struct workq_item *it)
{
	it->wi_next = NULL;
	pthread_mutex_lock(&q->q_lock);
	*q->q_queue_tail = it;
	q->q_queue_tail = &it->wi_next;
	pthread_cond_signal(&q->q_cond);
	pthread_mutex_unlock(&q->q_lock);
}

void
workq_free(struct workq *q)
{
	struct workq_item *batch;
	int i;

	if (q == NULL)
		return;
	pthread_mutex_lock(&q->q_lock);
	q->q_stop = 1;
	pthread_cond_broadcast(&q->q_cond);
	pthread_mutex_unlock(&q->q_lock);
	for (i = 0; i < q->q_nthreads; i++)
		pthread_join(q->q_thread[i], NULL);
	q->q_nthreads = 0;
	/* The threads emptied the queue; done may queue more. */
	for (;;) {
		workq_deliver(q);
		pthread_mutex_lock(&q->q_lock);
		batch = workq_take_locked(q);
		pthread_mutex_unlock(&q->q_lock);
		if (batch == NULL)
			break;
		q->q_ops->wo_run(q->q_ctx, batch);
		pthread_mutex_lock(&q->q_lock);
		(void)workq_done_locked(q, batch);
		pthread_mutex_unlock(&q->q_lock);
	}
	if (q->q_event != NULL)
		event_free(q->q_event);
	if (q->q_pipe[0] != -1)
		close(q->q_pipe[0]);
	if (q->q_pipe[1] != -1)
		close(q->q_pipe[1]);
	if (q->q_sync_made) {
		pthread_cond_destroy(&q->q_cond);
		pthread_mutex_destroy(&q->q_lock);
	}
	free(q);
}

void
workq_lock(struct workq *q)
{
	pthread_mutex_lock(&q->q_lock);
}

void
workq_unlock(struct workq *q)
{
	pthread_mutex_unlock(&q->q_lock);
}

int
workq_threads(const struct workq *q)
{
	return q != NULL ? q->q_nthreads : 0;
}
