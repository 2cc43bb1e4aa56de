/*
 * hsmca-signerd: the only process that holds the PIN and uses a CA key.
 *
 * Start-up, in order, serving nothing until the end: configuration; CA
 * certificates and the audit public key; PIN and MAC key; token open,
 * login, every key bound by public key and self-tested; audit log opened
 * and verified; socket bound in its 0750 directory; sandbox entered
 * (privileges dropped, seccomp, Landlock); background token threads and
 * workers started.  SIGTERM and SIGINT drain the requests in flight and
 * close the audit log with a final checkpoint.
 */
#include "config.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "allocator.h"
#include "audit.h"
#include "log.h"
#include "sandbox.h"
#include "signerd.h"
#include "transport.h"

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: hsmca-signerd -c FILE [-n] [-d] [-v]\n"
	    "  -c FILE   configuration file\n"
	    "  -n        check the configuration (and its files) and exit\n"
	    "  -d        stay in the foreground, log to stderr\n"
	    "  -v        more log detail\n");
	exit(1);
}

static X509 *
load_cert(const char *path)
{
	FILE *f;
	X509 *x;

	if ((f = fopen(path, "re")) == NULL) {
		log_warn("%s", path);
		return NULL;
	}
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (x == NULL)
		log_warnx("%s: not a PEM certificate", path);
	return x;
}

static STACK_OF(X509) *
load_chain(const char *path)
{
	STACK_OF(X509) *chain;
	FILE *f;
	X509 *x;

	if ((f = fopen(path, "re")) == NULL) {
		log_warn("%s", path);
		return NULL;
	}
	if ((chain = sk_X509_new_null()) == NULL) {
		fclose(f);
		return NULL;
	}
	while (sk_X509_num(chain) < 8 &&
	    (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
		if (sk_X509_push(chain, x) <= 0) {
			X509_free(x);
			break;
		}
	ERR_clear_error();
	fclose(f);
	if (sk_X509_num(chain) == 0) {
		log_warnx("%s: no PEM certificate", path);
		sk_X509_free(chain);
		return NULL;
	}
	return chain;
}

/* The files a configuration names, checked without the token. */
static int
load_files(struct signer_config *conf, EVP_PKEY **audit_pub)
{
	struct signer_key *k;
	FILE *f;
	size_t i;
	int errors = 0;
	uint32_t ku;

	for (i = 0; i < conf->sc_nkeys; i++) {
		k = conf->sc_keys[i];
		if ((k->sk_cert = load_cert(k->sk_cert_path)) == NULL) {
			errors++;
			continue;
		}
		if (X509_check_ca(k->sk_cert) < 1) {
			log_warnx("%s: key %s: %s is not a CA certificate",
			    conf->sc_path, k->sk_name, k->sk_cert_path);
			errors++;
		}
		ku = X509_get_key_usage(k->sk_cert);
		if ((k->sk_objects & OBJECT_CERTIFICATE) &&
		    !(ku & KU_KEY_CERT_SIGN)) {
			log_warnx("%s: key %s: the CA certificate has no "
			    "keyCertSign", conf->sc_path, k->sk_name);
			errors++;
		}
		if ((k->sk_objects & OBJECT_CRL) && !(ku & KU_CRL_SIGN)) {
			log_warnx("%s: key %s: the CA certificate has no "
			    "cRLSign", conf->sc_path, k->sk_name);
			errors++;
		}
		if ((k->sk_profiles & (1u << PROFILE_SUBCA)) &&
		    X509_get_pathlen(k->sk_cert) == 0) {
			log_warnx("%s: key %s: profile subca, but the CA "
			    "certificate has path length 0", conf->sc_path,
			    k->sk_name);
			errors++;
		}
		if ((k->sk_pub = X509_get_pubkey(k->sk_cert)) == NULL)
			errors++;
		if (k->sk_chain_path != NULL &&
		    (k->sk_chain = load_chain(k->sk_chain_path)) == NULL)
			errors++;
	}
	if ((f = fopen(conf->sc_audit_key, "re")) == NULL) {
		log_warn("%s", conf->sc_audit_key);
		errors++;
	} else {
		if ((*audit_pub = PEM_read_PUBKEY(f, NULL, NULL, NULL)) ==
		    NULL) {
			log_warnx("%s: not a PEM public key",
			    conf->sc_audit_key);
			errors++;
		}
		fclose(f);
	}
	return errors == 0 ? 0 : -1;
}

/* The socket directory: 0750, the signer's user, the policy daemon's
 * group, so that only the two daemons can reach the socket. */
static int
socket_dir_prepare(struct signer_config *conf, uid_t uid, gid_t gid,
    int as_root)
{
	struct stat st;
	const char *dir = conf->sc_socket_dir;
	char sock[PATH_MAX];

	if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
		log_warn("socket_dir %s", dir);
		return -1;
	}
	if (as_root && chown(dir, uid, gid) != 0) {
		log_warn("socket_dir %s: chown", dir);
		return -1;
	}
	if (chmod(dir, 0750) != 0 || lstat(dir, &st) != 0) {
		log_warn("socket_dir %s", dir);
		return -1;
	}
	if (!S_ISDIR(st.st_mode) || (st.st_mode & 07777) != 0750 ||
	    st.st_uid != uid || st.st_gid != gid) {
		log_warnx("socket_dir %s: must be a directory of mode 0750 "
		    "owned by the signer's user and the client group",
		    dir);
		return -1;
	}
	if (snprintf(sock, sizeof(sock), "%s/signer.sock", dir) >=
	    (int)sizeof(sock)) {
		log_warnx("socket_dir %s: path too long", dir);
		return -1;
	}
	/* A socket left by a previous run. */
	if (lstat(sock, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_warnx("%s exists and is not a socket", sock);
			return -1;
		}
		if (unlink(sock) != 0) {
			log_warn("%s", sock);
			return -1;
		}
	}
	return 0;
}

static char *
dir_of(const char *path)
{
	char *d, *slash;

	if ((d = strdup(path)) == NULL)
		return NULL;
	if ((slash = strrchr(d, '/')) != NULL && slash != d)
		*slash = '\0';
	return d;
}

int
main(int argc, char *argv[])
{
	struct signerd sd;
	struct signer_config *conf = NULL;
	struct token_config tc;
	struct secret *pin = NULL;
	struct audit_config ac;
	struct ipc_server_config sc;
	struct ipc_server *srv = NULL;
	struct sandbox_config sbc;
	const char *rw[4], *ro[CONFIG_MAX_NAMES + 1];
	char *audit_dir = NULL, url[PATH_MAX + 16], sock[PATH_MAX], abuf[96];
	sigset_t sigs;
	uid_t uid;
	gid_t gid, cgid;
	size_t i, n;
	int ch, check = 0, foreground = 0, verbose = 0, err, sig, as_root;
	struct signer_key *k;
	const char *path = NULL;

	while ((ch = getopt(argc, argv, "c:ndvh")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'n':
			check = 1;
			break;
		case 'd':
			foreground = 1;
			break;
		case 'v':
			verbose++;
			break;
		default:
			usage();
		}
	}
	if (path == NULL || optind != argc)
		usage();
	log_init("hsmca-signerd", foreground || check, verbose);
	memset(&sd, 0, sizeof(sd));
	umask(077);

	if (config_load(path, &conf) != 0 ||
	    load_files(conf, &sd.sd_audit_pub) != 0) {
		log_warnx("%s: configuration not usable", path);
		config_free(conf);
		EVP_PKEY_free(sd.sd_audit_pub);
		return 1;
	}
	if (check) {
		printf("%s: configuration OK (%zu key%s)\n", path,
		    conf->sc_nkeys, conf->sc_nkeys == 1 ? "" : "s");
		config_free(conf);
		EVP_PKEY_free(sd.sd_audit_pub);
		return 0;
	}
	sd.sd_conf = conf;

	/* Signals: every thread blocks them; main waits for them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	as_root = geteuid() == 0;
	if (as_root && conf->sc_user == NULL)
		fatalx("running as root: set user = in [signer] (the signer "
		    "never serves as root)");
	if (!as_root && conf->sc_user != NULL)
		fatalx("user = %s needs the signer to start as root",
		    conf->sc_user);
	if (conf->sc_user != NULL) {
		if (sandbox_lookup_user(conf->sc_user, &uid, &gid) != 0)
			fatalx("user %s unknown", conf->sc_user);
	} else {
		uid = getuid();
		gid = getgid();
	}
	cgid = gid;
	if (conf->sc_client_group != NULL &&
	    sandbox_lookup_group(conf->sc_client_group, &cgid) != 0)
		fatalx("client_group %s unknown", conf->sc_client_group);

	/* Secrets: locked memory, wiped on exit. */
	if ((sd.sd_mac_key = mmap(NULL, IPC_KEY_LEN, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) == MAP_FAILED)
		fatal("mmap");
	(void)mlock(sd.sd_mac_key, IPC_KEY_LEN);
	(void)madvise(sd.sd_mac_key, IPC_KEY_LEN, MADV_DONTDUMP);
	if (ipc_key_load(conf->sc_mac_key, sd.sd_mac_key) != 0)
		fatalx("mac_key %s: %s", conf->sc_mac_key, ipc_error_detail());
	if (secret_read_file(conf->sc_pin_file, &pin) != 0)
		fatalx("pin_file %s: %s", conf->sc_pin_file,
		    token_error_detail());

	/* The token: open, log in, bind and self-test every key. */
	memset(&tc, 0, sizeof(tc));
	tc.module = conf->sc_module;
	tc.uri = conf->sc_token_uri;
	tc.pool_size = conf->sc_pool_size;
	tc.call_timeout_ms = conf->sc_call_timeout_ms;
	if ((err = token_open(&tc, &sd.sd_token)) != 0)
		fatalx("token: %s: %s", token_strerror(err),
		    token_error_detail());
	if ((err = token_login(sd.sd_token, pin)) != 0)
		fatalx("token login: %s: %s", token_strerror(err),
		    token_error_detail());
	pin = NULL;	/* the token layer owns it now */
	for (i = 0; i < conf->sc_nkeys; i++) {
		k = conf->sc_keys[i];
		if ((err = token_key_bind_cert(sd.sd_token, k->sk_cert,
		    &k->sk_key)) != 0)
			fatalx("key %s: %s: %s", k->sk_name,
			    token_strerror(err), token_error_detail());
		if (build_key_init(k) != 0)
			fatalx("key %s: cannot prepare its issuer data",
			    k->sk_name);
		log_info("key %s: %s, token key %s, self-test passed",
		    k->sk_name, token_keytype_name(token_key_type(k->sk_key)),
		    token_key_id_hex(k->sk_key));
	}
	if ((err = token_key_bind_pubkey(sd.sd_token, sd.sd_audit_pub,
	    &sd.sd_audit_key)) != 0)
		fatalx("audit key: %s: %s", token_strerror(err),
		    token_error_detail());

	/* The audit log: verified whole before anything is signed. */
	if (request_init(&sd) != 0)
		fatalx("out of memory");
	memset(&ac, 0, sizeof(ac));
	ac.path = conf->sc_audit_log;
	ac.checkpoint_every = conf->sc_checkpoint_every;
	ac.audit_pub = sd.sd_audit_pub;
	ac.sign = request_audit_sign;
	ac.sign_arg = &sd;
	ac.scan = request_scan;
	ac.scan_arg = &sd;
	if (as_root) {
		/*
		 * The log belongs to the signer's user.  The policy daemon's
		 * group may read it (never write): it settles its pending
		 * inventory rows against it after a crash.
		 */
		int fd = open(conf->sc_audit_log, O_WRONLY | O_CREAT |
		    O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);

		if (fd < 0 || fchown(fd, uid, conf->sc_client_group != NULL ?
		    cgid : gid) != 0 || fchmod(fd, conf->sc_client_group !=
		    NULL ? 0640 : 0600) != 0)
			fatal("audit_log %s", conf->sc_audit_log);
		close(fd);
	}
	if (audit_open(&ac, &sd.sd_audit) != 0)
		fatalx("audit log %s: %s", conf->sc_audit_log,
		    audit_error_detail());

	/* The socket, then the sandbox, then serving. */
	if (socket_dir_prepare(conf, uid, cgid, as_root) != 0)
		fatalx("cannot prepare the socket directory");
	snprintf(sock, sizeof(sock), "%s/signer.sock", conf->sc_socket_dir);
	snprintf(url, sizeof(url), "ipc://%s", sock);
	memset(&sc, 0, sizeof(sc));
	sc.url = url;
	sc.workers = conf->sc_workers;
	sc.queue_len = conf->sc_queue;
	sc.handler = request_handle;
	sc.busy = request_busy;
	sc.arg = &sd;
	if (ipc_server_bind(&sc, &srv) != 0)
		fatalx("cannot bind %s: %s", url, ipc_error_detail());
	/* The directory decides who connects; the socket itself is open to
	 * the group so that the policy daemon can. */
	if ((as_root && chown(sock, uid, cgid) != 0) || chmod(sock, 0660) != 0)
		fatal("%s", sock);

	if ((audit_dir = dir_of(conf->sc_audit_log)) == NULL)
		fatal("out of memory");
	n = 0;
	rw[n++] = conf->sc_socket_dir;
	rw[n++] = audit_dir;
	if (conf->sc_token_dir != NULL)
		rw[n++] = conf->sc_token_dir;
	rw[n] = NULL;
	for (i = 0; i < conf->sc_nro_paths; i++)
		ro[i] = conf->sc_ro_paths[i];
	ro[i] = NULL;
	memset(&sbc, 0, sizeof(sbc));
	sbc.user = as_root ? conf->sc_user : NULL;
	sbc.rw_paths = rw;
	sbc.ro_paths = ro;
	if (sandbox_enter(&sbc) != 0)
		fatalx("cannot enter the sandbox: not serving");

	if (token_start(sd.sd_token) != 0 || ipc_server_start(srv) != 0)
		fatalx("cannot start the worker threads");
	log_info("allocator: %s", allocator_describe(abuf, sizeof(abuf)));
	log_info("serving on %s (%zu key%s, audit log at seq %llu)", url,
	    conf->sc_nkeys, conf->sc_nkeys == 1 ? "" : "s",
	    (unsigned long long)audit_last_seq(sd.sd_audit));

	for (;;) {
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_info("SIGHUP: the signer's keys and limits change "
			    "only with a restart");
			continue;
		}
		break;
	}
	log_info("signal %d: draining requests in flight", sig);
	{
		uint64_t received, busy, answered, dropped, appends, syncs;

		/* The server is gone after the stop: count before. */
		ipc_server_counters(srv, &received, &busy, &answered, &dropped);
		ipc_server_stop(srv);
		audit_counters(sd.sd_audit, &appends, &syncs);
		log_info("%llu requests so far, %llu answered busy, %llu dropped; "
		    "audit: %llu records in %llu syncs",
		    (unsigned long long)received, (unsigned long long)busy,
		    (unsigned long long)dropped, (unsigned long long)appends,
		    (unsigned long long)syncs);
		(void)answered;
	}
	audit_close(sd.sd_audit);
	/* Key handles go before the token they belong to. */
	for (i = 0; i < conf->sc_nkeys; i++) {
		token_key_free(conf->sc_keys[i]->sk_key);
		conf->sc_keys[i]->sk_key = NULL;
	}
	token_key_free(sd.sd_audit_key);
	token_close(sd.sd_token);
	request_free(&sd);
	OPENSSL_cleanse(sd.sd_mac_key, IPC_KEY_LEN);
	munmap(sd.sd_mac_key, IPC_KEY_LEN);
	EVP_PKEY_free(sd.sd_audit_pub);
	free(audit_dir);
	config_free(conf);
	log_info("stopped");
	return 0;
}
