#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include "cli.h"

long long
cli_strtonum(const char *s, long long min, long long max, const char **errstr)
{
	long long v;
	char *end;

	*errstr = NULL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (s[0] == '\0' || *end != '\0') {
		*errstr = "invalid";
		return 0;
	}
	if ((errno == ERANGE && v == LLONG_MIN) || v < min) {
		*errstr = "too small";
		return 0;
	}
	if ((errno == ERANGE && v == LLONG_MAX) || v > max) {
		*errstr = "too large";
		return 0;
	}
	return v;
}
