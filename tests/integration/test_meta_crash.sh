#!/usr/bin/env bash
# Crash safety: kill -9 strata-meta in the middle of a loop of 500 creates, snapshots and clones;
# restart it; every acknowledged object must be present and the layer tree consistent.
# (strata-meta itself verifies every tree invariant at load and refuses to start otherwise.)
. "$(dirname "$0")/lib.sh"

META_PORT=$(free_port)
export STRATA_META=127.0.0.1:$META_PORT
DATA=$TEST_TMP/meta
S=$STRATA_BIN/strata
start_daemon meta "$STRATA_BIN/strata-meta" --listen "$STRATA_META" --data "$DATA"
META_PID=$LAST_PID
wait_port "$META_PORT"

"$S" pool create p --replicas 1 >/dev/null || fail "pool create"
ACKED=$TEST_TMP/acked
: >"$ACKED"

# The workload: one line per acknowledged operation, written only after strata exits 0.
workload() {
	local i
	for i in $(seq 1 500); do
		case $((i % 5)) in
		0 | 1 | 2)
			"$S" volume create "p/v$i" --size $(((i % 7 + 1)))G >/dev/null 2>&1 || return 0
			echo "volume p/v$i" >>"$ACKED"
			;;
		3)
			local v=$((i - 1 - (i % 5 == 3 ? 0 : 1)))
			"$S" snap create "p/v$v@s$i" >/dev/null 2>&1 || return 0
			echo "snap p/v$v@s$i" >>"$ACKED"
			;;
		4)
			local src=$((i - 1))
			"$S" clone "p/v$((src - 1))@s$src" "p/c$i" >/dev/null 2>&1 || return 0
			echo "clone p/c$i p/v$((src - 1))@s$src" >>"$ACKED"
			;;
		esac
	done
}

workload &
WL=$!
# Kill somewhere in the middle: after a random number of acknowledged operations.
TARGET=$((100 + RANDOM % 250))
wait_for 120 bash -c "[ \$(wc -l <'$ACKED') -ge $TARGET ]" || fail "workload too slow"
kill -9 "$META_PID"
wait "$META_PID" 2>/dev/null || true
wait "$WL" || true
N=$(wc -l <"$ACKED")
echo "killed strata-meta after $N acknowledged operations (target $TARGET)"
[ "$N" -lt 500 ] || fail "the kill came after the loop finished"

start_daemon meta "$STRATA_BIN/strata-meta" --listen "$STRATA_META" --data "$DATA"
META_PID=$LAST_PID
wait_port "$META_PORT"

"$S" volume ls --json >"$TEST_TMP/vols.json" || fail "volume ls after restart"
python3 - "$ACKED" "$TEST_TMP/vols.json" "$S" <<'PY' || fail "acknowledged state missing after restart"
import json, subprocess, sys
acked, vols_path, strata = sys.argv[1], sys.argv[2], sys.argv[3]
vols = {v["pool"] + "/" + v["name"]: v for v in json.load(open(vols_path))}
def run(*a):
    return json.loads(subprocess.check_output([strata, *a, "--json"]))
snaps = {}
for line in open(acked):
    f = line.split()
    if f[0] == "volume":
        assert f[1] in vols, f"acknowledged volume {f[1]} missing"
    elif f[0] == "snap":
        vol, snap = f[1].split("@")
        if vol not in snaps:
            snaps[vol] = {s["name"] for s in run("snap", "ls", vol)}
        assert snap in snaps[vol], f"acknowledged snapshot {f[1]} missing"
    elif f[0] == "clone":
        assert f[1] in vols, f"acknowledged clone {f[1]} missing"
        assert vols[f[1]]["parent"] == f[2], f"clone {f[1]} has parent {vols[f[1]]['parent']}, want {f[2]}"
# Tree consistency through the CLI: every family is one tree, each volume's head is in it.
seen = set()
for spec, v in vols.items():
    if v["family"] in seen:
        continue
    seen.add(v["family"])
    t = run("tree", spec)
    ids = {n["layer_id"] for n in t["nodes"]}
    assert len(ids) == len(t["nodes"]), "duplicate layer in tree"
    roots = [n for n in t["nodes"] if n["parent_id"] == 0]
    assert len(roots) == 1, f"family {v['family']} has {len(roots)} roots"
    for n in t["nodes"]:
        assert n["parent_id"] == 0 or n["parent_id"] in ids, "dangling parent"
    heads = {n["label"] for n in t["nodes"] if n["kind"] == "head"}
    members = {s for s, w in vols.items() if w["family"] == v["family"]}
    assert heads == members, f"heads {heads} != volumes {members}"
print(f"verified {sum(1 for _ in open(acked))} acknowledged operations, {len(vols)} volumes, {len(seen)} families")
PY

# The catalog still takes writes after the crash.
"$S" volume create p/after --size 1G >/dev/null || fail "create after restart"
"$S" snap create p/after@s >/dev/null || fail "snap after restart"
echo "PASS"
