#!/bin/sh
# Crash safety: kill -9 the signer under load, restart it; every
# signature any client received is in the audit log, no serial was signed
# twice, and the log verifies.
. "$top_srcdir/tests/tap.sh"
. "$top_srcdir/tests/signer-lib.sh"

signer_setup
mkdir -p "$tap_tmp/bin" "$tap_tmp/cl"
[ "$TESTCLIENT" = "$tap_tmp/bin/hsmca-testclient" ] || cp "$TESTCLIENT" "$tap_tmp/bin/"
TESTCLIENT=$tap_tmp/bin/hsmca-testclient
chmod 0755 "$tap_tmp/bin" "$TESTCLIENT"
[ -n "$client_user" ] && chown "$client_user" "$tap_tmp/cl"
cl=$tap_tmp/cl
log=$st/audit/audit.log

signer_start || { echo "Bail out! the signer did not start"; exit 99; }
ok "the signer starts"

for round in 1 2; do
	out=$cl/load$round.out
	client -t 3000 --out "$out" load --count 2000 --concurrency 8 \
		--key issuing --profile svid --san URI:spiffe://td.example/load \
		> "$tap_tmp/load$round.log" 2>&1 &
	load_pid=$!
	# Kill in the middle of the load: after 100 answers, bounded.
	i=0
	while [ $i -lt 300 ]; do
		n=$(grep -c '^SIGNED' "$out" 2>/dev/null)
		[ "${n:-0}" -ge 100 ] && break
		sleep 0.05
		i=$((i + 1))
	done
	signer_kill9
	ok "round $round: kill -9 after $n signatures handed out"
	# The client gives up on each request after 3 s; bounded wait.
	i=0
	while kill -0 "$load_pid" 2>/dev/null && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	kill "$load_pid" 2>/dev/null
	wait "$load_pid" 2>/dev/null
	if signer_start; then
		ok "round $round: the signer restarts on the log it crashed on"
	else
		not_ok "round $round: the signer restarts"
		tail -20 "$tap_tmp/signerd.log" | sed 's/^/# /'
		break
	fi
	grep '^SIGNED' "$out" | awk '{print $2}' | sort > "$tap_tmp/received"
	check "round $round: the client got signatures" test -s "$tap_tmp/received"
	check "round $round: every signature a client received is in the audit log" python3 -c "
import json,sys
signed=set()
for l in open('$log'):
    r=json.loads(l)
    if r.get('type')=='issue' and r.get('outcome')=='signed':
        signed.add(r['serial'])
missing=[s for s in open('$tap_tmp/received').read().split() if s not in signed]
print('missing', len(missing), missing[:5])
sys.exit(1 if missing else 0)"
	check "round $round: no serial was signed twice" python3 -c "
import json,sys
seen={}
for l in open('$log'):
    r=json.loads(l)
    if r.get('type')=='intent':
        seen[r['serial']]=seen.get(r['serial'],0)+1
sys.exit(1 if [s for s,c in seen.items() if c>1] else 0)"
	check "round $round: audit verify passes" audit_verify
	check "round $round: the restarted signer signs" client issue --key issuing \
		--profile svid --spki-gen ec-p256 --san URI:spiffe://td.example/after
done
check "a clean stop after the crashes" signer_stop
check "audit verify passes at the end" audit_verify
tap_done
