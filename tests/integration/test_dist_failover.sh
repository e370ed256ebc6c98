#!/usr/bin/env bash
# Replication and failover: three nodes, R=3. A write-and-verify workload runs through
# libstrata while one node is killed with -9; meta marks it down after 5 s, the PGs re-peer on
# the survivors and the workload must finish with no error and no mismatch. The node then
# restarts, catches up (log recovery or backfill) until `strata status` shows every PG clean,
# the data verifies, and scrub finds 0 mismatches. Every wait polls `strata status --json`
# (bounded) instead of sleeping: clean before the workload, degraded once node 1 is marked
# down, clean again after its restart.
. "$(dirname "$0")/lib.sh"

META_PORT=$(free_port)
META=127.0.0.1:$META_PORT
cli() { "$STRATA_BIN/strata" --meta "$META" "$@"; }
start_daemon meta "$STRATA_BIN/strata-meta" --listen "$META" --data "$TEST_TMP/meta"
wait_port "$META_PORT"

declare -a BD_PORT BD_PID
start_node() { # index
	local i=$1
	start_daemon "blockd$i" "$STRATA_BIN/strata-blockd" --meta "$META" \
		--listen "127.0.0.1:${BD_PORT[$i]}" --data "$TEST_TMP/bd$i.data" --size 2G
	BD_PID[$i]=$LAST_PID
	wait_port "${BD_PORT[$i]}"
}
for i in 0 1 2; do
	BD_PORT[$i]=$(free_port)
	start_node "$i"
done
wait_for 15 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '3 up'" ||
	fail "three nodes never came up: $(cli status)"
cli pool create p --replicas 3 --pgs 32 >/dev/null
cli volume create p/v --size 1G >/dev/null
wait_pgs "$META" clean 30
io() { "$STRATA_TEST_BIN/strata-io" --meta "$META" "$@"; }

echo "== workload across a kill -9 of node 1"
io --volume p/v --seconds 14 --qd 16 --span 64M --seed 7 --state "$TEST_TMP/state" \
	>"$TEST_TMP/io.log" 2>&1 &
io_pid=$!
sleep 3
stop_daemon "${BD_PID[1]}" KILL
if ! wait "$io_pid"; then
	cat "$TEST_TMP/io.log" >&2
	fail "workload saw errors or mismatches across the kill of node 1"
fi
grep -q ' 0 errors, 0 mismatches' "$TEST_TMP/io.log" || fail "unexpected summary: $(tail -1 "$TEST_TMP/io.log")"
echo "$(tail -1 "$TEST_TMP/io.log")"
cli status | grep -q '1 down' || fail "node 1 not marked down: $(cli status)"
wait_pgs "$META" degraded 15
cli status | grep '^pgs:'

echo "== node 1 restarts and recovers"
start_node 1
wait_for 20 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '3 up'" ||
	fail "node 1 did not come back: $(cli status)"
wait_pgs "$META" clean 60
cli status | grep -E '^(pgs|recovery):'
pgs_are "$META" degraded && fail "degraded PGs left: $(cli status)"
io --volume p/v --check "$TEST_TMP/state" || fail "data lost after the restart"
out=$(cli scrub p) || fail "scrub failed: $out"
echo "$out"
echo "$out" | grep -q ' 0 mismatches' || fail "scrub found mismatches: $out"
echo "PASS"
