#!/usr/bin/env bash
# `make bench`: run the strata-bench scenarios against a private one-node cluster on loopback
# (free ports, state in a temp dir, everything stopped by pid on exit).
#   COUNT (metaops operations, default 1000), TIME (seconds per measurement, default 5),
#   SCENARIOS (default "metaops clone-depth boot-storm snap-under-load").
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=${STRATA_BIN:-$SRC/build/bin}
COUNT=${COUNT:-1000}
TIME=${TIME:-5}
SCENARIOS=${SCENARIOS:-metaops clone-depth boot-storm snap-under-load}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench.XXXXXX")
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
META=127.0.0.1:$port
"$BIN/strata-meta" --listen "$META" --data "$tmp/meta" --log-level warn &
pids+=($!)
for _ in $(seq 50); do
	"$BIN/strata" --meta "$META" status >/dev/null 2>&1 && break
	sleep 0.1
done
if [ -x "$BIN/strata-blockd" ]; then
	"$BIN/strata-blockd" --meta "$META" --listen "127.0.0.1:$(free_port)" --data "$tmp/bd.data" \
		--size 8G --log-level warn &
	pids+=($!)
	for _ in $(seq 100); do
		"$BIN/strata" --meta "$META" status 2>/dev/null | grep -q '1 up' && break
		sleep 0.1
	done
fi
for s in $SCENARIOS; do
	echo
	case $s in
	metaops) "$BIN/strata-bench" metaops --meta "$META" --count "$COUNT" ;;
	clone-depth) "$BIN/strata-bench" clone-depth --meta "$META" --time "$TIME" ;;
	boot-storm) "$BIN/strata-bench" boot-storm --meta "$META" ;;
	snap-under-load) "$BIN/strata-bench" snap-under-load --meta "$META" --time "$TIME" ;;
	*) echo "run.sh: unknown scenario $s" >&2 && exit 2 ;;
	esac
done
