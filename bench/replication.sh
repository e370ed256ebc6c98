#!/usr/bin/env bash
# Replication cost: 4k randwrite at QD32 through libstrata (strata-bench) on three local
# blockd nodes, once on an R=1 pool and once on an R=3 pool, same cluster, same span.
# Prints both IOPS figures and the ratio R=3 / R=1.
#
#   bench/replication.sh [SECONDS]   (binaries from $STRATA_BIN, default build/bin)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=${STRATA_BIN:-$SRC/build/bin}
SECS=${1:-15}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-replbench.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$TMP"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
META=127.0.0.1:$(port)
"$BIN/strata-meta" --listen "$META" --data "$TMP/meta" --log-level warn >"$TMP/meta.log" 2>&1 &
PIDS+=($!)
sleep 0.5
for i in 0 1 2; do
	"$BIN/strata-blockd" --meta "$META" --listen "127.0.0.1:$(port)" --data "$TMP/bd$i" \
		--size 4G --log-level warn >"$TMP/bd$i.log" 2>&1 &
	PIDS+=($!)
done
for _ in $(seq 50); do
	"$BIN/strata" --meta "$META" status | grep -q '3 up' && break
	sleep 0.2
done
cli() { "$BIN/strata" --meta "$META" "$@" >/dev/null; }
cli pool create r1 --replicas 1
cli pool create r3 --replicas 3
cli volume create r1/v --size 4G
cli volume create r3/v --size 4G
sleep 1
run() { # pool
	"$BIN/strata-bench" run "strata://$META/$1/v" --rw randwrite --bs 4k --qd 32 \
		--time "$SECS" --span 1G --json --quiet |
		python3 -c 'import json,sys; print(int(json.load(sys.stdin)["write"]["iops"]))'
}
r1=$(run r1)
r3=$(run r3)
python3 -c "import sys; r1,r3=int(sys.argv[1]),int(sys.argv[2]); print(f'4k randwrite QD32, three nodes: R=1 {r1} IOPS, R=3 {r3} IOPS, ratio {r3/r1:.2f}')" "$r1" "$r3"
