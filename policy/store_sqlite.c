/*
 * The inventory store on SQLite: one database file in WAL mode with
 * synchronous=FULL, so a commit is on disk when it returns and a crash
 * loses no completed call.  store.c has checked every argument already.
 *
 * Every statement is prepared once at open (the list queries on first use,
 * one per combination of filters) and every value is bound, never
 * formatted into SQL.  Every write runs in BEGIN IMMEDIATE, which takes the
 * write lock up front: a read that later upgrades to a write could fail
 * with SQLITE_BUSY where busy_timeout cannot help.
 *
 * Walks (store_pending, store_list) read a batch of rows, reset the
 * statement and only then call back, so a callback may call the store
 * again (complete the pending row it was given, say) and never sees a row
 * that is still being read.
 */
#include "config.h"

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store.h"

#define SQLSTORE_VERSION	1		/* PRAGMA user_version */
#define SQLSTORE_APPLICATION_ID	0x68734341	/* "hsCA" */
#define SQLSTORE_BUSY_MS	5000
#define SQLSTORE_BATCH		32		/* rows per walk step */
#define SQLSTORE_FILTERS	5		/* see sqlstore_list_where */

/* The columns every certificate query returns, in sqlstore_row() order. */
#define SQLSTORE_COLUMNS \
	"id, status, request_id, serial, requester, rule, profile, " \
	"key_name, identity, subject, sans, renewed_from, renewed_by, " \
	"failure, created_at, not_before, not_after, revoked_at, reason, der"

/*
 * Status as text so that an operator reading the file with sqlite3(1)
 * understands it.  The CHECKs hold the invariants the code relies on:
 * a serial and a certificate exactly when issued or revoked, a revocation
 * time exactly when revoked.  renewed_from is not a foreign key: the
 * certificate being renewed may predate this inventory.
 */
static const char sqlstore_schema[] =
	"CREATE TABLE certificates ("
	" id INTEGER PRIMARY KEY,"
	" request_id TEXT UNIQUE NOT NULL CHECK (length(request_id) = 32),"
	" serial TEXT UNIQUE CHECK (serial IS NULL OR"
	"  length(serial) BETWEEN 1 AND 40),"
	" status TEXT NOT NULL CHECK (status IN"
	"  ('pending', 'issued', 'failed', 'revoked')),"
	" requester TEXT NOT NULL,"
	" rule TEXT NOT NULL,"
	" profile TEXT NOT NULL,"
	" key_name TEXT NOT NULL,"
	" identity TEXT NOT NULL,"
	" subject TEXT NOT NULL,"
	" sans TEXT NOT NULL,"
	" renewed_from TEXT,"
	" renewed_by TEXT REFERENCES certificates (serial),"
	" failure TEXT,"
	" created_at INTEGER NOT NULL,"
	" not_before INTEGER NOT NULL DEFAULT 0,"
	" not_after INTEGER NOT NULL DEFAULT 0,"
	" revoked_at INTEGER,"
	" reason INTEGER,"
	" der BLOB,"
	" CHECK ((status IN ('issued', 'revoked')) ="
	"  (serial IS NOT NULL AND der IS NOT NULL)),"
	" CHECK ((status = 'revoked') ="
	"  (revoked_at IS NOT NULL AND reason IS NOT NULL)),"
	" CHECK ((status = 'failed') = (failure IS NOT NULL)));"
	"CREATE INDEX certificates_not_after ON certificates (not_after);"
	"CREATE INDEX certificates_identity ON certificates (identity);"
	"CREATE INDEX certificates_status_not_after ON certificates"
	" (status, not_after);"
	"CREATE INDEX certificates_requester ON certificates (requester);"
	"CREATE TABLE tokens ("
	" hash BLOB PRIMARY KEY CHECK (typeof(hash) = 'blob' AND"
	"  length(hash) = 32),"
	" requester TEXT NOT NULL,"
	" expires_at INTEGER NOT NULL CHECK (expires_at > 0),"
	" uses_left INTEGER NOT NULL CHECK (uses_left >= 0),"
	" created_at INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE TABLE crl ("
	" id INTEGER PRIMARY KEY CHECK (id = 1),"
	" number INTEGER NOT NULL CHECK (number >= 0));"
	"INSERT INTO crl (id, number) VALUES (1, 0);"
	"PRAGMA application_id = 1752384321;"
	"PRAGMA user_version = 1;";

/* Indexes added after schema version 1 shipped: made when missing; and
 * the one on status alone, which the one on (status, not_after) replaces. */
static const char sqlstore_schema_indexes[] =
	"CREATE INDEX IF NOT EXISTS certificates_renewed_by"
	" ON certificates (renewed_by);"
	"CREATE INDEX IF NOT EXISTS certificates_status_not_after"
	" ON certificates (status, not_after);"
	"DROP INDEX IF EXISTS certificates_status;";

enum sqlstore_stmt {
	SQ_BEGIN,
	SQ_COMMIT,
	SQ_ROLLBACK,
	SQ_SAVEPOINT,
	SQ_RELEASE,
	SQ_ROLLBACK_TO,
	SQ_PENDING_ADD,
	SQ_STATE_BY_ID,
	SQ_SERIAL_USED,
	SQ_COMPLETE,
	SQ_RENEWED_BY,
	SQ_FAIL,
	SQ_PENDING,
	SQ_GET,
	SQ_GET_BY_REQUEST,
	SQ_STATE_BY_SERIAL,
	SQ_REVOKE,
	SQ_COUNT,
	SQ_EXPIRING,
	SQ_SOONEST,
	SQ_TOKEN_ADD,
	SQ_TOKEN_GET,
	SQ_TOKEN_SPEND,
	SQ_CRL_BUMP,
	SQ_CRL_GET,
	SQ_NSTMT
};

static const char *const sqlstore_sql[SQ_NSTMT] = {
	[SQ_BEGIN] = "BEGIN IMMEDIATE",
	[SQ_COMMIT] = "COMMIT",
	[SQ_ROLLBACK] = "ROLLBACK",
	[SQ_SAVEPOINT] = "SAVEPOINT op",
	[SQ_RELEASE] = "RELEASE op",
	[SQ_ROLLBACK_TO] = "ROLLBACK TO op",
	[SQ_PENDING_ADD] = "INSERT INTO certificates (request_id, status, "
	    "requester, rule, profile, key_name, identity, subject, sans, "
	    "renewed_from, created_at) "
	    "VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	[SQ_STATE_BY_ID] = "SELECT status, renewed_from FROM certificates "
	    "WHERE id = ?1",
	[SQ_SERIAL_USED] = "SELECT id FROM certificates WHERE serial = ?1",
	[SQ_COMPLETE] = "UPDATE certificates SET status = 'issued', "
	    "serial = ?2, der = ?3, not_before = ?4, not_after = ?5 "
	    "WHERE id = ?1 AND status = 'pending'",
	[SQ_RENEWED_BY] = "UPDATE certificates SET renewed_by = ?2 "
	    "WHERE serial = ?1",
	[SQ_FAIL] = "UPDATE certificates SET status = 'failed', failure = ?2 "
	    "WHERE id = ?1 AND status = 'pending'",
	[SQ_PENDING] = "SELECT " SQLSTORE_COLUMNS " FROM certificates "
	    "WHERE status = 'pending' AND id > ?1 ORDER BY id LIMIT ?2",
	[SQ_GET] = "SELECT " SQLSTORE_COLUMNS " FROM certificates "
	    "WHERE serial = ?1",
	[SQ_GET_BY_REQUEST] = "SELECT " SQLSTORE_COLUMNS " FROM certificates "
	    "WHERE request_id = ?1",
	[SQ_STATE_BY_SERIAL] = "SELECT status FROM certificates "
	    "WHERE serial = ?1",
	[SQ_REVOKE] = "UPDATE certificates SET status = 'revoked', "
	    "revoked_at = ?2, reason = ?3 "
	    "WHERE serial = ?1 AND status = 'issued'",
	[SQ_COUNT] = "SELECT status, profile, count(*) FROM certificates "
	    "GROUP BY status, profile ORDER BY status, profile",
	/* By the index on (status, not_after), never by the one on
	 * renewed_by (the unary +: most rows are NULL there). */
	[SQ_EXPIRING] = "SELECT profile, not_after FROM certificates WHERE "
	    "status = 'issued' AND +renewed_by IS NULL AND not_after >= ?1 "
	    "AND not_after < ?2",
	[SQ_SOONEST] = "SELECT not_after FROM certificates WHERE "
	    "status = 'issued' AND +renewed_by IS NULL AND not_after >= ?1 "
	    "ORDER BY not_after LIMIT 1",
	[SQ_TOKEN_ADD] = "INSERT INTO tokens (hash, requester, expires_at, "
	    "uses_left, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
	[SQ_TOKEN_GET] = "SELECT requester, expires_at, uses_left FROM tokens "
	    "WHERE hash = ?1",
	[SQ_TOKEN_SPEND] = "UPDATE tokens SET uses_left = uses_left - 1 "
	    "WHERE hash = ?1 AND uses_left > 0",
	[SQ_CRL_BUMP] = "UPDATE crl SET number = number + 1 "
	    "WHERE id = 1 AND number < 9223372036854775807",
	[SQ_CRL_GET] = "SELECT number FROM crl WHERE id = 1",
};

/*
 * store_list: one statement per combination of filters, so that each has
 * a plan that uses the right index.  The walk resumes after the last row
 * it delivered with the row value (not_after, id) > (?1, ?2), so each
 * step must read the rows in that order from an index, not sort them:
 * with an index on status alone or on requester (a few values, each for
 * up to every row) SQLite sorted every matching row for each step of 32,
 * and a walk of 100000 issued certificates took two minutes.  The index
 * on (status, not_after) gives a status's rows in order, the one on
 * not_after all rows; the unary + keeps requester from being looked up
 * by its index.  An identity has few rows: with it, status is kept off
 * its index too, and the one on identity is the pick.
 * (Rows that share the resumed not_after are read again at each step: a
 * walk of 100000 rows that all expire in the same second took 16 s.)
 */
static const char *const sqlstore_list_where[SQLSTORE_FILTERS] = {
	" AND status = ?3",
	" AND identity = ?4",
	" AND +requester = ?5",
	" AND not_after < ?6",
	" AND not_after >= ?7",
};

static const char *const sqlstore_status_names[] = {
	[STORE_PENDING] = "pending",
	[STORE_ISSUED] = "issued",
	[STORE_FAILED] = "failed",
	[STORE_REVOKED] = "revoked",
};

struct sqlstore {
	sqlite3		*sq_db;
	char		*sq_path;
	sqlite3_stmt	*sq_st[SQ_NSTMT];
	sqlite3_stmt	*sq_list[1 << SQLSTORE_FILTERS];
	int		 sq_batch;	/* a batch's transaction is open */
	int		 sq_batch_lost;	/* ... and SQLite rolled it back */
	char		 sq_err[512];
};

static int	sqlstore_fail(struct sqlstore *, int, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

/* Sets the error text and returns rc. */
static int
sqlstore_fail(struct sqlstore *sq, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sq->sq_err, sizeof(sq->sq_err), fmt, ap);
	va_end(ap);
	return rc;
}

/* The connection's last error, after the operation that failed. */
static int
sqlstore_dberr(struct sqlstore *sq, const char *op)
{
	return sqlstore_fail(sq, STORE_ERROR, "%s: %s", op,
	    sqlite3_errmsg(sq->sq_db));
}

/*
 * Done with a statement: reset it and drop its bindings, which point into
 * the caller's memory (SQLITE_STATIC).  sqlite3_reset() repeats the error
 * of the last step, which the caller has already handled, and
 * sqlite3_clear_bindings() cannot fail.
 */
static void
sqlstore_done(sqlite3_stmt *st)
{
	(void)sqlite3_reset(st);
	(void)sqlite3_clear_bindings(st);
}

static int
sqlstore_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s == NULL)
		return sqlite3_bind_null(st, i);
	return sqlite3_bind_text64(st, i, s, strlen(s), SQLITE_STATIC,
	    SQLITE_UTF8);
}

/* Runs a statement that returns no row. */
static int
sqlstore_exec(struct sqlstore *sq, enum sqlstore_stmt i, const char *op)
{
	sqlite3_stmt *st = sq->sq_st[i];
	int rc;

	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		(void)sqlstore_dberr(sq, op);
	sqlstore_done(st);
	return rc == SQLITE_DONE ? STORE_OK : STORE_ERROR;
}

/*
 * A write's transaction; in a batch (store_batch_begin), a savepoint in
 * the batch's transaction instead, so that a failed write undoes only
 * itself and the batch commits once.
 */
static int
sqlstore_begin(struct sqlstore *sq, const char *op)
{
	char what[64];

	if (sq->sq_batch) {
		if (sq->sq_batch_lost || sqlite3_get_autocommit(sq->sq_db)) {
			sq->sq_batch_lost = 1;
			return sqlstore_fail(sq, STORE_ERROR, "%s: the batch's "
			    "transaction was rolled back", op);
		}
		snprintf(what, sizeof(what), "%s: SAVEPOINT", op);
		return sqlstore_exec(sq, SQ_SAVEPOINT, what);
	}
	snprintf(what, sizeof(what), "%s: BEGIN", op);
	return sqlstore_exec(sq, SQ_BEGIN, what);
}

static int
sqlstore_commit(struct sqlstore *sq, const char *op)
{
	char what[64];

	if (sq->sq_batch) {
		snprintf(what, sizeof(what), "%s: RELEASE", op);
		return sqlstore_exec(sq, SQ_RELEASE, what);
	}
	snprintf(what, sizeof(what), "%s: COMMIT", op);
	return sqlstore_exec(sq, SQ_COMMIT, what);
}

/* Returns 0, or -1 with the failure added to the error text. */
static int
sqlstore_step_undo(struct sqlstore *sq, enum sqlstore_stmt i,
    const char *name)
{
	sqlite3_stmt *st = sq->sq_st[i];
	size_t len;
	int rc;

	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		len = strlen(sq->sq_err);
		snprintf(sq->sq_err + len, sizeof(sq->sq_err) - len,
		    " (and %s failed: %s)", name, sqlite3_errmsg(sq->sq_db));
	}
	sqlstore_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/*
 * Undoes an open transaction (in a batch: the write's savepoint), keeping
 * the error that caused it.  SQLite may have rolled back by itself
 * (SQLITE_FULL, SQLITE_IOERR); in a batch that loses the whole batch.
 */
static void
sqlstore_rollback(struct sqlstore *sq)
{
	if (sqlite3_get_autocommit(sq->sq_db)) {
		if (sq->sq_batch)
			sq->sq_batch_lost = 1;
		return;
	}
	if (sq->sq_batch) {
		/*
		 * A savepoint that cannot be rolled back must not be
		 * released either (that would keep half a write): the whole
		 * batch goes.
		 */
		if (sqlstore_step_undo(sq, SQ_ROLLBACK_TO, "ROLLBACK TO") ==
		    -1 || sqlstore_step_undo(sq, SQ_RELEASE, "RELEASE") == -1)
			sq->sq_batch_lost = 1;
		return;
	}
	(void)sqlstore_step_undo(sq, SQ_ROLLBACK, "ROLLBACK");
}

static int
sqlstore_batch_begin(void *be)
{
	struct sqlstore *sq = be;

	if (sqlstore_exec(sq, SQ_BEGIN, "batch: BEGIN") != STORE_OK)
		return STORE_ERROR;
	sq->sq_batch = 1;
	sq->sq_batch_lost = 0;
	return STORE_OK;
}

static int
sqlstore_batch_end(void *be, int commit)
{
	struct sqlstore *sq = be;
	int lost = sq->sq_batch_lost;

	sq->sq_batch = 0;
	sq->sq_batch_lost = 0;
	if (lost || sqlite3_get_autocommit(sq->sq_db)) {
		sqlstore_rollback(sq);
		return sqlstore_fail(sq, STORE_ERROR, "batch: the transaction "
		    "was rolled back (%s)", lost ? "by SQLite" : "not open");
	}
	if (!commit) {
		sqlstore_rollback(sq);
		return STORE_OK;
	}
	if (sqlstore_exec(sq, SQ_COMMIT, "batch: COMMIT") != STORE_OK) {
		sqlstore_rollback(sq);
		return STORE_ERROR;
	}
	return STORE_OK;
}

static int
sqlstore_status_parse(const unsigned char *text, enum store_status *out)
{
	size_t i;

	if (text == NULL)
		return -1;
	for (i = 0; i < sizeof(sqlstore_status_names) /
	    sizeof(sqlstore_status_names[0]); i++)
		if (strcmp((const char *)text, sqlstore_status_names[i]) == 0) {
			*out = (enum store_status)i;
			return 0;
		}
	return -1;
}

/* A text column as a new string; NULL stays NULL when nullok. */
static int
sqlstore_col_text(struct sqlstore *sq, sqlite3_stmt *st, int col, int nullok,
    char **out)
{
	const unsigned char *t;
	int n;

	*out = NULL;
	if (sqlite3_column_type(st, col) == SQLITE_NULL) {
		if (nullok)
			return 0;
		return sqlstore_fail(sq, -1, "column %s is NULL",
		    sqlite3_column_name(st, col));
	}
	if ((t = sqlite3_column_text(st, col)) == NULL)
		return sqlstore_fail(sq, -1, "column %s: out of memory",
		    sqlite3_column_name(st, col));
	if ((n = sqlite3_column_bytes(st, col)) < 0)
		return sqlstore_fail(sq, -1, "column %s: bad length",
		    sqlite3_column_name(st, col));
	if ((*out = malloc((size_t)n + 1)) == NULL)
		return sqlstore_fail(sq, -1, "out of memory");
	memcpy(*out, t, (size_t)n);
	(*out)[n] = '\0';
	return 0;
}

/* A text column into a fixed buffer; NULL gives "". */
static int
sqlstore_col_fixed(struct sqlstore *sq, sqlite3_stmt *st, int col, char *out,
    size_t outlen)
{
	const unsigned char *t;
	int n;

	out[0] = '\0';
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return 0;
	if ((t = sqlite3_column_text(st, col)) == NULL)
		return sqlstore_fail(sq, -1, "column %s: out of memory",
		    sqlite3_column_name(st, col));
	n = sqlite3_column_bytes(st, col);
	if (n < 0 || (size_t)n >= outlen)
		return sqlstore_fail(sq, -1, "column %s: %d bytes, at most %zu",
		    sqlite3_column_name(st, col), n, outlen - 1);
	memcpy(out, t, (size_t)n);
	out[n] = '\0';
	return 0;
}

/*
 * The current row of an SQLSTORE_COLUMNS query as a complete store_cert,
 * or -1 with the error set and c cleared.
 */
static int
sqlstore_row(struct sqlstore *sq, sqlite3_stmt *st, struct store_cert *c)
{
	const void *der;
	int n;

	memset(c, 0, sizeof(*c));
	c->id = sqlite3_column_int64(st, 0);
	if (sqlstore_status_parse(sqlite3_column_text(st, 1), &c->status)
	    == -1) {
		(void)sqlstore_fail(sq, -1, "certificate %lld: unknown status",
		    (long long)c->id);
		goto bad;
	}
	if (sqlstore_col_fixed(sq, st, 2, c->request_id,
	    sizeof(c->request_id)) == -1 ||
	    sqlstore_col_fixed(sq, st, 3, c->serial, sizeof(c->serial)) == -1 ||
	    sqlstore_col_text(sq, st, 4, 0, &c->requester) == -1 ||
	    sqlstore_col_text(sq, st, 5, 0, &c->rule) == -1 ||
	    sqlstore_col_text(sq, st, 6, 0, &c->profile) == -1 ||
	    sqlstore_col_text(sq, st, 7, 0, &c->key_name) == -1 ||
	    sqlstore_col_text(sq, st, 8, 0, &c->identity) == -1 ||
	    sqlstore_col_text(sq, st, 9, 0, &c->subject) == -1 ||
	    sqlstore_col_text(sq, st, 10, 0, &c->sans) == -1 ||
	    sqlstore_col_text(sq, st, 11, 1, &c->renewed_from) == -1 ||
	    sqlstore_col_text(sq, st, 12, 1, &c->renewed_by) == -1 ||
	    sqlstore_col_text(sq, st, 13, 1, &c->failure) == -1)
		goto bad;
	c->created_at = sqlite3_column_int64(st, 14);
	c->not_before = sqlite3_column_int64(st, 15);
	c->not_after = sqlite3_column_int64(st, 16);
	c->revoked_at = sqlite3_column_int64(st, 17);
	c->reason = sqlite3_column_type(st, 18) == SQLITE_NULL ? -1 :
	    sqlite3_column_int(st, 18);
	if (sqlite3_column_type(st, 19) != SQLITE_NULL) {
		der = sqlite3_column_blob(st, 19);
		n = sqlite3_column_bytes(st, 19);
		if (n <= 0 || der == NULL) {
			(void)sqlstore_fail(sq, -1, "certificate %lld: empty "
			    "or unreadable certificate", (long long)c->id);
			goto bad;
		}
		if ((c->der = malloc((size_t)n)) == NULL) {
			(void)sqlstore_fail(sq, -1, "out of memory");
			goto bad;
		}
		memcpy(c->der, der, (size_t)n);
		c->derlen = (size_t)n;
	}
	return 0;
 bad:
	store_cert_clear(c);
	return -1;
}

/*
 * Steps st for up to max rows into rows[]; *n set.  The statement is reset
 * either way; on error no row is kept.
 */
static int
sqlstore_fetch(struct sqlstore *sq, sqlite3_stmt *st, const char *op,
    struct store_cert *rows, size_t max, size_t *n)
{
	char what[sizeof(sq->sq_err)];
	int rc = SQLITE_ROW;

	*n = 0;
	while (*n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlstore_row(sq, st, &rows[*n]) == -1) {
			snprintf(what, sizeof(what), "%s", sq->sq_err);
			(void)sqlstore_fail(sq, STORE_ERROR, "%s: %s", op,
			    what);
			goto bad;
		}
		(*n)++;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		(void)sqlstore_dberr(sq, op);
		goto bad;
	}
	sqlstore_done(st);
	return STORE_OK;
 bad:
	sqlstore_done(st);
	while (*n > 0)
		store_cert_clear(&rows[--(*n)]);
	return STORE_ERROR;
}

/* Calls back for rows[0..n); stops at the first non-zero answer.  Every
 * row is cleared. */
static int
sqlstore_deliver(struct store_cert *rows, size_t n, store_cert_cb cb,
    void *arg)
{
	size_t i;
	int ret = 0;

	for (i = 0; i < n; i++) {
		if (ret == 0)
			ret = cb(&rows[i], arg);
		store_cert_clear(&rows[i]);
	}
	return ret;
}

/* One row by serial or request id. */
static int
sqlstore_get_one(struct sqlstore *sq, enum sqlstore_stmt i, const char *op,
    const char *key, struct store_cert *out)
{
	sqlite3_stmt *st = sq->sq_st[i];
	size_t n;
	int rc;

	if (sqlstore_bind_text(st, 1, key) != SQLITE_OK) {
		rc = sqlstore_dberr(sq, op);
		sqlstore_done(st);
		return rc;
	}
	if ((rc = sqlstore_fetch(sq, st, op, out, 1, &n)) != STORE_OK)
		return rc;
	if (n == 0)
		return sqlstore_fail(sq, STORE_NOTFOUND, "%s: %s not found",
		    op, key);
	return STORE_OK;
}

/*
 * Creates the database file 0600 if absent, otherwise checks it: a
 * regular file (not a symbolic link), ours, with no access for group or
 * other, because it holds the token hashes and every requester's name.
 * SQLite creates the -wal and -shm files with the database's mode; stale
 * ones get the same check.
 */
static int
sqlstore_check_file(const char *path, int *created, char *err, size_t errlen)
{
	static const char *const suffixes[] = { "", "-wal", "-shm" };
	struct stat st;
	char name[PATH_MAX], *copy, *dir;
	size_t i;
	int fd, dfd, r;

	*created = 0;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd != -1) {
		*created = 1;
		/* The umask may have taken the owner's bits too. */
		if (fchmod(fd, 0600) == -1 || fsync(fd) == -1) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
		close(fd);
		/* Make the new directory entry durable. */
		if ((copy = strdup(path)) == NULL) {
			snprintf(err, errlen, "%s: out of memory", path);
			return -1;
		}
		dir = dirname(copy);
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dfd == -1 ? -1 : fsync(dfd);
		if (r == -1)
			snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		if (dfd != -1)
			close(dfd);
		free(copy);
		if (r == -1)
			return -1;
	} else if (errno != EEXIST) {
		snprintf(err, errlen, "%s: %s%s", path, strerror(errno),
		    errno == ELOOP ? " (a symbolic link)" : "");
		return -1;
	}
	for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		r = snprintf(name, sizeof(name), "%s%s", path, suffixes[i]);
		if (r < 0 || (size_t)r >= sizeof(name)) {
			snprintf(err, errlen, "%s: path too long", path);
			return -1;
		}
		if (lstat(name, &st) == -1) {
			if (errno == ENOENT && i > 0)
				continue;
			snprintf(err, errlen, "%s: %s", name, strerror(errno));
			return -1;
		}
		if (!S_ISREG(st.st_mode)) {
			snprintf(err, errlen, "%s: not a regular file%s", name,
			    S_ISLNK(st.st_mode) ? " (a symbolic link)" : "");
			return -1;
		}
		if (st.st_uid != geteuid()) {
			snprintf(err, errlen, "%s: owned by uid %lu, expected "
			    "%lu", name, (unsigned long)st.st_uid,
			    (unsigned long)geteuid());
			return -1;
		}
		if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
			snprintf(err, errlen, "%s: mode %04o gives group or "
			    "other access; chmod 600 it", name,
			    (unsigned int)(st.st_mode & 07777));
			return -1;
		}
	}
	return 0;
}

/* Runs a pragma or query made of constant text; its first column of the
 * first row goes to text (if not NULL) and num. */
static int
sqlstore_pragma(struct sqlstore *sq, const char *sql, char *text,
    size_t textlen, int64_t *num)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *t;
	int rc, ret = STORE_ERROR;

	if (text != NULL)
		text[0] = '\0';
	if (num != NULL)
		*num = 0;
	if (sqlite3_prepare_v2(sq->sq_db, sql, -1, &st, NULL) != SQLITE_OK)
		return sqlstore_dberr(sq, sql);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (num != NULL)
			*num = sqlite3_column_int64(st, 0);
		if (text != NULL && (t = sqlite3_column_text(st, 0)) != NULL)
			snprintf(text, textlen, "%s", (const char *)t);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW)
			;
	}
	if (rc != SQLITE_DONE)
		(void)sqlstore_dberr(sq, sql);
	else
		ret = STORE_OK;
	if (sqlite3_finalize(st) != SQLITE_OK && ret == STORE_OK)
		ret = sqlstore_dberr(sq, sql);
	return ret;
}

/* Creates the schema of an empty database, or checks that an existing one
 * is ours and not newer than this code.  One transaction. */
static int
sqlstore_schema_init(struct sqlstore *sq)
{
	char *msg = NULL;
	int64_t version, appid, objects;

	if (sqlite3_exec(sq->sq_db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return sqlstore_dberr(sq, "schema: BEGIN");
	if (sqlstore_pragma(sq, "PRAGMA user_version", NULL, 0, &version) !=
	    STORE_OK ||
	    sqlstore_pragma(sq, "PRAGMA application_id", NULL, 0, &appid) !=
	    STORE_OK ||
	    sqlstore_pragma(sq, "SELECT count(*) FROM sqlite_master", NULL, 0,
	    &objects) != STORE_OK)
		goto bad;
	if (version > SQLSTORE_VERSION) {
		(void)sqlstore_fail(sq, STORE_ERROR, "schema version %lld is "
		    "newer than this program knows (%d): run a newer hsmca",
		    (long long)version, SQLSTORE_VERSION);
		goto bad;
	}
	if (version == 0 && objects != 0) {
		(void)sqlstore_fail(sq, STORE_ERROR, "not an hsmca store: it "
		    "has %lld schema objects but no schema version",
		    (long long)objects);
		goto bad;
	}
	if (version != 0 && appid != SQLSTORE_APPLICATION_ID) {
		(void)sqlstore_fail(sq, STORE_ERROR, "not an hsmca store: "
		    "application_id is %lld", (long long)appid);
		goto bad;
	}
	if (version == 0 &&
	    sqlite3_exec(sq->sq_db, sqlstore_schema, NULL, NULL, &msg) !=
	    SQLITE_OK) {
		(void)sqlstore_fail(sq, STORE_ERROR, "schema: %s",
		    msg != NULL ? msg : sqlite3_errmsg(sq->sq_db));
		sqlite3_free(msg);
		goto bad;
	}
	/*
	 * renewed_by references serial: with foreign keys on, every change
	 * of a serial (each completion) looks for rows that reference the
	 * old value, a scan of the whole table without this index (64 ms a
	 * completion at 200,000 rows).  Stores made before it get it here.
	 * So do they the index on (status, not_after): see
	 * sqlstore_list_where.
	 */
	if (sqlite3_exec(sq->sq_db, sqlstore_schema_indexes, NULL, NULL,
	    &msg) != SQLITE_OK) {
		(void)sqlstore_fail(sq, STORE_ERROR, "schema: %s",
		    msg != NULL ? msg : sqlite3_errmsg(sq->sq_db));
		sqlite3_free(msg);
		goto bad;
	}
	if (sqlite3_exec(sq->sq_db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		(void)sqlstore_dberr(sq, "schema: COMMIT");
		goto bad;
	}
	return STORE_OK;
 bad:
	if (!sqlite3_get_autocommit(sq->sq_db) &&
	    sqlite3_exec(sq->sq_db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
		(void)sqlstore_dberr(sq, "schema: ROLLBACK");
	return STORE_ERROR;
}

static void
sqlstore_close(void *be)
{
	struct sqlstore *sq = be;
	size_t i;

	if (sq == NULL)
		return;
	/* sqlite3_finalize() repeats the last step's error, already
	 * handled; close_v2 never fails on a valid handle. */
	for (i = 0; i < SQ_NSTMT; i++)
		(void)sqlite3_finalize(sq->sq_st[i]);
	for (i = 0; i < sizeof(sq->sq_list) / sizeof(sq->sq_list[0]); i++)
		(void)sqlite3_finalize(sq->sq_list[i]);
	(void)sqlite3_close_v2(sq->sq_db);
	free(sq->sq_path);
	free(sq);
}

static void
sqlstore_unlink(const char *path)
{
	char name[PATH_MAX];
	int r;

	(void)unlink(path);
	r = snprintf(name, sizeof(name), "%s-wal", path);
	if (r > 0 && (size_t)r < sizeof(name))
		(void)unlink(name);
	r = snprintf(name, sizeof(name), "%s-shm", path);
	if (r > 0 && (size_t)r < sizeof(name))
		(void)unlink(name);
}

static int
sqlstore_open(const char *path, void **bep, char *err, size_t errlen)
{
	struct sqlstore *sq;
	char mode[16];
	int64_t on;
	size_t i;
	int created, rc;

	*bep = NULL;
	if (sqlstore_check_file(path, &created, err, errlen) == -1) {
		if (created)
			(void)unlink(path);
		return STORE_ERROR;
	}
	if ((sq = calloc(1, sizeof(*sq))) == NULL ||
	    (sq->sq_path = strdup(path)) == NULL) {
		free(sq);
		snprintf(err, errlen, "%s: out of memory", path);
		if (created)
			(void)unlink(path);
		return STORE_ERROR;
	}
	rc = sqlite3_open_v2(path, &sq->sq_db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK) {
		(void)sqlstore_fail(sq, STORE_ERROR, "open: %s",
		    sq->sq_db != NULL ? sqlite3_errmsg(sq->sq_db) :
		    sqlite3_errstr(rc));
		goto bad;
	}
	if (sqlite3_extended_result_codes(sq->sq_db, 1) != SQLITE_OK ||
	    sqlite3_busy_timeout(sq->sq_db, SQLSTORE_BUSY_MS) != SQLITE_OK) {
		(void)sqlstore_dberr(sq, "open: settings");
		goto bad;
	}
	/* Defensive: no writable_schema or similar way to corrupt the file
	 * from SQL, and no functions with side effects run from the
	 * schema. */
	if (sqlite3_db_config(sq->sq_db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL) !=
	    SQLITE_OK) {
		(void)sqlstore_dberr(sq, "open: SQLITE_DBCONFIG_DEFENSIVE");
		goto bad;
	}
#ifdef SQLITE_DBCONFIG_TRUSTED_SCHEMA
	if (sqlite3_db_config(sq->sq_db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0,
	    NULL) != SQLITE_OK) {
		(void)sqlstore_dberr(sq, "open: SQLITE_DBCONFIG_TRUSTED_SCHEMA");
		goto bad;
	}
#endif
	if (sqlite3_db_readonly(sq->sq_db, "main") != 0) {
		(void)sqlstore_fail(sq, STORE_ERROR, "open: read-only");
		goto bad;
	}
	if (sqlstore_pragma(sq, "PRAGMA journal_mode = WAL", mode,
	    sizeof(mode), NULL) != STORE_OK)
		goto bad;
	if (strcmp(mode, "wal") != 0) {
		(void)sqlstore_fail(sq, STORE_ERROR, "journal_mode is \"%s\", "
		    "not \"wal\"", mode);
		goto bad;
	}
	/* Both are per connection, so set and checked on every open. */
	if (sqlstore_pragma(sq, "PRAGMA synchronous = FULL", NULL, 0, NULL) !=
	    STORE_OK ||
	    sqlstore_pragma(sq, "PRAGMA synchronous", NULL, 0, &on) !=
	    STORE_OK)
		goto bad;
	if (on != 2) {
		(void)sqlstore_fail(sq, STORE_ERROR, "synchronous is %lld, "
		    "not FULL", (long long)on);
		goto bad;
	}
	if (sqlstore_pragma(sq, "PRAGMA foreign_keys = ON", NULL, 0, NULL) !=
	    STORE_OK ||
	    sqlstore_pragma(sq, "PRAGMA foreign_keys", NULL, 0, &on) !=
	    STORE_OK)
		goto bad;
	if (on != 1) {
		(void)sqlstore_fail(sq, STORE_ERROR, "foreign_keys is off");
		goto bad;
	}
	if (sqlstore_schema_init(sq) != STORE_OK)
		goto bad;
	for (i = 0; i < SQ_NSTMT; i++) {
		if (sqlite3_prepare_v3(sq->sq_db, sqlstore_sql[i], -1,
		    SQLITE_PREPARE_PERSISTENT, &sq->sq_st[i], NULL) !=
		    SQLITE_OK) {
			(void)sqlstore_fail(sq, STORE_ERROR, "prepare \"%s\": "
			    "%s", sqlstore_sql[i], sqlite3_errmsg(sq->sq_db));
			goto bad;
		}
	}
	*bep = sq;
	return STORE_OK;
 bad:
	snprintf(err, errlen, "%s: %s", path, sq->sq_err);
	sqlstore_close(sq);
	/* A file created here that never became a store goes away again,
	 * with what SQLite made next to it, so that the next attempt starts
	 * from nothing. */
	if (created)
		sqlstore_unlink(path);
	return STORE_ERROR;
}

static const char *
sqlstore_error(const void *be)
{
	const struct sqlstore *sq = be;

	return sq->sq_err;
}

static int	sqlstore_token_spend(struct sqlstore *, const char *,
		    const uint8_t [32], int64_t, char *, size_t);

/*
 * Inside the caller's transaction: serial is an ISSUED certificate.  Else
 * absent_rc when no row has it, other_rc when it is in another state; the
 * error text says which, after op.
 */
static int
sqlstore_require_issued(struct sqlstore *sq, const char *op,
    const char *serial, int absent_rc, int other_rc)
{
	sqlite3_stmt *st = sq->sq_st[SQ_STATE_BY_SERIAL];
	enum store_status status;
	int rc, ret = STORE_OK;

	if (sqlstore_bind_text(st, 1, serial) != SQLITE_OK) {
		ret = sqlstore_fail(sq, STORE_ERROR, "%s: bind: %s", op,
		    sqlite3_errmsg(sq->sq_db));
		sqlstore_done(st);
		return ret;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		ret = sqlstore_fail(sq, absent_rc, "%s: serial %s not found",
		    op, serial);
	else if (rc != SQLITE_ROW)
		ret = sqlstore_fail(sq, STORE_ERROR, "%s: lookup: %s", op,
		    sqlite3_errmsg(sq->sq_db));
	else if (sqlstore_status_parse(sqlite3_column_text(st, 0), &status) ==
	    -1)
		ret = sqlstore_fail(sq, STORE_ERROR, "%s: serial %s has an "
		    "unknown status", op, serial);
	else if (status != STORE_ISSUED)
		ret = sqlstore_fail(sq, other_rc, "%s: serial %s is %s, not "
		    "issued", op, serial, sqlstore_status_names[status]);
	sqlstore_done(st);
	return ret;
}

static int
sqlstore_pending_add(void *be, const struct store_cert *c,
    const uint8_t *token_hash, int64_t now, const char *caller_serial,
    int64_t *id)
{
	struct sqlstore *sq = be;
	sqlite3_stmt *st = sq->sq_st[SQ_PENDING_ADD];
	int rc;

	if (sqlstore_begin(sq, "pending_add") != STORE_OK)
		return STORE_ERROR;
	if (caller_serial != NULL && (rc = sqlstore_require_issued(sq,
	    "pending_add: the client certificate", caller_serial,
	    STORE_CALLER_REVOKED, STORE_CALLER_REVOKED)) != STORE_OK)
		goto bad;
	if (token_hash != NULL && (rc = sqlstore_token_spend(sq,
	    "pending_add: token", token_hash, now, NULL, 0)) != STORE_OK)
		goto bad;
	if (sqlstore_bind_text(st, 1, c->request_id) != SQLITE_OK ||
	    sqlstore_bind_text(st, 2, c->requester) != SQLITE_OK ||
	    sqlstore_bind_text(st, 3, c->rule) != SQLITE_OK ||
	    sqlstore_bind_text(st, 4, c->profile) != SQLITE_OK ||
	    sqlstore_bind_text(st, 5, c->key_name) != SQLITE_OK ||
	    sqlstore_bind_text(st, 6, c->identity) != SQLITE_OK ||
	    sqlstore_bind_text(st, 7, c->subject) != SQLITE_OK ||
	    sqlstore_bind_text(st, 8, c->sans) != SQLITE_OK ||
	    sqlstore_bind_text(st, 9, c->renewed_from) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 10, c->created_at) != SQLITE_OK) {
		rc = sqlstore_dberr(sq, "pending_add: bind");
		sqlstore_done(st);
		goto bad;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_CONSTRAINT_UNIQUE) {
		rc = sqlstore_fail(sq, STORE_CONFLICT, "pending_add: request "
		    "id %s already recorded", c->request_id);
		sqlstore_done(st);
		goto bad;
	}
	if (rc != SQLITE_DONE) {
		rc = sqlstore_dberr(sq, "pending_add");
		sqlstore_done(st);
		goto bad;
	}
	sqlstore_done(st);
	*id = sqlite3_last_insert_rowid(sq->sq_db);
	if (sqlstore_commit(sq, "pending_add") != STORE_OK) {
		*id = 0;
		rc = STORE_ERROR;
		goto bad;
	}
	return STORE_OK;
 bad:
	sqlstore_rollback(sq);
	return rc;
}

/*
 * The status of row id, and what it renews (when from is not NULL), inside
 * the caller's transaction.  STORE_NOTFOUND for no such row.
 */
static int
sqlstore_state_by_id(struct sqlstore *sq, const char *op, int64_t id,
    enum store_status *status, char from[41])
{
	sqlite3_stmt *st = sq->sq_st[SQ_STATE_BY_ID];
	int rc, ret = STORE_ERROR;

	if (from != NULL)
		from[0] = '\0';
	if (sqlite3_bind_int64(st, 1, id) != SQLITE_OK) {
		ret = sqlstore_dberr(sq, op);
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		ret = sqlstore_fail(sq, STORE_NOTFOUND, "%s: no certificate "
		    "with id %lld", op, (long long)id);
		goto out;
	}
	if (rc != SQLITE_ROW) {
		ret = sqlstore_dberr(sq, op);
		goto out;
	}
	if (sqlstore_status_parse(sqlite3_column_text(st, 0), status) == -1) {
		ret = sqlstore_fail(sq, STORE_ERROR, "%s: certificate %lld "
		    "has an unknown status", op, (long long)id);
		goto out;
	}
	if (from != NULL && sqlstore_col_fixed(sq, st, 1, from, 41) == -1)
		goto out;
	ret = STORE_OK;
 out:
	sqlstore_done(st);
	return ret;
}

static int
sqlstore_complete(void *be, int64_t id, const char *serial,
    const uint8_t *der, size_t derlen, int64_t not_before, int64_t not_after)
{
	struct sqlstore *sq = be;
	sqlite3_stmt *st;
	enum store_status status;
	char from[41];
	int rc, ret;

	if (sqlstore_begin(sq, "complete") != STORE_OK)
		return STORE_ERROR;
	if ((ret = sqlstore_state_by_id(sq, "complete", id, &status, from)) !=
	    STORE_OK)
		goto bad;
	if (status != STORE_PENDING) {
		ret = sqlstore_fail(sq, STORE_CONFLICT, "complete: certificate "
		    "%lld is %s, not pending", (long long)id,
		    sqlstore_status_names[status]);
		goto bad;
	}

	st = sq->sq_st[SQ_SERIAL_USED];
	if (sqlstore_bind_text(st, 1, serial) != SQLITE_OK) {
		ret = sqlstore_dberr(sq, "complete: bind");
		sqlstore_done(st);
		goto bad;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		ret = sqlstore_fail(sq, STORE_CONFLICT, "complete: serial %s "
		    "already recorded for certificate %lld", serial,
		    (long long)sqlite3_column_int64(st, 0));
	else if (rc != SQLITE_DONE)
		ret = sqlstore_dberr(sq, "complete: serial lookup");
	sqlstore_done(st);
	if (rc != SQLITE_DONE)
		goto bad;

	st = sq->sq_st[SQ_COMPLETE];
	if (sqlite3_bind_int64(st, 1, id) != SQLITE_OK ||
	    sqlstore_bind_text(st, 2, serial) != SQLITE_OK ||
	    sqlite3_bind_blob64(st, 3, der, derlen, SQLITE_STATIC) !=
	    SQLITE_OK ||
	    sqlite3_bind_int64(st, 4, not_before) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 5, not_after) != SQLITE_OK) {
		ret = sqlstore_dberr(sq, "complete: bind");
		sqlstore_done(st);
		goto bad;
	}
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		ret = sqlstore_dberr(sq, "complete");
	else if (sqlite3_changes(sq->sq_db) != 1)
		ret = sqlstore_fail(sq, STORE_ERROR, "complete: certificate "
		    "%lld changed under the transaction", (long long)id);
	sqlstore_done(st);
	if (ret != STORE_OK)
		goto bad;

	/* The renewed certificate may not be in this inventory: nothing to
	 * link then, and the new certificate is recorded all the same. */
	if (from[0] != '\0') {
		st = sq->sq_st[SQ_RENEWED_BY];
		if (sqlstore_bind_text(st, 1, from) != SQLITE_OK ||
		    sqlstore_bind_text(st, 2, serial) != SQLITE_OK) {
			ret = sqlstore_dberr(sq, "complete: bind");
			sqlstore_done(st);
			goto bad;
		}
		if (sqlite3_step(st) != SQLITE_DONE)
			ret = sqlstore_dberr(sq, "complete: renewed_by");
		sqlstore_done(st);
		if (ret != STORE_OK)
			goto bad;
	}
	if (sqlstore_commit(sq, "complete") != STORE_OK) {
		ret = STORE_ERROR;
		goto bad;
	}
	return STORE_OK;
 bad:
	sqlstore_rollback(sq);
	return ret;
}

static int
sqlstore_fail_row(void *be, int64_t id, const char *why)
{
	struct sqlstore *sq = be;
	sqlite3_stmt *st = sq->sq_st[SQ_FAIL];
	enum store_status status;
	int ret;

	if (sqlstore_begin(sq, "fail") != STORE_OK)
		return STORE_ERROR;
	if ((ret = sqlstore_state_by_id(sq, "fail", id, &status, NULL)) !=
	    STORE_OK)
		goto bad;
	if (status != STORE_PENDING) {
		ret = sqlstore_fail(sq, STORE_CONFLICT, "fail: certificate "
		    "%lld is %s, not pending", (long long)id,
		    sqlstore_status_names[status]);
		goto bad;
	}
	if (sqlite3_bind_int64(st, 1, id) != SQLITE_OK ||
	    sqlstore_bind_text(st, 2, why) != SQLITE_OK) {
		ret = sqlstore_dberr(sq, "fail: bind");
		sqlstore_done(st);
		goto bad;
	}
	if (sqlite3_step(st) != SQLITE_DONE)
		ret = sqlstore_dberr(sq, "fail");
	else if (sqlite3_changes(sq->sq_db) != 1)
		ret = sqlstore_fail(sq, STORE_ERROR, "fail: certificate %lld "
		    "changed under the transaction", (long long)id);
	sqlstore_done(st);
	if (ret != STORE_OK)
		goto bad;
	if (sqlstore_commit(sq, "fail") != STORE_OK) {
		ret = STORE_ERROR;
		goto bad;
	}
	return STORE_OK;
 bad:
	sqlstore_rollback(sq);
	return ret;
}

static int
sqlstore_pending(void *be, store_cert_cb cb, void *arg)
{
	struct sqlstore *sq = be;
	sqlite3_stmt *st = sq->sq_st[SQ_PENDING];
	struct store_cert rows[SQLSTORE_BATCH];
	int64_t after = 0;
	size_t n;
	int ret;

	for (;;) {
		if (sqlite3_bind_int64(st, 1, after) != SQLITE_OK ||
		    sqlite3_bind_int(st, 2, SQLSTORE_BATCH) != SQLITE_OK) {
			ret = sqlstore_dberr(sq, "pending: bind");
			sqlstore_done(st);
			return ret;
		}
		if ((ret = sqlstore_fetch(sq, st, "pending", rows,
		    SQLSTORE_BATCH, &n)) != STORE_OK)
			return ret;
		if (n == 0)
			return STORE_OK;
		after = rows[n - 1].id;
		if ((ret = sqlstore_deliver(rows, n, cb, arg)) != 0)
			return ret;
		if (n < SQLSTORE_BATCH)
			return STORE_OK;
	}
}

static int
sqlstore_get(void *be, const char *serial, struct store_cert *out)
{
	return sqlstore_get_one(be, SQ_GET, "get", serial, out);
}

static int
sqlstore_get_by_request(void *be, const char *request_id,
    struct store_cert *out)
{
	return sqlstore_get_one(be, SQ_GET_BY_REQUEST, "get_by_request",
	    request_id, out);
}

/*
 * The text of the list statement for a combination of filters (a bit per
 * sqlstore_list_where entry): 0, or -1 when it does not fit.  Not static
 * so that the unit test can ask SQLite for each one's plan.
 */
int	sqlstore_list_sql(unsigned int mask, char *sql, size_t sqllen);

int
sqlstore_list_sql(unsigned int mask, char *sql, size_t sqllen)
{
	static const char head[] = "SELECT " SQLSTORE_COLUMNS
	    " FROM certificates WHERE (not_after, id) > (?1, ?2)";
	static const char tail[] = " ORDER BY not_after, id LIMIT ?8";
	const char *part;
	size_t len, add, i;

	if ((len = strlen(head)) >= sqllen)
		return -1;
	memcpy(sql, head, len + 1);
	for (i = 0; i <= SQLSTORE_FILTERS; i++) {
		if (i < SQLSTORE_FILTERS && (mask & (1u << i)) == 0)
			continue;
		if (i == 0 && (mask & 2))
			part = " AND +status = ?3";
		else
			part = i < SQLSTORE_FILTERS ? sqlstore_list_where[i] :
			    tail;
		if ((add = strlen(part)) >= sqllen - len)
			return -1;
		memcpy(sql + len, part, add + 1);
		len += add;
	}
	return 0;
}

/* The list statement for this combination of filters, prepared once. */
static sqlite3_stmt *
sqlstore_list_stmt(struct sqlstore *sq, unsigned int mask)
{
	char sql[1024];

	if (sq->sq_list[mask] != NULL)
		return sq->sq_list[mask];
	if (sqlstore_list_sql(mask, sql, sizeof(sql)) != 0) {
		(void)sqlstore_fail(sq, STORE_ERROR, "list: query too long");
		return NULL;
	}
	if (sqlite3_prepare_v3(sq->sq_db, sql, -1, SQLITE_PREPARE_PERSISTENT,
	    &sq->sq_list[mask], NULL) != SQLITE_OK) {
		(void)sqlstore_dberr(sq, "list: prepare");
		sq->sq_list[mask] = NULL;
		return NULL;
	}
	return sq->sq_list[mask];
}

static int
sqlstore_list(void *be, const struct store_filter *f, store_cert_cb cb,
    void *arg)
{
	struct sqlstore *sq = be;
	struct store_cert rows[SQLSTORE_BATCH];
	sqlite3_stmt *st;
	int64_t after_not_after = INT64_MIN, after_id = INT64_MIN;
	size_t n, want, delivered = 0;
	unsigned int mask = 0;
	int ret;

	if (f->status != -1)
		mask |= 1u << 0;
	if (f->identity != NULL)
		mask |= 1u << 1;
	if (f->requester != NULL)
		mask |= 1u << 2;
	if (f->not_after_before != 0)
		mask |= 1u << 3;
	if (f->not_after_from != 0)
		mask |= 1u << 4;
	if ((st = sqlstore_list_stmt(sq, mask)) == NULL)
		return STORE_ERROR;
	for (;;) {
		want = SQLSTORE_BATCH;
		if (f->limit != 0 && f->limit - delivered < want)
			want = f->limit - delivered;
		if (sqlite3_bind_int64(st, 1, after_not_after) != SQLITE_OK ||
		    sqlite3_bind_int64(st, 2, after_id) != SQLITE_OK ||
		    ((mask & 1) && sqlstore_bind_text(st, 3,
		    sqlstore_status_names[f->status]) != SQLITE_OK) ||
		    ((mask & 2) && sqlstore_bind_text(st, 4, f->identity) !=
		    SQLITE_OK) ||
		    ((mask & 4) && sqlstore_bind_text(st, 5, f->requester) !=
		    SQLITE_OK) ||
		    ((mask & 8) && sqlite3_bind_int64(st, 6,
		    f->not_after_before) != SQLITE_OK) ||
		    ((mask & 16) && sqlite3_bind_int64(st, 7,
		    f->not_after_from) != SQLITE_OK) ||
		    sqlite3_bind_int64(st, 8, (sqlite3_int64)want) != SQLITE_OK) {
			ret = sqlstore_dberr(sq, "list: bind");
			sqlstore_done(st);
			return ret;
		}
		if ((ret = sqlstore_fetch(sq, st, "list", rows, want, &n)) !=
		    STORE_OK)
			return ret;
		if (n == 0)
			return STORE_OK;
		after_not_after = rows[n - 1].not_after;
		after_id = rows[n - 1].id;
		if ((ret = sqlstore_deliver(rows, n, cb, arg)) != 0)
			return ret;
		delivered += n;
		if (n < want || (f->limit != 0 && delivered >= f->limit))
			return STORE_OK;
	}
}

static int
sqlstore_revoke(void *be, const char *serial, int reason, int64_t when)
{
	struct sqlstore *sq = be;
	sqlite3_stmt *st;
	int ret = STORE_OK;

	if (sqlstore_begin(sq, "revoke") != STORE_OK)
		return STORE_ERROR;
	if ((ret = sqlstore_require_issued(sq, "revoke", serial,
	    STORE_NOTFOUND, STORE_CONFLICT)) != STORE_OK)
		goto bad;

	st = sq->sq_st[SQ_REVOKE];
	if (sqlstore_bind_text(st, 1, serial) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 2, when) != SQLITE_OK ||
	    sqlite3_bind_int(st, 3, reason) != SQLITE_OK) {
		ret = sqlstore_dberr(sq, "revoke: bind");
		sqlstore_done(st);
		goto bad;
	}
	if (sqlite3_step(st) != SQLITE_DONE)
		ret = sqlstore_dberr(sq, "revoke");
	else if (sqlite3_changes(sq->sq_db) != 1)
		ret = sqlstore_fail(sq, STORE_ERROR, "revoke: serial %s "
		    "changed under the transaction", serial);
	sqlstore_done(st);
	if (ret != STORE_OK)
		goto bad;
	if (sqlstore_commit(sq, "revoke") != STORE_OK) {
		ret = STORE_ERROR;
		goto bad;
	}
	return STORE_OK;
 bad:
	sqlstore_rollback(sq);
	return ret;
}

struct sqlstore_count {
	enum store_status	 sc_status;
	char			*sc_profile;
	int64_t			 sc_n;
};

static int
sqlstore_count(void *be, void (*cb)(enum store_status, const char *, int64_t,
    void *), void *arg)
{
	struct sqlstore *sq = be;
	sqlite3_stmt *st = sq->sq_st[SQ_COUNT];
	struct sqlstore_count *counts = NULL, *grown;
	size_t n = 0, cap = 0, i;
	int rc, ret = STORE_ERROR;

	/* Collected first, so that the callback runs with no statement
	 * open. */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap == 0 ? 16 : cap * 2;
			if ((grown = reallocarray(counts, cap,
			    sizeof(*counts))) == NULL) {
				(void)sqlstore_fail(sq, STORE_ERROR, "count: "
				    "out of memory");
				goto out;
			}
			counts = grown;
		}
		if (sqlstore_status_parse(sqlite3_column_text(st, 0),
		    &counts[n].sc_status) == -1) {
			(void)sqlstore_fail(sq, STORE_ERROR, "count: unknown "
			    "status");
			goto out;
		}
		if (sqlstore_col_text(sq, st, 1, 0, &counts[n].sc_profile) ==
		    -1)
			goto out;
		counts[n].sc_n = sqlite3_column_int64(st, 2);
		n++;
	}
	if (rc != SQLITE_DONE) {
		(void)sqlstore_dberr(sq, "count");
		goto out;
	}
	sqlstore_done(st);
	for (i = 0; i < n; i++)
		cb(counts[i].sc_status, counts[i].sc_profile, counts[i].sc_n,
		    arg);
	ret = STORE_OK;
 out:
	sqlstore_done(st);
	for (i = 0; i < n; i++)
		free(counts[i].sc_profile);
	free(counts);
	return ret;
}

/* store_expiring: a profile's counts, one per bound. */
#define SQLSTORE_PROFILES_MAX	64
struct sqlstore_expiry {
	char		*se_profile;
	uint64_t	 se_n[STORE_EXPIRY_MAX];
};

static int
sqlstore_expiring(void *be, int64_t now, const int64_t *before, size_t nb,
    void (*cb)(const char *, const uint64_t *, void *), void *arg,
    int64_t *soonest)
{
	struct sqlstore *sq = be;
	sqlite3_stmt *st = sq->sq_st[SQ_EXPIRING];
	struct sqlstore_expiry *ex = NULL, *grown;
	const unsigned char *t;
	size_t n = 0, cap = 0, i, k;
	int64_t na;
	int rc, ret = STORE_ERROR;

	*soonest = 0;
	if (sqlite3_bind_int64(st, 1, now) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 2, before[nb - 1]) != SQLITE_OK) {
		(void)sqlstore_dberr(sq, "expiring: bind");
		goto out;
	}
	/* Counted first, so that the callback runs with no statement open;
	 * a profile's name is copied once, not once a row. */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_type(st, 0) != SQLITE_TEXT ||
		    (t = sqlite3_column_text(st, 0)) == NULL) {
			(void)sqlstore_fail(sq, STORE_ERROR, "expiring: a "
			    "profile is not text");
			goto out;
		}
		na = sqlite3_column_int64(st, 1);
		for (i = 0; i < n; i++)
			if (strcmp(ex[i].se_profile, (const char *)t) == 0)
				break;
		if (i == n) {
			/* We write five; a file with many more is not ours
			 * to walk name by name. */
			if (n == SQLSTORE_PROFILES_MAX) {
				(void)sqlstore_fail(sq, STORE_ERROR, "expiring: "
				    "more than %d profiles",
				    SQLSTORE_PROFILES_MAX);
				goto out;
			}
			if (n == cap) {
				cap = cap == 0 ? 8 : cap * 2;
				if ((grown = reallocarray(ex, cap,
				    sizeof(*ex))) == NULL) {
					(void)sqlstore_fail(sq, STORE_ERROR,
					    "expiring: out of memory");
					goto out;
				}
				ex = grown;
			}
			memset(&ex[n], 0, sizeof(ex[n]));
			if ((ex[n].se_profile = strdup((const char *)t)) ==
			    NULL) {
				(void)sqlstore_fail(sq, STORE_ERROR,
				    "expiring: out of memory");
				goto out;
			}
			n++;
		}
		for (k = 0; k < nb; k++)
			if (na < before[k])
				ex[i].se_n[k]++;
	}
	if (rc != SQLITE_DONE) {
		(void)sqlstore_dberr(sq, "expiring");
		goto out;
	}
	sqlstore_done(st);
	st = sq->sq_st[SQ_SOONEST];
	if (sqlite3_bind_int64(st, 1, now) != SQLITE_OK) {
		(void)sqlstore_dberr(sq, "expiring: bind");
		goto out;
	}
	if ((rc = sqlite3_step(st)) == SQLITE_ROW)
		*soonest = sqlite3_column_int64(st, 0);
	else if (rc != SQLITE_DONE) {
		(void)sqlstore_dberr(sq, "expiring: soonest");
		goto out;
	}
	sqlstore_done(st);
	for (i = 0; i < n; i++)
		cb(ex[i].se_profile, ex[i].se_n, arg);
	ret = STORE_OK;
 out:
	sqlstore_done(sq->sq_st[SQ_EXPIRING]);
	sqlstore_done(sq->sq_st[SQ_SOONEST]);
	for (i = 0; i < n; i++)
		free(ex[i].se_profile);
	free(ex);
	return ret;
}

static int
sqlstore_token_add(void *be, const uint8_t hash[32], const char *requester,
    int64_t expires_at, int uses)
{
	struct sqlstore *sq = be;
	sqlite3_stmt *st = sq->sq_st[SQ_TOKEN_ADD];
	int rc, ret = STORE_OK;

	if (sqlstore_begin(sq, "token_add") != STORE_OK)
		return STORE_ERROR;
	if (sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC) != SQLITE_OK ||
	    sqlstore_bind_text(st, 2, requester) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 3, expires_at) != SQLITE_OK ||
	    sqlite3_bind_int(st, 4, uses) != SQLITE_OK ||
	    sqlite3_bind_int64(st, 5, (sqlite3_int64)time(NULL)) !=
	    SQLITE_OK) {
		ret = sqlstore_dberr(sq, "token_add: bind");
		sqlstore_done(st);
		goto bad;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		ret = sqlstore_fail(sq, STORE_CONFLICT, "token_add: token "
		    "already recorded");
	else if (rc != SQLITE_DONE)
		ret = sqlstore_dberr(sq, "token_add");
	sqlstore_done(st);
	if (ret != STORE_OK)
		goto bad;
	if (sqlstore_commit(sq, "token_add") != STORE_OK) {
		ret = STORE_ERROR;
		goto bad;
	}
	return STORE_OK;
 bad:
	sqlstore_rollback(sq);
	return ret;
}

/*
 * The lookup is by the token's SHA-256, so its timing tells nothing about
 * the token text itself.
 */
/*
 * Looks a token up and checks it (known, not expired, a use left), inside
 * the caller's transaction when there is one; copies the requester out.
 */
static int
sqlstore_token_lookup(struct sqlstore *sq, const char *op,
    const uint8_t hash[32], int64_t now, char *requester, size_t requesterlen)
{
	sqlite3_stmt *st = sq->sq_st[SQ_TOKEN_GET];
	const unsigned char *name;
	int64_t expires_at, uses_left;
	int n, rc, ret = STORE_OK;

	if (sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC) != SQLITE_OK) {
		ret = sqlstore_dberr(sq, op);
		sqlstore_done(st);
		return ret;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		ret = sqlstore_fail(sq, STORE_NOTFOUND, "%s: unknown token", op);
	else if (rc != SQLITE_ROW)
		ret = sqlstore_dberr(sq, op);
	else {
		expires_at = sqlite3_column_int64(st, 1);
		uses_left = sqlite3_column_int64(st, 2);
		name = sqlite3_column_text(st, 0);
		n = sqlite3_column_bytes(st, 0);
		if (now >= expires_at)
			ret = sqlstore_fail(sq, STORE_EXPIRED, "%s: token "
			    "expired at %lld", op, (long long)expires_at);
		else if (uses_left <= 0)
			ret = sqlstore_fail(sq, STORE_EXHAUSTED, "%s: token "
			    "has no use left", op);
		else if (name == NULL || n <= 0)
			ret = sqlstore_fail(sq, STORE_ERROR, "%s: token has "
			    "no requester", op);
		else if (requester != NULL && (size_t)n >= requesterlen)
			ret = sqlstore_fail(sq, STORE_ERROR, "%s: requester "
			    "name of %d bytes does not fit in %zu", op, n,
			    requesterlen);
		else if (requester != NULL) {
			memcpy(requester, name, (size_t)n);
			requester[n] = '\0';
		}
	}
	sqlstore_done(st);
	return ret;
}

/* Checks and spends one use, inside the caller's transaction. */
static int
sqlstore_token_spend(struct sqlstore *sq, const char *op,
    const uint8_t hash[32], int64_t now, char *requester, size_t requesterlen)
{
	sqlite3_stmt *st;
	int ret;

	if ((ret = sqlstore_token_lookup(sq, op, hash, now, requester,
	    requesterlen)) != STORE_OK)
		return ret;
	st = sq->sq_st[SQ_TOKEN_SPEND];
	if (sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC) != SQLITE_OK) {
		ret = sqlstore_dberr(sq, op);
		sqlstore_done(st);
		return ret;
	}
	if (sqlite3_step(st) != SQLITE_DONE)
		ret = sqlstore_dberr(sq, op);
	else if (sqlite3_changes(sq->sq_db) != 1)
		ret = sqlstore_fail(sq, STORE_ERROR, "%s: token changed under "
		    "the transaction", op);
	sqlstore_done(st);
	return ret;
}

static int
sqlstore_token_use(void *be, const uint8_t hash[32], int64_t now,
    char *requester, size_t requesterlen)
{
	struct sqlstore *sq = be;
	int ret;

	if (sqlstore_begin(sq, "token_use") != STORE_OK)
		return STORE_ERROR;
	if ((ret = sqlstore_token_spend(sq, "token_use", hash, now, requester,
	    requesterlen)) != STORE_OK)
		goto bad;
	if (sqlstore_commit(sq, "token_use") != STORE_OK) {
		ret = STORE_ERROR;
		goto bad;
	}
	return STORE_OK;
 bad:
	/* Only a spent use hands out the name. */
	requester[0] = '\0';
	sqlstore_rollback(sq);
	return ret;
}

/* A single SELECT: atomic without a transaction of its own. */
static int
sqlstore_token_check(void *be, const uint8_t hash[32], int64_t now,
    char *requester, size_t requesterlen)
{
	struct sqlstore *sq = be;
	int ret;

	if ((ret = sqlstore_token_lookup(sq, "token_check", hash, now,
	    requester, requesterlen)) != STORE_OK)
		requester[0] = '\0';
	return ret;
}

static int
sqlstore_crl_next(void *be, int64_t *number)
{
	struct sqlstore *sq = be;
	sqlite3_stmt *st = sq->sq_st[SQ_CRL_BUMP];
	int64_t next = 0;
	int rc, ret = STORE_OK;

	if (sqlstore_begin(sq, "crl_next") != STORE_OK)
		return STORE_ERROR;
	if (sqlite3_step(st) != SQLITE_DONE)
		ret = sqlstore_dberr(sq, "crl_next");
	else if (sqlite3_changes(sq->sq_db) != 1)
		ret = sqlstore_fail(sq, STORE_ERROR, "crl_next: no CRL row, or "
		    "the number is exhausted");
	sqlstore_done(st);
	if (ret != STORE_OK)
		goto bad;

	st = sq->sq_st[SQ_CRL_GET];
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		next = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		ret = sqlstore_fail(sq, STORE_ERROR, "crl_next: no CRL row");
	else
		ret = sqlstore_dberr(sq, "crl_next: read");
	sqlstore_done(st);
	if (ret != STORE_OK)
		goto bad;
	if (sqlstore_commit(sq, "crl_next") != STORE_OK) {
		ret = STORE_ERROR;
		goto bad;
	}
	*number = next;
	return STORE_OK;
 bad:
	sqlstore_rollback(sq);
	return ret;
}

const struct store_ops store_sqlite_ops = {
	.so_name = "sqlite",
	.so_open = sqlstore_open,
	.so_close = sqlstore_close,
	.so_error = sqlstore_error,
	.so_pending_add = sqlstore_pending_add,
	.so_complete = sqlstore_complete,
	.so_fail = sqlstore_fail_row,
	.so_pending = sqlstore_pending,
	.so_get = sqlstore_get,
	.so_get_by_request = sqlstore_get_by_request,
	.so_list = sqlstore_list,
	.so_revoke = sqlstore_revoke,
	.so_count = sqlstore_count,
	.so_expiring = sqlstore_expiring,
	.so_token_add = sqlstore_token_add,
	.so_token_use = sqlstore_token_use,
	.so_token_check = sqlstore_token_check,
	.so_crl_next = sqlstore_crl_next,
	.so_batch_begin = sqlstore_batch_begin,
	.so_batch_end = sqlstore_batch_end,
};
