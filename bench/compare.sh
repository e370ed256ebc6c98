#!/usr/bin/env bash
# bench/compare.sh: Strata beside the peers users would pick instead, with the same fio jobs.
#
# Builds, starts a private one-node cluster (R=1) on free loopback ports under a temp dir, and
# runs seven jobs against every target: 4k randread and randwrite at QD1 and QD32, 1M sequential
# read (twice: the second pass shows what strata-blockd's read-triggered defragmentation made of
# the layout the random writes scattered) and write (QD8). Prints one Markdown table: IOPS (4k) or MB/s (1M) per target, then
# ratio columns (Strata / peer; above 1 means Strata is faster). A peer that is missing or
# fails prints n/a: no number here is ever estimated.
#
# Rows: raw file (fio io_uring O_DIRECT), qemu-nbd raw (--cache=none --aio=io_uring),
# qemu-nbd qcow2 chain 8 deep, nbdkit file plugin, strata-nbd depth 0 and clone depth 8, and,
# when present, strata-iscsi and tgt. fio here has no libiscsi engine, so the two iSCSI rows
# run the same jobs with strata-bench through libiscsi (marked *).
#
# Every target is started and filled first, and then each job runs on every target back to
# back (job-major order): the machine's speed drifts by up to 1.5x within minutes, and this
# keeps the runs a ratio compares about a minute apart instead of several. Each target still
# sees the seven jobs in the same order.
#
# With ROUNDS=N (default 1) the whole job-major pass runs N times, the targets in reverse order
# in even rounds. Each number in the table is then the median over the rounds, and each ratio is
# the median of the N per-round ratios (each from two runs about a minute apart), followed by
# their range.
#
# Environment: RUNTIME (seconds per job, default 5), SIZE (region, default 512M), ROUNDS,
# JOBS (a subset of "rr1 rr32 rw1 rw32 sr sr2 sw", in that order), BUILD (build dir, default
# build), NO_BUILD=1 (skip the build), KEEP_TMP=1, SPARSE=1 (leave blockd's data file sparse
# instead of writing it through first).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$SRC/bench/lib.sh"
BUILD=${BUILD:-build}
RUNTIME=${RUNTIME:-5}
SIZE=${SIZE:-512M}
ROUNDS=${ROUNDS:-1}
BIN=$SRC/$BUILD/bin

die() {
	echo "compare: $*" >&2
	exit 1
}
for t in fio qemu-img python3; do
	command -v "$t" >/dev/null || die "$t is missing (run scripts/bootstrap)"
done

if [ -z "${NO_BUILD:-}" ]; then
	cmake -S "$SRC" -B "$SRC/$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$SRC/$BUILD" -j "$(nproc)" >/dev/null
fi
for b in strata-meta strata-blockd strata strata-nbd strata-bench; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is not built"
done

# blockd's 8 GiB data file, written through, and the peers' images need about 12 GiB; a file
# system left nearly full by the run would also slow every target down and skew the ratios.
avail_kib=$(df -Pk "${TMPDIR:-/tmp}" | awk 'NR == 2 { print $4 }')
[ "${avail_kib:-0}" -ge $((12 * 1024 * 1024)) ] ||
	die "need 12 GiB free under ${TMPDIR:-/tmp}, have $((${avail_kib:-0} / 1024)) MiB (set TMPDIR)"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/strata-compare.XXXXXX")
PIDS=()
TGT_CP=
cleanup() {
	local p
	if [ -n "$TGT_CP" ]; then # tgtd ignores SIGTERM while it has targets
		tgtadm -C "$TGT_CP" --lld iscsi --op delete --mode target --tid 1 --force \
			>/dev/null 2>&1 || true
		tgtadm -C "$TGT_CP" --op delete --mode system >/dev/null 2>&1 || true
	fi
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ -z "${KEEP_TMP:-}" ]; then rm -rf "$tmp"; else echo "kept $tmp" >&2; fi
}
trap cleanup EXIT
log() { echo "compare: $*" >&2; }

wait_port() {
	local i
	for ((i = 0; i < 150; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}
start() { # name cmd... : background, logged, stopped by pid on exit
	local name=$1
	shift
	"$@" >"$tmp/$name.log" 2>&1 &
	PIDS+=($!)
}

# ---- the seven jobs (sr2 repeats sr: the second pass over data the random writes scattered) ----
ALL_JOBS="rr1 rr32 rw1 rw32 sr sr2 sw"
read -r -a JOBS <<<"${JOBS:-$ALL_JOBS}"
for j in "${JOBS[@]}"; do
	case " $ALL_JOBS " in *" $j "*) ;; *) die "unknown job '$j' in JOBS (want some of: $ALL_JOBS)" ;; esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
declare -A JOB_TITLE=([rr1]="4k randread QD1 (IOPS)" [rr32]="4k randread QD32 (IOPS)"
	[rw1]="4k randwrite QD1 (IOPS)" [rw32]="4k randwrite QD32 (IOPS)"
	[sr]="1M seq read QD8 (MB/s)" [sr2]="same, again (MB/s)" [sw]="1M seq write QD8 (MB/s)")
job_args() { # job -> fio rw bs iodepth
	case $1 in
	rr1) echo "randread 4k 1" ;; rr32) echo "randread 4k 32" ;;
	rw1) echo "randwrite 4k 1" ;; rw32) echo "randwrite 4k 32" ;;
	sr | sr2) echo "read 1M 8" ;; sw) echo "write 1M 8" ;;
	esac
}

declare -A RES # RES[row,job,round] = number; RES[row,job] = the median over the rounds
ROWS=()

declare -A ROW_KIND ROW_ARGS # how each available row runs its jobs (set by fio_row/bench_row)

# fio_row ROW fio-target-args... : a row whose jobs fio runs (later, in job-major order).
fio_row() {
	local row=$1
	shift
	ROWS+=("$row")
	ROW_KIND[$row]=fio
	ROW_ARGS[$row]=$(printf '%s\x1f' "$@")
}

# bench_row ROW URI : a row whose jobs strata-bench runs (for iSCSI).
bench_row() {
	ROWS+=("$1")
	ROW_KIND[$1]=bench
	ROW_ARGS[$1]=$2
}

run_fio_job() { # row job round fio-target-args...
	local row=$1 j=$2 k=$3 rw bs qd out
	shift 3
	read -r rw bs qd <<<"$(job_args "$j")"
	out=$tmp/fio-$j.json
	if fio --name="$j" "$@" --rw="$rw" --bs="$bs" --iodepth="$qd" --size="$SIZE" \
		--time_based --runtime="$RUNTIME" --randrepeat=0 --norandommap \
		--output-format=json --output="$out" >"$tmp/fio.err" 2>&1; then
		RES[$row,$j,$k]=$(python3 - "$out" "$j" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["jobs"][0]
j = sys.argv[2]
side = d["read"] if j in ("rr1", "rr32", "sr", "sr2") else d["write"]
if d.get("error"):
    sys.exit(1)
print("%.0f" % (side["iops"] if j in ("rr1", "rr32", "rw1", "rw32") else side["bw_bytes"] / 1e6))
PY
) || RES[$row,$j,$k]=
	else
		log "$row $j: fio failed: $(tail -2 "$tmp/fio.err" | tr '\n' ' ')"
	fi
	log "round $k: $row $j: ${RES[$row,$j,$k]:-n/a}"
}

run_bench_job() { # row job round uri
	local row=$1 j=$2 k=$3 uri=$4 rw bs qd out
	read -r rw bs qd <<<"$(job_args "$j")"
	out=$tmp/bench-$j.json
	if "$BIN/strata-bench" run "$uri" --rw "$rw" --bs "$bs" --qd "$qd" --span "$SIZE" \
		--time "$RUNTIME" --json >"$out" 2>"$tmp/bench.err"; then
		RES[$row,$j,$k]=$(python3 - "$out" "$j" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
j = sys.argv[2]
side = d["read"] if j in ("rr1", "rr32", "sr", "sr2") else d["write"]
print("%.0f" % (side["iops"] if j in ("rr1", "rr32", "rw1", "rw32") else side["mbps"]))
PY
)
	else
		log "$row $j: strata-bench failed: $(tail -2 "$tmp/bench.err" | tr '\n' ' ')"
	fi
	log "round $k: $row $j: ${RES[$row,$j,$k]:-n/a}"
}

# Write the whole region once so reads hit data, not holes.
fill_fio() { fio --name=fill "$@" --rw=write --bs=1M --iodepth=8 --size="$SIZE" \
	--output="$tmp/fill.out" >/dev/null 2>&1; }

NBD_FIO=(--ioengine=nbd)

# ---- raw file ----
log "raw file (fio io_uring O_DIRECT)"
fill_fio --ioengine=io_uring --direct=1 --filename="$tmp/raw.img"
fio_row "raw file" --ioengine=io_uring --direct=1 --filename="$tmp/raw.img"

# ---- qemu-nbd raw ----
if command -v qemu-nbd >/dev/null; then
	log "qemu-nbd raw"
	qemu-img create -q -f raw "$tmp/q.img" "$SIZE"
	p=$(free_port)
	start qemu-nbd qemu-nbd -f raw --cache=none --aio=io_uring -b 127.0.0.1 -p "$p" -x "" \
		--persistent --shared=16 "$tmp/q.img"
	if wait_port "$p"; then
		fill_fio "${NBD_FIO[@]}" --uri="nbd://127.0.0.1:$p/"
		fio_row "qemu-nbd raw" "${NBD_FIO[@]}" --uri="nbd://127.0.0.1:$p/"
	else ROWS+=("qemu-nbd raw"); fi

	log "qemu-nbd qcow2 chain 8 deep"
	# Base holds the data; eight empty overlays on top, so every read walks the chain.
	qemu-img convert -q -f raw -O qcow2 "$tmp/raw.img" "$tmp/c0.qcow2"
	for i in 1 2 3 4 5 6 7 8; do
		qemu-img create -q -f qcow2 -b "$tmp/c$((i - 1)).qcow2" -F qcow2 "$tmp/c$i.qcow2"
	done
	p=$(free_port)
	start qemu-nbd-qcow2 qemu-nbd -f qcow2 --cache=none --aio=io_uring -b 127.0.0.1 -p "$p" \
		-x "" --persistent --shared=16 "$tmp/c8.qcow2"
	if wait_port "$p"; then
		fio_row "qemu-nbd qcow2 depth 8" "${NBD_FIO[@]}" --uri="nbd://127.0.0.1:$p/"
	else ROWS+=("qemu-nbd qcow2 depth 8"); fi
else
	ROWS+=("qemu-nbd raw" "qemu-nbd qcow2 depth 8")
fi

# ---- nbdkit file ----
if command -v nbdkit >/dev/null; then
	log "nbdkit file plugin"
	truncate -s "$SIZE" "$tmp/k.img"
	p=$(free_port)
	start nbdkit nbdkit -f -i 127.0.0.1 -p "$p" file "$tmp/k.img" cache=none
	if wait_port "$p"; then
		fill_fio "${NBD_FIO[@]}" --uri="nbd://127.0.0.1:$p/"
		fio_row "nbdkit file" "${NBD_FIO[@]}" --uri="nbd://127.0.0.1:$p/"
	else ROWS+=("nbdkit file"); fi
else
	ROWS+=("nbdkit file")
fi

# ---- Strata: meta, one blockd, strata-nbd, strata-iscsi if built ----
log "strata cluster"
MP=$(free_port)
BP=$(free_port)
NP=$(free_port)
META=127.0.0.1:$MP
cli() { "$BIN/strata" --meta "$META" "$@" >/dev/null; }
start meta "$BIN/strata-meta" --listen "$META" --data "$tmp/meta" --log-level warn
wait_port "$MP" || die "strata-meta did not start"
# blockd's data file is written through once first, as the peers' files are by the fill and as
# engine.sh and replication.sh do: a node that has run for a while has written its whole file,
# and on a fresh sparse file the prewriter (blockd/prewrite.c) writes zeros ahead of allocation
# while the jobs run, one block of zeros for every block of data until it reaches the end of the
# file. SPARSE=1 keeps the file sparse, to see that cost.
if [ -z "${SPARSE:-}" ]; then
	log "writing blockd's data file once (8G)"
	write_through "$tmp/bd.data" 8G || die "writing blockd's data file failed"
fi
# No background defragmentation: it would run while the peers' jobs run (blockd is idle
# then) and take their CPU and disk. The read-triggered kind stays (sr, then sr2).
start blockd "$BIN/strata-blockd" --meta "$META" --listen "127.0.0.1:$BP" --data "$tmp/bd.data" \
	--size 8G --log-level warn --no-background-defrag
wait_port "$BP" || die "strata-blockd did not start"
for _ in $(seq 100); do
	"$BIN/strata" --meta "$META" status 2>/dev/null | grep -q '1 up' && break
	sleep 0.1
done
cli pool create p --replicas 1
cli volume create p/d0 --size "$SIZE"
start strata-nbd "$BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NP" --log-level warn
wait_port "$NP" || die "strata-nbd did not start"
fill_fio "${NBD_FIO[@]}" --uri="nbd://127.0.0.1:$NP/p/d0"
# The clone chain 8 deep over the filled volume, before d0 is written again by the jobs.
for i in 1 2 3 4 5 6 7 8; do
	cli snap create "p/d$((i - 1))@s"
	cli clone "p/d$((i - 1))@s" "p/d$i"
done
log "strata-nbd depth 8"
fio_row "strata-nbd depth 8" "${NBD_FIO[@]}" --uri="nbd://127.0.0.1:$NP/p/d8"
log "strata-nbd depth 0"
cli volume create p/z0 --size "$SIZE"
fill_fio "${NBD_FIO[@]}" --uri="nbd://127.0.0.1:$NP/p/z0"
fio_row "strata-nbd depth 0" "${NBD_FIO[@]}" --uri="nbd://127.0.0.1:$NP/p/z0"

if [ -x "$BIN/strata-iscsi" ]; then
	log "strata-iscsi"
	IP=$(free_port)
	cli volume create p/i0 --size "$SIZE"
	start strata-iscsi "$BIN/strata-iscsi" --meta "$META" --listen "127.0.0.1:$IP" \
		--iqn-prefix iqn.2024-01.org.strata.compare --log-level warn
	if wait_port "$IP"; then
		uri=iscsi://127.0.0.1:$IP/iqn.2024-01.org.strata.compare:p.i0/0
		"$BIN/strata-bench" run "$uri" --rw write --bs 1M --qd 8 --size "$SIZE" --quiet \
			>/dev/null 2>&1 || log "strata-iscsi fill failed"
		bench_row "strata-iscsi *" "$uri"
	else ROWS+=("strata-iscsi *"); fi
else
	ROWS+=("strata-iscsi *")
fi

# ---- tgt ----
if command -v tgtd >/dev/null && command -v tgtadm >/dev/null; then
	log "tgt"
	TP=$(free_port)
	CP=$((20000 + RANDOM % 10000))
	truncate -s "$SIZE" "$tmp/tgt.img"
	start tgtd tgtd -f -C "$CP" --iscsi "portal=127.0.0.1:$TP"
	TGT_CP=$CP
	tgt_ok=
	if wait_port "$TP"; then
		ta() { tgtadm -C "$CP" --lld iscsi "$@"; }
		if ta --op new --mode target --tid 1 -T iqn.2024-01.org.strata.compare:tgt &&
			ta --op new --mode logicalunit --tid 1 --lun 1 -b "$tmp/tgt.img" \
				--bsoflags direct &&
			ta --op bind --mode target --tid 1 -I 127.0.0.1; then
			tgt_ok=1
		fi
	fi
	if [ -n "$tgt_ok" ]; then
		uri=iscsi://127.0.0.1:$TP/iqn.2024-01.org.strata.compare:tgt/1
		"$BIN/strata-bench" run "$uri" --rw write --bs 1M --qd 8 --size "$SIZE" --quiet \
			>/dev/null 2>&1 || log "tgt fill failed"
		bench_row "tgt (file, O_DIRECT) *" "$uri"
	else
		log "tgt did not start: $(tail -3 "$tmp/tgtd.log" | tr '\n' ' ')"
		ROWS+=("tgt (file, O_DIRECT) *")
	fi
else
	ROWS+=("tgt (file, O_DIRECT) *")
fi

# ---- the jobs, job-major: every target runs job 1, then every target runs job 2, ... ----
for ((k = 1; k <= ROUNDS; k++)); do
	# Even rounds take the targets in reverse order: a run goes a little faster or slower for
	# what ran just before it (a /tmp harness saw 6-49% between two identical gateways taking
	# turns), and alternating the order evens that out over the rounds.
	order=("${ROWS[@]}")
	if ((k % 2 == 0)); then
		order=()
		for ((i = ${#ROWS[@]} - 1; i >= 0; i--)); do order+=("${ROWS[$i]}"); done
	fi
	for j in "${JOBS[@]}"; do
		for r in "${order[@]}"; do
			case ${ROW_KIND[$r]:-} in
			fio)
				IFS=$'\x1f' read -r -a args <<<"${ROW_ARGS[$r]}"
				run_fio_job "$r" "$j" "$k" "${args[@]}"
				;;
			bench) run_bench_job "$r" "$j" "$k" "${ROW_ARGS[$r]}" ;;
			esac
		done
	done
done

median_of() { # row job: the median of RES[row,job,round] over the rounds (failed ones skipped)
	local k v=()
	for ((k = 1; k <= ROUNDS; k++)); do v+=("${RES[$1,$2,$k]:-}"); done
	python3 -c 'import statistics, sys; v = [float(x) for x in sys.argv[1:] if x]; print("%.0f" % statistics.median(v) if v else "")' "${v[@]}"
}
for r in "${ROWS[@]}"; do
	for j in "${JOBS[@]}"; do RES[$r,$j]=$(median_of "$r" "$j"); done
done

# ---- the table ----
# Ratio columns: Strata row / peer row, per job (higher is better for Strata).
RATIOS=("strata-nbd depth 0|raw file" "strata-nbd depth 0|qemu-nbd raw"
	"strata-nbd depth 0|nbdkit file" "strata-nbd depth 8|qemu-nbd qcow2 depth 8"
	"strata-iscsi *|tgt (file, O_DIRECT) *")
short() {
	case $1 in
	"strata-nbd depth 0") echo "d0" ;; "strata-nbd depth 8") echo "d8" ;;
	"strata-iscsi *") echo "s-iscsi" ;; "raw file") echo "raw" ;;
	"qemu-nbd raw") echo "qemu-nbd" ;; "qemu-nbd qcow2 depth 8") echo "qcow2-8" ;;
	"nbdkit file") echo "nbdkit" ;; "tgt (file, O_DIRECT) *") echo "tgt" ;;
	*) echo "$1" ;;
	esac
}
ratio() { # row-a row-b job: the median of the per-round ratios, with their range
	local k pairs=()
	for ((k = 1; k <= ROUNDS; k++)); do pairs+=("${RES[$1,$3,$k]:-}/${RES[$2,$3,$k]:-}"); done
	python3 - "${pairs[@]}" <<'PY'
import statistics, sys
r = []
for p in sys.argv[1:]:
    a, b = p.split("/")
    if a and b and float(b) != 0:
        r.append(float(a) / float(b))
if not r:
    print("n/a")
elif len(r) == 1:
    print("%.2f" % r[0])
else:
    print("%.2f (%.2f-%.2f)" % (statistics.median(r), min(r), max(r)))
PY
}
hdr="| target |"
sep="|---|"
for j in "${JOBS[@]}"; do
	hdr+=" ${JOB_TITLE[$j]} |"
	sep+="---:|"
done
echo
echo "$hdr"
echo "$sep"
for r in "${ROWS[@]}"; do
	line="| $r |"
	for j in "${JOBS[@]}"; do line+=" ${RES[$r,$j]:-n/a} |"; done
	echo "$line"
done
for pr in "${RATIOS[@]}"; do
	a=${pr%%|*}
	b=${pr#*|}
	line="| ratio $(short "$a") / $(short "$b") |"
	for j in "${JOBS[@]}"; do line+=" $(ratio "$a" "$b" "$j") |"; done
	echo "$line"
done
echo
echo "RUNTIME=${RUNTIME}s per job, region $SIZE, job-major order, $ROUNDS round(s) (numbers: medians; ratios: median (range) of the per-round ratios), blockd data file $([ -n "${SPARSE:-}" ] && echo sparse || echo "written once");" \
	"* = same job through strata-bench (libiscsi)."
