/*
 * Shared between the files of the token layer only.
 */
#ifndef HSMCA_TOKEN_INTERNAL_H
#define HSMCA_TOKEN_INTERNAL_H

#include <pthread.h>

#include <p11-kit/uri.h>

#include "token.h"

struct token_session {
	CK_SESSION_HANDLE	 ts_handle;
	int			 ts_open;
	int			 ts_busy;
	int			 ts_poisoned;	/* watchdog gave up on its call */
	unsigned long		 ts_generation;
	uint64_t		 ts_call_start;	/* monotonic ms, 0 when idle */
	const char		*ts_call_name;
};

struct token {
	CK_FUNCTION_LIST	*tk_fl;
	char			*tk_module;
	P11KitUri		*tk_uri;
	CK_SLOT_ID		 tk_slot;
	struct secret		*tk_pin;

	/* Held shared by every session in use, exclusively only to
	 * finalize and re-initialise the module during recovery. */
	pthread_rwlock_t	 tk_module_lock;
	pthread_mutex_t		 tk_login_lock;
	int			 tk_login_error;
	/* Lock order: tk_keys_lock, tk_login_lock, tk_lock. */
	pthread_mutex_t		 tk_keys_lock;	/* tk_keys; held by recovery */

	pthread_mutex_t		 tk_lock;	/* all below */
	pthread_cond_t		 tk_cond;	/* session freed, state changed */
	pthread_cond_t		 tk_wake;	/* recovery and watchdog threads */
	struct token_session	*tk_pool;
	unsigned int		 tk_pool_size;
	CK_SESSION_HANDLE	 tk_login_session;	/* keeps the login alive */
	int			 tk_login_session_open;
	enum token_state	 tk_state;
	unsigned long		 tk_generation;
	char			 tk_down_reason[256];
	unsigned int		 tk_call_timeout_ms;
	unsigned int		 tk_acquire_timeout_ms;
	int			 tk_threads;
	int			 tk_stopping;
	int			 tk_kick;
	int			 tk_attempting;
	unsigned long		 tk_attempts;
	uint64_t		 tk_last_attempt;
	unsigned int		 tk_backoff_ms;
	uint64_t		 tk_next_attempt;
	unsigned long		 tk_downs;
	unsigned long		 tk_recoveries;
	struct token_key	*tk_keys;	/* re-bound after recovery */
	pthread_t		 tk_watchdog_thread;
	pthread_t		 tk_recovery_thread;
};

struct token_key {
	struct token		*k_tok;
	struct token_key	*k_next;
	enum token_keytype	 k_type;
	char			*k_label;
	uint8_t			 k_id[64];
	size_t			 k_idlen;
	char			 k_idhex[129];
	EVP_PKEY		*k_pub;
	CK_OBJECT_HANDLE	 k_priv;
	unsigned long		 k_generation;
	size_t			 k_sigmax;
};

/* token.c */
uint64_t	 token_now_ms(void);
int		 token_session_get(struct token *tok, struct token_key *key,
		    struct token_session **out, CK_OBJECT_HANDLE *handle);
int		 token_session_put(struct token *tok, struct token_session *s,
		    CK_RV last);
int		 token_rv_needs_recovery(CK_RV rv);
int		 token_rv_error(struct token *tok, struct token_session *s,
		    const char *call, CK_RV rv);
void		 token_call_begin(struct token_session *s, const char *name);
void		 token_call_end(struct token_session *s);
void		 token_key_register(struct token *tok, struct token_key *key);
void		 token_key_unregister(struct token *tok, struct token_key *key);

/* keys.c */
int		 token_find_objects(struct token *tok, CK_SESSION_HANDLE sh,
		    CK_ATTRIBUTE *tmpl, CK_ULONG n, CK_OBJECT_HANDLE *found,
		    CK_ULONG max, CK_ULONG *count);
int		 token_key_check_signature(const struct token_key *key,
		    const EVP_MD *md, const uint8_t *data, size_t len,
		    const uint8_t *sig, size_t siglen);
int		 token_key_selftest_session(struct token_key *key,
		    CK_SESSION_HANDLE sh, CK_OBJECT_HANDLE priv);
int		 token_key_rebind(struct token *tok, CK_SESSION_HANDLE sh,
		    struct token_key *key, CK_OBJECT_HANDLE *handle);

/* sign.c */
int		 token_sign_session(struct token_key *key, CK_SESSION_HANDLE sh,
		    CK_OBJECT_HANDLE priv, const EVP_MD *md, const uint8_t *in,
		    size_t inlen, uint8_t *sig, size_t *siglen, CK_RV *rv);

#endif
