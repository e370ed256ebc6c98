#!/usr/bin/env bash
# A node dies under a gateway: fio writes through strata-nbd with crc32c verification to an
# R=3 volume, one of the three blockd nodes is killed with -9 mid-run, and the workload must
# finish with no I/O error and every block verifying. Then the data is read back once more
# after the node returns and the PGs are clean. This drives libstrata's retries and map
# updates on the gateway's own reactor (strata-nbd shares it with libstrata).
. "$(dirname "$0")/lib.sh"

command -v fio >/dev/null || fail "fio is missing (run scripts/bootstrap)"
fio --enghelp=nbd >/dev/null 2>&1 || fail "this fio has no nbd engine (run scripts/bootstrap)"

start_meta
for i in 0 1 2; do
	start_node "$i"
done
wait_up 3
cli pool create p --replicas 3 --pgs 32 >/dev/null
cli volume create p/v --size 256M >/dev/null
wait_pgs "$META" clean 30

NBD_PORT=$(free_port)
start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
NBD_PID=$LAST_PID
wait_port "$NBD_PORT"
URI="nbd://127.0.0.1:$NBD_PORT/p/v"

# Write then verify every block, 4 jobs over disjoint quarters, for long enough that the kill
# lands in the middle.
job() { # extra fio args...
	fio --name=fo --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=16 \
		--numjobs=4 --size=64M --offset_increment=64M --verify=crc32c --verify_fatal=1 \
		--verify_state_save=0 --randrepeat=1 --group_reporting "$@"
}
job --output="$TEST_TMP/fio.out" >/dev/null 2>&1 &
FIO_PID=$!
sleep 1.5
kill -0 "$FIO_PID" 2>/dev/null || fail "the workload ended before the kill: $(cat "$TEST_TMP/fio.out")"
stop_daemon "${BD_PID[1]}" KILL
echo "killed node 1 under the workload"
wait "$FIO_PID" || fail "fio failed across the failover: $(tail -20 "$TEST_TMP/fio.out")"
grep -q "err= 0" "$TEST_TMP/fio.out" || fail "fio reported errors: $(cat "$TEST_TMP/fio.out")"

start_node 1
wait_up 3 30
wait_pgs "$META" clean 60
# Read-only verify pass of what was written (same seed, same layout).
job --verify_only --output="$TEST_TMP/fio2.out" >/dev/null 2>&1 ||
	fail "data does not verify after recovery: $(tail -20 "$TEST_TMP/fio2.out")"
grep -q "err= 0" "$TEST_TMP/fio2.out" || fail "verify pass errors: $(cat "$TEST_TMP/fio2.out")"
kill -0 "$NBD_PID" 2>/dev/null || fail "strata-nbd died: $(tail -5 "$TEST_TMP/nbd.log")"
echo PASS
