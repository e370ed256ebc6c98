/*
 * The catalog's snapshots, clones, templates, rollback and flatten. Each changes a constant
 * number of records (layers are frozen and linked, never copied), committed in one synced
 * WriteBatch like every catalog change (see catalog.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "internal.h"

/* ---- snapshots, clones, templates ---- */

/* Freeze v's head as snapshot `snap` and start a new head whose parent it is. O(1). */
static int freeze_head(struct md_catalog *cat, rocksdb_writebatch_t *b, struct md_volume *v,
		       const char *snap, struct md_layer **out)
{
	struct md_layer *h = md_layer_by_id(cat, v->head);
	if (h == NULL) {
		return md_fail(cat, -EUCLEAN, "volume '%s' has no head layer", v->name);
	}
	struct md_layer *nh = md_new_layer(cat, v->family, h->id, v->id, MD_LAYER_HEAD);
	if (nh == NULL) {
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	h->kind = MD_LAYER_SNAP;
	md_copy_name(h->name, snap);
	h->created = md_wall_now();
	h->size = v->size;
	nh->size = v->size;
	v->head = nh->id;
	if (md_index_layer(cat, h) < 0 || md_index_layer(cat, nh) < 0 ||
	    md_link_layer(cat, nh) < 0) {
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	md_batch_put_layer(b, h);
	md_batch_put_layer(b, nh);
	md_batch_put_volume(b, v);
	*out = h;
	return 0;
}

int md_snap_create(struct md_catalog *cat, const char *pool, const char *name, const char *snap,
		   struct md_layer **out)
{
	struct md_volume *v;
	struct md_layer *s;
	int rc = md_volume_lookup(cat, pool, name, &v);
	if (rc < 0) {
		return rc;
	}
	if (!md_name_valid(snap)) {
		return md_fail(cat, -EINVAL,
			       "invalid snapshot name '%.140s' (allowed: [A-Za-z0-9._-], 1 to 128 "
			       "characters)",
			       snap);
	}
	uint8_t k[8 + MD_NAME_MAX];
	if (md_map_get(&cat->snaps, k, md_snap_key(k, v->id, snap)) != NULL) {
		return md_fail(cat, -EEXIST, "snapshot '%s/%s@%s' already exists", pool, name,
			       snap);
	}
	rocksdb_writebatch_t *b = md_batch();
	md_batch_bump_epoch(cat, b); /* writers must re-resolve the head: see fence.c */
	rc = freeze_head(cat, b, v, snap, &s);
	if (rc < 0) {
		rocksdb_writebatch_destroy(b);
		return rc;
	}
	if ((rc = md_commit(cat, b)) < 0) {
		return rc;
	}
	if (out) {
		*out = s;
	}
	return 0;
}

int md_snap_remove(struct md_catalog *cat, const char *pool, const char *name, const char *snap)
{
	struct md_volume *v;
	struct md_layer *s;
	int rc = md_volume_lookup(cat, pool, name, &v);
	if (rc < 0 || (rc = md_snap_lookup(cat, v, snap, &s)) < 0) {
		return rc;
	}
	char what[400];
	snprintf(what, sizeof(what), "snapshot '%s/%s@%s'", pool, name, snap);
	if ((rc = md_refuse_if_dependents(cat, v, s, what)) < 0) {
		return rc;
	}
	rocksdb_writebatch_t *b = md_batch();
	if (v->template_base == s->id) {
		v->template_base = 0;
		md_batch_put_volume(b, v);
	}
	if (s->nchildren > 0) {
		/* The volume's own later layers still read through it: keep the blocks, drop the
		 * name. The parent links stay immutable. */
		uint8_t k[8 + MD_NAME_MAX];
		md_map_del(&cat->snaps, k, md_snap_key(k, v->id, s->name));
		s->kind = MD_LAYER_HIDDEN;
		s->name[0] = '\0';
		md_batch_put_layer(b, s);
	} else {
		md_drop_layer(cat, b, s, v->pool_id);
	}
	return md_commit(cat, b);
}

int md_snap_rollback(struct md_catalog *cat, const char *pool, const char *name, const char *snap,
		     struct md_volume **out)
{
	struct md_volume *v;
	struct md_layer *s;
	int rc = md_volume_lookup(cat, pool, name, &v);
	if (rc < 0 || (rc = md_snap_lookup(cat, v, snap, &s)) < 0 ||
	    (rc = md_volume_writable(cat, v, "roll back")) < 0) {
		return rc;
	}
	struct md_layer *old = md_layer_by_id(cat, v->head);
	struct md_layer *nh = md_new_layer(cat, v->family, s->id, v->id, MD_LAYER_HEAD);
	if (old == NULL || nh == NULL) {
		md_free_layer(nh);
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	nh->size = s->size;
	if (md_index_layer(cat, nh) < 0 || md_link_layer(cat, nh) < 0) {
		return md_fail(cat, -ENOMEM, "out of memory");
	}
	rocksdb_writebatch_t *b = md_batch();
	md_batch_bump_epoch(cat, b); /* writers must re-resolve the head: see fence.c */
	v->head = nh->id;
	v->size = s->size;
	if (v->flatten_state == MD_FLATTEN_RUNNING) {
		v->flatten_state = MD_FLATTEN_NONE; /* the flattened head is gone */
	}
	md_batch_put_layer(b, nh);
	md_batch_put_volume(b, v);
	md_drop_layer(cat, b, old, v->pool_id);
	if ((rc = md_commit(cat, b)) < 0) {
		return rc;
	}
	if (out) {
		*out = v;
	}
	return 0;
}

/* The snapshot a template's clones use; taken on first use after marking. */
static int template_base(struct md_catalog *cat, rocksdb_writebatch_t *b, struct md_volume *v,
			 struct md_layer **out)
{
	if (v->template_base != 0) {
		*out = md_layer_by_id(cat, v->template_base);
		if (*out != NULL) {
			return 0;
		}
	}
	char nm[MD_NAME_MAX + 1];
	uint8_t k[8 + MD_NAME_MAX];
	snprintf(nm, sizeof(nm), "template");
	for (unsigned i = 2; md_map_get(&cat->snaps, k, md_snap_key(k, v->id, nm)) != NULL; i++) {
		snprintf(nm, sizeof(nm), "template.%u", i);
	}
	int rc = freeze_head(cat, b, v, nm, out);
	if (rc == 0) {
		v->template_base = (*out)->id;
		md_batch_put_volume(b, v);
	}
	return rc;
}

int md_clone(struct md_catalog *cat, const char *pool, const char *name, const char *snap,
	     const char *dst_pool, const char *dst_name, struct md_volume **out)
{
	struct md_volume *v, *w;
	struct md_layer *s = NULL, *h;
	const struct md_pool *dp;
	int rc = md_volume_lookup(cat, pool, name, &v);
	if (rc < 0) {
		return rc;
	}
	if (snap[0] != '\0') {
		if ((rc = md_snap_lookup(cat, v, snap, &s)) < 0) {
			return rc;
		}
	} else if (!v->is_template) {
		return md_fail(cat, -EINVAL,
			       "'%s/%s' is not a template: clone a snapshot (POOL/VOL@SNAP)", pool,
			       name);
	}
	if ((rc = md_find_pool(cat, dst_pool, &dp)) < 0) {
		return rc;
	}
	if (dp->id != v->pool_id) {
		return md_fail(cat, -EXDEV,
			       "a clone must stay in the pool of its parent ('%s'), not '%s'", pool,
			       dst_pool);
	}
	if (!md_name_valid(dst_name)) {
		return md_fail(cat, -EINVAL,
			       "invalid volume name '%.140s' (allowed: [A-Za-z0-9._-], 1 to 128 "
			       "characters)",
			       dst_name);
	}
	uint8_t k[4 + MD_NAME_MAX];
	if (md_map_get(&cat->vnames, k, md_vname_key(k, dp->id, dst_name)) != NULL) {
		return md_fail(cat, -EEXIST, "volume '%s/%s' already exists", dst_pool, dst_name);
	}
	rocksdb_writebatch_t *b = md_batch();
	if (s == NULL && (rc = template_base(cat, b, v, &s)) < 0) {
		rocksdb_writebatch_destroy(b);
		return rc;
	}
	if ((rc = md_make_volume(cat, dp, dst_name, s->size ? s->size : v->size, v->family, s->id,
				 &w, &h)) < 0) {
		rocksdb_writebatch_destroy(b);
		return rc;
	}
	md_batch_put_volume(b, w);
	md_batch_put_layer(b, h);
	if ((rc = md_commit(cat, b)) < 0) {
		return rc;
	}
	if (out) {
		*out = w;
	}
	return 0;
}

int md_template_set(struct md_catalog *cat, const char *pool, const char *name, bool mark,
		    struct md_volume **out)
{
	struct md_volume *v;
	int rc = md_volume_lookup(cat, pool, name, &v);
	if (rc < 0) {
		return rc;
	}
	if (v->is_template == mark) {
		return md_fail(cat, mark ? -EEXIST : -EINVAL, "'%s/%s' is %s a template", pool,
			       name, mark ? "already" : "not");
	}
	v->is_template = mark;
	if (!mark) {
		v->template_base = 0; /* the head becomes writable again */
	}
	return md_commit_volume(cat, v, true, out); /* writers re-resolve the head */
}

/*
 * Flatten is recorded here and performed by the storage nodes: flatten.c sends blockd's
 * FLATTEN (the head gets its own copy, metadata only, of every extent list it inherits) to
 * every UP node and reports progress in nodes through md_flatten_progress. When every UP node
 * has done it, the head's parent link is cut (the one link that ever changes, and only once
 * the head holds every block).
 */
int md_flatten_start(struct md_catalog *cat, const char *pool, const char *name,
		     struct md_volume **out)
{
	struct md_volume *v;
	int rc = md_volume_lookup(cat, pool, name, &v);
	if (rc < 0) {
		return rc;
	}
	if (out) {
		*out = v;
	}
	if (v->flatten_state == MD_FLATTEN_RUNNING) {
		return 0; /* report progress */
	}
	struct md_layer *h = md_layer_by_id(cat, v->head);
	const struct md_pool *p = md_pool_by_id(cat, v->pool_id);
	if (h == NULL || p == NULL) {
		return md_fail(cat, -EUCLEAN, "volume '%s/%s' is inconsistent", pool, name);
	}
	if ((rc = md_volume_writable(cat, v, "flatten")) < 0) {
		return rc;
	}
	/* Progress counts storage nodes (flatten.c drives each UP node): done / UP nodes. */
	const struct md_node *const *nodes;
	size_t nn = md_nodes(cat, &nodes);
	v->flatten_done = 0;
	v->flatten_total = 0;
	for (size_t i = 0; i < nn; i++) {
		v->flatten_total += nodes[i]->state == STRATA__META__NODE_STATE__NODE_UP;
	}
	v->flatten_state = h->parent == 0 ? MD_FLATTEN_DONE : MD_FLATTEN_RUNNING;
	if (v->flatten_state == MD_FLATTEN_DONE) {
		v->flatten_done = v->flatten_total;
	}
	return md_commit_volume(cat, v, false, NULL);
}

int md_flatten_progress(struct md_catalog *cat, uint64_t volume_id, uint64_t done, uint64_t total,
			bool complete, struct md_volume **out)
{
	struct md_volume *v = md_volume_by_id(cat, volume_id);
	if (v == NULL) {
		return md_fail(cat, -ENOENT, "volume id %llu does not exist",
			       (unsigned long long)volume_id);
	}
	if (v->flatten_state != MD_FLATTEN_RUNNING) {
		return md_fail(cat, -EINVAL, "volume '%s' has no flatten in progress", v->name);
	}
	rocksdb_writebatch_t *b = md_batch();
	v->flatten_done = done;
	v->flatten_total = total ? total : v->flatten_total;
	if (complete) {
		struct md_layer *h = md_layer_by_id(cat, v->head);
		struct md_layer *p = h && h->parent ? md_layer_by_id(cat, h->parent) : NULL;
		if (p != NULL) {
			md_remove_child(p, h);
			h->parent = 0;
			md_batch_put_layer(b, h);
			if (p->kind == MD_LAYER_HIDDEN && p->nchildren == 0) {
				struct md_volume *pv = md_volume_by_id(cat, p->volume);
				md_drop_layer(cat, b, p, pv ? pv->pool_id : v->pool_id);
			}
		}
		v->origin = 0;
		v->flatten_state = MD_FLATTEN_DONE;
		v->flatten_done = v->flatten_total;
	}
	md_batch_put_volume(b, v);
	int rc = md_commit(cat, b);
	if (rc == 0 && out) {
		*out = v;
	}
	return rc;
}
