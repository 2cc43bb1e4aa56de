#!/bin/sh
# hsmca enroll, renew, revoke, inventory against a real policy daemon in
# front of a real signer: files and modes, atomic replacement under a
# concurrent reader, the server's errors as "hsmca CMD: code: message",
# exit statuses (1 error, 2 usage), and the token-file rules (a token
# file open to group or other is refused before anything is sent).
. "$top_srcdir/tests/tap.sh"
. "$top_srcdir/tests/signer-lib.sh"
. "$top_srcdir/tests/policyd-lib.sh"
HSMCA=${HSMCA:-$top_builddir/hsmca}

signer_setup
signer_start || { cat "$tap_tmp/signerd.log"; echo "Bail out! signer"; exit 99; }
policyd_setup
policyd_start || { cat "$tap_tmp/policyd.log"; echo "Bail out! policyd"; exit 99; }
policyd_urls
out=$tap_tmp/files
mkdir "$out" "$tap_tmp/empty"
tls="--server $url --ca-bundle $ca/root.pem --resolve ca.example.com:$port:127.0.0.1"

keypub() { openssl pkey -in "$1" -pubout 2>/dev/null; }
certpub() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr A-F a-f | sed 's/^0*//'; }
sans_of() { openssl x509 -in "$1" -noout -ext subjectAltName | sed 1d | tr -d ' '; }
# matches KEY CERT: the key is the certificate's
matches() { k=$(keypub "$1") && [ -n "$k" ] && [ "$k" = "$(certpub "$2")" ]; }

# --- help and usage
for c in enroll renew revoke inventory; do
	check "hsmca $c --help exits 0 with its usage" sh -c \
	    "'$HSMCA' $c --help | grep -q '^usage: hsmca $c'"
done
check "hsmca --help lists the four client commands" sh -c \
    "'$HSMCA' --help > $tap_tmp/h && grep -q '^  enroll' $tap_tmp/h && grep -q '^  renew' $tap_tmp/h && grep -q '^  revoke' $tap_tmp/h && grep -q '^  inventory' $tap_tmp/h"
"$HSMCA" enroll $tls --token hsmca_x --profile svid --key "$out/x.key" --cert "$out/x.pem" > "$tap_tmp/o" 2>&1
check "a token on the command line is not accepted: usage error, exit 2" test $? -eq 2
"$HSMCA" enroll $tls --profile svid --key "$out/x.key" --cert "$out/x.pem" > "$tap_tmp/o" 2>&1
check "enroll without a name is a usage error" test $? -eq 2
"$HSMCA" inventory $tls --key "$out/x.key" --cert "$out/x.pem" --expiring soon > "$tap_tmp/o" 2>&1
check "a malformed duration is a usage error" test $? -eq 2
"$HSMCA" enroll --server "http://ca.example.com:$port" --ca-bundle "$ca/root.pem" --profile svid \
	--spiffe-id spiffe://td.example/ns/web/api --key "$out/x.key" --cert "$out/x.pem" > "$tap_tmp/o" 2>&1
check "a plain http:// server is refused" test $? -eq 2

# --- the token file: refused when open to group or other, not spent
tok1=$(token web 1)
printf '%s\n' "$tok1" > "$tap_tmp/tok1"
chmod 0644 "$tap_tmp/tok1"
enroll_svid() {
	"$HSMCA" enroll $tls --token-file "$tap_tmp/tok1" --profile svid \
		--spiffe-id spiffe://td.example/ns/web/api --ttl 2h \
		--key "$1/svid.key" --cert "$1/svid.pem" --chain "$1/svid.chain"
}
run_logged enroll_svid "$out"
rc=$?
if [ $rc -eq 1 ] && grep -q "gives group or other access" "$tap_tmp/out" && [ -z "$(ls -A "$out")" ]; then
	ok "a token file with mode 0644 is refused (exit 1), nothing written"
else
	not_ok "token file 0644: exit $rc, files: $(ls -A "$out" | tr '\n' ' ')"
	sed 's/^/# /' "$tap_tmp/out"
fi
chmod 0600 "$tap_tmp/tok1"

# --- an SVID
check "enroll gets an SVID (the refused attempt did not spend the token)" enroll_svid "$out"
check "the SVID's files are 0600 (key), 0644 (certificate, chain)" sh -c "
	[ \$(stat -c %a $out/svid.key) = 600 ] && [ \$(stat -c %a $out/svid.pem) = 644 ] &&
	[ \$(stat -c %a $out/svid.chain) = 644 ]"
check "the SVID verifies with openssl verify -x509_strict and its chain" \
	openssl verify -x509_strict -CAfile "$ca/root.pem" -untrusted "$out/svid.chain" "$out/svid.pem"
check "the key written is the SVID's key" matches "$out/svid.key" "$out/svid.pem"
check "the SVID is an EC P-256 key by default" sh -c "openssl pkey -in $out/svid.key -noout -text | grep -q 'NIST CURVE: P-256'"
check "the SVID carries exactly the SPIFFE ID" test "$(sans_of "$out/svid.pem")" = "URI:spiffe://td.example/ns/web/api"
svid_serial=$(serial_of "$out/svid.pem")
check "enroll printed the serial" grep -q "serial $svid_serial," "$tap_tmp/all.log"
check "no temporary file is left beside the outputs" test "$(ls -A "$out" | tr '\n' ' ')" = "svid.chain svid.key svid.pem "

# --- a used token: exit 1, the server's code, nothing touched
cp -p "$out/svid.key" "$tap_tmp/svid.key.bak"
cp -p "$out/svid.pem" "$tap_tmp/svid.pem.bak"
check_fails "a used token fails with the server's token_used" "^hsmca enroll: token_used: " enroll_svid "$tap_tmp/empty"
run_logged enroll_svid "$tap_tmp/empty"
check "... with exit status 1" test $? -eq 1
check "... and leaves no file behind" test -z "$(ls -A "$tap_tmp/empty")"
run_logged enroll_svid "$out"
check "a failed enroll leaves the existing key and certificate untouched" sh -c "
	cmp -s $out/svid.key $tap_tmp/svid.key.bak && cmp -s $out/svid.pem $tap_tmp/svid.pem.bak &&
	[ -z \"\$(ls -A $out | grep -v '^svid')\" ]"

# --- the wrong trust: the server is not believed
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tap_tmp/other.key" \
	-subj "/CN=Other Root" -days 1 -out "$tap_tmp/other-root.pem" 2>/dev/null
HSMCA_BOOTSTRAP_TOKEN=$(token web 1)
export HSMCA_BOOTSTRAP_TOKEN
check_fails "a server not under --ca-bundle is refused" "SSL certificate|certificate verify|self.signed|unable to get" \
	"$HSMCA" enroll --server "$url" --ca-bundle "$tap_tmp/other-root.pem" --resolve "ca.example.com:$port:127.0.0.1" \
	--profile peer --dns a.web.example.com --key "$tap_tmp/empty/a.key" --cert "$tap_tmp/empty/a.pem"
check "... and nothing is written" test -z "$(ls -A "$tap_tmp/empty")"

# --- a peer certificate, token from the environment
peer_enroll() {
	"$HSMCA" enroll $tls --profile peer --dns api.web.example.com --ttl 1h \
		--key "$out/peer.key" --cert "$out/peer.pem" --chain "$out/peer.chain"
}
HSMCA_BOOTSTRAP_TOKEN=$(token web 5)
check "enroll gets a peer certificate with --dns, the token from HSMCA_BOOTSTRAP_TOKEN" peer_enroll
unset HSMCA_BOOTSTRAP_TOKEN
check "the peer certificate verifies for TLS server and client" sh -c "
	openssl verify -x509_strict -purpose sslserver -CAfile $ca/root.pem -untrusted $out/peer.chain $out/peer.pem &&
	openssl verify -x509_strict -purpose sslclient -CAfile $ca/root.pem -untrusted $out/peer.chain $out/peer.pem"
check "the peer certificate has the DNS name and the key written" sh -c "
	[ \"\$(openssl x509 -in $out/peer.pem -noout -ext subjectAltName | sed 1d | tr -d ' ')\" = DNS:api.web.example.com ]" 
check "the peer key matches" matches "$out/peer.key" "$out/peer.pem"
check "enroll with no token at all fails before sending" sh -c "
	! '$HSMCA' enroll $tls --profile peer --dns b.web.example.com --key $tap_tmp/empty/b.key --cert $tap_tmp/empty/b.pem 2> $tap_tmp/e &&
	grep -q 'no bootstrap token' $tap_tmp/e && [ -z \"\$(ls -A $tap_tmp/empty)\" ]"

printf '%s\n' "$(token web 2)" > "$tap_tmp/tok2"
chmod 0600 "$tap_tmp/tok2"
check "enroll --key-type ec-p384 for a server certificate" \
	"$HSMCA" enroll $tls --token-file "$tap_tmp/tok2" --profile server --dns www.web.example.com \
	--key-type ec-p384 --key "$out/srv.key" --cert "$out/srv.pem"
check "... the key is P-384 and matches" sh -c "
	openssl pkey -in $out/srv.key -noout -text | grep -q 'NIST CURVE: P-384' &&
	[ \"\$(openssl pkey -in $out/srv.key -pubout)\" = \"\$(openssl x509 -in $out/srv.pem -noout -pubkey)\" ]"
check_fails "a key type the policy does not allow: the server's refusal" "^hsmca enroll: [a-z_]+: " \
	"$HSMCA" enroll $tls --token-file "$tap_tmp/tok2" --profile server --dns www.web.example.com \
	--key-type ed25519 --key "$tap_tmp/empty/ed.key" --cert "$tap_tmp/empty/ed.pem"

# --- renewal: three with new keys under a concurrent reader, one reusing
cp -p "$out/peer.key" "$tap_tmp/peer0.key"
cp -p "$out/peer.pem" "$tap_tmp/peer0.pem"
peer0_serial=$(serial_of "$out/peer.pem")
ln "$out/peer.key" "$tap_tmp/peer.key.link"
ino0=$(stat -c %i "$out/peer.key")
renew_peer() {
	"$HSMCA" renew $tls --key "$out/peer.key" --cert "$out/peer.pem" --chain "$out/peer.chain" "$@"
}
# The reader: every read must give a whole key and a whole certificate,
# the key file always 0600, never a temporary key open to others.  A key
# and a certificate read one after the other can straddle the renames
# (two files cannot change at once), so a pair that does not match must
# match when read again a moment later.
watch_pair() {
	i=0
	while [ $i -lt 1500 ] && [ ! -e "$tap_tmp/stop" ]; do
		cat "$out/peer.key" > "$tap_tmp/w.key" 2>/dev/null
		cat "$out/peer.pem" > "$tap_tmp/w.pem" 2>/dev/null
		kp=$(keypub "$tap_tmp/w.key")
		cp=$(certpub "$tap_tmp/w.pem")
		[ -n "$kp" ] || echo "read $i: not a whole key" >> "$tap_tmp/watch.err"
		[ -n "$cp" ] || echo "read $i: not a whole certificate" >> "$tap_tmp/watch.err"
		if [ "$kp" != "$cp" ]; then
			echo straddle >> "$tap_tmp/watch.straddle"
			# A loaded machine can stretch the renames: give them up
			# to 2 s before calling the pair torn for good.
			j=0
			until matches "$out/peer.key" "$out/peer.pem"; do
				j=$((j + 1))
				if [ $j -ge 10 ]; then
					echo "read $i: key and certificate stay apart" >> "$tap_tmp/watch.err"
					break
				fi
				sleep 0.2
			done
		fi
		m=$(stat -c %a "$out/peer.key")
		[ "$m" = 600 ] || echo "read $i: key mode $m" >> "$tap_tmp/watch.err"
		[ -z "$(find "$out" -name '.peer.key.*' -perm /077)" ] ||
			echo "read $i: a temporary key open to others" >> "$tap_tmp/watch.err"
		echo x >> "$tap_tmp/watch.n"
		i=$((i + 1))
	done
}
: > "$tap_tmp/watch.err"
watch_pair &
watch_pid=$!
i=0
while [ ! -s "$tap_tmp/watch.n" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
renew_ok=0
prev_serial=$peer0_serial
prev_pub=$(keypub "$out/peer.key")
n=0
while [ $n -lt 3 ]; do
	run_logged renew_peer || { sed 's/^/# /' "$tap_tmp/out"; break; }
	s=$(serial_of "$out/peer.pem")
	p=$(keypub "$out/peer.key")
	[ "$s" != "$prev_serial" ] && [ "$p" != "$prev_pub" ] &&
		[ "$(sans_of "$out/peer.pem")" = DNS:api.web.example.com ] &&
		matches "$out/peer.key" "$out/peer.pem" || break
	prev_serial=$s
	prev_pub=$p
	renew_ok=$((renew_ok + 1))
	n=$((n + 1))
	sleep 0.1
done
touch "$tap_tmp/stop"
wait $watch_pid
reads=$(wc -l < "$tap_tmp/watch.n")
straddles=$(cat "$tap_tmp/watch.straddle" 2>/dev/null | wc -l)
check "three renewals: each a new serial and a new key, the same name, key and certificate matching" test $renew_ok -eq 3
if [ ! -s "$tap_tmp/watch.err" ] && [ "$reads" -ge 3 ]; then
	ok "a concurrent reader always saw a whole key (0600) and certificate ($reads reads, $straddles straddled a rename)"
else
	not_ok "the concurrent reader ($reads reads)"
	sed 's/^/# /' "$tap_tmp/watch.err" | head -20
fi
check "the old key file was replaced by rename, not rewritten: its inode keeps the old key" sh -c "
	cmp -s $tap_tmp/peer.key.link $tap_tmp/peer0.key && [ \$(stat -c %i $out/peer.key) != $ino0 ]"
check "the renewed chain verifies the renewed certificate" \
	openssl verify -x509_strict -CAfile "$ca/root.pem" -untrusted "$out/peer.chain" "$out/peer.pem"
before_key=$(keypub "$out/peer.key")
before_serial=$(serial_of "$out/peer.pem")
check "renew --reuse-key" renew_peer --reuse-key --ttl 30m
check "... keeps the key and gets a new serial" sh -c "
	[ \"\$(openssl pkey -in $out/peer.key -pubout)\" = '$before_key' ] &&
	[ \"\$(openssl x509 -in $out/peer.pem -noout -pubkey)\" = '$before_key' ] &&
	[ \"$(serial_of "$out/peer.pem")\" != '$before_serial' ]"
check_fails "renewing with a key that is not the certificate's is refused locally" "is not the key of" \
	"$HSMCA" renew $tls --key "$out/svid.key" --cert "$out/peer.pem"

# --- revocation
revoke_old() {
	"$HSMCA" revoke $tls --key "$tap_tmp/peer0.key" --cert "$tap_tmp/peer0.pem" --reason superseded "$@"
}
check_fails "revoking another's certificate as a non-admin: not_allowed" "^hsmca revoke: not_allowed: " \
	revoke_old "$svid_serial"
check "the holder revokes the original peer certificate" revoke_old "$peer0_serial"
check "revoke prints the serial and revoked_at" grep -Eq "^serial $peer0_serial revoked at [0-9]{4}-[0-9]{2}-[0-9]{2}T.* \(superseded\)$" "$tap_tmp/all.log"
run_logged revoke_old "not-hex"
check "a malformed serial is a usage error" test $? -eq 2
check_fails "renewing with the revoked certificate fails: certificate_revoked" "^hsmca renew: certificate_revoked: " \
	"$HSMCA" renew $tls --key "$tap_tmp/peer0.key" --cert "$tap_tmp/peer0.pem" --chain "$tap_tmp/peer0.chain"
check "... and writes nothing" sh -c "cmp -s $tap_tmp/peer.key.link $tap_tmp/peer0.key && [ ! -e $tap_tmp/peer0.chain ] &&
	[ -z \"\$(ls -A $tap_tmp | grep '^\.peer0')\" ]"

# --- inventory as an admin
printf '%s\n' "$(token admin 1)" > "$tap_tmp/atok"
chmod 0600 "$tap_tmp/atok"
check "an admin client certificate is enrolled" \
	"$HSMCA" enroll $tls --token-file "$tap_tmp/atok" --profile client --spiffe-id spiffe://td.example/admin \
	--key "$out/admin.key" --cert "$out/admin.pem"
admin_revoke() { "$HSMCA" revoke $tls --key "$out/admin.key" --cert "$out/admin.pem" "$@"; }
check_fails "revoking the revoked one again as admin: not_revocable" "^hsmca revoke: not_revocable: " \
	admin_revoke "$peer0_serial"
srv_serial=$(serial_of "$out/srv.pem")
check "an admin revokes another's certificate (upper-case serial accepted), reason keyCompromise" \
	admin_revoke --reason keyCompromise "$(echo "$srv_serial" | tr a-f A-F)"
check "... as printed" grep -q "^serial $srv_serial revoked at .* (keyCompromise)$" "$tap_tmp/all.log"
check_fails "an unknown reason: the server's reason_invalid" "^hsmca revoke: reason_invalid: " \
	admin_revoke --reason sometimes "$svid_serial"
inv() { "$HSMCA" inventory $tls --key "$out/admin.key" --cert "$out/admin.pem" "$@"; }
# hsmca-policyd's own TLS certificate has a row whose "sans" is "", not
# JSON, and any listing that includes it fails with a 500 (reported to
# the lead; policy/ is not ours).  Until that is fixed the filters below
# avoid the row (it lives 2 h from the daemon's start) and the
# unfiltered listing is skipped when, and only when, it fails that way.
run_logged inv
rc=$?
if [ $rc -eq 0 ] && grep -Eq '^SERIAL +STATUS +PROFILE +IDENTITY +NOT_AFTER' "$tap_tmp/out" &&
    grep -Eq "^$svid_serial +issued +svid +spiffe://td.example/ns/web/api +[0-9]{4}-" "$tap_tmp/out"; then
	ok "inventory prints a table of every certificate"
elif grep -q "^hsmca inventory: internal: inventory: " "$tap_tmp/out"; then
	skip "unfiltered inventory: the policy daemon's TLS certificate row breaks the listing (server bug)"
else
	not_ok "inventory prints a table (exit $rc)"
	sed 's/^/# /' "$tap_tmp/out"
fi
check "inventory --status revoked prints a table" inv --status revoked
cp "$tap_tmp/out" "$tap_tmp/last"
check "... with a header and the two revoked rows only" sh -c "
	grep -Eq '^SERIAL +STATUS +PROFILE +IDENTITY +NOT_AFTER' $tap_tmp/last &&
	[ \$(wc -l < $tap_tmp/last) -eq 3 ] &&
	grep -Eq '^$peer0_serial +revoked +peer +api.web.example.com +[0-9]{4}-' $tap_tmp/last &&
	grep -Eq '^$srv_serial +revoked +server +www.web.example.com +[0-9]{4}-' $tap_tmp/last"
check "inventory --identity (a URI, escaped) prints the SVID's row" inv --identity spiffe://td.example/ns/web/api
cp "$tap_tmp/out" "$tap_tmp/last"
check "... alone" sh -c "[ \$(wc -l < $tap_tmp/last) -eq 2 ] &&
	grep -Eq '^$svid_serial +issued +svid +spiffe://td.example/ns/web/api +[0-9]{4}-' $tap_tmp/last"
run_logged inv --json --expiring 90m
rc=$?
cp "$tap_tmp/out" "$tap_tmp/inv.json"
if [ $rc -eq 1 ] && python3 -c "
import json, sys
c = {x['serial']: x for x in json.load(open('$tap_tmp/inv.json'))['certificates']}
assert '$(serial_of "$out/peer.pem")' in c and '$(serial_of "$out/admin.pem")' in c, sorted(c)
assert '$svid_serial' not in c
assert c['$(serial_of "$out/admin.pem")']['identity'] == 'spiffe://td.example/admin'
assert all(x['status'] == 'issued' for x in c.values())
" > "$tap_tmp/py.err" 2>&1; then
	ok "inventory --json --expiring 90m exits 1 with the server's JSON: the 1 h certificates, not the 2 h SVID"
else
	not_ok "inventory --json --expiring 90m: exit $rc"
	sed 's/^/# /' "$tap_tmp/inv.json" "$tap_tmp/py.err" | head -30
fi
run_logged inv --expiring 90m
rc=$?
if [ $rc -eq 1 ] && grep -q "^$(serial_of "$out/peer.pem") " "$tap_tmp/out" && ! grep -q "^$svid_serial " "$tap_tmp/out"; then
	ok "inventory --expiring 90m exits 1 and lists the 1 h certificates"
else
	not_ok "inventory --expiring 90m: exit $rc"
	sed 's/^/# /' "$tap_tmp/out"
fi
check "inventory --status revoked --json lists only the revoked ones, with revoked_at" sh -c "
	'$HSMCA' inventory $tls --key $out/admin.key --cert $out/admin.pem --status revoked --json |
	python3 -c \"import json,sys; c=json.load(sys.stdin)['certificates']; sys.exit(0 if sorted(x['serial'] for x in c) == sorted(['$peer0_serial', '$srv_serial']) and all(x['revoked_at'] for x in c) else 1)\""
# Nothing here lives less than 30 min and the test takes far less.
run_logged inv --expiring 5m
rc=$?
if [ $rc -eq 0 ] && [ "$(wc -l < "$tap_tmp/out")" -eq 1 ]; then
	ok "inventory --expiring 5m exits 0 with no row"
else
	not_ok "inventory --expiring 5m: exit $rc"
	sed 's/^/# /' "$tap_tmp/out"
fi
run_logged inv --expiring 5m --json
rc=$?
cp "$tap_tmp/out" "$tap_tmp/inv5.json"
check "inventory --expiring 5m --json exits 0 with an empty list" sh -c "
	[ $rc -eq 0 ] && python3 -c \"import json,sys; sys.exit(0 if json.load(open('$tap_tmp/inv5.json'))['certificates'] == [] else 1)\""
check_fails "inventory as a non-admin: not_allowed" "^hsmca inventory: not_allowed: " \
	"$HSMCA" inventory $tls --key "$out/peer.key" --cert "$out/peer.pem"

check "no token was ever printed by the client" sh -c "! grep -q hsmca_ $tap_tmp/all.log"
check "hsmca-policyd stops cleanly on SIGTERM" policyd_stop
[ "$tap_failed" -eq 0 ] || sed 's/^/# policyd: /' "$tap_tmp/policyd.log" | tail -40
tap_done
