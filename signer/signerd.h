/*
 * hsmca-signerd internals: configuration, profiles, the objects it builds.
 */
#ifndef HSMCA_SIGNERD_H
#define HSMCA_SIGNERD_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <jansson.h>

#include "ipc.h"
#include "token.h"

/* Certificate profiles the signer knows; a key's configuration picks
 * which of them it may issue. */
enum profile_id {
	PROFILE_SVID = 0,
	PROFILE_SERVER,
	PROFILE_CLIENT,
	PROFILE_PEER,
	PROFILE_SUBCA,
	PROFILE_COUNT
};

/* Subject key algorithms a key may certify (bit mask). */
#define ALG_EC_P256	0x01
#define ALG_EC_P384	0x02
#define ALG_RSA_2048	0x04
#define ALG_RSA_3072	0x08
#define ALG_RSA_4096	0x10
#define ALG_ED25519	0x20

#define OBJECT_CERTIFICATE	0x01
#define OBJECT_CRL		0x02

#define CONFIG_MAX_NAMES	64	/* trust domains, DNS suffixes */
#define CONFIG_MAX_KEYS		16

struct signer_key {
	char		*sk_name;
	int		 sk_line;		/* of its section, for messages */
	char		*sk_cert_path;
	char		*sk_chain_path;		/* optional: certificates above */
	unsigned int	 sk_objects;		/* OBJECT_* */
	unsigned int	 sk_profiles;		/* 1 << enum profile_id */
	unsigned int	 sk_algs;		/* ALG_* */
	int64_t		 sk_max_validity;	/* seconds, leaf certificates */
	int64_t		 sk_max_ca_validity;	/* seconds, subca */
	int64_t		 sk_max_crl_validity;	/* seconds, nextUpdate - thisUpdate */
	int		 sk_require_nc;		/* subca must carry name constraints */
	char		*sk_domains[CONFIG_MAX_NAMES];	/* SPIFFE trust domains */
	size_t		 sk_ndomains;
	char		*sk_dns[CONFIG_MAX_NAMES];	/* DNS suffixes */
	size_t		 sk_ndns;
	uint64_t	 sk_usage_limit;	/* 0: none */
	char		*sk_crl_dp;		/* optional CRL distribution point URI */

	/* Filled at start. */
	X509		*sk_cert;
	STACK_OF(X509)	*sk_chain;
	EVP_PKEY	*sk_pub;
	struct token_key *sk_key;
	X509_NAME	*sk_issuer;		/* the CA certificate's subject */
	ASN1_OCTET_STRING *sk_keyid;		/* the CA's key identifier */
	X509_ALGOR	*sk_sigalg;
	const EVP_MD	*sk_md;			/* NULL for Ed25519 */
	int64_t		 sk_ca_not_before;
	int64_t		 sk_ca_not_after;
	pthread_mutex_t	 sk_usage_lock;
	uint64_t	 sk_usage;		/* intents so far (from the audit log) */
};

struct signer_config {
	char		*sc_path;
	char		*sc_module;
	char		*sc_token_uri;
	char		*sc_pin_file;
	char		*sc_mac_key;
	char		*sc_socket_dir;
	char		*sc_audit_log;
	char		*sc_audit_key;		/* public key PEM of the audit key */
	char		*sc_user;		/* drop to it when started as root */
	char		*sc_client_group;	/* the policy daemon's group */
	char		*sc_token_dir;		/* Landlock: SoftHSM2 tokens, optional */
	char		*sc_ro_paths[CONFIG_MAX_NAMES];
	size_t		 sc_nro_paths;
	unsigned int	 sc_checkpoint_every;
	unsigned int	 sc_pool_size;
	unsigned int	 sc_workers;
	unsigned int	 sc_queue;
	unsigned int	 sc_call_timeout_ms;
	int64_t		 sc_time_window;	/* seconds */
	int64_t		 sc_backdate;		/* seconds */
	struct signer_key *sc_keys[CONFIG_MAX_KEYS];
	size_t		 sc_nkeys;
};

/* config.c */
/* Reads and checks a configuration file; errors are logged as file:line.
 * Returns 0 or -1. */
int		 config_load(const char *path, struct signer_config **out);
void		 config_free(struct signer_config *conf);
struct signer_key *config_find_key(struct signer_config *conf,
		    const char *name);
const char	*profile_name(enum profile_id id);
int		 profile_parse(const char *name, enum profile_id *out);

/* build.c: what a request may ask for and what the signer makes of it. */
struct build_result {
	uint8_t		*br_der;	/* the signed object's DER (OPENSSL_free) */
	size_t		 br_derlen;
	uint8_t		 br_tbs_sha256[32];
	ASN1_INTEGER	*br_serial;	/* certificate serial or CRL number */
	char		*br_subject;	/* one-line text, for the audit */
	char		*br_profile;
};

struct build_refusal {
	int		 code;		/* enum ipc_refusal */
	char		 reason[256];
};

struct build_tbs;	/* a checked, built, not yet signed object */

/* Checks an issue request against the key's profile and builds the
 * TBSCertificate.  serial_ok is asked whether a serial was never used.
 * Returns 0, or -1 with *why filled. */
int		 build_certificate(struct signer_key *key,
		    const IPC_ISSUE_REQ *req, int64_t now, int64_t backdate,
		    int (*serial_ok)(void *, const ASN1_INTEGER *), void *arg,
		    struct build_tbs **out, struct build_refusal *why);
int		 build_crl(struct signer_key *key, const IPC_CRL_REQ *req,
		    int64_t now, int64_t backdate, struct build_tbs **out,
		    struct build_refusal *why);
/* The TBS's hash and serial, for the intent record. */
const uint8_t	*build_tbs_sha256(const struct build_tbs *tbs);
const ASN1_INTEGER *build_tbs_serial(const struct build_tbs *tbs);
const char	*build_tbs_profile(const struct build_tbs *tbs);
/* Signs through the token, assembles, re-parses, lints and verifies the
 * signature with the CA's public key.  Returns 0, or -1 with *why. */
int		 build_sign(struct build_tbs *tbs, struct build_result *res,
		    struct build_refusal *why);
void		 build_tbs_free(struct build_tbs *tbs);
void		 build_result_clear(struct build_result *res);
/* Prepares a key for building: issuer, key id, signature algorithm. */
int		 build_key_init(struct signer_key *key);
/* Name syntax checks, shared with tests. */
int		 build_dns_name_ok(const char *name, size_t len);
int		 build_spiffe_id_ok(const char *uri, size_t len, int need_path,
		    char *td, size_t tdlen);
/* One-line text of a GENERAL_NAME: "DNS:x", "URI:x"; NULL if another kind. */
char		*build_general_name_text(const GENERAL_NAME *gn);

/* request.c: the state that answers requests. */
struct audit_log;
struct request_state;

struct signerd {
	struct signer_config	*sd_conf;
	struct token		*sd_token;
	struct token_key	*sd_audit_key;
	EVP_PKEY		*sd_audit_pub;
	struct audit_log	*sd_audit;
	uint8_t			*sd_mac_key;	/* IPC_KEY_LEN, locked memory */
	struct request_state	*sd_requests;
};

int		 request_init(struct signerd *sd);
void		 request_free(struct signerd *sd);
/* The audit log's replay at start: usage counters, serials, answers to
 * repeat within the time window. */
void		 request_scan(void *arg, const json_t *record);
/* The transport's handler and busy callbacks (ipc/transport.h). */
int		 request_handle(void *arg, const uint8_t *req, size_t len,
		    uint8_t **resp, size_t *resplen);
int		 request_busy(void *arg, const uint8_t *req, size_t len,
		    uint8_t **resp, size_t *resplen);
/* Signs for the audit log's checkpoints with the audit key. */
int		 request_audit_sign(void *arg, const uint8_t *msg,
		    size_t msglen, uint8_t *sig, size_t *siglen);

#endif
