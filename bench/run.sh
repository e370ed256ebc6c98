#!/usr/bin/env bash
# `make bench`: run strata-bench scenarios against a private strata-meta on loopback.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=${STRATA_BIN:-$SRC/build/bin}
COUNT=${COUNT:-1000}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/strata-meta" --listen "127.0.0.1:$port" --data "$tmp/meta" --log-level warn &
meta=$!
trap 'kill "$meta" 2>/dev/null; wait "$meta" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do
	"$BIN/strata" --meta "127.0.0.1:$port" status >/dev/null 2>&1 && break
	sleep 0.1
done
"$BIN/strata-bench" metaops --meta "127.0.0.1:$port" --count "$COUNT"
