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
# Then, against the same daemons, the two exchanges every certificate
# needs besides its crypto: GET /healthz over the same connections (TLS,
# HTTP, JSON; the policy daemon answers from its own state) and health
# requests to the signer (its IPC alone; see signer-bench.sh).  And the
# durable writes: every certificate needs four (the pending row, the
# audit intent, the audit outcome, the completed row), each after the
# one before, so one sync covers at most one write of each request in
# flight.  The two audit records cost at least 2 / CONCURRENCY of the
# cheapest durable write on this file system each (e2e-bench sync); the
# two rows at least what SQLite takes for the least inventory DESIGN.md
# allows, committed in groups of CONCURRENCY (e2e-bench store).  With
# the CPU time each of these takes, clients and daemons, and that of the
# crypto, no daemons behind this HTTPS and this IPC can issue faster than
#     cores / (crypto_cpu + https_ping_cpu + health_cpu
#              + 2 / CONCURRENCY * sync_cpu + store_floor_cpu)
# however little the rest costs (policy, CSR handling beyond its
# signature, building, linting, audit records, JSON); that rate over the
# crypto limit is e2e_vs_crypto_limit_ceiling.  e2e_left_at_target_us
# is the CPU time per certificate that the rest could take at the target
# (0.8 of the crypto limit), negative when the ceiling is below it; for
# comparison, json_cpu_us is the JSON of one issuance through jansson
# alone (the request parsed, the answer written).
#
# HSMCA_BENCH_CONCURRENCY (4) connections, HSMCA_BENCH_SECONDS (5) counted
# after one second of warm-up, HSMCA_BENCH_THREADS (2) crypto threads,
# HSMCA_BENCH_INFLIGHT (64) signer health requests in flight.
set -u
: "${top_srcdir:?}" "${top_builddir:?}"
HSMCA=$top_builddir/hsmca
export HSMCA
seconds=${HSMCA_BENCH_SECONDS:-5}
conc=${HSMCA_BENCH_CONCURRENCY:-4}
threads=${HSMCA_BENCH_THREADS:-2}
inflight=${HSMCA_BENCH_INFLIGHT:-64}
tap_tmp=$(mktemp -d "${TMPDIR:-/tmp}/hsmca-e2e-bench-XXXXXX")
bench=$top_builddir/bench/e2e-bench
sbench=$top_builddir/bench/signer-bench
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
"$bench" sync "$tap_tmp" 2000 >> "$tap_tmp/crypto" ||
	fail "the sync measurement failed"
"$bench" store "$tap_tmp" 4000 "$conc" >> "$tap_tmp/crypto" ||
	fail "the store measurement failed"
"$bench" json "$ca/intermediate.pem" 20000 >> "$tap_tmp/crypto" ||
	fail "the JSON measurement failed"
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
HSMCA_BENCH_SERVER_PID=$pd_real "$bench" load 127.0.0.1 "$port" \
	ca.example.com "$ca/root.pem" "$tokfile" "$conc" "$seconds" \
	> "$tap_tmp/load"
rc=$?
cat "$tap_tmp/load"
if [ $rc -eq 0 ]; then
	HSMCA_BENCH_SERVER_PID=$pd_real "$bench" ping 127.0.0.1 "$port" \
		ca.example.com "$ca/root.pem" "$conc" "$seconds" > "$tap_tmp/ping"
	rc=$?
	cat "$tap_tmp/ping"
fi
if [ $rc -eq 0 ]; then
	# The signer's socket is for the policy daemon's user: as_policy runs
	# the client so, from a copy next to the daemon's (policyd_setup).
	if [ -n "$client_user" ]; then
		cp "$sbench" "$tap_tmp/pbin/signer-bench"
		chmod 0755 "$tap_tmp/pbin/signer-bench"
		sbench=$tap_tmp/pbin/signer-bench
	fi
	as_policy env HSMCA_BENCH_SERVER_PID="$signer_pid" "$sbench" health \
		"$sock_url" "$mac" "$inflight" "$seconds" > "$tap_tmp/health"
	rc=$?
	cat "$tap_tmp/health"
fi
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
cores=$(getconf _NPROCESSORS_ONLN)
awk -v t="$threads" -v cores="$cores" -v conc="$conc" '
	$2 == "e2e_certs_per_s" { e = $3 }
	$2 == "e2e_crypto_limit_p256_" t "t" { c = $3 }
	$2 == "raw_sign_p256_" t "t" { r = $3 }
	$2 == "e2e_crypto_cpu_us" { cc = $3 }
	$2 == "sync_cpu_us" { sc = $3; have_sc = 1 }
	$2 == "store_floor_cpu_us" { st = $3; have_st = 1 }
	$2 ~ /^(https_ping|health)_(client|server)_cpu_us$/ { x += $3; nx++ }
	END {
		printf "BENCH e2e_vs_crypto_limit %.3f x\n", e / c
		printf "BENCH e2e_vs_raw_sign %.3f x\n", e / r
		if (nx == 4 && have_sc && have_st && cc + x > 0) {
			f = cc + x + 2 / conc * sc + st
			printf "BENCH e2e_vs_crypto_limit_ceiling %.3f x\n",
			    cores * 1e6 / f / c
			printf "BENCH e2e_left_at_target_us %.1f us/cert\n",
			    cores * 1e6 / (0.8 * c) - f
		}
	}' "$tap_tmp/crypto" "$tap_tmp/load" "$tap_tmp/ping" "$tap_tmp/health"
echo "BENCH e2e_inventory_rows $rows certs"
echo "BENCH e2e_signatures_audited $signed certs"
# Every signature the signer made is in the inventory (its own TLS
# certificate included): nothing signed behind the inventory's back.
[ "$rows" -eq "$signed" ] ||
	fail "the inventory has $rows rows, the audit log $signed signatures"
