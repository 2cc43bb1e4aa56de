/*
 * Which allocator serves this process's malloc: the daemons say so when
 * they start, so that an operator (and the tests) can tell a build linked
 * with jemalloc from one that is not.
 */
#ifndef HSMCA_ALLOCATOR_H
#define HSMCA_ALLOCATOR_H

#include <stddef.h>

/* Writes a short description into buf ("jemalloc 5.3.0-...", or the C
 * library's malloc) and returns buf. */
const char	*allocator_describe(char *buf, size_t len);

#endif
