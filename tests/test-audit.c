/*
 * The audit log (signer/audit.c) with a software audit key: concurrent
 * appends and group commit, reopen and replay, the torn tail, checkpoints
 * and a failing signer, verification, and a log whose writes fail.
 */
#include "config.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "audit.h"

#define THREADS		8
#define PER_THREAD	200

struct fixture {
	char		 dir[64];
	char		 path[128];
	EVP_PKEY	*key;
	int		 sign_fails;	/* the sign callback refuses */
	int		 sign_calls;
	struct audit_log *log;
};

static int
soft_sign(void *arg, const uint8_t *msg, size_t msglen, uint8_t *sig,
    size_t *siglen)
{
	struct fixture *f = arg;
	EVP_MD_CTX *ctx;
	const EVP_MD *md;
	int ok;

	f->sign_calls++;
	if (f->sign_fails)
		return -1;
	md = EVP_PKEY_get_base_id(f->key) == EVP_PKEY_ED25519 ? NULL :
	    EVP_sha256();
	ctx = EVP_MD_CTX_new();
	ok = ctx != NULL &&
	    EVP_DigestSignInit(ctx, NULL, md, NULL, f->key) == 1 &&
	    EVP_DigestSign(ctx, sig, siglen, msg, msglen) == 1;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -1;
}

static void
config_init(struct audit_config *c, struct fixture *f, unsigned int every)
{
	memset(c, 0, sizeof(*c));
	c->path = f->path;
	c->checkpoint_every = every;
	c->audit_pub = f->key;
	c->sign = soft_sign;
	c->sign_arg = f;
}

static int
setup_key(void **state, EVP_PKEY *key)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL || key == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/hsmca-audit-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/audit.log", f->dir);
	f->key = key;
	*state = f;
	return 0;
}

static int
setup_p256(void **state)
{
	return setup_key(state, EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"));
}

static int
setup_ed25519(void **state)
{
	return setup_key(state, EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"));
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	DIR *d;
	struct dirent *de;
	char p[512];

	if ((d = opendir(f->dir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(p, sizeof(p), "%s/%s", f->dir, de->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(f->dir);
	EVP_PKEY_free(f->key);
	free(f);
	return 0;
}

/* The log's lines as JSON records; *n set.  Fails the test on bad JSON. */
static json_t **
read_records(const char *path, size_t *n)
{
	FILE *fp = fopen(path, "r");
	json_t **recs = NULL, **nr;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;

	*n = 0;
	assert_non_null(fp);
	while ((len = getline(&line, &cap, fp)) > 0) {
		assert_int_equal(line[len - 1], '\n');
		nr = realloc(recs, (*n + 1) * sizeof(*recs));
		assert_non_null(nr);
		recs = nr;
		recs[*n] = json_loadb(line, (size_t)len - 1, 0, NULL);
		assert_non_null(recs[*n]);
		(*n)++;
	}
	free(line);
	fclose(fp);
	return recs;
}

static void
free_records(json_t **recs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		json_decref(recs[i]);
	free(recs);
}

static const char *
rec_type(json_t *rec)
{
	return json_string_value(json_object_get(rec, "type"));
}

static json_int_t
rec_int(json_t *rec, const char *field)
{
	return json_integer_value(json_object_get(rec, field));
}

static size_t
count_lines(const char *path)
{
	FILE *fp = fopen(path, "r");
	size_t n = 0;
	int c;

	assert_non_null(fp);
	while ((c = getc(fp)) != EOF)
		if (c == '\n')
			n++;
	fclose(fp);
	return n;
}

static json_t *
request(const char *type, int i)
{
	json_t *rec = json_pack("{s:s,s:s,s:i}", "type", type, "key",
	    "issuing-ec", "n", i);

	assert_non_null(rec);
	return rec;
}

static void
expect_verify(struct fixture *f, EVP_PKEY *pub, int want, uint64_t *last,
    uint64_t *uncovered)
{
	uint64_t l, u;
	int ret = audit_verify_file(f->path, pub, &l, &u);

	if (ret != want)
		fail_msg("audit_verify_file %d, wanted %d: %s", ret, want,
		    audit_error_detail());
	if (last != NULL)
		*last = l;
	if (uncovered != NULL)
		*uncovered = u;
}

struct worker {
	struct fixture	*f;
	uint64_t	 seqs[PER_THREAD];
	int		 errors;
	int		 not_durable;
};

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	json_t *rec;
	int i;

	for (i = 0; i < PER_THREAD; i++) {
		rec = request("issue", i);
		if (audit_append(w->f->log, rec, &w->seqs[i]) != 0)
			w->errors++;
		json_decref(rec);
		/* Returned means written: the line is in the file. */
		if (i % 40 == 0 && count_lines(w->f->path) < w->seqs[i])
			w->not_durable++;
		if (i > 0 && w->seqs[i] <= w->seqs[i - 1])
			w->errors++;
	}
	return NULL;
}

static void
test_concurrent_group_commit(void **state)
{
	struct fixture *f = *state;
	struct audit_config c;
	struct worker w[THREADS];
	pthread_t t[THREADS];
	uint64_t appends, syncs, last, uncovered;
	uint8_t *seen;
	json_t **recs;
	size_t n, i, cps = 0;
	int k, j;

	config_init(&c, f, 100);
	assert_int_equal(audit_open(&c, &f->log), 0);
	assert_int_equal(audit_last_seq(f->log), 1);	/* "start" */
	for (k = 0; k < THREADS; k++) {
		memset(&w[k], 0, sizeof(w[k]));
		w[k].f = f;
		assert_int_equal(pthread_create(&t[k], NULL, worker_main,
		    &w[k]), 0);
	}
	for (k = 0; k < THREADS; k++)
		pthread_join(t[k], NULL);
	audit_counters(f->log, &appends, &syncs);
	print_message("# %llu appends, %llu fdatasyncs\n",
	    (unsigned long long)appends, (unsigned long long)syncs);
	assert_true(appends >= THREADS * PER_THREAD + 1);
	assert_true(syncs < appends);
	assert_false(audit_failed(f->log));

	/* Every seq handed out once, none missing. */
	last = audit_last_seq(f->log);
	seen = calloc(last + 1, 1);
	assert_non_null(seen);
	for (k = 0; k < THREADS; k++) {
		assert_int_equal(w[k].errors, 0);
		assert_int_equal(w[k].not_durable, 0);
		for (j = 0; j < PER_THREAD; j++) {
			assert_true(w[k].seqs[j] >= 2 && w[k].seqs[j] <= last);
			assert_int_equal(seen[w[k].seqs[j]], 0);
			seen[w[k].seqs[j]] = 1;
		}
	}
	free(seen);
	audit_close(f->log);

	expect_verify(f, f->key, 0, &last, &uncovered);
	assert_int_equal(uncovered, 0);
	recs = read_records(f->path, &n);
	assert_int_equal(n, last);
	for (i = 0; i < n; i++) {
		assert_int_equal(rec_int(recs[i], "seq"), (json_int_t)i + 1);
		if (strcmp(rec_type(recs[i]), "checkpoint") == 0) {
			cps++;
			/* Every 100 records, and the final one at close. */
			if (i + 1 < n)
				assert_int_equal(rec_int(recs[i], "records"),
				    100);
		}
	}
	assert_int_equal(cps, (THREADS * PER_THREAD + 2) / 100 + 1);
	assert_string_equal(rec_type(recs[n - 2]), "stop");
	free_records(recs, n);
}

struct scan_state {
	uint64_t	 next;
	int		 starts;
	int		 errors;
};

static void
scan_cb(void *arg, const json_t *record)
{
	struct scan_state *s = arg;
	json_t *rec = json_deep_copy(record);

	if (rec_int(rec, "seq") != (json_int_t)s->next)
		s->errors++;
	s->next++;
	if (strcmp(rec_type(rec), "start") == 0)
		s->starts++;
	json_decref(rec);
}

static void
test_reopen_scan(void **state)
{
	struct fixture *f = *state;
	struct audit_config c;
	struct scan_state s = { 1, 0, 0 };
	uint64_t seq, before;
	json_t *rec, **recs;
	size_t n;
	int i;

	config_init(&c, f, 4);
	assert_int_equal(audit_open(&c, &f->log), 0);
	for (i = 0; i < 10; i++) {
		rec = request("intent", i);
		assert_int_equal(audit_append(f->log, rec, &seq), 0);
		json_decref(rec);
	}
	audit_close(f->log);
	before = count_lines(f->path);

	c.scan = scan_cb;
	c.scan_arg = &s;
	assert_int_equal(audit_open(&c, &f->log), 0);
	assert_int_equal(s.errors, 0);
	assert_int_equal(s.next, before + 1);
	assert_int_equal(s.starts, 1);
	assert_int_equal(audit_last_seq(f->log), before + 1);
	audit_close(f->log);

	recs = read_records(f->path, &n);
	assert_string_equal(rec_type(recs[before]), "start");
	assert_int_equal(rec_int(recs[before], "pid"), getpid());
	assert_non_null(json_object_get(recs[before], "version"));
	assert_string_equal(rec_type(recs[n - 1]), "checkpoint");
	free_records(recs, n);
	expect_verify(f, f->key, 0, NULL, NULL);
}

static void
append_bytes(const char *path, const char *bytes)
{
	int fd = open(path, O_WRONLY | O_APPEND);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
	close(fd);
}

static void
test_torn_tail(void **state)
{
	static const char torn[] = "{\"seq\":99,\"prev\":\"00";
	struct fixture *f = *state;
	struct audit_config c;
	uint8_t md[32];
	char hex[65];
	uint64_t before;
	json_t **recs;
	size_t n, i;

	config_init(&c, f, 0);
	assert_int_equal(audit_open(&c, &f->log), 0);
	audit_close(f->log);
	before = count_lines(f->path);
	append_bytes(f->path, torn);

	expect_verify(f, f->key, 1, NULL, NULL);
	assert_non_null(strstr(audit_error_detail(), "torn last line"));

	assert_int_equal(audit_open(&c, &f->log), 0);
	audit_close(f->log);
	expect_verify(f, f->key, 0, NULL, NULL);
	recs = read_records(f->path, &n);
	assert_string_equal(rec_type(recs[before]), "recovered");
	assert_int_equal(rec_int(recs[before], "seq"), before + 1);
	assert_int_equal(rec_int(recs[before], "cut_bytes"), strlen(torn));
	assert_int_equal(EVP_Digest(torn, strlen(torn), md, NULL,
	    EVP_sha256(), NULL), 1);
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	assert_string_equal(json_string_value(json_object_get(recs[before],
	    "cut_sha256")), hex);
	assert_string_equal(rec_type(recs[before + 1]), "start");
	free_records(recs, n);
}

static void
test_checkpoint_every(void **state)
{
	struct fixture *f = *state;
	struct audit_config c;
	uint64_t seq, uncovered;
	json_t *rec, **recs;
	size_t n, i;
	int k;

	config_init(&c, f, 3);
	assert_int_equal(audit_open(&c, &f->log), 0);	/* start: 1 */
	for (k = 0; k < 2; k++) {			/* 2 more: checkpoint */
		rec = request("issue", k);
		assert_int_equal(audit_append(f->log, rec, &seq), 0);
		json_decref(rec);
	}
	assert_int_equal(audit_last_seq(f->log), 4);

	/* The audit key refuses: records go on, unsigned for now. */
	f->sign_fails = 1;
	for (k = 0; k < 3; k++) {
		rec = request("issue", k);
		assert_int_equal(audit_append(f->log, rec, &seq), 0);
		json_decref(rec);
	}
	assert_int_equal(audit_last_seq(f->log), 7);
	assert_int_equal(audit_checkpoint(f->log), -1);
	f->sign_fails = 0;
	/* Tried again after the next record. */
	rec = request("refusal", 9);
	assert_int_equal(audit_append(f->log, rec, &seq), 0);
	json_decref(rec);
	assert_int_equal(seq, 8);
	assert_int_equal(audit_last_seq(f->log), 9);
	assert_int_equal(audit_checkpoint(f->log), 0);
	assert_int_equal(audit_last_seq(f->log), 10);
	audit_close(f->log);

	recs = read_records(f->path, &n);
	assert_string_equal(rec_type(recs[3]), "checkpoint");
	assert_int_equal(rec_int(recs[3], "records"), 3);
	assert_string_equal(json_string_value(json_object_get(recs[3],
	    "head")), json_string_value(json_object_get(recs[3], "prev")));
	assert_string_equal(rec_type(recs[8]), "checkpoint");
	assert_int_equal(rec_int(recs[8], "records"), 4);
	assert_string_equal(rec_type(recs[9]), "checkpoint");
	assert_int_equal(rec_int(recs[9], "records"), 0);
	for (i = 0; i < n; i++)
		assert_int_equal(rec_int(recs[i], "seq"), (json_int_t)i + 1);
	free_records(recs, n);
	expect_verify(f, f->key, 0, NULL, &uncovered);
	assert_int_equal(uncovered, 0);
}

/* The same log is good for its own key, and "made by another key" for
 * any other; without a key only the chain is checked. */
static void
test_verify_keys(void **state)
{
	struct fixture *f = *state;
	struct audit_config c;
	EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *saved;
	uint64_t seq, last;
	json_t *rec;
	int k;

	config_init(&c, f, 5);
	assert_int_equal(audit_open(&c, &f->log), 0);
	for (k = 0; k < 12; k++) {
		rec = request("issue", k);
		assert_int_equal(audit_append(f->log, rec, &seq), 0);
		json_decref(rec);
	}
	audit_close(f->log);
	expect_verify(f, f->key, 0, &last, NULL);
	assert_true(last >= 15);
	expect_verify(f, NULL, 0, NULL, NULL);
	assert_non_null(other);
	expect_verify(f, other, 1, NULL, NULL);
	assert_non_null(strstr(audit_error_detail(), "another key"));
	assert_non_null(strstr(audit_error_detail(), "line 6 (seq 6)"));

	/* The signer does not start on a log it cannot trust. */
	saved = c.audit_pub;
	c.audit_pub = other;
	assert_int_equal(audit_open(&c, &f->log), -1);
	assert_non_null(strstr(audit_error_detail(), "another key"));
	c.audit_pub = saved;
	EVP_PKEY_free(other);
}

static void
test_verify_bad_lines(void **state)
{
	struct fixture *f = *state;
	struct audit_config c;
	uint64_t seq;
	json_t *rec;

	config_init(&c, f, 0);
	assert_int_equal(audit_open(&c, &f->log), 0);
	rec = request("intent", 1);
	assert_int_equal(audit_append(f->log, rec, &seq), 0);
	json_decref(rec);
	audit_close(f->log);
	append_bytes(f->path, "not json\n");
	expect_verify(f, f->key, 1, NULL, NULL);
	assert_non_null(strstr(audit_error_detail(), "line 5 (seq 5 expected)"));
	assert_non_null(strstr(audit_error_detail(), "bad JSON"));
	assert_int_equal(audit_open(&c, &f->log), -1);
	f->log = NULL;
}

static void
test_append_rejects(void **state)
{
	struct fixture *f = *state;
	struct audit_config c;
	uint64_t seq = 7;
	json_t *rec;

	config_init(&c, f, 0);
	assert_int_equal(audit_open(&c, &f->log), 0);
	rec = json_pack("{s:s,s:i}", "type", "issue", "seq", 5);
	assert_int_equal(audit_append(f->log, rec, &seq), -1);
	assert_int_equal(seq, 0);
	json_decref(rec);
	rec = json_pack("{s:s}", "key", "x");
	assert_int_equal(audit_append(f->log, rec, &seq), -1);
	json_decref(rec);
	rec = json_pack("{s:s}", "type", "checkpoint");
	assert_int_equal(audit_append(f->log, rec, &seq), -1);
	json_decref(rec);
	rec = json_pack("[i]", 1);
	assert_int_equal(audit_append(f->log, rec, &seq), -1);
	json_decref(rec);
	/* A refused record leaves the log good and the seq unused. */
	assert_false(audit_failed(f->log));
	assert_int_equal(audit_last_seq(f->log), 1);
	audit_close(f->log);
	expect_verify(f, f->key, 0, NULL, NULL);
}

static void
test_open_refuses(void **state)
{
	struct fixture *f = *state;
	struct audit_config c;
	struct audit_log *second = NULL;
	char link[256], dir[256];

	config_init(&c, f, 0);
	assert_int_equal(audit_open(&c, &f->log), 0);
	/* A second writer on the same file. */
	assert_int_equal(audit_open(&c, &second), -1);
	assert_null(second);
	audit_close(f->log);

	assert_int_equal(chmod(f->path, 0620), 0);
	assert_int_equal(audit_open(&c, &f->log), -1);
	assert_non_null(strstr(audit_error_detail(), "group or others"));
	assert_int_equal(chmod(f->path, 0600), 0);

	snprintf(link, sizeof(link), "%s/link.log", f->dir);
	assert_int_equal(symlink(f->path, link), 0);
	c.path = link;
	assert_int_equal(audit_open(&c, &f->log), -1);
	assert_non_null(strstr(audit_error_detail(), "symbolic link"));

	snprintf(dir, sizeof(dir), "%s/dir.log", f->dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	c.path = dir;
	assert_int_equal(audit_open(&c, &f->log), -1);
	rmdir(dir);
	c.path = "/dev/null";
	assert_int_equal(audit_open(&c, &f->log), -1);
}

/* The descriptor audit.c holds for path, found through /proc. */
static int
log_fd(const char *path)
{
	char link[64], target[PATH_MAX];
	ssize_t n;
	int fd;

	for (fd = 3; fd < 1024; fd++) {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, path) == 0)
			return fd;
	}
	return -1;
}

/* The disk "goes away": the open log's descriptor is now read-only. */
static void
make_log_read_only(struct fixture *f)
{
	int fd, ro;

	fd = log_fd(f->path);
	assert_true(fd >= 0);
	ro = open(f->path, O_RDONLY);
	assert_true(ro >= 0);
	assert_int_equal(dup2(ro, fd), fd);
	close(ro);
}

static void
expect_failed_log(struct fixture *f)
{
	uint64_t seq;
	json_t *rec;

	assert_true(audit_failed(f->log));
	rec = request("intent", 2);
	assert_int_equal(audit_append(f->log, rec, &seq), -1);
	json_decref(rec);
	assert_int_equal(audit_checkpoint(f->log), -1);
	audit_close(f->log);
	f->log = NULL;
}

static void
test_fail_file_too_large(void **state)
{
	struct fixture *f = *state;
	struct audit_config c;
	struct rlimit saved, small;
	struct stat st;
	char big[4096];
	uint64_t seq;
	json_t *rec, **recs;
	size_t n;

	config_init(&c, f, 0);
	assert_int_equal(audit_open(&c, &f->log), 0);
	assert_int_equal(stat(f->path, &st), 0);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	rec = json_pack("{s:s,s:s}", "type", "issue", "object", big);

	/* The disk is "full": a write stops short with EFBIG. */
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
	small = saved;
	small.rlim_cur = (rlim_t)st.st_size + 1000;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	assert_int_equal(audit_append(f->log, rec, &seq), -1);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
	json_decref(rec);
	expect_failed_log(f);

	/* What did reach the file is a torn line, cut at the next open. */
	expect_verify(f, f->key, 1, NULL, NULL);
	assert_int_equal(audit_open(&c, &f->log), 0);
	audit_close(f->log);
	expect_verify(f, f->key, 0, NULL, NULL);
	recs = read_records(f->path, &n);
	assert_string_equal(rec_type(recs[1]), "recovered");
	assert_int_equal(rec_int(recs[1], "cut_bytes"), 1000);
	free_records(recs, n);
}

static void
test_fail_read_only_fd(void **state)
{
	struct fixture *f = *state;
	struct audit_config c;
	uint64_t seq;
	json_t *rec;

	config_init(&c, f, 0);
	assert_int_equal(audit_open(&c, &f->log), 0);
	make_log_read_only(f);
	rec = request("intent", 1);
	assert_int_equal(audit_append(f->log, rec, &seq), -1);
	json_decref(rec);
	expect_failed_log(f);
	/* Nothing was written after the failure: the log is still good. */
	expect_verify(f, f->key, 0, NULL, NULL);
}

/*
 * The log fails while appenders are waiting for a sync: every one of them
 * gets -1 (none is left waiting), every record acknowledged before is in
 * the file, and nothing is written after the failure.
 */
struct failing_worker {
	struct fixture	*f;
	atomic_int	*finished;
	uint64_t	 last_ok;
	int		 ok, failed;
};

static void *
failing_worker_main(void *arg)
{
	struct failing_worker *w = arg;
	uint64_t seq;
	json_t *rec;
	int i, rc;

	for (i = 0; i < PER_THREAD; i++) {
		rec = request("issue", i);
		rc = audit_append(w->f->log, rec, &seq);
		json_decref(rec);
		if (rc != 0) {
			w->failed = 1;
			break;
		}
		w->ok++;
		w->last_ok = seq;
	}
	atomic_fetch_add(w->finished, 1);
	return NULL;
}

static void
test_fail_under_load(void **state)
{
	struct fixture *f = *state;
	struct audit_config c;
	struct failing_worker w[THREADS];
	pthread_t t[THREADS];
	atomic_int finished;
	size_t lines;
	int k, i, failed = 0;

	config_init(&c, f, 0);
	assert_int_equal(audit_open(&c, &f->log), 0);
	atomic_init(&finished, 0);
	for (k = 0; k < THREADS; k++) {
		memset(&w[k], 0, sizeof(w[k]));
		w[k].f = f;
		w[k].finished = &finished;
		assert_int_equal(pthread_create(&t[k], NULL,
		    failing_worker_main, &w[k]), 0);
	}
	/* Some records in (at most 5 s), then the disk "goes away". */
	for (i = 0; i < 500 && audit_last_seq(f->log) < 50; i++)
		usleep(10000);
	make_log_read_only(f);
	/* Every appender comes back (at most 20 s). */
	for (i = 0; i < 2000 && atomic_load(&finished) < THREADS; i++)
		usleep(10000);
	if (atomic_load(&finished) < THREADS)
		fail_msg("%d appenders still wait after the log failed",
		    THREADS - atomic_load(&finished));
	for (k = 0; k < THREADS; k++)
		pthread_join(t[k], NULL);
	lines = count_lines(f->path);
	for (k = 0; k < THREADS; k++) {
		failed += w[k].failed;
		/* Acknowledged means on disk. */
		assert_true(w[k].ok == 0 || w[k].last_ok <= lines);
	}
	assert_true(failed > 0);
	expect_failed_log(f);
	expect_verify(f, f->key, 0, NULL, NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_concurrent_group_commit,
		    setup_p256, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_group_commit,
		    setup_ed25519, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_scan,
		    setup_p256, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail,
		    setup_p256, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_every,
		    setup_p256, teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_every,
		    setup_ed25519, teardown),
		cmocka_unit_test_setup_teardown(test_verify_keys,
		    setup_p256, teardown),
		cmocka_unit_test_setup_teardown(test_verify_keys,
		    setup_ed25519, teardown),
		cmocka_unit_test_setup_teardown(test_verify_bad_lines,
		    setup_p256, teardown),
		cmocka_unit_test_setup_teardown(test_append_rejects,
		    setup_p256, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses,
		    setup_p256, teardown),
		cmocka_unit_test_setup_teardown(test_fail_file_too_large,
		    setup_p256, teardown),
		cmocka_unit_test_setup_teardown(test_fail_under_load,
		    setup_p256, teardown),
		cmocka_unit_test_setup_teardown(test_fail_read_only_fd,
		    setup_p256, teardown),
	};

	return cmocka_run_group_tests_name("audit", tests, NULL, NULL);
}
