#!/usr/bin/env bash
# A node that runs out of space while the other copy of its PG has room must not leave the
# copies different, nor acknowledge a write that only one of them holds. Sourced by
# test_dist_primary_full.sh (FULL=primary) and test_dist_replica_full.sh (FULL=replica).
#
# Two nodes, R=2, a pool of one PG. Node 0 is small (48 MiB against 1 GiB), and is the PG's
# primary (FULL=primary) or its replica (FULL=replica). Writes through strata-nbd, 32 at once,
# fill it until writes fail with ENOSPC. Then a discard frees space, new data is written, and:
#   - the primary reads back the discard and the new data;
#   - scrub finds the copies identical;
#   - with the primary killed, the other node alone reads back the same, and every write of
#     the first fill that was acknowledged.
#
# The fills run 32 requests at once:
#   - In the first (writes only), a write that finds the primary's store full while a pending
#     group may still free blocks waits for it, and is forwarded only once it has its blocks.
#     Before that, it was forwarded at once; when the wait ended in ENOSPC the replica held a
#     version that the full primary could not pull back, and the PG stayed peering (every
#     request to it hung) until space was freed elsewhere.
#   - The second, on the full node, puts a trim after every third write, so writes are refused
#     while earlier mutations of the PG are still out on the replica, and trims (which need no
#     space) are admitted right after them.
#
# FULL=primary: each refused write gives its version back to the PG, and the next mutation
# follows the last version the primary holds. The primary's log must show such give-backs, and
# neither node may log a re-peering: without the give-back the next trim named the refused
# write's version as its predecessor, the replica answered that it missed a mutation, and the
# PG peered again. Before the first fix of this test, the primary forwarded each write while it
# ran it: the replica applied writes the primary refused, and later skipped the discard.
#
# FULL=replica: once the replica refuses a forward for want of space, the primary refuses the
# PG's writes with ENOSPC (trims go on) until the replica has caught up. Before, the primary
# went on acknowledging writes that the replica, behind and unable to catch up, never got: the
# data of 511 acknowledged writes was on one node of an R=2 pool. Its catch-up installs the
# trimmed objects even when an earlier one does not fit, so the discard makes room, it catches
# up, and writes are admitted again.
. "$(dirname "$0")/lib.sh"

command -v qemu-io >/dev/null || fail "qemu-io is missing (run scripts/bootstrap)"
# The fill is a Python program on libnbd; the distribution's python3 has the nbd module.
/usr/bin/python3 -c 'import nbd' || fail "python3-libnbd is missing (run scripts/bootstrap)"
FULL=${FULL:-primary}
case "$FULL" in primary | replica) ;; *) fail "FULL=$FULL: primary or replica" ;; esac
# The hard wall is what this tests (test_dist_full_ratio tests the full ratio).
start_meta --full-ratio 100
start_node 0 48M
start_node 1 1G
wait_up 2
node_json() { cli node ls --json; }
id0=$(node_json | python3 -c '
import json, sys
port = sys.argv[1]
print([n["id"] for n in json.load(sys.stdin) if n["addr"].endswith(":" + port)][0])' "${BD_PORT[0]}")

# Pools of one PG until one has node 0 as its primary, or not (HRW: each does with chance
# 1/2).
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
	if { [ "$FULL" = primary ] && [ "$after" -gt "$before" ]; } ||
		{ [ "$FULL" = replica ] && [ "$after" -eq "$before" ]; }; then
		pool=t$k
		break
	fi
done
[ -n "$pool" ] || fail "no pool of 10 had node 0 as its $FULL"
if [ "$FULL" = primary ]; then
	PRIMARY=0
	echo "pool $pool: primary is node $id0 (48 MiB), replica 1 GiB"
else
	PRIMARY=1
	echo "pool $pool: primary 1 GiB, replica is node $id0 (48 MiB)"
fi
cli volume create "$pool/v" --size 128M >/dev/null

NBD_PORT=$(free_port)
start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
wait_port "$NBD_PORT"
URI="nbd://127.0.0.1:$NBD_PORT/$pool/v"
qio() { qemu-io -f raw "$URI" "$@"; }

# fill TRIM_EVERY ACKED: writes of 256 KiB of 0x11 over the volume, 32 at once; with
# TRIM_EVERY > 0, a 64 KiB trim in its upper half after every TRIM_EVERY writes (a trim needs
# no space, so it succeeds while the writes around it are refused). The offsets of the writes
# acknowledged go to the file ACKED, one per line.
fill() {
	/usr/bin/python3 - "$URI" "$1" "$2" <<'PY'
import errno, sys, time
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
every = int(sys.argv[2])
acked = []
size, chunk, depth = h.get_size(), 256 * 1024, 32
buf = nbd.Buffer.from_bytearray(bytearray([0x11]) * chunk)
done = {"ok": 0, "nospc": 0, "trims": 0, "other": []}
def finished(what, off, err):
    if err.value == 0:
        done["trims" if what == "trim" else "ok"] += 1
        if what == "write":
            acked.append(off)
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
with open(sys.argv[3], "w") as f:
    f.write("".join("%d\n" % off for off in sorted(acked)))
PY
}

# acked_read_back FILE: every offset in FILE below the volume's upper half (where no trim went)
# and from 20 MiB (past the discard and the new data) reads back as 0x11. Gives up after 90 s.
acked_read_back() {
	timeout 90 /usr/bin/python3 - "$URI" "$1" <<'PY'
import sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size, chunk = h.get_size(), 256 * 1024
offs = [int(l) for l in open(sys.argv[2]) if l.strip()]
offs = [o for o in offs if 20 * 2**20 <= o < size // 2]
bad = [o for o in offs if h.pread(chunk, o) != b"\x11" * chunk]
print("%d acknowledged writes checked, %d differ%s" % (len(offs), len(bad), bad[:4] if bad else ""))
sys.exit(1 if bad or not offs else 0)
PY
}

echo "== fill node 0 until it refuses: writes only"
out=$(fill 0 "$TEST_TMP/acked") || fail "the fill failed: $out"
echo "$out"
grep -q ' [1-9][0-9]* refused with ENOSPC' <<<"$out" || fail "node 0 never ran out of space"
grep -q 'other errors: \[\]' <<<"$out" || fail "requests failed other than writes with ENOSPC"

if [ "$FULL" = replica ]; then
	# Past the 2 s after which a peering or catch-up round that failed with ENOSPC runs
	# again: the PG serves with the replica behind, as long as nobody frees space.
	sleep 3
fi
echo "== full: writes and trims"
out=$(fill 3 "$TEST_TMP/acked2") || fail "the second fill failed: $out"
echo "$out"
grep -q ' [1-9][0-9]* trims' <<<"$out" || fail "no trim succeeded: $out"
grep -q 'other errors: \[\]' <<<"$out" || fail "requests failed other than writes with ENOSPC"
# Nothing the first fill wrote was trimmed, so node 0 is still full: no write may be
# acknowledged (on the primary alone, with the replica behind).
grep -q '^0 written' <<<"$out" || fail "writes were acknowledged while node 0 was full: $out"

# full_pgs: the pool's PGs that `strata status` says refuse writes (a member is out of space).
full_pgs() {
	cli status --json | python3 -c '
import json, sys
print(sum(p["full"] for p in json.load(sys.stdin)["pgs"] if p["pool"] == sys.argv[1]))' "$pool"
}
# until_full_pgs N: wait up to 10 s (heartbeats come each second) for full_pgs to say N.
until_full_pgs() {
	local i n=
	for i in $(seq 50); do
		n=$(full_pgs) && [ "$n" = "$1" ] && return 0
		sleep 0.2
	done
	fail "status says $n PGs refuse writes, not $1: $(cli status)"
}
if [ "$FULL" = replica ]; then
	until_full_pgs 1
	cli status | grep 'refusing writes'
else
	until_full_pgs 0
fi

echo "== discard, then new data"
qio -c 'discard 0 16M' >/dev/null || fail "discard"
if [ "$FULL" = replica ]; then
	grep -h 'is out of space: writes are refused' "$TEST_TMP/blockd$PRIMARY.log" ||
		fail "the primary never refused writes for its full replica"
	# The discard freed objects on the primary; the replica installs them as it catches up.
	wait_for 30 grep -q 'has room again' "$TEST_TMP/blockd$PRIMARY.log" ||
		fail "the replica never caught up after the discard"
	grep -h 'has room again' "$TEST_TMP/blockd$PRIMARY.log"
	until_full_pgs 0
fi
qio -c 'write -P 0x22 16M 4M' | grep -q 'wrote ' || fail "a write after the discard failed"
check() { # who
	qio -c 'read -P 0 0 16M' | grep -q 'read ' || fail "$1: the discarded range does not read as zeros"
	qio -c 'read -P 0x22 16M 4M' | grep -q 'read ' || fail "$1: the new data does not read back"
}
check primary
out=$(cli scrub "$pool") || fail "scrub failed: $out"
echo "$out"
echo "$out" | grep -q ' 0 mismatches' || fail "the copies differ: $out"

if [ "$FULL" = primary ]; then
	echo "== refused writes gave their version back, and no PG peered again"
	grep -h 'gave its version back' "$TEST_TMP/blockd$PRIMARY.log" ||
		fail "no refused write gave its version back while others of its PG were out"
	! grep -h 'peering again' "$TEST_TMP/blockd0.log" "$TEST_TMP/blockd1.log" ||
		fail "a PG peered again after a refused write"
fi

echo "== the primary dies: the other node alone"
stop_daemon "${BD_PID[$PRIMARY]}" KILL
wait_for 20 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '1 up'" ||
	fail "the primary never marked down: $(cli status)"
check "node $((1 - PRIMARY)) alone"
out=$(acked_read_back "$TEST_TMP/acked") ||
	fail "node $((1 - PRIMARY)) alone: $out"
echo "$out"
echo "PASS"
