/*
 * The catalog: pools, volumes and the layer tree, kept in memory and persisted in RocksDB.
 *
 * RocksDB keys (ids big-endian so iteration is in id order):
 *   "schema"        -> decimal schema version (MD_SCHEMA_VERSION)
 *   "c"             -> Counters (epoch and the next ids)
 *   "p" + be32 id   -> Pool          "n" + be32 id -> Node
 *   "v" + be64 id   -> VolumeRec     "l" + be64 id -> LayerRec
 *   "r" + be64 id   -> Reclaim (a dropped layer whose blocks blockd may free)
 *
 * Layer tree of one family (the tree grown from one root volume):
 *
 *   vol A: [S1 snap] <- [S2 snap] <- [head A]
 *                ^
 *                +---- [head B]       vol B = clone of A@S1 (same family)
 *
 * Crash safety: every operation validates first, then changes memory and collects every changed
 * record (plus the counters) in one WriteBatch, written with sync=true before the caller
 * replies. RocksDB applies a batch atomically, so after kill -9 the catalog is the state after
 * some prefix of acknowledged operations, at least all of them. If the write itself fails the
 * in-memory state is thrown away and reloaded from disk, so memory never runs ahead of disk.
 *
 * Cost: snapshot, clone, template, rollback and rename touch a constant number of records,
 * whatever the volume size. Delete and the dependency checks walk the family, never the data.
 *
 * This file holds the records, the in-memory indexes and tree, load, open and close, commit,
 * reclaims and the invariant check; pools and volumes are in volumes.c, snapshots, clones,
 * templates, rollback and flatten in snapshots.c. The state and the helpers they share are
 * declared in internal.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <rocksdb/c.h>

#include "common/fsspace.h"
#include "common/log.h"
#include "common/reactor.h"
#include "internal.h"

/* ---- small helpers ---- */

int md_fail(struct md_catalog *cat, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cat->err, sizeof(cat->err), fmt, ap);
	va_end(ap);
	return rc;
}

const char *md_catalog_error(const struct md_catalog *cat)
{
	return cat->err;
}

uint64_t md_catalog_epoch(const struct md_catalog *cat)
{
	return cat->ctr.epoch;
}

bool md_name_valid(const char *name)
{
	if (name == NULL) {
		return false;
	}
	size_t n = 0;
	for (const char *p = name; *p; p++, n++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
		if (!ok || n >= MD_NAME_MAX) {
			return false;
		}
	}
	return n >= 1;
}

uint64_t md_wall_now(void)
{
	return (uint64_t)time(NULL);
}

static void be32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8) {
		p[i] = (uint8_t)v;
	}
}

void md_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8) {
		p[i] = (uint8_t)v;
	}
}

static uint64_t get_be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		v = (v << 8) | p[i];
	}
	return v;
}

size_t md_vname_key(uint8_t *k, uint32_t pool_id, const char *name)
{
	size_t n = strlen(name);
	be32(k, pool_id);
	memcpy(k + 4, name, n);
	return 4 + n;
}

size_t md_snap_key(uint8_t *k, uint64_t vol, const char *name)
{
	size_t n = strlen(name);
	md_be64(k, vol);
	memcpy(k + 8, name, n);
	return 8 + n;
}

void md_copy_name(char *dst, const char *src)
{
	snprintf(dst, MD_NAME_MAX + 1, "%s", src ? src : "");
}

/* ---- record encoding ---- */

static void batch_put_msg(rocksdb_writebatch_t *b, char prefix, uint64_t id, size_t idlen,
			  const ProtobufCMessage *m)
{
	uint8_t key[9];
	key[0] = (uint8_t)prefix;
	if (idlen == 4) {
		be32(key + 1, (uint32_t)id);
	} else {
		md_be64(key + 1, id);
	}
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t stackbuf[1024];
	uint8_t *buf = len <= sizeof(stackbuf) ? stackbuf : malloc(len);
	if (buf == NULL) {
		abort(); /* tiny records; failing here would desync memory and disk */
	}
	protobuf_c_message_pack(m, buf);
	rocksdb_writebatch_put(b, (const char *)key, 1 + idlen, (const char *)buf, len);
	if (buf != stackbuf) {
		free(buf);
	}
}

void md_batch_del(rocksdb_writebatch_t *b, char prefix, uint64_t id, size_t idlen)
{
	uint8_t key[9];
	key[0] = (uint8_t)prefix;
	if (idlen == 4) {
		be32(key + 1, (uint32_t)id);
	} else {
		md_be64(key + 1, id);
	}
	rocksdb_writebatch_delete(b, (const char *)key, 1 + idlen);
}

void md_batch_put_pool(rocksdb_writebatch_t *b, const struct md_pool *p)
{
	Strata__Meta__Pool m = STRATA__META__POOL__INIT;
	m.id = p->id;
	m.name = (char *)p->name;
	m.replicas = p->replicas;
	m.object_size = p->object_size;
	m.pg_count = p->pg_count;
	if (p->holders) {
		m.holders.data = p->holders;
		m.holders.len = (size_t)p->pg_count * MD_HOLDER_BYTES;
	}
	batch_put_msg(b, 'p', p->id, 4, &m.base);
}

void md_batch_put_node(rocksdb_writebatch_t *b, const struct md_node *n)
{
	Strata__Meta__Node m = STRATA__META__NODE__INIT;
	m.id = n->id;
	m.addr = (char *)n->addr;
	m.uuid = (char *)n->uuid;
	m.capacity = n->capacity;
	m.used = n->used;
	m.weight = n->weight;
	m.state = n->state;
	m.down_since = n->down_since;
	m.joining = n->joining;
	m.full = n->full;
	batch_put_msg(b, 'n', n->id, 4, &m.base);
}

void md_batch_put_volume(rocksdb_writebatch_t *b, const struct md_volume *v)
{
	Strata__Meta__VolumeRec m = STRATA__META__VOLUME_REC__INIT;
	m.id = v->id;
	m.pool_id = v->pool_id;
	m.name = (char *)v->name;
	m.size = v->size;
	m.used = v->used;
	m.family = v->family;
	m.head = v->head;
	m.template_ = v->is_template;
	m.template_base = v->template_base;
	m.created = v->created;
	m.origin = v->origin;
	m.flatten_state = v->flatten_state;
	m.flatten_done = v->flatten_done;
	m.flatten_total = v->flatten_total;
	batch_put_msg(b, 'v', v->id, 8, &m.base);
}

void md_batch_put_layer(rocksdb_writebatch_t *b, const struct md_layer *l)
{
	Strata__Meta__LayerRec m = STRATA__META__LAYER_REC__INIT;
	m.id = l->id;
	m.family = l->family;
	m.parent = l->parent;
	m.volume = l->volume;
	m.kind = l->kind;
	m.name = (char *)l->name;
	m.created = l->created;
	m.size = l->size;
	batch_put_msg(b, 'l', l->id, 8, &m.base);
}

static void put_counters(rocksdb_writebatch_t *b, const struct md_counters *c)
{
	Strata__Meta__Counters m = STRATA__META__COUNTERS__INIT;
	m.epoch = c->epoch;
	m.next_pool = c->next_pool;
	m.next_node = c->next_node;
	m.next_volume = c->next_volume;
	m.next_layer = c->next_layer;
	m.next_family = c->next_family;
	m.full_ratio = c->full_ratio;
	size_t len = protobuf_c_message_get_packed_size(&m.base);
	uint8_t buf[128];
	protobuf_c_message_pack(&m.base, buf);
	rocksdb_writebatch_put(b, "c", 1, (const char *)buf, len);
}

rocksdb_writebatch_t *md_batch(void)
{
	return rocksdb_writebatch_create();
}

void md_batch_bump_epoch(struct md_catalog *cat, rocksdb_writebatch_t *b)
{
	cat->ctr.epoch++;
}

static void catalog_clear(struct md_catalog *cat);
static int catalog_load(struct md_catalog *cat);

void md_catalog_set_min_free(struct md_catalog *cat, uint64_t bytes)
{
	cat->min_free = bytes;
}

unsigned md_full_ratio(const struct md_catalog *cat)
{
	return cat->ctr.full_ratio ? cat->ctr.full_ratio : MD_FULL_RATIO;
}

void md_catalog_set_growing(struct md_catalog *cat, bool growing)
{
	cat->growing = growing;
}

/* 0, or -ENOSPC / -EIO with cat->err set: may a commit write now? See MD_MIN_FREE. */
static int room_to_commit(struct md_catalog *cat)
{
	if (cat->write_failed) {
		return md_fail(cat, -EIO,
			       "an earlier catalog write failed (%s): catalog changes are refused "
			       "until strata-meta restarts",
			       cat->write_err);
	}
	uint64_t floor = cat->growing ? cat->min_free : cat->min_free / 4;
	uint64_t avail = st_fs_avail(cat->dir);
	if (floor == 0 || avail == UINT64_MAX || avail >= floor) {
		return 0;
	}
	uint64_t now = st_now_ms();
	if (cat->warned_ms == 0 || now - cat->warned_ms >= 10000) {
		cat->warned_ms = now;
		st_warn("catalog %s: %llu KiB left on its file system, under the reserve of %llu "
			"KiB (--min-free): %s are refused with ENOSPC until space is freed",
			cat->dir, (unsigned long long)(avail >> 10),
			(unsigned long long)(floor >> 10),
			cat->growing ? "new pools, volumes, snapshots and clones"
				     : "all catalog changes");
	}
	return md_fail(cat, -ENOSPC,
		       "strata-meta's disk is full: %llu KiB left under the catalog, under its "
		       "reserve of %llu KiB",
		       (unsigned long long)(avail >> 10), (unsigned long long)(floor >> 10));
}

/* Undo what the failed commit's caller changed in memory: the catalog as it is on disk. */
static void reload_after_failure(struct md_catalog *cat)
{
	char saved[sizeof(cat->err)];
	memcpy(saved, cat->err, sizeof(saved));
	catalog_clear(cat);
	if (catalog_load(cat) < 0) {
		st_error("catalog reload failed: %s", cat->err);
	}
	memcpy(cat->err, saved, sizeof(saved));
}

int md_commit(struct md_catalog *cat, rocksdb_writebatch_t *b)
{
	int rc = room_to_commit(cat);
	if (rc < 0) {
		rocksdb_writebatch_destroy(b);
		reload_after_failure(cat);
		return rc;
	}
	char *err = NULL;
	put_counters(b, &cat->ctr);
	rocksdb_write(cat->db, cat->wo, b, &err);
	rocksdb_writebatch_destroy(b);
	if (err == NULL) {
		return 0;
	}
	st_error("catalog write failed: %s; reloading from disk, and refusing catalog changes "
		 "until a restart",
		 err);
	cat->write_failed = true;
	snprintf(cat->write_err, sizeof(cat->write_err), "%s", err);
	md_fail(cat, -EIO, "catalog write failed: %s", err);
	rocksdb_free(err);
	reload_after_failure(cat);
	return -EIO;
}

int md_commit_volume(struct md_catalog *cat, struct md_volume *v, bool bump_epoch,
		     struct md_volume **out)
{
	rocksdb_writebatch_t *b = md_batch();
	if (bump_epoch) {
		md_batch_bump_epoch(cat, b);
	}
	md_batch_put_volume(b, v);
	int rc = md_commit(cat, b);
	if (rc == 0 && out) {
		*out = v;
	}
	return rc;
}

/* ---- in-memory structure ---- */

static int add_child(struct md_layer *parent, struct md_layer *child)
{
	if (parent->nchildren == parent->cap_children) {
		uint32_t ncap = parent->cap_children ? parent->cap_children * 2 : 4;
		struct md_layer **n = realloc(parent->children, ncap * sizeof(*n));
		if (n == NULL) {
			return -ENOMEM;
		}
		parent->children = n;
		parent->cap_children = ncap;
	}
	parent->children[parent->nchildren++] = child;
	return 0;
}

void md_remove_child(struct md_layer *parent, const struct md_layer *child)
{
	for (uint32_t i = 0; i < parent->nchildren; i++) {
		if (parent->children[i] == child) {
			memmove(&parent->children[i], &parent->children[i + 1],
				(parent->nchildren - i - 1) * sizeof(parent->children[0]));
			parent->nchildren--;
			return;
		}
	}
}

struct md_volume *md_volume_by_id(const struct md_catalog *cat, uint64_t id)
{
	uint8_t k[8];
	md_be64(k, id);
	return md_map_get(&cat->volumes, k, 8);
}

struct md_layer *md_layer_by_id(const struct md_catalog *cat, uint64_t id)
{
	uint8_t k[8];
	md_be64(k, id);
	return md_map_get(&cat->layers, k, 8);
}

int md_index_volume(struct md_catalog *cat, struct md_volume *v)
{
	uint8_t k[8 + MD_NAME_MAX];
	md_be64(k, v->id);
	int rc = md_map_put(&cat->volumes, k, 8, v);
	if (rc == 0) {
		rc = md_map_put(&cat->vnames, k, md_vname_key(k, v->pool_id, v->name), v);
	}
	return rc;
}

void md_unindex_volume(struct md_catalog *cat, struct md_volume *v)
{
	uint8_t k[8 + MD_NAME_MAX];
	md_be64(k, v->id);
	md_map_del(&cat->volumes, k, 8);
	md_map_del(&cat->vnames, k, md_vname_key(k, v->pool_id, v->name));
}

/* Index a layer by id (and by name if a snapshot) and link it under its parent. */
int md_index_layer(struct md_catalog *cat, struct md_layer *l)
{
	uint8_t k[8 + MD_NAME_MAX];
	md_be64(k, l->id);
	int rc = md_map_put(&cat->layers, k, 8, l);
	if (rc == 0 && l->kind == MD_LAYER_SNAP) {
		rc = md_map_put(&cat->snaps, k, md_snap_key(k, l->volume, l->name), l);
	}
	return rc;
}

int md_link_layer(struct md_catalog *cat, struct md_layer *l)
{
	if (l->parent == 0) {
		return 0;
	}
	struct md_layer *p = md_layer_by_id(cat, l->parent);
	if (p == NULL) {
		return -EUCLEAN;
	}
	return add_child(p, l);
}

struct md_layer *md_new_layer(struct md_catalog *cat, uint64_t family, uint64_t parent,
			      uint64_t volume, uint32_t kind)
{
	struct md_layer *l = calloc(1, sizeof(*l));
	if (l == NULL) {
		return NULL;
	}
	l->id = cat->ctr.next_layer++;
	l->family = family;
	l->parent = parent;
	l->volume = volume;
	l->kind = kind;
	l->created = md_wall_now();
	return l;
}

void md_free_layer(struct md_layer *l)
{
	if (l != NULL) {
		free(l->children);
		free(l);
	}
}

int md_add_reclaim(struct md_catalog *cat, rocksdb_writebatch_t *b, const struct md_layer *l,
		   uint32_t pool_id)
{
	if (cat->nreclaims == cat->cap_reclaims) {
		size_t ncap = cat->cap_reclaims ? cat->cap_reclaims * 2 : 16;
		struct md_reclaim *n = realloc(cat->reclaims, ncap * sizeof(*n));
		if (n == NULL) {
			return -ENOMEM;
		}
		cat->reclaims = n;
		cat->cap_reclaims = ncap;
	}
	struct md_reclaim *r = &cat->reclaims[cat->nreclaims++];
	*r = (struct md_reclaim){.layer_id = l->id, .family = l->family, .pool_id = pool_id};
	Strata__Meta__Reclaim m = STRATA__META__RECLAIM__INIT;
	m.layer_id = r->layer_id;
	m.family = r->family;
	m.pool_id = r->pool_id;
	batch_put_msg(b, 'r', r->layer_id, 8, &m.base);
	return 0;
}

/*
 * Drop one layer: its record goes, a reclaim record comes, it leaves its parent's children.
 * A hidden parent (a deleted snapshot kept only for its descendants) that is left without
 * children is dropped too, and so on up the chain.
 */
void md_drop_layer(struct md_catalog *cat, rocksdb_writebatch_t *b, struct md_layer *l,
		   uint32_t pool_id)
{
	while (l != NULL) {
		struct md_layer *parent = l->parent ? md_layer_by_id(cat, l->parent) : NULL;
		if (parent != NULL) {
			md_remove_child(parent, l);
		}
		uint8_t k[8 + MD_NAME_MAX];
		md_be64(k, l->id);
		md_map_del(&cat->layers, k, 8);
		if (l->kind == MD_LAYER_SNAP) {
			md_map_del(&cat->snaps, k, md_snap_key(k, l->volume, l->name));
		}
		md_batch_del(b, 'l', l->id, 8);
		(void)md_add_reclaim(cat, b, l, pool_id);
		md_free_layer(l);
		l = (parent != NULL && parent->kind == MD_LAYER_HIDDEN && parent->nchildren == 0)
			    ? parent
			    : NULL;
	}
}

/* ---- load ---- */

static void catalog_clear(struct md_catalog *cat)
{
	size_t pos = 0;
	void *v;
	while ((v = md_map_next(&cat->layers, &pos)) != NULL) {
		md_free_layer(v);
	}
	pos = 0;
	while ((v = md_map_next(&cat->volumes, &pos)) != NULL) {
		free(v);
	}
	md_map_free(&cat->layers);
	md_map_free(&cat->snaps);
	md_map_free(&cat->volumes);
	md_map_free(&cat->vnames);
	for (size_t i = 0; i < cat->npools; i++) {
		free(cat->pools[i]->holders);
		free(cat->pools[i]);
	}
	free(cat->pools);
	cat->pools = NULL;
	cat->npools = 0;
	for (size_t i = 0; i < cat->nnodes; i++) {
		free(cat->nodes[i]);
	}
	free(cat->nodes);
	cat->nodes = NULL;
	cat->nnodes = 0;
	free(cat->reclaims);
	cat->reclaims = NULL;
	cat->nreclaims = cat->cap_reclaims = 0;
	memset(&cat->ctr, 0, sizeof(cat->ctr));
}

int md_push_ptr(void ***arr, size_t *n, void *p)
{
	void **na = realloc(*arr, (*n + 1) * sizeof(void *));
	if (na == NULL) {
		return -ENOMEM;
	}
	na[(*n)++] = p;
	*arr = na;
	return 0;
}

struct md_node *md_node_alloc(struct md_catalog *cat)
{
	struct md_node *n = calloc(1, sizeof(*n));
	if (n == NULL || md_push_ptr((void ***)&cat->nodes, &cat->nnodes, n) < 0) {
		free(n);
		return NULL;
	}
	return n;
}

struct md_node *md_node_by_id(const struct md_catalog *cat, uint32_t id)
{
	for (size_t i = 0; i < cat->nnodes; i++) {
		if (cat->nodes[i]->id == id) {
			return cat->nodes[i];
		}
	}
	return NULL;
}

size_t md_nodes(const struct md_catalog *cat, const struct md_node *const **out)
{
	*out = (const struct md_node *const *)cat->nodes;
	return cat->nnodes;
}

/* Decode one record into memory. Returns 0 or -errno. */
static int load_record(struct md_catalog *cat, const uint8_t *k, size_t klen, const uint8_t *v,
		       size_t vlen)
{
	if (klen == 1 && k[0] == 'c') {
		Strata__Meta__Counters *m = strata__meta__counters__unpack(NULL, vlen, v);
		if (m == NULL) {
			return md_fail(cat, -EUCLEAN, "corrupt counters record");
		}
		cat->ctr = (struct md_counters){m->epoch,       m->next_pool,  m->next_node,
						m->next_volume, m->next_layer, m->next_family,
						m->full_ratio};
		strata__meta__counters__free_unpacked(m, NULL);
		return 0;
	}
	if (klen == 5 && k[0] == 'p') {
		Strata__Meta__Pool *m = strata__meta__pool__unpack(NULL, vlen, v);
		struct md_pool *p = m ? calloc(1, sizeof(*p)) : NULL;
		if (p == NULL) {
			if (m) {
				strata__meta__pool__free_unpacked(m, NULL);
			}
			return md_fail(cat, -EUCLEAN, "corrupt pool record");
		}
		*p = (struct md_pool){.id = m->id,
				      .replicas = m->replicas,
				      .object_size = m->object_size,
				      .pg_count = m->pg_count};
		md_copy_name(p->name, m->name);
		size_t hlen = (size_t)p->pg_count * MD_HOLDER_BYTES;
		if (m->holders.len == hlen && hlen && (p->holders = malloc(hlen)) != NULL) {
			memcpy(p->holders, m->holders.data, hlen);
		}
		strata__meta__pool__free_unpacked(m, NULL);
		return md_push_ptr((void ***)&cat->pools, &cat->npools, p);
	}
	if (klen == 5 && k[0] == 'n') {
		Strata__Meta__Node *m = strata__meta__node__unpack(NULL, vlen, v);
		if (m == NULL) {
			return md_fail(cat, -EUCLEAN, "corrupt node record");
		}
		struct md_node *n = md_node_alloc(cat);
		if (n != NULL) {
			n->id = m->id;
			snprintf(n->addr, sizeof(n->addr), "%s", m->addr);
			snprintf(n->uuid, sizeof(n->uuid), "%s", m->uuid);
			n->capacity = m->capacity;
			n->used = m->used;
			n->weight = m->weight;
			n->state = m->state;
			n->down_since = m->down_since;
			n->joining = m->joining;
			n->full = m->full;
		}
		strata__meta__node__free_unpacked(m, NULL);
		return n ? 0 : -ENOMEM;
	}
	if (klen == 9 && k[0] == 'v') {
		Strata__Meta__VolumeRec *m = strata__meta__volume_rec__unpack(NULL, vlen, v);
		struct md_volume *vol = m ? calloc(1, sizeof(*vol)) : NULL;
		if (vol == NULL) {
			if (m) {
				strata__meta__volume_rec__free_unpacked(m, NULL);
			}
			return md_fail(cat, -EUCLEAN, "corrupt volume record");
		}
		*vol = (struct md_volume){.id = m->id,
					  .pool_id = m->pool_id,
					  .size = m->size,
					  .used = m->used,
					  .family = m->family,
					  .head = m->head,
					  .is_template = m->template_,
					  .template_base = m->template_base,
					  .created = m->created,
					  .origin = m->origin,
					  .flatten_state = m->flatten_state,
					  .flatten_done = m->flatten_done,
					  .flatten_total = m->flatten_total};
		md_copy_name(vol->name, m->name);
		strata__meta__volume_rec__free_unpacked(m, NULL);
		int rc = md_index_volume(cat, vol);
		if (rc < 0) {
			free(vol);
		}
		return rc;
	}
	if (klen == 9 && k[0] == 'l') {
		Strata__Meta__LayerRec *m = strata__meta__layer_rec__unpack(NULL, vlen, v);
		struct md_layer *l = m ? calloc(1, sizeof(*l)) : NULL;
		if (l == NULL) {
			if (m) {
				strata__meta__layer_rec__free_unpacked(m, NULL);
			}
			return md_fail(cat, -EUCLEAN, "corrupt layer record");
		}
		l->id = m->id;
		l->family = m->family;
		l->parent = m->parent;
		l->volume = m->volume;
		l->kind = m->kind;
		md_copy_name(l->name, m->name);
		l->created = m->created;
		l->size = m->size;
		strata__meta__layer_rec__free_unpacked(m, NULL);
		int rc = md_index_layer(cat, l);
		if (rc < 0) {
			md_free_layer(l);
		}
		return rc;
	}
	if (klen == 9 && k[0] == 'r') {
		Strata__Meta__Reclaim *m = strata__meta__reclaim__unpack(NULL, vlen, v);
		if (m == NULL) {
			return md_fail(cat, -EUCLEAN, "corrupt reclaim record");
		}
		struct md_reclaim r = {m->layer_id, m->family, m->pool_id};
		strata__meta__reclaim__free_unpacked(m, NULL);
		struct md_reclaim *n = realloc(cat->reclaims, (cat->nreclaims + 1) * sizeof(*n));
		if (n == NULL) {
			return -ENOMEM;
		}
		cat->reclaims = n;
		cat->reclaims[cat->nreclaims++] = r;
		cat->cap_reclaims = cat->nreclaims;
		return 0;
	}
	(void)get_be;
	return 0; /* "schema" and unknown keys */
}

static int catalog_load(struct md_catalog *cat)
{
	char *err = NULL;
	size_t vlen = 0;
	char *ver = rocksdb_get(cat->db, cat->ro, "schema", 6, &vlen, &err);
	if (err != NULL) {
		md_fail(cat, -EIO, "reading schema version: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	if (ver == NULL) {
		/* A fresh catalog: write the schema version and the first counters together. */
		rocksdb_writebatch_t *b = rocksdb_writebatch_create();
		char vs[16];
		int n = snprintf(vs, sizeof(vs), "%d", MD_SCHEMA_VERSION);
		rocksdb_writebatch_put(b, "schema", 6, vs, (size_t)n);
		cat->ctr = (struct md_counters){.epoch = 1,
						.next_pool = 1,
						.next_node = 1,
						.next_volume = 1,
						.next_layer = 1,
						.next_family = 1};
		put_counters(b, &cat->ctr);
		rocksdb_write(cat->db, cat->wo, b, &err);
		rocksdb_writebatch_destroy(b);
		if (err != NULL) {
			md_fail(cat, -EIO, "initialising catalog: %s", err);
			rocksdb_free(err);
			return -EIO;
		}
		return 0;
	}
	char vbuf[16];
	snprintf(vbuf, sizeof(vbuf), "%.*s", (int)(vlen < 15 ? vlen : 15), ver);
	rocksdb_free(ver);
	if (atoi(vbuf) != MD_SCHEMA_VERSION) {
		return md_fail(cat, -EPROTO, "catalog schema version %s is not supported (want %d)",
			       vbuf, MD_SCHEMA_VERSION);
	}

	int rc = 0;
	rocksdb_iterator_t *it = rocksdb_create_iterator(cat->db, cat->ro);
	for (rocksdb_iter_seek_to_first(it); rc == 0 && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		rc = load_record(cat, (const uint8_t *)k, kl, (const uint8_t *)v, vl);
	}
	if (rc == 0) {
		rocksdb_iter_get_error(it, &err);
		if (err != NULL) {
			rc = md_fail(cat, -EIO, "reading catalog: %s", err);
			rocksdb_free(err);
		}
	}
	rocksdb_iter_destroy(it);
	if (rc < 0) {
		return rc;
	}
	/* Link the tree once every layer is known. */
	size_t pos = 0;
	struct md_layer *l;
	while ((l = md_map_next(&cat->layers, &pos)) != NULL) {
		if (md_link_layer(cat, l) < 0) {
			return md_fail(cat, -EUCLEAN, "layer %llu has a missing parent %llu",
				       (unsigned long long)l->id, (unsigned long long)l->parent);
		}
	}
	return md_catalog_check(cat);
}

/* mkdir -p. Returns 0 or -errno. */
static int mkdir_p(const char *dir)
{
	char buf[4096];
	if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf)) {
		return -ENAMETOOLONG;
	}
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
				return -errno;
			}
			*p = '/';
		}
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
		return -errno;
	}
	return 0;
}

int md_catalog_open(const char *dir, struct md_catalog **out)
{
	struct md_catalog *cat = calloc(1, sizeof(*cat));
	if (cat == NULL) {
		return -ENOMEM;
	}
	int rc = mkdir_p(dir);
	if (rc < 0) {
		goto out_free;
	}
	cat->dir = strdup(dir);
	cat->min_free = MD_MIN_FREE;
	cat->opts = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(cat->opts, 1);
	/* RocksDB reserves 1.1 x write_buffer_size (70 MiB by default) of disk for each WAL
	 * file; the catalog's WAL holds kilobytes. With one column family this only caps that
	 * reservation (blockd/index.c has the longer story). */
	rocksdb_options_set_max_total_wal_size(cat->opts, 1u << 20);
	cat->wo = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(cat->wo, 1);
	cat->ro = rocksdb_readoptions_create();
	if ((rc = st_fs_room_to_open(dir, "catalog")) < 0) {
		goto out_close;
	}
	char *err = NULL;
	cat->db = rocksdb_open(cat->opts, dir, &err);
	if (err != NULL) {
		st_error("opening catalog %s: %s", dir, err);
		rocksdb_free(err);
		rc = -EIO;
		goto out_close;
	}
	rc = catalog_load(cat);
	if (rc < 0) {
		st_error("loading catalog %s: %s", dir, cat->err);
		goto out_close;
	}
	*out = cat;
	return 0;

out_close:
	md_catalog_close(cat);
	return rc;
out_free:
	free(cat);
	return rc;
}

/*
 * Can RocksDB's close write what it flushes? It writes the memtable out and, when that fails
 * on a full file system, Debian's librocksdb (built with assertions) aborts on its next WAL
 * operation. The memtable of a catalog is small; CLOSE_ROOM leaves it ample room.
 */
#define CLOSE_ROOM (4ull << 20)
static bool closing_flush_fits(const struct md_catalog *cat)
{
	if (cat->write_failed) {
		return false;
	}
	uint64_t avail = cat->dir ? st_fs_avail(cat->dir) : UINT64_MAX;
	return avail == UINT64_MAX || avail >= CLOSE_ROOM;
}

void md_catalog_close(struct md_catalog *cat)
{
	if (cat == NULL) {
		return;
	}
	catalog_clear(cat);
	if (cat->db && !closing_flush_fits(cat)) {
		/* Every commit synced its WAL record (md_commit), so nothing is lost: the next
		 * open replays the WAL, as after a crash. The handle is left to the exit. */
		st_warn("catalog %s: its file system is full; closing without RocksDB's flush "
			"(which would abort), every change is in the synced WAL",
			cat->dir);
		cat->db = NULL;
	}
	if (cat->db) {
		rocksdb_close(cat->db);
	}
	if (cat->wo) {
		rocksdb_writeoptions_destroy(cat->wo);
	}
	if (cat->ro) {
		rocksdb_readoptions_destroy(cat->ro);
	}
	if (cat->opts) {
		rocksdb_options_destroy(cat->opts);
	}
	free(cat->dir);
	free(cat);
}

size_t md_reclaims(const struct md_catalog *cat, const struct md_reclaim **out)
{
	*out = cat->reclaims;
	return cat->nreclaims;
}

int md_reclaim_done(struct md_catalog *cat, const uint64_t *ids, size_t n)
{
	rocksdb_writebatch_t *b = md_batch();
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < cat->nreclaims; j++) {
			if (cat->reclaims[j].layer_id == ids[i]) {
				md_batch_del(b, 'r', ids[i], 8);
				cat->reclaims[j] = cat->reclaims[--cat->nreclaims];
				break;
			}
		}
	}
	return md_commit(cat, b);
}

void md_catalog_counts(const struct md_catalog *cat, uint32_t *volumes, uint32_t *snapshots,
		       uint64_t *provisioned)
{
	*volumes = (uint32_t)cat->volumes.count;
	*snapshots = (uint32_t)cat->snaps.count;
	uint64_t sum = 0;
	size_t pos = 0;
	struct md_volume *v;
	while ((v = md_map_next(&cat->volumes, &pos)) != NULL) {
		sum += v->size;
	}
	*provisioned = sum;
}

/* ---- invariants ---- */

int md_catalog_check(struct md_catalog *cat)
{
	size_t pos = 0;
	struct md_layer *l;
	while ((l = md_map_next(&cat->layers, &pos)) != NULL) {
		unsigned long long id = (unsigned long long)l->id;
		struct md_volume *owner = md_volume_by_id(cat, l->volume);
		if (owner == NULL) {
			return md_fail(cat, -EUCLEAN, "layer %llu: owner volume missing", id);
		}
		if (l->family != owner->family) {
			return md_fail(cat, -EUCLEAN, "layer %llu: family differs from owner", id);
		}
		if (l->kind == MD_LAYER_HEAD && owner->head != l->id) {
			return md_fail(cat, -EUCLEAN, "layer %llu: a head not its volume's head",
				       id);
		}
		if (l->kind == MD_LAYER_HEAD && l->nchildren != 0) {
			return md_fail(cat, -EUCLEAN, "layer %llu: a head with children", id);
		}
		if (l->kind == MD_LAYER_HIDDEN && l->nchildren == 0) {
			return md_fail(cat, -EUCLEAN, "layer %llu: unreferenced hidden layer", id);
		}
		if (l->kind == MD_LAYER_SNAP) {
			uint8_t k[8 + MD_NAME_MAX];
			if (md_map_get(&cat->snaps, k, md_snap_key(k, l->volume, l->name)) != l) {
				return md_fail(cat, -EUCLEAN, "layer %llu: snapshot not indexed",
					       id);
			}
		}
		if (l->parent != 0) {
			struct md_layer *p = md_layer_by_id(cat, l->parent);
			if (p == NULL || p->family != l->family || p->kind == MD_LAYER_HEAD) {
				return md_fail(cat, -EUCLEAN, "layer %llu: bad parent %llu", id,
					       (unsigned long long)l->parent);
			}
			bool found = false;
			for (uint32_t i = 0; i < p->nchildren; i++) {
				found |= p->children[i] == l;
			}
			if (!found) {
				return md_fail(cat, -EUCLEAN,
					       "layer %llu: not linked in its parent", id);
			}
		}
		/* A parent always exists before its child, and ids only grow, so parent < id;
		 * that also rules out cycles, in O(1) per layer. */
		if (l->parent >= l->id) {
			return md_fail(cat, -EUCLEAN, "layer %llu: parent %llu is not older", id,
				       (unsigned long long)l->parent);
		}
		if (l->id >= cat->ctr.next_layer) {
			return md_fail(cat, -EUCLEAN, "layer %llu: id beyond the counter", id);
		}
	}
	pos = 0;
	struct md_volume *v;
	while ((v = md_map_next(&cat->volumes, &pos)) != NULL) {
		struct md_layer *h = md_layer_by_id(cat, v->head);
		if (h == NULL || h->kind != MD_LAYER_HEAD || h->volume != v->id) {
			return md_fail(cat, -EUCLEAN, "volume '%s': bad head", v->name);
		}
		if (md_pool_by_id(cat, v->pool_id) == NULL) {
			return md_fail(cat, -EUCLEAN, "volume '%s': pool missing", v->name);
		}
		if (v->id >= cat->ctr.next_volume) {
			return md_fail(cat, -EUCLEAN, "volume '%s': id beyond the counter",
				       v->name);
		}
		if (v->template_base != 0) {
			struct md_layer *t = md_layer_by_id(cat, v->template_base);
			if (t == NULL || t->volume != v->id || t->kind != MD_LAYER_SNAP) {
				return md_fail(cat, -EUCLEAN, "volume '%s': bad template base",
					       v->name);
			}
		}
	}
	return 0;
}

/* ---- raw records for pr.c ---- */

int md_catalog_get(struct md_catalog *cat, const void *key, size_t klen, char **val, size_t *vlen)
{
	char *err = NULL;
	*val = rocksdb_get(cat->db, cat->ro, key, klen, vlen, &err);
	if (err != NULL) {
		md_fail(cat, -EIO, "catalog read failed: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	return 0;
}

void md_pr_batch_forget(rocksdb_writebatch_t *b, uint64_t volume_id)
{
	uint8_t lo[9] = {'R'}, hi[9] = {'R'};
	md_be64(lo + 1, volume_id);
	md_be64(hi + 1, volume_id + 1);
	rocksdb_writebatch_delete_range(b, (const char *)lo, sizeof(lo), (const char *)hi,
					sizeof(hi));
}
