#include "config.h"

#include <sys/stat.h>

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "testlib.h"

static void
testlib_die(const char *what)
{
	fprintf(stderr, "Bail out! %s\n", what);
	printf("Bail out! %s\n", what);
	exit(99);
}

int
testlib_run(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd))
		testlib_die("command too long");
	return system(cmd);
}

static void
testlib_env_value(const char *envfile, const char *name, char *out, size_t len)
{
	char line[1024], *v;
	size_t nl = strlen(name);
	FILE *f;

	if ((f = fopen(envfile, "r")) == NULL)
		testlib_die("token env file missing");
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, name, nl) != 0 || line[nl] != '=')
			continue;
		v = line + nl + 1;
		v[strcspn(v, "\n")] = '\0';
		if (v[0] == '\'') {
			v++;
			v[strcspn(v, "'")] = '\0';
		}
		snprintf(out, len, "%s", v);
		fclose(f);
		return;
	}
	fclose(f);
	testlib_die(name);
}

void
testlib_token_new(struct testtoken *t, const char *label)
{
	const char *srcdir = getenv("top_srcdir");
	const char *tmp = getenv("TMPDIR");
	char envfile[700];

	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "%s/hsmca-test-XXXXXX",
	    tmp != NULL ? tmp : "/tmp");
	if (mkdtemp(t->dir) == NULL)
		testlib_die("mkdtemp");
	if (testlib_run("%s/softhsm-config/hsmca-softhsm-token -l %s %s/tok "
	    ">/dev/null", srcdir != NULL ? srcdir : ".", label, t->dir) != 0)
		testlib_die("hsmca-softhsm-token failed");
	snprintf(envfile, sizeof(envfile), "%s/tok/env", t->dir);
	testlib_env_value(envfile, "HSMCA_MODULE", t->module, sizeof(t->module));
	testlib_env_value(envfile, "HSMCA_TOKEN_URI", t->uri, sizeof(t->uri));
	testlib_env_value(envfile, "HSMCA_PIN_FILE", t->pinfile,
	    sizeof(t->pinfile));
	testlib_env_value(envfile, "HSMCA_SO_PIN_FILE", t->sopinfile,
	    sizeof(t->sopinfile));
	testlib_env_value(envfile, "SOFTHSM2_CONF", t->conf, sizeof(t->conf));
	snprintf(t->label, sizeof(t->label), "%s", label);
	setenv("SOFTHSM2_CONF", t->conf, 1);
}

void
testlib_token_add(struct testtoken *t, const char *label, const char *so_pin,
    const char *pin)
{
	if (testlib_run("softhsm2-util --init-token --free --label %s "
	    "--so-pin %s --pin %s >/dev/null", label, so_pin, pin) != 0)
		testlib_die("second token");
	(void)t;
}

void
testlib_token_remove_dir(struct testtoken *t)
{
	if (t->dir[0] != '\0')
		testlib_run("rm -rf '%s'", t->dir);
}

void
testlib_read_pin(const char *path, char *buf, size_t len)
{
	FILE *f;

	if ((f = fopen(path, "r")) == NULL || fgets(buf, (int)len, f) == NULL)
		testlib_die("read pin");
	buf[strcspn(buf, "\n")] = '\0';
	fclose(f);
}

struct token *
testlib_open(struct testtoken *t, const char *module, unsigned int pool,
    unsigned int call_timeout_ms)
{
	struct token_config tc;
	struct token *tok;
	struct secret *pin;

	memset(&tc, 0, sizeof(tc));
	tc.module = module != NULL ? module : t->module;
	tc.uri = t->uri;
	tc.pool_size = pool;
	tc.call_timeout_ms = call_timeout_ms;
	/* Under valgrind everything is tens of times slower. */
	tc.acquire_timeout_ms = getenv("HSMCA_TEST_ACQUIRE_MS") != NULL ?
	    (unsigned int)strtoul(getenv("HSMCA_TEST_ACQUIRE_MS"), NULL, 10) :
	    1500;
	if (token_open(&tc, &tok) != 0) {
		fprintf(stderr, "token_open: %s\n", token_error_detail());
		testlib_die("token_open");
	}
	if (secret_read_file(t->pinfile, &pin) != 0 ||
	    token_login(tok, pin) != 0) {
		fprintf(stderr, "login: %s\n", token_error_detail());
		testlib_die("login");
	}
	return tok;
}

int
testlib_sign_verify(struct token_key *key)
{
	uint8_t msg[32], dgst[EVP_MAX_MD_SIZE], sig[1024];
	size_t siglen = sizeof(sig);
	unsigned int dlen;
	EVP_PKEY *pub = token_key_public(key);
	EVP_MD_CTX *mctx;
	EVP_PKEY_CTX *ctx;
	int ret, ok;

	RAND_bytes(msg, sizeof(msg));
	if (token_key_type(key) == TOKEN_KEY_ED25519) {
		if ((ret = token_sign(key, NULL, msg, sizeof(msg), sig,
		    &siglen)) != 0)
			return ret;
		mctx = EVP_MD_CTX_new();
		ok = EVP_DigestVerifyInit(mctx, NULL, NULL, NULL, pub) == 1 &&
		    EVP_DigestVerify(mctx, sig, siglen, msg, sizeof(msg)) == 1;
		EVP_MD_CTX_free(mctx);
		return ok ? 0 : TOKEN_ERR_SELFTEST;
	}
	EVP_Digest(msg, sizeof(msg), dgst, &dlen, EVP_sha256(), NULL);
	if ((ret = token_sign(key, EVP_sha256(), dgst, dlen, sig, &siglen)) != 0)
		return ret;
	ctx = EVP_PKEY_CTX_new(pub, NULL);
	ok = EVP_PKEY_verify_init(ctx) == 1 &&
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
	    EVP_PKEY_verify(ctx, sig, siglen, dgst, dlen) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok ? 0 : TOKEN_ERR_SELFTEST;
}

double
testlib_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
testlib_write_file(const char *path, const char *content, mode_t mode)
{
	size_t len = strlen(content);
	int fd;

	unlink(path);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600)) == -1 ||
	    write(fd, content, len) != (ssize_t)len || close(fd) != 0 ||
	    chmod(path, mode) != 0)
		testlib_die(path);
}
