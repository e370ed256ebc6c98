#!/usr/bin/env bash
# Recovery of an object larger than one frame: a pool with 64 MiB objects, R=2, and a volume
# whose only object is written in full, snapshotted, and written in full again, so that its
# lists and blocks in both layers (128 MiB) are more than one OBJ_GET reply may carry (64 MiB of
# payload). Before pulls were paged, the node brought back empty retried that object forever
# ("frame payload length over the limit"). Now:
#   - node 2 is killed, its store wiped, and it is started again: it registers as a new node
#     at the old one's address, which meta marks down at once (a CI run once saw the PGs
#     "settled" while the dead node still counted as up), and its PGs settle;
#   - scrub finds the two copies identical (both layers);
#   - node 1 is killed: the recovered node alone serves the verified data.
. "$(dirname "$0")/lib.sh"

bench() { "$STRATA_BIN/strata-bench" run "strata://$META/p/v" "$@" --quiet >/dev/null; }
start_meta
for i in 1 2; do
	start_node "$i" 1G
done
wait_up 2
cli pool create p --replicas 2 --object-size 64M --pgs 8 >/dev/null
cli volume create p/v --size 64M >/dev/null
wait_pgs "$META" clean 30

echo "== one 64 MiB object, in full in two layers"
bench --rw write --bs 1M --qd 4 --size 64M || fail "first fill"
cli snap create p/v@s1 >/dev/null
bench --rw write --bs 1M --qd 4 --size 64M || fail "second fill"
io --volume p/v --seconds 2 --qd 16 --span 64M --seed 9 --state "$TEST_TMP/state" \
	>"$TEST_TMP/io.log" 2>&1 || fail "workload failed: $(cat "$TEST_TMP/io.log")"
tail -1 "$TEST_TMP/io.log"

echo "== node 2 comes back empty and pulls it"
stop_daemon "${BD_PID[2]}" KILL
rm -rf "$TEST_TMP/bd2.data" "$TEST_TMP/bd2.data.db" "$TEST_TMP/bd2.data.db.journal"
start_node 2 1G
cli status | grep -Eq '2 up.*, 1 down' ||
	fail "the wiped node's old identity is not down at its successor's registration: $(cli status)"
start=$SECONDS
wait_pgs "$META" settled 90
echo "recovered in $((SECONDS - start)) s"
grep -q "payload length over the limit" "$TEST_TMP"/blockd*.log &&
	fail "a frame over the limit was sent"
out=$(cli scrub p) || fail "scrub failed: $out"
echo "$out"
echo "$out" | grep -q ' 0 mismatches' || fail "scrub found mismatches: $out"
echo "$out" | grep -Eq ' [1-9][0-9]* objects' || fail "scrub compared no object: $out"

echo "== node 1 dies: the recovered copy serves alone"
stop_daemon "${BD_PID[1]}" KILL
wait_for 20 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '1 up'" ||
	fail "node 1 never marked down: $(cli status)"
io --volume p/v --check "$TEST_TMP/state" || fail "data does not verify from the recovered node"
echo "PASS"
