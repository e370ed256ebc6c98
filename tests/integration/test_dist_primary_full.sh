#!/usr/bin/env bash
# A primary that runs out of space while its replica has room must not leave the two copies
# different. Two nodes, R=2, a pool of one PG whose primary is the small node (48 MiB against
# 1 GiB). Writes through strata-nbd fill the primary: some fail with ENOSPC. Then a discard
# frees space, new data is written, and:
#   - the primary reads back the discard and the new data;
#   - scrub finds the copies identical;
#   - with the primary killed, the replica alone reads back the same.
# Before the fix the primary forwarded each write while it ran it: the replica applied writes
# the primary refused, kept the PG version of the refused write, and then took the next
# mutation with that version number (the discard) for a retry of the one it had, and skipped
# it: the discarded data came back from the replica.
. "$(dirname "$0")/lib.sh"

command -v qemu-io >/dev/null || fail "qemu-io is missing (run scripts/bootstrap)"
start_meta
start_node 0 48M
start_node 1 1G
wait_up 2
node_json() { cli node ls --json; }
id0=$(node_json | python3 -c '
import json, sys
port = sys.argv[1]
print([n["id"] for n in json.load(sys.stdin) if n["addr"].endswith(":" + port)][0])' "${BD_PORT[0]}")

# Pools of one PG until one has node 0 as its primary (HRW: each does with chance 1/2).
primaries() { # node id -> its primary PG count, once every node reports `want` in all
	node_json | python3 -c '
import json, sys
nodes, want, me = json.load(sys.stdin), int(sys.argv[1]), int(sys.argv[2])
if sum(n["pgs_primary"] for n in nodes) != want: sys.exit(1)
print([n["pgs_primary"] for n in nodes if n["id"] == me][0])' "$1" "$id0"
}
pool=
for k in 1 2 3 4 5 6 7 8 9 10; do
	before=$( ((k > 1)) && primaries $((k - 1)) || echo 0)
	cli pool create "t$k" --replicas 2 --pgs 1 >/dev/null
	wait_pgs "$META" clean 20
	after=
	for _ in $(seq 50); do
		after=$(primaries "$k") && break
		sleep 0.2
	done
	[ -n "$after" ] || fail "PG counts never reported for $k pools: $(node_json)"
	if [ "$after" -gt "$before" ]; then
		pool=t$k
		break
	fi
done
[ -n "$pool" ] || fail "node 0 was the primary of none of 10 pools"
echo "pool $pool: primary is node $id0 (48 MiB), replica 1 GiB"
cli volume create "$pool/v" --size 128M >/dev/null

NBD_PORT=$(free_port)
start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
wait_port "$NBD_PORT"
URI="nbd://127.0.0.1:$NBD_PORT/$pool/v"
qio() { qemu-io -f raw "$URI" "$@"; }

echo "== fill the primary until it refuses"
out=$(for off in $(seq 0 4 124); do echo "write -P 0x11 ${off}M 4M"; done | qio 2>&1 || true)
grep -q 'No space left on device' <<<"$out" || fail "the primary never ran out of space: $out"
echo "$(grep -c 'wrote ' <<<"$out") writes of 4 MiB done, $(grep -c 'No space' <<<"$out") refused"

echo "== discard, then new data"
qio -c 'discard 0 16M' >/dev/null || fail "discard"
qio -c 'write -P 0x22 16M 4M' | grep -q 'wrote ' || fail "a write after the discard failed"
check() { # who
	qio -c 'read -P 0 0 16M' | grep -q 'read ' || fail "$1: the discarded range does not read as zeros"
	qio -c 'read -P 0x22 16M 4M' | grep -q 'read ' || fail "$1: the new data does not read back"
}
check primary
out=$(cli scrub "$pool") || fail "scrub failed: $out"
echo "$out"
echo "$out" | grep -q ' 0 mismatches' || fail "the copies differ: $out"

echo "== the primary dies: the replica alone"
stop_daemon "${BD_PID[0]}" KILL
wait_for 20 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '1 up'" ||
	fail "node 0 never marked down: $(cli status)"
check replica
echo "PASS"
