#include <criterion/criterion.h>

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
