/*
 * The signer's audit log (audit.h, signer/audit.md): a hash chain of JSON
 * lines with checkpoints signed by the audit key.
 *
 * Appends are serialised under one mutex, which assigns seq, computes prev
 * from the previous line and puts the finished line into a pending buffer.
 * One writer thread turns the pending bytes into write() + fdatasync():
 * everything that arrived while the previous sync ran goes into the next
 * one (group commit).  Nothing is ever written after a failed write or
 * sync, so a failure leaves at worst a torn tail, which the next open cuts.
 *
 * A record is serialised before the mutex is taken; under it only its
 * seq, prev and time are put in front.  Each appender waits on a
 * semaphore of its own, which the writer posts once the record is durable
 * (or the log has failed): a sync wakes exactly the appenders it covers,
 * and none of them has to take the mutex again on the way out.
 */
#include "config.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "audit.h"

/* The longest line accepted or written: a large CRL in base64 fits. */
#define AUDIT_MAX_LINE		(32u * 1024 * 1024)
#define AUDIT_MAX_SIG		1024
#define AUDIT_HASH_LEN		32
#define AUDIT_HEX_LEN		(2 * AUDIT_HASH_LEN)
#define AUDIT_TIME_LEN		24	/* 2026-11-27T21:05:17.123Z */
#define AUDIT_CHECKPOINT_MSG	"hsmca-audit-checkpoint-v1"
#define AUDIT_DEFAULT_EVERY	1000

struct audit_log {
	int		 al_fd;
	pthread_mutex_t	 al_mutex;
	pthread_cond_t	 al_wake;	/* writer: pending bytes or stop */
	struct audit_waiter *al_waiters; /* appenders waiting for a sync */
	pthread_t	 al_writer;
	int		 al_writer_running;	/* started: join it */
	int		 al_writer_gone;	/* it has returned */
	int		 al_stopping;
	atomic_int	 al_failed;	/* set under the mutex, read anywhere */
	EVP_MD		*al_sha256;	/* fetched once; chain hashing */
	EVP_MD_CTX	*al_md;		/* under the mutex */

	uint64_t	 al_last_seq;		/* last seq assigned */
	uint64_t	 al_durable_seq;	/* last seq on stable storage */
	uint8_t		 al_prev[AUDIT_HASH_LEN]; /* hash of the last line */
	char		*al_pending;
	size_t		 al_pending_len;
	size_t		 al_pending_cap;
	uint64_t	 al_pending_seq;	/* last seq in al_pending */

	uint64_t	 al_since_checkpoint;
	uint64_t	 al_checkpoint_failed_at; /* since_checkpoint; 0 none */
	unsigned int	 al_checkpoint_every;
	audit_sign_fn	 al_sign;
	void		*al_sign_arg;
	char		 al_key_id[AUDIT_HEX_LEN + 1];

	uint64_t	 al_appends;
	uint64_t	 al_syncs;
};

/* An appender waiting for its record to be durable. */
struct audit_waiter {
	uint64_t	 aw_seq;
	int		 aw_ok;		/* durable (1) or the log failed (0) */
	sem_t		 aw_sem;
	struct audit_waiter *aw_next;
};

/* What a read of the log found: the state to continue the chain from. */
struct audit_chain {
	EVP_PKEY	*ac_pub;
	char		 ac_key_id[AUDIT_HEX_LEN + 1];
	uint64_t	 ac_line;
	uint64_t	 ac_seq;
	uint8_t		 ac_prev[AUDIT_HASH_LEN];
	uint64_t	 ac_since_checkpoint;
	uint64_t	 ac_checkpoints;
	off_t		 ac_good_bytes;		/* up to the last full line */
	size_t		 ac_torn_len;		/* bytes after it, if allowed */
	uint8_t		 ac_torn_sha256[AUDIT_HASH_LEN];
};

struct audit_reader {
	int		 ar_fd;
	char		*ar_buf;
	size_t		 ar_cap;
	size_t		 ar_start;	/* first byte of the next line */
	size_t		 ar_scan;	/* no newline before this */
	size_t		 ar_end;
	int		 ar_eof;
};

enum { READ_LINE, READ_EOF, READ_TORN, READ_TOO_LONG, READ_IO };

static __thread char audit_detail[512];

static void audit_set_detail(const char *, ...)
	    __attribute__((format(printf, 1, 2)));

static void
audit_set_detail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(audit_detail, sizeof(audit_detail), fmt, ap);
	va_end(ap);
}

const char *
audit_error_detail(void)
{
	return audit_detail;
}

void
audit_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * len] = '\0';
}

static int
audit_key_id(EVP_PKEY *pub, char out[AUDIT_HEX_LEN + 1])
{
	uint8_t *der = NULL, md[AUDIT_HASH_LEN];
	int len, ret = -1;

	out[0] = '\0';
	len = i2d_PUBKEY(pub, &der);
	if (len <= 0)
		goto out;
	if (EVP_Digest(der, (size_t)len, md, NULL, EVP_sha256(), NULL) != 1)
		goto out;
	audit_hex(md, sizeof(md), out);
	ret = 0;
 out:
	OPENSSL_free(der);
	return ret;
}

static int
audit_key_supported(EVP_PKEY *pub)
{
	switch (EVP_PKEY_get_base_id(pub)) {
	case EVP_PKEY_EC:
	case EVP_PKEY_RSA:
	case EVP_PKEY_ED25519:
		return 1;
	default:
		return 0;
	}
}

/* The bytes a checkpoint signature covers; returns the length or -1. */
static int
audit_checkpoint_message(char *buf, size_t len, uint64_t seq,
    const char *head, const char *time)
{
	int n;

	n = snprintf(buf, len, AUDIT_CHECKPOINT_MSG "\n%" PRIu64 "\n%s\n%s\n",
	    seq, head, time);
	if (n < 0 || (size_t)n >= len)
		return -1;
	return n;
}

static void
audit_format_time(const struct timespec *ts, char out[AUDIT_TIME_LEN + 1])
{
	struct tm tm;

	if (gmtime_r(&ts->tv_sec, &tm) == NULL ||
	    snprintf(out, AUDIT_TIME_LEN + 1,
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
	    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    ts->tv_nsec / 1000000) != AUDIT_TIME_LEN)
		snprintf(out, AUDIT_TIME_LEN + 1, "1970-01-01T00:00:00.000Z");
}

static int
audit_digits(const char *s, int n, int min, int max)
{
	int i, v = 0;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v < min || v > max ? -1 : v;
}

/* Exactly the form the writer produces: "2026-11-27T21:05:17.123Z". */
static int
audit_time_valid(const char *s)
{
	if (strlen(s) != AUDIT_TIME_LEN || s[4] != '-' || s[7] != '-' ||
	    s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' ||
	    s[23] != 'Z')
		return 0;
	return audit_digits(s, 4, 1970, 9999) >= 0 &&
	    audit_digits(s + 5, 2, 1, 12) >= 0 &&
	    audit_digits(s + 8, 2, 1, 31) >= 0 &&
	    audit_digits(s + 11, 2, 0, 23) >= 0 &&
	    audit_digits(s + 14, 2, 0, 59) >= 0 &&
	    audit_digits(s + 17, 2, 0, 60) >= 0 &&
	    audit_digits(s + 20, 3, 0, 999) >= 0;
}

static int
audit_type_known(const char *type)
{
	static const char *const types[] = { "start", "intent", "issue",
	    "crl", "refusal", "checkpoint", "stop", "recovered" };
	size_t i;

	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(type, types[i]) == 0)
			return 1;
	return 0;
}

int
audit_base64_decode(const char *in, uint8_t *out, size_t outlen)
{
	size_t len = strlen(in), i, pad = 0;
	int n;

	if (len == 0 || len % 4 != 0 || len / 4 * 3 > outlen || len > INT_MAX)
		return -1;
	for (i = 0; i < len; i++) {
		char c = in[i];

		if (c == '=') {
			if (i < len - 2)
				return -1;
			pad++;
		} else if (pad != 0 || !((c >= 'A' && c <= 'Z') ||
		    (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '+' || c == '/'))
			return -1;
	}
	n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if (n < 0 || (size_t)n < pad)
		return -1;
	return n - (int)pad;
}

static int
audit_verify_signature(EVP_PKEY *pub, const uint8_t *msg, size_t msglen,
    const uint8_t *sig, size_t siglen)
{
	EVP_MD_CTX *ctx;
	const EVP_MD *md;
	int ok = 0;

	md = EVP_PKEY_get_base_id(pub) == EVP_PKEY_ED25519 ? NULL :
	    EVP_sha256();
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return 0;
	if (EVP_DigestVerifyInit(ctx, NULL, md, NULL, pub) == 1 &&
	    EVP_DigestVerify(ctx, sig, siglen, msg, msglen) == 1)
		ok = 1;
	EVP_MD_CTX_free(ctx);
	return ok;
}

/*
 * Line reader over a descriptor: returns READ_LINE with the line (without
 * its "\n"), READ_TORN with the bytes after the last "\n", READ_EOF,
 * READ_TOO_LONG or READ_IO.
 */
static int
audit_read_line(struct audit_reader *r, const char **line, size_t *len)
{
	char *nl, *nbuf;
	size_t ncap;
	ssize_t n;

	for (;;) {
		nl = r->ar_end > r->ar_scan ? memchr(r->ar_buf + r->ar_scan,
		    '\n', r->ar_end - r->ar_scan) : NULL;
		if (nl != NULL) {
			*line = r->ar_buf + r->ar_start;
			*len = (size_t)(nl - (r->ar_buf + r->ar_start));
			r->ar_start = r->ar_scan = (size_t)(nl - r->ar_buf) + 1;
			return READ_LINE;
		}
		r->ar_scan = r->ar_end;
		if (r->ar_end - r->ar_start > AUDIT_MAX_LINE)
			return READ_TOO_LONG;
		if (r->ar_eof) {
			if (r->ar_start == r->ar_end)
				return READ_EOF;
			*line = r->ar_buf + r->ar_start;
			*len = r->ar_end - r->ar_start;
			r->ar_start = r->ar_end;
			return READ_TORN;
		}
		if (r->ar_start > 0) {
			memmove(r->ar_buf, r->ar_buf + r->ar_start,
			    r->ar_end - r->ar_start);
			r->ar_end -= r->ar_start;
			r->ar_scan -= r->ar_start;
			r->ar_start = 0;
		}
		if (r->ar_end == r->ar_cap) {
			ncap = r->ar_cap == 0 ? 65536 : r->ar_cap * 2;
			if (ncap > AUDIT_MAX_LINE + 2)
				ncap = AUDIT_MAX_LINE + 2;
			if (ncap <= r->ar_cap)
				return READ_TOO_LONG;
			if ((nbuf = realloc(r->ar_buf, ncap)) == NULL)
				return READ_IO;
			r->ar_buf = nbuf;
			r->ar_cap = ncap;
		}
		n = read(r->ar_fd, r->ar_buf + r->ar_end, r->ar_cap - r->ar_end);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return READ_IO;
		}
		if (n == 0)
			r->ar_eof = 1;
		r->ar_end += (size_t)n;
	}
}

static int
audit_check_checkpoint(struct audit_chain *c, json_t *rec, uint64_t seq,
    const char *prev, const char *time, char *why, size_t whylen)
{
	const char *head, *key, *sigb64;
	json_t *records;
	uint8_t sig[AUDIT_MAX_SIG];
	char msg[256];
	int siglen, msglen;

	head = json_string_value(json_object_get(rec, "head"));
	key = json_string_value(json_object_get(rec, "key"));
	sigb64 = json_string_value(json_object_get(rec, "signature"));
	records = json_object_get(rec, "records");
	if (head == NULL || key == NULL || sigb64 == NULL ||
	    !json_is_integer(records)) {
		snprintf(why, whylen, "checkpoint without head, records, key "
		    "or signature");
		return -1;
	}
	if (strcmp(head, prev) != 0) {
		snprintf(why, whylen, "checkpoint head does not match the "
		    "chain (head mismatch)");
		return -1;
	}
	if (json_integer_value(records) < 0 ||
	    (uint64_t)json_integer_value(records) != c->ac_since_checkpoint) {
		snprintf(why, whylen, "checkpoint counts %" JSON_INTEGER_FORMAT
		    " records, the chain has %" PRIu64 " since the last one",
		    json_integer_value(records), c->ac_since_checkpoint);
		return -1;
	}
	if (c->ac_pub == NULL)
		return 0;
	if (strcmp(key, c->ac_key_id) != 0) {
		snprintf(why, whylen, "checkpoint made by another key (%.16s..., "
		    "expected %.16s...)", key, c->ac_key_id);
		return -1;
	}
	siglen = audit_base64_decode(sigb64, sig, sizeof(sig));
	msglen = audit_checkpoint_message(msg, sizeof(msg), seq, head, time);
	if (siglen <= 0 || msglen < 0 || !audit_verify_signature(c->ac_pub,
	    (const uint8_t *)msg, (size_t)msglen, sig, (size_t)siglen)) {
		snprintf(why, whylen, "checkpoint signature invalid");
		return -1;
	}
	return 0;
}

/*
 * Checks one complete line (without its "\n") against the chain so far and
 * advances the chain.  Returns 0, or 1 with the detail set.  *recp gets the
 * parsed record when recp is not NULL.
 */
static int
audit_check_line(struct audit_chain *c, const char *line, size_t len,
    json_t **recp)
{
	json_t *rec = NULL, *jseq;
	json_error_t jerr;
	const char *prev, *time, *type;
	char prevhex[AUDIT_HEX_LEN + 1], why[200];
	uint64_t expect = c->ac_seq + 1, seq = 0;
	EVP_MD_CTX *md = NULL;
	int ret = 1;

	if (recp != NULL)
		*recp = NULL;
	why[0] = '\0';
	c->ac_line++;
	if (len == 0) {
		snprintf(why, sizeof(why), "empty line");
		goto out;
	}
	rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (rec == NULL) {
		snprintf(why, sizeof(why), "bad JSON: %s", jerr.text);
		goto out;
	}
	if (!json_is_object(rec)) {
		snprintf(why, sizeof(why), "bad JSON: not an object");
		goto out;
	}
	jseq = json_object_get(rec, "seq");
	if (!json_is_integer(jseq) || json_integer_value(jseq) <= 0) {
		snprintf(why, sizeof(why), "no valid seq");
		goto out;
	}
	seq = (uint64_t)json_integer_value(jseq);
	if (seq != expect) {
		snprintf(why, sizeof(why), "seq gap: found %" PRIu64 " where %"
		    PRIu64 " was expected (a record was deleted, inserted or "
		    "reordered)", seq, expect);
		goto out;
	}
	audit_hex(c->ac_prev, sizeof(c->ac_prev), prevhex);
	prev = json_string_value(json_object_get(rec, "prev"));
	if (prev == NULL || strcmp(prev, prevhex) != 0) {
		if (c->ac_line == 1)
			snprintf(why, sizeof(why), "prev mismatch: the first "
			    "record must have 64 zeros");
		else
			snprintf(why, sizeof(why), "prev mismatch: not the "
			    "SHA-256 of line %" PRIu64 " (a record was edited, "
			    "deleted or reordered)", c->ac_line - 1);
		goto out;
	}
	time = json_string_value(json_object_get(rec, "time"));
	if (time == NULL || !audit_time_valid(time)) {
		snprintf(why, sizeof(why), "no valid time");
		goto out;
	}
	type = json_string_value(json_object_get(rec, "type"));
	if (type == NULL || !audit_type_known(type)) {
		snprintf(why, sizeof(why), "no known type");
		goto out;
	}
	if (strcmp(type, "checkpoint") == 0) {
		if (audit_check_checkpoint(c, rec, seq, prev, time, why,
		    sizeof(why)) != 0)
			goto out;
	}

	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, line, len) != 1 ||
	    EVP_DigestUpdate(md, "\n", 1) != 1 ||
	    EVP_DigestFinal_ex(md, c->ac_prev, NULL) != 1) {
		snprintf(why, sizeof(why), "SHA-256 failed");
		goto out;
	}
	c->ac_seq = seq;
	if (strcmp(type, "checkpoint") == 0) {
		c->ac_since_checkpoint = 0;
		c->ac_checkpoints++;
	} else
		c->ac_since_checkpoint++;
	c->ac_good_bytes += (off_t)len + 1;
	ret = 0;
 out:
	EVP_MD_CTX_free(md);
	if (ret != 0) {
		if (seq != 0)
			audit_set_detail("line %" PRIu64 " (seq %" PRIu64 "): %s",
			    c->ac_line, seq, why);
		else
			audit_set_detail("line %" PRIu64 " (seq %" PRIu64
			    " expected): %s", c->ac_line, expect, why);
	}
	if (ret == 0 && recp != NULL)
		*recp = rec;
	else
		json_decref(rec);
	return ret;
}

/*
 * Reads the whole log from fd's current offset and checks the chain.  A
 * torn last line is an error unless allow_torn, in which case it is
 * measured in c.  scan, if set, sees every record, but only after a first
 * pass found the whole chain good (the caller makes two passes).
 * Returns 0, 1 (bad log, detail set) or -1 (I/O, detail set).
 */
static int
audit_read_chain(int fd, EVP_PKEY *pub, int allow_torn,
    audit_scan_fn scan, void *scan_arg, struct audit_chain *c)
{
	struct audit_reader r;
	const char *line;
	json_t *rec;
	size_t len;
	int ret = -1, st;

	memset(c, 0, sizeof(*c));
	memset(&r, 0, sizeof(r));
	r.ar_fd = fd;
	c->ac_pub = pub;
	if (pub != NULL) {
		if (!audit_key_supported(pub)) {
			audit_set_detail("audit key type not supported "
			    "(EC, RSA or Ed25519)");
			goto out;
		}
		if (audit_key_id(pub, c->ac_key_id) != 0) {
			audit_set_detail("cannot encode the audit public key");
			goto out;
		}
	}
	for (;;) {
		st = audit_read_line(&r, &line, &len);
		if (st == READ_EOF)
			break;
		if (st == READ_IO) {
			audit_set_detail("read: %s", strerror(errno));
			goto out;
		}
		if (st == READ_TOO_LONG) {
			audit_set_detail("line %" PRIu64 " (seq %" PRIu64
			    " expected): longer than %u bytes", c->ac_line + 1,
			    c->ac_seq + 1, AUDIT_MAX_LINE);
			ret = 1;
			goto out;
		}
		if (st == READ_TORN) {
			if (!allow_torn) {
				audit_set_detail("line %" PRIu64 " (seq %" PRIu64
				    " expected): torn last line (%zu bytes "
				    "without a final newline)", c->ac_line + 1,
				    c->ac_seq + 1, len);
				ret = 1;
				goto out;
			}
			c->ac_torn_len = len;
			if (EVP_Digest(line, len, c->ac_torn_sha256, NULL,
			    EVP_sha256(), NULL) != 1) {
				audit_set_detail("SHA-256 failed");
				goto out;
			}
			break;
		}
		if (audit_check_line(c, line, len, scan ? &rec : NULL) != 0) {
			ret = 1;
			goto out;
		}
		if (scan != NULL) {
			scan(scan_arg, rec);
			json_decref(rec);
		}
	}
	ret = 0;
 out:
	free(r.ar_buf);
	return ret;
}

int
audit_verify_file(const char *path, EVP_PKEY *audit_pub, uint64_t *last_seq,
    uint64_t *uncovered)
{
	struct audit_chain c;
	int fd, ret;

	*last_seq = 0;
	*uncovered = 0;
	audit_detail[0] = '\0';
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		audit_set_detail("%s: %s", path, strerror(errno));
		return -1;
	}
	ret = audit_read_chain(fd, audit_pub, 0, NULL, NULL, &c);
	close(fd);
	if (ret == 0) {
		*last_seq = c.ac_seq;
		*uncovered = c.ac_since_checkpoint;
	}
	return ret;
}

/* Writer side. */

/*
 * Appends head, then body, then a newline to the pending buffer; returns a
 * pointer to the line in it (valid until the next append), or NULL.
 */
static const char *
audit_pending_add(struct audit_log *log, const char *head, size_t headlen,
    const char *body, size_t bodylen)
{
	size_t need, ncap, at = log->al_pending_len;
	char *nbuf;

	if (headlen > AUDIT_MAX_LINE || bodylen > AUDIT_MAX_LINE ||
	    headlen + bodylen + 1 > SIZE_MAX - at)
		return NULL;
	need = at + headlen + bodylen + 1;
	if (need > log->al_pending_cap) {
		ncap = log->al_pending_cap == 0 ? 65536 : log->al_pending_cap;
		while (ncap < need) {
			if (ncap > SIZE_MAX / 2)
				return NULL;
			ncap *= 2;
		}
		if ((nbuf = realloc(log->al_pending, ncap)) == NULL)
			return NULL;
		log->al_pending = nbuf;
		log->al_pending_cap = ncap;
	}
	memcpy(log->al_pending + at, head, headlen);
	memcpy(log->al_pending + at + headlen, body, bodylen);
	log->al_pending[need - 1] = '\n';
	log->al_pending_len = need;
	return log->al_pending + at;
}

/*
 * A record serialised on its own (JSON_COMPACT, so "{...}" with no
 * newline), checked to be one object that the chain fields can be put in
 * front of.  Returns the text (free() it) and its length, or NULL.
 */
static char *
audit_serialise(const json_t *rec, size_t *lenp)
{
	char *body;
	size_t len;

	if ((body = json_dumps(rec, JSON_COMPACT)) == NULL) {
		audit_set_detail("record cannot be serialised");
		return NULL;
	}
	len = strlen(body);
	if (len < 2 || body[0] != '{' || body[len - 1] != '}' ||
	    len > AUDIT_MAX_LINE || memchr(body, '\n', len) != NULL) {
		audit_set_detail("record too long or not one line");
		free(body);
		return NULL;
	}
	*lenp = len;
	return body;
}

/*
 * Under the mutex: gives the serialised record body (audit_serialise) its
 * place in the chain and queues its line, which is exactly what
 * json_dumps would give for {"seq":..,"prev":..,"time":..} followed by the
 * record's own members in order.  A record that cannot be queued is
 * refused without using up a seq (the log stays good); returns 0 and
 * *seq, or -1.
 */
static int
audit_enqueue_locked(struct audit_log *log, const char *body, size_t bodylen,
    const char *time, uint64_t *seqp)
{
	char prevhex[AUDIT_HEX_LEN + 1], now[AUDIT_TIME_LEN + 1], head[160];
	const char *line;
	struct timespec ts;
	uint64_t seq = log->al_last_seq + 1;
	size_t linelen;
	int headlen;

	if (log->al_failed) {
		audit_set_detail("the audit log has failed");
		return -1;
	}
	if (seq > (uint64_t)LLONG_MAX) {
		audit_set_detail("sequence exhausted");
		return -1;
	}
	if (time == NULL) {
		clock_gettime(CLOCK_REALTIME, &ts);
		audit_format_time(&ts, now);
	} else
		snprintf(now, sizeof(now), "%s", time);
	audit_hex(log->al_prev, sizeof(log->al_prev), prevhex);
	/* Hex and the time format need no JSON escaping.  The body's "{"
	 * becomes the separator, or the end of an empty object. */
	headlen = snprintf(head, sizeof(head),
	    "{\"seq\":%" PRIu64 ",\"prev\":\"%s\",\"time\":\"%s\"%s", seq,
	    prevhex, now, bodylen > 2 ? "," : "");
	if (headlen < 0 || (size_t)headlen >= sizeof(head)) {
		audit_set_detail("record header too long");
		return -1;
	}
	linelen = (size_t)headlen + bodylen - 1;
	if (linelen > AUDIT_MAX_LINE) {
		audit_set_detail("record too long or not one line");
		return -1;
	}
	if ((line = audit_pending_add(log, head, (size_t)headlen, body + 1,
	    bodylen - 1)) == NULL) {
		audit_set_detail("out of memory");
		return -1;
	}
	/* The line is queued: the chain moves on, whatever happens next. */
	if (EVP_DigestInit_ex(log->al_md, log->al_sha256, NULL) != 1 ||
	    EVP_DigestUpdate(log->al_md, line, linelen + 1) != 1 ||
	    EVP_DigestFinal_ex(log->al_md, log->al_prev, NULL) != 1) {
		/* Cannot chain on: nothing more may be written. */
		log->al_failed = 1;
		audit_set_detail("SHA-256 failed");
		return -1;
	}
	log->al_last_seq = seq;
	log->al_pending_seq = seq;
	log->al_appends++;
	*seqp = seq;
	pthread_cond_signal(&log->al_wake);
	return 0;
}

/*
 * Under the mutex: signs and queues a checkpoint over everything queued
 * so far.  Returns 0 and *seq, or -1 (signing failed or the log failed).
 */
static int
audit_checkpoint_locked(struct audit_log *log, uint64_t *seqp)
{
	json_t *rec = NULL;
	char head[AUDIT_HEX_LEN + 1], time[AUDIT_TIME_LEN + 1], msg[256];
	char b64[((AUDIT_MAX_SIG + 2) / 3) * 4 + 1];
	uint8_t sig[AUDIT_MAX_SIG];
	struct timespec ts;
	size_t siglen = sizeof(sig);
	uint64_t seq = log->al_last_seq + 1, records;
	char *body = NULL;
	size_t bodylen;
	int msglen, ret = -1;

	if (log->al_failed) {
		audit_set_detail("the audit log has failed");
		goto out;
	}
	records = log->al_since_checkpoint;
	audit_hex(log->al_prev, sizeof(log->al_prev), head);
	/* The record's own time, fixed here so that the signature covers
	 * exactly what is written. */
	clock_gettime(CLOCK_REALTIME, &ts);
	audit_format_time(&ts, time);
	msglen = audit_checkpoint_message(msg, sizeof(msg), seq, head, time);
	if (msglen < 0)
		goto out;
	if (log->al_sign(log->al_sign_arg, (const uint8_t *)msg,
	    (size_t)msglen, sig, &siglen) != 0 || siglen == 0 ||
	    siglen > sizeof(sig)) {
		audit_set_detail("the audit key did not sign the checkpoint");
		log->al_checkpoint_failed_at = records;
		goto out;
	}
	EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
	if ((rec = json_object()) == NULL ||
	    json_object_set_new(rec, "type", json_string("checkpoint")) ||
	    json_object_set_new(rec, "head", json_string(head)) ||
	    json_object_set_new(rec, "records",
	    json_integer((json_int_t)records)) ||
	    json_object_set_new(rec, "key", json_string(log->al_key_id)) ||
	    json_object_set_new(rec, "signature", json_string(b64))) {
		audit_set_detail("out of memory");
		goto out;
	}
	if ((body = audit_serialise(rec, &bodylen)) == NULL)
		goto out;
	ret = audit_enqueue_locked(log, body, bodylen, time, seqp);
	if (ret == 0) {
		log->al_since_checkpoint = 0;
		log->al_checkpoint_failed_at = 0;
	}
 out:
	free(body);
	json_decref(rec);
	return ret;
}

/*
 * Under the mutex: w is to learn when seq is durable.  When there is
 * nothing to wait for (already durable, the log failed, no writer), its
 * semaphore is posted at once.
 */
static void
audit_waiter_add_locked(struct audit_log *log, struct audit_waiter *w,
    uint64_t seq)
{
	w->aw_seq = seq;
	w->aw_ok = 0;
	w->aw_next = NULL;
	(void)sem_init(&w->aw_sem, 0, 0);
	if (log->al_durable_seq >= seq || log->al_failed ||
	    !log->al_writer_running || log->al_writer_gone) {
		w->aw_ok = log->al_durable_seq >= seq;
		(void)sem_post(&w->aw_sem);
		return;
	}
	w->aw_next = log->al_waiters;
	log->al_waiters = w;
}

/* Without the mutex: waits for the writer's word on w; 0 durable, -1. */
static int
audit_waiter_wait(struct audit_waiter *w)
{
	while (sem_wait(&w->aw_sem) != 0)
		if (errno != EINTR)
			abort();	/* the writer may still post: no way on */
	(void)sem_destroy(&w->aw_sem);
	if (!w->aw_ok) {
		audit_set_detail("the audit log has failed");
		return -1;
	}
	return 0;
}

/*
 * Under the mutex: takes off the list every waiter whose record is now
 * durable, or all of them when the log has failed or the writer stops.
 * The caller wakes them (audit_waiters_wake) once the mutex is released.
 */
static struct audit_waiter *
audit_waiters_take_locked(struct audit_log *log, int all)
{
	struct audit_waiter **pw = &log->al_waiters, *w, *done = NULL;

	while ((w = *pw) != NULL) {
		if (all || w->aw_seq <= log->al_durable_seq) {
			*pw = w->aw_next;
			w->aw_ok = w->aw_seq <= log->al_durable_seq;
			w->aw_next = done;
			done = w;
		} else
			pw = &w->aw_next;
	}
	return done;
}

static void
audit_waiters_wake(struct audit_waiter *w)
{
	struct audit_waiter *next;

	for (; w != NULL; w = next) {
		/* w lives on its appender's stack: read it before the post.
		 * glibc's sem_post touches the semaphore only up to the
		 * atomic that releases the waiter (since 2.21, bug 12674), so
		 * the waiter may destroy it as soon as sem_wait returns;
		 * helgrind, which orders the post before the real call,
		 * reports those reads as races. */
		next = w->aw_next;
		(void)sem_post(&w->aw_sem);
	}
}

static int
audit_write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static void *
audit_writer(void *arg)
{
	struct audit_log *log = arg;
	struct audit_waiter *done;
	char *spare = NULL, *buf;
	size_t spare_cap = 0, len, cap;
	uint64_t upto;
	int err;

	pthread_mutex_lock(&log->al_mutex);
	for (;;) {
		while (log->al_pending_len == 0 && !log->al_stopping &&
		    !log->al_failed)
			pthread_cond_wait(&log->al_wake, &log->al_mutex);
		if (log->al_failed || log->al_pending_len == 0)
			break;
		/* Swap buffers: appenders fill the other one meanwhile. */
		buf = log->al_pending;
		len = log->al_pending_len;
		cap = log->al_pending_cap;
		upto = log->al_pending_seq;
		log->al_pending = spare;
		log->al_pending_cap = spare_cap;
		log->al_pending_len = 0;
		pthread_mutex_unlock(&log->al_mutex);

		err = audit_write_all(log->al_fd, buf, len) != 0 ||
		    fdatasync(log->al_fd) != 0;

		pthread_mutex_lock(&log->al_mutex);
		spare = buf;
		spare_cap = cap;
		if (err) {
			log->al_failed = 1;
		} else {
			log->al_durable_seq = upto;
			log->al_syncs++;
		}
		done = audit_waiters_take_locked(log, err);
		pthread_mutex_unlock(&log->al_mutex);
		audit_waiters_wake(done);
		pthread_mutex_lock(&log->al_mutex);
	}
	/* Failed or stopping: nobody is left waiting for a sync. */
	log->al_writer_gone = 1;
	done = audit_waiters_take_locked(log, 1);
	pthread_mutex_unlock(&log->al_mutex);
	audit_waiters_wake(done);
	free(spare);
	return NULL;
}

int
audit_append(struct audit_log *log, json_t *rec, uint64_t *seqp)
{
	struct audit_waiter w;
	const char *type;
	char *body;
	size_t bodylen;
	uint64_t seq = 0, cpseq;
	int ret;

	*seqp = 0;
	if (!json_is_object(rec)) {
		audit_set_detail("record is not a JSON object");
		return -1;
	}
	type = json_string_value(json_object_get(rec, "type"));
	if (type == NULL || !audit_type_known(type) ||
	    strcmp(type, "checkpoint") == 0) {
		audit_set_detail("record without a known type");
		return -1;
	}
	if (json_object_get(rec, "seq") || json_object_get(rec, "prev") ||
	    json_object_get(rec, "time")) {
		audit_set_detail("record already has seq, prev or time");
		return -1;
	}
	/* The costly part, outside the mutex. */
	if ((body = audit_serialise(rec, &bodylen)) == NULL)
		return -1;
	pthread_mutex_lock(&log->al_mutex);
	if (audit_enqueue_locked(log, body, bodylen, NULL, &seq) != 0) {
		pthread_mutex_unlock(&log->al_mutex);
		free(body);
		return -1;
	}
	log->al_since_checkpoint++;
	/* A failed signature is tried again after the next record. */
	if (log->al_since_checkpoint >= log->al_checkpoint_every &&
	    log->al_since_checkpoint != log->al_checkpoint_failed_at)
		(void)audit_checkpoint_locked(log, &cpseq);
	audit_waiter_add_locked(log, &w, seq);
	pthread_mutex_unlock(&log->al_mutex);
	free(body);
	ret = audit_waiter_wait(&w);
	if (ret == 0)
		*seqp = seq;
	return ret;
}

int
audit_checkpoint(struct audit_log *log)
{
	struct audit_waiter w;
	uint64_t seq;
	int ret;

	pthread_mutex_lock(&log->al_mutex);
	ret = audit_checkpoint_locked(log, &seq);
	if (ret == 0)
		audit_waiter_add_locked(log, &w, seq);
	pthread_mutex_unlock(&log->al_mutex);
	if (ret == 0)
		ret = audit_waiter_wait(&w);
	return ret;
}

uint64_t
audit_last_seq(struct audit_log *log)
{
	uint64_t seq;

	pthread_mutex_lock(&log->al_mutex);
	seq = log->al_last_seq;
	pthread_mutex_unlock(&log->al_mutex);
	return seq;
}

int
audit_failed(struct audit_log *log)
{
	return atomic_load(&log->al_failed);
}

void
audit_counters(struct audit_log *log, uint64_t *appends, uint64_t *syncs)
{
	pthread_mutex_lock(&log->al_mutex);
	*appends = log->al_appends;
	*syncs = log->al_syncs;
	pthread_mutex_unlock(&log->al_mutex);
}

static json_t *
audit_lifecycle_record(const char *type)
{
	json_t *rec;

	if ((rec = json_object()) == NULL)
		return NULL;
	if (json_object_set_new(rec, "type", json_string(type)) ||
	    json_object_set_new(rec, "pid", json_integer((json_int_t)getpid())) ||
	    json_object_set_new(rec, "version", json_string(PACKAGE_VERSION))) {
		json_decref(rec);
		return NULL;
	}
	return rec;
}

static void
audit_free(struct audit_log *log)
{
	if (log == NULL)
		return;
	if (log->al_writer_running) {
		pthread_mutex_lock(&log->al_mutex);
		log->al_stopping = 1;
		pthread_cond_signal(&log->al_wake);
		pthread_mutex_unlock(&log->al_mutex);
		pthread_join(log->al_writer, NULL);
	}
	if (log->al_fd != -1)
		close(log->al_fd);
	pthread_cond_destroy(&log->al_wake);
	pthread_mutex_destroy(&log->al_mutex);
	EVP_MD_CTX_free(log->al_md);
	EVP_MD_free(log->al_sha256);
	free(log->al_pending);
	free(log);
}

void
audit_close(struct audit_log *log)
{
	json_t *rec;
	uint64_t seq;

	if (log == NULL)
		return;
	if ((rec = audit_lifecycle_record("stop")) != NULL) {
		(void)audit_append(log, rec, &seq);
		json_decref(rec);
	}
	(void)audit_checkpoint(log);
	audit_free(log);
}

/* Makes the new file's directory entry durable. */
static int
audit_sync_dir(const char *path)
{
	char *copy, *dir;
	int fd, ret = -1;

	if ((copy = strdup(path)) == NULL)
		return -1;
	dir = dirname(copy);
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		if (fsync(fd) == 0)
			ret = 0;
		close(fd);
	}
	free(copy);
	return ret;
}

static int
audit_open_file(const char *path, int *created)
{
	struct stat st;
	int fd, flags = O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW;

	*created = 0;
	fd = open(path, flags | O_CREAT | O_EXCL, 0600);
	if (fd != -1)
		*created = 1;
	else if (errno == EEXIST)
		fd = open(path, flags | O_NONBLOCK);
	if (fd == -1) {
		audit_set_detail("%s: %s%s", path, strerror(errno),
		    errno == ELOOP ? " (a symbolic link)" : "");
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		audit_set_detail("%s: fstat: %s", path, strerror(errno));
		goto bad;
	}
	if (!S_ISREG(st.st_mode)) {
		audit_set_detail("%s: not a regular file", path);
		goto bad;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		audit_set_detail("%s: writable by group or others (mode %04o)",
		    path, (unsigned int)(st.st_mode & 07777));
		goto bad;
	}
	if (fcntl(fd, F_SETFL, O_RDWR | O_APPEND) == -1) {
		audit_set_detail("%s: fcntl: %s", path, strerror(errno));
		goto bad;
	}
	/* One writer per log: a second signer on the same file would fork
	 * the chain. */
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		audit_set_detail("%s: in use by another process (%s)", path,
		    strerror(errno));
		goto bad;
	}
	return fd;
 bad:
	close(fd);
	return -1;
}

int
audit_open(const struct audit_config *config, struct audit_log **out)
{
	struct audit_log *log = NULL;
	struct audit_chain c;
	json_t *rec = NULL;
	char hex[AUDIT_HEX_LEN + 1];
	uint64_t seq;
	int created, ret = -1, st;

	*out = NULL;
	audit_detail[0] = '\0';
	if (config->path == NULL || config->audit_pub == NULL ||
	    config->sign == NULL) {
		audit_set_detail("audit log: path, public key and signer needed");
		return -1;
	}
	if ((log = calloc(1, sizeof(*log))) == NULL) {
		audit_set_detail("out of memory");
		return -1;
	}
	log->al_fd = -1;
	pthread_mutex_init(&log->al_mutex, NULL);
	pthread_cond_init(&log->al_wake, NULL);
	atomic_init(&log->al_failed, 0);
	if ((log->al_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL ||
	    (log->al_md = EVP_MD_CTX_new()) == NULL) {
		audit_set_detail("SHA-256 is not available");
		goto out;
	}
	log->al_checkpoint_every = config->checkpoint_every != 0 ?
	    config->checkpoint_every : AUDIT_DEFAULT_EVERY;
	log->al_sign = config->sign;
	log->al_sign_arg = config->sign_arg;

	if ((log->al_fd = audit_open_file(config->path, &created)) == -1)
		goto out;
	if (created && audit_sync_dir(config->path) != 0) {
		audit_set_detail("%s: cannot sync its directory", config->path);
		goto out;
	}
	st = audit_read_chain(log->al_fd, config->audit_pub, 1, NULL, NULL, &c);
	if (st != 0) {
		char why[sizeof(audit_detail)];

		snprintf(why, sizeof(why), "%s", audit_detail);
		audit_set_detail("%s: %s", config->path, why);
		goto out;
	}
	memcpy(log->al_key_id, c.ac_key_id, sizeof(log->al_key_id));
	if (c.ac_torn_len > AUDIT_MAX_LINE) {
		audit_set_detail("%s: %zu bytes after the last full line: more "
		    "than one torn record", config->path, c.ac_torn_len);
		goto out;
	}
	if (c.ac_torn_len > 0 && (ftruncate(log->al_fd, c.ac_good_bytes) != 0 ||
	    fdatasync(log->al_fd) != 0)) {
		audit_set_detail("%s: cutting the torn tail: %s", config->path,
		    strerror(errno));
		goto out;
	}
	if (config->scan != NULL) {
		struct audit_chain again;

		/* Second pass: the chain is known good, replay it. */
		if (lseek(log->al_fd, 0, SEEK_SET) == -1 ||
		    audit_read_chain(log->al_fd, config->audit_pub, 0,
		    config->scan, config->scan_arg, &again) != 0 ||
		    again.ac_seq != c.ac_seq ||
		    memcmp(again.ac_prev, c.ac_prev, sizeof(c.ac_prev)) != 0) {
			char why[sizeof(audit_detail)];

			snprintf(why, sizeof(why), "%s", audit_detail);
			audit_set_detail("%s: changed while replayed %s",
			    config->path, why);
			goto out;
		}
	}
	log->al_last_seq = log->al_durable_seq = c.ac_seq;
	memcpy(log->al_prev, c.ac_prev, sizeof(log->al_prev));
	log->al_since_checkpoint = c.ac_since_checkpoint;

	if (pthread_create(&log->al_writer, NULL, audit_writer, log) != 0) {
		audit_set_detail("cannot start the audit writer thread");
		goto out;
	}
	log->al_writer_running = 1;

	if (c.ac_torn_len > 0) {
		audit_hex(c.ac_torn_sha256, sizeof(c.ac_torn_sha256), hex);
		if ((rec = json_object()) == NULL ||
		    json_object_set_new(rec, "type", json_string("recovered")) ||
		    json_object_set_new(rec, "cut_bytes",
		    json_integer((json_int_t)c.ac_torn_len)) ||
		    json_object_set_new(rec, "cut_sha256", json_string(hex)) ||
		    audit_append(log, rec, &seq) != 0)
			goto out;
		json_decref(rec);
		rec = NULL;
	}
	if ((rec = audit_lifecycle_record("start")) == NULL ||
	    audit_append(log, rec, &seq) != 0)
		goto out;
	ret = 0;
	*out = log;
	log = NULL;
 out:
	if (ret != 0 && audit_detail[0] == '\0')
		audit_set_detail("%s: cannot open the audit log", config->path);
	json_decref(rec);
	audit_free(log);
	return ret;
}
