/*
 * strata-blockd engine: resolution. Which extent list serves (family, layer, object, seg): the
 * layer's own or its nearest ancestor's, through the cache (resolutions are cached too, and go
 * stale when the cache generation is bumped); and the copy-up that gives a layer its own list
 * before a write.
 */
#include <errno.h>
#include <stdlib.h>

#include "engine_int.h"
#include "internal.h"

/* ------------------------------------------------------------------------------------------ */
/* Resolution: which list serves (family, layer, object, seg). */

/* Returns the cached entry of the layer's own list, loading it; NULL with *err = 0 when the
 * layer has none. */
struct bd_centry *bd_load_own(struct bd_engine *e, const struct bd_mkey *k, int *err)
{
	uint64_t gen = bd_cache_gen(e->cache);
	struct bd_centry *ce = bd_cache_find(e->cache, k);
	*err = 0;
	if (ce && ce->gen == gen) {
		return ce->resolved == k->layer ? ce : NULL;
	}
	if (ce && ce->resolved == k->layer && ce->map) {
		/* Own lists survive a gen bump: only resolutions through ancestors go stale. */
		ce->gen = gen;
		return ce;
	}
	struct bd_extmap *m = bd_map_new();
	if (!m) {
		*err = -ENOMEM;
		return NULL;
	}
	int rc = bd_index_get_map(e->ix, k, m);
	if (rc <= 0) {
		bd_map_put(m);
		*err = rc;
		return NULL;
	}
	ce = bd_cache_get(e->cache, k);
	if (!ce) {
		bd_map_put(m);
		*err = -ENOMEM;
		return NULL;
	}
	bd_map_put(ce->map);
	ce->map = m;
	ce->resolved = k->layer;
	ce->gen = gen;
	return ce;
}

int bd_layer_ancestry(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t **anc)
{
	int n = bd_layers_get(e->layers, family, layer, anc);
	if (n < 0) {
		*anc = NULL;
		return 0; /* unknown: a root layer */
	}
	return n;
}

/* The list serving k (NULL: none, all unallocated). Returns 0 or -errno. */
int bd_resolve(struct bd_engine *e, const struct bd_mkey *k, const struct bd_extmap **out)
{
	uint64_t gen = bd_cache_gen(e->cache);
	struct bd_centry *ce = bd_cache_find(e->cache, k);
	int err;
	*out = NULL;
	if (ce && ce->gen == gen) {
		if (ce->resolved == 0) {
			return 0;
		}
		if (ce->resolved == k->layer || ce->map) {
			*out = ce->map; /* own, or the ancestor's shared list */
			return 0;
		}
		struct bd_mkey ak = *k;
		ak.layer = ce->resolved;
		struct bd_centry *ae = bd_load_own(e, &ak, &err);
		if (ae) {
			ce->map = bd_map_ref(ae->map);
			*out = ae->map;
			return 0;
		}
		if (err) {
			return err;
		}
		/* The ancestor's list vanished (layer delete): resolve again below. */
	}
	struct bd_centry *own = bd_load_own(e, k, &err);
	if (own || err) {
		*out = own ? own->map : NULL;
		return err;
	}
	const uint64_t *anc;
	int n = bd_layer_ancestry(e, k->family, k->layer, &anc);
	uint64_t found = 0;
	const struct bd_extmap *fm = NULL;
	for (int i = 0; i < n; i++) {
		struct bd_mkey ak = *k;
		ak.layer = anc[i];
		/* An ancestor whose resolution is cached answers for the rest of the chain. */
		struct bd_centry *ae = bd_cache_find(e->cache, &ak);
		if (ae && ae->gen == gen && ae->resolved != anc[i]) {
			if (ae->resolved == 0) {
				break;
			}
			ak.layer = ae->resolved;
		}
		ae = bd_load_own(e, &ak, &err);
		if (err) {
			return err;
		}
		if (ae) {
			found = ak.layer;
			fm = ae->map;
			break;
		}
	}
	ce = bd_cache_get(e->cache, k);
	if (!ce) {
		return -ENOMEM;
	}
	bd_map_put(ce->map);
	ce->map = NULL;
	ce->resolved = found;
	ce->gen = gen;
	/* bd_cache_get may have evicted the ancestor's entry; reload if so. */
	if (found) {
		struct bd_mkey ak = *k;
		ak.layer = found;
		struct bd_centry *ae = bd_load_own(e, &ak, &err);
		fm = ae ? ae->map : NULL;
		if (err) {
			return err;
		}
		/* Frozen ancestors' lists do not change within a cache generation (anything that
		 * edits one bumps it), so the resolution may hold the list itself. */
		ce->map = bd_map_ref((struct bd_extmap *)(uintptr_t)fm);
	}
	*out = fm;
	return 0;
}

/* The layer's own list for writing, copying up the resolved ancestor's list (metadata only:
 * every data block gains a reference) if it has none. *created tells a new list. */
struct bd_extmap *bd_own_for_write(struct bd_engine *e, const struct bd_mkey *k, bool *created,
				   int *err)
{
	*created = false;
	struct bd_centry *ce = bd_load_own(e, k, err);
	if (ce || *err) {
		return ce ? ce->map : NULL;
	}
	const struct bd_extmap *src;
	*err = bd_resolve(e, k, &src);
	if (*err) {
		return NULL;
	}
	struct bd_extmap *m = bd_map_new();
	if (!m) {
		*err = -ENOMEM;
		return NULL;
	}
	if (src) {
		*m = *src;
		for (uint32_t r = 0; r < m->nruns; r++) {
			if (m->runs[r].pblk == BD_PBLK_ZERO) {
				continue;
			}
			for (uint32_t i = 0; i < m->runs[r].len; i++) {
				bd_alloc_ref(&e->alloc, m->runs[r].pblk + i);
			}
		}
	} else {
		bd_extmap_init(m);
	}
	ce = bd_cache_get(e->cache, k);
	if (!ce) {
		bd_map_put(m);
		*err = -ENOMEM;
		return NULL;
	}
	bd_map_put(ce->map); /* a resolution's shared list, if any */
	ce->map = m;
	ce->resolved = k->layer;
	ce->gen = bd_cache_gen(e->cache);
	*created = true;
	e->nlists++;
	return m;
}

int bd_engine_ancestry(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t **anc)
{
	return bd_layers_get(e->layers, family, layer, anc);
}
