/*
 * Reactor and st_conn/st_server/st_client tests: timers, cross-thread posts, stop, and an echo
 * server driven by 1000 concurrent requests with payloads up to 256 KiB.
 *
 * Callbacks run on reactor threads, where Criterion asserts must not be used: they record
 * failures in counters that the test thread checks.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/frame.h"
#include "common/net.h"
#include "common/reactor.h"
#include "common/rpc.h"
#include "strata.pb-c.h"

#define T_ECHO 0x0002

/* ---- timers, posts, stop ---------------------------------------------------------------- */

struct timer_ctx {
	struct st_reactor *r;
	int order[8];
	int res[8];
	int n;
	int expect;
};

struct timer_one {
	struct timer_ctx *ctx;
	int id;
	struct st_io io;
};

static void timer_cb(void *arg, int res)
{
	struct timer_one *t = arg;
	struct timer_ctx *ctx = t->ctx;

	ctx->order[ctx->n] = t->id;
	ctx->res[ctx->n] = res;
	if (++ctx->n == ctx->expect) {
		st_reactor_stop(ctx->r);
	}
}

Test(reactor, timers_fire_in_order)
{
	struct timer_ctx ctx = {.expect = 3};
	struct timer_one t[3] = {{&ctx, 30, {0}}, {&ctx, 10, {0}}, {&ctx, 20, {0}}};
	uint64_t start;

	cr_assert_eq(st_reactor_create(&ctx.r, 0), 0);
	start = st_now_ms();
	for (int i = 0; i < 3; i++) {
		st_reactor_timer(ctx.r, &t[i].io, (uint64_t)t[i].id, timer_cb, &t[i]);
		cr_assert(t[i].io.busy);
	}
	cr_assert_eq(st_reactor_run(ctx.r), 0);
	cr_assert_geq(st_now_ms() - start, 29);
	cr_assert_eq(ctx.n, 3);
	cr_assert_eq(ctx.order[0], 10);
	cr_assert_eq(ctx.order[1], 20);
	cr_assert_eq(ctx.order[2], 30);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(ctx.res[i], 0);
		cr_assert(!t[i].io.busy);
	}
	st_reactor_destroy(ctx.r);
}

Test(reactor, cancel_timer)
{
	struct timer_ctx ctx = {.expect = 2};
	struct timer_one slow = {&ctx, 10000, {0}}, fast = {&ctx, 5, {0}};
	uint64_t start;

	cr_assert_eq(st_reactor_create(&ctx.r, 0), 0);
	start = st_now_ms();
	st_reactor_timer(ctx.r, &slow.io, 10000, timer_cb, &slow);
	st_reactor_timer(ctx.r, &fast.io, 5, timer_cb, &fast);
	st_reactor_cancel(ctx.r, &slow.io);
	cr_assert_eq(st_reactor_run(ctx.r), 0);
	cr_assert_lt(st_now_ms() - start, 5000);
	cr_assert_eq(ctx.n, 2);
	cr_assert_eq(ctx.order[0], 10000);
	cr_assert_eq(ctx.res[0], -ECANCELED);
	cr_assert_eq(ctx.order[1], 5);
	cr_assert_eq(ctx.res[1], 0);
	st_reactor_destroy(ctx.r);
}

struct post_ctx {
	struct st_reactor *r;
	pthread_t loop_thread;
	atomic_int ran;
	atomic_bool on_loop_thread;
};

static void post_fn(void *arg)
{
	struct post_ctx *p = arg;

	atomic_store(&p->on_loop_thread, pthread_equal(pthread_self(), p->loop_thread));
	atomic_fetch_add(&p->ran, 1);
	st_reactor_stop(p->r);
}

static void *poster(void *arg)
{
	struct post_ctx *p = arg;

	usleep(50 * 1000); /* let the loop block in io_uring_enter */
	st_reactor_post(p->r, post_fn, p);
	return NULL;
}

Test(reactor, cross_thread_post_wakes_loop)
{
	struct post_ctx p = {0};
	pthread_t th;
	uint64_t start;

	cr_assert_eq(st_reactor_create(&p.r, 0), 0);
	p.loop_thread = pthread_self();
	start = st_now_ms();
	cr_assert_eq(pthread_create(&th, NULL, poster, &p), 0);
	cr_assert_eq(st_reactor_run(p.r), 0);
	cr_assert_eq(atomic_load(&p.ran), 1);
	cr_assert(atomic_load(&p.on_loop_thread));
	cr_assert_lt(st_now_ms() - start, 5000);
	pthread_join(th, NULL);
	st_reactor_destroy(p.r);
}

static void count_fn(void *arg)
{
	atomic_fetch_add((atomic_int *)arg, 1);
}

static void *run_thread(void *arg)
{
	return (void *)(intptr_t)st_reactor_run(arg);
}

Test(reactor, stop_from_another_thread)
{
	struct st_reactor *r;
	pthread_t th;
	void *ret;
	atomic_int n = 0;

	cr_assert_eq(st_reactor_create(&r, 0), 0);
	cr_assert_eq(pthread_create(&th, NULL, run_thread, r), 0);
	for (int i = 0; i < 1000; i++) {
		cr_assert_eq(st_reactor_post(r, count_fn, &n), 0);
	}
	while (atomic_load(&n) < 1000) {
		usleep(1000);
	}
	usleep(20 * 1000);
	st_reactor_stop(r);
	pthread_join(th, &ret);
	cr_assert_eq((intptr_t)ret, 0);
	st_reactor_destroy(r);
}

/* A post made on the loop thread runs after the poster returns, in posting order, in the same
 * run, and without the eventfd (the local queue): order[] records who ran when. */
struct local_ctx {
	struct st_reactor *r;
	int order[8];
	int n;
	int returned; /* the poster had returned when the post ran */
	struct st_io tick;
};

static void local_post(void *arg)
{
	struct local_ctx *l = (struct local_ctx *)((intptr_t *)arg)[0];
	int id = (int)((intptr_t *)arg)[1];

	l->order[l->n++] = id;
	if (id == 2) {
		st_reactor_stop(l->r);
	}
}

static intptr_t lp_args[3][2];

static void local_poster(void *arg, int res)
{
	struct local_ctx *l = arg;

	(void)res;
	cr_assert(st_reactor_on_thread(l->r)); /* on the loop thread, inside run */
	for (int i = 0; i < 3; i++) {
		lp_args[i][0] = (intptr_t)l;
		lp_args[i][1] = i;
		st_reactor_post(l->r, local_post, lp_args[i]);
	}
	l->returned = l->n; /* nothing ran yet */
}

Test(reactor, post_on_loop_thread_runs_after_return_in_order)
{
	struct local_ctx l = {0};

	cr_assert_eq(st_reactor_create(&l.r, 0), 0);
	cr_assert_not(st_reactor_on_thread(l.r));
	st_reactor_timer(l.r, &l.tick, 1, local_poster, &l);
	cr_assert_eq(st_reactor_run(l.r), 0);
	cr_assert_eq(l.returned, 0);
	cr_assert_eq(l.n, 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(l.order[i], i);
	}
	st_reactor_destroy(l.r);
}

Test(reactor, run_once_times_out_and_runs_owner_posts)
{
	struct st_reactor *r;
	atomic_int n = 0;
	struct timer_ctx ctx = {.expect = 100};
	struct timer_one t = {&ctx, 1, {0}};
	uint64_t start;

	cr_assert_eq(st_reactor_create(&r, 0), 0);
	ctx.r = r;
	/* Nothing in flight but the eventfd read: a bounded wait returns 0. */
	start = st_now_ms();
	cr_assert_eq(st_reactor_run_once(r, 20), 0);
	cr_assert_geq(st_now_ms() - start, 15);
	cr_assert_eq(st_reactor_run_once(r, 0), 0);

	/* The owner's posts wait for its next turn, with no wakeup needed. */
	st_reactor_set_owner(r);
	cr_assert_eq(st_reactor_post(r, count_fn, &n), 0);
	cr_assert_eq(st_reactor_post(r, count_fn, &n), 0);
	cr_assert_eq(atomic_load(&n), 0);
	cr_assert_geq(st_reactor_run_once(r, 0), 0);
	cr_assert_eq(atomic_load(&n), 2);

	/* A timer completes within an unbounded turn, and its callback runs there. */
	st_reactor_timer(r, &t.io, 5, timer_cb, &t);
	while (ctx.n == 0) {
		cr_assert_geq(st_reactor_run_once(r, -1), 0);
	}
	cr_assert_eq(ctx.order[0], 1);
	cr_assert_eq(ctx.res[0], 0);
	st_reactor_destroy(r);
}

/* Many posts from another thread while the loop is busy: all run (one wakeup per batch). */
Test(reactor, cross_thread_post_batches_all_run)
{
	struct st_reactor *r;
	pthread_t th;
	atomic_int n = 0;

	cr_assert_eq(st_reactor_create(&r, 0), 0);
	cr_assert_eq(pthread_create(&th, NULL, run_thread, r), 0);
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < 200; i++) {
			cr_assert_eq(st_reactor_post(r, count_fn, &n), 0);
		}
		usleep(200);
	}
	for (int i = 0; i < 5000 && atomic_load(&n) < 10000; i++) {
		usleep(1000);
	}
	cr_assert_eq(atomic_load(&n), 10000);
	st_reactor_stop(r);
	pthread_join(th, NULL);
	st_reactor_destroy(r);
}

/* ---- echo server ------------------------------------------------------------------------ */

struct loop {
	struct st_reactor *r;
	pthread_t th;
};

static void loop_start(struct loop *l)
{
	cr_assert_eq(st_reactor_create(&l->r, 0), 0);
	cr_assert_eq(pthread_create(&l->th, NULL, run_thread, l->r), 0);
}

/* Stops the loop thread, then destroy cancels whatever is left (conns get on_close). */
static void loop_stop(struct loop *l)
{
	st_reactor_stop(l->r);
	pthread_join(l->th, NULL);
	st_reactor_destroy(l->r);
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

/* Runs fn(arg) on the loop thread and waits for it. */
static void on_loop(struct loop *l, void (*fn)(void *), void *arg)
{
	struct sync_call sc = {.fn = fn, .arg = arg, .done = false};

	pthread_mutex_init(&sc.mu, NULL);
	pthread_cond_init(&sc.cv, NULL);
	cr_assert_eq(st_reactor_post(l->r, sync_trampoline, &sc), 0);
	pthread_mutex_lock(&sc.mu);
	while (!sc.done) {
		pthread_cond_wait(&sc.cv, &sc.mu);
	}
	pthread_mutex_unlock(&sc.mu);
	pthread_mutex_destroy(&sc.mu);
	pthread_cond_destroy(&sc.cv);
}

struct echo_server {
	struct loop loop;
	struct st_server *srv;
	atomic_int conns;
	atomic_int closed;
	atomic_int frames;
};

static void echo_on_frame(struct st_conn *c, struct st_frame *f, void *arg)
{
	struct echo_server *es = arg;
	Strata__Ping *p;
	int rc;

	atomic_fetch_add(&es->frames, 1);
	p = strata__ping__unpack(NULL, f->hdr.hdr_len, f->msg);
	if (f->hdr.type != T_ECHO || p == NULL) {
		st_conn_send_error(c, f->hdr.type, f->hdr.req_id, -EINVAL, "bad echo request");
		goto out;
	}
	/* Zero copy: the received payload goes back out and is freed once on the wire. */
	rc = st_conn_send(c, T_ECHO | ST_FRAME_REPLY, f->hdr.req_id, 0, f->hdr.flags, &p->base,
			  f->payload, f->hdr.payload_len, free, f->payload);
	if (rc == 0) {
		f->payload = NULL;
	}
out:
	if (p != NULL) {
		strata__ping__free_unpacked(p, NULL);
	}
	st_frame_release(f);
}

static void echo_on_close(struct st_conn *c, int err, void *arg)
{
	struct echo_server *es = arg;

	atomic_fetch_add(&es->closed, 1);
}

static const struct st_conn_ops echo_ops = {
	.on_frame = echo_on_frame,
	.on_close = echo_on_close,
};

static void echo_start_fn(void *arg)
{
	struct echo_server *es = arg;

	cr_assert_eq(st_server_start(es->loop.r, "127.0.0.1:0", &echo_ops, es, 0, &es->srv), 0);
}

static void echo_stop_fn(void *arg)
{
	struct echo_server *es = arg;

	st_server_stop(es->srv);
}

static void echo_start(struct echo_server *es)
{
	memset(es, 0, sizeof(*es));
	loop_start(&es->loop);
	on_loop(&es->loop, echo_start_fn, es);
	cr_assert_gt(st_server_port(es->srv), 0);
}

static void echo_stop(struct echo_server *es)
{
	on_loop(&es->loop, echo_stop_fn, es);
	loop_stop(&es->loop);
}

#define NREQ        1000
#define MAX_PAYLOAD (256 * 1024)
#define PAT_SIZE    (MAX_PAYLOAD + 4096)

struct echo_client {
	struct loop loop;
	struct st_client *cl;
	uint8_t *pattern;
	char hostport[64];
	int done;       /* loop thread only */
	int bad;        /* loop thread only */
	int errors;     /* loop thread only */
	int launch_err; /* loop thread only */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool finished;
};

struct echo_req {
	struct echo_client *ec;
	int i;
	char text[32];
};

static struct echo_req reqs[NREQ];

static size_t req_size(int i)
{
	if (i == 0) {
		return 0;
	}
	if (i == 1) {
		return MAX_PAYLOAD;
	}
	return ((size_t)i * 7919u) % (MAX_PAYLOAD + 1);
}

static const uint8_t *req_payload(const struct echo_client *ec, int i)
{
	return ec->pattern + (i % 4096);
}

static void echo_finish(struct echo_client *ec)
{
	pthread_mutex_lock(&ec->mu);
	ec->finished = true;
	pthread_cond_signal(&ec->cv);
	pthread_mutex_unlock(&ec->mu);
}

static void echo_reply(void *arg, int err, struct st_frame *f)
{
	struct echo_req *q = arg;
	struct echo_client *ec = q->ec;
	size_t len = req_size(q->i);
	Strata__Ping *p = NULL;

	if (err != 0 || f == NULL) {
		ec->errors++;
		goto out;
	}
	p = strata__ping__unpack(NULL, f->hdr.hdr_len, f->msg);
	if (p == NULL || p->nonce != (uint64_t)q->i || strcmp(p->text, q->text) != 0 ||
	    f->hdr.type != (T_ECHO | ST_FRAME_REPLY) || f->hdr.payload_len != len ||
	    (len > 0 && memcmp(f->payload, req_payload(ec, q->i), len) != 0)) {
		ec->bad++;
	}
out:
	if (p != NULL) {
		strata__ping__free_unpacked(p, NULL);
	}
	if (++ec->done == NREQ) {
		echo_finish(ec);
	}
}

static void echo_launch(void *arg)
{
	struct echo_client *ec = arg;
	int rc = st_client_connect(ec->loop.r, ec->hostport, &ec->cl);

	if (rc < 0) {
		ec->launch_err = rc;
		echo_finish(ec);
		return;
	}
	/* All NREQ are queued before any reply can be read: they are truly concurrent. */
	for (int i = 0; i < NREQ; i++) {
		Strata__Ping ping = STRATA__PING__INIT;
		struct echo_req *q = &reqs[i];

		q->ec = ec;
		q->i = i;
		snprintf(q->text, sizeof(q->text), "echo-%d", i);
		ping.nonce = (uint64_t)i;
		ping.text = q->text;
		rc = st_client_call(ec->cl, T_ECHO, 0, &ping.base, req_payload(ec, i), req_size(i),
				    echo_reply, q);
		if (rc < 0) {
			ec->launch_err = rc;
			echo_finish(ec);
			return;
		}
	}
}

static void client_close_fn(void *arg)
{
	struct echo_client *ec = arg;

	st_client_close(ec->cl);
	ec->cl = NULL;
}

Test(rpc_echo, thousand_concurrent_requests, .timeout = 120)
{
	struct echo_server es;
	struct echo_client ec;

	memset(&ec, 0, sizeof(ec));
	echo_start(&es);
	ec.pattern = malloc(PAT_SIZE);
	cr_assert_not_null(ec.pattern);
	srand(42);
	for (size_t i = 0; i < PAT_SIZE; i++) {
		ec.pattern[i] = (uint8_t)rand();
	}
	snprintf(ec.hostport, sizeof(ec.hostport), "127.0.0.1:%d", st_server_port(es.srv));
	pthread_mutex_init(&ec.mu, NULL);
	pthread_cond_init(&ec.cv, NULL);
	loop_start(&ec.loop);

	cr_assert_eq(st_reactor_post(ec.loop.r, echo_launch, &ec), 0);
	pthread_mutex_lock(&ec.mu);
	while (!ec.finished) {
		pthread_cond_wait(&ec.cv, &ec.mu);
	}
	pthread_mutex_unlock(&ec.mu);

	cr_assert_eq(ec.launch_err, 0);
	cr_assert_eq(ec.done, NREQ);
	cr_assert_eq(ec.errors, 0);
	cr_assert_eq(ec.bad, 0);
	cr_assert_eq(atomic_load(&es.frames), NREQ);

	on_loop(&ec.loop, client_close_fn, &ec);
	loop_stop(&ec.loop);
	echo_stop(&es);
	cr_assert_eq(atomic_load(&es.closed), 1);
	free(ec.pattern);
	pthread_mutex_destroy(&ec.mu);
	pthread_cond_destroy(&ec.cv);
}

/* A frame with a bad magic closes that connection only; a second connection keeps working. */
Test(rpc_echo, garbage_closes_only_that_connection, .timeout = 60)
{
	struct echo_server es;
	char hostport[64];
	uint8_t junk[ST_FRAME_HDR_SIZE], buf[16];
	int bad, good, rc;
	Strata__Ping ping = STRATA__PING__INIT;
	Strata__Ping *back;
	struct st_frame reply;
	char payload[100];
	ssize_t n;

	echo_start(&es);
	snprintf(hostport, sizeof(hostport), "127.0.0.1:%d", st_server_port(es.srv));
	good = st_tcp_connect(hostport, 2000);
	cr_assert_geq(good, 0);
	bad = st_tcp_connect(hostport, 2000);
	cr_assert_geq(bad, 0);

	memset(junk, 0xA5, sizeof(junk));
	cr_assert_eq(st_write_full(bad, junk, sizeof(junk)), 0);
	n = read(bad, buf, sizeof(buf)); /* the server hangs up: EOF or a reset */
	cr_assert(n == 0 || (n < 0 && errno == ECONNRESET), "read returned %zd", n);
	close(bad);

	for (int round = 0; round < 3; round++) {
		memset(payload, 'a' + round, sizeof(payload));
		ping.nonce = 77 + (uint64_t)round;
		ping.text = "still here";
		rc = st_rpc_call(good, T_ECHO, 0, &ping.base, payload, sizeof(payload), &reply,
				 NULL, 0);
		cr_assert_eq(rc, 0);
		cr_assert_eq(reply.hdr.payload_len, sizeof(payload));
		cr_assert_eq(memcmp(reply.payload, payload, sizeof(payload)), 0);
		back = strata__ping__unpack(NULL, reply.hdr.hdr_len, reply.msg);
		cr_assert_not_null(back);
		cr_assert_eq(back->nonce, 77 + (uint64_t)round);
		cr_assert_str_eq(back->text, "still here");
		strata__ping__free_unpacked(back, NULL);
		st_frame_release(&reply);
	}
	cr_assert_eq(atomic_load(&es.closed), 1);
	close(good);
	echo_stop(&es);
}

/* Many plain sockets in parallel, each frame written in awkward pieces. */
Test(rpc_echo, split_writes_many_sockets, .timeout = 60)
{
	enum { NSOCK = 16 };
	struct echo_server es;
	char hostport[64];
	int fds[NSOCK];
	uint8_t frame[ST_FRAME_HDR_SIZE + 64 + 70000];
	uint8_t back[sizeof(frame)];

	echo_start(&es);
	snprintf(hostport, sizeof(hostport), "127.0.0.1:%d", st_server_port(es.srv));
	for (int i = 0; i < NSOCK; i++) {
		fds[i] = st_tcp_connect(hostport, 2000);
		cr_assert_geq(fds[i], 0);
	}
	for (int i = 0; i < NSOCK; i++) {
		Strata__Ping ping = STRATA__PING__INIT;
		struct st_frame_hdr h = {0};
		size_t mlen, plen = 70000 - (size_t)i * 3000, total, off = 0, step = 1;

		ping.nonce = (uint64_t)i;
		ping.text = "split";
		mlen = protobuf_c_message_pack(&ping.base, frame + ST_FRAME_HDR_SIZE);
		for (size_t k = 0; k < plen; k++) {
			frame[ST_FRAME_HDR_SIZE + mlen + k] = (uint8_t)(k * 31 + (size_t)i);
		}
		h.magic = ST_FRAME_MAGIC;
		h.version = ST_FRAME_VERSION;
		h.type = T_ECHO;
		h.req_id = 1000 + (uint64_t)i;
		h.hdr_len = (uint32_t)mlen;
		h.payload_len = (uint32_t)plen;
		st_frame_hdr_encode(&h, frame);
		total = ST_FRAME_HDR_SIZE + mlen + plen;
		while (off < total) {
			size_t n = step < total - off ? step : total - off;

			cr_assert_eq(st_write_full(fds[i], frame + off, n), 0);
			off += n;
			step = step * 3 + 1;
		}
		/* The echo is the same frame with the reply bit, so compare all but the header. */
		cr_assert_eq(st_read_full(fds[i], back, total), 0);
		struct st_frame_hdr rh;
		const char *why = NULL;
		cr_assert_eq(st_frame_hdr_decode(back, ST_FRAME_MAX_MSG, ST_FRAME_MAX_PAYLOAD, &rh,
						 &why),
			     0);
		cr_assert_eq(rh.type, T_ECHO | ST_FRAME_REPLY);
		cr_assert_eq(rh.req_id, 1000 + (uint64_t)i);
		cr_assert_eq(memcmp(back + ST_FRAME_HDR_SIZE, frame + ST_FRAME_HDR_SIZE,
				    total - ST_FRAME_HDR_SIZE),
			     0);
	}
	for (int i = 0; i < NSOCK; i++) {
		close(fds[i]);
	}
	echo_stop(&es);
}

/* The loop counts the time it waits (sleeping or polling): a 30 ms wait with nothing to do is
 * at least ~30 ms of idle; time spent in a callback is not. */
Test(reactor, idle_time_is_counted)
{
	struct st_reactor *r;
	cr_assert_eq(st_reactor_create(&r, 8), 0);
	uint64_t i0 = st_reactor_idle_ns(r);
	cr_assert_geq(st_reactor_run_once(r, 30), 0);
	uint64_t i1 = st_reactor_idle_ns(r);
	cr_assert_geq(i1 - i0, 25000000ull, "idle %llu ns", (unsigned long long)(i1 - i0));
	st_reactor_destroy(r);
}

/* An environment knob: unset or garbage keeps def, 0 and in-range values are taken, big ones
 * are capped. */
static void env_knob_case(const char *name, unsigned (*from_env)(unsigned), unsigned def,
			  unsigned mid, unsigned cap)
{
	char v[16];
	unsetenv(name);
	cr_assert_eq(from_env(def), def);
	setenv(name, "0", 1);
	cr_assert_eq(from_env(def), 0);
	snprintf(v, sizeof(v), "%u", mid);
	setenv(name, v, 1);
	cr_assert_eq(from_env(def), mid);
	setenv(name, "999999", 1);
	cr_assert_eq(from_env(def), cap, "capped");
	setenv(name, "fast", 1);
	cr_assert_eq(from_env(def), def, "garbage keeps the default");
	unsetenv(name);
}

Test(reactor, spin_window_from_environment)
{
	env_knob_case("STRATA_SPIN_US", st_reactor_spin_from_env, 50, 200, 1000);
}

static void count_cb(void *arg, int res)
{
	(void)res;
	(*(int *)arg)++;
}

/* With a submit batch of 2, the second queued op submits both at once, before the loop runs:
 * their writes are already in the pipe. Without one, nothing reaches the kernel until the
 * loop's own submit. */
static void submit_batch_case(unsigned batch, bool expect_early, bool file_registered_before)
{
	struct st_reactor *r;
	int p[2], done = 0;
	char b[2] = {'a', 'b'}, got[4];
	struct iovec iov[2] = {{&b[0], 1}, {&b[1], 1}};
	struct st_io io[2];

	cr_assert_eq(st_reactor_create(&r, 8), 0);
	st_reactor_set_submit_batch(r, batch);
	cr_assert_geq(st_reactor_run_once(r, 0), 0); /* submits the reactor's own wakeup read */
	cr_assert_eq(pipe2(p, O_NONBLOCK), 0);
	if (file_registered_before) {
		/* As an engine reopen does: registering and dropping a file leaves the batch alone.
		 */
		cr_assert_eq(st_reactor_register_file(r, p[0]), 0);
		st_reactor_unregister_file(r);
	}
	st_reactor_writev(r, &io[0], p[1], &iov[0], 1, (uint64_t)-1, count_cb, &done);
	cr_assert_eq(read(p[0], got, sizeof(got)), -1, "one op is below the batch");
	st_reactor_writev(r, &io[1], p[1], &iov[1], 1, (uint64_t)-1, count_cb, &done);
	ssize_t n = read(p[0], got, sizeof(got));
	if (expect_early) {
		cr_assert_eq(n, 2, "both writes were submitted by the second op");
		cr_assert_eq(memcmp(got, "ab", 2), 0, "in order");
	} else {
		cr_assert_eq(n, -1, "nothing submitted before the loop runs");
	}
	while (done < 2) {
		cr_assert_geq(st_reactor_run_once(r, 1000), 0);
	}
	if (!expect_early) {
		cr_assert_eq(read(p[0], got, sizeof(got)), 2);
	}
	close(p[0]);
	close(p[1]);
	st_reactor_destroy(r);
}

Test(reactor, submit_batch_submits_early)
{
	submit_batch_case(2, true, false);
}

Test(reactor, no_submit_batch_submits_per_turn)
{
	submit_batch_case(0, false, false);
}

Test(reactor, submit_batch_outlives_a_registered_file)
{
	submit_batch_case(2, true, true);
}

Test(reactor, submit_batch_from_environment)
{
	env_knob_case("STRATA_SUBMIT_BATCH", st_reactor_submit_batch_from_env, 4, 16, 1024);
}
