#!/usr/bin/env bash
# The reservation push fence (strata-meta PR_WATCH, see docs/ARCHITECTURE.md): gateway B, its
# reservation cache warm and its watch healthy, serves READs and WRITEs without asking meta;
# a reservation committed through gateway A fences B's very next WRITE; after A releases, B
# writes again. B's session stays logged in throughout (iscsi_pr signal/waitfor), so B answers
# from the LU and the cache it already has. B runs with --log-level debug, which logs every
# PR_GET it sends with the reason, so the test also checks that the warm phase did not ask
# meta per command and that the fence came from the push (a "stale" reload), not from a lapsed
# watch.
. "$(dirname "$0")/lib.sh"

PR=$STRATA_TEST_BIN/iscsi_pr
[ -x "$PR" ] || fail "$PR is missing (build the tree)"

A_PORT=$(free_port)
B_PORT=$(free_port)
IQN=iqn.2026-11.io.strata:p.v
URL_A=iscsi://127.0.0.1:$A_PORT/$IQN/0
URL_B=iscsi://127.0.0.1:$B_PORT/$IQN/0
HOST1=iqn.2026-01.test:host1
HOST2=iqn.2026-01.test:host2
B_LOG=$TEST_TMP/iscsi-b.log
step() { echo "== $*"; }
sync_wait() { # FILE: written by the B session
	wait_for 30 test -e "$1" || fail "B session never reached $(basename "$1"): $(cat "$TEST_TMP/b.out")"
}
pr_gets() { grep -c 'PR_GET' "$B_LOG" || true; }

start_meta
start_node 0 1G
wait_up 1
cli pool create p --replicas 1 >/dev/null
cli volume create p/v --size 64M >/dev/null
# Default reservation flags: the push is what makes B's cache trustworthy.
start_daemon iscsi-a "$STRATA_BIN/strata-iscsi" --meta "$META" --listen "127.0.0.1:$A_PORT"
start_daemon iscsi-b "$STRATA_BIN/strata-iscsi" --meta "$META" --listen "127.0.0.1:$B_PORT" \
	--log-level debug
wait_port "$A_PORT"
wait_port "$B_PORT"

step "B serves a session: warm-up READs and WRITEs, then waits while A reserves"
"$PR" "$URL_B" "$HOST2" 1 \
	write 1 read 1 write 2 read 2 write 3 read 3 write 4 read 4 write 5 read 5 \
	signal "$TEST_TMP/warm" waitfor "$TEST_TMP/reserved" \
	write 6 read 6 signal "$TEST_TMP/fenced" waitfor "$TEST_TMP/released" \
	write 7 >"$TEST_TMP/b.out" 2>&1 &
B_SESSION=$!
_DAEMON_PIDS+=("$B_SESSION") # a failing test must not leave it behind (libiscsi reconnects)
sync_wait "$TEST_TMP/warm"
warm=$(pr_gets)
[ "$warm" -le 2 ] || fail "B asked meta $warm times for 10 commands (cache not trusted): $(grep PR_GET "$B_LOG")"
grep -q 'PR_GET (no watch)' "$B_LOG" && fail "B's watch was not healthy: $(grep PR_GET "$B_LOG")"

step "host1 registers and reserves (write exclusive) through A"
got=$("$PR" "$URL_A" "$HOST1" 1 register 0xaaaa reserve 0xaaaa 1 2>&1) || true
[ "$got" = "GOOD
GOOD" ] || fail "register+reserve via A: $got"
touch "$TEST_TMP/reserved"

step "B's very next WRITE gets RESERVATION CONFLICT (READ still allowed)"
sync_wait "$TEST_TMP/fenced"
[ "$(pr_gets)" -gt "$warm" ] || fail "B did not reload after A's reservation"
grep -q 'PR_GET (no watch)' "$B_LOG" && fail "B's watch lapsed: $(grep PR_GET "$B_LOG")"

step "A releases; B's next WRITE succeeds"
got=$("$PR" "$URL_A" "$HOST1" 1 release 0xaaaa 1 2>&1) || true
[ "$got" = GOOD ] || fail "release via A: $got"
touch "$TEST_TMP/released"
wait "$B_SESSION" || true
want="GOOD
GOOD
GOOD
GOOD
GOOD
GOOD
GOOD
GOOD
GOOD
GOOD
RESERVATION_CONFLICT
GOOD
GOOD"
[ "$(cat "$TEST_TMP/b.out")" = "$want" ] || fail "B session: $(cat "$TEST_TMP/b.out")"
echo "B asked meta $(pr_gets) times in all: $(grep -o 'PR_GET (.*)' "$B_LOG" | tr '\n' ' ')"
echo "PASS"
