/*
 * The policy file: who may ask for what.  Deny by default: a request is
 * allowed only when a rule of the caller's requester allows its profile,
 * every one of its names, its key algorithm and its lifetime.
 *
 * Format (INI, parsed with inih; errors name file:line):
 *
 *   [requester NAME]                 ; NAME: [a-z0-9][a-z0-9._-]{0,63}
 *   tokens = yes|no                  ; bootstrap tokens for NAME are accepted
 *   identities = PATTERN, ...        ; mTLS identities that are this requester
 *   admin = yes|no                   ; inventory, and revoking anyone's certificate
 *   rules = RULE, ...                ; in order; the first that allows wins
 *
 *   [rule NAME]
 *   key = SIGNER-KEY-NAME            ; the signer key that signs (required)
 *   profiles = svid, server, client, peer, subca
 *   spiffe_ids = PATTERN, ...        ; allowed URI SANs (spiffe://...)
 *   dns_names = PATTERN, ...         ; allowed DNS SANs (and name constraints for subca)
 *                                    ; a subca's URI constraint spiffe://TD needs the
 *                                    ; spiffe_ids pattern spiffe://TD followed by two stars
 *   key_algorithms = ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519
 *   max_ttl = 24h                    ; s, m, h or d
 *   default_ttl = 1h                 ; when the request names none (<= max_ttl)
 *   renew = own|any|no               ; own: an mTLS caller may renew only its own identity
 *
 * Patterns: literal text, "*" matching one or more characters inside one
 * label or path segment (never '.' or '/'), "**" (only as the whole last
 * segment of a SPIFFE path) matching one or more segments, and the
 * placeholders {requester} (the requester's name) and {identity} (the
 * caller's own mTLS identity; a pattern with it never matches for a token
 * caller).  Placeholders match only their exact value, which must itself
 * be a valid label or segment sequence.
 */
#ifndef HSMCA_RULES_H
#define HSMCA_RULES_H

#include <stddef.h>

enum rules_key_alg {
	RULES_ALG_EC_P256	= 1 << 0,
	RULES_ALG_EC_P384	= 1 << 1,
	RULES_ALG_RSA_2048	= 1 << 2,
	RULES_ALG_RSA_3072	= 1 << 3,
	RULES_ALG_RSA_4096	= 1 << 4,
	RULES_ALG_ED25519	= 1 << 5
};

struct rules;

/* Loads and checks path.  On error returns -1 and err holds "path:line:
 * what was wrong" (or "path: why" for I/O); nothing is kept. */
int	rules_load(const char *path, struct rules **, char *err, size_t errlen);
void	rules_free(struct rules *);

struct rules_caller {
	const char	*token_requester;	/* set when authenticated by a bootstrap token */
	const char	*identity;		/* set when authenticated by mTLS: SPIFFE ID, else DNS name */
};

struct rules_request {
	const char		*profile;
	long			 ttl;		/* seconds; 0 = the rule's default */
	enum rules_key_alg	 alg;		/* exactly one bit */
	const char *const	*dns;		/* requested DNS names */
	size_t			 ndns;
	const char *const	*uris;		/* requested URI SANs */
	size_t			 nuris;
	int			 renewal;	/* renewing the caller's own certificate */
};

struct rules_decision {
	const char	*requester;	/* points into the rules; valid until rules_free */
	const char	*rule;
	const char	*key;		/* signer key name */
	long		 ttl;		/* granted, seconds */
	const char	*code;		/* on deny: stable snake_case error code */
	char		 message[256];	/* on deny: what was wrong, for a person */
};

/*
 * Finds the caller's requester (by token requester name, or by matching
 * its mTLS identity against the identities patterns; the first requester
 * in file order wins) and decides.  Returns 0 when allowed (d filled),
 * -1 when denied (d->code and d->message say why).  Codes:
 *   unknown_requester   no requester is this caller
 *   profile_not_allowed no rule of the requester has the profile
 *   name_not_allowed    a name matches no pattern of the rule (message names it)
 *   no_names            a profile that needs a name got none
 *   key_not_allowed     the key algorithm is not in the rule
 *   ttl_too_long        ttl above max_ttl
 *   renewal_not_allowed renew = no, or not the caller's own identity
 * When several rules have the profile, the message explains the first
 * rule's reason.
 */
int	rules_decide(const struct rules *, const struct rules_caller *,
	    const struct rules_request *, struct rules_decision *d);

/* Whether the mTLS identity is an admin requester's. */
int	rules_is_admin(const struct rules *, const char *identity);

/* Parses "90s", "15m", "24h", "7d" into seconds (1 s .. 3650 d); -1 on error. */
long	rules_parse_duration(const char *);

/* Maps "ec-p256" etc. to the bit; 0 when unknown. */
enum rules_key_alg rules_alg_from_name(const char *);
const char	*rules_alg_name(enum rules_key_alg);

#endif
