/*
 * The listener and the connection state machine, on one io_uring reactor thread.
 *
 *   accept --> conn: greeting --> HANDSHAKE --GO--> TRANSMISSION --DISC/EOF--> closing --> free
 *                                   |  ^
 *                          STARTTLS |  | TLS handshake done (options renegotiated)
 *                                   v  |
 *                             STARTTLS --ACK sent--> TLS_HANDSHAKE
 *
 * Each connection has at most one recv and one send in flight. Input lands in rbuf and is
 * parsed by the phase's state machine (handshake.c, transmission.c); large WRITE payloads are
 * received straight into the request buffer. Output is hsbuf (handshake replies) then outq
 * (transmission replies, each an iovec list) sent with sendmsg; under TLS both are encrypted
 * into the session's cipher buffer, which is what goes on the wire.
 *
 * Lifetime: a connection is freed only when closing is set, neither st_io is busy, and no
 * request is inside libstrata (executing == 0), because libstrata owns request buffers until
 * its callback. Closing one connection never touches another.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/net.h"
#include "internal.h"

#define NBD_RAWIN_SIZE       (64u * 1024)
#define NBD_DIRECT_MIN       (64u * 1024) /* receive payloads this large straight into place */
#define NBD_DEFAULT_INFLIGHT 128u

static void conn_pump(struct nbd_conn *c);
static void conn_recv_arm(struct nbd_conn *c);
static void conn_process(struct nbd_conn *c);
static void conn_close(struct nbd_conn *c);

/* ---- the handshake's view of exports ---- */

static int hs_lookup(void *arg, const char *name, bool bind, struct nbd_export_info *info)
{
	struct nbd_conn *c = arg;
	struct nbd_export *e;
	int ret = nbd_export_open(c->srv, name, &e);

	if (ret < 0) {
		return ret;
	}
	info->size = nbd_export_size(e);
	info->read_only = nbd_export_read_only(e);
	snprintf(info->description, sizeof(info->description), "Strata volume %s%s", name,
		 info->read_only ? " (read-only)" : "");
	if (bind) {
		nbd_export_put(c->exp);
		c->exp = e;
	} else {
		nbd_export_put(e);
	}
	return 0;
}

static int hs_list(void *arg, char ***names, size_t *n)
{
	struct nbd_conn *c = arg;

	return strata_list_volumes(c->srv->cluster, names, n);
}

static const struct nbd_hs_ops hs_ops = {
	.lookup = hs_lookup,
	.list = hs_list,
	.free_list = strata_free_list,
};

/* ---- output ---- */

static void conn_hold(struct nbd_conn *c);
static void conn_unhold(struct nbd_conn *c);

static void conn_pump_posted(void *arg)
{
	struct nbd_conn *c = arg;

	c->pump_posted = false;
	conn_pump(c);
	conn_unhold(c);
}

/*
 * Replies queued during one reactor turn leave in one sendmsg. Completions come in bursts (one
 * recv from blockd finishes many requests, each posted to the local queue); pumping at the
 * first would send that reply alone and hold the rest back until its send completes, a turn
 * later, and the client would wake twice. The first reply of a turn posts the pump instead:
 * the local queue runs it after the turn's other completions, before the next submit.
 */
void nbd_conn_queue(struct nbd_conn *c, struct nbd_out *o)
{
	if (c->closing) {
		o->sent(o);
		return;
	}
	TAILQ_INSERT_TAIL(&c->outq, o, link);
	if (c->sending || c->pump_posted) {
		return;
	}
	if (st_reactor_post(c->srv->r, conn_pump_posted, c) < 0) {
		conn_pump(c); /* out of memory for the post: send what we have now */
		return;
	}
	c->pump_posted = true;
	conn_hold(c);
}

static bool conn_output_idle(struct nbd_conn *c)
{
	return !c->sending && c->hsbuf.len == 0 && TAILQ_EMPTY(&c->outq) &&
	       (c->tls == NULL || nbd_tls_cipher_out(c->tls)->len == 0);
}

/* Everything queued has left: act on what was waiting for that. */
static void conn_output_drained(struct nbd_conn *c)
{
	if (c->close_drained && c->active == 0) {
		conn_close(c);
		return;
	}
	if (c->phase == NBD_CONN_STARTTLS) {
		int ret = nbd_tls_session_new(c->srv->cfg.tls, &c->tls);

		if (ret < 0) {
			st_warn("conn %u: TLS session: %s", c->id, strerror(-ret));
			conn_close(c);
			return;
		}
		c->phase = NBD_CONN_TLS_HANDSHAKE;
		/* Bytes after the STARTTLS option are already the client's TLS hello. */
		if (c->rtail > c->rhead) {
			(void)nbd_tls_put_cipher(c->tls, c->rbuf + c->rhead, c->rtail - c->rhead);
		}
		c->rhead = c->rtail = 0;
		conn_process(c);
		conn_recv_arm(c);
	}
}

/* Callbacks pin the connection so nothing they call can free it under them. */
static void conn_hold(struct nbd_conn *c)
{
	c->holds++;
}

static void conn_unhold(struct nbd_conn *c)
{
	c->holds--;
	nbd_conn_maybe_free(c);
}

static void send_done_locked(struct nbd_conn *c, int res);

static void send_done(void *arg, int res)
{
	struct nbd_conn *c = arg;

	conn_hold(c);
	send_done_locked(c, res);
	conn_unhold(c);
}

static void send_done_locked(struct nbd_conn *c, int res)
{
	/* Retiring messages runs request releases, which may queue output: keep conn_pump from
	 * starting a send until the accounting below is finished. */
	c->sending = true;

	if (res < 0 && res != -EAGAIN && res != -EINTR) {
		if (!c->closing) {
			st_debug("conn %u: send: %s", c->id, strerror(-res));
		}
		conn_close(c);
		nbd_conn_maybe_free(c);
		return;
	}
	if (res < 0) {
		res = 0;
	}
	if (c->closing) {
		nbd_conn_maybe_free(c);
		return;
	}
	if (c->sending_outq) {
		/* Advance over what went out; retire fully sent messages. */
		size_t n = (size_t)res;
		struct nbd_out *o;

		while (n > 0 && (o = TAILQ_FIRST(&c->outq)) != NULL) {
			while (o->iovcnt > 0 && n >= o->iov[0].iov_len) {
				n -= o->iov[0].iov_len;
				o->iov++;
				o->iovcnt--;
			}
			if (o->iovcnt > 0 && n > 0) {
				o->iov[0].iov_base = (char *)o->iov[0].iov_base + n;
				o->iov[0].iov_len -= n;
				n = 0;
			}
			if (o->iovcnt == 0) {
				TAILQ_REMOVE(&c->outq, o, link);
				o->sent(o);
			}
		}
		/* Zero-length messages at the head are complete too. */
		while ((o = TAILQ_FIRST(&c->outq)) != NULL && o->iovcnt == 0) {
			TAILQ_REMOVE(&c->outq, o, link);
			o->sent(o);
		}
	} else {
		c->sendoff += (size_t)res;
		if (c->sendoff >= c->sendbuf.len) {
			c->sendbuf.len = 0;
			c->sendoff = 0;
		}
	}
	c->sending = false;
	if (c->closing) {
		return;
	}
	conn_pump(c);
}

/* Start a send if none is in flight and anything is queued. */
static void conn_pump(struct nbd_conn *c)
{
	struct nbd_server *srv = c->srv;

	if (c->closing || c->sending) {
		return;
	}
	if (c->sendbuf.len > c->sendoff) {
		c->sending_outq = false;
		c->sending = true;
		st_reactor_send(srv->r, &c->send_io, c->fd, c->sendbuf.p + c->sendoff,
				c->sendbuf.len - c->sendoff, send_done, c);
		return;
	}
	if (c->tls != NULL && c->phase != NBD_CONN_STARTTLS) {
		struct nbd_buf *cipher = nbd_tls_cipher_out(c->tls);
		struct nbd_out *o;
		int ret = 0;

		if (c->phase != NBD_CONN_TLS_HANDSHAKE) {
			if (c->hsbuf.len > 0) {
				ret = nbd_tls_send(c->tls, c->hsbuf.p, c->hsbuf.len);
				c->hsbuf.len = 0;
			}
			while (ret == 0 && (o = TAILQ_FIRST(&c->outq)) != NULL) {
				for (int i = 0; i < o->iovcnt && ret == 0; i++) {
					ret = nbd_tls_send(c->tls, o->iov[i].iov_base,
							   o->iov[i].iov_len);
				}
				TAILQ_REMOVE(&c->outq, o, link);
				o->sent(o);
			}
			if (ret < 0) {
				st_warn("conn %u: TLS send: %s", c->id, strerror(-ret));
				conn_close(c);
				return;
			}
			/* o->sent() may have resumed parsing, which can pump (and start a send)
			 * re-entrantly. */
			if (c->closing || c->sending) {
				return;
			}
		}
		if (cipher->len > 0) {
			/* Swap the cipher buffer out so GnuTLS can keep appending. */
			struct nbd_buf t = c->sendbuf;

			c->sendbuf = *cipher;
			*cipher = t;
			cipher->len = 0;
			c->sendoff = 0;
			c->sending_outq = false;
			c->sending = true;
			st_reactor_send(srv->r, &c->send_io, c->fd, c->sendbuf.p, c->sendbuf.len,
					send_done, c);
			return;
		}
	} else if (c->hsbuf.len > 0) {
		struct nbd_buf t = c->sendbuf;

		c->sendbuf = c->hsbuf;
		c->hsbuf = t;
		c->hsbuf.len = 0;
		c->sendoff = 0;
		c->sending_outq = false;
		c->sending = true;
		st_reactor_send(srv->r, &c->send_io, c->fd, c->sendbuf.p, c->sendbuf.len, send_done,
				c);
		return;
	} else if (!TAILQ_EMPTY(&c->outq)) {
		struct nbd_out *o;
		int n = 0;

		TAILQ_FOREACH(o, &c->outq, link)
		{
			for (int i = 0;
			     i < o->iovcnt && n < (int)(sizeof(c->siov) / sizeof(c->siov[0]));
			     i++) {
				c->siov[n++] = o->iov[i];
			}
			if (n == (int)(sizeof(c->siov) / sizeof(c->siov[0]))) {
				break;
			}
		}
		if (n > 0) {
			memset(&c->msg, 0, sizeof(c->msg));
			c->msg.msg_iov = c->siov;
			c->msg.msg_iovlen = (size_t)n;
			c->sending_outq = true;
			c->sending = true;
			st_reactor_sendmsg(srv->r, &c->send_io, c->fd, &c->msg, send_done, c);
			return;
		}
		/* Only empty messages: retire them. */
		while ((o = TAILQ_FIRST(&c->outq)) != NULL) {
			TAILQ_REMOVE(&c->outq, o, link);
			o->sent(o);
		}
		if (c->closing || c->sending) {
			return;
		}
	}
	if (conn_output_idle(c)) {
		conn_output_drained(c);
	}
}

/* ---- input ---- */

static void conn_enter_transmission(struct nbd_conn *c)
{
	c->phase = NBD_CONN_TRANSMISSION;
	c->tx.size = c->hs.export.size;
	c->tx.read_only = c->hs.export.read_only;
	c->tx.structured = c->hs.structured;
	c->tx.meta_allocation = c->hs.meta_allocation;
	c->tx.min_block = NBD_MIN_BLOCK;
	c->tx.align_reads = c->hs.block_size_requested;
	nbd_rx_init(&c->rx);
	st_info("conn %u: export %s%s%s", c->id, c->hs.export_name,
		c->tx.read_only ? " read-only" : "", c->tx.structured ? " structured" : "");
}

/* One handshake step over buffered input. Returns false to stop processing. */
static bool process_handshake(struct nbd_conn *c)
{
	size_t used;
	enum nbd_hs_event ev;

	if (c->rtail == c->rhead) {
		return false;
	}
	ev = nbd_hs_feed(&c->hs, c->rbuf + c->rhead, c->rtail - c->rhead, &used);
	c->rhead += used;
	switch (ev) {
	case NBD_HS_NEED_MORE:
		return false;
	case NBD_HS_OPTION:
		break;
	default:
		st_info("conn %u: handshake protocol violation, closing", c->id);
		conn_close(c);
		return false;
	}
	ev = nbd_hs_handle(&c->hs, &hs_ops, c, &c->hsbuf);
	switch (ev) {
	case NBD_HS_CONTINUE:
		conn_pump(c);
		return true;
	case NBD_HS_GO:
		conn_enter_transmission(c);
		conn_pump(c);
		return true;
	case NBD_HS_STARTTLS:
		c->phase = NBD_CONN_STARTTLS;
		conn_pump(c);
		return false;
	default:
		c->close_drained = true;
		conn_pump(c);
		return false;
	}
}

static void reply_error_now(struct nbd_conn *c, const struct nbd_request *q, int err)
{
	struct nbd_req *r = nbd_req_get(c);

	if (r == NULL) {
		conn_close(c);
		return;
	}
	r->req = *q;
	nbd_req_reply_now(r, err);
}

/* One transmission step. Returns false to stop processing. */
static bool process_transmission(struct nbd_conn *c)
{
	struct nbd_req *r;
	size_t used;
	enum nbd_rx_event ev;
	int ret;

	if (c->close_drained) {
		return false; /* after DISC nothing more is read */
	}
	if (c->rx.state == NBD_RX_HEADER && c->active >= c->srv->cfg.max_inflight) {
		return false; /* backpressure: resumed by nbd_conn_req_released */
	}
	if (c->rtail == c->rhead) {
		return false;
	}
	ev = nbd_rx_feed(&c->rx, c->rbuf + c->rhead, c->rtail - c->rhead, &used);
	c->rhead += used;
	switch (ev) {
	case NBD_RX_NEED_MORE:
	case NBD_RX_DISCARDED:
		return true;
	case NBD_RX_BAD_MAGIC:
		st_info("conn %u: bad request magic, closing", c->id);
		conn_close(c);
		return false;
	case NBD_RX_TOO_BIG:
		st_info("conn %u: WRITE of %u bytes exceeds %u, closing", c->id, c->rx.req.length,
			NBD_MAX_PAYLOAD);
		conn_close(c);
		return false;
	case NBD_RX_GOT_HEADER:
		/* A WRITE with payload: validate before receiving it. */
		ret = nbd_validate_request(&c->tx, &c->rx.req);
		if (ret < 0) {
			reply_error_now(c, &c->rx.req, ret);
			nbd_rx_discard_payload(&c->rx);
			return true;
		}
		r = nbd_req_get(c);
		if (r == NULL || nbd_req_buf(r, c->rx.req.length) < 0) {
			if (r != NULL) {
				nbd_req_put(r);
			}
			reply_error_now(c, &c->rx.req, -ENOMEM);
			nbd_rx_discard_payload(&c->rx);
			return true;
		}
		r->req = c->rx.req;
		c->cur = r;
		nbd_rx_expect_payload(&c->rx, r->buf);
		return true;
	case NBD_RX_GOT_REQUEST:
		break;
	default:
		return false;
	}
	if (c->cur != NULL) {
		r = c->cur; /* its payload just arrived */
		c->cur = NULL;
		nbd_req_execute(r);
		return true;
	}
	ret = nbd_validate_request(&c->tx, &c->rx.req);
	if (ret == 0 && c->rx.req.type == NBD_CMD_DISC) {
		st_info("conn %u: disconnect requested", c->id);
		c->close_drained = true;
		conn_pump(c);
		return false;
	}
	if (ret < 0) {
		reply_error_now(c, &c->rx.req, ret);
		return true;
	}
	r = nbd_req_get(c);
	if (r == NULL) {
		reply_error_now(c, &c->rx.req, -ENOMEM);
		return true;
	}
	r->req = c->rx.req;
	nbd_req_execute(r);
	return true;
}

/* Move decrypted bytes into rbuf. Returns false if the connection was closed. */
static bool tls_pull(struct nbd_conn *c)
{
	if (c->phase == NBD_CONN_TLS_HANDSHAKE) {
		int ret = nbd_tls_handshake(c->tls);

		if (ret < 0) {
			st_info("conn %u: TLS handshake failed", c->id);
			conn_close(c);
			return false;
		}
		if (ret == 0) {
			conn_pump(c);
			return true;
		}
		st_info("conn %u: TLS established", c->id);
		c->phase = NBD_CONN_HANDSHAKE;
		nbd_hs_reset_after_tls(&c->hs);
		conn_pump(c);
	}
	for (;;) {
		long n;

		if (c->rhead == c->rtail) {
			c->rhead = c->rtail = 0;
		}
		if (c->rtail == NBD_RBUF_SIZE) {
			return true;
		}
		n = nbd_tls_recv(c->tls, c->rbuf + c->rtail, NBD_RBUF_SIZE - c->rtail);
		if (n == 0) {
			return true;
		}
		if (n < 0) {
			if (n != -ECONNRESET) {
				st_info("conn %u: TLS receive: %s", c->id, strerror((int)-n));
			}
			conn_close(c);
			return false;
		}
		c->rtail += (size_t)n;
	}
}

/* Parse as much buffered input as the current phase allows. */
static void conn_process(struct nbd_conn *c)
{
	for (;;) {
		bool more;

		if (c->closing) {
			return;
		}
		if (c->tls != NULL && c->phase != NBD_CONN_STARTTLS) {
			if (!tls_pull(c)) {
				return;
			}
		}
		switch (c->phase) {
		case NBD_CONN_HANDSHAKE:
			more = process_handshake(c);
			break;
		case NBD_CONN_TRANSMISSION:
			more = process_transmission(c);
			break;
		default:
			more = false;
			break;
		}
		if (!more) {
			return;
		}
	}
}

static bool conn_may_read(struct nbd_conn *c)
{
	if (c->closing || c->close_drained || c->recv_io.busy || c->phase == NBD_CONN_STARTTLS) {
		return false;
	}
	if (c->phase == NBD_CONN_TRANSMISSION && c->rx.state == NBD_RX_HEADER &&
	    c->active >= c->srv->cfg.max_inflight) {
		return false;
	}
	return true;
}

static void recv_done_locked(struct nbd_conn *c, int res);

static void recv_done(void *arg, int res)
{
	struct nbd_conn *c = arg;

	conn_hold(c);
	recv_done_locked(c, res);
	conn_unhold(c);
}

static void recv_done_locked(struct nbd_conn *c, int res)
{

	if (c->closing) {
		nbd_conn_maybe_free(c);
		return;
	}
	if (res == -EAGAIN || res == -EINTR) {
		conn_recv_arm(c);
		return;
	}
	if (res <= 0) {
		if (res < 0) {
			st_debug("conn %u: recv: %s", c->id, strerror(-res));
		}
		if (c->phase == NBD_CONN_TRANSMISSION && !c->close_drained) {
			st_info("conn %u: client went away without NBD_CMD_DISC", c->id);
		}
		conn_close(c);
		nbd_conn_maybe_free(c);
		return;
	}
	if (c->recv_direct) {
		uint8_t *dst;

		c->recv_direct = false;
		nbd_rx_payload_advance(&c->rx, (size_t)res);
		if (nbd_rx_payload_wanted(&c->rx, &dst) == 0) {
			/* Let the decoder see the end of the payload, then run the WRITE. */
			struct nbd_req *r = c->cur;
			size_t used;

			(void)nbd_rx_feed(&c->rx, c->rbuf, 0, &used);
			c->cur = NULL;
			nbd_req_execute(r);
		}
	} else if (c->tls != NULL) {
		if (nbd_tls_put_cipher(c->tls, c->rawin, (size_t)res) < 0) {
			conn_close(c);
			nbd_conn_maybe_free(c);
			return;
		}
	} else {
		c->rtail += (size_t)res;
	}
	conn_process(c);
	conn_recv_arm(c);
	if (c->closing) {
		nbd_conn_maybe_free(c);
	}
}

static void conn_recv_arm(struct nbd_conn *c)
{
	struct nbd_server *srv = c->srv;
	uint8_t *dst;
	size_t want;

	if (!conn_may_read(c)) {
		return;
	}
	if (c->tls != NULL) {
		st_reactor_recv(srv->r, &c->recv_io, c->fd, c->rawin, NBD_RAWIN_SIZE, recv_done, c);
		return;
	}
	want = nbd_rx_payload_wanted(&c->rx, &dst);
	if (c->phase == NBD_CONN_TRANSMISSION && c->rhead == c->rtail && want >= NBD_DIRECT_MIN) {
		c->recv_direct = true;
		st_reactor_recv(srv->r, &c->recv_io, c->fd, dst, want, recv_done, c);
		return;
	}
	if (c->rhead == c->rtail) {
		c->rhead = c->rtail = 0;
	} else if (c->rhead > 0 && c->rtail == NBD_RBUF_SIZE) {
		memmove(c->rbuf, c->rbuf + c->rhead, c->rtail - c->rhead);
		c->rtail -= c->rhead;
		c->rhead = 0;
	}
	if (c->rtail == NBD_RBUF_SIZE) {
		return; /* full of unparsed input: parsing is paused, resumed on release */
	}
	st_reactor_recv(srv->r, &c->recv_io, c->fd, c->rbuf + c->rtail, NBD_RBUF_SIZE - c->rtail,
			recv_done, c);
}

/* A request was released: maybe resume reading, or finish a DISC. */
void nbd_conn_req_released(struct nbd_conn *c)
{
	conn_hold(c);
	if (c->closing) {
		/* conn_unhold frees it once the last request is gone */
	} else if (c->close_drained) {
		if (c->active == 0 && conn_output_idle(c)) {
			conn_close(c);
		}
	} else if (c->active + 1 == c->srv->cfg.max_inflight) {
		conn_process(c); /* we had stopped reading at the limit */
		conn_recv_arm(c);
	}
	conn_unhold(c);
}

void nbd_conn_hold(struct nbd_conn *c)
{
	conn_hold(c);
}

void nbd_conn_unhold(struct nbd_conn *c)
{
	conn_unhold(c);
}

/* ---- lifecycle ---- */

static void conn_close(struct nbd_conn *c)
{
	struct nbd_out *o;

	if (c->closing) {
		return;
	}
	c->closing = true;
	/* Wake any recv/send in flight; their callbacks see closing and free us. */
	shutdown(c->fd, SHUT_RDWR);
	while ((o = TAILQ_FIRST(&c->outq)) != NULL) {
		TAILQ_REMOVE(&c->outq, o, link);
		o->sent(o);
	}
	if (c->cur != NULL) {
		struct nbd_req *r = c->cur;

		c->cur = NULL;
		nbd_req_put(r);
	}
	nbd_conn_maybe_free(c);
}

void nbd_conn_maybe_free(struct nbd_conn *c)
{
	struct nbd_server *srv = c->srv;

	if (!c->closing || c->holds > 0 || c->recv_io.busy || c->send_io.busy || c->executing > 0 ||
	    c->active > 0) {
		return;
	}
	TAILQ_REMOVE(&srv->conns, c, link);
	st_info("conn %u: closed", c->id);
	close(c->fd);
	nbd_export_put(c->exp);
	nbd_hs_free(&c->hs);
	nbd_req_free_all(c);
	nbd_tls_session_free(c->tls);
	nbd_buf_free(&c->hsbuf);
	nbd_buf_free(&c->sendbuf);
	free(c->rawin);
	free(c->rbuf);
	free(c);
}

static void conn_start(struct nbd_server *srv, int fd)
{
	static unsigned next_id;
	struct nbd_conn *c;
	int one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	c->rbuf = malloc(NBD_RBUF_SIZE);
	c->rawin = srv->cfg.tls != NULL ? malloc(NBD_RAWIN_SIZE) : NULL;
	if (c->rbuf == NULL || (srv->cfg.tls != NULL && c->rawin == NULL) ||
	    nbd_hs_greeting(&c->hsbuf) < 0) {
		free(c->rbuf);
		free(c->rawin);
		nbd_buf_free(&c->hsbuf);
		free(c);
		close(fd);
		return;
	}
	c->srv = srv;
	c->fd = fd;
	c->id = ++next_id;
	c->phase = NBD_CONN_HANDSHAKE;
	nbd_hs_init(&c->hs, srv->cfg.tls_mode);
	nbd_rx_init(&c->rx);
	TAILQ_INIT(&c->outq);
	TAILQ_INIT(&c->freereqs);
	TAILQ_INSERT_TAIL(&srv->conns, c, link);
	st_debug("conn %u: accepted", c->id);
	conn_pump(c);
	conn_recv_arm(c);
}

static void accept_done(void *arg, int res)
{
	struct nbd_server *srv = arg;

	if (srv->stopping) {
		if (res >= 0) {
			close(res);
		}
		return;
	}
	if (res >= 0) {
		conn_start(srv, res);
	} else if (res != -EAGAIN && res != -EINTR && res != -ECONNABORTED) {
		st_warn("accept: %s", strerror(-res));
	}
	st_reactor_accept(srv->r, &srv->accept_io, srv->lfd, accept_done, srv);
}

/* Returns 0 or a negative errno. */
int nbd_server_create(struct nbd_server **out, struct st_reactor *r, struct strata_cluster *cluster,
		      const struct nbd_server_config *cfg)
{
	struct nbd_server *srv = calloc(1, sizeof(*srv));

	if (srv == NULL) {
		return -ENOMEM;
	}
	srv->r = r;
	srv->cluster = cluster;
	srv->cfg = *cfg;
	if (srv->cfg.max_inflight == 0) {
		srv->cfg.max_inflight = NBD_DEFAULT_INFLIGHT;
	}
	TAILQ_INIT(&srv->conns);
	LIST_INIT(&srv->exports);
	/* A previous instance killed with a pending io_uring accept keeps its socket listening
	 * until the kernel tears its ring down asynchronously: retry briefly on EADDRINUSE so a
	 * restart right after a crash still comes up. */
	for (int tries = 0;; tries++) {
		srv->lfd = st_tcp_listen(cfg->listen, 128);
		if (srv->lfd != -EADDRINUSE || tries == 100) {
			break;
		}
		usleep(100 * 1000);
	}
	if (srv->lfd < 0) {
		int ret = srv->lfd;

		free(srv);
		return ret;
	}
	st_reactor_set_spin_gate(r, &srv->live, ST_REACTOR_SPIN_MAX_LIVE);
	st_reactor_accept(r, &srv->accept_io, srv->lfd, accept_done, srv);
	*out = srv;
	return 0;
}

int nbd_server_port(struct nbd_server *srv)
{
	return st_socket_port(srv->lfd);
}

/* Called after the reactor stopped: flush what was written, drop the rest. */
/*
 * Stops listening and flushes every export. Connections are left as they are and srv stays
 * allocated: they reference it, and the process exits next. The flush turns the reactor
 * (libstrata shares it), so it must not be running.
 */
void nbd_server_shutdown(struct nbd_server *srv)
{
	if (srv == NULL) {
		return;
	}
	srv->stopping = true;
	/* shutdown() takes the socket out of the listening state now, even though the ring's
	 * pending accept still holds a reference to it. */
	shutdown(srv->lfd, SHUT_RDWR);
	close(srv->lfd);
	nbd_export_flush_all(srv);
}
