#!/bin/sh
# hsmca-testclient against its own fake signer (its hidden fake-server
# command): every answer path of the client, before hsmca-signerd exists.
# Every wait is bounded: the client by -t, each command by timeout(1), the
# fake server by its idle timeout, and the server is killed on exit.
. "$top_srcdir/tests/tap.sh"

TC=$top_builddir/tests/hsmca-testclient
[ -x "$TC" ] || { echo "Bail out! $TC is not built"; exit 99; }
sock=$tap_tmp/signer.sock
url=ipc://$sock
key=$tap_tmp/mac.key
(umask 077 && openssl rand -hex 32 > "$key") ||
	{ echo "Bail out! cannot write a MAC key"; exit 99; }

server_pid=
stop_server() {
	[ -n "$server_pid" ] || return 0
	kill "$server_pid" 2>/dev/null
	i=0
	while kill -0 "$server_pid" 2>/dev/null && [ $i -lt 50 ]; do
		i=$((i + 1))
		sleep 0.1
	done
	kill -9 "$server_pid" 2>/dev/null
	wait "$server_pid" 2>/dev/null
	server_pid=
}
trap 'stop_server; rm -rf "$tap_tmp"' EXIT
trap 'exit 1' INT TERM HUP

# start_server ARGS...: a fake signer in the background, bound before any
# client runs; it gives up after 60 s without a request.
start_server() {
	stop_server
	rm -f "$sock"
	"$TC" -s "$url" -k "$key" -t 60000 fake-server "$@" \
		>"$tap_tmp/server.log" 2>&1 &
	server_pid=$!
	i=0
	while [ ! -S "$sock" ]; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$server_pid" 2>/dev/null; then
			echo "Bail out! the fake server did not start"
			sed 's/^/# /' "$tap_tmp/server.log"
			exit 99
		fi
		sleep 0.1
	done
}

# wait_server: the server must end by itself within 10 s; its status.
wait_server() {
	i=0
	while kill -0 "$server_pid" 2>/dev/null; do
		i=$((i + 1))
		[ $i -le 100 ] || return 124
		sleep 0.1
	done
	wait "$server_pid"
	rc=$?
	server_pid=
	return $rc
}

tc() { timeout 60 "$TC" -s "$url" -k "$key" "$@"; }

# expect DESC STATUS REGEX COMMAND...: the command exits with STATUS and
# its standard output matches REGEX.  expect_err: its standard error.
expect_in() {
	stream=$1 desc=$2 want=$3 pattern=$4
	shift 4
	"$@" >"$tap_tmp/stdout" 2>"$tap_tmp/stderr"
	rc=$?
	if [ "$rc" -eq "$want" ] && grep -Eq -- "$pattern" "$tap_tmp/$stream"
	then
		ok "$desc"
	else
		not_ok "$desc (exit $rc, expected $want and /$pattern/ on $stream)"
		sed 's/^/# /' "$tap_tmp/stdout" "$tap_tmp/stderr"
	fi
}
expect() { expect_in stdout "$@"; }
expect_err() { expect_in stderr "$@"; }

idre='[0-9a-f]{32}'
start_server --count 1000

# --- issue -------------------------------------------------------------
expect "issue with a fresh P-256 key" 0 \
	"^OK serial=[0-9a-f]+ audit_seq=[0-9]+ id=$idre\$" \
	tc --out "$tap_tmp/c1.der" issue --key k1 --profile server \
	--subject "/CN=a.example/O=hsmca tests" --san DNS:a.example \
	--san URI:spiffe://td.example/ns/x --san IP:10.0.0.1 \
	--san email:ops@a.example --not-before -60 --not-after +7200
serial=$(sed -n 's/^OK serial=\([0-9a-f]*\) .*/\1/p' "$tap_tmp/stdout")
check "the certificate was written, and is DER X.509" \
	openssl x509 -inform DER -in "$tap_tmp/c1.der" -noout
got=$(openssl x509 -inform DER -in "$tap_tmp/c1.der" -noout -serial |
	sed 's/^serial=//' | tr A-F a-f)
check "its serial is the printed one" test -n "$serial" -a "$got" = "$serial"
openssl x509 -inform DER -in "$tap_tmp/c1.der" -noout -text > "$tap_tmp/c1.txt"
check "subject and SANs went as given" sh -c \
	"grep -q 'Subject: CN = a.example, O = hsmca tests' '$tap_tmp/c1.txt' &&
	 grep -q 'DNS:a.example, URI:spiffe://td.example/ns/x, IP Address:10.0.0.1, email:ops@a.example' '$tap_tmp/c1.txt'"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 \
	-out "$tap_tmp/k.pem" 2>/dev/null
openssl pkey -in "$tap_tmp/k.pem" -pubout -out "$tap_tmp/spki.pem"
openssl pkey -in "$tap_tmp/k.pem" -pubout -outform DER -out "$tap_tmp/spki.der"
expect "issue with --spki PEM" 0 "^OK serial=" \
	tc --out "$tap_tmp/c2.der" issue --key k1 --profile server \
	--spki "$tap_tmp/spki.pem"
check "the certificate carries the key of the PEM file" test \
	"$(openssl x509 -inform DER -in "$tap_tmp/c2.der" -noout -pubkey)" = \
	"$(cat "$tap_tmp/spki.pem")"
expect "issue with --spki DER" 0 "^OK serial=" \
	tc --out "$tap_tmp/c3.der" issue --key k1 --profile server \
	--spki "$tap_tmp/spki.der"
check "the certificate carries the key of the DER file" test \
	"$(openssl x509 -inform DER -in "$tap_tmp/c3.der" -noout -pubkey)" = \
	"$(cat "$tap_tmp/spki.pem")"

algs_ok=0
for a in ec-p256 ec-p384 ec-p521 ec-secp256k1 rsa-2048 rsa-1024 ed25519; do
	tc issue --key k1 --profile server --spki-gen $a \
		>"$tap_tmp/alg.out" 2>&1 && grep -q '^OK serial=' "$tap_tmp/alg.out" &&
		algs_ok=$((algs_ok + 1))
done
check "every --spki-gen algorithm is issued and verified" test $algs_ok -eq 7

expect "--repeat 3 --id: three identical answers for the same id" 0 \
	"^OK serial=[0-9a-f]+ audit_seq=[0-9]+ id=00112233445566778899aabbccddeeff\$" \
	tc --repeat 3 --id 00112233445566778899aabbccddeeff issue --key k1 \
	--profile server
check "... one line each, all the same" test \
	"$(sort -u "$tap_tmp/stdout" | wc -l)/$(wc -l < "$tap_tmp/stdout")" = "1/3"

# --- the other requests and the refusals --------------------------------
expect "health" 0 '^OK token_up=1 audit_seq=[0-9]+$' tc health
expect "crl: the fake server's error answer, exit 2" 2 '^ERROR bad_message ' \
	tc crl --key k1 --revoked 0a1b:1700000000:keyCompromise --number 7
expect "info: the fake server's error answer, exit 2" 2 '^ERROR bad_message ' \
	tc info --key k1
expect "--bad-mac: no answer, TIMEOUT, exit 3" 3 '^TIMEOUT$' \
	tc -t 500 --bad-mac health
check "... the server saw the MAC fail" \
	grep -q 'MAC does not verify' "$tap_tmp/server.log"
expect "--time-offset -120000: stale_request, exit 2" 2 '^ERROR stale_request ' \
	tc --time-offset -120000 health
expect "--time-offset +120000: stale_request, exit 2" 2 '^ERROR stale_request ' \
	tc --time-offset 120000 health
printf 'not an envelope' > "$tap_tmp/garbage"
expect "raw garbage: no answer, TIMEOUT, exit 3" 3 '^TIMEOUT$' \
	tc -t 500 raw "$tap_tmp/garbage"
expect "the server still answers after garbage" 0 '^OK token_up=1' tc health
rid=0123456789abcdef0123456789abcdef
expect "--save keeps the sealed request" 0 '^OK token_up=1' \
	tc --save "$tap_tmp/req.bin" --id $rid health
expect "raw replays it: an answer for the same id" 0 \
	"^ANSWER type=health-response id=$rid len=[0-9]+\$" \
	tc raw "$tap_tmp/req.bin"

# --- load ---------------------------------------------------------------
expect "load --count 50 --concurrency 4" 0 \
	'^load: 50 sent, 50 signed, 0 refused, 0 timeouts, [0-9]+\.[0-9] per second$' \
	tc --out "$tap_tmp/load.out" load --count 50 --concurrency 4 \
	--key k1 --profile server --san DNS:load.example
check "... 50 SIGNED lines" test \
	"$(grep -Ec "^SIGNED [0-9a-f]+ [0-9]+ $idre\$" "$tap_tmp/load.out")" -eq 50
check "... and nothing else" test "$(wc -l < "$tap_tmp/load.out")" -eq 50
check "... 50 distinct serials and request ids" test \
	"$(cut -d' ' -f2 "$tap_tmp/load.out" | sort -u | wc -l)/$(cut -d' ' -f4 "$tap_tmp/load.out" | sort -u | wc -l)" = "50/50"
stop_server

# --- answers that must not be believed ----------------------------------
start_server --count 1 --lie key
expect "a certificate for another key: MISMATCH, exit 1" 1 \
	'^MISMATCH .*public key differs' tc issue --key k1 --profile server
wait_server
check "the fake server ends after --count requests, status 0" test $? -eq 0
start_server --count 1 --lie serial
expect "a serial field unlike the certificate's: MISMATCH" 1 \
	'^MISMATCH certificate serial differs' tc issue --key k1 --profile server
start_server --count 1 --lie id
expect "an answer for another request id: MISMATCH" 1 \
	'^MISMATCH answer id' tc health
stop_server
rm -f "$sock"
expect "no signer: TIMEOUT, exit 3" 3 '^TIMEOUT$' tc -t 300 health

# --- usage --------------------------------------------------------------
expect_err "no -k: usage error" 1 'required' \
	timeout 60 "$TC" -s "$url" health
expect_err "--id not 32 hex digits" 1 '--id' tc --id 0011 health
expect_err "issue without --profile" 1 'profile' tc issue --key k1
expect_err "unknown --spki-gen" 1 'spki-gen' \
	tc issue --key k1 --profile p --spki-gen dsa-1024
expect_err "--subject without =" 1 'subject' \
	tc issue --key k1 --profile p --subject /CN
expect_err "bad --san" 1 'san' tc issue --key k1 --profile p --san X:y
expect_err "bad --revoked" 1 'revoked' tc crl --key k1 --revoked zz:1:1
expect_err "unknown command" 1 'unknown command' tc frobnicate
cp "$key" "$tap_tmp/open.key"
chmod 0644 "$tap_tmp/open.key"
expect_err "a MAC key file readable by others is refused" 1 'open\.key' \
	timeout 60 "$TC" -s "$url" -k "$tap_tmp/open.key" health

tap_done
