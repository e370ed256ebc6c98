/* Node registration, persistent identity, heartbeats, down/out transitions and epochs. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "internal.h"
#include "../tmpdir.h"

static char dir[256];
static struct md_catalog *cat;

static void setup(void)
{
	cr_assert_not_null(test_mkdtemp(dir, sizeof(dir)));
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
}

static void teardown(void)
{
	md_catalog_close(cat);
	test_rmtree(dir);
}

TestSuite(nodes, .init = setup, .fini = teardown);

Test(nodes, register_and_identity)
{
	const struct md_node *n1, *n2, *again;
	uint64_t e0 = md_catalog_epoch(cat);
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7800", 1 << 30, 0, "uuid-a", 1000, &n1), 0);
	cr_assert_eq(md_catalog_epoch(cat), e0 + 1);
	cr_assert_eq(n1->weight, 100);
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7801", 1 << 30, 10, "uuid-b", 1000, &n2), 0);
	cr_assert_neq(n1->id, n2->id);
	uint64_t e1 = md_catalog_epoch(cat);
	/* Re-registration with the same uuid and the same facts: same id, no epoch bump. */
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7800", 1 << 30, 0, "uuid-a", 2000, &again),
		     0);
	cr_assert_eq(again->id, n1->id);
	cr_assert_eq(md_catalog_epoch(cat), e1);
	/* A restarted blockd on a new port keeps its id; the map changes. */
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7900", 1 << 30, 0, "uuid-a", 3000, &again),
		     0);
	cr_assert_eq(again->id, n1->id);
	cr_assert_eq(md_catalog_epoch(cat), e1 + 1);
	cr_assert_eq(md_node_register(cat, "not-an-address", 1, 1, "u", 0, NULL), -EINVAL);
	uint32_t id1 = n1->id;
	md_catalog_close(cat);
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	const struct md_node *const *nodes;
	cr_assert_eq(md_nodes(cat, &nodes), 2);
	cr_assert_eq(nodes[0]->id, id1);
	cr_assert_str_eq(nodes[0]->addr, "127.0.0.1:7900");
}

Test(nodes, down_and_out)
{
	const struct md_node *n;
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7800", 1 << 30, 1, "u", 1000, &n), 0);
	uint32_t id = n->id;
	uint64_t e = md_catalog_epoch(cat);
	cr_assert_eq(md_nodes_tick(cat, 5000, 100, 5000, 600), 0, "4 s without heartbeat is fine");
	cr_assert_eq(md_node_heartbeat(cat, id, 12345, 0, 5500), 0);
	cr_assert_eq(n->used, 12345);
	cr_assert_eq(md_nodes_tick(cat, 10400, 100, 5000, 600), 0);
	cr_assert_eq(md_nodes_tick(cat, 10600, 100, 5000, 600), 1, "down after 5 s");
	cr_assert_eq(n->state, STRATA__META__NODE_STATE__NODE_DOWN);
	cr_assert_eq(md_catalog_epoch(cat), e + 1);
	cr_assert_eq(md_nodes_tick(cat, 20000, 699, 5000, 600), 0);
	cr_assert_eq(md_nodes_tick(cat, 20000, 700, 5000, 600), 1, "out after down-out interval");
	cr_assert_eq(n->state, STRATA__META__NODE_STATE__NODE_OUT);
	cr_assert_eq(md_catalog_epoch(cat), e + 2);
	cr_assert_eq(md_node_heartbeat(cat, id, 0, 0, 30000), 0);
	cr_assert_eq(n->state, STRATA__META__NODE_STATE__NODE_UP, "a heartbeat brings it back");
	cr_assert_eq(md_catalog_epoch(cat), e + 3);
	cr_assert_eq(md_node_heartbeat(cat, 99, 0, 0, 30000), -ENOENT);
}

/* The full ratio: set at the ratio with one epoch bump, cleared only below ratio - 2 %, kept
 * across a restart; a ratio set at run time is kept too and re-marks the nodes at once (100:
 * off). */
Test(nodes, full_ratio_with_hysteresis)
{
	const struct md_node *n;
	uint64_t cap = 1000ull << 20;
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7800", cap, 1, "u", 1000, &n), 0);
	uint32_t id = n->id;
	uint64_t e = md_catalog_epoch(cat);
	uint64_t pct = cap / 100; /* 1 % of the capacity */
	cr_assert_eq(md_node_heartbeat(cat, id, 85 * pct - 1, 0, 1500), 0);
	cr_assert(!md_node_nearfull(cat, n), "below 85 %%");
	cr_assert_eq(md_node_heartbeat(cat, id, 95 * pct - 1, 0, 2000), 0);
	cr_assert(!n->full, "just below the default 95 %%");
	cr_assert(md_node_nearfull(cat, n), "within 10 points of the ratio");
	cr_assert_eq(md_catalog_epoch(cat), e);
	cr_assert_eq(md_node_heartbeat(cat, id, 95 * pct, 0, 3000), 0);
	cr_assert(n->full, "at 95 %%");
	cr_assert(!md_node_nearfull(cat, n), "full, so not nearly full");
	cr_assert_eq(md_catalog_epoch(cat), e + 1, "the map carries the flag");
	cr_assert_eq(md_node_heartbeat(cat, id, 94 * pct, 0, 4000), 0);
	cr_assert(n->full, "still full at 94 %%: the hysteresis");
	cr_assert_eq(md_node_heartbeat(cat, id, 93 * pct, 0, 5000), 0);
	cr_assert(n->full, "still full at 93 %%");
	cr_assert_eq(md_catalog_epoch(cat), e + 1, "no bump while it stays");
	cr_assert_eq(md_node_heartbeat(cat, id, 93 * pct - 1, 0, 6000), 0);
	cr_assert(!n->full, "room again below 93 %%");
	cr_assert_eq(md_catalog_epoch(cat), e + 2);
	/* Persisted with the node. */
	cr_assert_eq(md_node_heartbeat(cat, id, 99 * pct, 0, 7000), 0);
	cr_assert(n->full);
	md_catalog_close(cat);
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	const struct md_node *const *nodes;
	cr_assert_eq(md_nodes(cat, &nodes), 1);
	cr_assert(nodes[0]->full, "the flag survives a restart");
	/* Set at run time: kept, and applied to every up node at once (no heartbeat needed). */
	uint64_t e2 = md_catalog_epoch(cat);
	cr_assert_eq(md_full_ratio(cat), MD_FULL_RATIO);
	cr_assert_eq(md_set_full_ratio(cat, 100), 0);
	cr_assert(!nodes[0]->full, "100 %% is off, and clears a full node at once");
	cr_assert_eq(md_catalog_epoch(cat), e2 + 1);
	cr_assert_eq(md_node_heartbeat(cat, id, cap, 0, 8000), 0);
	cr_assert(!nodes[0]->full, "not even at 100 %% used");
	cr_assert_eq(md_set_full_ratio(cat, 50), 0);
	cr_assert(nodes[0]->full, "99 %% used is full at 50 %%");
	cr_assert_eq(md_catalog_epoch(cat), e2 + 2);
	cr_assert_eq(md_set_full_ratio(cat, 50), 0);
	cr_assert_eq(md_catalog_epoch(cat), e2 + 2, "the same ratio again moves nothing");
	cr_assert_eq(md_set_full_ratio(cat, 0), -EINVAL);
	cr_assert_eq(md_set_full_ratio(cat, 101), -EINVAL);
	cr_assert_eq(md_full_ratio(cat), 50);
	md_catalog_close(cat);
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	cr_assert_eq(md_full_ratio(cat), 50, "the ratio set survives a restart");
	cr_assert_eq(md_nodes(cat, &nodes), 1);
	cr_assert(nodes[0]->full);
}

Test(nodes, a_new_node_at_an_up_nodes_address_marks_it_down)
{
	const struct md_node *old, *other, *fresh;
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7800", 1 << 30, 1, "uuid-old", 1000, &old),
		     0);
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7801", 1 << 30, 1, "uuid-b", 1000, &other),
		     0);
	uint32_t old_id = old->id, other_id = other->id;
	uint64_t e = md_catalog_epoch(cat);
	/* Its store wiped, the process at :7800 comes back with a new uuid: a new node, and the
	 * one it replaced is down in the same epoch, without waiting for heartbeats to stop. */
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7800", 1 << 30, 1, "uuid-new", 1500, &fresh),
		     0);
	cr_assert_neq(fresh->id, old_id);
	cr_assert_eq(md_catalog_epoch(cat), e + 1,
		     "one epoch for the new node and the old one down");
	cr_assert_eq(md_node_by_id(cat, old_id)->state, STRATA__META__NODE_STATE__NODE_DOWN);
	cr_assert_eq(md_node_by_id(cat, other_id)->state, STRATA__META__NODE_STATE__NODE_UP,
		     "a node at another address is untouched");
	uint32_t fresh_id = fresh->id;
	md_catalog_close(cat);
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	cr_assert_eq(md_node_by_id(cat, old_id)->state, STRATA__META__NODE_STATE__NODE_DOWN,
		     "persisted");
	cr_assert_eq(md_node_by_id(cat, fresh_id)->state, STRATA__META__NODE_STATE__NODE_UP);
	/* Re-registering the newcomer with the same facts changes nothing. */
	e = md_catalog_epoch(cat);
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7800", 1 << 30, 1, "uuid-new", 2000, &fresh),
		     0);
	cr_assert_eq(md_catalog_epoch(cat), e);
}

Test(nodes, a_new_process_joins_until_promoted)
{
	const struct md_node *n;
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7800", 1 << 30, 0, "u", 1000, &n), 0);
	cr_assert(n->joining, "a registered node catches up before it leads PGs");
	uint64_t e = md_catalog_epoch(cat);
	cr_assert_eq(md_nodes_promote(cat, false), 0, "not settled: nothing changes");
	cr_assert(n->joining);
	cr_assert_eq(md_catalog_epoch(cat), e);
	cr_assert_eq(md_nodes_promote(cat, true), 0);
	cr_assert_not(n->joining);
	cr_assert_eq(md_catalog_epoch(cat), e + 1,
		     "the map changes: its PGs get it back as primary");
	cr_assert_eq(md_nodes_promote(cat, true), 0);
	cr_assert_eq(md_catalog_epoch(cat), e + 1, "nobody joining: no bump");
	/* Promotion is persisted. */
	md_catalog_close(cat);
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	const struct md_node *const *nodes;
	cr_assert_eq(md_nodes(cat, &nodes), 1);
	cr_assert_not(nodes[0]->joining);
	/* A restart (same facts) joins again, with a new map. */
	e = md_catalog_epoch(cat);
	cr_assert_eq(md_node_register(cat, "127.0.0.1:7800", 1 << 30, 0, "u", 2000, &n), 0);
	cr_assert(n->joining);
	cr_assert_eq(md_catalog_epoch(cat), e + 1);
	/* So does one that comes back from down. */
	cr_assert_eq(md_nodes_promote(cat, true), 0);
	cr_assert_eq(md_nodes_tick(cat, 10000, 100, 5000, 600), 1);
	cr_assert_eq(md_node_heartbeat(cat, n->id, 0, 0, 11000), 0);
	cr_assert_eq(n->state, STRATA__META__NODE_STATE__NODE_UP);
	cr_assert(n->joining, "back from down: behind on what its PGs took meanwhile");
}
