/*
 * What meta reports about the data the storage nodes hold, without being in the data path.
 *
 * PG health: every blockd sends, with its 1 s heartbeat, the PG counts of each pool as it sees
 * them at its map epoch (clean/degraded/recovering for the PGs it is the primary of; member
 * and stray for any). Meta keeps only the latest report per node, in memory: a restart of meta
 * forgets them for at most a second. `strata status` sums the reports of the UP nodes whose
 * epoch is the current one; each PG has exactly one primary at an epoch, so that sum sees every
 * PG once. PGs nobody reported at the current epoch (a node has not caught up with the map yet,
 * or its primary is down and not yet marked so) count as "unknown", never as clean. A node that
 * registers (a restart) loses its report: the old process's counts say nothing about the new
 * one, which starts with every PG peering.
 *
 *   heartbeat --> reports[node id] {epoch, per pool counts, recovery progress}
 *   status    --> for each pool: sum over UP nodes with report.epoch == epoch; rest unknown
 *
 * Volume layers: the set of layers a volume owns (head, snapshots, hidden deleted snapshots),
 * which `strata volume info` asks the nodes to measure for `used`.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct md_pgreport {
	uint32_t node_id;
	uint64_t epoch;
	uint64_t objects_recovered, objects_to_recover;
	size_t npools;
	Strata__Meta__PoolPgStats *pools;
};

struct md_pgstats {
	struct md_pgreport *r;
	size_t n, cap;
};

int md_pgstats_new(struct md_pgstats **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void md_pgstats_free(struct md_pgstats *ps)
{
	if (ps == NULL) {
		return;
	}
	for (size_t i = 0; i < ps->n; i++) {
		free(ps->r[i].pools);
	}
	free(ps->r);
	free(ps);
}

static struct md_pgreport *report_of(struct md_pgstats *ps, uint32_t node_id, bool create)
{
	for (size_t i = 0; i < ps->n; i++) {
		if (ps->r[i].node_id == node_id) {
			return &ps->r[i];
		}
	}
	if (!create) {
		return NULL;
	}
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? 2 * ps->cap : 16;
		struct md_pgreport *nr = realloc(ps->r, cap * sizeof(*nr));
		if (nr == NULL) {
			return NULL;
		}
		ps->r = nr;
		ps->cap = cap;
	}
	struct md_pgreport *r = &ps->r[ps->n++];
	memset(r, 0, sizeof(*r));
	r->node_id = node_id;
	return r;
}

int md_pgstats_update(struct md_pgstats *ps, const Strata__Meta__NodeHeartbeatReq *h)
{
	if (h->pgs_epoch == 0) {
		return 0; /* the node has no map yet, or could not count: keep the last report */
	}
	struct md_pgreport *r = report_of(ps, h->node_id, true);
	if (r == NULL) {
		return -ENOMEM;
	}
	Strata__Meta__PoolPgStats *pools = NULL;
	if (h->n_pgs) {
		pools = calloc(h->n_pgs, sizeof(*pools));
		if (pools == NULL) {
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < h->n_pgs; i++) {
		strata__meta__pool_pg_stats__init(&pools[i]);
		pools[i].pool_id = h->pgs[i]->pool_id;
		pools[i].clean = h->pgs[i]->clean;
		pools[i].degraded = h->pgs[i]->degraded;
		pools[i].recovering = h->pgs[i]->recovering;
		pools[i].primary = h->pgs[i]->primary;
		pools[i].member = h->pgs[i]->member;
		pools[i].stray = h->pgs[i]->stray;
		pools[i].down = h->pgs[i]->down;
		pools[i].full = h->pgs[i]->full;
	}
	free(r->pools);
	r->pools = pools;
	r->npools = h->n_pgs;
	r->epoch = h->pgs_epoch;
	r->objects_recovered = h->objects_recovered;
	r->objects_to_recover = h->objects_to_recover;
	return 0;
}

void md_pgstats_forget(struct md_pgstats *ps, uint32_t node_id)
{
	struct md_pgreport *r = report_of(ps, node_id, false);
	if (r != NULL) {
		free(r->pools);
		*r = ps->r[--ps->n];
	}
}

int md_pgstats_fill(struct md_pgstats *ps, const struct md_catalog *cat,
		    Strata__Meta__ClusterStatus *m)
{
	const struct md_pool *const *pools;
	const struct md_node *const *nodes;
	size_t np = md_pools(cat, &pools);
	size_t nn = md_nodes(cat, &nodes);
	uint64_t epoch = md_catalog_epoch(cat);
	m->pg_pools = calloc(np ? np : 1, sizeof(*m->pg_pools));
	Strata__Meta__PoolPgStats *pp = calloc(np ? np : 1, sizeof(*pp));
	m->node_pgs = calloc(nn ? nn : 1, sizeof(*m->node_pgs));
	Strata__Meta__NodePgStats *ns = calloc(nn ? nn : 1, sizeof(*ns));
	if (!m->pg_pools || !pp || !m->node_pgs || !ns) {
		free(m->pg_pools);
		free(pp);
		free(m->node_pgs);
		free(ns);
		m->pg_pools = NULL;
		m->node_pgs = NULL;
		return -ENOMEM;
	}
	for (size_t i = 0; i < np; i++) {
		strata__meta__pool_pg_stats__init(&pp[i]);
		pp[i].pool_id = pools[i]->id;
		pp[i].name = (char *)pools[i]->name;
		pp[i].pg_count = pools[i]->pg_count;
		m->pg_pools[i] = &pp[i];
	}
	m->n_pg_pools = np;
	for (size_t k = 0; k < nn; k++) {
		if (nodes[k]->state != STRATA__META__NODE_STATE__NODE_UP) {
			continue; /* its PGs have other primaries now, or are unknown */
		}
		const struct md_pgreport *r = report_of(ps, nodes[k]->id, false);
		if (r == NULL) {
			continue;
		}
		Strata__Meta__NodePgStats *n = &ns[m->n_node_pgs];
		strata__meta__node_pg_stats__init(n);
		n->node_id = r->node_id;
		n->epoch = r->epoch;
		n->objects_recovered = r->objects_recovered;
		n->objects_to_recover = r->objects_to_recover;
		m->objects_recovered += r->objects_recovered;
		m->objects_to_recover += r->objects_to_recover;
		for (size_t j = 0; j < r->npools; j++) {
			const Strata__Meta__PoolPgStats *s = &r->pools[j];
			n->primary += s->primary;
			n->member += s->member;
			n->stray += s->stray;
			for (size_t i = 0; i < np && r->epoch == epoch; i++) {
				if (pp[i].pool_id == s->pool_id) {
					pp[i].clean += s->clean;
					pp[i].degraded += s->degraded;
					pp[i].recovering += s->recovering;
					pp[i].down += s->down;
					pp[i].full += s->full;
					pp[i].primary += s->primary;
					pp[i].member += s->member;
					pp[i].stray += s->stray;
				}
			}
		}
		m->node_pgs[m->n_node_pgs++] = n;
	}
	for (size_t i = 0; i < np; i++) {
		uint32_t known = pp[i].clean + pp[i].degraded + pp[i].recovering + pp[i].down;
		pp[i].unknown = known < pp[i].pg_count ? pp[i].pg_count - known : 0;
	}
	/* md_pgstats_fill_free finds the element arrays through their first pointers. */
	if (m->n_pg_pools == 0) {
		free(pp);
	}
	if (m->n_node_pgs == 0) {
		free(ns);
	}
	return 0;
}

bool md_pgstats_settled(struct md_pgstats *ps, const struct md_catalog *cat)
{
	const struct md_node *const *nodes;
	size_t nn = md_nodes(cat, &nodes);
	uint64_t epoch = md_catalog_epoch(cat);
	for (size_t k = 0; k < nn; k++) {
		if (nodes[k]->state != STRATA__META__NODE_STATE__NODE_UP) {
			continue;
		}
		const struct md_pgreport *r = report_of(ps, nodes[k]->id, false);
		if (r == NULL || r->epoch != epoch) {
			return false;
		}
	}
	/* Every up node reported at this epoch: the status sums are over all of them. */
	Strata__Meta__ClusterStatus m = STRATA__META__CLUSTER_STATUS__INIT;
	if (md_pgstats_fill(ps, cat, &m) < 0) {
		return false;
	}
	bool settled = m.objects_to_recover == 0;
	for (size_t i = 0; i < m.n_pg_pools; i++) {
		const Strata__Meta__PoolPgStats *p = m.pg_pools[i];
		/* A down PG waits for a holder: no reason to keep joining nodes from leading. */
		settled &= p->clean + p->degraded + p->down == p->pg_count;
	}
	md_pgstats_fill_free(&m);
	return settled;
}

void md_pgstats_fill_free(Strata__Meta__ClusterStatus *m)
{
	if (m->n_pg_pools) {
		free(m->pg_pools[0]);
	}
	if (m->n_node_pgs) {
		free(m->node_pgs[0]);
	}
	free(m->pg_pools);
	free(m->node_pgs);
	m->pg_pools = NULL;
	m->node_pgs = NULL;
	m->n_pg_pools = m->n_node_pgs = 0;
}

/* ------------------------------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Walk up from l, collecting the layers v owns. A hidden layer of v is only ever read by v's
 * own later layers (a snapshot with other dependents cannot be deleted), so walking up from
 * the head and from every snapshot finds every layer v owns. O((snapshots + 1) * depth). */
static size_t collect_up(struct md_catalog *cat, const struct md_volume *v,
			 const struct md_layer *l, uint64_t *out, size_t n, size_t cap)
{
	for (; l != NULL && n < cap; l = l->parent ? md_layer_by_id(cat, l->parent) : NULL) {
		if (l->volume == v->id) {
			out[n++] = l->id;
		}
	}
	return n;
}

int md_volume_layers(struct md_catalog *cat, const struct md_volume *v, uint64_t **out)
{
	struct md_layer **snaps;
	int ns = md_snapshots(cat, v, &snaps);
	if (ns < 0) {
		return ns;
	}
	size_t cap = 64, n = 0;
	uint64_t *ids = NULL;
	for (;;) {
		free(ids);
		ids = malloc(cap * sizeof(*ids));
		if (ids == NULL) {
			free(snaps);
			return -ENOMEM;
		}
		n = collect_up(cat, v, md_layer_by_id(cat, v->head), ids, 0, cap);
		for (int i = 0; i < ns; i++) {
			n = collect_up(cat, v, snaps[i], ids, n, cap);
		}
		if (n < cap) {
			break;
		}
		cap *= 4; /* rare: a long history; count again with room to spare */
	}
	free(snaps);
	qsort(ids, n, sizeof(*ids), cmp_u64);
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (w == 0 || ids[w - 1] != ids[i]) {
			ids[w++] = ids[i];
		}
	}
	*out = ids;
	return (int)w;
}
