#!/usr/bin/env bash
# fio's nbd engine against strata-nbd: 4 jobs of 4k random writes at QD32 with crc32c
# verification, then a separate verify-only pass that reads everything back over fresh
# connections.
. "$(dirname "$0")/lib.sh"

command -v fio >/dev/null || fail "fio is missing (run scripts/bootstrap)"
fio --enghelp 2>/dev/null | grep -qw nbd || fail "fio lacks the nbd engine (run scripts/bootstrap)"

NBD_PORT=$(free_port)
start_single 4G
cli volume create p/fio --size 256M >/dev/null
start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
wait_port "$NBD_PORT"

cat >"$TEST_TMP/job.fio" <<JOB
[global]
ioengine=nbd
uri=nbd://127.0.0.1:$NBD_PORT/p/fio
rw=randwrite
bs=4k
iodepth=32
numjobs=4
size=16m
offset_increment=16m
verify=crc32c
verify_fatal=1
verify_state_save=0
verify_backlog=1024
randrepeat=1
group_reporting=1

[randwrite-verify]
JOB

echo "== fio randwrite + verify (4 jobs, QD32)"
fio --output="$TEST_TMP/write.out" "$TEST_TMP/job.fio" || {
	cat "$TEST_TMP/write.out"
	fail "fio write/verify"
}
grep -E "IOPS=|err=" "$TEST_TMP/write.out" | head -4
grep -q "err= 0" "$TEST_TMP/write.out" || fail "fio reported errors: $(cat "$TEST_TMP/write.out")"

echo "== fio verify-only read pass"
fio --output="$TEST_TMP/verify.out" --verify_only "$TEST_TMP/job.fio" || {
	cat "$TEST_TMP/verify.out"
	fail "fio verify-only"
}
grep -q "err= 0" "$TEST_TMP/verify.out" || fail "fio verify errors: $(cat "$TEST_TMP/verify.out")"

echo "PASS"
