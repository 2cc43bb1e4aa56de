/*
 * https-echo: a test server for policy/https.c (driven by tests/https.sh).
 *
 *	https-echo [-b max_body] [-H max_headers] [-c max_connections]
 *	    [-t timeout_s] cert.pem key.pem client-ca.pem
 *
 * Listens on 127.0.0.1, port 0, prints "PORT <n>" once listening, and
 * answers every request with JSON describing it.  Special paths:
 *   /slow         answers after 1 s, from a timer (an asynchronous reply)
 *   /abort-probe  never answers; prints "ABORTED" when the client goes
 *   /reload       https_reload with $HTTPS_ECHO_CERT, _KEY and _CA
 *   /count        the number of open connections
 * Exits cleanly on SIGTERM or SIGINT.
 */
#include "config.h"

#include <sys/queue.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/x509v3.h>

#include "https.h"
#include "log.h"

struct echo_slow {
	TAILQ_ENTRY(echo_slow)	 es_entry;
	struct echo		*es_echo;
	struct https_request	*es_req;
	struct event		*es_timer;
};

struct echo {
	struct event_base	*e_base;
	struct https_server	*e_srv;
	TAILQ_HEAD(, echo_slow)	 e_slow;
};

static void
echo_send_json(struct https_request *req, int status, json_t *obj)
{
	char *text;

	text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(obj);
	if (text == NULL) {
		https_reply(req, 500, "text/plain", "json", 4, NULL);
		return;
	}
	https_reply(req, status, "application/json", text, strlen(text),
	    NULL);
	free(text);
}

/* The subject in RFC 2253 form, or NULL. */
static char *
echo_name(X509_NAME *name)
{
	BIO *bio;
	char *p, *out = NULL;
	long n;

	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		return NULL;
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0 &&
	    (n = BIO_get_mem_data(bio, &p)) >= 0 &&
	    (out = malloc((size_t)n + 1)) != NULL) {
		memcpy(out, p, (size_t)n);
		out[n] = '\0';
	}
	BIO_free(bio);
	return out;
}

static json_t *
echo_sans(X509 *cert)
{
	GENERAL_NAMES *gens;
	GENERAL_NAME *gen;
	json_t *arr;
	char buf[512];
	int i;

	arr = json_array();
	gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
		gen = sk_GENERAL_NAME_value(gens, i);
		if (gen->type == GEN_URI || gen->type == GEN_DNS) {
			ASN1_IA5STRING *s = gen->type == GEN_URI ?
			    gen->d.uniformResourceIdentifier : gen->d.dNSName;
			(void)snprintf(buf, sizeof(buf), "%s:%.*s",
			    gen->type == GEN_URI ? "URI" : "DNS",
			    ASN1_STRING_length(s),
			    (const char *)ASN1_STRING_get0_data(s));
			json_array_append_new(arr, json_string(buf));
		}
	}
	GENERAL_NAMES_free(gens);
	return arr;
}

static void
echo_describe(struct https_request *req, struct echo *e)
{
	STACK_OF(X509) *chain;
	X509 *peer;
	json_t *obj;
	const char *q;
	char *subject;
	size_t len;

	obj = json_object();
	json_object_set_new(obj, "method", json_string(https_method(req)));
	json_object_set_new(obj, "path", json_string(https_path(req)));
	q = https_query(req, "q");
	json_object_set_new(obj, "q", q != NULL ? json_string(q) : json_null());
	(void)https_body(req, &len);
	json_object_set_new(obj, "body_len", json_integer((json_int_t)len));
	json_object_set_new(obj, "peer_addr",
	    json_string(https_peer_addr(req)));
	q = https_header(req, "X-Echo");
	json_object_set_new(obj, "x_echo", q != NULL ? json_string(q) :
	    json_null());
	json_object_set_new(obj, "connections",
	    json_integer(https_connections(e->e_srv)));
	if ((peer = https_peer_cert(req)) != NULL) {
		subject = echo_name(X509_get_subject_name(peer));
		json_object_set_new(obj, "peer_subject",
		    subject != NULL ? json_string(subject) : json_null());
		free(subject);
		json_object_set_new(obj, "peer_sans", echo_sans(peer));
	} else
		json_object_set_new(obj, "peer_subject", json_null());
	chain = https_peer_chain(req);
	json_object_set_new(obj, "chain_len",
	    json_integer(chain != NULL ? sk_X509_num(chain) : 0));
	echo_send_json(req, 200, obj);
}

static void
echo_slow_free(struct echo_slow *slow)
{
	TAILQ_REMOVE(&slow->es_echo->e_slow, slow, es_entry);
	event_free(slow->es_timer);
	free(slow);
}

static void
echo_slow_fire(evutil_socket_t fd, short what, void *arg)
{
	struct echo_slow *slow = arg;
	struct https_request *req = slow->es_req;
	struct echo *e = slow->es_echo;

	(void)fd;
	(void)what;
	echo_slow_free(slow);
	echo_describe(req, e);
}

static void
echo_slow_abort(void *arg)
{
	struct echo_slow *slow = arg;

	printf("SLOW-ABORTED\n");
	fflush(stdout);
	echo_slow_free(slow);
}

static void
echo_probe_abort(void *arg)
{
	(void)arg;
	fprintf(stderr, "ABORTED\n");
	printf("ABORTED\n");
	fflush(stdout);
}

static void
echo_handler(struct https_request *req, void *arg)
{
	struct echo *e = arg;
	struct echo_slow *slow;
	struct timeval tv = { 1, 0 };
	const char *path = https_path(req);
	char err[512];
	json_t *obj;

	if (strcmp(path, "/slow") == 0) {
		if ((slow = calloc(1, sizeof(*slow))) == NULL ||
		    (slow->es_timer = evtimer_new(e->e_base, echo_slow_fire,
		    slow)) == NULL) {
			free(slow);
			https_reply(req, 500, "text/plain", "oom", 3, NULL);
			return;
		}
		slow->es_echo = e;
		slow->es_req = req;
		TAILQ_INSERT_TAIL(&e->e_slow, slow, es_entry);
		https_on_abort(req, echo_slow_abort, slow);
		evtimer_add(slow->es_timer, &tv);
		return;
	}
	if (strcmp(path, "/abort-probe") == 0) {
		https_on_abort(req, echo_probe_abort, NULL);
		return;
	}
	if (strcmp(path, "/reload") == 0) {
		obj = json_object();
		if (https_reload(e->e_srv, getenv("HTTPS_ECHO_CERT"),
		    getenv("HTTPS_ECHO_KEY"), getenv("HTTPS_ECHO_CA"), err,
		    sizeof(err)) == 0) {
			json_object_set_new(obj, "reload", json_string("ok"));
			echo_send_json(req, 200, obj);
		} else {
			json_object_set_new(obj, "error",
			    json_string("reload_failed"));
			json_object_set_new(obj, "message", json_string(err));
			echo_send_json(req, 500, obj);
		}
		return;
	}
	if (strcmp(path, "/count") == 0) {
		obj = json_object();
		json_object_set_new(obj, "connections",
		    json_integer(https_connections(e->e_srv)));
		echo_send_json(req, 200, obj);
		return;
	}
	echo_describe(req, e);
}

static void
echo_signal(evutil_socket_t sig, short what, void *arg)
{
	struct echo *e = arg;

	(void)sig;
	(void)what;
	event_base_loopbreak(e->e_base);
}

static int
echo_number(const char *s, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s || v < 1 || v > max)
		return -1;
	*out = v;
	return 0;
}

int
main(int argc, char *argv[])
{
	struct https_config config = {
		.max_body = 4096,
		.max_headers = 4096,
		.max_connections = 8,
		.timeout_s = 2,
	};
	struct event *sigterm = NULL, *sigint = NULL;
	struct echo e;
	char err[512];
	long v;
	int ch, port = 0, rc = 1;

	memset(&e, 0, sizeof(e));
	TAILQ_INIT(&e.e_slow);
	log_init("https-echo", LOG_FOREGROUND, 0);
	while ((ch = getopt(argc, argv, "b:H:c:t:")) != -1) {
		if (optarg == NULL || echo_number(optarg, INT_MAX, &v) != 0) {
			fprintf(stderr, "https-echo: bad -%c value\n", ch);
			return 2;
		}
		switch (ch) {
		case 'b':
			config.max_body = (size_t)v;
			break;
		case 'H':
			config.max_headers = (size_t)v;
			break;
		case 'c':
			config.max_connections = (int)v;
			break;
		case 't':
			config.timeout_s = (int)v;
			break;
		default:
			return 2;
		}
	}
	if (argc - optind != 3) {
		fprintf(stderr, "usage: https-echo [-b max_body] "
		    "[-H max_headers] [-c max_connections] [-t timeout_s] "
		    "cert.pem key.pem client-ca.pem\n");
		return 2;
	}
	config.cert_file = argv[optind];
	config.key_file = argv[optind + 1];
	config.client_ca_file = argv[optind + 2];

	/* A client that resets the connection must not kill the server
	 * with SIGPIPE; the daemon ignores it the same way. */
	signal(SIGPIPE, SIG_IGN);

	if ((e.e_base = event_base_new()) == NULL) {
		fprintf(stderr, "https-echo: event_base_new failed\n");
		return 1;
	}
	if ((e.e_srv = https_new(e.e_base, &config, echo_handler, &e, err,
	    sizeof(err))) == NULL) {
		fprintf(stderr, "https-echo: %s\n", err);
		goto out;
	}
	if (https_listen(e.e_srv, "127.0.0.1", 0, &port, err,
	    sizeof(err)) != 0) {
		fprintf(stderr, "https-echo: %s\n", err);
		goto out;
	}
	if ((sigterm = evsignal_new(e.e_base, SIGTERM, echo_signal, &e))
	    == NULL || evsignal_add(sigterm, NULL) != 0 ||
	    (sigint = evsignal_new(e.e_base, SIGINT, echo_signal, &e))
	    == NULL || evsignal_add(sigint, NULL) != 0) {
		fprintf(stderr, "https-echo: cannot catch signals\n");
		goto out;
	}
	printf("PORT %d\n", port);
	fflush(stdout);
	if (event_base_dispatch(e.e_base) == -1) {
		fprintf(stderr, "https-echo: event loop failed\n");
		goto out;
	}
	rc = 0;
 out:
	/* Pending requests are aborted here (their callbacks free them). */
	https_free(e.e_srv);
	while (!TAILQ_EMPTY(&e.e_slow))
		echo_slow_free(TAILQ_FIRST(&e.e_slow));
	if (sigterm != NULL)
		event_free(sigterm);
	if (sigint != NULL)
		event_free(sigint);
	event_base_free(e.e_base);
	printf("EXIT %d\n", rc);
	fflush(stdout);
	return rc;
}
