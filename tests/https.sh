#!/bin/sh
# policy/https.c end to end: tests/https-echo (the real listener with an
# echo handler) driven by curl, openssl s_client and small python3 clients,
# all on 127.0.0.1 with the port the server prints.  Certificates come from
# a throwaway CA made here with the openssl CLI.
. "$top_srcdir/tests/tap.sh"

ECHO=$top_builddir/tests/https-echo
d=$tap_tmp
command -v curl >/dev/null 2>&1 || { echo "1..0 # SKIP curl not installed"; exit 0; }
command -v openssl >/dev/null 2>&1 || { echo "1..0 # SKIP openssl not installed"; exit 0; }
command -v python3 >/dev/null 2>&1 || { echo "1..0 # SKIP python3 not installed"; exit 0; }

# Limits the server runs with (https-echo options).
MAX_BODY=4096
MAX_HEADERS=2048
MAX_CONN=6
TIMEOUT=2

# --- certificates -----------------------------------------------------
cat > "$d/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://test.example/client,DNS:client.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

newkey() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
	    -out "$1" 2>/dev/null && chmod 600 "$1"
}
# mkca NAME SUBJECT
mkca() {
	newkey "$d/$1.key" &&
	openssl req -x509 -new -config "$d/openssl.cnf" -extensions ca_ext \
	    -key "$d/$1.key" -subj "$2" -days 2 -out "$d/$1.pem" 2>/dev/null
}
# mkcert NAME CA EXT SUBJECT SERIAL
mkcert() {
	newkey "$d/$1.key" &&
	openssl req -new -config "$d/openssl.cnf" -key "$d/$1.key" \
	    -subj "$4" -out "$d/$1.csr" 2>/dev/null &&
	openssl x509 -req -in "$d/$1.csr" -CA "$d/$2.pem" -CAkey "$d/$2.key" \
	    -set_serial "$5" -days 2 -extfile "$d/openssl.cnf" \
	    -extensions "$3" -out "$d/$1.pem" 2>/dev/null
}
{ mkca ca "/CN=hsmca test CA" &&
  mkca otherca "/CN=some other CA" &&
  mkcert server ca server_ext "/CN=localhost" 4097 &&
  mkcert server2 ca server_ext "/CN=localhost" 4098 &&
  mkcert client ca client_ext "/O=hsmca test/CN=client one" 8193 &&
  mkcert stranger otherca client_ext "/CN=stranger" 8194; } ||
	{ echo "Bail out! cannot make test certificates"; exit 99; }

fingerprint() { openssl x509 -noout -fingerprint -sha256 -in "$1" | cut -d= -f2; }
fp1=$(fingerprint "$d/server.pem")
fp2=$(fingerprint "$d/server2.pem")

# --- helpers ----------------------------------------------------------
# jget FILE KEY: one field of a JSON object, "null" if absent or null,
# lists joined with ",".
jget() {
	python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print("<not json>")
    sys.exit(0)
v = d.get(sys.argv[2]) if isinstance(d, dict) else None
if v is None:
    print("null")
elif isinstance(v, list):
    print(",".join(str(x) for x in v))
else:
    print(v)
EOF
}

# check_eq DESCRIPTION WANT GOT
check_eq() {
	if [ "$2" = "$3" ]; then
		ok "$1"
	else
		not_ok "$1 (wanted \"$2\", got \"$3\")"
	fi
}

CURL="curl -sS --noproxy 127.0.0.1 --max-time 10 --cacert $d/ca.pem"
url() { echo "https://127.0.0.1:$port$1"; }
# status ARGS...: the HTTP status curl got (000 when none).
status() { rm -f "$d/body"; $CURL -o "$d/body" -w '%{http_code}' "$@" 2>"$d/curl.err"; }

pid=
start_echo() {
	HTTPS_ECHO_CERT=$d/server2.pem HTTPS_ECHO_KEY=$d/reload.key \
	HTTPS_ECHO_CA=$d/ca.pem "$ECHO" -b $MAX_BODY -H $MAX_HEADERS \
	    -c $MAX_CONN -t $TIMEOUT "$d/server.pem" "$d/server.key" \
	    "$d/ca.pem" > "$d/echo.out" 2> "$d/echo.err" &
	pid=$!
	port=
	i=0
	while [ $i -lt 100 ]; do
		port=$(sed -n 's/^PORT \([0-9][0-9]*\)$/\1/p' "$d/echo.out")
		[ -n "$port" ] && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$tap_tmp"
}
trap cleanup EXIT

# wait_for FILE PATTERN: up to 5 s for PATTERN to appear in FILE.
wait_for() {
	i=0
	while [ $i -lt 50 ]; do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

serves() { [ "$(status "$(url /ping)")" = 200 ]; }

# --- refusals at start-up ---------------------------------------------
cp "$d/server.key" "$d/open.key"
chmod 644 "$d/open.key"
check_fails "a key file readable by others is refused" "open.key: mode 0644" \
    "$ECHO" "$d/server.pem" "$d/open.key" "$d/ca.pem"
check_fails "a key that does not match the certificate is refused" \
    "does not match" "$ECHO" "$d/server.pem" "$d/client.key" "$d/ca.pem"

start_echo || { cat "$d/echo.err"; echo "Bail out! https-echo did not start"; exit 99; }
ok "https-echo listens on port $port"

# --- requests and their fields ----------------------------------------
st=$(status -D "$d/headers" "$(url '/hello%20world/a+b?q=x%2By+z&other=1')")
check_eq "GET answers 200" 200 "$st"
check_eq "GET: method" GET "$(jget "$d/body" method)"
check_eq "GET: decoded path, plus kept" "/hello world/a+b" "$(jget "$d/body" path)"
check_eq "GET: query parameter q decoded" "x+y z" "$(jget "$d/body" q)"
check_eq "GET: no body" 0 "$(jget "$d/body" body_len)"
check_eq "GET: no client certificate, no peer" null "$(jget "$d/body" peer_subject)"
case $(jget "$d/body" peer_addr) in
127.0.0.1:[0-9]*) ok "GET: peer address is ip:port" ;;
*) not_ok "GET: peer address is ip:port ($(jget "$d/body" peer_addr))" ;;
esac
tr -d '\r' < "$d/headers" > "$d/headers.txt"
check "reply has Cache-Control: no-store" grep -qi '^Cache-Control: no-store$' "$d/headers.txt"
check "reply has X-Content-Type-Options: nosniff" grep -qi '^X-Content-Type-Options: nosniff$' "$d/headers.txt"
check "reply has Content-Type: application/json" grep -qi '^Content-Type: application/json$' "$d/headers.txt"
check "reply has Content-Length" grep -qi '^Content-Length: [0-9]' "$d/headers.txt"

head -c 1000 /dev/zero | tr '\0' 'a' > "$d/post.txt"
st=$(status -H 'X-Echo: hello' --data-binary "@$d/post.txt" "$(url /post?q=1)")
check_eq "POST answers 200" 200 "$st"
check_eq "POST: method" POST "$(jget "$d/body" method)"
check_eq "POST: body length" 1000 "$(jget "$d/body" body_len)"
check_eq "POST: a request header reaches the handler" hello "$(jget "$d/body" x_echo)"

# --- client certificates ----------------------------------------------
st=$(status --cert "$d/client.pem" --key "$d/client.key" "$(url /whoami)")
check_eq "client certificate from our CA: 200" 200 "$st"
check_eq "client certificate: subject" "CN=client one,O=hsmca test" "$(jget "$d/body" peer_subject)"
check_eq "client certificate: URI and DNS SANs" \
    "URI:spiffe://test.example/client,DNS:client.test" "$(jget "$d/body" peer_sans)"
check_eq "client certificate: chain above it (the CA)" 1 "$(jget "$d/body" chain_len)"
for v in 1.2 1.3; do
	st=$(status --tlsv$v --tls-max $v --cert "$d/stranger.pem" \
	    --key "$d/stranger.key" "$(url /whoami)")
	if [ "$st" = 000 ] && ! grep -q peer_subject "$d/body" 2>/dev/null; then
		ok "TLS $v: client certificate from another CA fails the handshake"
	else
		not_ok "TLS $v: client certificate from another CA fails the handshake (status $st)"
	fi
done
serves && ok "serves after refused client certificates" ||
	not_ok "serves after refused client certificates"

# --- protocol versions ------------------------------------------------
for v in 1.2 1.3; do
	st=$($CURL -v -o "$d/body" -w '%{http_code}' --tlsv$v --tls-max $v \
	    "$(url /v)" 2> "$d/curl.err")
	if [ "$st" = 200 ] && grep -q "SSL connection using TLSv$v" "$d/curl.err"; then
		ok "TLS $v works"
	else
		not_ok "TLS $v works (status $st)"
		sed 's/^/# /' "$d/curl.err" | tail -5
	fi
done
# The client is allowed everything (SECLEVEL=0), so a failure is the
# server's refusal.
if timeout 10 openssl s_client -connect "127.0.0.1:$port" -tls1_1 \
    -cipher 'DEFAULT:@SECLEVEL=0' < /dev/null > "$d/s11.out" 2>&1; then
	not_ok "TLS 1.1 is refused"
	sed 's/^/# /' "$d/s11.out" | tail -5
else
	ok "TLS 1.1 is refused"
fi

# --- limits ------------------------------------------------------------
head -c $((MAX_BODY * 2)) /dev/zero | tr '\0' 'b' > "$d/big.txt"
st=$(status -H 'Expect:' --data-binary "@$d/big.txt" "$(url /big)")
check_eq "body over max_body: 413" 413 "$st"
st=$(status -H 'Expect: 100-continue' --data-binary "@$d/big.txt" "$(url /big)")
check_eq "body over max_body with Expect: 100-continue: 413" 413 "$st"
serves && ok "serves after a body too large" || not_ok "serves after a body too large"
big=$(head -c $((MAX_HEADERS + 100)) /dev/zero | tr '\0' 'h')
st=$(status -H "X-Big: $big" "$(url /headers)")
check_eq "headers over max_headers: 400 (evhttp's answer)" 400 "$st"
serves && ok "serves after headers too large" || not_ok "serves after headers too large"

# --- methods and paths -------------------------------------------------
check_eq "PUT: 405" 405 "$(status -X PUT --data x "$(url /x)")"
check_eq "DELETE: 405" 405 "$(status -X DELETE "$(url /x)")"
check "405 names the allowed methods" sh -c \
    "$CURL -D - -o /dev/null -X PUT --data x '$(url /x)' | tr -d '\r' | grep -qi '^Allow: GET, POST$'"
check_eq "unknown method: 501 (evhttp's answer)" 501 "$(status -X FROB "$(url /x)")"
check_eq "path with %00: 400" 400 "$(status "$(url /a%00b)")"
check_eq "path with a bad escape: 400" 400 "$(status "$(url /a%zzb)")"
check_eq "malformed query: 400" 400 "$(status "$(url '/x?novalue')")"
check_eq "error answers are JSON with a code" bad_path \
    "$(status "$(url /a%00b)" >/dev/null; jget "$d/body" error)"

# --- keep-alive ----------------------------------------------------------
$CURL -v -o /dev/null -o /dev/null "$(url /one)" "$(url /two)" 2> "$d/ka.err"
check "two URLs in one curl reuse the connection" \
    grep -q 'Re-using existing connection' "$d/ka.err"

# --- asynchronous replies and aborts -------------------------------------
t0=$(date +%s)
st=$(status "$(url /slow)")
t1=$(date +%s)
check_eq "/slow: asynchronous reply is 200" 200 "$st"
check_eq "/slow: reply carries the request" /slow "$(jget "$d/body" path)"
[ $((t1 - t0)) -ge 1 ] && ok "/slow took about a second" ||
	not_ok "/slow took about a second ($((t1 - t0)) s)"
$CURL --max-time 1 -o /dev/null "$(url /abort-probe)" 2>/dev/null
rc=$?
check_eq "/abort-probe: the client gives up (curl timeout)" 28 "$rc"
check "/abort-probe: the abort callback ran" wait_for "$d/echo.out" '^ABORTED$'
check_eq "/abort-probe: the abort callback ran once" 1 "$(grep -c '^ABORTED$' "$d/echo.out")"
$CURL --max-time 0.5 -o /dev/null "$(url /slow)" 2>/dev/null
check "/slow given up: aborted before its timer" wait_for "$d/echo.out" '^SLOW-ABORTED$'
sleep 1
serves && ok "serves after aborted requests" || not_ok "serves after aborted requests"

# --- idle and slow clients --------------------------------------------------
cat > "$d/idle.py" <<'EOF'
import socket, ssl, sys, time
port, ca, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", port), timeout=15)
if mode == "half":
    ctx = ssl.create_default_context(cafile=ca)
    s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    s.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\n")
t0 = time.monotonic()
try:
    while s.recv(4096):
        pass
except (ssl.SSLError, OSError):
    pass
print("%.1f" % (time.monotonic() - t0))
EOF
for mode in tcp half; do
	secs=$(timeout 20 python3 "$d/idle.py" "$port" "$d/ca.pem" $mode 2>&1)
	if python3 -c "import sys; sys.exit(0 if float('$secs') <= $TIMEOUT + 2 else 1)" 2>/dev/null; then
		ok "$mode client sending nothing more: closed after ${secs} s"
	else
		not_ok "$mode client sending nothing more: closed within $((TIMEOUT + 2)) s ($secs)"
	fi
done
serves && ok "serves after idle clients" || not_ok "serves after idle clients"

# --- connection limit ---------------------------------------------------------
cat > "$d/flood.py" <<'EOF'
import socket, ssl, sys, time, json
port, ca, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)

def count(t):
    """GET /count on t; the connections field of the answer."""
    t.sendall(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = t.recv(4096)
        if not chunk:
            raise OSError("closed")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, v = line.split(b":", 1)
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = t.recv(4096)
        if not chunk:
            raise OSError("closed")
        body += chunk
    return json.loads(body)["connections"]

held, refused, slowest, counts = [], 0, 0.0, []
for i in range(n):
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        # TLS 1.3: the handshake can look done to the client before the
        # server has said anything; a round trip tells.
        counts.append(count(t))
        held.append(t)
    except (ssl.SSLError, OSError):
        refused += 1
        slowest = max(slowest, time.monotonic() - t0)
        s.close()
for t in held:
    counts.append(count(t))
for t in held:
    t.close()
print(len(held), refused, "%.2f" % slowest, max(counts) if counts else -1)
EOF
set -- $(timeout 60 python3 "$d/flood.py" "$port" "$d/ca.pem" $((MAX_CONN + 5)) 2>"$d/flood.err")
sed 's/^/# /' "$d/flood.err"
check_eq "flood: max_connections connections served" $MAX_CONN "$1"
check_eq "flood: the extra ones closed" 5 "$2"
if python3 -c "import sys; sys.exit(0 if float('$3') < 1 else 1)" 2>/dev/null; then
	ok "flood: extra connections closed at once (${3} s)"
else
	not_ok "flood: extra connections closed at once ($3)"
fi
check_eq "flood: /count at most the limit" $MAX_CONN "$4"
i=0
while [ $i -lt 50 ] && ! serves; do sleep 0.1; i=$((i + 1)); done
serves && ok "serves after the flood" || not_ok "serves after the flood"
i=0
while [ $i -lt 50 ]; do
	status "$(url /count)" > /dev/null
	[ "$(jget "$d/body" connections)" = 1 ] && break
	sleep 0.1
	i=$((i + 1))
done
check_eq "connections counted down after the flood" 1 "$(jget "$d/body" connections)"

# --- reload --------------------------------------------------------------------
served_fp() {
	timeout 10 openssl s_client -connect "127.0.0.1:$port" -showcerts \
	    < /dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 |
	    cut -d= -f2
}
check_eq "before reload: the first certificate" "$fp1" "$(served_fp)"
st=$(status "$(url /reload)")
check_eq "reload with a missing key file fails" 500 "$st"
check "reload failure names the key file" grep -q 'reload.key' "$d/body"
check_eq "after a failed reload: still the first certificate" "$fp1" "$(served_fp)"
cp "$d/server2.key" "$d/reload.key"
chmod 640 "$d/reload.key"
st=$(status "$(url /reload)")
check_eq "reload with a group-readable key fails" 500 "$st"
check "reload failure names the mode" grep -q 'mode 0640' "$d/body"
chmod 600 "$d/reload.key"
st=$(status "$(url /reload)")
check_eq "reload with the new certificate and key" 200 "$st"
check_eq "after reload: a new connection sees the new certificate" "$fp2" "$(served_fp)"
check_eq "after reload: requests still verify against the CA" 200 "$(status "$(url /after)")"

# --- shutdown --------------------------------------------------------------------
kill -TERM "$pid"
i=0
while [ $i -lt 100 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
if kill -0 "$pid" 2>/dev/null; then
	not_ok "SIGTERM ends https-echo"
else
	wait "$pid"
	rc=$?
	pid=
	check_eq "SIGTERM ends https-echo with status 0" 0 "$rc"
fi
check "https-echo freed everything and said so" grep -q '^EXIT 0$' "$d/echo.out"
if grep -q 'Sanitizer\|runtime error' "$d/echo.err"; then
	not_ok "no sanitizer report"
	sed 's/^/# /' "$d/echo.err" | head -40
else
	ok "no sanitizer report"
fi

tap_done
