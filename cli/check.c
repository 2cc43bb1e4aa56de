/*
 * hsmca check-endpoint: a monitoring plugin for the certificate chain any
 * TLS endpoint serves.  Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
 *
 * One deadline per endpoint bounds every step (name resolution, connect,
 * handshake), so a port that accepts and never answers costs at most
 * --timeout seconds.  The handshake verifies nothing: the served chain is
 * verified afterwards with X509_verify_cert, so that an untrusted chain is
 * still reported certificate by certificate.  CRITICAL means a certificate
 * problem only; anything that kept us from seeing the certificates
 * (refused, unresolvable, timed out, no TLS) is UNKNOWN.
 *
 * Everything read from the peer is untrusted: names are escaped to
 * printable ASCII and cut to CHECK_MAX_FIELD, and at most CHECK_MAX_CERTS
 * certificates and CHECK_MAX_SANS names of each are reported.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli.h"
#include "rules.h"

enum check_status {
	CHECK_OK = 0,
	CHECK_WARNING = 1,
	CHECK_CRITICAL = 2,
	CHECK_UNKNOWN = 3
};

#define CHECK_MAX_ENDPOINTS	64
#define CHECK_MAX_HOST		253	/* a DNS name's text */
#define CHECK_MAX_ADDRS		16	/* addresses tried per endpoint */
#define CHECK_MAX_ADDR		(INET6_ADDRSTRLEN + 32)	/* numeric, with a zone */
#define CHECK_MAX_CERTS		16	/* reported per served chain */
#define CHECK_MAX_SANS		64	/* names reported per certificate */
#define CHECK_MAX_FIELD		1024	/* bytes of a subject, issuer or name */
#define CHECK_MAX_ROUNDS	10000	/* handshake polls; the deadline ends it first */
#define CHECK_DEFAULT_TIMEOUT	10
#define CHECK_MAX_TIMEOUT	600
#define CHECK_DEFAULT_WARNING	(21L * 86400)
#define CHECK_DEFAULT_CRITICAL	(7L * 86400)

struct check_options {
	const char	*co_ca_bundle;
	const char	*co_servername;
	long		 co_warning;	/* seconds of leaf lifetime left */
	long		 co_critical;
	int		 co_timeout;	/* seconds, per endpoint */
	int		 co_json;
	X509_STORE	*co_store;
	SSL_CTX		*co_ctx;
};

struct check_endpoint {
	const char		*ce_arg;	/* HOST:PORT as given */
	char			 ce_host[CHECK_MAX_HOST + 1];
	char			 ce_port[6];
	int			 ce_is_name;	/* not an IP literal */
	const char		*ce_sni;	/* NULL: none sent */
	char			 ce_address[CHECK_MAX_ADDR];	/* "" until connected */
	enum check_status	 ce_status;
	char			 ce_error[512];	/* why not OK */
	char			 ce_verify[512];	/* verification error, "" if none */
	int			 ce_verified;
	STACK_OF(X509)		*ce_chain;	/* as served, leaf first */
	json_t			*ce_json;	/* the report */
};

enum check_opt {
	O_CA_BUNDLE = 256, O_SERVERNAME, O_WARNING, O_CRITICAL, O_TIMEOUT,
	O_JSON, O_HELP
};

static const char *const check_status_names[] = {
	"OK", "WARNING", "CRITICAL", "UNKNOWN"
};

static void
check_usage(FILE *f)
{
	fprintf(f, "usage: hsmca check-endpoint [--ca-bundle FILE] "
	    "[--servername NAME]\n"
	    "         [--warning DURATION] [--critical DURATION] "
	    "[--timeout SECONDS] [--json]\n"
	    "         HOST:PORT ...\n"
	    "  --ca-bundle FILE    the trusted roots (default: the system's)\n"
	    "  --servername NAME   SNI and name verified (default: HOST when a "
	    "name)\n"
	    "  --warning DURATION  WARNING below this leaf lifetime left "
	    "(default 21d)\n"
	    "  --critical DURATION CRITICAL below this (default 7d); 90s, 15m, "
	    "24h, 7d\n"
	    "  --timeout SECONDS   per endpoint: resolve, connect and "
	    "handshake (default 10)\n"
	    "  --json              one JSON document instead of status lines\n"
	    "HOST is an IPv4 address, [IPv6] or a DNS name.  Exit 0 OK, "
	    "1 WARNING,\n"
	    "2 CRITICAL (a certificate problem), 3 UNKNOWN (unreachable, "
	    "usage).\n");
}

static void
check_usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "hsmca check-endpoint: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	check_usage(stderr);
}

/* Error text into a fixed buffer; a long one is cut, never overflows. */
static void __attribute__((format(printf, 3, 4)))
check_err(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/*
 * The worst of two states, as monitoring-plugins' max_state_alt: CRITICAL,
 * then WARNING, then UNKNOWN, then OK.  An unreachable endpoint must not
 * hide an expiring certificate elsewhere, nor the other way round; both
 * alert.
 */
static enum check_status
check_worse(enum check_status a, enum check_status b)
{
	static const int rank[] = { 0, 2, 3, 1 };

	return rank[b] > rank[a] ? b : a;
}

/* --- time --------------------------------------------------------------- */

static void
check_deadline(struct timespec *deadline, int seconds)
{
	clock_gettime(CLOCK_MONOTONIC, deadline);
	deadline->tv_sec += seconds;
}

/* Milliseconds left until the deadline, 0 when it has passed. */
static int
check_left_ms(const struct timespec *deadline)
{
	struct timespec now;
	long long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long long)(deadline->tv_sec - now.tv_sec) * 1000 +
	    (deadline->tv_nsec - now.tv_nsec) / 1000000;
	if (ms <= 0)
		return 0;
	return ms > CHECK_MAX_TIMEOUT * 1000 ? CHECK_MAX_TIMEOUT * 1000 :
	    (int)ms;
}

/* "2026-12-01T00:00:00Z", or "" when the time does not parse. */
static void
check_time(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;

	buf[0] = '\0';
	memset(&tm, 0, sizeof(tm));
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		buf[0] = '\0';
}

/* "29.9": days with one decimal, cut toward zero. */
static void
check_days(long long seconds, char *buf, size_t len)
{
	long long tenths = seconds / 8640;	/* C division: toward zero */

	if (tenths < 0)
		tenths = -tenths;
	snprintf(buf, len, "%s%lld.%lld", seconds < 0 ? "-" : "",
	    tenths / 10, tenths % 10);
}

/* --- text from the peer ------------------------------------------------- */

/* Printable ASCII kept, '\\' and the rest as \xNN; cut with "...". */
static void
check_escape(const unsigned char *p, size_t n, char *out, size_t outlen)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		if (o + 8 >= outlen) {
			memcpy(out + o, "...", 4);
			return;
		}
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
			out[o++] = (char)p[i];
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x",
			    p[i]);
	}
	out[o] = '\0';
}

/* A distinguished name as RFC 2253 text ("CN=a,O=b"), in ASCII. */
static void
check_name(const X509_NAME *name, char *out, size_t outlen)
{
	BIO *b;
	char *p;
	long n;
	size_t i;

	out[0] = '\0';
	if ((b = BIO_new(BIO_s_mem())) == NULL)
		return;
	/*
	 * ESC_MSB and ESC_CTRL already make it printable ASCII with RFC 2253
	 * escapes ("\,", "\C3"); anything else would be a bug, shown as '?'.
	 */
	if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0 &&
	    (n = BIO_get_mem_data(b, &p)) >= 0) {
		for (i = 0; i < (size_t)n && i + 4 < outlen; i++)
			out[i] = p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '?';
		if (i < (size_t)n)
			memcpy(out + i, "...", 4);
		else
			out[i] = '\0';
	}
	BIO_free(b);
}

/* --- the arguments ------------------------------------------------------ */

static int
check_host_chars(const char *s)
{
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' ||
		    *s == '_'))
			return 0;
	return 1;
}

/* HOST:PORT, [IPv6]:PORT.  Returns 0, or -1 with the reason in err. */
static int
check_parse_endpoint(const char *arg, struct check_endpoint *ce, char *err,
    size_t errlen)
{
	struct in6_addr a6;
	struct in_addr a4;
	const char *host, *port, *end;
	size_t hlen, i;
	int bracket = 0;

	ce->ce_arg = arg;
	if (arg[0] == '[') {
		if ((end = strchr(arg, ']')) == NULL || end[1] != ':') {
			check_err(err, errlen, "%s: an IPv6 endpoint is "
			    "[ADDRESS]:PORT", arg);
			return -1;
		}
		host = arg + 1;
		hlen = (size_t)(end - host);
		port = end + 2;
		bracket = 1;
	} else {
		if ((end = strrchr(arg, ':')) == NULL) {
			check_err(err, errlen, "%s: HOST:PORT is needed", arg);
			return -1;
		}
		host = arg;
		hlen = (size_t)(end - arg);
		port = end + 1;
		if (memchr(host, ':', hlen) != NULL) {
			check_err(err, errlen, "%s: an IPv6 address needs "
			    "brackets: [ADDRESS]:PORT", arg);
			return -1;
		}
	}
	if (hlen == 0 || hlen > CHECK_MAX_HOST) {
		check_err(err, errlen, "%s: the host is empty or longer than "
		    "%d bytes", arg, CHECK_MAX_HOST);
		return -1;
	}
	memcpy(ce->ce_host, host, hlen);
	ce->ce_host[hlen] = '\0';
	for (i = 0; port[i] >= '0' && port[i] <= '9'; i++)
		;
	if (i == 0 || i > 5 || port[i] != '\0' || atoi(port) < 1 ||
	    atoi(port) > 65535) {
		check_err(err, errlen, "%s: the port must be a number from 1 to "
		    "65535", arg);
		return -1;
	}
	memcpy(ce->ce_port, port, i + 1);
	if (bracket) {
		if (inet_pton(AF_INET6, ce->ce_host, &a6) != 1) {
			check_err(err, errlen, "%s: not an IPv6 address in "
			    "brackets", arg);
			return -1;
		}
	} else if (inet_pton(AF_INET, ce->ce_host, &a4) != 1) {
		if (!check_host_chars(ce->ce_host)) {
			check_err(err, errlen, "%s: not a host name (letters, "
			    "digits, '-', '.', '_')", arg);
			return -1;
		}
		ce->ce_is_name = 1;
	}
	return 0;
}

/* --- network ------------------------------------------------------------ */

/*
 * A name lookup in a thread of its own, so that the caller can stop
 * waiting at the deadline: getaddrinfo itself has no timeout but the
 * resolver's, which can exceed --timeout many times over.  The block is
 * shared, and whichever of the two lets go last frees it.  (glibc's
 * getaddrinfo_a would do, but its idle helper threads keep resolver
 * buffers that LeakSanitizer reports at exit.)
 */
struct check_lookup {
	pthread_mutex_t	 cl_lock;
	pthread_cond_t	 cl_cond;
	int		 cl_refs;	/* the caller's and the thread's */
	int		 cl_done;
	int		 cl_rc;		/* getaddrinfo's */
	int		 cl_errno;
	struct addrinfo	 cl_hints;
	struct addrinfo	*cl_res;
	char		 cl_host[CHECK_MAX_HOST + 1];
	char		 cl_port[6];
};

static void
check_lookup_unref(struct check_lookup *lk)
{
	int last;

	pthread_mutex_lock(&lk->cl_lock);
	last = --lk->cl_refs == 0;
	pthread_mutex_unlock(&lk->cl_lock);
	if (!last)
		return;
	if (lk->cl_res != NULL)
		freeaddrinfo(lk->cl_res);
	pthread_cond_destroy(&lk->cl_cond);
	pthread_mutex_destroy(&lk->cl_lock);
	free(lk);
}

static void *
check_lookup_run(void *arg)
{
	struct check_lookup *lk = arg;
	struct addrinfo *res = NULL;
	int rc, saved;

	rc = getaddrinfo(lk->cl_host, lk->cl_port, &lk->cl_hints, &res);
	saved = errno;
	pthread_mutex_lock(&lk->cl_lock);
	lk->cl_rc = rc;
	lk->cl_errno = saved;
	lk->cl_res = res;
	lk->cl_done = 1;
	pthread_cond_signal(&lk->cl_cond);
	pthread_mutex_unlock(&lk->cl_lock);
	check_lookup_unref(lk);
	return NULL;
}

/*
 * getaddrinfo bounded by the deadline (CLOCK_MONOTONIC).  Returns 0 with
 * *res set, or -1 with the reason in err.
 */
static int
check_resolve(struct check_endpoint *ce, const struct timespec *deadline,
    int timeout, struct addrinfo **res, char *err, size_t errlen)
{
	struct check_lookup *lk = NULL;
	struct addrinfo hints;
	pthread_condattr_t attr;
	pthread_t thread;
	int rc, done = 0, saved = 0, i;

	*res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = AI_NUMERICSERV;
	if (!ce->ce_is_name) {
		/* A literal: never a lookup, never a wait. */
		hints.ai_flags |= AI_NUMERICHOST;
		rc = getaddrinfo(ce->ce_host, ce->ce_port, &hints, res);
		saved = errno;
		goto done;
	}
	if ((lk = calloc(1, sizeof(*lk))) == NULL) {
		check_err(err, errlen, "out of memory");
		return -1;
	}
	lk->cl_refs = 2;
	lk->cl_hints = hints;
	memcpy(lk->cl_host, ce->ce_host, sizeof(lk->cl_host));
	memcpy(lk->cl_port, ce->ce_port, sizeof(lk->cl_port));
	if (pthread_condattr_init(&attr) != 0) {
		free(lk);
		check_err(err, errlen, "pthread_condattr_init failed");
		return -1;
	}
	if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
	    pthread_mutex_init(&lk->cl_lock, NULL) != 0) {
		pthread_condattr_destroy(&attr);
		free(lk);
		check_err(err, errlen, "cannot set up the name lookup");
		return -1;
	}
	if (pthread_cond_init(&lk->cl_cond, &attr) != 0) {
		pthread_condattr_destroy(&attr);
		pthread_mutex_destroy(&lk->cl_lock);
		free(lk);
		check_err(err, errlen, "cannot set up the name lookup");
		return -1;
	}
	pthread_condattr_destroy(&attr);
	if ((rc = pthread_create(&thread, NULL, check_lookup_run, lk)) != 0) {
		lk->cl_refs = 1;
		check_lookup_unref(lk);
		check_err(err, errlen, "cannot start the name lookup: %s",
		    strerror(rc));
		return -1;
	}
	pthread_mutex_lock(&lk->cl_lock);
	for (i = 0; !lk->cl_done && i < 1000; i++)
		if (pthread_cond_timedwait(&lk->cl_cond, &lk->cl_lock,
		    deadline) == ETIMEDOUT)
			break;
	if ((done = lk->cl_done)) {
		rc = lk->cl_rc;
		saved = lk->cl_errno;
		*res = lk->cl_res;
		lk->cl_res = NULL;
	}
	pthread_mutex_unlock(&lk->cl_lock);
	if (done)
		pthread_join(thread, NULL);
	else
		pthread_detach(thread);	/* it frees the block when done */
	check_lookup_unref(lk);
	if (!done) {
		check_err(err, errlen, "resolving %s timed out after %d s",
		    ce->ce_host, timeout);
		return -1;
	}
done:
	if (rc != 0 || *res == NULL) {
		if (rc == 0)
			check_err(err, errlen, "cannot resolve %s: no address",
			    ce->ce_host);
		else
			check_err(err, errlen, "cannot resolve %s: %s",
			    ce->ce_host, rc == EAI_SYSTEM ? strerror(saved) :
			    gai_strerror(rc));
		if (*res != NULL)
			freeaddrinfo(*res);
		*res = NULL;
		return -1;
	}
	return 0;
}

/*
 * Waits until fd is ready for events or the deadline passes.  Returns 1
 * ready, 0 timed out, -1 on a poll error (errno set).
 */
static int
check_wait(int fd, short events, const struct timespec *deadline)
{
	struct pollfd pfd;
	int i, ms, n;

	for (i = 0; i < 100; i++) {
		if ((ms = check_left_ms(deadline)) == 0)
			return 0;
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		if ((n = poll(&pfd, 1, ms)) == -1 && errno == EINTR)
			continue;
		return n < 0 ? -1 : n > 0;
	}
	return 0;
}

/* A non-blocking connect to one address.  Returns the socket or -1. */
static int
check_connect_one(const struct addrinfo *ai, const char *addr, int timeout,
    const struct timespec *deadline, char *err, size_t errlen)
{
	socklen_t len;
	int fd, soerr = 0, r;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, ai->ai_protocol);
	if (fd == -1) {
		check_err(err, errlen, "socket for %s: %s", addr,
		    strerror(errno));
		return -1;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		check_err(err, errlen, "connect to %s: %s", addr,
		    strerror(errno));
		goto fail;
	}
	if ((r = check_wait(fd, POLLOUT, deadline)) <= 0) {
		if (r == 0)
			check_err(err, errlen, "connect to %s timed out after "
			    "%d s", addr, timeout);
		else
			check_err(err, errlen, "poll: %s", strerror(errno));
		goto fail;
	}
	len = sizeof(soerr);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
		soerr = errno;
	if (soerr != 0) {
		check_err(err, errlen, "connect to %s: %s", addr,
		    strerror(soerr));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

/* Tries each address in turn until one connects.  Returns a socket or -1. */
static int
check_connect(struct check_endpoint *ce, const struct addrinfo *res,
    int timeout, const struct timespec *deadline, char *err, size_t errlen)
{
	const struct addrinfo *ai;
	char host[CHECK_MAX_ADDR], addr[CHECK_MAX_ADDR + 16];
	int fd = -1, i;

	for (ai = res, i = 0; ai != NULL && i < CHECK_MAX_ADDRS;
	    ai = ai->ai_next, i++) {
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host,
		    sizeof(host), NULL, 0, NI_NUMERICHOST) != 0)
			snprintf(host, sizeof(host), "?");
		snprintf(addr, sizeof(addr), "%s%s%s port %s",
		    ai->ai_family == AF_INET6 ? "[" : "", host,
		    ai->ai_family == AF_INET6 ? "]" : "", ce->ce_port);
		if ((fd = check_connect_one(ai, addr, timeout, deadline, err,
		    errlen)) != -1) {
			snprintf(ce->ce_address, sizeof(ce->ce_address), "%s",
			    host);
			return fd;
		}
		if (check_left_ms(deadline) == 0)
			break;
	}
	return -1;
}

/* The last OpenSSL error as text, or what. */
static void
check_ssl_error(char *buf, size_t len, const char *what)
{
	unsigned long e;
	char reason[256];

	if ((e = ERR_peek_last_error()) == 0) {
		snprintf(buf, len, "%s", what);
		return;
	}
	ERR_error_string_n(e, reason, sizeof(reason));
	snprintf(buf, len, "%s: %s", what, reason);
}

/*
 * Connects, shakes hands with SNI and keeps a reference to the served
 * chain in ce->ce_chain (possibly empty).  Returns 0, or -1 with the
 * reason in ce->ce_error.
 */
static int
check_fetch(const struct check_options *o, struct check_endpoint *ce)
{
	struct timespec deadline;
	struct addrinfo *res = NULL;
	STACK_OF(X509) *chain;
	SSL *ssl = NULL;
	char *err = ce->ce_error;
	size_t errlen = sizeof(ce->ce_error);
	int fd = -1, i, r, e, ret = -1;
	short events;

	check_deadline(&deadline, o->co_timeout);
	ERR_clear_error();
	if (check_resolve(ce, &deadline, o->co_timeout, &res, err,
	    errlen) == -1)
		goto out;
	if ((fd = check_connect(ce, res, o->co_timeout, &deadline, err,
	    errlen)) == -1)
		goto out;
	if ((ssl = SSL_new(o->co_ctx)) == NULL || SSL_set_fd(ssl, fd) != 1 ||
	    (ce->ce_sni != NULL &&
	    SSL_set_tlsext_host_name(ssl, ce->ce_sni) != 1)) {
		check_ssl_error(err, errlen, "cannot set up TLS");
		goto out;
	}
	SSL_set_connect_state(ssl);
	for (i = 0; i < CHECK_MAX_ROUNDS; i++) {
		ERR_clear_error();
		errno = 0;
		if ((r = SSL_connect(ssl)) == 1)
			break;
		e = SSL_get_error(ssl, r);
		if (e == SSL_ERROR_WANT_READ)
			events = POLLIN;
		else if (e == SSL_ERROR_WANT_WRITE)
			events = POLLOUT;
		else {
			if (e == SSL_ERROR_SYSCALL && errno != 0)
				check_err(err, errlen, "TLS handshake with %s: "
				    "%s", ce->ce_address, strerror(errno));
			else if (e == SSL_ERROR_SYSCALL ||
			    e == SSL_ERROR_ZERO_RETURN)
				check_err(err, errlen, "TLS handshake with %s: "
				    "connection closed by the peer",
				    ce->ce_address);
			else
				check_ssl_error(err, errlen, "TLS handshake "
				    "failed");
			goto out;
		}
		if ((r = check_wait(fd, events, &deadline)) <= 0) {
			if (r == 0)
				check_err(err, errlen, "TLS handshake with %s "
				    "timed out after %d s", ce->ce_address,
				    o->co_timeout);
			else
				check_err(err, errlen, "poll: %s",
				    strerror(errno));
			goto out;
		}
	}
	if (i == CHECK_MAX_ROUNDS) {
		check_err(err, errlen, "TLS handshake with %s: no end after %d "
		    "rounds", ce->ce_address, CHECK_MAX_ROUNDS);
		goto out;
	}
	/* The client side's chain includes the leaf, first. */
	chain = SSL_get_peer_cert_chain(ssl);
	if (chain == NULL)
		ce->ce_chain = sk_X509_new_null();
	else
		ce->ce_chain = X509_chain_up_ref(chain);
	if (ce->ce_chain == NULL) {
		check_err(err, errlen, "out of memory");
		goto out;
	}
	(void)SSL_shutdown(ssl);	/* a courtesy close_notify, no wait */
	ret = 0;
out:
	SSL_free(ssl);
	if (fd != -1)
		close(fd);
	if (res != NULL)
		freeaddrinfo(res);
	ERR_clear_error();
	return ret;
}

/* --- the certificates --------------------------------------------------- */

/*
 * Verifies the served chain: the served intermediates are untrusted, the
 * roots are the store's, the purpose sslserver, and the name the one
 * sent as SNI.  Sets ce_verified or ce_verify.
 */
static void
check_verify(const struct check_options *o, struct check_endpoint *ce)
{
	X509_STORE_CTX *ctx;
	X509_VERIFY_PARAM *param;
	X509 *bad;
	char subject[CHECK_MAX_FIELD];
	int err;

	ce->ce_verified = 0;
	if ((ctx = X509_STORE_CTX_new()) == NULL ||
	    X509_STORE_CTX_init(ctx, o->co_store, sk_X509_value(ce->ce_chain,
	    0), ce->ce_chain) != 1 ||
	    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER) != 1) {
		check_ssl_error(ce->ce_verify, sizeof(ce->ce_verify),
		    "cannot set up the verification");
		goto out;
	}
	param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_hostflags(param,
	    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (ce->ce_sni != NULL &&
	    X509_VERIFY_PARAM_set1_host(param, ce->ce_sni, 0) != 1) {
		check_ssl_error(ce->ce_verify, sizeof(ce->ce_verify),
		    "cannot set the name to verify");
		goto out;
	}
	if (X509_verify_cert(ctx) == 1) {
		ce->ce_verified = 1;
		goto out;
	}
	err = X509_STORE_CTX_get_error(ctx);
	subject[0] = '\0';
	if ((bad = X509_STORE_CTX_get_current_cert(ctx)) != NULL)
		check_name(X509_get_subject_name(bad), subject,
		    sizeof(subject));
	check_err(ce->ce_verify, sizeof(ce->ce_verify), "certificate verify "
	    "failed: %s (depth %d%s%s)", X509_verify_cert_error_string(err),
	    X509_STORE_CTX_get_error_depth(ctx), subject[0] != '\0' ? ", " :
	    "", subject);
out:
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
}

/* The SANs of a certificate: {"dns": [...], "uri": [...], "ip": [...]}. */
static json_t *
check_json_sans(X509 *x)
{
	GENERAL_NAMES *gens;
	const GENERAL_NAME *g;
	const ASN1_STRING *s;
	const char *key;
	json_t *o;
	char buf[CHECK_MAX_FIELD];
	int i, n, bad = 0;

	if ((o = json_pack("{s:[],s:[],s:[]}", "dns", "uri", "ip")) == NULL)
		return NULL;
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	n = sk_GENERAL_NAME_num(gens);
	for (i = 0; i < n && i < CHECK_MAX_SANS; i++) {
		g = sk_GENERAL_NAME_value(gens, i);
		switch (g->type) {
		case GEN_DNS:
			key = "dns";
			s = g->d.dNSName;
			check_escape(ASN1_STRING_get0_data(s),
			    (size_t)ASN1_STRING_length(s), buf, sizeof(buf));
			break;
		case GEN_URI:
			key = "uri";
			s = g->d.uniformResourceIdentifier;
			check_escape(ASN1_STRING_get0_data(s),
			    (size_t)ASN1_STRING_length(s), buf, sizeof(buf));
			break;
		case GEN_IPADD:
			key = "ip";
			s = g->d.iPAddress;
			if (ASN1_STRING_length(s) == 4)
				inet_ntop(AF_INET, ASN1_STRING_get0_data(s),
				    buf, sizeof(buf));
			else if (ASN1_STRING_length(s) == 16)
				inet_ntop(AF_INET6, ASN1_STRING_get0_data(s),
				    buf, sizeof(buf));
			else
				snprintf(buf, sizeof(buf), "invalid (%d "
				    "bytes)", ASN1_STRING_length(s));
			break;
		default:
			continue;
		}
		bad |= json_array_append_new(json_object_get(o, key),
		    json_string(buf));
	}
	if (n > CHECK_MAX_SANS)
		bad |= json_object_set_new(o, "truncated", json_true());
	GENERAL_NAMES_free(gens);
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* Upper-case hex of the serial number and of the SHA-256 of the DER. */
static int
check_json_ids(X509 *x, json_t *o)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	unsigned int mdlen, i;
	BIGNUM *bn;
	char *serial = NULL;
	int bad = 0;

	if ((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL)) !=
	    NULL)
		serial = BN_bn2hex(bn);
	BN_free(bn);
	if (serial == NULL)
		return -1;
	bad |= json_object_set_new(o, "serial", json_string(serial));
	OPENSSL_free(serial);
	if (X509_digest(x, EVP_sha256(), md, &mdlen) != 1)
		return -1;
	for (i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02X", md[i]);
	bad |= json_object_set_new(o, "sha256", json_string(hex));
	return bad ? -1 : 0;
}

/*
 * One certificate's report; *left is set to the seconds to its not-after
 * (negative when expired), or *bad_time when a validity date does not
 * parse.  Returns NULL when out of memory.
 */
static json_t *
check_json_cert(X509 *x, int depth, long long *left, int *bad_time)
{
	char subject[CHECK_MAX_FIELD], issuer[CHECK_MAX_FIELD];
	char nb[32], na[32];
	json_t *o;
	int bad = 0, days = 0, secs = 0;

	*bad_time = 0;
	check_name(X509_get_subject_name(x), subject, sizeof(subject));
	check_name(X509_get_issuer_name(x), issuer, sizeof(issuer));
	check_time(X509_get0_notBefore(x), nb, sizeof(nb));
	check_time(X509_get0_notAfter(x), na, sizeof(na));
	if (nb[0] == '\0' || na[0] == '\0' ||
	    ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) != 1) {
		*bad_time = 1;
		*left = 0;
	} else
		*left = (long long)days * 86400 + secs;
	if ((o = json_object()) == NULL)
		return NULL;
	bad |= json_object_set_new(o, "depth", json_integer(depth));
	bad |= json_object_set_new(o, "subject", json_string(subject));
	bad |= json_object_set_new(o, "issuer", json_string(issuer));
	bad |= json_object_set_new(o, "san", check_json_sans(x));
	bad |= json_object_set_new(o, "not_before", *bad_time ? json_null() :
	    json_string(nb));
	bad |= json_object_set_new(o, "not_after", *bad_time ? json_null() :
	    json_string(na));
	bad |= json_object_set_new(o, "seconds_left", *bad_time ?
	    json_null() : json_integer(*left));
	bad |= json_object_set_new(o, "days_left", *bad_time ? json_null() :
	    json_real((double)*left / 86400.0));
	bad |= check_json_ids(x, o);
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/*
 * Checks one endpoint and leaves its report in ce->ce_json and its state
 * in ce->ce_status.  Returns 0, or -1 when out of memory.
 */
static int
check_endpoint(const struct check_options *o, struct check_endpoint *ce)
{
	json_t *certs = NULL, *c;
	long long left = 0, l;
	char limit[32];
	int i, n, bad = 0, bad_time, leaf_bad_time = 0;

	ce->ce_status = CHECK_UNKNOWN;
	if (check_fetch(o, ce) == -1)
		goto report;
	if ((certs = json_array()) == NULL)
		return -1;
	n = sk_X509_num(ce->ce_chain);
	for (i = 0; i < n && i < CHECK_MAX_CERTS; i++) {
		c = check_json_cert(sk_X509_value(ce->ce_chain, i), i, &l,
		    &bad_time);
		if (i == 0) {
			left = l;
			leaf_bad_time = bad_time;
		}
		if (json_array_append_new(certs, c) != 0) {
			json_decref(certs);
			return -1;
		}
	}
	ce->ce_status = CHECK_CRITICAL;
	if (n == 0) {
		check_err(ce->ce_error, sizeof(ce->ce_error), "no certificate "
		    "served");
		goto report;
	}
	if (leaf_bad_time) {
		check_err(ce->ce_error, sizeof(ce->ce_error), "the leaf's "
		    "validity dates do not parse");
		goto report;
	}
	check_verify(o, ce);
	if (!ce->ce_verified)
		check_err(ce->ce_error, sizeof(ce->ce_error), "%s",
		    ce->ce_verify);
	else if (left <= 0)
		check_err(ce->ce_error, sizeof(ce->ce_error), "expired");
	else if (left < o->co_critical || left < o->co_warning) {
		if (left < o->co_critical)
			check_days(o->co_critical, limit, sizeof(limit));
		else
			check_days(o->co_warning, limit, sizeof(limit));
		check_err(ce->ce_error, sizeof(ce->ce_error), "below the %s "
		    "threshold of %s days", left < o->co_critical ?
		    "critical" : "warning", limit);
		if (left >= o->co_critical)
			ce->ce_status = CHECK_WARNING;
	} else
		ce->ce_status = CHECK_OK;

report:
	if ((ce->ce_json = json_object()) == NULL) {
		json_decref(certs);
		return -1;
	}
	bad |= json_object_set_new(ce->ce_json, "endpoint",
	    json_string(ce->ce_arg));
	bad |= json_object_set_new(ce->ce_json, "host",
	    json_string(ce->ce_host));
	bad |= json_object_set_new(ce->ce_json, "port",
	    json_integer(atoi(ce->ce_port)));
	bad |= json_object_set_new(ce->ce_json, "servername",
	    ce->ce_sni != NULL ? json_string(ce->ce_sni) : json_null());
	bad |= json_object_set_new(ce->ce_json, "address",
	    ce->ce_address[0] != '\0' ? json_string(ce->ce_address) :
	    json_null());
	bad |= json_object_set_new(ce->ce_json, "status",
	    json_string(check_status_names[ce->ce_status]));
	bad |= json_object_set_new(ce->ce_json, "exit",
	    json_integer(ce->ce_status));
	bad |= json_object_set_new(ce->ce_json, "error",
	    ce->ce_status != CHECK_OK ? json_string(ce->ce_error) :
	    json_null());
	bad |= json_object_set_new(ce->ce_json, "verified",
	    ce->ce_chain != NULL && sk_X509_num(ce->ce_chain) > 0 &&
	    !leaf_bad_time ? json_boolean(ce->ce_verified) : json_null());
	bad |= json_object_set_new(ce->ce_json, "verify_error",
	    ce->ce_verify[0] != '\0' ? json_string(ce->ce_verify) :
	    json_null());
	bad |= json_object_set_new(ce->ce_json, "chain_length",
	    json_integer(ce->ce_chain != NULL ? sk_X509_num(ce->ce_chain) :
	    0));
	bad |= json_object_set_new(ce->ce_json, "certificates",
	    certs != NULL ? certs : json_array());
	return bad ? -1 : 0;
}

/* --- output ------------------------------------------------------------- */

static const char *
check_str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s != NULL ? s : "";
}

/* "OK - host:port: CN=..., expires ... (3.2 days)[: reason]" */
static void
check_print_status(const struct check_endpoint *ce)
{
	const json_t *leaf;
	const char *subject;
	char days[32];

	printf("%s - %s: ", check_status_names[ce->ce_status], ce->ce_arg);
	leaf = json_array_get(json_object_get(ce->ce_json, "certificates"), 0);
	if (leaf != NULL && json_is_integer(json_object_get(leaf,
	    "seconds_left"))) {
		subject = check_str(leaf, "subject");
		check_days(json_integer_value(json_object_get(leaf,
		    "seconds_left")), days, sizeof(days));
		printf("%s, expires %s (%s days)", subject[0] != '\0' ?
		    subject : "(empty subject)", check_str(leaf, "not_after"),
		    days);
		if (ce->ce_status != CHECK_OK)
			printf(": %s", ce->ce_error);
	} else
		printf("%s", ce->ce_error);
	printf("\n");
}

static void
check_print_list(const char *label, const json_t *a, int *first)
{
	size_t i;

	for (i = 0; i < json_array_size(a); i++) {
		printf("%s%s:%s", *first ? "" : ", ", label,
		    json_string_value(json_array_get(a, i)));
		*first = 0;
	}
}

static void
check_print_details(const struct check_endpoint *ce)
{
	const json_t *certs, *c, *san;
	char days[32];
	size_t i;
	int first;

	printf("\n%s: address %s, SNI %s\n", ce->ce_arg,
	    ce->ce_address[0] != '\0' ? ce->ce_address : "(none)",
	    ce->ce_sni != NULL ? ce->ce_sni : "(none)");
	certs = json_object_get(ce->ce_json, "certificates");
	if (json_array_size(certs) == 0) {
		printf("  %s\n", ce->ce_error);
		return;
	}
	if (ce->ce_verified)
		printf("  verify: ok%s\n", ce->ce_sni == NULL ? " (no name "
		    "checked)" : "");
	else if (ce->ce_verify[0] != '\0')
		printf("  verify: %s\n", ce->ce_verify);
	printf("  chain served: %d certificate(s)%s\n",
	    sk_X509_num(ce->ce_chain), sk_X509_num(ce->ce_chain) >
	    CHECK_MAX_CERTS ? ", the first ones shown" : "");
	for (i = 0; i < json_array_size(certs); i++) {
		c = json_array_get(certs, i);
		printf("  [%zu] subject:    %s\n", i, check_str(c, "subject"));
		printf("      issuer:     %s\n", check_str(c, "issuer"));
		san = json_object_get(c, "san");
		printf("      SAN:        ");
		first = 1;
		check_print_list("DNS", json_object_get(san, "dns"), &first);
		check_print_list("URI", json_object_get(san, "uri"), &first);
		check_print_list("IP", json_object_get(san, "ip"), &first);
		printf("%s%s\n", first ? "(none)" : "",
		    json_is_true(json_object_get(san, "truncated")) ?
		    ", ..." : "");
		printf("      serial:     %s\n", check_str(c, "serial"));
		printf("      sha256:     %s\n", check_str(c, "sha256"));
		printf("      not before: %s\n", check_str(c, "not_before"));
		if (json_is_integer(json_object_get(c, "seconds_left")))
			check_days(json_integer_value(json_object_get(c,
			    "seconds_left")), days, sizeof(days));
		else
			snprintf(days, sizeof(days), "?");
		printf("      not after:  %s (%s days left)\n",
		    check_str(c, "not_after"), days);
	}
}

/* --- the command -------------------------------------------------------- */

static int
check_duration(const char *opt, const char *arg, long *dst)
{
	if ((*dst = rules_parse_duration(arg)) <= 0) {
		check_usage_error("--%s %s: not a duration (a number and one "
		    "of s, m, h, d, up to 3650d)", opt, arg);
		return -1;
	}
	return 0;
}

/* Returns -1 to go on, or the exit status: 0 after --help, 3 on error. */
static int
check_options(struct check_options *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ca-bundle", required_argument, NULL, O_CA_BUNDLE },
		{ "servername", required_argument, NULL, O_SERVERNAME },
		{ "warning", required_argument, NULL, O_WARNING },
		{ "critical", required_argument, NULL, O_CRITICAL },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 }
	};
	const char *errstr;
	int ch;

	o->co_warning = CHECK_DEFAULT_WARNING;
	o->co_critical = CHECK_DEFAULT_CRITICAL;
	o->co_timeout = CHECK_DEFAULT_TIMEOUT;
	optind = 1;
	opterr = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case O_CA_BUNDLE:
			o->co_ca_bundle = optarg;
			break;
		case O_SERVERNAME:
			if (optarg[0] == '\0' || strlen(optarg) >
			    CHECK_MAX_HOST || !check_host_chars(optarg)) {
				check_usage_error("--servername %s: not a host "
				    "name (letters, digits, '-', '.', '_', at "
				    "most %d)", optarg, CHECK_MAX_HOST);
				return CHECK_UNKNOWN;
			}
			o->co_servername = optarg;
			break;
		case O_WARNING:
			if (check_duration("warning", optarg,
			    &o->co_warning) == -1)
				return CHECK_UNKNOWN;
			break;
		case O_CRITICAL:
			if (check_duration("critical", optarg,
			    &o->co_critical) == -1)
				return CHECK_UNKNOWN;
			break;
		case O_TIMEOUT:
			o->co_timeout = (int)cli_strtonum(optarg, 1,
			    CHECK_MAX_TIMEOUT, &errstr);
			if (errstr != NULL) {
				check_usage_error("--timeout %s: %s (seconds, "
				    "1 to %d)", optarg, errstr,
				    CHECK_MAX_TIMEOUT);
				return CHECK_UNKNOWN;
			}
			break;
		case O_JSON:
			o->co_json = 1;
			break;
		case O_HELP:
			check_usage(stdout);
			return CHECK_OK;
		default:
			check_usage(stderr);
			return CHECK_UNKNOWN;
		}
	}
	if (o->co_warning < o->co_critical) {
		check_usage_error("--warning must not be below --critical");
		return CHECK_UNKNOWN;
	}
	if (optind >= argc) {
		check_usage_error("no endpoint given");
		return CHECK_UNKNOWN;
	}
	if (argc - optind > CHECK_MAX_ENDPOINTS) {
		check_usage_error("more than %d endpoints",
		    CHECK_MAX_ENDPOINTS);
		return CHECK_UNKNOWN;
	}
	return -1;
}

/* The trusted store and the TLS context.  Returns 0, or -1 (printed). */
static int
check_setup(struct check_options *o)
{
	char err[512];
	int n;

	if ((o->co_store = X509_STORE_new()) == NULL)
		goto fail;
	if (o->co_ca_bundle != NULL) {
		ERR_clear_error();
		if (X509_STORE_load_file(o->co_store, o->co_ca_bundle) != 1) {
			check_ssl_error(err, sizeof(err), "");
			printf("UNKNOWN - --ca-bundle %s: no certificate "
			    "loaded%s\n", o->co_ca_bundle, err);
			return -1;
		}
		n = sk_X509_OBJECT_num(X509_STORE_get0_objects(o->co_store));
		if (n <= 0) {
			printf("UNKNOWN - --ca-bundle %s: no certificate in "
			    "it\n", o->co_ca_bundle);
			return -1;
		}
	} else if (X509_STORE_set_default_paths(o->co_store) != 1)
		goto fail;
	if ((o->co_ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		goto fail;
	/* Verified afterwards, against co_store, to report even bad chains. */
	SSL_CTX_set_verify(o->co_ctx, SSL_VERIFY_NONE, NULL);
	return 0;
fail:
	check_ssl_error(err, sizeof(err), "cannot set up OpenSSL");
	printf("UNKNOWN - %s\n", err);
	return -1;
}

int
check_main(int argc, char **argv)
{
	struct check_options o;
	struct check_endpoint *eps = NULL;
	enum check_status worst = CHECK_OK;
	json_t *doc = NULL, *arr;
	char err[512];
	char *text;
	int i, n = 0, ret = CHECK_UNKNOWN;

	memset(&o, 0, sizeof(o));
	if ((ret = check_options(&o, argc, argv)) >= 0)
		return ret;
	ret = CHECK_UNKNOWN;
	n = argc - optind;
	if ((eps = calloc((size_t)n, sizeof(*eps))) == NULL) {
		printf("UNKNOWN - out of memory\n");
		return CHECK_UNKNOWN;
	}
	for (i = 0; i < n; i++) {
		if (check_parse_endpoint(argv[optind + i], &eps[i], err,
		    sizeof(err)) == -1) {
			check_usage_error("%s", err);
			goto out;
		}
		if (o.co_servername != NULL)
			eps[i].ce_sni = o.co_servername;
		else if (eps[i].ce_is_name)
			eps[i].ce_sni = eps[i].ce_host;
	}
	/* A peer that closes early must not kill us in the middle. */
	signal(SIGPIPE, SIG_IGN);
	if (check_setup(&o) == -1)
		goto out;
	for (i = 0; i < n; i++) {
		if (check_endpoint(&o, &eps[i]) == -1) {
			printf("UNKNOWN - out of memory\n");
			goto out;
		}
		worst = check_worse(worst, eps[i].ce_status);
	}
	if (o.co_json) {
		if ((doc = json_pack("{s:s,s:i,s:[]}", "status",
		    check_status_names[worst], "exit", (int)worst,
		    "endpoints")) == NULL)
			goto nomem;
		arr = json_object_get(doc, "endpoints");
		for (i = 0; i < n; i++)
			if (json_array_append(arr, eps[i].ce_json) != 0)
				goto nomem;
		if ((text = json_dumps(doc, JSON_INDENT(2) |
		    JSON_PRESERVE_ORDER)) == NULL)
			goto nomem;
		printf("%s\n", text);
		free(text);
	} else {
		for (i = 0; i < n; i++)
			check_print_status(&eps[i]);
		for (i = 0; i < n; i++)
			check_print_details(&eps[i]);
	}
	ret = worst;
	if (fflush(stdout) != 0)
		ret = CHECK_UNKNOWN;
	goto out;
nomem:
	printf("UNKNOWN - out of memory\n");
out:
	json_decref(doc);
	for (i = 0; eps != NULL && i < n; i++) {
		json_decref(eps[i].ce_json);
		if (eps[i].ce_chain != NULL)
			sk_X509_pop_free(eps[i].ce_chain, X509_free);
	}
	free(eps);
	SSL_CTX_free(o.co_ctx);
	X509_STORE_free(o.co_store);
	return ret;
}
