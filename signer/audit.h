/*
 * hsmca audit log (DESIGN.md "Audit log"): written by hsmca-signerd,
 * checked by `hsmca audit verify`, summarised by `hsmca audit report`.
 *
 * The file is append-only JSON Lines, one record a line, each line one
 * compact JSON object ending in "\n".  Every record has:
 *
 *   "seq"   integer, 1 for the first record, +1 each record
 *   "prev"  lower-case hex SHA-256 of the previous line's exact bytes,
 *           its "\n" included; 64 zeros for seq 1
 *   "time"  RFC 3339 UTC with milliseconds, "2026-11-27T21:05:17.123Z"
 *   "type"  "start", "intent", "issue", "crl", "refusal", "checkpoint",
 *           "stop", "recovered"
 *
 * and, by type, the fields the caller gives (see signer/audit.md).  Because
 * "prev" hashes the stored bytes, no canonical form is needed: the chain is
 * the file.
 *
 * A "checkpoint" record carries "head" (equal to its "prev"), "records"
 * (records since the previous checkpoint), "key" (hex SHA-256 of the audit
 * public key's SubjectPublicKeyInfo DER) and "signature" (base64), a
 * signature by the audit key in the token over the bytes of
 *
 *   "hsmca-audit-checkpoint-v1\n<seq>\n<head>\n<time>\n"
 *
 * so every record before it is covered.  ECDSA signatures are DER, RSA
 * PKCS#1 v1.5 over SHA-256, Ed25519 raw; the digest is SHA-256 except for
 * Ed25519, which signs the message itself.
 *
 * Durability: audit_append returns only after the record is written and
 * fdatasync'ed.  Appends from many threads share one fdatasync (group
 * commit).  After any write or sync error the log is failed: every later
 * append fails, so the signer refuses every request (fail closed).
 *
 * A torn last line found at open (a crash during a write whose caller was
 * never answered) is cut off, and a "recovered" record saying how many
 * bytes were cut and their SHA-256 is appended before anything else.
 */
#ifndef HSMCA_AUDIT_H
#define HSMCA_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

struct audit_log;

/* Signs msg with the audit key: *siglen is the buffer size on entry.
 * Returns 0 or -1 (checkpoint skipped, tried again at the next record). */
typedef int (*audit_sign_fn)(void *arg, const uint8_t *msg, size_t msglen,
    uint8_t *sig, size_t *siglen);
/* Called at open for every record already in the log, in order, after
 * the whole chain checked out (rebuilds counters, serials, request ids). */
typedef void (*audit_scan_fn)(void *arg, const json_t *record);

struct audit_config {
	const char	*path;			/* created 0600 if absent */
	unsigned int	 checkpoint_every;	/* records; 0 means 1000 */
	EVP_PKEY	*audit_pub;		/* checks old checkpoints */
	audit_sign_fn	 sign;
	void		*sign_arg;
	audit_scan_fn	 scan;			/* may be NULL */
	void		*scan_arg;
};

/*
 * Opens the log, verifies the whole chain and every checkpoint with
 * audit_pub (a bad chain is an error: the signer does not start on a log
 * it cannot trust; the detail names the first bad record), cuts a torn
 * tail, replays the records to scan, starts the writer thread and appends
 * a "start" record.  Returns 0 or -1 with audit_error_detail() set.
 */
int		 audit_open(const struct audit_config *config,
		    struct audit_log **out);
/*
 * Appends rec (a JSON object; the log adds seq, prev, time and must not
 * find them already set) and waits until it is on stable storage.
 * Returns 0 and *seq, or -1 (the log has failed).  Thread-safe.
 * Does not take ownership of rec.
 */
int		 audit_append(struct audit_log *log, json_t *rec,
		    uint64_t *seq);
/* Appends a signed checkpoint now.  Returns 0 or -1. */
int		 audit_checkpoint(struct audit_log *log);
uint64_t	 audit_last_seq(struct audit_log *log);
/* 1 once a write or sync has failed. */
int		 audit_failed(struct audit_log *log);
/* Appends a "stop" record and a final checkpoint, stops the writer. */
void		 audit_close(struct audit_log *log);
const char	*audit_error_detail(void);

/* The encodings of the record fields: lower-case hex (out holds 2 * len
 * + 1), and strict base64 (no whitespace, padding only at the end),
 * returning the decoded length or -1 when it does not fit outlen. */
void		 audit_hex(const uint8_t *in, size_t len, char *out);
int		 audit_base64_decode(const char *in, uint8_t *out,
		    size_t outlen);

/* Appends since open, and the fdatasync calls they took (group commit). */
void		 audit_counters(struct audit_log *log, uint64_t *appends,
		    uint64_t *syncs);

/*
 * Verification, shared with `hsmca audit verify`: reads the log at path
 * and checks every line (JSON object, seq, prev, time) and every
 * checkpoint signature with audit_pub.  Returns 0 when all is well,
 * 1 when the log is bad (detail names the first bad record: its line
 * number and seq and what is wrong), -1 on an I/O error.  *last_seq and
 * *uncovered (records after the last checkpoint) are set on 0.
 */
int		 audit_verify_file(const char *path, EVP_PKEY *audit_pub,
		    uint64_t *last_seq, uint64_t *uncovered);

#endif
