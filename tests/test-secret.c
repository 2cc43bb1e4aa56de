/*
 * Unit tests that need no token: secrets in memory, error names, key
 * type names.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "token.h"

static void
test_secret_new_limits(void **state)
{
	struct secret *s;

	(void)state;
	assert_int_equal(secret_new(0, &s), TOKEN_ERR_INVALID);
	assert_null(s);
	assert_int_equal(secret_new(1u << 20, &s), TOKEN_ERR_INVALID);
	assert_int_equal(secret_new(64, &s), 0);
	assert_int_equal(secret_len(s), 0);
	secret_free(s);
	secret_free(NULL);
}

static void
test_strerror_distinct(void **state)
{
	int a, b;

	(void)state;
	/* Every error has its own text: an operator can tell them apart. */
	for (a = TOKEN_ERR_CRYPTO; a <= 0; a++) {
		assert_string_not_equal(token_strerror(a), "unknown error");
		for (b = a + 1; b <= 0; b++)
			assert_string_not_equal(token_strerror(a),
			    token_strerror(b));
	}
	assert_string_equal(token_strerror(12345), "unknown error");
}

static void
test_ckr_names(void **state)
{
	(void)state;
	assert_string_equal(token_ckr_name(CKR_PIN_LOCKED), "CKR_PIN_LOCKED");
	assert_string_equal(token_ckr_name(CKR_DEVICE_REMOVED),
	    "CKR_DEVICE_REMOVED");
	assert_string_equal(token_ckr_name(0x7fffffff), "CKR_(unknown)");
}

static void
test_keytypes(void **state)
{
	static const char *names[] = { "ec-p256", "ec-p384", "rsa-2048",
	    "rsa-3072", "rsa-4096", "ed25519" };
	enum token_keytype t;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		assert_int_equal(token_keytype_parse(names[i], &t), 0);
		assert_string_equal(token_keytype_name(t), names[i]);
	}
	assert_int_equal(token_keytype_parse("rsa-1024", &t),
	    TOKEN_ERR_INVALID);
	assert_non_null(strstr(token_error_detail(), "rsa-1024"));
	assert_int_equal(token_keytype_parse("", &t), TOKEN_ERR_INVALID);
}

static void
test_detail_truncates(void **state)
{
	char big[2048];

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	token_set_detail("%s", big);
	assert_true(strlen(token_error_detail()) < sizeof(big));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secret_new_limits),
		cmocka_unit_test(test_strerror_distinct),
		cmocka_unit_test(test_ckr_names),
		cmocka_unit_test(test_keytypes),
		cmocka_unit_test(test_detail_truncates),
	};

	return cmocka_run_group_tests_name("secret", tests, NULL, NULL);
}
