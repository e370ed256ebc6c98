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
#
# The fills run 32 requests at once:
#   - In the first (writes only), a write that finds the store full while a pending group may
#     still free blocks waits for it, and is forwarded only once it has its blocks. Before
#     that, it was forwarded at once; when the wait ended in ENOSPC the replica held a version
#     that the full primary could not pull back, and the PG stayed peering (every request to
#     it hung) until space was freed elsewhere.
#   - The second, on the full primary, puts a trim after every third write, so the primary
#     refuses writes while earlier mutations of the PG are still out on the replica, and
#     admits trims (which need no space) right after them. Each refused write gives its
#     version back to the PG, and the next mutation follows the last version the primary
#     holds. The primary's log must show such give-backs, and neither node may log a
#     re-peering: without the give-back the next trim named the refused write's version as
#     its predecessor, the replica answered that it missed a mutation, and the PG peered again.
. "$(dirname "$0")/lib.sh"

command -v qemu-io >/dev/null || fail "qemu-io is missing (run scripts/bootstrap)"
# The fill is a Python program on libnbd; the distribution's python3 has the nbd module.
/usr/bin/python3 -c 'import nbd' || fail "python3-libnbd is missing (run scripts/bootstrap)"
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

# fill TRIM_EVERY: writes of 256 KiB over the volume, 32 at once; with TRIM_EVERY > 0, a
# 64 KiB trim in its upper half after every TRIM_EVERY writes (a trim needs no space, so it
# succeeds while the writes around it are refused).
fill() {
	/usr/bin/python3 - "$URI" "$1" <<'PY'
import errno, sys, time
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
every = int(sys.argv[2])
size, chunk, depth = h.get_size(), 256 * 1024, 32
buf = nbd.Buffer.from_bytearray(bytearray([0x11]) * chunk)
done = {"ok": 0, "nospc": 0, "trims": 0, "other": []}
def finished(what, off, err):
    if err.value == 0:
        done["trims" if what == "trim" else "ok"] += 1
    elif err.value == errno.ENOSPC and what == "write":
        done["nospc"] += 1
    else:
        done["other"].append((what, off, err.value))
    return 1
ops = []
for i, off in enumerate(range(0, size, chunk)):
    ops.append(("write", off))
    if every and i % every == every - 1:
        ops.append(("trim", size // 2 + (i * 64 * 1024) % (size // 2)))
deadline = time.monotonic() + 60
while ops or h.aio_in_flight():
    while ops and h.aio_in_flight() < depth:
        what, off = ops.pop(0)
        cb = lambda err, what=what, off=off: finished(what, off, err)
        if what == "write":
            h.aio_pwrite(buf, off, completion=cb)
        else:
            h.aio_trim(64 * 1024, off, completion=cb)
    if time.monotonic() > deadline:
        print("%d requests still out after 60 s (%s)" % (h.aio_in_flight(), done))
        sys.exit(1)
    h.poll(1000)
print("%d written, %d refused with ENOSPC, %d trims, other errors: %s"
      % (done["ok"], done["nospc"], done["trims"], done["other"]))
PY
}

echo "== fill the primary until it refuses: writes only"
out=$(fill 0) || fail "the fill failed: $out"
echo "$out"
grep -q ' [1-9][0-9]* refused with ENOSPC' <<<"$out" || fail "the primary never ran out of space"
grep -q 'other errors: \[\]' <<<"$out" || fail "requests failed other than writes with ENOSPC"

echo "== full: writes and trims"
out=$(fill 3) || fail "the second fill failed: $out"
echo "$out"
grep -q ' [1-9][0-9]* trims' <<<"$out" || fail "no trim succeeded: $out"
grep -q 'other errors: \[\]' <<<"$out" || fail "requests failed other than writes with ENOSPC"

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

echo "== refused writes gave their version back, and no PG peered again"
grep -h 'gave its version back' "$TEST_TMP/blockd0.log" ||
	fail "no refused write gave its version back while others of its PG were out"
! grep -h 'peering again' "$TEST_TMP/blockd0.log" "$TEST_TMP/blockd1.log" ||
	fail "a PG peered again after a refused write"

echo "== the primary dies: the replica alone"
stop_daemon "${BD_PID[0]}" KILL
wait_for 20 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '1 up'" ||
	fail "node 0 never marked down: $(cli status)"
check replica
echo "PASS"
