#!/usr/bin/env bash
# What background work costs clients: 4k random reads at QD1 (RW=randwrite for writes, QD=N
# for another queue depth) through libstrata (strata-bench) on an R=2 volume of two local
# blockd nodes, first alone, then while
#   scrub   `strata scrub` runs in a loop on the pool (every object's digest on both nodes);
#   join    a third node joins and pulls its share of the PGs from the two (rebalancing).
# Prints IOPS and the latency percentiles of both runs (and, for scrub, a run after it).
#
#   bench/background.sh scrub|join [SECONDS]   (binaries from $STRATA_BIN, default build/bin;
#                                              $BLOCKD overrides strata-blockd, for an A/B of
#                                              two builds; VOL sets the volume size, 1G;
#                                              SCRUB_MBPS=N passes --max-mbps N to the scrubs)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$SRC/bench/lib.sh"
BIN=${STRATA_BIN:-$SRC/build/bin}
BD=${BLOCKD:-$BIN/strata-blockd}
MODE=${1:-}
SECS=${2:-8}
VOL=${VOL:-1G}
case "$MODE" in
scrub | join) ;;
*)
	echo "usage: bench/background.sh scrub|join [SECONDS]" >&2
	exit 2
	;;
esac
bench_tmp bgbench
bench_meta
node() {
	"$BD" --meta "$META" --listen "127.0.0.1:$(free_port)" --data "$TMP/bd$1" --size 4G \
		>"$TMP/bd$1.log" 2>&1 &
	PIDS+=($!)
}
cli() { "$BIN/strata" --meta "$META" "$@"; }
node 0
node 1
for _ in $(seq 50); do
	cli status 2>/dev/null | grep -q '2 up' && break
	sleep 0.2
done
cli pool create p --replicas 2 >/dev/null
cli volume create p/v --size "$VOL" >/dev/null
sleep 1
"$BIN/strata-bench" run "strata://$META/p/v" --rw write --bs 1M --qd 8 --size "$VOL" --quiet \
	>/dev/null
RW=${RW:-randread}
QD=${QD:-1}
case "$RW" in
randread | randwrite) ;;
*)
	echo "background: RW must be randread or randwrite, not '$RW'" >&2
	exit 2
	;;
esac
reads() { # label
	"$BIN/strata-bench" run "strata://$META/p/v" --rw "$RW" --bs 4k --qd "$QD" --time "$SECS" \
		--json --quiet | python3 -c '
import json, sys
d = json.load(sys.stdin)
d = d["read"] if sys.argv[2] == "randread" else d["write"]
l = d["lat_us"]
print("%-22s %7d IOPS  p50 %.0f us  p99 %.0f us  p99.9 %.0f us  max %.0f us" %
      (sys.argv[1], d["iops"], l["p50"], l["p99"], l["p99.9"], l["max"]))' "$1" "$RW"
}
reads "alone"
if [ "$MODE" = scrub ]; then
	(
		end=$((SECONDS + SECS + 2))
		n=0
		while [ $SECONDS -lt $end ]; do
			cli scrub p ${SCRUB_MBPS:+--max-mbps "$SCRUB_MBPS"} >"$TMP/scrub.out" 2>&1 || true
			n=$((n + 1))
		done
		echo "$n scrubs; the last: $(tail -1 "$TMP/scrub.out")"
	) &
	SP=$!
	sleep 1
	reads "during scrub"
	wait "$SP"
	reads "after"
else
	node 2
	sleep 1
	reads "while a node joins"
	echo "the new node: $(grep -c 'pulled' "$TMP/bd2.log" || true) PG pulls;" \
		"$(cli status | grep -i 'recovery' | head -1 | sed 's/^ *//')"
fi
