/*
 * One small log API for every hsmca program: the process name on every
 * line, stderr in the foreground, syslog otherwise.  Never pass a PIN, key
 * or token to it.
 */
#ifndef HSMCA_LOG_H
#define HSMCA_LOG_H

#include <stdarg.h>

#define LOG_FOREGROUND	1

void	log_init(const char *progname, int foreground, int verbose);
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

#endif
