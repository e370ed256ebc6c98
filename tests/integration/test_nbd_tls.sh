#!/usr/bin/env bash
# strata-nbd with TLS (OPT_STARTTLS, GnuTLS, X.509): --tls require refuses plaintext and serves
# nbds:// clients; --tls optional serves both; --tls-ca demands a client certificate.
. "$(dirname "$0")/lib.sh"

export PATH=/usr/bin:$PATH # nbdsh needs the distribution's python3
for t in openssl nbdinfo nbdsh nbdcopy; do
	command -v "$t" >/dev/null || fail "$t is missing (run scripts/bootstrap)"
done

# ---- a throwaway CA, a server certificate for 127.0.0.1, a client certificate ----
pki=$TEST_TMP/pki
mkdir -p "$pki/client" "$pki/anon"
(
	cd "$pki"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 2 \
		-subj /CN=strata-test-ca 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr \
		-subj /CN=localhost 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >srv.ext
	openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
		-out server-cert.pem -days 2 -extfile srv.ext 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -keyout client/client-key.pem -out client.csr \
		-subj /CN=strata-client 2>/dev/null
	printf 'extendedKeyUsage=clientAuth\n' >cli.ext
	openssl x509 -req -in client.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
		-out client/client-cert.pem -days 2 -extfile cli.ext 2>/dev/null
	cp ca-cert.pem client/
	cp ca-cert.pem anon/
) || fail "making certificates"

start_single 4G
cli volume create p/v --size 64M >/dev/null

REQ_PORT=$(free_port)
start_daemon nbd-require "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$REQ_PORT" \
	--tls-cert "$pki/server-cert.pem" --tls-key "$pki/server-key.pem" --tls require
wait_port "$REQ_PORT"
OPT_PORT=$(free_port)
start_daemon nbd-optional "$STRATA_BIN/strata-nbd" --meta "$META" \
	--listen "127.0.0.1:$OPT_PORT" --tls-cert "$pki/server-cert.pem" \
	--tls-key "$pki/server-key.pem" --tls optional
wait_port "$OPT_PORT"
CA_PORT=$(free_port)
start_daemon nbd-ca "$STRATA_BIN/strata-nbd" --meta "$META" --listen "127.0.0.1:$CA_PORT" \
	--tls-cert "$pki/server-cert.pem" --tls-key "$pki/server-key.pem" --tls-ca "$pki/ca-cert.pem"
wait_port "$CA_PORT"

anon="tls-certificates=$pki/anon"
client="tls-certificates=$pki/client"

echo "== --tls require"
if nbdinfo "nbd://127.0.0.1:$REQ_PORT/p/v" >/dev/null 2>&1; then
	fail "plaintext client accepted with --tls require"
fi
nbdinfo "nbds://127.0.0.1:$REQ_PORT/p/v?$anon" | grep -q "with TLS" || fail "nbds:// info"
nbdinfo --list "nbds://127.0.0.1:$REQ_PORT/?$anon" | grep -q 'export="p/v"' || fail "TLS list"

cat >"$TEST_TMP/tls.py" <<'PY'
import os
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_certificates(os.environ["CERTS"])
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri("nbd://127.0.0.1:%s/p/v" % os.environ["PORT"])
assert h.get_tls_negotiated()
data = os.urandom(1 << 20)
h.pwrite(data, 4 << 20)
h.flush()
assert h.pread(1 << 20, 4 << 20) == data
# Large reads and many in flight, so records span socket reads.
cookies = [h.aio_pwrite(bytes([i]) * 262144, (8 << 20) + i * 262144) for i in range(32)]
for c in cookies:
    while not h.aio_command_completed(c):
        h.poll(-1)
for i in range(32):
    assert h.pread(262144, (8 << 20) + i * 262144) == bytes([i]) * 262144
ext = []
h.block_status(1 << 20, 60 << 20, lambda m, o, e, err: ext.extend(e) or 0)
assert ext and ext[1] & nbd.STATE_HOLE, ext
h.shutdown()
print("tls data ok")
PY
CERTS=$pki/anon PORT=$REQ_PORT nbdsh -n -c "exec(open('$TEST_TMP/tls.py').read())" ||
	fail "TLS data path"
truncate -s 64M "$TEST_TMP/img"
head -c 3M /dev/urandom | dd of="$TEST_TMP/img" bs=1M seek=20 conv=notrunc status=none
nbdcopy "$TEST_TMP/img" "nbds://127.0.0.1:$REQ_PORT/p/v?$anon" || fail "nbdcopy over TLS"
nbdcopy "nbds://127.0.0.1:$REQ_PORT/p/v?$anon" "$TEST_TMP/back" || fail "nbdcopy back"
cmp "$TEST_TMP/img" "$TEST_TMP/back" || fail "TLS round trip differs"

echo "== --tls optional"
nbdinfo "nbd://127.0.0.1:$OPT_PORT/p/v" | grep -q "without TLS" || fail "plaintext on optional"
nbdinfo "nbds://127.0.0.1:$OPT_PORT/p/v?$anon" | grep -q "with TLS" || fail "TLS on optional"

echo "== --tls-ca: client certificates"
if nbdinfo "nbds://127.0.0.1:$CA_PORT/p/v?$anon" >/dev/null 2>&1; then
	fail "client without a certificate accepted with --tls-ca"
fi
nbdinfo "nbds://127.0.0.1:$CA_PORT/p/v?$client" | grep -q "with TLS" ||
	fail "client certificate refused"

echo "PASS"
