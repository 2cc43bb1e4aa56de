/*
 * Secrets in memory: PINs and, later, MAC keys.  Kept on their own pages,
 * locked against swap and excluded from core dumps, wiped before release.
 */
#include "config.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "token.h"

#define SECRET_FILE_MAX	4096	/* a PIN or key file is never larger */

struct secret {
	uint8_t	*s_buf;
	size_t	 s_len;
	size_t	 s_cap;
	size_t	 s_maplen;
};

int
secret_new(size_t cap, struct secret **out)
{
	struct secret *s;
	long page = sysconf(_SC_PAGESIZE);

	*out = NULL;
	if (cap == 0 || cap > SECRET_FILE_MAX || page <= 0)
		return TOKEN_ERR_INVALID;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return TOKEN_ERR_NOMEM;
	s->s_maplen = ((cap + (size_t)page - 1) / (size_t)page) * (size_t)page;
	s->s_buf = mmap(NULL, s->s_maplen, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->s_buf == MAP_FAILED) {
		free(s);
		return TOKEN_ERR_NOMEM;
	}
	/* Best effort: RLIMIT_MEMLOCK may forbid locking, and a secret is
	 * still better held than refused. */
	(void)mlock(s->s_buf, s->s_maplen);
	(void)madvise(s->s_buf, s->s_maplen, MADV_DONTDUMP);
	s->s_cap = cap;
	*out = s;
	return 0;
}

const uint8_t *
secret_data(const struct secret *s)
{
	return s->s_buf;
}

size_t
secret_len(const struct secret *s)
{
	return s->s_len;
}

void
secret_free(struct secret *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s->s_buf, s->s_maplen);
	(void)munlock(s->s_buf, s->s_maplen);
	(void)munmap(s->s_buf, s->s_maplen);
	free(s);
}

int
secret_check_fd(int fd, const char *path)
{
	struct stat st;

	if (fstat(fd, &st) == -1) {
		token_set_detail("%s: %s", path, strerror(errno));
		return TOKEN_ERR_PIN_FILE;
	}
	if (!S_ISREG(st.st_mode)) {
		token_set_detail("%s: not a regular file", path);
		return TOKEN_ERR_PIN_FILE;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		token_set_detail("%s: owned by uid %lu, expected %lu or root",
		    path, (unsigned long)st.st_uid, (unsigned long)geteuid());
		return TOKEN_ERR_PIN_FILE;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		token_set_detail("%s: mode %04o gives group or other access; "
		    "chmod 600 it", path, (unsigned)(st.st_mode & 07777));
		return TOKEN_ERR_PIN_FILE;
	}
	return 0;
}

int
secret_read_fd(int fd, const char *name, struct secret **out)
{
	struct secret *s = NULL;
	struct stat st;
	size_t len = 0;
	ssize_t n;
	int ret;

	*out = NULL;
	if (fstat(fd, &st) == -1) {
		token_set_detail("%s: %s", name, strerror(errno));
		return TOKEN_ERR_PIN_FILE;
	}
	if (S_ISREG(st.st_mode) && (ret = secret_check_fd(fd, name)) != 0)
		return ret;
	/* One byte more than the limit, to tell "too long" from "exactly". */
	if ((ret = secret_new(SECRET_FILE_MAX, &s)) != 0)
		return ret;
	for (;;) {
		if (len == SECRET_FILE_MAX) {
			token_set_detail("%s: longer than %d bytes", name,
			    SECRET_FILE_MAX - 1);
			ret = TOKEN_ERR_PIN_FILE;
			goto out;
		}
		n = read(fd, s->s_buf + len, SECRET_FILE_MAX - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			token_set_detail("%s: %s", name, strerror(errno));
			ret = TOKEN_ERR_PIN_FILE;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > 0 && s->s_buf[len - 1] == '\n')
		len--;
	if (len > 0 && s->s_buf[len - 1] == '\r')
		len--;
	if (len == 0) {
		token_set_detail("%s: empty", name);
		ret = TOKEN_ERR_PIN_FILE;
		goto out;
	}
	if (memchr(s->s_buf, '\n', len) != NULL ||
	    memchr(s->s_buf, '\0', len) != NULL) {
		token_set_detail("%s: more than one line, or a NUL byte", name);
		ret = TOKEN_ERR_PIN_FILE;
		goto out;
	}
	explicit_bzero(s->s_buf + len, s->s_maplen - len);
	s->s_len = len;
	*out = s;
	s = NULL;
	ret = 0;
 out:
	secret_free(s);
	return ret;
}

int
secret_read_file(const char *path, struct secret **out)
{
	int fd, ret;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY)) == -1) {
		token_set_detail("%s: %s", path, strerror(errno));
		return TOKEN_ERR_PIN_FILE;
	}
	if ((ret = secret_check_fd(fd, path)) == 0)
		ret = secret_read_fd(fd, path, out);
	close(fd);
	return ret;
}
