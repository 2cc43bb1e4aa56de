#!/bin/sh
# hsmca audit verify and report on logs written by tests/audit-writer
# (the real audit.c with a software audit key): a good log passes, every
# kind of tampering fails and names the first bad record, and the report
# counts what the writer wrote.
. "$top_srcdir/tests/tap.sh"

WRITER=$top_builddir/tests/audit-writer
d=$tap_tmp
command -v python3 >/dev/null 2>&1 || { echo "1..0 # SKIP python3 not installed"; exit 0; }

# check_exit CODE DESCRIPTION PATTERN COMMAND...: the command must exit
# with CODE and say PATTERN (an extended regex; "" for anything).
check_exit() {
	want=$1
	desc=$2
	pattern=$3
	shift 3
	run_logged "$@"
	rc=$?
	if [ "$rc" -ne "$want" ]; then
		not_ok "$desc (exit $rc, wanted $want)"
		sed 's/^/# /' "$tap_tmp/out"
	elif [ -n "$pattern" ] && ! grep -Eq -- "$pattern" "$tap_tmp/out"; then
		not_ok "$desc (no \"$pattern\")"
		sed 's/^/# /' "$tap_tmp/out"
	else
		ok "$desc"
	fi
}

# Line surgery on a copy of the log: edit SRC DST PYTHON-STATEMENTS, with
# L the list of lines (bytes, each with its "\n") and h(i) the hex
# SHA-256 of line i (1-based) as the next record's prev would hold it.
edit() {
	python3 - "$1" "$2" "$3" <<'EOF'
import hashlib, json, sys
src, dst, code = sys.argv[1], sys.argv[2], sys.argv[3]
L = open(src, "rb").read().splitlines(keepends=True)
def h(i):
    return hashlib.sha256(L[i - 1]).hexdigest()
def rec(i):
    return json.loads(L[i - 1])
def put(i, r):
    L[i - 1] = json.dumps(r, separators=(",", ":")).encode() + b"\n"
exec(code)
open(dst, "wb").write(b"".join(L))
EOF
}

verify() { "$HSMCA" audit verify --key "$d/pub.pem" "$@"; }
# The line numbers of the checkpoints, in order.
checkpoints() { grep -n '"type":"checkpoint"' "$1" | cut -d: -f1; }

"$WRITER" -n 20 -c 5 "$d/key.pem" "$d/a.log" "$d/pub.pem" > "$d/w1.json" ||
	{ echo "Bail out! audit-writer"; exit 99; }
lines=$(wc -l < "$d/a.log")
set -- $(checkpoints "$d/a.log")
cp1=$1
cp2=$2
ncp=$#
check "the writer wrote 45 lines (start, 15 intents, 20 outcomes, stop, 8 checkpoints)" \
	test "$lines" -eq 45 -a "$ncp" -eq 8
check "the log is mode 0600" sh -c "test \"\$(stat -c %a '$d/a.log')\" = 600"

# A good log.
check_exit 0 "verify --key: a good log passes" \
	"OK: last seq 45, 8 checkpoint signatures checked" verify "$d/a.log"
check "verify: no warning when the log ends on a checkpoint" \
	sh -c "! grep -q warning '$tap_tmp/out'"
check_exit 0 "verify without --key checks the chain and says signatures were not" \
	"not checked" "$HSMCA" audit verify "$d/a.log"
for t in ed25519 rsa; do
	"$WRITER" -t "$t" -n 6 -c 4 "$d/key-$t.pem" "$d/$t.log" "$d/pub-$t.pem" >/dev/null
	check_exit 0 "verify: a log with an $t audit key" "OK: last seq" \
		"$HSMCA" audit verify --key "$d/pub-$t.pem" "$d/$t.log"
	check_exit 1 "verify: the $t log under the P-256 key is made by another key" \
		"line 5 \(seq 5\): checkpoint made by another key" \
		verify "$d/$t.log"
done

# Usage and I/O.
check_exit 2 "verify without a log is a usage error" "usage" "$HSMCA" audit verify
check_exit 2 "verify of a missing file is an I/O error" "No such file" verify "$d/none.log"
check_exit 2 "verify with a key that is not a PEM public key" "not a PEM public key" \
	"$HSMCA" audit verify --key "$d/a.log" "$d/a.log"
check_exit 0 "verify --help" "usage: hsmca audit verify" "$HSMCA" audit verify --help
check_exit 0 "report --help" "usage: hsmca audit report" "$HSMCA" audit report --help
check_exit 2 "an unknown audit command" "unknown command" "$HSMCA" audit frobnicate
check_exit 2 "report --since with a bad time" "since" "$HSMCA" audit report --since yesterday "$d/a.log"

# Tampering: each names the first bad record.
edit "$d/a.log" "$d/t.log" 'assert b"\"request_id\":\"req" in L[9]; L[9] = L[9].replace(b"\"request_id\":\"req", b"\"request_id\":\"rep", 1)'
check_exit 1 "a flipped byte inside a value of line 10: line 11 names line 10" \
	"line 11 \(seq 11\): prev mismatch: not the SHA-256 of line 10" verify "$d/t.log"
edit "$d/a.log" "$d/t.log" 'L[9] = bytes([L[9][0] ^ 1]) + L[9][1:]'
check_exit 1 "a flipped byte that breaks the JSON of line 10" \
	"line 10 \(seq 10 expected\): bad JSON" verify "$d/t.log"
edit "$d/a.log" "$d/t.log" 'del L[9]'
check_exit 1 "a deleted record (line 10)" \
	"line 10 \(seq 11\): seq gap: found 11 where 10 was expected" verify "$d/t.log"
edit "$d/a.log" "$d/t.log" 'L[9], L[10] = L[10], L[9]'
check_exit 1 "two records swapped (lines 10 and 11)" \
	"line 10 \(seq 11\): seq gap" verify "$d/t.log"
# Deleting a record and rewriting every later seq and prev: only the
# checkpoint signature after it catches that.
edit "$d/a.log" "$d/t.log" '
del L[9]
n = 0
for i in range(1, len(L) + 1):
    r = rec(i); r["seq"] = i; r["prev"] = h(i - 1) if i > 1 else "0" * 64
    if r["type"] == "checkpoint":
        r["head"] = r["prev"]; r["records"] = n; n = 0
    else:
        n += 1
    put(i, r)
'
check_exit 1 "a deleted record with the chain rebuilt: the next checkpoint's signature fails" \
	"line $((cp2 - 1)) \(seq $((cp2 - 1))\): checkpoint signature invalid" verify "$d/t.log"
check_exit 0 "... which the chain alone cannot see (no --key)" "chain OK" \
	"$HSMCA" audit verify "$d/t.log"

# Truncation.
head -c $(( $(wc -c < "$d/a.log") - 30 )) "$d/a.log" > "$d/t.log"
check_exit 1 "a tail cut in the middle of the last line" \
	"line 45 \(seq 45 expected\): torn last line" verify "$d/t.log"
head -n 40 "$d/a.log" > "$d/t.log"
check_exit 0 "whole records cut after a checkpoint: passes, but warns they are unsigned" \
	"warning: 4 records after the last checkpoint \(seq 37-40\) are not covered" verify "$d/t.log"
last_cp=$(checkpoints "$d/a.log" | sed -n "$((ncp - 1))p")
head -n "$last_cp" "$d/a.log" > "$d/t.log"
check_exit 0 "cut exactly at an earlier checkpoint: undetectable from the file, last seq shows it" \
	"OK: last seq $last_cp," verify "$d/t.log"

# Forged checkpoints.
"$WRITER" -n 20 -c 5 "$d/other.pem" "$d/b.log" "$d/other-pub.pem" > /dev/null
edit "$d/a.log" "$d/t.log" "
b = [l for l in open('$d/b.log', 'rb').read().splitlines(keepends=True)]
import json as j
r = j.loads(b[$cp1 - 1]); r['prev'] = r['head'] = h($cp1 - 1)
put($cp1, r)
"
check_exit 1 "a checkpoint signed by another key" \
	"line $cp1 \(seq $cp1\): checkpoint made by another key" verify "$d/t.log"
ka=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"checkpoint\"" in l][0]["key"])' "$d/a.log")
edit "$d/t.log" "$d/t2.log" "r = rec($cp1); r['key'] = '$ka'; put($cp1, r)"
check_exit 1 "a checkpoint by another key claiming ours" \
	"line $cp1 \(seq $cp1\): checkpoint signature invalid" verify "$d/t2.log"
edit "$d/a.log" "$d/t.log" "
r = rec($cp1); r['seq'] = $cp2; r['prev'] = r['head'] = h($cp2 - 1)
put($cp2, r)
"
check_exit 1 "a good checkpoint signature copied over a different head" \
	"line $cp2 \(seq $cp2\): checkpoint signature invalid" verify "$d/t.log"
edit "$d/a.log" "$d/t.log" "r = rec($cp2); r['head'] = rec($cp1)['head']; put($cp2, r)"
check_exit 1 "a checkpoint whose head is not its prev" \
	"line $cp2 \(seq $cp2\): checkpoint head does not match" verify "$d/t.log"

# Report, against what the writer says it wrote: request i is refused
# when i % 4 == 3, a CRL when i % 10 == 9, key issuing-ec for even i,
# requester policy-a when i % 3 == 0.
check_exit 0 "report (text)" "key uses: 20 \(15 signed, 5 refused\)" \
	"$HSMCA" audit report "$d/a.log"
cp "$tap_tmp/out" "$d/report.txt"
check "report (text): issuing-rsa 5 signed, 5 refused" \
	grep -Eq '^  issuing-rsa +5 +5$' "$d/report.txt"
check "report (text): refusals by code" sh -c \
	"grep -Eq '^  name_not_permitted +2$' '$d/report.txt' && grep -Eq '^  profile_violation +3$' '$d/report.txt'"
"$HSMCA" audit report --json "$d/a.log" > "$d/r.json"
check "report --json matches the writer" python3 -c '
import json, sys
r = json.load(open(sys.argv[1])); w = json.load(open(sys.argv[2]))
assert (r["uses"], r["signed"], r["refused"]) == (w["uses"], w["signed"], w["refused"]), r
assert r["by_key"] == {"issuing-ec": {"signed": 10, "refused": 0},
                       "issuing-rsa": {"signed": 5, "refused": 5}}, r["by_key"]
assert r["by_requester"] == {"policy-a": {"signed": 5, "refused": 2},
                             "policy-b": {"signed": 10, "refused": 3}}, r["by_requester"]
assert r["by_kind"] == {"certificate": {"signed": 14, "refused": 5},
                        "crl": {"signed": 1, "refused": 0}}, r["by_kind"]
assert r["by_outcome"] == {"signed": 15, "refused": 5}
assert r["refusals_by_code"] == {"name_not_permitted": 2, "profile_violation": 3}
assert r["records"] == 45 and r["unreadable"] == 0
' "$d/r.json" "$d/w1.json"
"$HSMCA" audit report --json --key issuing-rsa --requester policy-b "$d/a.log" > "$d/r.json"
check "report --key --requester" python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert (r["uses"], r["signed"], r["refused"]) == (7, 4, 3), r
assert list(r["by_key"]) == ["issuing-rsa"] and list(r["by_requester"]) == ["policy-b"]
' "$d/r.json"

# A second run of the writer, after a known time: --since and --until.
sleep 1
t=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sleep 1
"$WRITER" -n 8 -c 5 "$d/key.pem" "$d/a.log" "$d/pub.pem" > "$d/w2.json"
check_exit 0 "verify after the second run (reopened, appended)" "OK: last seq" verify "$d/a.log"
uses() { "$HSMCA" audit report --json "$@" "$d/a.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uses"])'; }
check "report --since T counts only the second run" test "$(uses --since "$t")" -eq 8
check "report --until T counts only the first run" test "$(uses --until "$t")" -eq 20
check "report --since 1h counts both runs" test "$(uses --since 1h)" -eq 28
check "report --since in the future counts nothing" test "$(uses --since 2099-01-01T00:00:00+01:00)" -eq 0
check "report --since T --key issuing-ec: 4 signatures in the second run" \
	test "$(uses --since "$t" --key issuing-ec)" -eq 4

# Report on a broken log: the counts, a warning, exit 1.
edit "$d/a.log" "$d/t.log" 'del L[9]'
check_exit 1 "report on a broken chain prints and exits 1" "key uses: " \
	"$HSMCA" audit report "$d/t.log"
check "... with a warning on stderr naming the bad record" \
	sh -c "'$HSMCA' audit report '$d/t.log' 2>&1 >/dev/null | grep -q 'warning: .*line 10 (seq 11)'"
check_exit 1 "report --audit-key checks the signatures too" "another key" \
	"$HSMCA" audit report --audit-key "$d/other-pub.pem" "$d/a.log"

tap_done
