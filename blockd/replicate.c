/*
 * Primary-copy replication.
 *
 *   client mutation --fence--> pg->waiters (FIFO) --one at a time per PG-->
 *      version = next(pg), prev = pg->version
 *      local engine op (WriteBatch carries 'V' = version)  \
 *      REPL_WRITE to every other acting member, in parallel  >--all answered--> reply
 *      (the local op is submitted first: one it refuses at once is not forwarded; one that
 *       fails later while members applied it sends the PG back to peering, which pulls the
 *       members' version here, because the next mutation would reuse that version number)
 *      (CAW: local first; the forward is the plain write of its data, only if it matched,
 *       flagged `caw` so the replica persists the (client_id, seq) as the primary did)
 *
 * Why one mutation at a time per PG: every member then applies a PG's mutations in the same
 * order, so overlapping writes leave identical replicas, and a member's version says exactly
 * which prefix of the PG's history it holds (no holes to track after a crash). Parallelism
 * comes from the many PGs (128 by default) a queue depth spreads over.
 *
 * Versions are (epoch << 32 | n): a new primary's first write at epoch E sorts after anything
 * an old primary could have written at an older epoch, and a member that applied a write no
 * one else has (the old primary died mid-forward) is found out at peering because its version
 * is not in the new primary's log (full backfill, see recovery.c).
 *
 * A forward that fails for a transport reason, -EAGAIN (the member's map is behind) or
 * -EINPROGRESS is retried every 100 ms while our epoch is the request's. When the epoch
 * changes (a member went down, or anything else), the request fails with -ESTALE and the
 * client retries it on the new map with the same (client_id, seq): the engine's idempotency
 * table makes the retry harmless wherever it lands. A member that answers -ERANGE (its version
 * is not our prev: it missed something) sends the PG back to peering.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd.pb-c.h"
#include "common/log.h"
#include "dist_int.h"

#define FWD_RETRY_MS 100

struct bd_fwd {
	struct bd_dist *d;
	struct bd_dreq *r;
	uint32_t node;
	uint64_t epoch;
	struct st_io timer;
};

static void fwd_send(struct bd_fwd *f);

static void finish(struct bd_dist *d, struct bd_dreq *r)
{
	struct bd_pg *pg = r->pg;
	int err = r->err;
	if (r->local_ok && r->version > pg->version) {
		dist_log_append(pg, r->version, r->q.family, r->q.object);
	}
	bool repeer = false;
	if (!r->local_ok && r->fwd_applied) {
		/* Members hold version v, this node does not: the next mutation would reuse v and
		 * they would take it for a retry of this one, and skip it. Peering pulls v here. */
		st_info("pg %u.%u: a mutation failed here (%d) but not on %u members: peering "
			"again",
			pg->pool, pg->pg, err, r->fwd_applied);
		repeer = true;
	}
	if (err == -ERANGE) {
		st_info("pg %u.%u: a member missed a mutation: peering again", pg->pool, pg->pg);
		repeer = true;
		err = -EAGAIN;
	}
	free(r->fwd);
	r->fwd = NULL;
	pg->busy = false;
	r->cb(r->cb_arg, err); /* may free r */
	if (repeer && pg->state == PG_ACTIVE) {
		recovery_peer(d, pg);
	}
	repl_start_next(d, pg);
}

static void put_done(struct bd_dist *d, struct bd_dreq *r, int err)
{
	if (err && !r->err) {
		r->err = err;
	}
	if (--r->pending == 0) {
		finish(d, r);
	}
}

static void fwd_retry_fired(void *arg, int res)
{
	struct bd_fwd *f = arg;
	(void)res;
	fwd_send(f);
}

static bool retriable(int err)
{
	switch (err) {
	case -ECONNRESET:
	case -ECANCELED:
	case -ENOTCONN:
	case -ECONNREFUSED:
	case -EHOSTDOWN:
	case -EHOSTUNREACH:
	case -ETIMEDOUT:
	case -EPIPE:
	case -EAGAIN:
	case -EINPROGRESS:
	case -ESHUTDOWN: /* the node is stopping: another serves it next */
	case -ESTALE:    /* the member has a newer map than ours: ours is coming */
		return true;
	default:
		return false;
	}
}

static void fwd_done(void *arg, int err, struct st_frame *reply)
{
	struct bd_fwd *f = arg;
	struct bd_dist *d = f->d;
	(void)reply;
	if (d->stopping) {
		return;
	}
	if (err && d->epoch != f->epoch) {
		put_done(d, f->r, -ESTALE);
		return;
	}
	if (err && retriable(err)) {
		st_reactor_timer(d->r, &f->timer, FWD_RETRY_MS, fwd_retry_fired, f);
		return;
	}
	if (!err) {
		f->r->fwd_applied++;
	}
	put_done(d, f->r, err);
}

static void fwd_send(struct bd_fwd *f)
{
	struct bd_dist *d = f->d;
	struct bd_dreq *r = f->r;
	if (d->stopping) {
		return;
	}
	if (d->epoch != f->epoch) {
		put_done(d, r, -ESTALE);
		return;
	}
	struct st_client *cl = dist_peer(d, f->node);
	if (!cl) {
		st_reactor_timer(d->r, &f->timer, FWD_RETRY_MS, fwd_retry_fired, f);
		return;
	}
	Strata__Blockd__IoRequest io = *(const Strata__Blockd__IoRequest *)r->io;
	const uint64_t *anc;
	int na = 0;
	if (io.n_ancestry == 0 && (na = bd_engine_ancestry(d->e, io.family, io.layer, &anc)) > 0) {
		/* A replica may never have seen this layer's ancestry: its copy-up must match. */
		io.ancestry = (uint64_t *)(uintptr_t)anc;
		io.n_ancestry = (size_t)na;
	}
	io.map_epoch = f->epoch;
	Strata__Blockd__ReplWrite m = STRATA__BLOCKD__REPL_WRITE__INIT;
	m.io = &io;
	m.op = r->type;
	m.pg = r->pg->pg;
	m.version = r->version;
	m.prev_version = r->prev;
	m.primary = d->self;
	m.map_epoch = f->epoch;
	m.to = f->node;
	m.fua = r->q.fua;
	const uint8_t *payload = r->payload;
	size_t plen = r->payload_len;
	if (r->type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_COMPARE_AND_WRITE) {
		m.op = STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE;
		m.caw = true;
		payload = r->payload + r->q.length;
		plen = r->q.length;
	}
	d->peers[f->node].dirty = true;
	if (st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_WRITE, 0, &m.base, payload,
			   plen, fwd_done, f) < 0) {
		st_reactor_timer(d->r, &f->timer, FWD_RETRY_MS, fwd_retry_fired, f);
	}
}

static void send_forwards(struct bd_dist *d, struct bd_dreq *r)
{
	struct bd_pg *pg = r->pg;
	uint32_t to[BD_MAX_R], n = 0;
	for (uint32_t i = 1; i < pg->nacting; i++) {
		if (!dist_pg_behind(pg, pg->acting[i])) { /* one catching up pulls this later */
			to[n++] = pg->acting[i];
		}
	}
	if (n == 0) {
		return;
	}
	r->fwd = calloc(n, sizeof(*r->fwd));
	if (!r->fwd) {
		r->err = -ENOMEM;
		return;
	}
	r->pending += (int)n;
	for (uint32_t i = 0; i < n; i++) {
		r->fwd[i] = (struct bd_fwd){.d = d, .r = r, .node = to[i], .epoch = d->epoch};
	}
	for (uint32_t i = 0; i < n; i++) {
		fwd_send(&r->fwd[i]);
	}
}

static void local_done(void *arg, int err)
{
	struct bd_dreq *r = arg;
	struct bd_dist *d = r->pg ? (struct bd_dist *)r->rbuf : NULL;
	r->rbuf = NULL;
	r->local_ok = err == 0;
	r->local_over = true;
	if (r->type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_COMPARE_AND_WRITE && err == 0) {
		send_forwards(d, r);
	}
	put_done(d, r, err);
}

static void start(struct bd_dist *d, struct bd_pg *pg, struct bd_dreq *r)
{
	pg->busy = true;
	pg->busy_epoch = r->epoch;
	r->pg = pg;
	r->prev = pg->version;
	r->version = pg->version + 1;
	if (r->version < (d->epoch << 32) + 1) {
		r->version = (d->epoch << 32) + 1;
	}
	r->err = 0;
	r->fwd_applied = 0;
	r->local_ok = r->local_over = false;
	r->fwd = NULL;
	dist_vkey(r->keys[0], pg->pool, pg->pg);
	dist_be64(r->vals[0], r->version);
	dist_fkey(r->keys[1], r->q.family);
	dist_be32(r->vals[1], pg->pool);
	r->xkv[0] = (struct bd_xkv){r->keys[0], 9, r->vals[0], 8};
	r->xkv[1] = (struct bd_xkv){r->keys[1], 9, r->vals[1], 4};
	r->q.xkv = r->xkv;
	r->q.nxkv = 2;
	dist_family_set(d, r->q.family, pg->pool);
	r->pending = 1;
	/* rbuf is unused by mutations: it carries d to local_done. */
	r->rbuf = (uint8_t *)d;
	if (r->type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_COMPARE_AND_WRITE) {
		bd_compare_and_write(d->e, &r->q, r->payload, r->payload + r->q.length,
				     r->miscompare, local_done, r);
		return; /* forwards after the compare matched */
	}
	r->pending++; /* held until the forwards are out */
	switch (r->type) {
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE:
		bd_write(d->e, &r->q, r->payload, local_done, r);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE_ZEROES:
		bd_write_zeroes(d->e, &r->q, local_done, r);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_TRIM:
		bd_trim(d->e, &r->q, local_done, r);
		break;
	default:
		local_done(r, -EINVAL);
		break;
	}
	/* The local op is submitted first: one refused at once (a full store, the layer fence,
	 * a failed engine) is not forwarded, so the members never apply a version this node
	 * does not hold. One that fails later is resolved by peering (finish). */
	if (!r->local_over || r->local_ok) {
		send_forwards(d, r);
	}
	put_done(d, r, 0);
}

void repl_start_next(struct bd_dist *d, struct bd_pg *pg)
{
	struct bd_dreq *r;
	if (d->stopping) {
		/* Shutting down: the engine may have no ring left to run a mutation on. */
		repl_fail_waiters(d, pg, -ESHUTDOWN);
		return;
	}
	if (!pg->claimed && !TAILQ_EMPTY(&pg->waiters)) {
		/* The PG's first mutation here: meta must have us on record as its holder before
		 * anything is acknowledged (holder claims, dist.c). */
		if (d->claim_kick == NULL) {
			pg->claimed = true; /* no meta: nobody keeps a record */
		} else {
			d->claim_kick(d->claim_arg);
			return;
		}
	}
	while (!pg->busy && !pg->hold && (r = TAILQ_FIRST(&pg->waiters))) {
		TAILQ_REMOVE(&pg->waiters, r, link);
		/* Fence again: the map may have moved while it waited. */
		int rc = dist_epoch_check(d, r->epoch);
		if (!rc && (!pg->nacting || pg->acting[0] != d->self)) {
			rc = -ESTALE;
		}
		if (!rc && pg->state != PG_ACTIVE) {
			rc = -EAGAIN;
		}
		if (rc) {
			r->cb(r->cb_arg, rc);
			continue;
		}
		start(d, pg, r);
	}
}

void repl_fail_waiters(struct bd_dist *d, struct bd_pg *pg, int err)
{
	(void)d;
	struct bd_dreq *r;
	while ((r = TAILQ_FIRST(&pg->waiters))) {
		TAILQ_REMOVE(&pg->waiters, r, link);
		r->cb(r->cb_arg, err);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Replica side */

struct rep_ctx {
	struct bd_dist *d;
	struct bd_pg *pg;
	Strata__Blockd__ReplWrite *m;
	struct st_frame f;
	struct bd_reply *rp;
	struct bd_req q;
	uint8_t keys[2][9], vals[2][8];
	struct bd_xkv xkv[2];
};

static void rep_done(void *arg, int err)
{
	struct rep_ctx *c = arg;
	struct bd_pg *pg = c->pg;
	if (err == 0 && c->m->version > pg->version) {
		dist_log_append(pg, c->m->version, c->q.family, c->q.object);
	}
	if (err == 0) {
		Strata__Blockd__IoReply rep = STRATA__BLOCKD__IO_REPLY__INIT;
		rep.length = c->q.length;
		bd_reply_send(c->rp, 0, &rep.base, NULL, 0);
	} else {
		bd_reply_send(c->rp, err, NULL, NULL, 0);
	}
	strata__blockd__repl_write__free_unpacked(c->m, NULL);
	st_frame_release(&c->f);
	free(c);
}

/* Returns 0 when this node is a non-primary member of the PG and `primary` its primary. */
static int replica_check(struct bd_dist *d, uint32_t pool, uint32_t pgno, uint32_t primary,
			 struct bd_pg **out)
{
	struct bd_pg *pg = dist_pg(d, pool, pgno);
	if (!pg || !pg->nacting || pg->acting[0] != primary) {
		return -ESTALE;
	}
	for (uint32_t i = 1; i < pg->nacting; i++) {
		if (pg->acting[i] == d->self) {
			*out = pg;
			return 0;
		}
	}
	return -ESTALE;
}

void repl_handle_write(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
{
	Strata__Blockd__ReplWrite *m =
		strata__blockd__repl_write__unpack(NULL, f->hdr.hdr_len, f->msg);
	struct bd_pg *pg = NULL;
	int rc = m && m->io ? dist_peer_check(d, m->map_epoch, m->to) : -EINVAL;
	if (!rc) {
		rc = replica_check(d, m->io->pool_id, m->pg, m->primary, &pg);
	}
	if (!rc && pg->pulling) {
		rc = -EAGAIN;
	}
	if (!rc && pg->version == m->version) {
		/* Already applied (a retried forward). */
		Strata__Blockd__IoReply rep = STRATA__BLOCKD__IO_REPLY__INIT;
		rep.length = m->io->length;
		bd_reply_send(rp, 0, &rep.base, NULL, 0);
		strata__blockd__repl_write__free_unpacked(m, NULL);
		st_frame_release(f);
		return;
	}
	if (!rc && pg->version != m->prev_version) {
		rc = -ERANGE;
	}
	struct rep_ctx *c = NULL;
	if (!rc && !(c = calloc(1, sizeof(*c)))) {
		rc = -ENOMEM;
	}
	if (!rc) {
		rc = bd_io_validate((uint16_t)m->op, m->io, f->hdr.payload_len, &c->q);
	}
	if (rc) {
		bd_reply_send(rp, rc, NULL, NULL, 0);
		free(c);
		if (m) {
			strata__blockd__repl_write__free_unpacked(m, NULL);
		}
		st_frame_release(f);
		return;
	}
	c->d = d;
	c->pg = pg;
	c->m = m;
	c->f = *f;
	c->rp = rp;
	c->q.fua = m->fua;
	c->q.caw_done = m->caw && m->op == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE;
	dist_vkey(c->keys[0], pg->pool, pg->pg);
	dist_be64(c->vals[0], m->version);
	dist_fkey(c->keys[1], c->q.family);
	dist_be32(c->vals[1], pg->pool);
	c->xkv[0] = (struct bd_xkv){c->keys[0], 9, c->vals[0], 8};
	c->xkv[1] = (struct bd_xkv){c->keys[1], 9, c->vals[1], 4};
	c->q.xkv = c->xkv;
	c->q.nxkv = 2;
	dist_family_set(d, c->q.family, pg->pool);
	switch (m->op) {
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE:
		bd_write(d->e, &c->q, c->f.payload, rep_done, c);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE_ZEROES:
		bd_write_zeroes(d->e, &c->q, rep_done, c);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_TRIM:
		bd_trim(d->e, &c->q, rep_done, c);
		break;
	default:
		rep_done(c, -EINVAL);
	}
}

static void rflush_done(void *arg, int err)
{
	bd_reply_send(arg, err, NULL, NULL, 0);
}

void repl_handle_flush(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
{
	/* Only the addressee: a flush meant for another node must not answer for its writes.
	 * The epoch is not checked (a flush at any epoch makes what we acknowledged durable). */
	Strata__Blockd__FlushRequest *m =
		strata__blockd__flush_request__unpack(NULL, f->hdr.hdr_len, f->msg);
	st_frame_release(f);
	int rc = m == NULL                        ? -EINVAL
		 : m->to != 0 && m->to != d->self ? dist_peer_check(d, 0, m->to)
						  : 0;
	if (m) {
		strata__blockd__flush_request__free_unpacked(m, NULL);
	}
	if (rc) {
		bd_reply_send(rp, rc, NULL, NULL, 0);
		return;
	}
	bd_flush(d->e, rflush_done, rp);
}

/* ------------------------------------------------------------------------------------------ */
/* Flush: local, and every member written to since the last flush (they acknowledged writes
 * this node acknowledged to a client; FLUSH promises those survive power loss everywhere). */

struct dflush {
	struct bd_dist *d;
	int pending, err;
	bd_done_cb cb;
	void *cb_arg;
	uint32_t nodes[BD_MAX_NODES];
	struct dflush_peer {
		struct dflush *fl;
		uint32_t node;
	} peers[BD_MAX_NODES];
};

static void dflush_put(struct dflush *fl, int err)
{
	if (err && !fl->err) {
		fl->err = err;
	}
	if (--fl->pending == 0) {
		bd_done_cb cb = fl->cb;
		void *arg = fl->cb_arg;
		err = fl->err;
		free(fl);
		cb(arg, err);
	}
}

static void dflush_peer_done(void *arg, int err, struct st_frame *reply)
{
	struct dflush_peer *p = arg;
	struct bd_dist *d = p->fl->d;
	(void)reply;
	if (err && !d->stopping) {
		d->peers[p->node].dirty = true;
		/* A member that is down no longer holds anything a client relies on. */
		if (!dist_node_up(d, p->node)) {
			err = 0;
		} else {
			err = -EAGAIN;
		}
	}
	dflush_put(p->fl, err);
}

static void dflush_local_done(void *arg, int err)
{
	dflush_put(arg, err);
}

void bd_dist_flush(struct bd_dist *d, bool all, bd_done_cb cb, void *cb_arg)
{
	struct dflush *fl = calloc(1, sizeof(*fl));
	if (!fl) {
		cb(cb_arg, -ENOMEM);
		return;
	}
	fl->d = d;
	fl->cb = cb;
	fl->cb_arg = cb_arg;
	fl->pending = 1;
	Strata__Blockd__FlushRequest m = STRATA__BLOCKD__FLUSH_REQUEST__INIT;
	m.map_epoch = d->epoch;
	for (size_t i = 0; all && i < d->nplace; i++) {
		if (d->place[i].up && d->place[i].id != d->self && d->place[i].id < BD_MAX_NODES) {
			d->peers[d->place[i].id].dirty = true;
		}
	}
	for (uint32_t id = 0; id < BD_MAX_NODES; id++) {
		if (!d->peers[id].dirty) {
			continue;
		}
		d->peers[id].dirty = false;
		struct st_client *cl = dist_peer(d, id);
		struct dflush_peer *p = &fl->peers[id];
		p->fl = fl;
		p->node = id;
		if (!cl) {
			if (dist_node_up(d, id)) {
				d->peers[id].dirty = true;
				fl->err = -EAGAIN;
			}
			continue;
		}
		fl->pending++;
		m.to = id;
		if (st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_FLUSH, 0, &m.base,
				   NULL, 0, dflush_peer_done, p) < 0) {
			fl->pending--;
			d->peers[id].dirty = true;
			fl->err = -EAGAIN;
		}
	}
	bd_flush(d->e, dflush_local_done, fl);
}
