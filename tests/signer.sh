#!/bin/sh
# hsmca-signerd end to end: a real signer on a SoftHSM2 token, driven by
# a client holding the MAC key.  Issuance per profile, every invariant's
# refusal (nothing signed, the refusal audited), authentication,
# idempotency, the sandbox as seen from outside, audit verification and
# a clean stop.
. "$top_srcdir/tests/tap.sh"
. "$top_srcdir/tests/signer-lib.sh"

signer_setup
# The client as another user needs a binary and a directory it can use.
mkdir -p "$tap_tmp/bin" "$tap_tmp/cl"
[ "$TESTCLIENT" = "$tap_tmp/bin/hsmca-testclient" ] || cp "$TESTCLIENT" "$tap_tmp/bin/"
TESTCLIENT=$tap_tmp/bin/hsmca-testclient
chmod 0755 "$tap_tmp/bin" "$TESTCLIENT"
[ -n "$client_user" ] && chown "$client_user" "$tap_tmp/cl"
cl=$tap_tmp/cl
log=$st/audit/audit.log

check "-n accepts the configuration" "$SIGNERD" -n -c "$conf"
sed 's/^pool_size = 4/pool_sise = 4/' "$conf" > "$tap_tmp/bad.conf"
line=$(grep -n '^pool_sise' "$tap_tmp/bad.conf" | cut -d: -f1)
check_fails "-n names file:line of an unknown setting" \
	"bad.conf:$line: unknown setting 'pool_sise'" "$SIGNERD" -n -c "$tap_tmp/bad.conf"
sed 's/^max_validity = 24h/max_validity = 24x/' "$conf" > "$tap_tmp/bad.conf"
check_fails "-n names a bad duration" "max_validity must be a duration" \
	"$SIGNERD" -n -c "$tap_tmp/bad.conf"

if ! signer_start; then
	echo "Bail out! hsmca-signerd did not start"
	sed 's/^/# /' "$tap_tmp/signerd.log"
	exit 99
fi
ok "the signer starts and answers health"
check "the signer logs the allocator it is linked with" \
	grep -Eq "$(allocator_expected "$SIGNERD")" "$tap_tmp/signerd.log"
client health > "$tap_tmp/health" 2>&1
check "health: token up" grep -q "^OK token_up=1" "$tap_tmp/health"
client info > "$tap_tmp/info" 2>&1
check "CA info: issuing key, ec-p256, its profiles" \
	grep -q "KEY name=issuing algorithm=ec-p256 .*profiles=svid,server,client,peer" "$tap_tmp/info"
check "CA info: root key with its usage limit" \
	grep -q "KEY name=root .*limit=3 profiles=subca" "$tap_tmp/info"

# --- issuance per profile ---------------------------------------------
bundle=$tap_tmp/bundle.pem
cat "$ca/root.pem" > "$bundle"
issue() { client issue --key issuing "$@"; }
der2pem() { openssl x509 -inform DER -in "$1" -out "$2"; }

check "svid issued" client --out "$cl/svid.der" issue --key issuing --profile svid --spki-gen ec-p256 \
	--san URI:spiffe://td.example/ns/prod/sa/web
der2pem "$cl/svid.der" "$tap_tmp/svid.pem"
check "svid verifies (openssl -x509_strict)" openssl verify -x509_strict \
	-CAfile "$bundle" -untrusted "$ca/intermediate.pem" "$tap_tmp/svid.pem"
openssl x509 -in "$tap_tmp/svid.pem" -noout -text > "$tap_tmp/svid.txt"
check "svid: SAN critical with the SPIFFE ID (empty subject)" sh -c \
	"grep -A1 'Subject Alternative Name: critical' '$tap_tmp/svid.txt' | grep -q 'URI:spiffe://td.example/ns/prod/sa/web'"
check "svid: keyUsage critical, digitalSignature only" sh -c \
	"grep -A1 'Key Usage: critical' '$tap_tmp/svid.txt' | grep -qx ' *Digital Signature'"
check "svid: EKU serverAuth and clientAuth" sh -c \
	"grep -A1 'Extended Key Usage' '$tap_tmp/svid.txt' | grep -q 'TLS Web Server Authentication, TLS Web Client Authentication'"
check "svid: basicConstraints critical CA:FALSE" sh -c \
	"grep -A1 'Basic Constraints: critical' '$tap_tmp/svid.txt' | grep -q 'CA:FALSE'"
check "svid: issuer is the intermediate's subject" test \
	"$(openssl x509 -in "$tap_tmp/svid.pem" -noout -issuer | sed 's/issuer=//')" = \
	"$(openssl x509 -in "$ca/intermediate.pem" -noout -subject | sed 's/subject=//')"
check "svid: AKI is the intermediate's SKI" test \
	"$(openssl x509 -in "$tap_tmp/svid.pem" -noout -ext authorityKeyIdentifier | tail -1 | tr -d ' ' | sed 's/^keyid://')" = \
	"$(openssl x509 -in "$ca/intermediate.pem" -noout -ext subjectKeyIdentifier | tail -1 | tr -d ' ')"
check "svid: CRL distribution point from the configuration" \
	grep -q "URI:http://ca.example.com/crl" "$tap_tmp/svid.txt"

check "server certificate issued (RSA-2048 subject key)" client --out "$cl/server.der" issue --key issuing --profile server \
	--spki-gen rsa-2048 --subject "/CN=api.example.com" \
	--san DNS:api.example.com
der2pem "$cl/server.der" "$tap_tmp/server.pem"
check "server certificate verifies for sslserver" openssl verify -x509_strict \
	-purpose sslserver -CAfile "$bundle" -untrusted "$ca/intermediate.pem" "$tap_tmp/server.pem"
check_fails "server certificate is not a client certificate" "error|unsuitable" \
	openssl verify -purpose sslclient -CAfile "$bundle" -untrusted "$ca/intermediate.pem" "$tap_tmp/server.pem"
check "client certificate issued (Ed25519 subject key)" client --out "$cl/client.der" issue --key issuing --profile client \
	--spki-gen ed25519 --san DNS:batch.example.com
der2pem "$cl/client.der" "$tap_tmp/client.pem"
check "client certificate verifies for sslclient" openssl verify -purpose sslclient \
	-CAfile "$bundle" -untrusted "$ca/intermediate.pem" "$tap_tmp/client.pem"
check "peer certificate issued and verifies both ways" sh -c \
	"$(if [ -n "$client_user" ]; then echo "runuser -u $client_user --"; fi) '$TESTCLIENT' -s '$sock_url' -k '$mac' \
	 --out '$cl/peer.der' issue --key issuing --profile peer --spki-gen ec-p384 \
	 --san DNS:mesh.example.com --san URI:spiffe://td.example/mesh >/dev/null &&
	 openssl x509 -inform DER -in '$cl/peer.der' -out '$tap_tmp/peer.pem' &&
	 openssl verify -purpose sslserver -CAfile '$bundle' -untrusted '$ca/intermediate.pem' '$tap_tmp/peer.pem' &&
	 openssl verify -purpose sslclient -CAfile '$bundle' -untrusted '$ca/intermediate.pem' '$tap_tmp/peer.pem'"

check "subca issued by the root key with name constraints" client --out "$cl/subca.der" \
	issue --key root --profile subca --spki-gen ec-p256 --subject "/CN=Delegated CA/O=team" \
	--san DNS:team.example.com --san URI:spiffe://td.example --not-after +86400
der2pem "$cl/subca.der" "$tap_tmp/subca.pem"
openssl x509 -in "$tap_tmp/subca.pem" -noout -text > "$tap_tmp/subca.txt"
check "subca: CA:TRUE, pathlen 0, critical" sh -c \
	"grep -A1 'Basic Constraints: critical' '$tap_tmp/subca.txt' | grep -q 'CA:TRUE, pathlen:0'"
check "subca: name constraints critical, DNS and URI" sh -c \
	"grep -A3 'Name Constraints: critical' '$tap_tmp/subca.txt' | tr '\n' ' ' | grep -q 'DNS:team.example.com.*URI:td.example'"
check "subca verifies against the root" openssl verify -x509_strict -CAfile "$bundle" "$tap_tmp/subca.pem"

# A CRL from the issuing key, listing the server certificate.
sserial=$(openssl x509 -in "$tap_tmp/server.pem" -noout -serial | sed 's/serial=//')
now=$(date +%s)
check "CRL signed" client --out "$cl/crl.der" crl --key issuing \
	--revoked "$(echo "$sserial" | tr A-F a-f):$((now - 10)):1" --number 7 --next-update +86400
check "CRL verifies with the intermediate and lists the serial" sh -c \
	"openssl crl -inform DER -in '$cl/crl.der' -CAfile '$ca/intermediate.pem' -noout 2>&1 | grep -q 'verify OK' &&
	 openssl crl -inform DER -in '$cl/crl.der' -noout -text | grep -q 'Serial Number: $sserial' &&
	 openssl crl -inform DER -in '$cl/crl.der' -noout -text | grep -q 'Key Compromise'"
openssl crl -inform DER -in "$cl/crl.der" -out "$tap_tmp/crl.pem"
check_fails "the revoked server certificate fails openssl verify -crl_check" "revoked" \
	openssl verify -crl_check -CAfile "$bundle" -untrusted "$ca/intermediate.pem" \
	-CRLfile "$tap_tmp/crl.pem" "$tap_tmp/server.pem"

# --- invariants: each refusal typed, nothing signed, refusal audited -----
signed_count() { grep -c '"outcome":"signed"' "$log"; }
refused() {
	# refused DESCRIPTION CODE CLIENT-ARGS...
	desc=$1; code=$2; shift 2
	before=$(signed_count)
	client "$@" > "$tap_tmp/ans" 2>&1
	rc=$?
	after=$(signed_count)
	if [ $rc -eq 2 ] && grep -q "^ERROR $code " "$tap_tmp/ans" &&
	    [ "$before" -eq "$after" ] &&
	    tail -3 "$log" | grep '"type":"refusal"' | grep -q "\"code\":\"$code\""; then
		ok "$desc: $code, nothing signed, audited"
	else
		not_ok "$desc (rc $rc, signed $before -> $after)"
		sed 's/^/# /' "$tap_tmp/ans"
		tail -2 "$log" | sed 's/^/# /'
	fi
}
svid() { echo issue --key issuing --profile svid --spki-gen ec-p256 "$@"; }
refused "invariant 2: a key that is not configured" unknown_key \
	issue --key nosuch --profile svid --spki-gen ec-p256 --san URI:spiffe://td.example/a
refused "invariant 3: a profile the key may not issue (CA from the issuing key)" profile_not_allowed \
	issue --key issuing --profile subca --spki-gen ec-p256 --subject /CN=evil --san DNS:x.example.com
refused "invariant 3: an unknown profile" profile_not_allowed \
	$(svid --san URI:spiffe://td.example/a) --profile codesign
refused "invariant 3: a CRL from a key that signs only certificates" object_kind_not_allowed \
	crl --key root --number 1
refused "invariant 3: RSA-1024 subject key" key_algorithm_not_allowed \
	issue --key issuing --profile server --spki-gen rsa-1024 --san DNS:a.example.com
refused "invariant 3: P-521 subject key" key_algorithm_not_allowed \
	issue --key issuing --profile server --spki-gen ec-p521 --san DNS:a.example.com
refused "invariant 3: secp256k1 subject key" key_algorithm_not_allowed \
	issue --key issuing --profile server --spki-gen ec-secp256k1 --san DNS:a.example.com
refused "invariant 3: Ed25519 from a key that does not allow it" key_algorithm_not_allowed \
	issue --key root --profile subca --spki-gen ed25519 --subject /CN=x --san DNS:x.example.com
refused "invariant 3: a DNS name outside the key's suffixes" name_not_allowed \
	issue --key issuing --profile server --spki-gen ec-p256 --san DNS:www.example.org
refused "invariant 3: a suffix look-alike (evilexample.com)" name_not_allowed \
	issue --key issuing --profile server --spki-gen ec-p256 --san DNS:evilexample.com
refused "invariant 3: another SPIFFE trust domain" name_not_allowed \
	$(svid --san URI:spiffe://other.example/a)
refused "invariant 3: an SVID with two SPIFFE IDs" name_not_allowed \
	$(svid --san URI:spiffe://td.example/a --san URI:spiffe://td.example/b)
refused "invariant 3: an SVID with the root SPIFFE ID" name_not_allowed \
	$(svid --san URI:spiffe://td.example)
refused "invariant 3: a SPIFFE ID with a dot-dot segment" name_not_allowed \
	$(svid --san URI:spiffe://td.example/a/../b)
refused "invariant 3: an IP address SAN" name_not_allowed \
	issue --key issuing --profile server --spki-gen ec-p256 --san IP:10.0.0.1
refused "invariant 3: a CN that is not a SAN" name_not_allowed \
	issue --key issuing --profile server --spki-gen ec-p256 --subject /CN=evil.example.org --san DNS:a.example.com
refused "invariant 3: a sub-CA without name constraints" name_not_allowed \
	issue --key root --profile subca --spki-gen ec-p256 --subject /CN=Unconstrained
refused "invariant 3: a sub-CA constrained outside the key's names" name_not_allowed \
	issue --key root --profile subca --spki-gen ec-p256 --subject /CN=x --san DNS:example.org
refused "invariant 4: validity longer than the profile's maximum" validity_not_allowed \
	$(svid --san URI:spiffe://td.example/a --not-after +90000)
refused "invariant 4: notBefore a day in the past" validity_not_allowed \
	$(svid --san URI:spiffe://td.example/a --not-before -86400 --not-after +60)
refused "invariant 4: notAfter before notBefore" validity_not_allowed \
	$(svid --san URI:spiffe://td.example/a --not-before +10 --not-after -10)
refused "invariant 4: a sub-CA outliving its maximum" validity_not_allowed \
	issue --key root --profile subca --spki-gen ec-p256 --subject /CN=x --san DNS:x.example.com --not-after +8640000

# Invariant 5: serials from the CSPRNG, 16 bytes, never twice.
for i in 1 2 3 4 5 6 7 8 9 10; do
	client $(svid --san URI:spiffe://td.example/s/$i) 2>&1 | sed -n 's/^OK serial=\([0-9a-f]*\) .*/\1/p'
done > "$tap_tmp/serials"
check "invariant 5: ten serials, all different, 128 bits, positive" sh -c \
	"test \$(sort -u '$tap_tmp/serials' | wc -l) -eq 10 &&
	 ! grep -qv '^[4-7][0-9a-f]\{31\}\$' '$tap_tmp/serials'"

# Invariant 6: authentication, freshness, uniqueness.
before=$(signed_count)
check_fails "invariant 6: a wrong MAC gets no answer" "TIMEOUT" \
	client -t 1000 --bad-mac $(svid --san URI:spiffe://td.example/mac)
check "invariant 6: the wrong MAC is audited as bad_mac" sh -c \
	"tail -1 '$log' | grep -q '\"code\":\"bad_mac\"'"
refused "invariant 6: a timestamp 60 s old" stale_request \
	--time-offset -60000 $(svid --san URI:spiffe://td.example/old)
refused "invariant 6: a timestamp 60 s ahead" stale_request \
	--time-offset 60000 $(svid --san URI:spiffe://td.example/new)
check "invariant 6: nothing was signed for those" test "$(signed_count)" -eq "$before"
head -c 1000 /dev/urandom > "$tap_tmp/garbage"
chmod 0644 "$tap_tmp/garbage"
check_fails "invariant 6: garbage bytes get no answer" "TIMEOUT" \
	client -t 1000 raw "$tap_tmp/garbage"
head -c 70000 /dev/zero > "$tap_tmp/huge"
chmod 0644 "$tap_tmp/huge"
check_fails "invariant 6: an oversized message gets no answer" "TIMEOUT" \
	client -t 1000 raw "$tap_tmp/huge"
check "the signer is still serving after them" client health

id=$(openssl rand -hex 16)
# The same request each time: a fixed key and fixed times.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null |
	openssl pkey -pubout -out "$tap_tmp/rep.pub"
chmod 0644 "$tap_tmp/rep.pub"
rnow=$(date +%s)
rep_req="issue --key issuing --profile svid --spki $tap_tmp/rep.pub
	--san URI:spiffe://td.example/repeat --not-before $rnow --not-after $((rnow + 3600))"
before=$(signed_count)
client --id "$id" --repeat 3 $rep_req > "$tap_tmp/rep" 2>&1
check "invariant 6: a repeated id gets the original answer three times" sh -c \
	"test \$(grep -c '^OK serial=' '$tap_tmp/rep') -eq 3 &&
	 test \$(sed -n 's/^OK serial=\([0-9a-f]*\) .*/\1/p' '$tap_tmp/rep' | sort -u | wc -l) -eq 1"
check "invariant 6: and exactly one signature" test "$(signed_count)" -eq $((before + 1))
check_fails "invariant 6: the same id for a different request is refused" "ERROR bad_message" \
	client --id "$id" $(svid --san URI:spiffe://td.example/other)

# Usage limit of the root key (3): one subca issued above, two more.
client issue --key root --profile subca --spki-gen ec-p256 --subject /CN=u2 \
	--san DNS:u2.example.com > /dev/null 2>&1
client issue --key root --profile subca --spki-gen ec-p256 --subject /CN=u3 \
	--san DNS:u3.example.com > /dev/null 2>&1
refused "usage limit: the fourth signature of the root key" usage_limit_reached \
	issue --key root --profile subca --spki-gen ec-p256 --subject /CN=u4 --san DNS:u4.example.com

# Invariant 7: every signature handed out is in the audit log.
missing=0
for s in $(cat "$tap_tmp/serials"); do
	grep -q "\"type\":\"issue\".*\"serial\":\"$s\"" "$log" || missing=$((missing + 1))
done
check "invariant 7: every serial handed out has its signed record" test "$missing" -eq 0
check "invariant 7: every signed record follows its intent" python3 -c "
import json,sys
recs=[json.loads(l) for l in open('$log')]
intents={r['seq']:r for r in recs if r['type']=='intent'}
bad=[r['seq'] for r in recs if r['type'] in ('issue','crl') and
     (r['intent_seq'] not in intents or intents[r['intent_seq']]['tbs_sha256']!=r['tbs_sha256'])]
sys.exit(1 if bad else 0)"

# --- the sandbox, seen from outside -----------------------------------
if [ -n "$signer_user" ]; then
	status=/proc/$signer_pid/status
	check "sandbox: runs as its own user" sh -c \
		"grep '^Uid:' $status | awk '{exit !(\$2==$(id -u "$signer_user") && \$3==\$2 && \$4==\$2 && \$5==\$2)}'"
	check "sandbox: NoNewPrivs 1" grep -q "^NoNewPrivs:[[:space:]]*1" "$status"
	check "sandbox: Seccomp 2 (filter)" grep -q "^Seccomp:[[:space:]]*2" "$status"
	check "sandbox: CapEff, CapPrm, CapBnd all 0" sh -c \
		"grep -q '^CapEff:[[:space:]]*0000000000000000' $status &&
		 grep -q '^CapPrm:[[:space:]]*0000000000000000' $status &&
		 grep -q '^CapBnd:[[:space:]]*0000000000000000' $status"
	check "sandbox: not dumpable (its /proc/PID/environ is root's)" sh -c \
		"test \$(stat -c %u /proc/$signer_pid/environ) -eq 0"
	check "sandbox: every thread is filtered" sh -c \
		"for t in /proc/$signer_pid/task/*/status; do grep -q '^Seccomp:[[:space:]]*2' \$t || exit 1; done"
	check "the socket directory is 0750, signer's user, client group" test \
		"$(stat -c '%a %U %G' "$st/sock")" = "750 $signer_user $client_user"
	cp "$mac" "$tap_tmp/stolen.key"
	chown "$other_user" "$tap_tmp/stolen.key"
	chmod 0600 "$tap_tmp/stolen.key"
	check_fails "a third user cannot connect, even holding the MAC key" "TIMEOUT" \
		runuser -u "$other_user" -- "$TESTCLIENT" -t 1500 -s "$sock_url" \
		-k "$tap_tmp/stolen.key" health
	check "the policy daemon's user can" client health
	check_fails "the policy user cannot read the PIN file" "denied" \
		runuser -u "$client_user" -- cat "$HSMCA_PIN_FILE"
	check_fails "the policy user cannot list the token directory" "denied" \
		runuser -u "$client_user" -- ls "$tok/tokens"
	check "each MAC key copy is readable by its daemon only" test \
		"$(stat -c '%a %U' "$mac") $(stat -c '%a %U' "$signer_mac")" = "600 $client_user 600 root"
	check_fails "a third user cannot read the MAC key" "denied" \
		runuser -u "$other_user" -- cat "$mac" "$signer_mac"
	check_fails "a third user cannot read the audit log" "denied" \
		runuser -u "$other_user" -- cat "$log"
else
	for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
		skip "sandbox and users: needs root"
	done
fi

# --- audit, stop, restart ---------------------------------------------
check "audit verify passes while the signer runs" audit_verify
check "checkpoints were written (every 10 records)" sh -c \
	"test \$(grep -c '\"type\":\"checkpoint\"' '$log') -ge 3"
check "SIGTERM: the signer drains and exits 0" signer_stop
check "the log ends with a stop record and a final checkpoint" sh -c \
	"tail -2 '$log' | head -1 | grep -q '\"type\":\"stop\"' &&
	 tail -1 '$log' | grep -q '\"type\":\"checkpoint\"'"
check "audit verify passes after the stop, nothing uncovered" sh -c \
	"'$HSMCA' audit verify --key '$ca/audit-key.pem' '$log' > '$tap_tmp/v' 2>&1 &&
	 ! grep -qi 'not covered' '$tap_tmp/v'"
check "PIN never appears in the log or the audit log" sh -c \
	"! grep -qF \"\$(cat '$HSMCA_PIN_FILE')\" '$tap_tmp/signerd.log' '$log'"

if signer_start; then
	ok "the signer restarts on its own audit log"
else
	not_ok "the signer restarts on its own audit log"
	sed 's/^/# /' "$tap_tmp/signerd.log" | tail -20
fi
before=$(signed_count)
client --id "$id" $rep_req > "$tap_tmp/rep2" 2>&1
check "after a restart a repeated id gets the original answer from the audit log" \
	test "$(sed -n 's/^OK serial=\([0-9a-f]*\) .*/\1/p' "$tap_tmp/rep2")" = \
	"$(sed -n '1s/^OK serial=\([0-9a-f]*\) .*/\1/p' "$tap_tmp/rep")"
check "and nothing new was signed" test "$(signed_count)" -eq "$before"
refused "the usage limit survives the restart" usage_limit_reached \
	issue --key root --profile subca --spki-gen ec-p256 --subject /CN=u5 --san DNS:u5.example.com
check "SIGTERM again" signer_stop
check "audit verify passes over both runs" audit_verify

tap_done
