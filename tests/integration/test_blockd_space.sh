#!/usr/bin/env bash
# Deleting a snapshot returns its unshared space; blocks a child still reads stay.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tools/blockd_helpers.sh"

DATA=$TEST_TMP/data
MiB=1048576
start_blockd "$DATA" --size 64M

# Snapshot 1: objects 0 and 1 (8 MiB). Head 2 (parent 1) overwrites object 0.
drv write layer=1 obj=0 off=0 len=$((4 * MiB)) fill=0x10 >/dev/null || fail write
drv write layer=1 obj=1 off=0 len=$((4 * MiB)) fill=0x11 >/dev/null || fail write
[ "$(space_used)" = $((8 * MiB)) ] || fail "used $(space_used) after 8 MiB"
drv write layer=2 anc=1 obj=0 off=0 len=$((4 * MiB)) fill=0x20 >/dev/null || fail write
[ "$(space_used)" = $((12 * MiB)) ] || fail "used $(space_used) after the head's overwrite"

# Delete snapshot 1: object 0's old version is unshared (freed), object 1 is still the head's.
drv delete layer=1 children=2 >/dev/null || fail "delete snapshot"
[ "$(space_used)" = $((8 * MiB)) ] || fail "used $(space_used) after snapshot delete"
drv read layer=2 obj=0 off=0 len=$((4 * MiB)) fill=0x20 || fail "head object 0"
drv read layer=2 obj=1 off=0 len=$((4 * MiB)) fill=0x11 || fail "head object 1 (inherited)"

# A clone chain sharing everything costs nothing until written; deleting the head frees all.
drv write layer=3 anc=2 obj=1 off=0 len=4096 fill=0x30 >/dev/null || fail "clone write"
[ "$(space_used)" = $((8 * MiB + 4096)) ] || fail "used $(space_used) after clone write"
drv delete layer=3 >/dev/null || fail "delete clone"
drv delete layer=2 >/dev/null || fail "delete head"
[ "$(space_used)" = 0 ] || fail "used $(space_used) after deleting everything"

stop_daemon "$BLOCKD_PID"
"$STRATA_BIN/strata-blockd" --fsck --data "$DATA" >"$TEST_TMP/fsck.out" 2>&1 ||
	fail "fsck: $(cat "$TEST_TMP/fsck.out")"
start_blockd "$DATA"
[ "$(space_used)" = 0 ] || fail "used $(space_used) after restart"
echo PASS
