#!/usr/bin/env bash
# Shared storage through two strata-nbd instances (the live-migration case): no gateway caches,
# so a write completed through one is read back through the other at once; interleaved writers
# on both see each other's data; and a volume stays consistent while both gateways serve it
# under a concurrent fio verify workload from each side on disjoint halves.
. "$(dirname "$0")/lib.sh"

# nbdsh is a Python program; use the distribution's python3, which has the nbd module.
export PATH=/usr/bin:$PATH
for t in nbdsh fio; do
	command -v "$t" >/dev/null || fail "$t is missing (run scripts/bootstrap)"
done
/usr/bin/python3 -c 'import nbd' || fail "python3-libnbd is missing (run scripts/bootstrap)"
fio --enghelp 2>/dev/null | grep -qw nbd || fail "fio lacks the nbd engine (run scripts/bootstrap)"

NBD1=$(free_port)
NBD2=$(free_port)
start_single 2G
cli volume create p/v --size 256M >/dev/null
# Gateway 1 reaches meta and blockd over TCP, gateway 2 over the same-host Unix twins
# (common/net.h): both RPC transports serve the same volume at once.
STRATA_TRANSPORT=tcp start_daemon nbd1 "$STRATA_BIN/strata-nbd" --meta "$META" \
	--listen "127.0.0.1:$NBD1"
NBD1_PID=$LAST_PID
start_daemon nbd2 "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD2"
NBD2_PID=$LAST_PID
wait_port "$NBD1"
wait_port "$NBD2"

echo "== a write through one gateway is visible through the other at once"
NBD1=$NBD1 NBD2=$NBD2 nbdsh -n -c - <<'PY' || fail "cross-gateway visibility"
import os
def conn(port):
    h = nbd.NBD()
    h.set_export_name("p/v")
    h.connect_tcp("127.0.0.1", port)
    return h
a, b = conn(os.environ["NBD1"]), conn(os.environ["NBD2"])
for i in range(64):
    off = i * 65536
    a.pwrite(bytes([i + 1]) * 65536, off)            # completed through gateway 1 ...
    assert b.pread(65536, off) == bytes([i + 1]) * 65536, "gateway 2 missed write %d" % i
    b.pwrite(bytes([200 - i]) * 4096, off + 4096)    # ... and the other way round
    got = a.pread(8192, off)
    assert got[:4096] == bytes([i + 1]) * 4096 and got[4096:] == bytes([200 - i]) * 4096, i
# Flush through gateway 2 after writes through gateway 1: both report success.
a.flush()
b.flush()
print("cross-gateway visibility ok")
PY
[ "$(unix_conns "$NBD1_PID")" -eq 0 ] || fail "gateway 1 (STRATA_TRANSPORT=tcp) used a Unix socket"
[ "$(unix_conns "$NBD2_PID")" -gt 0 ] || fail "gateway 2 did not use the same-host Unix sockets"

echo "== fio verify through both gateways at once, disjoint halves"
for g in 1 2; do
	port=NBD$g
	cat >"$TEST_TMP/gw$g.fio" <<EOF2
[global]
ioengine=nbd
uri=nbd://127.0.0.1:${!port}/p/v
rw=randwrite
bs=4k
iodepth=16
size=64M
offset=$(((g - 1) * 128))M
verify=crc32c
verify_fatal=1
verify_state_save=0
[gw$g]
EOF2
	fio --output="$TEST_TMP/gw$g.out" "$TEST_TMP/gw$g.fio" &
	eval "FIO$g=\$!"
done
wait "$FIO1" || { cat "$TEST_TMP/gw1.out"; fail "fio through gateway 1"; }
wait "$FIO2" || { cat "$TEST_TMP/gw2.out"; fail "fio through gateway 2"; }
grep -q "err= 0" "$TEST_TMP/gw1.out" && grep -q "err= 0" "$TEST_TMP/gw2.out" ||
	fail "fio reported errors"
echo "PASS"
