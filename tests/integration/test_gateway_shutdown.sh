#!/usr/bin/env bash
# The gateways stopped under load. For strata-nbd (fio's nbd engine) and strata-iscsi
# (strata-bench's initiator), three rounds each: write a pattern through the gateway, start a
# randrw workload at queue depth 32 on another part of the volume, SIGTERM the gateway 2.5 s
# in and require exit status 0 within 10 s; then start it again and read every pattern
# written so far back through it. strata-iscsi used to segfault here: initiators' PDUs that
# arrived while st_reactor_destroy cancelled the receives were dispatched into a cluster that
# strata_disconnect had freed. Last, strata-meta is stopped for a while under both workloads:
# both gateways must keep serving without an I/O error and then stop cleanly (strata-iscsi
# used to segfault as soon as a command's reservation check could not connect to meta).
. "$(dirname "$0")/lib.sh"

for t in fio qemu-io ps; do
	command -v "$t" >/dev/null || fail "$t is missing (run scripts/bootstrap)"
done
fio --enghelp=nbd >/dev/null 2>&1 || fail "this fio has no nbd engine (run scripts/bootstrap)"
# A crashed gateway's core dump lands here (kept with KEEP_TMP=1), not in the caller's cwd.
cd "$TEST_TMP" || fail "cd $TEST_TMP"

PFX=iqn.2026-11.io.strata
MB=$((1 << 20))
start_meta
start_node 0 2G
wait_up 1
cli pool create p --replicas 1 --pgs 16 >/dev/null
cli volume create p/v --size 512M >/dev/null
wait_pgs "$META" clean 30

NBD_PORT=$(free_port)
ISC_PORT=$(free_port)
NBD_URI=nbd://127.0.0.1:$NBD_PORT/p/v
ISC_URI=iscsi://127.0.0.1:$ISC_PORT/$PFX:p.v/0
uri() { if [ "$1" = nbd ]; then echo "$NBD_URI"; else echo "$ISC_URI"; fi; }

# start_gw nbd|iscsi: sets GW_PID.
start_gw() {
	if [ "$1" = nbd ]; then
		start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" \
			--listen "127.0.0.1:$NBD_PORT"
		wait_port "$NBD_PORT"
	else
		start_daemon iscsi "$STRATA_BIN/strata-iscsi" --meta "$META" \
			--listen "127.0.0.1:$ISC_PORT"
		wait_port "$ISC_PORT"
	fi
	GW_PID=$LAST_PID
}

# stop_gw PID NAME: SIGTERM; it must exit with status 0 within 10 s.
stop_gw() {
	local pid=$1 name=$2 rc=0 i st
	kill -TERM "$pid"
	for ((i = 0; i < 100; i++)); do
		st=$(ps -o stat= -p "$pid" || true)
		case "$st" in "" | Z*) break ;; esac
		sleep 0.1
	done
	if [ "$i" -eq 100 ]; then
		stop_daemon "$pid" KILL
		fail "$name still running 10 s after SIGTERM under load"
	fi
	wait "$pid" || rc=$?
	[ "$rc" -eq 0 ] || fail "$name exited with status $rc on SIGTERM under load"
}

# load nbd|iscsi SECS: randrw at QD 32 on [64M, 512M), away from the patterns; sets LOAD_PID.
load() {
	if [ "$1" = nbd ]; then
		fio --name=load --ioengine=nbd --uri="$NBD_URI" --rw=randrw --bs=4k --iodepth=32 \
			--numjobs=2 --thread --time_based --runtime="$2" --offset=64M --size=448M \
			>"$TEST_TMP/load.log" 2>&1 &
	else
		"$STRATA_BIN/strata-bench" run "$ISC_URI" --rw randrw --qd 32 --jobs 2 --time "$2" \
			--offset 64M --span 448M --quiet >"$TEST_TMP/load.log" 2>&1 &
	fi
	LOAD_PID=$!
}

# qio GW CMD...: qemu-io through the gateway; fails on an error or a pattern mismatch.
qio() {
	local url
	url=$(uri "$1")
	shift
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	qemu-io -f raw "$url" "${args[@]}" >"$TEST_TMP/qio.log" 2>&1 ||
		fail "qemu-io on $url: $(cat "$TEST_TMP/qio.log")"
	if grep -qi "verification failed\|error" "$TEST_TMP/qio.log"; then
		fail "qemu-io on $url: $(cat "$TEST_TMP/qio.log")"
	fi
}

# Each round writes one more 1M pattern below 64M (the n-th at n M) and reads all of them back
# after the restart, through either gateway.
PAT_OFF=()
PAT_VAL=()
declare -A GW_LEFT=()
for gw in nbd iscsi; do
	start_gw "$gw"
	for round in 1 2 3; do
		echo "== $gw round $round: SIGTERM under load"
		off=$(((${#PAT_OFF[@]} + 1) * MB))
		val=$((0x10 + ${#PAT_OFF[@]}))
		qio "$gw" "write -P $val $off 1M"
		PAT_OFF+=("$off")
		PAT_VAL+=("$val")
		load "$gw" 8
		sleep 2.5
		kill -0 "$LOAD_PID" 2>/dev/null ||
			fail "$gw workload ended early: $(tail -5 "$TEST_TMP/load.log")"
		stop_gw "$GW_PID" "strata-$gw"
		kill -KILL "$LOAD_PID" 2>/dev/null || true # it may be retrying a dead portal
		wait "$LOAD_PID" 2>/dev/null || true

		start_gw "$gw"
		reads=()
		for i in "${!PAT_OFF[@]}"; do
			reads+=("read -P ${PAT_VAL[$i]} ${PAT_OFF[$i]} 1M")
		done
		qio "$gw" "${reads[@]}"
		[ "$(grep -c "read $MB/$MB" "$TEST_TMP/qio.log")" -eq "${#reads[@]}" ] ||
			fail "read back after the restart: $(cat "$TEST_TMP/qio.log")"
	done
	GW_LEFT[$gw]=$GW_PID # left running for the meta phase
done

echo "== strata-meta stopped for 2 s under both workloads"
fio --name=load --ioengine=nbd --uri="$NBD_URI" --rw=randrw --bs=4k --iodepth=32 --numjobs=2 \
	--thread --time_based --runtime=6 --offset=64M --size=448M >"$TEST_TMP/load_nbd.log" 2>&1 &
nbd_load=$!
"$STRATA_BIN/strata-bench" run "$ISC_URI" --rw randrw --qd 32 --jobs 2 --time 6 --offset 64M \
	--span 448M --quiet >"$TEST_TMP/load_iscsi.log" 2>&1 &
isc_load=$!
sleep 1.5
stop_daemon "$META_PID"
sleep 2
for gw in nbd iscsi; do
	kill -0 "${GW_LEFT[$gw]}" 2>/dev/null || fail "strata-$gw died while meta was down"
done
start_meta
wait "$nbd_load" ||
	fail "fio through strata-nbd across meta's restart: $(tail -20 "$TEST_TMP/load_nbd.log")"
wait "$isc_load" ||
	fail "strata-bench through strata-iscsi across it: $(tail -20 "$TEST_TMP/load_iscsi.log")"
stop_gw "${GW_LEFT[nbd]}" strata-nbd
stop_gw "${GW_LEFT[iscsi]}" strata-iscsi
echo "PASS"
