/*
 * Helpers shared by the C tests: a throwaway SoftHSM2 token per test
 * program, made by softhsm-config/hsmca-softhsm-token in a temp dir.
 */
#ifndef HSMCA_TESTLIB_H
#define HSMCA_TESTLIB_H

#include <sys/types.h>

#include <stddef.h>

#include "token.h"

struct testtoken {
	char	dir[512];	/* temp dir; the token lives in dir/tok */
	char	module[512];	/* libsofthsm2.so */
	char	uri[512];	/* pkcs11:token=...;serial=... */
	char	pinfile[600];
	char	sopinfile[600];
	char	conf[600];
	char	label[64];
};

/* Makes a token labelled label in a fresh temp dir and points
 * SOFTHSM2_CONF at it; exits the test program on failure. */
void	testlib_token_new(struct testtoken *t, const char *label);
/* A second token in the same SoftHSM2 configuration. */
void	testlib_token_add(struct testtoken *t, const char *label,
	    const char *so_pin, const char *pin);
void	testlib_token_remove_dir(struct testtoken *t);
int	testlib_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Opens and logs in with the test token's PIN file. */
struct token *testlib_open(struct testtoken *t, const char *module,
	    unsigned int pool, unsigned int call_timeout_ms);
/* Reads the whole PIN file into buf (for tests that write PINs). */
void	testlib_read_pin(const char *path, char *buf, size_t len);
/* Signs and verifies once; returns the token_sign result (0 on a valid
 * signature, TOKEN_ERR_SELFTEST if it did not verify). */
int	testlib_sign_verify(struct token_key *key);
double	testlib_now(void);
/* Replaces path with content and gives it mode (chmod, not umask). */
void	testlib_write_file(const char *path, const char *content, mode_t mode);

#endif
