#!/bin/sh
# make bench-e2e: certificates per second through hsmca-policyd over
# HTTPS, as a service gets them: a bootstrap token, a fresh P-256 CSR, the
# policy, an inventory row before and after (SQLite, synchronous=FULL), a
# real hsmca-signerd on a SoftHSM2 token behind it (audit record
# fdatasync'ed before the answer), keep-alive TLS 1.3 connections.
# Against the ceiling of the crypto every certificate needs on these
# cores (one token signature, its check, the CSR's signature check),
# measured in the same run.  The inventory must hold no pending row and
# the audit log must verify afterwards, or the bench fails.
#
# HSMCA_BENCH_CONCURRENCY (4) connections, HSMCA_BENCH_SECONDS (5) counted
# after one second of warm-up, HSMCA_BENCH_THREADS (2) crypto threads.
set -u
: "${top_srcdir:?}" "${top_builddir:?}"
HSMCA=$top_builddir/hsmca
export HSMCA
seconds=${HSMCA_BENCH_SECONDS:-5}
conc=${HSMCA_BENCH_CONCURRENCY:-4}
threads=${HSMCA_BENCH_THREADS:-2}
tap_tmp=$(mktemp -d "${TMPDIR:-/tmp}/hsmca-e2e-bench-XXXXXX")
bench=$top_builddir/bench/e2e-bench
# policyd-lib.sh skips (exit 0) without these; a bench must not pass so.
for t in curl openssl python3 sqlite3; do
	command -v $t > /dev/null ||
		{ echo "e2e-bench: $t is not installed" >&2; rm -rf "$tap_tmp"; exit 1; }
done
. "$top_srcdir/tests/signer-lib.sh"
. "$top_srcdir/tests/policyd-lib.sh"
# The bench's own output, not the test harness's.
ok() { :; }
not_ok() { echo "e2e-bench: $*" >&2; }
fail() {
	echo "e2e-bench: $*" >&2
	for l in signerd policyd; do
		[ -s "$tap_tmp/$l.log" ] && tail -n 20 "$tap_tmp/$l.log" | sed "s/^/# $l: /" >&2
	done
	exit 1
}

signer_setup "workers = 32"
# The production default, not the tests' 10.
sed "s/^checkpoint_every = 10$/checkpoint_every = 1000/" "$conf" > "$conf.new" &&
	mv "$conf.new" "$conf"
"$bench" crypto "$ca/intermediate.pem" "$threads" 1 > "$tap_tmp/crypto" ||
	fail "crypto measurement failed"
cat "$tap_tmp/crypto"

signer_start || fail "the signer does not start"
policyd_setup
# The production defaults for the signer wait and the idle timeout, not
# the tests' shorter ones; durability is as configured (nothing relaxed).
sed -e '/^signer_timeout = /d' -e '/^client_timeout = /d' "$pconf" \
	> "$pconf.new" && cat "$pconf.new" > "$pconf" && rm -f "$pconf.new"
policyd_start || fail "the policy daemon does not start"
# One token for the whole run; uses to spare for any rate.
tokfile=$tap_tmp/bench.token
(umask 077; token web 1000000 > "$tokfile") || fail "no bootstrap token"
[ -s "$tokfile" ] || fail "no bootstrap token"
# The token file is the load client's (root's or ours): mode 0600.
"$bench" load 127.0.0.1 "$port" ca.example.com "$ca/root.pem" "$tokfile" \
	"$conc" "$seconds" > "$tap_tmp/load"
rc=$?
cat "$tap_tmp/load"
policyd_stop
prc=$?
signer_stop
src=$?
[ $rc -eq 0 ] || fail "the load run is not valid"
[ $prc -eq 0 ] || fail "hsmca-policyd exited with status $prc"
[ $src -eq 0 ] || fail "hsmca-signerd exited with status $src"

pending=$(as_policy sqlite3 "$ps/inventory.db" \
	"select count(*) from certificates where status = 'pending'") ||
	fail "cannot read the inventory"
[ "$pending" = 0 ] || fail "$pending inventory rows are left pending"
audit_verify > /dev/null || fail "the audit log does not verify"
rows=$(as_policy sqlite3 "$ps/inventory.db" \
	"select count(*) from certificates where status in ('issued', 'revoked')")
signed=$(grep -c '"type":"issue"' "$st/audit/audit.log")
awk -v t="$threads" '
	$2 == "e2e_certs_per_s" { e = $3 }
	$2 == "e2e_crypto_limit_p256_" t "t" { c = $3 }
	$2 == "raw_sign_p256_" t "t" { r = $3 }
	END {
		printf "BENCH e2e_vs_crypto_limit %.3f x\n", e / c
		printf "BENCH e2e_vs_raw_sign %.3f x\n", e / r
	}' "$tap_tmp/crypto" "$tap_tmp/load"
echo "BENCH e2e_inventory_rows $rows certs"
echo "BENCH e2e_signatures_audited $signed certs"
# Every signature the signer made is in the inventory (its own TLS
# certificate included): nothing signed behind the inventory's back.
[ "$rows" -eq "$signed" ] ||
	fail "the inventory has $rows rows, the audit log $signed signatures"
