/*
 * sandbox-probe USER RWDIR RODIR ACTION [OUTSIDE]: enters the signer's
 * sandbox (signer/sandbox.h) with a thread already running, prints the
 * kernel's view of both threads, then does ACTION.  tests/sandbox.sh
 * judges the outcome; USER "-" means "already unprivileged".
 *
 * Prints "ACTION: ok" (allowed work done, exit 0), "ACTION: succeeded"
 * (a forbidden thing worked, exit 0) or "ACTION: failed ERRNO" (exit 1).
 * A seccomp kill ends the probe by SIGSYS before it can print.
 */
#include "config.h"

#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/netlink.h>
#ifdef HAVE_LINUX_LANDLOCK_H
#include <linux/landlock.h>
#endif

#include "log.h"
#include "sandbox.h"

static int	sleeper_wake[2], sleeper_ready[2];

static void
fail(const char *action, const char *step)
{
	printf("%s: failed %s (%s)\n", action, strerrorname_np(errno), step);
	exit(1);
}

/* The outcome of one forbidden attempt. */
static int
outcome(const char *action, long rc)
{
	if (rc == -1)
		fail(action, action);
	printf("%s: succeeded\n", action);
	return 0;
}

/* Lines of a pre-opened /proc status file (Landlock hides /proc now). */
static void
print_status(const char *who, int fd)
{
	static const char *const keys[] = { "Uid:", "Gid:", "Groups:",
	    "NoNewPrivs:", "Seccomp:", "CapInh:", "CapPrm:", "CapEff:",
	    "CapBnd:", "CapAmb:" };
	char	 buf[8192], *line, *save = NULL;
	ssize_t	 n;
	size_t	 i;

	if ((n = pread(fd, buf, sizeof(buf) - 1, 0)) < 0) {
		printf("%s status: failed %s\n", who, strerrorname_np(errno));
		return;
	}
	buf[n] = '\0';
	for (line = strtok_r(buf, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save))
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strncmp(line, keys[i], strlen(keys[i])) == 0)
				printf("%s %s\n", who, line);
}

static void *
thread_noop(void *arg)
{
	return arg;
}

/* Runs across sandbox_enter, then works a little under the filter. */
static void *
thread_sleeper(void *arg)
{
	pid_t	 tid = gettid();
	char	 c, *p;

	(void)arg;
	if (write(sleeper_ready[1], &tid, sizeof(tid)) != sizeof(tid) ||
	    read(sleeper_wake[0], &c, 1) != 1)
		return NULL;
	if ((p = malloc(1 << 20)) != NULL)
		memset(p, 0x5a, 1 << 20);
	free(p);
	printf("before-thread: alive after sandbox\n");
	return NULL;
}

static void
start_thread(const char *action, void *(*fn)(void *))
{
	pthread_t	t;
	int		rc;

	if ((rc = pthread_create(&t, NULL, fn, NULL)) != 0) {
		errno = rc;
		fail(action, "pthread_create");
	}
	if ((rc = pthread_join(t, NULL)) != 0) {
		errno = rc;
		fail(action, "pthread_join");
	}
}

/* What the signer does all day: SoftHSM2-like file work, IPC, threads. */
static int
action_none(const char *rw, const char *ro)
{
	const char	*a = "none";
	char		 path[4096], path2[4096], buf[64], *big;
	struct flock	 lk = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	struct epoll_event ev = { .events = EPOLLIN }, out;
	struct timespec	 ts = { 0, 1000000 };
	struct rlimit	 rl;
	struct stat	 st;
	DIR		*d;
	int		 fd, sv[2], ep;

	snprintf(path, sizeof(path), "%s/probe.dat", rw);
	if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1)
		fail(a, "open rw");
	if (write(fd, "audit line\n", 11) != 11 || fdatasync(fd) == -1 ||
	    fsync(fd) == -1)
		fail(a, "write+fdatasync");
	if (flock(fd, LOCK_EX) == -1 || fcntl(fd, F_SETLKW, &lk) == -1)
		fail(a, "locks");
	if (pwrite(fd, "A", 1, 0) != 1 || pread(fd, buf, 11, 0) != 11 ||
	    memcmp(buf, "Audit line\n", 11) != 0)
		fail(a, "pread/pwrite");
	if (lseek(fd, 0, SEEK_END) != 11 || ftruncate(fd, 5) == -1 ||
	    fchmod(fd, 0600) == -1 || fstat(fd, &st) == -1 ||
	    st.st_size != 5)
		fail(a, "lseek/ftruncate/fchmod/fstat");
	close(fd);
	snprintf(path2, sizeof(path2), "%s/sub", rw);
	if (mkdir(path2, 0700) == -1 && errno != EEXIST)
		fail(a, "mkdir");
	snprintf(path2, sizeof(path2), "%s/sub/probe.dat", rw);
	if (rename(path, path2) == -1)
		fail(a, "rename");
	snprintf(path, sizeof(path), "%s/sub", rw);
	if ((d = opendir(path)) == NULL || readdir(d) == NULL)
		fail(a, "opendir/readdir");
	closedir(d);
	if (access(path2, R_OK | W_OK) == -1 || unlink(path2) == -1)
		fail(a, "access/unlink");

	snprintf(path, sizeof(path), "%s/readable", ro);
	memset(buf, 0, sizeof(buf));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 ||
	    read(fd, buf, sizeof(buf) - 1) < 5 ||
	    strncmp(buf, "hello", 5) != 0)
		fail(a, "read ro");
	close(fd);

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		fail(a, "socketpair");
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    epoll_ctl(ep, EPOLL_CTL_ADD, sv[1], &ev) == -1)
		fail(a, "epoll");
	if (send(sv[0], "ping", 4, 0) != 4 ||
	    epoll_wait(ep, &out, 1, 1000) != 1 ||
	    recv(sv[1], buf, sizeof(buf), 0) != 4)
		fail(a, "send/epoll_wait/recv");
	close(ep);
	close(sv[0]);
	close(sv[1]);

	start_thread(a, thread_noop);

	if ((big = malloc(64 << 20)) == NULL)
		fail(a, "malloc");
	memset(big, 0xa5, 64 << 20);
	if ((big = realloc(big, 128 << 20)) == NULL)
		fail(a, "realloc");
	free(big);

	if (getrandom(buf, 32, 0) != 32)
		fail(a, "getrandom");
	if (clock_gettime(CLOCK_REALTIME, &ts) == -1)
		fail(a, "clock_gettime");
	ts.tv_sec = 0;
	ts.tv_nsec = 1000000;
	if (nanosleep(&ts, NULL) == -1 || getrlimit(RLIMIT_NOFILE, &rl) == -1)
		fail(a, "nanosleep/getrlimit");
	printf("none: ok\n");
	return 0;
}

static int
action(const char *a, const char *rw, const char *ro, const char *outside)
{
	char		path[4096];
	char		local[8], remote[8] = "secret";
	struct iovec	liov = { local, sizeof(local) };
	struct iovec	riov = { remote, sizeof(remote) };
	pid_t		pid;

	if (strcmp(a, "none") == 0)
		return action_none(rw, ro);
	if (strcmp(a, "execve") == 0) {
		execl("/bin/sh", "sh", "-c", "echo escaped", (char *)NULL);
		return outcome(a, -1);
	}
	if (strcmp(a, "socket-inet") == 0)
		return outcome(a, socket(AF_INET, SOCK_STREAM, 0));
	if (strcmp(a, "socket-inet6") == 0)
		return outcome(a, socket(AF_INET6, SOCK_DGRAM, 0));
	if (strcmp(a, "socket-netlink") == 0)
		return outcome(a, socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE));
	if (strcmp(a, "ptrace") == 0)
		return outcome(a, ptrace(PTRACE_TRACEME, 0, NULL, NULL));
	if (strcmp(a, "setuid0") == 0)
		return outcome(a, setuid(0));
	if (strcmp(a, "process-vm-readv") == 0)
		return outcome(a, process_vm_readv(getpid(), &liov, 1, &riov,
		    1, 0));
	if (strcmp(a, "kexec") == 0)
		return outcome(a, syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0UL));
	if (strcmp(a, "mount") == 0)
		return outcome(a, mount("none", rw, "tmpfs", 0, ""));
	if (strcmp(a, "bpf") == 0)
		return outcome(a, syscall(SYS_bpf, 0, NULL, 0));
	if (strcmp(a, "fork") == 0) {
		if ((pid = fork()) == 0)
			_exit(0);
		return outcome(a, pid);
	}
	if (strcmp(a, "mmap-exec") == 0)
		return outcome(a, mmap(NULL, 4096, PROT_READ | PROT_EXEC,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED ? -1 : 0);
	if (strcmp(a, "write-outside") == 0) {
		snprintf(path, sizeof(path), "%s/written", outside);
		return outcome(a, open(path, O_WRONLY | O_CREAT | O_TRUNC |
		    O_CLOEXEC, 0600));
	}
	if (strcmp(a, "read-outside") == 0) {
		snprintf(path, sizeof(path), "%s/readable", outside);
		return outcome(a, open(path, O_RDONLY | O_CLOEXEC));
	}
	printf("%s: unknown action\n", a);
	return 2;
}

int
main(int argc, char *argv[])
{
	struct sandbox_config	 config;
	const char		*rw[2], *ro[2], *outside;
	char			 path[64];
	pthread_t		 sleeper;
	pid_t			 tid;
	int			 status_fd, thread_fd, abi = 0, ret;

	if (argc < 5 || argc > 6) {
		fprintf(stderr, "usage: sandbox-probe USER RWDIR RODIR ACTION "
		    "[OUTSIDE]\n");
		return 2;
	}
	/* Every line out before a possible kill. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	log_init("sandbox-probe", LOG_FOREGROUND, 1);
	outside = argc == 6 ? argv[5] : "/tmp";

#ifdef HSMCA_SECCOMP_DEBUG
	printf("seccomp: debug\n");
#else
	printf("seccomp: kill\n");
#endif
#ifdef HAVE_LINUX_LANDLOCK_H
	abi = (int)syscall(SYS_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);
#endif
	if (abi > 0)
		printf("landlock: abi %d\n", abi);
	else
		printf("landlock: none\n");

	/* Threads before: one that has ended, one still running. */
	start_thread("before", thread_noop);
	if (pipe2(sleeper_wake, O_CLOEXEC) == -1 ||
	    pipe2(sleeper_ready, O_CLOEXEC) == -1 ||
	    pthread_create(&sleeper, NULL, thread_sleeper, NULL) != 0 ||
	    read(sleeper_ready[0], &tid, sizeof(tid)) != sizeof(tid)) {
		perror("sleeper thread");
		return 2;
	}
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	if ((status_fd = open("/proc/thread-self/status", O_RDONLY)) == -1 ||
	    (thread_fd = open(path, O_RDONLY)) == -1) {
		perror("status");
		return 2;
	}

	rw[0] = argv[2];
	rw[1] = NULL;
	ro[0] = argv[3];
	ro[1] = NULL;
	config.user = strcmp(argv[1], "-") == 0 ? NULL : argv[1];
	config.rw_paths = rw;
	config.ro_paths = ro;
	if (sandbox_enter(&config) == -1) {
		printf("sandbox_enter: failed\n");
		return 3;
	}
	printf("sandbox_enter: ok\n");
	print_status("main", status_fd);
	print_status("before-thread", thread_fd);
	if (write(sleeper_wake[1], "x", 1) != 1 ||
	    pthread_join(sleeper, NULL) != 0) {
		printf("before-thread: failed\n");
		return 2;
	}
	/* A thread after: clone3 is refused, glibc falls back to clone. */
	start_thread("after", thread_noop);
	printf("after-thread: ok\n");

	printf("action: %s\n", argv[4]);
	ret = action(argv[4], argv[2], argv[3], outside);
	return ret;
}
