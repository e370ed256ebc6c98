/*
 * Cluster handle: the I/O thread, the cluster map and the connections to blockd nodes.
 *
 * The map arrives by long-poll: MAP_WATCH{known_epoch} is held by meta until the epoch moves,
 * so a node failure reaches every client within one round trip of meta noticing it. When the
 * meta connection drops, the client keeps routing by the last map and reconnects every second.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/net.h"
#include "embed.h"
#include "internal.h"
#include "meta.pb-c.h"

#define META_RECONNECT_MS 1000

static void map_free(struct sc_map *m)
{
	if (m == NULL) {
		return;
	}
	free(m->place);
	free(m->addr);
	free(m->pools);
	free(m);
}

static struct sc_map *map_from_proto(const Strata__Meta__ClusterMap *pm)
{
	struct sc_map *m = calloc(1, sizeof(*m));

	if (m == NULL) {
		return NULL;
	}
	m->epoch = pm->epoch;
	m->n_nodes = pm->n_nodes;
	m->place = calloc(pm->n_nodes ? pm->n_nodes : 1, sizeof(*m->place));
	m->addr = calloc(pm->n_nodes ? pm->n_nodes : 1, sizeof(*m->addr));
	m->n_pools = pm->n_pools;
	m->pools = calloc(pm->n_pools ? pm->n_pools : 1, sizeof(*m->pools));
	if (!m->place || !m->addr || !m->pools) {
		map_free(m);
		return NULL;
	}
	for (size_t i = 0; i < pm->n_nodes; i++) {
		const Strata__Meta__Node *n = pm->nodes[i];
		m->place[i].id = n->id;
		m->place[i].weight = n->weight;
		m->place[i].up = n->state == STRATA__META__NODE_STATE__NODE_UP;
		m->place[i].joining = n->joining;
		snprintf(m->addr[i], sizeof(m->addr[i]), "%s", n->addr ? n->addr : "");
	}
	for (size_t i = 0; i < pm->n_pools; i++) {
		const Strata__Meta__Pool *p = pm->pools[i];
		m->pools[i] = (struct sc_pool){.id = p->id,
					       .replicas = p->replicas,
					       .object_size = p->object_size,
					       .pg_count = p->pg_count};
	}
	return m;
}

/* Reactor thread: install a newer map, drop connections to nodes whose address changed or
 * that left, and restart the requests that were waiting for a map. */
static void map_install(strata_cluster *c, struct sc_map *m)
{
	struct sc_map *old;

	pthread_mutex_lock(&c->map_lock);
	old = c->map;
	if (old != NULL && m->epoch < old->epoch) {
		pthread_mutex_unlock(&c->map_lock);
		map_free(m);
		return;
	}
	c->map = m;
	atomic_store(&c->epoch, m->epoch);
	pthread_mutex_unlock(&c->map_lock);
	if (old != NULL && old->epoch != m->epoch) {
		st_debug("map epoch %llu -> %llu", (unsigned long long)old->epoch,
			 (unsigned long long)m->epoch);
	}
	for (size_t i = 0; old != NULL && i < old->n_nodes; i++) {
		uint32_t id = old->place[i].id;
		bool same = false;
		for (size_t j = 0; j < m->n_nodes; j++) {
			if (m->place[j].id == id && strcmp(m->addr[j], old->addr[i]) == 0) {
				same = true;
			}
		}
		if (!same && id < SC_MAX_NODES && c->nodes[id] != NULL) {
			st_client_close(c->nodes[id]);
			c->nodes[id] = NULL;
		}
	}
	map_free(old);
}

const struct sc_pool *sc_map_pool(const struct sc_map *m, uint32_t pool_id)
{
	for (size_t i = 0; m != NULL && i < m->n_pools; i++) {
		if (m->pools[i].id == pool_id) {
			return &m->pools[i];
		}
	}
	return NULL;
}

int sc_primary(strata_cluster *c, uint32_t pool_id, uint64_t family, uint64_t obj,
	       uint32_t *node_id)
{
	const struct sc_map *m = c->map;
	const struct sc_pool *p = sc_map_pool(m, pool_id);

	if (p == NULL) {
		return -EAGAIN;
	}
	uint32_t pg = st_place_pg(family, obj, p->pg_count);
	size_t idx[8];
	/* The whole acting set, as blockd chooses it: a joining node among the R chosen does
	 * not lead (placement.h), which choosing one node alone would not see. */
	if (st_place_replicas(pool_id, pg, m->place, m->n_nodes, p->replicas ? p->replicas : 1,
			      idx) == 0) {
		return -EAGAIN; /* no node up: wait for the map to change */
	}
	*node_id = m->place[idx[0]].id;
	return 0;
}

struct st_client *sc_node_client(strata_cluster *c, uint32_t node_id)
{
	const struct sc_map *m = c->map;

	if (node_id >= SC_MAX_NODES) {
		return NULL;
	}
	if (c->nodes[node_id] != NULL && st_client_alive(c->nodes[node_id])) {
		return c->nodes[node_id];
	}
	if (c->nodes[node_id] != NULL) {
		st_client_close(c->nodes[node_id]);
		c->nodes[node_id] = NULL;
	}
	for (size_t i = 0; m != NULL && i < m->n_nodes; i++) {
		if (m->place[i].id == node_id) {
			struct st_client *cl;
			int rc = st_client_connect(c->r, m->addr[i], &cl);
			if (rc < 0) {
				st_debug("connect to node %u at %s: %s", node_id, m->addr[i],
					 strerror(-rc));
				return NULL;
			}
			c->nodes[node_id] = cl;
			return cl;
		}
	}
	return NULL;
}

void sc_node_failed(strata_cluster *c, uint32_t node_id)
{
	if (node_id < SC_MAX_NODES && c->nodes[node_id] != NULL) {
		st_client_close(c->nodes[node_id]);
		c->nodes[node_id] = NULL;
	}
	sc_map_refresh(c);
}

/* ---- meta connection: map watch ---------------------------------------------------------- */

static void meta_arm(strata_cluster *c);

static void meta_retry_fired(void *arg, int res)
{
	strata_cluster *c = arg;

	(void)res;
	c->timers--;
	c->meta_retry_armed = false;
	if (!c->stopping) {
		meta_arm(c);
	}
}

static void meta_lost(strata_cluster *c)
{
	if (c->meta != NULL) {
		st_client_close(c->meta);
		c->meta = NULL;
	}
	c->watch_armed = false;
	c->map_fetching = false;
	if (!c->meta_retry_armed && !c->stopping) {
		c->meta_retry_armed = true;
		c->timers++;
		st_reactor_timer(c->r, &c->meta_retry_io, META_RECONNECT_MS, meta_retry_fired, c);
	}
}

static void map_reply(strata_cluster *c, int err, struct st_frame *reply)
{
	if (err < 0 || reply == NULL) {
		return;
	}
	Strata__Meta__ClusterMap *pm =
		strata__meta__cluster_map__unpack(NULL, reply->hdr.hdr_len, reply->msg);
	if (pm == NULL) {
		st_warn("meta sent an undecodable cluster map");
		return;
	}
	struct sc_map *m = map_from_proto(pm);
	strata__meta__cluster_map__free_unpacked(pm, NULL);
	if (m != NULL) {
		map_install(c, m);
	}
}

static void watch_done(void *arg, int err, struct st_frame *reply)
{
	strata_cluster *c = arg;

	c->watch_armed = false;
	if (c->stopping || err == -ECANCELED) {
		return;
	}
	if (err < 0) {
		meta_lost(c);
		return;
	}
	map_reply(c, err, reply);
	meta_arm(c);
}

static void get_done(void *arg, int err, struct st_frame *reply)
{
	strata_cluster *c = arg;

	c->map_fetching = false;
	if (c->stopping || err == -ECANCELED) {
		return;
	}
	if (err < 0) {
		meta_lost(c);
		return;
	}
	map_reply(c, err, reply);
}

static void meta_arm(strata_cluster *c)
{
	if (c->meta == NULL || !st_client_alive(c->meta)) {
		if (c->meta != NULL) {
			st_client_close(c->meta);
			c->meta = NULL;
		}
		if (st_client_connect(c->r, c->meta_addr, &c->meta) < 0) {
			c->meta = NULL;
			meta_lost(c);
			return;
		}
	}
	if (!c->watch_armed) {
		Strata__Meta__MapWatchReq req = STRATA__META__MAP_WATCH_REQ__INIT;
		req.known_epoch = atomic_load(&c->epoch);
		if (st_client_call(c->meta, STRATA__META__META_MSG_TYPE__META_MAP_WATCH, 0,
				   &req.base, NULL, 0, watch_done, c) == 0) {
			c->watch_armed = true;
		} else {
			meta_lost(c);
		}
	}
}

struct st_client *sc_meta_client(strata_cluster *c)
{
	if (c->stopping) {
		return NULL;
	}
	if (c->meta == NULL || !st_client_alive(c->meta)) {
		meta_arm(c);
	}
	return c->meta;
}

void sc_map_refresh(strata_cluster *c)
{
	if (c->map_fetching || c->stopping) {
		return;
	}
	if (c->meta == NULL || !st_client_alive(c->meta)) {
		meta_arm(c);
		if (c->meta == NULL) {
			return;
		}
	}
	Strata__Meta__MapGetReq req = STRATA__META__MAP_GET_REQ__INIT;
	if (st_client_call(c->meta, STRATA__META__META_MSG_TYPE__META_MAP_GET, 0, &req.base, NULL,
			   0, get_done, c) == 0) {
		c->map_fetching = true;
	}
}

/* ---- blocking calls to meta from user threads ------------------------------------------- */

/* One request on a fresh connection. Returns the reply status or a transport -errno. */
int sc_meta_call(strata_cluster *c, uint16_t type, const ProtobufCMessage *msg,
		 struct st_frame *reply, char *err, size_t errlen)
{
	int fd = st_tcp_connect(c->meta_addr, 5000);
	int rc;

	memset(reply, 0, sizeof(*reply));
	if (fd < 0) {
		if (err != NULL) {
			snprintf(err, errlen, "cannot reach strata-meta at %s: %s", c->meta_addr,
				 strerror(-fd));
		}
		return fd;
	}
	rc = st_rpc_call(fd, type, 0, msg, NULL, 0, reply, err, errlen);
	close(fd);
	return rc;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void *io_thread(void *arg)
{
	strata_cluster *c = arg;

	st_reactor_run(c->r);
	return NULL;
}

static void start_watch(void *arg)
{
	meta_arm(arg);
}

/* Fetches the first map and sets up c on reactor r (NULL: a new one of its own). */
static int cluster_connect(const char *meta_addr, enum sc_mode mode, struct st_reactor *r,
			   strata_cluster **out)
{
	strata_cluster *c;
	struct st_frame reply;
	char err[256] = "";
	int rc;

	if (out == NULL) {
		return -EINVAL;
	}
	if (meta_addr == NULL) {
		meta_addr = getenv("STRATA_META");
	}
	if (meta_addr == NULL || meta_addr[0] == '\0') {
		meta_addr = "127.0.0.1:7700";
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		return -ENOMEM;
	}
	snprintf(c->meta_addr, sizeof(c->meta_addr), "%s", meta_addr);
	c->mode = mode;
	pthread_mutex_init(&c->map_lock, NULL);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	c->client_id = st_hash64((uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_nsec ^
				 (uint64_t)ts.tv_sec << 20 ^ (uintptr_t)c);
	if (c->client_id == 0) {
		c->client_id = 1;
	}

	Strata__Meta__MapGetReq req = STRATA__META__MAP_GET_REQ__INIT;
	rc = sc_meta_call(c, STRATA__META__META_MSG_TYPE__META_MAP_GET, &req.base, &reply, err,
			  sizeof(err));
	if (rc < 0) {
		st_debug("strata_connect: %s", err);
		goto fail_free;
	}
	Strata__Meta__ClusterMap *pm =
		strata__meta__cluster_map__unpack(NULL, reply.hdr.hdr_len, reply.msg);
	st_frame_release(&reply);
	if (pm == NULL) {
		rc = -EBADMSG;
		goto fail_free;
	}
	c->map = map_from_proto(pm);
	strata__meta__cluster_map__free_unpacked(pm, NULL);
	if (c->map == NULL) {
		rc = -ENOMEM;
		goto fail_free;
	}
	atomic_store(&c->epoch, c->map->epoch);

	if (r != NULL) {
		c->r = r;
	} else {
		rc = st_reactor_create(&c->r, 1024);
		if (rc < 0) {
			goto fail_map;
		}
		/* A daemon that shares its reactor gates the spin on its own load. */
		st_reactor_set_spin_gate(c->r, &c->live, ST_REACTOR_SPIN_MAX_LIVE);
	}
	if (mode == SC_MODE_THREAD) {
		if (pthread_create(&c->thread, NULL, io_thread, c) != 0) {
			rc = -EAGAIN;
			goto fail_reactor;
		}
		c->thread_started = true;
	} else if (mode == SC_MODE_POLL) {
		st_reactor_set_owner(c->r);
	}
	st_reactor_post(c->r, start_watch, c);
	*out = c;
	return 0;

fail_reactor:
	st_reactor_destroy(c->r);
fail_map:
	map_free(c->map);
fail_free:
	pthread_mutex_destroy(&c->map_lock);
	free(c);
	return rc;
}

int strata_connect(const char *meta_addr, strata_cluster **out)
{
	return cluster_connect(meta_addr, SC_MODE_THREAD, NULL, out);
}

int strata_connect_flags(const char *meta_addr, unsigned flags, strata_cluster **out)
{
	if ((flags & ~STRATA_CONNECT_POLL) != 0) {
		return -EINVAL;
	}
	return cluster_connect(meta_addr,
			       (flags & STRATA_CONNECT_POLL) ? SC_MODE_POLL : SC_MODE_THREAD, NULL,
			       out);
}

int strata_connect_reactor(struct st_reactor *r, const char *meta_addr, strata_cluster **out)
{
	if (r == NULL) {
		return -EINVAL;
	}
	return cluster_connect(meta_addr, SC_MODE_EXTERNAL, r, out);
}

int strata_poll(strata_cluster *c, int timeout_ms)
{
	if (c == NULL || c->mode != SC_MODE_POLL) {
		return -EINVAL;
	}
	if (st_reactor_on_thread(c->r)) {
		return -EDEADLK; /* from inside a callback */
	}
	st_reactor_set_owner(c->r);
	return st_reactor_run_once(c->r, timeout_ms);
}

/* Stops map watching and drops every connection; requests in flight fail or finish. */
static void shutdown_clients(strata_cluster *c)
{
	c->stopping = true;
	if (c->meta_retry_armed) {
		st_reactor_cancel(c->r, &c->meta_retry_io);
	}
	if (c->meta != NULL) {
		st_client_close(c->meta);
		c->meta = NULL;
	}
	for (size_t i = 0; i < SC_MAX_NODES; i++) {
		if (c->nodes[i] != NULL) {
			st_client_close(c->nodes[i]);
			c->nodes[i] = NULL;
		}
	}
}

static void shutdown_on_reactor(void *arg)
{
	strata_cluster *c = arg;

	shutdown_clients(c);
	st_reactor_stop(c->r);
}

#define DISCONNECT_DRAIN_MS 5000

void strata_disconnect(strata_cluster *c)
{
	if (c == NULL) {
		return;
	}
	switch (c->mode) {
	case SC_MODE_THREAD:
		if (c->thread_started) {
			st_reactor_post(c->r, shutdown_on_reactor, c);
			pthread_join(c->thread, NULL);
		}
		st_reactor_destroy(c->r);
		break;
	case SC_MODE_POLL:
		shutdown_clients(c);
		st_reactor_destroy(c->r); /* runs the cancelled timers' callbacks */
		break;
	case SC_MODE_EXTERNAL: {
		/* The reactor is the daemon's and outlives c: turn it until no timer of ours can
		 * still fire (each one sees c->stopping and finishes). */
		uint64_t deadline = st_now_ms() + DISCONNECT_DRAIN_MS;

		shutdown_clients(c);
		while (c->timers > 0 && st_now_ms() < deadline) {
			if (st_reactor_run_once(c->r, 10) < 0) {
				break;
			}
		}
		if (c->timers > 0) {
			st_warn("libstrata: %d timer(s) still armed at disconnect", c->timers);
		}
		break;
	}
	}
	map_free(c->map);
	pthread_mutex_destroy(&c->map_lock);
	free(c);
}

uint64_t strata_map_epoch(strata_cluster *c)
{
	return atomic_load(&c->epoch);
}
