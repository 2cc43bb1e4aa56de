#!/bin/sh
# A bounded libFuzzer run over csr_parse (make fuzz-csr runs it longer).
. "$top_srcdir/tests/tap.sh"
f="$top_builddir/fuzz/fuzz-csr"
if [ ! -x "$f" ]; then
	skip "fuzz target not built (needs clang with libFuzzer)"
	tap_done
	exit 0
fi
mkdir -p "$tap_tmp/corpus"
check "50000 fuzzed inputs through csr_parse" \
	"$f" -runs=50000 -max_total_time=60 -seed=1 "$tap_tmp/corpus" \
	"$top_srcdir/fuzz/corpus-csr"
tap_done
