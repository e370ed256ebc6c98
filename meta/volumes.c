/*
 * The catalog's pools and volumes: create, look up, resize, rename, list and remove, the
 * dependency checks that keep a volume or snapshot with clones from being removed, and the
 * parsing of a POOL/VOL[@SNAP] spec. Snapshots, clones and templates are in snapshots.c; the
 * records, the in-memory indexes and the commit are in catalog.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "internal.h"

/* ---- pools ---- */

const struct md_pool *md_pool_find(const struct md_catalog *cat, const char *name)
{
	for (size_t i = 0; i < cat->npools; i++) {
		if (strcmp(cat->pools[i]->name, name) == 0) {
			return cat->pools[i];
		}
	}
	return NULL;
}

const struct md_pool *md_pool_by_id(const struct md_catalog *cat, uint32_t id)
{
	for (size_t i = 0; i < cat->npools; i++) {
		if (cat->pools[i]->id == id) {
			return cat->pools[i];
		}
	}
	return NULL;
}

size_t md_pools(const struct md_catalog *cat, const struct md_pool *const **out)
{
	*out = (const struct md_pool *const *)cat->pools;
	return cat->npools;
}

int md_pool_create(struct md_catalog *cat, const char *name, uint32_t replicas, uint64_t obj_size,
		   uint32_t pgs, const struct md_pool **out)
{
	if (!md_name_valid(name)) {
		return md_fail(
			cat, -EINVAL,
			"invalid pool name '%.140s' (allowed: [A-Za-z0-9._-], 1 to 128 characters)",
			name);
	}
	replicas = replicas ? replicas : MD_DEFAULT_REPLICAS;
	obj_size = obj_size ? obj_size : MD_DEFAULT_OBJ_SIZE;
	pgs = pgs ? pgs : MD_DEFAULT_PGS;
	if (replicas < 1 || replicas > 3) {
		return md_fail(cat, -EINVAL, "replicas must be 1 to 3, not %u", replicas);
	}
	if (obj_size < MD_MIN_OBJ_SIZE || obj_size > MD_MAX_OBJ_SIZE ||
	    (obj_size & (obj_size - 1)) != 0) {
		return md_fail(cat, -EINVAL,
			       "object size must be a power of two from 64K to 64M, not %llu",
			       (unsigned long long)obj_size);
	}
	if (pgs > 65536) {
		return md_fail(cat, -EINVAL, "pg count must be 1 to 65536, not %u", pgs);
	}
	if (md_pool_find(cat, name) != NULL) {
		return md_fail(cat, -EEXIST, "pool '%s' already exists", name);
	}
	struct md_pool *p = calloc(1, sizeof(*p));
	if (p == NULL || md_push_ptr((void ***)&cat->pools, &cat->npools, p) < 0) {
		free(p);
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	p->id = cat->ctr.next_pool++;
	md_copy_name(p->name, name);
	p->replicas = replicas;
	p->object_size = obj_size;
	p->pg_count = pgs;
	rocksdb_writebatch_t *b = md_batch();
	md_batch_put_pool(b, p);
	md_batch_bump_epoch(cat, b); /* pools are part of the cluster map */
	int rc = md_commit(cat, b);
	if (rc < 0) {
		return rc;
	}
	if (out) {
		*out = p;
	}
	return 0;
}

/* ---- volumes ---- */

char *md_volume_spec(const struct md_catalog *cat, const struct md_volume *v, char *buf, size_t len)
{
	const struct md_pool *p = md_pool_by_id(cat, v->pool_id);
	snprintf(buf, len, "%s/%s", p ? p->name : "?", v->name);
	return buf;
}

int md_find_pool(struct md_catalog *cat, const char *pool, const struct md_pool **out)
{
	if (!md_name_valid(pool)) {
		return md_fail(cat, -EINVAL, "invalid pool name '%.140s'", pool);
	}
	*out = md_pool_find(cat, pool);
	if (*out == NULL) {
		return md_fail(cat, -ENOENT, "pool '%s' does not exist", pool);
	}
	return 0;
}

int md_volume_lookup(struct md_catalog *cat, const char *pool, const char *name,
		     struct md_volume **out)
{
	const struct md_pool *p;
	int rc = md_find_pool(cat, pool, &p);
	if (rc < 0) {
		return rc;
	}
	if (!md_name_valid(name)) {
		return md_fail(cat, -EINVAL, "invalid volume name '%.140s'", name);
	}
	uint8_t k[4 + MD_NAME_MAX];
	*out = md_map_get(&cat->vnames, k, md_vname_key(k, p->id, name));
	if (*out == NULL) {
		return md_fail(cat, -ENOENT, "volume '%s/%s' does not exist", pool, name);
	}
	return 0;
}

int md_snap_lookup(struct md_catalog *cat, const struct md_volume *v, const char *snap,
		   struct md_layer **out)
{
	char spec[300];
	if (!md_name_valid(snap)) {
		return md_fail(cat, -EINVAL, "invalid snapshot name '%.140s'", snap);
	}
	uint8_t k[8 + MD_NAME_MAX];
	*out = md_map_get(&cat->snaps, k, md_snap_key(k, v->id, snap));
	if (*out == NULL) {
		return md_fail(cat, -ENOENT, "snapshot '%s@%s' does not exist",
			       md_volume_spec(cat, v, spec, sizeof(spec)), snap);
	}
	return 0;
}

static int check_size(struct md_catalog *cat, uint64_t size)
{
	if (size == 0 || size > MD_MAX_VOLUME_SIZE || size % 512 != 0) {
		return md_fail(cat, -EINVAL,
			       "invalid size %llu: must be a non-zero multiple of 512 bytes, at "
			       "most 1 EiB",
			       (unsigned long long)size);
	}
	return 0;
}

/* Create volume + head layer in memory; the caller adds them to a batch. */
int md_make_volume(struct md_catalog *cat, const struct md_pool *p, const char *name, uint64_t size,
		   uint64_t family, uint64_t parent_layer, struct md_volume **out,
		   struct md_layer **head_out)
{
	struct md_volume *v = calloc(1, sizeof(*v));
	if (v == NULL) {
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	v->id = cat->ctr.next_volume++;
	v->pool_id = p->id;
	md_copy_name(v->name, name);
	v->size = size;
	v->family = family ? family : cat->ctr.next_family++;
	v->created = md_wall_now();
	v->origin = parent_layer;
	struct md_layer *h = md_new_layer(cat, v->family, parent_layer, v->id, MD_LAYER_HEAD);
	if (h == NULL) {
		free(v);
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	h->size = size;
	v->head = h->id;
	if (md_index_volume(cat, v) < 0 || md_index_layer(cat, h) < 0 ||
	    md_link_layer(cat, h) < 0) {
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	*out = v;
	*head_out = h;
	return 0;
}

int md_volume_create(struct md_catalog *cat, const char *pool, const char *name, uint64_t size,
		     struct md_volume **out)
{
	const struct md_pool *p;
	int rc = md_find_pool(cat, pool, &p);
	if (rc < 0) {
		return rc;
	}
	if (!md_name_valid(name)) {
		return md_fail(cat, -EINVAL,
			       "invalid volume name '%.140s' (allowed: [A-Za-z0-9._-], 1 to 128 "
			       "characters)",
			       name);
	}
	if ((rc = check_size(cat, size)) < 0) {
		return rc;
	}
	uint8_t k[4 + MD_NAME_MAX];
	if (md_map_get(&cat->vnames, k, md_vname_key(k, p->id, name)) != NULL) {
		return md_fail(cat, -EEXIST, "volume '%s/%s' already exists", pool, name);
	}
	struct md_volume *v;
	struct md_layer *h;
	if ((rc = md_make_volume(cat, p, name, size, 0, 0, &v, &h)) < 0) {
		return rc;
	}
	rocksdb_writebatch_t *b = md_batch();
	md_batch_put_volume(b, v);
	md_batch_put_layer(b, h);
	if ((rc = md_commit(cat, b)) < 0) {
		return rc;
	}
	if (out) {
		*out = v;
	}
	return 0;
}

int md_volume_writable(struct md_catalog *cat, const struct md_volume *v, const char *what)
{
	char spec[300];
	if (v->is_template) {
		return md_fail(cat, -EROFS, "cannot %s '%s': it is a template (unmark it first)",
			       what, md_volume_spec(cat, v, spec, sizeof(spec)));
	}
	return 0;
}

int md_volume_resize(struct md_catalog *cat, const char *pool, const char *name, uint64_t size,
		     bool allow_shrink, struct md_volume **out)
{
	struct md_volume *v;
	int rc = md_volume_lookup(cat, pool, name, &v);
	if (rc < 0 || (rc = check_size(cat, size)) < 0 ||
	    (rc = md_volume_writable(cat, v, "resize")) < 0) {
		return rc;
	}
	if (size < v->size && !allow_shrink) {
		return md_fail(
			cat, -EINVAL,
			"refusing to shrink '%s/%s' from %llu to %llu bytes without --allow-shrink",
			pool, name, (unsigned long long)v->size, (unsigned long long)size);
	}
	v->size = size;
	return md_commit_volume(cat, v, true, out); /* writers re-resolve the head */
}

int md_volume_rename(struct md_catalog *cat, const char *pool, const char *name,
		     const char *new_name, struct md_volume **out)
{
	struct md_volume *v;
	int rc = md_volume_lookup(cat, pool, name, &v);
	if (rc < 0) {
		return rc;
	}
	if (!md_name_valid(new_name)) {
		return md_fail(cat, -EINVAL,
			       "invalid volume name '%.140s' (allowed: [A-Za-z0-9._-], 1 to 128 "
			       "characters)",
			       new_name);
	}
	uint8_t k[8 + MD_NAME_MAX];
	if (md_map_get(&cat->vnames, k, md_vname_key(k, v->pool_id, new_name)) != NULL) {
		return md_fail(cat, -EEXIST, "volume '%s/%s' already exists", pool, new_name);
	}
	md_unindex_volume(cat, v);
	md_copy_name(v->name, new_name);
	if (md_index_volume(cat, v) < 0) {
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	return md_commit_volume(cat, v, false, out);
}

int md_ancestry(const struct md_catalog *cat, const struct md_layer *l, uint64_t **out)
{
	size_t n = 0, cap = 0;
	uint64_t *a = NULL;
	for (uint64_t p = l->parent; p != 0;) {
		const struct md_layer *pl = md_layer_by_id(cat, p);
		if (pl == NULL) {
			break;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			uint64_t *na = realloc(a, cap * sizeof(*a));
			if (na == NULL) {
				free(a);
				return -ENOMEM;
			}
			a = na;
		}
		a[n++] = p;
		p = pl->parent;
	}
	*out = a;
	return (int)n;
}

static int cmp_volume(const void *a, const void *b)
{
	const struct md_volume *x = *(const struct md_volume *const *)a;
	const struct md_volume *y = *(const struct md_volume *const *)b;
	if (x->pool_id != y->pool_id) {
		return x->pool_id < y->pool_id ? -1 : 1;
	}
	return strcmp(x->name, y->name);
}

int md_volumes(struct md_catalog *cat, const char *pool, bool templates_only,
	       struct md_volume ***out)
{
	const struct md_pool *p = NULL;
	if (pool != NULL && pool[0] != '\0') {
		int rc = md_find_pool(cat, pool, &p);
		if (rc < 0) {
			return rc;
		}
	}
	struct md_volume **arr = malloc((cat->volumes.count + 1) * sizeof(*arr));
	if (arr == NULL) {
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	size_t n = 0, pos = 0;
	struct md_volume *v;
	while ((v = md_map_next(&cat->volumes, &pos)) != NULL) {
		if ((p == NULL || v->pool_id == p->id) && (!templates_only || v->is_template)) {
			arr[n++] = v;
		}
	}
	qsort(arr, n, sizeof(*arr), cmp_volume);
	*out = arr;
	return (int)n;
}

static int cmp_layer_id(const void *a, const void *b)
{
	const struct md_layer *x = *(const struct md_layer *const *)a;
	const struct md_layer *y = *(const struct md_layer *const *)b;
	return x->id < y->id ? -1 : x->id > y->id;
}

int md_snapshots(struct md_catalog *cat, const struct md_volume *v, struct md_layer ***out)
{
	struct md_layer **arr = malloc((cat->snaps.count + 1) * sizeof(*arr));
	if (arr == NULL) {
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	size_t n = 0, pos = 0;
	struct md_layer *l;
	while ((l = md_map_next(&cat->snaps, &pos)) != NULL) {
		if (l->volume == v->id) {
			arr[n++] = l;
		}
	}
	qsort(arr, n, sizeof(*arr), cmp_layer_id);
	*out = arr;
	return (int)n;
}

/* Does w's head descend from layer (or, if layer is NULL, from any layer owned by owner)? */
static bool descends(const struct md_catalog *cat, const struct md_volume *w,
		     const struct md_layer *layer, uint64_t owner)
{
	const struct md_layer *l = md_layer_by_id(cat, w->head);
	for (l = l ? md_layer_by_id(cat, l->parent) : NULL; l != NULL;
	     l = l->parent ? md_layer_by_id(cat, l->parent) : NULL) {
		if (layer != NULL ? l == layer : l->volume == owner) {
			return true;
		}
	}
	return false;
}

int md_dependents(struct md_catalog *cat, const struct md_volume *v, const struct md_layer *layer,
		  struct md_volume ***out)
{
	struct md_volume **arr = malloc((cat->volumes.count + 1) * sizeof(*arr));
	if (arr == NULL) {
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	size_t n = 0, pos = 0;
	struct md_volume *w;
	while ((w = md_map_next(&cat->volumes, &pos)) != NULL) {
		if (w != v && w->family == v->family && descends(cat, w, layer, v->id)) {
			arr[n++] = w;
		}
	}
	qsort(arr, n, sizeof(*arr), cmp_volume);
	*out = arr;
	return (int)n;
}

/* Fail with -EBUSY naming the dependents of (v, layer), or return 0 if there are none. */
int md_refuse_if_dependents(struct md_catalog *cat, const struct md_volume *v,
			    const struct md_layer *layer, const char *what)
{
	struct md_volume **deps;
	int n = md_dependents(cat, v, layer, &deps);
	if (n <= 0) {
		return n;
	}
	char list[300] = "", spec[300];
	size_t off = 0;
	for (int i = 0; i < n && off < sizeof(list) - 1; i++) {
		int w = snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "",
				 md_volume_spec(cat, deps[i], spec, sizeof(spec)));
		off += w > 0 ? (size_t)w : 0;
	}
	if (off >= sizeof(list) - 1) {
		snprintf(list + sizeof(list) - 5, 5, "...");
	}
	free(deps);
	return md_fail(
		cat, -EBUSY,
		"cannot remove %s: %d clone%s depend%s on it: %s (remove or flatten them first)",
		what, n, n == 1 ? "" : "s", n == 1 ? "s" : "", list);
}

int md_volume_remove(struct md_catalog *cat, const char *pool, const char *name)
{
	struct md_volume *v;
	int rc = md_volume_lookup(cat, pool, name, &v);
	if (rc < 0) {
		return rc;
	}
	char what[320], spec[300];
	snprintf(what, sizeof(what), "volume '%s'", md_volume_spec(cat, v, spec, sizeof(spec)));
	if ((rc = md_refuse_if_dependents(cat, v, NULL, what)) < 0) {
		return rc;
	}
	/* Collect the layers v owns. None has a child owned by another volume (checked above). */
	struct md_layer **own = malloc((cat->layers.count + 1) * sizeof(*own));
	if (own == NULL) {
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	size_t n = 0, pos = 0;
	struct md_layer *l;
	while ((l = md_map_next(&cat->layers, &pos)) != NULL) {
		if (l->volume == v->id) {
			own[n++] = l;
		}
	}
	rocksdb_writebatch_t *b = md_batch();
	md_batch_bump_epoch(cat, b); /* writers must re-resolve the head: see fence.c */
	/* Detach from foreign parents (the origin snapshot) first; drop those afterwards if they
	 * were hidden and are now childless. */
	uint64_t foreign[8];
	size_t nforeign = 0;
	for (size_t i = 0; i < n; i++) {
		struct md_layer *p = own[i]->parent ? md_layer_by_id(cat, own[i]->parent) : NULL;
		if (p != NULL && p->volume != v->id) {
			md_remove_child(p, own[i]);
			own[i]->parent = 0;
			if (nforeign < 8) {
				foreign[nforeign++] = p->id;
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		uint8_t k[8 + MD_NAME_MAX];
		md_be64(k, own[i]->id);
		md_map_del(&cat->layers, k, 8);
		if (own[i]->kind == MD_LAYER_SNAP) {
			md_map_del(&cat->snaps, k, md_snap_key(k, own[i]->volume, own[i]->name));
		}
		md_batch_del(b, 'l', own[i]->id, 8);
		(void)md_add_reclaim(cat, b, own[i], v->pool_id);
	}
	for (size_t i = 0; i < n; i++) {
		md_free_layer(own[i]);
	}
	free(own);
	for (size_t i = 0; i < nforeign; i++) {
		struct md_layer *p = md_layer_by_id(cat, foreign[i]);
		if (p != NULL && p->kind == MD_LAYER_HIDDEN && p->nchildren == 0) {
			struct md_volume *pv = md_volume_by_id(cat, p->volume);
			md_drop_layer(cat, b, p, pv ? pv->pool_id : v->pool_id);
		}
	}
	md_unindex_volume(cat, v);
	md_batch_del(b, 'v', v->id, 8);
	md_pr_batch_forget(b, v->id);
	free(v);
	return md_commit(cat, b);
}

int md_volume_open(struct md_catalog *cat, const char *spec, struct md_volume **vol,
		   struct md_layer **layer, bool *read_only)
{
	char buf[3 * (MD_NAME_MAX + 1)];
	if (strlen(spec) >= sizeof(buf)) {
		return md_fail(cat, -EINVAL, "volume spec too long");
	}
	strcpy(buf, spec);
	char *slash = strchr(buf, '/');
	if (slash == NULL) {
		return md_fail(cat, -EINVAL, "invalid volume spec '%s' (want POOL/VOL[@SNAP])",
			       spec);
	}
	*slash = '\0';
	char *at = strchr(slash + 1, '@');
	if (at != NULL) {
		*at = '\0';
	}
	int rc = md_volume_lookup(cat, buf, slash + 1, vol);
	if (rc < 0) {
		return rc;
	}
	if (at != NULL) {
		if ((rc = md_snap_lookup(cat, *vol, at + 1, layer)) < 0) {
			return rc;
		}
		*read_only = true;
		return 0;
	}
	*layer = md_layer_by_id(cat, (*vol)->head);
	if (*layer == NULL) {
		return md_fail(cat, -EUCLEAN, "volume '%s' has no head layer", spec);
	}
	*read_only = (*vol)->is_template;
	return 0;
}
