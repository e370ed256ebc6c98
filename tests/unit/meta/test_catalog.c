/* Catalog rules against a real RocksDB in a temp dir: names, tree invariants, delete refusals,
 * rollback, templates, flatten, persistence across reopen. */
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
}

static void teardown(void)
{
	md_catalog_close(cat);
	test_rmtree(dir);
}

static void reopen(void)
{
	md_catalog_close(cat);
	cr_assert_eq(md_catalog_open(dir, &cat), 0, "reopen");
}

static void check(void)
{
	cr_assert_eq(md_catalog_check(cat), 0, "invariant: %s", md_catalog_error(cat));
}

static struct md_volume *vol(const char *name)
{
	struct md_volume *v = NULL;
	cr_assert_eq(md_volume_lookup(cat, "p", name, &v), 0, "%s: %s", name,
		     md_catalog_error(cat));
	return v;
}

static struct md_layer *head(const char *name)
{
	return md_layer_by_id(cat, vol(name)->head);
}

TestSuite(catalog, .init = setup, .fini = teardown);

Test(catalog, names)
{
	char n128[129], n129[130];
	memset(n128, 'a', 128);
	n128[128] = '\0';
	memset(n129, 'b', 129);
	n129[129] = '\0';
	cr_assert(md_name_valid("a"));
	cr_assert(md_name_valid("A-z_0.9"));
	cr_assert(md_name_valid(n128));
	cr_assert_not(md_name_valid(n129));
	cr_assert_not(md_name_valid(""));
	cr_assert_not(md_name_valid(NULL));
	cr_assert_not(md_name_valid("a/b"));
	cr_assert_not(md_name_valid("a@b"));
	cr_assert_not(md_name_valid("a b"));
	cr_assert_not(md_name_valid("é"));
	cr_assert_eq(md_volume_create(cat, "p", "a b", 4096, NULL), -EINVAL);
	cr_assert(strstr(md_catalog_error(cat), "invalid volume name") != NULL);
	cr_assert_eq(md_volume_create(cat, "p", n129, 4096, NULL), -EINVAL);
	cr_assert_eq(md_volume_create(cat, "p", n128, 4096, NULL), 0);
	cr_assert_eq(md_pool_create(cat, "bad/pool", 1, 0, 0, NULL), -EINVAL);
	cr_assert_eq(md_volume_create(cat, "p", "v", 4096, NULL), 0);
	cr_assert_eq(md_snap_create(cat, "p", "v", "bad@snap", NULL), -EINVAL);
	cr_assert_eq(md_volume_rename(cat, "p", "v", "", NULL), -EINVAL);
}

Test(catalog, pools)
{
	const struct md_pool *p;
	cr_assert_eq(md_pool_create(cat, "p", 1, 0, 0, NULL), -EEXIST);
	cr_assert_eq(md_pool_create(cat, "q", 4, 0, 0, NULL), -EINVAL);
	cr_assert_eq(md_pool_create(cat, "q", 1, 3 << 20, 0, NULL), -EINVAL);
	cr_assert_eq(md_pool_create(cat, "q", 1, 32 << 10, 0, NULL), -EINVAL);
	cr_assert_eq(md_pool_create(cat, "q", 1, 128ull << 20, 0, NULL), -EINVAL);
	uint64_t e = md_catalog_epoch(cat);
	cr_assert_eq(md_pool_create(cat, "q", 0, 0, 0, &p), 0);
	cr_assert_eq(p->replicas, 3);
	cr_assert_eq(p->object_size, 4 << 20);
	cr_assert_eq(p->pg_count, 128);
	cr_assert_eq(md_catalog_epoch(cat), e + 1, "a new pool changes the map");
}

Test(catalog, volume_create_and_duplicates)
{
	struct md_volume *v;
	cr_assert_eq(md_volume_create(cat, "p", "v", 10ull << 30, &v), 0);
	cr_assert_eq(v->size, 10ull << 30);
	struct md_layer *h = md_layer_by_id(cat, v->head);
	cr_assert_not_null(h);
	cr_assert_eq(h->kind, MD_LAYER_HEAD);
	cr_assert_eq(h->parent, 0);
	cr_assert_eq(h->family, v->family);
	cr_assert_eq(md_volume_create(cat, "p", "v", 1 << 30, NULL), -EEXIST);
	cr_assert(strstr(md_catalog_error(cat), "p/v") != NULL);
	cr_assert_eq(md_volume_create(cat, "nope", "v", 1 << 30, NULL), -ENOENT);
	cr_assert_eq(md_volume_create(cat, "p", "w", 0, NULL), -EINVAL);
	cr_assert_eq(md_volume_create(cat, "p", "w", 1000, NULL), -EINVAL);
	cr_assert_eq(md_volume_lookup(cat, "p", "w", &v), -ENOENT);
	check();
}

Test(catalog, snapshot_freezes_head)
{
	cr_assert_eq(md_volume_create(cat, "p", "v", 1ull << 40, NULL), 0);
	uint64_t h0 = vol("v")->head;
	struct md_layer *s;
	cr_assert_eq(md_snap_create(cat, "p", "v", "s1", &s), 0);
	cr_assert_eq(s->id, h0, "the snapshot is the frozen head layer");
	cr_assert_eq(s->kind, MD_LAYER_SNAP);
	cr_assert_eq(head("v")->parent, h0);
	cr_assert_eq(md_snap_create(cat, "p", "v", "s1", NULL), -EEXIST);
	cr_assert_eq(md_snap_create(cat, "p", "v", "s2", NULL), 0);
	uint64_t *anc;
	int n = md_ancestry(cat, head("v"), &anc);
	cr_assert_eq(n, 2);
	cr_assert_eq(anc[1], h0);
	free(anc);
	struct md_layer **snaps;
	cr_assert_eq(md_snapshots(cat, vol("v"), &snaps), 2);
	cr_assert_str_eq(snaps[0]->name, "s1");
	cr_assert_str_eq(snaps[1]->name, "s2");
	free(snaps);
	check();
}

Test(catalog, clone_same_family_and_ancestry)
{
	struct md_volume *c;
	cr_assert_eq(md_volume_create(cat, "p", "base", 1 << 30, NULL), 0);
	cr_assert_eq(md_snap_create(cat, "p", "base", "s1", NULL), 0);
	cr_assert_eq(md_clone(cat, "p", "base", "s1", "p", "c1", &c), 0);
	struct md_layer *s1;
	cr_assert_eq(md_snap_lookup(cat, vol("base"), "s1", &s1), 0);
	cr_assert_eq(c->family, vol("base")->family);
	cr_assert_eq(head("c1")->parent, s1->id);
	cr_assert_eq(c->origin, s1->id);
	cr_assert_eq(md_snap_create(cat, "p", "c1", "cs", NULL), 0);
	cr_assert_eq(md_clone(cat, "p", "c1", "cs", "p", "c2", NULL), 0);
	uint64_t *anc;
	int n = md_ancestry(cat, head("c2"), &anc);
	cr_assert_eq(n, 2, "c2 head -> c1@cs -> base@s1");
	cr_assert_eq(anc[n - 1], s1->id, "the root is base@s1");
	free(anc);
	cr_assert_eq(md_clone(cat, "p", "base", "s1", "p", "c1", NULL), -EEXIST);
	cr_assert_eq(md_clone(cat, "p", "base", "zz", "p", "c3", NULL), -ENOENT);
	cr_assert_eq(md_clone(cat, "p", "base", "", "p", "c3", NULL), -EINVAL, "not a template");
	cr_assert_eq(md_pool_create(cat, "q", 1, 0, 0, NULL), 0);
	cr_assert_eq(md_clone(cat, "p", "base", "s1", "q", "c3", NULL), -EXDEV);
	check();
}

Test(catalog, delete_refusals_name_the_clones)
{
	cr_assert_eq(md_volume_create(cat, "p", "base", 1 << 30, NULL), 0);
	cr_assert_eq(md_snap_create(cat, "p", "base", "s1", NULL), 0);
	cr_assert_eq(md_snap_create(cat, "p", "base", "s2", NULL), 0);
	cr_assert_eq(md_clone(cat, "p", "base", "s1", "p", "alpha", NULL), 0);
	cr_assert_eq(md_clone(cat, "p", "base", "s1", "p", "beta", NULL), 0);
	cr_assert_eq(md_snap_create(cat, "p", "beta", "b1", NULL), 0);
	cr_assert_eq(md_clone(cat, "p", "beta", "b1", "p", "gamma", NULL), 0);

	cr_assert_eq(md_volume_remove(cat, "p", "base"), -EBUSY);
	const char *e = md_catalog_error(cat);
	cr_assert(strstr(e, "p/alpha") && strstr(e, "p/beta") && strstr(e, "p/gamma"), "%s", e);
	cr_assert_eq(md_snap_remove(cat, "p", "base", "s1"), -EBUSY);
	cr_assert(strstr(md_catalog_error(cat), "p/alpha") != NULL);
	cr_assert_eq(md_volume_remove(cat, "p", "beta"), -EBUSY);
	e = md_catalog_error(cat);
	cr_assert(strstr(e, "p/gamma") && !strstr(e, "p/alpha"), "%s", e);
	/* A snapshot with no clones can go. */
	cr_assert_eq(md_snap_remove(cat, "p", "base", "s2"), 0);
	check();
	/* Leaves first, then the rest. */
	cr_assert_eq(md_volume_remove(cat, "p", "gamma"), 0);
	cr_assert_eq(md_volume_remove(cat, "p", "beta"), 0);
	cr_assert_eq(md_volume_remove(cat, "p", "alpha"), 0);
	check();
	cr_assert_eq(md_volume_remove(cat, "p", "base"), 0);
	cr_assert_eq(md_volume_remove(cat, "p", "base"), -ENOENT);
	check();
	struct md_volume **all;
	cr_assert_eq(md_volumes(cat, NULL, false, &all), 0);
	free(all);
}

Test(catalog, snapshot_remove_keeps_referenced_layer_hidden)
{
	cr_assert_eq(md_volume_create(cat, "p", "v", 1 << 30, NULL), 0);
	cr_assert_eq(md_snap_create(cat, "p", "v", "s1", NULL), 0);
	struct md_layer *s1;
	cr_assert_eq(md_snap_lookup(cat, vol("v"), "s1", &s1), 0);
	uint64_t id = s1->id;
	cr_assert_eq(md_snap_remove(cat, "p", "v", "s1"), 0);
	struct md_layer *l = md_layer_by_id(cat, id);
	cr_assert_not_null(l, "the head still reads through it");
	cr_assert_eq(l->kind, MD_LAYER_HIDDEN);
	cr_assert_eq(md_snap_lookup(cat, vol("v"), "s1", &s1), -ENOENT);
	cr_assert_eq(head("v")->parent, id, "parent links are immutable");
	/* The name is free again. */
	cr_assert_eq(md_snap_create(cat, "p", "v", "s1", NULL), 0);
	check();
	reopen();
	check();
	cr_assert_eq(md_layer_by_id(cat, id)->kind, MD_LAYER_HIDDEN);
}

Test(catalog, rollback)
{
	const struct md_reclaim *rc;
	cr_assert_eq(md_volume_create(cat, "p", "v", 1 << 30, NULL), 0);
	cr_assert_eq(md_snap_create(cat, "p", "v", "s1", NULL), 0);
	cr_assert_eq(md_volume_resize(cat, "p", "v", 2ull << 30, false, NULL), 0);
	cr_assert_eq(md_snap_create(cat, "p", "v", "s2", NULL), 0);
	uint64_t old_head = vol("v")->head;
	size_t nrec = md_reclaims(cat, &rc);
	struct md_volume *v;
	cr_assert_eq(md_snap_rollback(cat, "p", "v", "s1", &v), 0);
	struct md_layer *s1;
	cr_assert_eq(md_snap_lookup(cat, v, "s1", &s1), 0);
	cr_assert_eq(head("v")->parent, s1->id, "new empty head on the snapshot");
	cr_assert_neq(v->head, old_head);
	cr_assert_null(md_layer_by_id(cat, old_head), "the old head is dropped");
	cr_assert_eq(v->size, 1 << 30, "size comes back with the snapshot");
	cr_assert_eq(md_reclaims(cat, &rc), nrec + 1);
	cr_assert_eq(rc[nrec].layer_id, old_head, "listed for space reclamation");
	/* s2 survives: a later snapshot is not lost by a rollback. */
	struct md_layer *s2;
	cr_assert_eq(md_snap_lookup(cat, v, "s2", &s2), 0);
	cr_assert_eq(md_snap_rollback(cat, "p", "v", "nope", NULL), -ENOENT);
	check();
	/* Rolling back after a hidden snapshot drops the now-unreferenced hidden layer too. */
	cr_assert_eq(md_snap_create(cat, "p", "v", "s3", NULL), 0);
	struct md_layer *s3;
	cr_assert_eq(md_snap_lookup(cat, vol("v"), "s3", &s3), 0);
	uint64_t s3id = s3->id;
	cr_assert_eq(md_snap_remove(cat, "p", "v", "s3"), 0);
	cr_assert_eq(md_layer_by_id(cat, s3id)->kind, MD_LAYER_HIDDEN);
	cr_assert_eq(md_snap_rollback(cat, "p", "v", "s2", NULL), 0);
	cr_assert_null(md_layer_by_id(cat, s3id));
	check();
	reopen();
	check();
	cr_assert_eq(vol("v")->size, 2ull << 30);
}

Test(catalog, resize_and_rename)
{
	struct md_volume *v;
	cr_assert_eq(md_volume_create(cat, "p", "v", 1 << 30, NULL), 0);
	cr_assert_eq(md_volume_resize(cat, "p", "v", 1 << 20, false, NULL), -EINVAL);
	cr_assert(strstr(md_catalog_error(cat), "--allow-shrink") != NULL);
	cr_assert_eq(md_volume_resize(cat, "p", "v", 1 << 20, true, &v), 0);
	cr_assert_eq(v->size, 1 << 20);
	cr_assert_eq(md_volume_create(cat, "p", "w", 1 << 30, NULL), 0);
	cr_assert_eq(md_volume_rename(cat, "p", "v", "w", NULL), -EEXIST);
	cr_assert_eq(md_snap_create(cat, "p", "v", "s", NULL), 0);
	cr_assert_eq(md_volume_rename(cat, "p", "v", "x", NULL), 0);
	cr_assert_eq(md_volume_lookup(cat, "p", "v", &v), -ENOENT);
	struct md_layer *s;
	cr_assert_eq(md_snap_lookup(cat, vol("x"), "s", &s), 0, "snapshots follow the rename");
	reopen();
	cr_assert_eq(vol("x")->size, 1 << 20);
	check();
}

Test(catalog, templates)
{
	struct md_volume *v;
	cr_assert_eq(md_volume_create(cat, "p", "gold", 8ull << 30, NULL), 0);
	cr_assert_eq(md_template_set(cat, "p", "gold", true, &v), 0);
	cr_assert(v->is_template);
	cr_assert_eq(md_template_set(cat, "p", "gold", true, NULL), -EEXIST);
	cr_assert_eq(md_volume_resize(cat, "p", "gold", 9ull << 30, false, NULL), -EROFS);
	bool ro;
	struct md_layer *l;
	cr_assert_eq(md_volume_open(cat, "p/gold", &v, &l, &ro), 0);
	cr_assert(ro, "templates open read-only");
	cr_assert_eq(md_clone(cat, "p", "gold", "", "p", "vm1", NULL), 0);
	cr_assert_eq(md_clone(cat, "p", "gold", "", "p", "vm2", NULL), 0);
	cr_assert_eq(head("vm1")->parent, head("vm2")->parent, "clones share one frozen base");
	struct md_layer **snaps;
	cr_assert_eq(md_snapshots(cat, vol("gold"), &snaps), 1);
	free(snaps);
	/* Unmark, write (conceptually), mark again: the next clone gets a fresh base. */
	cr_assert_eq(md_template_set(cat, "p", "gold", false, NULL), 0);
	cr_assert_eq(md_template_set(cat, "p", "gold", false, NULL), -EINVAL);
	cr_assert_eq(md_template_set(cat, "p", "gold", true, NULL), 0);
	cr_assert_eq(md_clone(cat, "p", "gold", "", "p", "vm3", NULL), 0);
	cr_assert_neq(head("vm3")->parent, head("vm1")->parent);
	struct md_volume **t;
	cr_assert_eq(md_volumes(cat, NULL, true, &t), 1);
	cr_assert_str_eq(t[0]->name, "gold");
	free(t);
	check();
}

Test(catalog, volume_open_and_ancestry)
{
	cr_assert_eq(md_volume_create(cat, "p", "v", 1 << 30, NULL), 0);
	cr_assert_eq(md_snap_create(cat, "p", "v", "s", NULL), 0);
	struct md_volume *v;
	struct md_layer *l;
	bool ro;
	cr_assert_eq(md_volume_open(cat, "p/v@s", &v, &l, &ro), 0);
	cr_assert(ro);
	cr_assert_eq(l->kind, MD_LAYER_SNAP);
	cr_assert_eq(md_volume_open(cat, "p/v", &v, &l, &ro), 0);
	cr_assert_not(ro);
	cr_assert_eq(l->id, v->head);
	cr_assert_eq(md_volume_open(cat, "p/v@nope", &v, &l, &ro), -ENOENT);
	cr_assert_eq(md_volume_open(cat, "pv", &v, &l, &ro), -EINVAL);
	cr_assert_eq(md_volume_open(cat, "p/x", &v, &l, &ro), -ENOENT);
}

Test(catalog, flatten)
{
	struct md_volume *v;
	cr_assert_eq(md_volume_create(cat, "p", "base", 64ull << 20, NULL), 0);
	cr_assert_eq(md_flatten_start(cat, "p", "base", &v), 0);
	cr_assert_eq(v->flatten_state, MD_FLATTEN_DONE, "nothing to flatten");
	cr_assert_eq(md_snap_create(cat, "p", "base", "s", NULL), 0);
	cr_assert_eq(md_clone(cat, "p", "base", "s", "p", "c", NULL), 0);
	cr_assert_eq(md_flatten_start(cat, "p", "c", &v), 0);
	cr_assert_eq(v->flatten_state, MD_FLATTEN_RUNNING);
	cr_assert_eq(v->flatten_total, 0, "progress counts UP storage nodes: none here");
	uint64_t id = v->id;
	cr_assert_eq(md_flatten_progress(cat, id, 8, 16, false, &v), 0);
	reopen();
	cr_assert_eq(vol("c")->flatten_done, 8, "progress is persisted");
	cr_assert_eq(md_volume_remove(cat, "p", "base"), -EBUSY);
	cr_assert_eq(md_flatten_progress(cat, id, 16, 16, true, &v), 0);
	cr_assert_eq(v->flatten_state, MD_FLATTEN_DONE);
	cr_assert_eq(head("c")->parent, 0, "detached from its ancestors");
	check();
	cr_assert_eq(md_volume_remove(cat, "p", "base"), 0, "no longer a dependent");
	check();
	cr_assert_eq(md_flatten_progress(cat, 999, 0, 0, false, NULL), -ENOENT);
}

Test(catalog, persistence_and_schema)
{
	cr_assert_eq(md_volume_create(cat, "p", "v", 1 << 30, NULL), 0);
	cr_assert_eq(md_snap_create(cat, "p", "v", "s", NULL), 0);
	cr_assert_eq(md_clone(cat, "p", "v", "s", "p", "c", NULL), 0);
	uint64_t epoch = md_catalog_epoch(cat);
	uint64_t chead = vol("c")->head;
	reopen();
	check();
	cr_assert_eq(md_catalog_epoch(cat), epoch);
	cr_assert_eq(vol("c")->head, chead);
	/* Ids keep growing after a restart: no reuse. */
	cr_assert_eq(md_volume_create(cat, "p", "w", 1 << 30, NULL), 0);
	cr_assert_gt(vol("w")->head, chead);
}

Test(catalog, constant_cost_whatever_the_size)
{
	/* A 1 TiB and a 1 GiB volume produce the same records for snapshot and clone: nothing in
	 * the catalog is proportional to the size. */
	cr_assert_eq(md_volume_create(cat, "p", "small", 1ull << 30, NULL), 0);
	cr_assert_eq(md_volume_create(cat, "p", "huge", 1ull << 40, NULL), 0);
	for (int i = 0; i < 50; i++) {
		char n[16];
		snprintf(n, sizeof(n), "s%d", i);
		cr_assert_eq(md_snap_create(cat, "p", "huge", n, NULL), 0);
		snprintf(n, sizeof(n), "c%d", i);
		cr_assert_eq(md_clone(cat, "p", "huge", "s0", "p", n, NULL), 0);
	}
	check();
}
