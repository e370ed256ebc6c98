/*
 * The hot in-memory front of the extent index: a chained hash table of bd_centry keyed by
 * (family, layer, object, seg), with an LRU list bounding its size.
 *
 * Entries are only used synchronously on the reactor thread (an op copies the block mappings
 * it needs before it submits I/O), so evicting the least recently used entry is safe unless
 * its list holds an edit that the group commit has not written to the index yet: such an
 * entry is pinned (bd_cache_pin) and skipped by eviction until its group has committed,
 * otherwise a reload would read the older list back from RocksDB.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "engine_int.h"
#include "internal.h"

/* What the cache allocates: the public entry plus the pin. */
struct centry_priv {
	struct bd_centry pub;
	uint64_t pin; /* group number of the newest uncommitted edit, 0 = none */
};

static struct centry_priv *priv(struct bd_centry *e)
{
	return (struct centry_priv *)(void *)e;
}

/* Lists held by entries are reference counted: an entry's own list, and the same list shared
 * by the resolution entries of descendants that read through it (see bd_resolve). */
struct cmap {
	uint32_t refs;
	struct bd_extmap m;
};

static struct cmap *cmap_of(struct bd_extmap *m)
{
	return (struct cmap *)(void *)((char *)m - offsetof(struct cmap, m));
}

struct bd_extmap *bd_map_new(void)
{
	struct cmap *cm = malloc(sizeof(*cm));
	if (!cm) {
		return NULL;
	}
	cm->refs = 1;
	return &cm->m;
}

struct bd_extmap *bd_map_ref(struct bd_extmap *m)
{
	if (m) {
		cmap_of(m)->refs++;
	}
	return m;
}

void bd_map_put(struct bd_extmap *m)
{
	if (m && --cmap_of(m)->refs == 0) {
		free(cmap_of(m));
	}
}

TAILQ_HEAD(centry_list, bd_centry);

struct bd_cache {
	struct bd_centry **b;
	size_t nb, n, max;
	uint64_t gen;
	uint64_t committed;     /* every group up to this one is in the index */
	struct centry_list lru; /* most recent first */
};

/* Every field goes through the final mix: the bucket is taken from the low bits, and the
 * segments of one object (which differ only in seg) must not share a bucket (they did when seg
 * was xored in after the mix, above bit 17: chains as long as an object has segments). */
static size_t khash(const struct bd_mkey *k)
{
	uint64_t h = k->family * 0x9E3779B97F4A7C15ull;
	h ^= (k->layer + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
	h ^= (k->object + 0x2545F4914F6CDD1Dull) * 0xBF58476D1CE4E5B9ull;
	h ^= ((uint64_t)k->seg + 0x9FB21C651E98DF25ull) * 0x94D049BB133111EBull;
	h = (h ^ (h >> 31)) * 0xD6E8FEB86659FD93ull;
	return (size_t)(h ^ (h >> 32));
}

static bool keq(const struct bd_mkey *a, const struct bd_mkey *b)
{
	return a->family == b->family && a->layer == b->layer && a->object == b->object &&
	       a->seg == b->seg;
}

int bd_cache_new(struct bd_cache **out, size_t max_entries)
{
	struct bd_cache *c = calloc(1, sizeof(*c));
	if (!c) {
		return -ENOMEM;
	}
	c->nb = 1024;
	c->b = calloc(c->nb, sizeof(*c->b));
	if (!c->b) {
		free(c);
		return -ENOMEM;
	}
	c->max = max_entries ? max_entries : 65536;
	c->gen = 1;
	TAILQ_INIT(&c->lru);
	*out = c;
	return 0;
}

void bd_cache_free(struct bd_cache *c)
{
	if (!c) {
		return;
	}
	struct bd_centry *e;
	while ((e = TAILQ_FIRST(&c->lru))) {
		TAILQ_REMOVE(&c->lru, e, lru);
		bd_map_put(e->map);
		free(e);
	}
	free(c->b);
	free(c);
}

static struct bd_centry **cfind(struct bd_cache *c, const struct bd_mkey *k)
{
	struct bd_centry **pp = &c->b[khash(k) & (c->nb - 1)];
	while (*pp && !keq(&(*pp)->key, k)) {
		pp = &(*pp)->hnext;
	}
	return pp;
}

struct bd_centry *bd_cache_find(struct bd_cache *c, const struct bd_mkey *k)
{
	struct bd_centry *e = *cfind(c, k);
	if (e && e != TAILQ_FIRST(&c->lru)) {
		TAILQ_REMOVE(&c->lru, e, lru);
		TAILQ_INSERT_HEAD(&c->lru, e, lru);
	}
	return e;
}

static void cremove(struct bd_cache *c, struct bd_centry *e)
{
	struct bd_centry **pp = cfind(c, &e->key);
	if (*pp == e) {
		*pp = e->hnext;
	}
	TAILQ_REMOVE(&c->lru, e, lru);
	bd_map_put(e->map);
	free(e);
	c->n--;
}

static void cgrow(struct bd_cache *c)
{
	size_t nb = c->nb * 2;
	struct bd_centry **b = calloc(nb, sizeof(*b));
	if (!b) {
		return;
	}
	for (size_t i = 0; i < c->nb; i++) {
		struct bd_centry *e = c->b[i];
		while (e) {
			struct bd_centry *nx = e->hnext;
			size_t h = khash(&e->key) & (nb - 1);
			e->hnext = b[h];
			b[h] = e;
			e = nx;
		}
	}
	free(c->b);
	c->b = b;
	c->nb = nb;
}

struct bd_centry *bd_cache_get(struct bd_cache *c, const struct bd_mkey *k)
{
	struct bd_centry *e = bd_cache_find(c, k);
	if (e) {
		return e;
	}
	/* Pinned victims go back to the head; give up after a full round (all pinned: the cache
	 * grows past max until their group commits). */
	for (size_t tries = 0; c->n >= c->max && tries < c->n && !TAILQ_EMPTY(&c->lru); tries++) {
		struct bd_centry *v = TAILQ_LAST(&c->lru, centry_list);
		if (priv(v)->pin > c->committed) {
			TAILQ_REMOVE(&c->lru, v, lru);
			TAILQ_INSERT_HEAD(&c->lru, v, lru);
			continue;
		}
		cremove(c, v);
	}
	struct centry_priv *pe = calloc(1, sizeof(*pe));
	if (!pe) {
		return NULL;
	}
	e = &pe->pub;
	e->key = *k;
	struct bd_centry **pp = &c->b[khash(k) & (c->nb - 1)];
	e->hnext = *pp;
	*pp = e;
	TAILQ_INSERT_HEAD(&c->lru, e, lru);
	if (++c->n > c->nb) {
		cgrow(c);
	}
	return e;
}

void bd_cache_drop(struct bd_cache *c, const struct bd_mkey *k)
{
	struct bd_centry *e = *cfind(c, k);
	if (e) {
		cremove(c, e);
	}
}

void bd_cache_pin(struct bd_cache *c, struct bd_centry *ce, uint64_t gseq)
{
	(void)c;
	priv(ce)->pin = gseq;
}

uint64_t bd_cache_pinned(struct bd_centry *ce)
{
	return priv(ce)->pin;
}

void bd_cache_committed(struct bd_cache *c, uint64_t gseq)
{
	c->committed = gseq;
}

void bd_cache_invalidate(struct bd_cache *c)
{
	c->gen++;
}

uint64_t bd_cache_gen(const struct bd_cache *c)
{
	return c->gen;
}

size_t bd_cache_size(const struct bd_cache *c)
{
	return c->n;
}
