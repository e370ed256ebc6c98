#!/usr/bin/env bash
# Several mutations of one PG in flight (blockd/replicate.c): three nodes, R=3, a pool of two
# PGs, so a queue depth of 32 puts many writes of each PG on the members at once. The primary
# admits a PG's next mutation as soon as the one before it is applied locally and forwarded;
# members apply a PG's forwards one at a time, in the order they came.
# - Overlapping writes at QD32 verify, and scrub then finds the three copies identical (a
#   member that applied two writes to one block in the other order would differ). A scrub
#   run during those writes must finish within 20 s and find nothing either (it holds one
#   object at a time, compares it once no write of it runs, and the others go on).
# - The same across a kill -9 of a member: no error, no mismatch; after its restart recovery
#   ends clean, the data verifies and scrub finds 0 mismatches.
# - Every node logs at stop how many mutations it admitted while an earlier one of the same
#   PG was still out on its members: the primaries' sum must be above zero, or the PGs were
#   still serialized for a whole round trip and this test proved nothing about the overlap.
. "$(dirname "$0")/lib.sh"

start_cluster 3 1G
cli pool create p --replicas 3 --pgs 2 >/dev/null
cli volume create p/v --size 256M >/dev/null
cli volume create p/w --size 256M >/dev/null
wait_pgs "$META" clean 30

echo "== overlapping writes at QD32 over four objects in two PGs, a scrub during them"
io --volume p/v --seconds 5 --qd 32 --span 16M --seed 3 --state "$TEST_TMP/state" \
	>"$TEST_TMP/io1.log" 2>&1 &
io_pid=$!
sleep 1
out=$(timeout 20 "$STRATA_BIN/strata" --meta "$META" scrub p) ||
	fail "scrub under the write load failed or did not finish in 20 s: $out"
echo "during the writes: $out"
echo "$out" | grep -q ' 0 mismatches' || fail "scrub under the write load found mismatches: $out"
wait "$io_pid" || { cat "$TEST_TMP/io1.log" >&2; fail "workload failed"; }
grep -q ' 0 errors, 0 mismatches' "$TEST_TMP/io1.log" ||
	fail "unexpected summary: $(tail -1 "$TEST_TMP/io1.log")"
tail -1 "$TEST_TMP/io1.log"
scrub_clean p "after the overlapping writes"

echo "== the same across a kill -9 of node 2"
io --volume p/w --seconds 12 --qd 32 --span 8M --seed 5 --state "$TEST_TMP/state2" \
	>"$TEST_TMP/io2.log" 2>&1 &
io_pid=$!
sleep 2
stop_daemon "${BD_PID[2]}" KILL
if ! wait "$io_pid"; then
	cat "$TEST_TMP/io2.log" >&2
	fail "workload saw errors or mismatches across the kill of node 2"
fi
grep -q ' 0 errors, 0 mismatches' "$TEST_TMP/io2.log" ||
	fail "unexpected summary: $(tail -1 "$TEST_TMP/io2.log")"
tail -1 "$TEST_TMP/io2.log"
start_node 2 1G
wait_up 3 20
wait_pgs "$META" clean 60
io --volume p/v --check "$TEST_TMP/state" || fail "the first workload's data is lost"
io --volume p/w --check "$TEST_TMP/state2" || fail "the second workload's data is lost"
scrub_clean p "after node 2's recovery"

echo "== the PGs had mutations overlapping on their members"
for i in 0 1 2; do
	stop_daemon "${BD_PID[$i]}" TERM
done
total=0
for i in 0 1 2; do
	n=$(grep -ho 'replication: [0-9]* mutations admitted' "$TEST_TMP"/blockd$i.log |
		awk '{s += $2} END {print s + 0}')
	echo "node $i: $n mutations admitted while an earlier one of their PG was out"
	total=$((total + n))
done
[ "$total" -gt 0 ] || fail "no mutation was admitted while another of its PG was out"
echo "PASS"
