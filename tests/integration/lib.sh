#!/usr/bin/env bash
# Shared helpers for integration tests. Source it: `. "$(dirname "$0")/lib.sh"`.
#
#   TEST_TMP            a private temp dir under $TMPDIR, removed on exit (KEEP_TMP=1 keeps it)
#   fail MSG            print "FAIL: MSG" to stderr and exit 1
#   skip MSG            exit 77 (ctest: skipped); never use it to hide a missing tool
#   free_port           print a free TCP port on 127.0.0.1
#   start_daemon NAME CMD...  run CMD in the background, log to $TEST_TMP/NAME.log; sets
#                       LAST_PID and remembers it for cleanup
#   stop_daemon PID [SIG]     signal one daemon (default TERM) and reap it
#   wait_port PORT [SECS]     wait until 127.0.0.1:PORT accepts connections
#   wait_for SECS CMD...      retry CMD every 0.1 s until it succeeds or SECS pass
#   pgs_are META WHAT         clean / settled / degraded, from `strata status --json`
#   wait_pgs META WHAT [SECS] poll pgs_are until it holds (default 60 s), else fail
#
# A local cluster:
#   start_meta [ARGS...]      strata-meta on a free port (data $TEST_TMP/meta); sets META_PORT
#                       (once), META and META_PID; defines cli (the strata CLI on $META)
#   start_node I [SIZE]       strata-blockd I (data $TEST_TMP/bdI.data, default 1G) on BD_PORT[I],
#                       picked on the first start so a restart keeps its address; sets BD_PID[I]
#   wait_up N [SECS]          wait until `strata status` says N nodes are up, else fail
#   start_cluster N SIZE      start_meta, then nodes 0 .. N-1 (start_node I SIZE), and wait_up N
#   io ARGS...                strata-io (the tests' verified workload) on $META
#   scrub_clean POOL [WHAT]   `strata scrub POOL` must succeed and find 0 mismatches
#   start_single SIZE         start_meta, one strata-blockd up (data $TEST_TMP/bd.data of SIZE,
#                       log blockd.log), and pool p with R=1
set -euo pipefail

STRATA_SRC=${STRATA_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
STRATA_BIN=${STRATA_BIN:-$STRATA_SRC/build/bin}
STRATA_TEST_BIN=${STRATA_TEST_BIN:-$STRATA_SRC/build/tests}

TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-$(basename "$0" .sh).XXXXXX")
_DAEMON_PIDS=()
LAST_PID=

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

skip() {
	echo "SKIP: $*"
	exit 77
}

_lib_cleanup() {
	local rc=$?
	local p
	for p in "${_DAEMON_PIDS[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			kill -TERM "$p" 2>/dev/null || true
		fi
	done
	for p in "${_DAEMON_PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		for f in "$TEST_TMP"/*.log; do
			[ -f "$f" ] || continue
			echo "---- $f (last 30 lines) ----" >&2
			tail -n 30 "$f" >&2
		done
	fi
	if [ -z "${KEEP_TMP:-}" ]; then
		rm -rf "$TEST_TMP"
	else
		echo "kept $TEST_TMP" >&2
	fi
	exit "$rc"
}
trap _lib_cleanup EXIT

# A random free port below the kernel's ephemeral range (32768+), so that the outgoing
# connections of the daemons and clients of this or a concurrent test cannot take it between
# the check and the daemon's bind.
free_port() {
	python3 - <<'PY'
import random, socket
for _ in range(1000):
    port = random.randint(20000, 32000)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("free_port: no free port in 20000-32000")
PY
}

start_daemon() {
	local name=$1
	shift
	"$@" >>"$TEST_TMP/$name.log" 2>&1 &
	LAST_PID=$!
	_DAEMON_PIDS+=("$LAST_PID")
}

stop_daemon() {
	local pid=$1 sig=${2:-TERM}
	kill -"$sig" "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

wait_port() {
	local port=$1 secs=${2:-10}
	python3 - "$port" "$secs" <<'PY' || fail "nothing listening on 127.0.0.1:$port after ${secs}s"
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + secs
while time.time() < end:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY
}

wait_for() {
	local secs=$1
	shift
	local end=$((SECONDS + secs))
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}

# pgs_are META WHAT: one look at `strata status --json`. WHAT is
#   clean     every PG of every pool is clean (serving with all its replicas), and no node is
#             still joining (a restarted or added node leads its PGs only once caught up)
#   settled   clean, no recovery left to copy, and no node holds stray copies any more
#   degraded  at least one PG is degraded
pgs_are() {
	"$STRATA_BIN/strata" --meta "$1" status --json 2>/dev/null | python3 -c '
import json, sys
d, what = json.load(sys.stdin), sys.argv[1]
pgs = d["pgs"]
clean = bool(pgs) and all(p["clean"] == p["pg_count"] for p in pgs) and d.get("nodes_joining", 0) == 0
if what == "clean":
    ok = clean
elif what == "settled":
    ok = clean and d["recovery"]["objects_to_copy"] == 0 and all(p["stray"] == 0 for p in pgs)
elif what == "degraded":
    ok = any(p["degraded"] > 0 for p in pgs)
else:
    sys.exit("pgs_are: unknown state " + what)
sys.exit(0 if ok else 1)
' "$2"
}

# wait_pgs META WHAT [SECS]: poll pgs_are every 0.2 s for up to SECS (default 60); fails the
# test with the last status when it never holds.
wait_pgs() {
	local meta=$1 what=$2 secs=${3:-60}
	local end=$((SECONDS + secs))
	until pgs_are "$meta" "$what"; do
		if [ "$SECONDS" -ge "$end" ]; then
			fail "PGs not $what after ${secs}s: $("$STRATA_BIN/strata" --meta "$meta" status)"
		fi
		sleep 0.2
	done
}

declare -a BD_PORT BD_PID
META_PORT=
start_meta() {
	[ -n "$META_PORT" ] || META_PORT=$(free_port)
	META=127.0.0.1:$META_PORT
	start_daemon meta "$STRATA_BIN/strata-meta" --listen "$META" --data "$TEST_TMP/meta" "$@"
	META_PID=$LAST_PID
	wait_port "$META_PORT"
}

cli() { "$STRATA_BIN/strata" --meta "$META" "$@"; }

# start_node I [SIZE]: start blockd I and wait until it listens and meta has registered it.
# Waiting for the registration matters after a restart: until then `strata status` still shows
# the cluster as it was before the kill (the dead process counted as up), and a wait_up or
# wait_pgs right after would be answered by that stale state.
start_node() {
	local i=$1 size=${2:-1G} log="$TEST_TMP/blockd$1.log" before=0
	[ -n "${BD_PORT[$i]:-}" ] || BD_PORT[$i]=$(free_port)
	[ -f "$log" ] && before=$(grep -c "registered with meta" "$log")
	start_daemon "blockd$i" "$STRATA_BIN/strata-blockd" --meta "$META" \
		--listen "127.0.0.1:${BD_PORT[$i]}" --data "$TEST_TMP/bd$i.data" --size "$size"
	BD_PID[$i]=$LAST_PID
	wait_port "${BD_PORT[$i]}"
	wait_for 20 sh -c "[ \$(grep -c 'registered with meta' '$log') -gt $before ]" ||
		fail "blockd $i never registered with meta $META: $(tail -5 "$log")"
}

# Count the established AF_UNIX sockets a daemon holds (the same-host RPC fast path,
# common/net.h). Connections to strata daemons on this host use it unless STRATA_TRANSPORT=tcp.
unix_conns() {
	ss -xpH state established | grep -c "pid=$1," || true
}

wait_up() {
	local n=$1 secs=${2:-15}
	wait_for "$secs" sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '$n up'" ||
		fail "$n nodes never came up: $(cli status)"
}

start_single() {
	local port
	port=$(free_port)
	start_meta
	start_daemon blockd "$STRATA_BIN/strata-blockd" --meta "$META" --listen "127.0.0.1:$port" \
		--data "$TEST_TMP/bd.data" --size "$1"
	wait_port "$port"
	wait_up 1
	cli pool create p --replicas 1 >/dev/null
}

start_cluster() {
	local n=$1 size=$2 i
	start_meta
	for ((i = 0; i < n; i++)); do
		start_node "$i" "$size"
	done
	wait_up "$n"
}

io() { "$STRATA_TEST_BIN/strata-io" --meta "$META" "$@"; }

scrub_clean() {
	local out
	out=$(cli scrub "$1") || fail "scrub failed: $out"
	echo "$out"
	echo "$out" | grep -q ' 0 mismatches' || fail "scrub found mismatches${2:+ ($2)}: $out"
}
