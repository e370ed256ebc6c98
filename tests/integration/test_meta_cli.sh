#!/usr/bin/env bash
# Every strata CLI command against a real strata-meta, with its error cases and --json output.
. "$(dirname "$0")/lib.sh"

META_PORT=$(free_port)
export STRATA_META=127.0.0.1:$META_PORT
start_daemon meta "$STRATA_BIN/strata-meta" --listen "$STRATA_META" --data "$TEST_TMP/meta"
META_PID=$LAST_PID
wait_port "$META_PORT"

S() { "$STRATA_BIN/strata" "$@"; }

# ok CMD...: must succeed.
ok() {
	"$STRATA_BIN/strata" "$@" >"$TEST_TMP/out" 2>"$TEST_TMP/err" ||
		fail "strata $* failed: $(cat "$TEST_TMP/err")"
}
# bad PATTERN CMD...: must fail with exactly one line on stderr matching PATTERN.
bad() {
	local pat=$1
	shift
	if "$STRATA_BIN/strata" "$@" >"$TEST_TMP/out" 2>"$TEST_TMP/err"; then
		fail "strata $* succeeded but should have failed"
	fi
	[ "$(wc -l <"$TEST_TMP/err")" -eq 1 ] || fail "strata $*: want one stderr line, got: $(cat "$TEST_TMP/err")"
	grep -qE "$pat" "$TEST_TMP/err" || fail "strata $*: stderr '$(cat "$TEST_TMP/err")' lacks /$pat/"
}
# jq-like: py EXPR: evaluate a python expression with `d` = parsed JSON from stdin.
py() { python3 -c "import json,sys; d=json.load(sys.stdin); r=($1); sys.exit(0 if r else 1)" ||
	fail "json check failed: $1"; }

# ---- pools ----
ok pool create rbd --replicas 1 --object-size 1M --pgs 64
ok pool create big
bad "already exists" pool create rbd
bad "replicas" pool create p2 --replicas 4
bad "power of two" pool create p2 --object-size 3M
bad "power of two" pool create p2 --object-size 32K
bad "invalid pool name" pool create 'bad name'
bad "invalid pool name" pool create "$(printf 'a%.0s' {1..129})"
ok pool create "$(printf 'a%.0s' {1..128})"
S pool ls --json | py 'len(d) == 3 and d[0]["name"] == "rbd" and d[0]["replicas"] == 1 and d[0]["object_size"] == 1048576 and d[0]["pg_count"] == 64'
S pool ls --json | py 'd[1]["replicas"] == 3 and d[1]["object_size"] == 4194304'
S pool ls | grep -q '^1 *rbd' || fail "pool ls table"

# ---- volumes ----
ok volume create rbd/base --size 10G
bad "already exists" volume create rbd/base --size 1G
bad "does not exist" volume create nopool/v --size 1G
bad "needs --size" volume create rbd/v2
bad "invalid volume name" volume create 'rbd/bad*name' --size 1G
bad "invalid spec" volume create rbdnoslash --size 1G
bad "invalid size|multiple of 512" volume create rbd/odd --size 1000
ok volume create rbd/tb --size 1T
ok volume create big/other --size 4G
S volume ls --json | py 'sorted(v["pool"]+"/"+v["name"] for v in d) == ["big/other", "rbd/base", "rbd/tb"]'
S volume ls rbd --json | py 'len(d) == 2 and all(v["pool"] == "rbd" for v in d)'
bad "does not exist" volume ls nopool
S volume info rbd/base --json | py 'd["size"] == 10*2**30 and d["template"] is False and d["parent"] == "" and d["children"] == [] and d["used"] == 0 and d["family"] > 0'
S volume info rbd/base | grep -q '^size: *10G' || fail "volume info human size"
bad "does not exist" volume info rbd/nope
bad "names a snapshot" volume info rbd/base@x

ok volume resize rbd/base --size 20G
S volume info rbd/base --json | py 'd["size"] == 20*2**30'
bad "allow-shrink" volume resize rbd/base --size 5G
ok volume resize rbd/base --size 15G --allow-shrink
S volume info rbd/base --json | py 'd["size"] == 15*2**30'
bad "does not exist" volume resize rbd/nope --size 1G

ok volume rename big/other renamed
bad "does not exist" volume info big/other
S volume info big/renamed --json | py 'd["size"] == 4*2**30'
bad "already exists" volume rename rbd/tb base
bad "invalid volume name" volume rename rbd/tb 'x y'
ok volume rm big/renamed
bad "does not exist" volume rm big/renamed

# ---- snapshots ----
ok snap create rbd/base@s1
ok snap create rbd/base@s2
bad "already exists" snap create rbd/base@s1
bad "no snapshot|names no snapshot" snap create rbd/base
bad "invalid snapshot name" snap create 'rbd/base@a b'
bad "does not exist" snap create rbd/nope@s
S snap ls rbd/base --json | py '[s["name"] for s in d] == ["s1", "s2"] and d[0]["layer_id"] < d[1]["layer_id"] and d[0]["size"] == 15*2**30'
S snap ls rbd/base | grep -q '^s1 ' || fail "snap ls table"

# ---- clones ----
ok clone rbd/base@s1 rbd/c1
ok snap create rbd/c1@cs
ok clone rbd/c1@cs rbd/c2
bad "already exists" clone rbd/base@s1 rbd/c1
bad "does not exist" clone rbd/base@nosnap rbd/c9
bad "not a template" clone rbd/base rbd/c9
bad "pool of its parent" clone rbd/base@s1 big/c9
S volume info rbd/c1 --json | py 'd["parent"] == "rbd/base@s1" and d["children"] == ["rbd/c2"]'
S volume info rbd/base --json | py 'd["children"] == ["rbd/c1"] and d["snapshots"] == 2'
BASE_FAMILY=$(S volume info rbd/base --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["family"])')
S volume info rbd/c2 --json | py "d['family'] == $BASE_FAMILY"
S snap ls rbd/base --json | py 'd[0]["clones"] == ["rbd/c1", "rbd/c2"] and d[1]["clones"] == []'

# ---- delete refusals name the clones ----
bad "rbd/c1, rbd/c2" volume rm rbd/base
bad "clones? depends? on it: rbd/c1, rbd/c2" snap rm rbd/base@s1
bad "rbd/c2" volume rm rbd/c1
ok snap rm rbd/base@s2
S snap ls rbd/base --json | py '[s["name"] for s in d] == ["s1"]'
bad "does not exist" snap rm rbd/base@s2

# ---- tree ----
S tree rbd/c2 >"$TEST_TMP/tree" || fail "tree"
grep -q 'rbd/base@s1' "$TEST_TMP/tree" || fail "tree lacks base@s1"
grep -q '^+-- .*rbd/c1@cs' "$TEST_TMP/tree" || fail "tree: c1@cs should hang under base@s1: $(cat "$TEST_TMP/tree")"
grep -q '^    +-- .*rbd/c2 (head)' "$TEST_TMP/tree" || fail "tree: c2 should hang under c1@cs: $(cat "$TEST_TMP/tree")"
S tree rbd/base --json | py 'd["family"] == '"$BASE_FAMILY"' and len(d["nodes"]) >= 6 and d["nodes"][0]["parent_id"] == 0 and all(n["parent_id"] in [m["layer_id"] for m in d["nodes"]] for n in d["nodes"][1:])'
bad "does not exist" tree rbd/nope

# ---- rollback ----
ok snap create rbd/tb@before
ok volume resize rbd/tb --size 2T
HEAD_BEFORE=$(S volume info rbd/tb --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["head_layer"])')
ok snap rollback rbd/tb@before
S volume info rbd/tb --json | py "d['size'] == 2**40 and d['head_layer'] != $HEAD_BEFORE"
S tree rbd/tb --json | py "$HEAD_BEFORE not in [n['layer_id'] for n in d['nodes']]"
bad "does not exist" snap rollback rbd/tb@nosnap

# ---- templates ----
ok volume create rbd/gold --size 8G
ok template mark rbd/gold
bad "already a template" template mark rbd/gold
S template ls --json | py '[v["name"] for v in d] == ["gold"] and d[0]["template"] is True'
ok clone rbd/gold rbd/vm1
ok clone rbd/gold rbd/vm2
S snap ls rbd/gold --json | py 'len(d) == 1 and d[0]["clones"] == ["rbd/vm1", "rbd/vm2"]'
bad "template" volume resize rbd/gold --size 9G
bad "template" snap rollback rbd/gold@template
ok template unmark rbd/gold
bad "not a template" template unmark rbd/gold
S template ls --json | py 'd == []'
bad "vm1" volume rm rbd/gold

# ---- flatten ----
ok flatten rbd/vm1
grep -q 'running' "$TEST_TMP/out" || fail "flatten of a clone should be running: $(cat "$TEST_TMP/out")"
S flatten rbd/vm1 --json | py 'd["state"] == "running" and d["total"] == 0'
S volume info rbd/vm1 --json | py 'd["flatten_state"] == "running"'
ok flatten rbd/tb
S flatten rbd/base --json | py 'd["state"] in ("running", "done")'

# ---- volume rm: leaves first ----
ok volume rm rbd/c2
ok snap rm rbd/c1@cs
ok volume rm rbd/c1
ok snap rm rbd/base@s1
ok volume rm rbd/base
bad "does not exist" volume info rbd/base

# ---- nodes and status ----
S node ls --json | py 'd == []'
S status --json | py 'd["epoch"] >= 1 and d["nodes_up"] == 0 and d["pools"] == 3 and d["volumes"] >= 3'
S status | grep -q '^epoch:' || fail "status output"

# ---- usage errors and connection errors ----
bad "unknown command" frobnicate
bad "usage" volume create
bad "cannot reach" --meta 127.0.0.1:1 pool ls
STRATA_META=127.0.0.1:1 "$STRATA_BIN/strata" --meta "$STRATA_META" pool ls >/dev/null || fail "--meta should win over STRATA_META"
S --help | grep -q 'strata volume create' || fail "--help lists the commands"

# ---- the daemon is still alive after all the errors, and restarts with the same catalog ----
kill -0 "$META_PID" || fail "strata-meta died"
S volume ls --json >"$TEST_TMP/before.json"
stop_daemon "$META_PID"
start_daemon meta "$STRATA_BIN/strata-meta" --listen "$STRATA_META" --data "$TEST_TMP/meta"
wait_port "$META_PORT"
S volume ls --json >"$TEST_TMP/after.json"
cmp -s "$TEST_TMP/before.json" "$TEST_TMP/after.json" || fail "catalog differs after restart"
echo "PASS"
