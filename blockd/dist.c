/*
 * Distribution: the cluster map, placement groups, and fencing of client requests.
 *
 *   meta.c --ClusterMap--> bd_dist_set_map: place[] (same order and weights as every client),
 *       pools, and for every PG its acting set (st_place_replicas over up nodes, primary
 *       first). A PG whose primary is this node and whose acting set changed goes back to
 *       PEERING (recovery.c) and serves again once every member holds the same version.
 *
 * Fencing (bd_dist_fence): the request's epoch must equal ours (older: -ESTALE so the client
 * fetches the map; newer: -EAGAIN while our MAP_WATCH catches up); we must be the PG's primary
 * at our epoch (-ESTALE otherwise) and the PG must be ACTIVE (-EAGAIN). The client retries all
 * three with the same (client_id, seq). replicate.c checks again when a parked mutation
 * starts, and replicas check the forwarded epoch, so a node that lost primacy never
 * acknowledges a write: either its forwards are refused (-ESTALE) or its epoch is current.
 *
 * Persistence: 'V' pool pg -> version rides in the WriteBatch of every mutation (the engine's
 * xkv hook), and 'F' family -> pool, so a full backfill can enumerate a PG's objects from the
 * index alone. Both are read back here at start.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd.pb-c.h"
#include "common/log.h"
#include "dist_int.h"

#define TICK_MS 500

void dist_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (56 - 8 * i));
	}
}

void dist_be32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (24 - 8 * i));
	}
}

static uint64_t get_be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++) {
		v = v << 8 | p[i];
	}
	return v;
}

void dist_vkey(uint8_t k[9], uint32_t pool, uint32_t pg)
{
	k[0] = 'V';
	dist_be32(k + 1, pool);
	dist_be32(k + 5, pg);
}

void dist_fkey(uint8_t k[9], uint64_t family)
{
	k[0] = 'F';
	dist_be64(k + 1, family);
}

/* ------------------------------------------------------------------------------------------ */
/* family -> pool (open addressing, grows at half full) */

static size_t fam_slot(const struct bd_dist *d, uint64_t family)
{
	return (size_t)(st_hash64(family) & (d->fam_cap - 1));
}

uint32_t dist_family_pool(struct bd_dist *d, uint64_t family)
{
	if (!d->fam_cap) {
		return 0;
	}
	for (size_t i = fam_slot(d, family);; i = (i + 1) & (d->fam_cap - 1)) {
		if (d->fam[i].family == family) {
			return d->fam[i].pool;
		}
		if (d->fam[i].family == 0) {
			return 0;
		}
	}
}

void dist_family_set(struct bd_dist *d, uint64_t family, uint32_t pool)
{
	if (family == 0 || dist_family_pool(d, family) == pool) {
		return;
	}
	if (2 * (d->fam_n + 1) > d->fam_cap) {
		size_t cap = d->fam_cap ? d->fam_cap * 2 : 256;
		struct fam_ent *nf = calloc(cap, sizeof(*nf));
		if (!nf) {
			return;
		}
		struct fam_ent *old = d->fam;
		size_t ocap = d->fam_cap;
		d->fam = nf;
		d->fam_cap = cap;
		d->fam_n = 0;
		for (size_t i = 0; i < ocap; i++) {
			if (old[i].family) {
				dist_family_set(d, old[i].family, old[i].pool);
			}
		}
		free(old);
	}
	for (size_t i = fam_slot(d, family);; i = (i + 1) & (d->fam_cap - 1)) {
		if (d->fam[i].family == family) {
			d->fam[i].pool = pool;
			return;
		}
		if (d->fam[i].family == 0) {
			d->fam[i].family = family;
			d->fam[i].pool = pool;
			d->fam_n++;
			return;
		}
	}
}

/* ------------------------------------------------------------------------------------------ */
/* PG log */

void dist_log_append(struct bd_pg *pg, uint64_t v, uint64_t family, uint64_t object)
{
	bd_pglog_append(&pg->log, pg->version, v, family, object);
	pg->version = v;
}

void dist_log_reset(struct bd_pg *pg)
{
	bd_pglog_reset(&pg->log, pg->version);
}

bool dist_pg_down(const struct dist_pool *p, uint32_t g)
{
	return p->down.len > g / 8 && ((p->down.data[g / 8] >> (g % 8)) & 1);
}

bool dist_pg_behind(const struct bd_pg *pg, uint32_t node)
{
	for (uint32_t i = 0; i < pg->nbehind; i++) {
		if (pg->behind[i] == node) {
			return true;
		}
	}
	return false;
}

/* ------------------------------------------------------------------------------------------ */
/* Map */

struct dist_pool *dist_pool(struct bd_dist *d, uint32_t pool_id)
{
	for (size_t i = 0; i < d->npools; i++) {
		if (d->pools[i].id == pool_id) {
			return &d->pools[i];
		}
	}
	return NULL;
}

struct bd_pg *dist_pg(struct bd_dist *d, uint32_t pool_id, uint32_t pg)
{
	struct dist_pool *p = dist_pool(d, pool_id);
	return p && pg < p->pg_count ? &p->pgs[pg] : NULL;
}

uint32_t dist_acting(struct bd_dist *d, const struct dist_pool *p, uint32_t pg, uint32_t *out)
{
	size_t idx[BD_MAX_R];
	size_t r = p->replicas > BD_MAX_R ? BD_MAX_R : (p->replicas ? p->replicas : 1);
	if (!d->nplace) {
		return 0;
	}
	size_t n = st_place_replicas(p->id, pg, d->place, d->nplace, r, idx);
	for (size_t i = 0; i < n; i++) {
		out[i] = d->place[idx[i]].id;
	}
	return (uint32_t)n;
}

bool dist_node_up(struct bd_dist *d, uint32_t id)
{
	for (size_t i = 0; i < d->nplace; i++) {
		if (d->place[i].id == id) {
			return d->place[i].up;
		}
	}
	return false;
}

struct st_client *dist_peer(struct bd_dist *d, uint32_t id)
{
	if (id >= BD_MAX_NODES || !d->peers[id].addr[0]) {
		return NULL;
	}
	struct bd_peer *p = &d->peers[id];
	if (p->cl && st_client_alive(p->cl)) {
		return p->cl;
	}
	if (p->cl) {
		st_client_close(p->cl);
		p->cl = NULL;
	}
	if (st_client_connect(d->r, p->addr, &p->cl) < 0) {
		p->cl = NULL;
	}
	return p->cl;
}

int dist_epoch_check(struct bd_dist *d, uint64_t epoch)
{
	if (!d->map || !d->self) {
		return -EAGAIN;
	}
	if (epoch == 0 || epoch == d->epoch) {
		return 0;
	}
	return epoch < d->epoch ? -ESTALE : -EAGAIN;
}

int dist_peer_check(struct bd_dist *d, uint64_t epoch, uint32_t to)
{
	int rc = dist_epoch_check(d, epoch);
	if (rc || to == 0 || to == d->self) {
		return rc;
	}
	/* Our address was another node's in the sender's map: a node restarted with a new
	 * identity at an old one's address, and the sender has not seen the map that says so.
	 * Applying a forward or a flush meant for that node would answer for data we never had. */
	d->misaddressed++;
	uint64_t now = st_now_ms();
	if (d->misaddressed_ms == 0 || now - d->misaddressed_ms >= 1000) {
		d->misaddressed_ms = now;
		st_warn("refused a peer request meant for node %u (this is node %u; %lu so far)",
			to, d->self, (unsigned long)d->misaddressed);
	}
	return -ESTALE;
}

static void load_saved_version(struct bd_dist *d, struct bd_pg *pg)
{
	for (size_t i = 0; i < d->nsaved; i++) {
		if (d->saved[i].pool == pg->pool && d->saved[i].pg == pg->pg) {
			pg->version = d->saved[i].version;
			bd_pglog_reset(&pg->log, pg->version);
			return;
		}
	}
}

static int add_pool(struct bd_dist *d, const Strata__Meta__Pool *mp)
{
	struct dist_pool *np = realloc(d->pools, (d->npools + 1) * sizeof(*np));
	if (!np) {
		return -ENOMEM;
	}
	d->pools = np;
	struct dist_pool *p = &d->pools[d->npools];
	*p = (struct dist_pool){0};
	p->id = mp->id;
	p->replicas = mp->replicas;
	p->pg_count = mp->pg_count ? mp->pg_count : 1;
	p->pgs = calloc(p->pg_count, sizeof(*p->pgs));
	if (!p->pgs) {
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < p->pg_count; i++) {
		struct bd_pg *pg = &p->pgs[i];
		pg->pool = p->id;
		pg->pg = i;
		TAILQ_INIT(&pg->waiters);
		TAILQ_INIT(&pg->running);
		TAILQ_INIT(&pg->rep_queue);
		load_saved_version(d, pg);
	}
	d->npools++;
	return 0;
}

/* Take the map's full flags (meta's --full-ratio: dist_pg_full) and log what changed. */
static void note_full_nodes(struct bd_dist *d, const Strata__Meta__ClusterMap *m)
{
	bool full[BD_MAX_NODES] = {false};
	for (size_t i = 0; i < m->n_nodes; i++) {
		if (m->nodes[i]->id < BD_MAX_NODES) {
			full[m->nodes[i]->id] = m->nodes[i]->full;
		}
	}
	for (uint32_t id = 0; id < BD_MAX_NODES; id++) {
		if (full[id] == d->peers[id].full) {
			continue;
		}
		d->peers[id].full = full[id];
		if (full[id]) {
			st_warn("map %llu: node %u is full: writes to its PGs are refused with "
				"ENOSPC",
				(unsigned long long)m->epoch, id);
		} else {
			st_info("map %llu: node %u has room again: writes to its PGs are admitted",
				(unsigned long long)m->epoch, id);
		}
	}
}

void bd_dist_set_map(struct bd_dist *d, void *cluster_map)
{
	Strata__Meta__ClusterMap *m = cluster_map;
	if (d->map && m->epoch <= d->epoch) {
		strata__meta__cluster_map__free_unpacked(m, NULL);
		return;
	}
	struct st_place_node *place = calloc(m->n_nodes ? m->n_nodes : 1, sizeof(*place));
	if (!place) {
		strata__meta__cluster_map__free_unpacked(m, NULL);
		return;
	}
	note_full_nodes(d, m);
	for (size_t i = 0; i < m->n_nodes; i++) {
		const Strata__Meta__Node *n = m->nodes[i];
		place[i].id = n->id;
		place[i].weight = n->weight;
		place[i].up = n->state == STRATA__META__NODE_STATE__NODE_UP;
		place[i].joining = n->joining;
		if (n->id < BD_MAX_NODES) {
			struct bd_peer *p = &d->peers[n->id];
			if (strcmp(p->addr, n->addr ? n->addr : "") != 0) {
				if (p->cl) {
					st_client_close(p->cl);
					p->cl = NULL;
				}
				snprintf(p->addr, sizeof(p->addr), "%s", n->addr ? n->addr : "");
			}
		}
	}
	free(d->place);
	d->place = place;
	d->nplace = m->n_nodes;
	if (d->map) {
		strata__meta__cluster_map__free_unpacked(d->map, NULL);
	}
	d->map = m;
	d->epoch = m->epoch;
	for (size_t pi = 0; pi < d->npools; pi++) {
		d->pools[pi].down = (ProtobufCBinaryData){0, NULL};
	}
	for (size_t i = 0; i < m->n_pools; i++) {
		if (!dist_pool(d, m->pools[i]->id) && add_pool(d, m->pools[i]) < 0) {
			st_error("out of memory adding pool %u", m->pools[i]->id);
		}
		struct dist_pool *p = dist_pool(d, m->pools[i]->id);
		if (p && m->pools[i]->down_pgs.len == (p->pg_count + 7) / 8) {
			p->down = m->pools[i]->down_pgs;
		}
	}
	if (!d->self) {
		return;
	}
	/* Every PG: who acts now, and what this node must do about it. */
	uint32_t npeer = 0;
	for (size_t pi = 0; pi < d->npools; pi++) {
		struct dist_pool *p = &d->pools[pi];
		for (uint32_t g = 0; g < p->pg_count; g++) {
			struct bd_pg *pg = &p->pgs[g];
			uint32_t acting[BD_MAX_R];
			uint32_t n = dist_acting(d, p, g, acting);
			bool same = n == pg->nacting && memcmp(acting, pg->acting, n * 4) == 0;
			memcpy(pg->acting, acting, sizeof(acting));
			pg->nacting = n;
			bool member = dist_pg_acts(pg, d->self);
			/* A full member that left: the PG no longer waits for its space. */
			if (pg->full_member && !dist_pg_acts(pg, pg->full_member)) {
				pg->full_member = 0;
			}
			if (member) {
				pg->stray = false;
			} else if (pg->version) {
				pg->stray = true; /* recovery_tick removes the data once safe */
			}
			if (n && acting[0] == d->self) {
				if (pg->state != PG_ACTIVE || !same) {
					recovery_peer(d, pg);
					npeer++;
				}
			} else if (pg->state != PG_NONE) {
				pg->state = PG_NONE;
				pg->round++;
				pg->nbehind = 0;
				pg->hold = false;
				repl_fail_waiters(d, pg, -ESTALE);
			}
		}
	}
	st_info("cluster map epoch %lu: %zu nodes, %zu pools, %u PGs peering",
		(unsigned long)d->epoch, d->nplace, d->npools, npeer);
}

void bd_dist_set_self(struct bd_dist *d, uint32_t id)
{
	d->self = id;
}

uint64_t bd_dist_epoch(const struct bd_dist *d)
{
	return d->epoch;
}

/* ------------------------------------------------------------------------------------------ */
/* Fencing */

static int fence(struct bd_dist *d, uint32_t pool_id, uint64_t family, uint64_t object,
		 uint64_t epoch, struct bd_pg **out)
{
	int rc = dist_epoch_check(d, epoch);
	if (rc) {
		return rc;
	}
	struct dist_pool *p = dist_pool(d, pool_id);
	if (!p) {
		return -ESTALE;
	}
	struct bd_pg *pg = &p->pgs[st_place_pg(family, object, p->pg_count)];
	if (!pg->nacting || pg->acting[0] != d->self) {
		return -ESTALE;
	}
	if (pg->state != PG_ACTIVE || dist_pg_down(p, pg->pg)) {
		return -EAGAIN; /* peering; or every node holding its data is down (meta/holders.c)
				 */
	}
	*out = pg;
	return 0;
}

int bd_dist_fence(struct bd_dist *d, uint32_t pool_id, uint64_t family, uint64_t object,
		  uint64_t epoch)
{
	struct bd_pg *pg;
	return fence(d, pool_id, family, object, epoch, &pg);
}

static void read_done(void *arg, int err);

static void read_repaired(void *arg, int err)
{
	struct bd_dreq *r = arg;
	if (err) {
		st_warn("repair of %lu/%lu failed: %s", (unsigned long)r->q.family,
			(unsigned long)r->q.object, strerror(-err));
		r->cb(r->cb_arg, -EILSEQ);
		return;
	}
	st_info("object %lu/%lu repaired from a replica after a checksum error",
		(unsigned long)r->q.family, (unsigned long)r->q.object);
	bd_read(((struct bd_dist *)r->fwd)->e, &r->q, r->rbuf, read_done, r);
}

/* A checksum error on the primary is repaired from another member, then read again. */
static void read_done(void *arg, int err)
{
	struct bd_dreq *r = arg;
	struct bd_dist *d = (struct bd_dist *)r->fwd;
	uint32_t source = 0;
	for (uint32_t i = 1; r->pg && i < r->pg->nacting && !source; i++) {
		if (!dist_pg_behind(r->pg, r->pg->acting[i])) { /* one catching up has old data */
			source = r->pg->acting[i];
		}
	}
	if (err == -EILSEQ && d && !r->repaired && source) {
		r->repaired = true;
		recovery_pull_object(d, source, r->pool_id, r->q.family, r->q.object, read_repaired,
				     r);
		return;
	}
	r->fwd = NULL;
	r->cb(r->cb_arg, err);
}

void bd_dist_io(struct bd_dist *d, struct bd_dreq *r)
{
	struct bd_pg *pg = NULL;
	int rc = fence(d, r->pool_id, r->q.family, r->q.object, r->epoch, &pg);
	if (rc) {
		r->cb(r->cb_arg, rc);
		return;
	}
	r->pg = pg;
	if ((r->type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE ||
	     r->type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_COMPARE_AND_WRITE) &&
	    dist_pg_full(d, pg)) {
		/* Trims and write-zeroes need no space: they go on, and may free some. */
		r->cb(r->cb_arg, -ENOSPC);
		return;
	}
	if (r->type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_READ) {
		/* fwd doubles as the dist pointer for reads (no forwards). */
		r->fwd = (struct bd_fwd *)d;
		r->repaired = false;
		bd_read(d->e, &r->q, r->rbuf, read_done, r);
		return;
	}
	TAILQ_INSERT_TAIL(&pg->waiters, r, link);
	if (!pg->busy) {
		repl_start_next(d, pg);
	}
}

/* True when no mutation admitted before epoch is still in flight. Queued mutations are fenced
 * again when they start, and a PG's running ones were admitted in order, so only its oldest
 * matters: O(PGs). */
bool bd_dist_drained(const struct bd_dist *d, uint64_t epoch)
{
	for (size_t pi = 0; pi < d->npools; pi++) {
		for (uint32_t g = 0; g < d->pools[pi].pg_count; g++) {
			const struct bd_dreq *r = TAILQ_FIRST(&d->pools[pi].pgs[g].running);
			if (r && r->epoch < epoch) {
				return false;
			}
		}
	}
	return true;
}

void dist_pg_kick(struct bd_dist *d, struct bd_pg *pg)
{
	if (!pg->busy && !TAILQ_EMPTY(&pg->waiters)) {
		repl_start_next(d, pg);
	}
}

/* ------------------------------------------------------------------------------------------ */

/* Counted on the reactor thread from the PGs' in-memory state: O(PGs of every pool). A PG
 * counts as clean, degraded or recovering only on its primary, so a cluster-wide sum (meta's
 * status) sees every PG once when every node reports the same epoch. */
int bd_dist_stats(struct bd_dist *d, struct bd_dist_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->epoch = d->map && d->self ? d->epoch : 0;
	s->objects_recovered = d->objects_recovered;
	s->objects_to_recover = d->objects_to_recover;
	if (!s->epoch) {
		return 0;
	}
	s->pools = d->npools ? calloc(d->npools, sizeof(*s->pools)) : NULL;
	int rc = d->npools && !s->pools ? -ENOMEM : 0;
	for (size_t pi = 0; pi < d->npools; pi++) {
		struct dist_pool *p = &d->pools[pi];
		struct bd_pool_stats ps = {.pool = p->id, .pg_count = p->pg_count};
		ps.held = calloc((p->pg_count + 7) / 8, 1);
		for (uint32_t g = 0; g < p->pg_count; g++) {
			struct bd_pg *pg = &p->pgs[g];
			/* A claimed PG whose first mutation failed holds nothing: this report drops
			 * it, and meta forgets us. One about to take its first mutation here is
			 * claimed with this report. */
			bool waiting = !TAILQ_EMPTY(&pg->waiters) || !dist_pg_still(pg);
			if (pg->claimed && !pg->version && !waiting) {
				pg->claimed = false;
			}
			bool claim = !pg->claimed && (pg->version || waiting);
			if (ps.held && (pg->version || claim)) {
				ps.held[g / 8] |= (uint8_t)(1u << (g % 8));
				pg->claim_sent = claim;
			}
			ps.member += dist_pg_acts(pg, d->self);
			ps.stray += pg->stray;
			if (!pg->nacting || pg->acting[0] != d->self) {
				continue;
			}
			ps.primary++;
			ps.full += dist_pg_full(d, pg) != 0;
			if (dist_pg_down(p, g)) {
				ps.down++;
			} else if (pg->state != PG_ACTIVE || pg->nbehind) {
				ps.recovering++;
			} else if (pg->nacting < (p->replicas ? p->replicas : 1)) {
				ps.degraded++;
			} else {
				ps.clean++;
			}
		}
		s->pgs_primary += ps.primary;
		s->pgs_clean += ps.clean;
		s->pgs_degraded += ps.degraded;
		s->pgs_recovering += ps.recovering;
		s->pgs_member += ps.member;
		s->pgs_stray += ps.stray;
		if (s->pools) {
			s->pools[s->npools++] = ps;
		} else {
			free(ps.held);
		}
	}
	return rc;
}

/*
 * Holder claims. Meta learns which PGs a node holds from its heartbeats (meta/holders.c), once
 * a second; a PG whose holders are all down is served by nobody. A node that took the first
 * writes of a PG and died before its next heartbeat was not on record: with R=1 (or every
 * replica gone at once) another node then served the PG as empty, and the holder's return
 * threw its writes or its data away. So a PG's first mutation on its primary waits until a
 * heartbeat that reports the PG held has been answered (meta commits the holder set before it
 * answers): one round trip per PG and node, until the node registers again.
 */
void bd_dist_set_claim_kick(struct bd_dist *d, void (*kick)(void *arg), void *arg)
{
	d->claim_kick = kick;
	d->claim_arg = arg;
}

void bd_dist_claims_done(struct bd_dist *d, bool ok)
{
	for (size_t pi = 0; pi < d->npools; pi++) {
		struct dist_pool *p = &d->pools[pi];
		for (uint32_t g = 0; g < p->pg_count; g++) {
			struct bd_pg *pg = &p->pgs[g];
			if (!pg->claim_sent) {
				continue;
			}
			pg->claim_sent = false;
			pg->claimed |= ok;
			if (pg->claimed && !TAILQ_EMPTY(&pg->waiters)) {
				repl_start_next(d, pg);
			}
		}
	}
}

void bd_dist_claims_reset(struct bd_dist *d)
{
	for (size_t pi = 0; pi < d->npools; pi++) {
		for (uint32_t g = 0; g < d->pools[pi].pg_count; g++) {
			d->pools[pi].pgs[g].claimed = false;
		}
	}
}

void bd_dist_stats_free(struct bd_dist_stats *s)
{
	for (size_t i = 0; i < s->npools; i++) {
		free(s->pools[i].held);
	}
	free(s->pools);
	s->pools = NULL;
	s->npools = 0;
}

void bd_dist_frame(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
{
	switch (f->hdr.type) {
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_WRITE:
		repl_handle_write(d, f, rp);
		return;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_FLUSH:
		repl_handle_flush(d, f, rp);
		return;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_SCRUB:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_DIGEST:
		scrub_handle(d, f, rp);
		return;
	default:
		recovery_handle(d, f, rp);
		return;
	}
}

static void tick(void *arg, int res)
{
	struct bd_dist *d = arg;
	if (res == -ECANCELED || d->stopping) {
		return;
	}
	recovery_tick(d);
	bd_engine_sync_tick(d->e);
	bd_defrag_tick(d->e);
	st_reactor_timer(d->r, &d->tick, TICK_MS, tick, d);
}

static int load_v(void *arg, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct bd_dist *d = arg;
	if (klen != 9 || vlen != 8) {
		return 0;
	}
	struct saved_ver *ns = realloc(d->saved, (d->nsaved + 1) * sizeof(*ns));
	if (!ns) {
		return -ENOMEM;
	}
	d->saved = ns;
	ns[d->nsaved++] = (struct saved_ver){.pool = (uint32_t)get_be(k + 1, 4),
					     .pg = (uint32_t)get_be(k + 5, 4),
					     .version = get_be(v, 8)};
	return 0;
}

static int load_f(void *arg, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	if (klen == 9 && vlen == 4) {
		dist_family_set(arg, get_be(k + 1, 8), (uint32_t)get_be(v, 4));
	}
	return 0;
}

int bd_dist_new(struct st_reactor *r, struct bd_engine *e, struct bd_dist **out)
{
	struct bd_dist *d = calloc(1, sizeof(*d));
	if (!d) {
		return -ENOMEM;
	}
	d->r = r;
	d->e = e;
	int rc = bd_index_scan_raw(bd_engine_index(e), "V", 1, load_v, d);
	if (rc == 0) {
		rc = bd_index_scan_raw(bd_engine_index(e), "F", 1, load_f, d);
	}
	if (rc < 0) {
		d->stopping = true;
		bd_dist_free(d); /* no timer armed yet */
		return rc;
	}
	st_reactor_timer(r, &d->tick, TICK_MS, tick, d);
	*out = d;
	return 0;
}

void bd_dist_stop(struct bd_dist *d)
{
	if (!d || d->stopping) {
		return;
	}
	/* After the reactor stopped running: callbacks still owed (cancelled timers, failed
	 * calls) run in st_reactor_destroy() and see `stopping`, so nothing re-arms. */
	d->stopping = true;
	st_info("replication: %llu mutations admitted while an earlier one of their PG was out",
		(unsigned long long)d->overlapped);
	st_info("replication: %llu refused mutations gave their version back",
		(unsigned long long)d->given_back);
	st_reactor_cancel(d->r, &d->tick);
	for (size_t pi = 0; pi < d->npools; pi++) {
		for (uint32_t g = 0; g < d->pools[pi].pg_count; g++) {
			repl_fail_forwards(d, &d->pools[pi].pgs[g], -ESHUTDOWN);
		}
	}
	for (size_t i = 0; i < BD_MAX_NODES; i++) {
		if (d->peers[i].cl) {
			st_client_close(d->peers[i].cl);
			d->peers[i].cl = NULL;
		}
	}
}

void bd_dist_free(struct bd_dist *d)
{
	if (!d) {
		return;
	}
	/* After bd_dist_stop() and st_reactor_destroy(): no callback of ours can run. */
	for (size_t pi = 0; pi < d->npools; pi++) {
		for (uint32_t g = 0; g < d->pools[pi].pg_count; g++) {
			bd_pglog_free(&d->pools[pi].pgs[g].log);
		}
		free(d->pools[pi].pgs);
	}
	free(d->pools);
	free(d->place);
	free(d->saved);
	free(d->fam);
	if (d->map) {
		strata__meta__cluster_map__free_unpacked(d->map, NULL);
	}
	free(d);
}
