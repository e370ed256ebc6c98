#!/usr/bin/env bash
# libstrata across blockd restarts: three nodes, R=1, a write-and-verify workload through
# libstrata (strata-io) while one node is killed with -9 and restarted. The workload must see no
# error and no mismatch (requests to the dead node are retried until it is back), and every
# write acknowledged before the last flush must read back intact afterwards.
. "$(dirname "$0")/lib.sh"

start_cluster 3 2G
cli pool create p --replicas 1 --pgs 64 >/dev/null
for v in v0 v1 v2 vall; do cli volume create "p/$v" --size 1G >/dev/null; done

# Each round uses a fresh volume: strata-io expects unwritten blocks to read as zeros.
# `exec`, so that a backgrounded io's pid is strata-io itself and a kill reaches it.
io() { exec "$STRATA_TEST_BIN/strata-io" --meta "$META" "$@"; }

echo "== workload with one kill -9 and restart of each node in turn"
for victim in 0 1 2; do
	io --volume "p/v$victim" --seconds 6 --qd 16 --span 256M --seed $((victim + 11)) --state "$TEST_TMP/state$victim" \
		>"$TEST_TMP/io$victim.log" 2>&1 &
	io_pid=$!
	sleep 2
	stop_daemon "${BD_PID[$victim]}" KILL
	sleep 1
	start_node "$victim" 2G
	if ! wait "$io_pid"; then
		cat "$TEST_TMP/io$victim.log" >&2
		fail "workload saw errors or mismatches across the restart of node $victim"
	fi
	grep -q ' 0 errors, 0 mismatches' "$TEST_TMP/io$victim.log" || fail "unexpected summary"
	writes=$(sed -n 's/^strata-io: \([0-9]*\) writes.*/\1/p' "$TEST_TMP/io$victim.log")
	[ "${writes:-0}" -gt 100 ] || fail "workload made no progress ($writes writes)"
	echo "node $victim: $(tail -1 "$TEST_TMP/io$victim.log")"
done

echo "== after a kill -9 of every node at once, flushed writes survive"
io --volume p/vall --seconds 3 --qd 8 --span 256M --seed 99 --state "$TEST_TMP/state_all" >"$TEST_TMP/io_all.log" 2>&1 &
io_pid=$!
sleep 2
for i in 0 1 2; do stop_daemon "${BD_PID[$i]}" KILL; done
kill -KILL "$io_pid" 2>/dev/null || true
wait "$io_pid" 2>/dev/null || true
[ -s "$TEST_TMP/state_all" ] || fail "no flush completed before the crash"
for i in 0 1 2; do start_node "$i" 2G; done
wait_up 3 20
(io --volume p/vall --check "$TEST_TMP/state_all") || fail "a flushed write was lost or torn"
echo "PASS"
