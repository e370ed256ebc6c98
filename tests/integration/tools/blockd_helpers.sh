# Helpers for the strata-blockd integration tests; source after lib.sh.
#   start_blockd DATA [ARGS...]   start a blockd on a free port; sets BLOCKD_PID and BLOCKD_ADDR
#   drv CMD ARGS...               run blockd_driver CMD against BLOCKD_ADDR
#   space_used                    bytes in use, from SPACE
#   verify_stream_kill ROUND STATE MIN_MS SPAN_MS
#                                 with blockd up: after round 1, every write STATE records as
#                                 flushed reads back; then the write stream runs and blockd is
#                                 killed with SIGKILL MIN_MS + a random part of SPAN_MS into it
BLOCKD_DRIVER=$STRATA_TEST_BIN/blockd_driver
[ -x "$BLOCKD_DRIVER" ] || fail "missing $BLOCKD_DRIVER (build the tree first)"
[ -x "$STRATA_BIN/strata-blockd" ] || fail "missing $STRATA_BIN/strata-blockd"

start_blockd() {
	local data=$1
	shift
	local port
	port=$(free_port)
	start_daemon blockd "$STRATA_BIN/strata-blockd" --listen "127.0.0.1:$port" --data "$data" \
		--log-level warn "$@"
	BLOCKD_PID=$LAST_PID
	BLOCKD_ADDR=127.0.0.1:$port
	wait_port "$port" 20
}

drv() {
	local cmd=$1
	shift
	"$BLOCKD_DRIVER" "$cmd" "$BLOCKD_ADDR" "$@"
}

space_used() {
	drv space | awk '{print $2}'
}

verify_stream_kill() {
	local round=$1 state=$2 min_ms=$3 span_ms=$4 stream ms
	if [ "$round" -gt 1 ]; then
		drv verify "$state" >"$TEST_TMP/verify.out" ||
			fail "round $round: acknowledged+flushed data lost: $(cat "$TEST_TMP/verify.out")"
	fi
	drv stream "$state" &
	stream=$!
	ms=$((min_ms + RANDOM % span_ms))
	sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
	kill -9 "$BLOCKD_PID"
	wait "$BLOCKD_PID" 2>/dev/null || true
	wait "$stream" || fail "round $round: the stream failed before the crash"
}
