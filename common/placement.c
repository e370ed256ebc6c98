/*
 * Weighted rendezvous hashing: each node draws u = hash(pool, pg, node) in (0, 1) and scores
 * -weight / ln(u); the highest scores win. Adding or removing a node moves only the PGs whose
 * winner set it enters or leaves, about 1/N of them, and weights scale a node's share linearly.
 */
#include <math.h>
#include <string.h>

#include "common/placement.h"

uint64_t st_hash64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

uint32_t st_place_pg(uint64_t family, uint64_t object_index, uint32_t pg_count)
{
	if (pg_count == 0) {
		return 0;
	}
	return (uint32_t)(st_hash64(st_hash64(family) ^ object_index) % pg_count);
}

static double hrw_score(uint32_t pool_id, uint32_t pg, const struct st_place_node *n)
{
	uint64_t h = st_hash64(st_hash64(((uint64_t)pool_id << 32) | pg) ^ st_hash64(n->id));
	/* 53 random bits mapped into (0, 1): never 0, never 1. */
	double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0;
	double w = n->weight ? (double)n->weight : 1.0;
	return -w / log(u);
}

size_t st_place_replicas(uint32_t pool_id, uint32_t pg, const struct st_place_node *nodes,
			 size_t n_nodes, size_t r, size_t *out)
{
	double best[8];
	size_t k = 0;

	if (r > 8) {
		r = 8;
	}
	/* Insertion into a tiny sorted array: r <= 3 in practice, n_nodes is the cluster size. */
	for (size_t i = 0; i < n_nodes; i++) {
		if (!nodes[i].up) {
			continue;
		}
		double s = hrw_score(pool_id, pg, &nodes[i]);
		size_t pos = k;
		while (pos > 0 && (best[pos - 1] < s ||
				   (best[pos - 1] == s && nodes[out[pos - 1]].id > nodes[i].id))) {
			pos--;
		}
		if (pos >= r) {
			continue;
		}
		size_t end = k < r ? k : r - 1;
		for (size_t j = end; j > pos; j--) {
			best[j] = best[j - 1];
			out[j] = out[j - 1];
		}
		best[pos] = s;
		out[pos] = i;
		if (k < r) {
			k++;
		}
	}
	for (size_t j = 0; j < k && nodes[out[0]].joining; j++) {
		if (!nodes[out[j]].joining) { /* the best caught-up one leads; the order is kept */
			size_t lead = out[j];
			memmove(out + 1, out, j * sizeof(*out));
			out[0] = lead;
		}
	}
	return k;
}
