/*
 * e2e-bench: certificates per second through hsmca-policyd over HTTPS
 * (bootstrap token, CSR, policy, inventory, signer, audit) against what
 * the mandatory crypto of one certificate allows on the same machine.
 *
 *   e2e-bench crypto CACERT THREADS SECONDS
 *	with the CA key of CACERT (HSMCA_MODULE, HSMCA_TOKEN_URI,
 *	HSMCA_PIN_FILE from the environment): the rate of raw C_Sign, and
 *	the rate of what every certificate costs at least: one raw C_Sign
 *	(CKM_ECDSA on a SHA-256 digest, as the signer does), the check of
 *	that signature with the CA public key, and the PEM decoding and
 *	signature check of a P-256 CSR (as the policy daemon does).
 *   e2e-bench load HOST PORT SNI CAFILE TOKENFILE CONCURRENCY SECONDS
 *	CONCURRENCY threads, each with one keep-alive TLS 1.3 connection
 *	(the server verified against CAFILE for the name SNI), each POSTing
 *	distinct P-256 CSRs made before the timed run (a pool per thread of
 *	HSMCA_BENCH_POOL, default LOAD_POOL, fewer above 16 threads to bound
 *	the memory; made on the fly and counted if a pool runs out) with
 *	the bearer token in TOKENFILE.  Answers are counted for SECONDS after
 *	one second of warm-up.  The first certificate of each thread is
 *	checked in full; any answer but 201 fails the run.
 *   e2e-bench ping HOST PORT SNI CAFILE CONCURRENCY SECONDS
 *	the same connections asking GET /healthz, which the daemon answers
 *	from its own state: the rate of the HTTPS exchange alone (TLS,
 *	HTTP, JSON; no CSR, no store, no signer).  Any answer but 200 with
 *	"status":"ok" fails the run.
 *   e2e-bench sync DIR ROUNDS
 *	the CPU and wall time of the cheapest durable write there is on
 *	DIR's file system: 4 KiB over a block already written, then
 *	fdatasync (ROUNDS of them, in a scratch file deleted afterwards).
 *	Every durable record of hsmca (an inventory commit, an audit append)
 *	costs at least that much.
 *   e2e-bench store DIR CERTS BATCH
 *	the CPU time per certificate of the least inventory SQLite can keep
 *	as DESIGN.md asks (WAL, synchronous=FULL, in a scratch database in
 *	DIR): no index; a pending row with the request id inserted, and the
 *	bootstrap token's use counted, then the row completed with the
 *	serial and the certificate (DER, as long as an SVID of ours), each
 *	in a transaction shared by BATCH certificates.  A pending row must
 *	be durable before its signer request leaves, so BATCH certificates
 *	in flight share at best one commit of their pending rows and one of
 *	their completions.
 *   e2e-bench json CHAINFILE ROUNDS
 *	the CPU time of the JSON of one issuance in the policy daemon, with
 *	jansson as it uses it: the request body as the load run sends it
 *	(a fresh P-256 CSR) parsed and its fields read, and the 201 answer
 *	built and written out with the chain of CHAINFILE and a certificate
 *	as long as its first one.
 *
 * The crypto measurement also prints the CPU time one certificate's
 * crypto took, and the load and ping runs the CPU time per answer of the
 * bench itself and of the daemon HSMCA_BENCH_SERVER_PID names (cpu.h),
 * over the counted seconds.
 *
 * Prints "BENCH <name> <value> <unit>" lines.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cpu.h"
#include "token.h"

#define MAX_THREADS	8	/* crypto */
#define MAX_CONC	256	/* load: the daemon's default max_connections */
#define LOAD_POOL	3000	/* CSRs made per thread before the run */
#define LOAD_POOL_ALL	12000	/* ... and in all threads together */
#define HDR_MAX		16384	/* an answer's status line and headers */
#define BODY_MAX	65536	/* an answer's body */
#define IO_TIMEOUT_S	30	/* one read or write; above signer_timeout */
#define TOKEN_MAX	256
#define MAX_LAT		(16UL * 1024 * 1024)

static double
e2e_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void __attribute__((noreturn))
e2e_die(const char *what)
{
	unsigned long e;

	fprintf(stderr, "e2e-bench: %s\n", what);
	while ((e = ERR_get_error()) != 0)
		fprintf(stderr, "e2e-bench:   %s\n", ERR_error_string(e, NULL));
	exit(1);
}

/*
 * A P-256 CSR for spiffe://td.example/ns/web/NAME with CN NAME, as PEM.
 * When spki is not NULL it gets the DER public key (OPENSSL_free).
 */
static char *
e2e_make_csr(const char *name, unsigned char **spki, int *spkilen)
{
	X509_REQ *req = NULL;
	EVP_PKEY *pk = NULL;
	X509_NAME *subj;
	GENERAL_NAMES *gens = NULL;
	GENERAL_NAME *gn;
	ASN1_IA5STRING *s;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_EXTENSION *ext;
	BIO *b = NULL;
	BUF_MEM *m;
	char uri[128], *pem = NULL;

	if (snprintf(uri, sizeof(uri), "spiffe://td.example/ns/web/%s",
	    name) >= (int)sizeof(uri))
		return NULL;
	if ((pk = EVP_EC_gen("P-256")) == NULL ||
	    (req = X509_REQ_new()) == NULL ||
	    X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
	    (subj = X509_REQ_get_subject_name(req)) == NULL ||
	    X509_NAME_add_entry_by_NID(subj, NID_commonName, MBSTRING_UTF8,
	    (const unsigned char *)name, -1, -1, 0) != 1 ||
	    X509_REQ_set_pubkey(req, pk) != 1 ||
	    (gens = GENERAL_NAMES_new()) == NULL ||
	    (gn = GENERAL_NAME_new()) == NULL)
		goto out;
	if ((s = ASN1_IA5STRING_new()) == NULL ||
	    ASN1_STRING_set(s, uri, -1) != 1) {
		ASN1_IA5STRING_free(s);
		GENERAL_NAME_free(gn);
		goto out;
	}
	GENERAL_NAME_set0_value(gn, GEN_URI, s);
	if (sk_GENERAL_NAME_push(gens, gn) <= 0) {
		GENERAL_NAME_free(gn);
		goto out;
	}
	if ((exts = sk_X509_EXTENSION_new_null()) == NULL ||
	    (ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens)) == NULL)
		goto out;
	if (sk_X509_EXTENSION_push(exts, ext) <= 0) {
		X509_EXTENSION_free(ext);
		goto out;
	}
	if (X509_REQ_add_extensions(req, exts) != 1 ||
	    X509_REQ_sign(req, pk, EVP_sha256()) <= 0 ||
	    (b = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509_REQ(b, req) != 1 ||
	    BIO_get_mem_ptr(b, &m) != 1 ||
	    (pem = strndup(m->data, m->length)) == NULL)
		goto out;
	if (spki != NULL && (*spkilen = i2d_PUBKEY(pk, spki)) <= 0) {
		free(pem);
		pem = NULL;
	}
 out:
	BIO_free(b);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	GENERAL_NAMES_free(gens);
	X509_REQ_free(req);
	EVP_PKEY_free(pk);
	return pem;
}

/* --- crypto ------------------------------------------------------------ */

struct crypto_run {
	struct token	*tok;
	EVP_PKEY	*pub;
	const char	*label;
	const char	*csr_pem;
	int		 full;		/* 0: raw C_Sign only */
	atomic_int	 stop;
	unsigned long	 done[MAX_THREADS];
	atomic_int	 failed;
};

struct crypto_thread {
	struct crypto_run	*run;
	int			 index;
};

/* The CSR as the policy daemon gets it: PEM to check, then its signature. */
static int
crypto_csr_check(const char *pem)
{
	X509_REQ *req = NULL;
	EVP_PKEY *pk;
	BIO *b;
	int ok = 0;

	if ((b = BIO_new_mem_buf(pem, -1)) != NULL &&
	    (req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL)) != NULL &&
	    (pk = X509_REQ_get0_pubkey(req)) != NULL &&
	    X509_REQ_verify(req, pk) == 1)
		ok = 1;
	X509_REQ_free(req);
	BIO_free(b);
	return ok ? 0 : -1;
}

/* The signer's post-sign check: PKCS#11 r||s to DER, verified with the
 * CA public key over the digest. */
static int
crypto_sig_check(EVP_PKEY_CTX *vctx, const uint8_t *sig, CK_ULONG siglen,
    const uint8_t *md, size_t mdlen)
{
	ECDSA_SIG *es;
	BIGNUM *br, *bs;
	uint8_t der[256], *p;
	int derlen, half = (int)siglen / 2;

	if (siglen == 0 || siglen % 2 != 0 || siglen > 132)
		return -1;
	es = ECDSA_SIG_new();
	br = BN_bin2bn(sig, half, NULL);
	bs = BN_bin2bn(sig + half, half, NULL);
	if (es == NULL || br == NULL || bs == NULL ||
	    ECDSA_SIG_set0(es, br, bs) != 1) {
		ECDSA_SIG_free(es);
		BN_free(br);
		BN_free(bs);
		return -1;
	}
	p = der;
	derlen = i2d_ECDSA_SIG(es, &p);
	ECDSA_SIG_free(es);
	if (derlen <= 0 || EVP_PKEY_verify(vctx, der, (size_t)derlen, md,
	    mdlen) != 1)
		return -1;
	return 0;
}

static void *
crypto_main(void *arg)
{
	struct crypto_thread *ct = arg;
	struct crypto_run *r = ct->run;
	CK_FUNCTION_LIST *fl = token_functions(r->tok);
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)(uintptr_t)r->label, strlen(r->label) },
	};
	CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };
	CK_SESSION_HANDLE sh;
	CK_OBJECT_HANDLE h;
	CK_ULONG n, siglen;
	EVP_PKEY_CTX *vctx;
	uint8_t md[32], sig[256];

	if ((vctx = EVP_PKEY_CTX_new(r->pub, NULL)) == NULL ||
	    EVP_PKEY_verify_init(vctx) != 1 ||
	    fl->C_OpenSession(token_slot(r->tok), CKF_SERIAL_SESSION, NULL,
	    NULL, &sh) != CKR_OK) {
		atomic_store(&r->failed, 1);
		EVP_PKEY_CTX_free(vctx);
		return NULL;
	}
	if (fl->C_FindObjectsInit(sh, tmpl, 2) != CKR_OK ||
	    fl->C_FindObjects(sh, &h, 1, &n) != CKR_OK || n != 1) {
		atomic_store(&r->failed, 1);
		fl->C_CloseSession(sh);
		EVP_PKEY_CTX_free(vctx);
		return NULL;
	}
	fl->C_FindObjectsFinal(sh);
	RAND_bytes(md, sizeof(md));
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		siglen = sizeof(sig);
		md[0]++;
		if (fl->C_SignInit(sh, &mech, h) != CKR_OK ||
		    fl->C_Sign(sh, md, sizeof(md), sig, &siglen) != CKR_OK) {
			atomic_store(&r->failed, 1);
			break;
		}
		if (r->full && (crypto_sig_check(vctx, sig, siglen, md,
		    sizeof(md)) != 0 || crypto_csr_check(r->csr_pem) != 0)) {
			atomic_store(&r->failed, 1);
			break;
		}
		r->done[ct->index]++;
	}
	fl->C_CloseSession(sh);
	EVP_PKEY_CTX_free(vctx);
	return NULL;
}

/* The rate of the threads together, and the CPU time each round took
 * (*cpu_per_op, seconds), from this process's own usage. */
static double
crypto_rate(struct crypto_run *r, int threads, double seconds,
    double *cpu_per_op)
{
	pthread_t th[MAX_THREADS];
	struct crypto_thread ct[MAX_THREADS];
	unsigned long total = 0;
	double t0, t1, c0;
	int i;

	atomic_store(&r->stop, 0);
	memset(r->done, 0, sizeof(r->done));
	t0 = e2e_now();
	c0 = bench_cpu_self();
	for (i = 0; i < threads; i++) {
		ct[i].run = r;
		ct[i].index = i;
		if (pthread_create(&th[i], NULL, crypto_main, &ct[i]) != 0)
			e2e_die("pthread_create");
	}
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&r->stop, 1);
	for (i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	t1 = e2e_now();
	if (atomic_load(&r->failed))
		e2e_die("token signing or a verification failed");
	for (i = 0; i < threads; i++)
		total += r->done[i];
	if (total == 0)
		e2e_die("crypto: nothing done in the measurement");
	*cpu_per_op = (bench_cpu_self() - c0) / (double)total;
	return (double)total / (t1 - t0);
}

static int
e2e_crypto(const char *certpath, int threads, double seconds)
{
	struct token_config tc;
	struct crypto_run r;
	struct secret *pin;
	struct token_key *key;
	FILE *f;
	X509 *cert;
	char *csr;
	double raw = 0, lim = 0, v, cpu, limcpu = 0;
	int round;

	if (threads < 1 || threads > MAX_THREADS || !(seconds > 0) ||
	    seconds > 600)
		e2e_die("crypto: THREADS must be 1 to 8 and SECONDS above 0 "
		    "and at most 600");
	memset(&tc, 0, sizeof(tc));
	memset(&r, 0, sizeof(r));
	tc.module = getenv("HSMCA_MODULE");
	tc.uri = getenv("HSMCA_TOKEN_URI");
	if (tc.module == NULL || tc.uri == NULL ||
	    getenv("HSMCA_PIN_FILE") == NULL)
		e2e_die("crypto: set HSMCA_MODULE, HSMCA_TOKEN_URI and "
		    "HSMCA_PIN_FILE");
	if ((f = fopen(certpath, "r")) == NULL)
		e2e_die("crypto: cannot open the CA certificate");
	cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (cert == NULL)
		e2e_die("crypto: the CA certificate is not PEM");
	if (token_open(&tc, &r.tok) != 0 ||
	    secret_read_file(getenv("HSMCA_PIN_FILE"), &pin) != 0 ||
	    token_login(r.tok, pin) != 0 ||
	    token_key_bind_cert(r.tok, cert, &key) != 0)
		e2e_die(token_error_detail());
	if (token_key_type(key) != TOKEN_KEY_EC_P256)
		e2e_die("crypto: the bench expects a P-256 CA key");
	if ((csr = e2e_make_csr("crypto", NULL, NULL)) == NULL)
		e2e_die("crypto: cannot make a CSR");
	r.label = token_key_label(key);
	r.pub = X509_get0_pubkey(cert);
	r.csr_pem = csr;
	/* Alternate the two measurements (the speed of a shared machine
	 * drifts); keep the best of each, and the least CPU time one
	 * certificate's crypto took. */
	for (round = 0; round < 3; round++) {
		r.full = 0;
		if ((v = crypto_rate(&r, threads, seconds, &cpu)) > raw)
			raw = v;
		r.full = 1;
		if ((v = crypto_rate(&r, threads, seconds, &cpu)) > lim)
			lim = v;
		if (round == 0 || cpu < limcpu)
			limcpu = cpu;
	}
	printf("BENCH raw_sign_p256_%dt %.0f signs/s\n", threads, raw);
	printf("BENCH e2e_crypto_limit_p256_%dt %.0f certs/s\n", threads, lim);
	printf("BENCH e2e_crypto_cpu_us %.1f us/cert\n", limcpu * 1e6);
	free(csr);
	token_key_free(key);
	token_close(r.tok);
	X509_free(cert);
	return 0;
}

/* --- load -------------------------------------------------------------- */

struct load_req {
	char		*buf;		/* the whole HTTP request */
	size_t		 len;
	unsigned char	*spki;		/* the CSR's public key, DER */
	int		 spkilen;
	char		 name[48];	/* CN and last SPIFFE path segment */
};

struct load_run {
	SSL_CTX			*ctx;
	struct addrinfo		*ai;
	const char		*sni;
	const char		*cafile;
	const char		*head;	/* request line and headers, without
					 * Content-Length */
	double			 seconds;
	int			 ping;		/* GET /healthz, no CSRs */
	struct load_req		 ping_req;	/* ... its request */
	size_t			 pool;		/* CSRs per thread */
	pthread_barrier_t	 barrier;
	/* Written by the main thread between the two barrier waits. */
	double			 t_count;	/* end of the warm-up */
	double			 t_end;
};

struct load_thread {
	struct load_run	*run;
	pthread_t	 th;
	int		 index;
	struct load_req	*pool;
	size_t		 npool;
	size_t		 next;
	double		*lat;		/* ms, answers in the counted window */
	size_t		 nlat;
	size_t		 caplat;
	unsigned long	 counted;
	unsigned long	 non201;
	unsigned long	 errors;	/* transport or HTTP syntax */
	unsigned long	 made_late;	/* CSRs made during the run */
	unsigned long	 reconnects;
	int		 setup_failed;
	int		 checked;	/* a full check passed */
	int		 check_failed;
	char		 first_error[512];
	char		 buf[HDR_MAX + BODY_MAX + 1];
};

static void
load_note(struct load_thread *lt, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
load_note(struct load_thread *lt, const char *fmt, ...)
{
	va_list ap;

	if (lt->first_error[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(lt->first_error, sizeof(lt->first_error), fmt, ap);
	va_end(ap);
}

static void
load_req_clear(struct load_req *q)
{
	if (q->buf != NULL)
		OPENSSL_cleanse(q->buf, q->len);	/* holds the token */
	free(q->buf);
	OPENSSL_free(q->spki);
	memset(q, 0, sizeof(*q));
}

static int
load_req_make(struct load_run *r, int t, size_t n, struct load_req *q)
{
	json_t *j = NULL;
	char *pem, *body = NULL;
	size_t bodylen, headlen;
	int hl, ret = -1;

	memset(q, 0, sizeof(*q));
	snprintf(q->name, sizeof(q->name), "bench-%d-%zu", t, n);
	if ((pem = e2e_make_csr(q->name, &q->spki, &q->spkilen)) == NULL)
		return -1;
	if ((j = json_pack("{s:s,s:s,s:s}", "csr", pem, "profile", "svid",
	    "ttl", "1h")) == NULL ||
	    (body = json_dumps(j, JSON_COMPACT)) == NULL)
		goto out;
	bodylen = strlen(body);
	headlen = strlen(r->head);
	q->len = headlen + 40 + bodylen;
	if ((q->buf = malloc(q->len)) == NULL)
		goto out;
	hl = snprintf(q->buf, q->len, "%sContent-Length: %zu\r\n\r\n", r->head,
	    bodylen);
	if (hl < 0 || (size_t)hl + bodylen >= q->len)
		goto out;
	memcpy(q->buf + hl, body, bodylen);
	q->len = (size_t)hl + bodylen;
	ret = 0;
 out:
	if (ret != 0)
		load_req_clear(q);
	free(body);
	json_decref(j);
	free(pem);
	return ret;
}

static void
load_disconnect(SSL **sslp)
{
	int fd;

	if (*sslp == NULL)
		return;
	fd = SSL_get_fd(*sslp);
	(void)SSL_shutdown(*sslp);
	SSL_free(*sslp);
	if (fd != -1)
		close(fd);
	*sslp = NULL;
}

static SSL *
load_connect(struct load_thread *lt)
{
	struct load_run *r = lt->run;
	struct addrinfo *a;
	struct timeval tv = { IO_TIMEOUT_S, 0 };
	SSL *ssl = NULL;
	long vr;
	int fd = -1, one = 1;

	for (a = r->ai; a != NULL; a = a->ai_next) {
		if ((fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC,
		    a->ai_protocol)) == -1)
			continue;
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	if (fd == -1) {
		load_note(lt, "cannot connect: %s", strerror(errno));
		return NULL;
	}
	/* One request per write, answered at once: no Nagle delay. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ==
	    -1 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ==
	    -1 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ==
	    -1) {
		load_note(lt, "setsockopt: %s", strerror(errno));
		close(fd);
		return NULL;
	}
	if ((ssl = SSL_new(r->ctx)) == NULL || SSL_set_fd(ssl, fd) != 1 ||
	    SSL_set_tlsext_host_name(ssl, r->sni) != 1 ||
	    SSL_set1_host(ssl, r->sni) != 1) {
		load_note(lt, "cannot set up TLS: %s",
		    ERR_error_string(ERR_get_error(), NULL));
		SSL_free(ssl);
		close(fd);
		return NULL;
	}
	if (SSL_connect(ssl) != 1) {
		vr = SSL_get_verify_result(ssl);
		load_note(lt, "TLS handshake failed: %s (verification: %s)",
		    ERR_error_string(ERR_get_error(), NULL),
		    X509_verify_cert_error_string(vr));
		SSL_free(ssl);
		close(fd);
		return NULL;
	}
	if (SSL_version(ssl) != TLS1_3_VERSION ||
	    SSL_get_verify_result(ssl) != X509_V_OK) {
		load_note(lt, "TLS: not TLS 1.3 or the server not verified");
		load_disconnect(&ssl);
		return NULL;
	}
	return ssl;
}

static int
load_write(struct load_thread *lt, SSL *ssl, const char *p, size_t len)
{
	size_t w;

	while (len > 0) {
		if (SSL_write_ex(ssl, p, len, &w) != 1) {
			load_note(lt, "TLS write failed: %s",
			    ERR_error_string(ERR_get_error(), NULL));
			return -1;
		}
		p += w;
		len -= w;
	}
	return 0;
}

/* Case-insensitive "Name:" at the start of a header line; the value. */
static const char *
load_header_value(const char *line, const char *end, const char *name)
{
	size_t n = strlen(name);

	if ((size_t)(end - line) <= n || strncasecmp(line, name, n) != 0 ||
	    line[n] != ':')
		return NULL;
	for (line += n + 1; line < end && (*line == ' ' || *line == '\t');
	    line++)
		;
	return line;
}

/*
 * Reads one answer into lt->buf: status line, headers (at most HDR_MAX
 * bytes), a body of exactly Content-Length bytes (at most BODY_MAX),
 * NUL-terminated.  Returns 0, or -1 (the connection is unusable).
 */
static int
load_read(struct load_thread *lt, SSL *ssl, int *status, const char **body,
    size_t *bodylen, int *closing)
{
	char *buf = lt->buf, *eoh = NULL, *line, *eol, *end, *ep;
	const char *v;
	size_t have = 0, hlen = 0, want = 0, r;
	unsigned long clen = 0;
	int gotlen = 0, err;

	*closing = 0;
	*status = 0;
	for (;;) {
		if (eoh == NULL && have >= 4 &&
		    (eoh = memmem(buf, have, "\r\n\r\n", 4)) != NULL) {
			hlen = (size_t)(eoh - buf) + 4;
			if (hlen > HDR_MAX) {
				load_note(lt, "the answer's headers exceed %d "
				    "bytes", HDR_MAX);
				return -1;
			}
			/* Status line, then the headers we act on. */
			end = eoh + 2;
			if ((eol = memmem(buf, (size_t)(end - buf), "\r\n", 2)) ==
			    NULL || eol - buf < 12 ||
			    (strncmp(buf, "HTTP/1.1 ", 9) != 0 &&
			    strncmp(buf, "HTTP/1.0 ", 9) != 0) ||
			    buf[9] < '1' || buf[9] > '5' || buf[10] < '0' ||
			    buf[10] > '9' || buf[11] < '0' || buf[11] > '9') {
				load_note(lt, "not an HTTP/1.1 status line");
				return -1;
			}
			*status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 +
			    (buf[11] - '0');
			for (line = eol + 2; line < end; line = eol + 2) {
				if ((eol = memmem(line, (size_t)(end - line),
				    "\r\n", 2)) == NULL)
					break;
				if ((v = load_header_value(line, eol,
				    "Content-Length")) != NULL) {
					errno = 0;
					clen = strtoul(v, &ep, 10);
					if (ep == v || ep != eol || errno != 0 ||
					    clen > BODY_MAX || gotlen) {
						load_note(lt, "bad or repeated "
						    "Content-Length");
						return -1;
					}
					gotlen = 1;
				} else if (load_header_value(line, eol,
				    "Transfer-Encoding") != NULL) {
					load_note(lt, "Transfer-Encoding in "
					    "an answer");
					return -1;
				} else if ((v = load_header_value(line, eol,
				    "Connection")) != NULL &&
				    (size_t)(eol - v) >= 5 &&
				    strncasecmp(v, "close", 5) == 0)
					*closing = 1;
			}
			if (!gotlen) {
				load_note(lt, "an answer without "
				    "Content-Length");
				return -1;
			}
			want = hlen + clen;
		}
		if (eoh == NULL && have >= HDR_MAX) {
			load_note(lt, "the answer's headers exceed %d bytes",
			    HDR_MAX);
			return -1;
		}
		if (eoh != NULL && have >= want)
			break;
		if (SSL_read_ex(ssl, buf + have, (eoh != NULL ? want :
		    HDR_MAX + BODY_MAX) - have, &r) != 1) {
			err = SSL_get_error(ssl, 0);
			load_note(lt, "TLS read failed after %zu bytes: %s", have,
			    err == SSL_ERROR_ZERO_RETURN ? "closed by the "
			    "server" : err == SSL_ERROR_SYSCALL ? (errno != 0 ?
			    strerror(errno) : "connection reset") :
			    ERR_error_string(ERR_get_error(), NULL));
			return -1;
		}
		have += r;
	}
	/* No pipelining: nothing may follow the answer. */
	if (have != want || SSL_pending(ssl) > 0) {
		load_note(lt, "bytes after the answer's body");
		return -1;
	}
	buf[have] = '\0';
	*body = buf + hlen;
	*bodylen = clen;
	return 0;
}

/*
 * One answer in full: the JSON, the certificate for the CSR's key and
 * name, its serial, and a chain from it through the answer's chain to
 * a trust anchor in CAFILE.
 */
static int
load_check(struct load_thread *lt, const char *body, size_t len,
    const struct load_req *q)
{
	json_t *j;
	json_error_t je;
	const char *serial, *certpem, *chainpem;
	X509 *x = NULL, *c;
	STACK_OF(X509) *chain = NULL;
	X509_STORE *store = NULL;
	X509_STORE_CTX *sctx = NULL;
	GENERAL_NAMES *gens = NULL;
	GENERAL_NAME *gn;
	BIGNUM *want = NULL, *got = NULL;
	BIO *b = NULL;
	unsigned char *spki = NULL;
	char uri[128];
	int spkilen, i, found = 0, ret = -1;

	if ((j = json_loadb(body, len, 0, &je)) == NULL) {
		load_note(lt, "check: the 201 body is not JSON: %s", je.text);
		return -1;
	}
	if (json_unpack(j, "{s:s,s:s,s:s}", "serial", &serial, "certificate",
	    &certpem, "chain", &chainpem) != 0) {
		load_note(lt, "check: serial, certificate or chain missing");
		goto out;
	}
	if ((b = BIO_new_mem_buf(certpem, -1)) == NULL ||
	    (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL) {
		load_note(lt, "check: the certificate is not PEM");
		goto out;
	}
	BIO_free(b);
	if ((b = BIO_new_mem_buf(chainpem, -1)) == NULL ||
	    (chain = sk_X509_new_null()) == NULL)
		goto nomem;
	while ((c = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
		if (sk_X509_push(chain, c) <= 0) {
			X509_free(c);
			goto nomem;
		}
	ERR_clear_error();
	if (sk_X509_num(chain) < 1) {
		load_note(lt, "check: the chain holds no certificate");
		goto out;
	}
	if ((store = X509_STORE_new()) == NULL ||
	    X509_STORE_load_file(store, lt->run->cafile) != 1 ||
	    (sctx = X509_STORE_CTX_new()) == NULL ||
	    X509_STORE_CTX_init(sctx, store, x, chain) != 1)
		goto nomem;
	X509_STORE_CTX_set_flags(sctx, X509_V_FLAG_X509_STRICT);
	if (X509_verify_cert(sctx) != 1) {
		load_note(lt, "check: the certificate does not verify: %s",
		    X509_verify_cert_error_string(
		    X509_STORE_CTX_get_error(sctx)));
		goto out;
	}
	if ((spkilen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki)) !=
	    q->spkilen || memcmp(spki, q->spki, (size_t)spkilen) != 0) {
		load_note(lt, "check: the certificate is not for the CSR's key");
		goto out;
	}
	snprintf(uri, sizeof(uri), "spiffe://td.example/ns/web/%s", q->name);
	if ((gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL)) !=
	    NULL)
		for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
			gn = sk_GENERAL_NAME_value(gens, i);
			if (gn->type == GEN_URI &&
			    (size_t)ASN1_STRING_length(gn->d.uniformResourceIdentifier) ==
			    strlen(uri) &&
			    memcmp(ASN1_STRING_get0_data(
			    gn->d.uniformResourceIdentifier), uri,
			    strlen(uri)) == 0)
				found = 1;
		}
	if (!found) {
		load_note(lt, "check: the certificate does not name %s", uri);
		goto out;
	}
	if (BN_hex2bn(&want, serial) != (int)strlen(serial) ||
	    (got = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL)) ==
	    NULL || BN_cmp(want, got) != 0) {
		load_note(lt, "check: the serial %s is not the certificate's",
		    serial);
		goto out;
	}
	ret = 0;
	goto out;
 nomem:
	load_note(lt, "check: out of memory or CAFILE unreadable");
 out:
	BN_free(want);
	BN_free(got);
	OPENSSL_free(spki);
	GENERAL_NAMES_free(gens);
	X509_STORE_CTX_free(sctx);
	X509_STORE_free(store);
	sk_X509_pop_free(chain, X509_free);
	X509_free(x);
	BIO_free(b);
	json_decref(j);
	return ret;
}

static int
load_lat_push(struct load_thread *lt, double ms)
{
	double *n;
	size_t cap;

	if (lt->nlat == lt->caplat) {
		if (lt->caplat >= MAX_LAT)
			return -1;
		cap = lt->caplat == 0 ? 4096 : lt->caplat * 2;
		if ((n = realloc(lt->lat, cap * sizeof(*n))) == NULL)
			return -1;
		lt->lat = n;
		lt->caplat = cap;
	}
	lt->lat[lt->nlat++] = ms;
	return 0;
}

/* A request: from the pool, or made now if the pool ran out; the one
 * health request when pinging. */
static struct load_req *
load_next(struct load_thread *lt, struct load_req *late)
{
	if (lt->run->ping)
		return &lt->run->ping_req;
	if (lt->next < lt->npool)
		return &lt->pool[lt->next++];
	load_req_clear(late);
	if (load_req_make(lt->run, lt->index, lt->next++, late) != 0)
		return NULL;
	lt->made_late++;
	return late;
}

static void
load_loop(struct load_thread *lt, SSL *ssl)
{
	struct load_run *r = lt->run;
	struct load_req late, *q;
	const char *body;
	size_t bodylen;
	double t0, t1;
	int status = 0, closing = 0;

	memset(&late, 0, sizeof(late));
	while (e2e_now() < r->t_end) {
		if (ssl == NULL) {
			if ((ssl = load_connect(lt)) == NULL) {
				lt->errors++;
				usleep(100000);
				continue;
			}
			lt->reconnects++;
		}
		if ((q = load_next(lt, &late)) == NULL) {
			load_note(lt, "cannot make a CSR");
			lt->errors++;
			break;
		}
		t0 = e2e_now();
		if (load_write(lt, ssl, q->buf, q->len) != 0 ||
		    load_read(lt, ssl, &status, &body, &bodylen,
		    &closing) != 0) {
			lt->errors++;
			load_disconnect(&ssl);
			continue;
		}
		t1 = e2e_now();
		if (status != (r->ping ? 200 : 201)) {
			lt->non201++;
			load_note(lt, "HTTP %d: %.300s", status, body);
		} else if (r->ping && strstr(body, "\"status\":\"ok\"") ==
		    NULL) {
			lt->errors++;
			load_note(lt, "the health answer is not ok: %.300s",
			    body);
		} else if (r->ping) {
			lt->checked = 1;
			if (t1 >= r->t_count && t1 <= r->t_end)
				lt->counted++;
		} else if (strstr(body, "-----BEGIN CERTIFICATE-----") ==
		    NULL) {
			lt->errors++;
			load_note(lt, "a 201 answer without a certificate");
		} else {
			if (!lt->checked && !lt->check_failed) {
				if (load_check(lt, body, bodylen, q) == 0)
					lt->checked = 1;
				else
					lt->check_failed = 1;
			}
			if (t1 >= r->t_count && t1 <= r->t_end) {
				lt->counted++;
				if (load_lat_push(lt, (t1 - t0) * 1e3) != 0) {
					load_note(lt, "out of memory for "
					    "latencies");
					lt->errors++;
					break;
				}
			}
		}
		if (closing)
			load_disconnect(&ssl);
	}
	load_disconnect(&ssl);
	load_req_clear(&late);
}

static void *
load_main(void *arg)
{
	struct load_thread *lt = arg;
	struct load_run *r = lt->run;
	SSL *ssl = NULL;
	size_t i;

	/* The pool and the connection before the clock starts. */
	if (r->pool > 0 &&
	    (lt->pool = calloc(r->pool, sizeof(*lt->pool))) == NULL)
		lt->setup_failed = 1;
	for (i = 0; !lt->setup_failed && i < r->pool; i++) {
		if (load_req_make(r, lt->index, i, &lt->pool[i]) != 0)
			lt->setup_failed = 1;
		else
			lt->npool++;
	}
	if (lt->setup_failed)
		load_note(lt, "cannot make the CSR pool");
	else if ((ssl = load_connect(lt)) == NULL) {
		lt->setup_failed = 1;
		lt->errors++;
	}
	/* Every thread waits twice, failed or not: pools ready, then the
	 * clock is set. */
	pthread_barrier_wait(&r->barrier);
	pthread_barrier_wait(&r->barrier);
	if (lt->setup_failed) {
		load_disconnect(&ssl);
		return NULL;
	}
	load_loop(lt, ssl);
	return NULL;
}

static int
e2e_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Reads the bearer token: a secret file (owner and mode checked), one
 * line of printable characters without spaces. */
static char *
e2e_read_token(const char *path)
{
	struct secret *s;
	const uint8_t *d;
	char *tok;
	size_t i, n;

	if (secret_read_file(path, &s) != 0)
		e2e_die(token_error_detail());
	d = secret_data(s);
	n = secret_len(s);
	if (n == 0 || n > TOKEN_MAX)
		e2e_die("load: the token file is empty or too long");
	for (i = 0; i < n; i++)
		if (d[i] <= 0x20 || d[i] >= 0x7f)
			e2e_die("load: the token has a character that cannot "
			    "go in a header");
	if ((tok = strndup((const char *)d, n)) == NULL)
		e2e_die("out of memory");
	secret_free(s);
	return tok;
}

/* Sleeps until the monotonic clock reads t. */
static void
e2e_sleep_until(double t)
{
	double d;

	while ((d = t - e2e_now()) > 0)
		usleep(d >= 0.5 ? 500000 : (useconds_t)(d * 1e6) + 1);
}

/*
 * load (ping 0): argv HOST PORT SNI CAFILE TOKENFILE CONCURRENCY SECONDS;
 * ping (1): HOST PORT SNI CAFILE CONCURRENCY SECONDS.
 */
static int
e2e_load(char *argv[], int ping)
{
	const char *host = argv[2], *port = argv[3], *sni = argv[4];
	const char *what = ping ? "https_ping" : "e2e";
	double c0, c1, s0 = -1, s1 = -1;
	struct load_run r;
	struct load_thread *lts;
	struct addrinfo hints;
	unsigned long counted = 0, non201 = 0, errors = 0;
	unsigned long late = 0, reconnects = 0;
	size_t nlat = 0, k;
	double *all, p50 = 0, p99 = 0, t_start;
	char *tok, *head, *ep;
	const char *v;
	long n;
	int conc, i, rc, failed = 0, checked = 0;

	memset(&r, 0, sizeof(r));
	r.sni = sni;
	r.cafile = argv[5];
	r.ping = ping;
	conc = atoi(argv[ping ? 6 : 7]);
	r.seconds = atof(argv[ping ? 7 : 8]);
	if (conc < 1 || conc > MAX_CONC || !(r.seconds > 0) ||
	    r.seconds > 3600)
		e2e_die("load: CONCURRENCY must be 1 to 256 and SECONDS above 0 "
		    "and at most 3600");
	if (strlen(sni) > 253 || strpbrk(sni, "\r\n ") != NULL)
		e2e_die("load: SNI is not a host name");
	r.pool = LOAD_POOL_ALL / (size_t)conc < LOAD_POOL ?
	    LOAD_POOL_ALL / (size_t)conc : LOAD_POOL;
	if (ping)
		r.pool = 0;
	else if ((v = getenv("HSMCA_BENCH_POOL")) != NULL) {
		n = strtol(v, &ep, 10);
		if (ep == v || *ep != '\0' || n < 1 || n > 100000)
			e2e_die("load: HSMCA_BENCH_POOL must be 1 to 100000");
		r.pool = (size_t)n;
	}
	signal(SIGPIPE, SIG_IGN);
	if (ping) {
		if (asprintf(&head, "GET /healthz HTTP/1.1\r\n"
		    "Host: %s:%s\r\n\r\n", sni, port) == -1)
			e2e_die("out of memory");
		r.ping_req.buf = head;
		r.ping_req.len = strlen(head);
	} else {
		tok = e2e_read_token(argv[6]);
		if (asprintf(&head, "POST /v1/certificates HTTP/1.1\r\n"
		    "Host: %s:%s\r\nAuthorization: Bearer %s\r\n"
		    "Content-Type: application/json\r\n", sni, port,
		    tok) == -1)
			e2e_die("out of memory");
		OPENSSL_cleanse(tok, strlen(tok));
		free(tok);
	}
	r.head = head;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if ((rc = getaddrinfo(host, port, &hints, &r.ai)) != 0) {
		fprintf(stderr, "e2e-bench: %s:%s: %s\n", host, port,
		    gai_strerror(rc));
		return 1;
	}
	if ((r.ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    SSL_CTX_set_min_proto_version(r.ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_load_verify_locations(r.ctx, r.cafile, NULL) != 1)
		e2e_die("load: cannot set up TLS with CAFILE");
	SSL_CTX_set_verify(r.ctx, SSL_VERIFY_PEER, NULL);
	/* One connection per thread for the whole run: no resumption. */
	SSL_CTX_set_session_cache_mode(r.ctx, SSL_SESS_CACHE_OFF);

	if ((lts = calloc((size_t)conc, sizeof(*lts))) == NULL ||
	    pthread_barrier_init(&r.barrier, NULL, (unsigned)conc + 1) != 0)
		e2e_die("out of memory");
	for (i = 0; i < conc; i++) {
		lts[i].run = &r;
		lts[i].index = i;
		if (pthread_create(&lts[i].th, NULL, load_main, &lts[i]) != 0)
			e2e_die("pthread_create");
	}
	pthread_barrier_wait(&r.barrier);
	t_start = e2e_now();
	r.t_count = t_start + 1.0;
	r.t_end = r.t_count + r.seconds;
	pthread_barrier_wait(&r.barrier);
	/* CPU time over the counted seconds, the bench's and the daemon's. */
	e2e_sleep_until(r.t_count);
	c0 = bench_cpu_self();
	s0 = bench_cpu_server();
	e2e_sleep_until(r.t_end);
	c1 = bench_cpu_self();
	if (s0 >= 0)
		s1 = bench_cpu_server();
	for (i = 0; i < conc; i++)
		pthread_join(lts[i].th, NULL);

	for (i = 0; i < conc; i++) {
		counted += lts[i].counted;
		non201 += lts[i].non201;
		errors += lts[i].errors;
		late += lts[i].made_late;
		reconnects += lts[i].reconnects;
		nlat += lts[i].nlat;
		checked += lts[i].checked;
		if (lts[i].setup_failed || lts[i].check_failed)
			failed = 1;
		if (lts[i].first_error[0] != '\0')
			fprintf(stderr, "e2e-bench: thread %d: %s\n", i,
			    lts[i].first_error);
	}
	if ((all = malloc((nlat > 0 ? nlat : 1) * sizeof(*all))) == NULL)
		e2e_die("out of memory");
	for (i = 0, k = 0; i < conc; i++) {
		if (lts[i].nlat > 0)
			memcpy(all + k, lts[i].lat, lts[i].nlat * sizeof(*all));
		k += lts[i].nlat;
	}
	if (nlat > 0) {
		qsort(all, nlat, sizeof(*all), e2e_cmp_double);
		p50 = all[(nlat - 1) / 2];
		p99 = all[(size_t)(0.99 * (double)nlat + 0.999999) - 1];
	}
	if (ping)
		printf("BENCH https_ping_per_s %.0f answers/s\n",
		    (double)counted / r.seconds);
	else {
		printf("BENCH e2e_certs_per_s %.0f certs/s\n",
		    (double)counted / r.seconds);
		printf("BENCH e2e_latency_p50 %.2f ms\n", p50);
		printf("BENCH e2e_latency_p99 %.2f ms\n", p99);
		printf("BENCH e2e_non_201 %lu answers\n", non201);
		printf("BENCH e2e_transport_errors %lu requests\n", errors);
		printf("BENCH e2e_csrs_made_during_run %lu csrs\n", late);
		printf("BENCH e2e_certs_checked_in_full %d certs\n", checked);
	}
	if (counted > 0) {
		printf("BENCH %s_client_cpu_us %.1f us/answer\n", what,
		    (c1 - c0) * 1e6 / (double)counted);
		if (s0 >= 0 && s1 >= 0)
			printf("BENCH %s_server_cpu_us %.1f us/answer\n",
			    what, (s1 - s0) * 1e6 / (double)counted);
	}
	if (reconnects > 0)
		fprintf(stderr, "e2e-bench: %lu reconnections\n", reconnects);

	for (i = 0; i < conc; i++) {
		for (k = 0; k < lts[i].npool; k++)
			load_req_clear(&lts[i].pool[k]);
		free(lts[i].pool);
		free(lts[i].lat);
	}
	free(all);
	free(lts);
	pthread_barrier_destroy(&r.barrier);
	SSL_CTX_free(r.ctx);
	freeaddrinfo(r.ai);
	OPENSSL_cleanse(head, strlen(head));
	free(head);
	if (failed || non201 != 0 || errors != 0 || counted == 0 ||
	    checked != conc) {
		fprintf(stderr, "e2e-bench: the run is not valid (%lu %s, "
		    "%lu errors, %lu counted, %d of %d threads checked an "
		    "answer in full)\n", non201, ping ? "not 200" : "non-201",
		    errors, counted, checked, conc);
		return 1;
	}
	return 0;
}

/* --- scratch files ------------------------------------------------------ */

/* A new file e2e-MODE-XXXXXX in dir, its name in path: the descriptor, or
 * -1 with the reason printed.  A name too long for path ends the run. */
static int
e2e_scratch(const char *mode, const char *dir, char *path, size_t pathlen)
{
	char why[64];
	int fd;

	if ((size_t)snprintf(path, pathlen, "%s/e2e-%s-XXXXXX", dir, mode) >=
	    pathlen) {
		snprintf(why, sizeof(why), "%s: DIR is too long", mode);
		e2e_die(why);
	}
	if ((fd = mkstemp(path)) == -1)
		fprintf(stderr, "e2e-bench: %s: %s\n", path, strerror(errno));
	return fd;
}

/* --- sync --------------------------------------------------------------- */

#define SYNC_BLOCK	4096
#define SYNC_BLOCKS	64

static int
e2e_sync(const char *dir, long rounds)
{
	static char block[SYNC_BLOCK];
	char path[PATH_MAX];
	double t0, c0, t1, c1;
	long i;
	int fd;

	if (rounds < 1 || rounds > 1000000)
		e2e_die("sync: ROUNDS must be 1 to 1000000");
	if ((fd = e2e_scratch("sync", dir, path, sizeof(path))) == -1)
		return 1;
	memset(block, 'x', sizeof(block));
	/* The blocks exist and are on disk before the clock starts, so
	 * that each round rewrites data and no metadata.  The file stays
	 * linked while it is measured, as the inventory and the log do. */
	for (i = 0; i < SYNC_BLOCKS; i++)
		if (write(fd, block, sizeof(block)) != (ssize_t)sizeof(block))
			break;
	if (i < SYNC_BLOCKS || fsync(fd) != 0)
		goto fail;
	t0 = e2e_now();
	c0 = bench_cpu_self();
	for (i = 0; i < rounds; i++) {
		block[0] = (char)('a' + i % 26);
		if (pwrite(fd, block, sizeof(block),
		    (off_t)(i % SYNC_BLOCKS) * SYNC_BLOCK) !=
		    (ssize_t)sizeof(block) || fdatasync(fd) != 0)
			goto fail;
	}
	c1 = bench_cpu_self();
	t1 = e2e_now();
	close(fd);
	(void)unlink(path);
	printf("BENCH sync_cpu_us %.1f us/sync\n", (c1 - c0) * 1e6 /
	    (double)rounds);
	printf("BENCH sync_wall_us %.1f us/sync\n", (t1 - t0) * 1e6 /
	    (double)rounds);
	return 0;
 fail:
	fprintf(stderr, "e2e-bench: sync: %s: %s\n", path, strerror(errno));
	close(fd);
	(void)unlink(path);
	return 1;
}

/* --- store -------------------------------------------------------------- */

#define STORE_DER	760	/* bytes: a P-256 SVID of ours is 700-800 */

/* A request id and a serial (16 bytes each) are made of two longs. */
_Static_assert(2 * sizeof(long) <= 16, "two longs fit an id");

static int
store_exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK)
		return 0;
	fprintf(stderr, "e2e-bench: store: %s: %s\n", sql,
	    err != NULL ? err : sqlite3_errmsg(db));
	sqlite3_free(err);
	return -1;
}

static int
store_step(sqlite3 *db, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return 0;
	fprintf(stderr, "e2e-bench: store: %s\n", sqlite3_errmsg(db));
	return -1;
}

static int
e2e_store(const char *dir, long certs, long batch)
{
	static uint8_t der[STORE_DER];
	char path[PATH_MAX], wal[PATH_MAX + 8], shm[PATH_MAX + 8];
	uint8_t reqid[16] = { 0 }, serial[16] = { 0 };
	sqlite3 *db = NULL;
	sqlite3_stmt *ins = NULL, *use = NULL, *upd = NULL, *chk = NULL;
	sqlite3_int64 *rows = NULL;
	double t0, t1, c0, c1;
	long j, done = 0;
	int fd, ok = 0;

	if (certs < 1 || certs > 1000000 || batch < 1 || batch > 1024)
		e2e_die("store: CERTS must be 1 to 1000000 and BATCH 1 to 1024");
	if ((fd = e2e_scratch("store", dir, path, sizeof(path))) == -1)
		return 1;
	close(fd);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	snprintf(shm, sizeof(shm), "%s-shm", path);
	if ((rows = calloc((size_t)batch, sizeof(*rows))) == NULL)
		e2e_die("store: out of memory");
	RAND_bytes(der, sizeof(der));
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK) {
		fprintf(stderr, "e2e-bench: store: %s: %s\n", path,
		    db != NULL ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	if (store_exec(db, "PRAGMA journal_mode = WAL") != 0 ||
	    store_exec(db, "PRAGMA synchronous = FULL") != 0 ||
	    store_exec(db, "CREATE TABLE c (id INTEGER PRIMARY KEY, "
	    "request BLOB NOT NULL, serial BLOB, der BLOB)") != 0 ||
	    store_exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, "
	    "uses INTEGER NOT NULL)") != 0 ||
	    store_exec(db, "INSERT INTO t VALUES (1, 0)") != 0 ||
	    sqlite3_prepare_v2(db, "INSERT INTO c (request) VALUES (?)", -1,
	    &ins, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "UPDATE t SET uses = uses + 1 WHERE id = 1",
	    -1, &use, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "UPDATE c SET serial = ?, der = ? "
	    "WHERE id = ?", -1, &upd, NULL) != SQLITE_OK) {
		fprintf(stderr, "e2e-bench: store: %s: %s\n", path,
		    sqlite3_errmsg(db));
		goto out;
	}
	t0 = e2e_now();
	c0 = bench_cpu_self();
	while (done < certs) {
		long n = certs - done < batch ? certs - done : batch;

		if (store_exec(db, "BEGIN IMMEDIATE") != 0)
			goto out;
		for (j = 0; j < n; j++) {
			/* Distinct ids without the cost of the CSPRNG, which
			 * is not SQLite's: the clock measures SQLite only. */
			memcpy(reqid, &done, sizeof(done));
			memcpy(reqid + sizeof(done), &j, sizeof(j));
			if (sqlite3_bind_blob(ins, 1, reqid, sizeof(reqid),
			    SQLITE_TRANSIENT) != SQLITE_OK ||
			    store_step(db, ins) != 0 || store_step(db, use) != 0)
				goto out;
			rows[j] = sqlite3_last_insert_rowid(db);
		}
		if (store_exec(db, "COMMIT") != 0 ||
		    store_exec(db, "BEGIN IMMEDIATE") != 0)
			goto out;
		for (j = 0; j < n; j++) {
			memcpy(serial, &j, sizeof(j));
			memcpy(serial + sizeof(j), &done, sizeof(done));
			der[0] = (uint8_t)(done + j);
			if (sqlite3_bind_blob(upd, 1, serial, sizeof(serial),
			    SQLITE_TRANSIENT) != SQLITE_OK ||
			    sqlite3_bind_blob(upd, 2, der, sizeof(der),
			    SQLITE_STATIC) != SQLITE_OK ||
			    sqlite3_bind_int64(upd, 3, rows[j]) != SQLITE_OK ||
			    store_step(db, upd) != 0)
				goto out;
		}
		if (store_exec(db, "COMMIT") != 0)
			goto out;
		done += n;
	}
	c1 = bench_cpu_self();
	t1 = e2e_now();
	/* Every row completed, and the token's count: what was timed did
	 * the work. */
	if (sqlite3_prepare_v2(db, "SELECT (SELECT count(*) FROM c WHERE "
	    "length(der) = ? AND length(serial) = 16), (SELECT uses FROM t)",
	    -1, &chk, NULL) != SQLITE_OK ||
	    sqlite3_bind_int(chk, 1, STORE_DER) != SQLITE_OK ||
	    sqlite3_step(chk) != SQLITE_ROW) {
		fprintf(stderr, "e2e-bench: store: %s\n", sqlite3_errmsg(db));
		goto out;
	}
	if (sqlite3_column_int64(chk, 0) != certs ||
	    sqlite3_column_int64(chk, 1) != certs) {
		fprintf(stderr, "e2e-bench: store: %lld rows completed and "
		    "%lld token uses for %ld certificates\n",
		    (long long)sqlite3_column_int64(chk, 0),
		    (long long)sqlite3_column_int64(chk, 1), certs);
		goto out;
	}
	printf("BENCH store_floor_cpu_us %.1f us/cert\n", (c1 - c0) * 1e6 /
	    (double)certs);
	printf("BENCH store_floor_wall_us %.1f us/cert\n", (t1 - t0) * 1e6 /
	    (double)certs);
	ok = 1;
 out:
	sqlite3_finalize(chk);
	sqlite3_finalize(ins);
	sqlite3_finalize(use);
	sqlite3_finalize(upd);
	sqlite3_close(db);
	free(rows);
	(void)unlink(path);
	(void)unlink(wal);
	(void)unlink(shm);
	return ok ? 0 : 1;
}

/* --- json --------------------------------------------------------------- */

static int
e2e_json(const char *chainfile, long rounds)
{
	static char chain[16384];
	char cert[8192], *csr, *body, *p;
	const char *end = "-----END CERTIFICATE-----\n";
	json_t *j, *a;
	json_error_t je;
	size_t n, bodylen;
	double c0, c1;
	FILE *f;
	long i;

	if (rounds < 1 || rounds > 10000000)
		e2e_die("json: ROUNDS must be 1 to 10000000");
	if ((f = fopen(chainfile, "r")) == NULL) {
		fprintf(stderr, "e2e-bench: %s: %s\n", chainfile,
		    strerror(errno));
		return 1;
	}
	n = fread(chain, 1, sizeof(chain) - 1, f);
	chain[n] = '\0';
	if (ferror(f) || !feof(f) || (p = strstr(chain, end)) == NULL ||
	    (size_t)(p - chain) + strlen(end) >= sizeof(cert)) {
		fclose(f);
		fprintf(stderr, "e2e-bench: %s: not a PEM certificate under "
		    "16 KiB\n", chainfile);
		return 1;
	}
	fclose(f);
	n = (size_t)(p - chain) + strlen(end);
	memcpy(cert, chain, n);
	cert[n] = '\0';
	if ((csr = e2e_make_csr("json", NULL, NULL)) == NULL)
		e2e_die("json: cannot make a CSR");
	if ((j = json_pack("{s:s,s:s,s:s}", "csr", csr, "profile", "svid",
	    "ttl", "1h")) == NULL ||
	    (body = json_dumps(j, JSON_COMPACT)) == NULL)
		e2e_die("json: out of memory");
	json_decref(j);
	free(csr);
	bodylen = strlen(body);
	c0 = bench_cpu_self();
	for (i = 0; i < rounds; i++) {
		if ((j = json_loadb(body, bodylen, JSON_REJECT_DUPLICATES,
		    &je)) == NULL || !json_is_object(j) ||
		    json_string_value(json_object_get(j, "csr")) == NULL ||
		    json_string_value(json_object_get(j, "profile")) == NULL ||
		    json_string_value(json_object_get(j, "ttl")) == NULL)
			e2e_die("json: the request does not parse");
		if ((a = json_pack("{s:s,s:s,s:s,s:s,s:s}", "serial",
		    "5c0b7e4f1a2d3c4b5a69788796a5b4c3", "certificate", cert,
		    "chain", chain, "not_before", "2026-11-29T14:00:00Z",
		    "not_after", "2026-11-30T14:00:00Z")) == NULL ||
		    (p = json_dumps(a, JSON_COMPACT)) == NULL)
			e2e_die("json: out of memory");
		free(p);
		json_decref(a);
		json_decref(j);
	}
	c1 = bench_cpu_self();
	free(body);
	printf("BENCH json_cpu_us %.1f us/cert\n", (c1 - c0) * 1e6 /
	    (double)rounds);
	return 0;
}

int
main(int argc, char *argv[])
{
	if (argc == 5 && strcmp(argv[1], "crypto") == 0)
		return e2e_crypto(argv[2], atoi(argv[3]), atof(argv[4]));
	if (argc == 9 && strcmp(argv[1], "load") == 0)
		return e2e_load(argv, 0);
	if (argc == 8 && strcmp(argv[1], "ping") == 0)
		return e2e_load(argv, 1);
	if (argc == 4 && strcmp(argv[1], "sync") == 0)
		return e2e_sync(argv[2], atol(argv[3]));
	if (argc == 5 && strcmp(argv[1], "store") == 0)
		return e2e_store(argv[2], atol(argv[3]), atol(argv[4]));
	if (argc == 4 && strcmp(argv[1], "json") == 0)
		return e2e_json(argv[2], atol(argv[3]));
	fprintf(stderr, "usage: e2e-bench crypto CACERT THREADS SECONDS\n"
	    "       e2e-bench load HOST PORT SNI CAFILE TOKENFILE CONCURRENCY "
	    "SECONDS\n"
	    "       e2e-bench ping HOST PORT SNI CAFILE CONCURRENCY SECONDS\n"
	    "       e2e-bench sync DIR ROUNDS\n"
	    "       e2e-bench store DIR CERTS BATCH\n"
	    "       e2e-bench json CHAINFILE ROUNDS\n");
	return 1;
}
