/*
 * Error names and the per-thread detail line of the token layer.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "token.h"

static __thread char token_detail[512];

const char *
token_strerror(int err)
{
	switch (err) {
	case TOKEN_OK:			return "success";
	case TOKEN_ERR_INVALID:		return "invalid argument";
	case TOKEN_ERR_NOMEM:		return "out of memory";
	case TOKEN_ERR_MODULE:		return "PKCS#11 module cannot be loaded";
	case TOKEN_ERR_NO_TOKEN:	return "no token matches";
	case TOKEN_ERR_AMBIGUOUS_TOKEN:	return "more than one token matches";
	case TOKEN_ERR_PIN_FILE:	return "PIN file refused";
	case TOKEN_ERR_PIN_INCORRECT:	return "PIN incorrect";
	case TOKEN_ERR_PIN_LOCKED:	return "PIN locked";
	case TOKEN_ERR_NOT_LOGGED_IN:	return "not logged in";
	case TOKEN_ERR_NO_KEY:		return "no key matches";
	case TOKEN_ERR_AMBIGUOUS_KEY:	return "more than one key matches";
	case TOKEN_ERR_LABEL_EXISTS:	return "label already used";
	case TOKEN_ERR_UNSUPPORTED:	return "not supported by the token";
	case TOKEN_ERR_UNAVAILABLE:	return "token unavailable";
	case TOKEN_ERR_SELFTEST:	return "key self-test failed";
	case TOKEN_ERR_MISMATCH:	return "token key does not match certificate";
	case TOKEN_ERR_FAILED:		return "token operation failed";
	case TOKEN_ERR_CRYPTO:		return "cryptographic library failure";
	}
	return "unknown error";
}

const char *
token_error_detail(void)
{
	return token_detail;
}

void
token_set_detail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(token_detail, sizeof(token_detail), fmt, ap);
	va_end(ap);
}

const char *
token_ckr_name(CK_RV rv)
{
	switch (rv) {
#define N(x) case x: return #x
	N(CKR_OK);
	N(CKR_CANCEL);
	N(CKR_HOST_MEMORY);
	N(CKR_SLOT_ID_INVALID);
	N(CKR_GENERAL_ERROR);
	N(CKR_FUNCTION_FAILED);
	N(CKR_ARGUMENTS_BAD);
	N(CKR_ATTRIBUTE_READ_ONLY);
	N(CKR_ATTRIBUTE_SENSITIVE);
	N(CKR_ATTRIBUTE_TYPE_INVALID);
	N(CKR_ATTRIBUTE_VALUE_INVALID);
	N(CKR_DATA_INVALID);
	N(CKR_DATA_LEN_RANGE);
	N(CKR_DEVICE_ERROR);
	N(CKR_DEVICE_MEMORY);
	N(CKR_DEVICE_REMOVED);
	N(CKR_FUNCTION_CANCELED);
	N(CKR_FUNCTION_NOT_SUPPORTED);
	N(CKR_KEY_HANDLE_INVALID);
	N(CKR_KEY_TYPE_INCONSISTENT);
	N(CKR_KEY_FUNCTION_NOT_PERMITTED);
	N(CKR_MECHANISM_INVALID);
	N(CKR_MECHANISM_PARAM_INVALID);
	N(CKR_OBJECT_HANDLE_INVALID);
	N(CKR_OPERATION_ACTIVE);
	N(CKR_OPERATION_NOT_INITIALIZED);
	N(CKR_PIN_INCORRECT);
	N(CKR_PIN_INVALID);
	N(CKR_PIN_LEN_RANGE);
	N(CKR_PIN_EXPIRED);
	N(CKR_PIN_LOCKED);
	N(CKR_SESSION_CLOSED);
	N(CKR_SESSION_COUNT);
	N(CKR_SESSION_HANDLE_INVALID);
	N(CKR_SESSION_READ_ONLY);
	N(CKR_SESSION_EXISTS);
	N(CKR_SIGNATURE_INVALID);
	N(CKR_SIGNATURE_LEN_RANGE);
	N(CKR_TEMPLATE_INCOMPLETE);
	N(CKR_TEMPLATE_INCONSISTENT);
	N(CKR_TOKEN_NOT_PRESENT);
	N(CKR_TOKEN_NOT_RECOGNIZED);
	N(CKR_TOKEN_WRITE_PROTECTED);
	N(CKR_USER_ALREADY_LOGGED_IN);
	N(CKR_USER_NOT_LOGGED_IN);
	N(CKR_USER_PIN_NOT_INITIALIZED);
	N(CKR_USER_TYPE_INVALID);
	N(CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
	N(CKR_USER_TOO_MANY_TYPES);
	N(CKR_BUFFER_TOO_SMALL);
	N(CKR_CRYPTOKI_NOT_INITIALIZED);
	N(CKR_CRYPTOKI_ALREADY_INITIALIZED);
	N(CKR_MUTEX_BAD);
	N(CKR_MUTEX_NOT_LOCKED);
#undef N
	}
	return "CKR_(unknown)";
}
