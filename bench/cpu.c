/*
 * CPU time for the benches (cpu.h).
 */
#include "config.h"

#include <sys/resource.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"

double
bench_cpu_self(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	    ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

double
bench_cpu_server(void)
{
	const char *v = getenv("HSMCA_BENCH_SERVER_PID");
	char path[64], buf[1024], *p, *ep;
	unsigned long long ut, st;
	long pid, hz = sysconf(_SC_CLK_TCK);
	size_t n;
	FILE *f;

	if (v == NULL || hz <= 0)
		return -1;
	pid = strtol(v, &ep, 10);
	if (ep == v || *ep != '\0' || pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if ((f = fopen(path, "re")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: the fields
	 * counted are after its last ')'.  State is field 3; utime and
	 * stime, in clock ticks, are fields 14 and 15. */
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
	    "%llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)hz;
}
