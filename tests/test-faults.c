/*
 * Recovery: the token vanishes, is deleted and re-created, is
 * re-initialised; and faults SoftHSM2 never makes by itself, injected by
 * tests/faultmod.c (device errors, a locked PIN, a stalled or corrupted
 * signature).  Every wait here is bounded.
 */
#include "config.h"

#include <sys/stat.h>

#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testlib.h"

static struct testtoken tt;
static char control[700];
static char tokendir[1024];	/* tt.dir/tok/tokens/<uuid> */
static char backup[1100];
static const char *faultmod;
/* Closed by the teardown, so that a failed test does not leave the module
 * initialised for the next one. */
static struct token *cur_tok;
static struct token_key *cur_key;
static int set_rules_quiet(const char *);

static int
teardown(void **state)
{
	(void)state;
	token_key_free(cur_key);
	token_close(cur_tok);
	cur_key = NULL;
	cur_tok = NULL;
	set_rules_quiet("");
	return 0;
}

static int
set_rules_quiet(const char *rules)
{
	char tmp[800];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", control);
	if ((f = fopen(tmp, "w")) == NULL)
		return -1;
	fputs(rules, f);
	fclose(f);
	/* rename: the module notices a new inode at once */
	return rename(tmp, control);
}

static void
set_rules(const char *rules)
{
	assert_int_equal(set_rules_quiet(rules), 0);
}

static struct token_key *
find_key(struct token *tok)
{
	struct token_key *key = NULL;

	assert_int_equal(token_key_find(tok, "pkcs11:object=fk", &key), 0);
	cur_key = key;
	return key;
}

/* Signs and checks that the answer came within max seconds. */
static int
timed_sign(struct token_key *key, double max)
{
	double t0 = testlib_now();
	int ret = testlib_sign_verify(key);

	assert_true(testlib_now() - t0 < max);
	return ret;
}

static struct token *
start(const char *module, unsigned int pool, unsigned int timeout_ms)
{
	struct token *tok = testlib_open(&tt, module, pool, timeout_ms);

	cur_tok = tok;
	assert_int_equal(token_start(tok), 0);
	return tok;
}

static void
restore_backup(void)
{
	assert_int_equal(testlib_run("rm -rf '%s' && cp -a '%s' '%s'",
	    tokendir, backup, tokendir), 0);
}

/*
 * SoftHSM2, measured: when a token's files vanish, the next use of a key
 * handle fails with CKR_OBJECT_HANDLE_INVALID, and a fresh lookup finds the
 * key again in the module's memory and signs with it.  So the token layer
 * recovers (re-binding the key and self-testing it) and the request is
 * served; the same happens when the files come back.  Every answer in
 * between is fast and, when it is a signature, a valid one.
 */
static void
test_files_vanish_and_return(void **state)
{
	struct token *tok = start(NULL, 4, 2000);
	struct token_key *key = find_key(tok);
	unsigned long downs, recoveries;
	char moved[1100];
	int i, ret;

	(void)state;
	assert_int_equal(timed_sign(key, 1.0), 0);
	snprintf(moved, sizeof(moved), "%s.away", tokendir);
	assert_int_equal(rename(tokendir, moved), 0);
	for (i = 0; i < 5; i++) {
		ret = timed_sign(key, 2.0);
		assert_true(ret == 0 || ret == TOKEN_ERR_UNAVAILABLE);
	}
	assert_int_equal(rename(moved, tokendir), 0);
	/* The first request after the token is back is served. */
	assert_int_equal(timed_sign(key, 2.0), 0);
	assert_int_equal(token_get_state(tok), TOKEN_STATE_UP);
	token_counters(tok, &downs, &recoveries);
	assert_true(downs >= 2);
	assert_int_equal(recoveries, downs);
}

static void
test_deleted_and_recreated(void **state)
{
	struct token *tok = start(NULL, 4, 2000);
	struct token_key *key = find_key(tok);
	unsigned long downs, recoveries;
	int ret;

	(void)state;
	assert_int_equal(timed_sign(key, 1.0), 0);
	assert_int_equal(testlib_run("softhsm2-util --delete-token --token %s "
	    ">/dev/null", tt.label), 0);
	ret = timed_sign(key, 2.0);
	assert_true(ret == 0 || ret == TOKEN_ERR_UNAVAILABLE);
	restore_backup();
	assert_int_equal(timed_sign(key, 2.0), 0);
	token_counters(tok, &downs, &recoveries);
	assert_true(downs >= 1);
	assert_true(recoveries >= 1);
}

/* Re-initialising wipes the key: a real outage, answered "unavailable"
 * fast, until the token's backup is restored. */
static void
test_reinitialised(void **state)
{
	struct token *tok = start(NULL, 4, 2000);
	struct token_key *key = find_key(tok);
	char so[128], pin[128];
	int i;

	(void)state;
	testlib_read_pin(tt.sopinfile, so, sizeof(so));
	testlib_read_pin(tt.pinfile, pin, sizeof(pin));
	assert_int_equal(timed_sign(key, 1.0), 0);
	assert_int_equal(testlib_run("softhsm2-util --init-token --token %s "
	    "--label %s --so-pin %s --pin %s >/dev/null", tt.label, tt.label,
	    so, pin), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(timed_sign(key, 2.0), TOKEN_ERR_UNAVAILABLE);
	assert_int_equal(token_get_state(tok), TOKEN_STATE_DOWN);
	restore_backup();
	assert_int_equal(timed_sign(key, 2.0), 0);
	assert_int_equal(token_get_state(tok), TOKEN_STATE_UP);
}

static const char *recoverable[] = {
	"CKR_DEVICE_ERROR", "CKR_DEVICE_REMOVED", "CKR_TOKEN_NOT_PRESENT",
	"CKR_SESSION_HANDLE_INVALID", "CKR_OBJECT_HANDLE_INVALID",
	"CKR_USER_NOT_LOGGED_IN", "CKR_SESSION_CLOSED", "CKR_GENERAL_ERROR",
};
#define NRECOVERABLE (sizeof(recoverable) / sizeof(recoverable[0]))

/* One fault: recovered behind the request, which gets its signature. */
static void
test_each_fault_absorbed(void **state)
{
	struct token *tok;
	struct token_key *key;
	char rule[128];
	unsigned long downs, recoveries;
	size_t i;

	(void)state;
	set_rules("");
	tok = start(faultmod, 2, 2000);
	key = find_key(tok);
	for (i = 0; i < NRECOVERABLE; i++) {
		snprintf(rule, sizeof(rule), "fail C_Sign 1 %s\n",
		    recoverable[i]);
		set_rules(rule);
		assert_int_equal(timed_sign(key, 2.0), 0);
	}
	token_counters(tok, &downs, &recoveries);
	assert_int_equal(downs, NRECOVERABLE);
	assert_int_equal(recoveries, NRECOVERABLE);
}

/* The fault persists (the request and every recovery self-test fail): the
 * request is answered "unavailable"; once the fault is gone, the next one
 * is served without a restart. */
static void
test_each_fault_unavailable_then_recovered(void **state)
{
	struct token *tok;
	struct token_key *key;
	char rule[128];
	size_t i;

	(void)state;
	set_rules("");
	tok = start(faultmod, 2, 2000);
	key = find_key(tok);
	for (i = 0; i < NRECOVERABLE; i++) {
		snprintf(rule, sizeof(rule), "fail C_Sign 1 %s *\n",
		    recoverable[i]);
		set_rules(rule);
		assert_int_equal(timed_sign(key, 2.0), TOKEN_ERR_UNAVAILABLE);
		set_rules("");
		assert_int_equal(timed_sign(key, 2.0), 0);
	}
}

static void
test_other_error_is_not_an_outage(void **state)
{
	struct token *tok;
	struct token_key *key;

	(void)state;
	set_rules("");
	tok = start(faultmod, 2, 2000);
	key = find_key(tok);
	set_rules("fail C_Sign 1 CKR_FUNCTION_FAILED\n");
	assert_int_equal(timed_sign(key, 1.0), TOKEN_ERR_FAILED);
	assert_int_equal(token_get_state(tok), TOKEN_STATE_UP);
	assert_int_equal(timed_sign(key, 1.0), 0);
	set_rules("");
}

static void
test_long_outage_fails_fast(void **state)
{
	struct token *tok;
	struct token_key *key;
	double t0;
	int i;

	(void)state;
	set_rules("");
	tok = start(faultmod, 2, 2000);
	key = find_key(tok);
	set_rules("fail C_Sign 1 CKR_DEVICE_ERROR *\n");
	t0 = testlib_now();
	for (i = 0; i < 20; i++)
		assert_int_equal(timed_sign(key, 2.0), TOKEN_ERR_UNAVAILABLE);
	/* Twenty requests, each bounded; together well under their sum of
	 * timeouts because each waits only for one recovery attempt. */
	assert_true(testlib_now() - t0 < 10.0);
	set_rules("");
	assert_int_equal(timed_sign(key, 2.0), 0);
}

struct stalled {
	struct token_key	*key;
	int			 ret;
	double			 took;
};

static void *
stalled_main(void *arg)
{
	struct stalled *s = arg;
	double t0 = testlib_now();

	s->ret = testlib_sign_verify(s->key);
	s->took = testlib_now() - t0;
	return NULL;
}

static void
test_stalled_sign(void **state)
{
	struct token *tok;
	struct token_key *key;
	struct stalled st;
	pthread_t th;
	unsigned long downs, recoveries;

	(void)state;
	set_rules("");
	tok = start(faultmod, 2, 300);
	key = find_key(tok);
	set_rules("stall C_Sign 1 2500\n");
	st.key = key;
	assert_int_equal(pthread_create(&th, NULL, stalled_main, &st), 0);
	usleep(800 * 1000);
	/* The watchdog gave up on the stalled call; others are served (or
	 * refused) at once rather than queueing behind it. */
	token_counters(tok, &downs, &recoveries);
	assert_int_equal(downs, 1);
	assert_int_equal(timed_sign(key, 1.0), 0);
	pthread_join(th, NULL);
	/* The late answer of the stalled call is not used. */
	assert_int_equal(st.ret, TOKEN_ERR_UNAVAILABLE);
	assert_true(st.took >= 2.0);
	assert_int_equal(timed_sign(key, 1.0), 0);
	set_rules("");
}

static void
test_corrupt_signature_detected(void **state)
{
	struct token *tok;
	struct token_key *key;

	(void)state;
	set_rules("");
	tok = start(faultmod, 2, 2000);
	key = find_key(tok);
	set_rules("corrupt C_Sign 1\n");
	assert_int_equal(token_key_selftest(key), TOKEN_ERR_SELFTEST);
	set_rules("corrupt C_Sign 1\n# again\n");
	assert_int_equal(testlib_sign_verify(key), TOKEN_ERR_SELFTEST);
	set_rules("");
	assert_int_equal(testlib_sign_verify(key), 0);
}

static void
test_pin_locked(void **state)
{
	struct token_config tc;
	struct token *tok = NULL;
	struct secret *pin;

	(void)state;
	set_rules("fail C_Login 1 CKR_PIN_LOCKED\n");
	memset(&tc, 0, sizeof(tc));
	tc.module = faultmod;
	tc.uri = tt.uri;
	assert_int_equal(token_open(&tc, &tok), 0);
	cur_tok = tok;
	assert_int_equal(secret_read_file(tt.pinfile, &pin), 0);
	assert_int_equal(token_login(tok, pin), TOKEN_ERR_PIN_LOCKED);
	assert_int_equal(token_get_state(tok), TOKEN_STATE_PIN_FAILED);
	/* The rule would let a second C_Login through: it is never made. */
	assert_int_equal(secret_read_file(tt.pinfile, &pin), 0);
	assert_int_equal(token_login(tok, pin), TOKEN_ERR_PIN_LOCKED);
}

static void
test_pin_refused_in_recovery_not_retried(void **state)
{
	struct token *tok;
	struct token_key *key;

	(void)state;
	set_rules("");
	tok = start(faultmod, 2, 2000);
	key = find_key(tok);
	/* Down by a device error; the light recovery cannot open a session,
	 * so the module is re-initialised and must log in again, and that
	 * login is refused once. */
	set_rules("fail C_Sign 1 CKR_DEVICE_ERROR\n"
	    "fail C_OpenSession 1 CKR_DEVICE_ERROR\n"
	    "fail C_Login 1 CKR_PIN_INCORRECT\n");
	/* The request waits for that recovery and reports its verdict. */
	assert_int_equal(timed_sign(key, 2.0), TOKEN_ERR_PIN_INCORRECT);
	assert_int_equal(token_get_state(tok), TOKEN_STATE_PIN_FAILED);
	assert_int_equal(timed_sign(key, 0.5), TOKEN_ERR_PIN_INCORRECT);
	/* A retry would now succeed (the rule fails only the first login):
	 * the state staying PIN_FAILED proves there was none. */
	usleep(1000 * 1000);
	assert_int_equal(token_get_state(tok), TOKEN_STATE_PIN_FAILED);
	set_rules("");
}

static void
find_tokendir(void)
{
	char dir[700];
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/tok/tokens", tt.dir);
	if ((d = opendir(dir)) == NULL)
		exit(99);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(tokendir, sizeof(tokendir), "%s/%s", dir, de->d_name);
		break;
	}
	closedir(d);
	snprintf(backup, sizeof(backup), "%s/token-backup", tt.dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_files_vanish_and_return, teardown),
		cmocka_unit_test_teardown(test_deleted_and_recreated, teardown),
		cmocka_unit_test_teardown(test_reinitialised, teardown),
		cmocka_unit_test_teardown(test_each_fault_absorbed, teardown),
		cmocka_unit_test_teardown(test_each_fault_unavailable_then_recovered, teardown),
		cmocka_unit_test_teardown(test_other_error_is_not_an_outage, teardown),
		cmocka_unit_test_teardown(test_long_outage_fails_fast, teardown),
		cmocka_unit_test_teardown(test_stalled_sign, teardown),
		cmocka_unit_test_teardown(test_corrupt_signature_detected, teardown),
		cmocka_unit_test_teardown(test_pin_locked, teardown),
		cmocka_unit_test_teardown(test_pin_refused_in_recovery_not_retried, teardown),
	};
	struct token *tok;
	struct token_key *key;
	int ret;

	if ((faultmod = getenv("HSMCA_FAULTMOD")) == NULL ||
	    access(faultmod, R_OK) != 0) {
		printf("Bail out! HSMCA_FAULTMOD not set or unreadable\n");
		return 99;
	}
	testlib_token_new(&tt, "faults");
	snprintf(control, sizeof(control), "%s/faults.control", tt.dir);
	setenv("HSMCA_FAULT_CONTROL", control, 1);
	if (getenv("HSMCA_FAULT_MODULE") == NULL)
		setenv("HSMCA_FAULT_MODULE", tt.module, 1);

	/* One key, then a copy of the token's files to restore from. */
	tok = testlib_open(&tt, NULL, 1, 0);
	if (token_key_generate(tok, TOKEN_KEY_EC_P256, "fk", &key) != 0) {
		printf("Bail out! key generation: %s\n", token_error_detail());
		return 99;
	}
	token_key_free(key);
	token_close(tok);
	find_tokendir();
	if (testlib_run("cp -a '%s' '%s'", tokendir, backup) != 0)
		return 99;

	ret = cmocka_run_group_tests_name("faults", tests, NULL, NULL);
	testlib_token_remove_dir(&tt);
	return ret;
}
