#!/bin/sh
# Crash safety of the inventory: kill -9 the policy daemon under load,
# then the signer under load.  After restarts and reconciliation: every
# certificate a client received is in the inventory as issued, every
# certificate the signer's audit log says it signed for our requester is
# in the inventory, no row is left pending, no serial appears twice.
. "$top_srcdir/tests/tap.sh"
. "$top_srcdir/tests/signer-lib.sh"
. "$top_srcdir/tests/policyd-lib.sh"

signer_setup
# A short time window, so that pending rows can be settled soon.
sed 's/^time_window = 30s$/time_window = 3s/' "$conf" > "$conf.new" && mv "$conf.new" "$conf"
# The token behind the fault module, to stall signatures on demand.
ctl=
if [ -f "${HSMCA_FAULTMOD:-}" ]; then
	ctl=$tok/faults
	sed "s|^module = .*|module = $HSMCA_FAULTMOD|" "$conf" > "$conf.new" && mv "$conf.new" "$conf"
	export HSMCA_FAULT_MODULE="$HSMCA_MODULE" HSMCA_FAULT_CONTROL="$ctl"
fi
stall_rule() {
	printf '%s\n' "$@" > "$ctl.tmp"
	[ -n "$signer_user" ] && chown "$signer_user" "$ctl.tmp"
	mv "$ctl.tmp" "$ctl"
}
[ -n "$ctl" ] && stall_rule "# none"
signer_start || { cat "$tap_tmp/signerd.log"; echo "Bail out! signer"; exit 99; }
policyd_setup
sed 's/^reconcile_after = 40s$/reconcile_after = 6s/' "$pconf" > "$pconf.new" &&
	cat "$pconf.new" > "$pconf" && rm -f "$pconf.new"
policyd_start || { cat "$tap_tmp/policyd.log"; echo "Bail out! policyd"; exit 99; }
policyd_urls
tok=$(token web 5000)
mkdir -p "$tap_tmp/got"
for n in 1 2 3 4; do
	csr "load$n" "ec -pkeyopt ec_paramgen_curve:P-256" "URI:spiffe://td.example/ns/web/load$n"
	body "load$n" svid 1h
done

# load SECONDS: four clients issuing as fast as they can; each answer
# with a certificate is kept in got/.
load() {
	end=$(($(date +%s) + $1))
	load_pids=
	for n in 1 2 3 4; do
		(
			i=0
			while [ "$(date +%s)" -lt "$end" ] && [ $i -lt 2000 ]; do
				i=$((i + 1))
				f=$tap_tmp/got/$n-$i-$$
				c=$($CURL --max-time 5 -o "$f" -w '%{http_code}' -X POST \
					-H 'Content-Type: application/json' \
					-H "Authorization: Bearer $tok" \
					--data-binary "@$tap_tmp/load$n.json" "$url/v1/certificates" 2>/dev/null)
				[ "$c" = 201 ] || rm -f "$f"
			done
		) &
		load_pids="$load_pids $!"
	done
}

inventory_settled() {
	i=0
	while [ $i -lt 200 ]; do
		[ "$(sqlite3 "$ps/inventory.db" "select count(*) from certificates where status = 'pending'")" = 0 ] &&
			return 0
		sleep 0.2
		i=$((i + 1))
	done
	return 1
}

# Serials clients received, the inventory's issued ones, and the audit
# log's signed ones for our requester, one per line, lower-case hex.
received() {
	for f in "$tap_tmp"/got/*; do
		[ -f "$f" ] && python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["serial"])' "$f"
	done | sort
}
issued() {
	sqlite3 "$ps/inventory.db" "select serial from certificates where status in ('issued', 'revoked')" | sort
}
audited() {
	python3 - "$st/audit/audit.log" <<'EOF' | sort
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("type") == "issue" and r.get("outcome") == "signed" and \
            r.get("requester") in ("web", "hsmca-policyd"):
        print(r["serial"].lstrip("0"))
EOF
}
check_invariants() {
	what=$1
	received > "$tap_tmp/received"
	issued > "$tap_tmp/issued"
	audited > "$tap_tmp/audited"
	if [ -s "$tap_tmp/received" ] && [ -z "$(comm -23 "$tap_tmp/received" "$tap_tmp/issued")" ]; then
		ok "$what: all $(wc -l < "$tap_tmp/received") certificates clients received are in the inventory"
	else
		not_ok "$what: certificates clients received are missing from the inventory"
		comm -23 "$tap_tmp/received" "$tap_tmp/issued" | sed 's/^/# missing: /'
	fi
	if [ -z "$(comm -23 "$tap_tmp/audited" "$tap_tmp/issued")" ]; then
		ok "$what: every certificate the audit log shows signed is in the inventory ($(wc -l < "$tap_tmp/audited"))"
	else
		not_ok "$what: signed certificates are missing from the inventory"
		comm -23 "$tap_tmp/audited" "$tap_tmp/issued" | head | sed 's/^/# lost: /'
	fi
	d=$(sqlite3 "$ps/inventory.db" "select count(*) - count(distinct serial) from certificates where serial is not null")
	check "$what: no serial appears twice in the inventory" test "$d" = 0
}

# --- the policy daemon killed under load
load 6
sleep 2
kill -9 "$pd_real"
wait "$policyd_pid" 2>/dev/null
policyd_pid=
pending=$(sqlite3 "$ps/inventory.db" "select count(*) from certificates where status = 'pending'")
echo "# pending rows after kill -9 of the policy daemon: $pending"
wait $load_pids
if policyd_start; then ok "the policy daemon restarts after kill -9"; else not_ok "the policy daemon restarts"; fi
policyd_urls
if inventory_settled; then ok "reconciliation leaves no pending row"; else not_ok "rows left pending"; fi
check_invariants "policy daemon killed"

# --- a crash between signing and recording, made certain: the token
# stalls each signature 2 s (tests/faultmod.md), the policy daemon is
# killed while the signer holds three requests, the signer signs them
# and answers nobody.
if [ -n "$ctl" ]; then
	stall_rule "stall C_Sign 1 2000 3"
	for n in 1 2 3; do
		$CURL --max-time 5 -o /dev/null -X POST -H 'Content-Type: application/json' \
			-H "Authorization: Bearer $tok" --data-binary "@$tap_tmp/load$n.json" \
			"$url/v1/certificates" 2>/dev/null &
	done
	sleep 0.5
	pending=$(sqlite3 "$ps/inventory.db" "select count(*) from certificates where status = 'pending'")
	check "three requests wait on the stalled token as pending rows" test "$pending" = 3
	kill -9 "$pd_real"
	wait "$policyd_pid" 2>/dev/null
	policyd_pid=
	# The signer finishes them: three more signatures in its log.
	before=$(audited | wc -l)
	i=0
	while [ $i -lt 100 ] && [ "$(audited | wc -l)" -lt $((before + 3)) ]; do
		sleep 0.1
		i=$((i + 1))
	done
	stall_rule "# none"
	if policyd_start; then ok "the policy daemon restarts with rows pending"; else not_ok "the policy daemon restarts with rows pending"; fi
	policyd_urls
	if inventory_settled; then ok "the rows signed after the crash are settled"; else not_ok "rows left pending"; fi
	check "they were completed from the audit log" \
		test "$(grep -c 'reconciled row [0-9]*: issued serial' "$tap_tmp/policyd.log")" -ge 3
	check_invariants "crash between signing and recording"
else
	for i in 1 2 3 4 5 6 7 8; do skip "the fault module is not built"; done
fi

# --- the signer killed under load
load 6
sleep 2
signer_kill9
sleep 0.5
signer_start || not_ok "the signer restarts"
wait $load_pids
i=0
until [ $i -ge 100 ]; do
	api GET /healthz
	[ "$code" = 200 ] && break
	sleep 0.1
	i=$((i + 1))
done
expect "the policy daemon sees the signer back" 200
if inventory_settled; then ok "reconciliation after the signer's crash leaves no pending row"; else not_ok "rows left pending after the signer's crash"; fi
check_invariants "signer killed"
audit_verify > /dev/null 2>&1 && ok "the signer's audit log verifies" || not_ok "the signer's audit log verifies"
check "hsmca-policyd stops cleanly" policyd_stop
[ "$tap_failed" -eq 0 ] || sed 's/^/# policyd: /' "$tap_tmp/policyd.log" | grep -v " 201 \| issued " | tail -40
tap_done
