#!/usr/bin/env bash
# Hostile peers on blockd's wire protocol: blockd_wire_fuzz sends seeded streams of generated
# frames (every request type, fields at their edge values, damaged bodies, payloads and headers)
# and blockd must keep serving, exit cleanly on SIGTERM and leave a store that fsck finds clean.
#   1. one blockd on its own: direct I/O health checks (write, read back) between bursts;
#   2. three blockds in a cluster with an R=3 pool, all fuzzed at once, so the replication,
#      recovery and scrub handlers see forwarded writes, PG lists, object pulls and repairs
#      from "peers"; then the cluster must still be whole: 3 up, and a fresh volume takes a
#      write-and-verify workload through libstrata.
# The seed is printed; FUZZ_SEED=N reproduces a run, FUZZ_SECONDS sets each phase's length.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tools/blockd_helpers.sh"

FUZZ=$STRATA_TEST_BIN/blockd_wire_fuzz
[ -x "$FUZZ" ] || fail "missing $FUZZ (build the tree first)"
SEED=${FUZZ_SEED:-$(date +%s)}
SECS=${FUZZ_SECONDS:-12}
echo "seed $SEED (FUZZ_SEED=$SEED reproduces this run)"

# stop_clean PID NAME: SIGTERM, and the exit status must be 0 (a sanitizer report is not).
stop_clean() {
	kill -TERM "$1"
	local rc=0
	wait "$1" || rc=$?
	[ "$rc" -eq 0 ] || fail "$2 exited with status $rc after SIGTERM"
}

fsck_clean() {
	"$STRATA_BIN/strata-blockd" --fsck --data "$1" >"$TEST_TMP/fsck.out" 2>&1 ||
		fail "fsck of $1: $(cat "$TEST_TMP/fsck.out")"
	grep -q "fsck: clean" "$TEST_TMP/fsck.out" || fail "fsck of $1: $(cat "$TEST_TMP/fsck.out")"
}

echo "== 1. one blockd, direct I/O health checks"
start_blockd "$TEST_TMP/solo.data" --size 512M
"$FUZZ" "$BLOCKD_ADDR" "$SEED" "$SECS" || fail "blockd (alone) did not survive seed $SEED"
kill -0 "$BLOCKD_PID" || fail "blockd died"
stop_clean "$BLOCKD_PID" "blockd (alone)"
fsck_clean "$TEST_TMP/solo.data"

echo "== 2. three blockds, R=3, all fuzzed at once"
start_meta --log-level warn
for i in 0 1 2; do
	start_node "$i" 512M
done
wait_up 3
cli pool create r3 --replicas 3 >/dev/null
cli volume create r3/before --size 64M >/dev/null
"$STRATA_BIN/strata-bench" run "strata://$META/r3/before" --rw write --bs 64k --qd 4 \
	--size 64M --quiet >/dev/null || fail "initial fill"
FPIDS=()
for i in 0 1 2; do
	"$FUZZ" "127.0.0.1:${BD_PORT[$i]}" "$((SEED + i + 1))" "$SECS" --no-health \
		>"$TEST_TMP/fuzz$i.out" 2>&1 &
	FPIDS+=($!)
done
for i in 0 1 2; do
	wait "${FPIDS[$i]}" || fail "node $i did not survive seed $((SEED + i + 1)): $(cat "$TEST_TMP/fuzz$i.out")"
	tail -n 1 "$TEST_TMP/fuzz$i.out"
done
for i in 0 1 2; do
	kill -0 "${BD_PID[$i]}" || fail "node $i died"
done
wait_up 3
wait_pgs "$META" clean 60
# The fuzzed frames were real writes, trims and deletes to whatever they named, so the old
# volume's contents are not checked; a new one must work end to end.
cli volume create r3/after --size 64M >/dev/null
"$STRATA_BIN/strata-bench" run "strata://$META/r3/after" --rw randwrite --bs 4k --qd 8 \
	--time 3 --verify --quiet >/dev/null || fail "write-and-verify on a new volume after the fuzz"
for i in 0 1 2; do
	stop_clean "${BD_PID[$i]}" "node $i"
	fsck_clean "$TEST_TMP/bd$i.data"
done
echo "PASS"
