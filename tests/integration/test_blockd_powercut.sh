#!/usr/bin/env bash
# Power loss during a write stream, 32 rounds. strata-blockd keeps its data file and its
# RocksDB index on cutfs (tests/integration/tools/cutfs.c), a FUSE file system that holds
# every write in memory until the file is fsync'ed or fdatasync'ed. Each round kills blockd
# with SIGKILL in the middle of the stream and then cuts the power: every write not yet
# synced is lost (odd rounds), or a random subset of them is (even rounds: a disk whose cache
# wrote out some of its writes, in any order). After each cut, fsck of what the disk holds is
# clean, and after the restart every write acknowledged before the last flush reads back.
# kill -9 alone (test_blockd_crash.sh) keeps the page cache; this is the case where it is gone.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tools/blockd_helpers.sh"

CUTFS=$STRATA_TEST_BIN/cutfs
[ -x "$CUTFS" ] || fail "missing $CUTFS (build the tree first)"
[ -c /dev/fuse ] || fail "no /dev/fuse: this test needs FUSE (scripts/bootstrap installs fuse3)"
command -v fusermount3 >/dev/null || fail "fusermount3 missing: run scripts/bootstrap"

DISK=$TEST_TMP/disk # what survives a power cut
MNT=$TEST_TMP/mnt   # what blockd sees
STATE=$TEST_TMP/state
ROUNDS=${ROUNDS:-32}
mkdir -p "$DISK" "$MNT"

mount_cutfs() {
	start_daemon cutfs "$CUTFS" "$DISK" "$MNT" -f
	CUTFS_PID=$LAST_PID
	wait_for 10 mountpoint -q "$MNT" || fail "cutfs did not mount"
}

# Signal the power cut (or nothing, for a clean shutdown), then unmount. blockd must be gone:
# until the kernel has torn down its io_uring, the mount is busy.
unmount_cutfs() {
	local sig=${1:-}
	[ -z "$sig" ] || kill -"$sig" "$CUTFS_PID"
	wait_for 20 fusermount3 -u "$MNT" 2>/dev/null || fail "cannot unmount cutfs"
	wait "$CUTFS_PID" || fail "cutfs exited with an error"
}

# A power cut is a reboot, and blockd's journal replay relies on it (blockd/journal.c): the
# machine that boots after the cut has a new boot id. These cuts leave this kernel running, so
# every start after one gets a new id through STRATA_BOOT_ID, as a real reboot would give it.
reboot() { export STRATA_BOOT_ID=$(cat /proc/sys/kernel/random/uuid); }

for round in $(seq 1 "$ROUNDS"); do
	export CUTFS_SEED=$round # which writes survive an even round's cut
	mount_cutfs
	reboot
	start_blockd "$MNT/data" --size 256M
	verify_stream_kill "$round" "$STATE" 100 600
	if [ $((round % 2)) -eq 1 ]; then sig=USR1; else sig=USR2; fi
	unmount_cutfs "$sig"
	cuts=$(grep -c "power cut" "$TEST_TMP/cutfs.log" || true)
	[ "$cuts" -eq "$round" ] || fail "round $round: $cuts power cuts logged by cutfs"
	reboot
	"$STRATA_BIN/strata-blockd" --fsck --data "$DISK/data" >"$TEST_TMP/fsck.out" 2>&1 ||
		fail "round $round: fsck after the power cut: $(cat "$TEST_TMP/fsck.out")"
done

# The cuts lost writes that had been acknowledged (not flushed): the test exercised something.
pending=$(grep -o '[0-9]* unsynced writes' "$TEST_TMP/cutfs.log" | awk '{s += $1} END {print s + 0}')
[ "$pending" -gt 0 ] || fail "no unsynced writes were ever pending at a cut"

mount_cutfs
reboot
start_blockd "$MNT/data"
drv verify "$STATE" || fail "final verify"
stop_daemon "$BLOCKD_PID"
unmount_cutfs
"$STRATA_BIN/strata-blockd" --fsck --verify --data "$DISK/data" >"$TEST_TMP/fsck.out" 2>&1 ||
	fail "final fsck --verify: $(cat "$TEST_TMP/fsck.out")"
echo "PASS: $ROUNDS power cuts, $pending unsynced writes lost or kept at random"
