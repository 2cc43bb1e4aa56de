/*
 * The token: module loading, finding one token by URI, login, the session
 * pool, the watchdog and background recovery.
 *
 * Concurrency: every operation takes one session from the pool and holds
 * it (and the module lock, shared) for the duration of its calls; nothing
 * serializes the token itself.  The pool mutex is never held across a
 * PKCS#11 call.  Recovery takes the module lock exclusively only when the
 * module has to be finalized and initialised again.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/p11-kit.h>

#include "token-internal.h"

#define TOKEN_DEFAULT_POOL		4
#define TOKEN_MAX_POOL			256
#define TOKEN_DEFAULT_CALL_TIMEOUT	10000
#define TOKEN_DEFAULT_ACQUIRE_TIMEOUT	2000
#define TOKEN_BACKOFF_FIRST_MS		100
#define TOKEN_BACKOFF_MAX_MS		5000
/* A request that finds the token down asks for an attempt of its own, but
 * attempts start at most this often, however many requests ask. */
#define TOKEN_KICK_INTERVAL_MS		20
#define TOKEN_FINALIZE_WAIT_MS		2000
#define TOKEN_MAX_SLOTS			256

static int	 token_find_slot(struct token *, CK_SLOT_ID *);
static int	 token_login_session(struct token *, CK_SLOT_ID,
		    CK_SESSION_HANDLE);
static void	 token_mark_down(struct token *, unsigned long, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

uint64_t
token_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
token_deadline(struct timespec *ts, uint64_t at_ms)
{
	ts->tv_sec = (time_t)(at_ms / 1000);
	ts->tv_nsec = (long)(at_ms % 1000) * 1000000;
}

static int
token_timedwait(pthread_cond_t *cond, pthread_mutex_t *lock, uint64_t at_ms)
{
	struct timespec ts;

	token_deadline(&ts, at_ms);
	return pthread_cond_timedwait(cond, lock, &ts);
}

/*
 * The return values after which a token needs recovery rather than an
 * answer to the caller: the session, the object handles, the login or the
 * device itself are gone.  CKR_GENERAL_ERROR is here too: PKCS#11 says the
 * token is then in an unrecoverable state, and recovery's self-test decides
 * whether it came back.  (SoftHSM2, measured, answers
 * CKR_OBJECT_HANDLE_INVALID when its files vanish or return.)
 */
int
token_rv_needs_recovery(CK_RV rv)
{
	switch (rv) {
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_OBJECT_HANDLE_INVALID:
	case CKR_KEY_HANDLE_INVALID:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_REMOVED:
	case CKR_DEVICE_MEMORY:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_SLOT_ID_INVALID:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
	case CKR_GENERAL_ERROR:
		return 1;
	}
	return 0;
}

/*
 * Turns a failed call into the caller's error, and takes the token down
 * for recovery when the failure says the token is gone.
 */
int
token_rv_error(struct token *tok, struct token_session *s, const char *call,
    CK_RV rv)
{
	if (token_rv_needs_recovery(rv)) {
		token_mark_down(tok, s != NULL ? s->ts_generation :
		    tok->tk_generation, "%s: %s", call, token_ckr_name(rv));
		token_set_detail("%s: %s; token unavailable, recovering", call,
		    token_ckr_name(rv));
		return TOKEN_ERR_UNAVAILABLE;
	}
	token_set_detail("%s: %s", call, token_ckr_name(rv));
	switch (rv) {
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
		return TOKEN_ERR_PIN_INCORRECT;
	case CKR_PIN_LOCKED:
	case CKR_PIN_EXPIRED:
		return TOKEN_ERR_PIN_LOCKED;
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_FUNCTION_NOT_SUPPORTED:
	case CKR_ATTRIBUTE_VALUE_INVALID:
	case CKR_DOMAIN_PARAMS_INVALID:
	case CKR_CURVE_NOT_SUPPORTED:
		return TOKEN_ERR_UNSUPPORTED;
	case CKR_HOST_MEMORY:
		return TOKEN_ERR_NOMEM;
	case CKR_SESSION_COUNT:
	case CKR_OPERATION_ACTIVE:
		return TOKEN_ERR_UNAVAILABLE;
	}
	return TOKEN_ERR_FAILED;
}

static void
token_mark_down(struct token *tok, unsigned long generation, const char *fmt,
    ...)
{
	va_list ap;

	pthread_mutex_lock(&tok->tk_lock);
	if (tok->tk_state == TOKEN_STATE_UP &&
	    generation == tok->tk_generation) {
		tok->tk_state = TOKEN_STATE_DOWN;
		tok->tk_downs++;
		va_start(ap, fmt);
		vsnprintf(tok->tk_down_reason, sizeof(tok->tk_down_reason),
		    fmt, ap);
		va_end(ap);
		tok->tk_backoff_ms = TOKEN_BACKOFF_FIRST_MS;
		tok->tk_next_attempt = 0;
		pthread_cond_broadcast(&tok->tk_wake);
		pthread_cond_broadcast(&tok->tk_cond);
	}
	pthread_mutex_unlock(&tok->tk_lock);
}

void
token_call_begin(struct token_session *s, const char *name)
{
	__atomic_store_n(&s->ts_call_name, name, __ATOMIC_RELAXED);
	__atomic_store_n(&s->ts_call_start, token_now_ms(), __ATOMIC_RELEASE);
}

void
token_call_end(struct token_session *s)
{
	__atomic_store_n(&s->ts_call_start, 0, __ATOMIC_RELEASE);
}

static CK_RV
token_open_session(struct token *tok, CK_SLOT_ID slot, CK_SESSION_HANDLE *sh)
{
	return tok->tk_fl->C_OpenSession(slot,
	    CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, sh);
}

/*
 * Takes a free session, opening it if the pool slot is empty or from an
 * earlier generation, and the current handle of key's private key.  While
 * the token is down, the first wait asks the recovery thread for an attempt
 * that starts after this call, so the first request after the token returns
 * is served.  Bounded by the acquire timeout.
 */
int
token_session_get(struct token *tok, struct token_key *key,
    struct token_session **out, CK_OBJECT_HANDLE *handle)
{
	struct token_session *s = NULL;
	unsigned long generation = 0, target = 0;
	uint64_t deadline;
	CK_SESSION_HANDLE old = 0;
	CK_SLOT_ID slot = 0;
	int old_open = 0, ret = 0;
	unsigned int i;
	CK_RV rv;

	*out = NULL;
	if (handle != NULL)
		*handle = CK_INVALID_HANDLE;
	pthread_mutex_lock(&tok->tk_lock);
	deadline = token_now_ms() + tok->tk_acquire_timeout_ms;
	for (;;) {
		if (tok->tk_stopping) {
			token_set_detail("token is shutting down");
			ret = TOKEN_ERR_UNAVAILABLE;
			goto out;
		}
		if (tok->tk_state == TOKEN_STATE_PIN_FAILED) {
			token_set_detail("login was refused earlier (%s); "
			    "not retrying", token_strerror(tok->tk_login_error));
			ret = tok->tk_login_error;
			goto out;
		}
		if (tok->tk_state == TOKEN_STATE_DOWN) {
			if (!tok->tk_threads) {
				token_set_detail("token unavailable: %s",
				    tok->tk_down_reason);
				ret = TOKEN_ERR_UNAVAILABLE;
				goto out;
			}
			if (target == 0) {
				target = tok->tk_attempts +
				    (tok->tk_attempting ? 2 : 1);
				tok->tk_kick = 1;
				pthread_cond_broadcast(&tok->tk_wake);
			} else if (tok->tk_attempts >= target ||
			    token_now_ms() >= deadline) {
				token_set_detail("token unavailable: %s",
				    tok->tk_down_reason);
				ret = TOKEN_ERR_UNAVAILABLE;
				goto out;
			}
			token_timedwait(&tok->tk_cond, &tok->tk_lock, deadline);
			continue;
		}
		for (i = 0; i < tok->tk_pool_size; i++) {
			if (!tok->tk_pool[i].ts_busy &&
			    !tok->tk_pool[i].ts_poisoned) {
				s = &tok->tk_pool[i];
				break;
			}
		}
		if (s != NULL)
			break;
		if (token_now_ms() >= deadline) {
			token_set_detail("all %u token sessions busy for %u ms",
			    tok->tk_pool_size, tok->tk_acquire_timeout_ms);
			ret = TOKEN_ERR_UNAVAILABLE;
			goto out;
		}
		token_timedwait(&tok->tk_cond, &tok->tk_lock, deadline);
	}
	if (key != NULL) {
		if (key->k_generation != tok->tk_generation) {
			token_set_detail("key %s not bound since recovery",
			    key->k_label);
			ret = TOKEN_ERR_UNAVAILABLE;
			goto out;
		}
		*handle = key->k_priv;
	}
	s->ts_busy = 1;
	generation = tok->tk_generation;
	slot = tok->tk_slot;
	if (s->ts_open && s->ts_generation != generation) {
		old = s->ts_handle;
		old_open = 1;
		s->ts_open = 0;
	}
 out:
	pthread_mutex_unlock(&tok->tk_lock);
	if (ret != 0)
		return ret;

	pthread_rwlock_rdlock(&tok->tk_module_lock);
	if (old_open)
		(void)tok->tk_fl->C_CloseSession(old);
	if (!s->ts_open) {
		token_call_begin(s, "C_OpenSession");
		rv = token_open_session(tok, slot, &s->ts_handle);
		token_call_end(s);
		if (rv != CKR_OK) {
			s->ts_generation = generation;
			ret = token_rv_error(tok, s, "C_OpenSession", rv);
			token_session_put(tok, s, CKR_OK);
			return ret;
		}
		s->ts_open = 1;
		s->ts_generation = generation;
	}
	*out = s;
	return 0;
}

/*
 * Returns a session to the pool.  A session whose last call failed in a
 * way that needs recovery, that the watchdog gave up on, or that belongs to
 * an earlier generation is closed rather than reused: a dead pooled session
 * must never serve a later request.  Returns 1 if the watchdog gave up on
 * the session's call while it ran: its result must not be used.
 */
int
token_session_put(struct token *tok, struct token_session *s, CK_RV last)
{
	int discard, poisoned;

	pthread_mutex_lock(&tok->tk_lock);
	poisoned = s->ts_poisoned;
	discard = s->ts_open && (token_rv_needs_recovery(last) ||
	    s->ts_poisoned || s->ts_generation != tok->tk_generation);
	pthread_mutex_unlock(&tok->tk_lock);
	if (discard) {
		(void)tok->tk_fl->C_CloseSession(s->ts_handle);
		s->ts_open = 0;
	}
	pthread_rwlock_unlock(&tok->tk_module_lock);

	pthread_mutex_lock(&tok->tk_lock);
	s->ts_busy = 0;
	s->ts_poisoned = 0;
	s->ts_call_start = 0;
	pthread_cond_broadcast(&tok->tk_cond);
	pthread_mutex_unlock(&tok->tk_lock);
	return poisoned;
}

static int
token_load_module(struct token *tok, const char *module)
{
	CK_FUNCTION_LIST **all = NULL, *found;
	char *path = NULL;

	/* A name without a slash is a module registered with p11-kit;
	 * resolve it to its file and load that alone, unmanaged, so that
	 * recovery can really finalize and initialise it again. */
	if (strchr(module, '/') == NULL) {
		all = p11_kit_modules_load(NULL, P11_KIT_MODULE_UNMANAGED);
		if (all == NULL ||
		    (found = p11_kit_module_for_name(all, module)) == NULL ||
		    (path = p11_kit_module_get_filename(found)) == NULL) {
			token_set_detail("module %s: not registered with p11-kit",
			    module);
			if (all != NULL)
				p11_kit_modules_release(all);
			return TOKEN_ERR_MODULE;
		}
		p11_kit_modules_release(all);
	} else if ((path = strdup(module)) == NULL)
		return TOKEN_ERR_NOMEM;

	tok->tk_fl = p11_kit_module_load(path, P11_KIT_MODULE_UNMANAGED);
	if (tok->tk_fl == NULL) {
		const char *msg = p11_kit_message();

		token_set_detail("module %s: %s", path,
		    msg != NULL ? msg : "cannot be loaded");
		free(path);
		return TOKEN_ERR_MODULE;
	}
	tok->tk_module = path;
	return 0;
}

static CK_RV
token_initialize(struct token *tok)
{
	CK_C_INITIALIZE_ARGS args;

	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	return tok->tk_fl->C_Initialize(&args);
}

/*
 * Exactly one initialised token must match the URI: two matches are an
 * error, never a guess.
 */
static int
token_find_slot(struct token *tok, CK_SLOT_ID *out)
{
	CK_SLOT_ID slots[TOKEN_MAX_SLOTS];
	CK_ULONG count = TOKEN_MAX_SLOTS, i, matches = 0;
	CK_INFO info;
	CK_SLOT_INFO sinfo;
	CK_TOKEN_INFO tinfo;
	CK_RV rv;

	if ((rv = tok->tk_fl->C_GetInfo(&info)) != CKR_OK)
		return token_rv_error(tok, NULL, "C_GetInfo", rv);
	if (!p11_kit_uri_match_module_info(tok->tk_uri, &info)) {
		token_set_detail("the module does not match the URI");
		return TOKEN_ERR_NO_TOKEN;
	}
	if ((rv = tok->tk_fl->C_GetSlotList(CK_TRUE, slots, &count)) != CKR_OK) {
		if (rv == CKR_BUFFER_TOO_SMALL)
			token_set_detail("more than %d slots", TOKEN_MAX_SLOTS);
		else
			token_set_detail("C_GetSlotList: %s",
			    token_ckr_name(rv));
		return rv == CKR_BUFFER_TOO_SMALL ? TOKEN_ERR_AMBIGUOUS_TOKEN :
		    TOKEN_ERR_NO_TOKEN;
	}
	for (i = 0; i < count && i < TOKEN_MAX_SLOTS; i++) {
		if (tok->tk_fl->C_GetSlotInfo(slots[i], &sinfo) != CKR_OK ||
		    !p11_kit_uri_match_slot_info(tok->tk_uri, &sinfo))
			continue;
		if (tok->tk_fl->C_GetTokenInfo(slots[i], &tinfo) != CKR_OK ||
		    (tinfo.flags & CKF_TOKEN_INITIALIZED) == 0 ||
		    !p11_kit_uri_match_token_info(tok->tk_uri, &tinfo))
			continue;
		if (matches++ == 0)
			*out = slots[i];
	}
	if (matches == 0) {
		token_set_detail("no initialised token matches the URI "
		    "(%lu slots with a token)", (unsigned long)count);
		return TOKEN_ERR_NO_TOKEN;
	}
	if (matches > 1) {
		token_set_detail("%lu tokens match the URI; name one by "
		    "token= and serial=", (unsigned long)matches);
		return TOKEN_ERR_AMBIGUOUS_TOKEN;
	}
	return 0;
}

int
token_open(const struct token_config *config, struct token **out)
{
	struct token *tok;
	CK_RV rv;
	int ret;

	*out = NULL;
	if (config == NULL || config->module == NULL || config->uri == NULL) {
		token_set_detail("module and token URI are required");
		return TOKEN_ERR_INVALID;
	}
	if (config->pool_size > TOKEN_MAX_POOL) {
		token_set_detail("pool size %u larger than %d",
		    config->pool_size, TOKEN_MAX_POOL);
		return TOKEN_ERR_INVALID;
	}
	if ((tok = calloc(1, sizeof(*tok))) == NULL)
		return TOKEN_ERR_NOMEM;
	pthread_rwlock_init(&tok->tk_module_lock, NULL);
	pthread_mutex_init(&tok->tk_login_lock, NULL);
	pthread_mutex_init(&tok->tk_keys_lock, NULL);
	pthread_mutex_init(&tok->tk_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&tok->tk_cond, &ca);
		pthread_cond_init(&tok->tk_wake, &ca);
		pthread_condattr_destroy(&ca);
	}
	tok->tk_state = TOKEN_STATE_DOWN;
	snprintf(tok->tk_down_reason, sizeof(tok->tk_down_reason),
	    "not opened");
	tok->tk_pool_size = config->pool_size ? config->pool_size :
	    TOKEN_DEFAULT_POOL;
	tok->tk_call_timeout_ms = config->call_timeout_ms ?
	    config->call_timeout_ms : TOKEN_DEFAULT_CALL_TIMEOUT;
	tok->tk_acquire_timeout_ms = config->acquire_timeout_ms ?
	    config->acquire_timeout_ms : TOKEN_DEFAULT_ACQUIRE_TIMEOUT;
	if ((tok->tk_pool = calloc(tok->tk_pool_size,
	    sizeof(*tok->tk_pool))) == NULL) {
		ret = TOKEN_ERR_NOMEM;
		goto fail;
	}

	if ((tok->tk_uri = p11_kit_uri_new()) == NULL) {
		ret = TOKEN_ERR_NOMEM;
		goto fail;
	}
	if ((ret = p11_kit_uri_parse(config->uri, P11_KIT_URI_FOR_ANY,
	    tok->tk_uri)) != P11_KIT_URI_OK) {
		token_set_detail("token URI: %s", p11_kit_uri_message(ret));
		ret = TOKEN_ERR_INVALID;
		goto fail;
	}
	if (p11_kit_uri_any_unrecognized(tok->tk_uri)) {
		token_set_detail("token URI has attributes hsmca does not "
		    "know; refusing to ignore them");
		ret = TOKEN_ERR_INVALID;
		goto fail;
	}
	if (p11_kit_uri_get_pin_value(tok->tk_uri) != NULL ||
	    p11_kit_uri_get_pin_source(tok->tk_uri) != NULL) {
		token_set_detail("token URI carries a PIN; give it in a PIN "
		    "file instead");
		ret = TOKEN_ERR_INVALID;
		goto fail;
	}

	if ((ret = token_load_module(tok, config->module)) != 0)
		goto fail;
	if ((rv = token_initialize(tok)) != CKR_OK) {
		token_set_detail("module %s: C_Initialize: %s", tok->tk_module,
		    token_ckr_name(rv));
		p11_kit_module_release(tok->tk_fl);
		tok->tk_fl = NULL;
		ret = TOKEN_ERR_MODULE;
		goto fail;
	}
	if ((ret = token_find_slot(tok, &tok->tk_slot)) != 0)
		goto fail;
	if ((rv = token_open_session(tok, tok->tk_slot,
	    &tok->tk_login_session)) != CKR_OK) {
		ret = token_rv_error(tok, NULL, "C_OpenSession", rv);
		goto fail;
	}
	tok->tk_login_session_open = 1;
	tok->tk_state = TOKEN_STATE_UP;
	tok->tk_generation = 1;
	*out = tok;
	return 0;
 fail:
	token_close(tok);
	return ret;
}

/*
 * Logs in on one session (the login holds for every session of this
 * process).  The caller holds the login lock.  The token's own flags are
 * read first: a locked PIN, or one more failure locking it, stops here
 * without spending a try.
 */
static int
token_login_session(struct token *tok, CK_SLOT_ID slot, CK_SESSION_HANDLE sh)
{
	CK_TOKEN_INFO info;
	CK_RV rv;
	int ret;

	if (tok->tk_login_error != 0) {
		token_set_detail("login was refused earlier; not retrying");
		return tok->tk_login_error;
	}
	if (tok->tk_pin == NULL) {
		token_set_detail("no PIN");
		return TOKEN_ERR_NOT_LOGGED_IN;
	}
	if ((rv = tok->tk_fl->C_GetTokenInfo(slot, &info)) != CKR_OK)
		return token_rv_error(tok, NULL, "C_GetTokenInfo", rv);
	if (info.flags & CKF_USER_PIN_LOCKED) {
		token_set_detail("the token reports the user PIN locked");
		ret = TOKEN_ERR_PIN_LOCKED;
		goto refused;
	}
	if (info.flags & CKF_USER_PIN_FINAL_TRY) {
		token_set_detail("one more wrong PIN would lock the token; "
		    "log in once by hand to reset the counter");
		ret = TOKEN_ERR_PIN_LOCKED;
		goto refused;
	}
	rv = tok->tk_fl->C_Login(sh, CKU_USER,
	    (CK_UTF8CHAR_PTR)(uintptr_t)secret_data(tok->tk_pin),
	    (CK_ULONG)secret_len(tok->tk_pin));
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
		return 0;
	ret = token_rv_error(tok, NULL, "C_Login", rv);
	if (ret != TOKEN_ERR_PIN_INCORRECT && ret != TOKEN_ERR_PIN_LOCKED)
		return ret;
 refused:
	/* Never again with this PIN: a refused PIN retried in a loop is how
	 * an HSM gets locked. */
	tok->tk_login_error = ret;
	secret_free(tok->tk_pin);
	tok->tk_pin = NULL;
	pthread_mutex_lock(&tok->tk_lock);
	tok->tk_state = TOKEN_STATE_PIN_FAILED;
	pthread_cond_broadcast(&tok->tk_cond);
	pthread_mutex_unlock(&tok->tk_lock);
	return ret;
}

int
token_login(struct token *tok, struct secret *pin)
{
	CK_SESSION_HANDLE sh;
	CK_SLOT_ID slot;
	int ret, open;

	pthread_mutex_lock(&tok->tk_login_lock);
	if (tok->tk_login_error != 0) {
		secret_free(pin);
		token_set_detail("login was refused earlier (%s); not retrying",
		    token_strerror(tok->tk_login_error));
		ret = tok->tk_login_error;
		goto out;
	}
	secret_free(tok->tk_pin);
	tok->tk_pin = pin;
	pthread_rwlock_rdlock(&tok->tk_module_lock);
	pthread_mutex_lock(&tok->tk_lock);
	open = tok->tk_login_session_open;
	sh = tok->tk_login_session;
	slot = tok->tk_slot;
	pthread_mutex_unlock(&tok->tk_lock);
	if (!open) {
		token_set_detail("token unavailable; not logged in");
		ret = TOKEN_ERR_UNAVAILABLE;
	} else
		ret = token_login_session(tok, slot, sh);
	pthread_rwlock_unlock(&tok->tk_module_lock);
 out:
	pthread_mutex_unlock(&tok->tk_login_lock);
	return ret;
}

void
token_key_register(struct token *tok, struct token_key *key)
{
	pthread_mutex_lock(&tok->tk_keys_lock);
	pthread_mutex_lock(&tok->tk_lock);
	key->k_next = tok->tk_keys;
	tok->tk_keys = key;
	key->k_generation = tok->tk_generation;
	pthread_mutex_unlock(&tok->tk_lock);
	pthread_mutex_unlock(&tok->tk_keys_lock);
}

void
token_key_unregister(struct token *tok, struct token_key *key)
{
	struct token_key **kp;

	pthread_mutex_lock(&tok->tk_keys_lock);
	pthread_mutex_lock(&tok->tk_lock);
	for (kp = &tok->tk_keys; *kp != NULL; kp = &(*kp)->k_next) {
		if (*kp == key) {
			*kp = key->k_next;
			break;
		}
	}
	pthread_mutex_unlock(&tok->tk_lock);
	pthread_mutex_unlock(&tok->tk_keys_lock);
}

/*
 * One recovery attempt, without finalizing the module: find the token
 * again, open a session, log in if the token forgot us, and re-bind every
 * key by CKA_ID with a sign/verify self-test, so that a re-created token
 * holding other keys under the same IDs is never used.  The caller holds
 * the module lock shared.
 */
static int
token_recover_attempt(struct token *tok)
{
	struct token_key *key;
	CK_OBJECT_HANDLE *handles = NULL;
	CK_SESSION_HANDLE sh, old_login = 0;
	CK_SESSION_INFO si;
	CK_SLOT_ID slot;
	size_t nkeys = 0, i;
	int ret, old_open;
	CK_RV rv;

	if ((ret = token_find_slot(tok, &slot)) != 0)
		return ret;
	if ((rv = token_open_session(tok, slot, &sh)) != CKR_OK) {
		token_set_detail("C_OpenSession: %s", token_ckr_name(rv));
		return TOKEN_ERR_UNAVAILABLE;
	}
	if ((rv = tok->tk_fl->C_GetSessionInfo(sh, &si)) != CKR_OK) {
		token_set_detail("C_GetSessionInfo: %s", token_ckr_name(rv));
		ret = TOKEN_ERR_UNAVAILABLE;
		goto fail;
	}
	if (si.state != CKS_RO_USER_FUNCTIONS &&
	    si.state != CKS_RW_USER_FUNCTIONS) {
		pthread_mutex_lock(&tok->tk_login_lock);
		ret = token_login_session(tok, slot, sh);
		pthread_mutex_unlock(&tok->tk_login_lock);
		if (ret != 0)
			goto fail;
	}

	/* The caller holds tk_keys_lock: the list cannot change under us. */
	for (key = tok->tk_keys; key != NULL; key = key->k_next)
		nkeys++;
	if (nkeys > 0 && (handles = calloc(nkeys, sizeof(*handles))) == NULL) {
		ret = TOKEN_ERR_NOMEM;
		goto fail;
	}
	key = tok->tk_keys;
	for (i = 0; key != NULL && i < nkeys; key = key->k_next, i++)
		if ((ret = token_key_rebind(tok, sh, key, &handles[i])) != 0)
			goto fail;

	pthread_mutex_lock(&tok->tk_lock);
	old_login = tok->tk_login_session;
	old_open = tok->tk_login_session_open;
	tok->tk_login_session = sh;
	tok->tk_login_session_open = 1;
	tok->tk_slot = slot;
	tok->tk_generation++;
	for (key = tok->tk_keys, i = 0; key != NULL && i < nkeys;
	    key = key->k_next, i++) {
		key->k_priv = handles[i];
		key->k_generation = tok->tk_generation;
	}
	pthread_mutex_unlock(&tok->tk_lock);
	/* The new session holds the login; the old one may be dead. */
	if (old_open)
		(void)tok->tk_fl->C_CloseSession(old_login);
	free(handles);
	return 0;
 fail:
	(void)tok->tk_fl->C_CloseSession(sh);
	free(handles);
	return ret;
}

/*
 * Finalizes the module and initialises it again: the only way to see a
 * token that was deleted and re-created, or whose backing store came back,
 * in modules that read their tokens at C_Initialize.  Waits a bounded time
 * for calls in flight; a call stuck in the module forbids it.
 */
static int
token_reinitialize(struct token *tok)
{
	struct timespec ts;
	unsigned int i;
	CK_RV rv;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += TOKEN_FINALIZE_WAIT_MS / 1000;
	if (pthread_rwlock_clockwrlock(&tok->tk_module_lock, CLOCK_MONOTONIC,
	    &ts) != 0) {
		token_set_detail("a token call is still in the module; cannot "
		    "re-initialise it yet");
		return TOKEN_ERR_UNAVAILABLE;
	}
	(void)tok->tk_fl->C_Finalize(NULL);
	rv = token_initialize(tok);
	pthread_mutex_lock(&tok->tk_lock);
	for (i = 0; i < tok->tk_pool_size; i++)
		tok->tk_pool[i].ts_open = 0;
	tok->tk_login_session_open = 0;
	pthread_mutex_unlock(&tok->tk_lock);
	pthread_rwlock_unlock(&tok->tk_module_lock);
	if (rv != CKR_OK) {
		token_set_detail("C_Initialize: %s", token_ckr_name(rv));
		return TOKEN_ERR_UNAVAILABLE;
	}
	return 0;
}

static int
token_recover(struct token *tok)
{
	int ret;

	pthread_mutex_lock(&tok->tk_keys_lock);
	pthread_rwlock_rdlock(&tok->tk_module_lock);
	ret = token_recover_attempt(tok);
	pthread_rwlock_unlock(&tok->tk_module_lock);
	if (ret == 0 || ret == TOKEN_ERR_PIN_INCORRECT ||
	    ret == TOKEN_ERR_PIN_LOCKED)
		goto out;
	if ((ret = token_reinitialize(tok)) != 0)
		goto out;
	pthread_rwlock_rdlock(&tok->tk_module_lock);
	ret = token_recover_attempt(tok);
	pthread_rwlock_unlock(&tok->tk_module_lock);
 out:
	pthread_mutex_unlock(&tok->tk_keys_lock);
	return ret;
}

static void *
token_recovery_main(void *arg)
{
	struct token *tok = arg;
	uint64_t now, at;
	int ret;

	pthread_mutex_lock(&tok->tk_lock);
	while (!tok->tk_stopping) {
		if (tok->tk_state != TOKEN_STATE_DOWN) {
			tok->tk_kick = 0;
			pthread_cond_wait(&tok->tk_wake, &tok->tk_lock);
			continue;
		}
		now = token_now_ms();
		at = tok->tk_kick ? tok->tk_last_attempt +
		    TOKEN_KICK_INTERVAL_MS : tok->tk_next_attempt;
		if (now < at) {
			token_timedwait(&tok->tk_wake, &tok->tk_lock, at);
			continue;
		}
		tok->tk_kick = 0;
		tok->tk_attempting = 1;
		pthread_mutex_unlock(&tok->tk_lock);

		ret = token_recover(tok);

		pthread_mutex_lock(&tok->tk_lock);
		tok->tk_attempting = 0;
		tok->tk_attempts++;
		tok->tk_last_attempt = token_now_ms();
		if (ret == 0) {
			if (tok->tk_state == TOKEN_STATE_DOWN) {
				tok->tk_state = TOKEN_STATE_UP;
				tok->tk_recoveries++;
			}
		} else if (ret == TOKEN_ERR_PIN_INCORRECT ||
		    ret == TOKEN_ERR_PIN_LOCKED) {
			tok->tk_state = TOKEN_STATE_PIN_FAILED;
		} else {
			snprintf(tok->tk_down_reason,
			    sizeof(tok->tk_down_reason), "%s",
			    token_error_detail());
			tok->tk_next_attempt = tok->tk_last_attempt +
			    tok->tk_backoff_ms;
			tok->tk_backoff_ms *= 2;
			if (tok->tk_backoff_ms > TOKEN_BACKOFF_MAX_MS)
				tok->tk_backoff_ms = TOKEN_BACKOFF_MAX_MS;
		}
		pthread_cond_broadcast(&tok->tk_cond);
	}
	pthread_mutex_unlock(&tok->tk_lock);
	return NULL;
}

/*
 * The watchdog: a call that has not returned within the call timeout takes
 * the token down, so every other request fails fast instead of queueing
 * behind it, and its session is never reused.
 */
static void *
token_watchdog_main(void *arg)
{
	struct token *tok = arg;
	struct token_session *s;
	uint64_t now, start, period;
	unsigned int i;

	period = tok->tk_call_timeout_ms / 4;
	if (period < 10)
		period = 10;
	if (period > 250)
		period = 250;
	pthread_mutex_lock(&tok->tk_lock);
	while (!tok->tk_stopping) {
		token_timedwait(&tok->tk_wake, &tok->tk_lock,
		    token_now_ms() + period);
		now = token_now_ms();
		for (i = 0; i < tok->tk_pool_size; i++) {
			s = &tok->tk_pool[i];
			start = __atomic_load_n(&s->ts_call_start,
			    __ATOMIC_ACQUIRE);
			if (!s->ts_busy || s->ts_poisoned || start == 0 ||
			    now - start < tok->tk_call_timeout_ms)
				continue;
			s->ts_poisoned = 1;
			if (tok->tk_state == TOKEN_STATE_UP &&
			    s->ts_generation == tok->tk_generation) {
				tok->tk_state = TOKEN_STATE_DOWN;
				tok->tk_downs++;
				snprintf(tok->tk_down_reason,
				    sizeof(tok->tk_down_reason),
				    "%s did not return within %u ms",
				    __atomic_load_n(&s->ts_call_name,
				    __ATOMIC_RELAXED),
				    tok->tk_call_timeout_ms);
				tok->tk_backoff_ms = TOKEN_BACKOFF_FIRST_MS;
				tok->tk_next_attempt = 0;
				pthread_cond_broadcast(&tok->tk_wake);
				pthread_cond_broadcast(&tok->tk_cond);
			}
		}
	}
	pthread_mutex_unlock(&tok->tk_lock);
	return NULL;
}

int
token_start(struct token *tok)
{
	pthread_mutex_lock(&tok->tk_lock);
	if (tok->tk_threads) {
		pthread_mutex_unlock(&tok->tk_lock);
		return 0;
	}
	tok->tk_backoff_ms = TOKEN_BACKOFF_FIRST_MS;
	if (pthread_create(&tok->tk_recovery_thread, NULL, token_recovery_main,
	    tok) != 0) {
		pthread_mutex_unlock(&tok->tk_lock);
		return TOKEN_ERR_NOMEM;
	}
	if (pthread_create(&tok->tk_watchdog_thread, NULL, token_watchdog_main,
	    tok) != 0) {
		tok->tk_stopping = 1;
		pthread_cond_broadcast(&tok->tk_wake);
		pthread_mutex_unlock(&tok->tk_lock);
		pthread_join(tok->tk_recovery_thread, NULL);
		pthread_mutex_lock(&tok->tk_lock);
		tok->tk_stopping = 0;
		pthread_mutex_unlock(&tok->tk_lock);
		return TOKEN_ERR_NOMEM;
	}
	tok->tk_threads = 1;
	pthread_mutex_unlock(&tok->tk_lock);
	return 0;
}

enum token_state
token_get_state(struct token *tok)
{
	enum token_state state;

	pthread_mutex_lock(&tok->tk_lock);
	state = tok->tk_state;
	pthread_mutex_unlock(&tok->tk_lock);
	return state;
}

void
token_counters(struct token *tok, unsigned long *downs,
    unsigned long *recoveries)
{
	pthread_mutex_lock(&tok->tk_lock);
	*downs = tok->tk_downs;
	*recoveries = tok->tk_recoveries;
	pthread_mutex_unlock(&tok->tk_lock);
}

CK_FUNCTION_LIST *
token_functions(struct token *tok)
{
	return tok->tk_fl;
}

CK_SLOT_ID
token_slot(struct token *tok)
{
	CK_SLOT_ID slot;

	/* Recovery may move the token to another slot. */
	pthread_mutex_lock(&tok->tk_lock);
	slot = tok->tk_slot;
	pthread_mutex_unlock(&tok->tk_lock);
	return slot;
}

void
token_close(struct token *tok)
{
	struct token_key *key, *next;
	unsigned int i;
	int threads;

	if (tok == NULL)
		return;
	pthread_mutex_lock(&tok->tk_lock);
	tok->tk_stopping = 1;
	threads = tok->tk_threads;
	pthread_cond_broadcast(&tok->tk_wake);
	pthread_cond_broadcast(&tok->tk_cond);
	pthread_mutex_unlock(&tok->tk_lock);
	if (threads) {
		pthread_join(tok->tk_recovery_thread, NULL);
		pthread_join(tok->tk_watchdog_thread, NULL);
	}
	if (tok->tk_fl != NULL) {
		/* C_Finalize closes every session and logs out; a call still
		 * stuck in the module is the module's to answer. */
		for (i = 0; tok->tk_pool != NULL && i < tok->tk_pool_size; i++)
			if (tok->tk_pool[i].ts_open && !tok->tk_pool[i].ts_busy)
				(void)tok->tk_fl->C_CloseSession(
				    tok->tk_pool[i].ts_handle);
		if (tok->tk_login_session_open)
			(void)tok->tk_fl->C_Logout(tok->tk_login_session);
		(void)tok->tk_fl->C_Finalize(NULL);
		p11_kit_module_release(tok->tk_fl);
	}
	/* Keys not freed by their owners are unlinked so none dangles. */
	for (key = tok->tk_keys; key != NULL; key = next) {
		next = key->k_next;
		key->k_tok = NULL;
		key->k_next = NULL;
	}
	secret_free(tok->tk_pin);
	if (tok->tk_uri != NULL)
		p11_kit_uri_free(tok->tk_uri);
	free(tok->tk_module);
	free(tok->tk_pool);
	pthread_cond_destroy(&tok->tk_cond);
	pthread_cond_destroy(&tok->tk_wake);
	pthread_mutex_destroy(&tok->tk_lock);
	pthread_mutex_destroy(&tok->tk_login_lock);
	pthread_mutex_destroy(&tok->tk_keys_lock);
	pthread_rwlock_destroy(&tok->tk_module_lock);
	free(tok);
}
