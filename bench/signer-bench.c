/*
 * signer-bench: the signer's throughput against what its mandatory crypto
 * allows, on the same machine in the same run.
 *
 *   signer-bench crypto CERT THREADS SECONDS
 *	raw C_Sign rate with the CA key of CERT (HSMCA_MODULE,
 *	HSMCA_TOKEN_URI, HSMCA_PIN_FILE from the environment), and the rate
 *	of one raw C_Sign plus one OpenSSL verification per certificate:
 *	the ceiling no signer can pass on these cores.
 *   signer-bench load URL MACKEY KEYNAME INFLIGHT SECONDS
 *	issue requests through the IPC client with INFLIGHT in flight,
 *	answers counted after one second of warm-up; also the client's own
 *	CPU time per certificate, which the same cores pay for.
 *   signer-bench health URL MACKEY INFLIGHT SECONDS
 *	the same with health requests, the cheapest the signer answers
 *	(envelope and MAC both ways, decode, dispatch, no key, no audit):
 *	the rate of the IPC exchange alone.
 *
 * Prints "BENCH <name> <value> <unit>" lines.
 */
#include "config.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "cpu.h"
#include "ipc.h"
#include "token.h"
#include "transport.h"

#define MAX_THREADS	8

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void __attribute__((noreturn))
die(const char *what)
{
	fprintf(stderr, "signer-bench: %s\n", what);
	exit(1);
}

/* --- crypto ------------------------------------------------------------ */

struct crypto_run {
	struct token	*tok;
	EVP_PKEY	*pub;
	const char	*label;
	int		 verify;
	atomic_int	 stop;
	unsigned long	 done[MAX_THREADS];
	int		 failed;
};

struct crypto_thread {
	struct crypto_run	*run;
	int			 index;
};

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
	ECDSA_SIG *es;
	BIGNUM *br, *bs;
	uint8_t md[32], sig[256], der[256], *p;
	int derlen, half;

	if ((vctx = EVP_PKEY_CTX_new(r->pub, NULL)) == NULL ||
	    EVP_PKEY_verify_init(vctx) != 1 ||
	    fl->C_OpenSession(token_slot(r->tok), CKF_SERIAL_SESSION, NULL,
	    NULL, &sh) != CKR_OK ||
	    fl->C_FindObjectsInit(sh, tmpl, 2) != CKR_OK ||
	    fl->C_FindObjects(sh, &h, 1, &n) != CKR_OK || n != 1) {
		r->failed = 1;
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
			r->failed = 1;
			break;
		}
		if (r->verify) {
			/* As the signer does: the DER form, then verify. */
			half = (int)siglen / 2;
			es = ECDSA_SIG_new();
			br = BN_bin2bn(sig, half, NULL);
			bs = BN_bin2bn(sig + half, half, NULL);
			if (es == NULL || br == NULL || bs == NULL ||
			    ECDSA_SIG_set0(es, br, bs) != 1) {
				r->failed = 1;
				break;
			}
			p = der;
			derlen = i2d_ECDSA_SIG(es, &p);
			ECDSA_SIG_free(es);
			if (derlen <= 0 || EVP_PKEY_verify(vctx, der,
			    (size_t)derlen, md, sizeof(md)) != 1) {
				r->failed = 1;
				break;
			}
		}
		r->done[ct->index]++;
	}
	fl->C_CloseSession(sh);
	EVP_PKEY_CTX_free(vctx);
	return NULL;
}

/* The rate of the threads together, and the CPU time each operation
 * took (*cpu_per_op, seconds), from this process's own usage. */
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
	t0 = now_s();
	c0 = bench_cpu_self();
	for (i = 0; i < threads; i++) {
		ct[i].run = r;
		ct[i].index = i;
		if (pthread_create(&th[i], NULL, crypto_main, &ct[i]) != 0)
			die("pthread_create");
	}
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&r->stop, 1);
	for (i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	t1 = now_s();
	if (r->failed)
		die("token signing or verification failed");
	for (i = 0; i < threads; i++)
		total += r->done[i];
	if (total == 0)
		die("no signature in the measurement");
	*cpu_per_op = (bench_cpu_self() - c0) / (double)total;
	return (double)total / (t1 - t0);
}

static int
bench_crypto(const char *certpath, int threads, double seconds)
{
	struct token_config tc;
	struct crypto_run r;
	struct secret *pin;
	struct token_key *key;
	FILE *f;
	X509 *cert;
	double raw = 0, lim = 0, v, cpu, limcpu = 0;
	int round;

	memset(&tc, 0, sizeof(tc));
	memset(&r, 0, sizeof(r));
	tc.module = getenv("HSMCA_MODULE");
	tc.uri = getenv("HSMCA_TOKEN_URI");
	if (tc.module == NULL || tc.uri == NULL ||
	    getenv("HSMCA_PIN_FILE") == NULL)
		die("HSMCA_MODULE, HSMCA_TOKEN_URI and HSMCA_PIN_FILE");
	if ((f = fopen(certpath, "r")) == NULL ||
	    (cert = PEM_read_X509(f, NULL, NULL, NULL)) == NULL)
		die("certificate");
	fclose(f);
	if (token_open(&tc, &r.tok) != 0 ||
	    secret_read_file(getenv("HSMCA_PIN_FILE"), &pin) != 0 ||
	    token_login(r.tok, pin) != 0 ||
	    token_key_bind_cert(r.tok, cert, &key) != 0)
		die(token_error_detail());
	if (token_key_type(key) != TOKEN_KEY_EC_P256)
		die("the bench expects a P-256 CA key");
	r.label = token_key_label(key);
	r.pub = X509_get0_pubkey(cert);
	/* Alternate the two measurements; keep the best of each, and the
	 * least CPU time a certificate's crypto took. */
	for (round = 0; round < 3; round++) {
		r.verify = 0;
		if ((v = crypto_rate(&r, threads, seconds, &cpu)) > raw)
			raw = v;
		r.verify = 1;
		if ((v = crypto_rate(&r, threads, seconds, &cpu)) > lim)
			lim = v;
		if (round == 0 || cpu < limcpu)
			limcpu = cpu;
	}
	printf("BENCH raw_sign_p256_%dt %.0f signs/s\n", threads, raw);
	printf("BENCH crypto_limit_p256_%dt %.0f certs/s\n", threads, lim);
	printf("BENCH crypto_cpu_us %.1f us/cert\n", limcpu * 1e6);
	token_key_free(key);
	token_close(r.tok);
	X509_free(cert);
	return 0;
}

/* --- load -------------------------------------------------------------- */

static int
issue_body(const char *keyname, uint8_t **body, size_t *bodylen)
{
	IPC_ISSUE_REQ *req;
	EVP_PKEY *pk = NULL;
	GENERAL_NAME *gn;
	ASN1_IA5STRING *s;
	uint8_t *spki = NULL;
	time_t now = time(NULL);
	int len, ret = -1;

	if ((req = IPC_ISSUE_REQ_new()) == NULL ||
	    (pk = EVP_EC_gen("P-256")) == NULL ||
	    (len = i2d_PUBKEY(pk, &spki)) <= 0 ||
	    ASN1_OCTET_STRING_set(req->spki, spki, len) != 1 ||
	    ASN1_STRING_set(req->key_name, keyname, -1) != 1 ||
	    ASN1_STRING_set(req->profile, "svid", -1) != 1 ||
	    ASN1_STRING_set(req->requester, "bench", -1) != 1 ||
	    ASN1_STRING_set(req->rule, "bench", -1) != 1 ||
	    ASN1_INTEGER_set_int64(req->not_before, now) != 1 ||
	    ASN1_INTEGER_set_int64(req->not_after, now + 3600) != 1 ||
	    (gn = GENERAL_NAME_new()) == NULL)
		goto out;
	if ((s = ASN1_IA5STRING_new()) == NULL ||
	    ASN1_STRING_set(s, "spiffe://td.example/bench", -1) != 1) {
		ASN1_IA5STRING_free(s);
		GENERAL_NAME_free(gn);
		goto out;
	}
	GENERAL_NAME_set0_value(gn, GEN_URI, s);
	if (sk_GENERAL_NAME_push(req->sans, gn) <= 0) {
		GENERAL_NAME_free(gn);
		goto out;
	}
	ret = ipc_encode(IPC_ISSUE_REQ_it(), req, body, bodylen);
 out:
	OPENSSL_free(spki);
	EVP_PKEY_free(pk);
	IPC_ISSUE_REQ_free(req);
	return ret;
}

static int
health_body(uint64_t n, uint8_t **body, size_t *bodylen)
{
	IPC_HEALTH_REQ *req;
	int ret = -1;

	if ((req = IPC_HEALTH_REQ_new()) != NULL &&
	    ASN1_INTEGER_set_uint64(req->nonce, n) == 1)
		ret = ipc_encode(IPC_HEALTH_REQ_it(), req, body, bodylen);
	IPC_HEALTH_REQ_free(req);
	return ret;
}

/*
 * INFLIGHT requests of one type kept in flight for one second of warm-up
 * and SECONDS counted; every answer must be the expected type.  Prints
 * the rate of answers and the client's CPU time per answer.
 */
static int
bench_load(const char *url, const char *keypath, const char *keyname,
    int inflight, double seconds)
{
	struct ipc_client *cl;
	struct ipc_reply reply;
	struct pollfd pfd;
	uint8_t key[IPC_KEY_LEN], *bodies[64];
	size_t bodylens[64];
	unsigned long counted = 0, refused = 0, timeouts = 0, n = 0;
	double t0, tstart = 0, cstart = 0, sstart = -1, tend, elapsed, cpu;
	double scpu;
	int i, counting = 0, health = keyname == NULL;
	int type = health ? IPC_T_HEALTH_REQ : IPC_T_ISSUE_CERT_REQ;
	int want = health ? IPC_T_HEALTH_RESP : IPC_T_ISSUE_CERT_RESP;
	const char *what = health ? "health" : "signer";

	if (inflight < 1 || inflight > 1024 || !(seconds > 0))
		die("INFLIGHT must be 1 to 1024 and SECONDS above 0");
	if (ipc_key_load(keypath, key) != 0)
		die(ipc_error_detail());
	if (ipc_client_open(url, key, (unsigned int)inflight * 2, &cl) != 0)
		die(ipc_error_detail());
	OPENSSL_cleanse(key, sizeof(key));
	for (i = 0; i < 64; i++)
		if ((health ? health_body((uint64_t)i, &bodies[i],
		    &bodylens[i]) : issue_body(keyname, &bodies[i],
		    &bodylens[i])) != 0)
			die("cannot build a request");
	t0 = now_s();
	tend = t0 + 1.0 + seconds;
	pfd.fd = ipc_client_fd(cl);
	pfd.events = POLLIN;
	while (now_s() < tend) {
		while ((int)ipc_client_inflight(cl) < inflight) {
			if (ipc_client_send(cl, type, bodies[n % 64],
			    bodylens[n % 64], NULL, 30000, NULL, NULL) != 0)
				break;
			n++;
		}
		(void)poll(&pfd, 1, 50);
		while (ipc_client_recv(cl, &reply) == 0) {
			if (!counting && now_s() >= t0 + 1.0) {
				counting = 1;
				tstart = now_s();
				cstart = bench_cpu_self();
				sstart = bench_cpu_server();
			}
			if (reply.status != 0)
				timeouts++;
			else if (reply.msg.im_type != want)
				refused++;
			else if (counting)
				counted++;
			ipc_reply_clear(&reply);
		}
	}
	elapsed = now_s() - tstart;
	cpu = bench_cpu_self() - cstart;
	scpu = sstart >= 0 ? bench_cpu_server() : -1;
	if (!counting || counted == 0 || refused != 0 || timeouts != 0) {
		fprintf(stderr, "signer-bench: %lu refused, %lu timed out\n",
		    refused, timeouts);
		die(health ? "the signer did not answer every health request" :
		    "the signer did not sign every request");
	}
	if (health)
		printf("BENCH health_per_s %.0f answers/s\n",
		    (double)counted / elapsed);
	else
		printf("BENCH signer_certs_per_s %.0f certs/s\n",
		    (double)counted / elapsed);
	printf("BENCH %s_client_cpu_us %.1f us/answer\n", what,
	    cpu * 1e6 / (double)counted);
	if (scpu >= 0)
		printf("BENCH %s_server_cpu_us %.1f us/answer\n", what,
		    (scpu - sstart) * 1e6 / (double)counted);
	/* Let the answers in flight come back before closing. */
	for (i = 0; i < 100 && ipc_client_inflight(cl) > 0; i++) {
		(void)poll(&pfd, 1, 50);
		while (ipc_client_recv(cl, &reply) == 0)
			ipc_reply_clear(&reply);
	}
	for (i = 0; i < 64; i++)
		OPENSSL_free(bodies[i]);
	ipc_client_close(cl);
	return 0;
}

int
main(int argc, char *argv[])
{
	if (argc == 5 && strcmp(argv[1], "crypto") == 0)
		return bench_crypto(argv[2], atoi(argv[3]), atof(argv[4]));
	if (argc == 7 && strcmp(argv[1], "load") == 0)
		return bench_load(argv[2], argv[3], argv[4], atoi(argv[5]),
		    atof(argv[6]));
	if (argc == 6 && strcmp(argv[1], "health") == 0)
		return bench_load(argv[2], argv[3], NULL, atoi(argv[4]),
		    atof(argv[5]));
	fprintf(stderr, "usage: signer-bench crypto CERT THREADS SECONDS\n"
	    "       signer-bench load URL MACKEY KEYNAME INFLIGHT SECONDS\n"
	    "       signer-bench health URL MACKEY INFLIGHT SECONDS\n");
	return 1;
}
