/*
 * Peering, recovery, backfill, rebalancing and stray removal.
 *
 * Peering (the primary of a PG whose acting set changed, or that just started):
 *
 *   PEERING --PG_INFO to every other member--> versions
 *     --someone ahead of us--> pull from the most advanced (below)
 *     --members not at our version--> PG_RECOVER: they pull from us
 *     --all equal--> ACTIVE (parked mutations start)
 *   any failure: start over in 200 ms; a newer map abandons the round (pg->round).
 *
 * Nothing mutates a PG while it peers (its primary refuses with -EAGAIN), so a pull copies a
 * quiescent PG: no ordering races between copies and forwarded writes.
 *
 * Pull (the puller drives; the source answers):
 *   PG_LIST {since = our version} --> the source's log covers `since`: the objects changed
 *   after it; otherwise full backfill: every object of the PG in the source's index (plus
 *   every object of the PG in ours, so objects the source no longer has are deleted)
 *   --> OBJ_GET each (at most BD_XFER_MAX objects in flight per node: throttling) --> install
 *   (replace every list of the object) --> finally persist the source's version, with the
 *   source's compare-and-write outcomes for the PG's objects (mutate.c, "Recovery").
 *   A crash mid-pull leaves the old version persisted: the next peering pulls again, and
 *   installing an object twice is harmless.
 *
 * Strays: a node that holds data of a PG it is no longer a member of asks the PG's primary
 * whether it is ACTIVE at our epoch (so the new acting set is complete) and then deletes the
 * PG's objects. This is how rebalancing frees space after a node joins, and how a node's
 * data disappears after it comes back from being marked out.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd.pb-c.h"
#include "common/log.h"
#include "dist_int.h"

/* A round that failed for want of space here or on the member waits FULL_RETRY_MS: space
 * comes back when someone frees it, not in 200 ms, and each round reads the objects from the
 * source again. */
#define PEER_RETRY_MS       200
#define FULL_RETRY_MS       2000
#define PULL_PARALLEL       4
#define BUSY_RETRY_MS       20
#define LIST_SWITCH_OBJECTS 64 /* a PG list this long switches the source's memtable first */
/* PG lists are paged: a page of 16384 ObjRefs is at most 400 KiB of the 1 MiB a frame's message
 * may hold, which leaves room for the first page's compare-and-write outcomes. The puller's page
 * is STRATA_PGLIST_PAGE objects when set (tests use a small one), else LIST_PAGE_MAX. */
#define LIST_PAGE_MAX 16384u

/* ------------------------------------------------------------------------------------------ */
/* Objects of one PG */

struct pg_filter {
	struct bd_dist *d;
	uint32_t pool, pg, pg_count;
};

static bool in_pg(void *arg, uint64_t family, uint64_t object)
{
	struct pg_filter *f = arg;
	return dist_family_pool(f->d, family) == f->pool &&
	       st_place_pg(family, object, f->pg_count) == f->pg;
}

/* The filter for pg's objects; false if its pool is not in our map. */
static bool pg_filter_init(struct pg_filter *f, struct bd_dist *d, const struct bd_pg *pg)
{
	struct dist_pool *p = dist_pool(d, pg->pool);
	*f = (struct pg_filter){d, pg->pool, pg->pg, p ? p->pg_count : 0};
	return p != NULL;
}

/*
 * Keep pg's objects among the node's (objs, from bd_object_list_async), in place. Returns how
 * many, or -ESTALE when pg's pool is not in our map. The listing itself runs on a thread:
 * it scans every list on the node, which on a big node is far too long for the reactor.
 */
static long pg_keep(struct bd_dist *d, const struct bd_pg *pg, uint64_t *objs, long n)
{
	struct pg_filter f;
	if (!pg_filter_init(&f, d, pg)) {
		return -ESTALE;
	}
	return (long)bd_pairs_keep(objs, (size_t)n, in_pg, &f);
}

/* ------------------------------------------------------------------------------------------ */
/*
 * One object: OBJ_GET from a peer, page by page, then install here.
 *
 * A whole object can be more than a frame may carry (ST_FRAME_MAX_PAYLOAD of data, 1 MiB of
 * lists): a hot object under many snapshots has a full set of lists and blocks in every layer.
 * So the pull asks for FETCH_PAGE_BYTES at a time with a (layer, seg) cursor and gathers the
 * pages, then installs them in one bd_object_install_async. A source that predates paging
 * ignores the cursor and answers with the whole object and more = false.
 */
#define FETCH_PAGE_BYTES (16u << 20)
#define SERVE_PAGE_MAX   (32u << 20) /* at most this much data per page served */

struct obj_fetch {
	struct bd_dist *d;
	uint32_t source, pool;
	uint64_t family, object;
	struct bd_xobj acc; /* the pages so far */
	uint32_t cap_lists;
	bool had_lists; /* acc had lists when installed (the install takes acc) */
	bd_done_cb cb;
	void *cb_arg;
};

/* Append one ObjData reply to f->acc. Returns 0 or -errno; *more from the reply. */
static int fetch_append(struct obj_fetch *f, struct st_frame *reply, bool *more)
{
	Strata__Blockd__ObjData *od =
		strata__blockd__obj_data__unpack(NULL, reply->hdr.hdr_len, reply->msg);
	if (!od) {
		return -EBADMSG;
	}
	struct bd_xobj *x = &f->acc;
	int rc = 0;
	*more = od->more;
	if (od->more && od->n_lists == 0) {
		rc = -EBADMSG; /* a page that brings nothing would never end */
		goto out;
	}
	if (x->nlists + od->n_lists > f->cap_lists) {
		uint32_t cap = (uint32_t)(x->nlists + od->n_lists);
		struct bd_xlist *nl = realloc(x->lists, (cap ? cap : 1) * sizeof(*nl));
		if (!nl) {
			rc = -ENOMEM;
			goto out;
		}
		x->lists = nl;
		f->cap_lists = cap;
	}
	uint32_t ndata = 0, nlists = x->nlists;
	for (size_t i = 0; i < od->n_lists; i++) {
		struct bd_xlist *l = &x->lists[nlists];
		l->layer = od->lists[i]->layer;
		l->seg = od->lists[i]->seg;
		if (l->seg >= (1u << 20) ||
		    bd_extmap_decode(&l->map, od->lists[i]->map.data, od->lists[i]->map.len)) {
			rc = -EBADMSG;
			goto out;
		}
		if (nlists > 0 && (l->layer < x->lists[nlists - 1].layer ||
				   (l->layer == x->lists[nlists - 1].layer &&
				    l->seg <= x->lists[nlists - 1].seg))) {
			rc = -EBADMSG; /* out of (layer, seg) order: the cursor would not advance */
			goto out;
		}
		ndata += bd_extmap_data_blocks(&l->map);
		nlists++;
	}
	if ((uint64_t)ndata * BD_BLOCK != reply->hdr.payload_len ||
	    (uint64_t)x->ndata + ndata > UINT32_MAX / BD_BLOCK) {
		rc = -EBADMSG;
		goto out;
	}
	if (x->ndata == 0) {
		free(x->data);
		x->data = reply->payload; /* stolen: the common case is one page */
		reply->payload = NULL;
	} else if (ndata > 0) {
		uint8_t *nd = aligned_alloc(BD_BLOCK, (size_t)(x->ndata + ndata) * BD_BLOCK);
		if (!nd) {
			rc = -ENOMEM;
			goto out;
		}
		memcpy(nd, x->data, (size_t)x->ndata * BD_BLOCK);
		memcpy(nd + (size_t)x->ndata * BD_BLOCK, reply->payload, (size_t)ndata * BD_BLOCK);
		free(x->data);
		x->data = nd;
	}
	x->nlists = nlists;
	x->ndata += ndata;
	x->bad_blocks += od->bad_blocks;
out:
	strata__blockd__obj_data__free_unpacked(od, NULL);
	return rc;
}

static void fetch_end(struct obj_fetch *f, int err)
{
	bd_xobj_free(&f->acc);
	bd_done_cb cb = f->cb;
	void *cb_arg = f->cb_arg;
	free(f);
	cb(cb_arg, err);
}

static void fetch_installed(void *arg, int err)
{
	struct obj_fetch *f = arg;
	if (err == 0 && f->had_lists) {
		dist_family_set(f->d, f->family, f->pool);
	}
	fetch_end(f, err);
}

/* Install what was pulled: its data through the ring (bd_object_install_async). */
static void fetch_finish(struct obj_fetch *f, int err)
{
	if (!err) {
		uint8_t fk[9], fv[4];
		dist_fkey(fk, f->family);
		dist_be32(fv, f->pool);
		struct bd_xkv kv = {fk, 9, fv, 4};
		f->had_lists = f->acc.nlists > 0;
		err = bd_object_install_async(f->d->e, f->family, f->object, &f->acc, &kv,
					      f->had_lists ? 1 : 0, fetch_installed, f);
		if (!err) {
			return;
		}
	}
	fetch_end(f, err);
}

static int fetch_send(struct obj_fetch *f);

static void fetch_done(void *arg, int err, struct st_frame *reply)
{
	struct obj_fetch *f = arg;
	bool more = false;
	if (f->d->stopping) {
		err = -ECANCELED;
	}
	if (!err && reply) {
		err = fetch_append(f, reply, &more);
	}
	if (!err && more) {
		err = fetch_send(f);
		if (!err) {
			return;
		}
	}
	fetch_finish(f, err);
}

static int fetch_send(struct obj_fetch *f)
{
	struct st_client *cl = dist_peer(f->d, f->source);
	if (!cl) {
		return -ENOTCONN;
	}
	Strata__Blockd__ObjRequest m = STRATA__BLOCKD__OBJ_REQUEST__INIT;
	m.pool_id = f->pool;
	m.family = f->family;
	m.object = f->object;
	m.map_epoch = f->d->epoch;
	m.from = f->d->self;
	m.to = f->source;
	m.page_bytes = FETCH_PAGE_BYTES;
	if (f->acc.nlists > 0) {
		m.after_layer = f->acc.lists[f->acc.nlists - 1].layer;
		m.after_seg = f->acc.lists[f->acc.nlists - 1].seg;
	}
	return st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_GET, 0, &m.base, NULL,
			      0, fetch_done, f) < 0
		       ? -ENOTCONN
		       : 0;
}

/* Pull (family, object) from source and install it. Returns 0 and calls cb(arg, err) once
 * done, or returns -errno without calling it when the first request cannot be sent. */
static int fetch_object(struct bd_dist *d, uint32_t source, uint32_t pool, uint64_t family,
			uint64_t object, bd_done_cb cb, void *arg)
{
	struct obj_fetch *f = calloc(1, sizeof(*f));
	if (!f) {
		return -ENOMEM;
	}
	*f = (struct obj_fetch){.d = d,
				.source = source,
				.pool = pool,
				.family = family,
				.object = object,
				.cb = cb,
				.cb_arg = arg};
	int err = fetch_send(f);
	if (err) {
		free(f);
	}
	return err;
}

void recovery_pull_object(struct bd_dist *d, uint32_t source, uint32_t pool, uint64_t family,
			  uint64_t object, bd_done_cb cb, void *arg)
{
	int err = fetch_object(d, source, pool, family, object, cb, arg);
	if (err) {
		cb(arg, err);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Pull a whole PG */

struct pull_ctx {
	struct bd_dist *d;
	struct bd_pg *pg;
	uint32_t source;
	bd_done_cb cb;
	void *cb_arg;
	uint64_t target;
	uint64_t *objs; /* pairs */
	size_t nobjs, next;
	uint64_t after_family, after_object; /* the list's cursor */
	uint32_t pages;
	bool full;
	struct bd_idem_done *done; /* the source's compare-and-write outcomes for the PG */
	size_t ndone;
	int inflight, err;
	bool listed; /* every page is in: objs is the list to copy */
	struct st_io timer;
};

struct pull_obj {
	struct pull_ctx *pc;
	uint64_t family, object;
};

static void pull_pump(struct pull_ctx *pc);

static void pull_finish(struct pull_ctx *pc)
{
	struct bd_dist *d = pc->d;
	struct bd_pg *pg = pc->pg;
	int err = pc->err;
	if (!err) {
		uint8_t vk[9], vv[8];
		dist_vkey(vk, pg->pool, pg->pg);
		dist_be64(vv, pc->target);
		struct bd_xkv kv = {vk, 9, vv, 8};
		/* The outcomes ride in the same batch as the version (mutate.c, "Recovery"). */
		bd_idem_import(d->e, pc->done, pc->ndone);
		err = bd_engine_put_raw(d->e, &kv, 1, false);
	}
	if (!err) {
		if (pc->nobjs) {
			st_info("pg %u.%u: pulled %zu objects from node %u, version %lx", pg->pool,
				pg->pg, pc->nobjs, pc->source, (unsigned long)pc->target);
		}
		pg->version = pc->target;
		dist_log_reset(pg);
	}
	if (pc->listed && d->objects_to_recover >= pc->nobjs - pc->next) {
		d->objects_to_recover -= pc->nobjs - pc->next; /* never transferred */
	}
	pg->pulling = false;
	bd_done_cb cb = pc->cb;
	void *arg = pc->cb_arg;
	free(pc->objs);
	free(pc->done);
	free(pc);
	cb(arg, err);
}

static void pull_timer(void *arg, int res)
{
	(void)res;
	pull_pump(arg);
}

static void pull_obj_done(void *arg, int err)
{
	struct pull_obj *po = arg;
	struct pull_ctx *pc = po->pc;
	struct bd_dist *d = pc->d;
	pc->inflight--;
	d->xfer_inflight--;
	if (d->stopping) {
		free(po);
		return;
	}
	if (err && !pc->err) {
		st_warn("pg %u.%u: object %lu/%lu from node %u: %s", pc->pg->pool, pc->pg->pg,
			(unsigned long)po->family, (unsigned long)po->object, pc->source,
			strerror(-err));
		pc->err = err;
	}
	if (d->objects_to_recover) {
		d->objects_to_recover--;
	}
	d->objects_recovered++;
	free(po);
	pull_pump(pc);
}

static void pull_pump(struct pull_ctx *pc)
{
	struct bd_dist *d = pc->d;
	if (d->stopping) {
		return;
	}
	/* An object refused for want of space does not stop the round: the later ones may be
	 * smaller here than the copies they replace (trimmed while this node was full), and the
	 * space they free lets the next round install it. The round still fails. */
	while ((!pc->err || pc->err == -ENOSPC) && pc->next < pc->nobjs &&
	       pc->inflight < PULL_PARALLEL && d->xfer_inflight < BD_XFER_MAX) {
		struct pull_obj *po = calloc(1, sizeof(*po));
		if (!po) {
			pc->err = -ENOMEM;
			break;
		}
		po->pc = pc;
		po->family = pc->objs[2 * pc->next];
		po->object = pc->objs[2 * pc->next + 1];
		int err = fetch_object(d, pc->source, pc->pg->pool, po->family, po->object,
				       pull_obj_done, po);
		if (err) {
			free(po);
			pc->err = err;
			break;
		}
		pc->next++;
		pc->inflight++;
		d->xfer_inflight++;
	}
	if (pc->inflight == 0) {
		if ((pc->err && pc->err != -ENOSPC) || pc->next == pc->nobjs) {
			pull_finish(pc);
		} else {
			/* Every transfer slot is taken by other pulls: look again soon. */
			st_reactor_timer(d->r, &pc->timer, BUSY_RETRY_MS, pull_timer, pc);
		}
	}
}

static int list_send(struct pull_ctx *pc);

/* Every page is in pc->objs: add our own objects (local, nlocal; taken) for a backfill, sort,
 * dedupe, and copy. */
static void list_merge(struct pull_ctx *pc, uint64_t *local, long nlocal)
{
	struct bd_dist *d = pc->d;
	size_t n = pc->nobjs + (size_t)nlocal;
	uint64_t *v = realloc(pc->objs, (n ? n : 1) * 2 * sizeof(uint64_t));
	if (!v) {
		free(local);
		pc->err = -ENOMEM;
		pull_finish(pc);
		return;
	}
	pc->objs = v;
	if (nlocal > 0) { /* local is NULL otherwise */
		memcpy(pc->objs + 2 * pc->nobjs, local, (size_t)nlocal * 2 * sizeof(uint64_t));
	}
	free(local);
	size_t w = bd_pairs_sort_unique(pc->objs, n);
	pc->nobjs = w;
	if (w) {
		st_info("pg %u.%u: %s from node %u: %zu objects (version %lx -> %lx)%s",
			pc->pg->pool, pc->pg->pg, pc->full ? "backfill" : "log recovery",
			pc->source, w, (unsigned long)pc->pg->version, (unsigned long)pc->target,
			pc->pages > 1 ? ", listed in pages" : "");
	}
	d->objects_to_recover += w;
	pc->listed = true;
	pull_pump(pc);
}

/* Our own objects for a backfill are listed (off the reactor thread): keep the PG's. */
static void local_listed(void *arg, int err, uint64_t *objs, long n)
{
	struct pull_ctx *pc = arg;
	if (pc->d->stopping) {
		free(objs);
		return;
	}
	if (!err) {
		n = pg_keep(pc->d, pc->pg, objs, n);
		err = n < 0 ? (int)n : 0;
	}
	if (err) {
		free(objs);
		pc->err = err;
		pull_finish(pc);
		return;
	}
	list_merge(pc, objs, n);
}

static void list_complete(struct pull_ctx *pc)
{
	if (!pc->full) {
		list_merge(pc, NULL, 0);
		return;
	}
	int err = bd_object_list_async(pc->d->e, local_listed, pc);
	if (err) {
		pc->err = err;
		pull_finish(pc);
	}
}

/* One page of the PG's list arrived: gather it; ask for the next, or copy. */
static void list_done(void *arg, int err, struct st_frame *reply)
{
	struct pull_ctx *pc = arg;
	struct bd_dist *d = pc->d;
	if (d->stopping) {
		return;
	}
	Strata__Blockd__PgList *l =
		!err && reply
			? strata__blockd__pg_list__unpack(NULL, reply->hdr.hdr_len, reply->msg)
			: NULL;
	if (!l) {
		pc->err = err ? err : -EBADMSG;
		pull_finish(pc);
		return;
	}
	if (pc->pages++ == 0) {
		/* The first page's version is the target: a later page may come from a newer state,
		 * which is fine, since what changed after the target is the next pull's. */
		pc->target = l->version;
		if (l->n_done > 0 && (pc->done = calloc(l->n_done, sizeof(*pc->done))) != NULL) {
			for (size_t i = 0; i < l->n_done; i++) {
				pc->done[i] = (struct bd_idem_done){
					l->done[i]->client_id, l->done[i]->seq, l->done[i]->family,
					l->done[i]->object};
			}
			pc->ndone = l->n_done;
		}
	}
	pc->full |= l->full; /* a page may find the log outgrown since the first */
	uint64_t *v = realloc(pc->objs, (pc->nobjs + l->n_objects + 1) * 2 * sizeof(uint64_t));
	if (!v) {
		strata__blockd__pg_list__free_unpacked(l, NULL);
		pc->err = -ENOMEM;
		pull_finish(pc);
		return;
	}
	pc->objs = v;
	for (size_t i = 0; i < l->n_objects; i++) {
		pc->objs[2 * pc->nobjs] = l->objects[i]->family;
		pc->objs[2 * pc->nobjs + 1] = l->objects[i]->object;
		pc->nobjs++;
	}
	bool more = l->more && l->n_objects > 0;
	if (more) { /* pages come in (family, object) order: the last one is the cursor */
		pc->after_family = l->objects[l->n_objects - 1]->family;
		pc->after_object = l->objects[l->n_objects - 1]->object;
	}
	strata__blockd__pg_list__free_unpacked(l, NULL);
	if (!more) {
		list_complete(pc);
	} else if (list_send(pc) < 0) {
		pc->err = -ENOTCONN;
		pull_finish(pc);
	}
}

/* Ask the source for the next page of the PG's list. 0, or -ENOTCONN (list_done will not run). */
static int list_send(struct pull_ctx *pc)
{
	struct bd_dist *d = pc->d;
	struct st_client *cl = dist_peer(d, pc->source);
	if (!cl) {
		return -ENOTCONN;
	}
	const char *env = getenv("STRATA_PGLIST_PAGE");
	long page = env ? strtol(env, NULL, 10) : 0;
	Strata__Blockd__PgListRequest m = STRATA__BLOCKD__PG_LIST_REQUEST__INIT;
	m.pool_id = pc->pg->pool;
	m.pg = pc->pg->pg;
	m.map_epoch = d->epoch;
	m.to = pc->source;
	m.since = pc->pg->version;
	m.after_family = pc->after_family;
	m.after_object = pc->after_object;
	m.max_objects = page > 0 && page < (long)LIST_PAGE_MAX ? (uint32_t)page : LIST_PAGE_MAX;
	return st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_LIST, 0, &m.base, NULL,
			      0, list_done, pc) < 0
		       ? -ENOTCONN
		       : 0;
}

/* Bring pg up to date from source. cb(arg, 0) once pg->version is the source's. */
static void pull_pg(struct bd_dist *d, struct bd_pg *pg, uint32_t source, bd_done_cb cb, void *arg)
{
	if (pg->pulling || !dist_pg_still(pg)) {
		cb(arg, -EAGAIN);
		return;
	}
	struct pull_ctx *pc = calloc(1, sizeof(*pc));
	if (!pc) {
		cb(arg, -ENOMEM);
		return;
	}
	pc->d = d;
	pc->pg = pg;
	pc->source = source;
	pc->cb = cb;
	pc->cb_arg = arg;
	pg->pulling = true;
	if (list_send(pc) < 0) {
		pc->err = -ENOTCONN;
		pull_finish(pc);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Peering */

struct peer_ctx;
struct peer_slot {
	struct peer_ctx *c;
	uint32_t node;
	bool member; /* in the acting set (else a node that may hold an older copy: a stray) */
	uint64_t version;
	int err;
};

struct peer_ctx {
	struct bd_dist *d;
	struct bd_pg *pg;
	uint64_t round;
	uint32_t n;
	int pending, err;
	struct st_io timer;
	struct peer_slot s[BD_MAX_NODES];
};

static void peer_begin(struct peer_ctx *c);

static bool peer_stale(struct peer_ctx *c)
{
	return c->d->stopping || c->pg->round != c->round || c->pg->state != PG_PEERING;
}

static void peer_timer(void *arg, int res)
{
	(void)res;
	struct peer_ctx *c = arg;
	if (c->d->stopping) {
		return;
	}
	if (c->pg->round != c->round) {
		free(c);
		return;
	}
	peer_begin(c);
}

static uint64_t retry_ms(int err)
{
	return err == -ENOSPC ? FULL_RETRY_MS : PEER_RETRY_MS;
}

static void peer_retry(struct peer_ctx *c, uint64_t ms)
{
	st_reactor_timer(c->d->r, &c->timer, ms, peer_timer, c);
}

static void peer_activate(struct peer_ctx *c)
{
	struct bd_dist *d = c->d;
	struct bd_pg *pg = c->pg;
	pg->state = PG_ACTIVE;
	pg->active_epoch = d->epoch;
	free(c);
	dist_pg_kick(d, pg);
}

/*
 * One answer of a peering phase arrived: remember the first error; once the last is in, a
 * stale peering is dropped and a failed one retried. Returns true when the phase completed
 * cleanly and the caller moves on.
 */
static bool peer_phase_answer(struct peer_ctx *c, int err)
{
	if (err && !c->err) {
		c->err = err;
	}
	if (--c->pending > 0) {
		return false;
	}
	if (peer_stale(c)) {
		free(c);
		return false;
	}
	if (c->err) {
		peer_retry(c, retry_ms(c->err));
		return false;
	}
	return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Catch-up: members behind the primary pull from it while the PG serves */

/*
 * A member not at the primary's version after peering (it was down, or it is new to the PG)
 * catches up in rounds while the PG serves without it: it gets no forwards, and each round is
 * a PG_RECOVER (the member pulls what changed since its version; the first round of a new
 * member is a backfill). It joins, and gets the forwards from then on, when a round leaves it
 * at the primary's version with no mutation in flight. Rounds shorten as the changes since
 * the last one shrink; once one took under CATCHUP_SHORT_MS, or after CATCHUP_ROUNDS, the next
 * holds the PG's new mutations (reads go on) so that it ends level. Before, the PG waited in
 * PEERING for every member's pull: a backfill stalled the PG's I/O for its whole length.
 */
#define CATCHUP_SHORT_MS 300
#define CATCHUP_ROUNDS   6

struct catchup {
	struct bd_dist *d;
	struct bd_pg *pg;
	uint64_t round; /* the peering this belongs to */
	uint32_t node;
	uint32_t rounds;
	bool held; /* this catch-up set pg->hold */
	uint64_t started_ms, last_ms;
	struct st_io timer;
};

static void catchup_send(struct catchup *c);

static bool catchup_stale(const struct catchup *c)
{
	return c->pg->round != c->round || c->pg->state != PG_ACTIVE ||
	       !dist_pg_behind(c->pg, c->node);
}

/* Give back a hold of ours; the parked mutations start. */
static void catchup_release(struct catchup *c)
{
	if (!c->held) {
		return;
	}
	c->held = false;
	c->d->holds--;
	if (c->pg->round == c->round) {
		c->pg->hold = false;
		dist_pg_kick(c->d, c->pg);
	}
}

static void catchup_end(struct catchup *c)
{
	catchup_release(c);
	free(c);
}

static void catchup_timer(void *arg, int res)
{
	(void)res;
	struct catchup *c = arg;
	if (c->d->stopping) {
		return;
	}
	catchup_send(c);
}

static void catchup_later(struct catchup *c, uint64_t ms)
{
	st_reactor_timer(c->d->r, &c->timer, ms, catchup_timer, c);
}

static void catchup_join(struct catchup *c)
{
	struct bd_pg *pg = c->pg;
	for (uint32_t i = 0; i < pg->nbehind; i++) {
		if (pg->behind[i] == c->node) {
			pg->behind[i] = pg->behind[--pg->nbehind];
			break;
		}
	}
	st_info("pg %u.%u: node %u caught up in %u rounds (last %lu ms%s)", pg->pool, pg->pg,
		c->node, c->rounds, (unsigned long)c->last_ms, c->held ? ", held" : "");
	if (pg->full_member == c->node) {
		st_info("pg %u.%u: node %u has room again: writes are admitted", pg->pool, pg->pg,
			c->node);
		pg->full_member = 0;
	}
	catchup_end(c);
}

static void catchup_done(void *arg, int err, struct st_frame *reply)
{
	struct catchup *c = arg;
	struct bd_pg *pg = c->pg;
	if (c->d->stopping) {
		return;
	}
	if (catchup_stale(c)) {
		catchup_end(c);
		return;
	}
	Strata__Blockd__PgInfo *pi =
		!err && reply && reply->hdr.hdr_len
			? strata__blockd__pg_info__unpack(NULL, reply->hdr.hdr_len, reply->msg)
			: NULL;
	if (!pi) {
		if (err == -ENOSPC) {
			repl_member_full(pg, c->node);
		}
		catchup_release(c);
		catchup_later(c, retry_ms(err));
		return;
	}
	uint64_t version = pi->version;
	strata__blockd__pg_info__free_unpacked(pi, NULL);
	c->rounds++;
	c->last_ms = st_now_ms() - c->started_ms;
	if (version == pg->version && dist_pg_still(pg)) {
		catchup_join(c);
		return;
	}
	if (c->held) { /* nothing could move the PG while held: the pull fell short; again */
		catchup_release(c);
		catchup_later(c, PEER_RETRY_MS);
		return;
	}
	catchup_send(c);
}

static void catchup_send(struct catchup *c)
{
	struct bd_dist *d = c->d;
	struct bd_pg *pg = c->pg;
	if (catchup_stale(c)) {
		catchup_end(c);
		return;
	}
	bool last = c->rounds >= CATCHUP_ROUNDS || (c->rounds && c->last_ms < CATCHUP_SHORT_MS);
	if (last && !c->held) {
		if (pg->hold || d->holds) { /* one held PG per node at a time: the client's queue
					     * piles up on a held PG, so two would stall it twice */
			catchup_later(c, BUSY_RETRY_MS);
			return;
		}
		pg->hold = c->held = true;
		d->holds++;
	}
	if (c->held && !dist_pg_still(pg)) { /* the last round starts once the PG stands still */
		catchup_later(c, 1);
		return;
	}
	struct st_client *cl = dist_peer(d, c->node);
	Strata__Blockd__PgRef m = STRATA__BLOCKD__PG_REF__INIT;
	m.pool_id = pg->pool;
	m.pg = pg->pg;
	m.map_epoch = d->epoch;
	m.from = d->self;
	m.to = c->node;
	c->started_ms = st_now_ms();
	if (!cl || st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_RECOVER, 0, &m.base,
				  NULL, 0, catchup_done, c) < 0) {
		catchup_release(c);
		catchup_later(c, PEER_RETRY_MS);
	}
}

static void catchup_start(struct bd_dist *d, struct bd_pg *pg, uint32_t node)
{
	struct catchup *c = calloc(1, sizeof(*c));
	if (!c) {
		recovery_peer(d, pg); /* no memory to track it: peer again later */
		return;
	}
	*c = (struct catchup){.d = d, .pg = pg, .round = pg->round, .node = node};
	catchup_send(c);
}

/* Peering is done: the PG serves, and every member not at our version catches up. */
static void peer_push(struct peer_ctx *c)
{
	struct bd_dist *d = c->d;
	struct bd_pg *pg = c->pg;
	pg->nbehind = 0;
	pg->hold = false;
	for (uint32_t i = 0; i < c->n; i++) {
		if (c->s[i].member && c->s[i].version != pg->version) {
			pg->behind[pg->nbehind++] = c->s[i].node;
		}
	}
	peer_activate(c);
	uint32_t behind[BD_MAX_R], n = pg->nbehind;
	memcpy(behind, pg->behind, sizeof(behind));
	for (uint32_t i = 0; i < n; i++) {
		catchup_start(d, pg, behind[i]);
	}
}

static void peer_pulled(void *arg, int err)
{
	struct peer_ctx *c = arg;
	if (c->d->stopping) {
		return;
	}
	if (peer_stale(c)) {
		free(c);
		return;
	}
	if (err) {
		peer_retry(c, PEER_RETRY_MS);
		return;
	}
	peer_push(c);
}

static void info_done(void *arg, int err, struct st_frame *reply)
{
	struct peer_slot *s = arg;
	struct peer_ctx *c = s->c;
	if (c->d->stopping) {
		return;
	}
	if (!err && reply) {
		Strata__Blockd__PgInfo *pi =
			strata__blockd__pg_info__unpack(NULL, reply->hdr.hdr_len, reply->msg);
		if (pi) {
			s->version = pi->version;
			strata__blockd__pg_info__free_unpacked(pi, NULL);
		} else {
			err = -EBADMSG;
		}
	}
	if (!peer_phase_answer(c, err)) {
		return;
	}
	/* The most advanced member; ties go to us (no copy). */
	struct peer_slot *best = NULL;
	uint64_t bv = c->pg->version;
	for (uint32_t i = 0; i < c->n; i++) {
		if (c->s[i].version > bv) {
			bv = c->s[i].version;
			best = &c->s[i];
		}
	}
	if (best) {
		pull_pg(c->d, c->pg, best->node, peer_pulled, c);
	} else {
		peer_push(c);
	}
}

static void peer_begin(struct peer_ctx *c)
{
	struct bd_dist *d = c->d;
	struct bd_pg *pg = c->pg;
	if (!dist_pg_still(pg) || pg->pulling) {
		peer_retry(c, BUSY_RETRY_MS);
		return;
	}
	/* Every other up node, not only the members: when the acting set moved to nodes that
	 * never held the PG (a node added to an R=1 pool, or to every member's place at once), the
	 * data is on former members, now strays, and the most advanced of all is the source. */
	c->n = 0;
	for (uint32_t i = 1; i < pg->nacting; i++) {
		c->s[c->n++] = (struct peer_slot){.c = c, .node = pg->acting[i], .member = true};
	}
	for (size_t i = 0; i < d->nplace && c->n < BD_MAX_NODES; i++) {
		uint32_t id = d->place[i].id;
		if (d->place[i].up && !dist_pg_acts(pg, id)) {
			c->s[c->n++] = (struct peer_slot){.c = c, .node = id};
		}
	}
	c->err = 0;
	c->pending = 1;
	Strata__Blockd__PgRef m = STRATA__BLOCKD__PG_REF__INIT;
	m.pool_id = pg->pool;
	m.pg = pg->pg;
	m.map_epoch = d->epoch;
	m.from = d->self;
	for (uint32_t i = 0; i < c->n; i++) {
		struct st_client *cl = dist_peer(d, c->s[i].node);
		if (!cl) {
			c->err = -ENOTCONN;
			continue;
		}
		c->pending++;
		m.to = c->s[i].node;
		if (st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_INFO, 0, &m.base,
				   NULL, 0, info_done, &c->s[i]) < 0) {
			c->pending--;
			c->err = -ENOTCONN;
		}
	}
	if (--c->pending == 0) {
		/* No member asked (none, or none reachable). */
		if (c->err) {
			peer_retry(c, PEER_RETRY_MS);
		} else {
			peer_push(c);
		}
	}
}

void recovery_peer(struct bd_dist *d, struct bd_pg *pg)
{
	pg->state = PG_PEERING;
	pg->round++;
	pg->nbehind = 0;
	pg->hold = false;
	struct peer_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		return; /* the next map retries */
	}
	c->d = d;
	c->pg = pg;
	c->round = pg->round;
	peer_retry(c, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Source side */

static void reply_info(struct bd_dist *d, struct bd_pg *pg, struct bd_reply *rp)
{
	Strata__Blockd__PgInfo pi = STRATA__BLOCKD__PG_INFO__INIT;
	pi.version = pg->version;
	/* Active for strays only once every member has caught up: until then a stray's copy may
	 * be one of the few. */
	pi.active =
		pg->state == PG_ACTIVE && !pg->nbehind && pg->nacting && pg->acting[0] == d->self;
	bd_reply_send(rp, 0, &pi.base, NULL, 0);
}

/* Keep the objects after (af, ao) in (family, object) order, at most max (0: all) of them; sorts
 * objs. Returns how many are kept (moved to the front); *more if any after them were dropped. */
static long list_page(uint64_t *objs, long n, uint64_t af, uint64_t ao, uint32_t max, bool *more)
{
	*more = false;
	if (max == 0 && af == 0 && ao == 0) {
		return n;
	}
	n = (long)bd_pairs_sort_unique(objs, (size_t)n);
	long from = 0;
	while (from < n &&
	       (objs[2 * from] < af || (objs[2 * from] == af && objs[2 * from + 1] <= ao))) {
		from++;
	}
	long k = n - from;
	if (max && k > (long)max) {
		k = (long)max;
		*more = true;
	}
	memmove(objs, objs + 2 * from, (size_t)k * 2 * sizeof(uint64_t));
	return k;
}

/* A PG_LIST answer, one page of objs (taken; n < 0 never reaches here): the objects after the
 * request's cursor, and on the first page the PG's compare-and-write outcomes. */
struct list_req {
	uint64_t version, after_family, after_object;
	uint32_t max;
	bool first, full;
};

static void list_reply(struct bd_dist *d, struct bd_pg *pg, const struct list_req *q,
		       uint64_t *objs, long n, struct bd_reply *rp)
{
	Strata__Blockd__PgList l = STRATA__BLOCKD__PG_LIST__INIT;
	l.version = q->version;
	l.full = q->full;
	if (n > 0) {
		bool more;
		n = list_page(objs, n, q->after_family, q->after_object, q->max, &more);
		l.more = more;
	}
	if (n >= LIST_SWITCH_OBJECTS) {
		/* Many object exports follow: each would sort the memtable (bd_flush_memtable).
		 * A few are cheaper than the flush and the small L0 file of a switch, which a
		 * catch-up's short rounds would otherwise cause by the dozen. */
		bd_flush_memtable(d->e);
	}
	Strata__Blockd__ObjRef *refs = calloc(n ? (size_t)n : 1, sizeof(*refs));
	Strata__Blockd__ObjRef **ptrs = calloc(n ? (size_t)n : 1, sizeof(*ptrs));
	struct pg_filter f;
	struct bd_idem_done *done = NULL;
	long ndone =
		q->first && pg_filter_init(&f, d, pg) ? bd_idem_export(d->e, in_pg, &f, &done) : 0;
	Strata__Blockd__IdemDone *dv = calloc(ndone > 0 ? (size_t)ndone : 1, sizeof(*dv));
	Strata__Blockd__IdemDone **dp = calloc(ndone > 0 ? (size_t)ndone : 1, sizeof(*dp));
	if (!refs || !ptrs || ndone < 0 || !dv || !dp) {
		bd_reply_send(rp, -ENOMEM, NULL, NULL, 0);
	} else {
		for (long i = 0; i < ndone; i++) {
			strata__blockd__idem_done__init(&dv[i]);
			dv[i].client_id = done[i].client_id;
			dv[i].seq = done[i].seq;
			dv[i].family = done[i].family;
			dv[i].object = done[i].object;
			dp[i] = &dv[i];
		}
		l.n_done = (size_t)(ndone > 0 ? ndone : 0);
		l.done = dp;
		for (long i = 0; i < n; i++) {
			strata__blockd__obj_ref__init(&refs[i]);
			refs[i].family = objs[2 * i];
			refs[i].object = objs[2 * i + 1];
			ptrs[i] = &refs[i];
		}
		l.n_objects = (size_t)n;
		l.objects = ptrs;
		bd_reply_send(rp, 0, &l.base, NULL, 0);
	}
	free(refs);
	free(ptrs);
	free(done);
	free(dv);
	free(dp);
	free(objs);
}

/* A full list waits for the node's objects, listed off the reactor thread. */
struct list_job {
	struct bd_dist *d;
	struct bd_pg *pg;
	uint64_t epoch;
	struct list_req q;
	struct bd_reply *rp;
};

static void list_listed(void *arg, int err, uint64_t *objs, long n)
{
	struct list_job *lj = arg;
	struct bd_dist *d = lj->d;
	if (d->stopping) {
		free(objs);
		free(lj);
		return;
	}
	if (!err && d->epoch != lj->epoch) {
		err = -EAGAIN; /* the map moved meanwhile: the puller asks again */
	}
	if (!err) {
		n = pg_keep(d, lj->pg, objs, n);
		err = n < 0 ? (int)n : 0;
	}
	if (err) {
		free(objs);
		bd_reply_send(lj->rp, err, NULL, NULL, 0);
	} else {
		list_reply(d, lj->pg, &lj->q, objs, n, lj->rp);
	}
	free(lj);
}

static void handle_list(struct bd_dist *d, struct bd_pg *pg, const Strata__Blockd__PgListRequest *m,
			struct bd_reply *rp)
{
	uint64_t since = m->since;
	/* The version is the PG's now, before any listing: whatever a full list finds beyond it
	 * is the next pull's to copy again. */
	struct list_req q = {
		.version = pg->version,
		.after_family = m->after_family,
		.after_object = m->after_object,
		.max = m->max_objects < LIST_PAGE_MAX ? m->max_objects : LIST_PAGE_MAX,
		.first = m->after_family == 0 && m->after_object == 0,
	};
	uint64_t *objs = NULL;
	long n = 0;
	if (since != pg->version) {
		n = bd_pglog_since(&pg->log, since, &objs);
		if (n == -ENOMEM) {
			bd_reply_send(rp, -ENOMEM, NULL, NULL, 0);
			return;
		}
	}
	if (n != -ENOENT) {
		list_reply(d, pg, &q, objs, n, rp);
		return;
	}
	free(objs);
	q.full = true;
	struct list_job *lj = calloc(1, sizeof(*lj));
	int err = lj ? 0 : -ENOMEM;
	if (lj) {
		*lj = (struct list_job){.d = d, .pg = pg, .epoch = d->epoch, .q = q, .rp = rp};
		err = bd_object_list_async(d->e, list_listed, lj);
	}
	if (err) {
		free(lj);
		bd_reply_send(rp, err, NULL, NULL, 0);
	}
}

/* The page is read (through the ring: the reactor serves clients meanwhile): reply with it. */
static void obj_get_read(void *arg, int err, struct bd_xobj *x, bool more)
{
	struct bd_reply *rp = arg;
	if (err) {
		bd_reply_send(rp, err, NULL, NULL, 0);
		return;
	}
	Strata__Blockd__SegList *sl = calloc(x->nlists ? x->nlists : 1, sizeof(*sl));
	Strata__Blockd__SegList **ptrs = calloc(x->nlists ? x->nlists : 1, sizeof(*ptrs));
	uint8_t *enc = malloc((size_t)(x->nlists ? x->nlists : 1) * BD_EXTMAP_MAX_ENC);
	if (!sl || !ptrs || !enc) {
		bd_reply_send(rp, -ENOMEM, NULL, NULL, 0);
	} else {
		for (uint32_t i = 0; i < x->nlists; i++) {
			strata__blockd__seg_list__init(&sl[i]);
			sl[i].layer = x->lists[i].layer;
			sl[i].seg = x->lists[i].seg;
			uint8_t *p = enc + (size_t)i * BD_EXTMAP_MAX_ENC;
			sl[i].map.data = p;
			sl[i].map.len = bd_extmap_encode(&x->lists[i].map, p);
			ptrs[i] = &sl[i];
		}
		Strata__Blockd__ObjData od = STRATA__BLOCKD__OBJ_DATA__INIT;
		od.n_lists = x->nlists;
		od.lists = ptrs;
		od.bad_blocks = x->bad_blocks;
		od.more = more;
		uint8_t *data = x->data;
		x->data = NULL;
		bd_reply_send(rp, 0, &od.base, data, (size_t)x->ndata * BD_BLOCK);
	}
	free(sl);
	free(ptrs);
	free(enc);
}

static void handle_obj_get(struct bd_dist *d, const Strata__Blockd__ObjRequest *m,
			   struct bd_reply *rp)
{
	/* A paged pull (fetch_object) gives the puller's budget, served within what a frame
	 * carries; page_bytes 0 (an older puller) asks for the whole object. */
	uint32_t blocks = UINT32_MAX;
	if (m->page_bytes > 0) {
		blocks = (m->page_bytes < SERVE_PAGE_MAX ? m->page_bytes : SERVE_PAGE_MAX) /
			 BD_BLOCK;
	}
	uint64_t after_layer = m->page_bytes > 0 ? m->after_layer : 0;
	uint32_t after_seg = m->page_bytes > 0 ? m->after_seg : 0;
	int rc = bd_object_export_async(d->e, m->family, m->object, after_layer, after_seg, blocks,
					obj_get_read, rp);
	if (rc) {
		bd_reply_send(rp, rc, NULL, NULL, 0);
	}
}

/* A repair installs the object with its family's pool ('F' key): the pool must exist, and
 * a family already known here stays in its pool (a wrong one would make every object of
 * the family look misplaced, and the stray scan would delete them). */
static bool repair_pool_ok(struct bd_dist *d, uint32_t pool, uint64_t family)
{
	uint32_t known = dist_family_pool(d, family);
	return family != 0 && dist_pool(d, pool) != NULL && (known == 0 || known == pool);
}

static void recover_pulled(void *arg, int err)
{
	struct bd_reply *rp = arg;
	bd_reply_send(rp, err, NULL, NULL, 0);
}

struct recover_req {
	struct bd_pg *pg;
	struct bd_reply *rp;
};

/* PG_RECOVER answered: with the version the pull reached (the primary's catch-up reads it). */
static void recover_pg_pulled(void *arg, int err)
{
	struct recover_req *q = arg;
	Strata__Blockd__PgInfo pi = STRATA__BLOCKD__PG_INFO__INIT;
	pi.version = q->pg->version;
	bd_reply_send(q->rp, err, err ? NULL : &pi.base, NULL, 0);
	free(q);
}

void recovery_handle(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
{
	uint16_t type = f->hdr.type;
	int rc = -EINVAL;
	switch (type) {
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_INFO:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_RECOVER: {
		Strata__Blockd__PgRef *m =
			strata__blockd__pg_ref__unpack(NULL, f->hdr.hdr_len, f->msg);
		struct bd_pg *pg = NULL;
		rc = m ? dist_peer_check(d, m->map_epoch, m->to) : -EINVAL;
		if (!rc && !(pg = dist_pg(d, m->pool_id, m->pg))) {
			rc = -ESTALE;
		}
		if (!rc && type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_INFO) {
			reply_info(d, pg, rp);
		} else if (!rc) {
			struct recover_req *q = malloc(sizeof(*q));
			if (q) {
				*q = (struct recover_req){pg, rp};
				pull_pg(d, pg, m->from, recover_pg_pulled, q);
			} else {
				rc = -ENOMEM;
			}
		}
		if (m) {
			strata__blockd__pg_ref__free_unpacked(m, NULL);
		}
		break;
	}
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_LIST: {
		Strata__Blockd__PgListRequest *m =
			strata__blockd__pg_list_request__unpack(NULL, f->hdr.hdr_len, f->msg);
		struct bd_pg *pg = NULL;
		rc = m ? dist_peer_check(d, m->map_epoch, m->to) : -EINVAL;
		if (!rc && !(pg = dist_pg(d, m->pool_id, m->pg))) {
			rc = -ESTALE;
		}
		if (!rc) {
			handle_list(d, pg, m, rp);
		}
		if (m) {
			strata__blockd__pg_list_request__free_unpacked(m, NULL);
		}
		break;
	}
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_GET:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_REPAIR: {
		Strata__Blockd__ObjRequest *m =
			strata__blockd__obj_request__unpack(NULL, f->hdr.hdr_len, f->msg);
		rc = m ? dist_peer_check(d, m->map_epoch, m->to) : -EINVAL;
		if (!rc && type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_REPAIR &&
		    !repair_pool_ok(d, m->pool_id, m->family)) {
			rc = -EINVAL;
		}
		if (!rc && type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_GET) {
			handle_obj_get(d, m, rp);
		} else if (!rc) {
			recovery_pull_object(d, m->from, m->pool_id, m->family, m->object,
					     recover_pulled, rp);
		}
		if (m) {
			strata__blockd__obj_request__free_unpacked(m, NULL);
		}
		break;
	}
	default:
		rc = -EOPNOTSUPP;
	}
	if (rc) {
		bd_reply_send(rp, rc, NULL, NULL, 0);
	}
	st_frame_release(f);
}

/* ------------------------------------------------------------------------------------------ */
/* Strays */

/* Objects removed per reactor turn: each is an index commit on the reactor thread, so a PG of
 * thousands of objects goes in bounded steps with client I/O between them. STRATA_STRAY_STEP
 * sets a smaller step (tests, so that a small PG takes several). */
#define STRAY_STEP 32

static long stray_step(void)
{
	const char *env = getenv("STRATA_STRAY_STEP");
	long step = env ? strtol(env, NULL, 10) : 0;
	return step > 0 && step < STRAY_STEP ? step : STRAY_STEP;
}

struct stray_ctx {
	struct bd_dist *d;
	struct bd_pg *pg;
	uint64_t epoch;
	uint64_t *objs; /* the PG's objects here, as (family, object) pairs */
	long n, next, removed, steps;
};

static void stray_end(struct stray_ctx *sc)
{
	sc->d->stray_busy = false;
	free(sc->objs);
	free(sc);
}

/* Still ours to remove: nothing changed since the primary said the PG was active. */
static bool stray_still(const struct stray_ctx *sc)
{
	const struct bd_dist *d = sc->d;
	return !d->stopping && d->epoch == sc->epoch && sc->pg->stray && !sc->pg->pulling;
}

static void stray_remove_step(void *arg)
{
	struct stray_ctx *sc = arg;
	struct bd_dist *d = sc->d;
	struct bd_pg *pg = sc->pg;
	if (!stray_still(sc)) {
		stray_end(sc);
		return;
	}
	struct bd_xobj none = {0};
	sc->steps++;
	for (long end = sc->next + stray_step(); sc->next < sc->n && sc->next < end; sc->next++) {
		if (bd_object_install(d->e, sc->objs[2 * sc->next], sc->objs[2 * sc->next + 1],
				      &none, NULL, 0) == 0) {
			sc->removed++;
		}
	}
	if (sc->next < sc->n && st_reactor_post(d->r, stray_remove_step, sc) == 0) {
		return; /* the rest after this turn's completions */
	}
	if (sc->removed == sc->n) {
		uint8_t vk[9], vv[8];
		dist_vkey(vk, pg->pool, pg->pg);
		dist_be64(vv, 0);
		struct bd_xkv kv = {vk, 9, vv, 8};
		if (bd_engine_put_raw(d->e, &kv, 1, false) == 0) {
			pg->version = 0;
			dist_log_reset(pg);
			pg->stray = false;
		}
	}
	st_info("pg %u.%u: no longer a member; removed %ld objects in %ld steps", pg->pool, pg->pg,
		sc->removed, sc->steps);
	stray_end(sc); /* anything not removed is tried again from a later tick */
}

/* The node's objects are listed (off the reactor thread): remove the PG's. */
static void stray_listed(void *arg, int err, uint64_t *objs, long n)
{
	struct stray_ctx *sc = arg;
	sc->objs = objs;
	if (err || !stray_still(sc)) {
		stray_end(sc);
		return;
	}
	sc->n = pg_keep(sc->d, sc->pg, objs, n);
	if (sc->n < 0) {
		stray_end(sc);
		return;
	}
	stray_remove_step(sc);
}

static void stray_info_done(void *arg, int err, struct st_frame *reply)
{
	struct stray_ctx *sc = arg;
	struct bd_dist *d = sc->d;
	if (d->stopping) {
		stray_end(sc);
		return;
	}
	bool active = false;
	if (!err && reply) {
		Strata__Blockd__PgInfo *pi =
			strata__blockd__pg_info__unpack(NULL, reply->hdr.hdr_len, reply->msg);
		active = pi && pi->active;
		if (pi) {
			strata__blockd__pg_info__free_unpacked(pi, NULL);
		}
	}
	if (!active || !stray_still(sc)) {
		stray_end(sc);
		return;
	}
	/* The new acting set is complete at our epoch: our copy is surplus. stray_busy stays
	 * set while the listing and the removal steps run. */
	if (bd_object_list_async(d->e, stray_listed, sc) != 0) {
		stray_end(sc);
	}
}

void recovery_tick(struct bd_dist *d)
{
	if (d->stray_busy || !d->map || !d->self) {
		return;
	}
	for (size_t pi = 0; pi < d->npools; pi++) {
		struct dist_pool *p = &d->pools[pi];
		for (uint32_t g = 0; g < p->pg_count; g++) {
			struct bd_pg *pg = &p->pgs[g];
			if (!pg->stray || pg->pulling || !pg->nacting) {
				continue;
			}
			struct st_client *cl = dist_peer(d, pg->acting[0]);
			struct stray_ctx *sc = calloc(1, sizeof(*sc));
			if (!cl || !sc) {
				free(sc);
				continue;
			}
			*sc = (struct stray_ctx){.d = d, .pg = pg, .epoch = d->epoch};
			Strata__Blockd__PgRef m = STRATA__BLOCKD__PG_REF__INIT;
			m.pool_id = pg->pool;
			m.pg = pg->pg;
			m.map_epoch = d->epoch;
			m.from = d->self;
			m.to = pg->acting[0];
			if (st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_INFO, 0,
					   &m.base, NULL, 0, stray_info_done, sc) == 0) {
				d->stray_busy = true;
				return; /* one at a time */
			}
			free(sc);
		}
	}
}
