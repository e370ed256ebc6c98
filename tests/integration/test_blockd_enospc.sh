#!/usr/bin/env bash
# A full data file: the write that cannot be placed gets ENOSPC, nothing is corrupted, reads
# continue, trim gives space back, and fsck stays clean.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tools/blockd_helpers.sh"

DATA=$TEST_TMP/data
MiB=1048576
start_blockd "$DATA" --size 4M # 1024 blocks

for obj in 0 1 2 3; do
	drv write layer=1 obj=$obj off=0 len=$MiB fill=$((obj + 1)) >/dev/null ||
		fail "filling object $obj"
done
out=$(drv write layer=1 obj=9 off=0 len=4096 fill=9) && fail "write past full succeeded"
[ "$out" = "errno 28" ] || fail "expected ENOSPC, got: $out"
out=$(drv write layer=1 obj=0 off=0 len=4096 fill=7) && fail "overwrite when full succeeded"
[ "$out" = "errno 28" ] || fail "expected ENOSPC on overwrite, got: $out"
# A snapshot head cannot copy-on-write either, and its parent is untouched.
out=$(drv write layer=2 anc=1 obj=1 off=0 len=8192 fill=7) && fail "CoW when full succeeded"
[ "$out" = "errno 28" ] || fail "expected ENOSPC on CoW, got: $out"
for obj in 0 1 2 3; do
	drv read layer=1 obj=$obj off=0 len=$MiB fill=$((obj + 1)) || fail "read object $obj after ENOSPC"
done
drv read layer=2 anc=1 obj=1 off=0 len=$MiB fill=2 || fail "child view after failed CoW"

drv trim layer=1 obj=3 off=0 len=$MiB >/dev/null || fail "trim"
drv write layer=1 obj=9 off=0 len=$((512 * 1024)) fill=9 >/dev/null || fail "write after trim"
drv read layer=1 obj=3 off=0 len=$MiB fill=0 || fail "trimmed range reads zeros"
drv read layer=1 obj=9 off=0 len=$((512 * 1024)) fill=9 || fail "new data"

stop_daemon "$BLOCKD_PID"
"$STRATA_BIN/strata-blockd" --fsck --verify --data "$DATA" >"$TEST_TMP/fsck.out" 2>&1 ||
	fail "fsck: $(cat "$TEST_TMP/fsck.out")"
start_blockd "$DATA"
drv read layer=1 obj=0 off=0 len=$MiB fill=1 || fail "after restart"
drv read layer=1 obj=9 off=0 len=$((512 * 1024)) fill=9 || fail "after restart"
echo PASS
