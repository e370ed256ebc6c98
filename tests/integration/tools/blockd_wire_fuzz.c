/*
 * blockd_wire_fuzz: sends a running strata-blockd a seeded stream of hostile frames over TCP and
 * checks that it keeps serving, for test_blockd_wire.sh.
 *
 *   blockd_wire_fuzz ADDR SEED SECONDS [--no-health]
 *
 * Each frame is one of blockd's request types (or an unknown, reply-flagged or meta type) whose
 * protobuf body is generated from the message's descriptor: every field filled with a value
 * drawn from edge cases (0, 1, block multiples, 2^32-1, 2^63, UINT64_MAX, random), repeated
 * fields from empty to a few hundred entries, nested messages present or not. Then some frames
 * are damaged on purpose:
 *   - the body: bytes flipped, truncated or extended (a protobuf that does not decode, or
 *     decodes to something else);
 *   - the payload: absent, the size the request names, or any other size;
 *   - the header: bad magic, version or crc, or a length above blockd's caps. blockd must then
 *     close that one connection; the fuzzer reconnects.
 * Frames go out in pipelined bursts of 1-8 on one connection; every reply that comes back must
 * be a well-formed reply frame (magic, crc, the reply flag).
 *
 * Health: every HEALTH_EVERY frames (and at the end), a second connection writes a pattern to
 * family HEALTH_FAMILY, layer HEALTH_LAYER (values the generator never draws on purpose) and
 * reads it back. --no-health skips that (a cluster member answers direct I/O only for the PGs
 * it leads at the current map epoch); the fuzzer then checks only that blockd still accepts a
 * connection and answers SPACE.
 *
 * Debugging knobs (environment): FUZZ_KINDS="0x300,0x307" draws only those request types,
 * FUZZ_VERBOSE prints every frame sent and every unanswered one, FUZZ_WAIT_MS replaces the
 * REPLY_WAIT_MS wait for a reply.
 *
 * Exit status: 0 blockd stayed healthy; 1 it stopped answering, sent a malformed reply, or a
 * health check failed; 2 usage. The last line printed is a summary.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "blockd.pb-c.h"
#include "common/frame.h"
#include "common/net.h"
#include "common/rpc.h"

#define HEALTH_FAMILY 0x5eed5eed5eedull
#define HEALTH_LAYER  0x7777ull
#define HEALTH_EVERY  400
#define MAX_BURST     8
#define ARENA_BYTES   (8u << 20)
#define REPLY_WAIT_MS 3000

static uint64_t g_rng;
/* The debugging knobs, read once in main. */
static const char *g_only;
static bool g_verbose;
static int g_wait_ms = REPLY_WAIT_MS;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic for a seed, so a failure reproduces. */
	g_rng ^= g_rng >> 12;
	g_rng ^= g_rng << 25;
	g_rng ^= g_rng >> 27;
	return g_rng * 2685821657736338717ull;
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static bool chance(unsigned percent)
{
	return below(100) < percent;
}

/* ---- a bump allocator for one generated message, reset per frame ---- */

static uint8_t *g_arena;
static size_t g_arena_used;

static void *arena_alloc(size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (g_arena_used + n > ARENA_BYTES) {
		return NULL;
	}
	void *p = g_arena + g_arena_used;
	g_arena_used += n;
	memset(p, 0, n);
	return p;
}

/* ---- field values ---- */

static uint64_t edge64(void)
{
	static const uint64_t edges[] = {0,
					 1,
					 2,
					 3,
					 4096,
					 4095,
					 1u << 20,
					 (4u << 20) - 4096,
					 4u << 20,
					 64u << 20,
					 (64u << 20) + 4096,
					 0x7fffffffull,
					 0xffffffffull,
					 0x100000000ull,
					 1ull << 63,
					 UINT64_MAX - 4095,
					 UINT64_MAX};
	switch (below(6)) {
	case 0:
		return edges[below(sizeof(edges) / sizeof(edges[0]))];
	case 1:
		return below(9); /* small ids: pools, layers, PGs, node ids */
	case 2:
		return below(2048) * 4096; /* offsets and lengths inside an object */
	case 3:
		return below(256);
	case 4:
		return rnd() >> below(64);
	default:
		return rnd();
	}
}

static void fill_message(ProtobufCMessage *m, const ProtobufCMessageDescriptor *d, int depth);

static size_t field_size(const ProtobufCFieldDescriptor *f)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_ENUM:
		return 4;
	case PROTOBUF_C_TYPE_FLOAT:
		return sizeof(float);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	default:
		return 8;
	}
}

/* Fill one value of field f at p. A repeated message's elements are never absent (required).
 * Returns false when the arena is exhausted. */
static bool fill_value(const ProtobufCFieldDescriptor *f, void *p, int depth, bool required)
{
	uint64_t v = edge64();
	switch (f->type) {
	case PROTOBUF_C_TYPE_BOOL: {
		protobuf_c_boolean b = (protobuf_c_boolean)(v & 1);
		memcpy(p, &b, sizeof(b));
		return true;
	}
	case PROTOBUF_C_TYPE_FLOAT: {
		float x = (float)(int64_t)v;
		memcpy(p, &x, sizeof(x));
		return true;
	}
	case PROTOBUF_C_TYPE_DOUBLE: {
		double x = (double)(int64_t)v;
		memcpy(p, &x, sizeof(x));
		return true;
	}
	case PROTOBUF_C_TYPE_STRING: {
		size_t n = below(40);
		char *s = arena_alloc(n + 1);
		if (!s) {
			return false;
		}
		for (size_t i = 0; i < n; i++) {
			s[i] = (char)(1 + below(255));
		}
		memcpy(p, &s, sizeof(s));
		return true;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		ProtobufCBinaryData b = {.len = chance(80) ? below(64) : below(4096)};
		b.data = arena_alloc(b.len + 1);
		if (!b.data) {
			return false;
		}
		for (size_t i = 0; i < b.len; i++) {
			b.data[i] = (uint8_t)rnd();
		}
		memcpy(p, &b, sizeof(b));
		return true;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessageDescriptor *sd = f->descriptor;
		ProtobufCMessage *sm = NULL;
		if (required || (depth < 4 && chance(90))) {
			sm = arena_alloc(sd->sizeof_message);
			if (!sm) {
				return false;
			}
			protobuf_c_message_init(sd, sm);
			fill_message(sm, sd, depth + 1);
		}
		memcpy(p, &sm, sizeof(sm));
		return true;
	}
	default: {
		/* The integer types, 4 or 8 bytes wide (field_size). */
		uint32_t u = (uint32_t)v;
		if (field_size(f) == 4) {
			memcpy(p, &u, 4);
		} else {
			memcpy(p, &v, 8);
		}
		return true;
	}
	}
}

static void fill_message(ProtobufCMessage *m, const ProtobufCMessageDescriptor *d, int depth)
{
	uint8_t *base = (uint8_t *)m;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (chance(8)) {
			continue; /* left at its default */
		}
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = chance(50) ? 0 : chance(80) ? 1 + below(4) : below(300);
			size_t esz = field_size(f);
			uint8_t *arr = n ? arena_alloc(n * esz) : NULL;
			if (n && !arr) {
				n = 0;
			}
			for (size_t j = 0; j < n; j++) {
				if (!fill_value(f, arr + j * esz, depth + 1, true)) {
					n = j;
					break;
				}
			}
			memcpy(base + f->quantifier_offset, &n, sizeof(size_t));
			memcpy(base + f->offset, &arr, sizeof(arr));
			continue;
		}
		if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
		    f->type != PROTOBUF_C_TYPE_STRING) {
			protobuf_c_boolean has = 1;
			memcpy(base + f->quantifier_offset, &has, sizeof(has));
		}
		(void)fill_value(f, base + f->offset, depth, false);
	}
}

/* ---- request types ---- */

struct kind {
	uint16_t type;
	const ProtobufCMessageDescriptor *desc;
	int payload; /* 0 none, 1 the request's length, 2 twice it (compare-and-write) */
};

static const struct kind KINDS[] = {
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_READ, &strata__blockd__io_request__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE, &strata__blockd__io_request__descriptor, 1},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE_ZEROES,
	 &strata__blockd__io_request__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_TRIM, &strata__blockd__io_request__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_FLUSH, &strata__blockd__flush_request__descriptor,
	 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_BLOCK_STATUS,
	 &strata__blockd__io_request__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_COMPARE_AND_WRITE,
	 &strata__blockd__io_request__descriptor, 2},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_LAYER_DELETE,
	 &strata__blockd__layer_delete_request__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_FLATTEN,
	 &strata__blockd__flatten_request__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_SPACE, &strata__blockd__space_request__descriptor,
	 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_SCRUB, &strata__blockd__scrub_request__descriptor,
	 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_LAYER_USAGE,
	 &strata__blockd__layer_usage_request__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_WRITE, &strata__blockd__repl_write__descriptor, 1},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_FLUSH, &strata__blockd__flush_request__descriptor,
	 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_INFO, &strata__blockd__pg_ref__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_LIST,
	 &strata__blockd__pg_list_request__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_GET, &strata__blockd__obj_request__descriptor,
	 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_RECOVER, &strata__blockd__pg_ref__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_DIGEST, &strata__blockd__obj_request__descriptor,
	 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_REPAIR, &strata__blockd__obj_request__descriptor,
	 0},
	/* Replies a peer never asked for, as requests: PgList and ObjData are what a puller
	 * decodes from its source. */
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_LIST | ST_FRAME_REPLY,
	 &strata__blockd__pg_list__descriptor, 0},
	{STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_GET | ST_FRAME_REPLY,
	 &strata__blockd__obj_data__descriptor, 0},
};
#define NKINDS (sizeof(KINDS) / sizeof(KINDS[0]))

/* The length the generated message names, for a payload that matches it. */
static uint64_t named_length(const ProtobufCMessage *m)
{
	if (m->descriptor == &strata__blockd__io_request__descriptor) {
		return ((const Strata__Blockd__IoRequest *)m)->length;
	}
	if (m->descriptor == &strata__blockd__repl_write__descriptor) {
		const Strata__Blockd__ReplWrite *w = (const Strata__Blockd__ReplWrite *)m;
		return w->io ? w->io->length : 0;
	}
	return 0;
}

/* ---- the connection under attack ---- */

struct stats {
	unsigned long frames, replies, errors, closes, bad_headers, unanswered, health;
};

static struct stats g_st;
static const char *g_addr;
static int g_fd = -1;
static uint8_t *g_payload; /* random bytes, 2 MiB */

static void conn_drop(void)
{
	if (g_fd >= 0) {
		close(g_fd);
		g_fd = -1;
	}
}

static int conn_get(void)
{
	if (g_fd >= 0) {
		return 0;
	}
	for (int i = 0; i < 50; i++) {
		g_fd = st_tcp_connect(g_addr, 2000);
		if (g_fd >= 0) {
			return 0;
		}
		usleep(100 * 1000);
	}
	fprintf(stderr, "blockd_wire_fuzz: cannot connect to %s: %s\n", g_addr, strerror(-g_fd));
	return -1;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read exactly len bytes within REPLY_WAIT_MS. 1: done, 0: the peer closed, -1: timeout. */
static int recv_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len > 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int pr = poll(&pfd, 1, g_wait_ms);
		if (pr < 0 && errno == EINTR) {
			continue;
		}
		if (pr <= 0) {
			return -1;
		}
		ssize_t n = recv(fd, p, len, 0);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			return 0;
		}
		p += n;
		len -= (size_t)n;
	}
	return 1;
}

/* Build one hostile frame into out (malloc'd). Sets *expect_close for a damaged header. */
static int build_frame(uint64_t req_id, uint8_t **out, size_t *out_len, bool *expect_close,
		       uint16_t *type_out, uint64_t *id_out)
{
	const struct kind *k = &KINDS[below(NKINDS)];
	if (g_only) {
		char hex[16];
		do {
			k = &KINDS[below(NKINDS)];
			snprintf(hex, sizeof(hex), "0x%x", k->type);
		} while (!strstr(g_only, hex));
	}
	uint16_t type = k->type;
	if (chance(3)) {
		/* Unknown, meta's or nothing at all. */
		static const uint16_t odd[] = {0,      1,      0x0100, 0x0104, 0x020c,
					       0x02ff, 0x0308, 0x7fff, 0xffff};
		type = chance(50) ? odd[below(sizeof(odd) / sizeof(odd[0]))] : (uint16_t)rnd();
	}
	g_arena_used = 0;
	ProtobufCMessage *m = arena_alloc(k->desc->sizeof_message);
	if (!m) {
		return -1;
	}
	protobuf_c_message_init(k->desc, m);
	fill_message(m, k->desc, 0);
	size_t blen = protobuf_c_message_get_packed_size(m);
	size_t extra = 64;
	uint8_t *body = malloc(blen + extra);
	if (!body) {
		return -1;
	}
	protobuf_c_message_pack(m, body);
	if (chance(10)) {
		switch (below(3)) {
		case 0:
			for (unsigned i = 0, n = 1 + (unsigned)below(4); i < n && blen; i++) {
				body[below(blen)] ^= (uint8_t)(1 + below(255));
			}
			break;
		case 1:
			blen = below(blen + 1);
			break;
		default:
			for (size_t i = 0, n = 1 + below(extra); i < n; i++) {
				body[blen++] = (uint8_t)rnd();
			}
		}
	}
	uint64_t want = named_length(m) * (uint64_t)k->payload;
	size_t plen = 0;
	if (k->payload && chance(70)) {
		plen = want <= (2u << 20) ? (size_t)want : (size_t)below(2u << 20);
	} else if (chance(15)) {
		plen = chance(50) ? 4096 * (size_t)below(5) : (size_t)below(9000);
	}
	struct st_frame_hdr h = {.type = type,
				 .req_id = chance(5) ? 1 : req_id,
				 .flags = chance(10) ? ST_FRAME_F_FUA : 0,
				 .hdr_len = (uint32_t)blen,
				 .payload_len = (uint32_t)plen};
	uint8_t *buf = malloc(ST_FRAME_HDR_SIZE + blen + plen);
	if (!buf) {
		free(body);
		return -1;
	}
	st_frame_hdr_encode(&h, buf);
	*expect_close = false;
	if (chance(2)) {
		*expect_close = true;
		switch (below(4)) {
		case 0:
			buf[0] ^= 0x20; /* magic */
			break;
		case 1:
			buf[4] = 9; /* version */
			break;
		case 2:
			buf[ST_FRAME_HDR_SIZE - 1] ^= 1; /* crc */
			break;
		default: {
			/* A length above the caps (blockd takes payloads up to twice its 64 MiB
			 * I/O limit, for compare-and-write), with a valid crc. */
			h.hdr_len = chance(50) ? ST_FRAME_MAX_MSG + 1 + (uint32_t)below(1000) : 0;
			h.payload_len = h.hdr_len ? 0 : 0x80000000u + (uint32_t)below(1u << 30);
			st_frame_hdr_encode(&h, buf);
			blen = plen = 0;
		}
		}
	}
	memcpy(buf + ST_FRAME_HDR_SIZE, body, blen);
	memcpy(buf + ST_FRAME_HDR_SIZE + blen, g_payload + below(4096), plen);
	free(body);
	*out = buf;
	*out_len = ST_FRAME_HDR_SIZE + blen + plen;
	*type_out = type;
	*id_out = h.req_id;
	return 0;
}

/* Read one reply. 1: a well-formed reply, 0: connection closed, -1: timeout, -2: malformed. */
static int read_reply(int fd, struct st_frame_hdr *h)
{
	uint8_t hb[ST_FRAME_HDR_SIZE];
	int rc = recv_all(fd, hb, sizeof(hb));
	if (rc <= 0) {
		return rc;
	}
	const char *why = NULL;
	if (st_frame_hdr_decode(hb, ST_FRAME_MAX_MSG, ST_FRAME_MAX_PAYLOAD, h, &why) < 0) {
		fprintf(stderr, "blockd_wire_fuzz: malformed reply header: %s\n", why ? why : "?");
		return -2;
	}
	if (!(h->type & ST_FRAME_REPLY)) {
		fprintf(stderr, "blockd_wire_fuzz: reply without the reply flag (type 0x%x)\n",
			h->type);
		return -2;
	}
	size_t rest = (size_t)h->hdr_len + h->payload_len;
	uint8_t *sink = malloc(rest ? rest : 1);
	if (!sink) {
		return -2;
	}
	rc = rest ? recv_all(fd, sink, rest) : 1;
	free(sink);
	return rc;
}

/* One burst: 1-8 frames, then every reply. Returns -1 on a failure that ends the run. */
static int burst(uint64_t *next_id)
{
	if (conn_get() < 0) {
		return -1;
	}
	unsigned n = 1 + (unsigned)below(MAX_BURST);
	unsigned sent = 0;
	uint16_t types[MAX_BURST];
	uint64_t ids[MAX_BURST];
	bool answered[MAX_BURST] = {false};
	bool closing = false;
	for (unsigned i = 0; i < n && !closing; i++) {
		uint8_t *buf;
		size_t len;
		uint16_t type;
		if (build_frame((*next_id)++, &buf, &len, &closing, &type, &ids[i]) < 0) {
			fprintf(stderr, "blockd_wire_fuzz: out of memory\n");
			return -1;
		}
		int rc = send_all(g_fd, buf, len);
		if (g_verbose) {
			fprintf(stderr, "sent: type 0x%x id %lu len %zu%s\n", type,
				(unsigned long)ids[i], len, closing ? " damaged" : "");
		}
		free(buf);
		g_st.frames++;
		types[i] = type;
		if (rc < 0) {
			/* blockd closed this connection (an earlier frame of the burst). */
			g_st.closes++;
			conn_drop();
			return 0;
		}
		sent++;
	}
	if (closing) {
		g_st.bad_headers++;
	}
	for (unsigned i = 0; i < sent; i++) {
		struct st_frame_hdr h;
		int rc = read_reply(g_fd, &h);
		if (rc == -2) {
			return -1;
		}
		if (rc == 0) {
			g_st.closes++;
			conn_drop();
			return 0;
		}
		if (rc < 0) {
			/* A request still running (a recovery pull from a made-up node, say): drop
			 * the connection rather than wait; blockd must cope with that too. */
			g_st.unanswered += sent - i;
			for (unsigned j = 0; j < sent && g_verbose; j++) {
				if (!answered[j]) {
					fprintf(stderr, "unanswered: type 0x%x id %lu\n", types[j],
						(unsigned long)ids[j]);
				}
			}
			conn_drop();
			return 0;
		}
		g_st.replies++;
		for (unsigned j = 0; j < sent; j++) {
			if (!answered[j] && ids[j] == h.req_id) {
				answered[j] = true;
				break;
			}
		}
		if (h.status != 0) {
			g_st.errors++;
		}
	}
	if (closing) {
		/* The damaged header must end the connection: nothing more may be read. */
		uint8_t b;
		int rc = recv_all(g_fd, &b, 1);
		if (rc == 1) {
			fprintf(stderr, "blockd_wire_fuzz: data after a damaged header\n");
			return -1;
		}
		if (rc < 0) {
			fprintf(stderr, "blockd_wire_fuzz: connection left open after a damaged "
					"header\n");
			return -1;
		}
		g_st.closes++;
		conn_drop();
	}
	return 0;
}

/* ---- health ---- */

static int call(int fd, uint16_t type, const ProtobufCMessage *msg, const void *payload,
		size_t plen, struct st_frame *reply)
{
	char err[256] = "";
	int rc = st_rpc_call(fd, type, 0, msg, payload, plen, reply, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "blockd_wire_fuzz: health: type 0x%x: %s %s\n", type,
			strerror(rc < 0 ? -rc : rc), err);
	}
	return rc;
}

static int health(bool io)
{
	int fd = st_tcp_connect(g_addr, 5000);
	if (fd < 0) {
		fprintf(stderr, "blockd_wire_fuzz: health: connect %s: %s\n", g_addr,
			strerror(-fd));
		return -1;
	}
	struct st_frame reply;
	Strata__Blockd__SpaceRequest sq = STRATA__BLOCKD__SPACE_REQUEST__INIT;
	int rc = call(fd, STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_SPACE, &sq.base, NULL, 0, &reply);
	if (rc == 0) {
		st_frame_release(&reply);
	}
	if (rc == 0 && io) {
		static uint8_t wbuf[8192] __attribute__((aligned(4096)));
		for (size_t i = 0; i < sizeof(wbuf); i++) {
			wbuf[i] = (uint8_t)(g_st.health * 31 + i * 7);
		}
		Strata__Blockd__IoRequest q = STRATA__BLOCKD__IO_REQUEST__INIT;
		q.family = HEALTH_FAMILY;
		q.layer = HEALTH_LAYER;
		q.object = 1000 + g_st.health % 64;
		q.offset = 4096 * (g_st.health % 256);
		q.length = sizeof(wbuf);
		rc = call(fd, STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE, &q.base, wbuf,
			  sizeof(wbuf), &reply);
		if (rc == 0) {
			st_frame_release(&reply);
			rc = call(fd, STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_READ, &q.base, NULL,
				  0, &reply);
		}
		if (rc == 0) {
			if (reply.hdr.payload_len != sizeof(wbuf) ||
			    memcmp(reply.payload, wbuf, sizeof(wbuf)) != 0) {
				fprintf(stderr, "blockd_wire_fuzz: health: read back differs\n");
				rc = -1;
			}
			st_frame_release(&reply);
		}
	}
	close(fd);
	g_st.health++;
	return rc == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc < 4 || (argc == 5 && strcmp(argv[4], "--no-health") != 0) || argc > 5) {
		fprintf(stderr, "usage: blockd_wire_fuzz ADDR SEED SECONDS [--no-health]\n");
		return 2;
	}
	g_addr = argv[1];
	g_only = getenv("FUZZ_KINDS");
	g_only = g_only && *g_only ? g_only : NULL;
	g_verbose = getenv("FUZZ_VERBOSE") != NULL;
	if (getenv("FUZZ_WAIT_MS")) {
		g_wait_ms = atoi(getenv("FUZZ_WAIT_MS"));
	}
	g_rng = strtoull(argv[2], NULL, 0) * 0x9e3779b97f4a7c15ull + 1;
	double secs = strtod(argv[3], NULL);
	bool io = argc == 4;
	g_arena = malloc(ARENA_BYTES);
	g_payload = malloc((2u << 20) + 4096);
	if (!g_arena || !g_payload) {
		return 2;
	}
	for (size_t i = 0; i < (2u << 20) + 4096; i++) {
		g_payload[i] = (uint8_t)rnd();
	}
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	uint64_t next_id = 2;
	unsigned long since_health = 0;
	int rc = health(io);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		double el = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
		if (rc < 0 || el >= secs) {
			break;
		}
		unsigned long before = g_st.frames;
		rc = burst(&next_id);
		since_health += g_st.frames - before;
		if (rc == 0 && since_health >= HEALTH_EVERY) {
			since_health = 0;
			rc = health(io);
		}
	}
	conn_drop();
	if (rc == 0) {
		rc = health(io);
	}
	printf("blockd_wire_fuzz: %s: %lu frames, %lu replies (%lu errors), %lu connections "
	       "closed (%lu damaged headers), %lu unanswered, %lu health checks\n",
	       rc == 0 ? "ok" : "FAILED", g_st.frames, g_st.replies, g_st.errors, g_st.closes,
	       g_st.bad_headers, g_st.unanswered, g_st.health);
	free(g_arena);
	free(g_payload);
	return rc == 0 ? 0 : 1;
}
