/*
 * faultmod: a PKCS#11 module that forwards every call to a real module
 * (SoftHSM2 by default) and, on command, injects the faults a real token
 * produces but SoftHSM2 never does: failures, stalls, bad signatures.
 * The control syntax is described in faultmod.md.
 */

#include <sys/types.h>
#include <sys/stat.h>

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

#define FAULTMOD_DEFAULT_MODULE	"/usr/lib/softhsm/libsofthsm2.so"
#define FAULTMOD_MAX_RULES	64
#define FAULTMOD_MAX_LINE	512
#define FAULTMOD_MAX_STALL	3600000UL	/* ms; a typo must not hang CI */
#define FAULTMOD_WS		" \t\r\n\v\f"

/* In struct ck_function_list order. */
#define FAULTMOD_FUNCS							\
	X(C_Initialize) X(C_Finalize) X(C_GetInfo) X(C_GetFunctionList)	\
	X(C_GetSlotList) X(C_GetSlotInfo) X(C_GetTokenInfo)		\
	X(C_GetMechanismList) X(C_GetMechanismInfo) X(C_InitToken)	\
	X(C_InitPIN) X(C_SetPIN) X(C_OpenSession) X(C_CloseSession)	\
	X(C_CloseAllSessions) X(C_GetSessionInfo)			\
	X(C_GetOperationState) X(C_SetOperationState) X(C_Login)	\
	X(C_Logout) X(C_CreateObject) X(C_CopyObject)			\
	X(C_DestroyObject) X(C_GetObjectSize) X(C_GetAttributeValue)	\
	X(C_SetAttributeValue) X(C_FindObjectsInit) X(C_FindObjects)	\
	X(C_FindObjectsFinal) X(C_EncryptInit) X(C_Encrypt)		\
	X(C_EncryptUpdate) X(C_EncryptFinal) X(C_DecryptInit)		\
	X(C_Decrypt) X(C_DecryptUpdate) X(C_DecryptFinal)		\
	X(C_DigestInit) X(C_Digest) X(C_DigestUpdate) X(C_DigestKey)	\
	X(C_DigestFinal) X(C_SignInit) X(C_Sign) X(C_SignUpdate)	\
	X(C_SignFinal) X(C_SignRecoverInit) X(C_SignRecover)		\
	X(C_VerifyInit) X(C_Verify) X(C_VerifyUpdate) X(C_VerifyFinal)	\
	X(C_VerifyRecoverInit) X(C_VerifyRecover)			\
	X(C_DigestEncryptUpdate) X(C_DecryptDigestUpdate)		\
	X(C_SignEncryptUpdate) X(C_DecryptVerifyUpdate)			\
	X(C_GenerateKey) X(C_GenerateKeyPair) X(C_WrapKey)		\
	X(C_UnwrapKey) X(C_DeriveKey) X(C_SeedRandom)			\
	X(C_GenerateRandom) X(C_GetFunctionStatus) X(C_CancelFunction)	\
	X(C_WaitForSlotEvent)

enum faultmod_func {
#define X(n) FAULTMOD_##n,
	FAULTMOD_FUNCS
#undef X
	FAULTMOD_NFUNCS
};

_Static_assert(FAULTMOD_NFUNCS == 68, "PKCS#11 2.40 has 68 functions");

static const char *const faultmod_func_names[FAULTMOD_NFUNCS] = {
#define X(n) #n,
	FAULTMOD_FUNCS
#undef X
};

#define R(n) { #n, n }
static const struct {
	const char	*name;
	CK_RV		 rv;
} faultmod_ckr_names[] = {
	R(CKR_OK), R(CKR_CANCEL), R(CKR_HOST_MEMORY), R(CKR_SLOT_ID_INVALID),
	R(CKR_GENERAL_ERROR), R(CKR_FUNCTION_FAILED), R(CKR_ARGUMENTS_BAD),
	R(CKR_NO_EVENT), R(CKR_NEED_TO_CREATE_THREADS), R(CKR_CANT_LOCK),
	R(CKR_ATTRIBUTE_READ_ONLY), R(CKR_ATTRIBUTE_SENSITIVE),
	R(CKR_ATTRIBUTE_TYPE_INVALID), R(CKR_ATTRIBUTE_VALUE_INVALID),
	R(CKR_ACTION_PROHIBITED), R(CKR_DATA_INVALID), R(CKR_DATA_LEN_RANGE),
	R(CKR_DEVICE_ERROR), R(CKR_DEVICE_MEMORY), R(CKR_DEVICE_REMOVED),
	R(CKR_ENCRYPTED_DATA_INVALID), R(CKR_ENCRYPTED_DATA_LEN_RANGE),
	R(CKR_FUNCTION_CANCELED), R(CKR_FUNCTION_NOT_PARALLEL),
	R(CKR_FUNCTION_NOT_SUPPORTED), R(CKR_KEY_HANDLE_INVALID),
	R(CKR_KEY_SIZE_RANGE), R(CKR_KEY_TYPE_INCONSISTENT),
	R(CKR_KEY_NOT_NEEDED), R(CKR_KEY_CHANGED), R(CKR_KEY_NEEDED),
	R(CKR_KEY_INDIGESTIBLE), R(CKR_KEY_FUNCTION_NOT_PERMITTED),
	R(CKR_KEY_NOT_WRAPPABLE), R(CKR_KEY_UNEXTRACTABLE),
	R(CKR_MECHANISM_INVALID), R(CKR_MECHANISM_PARAM_INVALID),
	R(CKR_OBJECT_HANDLE_INVALID), R(CKR_OPERATION_ACTIVE),
	R(CKR_OPERATION_NOT_INITIALIZED), R(CKR_PIN_INCORRECT),
	R(CKR_PIN_INVALID), R(CKR_PIN_LEN_RANGE), R(CKR_PIN_EXPIRED),
	R(CKR_PIN_LOCKED), R(CKR_SESSION_CLOSED), R(CKR_SESSION_COUNT),
	R(CKR_SESSION_HANDLE_INVALID), R(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
	R(CKR_SESSION_READ_ONLY), R(CKR_SESSION_EXISTS),
	R(CKR_SESSION_READ_ONLY_EXISTS), R(CKR_SESSION_READ_WRITE_SO_EXISTS),
	R(CKR_SIGNATURE_INVALID), R(CKR_SIGNATURE_LEN_RANGE),
	R(CKR_TEMPLATE_INCOMPLETE), R(CKR_TEMPLATE_INCONSISTENT),
	R(CKR_TOKEN_NOT_PRESENT), R(CKR_TOKEN_NOT_RECOGNIZED),
	R(CKR_TOKEN_WRITE_PROTECTED), R(CKR_UNWRAPPING_KEY_SIZE_RANGE),
	R(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT), R(CKR_USER_ALREADY_LOGGED_IN),
	R(CKR_USER_NOT_LOGGED_IN), R(CKR_USER_PIN_NOT_INITIALIZED),
	R(CKR_USER_TYPE_INVALID), R(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
	R(CKR_USER_TOO_MANY_TYPES), R(CKR_WRAPPED_KEY_INVALID),
	R(CKR_WRAPPED_KEY_LEN_RANGE), R(CKR_WRAPPING_KEY_HANDLE_INVALID),
	R(CKR_WRAPPING_KEY_SIZE_RANGE), R(CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
	R(CKR_RANDOM_SEED_NOT_SUPPORTED), R(CKR_RANDOM_NO_RNG),
	R(CKR_DOMAIN_PARAMS_INVALID), R(CKR_CURVE_NOT_SUPPORTED),
	R(CKR_BUFFER_TOO_SMALL), R(CKR_SAVED_STATE_INVALID),
	R(CKR_INFORMATION_SENSITIVE), R(CKR_STATE_UNSAVEABLE),
	R(CKR_CRYPTOKI_NOT_INITIALIZED), R(CKR_CRYPTOKI_ALREADY_INITIALIZED),
	R(CKR_MUTEX_BAD), R(CKR_MUTEX_NOT_LOCKED), R(CKR_NEW_PIN_MODE),
	R(CKR_NEXT_OTP), R(CKR_EXCEEDED_MAX_ITERATIONS),
	R(CKR_FIPS_SELF_TEST_FAILED), R(CKR_LIBRARY_LOAD_FAILED),
	R(CKR_PIN_TOO_WEAK), R(CKR_PUBLIC_KEY_INVALID),
	R(CKR_FUNCTION_REJECTED),
};
#undef R

enum faultmod_kind {
	FAULTMOD_FAIL,
	FAULTMOD_STALL,
	FAULTMOD_CORRUPT,
};

struct faultmod_rule {
	enum faultmod_kind	 kind;
	int			 func;
	unsigned long		 nth;
	unsigned long		 count;		/* 0: every call from nth on */
	unsigned long		 arg;		/* CK_RV or milliseconds */
	unsigned long		 calls;
};

/* What one intercepted call has to do, decided under the lock. */
struct faultmod_act {
	CK_FUNCTION_LIST	*real;
	CK_RV			 rv;
	int			 fail;
	int			 corrupt;
	unsigned long		 stall;
};

static pthread_mutex_t		 faultmod_mtx = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST		*faultmod_real;
static CK_FUNCTION_LIST		 faultmod_list;

/* Rules [0, nenv) come from HSMCA_FAULT, [nenv, nrules) from the file. */
static struct faultmod_rule	 faultmod_rules[FAULTMOD_MAX_RULES];
static size_t			 faultmod_nrules;
static size_t			 faultmod_nenv;
static int			 faultmod_started;
static char			 faultmod_ctl[PATH_MAX];
static int			 faultmod_ctl_present;
static struct stat		 faultmod_ctl_st;

static void
faultmod_warn(const char *src, unsigned long lineno, const char *rule,
    const char *why)
{
	char		 buf[81];
	const char	*more;
	size_t		 i;

	/* Keep the diagnostic on one short line whatever the input holds. */
	for (i = 0; rule[i] != '\0' && i < sizeof(buf) - 1; i++)
		buf[i] = (rule[i] >= 0x20 && rule[i] < 0x7f) ? rule[i] : '?';
	buf[i] = '\0';
	more = rule[i] != '\0' ? "..." : "";
	if (lineno > 0)
		fprintf(stderr, "faultmod: %s:%lu: %s: \"%s\"%s\n",
		    src, lineno, why, buf, more);
	else
		fprintf(stderr, "faultmod: %s: %s: \"%s\"%s\n",
		    src, why, buf, more);
}

static int
faultmod_ulong(const char *s, unsigned long *v)
{
	char	*ep;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	*v = strtoul(s, &ep, 10);
	if (*ep != '\0' || errno == ERANGE)
		return -1;
	return 0;
}

static int
faultmod_ckr(const char *s, CK_RV *rv)
{
	char	*ep;
	size_t	 i;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		if (s[2] == '\0' || strspn(s + 2,
		    "0123456789abcdefABCDEF") != strlen(s + 2))
			return -1;
		errno = 0;
		*rv = strtoul(s + 2, &ep, 16);
		if (*ep != '\0' || errno == ERANGE)
			return -1;
		return 0;
	}
	for (i = 0; i < sizeof(faultmod_ckr_names) /
	    sizeof(faultmod_ckr_names[0]); i++) {
		if (strcmp(s, faultmod_ckr_names[i].name) == 0) {
			*rv = faultmod_ckr_names[i].rv;
			return 0;
		}
	}
	return -1;
}

static int
faultmod_funcidx(const char *s)
{
	int	 i;

	for (i = 0; i < FAULTMOD_NFUNCS; i++)
		if (strcmp(s, faultmod_func_names[i]) == 0)
			return i;
	return -1;
}

/* Parse one rule (at most FAULTMOD_MAX_LINE bytes) and append it. */
static void
faultmod_parse(const char *line, const char *src, unsigned long lineno)
{
	char			 buf[FAULTMOD_MAX_LINE + 1], *tok[6], *p, *last;
	struct faultmod_rule	 r;
	const char		*why = "bad rule";
	size_t			 ntok = 0, want;

	if (strlen(line) > FAULTMOD_MAX_LINE) {
		faultmod_warn(src, lineno, line, "rule too long");
		return;
	}
	memcpy(buf, line, strlen(line) + 1);
	buf[strcspn(buf, "#")] = '\0';
	for (p = strtok_r(buf, FAULTMOD_WS, &last); p != NULL;
	    p = strtok_r(NULL, FAULTMOD_WS, &last)) {
		if (ntok == sizeof(tok) / sizeof(tok[0])) {
			why = "too many fields";
			goto bad;
		}
		tok[ntok++] = p;
	}
	if (ntok == 0)
		return;

	memset(&r, 0, sizeof(r));
	if (strcmp(tok[0], "fail") == 0) {
		r.kind = FAULTMOD_FAIL;
		want = 4;
	} else if (strcmp(tok[0], "stall") == 0) {
		r.kind = FAULTMOD_STALL;
		want = 4;
	} else if (strcmp(tok[0], "corrupt") == 0) {
		r.kind = FAULTMOD_CORRUPT;
		want = 3;
	} else {
		why = "unknown action";
		goto bad;
	}
	if (ntok != want && ntok != want + 1) {
		why = "wrong number of fields";
		goto bad;
	}
	if ((r.func = faultmod_funcidx(tok[1])) == -1) {
		why = "unknown function";
		goto bad;
	}
	if (faultmod_ulong(tok[2], &r.nth) == -1 || r.nth == 0) {
		why = "bad call number";
		goto bad;
	}
	switch (r.kind) {
	case FAULTMOD_FAIL:
		if (faultmod_ckr(tok[3], &r.arg) == -1) {
			why = "unknown return code";
			goto bad;
		}
		break;
	case FAULTMOD_STALL:
		if (faultmod_ulong(tok[3], &r.arg) == -1 ||
		    r.arg > FAULTMOD_MAX_STALL) {
			why = "bad milliseconds";
			goto bad;
		}
		break;
	case FAULTMOD_CORRUPT:
		if (r.func != FAULTMOD_C_Sign && r.func != FAULTMOD_C_SignFinal) {
			why = "corrupt needs C_Sign or C_SignFinal";
			goto bad;
		}
		break;
	}
	r.count = 1;
	if (ntok == want + 1) {
		if (strcmp(tok[want], "*") == 0)
			r.count = 0;
		else if (faultmod_ulong(tok[want], &r.count) == -1 ||
		    r.count == 0) {
			why = "bad count";
			goto bad;
		}
	}
	if (faultmod_nrules == FAULTMOD_MAX_RULES) {
		why = "too many rules";
		goto bad;
	}
	faultmod_rules[faultmod_nrules++] = r;
	return;
 bad:
	faultmod_warn(src, lineno, line, why);
}

static void
faultmod_load_env(void)
{
	const char	*s, *e;
	char		 buf[FAULTMOD_MAX_LINE + 1];
	size_t		 len;

	if ((s = getenv("HSMCA_FAULT_CONTROL")) != NULL && *s != '\0') {
		if (strlen(s) >= sizeof(faultmod_ctl))
			faultmod_warn("HSMCA_FAULT_CONTROL", 0, s,
			    "path too long, ignored");
		else
			memcpy(faultmod_ctl, s, strlen(s) + 1);
	}
	if ((s = getenv("HSMCA_FAULT")) == NULL)
		return;
	for (; *s != '\0'; s = *e == '\0' ? e : e + 1) {
		e = s + strcspn(s, ";\n");
		len = (size_t)(e - s);
		if (len > FAULTMOD_MAX_LINE) {
			memcpy(buf, s, FAULTMOD_MAX_LINE);
			buf[FAULTMOD_MAX_LINE] = '\0';
			faultmod_warn("HSMCA_FAULT", 0, buf, "rule too long");
			continue;
		}
		memcpy(buf, s, len);
		buf[len] = '\0';
		faultmod_parse(buf, "HSMCA_FAULT", 0);
	}
	faultmod_nenv = faultmod_nrules;
}

static void
faultmod_load_file(void)
{
	FILE		*f;
	char		 line[FAULTMOD_MAX_LINE + 2];
	size_t		 len;
	unsigned long	 lineno = 0;
	int		 c;

	faultmod_nrules = faultmod_nenv;
	faultmod_ctl_present = 0;
	if ((f = fopen(faultmod_ctl, "re")) == NULL)
		return;
	/*
	 * Remember the identity of what is about to be read, so that a
	 * rewrite racing with the read shows up as a change on the next call.
	 */
	if (fstat(fileno(f), &faultmod_ctl_st) == -1) {
		fclose(f);
		return;
	}
	faultmod_ctl_present = 1;
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		len = strlen(line);
		if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
			line[FAULTMOD_MAX_LINE] = '\0';
			faultmod_warn(faultmod_ctl, lineno, line,
			    "line too long");
			while ((c = fgetc(f)) != EOF && c != '\n')
				;
			continue;
		}
		line[strcspn(line, "\r\n")] = '\0';
		faultmod_parse(line, faultmod_ctl, lineno);
	}
	fclose(f);
}

/* Called with faultmod_mtx held. */
static void
faultmod_refresh(void)
{
	struct stat	 st;

	if (!faultmod_started) {
		faultmod_started = 1;
		faultmod_load_env();
	}
	if (faultmod_ctl[0] == '\0')
		return;
	if (stat(faultmod_ctl, &st) == -1) {
		faultmod_nrules = faultmod_nenv;
		faultmod_ctl_present = 0;
		return;
	}
	if (faultmod_ctl_present &&
	    st.st_dev == faultmod_ctl_st.st_dev &&
	    st.st_ino == faultmod_ctl_st.st_ino &&
	    st.st_size == faultmod_ctl_st.st_size &&
	    st.st_mtim.tv_sec == faultmod_ctl_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == faultmod_ctl_st.st_mtim.tv_nsec)
		return;
	faultmod_load_file();
}

static void
faultmod_sleep(unsigned long ms)
{
	struct timespec	 ts, rem;
	int		 saved = errno;

	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &rem) == -1 && errno == EINTR)
		ts = rem;
	errno = saved;
}

/*
 * Count the call against every rule for func and decide what to do.
 * func == -1 counts nothing.  The lock is dropped before stalling so
 * that a stalled call never holds up another thread.
 * Returns nonzero if the call must return act->rv without forwarding.
 */
static int
faultmod_enter(int func, struct faultmod_act *act)
{
	struct faultmod_rule	*r;
	size_t			 i;

	memset(act, 0, sizeof(*act));
	pthread_mutex_lock(&faultmod_mtx);
	faultmod_refresh();
	act->real = faultmod_real;
	for (i = 0; i < faultmod_nrules && func != -1; i++) {
		r = &faultmod_rules[i];
		if (r->func != func)
			continue;
		r->calls++;
		if (r->calls < r->nth ||
		    (r->count != 0 && r->calls - r->nth >= r->count))
			continue;
		switch (r->kind) {
		case FAULTMOD_FAIL:
			if (!act->fail) {
				act->fail = 1;
				act->rv = r->arg;
			}
			break;
		case FAULTMOD_STALL:
			act->stall += r->arg;
			break;
		case FAULTMOD_CORRUPT:
			act->corrupt = 1;
			break;
		}
	}
	pthread_mutex_unlock(&faultmod_mtx);

	if (act->stall > 0)
		faultmod_sleep(act->stall);
	if (!act->fail && act->real == NULL) {
		act->fail = 1;
		act->rv = CKR_GENERAL_ERROR;
	}
	return act->fail;
}

static int
faultmod_load(void)
{
	const char		*path;
	void			*h;
	CK_C_GetFunctionList	 getlist;
	CK_FUNCTION_LIST	*list = NULL;
	int			 ret = 0;

	pthread_mutex_lock(&faultmod_mtx);
	if (faultmod_real != NULL)
		goto out;
	if ((path = getenv("HSMCA_FAULT_MODULE")) == NULL || *path == '\0')
		path = FAULTMOD_DEFAULT_MODULE;
	if ((h = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		fprintf(stderr, "faultmod: %s\n", dlerror());
		ret = -1;
		goto out;
	}
	getlist = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
	if (getlist == NULL || getlist(&list) != CKR_OK || list == NULL) {
		fprintf(stderr, "faultmod: %s: no usable C_GetFunctionList\n",
		    path);
		dlclose(h);
		ret = -1;
		goto out;
	}
	/* The real module stays loaded for the life of the process. */
	faultmod_real = list;
 out:
	pthread_mutex_unlock(&faultmod_mtx);
	return ret;
}

static CK_RV
faultmod_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	struct faultmod_act	 act;

	if (faultmod_load() == -1)
		return CKR_GENERAL_ERROR;
	if (faultmod_enter(FAULTMOD_C_GetFunctionList, &act))
		return act.rv;
	if (list == NULL)
		return CKR_ARGUMENTS_BAD;
	*list = &faultmod_list;
	return CKR_OK;
}

CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	return faultmod_C_GetFunctionList(list);
}

/*
 * A real token ends the active operation when C_Sign, C_Encrypt,
 * C_DigestFinal, ... fail, so an injected failure must end it in the
 * real module too, or the session is left unusable.  Run the call into a
 * heap scratch buffer, retried once if the module asks for more, and
 * drop the result: the caller's buffers and lengths stay untouched.
 * CKR_BUFFER_TOO_SMALL and a successful length query (out == NULL)
 * leave the operation active, so those injected results forward nothing.
 */
#define FAULTMOD_SCRATCH	16384

typedef CK_RV (*faultmod_inout_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG,
    CK_BYTE_PTR, CK_ULONG_PTR);
typedef CK_RV (*faultmod_final_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR,
    CK_ULONG_PTR);

static void
faultmod_end(const struct faultmod_act *act, CK_BYTE_PTR out,
    faultmod_inout_fn inout, faultmod_final_fn final, CK_SESSION_HANDLE s,
    CK_BYTE_PTR in, CK_ULONG inlen)
{
	CK_BYTE_PTR	 buf, nbuf;
	CK_ULONG	 size = FAULTMOD_SCRATCH, len;
	CK_RV		 rv;
	int		 tries;

	if (act->real == NULL || act->rv == CKR_BUFFER_TOO_SMALL ||
	    (act->rv == CKR_OK && out == NULL))
		return;
	if ((buf = malloc(size)) == NULL)
		return;
	for (tries = 0; tries < 2; tries++) {
		len = size;
		if (inout != NULL)
			rv = inout(s, in, inlen, buf, &len);
		else
			rv = final(s, buf, &len);
		if (rv != CKR_BUFFER_TOO_SMALL || len <= size ||
		    (nbuf = realloc(buf, len)) == NULL)
			break;
		buf = nbuf;
		size = len;
	}
	free(buf);
}

#define FAULTMOD_WRAP(name, proto, args)				\
static CK_RV								\
faultmod_##name proto							\
{									\
	struct faultmod_act	 act;					\
									\
	if (faultmod_enter(FAULTMOD_##name, &act))			\
		return act.rv;						\
	return act.real->name args;					\
}

#define FAULTMOD_WRAP_INIT(name)					\
FAULTMOD_WRAP(name, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,		\
    CK_OBJECT_HANDLE k), (s, m, k))

#define FAULTMOD_WRAP_INOUT(name)					\
FAULTMOD_WRAP(name, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inlen, \
    CK_BYTE_PTR out, CK_ULONG_PTR outlen), (s, in, inlen, out, outlen))

#define FAULTMOD_WRAP_FINAL(name)					\
FAULTMOD_WRAP(name, (CK_SESSION_HANDLE s, CK_BYTE_PTR out,		\
    CK_ULONG_PTR outlen), (s, out, outlen))

#define FAULTMOD_WRAP_UPDATE(name)					\
FAULTMOD_WRAP(name, (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inlen), \
    (s, in, inlen))

#define FAULTMOD_WRAP_SESSION(name)					\
FAULTMOD_WRAP(name, (CK_SESSION_HANDLE s), (s))

/* Calls that end the operation even when they fail: see faultmod_end(). */
#define FAULTMOD_WRAP_INOUT_END(name)					\
static CK_RV								\
faultmod_##name(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inlen,	\
    CK_BYTE_PTR out, CK_ULONG_PTR outlen)				\
{									\
	struct faultmod_act	 act;					\
									\
	if (faultmod_enter(FAULTMOD_##name, &act)) {			\
		if (act.real != NULL)					\
			faultmod_end(&act, out, act.real->name, NULL,	\
			    s, in, inlen);				\
		return act.rv;						\
	}								\
	return act.real->name(s, in, inlen, out, outlen);		\
}

#define FAULTMOD_WRAP_FINAL_END(name)					\
static CK_RV								\
faultmod_##name(CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG_PTR outlen) \
{									\
	struct faultmod_act	 act;					\
									\
	if (faultmod_enter(FAULTMOD_##name, &act)) {			\
		if (act.real != NULL)					\
			faultmod_end(&act, out, NULL, act.real->name,	\
			    s, NULL, 0);				\
		return act.rv;						\
	}								\
	return act.real->name(s, out, outlen);				\
}

FAULTMOD_WRAP(C_Initialize, (CK_VOID_PTR a), (a))
FAULTMOD_WRAP(C_Finalize, (CK_VOID_PTR a), (a))
FAULTMOD_WRAP(C_GetInfo, (CK_INFO_PTR i), (i))
FAULTMOD_WRAP(C_GetSlotList, (CK_BBOOL present, CK_SLOT_ID_PTR l,
    CK_ULONG_PTR n), (present, l, n))
FAULTMOD_WRAP(C_GetSlotInfo, (CK_SLOT_ID id, CK_SLOT_INFO_PTR i), (id, i))
FAULTMOD_WRAP(C_GetTokenInfo, (CK_SLOT_ID id, CK_TOKEN_INFO_PTR i), (id, i))
FAULTMOD_WRAP(C_GetMechanismList, (CK_SLOT_ID id, CK_MECHANISM_TYPE_PTR l,
    CK_ULONG_PTR n), (id, l, n))
FAULTMOD_WRAP(C_GetMechanismInfo, (CK_SLOT_ID id, CK_MECHANISM_TYPE t,
    CK_MECHANISM_INFO_PTR i), (id, t, i))
FAULTMOD_WRAP(C_InitToken, (CK_SLOT_ID id, CK_UTF8CHAR_PTR pin, CK_ULONG len,
    CK_UTF8CHAR_PTR label), (id, pin, len, label))
FAULTMOD_WRAP(C_InitPIN, (CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR pin,
    CK_ULONG len), (s, pin, len))
FAULTMOD_WRAP(C_SetPIN, (CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR opin,
    CK_ULONG olen, CK_UTF8CHAR_PTR npin, CK_ULONG nlen),
    (s, opin, olen, npin, nlen))
FAULTMOD_WRAP(C_OpenSession, (CK_SLOT_ID id, CK_FLAGS f, CK_VOID_PTR app,
    CK_NOTIFY cb, CK_SESSION_HANDLE_PTR s), (id, f, app, cb, s))
FAULTMOD_WRAP_SESSION(C_CloseSession)
FAULTMOD_WRAP(C_CloseAllSessions, (CK_SLOT_ID id), (id))
FAULTMOD_WRAP(C_GetSessionInfo, (CK_SESSION_HANDLE s, CK_SESSION_INFO_PTR i),
    (s, i))
FAULTMOD_WRAP(C_GetOperationState, (CK_SESSION_HANDLE s, CK_BYTE_PTR st,
    CK_ULONG_PTR len), (s, st, len))
FAULTMOD_WRAP(C_SetOperationState, (CK_SESSION_HANDLE s, CK_BYTE_PTR st,
    CK_ULONG len, CK_OBJECT_HANDLE ek, CK_OBJECT_HANDLE ak),
    (s, st, len, ek, ak))
FAULTMOD_WRAP(C_Login, (CK_SESSION_HANDLE s, CK_USER_TYPE u,
    CK_UTF8CHAR_PTR pin, CK_ULONG len), (s, u, pin, len))
FAULTMOD_WRAP_SESSION(C_Logout)
FAULTMOD_WRAP(C_CreateObject, (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t,
    CK_ULONG n, CK_OBJECT_HANDLE_PTR o), (s, t, n, o))
FAULTMOD_WRAP(C_CopyObject, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
    CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR no), (s, o, t, n, no))
FAULTMOD_WRAP(C_DestroyObject, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o),
    (s, o))
FAULTMOD_WRAP(C_GetObjectSize, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
    CK_ULONG_PTR sz), (s, o, sz))
FAULTMOD_WRAP(C_GetAttributeValue, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
    CK_ATTRIBUTE_PTR t, CK_ULONG n), (s, o, t, n))
FAULTMOD_WRAP(C_SetAttributeValue, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
    CK_ATTRIBUTE_PTR t, CK_ULONG n), (s, o, t, n))
FAULTMOD_WRAP(C_FindObjectsInit, (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t,
    CK_ULONG n), (s, t, n))
FAULTMOD_WRAP(C_FindObjects, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR o,
    CK_ULONG max, CK_ULONG_PTR n), (s, o, max, n))
FAULTMOD_WRAP_SESSION(C_FindObjectsFinal)
FAULTMOD_WRAP_INIT(C_EncryptInit)
FAULTMOD_WRAP_INOUT_END(C_Encrypt)
FAULTMOD_WRAP_INOUT(C_EncryptUpdate)
FAULTMOD_WRAP_FINAL_END(C_EncryptFinal)
FAULTMOD_WRAP_INIT(C_DecryptInit)
FAULTMOD_WRAP_INOUT_END(C_Decrypt)
FAULTMOD_WRAP_INOUT(C_DecryptUpdate)
FAULTMOD_WRAP_FINAL_END(C_DecryptFinal)
FAULTMOD_WRAP(C_DigestInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m),
    (s, m))
FAULTMOD_WRAP_INOUT_END(C_Digest)
FAULTMOD_WRAP_UPDATE(C_DigestUpdate)
FAULTMOD_WRAP(C_DigestKey, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k), (s, k))
FAULTMOD_WRAP_FINAL_END(C_DigestFinal)
FAULTMOD_WRAP_INIT(C_SignInit)
FAULTMOD_WRAP_UPDATE(C_SignUpdate)
FAULTMOD_WRAP_INIT(C_SignRecoverInit)
FAULTMOD_WRAP_INOUT_END(C_SignRecover)
FAULTMOD_WRAP_INIT(C_VerifyInit)
FAULTMOD_WRAP_UPDATE(C_VerifyUpdate)
FAULTMOD_WRAP_INIT(C_VerifyRecoverInit)
FAULTMOD_WRAP_INOUT_END(C_VerifyRecover)
FAULTMOD_WRAP_INOUT(C_DigestEncryptUpdate)
FAULTMOD_WRAP_INOUT(C_DecryptDigestUpdate)
FAULTMOD_WRAP_INOUT(C_SignEncryptUpdate)
FAULTMOD_WRAP_INOUT(C_DecryptVerifyUpdate)
FAULTMOD_WRAP(C_GenerateKey, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,
    CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k), (s, m, t, n, k))
FAULTMOD_WRAP(C_GenerateKeyPair, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,
    CK_ATTRIBUTE_PTR pubt, CK_ULONG pubn, CK_ATTRIBUTE_PTR privt,
    CK_ULONG privn, CK_OBJECT_HANDLE_PTR pub, CK_OBJECT_HANDLE_PTR priv),
    (s, m, pubt, pubn, privt, privn, pub, priv))
FAULTMOD_WRAP(C_WrapKey, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE wk, CK_OBJECT_HANDLE k, CK_BYTE_PTR w, CK_ULONG_PTR wlen),
    (s, m, wk, k, w, wlen))
FAULTMOD_WRAP(C_UnwrapKey, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE uk, CK_BYTE_PTR w, CK_ULONG wlen, CK_ATTRIBUTE_PTR t,
    CK_ULONG n, CK_OBJECT_HANDLE_PTR k), (s, m, uk, w, wlen, t, n, k))
FAULTMOD_WRAP(C_DeriveKey, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,
    CK_OBJECT_HANDLE bk, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k),
    (s, m, bk, t, n, k))
FAULTMOD_WRAP_UPDATE(C_SeedRandom)
FAULTMOD_WRAP_UPDATE(C_GenerateRandom)
FAULTMOD_WRAP_SESSION(C_GetFunctionStatus)
FAULTMOD_WRAP_SESSION(C_CancelFunction)
FAULTMOD_WRAP(C_WaitForSlotEvent, (CK_FLAGS f, CK_SLOT_ID_PTR id,
    CK_VOID_PTR r), (f, id, r))

static void
faultmod_corrupt(const struct faultmod_act *act, CK_RV rv, CK_BYTE_PTR sig,
    CK_ULONG_PTR siglen)
{
	if (act->corrupt && rv == CKR_OK && sig != NULL && siglen != NULL &&
	    *siglen > 0)
		sig[0] ^= 0x01;
}

/*
 * Length queries (no output buffer) are forwarded uncounted, so that
 * "NTH" means the Nth signature whichever way the caller sizes buffers.
 */
static CK_RV
faultmod_C_Sign(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dlen,
    CK_BYTE_PTR sig, CK_ULONG_PTR siglen)
{
	struct faultmod_act	 act;
	CK_RV			 rv;

	if (faultmod_enter(sig == NULL ? -1 : FAULTMOD_C_Sign, &act)) {
		faultmod_end(&act, sig, act.real != NULL ? act.real->C_Sign :
		    NULL, NULL, s, d, dlen);
		return act.rv;
	}
	rv = act.real->C_Sign(s, d, dlen, sig, siglen);
	faultmod_corrupt(&act, rv, sig, siglen);
	return rv;
}

static CK_RV
faultmod_C_SignFinal(CK_SESSION_HANDLE s, CK_BYTE_PTR sig, CK_ULONG_PTR siglen)
{
	struct faultmod_act	 act;
	CK_RV			 rv;

	if (faultmod_enter(sig == NULL ? -1 : FAULTMOD_C_SignFinal, &act)) {
		faultmod_end(&act, sig, NULL, act.real != NULL ?
		    act.real->C_SignFinal : NULL, s, NULL, 0);
		return act.rv;
	}
	rv = act.real->C_SignFinal(s, sig, siglen);
	faultmod_corrupt(&act, rv, sig, siglen);
	return rv;
}

/* Verification has no output: end it with the caller's own arguments. */
static CK_RV
faultmod_C_Verify(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dlen,
    CK_BYTE_PTR sig, CK_ULONG siglen)
{
	struct faultmod_act	 act;

	if (faultmod_enter(FAULTMOD_C_Verify, &act)) {
		if (act.real != NULL)
			(void)act.real->C_Verify(s, d, dlen, sig, siglen);
		return act.rv;
	}
	return act.real->C_Verify(s, d, dlen, sig, siglen);
}

static CK_RV
faultmod_C_VerifyFinal(CK_SESSION_HANDLE s, CK_BYTE_PTR sig, CK_ULONG siglen)
{
	struct faultmod_act	 act;

	if (faultmod_enter(FAULTMOD_C_VerifyFinal, &act)) {
		if (act.real != NULL)
			(void)act.real->C_VerifyFinal(s, sig, siglen);
		return act.rv;
	}
	return act.real->C_VerifyFinal(s, sig, siglen);
}

static CK_FUNCTION_LIST faultmod_list = {
	.version = { CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR },
#define X(n) .n = faultmod_##n,
	FAULTMOD_FUNCS
#undef X
};
