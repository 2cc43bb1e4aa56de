/*
 * The allocator in use, asked of the allocator itself rather than taken
 * from the build: a jemalloc build that ended up on glibc's malloc (a
 * linker dropping the library, an LD_PRELOAD) says so.
 */
#include "config.h"

#include <stdio.h>

#ifdef HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include "allocator.h"

const char *
allocator_describe(char *buf, size_t len)
{
#ifdef HAVE_JEMALLOC
	const char *version = NULL;
	size_t sz = sizeof(version);

	if (mallctl("version", &version, &sz, NULL, 0) == 0 &&
	    sz == sizeof(version) && version != NULL) {
		snprintf(buf, len, "jemalloc %.40s", version);
		return buf;
	}
#endif
#if defined(__SANITIZE_ADDRESS__)
	snprintf(buf, len, "AddressSanitizer's malloc");
#else
	snprintf(buf, len, "the C library's malloc");
#endif
	return buf;
}
