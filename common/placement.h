/*
 * Placement: where object i of a family lives. Client and blockd compute the same answer from
 * the same cluster map epoch, so the data path never asks meta.
 *
 *   pg       = hash(family, object_index) mod pg_count
 *   replicas = the first R up nodes by weighted rendezvous (HRW) hashing of (pool, pg)
 *   primary  = replicas[0], unless that node is joining (it restarted or was added and is
 *              catching up) and another of the replicas is not: then the first such one
 *
 * Every layer's version of an object shares (family, index), hence its PG and its primary: a
 * read of a clone twenty levels down never leaves the primary.
 */
#ifndef STRATA_COMMON_PLACEMENT_H
#define STRATA_COMMON_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

struct st_place_node {
	uint32_t id;
	uint32_t weight; /* 0 is treated as 1 */
	int up;          /* only up nodes are chosen */
	int joining;     /* catching up: chosen, but not first while a chosen node is not joining */
};

/* 64-bit mixer (splitmix64 finaliser): stable across builds and hosts. */
uint64_t st_hash64(uint64_t x);

uint32_t st_place_pg(uint64_t family, uint64_t object_index, uint32_t pg_count);

/*
 * Choose up to r nodes for (pool_id, pg) by weighted rendezvous hashing. out[] gets indices into
 * nodes[], best first, except that the first (the primary) is the best node that is not
 * joining, when one was chosen. Joining changes who leads, never who is chosen. Returns how many
 * were chosen (fewer than r if fewer nodes are up).
 */
size_t st_place_replicas(uint32_t pool_id, uint32_t pg, const struct st_place_node *nodes,
			 size_t n_nodes, size_t r, size_t *out) __attribute__((nonnull(3, 6)));

#endif
