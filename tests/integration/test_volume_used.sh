#!/usr/bin/env bash
# `used` in `strata volume info`: the bytes of data blocks referenced by the volume's own layers
# on the PGs' primaries (blockd LAYER_USAGE, summed by the CLI over the up nodes). Three nodes,
# R=2, so every object has a replica that must not be counted twice. 8 MiB written -> 8 MiB;
# snapshot, then 4 MiB more (2 MiB over old data, partly inside segments the snapshot shares
# with the head, and 2 MiB new) -> 12 MiB; a clone starts at 0 and counts only its own writes.
. "$(dirname "$0")/lib.sh"

for t in qemu-io python3; do
	command -v "$t" >/dev/null || fail "$t is missing (run scripts/bootstrap)"
done

NBD_PORT=$(free_port)
QURI=nbd+tcp://127.0.0.1:$NBD_PORT
MiB=$((1024 * 1024))
qio() { qemu-io -f raw "$QURI/$1" -c "$2" >"$TEST_TMP/qio" 2>&1 || fail "qemu-io $1 '$2': $(cat "$TEST_TMP/qio")"; }
used() { cli --json volume info "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["used"])'; }
expect_used() { # VOL BYTES
	local got
	got=$(used "$1") || fail "volume info $1 failed"
	[ "$got" = "$2" ] || fail "$1: used $got, want $2"
	echo "$1: used $got"
}

start_meta
for i in 0 1 2; do
	port=$(free_port)
	start_daemon "blockd$i" "$STRATA_BIN/strata-blockd" --meta "$META" \
		--listen "127.0.0.1:$port" --data "$TEST_TMP/bd$i.data" --size 1G
	wait_port "$port"
done
wait_up 3
# 1 MiB objects over 16 PGs: the volume's data spreads over every node.
cli pool create p --replicas 2 --object-size 1M --pgs 16 >/dev/null
cli volume create p/v --size 64M >/dev/null
wait_pgs "$META" clean 30
start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
wait_port "$NBD_PORT"

cli volume info --help | grep -q "own layers" || fail "volume info --help does not define used"
expect_used p/v 0
qio p/v "write -P 1 0 8M"
expect_used p/v $((8 * MiB))
cli snap create p/v@s1 >/dev/null
# 2 MiB over old data starting mid-segment (copy-up shares the rest of those segments with
# the snapshot), 2 MiB beyond it.
qio p/v "write -P 2 $((5 * MiB + 128 * 1024)) 2M"
qio p/v "write -P 3 $((10 * MiB)) 2M"
expect_used p/v $((12 * MiB))
cli volume info p/v | grep -q '^used: *12M' || fail "human used: $(cli volume info p/v)"

cli clone p/v@s1 p/c >/dev/null
expect_used p/c 0
qio p/c "write -P 4 0 1M"
expect_used p/c $((1 * MiB))
expect_used p/v $((12 * MiB))
echo "PASS"
