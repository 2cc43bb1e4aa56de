/*
 * hsmca-bench: signing rate through the path the signer uses (token-backed
 * EVP_PKEY -> session pool -> C_Sign, or token_sign for Ed25519) against
 * raw C_SignInit/C_Sign on the module, in the same run, with the same
 * input, for each key type and 1 and 2 threads.
 *
 * Prints "BENCH <name> <value> <unit>" lines.  Each rate is the best of
 * HSMCA_BENCH_ROUNDS runs (default 5) of HSMCA_BENCH_SECONDS (default 1).
 * Raw and pooled runs alternate, and the ratio is the median of the ratios
 * of each adjacent pair: on a shared virtual machine the speed drifts by
 * tens of percent within a minute, and a pair measured back to back sees
 * the same drift.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "testlib.h"

#define BENCH_MAX_THREADS	8
#define BENCH_MAX_ROUNDS	20

struct bench_type {
	const char		*name;		/* in BENCH lines */
	enum token_keytype	 type;
};

static const struct bench_type bench_types[] = {
	{ "p256",	TOKEN_KEY_EC_P256 },
	{ "p384",	TOKEN_KEY_EC_P384 },
	{ "rsa2048",	TOKEN_KEY_RSA_2048 },
	{ "rsa3072",	TOKEN_KEY_RSA_3072 },
	{ "ed25519",	TOKEN_KEY_ED25519 },
};

struct bench_run {
	struct token		*tok;
	struct token_key	*key;
	EVP_PKEY		*evp;		/* NULL: use token_sign */
	int			 raw;
	const char		*label;
	uint8_t			 input[64];	/* digest, DigestInfo or message */
	size_t			 inputlen;
	atomic_int		 go;
	atomic_int		 stop;
	unsigned long		 done[BENCH_MAX_THREADS];
	int			 failed;
};

struct bench_thread {
	struct bench_run	*run;
	int			 index;
};

static void
bench_fail(const char *what)
{
	fprintf(stderr, "hsmca-bench: %s: %s\n", what, token_error_detail());
	exit(1);
}

static CK_MECHANISM_TYPE
bench_mechanism(enum token_keytype type)
{
	switch (type) {
	case TOKEN_KEY_EC_P256:
	case TOKEN_KEY_EC_P384:
		return CKM_ECDSA;
	case TOKEN_KEY_ED25519:
		return CKM_EDDSA;
	default:
		return CKM_RSA_PKCS;
	}
}

static void *
bench_raw_main(void *arg)
{
	struct bench_thread *bt = arg;
	struct bench_run *r = bt->run;
	CK_FUNCTION_LIST *fl = token_functions(r->tok);
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)(uintptr_t)r->label, strlen(r->label) },
	};
	CK_MECHANISM mech = { bench_mechanism(token_key_type(r->key)), NULL, 0 };
	CK_SESSION_HANDLE sh;
	CK_OBJECT_HANDLE h;
	CK_ULONG n, siglen;
	uint8_t sig[1024];
	uint8_t in[64];
	size_t inlen = r->inputlen;

	memcpy(in, r->input, inlen);
	if (fl->C_OpenSession(token_slot(r->tok), CKF_SERIAL_SESSION, NULL,
	    NULL, &sh) != CKR_OK ||
	    fl->C_FindObjectsInit(sh, tmpl, 2) != CKR_OK ||
	    fl->C_FindObjects(sh, &h, 1, &n) != CKR_OK || n != 1) {
		r->failed = 1;
		return NULL;
	}
	fl->C_FindObjectsFinal(sh);
	while (!atomic_load(&r->go))
		;
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		siglen = sizeof(sig);
		if (fl->C_SignInit(sh, &mech, h) != CKR_OK ||
		    fl->C_Sign(sh, in, (CK_ULONG)inlen, sig, &siglen) != CKR_OK) {
			r->failed = 1;
			break;
		}
		r->done[bt->index]++;
	}
	fl->C_CloseSession(sh);
	return NULL;
}

static void *
bench_pool_main(void *arg)
{
	struct bench_thread *bt = arg;
	struct bench_run *r = bt->run;
	EVP_PKEY_CTX *ctx = NULL;
	uint8_t sig[1024];
	size_t siglen;

	if (r->evp != NULL && ((ctx = EVP_PKEY_CTX_new(r->evp, NULL)) == NULL ||
	    EVP_PKEY_sign_init(ctx) != 1 ||
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) != 1)) {
		r->failed = 1;
		return NULL;
	}
	while (!atomic_load(&r->go))
		;
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		siglen = sizeof(sig);
		if (ctx != NULL ? EVP_PKEY_sign(ctx, sig, &siglen, r->input,
		    r->inputlen) != 1 : token_sign(r->key, NULL, r->input,
		    r->inputlen, sig, &siglen) != 0) {
			r->failed = 1;
			break;
		}
		r->done[bt->index]++;
	}
	EVP_PKEY_CTX_free(ctx);
	return NULL;
}

static double
bench_measure(struct bench_run *r, int threads, double seconds)
{
	pthread_t th[BENCH_MAX_THREADS];
	struct bench_thread bt[BENCH_MAX_THREADS];
	struct timespec ts;
	unsigned long total = 0;
	double t0, t1;
	int i;

	memset(r->done, 0, sizeof(r->done));
	atomic_store(&r->go, 0);
	atomic_store(&r->stop, 0);
	r->failed = 0;
	for (i = 0; i < threads; i++) {
		bt[i].run = r;
		bt[i].index = i;
		if (pthread_create(&th[i], NULL, r->raw ? bench_raw_main :
		    bench_pool_main, &bt[i]) != 0)
			bench_fail("pthread_create");
	}
	usleep(50 * 1000);	/* let every thread reach the start line */
	t0 = testlib_now();
	atomic_store(&r->go, 1);
	ts.tv_sec = (time_t)seconds;
	ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
	atomic_store(&r->stop, 1);
	t1 = testlib_now();
	for (i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		total += r->done[i];
	}
	if (r->failed)
		bench_fail(r->raw ? "raw C_Sign failed" : "pooled sign failed");
	return (double)total / (t1 - t0);
}

static double
bench_env(const char *name, double def, double min, double max)
{
	const char *v = getenv(name);
	double d;

	if (v == NULL)
		return def;
	d = strtod(v, NULL);
	return d < min ? min : d > max ? max : d;
}

static int
bench_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int
main(void)
{
	struct testtoken tt;
	struct token *tok;
	struct bench_run run;
	double seconds, raw, pool, best_raw, best_pool;
	double ratios[BENCH_MAX_ROUNDS];
	int rounds, threads, round;
	size_t i;

	seconds = bench_env("HSMCA_BENCH_SECONDS", 1.0, 0.1, 30.0);
	rounds = (int)bench_env("HSMCA_BENCH_ROUNDS", 5, 1, BENCH_MAX_ROUNDS);
	testlib_token_new(&tt, "bench");
	tok = testlib_open(&tt, NULL, 4, 0);
	printf("# %d round(s) of %.1f s per figure; %ld online CPUs\n", rounds,
	    seconds, sysconf(_SC_NPROCESSORS_ONLN));

	for (i = 0; i < sizeof(bench_types) / sizeof(bench_types[0]); i++) {
		const struct bench_type *bt = &bench_types[i];
		uint8_t digest[32];
		char label[32];

		memset(&run, 0, sizeof(run));
		run.tok = tok;
		snprintf(label, sizeof(label), "bench-%s", bt->name);
		run.label = label;
		if (token_key_generate(tok, bt->type, label, &run.key) != 0)
			bench_fail(label);
		memset(digest, 0x42, sizeof(digest));
		if (bt->type == TOKEN_KEY_ED25519) {
			/* Ed25519 signs the message; OpenSSL 3.0 has no
			 * method hook for it, so the path is token_sign. */
			memcpy(run.input, digest, sizeof(digest));
			run.inputlen = sizeof(digest);
		} else {
			if (token_key_evp(run.key, &run.evp) != 0)
				bench_fail("token_key_evp");
			memcpy(run.input, digest, sizeof(digest));
			run.inputlen = sizeof(digest);
		}
		for (threads = 1; threads <= 2; threads++) {
			uint8_t raw_input[64];
			size_t raw_len = run.inputlen;

			/* Raw RSA signs the DigestInfo our path builds. */
			memcpy(raw_input, run.input, run.inputlen);
			if (bench_mechanism(bt->type) == CKM_RSA_PKCS) {
				static const uint8_t sha256_prefix[] = {
				    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
				    0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
				    0x01, 0x05, 0x00, 0x04, 0x20 };

				memcpy(raw_input, sha256_prefix,
				    sizeof(sha256_prefix));
				memcpy(raw_input + sizeof(sha256_prefix),
				    run.input, run.inputlen);
				raw_len = sizeof(sha256_prefix) + run.inputlen;
			}
			best_raw = best_pool = 0;
			for (round = 0; round < rounds; round++) {
				uint8_t saved[64];
				size_t savedlen = run.inputlen;

				memcpy(saved, run.input, savedlen);
				memcpy(run.input, raw_input, raw_len);
				run.inputlen = raw_len;
				run.raw = 1;
				raw = bench_measure(&run, threads, seconds);
				memcpy(run.input, saved, savedlen);
				run.inputlen = savedlen;
				run.raw = 0;
				pool = bench_measure(&run, threads, seconds);
				ratios[round] = pool / raw;
				if (raw > best_raw)
					best_raw = raw;
				if (pool > best_pool)
					best_pool = pool;
			}
			printf("BENCH raw_sign_%s_%dt %.0f signs/s\n", bt->name,
			    threads, best_raw);
			printf("BENCH token_sign_%s_%dt %.0f signs/s\n",
			    bt->name, threads, best_pool);
			qsort(ratios, (size_t)rounds, sizeof(ratios[0]),
			    bench_cmp);
			printf("BENCH ratio_%s_%dt %.3f x\n", bt->name, threads,
			    rounds % 2 ? ratios[rounds / 2] :
			    (ratios[rounds / 2 - 1] + ratios[rounds / 2]) / 2);
			fflush(stdout);
		}
		EVP_PKEY_free(run.evp);
		token_key_free(run.key);
	}
	token_close(tok);
	testlib_token_remove_dir(&tt);
	return 0;
}
