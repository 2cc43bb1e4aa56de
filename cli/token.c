/*
 * hsmca token create: a bootstrap token for one requester, printed once.
 * Only its SHA-256 is stored, in the policy daemon's inventory; whoever
 * runs this needs write access to that database (the policy user, or
 * root).
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "cli.h"
#include "log.h"
#include "rules.h"
#include "store.h"

#define TOKEN_BYTES	32
#define TOKEN_PREFIX	"hsmca_"

static void
token_usage(FILE *f)
{
	fprintf(f, "usage: hsmca token create --store PATH --requester NAME "
	    "[--uses N] [--ttl DURATION]\n"
	    "  prints a new bootstrap token for NAME (a [requester] of the "
	    "policy file with\n  tokens = yes), good for N uses (default 1) "
	    "until DURATION from now (default 1h)\n");
}

/* base64url without padding, so the token needs no quoting anywhere. */
static void
b64url(const uint8_t *in, size_t len, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
	    "qrstuvwxyz0123456789-_";
	size_t i, o = 0;
	uint32_t v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
		out[o++] = tab[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)in[i] << 16;
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
	} else if (len - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
	}
	out[o] = '\0';
}

static int
token_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "requester", required_argument, NULL, 'r' },
		{ "uses", required_argument, NULL, 'u' },
		{ "ttl", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char *storepath = NULL, *requester = NULL, *errstr;
	struct store *st;
	uint8_t raw[TOKEN_BYTES], hash[32];
	char text[sizeof(TOKEN_PREFIX) + 2 * TOKEN_BYTES], err[512];
	long ttl = 3600;
	int ch, uses = 1, rc;
	size_t n;

	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			storepath = optarg;
			break;
		case 'r':
			requester = optarg;
			break;
		case 'u':
			uses = (int)cli_strtonum(optarg, 1, 1000000, &errstr);
			if (errstr != NULL) {
				log_warnx("--uses %s: %s (1 to 1000000)",
				    optarg, errstr);
				return 2;
			}
			break;
		case 't':
			if ((ttl = rules_parse_duration(optarg)) <= 0) {
				log_warnx("--ttl %s: not a duration (a number "
				    "and one of s, m, h, d)", optarg);
				return 2;
			}
			break;
		case 'h':
			token_usage(stdout);
			return 0;
		default:
			token_usage(stderr);
			return 2;
		}
	}
	if (storepath == NULL || requester == NULL || optind != argc) {
		token_usage(stderr);
		return 2;
	}
	n = strlen(requester);
	if (n == 0 || n > 64 || strspn(requester,
	    "abcdefghijklmnopqrstuvwxyz0123456789._-") != n) {
		log_warnx("--requester '%s': a requester name is 1 to 64 of "
		    "a-z 0-9 . _ -", requester);
		return 2;
	}
	if (store_open(storepath, &st, err, sizeof(err)) != STORE_OK) {
		log_warnx("%s: %s", storepath, err);
		return 1;
	}
	memcpy(text, TOKEN_PREFIX, strlen(TOKEN_PREFIX));
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		log_warnx("no random bytes");
		store_close(st);
		return 1;
	}
	b64url(raw, sizeof(raw), text + strlen(TOKEN_PREFIX));
	OPENSSL_cleanse(raw, sizeof(raw));
	rc = EVP_Digest(text, strlen(text), hash, NULL, EVP_sha256(), NULL) ==
	    1 ? store_token_add(st, hash, requester,
	    (int64_t)time(NULL) + ttl, uses) : STORE_ERROR;
	if (rc != STORE_OK) {
		log_warnx("%s: the token was not stored: %s", storepath,
		    store_error(st));
		store_close(st);
		OPENSSL_cleanse(text, sizeof(text));
		return 1;
	}
	store_close(st);
	printf("%s\n", text);
	fflush(stdout);
	OPENSSL_cleanse(text, sizeof(text));
	return 0;
}

int
token_main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "create") == 0)
		return token_create(argc - 1, argv + 1);
	token_usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ?
	    stdout : stderr);
	return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
}
