/*
 * Certificate signing requests from the network: untrusted until every
 * check here has passed.  Only the public key and the names leave this
 * module; everything else in a CSR (extensions other than the SANs,
 * attributes, the subject beyond its CN) is ignored by design, because
 * the certificate's contents come from the profile.
 */
#ifndef HSMCA_CSR_H
#define HSMCA_CSR_H

#include <stddef.h>
#include <stdint.h>

#include "rules.h"

#define CSR_MAX_PEM	(64 * 1024)	/* bytes of PEM text accepted */
#define CSR_MAX_NAMES	64		/* SANs of each kind */
#define CSR_MAX_NAME	2048		/* bytes of one name (the SPIFFE limit) */

struct csr_info {
	uint8_t			*spki;		/* SubjectPublicKeyInfo, DER, re-encoded */
	size_t			 spkilen;
	enum rules_key_alg	 alg;		/* one bit */
	char			*cn;		/* subject CN, or NULL */
	char			**dns;		/* DNS SANs, NUL-terminated copies */
	size_t			 ndns;
	char			**uris;		/* URI SANs */
	size_t			 nuris;
};

struct csr_error {
	const char	*code;		/* stable snake_case, for the API */
	char		 message[256];	/* for a person: what was wrong */
};

/*
 * Parses exactly one PEM "CERTIFICATE REQUEST" (or "NEW CERTIFICATE
 * REQUEST") block of at most CSR_MAX_PEM bytes, with nothing but
 * whitespace around it; the DER inside must be exactly one CSR with no
 * trailing bytes.  Checks the signature with the CSR's own key (proof of
 * possession) and the key: EC P-256 or P-384 (an uncompressed point on
 * the curve), RSA 2048, 3072 or 4096 bits with a sane exponent, or
 * Ed25519.  Names: DNS and URI
 * SANs only (any other SAN type, an IP address included, is refused),
 * each printable ASCII without NUL, at most CSR_MAX_NAMES of each.
 * Returns 0 and fills out, or -1 and fills err.  Codes:
 *   csr_malformed        not one well-formed PEM CSR (message says where)
 *   csr_too_large        more than CSR_MAX_PEM bytes, or too many / too long names
 *   csr_signature_invalid the CSR's signature does not verify
 *   key_too_weak         RSA under 2048 bits, or an unsupported size
 *   key_unsupported      a key type or curve we do not issue for
 *   name_unsupported     a SAN type other than DNS or URI, or a bad name
 */
int	csr_parse(const char *pem, size_t pemlen, struct csr_info *out,
	    struct csr_error *err);
void	csr_info_clear(struct csr_info *);

#endif
