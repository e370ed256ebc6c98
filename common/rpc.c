/*
 * RPC connections, servers and clients on the reactor, and the blocking st_rpc_call.
 *
 *   struct st_conn
 *     recv_io ---- one recv at a time, into rbuf (64 KiB) or straight into a big payload
 *     rbuf[rpos, rlen) --st_decoder_feed--> dec --READY--> ops->on_frame(conn, frame)
 *     sendq: TAILQ of st_send { hdr[32] | packed msg | payload* } --> one SENDMSG at a time,
 *            gathering up to SEND_IOV iovecs from the head; sent_off = bytes of the head
 *            frame already on the wire (short sends resume there)
 *
 * Lifetime: a conn is open until conn_fail() or st_conn_close(). From then on nothing new is
 * armed, in-flight ops are cancelled (or, for a graceful close, the send queue drains first,
 * bounded by a linger timer), and once `inflight` reaches zero and no callback of this conn is
 * on the stack (`in_cb`), conn_finish() runs on_close and frees the conn. That makes it safe to
 * call st_conn_close() from inside on_frame or from any other callback.
 */
#include "common/rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/net.h"
#include "strata.pb-c.h"

#define RBUF_SIZE          (64u * 1024)
#define DIRECT_RECV_MIN    (16u * 1024) /* payload remainders this big skip rbuf */
#define SEND_IOV           64           /* iovecs gathered into one SENDMSG */
#define SEND_INLINE_MSG    256          /* packed messages this small live in the st_send */
#define SEND_FREELIST_MAX  64
#define LINGER_MS          10000 /* a graceful close waits this long for the send queue */
#define ACCEPT_RETRY_MS    100
#define CLIENT_CONNECT_MS  5000
#define CLIENT_BUCKETS_MIN 256

struct st_send {
	TAILQ_ENTRY(st_send) link;
	uint8_t hdr[ST_FRAME_HDR_SIZE];
	uint8_t *msg; /* inline_msg or malloc'd */
	size_t msg_len;
	const void *payload;
	size_t payload_len;
	void (*done)(void *);
	void *done_arg;
	uint8_t inline_msg[SEND_INLINE_MSG];
};
TAILQ_HEAD(st_send_list, st_send);

struct st_conn {
	struct st_reactor *r;
	int fd;
	const struct st_conn_ops *ops;
	void *arg;
	char peer[64];

	struct st_decoder dec;
	uint8_t *rbuf;
	size_t rpos, rlen;
	struct st_io recv_io;
	bool recv_direct; /* the recv in flight lands in the decoder's payload, not rbuf */

	struct st_send_list sendq;
	struct st_send_list freeq;
	unsigned nfree;
	size_t sent_off;
	bool sending;
	bool flush_posted; /* conn_flush is queued on the reactor (counts in inflight) */
	struct st_io send_io;
	struct msghdr msg;
	struct iovec iov[SEND_IOV];

	struct st_io linger_io;

	unsigned inflight; /* our ops whose callback has not run yet */
	unsigned in_cb;    /* depth of our callbacks on the stack */
	bool closing;      /* no new recvs; no new frames accepted for sending */
	bool failed;       /* drop the send queue rather than drain it */
	int close_err;
};

static void conn_recv_arm(struct st_conn *c);
static void conn_send_arm(struct st_conn *c);

static void send_free(struct st_conn *c, struct st_send *s)
{
	if (s->msg != s->inline_msg) {
		free(s->msg);
	}
	if (s->done != NULL) {
		s->done(s->done_arg);
	}
	if (c->nfree < SEND_FREELIST_MAX) {
		TAILQ_INSERT_HEAD(&c->freeq, s, link);
		c->nfree++;
	} else {
		free(s);
	}
}

static void conn_finish(struct st_conn *c)
{
	struct st_send *s;

	while ((s = TAILQ_FIRST(&c->sendq)) != NULL) {
		TAILQ_REMOVE(&c->sendq, s, link);
		send_free(c, s);
	}
	while ((s = TAILQ_FIRST(&c->freeq)) != NULL) {
		TAILQ_REMOVE(&c->freeq, s, link);
		free(s);
	}
	close(c->fd);
	st_decoder_reset(&c->dec);
	free(c->rbuf);
	if (c->ops->on_close != NULL) {
		c->ops->on_close(c, c->close_err, c->arg);
	}
	free(c);
}

/* Frees the conn once it is closing, idle and not on the stack. Returns true if it did. */
static bool conn_maybe_finish(struct st_conn *c)
{
	if (c->closing && c->inflight == 0 && c->in_cb == 0) {
		conn_finish(c);
		return true;
	}
	return false;
}

/* Abortive close: cancel everything, drop unsent frames, report err (0 for a peer's EOF). */
static void conn_fail(struct st_conn *c, int err)
{
	if (c->failed) {
		return;
	}
	if (!c->closing) {
		c->close_err = err;
	}
	c->closing = true;
	c->failed = true;
	/* shutdown() wakes any op the kernel has parked on the socket; cancel covers the rest. */
	shutdown(c->fd, SHUT_RDWR);
	st_reactor_cancel(c->r, &c->recv_io);
	st_reactor_cancel(c->r, &c->send_io);
	st_reactor_cancel(c->r, &c->linger_io);
}

static void conn_linger_done(void *arg, int res)
{
	struct st_conn *c = arg;

	c->inflight--;
	c->in_cb++;
	if (res == 0 && !c->failed) {
		st_warn("%s: peer did not drain replies within %d ms; dropping them", c->peer,
			LINGER_MS);
		conn_fail(c, -ETIMEDOUT);
	}
	c->in_cb--;
	conn_maybe_finish(c);
}

/* Queue empty and nothing in flight on a gracefully closing conn: we are done sending. */
static void conn_send_drained(struct st_conn *c)
{
	if (c->closing && !c->failed && !c->sending && TAILQ_EMPTY(&c->sendq)) {
		shutdown(c->fd, SHUT_RDWR);
		st_reactor_cancel(c->r, &c->recv_io);
		st_reactor_cancel(c->r, &c->linger_io);
	}
}

/*
 * Frames queued during one reactor turn leave in one SENDMSG: the first frame of a turn posts
 * conn_flush (the local queue runs after the turn's completions, before the next submit)
 * instead of arming a send that would carry it alone and hold the rest back for a turn.
 */
static void conn_flush(void *arg)
{
	struct st_conn *c = arg;

	c->inflight--;
	c->flush_posted = false;
	c->in_cb++;
	if (!c->failed) {
		conn_send_arm(c);
	}
	c->in_cb--;
	conn_maybe_finish(c);
}

static void conn_send_later(struct st_conn *c)
{
	if (c->sending || c->flush_posted || c->failed || TAILQ_EMPTY(&c->sendq)) {
		return;
	}
	if (st_reactor_post(c->r, conn_flush, c) < 0) {
		conn_send_arm(c); /* out of memory for the post: send what we have now */
		return;
	}
	c->flush_posted = true;
	c->inflight++;
}

static void conn_send_done(void *arg, int res)
{
	struct st_conn *c = arg;
	struct st_send *s;
	size_t n;

	/* `sending` stays set while frames are retired: a done() callback that queues another
	 * frame must not start a SENDMSG before sent_off and the queue agree again. */
	c->inflight--;
	c->in_cb++;
	if (res == -EAGAIN || res == -EINTR) {
		res = 0; /* requeue as a zero-length short send */
	} else if (res == 0) {
		res = -EPIPE;
	}
	if (res < 0) {
		if (!c->failed && res != -ECANCELED) {
			st_debug("%s: send: %s", c->peer, strerror(-res));
		}
		c->sending = false;
		conn_fail(c, res);
		goto out;
	}

	/* Retire whole frames, remember how far into the next one we got. */
	n = (size_t)res;
	while (n > 0 && (s = TAILQ_FIRST(&c->sendq)) != NULL) {
		size_t left = ST_FRAME_HDR_SIZE + s->msg_len + s->payload_len - c->sent_off;

		if (n < left) {
			c->sent_off += n;
			break;
		}
		n -= left;
		c->sent_off = 0;
		TAILQ_REMOVE(&c->sendq, s, link);
		send_free(c, s);
	}
	c->sending = false;
	if (!c->failed) {
		conn_send_later(c);
		conn_send_drained(c);
	}
out:
	c->in_cb--;
	conn_maybe_finish(c);
}

static void iov_push(struct st_conn *c, int *cnt, const void *base, size_t len, size_t *skip)
{
	if (*skip >= len) {
		*skip -= len;
		return;
	}
	c->iov[*cnt].iov_base = (uint8_t *)base + *skip;
	c->iov[*cnt].iov_len = len - *skip;
	*skip = 0;
	(*cnt)++;
}

/* Gathers the head of the send queue into one SENDMSG, if none is in flight. */
static void conn_send_arm(struct st_conn *c)
{
	struct st_send *s;
	size_t skip = c->sent_off;
	int cnt = 0;

	if (c->sending || c->failed || TAILQ_EMPTY(&c->sendq)) {
		return;
	}
	TAILQ_FOREACH(s, &c->sendq, link)
	{
		if (cnt + 3 > SEND_IOV) {
			break;
		}
		iov_push(c, &cnt, s->hdr, ST_FRAME_HDR_SIZE, &skip);
		if (s->msg_len > 0) {
			iov_push(c, &cnt, s->msg, s->msg_len, &skip);
		}
		if (s->payload_len > 0) {
			iov_push(c, &cnt, s->payload, s->payload_len, &skip);
		}
	}
	memset(&c->msg, 0, sizeof(c->msg));
	c->msg.msg_iov = c->iov;
	c->msg.msg_iovlen = (size_t)cnt;
	c->sending = true;
	c->inflight++;
	st_reactor_sendmsg(c->r, &c->send_io, c->fd, &c->msg, conn_send_done, c);
}

/* Hands every complete frame in rbuf to on_frame. Returns false if the conn is closing. */
static bool conn_deliver(struct st_conn *c)
{
	struct st_frame f;
	ssize_t n;

	for (;;) {
		if (c->dec.state == ST_DEC_READY) {
			st_decoder_take(&c->dec, &f);
			c->ops->on_frame(c, &f, c->arg);
			if (c->closing) {
				return false;
			}
			continue;
		}
		if (c->rpos == c->rlen) {
			return true;
		}
		n = st_decoder_feed(&c->dec, c->rbuf + c->rpos, c->rlen - c->rpos);
		if (n < 0) {
			st_warn("%s: %s", c->peer, c->dec.why ? c->dec.why : strerror((int)-n));
			conn_fail(c, (int)n);
			return false;
		}
		c->rpos += (size_t)n;
	}
}

static void conn_recv_done(void *arg, int res)
{
	struct st_conn *c = arg;
	bool direct = c->recv_direct;
	int rc;

	c->inflight--;
	c->in_cb++;
	c->rpos = c->rlen = 0;
	if (c->closing) {
		goto out; /* whatever arrived is dropped with the conn */
	}
	if (res == -EAGAIN || res == -EINTR) {
		conn_recv_arm(c);
		goto out;
	}
	if (res <= 0) {
		if (res < 0 && res != -ECONNRESET) {
			st_debug("%s: recv: %s", c->peer, strerror(-res));
		}
		conn_fail(c, res);
		goto out;
	}
	if (direct) {
		rc = st_decoder_advance(&c->dec, (size_t)res);
		if (rc < 0) {
			st_warn("%s: %s", c->peer, c->dec.why ? c->dec.why : strerror(-rc));
			conn_fail(c, rc);
			goto out;
		}
	} else {
		c->rlen = (size_t)res;
	}
	if (conn_deliver(c)) {
		conn_recv_arm(c);
	}
out:
	c->in_cb--;
	conn_maybe_finish(c);
}

/*
 * Arms the one recv. A large payload remainder is received in place (zero copy); everything
 * else goes through rbuf. Only called with rbuf fully consumed.
 */
static void conn_recv_arm(struct st_conn *c)
{
	void *ptr;
	size_t want;

	c->inflight++;
	if (c->dec.state == ST_DEC_PAYLOAD && st_decoder_want(&c->dec, &ptr, &want) == 0 &&
	    want >= DIRECT_RECV_MIN) {
		if (want > INT_MAX) {
			want = INT_MAX;
		}
		c->recv_direct = true;
		st_reactor_recv(c->r, &c->recv_io, c->fd, ptr, want, conn_recv_done, c);
		return;
	}
	c->recv_direct = false;
	c->rpos = c->rlen = 0;
	st_reactor_recv(c->r, &c->recv_io, c->fd, c->rbuf, RBUF_SIZE, conn_recv_done, c);
}

static void format_peer(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN];

	snprintf(buf, len, "fd %d", fd);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
		return;
	}
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)) != NULL) {
			snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
		}
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) != NULL) {
			snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
		}
	} else if (ss.ss_family == AF_UNIX) {
		snprintf(buf, len, "unix");
	}
}

/* Returns the conn, or NULL on ENOMEM (fd is then closed). */
struct st_conn *st_conn_new(struct st_reactor *r, int fd, const struct st_conn_ops *ops, void *arg,
			    uint32_t max_payload)
{
	struct st_conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (c == NULL) {
		goto err_close;
	}
	c->rbuf = malloc(RBUF_SIZE);
	if (c->rbuf == NULL) {
		goto err_free;
	}
	c->r = r;
	c->fd = fd;
	c->ops = ops;
	c->arg = arg;
	TAILQ_INIT(&c->sendq);
	TAILQ_INIT(&c->freeq);
	st_decoder_init(&c->dec, 0, max_payload);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	format_peer(fd, c->peer, sizeof(c->peer));
	conn_recv_arm(c);
	return c;

err_free:
	free(c);
err_close:
	close(fd);
	return NULL;
}

/* Returns 0, or -ENOTCONN if the conn is closing, -ENOMEM. */
/* One of msg (packed here) or raw/raw_len (already packed) supplies the message part. */
static int conn_send(struct st_conn *c, uint16_t type, uint64_t req_id, int32_t status,
		     uint8_t flags, const ProtobufCMessage *msg, const void *raw, size_t raw_len,
		     const void *payload, size_t payload_len, void (*done)(void *), void *done_arg)
{
	struct st_frame_hdr h;
	struct st_send *s;
	size_t mlen;

	if (c->closing) {
		return -ENOTCONN;
	}
	mlen = msg != NULL ? protobuf_c_message_get_packed_size(msg) : raw_len;
	if (mlen > UINT32_MAX || payload_len > UINT32_MAX) {
		return -EMSGSIZE;
	}
	s = TAILQ_FIRST(&c->freeq);
	if (s != NULL) {
		TAILQ_REMOVE(&c->freeq, s, link);
		c->nfree--;
	} else {
		s = malloc(sizeof(*s));
		if (s == NULL) {
			return -ENOMEM;
		}
	}
	s->msg = s->inline_msg;
	if (mlen > sizeof(s->inline_msg)) {
		s->msg = malloc(mlen);
		if (s->msg == NULL) {
			s->msg = s->inline_msg;
			s->done = NULL;
			send_free(c, s);
			return -ENOMEM;
		}
	}
	if (mlen > 0 && msg != NULL) {
		protobuf_c_message_pack(msg, s->msg);
	} else if (mlen > 0 && raw != NULL) {
		memcpy(s->msg, raw, mlen);
	}
	s->msg_len = mlen;
	s->payload = payload;
	s->payload_len = payload_len;
	s->done = done;
	s->done_arg = done_arg;

	memset(&h, 0, sizeof(h));
	h.magic = ST_FRAME_MAGIC;
	h.version = ST_FRAME_VERSION;
	h.flags = flags;
	h.type = type;
	h.req_id = req_id;
	h.status = status;
	h.hdr_len = (uint32_t)mlen;
	h.payload_len = (uint32_t)payload_len;
	st_frame_hdr_encode(&h, s->hdr);

	TAILQ_INSERT_TAIL(&c->sendq, s, link);
	conn_send_later(c);
	return 0;
}

int st_conn_send(struct st_conn *c, uint16_t type, uint64_t req_id, int32_t status, uint8_t flags,
		 const ProtobufCMessage *msg, const void *payload, size_t payload_len,
		 void (*done)(void *), void *done_arg)
{
	return conn_send(c, type, req_id, status, flags, msg, NULL, 0, payload, payload_len, done,
			 done_arg);
}

int st_conn_send_packed(struct st_conn *c, uint16_t type, uint64_t req_id, int32_t status,
			uint8_t flags, const void *msg, size_t msg_len, const void *payload,
			size_t payload_len, void (*done)(void *), void *done_arg)
{
	return conn_send(c, type, req_id, status, flags, NULL, msg, msg_len, payload, payload_len,
			 done, done_arg);
}

/* Returns 0 or -errno as st_conn_send. */
int st_conn_send_error(struct st_conn *c, uint16_t req_type, uint64_t req_id, int32_t status,
		       const char *fmt, ...)
{
	Strata__ErrorReply er = STRATA__ERROR_REPLY__INIT;
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	er.message = text;
	return st_conn_send(c, (uint16_t)(req_type | ST_FRAME_REPLY), req_id, status, 0, &er.base,
			    NULL, 0, NULL, NULL);
}

void st_conn_close(struct st_conn *c)
{
	if (c->closing) {
		return;
	}
	c->closing = true;
	c->close_err = 0;
	if (c->sending || !TAILQ_EMPTY(&c->sendq)) {
		/* Let the replies already queued reach the peer, but not forever. */
		c->inflight++;
		st_reactor_timer(c->r, &c->linger_io, LINGER_MS, conn_linger_done, c);
		st_reactor_cancel(c->r, &c->recv_io);
	} else {
		conn_send_drained(c);
	}
	conn_maybe_finish(c);
}

const char *st_conn_peer(const struct st_conn *c)
{
	return c->peer;
}

void st_conn_set_arg(struct st_conn *c, void *arg)
{
	c->arg = arg;
}

/* ---------------------------------------------------------------------------------------- */
/* Server: an accept loop that survives EMFILE and friends by backing off on a timer.        */

struct st_listener {
	struct st_server *s;
	int fd;                 /* -1: not listening */
	struct st_io accept_io; /* the accept, or the retry timer after an error */
	bool failing;           /* in a streak of accept errors: warn once, not every retry */
};

/* The TCP listener, and its same-host Unix twin (st_local_listen) when the address has one. */
struct st_server {
	struct st_reactor *r;
	struct st_listener tcp, local, alias; /* alias: the twin of an advertised address */
	int port;
	const struct st_conn_ops *ops;
	void *arg;
	uint32_t max_payload;
	bool stopping;
	int live; /* listeners whose accept (or timer) is still armed */
};

static void listener_arm(struct st_listener *l);

/* The listener's last op has ended: close it, and free the server after its last one. */
static void listener_end(struct st_listener *l)
{
	struct st_server *s = l->s;

	close(l->fd);
	l->fd = -1;
	if (--s->live == 0) {
		free(s);
	}
}

static void listener_retry_done(void *arg, int res)
{
	struct st_listener *l = arg;

	if (l->s->stopping || res == -ECANCELED) {
		listener_end(l);
		return;
	}
	listener_arm(l);
}

static void listener_accept_done(void *arg, int res)
{
	struct st_listener *l = arg;
	struct st_server *s = l->s;

	if (s->stopping) {
		if (res >= 0) {
			close(res);
		}
		listener_end(l);
		return;
	}
	if (res >= 0) {
		if (l->failing) {
			st_info("server :%d: accepting again", s->port);
			l->failing = false;
		}
		/* st_conn_new closes the fd itself on failure. */
		if (st_conn_new(s->r, res, s->ops, s->arg, s->max_payload) == NULL) {
			st_warn("server :%d: out of memory for a new connection", s->port);
		}
		listener_arm(l);
		return;
	}
	switch (res) {
	case -ECANCELED:
		/* Only st_reactor_destroy() cancels us without st_server_stop(): go quietly. */
		listener_end(l);
		break;
	case -EINTR:
	case -EAGAIN:
	case -ECONNABORTED:
		listener_arm(l);
		break;
	default:
		/* EMFILE, ENFILE, ENOBUFS, ENOMEM: retrying at once would spin. */
		if (!l->failing) {
			st_warn("server :%d: accept: %s; retrying every %d ms", s->port,
				strerror(-res), ACCEPT_RETRY_MS);
			l->failing = true;
		}
		st_reactor_timer(s->r, &l->accept_io, ACCEPT_RETRY_MS, listener_retry_done, l);
		break;
	}
}

static void listener_arm(struct st_listener *l)
{
	st_reactor_accept(l->s->r, &l->accept_io, l->fd, listener_accept_done, l);
}

static void listener_start(struct st_server *s, struct st_listener *l, int fd)
{
	l->s = s;
	l->fd = fd;
	s->live++;
	listener_arm(l);
}

/* Returns 0 or -errno (from st_tcp_listen). */
int st_server_start(struct st_reactor *r, const char *hostport, const struct st_conn_ops *ops,
		    void *arg, uint32_t max_payload, struct st_server **out)
{
	struct st_server *s = calloc(1, sizeof(*s));
	int fd, lfd;

	if (s == NULL) {
		return -ENOMEM;
	}
	fd = st_tcp_listen(hostport, 1024);
	if (fd < 0) {
		free(s);
		return fd;
	}
	s->r = r;
	s->port = st_socket_port(fd);
	s->ops = ops;
	s->arg = arg;
	s->max_payload = max_payload;
	s->tcp.fd = s->local.fd = s->alias.fd = -1;
	/* Without the twin (wildcard address, or the name still held by a dying predecessor),
	 * same-host clients simply use TCP. */
	lfd = st_local_listen(fd, 1024);
	if (lfd < 0 && lfd != -EADDRNOTAVAIL) {
		st_info("server :%d: no same-host socket: %s", s->port, strerror(-lfd));
	}
	listener_start(s, &s->tcp, fd);
	if (lfd >= 0) {
		listener_start(s, &s->local, lfd);
	}
	*out = s;
	return 0;
}

int st_server_add_local(struct st_server *s, const char *hostport)
{
	if (s->alias.fd >= 0) {
		return -EBUSY;
	}
	int lfd = st_local_listen_at(hostport, 1024);
	if (lfd == -EADDRINUSE && s->local.fd >= 0) {
		/* Most likely the twin st_server_start made already, for the same address. */
		return 0;
	}
	if (lfd < 0) {
		st_info("server :%d: no same-host socket for %s: %s", s->port, hostport,
			strerror(-lfd));
		return lfd;
	}
	listener_start(s, &s->alias, lfd);
	return 0;
}

int st_server_port(const struct st_server *s)
{
	return s->port;
}

/* Each listener's accept (or timer) completes with -ECANCELED; the last one frees s. */
void st_server_stop(struct st_server *s)
{
	if (s == NULL || s->stopping) {
		return;
	}
	s->stopping = true;
	if (s->tcp.fd >= 0) {
		st_reactor_cancel(s->r, &s->tcp.accept_io);
	}
	if (s->local.fd >= 0) {
		st_reactor_cancel(s->r, &s->local.accept_io);
	}
	if (s->alias.fd >= 0) {
		st_reactor_cancel(s->r, &s->alias.accept_io);
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Client: an st_conn plus a chained hash of outstanding req_id -> (cb, cb_arg).              */

struct st_pending {
	struct st_pending *next;
	uint64_t req_id;
	st_client_cb cb;
	void *cb_arg;
};

struct st_client {
	struct st_conn *conn; /* NULL once the conn has closed */
	uint64_t next_id;
	struct st_pending **buckets;
	size_t nbuckets; /* power of two */
	size_t npending;
	struct st_pending *free; /* recycled entries: no malloc per call in steady state */
	bool closing;            /* st_client_close() ran; free when the conn is gone */
	unsigned in_cb;          /* our callbacks on the stack: st_client_close() may run in one */
};

static size_t client_bucket(const struct st_client *cl, uint64_t id)
{
	/* req_ids are sequential, so the low bits already spread well. */
	return (size_t)(id & (cl->nbuckets - 1));
}

static int client_grow(struct st_client *cl)
{
	size_t nb = cl->nbuckets * 2;
	struct st_pending **b = calloc(nb, sizeof(*b));

	if (b == NULL) {
		return -ENOMEM;
	}
	for (size_t i = 0; i < cl->nbuckets; i++) {
		struct st_pending *p, *next;

		for (p = cl->buckets[i]; p != NULL; p = next) {
			next = p->next;
			p->next = b[p->req_id & (nb - 1)];
			b[p->req_id & (nb - 1)] = p;
		}
	}
	free(cl->buckets);
	cl->buckets = b;
	cl->nbuckets = nb;
	return 0;
}

static struct st_pending *client_take(struct st_client *cl, uint64_t id)
{
	struct st_pending **pp = &cl->buckets[client_bucket(cl, id)];

	for (; *pp != NULL; pp = &(*pp)->next) {
		struct st_pending *p = *pp;

		if (p->req_id == id) {
			*pp = p->next;
			cl->npending--;
			return p;
		}
	}
	return NULL;
}

static void client_put(struct st_client *cl, struct st_pending *p)
{
	p->next = cl->free;
	cl->free = p;
}

/* Fails every outstanding call with err. Callbacks may issue new calls; those fail too. */
static void client_fail_all(struct st_client *cl, int err)
{
	while (cl->npending > 0) {
		for (size_t i = 0; i < cl->nbuckets; i++) {
			struct st_pending *p;

			while ((p = cl->buckets[i]) != NULL) {
				cl->buckets[i] = p->next;
				cl->npending--;
				cl->in_cb++;
				p->cb(p->cb_arg, err, NULL);
				cl->in_cb--;
				client_put(cl, p);
			}
		}
	}
}

static void client_free(struct st_client *cl)
{
	struct st_pending *p;

	while ((p = cl->free) != NULL) {
		cl->free = p->next;
		free(p);
	}
	free(cl->buckets);
	free(cl);
}

/* Free once closed, disconnected and no callback of ours is on the stack: a callback may call
 * st_client_close() on its own client (e.g. when its call failed with -ECONNRESET). */
static void client_maybe_free(struct st_client *cl)
{
	if (cl->closing && cl->conn == NULL && cl->in_cb == 0) {
		client_free(cl);
	}
}

static void client_on_frame(struct st_conn *c, struct st_frame *f, void *arg)
{
	struct st_client *cl = arg;
	struct st_pending *p;

	if (!(f->hdr.type & ST_FRAME_REPLY)) {
		st_warn("%s: unexpected request type 0x%04x on a client connection",
			st_conn_peer(c), f->hdr.type);
		goto out;
	}
	p = client_take(cl, f->hdr.req_id);
	if (p == NULL) {
		st_debug("%s: reply to unknown req_id %llu", st_conn_peer(c),
			 (unsigned long long)f->hdr.req_id);
		goto out;
	}
	cl->in_cb++;
	p->cb(p->cb_arg, f->hdr.status < 0 ? f->hdr.status : 0, f);
	cl->in_cb--;
	client_put(cl, p);
out:
	st_frame_release(f);
}

static void client_on_close(struct st_conn *c, int err, void *arg)
{
	struct st_client *cl = arg;

	cl->conn = NULL;
	client_fail_all(cl, cl->closing ? -ECANCELED : -ECONNRESET);
	client_maybe_free(cl);
}

static const struct st_conn_ops client_ops = {
	.on_frame = client_on_frame,
	.on_close = client_on_close,
};

/* Blocking connect (bounded), then async from there on. Returns 0 or -errno. */
int st_client_connect(struct st_reactor *r, const char *hostport, struct st_client **out)
{
	struct st_client *cl = calloc(1, sizeof(*cl));
	int fd;

	if (cl == NULL) {
		return -ENOMEM;
	}
	cl->next_id = 1;
	cl->nbuckets = CLIENT_BUCKETS_MIN;
	cl->buckets = calloc(cl->nbuckets, sizeof(*cl->buckets));
	if (cl->buckets == NULL) {
		free(cl);
		return -ENOMEM;
	}
	fd = st_local_connect(hostport);
	if (fd < 0) {
		fd = st_tcp_connect(hostport, CLIENT_CONNECT_MS);
	}
	if (fd < 0) {
		client_free(cl);
		return fd;
	}
	cl->conn = st_conn_new(r, fd, &client_ops, cl, 0);
	if (cl->conn == NULL) {
		client_free(cl);
		return -ENOMEM;
	}
	*out = cl;
	return 0;
}

/* Returns 0 (cb will run exactly once), or -ENOTCONN / -ENOMEM (cb will not run). */
int st_client_call(struct st_client *cl, uint16_t type, uint8_t flags, const ProtobufCMessage *msg,
		   const void *payload, size_t payload_len, st_client_cb cb, void *cb_arg)
{
	struct st_pending *p;
	size_t b;
	int rc;

	if (cl->conn == NULL || cl->closing) {
		return -ENOTCONN;
	}
	if (cl->npending >= cl->nbuckets * 2 && client_grow(cl) < 0) {
		return -ENOMEM;
	}
	p = cl->free;
	if (p != NULL) {
		cl->free = p->next;
	} else {
		p = malloc(sizeof(*p));
		if (p == NULL) {
			return -ENOMEM;
		}
	}
	p->req_id = cl->next_id++;
	p->cb = cb;
	p->cb_arg = cb_arg;
	rc = st_conn_send(cl->conn, type, p->req_id, 0, flags, msg, payload, payload_len, NULL,
			  NULL);
	if (rc < 0) {
		client_put(cl, p);
		return rc;
	}
	b = client_bucket(cl, p->req_id);
	p->next = cl->buckets[b];
	cl->buckets[b] = p;
	cl->npending++;
	return 0;
}

void st_client_close(struct st_client *cl)
{
	if (cl == NULL || cl->closing) {
		return;
	}
	cl->closing = true;
	client_fail_all(cl, -ECANCELED);
	if (cl->conn == NULL) {
		client_maybe_free(cl);
		return;
	}
	/* Abortive: nobody is waiting for what is still queued. client_on_close frees cl. */
	conn_fail(cl->conn, 0);
	conn_maybe_finish(cl->conn);
}

bool st_client_alive(const struct st_client *cl)
{
	return cl->conn != NULL && !cl->closing && !cl->conn->closing;
}

/* ---------------------------------------------------------------------------------------- */
/* Blocking request/reply for tools and start-up paths.                                     */

/* Writes all of iov. Returns 0 or -errno. */
static int write_iov(int fd, struct iovec *iov, int cnt)
{
	struct msghdr mh;
	bool sock = true;

	while (cnt > 0) {
		ssize_t n;

		if (sock) {
			memset(&mh, 0, sizeof(mh));
			mh.msg_iov = iov;
			mh.msg_iovlen = (size_t)cnt;
			/* MSG_NOSIGNAL: a dead peer must be -EPIPE, not SIGPIPE in a CLI. */
			n = sendmsg(fd, &mh, MSG_NOSIGNAL);
			if (n < 0 && errno == ENOTSOCK) {
				sock = false;
				continue;
			}
		} else {
			n = writev(fd, iov, cnt);
		}
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -errno;
		}
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static void copy_error(const struct st_frame *f, int status, char *errbuf, size_t errlen)
{
	Strata__ErrorReply *er;

	if (errbuf == NULL || errlen == 0) {
		return;
	}
	er = strata__error_reply__unpack(NULL, f->hdr.hdr_len, f->msg);
	if (er != NULL && er->message != NULL && er->message[0] != '\0') {
		snprintf(errbuf, errlen, "%s", er->message);
	} else {
		snprintf(errbuf, errlen, "%s", strerror(-status));
	}
	if (er != NULL) {
		strata__error_reply__free_unpacked(er, NULL);
	}
}

/* Returns the reply status (0 or -errno) with *reply filled, or -errno on transport failure. */
int st_rpc_call(int fd, uint16_t type, uint8_t flags, const ProtobufCMessage *msg,
		const void *payload, size_t payload_len, struct st_frame *reply, char *errbuf,
		size_t errlen)
{
	static atomic_uint_fast64_t next_id = 1;
	uint8_t hdr[ST_FRAME_HDR_SIZE];
	struct st_frame_hdr h;
	struct iovec iov[3];
	uint8_t *packed = NULL;
	size_t mlen = 0;
	const char *why = NULL;
	uint64_t id = atomic_fetch_add(&next_id, 1);
	int cnt = 0, rc;

	memset(reply, 0, sizeof(*reply));
	if (errbuf != NULL && errlen > 0) {
		errbuf[0] = '\0';
	}
	if (payload_len > UINT32_MAX) {
		return -EMSGSIZE;
	}
	rc = st_pack_msg(msg, &packed, &mlen);
	if (rc < 0) {
		return rc;
	}
	memset(&h, 0, sizeof(h));
	h.magic = ST_FRAME_MAGIC;
	h.version = ST_FRAME_VERSION;
	h.flags = flags;
	h.type = type;
	h.req_id = id;
	h.hdr_len = (uint32_t)mlen;
	h.payload_len = (uint32_t)payload_len;
	st_frame_hdr_encode(&h, hdr);
	iov[cnt++] = (struct iovec){hdr, sizeof(hdr)};
	if (mlen > 0) {
		iov[cnt++] = (struct iovec){packed, mlen};
	}
	if (payload_len > 0) {
		iov[cnt++] = (struct iovec){(void *)payload, payload_len};
	}
	rc = write_iov(fd, iov, cnt);
	free(packed);
	if (rc < 0) {
		return rc;
	}

	rc = st_read_full(fd, hdr, sizeof(hdr));
	if (rc < 0) {
		return rc;
	}
	rc = st_frame_hdr_decode(hdr, ST_FRAME_MAX_MSG, ST_FRAME_MAX_PAYLOAD, &reply->hdr, &why);
	if (rc < 0) {
		st_warn("rpc reply: %s", why ? why : strerror(-rc));
		goto err_release;
	}
	if (reply->hdr.type != (uint16_t)(type | ST_FRAME_REPLY) || reply->hdr.req_id != id) {
		st_warn("rpc reply: expected type 0x%04x req_id %llu, got 0x%04x req_id %llu",
			(unsigned)(type | ST_FRAME_REPLY), (unsigned long long)id, reply->hdr.type,
			(unsigned long long)reply->hdr.req_id);
		rc = -EPROTO;
		goto err_release;
	}
	if (reply->hdr.hdr_len > 0) {
		reply->msg = malloc(reply->hdr.hdr_len);
		if (reply->msg == NULL) {
			rc = -ENOMEM;
			goto err_release;
		}
		rc = st_read_full(fd, reply->msg, reply->hdr.hdr_len);
		if (rc < 0) {
			goto err_release;
		}
	}
	if (reply->hdr.payload_len > 0) {
		reply->payload = st_payload_alloc(reply->hdr.payload_len);
		if (reply->payload == NULL) {
			rc = -ENOMEM;
			goto err_release;
		}
		rc = st_read_full(fd, reply->payload, reply->hdr.payload_len);
		if (rc < 0) {
			goto err_release;
		}
	}
	if (reply->hdr.status < 0) {
		copy_error(reply, reply->hdr.status, errbuf, errlen);
	}
	return reply->hdr.status < 0 ? reply->hdr.status : 0;

err_release:
	st_frame_release(reply);
	memset(reply, 0, sizeof(*reply));
	return rc;
}

/* Returns 0 or -ENOMEM. */
int st_pack_msg(const ProtobufCMessage *msg, uint8_t **out, size_t *len)
{
	size_t n = msg != NULL ? protobuf_c_message_get_packed_size(msg) : 0;

	*out = NULL;
	*len = 0;
	if (n == 0) {
		return 0;
	}
	*out = malloc(n);
	if (*out == NULL) {
		return -ENOMEM;
	}
	*len = protobuf_c_message_pack(msg, *out);
	return 0;
}
