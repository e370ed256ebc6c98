#!/usr/bin/env bash
# bench/engine.sh: the issue 4 measurement. fio (io_uring, O_DIRECT) on a plain file beside
# strata-bench through libstrata on a one-node cluster (R=1), same disk, same jobs, one run.
#
#   bench/engine.sh                      (RUNTIME=10 SPAN=1G DATA=4G by default)
#   RUNTIME=5 JOBS="rw32 rr32" bench/engine.sh
#
# blockd gets a DATA-sized data file (default 4 GiB) and fio a DATA-sized plain file in the
# same directory, both written through once with fio first. (blockd redirects every write to
# newly allocated blocks, so over a sparse file each write would be an allocating O_DIRECT
# write that ext4 cannot do without blocking, and io_uring would punt it to a worker thread;
# fio overwrites blocks in place. Writing both files first compares the same thing: I/O to
# allocated blocks, as on a block device.) Both volumes are filled over SPAN so reads hit
# data, then each job runs RUNTIME seconds over SPAN: 4k randread and randwrite at QD32 and
# QD1. The machine is shared and its speed drifts by 1.5x within minutes, so the two sides are
# interleaved: each round runs every job on fio and then at once on strata, ROUNDS times
# (default 3). Prints a Markdown table: median fio IOPS, median strata IOPS, the median of the
# per-round ratios (strata / fio; each ratio compares runs seconds apart), the range of those
# ratios, p50/p99 latency of the median round, and the median CPU time per I/O: fio's own
# (user+system of its processes), against strata-bench's plus blockd's. CPU per I/O swings far
# less than IOPS on a shared machine, so it is what shows a change in cost.
# SPARSE=1 leaves blockd's data file sparse (created by blockd), to see that cost: the prewriter
# (strata-blockd --prewrite-ahead, blockd/prewrite.c) then keeps written space ahead of allocation.
#
# Environment: RUNTIME (s per job), ROUNDS, SPAN (region), DATA (file size), JOBS (subset of
# rr32 rw32 rr1 rw1), BLOCKD_ARGS (extra strata-blockd flags, e.g. --plain-io), STRATA_BIN
# (binaries, default build/bin), TMPDIR (which disk: default /tmp), KEEP_TMP=1, PERF=1 (perf
# record -g each strata process during rw32, into $TMP).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$SRC/bench/lib.sh"
BIN=${STRATA_BIN:-$SRC/build/bin}
RUNTIME=${RUNTIME:-10}
SPAN=${SPAN:-1G}
DATA=${DATA:-4G}
JOBS=(${JOBS:-rr32 rw32 rr1 rw1})
ROUNDS=${ROUNDS:-3}

die() {
	echo "engine: $*" >&2
	exit 1
}
log() { echo "engine: $*" >&2; }
for t in fio python3 /usr/bin/time; do command -v "$t" >/dev/null || die "$t is missing (scripts/bootstrap)"; done
for b in strata-meta strata-blockd strata strata-bench; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is not built"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-engine.XXXXXX")
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -z "${KEEP_TMP:-}" ]; then rm -rf "$TMP"; else log "kept $TMP"; fi
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
	local i
	for ((i = 0; i < 150; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}
job_args() { # job -> rw qd
	case $1 in
	rr32) echo "randread 32" ;; rw32) echo "randwrite 32" ;;
	rr1) echo "randread 1" ;; rw1) echo "randwrite 1" ;;
	*) die "unknown job $1" ;;
	esac
}
declare -A IOPS P50 P99 CPU
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime+stime of a pid, in clock ticks

# ---- fio on a plain file ----
log "fio io_uring O_DIRECT on $TMP/fio.img ($DATA, region $SPAN)"
truncate -s "$DATA" "$TMP/fio.img"
fio --name=fill --filename="$TMP/fio.img" --ioengine=io_uring --direct=1 --rw=write --bs=1M \
	--iodepth=8 --size="$SPAN" --output="$TMP/fill.out" >/dev/null 2>&1 || die "fio fill failed"

# ---- strata: meta + one blockd (R=1) ----
if [ -z "${SPARSE:-}" ]; then
	log "writing blockd's data file once ($DATA)"
	write_through "$TMP/bd.data" "$DATA" || die "writing blockd's data file failed"
fi
MP=$(port)
BP=$(port)
META=127.0.0.1:$MP
"$BIN/strata-meta" --listen "$META" --data "$TMP/meta" --log-level warn >"$TMP/meta.log" 2>&1 &
PIDS+=($!)
wait_port "$MP" || die "strata-meta did not start"
# --no-background-defrag: blockd is idle while fio's jobs run, and its idle-time rewrites of
# the segments the random writes scattered would run then, on fio's disk and CPUs (measured:
# fio randread fell to half, which made strata look faster than fio).
"$BIN/strata-blockd" --meta "$META" --listen "127.0.0.1:$BP" --data "$TMP/bd.data" \
	--size "$DATA" --log-level warn --no-background-defrag ${BLOCKD_ARGS:-} >"$TMP/blockd.log" 2>&1 &
BD_PID=$!
PIDS+=($BD_PID)
for _ in $(seq 100); do
	"$BIN/strata" --meta "$META" status 2>/dev/null | grep -q '1 up' && break
	sleep 0.1
done
cli() { "$BIN/strata" --meta "$META" "$@" >/dev/null; }
cli pool create p --replicas 1
cli volume create p/v --size "$SPAN"
URI=strata://$META/p/v
log "strata-bench through libstrata: $URI (blockd data $DATA)"
"$BIN/strata-bench" run "$URI" --rw write --bs 1M --qd 8 --span "$SPAN" --size "$SPAN" --quiet \
	>/dev/null 2>"$TMP/fill.err" || die "strata fill failed: $(tail -2 "$TMP/fill.err")"
run_fio() { # job round
	local j=$1 k=$2 rw qd
	read -r rw qd <<<"$(job_args "$j")"
	/usr/bin/time -f '%U %S' -o "$TMP/time-fio" \
		fio --name="$j" --filename="$TMP/fio.img" --ioengine=io_uring --direct=1 --rw="$rw" \
		--bs=4k --iodepth="$qd" --size="$SPAN" --time_based --runtime="$RUNTIME" \
		--randrepeat=0 --norandommap --output-format=json --output="$TMP/fio-$j.json" \
		>/dev/null 2>&1 || die "fio $j failed"
	read -r IOPS[fio,$j,$k] P50[fio,$j,$k] P99[fio,$j,$k] CPU[fio,$j,$k] < <(python3 - \
		"$TMP/fio-$j.json" "$(tail -1 "$TMP/time-fio")" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["jobs"][0]
s = d["read"] if d["read"]["io_bytes"] else d["write"]
p = s["clat_ns"]["percentile"]
u, k = map(float, sys.argv[2].split())
print("%.0f %.0f %.0f %.1f" % (s["iops"], p["50.000000"] / 1e3, p["99.000000"] / 1e3,
                               (u + k) * 1e6 / max(s["total_ios"], 1)))
PY
)
	log "round $k fio $j: ${IOPS[fio,$j,$k]} IOPS"
}

run_strata() { # job round
	local j=$1 k=$2 rw qd p
	read -r rw qd <<<"$(job_args "$j")"
	perf_pids=()
	if [ -n "${PERF:-}" ] && [ "$j" = rw32 ]; then
		perf record -g -o "$TMP/perf-blockd.data" -p "$BD_PID" -- sleep "$RUNTIME" \
			>/dev/null 2>&1 &
		perf_pids+=($!)
	fi
	local b0 b1
	b0=$(ticks "$BD_PID")
	/usr/bin/time -f '%U %S' -o "$TMP/time-bench" \
		"$BIN/strata-bench" run "$URI" --rw "$rw" --bs 4k --qd "$qd" --span "$SPAN" \
		--time "$RUNTIME" --json --quiet >"$TMP/strata-$j.json" 2>"$TMP/bench.err" ||
		die "strata-bench $j failed: $(tail -2 "$TMP/bench.err")"
	b1=$(ticks "$BD_PID")
	for p in "${perf_pids[@]}"; do wait "$p" || true; done
	read -r IOPS[strata,$j,$k] P50[strata,$j,$k] P99[strata,$j,$k] CPU[strata,$j,$k] < <(python3 - \
		"$TMP/strata-$j.json" "$(tail -1 "$TMP/time-bench")" "$((b1 - b0))" "$HZ" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["read"] if d["read"]["ios"] else d["write"]
lat = s.get("lat_us", s.get("latency_us", {}))
u, k = map(float, sys.argv[2].split())
cpu = u + k + int(sys.argv[3]) / int(sys.argv[4])
print("%.0f %s %s %.1f" % (s["iops"], lat.get("p50", "n/a"), lat.get("p99", "n/a"),
                           cpu * 1e6 / max(s["ios"], 1)))
PY
)
	log "round $k strata $j: ${IOPS[strata,$j,$k]} IOPS"
}

for ((k = 1; k <= ROUNDS; k++)); do
	for j in "${JOBS[@]}"; do
		run_fio "$j" "$k"
		run_strata "$j" "$k"
	done
done

echo
echo "| 4k job | fio IOPS | strata IOPS | ratio strata/fio (median) | ratio range | fio p50/p99 (us) | strata p50/p99 (us) | CPU per I/O, fio / strata (us) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for j in "${JOBS[@]}"; do
	read -r rw qd <<<"$(job_args "$j")"
	rows=""
	for ((k = 1; k <= ROUNDS; k++)); do
		rows+="${IOPS[fio,$j,$k]} ${IOPS[strata,$j,$k]} ${P50[fio,$j,$k]}/${P99[fio,$j,$k]} ${P50[strata,$j,$k]}/${P99[strata,$j,$k]} ${CPU[fio,$j,$k]} ${CPU[strata,$j,$k]};"
	done
	python3 - "$rw" "$qd" "$rows" <<'PY'
import statistics, sys
rw, qd, rows = sys.argv[1], sys.argv[2], [r.split() for r in sys.argv[3].split(";") if r]
ratios = sorted(float(r[1]) / float(r[0]) for r in rows)
fio = statistics.median(float(r[0]) for r in rows)
st = statistics.median(float(r[1]) for r in rows)
mid = sorted(rows, key=lambda r: float(r[1]) / float(r[0]))[len(rows) // 2]
cf = statistics.median(float(r[4]) for r in rows)
cs = statistics.median(float(r[5]) for r in rows)
print("| %s QD%s | %.0f | %.0f | %.2f | %.2f-%.2f | %s | %s | %.1f / %.1f |" % (
    rw, qd, fio, st, statistics.median(ratios), ratios[0], ratios[-1], mid[2], mid[3], cf, cs))
PY
done
echo
echo "RUNTIME=${RUNTIME}s per job, $ROUNDS rounds (fio and strata alternated), region $SPAN of a $DATA file, $(nproc) CPUs," \
	"dir $(dirname "$TMP"), blockd data file $([ -n "${SPARSE:-}" ] && echo sparse || echo "written once")."
