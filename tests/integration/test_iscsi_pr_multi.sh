#!/usr/bin/env bash
# SCSI persistent reservations across two strata-iscsi gateways serving one volume: the state
# lives in strata-meta, so a registration and a reservation made through gateway A are seen
# through gateway B, a non-holder's WRITE through B gets RESERVATION CONFLICT, and the state
# survives a restart of both gateways and of meta. Driven by tests/integration/tools/iscsi_pr.c
# (libiscsi), which keeps a fixed ISID so one initiator is the same I_T nexus on every run.
. "$(dirname "$0")/lib.sh"

PR=$STRATA_TEST_BIN/iscsi_pr
[ -x "$PR" ] || fail "$PR is missing (build the tree)"

A_PORT=$(free_port)
B_PORT=$(free_port)
PFX=iqn.2026-11.io.strata
IQN=$PFX:p.v
URL_A=iscsi://127.0.0.1:$A_PORT/$IQN/0
URL_B=iscsi://127.0.0.1:$B_PORT/$IQN/0
HOST1=iqn.2026-01.test:host1
HOST2=iqn.2026-01.test:host2
step() { echo "== $*"; }

start_gateways() {
	start_daemon iscsi-a "$STRATA_BIN/strata-iscsi" --meta "$META" --listen "127.0.0.1:$A_PORT"
	A_PID=$LAST_PID
	start_daemon iscsi-b "$STRATA_BIN/strata-iscsi" --meta "$META" --listen "127.0.0.1:$B_PORT"
	B_PID=$LAST_PID
	wait_port "$A_PORT"
	wait_port "$B_PORT"
}
# expect WANT URL INITIATOR QUALIFIER CMD...: run iscsi_pr; its output must equal WANT.
expect() {
	local want=$1
	shift
	local got
	got=$("$PR" "$@" 2>&1) || true
	[ "$got" = "$want" ] || fail "iscsi_pr ${*:4} via ${1%%/$IQN*}: want '$want', got '$got'"
}

start_single 1G
cli volume create p/v --size 64M >/dev/null
start_gateways

step "no registrations at first, through either gateway"
expect "generation 0 keys" "$URL_A" "$HOST1" 1 keys
expect "none" "$URL_B" "$HOST2" 1 resv

step "host1 registers and reserves (write exclusive) through A"
expect "GOOD
GOOD" "$URL_A" "$HOST1" 1 register 0xaaaa reserve 0xaaaa 1

step "B sees the registration and the reservation"
expect "generation 1 keys 0xaaaa" "$URL_B" "$HOST2" 1 keys
expect "key 0xaaaa type 1" "$URL_B" "$HOST2" 1 resv

step "host2 (not the holder) writing through B gets RESERVATION CONFLICT; reads are allowed"
expect "RESERVATION_CONFLICT" "$URL_B" "$HOST2" 1 write 8
expect "GOOD" "$URL_B" "$HOST2" 1 read 8

step "the holder writes through B (same I_T nexus) and through A"
expect "GOOD" "$URL_B" "$HOST1" 1 write 8
expect "GOOD" "$URL_A" "$HOST1" 1 write 9

step "host2 registers through B; a conflicting RESERVE through B is refused"
expect "GOOD" "$URL_B" "$HOST2" 1 register 0xbbbb
expect "generation 2 keys 0xaaaa 0xbbbb" "$URL_A" "$HOST1" 1 keys
expect "RESERVATION_CONFLICT" "$URL_B" "$HOST2" 1 reserve 0xbbbb 1

step "restart both gateways and meta: the state survives"
stop_daemon "$A_PID"
stop_daemon "$B_PID"
stop_daemon "$META_PID"
start_meta
start_gateways
expect "generation 2 keys 0xaaaa 0xbbbb" "$URL_B" "$HOST2" 1 keys
expect "key 0xaaaa type 1" "$URL_A" "$HOST2" 1 resv
expect "RESERVATION_CONFLICT" "$URL_B" "$HOST2" 1 write 10
expect "GOOD" "$URL_A" "$HOST1" 1 write 10

step "host2 preempts host1 through B; host1 is fenced at once through A"
expect "GOOD" "$URL_B" "$HOST2" 1 preempt 0xbbbb 0xaaaa 1
expect "key 0xbbbb type 1" "$URL_A" "$HOST1" 1 resv
expect "RESERVATION_CONFLICT" "$URL_A" "$HOST1" 1 write 11
expect "GOOD" "$URL_B" "$HOST2" 1 write 11
expect "generation 3 keys 0xbbbb" "$URL_A" "$HOST1" 1 keys

step "concurrent registrations through both gateways are all kept (compare-and-swap)"
pids=()
for i in 1 2 3 4 5 6 7 8; do
	"$PR" "$URL_A" "iqn.2026-01.test:a$i" 1 register "0x10$i" >"$TEST_TMP/ra$i" 2>&1 &
	pids+=($!)
	"$PR" "$URL_B" "iqn.2026-01.test:b$i" 1 register "0x20$i" >"$TEST_TMP/rb$i" 2>&1 &
	pids+=($!)
done
for p in "${pids[@]}"; do
	wait "$p" || true
done
for i in 1 2 3 4 5 6 7 8; do
	[ "$(cat "$TEST_TMP/ra$i")" = GOOD ] || fail "register a$i: $(cat "$TEST_TMP/ra$i")"
	[ "$(cat "$TEST_TMP/rb$i")" = GOOD ] || fail "register b$i: $(cat "$TEST_TMP/rb$i")"
done
keys=$("$PR" "$URL_B" "$HOST2" 1 keys)
n=$(echo "$keys" | tr ' ' '\n' | grep -c '^0x')
[ "$n" -eq 17 ] || fail "want 17 keys after concurrent registrations, got: $keys"
echo "$keys" | grep -q '^generation 19 ' || fail "PRgeneration: $keys"

step "CLEAR through A releases everything, seen through B"
expect "GOOD" "$URL_A" "$HOST2" 1 clear 0xbbbb
expect "none" "$URL_B" "$HOST1" 1 resv
expect "GOOD" "$URL_B" "$HOST1" 1 write 12
echo "PASS"
