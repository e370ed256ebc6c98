#!/usr/bin/env bash
# meta's full ratio: a node whose used space reaches it is marked full in the cluster map, and
# the primaries of its PGs refuse writes with ENOSPC while the node still has room, instead of
# letting users fill it to the last block (which a redirect-on-write store needs for every
# overwrite, and recovery for what it copies back). Trims go on; once they bring the node
# below the ratio less 2 points, writes are admitted again.
#
# Two nodes: node 0 has 64 MiB, node 1 has 1 GiB; meta marks a node full at 50 %. Pool p
# (R=2) has every PG on node 0; pool q (R=1) has about half its PGs' primaries there.
#   1. A paced sequential fill of p/v through strata-nbd must end in ENOSPC at 32 MiB or more
#      and well before node 0's data file is exhausted.
#   2. node ls, status and both nodes' logs say node 0 is full; every PG of p refuses writes.
#   3. Every acknowledged write reads back.
#   4. q/w: writes to PGs led by node 1 succeed, those led by node 0 are refused. A ratio
#      raised at run time (`strata config set full-ratio`) lets them all in at once; 5 points
#      above node 0's use, status warns that it is nearly full. Lowering the ratio back marks
#      node 0 full again.
#   5. A trim of p/v's first 24 MiB succeeds, node 0 leaves the full state, and the refused
#      writes of p and q are admitted again. Scrub finds p's copies identical.
. "$(dirname "$0")/lib.sh"

/usr/bin/python3 -c 'import nbd' || fail "python3-libnbd is missing (run scripts/bootstrap)"
MiB=1048576
start_meta --full-ratio 50
start_node 0 64M
start_node 1 1G
wait_up 2
id0=$(cli node ls --json | python3 -c '
import json, sys
print([n["id"] for n in json.load(sys.stdin) if n["addr"].endswith(":" + sys.argv[1])][0])' \
	"${BD_PORT[0]}")
cli pool create p --replicas 2 --pgs 8 >/dev/null
cli pool create q --replicas 1 --pgs 16 >/dev/null
cli volume create p/v --size 60M >/dev/null
cli volume create q/w --size 64M >/dev/null
NBD_PORT=$(free_port)
start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
wait_port "$NBD_PORT"
wait_pgs "$META" clean 30

# node0 FIELD: node 0's FIELD in `node ls --json`.
node0() {
	cli node ls --json | python3 -c '
import json, sys
n = [n for n in json.load(sys.stdin) if n["id"] == int(sys.argv[1])][0]
print(json.dumps(n[sys.argv[2]]))' "$id0" "$1"
}

# nbd_py EXPORT: run the Python program on stdin with h connected to EXPORT.
nbd_py() {
	/usr/bin/python3 -c "
import errno, sys, time
import nbd
h = nbd.NBD()
h.connect_uri('nbd://127.0.0.1:$NBD_PORT/$1')
$(cat)"
}

echo "== 1. fill p/v, 1 MiB at a time (paced above 24 MiB), until a write is refused"
acked=$(nbd_py p/v <<'PY'
n = 0
while n < 60:
    try:
        h.pwrite(bytes([n + 1]) * (1 << 20), n << 20)
    except nbd.Error as e:
        if e.errnum != errno.ENOSPC:
            sys.exit("write %d: %s" % (n, e))
        break
    n += 1
    if n >= 24:
        time.sleep(0.2)  # the map follows heartbeats, one a second
print(n)
PY
) || fail "fill: $acked"
echo "acknowledged: $acked MiB"
[ "$acked" -lt 60 ] || fail "the whole volume was written: nothing was refused"
used=$(node0 used)
cap=$(node0 capacity)
line=$((cap / 2 / MiB)) # the ratio, in whole MiB: the writes below it must all be admitted
[ "$acked" -ge "$line" ] || fail "refused at $acked MiB, below the ratio ($line MiB)"
echo "node 0: $used of $cap bytes used"
((used * 100 < cap * 80)) ||
	fail "node 0 is $((used * 100 / cap)) % used: the ratio did not stop the fill early"

echo "== 2. node 0 is full in the map, the status and the logs"
[ "$(node0 full)" = true ] || fail "node ls does not show node 0 full: $(cli node ls)"
cli node ls | grep -q " full " || fail "node ls text has no full node: $(cli node ls)"
cli status | grep -q "1 full" || fail "status does not count the full node: $(cli status)"
grep -q "node $id0 .* is full" "$TEST_TMP/meta.log" || fail "meta did not log the full node"
for i in 0 1; do
	grep -q "node $id0 is full: writes to its PGs are refused" "$TEST_TMP/blockd$i.log" ||
		fail "blockd $i did not log node 0 full"
done
full_pgs() { # pool -> PGs refusing writes, from `status --json`
	cli status --json | python3 -c '
import json, sys
print([p["full"] for p in json.load(sys.stdin)["pgs"] if p["pool"] == sys.argv[1]][0])' "$1"
}
for _ in $(seq 50); do
	[ "$(full_pgs p)" = 8 ] && break
	sleep 0.2
done
[ "$(full_pgs p)" = 8 ] || fail "p's 8 PGs are not all refusing writes: $(full_pgs p)"

echo "== 3. every acknowledged write reads back"
nbd_py p/v <<PY || fail "acknowledged data did not read back"
for n in range($acked):
    got = h.pread(1 << 20, n << 20)
    if got != bytes([n + 1]) * (1 << 20):
        sys.exit("MiB %d reads back wrong" % n)
PY

# q_writes: one 4 KiB write at the start of each of q/w's 16 objects; prints "ok refused".
q_writes() {
	nbd_py q/w <<'PY'
ok = refused = 0
for o in range(16):
    try:
        h.pwrite(b"\x5a" * 4096, o * (4 << 20))
        ok += 1
    except nbd.Error as e:
        if e.errnum != errno.ENOSPC:
            sys.exit("object %d: %s" % (o, e))
        refused += 1
print(ok, refused)
PY
}
echo "== 4. q (R=1): writes led by node 1 go on, those led by node 0 are refused"
read -r ok refused <<<"$(q_writes)" || fail "q writes"
echo "q/w: $ok written, $refused refused"
[ "$ok" -gt 0 ] || fail "no write to a PG led by node 1 succeeded"
[ "$refused" -gt 0 ] || fail "no write to a PG led by node 0 was refused"

echo "== 4b. the ratio changed at run time applies at once"
out=$(cli config set full-ratio 0 2>&1) && fail "a full ratio of 0 was accepted"
grep -q "1 to 100" <<<"$out" || fail "no clear error for a ratio of 0: $out"
out=$(cli config set full-raito 90 2>&1) && fail "an unknown setting was accepted"
grep -q "unknown setting" <<<"$out" || fail "no clear error for an unknown setting: $out"
# 5 points above what node 0 uses: below the ratio less its 2 points of hysteresis, and within
# the 10 points under it where status warns.
mid=$(($(node0 used) * 100 / cap + 5))
cli config set full-ratio "$mid" >/dev/null || fail "config set full-ratio $mid"
[ "$(node0 full)" = false ] || fail "node 0 still full at a $mid % ratio: $(cli node ls)"
cli status | grep -q "1 nearly full" ||
	fail "status does not warn of a nearly full node at $mid %: $(cli status)"
cli config set full-ratio 90 | grep -q "full-ratio  90" || fail "config set full-ratio 90"
[ "$(node0 full)" = false ] || fail "node 0 still full at a 90 % ratio: $(cli node ls)"
cli status | grep -q "full at 90%" || fail "status does not show the ratio: $(cli status)"
nbd_py p/v <<PY || fail "a write to p was refused at a 90 % ratio"
deadline = time.monotonic() + 10  # the map reaches the primaries within a round trip
while True:
    try:
        h.pwrite(bytes([$acked + 1]) * (1 << 20), $acked << 20)
        break
    except nbd.Error as e:
        if e.errnum != errno.ENOSPC or time.monotonic() > deadline:
            raise
        time.sleep(0.1)
PY
read -r ok refused <<<"$(q_writes)" || fail "q writes at 90 %"
if [ "$ok" != 16 ] || [ "$refused" != 0 ]; then
	fail "q/w at a 90 % ratio: $ok written, $refused refused"
fi
cli config set full-ratio 50 >/dev/null || fail "config set full-ratio 50"
[ "$(node0 full)" = true ] || fail "node 0 not full again at 50 %: $(cli node ls)"
cli config get --json | python3 -c 'import json, sys; assert json.load(sys.stdin)["full_ratio"] == 50'
wait_for 10 sh -c "[ \$(grep -c 'node $id0 is full: writes' '$TEST_TMP/blockd0.log') -ge 2 ]" ||
	fail "blockd 0 did not see node 0 full again"
acked=$((acked + 1))

echo "== 5. a trim frees node 0, and writes are admitted again"
nbd_py p/v <<'PY' || fail "trim on a full node failed"
h.trim(24 << 20, 0)
PY
wait_for 20 sh -c "! '$STRATA_BIN/strata' --meta $META node ls | grep -q ' full '" ||
	fail "node 0 is still full after the trim: $(cli node ls)"
grep -q "node $id0 .* has room again" "$TEST_TMP/meta.log" || fail "meta did not log the room"
nbd_py p/v <<PY || fail "writes were not admitted again"
deadline = time.monotonic() + 10
while True:
    try:
        h.pwrite(b"\x77" * (1 << 20), 0)
        break
    except nbd.Error as e:
        if e.errnum != errno.ENOSPC or time.monotonic() > deadline:
            raise
        time.sleep(0.2)
assert h.pread(1 << 20, 0) == b"\x77" * (1 << 20)
assert h.pread(1 << 20, 1 << 20) == bytes(1 << 20)  # trimmed: zeros
assert h.pread(1 << 20, ($acked - 1) << 20) == bytes([$acked]) * (1 << 20)  # kept
PY
read -r ok refused <<<"$(q_writes)" || fail "q writes after the trim"
if [ "$ok" != 16 ] || [ "$refused" != 0 ]; then
	fail "q/w after the trim: $ok written, $refused refused"
fi
scrub_clean p
echo "PASS"
