/*
 * The signer, seen from the policy daemon's event loop: the IPC client's
 * receive descriptor (NN_RCVFD) and its earliest deadline drive one read
 * event and one timer, so that many requests are in flight without a
 * thread.  Every request's callback runs exactly once: with the answer,
 * with a timeout, or with IPC_T_ERR_CLOSED when the link is freed.
 *
 * A periodic health probe says whether the signer answers and its token
 * is up; /healthz and the 503 answers use it.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/rand.h>

#include "ipc.h"
#include "log.h"
#include "policyd.h"
#include "transport.h"

/* Answers handled per wakeup, so that one busy link cannot starve HTTP. */
#define LINK_BATCH	256

struct link_req {
	struct link_req	*lr_next, *lr_prev;
	link_cb		 lr_cb;
	void		*lr_arg;
};

struct link {
	struct ipc_client	*l_client;
	struct event_base	*l_base;
	struct event		*l_read;
	struct event		*l_timer;
	struct event		*l_health;
	struct link_req		 l_list;	/* sentinel of the pending list */
	unsigned int		 l_timeout_ms;
	unsigned int		 l_health_ms;
	int			 l_up;
	int			 l_down;	/* known down: fail fast, probe often */
	int			 l_probing;
	void			(*l_watch_cb)(void *, int);
	void			*l_watch_arg;
};

static void link_drain(struct link *);

static void
link_arm_timer(struct link *l)
{
	struct timeval tv;
	int ms;

	if ((ms = ipc_client_next_timeout(l->l_client)) < 0) {
		evtimer_del(l->l_timer);
		return;
	}
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000 + 1000;
	evtimer_add(l->l_timer, &tv);
}

static void
link_unlist(struct link_req *r)
{
	r->lr_prev->lr_next = r->lr_next;
	r->lr_next->lr_prev = r->lr_prev;
}

static void
link_drain(struct link *l)
{
	struct ipc_reply reply;
	struct link_req *r;
	int i;

	for (i = 0; i < LINK_BATCH; i++) {
		memset(&reply, 0, sizeof(reply));
		if (ipc_client_recv(l->l_client, &reply) != 0)
			break;
		if ((r = reply.cookie) != NULL) {
			link_unlist(r);
			r->lr_cb(r->lr_arg, reply.status,
			    reply.status == 0 ? &reply.msg : NULL);
			free(r);
		}
		ipc_reply_clear(&reply);
	}
	if (i == LINK_BATCH)
		event_active(l->l_read, EV_READ, 0);
	link_arm_timer(l);
}

static void
link_on_event(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	link_drain(arg);
}

static void
link_set_up(struct link *l, int up)
{
	l->l_down = !up;
	if (up == l->l_up)
		return;
	l->l_up = up;
	if (up)
		log_info("signer: answering, token up");
	else
		log_warnx("signer: not answering or token down");
	if (l->l_watch_cb != NULL)
		l->l_watch_cb(l->l_watch_arg, up);
}

static void
link_health_done(void *arg, int status, const struct ipc_message *msg)
{
	struct link *l = arg;
	IPC_HEALTH_RESP *resp = NULL;
	int up = 0;

	l->l_probing = 0;
	if (status == 0 && msg->im_type == IPC_T_HEALTH_RESP &&
	    ipc_decode(IPC_HEALTH_RESP_it(), msg->im_body, msg->im_bodylen,
	    "health answer", (void **)&resp) == 0)
		up = ASN1_INTEGER_get(resp->token_up) == 1;
	IPC_HEALTH_RESP_free(resp);
	link_set_up(l, up);
}

static void
link_probe(struct link *l)
{
	IPC_HEALTH_REQ *req;
	uint8_t *body = NULL;
	size_t len;
	uint64_t nonce;
	int rc = -1;

	if (l->l_probing)
		return;
	if ((req = IPC_HEALTH_REQ_new()) != NULL &&
	    RAND_bytes((unsigned char *)&nonce, sizeof(nonce)) == 1 &&
	    ASN1_INTEGER_set_uint64(req->nonce, nonce >> 1) == 1 &&
	    ipc_encode(IPC_HEALTH_REQ_it(), req, &body, &len) == 0)
		rc = link_send(l, IPC_T_HEALTH_REQ, body, len, NULL,
		    link_health_done, l, NULL);
	IPC_HEALTH_REQ_free(req);
	OPENSSL_free(body);
	if (rc == 0)
		l->l_probing = 1;
	else
		link_set_up(l, 0);
}

static void
link_on_health(evutil_socket_t fd, short what, void *arg)
{
	struct link *l = arg;
	struct timeval tv;
	unsigned int ms;

	(void)fd;
	(void)what;
	link_probe(l);
	/* While the signer is down, look for it ten times as often. */
	ms = l->l_down ? l->l_health_ms / 10 : l->l_health_ms;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(l->l_health, &tv);
}

struct link *
link_new(struct event_base *base, const char *url,
    const uint8_t key[IPC_KEY_LEN], unsigned int max_inflight,
    unsigned int timeout_ms)
{
	struct link *l;
	int err;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		return NULL;
	l->l_base = base;
	l->l_timeout_ms = timeout_ms;
	l->l_list.lr_next = l->l_list.lr_prev = &l->l_list;
	if ((err = ipc_client_open(url, key, max_inflight,
	    &l->l_client)) != 0) {
		log_warnx("signer %s: %s", url, ipc_strerror(err));
		free(l);
		return NULL;
	}
	if ((l->l_read = event_new(base, ipc_client_fd(l->l_client),
	    EV_READ | EV_PERSIST, link_on_event, l)) == NULL ||
	    (l->l_timer = evtimer_new(base, link_on_event, l)) == NULL ||
	    (l->l_health = evtimer_new(base, link_on_health, l)) == NULL ||
	    event_add(l->l_read, NULL) != 0) {
		link_free(l);
		return NULL;
	}
	return l;
}

void
link_watch(struct link *l, unsigned int interval_ms,
    void (*cb)(void *, int), void *arg)
{
	l->l_health_ms = interval_ms;
	l->l_watch_cb = cb;
	l->l_watch_arg = arg;
	link_on_health(-1, 0, l);
}

void
link_free(struct link *l)
{
	struct link_req *r;

	if (l == NULL)
		return;
	if (l->l_read != NULL)
		event_free(l->l_read);
	if (l->l_timer != NULL)
		event_free(l->l_timer);
	if (l->l_health != NULL)
		event_free(l->l_health);
	/* Callbacks first: they may look at the link. */
	while ((r = l->l_list.lr_next) != &l->l_list) {
		link_unlist(r);
		r->lr_cb(r->lr_arg, IPC_T_ERR_CLOSED, NULL);
		free(r);
	}
	ipc_client_close(l->l_client);
	free(l);
}

int
link_send(struct link *l, int type, const uint8_t *body, size_t len,
    const uint8_t *id, link_cb cb, void *arg, uint8_t id_out[IPC_ID_LEN])
{
	struct link_req *r;
	uint8_t idbuf[IPC_ID_LEN];
	int err;

	/*
	 * With no connection nanomsg holds a send for 20 ms; while the
	 * signer is known to be down only the health probe pays that, and
	 * everything else is refused at once.
	 */
	if (l->l_down && type != IPC_T_HEALTH_REQ)
		return IPC_T_ERR_AGAIN;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return IPC_T_ERR_FULL;
	r->lr_cb = cb;
	r->lr_arg = arg;
	if ((err = ipc_client_send(l->l_client, type, body, len, id,
	    l->l_timeout_ms, r, idbuf)) != 0) {
		free(r);
		if (err == IPC_T_ERR_AGAIN)
			link_set_up(l, 0);
		return err;
	}
	if (id_out != NULL)
		memcpy(id_out, idbuf, IPC_ID_LEN);
	r->lr_next = &l->l_list;
	r->lr_prev = l->l_list.lr_prev;
	r->lr_prev->lr_next = r;
	l->l_list.lr_prev = r;
	link_arm_timer(l);
	return 0;
}

const char *
link_strerror(int err)
{
	switch (err) {
	case IPC_T_ERR_AGAIN:
		return "the signer does not answer, or its token is down";
	case IPC_T_ERR_TIMEOUT:
		return "no answer in time";
	case IPC_T_ERR_CLOSED:
		return "the link is closing";
	case IPC_T_ERR_FULL:
		return "too many requests in flight";
	case IPC_T_ERR_SOCKET:
		return "socket error";
	default:
		return ipc_strerror(err);
	}
}

int
link_up(const struct link *l)
{
	return l->l_up;
}

unsigned int
link_inflight(const struct link *l)
{
	return ipc_client_inflight(l->l_client);
}
