#!/bin/sh
# hsmca agent against a real policy daemon in front of a real signer:
# configuration errors as FILE:LINE, --once enrolls (files, modes, owner
# as root, chain), does nothing when nothing is due, renews with a new
# key when forced, renews at once a certificate the CRL lists (with the
# token: the server refuses to renew a revoked one), enrolls again when
# the files are gone and a token is left and fails clearly when none is,
# fails with exit 1 and keeps the old files while the server is down;
# status (text and JSON), agent.prom, the reload command's exit status,
# the lock against a second agent, and SIGHUP with a broken file.
. "$top_srcdir/tests/tap.sh"
. "$top_srcdir/tests/signer-lib.sh"
. "$top_srcdir/tests/policyd-lib.sh"
HSMCA=${HSMCA:-$top_builddir/hsmca}
AGENT_WRAP=${AGENT_WRAP:-}

signer_setup
signer_start || { cat "$tap_tmp/signerd.log"; echo "Bail out! signer"; exit 99; }
policyd_setup
policyd_start || { cat "$tap_tmp/policyd.log"; echo "Bail out! policyd"; exit 99; }
policyd_urls
out=$tap_tmp/certs
as=$tap_tmp/astate
mkdir "$out"
conf=$tap_tmp/agent.conf

keypub() { openssl pkey -in "$1" -pubout 2>/dev/null; }
certpub() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr A-F a-f | sed 's/^0*//'; }
notafter_of() { date -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s; }
matches() { k=$(keypub "$1") && [ -n "$k" ] && [ "$k" = "$(certpub "$2")" ]; }
agent() { $AGENT_WRAP "$HSMCA" agent "$@"; }
# jget FILE PYTHON-EXPRESSION-ON-c: a field of the web certificate's status
jget() {
	python3 -c "import json,sys; c=[x for x in json.load(open(sys.argv[1]))['certificates'] if x['name']=='web'][0]; print($2)" "$1"
}
metric() { sed -n "s/^$1 //p" "$as/agent.prom"; }

newtoken() {
	(umask 077; token web "$1" > "$tap_tmp/web.tok")
}
# The reload command records the serial it was run for and exits with
# the status in reload.rc.
cat > "$tap_tmp/reload.sh" <<EOF
#!/bin/sh
echo "\$HSMCA_AGENT_NAME \$HSMCA_AGENT_SERIAL" >> "$tap_tmp/reloads"
exit \$(cat "$tap_tmp/reload.rc")
EOF
chmod 0755 "$tap_tmp/reload.sh"
echo 0 > "$tap_tmp/reload.rc"
owner_lines=
[ -n "$client_user" ] && owner_lines="owner = $client_user
group = $client_user"
write_conf() {
	cat > "$conf" <<EOF
# hsmca agent test configuration
[agent]
server = $url
ca_bundle = $ca/root.pem
resolve = ca.example.com:$port:127.0.0.1
state_dir = $as
backoff_min = 1s
backoff_max = 2s
check_interval = ${1:-2s}

[cert web]
profile = svid
spiffe_id = spiffe://td.example/ns/web/api
ttl = 1h
key = $out/web.key
cert = $out/web.pem
chain = $out/web.chain
token_file = $tap_tmp/web.tok
reload_command = $tap_tmp/reload.sh
$owner_lines
EOF
}

# --- configuration errors, each at its line
cat > "$tap_tmp/bad.conf" <<EOF
[agent]
server = http://ca.example.com
ca_bundle = $ca/root.pem
state_dir = $as
renew_fraction = 3/2
colour = blue

[cert web]
profile = svid
spiffe_id = spiffe://td.example/ns/web/api
ttl = sixty
key = $out/web.key
cert = $out/web.pem
key_mode = 0644
reload_signal = HUP
EOF
run_logged agent -c "$tap_tmp/bad.conf" -n
rc=$?
bad=$tap_tmp/bad.conf
if [ $rc -eq 1 ] && grep -q "^hsmca agent: $bad:2: server must be an https:// URL" "$tap_tmp/out" &&
    grep -q "^hsmca agent: $bad:5: renew_fraction must be a fraction" "$tap_tmp/out" &&
    grep -q "^hsmca agent: $bad:6: unknown setting colour in \[agent\]" "$tap_tmp/out" &&
    grep -q "^hsmca agent: $bad:11: ttl must be a duration" "$tap_tmp/out" &&
    grep -q "^hsmca agent: $bad:14: key_mode 0644 gives other users access" "$tap_tmp/out" &&
    grep -q "^hsmca agent: $bad:[0-9]*: \[cert web\]: reload_signal and pid_file go together" "$tap_tmp/out"; then
	ok "a bad configuration: exit 1, every error named at its FILE:LINE"
else
	not_ok "a bad configuration (exit $rc)"
	sed 's/^/# /' "$tap_tmp/out"
fi
printf '[agent]\nserver = https://x\n[cert a]\nthis is not a setting\n' > "$tap_tmp/bad2.conf"
check_fails "a line that is not a setting: FILE:LINE" "bad2.conf:4: not a setting" agent -c "$tap_tmp/bad2.conf" -n
check_fails "no -c: a usage error" "usage: hsmca agent" agent --once
run_logged agent --once
check "... exit 2" test $? -eq 2
check "hsmca --help lists agent" eval "'$HSMCA' --help | grep -q '^  agent '"
check "hsmca agent --help" eval "'$HSMCA' agent --help | grep -q '^usage: hsmca agent'"
write_conf
check "hsmca agent -n accepts the good configuration" agent -c "$conf" -n
run_logged agent status -c "$conf"
rc=$?
cp "$tap_tmp/out" "$tap_tmp/last"
check "status before any run: exit 1, says so" eval "[ $rc -eq 1 ] && grep -q 'no status' $tap_tmp/last"

# --- first run: enrollment with the token
newtoken 5
check "--once enrolls with the token" agent -c "$conf" --once
check "the files are 0600 (key) and 0644 (certificate, chain), no temporary left" eval "
	[ \$(stat -c %a $out/web.key) = 600 ] && [ \$(stat -c %a $out/web.pem) = 644 ] &&
	[ \$(stat -c %a $out/web.chain) = 644 ] && [ \"\$(ls -A $out | tr '\n' ' ')\" = 'web.chain web.key web.pem ' ]"
if [ -n "$client_user" ]; then
	check "as root, the files belong to owner and group" eval "
		[ \"\$(stat -c %U:%G $out/web.key $out/web.pem $out/web.chain | sort -u)\" = '$client_user:$client_user' ]"
else
	skip "owner and group: not root"
fi
check "the certificate verifies with its chain" \
	openssl verify -x509_strict -CAfile "$ca/root.pem" -untrusted "$out/web.chain" "$out/web.pem"
check "key and certificate match" matches "$out/web.key" "$out/web.pem"
s1=$(serial_of "$out/web.pem")
k1=$(keypub "$out/web.key")
check "the reload command ran once, for that serial" test "$(cat "$tap_tmp/reloads")" = "web $s1"
check "status.json has the serial, not_after and a next renewal within the lifetime" eval "
	[ \"\$(jget $as/status.json \"c['serial']\")\" = '$s1' ] &&
	[ \"\$(jget $as/status.json \"c['not_after_unix']\")\" = \"\$(notafter_of $out/web.pem)\" ] &&
	python3 -c \"
import json; c = json.load(open('$as/status.json'))['certificates'][0]
life = c['not_after_unix'] - c['not_before_unix']
at = c['next_renewal_unix'] - c['not_before_unix']
assert life > 0 and life * (2/3 - 0.10) - 1 <= at <= life * 2/3 + 1, (life, at)\""
check "agent.prom: not_after, next renewal, one ok renewal, no reload failure" eval "
	[ \"\$(metric 'hsmca_agent_cert_not_after_seconds{name=\"web\"}')\" = \"\$(notafter_of $out/web.pem)\" ] &&
	[ \"\$(metric 'hsmca_agent_next_renewal_seconds{name=\"web\"}')\" = \"\$(jget $as/status.json \"c['next_renewal_unix']\")\" ] &&
	[ \"\$(metric 'hsmca_agent_renewals_total{name=\"web\",result=\"ok\"}')\" = 1 ] &&
	[ \"\$(metric 'hsmca_agent_renewals_total{name=\"web\",result=\"error\"}')\" = 0 ] &&
	[ \"\$(metric 'hsmca_agent_reload_failures_total{name=\"web\"}')\" = 0 ] &&
	grep -q '^# TYPE hsmca_agent_renewals_total counter' $as/agent.prom"

# --- nothing due
check "--once again: exit 0" agent -c "$conf" --once
check "... nothing renewed, nothing reloaded" eval "
	[ \"\$(serial_of $out/web.pem)\" = '$s1' ] && [ \$(wc -l < $tap_tmp/reloads) -eq 1 ]"

# --- forced renewal: over mTLS, a new key
check "--once --force renews" agent -c "$conf" --once --force
s2=$(serial_of "$out/web.pem")
k2=$(keypub "$out/web.key")
check "... a new serial and a new key, matching, still 0600" eval "
	[ '$s2' != '$s1' ] && [ -n '$k2' ] && [ '$k2' != '$k1' ] && [ \$(stat -c %a $out/web.key) = 600 ]" 
check "... key and certificate match, the chain verifies" eval "
	[ \"\$(openssl pkey -in $out/web.key -pubout)\" = \"\$(openssl x509 -in $out/web.pem -noout -pubkey)\" ] &&
	openssl verify -CAfile $ca/root.pem -untrusted $out/web.chain $out/web.pem"
check "... and the reload command ran for the new serial" test "$(tail -1 "$tap_tmp/reloads")" = "web $s2"

# --- a failing reload command: recorded, counted, exit 1, yet rotated
echo 3 > "$tap_tmp/reload.rc"
run_logged agent -c "$conf" --once --force
rc=$?
cp "$tap_tmp/out" "$tap_tmp/last"
s3=$(serial_of "$out/web.pem")
check "a reload command exiting 3: --once exits 1 but the certificate is renewed" eval "
	[ $rc -eq 1 ] && [ '$s3' != '$s2' ] && grep -q 'reload failed: reload_command exited 3' $tap_tmp/last"
check "... status.json records the exit status, agent.prom counts the failure" eval "
	[ \"\$(jget $as/status.json \"c['last_reload']['result']\")\" = 'reload_command exited 3' ] &&
	[ \"\$(jget $as/status.json \"c['last_reload']['ok']\")\" = False ] &&
	[ \"\$(metric 'hsmca_agent_reload_failures_total{name=\"web\"}')\" = 1 ]"
echo 0 > "$tap_tmp/reload.rc"

# --- status
run_logged agent status -c "$conf"
cp "$tap_tmp/out" "$tap_tmp/status.txt"
check "status prints the name, serial, not-after, next renewal, last reload" eval "
	grep -q '^web\$' $tap_tmp/status.txt && grep -Eq '^  serial +$s3\$' $tap_tmp/status.txt &&
	grep -Eq '^  not after +[0-9]{4}-[0-9]{2}-[0-9]{2}T' $tap_tmp/status.txt &&
	grep -Eq '^  next renewal +[0-9]{4}-' $tap_tmp/status.txt &&
	grep -Eq '^  last reload +[0-9T:Z-]+ FAILED: reload_command exited 3\$' $tap_tmp/status.txt &&
	grep -Eq '^  renewals +3 ok, 0 failed\$' $tap_tmp/status.txt"
check "status --json is the status as JSON" eval "
	'$HSMCA' agent status -c $conf --json | python3 -c \"
import json, sys; c = json.load(sys.stdin)['certificates'][0]
assert c['name'] == 'web' and c['serial'] == '$s3' and c['renewals_ok'] == 3, c
assert c['last_reload']['result'] == 'reload_command exited 3'\""

# --- revocation: the CRL lists it, the next --once replaces it at once
run_logged "$HSMCA" revoke --server "$url" --ca-bundle "$ca/root.pem" \
	--resolve "ca.example.com:$port:127.0.0.1" --key "$out/web.key" --cert "$out/web.pem" "$s3"
cp "$tap_tmp/out" "$tap_tmp/last"
check "the current certificate is revoked by its holder" grep -q "^serial $s3 revoked" "$tap_tmp/last"
i=0
: > "$tap_tmp/revoke.log"
while [ $i -lt 20 ]; do
	agent -c "$conf" --once >> "$tap_tmp/revoke.log" 2>&1
	[ "$(serial_of "$out/web.pem")" != "$s3" ] && break
	sleep 1
	i=$((i + 1))
done
s4=$(serial_of "$out/web.pem")
if [ "$s4" != "$s3" ] && grep -q "serial $s3 is revoked (listed in the CRL)" "$tap_tmp/revoke.log" &&
    matches "$out/web.key" "$out/web.pem"; then
	ok "the revoked certificate is replaced at the next --once ($((i + 1)) run(s)), as the CRL lists it"
else
	not_ok "revocation: serial still $s4 after $i runs"
	sed 's/^/# /' "$tap_tmp/revoke.log" | tail -20
fi

# --- files gone: a token left enrolls again; none left fails clearly
rm -f "$out/web.key" "$out/web.pem"
check "files removed, token left: --once enrolls again" agent -c "$conf" --once
check "... new files that match" eval "[ \"\$(serial_of $out/web.pem)\" != '$s4' ] &&
	[ \"\$(openssl pkey -in $out/web.key -pubout)\" = \"\$(openssl x509 -in $out/web.pem -noout -pubkey)\" ]"
rm -f "$out/web.key" "$out/web.pem" "$tap_tmp/web.tok"
check_fails "files removed and no token: exit 1, a clear error" \
	"web: cannot enroll: no usable key and certificate \(.*web.key: No such file or directory\); token_file" \
	agent -c "$conf" --once
check "... and status shows that error" eval "
	'$HSMCA' agent status -c $conf | grep -q '^  last error .*cannot enroll: no usable key and certificate'"
newtoken 1
check "a fresh token: --once enrolls" agent -c "$conf" --once
s5=$(serial_of "$out/web.pem")

# --- the daemon: lock, SIGHUP with a broken file, SIGTERM
$AGENT_WRAP "$HSMCA" agent -c "$conf" -d > "$tap_tmp/daemon.log" 2>&1 &
dpid=$!
i=0
while [ $i -lt 100 ] && ! grep -q "started with 1 certificate" "$tap_tmp/daemon.log"; do sleep 0.1; i=$((i + 1)); done
check "the daemon starts" kill -0 $dpid
sleep 1
check_fails "--once while the daemon runs is refused" "another hsmca agent uses state_dir" agent -c "$conf" --once
cp "$conf" "$tap_tmp/good.conf"
printf 'key_type = ec-p999\n' >> "$conf"
kill -HUP $dpid
i=0
while [ $i -lt 100 ] && ! grep -q "keeping the configuration in use" "$tap_tmp/daemon.log"; do sleep 0.1; i=$((i + 1)); done
line=$(wc -l < "$conf")
check "SIGHUP with a broken file: FILE:LINE logged, the old configuration kept" eval "
	grep -q '$conf:$line: key_type must be one of' $tap_tmp/daemon.log &&
	grep -q 'keeping the configuration in use' $tap_tmp/daemon.log && kill -0 $dpid"
cp "$tap_tmp/good.conf" "$conf"
kill -HUP $dpid
i=0
while [ $i -lt 100 ] && ! grep -q "new configuration with 1 certificate" "$tap_tmp/daemon.log"; do sleep 0.1; i=$((i + 1)); done
check "SIGHUP with a good file: the new configuration" grep -q "new configuration with 1 certificate" "$tap_tmp/daemon.log"
sleep 2
check "the daemon renewed nothing that was not due" test "$(serial_of "$out/web.pem")" = "$s5"
kill -TERM $dpid
i=0
while [ $i -lt 100 ] && kill -0 $dpid 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
wait $dpid
check "SIGTERM: the daemon exits 0" test $? -eq 0

# --- the policy daemon down: exit 1, the old files untouched
cp -p "$out/web.key" "$tap_tmp/web.key.bak"
cp -p "$out/web.pem" "$tap_tmp/web.pem.bak"
cp -p "$out/web.chain" "$tap_tmp/web.chain.bak"
errs=$(metric 'hsmca_agent_renewals_total{name="web",result="error"}')
check "hsmca-policyd stops" policyd_stop
run_logged agent -c "$conf" --once --force
rc=$?
cp "$tap_tmp/out" "$tap_tmp/last"
check "server down: --once --force exits 1" test $rc -eq 1
check "... says why" grep -q "web: cannot renew serial $s5: " "$tap_tmp/last"
check "... and leaves the old files in place, no temporary behind" eval "
	cmp -s $out/web.key $tap_tmp/web.key.bak && cmp -s $out/web.pem $tap_tmp/web.pem.bak &&
	cmp -s $out/web.chain $tap_tmp/web.chain.bak &&
	[ \"\$(ls -A $out | tr '\n' ' ')\" = 'web.chain web.key web.pem ' ]"
check "... counted as an error renewal, the error in status" eval "
	[ \"\$(metric 'hsmca_agent_renewals_total{name=\"web\",result=\"error\"}')\" = $((errs + 1)) ] &&
	[ \"\$(jget $as/status.json \"c['consecutive_failures']\")\" -ge 1 ]"
run_logged agent -c "$conf" --once
check "server down, nothing due: --once exits 1 (the CRL cannot be checked)" test $? -eq 1
policyd_start || { cat "$tap_tmp/policyd.log"; echo "Bail out! policyd restart"; exit 99; }
policyd_urls
write_conf
check "server back: --once --force renews" agent -c "$conf" --once --force
check "... a new serial, failures reset" eval "[ \"\$(serial_of $out/web.pem)\" != '$s5' ] &&
	[ \"\$(jget $as/status.json \"c['consecutive_failures']\")\" = 0 ]"
check "no token was ever printed" eval "! grep -rq hsmca_ $tap_tmp/all.log $tap_tmp/daemon.log"
check "hsmca-policyd stops cleanly" policyd_stop
[ "$tap_failed" -eq 0 ] || sed 's/^/# daemon: /' "$tap_tmp/daemon.log" | tail -30
tap_done
