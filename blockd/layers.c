/*
 * Layer ancestry cache: (family, layer) -> [parent, grandparent, ..., root].
 *
 * Parent links are immutable once a layer exists, so an entry never goes stale; requests
 * carry the ancestry (or the service fetches it once) and every later request of that layer
 * may omit it. A chained hash table; entries own a copy of the array.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct layer_ent {
	uint64_t family, layer;
	uint32_t n;
	uint64_t *anc;
	struct layer_ent *next;
};

struct bd_layers {
	struct layer_ent **b;
	size_t nb, n;
};

static size_t lhash(uint64_t f, uint64_t l)
{
	uint64_t h =
		f * 0x9E3779B97F4A7C15ull ^ (l + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
	return (size_t)(h ^ (h >> 29));
}

int bd_layers_new(struct bd_layers **out)
{
	struct bd_layers *ls = calloc(1, sizeof(*ls));
	if (!ls) {
		return -ENOMEM;
	}
	ls->nb = 256;
	ls->b = calloc(ls->nb, sizeof(*ls->b));
	if (!ls->b) {
		free(ls);
		return -ENOMEM;
	}
	*out = ls;
	return 0;
}

void bd_layers_free(struct bd_layers *ls)
{
	if (!ls) {
		return;
	}
	for (size_t i = 0; i < ls->nb; i++) {
		struct layer_ent *e = ls->b[i];
		while (e) {
			struct layer_ent *nx = e->next;
			free(e->anc);
			free(e);
			e = nx;
		}
	}
	free(ls->b);
	free(ls);
}

static struct layer_ent **lfind(struct bd_layers *ls, uint64_t f, uint64_t l)
{
	struct layer_ent **pp = &ls->b[lhash(f, l) & (ls->nb - 1)];
	while (*pp && !((*pp)->family == f && (*pp)->layer == l)) {
		pp = &(*pp)->next;
	}
	return pp;
}

static void lgrow(struct bd_layers *ls)
{
	size_t nb = ls->nb * 2;
	struct layer_ent **b = calloc(nb, sizeof(*b));
	if (!b) {
		return;
	}
	for (size_t i = 0; i < ls->nb; i++) {
		struct layer_ent *e = ls->b[i];
		while (e) {
			struct layer_ent *nx = e->next;
			size_t h = lhash(e->family, e->layer) & (nb - 1);
			e->next = b[h];
			b[h] = e;
			e = nx;
		}
	}
	free(ls->b);
	ls->b = b;
	ls->nb = nb;
}

/* Returns 0, -ENOMEM or -EINVAL. */
int bd_layers_set(struct bd_layers *ls, uint64_t family, uint64_t layer, const uint64_t *anc,
		  uint32_t n)
{
	if (n > BD_MAX_DEPTH || layer == 0) {
		return -EINVAL;
	}
	/* Layer 0 is no layer: an index scan reads it as "every layer of the family", so a
	 * flatten through it copied every layer's list of a segment, each with a reference, into
	 * one key (the blocks never came free; blockd_wire_fuzz). Nor is a layer its own
	 * ancestor. */
	for (uint32_t i = 0; i < n; i++) {
		if (anc[i] == 0 || anc[i] == layer) {
			return -EINVAL;
		}
	}
	struct layer_ent **pp = lfind(ls, family, layer);
	if (*pp) {
		if ((*pp)->n == n && (n == 0 || memcmp((*pp)->anc, anc, n * sizeof(*anc)) == 0)) {
			return 0;
		}
		/* Layer ids are never reused, so a different ancestry is a caller bug or a
		 * re-created family; the newest statement wins. */
		uint64_t *a = malloc((n ? n : 1) * sizeof(*a));
		if (!a) {
			return -ENOMEM;
		}
		if (n) {
			memcpy(a, anc, n * sizeof(*a));
		}
		free((*pp)->anc);
		(*pp)->anc = a;
		(*pp)->n = n;
		return 0;
	}
	struct layer_ent *e = calloc(1, sizeof(*e));
	if (!e) {
		return -ENOMEM;
	}
	e->anc = malloc((n ? n : 1) * sizeof(*e->anc));
	if (!e->anc) {
		free(e);
		return -ENOMEM;
	}
	if (n) {
		memcpy(e->anc, anc, n * sizeof(*anc));
	}
	e->family = family;
	e->layer = layer;
	e->n = n;
	e->next = *pp;
	*pp = e;
	if (++ls->n > ls->nb) {
		lgrow(ls);
	}
	return 0;
}

int bd_layers_get(struct bd_layers *ls, uint64_t family, uint64_t layer, const uint64_t **anc)
{
	struct layer_ent *e = *lfind(ls, family, layer);
	if (!e) {
		return -ENOENT;
	}
	*anc = e->anc;
	return (int)e->n;
}

void bd_layers_forget(struct bd_layers *ls, uint64_t family, uint64_t layer)
{
	struct layer_ent **pp = lfind(ls, family, layer);
	struct layer_ent *e = *pp;
	if (!e) {
		return;
	}
	*pp = e->next;
	free(e->anc);
	free(e);
	ls->n--;
}
