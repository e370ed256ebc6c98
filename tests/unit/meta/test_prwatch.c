/* PR_WATCH and held PR_UPDATE replies (prwatch.c), through a real meta server on a reactor
 * thread and blocking clients: a watch is held until a change and answered as a heartbeat
 * otherwise; a PR_UPDATE reply waits for every watcher's acknowledgement; a watcher that never
 * acknowledges is closed after the timeout and the update completes; a watcher blocked in its
 * own gateway's PR_UPDATE does not hold that update. Timings are shortened through the server
 * config (heartbeat 300 ms, acknowledgement timeout 800 ms). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/net.h"
#include "common/reactor.h"
#include "common/rpc.h"
#include "internal.h"
#include "../tmpdir.h"

#define HB_MS   300
#define ACK_MS  800
#define T(name) STRATA__META__META_MSG_TYPE__META_##name

static char dir[256];
static struct md_catalog *cat;
static struct st_reactor *r;
static struct md_server *srv;
static pthread_t th;
static char addr[64];

static void *run_thread(void *arg)
{
	st_reactor_run(arg);
	return NULL;
}

static void stop_fn(void *arg)
{
	md_server_stop(arg);
	st_reactor_stop(r);
}

static void setup(void)
{
	struct md_server_config cfg = {
		.listen = "127.0.0.1:0", .pr_heartbeat_ms = HB_MS, .pr_ack_timeout_ms = ACK_MS};

	cr_assert_not_null(test_mkdtemp(dir, sizeof(dir)));
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	cr_assert_eq(md_pool_create(cat, "p", 1, 0, 0, NULL), 0);
	cr_assert_eq(md_volume_create(cat, "p", "v", 1 << 20, NULL), 0);
	cr_assert_eq(st_reactor_create(&r, 0), 0);
	cr_assert_eq(md_server_start(r, cat, &cfg, &srv), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", md_server_port(srv));
	cr_assert_eq(pthread_create(&th, NULL, run_thread, r), 0);
}

static void teardown(void)
{
	cr_assert_eq(st_reactor_post(r, stop_fn, srv), 0);
	pthread_join(th, NULL);
	st_reactor_destroy(r);
	md_server_free(srv);
	md_catalog_close(cat);
	test_rmtree(dir);
}

TestSuite(prwatch, .init = setup, .fini = teardown, .timeout = 30);

static int dial(void)
{
	int fd = st_tcp_connect(addr, 2000);
	struct timeval tv = {5, 0};

	cr_assert_geq(fd, 0, "connect %s: %s", addr, strerror(-fd));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* One PR_WATCH. Returns the status; *seq and *inst from the reply. */
static int watch(int fd, uint64_t known, uint64_t instance, uint64_t gateway, uint64_t *seq,
		 uint64_t *inst)
{
	Strata__Meta__PrWatchReq req = STRATA__META__PR_WATCH_REQ__INIT;
	Strata__Meta__PrWatchReply *rep;
	struct st_frame f;
	char err[256];
	int rc;

	req.known_seq = known;
	req.instance = instance;
	req.gateway = gateway;
	rc = st_rpc_call(fd, T(PR_WATCH), 0, &req.base, NULL, 0, &f, err, sizeof(err));
	if (rc == 0) {
		rep = strata__meta__pr_watch_reply__unpack(NULL, f.hdr.hdr_len, f.msg);
		cr_assert_not_null(rep);
		*seq = rep->seq;
		*inst = rep->instance;
		strata__meta__pr_watch_reply__free_unpacked(rep, NULL);
	}
	st_frame_release(&f);
	return rc;
}

/* A blocking call on its own thread, so the test can see whether it is still held. */
struct async {
	pthread_t th;
	int fd;
	uint16_t type; /* PR_WATCH or PR_UPDATE */
	uint64_t known, instance, gateway, expected;
	int rc;
	uint64_t seq, inst, version;
	uint64_t done_ms;
	atomic_bool done;
};

static void *async_thread(void *arg)
{
	struct async *a = arg;

	if (a->type == T(PR_WATCH)) {
		a->rc = watch(a->fd, a->known, a->instance, a->gateway, &a->seq, &a->inst);
	} else {
		Strata__Meta__PrUpdateReq req = STRATA__META__PR_UPDATE_REQ__INIT;
		Strata__Meta__PrRecord rec = STRATA__META__PR_RECORD__INIT;
		Strata__Meta__PrGetReply *rep;
		struct st_frame f;
		char err[256];

		req.spec = "p/v";
		req.expected_version = a->expected;
		req.record = &rec;
		req.gateway = a->gateway;
		a->rc = st_rpc_call(a->fd, T(PR_UPDATE), 0, &req.base, NULL, 0, &f, err,
				    sizeof(err));
		if (a->rc == 0) {
			rep = strata__meta__pr_get_reply__unpack(NULL, f.hdr.hdr_len, f.msg);
			if (rep != NULL) {
				a->seq = rep->seq;
				a->inst = rep->instance;
				a->version = rep->version;
				strata__meta__pr_get_reply__free_unpacked(rep, NULL);
			} else {
				a->rc = -EBADMSG;
			}
		}
		st_frame_release(&f);
	}
	a->done_ms = st_now_ms();
	atomic_store(&a->done, true);
	return NULL;
}

static void async_start(struct async *a)
{
	atomic_store(&a->done, false);
	cr_assert_eq(pthread_create(&a->th, NULL, async_thread, a), 0);
}

static void async_join(struct async *a)
{
	pthread_join(a->th, NULL);
}

static void update_start(struct async *a, int fd, uint64_t expected, uint64_t gateway)
{
	memset(a, 0, sizeof(*a));
	a->fd = fd;
	a->type = T(PR_UPDATE);
	a->expected = expected;
	a->gateway = gateway;
	async_start(a);
}

static void watch_start(struct async *a, int fd, uint64_t known, uint64_t instance,
			uint64_t gateway)
{
	memset(a, 0, sizeof(*a));
	a->fd = fd;
	a->type = T(PR_WATCH);
	a->known = known;
	a->instance = instance;
	a->gateway = gateway;
	async_start(a);
}

static void sleep_ms(unsigned ms)
{
	usleep(ms * 1000);
}

Test(prwatch, first_watch_answers_at_once)
{
	int w = dial();
	uint64_t seq, inst, seq2, inst2;

	cr_assert_eq(watch(w, 0, 0, 0, &seq, &inst), 0);
	cr_assert_eq(seq, 1, "pr_seq starts at 1");
	cr_assert_neq(inst, 0);
	/* Another instance (a restarted meta, as the gateway sees it): answered at once. */
	cr_assert_eq(watch(w, 7, inst + 1, 0, &seq2, &inst2), 0);
	cr_assert_eq(seq2, 1);
	cr_assert_eq(inst2, inst);
	close(w);
}

Test(prwatch, heartbeat)
{
	int w = dial();
	uint64_t seq, inst, seq2, inst2, t0;

	cr_assert_eq(watch(w, 0, 0, 0, &seq, &inst), 0);
	t0 = st_now_ms();
	cr_assert_eq(watch(w, seq, inst, 0, &seq2, &inst2), 0);
	cr_assert_geq(st_now_ms() - t0, HB_MS - 50, "held until the heartbeat");
	cr_assert_lt(st_now_ms() - t0, HB_MS + 500, "answered by the heartbeat");
	cr_assert_eq(seq2, seq, "nothing changed");
	cr_assert_eq(inst2, inst);
	close(w);
}

Test(prwatch, held_until_change_and_update_held_until_ack)
{
	int w = dial(), u = dial();
	uint64_t seq, inst, t_upd;
	struct async aw, au, ack;

	cr_assert_eq(watch(w, 0, 0, 0, &seq, &inst), 0);
	watch_start(&aw, w, seq, inst, 0);
	sleep_ms(HB_MS / 3);
	cr_assert_not(atomic_load(&aw.done), "a current watch is held");

	t_upd = st_now_ms();
	update_start(&au, u, 0, 0);
	async_join(&aw);
	cr_assert_eq(aw.rc, 0);
	cr_assert_eq(aw.seq, seq + 1, "the change is pushed");
	cr_assert_eq(aw.inst, inst);
	cr_assert_lt(aw.done_ms - t_upd, HB_MS / 3, "at once, not by the heartbeat");
	sleep_ms(HB_MS); /* longer than a heartbeat, shorter than the ack timeout */
	cr_assert_not(atomic_load(&au.done), "PR_UPDATE waits for the watcher's acknowledgement");

	watch_start(&ack, w, aw.seq, inst, 0); /* the acknowledgement (held in turn) */
	async_join(&au);
	cr_assert_eq(au.rc, 0);
	cr_assert_eq(au.seq, seq + 1, "the reply carries the update's seq");
	cr_assert_eq(au.inst, inst);
	cr_assert_eq(au.version, 1);
	cr_assert_lt(au.done_ms - aw.done_ms, ACK_MS, "released by the ack, not the timeout");
	async_join(&ack); /* its heartbeat */
	cr_assert_eq(ack.rc, 0);
	cr_assert_eq(ack.seq, seq + 1);
	close(w);
	close(u);
}

Test(prwatch, laggard_closed_and_update_completes)
{
	int w = dial(), u = dial();
	uint64_t seq, inst, t0;
	char buf[64];
	struct async au;
	ssize_t n;

	cr_assert_eq(watch(w, 0, 0, 0, &seq, &inst), 0); /* registered; never acknowledges */
	t0 = st_now_ms();
	update_start(&au, u, 0, 0);
	async_join(&au);
	cr_assert_eq(au.rc, 0);
	cr_assert_geq(au.done_ms - t0, ACK_MS - 50, "waited for the laggard");
	cr_assert_lt(au.done_ms - t0, ACK_MS + 1000);
	/* meta closed the laggard's connection (nothing was pending on it). */
	n = recv(w, buf, sizeof(buf), 0);
	cr_assert_eq(n, 0, "the watcher's connection is closed (recv %zd)", n);
	close(w);

	/* With no watcher left, the next update is answered at once. */
	t0 = st_now_ms();
	update_start(&au, u, au.version, 0);
	async_join(&au);
	cr_assert_eq(au.rc, 0);
	cr_assert_lt(au.done_ms - t0, ACK_MS / 2);
	close(u);
}

Test(prwatch, own_gateway_update_does_not_wait_for_its_watch)
{
	int w = dial(), u = dial();
	uint64_t seq, inst, t0;
	struct async aw, au;

	cr_assert_eq(watch(w, 0, 0, 42, &seq, &inst), 0);
	watch_start(&aw, w, seq, inst, 42);
	sleep_ms(50);
	/* Gateway 42 is blocked in its own PR_UPDATE: its watch cannot acknowledge, and need not,
	 * since the reply brings it the new seq. */
	t0 = st_now_ms();
	update_start(&au, u, 0, 42);
	async_join(&au);
	cr_assert_eq(au.rc, 0);
	cr_assert_lt(au.done_ms - t0, ACK_MS / 2, "not held by its own gateway's watch");
	async_join(&aw);
	cr_assert_eq(aw.seq, seq + 1);

	/* Another gateway's update still waits for 42's acknowledgement. */
	update_start(&au, u, au.version, 7);
	sleep_ms(HB_MS / 2);
	cr_assert_not(atomic_load(&au.done));
	cr_assert_eq(watch(w, aw.seq, inst, 42, &seq, &inst), 0, "the ack's reply is the change");
	cr_assert_eq(seq, aw.seq + 1);
	watch_start(&aw, w, seq, inst, 42); /* acknowledges update 2 */
	async_join(&au);
	cr_assert_eq(au.rc, 0);
	cr_assert_eq(au.seq, seq);
	async_join(&aw);
	close(w);
	close(u);
}

Test(prwatch, bad_watch_refused)
{
	int w = dial();
	uint64_t seq, inst;

	cr_assert_eq(watch(w, 3, 0, 0, &seq, &inst), -EINVAL, "known_seq without an instance");
	cr_assert_eq(watch(w, 0, 0, 0, &seq, &inst), 0, "the connection carries on");
	close(w);
}
