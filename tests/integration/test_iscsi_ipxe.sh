#!/usr/bin/env bash
# iPXE SAN boot from a Strata volume: a one-node cluster with strata-iscsi on loopback, a volume
# holding a 512-byte MBR boot sector (tools/sanboot_mbr.s: prints a marker on COM1 and halts),
# and QEMU (TCG) running Debian's ipxe.lkrn with a script passed as the initrd:
# `dhcp` then `sanboot iscsi:10.0.2.2::<port>::<iqn>`. 10.0.2.2 is the user-mode network's
# gateway, which QEMU maps to the host's 127.0.0.1, so the session stays on loopback.
# Passes when the marker reaches the serial log (so iPXE logged in, read LBA 0 through INT 13h
# and jumped to it) and strata-iscsi logged iPXE's session.
#
# SANBOOT_ALT_MARKER=1 builds the sector with another string: the test must then fail.
. "$(dirname "$0")/lib.sh"

IPXE_LKRN=/usr/lib/ipxe/ipxe.lkrn
for t in qemu-system-x86_64 qemu-img as ld; do
	command -v "$t" >/dev/null || fail "$t is missing (run scripts/bootstrap)"
done
[ -r "$IPXE_LKRN" ] || fail "$IPXE_LKRN is missing (run scripts/bootstrap: package ipxe)"

MARKER=STRATA-SANBOOT-OK
BOOT_SECS=${BOOT_SECS:-120}
step() { echo "== $*"; }

step "assemble the boot sector"
defsym=()
[ -z "${SANBOOT_ALT_MARKER:-}" ] || defsym=(--defsym ALT_MARKER=1)
as --32 "${defsym[@]}" -o "$TEST_TMP/mbr.o" "$STRATA_SRC/tests/integration/tools/sanboot_mbr.s"
ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o "$TEST_TMP/mbr.bin" "$TEST_TMP/mbr.o"
[ "$(stat -c %s "$TEST_TMP/mbr.bin")" -eq 512 ] || fail "boot sector is not 512 bytes"
[ "$(od -An -tx1 -j510 -N2 "$TEST_TMP/mbr.bin" | tr -d ' ')" = 55aa ] || fail "no 0x55AA signature"

step "one-node cluster, R=1 pool, strata-iscsi"
ISC_PORT=$(free_port)
IQN=iqn.2026-11.io.strata:boot.disk

start_meta
start_node 0 1G
wait_up 1
cli pool create boot --replicas 1 >/dev/null
cli volume create boot/disk --size 64M >/dev/null
# Debug level logs every CDB, so a failed boot shows how far iPXE got.
start_daemon iscsi "$STRATA_BIN/strata-iscsi" --meta "$META" --listen "127.0.0.1:$ISC_PORT" \
	--log-level debug
wait_port "$ISC_PORT"

step "write the boot sector to LBA 0 over iSCSI"
qemu-img convert -n -f raw -O raw "$TEST_TMP/mbr.bin" "iscsi://127.0.0.1:$ISC_PORT/$IQN/0" ||
	fail "qemu-img convert to iscsi"

step "boot QEMU: ipxe.lkrn, script as initrd, sanboot over user-mode networking"
# No marker text in the script: it must come from the volume.
cat >"$TEST_TMP/boot.ipxe" <<IPXE
#!ipxe
dhcp
sanboot iscsi:10.0.2.2::$ISC_PORT::$IQN
IPXE
# TCG, not KVM: on the project's machine (a KVM guest with /dev/kvm, nested) ipxe.lkrn hung
# under -accel kvm right after SeaBIOS's "Booting from ROM...", while TCG boots it in seconds.
# -nodefaults -vga std: only the devices named here (one VGA, so iPXE and SeaBIOS have a text
# console for anyone who attaches a display while debugging).
# -uuid: iPXE names itself iqn.2010-04.org.ipxe:<SMBIOS UUID> when DHCP gives no hostname, so a
# fresh UUID makes this run's login recognisable in the strata-iscsi log.
# -no-reboot: if iPXE gives up, the BIOS runs out of boot devices and QEMU exits instead of
# looping, so a failure is seen at once.
UUID=$(cat /proc/sys/kernel/random/uuid)
INITIATOR=iqn.2010-04.org.ipxe:$UUID
start_daemon qemu qemu-system-x86_64 -accel tcg -m 128 -nodefaults -display none -vga std \
	-uuid "$UUID" -monitor none -serial "file:$TEST_TMP/serial.log" -no-reboot \
	-kernel "$IPXE_LKRN" -initrd "$TEST_TMP/boot.ipxe" \
	-netdev user,id=n0 -device e1000,netdev=n0
QEMU_PID=$LAST_PID
start=$SECONDS
while ! grep -q "$MARKER" "$TEST_TMP/serial.log" 2>/dev/null; do
	kill -0 "$QEMU_PID" 2>/dev/null || fail "QEMU exited before the marker (iPXE gave up?)"
	[ $((SECONDS - start)) -lt "$BOOT_SECS" ] || fail "no $MARKER on COM1 after ${BOOT_SECS}s"
	sleep 0.5
done
echo "marker after $((SECONDS - start))s"
stop_daemon "$QEMU_PID"

step "strata-iscsi logged iPXE's login"
grep "normal session of $INITIATOR to $IQN " "$TEST_TMP/iscsi.log" ||
	fail "no session of $INITIATOR in the strata-iscsi log"
echo "PASS"
