#!/usr/bin/env bash
# Replication cost: 4k randwrite at QD32 through libstrata (strata-bench) on three local
# blockd nodes, once on an R=1 pool and once on an R=3 pool, same cluster, same span.
# Prints both IOPS figures, the ratio R=3 / R=1, and where the CPU went: CPU time of the three
# blockd processes and of the client, per write.
#
#   bench/replication.sh [SECONDS]   (binaries from $STRATA_BIN, default build/bin;
#                                     PGS=N gives both pools N PGs instead of the default)
#
# The data files (DATA each, default 2G) are written through once first, as in engine.sh: a
# redirect-on-write engine over a sparse file makes every write an allocating O_DIRECT write,
# which ext4 cannot do without blocking (io_uring punts it to a worker thread). SPARSE=1 skips
# that.
#
# Adaptive polling (STRATA_SPIN_US, common/reactor.c) is off here unless the caller sets it:
# three daemons and the client oversubscribe two CPUs, so a spinning reactor only fills time a
# neighbour could use, and its spin would count as CPU per write.
set -euo pipefail
export STRATA_SPIN_US=${STRATA_SPIN_US:-0}
SRC=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$SRC/bench/lib.sh"
BIN=${STRATA_BIN:-$SRC/build/bin}
SECS=${1:-15}
bench_tmp replbench
bench_meta
DATA=${DATA:-2G}
BD_PIDS=()
for i in 0 1 2; do
	if [ -z "${SPARSE:-}" ]; then
		write_through "$TMP/bd$i" "$DATA" ||
			{ echo "replication: writing blockd's data file failed" >&2; exit 1; }
	fi
	"$BIN/strata-blockd" --meta "$META" --listen "127.0.0.1:$(free_port)" --data "$TMP/bd$i" \
		--size "$DATA" --log-level warn >"$TMP/bd$i.log" 2>&1 &
	PIDS+=($!)
	BD_PIDS+=($!)
done
for _ in $(seq 50); do
	"$BIN/strata" --meta "$META" status | grep -q '3 up' && break
	sleep 0.2
done
cli() { "$BIN/strata" --meta "$META" "$@" >/dev/null; }
PGS_FLAG=()
[ -z "${PGS:-}" ] || PGS_FLAG=(--pgs "$PGS")
cli pool create r1 --replicas 1 "${PGS_FLAG[@]}"
cli pool create r3 --replicas 3 "${PGS_FLAG[@]}"
cli volume create r1/v --size 1G
cli volume create r3/v --size 1G
sleep 1
ticks() { # PID... -> summed utime+stime in clock ticks
	local p t=0
	for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
	echo "$t"
}
HZ=$(getconf CLK_TCK)
run() { # pool -> "IOPS blockd_us_per_write client_us_per_write"
	local b0 b1 out
	b0=$(ticks "${BD_PIDS[@]}")
	out=$(/usr/bin/time -f '%U %S' "$BIN/strata-bench" run "strata://$META/$1/v" \
		--rw randwrite --bs 4k --qd 32 --time "$SECS" --span 1G --json --quiet 2>"$TMP/time")
	b1=$(ticks "${BD_PIDS[@]}")
	python3 - "$out" "$((b1 - b0))" "$HZ" "$(tail -1 "$TMP/time")" <<'PY'
import json, sys
d = json.loads(sys.argv[1])["write"]
ios, bd, hz = d["ios"], int(sys.argv[2]), int(sys.argv[3])
cu, cs = map(float, sys.argv[4].split())
print(int(d["iops"]), "%.1f" % (bd / hz * 1e6 / ios), "%.1f" % ((cu + cs) * 1e6 / ios))
PY
}
read -r r1 b1 c1 <<<"$(run r1)"
read -r r3 b3 c3 <<<"$(run r3)"
python3 -c "import sys; r1,r3=int(sys.argv[1]),int(sys.argv[2]); print(f'4k randwrite QD32, three nodes: R=1 {r1} IOPS, R=3 {r3} IOPS, ratio {r3/r1:.2f}')" "$r1" "$r3"
files="written once"
[ -z "${SPARSE:-}" ] || files=sparse
echo "CPU per write: R=1 blockd ${b1} us + client ${c1} us; R=3 blockd ${b3} us + client ${c3} us" \
	"($(nproc) CPUs; data files $files, $DATA each)"
