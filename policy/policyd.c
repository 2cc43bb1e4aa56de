/*
 * hsmca-policyd: the front end that services talk to (DESIGN.md "Policy
 * daemon").  Start-up, in order, before anything is served:
 *
 *   configuration and policy file checked; MAC key, inventory, trust
 *   bundle read; the signer asked for every key's chain (retried until it
 *   answers); our own TLS certificate used if it has a third of its life
 *   left, else a new key made here and a certificate issued through the
 *   signer; then the HTTPS listener.  Pending inventory rows older than
 *   reconcile_after are settled against the signer's audit log; the CRL is
 *   signed through the signer and refreshed at half its validity and
 *   after each revocation; our TLS certificate is renewed at two thirds
 *   of its life.  SIGHUP reloads the policy file (a bad file keeps the old
 *   policy); SIGTERM and SIGINT stop.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "allocator.h"
#include "audit.h"
#include "csrpool.h"
#include "storeq.h"
#include "https.h"
#include "ipc.h"
#include "log.h"
#include "policyd.h"
#include "rules.h"
#include "store.h"
#include "transport.h"

#define HEALTH_INTERVAL_MS	5000
#define STARTUP_RETRY_S		1
#define RECONCILE_LINE_MAX	(1024 * 1024)

static struct policyd	 policyd;
static struct event	*ev_startup, *ev_reconcile, *ev_crl, *ev_tls;
static int		 tls_ready;

static void startup_step(evutil_socket_t, short, void *);

static void
usage(void)
{
	fprintf(stderr, "usage: hsmca-policyd -c FILE [-n] [-d] [-v]\n");
	exit(2);
}

const struct ca_key_info *
policyd_key(struct policyd *pd, const char *name)
{
	size_t i;

	for (i = 0; name != NULL && i < pd->pd_nkeys; i++)
		if (strcmp(pd->pd_keys[i].name, name) == 0)
			return &pd->pd_keys[i];
	return NULL;
}

static void
schedule(struct event *ev, long seconds)
{
	struct timeval tv = { seconds, 0 };

	evtimer_add(ev, &tv);
}

static int
read_file(const char *path, char **out, size_t *outlen, size_t max)
{
	FILE *f;
	char *buf;
	size_t n;

	if ((f = fopen(path, "re")) == NULL)
		return -1;
	if ((buf = malloc(max + 1)) == NULL) {
		fclose(f);
		return -1;
	}
	n = fread(buf, 1, max + 1, f);
	if (ferror(f) || n > max) {
		fclose(f);
		free(buf);
		errno = EFBIG;
		return -1;
	}
	fclose(f);
	buf[n] = '\0';
	*out = buf;
	*outlen = n;
	return 0;
}

/* Writes data to path atomically: temporary file, fsync, rename, fsync
 * of the directory. */
static int
write_atomic(const char *dir, const char *name, const void *data,
    size_t len, mode_t mode)
{
	char tmp[4096], path[4096];
	int fd, dfd, ok;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >=
	    sizeof(tmp) ||
	    (size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >=
	    sizeof(path))
		return -1;
	(void)unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    mode)) == -1)
		return -1;
	ok = write(fd, data, len) == (ssize_t)len && fchmod(fd, mode) == 0 &&
	    fsync(fd) == 0;
	if (close(fd) != 0 || !ok || rename(tmp, path) != 0) {
		(void)unlink(tmp);
		return -1;
	}
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		(void)fsync(dfd);
		close(dfd);
	}
	return 0;
}

/* --- CA information ---------------------------------------------------- */

static char *
chain_to_pem(STACK_OF(X509) *chain)
{
	BIO *b;
	BUF_MEM *m;
	char *out = NULL;
	int i, ok = 1;

	if ((b = BIO_new(BIO_s_mem())) == NULL)
		return NULL;
	for (i = 0; ok && i < sk_X509_num(chain); i++)
		ok = PEM_write_bio_X509(b, sk_X509_value(chain, i)) == 1;
	if (ok && BIO_get_mem_ptr(b, &m) == 1)
		out = strndup(m->data, m->length);
	BIO_free(b);
	return out;
}

static STACK_OF(X509) *
chain_from_der(const uint8_t *der, size_t len)
{
	STACK_OF(X509) *chain;
	const unsigned char *p = der, *end = der + len;
	X509 *x;
	int i;

	if ((chain = sk_X509_new_null()) == NULL)
		return NULL;
	while (p < end) {
		if ((x = d2i_X509(NULL, &p, (long)(end - p))) == NULL) {
			sk_X509_pop_free(chain, X509_free);
			return NULL;
		}
		/* A signer whose chain file repeats its own certificate
		 * (intermediate, then intermediate and root) would make us
		 * serve it twice. */
		for (i = 0; i < sk_X509_num(chain); i++)
			if (X509_cmp(sk_X509_value(chain, i), x) == 0)
				break;
		if (i < sk_X509_num(chain)) {
			X509_free(x);
			continue;
		}
		if (sk_X509_push(chain, x) <= 0) {
			X509_free(x);
			sk_X509_pop_free(chain, X509_free);
			return NULL;
		}
	}
	if (sk_X509_num(chain) == 0) {
		sk_X509_free(chain);
		return NULL;
	}
	return chain;
}

static void
keys_free(struct policyd *pd)
{
	size_t i;

	for (i = 0; i < pd->pd_nkeys; i++) {
		free(pd->pd_keys[i].name);
		sk_X509_pop_free(pd->pd_keys[i].chain, X509_free);
		free(pd->pd_keys[i].chain_pem);
	}
	free(pd->pd_keys);
	pd->pd_keys = NULL;
	pd->pd_nkeys = 0;
}

static void
ca_info_done(void *arg, int status, const struct ipc_message *msg)
{
	struct policyd *pd = arg;
	IPC_CA_INFO_RESP *resp = NULL;
	IPC_KEY_INFO *ki;
	struct ca_key_info *keys = NULL;
	int i, n = 0;

	if (status != 0 || msg->im_type != IPC_T_CA_INFO_RESP ||
	    ipc_decode(IPC_CA_INFO_RESP_it(), msg->im_body, msg->im_bodylen,
	    "CA info answer", (void **)&resp) != 0) {
		log_warnx("signer: no CA information (%s); retrying",
		    status != 0 ? link_strerror(status) : "bad answer");
		schedule(ev_startup, STARTUP_RETRY_S);
		goto out;
	}
	n = sk_IPC_KEY_INFO_num(resp->keys);
	if (n <= 0 || (keys = calloc((size_t)n, sizeof(*keys))) == NULL) {
		log_warnx("signer: CA information names no key; retrying");
		schedule(ev_startup, STARTUP_RETRY_S);
		goto out;
	}
	for (i = 0; i < n; i++) {
		ki = sk_IPC_KEY_INFO_value(resp->keys, i);
		if ((keys[i].name = strndup((const char *)
		    ASN1_STRING_get0_data(ki->name),
		    (size_t)ASN1_STRING_length(ki->name))) == NULL ||
		    (keys[i].chain = chain_from_der(
		    ASN1_STRING_get0_data(ki->chain),
		    (size_t)ASN1_STRING_length(ki->chain))) == NULL ||
		    (keys[i].chain_pem = chain_to_pem(keys[i].chain)) == NULL) {
			log_warnx("signer: key %d: unusable chain", i + 1);
			pd->pd_keys = keys;
			pd->pd_nkeys = (size_t)n;
			keys_free(pd);
			schedule(ev_startup, STARTUP_RETRY_S);
			goto out;
		}
	}
	keys_free(pd);
	pd->pd_keys = keys;
	pd->pd_nkeys = (size_t)n;
	log_info("signer: %d key(s) known", n);
	schedule(ev_startup, 0);
 out:
	IPC_CA_INFO_RESP_free(resp);
}

static int
ask_ca_info(struct policyd *pd)
{
	IPC_CA_INFO_REQ *req;
	uint8_t *body = NULL;
	size_t len;
	int rc = -1;

	if ((req = IPC_CA_INFO_REQ_new()) != NULL &&
	    ipc_encode(IPC_CA_INFO_REQ_it(), req, &body, &len) == 0)
		rc = link_send(pd->pd_link, IPC_T_CA_INFO_REQ, body, len, NULL,
		    ca_info_done, pd, NULL);
	IPC_CA_INFO_REQ_free(req);
	OPENSSL_free(body);
	return rc;
}

/* --- our own TLS certificate ------------------------------------------- */

struct tls_op {
	struct policyd	*to_pd;
	EVP_PKEY	*to_key;
	int64_t		 to_row;
	int64_t		 to_nb, to_na;
};

static char tls_cert_path[4096], tls_key_path[4096], tls_ca_path[4096];

/* Seconds our certificate has left of its life, and that life; -1 when
 * there is none usable (missing, not ours, expired, key mismatch). */
static long
tls_remaining(long *life)
{
	FILE *f;
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	int64_t nb, na, now = (int64_t)time(NULL);
	struct tm tm;
	long ret = -1;

	if ((f = fopen(tls_cert_path, "re")) != NULL) {
		x = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	if ((f = fopen(tls_key_path, "re")) != NULL) {
		k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (x != NULL && k != NULL && X509_check_private_key(x, k) == 1 &&
	    ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm) == 1 &&
	    (nb = (int64_t)timegm(&tm), 1) &&
	    ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1) {
		na = (int64_t)timegm(&tm);
		if (na > now && na > nb) {
			*life = (long)(na - nb);
			ret = (long)(na - now);
		}
	}
	X509_free(x);
	EVP_PKEY_free(k);
	return ret;
}

static int
tls_write_ca(struct policyd *pd)
{
	BIO *b;
	BUF_MEM *m;
	size_t i;
	int j, ok;

	/* Client certificates chain to the bundle through our issuing
	 * chains, which clients may not send. */
	if ((b = BIO_new(BIO_s_mem())) == NULL)
		return -1;
	ok = BIO_write(b, pd->pd_bundle_pem, (int)pd->pd_bundle_len) ==
	    (int)pd->pd_bundle_len;
	for (i = 0; ok && i < pd->pd_nkeys; i++)
		for (j = 0; ok && j < sk_X509_num(pd->pd_keys[i].chain); j++)
			ok = PEM_write_bio_X509(b,
			    sk_X509_value(pd->pd_keys[i].chain, j)) == 1;
	ok = ok && BIO_get_mem_ptr(b, &m) == 1 &&
	    write_atomic(pd->pd_conf->pc_tls_dir, "client-ca.pem", m->data,
	    m->length, 0644) == 0;
	BIO_free(b);
	return ok ? 0 : -1;
}

static void
tls_start_listener(struct policyd *pd)
{
	struct https_config hc;
	char err[512];
	int port;

	if (pd->pd_https != NULL) {
		if (https_reload(pd->pd_https, tls_cert_path, tls_key_path,
		    tls_ca_path, err, sizeof(err)) != 0)
			log_warnx("TLS certificate reload failed, the old one "
			    "stays: %s", err);
		else
			log_info("TLS certificate reloaded");
		return;
	}
	memset(&hc, 0, sizeof(hc));
	hc.cert_file = tls_cert_path;
	hc.key_file = tls_key_path;
	hc.client_ca_file = tls_ca_path;
	hc.max_body = pd->pd_conf->pc_max_body;
	hc.max_headers = pd->pd_conf->pc_max_headers;
	hc.max_connections = pd->pd_conf->pc_max_connections;
	hc.timeout_s = pd->pd_conf->pc_client_timeout;
	if ((pd->pd_https = https_new(pd->pd_base, &hc, api_handle, pd, err,
	    sizeof(err))) == NULL ||
	    https_listen(pd->pd_https, pd->pd_conf->pc_listen_addr,
	    pd->pd_conf->pc_listen_port, &port, err, sizeof(err)) != 0)
		fatalx("HTTPS listener: %s", err);
	log_info("listening on %s port %d", pd->pd_conf->pc_listen_addr, port);
	/* Tests and the quickstart wait for this line. */
	if (getenv("HSMCA_POLICYD_PORT_FILE") != NULL) {
		FILE *f = fopen(getenv("HSMCA_POLICYD_PORT_FILE"), "we");

		if (f != NULL) {
			fprintf(f, "%d\n", port);
			fclose(f);
		}
	}
}

static void
tls_schedule_renewal(long remaining, long life)
{
	long wait = remaining - life / 3;

	schedule(ev_tls, wait > 1 ? wait : 1);
}

static void
tls_issue_done(void *arg, int status, const struct ipc_message *msg)
{
	struct tls_op *op = arg;
	struct policyd *pd = op->to_pd;
	IPC_ISSUE_RESP *resp = NULL;
	const struct ca_key_info *ki;
	const unsigned char *p;
	X509 *x = NULL;
	BIO *b = NULL;
	BUF_MEM *m;
	char serial[64], next[4200];
	int i, ok = 0;

	if (status != 0 || msg->im_type != IPC_T_ISSUE_CERT_RESP ||
	    ipc_decode(IPC_ISSUE_RESP_it(), msg->im_body, msg->im_bodylen,
	    "issue answer", (void **)&resp) != 0) {
		log_warnx("TLS certificate: the signer did not issue it (%s)",
		    status != 0 ? link_strerror(status) : msg->im_type ==
		    IPC_T_ERROR_RESP ? "refused" : "bad answer");
		if (status == 0)
			store_fail(pd->pd_store, op->to_row, "refused");
		goto out;
	}
	p = ASN1_STRING_get0_data(resp->certificate);
	if ((x = d2i_X509(NULL, &p, ASN1_STRING_length(resp->certificate)))
	    == NULL || X509_check_private_key(x, op->to_key) != 1 ||
	    (ki = policyd_key(pd, pd->pd_conf->pc_tls_key_name)) == NULL ||
	    (b = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_X509(b, x) != 1) {
		log_warnx("TLS certificate: the signer's answer is unusable");
		goto out;
	}
	for (i = 0; i < sk_X509_num(ki->chain); i++)
		if (PEM_write_bio_X509(b, sk_X509_value(ki->chain, i)) != 1)
			goto out;
	if (policyd_serial_hex(X509_get0_serialNumber(x), serial,
	    sizeof(serial)) != 0)
		goto out;
	if (store_complete(pd->pd_store, op->to_row, serial,
	    ASN1_STRING_get0_data(resp->certificate),
	    (size_t)ASN1_STRING_length(resp->certificate), op->to_nb,
	    op->to_na) != STORE_OK)
		log_warnx("TLS certificate: inventory: %s",
		    store_error(pd->pd_store));
	/* The key first: the listener reloads only once both are there. */
	if ((size_t)snprintf(next, sizeof(next), "%s.next", tls_key_path) >=
	    sizeof(next) || rename(next, tls_key_path) != 0) {
		log_warn("%s", next);
		goto out;
	}
	if (BIO_get_mem_ptr(b, &m) != 1 ||
	    write_atomic(pd->pd_conf->pc_tls_dir, "cert.pem", m->data,
	    m->length, 0644) != 0) {
		log_warn("%s", tls_cert_path);
		goto out;
	}
	ok = 1;
	log_info("TLS certificate issued, serial %s", serial);
 out:
	BIO_free(b);
	X509_free(x);
	IPC_ISSUE_RESP_free(resp);
	EVP_PKEY_free(op->to_key);
	free(op);
	if (!ok) {
		if (!tls_ready)
			schedule(ev_startup, STARTUP_RETRY_S);
		else
			schedule(ev_tls, 60);
		return;
	}
	tls_start_listener(pd);
	tls_schedule_renewal(pd->pd_conf->pc_tls_ttl, pd->pd_conf->pc_tls_ttl);
	if (!tls_ready) {
		/* The rest of the start: CRL and reconciliation. */
		tls_ready = 1;
		schedule(ev_startup, 0);
	}
}

/* A new key, written 0600, and a certificate for it through the signer;
 * the key file is replaced only with its certificate to follow, so a
 * reader of both may briefly see a mismatch: the listener reloads only
 * after both are written. */
static int
tls_issue(struct policyd *pd)
{
	struct tls_op *op = NULL;
	IPC_ISSUE_REQ *ir = NULL;
	struct store_cert row;
	uint8_t id[IPC_ID_LEN], *body = NULL;
	unsigned char *spki = NULL;
	BIO *b = NULL;
	BUF_MEM *m;
	size_t bodylen, i;
	int spkilen, ret = -1, rc;
	int64_t now = (int64_t)time(NULL);
	json_t *sans = NULL;
	char requester[] = "hsmca-policyd", rule[] = "tls", empty[] = "";

	memset(&row, 0, sizeof(row));
	if ((op = calloc(1, sizeof(*op))) == NULL ||
	    (op->to_key = EVP_EC_gen("P-256")) == NULL ||
	    (spkilen = i2d_PUBKEY(op->to_key, &spki)) <= 0 ||
	    (ir = IPC_ISSUE_REQ_new()) == NULL)
		goto out;
	op->to_pd = pd;
	op->to_nb = now;
	op->to_na = now + pd->pd_conf->pc_tls_ttl;
	if (ASN1_STRING_set(ir->key_name, pd->pd_conf->pc_tls_key_name,
	    -1) != 1 ||
	    ASN1_STRING_set(ir->profile, pd->pd_conf->pc_tls_profile, -1) != 1 ||
	    ASN1_STRING_set(ir->spki, spki, spkilen) != 1 ||
	    ASN1_INTEGER_set_int64(ir->not_before, op->to_nb) != 1 ||
	    ASN1_INTEGER_set_int64(ir->not_after, op->to_na) != 1 ||
	    ASN1_STRING_set(ir->requester, requester, -1) != 1 ||
	    ASN1_STRING_set(ir->rule, rule, -1) != 1)
		goto out;
	for (i = 0; i < pd->pd_conf->pc_ntls_names; i++)
		if (policyd_push_name(ir->sans, GEN_DNS,
		    pd->pd_conf->pc_tls_names[i]) != 0)
			goto out;
	if (ipc_encode(IPC_ISSUE_REQ_it(), ir, &body, &bodylen) != 0 ||
	    RAND_bytes(id, sizeof(id)) != 1 ||
	    (b = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_PrivateKey(b, op->to_key, NULL, NULL, 0, NULL,
	    NULL) != 1 || BIO_get_mem_ptr(b, &m) != 1)
		goto out;
	rc = write_atomic(pd->pd_conf->pc_tls_dir, "key.pem.next", m->data,
	    m->length, 0600);
	/* The private key in PEM: wiped from the buffer at once. */
	OPENSSL_cleanse(m->data, m->length);
	if (rc != 0) {
		log_warn("%s/key.pem.next", pd->pd_conf->pc_tls_dir);
		goto out;
	}
	for (i = 0; i < IPC_ID_LEN; i++)
		snprintf(row.request_id + 2 * i, 3, "%02x", id[i]);
	row.requester = requester;
	row.rule = rule;
	row.profile = pd->pd_conf->pc_tls_profile;
	row.key_name = pd->pd_conf->pc_tls_key_name;
	row.identity = pd->pd_conf->pc_tls_names[0];
	row.subject = empty;
	if ((sans = json_array()) == NULL)
		goto out;
	for (i = 0; i < pd->pd_conf->pc_ntls_names; i++) {
		char name[300];

		snprintf(name, sizeof(name), "DNS:%s",
		    pd->pd_conf->pc_tls_names[i]);
		if (json_array_append_new(sans, json_string(name)) != 0)
			goto out;
	}
	if ((row.sans = json_dumps(sans, JSON_COMPACT)) == NULL)
		goto out;
	row.created_at = now;
	if (store_pending_add(pd->pd_store, &row, &op->to_row) != STORE_OK) {
		log_warnx("TLS certificate: inventory: %s",
		    store_error(pd->pd_store));
		goto out;
	}
	if (link_send(pd->pd_link, IPC_T_ISSUE_CERT_REQ, body, bodylen, id,
	    tls_issue_done, op, NULL) != 0) {
		store_fail(pd->pd_store, op->to_row, "signer unreachable");
		goto out;
	}
	op = NULL;
	ret = 0;
 out:
	if (op != NULL) {
		EVP_PKEY_free(op->to_key);
		free(op);
	}
	BIO_free(b);
	OPENSSL_free(spki);
	OPENSSL_free(body);
	IPC_ISSUE_REQ_free(ir);
	json_decref(sans);
	free(row.sans);
	return ret;
}

static void
tls_renew(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	log_info("TLS certificate: renewing");
	if (tls_issue(arg) != 0)
		schedule(ev_tls, 60);
}

/* --- CRL --------------------------------------------------------------- */

struct crl_walk {
	STACK_OF(IPC_REVOKED)	*cw_list;
	int			 cw_error;
};

static int
crl_add(const struct store_cert *sc, void *arg)
{
	struct crl_walk *cw = arg;
	IPC_REVOKED *r;
	BIGNUM *bn = NULL;

	if ((r = IPC_REVOKED_new()) == NULL ||
	    BN_hex2bn(&bn, sc->serial) == 0 ||
	    BN_to_ASN1_INTEGER(bn, r->serial) == NULL ||
	    ASN1_INTEGER_set_int64(r->revoked_at, sc->revoked_at) != 1 ||
	    ASN1_ENUMERATED_set(r->reason, sc->reason) != 1 ||
	    sk_IPC_REVOKED_push(cw->cw_list, r) <= 0) {
		IPC_REVOKED_free(r);
		BN_free(bn);
		cw->cw_error = 1;
		return 1;
	}
	BN_free(bn);
	return 0;
}

static void
crl_done(void *arg, int status, const struct ipc_message *msg)
{
	struct policyd *pd = arg;
	IPC_CRL_RESP *resp = NULL;
	uint8_t *crl;
	size_t len;

	if (status != 0 || msg->im_type != IPC_T_SIGN_CRL_RESP ||
	    ipc_decode(IPC_CRL_RESP_it(), msg->im_body, msg->im_bodylen,
	    "CRL answer", (void **)&resp) != 0) {
		log_warnx("CRL: the signer did not sign it (%s); retrying",
		    status != 0 ? link_strerror(status) : "refused");
		schedule(ev_crl, 10);
		goto out;
	}
	len = (size_t)ASN1_STRING_length(resp->crl);
	if ((crl = malloc(len)) == NULL) {
		schedule(ev_crl, 10);
		goto out;
	}
	memcpy(crl, ASN1_STRING_get0_data(resp->crl), len);
	free(pd->pd_crl);
	pd->pd_crl = crl;
	pd->pd_crllen = len;
	if (pd->pd_crl_dirty) {
		pd->pd_crl_dirty = 0;
		schedule(ev_crl, 0);
	} else
		schedule(ev_crl, pd->pd_conf->pc_crl_validity / 2);
	log_info("CRL signed (%zu bytes)", len);
 out:
	IPC_CRL_RESP_free(resp);
}

static void
crl_sign(evutil_socket_t fd, short what, void *arg)
{
	struct policyd *pd = arg;
	struct store_filter f;
	struct crl_walk cw;
	IPC_CRL_REQ *req = NULL;
	uint8_t *body = NULL;
	size_t len;
	int64_t now = (int64_t)time(NULL), number;
	char requester[] = "hsmca-policyd";

	(void)fd;
	(void)what;
	pd->pd_crl_dirty = 0;
	memset(&cw, 0, sizeof(cw));
	memset(&f, 0, sizeof(f));
	f.status = STORE_REVOKED;
	f.not_after_from = now;
	if ((req = IPC_CRL_REQ_new()) == NULL)
		goto fail;
	cw.cw_list = req->revoked;
	if (store_list(pd->pd_store, &f, crl_add, &cw) != STORE_OK ||
	    cw.cw_error || store_crl_next(pd->pd_store, &number) != STORE_OK ||
	    ASN1_STRING_set(req->key_name, pd->pd_conf->pc_crl_key, -1) != 1 ||
	    ASN1_INTEGER_set_int64(req->this_update, now) != 1 ||
	    ASN1_INTEGER_set_int64(req->next_update,
	    now + pd->pd_conf->pc_crl_validity) != 1 ||
	    ASN1_INTEGER_set_int64(req->crl_number, number) != 1 ||
	    ASN1_STRING_set(req->requester, requester, -1) != 1 ||
	    ipc_encode(IPC_CRL_REQ_it(), req, &body, &len) != 0)
		goto fail;
	if (link_send(pd->pd_link, IPC_T_SIGN_CRL_REQ, body, len, NULL,
	    crl_done, pd, NULL) != 0)
		goto fail;
	goto out;
 fail:
	log_warnx("CRL: cannot ask for one now; retrying");
	schedule(ev_crl, 10);
 out:
	IPC_CRL_REQ_free(req);
	OPENSSL_free(body);
}

void
policyd_crl_refresh(struct policyd *pd)
{
	if (pd->pd_conf->pc_crl_key == NULL)
		return;
	/* One CRL in flight at a time; a revocation meanwhile asks again
	 * when it lands. */
	if (evtimer_pending(ev_crl, NULL)) {
		evtimer_del(ev_crl);
		schedule(ev_crl, 0);
	} else
		pd->pd_crl_dirty = 1;
}

/* --- reconciliation ---------------------------------------------------- */

struct pending_set {
	struct store_cert	*ps_rows;
	size_t			 ps_n, ps_cap;
	int64_t			 ps_before;
};

static int
pending_collect(const struct store_cert *sc, void *arg)
{
	struct pending_set *ps = arg;
	struct store_cert *rows;

	if (sc->created_at >= ps->ps_before)
		return 0;
	if (ps->ps_n == ps->ps_cap) {
		if (ps->ps_cap >= 100000)
			return 0;
		if ((rows = reallocarray(ps->ps_rows, ps->ps_cap * 2 + 16,
		    sizeof(*rows))) == NULL)
			return 1;
		ps->ps_rows = rows;
		ps->ps_cap = ps->ps_cap * 2 + 16;
	}
	memset(&ps->ps_rows[ps->ps_n], 0, sizeof(*rows));
	ps->ps_rows[ps->ps_n].id = sc->id;
	memcpy(ps->ps_rows[ps->ps_n].request_id, sc->request_id,
	    sizeof(sc->request_id));
	ps->ps_rows[ps->ps_n].status = STORE_PENDING;
	ps->ps_n++;
	return 0;
}

static struct store_cert *
pending_find(struct pending_set *ps, const char *request_id)
{
	size_t i;

	for (i = 0; i < ps->ps_n; i++)
		if (strcmp(ps->ps_rows[i].request_id, request_id) == 0)
			return &ps->ps_rows[i];
	return NULL;
}

static void
reconcile_record(struct policyd *pd, struct pending_set *ps, json_t *r)
{
	const char *type, *rid, *obj;
	struct store_cert *row;
	uint8_t *der = NULL;
	const unsigned char *p;
	X509 *x = NULL;
	struct tm tm;
	char serial[64];
	int len;
	int64_t nb, na;

	type = json_string_value(json_object_get(r, "type"));
	rid = json_string_value(json_object_get(r, "request_id"));
	if (type == NULL || rid == NULL || (row = pending_find(ps, rid)) ==
	    NULL || row->status != STORE_PENDING)
		return;
	if (strcmp(type, "refusal") == 0 ||
	    (strcmp(type, "issue") != 0 && json_object_get(r, "outcome") !=
	    NULL && strcmp(json_string_value(json_object_get(r, "outcome")) ?
	    json_string_value(json_object_get(r, "outcome")) : "", "refused")
	    == 0)) {
		store_fail(pd->pd_store, row->id, "refused by the signer "
		    "(reconciled from its audit log)");
		row->status = STORE_FAILED;
		log_info("reconciled row %lld: refused", (long long)row->id);
		return;
	}
	if (strcmp(type, "issue") != 0 ||
	    (obj = json_string_value(json_object_get(r, "object"))) == NULL ||
	    strlen(obj) > 64 * 1024 || (der = malloc(strlen(obj))) == NULL ||
	    (len = audit_base64_decode(obj, der, strlen(obj))) <= 0)
		goto out;
	p = der;
	if ((x = d2i_X509(NULL, &p, len)) == NULL ||
	    ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm) != 1)
		goto out;
	nb = (int64_t)timegm(&tm);
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1 ||
	    policyd_serial_hex(X509_get0_serialNumber(x), serial,
	    sizeof(serial)) != 0)
		goto out;
	na = (int64_t)timegm(&tm);
	if (store_complete(pd->pd_store, row->id, serial, der, (size_t)len,
	    nb, na) == STORE_OK) {
		row->status = STORE_ISSUED;
		log_info("reconciled row %lld: issued serial %s (from the "
		    "audit log)", (long long)row->id, serial);
	} else
		log_warnx("reconciled row %lld: %s", (long long)row->id,
		    store_error(pd->pd_store));
 out:
	X509_free(x);
	free(der);
}

/*
 * Settles pending rows old enough that the signer can no longer accept
 * their request (its time window has passed): signed ones are completed
 * from the audit log, the others failed.
 */
static void
reconcile(evutil_socket_t fd, short what, void *arg)
{
	struct policyd *pd = arg;
	struct pending_set ps;
	FILE *f = NULL;
	char *line = NULL;
	size_t cap = 0, i, done = 0;
	ssize_t n;
	json_t *r;

	(void)fd;
	(void)what;
	memset(&ps, 0, sizeof(ps));
	ps.ps_before = (int64_t)time(NULL) - pd->pd_conf->pc_reconcile_after;
	if (store_pending(pd->pd_store, pending_collect, &ps) != STORE_OK) {
		log_warnx("reconcile: %s", store_error(pd->pd_store));
		goto out;
	}
	if (ps.ps_n == 0)
		goto out;
	if (pd->pd_conf->pc_audit_log == NULL) {
		log_warnx("reconcile: %zu pending row(s), and no audit_log to "
		    "settle them with", ps.ps_n);
		goto out;
	}
	if ((f = fopen(pd->pd_conf->pc_audit_log, "re")) == NULL) {
		log_warn("reconcile: %s", pd->pd_conf->pc_audit_log);
		goto out;
	}
	while ((n = getline(&line, &cap, f)) > 0) {
		if ((size_t)n > RECONCILE_LINE_MAX)
			continue;
		if ((r = json_loadb(line, (size_t)n, 0, NULL)) == NULL)
			continue;
		reconcile_record(pd, &ps, r);
		json_decref(r);
	}
	if (ferror(f)) {
		log_warn("reconcile: %s", pd->pd_conf->pc_audit_log);
		goto out;
	}
	for (i = 0; i < ps.ps_n; i++) {
		if (ps.ps_rows[i].status != STORE_PENDING) {
			done++;
			continue;
		}
		if (store_fail(pd->pd_store, ps.ps_rows[i].id, "not signed: "
		    "absent from the signer's audit log") == STORE_OK) {
			log_info("reconciled row %lld: not signed",
			    (long long)ps.ps_rows[i].id);
			done++;
		}
	}
	log_info("reconcile: %zu of %zu pending row(s) settled", done, ps.ps_n);
 out:
	if (f != NULL)
		fclose(f);
	free(line);
	free(ps.ps_rows);
	if (ev_reconcile != NULL)
		schedule(ev_reconcile, pd->pd_conf->pc_reconcile_after);
}

/* --- start-up and signals ---------------------------------------------- */

static void
startup_step(evutil_socket_t fd, short what, void *arg)
{
	struct policyd *pd = arg;
	long remaining, life = 0;

	(void)fd;
	(void)what;
	if (pd->pd_nkeys == 0) {
		if (ask_ca_info(pd) != 0) {
			log_warnx("signer: not reachable; retrying");
			schedule(ev_startup, STARTUP_RETRY_S);
		}
		return;
	}
	if (policyd_key(pd, pd->pd_conf->pc_tls_key_name) == NULL)
		fatalx("tls_key_name: the signer has no key '%s'",
		    pd->pd_conf->pc_tls_key_name);
	if (pd->pd_conf->pc_crl_key != NULL &&
	    policyd_key(pd, pd->pd_conf->pc_crl_key) == NULL)
		fatalx("crl_key: the signer has no key '%s'",
		    pd->pd_conf->pc_crl_key);
	if (tls_write_ca(pd) != 0)
		fatal("%s", tls_ca_path);
	if (!tls_ready) {
		remaining = tls_remaining(&life);
		if (remaining > life / 3) {
			tls_ready = 1;
			tls_start_listener(pd);
			tls_schedule_renewal(remaining, life);
		} else if (tls_issue(pd) != 0)
			schedule(ev_startup, STARTUP_RETRY_S);
		if (!tls_ready)
			return;
	}
	if (pd->pd_conf->pc_crl_key != NULL && pd->pd_crl == NULL &&
	    !evtimer_pending(ev_crl, NULL))
		schedule(ev_crl, 0);
	if (!evtimer_pending(ev_reconcile, NULL))
		schedule(ev_reconcile, 0);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct policyd *pd = arg;
	struct rules *r;
	char err[1024];

	(void)what;
	if (sig == SIGHUP) {
		if (rules_load(pd->pd_conf->pc_policy, &r, err,
		    sizeof(err)) != 0) {
			log_warnx("policy not reloaded, the old one stays: %s",
			    err);
			return;
		}
		rules_free(pd->pd_rules);
		pd->pd_rules = r;
		log_info("policy reloaded from %s", pd->pd_conf->pc_policy);
		return;
	}
	log_info("signal %d: stopping", (int)sig);
	event_base_loopexit(pd->pd_base, NULL);
}

int
main(int argc, char *argv[])
{
	struct policyd *pd = &policyd;
	struct event *sigs[3] = { NULL, NULL, NULL };
	const int signums[3] = { SIGTERM, SIGINT, SIGHUP };
	char err[1024];
	int ch, check = 0, foreground = 0, verbose = 0, i;
	const char *conf = NULL;

	while ((ch = getopt(argc, argv, "c:dnv")) != -1) {
		switch (ch) {
		case 'c':
			conf = optarg;
			break;
		case 'd':
			foreground = 1;
			break;
		case 'n':
			check = 1;
			break;
		case 'v':
			verbose++;
			break;
		default:
			usage();
		}
	}
	if (conf == NULL || optind != argc)
		usage();
	log_init("hsmca-policyd", foreground || check ? LOG_FOREGROUND : 0,
	    verbose);
	if (config_load(conf, &pd->pd_conf) != 0)
		exit(1);
	if (rules_load(pd->pd_conf->pc_policy, &pd->pd_rules, err,
	    sizeof(err)) != 0) {
		log_warnx("%s", err);
		exit(1);
	}
	if (check) {
		fprintf(stderr, "configuration OK\n");
		exit(0);
	}
	/* The network-facing daemon never needs root: refuse it. */
	if (geteuid() == 0)
		fatalx("refusing to run as root: start hsmca-policyd as its "
		    "own user (the unit's User=hsmca-policy)");
	signal(SIGPIPE, SIG_IGN);
	if ((size_t)snprintf(tls_cert_path, sizeof(tls_cert_path),
	    "%s/cert.pem", pd->pd_conf->pc_tls_dir) >= sizeof(tls_cert_path) ||
	    (size_t)snprintf(tls_key_path, sizeof(tls_key_path),
	    "%s/key.pem", pd->pd_conf->pc_tls_dir) >= sizeof(tls_key_path) ||
	    (size_t)snprintf(tls_ca_path, sizeof(tls_ca_path),
	    "%s/client-ca.pem", pd->pd_conf->pc_tls_dir) >=
	    sizeof(tls_ca_path))
		fatalx("tls_dir: path too long");
	if (ipc_key_load(pd->pd_conf->pc_mac_key, pd->pd_mac) != 0)
		fatalx("mac_key %s: cannot be read (a file of 64 hex digits, "
		    "mode 0600, owned by this user)", pd->pd_conf->pc_mac_key);
	if (store_open(pd->pd_conf->pc_store, &pd->pd_store, err,
	    sizeof(err)) != STORE_OK)
		fatalx("store %s: %s", pd->pd_conf->pc_store, err);
	if (read_file(pd->pd_conf->pc_ca_bundle, &pd->pd_bundle_pem,
	    &pd->pd_bundle_len, 1024 * 1024) != 0)
		fatal("ca_bundle %s", pd->pd_conf->pc_ca_bundle);
	if ((pd->pd_base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	if ((pd->pd_link = link_new(pd->pd_base, pd->pd_conf->pc_signer_url,
	    pd->pd_mac, pd->pd_conf->pc_max_inflight,
	    pd->pd_conf->pc_signer_timeout)) == NULL)
		fatalx("signer %s: cannot open the IPC client",
		    pd->pd_conf->pc_signer_url);
	OPENSSL_cleanse(pd->pd_mac, sizeof(pd->pd_mac));
	if ((pd->pd_storeq = storeq_new(pd->pd_base, pd->pd_conf->pc_store,
	    pd->pd_store, err, sizeof(err))) == NULL)
		fatalx("store %s: %s", pd->pd_conf->pc_store, err);
	if ((pd->pd_csrpool = csrpool_new(pd->pd_base, 0)) == NULL)
		fatalx("cannot start the CSR checking threads");
	log_debug("checking CSRs on %d threads",
	    csrpool_threads(pd->pd_csrpool));
	if ((ev_startup = evtimer_new(pd->pd_base, startup_step, pd)) == NULL ||
	    (ev_reconcile = evtimer_new(pd->pd_base, reconcile, pd)) == NULL ||
	    (ev_crl = evtimer_new(pd->pd_base, crl_sign, pd)) == NULL ||
	    (ev_tls = evtimer_new(pd->pd_base, tls_renew, pd)) == NULL)
		fatalx("out of memory");
	for (i = 0; i < 3; i++)
		if ((sigs[i] = evsignal_new(pd->pd_base, signums[i], on_signal,
		    pd)) == NULL || event_add(sigs[i], NULL) != 0)
			fatalx("cannot handle signal %d", signums[i]);
	link_watch(pd->pd_link, HEALTH_INTERVAL_MS, NULL, NULL);
	schedule(ev_startup, 0);
	log_info("allocator: %s", allocator_describe(err, sizeof(err)));
	log_info("started; waiting for the signer at %s",
	    pd->pd_conf->pc_signer_url);
	event_base_dispatch(pd->pd_base);

	/* Pending requests' abort callbacks cancel their CSR jobs. */
	https_free(pd->pd_https);
	csrpool_free(pd->pd_csrpool);
	pd->pd_csrpool = NULL;
	/* Writes still queued are committed; a row whose signer request
	 * never left is failed, one that left stays pending. */
	storeq_free(pd->pd_storeq);
	pd->pd_storeq = NULL;	/* link_free's callbacks write nothing */
	link_free(pd->pd_link);
	for (i = 0; i < 3; i++)
		if (sigs[i] != NULL)
			event_free(sigs[i]);
	event_free(ev_startup);
	event_free(ev_reconcile);
	event_free(ev_crl);
	event_free(ev_tls);
	event_base_free(pd->pd_base);
	keys_free(pd);
	free(pd->pd_crl);
	free(pd->pd_bundle_pem);
	store_close(pd->pd_store);
	rules_free(pd->pd_rules);
	config_free(pd->pd_conf);
	log_info("stopped");
	return 0;
}
