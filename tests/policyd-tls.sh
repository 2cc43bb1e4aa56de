#!/bin/sh
# hsmca-policyd's own TLS certificate: issued through the signer at start,
# renewed at two thirds of its life without a restart (new connections
# get the new one, with a new key); kept across a restart while it has a
# third of its life left.  Meanwhile, clients that hold connections
# without sending or that flood the listener do not stop it serving.
. "$top_srcdir/tests/tap.sh"
. "$top_srcdir/tests/signer-lib.sh"
. "$top_srcdir/tests/policyd-lib.sh"

signer_setup
signer_start || { cat "$tap_tmp/signerd.log"; echo "Bail out! signer"; exit 99; }
policyd_setup
# A 30 s certificate: renewed 20 s after it was issued.  A listener
# limit of 8 connections and a 3 s idle timeout.
sed -e 's/^tls_ttl = 2h$/tls_ttl = 30s/' -e 's/^client_timeout = 5$/client_timeout = 4/' \
	"$pconf" > "$pconf.new" && cat "$pconf.new" > "$pconf" && rm -f "$pconf.new"
echo "max_connections = 8" >> "$pconf"
policyd_start || { cat "$tap_tmp/policyd.log"; echo "Bail out! policyd"; exit 99; }
policyd_urls

served() {
	echo | openssl s_client -connect "127.0.0.1:$port" -servername ca.example.com \
		-CAfile "$ca/root.pem" -verify_return_error 2>/dev/null |
		openssl x509 -noout -serial -pubkey 2>/dev/null
}
served > "$tap_tmp/first"
check "the daemon serves a certificate issued for it" grep -q serial= "$tap_tmp/first"
start=$(date +%s)

# Slow clients: connections that never send a byte are closed by the
# server; while they are open the daemon still answers.
python3 - "$port" > "$tap_tmp/slow.out" 2>&1 <<'EOF' &
import socket, sys, time
port = int(sys.argv[1])
socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
t0 = time.time()
closed = 0
for s in socks:
    s.settimeout(10)
    try:
        if s.recv(1) == b"":
            closed += 1
    except OSError:
        closed += 1
print("closed", closed, "after", round(time.time() - t0, 1))
EOF
slow=$!
sleep 0.5
api GET /healthz
expect "the daemon answers while four clients hold silent connections" 200
wait $slow
check "silent connections are closed by the daemon within its timeout" \
	python3 -c "import sys; w=open('$tap_tmp/slow.out').read().split(); sys.exit(0 if w[0] == 'closed' and w[1] == '4' and float(w[3]) <= 7 else 1)"

# A flood above the connection limit: the extra connections are closed
# at once, and the daemon serves again when they are gone.
python3 - "$port" > "$tap_tmp/flood.out" 2>&1 <<'EOF'
import socket, sys
port = int(sys.argv[1])
socks, closed = [], 0
for _ in range(20):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    socks.append(s)
for s in socks[8:]:
    s.settimeout(2)
    try:
        if s.recv(1) == b"":
            closed += 1
    except OSError:
        closed += 1
print("closed", closed)
for s in socks:
    s.close()
EOF
check "connections above max_connections are closed at once" grep -qx "closed 12" "$tap_tmp/flood.out"
sleep 0.5
api GET /healthz
expect "the daemon serves after the flood" 200

# The renewal: 20 s after the first certificate.
i=0
while [ $i -lt 300 ]; do
	served > "$tap_tmp/now"
	if [ -s "$tap_tmp/now" ] && ! cmp -s "$tap_tmp/first" "$tap_tmp/now"; then
		break
	fi
	sleep 0.1
	i=$((i + 1))
done
took=$(($(date +%s) - start))
check "the daemon renews its certificate before it expires ($took s)" \
	sh -c "[ -s $tap_tmp/now ] && ! cmp -s $tap_tmp/first $tap_tmp/now && [ $took -lt 30 ]"
check "the renewed certificate has a new key" sh -c "
	[ \"\$(sed -n '/BEGIN PUBLIC/,\$p' $tap_tmp/first)\" != \"\$(sed -n '/BEGIN PUBLIC/,\$p' $tap_tmp/now)\" ]"
check "the key file is 0600" test "$(stat -c %a "$ps/tls/key.pem")" = 600
check "no temporary key is left behind" sh -c "! ls $ps/tls | grep -q next"
api GET /healthz
expect "the daemon serves with the renewed certificate" 200

# A restart keeps a certificate with a third of its life left.
policyd_stop
policyd_start || not_ok "the daemon restarts"
policyd_urls
served > "$tap_tmp/after"
check "a restart keeps the renewed certificate" cmp -s "$tap_tmp/now" "$tap_tmp/after"
check "hsmca-policyd stops cleanly" policyd_stop
[ "$tap_failed" -eq 0 ] || sed 's/^/# policyd: /' "$tap_tmp/policyd.log" | tail -30
tap_done
