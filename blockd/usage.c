/*
 * LAYER_USAGE {pool, family, layers, map epoch} -> bytes of data blocks referenced by those
 * layers' own extent lists, for `used` in `strata volume info`.
 *
 * Only objects whose PG this node is the primary of at the request's epoch count (every
 * object when blockd runs without meta), so the CLI's sum over the up nodes counts each PG
 * once. A physical block that several of the layers reference (a snapshot's list copied up
 * into the head, metadata only) counts once: the data runs are collected, sorted by physical
 * block and merged. Zeroed and unallocated blocks take no space and do not count.
 *
 * Cost: one index range scan per layer plus a sort of the runs found, on the reactor thread
 * (like scrub and backfill enumeration). The answer is what is committed in the index when
 * the scan runs; a PG still peering on this node may not hold everything yet.
 */
#include <errno.h>
#include <stdlib.h>

#include "blockd.pb-c.h"
#include "common/frame.h"
#include "dist_int.h"

#define USAGE_MAX_LAYERS 4096

struct usage_ctx {
	struct bd_dist *d; /* NULL: no meta, count everything */
	const struct dist_pool *p;
	uint64_t family;
	struct bd_prun *runs;
	size_t nruns, cap;
	uint64_t lists;
	int err;
};

static bool counted_here(struct usage_ctx *u, uint64_t object)
{
	if (!u->d) {
		return true;
	}
	const struct bd_pg *pg = &u->p->pgs[st_place_pg(u->family, object, u->p->pg_count)];
	return pg->nacting && pg->acting[0] == u->d->self;
}

static int usage_list(void *arg, const struct bd_mkey *k, const struct bd_extmap *m, int err)
{
	struct usage_ctx *u = arg;
	if (err || !m || !counted_here(u, k->object)) {
		return 0; /* an undecodable list holds nothing we could read back either */
	}
	u->lists++;
	for (uint32_t r = 0; r < m->nruns; r++) {
		if (m->runs[r].pblk == BD_PBLK_ZERO || m->runs[r].pblk == BD_PBLK_NONE) {
			continue;
		}
		if (u->nruns == u->cap) {
			size_t cap = u->cap ? 2 * u->cap : 1024;
			struct bd_prun *nr = realloc(u->runs, cap * sizeof(*nr));
			if (!nr) {
				u->err = -ENOMEM;
				return 1;
			}
			u->runs = nr;
			u->cap = cap;
		}
		u->runs[u->nruns++] = (struct bd_prun){m->runs[r].pblk, m->runs[r].len};
	}
	return 0;
}

static int cmp_run(const void *a, const void *b)
{
	const struct bd_prun *x = a, *y = b;
	return x->pblk < y->pblk ? -1 : x->pblk > y->pblk;
}

/* Blocks covered by the union of the runs (sorts them). */
static uint64_t union_blocks(struct bd_prun *runs, size_t n)
{
	if (n == 0) {
		return 0; /* runs may be NULL: qsort must not see it */
	}
	qsort(runs, n, sizeof(*runs), cmp_run);
	uint64_t total = 0, end = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t lo = runs[i].pblk, hi = runs[i].pblk + runs[i].len;
		if (lo < end) {
			lo = end;
		}
		if (hi > lo) {
			total += hi - lo;
			end = hi;
		}
	}
	return total;
}

/* Returns 0 with the reply filled, or -errno. */
static int layer_usage(struct bd_engine *e, struct bd_dist *d,
		       const Strata__Blockd__LayerUsageRequest *q,
		       Strata__Blockd__LayerUsageReply *rep)
{
	if (q->family == 0 || q->n_layers > USAGE_MAX_LAYERS) {
		return -EINVAL;
	}
	struct usage_ctx u = {.d = d, .family = q->family};
	if (d) {
		int rc = dist_epoch_check(d, q->map_epoch);
		if (rc) {
			return rc;
		}
		u.p = dist_pool(d, q->pool_id);
		if (!u.p) {
			return -ESTALE;
		}
		for (uint32_t g = 0; g < u.p->pg_count; g++) {
			const struct bd_pg *pg = &u.p->pgs[g];
			rep->pgs += pg->nacting && pg->acting[0] == d->self;
		}
	}
	for (size_t i = 0; i < q->n_layers && !u.err; i++) {
		if (q->layers[i] == 0) {
			continue;
		}
		int rc = bd_index_scan(bd_engine_index(e), q->family, q->layers[i], usage_list, &u);
		if (rc < 0) {
			u.err = rc;
		}
	}
	if (!u.err) {
		rep->bytes = union_blocks(u.runs, u.nruns) * BD_BLOCK;
		rep->lists = u.lists;
	}
	free(u.runs);
	return u.err;
}

void bd_usage_handle(struct bd_engine *e, struct bd_dist *d, struct st_frame *f,
		     struct bd_reply *rp)
{
	Strata__Blockd__LayerUsageRequest *q = strata__blockd__layer_usage_request__unpack(
		NULL, f->hdr.hdr_len, f->msg ? f->msg : (uint8_t *)"");
	st_frame_release(f);
	if (!q) {
		bd_reply_send(rp, -EBADMSG, NULL, NULL, 0);
		return;
	}
	Strata__Blockd__LayerUsageReply rep = STRATA__BLOCKD__LAYER_USAGE_REPLY__INIT;
	int rc = layer_usage(e, d, q, &rep);
	strata__blockd__layer_usage_request__free_unpacked(q, NULL);
	bd_reply_send(rp, rc, rc ? NULL : &rep.base, NULL, 0);
}
