#!/bin/sh
# A bounded libFuzzer run over the IPC decoder (make fuzz runs it longer).
. "$top_srcdir/tests/tap.sh"
f="$top_builddir/fuzz/fuzz-ipc"
if [ ! -x "$f" ]; then
	skip "fuzz target not built (needs clang with libFuzzer)"
	tap_done
	exit 0
fi
mkdir -p "$tap_tmp/corpus"
check "100000 fuzzed inputs through ipc_open and every body decoder" \
	"$f" -runs=100000 -max_total_time=60 -seed=1 "$tap_tmp/corpus" \
	"$top_srcdir/fuzz/corpus"
tap_done
