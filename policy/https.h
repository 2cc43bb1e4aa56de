/*
 * The policy daemon's HTTPS listener: libevent's evhttp over OpenSSL
 * bufferevents, in the daemon's one event loop.
 *
 * TLS 1.2 or later only.  A client certificate is requested but not
 * required; when one is presented it must verify against the client CA
 * bundle (or the handshake fails), and the request then carries it.
 * Limits: body and header sizes, concurrent connections (above the limit
 * a new connection is closed at once), an idle/slow-client timeout per
 * connection, keep-alive.
 *
 * Handlers may answer later (after a signer round trip): keep the request
 * and call https_reply() from any later callback of the same loop.  When
 * the client goes away first, the abort callback set with
 * https_on_abort() runs and the request must not be used after it.
 */
#ifndef HSMCA_HTTPS_H
#define HSMCA_HTTPS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

struct event_base;
struct https_server;
struct https_request;

struct https_config {
	const char	*cert_file;	/* PEM: our certificate, then its chain */
	const char	*key_file;	/* PEM private key, mode checked: no group/other access */
	const char	*client_ca_file;	/* PEM bundle client certificates must chain to */
	size_t		 max_body;	/* bytes; larger gets 413 */
	size_t		 max_headers;	/* bytes of all headers; larger gets 431/400 */
	int		 max_connections;	/* concurrent; over it, closed at once */
	int		 timeout_s;	/* idle or slow client, per connection */
};

typedef void (*https_handler)(struct https_request *, void *arg);

/* Creates the server; nothing listens yet.  NULL and err on failure. */
struct https_server *https_new(struct event_base *, const struct https_config *,
	    https_handler, void *arg, char *err, size_t errlen);
/* Listens on addr ("127.0.0.1", "::1", "0.0.0.0") and port (0 = any; the
 * bound port is returned in *bound). */
int	https_listen(struct https_server *, const char *addr, int port,
	    int *bound, char *err, size_t errlen);
/* Loads a new certificate and key (and client CA bundle) for connections
 * accepted from now on; on error the old ones stay and err says why. */
int	https_reload(struct https_server *, const char *cert_file,
	    const char *key_file, const char *client_ca_file, char *err,
	    size_t errlen);
/* Stops listening and closes every connection. */
void	https_free(struct https_server *);
/* Current number of open connections, for metrics. */
int	https_connections(const struct https_server *);

/* Request accessors; valid until the reply or the abort. */
const char	*https_method(const struct https_request *);	/* "GET", "POST", ... */
const char	*https_path(const struct https_request *);	/* decoded path, no query */
/* Value of a query parameter, or NULL. */
const char	*https_query(const struct https_request *, const char *name);
const char	*https_header(const struct https_request *, const char *name);
/* The body, NUL-terminated for convenience (len excludes the NUL). */
const uint8_t	*https_body(const struct https_request *, size_t *len);
/* The verified client certificate, or NULL; owned by the request. */
X509		*https_peer_cert(const struct https_request *);
/* The verified chain above the peer certificate, or NULL; owned by the request. */
STACK_OF(X509)	*https_peer_chain(const struct https_request *);
/* "ip:port" of the peer, for logs. */
const char	*https_peer_addr(const struct https_request *);

void	https_on_abort(struct https_request *, void (*cb)(void *), void *arg);
/* Sends the answer and ends the request; extra headers as "Name: value"
 * pairs, NULL-terminated, may be NULL. */
void	https_reply(struct https_request *, int status,
	    const char *content_type, const void *body, size_t len,
	    const char *const *headers);

#endif
