#!/usr/bin/env bash
# libiscsi's conformance suite against strata-iscsi on a live one-node cluster:
#   iscsi-test-cu --dataloss -t ALL iscsi://127.0.0.1:PORT/<iqn>/0
# once with 512-byte logical blocks (the default, read-modify-write under the hood) and once
# with --block-size 4096. Zero failures are required; the CUnit summary is printed.
. "$(dirname "$0")/lib.sh"

command -v iscsi-test-cu >/dev/null || fail "iscsi-test-cu is missing (run scripts/bootstrap)"

META_PORT=$(free_port)
BD_PORT=$(free_port)
META=127.0.0.1:$META_PORT
PFX=iqn.2026-11.io.strata
cli() { "$STRATA_BIN/strata" --meta "$META" "$@"; }

start_daemon meta "$STRATA_BIN/strata-meta" --listen "$META" --data "$TEST_TMP/meta"
wait_port "$META_PORT"
start_daemon blockd "$STRATA_BIN/strata-blockd" --meta "$META" --listen "127.0.0.1:$BD_PORT" \
	--data "$TEST_TMP/bd.data" --size 4G
wait_port "$BD_PORT"
wait_for 15 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '1 up'" ||
	fail "blockd never came up"
cli pool create p --replicas 1 >/dev/null

run_suite() { # block-size volume
	local bs=$1 vol=$2 port log failed
	cli volume create "p/$vol" --size 1G >/dev/null
	port=$(free_port)
	start_daemon "iscsi-$bs" "$STRATA_BIN/strata-iscsi" --meta "$META" \
		--listen "127.0.0.1:$port" --block-size "$bs" --log-level warn
	wait_port "$port"
	log=$TEST_TMP/cu-$bs.log
	echo "== iscsi-test-cu --dataloss -t ALL, $bs-byte blocks"
	timeout 300 iscsi-test-cu --dataloss -t ALL "iscsi://127.0.0.1:$port/$PFX:p.$vol/0" \
		>"$log" 2>&1 || true
	grep -A4 "Run Summary" "$log" || fail "no CUnit summary: $(tail -20 "$log")"
	failed=$(awk '$1 == "tests" { print $5 }' "$log")
	if [ "$failed" != 0 ]; then
		grep -B2 -A6 "FAILED" "$log" | head -80
		fail "iscsi-test-cu: $failed test(s) failed with $bs-byte blocks"
	fi
	stop_daemon "$LAST_PID"
}

run_suite 512 cu512
run_suite 4096 cu4k
echo "OK"
