#!/bin/sh
# make bench, second part: certificates per second through a real
# hsmca-signerd over IPC (audit durability on: every record fdatasync'ed
# before the answer, group commit) against the ceiling its mandatory
# crypto allows on this machine (one token signature and one verification
# per certificate), measured in the same run.
#
# Then, against the same signer, health requests: the IPC exchange alone
# (envelope and MAC both ways, decode, dispatch, nanomsg both ways; no key,
# no audit).  The load client reports its own CPU time per answer and the
# signer's (HSMCA_BENCH_SERVER_PID), the crypto measurement its own per
# certificate.  Each certificate needs its crypto and one such exchange
# at least, so no signer behind this IPC can issue faster than
#     cores / (crypto_cpu + health_client_cpu + health_server_cpu)
# however little its building, linting and auditing cost; that rate over
# the crypto limit is signer_vs_crypto_limit_ceiling.
set -u
: "${top_srcdir:?}" "${top_builddir:?}"
HSMCA=$top_builddir/hsmca
export HSMCA
seconds=${HSMCA_BENCH_SECONDS:-5}
inflight=${HSMCA_BENCH_INFLIGHT:-64}
threads=${HSMCA_BENCH_THREADS:-2}
tap_tmp=$(mktemp -d "${TMPDIR:-/tmp}/hsmca-bench-XXXXXX")
bench=$top_builddir/bench/signer-bench
. "$top_srcdir/tests/signer-lib.sh"
# The bench's own output, not the test harness's.
ok() { :; }
not_ok() { echo "signer-bench: $*" >&2; }

signer_setup "workers = 32"
# The production default, not the tests' 10.
sed "s/^checkpoint_every = 10$/checkpoint_every = 1000/" "$conf" > "$conf.new" && mv "$conf.new" "$conf"
"$bench" crypto "$ca/intermediate.pem" "$threads" 1 > "$tap_tmp/crypto" ||
	{ echo "signer-bench: crypto measurement failed" >&2; exit 1; }
cat "$tap_tmp/crypto"
signer_start || { cat "$tap_tmp/signerd.log" >&2; exit 1; }
# The client runs as the policy daemon's user when there is one (the
# socket is for that user), from a copy that user can reach.
client=$bench
if [ -n "$client_user" ]; then
	cp "$bench" "$tap_tmp/bench-client"
	chmod 0755 "$tap_tmp/bench-client"
	client=$tap_tmp/bench-client
fi
as_client() {
	if [ -n "$client_user" ]; then
		runuser -u "$client_user" -- env HSMCA_BENCH_SERVER_PID="$signer_pid" \
			"$client" "$@"
	else
		HSMCA_BENCH_SERVER_PID=$signer_pid "$client" "$@"
	fi
}
as_client load "$sock_url" "$mac" issuing "$inflight" "$seconds" \
	> "$tap_tmp/load" &&
	as_client health "$sock_url" "$mac" "$inflight" "$seconds" \
	>> "$tap_tmp/load"
rc=$?
signer_stop
[ $rc -eq 0 ] || exit 1
cat "$tap_tmp/load"
audit_verify > /dev/null || { echo "signer-bench: the audit log does not verify" >&2; exit 1; }
cores=$(getconf _NPROCESSORS_ONLN)
awk -v t="$threads" -v cores="$cores" '
	$2 == "signer_certs_per_s" { s = $3 }
	$2 == "crypto_cpu_us" { cc = $3 }
	$2 == "health_client_cpu_us" { hc = $3 }
	$2 == "health_server_cpu_us" { hs = $3; have_hs = 1 }
	$2 == "crypto_limit_p256_" t "t" { c = $3 }
	$2 == "raw_sign_p256_" t "t" { r = $3 }
	END {
		printf "BENCH signer_vs_crypto_limit %.3f x\n", s / c
		printf "BENCH signer_vs_raw_sign %.3f x\n", s / r
		if (have_hs && cc + hc + hs > 0)
			printf "BENCH signer_vs_crypto_limit_ceiling %.3f x\n",
			    cores * 1e6 / (cc + hc + hs) / c
	}' "$tap_tmp/crypto" "$tap_tmp/load"
n=$(grep -c '"type":"issue"' "$st/audit/audit.log")
s=$(grep -c '"type":"checkpoint"' "$st/audit/audit.log")
echo "BENCH signer_audit_records $(wc -l < "$st/audit/audit.log") records"
echo "BENCH signer_signatures_audited $n certs"
