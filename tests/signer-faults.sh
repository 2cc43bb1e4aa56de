#!/bin/sh
# Token faults under load, through the fault-injecting module
# (tests/faultmod.md): device errors, a stalled C_Sign, a token deleted
# and restored.  Each gives clean "token_unavailable" answers within a
# bound, then the signer recovers without a restart.
. "$top_srcdir/tests/tap.sh"
. "$top_srcdir/tests/signer-lib.sh"

if [ ! -f "$HSMCA_FAULTMOD" ]; then
	skip "fault module not built"
	tap_done
	exit 0
fi
signer_setup "call_timeout = 1000"
ctl=$tok/faults
sed "s|^module = .*|module = $HSMCA_FAULTMOD|" "$conf" > "$conf.new" && mv "$conf.new" "$conf"
export HSMCA_FAULT_MODULE="$HSMCA_MODULE" HSMCA_FAULT_CONTROL="$ctl"
mkdir -p "$tap_tmp/bin" "$tap_tmp/cl"
[ "$TESTCLIENT" = "$tap_tmp/bin/hsmca-testclient" ] || cp "$TESTCLIENT" "$tap_tmp/bin/"
TESTCLIENT=$tap_tmp/bin/hsmca-testclient
chmod 0755 "$tap_tmp/bin" "$TESTCLIENT"
[ -n "$client_user" ] && chown "$client_user" "$tap_tmp/cl"
cl=$tap_tmp/cl

# rules: replace the control file atomically (faultmod re-reads it).
rules() {
	printf '%s\n' "$@" > "$ctl.tmp"
	[ -n "$signer_user" ] && chown "$signer_user" "$ctl.tmp"
	mv "$ctl.tmp" "$ctl"
}
rules "# none"

signer_start || { sed 's/^/# /' "$tap_tmp/signerd.log"; echo "Bail out! the signer did not start"; exit 99; }
ok "the signer starts through the fault module"

svid() { client -t 20000 issue --key issuing --profile svid --spki-gen ec-p256 --san URI:spiffe://td.example/f; }
ms() { echo $(($(date +%s%N) / 1000000)); }

# One request under a fault: "token_unavailable", within bound_ms.
unavailable_within() {
	desc=$1; bound=$2
	t0=$(ms)
	svid > "$tap_tmp/ans" 2>&1
	rc=$?
	t=$(($(ms) - t0))
	if [ $rc -eq 2 ] && grep -q "^ERROR token_unavailable" "$tap_tmp/ans" && [ $t -le "$bound" ]; then
		ok "$desc: token_unavailable in ${t} ms (bound $bound)"
	else
		not_ok "$desc (rc $rc, ${t} ms)"
		sed 's/^/# /' "$tap_tmp/ans"
	fi
}

# Recovery without a restart: a signature within 15 s of the fault ending.
recovers() {
	desc=$1
	t0=$(ms)
	i=0
	while [ $i -lt 150 ]; do
		if svid > "$tap_tmp/ans" 2>&1; then
			ok "$desc: signing again after $(($(ms) - t0)) ms, same process"
			return
		fi
		sleep 0.1
		i=$((i + 1))
	done
	not_ok "$desc: no recovery within 15 s"
	sed 's/^/# /' "$tap_tmp/ans"
	tail -5 "$tap_tmp/signerd.log" | sed 's/^/# /'
}

# A load running through all the faults: every answer is a signature or a
# clean refusal; none is lost or malformed.
client -t 20000 --out "$cl/load.out" load --count 100000 --concurrency 4 \
	--key issuing --profile svid --san URI:spiffe://td.example/load \
	> "$tap_tmp/load.log" 2>&1 &
load_pid=$!
sleep 1

rules "fail C_Sign 1 CKR_DEVICE_ERROR *"
unavailable_within "CKR_DEVICE_ERROR on every C_Sign" 8000
rules "# none"
recovers "after the device errors"

rules "stall C_Sign 1 5000 *"
unavailable_within "a C_Sign that stalls 5 s (watchdog 1 s)" 8000
rules "# none"
recovers "after the stall"

rules "fail C_Sign 1 CKR_DEVICE_REMOVED *" "fail C_OpenSession 1 CKR_TOKEN_NOT_PRESENT *" \
	"fail C_GetSlotList 1 CKR_DEVICE_REMOVED *"
unavailable_within "the token removed" 8000
rules "# none"
recovers "after the token came back"

# The token's files deleted and restored from a copy (a re-initialised
# token restored from backup): every handle dies, the keys come back.
# The token's directory goes and comes back by one rename each, so that
# the load meets a token that is there or not, never one half deleted or
# half copied (what the module answers then is not what this tests).
cp -a "$tok/tokens" "$tap_tmp/tokens.bak"
mkdir "$tap_tmp/tokens.gone"
mv "$tok/tokens"/* "$tap_tmp/tokens.gone/"
rm -rf "$tap_tmp/tokens.gone"
sleep 0.5
svid > "$tap_tmp/ans" 2>&1
check "with the token's files gone, no signature" sh -c "! grep -q '^OK' '$tap_tmp/ans'"
mv "$tap_tmp/tokens.bak"/* "$tok/tokens/"
recovers "after the token was restored"

kill -TERM "$load_pid" 2>/dev/null
i=0
while kill -0 "$load_pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
kill -9 "$load_pid" 2>/dev/null
wait "$load_pid" 2>/dev/null
check "under load: signatures were made" grep -q "^SIGNED" "$cl/load.out"
grep -v -e '^SIGNED ' -e '^REFUSED token_unavailable ' -e '^load:' \
	"$cl/load.out" > "$tap_tmp/other-answers"
# Shown when the next check fails: which answers, how many of each.
cut -c1-120 "$tap_tmp/other-answers" | sort | uniq -c | sort -rn | head -n 5 |
	sed 's/^/# other answer: /'
check "under load: every answer was a signature or token_unavailable" \
	test ! -s "$tap_tmp/other-answers"
check "one process all along" kill -0 "$signer_pid"
check "the signer stops cleanly" signer_stop
check "audit verify passes" audit_verify
tap_done
