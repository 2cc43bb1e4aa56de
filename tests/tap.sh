# Sourced by the shell tests: TAP output and a throwaway directory.
# Every test script ends with tap_done, which prints the plan.
tap_n=0
tap_failed=0
tap_tmp=$(mktemp -d "${TMPDIR:-/tmp}/hsmca-test-XXXXXX")
trap 'rm -rf "$tap_tmp"' EXIT

ok() {
	tap_n=$((tap_n + 1))
	echo "ok $tap_n - $*"
}

not_ok() {
	tap_n=$((tap_n + 1))
	tap_failed=$((tap_failed + 1))
	echo "not ok $tap_n - $*"
}

skip() {
	tap_n=$((tap_n + 1))
	echo "ok $tap_n # SKIP $*"
}

# Every command's output is also kept in $tap_tmp/all.log, so a test can
# look for what must never be printed.
run_logged() {
	"$@" >"$tap_tmp/out" 2>&1
	rc=$?
	cat "$tap_tmp/out" >> "$tap_tmp/all.log"
	return $rc
}

# check DESCRIPTION COMMAND...: one test point from a command's status.
check() {
	desc=$1
	shift
	if run_logged "$@"; then
		ok "$desc"
	else
		not_ok "$desc"
		sed 's/^/# /' "$tap_tmp/out"
	fi
}

# check_fails DESCRIPTION PATTERN COMMAND...: the command must fail and
# say PATTERN (an extended regex) on stdout or stderr.
check_fails() {
	desc=$1
	pattern=$2
	shift 2
	if run_logged "$@"; then
		not_ok "$desc (succeeded)"
		sed 's/^/# /' "$tap_tmp/out"
	elif grep -Eq -- "$pattern" "$tap_tmp/out"; then
		ok "$desc"
	else
		not_ok "$desc (no \"$pattern\")"
		sed 's/^/# /' "$tap_tmp/out"
	fi
}

tap_done() {
	echo "1..$tap_n"
	[ "$tap_failed" -eq 0 ]
}
