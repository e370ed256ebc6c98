#!/usr/bin/env bash
# strata-bench smoke run: a short --verify workload against a live one-node cluster through
# every target type that exists (libstrata, strata-nbd via libnbd, strata-iscsi via libiscsi),
# the scenarios at toy sizes, JSON and bad-argument handling. Asserts zero errors and zero
# mismatches; never asserts a speed.
. "$(dirname "$0")/lib.sh"

for t in python3; do
	command -v "$t" >/dev/null || fail "$t is missing (run scripts/bootstrap)"
done
BENCH=$STRATA_BIN/strata-bench
[ -x "$BENCH" ] || fail "$BENCH is not built"

# ---- cluster: meta, one blockd, gateways that exist ----
start_single 4G
cli volume create p/v --size 256M >/dev/null

TARGETS=("strata://$META/p/v")
if [ -x "$STRATA_BIN/strata-nbd" ]; then
	NBD_PORT=$(free_port)
	start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
	wait_port "$NBD_PORT"
	TARGETS+=("nbd://127.0.0.1:$NBD_PORT/p/v")
fi
if [ -x "$STRATA_BIN/strata-iscsi" ]; then
	ISCSI_PORT=$(free_port)
	start_daemon iscsi "$STRATA_BIN/strata-iscsi" --meta "$META" \
		--listen "127.0.0.1:$ISCSI_PORT" --iqn-prefix iqn.2024-01.org.strata.test
	wait_port "$ISCSI_PORT"
	TARGETS+=("iscsi://127.0.0.1:$ISCSI_PORT/iqn.2024-01.org.strata.test:p.v/0")
fi

step() { echo "== $*"; }

# check_json FILE: zero errors and mismatches, some I/O done.
check_json() {
	python3 - "$1" <<'PY' || fail "bad result: $(cat "$1")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["errors"] == 0, "errors"
assert d["mismatches"] == 0, "mismatches"
assert d["read"]["ios"] + d["write"]["ios"] > 0, "no I/O"
if d["verify"]:
    assert d["verified_sectors"] > 0, "nothing verified"
lat = d["read"]["lat_us"] if d["read"]["ios"] else d["write"]["lat_us"]
assert lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"], "percentiles out of order"
PY
}

# ---- every target: randrw, randwrite with jobs, sequential large blocks, all --verify ----
i=0
for t in "${TARGETS[@]}"; do
	span_off=$((i * 64))M # disjoint regions so targets do not see each other's generations
	step "$t: randrw --verify"
	"$BENCH" run "$t" --rw randrw --rwmix 70 --qd 8 --time 2 --offset "$span_off" \
		--span 16M --verify --json >"$TEST_TMP/r.json" || fail "$t randrw --verify failed"
	check_json "$TEST_TMP/r.json"
	step "$t: randwrite --jobs 2 --verify"
	"$BENCH" run "$t" --rw randwrite --qd 4 --jobs 2 --size 8M --offset "$span_off" \
		--span 16M --verify --json >"$TEST_TMP/w.json" || fail "$t randwrite --verify failed"
	check_json "$TEST_TMP/w.json"
	step "$t: 1M sequential write then read --verify"
	"$BENCH" run "$t" --rw write --bs 1M --qd 4 --size 16M --offset "$span_off" --span 16M \
		--verify --json >"$TEST_TMP/s.json" || fail "$t write --verify failed"
	check_json "$TEST_TMP/s.json"
	"$BENCH" run "$t" --rw read --bs 64k --qd 4 --time 1 --offset "$span_off" --span 16M \
		--verify --quiet >"$TEST_TMP/s.txt" || fail "$t read --verify failed"
	grep -q " 0 mismatches" "$TEST_TMP/s.txt" || fail "$t read: $(cat "$TEST_TMP/s.txt")"
	i=$((i + 1))
done
# strata:// above runs libstrata in poll mode (no I/O thread); the default threaded cluster
# gets the same verified workload.
step "strata:// on libstrata's I/O thread (STRATA_BENCH_THREADED=1): randrw --verify"
STRATA_BENCH_THREADED=1 "$BENCH" run "strata://$META/p/v" --rw randrw --rwmix 50 --qd 8 \
	--time 2 --offset 192M --span 16M --verify --json >"$TEST_TMP/t.json" ||
	fail "threaded randrw --verify failed"
check_json "$TEST_TMP/t.json"

# ---- verify catches bad data: nbdkit's null plugin acknowledges writes and reads zeros ----
command -v nbdkit >/dev/null || fail "nbdkit is missing (run scripts/bootstrap)"
step "verify fails on a target that loses writes"
NULL_PORT=$(free_port)
start_daemon nbdkit-null nbdkit -f -i 127.0.0.1 -p "$NULL_PORT" null size=64M
wait_port "$NULL_PORT"
rc=0
"$BENCH" run "nbd://127.0.0.1:$NULL_PORT/" --rw randrw --qd 4 --time 1 --span 8M --verify \
	--quiet >"$TEST_TMP/null.out" 2>"$TEST_TMP/null.err" || rc=$?
[ "$rc" = 1 ] || fail "verify against a write-losing target exited $rc"
grep -q "verify FAILED" "$TEST_TMP/null.err" || fail "no verify failure: $(cat "$TEST_TMP/null.err")"
grep -q "holds no block of this run" "$TEST_TMP/null.err" || fail "no mismatch detail"
step "verify passes on nbdkit memory (control)"
MEM_PORT=$(free_port)
start_daemon nbdkit-mem nbdkit -f -i 127.0.0.1 -p "$MEM_PORT" memory 64M
wait_port "$MEM_PORT"
"$BENCH" run "nbd://127.0.0.1:$MEM_PORT/" --rw randrw --qd 4 --time 1 --span 8M --verify \
	--json >"$TEST_TMP/mem.json" || fail "verify against nbdkit memory failed"
check_json "$TEST_TMP/mem.json"

# ---- scenarios at toy sizes ----
step "clone-depth 0,1,4"
"$BENCH" clone-depth --meta "$META" --depths 0,1,4 --fill 8M --time 1 --qd 4 --verify \
	--json >"$TEST_TMP/cd.json" || fail "clone-depth failed"
python3 - "$TEST_TMP/cd.json" <<'PY' || fail "clone-depth: $(cat "$TEST_TMP/cd.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert [r["depth"] for r in d["results"]] == [0, 1, 4]
for r in d["results"]:
    assert r["result"]["errors"] == 0 and r["result"]["mismatches"] == 0
PY
step "boot-storm 3 clones"
"$BENCH" boot-storm --meta "$META" --clones 3 --boot-set 8M --vol-size 64M --json \
	>"$TEST_TMP/bs.json" || fail "boot-storm failed"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["result"]["errors"]==0 and d["result"]["read"]["bytes"]==3*8*1048576, d' \
	"$TEST_TMP/bs.json" || fail "boot-storm: $(cat "$TEST_TMP/bs.json")"
step "snap-under-load"
"$BENCH" snap-under-load --meta "$META" --time 2 --interval 0.5 --vol-size 64M --span 16M \
	--json >"$TEST_TMP/sul.json" || fail "snap-under-load failed"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["snapshots"]>=2 and d["result"]["errors"]==0, d' \
	"$TEST_TMP/sul.json" || fail "snap-under-load: $(cat "$TEST_TMP/sul.json")"
step "metaops"
"$BENCH" metaops --meta "$META" --count 5 --json >/dev/null || fail "metaops failed"

# ---- bad arguments: a message and a usage line, exit 2 ----
step "bad arguments"
bad() {
	local rc=0
	"$BENCH" "$@" >"$TEST_TMP/bad.out" 2>"$TEST_TMP/bad.err" || rc=$?
	[ "$rc" = 2 ] || fail "'$*' exited $rc, want 2"
	grep -q "usage:" "$TEST_TMP/bad.err" || fail "'$*' printed no usage line"
	[ "$(wc -l <"$TEST_TMP/bad.err")" -ge 2 ] || fail "'$*' printed no message"
}
bad
bad nosuch
bad run
bad run "${TARGETS[0]}" --rw sideways
bad run "${TARGETS[0]}" --qd 0
bad run "${TARGETS[0]}" --bs
bad run "${TARGETS[0]}" --time soon
bad run "${TARGETS[0]}" --bogus
bad clone-depth --depths 4,2
bad boot-storm --clones 0
rc=0
"$BENCH" run "nbd://127.0.0.1:1/p/v" --time 1 >/dev/null 2>"$TEST_TMP/err" || rc=$?
[ "$rc" = 1 ] || fail "unreachable target exited $rc"
grep -q "cannot connect" "$TEST_TMP/err" || fail "no message for an unreachable target"
rc=0
"$BENCH" run "${TARGETS[0]}" --offset 1G >/dev/null 2>"$TEST_TMP/err" || rc=$?
[ "$rc" = 1 ] && grep -q "beyond" "$TEST_TMP/err" || fail "offset beyond the end: rc $rc"

echo "PASS"
