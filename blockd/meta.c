/*
 * The meta session: register, heartbeat, follow the cluster map.
 *
 *   tick (every 1 s) --no client--> connect --> NODE_REGISTER {addr, capacity, weight, uuid}
 *        |                                         --> node_id, map epoch
 *        +--registered--> NODE_HEARTBEAT {node_id, used, capacity, PG counts per pool}
 *        +--no watch out--> MAP_WATCH {known_epoch} --> newer ClusterMap --> epoch
 *   any error: drop the client; the next tick reconnects and registers again (the uuid gives
 *   the node its old id back).
 *   a PG's first mutation on this node --claim_kick--> NODE_HEARTBEAT now, reporting the PG
 *        held --answered--> the mutation goes on (holder claims, dist.c)
 *
 * The data path never waits on any of this, but for that first mutation of a PG.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rpc.h"
#include "internal.h"
#include "meta.pb-c.h"

struct bd_meta {
	struct st_reactor *r;
	struct bd_engine *e;
	struct bd_dist *d;
	char *meta_addr;
	char *self;
	char uuid[37];
	struct st_client *cl;
	struct st_io timer;
	struct st_io drain_io; /* polls until old-epoch mutations drain before acknowledging */
	struct st_io kick_io;  /* a heartbeat asked for now (holder claims) */
	bool kick_armed, hb_again;
	bool drain_armed;
	bool stopping;
	bool broken;
	bool registered;
	bool reg_pending, hb_pending, watch_pending;
	uint32_t node_id;
	uint64_t epoch;
	bool warned;
};

static void tick(void *arg, int res);

static void arm(struct bd_meta *m, uint64_t ms)
{
	if (!m->stopping) {
		st_reactor_timer(m->r, &m->timer, ms, tick, m);
	}
}

static void set_epoch(struct bd_meta *m, uint64_t epoch)
{
	if (epoch > m->epoch) {
		st_debug("cluster map epoch %lu", (unsigned long)epoch);
		m->epoch = epoch;
	}
}

static void register_done(void *arg, int err, struct st_frame *reply)
{
	struct bd_meta *m = arg;
	m->reg_pending = false;
	if (err || !reply) {
		if (err != -ECANCELED) {
			st_warn("meta %s: register failed: %s", m->meta_addr, strerror(-err));
		}
		m->broken = true;
		return;
	}
	Strata__Meta__NodeRegisterReply *r =
		strata__meta__node_register_reply__unpack(NULL, reply->hdr.hdr_len, reply->msg);
	if (!r) {
		m->broken = true;
		return;
	}
	m->node_id = r->node_id;
	m->registered = true;
	bd_dist_set_self(m->d, m->node_id);
	bd_dist_claims_reset(m->d); /* a new session: meta may have given our data up (out) */
	if (r->map) {
		set_epoch(m, r->map->epoch);
		bd_dist_set_map(m->d, r->map); /* ownership passes */
		r->map = NULL;
	}
	st_info("registered with meta %s as node %u (map epoch %lu)", m->meta_addr, m->node_id,
		(unsigned long)m->epoch);
	m->warned = false;
	strata__meta__node_register_reply__free_unpacked(r, NULL);
}

static void send_heartbeat(struct bd_meta *m);

static void heartbeat_done(void *arg, int err, struct st_frame *reply)
{
	struct bd_meta *m = arg;
	m->hb_pending = false;
	if (m->stopping) {
		return;
	}
	/* meta committed the holder sets before it answered (meta/holders.c). */
	bd_dist_claims_done(m->d, err == 0 && reply != NULL && reply->hdr.status == 0);
	if (err || !reply) {
		m->broken = true;
		return;
	}
	if (m->hb_again) {
		send_heartbeat(m);
	}
	Strata__Meta__NodeHeartbeatReply *r =
		strata__meta__node_heartbeat_reply__unpack(NULL, reply->hdr.hdr_len, reply->msg);
	if (r) {
		/* Only a map moves our epoch (MAP_WATCH delivers it); a bare number would make
		 * the watch skip the map of that epoch. */
		strata__meta__node_heartbeat_reply__free_unpacked(r, NULL);
	}
}

static void watch_done(void *arg, int err, struct st_frame *reply);

static void drain_fired(void *arg, int res);

/*
 * (Re)arm the MAP_WATCH long-poll. Its known_epoch is our acknowledgement of that epoch to
 * meta's fence (meta/fence.c): a snapshot's reply waits for it. So it goes out only once no
 * mutation admitted at an older epoch is still running here; until then poll every 1 ms.
 */
static void arm_watch(struct bd_meta *m)
{
	if (m->watch_pending || m->broken || !m->cl || m->stopping) {
		return;
	}
	if (m->d != NULL && !bd_dist_drained(m->d, m->epoch)) {
		if (!m->drain_armed) {
			m->drain_armed = true;
			st_reactor_timer(m->r, &m->drain_io, 1, drain_fired, m);
		}
		return;
	}
	Strata__Meta__MapWatchReq w = STRATA__META__MAP_WATCH_REQ__INIT;
	w.known_epoch = m->epoch;
	w.node_id = m->registered ? m->node_id : 0;
	if (st_client_call(m->cl, STRATA__META__META_MSG_TYPE__META_MAP_WATCH, 0, &w.base, NULL, 0,
			   watch_done, m) == 0) {
		m->watch_pending = true;
	} else {
		m->broken = true;
	}
}

static void drain_fired(void *arg, int res)
{
	struct bd_meta *m = arg;
	m->drain_armed = false;
	if (res == -ECANCELED || m->stopping) {
		return;
	}
	arm_watch(m);
}

static void watch_done(void *arg, int err, struct st_frame *reply)
{
	struct bd_meta *m = arg;
	m->watch_pending = false;
	if (err || !reply) {
		m->broken = true;
		return;
	}
	Strata__Meta__ClusterMap *map =
		strata__meta__cluster_map__unpack(NULL, reply->hdr.hdr_len, reply->msg);
	if (map) {
		set_epoch(m, map->epoch);
		bd_dist_set_map(m->d, map); /* ownership passes */
	}
	/* Re-arm the long-poll at once (once old-epoch mutations have drained). */
	arm_watch(m);
}

static void drop_client(struct bd_meta *m)
{
	if (m->cl) {
		struct st_client *cl = m->cl;
		m->cl = NULL;
		st_client_close(cl);
	}
	m->broken = false;
	m->registered = false;
	m->reg_pending = m->hb_pending = m->watch_pending = false;
}

/* One NODE_HEARTBEAT: space, PG counts, and the PGs held (or claimed: dist.c). */
static void send_heartbeat(struct bd_meta *m)
{
	if (m->hb_pending) {
		m->hb_again = true; /* a claim came after this one was built */
		return;
	}
	m->hb_again = false; /* this one reports every claim wanted so far */
	struct bd_space sp;
	bd_engine_space(m->e, &sp);
	Strata__Meta__NodeHeartbeatReq h = STRATA__META__NODE_HEARTBEAT_REQ__INIT;
	h.node_id = m->node_id;
	h.used = sp.used_blocks * BD_BLOCK;
	h.capacity = sp.total_blocks * BD_BLOCK;
	/* PG health for `strata status` (meta keeps the latest report per node). */
	struct bd_dist_stats ds;
	bool ds_ok = bd_dist_stats(m->d, &ds) == 0;
	Strata__Meta__PoolPgStats ps[ds.npools ? ds.npools : 1];
	Strata__Meta__PoolPgStats *pps[ds.npools ? ds.npools : 1];
	Strata__Meta__PoolHeld hv[ds.npools ? ds.npools : 1];
	Strata__Meta__PoolHeld *phv[ds.npools ? ds.npools : 1];
	size_t nheld = 0;
	for (size_t i = 0; i < ds.npools; i++) {
		strata__meta__pool_pg_stats__init(&ps[i]);
		ps[i].pool_id = ds.pools[i].pool;
		ps[i].clean = ds.pools[i].clean;
		ps[i].degraded = ds.pools[i].degraded;
		ps[i].recovering = ds.pools[i].recovering;
		ps[i].down = ds.pools[i].down;
		ps[i].full = ds.pools[i].full;
		ps[i].primary = ds.pools[i].primary;
		ps[i].member = ds.pools[i].member;
		ps[i].stray = ds.pools[i].stray;
		pps[i] = &ps[i];
		if (ds.pools[i].held) { /* which PGs' data we hold (meta/holders.c) */
			strata__meta__pool_held__init(&hv[nheld]);
			hv[nheld].pool_id = ds.pools[i].pool;
			hv[nheld].pgs.data = ds.pools[i].held;
			hv[nheld].pgs.len = (ds.pools[i].pg_count + 7) / 8;
			phv[nheld] = &hv[nheld];
			nheld++;
		}
	}
	h.pgs_epoch = ds_ok ? ds.epoch : 0; /* 0: no report this time */
	h.n_pgs = ds.npools;
	h.pgs = pps;
	h.objects_recovered = ds.objects_recovered;
	h.objects_to_recover = ds.objects_to_recover;
	h.n_held = nheld;
	h.held = phv;
	int rc = st_client_call(m->cl, STRATA__META__META_MSG_TYPE__META_NODE_HEARTBEAT, 0, &h.base,
				NULL, 0, heartbeat_done, m);
	bd_dist_stats_free(&ds);
	if (rc == 0) {
		m->hb_pending = true;
	} else {
		m->broken = true;
	}
}

/* Holder claims (dist.c): a PG's first mutation waits for a heartbeat that reports it. */
static void kick_fired(void *arg, int res)
{
	struct bd_meta *m = arg;
	m->kick_armed = false;
	if (res == -ECANCELED || m->stopping) {
		return;
	}
	if (m->registered && m->cl && !m->broken) {
		send_heartbeat(m);
	} /* else the tick registers again, and its heartbeats carry the claim */
}

static void claim_kick(void *arg)
{
	struct bd_meta *m = arg;
	if (!m->kick_armed && !m->stopping) {
		m->kick_armed = true;
		st_reactor_timer(m->r, &m->kick_io, 0, kick_fired, m);
	}
}

static void tick(void *arg, int res)
{
	struct bd_meta *m = arg;
	if (res == -ECANCELED || m->stopping) {
		return;
	}
	if (m->cl && (m->broken || !st_client_alive(m->cl))) {
		drop_client(m);
	}
	if (!m->cl) {
		int rc = st_client_connect(m->r, m->meta_addr, &m->cl);
		if (rc < 0) {
			m->cl = NULL;
			if (!m->warned) {
				st_warn("meta %s unreachable (%s); retrying every second",
					m->meta_addr, strerror(-rc));
				m->warned = true;
			}
			arm(m, 1000);
			return;
		}
	}
	struct bd_space sp;
	bd_engine_space(m->e, &sp);
	if (!m->registered) {
		if (!m->reg_pending) {
			Strata__Meta__NodeRegisterReq q = STRATA__META__NODE_REGISTER_REQ__INIT;
			q.addr = m->self;
			q.capacity = sp.total_blocks * BD_BLOCK;
			q.weight = 1;
			q.uuid = m->uuid;
			if (st_client_call(m->cl, STRATA__META__META_MSG_TYPE__META_NODE_REGISTER,
					   0, &q.base, NULL, 0, register_done, m) == 0) {
				m->reg_pending = true;
			} else {
				m->broken = true;
			}
		}
		arm(m, m->reg_pending ? 200 : 1000);
		return;
	}
	if (!m->hb_pending) {
		send_heartbeat(m);
	}
	arm_watch(m);
	arm(m, 1000);
}

int bd_meta_start(struct st_reactor *r, struct bd_engine *e, struct bd_dist *d, const char *meta,
		  const char *self, struct bd_meta **out)
{
	struct bd_meta *m = calloc(1, sizeof(*m));
	if (!m) {
		return -ENOMEM;
	}
	m->r = r;
	m->e = e;
	m->d = d;
	m->meta_addr = strdup(meta);
	m->self = strdup(self);
	if (!m->meta_addr || !m->self) {
		free(m->meta_addr);
		free(m->self);
		free(m);
		return -ENOMEM;
	}
	bd_engine_uuid(e, m->uuid);
	bd_dist_set_claim_kick(d, claim_kick, m);
	arm(m, 0);
	*out = m;
	return 0;
}

void bd_meta_stop(struct bd_meta *m)
{
	if (!m) {
		return;
	}
	/* After the reactor stopped running: the heartbeat timer's callback still runs (cancelled)
	 * in st_reactor_destroy() and sees `stopping`. */
	m->stopping = true;
	drop_client(m);
	st_reactor_cancel(m->r, &m->timer);
	st_reactor_cancel(m->r, &m->drain_io);
	st_reactor_cancel(m->r, &m->kick_io);
}

void bd_meta_free(struct bd_meta *m)
{
	if (!m) {
		return;
	}
	free(m->meta_addr);
	free(m->self);
	free(m);
}

uint64_t bd_meta_epoch(const struct bd_meta *m)
{
	return m->epoch;
}

uint32_t bd_meta_node_id(const struct bd_meta *m)
{
	return m->node_id;
}
