#!/usr/bin/env bash
# A full host file system under blockd: its sparse data file and its index share a 160 MiB
# tmpfs, 40 MiB of which another file holds. A verified workload fills it. blockd must keep its
# reserve (--min-free, 64 MiB by default) for the index and refuse writes with ENOSPC before
# the file system runs out: no write fails any other way, no failed write shows up in a read,
# every flushed write reads back, and blockd stays up. Once the other file is deleted, writes
# are accepted again without a restart. At the end a SIGTERM gives exit status 0, fsck is
# clean, and after a restart everything flushed reads back.
# (Before this guard RocksDB reserved 282 MiB for each WAL file, so on this file system not one
# write could be placed, and a failed write's data stayed readable.)
. "$(dirname "$0")/lib.sh"

MNT=$TEST_TMP/mnt
mkdir -p "$MNT"
mount -t tmpfs -o size=160M tmpfs "$MNT" ||
	fail "cannot mount a tmpfs (the test needs root, as CI has): the full file system is the test"
BD=
cleanup_mnt() {
	[ -z "$BD" ] || stop_daemon "$BD" KILL
	umount -l "$MNT" 2>/dev/null || true
}
# Then lib.sh's cleanup, with the test's exit status ($? as it sees it; errexit off, or the
# `(exit rc)` that hands it over would end the handler).
trap 'rc=$?; set +e; cleanup_mnt; (exit $rc); _lib_cleanup' EXIT

avail_mib() { df -BM --output=avail "$MNT" | tail -1 | tr -dc 0-9; }
# io_run LOG ARGS...: a workload that may hit ENOSPC: every error must be ENOSPC, and no read
# may see a mismatch; prints the number of writes.
io_run() {
	local log=$1
	shift
	io "$@" >"$log" 2>&1 || true
	local sum
	sum=$(grep '^strata-io: [0-9]* writes' "$log" | tail -1)
	[ -n "$sum" ] || fail "no summary from strata-io: $(tail -3 "$log")"
	echo "$sum" | grep -q ' 0 mismatches' || fail "a read saw data it should not: $sum"
	if grep -v '^strata-io: [0-9]* writes' "$log" | grep -v 'No space left on device' |
		grep -q .; then
		fail "an error other than ENOSPC: $(grep -v 'No space left' "$log" | head -3)"
	fi
	echo "$sum" | sed 's/^strata-io: \([0-9]*\) writes.*/\1/'
}
start_bd() {
	start_daemon blockd "$STRATA_BIN/strata-blockd" --meta "$META" \
		--listen "127.0.0.1:$BD_PORT" --data "$MNT/bd.data" --size 1G
	BD=$LAST_PID
	wait_port "$BD_PORT"
}

dd if=/dev/zero of="$MNT/filler" bs=1M count=40 status=none
start_meta
BD_PORT=$(free_port)
start_bd
wait_up 1
cli pool create p --replicas 1 >/dev/null
cli volume create p/v --size 512M >/dev/null
wait_pgs "$META" clean 30

echo "== fill the file system ($(avail_mib) MiB available)"
n=$(io_run "$TEST_TMP/io1.log" --volume p/v --seconds 8 --qd 16 --span 512M --seed 3 \
	--state "$TEST_TMP/state1" --flush-every 200)
tail -1 "$TEST_TMP/io1.log"
[ "$n" -gt 0 ] || fail "no write was placed: the file system had room for many"
grep -q 'No space left on device' "$TEST_TMP/io1.log" || fail "the workload never reached ENOSPC"
kill -0 "$BD" || fail "blockd died on a full file system"
left=$(avail_mib)
echo "$left MiB left"
[ "$left" -ge 40 ] || fail "only $left MiB left: the reserve for the index was not kept"
grep -q 'writes are refused with ENOSPC until space is freed' "$TEST_TMP/blockd.log" ||
	fail "blockd did not say why it refuses writes"
io --volume p/v --check "$TEST_TMP/state1" || fail "flushed data does not read back"

echo "== space is freed: writes resume without a restart"
rm "$MNT/filler"
wait_for 10 grep -q 'writes are accepted again' "$TEST_TMP/blockd.log" ||
	fail "blockd did not notice the freed space"
cli volume create p/w --size 64M >/dev/null
n=$(io_run "$TEST_TMP/io2.log" --volume p/w --seconds 2 --qd 4 --span 8M --seed 5 \
	--state "$TEST_TMP/state2" --flush-every 200)
tail -1 "$TEST_TMP/io2.log"
[ "$n" -gt 100 ] || fail "only $n writes after the space came back"

echo "== stop, fsck, restart"
kill -TERM "$BD"
rc=0
wait "$BD" || rc=$?
BD=
[ "$rc" -eq 0 ] || fail "blockd exited with status $rc"
out=$("$STRATA_BIN/strata-blockd" --fsck --data "$MNT/bd.data" 2>&1) || fail "fsck: $out"
start_bd
wait_up 1
wait_pgs "$META" clean 30
io --volume p/v --check "$TEST_TMP/state1" || fail "p/v lost flushed data across the restart"
io --volume p/w --check "$TEST_TMP/state2" || fail "p/w lost flushed data across the restart"
echo "PASS"
