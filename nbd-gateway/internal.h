/*
 * strata-nbd internals. The gateway is split by protocol phase:
 *
 *   server.c        listener, accept loop, connection lifecycle and socket I/O on the reactor
 *   handshake.c     option haggling: greeting, option reader state machine, option handlers
 *   transmission.c  request decoder state machine, validator, errno mapping, reply encoders
 *   request.c       executes decoded requests against libstrata, builds replies
 *   export.c        shared volume handles (one strata_volume per export per process)
 *   tls.c           GnuTLS X.509 sessions over memory buffers fed by the reactor
 *
 * handshake.c and transmission.c never call libstrata: they see exports only through
 * struct nbd_hs_ops, so their parsers can be unit-tested and fuzzed without a cluster.
 */
#ifndef STRATA_NBD_INTERNAL_H
#define STRATA_NBD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/uio.h>

#include "common/reactor.h"
#include "strata/strata.h"

/* ---- Wire constants (NetworkBlockDevice doc/proto.md) ---- */

#define NBD_MAGIC          0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC     0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC      0x0003e889045565a9ull
#define NBD_REQUEST_MAGIC  0x25609513u
#define NBD_SIMPLE_MAGIC   0x67446698u
#define NBD_STRUCTED_MAGIC 0x668e33efu

/* Handshake flags (server) and client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Options. */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_PEEK_EXPORT       4
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10

/* Option replies. */
#define NBD_REP_ACK                 1u
#define NBD_REP_SERVER              2u
#define NBD_REP_INFO                3u
#define NBD_REP_META_CONTEXT        4u
#define NBD_REP_ERR(n)              (0x80000000u | (n))
#define NBD_REP_ERR_UNSUP           NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY          NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID         NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM        NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD        NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN         NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN        NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG         NBD_REP_ERR(9)

/* NBD_INFO_* */
#define NBD_INFO_EXPORT      0
#define NBD_INFO_NAME        1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE  3

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_ROTATIONAL        (1u << 4)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_CACHE        (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)

/* Commands and command flags. */
#define NBD_CMD_READ         0
#define NBD_CMD_WRITE        1
#define NBD_CMD_DISC         2
#define NBD_CMD_FLUSH        3
#define NBD_CMD_TRIM         4
#define NBD_CMD_CACHE        5
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7

#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* Structured reply chunks. */
#define NBD_REPLY_FLAG_DONE         (1u << 0)
#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR        32769

/* NBD error values. */
#define NBD_EPERM     1
#define NBD_EIO       5
#define NBD_ENOMEM    12
#define NBD_EINVAL    22
#define NBD_ENOSPC    28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP   95
#define NBD_ESHUTDOWN 108

/* base:allocation flags and our single context id. */
#define NBD_STATE_HOLE         (1u << 0)
#define NBD_STATE_ZERO         (1u << 1)
#define NBD_META_ID_ALLOCATION 1u
#define NBD_META_ALLOCATION    "base:allocation"

/* Limits. */
#define NBD_MAX_NAME      4096u        /* export names and meta context queries */
#define NBD_MAX_OPTION    (64u * 1024) /* larger option payloads close the connection */
#define NBD_MAX_PAYLOAD   (32u << 20)  /* largest READ/WRITE, advertised as max_block */
#define NBD_MIN_BLOCK     4096u        /* libstrata writes whole 4 KiB blocks */
#define NBD_PREF_BLOCK    4096u
#define NBD_EXPORT_ZEROES 124u

/* Wire structs: packed, big-endian on the wire; converted only in transmission.c. */
struct nbd_request_wire {
	uint32_t magic;
	uint16_t flags;
	uint16_t type;
	uint64_t handle;
	uint64_t offset;
	uint32_t length;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_request_wire) == 28, "NBD request header is 28 bytes");

struct nbd_simple_reply_wire {
	uint32_t magic;
	uint32_t error;
	uint64_t handle;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_simple_reply_wire) == 16, "NBD simple reply is 16 bytes");

struct nbd_chunk_wire {
	uint32_t magic;
	uint16_t flags;
	uint16_t type;
	uint64_t handle;
	uint32_t length;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_chunk_wire) == 20, "NBD structured chunk header is 20 bytes");

struct nbd_opt_header_wire {
	uint64_t magic;
	uint32_t option;
	uint32_t length;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_opt_header_wire) == 16, "NBD option header is 16 bytes");

struct nbd_opt_reply_wire {
	uint64_t magic;
	uint32_t option;
	uint32_t type;
	uint32_t length;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_opt_reply_wire) == 20, "NBD option reply header is 20 bytes");

/* A growable byte buffer for handshake replies. */
struct nbd_buf {
	uint8_t *p;
	size_t len, cap;
};

/* buf.c */
int nbd_buf_reserve(struct nbd_buf *b, size_t more) __attribute__((nonnull));
int nbd_buf_put(struct nbd_buf *b, const void *p, size_t n) __attribute__((nonnull(1)));
int nbd_buf_put_be16(struct nbd_buf *b, uint16_t v) __attribute__((nonnull));
int nbd_buf_put_be32(struct nbd_buf *b, uint32_t v) __attribute__((nonnull));
int nbd_buf_put_be64(struct nbd_buf *b, uint64_t v) __attribute__((nonnull));
void nbd_buf_consume(struct nbd_buf *b, size_t n) __attribute__((nonnull));
void nbd_buf_free(struct nbd_buf *b) __attribute__((nonnull));
uint16_t nbd_get_be16(const uint8_t *p) __attribute__((nonnull));
uint32_t nbd_get_be32(const uint8_t *p) __attribute__((nonnull));
uint64_t nbd_get_be64(const uint8_t *p) __attribute__((nonnull));

/* ---- handshake.c ---- */

enum nbd_tls_mode {
	NBD_TLS_OFF = 0,      /* no certificate configured: STARTTLS is unsupported */
	NBD_TLS_OPTIONAL = 1, /* STARTTLS offered, plaintext allowed */
	NBD_TLS_REQUIRE = 2,  /* everything but STARTTLS/ABORT refused until TLS is up */
};

/* What the handshake learns about an export; filled by nbd_hs_ops.lookup. */
struct nbd_export_info {
	uint64_t size;
	bool read_only;
	char description[256];
};

/*
 * The handshake's only view of the world. lookup resolves a name; when bind is true
 * (OPT_GO, OPT_EXPORT_NAME) the export is also attached to the connection for transmission.
 * Both return 0 or a negative errno (-ENOENT unknown export). list returns the export names
 * (malloc'd array of malloc'd strings, freed by the caller with free_list).
 */
struct nbd_hs_ops {
	int (*lookup)(void *arg, const char *name, bool bind, struct nbd_export_info *info);
	int (*list)(void *arg, char ***names, size_t *n);
	void (*free_list)(char **names, size_t n);
};

/* The option reader's states, in the order a connection passes through them. */
enum nbd_hs_state {
	NBD_HS_CLIENT_FLAGS, /* 4 bytes of client flags after our greeting */
	NBD_HS_OPT_HEADER,   /* 16-byte option header */
	NBD_HS_OPT_DATA,     /* option payload */
	NBD_HS_DEAD,         /* protocol violation: stop reading */
};

/* What the caller must do after feeding or handling. */
enum nbd_hs_event {
	NBD_HS_NEED_MORE = 0, /* feed more bytes */
	NBD_HS_OPTION,        /* a complete option is in hs->opt/optlen/data: call nbd_hs_handle */
	NBD_HS_CONTINUE,      /* option answered (replies in out); keep reading options */
	NBD_HS_GO,            /* replies in out; after they are sent, enter transmission */
	NBD_HS_STARTTLS,      /* replies in out; after they are sent, start the TLS handshake */
	NBD_HS_CLOSE,         /* send what is in out (may be nothing), then close */
	NBD_HS_ERROR,         /* protocol violation: close without replying */
};

struct nbd_hs {
	enum nbd_hs_state state;
	uint32_t client_flags;
	enum nbd_tls_mode tls_mode;
	bool tls_active;

	/* Negotiated so far (reset by STARTTLS). */
	bool structured;
	bool meta_allocation;               /* base:allocation selected */
	char meta_export[NBD_MAX_NAME + 1]; /* the export SET_META_CONTEXT named */
	bool block_size_requested; /* the GO that bound the export asked for INFO_BLOCK_SIZE */

	/* Result of GO / EXPORT_NAME. */
	char export_name[NBD_MAX_NAME + 1];
	struct nbd_export_info export;
	uint16_t tflags;

	/* The option being read. */
	uint8_t hdr[16];
	size_t got;
	uint32_t opt, optlen;
	uint8_t *data; /* optlen bytes, malloc'd */
};

void nbd_hs_init(struct nbd_hs *hs, enum nbd_tls_mode tls_mode) __attribute__((nonnull));
void nbd_hs_free(struct nbd_hs *hs) __attribute__((nonnull));
/* The 18-byte greeting the server sends first. Returns 0 or -ENOMEM. */
int nbd_hs_greeting(struct nbd_buf *out) __attribute__((nonnull));
/* Consume bytes; *used gets how many were eaten. Returns NEED_MORE, OPTION or ERROR. */
enum nbd_hs_event nbd_hs_feed(struct nbd_hs *hs, const uint8_t *p, size_t n, size_t *used)
	__attribute__((nonnull(1, 4)));
/* Answer the option read by nbd_hs_feed, appending replies to out. */
enum nbd_hs_event nbd_hs_handle(struct nbd_hs *hs, const struct nbd_hs_ops *ops, void *arg,
				struct nbd_buf *out) __attribute__((nonnull(1, 2, 4)));
/* Transmission flags for an export as this connection negotiated it. */
uint16_t nbd_transmission_flags(const struct nbd_hs *hs, const struct nbd_export_info *info)
	__attribute__((nonnull));
/* Forget options negotiated before STARTTLS, as the spec requires. */
void nbd_hs_reset_after_tls(struct nbd_hs *hs) __attribute__((nonnull));

/* ---- transmission.c ---- */

/* A decoded request header in host byte order. */
struct nbd_request {
	uint16_t flags;
	uint16_t type;
	uint64_t handle;
	uint64_t offset;
	uint32_t length;
};

enum nbd_rx_state {
	NBD_RX_HEADER,  /* reading the 28-byte header */
	NBD_RX_PAYLOAD, /* copying a WRITE payload into rx->dst */
	NBD_RX_DISCARD, /* skipping the payload of a WRITE that was refused */
	NBD_RX_DEAD,    /* protocol violation: stop reading */
};

enum nbd_rx_event {
	NBD_RX_NEED_MORE = 0,
	NBD_RX_GOT_HEADER,  /* rx->req is decoded: validate, then nbd_rx_expect_payload() or
			       nbd_rx_discard_payload() for a WRITE */
	NBD_RX_GOT_REQUEST, /* the request (and its payload, if any) is complete */
	NBD_RX_DISCARDED,   /* a refused WRITE's payload has been skipped */
	NBD_RX_BAD_MAGIC,
	NBD_RX_TOO_BIG, /* a WRITE payload over NBD_MAX_PAYLOAD */
};

struct nbd_rx {
	enum nbd_rx_state state;
	uint8_t hdr[sizeof(struct nbd_request_wire)];
	size_t got;
	struct nbd_request req;
	uint8_t *dst;
	size_t need;
};

/* What the validator needs to know about the connection. */
struct nbd_tx_ctx {
	uint64_t size;
	bool read_only;
	bool structured;
	bool meta_allocation;
	uint32_t min_block; /* alignment of WRITE, TRIM, WRITE_ZEROES (and READ if align_reads) */
	bool align_reads;   /* the client agreed to the block size (INFO_BLOCK_SIZE in GO) */
};

void nbd_rx_init(struct nbd_rx *rx) __attribute__((nonnull));
enum nbd_rx_event nbd_rx_feed(struct nbd_rx *rx, const uint8_t *p, size_t n, size_t *used)
	__attribute__((nonnull(1, 4)));
void nbd_rx_expect_payload(struct nbd_rx *rx, void *dst) __attribute__((nonnull));
void nbd_rx_discard_payload(struct nbd_rx *rx) __attribute__((nonnull));
/* Bytes of payload still wanted, and where they go (for reading straight into the buffer). */
size_t nbd_rx_payload_wanted(const struct nbd_rx *rx, uint8_t **dst) __attribute__((nonnull));
void nbd_rx_payload_advance(struct nbd_rx *rx, size_t n) __attribute__((nonnull));

/* Returns 0 if req may run, or a negative errno to reply with (-EINVAL, -ENOSPC, -EPERM,
 * -EOVERFLOW). */
int nbd_validate_request(const struct nbd_tx_ctx *ctx, const struct nbd_request *req)
	__attribute__((nonnull));
/* Map a negative (or positive) errno to an NBD_E* value. */
uint32_t nbd_errno_to_wire(int err);
const char *nbd_cmd_name(uint16_t type);

/* Encoders: write a header into dst (which has room) and return its size. */
size_t nbd_encode_simple(void *dst, uint64_t handle, uint32_t error) __attribute__((nonnull));
size_t nbd_encode_chunk(void *dst, uint64_t handle, uint16_t flags, uint16_t type, uint32_t len)
	__attribute__((nonnull));

/* ---- server.c: connections ---- */

#define NBD_RBUF_SIZE   (256u * 1024) /* staging buffer for parsed input */
#define NBD_MAX_CHUNKS  32            /* structured chunks per READ reply */
#define NBD_MAX_EXTENTS 256           /* BLOCK_STATUS descriptors per reply */

/* One queued piece of output: iov is advanced in place as it is sent. */
struct nbd_out {
	TAILQ_ENTRY(nbd_out) link;
	struct iovec *iov;
	int iovcnt;
	void (*sent)(struct nbd_out *o); /* fully sent, or dropped because the conn closed */
};

/* A request from decode to reply. Pooled per connection; buf is kept for reuse. */
struct nbd_req {
	TAILQ_ENTRY(nbd_req) link; /* free list */
	struct nbd_conn *conn;
	struct nbd_request req;
	int err;
	int stage; /* TRIM+FUA: 0 trim, 1 flush */
	uint8_t *buf;
	size_t bufcap;
	struct strata_extent *ext; /* NBD_MAX_EXTENTS, allocated on first BLOCK_STATUS */
	size_t next;
	struct nbd_out out;
	struct iovec iov[2 * NBD_MAX_CHUNKS];
	uint8_t hdrs[NBD_MAX_CHUNKS][32];
};

enum nbd_conn_phase {
	NBD_CONN_HANDSHAKE,
	NBD_CONN_STARTTLS,      /* waiting for the STARTTLS ACK to leave in plaintext */
	NBD_CONN_TLS_HANDSHAKE, /* GnuTLS handshake in progress */
	NBD_CONN_TRANSMISSION,
};

struct nbd_conn {
	TAILQ_ENTRY(nbd_conn) link;
	struct nbd_server *srv;
	int fd;
	unsigned id;
	enum nbd_conn_phase phase;
	bool closing;       /* reading stopped; freed once nothing is in flight */
	bool close_drained; /* close once all output has been sent (ABORT, DISC) */

	struct nbd_hs hs;
	struct nbd_rx rx;
	struct nbd_tx_ctx tx;
	struct nbd_export *exp;
	struct nbd_req *cur; /* the WRITE whose payload is being received */

	/* Input: rbuf[rhead, rtail) is unparsed plaintext. */
	uint8_t *rbuf;
	size_t rhead, rtail;
	uint8_t *rawin; /* TLS ciphertext from the socket */
	bool recv_direct;
	struct st_io recv_io;

	/* Output: hsbuf (handshake replies), then outq; sendbuf is what is on the wire. */
	struct nbd_buf hsbuf;
	struct nbd_buf sendbuf;
	size_t sendoff;
	TAILQ_HEAD(, nbd_out) outq;
	struct msghdr msg;
	struct iovec siov[64];
	bool sending_outq;
	bool sending;     /* a send is in flight or its completion is being accounted */
	bool pump_posted; /* conn_pump_posted is queued for the end of this reactor turn */
	struct st_io send_io;

	unsigned holds;     /* callbacks on the stack: the conn may not be freed */
	unsigned executing; /* requests inside libstrata: the conn may not be freed */
	unsigned active;    /* requests not yet released (executing or reply queued) */
	TAILQ_HEAD(, nbd_req) freereqs;
	struct nbd_tls_session *tls;
};

void nbd_conn_queue(struct nbd_conn *c, struct nbd_out *o) __attribute__((nonnull));
void nbd_conn_req_released(struct nbd_conn *c) __attribute__((nonnull));
void nbd_conn_maybe_free(struct nbd_conn *c) __attribute__((nonnull));
void nbd_conn_hold(struct nbd_conn *c) __attribute__((nonnull));
void nbd_conn_unhold(struct nbd_conn *c) __attribute__((nonnull));

/* ---- request.c ---- */
struct nbd_req *nbd_req_get(struct nbd_conn *c) __attribute__((nonnull));
void nbd_req_put(struct nbd_req *r) __attribute__((nonnull));
void nbd_req_free_all(struct nbd_conn *c) __attribute__((nonnull));
/* Make buf hold at least n bytes. Returns 0 or -ENOMEM. */
int nbd_req_buf(struct nbd_req *r, size_t n) __attribute__((nonnull));
/* Run a validated request (not DISC); its reply is queued when it completes. */
void nbd_req_execute(struct nbd_req *r) __attribute__((nonnull));
/* Queue a reply carrying err (negative errno or 0) without running anything. */
void nbd_req_reply_now(struct nbd_req *r, int err) __attribute__((nonnull));

/* ---- export.c ---- */
struct nbd_server;
struct nbd_export;

int nbd_export_open(struct nbd_server *srv, const char *name, struct nbd_export **out)
	__attribute__((nonnull));
void nbd_export_put(struct nbd_export *e);
struct strata_volume *nbd_export_volume(struct nbd_export *e) __attribute__((nonnull));
uint64_t nbd_export_size(struct nbd_export *e) __attribute__((nonnull));
bool nbd_export_read_only(struct nbd_export *e) __attribute__((nonnull));
void nbd_export_flush_all(struct nbd_server *srv) __attribute__((nonnull));

/* ---- tls.c ---- */
struct nbd_tls;
struct nbd_tls_session;

int nbd_tls_create(struct nbd_tls **out, const char *cert, const char *key, const char *ca)
	__attribute__((nonnull(1, 2, 3)));
void nbd_tls_destroy(struct nbd_tls *t);
int nbd_tls_session_new(struct nbd_tls *t, struct nbd_tls_session **out) __attribute__((nonnull));
void nbd_tls_session_free(struct nbd_tls_session *s);
/* Ciphertext in from the socket. */
int nbd_tls_put_cipher(struct nbd_tls_session *s, const void *p, size_t n) __attribute__((nonnull));
/* Ciphertext out to the socket. */
struct nbd_buf *nbd_tls_cipher_out(struct nbd_tls_session *s) __attribute__((nonnull));
/* Drive the handshake: 1 done, 0 needs more input, negative errno on failure. */
int nbd_tls_handshake(struct nbd_tls_session *s) __attribute__((nonnull));
/* Decrypt into p: >0 bytes, 0 needs more ciphertext, -ECONNRESET on close, other -errno. */
long nbd_tls_recv(struct nbd_tls_session *s, void *p, size_t n) __attribute__((nonnull));
/* Encrypt p into the cipher output buffer. Returns 0 or -errno. */
int nbd_tls_send(struct nbd_tls_session *s, const void *p, size_t n) __attribute__((nonnull));

/* ---- server.c ---- */
struct strata_cluster;
struct nbd_conn;

struct nbd_server_config {
	const char *meta;
	const char *listen;
	enum nbd_tls_mode tls_mode;
	struct nbd_tls *tls;
	unsigned max_inflight; /* per connection */
};

struct nbd_server {
	struct st_reactor *r;
	struct strata_cluster *cluster;
	struct nbd_server_config cfg;
	int lfd;
	struct st_io accept_io;
	bool stopping;
	size_t live; /* requests in flight on every connection: gates the reactor's spin */
	TAILQ_HEAD(, nbd_conn) conns;
	LIST_HEAD(, nbd_export) exports; /* open volumes, shared by every connection */
};

int nbd_server_create(struct nbd_server **out, struct st_reactor *r, struct strata_cluster *cluster,
		      const struct nbd_server_config *cfg) __attribute__((nonnull));
void nbd_server_shutdown(struct nbd_server *srv);
int nbd_server_port(struct nbd_server *srv) __attribute__((nonnull));

#endif
