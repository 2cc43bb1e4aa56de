#!/bin/sh
# docs/alerts.yml: promtool accepts the rules, the unit tests of
# docs/alerts-test.yml pass (signer down, expiry within the hour, CA
# expiry fire when they should and not otherwise), and fail when a
# threshold is broken on purpose; every hsmca_* metric that the alerts
# and docs/production.md name is one the code exports.
. "$top_srcdir/tests/tap.sh"

docs=$top_srcdir/docs
d=$tap_tmp

if command -v promtool >/dev/null 2>&1; then
	check "promtool check rules docs/alerts.yml" \
	    promtool check rules "$docs/alerts.yml"
	check "promtool test rules docs/alerts-test.yml" \
	    promtool test rules "$docs/alerts-test.yml"

	# The unit tests must be able to fail: break one alert at a time
	# in a copy and expect promtool test rules to notice.
	# mutant NAME FROM TO: alerts.yml with FROM replaced by TO.
	mutant() {
		mkdir -p "$d/$1"
		cp "$docs/alerts-test.yml" "$d/$1/alerts-test.yml"
		sed "s/$2/$3/" "$docs/alerts.yml" > "$d/$1/alerts.yml"
		if cmp -s "$docs/alerts.yml" "$d/$1/alerts.yml"; then
			not_ok "mutant $1: \"$2\" not found in docs/alerts.yml"
		elif run_logged promtool test rules "$d/$1/alerts-test.yml"; then
			not_ok "mutant $1: the unit tests still pass"
			sed 's/^/# /' "$tap_tmp/out"
		elif grep -q "alertname: $4," "$tap_tmp/out"; then
			ok "mutant $1: the unit tests catch it ($4)"
		else
			not_ok "mutant $1: failed, but not on $4"
			sed 's/^/# /' "$tap_tmp/out"
		fi
	}
	mutant signer-never 'hsmca_signer_up == 0' 'hsmca_signer_up == 2' \
	    HsmcaSignerDown
	mutant signer-too-soon 'for: 1m' 'for: 0m' HsmcaSignerDown
	mutant expiring-24h \
	    'hsmca_certificates_expiring{within="1h"}' \
	    'hsmca_certificates_expiring{within="24h"}' \
	    HsmcaCertificatesExpiringWithin1h
	mutant expiring-per-profile \
	    'sum without (profile) (hsmca_certificates_expiring{within="1h"})' \
	    'hsmca_certificates_expiring{within="1h"}' \
	    HsmcaCertificatesExpiringWithin1h
	mutant ca-20d '< 30 \* 86400' '< 20 * 86400' \
	    HsmcaCACertificateExpiresIn30d
	mutant ca-60d '< 30 \* 86400' '< 60 * 86400' \
	    HsmcaCACertificateExpiresIn30d
else
	skip "promtool check rules docs/alerts.yml: promtool not installed" \
	    "(Debian package prometheus)"
	skip "promtool test rules docs/alerts-test.yml: promtool not installed"
	skip "mutants of docs/alerts.yml: promtool not installed"
fi

# Metric names.  The expressions of the rules (each expr: and the lines
# indented under it), then every hsmca_* name in the annotations and in
# docs/production.md: hsmca_agent_* must be written by the agent
# (cli/agent*.c), the others served by the policy daemon (policy/api.c).
exprs() {
	awk '
	/^[[:space:]]*expr:/ {
		match($0, /^[[:space:]]*/); ind = RLENGTH; inexpr = 1
		print; next
	}
	inexpr {
		match($0, /^[[:space:]]*/)
		if (RLENGTH > ind && $0 !~ /^[[:space:]]*$/) { print; next }
		inexpr = 0
	}' "$docs/alerts.yml"
}
metric_names() {
	grep -oE 'hsmca_[a-z0-9_]*[a-z0-9]' | sort -u
}
expr_names=$(exprs | metric_names)
names=$( (grep -v '^[[:space:]]*#' "$docs/alerts.yml";
    cat "$docs/production.md") | metric_names)
agent_src=
for f in "$top_srcdir"/cli/agent*.c; do
	[ -f "$f" ] && agent_src="$agent_src $f"
done
n=0
for m in $names; do
	n=$((n + 1))
	case $m in
	hsmca_agent_*)
		if [ -z "$agent_src" ]; then
			skip "metric $m: the agent's code (cli/agent*.c)" \
			    "is not there yet"
			continue
		fi
		src=$agent_src ;;
	*)
		src=$top_srcdir/policy/api.c ;;
	esac
	# shellcheck disable=SC2086
	if grep -Eq "(^|[^a-z0-9_])$m([^a-z0-9_]|\$)" $src; then
		ok "metric $m is exported by$(for f in $src; do
		    printf ' %s' "${f#"$top_srcdir"/}"; done)"
	else
		not_ok "metric $m is in no source:$src"
	fi
done
if [ "$n" -ge 10 ]; then
	ok "$n metric names checked"
else
	not_ok "only $n metric names found in the docs"
fi
# The rules use at least the metrics the brief asks for.
for m in hsmca_signer_up hsmca_certificates_expiring \
    hsmca_certificate_soonest_expiry_timestamp_seconds \
    hsmca_ca_not_after_timestamp_seconds hsmca_signer_errors_total \
    hsmca_denied_total hsmca_signing_seconds_bucket \
    hsmca_agent_renewals_total hsmca_agent_cert_not_after_seconds; do
	if echo "$expr_names" | grep -qx "$m"; then
		ok "an alert's expression uses $m"
	else
		not_ok "no alert's expression uses $m"
	fi
done

tap_done
