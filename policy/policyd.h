/*
 * hsmca-policyd: the front end.  One event loop (libevent) serves HTTPS,
 * talks to the signer over nanomsg through the IPC client's file
 * descriptor, and keeps the inventory.  It holds no CA key and no PIN and
 * never loads a PKCS#11 module.
 */
#ifndef HSMCA_POLICYD_H
#define HSMCA_POLICYD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ipc.h"

struct event_base;
struct event;
struct https_server;
struct https_request;
struct rules;
struct store;
struct link;
struct csrpool;
struct storeq;

/* config.c */
struct policyd_config {
	char		*pc_path;
	char		*pc_listen_addr;	/* "127.0.0.1" */
	int		 pc_listen_port;
	char		*pc_signer_url;		/* ipc:///... */
	char		*pc_mac_key;
	char		*pc_store;		/* inventory URI or path */
	char		*pc_policy;		/* the rules file */
	char		*pc_audit_log;		/* the signer's, for reconciliation; may be NULL */
	char		*pc_ca_bundle;		/* trust anchors: served, and client certs chain to them */
	char		*pc_tls_dir;		/* our own TLS key and certificate */
	char		*pc_tls_key_name;	/* signer key that issues our certificate */
	char		*pc_tls_profile;	/* server (default) or peer */
	char		**pc_tls_names;		/* DNS names of our certificate */
	size_t		 pc_ntls_names;
	long		 pc_tls_ttl;		/* seconds */
	char		*pc_crl_key;		/* signer key that signs the CRL; NULL: no CRL */
	long		 pc_crl_validity;	/* seconds between thisUpdate and nextUpdate */
	size_t		 pc_max_body;
	size_t		 pc_max_headers;
	int		 pc_max_connections;
	int		 pc_client_timeout;	/* seconds */
	unsigned int	 pc_signer_timeout;	/* milliseconds */
	unsigned int	 pc_max_inflight;
	long		 pc_reconcile_after;	/* seconds a pending row waits before reconciliation */
};

int	config_load(const char *path, struct policyd_config **out);
void	config_free(struct policyd_config *);

/* link.c: the signer, seen from the event loop. */
typedef void (*link_cb)(void *arg, int status, const struct ipc_message *msg);

struct link *link_new(struct event_base *, const char *url,
	    const uint8_t key[IPC_KEY_LEN], unsigned int max_inflight,
	    unsigned int timeout_ms);
void	link_free(struct link *);
/* Sends a request with the given id (NULL: a random one, returned in
 * id_out).  cb runs exactly once, from the loop: status 0 with the
 * answer, or an IPC_T_ERR_* / IPC_ERR_* code.  Returns 0, or an error
 * (then cb never runs). */
int	link_send(struct link *, int type, const uint8_t *body, size_t len,
	    const uint8_t *id, link_cb cb, void *arg, uint8_t id_out[IPC_ID_LEN]);
/* Whether the last health probe was answered with the token up. */
int	link_up(const struct link *);
unsigned int link_inflight(const struct link *);
/* Names an IPC_T_ERR_* or IPC_ERR_* code. */
const char *link_strerror(int);
/* Health probes every interval_ms; cb (may be NULL) on each change. */
void	link_watch(struct link *, unsigned int interval_ms,
	    void (*cb)(void *arg, int up), void *arg);

/* api.c */
struct policyd;
void	api_handle(struct https_request *, void *arg);
/* Lower-case hex without leading zeros, as the inventory keeps serials. */
int	policyd_serial_hex(const ASN1_INTEGER *, char *, size_t);
/* Appends a DNS or URI name (an IA5String) to gens; 0 or -1. */
int	policyd_push_name(GENERAL_NAMES *, int type, const char *);

/* policyd.c: the daemon's state, shared by its files. */
struct ca_key_info {
	char		*name;
	STACK_OF(X509)	*chain;		/* issuing first, as the signer gives it */
	char		*chain_pem;
};

struct policyd_metrics {
	uint64_t	 issued[5];	/* by profile index */
	uint64_t	 renewed[5];
	uint64_t	 revoked;
	uint64_t	 denied;	/* every 4xx refusal */
	struct {
		const char	*code;	/* a static string of api.c, csr.c or rules.c */
		uint64_t	 n;
	}		 denied_by[48];	/* by error code; the rest go to "other" */
	uint64_t	 denied_other;
	uint64_t	 signer_errors;
	uint64_t	 latency_buckets[12];	/* signer round trip, ms: see api.c */
	uint64_t	 latency_count;
	double		 latency_sum;
};

struct policyd {
	struct policyd_config	*pd_conf;
	struct event_base	*pd_base;
	struct https_server	*pd_https;
	struct rules		*pd_rules;
	struct store		*pd_store;
	struct link		*pd_link;
	struct csrpool		*pd_csrpool;	/* CSR checks off the loop */
	struct storeq		*pd_storeq;	/* issuance writes, group commit */
	uint8_t			 pd_mac[IPC_KEY_LEN];
	struct ca_key_info	*pd_keys;
	size_t			 pd_nkeys;
	char			*pd_bundle_pem;
	size_t			 pd_bundle_len;
	uint8_t			*pd_crl;	/* current CRL, DER */
	size_t			 pd_crllen;
	int			 pd_crl_dirty;
	struct policyd_metrics	 pd_metrics;
};

const struct ca_key_info *policyd_key(struct policyd *, const char *name);
/* Asks the signer for a new CRL now (after a revocation). */
void	policyd_crl_refresh(struct policyd *);

/* Profile names, index for metrics. */
int	profile_index(const char *);
extern const char *const profile_names[5];

#endif
