# Helpers for the strata-blockd integration tests; source after lib.sh.
#   start_blockd DATA [ARGS...]   start a blockd on a free port; sets BLOCKD_PID and BLOCKD_ADDR
#   drv CMD ARGS...               run blockd_driver CMD against BLOCKD_ADDR
#   space_used                    bytes in use, from SPACE
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
