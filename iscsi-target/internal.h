/*
 * strata-iscsi internals. The target is split by protocol phase:
 *
 *   pdu.c       PDU receive state machine (BHS, AHS, digests, data), transmit framing
 *   login.c     text key parsing, login phase, operational/security negotiation, CHAP
 *   session.c   listener, connections and sessions on the reactor, full feature phase:
 *               SCSI command / Data-Out / R2T / Data-In flow, NOP, Text, Logout
 *   scsi_spc.c  CDB validation, errno -> sense mapping, SPC commands (INQUIRY, MODE SENSE...)
 *   scsi_sbc.c  block commands against libstrata (READ/WRITE/UNMAP/COMPARE AND WRITE...)
 *   scsi_pr.c   RESERVE/RELEASE and PERSISTENT RESERVE IN/OUT behind a small store interface
 *   tmf.c       task management functions
 *   target.c    target names <-> volumes, shared logical units, the config file
 *
 * pdu.c and login.c never call libstrata or the reactor: login sees targets and secrets
 * through struct isc_login_ops, so both parsers are unit-tested and fuzzed without a cluster.
 *
 * Threads: everything here runs on the one reactor thread, except libstrata completion
 * callbacks, which run on libstrata's I/O thread and only record the result and
 * st_reactor_post() the continuation back.
 *
 *   isc_server --< isc_conn (one per TCP connection) -- isc_session (MaxConnections=1)
 *                     |                                      |
 *                     +--< isc_task (one per SCSI command)   +-- isc_lu (shared per volume)
 *                                                                  +-- isc_pr (reservations)
 */
#ifndef STRATA_ISCSI_INTERNAL_H
#define STRATA_ISCSI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/uio.h>

#include "common/reactor.h"
#include "strata/strata.h"

/* ---- byte order at the wire boundary ---- */

static inline uint16_t isc_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t isc_get24(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}
static inline uint32_t isc_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t isc_get64(const uint8_t *p)
{
	return (uint64_t)isc_get32(p) << 32 | isc_get32(p + 4);
}
static inline void isc_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void isc_put24(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 16);
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)v;
}
static inline void isc_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void isc_put64(uint8_t *p, uint64_t v)
{
	isc_put32(p, (uint32_t)(v >> 32));
	isc_put32(p + 4, (uint32_t)v);
}
/* Serial number arithmetic (RFC 1982) for CmdSN/StatSN windows. */
static inline bool isc_sn_lt(uint32_t a, uint32_t b)
{
	return a != b && (int32_t)(a - b) < 0;
}

/* ---- wire constants (RFC 7143 section 11) ---- */

#define ISC_BHS_LEN              48
#define ISC_DIGEST_LEN           4
#define ISC_MAX_AHS_LEN          (255 * 4)
#define ISC_LOGIN_MAX_DSL        8192    /* MaxRecvDataSegmentLength during login */
#define ISC_OUR_MAX_RDSL         262144u /* what we declare as MaxRecvDataSegmentLength */
#define ISC_OUR_MAX_BURST        1048576u
#define ISC_OUR_FIRST_BURST      262144u
#define ISC_DEFAULT_PORTAL_GROUP 1

enum isc_opcode {
	ISC_OP_NOP_OUT = 0x00,
	ISC_OP_SCSI_CMD = 0x01,
	ISC_OP_TMF_REQ = 0x02,
	ISC_OP_LOGIN_REQ = 0x03,
	ISC_OP_TEXT_REQ = 0x04,
	ISC_OP_DATA_OUT = 0x05,
	ISC_OP_LOGOUT_REQ = 0x06,
	ISC_OP_SNACK_REQ = 0x10,
	ISC_OP_NOP_IN = 0x20,
	ISC_OP_SCSI_RSP = 0x21,
	ISC_OP_TMF_RSP = 0x22,
	ISC_OP_LOGIN_RSP = 0x23,
	ISC_OP_TEXT_RSP = 0x24,
	ISC_OP_DATA_IN = 0x25,
	ISC_OP_LOGOUT_RSP = 0x26,
	ISC_OP_R2T = 0x31,
	ISC_OP_ASYNC = 0x32,
	ISC_OP_REJECT = 0x3f,
};

#define ISC_BHS_IMMEDIATE 0x40
#define ISC_FLAG_FINAL    0x80
#define ISC_CMD_READ      0x40
#define ISC_CMD_WRITE     0x20
#define ISC_CMD_ATTR_MASK 0x07
#define ISC_DATAIN_ACK    0x40
#define ISC_DATAIN_O      0x04
#define ISC_DATAIN_U      0x02
#define ISC_DATAIN_S      0x01
#define ISC_RSP_O         0x04
#define ISC_RSP_U         0x02
#define ISC_LOGIN_T       0x80
#define ISC_LOGIN_C       0x40
#define ISC_TEXT_C        0x40
#define ISC_RESERVED_TAG  0xffffffffu

/* Reject reasons. */
enum isc_reject {
	ISC_REJECT_DATA_DIGEST = 0x02,
	ISC_REJECT_SNACK = 0x03,
	ISC_REJECT_PROTOCOL = 0x04,
	ISC_REJECT_UNSUPPORTED = 0x05,
	ISC_REJECT_IMM_CMD = 0x06,
	ISC_REJECT_TASK_IN_PROGRESS = 0x07,
	ISC_REJECT_INVALID_DATA_ACK = 0x08,
	ISC_REJECT_INVALID_FIELD = 0x09,
	ISC_REJECT_LONG_OP = 0x0a,
	ISC_REJECT_NEGOTIATION_RESET = 0x0b,
	ISC_REJECT_WAITING_LOGOUT = 0x0c,
	/* Not a wire value: the header digest failed, the connection must be dropped. */
	ISC_REJECT_HEADER_DIGEST = 0x100,
};

/* ---- pdu.c: receive state machine and transmit framing ---- */

enum isc_rx_state {
	ISC_RX_BHS,     /* collecting the 48-byte basic header segment */
	ISC_RX_AHS,     /* additional header segments, TotalAHSLength * 4 bytes */
	ISC_RX_HDIGEST, /* CRC32C over BHS+AHS */
	ISC_RX_DATA,    /* DataSegmentLength bytes */
	ISC_RX_PAD,     /* 0-3 bytes to the next 4-byte boundary */
	ISC_RX_DDIGEST, /* CRC32C over data+pad */
	ISC_RX_DONE,    /* a complete PDU is in rx->pdu; call isc_rx_next() */
	ISC_RX_ERROR,   /* rx->reject says why; the connection is to be ended */
};

struct isc_pdu {
	uint8_t bhs[ISC_BHS_LEN];
	uint8_t opcode; /* enum isc_opcode */
	bool immediate;
	uint32_t ahs_len;
	uint32_t dlen;
	uint32_t itt;
	uint8_t ahs[ISC_MAX_AHS_LEN];
	uint8_t *data; /* dlen bytes, owned by the rx */
};

struct isc_rx {
	enum isc_rx_state state;
	uint32_t got;      /* bytes of the current state's unit received */
	bool hdigest;      /* expect a header digest */
	bool ddigest;      /* expect a data digest */
	uint32_t max_dlen; /* larger DataSegmentLength is a protocol error */
	uint32_t data_cap;
	uint8_t digest[ISC_DIGEST_LEN];
	int reject;       /* enum isc_reject when state == ISC_RX_ERROR */
	bool ddigest_bad; /* DONE, but the data digest failed: reject the PDU */
	struct isc_pdu pdu;
};

/* Initialise rx for a new connection. Returns 0 or -ENOMEM. */
int isc_rx_init(struct isc_rx *rx, uint32_t max_dlen) __attribute__((nonnull));
void isc_rx_free(struct isc_rx *rx) __attribute__((nonnull));
/* Consume up to len bytes; stops early at ISC_RX_DONE or ISC_RX_ERROR. Returns bytes used. */
size_t isc_rx_feed(struct isc_rx *rx, const uint8_t *buf, size_t len) __attribute__((nonnull));
/* After handling a DONE pdu: go back to ISC_RX_BHS. */
void isc_rx_next(struct isc_rx *rx) __attribute__((nonnull));
/* Raise max_dlen (after login); grows the buffer. Returns 0 or -ENOMEM. */
int isc_rx_set_max(struct isc_rx *rx, uint32_t max_dlen) __attribute__((nonnull));
const char *isc_opcode_name(uint8_t op);

/* One PDU to transmit: header (+digest), data by reference (+pad, +digest). */
struct isc_tx {
	TAILQ_ENTRY(isc_tx) link;
	uint8_t hdr[ISC_BHS_LEN + ISC_DIGEST_LEN];
	const uint8_t *data;
	uint32_t dlen;
	uint8_t trailer[3 + ISC_DIGEST_LEN]; /* pad and data digest */
	struct iovec iov[4];
	int iovcnt;
	size_t total, sent;
	void *owned;           /* free()d after sending */
	struct isc_task *task; /* reference dropped after sending */
};
/* Fill in DataSegmentLength, digests and the iovecs; call once before queueing. */
void isc_tx_seal(struct isc_tx *tx, bool hdigest, bool ddigest) __attribute__((nonnull));
/* Digest of the wire value little-endian, as Linux and libiscsi put it. */
void isc_digest_put(uint8_t *p, uint32_t crc) __attribute__((nonnull));
uint32_t isc_digest_get(const uint8_t *p) __attribute__((nonnull));

/* ---- login.c: text keys, negotiation, CHAP ---- */

#define ISC_MAX_KEYS  64
#define ISC_KEY_MAX   63
#define ISC_VALUE_MAX 8192
#define ISC_NAME_MAX  224

struct isc_kv {
	const char *key;
	const char *val;
};

/* Text accumulates "key=value\0" pairs, possibly over several PDUs (C bit). */
struct isc_text {
	char *buf;
	size_t len, cap;
};
/* Append raw bytes. Returns 0 or -ENOMEM/-E2BIG (over 64 KiB). */
int isc_text_append(struct isc_text *t, const void *data, size_t len) __attribute__((nonnull));
/* Append "key=value\0". Returns 0 or -ENOMEM. */
int isc_text_addf(struct isc_text *t, const char *key, const char *fmt, ...)
	__attribute__((nonnull, format(printf, 3, 4)));
void isc_text_free(struct isc_text *t) __attribute__((nonnull));
/*
 * Split t into key/value pairs in place (t->buf is modified). Returns the count, or -EINVAL
 * for a malformed pair (no '=', empty or overlong key, overlong value), -E2BIG over max.
 */
int isc_text_parse(struct isc_text *t, struct isc_kv *kv, size_t max) __attribute__((nonnull));

/* Negotiated operational parameters of one connection/session. */
struct isc_params {
	bool header_digest, data_digest;
	bool initial_r2t, immediate_data;
	bool data_pdu_in_order, data_seq_in_order;
	uint32_t max_xmit_dsl; /* the initiator's MaxRecvDataSegmentLength: our Data-In limit */
	uint32_t max_burst, first_burst;
	uint32_t max_outstanding_r2t;
	uint32_t time2wait, time2retain;
	uint32_t erl;
	uint32_t max_connections;
};
void isc_params_default(struct isc_params *p) __attribute__((nonnull));

enum isc_chap_alg {
	ISC_CHAP_MD5 = 5,
	ISC_CHAP_SHA1 = 6,
	ISC_CHAP_SHA256 = 7,
};

/* Credentials required to log in to a target (empty user: none required). */
struct isc_auth {
	char user[256], secret[256];               /* the initiator proves it knows secret */
	char mutual_user[256], mutual_secret[256]; /* the target proves it (mutual CHAP) */
};

/* What login needs from the rest of the target; implemented by target.c, mocked in tests. */
struct isc_login_ops {
	/* 0 if target_name exists and may be used by initiator; -ENOENT, -EACCES otherwise. */
	int (*target_check)(void *arg, const char *target_name, const char *initiator);
	/* Credentials for target_name (or discovery when NULL). Returns 0. */
	int (*target_auth)(void *arg, const char *target_name, struct isc_auth *auth);
	void *arg;
};

enum isc_login_stage {
	ISC_STAGE_SECURITY = 0,
	ISC_STAGE_OPERATIONAL = 1,
	ISC_STAGE_FFP = 3,
};

enum isc_chap_state {
	ISC_CHAP_NONE,   /* no CHAP under way */
	ISC_CHAP_WANT_A, /* AuthMethod=CHAP agreed, expect CHAP_A */
	ISC_CHAP_WANT_R, /* challenge sent, expect CHAP_N and CHAP_R */
	ISC_CHAP_DONE,   /* the initiator is authenticated */
};

struct isc_login {
	const struct isc_login_ops *ops;
	enum isc_login_stage stage;
	bool first; /* next request is the first of the login */
	bool discovery;
	bool authenticated;
	bool auth_required;
	bool tpgt_sent, mrdsl_sent;
	uint8_t isid[6];
	uint16_t tsih;
	uint32_t itt, cid;
	char initiator[ISC_NAME_MAX];
	char target[ISC_NAME_MAX];
	char initiator_alias[ISC_NAME_MAX];
	struct isc_params params;
	struct isc_auth auth;
	enum isc_chap_state chap;
	int chap_alg;
	uint8_t chap_id;
	uint8_t chap_challenge[32];
	size_t chap_challenge_len;
	struct isc_text in; /* request text accumulated over C-bit PDUs */
};

/* Result of processing one Login Request. */
struct isc_login_result {
	uint8_t status_class, status_detail;
	bool transit; /* T bit in the response */
	uint8_t csg, nsg;
	bool done;    /* login complete: enter full feature phase after sending */
	bool partial; /* the request had C set: answer with an empty response */
};

void isc_login_init(struct isc_login *l, const struct isc_login_ops *ops) __attribute__((nonnull));
void isc_login_free(struct isc_login *l) __attribute__((nonnull));
/*
 * Process one Login Request PDU (BHS + data); fill res and append the response keys to out.
 * Returns 0 (res describes the response, possibly a failure status) or -EPROTO when the
 * PDU is malformed beyond a login status (the connection is dropped).
 */
int isc_login_request(struct isc_login *l, const struct isc_pdu *pdu, struct isc_text *out,
		      struct isc_login_result *res) __attribute__((nonnull));
/*
 * Negotiate one operational key (also used for Text requests in full feature phase).
 * Appends the answer (value, NotUnderstood, Irrelevant or Reject) to out. Returns 0, or
 * -ENOMEM.
 */
int isc_negotiate_key(struct isc_login *l, const char *key, const char *val, struct isc_text *out)
	__attribute__((nonnull));
/* CHAP response H(id || secret || challenge) for alg; returns digest length or -EINVAL. */
int isc_chap_hash(int alg, uint8_t id, const char *secret, const uint8_t *chal, size_t chal_len,
		  uint8_t *out) __attribute__((nonnull));
/* Parse "0x..." hex or "0b..." base64 into out. Returns length or -EINVAL. */
int isc_chap_decode(const char *s, uint8_t *out, size_t max) __attribute__((nonnull));

/* ---- scsi_spc.c: CDB validation, sense, SPC commands ---- */

#define ISC_SENSE(key, asc, ascq) ((uint32_t)(key) << 16 | (uint32_t)(asc) << 8 | (ascq))
#define ISC_SENSE_KEY(s)          ((uint8_t)((s) >> 16))
#define ISC_SENSE_ASC(s)          ((uint8_t)((s) >> 8))
#define ISC_SENSE_ASCQ(s)         ((uint8_t)(s))

enum {
	ISC_SK_NO_SENSE = 0x0,
	ISC_SK_NOT_READY = 0x2,
	ISC_SK_MEDIUM_ERROR = 0x3,
	ISC_SK_HARDWARE_ERROR = 0x4,
	ISC_SK_ILLEGAL_REQUEST = 0x5,
	ISC_SK_UNIT_ATTENTION = 0x6,
	ISC_SK_DATA_PROTECT = 0x7,
	ISC_SK_ABORTED_COMMAND = 0xb,
	ISC_SK_MISCOMPARE = 0xe,
};

#define ISC_SENSE_INVALID_OPCODE          ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x20, 0x00)
#define ISC_SENSE_LBA_OUT_OF_RANGE        ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x21, 0x00)
#define ISC_SENSE_INVALID_FIELD_CDB       ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x24, 0x00)
#define ISC_SENSE_INVALID_FIELD_PARAM     ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x26, 0x00)
#define ISC_SENSE_PARAM_LIST_LENGTH       ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x1a, 0x00)
#define ISC_SENSE_INVALID_FIELD_IU        ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x0e, 0x03)
#define ISC_SENSE_LUN_NOT_SUPPORTED       ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x25, 0x00)
#define ISC_SENSE_WRITE_PROTECTED         ISC_SENSE(ISC_SK_DATA_PROTECT, 0x27, 0x00)
#define ISC_SENSE_MISCOMPARE_VERIFY       ISC_SENSE(ISC_SK_MISCOMPARE, 0x1d, 0x00)
#define ISC_SENSE_RESET_OCCURRED          ISC_SENSE(ISC_SK_UNIT_ATTENTION, 0x29, 0x00)
#define ISC_SENSE_BDR_OCCURRED            ISC_SENSE(ISC_SK_UNIT_ATTENTION, 0x29, 0x03)
#define ISC_SENSE_CAPACITY_CHANGED        ISC_SENSE(ISC_SK_UNIT_ATTENTION, 0x2a, 0x09)
#define ISC_SENSE_RESERVATIONS_PREEMPTED  ISC_SENSE(ISC_SK_UNIT_ATTENTION, 0x2a, 0x03)
#define ISC_SENSE_RESERVATIONS_RELEASED   ISC_SENSE(ISC_SK_UNIT_ATTENTION, 0x2a, 0x04)
#define ISC_SENSE_REGISTRATIONS_PREEMPTED ISC_SENSE(ISC_SK_UNIT_ATTENTION, 0x2a, 0x05)
#define ISC_SENSE_MEDIUM_ERROR            ISC_SENSE(ISC_SK_MEDIUM_ERROR, 0x11, 0x00)
#define ISC_SENSE_INTERNAL_ERROR          ISC_SENSE(ISC_SK_HARDWARE_ERROR, 0x44, 0x00)
#define ISC_SENSE_SPACE_EXHAUSTED         ISC_SENSE(ISC_SK_DATA_PROTECT, 0x27, 0x07)
#define ISC_SENSE_NOT_READY               ISC_SENSE(ISC_SK_NOT_READY, 0x04, 0x00)
#define ISC_SENSE_INSUFFICIENT_RES        ISC_SENSE(ISC_SK_ILLEGAL_REQUEST, 0x55, 0x03)

/* SCSI status. */
enum {
	ISC_STATUS_GOOD = 0x00,
	ISC_STATUS_CHECK_CONDITION = 0x02,
	ISC_STATUS_CONDITION_MET = 0x04,
	ISC_STATUS_BUSY = 0x08,
	ISC_STATUS_RESERVATION_CONFLICT = 0x18,
	ISC_STATUS_TASK_SET_FULL = 0x28,
	ISC_STATUS_TASK_ABORTED = 0x40,
};

enum isc_dir {
	ISC_DIR_NONE,
	ISC_DIR_IN,  /* target -> initiator */
	ISC_DIR_OUT, /* initiator -> target */
};

/* What isc_cdb_validate learned about a command. */
struct isc_cdb {
	uint8_t opcode;
	uint8_t sa; /* service action, where the opcode has one */
	enum isc_dir dir;
	uint32_t xfer_len; /* bytes the CDB asks to move (allocation or parameter length) */
	uint64_t lba;
	uint32_t nblocks;
	bool fua;
	bool dpo;
	bool anchor, unmap, ndob; /* WRITE SAME */
	uint8_t bytchk;           /* VERIFY, WRITE AND VERIFY */
	bool is_rw;               /* a media access command: reservations and UA apply */
	bool writes;              /* modifies the medium */
};

/* Geometry of one logical unit, as the CDB checks need it. */
struct isc_geom {
	uint64_t nblocks;
	uint32_t block_size; /* 512 or 4096; libstrata works in 4096 (see scsi_sbc.c) */
	bool read_only;
	uint32_t max_xfer_blocks;
	uint32_t max_unmap_blocks;
	uint32_t max_ws_blocks;
	uint32_t max_caw_blocks;
};

/*
 * Decode and check a CDB against the geometry: opcode supported, reserved fields and flags,
 * LBA range, transfer length limits, write protection. Returns 0 and fills *out, or a sense
 * value (ISC_SENSE(...)) to report as CHECK CONDITION.
 */
uint32_t isc_cdb_validate(const uint8_t *cdb, size_t cdb_len, const struct isc_geom *g,
			  struct isc_cdb *out) __attribute__((nonnull));
/* The sense for a negative errno from libstrata. */
uint32_t isc_errno_to_sense(int err);
/* Build fixed-format sense data (18 bytes) into buf. Returns its length. */
size_t isc_sense_build(uint8_t *buf, uint32_t sense, bool info_valid, uint64_t info);

/* ---- sessions, tasks, logical units ---- */

struct isc_server;
struct isc_conn;
struct isc_session;
struct isc_pr;

struct isc_lu {
	TAILQ_ENTRY(isc_lu) link;
	char spec[ISC_NAME_MAX]; /* "pool/vol" or "pool/vol@snap" */
	char iqn[ISC_NAME_MAX];
	strata_volume *vol;
	uint64_t volume_id;
	struct isc_geom geom;
	int refs;
	struct isc_pr *pr;
	unsigned ua_generation; /* bumped on LUN reset: sessions compare theirs */
};

enum isc_task_state {
	ISC_TASK_DATA_OUT, /* collecting write data (immediate, unsolicited, R2T) */
	ISC_TASK_EXEC,     /* executing on the backend */
	ISC_TASK_DONE,     /* response queued */
};

struct isc_task {
	TAILQ_ENTRY(isc_task) link;
	struct isc_conn *conn;
	enum isc_task_state state;
	int refs; /* the conn list, backend ops in flight, tx PDUs referencing buf */
	bool aborted;
	uint32_t itt, cmd_sn, edtl;
	uint64_t lun;
	uint8_t flags;
	uint8_t cdb[16];
	struct isc_cdb c;
	/* Data-Out bookkeeping */
	uint32_t out_len; /* bytes expected from the initiator: min(edtl, c.xfer_len) */
	uint32_t out_got; /* bytes received */
	uint32_t r2t_sn;
	uint32_t r2t_off, r2t_len; /* the outstanding R2T, if r2t_len */
	uint32_t ttt;
	uint32_t data_sn;     /* next Data-In DataSN */
	uint32_t out_data_sn; /* next Data-Out DataSN expected in the current sequence */
	/* data buffer: write payload or read result */
	uint8_t *buf;
	size_t buf_cap;
	uint32_t in_len; /* bytes of read data to return */
	/* result */
	uint8_t status;
	uint32_t sense;
	bool sense_info_valid;
	uint64_t sense_info;
	/* backend operation */
	int err;
	int pending;                      /* backend ops still in flight */
	void (*cont)(struct isc_task *t); /* continuation on the reactor thread */
	uint64_t miscompare_off;
	struct strata_extent *ext;
	size_t next;
	uint8_t *aux;  /* second buffer: compare data, unmap list... */
	uint32_t step; /* multi-step commands (WRITE SAME loops, UNMAP descriptors) */
};

/* session.c */
struct isc_server *isc_server_current(void);
/* Queue a finished task's response (status/sense/data). Consumes nothing; task stays alive
 * until its tx PDUs are sent. */
void isc_task_complete(struct isc_task *t) __attribute__((nonnull));
/* Run t->cont(t) on the reactor thread after a libstrata completion. For libstrata cbs. */
void isc_task_backend_cb(void *arg, int err);
/* Account one more backend op in flight (before calling libstrata). */
void isc_task_backend_start(struct isc_task *t) __attribute__((nonnull));
void isc_task_put(struct isc_task *t) __attribute__((nonnull));
/* Check condition helpers. */
void isc_task_fail(struct isc_task *t, uint32_t sense) __attribute__((nonnull));
void isc_task_status(struct isc_task *t, uint8_t status) __attribute__((nonnull));
/* Make room for len bytes of data in t->buf (zeroed). Returns 0 or -ENOMEM. */
int isc_task_buf(struct isc_task *t, size_t len) __attribute__((nonnull));
struct isc_session *isc_task_session(struct isc_task *t) __attribute__((nonnull));
struct isc_lu *isc_task_lu(struct isc_task *t) __attribute__((nonnull));
/* The initiator port name (for PR/ RESERVE): "iqn...,i,0xISID". */
const char *isc_session_port(struct isc_session *s) __attribute__((nonnull));
uint64_t isc_session_id(struct isc_session *s) __attribute__((nonnull));
struct isc_session *isc_conn_session(struct isc_conn *c) __attribute__((nonnull));
struct isc_lu *isc_session_lu(struct isc_session *s) __attribute__((nonnull));
/* Start serving: accept on lfd; portal "IP:PORT" goes into SendTargets. Returns 0. */
int isc_server_start(struct st_reactor *r, int lfd, const char *portal) __attribute__((nonnull));
/* Once the reactor stopped, before strata_disconnect: accept no connection, dispatch no PDU. */
void isc_server_stop(void);
/* Post a unit attention to every session on lu except skip (may be NULL). */
void isc_lu_unit_attention(struct isc_lu *lu, struct isc_session *skip, uint32_t sense);
/* Abort tasks: one ITT, or all on lu (lu reset), or all of a session on lu (abort task set). */
int isc_abort_tasks(struct isc_session *s, struct isc_lu *lu, bool all_sessions, bool by_itt,
		    uint32_t itt);

/* scsi_spc.c: commands that do not touch the medium. Returns true if it handled t. */
bool isc_spc_exec(struct isc_task *t) __attribute__((nonnull));
/* scsi_sbc.c: medium access commands. */
void isc_sbc_exec(struct isc_task *t) __attribute__((nonnull));
void isc_scsi_exec(struct isc_task *t) __attribute__((nonnull));

/* scsi_pr.c */
/* Keep reservations in strata-meta at meta (NULL: $STRATA_META or 127.0.0.1:7700), trusting
 * a cached state for cache_ms (0: revalidate before every command that needs it). Without
 * this call the state stays in this process. Call once at start-up. */
void isc_pr_init(const char *meta, unsigned cache_ms);
/* Start the asynchronous PR watch on r (after isc_pr_init; reactor thread or before run).
 * While it is healthy, cached state is trusted until meta reports a change. Returns 0 or
 * -errno (the watch then retries in the background anyway). */
int isc_pr_watch_start(struct st_reactor *r) __attribute__((nonnull));
/* Stop the watch (reactor not running, before st_reactor_destroy). */
void isc_pr_watch_stop(void);
/* spec "pool/vol[@snap]" names the record in meta; target is the target IQN. */
struct isc_pr *isc_pr_create(uint64_t volume_id, const char *spec, const char *target)
	__attribute__((nonnull));
void isc_pr_destroy(struct isc_pr *pr);
/* 0 if the command may run, else ISC_STATUS_RESERVATION_CONFLICT. */
int isc_pr_check(struct isc_pr *pr, const char *port, const struct isc_cdb *c)
	__attribute__((nonnull));
void isc_pr_in(struct isc_task *t) __attribute__((nonnull));
void isc_pr_out(struct isc_task *t) __attribute__((nonnull));
void isc_reserve(struct isc_task *t, bool reserve) __attribute__((nonnull));
/* A LUN reset drops SPC-2 reservations (not persistent ones). */
void isc_pr_lun_reset(struct isc_pr *pr);
/* An I_T nexus went away: its SPC-2 reservation is released. */
void isc_pr_nexus_gone(struct isc_pr *pr, const char *port);

/* tmf.c: handle a Task Management Function Request PDU. */
void isc_tmf_request(struct isc_conn *c, const struct isc_pdu *pdu) __attribute__((nonnull));
void isc_tmf_response(struct isc_conn *c, uint32_t itt, uint8_t response);

/* target.c: target names, logical units, config */
struct isc_config {
	const char *meta;
	const char *iqn_prefix;
	const char *listen;
	uint32_t block_size; /* logical block size exposed: 512 (default) or 4096 */
	struct isc_auth discovery_auth;
	struct isc_target_conf *targets; /* per-target auth and ACLs */
	size_t ntargets;
	struct isc_auth default_auth;
};
struct isc_target_conf {
	char iqn[ISC_NAME_MAX];
	struct isc_auth auth;
	char (*acl)[ISC_NAME_MAX];
	size_t nacl;
};
/* Parse the config file. Returns 0 or -errno (message logged). */
int isc_config_load(struct isc_config *cfg, const char *path) __attribute__((nonnull));
/* "pool/vol" -> "<prefix>:pool.vol"; "pool/vol@snap" -> "<prefix>:pool.vol.snap". */
int isc_spec_to_iqn(const char *prefix, const char *spec, char *out, size_t len)
	__attribute__((nonnull));
int isc_target_init(struct isc_config *cfg, strata_cluster *cl) __attribute__((nonnull));
/* Open (or share) the logical unit for a target name. Returns 0 or -errno. */
int isc_lu_get(const char *iqn, struct isc_lu **out) __attribute__((nonnull));
void isc_lu_put(struct isc_lu *lu);
/* SendTargets text for "All" or one name: TargetName=... TargetAddress=... */
int isc_send_targets(const char *what, const char *current_target, const char *portal,
		     const char *initiator, struct isc_text *out) __attribute__((nonnull(1, 3, 5)));
extern const struct isc_login_ops isc_target_login_ops;

#endif
