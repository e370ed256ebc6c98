#!/usr/bin/env bash
# Growth: three nodes, R=2. Verified data is written, a fourth node joins, and rebalancing
# must finish on its own: every PG clean, nothing left to copy, no node holding stray copies
# (all read from `strata status --json`, polled, bounded). Then the data verifies, the primary
# PG counts per node (`strata node ls --json`, reported by each blockd) are roughly even, the
# new node holds data, and the old nodes hold less than before (strays were deleted).
# A second pool has R=1: a PG whose one copy moves to the new node is copied from its old
# holder, now a stray (before, the new node served it empty and the stray deleted the data).
. "$(dirname "$0")/lib.sh"
# Every process here (daemons, CLI, strata-io) uses TCP even on one host: the TCP RPC path
# stays covered now that same-host peers default to the Unix fast path.
export STRATA_TRANSPORT=tcp

PGS=64
QPGS=16
start_meta
# `node ls --json` through python: prints the expression evaluated with n = the node list.
nodes() { cli node ls --json | python3 -c "import json,sys; n=json.load(sys.stdin); print($1)"; }

# The first three remove a stray PG one object per reactor turn (STRATA_STRAY_STEP), so that
# the stepped removal runs here: these PGs hold a few objects, a step holds 32.
for i in 1 2 3; do
	STRATA_STRAY_STEP=1 start_node "$i"
done
wait_up 3
# Small objects over many PGs: the data spreads over every PG.
cli pool create p --replicas 2 --object-size 256K --pgs $PGS >/dev/null
cli volume create p/v --size 1G >/dev/null
cli pool create q --replicas 1 --object-size 256K --pgs $QPGS >/dev/null
cli volume create q/v --size 64M >/dev/null
wait_pgs "$META" clean 30
[ "$(unix_conns "${BD_PID[1]}")" -eq 0 ] || fail "STRATA_TRANSPORT=tcp still used a Unix socket"

echo "== write verified data on three nodes"
io --volume p/v --seconds 4 --qd 16 --span 48M --seed 11 --state "$TEST_TMP/state" \
	>"$TEST_TMP/io.log" 2>&1 || fail "workload failed: $(cat "$TEST_TMP/io.log")"
tail -1 "$TEST_TMP/io.log"
io --volume q/v --seconds 2 --qd 16 --span 16M --seed 12 --state "$TEST_TMP/state.q" \
	>"$TEST_TMP/io.q.log" 2>&1 || fail "R=1 workload failed: $(cat "$TEST_TMP/io.q.log")"
tail -1 "$TEST_TMP/io.q.log"
# Heartbeats carry `used` once a second: wait until every node reports its data.
wait_for 10 sh -c "'$STRATA_BIN/strata' --meta $META node ls --json | python3 -c 'import json,sys; sys.exit(not all(x[\"used\"] > 0 for x in json.load(sys.stdin)))'" ||
	fail "nodes report no data: $(cli node ls)"
# Then until `used` holds still: blocks an overwrite displaced count until a background sync
# frees them, and idle nodes rewrite scattered segments meanwhile (background defrag).
settled_sum() { # a python expression over n, once three reads 1.1 s apart agree (<= 35 s)
	local p1 p2 p3 i
	p1=$(nodes "$1")
	sleep 1.1
	p2=$(nodes "$1")
	for ((i = 0; i < 30; i++)); do
		sleep 1.1
		p3=$(nodes "$1")
		if [ "$p1" = "$p2" ] && [ "$p2" = "$p3" ]; then break; fi
		p1=$p2
		p2=$p3
	done
	echo "$p3"
}
old_before=$(settled_sum 'sum(x["used"] for x in n)')
cli node ls

echo "== a fourth node joins"
# It asks for the PG lists it pulls two objects per page, so that the paging of PG_LIST
# (a full list can be more than one frame holds) runs here on every backfill.
STRATA_PGLIST_PAGE=2 start_node 4
wait_up 4
start=$SECONDS
wait_pgs "$META" settled 60
echo "rebalanced in $((SECONDS - start)) s"
cli status | grep -E '^(pgs|recovery):'

grep -q 'listed in pages' "$TEST_TMP/blockd4.log" || fail "node 4 never listed a PG in pages"
io --volume p/v --check "$TEST_TMP/state" || fail "data does not verify after rebalancing"
io --volume q/v --check "$TEST_TMP/state.q" || fail "R=1 data does not verify after rebalancing"

# Space: node 4 holds data, and the old nodes freed what moved (strays deleted).
wait_for 10 sh -c "'$STRATA_BIN/strata' --meta $META node ls --json | python3 -c '
import json, sys
n = json.load(sys.stdin)
old = sum(x[\"used\"] for x in n if x[\"id\"] != 4)
sys.exit(not (old < $old_before and [x for x in n if x[\"id\"] == 4][0][\"used\"] > 0))'" ||
	fail "old nodes did not free space (before $old_before): $(cli node ls)"
grep -Eq 'removed [2-9][0-9]* objects in [2-9][0-9]* steps' "$TEST_TMP"/blockd[123].log ||
	fail "no stray PG was removed in steps: $(grep -h 'no longer a member' "$TEST_TMP"/blockd[123].log | head -3)"
cli node ls
total_after=$(settled_sum 'sum(x["used"] for x in n)')
old_after=$(nodes 'sum(x["used"] for x in n if x["id"] != 4)')
echo "old nodes: $old_before -> $old_after bytes; all four: $total_after"
# Nothing is lost or duplicated beyond R copies: the total stays what three nodes held.
python3 -c "import sys; sys.exit(not (0.9 * $old_before <= $total_after <= 1.1 * $old_before))" ||
	fail "total space $total_after, want about $old_before"

# PG counts: every PG has one primary (the counts add up), spread roughly evenly.
nodes 'sum(x["pgs_primary"] for x in n)' | grep -qx "$((PGS + QPGS))" ||
	fail "primary PG counts do not add up to $((PGS + QPGS)): $(cli node ls)"
nodes 'sum(x["pgs_member"] for x in n)' | grep -qx "$((2 * PGS + QPGS))" ||
	fail "member PG counts do not add up to $((2 * PGS + QPGS)): $(cli node ls)"
python3 -c "import sys; sys.exit(not all(($PGS + $QPGS) / 4 * 0.5 <= c <= ($PGS + $QPGS) / 4 * 1.5 for c in $(nodes '[x["pgs_primary"] for x in n]')))" ||
	fail "primary PGs per node not roughly even: $(nodes '[x["pgs_primary"] for x in n]')"
echo "primary PGs per node: $(nodes '[x["pgs_primary"] for x in n]')"

scrub_clean p
echo "PASS"
