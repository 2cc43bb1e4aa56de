/*
 * The policy daemon's HTTPS listener (https.h): libevent's evhttp over
 * OpenSSL bufferevents.
 *
 * libevent 2.1 gives evhttp no per-connection hook besides the bufferevent
 * callback, which runs before evhttp has made its connection object.  So:
 *
 * - The bufferevent callback counts the connection and makes its TLS
 *   bufferevent; a connection over the limit gets a plain bufferevent
 *   instead, which the reaper below frees (closing the socket) before
 *   anything is read from it: no TLS work, no bytes read.
 * - The reaper, an event activated from the bufferevent callback and run
 *   in the same loop pass, finds evhttp's connection object (the
 *   bufferevent's callback argument) and sets our close callback on it.
 *   We hold a bufferevent reference until then, so a connection evhttp
 *   dropped in between is seen (its callbacks are cleared) and not used.
 * - The close callback uncounts the connection and aborts the request a
 *   handler still holds (https_on_abort).
 *
 * A handler that returns without replying leaves the request pending.
 * evhttp then still has the read callback set (for a GET) or reading off
 * (for a POST); we do what evhttp itself does while it writes a reply:
 * reading on, read callback off, so that a client that goes away is seen at
 * once and extra bytes it sends (a pipelined request) wait in the buffer
 * instead of reaching evhttp's reader in a state it treats as fatal.  The
 * input buffer has a high watermark so those bytes stay bounded.  The
 * connection's timeout keeps running meanwhile: a request not answered
 * within timeout_s is aborted.
 *
 * Sessions are neither cached nor resumed (no tickets, no cache): every
 * connection does a full handshake, so a client certificate is always
 * checked against the current client CA bundle, and no ticket key has to
 * be kept or rotated.
 *
 * What callers see beyond https.h:
 * - Answers evhttp gives by itself: 413 for a body over max_body (also
 *   on "Expect: 100-continue", before the body is sent), 400 for headers
 *   over max_headers and for malformed requests, 501 for a method token
 *   evhttp does not know.  Known methods other than GET and POST get our
 *   405 with "Allow: GET, POST"; a path with a bad escape or a %00, and a
 *   malformed query string, get our 400.  These never reach the handler.
 * - The abort callback runs once, from the loop, when the client goes,
 *   when the request stays unanswered for timeout_s, and from
 *   https_free() for every request still pending.  The request is freed
 *   right after it returns; it must not call https_reply().
 * - The idle timeout is evhttp's (per read and write): a client trickling
 *   a byte per timeout_s keeps a connection, bounded by max_headers and
 *   max_body, and by max_connections.
 * - Writing to a reset connection raises SIGPIPE: the daemon must ignore
 *   it (signal(SIGPIPE, SIG_IGN)) before serving.
 * - Anything linking this file needs libssl (HSMCA_HTTPS_LIBS).
 */
#include "config.h"

#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "https.h"
#include "log.h"
#include "token.h"

#define HTTPS_KEY_FILE_MAX	(256 * 1024)
#define HTTPS_VERIFY_DEPTH	8
#define HTTPS_CIPHERS		"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
#define HTTPS_SESSION_CTX	"hsmca-policy"
/* Slack above max_headers + max_body for the input high watermark. */
#define HTTPS_INPUT_SLACK	(64 * 1024)
#define HTTPS_ADDR_LEN		64
/* After an accept error (out of descriptors), stop accepting this long. */
#define HTTPS_ACCEPT_PAUSE_S	1

struct https_conn;

struct https_request {
	struct https_server	*hr_server;
	struct https_conn	*hr_conn;
	struct evhttp_request	*hr_evreq;
	const char		*hr_method;
	char			*hr_path;
	struct evkeyvalq	 hr_query;
	uint8_t			*hr_body;
	size_t			 hr_body_len;
	X509			*hr_peer;
	STACK_OF(X509)		*hr_chain;
	void			(*hr_abort_cb)(void *);
	void			*hr_abort_arg;
};

struct https_conn {
	TAILQ_ENTRY(https_conn)	 hc_entry;
	struct https_server	*hc_server;
	struct bufferevent	*hc_bev;	/* evhttp's; ours is one reference until attached */
	SSL			*hc_ssl;	/* owned by hc_bev */
	struct evhttp_connection *hc_evcon;	/* NULL until attached */
	struct https_request	*hc_pending;	/* handed to the handler, not answered */
	char			 hc_addr[HTTPS_ADDR_LEN];
};

TAILQ_HEAD(https_connq, https_conn);

struct https_server {
	struct event_base	*hs_base;
	struct evhttp		*hs_http;
	SSL_CTX			*hs_ctx;
	struct event		*hs_reaper;
	struct event		*hs_accept_pause;
	https_handler		 hs_handler;
	void			*hs_arg;
	struct https_config	 hs_config;	/* file names not kept */
	size_t			 hs_input_max;
	int			 hs_nconn;
	struct https_connq	 hs_fresh;	/* counted, not yet attached */
	struct https_connq	 hs_refused;	/* over the limit, to close */
	struct https_connq	 hs_conns;	/* attached */
	TAILQ_ENTRY(https_server) hs_link;
	int			 hs_linked;
};

/* Every live server, for the accept error callback. */
static TAILQ_HEAD(, https_server) https_servers =
    TAILQ_HEAD_INITIALIZER(https_servers);

static void	https_seterr(char *, size_t, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

static void
https_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* The last OpenSSL error as text, and the queue emptied. */
static const char *
https_sslerr(char *buf, size_t len)
{
	unsigned long e, last = 0;

	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last == 0)
		(void)snprintf(buf, len, "unknown OpenSSL error");
	else
		ERR_error_string_n(last, buf, len);
	return buf;
}

/*
 * Loads the private key from a file that must be closed to group and
 * other (secret_check_fd).  The bytes are read once from the checked
 * descriptor, so the file checked is the file loaded, and wiped after.
 */
static EVP_PKEY *
https_load_key(const char *path, char *err, size_t errlen)
{
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	ssize_t n;
	char ebuf[256];
	int fd;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY))
	    == -1) {
		https_seterr(err, errlen, "key file %s: %s", path,
		    strerror(errno));
		return NULL;
	}
	if (secret_check_fd(fd, path) != 0) {
		https_seterr(err, errlen, "key file %s", token_error_detail());
		goto out;
	}
	if ((buf = malloc(HTTPS_KEY_FILE_MAX)) == NULL) {
		https_seterr(err, errlen, "key file %s: out of memory", path);
		goto out;
	}
	for (;;) {
		if (len == HTTPS_KEY_FILE_MAX) {
			https_seterr(err, errlen, "key file %s: longer than %d "
			    "bytes", path, HTTPS_KEY_FILE_MAX - 1);
			goto out;
		}
		n = read(fd, buf + len, HTTPS_KEY_FILE_MAX - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			https_seterr(err, errlen, "key file %s: %s", path,
			    strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL ||
	    (pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL)
		https_seterr(err, errlen, "key file %s: no PEM private key "
		    "(%s)", path, https_sslerr(ebuf, sizeof(ebuf)));
 out:
	BIO_free(bio);
	if (buf != NULL) {
		OPENSSL_cleanse(buf, HTTPS_KEY_FILE_MAX);
		free(buf);
	}
	close(fd);
	return pkey;
}

/* A server context from the three files; NULL and err on failure. */
static SSL_CTX *
https_ctx_new(const char *cert_file, const char *key_file,
    const char *client_ca_file, char *err, size_t errlen)
{
	STACK_OF(X509_NAME) *names = NULL;
	X509_VERIFY_PARAM *param;
	EVP_PKEY *pkey = NULL;
	SSL_CTX *ctx = NULL;
	char ebuf[256];

	if (cert_file == NULL || key_file == NULL || client_ca_file == NULL) {
		https_seterr(err, errlen, "certificate, key and client CA "
		    "files are all required");
		return NULL;
	}
	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		https_seterr(err, errlen, "SSL_CTX_new: %s",
		    https_sslerr(ebuf, sizeof(ebuf)));
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, HTTPS_CIPHERS) != 1 ||
	    SSL_CTX_set_num_tickets(ctx, 0) != 1 ||
	    SSL_CTX_set_session_id_context(ctx,
	    (const unsigned char *)HTTPS_SESSION_CTX,
	    sizeof(HTTPS_SESSION_CTX) - 1) != 1) {
		https_seterr(err, errlen, "TLS settings: %s",
		    https_sslerr(ebuf, sizeof(ebuf)));
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		https_seterr(err, errlen, "certificate file %s: %s", cert_file,
		    https_sslerr(ebuf, sizeof(ebuf)));
		goto fail;
	}
	if ((pkey = https_load_key(key_file, err, errlen)) == NULL)
		goto fail;
	if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		https_seterr(err, errlen, "key file %s does not match "
		    "certificate %s: %s", key_file, cert_file,
		    https_sslerr(ebuf, sizeof(ebuf)));
		goto fail;
	}

	/* Only the client CA bundle is trusted, never the system store. */
	if (SSL_CTX_load_verify_locations(ctx, client_ca_file, NULL) != 1) {
		https_seterr(err, errlen, "client CA file %s: %s",
		    client_ca_file, https_sslerr(ebuf, sizeof(ebuf)));
		goto fail;
	}
	if ((names = SSL_load_client_CA_file(client_ca_file)) == NULL ||
	    sk_X509_NAME_num(names) == 0) {
		https_seterr(err, errlen, "client CA file %s: no certificate",
		    client_ca_file);
		sk_X509_NAME_pop_free(names, X509_NAME_free);
		goto fail;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	/* Optional client certificate, but one presented must verify. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_verify_depth(ctx, HTTPS_VERIFY_DEPTH);
	param = SSL_CTX_get0_param(ctx);
	if (X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT) != 1) {
		https_seterr(err, errlen, "verify flags: %s",
		    https_sslerr(ebuf, sizeof(ebuf)));
		goto fail;
	}
	EVP_PKEY_free(pkey);
	return ctx;
 fail:
	EVP_PKEY_free(pkey);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

static void
https_wake_reaper(struct https_server *srv)
{
	event_active(srv->hs_reaper, EV_TIMEOUT, 1);
}

/* evhttp's connection object for a bufferevent, or NULL when evhttp has
 * freed it (bufferevent_free clears the callbacks; our reference keeps
 * the memory). */
static struct evhttp_connection *
https_bev_evcon(struct bufferevent *bev)
{
	void *arg = NULL;

	bufferevent_getcb(bev, NULL, NULL, NULL, &arg);
	return arg;
}

static void	https_conn_closed(struct evhttp_connection *, void *);

/* Takes a fresh connection off hs_fresh, sets the close callback. */
static void
https_conn_attach(struct https_conn *conn, struct evhttp_connection *evcon)
{
	struct https_server *srv = conn->hc_server;
	char *host = NULL;
	ev_uint16_t port = 0;
	evutil_socket_t fd;
	int one = 1;

	TAILQ_REMOVE(&srv->hs_fresh, conn, hc_entry);
	/*
	 * evhttp writes an answer's headers and body as two TLS records;
	 * with Nagle the second waits for the client's delayed ACK, 40 ms
	 * a request.  Answers are whole when written, so send at once.
	 */
	if ((fd = bufferevent_getfd(conn->hc_bev)) >= 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
	conn->hc_evcon = evcon;
	evhttp_connection_set_closecb(evcon, https_conn_closed, conn);
	evhttp_connection_get_peer(evcon, &host, &port);
	if (host == NULL)
		(void)snprintf(conn->hc_addr, sizeof(conn->hc_addr), "?");
	else if (strchr(host, ':') != NULL)
		(void)snprintf(conn->hc_addr, sizeof(conn->hc_addr), "[%s]:%u",
		    host, (unsigned)port);
	else
		(void)snprintf(conn->hc_addr, sizeof(conn->hc_addr), "%s:%u",
		    host, (unsigned)port);
	TAILQ_INSERT_TAIL(&srv->hs_conns, conn, hc_entry);
	bufferevent_decref(conn->hc_bev);
}

/* A connection evhttp dropped before we attached: only uncount it. */
static void
https_conn_forget(struct https_conn *conn)
{
	struct https_server *srv = conn->hc_server;

	TAILQ_REMOVE(&srv->hs_fresh, conn, hc_entry);
	SSL_set_app_data(conn->hc_ssl, NULL);
	bufferevent_decref(conn->hc_bev);
	srv->hs_nconn--;
	free(conn);
}

static void
https_reap(evutil_socket_t fd, short what, void *arg)
{
	struct https_server *srv = arg;
	struct evhttp_connection *evcon;
	struct https_conn *conn;

	(void)fd;
	(void)what;
	while ((conn = TAILQ_FIRST(&srv->hs_fresh)) != NULL) {
		if ((evcon = https_bev_evcon(conn->hc_bev)) != NULL)
			https_conn_attach(conn, evcon);
		else
			https_conn_forget(conn);
	}
	while ((conn = TAILQ_FIRST(&srv->hs_refused)) != NULL) {
		TAILQ_REMOVE(&srv->hs_refused, conn, hc_entry);
		/* No close-on-free: evhttp closes the socket. */
		if ((evcon = https_bev_evcon(conn->hc_bev)) != NULL)
			evhttp_connection_free(evcon);
		bufferevent_decref(conn->hc_bev);
		free(conn);
	}
}

/*
 * Over the limit: a plain socket bufferevent without close-on-free.  The
 * reaper, already queued in this loop pass, frees evhttp's connection
 * before the loop polls the socket again, so nothing is read from it and
 * no TLS is spoken; evhttp closes the socket then.  (A bufferevent that
 * refuses the descriptor makes evhttp close it twice.)
 */
static struct bufferevent *
https_refuse(struct https_server *srv)
{
	struct https_conn *conn;

	if ((conn = calloc(1, sizeof(*conn))) == NULL)
		return NULL;
	if ((conn->hc_bev = bufferevent_socket_new(srv->hs_base, -1, 0))
	    == NULL) {
		free(conn);
		return NULL;
	}
	conn->hc_server = srv;
	bufferevent_incref(conn->hc_bev);
	TAILQ_INSERT_TAIL(&srv->hs_refused, conn, hc_entry);
	https_wake_reaper(srv);
	log_debug("https: connection limit %d reached, closing a new "
	    "connection", srv->hs_config.max_connections);
	return conn->hc_bev;
}

static struct bufferevent *
https_bevcb(struct event_base *base, void *arg)
{
	struct https_server *srv = arg;
	struct https_conn *conn = NULL;
	struct bufferevent *bev = NULL;
	SSL *ssl = NULL;

	if (srv->hs_nconn >= srv->hs_config.max_connections)
		return https_refuse(srv);
	if ((conn = calloc(1, sizeof(*conn))) == NULL ||
	    (ssl = SSL_new(srv->hs_ctx)) == NULL)
		goto fail;
	/* The SSL holds a reference to the context: a reload does not
	 * touch connections already made. */
	bev = bufferevent_openssl_socket_new(base, -1, ssl,
	    BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL)
		goto fail;
	ssl = NULL;	/* owned by bev */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	bufferevent_setwatermark(bev, EV_READ, 0, srv->hs_input_max);
	conn->hc_server = srv;
	conn->hc_bev = bev;
	conn->hc_ssl = bufferevent_openssl_get_ssl(bev);
	SSL_set_app_data(conn->hc_ssl, conn);
	bufferevent_incref(bev);
	TAILQ_INSERT_TAIL(&srv->hs_fresh, conn, hc_entry);
	srv->hs_nconn++;
	https_wake_reaper(srv);
	return bev;
 fail:
	log_warnx("https: cannot set up a connection: out of memory");
	SSL_free(ssl);
	free(conn);
	/* Never NULL: evhttp would then speak plain HTTP on the socket. */
	return https_refuse(srv);
}

static void
https_request_free(struct https_request *req)
{
	if (req == NULL)
		return;
	free(req->hr_path);
	evhttp_clear_headers(&req->hr_query);
	free(req->hr_body);
	X509_free(req->hr_peer);
	sk_X509_pop_free(req->hr_chain, X509_free);
	free(req);
}

static void
https_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct https_conn *conn = arg;
	struct https_server *srv = conn->hc_server;
	struct https_request *req;
	struct evhttp_request *evreq;

	(void)evcon;
	if ((req = conn->hc_pending) != NULL) {
		conn->hc_pending = NULL;
		evreq = req->hr_evreq;
		if (req->hr_abort_cb != NULL)
			req->hr_abort_cb(req->hr_abort_arg);
		/*
		 * On a timeout or end of file evhttp detaches the unanswered
		 * request from the connection and leaves it to us; when the
		 * whole server goes (evhttp_free) it is still attached and
		 * evhttp frees it after this callback.
		 */
		if (evhttp_request_get_connection(evreq) == NULL)
			evhttp_request_free(evreq);
		https_request_free(req);
	}
	SSL_set_app_data(conn->hc_ssl, NULL);
	TAILQ_REMOVE(&srv->hs_conns, conn, hc_entry);
	srv->hs_nconn--;
	free(conn);
}

/* Our connection for a request, attaching it if the reaper has not run. */
static struct https_conn *
https_request_conn(struct https_server *srv, struct evhttp_request *evreq)
{
	struct evhttp_connection *evcon;
	struct bufferevent *bev;
	struct https_conn *conn;
	SSL *ssl;

	if ((evcon = evhttp_request_get_connection(evreq)) == NULL ||
	    (bev = evhttp_connection_get_bufferevent(evcon)) == NULL ||
	    (ssl = bufferevent_openssl_get_ssl(bev)) == NULL ||
	    (conn = SSL_get_app_data(ssl)) == NULL ||
	    conn->hc_server != srv)
		return NULL;
	if (conn->hc_evcon == NULL)
		https_conn_attach(conn, evcon);
	return conn->hc_evcon == evcon ? conn : NULL;
}

static int
https_hexdigit(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	    (c >= 'A' && c <= 'F');
}

/* The decoded path, or NULL for a path that is absent, malformed
 * (a '%' not followed by two hex digits) or decodes to a NUL. */
static char *
https_decode_path(const struct evhttp_uri *uri)
{
	const char *raw, *p;
	char *dec;
	size_t len = 0;

	if (uri == NULL || (raw = evhttp_uri_get_path(uri)) == NULL ||
	    raw[0] != '/')
		return NULL;
	for (p = raw; *p != '\0'; p++)
		if (*p == '%' && (!https_hexdigit((unsigned char)p[1]) ||
		    !https_hexdigit((unsigned char)p[2])))
			return NULL;
	if ((dec = evhttp_uridecode(raw, 0, &len)) == NULL)
		return NULL;
	if (strlen(dec) != len) {
		free(dec);
		return NULL;
	}
	return dec;
}

/* The verified peer certificate and the chain above it. */
static int
https_request_peer(struct https_request *req, SSL *ssl)
{
	STACK_OF(X509) *verified;
	X509 *peer, *x;
	int i;

	if (ssl == NULL || SSL_get_verify_result(ssl) != X509_V_OK ||
	    (peer = SSL_get0_peer_certificate(ssl)) == NULL)
		return 0;
	if (X509_up_ref(peer) != 1)
		return -1;
	req->hr_peer = peer;
	if ((verified = SSL_get0_verified_chain(ssl)) == NULL ||
	    sk_X509_num(verified) < 2)
		return 0;
	if ((req->hr_chain = sk_X509_new_null()) == NULL)
		return -1;
	for (i = 1; i < sk_X509_num(verified); i++) {
		x = sk_X509_value(verified, i);
		if (X509_up_ref(x) != 1)
			return -1;
		if (sk_X509_push(req->hr_chain, x) <= 0) {
			X509_free(x);
			return -1;
		}
	}
	return 0;
}

/* An error answer in the API's shape: {"error": code, "message": text}. */
static void
https_reply_error(struct https_request *req, int status, const char *code,
    const char *message, const char *const *headers)
{
	char body[256];
	int n;

	n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}",
	    code, message);
	if (n < 0 || (size_t)n >= sizeof(body))
		n = 0;
	https_reply(req, status, "application/json", body, (size_t)n, headers);
}

static void
https_gencb(struct evhttp_request *evreq, void *arg)
{
	static const char *const allow[] = { "Allow: GET, POST", NULL };
	struct https_server *srv = arg;
	struct https_request *req = NULL;
	struct https_conn *conn;
	struct evbuffer *in;
	const struct evhttp_uri *uri;
	const char *query;
	bufferevent_data_cb wcb;
	bufferevent_event_cb ecb;
	struct bufferevent *bev;
	void *cbarg;

	if ((conn = https_request_conn(srv, evreq)) == NULL) {
		/* Not one of our TLS connections (only after an allocation
		 * failure): answer nothing useful and close. */
		evhttp_add_header(evhttp_request_get_output_headers(evreq),
		    "Connection", "close");
		evhttp_send_error(evreq, HTTP_INTERNAL, NULL);
		return;
	}
	if ((req = calloc(1, sizeof(*req))) == NULL)
		goto nomem;
	TAILQ_INIT(&req->hr_query);
	req->hr_server = srv;
	req->hr_conn = conn;
	req->hr_evreq = evreq;
	conn->hc_pending = req;

	switch (evhttp_request_get_command(evreq)) {
	case EVHTTP_REQ_GET:
		req->hr_method = "GET";
		break;
	case EVHTTP_REQ_POST:
		req->hr_method = "POST";
		break;
	default:
		req->hr_method = "?";
		https_reply_error(req, 405, "method_not_allowed",
		    "only GET and POST are served", allow);
		return;
	}
	uri = evhttp_request_get_evhttp_uri(evreq);
	if ((req->hr_path = https_decode_path(uri)) == NULL) {
		https_reply_error(req, 400, "bad_path",
		    "the path is malformed or decodes to a NUL byte", NULL);
		return;
	}
	query = evhttp_uri_get_query(uri);
	if (query != NULL && evhttp_parse_query_str(query, &req->hr_query)
	    != 0) {
		https_reply_error(req, 400, "bad_query",
		    "the query string does not parse", NULL);
		return;
	}
	in = evhttp_request_get_input_buffer(evreq);
	req->hr_body_len = evbuffer_get_length(in);
	if ((req->hr_body = malloc(req->hr_body_len + 1)) == NULL)
		goto nomem;
	if (req->hr_body_len > 0 && evbuffer_copyout(in, req->hr_body,
	    req->hr_body_len) != (ev_ssize_t)req->hr_body_len)
		goto nomem;
	req->hr_body[req->hr_body_len] = '\0';
	if (https_request_peer(req, conn->hc_ssl) != 0)
		goto nomem;

	srv->hs_handler(req, srv->hs_arg);
	if (conn->hc_pending != req)
		return;		/* answered */
	/*
	 * Answered later: see the top of the file.  Read callback off,
	 * reading on, as evhttp_write_buffer() does.
	 */
	bev = evhttp_connection_get_bufferevent(conn->hc_evcon);
	bufferevent_getcb(bev, NULL, &wcb, &ecb, &cbarg);
	bufferevent_setcb(bev, NULL, wcb, ecb, cbarg);
	bufferevent_enable(bev, EV_READ);
	return;
 nomem:
	log_warnx("https: out of memory for a request from %s",
	    conn->hc_addr);
	if (req != NULL) {
		https_reply_error(req, 500, "internal", "out of memory", NULL);
	} else
		evhttp_send_error(evreq, HTTP_INTERNAL, NULL);
}

static void
https_accept_enable(struct evhttp_bound_socket *handle, void *arg)
{
	(void)arg;
	evconnlistener_enable(evhttp_bound_socket_get_listener(handle));
}

static void
https_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct https_server *srv = arg;

	(void)fd;
	(void)what;
	evhttp_foreach_bound_socket(srv->hs_http, https_accept_enable, NULL);
}

/*
 * accept() failed (out of descriptors, most likely): pause the listener
 * instead of spinning on a socket that stays readable.  evhttp passes its
 * own object as the argument, hence the list of servers.
 */
static void
https_accept_error(struct evconnlistener *lev, void *arg)
{
	struct timeval tv = { HTTPS_ACCEPT_PAUSE_S, 0 };
	struct https_server *srv;
	int e = EVUTIL_SOCKET_ERROR();

	evconnlistener_disable(lev);
	TAILQ_FOREACH(srv, &https_servers, hs_link)
		if (srv->hs_http == arg)
			break;
	if (srv == NULL) {
		log_warnx("https: accept: %s",
		    evutil_socket_error_to_string(e));
		evconnlistener_enable(lev);
		return;
	}
	log_warnx("https: accept: %s; pausing %d s",
	    evutil_socket_error_to_string(e), HTTPS_ACCEPT_PAUSE_S);
	if (!evtimer_pending(srv->hs_accept_pause, NULL) &&
	    evtimer_add(srv->hs_accept_pause, &tv) != 0)
		evconnlistener_enable(lev);
}

struct https_server *
https_new(struct event_base *base, const struct https_config *config,
    https_handler handler, void *arg, char *err, size_t errlen)
{
	struct https_server *srv = NULL;
	size_t input_max;

	https_seterr(err, errlen, "no error");
	if (base == NULL || config == NULL || handler == NULL) {
		https_seterr(err, errlen, "https_new: missing argument");
		return NULL;
	}
	if (config->max_body == 0 || config->max_body > SSIZE_MAX / 4 ||
	    config->max_headers == 0 || config->max_headers > SSIZE_MAX / 4 ||
	    config->max_connections < 1 || config->timeout_s < 1) {
		https_seterr(err, errlen, "https: max_body, max_headers, "
		    "max_connections and timeout must be positive");
		return NULL;
	}
	input_max = config->max_body + config->max_headers + HTTPS_INPUT_SLACK;
	if ((srv = calloc(1, sizeof(*srv))) == NULL) {
		https_seterr(err, errlen, "https: out of memory");
		return NULL;
	}
	srv->hs_base = base;
	srv->hs_handler = handler;
	srv->hs_arg = arg;
	srv->hs_config = *config;
	srv->hs_config.cert_file = NULL;
	srv->hs_config.key_file = NULL;
	srv->hs_config.client_ca_file = NULL;
	srv->hs_input_max = input_max;
	TAILQ_INIT(&srv->hs_fresh);
	TAILQ_INIT(&srv->hs_refused);
	TAILQ_INIT(&srv->hs_conns);
	if ((srv->hs_ctx = https_ctx_new(config->cert_file, config->key_file,
	    config->client_ca_file, err, errlen)) == NULL)
		goto fail;
	if ((srv->hs_reaper = event_new(base, -1, 0, https_reap, srv)) == NULL ||
	    (srv->hs_accept_pause = evtimer_new(base, https_accept_resume,
	    srv)) == NULL ||
	    (srv->hs_http = evhttp_new(base)) == NULL) {
		https_seterr(err, errlen, "https: out of memory");
		goto fail;
	}
	evhttp_set_bevcb(srv->hs_http, https_bevcb, srv);
	evhttp_set_gencb(srv->hs_http, https_gencb, srv);
	evhttp_set_max_body_size(srv->hs_http, (ev_ssize_t)config->max_body);
	evhttp_set_max_headers_size(srv->hs_http,
	    (ev_ssize_t)config->max_headers);
	evhttp_set_timeout(srv->hs_http, config->timeout_s);
	/* Every method evhttp knows reaches us, so that the ones we do not
	 * serve get 405 rather than evhttp's 501. */
	evhttp_set_allowed_methods(srv->hs_http, EVHTTP_REQ_GET |
	    EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
	    EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	    EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_default_content_type(srv->hs_http, "application/json");
	TAILQ_INSERT_TAIL(&https_servers, srv, hs_link);
	srv->hs_linked = 1;
	return srv;
 fail:
	https_free(srv);
	return NULL;
}

int
https_listen(struct https_server *srv, const char *addr, int port,
    int *bound, char *err, size_t errlen)
{
	struct evhttp_bound_socket *handle;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	evutil_socket_t fd;

	if (bound != NULL)
		*bound = 0;
	if (srv == NULL || addr == NULL || port < 0 || port > 65535) {
		https_seterr(err, errlen, "https_listen: bad address or port");
		return -1;
	}
	if ((handle = evhttp_bind_socket_with_handle(srv->hs_http, addr,
	    (ev_uint16_t)port)) == NULL) {
		https_seterr(err, errlen, "cannot listen on %s port %d: %s",
		    addr, port, strerror(errno));
		return -1;
	}
	evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(handle),
	    https_accept_error);
	fd = evhttp_bound_socket_get_fd(handle);
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == -1) {
		https_seterr(err, errlen, "getsockname: %s", strerror(errno));
		evhttp_del_accept_socket(srv->hs_http, handle);
		return -1;
	}
	if (bound != NULL) {
		if (ss.ss_family == AF_INET)
			*bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		else if (ss.ss_family == AF_INET6)
			*bound = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	return 0;
}

int
https_reload(struct https_server *srv, const char *cert_file,
    const char *key_file, const char *client_ca_file, char *err,
    size_t errlen)
{
	SSL_CTX *ctx;

	if (srv == NULL) {
		https_seterr(err, errlen, "https_reload: no server");
		return -1;
	}
	if ((ctx = https_ctx_new(cert_file, key_file, client_ca_file, err,
	    errlen)) == NULL)
		return -1;
	SSL_CTX_free(srv->hs_ctx);	/* live connections hold their own */
	srv->hs_ctx = ctx;
	return 0;
}

void
https_free(struct https_server *srv)
{
	if (srv == NULL)
		return;
	if (srv->hs_linked)
		TAILQ_REMOVE(&https_servers, srv, hs_link);
	if (srv->hs_reaper != NULL) {
		/* Attach or drop what the reaper has not seen yet, so that
		 * every connection has its close callback. */
		https_reap(-1, 0, srv);
		event_free(srv->hs_reaper);
	}
	/* Closes every connection: abort callbacks of pending requests run. */
	if (srv->hs_http != NULL)
		evhttp_free(srv->hs_http);
	if (srv->hs_accept_pause != NULL)
		event_free(srv->hs_accept_pause);
	SSL_CTX_free(srv->hs_ctx);
	free(srv);
}

int
https_connections(const struct https_server *srv)
{
	return srv == NULL ? 0 : srv->hs_nconn;
}

const char *
https_method(const struct https_request *req)
{
	return req->hr_method;
}

const char *
https_path(const struct https_request *req)
{
	return req->hr_path;
}

const char *
https_query(const struct https_request *req, const char *name)
{
	return evhttp_find_header(&req->hr_query, name);
}

const char *
https_header(const struct https_request *req, const char *name)
{
	return evhttp_find_header(
	    evhttp_request_get_input_headers(req->hr_evreq), name);
}

const uint8_t *
https_body(const struct https_request *req, size_t *len)
{
	if (len != NULL)
		*len = req->hr_body_len;
	return req->hr_body;
}

X509 *
https_peer_cert(const struct https_request *req)
{
	return req->hr_peer;
}

STACK_OF(X509) *
https_peer_chain(const struct https_request *req)
{
	return req->hr_chain;
}

const char *
https_peer_addr(const struct https_request *req)
{
	return req->hr_conn->hc_addr;
}

void
https_on_abort(struct https_request *req, void (*cb)(void *), void *arg)
{
	req->hr_abort_cb = cb;
	req->hr_abort_arg = arg;
}

/* Adds one "Name: value" header; a malformed one is dropped and logged. */
static void
https_add_header_line(struct evkeyvalq *out, const char *line)
{
	const char *colon, *value;
	char name[128];
	size_t n;

	if ((colon = strchr(line, ':')) == NULL ||
	    (n = (size_t)(colon - line)) == 0 || n >= sizeof(name) ||
	    strpbrk(line, "\r\n") != NULL) {
		log_warnx("https: dropping malformed reply header");
		return;
	}
	memcpy(name, line, n);
	name[n] = '\0';
	value = colon + 1;
	value += strspn(value, " \t");
	if (evhttp_add_header(out, name, value) != 0)
		log_warnx("https: dropping reply header %s", name);
}

void
https_reply(struct https_request *req, int status, const char *content_type,
    const void *body, size_t len, const char *const *headers)
{
	struct evhttp_request *evreq = req->hr_evreq;
	struct evkeyvalq *out;
	size_t i;

	out = evhttp_request_get_output_headers(evreq);
	if (content_type != NULL)
		evhttp_add_header(out, "Content-Type", content_type);
	evhttp_add_header(out, "Cache-Control", "no-store");
	evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
	for (i = 0; headers != NULL && headers[i] != NULL; i++)
		https_add_header_line(out, headers[i]);
	if (body != NULL && len > 0 && evbuffer_add(
	    evhttp_request_get_output_buffer(evreq), body, len) != 0) {
		log_warnx("https: out of memory for a reply to %s",
		    req->hr_conn->hc_addr);
		evbuffer_drain(evhttp_request_get_output_buffer(evreq),
		    evbuffer_get_length(evhttp_request_get_output_buffer(evreq)));
		status = 500;
	}
	if (status < 100 || status > 599)
		status = 500;
	/* evhttp adds Content-Length and, for HTTP/1.1, keeps the
	 * connection open for the next request. */
	evhttp_send_reply(evreq, status, NULL, NULL);
	req->hr_conn->hc_pending = NULL;
	https_request_free(req);
}
