/* stats.c: PG health reports summed per pool (current epoch, UP nodes only, each primary's
 * PGs once; the rest unknown), and the layer set a volume owns (for `used`). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "../tmpdir.h"

static char dir[256];
static struct md_catalog *cat;
static struct md_pgstats *ps;

static void setup(void)
{
	cr_assert_not_null(test_mkdtemp(dir, sizeof(dir)));
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	cr_assert_eq(md_pool_create(cat, "p", 2, 0, 8, NULL), 0);
	cr_assert_eq(md_pgstats_new(&ps), 0);
}

static void teardown(void)
{
	md_pgstats_free(ps);
	md_catalog_close(cat);
	test_rmtree(dir);
}

TestSuite(stats, .init = setup, .fini = teardown);

static uint32_t add_node(const char *addr, const char *uuid)
{
	const struct md_node *n;
	cr_assert_eq(md_node_register(cat, addr, 1 << 30, 1, uuid, 1, &n), 0);
	return n->id;
}

/* node's report: `left` objects still to copy, 10 copied; members twice its primaries. */
static void report_full(uint32_t node, uint64_t epoch, uint32_t clean, uint32_t degraded,
			uint32_t recovering, uint32_t stray, uint64_t left)
{
	const struct md_pool *p = md_pool_find(cat, "p");
	Strata__Meta__PoolPgStats s = STRATA__META__POOL_PG_STATS__INIT;
	Strata__Meta__PoolPgStats *sp = &s;
	s.pool_id = p->id;
	s.clean = clean;
	s.degraded = degraded;
	s.recovering = recovering;
	s.primary = clean + degraded + recovering;
	s.member = 2 * s.primary;
	s.stray = stray;
	Strata__Meta__NodeHeartbeatReq h = STRATA__META__NODE_HEARTBEAT_REQ__INIT;
	h.node_id = node;
	h.pgs_epoch = epoch;
	h.n_pgs = 1;
	h.pgs = &sp;
	h.objects_recovered = 10;
	h.objects_to_recover = left;
	cr_assert_eq(md_pgstats_update(ps, &h), 0);
}

static void report(uint32_t node, uint64_t epoch, uint32_t clean, uint32_t degraded,
		   uint32_t recovering, uint32_t stray)
{
	report_full(node, epoch, clean, degraded, recovering, stray, 1);
}

Test(stats, sums_current_epoch_of_up_nodes)
{
	uint32_t a = add_node("127.0.0.1:1", "a"), b = add_node("127.0.0.1:2", "b");
	uint64_t e = md_catalog_epoch(cat);
	report(a, e, 3, 1, 0, 2);
	report(b, e, 2, 0, 1, 0);
	Strata__Meta__ClusterStatus m = STRATA__META__CLUSTER_STATUS__INIT;
	cr_assert_eq(md_pgstats_fill(ps, cat, &m), 0);
	cr_assert_eq(m.n_pg_pools, 1);
	const Strata__Meta__PoolPgStats *p = m.pg_pools[0];
	cr_assert_str_eq(p->name, "p");
	cr_assert_eq(p->pg_count, 8);
	cr_assert_eq(p->clean, 5);
	cr_assert_eq(p->degraded, 1);
	cr_assert_eq(p->recovering, 1);
	cr_assert_eq(p->unknown, 1);
	cr_assert_eq(p->stray, 2);
	cr_assert_eq(m.objects_recovered, 20);
	cr_assert_eq(m.objects_to_recover, 2);
	cr_assert_eq(m.n_node_pgs, 2);
	md_pgstats_fill_free(&m);

	/* A report of an older epoch counts nowhere: its PGs are unknown. */
	report(b, e - 1, 2, 0, 1, 0);
	cr_assert_eq(md_pgstats_fill(ps, cat, &m), 0);
	cr_assert_eq(m.pg_pools[0]->clean, 3);
	cr_assert_eq(m.pg_pools[0]->unknown, 4);
	md_pgstats_fill_free(&m);

	/* A node that registers again loses its report. */
	md_pgstats_forget(ps, a);
	cr_assert_eq(md_pgstats_fill(ps, cat, &m), 0);
	cr_assert_eq(m.pg_pools[0]->clean, 0);
	cr_assert_eq(m.pg_pools[0]->unknown, 8);
	cr_assert_eq(m.n_node_pgs, 1);
	md_pgstats_fill_free(&m);
}

Test(stats, down_nodes_do_not_count)
{
	uint32_t a = add_node("127.0.0.1:1", "a");
	report(a, md_catalog_epoch(cat), 8, 0, 0, 0);
	cr_assert_eq(md_nodes_tick(cat, 1 + 10000, 100, 5000, 600), 1); /* a: DOWN */
	Strata__Meta__ClusterStatus m = STRATA__META__CLUSTER_STATUS__INIT;
	cr_assert_eq(md_pgstats_fill(ps, cat, &m), 0);
	cr_assert_eq(m.pg_pools[0]->clean, 0);
	cr_assert_eq(m.pg_pools[0]->unknown, 8);
	cr_assert_eq(m.n_node_pgs, 0);
	md_pgstats_fill_free(&m);
}

Test(stats, no_pools_no_nodes)
{
	md_catalog_close(cat);
	test_rmtree(dir);
	cr_assert_not_null(test_mkdtemp(dir, sizeof(dir)));
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	Strata__Meta__ClusterStatus m = STRATA__META__CLUSTER_STATUS__INIT;
	cr_assert_eq(md_pgstats_fill(ps, cat, &m), 0);
	cr_assert_eq(m.n_pg_pools, 0);
	cr_assert_eq(m.n_node_pgs, 0);
	md_pgstats_fill_free(&m);
}

static bool has(const uint64_t *ids, int n, uint64_t id)
{
	for (int i = 0; i < n; i++) {
		if (ids[i] == id) {
			return true;
		}
	}
	return false;
}

Test(stats, volume_layers)
{
	struct md_volume *v, *c;
	struct md_layer *s1, *s2, *s3;
	cr_assert_eq(md_volume_create(cat, "p", "v", 1 << 20, &v), 0);
	uint64_t h0 = v->head;
	cr_assert_eq(md_snap_create(cat, "p", "v", "s1", &s1), 0);
	cr_assert_eq(md_snap_create(cat, "p", "v", "s2", &s2), 0);
	cr_assert_eq(md_snap_create(cat, "p", "v", "s3", &s3), 0);
	uint64_t id1 = s1->id, id2 = s2->id, id3 = s3->id;
	cr_assert_eq(md_clone(cat, "p", "v", "s1", "p", "c", &c), 0);
	/* s2 is read through by s3 and the head: deleting it hides it, the blocks stay v's. */
	cr_assert_eq(md_snap_remove(cat, "p", "v", "s2"), 0);
	/* Roll back to s1: s3 survives off the new head's line. */
	cr_assert_eq(md_snap_rollback(cat, "p", "v", "s1", &v), 0);
	uint64_t *ids;
	int n = md_volume_layers(cat, v, &ids);
	cr_assert_eq(n, 4, "layers: %d", n);
	cr_assert(has(ids, n, v->head));
	cr_assert(has(ids, n, id1));
	cr_assert(has(ids, n, id2), "hidden s2");
	cr_assert(has(ids, n, id3), "s3 off the line");
	cr_assert_eq(id1, h0, "a snapshot keeps the head's id");
	free(ids);
	cr_assert_eq(md_volume_lookup(cat, "p", "c", &c), 0);
	n = md_volume_layers(cat, c, &ids);
	cr_assert_eq(n, 1, "a clone owns only its head");
	cr_assert_eq(ids[0], c->head);
	free(ids);
}

/* A report with `left` objects still to copy and no strays. */
static void report_left(uint32_t node, uint64_t epoch, uint32_t clean, uint32_t degraded,
			uint32_t recovering, uint64_t left)
{
	report_full(node, epoch, clean, degraded, recovering, 0, left);
}

Test(stats, settled_wants_every_pg_serving_caught_up_at_the_current_epoch)
{
	uint32_t a = add_node("127.0.0.1:1", "a"), b = add_node("127.0.0.1:2", "b");
	uint64_t e = md_catalog_epoch(cat);
	cr_assert_not(md_pgstats_settled(ps, cat), "no reports");
	report_left(a, e, 5, 0, 0, 0);
	cr_assert_not(md_pgstats_settled(ps, cat), "node b has not reported");
	report_left(b, e, 2, 0, 1, 0);
	cr_assert_not(md_pgstats_settled(ps, cat), "a PG recovering (a member catching up)");
	report_left(b, e, 2, 1, 0, 0);
	cr_assert(md_pgstats_settled(ps, cat), "5 clean + 2 clean + 1 degraded of 8");
	report_left(b, e, 2, 1, 0, 3);
	cr_assert_not(md_pgstats_settled(ps, cat), "node b still has objects to copy");
	report_left(b, e - 1, 2, 1, 0, 0);
	cr_assert_not(md_pgstats_settled(ps, cat), "node b reported an older map");
	report_left(b, e, 2, 0, 0, 0);
	cr_assert_not(md_pgstats_settled(ps, cat), "a PG nobody reported (unknown)");
	report_left(b, e, 3, 0, 0, 0);
	cr_assert(md_pgstats_settled(ps, cat));
	/* A node that is down does not hold the promotion back. */
	uint32_t c = add_node("127.0.0.1:3", "c");
	cr_assert_not(md_pgstats_settled(ps, cat), "c is up and has not reported, at a new epoch");
	e = md_catalog_epoch(cat);
	report_left(a, e, 5, 0, 0, 0);
	report_left(b, e, 3, 0, 0, 0);
	cr_assert_not(md_pgstats_settled(ps, cat));
	(void)c;
	cr_assert_eq(md_node_heartbeat(cat, a, 0, 0, 9000), 0);
	cr_assert_eq(md_node_heartbeat(cat, b, 0, 0, 9000), 0);
	cr_assert_eq(md_nodes_tick(cat, 9000, 100, 5000, 600), 1); /* c: DOWN */
	e = md_catalog_epoch(cat);
	report_left(a, e, 5, 0, 0, 0);
	report_left(b, e, 3, 0, 0, 0);
	cr_assert(md_pgstats_settled(ps, cat));
}
