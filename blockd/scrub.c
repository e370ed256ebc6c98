/*
 * Scrub: compare every object of the PGs this node is primary of with its other members.
 *
 *   BLOCKD_SCRUB {pool} --> objects of our active PGs (index scan) --> one object at a time:
 *     hold the object (no mutation of it admitted) until none of it runs --> our digest +
 *     OBJ_DIGEST from every member (the PG's other objects go on meanwhile)
 *     --> all equal and no block failing its own crc: clean
 *     --> otherwise a mismatch: the good copy is a member whose every block matches its own
 *         stored crc32c (the most common such digest, ours on a tie); every other member
 *         re-copies the object from it (OBJ_REPAIR, or a local pull)
 *
 * With max_mbps (`strata scrub --max-mbps N`) the next object starts only once the data our
 * digests read is within N MB/s of the scrub's start; every member reads as much as we do, in
 * step, so the limit holds on each node. The PG waits only while its object is compared.
 *
 * A digest covers each list's layer and segment, every block's state, and the crc32c of the
 * data as read (not as stored), so both silent corruption and diverged replicas show up.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd.pb-c.h"
#include "common/log.h"
#include "dist_int.h"

#define SCRUB_BUSY_MS 5

struct scrub_ctx;
struct scrub_member {
	struct scrub_ctx *c;
	uint32_t node;
	uint64_t digest;
	uint32_t bad, lists;
	int err;
	bool repair;
};

struct scrub_ctx {
	struct bd_dist *d;
	struct bd_reply *rp;
	uint32_t pool;
	bool repair;
	uint64_t *objs;
	size_t nobjs, next;
	struct bd_pg *pg;       /* of the current object */
	struct bd_pg *draining; /* holds an object of it (scrub_hold), waiting or comparing */
	uint32_t n;
	struct scrub_member m[BD_MAX_R];
	int pending, err;
	struct st_io timer;
	uint32_t max_mbps; /* 0: no limit */
	uint64_t start_ms; /* when the scrub started */
	uint64_t bytes;    /* data our digests read so far (the members read as much) */
	uint64_t pgs, mismatches, repaired, errors;
};

static void scrub_next(struct scrub_ctx *c);
static void scrub_timer(void *arg, int res);

static bool primary_filter(void *arg, uint64_t family, uint64_t object)
{
	struct scrub_ctx *c = arg;
	struct bd_dist *d = c->d;
	if (dist_family_pool(d, family) != c->pool) {
		return false;
	}
	struct dist_pool *p = dist_pool(d, c->pool);
	struct bd_pg *pg = &p->pgs[st_place_pg(family, object, p->pg_count)];
	return pg->state == PG_ACTIVE && pg->nacting && pg->acting[0] == d->self;
}

static void undrain(struct scrub_ctx *c);

static void scrub_finish(struct scrub_ctx *c)
{
	if (c->draining) {
		undrain(c);
	}
	Strata__Blockd__ScrubReply rep = STRATA__BLOCKD__SCRUB_REPLY__INIT;
	rep.pgs = c->pgs;
	rep.objects = c->nobjs;
	rep.mismatches = c->mismatches;
	rep.repaired = c->repaired;
	rep.errors = c->errors;
	rep.bytes = c->bytes;
	st_info("scrub of pool %u: %lu PGs, %zu objects, %lu mismatches, %lu repaired, %lu errors, "
		"%lu MiB read in %lu ms",
		c->pool, (unsigned long)c->pgs, c->nobjs, (unsigned long)c->mismatches,
		(unsigned long)c->repaired, (unsigned long)c->errors,
		(unsigned long)(c->bytes >> 20), (unsigned long)(st_now_ms() - c->start_ms));
	bd_reply_send(c->rp, 0, &rep.base, NULL, 0);
	free(c->objs);
	free(c);
}

static void object_done(struct scrub_ctx *c)
{
	struct bd_dist *d = c->d;
	struct bd_pg *pg = c->pg;
	c->pg = NULL;
	c->draining = NULL;
	pg->scrub_comparing = false;
	pg->scrub_hold = false;
	dist_pg_kick(d, pg);
	c->next++;
	if (c->max_mbps > 0) {
		/* Pace: the next object starts once the data read so far is within the rate. */
		uint64_t due = c->start_ms + c->bytes / ((uint64_t)c->max_mbps * 1000);
		uint64_t now = st_now_ms();
		if (due > now) {
			st_reactor_timer(d->r, &c->timer, due - now, scrub_timer, c);
			return;
		}
	}
	scrub_next(c);
}

static void repair_done(void *arg, int err, struct st_frame *reply);

static void repair_local_done(void *arg, int err)
{
	repair_done(arg, err, NULL);
}

static void repair_done(void *arg, int err, struct st_frame *reply)
{
	struct scrub_member *sm = arg;
	struct scrub_ctx *c = sm->c;
	(void)reply;
	if (c->d->stopping) {
		return;
	}
	if (err && !c->err) {
		c->err = err;
	}
	if (--c->pending > 0) {
		return;
	}
	if (c->err) {
		c->errors++;
	} else {
		c->repaired++;
	}
	object_done(c);
}

/* Members' digests are in: compare, and repair from the good copy. */
static void compare(struct scrub_ctx *c)
{
	struct bd_dist *d = c->d;
	uint64_t fam = c->objs[2 * c->next], obj = c->objs[2 * c->next + 1];
	bool same = true;
	for (uint32_t i = 0; i < c->n; i++) {
		if (c->m[i].err) {
			c->errors++;
			object_done(c);
			return;
		}
		same &= c->m[i].digest == c->m[0].digest && c->m[i].bad == 0;
	}
	if (same) {
		object_done(c);
		return;
	}
	c->mismatches++;
	/* The good copy: self-consistent, the most common such digest, earliest on a tie. */
	int good = -1, best = 0;
	for (uint32_t i = 0; i < c->n; i++) {
		if (c->m[i].bad) {
			continue;
		}
		int votes = 0;
		for (uint32_t j = 0; j < c->n; j++) {
			votes += c->m[j].bad == 0 && c->m[j].digest == c->m[i].digest;
		}
		if (votes > best) {
			best = votes;
			good = (int)i;
		}
	}
	st_warn("scrub: object %lu/%lu differs between members%s", (unsigned long)fam,
		(unsigned long)obj, good < 0 ? " and no copy is intact" : "");
	if (good < 0 || !c->repair) {
		if (good < 0) {
			c->errors++;
		}
		object_done(c);
		return;
	}
	c->err = 0;
	c->pending = 1;
	for (uint32_t i = 0; i < c->n; i++) {
		struct scrub_member *sm = &c->m[i];
		if (sm->bad == 0 && sm->digest == c->m[good].digest) {
			continue;
		}
		st_info("scrub: repairing object %lu/%lu on node %u from node %u",
			(unsigned long)fam, (unsigned long)obj, sm->node, c->m[good].node);
		c->pending++;
		if (sm->node == d->self) {
			recovery_pull_object(d, c->m[good].node, c->pool, fam, obj,
					     repair_local_done, sm);
			continue;
		}
		struct st_client *cl = dist_peer(d, sm->node);
		Strata__Blockd__ObjRequest m = STRATA__BLOCKD__OBJ_REQUEST__INIT;
		m.pool_id = c->pool;
		m.family = fam;
		m.object = obj;
		m.map_epoch = d->epoch;
		m.from = c->m[good].node;
		m.to = sm->node;
		if (!cl || st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_REPAIR, 0,
					  &m.base, NULL, 0, repair_done, sm) < 0) {
			c->pending--;
			c->err = -ENOTCONN;
		}
	}
	repair_done(&c->m[0], 0, NULL);
}

static void digest_done(void *arg, int err, struct st_frame *reply)
{
	struct scrub_member *sm = arg;
	struct scrub_ctx *c = sm->c;
	if (c->d->stopping) {
		return;
	}
	if (!err && reply) {
		Strata__Blockd__ObjDigest *od =
			strata__blockd__obj_digest__unpack(NULL, reply->hdr.hdr_len, reply->msg);
		if (od) {
			sm->digest = od->digest;
			sm->bad = od->bad_blocks;
			sm->lists = od->lists;
			strata__blockd__obj_digest__free_unpacked(od, NULL);
		} else {
			err = -EBADMSG;
		}
	}
	sm->err = err;
	if (--c->pending == 0) {
		compare(c);
	}
}

/* Our own copy's digest (digest.c), counted like a member's reply. */
static void local_digest_done(void *arg, int err, uint64_t digest, uint32_t bad, uint32_t nlists,
			      uint32_t nblocks)
{
	struct scrub_member *sm = arg;
	struct scrub_ctx *c = sm->c;
	if (c->d->stopping) {
		return;
	}
	c->bytes += (uint64_t)nblocks * BD_BLOCK;
	sm->err = err;
	sm->digest = digest;
	sm->bad = bad;
	sm->lists = nlists;
	if (--c->pending == 0) {
		compare(c);
	}
}

static void scrub_timer(void *arg, int res)
{
	(void)res;
	struct scrub_ctx *c = arg;
	if (!c->d->stopping) {
		scrub_next(c);
	}
}

static bool object_running(const struct bd_pg *pg, uint64_t fam, uint64_t obj)
{
	const struct bd_dreq *r;
	TAILQ_FOREACH(r, &pg->running, link)
	{
		if (r->q.family == fam && r->q.object == obj) {
			return true;
		}
	}
	return false;
}

static void undrain(struct scrub_ctx *c)
{
	struct bd_pg *pg = c->draining;
	c->draining = NULL;
	pg->scrub_hold = false;
	dist_pg_kick(c->d, pg);
}

static void scrub_next(struct scrub_ctx *c)
{
	struct bd_dist *d = c->d;
	if (c->next >= c->nobjs) {
		scrub_finish(c);
		return;
	}
	uint64_t fam = c->objs[2 * c->next], obj = c->objs[2 * c->next + 1];
	struct dist_pool *p = dist_pool(d, c->pool);
	struct bd_pg *pg = &p->pgs[st_place_pg(fam, obj, p->pg_count)];
	if (c->draining && (c->draining != pg || pg->state != PG_ACTIVE ||
			    pg->scrub_family != fam || pg->scrub_object != obj)) {
		undrain(c);
	}
	if (pg->state != PG_ACTIVE || pg->acting[0] != d->self) {
		c->next++; /* the map moved on: not ours to scrub any more */
		scrub_next(c);
		return;
	}
	/* Admit no mutation of the object from now on, and compare once none of it runs (a
	 * running one is on the members until it finishes here). A pull or peering into the PG
	 * waits meanwhile: the PG is not still while its copies are compared. */
	if (pg->scrub_hold && c->draining != pg) {
		/* Another scrub's object in this PG: one at a time. */
		st_reactor_timer(d->r, &c->timer, SCRUB_BUSY_MS, scrub_timer, c);
		return;
	}
	pg->scrub_hold = true;
	pg->scrub_family = fam;
	pg->scrub_object = obj;
	c->draining = pg;
	if (pg->pulling || object_running(pg, fam, obj)) {
		st_reactor_timer(d->r, &c->timer, SCRUB_BUSY_MS, scrub_timer, c);
		return;
	}
	pg->scrub_comparing = true;
	c->pg = pg;
	c->n = 0;
	c->pending = 1;
	for (uint32_t i = 0; i < pg->nacting; i++) {
		if (i == 0 ||
		    !dist_pg_behind(pg, pg->acting[i])) { /* catching up: not a copy yet */
			c->m[c->n++] = (struct scrub_member){.c = c, .node = pg->acting[i]};
		}
	}
	c->pending++;
	c->m[0].err = bd_object_digest(d->e, fam, obj, local_digest_done, &c->m[0]);
	if (c->m[0].err) {
		c->pending--;
	}
	Strata__Blockd__ObjRequest m = STRATA__BLOCKD__OBJ_REQUEST__INIT;
	m.pool_id = c->pool;
	m.family = fam;
	m.object = obj;
	m.map_epoch = d->epoch;
	m.from = d->self;
	for (uint32_t i = 1; i < c->n; i++) {
		struct st_client *cl = dist_peer(d, c->m[i].node);
		c->pending++;
		m.to = c->m[i].node;
		if (!cl || st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_DIGEST, 0,
					  &m.base, NULL, 0, digest_done, &c->m[i]) < 0) {
			c->pending--;
			c->m[i].err = -ENOTCONN;
		}
	}
	if (--c->pending == 0) {
		compare(c);
	}
}

/* A member's digest for the primary's scrub: the reply goes once the data is read. */
static void digest_replied(void *arg, int err, uint64_t digest, uint32_t bad, uint32_t nlists,
			   uint32_t nblocks)
{
	(void)nblocks;
	struct bd_reply *rp = arg;
	Strata__Blockd__ObjDigest od = STRATA__BLOCKD__OBJ_DIGEST__INIT;
	od.digest = digest;
	od.bad_blocks = bad;
	od.lists = nlists;
	bd_reply_send(rp, err, err ? NULL : &od.base, NULL, 0);
}

static void handle_digest(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
{
	Strata__Blockd__ObjRequest *m =
		strata__blockd__obj_request__unpack(NULL, f->hdr.hdr_len, f->msg);
	int rc = m ? dist_peer_check(d, m->map_epoch, m->to) : -EINVAL;
	if (!rc) {
		rc = bd_object_digest(d->e, m->family, m->object, digest_replied, rp);
	}
	if (rc) {
		bd_reply_send(rp, rc, NULL, NULL, 0);
	}
	if (m) {
		strata__blockd__obj_request__free_unpacked(m, NULL);
	}
}

/* The node's objects are listed (off the reactor thread): scrub those of our active PGs. */
static void scrub_listed(void *arg, int err, uint64_t *objs, long n)
{
	struct scrub_ctx *c = arg;
	if (c->d->stopping) {
		free(objs);
		free(c);
		return;
	}
	if (err) {
		free(objs);
		bd_reply_send(c->rp, err, NULL, NULL, 0);
		free(c);
		return;
	}
	c->objs = objs;
	c->nobjs = bd_pairs_keep(objs, (size_t)n, primary_filter, c);
	scrub_next(c);
}

void scrub_handle(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
{
	if (f->hdr.type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_DIGEST) {
		handle_digest(d, f, rp);
		st_frame_release(f);
		return;
	}
	Strata__Blockd__ScrubRequest *m =
		strata__blockd__scrub_request__unpack(NULL, f->hdr.hdr_len, f->msg);
	st_frame_release(f);
	int rc = m ? dist_epoch_check(d, m->map_epoch) : -EINVAL;
	struct dist_pool *p = NULL;
	if (!rc && !(p = dist_pool(d, m->pool_id))) {
		rc = -ENOENT;
	}
	struct scrub_ctx *c = NULL;
	if (!rc && !(c = calloc(1, sizeof(*c)))) {
		rc = -ENOMEM;
	}
	if (rc) {
		bd_reply_send(rp, rc, NULL, NULL, 0);
		if (m) {
			strata__blockd__scrub_request__free_unpacked(m, NULL);
		}
		return;
	}
	c->d = d;
	c->rp = rp;
	c->pool = m->pool_id;
	c->repair = m->repair;
	c->max_mbps = m->max_mbps;
	c->start_ms = st_now_ms();
	strata__blockd__scrub_request__free_unpacked(m, NULL);
	for (uint32_t g = 0; g < p->pg_count; g++) {
		c->pgs += p->pgs[g].state == PG_ACTIVE && p->pgs[g].acting[0] == d->self;
	}
	int lrc = bd_object_list_async(d->e, scrub_listed, c);
	if (lrc) {
		bd_reply_send(rp, lrc, NULL, NULL, 0);
		free(c);
	}
}
