/*
 * blockd_driver: talks strata-blockd's RPCs with st_rpc_call, for the integration tests.
 *
 *   blockd_driver stream ADDR STATE [OPS]  write a stream of self-describing blocks, flushing
 *                                          every few writes; after each flush reply, record
 *                                          every block's acknowledged version in STATE
 *   blockd_driver verify ADDR STATE        every block reads back at or after the version
 *                                          STATE recorded (and is self-consistent)
 *   blockd_driver write ADDR k=v...        layer= anc=a,b,.. obj= off= len= fill=  (FUA: fua=1)
 *   blockd_driver read  ADDR k=v...        same keys; checks every byte equals fill
 *   blockd_driver trim  ADDR k=v...
 *   blockd_driver delete ADDR layer= [children=a,b]
 *   blockd_driver flush ADDR
 *   blockd_driver replflush ADDR TO        a peer's REPL_FLUSH addressed to node TO
 *   blockd_driver replwrite ADDR TO        a peer's REPL_WRITE (one block of pool 1, PG 0)
 *                                          addressed to node TO
 *   blockd_driver space ADDR               prints "total used free"
 *
 * Exit status: 0 success; 1 a failed check; 2 usage or transport; for write/read/trim/delete
 * a negative errno reply prints "errno N" and exits 3.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockd.pb-c.h"
#include "common/crc32c.h"
#include "common/frame.h"
#include "common/net.h"
#include "common/rpc.h"

#define BLK        4096u
#define NOBJ       4u
#define OBJ_BLOCKS 1024u
#define NBLK       (NOBJ * OBJ_BLOCKS)
#define MAGIC      0x5354524Du

static int g_fd = -1;

static int connect_to(const char *addr)
{
	g_fd = st_tcp_connect(addr, 5000);
	if (g_fd < 0) {
		fprintf(stderr, "connect %s: %s\n", addr, strerror(-g_fd));
		exit(2);
	}
	return g_fd;
}

/* One request. Returns the reply status (0 or -errno); a transport failure exits 2 unless
 * soft, when it returns -ECONNRESET. */
static int call(uint16_t type, uint8_t flags, const ProtobufCMessage *msg, const void *payload,
		size_t plen, struct st_frame *reply, bool soft)
{
	char err[256] = "";
	struct st_frame r;
	memset(&r, 0, sizeof(r));
	int rc = st_rpc_call(g_fd, type, flags, msg, payload, plen, &r, err, sizeof(err));
	if (rc < 0 && r.msg == NULL && r.payload == NULL && r.hdr.type == 0) {
		if (soft) {
			return -ECONNRESET;
		}
		fprintf(stderr, "rpc: %s\n", strerror(-rc));
		exit(2);
	}
	if (reply) {
		*reply = r;
	} else {
		st_frame_release(&r);
	}
	return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Self-describing blocks: header (magic, obj, blk, version) then a fill derived from them. */

static void make_block(uint8_t *b, uint32_t obj, uint32_t blk, uint32_t ver)
{
	uint32_t h[4] = {MAGIC, obj, blk, ver};
	memcpy(b, h, sizeof(h));
	uint64_t x = ((uint64_t)obj << 40) ^ ((uint64_t)blk << 20) ^ ver ^ 0x9E3779B97F4A7C15ull;
	for (size_t i = 16; i < BLK; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(b + i, &x, 8);
	}
}

/* Returns the block's version, 0 for an all-zero block, or -1 if it is not one of ours. */
static int64_t block_version(const uint8_t *b, uint32_t obj, uint32_t blk)
{
	uint32_t h[4];
	memcpy(h, b, sizeof(h));
	if (h[0] != MAGIC) {
		for (size_t i = 0; i < BLK; i++) {
			if (b[i]) {
				return -1;
			}
		}
		return 0;
	}
	if (h[1] != obj || h[2] != blk) {
		return -1;
	}
	static uint8_t want[BLK];
	make_block(want, obj, blk, h[3]);
	return memcmp(want, b, BLK) == 0 ? (int64_t)h[3] : -1;
}

static void init_io(Strata__Blockd__IoRequest *io, uint64_t layer, uint64_t obj, uint64_t off,
		    uint32_t len)
{
	strata__blockd__io_request__init(io);
	io->pool_id = 1;
	io->family = 1;
	io->layer = layer;
	io->object = obj;
	io->offset = off;
	io->length = len;
}

static int save_state(const char *path, const uint32_t *ver)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	if (!f || fwrite(ver, sizeof(uint32_t), NBLK, f) != NBLK || fflush(f) || fsync(fileno(f))) {
		return -1;
	}
	fclose(f);
	return rename(tmp, path);
}

static int stream_loop(const char *state, long ops, uint8_t *buf)
{
	static uint32_t acked[NBLK], flushed[NBLK];
	FILE *f = fopen(state, "rb");
	if (f) {
		if (fread(flushed, sizeof(uint32_t), NBLK, f) != NBLK) {
			memset(flushed, 0, sizeof(flushed));
		}
		fclose(f);
	}
	memcpy(acked, flushed, sizeof(acked));
	uint32_t next = 1;
	for (uint32_t i = 0; i < NBLK; i++) {
		if (flushed[i] >= next) {
			next = flushed[i] + 1;
		}
	}
	next += 1000000; /* versions from an unflushed earlier life may exist: stay above them */
	srand((unsigned)getpid());
	for (long n = 0; ops < 0 || n < ops; n++) {
		uint32_t obj = (uint32_t)rand() % NOBJ;
		uint32_t nb = 1 + (uint32_t)rand() % 16;
		uint32_t blk = (uint32_t)rand() % (OBJ_BLOCKS - nb + 1);
		uint32_t ver = next++;
		for (uint32_t i = 0; i < nb; i++) {
			make_block(buf + (size_t)i * BLK, obj, blk + i, ver);
		}
		Strata__Blockd__IoRequest io;
		init_io(&io, 1, obj, (uint64_t)blk * BLK, nb * BLK);
		io.client_id = (uint64_t)getpid();
		io.seq = (uint64_t)n + 1;
		uint8_t flags = (n % 37 == 0) ? ST_FRAME_F_FUA : 0;
		int rc = call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE, flags, &io.base, buf,
			      nb * BLK, NULL, true);
		if (rc == -ECONNRESET) {
			return 0; /* blockd died: that is the point */
		}
		if (rc < 0) {
			fprintf(stderr, "write: %s\n", strerror(-rc));
			return 1;
		}
		for (uint32_t i = 0; i < nb; i++) {
			acked[obj * OBJ_BLOCKS + blk + i] = ver;
		}
		if (n % 8 == 7) {
			Strata__Blockd__FlushRequest fr = STRATA__BLOCKD__FLUSH_REQUEST__INIT;
			rc = call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_FLUSH, 0, &fr.base, NULL,
				  0, NULL, true);
			if (rc == -ECONNRESET) {
				return 0;
			}
			if (rc < 0) {
				fprintf(stderr, "flush: %s\n", strerror(-rc));
				return 1;
			}
			if (save_state(state, acked)) {
				fprintf(stderr, "save state: %s\n", strerror(errno));
				return 2;
			}
		}
	}
	return 0;
}

static int cmd_stream(const char *state, long ops)
{
	uint8_t *buf = st_payload_alloc(16 * BLK);
	if (!buf) {
		return 2;
	}
	int rc = stream_loop(state, ops, buf);
	free(buf);
	return rc;
}

static int cmd_verify(const char *state)
{
	static uint32_t flushed[NBLK];
	FILE *f = fopen(state, "rb");
	if (f) {
		if (fread(flushed, sizeof(uint32_t), NBLK, f) != NBLK) {
			fprintf(stderr, "short state file\n");
			return 2;
		}
		fclose(f);
	}
	int bad = 0;
	uint64_t checked = 0;
	for (uint32_t obj = 0; obj < NOBJ; obj++) {
		Strata__Blockd__IoRequest io;
		init_io(&io, 1, obj, 0, OBJ_BLOCKS * BLK);
		struct st_frame r;
		int rc = call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_READ, 0, &io.base, NULL, 0,
			      &r, false);
		if (rc < 0 || r.hdr.payload_len != OBJ_BLOCKS * BLK) {
			fprintf(stderr, "read object %u: %d\n", obj, rc);
			st_frame_release(&r);
			return 1;
		}
		for (uint32_t b = 0; b < OBJ_BLOCKS; b++) {
			int64_t v = block_version(r.payload + (size_t)b * BLK, obj, b);
			uint32_t want = flushed[obj * OBJ_BLOCKS + b];
			checked++;
			if (v < 0 || (uint64_t)v < want) {
				if (bad++ < 10) {
					fprintf(stderr,
						"object %u block %u: version %lld, flushed %u\n",
						obj, b, (long long)v, want);
				}
			}
		}
		st_frame_release(&r);
	}
	printf("verified %lu blocks, %d bad\n", (unsigned long)checked, bad);
	return bad ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------ */

struct kv {
	uint64_t layer, obj, off, len, fill, fua;
	uint64_t anc[64];
	size_t nanc;
};

static size_t parse_list(const char *s, uint64_t *out, size_t max)
{
	size_t n = 0;
	while (*s && n < max) {
		char *end;
		out[n++] = strtoull(s, &end, 0);
		s = *end == ',' ? end + 1 : end;
		if (*end == 0) {
			break;
		}
	}
	return n;
}

static void parse_kv(int argc, char **argv, struct kv *kv)
{
	memset(kv, 0, sizeof(*kv));
	kv->layer = 1;
	kv->len = BLK;
	for (int i = 0; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq) {
			fprintf(stderr, "bad argument %s\n", argv[i]);
			exit(2);
		}
		*eq = 0;
		const char *k = argv[i], *v = eq + 1;
		if (!strcmp(k, "anc") || !strcmp(k, "children")) {
			kv->nanc = parse_list(v, kv->anc, 64);
			continue;
		}
		uint64_t x = strtoull(v, NULL, 0);
		if (!strcmp(k, "layer")) {
			kv->layer = x;
		} else if (!strcmp(k, "obj")) {
			kv->obj = x;
		} else if (!strcmp(k, "off")) {
			kv->off = x;
		} else if (!strcmp(k, "len")) {
			kv->len = x;
		} else if (!strcmp(k, "fill")) {
			kv->fill = x;
		} else if (!strcmp(k, "fua")) {
			kv->fua = x;
		} else {
			fprintf(stderr, "unknown key %s\n", k);
			exit(2);
		}
	}
}

static int report(int rc)
{
	if (rc < 0) {
		printf("errno %d\n", -rc);
		return 3;
	}
	return 0;
}

static int cmd_io(const char *cmd, struct kv *kv)
{
	Strata__Blockd__IoRequest io;
	init_io(&io, kv->layer, kv->obj, kv->off, (uint32_t)kv->len);
	io.ancestry = kv->anc;
	io.n_ancestry = kv->nanc;
	if (!strcmp(cmd, "write")) {
		uint8_t *b = st_payload_alloc(kv->len);
		memset(b, (int)kv->fill, kv->len);
		int rc = call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE,
			      kv->fua ? ST_FRAME_F_FUA : 0, &io.base, b, kv->len, NULL, false);
		free(b);
		return report(rc);
	}
	if (!strcmp(cmd, "trim")) {
		return report(call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_TRIM, 0, &io.base, NULL,
				   0, NULL, false));
	}
	struct st_frame r;
	int rc =
		call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_READ, 0, &io.base, NULL, 0, &r, false);
	if (rc < 0) {
		return report(rc);
	}
	int bad = r.hdr.payload_len != kv->len;
	for (size_t i = 0; !bad && i < kv->len; i++) {
		if (r.payload[i] != (uint8_t)kv->fill) {
			fprintf(stderr, "byte %zu: %02x, want %02x\n", i, r.payload[i],
				(unsigned)kv->fill);
			bad = 1;
		}
	}
	st_frame_release(&r);
	return bad;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: blockd_driver CMD ADDR [args]\n");
		return 2;
	}
	const char *cmd = argv[1];
	connect_to(argv[2]);
	if (!strcmp(cmd, "stream") && argc >= 4) {
		return cmd_stream(argv[3], argc > 4 ? atol(argv[4]) : -1);
	}
	if (!strcmp(cmd, "verify") && argc >= 4) {
		return cmd_verify(argv[3]);
	}
	if (!strcmp(cmd, "flush")) {
		Strata__Blockd__FlushRequest fr = STRATA__BLOCKD__FLUSH_REQUEST__INIT;
		return report(call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_FLUSH, 0, &fr.base, NULL,
				   0, NULL, false));
	}
	if (!strcmp(cmd, "replflush") && argc >= 4) {
		Strata__Blockd__FlushRequest fr = STRATA__BLOCKD__FLUSH_REQUEST__INIT;
		fr.to = (uint32_t)atol(argv[3]);
		return report(call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_FLUSH, 0, &fr.base, NULL,
				   0, NULL, false));
	}
	if (!strcmp(cmd, "replwrite") && argc >= 4) {
		Strata__Blockd__IoRequest io;
		init_io(&io, 1, 0, 0, BLK);
		io.pool_id = 1;
		Strata__Blockd__ReplWrite rw = STRATA__BLOCKD__REPL_WRITE__INIT;
		rw.io = &io;
		rw.op = STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE;
		rw.version = 1;
		rw.primary = 1;
		rw.to = (uint32_t)atol(argv[3]);
		uint8_t *b = st_payload_alloc(BLK);
		memset(b, 0x5a, BLK);
		int rc = call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_WRITE, 0, &rw.base, b, BLK,
			      NULL, false);
		free(b);
		return report(rc);
	}
	if (!strcmp(cmd, "space")) {
		Strata__Blockd__SpaceRequest sr = STRATA__BLOCKD__SPACE_REQUEST__INIT;
		struct st_frame r;
		int rc = call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_SPACE, 0, &sr.base, NULL, 0,
			      &r, false);
		if (rc < 0) {
			return report(rc);
		}
		Strata__Blockd__SpaceReply *sp =
			strata__blockd__space_reply__unpack(NULL, r.hdr.hdr_len, r.msg);
		if (!sp) {
			return 2;
		}
		printf("%lu %lu %lu\n", (unsigned long)sp->total_bytes,
		       (unsigned long)sp->used_bytes, (unsigned long)sp->free_bytes);
		strata__blockd__space_reply__free_unpacked(sp, NULL);
		st_frame_release(&r);
		return 0;
	}
	struct kv kv;
	parse_kv(argc - 3, argv + 3, &kv);
	if (!strcmp(cmd, "delete")) {
		Strata__Blockd__LayerDeleteRequest d = STRATA__BLOCKD__LAYER_DELETE_REQUEST__INIT;
		d.family = 1;
		d.layer = kv.layer;
		d.children = kv.anc;
		d.n_children = kv.nanc;
		return report(call(STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_LAYER_DELETE, 0, &d.base,
				   NULL, 0, NULL, false));
	}
	if (!strcmp(cmd, "write") || !strcmp(cmd, "read") || !strcmp(cmd, "trim")) {
		return cmd_io(cmd, &kv);
	}
	fprintf(stderr, "unknown command %s\n", cmd);
	return 2;
}
