#!/bin/sh
# hsmca-policyd end to end: a real signer on a SoftHSM2 token, the policy
# daemon in front of it (under its own user when run as root), driven
# with curl and openssl.  Issuance with a bootstrap token, denials, mTLS
# renewal and revocation, the CRL, inventory, metrics, and the signer
# going away and coming back.
. "$top_srcdir/tests/tap.sh"
. "$top_srcdir/tests/signer-lib.sh"

. "$top_srcdir/tests/policyd-lib.sh"
signer_setup
signer_start || { cat "$tap_tmp/signerd.log"; echo "Bail out! signer"; exit 99; }
policyd_setup

check "hsmca-policyd -n accepts the configuration" as_policy "$POLICYD_RUN" -n -c "$pconf"
printf '[policyd]\nlisten = 127.0.0.1:0\nbogus = 1\n' > "$tap_tmp/bad.conf"
check_fails "hsmca-policyd -n names file:line of an unknown setting" \
	"bad.conf:3: unknown setting 'bogus'" "$POLICYD" -n -c "$tap_tmp/bad.conf"

if [ "$(id -u)" -eq 0 ]; then
	check_fails "hsmca-policyd refuses to serve as root" "refusing to run as root" \
		timeout 10 "$POLICYD" -d -c "$pconf"
else
	skip "the root refusal needs root"
fi

if policyd_start; then
	ok "hsmca-policyd issues its own TLS certificate through the signer and listens"
else
	not_ok "hsmca-policyd starts"
	sed 's/^/# /' "$tap_tmp/policyd.log"
	tap_done
	exit 1
fi
check "hsmca-policyd logs the allocator it is linked with" \
	grep -Eq "$(allocator_expected "$POLICYD")" "$tap_tmp/policyd.log"
policyd_urls
api GET /healthz
expect "/healthz: the signer is up" 200
check "/v1/ca/bundle serves the root" sh -c "$CURL $url/v1/ca/bundle | openssl x509 -noout -subject | grep -q 'Signer Test Root'"
check "/v1/ca/chain serves the issuing chain" sh -c "$CURL $url/v1/ca/chain | openssl x509 -noout -subject | grep -q 'Signer Test Issuing'"
check "the daemon's TLS certificate verifies for ca.example.com" \
	sh -c "echo | openssl s_client -connect 127.0.0.1:$port -servername ca.example.com -verify_hostname ca.example.com -CAfile $ca/root.pem -verify_return_error 2>&1 | grep -q 'Verify return code: 0'"

# --- issuance with a bootstrap token
tok=$(token web 1)
csr svid "ec -pkeyopt ec_paramgen_curve:P-256" "URI:spiffe://td.example/ns/web/api"
body svid svid 2h
api POST /v1/certificates "$tap_tmp/svid.json" -H "Authorization: Bearer $tok"
expect "an SVID is issued with a bootstrap token" 201
save svid
check "the SVID verifies with openssl verify -x509_strict" \
	openssl verify -x509_strict -CAfile "$ca/root.pem" -untrusted "$tap_tmp/svid.chain" "$tap_tmp/svid.pem"
check "the SVID has exactly the SPIFFE ID, no CA, serverAuth and clientAuth" sh -c "
	openssl x509 -in $tap_tmp/svid.pem -noout -ext subjectAltName,basicConstraints,extendedKeyUsage > $tap_tmp/svid.ext &&
	grep -q 'URI:spiffe://td.example/ns/web/api$' $tap_tmp/svid.ext &&
	grep -q 'TLS Web Server Authentication, TLS Web Client Authentication' $tap_tmp/svid.ext &&
	! grep -q 'CA:TRUE' $tap_tmp/svid.ext"
check "the SVID's keyUsage is critical digitalSignature alone, its subject empty, its SAN critical" sh -c "
	openssl x509 -in $tap_tmp/svid.pem -noout -ext keyUsage > $tap_tmp/svid.ku &&
	grep -q 'Key Usage: critical' $tap_tmp/svid.ku &&
	[ \"\$(sed -n 2p $tap_tmp/svid.ku | tr -d ' ')\" = DigitalSignature ] &&
	grep -q 'Subject Alternative Name: critical' $tap_tmp/svid.ext &&
	[ \"\$(openssl x509 -in $tap_tmp/svid.pem -noout -subject)\" = 'subject=' ]"
check "the SVID is for the CSR's key" sh -c "
	[ \"\$(openssl x509 -in $tap_tmp/svid.pem -noout -pubkey)\" = \"\$(openssl pkey -in $tap_tmp/svid.key -pubout)\" ]"
check "the SVID lives 2 hours, as asked" sh -c "
	nb=\$(date -d \"\$(openssl x509 -in $tap_tmp/svid.pem -noout -startdate | cut -d= -f2)\" +%s) &&
	na=\$(date -d \"\$(openssl x509 -in $tap_tmp/svid.pem -noout -enddate | cut -d= -f2)\" +%s) &&
	[ \$((na - nb)) -eq 7200 ]"
svid_serial=$(jfield serial)

api POST /v1/certificates "$tap_tmp/svid.json" -H "Authorization: Bearer $tok"
expect "a used-up bootstrap token is refused" 401 token_used
api POST /v1/certificates "$tap_tmp/svid.json" -H "Authorization: Bearer hsmca_nosuchtoken"
expect "an unknown bootstrap token is refused" 401 token_unknown
api POST /v1/certificates "$tap_tmp/svid.json"
expect "no credentials: 401" 401 authentication_required
# A use is spent with the pending row, not before the policy says yes.
tok=$(token web 1)
body svid subca
api POST /v1/certificates "$tap_tmp/svid.json" -H "Authorization: Bearer $tok"
expect "a single-use token's request that the policy denies is refused" 403 profile_not_allowed
body svid svid 2h
api POST /v1/certificates "$tap_tmp/svid.json" -H "Authorization: Bearer $tok"
expect "... and the token's one use is still there for an allowed request" 201
api POST /v1/certificates "$tap_tmp/svid.json" -H "Authorization: Bearer $tok"
expect "... which spends it" 401 token_used

# --- denials: each a 4xx, no row, no signature
tok=$(token web 20)
signed_before=$(grep -c '"type":"issue"' "$st/audit/audit.log")
csr other "ec -pkeyopt ec_paramgen_curve:P-256" "URI:spiffe://td.example/ns/db/x"
body other svid
api POST /v1/certificates "$tap_tmp/other.json" -H "Authorization: Bearer $tok"
expect "a SPIFFE ID outside the rule is refused" 403 name_not_allowed
csr dns "ec -pkeyopt ec_paramgen_curve:P-256" "DNS:www.example.com"
body dns server
api POST /v1/certificates "$tap_tmp/dns.json" -H "Authorization: Bearer $tok"
expect "a DNS name outside the rule is refused" 403 name_not_allowed
body svid svid 48h
api POST /v1/certificates "$tap_tmp/svid.json" -H "Authorization: Bearer $tok"
expect "a TTL above the rule's maximum is refused" 403 ttl_too_long
body svid subca
api POST /v1/certificates "$tap_tmp/svid.json" -H "Authorization: Bearer $tok"
expect "a profile the requester has no rule for is refused" 403 profile_not_allowed
csr weak "rsa:1024" "URI:spiffe://td.example/ns/web/api"
body weak svid
api POST /v1/certificates "$tap_tmp/weak.json" -H "Authorization: Bearer $tok"
expect "an RSA-1024 CSR is refused" 400 key_too_weak
csr k1 "ec -pkeyopt ec_paramgen_curve:secp256k1" "URI:spiffe://td.example/ns/web/api"
body k1 svid
api POST /v1/certificates "$tap_tmp/k1.json" -H "Authorization: Bearer $tok"
expect "a CSR on a curve we do not issue for is refused" 400 key_unsupported
python3 - "$tap_tmp/svid.csr" > "$tap_tmp/bad.json" <<'EOF'
import json, sys
pem = open(sys.argv[1]).read()
lines = pem.splitlines()
mid = list(lines[5])
mid[10] = 'A' if mid[10] != 'A' else 'B'
lines[5] = ''.join(mid)
print(json.dumps({"csr": "\n".join(lines) + "\n", "profile": "svid"}))
EOF
api POST /v1/certificates "$tap_tmp/bad.json" -H "Authorization: Bearer $tok"
if [ "$code" = 400 ]; then ok "a CSR with a damaged body or signature is refused ($(jfield error))"; else not_ok "damaged CSR: HTTP $code"; fi
python3 -c 'import json; print(json.dumps({"csr": "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n", "profile": "svid"}))' > "$tap_tmp/garbage.json"
api POST /v1/certificates "$tap_tmp/garbage.json" -H "Authorization: Bearer $tok"
expect "a garbage CSR is refused" 400 csr_malformed
printf '{"csr": ' > "$tap_tmp/trunc.json"
api POST /v1/certificates "$tap_tmp/trunc.json" -H "Authorization: Bearer $tok"
expect "truncated JSON is refused" 400 invalid_json
python3 -c 'print("{\"csr\": \"" + "A" * 1048576 + "\"}")' > "$tap_tmp/huge.json"
api POST /v1/certificates "$tap_tmp/huge.json" -H "Authorization: Bearer $tok"
if [ "$code" = 413 ]; then ok "a 1 MiB body is refused with 413"; else not_ok "1 MiB body: HTTP $code"; fi
signed_after=$(grep -c '"type":"issue"' "$st/audit/audit.log")
check "none of the refused requests reached the signer" test "$signed_before" -eq "$signed_after"

# --- peer certificate, mTLS renewal, revocation, CRL
csr peer "ec -pkeyopt ec_paramgen_curve:P-256" "DNS:api.web.example.com"
body peer peer 1h
api POST /v1/certificates "$tap_tmp/peer.json" -H "Authorization: Bearer $tok"
expect "a peer certificate is issued" 201
save peer
peer_serial=$(jfield serial)
check "the peer certificate verifies for both TLS purposes" sh -c "
	openssl verify -x509_strict -purpose sslserver -CAfile $ca/root.pem -untrusted $tap_tmp/peer.chain $tap_tmp/peer.pem &&
	openssl verify -x509_strict -purpose sslclient -CAfile $ca/root.pem -untrusted $tap_tmp/peer.chain $tap_tmp/peer.pem"
csr peer2 "ec -pkeyopt ec_paramgen_curve:P-256" "DNS:api.web.example.com"
body peer2 peer 1h
api POST /v1/certificates/renew "$tap_tmp/peer2.json" --cert "$tap_tmp/peer.pem" --key "$tap_tmp/peer.key"
expect "renewal over mTLS with the certificate being renewed" 201
save peer2
peer2_serial=$(jfield serial)
check "the renewal is a new certificate with a new serial" test "$peer2_serial" != "$peer_serial"
csr steal "ec -pkeyopt ec_paramgen_curve:P-256" "DNS:db.web.example.com"
body steal peer 1h
api POST /v1/certificates/renew "$tap_tmp/steal.json" --cert "$tap_tmp/peer.pem" --key "$tap_tmp/peer.key"
expect "renewing someone else's identity is refused" 403 renewal_not_allowed
api POST /v1/certificates/renew "$tap_tmp/peer2.json"
expect "renewal without a client certificate is refused" 401 authentication_required

echo '{"reason": "keyCompromise"}' > "$tap_tmp/revoke.json"
api POST "/v1/certificates/$svid_serial/revoke" "$tap_tmp/revoke.json" --cert "$tap_tmp/peer2.pem" --key "$tap_tmp/peer2.key"
expect "revoking another's certificate without being admin is refused" 403 not_allowed
api POST "/v1/certificates/$peer_serial/revoke" "$tap_tmp/revoke.json" --cert "$tap_tmp/peer.pem" --key "$tap_tmp/peer.key"
expect "the holder revokes its own certificate over mTLS" 200
api POST /v1/certificates/renew "$tap_tmp/peer2.json" --cert "$tap_tmp/peer.pem" --key "$tap_tmp/peer.key"
expect "a revoked client certificate is refused" 403 certificate_revoked
i=0
ok_crl=0
while [ $i -lt 50 ]; do
	$CURL -o "$tap_tmp/crl.der" "$url/v1/crl" &&
		openssl crl -inform DER -in "$tap_tmp/crl.der" -noout -text 2>/dev/null |
		grep -qi "serial number: *$peer_serial" && { ok_crl=1; break; }
	sleep 0.2
	i=$((i + 1))
done
if [ $ok_crl = 1 ]; then ok "/v1/crl lists the revoked serial"; else not_ok "/v1/crl lists the revoked serial"; fi
openssl crl -inform DER -in "$tap_tmp/crl.der" -out "$tap_tmp/crl.pem" 2>/dev/null
cat "$ca/root.pem" "$tap_tmp/peer.chain" > "$tap_tmp/trust.pem"
check "the CRL is signed by the issuing CA" openssl crl -in "$tap_tmp/crl.pem" -CAfile "$tap_tmp/trust.pem" -noout
check_fails "openssl verify -crl_check fails for the revoked certificate" "revoked" \
	openssl verify -crl_check -CAfile "$ca/root.pem" -untrusted "$tap_tmp/peer.chain" -CRLfile "$tap_tmp/crl.pem" "$tap_tmp/peer.pem"
check "openssl verify -crl_check passes for its renewal" \
	openssl verify -crl_check -CAfile "$ca/root.pem" -untrusted "$tap_tmp/peer.chain" -CRLfile "$tap_tmp/crl.pem" "$tap_tmp/peer2.pem"

# --- a sub-CA for another internal CA, under name constraints
ctok=$(token ca-team 1)
csr subca "ec -pkeyopt ec_paramgen_curve:P-256" "DNS:team.example.com,URI:spiffe://td.example"
body subca subca 1d
api POST /v1/certificates "$tap_tmp/subca.json" -H "Authorization: Bearer $ctok"
expect "a sub-CA is issued with its name constraints" 201
save subca
check "the sub-CA verifies, is a CA with path length 0 and critical name constraints" sh -c "
	openssl verify -x509_strict -CAfile $ca/root.pem $tap_tmp/subca.pem &&
	openssl x509 -in $tap_tmp/subca.pem -noout -ext basicConstraints,nameConstraints > $tap_tmp/subca.ext &&
	grep -q 'CA:TRUE, pathlen:0' $tap_tmp/subca.ext &&
	grep -q 'Name Constraints: critical' $tap_tmp/subca.ext &&
	grep -q 'DNS:team.example.com' $tap_tmp/subca.ext"
# leaf NAME DNS: a certificate the sub-CA signs itself, with openssl.
leaf() {
	printf 'basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\nsubjectAltName=DNS:%s\n' "$2" > "$tap_tmp/$1.ext"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$tap_tmp/$1.key" -subj "/CN=$2" -out "$tap_tmp/$1.csr" 2>/dev/null &&
	openssl x509 -req -in "$tap_tmp/$1.csr" -CA "$tap_tmp/subca.pem" \
		-CAkey "$tap_tmp/subca.key" -set_serial 0x$(openssl rand -hex 8) -days 1 \
		-extfile "$tap_tmp/$1.ext" -out "$tap_tmp/$1.pem" 2>/dev/null
}
leaf inside svc.team.example.com
leaf outside svc.other.example.com
check "a leaf the sub-CA signs inside its subtree verifies" \
	openssl verify -CAfile "$ca/root.pem" -untrusted "$tap_tmp/subca.pem" "$tap_tmp/inside.pem"
check_fails "a leaf the sub-CA signs outside its subtree fails openssl verify" "permitted subtree violation" \
	openssl verify -CAfile "$ca/root.pem" -untrusted "$tap_tmp/subca.pem" "$tap_tmp/outside.pem"
csr subca2 "ec -pkeyopt ec_paramgen_curve:P-256" "DNS:other.example.com"
body subca2 subca 1d
ctok=$(token ca-team 1)
api POST /v1/certificates "$tap_tmp/subca2.json" -H "Authorization: Bearer $ctok"
expect "a sub-CA for a subtree outside the rule is refused" 403 name_not_allowed

# --- admin inventory
atok=$(token admin 1)
csr admin "ec -pkeyopt ec_paramgen_curve:P-256" "URI:spiffe://td.example/admin"
body admin client 1h
api POST /v1/certificates "$tap_tmp/admin.json" -H "Authorization: Bearer $atok"
expect "an admin client certificate is issued" 201
save admin
api GET "/v1/certificates?status=revoked" --cert "$tap_tmp/admin.pem" --key "$tap_tmp/admin.key"
expect "the admin reads the inventory" 200
check "the inventory lists the revoked certificate with its reason time" \
	python3 -c "import json,sys; c=json.load(open('$tap_tmp/resp'))['certificates']; sys.exit(0 if [x['serial'] for x in c] == ['$peer_serial'] and c[0]['revoked_at'] else 1)"
api GET "/v1/certificates?expiring_within=90m" --cert "$tap_tmp/admin.pem" --key "$tap_tmp/admin.key"
check "expiring_within=90m lists the 1 h certificates, not the 2 h SVID" \
	python3 -c "import json,sys; c=[x['serial'] for x in json.load(open('$tap_tmp/resp'))['certificates']]; sys.exit(0 if '$peer2_serial' in c and '$svid_serial' not in c else 1)"
api GET /v1/certificates --cert "$tap_tmp/admin.pem" --key "$tap_tmp/admin.key"
check "the whole inventory lists the daemon's own TLS certificate with its name" \
	python3 -c "import json,sys; c=json.load(open('$tap_tmp/resp'))['certificates']; sys.exit(0 if any(x['requester'] == 'hsmca-policyd' and x['sans'] == ['DNS:ca.example.com'] for x in c) else 1)"
api GET /v1/certificates --cert "$tap_tmp/peer2.pem" --key "$tap_tmp/peer2.key"
expect "a non-admin cannot read the inventory" 403 not_allowed
check "no row is left pending and denied requests left none" sh -c "
	sqlite3 $ps/inventory.db \"select count(*) from certificates where status = 'pending'\" | grep -qx 0"

# --- metrics and health
api GET /metrics
check "/metrics counts the issued SVID and peer certificates" sh -c "
	grep -q '^hsmca_issued_total{profile=\"svid\"} 2\$' $tap_tmp/resp &&
	grep -q '^hsmca_renewed_total{profile=\"peer\"} 1\$' $tap_tmp/resp &&
	grep -q '^hsmca_signer_up 1\$' $tap_tmp/resp &&
	grep -q '^hsmca_denied_total{reason=\"token_used\"} 2\$' $tap_tmp/resp &&
	grep -q '^hsmca_denied_total{reason=\"name_not_allowed\"} [1-9]' $tap_tmp/resp"

# --- malformed HTTP, JSON and PEM: each a 4xx with a JSON error, no
# row, and the daemon keeps serving.
rows_before=$(sqlite3 "$ps/inventory.db" "select count(*) from certificates")
if python3 "$top_srcdir/tests/policyd-malformed.py" "$port" "$ca/root.pem" \
    "$tap_tmp/svid.csr" "$tap_tmp/svid.pem" "$tap_tmp/svid.key" "$tok" \
    > "$tap_tmp/malformed.out" 2>&1; then
	ok "$(grep -c '^ok' "$tap_tmp/malformed.out") malformed requests each get a 4xx with a JSON error"
else
	not_ok "malformed requests"
	sed 's/^/# /' "$tap_tmp/malformed.out"
fi
check "the malformed requests left no inventory row" \
	test "$(sqlite3 "$ps/inventory.db" "select count(*) from certificates")" = "$rows_before"
api GET /healthz
expect "the daemon serves after the malformed requests" 200

api GET /metrics
check "/metrics counts expiring certificates and the CA's notAfter" sh -c "
	grep -q '^hsmca_certificates_expiring{profile=\"peer\",within=\"24h\"} [1-9]' $tap_tmp/resp &&
	grep -q '^hsmca_certificate_soonest_expiry_timestamp_seconds [1-9]' $tap_tmp/resp &&
	grep -q '^hsmca_ca_not_after_timestamp_seconds{key=\"issuing\",depth=\"0\"' $tap_tmp/resp"
if command -v promtool > /dev/null; then
	check "promtool check metrics accepts /metrics" sh -c "promtool check metrics < $tap_tmp/resp"
else
	skip "promtool is not installed (Debian's prometheus package)"
fi

# --- SIGHUP: a bad policy keeps the old one
cp "$ps/policy.conf" "$tap_tmp/policy.good"
echo "[rule broken" >> "$ps/policy.conf"
kill -HUP "$pd_real"
sleep 0.5
check "a bad policy file on SIGHUP is refused with file:line and the old one stays" \
	grep -q "policy not reloaded, the old one stays: .*policy.conf:[0-9]*" "$tap_tmp/policyd.log"
cp "$tap_tmp/policy.good" "$ps/policy.conf"
csr svid3 "ec -pkeyopt ec_paramgen_curve:P-256" "URI:spiffe://td.example/ns/web/api3"
body svid3 svid
api POST /v1/certificates "$tap_tmp/svid3.json" -H "Authorization: Bearer $tok"
expect "issuance still works under the old policy" 201

# --- the signer goes away and comes back
signer_stop
api POST /v1/certificates "$tap_tmp/svid3.json" -H "Authorization: Bearer $tok"
expect "signer down: 503 signer_unavailable" 503 signer_unavailable
i=0
while [ $i -lt 80 ]; do
	api GET /healthz
	[ "$code" = 503 ] && break
	sleep 0.1
	i=$((i + 1))
done
expect "signer down: /healthz says so" 503
signer_start || { not_ok "signer restarts"; }
i=0
while [ $i -lt 100 ]; do
	api GET /healthz
	[ "$code" = 200 ] && break
	sleep 0.1
	i=$((i + 1))
done
expect "signer back: /healthz recovers without a restart" 200
api POST /v1/certificates "$tap_tmp/svid3.json" -H "Authorization: Bearer $tok"
expect "signer back: issuance works again" 201

real_pid=$pd_real
if [ -n "$real_pid" ] && [ -r "/proc/$real_pid/maps" ] && grep -q libcrypto "/proc/$real_pid/maps" &&
    ! grep -Eq 'softhsm|p11-kit-proxy|pkcs11' "/proc/$real_pid/maps"; then
	ok "hsmca-policyd has no PKCS#11 module mapped"
else
	not_ok "hsmca-policyd has no PKCS#11 module mapped (pid ${real_pid:-none})"
fi
if [ -n "$client_user" ]; then
	check "the policy user cannot read the PIN file" sh -c "! runuser -u $client_user -- cat $HSMCA_PIN_FILE > /dev/null 2>&1"
	check "the policy user cannot list the token directory" sh -c "! runuser -u $client_user -- ls $tok > /dev/null 2>&1"
else
	skip "privilege checks need root"
	skip "privilege checks need root"
fi
check "hsmca-policyd stops cleanly on SIGTERM" policyd_stop
audit_verify > /dev/null 2>&1 && ok "the signer's audit log verifies" || not_ok "the signer's audit log verifies"
# On failure, what the daemon said.
[ "$tap_failed" -eq 0 ] || sed 's/^/# policyd: /' "$tap_tmp/policyd.log" | tail -80
tap_done
