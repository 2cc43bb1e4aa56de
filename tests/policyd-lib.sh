# Sourced by the policy daemon's tests after tap.sh and signer-lib.sh:
# a signer on a SoftHSM2 token (signer_setup, signer_start), then
# policyd_setup writes a policy and a configuration in $ps and
# policyd_start runs hsmca-policyd (as the policy user when root) and
# sets $port, $url and $CURL.  Helpers: api, jfield, expect, csr, body,
# token, save.
for t in curl openssl python3 sqlite3; do
	command -v $t > /dev/null || { echo "1..0 # SKIP $t not installed"; exit 0; }
done

policyd_cleanup() {
	[ -n "${pd_real:-}" ] && kill -9 "$pd_real" 2>/dev/null
	[ -n "$policyd_pid" ] && kill -9 "$policyd_pid" 2>/dev/null
	signer_cleanup
}
trap policyd_cleanup EXIT

policyd_setup() {
ps=$tap_tmp/pstate
mkdir -m 0700 "$ps" "$ps/tls"
cat > "$ps/policy.conf" <<EOF
[requester web]
tokens = yes
identities = spiffe://td.example/ns/web/*, *.web.example.com
rules = web

[requester admin]
tokens = yes
identities = spiffe://td.example/admin
admin = yes
rules = admin

[requester ca-team]
tokens = yes
rules = team-ca

[rule team-ca]
key = root
profiles = subca
spiffe_ids = spiffe://td.example/**
dns_names = team.example.com
key_algorithms = ec-p256
max_ttl = 7d
default_ttl = 1d

[rule web]
key = issuing
profiles = svid, peer, server, client
spiffe_ids = spiffe://td.example/ns/web/*
dns_names = *.web.example.com
key_algorithms = ec-p256, ec-p384, rsa-2048, rsa-3072
max_ttl = 12h
default_ttl = 1h
renew = own

[rule admin]
key = issuing
profiles = client
spiffe_ids = spiffe://td.example/admin
key_algorithms = ec-p256
max_ttl = 1h
EOF
pconf=$ps/policyd.conf
cat > "$pconf" <<EOF
[policyd]
listen = 127.0.0.1:0
signer = $sock_url
mac_key = $mac
store = $ps/inventory.db
policy = $ps/policy.conf
audit_log = $st/audit/audit.log
ca_bundle = $ca/root.pem
tls_dir = $ps/tls
tls_key_name = issuing
tls_names = ca.example.com
tls_ttl = 2h
crl_key = issuing
crl_validity = 1h
signer_timeout = 3000
client_timeout = 5
reconcile_after = 40s
EOF
chmod 0644 "$ps/policy.conf" "$pconf"
if [ -n "$client_user" ]; then
	chown -R "$client_user:$client_user" "$ps"
	chmod 0644 "$ps/policy.conf"
	as_policy() { runuser -u "$client_user" -- "$@"; }
	# The build tree may sit where the policy user cannot go (a clone
	# under a 0700 directory): it runs copies.
	mkdir -p "$tap_tmp/pbin"
	cp "$POLICYD" "$tap_tmp/pbin/hsmca-policyd"
	cp "$HSMCA" "$tap_tmp/pbin/hsmca"
	chmod 0755 "$tap_tmp/pbin" "$tap_tmp/pbin/hsmca-policyd" "$tap_tmp/pbin/hsmca"
	POLICYD_RUN=$tap_tmp/pbin/hsmca-policyd
	HSMCA_RUN=$tap_tmp/pbin/hsmca
else
	as_policy() { "$@"; }
fi
}

POLICYD=${POLICYD:-$top_builddir/hsmca-policyd}
POLICYD_RUN=$POLICYD
HSMCA_RUN=$HSMCA
policyd_pid=
# policyd_find PID: the hsmca-policyd processes among PID and the processes
# under it, three levels deep at most.
policyd_find() {
	level=$1 found= depth=0
	while [ -n "$level" ] && [ $depth -lt 4 ]; do
		next=
		for p in $level; do
			[ "$(cat "/proc/$p/comm" 2>/dev/null)" = hsmca-policyd ] &&
				found="$found${found:+ }$p"
			next="$next $(pgrep -P "$p" | tr '\n' ' ')"
		done
		level=$(echo $next)
		depth=$((depth + 1))
	done
	echo "$found"
}
policyd_start() {
	rm -f "$ps/port"
	as_policy env HSMCA_POLICYD_PORT_FILE="$ps/port" "$POLICYD_RUN" -d -c "$pconf" \
		>> "$tap_tmp/policyd.log" 2>&1 &
	policyd_pid=$!
	i=0
	while [ $i -lt 200 ]; do
		kill -0 "$policyd_pid" 2>/dev/null || { policyd_pid=; return 1; }
		if [ -s "$ps/port" ]; then
			port=$(cat "$ps/port")
			# runuser does not pass every signal on: signal the daemon,
			# the job itself or a process under it (the job's shell,
			# runuser, the daemon).  Not the newest process whose
			# command line names the daemon: runuser's names it too,
			# and when both started in the same clock tick pgrep -n
			# could pick runuser.
			pd_real=$(policyd_find "$policyd_pid")
			case $pd_real in
			''|*[!0-9]*)
				echo "# policyd_start: no single hsmca-policyd" \
				    "under job $policyd_pid: '$pd_real'" >&2
				return 1 ;;
			esac
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
policyd_stop() {
	[ -n "$policyd_pid" ] || return 1
	kill -TERM "$pd_real"
	wait "$policyd_pid"
	rc=$?
	policyd_pid=
	return $rc
}

# policyd_urls: after policyd_start
policyd_urls() {
	url=https://ca.example.com:$port
	CURL="curl -sS --max-time 20 --cacert $ca/root.pem --resolve ca.example.com:$port:127.0.0.1"
}

# api METHOD PATH [BODYFILE] [curl options...]: body in $tap_tmp/resp,
# status in $code.
api() {
	m=$1 p=$2
	shift 2
	if [ "$m" = POST ]; then
		b=$1
		shift
		code=$($CURL -o "$tap_tmp/resp" -w '%{http_code}' -X POST \
			-H 'Content-Type: application/json' --data-binary "@$b" "$@" "$url$p")
	else
		code=$($CURL -o "$tap_tmp/resp" -w '%{http_code}' "$@" "$url$p")
	fi
}
# jfield NAME: a field of the last JSON answer.
jfield() {
	python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2], ""); print(v if isinstance(v, str) else json.dumps(v))' \
		"$tap_tmp/resp" "$1"
}
# expect DESCRIPTION STATUS [ERRORCODE]
expect() {
	if [ "$code" = "$2" ] && { [ -z "${3:-}" ] || [ "$(jfield error)" = "$3" ]; }; then
		ok "$1"
	else
		not_ok "$1 (HTTP $code, want $2 ${3:-})"
		sed 's/^/# /' "$tap_tmp/resp"
		echo
	fi
}
# csr NAME KEYSPEC SAN: key $tap_tmp/NAME.key and request body NAME.json
csr() {
	# shellcheck disable=SC2086 # the key spec is several words
	openssl req -new -newkey $2 -nodes -keyout "$tap_tmp/$1.key" \
		-subj "/CN=$1" ${3:+-addext "subjectAltName=$3"} \
		-out "$tap_tmp/$1.csr" 2>/dev/null || return 1
}
body() {
	python3 - "$tap_tmp/$1.csr" "$2" "${3:-}" > "$tap_tmp/$1.json" <<'EOF'
import json, sys
d = {"csr": open(sys.argv[1]).read(), "profile": sys.argv[2]}
if sys.argv[3]:
    d["ttl"] = sys.argv[3]
print(json.dumps(d))
EOF
}
token() {
	as_policy "$HSMCA_RUN" token create --store "$ps/inventory.db" --requester "$1" ${2:+--uses "$2"}
}
# save NAME: certificate and chain of the last answer
save() {
	jfield certificate > "$tap_tmp/$1.pem"
	jfield chain > "$tap_tmp/$1.chain"
}

