#!/usr/bin/env bash
# strata-nbd against QEMU's and libnbd's tools on a live one-node cluster:
# qemu-img info/map/convert/compare, qemu-io patterns, nbdinfo --json/--list/--map/--can,
# and an nbdcopy round trip of a 1 GiB sparse random image.
. "$(dirname "$0")/lib.sh"

for t in qemu-img qemu-io nbdinfo nbdcopy jq sha256sum; do
	command -v "$t" >/dev/null || fail "$t is missing (run scripts/bootstrap)"
done

# ---- cluster: meta, one blockd, strata-nbd ----
NBD_PORT=$(free_port)
start_single 4G
cli volume create p/v --size 1G >/dev/null
cli volume create p/big --size 1G >/dev/null
start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
wait_port "$NBD_PORT"
URI=nbd://127.0.0.1:$NBD_PORT
QURI=nbd+tcp://127.0.0.1:$NBD_PORT

step() { echo "== $*"; }

# ---- nbdinfo ----
step "nbdinfo --list / --json / --can"
nbdinfo --list "$URI" | grep -q 'export="p/v"' || fail "nbdinfo --list misses p/v"
nbdinfo --list "$URI" | grep -q 'export="p/big"' || fail "nbdinfo --list misses p/big"
nbdinfo --json "$URI/p/v" >"$TEST_TMP/info.json"
[ "$(jq -r '.exports[0]."export-size"' "$TEST_TMP/info.json")" = 1073741824 ] ||
	fail "export size: $(cat "$TEST_TMP/info.json")"
[ "$(jq -r '.exports[0]."is_read_only"' "$TEST_TMP/info.json")" = false ] || fail "read-only?"
[ "$(jq -r '.protocol' "$TEST_TMP/info.json")" = newstyle-fixed ] || fail "not fixed newstyle"
nbdinfo --can multi-conn "$URI/p/v" || fail "multi-conn not advertised"
nbdinfo --can flush "$URI/p/v" || fail "flush not advertised"
nbdinfo --can fua "$URI/p/v" || fail "fua not advertised"
nbdinfo --can trim "$URI/p/v" || fail "trim not advertised"
nbdinfo --can zero "$URI/p/v" || fail "zero not advertised"
nbdinfo --can fast-zero "$URI/p/v" || fail "fast-zero not advertised"
nbdinfo --can cache "$URI/p/v" || fail "cache not advertised"
nbdinfo --can df "$URI/p/v" || fail "df not advertised"
if nbdinfo --is read-only "$URI/p/v"; then fail "p/v claims read-only"; fi
# libnbd prints the server's error message only in its debug log.
if LIBNBD_DEBUG=1 nbdinfo "$URI/p/nope" 2>"$TEST_TMP/err"; then fail "unknown export accepted"; fi
grep -q "export 'p/nope' not found" "$TEST_TMP/err" ||
	fail "no message for an unknown export: $(tail -5 "$TEST_TMP/err")"

# ---- qemu-io ----
step "qemu-io patterns, write -z, write -z -u, discard, write -f, flush"
qio() { qemu-io -f raw "$QURI/p/v" "$@"; }
qio -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 4M 64k' -c 'write -f -P 0x11 8M 4k' -c flush \
	>/dev/null || fail "qemu-io write"
qio -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 4M 64k' -c 'read -P 0x11 8M 4k' \
	-c 'read -P 0 1M 3M' 2>&1 | tee "$TEST_TMP/qio.log" | grep -q -i "pattern verification failed" &&
	fail "qemu-io read back mismatch"
grep -q "read 4096/4096" "$TEST_TMP/qio.log" || fail "qemu-io reads: $(cat "$TEST_TMP/qio.log")"
qio -c 'write -z 0 64k' -c 'write -z -u 64k 64k' -c 'discard 128k 64k' >/dev/null ||
	fail "qemu-io zero/discard"
qio -c 'read -P 0 0 192k' -c 'read -P 0xab 192k 64k' 2>&1 | grep -q -i "verification failed" &&
	fail "zeroed/discarded ranges do not read back as expected"

# ---- qemu-img info / map ----
step "qemu-img info and map"
qemu-img info --output=json "$QURI/p/v" | jq -e '."virtual-size" == 1073741824' >/dev/null ||
	fail "qemu-img info size"
qemu-img map --output=json -f raw "$QURI/p/v" >"$TEST_TMP/map.json"
# What was written (1 MiB at 0 minus the trimmed 64-192k, 64k at 4M, 4k at 8M) is data; the
# tail of the volume was never written and must be a hole.
jq -e 'map(select(.data == true)) | length > 0' "$TEST_TMP/map.json" >/dev/null ||
	fail "map shows no data: $(cat "$TEST_TMP/map.json")"
jq -e 'map(select(.start <= 4194304 and .start + .length > 4194304))[0].data == true' \
	"$TEST_TMP/map.json" >/dev/null || fail "4M is not data: $(cat "$TEST_TMP/map.json")"
jq -e 'map(select(.start <= 536870912 and .start + .length > 536870912))[0].data == false' \
	"$TEST_TMP/map.json" >/dev/null || fail "512M is not a hole: $(cat "$TEST_TMP/map.json")"
jq -e 'map(select(.start <= 131072 and .start + .length > 131072))[0].zero == true' \
	"$TEST_TMP/map.json" >/dev/null || fail "trimmed range is not zero: $(cat "$TEST_TMP/map.json")"

# ---- nbdinfo --map ----
step "nbdinfo --map"
nbdinfo --map "$URI/p/v" >"$TEST_TMP/nbdmap.txt"
grep -q "data" "$TEST_TMP/nbdmap.txt" || fail "nbdinfo --map shows no data"
grep -q "hole" "$TEST_TMP/nbdmap.txt" || fail "nbdinfo --map shows no hole"

# ---- qemu-img convert a sparse qcow2 in, compare back ----
step "qemu-img convert sparse qcow2 -> export, compare"
qemu-img create -q -f qcow2 "$TEST_TMP/src.qcow2" 1G
qemu-io -f qcow2 "$TEST_TMP/src.qcow2" -c 'write -P 0x5a 0 2M' -c 'write -P 0xa5 300M 1M' \
	-c 'write -P 0x33 1023M 1M' >/dev/null
qemu-img convert -n -f qcow2 -O raw "$TEST_TMP/src.qcow2" "$QURI/p/big" || fail "convert"
qemu-img compare -f qcow2 -F raw "$TEST_TMP/src.qcow2" "$QURI/p/big" || fail "compare"

# ---- nbdcopy: 1 GiB sparse random image round trip ----
step "nbdcopy 1 GiB sparse round trip"
truncate -s 1G "$TEST_TMP/rand.img"
for off in 0 17 200 511 777 1000; do
	head -c 4M /dev/urandom | dd of="$TEST_TMP/rand.img" bs=1M seek="$off" conv=notrunc \
		status=none
done
cli volume create p/copy --size 1G >/dev/null
nbdcopy "$TEST_TMP/rand.img" "$URI/p/copy" || fail "nbdcopy in"
nbdcopy "$URI/p/copy" "$TEST_TMP/back.img" || fail "nbdcopy out"
a=$(sha256sum <"$TEST_TMP/rand.img" | cut -d' ' -f1)
b=$(sha256sum <"$TEST_TMP/back.img" | cut -d' ' -f1)
[ "$a" = "$b" ] || fail "nbdcopy round trip sha256 $a != $b"

echo "PASS"
