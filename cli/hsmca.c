/*
 * hsmca: the operator's command.  One entry function per command.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "log.h"

static const struct {
	const char	*name;
	int		(*main)(int, char **);
	const char	*what;
} commands[] = {
	{ "agent", agent_main,
	    "keep certificates enrolled and renewed (once, or as a daemon)" },
	{ "audit", audit_main,
	    "verify the signer's audit log, or report key use from it" },
	{ "ceremony", ceremony_main,
	    "generate the CA keys in the token and sign the CA certificates" },
	{ "check-endpoint", check_main,
	    "check the certificate chain a TLS endpoint serves (plugin)" },
	{ "enroll", enroll_main,
	    "make a key and get its certificate with a bootstrap token" },
	{ "inventory", inventory_main,
	    "list the certificates issued (admins, over mTLS)" },
	{ "renew", renew_main,
	    "renew a certificate over mTLS with it, replacing its files" },
	{ "revoke", revoke_main,
	    "revoke a certificate over mTLS (its holder or an admin)" },
	{ "token", token_main,
	    "create a bootstrap token for a requester (printed once)" },
};

static void
usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: hsmca <command> [options]   (hsmca <command> --help)\n\n");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].what);
}

int
main(int argc, char **argv)
{
	size_t i;

	log_init("hsmca", 1, 0);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("hsmca %s\n", PACKAGE_VERSION);
		return 0;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].main(argc - 1, argv + 1);
	log_warnx("unknown command \"%s\"", argv[1]);
	usage(stderr);
	return 2;
}
