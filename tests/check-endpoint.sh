#!/bin/sh
# hsmca check-endpoint against openssl s_server: a test CA with an
# intermediate, and leaves that are good for 30 days, near expiry (2 days),
# expired, self-signed, or for another SNI name (signed by the root: with
# -cert2, s_server sends no chain); plus a port that accepts and never
# answers, a closed port and a name that does not resolve.  Exit codes follow the plugin
# convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
. "$top_srcdir/tests/tap.sh"

d=$tap_tmp
command -v openssl >/dev/null 2>&1 || { echo "1..0 # SKIP openssl not installed"; exit 0; }
command -v python3 >/dev/null 2>&1 || { echo "1..0 # SKIP python3 not installed"; exit 0; }
python3 -c 'import cryptography' 2>/dev/null ||
	{ echo "1..0 # SKIP python3-cryptography not installed"; exit 0; }

pids=
cleanup() {
	for p in $pids; do
		kill "$p" 2>/dev/null
	done
	rm -rf "$tap_tmp"
}
trap cleanup EXIT

# check_exit CODE DESCRIPTION PATTERN COMMAND...: the command must exit
# with CODE and say PATTERN (an extended regex; "" for anything).
check_exit() {
	want=$1
	desc=$2
	pattern=$3
	shift 3
	run_logged "$@"
	rc=$?
	cp "$tap_tmp/out" "$d/last"	# for the checks that follow
	if [ "$rc" -ne "$want" ]; then
		not_ok "$desc (exit $rc, wanted $want)"
		sed 's/^/# /' "$tap_tmp/out"
	elif [ -n "$pattern" ] && ! grep -Eq -- "$pattern" "$tap_tmp/out"; then
		not_ok "$desc (no \"$pattern\")"
		sed 's/^/# /' "$tap_tmp/out"
	else
		ok "$desc"
	fi
}

# json DESCRIPTION PYTHON-EXPRESSION: on the last check_exit's output
# parsed as JSON (j, and e its endpoints), the expression must be true.
json() {
	if python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
e = j["endpoints"]
sys.exit(0 if eval(sys.argv[2]) else 1)' "$d/last" "$2" 2>"$d/json.err"; then
		ok "$1"
	else
		not_ok "$1 ($2)"
		sed 's/^/# /' "$d/last" "$d/json.err"
	fi
}

# --- certificates ---------------------------------------------------------

ecparam="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
cat > "$d/ext.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[good]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:good.test, DNS:localhost, IP:127.0.0.1, URI:spiffe://test.example/good
[near]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = DNS:near.test
[other]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.test
EOF
mkcert() { # NAME SUBJECT DAYS SECTION ISSUER: a leaf
	openssl req -new $ecparam -subj "$2" -keyout "$d/$1.key" \
	    -out "$d/$1.csr" 2>/dev/null &&
	openssl x509 -req -in "$d/$1.csr" -CA "$d/$5.pem" \
	    -CAkey "$d/$5.key" -CAcreateserial -days "$3" \
	    -extfile "$d/ext.cnf" -extensions "$4" -out "$d/$1.pem" 2>/dev/null
}
openssl req -x509 $ecparam -subj "/CN=Check Test Root" -days 60 \
    -config "$d/ext.cnf" -extensions ca -keyout "$d/root.key" \
    -out "$d/root.pem" 2>"$d/err" &&
openssl req -new $ecparam -subj "/CN=Check Test Intermediate" \
    -keyout "$d/inter.key" -out "$d/inter.csr" 2>/dev/null &&
openssl x509 -req -in "$d/inter.csr" -CA "$d/root.pem" -CAkey "$d/root.key" \
    -CAcreateserial -days 60 -extfile "$d/ext.cnf" -extensions ca \
    -out "$d/inter.pem" 2>/dev/null &&
mkcert good "/O=Check Test/CN=good.test" 30 good inter &&
mkcert near "/CN=near.test" 2 near inter &&
mkcert other "/CN=other.test" 30 other root &&
openssl req -x509 $ecparam -subj "/CN=self.test" -days 30 \
    -addext subjectAltName=DNS:self.test \
    -keyout "$d/self.key" -out "$d/self.pem" 2>/dev/null ||
	{ echo "Bail out! openssl could not make the test certificates"; cat "$d/err"; exit 99; }

# OpenSSL 3.0 cannot backdate a certificate: the expired one is made with
# python3-cryptography, signed by the same intermediate.
python3 - "$d" <<'EOF' || { echo "Bail out! python3 could not make the expired certificate"; exit 99; }
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
d = sys.argv[1]
ca_key = serialization.load_pem_private_key(open(d + "/inter.key", "rb").read(), None)
ca = x509.load_pem_x509_certificate(open(d + "/inter.pem", "rb").read())
key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired.test")]))
    .issuer_name(ca.subject)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(days=10))
    .not_valid_after(now - datetime.timedelta(days=1))
    .add_extension(x509.SubjectAlternativeName([x509.DNSName("expired.test")]), False)
    .sign(ca_key, hashes.SHA256()))
open(d + "/expired.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(d + "/expired.key", "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
EOF

# --- servers ----------------------------------------------------------------

# serve NAME ARGS...: an s_server on 127.0.0.1, a free port chosen by the
# kernel; sets port_NAME from its "ACCEPT 127.0.0.1:PORT" line.
serve() {
	name=$1
	shift
	openssl s_server -accept 127.0.0.1:0 -www "$@" \
	    > "$d/srv-$name.out" 2>&1 </dev/null &
	pids="$pids $!"
	i=0
	while [ $i -lt 100 ]; do
		p=$(sed -n 's/^ACCEPT 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' \
		    "$d/srv-$name.out" 2>/dev/null)
		[ -n "$p" ] && break
		sleep 0.1
		i=$((i + 1))
	done
	[ -n "$p" ] || { echo "Bail out! s_server $name did not start"; cat "$d/srv-$name.out"; exit 99; }
	eval "port_$name=$p"
}
serve good -cert "$d/good.pem" -key "$d/good.key" -cert_chain "$d/inter.pem" \
    -servername other.test -cert2 "$d/other.pem" -key2 "$d/other.key"
serve near -cert "$d/near.pem" -key "$d/near.key" -cert_chain "$d/inter.pem"
serve expired -cert "$d/expired.pem" -key "$d/expired.key" -cert_chain "$d/inter.pem"
serve self -cert "$d/self.pem" -key "$d/self.key"

# A port that accepts (the kernel does, from the backlog) and never
# answers, for at most 120 s; and a port nothing listens on.
python3 - > "$d/silent.port" <<'EOF' &
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
conns = []
end = time.time() + 120
while time.time() < end:
    s.settimeout(1)
    try:
        conns.append(s.accept()[0])	# held open, never read
    except socket.timeout:
        pass
EOF
pids="$pids $!"
i=0
while [ $i -lt 100 ] && [ ! -s "$d/silent.port" ]; do
	sleep 0.1
	i=$((i + 1))
done
port_silent=$(cat "$d/silent.port")
port_closed=$(python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
[ -n "$port_silent" ] && [ -n "$port_closed" ] ||
	{ echo "Bail out! no silent or closed port"; exit 99; }

CHECK="$HSMCA check-endpoint --ca-bundle $d/root.pem"
good=127.0.0.1:$port_good
near=127.0.0.1:$port_near
expired=127.0.0.1:$port_expired
self=127.0.0.1:$port_self
silent=127.0.0.1:$port_silent
closed=127.0.0.1:$port_closed

# --- one endpoint each ------------------------------------------------------
# Days are shown cut to one decimal: a leaf checked in the second it was
# made shows its full term (30.0, 2.0), any later one a tenth less.

check_exit 0 "good: OK, status line with subject, not-after and days" \
	"^OK - $good: CN=good\.test,O=Check Test, expires 20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z \((29\.9|30\.0) days\)$" \
	$CHECK "$good"
check "good: the details list the SANs of every kind" \
	grep -Fq "SAN:        DNS:good.test, DNS:localhost, URI:spiffe://test.example/good, IP:127.0.0.1" "$d/last"
check "good: the served intermediate is reported too" \
	grep -q "^  \[1\] subject:    CN=Check Test Intermediate$" "$d/last"
check "good: the verification passed, no name checked for an IP" \
	grep -q "^  verify: ok (no name checked)$" "$d/last"
check_exit 0 "good by name: localhost resolves, SNI and name check pass" \
	"^OK - localhost:$port_good: CN=good\.test" $CHECK "localhost:$port_good"
check_exit 2 "good with --servername wrong.test: CRITICAL hostname mismatch" \
	"^CRITICAL - $good: .*certificate verify failed: hostname mismatch" \
	$CHECK --servername wrong.test "$good"
check_exit 2 "good without --ca-bundle: the system store does not trust it" \
	"^CRITICAL - $good: .*certificate verify failed: unable to get local issuer certificate" \
	"$HSMCA" check-endpoint "$good"

check_exit 1 "near (2 days) with --warning 7d --critical 1d: WARNING" \
	"^WARNING - $near: CN=near\.test, expires .* \((1\.9|2\.0) days\): below the warning threshold of 7\.0 days$" \
	$CHECK --warning 7d --critical 1d "$near"
check_exit 2 "near with --warning 7d --critical 3d: CRITICAL" \
	"^CRITICAL - $near: .*below the critical threshold of 3\.0 days$" \
	$CHECK --warning 7d --critical 3d "$near"
check_exit 2 "near with the defaults (21d, 7d): CRITICAL" \
	"below the critical threshold of 7\.0 days" $CHECK "$near"
check_exit 0 "near with --warning 36h --critical 24h: OK" "^OK - $near" \
	$CHECK --warning 36h --critical 24h "$near"

check_exit 2 "expired: CRITICAL, certificate has expired" \
	"^CRITICAL - $expired: CN=expired\.test, expires .* \(-1\.0 days\): certificate verify failed: certificate has expired \(depth 0" \
	$CHECK "$expired"
check_exit 2 "self-signed: CRITICAL, the verification error named" \
	"^CRITICAL - $self: CN=self\.test, .*certificate verify failed: self-signed certificate \(depth 0, CN=self\.test\)" \
	$CHECK "$self"
check_exit 0 "self-signed, with itself as --ca-bundle: OK" "^OK - $self" \
	"$HSMCA" check-endpoint --ca-bundle "$d/self.pem" "$self"

t0=$(date +%s)
check_exit 3 "silent port: UNKNOWN, the handshake timed out" \
	"^UNKNOWN - $silent: TLS handshake with 127\.0\.0\.1 timed out after 2 s$" \
	$CHECK --timeout 2 "$silent"
t1=$(date +%s)
check "silent port: returned within --timeout + 2 s ($((t1 - t0)) s)" \
	test $((t1 - t0)) -le 4
check_exit 3 "closed port: UNKNOWN, connection refused" \
	"^UNKNOWN - $closed: connect to 127\.0\.0\.1 port $port_closed: Connection refused$" \
	$CHECK "$closed"
t0=$(date +%s)
check_exit 3 "unresolvable name: UNKNOWN, cannot resolve" \
	"^UNKNOWN - no-such-host\.invalid:443: (cannot resolve no-such-host\.invalid|resolving no-such-host\.invalid timed out)" \
	$CHECK --timeout 3 no-such-host.invalid:443
t1=$(date +%s)
check "unresolvable name: returned within --timeout + 2 s" \
	test $((t1 - t0)) -le 5

# --- SNI --------------------------------------------------------------------

check_exit 0 "SNI other.test: the other certificate is served and reported" \
	"^OK - $good: CN=other\.test, expires" \
	$CHECK --servername other.test "$good"
check "SNI other.test: its SAN, not good.test's" \
	grep -Fq "SAN:        DNS:other.test" "$d/last"
check_exit 0 "SNI good.test: the default certificate" \
	"^OK - $good: CN=good\.test" $CHECK --servername good.test "$good"

# --- several endpoints --------------------------------------------------------

check_exit 2 "good, near, expired, closed: the worst is CRITICAL" "" \
	$CHECK --warning 7d --critical 1d "$good" "$near" "$expired" "$closed"
check "four status lines, in order, before the details" sh -c "
	head -4 '$d/last' | cut -d' ' -f1,3 | tr '\n' ' ' |
	grep -qx 'OK $good: WARNING $near: CRITICAL $expired: UNKNOWN $closed: '"
check_exit 1 "good and near: WARNING" "" \
	$CHECK --warning 7d --critical 1d "$good" "$near"
check_exit 3 "good and closed: UNKNOWN" "" $CHECK "$good" "$closed"
check_exit 1 "near and closed: WARNING ranks above UNKNOWN" "" \
	$CHECK --warning 7d --critical 1d "$near" "$closed"
check_exit 0 "good twice: OK" "" $CHECK "$good" "localhost:$port_good"

# --- JSON -------------------------------------------------------------------

check_exit 2 "--json: the exit status is the same" "" \
	$CHECK --json --warning 7d --critical 1d "$good" "$near" "$self" "$closed"
json "--json: overall status and four endpoints" \
	'j["status"] == "CRITICAL" and j["exit"] == 2 and len(e) == 4'
json "--json: each endpoint's status and exit" \
	'[x["status"] for x in e] == ["OK", "WARNING", "CRITICAL", "UNKNOWN"] and [x["exit"] for x in e] == [0, 1, 2, 3]'
json "--json: the good endpoint's fields" \
	'e[0]["endpoint"] == "'"$good"'" and e[0]["host"] == "127.0.0.1" and e[0]["port"] == '"$port_good"' and e[0]["address"] == "127.0.0.1" and e[0]["servername"] is None and e[0]["error"] is None and e[0]["verified"] is True and e[0]["chain_length"] == 2'
json "--json: the leaf's subject, issuer and SANs" \
	'e[0]["certificates"][0]["subject"] == "CN=good.test,O=Check Test" and e[0]["certificates"][0]["issuer"] == "CN=Check Test Intermediate" and e[0]["certificates"][0]["san"] == {"dns": ["good.test", "localhost"], "uri": ["spiffe://test.example/good"], "ip": ["127.0.0.1"]}'
json "--json: days and seconds left, not-after" \
	'29.9 < e[0]["certificates"][0]["days_left"] <= 30 and 29 * 86400 < e[0]["certificates"][0]["seconds_left"] <= 30 * 86400 and e[0]["certificates"][0]["not_after"].endswith("Z") and len(e[0]["certificates"][0]["sha256"]) == 64'
json "--json: the intermediate's fields" \
	'e[0]["certificates"][1]["depth"] == 1 and e[0]["certificates"][1]["subject"] == "CN=Check Test Intermediate" and e[0]["certificates"][1]["issuer"] == "CN=Check Test Root"'
json "--json: near's error names the warning threshold" \
	'e[1]["error"] == "below the warning threshold of 7.0 days" and 1.9 < e[1]["certificates"][0]["days_left"] <= 2'
json "--json: self-signed: not verified, with the error text" \
	'e[2]["verified"] is False and e[2]["verify_error"].startswith("certificate verify failed: self-signed certificate") and e[2]["error"] == e[2]["verify_error"] and e[2]["certificates"][0]["san"]["dns"] == ["self.test"]'
json "--json: closed: the reason, no certificate" \
	'e[3]["error"].endswith("Connection refused") and e[3]["certificates"] == [] and e[3]["verified"] is None and e[3]["address"] is None'
check_exit 0 "--json with SNI: servername reported" "" \
	$CHECK --json --servername other.test "$good"
json "--json with SNI: the other certificate" \
	'e[0]["servername"] == "other.test" and e[0]["certificates"][0]["subject"] == "CN=other.test"'

# --- arguments ----------------------------------------------------------------

check_exit 0 "--help: usage on stdout" "^usage: hsmca check-endpoint" \
	"$HSMCA" check-endpoint --help
check_exit 3 "no endpoint: UNKNOWN with usage" "no endpoint given" \
	"$HSMCA" check-endpoint
check_exit 3 "an unknown option: UNKNOWN with usage" "usage:" \
	"$HSMCA" check-endpoint --nope "$good"
check_exit 3 "a bad duration: UNKNOWN" "--warning 7x: not a duration" \
	"$HSMCA" check-endpoint --warning 7x "$good"
check_exit 3 "--warning below --critical: UNKNOWN" "must not be below" \
	"$HSMCA" check-endpoint --warning 1d --critical 2d "$good"
check_exit 3 "a bad --timeout: UNKNOWN" "--timeout 0: too small" \
	"$HSMCA" check-endpoint --timeout 0 "$good"
check_exit 3 "no port: UNKNOWN" "HOST:PORT is needed" \
	"$HSMCA" check-endpoint 127.0.0.1
check_exit 3 "port 0: UNKNOWN" "the port must be a number from 1 to 65535" \
	"$HSMCA" check-endpoint 127.0.0.1:0
check_exit 3 "port 65536: UNKNOWN" "the port must be" \
	"$HSMCA" check-endpoint 127.0.0.1:65536
check_exit 3 "IPv6 without brackets: UNKNOWN" "needs brackets" \
	"$HSMCA" check-endpoint ::1:443
check_exit 3 "a bad name: UNKNOWN" "not a host name" \
	"$HSMCA" check-endpoint 'a b:443'
check_exit 3 "a missing --ca-bundle: UNKNOWN, named" \
	"^UNKNOWN - --ca-bundle $d/none\.pem: no certificate loaded" \
	"$HSMCA" check-endpoint --ca-bundle "$d/none.pem" "$good"
check_exit 3 "IPv6 literal in brackets: accepted (refused or unreachable)" \
	"^UNKNOWN - \[::1\]:$port_closed: connect to \[::1\] port $port_closed: " \
	"$HSMCA" check-endpoint "[::1]:$port_closed"

tap_done
