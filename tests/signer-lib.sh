# Sourced by the signer tests after tap.sh: a token with a CA made by the
# ceremony, a signer configuration, and starting and stopping a real
# hsmca-signerd.  As root (CI) the signer runs as its own user and the
# client as the policy daemon's user, as in production.
#
# Sets: ca (ceremony output), st (state), conf, mac, sock_url, client.

TESTCLIENT=${TESTCLIENT:-$top_builddir/tests/hsmca-testclient}
SIGNERD=${SIGNERD:-$top_builddir/hsmca-signerd}
signer_pid=
signer_users=
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"

signer_cleanup() {
	if [ -n "$signer_pid" ]; then
		kill -9 "$signer_pid" 2>/dev/null
		wait "$signer_pid" 2>/dev/null
	fi
	# A load started as "client ... &" is a subshell around runuser and
	# the client; killing the subshell leaves the client running, which
	# would also keep its throwaway user from being deleted.
	[ -n "${sock_url:-}" ] && pkill -9 -f -- "$sock_url" 2>/dev/null
	for u in $signer_users; do
		i=0
		until userdel "$u" 2>/dev/null || [ $i -ge 20 ]; do
			i=$((i + 1))
			sleep 0.5
		done
		groupdel "$u" 2>/dev/null
	done
	rm -rf "$tap_tmp"
}
trap signer_cleanup EXIT

# signer_setup [extra [signer] lines]
signer_setup() {
	tok=$tap_tmp/tok
	"$top_srcdir/softhsm-config/hsmca-softhsm-token" -l signer "$tok" \
		>/dev/null || { echo "Bail out! token"; exit 99; }
	. "$tok/env"
	ca=$tap_tmp/ca
	mkdir "$ca"
	"$HSMCA" ceremony --module "$HSMCA_MODULE" --token "$HSMCA_TOKEN_URI" \
		--pin-file "$HSMCA_PIN_FILE" --out "$ca" \
		--root-subject "/CN=Signer Test Root/O=hsmca tests" \
		--intermediate-subject "/CN=Signer Test Issuing/O=hsmca tests" \
		--permitted-dns example.com --permitted-uri-domain td.example \
		> "$tap_tmp/ceremony.log" 2>&1 ||
		{ cat "$tap_tmp/ceremony.log"; echo "Bail out! ceremony"; exit 99; }
	st=$tap_tmp/state
	mkdir -m 0755 "$st" "$st/audit"
	chmod 0700 "$st/audit"
	# The MAC key: the signer's copy (read at its start) and the policy
	# daemon's, each readable by its daemon only.
	signer_mac=$st/mac.key
	mac=$st/mac-client.key
	(umask 077; openssl rand -hex 32 > "$signer_mac"; cp "$signer_mac" "$mac")
	sock_url=ipc://$st/sock/signer.sock
	signer_user=
	client_user=
	if [ "$(id -u)" -eq 0 ]; then
		sfx=$$
		signer_user=hsmca-ts$sfx
		client_user=hsmca-tp$sfx
		other_user=hsmca-to$sfx
		for u in "$signer_user" "$client_user" "$other_user"; do
			# Another test may hold the passwd lock for a moment.
			tries=0
			until useradd -r -M -U -d /nonexistent -s /usr/sbin/nologin "$u" \
			    2>"$tap_tmp/useradd.err"; do
				tries=$((tries + 1))
				[ $tries -lt 20 ] || { echo "Bail out! useradd $u: $(cat "$tap_tmp/useradd.err")"; exit 99; }
				sleep 0.5
			done
			signer_users="$signer_users $u"
		done
		# The token and the audit log are the signer's; the signer's
		# MAC key copy is root's (read before the drop), the other the
		# policy daemon's.
		# The client runs as the policy user, who may not reach the
		# build tree (a clone under a 0700 directory): a copy of it.
		case $TESTCLIENT in
		"$tap_tmp"/*) ;;
		*)
			mkdir -p "$tap_tmp/bin"
			cp "$TESTCLIENT" "$tap_tmp/bin/hsmca-testclient"
			chmod 0755 "$tap_tmp/bin" "$tap_tmp/bin/hsmca-testclient"
			TESTCLIENT=$tap_tmp/bin/hsmca-testclient
			;;
		esac
		chown -R "$signer_user:$signer_user" "$tok" "$st/audit"
		# The policy daemon reads the audit log to reconcile.
		chgrp "$client_user" "$st/audit"
		chmod 0750 "$st/audit"
		chown "$client_user:$client_user" "$mac"
		# The PIN, like the signer's MAC key, is root's: read before
		# the drop, never again.
		chown root:root "$HSMCA_PIN_FILE" "$HSMCA_SO_PIN_FILE"
		chmod 0711 "$tap_tmp"
		chmod 0700 "$tok"
	fi
	conf=$tap_tmp/signerd.conf
	cat > "$conf" <<EOF
# hsmca-signerd test configuration
[signer]
module = $HSMCA_MODULE
token = $HSMCA_TOKEN_URI
pin_file = $HSMCA_PIN_FILE
mac_key = $signer_mac
socket_dir = $st/sock
audit_log = $st/audit/audit.log
audit_key = $ca/audit-key.pem
token_dir = $tok
checkpoint_every = 10
pool_size = 4
workers = 8
time_window = 30s
${signer_user:+user = $signer_user}
${client_user:+client_group = $client_user}
${1:-}

[key issuing]
certificate = $ca/intermediate.pem
chain = $ca/chain.pem
objects = certificate crl
profiles = svid server client peer
key_algorithms = ec-p256 ec-p384 rsa ed25519
max_validity = 24h
spiffe_trust_domains = td.example
dns_suffixes = example.com
crl_distribution_point = http://ca.example.com/crl

[key root]
certificate = $ca/root.pem
objects = certificate
profiles = subca
key_algorithms = ec-p256 ec-p384
max_validity = 1h
max_ca_validity = 30d
spiffe_trust_domains = td.example
dns_suffixes = example.com
usage_limit = 3
EOF
}

# Runs the test client as the policy daemon's user where there is one.
client() {
	if [ -n "$client_user" ]; then
		runuser -u "$client_user" -- "$TESTCLIENT" -s "$sock_url" -k "$mac" "$@"
	else
		"$TESTCLIENT" -s "$sock_url" -k "$mac" "$@"
	fi
}

# signer_start: starts hsmca-signerd in the foreground (in the
# background of this shell) and waits, bounded, until it answers.
signer_start() {
	"$SIGNERD" -d -c "$conf" >> "$tap_tmp/signerd.log" 2>&1 &
	signer_pid=$!
	i=0
	while [ $i -lt 150 ]; do
		if ! kill -0 "$signer_pid" 2>/dev/null; then
			wait "$signer_pid"
			signer_pid=
			return 1
		fi
		grep -q "serving on" "$tap_tmp/signerd.log" 2>/dev/null &&
			client -t 2000 health > /dev/null 2>&1 && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# signer_stop: SIGTERM, then a bounded wait; the exit status is the
# signer's.
signer_stop() {
	[ -n "$signer_pid" ] || return 1
	kill -TERM "$signer_pid"
	i=0
	while kill -0 "$signer_pid" 2>/dev/null && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if kill -0 "$signer_pid" 2>/dev/null; then
		kill -9 "$signer_pid"
	fi
	wait "$signer_pid"
	rc=$?
	signer_pid=
	return $rc
}

signer_kill9() {
	kill -9 "$signer_pid" 2>/dev/null
	wait "$signer_pid" 2>/dev/null
	signer_pid=
}

audit_verify() {
	"$HSMCA" audit verify --key "$ca/audit-key.pem" "$st/audit/audit.log"
}

# allocator_expected BINARY: the allocator line a daemon must log, as an
# extended regular expression, from what the binary is linked with.
allocator_expected() {
	if ldd "$1" 2>/dev/null | grep -q 'libjemalloc\.so'; then
		echo 'allocator: jemalloc [0-9]'
	else
		echo "allocator: (the C library's|AddressSanitizer's) malloc"
	fi
}
