/*
 * audit-writer: writes an audit log the way the signer would, with a
 * software key as the audit key, for tests/audit.sh.
 *
 *   audit-writer [-t p256|ed25519|rsa] [-n REQUESTS] [-c EVERY] KEY.pem LOG PUB.pem
 *
 * KEY.pem (the private key) is made if absent and reused otherwise, so a
 * second run appends to the same log with the same key.  Request i is
 * refused when i % 4 == 3 (code "profile_violation" or, when i % 8 == 7,
 * "name_not_permitted"), else signed: a CRL when i % 10 == 9, else a
 * certificate.  Key "issuing-ec" for even i, "issuing-rsa" for odd;
 * requester "policy-a" when i % 3 == 0, else "policy-b".  Prints what it
 * wrote as JSON: {"uses":..,"signed":..,"refused":..,"records":..}.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/pem.h>

#include "audit.h"

static int
soft_sign(void *arg, const uint8_t *msg, size_t msglen, uint8_t *sig,
    size_t *siglen)
{
	EVP_PKEY *key = arg;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	const EVP_MD *md = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ?
	    NULL : EVP_sha256();
	int ok;

	ok = ctx != NULL &&
	    EVP_DigestSignInit(ctx, NULL, md, NULL, key) == 1 &&
	    EVP_DigestSign(ctx, sig, siglen, msg, msglen) == 1;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -1;
}

static EVP_PKEY *
load_or_make(const char *path, const char *type)
{
	EVP_PKEY *key = NULL;
	FILE *f;

	if ((f = fopen(path, "r")) != NULL) {
		key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
		return key;
	}
	if (strcmp(type, "ed25519") == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	else if (strcmp(type, "rsa") == 0)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	else
		key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (key == NULL || (f = fopen(path, "w")) == NULL)
		return NULL;
	if (PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) != 1) {
		EVP_PKEY_free(key);
		key = NULL;
	}
	fclose(f);
	return key;
}

static json_t *
request_record(unsigned long i, int *refused, int *is_crl)
{
	const char *key = i % 2 == 0 ? "issuing-ec" : "issuing-rsa";
	const char *requester = i % 3 == 0 ? "policy-a" : "policy-b";
	char id[32], serial[40];

	snprintf(id, sizeof(id), "req-%06lu", i);
	snprintf(serial, sizeof(serial), "7f%030lx", i);
	*refused = i % 4 == 3;
	*is_crl = !*refused && i % 10 == 9;
	if (*refused)
		return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:i}",
		    "type", "refusal", "request_id", id, "key", key,
		    "kind", "certificate", "profile", "workload",
		    "code", i % 8 == 7 ? "name_not_permitted" :
		    "profile_violation", "reason", "test refusal",
		    "requester", requester, "rule", "rule-1",
		    "outcome", "refused", "latency_us", 120);
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:[s,s],s:s,s:s,s:s,"
	    "s:s,s:s,s:s,s:s,s:i,s:i}",
	    "type", *is_crl ? "crl" : "issue", "request_id", id, "key", key,
	    "kind", *is_crl ? "crl" : "certificate", "profile", "workload",
	    "serial", serial, "subject", "CN=test", "sans",
	    "DNS:a.example", "URI:spiffe://td.example/w",
	    "not_before", "2026-11-27T21:05:17Z",
	    "not_after", "2026-11-28T21:05:17Z",
	    "tbs_sha256", "00", "object", "MAo=", "requester", requester,
	    "rule", "rule-1", "outcome", "signed", "intent_seq", 0,
	    "latency_us", 250);
}

int
main(int argc, char **argv)
{
	struct audit_config cfg;
	struct audit_log *log = NULL;
	EVP_PKEY *key;
	json_t *rec;
	FILE *f;
	const char *type = "p256";
	unsigned long n = 20, every = 5, i, uses = 0, nsigned = 0, nrefused = 0;
	uint64_t seq, first;
	int ch, refused, is_crl;

	while ((ch = getopt(argc, argv, "t:n:c:")) != -1) {
		switch (ch) {
		case 't':
			type = optarg;
			break;
		case 'n':
			n = strtoul(optarg, NULL, 10);
			break;
		case 'c':
			every = strtoul(optarg, NULL, 10);
			break;
		default:
			return 2;
		}
	}
	if (argc - optind != 3 || n > 100000) {
		fprintf(stderr, "usage: audit-writer [-t p256|ed25519|rsa] "
		    "[-n N] [-c EVERY] KEY.pem LOG PUB.pem\n");
		return 2;
	}
	if ((key = load_or_make(argv[optind], type)) == NULL) {
		fprintf(stderr, "audit-writer: no key\n");
		return 1;
	}
	if ((f = fopen(argv[optind + 2], "w")) == NULL ||
	    PEM_write_PUBKEY(f, key) != 1 || fclose(f) != 0) {
		fprintf(stderr, "audit-writer: cannot write the public key\n");
		return 1;
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.path = argv[optind + 1];
	cfg.checkpoint_every = (unsigned int)every;
	cfg.audit_pub = key;
	cfg.sign = soft_sign;
	cfg.sign_arg = key;
	if (audit_open(&cfg, &log) != 0) {
		fprintf(stderr, "audit-writer: %s\n", audit_error_detail());
		EVP_PKEY_free(key);
		return 1;
	}
	first = audit_last_seq(log);
	for (i = 0; i < n; i++) {
		/* A signed request is an intent first, then its outcome. */
		if (i % 4 != 3) {
			rec = json_pack("{s:s,s:s,s:s}", "type", "intent",
			    "request_id", "req", "kind", "certificate");
			if (rec == NULL || audit_append(log, rec, &seq) != 0)
				goto fail;
			json_decref(rec);
		}
		if ((rec = request_record(i, &refused, &is_crl)) == NULL ||
		    audit_append(log, rec, &seq) != 0)
			goto fail;
		json_decref(rec);
		uses++;
		if (refused)
			nrefused++;
		else
			nsigned++;
	}
	audit_close(log);
	printf("{\"uses\":%lu,\"signed\":%lu,\"refused\":%lu,"
	    "\"first\":%" PRIu64 "}\n", uses, nsigned, nrefused, first);
	EVP_PKEY_free(key);
	return 0;
 fail:
	fprintf(stderr, "audit-writer: %s\n", audit_error_detail());
	json_decref(rec);
	audit_close(log);
	EVP_PKEY_free(key);
	return 1;
}
