/*
 * st_rpc_call (blocking) against a server built on st_server/st_conn in a reactor thread,
 * including error replies that carry an ErrorReply body, plus st_client failure paths.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/frame.h"
#include "common/net.h"
#include "common/reactor.h"
#include "common/rpc.h"
#include "strata.pb-c.h"

#define T_PING  0x0001
#define T_ECHO  0x0002
#define T_FAIL  0x00F0 /* replies -EINVAL with an ErrorReply */
#define T_HANG  0x00F1 /* closes the connection without a reply */
#define T_BARE  0x00F2 /* replies -EIO with no body at all */
#define T_WRONG 0x00F3 /* replies with a mismatched req_id */
#define T_CHAIN 0x00F4 /* four replies; the second one's done() queues a fifth */

struct chain {
	struct st_conn *c;
	uint64_t req_id;
	char text[64];
};

/* Runs while the conn retires sent frames: a send from here must queue behind the others. */
static void chain_done(void *arg)
{
	struct chain *ch = arg;
	Strata__Ping p = STRATA__PING__INIT;

	p.nonce = 4;
	p.text = ch->text;
	st_conn_send(ch->c, T_CHAIN | ST_FRAME_REPLY, ch->req_id + 4, 0, 0, &p.base, NULL, 0, free,
		     ch);
}

struct server {
	struct st_reactor *r;
	pthread_t th;
	struct st_server *srv;
	char hostport[64];
	atomic_int closed;
};

static void on_frame(struct st_conn *c, struct st_frame *f, void *arg)
{
	Strata__Ping *p = NULL;

	switch (f->hdr.type) {
	case T_PING:
	case T_ECHO:
		p = strata__ping__unpack(NULL, f->hdr.hdr_len, f->msg);
		if (p == NULL) {
			st_conn_send_error(c, f->hdr.type, f->hdr.req_id, -EBADMSG, "bad Ping");
			break;
		}
		if (st_conn_send(c, f->hdr.type | ST_FRAME_REPLY, f->hdr.req_id, 0, 0, &p->base,
				 f->hdr.type == T_ECHO ? f->payload : NULL,
				 f->hdr.type == T_ECHO ? f->hdr.payload_len : 0, free,
				 f->payload) == 0) {
			f->payload = NULL;
		}
		strata__ping__free_unpacked(p, NULL);
		break;
	case T_FAIL:
		st_conn_send_error(c, f->hdr.type, f->hdr.req_id, -EINVAL, "volume %s not found",
				   "vol-42");
		break;
	case T_HANG:
		st_conn_close(c);
		break;
	case T_BARE:
		st_conn_send(c, T_BARE | ST_FRAME_REPLY, f->hdr.req_id, -EIO, 0, NULL, NULL, 0,
			     NULL, NULL);
		break;
	case T_WRONG:
		st_conn_send(c, T_WRONG | ST_FRAME_REPLY, f->hdr.req_id + 1000, 0, 0, NULL, NULL, 0,
			     NULL, NULL);
		break;
	case T_CHAIN: {
		struct chain *ch = calloc(1, sizeof(*ch));
		Strata__Ping q = STRATA__PING__INIT;

		ch->c = c;
		ch->req_id = f->hdr.req_id;
		memset(ch->text, 'x', sizeof(ch->text) - 1);
		q.text = ch->text;
		/* Frame 0 goes out alone; 1-3 are gathered into the next SENDMSG, and retiring 1
		 * runs chain_done while 2 and 3 are still to be retired. */
		for (int i = 0; i < 4; i++) {
			q.nonce = (uint64_t)i;
			st_conn_send(c, T_CHAIN | ST_FRAME_REPLY, f->hdr.req_id + (uint64_t)i, 0, 0,
				     &q.base, NULL, 0, i == 1 ? chain_done : NULL, ch);
		}
		break;
	}
	default:
		st_conn_send_error(c, f->hdr.type, f->hdr.req_id, -EOPNOTSUPP,
				   "unknown type 0x%04x", f->hdr.type);
		break;
	}
	st_frame_release(f);
}

static void on_close(struct st_conn *c, int err, void *arg)
{
	struct server *s = arg;

	atomic_fetch_add(&s->closed, 1);
}

static const struct st_conn_ops ops = {.on_frame = on_frame, .on_close = on_close};

static void *run_thread(void *arg)
{
	st_reactor_run(arg);
	return NULL;
}

struct sync_call {
	void (*fn)(void *);
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
};

static void sync_trampoline(void *arg)
{
	struct sync_call *sc = arg;

	sc->fn(sc->arg);
	pthread_mutex_lock(&sc->mu);
	sc->done = true;
	pthread_cond_signal(&sc->cv);
	pthread_mutex_unlock(&sc->mu);
}

static void on_loop(struct st_reactor *r, void (*fn)(void *), void *arg)
{
	struct sync_call sc = {.fn = fn, .arg = arg};

	pthread_mutex_init(&sc.mu, NULL);
	pthread_cond_init(&sc.cv, NULL);
	cr_assert_eq(st_reactor_post(r, sync_trampoline, &sc), 0);
	pthread_mutex_lock(&sc.mu);
	while (!sc.done) {
		pthread_cond_wait(&sc.cv, &sc.mu);
	}
	pthread_mutex_unlock(&sc.mu);
	pthread_mutex_destroy(&sc.mu);
	pthread_cond_destroy(&sc.cv);
}

static void start_fn(void *arg)
{
	struct server *s = arg;

	cr_assert_eq(st_server_start(s->r, "127.0.0.1:0", &ops, s, 0, &s->srv), 0);
	snprintf(s->hostport, sizeof(s->hostport), "127.0.0.1:%d", st_server_port(s->srv));
}

static void stop_fn(void *arg)
{
	struct server *s = arg;

	st_server_stop(s->srv);
}

static struct server srv;

static void setup(void)
{
	memset(&srv, 0, sizeof(srv));
	cr_assert_eq(st_reactor_create(&srv.r, 0), 0);
	cr_assert_eq(pthread_create(&srv.th, NULL, run_thread, srv.r), 0);
	on_loop(srv.r, start_fn, &srv);
}

static void teardown(void)
{
	on_loop(srv.r, stop_fn, &srv);
	st_reactor_stop(srv.r);
	pthread_join(srv.th, NULL);
	st_reactor_destroy(srv.r);
}

TestSuite(rpc, .init = setup, .fini = teardown, .timeout = 60);

Test(rpc, ping)
{
	int fd = st_tcp_connect(srv.hostport, 2000);
	Strata__Ping ping = STRATA__PING__INIT, *back;
	struct st_frame reply;
	char err[128] = "untouched";

	cr_assert_geq(fd, 0);
	for (uint64_t i = 0; i < 10; i++) {
		ping.nonce = 0xdeadbeef00ull + i;
		ping.text = "hello";
		cr_assert_eq(
			st_rpc_call(fd, T_PING, 0, &ping.base, NULL, 0, &reply, err, sizeof(err)),
			0);
		cr_assert_str_empty(err);
		cr_assert_eq(reply.hdr.type, T_PING | ST_FRAME_REPLY);
		cr_assert_eq(reply.hdr.status, 0);
		cr_assert_eq(reply.hdr.payload_len, 0);
		back = strata__ping__unpack(NULL, reply.hdr.hdr_len, reply.msg);
		cr_assert_not_null(back);
		cr_assert_eq(back->nonce, 0xdeadbeef00ull + i);
		cr_assert_str_eq(back->text, "hello");
		strata__ping__free_unpacked(back, NULL);
		st_frame_release(&reply);
	}
	close(fd);
}

Test(rpc, empty_message_and_big_payload)
{
	int fd = st_tcp_connect(srv.hostport, 2000);
	size_t len = 3 * 1024 * 1024 + 17;
	uint8_t *data = malloc(len);
	struct st_frame reply;

	cr_assert_geq(fd, 0);
	cr_assert_not_null(data);
	for (size_t i = 0; i < len; i++) {
		data[i] = (uint8_t)(i * 2654435761u >> 13);
	}
	/* A NULL message packs to nothing; Ping decodes from zero bytes as all defaults. */
	cr_assert_eq(st_rpc_call(fd, T_ECHO, 0, NULL, data, len, &reply, NULL, 0), 0);
	cr_assert_eq(reply.hdr.hdr_len, 0);
	cr_assert_eq(reply.hdr.payload_len, len);
	cr_assert_eq(memcmp(reply.payload, data, len), 0);
	cr_assert_eq((uintptr_t)reply.payload % ST_FRAME_PAYLOAD_ALIGN, 0);
	st_frame_release(&reply);
	free(data);
	close(fd);
}

Test(rpc, error_reply_carries_message)
{
	int fd = st_tcp_connect(srv.hostport, 2000);
	struct st_frame reply;
	char err[128];
	Strata__ErrorReply *er;

	cr_assert_geq(fd, 0);
	cr_assert_eq(st_rpc_call(fd, T_FAIL, 0, NULL, NULL, 0, &reply, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "volume vol-42 not found");
	cr_assert_eq(reply.hdr.status, -EINVAL);
	er = strata__error_reply__unpack(NULL, reply.hdr.hdr_len, reply.msg);
	cr_assert_not_null(er);
	cr_assert_str_eq(er->message, "volume vol-42 not found");
	strata__error_reply__free_unpacked(er, NULL);
	st_frame_release(&reply);

	/* Truncated errbuf, no errbuf, unknown type, an error without a body. */
	cr_assert_eq(st_rpc_call(fd, T_FAIL, 0, NULL, NULL, 0, &reply, err, 7), -EINVAL);
	cr_assert_str_eq(err, "volume");
	st_frame_release(&reply);
	cr_assert_eq(st_rpc_call(fd, T_FAIL, 0, NULL, NULL, 0, &reply, NULL, 0), -EINVAL);
	st_frame_release(&reply);
	cr_assert_eq(st_rpc_call(fd, 0x0077, 0, NULL, NULL, 0, &reply, err, sizeof(err)),
		     -EOPNOTSUPP);
	cr_assert_str_eq(err, "unknown type 0x0077");
	st_frame_release(&reply);
	cr_assert_eq(st_rpc_call(fd, T_BARE, 0, NULL, NULL, 0, &reply, err, sizeof(err)), -EIO);
	cr_assert_str_eq(err, strerror(EIO));
	st_frame_release(&reply);

	/* The connection is still good after errors. */
	cr_assert_eq(st_rpc_call(fd, T_PING, 0, NULL, NULL, 0, &reply, err, sizeof(err)), 0);
	st_frame_release(&reply);
	close(fd);
}

Test(rpc, transport_failures)
{
	int fd = st_tcp_connect(srv.hostport, 2000);
	struct st_frame reply;

	cr_assert_geq(fd, 0);
	cr_assert_eq(st_rpc_call(fd, T_WRONG, 0, NULL, NULL, 0, &reply, NULL, 0), -EPROTO);
	cr_assert_null(reply.msg);
	cr_assert_null(reply.payload);
	cr_assert_eq(st_rpc_call(fd, T_HANG, 0, NULL, NULL, 0, &reply, NULL, 0), -ECONNRESET);
	cr_assert_null(reply.msg);
	close(fd);
}

/* A done() callback that sends again must not disturb the frames still being retired. */
Test(rpc, send_from_done_callback_keeps_order)
{
	int fd = st_tcp_connect(srv.hostport, 2000);
	struct st_frame reply;
	uint64_t first;

	cr_assert_geq(fd, 0);
	cr_assert_eq(st_rpc_call(fd, T_CHAIN, 0, NULL, NULL, 0, &reply, NULL, 0), 0);
	first = reply.hdr.req_id;
	st_frame_release(&reply);
	for (uint64_t i = 1; i < 5; i++) {
		uint8_t hdr[ST_FRAME_HDR_SIZE], msg[256];
		struct st_frame_hdr h;
		Strata__Ping *p;

		cr_assert_eq(st_read_full(fd, hdr, sizeof(hdr)), 0);
		cr_assert_eq(st_frame_hdr_decode(hdr, 0, 0, &h, NULL), 0, "frame %llu",
			     (unsigned long long)i);
		cr_assert_eq(h.req_id, first + i);
		cr_assert_leq(h.hdr_len, sizeof(msg));
		cr_assert_eq(st_read_full(fd, msg, h.hdr_len), 0);
		p = strata__ping__unpack(NULL, h.hdr_len, msg);
		cr_assert_not_null(p);
		cr_assert_eq(p->nonce, i);
		cr_assert_eq(strlen(p->text), 63);
		strata__ping__free_unpacked(p, NULL);
	}
	close(fd);
}

/* ---- st_client: outstanding calls fail with -ECONNRESET when the server hangs up ---------- */

struct client_ctx {
	struct st_client *cl;
	int results[4];
	int n;
	int call_rc[4];
	bool alive_after;
};

static void client_cb(void *cb_arg, int err, struct st_frame *reply)
{
	int *slot = cb_arg;

	*slot = err;
}

static void client_fn(void *arg)
{
	struct client_ctx *cc = arg;
	Strata__Ping ping = STRATA__PING__INIT;

	cr_assert_eq(st_client_connect(srv.r, srv.hostport, &cc->cl), 0);
	cc->call_rc[0] =
		st_client_call(cc->cl, T_PING, 0, &ping.base, NULL, 0, client_cb, &cc->results[0]);
	cc->call_rc[1] =
		st_client_call(cc->cl, T_FAIL, 0, NULL, NULL, 0, client_cb, &cc->results[1]);
	cc->call_rc[2] =
		st_client_call(cc->cl, T_HANG, 0, NULL, NULL, 0, client_cb, &cc->results[2]);
	cc->call_rc[3] =
		st_client_call(cc->cl, T_PING, 0, NULL, NULL, 0, client_cb, &cc->results[3]);
}

static void alive_fn(void *arg)
{
	struct client_ctx *cc = arg;

	cc->alive_after = st_client_alive(cc->cl);
}

static void close_fn(void *arg)
{
	struct client_ctx *cc = arg;

	st_client_close(cc->cl);
}

Test(rpc, client_fails_outstanding_on_close)
{
	struct client_ctx cc = {.results = {1, 1, 1, 1}};
	uint64_t deadline = st_now_ms() + 10000;

	on_loop(srv.r, client_fn, &cc);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(cc.call_rc[i], 0);
	}
	/* The server answers the first two, then hangs up on the third. */
	do {
		usleep(1000);
		on_loop(srv.r, alive_fn, &cc);
	} while (cc.alive_after && st_now_ms() < deadline);
	cr_assert(!cc.alive_after);
	cr_assert_eq(cc.results[0], 0);
	cr_assert_eq(cc.results[1], -EINVAL);
	cr_assert_eq(cc.results[2], -ECONNRESET);
	cr_assert_eq(cc.results[3], -ECONNRESET);
	on_loop(srv.r, close_fn, &cc);
}

Test(rpc, pack_msg)
{
	Strata__Ping ping = STRATA__PING__INIT, *back;
	uint8_t *buf;
	size_t len;

	cr_assert_eq(st_pack_msg(NULL, &buf, &len), 0);
	cr_assert_null(buf);
	cr_assert_eq(len, 0);
	ping.nonce = 5;
	ping.text = "x";
	cr_assert_eq(st_pack_msg(&ping.base, &buf, &len), 0);
	cr_assert_gt(len, 0);
	back = strata__ping__unpack(NULL, len, buf);
	cr_assert_not_null(back);
	cr_assert_eq(back->nonce, 5);
	strata__ping__free_unpacked(back, NULL);
	free(buf);
}

/* ---- an accept error (EMFILE) backs off and retries instead of killing the server -------- */

Test(rpc, accept_survives_emfile)
{
	struct rlimit old, lim;
	int fds[64], nfds = 0, fd, probe;
	struct st_frame reply;

	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	probe = dup(0);
	cr_assert_geq(probe, 0);
	close(probe);
	/* Leave room for exactly our dups: then every fd slot is taken. */
	lim = old;
	lim.rlim_cur = (rlim_t)probe + 40;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
	while (nfds < 64 && (fds[nfds] = dup(0)) >= 0) {
		nfds++;
	}
	cr_assert_eq(errno, EMFILE);
	cr_assert_gt(nfds, 2);

	/* One slot for our end of the connection; the server's accept then hits EMFILE. */
	close(fds[--nfds]);
	fd = st_tcp_connect(srv.hostport, 2000);
	cr_assert_geq(fd, 0);
	usleep(300 * 1000); /* a few accept retries fail meanwhile */

	while (nfds > 0) {
		close(fds[--nfds]);
	}
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	cr_assert_eq(st_rpc_call(fd, T_PING, 0, NULL, NULL, 0, &reply, NULL, 0), 0);
	st_frame_release(&reply);
	close(fd);

	/* And the server still accepts new connections normally. */
	fd = st_tcp_connect(srv.hostport, 2000);
	cr_assert_geq(fd, 0);
	cr_assert_eq(st_rpc_call(fd, T_PING, 0, NULL, NULL, 0, &reply, NULL, 0), 0);
	st_frame_release(&reply);
	close(fd);
}

/* ---- a callback may close its own client (libstrata does, on -ECONNRESET) ---------------- */

struct selfclose_ctx {
	struct st_client *cl;
	int calls;
	int fired;
	int last_err;
};

static void selfclose_cb(void *cb_arg, int err, struct st_frame *reply)
{
	struct selfclose_ctx *sc = cb_arg;

	sc->fired++;
	sc->last_err = err;
	if (err < 0 && sc->cl != NULL) {
		struct st_client *cl = sc->cl;
		sc->cl = NULL;
		st_client_close(cl); /* inside the client's own failure callback */
	}
}

static void selfclose_fn(void *arg)
{
	struct selfclose_ctx *sc = arg;

	cr_assert_eq(st_client_connect(srv.r, srv.hostport, &sc->cl), 0);
	/* Several outstanding calls, so the failure loop continues after the close. */
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(st_client_call(sc->cl, T_HANG, 0, NULL, NULL, 0, selfclose_cb, sc), 0);
		sc->calls++;
	}
}

static void selfclose_poll(void *arg)
{
	(void)arg;
}

Test(rpc, client_close_from_its_own_callback)
{
	struct selfclose_ctx sc = {0};
	uint64_t deadline = st_now_ms() + 10000;

	on_loop(srv.r, selfclose_fn, &sc);
	while (sc.fired < sc.calls && st_now_ms() < deadline) {
		usleep(1000);
		on_loop(srv.r, selfclose_poll, NULL);
	}
	/* Every call failed exactly once; ASan flags a double free or use after free. */
	cr_assert_eq(sc.fired, 3);
	cr_assert_lt(sc.last_err, 0);
	cr_assert_null(sc.cl);
}
