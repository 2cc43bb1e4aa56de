/*
 * hsmca-signerd's sandbox (sandbox.h, DESIGN.md "Processes and trust
 * boundaries"): one function drops privileges in a fixed order and proves
 * the drop, then Landlock narrows the file system and a seccomp allow-list
 * narrows the kernel.  Every step logs what failed; the caller exits.
 *
 * Per-thread state: credentials change in every thread (glibc broadcasts
 * setgroups/setresgid/setresuid), the seccomp filter is synchronised to
 * every thread (TSYNC, which also sets no_new_privs on them), dumpable and
 * rlimits are per process.  The capability bounding set and, before ABI 8,
 * the Landlock domain are per thread: threads that exist before the call
 * (nanomsg's workers) keep their bounding set, which only matters at
 * execve, and are outside Landlock; both are logged.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cap-ng.h>
#include <seccomp.h>
#ifdef HAVE_LINUX_LANDLOCK_H
#include <linux/landlock.h>
#endif

#include "log.h"
#include "sandbox.h"

#ifdef HSMCA_SECCOMP_DEBUG
#define SANDBOX_SECCOMP_DEFAULT	SCMP_ACT_LOG
#define SANDBOX_SECCOMP_MODE	"log (--enable-seccomp-debug: NOT FOR PRODUCTION)"
#else
#define SANDBOX_SECCOMP_DEFAULT	SCMP_ACT_KILL_PROCESS
#define SANDBOX_SECCOMP_MODE	"kill process"
#endif

/* Lookups: getpw*_r with a buffer that grows on ERANGE. */
#define SANDBOX_PWBUF_MAX	(1 << 20)

int
sandbox_lookup_user(const char *name, uid_t *uid, gid_t *gid)
{
	struct passwd	 pw, *found = NULL;
	char		*buf = NULL, *grown;
	size_t		 len = 1024;
	int		 rc, ret = -1;

	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	for (;;) {
		if ((grown = realloc(buf, len)) == NULL) {
			log_warn("sandbox: looking up user %s", name);
			goto out;
		}
		buf = grown;
		rc = getpwnam_r(name, &pw, buf, len, &found);
		if (rc != ERANGE || len >= SANDBOX_PWBUF_MAX)
			break;
		len *= 2;
	}
	if (rc != 0) {
		errno = rc;
		log_warn("sandbox: looking up user %s", name);
		goto out;
	}
	if (found == NULL) {
		log_warnx("sandbox: no user %s", name);
		goto out;
	}
	*uid = pw.pw_uid;
	*gid = pw.pw_gid;
	ret = 0;
out:
	free(buf);
	return ret;
}

int
sandbox_lookup_group(const char *name, gid_t *gid)
{
	struct group	 gr, *found = NULL;
	char		*buf = NULL, *grown;
	size_t		 len = 1024;
	int		 rc, ret = -1;

	*gid = (gid_t)-1;
	for (;;) {
		if ((grown = realloc(buf, len)) == NULL) {
			log_warn("sandbox: looking up group %s", name);
			goto out;
		}
		buf = grown;
		rc = getgrnam_r(name, &gr, buf, len, &found);
		if (rc != ERANGE || len >= SANDBOX_PWBUF_MAX)
			break;
		len *= 2;
	}
	if (rc != 0) {
		errno = rc;
		log_warn("sandbox: looking up group %s", name);
		goto out;
	}
	if (found == NULL) {
		log_warnx("sandbox: no group %s", name);
		goto out;
	}
	*gid = gr.gr_gid;
	ret = 0;
out:
	free(buf);
	return ret;
}

/*
 * Reads one "Name:\tvalue" line of /proc/thread-self/status (this
 * thread's view: capabilities are per thread).  Returns 0 or -1.
 */
static int
sandbox_status_field(const char *name, char *value, size_t valuelen)
{
	char	 line[256];
	size_t	 namelen = strlen(name);
	FILE	*f;
	int	 ret = -1;

	if ((f = fopen("/proc/thread-self/status", "re")) == NULL) {
		log_warn("sandbox: /proc/thread-self/status");
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, name, namelen) != 0 || line[namelen] != ':')
			continue;
		snprintf(value, valuelen, "%s", line + namelen + 1 +
		    strspn(line + namelen + 1, " \t"));
		value[strcspn(value, "\n")] = '\0';
		ret = 0;
		break;
	}
	fclose(f);
	if (ret == -1)
		log_warnx("sandbox: no %s in /proc/thread-self/status", name);
	return ret;
}

/*
 * The bounding and ambient sets can only be emptied while this thread
 * still has CAP_SETPCAP, that is while it is root: this runs inside the
 * fixed order, between setresgid and setresuid.  The permitted and
 * effective sets go with setresuid itself; sandbox_clear_capabilities
 * clears what is left (the inheritable set) and verifies all five.
 */
static int
sandbox_clear_bounding(void)
{
	if (capng_get_caps_process() != 0) {
		log_warnx("sandbox: capng_get_caps_process failed");
		return -1;
	}
	capng_clear(CAPNG_SELECT_BOUNDS | CAPNG_SELECT_AMBIENT);
	if (capng_apply(CAPNG_SELECT_BOUNDS | CAPNG_SELECT_AMBIENT) != 0) {
		log_warnx("sandbox: cannot clear the capability bounding "
		    "and ambient sets");
		return -1;
	}
	return 0;
}

/*
 * Like OpenSSH's permanently_set_uid: the drop counts only once going
 * back has been tried and has failed.
 */
static int
sandbox_prove_dropped(uid_t uid, gid_t gid, int check_groups)
{
	uid_t	ruid, euid, suid;
	gid_t	rgid, egid, sgid, groups[2];
	int	ngroups;

	if (getresuid(&ruid, &euid, &suid) == -1 ||
	    getresgid(&rgid, &egid, &sgid) == -1) {
		log_warn("sandbox: getresuid/getresgid");
		return -1;
	}
	if (ruid != uid || euid != uid || suid != uid ||
	    rgid != gid || egid != gid || sgid != gid) {
		log_warnx("sandbox: ids are uid %u/%u/%u gid %u/%u/%u, "
		    "want %u and %u", (unsigned)ruid, (unsigned)euid,
		    (unsigned)suid, (unsigned)rgid, (unsigned)egid,
		    (unsigned)sgid, (unsigned)uid, (unsigned)gid);
		return -1;
	}
	if (setresuid(0, 0, 0) != -1 || setuid(0) != -1 || seteuid(0) != -1) {
		log_warnx("sandbox: uid 0 could be regained");
		return -1;
	}
	if (setresgid(0, 0, 0) != -1 || setgid(0) != -1 || setegid(0) != -1) {
		log_warnx("sandbox: gid 0 could be regained");
		return -1;
	}
	if (check_groups) {
		ngroups = getgroups(2, groups);
		if (ngroups != 1 || groups[0] != gid) {
			log_warnx("sandbox: supplementary groups are not "
			    "just %u", (unsigned)gid);
			return -1;
		}
	}
	return 0;
}

/* The fixed order: setgroups, setresgid, setresuid, then the proof. */
static int
sandbox_drop_user(const char *user, uid_t *uid, gid_t *gid)
{
	uid_t	ruid, euid, suid;
	gid_t	rgid, egid, sgid;

	if (user == NULL) {
		/* Already unprivileged: nothing to drop, but prove it. */
		if (getresuid(&ruid, &euid, &suid) == -1 ||
		    getresgid(&rgid, &egid, &sgid) == -1) {
			log_warn("sandbox: getresuid/getresgid");
			return -1;
		}
		if (ruid == 0 || euid == 0 || suid == 0) {
			log_warnx("sandbox: running as root and no user "
			    "to drop to");
			return -1;
		}
		*uid = ruid;
		*gid = rgid;
		return sandbox_prove_dropped(*uid, *gid, 0);
	}

	if (sandbox_lookup_user(user, uid, gid) == -1)
		return -1;
	if (*uid == 0 || *gid == 0) {
		log_warnx("sandbox: user %s has uid %u gid %u; refusing to "
		    "run as root", user, (unsigned)*uid, (unsigned)*gid);
		return -1;
	}
	if (geteuid() != 0) {
		log_warnx("sandbox: must be root to become %s", user);
		return -1;
	}
	/* Only the user's own group: no supplementary group survives. */
	if (setgroups(1, gid) == -1) {
		log_warn("sandbox: setgroups %u", (unsigned)*gid);
		return -1;
	}
	if (setresgid(*gid, *gid, *gid) == -1) {
		log_warn("sandbox: setresgid %u", (unsigned)*gid);
		return -1;
	}
	if (sandbox_clear_bounding() == -1)
		return -1;
	/* Root to non-root without keepcaps: the kernel empties the
	 * permitted, effective and ambient sets here. */
	if (setresuid(*uid, *uid, *uid) == -1) {
		log_warn("sandbox: setresuid %u", (unsigned)*uid);
		return -1;
	}
	return sandbox_prove_dropped(*uid, *gid, 1);
}

/*
 * Every capability set empty in this thread, and proved so from the
 * kernel's own report.  When the process started unprivileged it cannot
 * change its bounding set without CAP_SETPCAP; that is logged, not fatal:
 * the bounding set matters only at execve, which no_new_privs neuters and
 * seccomp forbids.
 */
static int
sandbox_clear_capabilities(int dropped_root)
{
	static const char *const sets[] = {
		"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"
	};
	capng_select_t	select = CAPNG_SELECT_CAPS | CAPNG_SELECT_AMBIENT;
	char		value[64];
	size_t		i;

	if (capng_get_caps_process() != 0) {
		log_warnx("sandbox: capng_get_caps_process failed");
		return -1;
	}
	if (capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP))
		select = CAPNG_SELECT_ALL;
	capng_clear(CAPNG_SELECT_ALL);
	if (capng_apply(select) != 0) {
		log_warnx("sandbox: cannot clear capabilities");
		return -1;
	}
	for (i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		if (sandbox_status_field(sets[i], value, sizeof(value)) == -1)
			return -1;
		if (strspn(value, "0") == strlen(value))
			continue;
		if (!dropped_root && strcmp(sets[i], "CapBnd") == 0) {
			log_info("sandbox: started unprivileged without "
			    "CAP_SETPCAP, bounding set stays %s", value);
			continue;
		}
		log_warnx("sandbox: %s is %s after clearing", sets[i], value);
		return -1;
	}
	return 0;
}

#ifdef HAVE_LINUX_LANDLOCK_H
/* Rights newer than the installed header; values from the kernel ABI. */
#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER		(1ULL << 13)
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE		(1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV		(1ULL << 15)
#endif
#ifndef LANDLOCK_ACCESS_NET_BIND_TCP
#define LANDLOCK_ACCESS_NET_BIND_TCP		(1ULL << 0)
#endif
#ifndef LANDLOCK_ACCESS_NET_CONNECT_TCP
#define LANDLOCK_ACCESS_NET_CONNECT_TCP		(1ULL << 1)
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET	(1ULL << 0)
#endif
#ifndef LANDLOCK_RESTRICT_SELF_TSYNC
#define LANDLOCK_RESTRICT_SELF_TSYNC		(1U << 3)
#endif

/* The v1 rights: execute up to make_sym. */
#define SANDBOX_LL_FS_V1	((1ULL << 13) - 1)
/* Rights that apply to a file (not only to a directory). */
#define SANDBOX_LL_FS_FILE	(LANDLOCK_ACCESS_FS_EXECUTE | \
	LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE | \
	LANDLOCK_ACCESS_FS_TRUNCATE | LANDLOCK_ACCESS_FS_IOCTL_DEV)
#define SANDBOX_LL_FS_RO	(LANDLOCK_ACCESS_FS_EXECUTE | \
	LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)

/*
 * The attribute as of ABI 6; older kernels are passed a shorter size
 * (the fields they know), the header installed here may be older still.
 */
struct sandbox_ll_attr {
	uint64_t	handled_access_fs;
	uint64_t	handled_access_net;
	uint64_t	scoped;
};

struct sandbox_ll_path_beneath {
	uint64_t	allowed_access;
	int32_t		parent_fd;
} __attribute__((packed));

static int
sandbox_landlock_add(int ruleset, const char *path, uint64_t access,
    uint64_t handled)
{
	struct sandbox_ll_path_beneath	rule;
	struct stat			st;
	int				fd, ret = -1;

	if ((fd = open(path, O_PATH | O_CLOEXEC)) == -1) {
		log_warn("sandbox: landlock: %s", path);
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		log_warn("sandbox: landlock: %s", path);
		goto out;
	}
	/* Directory rights on a plain file are EINVAL. */
	if (!S_ISDIR(st.st_mode))
		access &= SANDBOX_LL_FS_FILE;
	rule.allowed_access = access & handled;
	rule.parent_fd = fd;
	if (syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH,
	    &rule, 0) == -1) {
		log_warn("sandbox: landlock: rule for %s", path);
		goto out;
	}
	ret = 0;
out:
	close(fd);
	return ret;
}

/* Number of threads in the process, from /proc/self/status. */
static int
sandbox_threads(void)
{
	char	line[128];
	FILE	*f;
	int	n = -1;

	if ((f = fopen("/proc/self/status", "re")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	fclose(f);
	return n;
}

/*
 * rw_paths get every right this ABI knows, ro_paths read and execute,
 * everything else is denied; TCP bind/connect are handled with no rule
 * (denied) and abstract unix sockets scoped to the domain where the ABI
 * has them.  Signals are not scoped: before ABI 8 sibling threads live in
 * different domains.  Returns the ABI (0: no Landlock) or -1.
 */
static int
sandbox_landlock(const struct sandbox_config *config, size_t *nrw,
    size_t *nro)
{
	struct sandbox_ll_attr	attr;
	const char *const	*p;
	size_t			attrsize;
	uint32_t		flags = 0;
	int			abi, ruleset = -1, ret = -1, threads;

	*nrw = *nro = 0;
	abi = (int)syscall(SYS_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);
	if (abi <= 0) {
		if (errno == ENOSYS || errno == EOPNOTSUPP) {
			log_warn("sandbox: landlock not available, the file "
			    "system is not restricted");
			return 0;
		}
		log_warn("sandbox: landlock ABI");
		return -1;
	}

	memset(&attr, 0, sizeof(attr));
	attr.handled_access_fs = SANDBOX_LL_FS_V1;
	attrsize = sizeof(attr.handled_access_fs);
	if (abi >= 2)
		attr.handled_access_fs |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		attr.handled_access_fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 4) {
		attr.handled_access_net = LANDLOCK_ACCESS_NET_BIND_TCP |
		    LANDLOCK_ACCESS_NET_CONNECT_TCP;
		attrsize = offsetof(struct sandbox_ll_attr, scoped);
	}
	if (abi >= 5)
		attr.handled_access_fs |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	if (abi >= 6) {
		attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET;
		attrsize = sizeof(attr);
	}
	if (abi >= 8)
		flags |= LANDLOCK_RESTRICT_SELF_TSYNC;

	ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, attrsize,
	    0);
	if (ruleset == -1) {
		log_warn("sandbox: landlock_create_ruleset (ABI %d)", abi);
		goto out;
	}
	for (p = config->rw_paths; p != NULL && *p != NULL; p++, (*nrw)++)
		if (sandbox_landlock_add(ruleset, *p, attr.handled_access_fs,
		    attr.handled_access_fs) == -1)
			goto out;
	for (p = config->ro_paths; p != NULL && *p != NULL; p++, (*nro)++)
		if (sandbox_landlock_add(ruleset, *p, SANDBOX_LL_FS_RO,
		    attr.handled_access_fs) == -1)
			goto out;

	threads = sandbox_threads();
	if (threads > 1 && !(flags & LANDLOCK_RESTRICT_SELF_TSYNC))
		log_warnx("sandbox: landlock ABI %d restricts only this thread "
		    "and its future threads; %d other thread(s) stay outside "
		    "(seccomp still covers them)", abi, threads - 1);
	if (syscall(SYS_landlock_restrict_self, ruleset, flags) == -1) {
		log_warn("sandbox: landlock_restrict_self (ABI %d)", abi);
		goto out;
	}
	ret = abi;
out:
	if (ruleset != -1)
		close(ruleset);
	return ret;
}
#else
static int
sandbox_landlock(const struct sandbox_config *config, size_t *nrw,
    size_t *nro)
{
	(void)config;
	*nrw = *nro = 0;
	log_warnx("sandbox: built without linux/landlock.h, the file system "
	    "is not restricted");
	return 0;
}
#endif

/*
 * One syscall with no argument check.  A name the architecture
 * lacks (libseccomp gives a negative pseudo number) is skipped.
 */
static int
sandbox_allow(scmp_filter_ctx ctx, uint32_t action, int nr, size_t *n)
{
	int rc;

	if (nr < 0)
		return 0;
	if ((rc = seccomp_rule_add(ctx, action, nr, 0)) < 0) {
		log_warnx("sandbox: seccomp rule for %d: %s", nr,
		    strerror(-rc));
		return -1;
	}
	(*n)++;
	return 0;
}

/* One syscall allowed (or refused) when one argument matches. */
static int
sandbox_rule(scmp_filter_ctx ctx, uint32_t action, int nr, size_t *n,
    struct scmp_arg_cmp cmp)
{
	int rc;

	if (nr < 0)
		return 0;
	if ((rc = seccomp_rule_add_exact_array(ctx, action, nr, 1, &cmp)) < 0) {
		log_warnx("sandbox: seccomp rule for %d: %s", nr,
		    strerror(-rc));
		return -1;
	}
	(*n)++;
	return 0;
}

/* Syscalls allowed whatever their arguments, each with its reason. */
static const int sandbox_syscalls[] = {
	/* threads: futex for every lock, robust list and rseq for glibc's
	 * thread start, set_tid_address is not needed after start */
	SCMP_SYS(futex),
	SCMP_SYS(set_robust_list),
	SCMP_SYS(rseq),
	SCMP_SYS(sched_yield),
	SCMP_SYS(sched_getaffinity),	/* glibc/nanomsg count CPUs */
	SCMP_SYS(exit),			/* a thread ends */
	SCMP_SYS(exit_group),
	SCMP_SYS(restart_syscall),	/* the kernel restarts a sleep */

	/* memory: malloc and thread stacks; PROT_EXEC is checked below */
	SCMP_SYS(brk),
	SCMP_SYS(munmap),
	SCMP_SYS(mremap),		/* realloc of big blocks */
	SCMP_SYS(madvise),		/* free() trimming, MADV_DONTDUMP */
	SCMP_SYS(mlock),		/* secrets stay out of swap */
	SCMP_SYS(munlock),

	/* signals: handlers, masks, abort() */
	SCMP_SYS(rt_sigaction),
	SCMP_SYS(rt_sigprocmask),
	SCMP_SYS(rt_sigreturn),
	SCMP_SYS(sigaltstack),		/* sanitizers and new threads */
	SCMP_SYS(rt_sigtimedwait),	/* the daemon's sigwait() loop */

	/* time and randomness */
	SCMP_SYS(clock_gettime),	/* when the vDSO falls back */
	SCMP_SYS(clock_getres),
	SCMP_SYS(gettimeofday),
	SCMP_SYS(time),
	SCMP_SYS(nanosleep),
	SCMP_SYS(clock_nanosleep),
	SCMP_SYS(getrandom),		/* OpenSSL's DRBG seeds */

	/* identity, read only */
	SCMP_SYS(getpid),
	SCMP_SYS(gettid),
	SCMP_SYS(getuid),
	SCMP_SYS(geteuid),
	SCMP_SYS(getgid),
	SCMP_SYS(getegid),
	SCMP_SYS(getrlimit),		/* read only by nature */
	SCMP_SYS(sysinfo),		/* sysconf(_SC_PHYS_PAGES), qsort */
	SCMP_SYS(uname),

	/* files: SoftHSM2's token directory, the audit log, state; where
	 * they may be is Landlock's business, not seccomp's */
	SCMP_SYS(open),
	SCMP_SYS(openat),
	SCMP_SYS(close),
	SCMP_SYS(read),
	SCMP_SYS(pread64),
	SCMP_SYS(readv),
	SCMP_SYS(write),
	SCMP_SYS(pwrite64),
	SCMP_SYS(writev),
	SCMP_SYS(lseek),
	SCMP_SYS(fstat),
	SCMP_SYS(newfstatat),		/* glibc's fstat and stat */
	SCMP_SYS(statx),
	SCMP_SYS(stat),
	SCMP_SYS(lstat),
	SCMP_SYS(fcntl),		/* SoftHSM2's F_SETLKW record locks */
	SCMP_SYS(flock),
	SCMP_SYS(getdents64),		/* SoftHSM2 lists token objects */
	SCMP_SYS(unlink),
	SCMP_SYS(unlinkat),
	SCMP_SYS(rename),
	SCMP_SYS(renameat),
	SCMP_SYS(renameat2),
	SCMP_SYS(mkdir),
	SCMP_SYS(mkdirat),
	SCMP_SYS(fsync),		/* the audit log is durable */
	SCMP_SYS(fdatasync),
	SCMP_SYS(ftruncate),
	SCMP_SYS(fchmod),
	SCMP_SYS(umask),
	SCMP_SYS(access),
	SCMP_SYS(faccessat),
	SCMP_SYS(faccessat2),
	SCMP_SYS(dup),
	SCMP_SYS(dup2),
	SCMP_SYS(dup3),
	SCMP_SYS(pipe2),

	/* nanomsg over AF_UNIX: its worker loop and the bound socket; only
	 * AF_UNIX sockets can be made (below), so connect/bind/listen can
	 * only reach unix sockets: nanomsg re-binds a failed listener,
	 * syslog(3) reconnects to /dev/log */
	SCMP_SYS(epoll_create1),
	SCMP_SYS(epoll_ctl),
	SCMP_SYS(epoll_wait),
	SCMP_SYS(epoll_pwait),
	SCMP_SYS(eventfd2),
	SCMP_SYS(poll),
	SCMP_SYS(ppoll),
	SCMP_SYS(accept),
	SCMP_SYS(accept4),
	SCMP_SYS(connect),
	SCMP_SYS(bind),
	SCMP_SYS(listen),
	SCMP_SYS(getsockname),
	SCMP_SYS(getpeername),
	SCMP_SYS(recvfrom),
	SCMP_SYS(recvmsg),
	SCMP_SYS(sendto),
	SCMP_SYS(sendmsg),
	SCMP_SYS(getsockopt),
	SCMP_SYS(setsockopt),
	SCMP_SYS(shutdown),
};

static int
sandbox_seccomp(size_t *nrules)
{
	scmp_filter_ctx	ctx;
	size_t		i, n = 0;
	int		rc, ret = -1;
	const uint64_t	pid = (uint64_t)getpid();

	*nrules = 0;
	if ((ctx = seccomp_init(SANDBOX_SECCOMP_DEFAULT)) == NULL) {
		log_warnx("sandbox: seccomp_init failed");
		return -1;
	}
	/* A foreign ABI (i386, x32) on x86_64 is never legitimate here;
	 * TSYNC puts the filter on every thread, nanomsg's included. */
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH,
	    SANDBOX_SECCOMP_DEFAULT)) < 0 ||
	    (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) < 0 ||
	    (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1)) < 0) {
		log_warnx("sandbox: seccomp_attr_set: %s", strerror(-rc));
		goto out;
	}

	for (i = 0; i < sizeof(sandbox_syscalls) / sizeof(sandbox_syscalls[0]);
	    i++)
		if (sandbox_allow(ctx, SCMP_ACT_ALLOW, sandbox_syscalls[i],
		    &n) == -1)
			goto out;

	/* No executable memory: no JIT, no dlopen after this point. */
	if (sandbox_rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), &n,
	    SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) == -1 ||
	    sandbox_rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), &n,
	    SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) == -1)
		goto out;

	/* Threads only: clone must carry CLONE_THREAD, so no fork.
	 * clone3 passes its flags in memory seccomp cannot read: ENOSYS
	 * makes glibc's pthread_create fall back to clone. */
	if (sandbox_rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), &n,
	    SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)) == -1 ||
	    sandbox_allow(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), &n)
	    == -1)
		goto out;

	/* Unix sockets only.  Anything else fails with EACCES rather than
	 * killing: a library probing for a network must not take the
	 * signer down, and it still gets no socket. */
	if (sandbox_rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), &n,
	    SCMP_A0(SCMP_CMP_EQ, AF_UNIX)) == -1 ||
	    sandbox_rule(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), &n,
	    SCMP_A0(SCMP_CMP_NE, AF_UNIX)) == -1 ||
	    sandbox_rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socketpair), &n,
	    SCMP_A0(SCMP_CMP_EQ, AF_UNIX)) == -1)
		goto out;

	/* abort() and pthread_kill signal this process only. */
	if (sandbox_rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), &n,
	    SCMP_A0(SCMP_CMP_EQ, pid)) == -1)
		goto out;

	/* Limits may be read, never raised: prlimit64(0, r, NULL, old). */
	if ((rc = seccomp_rule_add_exact(ctx, SCMP_ACT_ALLOW,
	    SCMP_SYS(prlimit64), 2, SCMP_A0(SCMP_CMP_EQ, 0),
	    SCMP_A2(SCMP_CMP_EQ, 0))) < 0) {
		log_warnx("sandbox: seccomp rule for prlimit64: %s",
		    strerror(-rc));
		goto out;
	}
	n++;

	/* Thread names only (pthread_setname_np on itself). */
	if (sandbox_rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), &n,
	    SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME)) == -1 ||
	    sandbox_rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), &n,
	    SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME)) == -1)
		goto out;

	/* ioctl: the kernel reads the request as 32 bits, so does the
	 * filter.  FIONREAD/FIONBIO for sockets; stdio's isatty() asks
	 * TCGETS and is told "not a terminal". */
	if (sandbox_rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), &n,
	    SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffU, FIONREAD)) == -1 ||
	    sandbox_rule(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), &n,
	    SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffU, FIONBIO)) == -1 ||
	    sandbox_rule(ctx, SCMP_ACT_ERRNO(ENOTTY), SCMP_SYS(ioctl), &n,
	    SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffU, TCGETS)) == -1)
		goto out;

	if ((rc = seccomp_load(ctx)) < 0) {
		log_warnx("sandbox: seccomp_load: %s", strerror(-rc));
		goto out;
	}
	*nrules = n;
	ret = 0;
out:
	seccomp_release(ctx);
	return ret;
}

int
sandbox_enter(const struct sandbox_config *config)
{
	struct rlimit	nocore = { 0, 0 };
	uid_t		uid;
	gid_t		gid;
	size_t		nrw, nro, nrules;
	int		abi;

	if (sandbox_drop_user(config->user, &uid, &gid) == -1)
		return -1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1) {
		log_warn("sandbox: PR_SET_NO_NEW_PRIVS");
		return -1;
	}
	/* The PIN and the session live in this address space. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1) {
		log_warn("sandbox: PR_SET_DUMPABLE");
		return -1;
	}
	if (setrlimit(RLIMIT_CORE, &nocore) == -1) {
		log_warn("sandbox: RLIMIT_CORE");
		return -1;
	}
	if (sandbox_clear_capabilities(config->user != NULL) == -1)
		return -1;
	if ((abi = sandbox_landlock(config, &nrw, &nro)) == -1)
		return -1;
	if (sandbox_seccomp(&nrules) == -1)
		return -1;

	if (abi > 0)
		log_info("sandbox: uid %u gid %u, no_new_privs, not dumpable, "
		    "no core, no capabilities; landlock ABI %d: %zu "
		    "read-write and %zu read-only trees; seccomp: %zu rules, "
		    "otherwise %s", (unsigned)uid, (unsigned)gid, abi, nrw,
		    nro, nrules, SANDBOX_SECCOMP_MODE);
	else
		log_info("sandbox: uid %u gid %u, no_new_privs, not dumpable, "
		    "no core, no capabilities; no landlock; seccomp: %zu "
		    "rules, otherwise %s", (unsigned)uid, (unsigned)gid,
		    nrules, SANDBOX_SECCOMP_MODE);
	return 0;
}
