/*
 * strata-blockd engine: synchronous metadata operations on the reactor thread: block status
 * (which ranges are data, zero or unallocated), layer delete (children that read through the
 * layer's lists get their own copies first) and flatten (a layer copies every list it reads
 * through its ancestors).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "internal.h"

/* ------------------------------------------------------------------------------------------ */
/* Synchronous metadata operations. */

int bd_block_status(struct bd_engine *e, const struct bd_req *q, struct bd_status_ext *out,
		    size_t max, size_t *n)
{
	*n = 0;
	int rc = bd_validate(e, q, true);
	if (rc) {
		return rc;
	}
	uint64_t lb0 = q->offset >> BD_BLOCK_SHIFT;
	uint32_t nb = q->length >> BD_BLOCK_SHIFT;
	const struct bd_extmap *m = NULL;
	uint32_t cur_seg = UINT32_MAX;
	for (uint32_t i = 0; i < nb; i++) {
		uint64_t lb = lb0 + i;
		struct bd_mkey k;
		bd_key_of(q, lb, &k);
		if (k.seg != cur_seg) {
			rc = bd_resolve(e, &k, &m);
			if (rc) {
				return rc;
			}
			cur_seg = k.seg;
		}
		int state = 0;
		if (m) {
			struct bd_bmap b =
				bd_extmap_lookup(m, (uint32_t)(lb & (BD_SEG_BLOCKS - 1)));
			state = b.pblk == BD_PBLK_NONE ? 0 : b.pblk == BD_PBLK_ZERO ? 2 : 1;
		}
		if (*n > 0 && out[*n - 1].state == state) {
			out[*n - 1].length += BD_BLOCK;
			continue;
		}
		if (*n == max) {
			break; /* the caller asks again from where this ends */
		}
		out[*n].offset = lb * BD_BLOCK;
		out[*n].length = BD_BLOCK;
		out[*n].state = state;
		(*n)++;
	}
	return 0;
}

struct collected {
	struct bd_mkey *keys;
	struct bd_extmap *maps;
	size_t n, cap;
	int err;
};

static int collect_fn(void *arg, const struct bd_mkey *k, const struct bd_extmap *m, int err)
{
	struct collected *c = arg;
	if (err) {
		c->err = err;
		return 1;
	}
	if (c->n == c->cap) {
		size_t nc = c->cap ? c->cap * 2 : 64;
		struct bd_mkey *nk = realloc(c->keys, nc * sizeof(*nk));
		if (!nk) {
			c->err = -ENOMEM;
			return 1;
		}
		c->keys = nk;
		struct bd_extmap *nm = realloc(c->maps, nc * sizeof(*nm));
		if (!nm) {
			c->err = -ENOMEM;
			return 1;
		}
		c->maps = nm;
		c->cap = nc;
	}
	c->keys[c->n] = *k;
	c->maps[c->n] = *m;
	c->n++;
	return 0;
}

static void ref_list(struct bd_engine *e, const struct bd_extmap *m)
{
	for (uint32_t r = 0; r < m->nruns; r++) {
		if (m->runs[r].pblk == BD_PBLK_ZERO) {
			continue;
		}
		for (uint32_t i = 0; i < m->runs[r].len; i++) {
			bd_alloc_ref(&e->alloc, m->runs[r].pblk + i);
		}
	}
}

/* Does layer k->layer have a list of its own for this segment (committed)? 1, 0 or -errno. */
static int has_own(struct bd_engine *e, const struct bd_mkey *k)
{
	int err;
	struct bd_centry *ce = bd_load_own(e, k, &err);
	return ce ? 1 : err;
}

#define META_BATCH 256

int bd_layer_delete(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t *children,
		    uint32_t nchildren, uint64_t *lists_dropped, uint64_t *lists_moved,
		    uint64_t *blocks_freed)
{
	uint64_t dropped = 0, moved = 0, freed_total = 0;
	if (family == 0 || layer == 0) {
		return -EINVAL;
	}
	if (e->failed) {
		return -EIO;
	}
	e->layers_gen++; /* an install in flight may hold lists of this layer */
	bd_engine_drain(e);
	struct collected c = {0};
	int rc = bd_index_scan(e->ix, family, layer, collect_fn, &c);
	if (rc == 0 && c.err) {
		rc = c.err;
	}
	uint64_t *freed = malloc(sizeof(uint64_t) * (META_BATCH * BD_SEG_BLOCKS + 1));
	if (!freed) {
		rc = rc ? rc : -ENOMEM;
	}
	size_t nfreed = 0, inbatch = 0;
	for (size_t i = 0; rc == 0 && i < c.n; i++) {
		const struct bd_mkey *k = &c.keys[i];
		const struct bd_extmap *m = &c.maps[i];
		for (uint32_t ch = 0; ch < nchildren; ch++) {
			struct bd_mkey ck = *k;
			ck.layer = children[ch];
			bool seen = false;
			for (uint32_t j = 0; j < ch && !seen; j++) {
				seen = children[j] == ck.layer;
			}
			if (ck.layer == 0 || ck.layer == layer || seen) {
				/* A child named twice would get two references for its one list
				 * (the first copy is not in the index yet, so has_own misses it).
				 */
				continue;
			}
			int own = has_own(e, &ck);
			if (own < 0) {
				rc = own;
				break;
			}
			if (own) {
				continue;
			}
			/* The child read through this list: give it its own copy. */
			ref_list(e, m);
			bd_batch_put_map(e->batch, &ck, m);
			bd_cache_drop(e->cache, &ck);
			e->nlists++;
			moved++;
		}
		if (rc) {
			break;
		}
		for (uint32_t r = 0; r < m->nruns; r++) {
			if (m->runs[r].pblk == BD_PBLK_ZERO) {
				continue;
			}
			for (uint32_t b = 0; b < m->runs[r].len; b++) {
				if (bd_alloc_unref(&e->alloc, m->runs[r].pblk + b)) {
					freed[nfreed++] = m->runs[r].pblk + b;
				}
			}
		}
		bd_batch_del_map(e->batch, k);
		bd_cache_drop(e->cache, k);
		e->nlists--;
		dropped++;
		if (++inbatch == META_BATCH || i + 1 == c.n) {
			rc = bd_engine_commit_batch(e, true);
			if (rc == 0) {
				bd_engine_defer_frees(e, freed, (uint32_t)nfreed);
				/* That commit was synced and nothing committed since: the
				 * frees it made are durable already. */
				bd_engine_mark_durable(e);
				freed_total += nfreed;
			}
			nfreed = 0;
			inbatch = 0;
		}
	}
	if (rc) {
		bd_batch_clear(e->batch);
		if (inbatch) {
			e->failed = true; /* memory ahead of the index: restart rebuilds */
		}
	}
	bd_cache_invalidate(e->cache);
	bd_layers_forget(e->layers, family, layer);
	bd_engine_reap(e);
	free(freed);
	free(c.keys);
	free(c.maps);
	if (lists_dropped) {
		*lists_dropped = dropped;
	}
	if (lists_moved) {
		*lists_moved = moved;
	}
	if (blocks_freed) {
		*blocks_freed = freed_total;
	}
	return rc;
}

int bd_flatten(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t *anc,
	       uint32_t nanc, uint64_t *lists_copied)
{
	uint64_t copied = 0;
	if (family == 0 || layer == 0) {
		return -EINVAL;
	}
	if (e->failed) {
		return -EIO;
	}
	e->layers_gen++; /* an install in flight may hold lists of this layer */
	bd_engine_drain(e);
	if (nanc > 0) {
		int rc = bd_layers_set(e->layers, family, layer, anc, nanc);
		if (rc) {
			return rc;
		}
	} else {
		int n = bd_layer_ancestry(e, family, layer, &anc);
		nanc = (uint32_t)n;
	}
	/* Copy the ancestry: layers_set below may replace the cached array. */
	uint64_t *chain = malloc((nanc ? nanc : 1) * sizeof(*chain));
	if (!chain) {
		return -ENOMEM;
	}
	if (nanc) {
		memcpy(chain, anc, nanc * sizeof(*chain));
	}
	int rc = 0;
	/* Nearest ancestor first: the first list found for a segment is its resolution. Each
	 * ancestor's copies are committed before the next is scanned, so has_own() sees them. */
	for (uint32_t a = 0; a < nanc && rc == 0; a++) {
		struct collected c = {0};
		rc = bd_index_scan(e->ix, family, chain[a], collect_fn, &c);
		if (rc == 0 && c.err) {
			rc = c.err;
		}
		size_t inbatch = 0;
		for (size_t i = 0; rc == 0 && i < c.n; i++) {
			struct bd_mkey k = c.keys[i];
			k.layer = layer;
			int own = has_own(e, &k);
			if (own < 0) {
				rc = own;
				break;
			}
			if (!own) {
				ref_list(e, &c.maps[i]);
				bd_batch_put_map(e->batch, &k, &c.maps[i]);
				bd_cache_drop(e->cache, &k);
				e->nlists++;
				copied++;
				inbatch++;
			}
			if (inbatch == META_BATCH || (i + 1 == c.n && inbatch)) {
				rc = bd_engine_commit_batch(e, true);
				inbatch = 0;
			}
		}
		if (rc && inbatch) {
			bd_batch_clear(e->batch);
			e->failed = true;
		}
		free(c.keys);
		free(c.maps);
	}
	free(chain);
	bd_cache_invalidate(e->cache);
	if (rc == 0) {
		/* The layer no longer depends on its ancestors. */
		bd_layers_set(e->layers, family, layer, NULL, 0);
	}
	if (lists_copied) {
		*lists_copied = copied;
	}
	return rc;
}
