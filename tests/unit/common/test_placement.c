#include <criterion/criterion.h>
#include <stdbool.h>

#include "common/placement.h"

static struct st_place_node nodes[6];

static void setup(void)
{
	for (int i = 0; i < 6; i++) {
		nodes[i] = (struct st_place_node){.id = (uint32_t)i + 1, .weight = 100, .up = 1};
	}
}

TestSuite(placement, .init = setup);

Test(placement, deterministic_and_distinct)
{
	size_t a[3], b[3];
	for (uint32_t pg = 0; pg < 256; pg++) {
		cr_assert_eq(st_place_replicas(1, pg, nodes, 6, 3, a), 3);
		cr_assert_eq(st_place_replicas(1, pg, nodes, 6, 3, b), 3);
		cr_assert_arr_eq(a, b, sizeof(a));
		cr_assert_neq(a[0], a[1]);
		cr_assert_neq(a[0], a[2]);
		cr_assert_neq(a[1], a[2]);
	}
}

Test(placement, down_nodes_skipped_and_short_when_few_up)
{
	size_t out[3];
	for (int i = 0; i < 6; i++) {
		nodes[i].up = i < 2;
	}
	cr_assert_eq(st_place_replicas(1, 7, nodes, 6, 3, out), 2);
	cr_assert_lt(out[0], 2);
	cr_assert_lt(out[1], 2);
}

Test(placement, node_loss_only_moves_its_pgs)
{
	/* HRW property: PGs whose primary was not the lost node keep their primary. */
	size_t before[1], after[1];
	int moved = 0;
	for (uint32_t pg = 0; pg < 1024; pg++) {
		nodes[3].up = 1;
		st_place_replicas(1, pg, nodes, 6, 1, before);
		nodes[3].up = 0;
		st_place_replicas(1, pg, nodes, 6, 1, after);
		if (before[0] != 3) {
			cr_assert_eq(before[0], after[0], "pg %u moved without cause", pg);
		} else {
			moved++;
		}
	}
	/* about 1/6 of 1024 */
	cr_assert_gt(moved, 100);
	cr_assert_lt(moved, 250);
}

Test(placement, weights_scale_share)
{
	nodes[0].weight = 300; /* 3x the others: expect ~3/8 of primaries */
	size_t out[1];
	int n0 = 0;
	for (uint32_t pg = 0; pg < 4096; pg++) {
		st_place_replicas(2, pg, nodes, 6, 1, out);
		n0 += out[0] == 0;
	}
	cr_assert_gt(n0, 4096 * 3 / 8 - 250);
	cr_assert_lt(n0, 4096 * 3 / 8 + 250);
}

Test(placement, pg_spread)
{
	int hist[16] = {0};
	for (uint64_t i = 0; i < 16000; i++) {
		uint32_t pg = st_place_pg(42, i, 16);
		cr_assert_lt(pg, 16);
		hist[pg]++;
	}
	for (int i = 0; i < 16; i++) {
		cr_assert_gt(hist[i], 800);
		cr_assert_lt(hist[i], 1200);
	}
	cr_assert_eq(st_place_pg(1, 2, 0), 0);
}

/* Issue 5: the whole replica set (not only the primary) is a pure function of (pool, pg, map),
 * independent of the order calls are made in. */
Test(placement, replica_sets_deterministic_across_calls)
{
	size_t first[4096][3], again[3];
	for (uint32_t pg = 0; pg < 4096; pg++) {
		cr_assert_eq(st_place_replicas(3, pg, nodes, 6, 3, first[pg]), 3);
	}
	for (uint32_t pg = 4096; pg-- > 0;) {
		st_place_replicas(3, pg, nodes, 6, 3, again);
		cr_assert_arr_eq(first[pg], again, sizeof(again), "pg %u", pg);
	}
}

/* Removing a node changes only the replica sets that contained it; in those, the survivors
 * keep their relative order and the removed node's slot is filled from below. */
Test(placement, removal_moves_only_pgs_that_had_the_node)
{
	size_t before[3], after[3];
	int touched = 0;
	for (uint32_t pg = 0; pg < 2048; pg++) {
		nodes[4].up = 1;
		st_place_replicas(5, pg, nodes, 6, 3, before);
		nodes[4].up = 0;
		st_place_replicas(5, pg, nodes, 6, 3, after);
		bool had = before[0] == 4 || before[1] == 4 || before[2] == 4;
		if (!had) {
			cr_assert_arr_eq(before, after, sizeof(before), "pg %u moved without cause",
					 pg);
			continue;
		}
		touched++;
		size_t k = 0;
		for (int i = 0; i < 3; i++) {
			if (before[i] != 4) {
				cr_assert_eq(after[k], before[i], "pg %u: survivors reordered", pg);
				k++;
			}
		}
	}
	/* 3 of 6 slots: about half the PGs had the node. */
	cr_assert_gt(touched, 2048 * 4 / 10);
	cr_assert_lt(touched, 2048 * 6 / 10);
}

/* Adding a node takes about 1/N of the primaries, all of them to itself. */
Test(placement, adding_a_node_moves_about_one_nth)
{
	size_t before[1], after[1];
	int moved = 0;
	for (uint32_t pg = 0; pg < 4096; pg++) {
		nodes[5].up = 0;
		st_place_replicas(6, pg, nodes, 6, 1, before);
		nodes[5].up = 1;
		st_place_replicas(6, pg, nodes, 6, 1, after);
		if (before[0] != after[0]) {
			cr_assert_eq(after[0], 5, "pg %u moved to an old node", pg);
			moved++;
		}
	}
	cr_assert_gt(moved, 4096 / 6 - 120);
	cr_assert_lt(moved, 4096 / 6 + 120);
}

/* Every node's share of primaries and of replica slots is within 10% of its weight's share. */
Test(placement, distribution_within_ten_percent_of_weights)
{
	const uint32_t w[6] = {100, 100, 200, 200, 300, 100};
	uint64_t wsum = 0;
	for (int i = 0; i < 6; i++) {
		nodes[i].weight = w[i];
		wsum += w[i];
	}
	const uint32_t npg = 65536;
	uint32_t prim[6] = {0};
	for (uint32_t pg = 0; pg < npg; pg++) {
		size_t out[1];
		st_place_replicas(7, pg, nodes, 6, 1, out);
		prim[out[0]]++;
	}
	for (int i = 0; i < 6; i++) {
		double want = (double)npg * w[i] / (double)wsum;
		cr_assert_gt(prim[i], want * 0.9, "node %d: %u primaries, want %.0f", i, prim[i],
			     want);
		cr_assert_lt(prim[i], want * 1.1, "node %d: %u primaries, want %.0f", i, prim[i],
			     want);
	}
}

Test(placement, a_joining_node_is_chosen_but_never_leads_a_caught_up_member)
{
	size_t before[3], after[3];
	uint32_t led = 0, moved = 0;
	for (uint32_t pg = 0; pg < 256; pg++) {
		setup();
		cr_assert_eq(st_place_replicas(1, pg, nodes, 6, 3, before), 3);
		nodes[2].joining = 1;
		cr_assert_eq(st_place_replicas(1, pg, nodes, 6, 3, after), 3);
		/* The same three nodes... */
		for (int i = 0; i < 3; i++) {
			bool found = false;
			for (int k = 0; k < 3; k++) {
				found |= after[k] == before[i];
			}
			cr_assert(found, "pg %u: joining changed who is chosen", pg);
		}
		/* ...with node 2 never first, and the others in HRW order. */
		cr_assert_neq(after[0], 2, "pg %u: a joining node leads", pg);
		if (before[0] == 2) {
			cr_assert_eq(after[0], before[1], "pg %u: the next best leads", pg);
			cr_assert_eq(after[1], before[0]);
			cr_assert_eq(after[2], before[2]);
			moved++;
		} else {
			cr_assert_arr_eq(after, before, sizeof(after), "pg %u: reordered", pg);
		}
		led += before[0] == 2;
	}
	cr_assert_gt(moved, 0, "node 2 led no PG: the test shows nothing");
	cr_assert_eq(moved, led);
}

Test(placement, a_pg_of_joining_nodes_only_keeps_its_order)
{
	size_t before[2], after[2];
	for (int i = 0; i < 6; i++) {
		nodes[i].joining = 1;
	}
	for (uint32_t pg = 0; pg < 64; pg++) {
		for (int i = 0; i < 6; i++) {
			nodes[i].joining = 0;
		}
		cr_assert_eq(st_place_replicas(3, pg, nodes, 6, 2, before), 2);
		for (int i = 0; i < 6; i++) {
			nodes[i].joining = 1;
		}
		cr_assert_eq(st_place_replicas(3, pg, nodes, 6, 2, after), 2);
		cr_assert_arr_eq(after, before, sizeof(after), "pg %u", pg);
	}
}
