#!/usr/bin/env bash
# strata-nbd protocol corners, driven by nbdsh (libnbd) and a raw socket:
#   - error replies keep the connection up: out of range, zero length, unaligned, EPERM on a
#     read-only snapshot and template, FAST_ZERO refused with ENOTSUP
#   - write-zeroes reads back as zeros; block status after trim; OFFSET_HOLE on sparse reads
#   - unknown export -> NBD_REP_ERR_UNKNOWN with a message, then the same connection goes on
#   - unknown option -> NBD_REP_ERR_UNSUP, then the next option is parsed
#   - bad magic / oversized WRITE close only that connection
#   - MULTI_CONN: a flush on one connection covers a write completed on another
#   - restart: acknowledged writes survive a strata-nbd restart and clients reconnect
. "$(dirname "$0")/lib.sh"

# nbdsh is a Python program; use the distribution's python3, which has the nbd module.
export PATH=/usr/bin:$PATH
command -v nbdsh >/dev/null || fail "nbdsh is missing (run scripts/bootstrap)"
/usr/bin/python3 -c 'import nbd' || fail "python3-libnbd is missing (run scripts/bootstrap)"

NBD_PORT=$(free_port)
start_single 4G
cli volume create p/v --size 64M >/dev/null
cli volume create p/t --size 16M >/dev/null
start_nbd() {
	start_daemon nbd "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$NBD_PORT"
	NBD_PID=$LAST_PID
	wait_port "$NBD_PORT"
}
start_nbd
URI=nbd://127.0.0.1:$NBD_PORT
export URI NBD_PORT

nbdpy() { # run a Python script under nbdsh (no default handle)
	nbdsh -n -c "exec(open('$1').read())"
}

# ---- before the snapshot: data on p/v and on the template ----
cat >"$TEST_TMP/prep.py" <<'PY'
import os
h = nbd.NBD()
h.connect_uri(os.environ["URI"] + "/p/v")
h.pwrite(b"\xaa" * 65536, 0)
h.pwrite(b"\xbb" * 4096, 1 << 20)
h.flush()
h.shutdown()
h = nbd.NBD()
h.connect_uri(os.environ["URI"] + "/p/t")
h.pwrite(b"\x77" * 4096, 0)
h.shutdown()
PY
nbdpy "$TEST_TMP/prep.py" || fail "prep"
cli snap create p/v@s >/dev/null
cli clone p/v@s p/c >/dev/null
cli template mark p/t >/dev/null

echo "== error replies, zeroes, trim, block status, holes"
cat >"$TEST_TMP/edge.py" <<'PY'
import errno, os

def expect_err(fn, code, what):
    try:
        fn()
    except nbd.Error as e:
        got = getattr(errno, e.errno) if isinstance(e.errno, str) else e.errno
        assert got == code, "%s: errno %s, wanted %s (%s)" % (what, e.errno, code, e)
        return
    raise AssertionError(what + ": no error")

uri = os.environ["URI"]
h = nbd.NBD()
h.set_strict_mode(0)  # let libnbd send what a buggy client would
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri + "/p/v")
size = h.get_size()
assert size == 64 << 20, size
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
assert h.can_multi_conn() and h.can_fua() and h.can_trim() and h.can_zero()
assert not h.is_read_only()

expect_err(lambda: h.pread(4096, size), errno.EINVAL, "read past end")
expect_err(lambda: h.pread(8192, size - 4096), errno.EINVAL, "read across end")
expect_err(lambda: h.pwrite(b"x" * 4096, size), errno.ENOSPC, "write past end")
expect_err(lambda: h.trim(4096, size), errno.EINVAL, "trim past end")
expect_err(lambda: h.pread(0, 0), errno.EINVAL, "zero-length read")
expect_err(lambda: h.pread(512, 1), errno.EINVAL, "unaligned read")
expect_err(lambda: h.pwrite(b"y" * 100, 0), errno.EINVAL, "unaligned write")
expect_err(lambda: h.pwrite(b"y" * 512, 512), errno.EINVAL, "sub-block write")
assert h.get_block_size(nbd.SIZE_MINIMUM) == 4096, h.get_block_size(nbd.SIZE_MINIMUM)
expect_err(lambda: h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO),
           errno.ENOTSUP, "fast zero with no-hole")
# The connection is still fine after all of that.
assert h.pread(4096, 0) == b"\xaa" * 4096

# Write-zeroes (with and without NO_HOLE) reads back as zeros.
h.pwrite(b"\x55" * 65536, 2 << 20)
h.zero(16384, 2 << 20)
h.zero(16384, (2 << 20) + 16384, nbd.CMD_FLAG_NO_HOLE)
h.zero(16384, (2 << 20) + 32768, nbd.CMD_FLAG_FAST_ZERO)
buf = h.pread(65536, 2 << 20)
assert buf[:49152] == bytes(49152), "write-zeroes did not read back as zeros"
assert buf[49152:] == b"\x55" * 16384

# FUA write, cache, flush.
h.pwrite(b"\x66" * 4096, 3 << 20, nbd.CMD_FLAG_FUA)
h.cache(65536, 0)
h.flush()
assert h.pread(4096, 3 << 20) == b"\x66" * 4096

def extents(off, length):
    out = []
    def cb(metacontext, offset, entries, err):
        if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
            out.extend(zip(entries[0::2], entries[1::2]))
        return 0
    h.block_status(length, off, cb)
    return out

# Block status: written data is allocated; after a trim the range is a hole that reads zero.
h.pwrite(b"\x42" * 65536, 4 << 20)
e = extents(4 << 20, 65536)
assert e and e[0][1] & nbd.STATE_HOLE == 0, "written range reported as hole: %r" % e
h.trim(65536, 4 << 20)
e = extents(4 << 20, 65536)
assert e and e[0][0] >= 65536 and e[0][1] & nbd.STATE_ZERO, "after trim: %r" % e
assert h.pread(65536, 4 << 20) == bytes(65536)
# Never-written tail: hole and zero.
e = extents(size - (1 << 20), 1 << 20)
assert e and e[0][1] == nbd.STATE_HOLE | nbd.STATE_ZERO, "tail: %r" % e

# A structured read of a hole arrives as OFFSET_HOLE, of data as OFFSET_DATA.
kinds = []
def chunk(subbuf, offset, status, err):
    kinds.append(status)
    return 0
h.pread_structured(65536, 32 << 20, chunk)
assert kinds == [nbd.READ_HOLE], kinds
kinds.clear()
h.pread_structured(65536, 0, chunk)
assert kinds == [nbd.READ_DATA], kinds
kinds.clear()
h.pread_structured(65536, 0, chunk, nbd.CMD_FLAG_DF)
assert kinds == [nbd.READ_DATA], kinds
h.shutdown()

# Read-only: the snapshot and the template refuse writes with EPERM and stay up.
for name, pattern in (("p/v@s", b"\xaa"), ("p/t", b"\x77")):
    r = nbd.NBD()
    r.set_strict_mode(0)
    r.connect_uri(uri + "/" + name)
    assert r.is_read_only(), name
    assert not r.can_trim() and not r.can_zero() and not r.can_fua(), name
    expect_err(lambda: r.pwrite(b"z" * 4096, 0), errno.EPERM, name + " write")
    expect_err(lambda: r.trim(4096, 0), errno.EPERM, name + " trim")
    expect_err(lambda: r.zero(4096, 0), errno.EPERM, name + " zero")
    assert r.pread(4096, 0) == pattern * 4096, name
    r.flush()
    r.shutdown()

# The snapshot kept its data; the clone starts from it and is writable.
c = nbd.NBD()
c.connect_uri(uri + "/p/c")
assert not c.is_read_only()
assert c.pread(4096, 1 << 20) == b"\xbb" * 4096
c.pwrite(b"\xcc" * 4096, 0)
assert c.pread(4096, 0) == b"\xcc" * 4096
c.shutdown()
s = nbd.NBD()
s.connect_uri(uri + "/p/v@s")
assert s.pread(4096, 2 << 20) == bytes(4096), "snapshot changed after it was taken"
s.shutdown()

# Option haggling: an unknown export fails, and the same connection then goes on.
o = nbd.NBD()
o.set_opt_mode(True)
o.connect_uri(uri + "/p/nope")
try:
    o.opt_go()
    raise AssertionError("unknown export accepted")
except nbd.Error:
    pass
exports = []
o.opt_list(lambda name, desc: exports.append(name))
assert "p/v" in exports and "p/c" in exports and "p/t" in exports, exports
o.set_export_name("p/v")
o.opt_go()
assert o.pread(4096, 0) == b"\xaa" * 4096
o.shutdown()
print("edge cases ok")
PY
nbdpy "$TEST_TMP/edge.py" || fail "nbdsh edge cases"

echo "== raw protocol: unknown option, unknown export message, violations"
cat >"$TEST_TMP/raw.py" <<'PY'
import os, socket, struct, nbd

port = int(os.environ["NBD_PORT"])
OPT_MAGIC = 0x49484156454F5054
REP_MAGIC = 0x3e889045565a9

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b

def handshake():
    s = socket.create_connection(("127.0.0.1", port))
    magic, opt, flags = struct.unpack(">QQH", recvn(s, 18))
    assert magic == 0x4E42444D41474943 and opt == OPT_MAGIC and flags & 1
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    return s

def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", OPT_MAGIC, opt, len(data)) + data)

def reply(s):
    magic, opt, typ, ln = struct.unpack(">QIII", recvn(s, 20))
    assert magic == REP_MAGIC
    return opt, typ, recvn(s, ln)

def go(s, name):
    n = name.encode()
    option(s, 7, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
    while True:
        opt, typ, data = reply(s)
        if typ == 1 or typ & 0x80000000:
            return typ, data

s = handshake()
option(s, 0x1234, b"junk")
opt, typ, data = reply(s)
assert opt == 0x1234 and typ == 0x80000001, (opt, hex(typ))  # NBD_REP_ERR_UNSUP
typ, data = go(s, "p/missing")
assert typ == 0x80000006, hex(typ)  # NBD_REP_ERR_UNKNOWN
assert b"p/missing" in data and b"not found" in data, data
typ, data = go(s, "p/v")
assert typ == 1, hex(typ)

# A READ works on the raw connection.
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, 0, 512))
magic, err, handle = struct.unpack(">IIQ", recvn(s, 16))
assert magic == 0x67446698 and err == 0 and handle == 7, (hex(magic), err, handle)
assert recvn(s, 512) == b"\xaa" * 512
# Two requests, one refused WRITE whose payload must be skipped, then a good READ.
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 8, 1 << 40, 1024) + b"q" * 1024 +
          struct.pack(">IHHQQI", 0x25609513, 0, 0, 9, 0, 512))
got = {}
for _ in range(2):
    magic, err, handle = struct.unpack(">IIQ", recvn(s, 16))
    got[handle] = err
    if handle == 9 and err == 0:
        recvn(s, 512)
assert got == {8: 28, 9: 0}, got  # ENOSPC, then success

# Another client meanwhile on libnbd: it must survive the violation below.
other = nbd.NBD()
other.connect_uri(os.environ["URI"] + "/p/v")

# Bad magic closes this connection only.
s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 10, 0, 512))
s.settimeout(10)
assert s.recv(1) == b"", "connection not closed after bad magic"
s.close()

# An oversized WRITE length closes the connection too.
s = handshake()
typ, data = go(s, "p/v")
assert typ == 1
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 11, 0, 0x7fffffff))
s.settimeout(10)
assert s.recv(1) == b"", "connection not closed after oversized write"
s.close()

assert other.pread(4096, 0) == b"\xaa" * 4096
other.shutdown()

# OPT_ABORT gets an ACK (or a close) and the server carries on.
s = handshake()
option(s, 2)
try:
    opt, typ, data = reply(s)
    assert typ == 1
except EOFError:
    pass
s.close()
print("raw protocol ok")
PY
nbdpy "$TEST_TMP/raw.py" || fail "raw protocol"

echo "== MULTI_CONN: flush on one connection covers writes on another"
cat >"$TEST_TMP/multiconn.py" <<'PY'
import os
uri = os.environ["URI"] + "/p/v"
a, b = nbd.NBD(), nbd.NBD()
a.connect_uri(uri)
b.connect_uri(uri)
assert a.can_multi_conn() and b.can_multi_conn()
for i in range(64):
    a.pwrite(bytes([i]) * 4096, (8 << 20) + i * 4096)
b.flush()
for i in range(64):
    assert b.pread(4096, (8 << 20) + i * 4096) == bytes([i]) * 4096, i
# And concurrently: many requests in flight on both, replies in any order.
cookies = []
for i in range(128):
    h = a if i % 2 else b
    cookies.append((h, h.aio_pwrite(bytes([i % 251]) * 65536, (16 << 20) + i * 65536)))
for h, c in cookies:
    while not h.aio_command_completed(c):
        h.poll(-1)
a.flush()
for i in range(128):
    assert b.pread(65536, (16 << 20) + i * 65536) == bytes([i % 251]) * 65536, i
a.shutdown()
b.shutdown()
print("multi-conn ok")
PY
nbdpy "$TEST_TMP/multiconn.py" || fail "multi-conn"

echo "== restart: acknowledged writes survive, clients reconnect"
cat >"$TEST_TMP/before.py" <<'PY'
import os
h = nbd.NBD()
h.connect_uri(os.environ["URI"] + "/p/v")
h.pwrite(b"\x99" * 65536, 40 << 20)  # acknowledged, deliberately not flushed
h.shutdown()
PY
cat >"$TEST_TMP/after.py" <<'PY'
import os
h = nbd.NBD()
h.connect_uri(os.environ["URI"] + "/p/v")
assert h.pread(65536, 40 << 20) == b"\x99" * 65536
assert h.pread(4096, 0) == b"\xaa" * 4096
h.shutdown()
print("restart ok")
PY
nbdpy "$TEST_TMP/before.py" || fail "write before restart"
stop_daemon "$NBD_PID" TERM
start_nbd
nbdpy "$TEST_TMP/after.py" || fail "read after restart"
stop_daemon "$NBD_PID" KILL
start_nbd
nbdpy "$TEST_TMP/after.py" || fail "read after kill -9"

kill -0 "$NBD_PID" || fail "strata-nbd died"
echo "PASS"
