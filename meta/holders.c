/*
 * Which nodes hold each PG's data, so that a PG whose every holder is down is served by nobody.
 *
 * Placement moves a PG to the up nodes when its nodes go down. With R = 1 (or every replica
 * down at once) none of the new nodes has the data: before, the new primary served zeros for
 * it, took writes, and the holder's return then lost either those writes or its own data. Now
 * every blockd heartbeat says which PGs it holds data of (PoolHeld), meta keeps per PG the set
 * of holders (persisted in the pool record), and the map flags a PG whose holders are all down
 * (Pool.down_pgs). blockd answers -EAGAIN for such a PG, and clients retry until a holder is
 * up again, or is marked out (its data is then given up, and the PG starts empty).
 *
 *   heartbeat --held--> pool->holders[g] (bit per node id) --node states--> map down_pgs
 *
 * Only a change of a PG's down state bumps the epoch; a node's holdings change seldom (first
 * write to a PG, a pull, a stray removed), and each change is one pool record write.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "common/log.h"
#include "internal.h"

static bool has(const uint8_t *set, uint32_t id)
{
	return (set[id / 8] >> (id % 8)) & 1;
}

bool md_pg_down(const struct md_catalog *cat, const struct md_pool *p, uint32_t g)
{
	if (p->holders == NULL || g >= p->pg_count) {
		return false;
	}
	const uint8_t *set = p->holders + (size_t)g * MD_HOLDER_BYTES;
	bool any = false;
	for (uint32_t id = 1; id < MD_HOLDER_BYTES * 8; id++) {
		if (!has(set, id)) {
			continue;
		}
		any = true;
		const struct md_node *n = md_node_by_id(cat, id);
		if (n != NULL && n->state == STRATA__META__NODE_STATE__NODE_UP) {
			return false;
		}
	}
	return any;
}

int md_holders_update(struct md_catalog *cat, uint32_t node_id,
		      const Strata__Meta__NodeHeartbeatReq *h)
{
	if (node_id == 0 || node_id >= MD_HOLDER_BYTES * 8) {
		return 0;
	}
	struct rocksdb_writebatch_t *b = NULL;
	bool bump = false;
	for (size_t i = 0; i < h->n_held; i++) {
		const Strata__Meta__PoolHeld *ph = h->held[i];
		struct md_pool *p = (struct md_pool *)md_pool_by_id(cat, ph->pool_id);
		if (p == NULL || ph->pgs.len != (p->pg_count + 7) / 8) {
			continue; /* a pool it has not heard of yet, or a bad report */
		}
		bool changed = false;
		for (uint32_t g = 0; g < p->pg_count; g++) {
			bool want = has(ph->pgs.data, g);
			bool was = p->holders &&
				   has(p->holders + (size_t)g * MD_HOLDER_BYTES, node_id);
			if (want == was) {
				continue;
			}
			if (p->holders == NULL) {
				p->holders = calloc(p->pg_count, MD_HOLDER_BYTES);
				if (p->holders == NULL) {
					return -ENOMEM;
				}
			}
			bool down = md_pg_down(cat, p, g);
			p->holders[(size_t)g * MD_HOLDER_BYTES + node_id / 8] ^=
				(uint8_t)(1u << (node_id % 8));
			bump |= down != md_pg_down(cat, p, g);
			changed = true;
		}
		if (changed) {
			if (b == NULL) {
				b = md_batch();
			}
			md_batch_put_pool(b, p);
		}
	}
	if (b == NULL) {
		return 0;
	}
	if (bump) {
		md_batch_bump_epoch(cat, b);
		st_info("node %u: the PGs it holds changed which PGs have no holder up (epoch "
			"%llu)",
			node_id, (unsigned long long)md_catalog_epoch(cat));
	}
	return md_commit(cat, b);
}

void md_holders_forget(struct md_catalog *cat, struct rocksdb_writebatch_t *b, uint32_t node_id)
{
	if (node_id == 0 || node_id >= MD_HOLDER_BYTES * 8) {
		return;
	}
	const struct md_pool *const *pools;
	size_t np = md_pools(cat, &pools);
	for (size_t i = 0; i < np; i++) {
		struct md_pool *p = (struct md_pool *)pools[i];
		bool changed = false;
		for (uint32_t g = 0; p->holders && g < p->pg_count; g++) {
			uint8_t *byte = &p->holders[(size_t)g * MD_HOLDER_BYTES + node_id / 8];
			if (*byte & (1u << (node_id % 8))) {
				*byte &= (uint8_t) ~(1u << (node_id % 8));
				changed = true;
			}
		}
		if (changed) {
			md_batch_put_pool(b, p);
		}
	}
}
