#!/usr/bin/env bash
# strata-meta on the wire, the way blockd and libstrata use it: NODE_REGISTER with a persistent
# uuid, heartbeats, down/out marking, MAP_WATCH wake-ups within 1 s, VOLUME_OPEN/LAYER_GET
# ancestry, and bad input (garbage, unknown types, malformed and oversized bodies) answered
# with errors while the service keeps running.
. "$(dirname "$0")/lib.sh"

META_PORT=$(free_port)
export STRATA_META=127.0.0.1:$META_PORT
start_daemon meta "$STRATA_BIN/strata-meta" --listen "$STRATA_META" --data "$TEST_TMP/meta" \
	--down-out-interval 2 --watch-timeout 2
META_PID=$LAST_PID
wait_port "$META_PORT"
S=$STRATA_BIN/strata
"$S" pool create p --replicas 1 >/dev/null
"$S" volume create p/base --size 1G >/dev/null
"$S" snap create p/base@s1 >/dev/null
"$S" clone p/base@s1 p/c1 >/dev/null
"$S" snap create p/c1@cs >/dev/null

python3 - "$META_PORT" "$S" <<'PY' || fail "wire checks"
import json, socket, struct, subprocess, sys, threading, time

PORT, STRATA = int(sys.argv[1]), sys.argv[2]
T = dict(REGISTER=256, HEARTBEAT=257, MAP_GET=258, MAP_WATCH=259, VOLUME_OPEN=260, LAYER_GET=261)

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)

def pb(fields):  # {fieldno: int | str | bytes}
    out = bytearray()
    for no, v in fields.items():
        if isinstance(v, int):
            out += varint(no << 3) + varint(v)
        else:
            v = v.encode() if isinstance(v, str) else v
            out += varint(no << 3 | 2) + varint(len(v)) + v
    return bytes(out)

def unpb(buf):  # -> {fieldno: [values]}; length-delimited values stay bytes
    d, i = {}, 0
    def rv():
        nonlocal i
        v = s = 0
        while True:
            b = buf[i]; i += 1
            v |= (b & 0x7F) << s; s += 7
            if not b & 0x80:
                return v
    while i < len(buf):
        key = rv(); no, wt = key >> 3, key & 7
        if wt == 0:
            val = rv()
        elif wt == 2:
            n = rv(); val = buf[i:i + n]; i += n
        elif wt == 1:
            val = buf[i:i + 8]; i += 8
        elif wt == 5:
            val = buf[i:i + 4]; i += 4
        else:
            raise ValueError("wire type %d" % wt)
        if wt == 2 and no in PACKED.get(CTX[0], ()):
            j, vals = 0, []
            sub = val
            while j < len(sub):
                v = s = 0
                while True:
                    b = sub[j]; j += 1
                    v |= (b & 0x7F) << s; s += 7
                    if not b & 0x80:
                        break
                vals.append(v)
            d.setdefault(no, []).extend(vals)
            continue
        d.setdefault(no, []).append(val)
    return d
PACKED = {"open": (8,), "layer": (4,)}
CTX = [None]

def frame(type_, body=b"", req_id=1, payload=b"", hdr_len=None):
    h = struct.pack("<IBBHQiII", 0x41525453, 1, 0, type_, req_id, 0,
                    len(body) if hdr_len is None else hdr_len, len(payload))
    return h + struct.pack("<I", crc32c(h)) + body + payload

def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise ConnectionError("closed")
        b += c
    return b

def read_reply(s):
    h = recv_exact(s, 32)
    magic, ver, flags, type_, req_id, status, hl, pl, crc = struct.unpack("<IBBHQiIII", h)
    assert magic == 0x41525453 and crc == crc32c(h[:28]), "bad reply header"
    body = recv_exact(s, hl)
    recv_exact(s, pl)
    return type_, req_id, status, body

def conn():
    return socket.create_connection(("127.0.0.1", PORT), timeout=40)

def call(type_, body=b"", req_id=7):
    with conn() as s:
        s.sendall(frame(type_, body, req_id))
        t, rid, status, b = read_reply(s)
        assert t == type_ | 0x8000 and rid == req_id, (t, rid)
        return status, b

def errmsg(b):
    return unpb(b).get(1, [b""])[0].decode()

def map_of(b):
    m = unpb(b)
    nodes = [unpb(n) for n in m.get(2, [])]
    return m.get(1, [0])[0], {n[1][0]: n.get(5, [0])[0] for n in nodes}

UP, DOWN, OUT = 0, 1, 2

# ---- registration and identity ----
st, b = call(T["REGISTER"], pb({1: "127.0.0.1:7800", 2: 1 << 40, 3: 100, 4: "uuid-a"}))
assert st == 0, errmsg(b)
id_a = unpb(b)[1][0]
st, b = call(T["REGISTER"], pb({1: "127.0.0.1:7801", 2: 1 << 40, 3: 100, 4: "uuid-b"}))
t_last_b = time.time()  # node b never beats: its silence starts here
id_b = unpb(b)[1][0]
assert id_a != id_b
st, b = call(T["REGISTER"], pb({1: "127.0.0.1:7802", 2: 1 << 40, 3: 100, 4: "uuid-a"}))
assert unpb(b)[1][0] == id_a, "a restarted blockd keeps its id"
epoch, states = map_of(unpb(b)[2][0])
assert states == {id_a: UP, id_b: UP}, states

# ---- MAP_WATCH: held while nothing changes, answered within 1 s of a change ----
st, b = call(T["MAP_GET"])
epoch, _ = map_of(b)
res = {}
def watch():
    t0 = time.time()
    st, b = call(T["MAP_WATCH"], pb({1: epoch}))
    res["t"] = time.time(); res["epoch"] = map_of(b)[0]; res["held"] = time.time() - t0
th = threading.Thread(target=watch); th.start()
time.sleep(0.5)
assert "t" not in res, "watch returned before the epoch moved"
t_change = time.time()
st, b = call(T["REGISTER"], pb({1: "127.0.0.1:7803", 2: 1 << 40, 3: 100, 4: "uuid-c"}))
id_c = unpb(b)[1][0]
th.join(5)
assert res.get("epoch", 0) > epoch, res
assert res["t"] - t_change < 1.0, "watch woke %.3f s after the change" % (res["t"] - t_change)
print("watch woke %.1f ms after the epoch moved" % ((res["t"] - t_change) * 1000))

# A watch with nothing to report returns the current map after the watch timeout (2 s here).
t0 = time.time()
st, b = call(T["MAP_WATCH"], pb({1: res["epoch"]}))
assert st == 0 and 1.5 < time.time() - t0 < 4, time.time() - t0

# A stale known_epoch is answered at once.
t0 = time.time()
st, b = call(T["MAP_WATCH"], pb({1: 0}))
assert time.time() - t0 < 0.5

# ---- heartbeats: a and c beat, b goes silent -> down after 5 s -> out after 2 s more ----
st, b = call(T["MAP_GET"])
epoch, _ = map_of(b)
watch_res = {}
def watch_down():  # re-arm like libstrata does until the map shows b down
    known = epoch
    while time.time() - t_silent < 12:
        st, b = call(T["MAP_WATCH"], pb({1: known}))
        known, states = map_of(b)
        if states[id_b] == DOWN:
            watch_res["t"] = time.time(); watch_res["states"] = states
            return
t_silent = time.time()
th = threading.Thread(target=watch_down); th.start()
down_seen = out_seen = None
while time.time() - t_silent < 12:
    for nid in (id_a, id_c):
        st, b = call(T["HEARTBEAT"], pb({1: nid, 2: 4096}))
        assert st == 0, errmsg(b)
    _, states = map_of(call(T["MAP_GET"])[1])
    if states[id_b] == DOWN and down_seen is None:
        down_seen = time.time() - t_last_b
    if states[id_b] == OUT:
        out_seen = time.time() - t_last_b
        break
    assert states[id_a] == UP and states[id_c] == UP, states
    time.sleep(0.3)
th.join(10)
assert down_seen is not None and 4.9 < down_seen < 7, down_seen
assert out_seen is not None and out_seen - down_seen < 4, (down_seen, out_seen)
assert watch_res["states"][id_b] == DOWN and watch_res["t"] - t_last_b < 7, watch_res
print("node marked down after %.1f s, out after %.1f s" % (down_seen, out_seen))
st, b = call(T["HEARTBEAT"], pb({1: id_b, 2: 0}))
assert st == 0
assert map_of(call(T["MAP_GET"])[1])[1][id_b] == UP, "a heartbeat brings a node back"
st, b = call(T["HEARTBEAT"], pb({1: 999, 2: 0}))
assert st == -2 and "not registered" in errmsg(b), (st, errmsg(b))
nodes = json.loads(subprocess.check_output([STRATA, "node", "ls", "--json"]))
assert sorted(n["id"] for n in nodes) == sorted([id_a, id_b, id_c])
assert {n["uuid"] for n in nodes} == {"uuid-a", "uuid-b", "uuid-c"}

# ---- VOLUME_OPEN / LAYER_GET ----
def info(spec):
    return json.loads(subprocess.check_output([STRATA, "volume", "info", spec, "--json"]))
snaps = {s["name"]: s for s in json.loads(subprocess.check_output([STRATA, "snap", "ls", "p/base", "--json"]))}
csnaps = {s["name"]: s for s in json.loads(subprocess.check_output([STRATA, "snap", "ls", "p/c1", "--json"]))}
c1 = info("p/c1")
CTX[0] = "open"
st, b = call(T["VOLUME_OPEN"], pb({1: "p/c1"}))
assert st == 0, errmsg(b)
o = unpb(b)
assert o[4][0] == c1["head_layer"] and not o.get(5, [0])[0], o
assert o[8] == [csnaps["cs"]["layer_id"], snaps["s1"]["layer_id"]], o[8]
assert o[3][0] == c1["family"] and o[6][0] == 1 << 30 and o[7][0] == 4 << 20
st, b = call(T["VOLUME_OPEN"], pb({1: "p/c1@cs"}))
o = unpb(b)
assert o[4][0] == csnaps["cs"]["layer_id"] and o[5][0] == 1 and o[8] == [snaps["s1"]["layer_id"]]
for spec, code in (("p/nope", -2), ("p/c1@nope", -2), ("nope/x", -2), ("noslash", -22), ("", -22)):
    st, b = call(T["VOLUME_OPEN"], pb({1: spec}))
    assert st == code and errmsg(b), (spec, st, errmsg(b))
CTX[0] = "layer"
st, b = call(T["LAYER_GET"], pb({1: c1["head_layer"]}))
l = unpb(b)
assert l[3][0] == csnaps["cs"]["layer_id"] and l[4] == [csnaps["cs"]["layer_id"], snaps["s1"]["layer_id"]]
st, b = call(T["LAYER_GET"], pb({1: 123456}))
assert st == -2
CTX[0] = None

# ---- bad input: errors, never a crash ----
st, b = call(0x01FE)
assert st == -95 and "unknown" in errmsg(b), (st, errmsg(b))           # ENOTSUP
st, b = call(0x0120, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")
assert st == -74 and "malformed" in errmsg(b), (st, errmsg(b))         # EBADMSG
st, b = call(0x0120, pb({1: "p", 2: "bad name", 3: 4096}))
assert st == -22 and "invalid volume name" in errmsg(b)
st, b = call(0x0120, b"\x0a" + varint(70000) + b"x" * 70000)
assert st == -90 and "limit" in errmsg(b), (st, errmsg(b))             # EMSGSIZE
with conn() as s:                                                       # data payload on meta
    s.sendall(frame(T["MAP_GET"], b"", 9, payload=b"x" * 100))
    t, rid, st, b = read_reply(s)
    assert st == -22
with conn() as s:                                                       # garbage closes only that conn
    s.sendall(b"GARBAGE!" * 8)
    s.settimeout(5)
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
with conn() as s:                                                       # a frame over the frame cap
    s.sendall(frame(T["MAP_GET"], b"", 1, hdr_len=1 << 30))
    s.settimeout(5)
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
with conn() as s:                                                       # half a frame, then hang up
    s.sendall(frame(0x0120, pb({1: "p", 2: "v", 3: 4096}))[:40])
# Many requests pipelined on one connection, all answered in order.
with conn() as s:
    s.sendall(b"".join(frame(T["MAP_GET"], b"", i) for i in range(1, 201)))
    for i in range(1, 201):
        assert read_reply(s)[1] == i
st, b = call(T["MAP_GET"])
assert st == 0
print("wire checks passed")
PY
kill -0 "$META_PID" || fail "strata-meta died"
"$S" status >/dev/null || fail "status after bad input"
echo "PASS"
