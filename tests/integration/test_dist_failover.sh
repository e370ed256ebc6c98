#!/usr/bin/env bash
# Replication and failover: three nodes, R=3. A write-and-verify workload runs through
# libstrata while one node is killed with -9; meta marks it down after 5 s, the PGs re-peer on
# the survivors and the workload must finish with no error and no mismatch. The node then
# restarts, catches up (log recovery or backfill) until `strata status` shows every PG clean,
# the data verifies, and scrub finds 0 mismatches. Every wait polls `strata status --json`
# (bounded) instead of sleeping: clean before the workload, degraded once node 1 is marked
# down, clean again after its restart.
. "$(dirname "$0")/lib.sh"

start_cluster 3 2G
cli pool create p --replicas 3 --pgs 32 >/dev/null
cli volume create p/v --size 1G >/dev/null
wait_pgs "$META" clean 30
# Same-host daemons talk over the Unix twin of each TCP listener (common/net.h).
ss -xlH | grep -q "@strata:127.0.0.1:${BD_PORT[0]} " || fail "node 0 has no same-host socket"
[ "$(unix_conns "${BD_PID[0]}")" -gt 0 ] || fail "node 0 talks to meta and its peers over TCP"

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
start_node 1 2G
wait_up 3 20
wait_pgs "$META" clean 60
cli status | grep -E '^(pgs|recovery):'
pgs_are "$META" degraded && fail "degraded PGs left: $(cli status)"
io --volume p/v --check "$TEST_TMP/state" || fail "data lost after the restart"
scrub_clean p
echo "PASS"
