/*
 * The inventory store (policy/store.c, policy/store_sqlite.c): files and
 * modes, schema versions, the certificate life cycle, lists and filters,
 * tokens, CRL numbers, durability across a crash, hostile strings.  Each
 * test runs in a fresh temporary directory.
 */
#include "config.h"

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store.h"

#define HOSTILE	"'); DROP TABLE certificates;--"

struct fixture {
	char		 dir[64];
	char		 path[128];
	struct store	*s;
	char		 err[512];
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/hsmca-store-XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/inventory.db", f->dir);
	*state = f;
	return 0;
}

static void
remove_tree(const char *path)
{
	DIR *d;
	struct dirent *de;
	struct stat st;
	char p[512];

	if (lstat(path, &st) == -1)
		return;
	if (!S_ISDIR(st.st_mode)) {
		unlink(path);
		return;
	}
	if ((d = opendir(path)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
			remove_tree(p);
		}
		closedir(d);
	}
	rmdir(path);
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	store_close(f->s);
	remove_tree(f->dir);
	free(f);
	return 0;
}

static void
open_store(struct fixture *f)
{
	int rc;

	rc = store_open(f->path, &f->s, f->err, sizeof(f->err));
	if (rc != STORE_OK)
		fail_msg("store_open: %s", f->err);
	assert_non_null(f->s);
}

static void
reopen_store(struct fixture *f)
{
	store_close(f->s);
	f->s = NULL;
	open_store(f);
}

static void
request_id(unsigned int n, char out[33])
{
	snprintf(out, 33, "%032x", n);
}

static char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	assert_non_null(p);
	return p;
}

/* A pending certificate description; free with store_cert_clear(). */
static void
make_cert(struct store_cert *c, unsigned int n, const char *identity,
    const char *requester, const char *profile, const char *renewed_from)
{
	memset(c, 0, sizeof(*c));
	request_id(n, c->request_id);
	c->requester = xstrdup(requester);
	c->rule = xstrdup("rule-web");
	c->profile = xstrdup(profile);
	c->key_name = xstrdup("issuing-1");
	c->identity = xstrdup(identity);
	c->subject = xstrdup("CN=test");
	c->sans = xstrdup("[\"DNS:a.example\"]");
	c->renewed_from = renewed_from != NULL ? xstrdup(renewed_from) : NULL;
	c->created_at = 1000 + n;
}

static int64_t
add_pending(struct fixture *f, unsigned int n, const char *identity,
    const char *requester, const char *profile, const char *renewed_from)
{
	struct store_cert c;
	int64_t id = -1;
	int rc;

	make_cert(&c, n, identity, requester, profile, renewed_from);
	rc = store_pending_add(f->s, &c, &id);
	store_cert_clear(&c);
	if (rc != STORE_OK)
		fail_msg("pending_add %u: %d %s", n, rc, store_error(f->s));
	assert_true(id > 0);
	return id;
}

static const uint8_t der_fixed[] = { 0x30, 0x82, 0x00, 0x03, 0x00, 0xff, 0x01 };

static int64_t
add_issued(struct fixture *f, unsigned int n, const char *serial,
    int64_t not_after, const char *identity, const char *requester)
{
	int64_t id = add_pending(f, n, identity, requester, "svid", NULL);
	int rc;

	rc = store_complete(f->s, id, serial, der_fixed, sizeof(der_fixed),
	    not_after - 100, not_after);
	if (rc != STORE_OK)
		fail_msg("complete %s: %d %s", serial, rc, store_error(f->s));
	return id;
}

static mode_t
file_mode(const char *path)
{
	struct stat st;

	if (stat(path, &st) == -1)
		fail_msg("stat %s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

/* The first column of a query on a second, independent connection. */
static void
raw_query(const char *path, const char *sql, char *out, size_t outlen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	const unsigned char *t;

	out[0] = '\0';
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE,
	    NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL),
	    SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW &&
	    (t = sqlite3_column_text(st, 0)) != NULL)
		snprintf(out, outlen, "%s", (const char *)t);
	assert_int_equal(sqlite3_finalize(st), SQLITE_OK);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void
raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE |
	    SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void
test_open_creates(void **state)
{
	struct fixture *f = *state;
	char wal[160], shm[160], text[160];
	struct store *s2 = NULL;
	mode_t old;
	int64_t n;
	int rc;

	/* Even with an open umask the files are the owner's alone. */
	old = umask(0);
	open_store(f);
	umask(old);
	add_pending(f, 1, "spiffe://example.org/a", "alice", "svid", NULL);
	snprintf(wal, sizeof(wal), "%s-wal", f->path);
	snprintf(shm, sizeof(shm), "%s-shm", f->path);
	assert_int_equal(file_mode(f->path), 0600);
	assert_int_equal(file_mode(wal), 0600);
	assert_int_equal(file_mode(shm), 0600);

	/* And with a umask that takes the owner's bits too. */
	snprintf(text, sizeof(text), "%s/strict.db", f->dir);
	old = umask(0277);
	rc = store_open(text, &s2, f->err, sizeof(f->err));
	umask(old);
	if (rc != STORE_OK)
		fail_msg("store_open under umask 0277: %s", f->err);
	assert_int_equal(store_crl_next(s2, &n), STORE_OK);
	store_close(s2);
	assert_int_equal(file_mode(text), 0600);

	raw_query(f->path, "PRAGMA journal_mode", text, sizeof(text));
	assert_string_equal(text, "wal");
	raw_query(f->path, "PRAGMA user_version", text, sizeof(text));
	assert_string_equal(text, "1");
	raw_query(f->path, "SELECT count(*) FROM certificates", text,
	    sizeof(text));
	assert_string_equal(text, "1");
	raw_query(f->path, "SELECT number FROM crl", text, sizeof(text));
	assert_string_equal(text, "0");

	/* The sqlite: form names the same file. */
	store_close(f->s);
	f->s = NULL;
	snprintf(text, sizeof(text), "sqlite:%s", f->path);
	assert_int_equal(store_open(text, &f->s, f->err, sizeof(f->err)),
	    STORE_OK);
	raw_query(f->path, "SELECT count(*) FROM certificates", text,
	    sizeof(text));
	assert_string_equal(text, "1");
}

static void
test_reopen_keeps(void **state)
{
	struct fixture *f = *state;
	struct store_cert c;
	char rid[33];
	int64_t id;

	open_store(f);
	id = add_issued(f, 7, "1a2b", 5000, "spiffe://example.org/w", "wl");
	reopen_store(f);
	assert_int_equal(store_get(f->s, "1a2b", &c), STORE_OK);
	request_id(7, rid);
	assert_int_equal(c.id, id);
	assert_int_equal(c.status, STORE_ISSUED);
	assert_string_equal(c.request_id, rid);
	assert_string_equal(c.serial, "1a2b");
	assert_string_equal(c.requester, "wl");
	assert_string_equal(c.rule, "rule-web");
	assert_string_equal(c.profile, "svid");
	assert_string_equal(c.key_name, "issuing-1");
	assert_string_equal(c.identity, "spiffe://example.org/w");
	assert_string_equal(c.subject, "CN=test");
	assert_string_equal(c.sans, "[\"DNS:a.example\"]");
	assert_null(c.renewed_from);
	assert_null(c.renewed_by);
	assert_null(c.failure);
	assert_int_equal(c.created_at, 1007);
	assert_int_equal(c.not_before, 4900);
	assert_int_equal(c.not_after, 5000);
	assert_int_equal(c.revoked_at, 0);
	assert_int_equal(c.reason, -1);
	assert_int_equal(c.derlen, sizeof(der_fixed));
	assert_memory_equal(c.der, der_fixed, sizeof(der_fixed));
	store_cert_clear(&c);
	/* A second clear is harmless, and so is NULL. */
	store_cert_clear(&c);
	store_cert_clear(NULL);
	assert_null(c.requester);
	assert_int_equal(c.id, 0);
}

static void
test_newer_version(void **state)
{
	struct fixture *f = *state;

	open_store(f);
	store_close(f->s);
	f->s = NULL;
	raw_exec(f->path, "PRAGMA user_version = 2");
	assert_int_equal(store_open(f->path, &f->s, f->err, sizeof(f->err)),
	    STORE_ERROR);
	assert_null(f->s);
	assert_non_null(strstr(f->err, "newer"));
	assert_non_null(strstr(f->err, f->path));
	/* Refused, not deleted or rewritten. */
	assert_int_equal(access(f->path, F_OK), 0);
}

static void
write_file(const char *path, const char *content, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);

	assert_true(fd != -1);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void
test_garbage_refused(void **state)
{
	struct fixture *f = *state;
	char junk[8192];
	size_t i;

	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (char)('a' + i % 26);
	write_file(f->path, junk, sizeof(junk), 0600);
	assert_int_equal(store_open(f->path, &f->s, f->err, sizeof(f->err)),
	    STORE_ERROR);
	assert_null(f->s);
	assert_non_null(strstr(f->err, "not a database"));
	assert_int_equal(access(f->path, F_OK), 0);
}

static void
test_open_refuses(void **state)
{
	struct fixture *f = *state;
	char p[200];

	/* Group or other access. */
	snprintf(p, sizeof(p), "%s/open.db", f->dir);
	write_file(p, "", 0, 0644);
	assert_int_equal(store_open(p, &f->s, f->err, sizeof(f->err)),
	    STORE_ERROR);
	assert_non_null(strstr(f->err, "chmod 600"));

	/* A symbolic link, even to a good file. */
	open_store(f);
	store_close(f->s);
	f->s = NULL;
	snprintf(p, sizeof(p), "%s/link.db", f->dir);
	assert_int_equal(symlink(f->path, p), 0);
	assert_int_equal(store_open(p, &f->s, f->err, sizeof(f->err)),
	    STORE_ERROR);
	assert_non_null(strstr(f->err, "symbolic link"));

	/* A directory. */
	snprintf(p, sizeof(p), "%s/dir.db", f->dir);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(store_open(p, &f->s, f->err, sizeof(f->err)),
	    STORE_ERROR);
	assert_non_null(strstr(f->err, "not a regular file"));

	/* Somebody else's SQLite database. */
	snprintf(p, sizeof(p), "%s/other.db", f->dir);
	write_file(p, "", 0, 0600);
	raw_exec(p, "CREATE TABLE t (x)");
	assert_int_equal(store_open(p, &f->s, f->err, sizeof(f->err)),
	    STORE_ERROR);
	assert_non_null(strstr(f->err, "not an hsmca store"));

	/* URIs. */
	assert_int_equal(store_open("postgresql://db/x", &f->s, f->err,
	    sizeof(f->err)), STORE_ERROR);
	assert_non_null(strstr(f->err, "unknown store scheme"));
	assert_int_equal(store_open("sqlite:", &f->s, f->err,
	    sizeof(f->err)), STORE_ERROR);
	assert_non_null(strstr(f->err, "no path"));
	assert_int_equal(store_open("", &f->s, f->err, sizeof(f->err)),
	    STORE_ERROR);
	snprintf(p, sizeof(p), "%s/missing/x.db", f->dir);
	assert_int_equal(store_open(p, &f->s, f->err, sizeof(f->err)),
	    STORE_ERROR);
	assert_non_null(strstr(f->err, "No such file"));
	assert_null(f->s);
}

static void
test_lifecycle(void **state)
{
	struct fixture *f = *state;
	struct store_cert c;
	char rid[33], longserial[42];
	int64_t id, id2;

	open_store(f);
	id = add_pending(f, 1, "spiffe://example.org/a", "alice", "svid",
	    NULL);
	request_id(1, rid);
	assert_int_equal(store_get_by_request(f->s, rid, &c), STORE_OK);
	assert_int_equal(c.id, id);
	assert_int_equal(c.status, STORE_PENDING);
	assert_string_equal(c.serial, "");
	assert_null(c.der);
	assert_int_equal(c.derlen, 0);
	assert_int_equal(c.not_before, 0);
	assert_int_equal(c.not_after, 0);
	assert_int_equal(c.reason, -1);
	store_cert_clear(&c);

	assert_int_equal(store_complete(f->s, id, "abc", der_fixed,
	    sizeof(der_fixed), 100, 200), STORE_OK);
	assert_int_equal(store_get(f->s, "abc", &c), STORE_OK);
	assert_int_equal(c.status, STORE_ISSUED);
	assert_int_equal(c.id, id);
	assert_int_equal(c.not_before, 100);
	assert_int_equal(c.not_after, 200);
	store_cert_clear(&c);
	assert_int_equal(store_get_by_request(f->s, rid, &c), STORE_OK);
	assert_string_equal(c.serial, "abc");
	assert_memory_equal(c.der, der_fixed, sizeof(der_fixed));
	store_cert_clear(&c);

	/* Twice; unknown id; serial used by another row. */
	assert_int_equal(store_complete(f->s, id, "abd", der_fixed,
	    sizeof(der_fixed), 100, 200), STORE_CONFLICT);
	assert_non_null(strstr(store_error(f->s), "not pending"));
	assert_int_equal(store_complete(f->s, id + 100, "abe", der_fixed,
	    sizeof(der_fixed), 100, 200), STORE_NOTFOUND);
	id2 = add_pending(f, 2, "spiffe://example.org/b", "bob", "svid",
	    NULL);
	assert_int_equal(store_complete(f->s, id2, "abc", der_fixed,
	    sizeof(der_fixed), 100, 200), STORE_CONFLICT);
	assert_non_null(strstr(store_error(f->s), "already recorded"));
	request_id(2, rid);
	assert_int_equal(store_get_by_request(f->s, rid, &c), STORE_OK);
	assert_int_equal(c.status, STORE_PENDING);
	store_cert_clear(&c);
	assert_int_equal(store_get(f->s, "abd", &c), STORE_NOTFOUND);

	/* Malformed serials are refused with a message. */
	assert_int_equal(store_complete(f->s, id2, "ABC", der_fixed,
	    sizeof(der_fixed), 1, 2), STORE_ERROR);
	assert_non_null(strstr(store_error(f->s), "serial \"ABC\""));
	assert_int_equal(store_complete(f->s, id2, "0abc", der_fixed,
	    sizeof(der_fixed), 1, 2), STORE_ERROR);
	assert_int_equal(store_complete(f->s, id2, "0", der_fixed,
	    sizeof(der_fixed), 1, 2), STORE_ERROR);
	assert_int_equal(store_complete(f->s, id2, "", der_fixed,
	    sizeof(der_fixed), 1, 2), STORE_ERROR);
	assert_int_equal(store_complete(f->s, id2, "12g4", der_fixed,
	    sizeof(der_fixed), 1, 2), STORE_ERROR);
	assert_int_equal(store_complete(f->s, id2, NULL, der_fixed,
	    sizeof(der_fixed), 1, 2), STORE_ERROR);
	memset(longserial, 'f', 41);
	longserial[41] = '\0';
	assert_int_equal(store_complete(f->s, id2, longserial, der_fixed,
	    sizeof(der_fixed), 1, 2), STORE_ERROR);
	assert_int_equal(store_complete(f->s, id2, "abf", NULL, 0, 1, 2),
	    STORE_ERROR);
	assert_int_equal(store_complete(f->s, id2, "abf", der_fixed, 0, 1, 2),
	    STORE_ERROR);
	/* 40 digits is the longest serial. */
	longserial[40] = '\0';
	assert_int_equal(store_complete(f->s, id2, longserial, der_fixed,
	    sizeof(der_fixed), 1, 2), STORE_OK);
	assert_int_equal(store_get(f->s, longserial, &c), STORE_OK);
	assert_int_equal(c.id, id2);
	store_cert_clear(&c);

	/* Duplicate and malformed request ids. */
	make_cert(&c, 1, "x", "y", "svid", NULL);
	assert_int_equal(store_pending_add(f->s, &c, &id), STORE_CONFLICT);
	assert_int_equal(id, 0);
	memcpy(c.request_id, "0123456789ABCDEF0123456789abcdef", 33);
	assert_int_equal(store_pending_add(f->s, &c, &id), STORE_ERROR);
	assert_non_null(strstr(store_error(f->s), "request id"));
	memcpy(c.request_id, "0123456789abcdef", 17);
	assert_int_equal(store_pending_add(f->s, &c, &id), STORE_ERROR);
	request_id(99, c.request_id);
	free(c.profile);
	c.profile = NULL;
	assert_int_equal(store_pending_add(f->s, &c, &id), STORE_ERROR);
	assert_non_null(strstr(store_error(f->s), "profile missing"));
	c.profile = xstrdup("svid");
	free(c.renewed_from);
	c.renewed_from = xstrdup("XYZ");
	assert_int_equal(store_pending_add(f->s, &c, &id), STORE_ERROR);
	store_cert_clear(&c);
	assert_int_equal(store_get_by_request(f->s,
	    "0123456789abcdef0123456789abcdeg", &c), STORE_ERROR);
	request_id(99, rid);
	assert_int_equal(store_get_by_request(f->s, rid, &c), STORE_NOTFOUND);
	assert_null(c.requester);
}

static void
test_fail(void **state)
{
	struct fixture *f = *state;
	struct store_cert c;
	char rid[33];
	int64_t id, issued;

	open_store(f);
	id = add_pending(f, 1, "a", "alice", "server", NULL);
	issued = add_issued(f, 2, "77", 900, "b", "bob");
	assert_int_equal(store_fail(f->s, id, "signer said no"), STORE_OK);
	request_id(1, rid);
	assert_int_equal(store_get_by_request(f->s, rid, &c), STORE_OK);
	assert_int_equal(c.status, STORE_FAILED);
	assert_string_equal(c.failure, "signer said no");
	assert_string_equal(c.serial, "");
	store_cert_clear(&c);
	assert_int_equal(store_fail(f->s, id, "again"), STORE_CONFLICT);
	assert_int_equal(store_complete(f->s, id, "78", der_fixed,
	    sizeof(der_fixed), 1, 2), STORE_CONFLICT);
	assert_int_equal(store_fail(f->s, issued, "late"), STORE_CONFLICT);
	assert_int_equal(store_fail(f->s, issued + 50, "none"),
	    STORE_NOTFOUND);
	assert_int_equal(store_fail(f->s, id, NULL), STORE_ERROR);
	assert_int_equal(store_get(f->s, "77", &c), STORE_OK);
	assert_int_equal(c.status, STORE_ISSUED);
	assert_null(c.failure);
	store_cert_clear(&c);
}

static void
test_revoke(void **state)
{
	struct fixture *f = *state;
	struct store_cert c;
	char rid[33];
	int64_t id;

	open_store(f);
	add_issued(f, 1, "a1", 900, "a", "alice");
	id = add_pending(f, 2, "b", "bob", "svid", NULL);
	add_issued(f, 3, "c3", 900, "c", "carol");
	assert_int_equal(store_fail(f->s, add_pending(f, 4, "d", "dave",
	    "svid", NULL), "no"), STORE_OK);

	assert_int_equal(store_revoke(f->s, "a1", 1, 5000), STORE_OK);
	assert_int_equal(store_get(f->s, "a1", &c), STORE_OK);
	assert_int_equal(c.status, STORE_REVOKED);
	assert_int_equal(c.revoked_at, 5000);
	assert_int_equal(c.reason, 1);
	store_cert_clear(&c);
	assert_int_equal(store_revoke(f->s, "a1", 1, 6000), STORE_CONFLICT);
	assert_non_null(strstr(store_error(f->s), "revoked, not issued"));
	assert_int_equal(store_get(f->s, "a1", &c), STORE_OK);
	assert_int_equal(c.revoked_at, 5000);
	store_cert_clear(&c);
	/* A pending or failed row has no serial to name it by. */
	assert_int_equal(store_revoke(f->s, "b2", 0, 5000), STORE_NOTFOUND);
	request_id(2, rid);
	assert_int_equal(store_get_by_request(f->s, rid, &c), STORE_OK);
	assert_int_equal(c.id, id);
	assert_int_equal(c.status, STORE_PENDING);
	store_cert_clear(&c);
	assert_int_equal(store_revoke(f->s, "C3", 1, 10), STORE_ERROR);
	assert_non_null(strstr(store_error(f->s), "revoke: serial \"C3\""));
	/* The message follows the last failure, wherever it came from. */
	assert_int_equal(store_revoke(f->s, "ffff", 0, 5000), STORE_NOTFOUND);
	assert_string_equal(store_error(f->s), "revoke: serial ffff not found");
	/* Reason codes and times. */
	assert_int_equal(store_revoke(f->s, "c3", 7, 5000), STORE_ERROR);
	assert_int_equal(store_revoke(f->s, "c3", 8, 5000), STORE_ERROR);
	assert_int_equal(store_revoke(f->s, "c3", 11, 5000), STORE_ERROR);
	assert_int_equal(store_revoke(f->s, "c3", -1, 5000), STORE_ERROR);
	assert_int_equal(store_revoke(f->s, "c3", 1, 0), STORE_ERROR);
	assert_int_equal(store_revoke(f->s, "C3", 1, 10), STORE_ERROR);
	assert_int_equal(store_revoke(f->s, "c3", 10, 5001), STORE_OK);
	assert_int_equal(store_get(f->s, "c3", &c), STORE_OK);
	assert_int_equal(c.reason, 10);
	store_cert_clear(&c);
}

static void
test_renewal(void **state)
{
	struct fixture *f = *state;
	struct store_cert c;
	int64_t id;

	open_store(f);
	add_issued(f, 1, "a1", 900, "spiffe://e/x", "x");
	id = add_pending(f, 2, "spiffe://e/x", "x", "svid", "a1");
	assert_int_equal(store_get(f->s, "a1", &c), STORE_OK);
	assert_null(c.renewed_by);
	store_cert_clear(&c);
	assert_int_equal(store_complete(f->s, id, "b2", der_fixed,
	    sizeof(der_fixed), 800, 1900), STORE_OK);
	assert_int_equal(store_get(f->s, "a1", &c), STORE_OK);
	assert_non_null(c.renewed_by);
	assert_string_equal(c.renewed_by, "b2");
	assert_null(c.renewed_from);
	store_cert_clear(&c);
	assert_int_equal(store_get(f->s, "b2", &c), STORE_OK);
	assert_string_equal(c.renewed_from, "a1");
	assert_null(c.renewed_by);
	store_cert_clear(&c);

	/* A failed completion links nothing. */
	id = add_pending(f, 3, "spiffe://e/x", "x", "svid", "b2");
	assert_int_equal(store_complete(f->s, id, "a1", der_fixed,
	    sizeof(der_fixed), 800, 1900), STORE_CONFLICT);
	assert_int_equal(store_get(f->s, "b2", &c), STORE_OK);
	assert_null(c.renewed_by);
	store_cert_clear(&c);

	/* Renewing a certificate this inventory never saw still records
	 * the new one. */
	id = add_pending(f, 4, "spiffe://e/y", "y", "svid", "dead");
	assert_int_equal(store_complete(f->s, id, "c4", der_fixed,
	    sizeof(der_fixed), 800, 1900), STORE_OK);
	assert_int_equal(store_get(f->s, "c4", &c), STORE_OK);
	assert_string_equal(c.renewed_from, "dead");
	store_cert_clear(&c);
}

struct collect {
	int64_t	 ids[200];
	size_t	 n;
	size_t	 stop_after;	/* 0: never */
	int	 stop_value;
	int64_t	 last_not_after;
	int	 ordered;	/* not_after then id never went backwards */
	int64_t	 last_id;
	struct store *s;	/* set: complete every row it is given */
};

static int
collect_cb(const struct store_cert *c, void *arg)
{
	struct collect *k = arg;

	assert_true(k->n < sizeof(k->ids) / sizeof(k->ids[0]));
	if (k->n > 0 && (c->not_after < k->last_not_after ||
	    (c->not_after == k->last_not_after && c->id <= k->last_id)))
		k->ordered = 0;
	k->last_not_after = c->not_after;
	k->last_id = c->id;
	/* The row is complete when the callback sees it. */
	assert_non_null(c->requester);
	assert_non_null(c->identity);
	assert_int_equal(strlen(c->request_id), 32);
	k->ids[k->n++] = c->id;
	if (k->stop_after != 0 && k->n == k->stop_after)
		return k->stop_value;
	return 0;
}

static void
collect_init(struct collect *k)
{
	memset(k, 0, sizeof(*k));
	k->ordered = 1;
}

static size_t
list_count(struct fixture *f, const struct store_filter *flt,
    struct collect *k)
{
	collect_init(k);
	if (store_list(f->s, flt, collect_cb, k) != STORE_OK)
		fail_msg("list: %s", store_error(f->s));
	assert_true(k->ordered);
	return k->n;
}

static void
test_list_filters(void **state)
{
	struct fixture *f = *state;
	struct store_filter flt;
	struct collect k;
	int64_t a, b, c, d, e;
	char serial[16];
	unsigned int i;

	open_store(f);
	/* a..e: not_after 300, 100, 200, 200, pending(0). */
	a = add_issued(f, 1, "a1", 300, "id-x", "alice");
	b = add_issued(f, 2, "b2", 100, "id-y", "alice");
	c = add_issued(f, 3, "c3", 200, "id-x", "bob");
	d = add_issued(f, 4, "d4", 200, "id-z", "bob");
	e = add_pending(f, 5, "id-x", "alice", "svid", NULL);
	assert_int_equal(store_revoke(f->s, "c3", 4, 150), STORE_OK);

	memset(&flt, 0, sizeof(flt));
	flt.status = -1;
	assert_int_equal(list_count(f, &flt, &k), 5);
	assert_int_equal(k.ids[0], e);
	assert_int_equal(k.ids[1], b);
	assert_int_equal(k.ids[2], c);
	assert_int_equal(k.ids[3], d);
	assert_int_equal(k.ids[4], a);
	assert_int_equal(list_count(f, NULL, &k), 5);

	flt.status = STORE_ISSUED;
	assert_int_equal(list_count(f, &flt, &k), 3);
	assert_int_equal(k.ids[0], b);
	assert_int_equal(k.ids[1], d);
	assert_int_equal(k.ids[2], a);
	flt.status = STORE_REVOKED;
	assert_int_equal(list_count(f, &flt, &k), 1);
	assert_int_equal(k.ids[0], c);
	flt.status = STORE_PENDING;
	assert_int_equal(list_count(f, &flt, &k), 1);
	assert_int_equal(k.ids[0], e);
	flt.status = STORE_FAILED;
	assert_int_equal(list_count(f, &flt, &k), 0);
	flt.status = 4;
	collect_init(&k);
	assert_int_equal(store_list(f->s, &flt, collect_cb, &k), STORE_ERROR);
	flt.status = -1;

	flt.identity = "id-x";
	assert_int_equal(list_count(f, &flt, &k), 3);
	assert_int_equal(k.ids[0], e);
	assert_int_equal(k.ids[1], c);
	assert_int_equal(k.ids[2], a);
	flt.identity = "id-";
	assert_int_equal(list_count(f, &flt, &k), 0);
	flt.identity = NULL;

	flt.requester = "bob";
	assert_int_equal(list_count(f, &flt, &k), 2);
	assert_int_equal(k.ids[0], c);
	assert_int_equal(k.ids[1], d);
	flt.requester = NULL;

	flt.not_after_before = 200;
	assert_int_equal(list_count(f, &flt, &k), 2);	/* e (0), b */
	assert_int_equal(k.ids[1], b);
	flt.not_after_from = 100;
	assert_int_equal(list_count(f, &flt, &k), 1);
	assert_int_equal(k.ids[0], b);
	flt.not_after_before = 0;
	flt.not_after_from = 200;
	assert_int_equal(list_count(f, &flt, &k), 3);
	assert_int_equal(k.ids[0], c);
	assert_int_equal(k.ids[2], a);

	/* Everything at once. */
	flt.status = STORE_ISSUED;
	flt.identity = "id-z";
	flt.requester = "bob";
	flt.not_after_from = 150;
	flt.not_after_before = 250;
	assert_int_equal(list_count(f, &flt, &k), 1);
	assert_int_equal(k.ids[0], d);
	flt.requester = "alice";
	assert_int_equal(list_count(f, &flt, &k), 0);

	/* Limit and a callback that stops. */
	memset(&flt, 0, sizeof(flt));
	flt.status = -1;
	flt.limit = 2;
	assert_int_equal(list_count(f, &flt, &k), 2);
	assert_int_equal(k.ids[1], b);
	flt.limit = 0;
	collect_init(&k);
	k.stop_after = 3;
	k.stop_value = 42;
	assert_int_equal(store_list(f->s, &flt, collect_cb, &k), 42);
	assert_int_equal(k.n, 3);

	/* More rows than one batch, with ties on not_after. */
	for (i = 0; i < 90; i++) {
		snprintf(serial, sizeof(serial), "%x", 0x1000 + i);
		add_issued(f, 100 + i, serial, 1000 + i % 7, "bulk", "bulk");
	}
	flt.identity = "bulk";
	assert_int_equal(list_count(f, &flt, &k), 90);
	assert_int_equal(k.last_not_after, 1006);
	flt.limit = 40;
	assert_int_equal(list_count(f, &flt, &k), 40);
	flt.limit = 0;
	flt.identity = NULL;
	assert_int_equal(list_count(f, &flt, &k), 95);
	collect_init(&k);
	k.stop_after = 70;
	k.stop_value = -3;
	assert_int_equal(store_list(f->s, &flt, collect_cb, &k), -3);
	assert_int_equal(k.n, 70);
}

static int
complete_cb(const struct store_cert *c, void *arg)
{
	struct collect *k = arg;
	char serial[16];

	assert_int_equal(c->status, STORE_PENDING);
	if (k->n > 0)
		assert_true(c->id > k->ids[k->n - 1]);
	k->ids[k->n++] = c->id;
	/* The walk lets the callback write to the store. */
	snprintf(serial, sizeof(serial), "%llx",
	    (unsigned long long)(0x5000 + c->id));
	assert_int_equal(store_complete(k->s, c->id, serial, der_fixed,
	    sizeof(der_fixed), 1, 2), STORE_OK);
	if (k->stop_after != 0 && k->n == k->stop_after)
		return k->stop_value;
	return 0;
}

static void
test_pending_walk(void **state)
{
	struct fixture *f = *state;
	struct collect k;
	char serial[16];
	unsigned int i;

	open_store(f);
	for (i = 0; i < 50; i++) {
		add_pending(f, i + 1, "p", "r", "svid", NULL);
		if (i % 5 == 0) {
			snprintf(serial, sizeof(serial), "f%x", i);
			add_issued(f, 1000 + i, serial, 10, "q", "r");
		}
	}
	collect_init(&k);
	k.s = f->s;
	k.stop_after = 20;
	k.stop_value = 9;
	assert_int_equal(store_pending(f->s, complete_cb, &k), 9);
	assert_int_equal(k.n, 20);
	collect_init(&k);
	k.s = f->s;
	assert_int_equal(store_pending(f->s, complete_cb, &k), STORE_OK);
	assert_int_equal(k.n, 30);
	collect_init(&k);
	k.s = f->s;
	assert_int_equal(store_pending(f->s, complete_cb, &k), STORE_OK);
	assert_int_equal(k.n, 0);
	assert_int_equal(store_pending(f->s, NULL, &k), STORE_ERROR);
}

struct counts {
	int64_t	 n[4][3];	/* status x (svid, server, client) */
	int	 other;
};

static void
count_cb(enum store_status st, const char *profile, int64_t n, void *arg)
{
	struct counts *k = arg;
	int p;

	if (strcmp(profile, "svid") == 0)
		p = 0;
	else if (strcmp(profile, "server") == 0)
		p = 1;
	else if (strcmp(profile, "client") == 0)
		p = 2;
	else {
		k->other++;
		return;
	}
	assert_true((int)st >= 0 && (int)st < 4);
	k->n[st][p] += n;
}

static void
test_count(void **state)
{
	struct fixture *f = *state;
	struct counts k;
	int64_t id;

	open_store(f);
	memset(&k, 0, sizeof(k));
	assert_int_equal(store_count(f->s, count_cb, &k), STORE_OK);
	assert_int_equal(k.n[STORE_ISSUED][0], 0);

	add_issued(f, 1, "a1", 100, "x", "r");
	add_issued(f, 2, "a2", 100, "x", "r");
	add_issued(f, 3, "a3", 100, "x", "r");
	assert_int_equal(store_revoke(f->s, "a3", 0, 50), STORE_OK);
	add_pending(f, 4, "x", "r", "server", NULL);
	id = add_pending(f, 5, "x", "r", "client", NULL);
	assert_int_equal(store_fail(f->s, id, "x"), STORE_OK);
	add_pending(f, 6, "x", "r", "client", NULL);
	memset(&k, 0, sizeof(k));
	assert_int_equal(store_count(f->s, count_cb, &k), STORE_OK);
	assert_int_equal(k.n[STORE_ISSUED][0], 2);
	assert_int_equal(k.n[STORE_REVOKED][0], 1);
	assert_int_equal(k.n[STORE_PENDING][1], 1);
	assert_int_equal(k.n[STORE_FAILED][2], 1);
	assert_int_equal(k.n[STORE_PENDING][2], 1);
	assert_int_equal(k.n[STORE_PENDING][0], 0);
	assert_int_equal(k.n[STORE_ISSUED][1], 0);
	assert_int_equal(k.other, 0);
}

/* store_expiring's answers, by profile. */
struct expiry {
	char		profile[16][16];
	uint64_t	n[16][3];
	int		calls;
};

static void
expiry_cb(const char *profile, const uint64_t *counts, void *arg)
{
	struct expiry *e = arg;

	assert_true(e->calls < 16);
	snprintf(e->profile[e->calls], sizeof(e->profile[0]), "%s", profile);
	memcpy(e->n[e->calls], counts, sizeof(e->n[0]));
	e->calls++;
}

static const uint64_t *
expiry_of(const struct expiry *e, const char *profile)
{
	int i;

	for (i = 0; i < e->calls; i++)
		if (strcmp(e->profile[i], profile) == 0)
			return e->n[i];
	return NULL;
}

static void
issue_as(struct fixture *f, unsigned int n, const char *serial,
    const char *profile, const char *renewed_from, int64_t not_after)
{
	int64_t id = add_pending(f, n, "spiffe://e/w", "r", profile,
	    renewed_from);

	if (store_complete(f->s, id, serial, der_fixed, sizeof(der_fixed), 10,
	    not_after) != STORE_OK)
		fail_msg("complete %s: %s", serial, store_error(f->s));
}

/*
 * The expiry figures count the issued certificates that are neither
 * revoked nor renewed nor expired, per profile and bound; the soonest is
 * over all of them, however far.
 */
static void
test_expiring(void **state)
{
	struct fixture *f = *state;
	const int64_t now = 1000;
	const int64_t before[3] = { now + 3600, now + 86400, now + 7 * 86400 };
	const int64_t bad[3] = { now + 3600, now + 3600, now + 7 * 86400 };
	const int64_t one[1] = { now + 8 * 86400 + 60 };
	struct expiry e;
	const uint64_t *c;
	int64_t soonest;

	open_store(f);
	memset(&e, 0, sizeof(e));
	assert_int_equal(store_expiring(f->s, now, before, 3, expiry_cb, &e,
	    &soonest), STORE_OK);
	assert_int_equal(e.calls, 0);
	assert_int_equal(soonest, 0);

	issue_as(f, 1, "a1", "svid", NULL, 2000);		/* 1h */
	issue_as(f, 2, "a2", "svid", NULL, now + 200000);	/* 7d */
	issue_as(f, 3, "a3", "svid", NULL, now + 10 * 86400);	/* beyond */
	issue_as(f, 4, "a4", "peer", NULL, now + 50000);	/* 24h */
	issue_as(f, 5, "a5", "client", NULL, now);		/* due now */
	issue_as(f, 6, "a6", "svid", NULL, now - 1);		/* expired */
	issue_as(f, 7, "a7", "svid", NULL, 1500);
	assert_int_equal(store_revoke(f->s, "a7", 1, 900), STORE_OK);
	issue_as(f, 8, "a8", "server", NULL, 1200);		/* renewed: */
	issue_as(f, 9, "a9", "server", "a8", now + 20 * 86400);
	add_pending(f, 10, "spiffe://e/p", "r", "subca", NULL);

	memset(&e, 0, sizeof(e));
	assert_int_equal(store_expiring(f->s, now, before, 3, expiry_cb, &e,
	    &soonest), STORE_OK);
	assert_int_equal(e.calls, 3);
	assert_non_null(c = expiry_of(&e, "svid"));
	assert_int_equal(c[0], 1);
	assert_int_equal(c[1], 1);
	assert_int_equal(c[2], 2);
	assert_non_null(c = expiry_of(&e, "peer"));
	assert_int_equal(c[0], 0);
	assert_int_equal(c[1], 1);
	assert_int_equal(c[2], 1);
	assert_non_null(c = expiry_of(&e, "client"));
	assert_int_equal(c[0], 1);
	assert_int_equal(c[1], 1);
	assert_int_equal(c[2], 1);
	assert_null(expiry_of(&e, "server"));
	assert_null(expiry_of(&e, "subca"));
	assert_int_equal(soonest, now);

	/* One bound, with nothing before it; the soonest is beyond. */
	memset(&e, 0, sizeof(e));
	assert_int_equal(store_expiring(f->s, now + 8 * 86400, one, 1,
	    expiry_cb, &e, &soonest), STORE_OK);
	assert_int_equal(e.calls, 0);
	assert_int_equal(soonest, now + 10 * 86400);

	/* No bound, too many, bounds not after now or not ascending, no
	 * callback or no result. */
	assert_int_equal(store_expiring(f->s, now, before, 0, expiry_cb, &e,
	    &soonest), STORE_ERROR);
	assert_int_equal(store_expiring(f->s, now + 3600, before, 3, expiry_cb,
	    &e, &soonest), STORE_ERROR);
	assert_int_equal(store_expiring(f->s, now, bad, 3, expiry_cb, &e,
	    &soonest), STORE_ERROR);
	assert_int_equal(store_expiring(f->s, now, before, STORE_EXPIRY_MAX + 1,
	    expiry_cb, &e, &soonest), STORE_ERROR);
	assert_int_equal(store_expiring(f->s, now, before, 3, NULL, &e,
	    &soonest), STORE_ERROR);
	assert_int_equal(store_expiring(f->s, now, before, 3, expiry_cb, &e,
	    NULL), STORE_ERROR);
	assert_int_equal(store_expiring(NULL, now, before, 3, expiry_cb, &e,
	    &soonest), STORE_ERROR);

	/* A file with more profile names than any of ours is refused, not
	 * counted name by name. */
	raw_exec(f->path, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
	    "SELECT i + 1 FROM c WHERE i < 64) INSERT INTO certificates "
	    "(request_id, serial, status, requester, rule, profile, key_name, "
	    "identity, subject, sans, created_at, not_before, not_after, der) "
	    "SELECT printf('e%031x', i), printf('f%x', i), 'issued', 'r', 'r', "
	    "'p' || i, 'k', 'i', '', '[]', 1, 1, 2000, x'30' FROM c");
	memset(&e, 0, sizeof(e));
	assert_int_equal(store_expiring(f->s, now, before, 3, expiry_cb, &e,
	    &soonest), STORE_ERROR);
	assert_non_null(strstr(store_error(f->s), "more than 64 profiles"));
	assert_int_equal(e.calls, 0);
}

int	sqlstore_list_sql(unsigned int mask, char *sql, size_t sqllen);

/*
 * Every list walk reads its rows in (not_after, id) order from an index:
 * a sort would be of every matching row at each step of the walk, which
 * made a walk of 100000 issued certificates take minutes.  A walk by
 * status reads only that status's rows.  Only a walk by identity (few
 * rows each) is looked up by its own index and sorted.
 */
static void
test_list_plans(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db = NULL;
	sqlite3_stmt *st;
	char sql[1024], plan[1024], eqp[1100];
	const unsigned char *t;
	unsigned int mask;
	size_t len;

	open_store(f);
	assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY,
	    NULL), SQLITE_OK);
	for (mask = 0; mask < 32; mask++) {
		assert_int_equal(sqlstore_list_sql(mask, sql, sizeof(sql)), 0);
		snprintf(eqp, sizeof(eqp), "EXPLAIN QUERY PLAN %s", sql);
		assert_int_equal(sqlite3_prepare_v2(db, eqp, -1, &st, NULL),
		    SQLITE_OK);
		plan[0] = '\0';
		while (sqlite3_step(st) == SQLITE_ROW)
			if ((t = sqlite3_column_text(st, 3)) != NULL &&
			    (len = strlen(plan)) < sizeof(plan) - 1)
				snprintf(plan + len, sizeof(plan) - len, "%s; ",
				    (const char *)t);
		assert_int_equal(sqlite3_finalize(st), SQLITE_OK);
		if (mask & 2) {
			if (strstr(plan, "certificates_identity") == NULL)
				fail_msg("filters %#x: %s", mask, plan);
		} else if (strstr(plan, (mask & 1) ?
		    "certificates_status_not_after (status=?" :
		    "certificates_not_after") == NULL ||
		    strstr(plan, "TEMP B-TREE") != NULL)
			fail_msg("filters %#x: %s", mask, plan);
	}
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
	assert_int_equal(sqlstore_list_sql(0, sql, 16), -1);
}

static void
hash_of(uint8_t h[32], unsigned int n)
{
	unsigned int i;

	for (i = 0; i < 32; i++)
		h[i] = (uint8_t)(n * 31 + i);
}

static void
test_tokens(void **state)
{
	struct fixture *f = *state;
	uint8_t h[32];
	char name[64];
	int i;

	open_store(f);
	hash_of(h, 1);
	assert_int_equal(store_token_add(f->s, h, "bob", 2000, 2), STORE_OK);
	assert_int_equal(store_token_add(f->s, h, "eve", 2000, 2),
	    STORE_CONFLICT);
	assert_int_equal(store_token_use(f->s, h, 1000, name, sizeof(name)),
	    STORE_OK);
	assert_string_equal(name, "bob");
	reopen_store(f);
	assert_int_equal(store_token_use(f->s, h, 1000, name, sizeof(name)),
	    STORE_OK);
	assert_string_equal(name, "bob");
	assert_int_equal(store_token_use(f->s, h, 1000, name, sizeof(name)),
	    STORE_EXHAUSTED);
	assert_string_equal(name, "");
	/* Expired wins over exhausted, and expiry is inclusive. */
	assert_int_equal(store_token_use(f->s, h, 2000, name, sizeof(name)),
	    STORE_EXPIRED);

	hash_of(h, 2);
	assert_int_equal(store_token_add(f->s, h, "carol", 1000, 5), STORE_OK);
	assert_int_equal(store_token_use(f->s, h, 1000, name, sizeof(name)),
	    STORE_EXPIRED);
	assert_int_equal(store_token_use(f->s, h, 5000, name, sizeof(name)),
	    STORE_EXPIRED);
	assert_int_equal(store_token_use(f->s, h, 999, name, sizeof(name)),
	    STORE_OK);
	assert_string_equal(name, "carol");

	hash_of(h, 3);
	assert_int_equal(store_token_use(f->s, h, 1, name, sizeof(name)),
	    STORE_NOTFOUND);
	assert_non_null(strstr(store_error(f->s), "token_use"));

	/* A buffer too small spends nothing. */
	hash_of(h, 4);
	assert_int_equal(store_token_add(f->s, h, "alice", 2000, 1), STORE_OK);
	assert_int_equal(store_token_use(f->s, h, 10, name, 5), STORE_ERROR);
	assert_string_equal(name, "");
	assert_non_null(strstr(store_error(f->s), "does not fit"));
	assert_int_equal(store_token_use(f->s, h, 10, name, 6), STORE_OK);
	assert_string_equal(name, "alice");
	assert_int_equal(store_token_use(f->s, h, 10, name, 6),
	    STORE_EXHAUSTED);
	assert_int_equal(store_token_use(f->s, h, 10, NULL, 6), STORE_ERROR);
	assert_int_equal(store_token_use(f->s, h, 10, name, 0), STORE_ERROR);

	/* Validation. */
	hash_of(h, 5);
	assert_int_equal(store_token_add(f->s, h, "x", 2000, 0), STORE_ERROR);
	assert_int_equal(store_token_add(f->s, h, "x", 2000, -1),
	    STORE_ERROR);
	assert_int_equal(store_token_add(f->s, h, "x", 2000, 1000001),
	    STORE_ERROR);
	assert_non_null(strstr(store_error(f->s), "uses"));
	assert_int_equal(store_token_add(f->s, h, "x", 0, 1), STORE_ERROR);
	assert_int_equal(store_token_add(f->s, h, "x", -5, 1), STORE_ERROR);
	assert_int_equal(store_token_add(f->s, h, "", 2000, 1), STORE_ERROR);
	assert_int_equal(store_token_add(f->s, h, NULL, 2000, 1), STORE_ERROR);
	assert_int_equal(store_token_add(f->s, NULL, "x", 2000, 1),
	    STORE_ERROR);
	assert_int_equal(store_token_use(f->s, h, 1, name, sizeof(name)),
	    STORE_NOTFOUND);
	assert_int_equal(store_token_add(f->s, h, "x", 2000, 1000000),
	    STORE_OK);
	for (i = 0; i < 3; i++)
		assert_int_equal(store_token_use(f->s, h, 1, name,
		    sizeof(name)), STORE_OK);
	hash_of(h, 6);
	assert_int_equal(store_token_add(f->s, h, "x", 2000, 1), STORE_OK);
}

/*
 * Group commit: writes in a batch are one transaction, each in its own
 * savepoint; a write that fails undoes only itself, and nothing is there
 * for another connection until the batch commits.
 */
static void
test_batch(void **state)
{
	struct fixture *f = *state;
	struct store_cert c, got;
	struct store *other = NULL;
	uint8_t h[32];
	char out[64];
	int64_t id1 = 0, id2 = 0, id3 = 0, idx = 0;

	open_store(f);
	assert_int_equal(store_open(f->path, &other, f->err, sizeof(f->err)),
	    STORE_OK);
	hash_of(h, 3);
	assert_int_equal(store_token_add(f->s, h, "bob", 2000, 1), STORE_OK);
	id1 = add_pending(f, 1, "spiffe://td/a", "bob", "svid", NULL);

	assert_int_equal(store_batch_end(f->s, 1), STORE_ERROR);
	assert_int_equal(store_batch_begin(f->s), STORE_OK);
	assert_int_equal(store_batch_begin(f->s), STORE_ERROR);
	make_cert(&c, 2, "spiffe://td/b", "bob", "svid", NULL);
	assert_int_equal(store_pending_add_spend(f->s, &c, h, 1000, &id2),
	    STORE_OK);
	store_cert_clear(&c);
	/* the token's only use is spent in the batch: this one fails alone */
	make_cert(&c, 3, "spiffe://td/c", "bob", "svid", NULL);
	assert_int_equal(store_pending_add_spend(f->s, &c, h, 1000, &idx),
	    STORE_EXHAUSTED);
	store_cert_clear(&c);
	/* a request id already there: fails alone too */
	make_cert(&c, 1, "spiffe://td/a", "bob", "svid", NULL);
	assert_int_equal(store_pending_add(f->s, &c, &idx), STORE_CONFLICT);
	store_cert_clear(&c);
	make_cert(&c, 4, "spiffe://td/d", "bob", "svid", NULL);
	assert_int_equal(store_pending_add(f->s, &c, &id3), STORE_OK);
	store_cert_clear(&c);
	assert_int_equal(store_complete(f->s, id1, "1a", der_fixed,
	    sizeof(der_fixed), 900, 5000), STORE_OK);
	assert_int_equal(store_complete(f->s, id3, "1a", der_fixed,
	    sizeof(der_fixed), 900, 5000), STORE_CONFLICT);
	assert_int_equal(store_fail(f->s, id3, "no answer"), STORE_OK);
	/* the batch sees its own writes; another connection does not */
	assert_int_equal(store_get(f->s, "1a", &got), STORE_OK);
	store_cert_clear(&got);
	assert_int_equal(store_get(other, "1a", &got), STORE_NOTFOUND);
	request_id(4, out);
	assert_int_equal(store_get_by_request(other, out, &got),
	    STORE_NOTFOUND);
	assert_int_equal(store_batch_end(f->s, 1), STORE_OK);
	assert_int_equal(store_batch_end(f->s, 1), STORE_ERROR);

	/* committed: seen from the other connection and after a reopen */
	reopen_store(f);
	assert_int_equal(store_get(other, "1a", &got), STORE_OK);
	assert_int_equal(got.id, id1);
	assert_int_equal(got.status, STORE_ISSUED);
	store_cert_clear(&got);
	request_id(2, out);
	assert_int_equal(store_get_by_request(f->s, out, &got), STORE_OK);
	assert_int_equal(got.id, id2);
	assert_int_equal(got.status, STORE_PENDING);
	store_cert_clear(&got);
	request_id(3, out);
	assert_int_equal(store_get_by_request(f->s, out, &got),
	    STORE_NOTFOUND);
	request_id(4, out);
	assert_int_equal(store_get_by_request(f->s, out, &got), STORE_OK);
	assert_int_equal(got.status, STORE_FAILED);
	store_cert_clear(&got);
	assert_int_equal(store_token_check(f->s, h, 1000, out, sizeof(out)),
	    STORE_EXHAUSTED);

	/* a caller authenticated by a certificate: only while it is issued */
	make_cert(&c, 6, "spiffe://td/f", "bob", "svid", NULL);
	assert_int_equal(store_pending_add_caller(f->s, &c, "1a", &idx),
	    STORE_OK);
	store_cert_clear(&c);
	assert_int_equal(store_revoke(f->s, "1a", 1, 3000), STORE_OK);
	make_cert(&c, 7, "spiffe://td/f", "bob", "svid", NULL);
	assert_int_equal(store_pending_add_caller(f->s, &c, "1a", &idx),
	    STORE_CALLER_REVOKED);
	assert_int_equal(idx, 0);
	assert_non_null(strstr(store_error(f->s), "revoked"));
	assert_int_equal(store_pending_add_caller(f->s, &c, "77", &idx),
	    STORE_CALLER_REVOKED);
	assert_int_equal(store_get_by_request(f->s, c.request_id, &got),
	    STORE_NOTFOUND);
	assert_int_equal(store_pending_add_caller(f->s, &c, "not hex", &idx),
	    STORE_ERROR);
	store_cert_clear(&c);

	/* a batch ended without commit leaves nothing */
	assert_int_equal(store_batch_begin(f->s), STORE_OK);
	make_cert(&c, 5, "spiffe://td/e", "bob", "svid", NULL);
	assert_int_equal(store_pending_add(f->s, &c, &idx), STORE_OK);
	assert_int_equal(store_complete(f->s, id2, "2b", der_fixed,
	    sizeof(der_fixed), 900, 5000), STORE_OK);
	assert_int_equal(store_batch_end(f->s, 0), STORE_OK);
	assert_int_equal(store_get_by_request(other, c.request_id, &got),
	    STORE_NOTFOUND);
	store_cert_clear(&c);
	assert_int_equal(store_get(f->s, "2b", &got), STORE_NOTFOUND);
	/* and the store works on, outside a batch */
	assert_int_equal(store_complete(f->s, id2, "2b", der_fixed,
	    sizeof(der_fixed), 900, 5000), STORE_OK);
	assert_int_equal(store_get(other, "2b", &got), STORE_OK);
	store_cert_clear(&got);
	store_close(other);
}

/*
 * store_token_check spends nothing; store_pending_add_spend spends one use
 * with the row, and neither without the other.
 */
static void
test_token_spend_with_row(void **state)
{
	struct fixture *f = *state;
	struct store_cert c, got;
	uint8_t h[32];
	char name[64], n[32];
	int64_t id = -1;
	int i;

	open_store(f);
	hash_of(h, 7);
	assert_int_equal(store_token_add(f->s, h, "bob", 2000, 1), STORE_OK);
	for (i = 0; i < 3; i++) {
		assert_int_equal(store_token_check(f->s, h, 1000, name,
		    sizeof(name)), STORE_OK);
		assert_string_equal(name, "bob");
	}
	assert_int_equal(store_token_check(f->s, h, 2000, name, sizeof(name)),
	    STORE_EXPIRED);
	assert_string_equal(name, "");
	assert_int_equal(store_token_check(f->s, h, 1000, name, 3),
	    STORE_ERROR);

	make_cert(&c, 70, "spiffe://td/a", "bob", "svid", NULL);
	assert_int_equal(store_pending_add_spend(f->s, &c, h, 1000, &id),
	    STORE_OK);
	assert_true(id > 0);
	assert_int_equal(store_get_by_request(f->s, c.request_id, &got),
	    STORE_OK);
	assert_int_equal(got.status, STORE_PENDING);
	store_cert_clear(&got);
	store_cert_clear(&c);
	assert_int_equal(store_token_check(f->s, h, 1000, name, sizeof(name)),
	    STORE_EXHAUSTED);

	/* No use left: no row either. */
	make_cert(&c, 71, "spiffe://td/a", "bob", "svid", NULL);
	assert_int_equal(store_pending_add_spend(f->s, &c, h, 1000, &id),
	    STORE_EXHAUSTED);
	assert_int_equal(id, 0);
	assert_int_equal(store_get_by_request(f->s, c.request_id, &got),
	    STORE_NOTFOUND);
	store_cert_clear(&c);

	/* A row that cannot be added (its request id is taken) spends
	 * nothing, and an unknown or expired token adds nothing. */
	hash_of(h, 8);
	assert_int_equal(store_token_add(f->s, h, "carol", 2000, 1), STORE_OK);
	make_cert(&c, 70, "spiffe://td/a", "carol", "svid", NULL);
	assert_int_equal(store_pending_add_spend(f->s, &c, h, 1000, &id),
	    STORE_CONFLICT);
	store_cert_clear(&c);
	reopen_store(f);
	assert_int_equal(store_token_check(f->s, h, 1000, name, sizeof(name)),
	    STORE_OK);
	make_cert(&c, 72, "spiffe://td/a", "carol", "svid", NULL);
	assert_int_equal(store_pending_add_spend(f->s, &c, h, 2000, &id),
	    STORE_EXPIRED);
	hash_of(h, 9);
	assert_int_equal(store_pending_add_spend(f->s, &c, h, 1000, &id),
	    STORE_NOTFOUND);
	assert_int_equal(store_get_by_request(f->s, c.request_id, &got),
	    STORE_NOTFOUND);
	assert_int_equal(store_pending_add_spend(f->s, &c, NULL, 1000, &id),
	    STORE_ERROR);
	store_cert_clear(&c);
	raw_query(f->path, "SELECT count(*) FROM certificates", n, sizeof(n));
	assert_string_equal(n, "1");
}

/* A store from before the renewed_by index gets it when opened. */
static void
test_renewed_by_index(void **state)
{
	struct fixture *f = *state;
	const char *q = "SELECT count(*) FROM sqlite_master WHERE type = "
	    "'index' AND name = 'certificates_renewed_by'";
	char n[32];

	open_store(f);
	raw_query(f->path, q, n, sizeof(n));
	assert_string_equal(n, "1");
	raw_exec(f->path, "DROP INDEX certificates_renewed_by");
	raw_query(f->path, q, n, sizeof(n));
	assert_string_equal(n, "0");
	reopen_store(f);
	raw_query(f->path, q, n, sizeof(n));
	assert_string_equal(n, "1");
}

/* A store made with the index on status alone gets the one on (status,
 * not_after) instead when it is opened. */
static void
test_status_index(void **state)
{
	struct fixture *f = *state;
	const char *q = "SELECT group_concat(name, ',') FROM (SELECT name "
	    "FROM sqlite_master WHERE type = 'index' AND name LIKE "
	    "'certificates_status%' ORDER BY name)";
	char n[128];

	open_store(f);
	add_issued(f, 1, "a1", 100, "x", "r");
	raw_query(f->path, q, n, sizeof(n));
	assert_string_equal(n, "certificates_status_not_after");
	raw_exec(f->path, "DROP INDEX certificates_status_not_after; "
	    "CREATE INDEX certificates_status ON certificates (status)");
	raw_query(f->path, q, n, sizeof(n));
	assert_string_equal(n, "certificates_status");
	reopen_store(f);
	raw_query(f->path, q, n, sizeof(n));
	assert_string_equal(n, "certificates_status_not_after");
	raw_query(f->path, "PRAGMA integrity_check", n, sizeof(n));
	assert_string_equal(n, "ok");
}

static void
test_crl_next(void **state)
{
	struct fixture *f = *state;
	int64_t n;

	open_store(f);
	assert_int_equal(store_crl_next(f->s, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(store_crl_next(f->s, &n), STORE_OK);
	assert_int_equal(n, 2);
	reopen_store(f);
	assert_int_equal(store_crl_next(f->s, &n), STORE_OK);
	assert_int_equal(n, 3);
	reopen_store(f);
	assert_int_equal(store_crl_next(f->s, &n), STORE_OK);
	assert_int_equal(n, 4);
	assert_int_equal(store_crl_next(f->s, NULL), STORE_ERROR);
}

/*
 * A child writes and dies without closing the store: by _exit() or by
 * SIGKILL right after the last call returned.  Everything that returned
 * STORE_OK must be there.
 */
static int
durability_child(const char *path, int kill_it)
{
	struct store_cert c;
	struct store *s = NULL;
	char err[256];
	int64_t id, n;

	if (store_open(path, &s, err, sizeof(err)) != STORE_OK)
		return 1;
	make_cert(&c, 1, "spiffe://e/pending", "child", "svid", NULL);
	if (store_pending_add(s, &c, &id) != STORE_OK)
		return 2;
	request_id(2, c.request_id);
	if (store_pending_add(s, &c, &id) != STORE_OK)
		return 3;
	store_cert_clear(&c);
	if (store_complete(s, id, "b2", der_fixed, sizeof(der_fixed), 10,
	    20) != STORE_OK)
		return 4;
	if (store_crl_next(s, &n) != STORE_OK || n != 1)
		return 5;
	if (kill_it)
		raise(SIGKILL);
	return 0;
}

static void
durability(struct fixture *f, int kill_it)
{
	struct store_cert c;
	char rid[33];
	pid_t pid;
	int status;
	int64_t n;

	assert_null(f->s);
	pid = fork();
	assert_true(pid != -1);
	if (pid == 0)
		_exit(durability_child(f->path, kill_it));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (kill_it) {
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);
	} else {
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	open_store(f);
	request_id(1, rid);
	assert_int_equal(store_get_by_request(f->s, rid, &c), STORE_OK);
	assert_int_equal(c.status, STORE_PENDING);
	assert_string_equal(c.identity, "spiffe://e/pending");
	store_cert_clear(&c);
	request_id(2, rid);
	assert_int_equal(store_get_by_request(f->s, rid, &c), STORE_OK);
	assert_int_equal(c.status, STORE_ISSUED);
	assert_string_equal(c.serial, "b2");
	assert_int_equal(c.derlen, sizeof(der_fixed));
	assert_memory_equal(c.der, der_fixed, sizeof(der_fixed));
	store_cert_clear(&c);
	assert_int_equal(store_crl_next(f->s, &n), STORE_OK);
	assert_int_equal(n, 2);
}

static void
test_durability_exit(void **state)
{
	durability(*state, 0);
}

static void
test_durability_kill(void **state)
{
	durability(*state, 1);
}

/* Text from the network is data, whatever it looks like. */
static void
test_hostile_strings(void **state)
{
	static const char *const texts[] = {
		HOSTILE,
		"a'b\"c`d\\e",
		"x\n\r\t\x01\x7f",
		"%s%n%x",
		"\xc3\xa9t\xc3\xa9 \xe2\x9c\x93",
		"\xff\xfe not UTF-8",
		"?1 ?2 :name @p $q",
	};
	struct fixture *f = *state;
	struct store_filter flt;
	struct store_cert c;
	struct collect k;
	char rid[33], *big;
	size_t i;
	int64_t id;

	open_store(f);
	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		make_cert(&c, 10 + (unsigned int)i, texts[i], texts[i],
		    texts[i], NULL);
		free(c.subject);
		c.subject = xstrdup(texts[i]);
		free(c.sans);
		c.sans = xstrdup(texts[i]);
		assert_int_equal(store_pending_add(f->s, &c, &id), STORE_OK);
		store_cert_clear(&c);
		assert_int_equal(store_fail(f->s, id, texts[i]), STORE_OK);
	}
	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		request_id(10 + (unsigned int)i, rid);
		assert_int_equal(store_get_by_request(f->s, rid, &c),
		    STORE_OK);
		assert_string_equal(c.identity, texts[i]);
		assert_string_equal(c.requester, texts[i]);
		assert_string_equal(c.profile, texts[i]);
		assert_string_equal(c.subject, texts[i]);
		assert_string_equal(c.sans, texts[i]);
		assert_string_equal(c.failure, texts[i]);
		store_cert_clear(&c);

		memset(&flt, 0, sizeof(flt));
		flt.status = -1;
		flt.identity = texts[i];
		assert_int_equal(list_count(f, &flt, &k), 1);
		flt.identity = NULL;
		flt.requester = texts[i];
		assert_int_equal(list_count(f, &flt, &k), 1);
	}
	/* The table is still there, with every row. */
	memset(&flt, 0, sizeof(flt));
	flt.status = STORE_FAILED;
	assert_int_equal(list_count(f, &flt, &k),
	    sizeof(texts) / sizeof(texts[0]));

	/* A hostile serial or request id is refused, not looked up. */
	assert_int_equal(store_get(f->s, HOSTILE, &c), STORE_ERROR);
	assert_int_equal(store_get(f->s, "a1\nforged log line", &c),
	    STORE_ERROR);
	assert_null(strchr(store_error(f->s), '\n'));
	assert_int_equal(store_revoke(f->s, "1' OR '1'='1", 1, 5),
	    STORE_ERROR);
	assert_int_equal(store_get_by_request(f->s, HOSTILE, &c),
	    STORE_ERROR);

	/* The length limit on text fields. */
	big = malloc(65538);
	assert_non_null(big);
	memset(big, 'x', 65537);
	big[65537] = '\0';
	make_cert(&c, 50, "i", "r", "svid", NULL);
	free(c.subject);
	c.subject = big;
	assert_int_equal(store_pending_add(f->s, &c, &id), STORE_ERROR);
	assert_non_null(strstr(store_error(f->s), "subject longer"));
	big[65536] = '\0';
	assert_int_equal(store_pending_add(f->s, &c, &id), STORE_OK);
	store_cert_clear(&c);
	request_id(50, rid);
	assert_int_equal(store_get_by_request(f->s, rid, &c), STORE_OK);
	assert_int_equal(strlen(c.subject), 65536);
	store_cert_clear(&c);
}

/* Every call on a NULL store fails cleanly. */
static void
test_null_store(void **state)
{
	struct store_cert c;
	int64_t n = 5;
	char name[8] = "x";
	uint8_t h[32] = { 0 };

	(void)state;
	assert_string_equal(store_error(NULL), "no store");
	assert_int_equal(store_get(NULL, "a1", &c), STORE_ERROR);
	assert_null(c.requester);
	assert_int_equal(store_crl_next(NULL, &n), STORE_ERROR);
	assert_int_equal(n, 0);
	assert_int_equal(store_token_use(NULL, h, 1, name, sizeof(name)),
	    STORE_ERROR);
	assert_string_equal(name, "");
	assert_int_equal(store_token_check(NULL, h, 1, name, sizeof(name)),
	    STORE_ERROR);
	assert_int_equal(store_open("x", NULL, NULL, 0), STORE_ERROR);
	store_close(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_reopen_keeps, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_newer_version, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_garbage_refused, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_lifecycle, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_fail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_revoke, setup, teardown),
		cmocka_unit_test_setup_teardown(test_renewal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_filters, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_pending_walk, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_count, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiring, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_list_plans, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_spend_with_row,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_renewed_by_index,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_index, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_crl_next, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_durability_exit, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_durability_kill, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_hostile_strings, setup,
		    teardown),
		cmocka_unit_test(test_null_store),
	};

	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
