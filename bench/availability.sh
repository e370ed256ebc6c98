#!/usr/bin/env bash
# bench/availability.sh: how long client writes stall while the cluster recovers or rebalances.
#
#   bash bench/availability.sh [restart|growth]...   (default: both)
#
# restart: three nodes, R=3, 32 PGs, a 1 GiB volume written in full. Node 2 is killed and
#          marked down, a 4k randwrite QD16 run (strata-bench, libstrata) starts over the first
#          256 MiB, and node 2 restarts 3 s into it: it catches up on what changed meanwhile.
# growth:  three nodes, R=2, 32 PGs, the same volume; the run starts, and a fourth node joins
#          3 s into it: a quarter of the data moves.
#
# Printed per scenario: IOPS, the longest a write waited (max latency), and the 1-second ticks
# with no write completed. A PG that does not serve while it copies shows up in both.
# STRATA_BIN / STRATA_TEST_BIN choose the build (default build/bin, build/tests), so two
# builds can be compared on one machine. RUNTIME (default 20) is the run's length.
set -euo pipefail
[ $# -gt 0 ] || set -- restart growth
if [ $# -gt 1 ]; then # one process per scenario: each gets its own cluster and cleanup
	for one in "$@"; do
		bash "$0" "$one"
	done
	exit 0
fi
. "$(dirname "$0")/../tests/integration/lib.sh"

RUNTIME=${RUNTIME:-20}
bench() { "$STRATA_BIN/strata-bench" run "strata://$META/p/v" "$@"; }
node_down() { # wait until meta marks a node down (status shows N up)
	wait_for 20 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '$1 up'" ||
		fail "node never marked down: $(cli status)"
}
summary() { # scenario json
	python3 -c '
import json, sys
d = json.load(open(sys.argv[2]))
w = d["write"]
stalled = sum(1 for t in d["timeline"] if t["iops"] == 0)
print("%-8s %8.0f IOPS  max write latency %7.0f ms  ticks with no write %2d of %d  errors %d" %
      (sys.argv[1], w["iops"], w["lat_us"]["max"] / 1e3, stalled, len(d["timeline"]), d["errors"]))
' "$1" "$2"
}

cluster() { # replicas nodes
	start_meta
	for ((i = 1; i <= $2; i++)); do
		start_node "$i" 4G
	done
	wait_up "$2"
	cli pool create p --replicas "$1" --pgs 32 >/dev/null
	cli volume create p/v --size 1G >/dev/null
	wait_pgs "$META" clean 30
	bench --rw write --bs 1M --qd 4 --size 1G --quiet >/dev/null
}

restart() {
	cluster 3 3
	stop_daemon "${BD_PID[2]}" KILL
	node_down 2
	wait_pgs "$META" degraded 20
	bench --rw randwrite --bs 4k --qd 16 --span 256M --time "$RUNTIME" --quiet --json \
		>"$TEST_TMP/restart.json" &
	local run=$!
	sleep 3
	local t0=$SECONDS
	start_daemon blockd2 "$STRATA_BIN/strata-blockd" --meta "$META" \
		--listen "127.0.0.1:${BD_PORT[2]}" --data "$TEST_TMP/bd2.data" --size 4G
	wait_port "${BD_PORT[2]}" 120
	echo "node 2 listening $((SECONDS - t0)) s after its restart"
	wait "$run"
	summary restart "$TEST_TMP/restart.json"
}

growth() {
	cluster 2 3
	bench --rw randwrite --bs 4k --qd 16 --span 256M --time "$RUNTIME" --quiet --json \
		>"$TEST_TMP/growth.json" &
	local run=$!
	sleep 3
	start_node 4 4G
	wait "$run"
	summary growth "$TEST_TMP/growth.json"
}

case $1 in
restart | growth) "$1" ;;
*) fail "unknown scenario $1 (restart, growth)" ;;
esac
