#!/usr/bin/env bash
# Flatten that runs: meta sends blockd's FLATTEN to every node, reports nodes done/total,
# retries a node that is away, waits for a node that meta has marked DOWN (it may hold the
# only copy of some objects) and cuts the parent link when all are done. Then the template
# the clone came from is deleted, every daemon restarted (no cached ancestry anywhere), and the
# clone's data read back through strata-nbd with qemu-io.
. "$(dirname "$0")/lib.sh"

for t in qemu-io python3; do
	command -v "$t" >/dev/null || fail "$t is missing (run scripts/bootstrap)"
done

BD1_PORT=$(free_port)
BD2_PORT=$(free_port)
NBD_PORT=$(free_port)
QURI=nbd+tcp://127.0.0.1:$NBD_PORT
step() { echo "== $*"; }
qio() { qemu-io -f raw "$QURI/$1" -c "$2" >"$TEST_TMP/qio" 2>&1 || fail "qemu-io $1 '$2': $(cat "$TEST_TMP/qio")"; }
# Read and verify a pattern.
expect() {
	qemu-io -f raw "$QURI/$1" -c "read -P $2 $3 $4" >"$TEST_TMP/qio" 2>&1 ||
		fail "$1: want pattern $2 at $3+$4: $(cat "$TEST_TMP/qio")"
	if grep -q 'Pattern verification failed' "$TEST_TMP/qio"; then
		fail "$1: want pattern $2 at $3+$4: $(cat "$TEST_TMP/qio")"
	fi
}
start_bd() { # N PORT
	start_daemon "blockd$1" "$STRATA_BIN/strata-blockd" --meta "$META" \
		--listen "127.0.0.1:$2" --data "$TEST_TMP/bd$1.data" --size 1G
	eval "BD$1_PID=$LAST_PID"
	wait_port "$2"
}
start_nbd() {
	start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
	NBD_PID=$LAST_PID
	wait_port "$NBD_PORT"
}
info() { cli --json volume info "$1"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d['$1'])"; }
flatten_is() { # VOL STATE DONE TOTAL
	local got
	got=$(info "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['flatten_state'], d['flatten_done'], d['flatten_total'], d['parent'] or '-')")
	[ "$got" = "$2 $3 $4 ${5:--}" ]
}

start_meta
start_bd 1 "$BD1_PORT"
start_bd 2 "$BD2_PORT"
wait_up 2
# Small objects over many PGs, so both nodes hold objects of the family.
cli pool create p --replicas 1 --object-size 1M --pgs 32 >/dev/null
cli volume create p/tmpl --size 64M >/dev/null
start_nbd

step "write a template, clone it, write to the clone"
qio p/tmpl "write -P 0xa1 0 16M"
cli template mark p/tmpl >/dev/null
cli clone p/tmpl p/c >/dev/null
qio p/c "write -P 0xc2 4M 1M"
qio p/c "write -P 0xc3 10M 512k"
expect p/c 0xa1 0 4M
expect p/c 0xc2 4M 1M
info p/c | field parent | grep -q '^p/tmpl@' || fail "clone parent: $(info p/c)"

step "flatten with node 2 away: running, retried, waited for while DOWN, done once back"
stop_daemon "$BD2_PID"
cli flatten p/c >"$TEST_TMP/fl" || fail "flatten: $(cat "$TEST_TMP/fl")"
grep -q running "$TEST_TMP/fl" || fail "flatten should be running: $(cat "$TEST_TMP/fl")"
wait_for 5 flatten_is p/c running 1 2 "$(info p/c | field parent)" ||
	fail "want running 1/2 while node 2 is away: $(info p/c)"
sleep 1.5 # several failed attempts at node 2 (it is still UP in the map)
flatten_is p/c running 1 2 "$(info p/c | field parent)" || fail "completed without node 2: $(info p/c)"
# Node 2 holds the only copy (R=1) of some of the clone's inherited objects: DOWN must not
# let the job complete and cut the parent link.
wait_for 20 sh -c "'$STRATA_BIN/strata' --meta $META status | grep -q '1 down'" ||
	fail "node 2 never marked down: $(cli status)"
sleep 1 # a few ticks of the flatten driver with node 2 DOWN
flatten_is p/c running 1 2 "$(info p/c | field parent)" ||
	fail "completed while node 2 is DOWN: $(info p/c)"
start_bd 2 "$BD2_PORT"
wait_for 15 flatten_is p/c done 2 2 || fail "flatten never completed: $(info p/c)"
grep -q 'flatten of volume .* complete on 2 nodes' "$TEST_TMP/meta.log" || fail "meta log"

step "the clone reads the same before the template goes"
expect p/c 0xa1 0 4M
expect p/c 0xc2 4M 1M
expect p/c 0xa1 5M 5M

step "delete the template, restart every daemon, read the clone back"
stop_daemon "$NBD_PID"
cli template unmark p/tmpl >/dev/null
cli volume rm p/tmpl >"$TEST_TMP/rm" 2>&1 || fail "template rm refused: $(cat "$TEST_TMP/rm")"
stop_daemon "$BD1_PID"
stop_daemon "$BD2_PID"
stop_daemon "$META_PID"
start_meta
start_bd 1 "$BD1_PORT"
start_bd 2 "$BD2_PORT"
wait_up 2
start_nbd
expect p/c 0xa1 0 4M
expect p/c 0xc2 4M 1M
expect p/c 0xa1 5M 5M
expect p/c 0xc3 10M 512k
expect p/c 0xa1 10752k 5632k
expect p/c 0 16M 48M
flatten_is p/c done 2 2 || fail "after restart: $(info p/c)"

step "strata tree shows the flattened volume as its own root"
cli tree p/c >"$TEST_TMP/tree" || fail "tree: $(cat "$TEST_TMP/tree")"
grep -q 'p/c' "$TEST_TMP/tree" || fail "tree: $(cat "$TEST_TMP/tree")"
if grep -q tmpl "$TEST_TMP/tree"; then
	fail "tree still shows the template: $(cat "$TEST_TMP/tree")"
fi
echo "PASS"
