/*
 * The meta RPC server: one reactor thread owns the catalog, decodes each request with
 * md_request_decode(), runs it against the catalog and replies. A failure is an ErrorReply
 * with a negative errno and the catalog's message; the connection and the service carry on.
 *
 * MAP_WATCH long-poll:
 *
 *   waiters (TAILQ) <-- MAP_WATCH{known} when known >= epoch, with a timer of watch_timeout_ms
 *      |  any request or tick that moves the epoch --> wake(): reply with the map, cancel timer
 *      |  timer fires --> reply with the current map (if not replied yet)
 *      +- the conn closes --> forget the conn, cancel the timer
 *   A waiter is freed only in its timer callback, which io_uring always delivers (fired or
 *   cancelled), so no path frees it twice or touches it after free.
 *
 * PR_WATCH and the holding of PR_UPDATE replies live in prwatch.c (the same idea for SCSI
 * reservations, with acknowledgements as in fence.c).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "common/log.h"
#include "common/rpc.h"
#include "internal.h"

#define TICK_MS 250

struct md_waiter {
	TAILQ_ENTRY(md_waiter) link;
	struct md_server *s;
	struct st_conn *c; /* NULL once the conn has closed */
	uint64_t req_id;
	uint64_t known;
	bool done; /* replied (or abandoned); the timer callback frees it */
	struct st_io timer;
};

struct md_server {
	struct st_reactor *r;
	struct md_catalog *cat;
	struct st_server *srv;
	struct md_server_config cfg;
	TAILQ_HEAD(, md_waiter) waiters;
	struct st_io tick_io;
	bool stopping;
	uint64_t epoch_seen;
	struct md_flattener *fl; /* flatten.c */
	struct md_fence fence;
	struct md_prwatch *pw;      /* prwatch.c: PR_WATCH, held PR_UPDATE replies */
	struct md_pgstats *pgstats; /* stats.c: the nodes' latest PG health reports */
	uint64_t dispatch_epoch;    /* the epoch when the request being dispatched arrived */
	bool in_dispatch;
};

/* The server whose request is being dispatched (one reactor thread): reply() consults it to
 * hold fenced replies. */
static struct md_server *dispatching;

/* ---- a per-request arena for reply strings and arrays ---- */

struct arena {
	void **p;
	size_t n, cap;
};

static void *arena_alloc(struct arena *a, size_t len)
{
	if (a->n == a->cap) {
		size_t ncap = a->cap ? a->cap * 2 : 16;
		void **np = realloc(a->p, ncap * sizeof(*np));
		if (np == NULL) {
			return NULL;
		}
		a->p = np;
		a->cap = ncap;
	}
	void *m = calloc(1, len ? len : 1);
	if (m != NULL) {
		a->p[a->n++] = m;
	}
	return m;
}

static char *arena_printf(struct arena *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static char *arena_printf(struct arena *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *s = arena_alloc(a, (size_t)n + 1);
	if (s != NULL) {
		va_start(ap, fmt);
		vsnprintf(s, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	return s ? s : (char *)"";
}

static void arena_free(struct arena *a)
{
	for (size_t i = 0; i < a->n; i++) {
		free(a->p[i]);
	}
	free(a->p);
}

/* ---- message builders ---- */

static bool fill_map(struct md_server *s, struct arena *a, Strata__Meta__ClusterMap *m)
{
	const struct md_node *const *nodes;
	const struct md_pool *const *pools;
	size_t nn = md_nodes(s->cat, &nodes), np = md_pools(s->cat, &pools);
	strata__meta__cluster_map__init(m);
	m->epoch = md_catalog_epoch(s->cat);
	Strata__Meta__Node *nv = arena_alloc(a, nn * sizeof(*nv));
	Strata__Meta__Node **npv = arena_alloc(a, nn * sizeof(*npv));
	Strata__Meta__Pool *pv = arena_alloc(a, np * sizeof(*pv));
	Strata__Meta__Pool **ppv = arena_alloc(a, np * sizeof(*ppv));
	if (!nv || !npv || !pv || !ppv) {
		return false;
	}
	for (size_t i = 0; i < nn; i++) {
		strata__meta__node__init(&nv[i]);
		nv[i].id = nodes[i]->id;
		nv[i].addr = (char *)nodes[i]->addr;
		nv[i].uuid = (char *)nodes[i]->uuid;
		nv[i].capacity = nodes[i]->capacity;
		nv[i].used = nodes[i]->used;
		nv[i].weight = nodes[i]->weight;
		nv[i].state = nodes[i]->state;
		nv[i].down_since = nodes[i]->down_since;
		nv[i].joining = nodes[i]->joining;
		nv[i].full = nodes[i]->full;
		npv[i] = &nv[i];
	}
	for (size_t i = 0; i < np; i++) {
		strata__meta__pool__init(&pv[i]);
		pv[i].id = pools[i]->id;
		pv[i].name = (char *)pools[i]->name;
		pv[i].replicas = pools[i]->replicas;
		pv[i].object_size = pools[i]->object_size;
		pv[i].pg_count = pools[i]->pg_count;
		/* PGs whose every holder is down: nobody may serve them (holders.c). */
		size_t dlen = (pools[i]->pg_count + 7) / 8;
		uint8_t *down = pools[i]->holders ? arena_alloc(a, dlen) : NULL;
		bool any = false;
		if (down) {
			memset(down, 0, dlen);
			for (uint32_t g = 0; g < pools[i]->pg_count; g++) {
				if (md_pg_down(s->cat, pools[i], g)) {
					down[g / 8] |= (uint8_t)(1u << (g % 8));
					any = true;
				}
			}
		}
		if (any) { /* the map carries the bitmap only when a PG is down */
			pv[i].down_pgs.data = down;
			pv[i].down_pgs.len = dlen;
		}
		ppv[i] = &pv[i];
	}
	m->n_nodes = nn;
	m->nodes = npv;
	m->n_pools = np;
	m->pools = ppv;
	return true;
}

/* "pool/vol@snap" for a snapshot layer, "pool/vol@(deleted)" for a hidden one. */
static char *layer_label(struct md_server *s, struct arena *a, const struct md_layer *l)
{
	char spec[300];
	const struct md_volume *v = md_volume_by_id(s->cat, l->volume);
	if (v == NULL) {
		return arena_printf(a, "layer-%llu", (unsigned long long)l->id);
	}
	md_volume_spec(s->cat, v, spec, sizeof(spec));
	switch (l->kind) {
	case MD_LAYER_SNAP:
		return arena_printf(a, "%s@%s", spec, l->name);
	case MD_LAYER_HIDDEN:
		return arena_printf(a, "%s@(deleted)", spec);
	default:
		return arena_printf(a, "%s", spec);
	}
}

static bool fill_volume(struct md_server *s, struct arena *a, struct md_volume *v,
			Strata__Meta__VolumeInfo *m)
{
	static const char *fstate[] = {"", "running", "done"};
	const struct md_pool *p = md_pool_by_id(s->cat, v->pool_id);
	strata__meta__volume_info__init(m);
	m->id = v->id;
	m->pool = (char *)(p ? p->name : "?");
	m->pool_id = v->pool_id;
	m->object_size = p ? p->object_size : 0;
	m->name = v->name;
	m->size = v->size;
	m->used = v->used;
	m->family = v->family;
	m->head_layer = v->head;
	m->template_ = v->is_template;
	m->created = v->created;
	m->flatten_state = (char *)fstate[v->flatten_state <= 2 ? v->flatten_state : 0];
	m->flatten_done = v->flatten_done;
	m->flatten_total = v->flatten_total;
	const struct md_layer *o = v->origin ? md_layer_by_id(s->cat, v->origin) : NULL;
	m->parent = o ? layer_label(s, a, o) : (char *)"";
	struct md_layer **snaps;
	int ns = md_snapshots(s->cat, v, &snaps);
	if (ns < 0) {
		return false;
	}
	free(snaps);
	m->snapshots = (uint32_t)ns;
	/* Direct clones: volumes whose origin snapshot belongs to v. */
	struct md_volume **deps;
	int nd = md_dependents(s->cat, v, NULL, &deps);
	if (nd < 0) {
		return false;
	}
	m->children = arena_alloc(a, (size_t)nd * sizeof(char *));
	if (m->children == NULL) {
		free(deps);
		return false;
	}
	for (int i = 0; i < nd; i++) {
		const struct md_layer *dl = md_layer_by_id(s->cat, deps[i]->origin);
		if (dl != NULL && dl->volume == v->id) {
			char spec[300];
			m->children[m->n_children++] = arena_printf(
				a, "%s", md_volume_spec(s->cat, deps[i], spec, sizeof(spec)));
		}
	}
	free(deps);
	return true;
}

static bool fill_snap(struct md_server *s, struct arena *a, struct md_volume *v, struct md_layer *l,
		      Strata__Meta__SnapInfo *m)
{
	const struct md_pool *p = md_pool_by_id(s->cat, v->pool_id);
	strata__meta__snap_info__init(m);
	m->layer_id = l->id;
	m->pool = (char *)(p ? p->name : "?");
	m->volume = v->name;
	m->name = l->name;
	m->created = l->created;
	m->size = l->size;
	struct md_volume **deps;
	int nd = md_dependents(s->cat, v, l, &deps);
	if (nd < 0) {
		return false;
	}
	m->clones = arena_alloc(a, (size_t)nd * sizeof(char *));
	if (m->clones == NULL) {
		free(deps);
		return false;
	}
	for (int i = 0; i < nd; i++) {
		char spec[300];
		m->clones[m->n_clones++] =
			arena_printf(a, "%s", md_volume_spec(s->cat, deps[i], spec, sizeof(spec)));
	}
	free(deps);
	return true;
}

/* Requests that grow the catalog for a user: refused first when its disk fills (MD_MIN_FREE).
 * Removals, heartbeats and reservations keep the rest of the reserve. */
static bool growing_type(uint16_t type)
{
	switch (type) {
	case STRATA__META__META_MSG_TYPE__META_POOL_CREATE:
	case STRATA__META__META_MSG_TYPE__META_VOLUME_CREATE:
	case STRATA__META__META_MSG_TYPE__META_VOLUME_RESIZE:
	case STRATA__META__META_MSG_TYPE__META_VOLUME_RENAME:
	case STRATA__META__META_MSG_TYPE__META_SNAP_CREATE:
	case STRATA__META__META_MSG_TYPE__META_SNAP_ROLLBACK:
	case STRATA__META__META_MSG_TYPE__META_CLONE:
	case STRATA__META__META_MSG_TYPE__META_TEMPLATE_SET:
	case STRATA__META__META_MSG_TYPE__META_FLATTEN:
		return true;
	default:
		return false;
	}
}

/* ---- replies ---- */

/* Requests whose epoch move writers must see before the caller hears back (see fence.c). */
static bool fenced_type(uint16_t type)
{
	switch (type) {
	case STRATA__META__META_MSG_TYPE__META_SNAP_CREATE:
	case STRATA__META__META_MSG_TYPE__META_SNAP_ROLLBACK:
	case STRATA__META__META_MSG_TYPE__META_TEMPLATE_SET:
	case STRATA__META__META_MSG_TYPE__META_VOLUME_RESIZE:
	case STRATA__META__META_MSG_TYPE__META_VOLUME_REMOVE:
		return true;
	default:
		return false;
	}
}

static int reply(struct st_conn *c, const struct st_frame *f, const void *msg)
{
	struct md_server *s = dispatching;
	if (s != NULL && s->in_dispatch && fenced_type(f->hdr.type) &&
	    md_catalog_epoch(s->cat) > s->dispatch_epoch &&
	    md_fence_hold(&s->fence, c, (uint16_t)(f->hdr.type | ST_FRAME_REPLY), f->hdr.req_id,
			  msg, md_catalog_epoch(s->cat)) == 0) {
		return 0;
	}
	return st_conn_send(c, (uint16_t)(f->hdr.type | ST_FRAME_REPLY), f->hdr.req_id, 0, 0, msg,
			    NULL, 0, NULL, NULL);
}

static int reply_map(struct md_server *s, struct st_conn *c, uint16_t type, uint64_t req_id)
{
	struct arena a = {0};
	Strata__Meta__ClusterMap m;
	int rc = -ENOMEM;
	if (fill_map(s, &a, &m)) {
		rc = st_conn_send(c, (uint16_t)(type | ST_FRAME_REPLY), req_id, 0, 0, &m.base, NULL,
				  0, NULL, NULL);
	}
	arena_free(&a);
	return rc;
}

static void wake_waiters(struct md_server *s)
{
	uint64_t epoch = md_catalog_epoch(s->cat);
	if (epoch == s->epoch_seen) {
		return;
	}
	s->epoch_seen = epoch;
	struct md_waiter *w;
	TAILQ_FOREACH(w, &s->waiters, link)
	{
		if (!w->done && w->known < epoch) {
			w->done = true;
			if (w->c != NULL) {
				reply_map(s, w->c, STRATA__META__META_MSG_TYPE__META_MAP_WATCH,
					  w->req_id);
			}
			st_reactor_cancel(s->r, &w->timer);
		}
	}
}

static void waiter_timer(void *arg, int res)
{
	struct md_waiter *w = arg;
	struct md_server *s = w->s;
	if (!w->done && w->c != NULL && !s->stopping) {
		reply_map(s, w->c, STRATA__META__META_MSG_TYPE__META_MAP_WATCH, w->req_id);
	}
	TAILQ_REMOVE(&s->waiters, w, link);
	free(w);
}

static int do_watch(struct md_server *s, struct st_conn *c, const struct st_frame *f,
		    const Strata__Meta__MapWatchReq *r)
{
	if (r->node_id != 0) {
		md_fence_ack(&s->fence, r->node_id, r->known_epoch);
		md_fence_release(&s->fence, s->cat);
	}
	if (r->known_epoch < md_catalog_epoch(s->cat)) {
		return reply_map(s, c, f->hdr.type, f->hdr.req_id);
	}
	struct md_waiter *w = calloc(1, sizeof(*w));
	if (w == NULL) {
		return -ENOMEM;
	}
	w->s = s;
	w->c = c;
	w->req_id = f->hdr.req_id;
	w->known = r->known_epoch;
	TAILQ_INSERT_TAIL(&s->waiters, w, link);
	st_reactor_timer(s->r, &w->timer, s->cfg.watch_timeout_ms, waiter_timer, w);
	return 0;
}

/* Pre-order: branches (clones, other children) indented under a layer, then the layer's own
 * main line (its first child of the same volume) at the same depth, so a volume's history
 * reads as a column and clones hang off the snapshot they came from. */
static bool tree_walk(struct md_server *s, struct arena *a, struct md_layer *l, uint32_t depth,
		      Strata__Meta__Tree *t, size_t cap)
{
	while (l != NULL) {
		if (t->n_nodes >= cap) {
			return false;
		}
		Strata__Meta__TreeNode *n = arena_alloc(a, sizeof(*n));
		if (n == NULL) {
			return false;
		}
		strata__meta__tree_node__init(n);
		n->layer_id = l->id;
		n->parent_id = l->parent;
		n->depth = depth;
		n->kind = l->kind;
		n->label = layer_label(s, a, l);
		const struct md_volume *v = md_volume_by_id(s->cat, l->volume);
		n->template_ = v && v->is_template && l->kind == MD_LAYER_HEAD;
		t->nodes[t->n_nodes++] = n;
		struct md_layer *main_line = NULL;
		for (uint32_t i = 0; i < l->nchildren; i++) {
			struct md_layer *ch = l->children[i];
			if (main_line == NULL && ch->volume == l->volume) {
				main_line = ch;
			} else if (!tree_walk(s, a, ch, depth + 1, t, cap)) {
				return false;
			}
		}
		l = main_line; /* iterate, so a long history costs no stack */
	}
	return true;
}

static int do_tree(struct md_server *s, struct st_conn *c, const struct st_frame *f,
		   const Strata__Meta__VolumeRef *r)
{
	struct md_volume *v;
	int rc = md_volume_lookup(s->cat, r->pool, r->name, &v);
	if (rc < 0) {
		return rc;
	}
	struct md_layer *root = md_layer_by_id(s->cat, v->head);
	while (root != NULL && root->parent != 0) {
		root = md_layer_by_id(s->cat, root->parent);
	}
	/* Roots of the family: the root volume's and flattened volumes' first layers. */
	struct arena a = {0};
	Strata__Meta__Tree t = STRATA__META__TREE__INIT;
	t.family = v->family;
	size_t cap = 1 << 20;
	t.nodes = arena_alloc(&a, cap * sizeof(*t.nodes));
	rc = -ENOMEM;
	if (t.nodes != NULL && root != NULL && tree_walk(s, &a, root, 0, &t, cap)) {
		rc = reply(c, f, &t);
	}
	arena_free(&a);
	return rc;
}

static int do_status(struct md_server *s, struct st_conn *c, const struct st_frame *f)
{
	Strata__Meta__ClusterStatus m = STRATA__META__CLUSTER_STATUS__INIT;
	const struct md_node *const *nodes;
	const struct md_pool *const *pools;
	size_t nn = md_nodes(s->cat, &nodes);
	m.epoch = md_catalog_epoch(s->cat);
	m.full_ratio = md_full_ratio(s->cat);
	m.pools = (uint32_t)md_pools(s->cat, &pools);
	for (size_t i = 0; i < nn; i++) {
		switch (nodes[i]->state) {
		case STRATA__META__NODE_STATE__NODE_UP:
			m.nodes_up++;
			m.nodes_joining += nodes[i]->joining;
			m.nodes_full += nodes[i]->full;
			m.nodes_nearfull += md_node_nearfull(s->cat, nodes[i]);
			m.capacity += nodes[i]->capacity;
			m.used += nodes[i]->used;
			break;
		case STRATA__META__NODE_STATE__NODE_DOWN:
			m.nodes_down++;
			break;
		default:
			m.nodes_out++;
		}
	}
	md_catalog_counts(s->cat, &m.volumes, &m.snapshots, &m.provisioned);
	int rc = md_pgstats_fill(s->pgstats, s->cat, &m);
	if (rc < 0) {
		return rc;
	}
	rc = reply(c, f, &m);
	md_pgstats_fill_free(&m);
	return rc;
}

static int reply_volume(struct md_server *s, struct st_conn *c, const struct st_frame *f,
			struct md_volume *v)
{
	struct arena a = {0};
	Strata__Meta__VolumeInfo m;
	uint64_t *layers = NULL;
	int rc = -ENOMEM;
	if (fill_volume(s, &a, v, &m)) {
		/* One volume: also the layers it owns, for `used` (volume info). */
		int nl = md_volume_layers(s->cat, v, &layers);
		rc = nl;
		if (nl >= 0) {
			m.layers = layers;
			m.n_layers = (size_t)nl;
			rc = reply(c, f, &m);
		}
	}
	free(layers);
	arena_free(&a);
	return rc;
}

static int reply_volumes(struct md_server *s, struct st_conn *c, const struct st_frame *f,
			 const char *pool, bool templates)
{
	struct md_volume **vols;
	int n = md_volumes(s->cat, pool, templates, &vols);
	if (n < 0) {
		return n;
	}
	struct arena a = {0};
	Strata__Meta__VolumeList l = STRATA__META__VOLUME_LIST__INIT;
	Strata__Meta__VolumeInfo *vi = arena_alloc(&a, (size_t)n * sizeof(*vi));
	l.volumes = arena_alloc(&a, (size_t)n * sizeof(*l.volumes));
	int rc = -ENOMEM;
	if (vi != NULL && l.volumes != NULL) {
		for (int i = 0; i < n; i++) {
			if (!fill_volume(s, &a, vols[i], &vi[i])) {
				goto out;
			}
			l.volumes[l.n_volumes++] = &vi[i];
		}
		rc = reply(c, f, &l);
	}
out:
	free(vols);
	arena_free(&a);
	return rc;
}

static int do_snap_list(struct md_server *s, struct st_conn *c, const struct st_frame *f,
			const Strata__Meta__VolumeRef *r)
{
	struct md_volume *v;
	struct md_layer **snaps;
	int rc = md_volume_lookup(s->cat, r->pool, r->name, &v);
	if (rc < 0) {
		return rc;
	}
	int n = md_snapshots(s->cat, v, &snaps);
	if (n < 0) {
		return n;
	}
	struct arena a = {0};
	Strata__Meta__SnapList l = STRATA__META__SNAP_LIST__INIT;
	Strata__Meta__SnapInfo *si = arena_alloc(&a, (size_t)n * sizeof(*si));
	l.snaps = arena_alloc(&a, (size_t)n * sizeof(*l.snaps));
	rc = -ENOMEM;
	if (si != NULL && l.snaps != NULL) {
		for (int i = 0; i < n; i++) {
			if (!fill_snap(s, &a, v, snaps[i], &si[i])) {
				goto out;
			}
			l.snaps[l.n_snaps++] = &si[i];
		}
		rc = reply(c, f, &l);
	}
out:
	free(snaps);
	arena_free(&a);
	return rc;
}

static int reply_layer_ancestry(struct md_server *s, struct st_conn *c, const struct st_frame *f,
				struct md_volume *v, struct md_layer *l, bool ro)
{
	uint64_t *anc;
	int n = md_ancestry(s->cat, l, &anc);
	if (n < 0) {
		return n;
	}
	int rc;
	if (f->hdr.type == STRATA__META__META_MSG_TYPE__META_VOLUME_OPEN) {
		const struct md_pool *p = md_pool_by_id(s->cat, v->pool_id);
		Strata__Meta__VolumeOpenReply m = STRATA__META__VOLUME_OPEN_REPLY__INIT;
		m.pool_id = v->pool_id;
		m.volume_id = v->id;
		m.family = v->family;
		m.layer_id = l->id;
		m.read_only = ro;
		m.size = l->kind == MD_LAYER_HEAD ? v->size : l->size;
		m.object_size = p ? p->object_size : MD_DEFAULT_OBJ_SIZE;
		m.n_ancestry = (size_t)n;
		m.ancestry = anc;
		m.epoch = md_catalog_epoch(s->cat);
		rc = reply(c, f, &m);
	} else {
		Strata__Meta__LayerInfo m = STRATA__META__LAYER_INFO__INIT;
		m.layer_id = l->id;
		m.family = l->family;
		m.parent_id = l->parent;
		m.volume_id = l->volume;
		m.kind = l->kind;
		m.n_ancestry = (size_t)n;
		m.ancestry = anc;
		rc = reply(c, f, &m);
	}
	free(anc);
	return rc;
}

static int do_flatten_reply(struct md_server *s, struct st_conn *c, const struct st_frame *f,
			    struct md_volume *v)
{
	char spec[300];
	Strata__Meta__FlattenStatus m = STRATA__META__FLATTEN_STATUS__INIT;
	m.volume = md_volume_spec(s->cat, v, spec, sizeof(spec));
	m.state = v->flatten_state == MD_FLATTEN_RUNNING ? "running" : "done";
	m.done = v->flatten_done;
	m.total = v->flatten_total;
	return reply(c, f, &m);
}

/* PR_GET / PR_UPDATE (pr.c). A lost compare-and-swap is -EAGAIN with the current version in
 * the ErrorReply message; the gateway reloads with PR_GET either way. Both replies carry
 * (instance, pr_seq); a successful update moves pr_seq and its reply is held until every PR
 * watcher has seen the change (prwatch.c). */
static int do_pr(struct md_server *s, struct st_conn *c, const struct st_frame *f,
		 const ProtobufCMessage *msg)
{
	Strata__Meta__PrGetReply m = STRATA__META__PR_GET_REPLY__INIT;
	Strata__Meta__PrRecord *rec = NULL;
	int rc;
	m.instance = md_prwatch_instance(s->pw);
	m.seq = md_prwatch_seq(s->pw);
	if (f->hdr.type == STRATA__META__META_MSG_TYPE__META_PR_GET) {
		const Strata__Meta__PrGetReq *r = (const void *)msg;
		rc = md_pr_get(s->cat, r->spec, r->known_version, &m.version, &rec);
	} else {
		const Strata__Meta__PrUpdateReq *r = (const void *)msg;
		rc = md_pr_update(s->cat, r->spec, r->expected_version, r->record, &m.version);
		if (rc == 0) {
			m.seq = md_prwatch_bump(s->pw);
			if (md_prwatch_hold(s->pw, c, (uint16_t)(f->hdr.type | ST_FRAME_REPLY),
					    f->hdr.req_id, &m.base, m.seq, r->gateway) == 0) {
				return 0;
			}
		}
	}
	if (rc == 0) {
		m.record = rec;
		rc = reply(c, f, &m);
	}
	if (rec != NULL) {
		strata__meta__pr_record__free_unpacked(rec, NULL);
	}
	return rc;
}

/* Run one decoded request. Returns 0 if a reply was sent, or a negative errno (the catalog's
 * message, if any, describes it). */
static int dispatch(struct md_server *s, struct st_conn *c, const struct st_frame *f,
		    const ProtobufCMessage *msg)
{
	struct md_volume *v = NULL;
	struct md_layer *l = NULL;
	int rc;
	uint64_t now = st_now_ms();
	Strata__Meta__Empty empty = STRATA__META__EMPTY__INIT;

	switch (f->hdr.type) {
	case STRATA__META__META_MSG_TYPE__META_NODE_REGISTER: {
		const Strata__Meta__NodeRegisterReq *r = (const void *)msg;
		const struct md_node *n;
		if ((rc = md_node_register(s->cat, r->addr, r->capacity, r->weight, r->uuid, now,
					   &n)) < 0) {
			return rc;
		}
		md_pgstats_forget(s->pgstats, n->id);
		struct arena a = {0};
		Strata__Meta__NodeRegisterReply m = STRATA__META__NODE_REGISTER_REPLY__INIT;
		Strata__Meta__ClusterMap map;
		m.node_id = n->id;
		m.map = &map;
		rc = fill_map(s, &a, &map) ? reply(c, f, &m) : -ENOMEM;
		arena_free(&a);
		return rc;
	}
	case STRATA__META__META_MSG_TYPE__META_NODE_HEARTBEAT: {
		const Strata__Meta__NodeHeartbeatReq *r = (const void *)msg;
		if ((rc = md_node_heartbeat(s->cat, r->node_id, r->used, r->capacity, now)) < 0) {
			return rc;
		}
		if (md_pgstats_update(s->pgstats, r) < 0) {
			st_warn("node %u: PG report dropped (out of memory)", r->node_id);
		}
		if ((rc = md_holders_update(s->cat, r->node_id, r)) < 0) {
			st_warn("node %u: PG holdings not recorded: %s", r->node_id,
				md_catalog_error(s->cat));
		}
		Strata__Meta__NodeHeartbeatReply m = STRATA__META__NODE_HEARTBEAT_REPLY__INIT;
		m.epoch = md_catalog_epoch(s->cat);
		return reply(c, f, &m);
	}
	case STRATA__META__META_MSG_TYPE__META_MAP_GET:
		return reply_map(s, c, f->hdr.type, f->hdr.req_id);
	case STRATA__META__META_MSG_TYPE__META_MAP_WATCH:
		return do_watch(s, c, f, (const void *)msg);
	case STRATA__META__META_MSG_TYPE__META_VOLUME_OPEN: {
		bool ro;
		const Strata__Meta__VolumeOpenReq *r = (const void *)msg;
		if (r->volume_id != 0 && r->spec[0] == '\0') {
			v = md_volume_by_id(s->cat, r->volume_id);
			l = v ? md_layer_by_id(s->cat, v->head) : NULL;
			if (l == NULL) {
				return md_fail(s->cat, -ENOENT, "volume %llu does not exist",
					       (unsigned long long)r->volume_id);
			}
			return reply_layer_ancestry(s, c, f, v, l, v->is_template);
		}
		if ((rc = md_volume_open(s->cat, r->spec, &v, &l, &ro)) < 0) {
			return rc;
		}
		return reply_layer_ancestry(s, c, f, v, l, ro);
	}
	case STRATA__META__META_MSG_TYPE__META_LAYER_GET: {
		const Strata__Meta__LayerGetReq *r = (const void *)msg;
		l = md_layer_by_id(s->cat, r->layer_id);
		if (l == NULL) {
			return md_fail(s->cat, -ENOENT, "layer %llu does not exist",
				       (unsigned long long)r->layer_id);
		}
		return reply_layer_ancestry(s, c, f, NULL, l, true);
	}
	case STRATA__META__META_MSG_TYPE__META_POOL_CREATE: {
		const Strata__Meta__PoolCreateReq *r = (const void *)msg;
		const struct md_pool *p;
		if ((rc = md_pool_create(s->cat, r->name, r->replicas, r->object_size, r->pg_count,
					 &p)) < 0) {
			return rc;
		}
		Strata__Meta__Pool m = STRATA__META__POOL__INIT;
		m.id = p->id;
		m.name = (char *)p->name;
		m.replicas = p->replicas;
		m.object_size = p->object_size;
		m.pg_count = p->pg_count;
		return reply(c, f, &m);
	}
	case STRATA__META__META_MSG_TYPE__META_POOL_LIST: {
		struct arena a = {0};
		Strata__Meta__ClusterMap map;
		Strata__Meta__PoolList m = STRATA__META__POOL_LIST__INIT;
		rc = -ENOMEM;
		if (fill_map(s, &a, &map)) {
			m.n_pools = map.n_pools;
			m.pools = map.pools;
			rc = reply(c, f, &m);
		}
		arena_free(&a);
		return rc;
	}
	case STRATA__META__META_MSG_TYPE__META_VOLUME_CREATE: {
		const Strata__Meta__VolumeCreateReq *r = (const void *)msg;
		if ((rc = md_volume_create(s->cat, r->pool, r->name, r->size, &v)) < 0) {
			return rc;
		}
		return reply_volume(s, c, f, v);
	}
	case STRATA__META__META_MSG_TYPE__META_VOLUME_LIST:
		return reply_volumes(s, c, f, ((const Strata__Meta__ListReq *)msg)->pool, false);
	case STRATA__META__META_MSG_TYPE__META_TEMPLATE_LIST:
		return reply_volumes(s, c, f, ((const Strata__Meta__ListReq *)msg)->pool, true);
	case STRATA__META__META_MSG_TYPE__META_VOLUME_INFO: {
		const Strata__Meta__VolumeRef *r = (const void *)msg;
		if ((rc = md_volume_lookup(s->cat, r->pool, r->name, &v)) < 0) {
			return rc;
		}
		return reply_volume(s, c, f, v);
	}
	case STRATA__META__META_MSG_TYPE__META_VOLUME_RESIZE: {
		const Strata__Meta__VolumeResizeReq *r = (const void *)msg;
		if ((rc = md_volume_resize(s->cat, r->pool, r->name, r->size, r->allow_shrink,
					   &v)) < 0) {
			return rc;
		}
		return reply_volume(s, c, f, v);
	}
	case STRATA__META__META_MSG_TYPE__META_VOLUME_RENAME: {
		const Strata__Meta__VolumeRenameReq *r = (const void *)msg;
		if ((rc = md_volume_rename(s->cat, r->pool, r->name, r->new_name, &v)) < 0) {
			return rc;
		}
		return reply_volume(s, c, f, v);
	}
	case STRATA__META__META_MSG_TYPE__META_VOLUME_REMOVE: {
		const Strata__Meta__VolumeRef *r = (const void *)msg;
		if ((rc = md_volume_remove(s->cat, r->pool, r->name)) < 0) {
			return rc;
		}
		return reply(c, f, &empty);
	}
	case STRATA__META__META_MSG_TYPE__META_SNAP_CREATE: {
		const Strata__Meta__VolumeRef *r = (const void *)msg;
		if ((rc = md_snap_create(s->cat, r->pool, r->name, r->snap, &l)) < 0) {
			return rc;
		}
		v = md_volume_by_id(s->cat, l->volume);
		struct arena a = {0};
		Strata__Meta__SnapInfo m;
		rc = fill_snap(s, &a, v, l, &m) ? reply(c, f, &m) : -ENOMEM;
		arena_free(&a);
		return rc;
	}
	case STRATA__META__META_MSG_TYPE__META_SNAP_LIST:
		return do_snap_list(s, c, f, (const void *)msg);
	case STRATA__META__META_MSG_TYPE__META_SNAP_REMOVE: {
		const Strata__Meta__VolumeRef *r = (const void *)msg;
		if ((rc = md_snap_remove(s->cat, r->pool, r->name, r->snap)) < 0) {
			return rc;
		}
		return reply(c, f, &empty);
	}
	case STRATA__META__META_MSG_TYPE__META_SNAP_ROLLBACK: {
		const Strata__Meta__VolumeRef *r = (const void *)msg;
		if ((rc = md_snap_rollback(s->cat, r->pool, r->name, r->snap, &v)) < 0) {
			return rc;
		}
		return reply_volume(s, c, f, v);
	}
	case STRATA__META__META_MSG_TYPE__META_CLONE: {
		const Strata__Meta__CloneReq *r = (const void *)msg;
		if ((rc = md_clone(s->cat, r->pool, r->name, r->snap, r->dst_pool, r->dst_name,
				   &v)) < 0) {
			return rc;
		}
		return reply_volume(s, c, f, v);
	}
	case STRATA__META__META_MSG_TYPE__META_TEMPLATE_SET: {
		const Strata__Meta__TemplateSetReq *r = (const void *)msg;
		if ((rc = md_template_set(s->cat, r->pool, r->name, r->mark, &v)) < 0) {
			return rc;
		}
		return reply_volume(s, c, f, v);
	}
	case STRATA__META__META_MSG_TYPE__META_FLATTEN: {
		const Strata__Meta__VolumeRef *r = (const void *)msg;
		if ((rc = md_flatten_start(s->cat, r->pool, r->name, &v)) < 0) {
			return rc;
		}
		md_flattener_add(s->fl, v->id);
		return do_flatten_reply(s, c, f, v);
	}
	case STRATA__META__META_MSG_TYPE__META_FLATTEN_PROGRESS: {
		const Strata__Meta__FlattenProgressReq *r = (const void *)msg;
		if ((rc = md_flatten_progress(s->cat, r->volume_id, r->done, r->total, r->complete,
					      &v)) < 0) {
			return rc;
		}
		return do_flatten_reply(s, c, f, v);
	}
	case STRATA__META__META_MSG_TYPE__META_TREE:
		return do_tree(s, c, f, (const void *)msg);
	case STRATA__META__META_MSG_TYPE__META_STATUS:
		return do_status(s, c, f);
	case STRATA__META__META_MSG_TYPE__META_RECLAIM_LIST: {
		const struct md_reclaim *rs;
		size_t n = md_reclaims(s->cat, &rs);
		struct arena a = {0};
		Strata__Meta__ReclaimList m = STRATA__META__RECLAIM_LIST__INIT;
		Strata__Meta__Reclaim *rv = arena_alloc(&a, n * sizeof(*rv));
		m.layers = arena_alloc(&a, n * sizeof(*m.layers));
		rc = -ENOMEM;
		if (rv != NULL && m.layers != NULL) {
			for (size_t i = 0; i < n; i++) {
				strata__meta__reclaim__init(&rv[i]);
				rv[i].layer_id = rs[i].layer_id;
				rv[i].family = rs[i].family;
				rv[i].pool_id = rs[i].pool_id;
				m.layers[m.n_layers++] = &rv[i];
			}
			rc = reply(c, f, &m);
		}
		arena_free(&a);
		return rc;
	}
	case STRATA__META__META_MSG_TYPE__META_RECLAIM_DONE: {
		const Strata__Meta__ReclaimDoneReq *r = (const void *)msg;
		if ((rc = md_reclaim_done(s->cat, r->layer_ids, r->n_layer_ids)) < 0) {
			return rc;
		}
		return reply(c, f, &empty);
	}
	case STRATA__META__META_MSG_TYPE__META_CONFIG_SET: {
		const Strata__Meta__ConfigSetReq *r = (const void *)msg; /* checked: request.c */
		if ((rc = md_set_full_ratio(s->cat, (unsigned)strtoul(r->value, NULL, 10))) < 0) {
			return rc;
		}
		__attribute__((fallthrough)); /* the reply is the configuration now */
	}
	case STRATA__META__META_MSG_TYPE__META_CONFIG_GET: {
		Strata__Meta__Config m = STRATA__META__CONFIG__INIT;
		m.full_ratio = md_full_ratio(s->cat);
		return reply(c, f, &m);
	}
	case STRATA__META__META_MSG_TYPE__META_PR_GET:
	case STRATA__META__META_MSG_TYPE__META_PR_UPDATE:
		return do_pr(s, c, f, msg);
	case STRATA__META__META_MSG_TYPE__META_PR_WATCH:
		return md_prwatch_watch(s->pw, c, f->hdr.req_id, (const void *)msg);
	default:
		return md_fail(s->cat, -ENOTSUP, "unsupported request 0x%04x", f->hdr.type);
	}
}

static void on_frame(struct st_conn *c, struct st_frame *f, void *arg)
{
	struct md_server *s = arg;
	char why[256] = "";
	struct md_request req;
	uint16_t type = f->hdr.type;
	int rc;

	if (type & ST_FRAME_REPLY) {
		st_warn("%s sent a reply frame (type 0x%04x) to meta; ignored", st_conn_peer(c),
			type);
		goto out;
	}
	if (f->hdr.payload_len != 0) {
		st_conn_send_error(c, type, f->hdr.req_id, -EINVAL,
				   "meta requests carry no data payload");
		goto out;
	}
	rc = md_request_decode(type, f->msg, f->hdr.hdr_len, &req, why, sizeof(why));
	if (rc < 0) {
		st_debug("bad request from %s: %s", st_conn_peer(c), why);
		st_conn_send_error(c, type, f->hdr.req_id, rc, "%s", why);
		goto out;
	}
	md_fail(s->cat, 0, "%s", "");
	dispatching = s;
	s->in_dispatch = true;
	s->dispatch_epoch = md_catalog_epoch(s->cat);
	md_catalog_set_growing(s->cat, growing_type(type));
	rc = dispatch(s, c, f, req.msg);
	md_catalog_set_growing(s->cat, false);
	s->in_dispatch = false;
	if (rc < 0) {
		const char *msg = md_catalog_error(s->cat);
		st_conn_send_error(c, type, f->hdr.req_id, rc, "%s", msg[0] ? msg : strerror(-rc));
	}
	md_request_free(&req);
	wake_waiters(s);
	md_fence_release(&s->fence, s->cat); /* a fence with no up node releases at once */
out:
	st_frame_release(f);
}

static void on_close(struct st_conn *c, int err, void *arg)
{
	struct md_server *s = arg;
	struct md_waiter *w;
	md_fence_conn_closed(&s->fence, c);
	md_prwatch_conn_closed(s->pw, c);
	TAILQ_FOREACH(w, &s->waiters, link)
	{
		if (w->c == c) {
			w->c = NULL;
			if (!w->done) {
				w->done = true;
				st_reactor_cancel(s->r, &w->timer);
			}
		}
	}
}

static const struct st_conn_ops meta_ops = {
	.on_frame = on_frame,
	.on_close = on_close,
};

static void tick(void *arg, int res)
{
	struct md_server *s = arg;
	if (s->stopping || res == -ECANCELED) {
		return;
	}
	int rc = md_nodes_tick(s->cat, st_now_ms(), (uint64_t)time(NULL), s->cfg.down_ms,
			       s->cfg.down_out_s);
	if (rc < 0) {
		st_error("node liveness update failed: %s", md_catalog_error(s->cat));
	}
	rc = md_nodes_promote(s->cat, md_pgstats_settled(s->pgstats, s->cat));
	if (rc < 0) {
		st_error("promoting caught-up nodes failed: %s", md_catalog_error(s->cat));
	}
	md_flattener_tick(s->fl);
	wake_waiters(s);
	md_fence_release(&s->fence, s->cat); /* nodes that went down no longer hold fences */
	st_reactor_timer(s->r, &s->tick_io, TICK_MS, tick, s);
}

int md_server_start(struct st_reactor *r, struct md_catalog *cat,
		    const struct md_server_config *cfg, struct md_server **out)
{
	struct md_server *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		return -ENOMEM;
	}
	s->r = r;
	s->cat = cat;
	s->cfg = *cfg;
	if (s->cfg.down_ms == 0) {
		s->cfg.down_ms = MD_HEARTBEAT_DOWN_MS;
	}
	if (s->cfg.watch_timeout_ms == 0) {
		s->cfg.watch_timeout_ms = 30000;
	}
	TAILQ_INIT(&s->waiters);
	md_fence_init(&s->fence);
	s->epoch_seen = md_catalog_epoch(cat);
	int rc = md_pgstats_new(&s->pgstats);
	if (rc < 0) {
		md_fence_free(&s->fence);
		free(s);
		return rc;
	}
	rc = md_prwatch_create(r, cfg->pr_heartbeat_ms, cfg->pr_ack_timeout_ms, &s->pw);
	if (rc < 0) {
		md_pgstats_free(s->pgstats);
		md_fence_free(&s->fence);
		free(s);
		return rc;
	}
	rc = md_flattener_create(r, cat, &s->fl);
	if (rc < 0) {
		md_prwatch_free(s->pw);
		md_pgstats_free(s->pgstats);
		md_fence_free(&s->fence);
		free(s);
		return rc;
	}
	rc = st_server_start(r, cfg->listen, &meta_ops, s, 0, &s->srv);
	if (rc < 0) {
		md_flattener_free(s->fl);
		md_prwatch_free(s->pw);
		md_pgstats_free(s->pgstats);
		free(s);
		return rc;
	}
	st_reactor_timer(r, &s->tick_io, TICK_MS, tick, s);
	md_prwatch_start(s->pw);
	*out = s;
	return 0;
}

int md_server_port(const struct md_server *s)
{
	return st_server_port(s->srv);
}

void md_server_stop(struct md_server *s)
{
	if (s == NULL) {
		return;
	}
	s->stopping = true;
	md_flattener_stop(s->fl);
	md_prwatch_stop(s->pw);
	st_server_stop(s->srv);
}

/*
 * After st_reactor_destroy(): the reactor has delivered (cancelled) every outstanding timer by
 * then, and waiter_timer() frees each waiter it sees while stopping; free what is left.
 */
void md_server_free(struct md_server *s)
{
	if (s == NULL) {
		return;
	}
	struct md_waiter *w;
	while ((w = TAILQ_FIRST(&s->waiters)) != NULL) {
		TAILQ_REMOVE(&s->waiters, w, link);
		free(w);
	}
	md_fence_free(&s->fence);
	md_flattener_free(s->fl);
	md_prwatch_free(s->pw);
	md_pgstats_free(s->pgstats);
	if (dispatching == s) {
		dispatching = NULL;
	}
	free(s);
}
