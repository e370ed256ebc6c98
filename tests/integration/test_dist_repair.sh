#!/usr/bin/env bash
# Scrub and repair: three nodes, R=3. After a workload, one byte of one data block in one
# replica's data file is flipped (the node is stopped meanwhile). `strata scrub` must report
# the mismatch and repair it from an intact copy; a second scrub is clean and the data
# verifies. A scrub with --max-mbps reads no faster than the rate.
. "$(dirname "$0")/lib.sh"

start_cluster 3 1G
cli pool create p --replicas 3 --pgs 16 >/dev/null
cli volume create p/v --size 1G >/dev/null
wait_pgs "$META" clean 30
io --volume p/v --seconds 3 --qd 8 --span 32M --seed 5 --state "$TEST_TMP/state" >"$TEST_TMP/io.log" 2>&1 ||
	fail "workload failed: $(cat "$TEST_TMP/io.log")"
out=$(cli scrub p) || fail "scrub failed: $out"
echo "before: $out"
echo "$out" | grep -q ' 0 mismatches' || fail "mismatches before any damage: $out"

echo "== flip one byte of a data block on node 2"
stop_daemon "${BD_PID[2]}"
# A nonzero block that the index references (fsck --verify sees the flip).
flip() { # file offset
	python3 -c 'import os,sys; fd=os.open(sys.argv[1],os.O_RDWR); o=int(sys.argv[2]); b=os.pread(fd,1,o); os.pwrite(fd,bytes([b[0]^0x5a]),o)' "$1" "$2"
}
found=
for off in $(python3 -c '
import os, random, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
# Nonzero blocks anywhere in the file, in a fixed random order: blockd reuses freed blocks
# (stale data stays nonzero) and prewrites zeros ahead, so where the referenced ones are
# depends on the allocator; about half of the nonzero blocks are referenced after the workload.
cand = []
off = 0
while True:
    try:
        off = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, off, os.SEEK_HOLE)
    o = off
    while o < hole:
        if any(os.pread(fd, 4096, o)):
            cand.append(o + 100)
        o += 4096
    off = hole
random.Random(5).shuffle(cand)
for o in cand[:64]:
    print(o)
' "$TEST_TMP/bd2.data"); do
	flip "$TEST_TMP/bd2.data" "$off"
	if ! "$STRATA_BIN/strata-blockd" --fsck --verify --data "$TEST_TMP/bd2.data" >/dev/null 2>&1; then
		found=$off
		break
	fi
	flip "$TEST_TMP/bd2.data" "$off"
done
[ -n "$found" ] || fail "no referenced data block found"
echo "flipped the byte at offset $found"
start_node 2 1G
wait_up 3 20
wait_pgs "$META" clean 60 # its PGs peer again before they are scrubbed
out=$(cli scrub p) || fail "scrub failed: $out"
echo "damaged: $out"
echo "$out" | grep -q ' 1 mismatches, 1 repaired' || fail "scrub did not find and repair the flip: $out"
out=$(cli scrub p) || fail "scrub failed: $out"
echo "again: $out"
echo "$out" | grep -q ' 0 mismatches' || fail "re-scrub not clean: $out"
io --volume p/v --check "$TEST_TMP/state" || fail "data does not verify after the repair"

echo "== a paced scrub: --max-mbps holds each node's digest reads to the rate"
# The three nodes scrub at once, each the objects it is primary of, and each may read its
# first object (at most 4 MiB here) before it waits. The node with the largest share read at
# least a third of the total: the scrub cannot end before (bytes / 3 - 4 MiB) / rate.
rate=4
t0=$(date +%s%N)
out=$(cli scrub p --max-mbps $rate --json) || fail "paced scrub failed: $out"
t1=$(date +%s%N)
echo "paced: $out, $(((t1 - t0) / 1000000)) ms"
python3 - "$out" $rate $(((t1 - t0) / 1000000)) <<'PY' || fail "the paced scrub ran faster than its rate"
import json, sys
d = json.loads(sys.argv[1])
rate, ms = int(sys.argv[2]), int(sys.argv[3])
assert d["mismatches"] == 0 and d["errors"] == 0, d
assert d["bytes_read"] >= 16 << 20, d  # the workload wrote most of its 32 MiB span
floor_ms = (d["bytes_read"] / 3 - (4 << 20)) / (rate * 1e6) * 1e3
assert ms >= floor_ms, (ms, floor_ms)
print("took %d ms, at least %d ms at %d MB/s" % (ms, floor_ms, rate))
PY
out=$(cli scrub p --max-mbps 0 2>&1) && fail "--max-mbps 0 was accepted: $out"
echo "$out" | grep -q 'max-mbps must be' || fail "no clear error for --max-mbps 0: $out"
echo "PASS"
