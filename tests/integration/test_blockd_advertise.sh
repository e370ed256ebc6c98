#!/usr/bin/env bash
# Daemons that listen on a wildcard address, as on a real multi-host deployment. Everything runs
# in a network namespace this test creates (only its loopback is up), so a wildcard listener is
# reachable from nowhere else.
#   - strata-blockd --listen 0.0.0.0:P without --advertise is refused with a message that names
#     --advertise, and so is a wildcard --advertise: peers and clients would dial themselves.
#   - Three nodes listen on 0.0.0.0 and advertise 127.0.0.2-4, as three hosts would advertise
#     their own addresses: meta lists those addresses, an R=3 write-and-verify workload and a
#     kill -9 of one node behave as in test_dist_failover, and same-host clients still use the
#     Unix fast path (the twin is named after the advertised address).
#   - A peer request (REPL_FLUSH, REPL_WRITE) addressed to another node id is refused with
#     -ESTALE and logged, so a node at a recycled address never answers for another's data.
#   - strata-iscsi on 0.0.0.0 answers SendTargets with the portal the initiator reached, not
#     with 0.0.0.0.
if [ -z "${STRATA_IN_NETNS:-}" ]; then
	command -v ip >/dev/null || { echo "FAIL: ip is missing (run scripts/bootstrap)" >&2; exit 1; }
	ns=strata-adv-$$
	ip netns add "$ns" || { echo "FAIL: ip netns add $ns" >&2; exit 1; }
	rc=0
	ip netns exec "$ns" ip link set lo up &&
		STRATA_IN_NETNS=$ns ip netns exec "$ns" bash "$0" "$@" || rc=$?
	ip netns delete "$ns" || true
	exit "$rc"
fi
. "$(dirname "$0")/lib.sh"

for t in iscsi-ls ss; do
	command -v "$t" >/dev/null || fail "$t is missing (run scripts/bootstrap)"
done
start_meta

echo "== a wildcard address without --advertise is refused"
P=$(free_port)
rc=0
timeout 10 "$STRATA_BIN/strata-blockd" --meta "$META" --listen "0.0.0.0:$P" \
	--data "$TEST_TMP/refused.data" --size 64M >"$TEST_TMP/refused.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "wildcard --listen without --advertise: exit $rc, want 2: $(cat "$TEST_TMP/refused.log")"
grep -q -- "--advertise" "$TEST_TMP/refused.log" || fail "the refusal does not name --advertise: $(cat "$TEST_TMP/refused.log")"
cat "$TEST_TMP/refused.log"
rc=0
timeout 10 "$STRATA_BIN/strata-blockd" --meta "$META" --listen "0.0.0.0:$P" --advertise "0.0.0.0:$P" \
	--data "$TEST_TMP/refused.data" --size 64M >"$TEST_TMP/refused2.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "wildcard --advertise: exit $rc, want 2: $(cat "$TEST_TMP/refused2.log")"
rc=0
timeout 10 "$STRATA_BIN/strata-blockd" --meta "$META" --listen "127.0.0.1:$P" --advertise "nohost" \
	--data "$TEST_TMP/refused.data" --size 64M >"$TEST_TMP/refused3.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "malformed --advertise: exit $rc, want 2: $(cat "$TEST_TMP/refused3.log")"
[ -e "$TEST_TMP/refused.data" ] && fail "a refused blockd created its data file"

echo "== three nodes on 0.0.0.0, each advertising its own address"
declare -a ADDR
for i in 0 1 2; do
	BD_PORT[$i]=$(free_port)
	ADDR[$i]=127.0.0.$((i + 2)):${BD_PORT[$i]}
	start_daemon "blockd$i" "$STRATA_BIN/strata-blockd" --meta "$META" \
		--listen "0.0.0.0:${BD_PORT[$i]}" --advertise "${ADDR[$i]}" \
		--data "$TEST_TMP/bd$i.data" --size 1G
	BD_PID[$i]=$LAST_PID
done
wait_up 3
cli node ls
addrs=$(cli node ls --json | python3 -c 'import json,sys; print(" ".join(sorted(n["addr"] for n in json.load(sys.stdin))))')
want=$(printf '%s\n' "${ADDR[@]}" | sort | tr '\n' ' ' | sed 's/ $//')
[ "$addrs" = "$want" ] || fail "meta lists [$addrs], want the advertised [$want]"
ss -xlH | grep -q "@strata:${ADDR[0]} " || fail "node 0 has no same-host socket for ${ADDR[0]}"

cli pool create p --replicas 3 --pgs 32 >/dev/null
cli volume create p/v --size 1G >/dev/null
wait_pgs "$META" clean 30

echo "== R=3 workload across a kill -9 of node 1"
io --volume p/v --seconds 6 --qd 16 --span 32M --seed 5 --state "$TEST_TMP/state" \
	>"$TEST_TMP/io.log" 2>&1 &
io_pid=$!
sleep 1.5
stop_daemon "${BD_PID[1]}" KILL
wait "$io_pid" || fail "workload saw errors or mismatches: $(tail -5 "$TEST_TMP/io.log")"
grep -q ' 0 errors, 0 mismatches' "$TEST_TMP/io.log" || fail "unexpected summary: $(tail -1 "$TEST_TMP/io.log")"
tail -1 "$TEST_TMP/io.log"
wait_pgs "$META" degraded 15
# Peers reached each other through the twins of the advertised addresses.
[ "$(unix_conns "${BD_PID[0]}")" -gt 0 ] || fail "node 0 talks to its peers and meta over TCP only"

echo "== node 1 restarts at its advertised address and recovers"
start_daemon blockd1 "$STRATA_BIN/strata-blockd" --meta "$META" \
	--listen "0.0.0.0:${BD_PORT[1]}" --advertise "${ADDR[1]}" --data "$TEST_TMP/bd1.data" --size 1G
BD_PID[1]=$LAST_PID
wait_for 20 sh -c "[ \$(grep -c 'registered with meta' '$TEST_TMP/blockd1.log') -ge 2 ]" ||
	fail "node 1 never registered again: $(tail -5 "$TEST_TMP/blockd1.log")"
wait_up 3 20
wait_pgs "$META" clean 60
io --volume p/v --check "$TEST_TMP/state" || fail "data does not verify after the restart"

echo "== a peer request meant for another node is refused (-ESTALE), not applied"
DRV=$STRATA_TEST_BIN/blockd_driver
id_of() { cli node ls --json | python3 -c 'import json,sys; print([n["id"] for n in json.load(sys.stdin) if n["addr"] == sys.argv[1]][0])' "$1"; }
id0=$(id_of "${ADDR[0]}")
id2=$(id_of "${ADDR[2]}")
out=$("$DRV" replflush "${ADDR[0]}" "$id2") && fail "a REPL_FLUSH meant for node $id2 was answered by node $id0"
[ "$out" = "errno 116" ] || fail "REPL_FLUSH to the wrong node: '$out', want errno 116 (ESTALE)"
out=$("$DRV" replwrite "${ADDR[0]}" "$id2") && fail "a REPL_WRITE meant for node $id2 was applied by node $id0"
[ "$out" = "errno 116" ] || fail "REPL_WRITE to the wrong node: '$out', want errno 116 (ESTALE)"
grep -q "refused a peer request meant for node $id2 (this is node $id0" "$TEST_TMP/blockd0.log" ||
	fail "node 0 did not log the misaddressed request: $(tail -3 "$TEST_TMP/blockd0.log")"
"$DRV" replflush "${ADDR[0]}" "$id0" || fail "a REPL_FLUSH meant for node $id0 failed there"
"$DRV" replflush "${ADDR[0]}" 0 || fail "a REPL_FLUSH without an addressee (older peers) failed"

echo "== strata-iscsi on 0.0.0.0: SendTargets names the portal the initiator reached"
ISC_PORT=$(free_port)
start_daemon iscsi "$STRATA_BIN/strata-iscsi" --meta "$META" --listen "0.0.0.0:$ISC_PORT" \
	--iqn-prefix iqn.2026-11.io.strata
wait_port "$ISC_PORT"
iscsi-ls "iscsi://127.0.0.5:$ISC_PORT" >"$TEST_TMP/ls" || fail "iscsi-ls failed"
cat "$TEST_TMP/ls"
grep -q "Target:iqn.2026-11.io.strata:p.v Portal:127.0.0.5:$ISC_PORT,1" "$TEST_TMP/ls" ||
	fail "SendTargets does not name the portal reached: $(cat "$TEST_TMP/ls")"
grep -q "0\.0\.0\.0" "$TEST_TMP/ls" && fail "SendTargets hands out the wildcard address"
echo "PASS"
