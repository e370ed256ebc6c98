#!/usr/bin/env bash
# A full file system under strata-meta's catalog: a 32 MiB tmpfs, filled by other files.
# strata-meta keeps a reserve (--min-free, here 8 MiB): below it, requests that grow the
# catalog for a user (a volume, a snapshot) get a clear ENOSPC error, while removals and the
# nodes' heartbeats still commit; below a quarter of it every catalog change is refused, and
# reads still work. meta never dies. Once space is freed, creation works again without a
# restart. Stopped with nothing at all left, meta exits 0 (RocksDB's closing flush, which
# would abort, is skipped: the WAL has every change), and after a restart the catalog holds
# exactly what was acknowledged.
# (Before the reserve, meta accepted every change until RocksDB's WAL could not grow, and then
# aborted on a RocksDB assertion: strata-meta's catalog went away with a full disk.)
. "$(dirname "$0")/lib.sh"

MNT=$TEST_TMP/mnt
mkdir -p "$MNT"
mount -t tmpfs -o size=32M tmpfs "$MNT" ||
	fail "cannot mount a tmpfs (the test needs root, as CI has): the full file system is the test"
cleanup_mnt() {
	[ -z "${META_PID:-}" ] || stop_daemon "$META_PID" KILL
	umount -l "$MNT" 2>/dev/null || true
}
# Then lib.sh's cleanup, with the test's exit status (see test_blockd_fs_full.sh).
trap 'rc=$?; set +e; cleanup_mnt; (exit $rc); _lib_cleanup' EXIT

start_meta_on_mnt() {
	[ -n "${META_PORT:-}" ] || META_PORT=$(free_port)
	META=127.0.0.1:$META_PORT
	start_daemon meta "$STRATA_BIN/strata-meta" --listen "$META" --data "$MNT/meta" \
		--min-free 8M
	META_PID=$LAST_PID
	wait_port "$META_PORT"
}
meta_alive() { kill -0 "$META_PID" 2>/dev/null || fail "strata-meta died: $(tail -5 "$TEST_TMP/meta.log")"; }
# fill_to KIB: another file takes the file system down to KIB available.
fill_to() {
	local avail
	avail=$(df -k --output=avail "$MNT" | tail -1 | tr -dc 0-9)
	[ "$avail" -gt "$1" ] || fail "only $avail KiB available, wanted to leave $1"
	# dd stops at ENOSPC when asked for more than there is (a tmpfs counts whole pages)
	dd if=/dev/zero of="$MNT/filler.$1" bs=1K count=$((avail - $1)) status=none 2>/dev/null ||
		[ "$1" -eq 0 ]
	echo "   $(df -k --output=avail "$MNT" | tail -1 | tr -dc 0-9) KiB available"
}
names() { cli volume ls p --json | python3 -c 'import json,sys; print(" ".join(sorted(v["name"] for v in json.load(sys.stdin))))'; }
# refused WHAT CMD...: the command must fail with meta's disk-full message.
refused() {
	local what=$1 out
	shift
	if out=$(cli "$@" 2>&1); then
		fail "$what was accepted with the catalog's disk under its reserve: $out"
	fi
	echo "$out" | grep -q "disk is full" || fail "$what: not the disk-full error: $out"
	meta_alive
	echo "   $what refused: $out"
}

start_meta_on_mnt
start_node 0 1G
wait_up 1
cli pool create p --replicas 1 --pgs 8 >/dev/null
for v in a b c; do
	cli volume create "p/$v" --size 1G >/dev/null
done
cli snap create p/a@s0 >/dev/null

echo "== 5 MiB left: under the 8 MiB reserve"
fill_to 5120
refused "volume create" volume create p/d --size 1G
refused "snap create" snap create p/a@s1
refused "clone" clone p/a@s0 p/e
refused "volume resize" volume resize p/a --size 2G
refused "volume rename" volume rename p/c f
refused "snap rollback" snap rollback p/a@s0
cli volume rm p/b >/dev/null || fail "a removal was refused inside the reserve"
meta_alive
echo "   volume rm accepted"
sleep 6 # past the 5 s after which a node whose heartbeats fail is marked down
cli status | grep -q '1 up' || fail "the node's heartbeats failed: $(cli status)"

echo "== 1 MiB left: under a quarter of the reserve"
fill_to 1024
refused "volume rm" volume rm p/c
refused "snap rm" snap rm p/a@s0
[ "$(names)" = "a c" ] || fail "volume ls with the disk full: '$(names)', expected 'a c'"
meta_alive

echo "== space freed: accepted again, no restart"
rm -f "$MNT"/filler.*
cli volume create p/d --size 1G >/dev/null || fail "creation still refused after space was freed"
cli snap create p/a@s1 >/dev/null || fail "snapshot still refused after space was freed"

echo "== stopped on a file system with nothing left, restarted once space is back"
fill_to 0
kill -TERM "$META_PID"
rc=0
wait "$META_PID" 2>/dev/null || rc=$?
[ "$rc" -eq 0 ] || fail "strata-meta exited with status $rc on SIGTERM: $(tail -3 "$TEST_TMP/meta.log")"
rm -f "$MNT"/filler.*
start_meta_on_mnt
[ "$(names)" = "a c d" ] || fail "volumes after the restart: '$(names)', expected 'a c d'"
cli snap ls p/a | grep -q s1 || fail "snapshot s1 lost: $(cli snap ls p/a)"
cli snap ls p/a | grep -q s0 || fail "snapshot s0 lost: $(cli snap ls p/a)"
[ "$(cli volume info p/a --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')" = 1073741824 ] ||
	fail "the refused resize changed p/a: $(cli volume info p/a)"

echo "== restarted on a full disk while two flattens run"
# meta's first tick finds the running flattens and records their progress (meta/flatten.c);
# on a full disk that commit fails, and a failed commit reloads the catalog, which frees every
# volume. The scan must not use its list of volumes after that (under ASan: a
# heap-use-after-free, and meta dies).
cli clone p/a@s0 p/k1 >/dev/null
cli clone p/a@s0 p/k2 >/dev/null
stop_daemon "${BD_PID[0]}" KILL # the flattens wait for it; still UP in the map for 5 s
for v in k1 k2; do
	out=$(cli flatten "p/$v" 2>&1) || fail "flatten p/$v: $out"
	echo "$out" | grep -q running || fail "flatten p/$v should be running: $out"
done
kill -TERM "$META_PID"
wait "$META_PID" 2>/dev/null || true
fill_to 1024
logged=$(grep -c "recording progress" "$TEST_TMP/meta.log" || true)
start_meta_on_mnt
wait_for 5 sh -c "[ \$(grep -c 'recording progress' '$TEST_TMP/meta.log') -gt $logged ]" ||
	fail "meta recorded no failed flatten progress: the test did not reach the reload"
sleep 1 # more ticks, each retrying the progress record
meta_alive
[ "$(names)" = "a c d k1 k2" ] || fail "volumes on the full disk: '$(names)', expected 'a c d k1 k2'"
rm -f "$MNT"/filler.*
for v in k1 k2; do
	st=$(cli volume info "p/$v" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["flatten_state"])')
	[ "$st" = running ] || fail "p/$v: flatten $st after the full disk, expected running"
done
echo "PASS"
