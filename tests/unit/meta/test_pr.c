/* Reservation records (pr.c): compare-and-swap by version, snapshot records apart from the
 * volume's, persistence across reopen, removal with the volume. */
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
	cr_assert_eq(md_pool_create(cat, "p", 1, 0, 0, NULL), 0);
	cr_assert_eq(md_volume_create(cat, "p", "v", 1 << 20, NULL), 0);
}

static void teardown(void)
{
	md_catalog_close(cat);
	test_rmtree(dir);
}

TestSuite(pr, .init = setup, .fini = teardown);

static void one_reg(Strata__Meta__PrRecord *r, Strata__Meta__PrRegistration *g,
		    Strata__Meta__PrRegistration **gp, uint64_t key)
{
	strata__meta__pr_record__init(r);
	strata__meta__pr_registration__init(g);
	g->initiator_port = "iqn.x,i,0x1";
	g->target_port = "iqn.t,t,0x0001";
	g->key = key;
	*gp = g;
	r->regs = gp;
	r->n_regs = 1;
	r->generation = 1;
}

Test(pr, compare_and_swap)
{
	Strata__Meta__PrRecord r, *got;
	Strata__Meta__PrRegistration g, *gp;
	uint64_t ver;

	cr_assert_eq(md_pr_get(cat, "p/v", 0, &ver, &got), 0);
	cr_assert_eq(ver, 0);
	cr_assert_null(got, "no record yet");
	one_reg(&r, &g, &gp, 0xaa);
	cr_assert_eq(md_pr_update(cat, "p/v", 0, &r, &ver), 0);
	cr_assert_eq(ver, 1);
	cr_assert_eq(md_pr_update(cat, "p/v", 0, &r, &ver), -EAGAIN, "stale expected version");
	cr_assert_eq(ver, 1, "the current version comes back");
	cr_assert_eq(md_pr_get(cat, "p/v", 1, &ver, &got), 0);
	cr_assert_null(got, "unchanged: version only");
	cr_assert_eq(md_pr_get(cat, "p/v", 0, &ver, &got), 0);
	cr_assert_not_null(got);
	cr_assert_eq(got->version, 1);
	cr_assert_eq(got->n_regs, 1);
	cr_assert_eq(got->regs[0]->key, 0xaa);
	cr_assert_str_eq(got->regs[0]->initiator_port, "iqn.x,i,0x1");
	strata__meta__pr_record__free_unpacked(got, NULL);
	/* An empty record keeps the version growing. */
	strata__meta__pr_record__init(&r);
	cr_assert_eq(md_pr_update(cat, "p/v", 1, &r, &ver), 0);
	cr_assert_eq(ver, 2);
	cr_assert_eq(md_pr_get(cat, "p/v", 0, &ver, &got), 0);
	cr_assert_eq(ver, 2);
	cr_assert_eq(got->n_regs, 0);
	strata__meta__pr_record__free_unpacked(got, NULL);
}

Test(pr, persisted_per_layer_and_forgotten)
{
	Strata__Meta__PrRecord r, *got;
	Strata__Meta__PrRegistration g, *gp;
	uint64_t ver;

	cr_assert_eq(md_snap_create(cat, "p", "v", "s", NULL), 0);
	one_reg(&r, &g, &gp, 0xbb);
	cr_assert_eq(md_pr_update(cat, "p/v@s", 0, &r, &ver), 0);
	cr_assert_eq(md_pr_get(cat, "p/v", 0, &ver, &got), 0);
	cr_assert_null(got, "the snapshot's record is its own");
	md_catalog_close(cat);
	cr_assert_eq(md_catalog_open(dir, &cat), 0);
	cr_assert_eq(md_pr_get(cat, "p/v@s", 0, &ver, &got), 0);
	cr_assert_not_null(got, "persisted");
	cr_assert_eq(ver, 1);
	strata__meta__pr_record__free_unpacked(got, NULL);
	cr_assert_eq(md_pr_get(cat, "p/nope", 0, &ver, &got), -ENOENT);
	cr_assert_eq(md_volume_remove(cat, "p", "v"), 0);
	cr_assert_eq(md_volume_create(cat, "p", "v", 1 << 20, NULL), 0);
	cr_assert_eq(md_pr_update(cat, "p/v", 0, &r, &ver), 0, "a new volume starts afresh");
}

Test(pr, refuses_bad_records)
{
	Strata__Meta__PrRecord r;
	Strata__Meta__PrRegistration g, *gp;
	uint64_t ver;

	one_reg(&r, &g, &gp, 1);
	g.initiator_port = "";
	cr_assert_eq(md_pr_update(cat, "p/v", 0, &r, &ver), -EINVAL);
}
