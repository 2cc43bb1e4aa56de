/*
 * hsmca token layer: the only code that talks PKCS#11.
 *
 * Every function returns 0 on success or a negative TOKEN_ERR_* code; the
 * code says what kind of failure it was (the caller's decision), and
 * token_error_detail() gives this thread's last human-readable detail (the
 * operator's).  No detail string ever contains a PIN or key material.
 */
#ifndef HSMCA_TOKEN_H
#define HSMCA_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

enum token_error {
	TOKEN_OK = 0,
	TOKEN_ERR_INVALID = -1,		/* bad argument, URI or option */
	TOKEN_ERR_NOMEM = -2,
	TOKEN_ERR_MODULE = -3,		/* module cannot be loaded or initialised */
	TOKEN_ERR_NO_TOKEN = -4,	/* no initialised token matches the URI */
	TOKEN_ERR_AMBIGUOUS_TOKEN = -5,	/* more than one token matches */
	TOKEN_ERR_PIN_FILE = -6,	/* PIN file unreadable, unsafe or malformed */
	TOKEN_ERR_PIN_INCORRECT = -7,
	TOKEN_ERR_PIN_LOCKED = -8,	/* locked, or one more try would lock it */
	TOKEN_ERR_NOT_LOGGED_IN = -9,
	TOKEN_ERR_NO_KEY = -10,		/* no key matches */
	TOKEN_ERR_AMBIGUOUS_KEY = -11,	/* more than one key matches */
	TOKEN_ERR_LABEL_EXISTS = -12,	/* key generation: label already used */
	TOKEN_ERR_UNSUPPORTED = -13,	/* key type or mechanism not offered */
	TOKEN_ERR_UNAVAILABLE = -14,	/* token down or busy; recovery runs */
	TOKEN_ERR_SELFTEST = -15,	/* signature made by the token does not verify */
	TOKEN_ERR_MISMATCH = -16,	/* token key and certificate disagree */
	TOKEN_ERR_FAILED = -17,		/* any other token error (detail names the CKR) */
	TOKEN_ERR_CRYPTO = -18,		/* OpenSSL failure */
};

enum token_keytype {
	TOKEN_KEY_NONE = 0,
	TOKEN_KEY_EC_P256,
	TOKEN_KEY_EC_P384,
	TOKEN_KEY_RSA_2048,
	TOKEN_KEY_RSA_3072,
	TOKEN_KEY_RSA_4096,
	TOKEN_KEY_ED25519,
};

struct secret;		/* locked, non-dumpable memory, wiped on free */
struct token;		/* a module, one token in it, a session pool */
struct token_key;	/* a private key in that token, bound by public key */

struct token_config {
	const char *module;		/* path to a module, or a p11-kit module name */
	const char *uri;		/* pkcs11: URI naming the token */
	unsigned int pool_size;		/* sessions; 0 means 4 */
	unsigned int call_timeout_ms;	/* watchdog bound of one token call; 0 means 10000 */
	unsigned int acquire_timeout_ms;/* wait for a free session; 0 means 2000 */
};

enum token_state {
	TOKEN_STATE_UP = 0,
	TOKEN_STATE_DOWN,		/* unavailable, recovering in the background */
	TOKEN_STATE_PIN_FAILED,		/* login refused: never retried automatically */
};

/* errors.c */
const char	*token_strerror(int err);
const char	*token_error_detail(void);
const char	*token_ckr_name(CK_RV rv);
void		 token_set_detail(const char *fmt, ...)
		    __attribute__((format(printf, 1, 2)));

/* secret.c */
/* Reads a PIN from a file that must be a regular file owned by the
 * effective user (or root) and closed to group and other; one trailing
 * newline is stripped.  Returns 0, TOKEN_ERR_PIN_FILE or TOKEN_ERR_NOMEM. */
int		 secret_read_file(const char *path, struct secret **out);
/* Same from an open descriptor (a pipe or a file); the descriptor is not
 * closed.  A regular file is held to the same ownership and mode rules. */
int		 secret_read_fd(int fd, const char *name, struct secret **out);
/* Checks that an open file is owned by the effective user or root and
 * closed to group and other.  Returns 0 or TOKEN_ERR_PIN_FILE. */
int		 secret_check_fd(int fd, const char *path);
int		 secret_new(size_t cap, struct secret **out);
const uint8_t	*secret_data(const struct secret *s);
size_t		 secret_len(const struct secret *s);
void		 secret_free(struct secret *s);

/* token.c */
/* Loads the module, initialises it and finds exactly one token matching
 * config->uri.  Returns 0, TOKEN_ERR_INVALID, TOKEN_ERR_MODULE,
 * TOKEN_ERR_NO_TOKEN, TOKEN_ERR_AMBIGUOUS_TOKEN or TOKEN_ERR_NOMEM. */
int		 token_open(const struct token_config *config, struct token **out);
/* Logs the user in.  Takes ownership of pin (kept in locked memory for
 * re-login after recovery, wiped at token_close).  Logins are serialized;
 * after a refused PIN every later login fails at once without reaching the
 * token, so a wrong PIN cannot be retried into a lockout.  Returns 0,
 * TOKEN_ERR_PIN_INCORRECT, TOKEN_ERR_PIN_LOCKED, TOKEN_ERR_UNAVAILABLE or
 * TOKEN_ERR_FAILED. */
int		 token_login(struct token *tok, struct secret *pin);
/* Starts the watchdog and background recovery threads.  Returns 0 or
 * TOKEN_ERR_NOMEM. */
int		 token_start(struct token *tok);
void		 token_close(struct token *tok);
enum token_state token_get_state(struct token *tok);
/* Times the token went down and came back since token_open. */
void		 token_counters(struct token *tok, unsigned long *downs,
		    unsigned long *recoveries);
CK_FUNCTION_LIST *token_functions(struct token *tok);
CK_SLOT_ID	 token_slot(struct token *tok);

/* keys.c */
int		 token_keytype_parse(const char *name, enum token_keytype *out);
const char	*token_keytype_name(enum token_keytype type);
/* Generates a key pair inside the token: private key CKA_TOKEN, CKA_PRIVATE,
 * CKA_SENSITIVE true and CKA_EXTRACTABLE false, a fresh random CKA_ID.
 * Returns 0, TOKEN_ERR_LABEL_EXISTS, TOKEN_ERR_UNSUPPORTED,
 * TOKEN_ERR_UNAVAILABLE, TOKEN_ERR_NOT_LOGGED_IN or TOKEN_ERR_FAILED. */
int		 token_key_generate(struct token *tok, enum token_keytype type,
		    const char *label, struct token_key **out);
/* Finds the one private key named by a pkcs11: URI (object=, id=).
 * Returns 0, TOKEN_ERR_NO_KEY, TOKEN_ERR_AMBIGUOUS_KEY, TOKEN_ERR_INVALID. */
int		 token_key_find(struct token *tok, const char *uri,
		    struct token_key **out);
/* Finds the token key whose public key equals the certificate's, then the
 * private key by its CKA_ID, and runs token_key_selftest.  Returns 0,
 * TOKEN_ERR_NO_KEY, TOKEN_ERR_AMBIGUOUS_KEY, TOKEN_ERR_SELFTEST, ... */
int		 token_key_bind_cert(struct token *tok, X509 *cert,
		    struct token_key **out);
/* The same for a bare public key (the audit key has no certificate). */
int		 token_key_bind_pubkey(struct token *tok, EVP_PKEY *pub,
		    struct token_key **out);
/* Signs a random challenge with the token and verifies it with the public
 * key in software.  Returns 0, TOKEN_ERR_SELFTEST or a signing error. */
int		 token_key_selftest(struct token_key *key);
EVP_PKEY	*token_key_public(const struct token_key *key);
enum token_keytype token_key_type(const struct token_key *key);
const char	*token_key_label(const struct token_key *key);
/* CKA_ID as lower-case hex, for logs and URIs. */
const char	*token_key_id_hex(const struct token_key *key);
/* Reads a boolean attribute of the private key (tests: CKA_EXTRACTABLE,
 * CKA_NEVER_EXTRACTABLE, CKA_SENSITIVE).  Returns 0 and *value, or an error. */
int		 token_key_get_bool(struct token_key *key, CK_ATTRIBUTE_TYPE type,
		    int *value);
/* Tries to read CKA_VALUE of the private key; returns 0 only if the token
 * revealed it (which must never happen), else the refusal as an error. */
int		 token_key_try_read_value(struct token_key *key, CK_RV *rv);
void		 token_key_free(struct token_key *key);

/* sign.c */
/* Signs a digest (ECDSA, RSA PKCS#1 v1.5 with the DigestInfo for md) or a
 * message (Ed25519, md must be NULL).  The signature is in the encoding X.509
 * uses: DER ECDSA-Sig-Value, PKCS#1 block, raw 64-byte Ed25519.  *siglen is
 * the buffer size on entry.  A call that fails because the token needs
 * recovery is retried once after one recovery attempt (which re-binds and
 * self-tests the key).  Returns 0, TOKEN_ERR_UNAVAILABLE (token down, pool
 * exhausted or call timed out), TOKEN_ERR_INVALID or TOKEN_ERR_FAILED. */
int		 token_sign(struct token_key *key, const EVP_MD *md,
		    const uint8_t *in, size_t inlen, uint8_t *sig, size_t *siglen);
/* Largest signature token_sign can produce for this key. */
size_t		 token_sign_max(const struct token_key *key);

/* evp.c */
/* An EVP_PKEY whose private operations go through token_sign, so that
 * X509_sign and X509_CRL_sign work with the token key.  EC and RSA only.
 * Returns 0, TOKEN_ERR_UNSUPPORTED or TOKEN_ERR_CRYPTO. */
int		 token_key_evp(struct token_key *key, EVP_PKEY **out);

#endif
