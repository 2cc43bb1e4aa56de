#ifndef HSMCA_CLI_H
#define HSMCA_CLI_H

/* agent.c */
int		 agent_main(int argc, char **argv);

/* audit.c */
int		 audit_main(int argc, char **argv);

/* check.c: hsmca check-endpoint; exits 0 OK, 1 WARNING, 2 CRITICAL,
 * 3 UNKNOWN (the monitoring-plugin convention) */
int		 check_main(int argc, char **argv);

/* ceremony.c */
int		 ceremony_main(int argc, char **argv);

/* enroll.c: the policy daemon's clients */
int		 enroll_main(int argc, char **argv);
int		 renew_main(int argc, char **argv);
int		 revoke_main(int argc, char **argv);
int		 inventory_main(int argc, char **argv);

/* http.c */
#define HTTP_MAX_RESPONSE	(1024 * 1024)	/* bytes of an answer read */

struct curl_slist;

struct http_options {
	const char		*ho_server;	/* https://host[:port], no '/' at the end */
	const char		*ho_ca_bundle;	/* the only trusted roots */
	struct curl_slist	*ho_resolve;	/* HOST:PORT:ADDR, as curl's */
	const char		*ho_cert;	/* mTLS: PEM in memory, or NULL */
	size_t			 ho_cert_len;
	const char		*ho_key;
	size_t			 ho_key_len;
};

struct http_response {
	long		 hr_status;
	char		*hr_body;	/* NUL-terminated */
	size_t		 hr_len;
};

/* Once per process, before and after every request.  http_init returns
 * 0 or -1. */
int		 http_init(void);
void		 http_cleanup(void);
/* One request: method "GET" or "POST" (body NULL for none), bearer the
 * bootstrap token or NULL.  Returns 0 with any HTTP status in resp, or
 * -1 with the transport error in err (TLS, timeout, a too large answer). */
int		 http_request(const struct http_options *o, const char *method,
		    const char *path, const char *body, const char *bearer,
		    struct http_response *resp, char *err, size_t errlen);
void		 http_response_clear(struct http_response *r);

/* token.c */
int		 token_main(int argc, char **argv);

/* util.c */
/* Parses a decimal integer in [min, max]; on error returns 0 and sets
 * *errstr to "invalid", "too small" or "too large" (OpenBSD strtonum). */
long long	 cli_strtonum(const char *s, long long min, long long max,
		    const char **errstr);

#endif
