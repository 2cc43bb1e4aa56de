/*
 * IPC transport: nanomsg raw REQ/REP over ipc:// (see transport.h).
 *
 * Raw sockets carry the REQ/REP backtrace in the message's SP header,
 * which nanomsg 1.1.5 hands over as an SP_HDR control message of the form
 * { size_t length; uint8_t header[length]; }.  The server keeps the header
 * of each request and gives it back with the answer (its first word is
 * xrep's pipe key, then the peer's request id).  The client writes the
 * header itself: one 32-bit big-endian word with the top bit set, which
 * xrep takes as the bottom of the backtrace and the answer carries back.
 *
 * Control buffers are always our own (never NN_MSG): on a failed send
 * nanomsg frees an NN_MSG control chunk it was given, so the caller
 * could not tell whether it still owns it.
 *
 * nanomsg behaviour this file is written around (1.1.5, read at the
 * source and measured by tests/test-transport.c):
 * - NN_RCVMAXSIZE is compared with the whole frame, SP header included,
 *   and a larger frame drops the connection.  Both sides therefore allow
 *   IPC_MAX_MESSAGE plus the one header word the peer adds, so every
 *   envelope up to IPC_MAX_MESSAGE crosses; a body above IPC_MAX_MESSAGE
 *   that fits in the slack is dropped here, never handed on.
 * - The raw REP socket silently drops an answer when the connection it
 *   belongs to is gone or still busy sending the previous one (xrep_send),
 *   which is the case whenever the kernel buffer towards the client is
 *   full: measured, 200 answers of 8 KB in flight lost 165 with the
 *   default NN_SNDBUF (128 KiB) and none with 4 MiB.  The server asks
 *   for IPC_T_SERVER_SNDBUF (the kernel caps it at net.core.wmem_max);
 *   the client must keep reading its descriptor and bound the answer
 *   bytes it has in flight.  A lost answer comes back as a timeout, and
 *   the server still counts it as answered.
 * - The raw REQ socket does not resend, and a send with no connection up
 *   (or with the previous message still queued in the kernel) is EAGAIN.
 * - nn_close drops the connection at once (NN_LINGER does nothing in
 *   1.x), and the client loses every answer it had not read yet, even
 *   those already in its kernel buffer.  ipc_server_stop therefore waits
 *   a moment after the last answer before it closes.
 */
#include "config.h"

#include <sys/types.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "ipc.h"
#include "transport.h"

/* codec.c: the thread-local buffer behind ipc_error_detail(). */
void	ipc_set_detail(const char *, ...) __attribute__((format(printf, 1, 2)));

/* One backtrace word: the request id a raw REQ socket puts in front. */
#define IPC_T_HDR_WORD		4
/* NN_RCVMAXSIZE on both sides: an envelope plus the peer's header word. */
#define IPC_T_RCVMAXSIZE	(IPC_MAX_MESSAGE + IPC_T_HDR_WORD)
/* The longest backtrace the server keeps: pipe key plus a few hops.  A
 * direct client makes it 8 bytes; anything longer than this is dropped. */
#define IPC_T_SPHDR_MAX		64
/* Control buffer: one SP_HDR message (cmsghdr, size_t, header). */
#define IPC_T_CTRL_LEN		256
/* How long the receiving thread blocks before it looks at the stop flag. */
#define IPC_T_RECV_POLL_MS	100
/* Window for the answer's timestamp, as ipc_open wants it. */
#define IPC_T_WINDOW_MS		30000
/* ipc_client_send waits at most this long for nanomsg to take a message
 * (connection coming up, kernel buffer full) before IPC_T_ERR_AGAIN. */
#define IPC_T_SEND_WAIT_MS	20
/* How long ipc_server_stop keeps the socket open after the last answer,
 * for the client to read it. */
#define IPC_T_STOP_LINGER_MS	100
/* Kernel send buffer asked for on the server's connections. */
#define IPC_T_SERVER_SNDBUF	(4 * 1024 * 1024)
/* Answers ipc_client_recv reads (and drops, when stale) in one call. */
#define IPC_T_RECV_BATCH	256
#define IPC_T_DEFAULT_WORKERS	4
#define IPC_T_DEFAULT_QUEUE	256
#define IPC_T_DEFAULT_INFLIGHT	256
#define IPC_T_MAX_INFLIGHT	65536
#define IPC_T_MAX_WORKERS	256
#define IPC_T_MAX_QUEUE		65536

union ipc_ctrl {
	struct nn_cmsghdr	 c_hdr;
	size_t			 c_align;
	uint8_t			 c_buf[IPC_T_CTRL_LEN];
};

static int64_t
ipc_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Fills ctrl with one SP_HDR message holding hdr; returns its length. */
static size_t
ipc_ctrl_put(union ipc_ctrl *ctrl, const uint8_t *hdr, size_t hdrlen)
{
	struct nn_cmsghdr *c = &ctrl->c_hdr;

	memset(ctrl, 0, sizeof(*ctrl));
	c->cmsg_len = NN_CMSG_LEN(sizeof(size_t) + hdrlen);
	c->cmsg_level = PROTO_SP;
	c->cmsg_type = SP_HDR;
	memcpy(NN_CMSG_DATA(c), &hdrlen, sizeof(size_t));
	memcpy(NN_CMSG_DATA(c) + sizeof(size_t), hdr, hdrlen);
	return NN_CMSG_SPACE(sizeof(size_t) + hdrlen);
}

/*
 * Finds the SP_HDR message in what nn_recvmsg wrote and copies at most
 * max bytes of header out.  Returns the header length, or -1 when there
 * is none or it is longer than max.
 */
static ssize_t
ipc_ctrl_get(struct nn_msghdr *mh, uint8_t *hdr, size_t max)
{
	struct nn_cmsghdr *c;
	size_t len, room;
	int n;

	for (c = NN_CMSG_FIRSTHDR(mh), n = 0; c != NULL && n < 8;
	    c = NN_CMSG_NXTHDR(mh, c), n++) {
		if (c->cmsg_level != PROTO_SP || c->cmsg_type != SP_HDR)
			continue;
		if (c->cmsg_len < NN_CMSG_LEN(sizeof(size_t)) ||
		    c->cmsg_len > IPC_T_CTRL_LEN)
			return -1;
		room = c->cmsg_len - NN_CMSG_LEN(sizeof(size_t));
		memcpy(&len, NN_CMSG_DATA(c), sizeof(size_t));
		if (len > room || len > max)
			return -1;
		memcpy(hdr, NN_CMSG_DATA(c) + sizeof(size_t), len);
		return (ssize_t)len;
	}
	return -1;
}

/*
 * Receives one message with its SP header.  *body is an nn chunk
 * (nn_freemsg).  Returns 0, IPC_T_ERR_AGAIN (nothing now, timeout,
 * signal), IPC_T_ERR_CLOSED, or 1 for a message dropped here (no usable
 * header, or a body above IPC_MAX_MESSAGE).
 */
static int
ipc_recv_one(int sock, int flags, void **body, size_t *len, uint8_t *hdr,
    size_t hdrmax, size_t *hdrlen)
{
	union ipc_ctrl ctrl;
	struct nn_msghdr mh;
	struct nn_iovec iov;
	void *chunk = NULL;
	ssize_t hl;
	int n;

	*body = NULL;
	*len = 0;
	*hdrlen = 0;
	memset(&ctrl, 0, sizeof(ctrl));
	memset(&mh, 0, sizeof(mh));
	iov.iov_base = &chunk;
	iov.iov_len = NN_MSG;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctrl.c_buf;
	mh.msg_controllen = sizeof(ctrl.c_buf);
	if ((n = nn_recvmsg(sock, &mh, flags)) < 0) {
		switch (errno) {
		case EAGAIN:
		case ETIMEDOUT:
		case EINTR:
			return IPC_T_ERR_AGAIN;
		default:
			ipc_set_detail("nn_recvmsg: %s", nn_strerror(errno));
			return IPC_T_ERR_CLOSED;
		}
	}
	if ((size_t)n > IPC_MAX_MESSAGE ||
	    (hl = ipc_ctrl_get(&mh, hdr, hdrmax)) < 0) {
		nn_freemsg(chunk);
		return 1;
	}
	*body = chunk;
	*len = (size_t)n;
	*hdrlen = (size_t)hl;
	return 0;
}

/* --- server ------------------------------------------------------------- */

struct ipc_job {
	void		*j_body;	/* nn chunk */
	size_t		 j_len;
	uint8_t		 j_hdr[IPC_T_SPHDR_MAX];
	size_t		 j_hdrlen;
};

struct ipc_server {
	int			 s_sock;
	char			*s_url;
	unsigned int		 s_nworkers;
	unsigned int		 s_qlen;
	ipc_handler_fn		 s_handler;
	ipc_handler_fn		 s_busy;
	void			*s_arg;

	pthread_mutex_t		 s_lock;
	pthread_cond_t		 s_nonempty;
	struct ipc_job		*s_queue;	/* ring of s_qlen */
	unsigned int		 s_head;
	unsigned int		 s_count;
	int			 s_draining;	/* under s_lock */
	atomic_int		 s_stop;

	int			 s_started;
	int			 s_recv_running;
	pthread_t		 s_recv;
	pthread_t		*s_workers;
	unsigned int		 s_nrunning;

	atomic_uint_fast64_t	 s_received;
	atomic_uint_fast64_t	 s_nbusy;
	atomic_uint_fast64_t	 s_answered;
	atomic_uint_fast64_t	 s_dropped;
	atomic_int_fast64_t	 s_last_sent;	/* CLOCK_MONOTONIC ms */
};

static void
ipc_job_clear(struct ipc_job *job)
{
	if (job->j_body != NULL)
		nn_freemsg(job->j_body);
	memset(job, 0, sizeof(*job));
}

/*
 * Runs fn on the job and sends its answer back along the job's header.
 * Returns 1 when an answer went out, 0 when there was none to send.
 */
static int
ipc_server_answer(struct ipc_server *srv, ipc_handler_fn fn,
    struct ipc_job *job)
{
	union ipc_ctrl ctrl;
	struct nn_msghdr mh;
	struct nn_iovec iov;
	uint8_t *resp = NULL;
	size_t resplen = 0;
	int sent = 0;

	if (fn == NULL || fn(srv->s_arg, job->j_body, job->j_len, &resp,
	    &resplen) != 0)
		goto out;
	/* The client would drop its connection, and every answer on it,
	 * rather than take a larger one. */
	if (resplen > IPC_MAX_MESSAGE || (resp == NULL && resplen != 0))
		goto out;
	memset(&mh, 0, sizeof(mh));
	iov.iov_base = resp;
	iov.iov_len = resplen;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctrl.c_buf;
	mh.msg_controllen = ipc_ctrl_put(&ctrl, job->j_hdr, job->j_hdrlen);
	/* Raw REP never blocks on send: it drops what it cannot send. */
	if (nn_sendmsg(srv->s_sock, &mh, 0) >= 0) {
		atomic_store(&srv->s_last_sent, ipc_mono_ms());
		sent = 1;
	}
 out:
	free(resp);
	return sent;
}

static void *
ipc_server_worker(void *arg)
{
	struct ipc_server *srv = arg;
	struct ipc_job job;

	for (;;) {
		pthread_mutex_lock(&srv->s_lock);
		while (srv->s_count == 0 && !srv->s_draining)
			pthread_cond_wait(&srv->s_nonempty, &srv->s_lock);
		if (srv->s_count == 0) {
			pthread_mutex_unlock(&srv->s_lock);
			break;
		}
		job = srv->s_queue[srv->s_head];
		memset(&srv->s_queue[srv->s_head], 0, sizeof(job));
		srv->s_head = (srv->s_head + 1) % srv->s_qlen;
		srv->s_count--;
		pthread_mutex_unlock(&srv->s_lock);

		if (ipc_server_answer(srv, srv->s_handler, &job))
			atomic_fetch_add(&srv->s_answered, 1);
		else
			atomic_fetch_add(&srv->s_dropped, 1);
		ipc_job_clear(&job);
	}
	return NULL;
}

static void *
ipc_server_receiver(void *arg)
{
	struct ipc_server *srv = arg;
	struct ipc_job job;
	int rc, queued;

	memset(&job, 0, sizeof(job));
	while (!atomic_load(&srv->s_stop)) {
		rc = ipc_recv_one(srv->s_sock, 0, &job.j_body, &job.j_len,
		    job.j_hdr, sizeof(job.j_hdr), &job.j_hdrlen);
		if (rc == IPC_T_ERR_CLOSED)
			break;
		if (rc != 0)
			continue;
		atomic_fetch_add(&srv->s_received, 1);

		pthread_mutex_lock(&srv->s_lock);
		if ((queued = srv->s_count < srv->s_qlen)) {
			srv->s_queue[(srv->s_head + srv->s_count) %
			    srv->s_qlen] = job;
			srv->s_count++;
			pthread_cond_signal(&srv->s_nonempty);
		}
		pthread_mutex_unlock(&srv->s_lock);
		if (queued) {
			memset(&job, 0, sizeof(job));
			continue;
		}
		/* Full: answer now rather than let the queue grow. */
		atomic_fetch_add(&srv->s_nbusy, 1);
		ipc_server_answer(srv, srv->s_busy, &job);
		ipc_job_clear(&job);
	}
	return NULL;
}

int
ipc_server_bind(const struct ipc_server_config *config,
    struct ipc_server **out)
{
	struct ipc_server *srv = NULL;
	int maxsize = IPC_T_RCVMAXSIZE, rcvtimeo = IPC_T_RECV_POLL_MS;
	int sndbuf = IPC_T_SERVER_SNDBUF;
	int ret = IPC_ERR_INVALID, locks = 0;

	if (out != NULL)
		*out = NULL;
	if (config == NULL || out == NULL || config->url == NULL ||
	    config->handler == NULL || config->workers > IPC_T_MAX_WORKERS ||
	    config->queue_len > IPC_T_MAX_QUEUE) {
		ipc_set_detail("server: invalid configuration");
		return IPC_ERR_INVALID;
	}
	ret = IPC_ERR_NOMEM;
	if ((srv = calloc(1, sizeof(*srv))) == NULL)
		goto fail;
	srv->s_sock = -1;
	srv->s_nworkers = config->workers ? config->workers :
	    IPC_T_DEFAULT_WORKERS;
	srv->s_qlen = config->queue_len ? config->queue_len :
	    IPC_T_DEFAULT_QUEUE;
	srv->s_handler = config->handler;
	srv->s_busy = config->busy;
	srv->s_arg = config->arg;
	atomic_init(&srv->s_stop, 0);
	atomic_init(&srv->s_received, 0);
	atomic_init(&srv->s_nbusy, 0);
	atomic_init(&srv->s_answered, 0);
	atomic_init(&srv->s_dropped, 0);
	atomic_init(&srv->s_last_sent, 0);
	if ((srv->s_url = strdup(config->url)) == NULL ||
	    (srv->s_queue = calloc(srv->s_qlen, sizeof(*srv->s_queue))) ==
	    NULL ||
	    (srv->s_workers = calloc(srv->s_nworkers,
	    sizeof(*srv->s_workers))) == NULL)
		goto fail;
	if (pthread_mutex_init(&srv->s_lock, NULL) != 0)
		goto fail;
	locks = 1;
	if (pthread_cond_init(&srv->s_nonempty, NULL) != 0)
		goto fail;
	locks = 2;

	ret = IPC_T_ERR_SOCKET;
	if ((srv->s_sock = nn_socket(AF_SP_RAW, NN_REP)) < 0) {
		ipc_set_detail("server: nn_socket: %s", nn_strerror(errno));
		goto fail;
	}
	if (nn_setsockopt(srv->s_sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsize,
	    sizeof(maxsize)) < 0 ||
	    nn_setsockopt(srv->s_sock, NN_SOL_SOCKET, NN_RCVTIMEO, &rcvtimeo,
	    sizeof(rcvtimeo)) < 0 ||
	    nn_setsockopt(srv->s_sock, NN_SOL_SOCKET, NN_SNDBUF, &sndbuf,
	    sizeof(sndbuf)) < 0) {
		ipc_set_detail("server: nn_setsockopt: %s", nn_strerror(errno));
		goto fail;
	}
	if (nn_bind(srv->s_sock, srv->s_url) < 0) {
		ipc_set_detail("server: bind %s: %s", srv->s_url,
		    nn_strerror(errno));
		goto fail;
	}
	*out = srv;
	return 0;
 fail:
	if (srv != NULL) {
		if (srv->s_sock >= 0)
			nn_close(srv->s_sock);
		if (locks >= 2)
			pthread_cond_destroy(&srv->s_nonempty);
		if (locks >= 1)
			pthread_mutex_destroy(&srv->s_lock);
		free(srv->s_workers);
		free(srv->s_queue);
		free(srv->s_url);
		free(srv);
	}
	if (ret == IPC_ERR_NOMEM)
		ipc_set_detail("server: out of memory");
	return ret;
}

/* Stops and joins whatever threads run; the socket stays open. */
static void
ipc_server_join(struct ipc_server *srv)
{
	unsigned int i;

	atomic_store(&srv->s_stop, 1);
	if (srv->s_recv_running) {
		pthread_join(srv->s_recv, NULL);
		srv->s_recv_running = 0;
	}
	pthread_mutex_lock(&srv->s_lock);
	srv->s_draining = 1;
	pthread_cond_broadcast(&srv->s_nonempty);
	pthread_mutex_unlock(&srv->s_lock);
	for (i = 0; i < srv->s_nrunning; i++)
		pthread_join(srv->s_workers[i], NULL);
	srv->s_nrunning = 0;
}

int
ipc_server_start(struct ipc_server *srv)
{
	unsigned int i;

	if (srv == NULL || srv->s_started) {
		ipc_set_detail("server: not bound, or started already");
		return IPC_ERR_INVALID;
	}
	srv->s_started = 1;
	for (i = 0; i < srv->s_nworkers; i++) {
		if (pthread_create(&srv->s_workers[i], NULL,
		    ipc_server_worker, srv) != 0)
			goto fail;
		srv->s_nrunning++;
	}
	if (pthread_create(&srv->s_recv, NULL, ipc_server_receiver, srv) != 0)
		goto fail;
	srv->s_recv_running = 1;
	return 0;
 fail:
	ipc_server_join(srv);
	ipc_set_detail("server: cannot start its threads");
	return IPC_ERR_NOMEM;
}

void
ipc_server_stop(struct ipc_server *srv)
{
	struct timespec ts;
	int64_t left;
	unsigned int i;

	if (srv == NULL)
		return;
	ipc_server_join(srv);
	left = atomic_load(&srv->s_last_sent) + IPC_T_STOP_LINGER_MS -
	    ipc_mono_ms();
	if (left > 0 && left <= IPC_T_STOP_LINGER_MS) {
		ts.tv_sec = 0;
		ts.tv_nsec = (long)left * 1000000L;
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	/* Only left when the workers never ran. */
	for (i = 0; i < srv->s_count; i++)
		ipc_job_clear(&srv->s_queue[(srv->s_head + i) % srv->s_qlen]);
	srv->s_count = 0;
	nn_close(srv->s_sock);
	pthread_cond_destroy(&srv->s_nonempty);
	pthread_mutex_destroy(&srv->s_lock);
	free(srv->s_workers);
	free(srv->s_queue);
	free(srv->s_url);
	free(srv);
}

void
ipc_server_counters(struct ipc_server *srv, uint64_t *received,
    uint64_t *busy, uint64_t *answered, uint64_t *dropped)
{
	if (received != NULL)
		*received = srv != NULL ? atomic_load(&srv->s_received) : 0;
	if (busy != NULL)
		*busy = srv != NULL ? atomic_load(&srv->s_nbusy) : 0;
	if (answered != NULL)
		*answered = srv != NULL ? atomic_load(&srv->s_answered) : 0;
	if (dropped != NULL)
		*dropped = srv != NULL ? atomic_load(&srv->s_dropped) : 0;
}

/* --- client ------------------------------------------------------------- */

enum ipc_slot_state {
	IPC_SLOT_FREE = 0,
	IPC_SLOT_WAITING,	/* sent, no answer yet */
	IPC_SLOT_DONE,		/* answered, kept for ipc_client_recv */
};

/*
 * One request in flight.  Its nanomsg id is 0x80000000 | gen << bits |
 * slot, so an answer finds its slot at once, and a late answer to a slot
 * used again since carries another generation and is dropped.
 */
struct ipc_slot {
	int			 sl_state;
	int			 sl_raw;
	uint32_t		 sl_nnid;
	uint32_t		 sl_gen;
	uint8_t			 sl_id[IPC_ID_LEN];
	void			*sl_cookie;
	int64_t			 sl_deadline;	/* CLOCK_MONOTONIC ms */
	struct ipc_reply	 sl_reply;	/* when DONE */
};

struct ipc_client {
	int			 cl_sock;
	int			 cl_rcvfd;
	int			 cl_sndfd;
	uint8_t			 cl_key[IPC_KEY_LEN];
	unsigned int		 cl_cap;
	unsigned int		 cl_bits;
	struct ipc_slot		*cl_slots;
	unsigned int		*cl_free;	/* stack of free slots */
	unsigned int		 cl_nfree;
	unsigned int		*cl_done;	/* FIFO of DONE slots */
	unsigned int		 cl_done_head;
	unsigned int		 cl_ndone;
};

int
ipc_client_open(const char *url, const uint8_t key[IPC_KEY_LEN],
    unsigned int max_inflight, struct ipc_client **out)
{
	struct ipc_client *cl = NULL;
	int maxsize = IPC_T_RCVMAXSIZE;
	size_t sz;
	unsigned int i;
	int ret;

	if (out != NULL)
		*out = NULL;
	if (url == NULL || key == NULL || out == NULL ||
	    max_inflight > IPC_T_MAX_INFLIGHT) {
		ipc_set_detail("client: invalid argument");
		return IPC_ERR_INVALID;
	}
	if (max_inflight == 0)
		max_inflight = IPC_T_DEFAULT_INFLIGHT;
	ret = IPC_ERR_NOMEM;
	if ((cl = calloc(1, sizeof(*cl))) == NULL)
		goto fail;
	cl->cl_sock = -1;
	cl->cl_cap = max_inflight;
	for (cl->cl_bits = 1; (1u << cl->cl_bits) < max_inflight; cl->cl_bits++)
		;
	if ((cl->cl_slots = calloc(max_inflight, sizeof(*cl->cl_slots))) ==
	    NULL ||
	    (cl->cl_free = calloc(max_inflight, sizeof(*cl->cl_free))) ==
	    NULL ||
	    (cl->cl_done = calloc(max_inflight, sizeof(*cl->cl_done))) == NULL)
		goto fail;
	/* Handed out lowest first. */
	for (i = 0; i < max_inflight; i++)
		cl->cl_free[i] = max_inflight - 1 - i;
	cl->cl_nfree = max_inflight;
	/* Random generations: a restarted client does not reuse ids. */
	if (RAND_bytes((unsigned char *)&cl->cl_slots[0].sl_gen,
	    sizeof(uint32_t)) != 1)
		goto fail;
	for (i = 1; i < max_inflight; i++)
		cl->cl_slots[i].sl_gen = cl->cl_slots[0].sl_gen + i * 7919;
	memcpy(cl->cl_key, key, IPC_KEY_LEN);

	ret = IPC_T_ERR_SOCKET;
	if ((cl->cl_sock = nn_socket(AF_SP_RAW, NN_REQ)) < 0) {
		ipc_set_detail("client: nn_socket: %s", nn_strerror(errno));
		goto fail;
	}
	if (nn_setsockopt(cl->cl_sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsize,
	    sizeof(maxsize)) < 0) {
		ipc_set_detail("client: nn_setsockopt: %s", nn_strerror(errno));
		goto fail;
	}
	sz = sizeof(cl->cl_rcvfd);
	if (nn_getsockopt(cl->cl_sock, NN_SOL_SOCKET, NN_RCVFD, &cl->cl_rcvfd,
	    &sz) < 0 || sz != sizeof(cl->cl_rcvfd)) {
		ipc_set_detail("client: NN_RCVFD: %s", nn_strerror(errno));
		goto fail;
	}
	sz = sizeof(cl->cl_sndfd);
	if (nn_getsockopt(cl->cl_sock, NN_SOL_SOCKET, NN_SNDFD, &cl->cl_sndfd,
	    &sz) < 0 || sz != sizeof(cl->cl_sndfd)) {
		ipc_set_detail("client: NN_SNDFD: %s", nn_strerror(errno));
		goto fail;
	}
	/* Asynchronous: nanomsg connects, and reconnects, on its own. */
	if (nn_connect(cl->cl_sock, url) < 0) {
		ipc_set_detail("client: connect %s: %s", url,
		    nn_strerror(errno));
		goto fail;
	}
	*out = cl;
	return 0;
 fail:
	if (ret == IPC_ERR_NOMEM)
		ipc_set_detail("client: out of memory");
	ipc_client_close(cl);
	return ret;
}

void
ipc_client_close(struct ipc_client *cl)
{
	unsigned int i;

	if (cl == NULL)
		return;
	if (cl->cl_sock >= 0)
		nn_close(cl->cl_sock);
	if (cl->cl_slots != NULL)
		for (i = 0; i < cl->cl_cap; i++)
			ipc_reply_clear(&cl->cl_slots[i].sl_reply);
	free(cl->cl_slots);
	free(cl->cl_free);
	free(cl->cl_done);
	OPENSSL_cleanse(cl->cl_key, sizeof(cl->cl_key));
	free(cl);
}

int
ipc_client_fd(struct ipc_client *cl)
{
	return cl != NULL ? cl->cl_rcvfd : IPC_ERR_INVALID;
}

void
ipc_reply_clear(struct ipc_reply *reply)
{
	if (reply == NULL)
		return;
	ipc_message_clear(&reply->msg);
	memset(reply, 0, sizeof(*reply));
}

unsigned int
ipc_client_inflight(struct ipc_client *cl)
{
	return cl != NULL ? cl->cl_cap - cl->cl_nfree : 0;
}

static void
ipc_slot_free(struct ipc_client *cl, unsigned int i)
{
	struct ipc_slot *sl = &cl->cl_slots[i];
	uint32_t gen = sl->sl_gen + 1;

	ipc_reply_clear(&sl->sl_reply);
	memset(sl, 0, sizeof(*sl));
	sl->sl_gen = gen;
	cl->cl_free[cl->cl_nfree++] = i;
}

/* Moves a slot's reply out to the caller and frees the slot. */
static void
ipc_slot_take(struct ipc_client *cl, unsigned int i, struct ipc_reply *reply)
{
	*reply = cl->cl_slots[i].sl_reply;
	memset(&cl->cl_slots[i].sl_reply, 0, sizeof(*reply));
	ipc_slot_free(cl, i);
}

static void
ipc_slot_expire(struct ipc_client *cl, unsigned int i)
{
	struct ipc_slot *sl = &cl->cl_slots[i];

	memset(&sl->sl_reply, 0, sizeof(sl->sl_reply));
	memcpy(sl->sl_reply.id, sl->sl_id, IPC_ID_LEN);
	sl->sl_reply.status = IPC_T_ERR_TIMEOUT;
	sl->sl_reply.cookie = sl->sl_cookie;
	sl->sl_state = IPC_SLOT_DONE;
}

/*
 * Sends buf with a new nanomsg id in a free slot, waiting at most wait_ms
 * for nanomsg to take it.  Returns 0 and *slot, or an error.
 */
static int
ipc_client_transmit(struct ipc_client *cl, const uint8_t *buf, size_t len,
    unsigned int timeout_ms, unsigned int wait_ms, unsigned int *slot)
{
	union ipc_ctrl ctrl;
	struct nn_msghdr mh;
	struct nn_iovec iov;
	struct pollfd pfd;
	struct ipc_slot *sl;
	uint8_t hdr[IPC_T_HDR_WORD];
	uint32_t nnid;
	int64_t start, left;
	unsigned int i;

	if (cl->cl_nfree == 0) {
		ipc_set_detail("client: %u requests in flight already",
		    cl->cl_cap);
		return IPC_T_ERR_FULL;
	}
	i = cl->cl_free[cl->cl_nfree - 1];
	sl = &cl->cl_slots[i];
	nnid = 0x80000000u | ((sl->sl_gen << cl->cl_bits) & 0x7fffffffu) | i;
	hdr[0] = (uint8_t)(nnid >> 24);
	hdr[1] = (uint8_t)(nnid >> 16);
	hdr[2] = (uint8_t)(nnid >> 8);
	hdr[3] = (uint8_t)nnid;

	memset(&mh, 0, sizeof(mh));
	/* nanomsg copies it; its iovec just is not const. */
	iov.iov_base = (void *)(uintptr_t)buf;
	iov.iov_len = len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctrl.c_buf;
	mh.msg_controllen = ipc_ctrl_put(&ctrl, hdr, sizeof(hdr));
	start = ipc_mono_ms();
	while (nn_sendmsg(cl->cl_sock, &mh, NN_DONTWAIT) < 0) {
		if (errno != EAGAIN && errno != EINTR) {
			ipc_set_detail("client: nn_sendmsg: %s",
			    nn_strerror(errno));
			return errno == EBADF || errno == ETERM ?
			    IPC_T_ERR_CLOSED : IPC_T_ERR_SOCKET;
		}
		if ((left = start + wait_ms - ipc_mono_ms()) <= 0) {
			ipc_set_detail("client: cannot send now (no "
			    "connection, or the connection is full)");
			return IPC_T_ERR_AGAIN;
		}
		pfd.fd = cl->cl_sndfd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		(void)poll(&pfd, 1, (int)left);
	}
	cl->cl_nfree--;
	sl->sl_state = IPC_SLOT_WAITING;
	sl->sl_nnid = nnid;
	sl->sl_deadline = ipc_mono_ms() + timeout_ms;
	*slot = i;
	return 0;
}

static int
ipc_client_send_common(struct ipc_client *cl, int type, const uint8_t *body,
    size_t bodylen, const uint8_t *id_in, unsigned int timeout_ms,
    void *cookie, uint8_t id_out[IPC_ID_LEN], unsigned int wait_ms,
    unsigned int *slot)
{
	uint8_t id[IPC_ID_LEN], *msg = NULL;
	size_t msglen;
	int ret;

	if (cl == NULL || (body == NULL && bodylen != 0) || timeout_ms == 0 ||
	    timeout_ms > INT_MAX) {
		ipc_set_detail("client send: invalid argument");
		return IPC_ERR_INVALID;
	}
	if (cl->cl_nfree == 0) {
		ipc_set_detail("client: %u requests in flight already",
		    cl->cl_cap);
		return IPC_T_ERR_FULL;
	}
	if (id_in != NULL)
		memcpy(id, id_in, IPC_ID_LEN);
	else if (RAND_bytes(id, sizeof(id)) != 1) {
		ipc_set_detail("client send: no random request id");
		return IPC_ERR_NOMEM;
	}
	if ((ret = ipc_seal(cl->cl_key, type, id, ipc_now_ms(), body, bodylen,
	    &msg, &msglen)) != 0)
		goto out;
	if (msglen > IPC_MAX_MESSAGE) {
		ipc_set_detail("client send: %s of %zu bytes",
		    ipc_type_name(type), msglen);
		ret = IPC_ERR_TOO_LARGE;
		goto out;
	}
	if ((ret = ipc_client_transmit(cl, msg, msglen, timeout_ms, wait_ms,
	    slot)) != 0)
		goto out;
	memcpy(cl->cl_slots[*slot].sl_id, id, IPC_ID_LEN);
	cl->cl_slots[*slot].sl_cookie = cookie;
	if (id_out != NULL)
		memcpy(id_out, id, IPC_ID_LEN);
 out:
	OPENSSL_free(msg);
	return ret;
}

int
ipc_client_send(struct ipc_client *cl, int type, const uint8_t *body,
    size_t bodylen, const uint8_t *id_in, unsigned int timeout_ms,
    void *cookie, uint8_t id_out[IPC_ID_LEN])
{
	unsigned int slot;

	if (id_out != NULL)
		memset(id_out, 0, IPC_ID_LEN);
	return ipc_client_send_common(cl, type, body, bodylen, id_in,
	    timeout_ms, cookie, id_out,
	    timeout_ms < IPC_T_SEND_WAIT_MS ? timeout_ms : IPC_T_SEND_WAIT_MS,
	    &slot);
}

/* No size check beyond nanomsg's own: tests send what the server must
 * refuse (a frame above its NN_RCVMAXSIZE costs the connection). */
int
ipc_client_send_raw(struct ipc_client *cl, const uint8_t *buf, size_t len,
    unsigned int timeout_ms, void *cookie)
{
	unsigned int slot;
	int ret;

	if (cl == NULL || (buf == NULL && len != 0) || timeout_ms == 0 ||
	    timeout_ms > INT_MAX) {
		ipc_set_detail("client send: invalid argument");
		return IPC_ERR_INVALID;
	}
	if ((ret = ipc_client_transmit(cl, buf, len, timeout_ms,
	    timeout_ms < IPC_T_SEND_WAIT_MS ? timeout_ms : IPC_T_SEND_WAIT_MS,
	    &slot)) != 0)
		return ret;
	cl->cl_slots[slot].sl_raw = 1;
	cl->cl_slots[slot].sl_cookie = cookie;
	return 0;
}

/*
 * Reads one answer and completes its slot (DONE, reply filled in).
 * Returns 0 and *slot, 1 for an answer dropped (unknown or late id, no
 * header), IPC_T_ERR_AGAIN or IPC_T_ERR_CLOSED.
 */
static int
ipc_client_read(struct ipc_client *cl, unsigned int *slot)
{
	struct ipc_slot *sl;
	struct ipc_reply *r;
	void *body;
	size_t len, hdrlen;
	uint8_t hdr[IPC_T_HDR_WORD];
	uint32_t nnid, i;
	int rc;

	if ((rc = ipc_recv_one(cl->cl_sock, NN_DONTWAIT, &body, &len, hdr,
	    sizeof(hdr), &hdrlen)) != 0)
		return rc;
	rc = 1;
	if (hdrlen != IPC_T_HDR_WORD)
		goto out;
	nnid = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
	    (uint32_t)hdr[2] << 8 | hdr[3];
	i = nnid & ((1u << cl->cl_bits) - 1);
	if (i >= cl->cl_cap)
		goto out;
	sl = &cl->cl_slots[i];
	if (sl->sl_state != IPC_SLOT_WAITING || sl->sl_nnid != nnid)
		goto out;

	r = &sl->sl_reply;
	memset(r, 0, sizeof(*r));
	r->cookie = sl->sl_cookie;
	r->status = ipc_open(cl->cl_key, body, len, ipc_now_ms(),
	    IPC_T_WINDOW_MS, &r->msg);
	if (sl->sl_raw) {
		if (r->status == 0 || r->status == IPC_ERR_STALE ||
		    r->status == IPC_ERR_TYPE)
			memcpy(r->id, r->msg.im_id, IPC_ID_LEN);
	} else {
		memcpy(r->id, sl->sl_id, IPC_ID_LEN);
		if (r->status == 0 &&
		    memcmp(r->msg.im_id, sl->sl_id, IPC_ID_LEN) != 0) {
			ipc_set_detail("%s: answers another request id",
			    ipc_type_name(r->msg.im_type));
			r->status = IPC_ERR_DECODE;
		}
	}
	if (r->status != 0)
		ipc_message_clear(&r->msg);
	sl->sl_state = IPC_SLOT_DONE;
	*slot = i;
	rc = 0;
 out:
	nn_freemsg(body);
	return rc;
}

int
ipc_client_recv(struct ipc_client *cl, struct ipc_reply *reply)
{
	unsigned int i, slot, n, best;
	int64_t now;
	int rc;

	if (reply != NULL)
		memset(reply, 0, sizeof(*reply));
	if (cl == NULL || reply == NULL)
		return IPC_ERR_INVALID;
	if (cl->cl_ndone > 0) {
		slot = cl->cl_done[cl->cl_done_head];
		cl->cl_done_head = (cl->cl_done_head + 1) % cl->cl_cap;
		cl->cl_ndone--;
		ipc_slot_take(cl, slot, reply);
		return 0;
	}
	/* Answers first: one that came in before its deadline counts. */
	for (n = 0; n < IPC_T_RECV_BATCH; n++) {
		if ((rc = ipc_client_read(cl, &slot)) == 0) {
			ipc_slot_take(cl, slot, reply);
			return 0;
		}
		if (rc != 1)
			break;
	}
	now = ipc_mono_ms();
	best = cl->cl_cap;
	for (i = 0; i < cl->cl_cap; i++) {
		if (cl->cl_slots[i].sl_state != IPC_SLOT_WAITING ||
		    cl->cl_slots[i].sl_deadline > now)
			continue;
		if (best == cl->cl_cap || cl->cl_slots[i].sl_deadline <
		    cl->cl_slots[best].sl_deadline)
			best = i;
	}
	if (best < cl->cl_cap) {
		ipc_slot_expire(cl, best);
		ipc_slot_take(cl, best, reply);
		return 0;
	}
	return IPC_T_ERR_AGAIN;
}

int
ipc_client_next_timeout(struct ipc_client *cl)
{
	int64_t now, earliest = -1;
	unsigned int i;

	if (cl == NULL)
		return -1;
	if (cl->cl_ndone > 0)
		return 0;
	for (i = 0; i < cl->cl_cap; i++)
		if (cl->cl_slots[i].sl_state == IPC_SLOT_WAITING &&
		    (earliest < 0 || cl->cl_slots[i].sl_deadline < earliest))
			earliest = cl->cl_slots[i].sl_deadline;
	if (earliest < 0)
		return -1;
	now = ipc_mono_ms();
	return earliest <= now ? 0 : (int)(earliest - now);
}

int
ipc_client_call(struct ipc_client *cl, int type, const uint8_t *body,
    size_t bodylen, const uint8_t *id_in, unsigned int timeout_ms,
    struct ipc_reply *reply)
{
	struct pollfd pfd;
	struct ipc_slot *sl;
	unsigned int mine, slot;
	int64_t left;
	int rc;

	if (reply != NULL)
		memset(reply, 0, sizeof(*reply));
	if (reply == NULL)
		return IPC_ERR_INVALID;
	if ((rc = ipc_client_send_common(cl, type, body, bodylen, id_in,
	    timeout_ms, NULL, reply->id, timeout_ms, &mine)) != 0) {
		reply->status = rc;
		return rc;
	}
	sl = &cl->cl_slots[mine];
	for (;;) {
		rc = ipc_client_read(cl, &slot);
		if (rc == 0 && slot == mine)
			break;
		if (rc == 0) {
			/* Someone else's: kept for ipc_client_recv. */
			cl->cl_done[(cl->cl_done_head + cl->cl_ndone) %
			    cl->cl_cap] = slot;
			cl->cl_ndone++;
		}
		if (rc == IPC_T_ERR_CLOSED) {
			ipc_slot_free(cl, mine);
			reply->status = rc;
			return rc;
		}
		if ((left = sl->sl_deadline - ipc_mono_ms()) <= 0) {
			ipc_slot_expire(cl, mine);
			ipc_set_detail("%s: no answer within %u ms",
			    ipc_type_name(type), timeout_ms);
			break;
		}
		if (rc == IPC_T_ERR_AGAIN) {
			pfd.fd = cl->cl_rcvfd;
			pfd.events = POLLIN;
			pfd.revents = 0;
			(void)poll(&pfd, 1, (int)left);
		}
	}
	ipc_slot_take(cl, mine, reply);
	return reply->status;
}
