/*
 * Nodes and their liveness.
 *
 *   register ----> UP --no heartbeat for down_ms--> DOWN --down for down_out_s--> OUT
 *                   ^                                 |                            |
 *                   +------- heartbeat / register ----+----------------------------+
 *
 * A node that registers (a new process) or comes back from DOWN is *joining*: placement keeps
 * it out of the primary's seat while a caught-up member of the PG is up (common/placement.h),
 * so its PGs keep serving from the members that have the data while it catches up in the
 * background. Once every PG reports clean or degraded at the current epoch with nothing left
 * to copy (md_pgstats_settled), md_nodes_promote ends the joining of every such node with one
 * epoch bump, and they take their PGs back, already level.
 *
 * Every state change is persisted with an epoch bump in one synced batch. Heartbeats themselves
 * only touch memory (used bytes, last-seen time): persisting 1 Hz per node would put fsyncs on a
 * path that needs none. After a restart every UP node gets a fresh grace period of down_ms.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rocksdb/c.h>

#include "common/log.h"
#include "common/net.h"
#include "internal.h"

/* Only one process listens on an address, so an UP node that another node now registers at
 * is gone: its disk was wiped or replaced, and the new process got a new identity. Marking it
 * down at once, instead of after down_ms without heartbeats, keeps its PGs from being counted
 * as served (and settled) by a process that no longer has them, and keeps peers from sending
 * that node's traffic to the newcomer. Returns a batch holding the changes, or NULL if none. */
static struct rocksdb_writebatch_t *displace_same_addr(struct md_catalog *cat,
						       const struct md_node *keep, const char *addr)
{
	const struct md_node *const *nodes;
	size_t nn = md_nodes(cat, &nodes);
	struct rocksdb_writebatch_t *b = NULL;
	for (size_t i = 0; i < nn; i++) {
		struct md_node *c = (struct md_node *)nodes[i];
		if (c == keep || c->state != STRATA__META__NODE_STATE__NODE_UP ||
		    strcmp(c->addr, addr) != 0) {
			continue;
		}
		c->state = STRATA__META__NODE_STATE__NODE_DOWN;
		c->down_since = (uint64_t)time(NULL);
		st_warn("node %u (%s) is down: node %u registered at its address", c->id, c->addr,
			keep->id);
		b = b ? b : md_batch();
		md_batch_put_node(b, c);
	}
	return b;
}

int md_node_register(struct md_catalog *cat, const char *addr, uint64_t capacity, uint32_t weight,
		     const char *uuid, uint64_t now_ms, const struct md_node **out)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	if (strlen(addr) >= 64 || st_parse_hostport(addr, &ss, &sl) < 0) {
		return md_fail(cat, -EINVAL, "invalid node address '%.80s' (want HOST:PORT)", addr);
	}
	if (strlen(uuid) >= 64) {
		return md_fail(cat, -EINVAL, "node uuid longer than 63 characters");
	}
	weight = weight ? weight : 100;
	const struct md_node *const *nodes;
	size_t nn = md_nodes(cat, &nodes);
	struct md_node *n = NULL;
	for (size_t i = 0; i < nn && n == NULL; i++) {
		const struct md_node *c = nodes[i];
		if (uuid[0] != '\0' ? strcmp(c->uuid, uuid) == 0
				    : (c->uuid[0] == '\0' && strcmp(c->addr, addr) == 0)) {
			n = (struct md_node *)c;
		}
	}
	bool changed = true;
	if (n == NULL) {
		/* Ids are never reused: one past the largest (nodes are never removed). Compute it
		 * before md_node_alloc, which may move the nodes array. */
		uint32_t id = 0;
		for (size_t i = 0; i < nn; i++) {
			id = nodes[i]->id > id ? nodes[i]->id : id;
		}
		n = md_node_alloc(cat);
		if (n == NULL) {
			return md_fail(cat, -ENOMEM, "out of memory");
		}
		n->id = id + 1;
		snprintf(n->uuid, sizeof(n->uuid), "%s", uuid);
	} else {
		changed = n->state != STRATA__META__NODE_STATE__NODE_UP || !n->joining ||
			  strcmp(n->addr, addr) != 0 || n->weight != weight ||
			  n->capacity != capacity;
	}
	n->joining = true; /* a new process: behind on whatever changed while it was away */
	struct rocksdb_writebatch_t *b = displace_same_addr(cat, n, addr);
	changed |= b != NULL;
	snprintf(n->addr, sizeof(n->addr), "%s", addr);
	n->capacity = capacity;
	n->weight = weight;
	n->state = STRATA__META__NODE_STATE__NODE_UP;
	n->down_since = 0;
	n->last_hb_ms = now_ms;
	if (changed) {
		b = b ? b : md_batch();
		md_batch_put_node(b, n);
		md_batch_bump_epoch(cat, b);
		int rc = md_commit(cat, b);
		if (rc < 0) {
			return rc;
		}
		st_info("node %u registered at %s (epoch %llu)", n->id, addr,
			(unsigned long long)md_catalog_epoch(cat));
	}
	if (out) {
		*out = n;
	}
	return 0;
}

/* used >= pct % of capacity, without overflow */
static bool at_pct(uint64_t used, uint64_t capacity, unsigned pct)
{
	return used >= capacity / 100 * pct + capacity % 100 * pct / 100;
}

/* Is n full (see md_full_ratio), its used bytes against this capacity? A node already full
 * stays so until it is below the ratio less the hysteresis. */
static bool node_full(const struct md_catalog *cat, const struct md_node *n, uint64_t capacity)
{
	unsigned ratio = md_full_ratio(cat);
	if (ratio >= 100 || capacity == 0) {
		return false;
	}
	unsigned pct = n->full && ratio > MD_FULL_HYSTERESIS ? ratio - MD_FULL_HYSTERESIS : ratio;
	return at_pct(n->used, capacity, pct);
}

bool md_node_nearfull(const struct md_catalog *cat, const struct md_node *n)
{
	unsigned ratio = md_full_ratio(cat);
	return n->state == STRATA__META__NODE_STATE__NODE_UP && !n->full && n->capacity != 0 &&
	       at_pct(n->used, n->capacity,
		      ratio > MD_NEARFULL_MARGIN ? ratio - MD_NEARFULL_MARGIN : 0);
}

/* Flip n's full flag and log it. The caller writes the node and bumps the epoch in its batch:
 * the primaries learn it from the map. */
static void mark_full(struct md_catalog *cat, struct md_node *n, bool full)
{
	if (full) {
		st_warn("node %u (%s) is full: %llu of %llu bytes used (full ratio %u%%): "
			"writes to its PGs are refused with ENOSPC",
			n->id, n->addr, (unsigned long long)n->used,
			(unsigned long long)n->capacity, md_full_ratio(cat));
	} else {
		st_warn("node %u (%s) has room again: %llu of %llu bytes used (full ratio %u%%)",
			n->id, n->addr, (unsigned long long)n->used,
			(unsigned long long)n->capacity, md_full_ratio(cat));
	}
	n->full = full;
}

int md_set_full_ratio(struct md_catalog *cat, unsigned pct)
{
	if (pct < 1 || pct > 100) {
		return md_fail(cat, -EINVAL, "full ratio %u%% is out of range (1-100)", pct);
	}
	if (pct == md_full_ratio(cat) && cat->ctr.full_ratio != 0) {
		return 0;
	}
	rocksdb_writebatch_t *b = md_batch();
	uint32_t old = cat->ctr.full_ratio;
	cat->ctr.full_ratio = pct; /* written with the counters by md_commit */
	bool moved = false;
	for (size_t i = 0; i < cat->nnodes; i++) {
		struct md_node *n = cat->nodes[i];
		bool full = n->state == STRATA__META__NODE_STATE__NODE_UP &&
			    node_full(cat, n, n->capacity);
		if (full != n->full) {
			mark_full(cat, n, full);
			md_batch_put_node(b, n);
			moved = true;
		}
	}
	if (moved) {
		md_batch_bump_epoch(cat, b);
	}
	st_info("full ratio %u%% (was %u%%)", pct, old ? old : MD_FULL_RATIO);
	return md_commit(cat, b);
}

int md_node_heartbeat(struct md_catalog *cat, uint32_t id, uint64_t used, uint64_t capacity,
		      uint64_t now_ms)
{
	struct md_node *n = md_node_by_id(cat, id);
	if (n == NULL) {
		return md_fail(cat, -ENOENT, "node %u is not registered", id);
	}
	n->last_hb_ms = now_ms;
	n->used = used;
	bool cap_changed = capacity != 0 && capacity != n->capacity;
	bool full = node_full(cat, n, cap_changed ? capacity : n->capacity);
	if (n->state == STRATA__META__NODE_STATE__NODE_UP && !cap_changed && full == n->full) {
		return 0;
	}
	struct rocksdb_writebatch_t *b = md_batch();
	if (cap_changed) {
		n->capacity = capacity;
	}
	if (full != n->full) {
		mark_full(cat, n, full); /* the node is written below */
		md_batch_bump_epoch(cat, b);
	}
	if (n->state != STRATA__META__NODE_STATE__NODE_UP) {
		st_info("node %u is up again", id);
		n->state = STRATA__META__NODE_STATE__NODE_UP;
		n->down_since = 0;
		n->joining = true; /* its PGs moved on while it was marked down */
		md_batch_bump_epoch(cat, b);
	}
	md_batch_put_node(b, n);
	return md_commit(cat, b);
}

int md_nodes_tick(struct md_catalog *cat, uint64_t now_ms, uint64_t wall_s, uint64_t down_ms,
		  uint64_t down_out_s)
{
	const struct md_node *const *nodes;
	size_t nn = md_nodes(cat, &nodes);
	struct rocksdb_writebatch_t *b = NULL;
	int changes = 0;
	for (size_t i = 0; i < nn; i++) {
		struct md_node *n = (struct md_node *)nodes[i];
		if (n->last_hb_ms == 0) {
			n->last_hb_ms = now_ms; /* loaded from disk: start the grace period now */
		}
		uint32_t old = n->state;
		if (n->state == STRATA__META__NODE_STATE__NODE_UP &&
		    now_ms - n->last_hb_ms > down_ms) {
			n->state = STRATA__META__NODE_STATE__NODE_DOWN;
			n->down_since = wall_s;
			st_warn("node %u (%s) is down: no heartbeat for %llu ms", n->id, n->addr,
				(unsigned long long)(now_ms - n->last_hb_ms));
		} else if (n->state == STRATA__META__NODE_STATE__NODE_DOWN &&
			   wall_s >= n->down_since + down_out_s) {
			n->state = STRATA__META__NODE_STATE__NODE_OUT;
			st_warn("node %u (%s) is out after %llu s down", n->id, n->addr,
				(unsigned long long)(wall_s - n->down_since));
			if (b == NULL) {
				b = md_batch();
			}
			md_holders_forget(cat, b, n->id); /* its data is given up */
		}
		if (n->state != old) {
			if (b == NULL) {
				b = md_batch();
			}
			md_batch_put_node(b, n);
			changes++;
		}
	}
	if (b == NULL) {
		return 0;
	}
	md_batch_bump_epoch(cat, b);
	int rc = md_commit(cat, b);
	return rc < 0 ? rc : changes;
}

int md_nodes_promote(struct md_catalog *cat, bool settled)
{
	if (!settled) {
		return 0;
	}
	const struct md_node *const *nodes;
	size_t nn = md_nodes(cat, &nodes);
	struct rocksdb_writebatch_t *b = NULL;
	for (size_t i = 0; i < nn; i++) {
		struct md_node *n = (struct md_node *)nodes[i];
		if (n->state != STRATA__META__NODE_STATE__NODE_UP || !n->joining) {
			continue;
		}
		n->joining = false;
		if (b == NULL) {
			b = md_batch();
		}
		md_batch_put_node(b, n);
		st_info("node %u has caught up: a primary again", n->id);
	}
	if (b == NULL) {
		return 0;
	}
	md_batch_bump_epoch(cat, b);
	return md_commit(cat, b);
}
