/*
 * Reservation change push: PR_WATCH, and PR_UPDATE replies held until every watcher has seen
 * the change.
 *
 * strata-iscsi trusts its cached reservation state only while it provably has not missed a
 * change. This module gives it that proof:
 *
 *   pr_seq   in memory, 1 at start, +1 on every successful PR_UPDATE (any volume)
 *   instance random per process: a restarted meta starts pr_seq again, and a gateway that
 *            sees a new instance treats it as a change
 *
 *   gateway --PR_WATCH{known_seq, instance, gateway}--> watcher (one per connection)
 *       answered at once when pr_seq > known_seq or the instance differs,
 *       else held, answered on the next bump or after hb_ms (heartbeat, same seq)
 *
 *   PR_UPDATE commits, pr_seq = S --> every held watch answered (S)
 *                                 --> the PR_UPDATE reply is held (md_prheld) until each
 *                                     watcher acknowledged S, i.e. sent PR_WATCH{known >= S,
 *                                     same instance}, or ack_ms passed: then the laggards are
 *                                     closed (logged) and the reply goes out anyway.
 *
 * Why this fences the next command. A gateway that acknowledged S has marked every cached
 * record older than S stale (it bumps its own generation before re-arming), so its next
 * command reloads. A gateway that did not acknowledge in ack_ms has had no watch reply for at
 * least ack_ms (its last one was sent before S, and a reply was pending for it since S), so its
 * lease (2 s < ack_ms) has run out and it is back to asking meta before every command; meta
 * also closes its watch connection so it reconnects from scratch.
 *
 * The self-wait problem. strata-iscsi issues PR_UPDATE with a blocking call on its reactor
 * thread, the thread that would acknowledge. Two gateways updating at once would each wait
 * for the other's acknowledgement until ack_ms. So a watcher also counts as having
 * acknowledged S while a PR_UPDATE from the same gateway (PrUpdateReq.gateway ==
 * PrWatchReq.gateway, nonzero) with seq >= S is held here: that gateway is blocked in the
 * call, serves nothing meanwhile, and its reply carries that seq, from which it marks older
 * caches stale before it serves again. Held updates therefore release in seq order, never in
 * a cycle. If that update's connection closes (the gateway gave up), the exemption goes with
 * it.
 *
 * Cost: watchers are a short list (one per gateway process), scanned per event. A periodic
 * timer of min(hb_ms, ack_ms) / 10 (at least 10 ms) answers heartbeats and enforces timeouts.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/queue.h>
#include <unistd.h>

#include "common/log.h"
#include "common/rpc.h"
#include "internal.h"

#define PRW_HB_MS  1000
#define PRW_ACK_MS 5000

struct md_prwatcher {
	TAILQ_ENTRY(md_prwatcher) link;
	struct st_conn *c;
	uint64_t gateway;
	uint64_t acked; /* highest seq acknowledged at the current instance */
	bool pending;   /* a watch is held: req_id, hb_due */
	bool dropped;   /* closed by us for not acknowledging; no longer waited for */
	uint64_t req_id;
	uint64_t hb_due;
};

struct md_prheld {
	TAILQ_ENTRY(md_prheld) link;
	struct st_conn *c; /* the PR_UPDATE's connection */
	uint16_t type;     /* reply type */
	uint64_t req_id;
	uint8_t *msg;
	size_t len;
	uint64_t seq;
	uint64_t gateway;
	uint64_t deadline_ms;
};

struct md_prwatch {
	struct st_reactor *r;
	uint64_t seq, instance;
	uint64_t hb_ms, ack_ms;
	TAILQ_HEAD(, md_prwatcher) watchers;
	TAILQ_HEAD(, md_prheld) held;
	struct st_io timer;
	bool stopping;
};

static void tick(void *arg, int res);

static uint64_t period(const struct md_prwatch *pw)
{
	uint64_t p = (pw->hb_ms < pw->ack_ms ? pw->hb_ms : pw->ack_ms) / 10;
	return p < 10 ? 10 : p;
}

int md_prwatch_create(struct st_reactor *r, uint64_t hb_ms, uint64_t ack_ms,
		      struct md_prwatch **out)
{
	struct md_prwatch *pw = calloc(1, sizeof(*pw));

	if (pw == NULL) {
		return -ENOMEM;
	}
	pw->r = r;
	pw->seq = 1;
	pw->hb_ms = hb_ms ? hb_ms : PRW_HB_MS;
	pw->ack_ms = ack_ms ? ack_ms : PRW_ACK_MS;
	while (pw->instance == 0) {
		if (getrandom(&pw->instance, sizeof(pw->instance), 0) != sizeof(pw->instance)) {
			pw->instance = st_now_ms() ^ ((uint64_t)getpid() << 32);
		}
	}
	TAILQ_INIT(&pw->watchers);
	TAILQ_INIT(&pw->held);
	*out = pw;
	return 0;
}

void md_prwatch_start(struct md_prwatch *pw)
{
	st_reactor_timer(pw->r, &pw->timer, period(pw), tick, pw);
}

uint64_t md_prwatch_seq(const struct md_prwatch *pw)
{
	return pw->seq;
}

uint64_t md_prwatch_instance(const struct md_prwatch *pw)
{
	return pw->instance;
}

static void answer(struct md_prwatch *pw, struct md_prwatcher *w)
{
	Strata__Meta__PrWatchReply m = STRATA__META__PR_WATCH_REPLY__INIT;

	w->pending = false;
	m.seq = pw->seq;
	m.instance = pw->instance;
	st_conn_send(w->c, STRATA__META__META_MSG_TYPE__META_PR_WATCH | ST_FRAME_REPLY, w->req_id,
		     0, 0, &m.base, NULL, 0, NULL, NULL);
}

/* Has w seen seq? Its own acknowledgement, or a held update of its gateway at seq or later. */
static bool has_seen(const struct md_prwatch *pw, const struct md_prwatcher *w, uint64_t seq)
{
	const struct md_prheld *h;

	if (w->dropped || w->acked >= seq) {
		return true;
	}
	if (w->gateway == 0) {
		return false;
	}
	TAILQ_FOREACH(h, &pw->held, link)
	{
		if (h->c != NULL && h->gateway == w->gateway && h->seq >= seq) {
			return true;
		}
	}
	return false;
}

/* Send every held PR_UPDATE reply whose seq all watchers have seen; past its deadline, close
 * the laggards first. */
static void release(struct md_prwatch *pw)
{
	uint64_t now = st_now_ms();
	struct md_prheld *h, *next;
	struct md_prwatcher *w;
	bool again = true;

	/* Sending one reply can exempt nothing new, but dropping laggards of an expired hold
	 * can complete another: loop until stable (few held replies, few watchers). */
	while (again) {
		again = false;
		for (h = TAILQ_FIRST(&pw->held); h != NULL; h = next) {
			next = TAILQ_NEXT(h, link);
			bool all = true;
			TAILQ_FOREACH(w, &pw->watchers, link)
			{
				if (!has_seen(pw, w, h->seq)) {
					all = false;
					break;
				}
			}
			if (!all && h->c != NULL && now < h->deadline_ms) {
				continue;
			}
			if (!all && h->c != NULL) {
				TAILQ_FOREACH(w, &pw->watchers, link)
				{
					if (!has_seen(pw, w, h->seq)) {
						st_warn("reservation watcher %s did not "
							"acknowledge "
							"change %llu within %llu ms: closing it",
							st_conn_peer(w->c),
							(unsigned long long)h->seq,
							(unsigned long long)pw->ack_ms);
						w->dropped = true;
						w->pending = false;
						st_conn_close(w->c);
					}
				}
			}
			TAILQ_REMOVE(&pw->held, h, link);
			if (h->c != NULL) {
				st_conn_send_packed(h->c, h->type, h->req_id, 0, 0, h->msg, h->len,
						    NULL, 0, NULL, NULL);
			}
			free(h->msg);
			free(h);
			again = true; /* a removed hold may have exempted a watcher: rescan */
			break;
		}
	}
}

static struct md_prwatcher *watcher_of(struct md_prwatch *pw, struct st_conn *c)
{
	struct md_prwatcher *w;

	TAILQ_FOREACH(w, &pw->watchers, link)
	{
		if (w->c == c) {
			return w;
		}
	}
	return NULL;
}

int md_prwatch_watch(struct md_prwatch *pw, struct st_conn *c, uint64_t req_id,
		     const Strata__Meta__PrWatchReq *r)
{
	struct md_prwatcher *w = watcher_of(pw, c);

	if (w == NULL) {
		w = calloc(1, sizeof(*w));
		if (w == NULL) {
			return -ENOMEM;
		}
		w->c = c;
		TAILQ_INSERT_TAIL(&pw->watchers, w, link);
	}
	if (w->dropped) {
		return 0; /* closing: no reply */
	}
	if (w->pending) {
		answer(pw, w); /* a second watch replaces the first, which gets the current seq */
	}
	w->gateway = r->gateway;
	w->req_id = req_id;
	if (r->instance == pw->instance && r->known_seq > w->acked) {
		/* An acknowledgement never runs ahead of what meta has told anyone. */
		w->acked = r->known_seq < pw->seq ? r->known_seq : pw->seq;
	}
	if (r->instance != pw->instance || r->known_seq != pw->seq) {
		answer(pw, w);
	} else {
		w->pending = true;
		w->hb_due = st_now_ms() + pw->hb_ms;
	}
	release(pw);
	return 0;
}

uint64_t md_prwatch_bump(struct md_prwatch *pw)
{
	struct md_prwatcher *w;

	pw->seq++;
	TAILQ_FOREACH(w, &pw->watchers, link)
	{
		if (w->pending) {
			answer(pw, w);
		}
	}
	return pw->seq;
}

int md_prwatch_hold(struct md_prwatch *pw, struct st_conn *c, uint16_t type, uint64_t req_id,
		    const ProtobufCMessage *msg, uint64_t seq, uint64_t gateway)
{
	struct md_prheld *h = calloc(1, sizeof(*h));

	if (h == NULL || st_pack_msg(msg, &h->msg, &h->len) < 0) {
		free(h);
		return -ENOMEM;
	}
	h->c = c;
	h->type = type;
	h->req_id = req_id;
	h->seq = seq;
	h->gateway = gateway;
	h->deadline_ms = st_now_ms() + pw->ack_ms;
	TAILQ_INSERT_TAIL(&pw->held, h, link);
	release(pw);
	return 0;
}

void md_prwatch_conn_closed(struct md_prwatch *pw, struct st_conn *c)
{
	struct md_prwatcher *w = watcher_of(pw, c);
	struct md_prheld *h;

	if (w != NULL) {
		TAILQ_REMOVE(&pw->watchers, w, link);
		free(w);
	}
	TAILQ_FOREACH(h, &pw->held, link)
	{
		if (h->c == c) {
			h->c = NULL; /* released (dropped) by the next release() */
		}
	}
	release(pw);
}

static void tick(void *arg, int res)
{
	struct md_prwatch *pw = arg;
	uint64_t now = st_now_ms();
	struct md_prwatcher *w;

	if (res == -ECANCELED || pw->stopping) {
		return;
	}
	TAILQ_FOREACH(w, &pw->watchers, link)
	{
		if (w->pending && now >= w->hb_due) {
			answer(pw, w);
		}
	}
	release(pw);
	st_reactor_timer(pw->r, &pw->timer, period(pw), tick, pw);
}

void md_prwatch_stop(struct md_prwatch *pw)
{
	if (pw != NULL) {
		pw->stopping = true;
	}
}

void md_prwatch_free(struct md_prwatch *pw)
{
	struct md_prwatcher *w;
	struct md_prheld *h;

	if (pw == NULL) {
		return;
	}
	while ((w = TAILQ_FIRST(&pw->watchers)) != NULL) {
		TAILQ_REMOVE(&pw->watchers, w, link);
		free(w);
	}
	while ((h = TAILQ_FIRST(&pw->held)) != NULL) {
		TAILQ_REMOVE(&pw->held, h, link);
		free(h->msg);
		free(h);
	}
	free(pw);
}
