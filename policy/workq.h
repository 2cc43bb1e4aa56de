/*
 * Work for threads, finished on the event loop: what the CSR pool and the
 * store's write thread share.  Items are the caller's structures with a
 * struct workq_item first; threads take them from the queue (up to
 * batch_max at a time), run them, and hand them back through a pipe the
 * loop watches, where done is called for each, in the order they ran.
 */
#ifndef HSMCA_WORKQ_H
#define HSMCA_WORKQ_H

#include <stddef.h>

struct event_base;
struct workq;

struct workq_item {
	struct workq_item	*wi_next;
};

#define WORKQ_MAX_THREADS	8

struct workq_ops {
	/* On a thread: run every item of the list (wi_next links it). */
	void	(*wo_run)(void *ctx, struct workq_item *batch);
	/* On the loop, or in workq_free: an item ran; done owns it now. */
	void	(*wo_done)(void *ctx, struct workq_item *item);
	/* On each thread as it ends; may be NULL. */
	void	(*wo_thread_end)(void *ctx);
};

/*
 * threads 1 to WORKQ_MAX_THREADS, batch_max at least 1.  Threads start
 * with every signal blocked.  NULL with err filled on failure.
 */
struct workq	*workq_new(struct event_base *, int threads, size_t batch_max,
		    const struct workq_ops *, void *ctx, char *err,
		    size_t errlen);

/* Queues an item; never fails. */
void		 workq_push(struct workq *, struct workq_item *);

/*
 * Stops the threads once the queue is empty, then, in the caller's
 * thread, runs and calls done for everything left, including what done
 * queues meanwhile (it must queue less each round), and frees the queue.
 */
void		 workq_free(struct workq *);

/* The queue's lock, for flags that threads and the loop both read. */
void		 workq_lock(struct workq *);
void		 workq_unlock(struct workq *);

int		 workq_threads(const struct workq *);

#endif
