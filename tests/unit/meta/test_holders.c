/* holders.c: which nodes hold each PG's data, and which PGs have no holder up. */
#include <criterion/criterion.h>
#include <string.h>

#include "internal.h"
#include "../tmpdir.h"

static char dir[256];
static struct md_catalog *cat;

static void setup(void)
{
	cr_assert_not_null(test_mkdtemp(dir, sizeof(dir)));
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	cr_assert_eq(md_pool_create(cat, "p", 1, 0, 16, NULL), 0);
}

static void teardown(void)
{
	md_catalog_close(cat);
	test_rmtree(dir);
}

TestSuite(holders, .init = setup, .fini = teardown);

static uint32_t add_node(const char *addr, const char *uuid)
{
	const struct md_node *n;
	cr_assert_eq(md_node_register(cat, addr, 1 << 30, 1, uuid, 1, &n), 0);
	return n->id;
}

/* node reports holding exactly the PGs in mask (16 PGs: two bytes). */
static void hold(uint32_t node, uint16_t mask)
{
	const struct md_pool *p = md_pool_find(cat, "p");
	uint8_t bits[2] = {(uint8_t)mask, (uint8_t)(mask >> 8)};
	Strata__Meta__PoolHeld ph = STRATA__META__POOL_HELD__INIT;
	Strata__Meta__PoolHeld *pph = &ph;
	ph.pool_id = p->id;
	ph.pgs.data = bits;
	ph.pgs.len = 2;
	Strata__Meta__NodeHeartbeatReq h = STRATA__META__NODE_HEARTBEAT_REQ__INIT;
	h.node_id = node;
	h.n_held = 1;
	h.held = &pph;
	cr_assert_eq(md_holders_update(cat, node, &h), 0);
}

Test(holders, a_pg_is_down_when_every_holder_is)
{
	uint32_t a = add_node("127.0.0.1:1", "a"), b = add_node("127.0.0.1:2", "b");
	const struct md_pool *p = md_pool_find(cat, "p");
	hold(a, 0x0003); /* PGs 0, 1 */
	hold(b, 0x0006); /* PGs 1, 2 */
	uint64_t e = md_catalog_epoch(cat);
	for (uint32_t g = 0; g < 16; g++) {
		cr_assert_not(md_pg_down(cat, p, g), "pg %u: every node is up", g);
	}
	/* a goes down: PG 0 (a only) is down; PG 1 (b too) and PG 2 (b) are not; PG 3 (nobody
	 * holds it: empty) is not. */
	cr_assert_eq(md_node_heartbeat(cat, b, 0, 0, 9000), 0);
	cr_assert_eq(md_nodes_tick(cat, 9000, 100, 5000, 600), 1);
	cr_assert(md_pg_down(cat, p, 0));
	cr_assert_not(md_pg_down(cat, p, 1));
	cr_assert_not(md_pg_down(cat, p, 2));
	cr_assert_not(md_pg_down(cat, p, 3));
	/* b starts holding PG 0 (it pulled it from a stray): PG 0 is up again, with a new map. */
	e = md_catalog_epoch(cat);
	hold(b, 0x0007);
	cr_assert_not(md_pg_down(cat, p, 0));
	cr_assert_eq(md_catalog_epoch(cat), e + 1, "a PG's down state changed: new map");
	/* The same report again changes nothing. */
	hold(b, 0x0007);
	cr_assert_eq(md_catalog_epoch(cat), e + 1);
	/* b drops PG 0 again: down again. Holdings survive a meta restart. */
	hold(b, 0x0006);
	cr_assert(md_pg_down(cat, p, 0));
	md_catalog_close(cat);
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	p = md_pool_find(cat, "p");
	cr_assert(md_pg_down(cat, p, 0), "the holder sets were persisted");
	/* a is marked out: its data is given up, PG 0 has no holder and is served (empty). */
	cr_assert_eq(md_node_heartbeat(cat, b, 0, 0, 10000), 0);
	cr_assert_eq(md_nodes_tick(cat, 10000, 100, 5000, 600), 0);
	cr_assert_eq(md_nodes_tick(cat, 10000, 800, 5000, 600), 1, "a: out");
	cr_assert_not(md_pg_down(cat, p, 0));
}
