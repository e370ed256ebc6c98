#!/usr/bin/env bash
# strata-iscsi against real initiators on a live one-node cluster: libiscsi's iscsi-ls,
# iscsi-inq (standard + VPD 0x83), iscsi-readcapacity16; qemu-img info/convert/compare and
# qemu-io patterns (aligned and 512-byte read-modify-write), header digests, a read-only
# snapshot target, CHAP success and failure, and the initiator ACL.
. "$(dirname "$0")/lib.sh"

for t in iscsi-ls iscsi-inq iscsi-readcapacity16 qemu-img qemu-io cmp; do
	command -v "$t" >/dev/null || fail "$t is missing (run scripts/bootstrap)"
done

ISC_PORT=$(free_port)
PFX=iqn.2026-11.io.strata
step() { echo "== $*"; }

start_single 4G
cli volume create p/v --size 1G >/dev/null
cli volume create p/sec --size 64M >/dev/null

cat >"$TEST_TMP/iscsi.conf" <<CONF
# CHAP and an ACL on one target; the others are open.
target $PFX:p.sec
  auth alice alicesecret12
  allow iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq
CONF
start_daemon iscsi "$STRATA_BIN/strata-iscsi" --meta "$META" --listen "127.0.0.1:$ISC_PORT" \
	--config "$TEST_TMP/iscsi.conf"
wait_port "$ISC_PORT"
PORTAL=127.0.0.1:$ISC_PORT
URL=iscsi://$PORTAL/$PFX:p.v/0

step "iscsi-ls: SendTargets lists every volume with its portal"
iscsi-ls "iscsi://$PORTAL" >"$TEST_TMP/ls"
grep -q "Target:$PFX:p.v Portal:$PORTAL,1" "$TEST_TMP/ls" || fail "iscsi-ls: $(cat "$TEST_TMP/ls")"
if grep -q "Target:$PFX:p.sec " "$TEST_TMP/ls"; then
	fail "SendTargets shows p.sec to an initiator outside its ACL"
fi

step "iscsi-inq: standard INQUIRY, VPD pages, NAA designator"
iscsi-inq "$URL" >"$TEST_TMP/inq"
grep -q "Peripheral Device Type:DIRECT_ACCESS" "$TEST_TMP/inq" || fail "inquiry: $(cat "$TEST_TMP/inq")"
grep -q "Vendor:STRATA" "$TEST_TMP/inq" || fail "vendor"
iscsi-inq -e 1 -c 0 "$URL" >"$TEST_TMP/vpd0"
for p in 0x80 0x83 0xb0 0xb1 0xb2; do
	grep -q "Page:$p" "$TEST_TMP/vpd0" || fail "VPD page $p not listed"
done
iscsi-inq -e 1 -c 131 "$URL" >"$TEST_TMP/vpd83"
grep -q "Designator Type:(3) NAA" "$TEST_TMP/vpd83" || fail "no NAA designator: $(cat "$TEST_TMP/vpd83")"
grep -q "Designator:\[$PFX:p.v\]" "$TEST_TMP/vpd83" || fail "no SCSI name string"
naa1=$(md5sum <"$TEST_TMP/vpd83")
naa2=$(iscsi-inq -e 1 -c 131 "$URL" | md5sum)
[ "$naa1" = "$naa2" ] || fail "NAA designator not stable"
iscsi-inq -e 1 -c 178 "$URL" >"$TEST_TMP/vpdb2"
grep -q "lbprz:1" "$TEST_TMP/vpdb2" || fail "VPD B2: $(cat "$TEST_TMP/vpdb2")"

step "iscsi-readcapacity16: size, LBPME, LBPRZ"
iscsi-readcapacity16 "$URL" >"$TEST_TMP/rc16"
grep -q "Total size:1073741824" "$TEST_TMP/rc16" || fail "rc16: $(cat "$TEST_TMP/rc16")"
grep -q "LBPME:1 LBPRZ:1" "$TEST_TMP/rc16" || fail "thin provisioning bits"
grep -q "LOGICAL BLOCK LENGTH IN BYTES:512" "$TEST_TMP/rc16" || fail "block size"

step "qemu-img info / convert / compare"
qemu-img info "$URL" | grep -q "virtual size: 1 GiB" || fail "qemu-img info"
head -c 48M /dev/urandom >"$TEST_TMP/img.raw"
qemu-img convert -n -f raw -O raw "$TEST_TMP/img.raw" "$URL" || fail "qemu-img convert to iscsi"
qemu-img convert -f raw -O raw "$URL" "$TEST_TMP/back.raw" || fail "qemu-img convert from iscsi"
cmp -n $((48 << 20)) "$TEST_TMP/img.raw" "$TEST_TMP/back.raw" || fail "round trip differs"

step "qemu-io: aligned and 512-byte patterns, zero, discard, flush"
B=$((100 << 20))
qemu-io -f raw "$URL" -c "write -P 0xab $B 1M" -c "write -P 0x11 $((B + 2 * 1048576)) 512" \
	-c "write -P 0x22 $((B + 2 * 1048576 + 1536)) 1k" -c "write -P 0x33 $((B + 3 * 1048576)) 64k" \
	-c "write -z $((B + 3 * 1048576 + 512)) 7k" -c "discard $((B + 4 * 1048576)) 1M" -c flush \
	>"$TEST_TMP/qio.w" || fail "qemu-io writes"
qemu-io -f raw "$URL" -c "read -P 0xab $B 1M" -c "read -P 0x11 $((B + 2 * 1048576)) 512" \
	-c "read -P 0 $((B + 2 * 1048576 + 512)) 1k" -c "read -P 0x22 $((B + 2 * 1048576 + 1536)) 1k" \
	-c "read -P 0 $((B + 2 * 1048576 + 2560)) 1536" -c "read -P 0x33 $((B + 3 * 1048576)) 512" \
	-c "read -P 0 $((B + 3 * 1048576 + 512)) 7k" -c "read -P 0x33 $((B + 3 * 1048576 + 7680)) 1k" \
	-c "read -P 0 $((B + 4 * 1048576)) 1M" >"$TEST_TMP/qio.r" 2>&1
if grep -q "verification failed" "$TEST_TMP/qio.r"; then fail "qemu-io: $(cat "$TEST_TMP/qio.r")"; fi

step "header digest (CRC32C) through qemu"
qemu-io --image-opts "driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=$PORTAL,file.target=$PFX:p.v,file.lun=0,file.header-digest=crc32c" \
	-c "write -P 0x5a $((B + 5 * 1048576)) 256k" -c "read -P 0x5a $((B + 5 * 1048576)) 256k" \
	>"$TEST_TMP/qio.d" 2>&1 || fail "digest session: $(cat "$TEST_TMP/qio.d")"
if grep -q "verification failed" "$TEST_TMP/qio.d"; then fail "digest data"; fi
grep -q "hdigest 1" "$TEST_TMP/iscsi.log" || fail "header digest was not negotiated"

step "snapshot target is read-only"
cli snap create p/v@s1 >/dev/null
SURL=iscsi://$PORTAL/$PFX:p.v.s1/0
qemu-io -f raw -r "$SURL" -c "read -P 0xab $B 1M" >"$TEST_TMP/snap.r" 2>&1 || fail "snapshot read"
if grep -q "verification failed" "$TEST_TMP/snap.r"; then fail "snapshot data"; fi
if qemu-io -f raw "$SURL" -c "write -P 1 0 4k" >"$TEST_TMP/snap.w" 2>&1 &&
	! grep -qi "error\|denied\|protect\|read-only\|failed" "$TEST_TMP/snap.w"; then
	fail "write to a snapshot target succeeded: $(cat "$TEST_TMP/snap.w")"
fi

step "CHAP: right secret logs in, wrong or missing secret does not; ACL refuses others"
iscsi-inq "iscsi://alice%alicesecret12@$PORTAL/$PFX:p.sec/0" >/dev/null || fail "CHAP login"
if iscsi-inq "iscsi://alice%wrongsecret1@$PORTAL/$PFX:p.sec/0" >/dev/null 2>&1; then
	fail "CHAP with a wrong secret logged in"
fi
if iscsi-inq "iscsi://$PORTAL/$PFX:p.sec/0" >/dev/null 2>&1; then
	fail "login without CHAP to a CHAP target"
fi
if iscsi-readcapacity16 "iscsi://alice%alicesecret12@$PORTAL/$PFX:p.sec/0" >/dev/null 2>&1; then
	fail "initiator outside the ACL logged in"
fi

step "a malformed PDU ends only its own connection"
python3 - "$ISC_PORT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
bhs = bytearray(48); bhs[0] = 0x43; bhs[5:8] = (0xffffff).to_bytes(3, "big")
s.sendall(bytes(bhs))
s.settimeout(5)
try:
    while s.recv(4096): pass
except OSError: pass
PY
iscsi-inq "$URL" >/dev/null || fail "target unusable after a malformed PDU"
kill -0 "$(pgrep -f "strata-iscsi --meta $META" | head -1)" 2>/dev/null || fail "strata-iscsi died"
echo "OK"
