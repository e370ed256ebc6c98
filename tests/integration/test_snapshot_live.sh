#!/usr/bin/env bash
# Snapshots of volumes that are open and being written. A snapshot freezes the head: a write
# that completes after `strata snap create` returns must land in the new head, never in the
# snapshot, even through a connection opened before the snapshot. Also: a template mark turns
# open writers read-only, a rollback redirects them, and a write-and-verify workload sees no
# error while snapshots are taken under it.
. "$(dirname "$0")/lib.sh"

# nbdsh is a Python program; use the distribution's python3, which has the nbd module.
export PATH=/usr/bin:$PATH
command -v nbdsh >/dev/null || fail "nbdsh is missing (run scripts/bootstrap)"
/usr/bin/python3 -c 'import nbd' || fail "python3-libnbd is missing (run scripts/bootstrap)"

NBD_PORT=$(free_port)
start_single 2G
cli volume create p/v --size 64M >/dev/null
cli volume create p/w --size 256M >/dev/null
start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
wait_port "$NBD_PORT"

echo "== a connection opened before the snapshot writes into the new head"
STRATA_CLI="$STRATA_BIN/strata" META="$META" NBD_PORT="$NBD_PORT" nbdsh -n -c - <<'PY' ||
import errno, os, subprocess
cli = [os.environ["STRATA_CLI"], "--meta", os.environ["META"]]
port = os.environ["NBD_PORT"]
def conn(export):
    h = nbd.NBD()
    h.set_export_name(export)
    h.connect_tcp("127.0.0.1", port)
    return h
h = conn("p/v")
A, B, C = b"\xaa" * 65536, b"\xbb" * 65536, b"\xcc" * 65536
h.pwrite(A, 0)
h.pwrite(A, 4 << 20)
h.flush()
subprocess.run(cli + ["snap", "create", "p/v@s1"], check=True, stdout=subprocess.DEVNULL)
# Same connection, after the snapshot returned: must not touch s1.
h.pwrite(B, 0)
h.flush()
s1 = conn("p/v@s1")
assert s1.is_read_only(), "snapshot export is writable"
got = s1.pread(65536, 0)
assert got == A, "snapshot s1 changed after it was taken: %r" % got[:4]
assert s1.pread(65536, 4 << 20) == A, "snapshot s1 lost data"
assert h.pread(65536, 0) == B, "head lost the write made after the snapshot"
assert h.pread(65536, 4 << 20) == A, "head lost data inherited from s1"
# A second snapshot, and a write in between, through the same old connection.
subprocess.run(cli + ["snap", "create", "p/v@s2"], check=True, stdout=subprocess.DEVNULL)
h.pwrite(C, 0)
s2 = conn("p/v@s2")
assert s2.pread(65536, 0) == B, "snapshot s2 does not hold B"
assert s1.pread(65536, 0) == A, "snapshot s1 changed"
assert h.pread(65536, 0) == C, "head does not hold C"
# Rollback: the open connection now sees (and writes) the rolled-back head.
h.flush()
subprocess.run(cli + ["snap", "rollback", "p/v@s1"], check=True, stdout=subprocess.DEVNULL)
assert h.pread(65536, 0) == A, "open connection does not see the rollback"
h.pwrite(B, 8 << 20)
assert s1.pread(65536, 8 << 20) == b"\0" * 65536, "rollback head write leaked into s1"
# Template mark: writers on open connections are refused from now on.
subprocess.run(cli + ["template", "mark", "p/v"], check=True, stdout=subprocess.DEVNULL)
try:
    h.pwrite(C, 0)
    raise AssertionError("write accepted after the volume became a template")
except nbd.Error as e:
    assert e.errnum in (errno.EPERM, errno.EROFS), "unexpected error %r" % e
assert h.pread(65536, 0) == A, "refused write changed data"
print("live snapshot checks passed")
PY
	fail "live snapshot semantics"

echo "== write-and-verify workload with snapshots taken under it"
"$STRATA_TEST_BIN/strata-io" --meta "$META" --volume p/w --seconds 5 --qd 16 --span 128M \
	>"$TEST_TMP/io.log" 2>&1 &
io=$!
for i in 1 2 3 4 5 6 7 8; do
	sleep 0.5
	cli snap create "p/w@t$i" >/dev/null || fail "snapshot t$i under load failed"
done
wait "$io" || { cat "$TEST_TMP/io.log"; fail "workload errors while snapshotting"; }
grep -q ' 0 errors, 0 mismatches' "$TEST_TMP/io.log" || fail "$(cat "$TEST_TMP/io.log")"
[ "$(cli snap ls p/w --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 8 ] ||
	fail "expected 8 snapshots of p/w"
echo "PASS"
