#!/bin/sh
# The signer's sandbox (signer/sandbox.h) seen from outside: a probe drops
# to a throwaway system user, shows the kernel's view of itself and of a
# thread that was already running, does the signer's everyday work, and
# each forbidden thing ends the way this script says it must.
. "$top_srcdir/tests/tap.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root: the sandbox drops from root to a throwaway user"
	exit 0
fi
for tool in useradd userdel setpriv; do
	command -v $tool >/dev/null 2>&1 ||
		{ echo "1..0 # SKIP $tool not installed (passwd, util-linux)"; exit 0; }
done

probe=$top_builddir/tests/sandbox-probe
user=hsmca-sbx-$$
cleanup() {
	userdel "$user" 2>/dev/null
	groupdel "$user" 2>/dev/null
	rm -rf "$tap_tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# Another test may hold the passwd lock for a moment.
tries=0
until useradd -r -M -U -s /usr/sbin/nologin "$user" 2>"$tap_tmp/useradd.err"; do
	tries=$((tries + 1))
	[ $tries -lt 10 ] || { echo "Bail out! useradd: $(cat "$tap_tmp/useradd.err")"; exit 99; }
	sleep 1
done
uid=$(id -u "$user")
gid=$(id -g "$user")

# The user must reach its directories through $tap_tmp (0700 from mktemp).
chmod 711 "$tap_tmp"
rw=$tap_tmp/rw ro=$tap_tmp/ro outside=$tap_tmp/outside
mkdir "$rw" "$ro" "$outside"
echo hello > "$ro/readable"
chmod 755 "$ro"
chmod 644 "$ro/readable"
echo hello > "$outside/readable"
chown "$user:$user" "$rw" "$outside" "$outside/readable"
chmod 700 "$rw" "$outside"

# LeakSanitizer stops the world with clone (no CLONE_THREAD) and ptrace at
# exit: both are forbidden, so in a sanitizer build the probe would be
# killed after its work is done.  Leaks are not what this test is about.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export ASAN_OPTIONS

# run ACTION [USER]: the probe's output in $tap_tmp/ACTION.out, its exit
# status (159 = 128 + SIGSYS: killed by seccomp) in $rc.
run() {
	"$probe" "${2:-$user}" "$rw" "$ro" "$1" "$outside" \
		>"$tap_tmp/$1.out" 2>"$tap_tmp/$1.err"
	rc=$?
	cat "$tap_tmp/$1.out" "$tap_tmp/$1.err" >> "$tap_tmp/all.log"
}
show() {
	sed 's/^/# /' "$tap_tmp/$1.out" "$tap_tmp/$1.err"
}
# point DESCRIPTION ACTION TEST...: one test point from a test on the
# output of ACTION's run.
point() {
	desc=$1 act=$2
	shift 2
	if "$@"; then ok "$desc"; else not_ok "$desc"; show "$act"; fi
}
# has ACTION LINE: the probe printed exactly LINE.
has() { grep -qxF -- "$2" "$tap_tmp/$1.out"; }
# ids ACTION WHO KEY VALUE: the status line has VALUE in every field.
ids() {
	grep "^$2 $3:" "$tap_tmp/$1.out" |
		awk -F'\t' -v v="$4" '{ for (i = 2; i <= NF; i++) if ($i != "" && $i != v) exit 1; n++ } END { exit n != 1 }'
}
# zero ACTION WHO KEY: a capability set is empty.
zero() { has "$1" "$2 $3:	0000000000000000"; }

run none
debug=no
has none "seccomp: debug" && debug=yes
landlock=yes
has none "landlock: none" && landlock=no

point "none: sandbox entered, the signer's everyday work done, exit 0" none \
	test "$rc" -eq 0 -a -n "$(grep -x 'none: ok' "$tap_tmp/none.out")"
point "none: uid is $user's in all four fields" none ids none main Uid "$uid"
point "none: gid is $user's in all four fields" none ids none main Gid "$gid"
point "none: the only group is $user's" none has none "main Groups:	$gid "
point "none: NoNewPrivs 1" none has none "main NoNewPrivs:	1"
point "none: Seccomp 2 (filter)" none has none "main Seccomp:	2"
for set in CapInh CapPrm CapEff CapBnd CapAmb; do
	point "none: $set is empty" none zero none main $set
done
# A thread running before the sandbox: credentials (glibc's setxid
# broadcast) and the filter (TSYNC, which sets no_new_privs) reach it;
# its bounding set is its own and is not checked (it matters at execve
# only, which the filter forbids).
point "thread started before: uid dropped too" none ids none before-thread Uid "$uid"
point "thread started before: NoNewPrivs 1 and Seccomp 2 (TSYNC)" none sh -c \
	"grep -qx 'before-thread NoNewPrivs:	1' '$tap_tmp/none.out' &&
	 grep -qx 'before-thread Seccomp:	2' '$tap_tmp/none.out'"
point "thread started before: CapPrm, CapEff, CapAmb empty" none sh -c \
	"grep -c 'before-thread Cap\\(Prm\\|Eff\\|Amb\\):	0000000000000000\$' '$tap_tmp/none.out' | grep -qx 3"
point "threads: the old one works under the filter, a new one starts" none sh -c \
	"grep -qx 'before-thread: alive after sandbox' '$tap_tmp/none.out' &&
	 grep -qx 'after-thread: ok' '$tap_tmp/none.out'"
point "the sandbox logs a summary with the Landlock ABI and seccomp mode" none \
	grep -q 'sandbox: uid .* seccomp: [0-9]* rules, otherwise' "$tap_tmp/none.err"

# STYLE.md: rerun under other allocator settings.  MALLOC_PERTURB_ fills
# freed memory; a low mmap threshold sends every block through mmap/munmap.
MALLOC_PERTURB_=165 GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4096:glibc.malloc.arena_max=1 \
	run none
point "none again with MALLOC_PERTURB_ and mmap_threshold=4096" none has none "none: ok"

# Always refused with EACCES, also in a --enable-seccomp-debug build: the
# filter answers socket() for any family but AF_UNIX with an errno.
for act in socket-inet socket-inet6 socket-netlink; do
	run $act
	point "$act: fails with EACCES (seccomp errno, no network socket)" $act \
		has $act "$act: failed EACCES ($act)"
done

# Forbidden syscalls: the process is killed by SIGSYS.  In a seccomp
# debug build they are only logged; then the privilege drop alone must
# still refuse setuid(0) and mount with EPERM, and Landlock execve with
# EACCES (kexec may be ENOSYS: kernels without CONFIG_KEXEC).
for act in execve ptrace setuid0 process-vm-readv kexec mount bpf fork mmap-exec; do
	run $act
	if [ $debug = no ]; then
		point "$act: killed by SIGSYS (exit 159)" $act test "$rc" -eq 159
		continue
	fi
	case $act in
	setuid0|mount)
		point "$act: fails with EPERM (seccomp debug build: no capability)" $act \
			has $act "$act: failed EPERM ($act)";;
	execve)
		if [ $landlock = yes ]; then
			point "execve: fails with EACCES (seccomp debug build: Landlock denies execute)" $act \
				has $act "$act: failed EACCES ($act)"
		else
			skip "execve: seccomp debug build only logs it and this kernel has no Landlock"
		fi;;
	*)
		skip "$act: seccomp debug build only logs forbidden syscalls";;
	esac
done

# Landlock: the user may write and read $outside by its own permissions
# (the control), the sandboxed probe may not.
check "control: $user can write and read outside the sandbox" \
	setpriv --reuid="$uid" --regid="$gid" --clear-groups \
	sh -c "echo x > '$outside/control' && cat '$outside/readable'"
for act in write-outside read-outside; do
	if [ $landlock = no ]; then
		skip "$act: this kernel has no Landlock (logged by the sandbox)"
		continue
	fi
	run $act
	point "$act: Landlock refuses with EACCES" $act \
		has $act "$act: failed EACCES ($act)"
done

# Refusals: root stays root only by mistake.
run none -
point "no user given while root: sandbox_enter refuses" none sh -c \
	"test $rc -eq 3 && grep -q 'running as root' '$tap_tmp/none.err'"
run none root
point "user root: sandbox_enter refuses" none sh -c \
	"test $rc -eq 3 && grep -q 'refusing to run as root' '$tap_tmp/none.err'"

# Started unprivileged (no user to drop to): the rest of the sandbox holds.
# The user may not reach the build tree (a clone under a 0700
# directory): it runs a copy.
mkdir "$tap_tmp/bin"
cp "$probe" "$tap_tmp/bin/sandbox-probe"
chmod 0755 "$tap_tmp/bin" "$tap_tmp/bin/sandbox-probe"
probe=$tap_tmp/bin/sandbox-probe
if setpriv --reuid="$uid" --regid="$gid" --clear-groups test -x "$probe"; then
	setpriv --reuid="$uid" --regid="$gid" --clear-groups \
		"$probe" - "$rw" "$ro" none "$outside" \
		>"$tap_tmp/none.out" 2>"$tap_tmp/none.err"
	rc=$?
	point "started as $user: none works, NoNewPrivs 1, Seccomp 2, no capability" none sh -c \
		"test $rc -eq 0 && grep -qx 'none: ok' '$tap_tmp/none.out' &&
		 grep -qx 'main NoNewPrivs:	1' '$tap_tmp/none.out' &&
		 grep -qx 'main Seccomp:	2' '$tap_tmp/none.out' &&
		 grep -qx 'main CapEff:	0000000000000000' '$tap_tmp/none.out' &&
		 grep -qx 'main CapPrm:	0000000000000000' '$tap_tmp/none.out'"
else
	skip "started as $user: $user cannot reach $probe"
fi

tap_done
