#!/bin/sh
# hsmca ceremony end to end: keys made in a fresh SoftHSM2 token, the
# chain verified by OpenSSL and GnuTLS, and every refusal.
. "$top_srcdir/tests/tap.sh"

"$top_srcdir/softhsm-config/hsmca-softhsm-token" -l ceremony "$tap_tmp/tok" >/dev/null ||
	{ echo "Bail out! token"; exit 99; }
. "$tap_tmp/tok/env"
out=$tap_tmp/out1
mkdir "$out"
cer() { "$HSMCA" ceremony --module "$HSMCA_MODULE" --token "$HSMCA_TOKEN_URI" "$@"; }

check "ceremony with name constraints" \
	cer --pin-file "$HSMCA_PIN_FILE" --out "$out" \
	--root-subject "/CN=Test Root/O=hsmca tests" \
	--intermediate-subject "/CN=Test Issuing/O=hsmca tests" \
	--permitted-dns example.com --permitted-uri-domain td.example
cp "$tap_tmp/out" "$tap_tmp/ceremony.log"

check "openssl verify -x509_strict" \
	openssl verify -x509_strict -CAfile "$out/root.pem" "$out/intermediate.pem"
check "chain.pem is intermediate then root" sh -c \
	"openssl crl2pkcs7 -nocrl -certfile '$out/chain.pem' | openssl pkcs7 -print_certs -noout |
	 grep subject= | tr '\n' '|' | grep -q 'Test Issuing.*Test Root'"
if [ -n "$CERTTOOL" ] && [ -x "$CERTTOOL" ]; then
	check "certtool --verify-profile=high accepts the chain" sh -c \
		"'$CERTTOOL' --verify --verify-profile=high \
		 --load-ca-certificate '$out/root.pem' --infile '$out/intermediate.pem' |
		 grep -q 'Verified. The certificate is trusted'"
	check "certtool --verify-chain --verify-profile=high" sh -c \
		"'$CERTTOOL' --verify-chain --verify-profile=high --infile '$out/chain.pem' |
		 grep -q 'Verified. The certificate is trusted'"
else
	skip "certtool not installed (gnutls-bin)"
	skip "certtool not installed (gnutls-bin)"
fi

openssl x509 -in "$out/intermediate.pem" -noout -text > "$tap_tmp/int.txt"
openssl x509 -in "$out/root.pem" -noout -text > "$tap_tmp/root.txt"
check "intermediate: basicConstraints critical, CA, pathlen 0" sh -c \
	"grep -A1 'Basic Constraints: critical' '$tap_tmp/int.txt' | grep -q 'CA:TRUE, pathlen:0'"
check "intermediate: keyUsage critical, certificate and CRL signing only" sh -c \
	"grep -A1 'Key Usage: critical' '$tap_tmp/int.txt' | grep -qx ' *Certificate Sign, CRL Sign'"
check "intermediate: name constraints critical with DNS and URI" sh -c \
	"grep -A3 'Name Constraints: critical' '$tap_tmp/int.txt' | tr '\n' ' ' |
	 grep -q 'DNS:example.com.*URI:td.example'"
check "root: basicConstraints critical, CA, no path length" sh -c \
	"grep -A1 'Basic Constraints: critical' '$tap_tmp/root.txt' | grep -qx ' *CA:TRUE'"
check "root: keyUsage critical" grep -q 'Key Usage: critical' "$tap_tmp/root.txt"
ski() { openssl x509 -in "$1" -noout -ext subjectKeyIdentifier | tail -1 | tr -d ' '; }
aki() { openssl x509 -in "$1" -noout -ext authorityKeyIdentifier | tail -1 | tr -d ' ' | sed 's/^keyid://'; }
check "intermediate AKI is the root's SKI" test "$(aki "$out/intermediate.pem")" = "$(ski "$out/root.pem")"
check "root AKI is its own SKI" test "$(aki "$out/root.pem")" = "$(ski "$out/root.pem")"
# SKI is SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2, method 1):
# for P-256 those are the last 65 bytes of the SPKI, the uncompressed point.
point_sha1() {
	openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER |
	tail -c 65 | openssl dgst -sha1 -binary | od -An -tx1 | tr -d ' \n' | tr a-f A-F
}
check "SKI is the SHA-1 of the public key bits" test \
	"$(ski "$out/intermediate.pem" | tr -d ':')" = "$(point_sha1 "$out/intermediate.pem")"
check "root signed with ECDSA-SHA384 by default" grep -q 'ecdsa-with-SHA384' "$tap_tmp/int.txt"
check "serials are 16 bytes or fewer and differ" sh -c \
	"a=\$(openssl x509 -in '$out/root.pem' -noout -serial); b=\$(openssl x509 -in '$out/intermediate.pem' -noout -serial);
	 test \"\$a\" != \"\$b\" && test \${#a} -le 39"
fp=$(openssl x509 -in "$out/root.pem" -noout -fingerprint -sha256 | sed 's/.*=//')
check "printed root fingerprint matches openssl" grep -q "root .*Fingerprint=$fp" "$tap_tmp/ceremony.log"
fp=$(openssl pkey -pubin -in "$out/audit-key.pem" -outform DER | openssl dgst -sha256 -r | cut -c1-64 | tr a-f A-F | sed 's/../&:/g; s/:$//')
check "audit key is a public key with the printed fingerprint" grep -q "audit key .*Fingerprint=$fp" "$tap_tmp/ceremony.log"
check "audit key is P-256 by default" sh -c \
	"openssl pkey -pubin -in '$out/audit-key.pem' -noout -text | grep -q 'prime256v1'"
check "the token holds three private keys, none of them extractable" sh -c \
	"pkcs11-tool --module '$HSMCA_MODULE' --token-label ceremony -l --pin \$(cat '$HSMCA_PIN_FILE') -O --type privkey 2>/dev/null > '$tap_tmp/objs';
	 test \$(grep -c 'Private Key Object' '$tap_tmp/objs') -eq 3 &&
	 test \$(grep -c 'never extractable' '$tap_tmp/objs') -eq 3 &&
	 grep -q 'hsmca-root' '$tap_tmp/objs' && grep -q 'hsmca-intermediate' '$tap_tmp/objs' &&
	 grep -q 'hsmca-audit' '$tap_tmp/objs'"

sum_before=$(cat "$out"/*.pem | openssl dgst -sha256)
check_fails "a second ceremony into the same directory is refused" \
	"exists; the ceremony never overwrites" cer --pin-file "$HSMCA_PIN_FILE" --out "$out"
check "nothing was overwritten" test "$sum_before" = "$(cat "$out"/*.pem | openssl dgst -sha256)"
mkdir "$tap_tmp/out2"
check_fails "reusing key labels is refused" "label hsmca-root is already used" \
	cer --pin-file "$HSMCA_PIN_FILE" --out "$tap_tmp/out2"
check "and no file was written" test -z "$(ls -A "$tap_tmp/out2")"

cat > "$tap_tmp/c.conf" <<CONF
[ceremony]
label-prefix = cfg
root-key = rsa-3072
intermediate-key = ec-p384
audit-key = ed25519
root-subject = /CN=Config Root
intermediate-subject = /CN=Config Issuing
root-days = 400
intermediate-days = 90
CONF
mkdir "$tap_tmp/out3"
check "ceremony from a config file (RSA-3072 root, Ed25519 audit key)" \
	cer --pin-file "$HSMCA_PIN_FILE" --out "$tap_tmp/out3" --config "$tap_tmp/c.conf"
check "config-file chain verifies" \
	openssl verify -x509_strict -CAfile "$tap_tmp/out3/root.pem" "$tap_tmp/out3/intermediate.pem"
check "root key is RSA 3072" sh -c \
	"openssl x509 -in '$tap_tmp/out3/root.pem' -noout -text | grep -q 'Public-Key: (3072 bit)'"
check "audit key is Ed25519" sh -c \
	"openssl pkey -pubin -in '$tap_tmp/out3/audit-key.pem' -noout -text | grep -q ED25519"
check "intermediate lives 90 days" sh -c \
	"openssl x509 -in '$tap_tmp/out3/intermediate.pem' -noout -checkend $((89 * 86400)) &&
	 ! openssl x509 -in '$tap_tmp/out3/intermediate.pem' -noout -checkend $((91 * 86400))"

printf 'root-key = ec-p256\nbogus = 1\n' > "$tap_tmp/bad.conf"
check_fails "an unknown config setting names file and line" "bad.conf:2" \
	cer --pin-file "$HSMCA_PIN_FILE" --out "$tap_tmp/out3" --config "$tap_tmp/bad.conf"
mkdir "$tap_tmp/out4"
check_fails "Ed25519 CA keys are refused" "Ed25519 only for the audit key" \
	cer --pin-file "$HSMCA_PIN_FILE" --out "$tap_tmp/out4" --root-key ed25519
check_fails "an intermediate outliving the root is refused" "outlive the root" \
	cer --pin-file "$HSMCA_PIN_FILE" --out "$tap_tmp/out4" --label-prefix life \
	--root-days 10 --intermediate-days 20
cp "$HSMCA_PIN_FILE" "$tap_tmp/pin-open"
chmod 644 "$tap_tmp/pin-open"
check_fails "a PIN file readable by others is refused" "group or other" \
	cer --pin-file "$tap_tmp/pin-open" --out "$tap_tmp/out4" --label-prefix p
printf 'wrong-pin\n' > "$tap_tmp/pin-wrong"
chmod 600 "$tap_tmp/pin-wrong"
check_fails "a wrong PIN is named" "PIN incorrect" \
	cer --pin-file "$tap_tmp/pin-wrong" --out "$tap_tmp/out4" --label-prefix p
check_fails "a token that is not there is named" "no token matches" \
	"$HSMCA" ceremony --module "$HSMCA_MODULE" --token "pkcs11:token=absent" \
	--pin-file "$HSMCA_PIN_FILE" --out "$tap_tmp/out4"
check_fails "a bad subject is refused" "subject is not of the form" \
	cer --pin-file "$HSMCA_PIN_FILE" --out "$tap_tmp/out4" --root-subject "CN=x"
check_fails "bad days are refused" "too large" \
	cer --pin-file "$HSMCA_PIN_FILE" --out "$tap_tmp/out4" --root-days 99999999
check "no key was made by the refused runs" sh -c \
	"pkcs11-tool --module '$HSMCA_MODULE' --token-label ceremony -l --pin \$(cat '$HSMCA_PIN_FILE') -O --type privkey 2>/dev/null |
	 grep -c 'Private Key Object' | grep -qx 6"
check "and no file either" test -z "$(ls -A "$tap_tmp/out4")"
mkdir "$tap_tmp/out5"
check "the PIN can come from a descriptor" sh -c \
	"'$HSMCA' ceremony --module '$HSMCA_MODULE' --token '$HSMCA_TOKEN_URI' \
	 --pin-fd 3 --out '$tap_tmp/out5' --label-prefix fd 3< '$HSMCA_PIN_FILE'"
check_fails "--pin-file and --pin-fd together are refused" "one of --pin-file or --pin-fd" \
	cer --pin-file "$HSMCA_PIN_FILE" --pin-fd 0 --out "$tap_tmp/out5"
pin=$(cat "$HSMCA_PIN_FILE")
cp "$tap_tmp/all.log" "$tap_tmp/all-so-far.log"
check "nothing any run printed or wrote holds the PIN" sh -c \
	"test -s '$tap_tmp/all-so-far.log' &&
	 ! grep -rqF '$pin' '$tap_tmp/all-so-far.log' '$tap_tmp'/out?"
check "hsmca --help lists ceremony" sh -c "'$HSMCA' --help | grep -q ceremony"
check "hsmca ceremony --help" sh -c "'$HSMCA' ceremony --help | grep -q -- --pin-file"
check_fails "unknown command" "unknown command" "$HSMCA" frobnicate
tap_done
