#!/usr/bin/env bash
# kill -9 strata-blockd during a write stream, 50 rounds. After each crash, fsck is clean;
# after each restart, every write acknowledged before the last flush reads back.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tools/blockd_helpers.sh"

DATA=$TEST_TMP/data
STATE=$TEST_TMP/state
ROUNDS=${ROUNDS:-50}

for round in $(seq 1 "$ROUNDS"); do
	start_blockd "$DATA" --size 256M
	verify_stream_kill "$round" "$STATE" 50 350 # let it run 50-400 ms, then pull the plug
	"$STRATA_BIN/strata-blockd" --fsck --data "$DATA" >"$TEST_TMP/fsck.out" 2>&1 ||
		fail "round $round: fsck: $(cat "$TEST_TMP/fsck.out")"
done

start_blockd "$DATA"
drv verify "$STATE" || fail "final verify"
stop_daemon "$BLOCKD_PID"
"$STRATA_BIN/strata-blockd" --fsck --verify --data "$DATA" >"$TEST_TMP/fsck.out" 2>&1 ||
	fail "final fsck --verify: $(cat "$TEST_TMP/fsck.out")"
echo "PASS: $ROUNDS crash rounds"
