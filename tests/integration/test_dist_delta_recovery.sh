#!/usr/bin/env bash
# A node that was down while its PGs took more writes than a PG log entry count catches up by
# copying only the objects written meanwhile, not every object of those PGs.
#
# Three nodes, R=3, a 512 MiB volume of 4 MiB objects filled outside its first 32 MiB. Node 1 is
# killed with -9; while it is down a write-and-verify workload hits the first 32 MiB (8
# objects) tens of thousands of times, far past the in-memory log of the last mutations of a
# PG. Node 1 restarts. Before the per-object change tracking, every PG it missed writes in was
# backfilled whole (about 8 objects each); now it must copy at most the 8 objects written.
# Then: the data verifies, scrub finds 0 mismatches, and with nodes 0 and 2 killed, node 1
# alone serves the data written while it was down.
. "$(dirname "$0")/lib.sh"

bench() { "$STRATA_BIN/strata-bench" run "strata://$META/p/v" "$@" --quiet >/dev/null; }
copied() {
	cli status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["recovery"]["objects_copied"])'
}

start_cluster 3 2G
cli pool create p --replicas 3 --pgs 16 >/dev/null
cli volume create p/v --size 512M >/dev/null
wait_pgs "$META" clean 30
bench --rw write --bs 1M --qd 4 --offset 32M --span 480M --size 480M || fail "fill"

echo "== node 1 down while the first 32 MiB take writes"
stop_daemon "${BD_PID[1]}" KILL
wait_pgs "$META" degraded 20
io --volume p/v --seconds 6 --qd 16 --span 32M --seed 11 --state "$TEST_TMP/state" \
	>"$TEST_TMP/io.log" 2>&1 || fail "workload failed: $(cat "$TEST_TMP/io.log")"
tail -1 "$TEST_TMP/io.log"
writes=$(sed -n 's/.* \([0-9]*\) writes.*/\1/p' "$TEST_TMP/io.log" | tail -1)
[ -n "$writes" ] && [ "$writes" -gt $((16 * 512)) ] ||
	fail "the workload wrote too little to outrun the PG logs: $(tail -1 "$TEST_TMP/io.log")"

echo "== node 1 restarts and copies what changed"
start_node 1 2G
wait_up 3 20
start=$SECONDS
wait_pgs "$META" settled 60
n=$(copied)
echo "settled in $((SECONDS - start)) s, objects copied: $n"
[ "$n" -ge 1 ] || fail "node 1 copied nothing: it cannot hold the writes it missed"
[ "$n" -le 8 ] || fail "node 1 copied $n objects: only 8 were written while it was down"
io --volume p/v --check "$TEST_TMP/state" || fail "data lost after the restart"
scrub_clean p

echo "== nodes 0 and 2 die: node 1 alone serves what it caught up on"
stop_daemon "${BD_PID[0]}" KILL
stop_daemon "${BD_PID[2]}" KILL
wait_for 20 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '1 up'" ||
	fail "nodes 0 and 2 never marked down: $(cli status)"
io --volume p/v --check "$TEST_TMP/state" || fail "node 1 does not hold the writes it missed"
echo "PASS"
