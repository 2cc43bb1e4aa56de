/*
 * hsmca-signerd's sandbox (DESIGN.md "Processes and trust boundaries"):
 * entered once, after the token is open and logged in and the IPC socket
 * is bound, before any request is served.
 */
#ifndef HSMCA_SANDBOX_H
#define HSMCA_SANDBOX_H

#include <sys/types.h>

struct sandbox_config {
	/* Drop to this user and its primary group; NULL when the process
	 * already runs as an unprivileged user (then being root is an
	 * error). */
	const char		*user;
	/* NULL-terminated lists of directory trees Landlock leaves open,
	 * read-write (state, audit, token) and read-only. */
	const char *const	*rw_paths;
	const char *const	*ro_paths;
};

/* Looks a user up: its uid and primary gid.  Returns 0 or -1 (logged). */
int	sandbox_lookup_user(const char *name, uid_t *uid, gid_t *gid);
/* Looks a group up.  Returns 0 or -1 (logged). */
int	sandbox_lookup_group(const char *name, gid_t *gid);

/*
 * In this order: setgroups, setresgid, setresuid (when user is set), then
 * proves root cannot be regained; PR_SET_NO_NEW_PRIVS; PR_SET_DUMPABLE 0;
 * RLIMIT_CORE 0; every capability cleared (libcap-ng); Landlock where the
 * kernel has it (the ABI is logged; its absence is logged, not fatal);
 * last the seccomp allow-list (kill the process on anything else, or log
 * in a --enable-seccomp-debug build).  No AF_INET/AF_INET6 socket can be
 * made afterwards.  Returns 0, or -1 after logging what failed: the caller
 * must exit, never serve.
 */
int	sandbox_enter(const struct sandbox_config *config);

#endif
