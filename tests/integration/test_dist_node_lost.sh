#!/usr/bin/env bash
# A node that never comes back: three nodes, R=2. Verified data is written, one node is killed
# with -9 and stays down. Meta marks it down (5 s) and, with a short --down-out-interval, out;
# the PGs it served remap to the two survivors, which re-replicate among themselves until every
# PG is clean again with two copies. The data then verifies and scrub finds no mismatch.
. "$(dirname "$0")/lib.sh"

PGS=32
start_meta --down-out-interval 2
for i in 1 2 3; do
	start_node "$i"
done
wait_up 3
cli pool create p --replicas 2 --object-size 256K --pgs $PGS >/dev/null
cli volume create p/v --size 256M >/dev/null
wait_pgs "$META" clean 30

echo "== write verified data on three nodes"
io --volume p/v --seconds 3 --qd 16 --span 32M --seed 5 --state "$TEST_TMP/state" \
	>"$TEST_TMP/io.log" 2>&1 || fail "workload failed: $(cat "$TEST_TMP/io.log")"
tail -1 "$TEST_TMP/io.log"

echo "== node 3 dies and stays dead"
stop_daemon "${BD_PID[3]}" KILL
wait_for 20 sh -c "'$STRATA_BIN/strata' --meta $META node ls --json | python3 -c 'import json,sys; sys.exit(not any(x[\"id\"] == 3 and x[\"state\"] == \"out\" for x in json.load(sys.stdin)))'" ||
	fail "node 3 never marked out: $(cli node ls)"
start=$SECONDS
wait_pgs "$META" settled 60
echo "re-replicated in $((SECONDS - start)) s"
cli status | grep -E '^(nodes|pgs|recovery):'

# Every PG has both copies on the survivors.
cli node ls --json | python3 -c "
import json, sys
n = [x for x in json.load(sys.stdin) if x['state'] == 'up']
assert len(n) == 2, n
assert sum(x['pgs_member'] for x in n) == 2 * $PGS, [x['pgs_member'] for x in n]
assert sum(x['pgs_primary'] for x in n) == $PGS, [x['pgs_primary'] for x in n]
" || fail "PGs not fully replicated on the survivors: $(cli node ls)"

io --volume p/v --check "$TEST_TMP/state" || fail "data does not verify without node 3"
scrub_clean p
echo "PASS"
