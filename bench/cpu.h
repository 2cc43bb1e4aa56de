/*
 * CPU time for the benches: the bench's own, and that of the daemon it
 * drives, so that a bench can say what one answer costs the machine as
 * well as how many answers it got.
 */
#ifndef HSMCA_BENCH_CPU_H
#define HSMCA_BENCH_CPU_H

/* CPU seconds, user and system, every thread of this process has used. */
double	bench_cpu_self(void);

/*
 * CPU seconds, user and system, that the process HSMCA_BENCH_SERVER_PID
 * names has used (from /proc/PID/stat); -1 when the variable is not set
 * or the file cannot be read or parsed.
 */
double	bench_cpu_server(void);

#endif
