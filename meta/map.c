/*
 * A small open-addressing hash map from byte strings to pointers, for the catalog's id and
 * name indexes. Linear probing with tombstones; the table doubles at 50% load (counting
 * tombstones), so a lookup is O(1) expected whatever the catalog size.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct md_map_ent {
	void *key; /* NULL: empty; (void *)1: tombstone */
	size_t klen;
	uint64_t hash;
	void *val;
};

#define TOMB ((void *)1)

static uint64_t hash_bytes(const void *key, size_t len)
{
	const uint8_t *p = key;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

static struct md_map_ent *find(const struct md_map *m, const void *key, size_t klen, uint64_t h)
{
	if (m->cap == 0) {
		return NULL;
	}
	for (size_t i = h & (m->cap - 1), n = 0; n < m->cap; i = (i + 1) & (m->cap - 1), n++) {
		struct md_map_ent *e = &m->ents[i];
		if (e->key == NULL) {
			return NULL;
		}
		if (e->key != TOMB && e->hash == h && e->klen == klen &&
		    memcmp(e->key, key, klen) == 0) {
			return e;
		}
	}
	return NULL;
}

void *md_map_get(const struct md_map *m, const void *key, size_t klen)
{
	struct md_map_ent *e = find(m, key, klen, hash_bytes(key, klen));
	return e ? e->val : NULL;
}

static void insert_ent(struct md_map_ent *ents, size_t cap, struct md_map_ent *src)
{
	for (size_t i = src->hash & (cap - 1);; i = (i + 1) & (cap - 1)) {
		if (ents[i].key == NULL) {
			ents[i] = *src;
			return;
		}
	}
}

static int grow(struct md_map *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 64;
	while (m->count * 2 >= ncap) {
		ncap *= 2;
	}
	struct md_map_ent *n = calloc(ncap, sizeof(*n));
	if (n == NULL) {
		return -ENOMEM;
	}
	for (size_t i = 0; i < m->cap; i++) {
		if (m->ents[i].key != NULL && m->ents[i].key != TOMB) {
			insert_ent(n, ncap, &m->ents[i]);
		}
	}
	free(m->ents);
	m->ents = n;
	m->cap = ncap;
	m->used = m->count;
	return 0;
}

/* Insert or replace. Returns 0 or -ENOMEM. */
int md_map_put(struct md_map *m, const void *key, size_t klen, void *val)
{
	uint64_t h = hash_bytes(key, klen);
	struct md_map_ent *e = find(m, key, klen, h);
	if (e != NULL) {
		e->val = val;
		return 0;
	}
	if ((m->used + 1) * 2 > m->cap) {
		int rc = grow(m);
		if (rc < 0) {
			return rc;
		}
	}
	void *k = malloc(klen ? klen : 1);
	if (k == NULL) {
		return -ENOMEM;
	}
	memcpy(k, key, klen);
	for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		e = &m->ents[i];
		if (e->key == NULL || e->key == TOMB) {
			if (e->key == NULL) {
				m->used++;
			}
			*e = (struct md_map_ent){.key = k, .klen = klen, .hash = h, .val = val};
			m->count++;
			return 0;
		}
	}
}

void *md_map_del(struct md_map *m, const void *key, size_t klen)
{
	struct md_map_ent *e = find(m, key, klen, hash_bytes(key, klen));
	if (e == NULL) {
		return NULL;
	}
	void *v = e->val;
	free(e->key);
	e->key = TOMB;
	e->val = NULL;
	m->count--;
	return v;
}

void *md_map_next(const struct md_map *m, size_t *pos)
{
	while (*pos < m->cap) {
		struct md_map_ent *e = &m->ents[(*pos)++];
		if (e->key != NULL && e->key != TOMB) {
			return e->val;
		}
	}
	return NULL;
}

void md_map_free(struct md_map *m)
{
	for (size_t i = 0; i < m->cap; i++) {
		if (m->ents[i].key != NULL && m->ents[i].key != TOMB) {
			free(m->ents[i].key);
		}
	}
	free(m->ents);
	memset(m, 0, sizeof(*m));
}
