/*
 * hsmca IPC transport: nanomsg REQ/REP over ipc://, raw sockets on both
 * sides (DESIGN.md "IPC").
 *
 * The transport moves opaque byte strings (sealed envelopes from
 * envelope.c); it never looks inside them.  Both sides set NN_RCVMAXSIZE
 * explicitly to IPC_MAX_MESSAGE plus the 4-byte nanomsg request header
 * (nanomsg counts the whole frame), so a larger message is dropped by
 * nanomsg, with its connection, rather than allocated.
 *
 * nanomsg 1.1.5's raw REP socket drops an answer silently when the kernel
 * buffer towards the client is full; the server asks for a 4 MiB send
 * buffer (the kernel may cap it at net.core.wmem_max), and a client must
 * keep reading and bound the answers it has in flight.
 *
 * Server: a raw REP socket, one receiving thread and a fixed number of
 * worker threads behind a bounded queue.  When the queue is full the
 * receiving thread answers at once through the busy callback instead of
 * letting the queue grow.
 *
 * Client: a raw REQ socket, many requests in flight, matched to their
 * answers by the nanomsg backtrace id; its receive descriptor (NN_RCVFD)
 * goes into the caller's event loop; every request has its own deadline.
 * The client does not resend: a caller that retries sends the same request
 * id again, which the signer answers from its record (invariant 6).
 *
 * Functions return 0 or a negative IPC_ERR_* / IPC_T_ERR_* code;
 * ipc_error_detail() names what was wrong.
 */
#ifndef HSMCA_IPC_TRANSPORT_H
#define HSMCA_IPC_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "ipc.h"

enum ipc_transport_error {
	IPC_T_ERR_SOCKET = -20,		/* nanomsg socket, bind or connect failed */
	IPC_T_ERR_AGAIN = -21,		/* nothing to receive now */
	IPC_T_ERR_TIMEOUT = -22,	/* a request passed its deadline */
	IPC_T_ERR_CLOSED = -23,		/* server stopping / client closed */
	IPC_T_ERR_FULL = -24,		/* client: too many requests in flight */
};

/* --- server ------------------------------------------------------------- */

struct ipc_server;

/*
 * Called by a worker thread for each request.  Returns 0 and an answer in
 * *resp (malloc'd; the transport frees it after sending), or -1 to send no
 * answer at all (the client's deadline then expires).
 */
typedef int (*ipc_handler_fn)(void *arg, const uint8_t *req, size_t len,
    uint8_t **resp, size_t *resplen);

struct ipc_server_config {
	const char	*url;		/* "ipc:///path/signer.sock" */
	unsigned int	 workers;	/* worker threads; 0 means 4 */
	unsigned int	 queue_len;	/* queued requests; 0 means 256 */
	ipc_handler_fn	 handler;
	/* Called by the receiving thread when the queue is full; same
	 * contract as handler.  Must be fast (no token, no disk). */
	ipc_handler_fn	 busy;
	void		*arg;
};

/* Creates the raw REP socket and binds it.  No thread runs yet, so the
 * caller can bind, then drop privileges, then start.  The socket file is
 * created with the process umask; the caller owns the directory's mode. */
int	ipc_server_bind(const struct ipc_server_config *config,
	    struct ipc_server **out);
/* Starts the receiving thread and the workers. */
int	ipc_server_start(struct ipc_server *srv);
/* Stops receiving, lets the workers finish every queued and in-flight
 * request and send its answer, joins all threads, closes the socket. */
void	ipc_server_stop(struct ipc_server *srv);
/* Requests received, answered busy, answered, dropped (handler -1). */
void	ipc_server_counters(struct ipc_server *srv, uint64_t *received,
	    uint64_t *busy, uint64_t *answered, uint64_t *dropped);

/* --- client ------------------------------------------------------------- */

struct ipc_client;

struct ipc_reply {
	uint8_t		 id[IPC_ID_LEN];	/* the request id it answers */
	int		 status;		/* 0, or IPC_T_ERR_TIMEOUT, or
						 * an ipc_open error */
	struct ipc_message msg;			/* when status is 0 */
	void		*cookie;		/* as given to send */
};

/* Connects a raw REQ socket to url.  The MAC key is copied (and wiped at
 * close).  max_inflight bounds the requests awaiting an answer. */
int	ipc_client_open(const char *url, const uint8_t key[IPC_KEY_LEN],
	    unsigned int max_inflight, struct ipc_client **out);
void	ipc_client_close(struct ipc_client *cl);
/* The descriptor that polls readable when an answer may be waiting. */
int	ipc_client_fd(struct ipc_client *cl);
/* Seals body as a message of type with request id (random when id_in is
 * NULL; given, to retry a request) and the current time, and sends it.
 * The answer, or a timeout, comes back from ipc_client_recv with cookie. */
/* IPC_T_ERR_AGAIN when nanomsg does not take the message within 20 ms
 * (no connection). */
int	ipc_client_send(struct ipc_client *cl, int type, const uint8_t *body,
	    size_t bodylen, const uint8_t *id_in, unsigned int timeout_ms,
	    void *cookie, uint8_t id_out[IPC_ID_LEN]);
/* Sends bytes exactly as given (tests: bad MACs, garbage, replays).  The
 * answer is matched by the transport alone; its id is whatever it says. */
int	ipc_client_send_raw(struct ipc_client *cl, const uint8_t *buf,
	    size_t len, unsigned int timeout_ms, void *cookie);
/* Non-blocking: returns 0 with one answer or expired request in *reply
 * (ipc_reply_clear when done), or IPC_T_ERR_AGAIN. */
int	ipc_client_recv(struct ipc_client *cl, struct ipc_reply *reply);
/* Milliseconds until the earliest deadline (for poll), -1 if none. */
int	ipc_client_next_timeout(struct ipc_client *cl);
/* Requests sent and not yet returned by ipc_client_recv. */
unsigned int ipc_client_inflight(struct ipc_client *cl);
void	ipc_reply_clear(struct ipc_reply *reply);
/* Blocking convenience: send, wait for this answer (others that arrive
 * meanwhile are kept for ipc_client_recv). */
int	ipc_client_call(struct ipc_client *cl, int type, const uint8_t *body,
	    size_t bodylen, const uint8_t *id_in, unsigned int timeout_ms,
	    struct ipc_reply *reply);

#endif
