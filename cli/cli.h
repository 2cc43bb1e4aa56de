#ifndef HSMCA_CLI_H
#define HSMCA_CLI_H

/* audit.c */
int		 audit_main(int argc, char **argv);

/* ceremony.c */
int		 ceremony_main(int argc, char **argv);

/* token.c */
int		 token_main(int argc, char **argv);

/* util.c */
/* Parses a decimal integer in [min, max]; on error returns 0 and sets
 * *errstr to "invalid", "too small" or "too large" (OpenBSD strtonum). */
long long	 cli_strtonum(const char *s, long long min, long long max,
		    const char **errstr);

#endif
