/*
 * Connections and sessions on the reactor, and the full feature phase.
 *
 * One connection is one session (MaxConnections=1, ERL 0). Its life:
 *
 *   accept -> LOGIN (login.c decides, we frame Login Responses) -> FFP -> LOGOUT/EOF -> CLOSED
 *
 * Receive: one recv in flight into rbuf; whatever arrives is fed to the PDU state machine
 * (pdu.c) and each complete PDU is dispatched in order. Transmit: a queue of isc_tx; up to
 * TX_BATCH iovecs of queued PDUs go out in one sendmsg, short sends are resumed.
 *
 * A SCSI write moves through Data-Out collection (immediate data, unsolicited Data-Out up to
 * FirstBurstLength when InitialR2T=No, then one R2T at a time of at most MaxBurstLength)
 * before it executes. A read executes, then its buffer goes out as Data-In PDUs of at most
 * the initiator's MaxRecvDataSegmentLength, the last one carrying the status (phase collapse)
 * unless there is sense data, which needs a SCSI Response.
 *
 * Lifetime: a connection holds a reference for itself, one per I/O in flight and one per
 * task; it is freed when the last goes. A task holds one for the connection list, one per
 * backend op and one per queued tx that points into its buffer.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/net.h"
#include "internal.h"

#define RBUF_SIZE      (256 * 1024)
#define TX_BATCH       64
#define CMD_WINDOW     128
#define DISCOVERY_TSIH 0

enum conn_phase {
	PHASE_LOGIN,
	PHASE_FFP,
	PHASE_CLOSING,
};

struct isc_session {
	struct isc_conn *conn;
	TAILQ_ENTRY(isc_session) link;
	bool discovery;
	uint8_t isid[6];
	uint16_t tsih;
	char initiator[ISC_NAME_MAX];
	char target[ISC_NAME_MAX];
	char port[ISC_NAME_MAX + 32]; /* "iqn,i,0xISID" */
	struct isc_lu *lu;
	uint32_t exp_cmd_sn;
	uint32_t ua[8];
	unsigned nua;
};

struct isc_conn {
	struct isc_server *srv;
	int fd;
	int refs;
	enum conn_phase phase;
	bool close_after_send;
	struct st_io rio, wio;
	uint8_t *rbuf;
	size_t rlen, roff;
	struct isc_rx rx;
	TAILQ_HEAD(, isc_tx) txq;
	bool sending;
	bool kick_posted; /* conn_kick_posted is queued for the end of this reactor turn */
	struct iovec siov[TX_BATCH];
	struct msghdr msg;
	struct isc_login login;
	struct isc_params params;
	struct isc_session sess;
	uint32_t stat_sn;
	uint32_t next_ttt;
	TAILQ_HEAD(, isc_task) tasks;
	struct isc_text text_in;  /* Text Request accumulated over C bits */
	struct isc_text text_out; /* Text Response not yet sent (continuation) */
	size_t text_out_off;
	uint32_t text_ttt;
	char peer[64];
	char portal[64]; /* "IP:PORT" the initiator reached, for SendTargets; "" if unknown */
};

struct isc_server {
	struct st_reactor *r;
	int lfd;
	struct st_io aio;
	const char *portal;
	TAILQ_HEAD(, isc_session) sessions;
	uint16_t next_tsih;
	unsigned nconns;
	size_t live;   /* tasks allocated and not yet freed: gates the reactor's spin */
	bool stopping; /* isc_server_stop() ran: no new connection or PDU is taken */
};

static struct isc_server g_srv;

struct isc_server *isc_server_current(void)
{
	return &g_srv;
}

static void conn_recv(struct isc_conn *c);
static void conn_kick(struct isc_conn *c);
static void conn_close(struct isc_conn *c, const char *why);
static void conn_put(struct isc_conn *c);
static void task_send_r2t(struct isc_task *t);

/* ---- transmit ---- */

static uint32_t max_cmd_sn(struct isc_conn *c)
{
	return c->sess.exp_cmd_sn + CMD_WINDOW - 1;
}

static struct isc_tx *tx_new(struct isc_conn *c, uint8_t opcode)
{
	struct isc_tx *tx = calloc(1, sizeof(*tx));

	if (!tx)
		return NULL;
	tx->hdr[0] = opcode;
	return tx;
}

/* Fill StatSN (advancing it when the PDU carries status), ExpCmdSN and MaxCmdSN. */
static void tx_sns(struct isc_conn *c, struct isc_tx *tx, bool status)
{
	isc_put32(tx->hdr + 24, status ? c->stat_sn++ : c->stat_sn);
	isc_put32(tx->hdr + 28, c->sess.exp_cmd_sn);
	isc_put32(tx->hdr + 32, max_cmd_sn(c));
}

static void conn_kick_posted(void *arg)
{
	struct isc_conn *c = arg;

	c->kick_posted = false;
	if (!g_srv.stopping) /* st_reactor_destroy runs posts: no send may start then */
		conn_kick(c);
	conn_put(c);
}

/*
 * PDUs queued during one reactor turn leave in one SENDMSG. Backend completions arrive in
 * bursts (one recv from blockd carries many replies, each finishing a task from the local
 * queue); sending at the first would carry that one response alone and hold the rest back for
 * the send's completion, a turn later, and the initiator would wake twice. The first PDU of a
 * turn posts the kick instead: the local queue runs it after the turn's other completions,
 * before the next submit, so no extra wait is added.
 */
static void tx_queue(struct isc_conn *c, struct isc_tx *tx)
{
	isc_tx_seal(tx, c->params.header_digest, c->params.data_digest);
	TAILQ_INSERT_TAIL(&c->txq, tx, link);
	if (c->sending || c->kick_posted)
		return;
	if (st_reactor_post(c->srv->r, conn_kick_posted, c) < 0) {
		conn_kick(c); /* out of memory for the post: send what we have now */
		return;
	}
	c->kick_posted = true;
	c->refs++;
}

static void tx_free(struct isc_tx *tx)
{
	if (tx->task)
		isc_task_put(tx->task);
	free(tx->owned);
	free(tx);
}

static void send_done(void *arg, int res)
{
	struct isc_conn *c = arg;
	size_t left = res > 0 ? (size_t)res : 0;

	c->sending = false;
	if (res <= 0 && res != -EAGAIN && res != -EINTR) {
		conn_close(c, res == 0 ? "send returned 0" : strerror(-res));
		conn_put(c);
		return;
	}
	while (left && !TAILQ_EMPTY(&c->txq)) {
		struct isc_tx *tx = TAILQ_FIRST(&c->txq);
		size_t need = tx->total - tx->sent;
		if (left < need) {
			tx->sent += left;
			break;
		}
		left -= need;
		TAILQ_REMOVE(&c->txq, tx, link);
		tx_free(tx);
	}
	if (c->phase != PHASE_CLOSING && TAILQ_EMPTY(&c->txq) && c->close_after_send)
		conn_close(c, "logout");
	conn_kick(c);
	conn_put(c);
}

static void conn_kick(struct isc_conn *c)
{
	struct isc_tx *tx;
	int n = 0;

	if (c->sending || c->phase == PHASE_CLOSING || TAILQ_EMPTY(&c->txq))
		return;
	TAILQ_FOREACH(tx, &c->txq, link)
	{
		size_t skip = tx->sent;
		for (int i = 0; i < tx->iovcnt && n < TX_BATCH; i++) {
			if (skip >= tx->iov[i].iov_len) {
				skip -= tx->iov[i].iov_len;
				continue;
			}
			c->siov[n].iov_base = (uint8_t *)tx->iov[i].iov_base + skip;
			c->siov[n].iov_len = tx->iov[i].iov_len - skip;
			skip = 0;
			n++;
		}
		if (n >= TX_BATCH - 4)
			break;
	}
	memset(&c->msg, 0, sizeof(c->msg));
	c->msg.msg_iov = c->siov;
	c->msg.msg_iovlen = (size_t)n;
	c->sending = true;
	c->refs++;
	st_reactor_sendmsg(c->srv->r, &c->wio, c->fd, &c->msg, send_done, c);
}

static void send_reject(struct isc_conn *c, uint8_t reason, const uint8_t *bhs)
{
	struct isc_tx *tx = tx_new(c, ISC_OP_REJECT);
	uint8_t *copy;

	if (!tx)
		return;
	copy = malloc(ISC_BHS_LEN);
	if (!copy) {
		free(tx);
		return;
	}
	memcpy(copy, bhs, ISC_BHS_LEN);
	tx->hdr[1] = ISC_FLAG_FINAL;
	tx->hdr[2] = reason;
	isc_put32(tx->hdr + 16, ISC_RESERVED_TAG);
	tx_sns(c, tx, true);
	tx->data = tx->owned = copy;
	tx->dlen = ISC_BHS_LEN;
	tx_queue(c, tx);
}

/* ---- tasks ---- */

struct isc_session *isc_task_session(struct isc_task *t)
{
	return &t->conn->sess;
}

struct isc_lu *isc_task_lu(struct isc_task *t)
{
	return t->conn->sess.lu;
}

struct isc_session *isc_conn_session(struct isc_conn *c)
{
	return &c->sess;
}

struct isc_lu *isc_session_lu(struct isc_session *s)
{
	return s->lu;
}

const char *isc_session_port(struct isc_session *s)
{
	return s->port;
}

uint64_t isc_session_id(struct isc_session *s)
{
	return (uint64_t)s->tsih;
}

void isc_task_put(struct isc_task *t)
{
	if (--t->refs > 0)
		return;
	struct isc_conn *c = t->conn;
	free(t->buf);
	free(t->aux);
	free(t->ext);
	free(t);
	g_srv.live--;
	conn_put(c);
}

int isc_task_buf(struct isc_task *t, size_t len)
{
	if (len > t->buf_cap) {
		uint8_t *p = realloc(t->buf, len);
		if (!p)
			return -ENOMEM;
		t->buf = p;
		t->buf_cap = len;
	}
	if (len)
		memset(t->buf, 0, len);
	return 0;
}

void isc_task_fail(struct isc_task *t, uint32_t sense)
{
	t->status = ISC_STATUS_CHECK_CONDITION;
	t->sense = sense;
	t->in_len = 0;
	isc_task_complete(t);
}

void isc_task_status(struct isc_task *t, uint8_t status)
{
	t->status = status;
	t->in_len = 0;
	isc_task_complete(t);
}

void isc_task_backend_start(struct isc_task *t)
{
	t->pending++;
	t->refs++;
}

static void task_backend_done(void *arg)
{
	struct isc_task *t = arg;

	if (--t->pending == 0 && t->cont) {
		void (*cont)(struct isc_task *) = t->cont;
		t->cont = NULL;
		if (t->aborted || t->conn->phase == PHASE_CLOSING) {
			t->state = ISC_TASK_DONE;
		} else {
			cont(t);
		}
	}
	isc_task_put(t);
}

/* libstrata's callback, on the reactor thread it shares: record the first error and finish
 * the task from the reactor's local queue, at the top level of this turn. */
void isc_task_backend_cb(void *arg, int err)
{
	struct isc_task *t = arg;
	int zero = 0;

	if (err)
		__atomic_compare_exchange_n(&t->err, &zero, err, false, __ATOMIC_SEQ_CST,
					    __ATOMIC_SEQ_CST);
	if (st_reactor_post(g_srv.r, task_backend_done, t))
		st_error("st_reactor_post failed: completion lost");
}

static void task_unlink(struct isc_task *t)
{
	if (t->state != ISC_TASK_DONE || t->link.tqe_prev) {
		TAILQ_REMOVE(&t->conn->tasks, t, link);
		t->link.tqe_prev = NULL;
	}
}

/* Queue Data-In PDUs and/or the SCSI Response for a finished task. */
void isc_task_complete(struct isc_task *t)
{
	struct isc_conn *c = t->conn;
	uint32_t send = t->in_len, resid = 0;
	uint8_t rflags = 0;

	if (t->state == ISC_TASK_DONE)
		return;
	t->state = ISC_TASK_DONE;
	if (t->link.tqe_prev)
		task_unlink(t);
	if (t->aborted || c->phase == PHASE_CLOSING) {
		isc_task_put(t);
		return;
	}
	if (t->c.dir == ISC_DIR_OUT || (t->flags & ISC_CMD_WRITE)) {
		uint32_t want = t->c.dir == ISC_DIR_OUT ? t->c.xfer_len : 0;
		if (want < t->edtl) {
			rflags = ISC_RSP_U;
			resid = t->edtl - want;
		} else if (want > t->edtl) {
			rflags = ISC_RSP_O;
			resid = want - t->edtl;
		}
		send = 0;
	} else {
		if (send > t->edtl) {
			rflags = ISC_RSP_O;
			resid = send - t->edtl;
			send = t->edtl;
		} else if (send < t->edtl) {
			rflags = ISC_RSP_U;
			resid = t->edtl - send;
		}
		if (!(t->flags & ISC_CMD_READ))
			send = 0;
	}
	if (t->status != ISC_STATUS_GOOD && t->status != ISC_STATUS_CONDITION_MET) {
		send = 0;
		if (t->sense != ISC_SENSE_INVALID_FIELD_IU) {
			rflags = 0;
			resid = 0;
		}
	}
	bool collapse = send > 0 && t->status == ISC_STATUS_GOOD && !t->sense;
	uint32_t off = 0, burst = 0;
	while (off < send) {
		uint32_t n = send - off;
		if (n > c->params.max_xmit_dsl)
			n = c->params.max_xmit_dsl;
		if (burst + n > c->params.max_burst)
			n = c->params.max_burst - burst;
		struct isc_tx *tx = tx_new(c, ISC_OP_DATA_IN);
		if (!tx)
			break;
		bool last = off + n == send;
		burst += n;
		if (last || burst == c->params.max_burst) {
			tx->hdr[1] |= ISC_FLAG_FINAL;
			burst = 0;
		}
		if (last && collapse) {
			tx->hdr[1] |= ISC_DATAIN_S | rflags;
			tx->hdr[3] = t->status;
			isc_put32(tx->hdr + 44, resid);
		}
		isc_put64(tx->hdr + 8, t->lun);
		isc_put32(tx->hdr + 16, t->itt);
		isc_put32(tx->hdr + 20, ISC_RESERVED_TAG);
		tx_sns(c, tx, last && collapse);
		isc_put32(tx->hdr + 36, t->data_sn++);
		isc_put32(tx->hdr + 40, off);
		tx->data = t->buf + off;
		tx->dlen = n;
		tx->task = t;
		t->refs++;
		tx_queue(c, tx);
		off += n;
	}
	if (!collapse) {
		struct isc_tx *tx = tx_new(c, ISC_OP_SCSI_RSP);
		if (tx) {
			tx->hdr[1] = ISC_FLAG_FINAL | rflags;
			tx->hdr[2] = 0; /* command completed at target */
			tx->hdr[3] = t->status;
			isc_put32(tx->hdr + 16, t->itt);
			tx_sns(c, tx, true);
			isc_put32(tx->hdr + 36, t->data_sn);
			isc_put32(tx->hdr + 44, resid);
			if (t->status == ISC_STATUS_CHECK_CONDITION && t->sense) {
				uint8_t *d = calloc(1, 2 + 32);
				if (d) {
					size_t sl =
						isc_sense_build(d + 2, t->sense,
								t->sense_info_valid, t->sense_info);
					isc_put16(d, (uint16_t)sl);
					tx->data = tx->owned = d;
					tx->dlen = (uint32_t)(2 + sl);
				}
			}
			tx_queue(c, tx);
		}
	}
	isc_task_put(t); /* the conn list's reference */
}

/* Pop a pending unit attention for the session, or 0. */
static uint32_t session_ua_pop(struct isc_session *s)
{
	uint32_t ua;

	if (!s->nua)
		return 0;
	ua = s->ua[0];
	memmove(s->ua, s->ua + 1, (s->nua - 1) * sizeof(s->ua[0]));
	s->nua--;
	return ua;
}

static void session_ua_push(struct isc_session *s, uint32_t sense)
{
	for (unsigned i = 0; i < s->nua; i++)
		if (s->ua[i] == sense)
			return;
	if (s->nua < sizeof(s->ua) / sizeof(s->ua[0]))
		s->ua[s->nua++] = sense;
}

void isc_lu_unit_attention(struct isc_lu *lu, struct isc_session *skip, uint32_t sense)
{
	struct isc_session *s;

	TAILQ_FOREACH(s, &g_srv.sessions, link)
	{
		if (s != skip && s->lu == lu)
			session_ua_push(s, sense);
	}
}

int isc_abort_tasks(struct isc_session *s, struct isc_lu *lu, bool all_sessions, bool by_itt,
		    uint32_t itt)
{
	struct isc_session *o;
	int n = 0;

	TAILQ_FOREACH(o, &g_srv.sessions, link)
	{
		struct isc_task *t, *tmp;
		if (o != s && (!all_sessions || o->lu != lu))
			continue;
		for (t = TAILQ_FIRST(&o->conn->tasks); t; t = tmp) {
			tmp = TAILQ_NEXT(t, link);
			if (by_itt && t->itt != itt)
				continue;
			t->aborted = true;
			n++;
			if (t->pending == 0) {
				/* Not on the backend: nothing will complete it. */
				t->state = ISC_TASK_DONE;
				task_unlink(t);
				isc_task_put(t);
			} else {
				task_unlink(t);
				isc_task_put(t); /* the list's reference */
			}
		}
	}
	return n;
}

/* The CDB is known and its data (if any) is in t->buf: execute. */
static void task_exec(struct isc_task *t)
{
	struct isc_session *s = &t->conn->sess;
	uint8_t op = t->cdb[0];

	t->state = ISC_TASK_EXEC;
	if (t->lun != 0 && op != 0xa0 /* REPORT LUNS */ && op != 0x12 /* INQUIRY */ &&
	    op != 0x03 /* REQUEST SENSE */) {
		isc_task_fail(t, ISC_SENSE_LUN_NOT_SUPPORTED);
		return;
	}
	if (op != 0x12 && op != 0xa0 && op != 0x03 && s->nua) {
		isc_task_fail(t, session_ua_pop(s));
		return;
	}
	isc_scsi_exec(t);
}

/* Is this write's data complete? Otherwise ask for the next burst. */
static void task_data_progress(struct isc_task *t)
{
	if (t->out_got >= t->out_len) {
		task_exec(t);
		return;
	}
	if (t->r2t_len == 0 && t->out_got >= t->r2t_off)
		task_send_r2t(t);
}

static void task_send_r2t(struct isc_task *t)
{
	struct isc_conn *c = t->conn;
	struct isc_tx *tx = tx_new(c, ISC_OP_R2T);
	uint32_t off = t->out_got, len = t->out_len - t->out_got;

	if (!tx)
		return;
	if (len > c->params.max_burst)
		len = c->params.max_burst;
	t->r2t_off = off;
	t->r2t_len = len;
	t->out_data_sn = 0; /* each R2T starts a new Data-Out sequence */
	t->ttt = c->next_ttt++;
	if (t->ttt == ISC_RESERVED_TAG)
		t->ttt = c->next_ttt++;
	tx->hdr[1] = ISC_FLAG_FINAL;
	isc_put64(tx->hdr + 8, t->lun);
	isc_put32(tx->hdr + 16, t->itt);
	isc_put32(tx->hdr + 20, t->ttt);
	tx_sns(c, tx, false);
	isc_put32(tx->hdr + 36, t->r2t_sn++);
	isc_put32(tx->hdr + 40, off);
	isc_put32(tx->hdr + 44, len);
	tx_queue(c, tx);
}

static struct isc_task *task_find(struct isc_conn *c, uint32_t itt)
{
	struct isc_task *t;

	TAILQ_FOREACH(t, &c->tasks, link)
	{
		if (t->itt == itt)
			return t;
	}
	return NULL;
}

static struct isc_geom g_no_lu_geom = {.nblocks = 0, .block_size = 4096};

static int handle_scsi_cmd(struct isc_conn *c, const struct isc_pdu *pdu)
{
	struct isc_session *s = &c->sess;
	const uint8_t *h = pdu->bhs;
	uint32_t cmd_sn = isc_get32(h + 24);
	struct isc_task *t;
	uint32_t sense;

	if (s->discovery) {
		send_reject(c, ISC_REJECT_PROTOCOL, h);
		return -EPROTO;
	}
	if (!pdu->immediate) {
		if (isc_sn_lt(cmd_sn, s->exp_cmd_sn) || isc_sn_lt(max_cmd_sn(c), cmd_sn))
			return 0; /* outside the window: silently ignored (RFC 7143 3.2.2.1) */
		if (cmd_sn == s->exp_cmd_sn)
			s->exp_cmd_sn++;
	}
	if (task_find(c, pdu->itt)) {
		send_reject(c, ISC_REJECT_TASK_IN_PROGRESS, h);
		return 0;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->conn = c;
	c->refs++;
	g_srv.live++;
	t->refs = 1;
	t->itt = pdu->itt;
	t->cmd_sn = cmd_sn;
	t->flags = h[1];
	t->lun = isc_get64(h + 8);
	t->edtl = isc_get32(h + 20);
	memcpy(t->cdb, h + 32, 16);
	t->state = ISC_TASK_DATA_OUT;
	TAILQ_INSERT_TAIL(&c->tasks, t, link);

	sense = isc_cdb_validate(t->cdb, 16, s->lu ? &s->lu->geom : &g_no_lu_geom, &t->c);
	st_debug("%s: itt %#x cdb %02x %02x.. edtl %u flags %#x dlen %u sense %#x", c->peer, t->itt,
		 t->cdb[0], t->cdb[1], t->edtl, t->flags, pdu->dlen, sense);
	if (pdu->dlen > c->params.first_burst || (pdu->dlen && !c->params.immediate_data) ||
	    (pdu->dlen && !(t->flags & ISC_CMD_WRITE)) || pdu->dlen > t->edtl) {
		t->state = ISC_TASK_EXEC;
		isc_task_fail(t, ISC_SENSE(ISC_SK_ABORTED_COMMAND, 0x0c, 0x0d)); /* too much data */
		return 0;
	}
	if (sense) {
		t->state = ISC_TASK_EXEC;
		if (s->nua && t->cdb[0] != 0x12 && t->cdb[0] != 0xa0 && t->cdb[0] != 0x03)
			sense = session_ua_pop(s);
		isc_task_fail(t, sense);
		return 0;
	}
	if (t->c.dir == ISC_DIR_OUT) {
		/* The data we take is what the CDB asks for, bounded by what the initiator will
		 * send (EDTL); a shortfall is reported as overflow. */
		if (!(t->flags & ISC_CMD_WRITE) && t->c.xfer_len) {
			t->state = ISC_TASK_EXEC;
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
			return 0;
		}
		bool exact = t->cdb[0] == 0x89 || t->cdb[0] == 0x41 || t->cdb[0] == 0x93;
		t->out_len = t->c.xfer_len;
		if (exact && t->c.xfer_len != t->edtl) {
			/* COMPARE AND WRITE and WRITE SAME: the Data-Out size is not negotiable. */
			t->state = ISC_TASK_EXEC;
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
			return 0;
		} else if (t->c.xfer_len > t->edtl && t->c.nblocks && t->c.writes) {
			/* Overflow of a WRITE: as FCP-4 says, process the command but transfer
			 * only EDTL; we write the whole blocks it covers. The residual reports
			 * the rest. */
			t->out_len = t->edtl;
			t->c.nblocks = t->edtl / (s->lu ? s->lu->geom.block_size : 512);
		} else if (t->c.xfer_len > t->edtl) {
			t->state = ISC_TASK_EXEC;
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_IU);
			return 0;
		}
		if (isc_task_buf(t, t->edtl > t->c.xfer_len ? t->edtl : t->c.xfer_len)) {
			t->state = ISC_TASK_EXEC;
			isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
			return 0;
		}
		if (pdu->dlen)
			memcpy(t->buf, pdu->data, pdu->dlen);
		t->out_got = pdu->dlen;
		/* Unsolicited data we still expect: with InitialR2T=No, up to FirstBurstLength
		 * in all (immediate + Data-Out) unless the command PDU had F set. */
		uint32_t unsol = pdu->dlen;
		if (!c->params.initial_r2t && !(t->flags & ISC_FLAG_FINAL)) {
			unsol = c->params.first_burst < t->edtl ? c->params.first_burst : t->edtl;
		}
		if (unsol > t->out_len)
			unsol = t->out_len;
		t->r2t_off = unsol; /* first R2T only after the unsolicited part */
		if (t->out_got > t->out_len)
			t->out_got = t->out_len;
		task_data_progress(t);
		return 0;
	}
	if (t->flags & ISC_CMD_WRITE && t->edtl && t->c.dir != ISC_DIR_OUT) {
		/* Write bit with a command that moves no data out: per SAM, just no data. */
	}
	task_exec(t);
	return 0;
}

static int handle_data_out(struct isc_conn *c, const struct isc_pdu *pdu)
{
	const uint8_t *h = pdu->bhs;
	struct isc_task *t = task_find(c, pdu->itt);
	uint32_t ttt = isc_get32(h + 20), off = isc_get32(h + 40);

	if (!t || t->state != ISC_TASK_DATA_OUT)
		return 0; /* the command already failed or was aborted: drop its data */
	if ((uint64_t)off + pdu->dlen > t->edtl) {
		send_reject(c, ISC_REJECT_PROTOCOL, h);
		return -EPROTO;
	}
	if (ttt != ISC_RESERVED_TAG && (ttt != t->ttt || t->r2t_len == 0)) {
		send_reject(c, ISC_REJECT_INVALID_FIELD, h);
		return 0;
	}
	if (isc_get32(h + 36) != t->out_data_sn) {
		/* ERL 0 cannot recover a lost or reordered Data-Out. Failing the command (DATA
		 * PHASE ERROR) keeps the other tasks on this connection alive; the rest of its
		 * data is dropped as for any finished task. */
		t->state = ISC_TASK_EXEC;
		isc_task_fail(t, ISC_SENSE(ISC_SK_ABORTED_COMMAND, 0x4b, 0x00));
		return 0;
	}
	t->out_data_sn++;
	memcpy(t->buf + off, pdu->data, pdu->dlen);
	t->out_got += pdu->dlen; /* bytes past out_len (EDTL underflow) are ignored */
	if (ttt != ISC_RESERVED_TAG && (h[1] & ISC_FLAG_FINAL))
		t->r2t_len = 0;
	else if (ttt == ISC_RESERVED_TAG && (h[1] & ISC_FLAG_FINAL))
		t->r2t_off = t->out_got; /* unsolicited burst ended */
	if (t->out_got >= t->out_len || (h[1] & ISC_FLAG_FINAL))
		task_data_progress(t);
	return 0;
}

static int handle_nop_out(struct isc_conn *c, const struct isc_pdu *pdu)
{
	const uint8_t *h = pdu->bhs;
	struct isc_tx *tx;

	if (!pdu->immediate && !c->sess.discovery) {
		uint32_t cmd_sn = isc_get32(h + 24);
		if (cmd_sn == c->sess.exp_cmd_sn)
			c->sess.exp_cmd_sn++;
	}
	if (pdu->itt == ISC_RESERVED_TAG)
		return 0; /* a reply to our ping, or a ping that wants no answer */
	tx = tx_new(c, ISC_OP_NOP_IN);
	if (!tx)
		return -ENOMEM;
	tx->hdr[1] = ISC_FLAG_FINAL;
	memcpy(tx->hdr + 8, h + 8, 8);
	isc_put32(tx->hdr + 16, pdu->itt);
	isc_put32(tx->hdr + 20, ISC_RESERVED_TAG);
	tx_sns(c, tx, true);
	if (pdu->dlen) {
		uint8_t *d = malloc(pdu->dlen);
		if (!d) {
			free(tx);
			return -ENOMEM;
		}
		memcpy(d, pdu->data, pdu->dlen);
		tx->data = tx->owned = d;
		tx->dlen = pdu->dlen;
	}
	tx_queue(c, tx);
	return 0;
}

/* Send the next piece of c->text_out in a Text Response. */
static void send_text_piece(struct isc_conn *c, uint32_t itt, const uint8_t *lun)
{
	struct isc_tx *tx = tx_new(c, ISC_OP_TEXT_RSP);
	size_t left = c->text_out.len - c->text_out_off, n = left;
	uint8_t *d;

	if (!tx)
		return;
	if (n > c->params.max_xmit_dsl)
		n = c->params.max_xmit_dsl;
	memcpy(tx->hdr + 8, lun, 8);
	isc_put32(tx->hdr + 16, itt);
	if (n < left) {
		tx->hdr[1] = ISC_TEXT_C;
		c->text_ttt = c->next_ttt++;
		isc_put32(tx->hdr + 20, c->text_ttt);
	} else {
		tx->hdr[1] = ISC_FLAG_FINAL;
		isc_put32(tx->hdr + 20, ISC_RESERVED_TAG);
		c->text_ttt = ISC_RESERVED_TAG;
	}
	tx_sns(c, tx, true);
	if (n) {
		d = malloc(n);
		if (d) {
			memcpy(d, c->text_out.buf + c->text_out_off, n);
			tx->data = tx->owned = d;
			tx->dlen = (uint32_t)n;
		}
	}
	c->text_out_off += n;
	tx_queue(c, tx);
}

static int handle_text(struct isc_conn *c, const struct isc_pdu *pdu)
{
	const uint8_t *h = pdu->bhs;
	uint32_t ttt = isc_get32(h + 20);
	struct isc_kv kv[ISC_MAX_KEYS];
	int n;

	if (!pdu->immediate && isc_get32(h + 24) == c->sess.exp_cmd_sn)
		c->sess.exp_cmd_sn++;
	if (ttt != ISC_RESERVED_TAG && ttt == c->text_ttt) {
		send_text_piece(c, pdu->itt, h + 8); /* continue a long response */
		return 0;
	}
	if (isc_text_append(&c->text_in, pdu->data, pdu->dlen)) {
		send_reject(c, ISC_REJECT_PROTOCOL, h);
		return -EPROTO;
	}
	if (h[1] & ISC_TEXT_C) { /* more request text follows: answer empty */
		c->text_out.len = c->text_out_off = 0;
		send_text_piece(c, pdu->itt, h + 8);
		return 0;
	}
	c->text_out.len = 0;
	c->text_out_off = 0;
	n = isc_text_parse(&c->text_in, kv, ISC_MAX_KEYS);
	if (n < 0) {
		c->text_in.len = 0;
		send_reject(c, ISC_REJECT_PROTOCOL, h);
		return 0;
	}
	for (int i = 0; i < n; i++) {
		if (!strcmp(kv[i].key, "SendTargets")) {
			isc_send_targets(kv[i].val, c->sess.discovery ? NULL : c->sess.target,
					 c->portal[0] ? c->portal : c->srv->portal,
					 c->sess.initiator, &c->text_out);
		} else if (!strcmp(kv[i].key, "MaxRecvDataSegmentLength")) {
			isc_negotiate_key(&c->login, kv[i].key, kv[i].val, &c->text_out);
			c->params.max_xmit_dsl = c->login.params.max_xmit_dsl;
		} else {
			isc_text_addf(&c->text_out, kv[i].key, "NotUnderstood");
		}
	}
	c->text_in.len = 0;
	send_text_piece(c, pdu->itt, h + 8);
	return 0;
}

static int handle_logout(struct isc_conn *c, const struct isc_pdu *pdu)
{
	const uint8_t *h = pdu->bhs;
	uint8_t reason = h[1] & 0x7f;
	struct isc_tx *tx = tx_new(c, ISC_OP_LOGOUT_RSP);

	if (!tx)
		return -ENOMEM;
	if (!pdu->immediate && isc_get32(h + 24) == c->sess.exp_cmd_sn)
		c->sess.exp_cmd_sn++;
	tx->hdr[1] = ISC_FLAG_FINAL;
	/* 0 close session, 1 close connection: both end our only connection; 2 (recovery)
	 * is not supported at ERL 0. */
	tx->hdr[2] = reason <= 1 ? 0 : 2;
	isc_put32(tx->hdr + 16, pdu->itt);
	tx_sns(c, tx, true);
	isc_put16(tx->hdr + 40, 0);
	isc_put16(tx->hdr + 42, 0);
	tx_queue(c, tx);
	if (reason <= 1)
		c->close_after_send = true;
	return 0;
}

void isc_tmf_response(struct isc_conn *c, uint32_t itt, uint8_t response)
{
	struct isc_tx *tx = tx_new(c, ISC_OP_TMF_RSP);

	if (!tx)
		return;
	tx->hdr[1] = ISC_FLAG_FINAL;
	tx->hdr[2] = response;
	isc_put32(tx->hdr + 16, itt);
	tx_sns(c, tx, true);
	tx_queue(c, tx);
}

/* ---- login ---- */

static void session_start(struct isc_conn *c)
{
	struct isc_session *s = &c->sess;
	struct isc_login *l = &c->login;

	s->conn = c;
	s->discovery = l->discovery;
	memcpy(s->isid, l->isid, 6);
	snprintf(s->initiator, sizeof(s->initiator), "%s", l->initiator);
	snprintf(s->target, sizeof(s->target), "%s", l->target);
	snprintf(s->port, sizeof(s->port), "%s,i,0x%02x%02x%02x%02x%02x%02x", l->initiator,
		 l->isid[0], l->isid[1], l->isid[2], l->isid[3], l->isid[4], l->isid[5]);
	TAILQ_INSERT_TAIL(&g_srv.sessions, s, link);
}

/* A new session with the same initiator port replaces the old one (session reinstatement). */
static void session_reinstate(struct isc_conn *c)
{
	struct isc_session *s, *tmp;

	for (s = TAILQ_FIRST(&g_srv.sessions); s; s = tmp) {
		tmp = TAILQ_NEXT(s, link);
		if (s->conn != c && !s->discovery && !strcmp(s->port, c->sess.port) &&
		    !strcmp(s->target, c->sess.target))
			conn_close(s->conn, "session reinstatement");
	}
}

static int handle_login(struct isc_conn *c, const struct isc_pdu *pdu)
{
	struct isc_login_result res;
	struct isc_text out = {0};
	struct isc_tx *tx;
	int rc;

	if (pdu->opcode != ISC_OP_LOGIN_REQ) {
		/* Anything but a Login Request before login completes ends the connection. */
		return -EPROTO;
	}
	if (c->login.first)
		c->sess.exp_cmd_sn = isc_get32(pdu->bhs + 24);
	rc = isc_login_request(&c->login, pdu, &out, &res);
	if (rc) {
		isc_text_free(&out);
		return rc;
	}
	tx = tx_new(c, ISC_OP_LOGIN_RSP);
	if (!tx) {
		isc_text_free(&out);
		return -ENOMEM;
	}
	if (res.status_class == 0 && res.done && !c->login.discovery) {
		struct isc_lu *lu = NULL;
		int lrc = isc_lu_get(c->login.target, &lu);
		if (lrc) {
			res.status_class = lrc == -ENOENT ? 2 : 3;
			res.status_detail = lrc == -ENOENT ? 0x03 : 0x01;
			res.done = false;
			res.transit = false;
			out.len = 0;
		} else {
			c->sess.lu = lu;
		}
	}
	tx->hdr[1] = (uint8_t)((res.transit ? ISC_LOGIN_T : 0) | (res.csg << 2) |
			       (res.transit ? res.nsg : 0));
	tx->hdr[2] = 0; /* Version-max */
	tx->hdr[3] = 0; /* Version-active */
	memcpy(tx->hdr + 8, pdu->bhs + 8, 6);
	if (res.done) {
		c->sess.tsih = c->login.discovery ? 1 : ++g_srv.next_tsih;
		if (c->sess.tsih == 0)
			c->sess.tsih = ++g_srv.next_tsih;
	}
	isc_put16(tx->hdr + 14, res.done ? c->sess.tsih : 0);
	isc_put32(tx->hdr + 16, pdu->itt);
	if (c->login.first || res.status_class)
		c->stat_sn = isc_get32(pdu->bhs + 28);
	else if (isc_get32(pdu->bhs + 28) != c->stat_sn)
		c->stat_sn = isc_get32(pdu->bhs + 28);
	tx_sns(c, tx, true);
	tx->hdr[36] = res.status_class;
	tx->hdr[37] = res.status_detail;
	if (out.len) {
		tx->data = (const uint8_t *)out.buf;
		tx->owned = out.buf;
		tx->dlen = (uint32_t)out.len;
	} else {
		isc_text_free(&out);
	}
	tx_queue(c, tx);
	if (res.status_class) {
		st_info("%s: login of %s to %s refused (%u/%u)", c->peer, c->login.initiator,
			c->login.target, res.status_class, res.status_detail);
		c->close_after_send = true;
		return 0;
	}
	if (res.done) {
		c->params = c->login.params;
		if (isc_rx_set_max(&c->rx, ISC_OUR_MAX_RDSL))
			return -ENOMEM;
		c->rx.hdigest = c->params.header_digest;
		c->rx.ddigest = c->params.data_digest;
		c->phase = PHASE_FFP;
		session_start(c);
		if (!c->sess.discovery)
			session_reinstate(c);
		st_info("%s: %s session of %s%s%s (hdigest %d ddigest %d burst %u/%u mrdsl %u)",
			c->peer, c->sess.discovery ? "discovery" : "normal", c->sess.initiator,
			c->sess.discovery ? "" : " to ", c->sess.discovery ? "" : c->sess.target,
			c->params.header_digest, c->params.data_digest, c->params.first_burst,
			c->params.max_burst, c->params.max_xmit_dsl);
	}
	return 0;
}

/* ---- receive and dispatch ---- */

static int dispatch(struct isc_conn *c, const struct isc_pdu *pdu)
{
	if (c->phase == PHASE_LOGIN)
		return handle_login(c, pdu);
	if (c->rx.ddigest_bad) {
		send_reject(c, ISC_REJECT_DATA_DIGEST, pdu->bhs);
		return 0; /* ERL 0: the initiator recovers the command */
	}
	switch (pdu->opcode) {
	case ISC_OP_SCSI_CMD:
		return handle_scsi_cmd(c, pdu);
	case ISC_OP_DATA_OUT:
		return handle_data_out(c, pdu);
	case ISC_OP_NOP_OUT:
		return handle_nop_out(c, pdu);
	case ISC_OP_TEXT_REQ:
		return handle_text(c, pdu);
	case ISC_OP_LOGOUT_REQ:
		return handle_logout(c, pdu);
	case ISC_OP_TMF_REQ:
		if (c->sess.discovery) {
			send_reject(c, ISC_REJECT_PROTOCOL, pdu->bhs);
			return 0;
		}
		if (!pdu->immediate && isc_get32(pdu->bhs + 24) == c->sess.exp_cmd_sn)
			c->sess.exp_cmd_sn++;
		isc_tmf_request(c, pdu);
		return 0;
	case ISC_OP_SNACK_REQ:
		send_reject(c, ISC_REJECT_SNACK, pdu->bhs);
		return 0;
	case ISC_OP_LOGIN_REQ:
		send_reject(c, ISC_REJECT_PROTOCOL, pdu->bhs);
		return -EPROTO;
	default:
		send_reject(c, ISC_REJECT_UNSUPPORTED, pdu->bhs);
		return 0;
	}
}

static void recv_done(void *arg, int res)
{
	struct isc_conn *c = arg;

	if (c->phase == PHASE_CLOSING) {
		conn_put(c);
		return;
	}
	if (g_srv.stopping) {
		/* The reactor stopped and libstrata is going away: a command dispatched now would
		 * reach a cluster that strata_disconnect is freeing or has freed (reads and
		 * writes that arrived while st_reactor_destroy cancelled this recv crashed the
		 * target on SIGTERM under load). Drop the connection instead; the initiator
		 * retries what it was not answered. */
		conn_close(c, "target stopping");
		conn_put(c);
		return;
	}
	if (res <= 0) {
		if (res == -EAGAIN || res == -EINTR) {
			conn_recv(c);
		} else {
			conn_close(c, res == 0 ? "EOF" : strerror(-res));
		}
		conn_put(c);
		return;
	}
	c->rlen = (size_t)res;
	c->roff = 0;
	while (c->roff < c->rlen && c->phase != PHASE_CLOSING) {
		c->roff += isc_rx_feed(&c->rx, c->rbuf + c->roff, c->rlen - c->roff);
		if (c->rx.state == ISC_RX_ERROR) {
			if (c->rx.reject != ISC_REJECT_HEADER_DIGEST)
				send_reject(c, (uint8_t)c->rx.reject, c->rx.pdu.bhs);
			st_warn("%s: malformed PDU (%s, reason %d): closing", c->peer,
				isc_opcode_name(c->rx.pdu.opcode), c->rx.reject);
			c->close_after_send = true;
			if (TAILQ_EMPTY(&c->txq))
				conn_close(c, "malformed PDU");
			break;
		}
		if (c->rx.state == ISC_RX_DONE) {
			int rc = dispatch(c, &c->rx.pdu);
			isc_rx_next(&c->rx);
			if (rc) {
				st_warn("%s: %s: %s: closing", c->peer,
					isc_opcode_name(c->rx.pdu.opcode), strerror(-rc));
				c->close_after_send = true;
				if (TAILQ_EMPTY(&c->txq))
					conn_close(c, "protocol error");
				break;
			}
		}
	}
	if (c->phase != PHASE_CLOSING && !c->close_after_send)
		conn_recv(c);
	conn_put(c);
}

static void conn_recv(struct isc_conn *c)
{
	c->refs++;
	st_reactor_recv(c->srv->r, &c->rio, c->fd, c->rbuf, RBUF_SIZE, recv_done, c);
}

static void conn_close(struct isc_conn *c, const char *why)
{
	struct isc_task *t, *tmp;

	if (c->phase == PHASE_CLOSING)
		return;
	st_debug("%s: closing: %s", c->peer, why);
	c->phase = PHASE_CLOSING;
	shutdown(c->fd, SHUT_RDWR);
	for (t = TAILQ_FIRST(&c->tasks); t; t = tmp) {
		tmp = TAILQ_NEXT(t, link);
		t->aborted = true;
		task_unlink(t);
		if (t->pending == 0)
			t->state = ISC_TASK_DONE;
		isc_task_put(t);
	}
	if (c->sess.link.tqe_prev) {
		TAILQ_REMOVE(&g_srv.sessions, &c->sess, link);
		c->sess.link.tqe_prev = NULL;
		if (c->sess.lu)
			isc_pr_nexus_gone(c->sess.lu->pr, c->sess.port);
	}
	conn_put(c); /* the connection's own reference */
}

static void conn_put(struct isc_conn *c)
{
	struct isc_tx *tx;

	if (--c->refs > 0)
		return;
	while ((tx = TAILQ_FIRST(&c->txq))) {
		TAILQ_REMOVE(&c->txq, tx, link);
		tx_free(tx);
	}
	close(c->fd);
	isc_lu_put(c->sess.lu);
	isc_rx_free(&c->rx);
	isc_login_free(&c->login);
	isc_text_free(&c->text_in);
	isc_text_free(&c->text_out);
	free(c->rbuf);
	g_srv.nconns--;
	free(c);
}

static void accept_done(void *arg, int res);

static void accept_next(struct isc_server *srv)
{
	st_reactor_accept(srv->r, &srv->aio, srv->lfd, accept_done, srv);
}

static void accept_done(void *arg, int res)
{
	struct isc_server *srv = arg;
	struct isc_conn *c;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int one = 1;

	if (srv->stopping) {
		if (res >= 0)
			close(res);
		return; /* not re-armed: the reactor is being torn down */
	}
	if (res < 0) {
		if (res != -ECANCELED)
			accept_next(srv);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c || !(c->rbuf = malloc(RBUF_SIZE)) || isc_rx_init(&c->rx, ISC_LOGIN_MAX_DSL)) {
		if (c)
			free(c->rbuf);
		free(c);
		close(res);
		accept_next(srv);
		return;
	}
	setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->srv = srv;
	c->fd = res;
	c->refs = 1;
	c->phase = PHASE_LOGIN;
	c->next_ttt = 1;
	c->text_ttt = ISC_RESERVED_TAG;
	TAILQ_INIT(&c->txq);
	TAILQ_INIT(&c->tasks);
	isc_login_init(&c->login, &isc_target_login_ops);
	isc_params_default(&c->params);
	c->params.max_xmit_dsl = ISC_LOGIN_MAX_DSL;
	snprintf(c->peer, sizeof(c->peer), "fd %d", res);
	if (!getpeername(res, (struct sockaddr *)&ss, &sl) && ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		uint32_t a = ntohl(sin->sin_addr.s_addr);
		snprintf(c->peer, sizeof(c->peer), "%u.%u.%u.%u:%u", a >> 24, (a >> 16) & 255,
			 (a >> 8) & 255, a & 255, ntohs(sin->sin_port));
	}
	/* The portal is the address this connection reached: right for a target listening on a
	 * wildcard address too, where --listen names no address an initiator could dial. */
	sl = sizeof(ss);
	if (getsockname(res, (struct sockaddr *)&ss, &sl) == 0 &&
	    st_format_sockaddr(&ss, c->portal, sizeof(c->portal)) < 0) {
		c->portal[0] = '\0';
	}
	srv->nconns++;
	conn_recv(c);
	accept_next(srv);
}

/* After st_reactor_run returned and before strata_disconnect: take no new connection or
 * PDU from here on, so that nothing reaches libstrata while it shuts down. The turns that
 * strata_disconnect and st_reactor_destroy still make close each connection as its recv
 * completes. */
void isc_server_stop(void)
{
	g_srv.stopping = true;
}

/* Start accepting on lfd. portal is "IP:PORT" for SendTargets. Returns 0. */
int isc_server_start(struct st_reactor *r, int lfd, const char *portal)
{
	g_srv.r = r;
	st_reactor_set_spin_gate(r, &g_srv.live, ST_REACTOR_SPIN_MAX_LIVE);
	g_srv.lfd = lfd;
	g_srv.portal = portal;
	TAILQ_INIT(&g_srv.sessions);
	accept_next(&g_srv);
	return 0;
}
