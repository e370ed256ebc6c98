#!/usr/bin/env bash
# A PG whose every holder is down is served by nobody, rather than by a node without its data.
#
# Two nodes, R=1: each PG's data is on one node. Node 1 is killed and marked down; placement
# moves its PGs to node 2, which does not have their data. Before, node 2 served them as empty
# (the check below read zeros for every block node 1 held) and took writes that node 1's return
# then threw away. Now meta knows from the heartbeats which nodes hold each PG (holders.c), the
# map flags the PGs whose holders are all down, and blockd answers EAGAIN for them: the read
# waits (bounded here by `timeout`) and never sees wrong data. Once node 1 is back, everything
# reads back.
. "$(dirname "$0")/lib.sh"

# node1_down: wait until meta marks node 1 down.
node1_down() {
	wait_for 20 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '1 up'" ||
		fail "node 1 never marked down: $(cli status)"
}
# read_waits VOL STATE LOG: a check of VOL against STATE must wait for node 1 (timeout 8 s)
# and never see a wrong block.
read_waits() {
	local rc=0
	timeout 8 "$STRATA_TEST_BIN/strata-io" --meta "$META" --volume "$1" --check "$2" \
		>"$3" 2>&1 || rc=$?
	grep -q MISMATCH "$3" &&
		fail "a node without the data served it: $(grep -c MISMATCH "$3") blocks wrong"
	[ "$rc" -eq 124 ] || fail "the read did not wait for node 1 (exit $rc): $(tail -2 "$3")"
	echo "the read waited, and saw no wrong data"
}
# node1_back VOL STATE: restart node 1; once every PG is clean, VOL verifies against STATE.
node1_back() {
	start_node 1 1G
	wait_up 2
	wait_pgs "$META" clean 60
	io --volume "$1" --check "$2" || fail "data lost across node 1's absence"
}
start_meta
start_node 1 1G
start_node 2 1G
wait_up 2
cli pool create p --replicas 1 --pgs 16 >/dev/null
cli volume create p/v --size 256M >/dev/null
wait_pgs "$META" clean 30
io --volume p/v --seconds 2 --qd 8 --span 64M --seed 5 --state "$TEST_TMP/state" \
	>"$TEST_TMP/io.log" 2>&1 || fail "workload failed: $(cat "$TEST_TMP/io.log")"
tail -1 "$TEST_TMP/io.log"
sleep 2 # a heartbeat reports what each node holds

echo "== node 1 down: its PGs wait for it"
stop_daemon "${BD_PID[1]}" KILL
node1_down
# `strata status` says so: the PGs node 1 held are down, not clean.
wait_for 10 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q ' down (every node holding'" ||
	fail "status does not show the PGs waiting for node 1: $(cli status)"
cli status | grep '^pgs:'
read_waits p/v "$TEST_TMP/state" "$TEST_TMP/check.log"

echo "== node 1 back"
node1_back p/v "$TEST_TMP/state"

# Node 1 takes the first writes of a new pool's PGs and is killed right away, before its next
# periodic heartbeat. It is on record as their holder anyway: a PG's first write waits for a
# heartbeat that claims it (blockd/dist.c, holder claims). Before, the PGs it was not yet known
# to hold went to node 2 and read as zeros.
echo "== node 1 killed right after the first writes of a new pool"
cli pool create q --replicas 1 --pgs 64 >/dev/null
cli volume create q/w --size 256M >/dev/null
wait_pgs "$META" clean 30
io --volume q/w --millis 150 --qd 16 --span 256M --seed 9 --state "$TEST_TMP/state2" \
	--flush-every 50 --no-end-check >"$TEST_TMP/io2.log" 2>&1 || fail "workload failed: $(cat "$TEST_TMP/io2.log")"
stop_daemon "${BD_PID[1]}" KILL
tail -1 "$TEST_TMP/io2.log"
node1_down
read_waits q/w "$TEST_TMP/state2" "$TEST_TMP/check2.log"
node1_back q/w "$TEST_TMP/state2"
echo "PASS"
