#!/bin/sh
# softhsm-config/hsmca-softhsm-token makes a private token and leaves the
# system's SoftHSM2 configuration alone.
. "$top_srcdir/tests/tap.sh"
mk="$top_srcdir/softhsm-config/hsmca-softhsm-token"

sysdir=/var/lib/softhsm/tokens
before=$(ls -A "$sysdir" 2>/dev/null | wc -l)
check "token made" "$mk" -l tt "$tap_tmp/t"
after=$(ls -A "$sysdir" 2>/dev/null | wc -l)
check "system token directory untouched" test "$before" -eq "$after"

for f in so-pin user-pin env softhsm2.conf; do
	check "$f is mode 600" test "$(stat -c %a "$tap_tmp/t/$f")" = 600
done
check "token directory is mode 700" test "$(stat -c %a "$tap_tmp/t/tokens")" = 700
check "PINs differ" test "$(cat "$tap_tmp/t/so-pin")" != "$(cat "$tap_tmp/t/user-pin")"
check "user PIN is 32 hex digits" grep -Eqx '[0-9a-f]{32}' "$tap_tmp/t/user-pin"

. "$tap_tmp/t/env"
check "SOFTHSM2_CONF points into the directory" \
	test "$SOFTHSM2_CONF" = "$tap_tmp/t/softhsm2.conf"
check "the token is visible through its own configuration" \
	sh -c 'softhsm2-util --show-slots | grep -q "Label:  *tt "'
check "the URI names token and serial" \
	sh -c 'echo "$HSMCA_TOKEN_URI" | grep -Eq "^pkcs11:token=tt;serial=[0-9a-f]+$"'
check_fails "a second token in the same directory is refused" \
	"already holds" "$mk" -l tt2 "$tap_tmp/t"
check_fails "a label with shell characters is refused" \
	"label must be" "$mk" -l 'a;b' "$tap_tmp/u"
tap_done
