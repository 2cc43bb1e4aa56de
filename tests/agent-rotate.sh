#!/bin/sh
# hsmca agent as a daemon keeps a 60-second certificate fresh for an
# openssl s_server (mTLS, -Verify 1) that its reload command restarts on
# the same port, while a client with its own certificate connects every
# second.  A connection counts as failed only when a second attempt
# 200 ms later fails too; there must be no such TLS failure.  The
# restart instant (s_server stopped, the new one not yet listening:
# "connection refused" twice) is counted apart and must fall within
# 3 s of a rotation.  Every rotation brings a new key; a reader that
# keeps comparing key and certificate on disk may see them apart only
# across a rename, never on a second read.  Then the policy daemon is
# down for longer than a renewal interval: the agent backs off and
# renews before the certificate expires.  About 4 to 5 minutes.
. "$top_srcdir/tests/tap.sh"
. "$top_srcdir/tests/signer-lib.sh"
. "$top_srcdir/tests/policyd-lib.sh"
HSMCA=${HSMCA:-$top_builddir/hsmca}
AGENT_WRAP=${AGENT_WRAP:-}

agent_pid=
client_pid=
reader_pid=
rotate_cleanup() {
	for p in $agent_pid $client_pid $reader_pid; do
		kill "$p" 2>/dev/null
	done
	[ -s "$tap_tmp/s_server.pid" ] && kill "$(cat "$tap_tmp/s_server.pid")" 2>/dev/null
	policyd_cleanup
}
trap rotate_cleanup EXIT

signer_setup
signer_start || { cat "$tap_tmp/signerd.log"; echo "Bail out! signer"; exit 99; }
policyd_setup
policyd_start || { cat "$tap_tmp/policyd.log"; echo "Bail out! policyd"; exit 99; }
policyd_urls
# Restarts keep the port, so that the agent's configuration stays right.
sed -i "s/^listen = .*/listen = 127.0.0.1:$port/" "$pconf"
out=$tap_tmp/certs
as=$tap_tmp/astate
mkdir "$out"
tls="--server $url --ca-bundle $ca/root.pem --resolve ca.example.com:$port:127.0.0.1"
sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

keypub() { openssl pkey -in "$1" -pubout 2>/dev/null; }
certpub() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr A-F a-f | sed 's/^0*//'; }
notafter_of() { date -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s; }
matches() { k=$(keypub "$1") && [ -n "$k" ] && [ "$k" = "$(certpub "$2")" ]; }

# The client's own certificate, from the same CA.
(umask 077; token web 3 > "$tap_tmp/web.tok")
check "a client certificate is enrolled with hsmca enroll" \
	"$HSMCA" enroll $tls --token-file "$tap_tmp/web.tok" --profile client --dns client.web.example.com \
	--ttl 2h --key "$tap_tmp/client.key" --cert "$tap_tmp/client.pem"

# The reload command: note the rotation (time, serial, the key's hash,
# not-after), stop the old s_server, start a new one on the same port.
cat > "$tap_tmp/restart.sh" <<EOF
#!/bin/sh
echo "\$(date +%s) \$HSMCA_AGENT_SERIAL \$(openssl pkey -in "$out/srv.key" -pubout | sha256sum | cut -c1-16) \$(date -d "\$(openssl x509 -in "$out/srv.pem" -noout -enddate | cut -d= -f2)" +%s)" >> "$tap_tmp/rotations"
old=\$(cat "$tap_tmp/s_server.pid" 2>/dev/null)
if [ -n "\$old" ]; then
	kill "\$old" 2>/dev/null
	i=0
	while kill -0 "\$old" 2>/dev/null && [ \$i -lt 50 ]; do sleep 0.05; i=\$((i + 1)); done
fi
openssl s_server -accept 127.0.0.1:$sport -cert "$out/srv.pem" -key "$out/srv.key" \
	-cert_chain "$out/srv.chain" -CAfile "$tap_tmp/trust.pem" -Verify 1 -verify_return_error -www -quiet \
	< /dev/null >> "$tap_tmp/s_server.log" 2>&1 &
echo \$! > "$tap_tmp/s_server.pid"
i=0
while ! python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", $sport), 0.2)' 2>/dev/null && [ \$i -lt 40 ]; do
	sleep 0.05; i=\$((i + 1))
done
exit 0
EOF
chmod 0755 "$tap_tmp/restart.sh"
# s_server trusts the root and knows the issuing CA (the client sends
# only its own certificate).
cat "$ca/root.pem" "$ca/intermediate.pem" > "$tap_tmp/trust.pem"

conf=$tap_tmp/agent.conf
cat > "$conf" <<EOF
[agent]
server = $url
ca_bundle = $ca/root.pem
resolve = ca.example.com:$port:127.0.0.1
state_dir = $as
renew_fraction = 2/3
jitter = 10%
backoff_min = 1s
backoff_max = 4s
check_interval = 5s

[cert srv]
profile = peer
dns = srv.web.example.com
ttl = 60s
key = $out/srv.key
cert = $out/srv.pem
chain = $out/srv.chain
token_file = $tap_tmp/web.tok
reload_command = $tap_tmp/restart.sh
EOF

$AGENT_WRAP "$HSMCA" agent -c "$conf" -d > "$tap_tmp/agent.log" 2>&1 &
agent_pid=$!
i=0
while [ $i -lt 150 ] && [ ! -s "$tap_tmp/s_server.pid" ]; do sleep 0.1; i=$((i + 1)); done
check "the agent enrolls and the reload command starts s_server" test -s "$tap_tmp/s_server.pid"

# The client: one connection a second, a second attempt 200 ms later
# before a failure is counted.
client() {
	curl -sS --max-time 3 --cacert "$ca/root.pem" --cert "$tap_tmp/client.pem" --key "$tap_tmp/client.key" \
		--resolve "srv.web.example.com:$sport:127.0.0.1" "https://srv.web.example.com:$sport/" \
		-o "$tap_tmp/page" 2>> "$tap_tmp/client.err" && grep -q "s_server" "$tap_tmp/page"
}
client_loop() {
	n=0
	while [ $n -lt 400 ] && [ ! -e "$tap_tmp/stop" ]; do
		if client; then
			echo ok >> "$tap_tmp/client.ok"
		else
			sleep 0.2
			if client; then
				echo retry >> "$tap_tmp/client.retry"
			elif tail -1 "$tap_tmp/client.err" | grep -q "^curl: (7) .*Couldn't connect"; then
				# Nobody listening: s_server between stop and start.
				date +%s >> "$tap_tmp/client.gap"
			else
				echo "$(date +%s) $(tail -1 "$tap_tmp/client.err")" >> "$tap_tmp/client.fail"
			fi
		fi
		sleep 1
		n=$((n + 1))
	done
}
reader_loop() {
	n=0
	while [ $n -lt 20000 ] && [ ! -e "$tap_tmp/stop" ]; do
		kp=$(keypub "$out/srv.key")
		cp=$(certpub "$out/srv.pem")
		if [ -z "$kp" ] || [ -z "$cp" ]; then
			echo "read $n: not a whole key or certificate" >> "$tap_tmp/reader.err"
		elif [ "$kp" != "$cp" ]; then
			echo x >> "$tap_tmp/reader.straddle"
			matches "$out/srv.key" "$out/srv.pem" ||
				echo "read $n: key and certificate apart on a second read" >> "$tap_tmp/reader.err"
		fi
		echo x >> "$tap_tmp/reader.n"
		sleep 0.05
		n=$((n + 1))
	done
}
: > "$tap_tmp/client.err"
client_loop &
client_pid=$!
reader_loop &
reader_pid=$!

# Five renewals after the enrollment: about 40 s each.
rotations() { cat "$tap_tmp/rotations" 2>/dev/null | wc -l; }
i=0
while [ $i -lt 300 ] && [ "$(rotations)" -lt 6 ] && kill -0 $agent_pid 2>/dev/null; do sleep 1; i=$((i + 1)); done
check "the daemon rotated the 60 s certificate 5 times after the enrollment ($i s)" test "$(rotations)" -ge 6

# The policy daemon down for longer than a renewal interval, from just
# after a rotation; the certificate must be renewed before it expires.
n0=$(rotations)
i=0
while [ $i -lt 60 ] && [ "$(rotations)" -eq "$n0" ]; do sleep 1; i=$((i + 1)); done
na=$(notafter_of "$out/srv.pem")
check "hsmca-policyd stops just after a rotation" policyd_stop
down_at=$(date +%s)
sleep 45
failures=$(grep -c -e "srv: CRL: " -e "srv: cannot renew" "$tap_tmp/agent.log")
check "hsmca-policyd starts again after 45 s (longer than the 40 s renewal interval)" policyd_start
policyd_urls
n1=$(rotations)
i=0
while [ $i -lt 30 ] && [ "$(rotations)" -eq "$n1" ] && [ "$(date +%s)" -lt "$na" ]; do sleep 0.5; i=$((i + 1)); done
renewed_at=$(tail -1 "$tap_tmp/rotations" | cut -d' ' -f1)
if [ "$(rotations)" -gt "$n1" ] && [ "$renewed_at" -lt "$na" ]; then
	ok "the agent caught up before the expiry: renewed $((na - renewed_at)) s before it, after $failures logged failures"
else
	not_ok "no renewal before the expiry at $na (rotations $(rotations), last at $renewed_at, down at $down_at)"
fi
check "while it was down the agent backed off: failures logged, fewer than one a second" \
	test "$failures" -ge 3 -a "$failures" -le 45
sleep 5

touch "$tap_tmp/stop"
wait $client_pid $reader_pid
client_pid=
reader_pid=
kill -TERM $agent_pid
wait $agent_pid
rc=$?
agent_pid=
check "the agent exits 0 on SIGTERM" test $rc -eq 0

nrot=$(rotations)
nkeys=$(cut -d' ' -f3 "$tap_tmp/rotations" | sort -u | wc -l)
nser=$(cut -d' ' -f2 "$tap_tmp/rotations" | sort -u | wc -l)
check "every rotation brought a new key and serial ($nrot rotations, $nkeys keys, $nser serials)" \
	test "$nkeys" -eq "$nrot" -a "$nser" -eq "$nrot"
oks=$(cat "$tap_tmp/client.ok" 2>/dev/null | wc -l)
retries=$(cat "$tap_tmp/client.retry" 2>/dev/null | wc -l)
fails=$(cat "$tap_tmp/client.fail" 2>/dev/null | wc -l)
gaps=$(cat "$tap_tmp/client.gap" 2>/dev/null | wc -l)
if [ "$fails" -eq 0 ] && [ "$oks" -ge 150 ]; then
	ok "no TLS handshake failed twice in a row: $oks connections, $retries retried, $gaps refused twice at a restart"
else
	not_ok "client: $fails handshake failures, $oks ok, $retries retried"
	sed 's/^/# /' "$tap_tmp/client.fail" | head -10
fi
check "connections refused twice (the restart window) came only within 3 s of a rotation" python3 -c "
import os
rot = [int(l.split()[0]) for l in open('$tap_tmp/rotations')]
p = '$tap_tmp/client.gap'
gaps = [int(l) for l in open(p)] if os.path.exists(p) else []
bad = [g for g in gaps if not any(-1 <= g - r <= 3 for r in rot)]
assert not bad and len(gaps) <= 2 * len(rot), (bad, gaps)"
reads=$(cat "$tap_tmp/reader.n" 2>/dev/null | wc -l)
straddles=$(cat "$tap_tmp/reader.straddle" 2>/dev/null | wc -l)
if [ ! -s "$tap_tmp/reader.err" ] && [ "$reads" -ge 100 ]; then
	ok "key and certificate on disk always matched on a second read ($reads reads, $straddles across a rename)"
else
	not_ok "the reader ($reads reads)"
	sed 's/^/# /' "$tap_tmp/reader.err" | head -10
fi
# Every certificate served lived 60 s and was replaced after 2/3 of it
# less at most 10 % of it: rotations while the server was up are 34 to
# 40 s apart, give or take the renewal's own time.  Under the sanitizers on a
# loaded machine that was once 3 s (a gap of 43 in a CI run: due at 40,
# issued at 42, reloaded at 43), so 33 to 45; a renewal at 5/6 of the
# lifetime or at expiry (50 s, 60 s) still fails.
check "the rotations while the server was up came 33 to 45 s apart" python3 -c "
rows = [l.split() for l in open('$tap_tmp/rotations')]
t = [int(r[0]) for r in rows]
gaps = [b - a for a, b in zip(t, t[1:])][:5]
assert len(gaps) == 5 and all(33 <= g <= 45 for g in gaps), gaps"
check "status shows the last serial and no failure in a row" sh -c "
	'$HSMCA' agent status -c $conf | grep -Eq '^  serial +$(serial_of "$out/srv.pem")\$' &&
	'$HSMCA' agent status -c $conf | grep -Eq '^  failures +0 in a row'"
[ "$tap_failed" -eq 0 ] || { sed 's/^/# agent: /' "$tap_tmp/agent.log" | tail -40; sed 's/^/# rot: /' "$tap_tmp/rotations"; }
policyd_stop
tap_done
