/*
 * Primary-copy replication.
 *
 *   client mutation --fence--> pg->waiters (FIFO) --admitted one at a time per PG-->
 *      version = next(pg), prev = the version before it (pg->head while others run)
 *      local engine op (WriteBatch carries 'V' = version)  \
 *      REPL_WRITE to every other acting member, in parallel  >--all answered--> reply
 *      the local op applied: the PG admits its next mutation (release), while this one's
 *      forwards are still out
 *      (the local op is submitted first: one it refuses at once is not forwarded; one that
 *       fails later keeps the PG until it finishes, and if members applied it sends the PG
 *       back to peering, which pulls the members' version here, because the next mutation
 *       would reuse that version number)
 *      (CAW: local first; the forward is the plain write of its data, only if it matched,
 *       flagged `caw` so the replica persists the (client_id, seq) as the primary did)
 *
 * Why a PG's mutations are admitted one at a time: every member then applies them in the same
 * order, so overlapping writes leave identical replicas, and a member's version says exactly
 * which prefix of the PG's history it holds (no holes to track after a crash). Here the local
 * ops run one after another, so the primary's log gets the versions in order. A member gets a
 * PG's forwards in version order (one connection per peer, each sent once the one before it
 * is out) and applies them one at a time in the order they came (pg->rep_queue), checking
 * each one's prev against its version when its turn comes. So the PG waits for its members
 * only in the mutations' replies, not between mutations: before, a PG held each mutation for
 * its whole round trip to the members. Parallelism across PGs comes from the many PGs (128 by
 * default) a queue depth spreads over.
 *
 * What a failure does with several in flight: a forward that a member refuses (-ERANGE, it
 * missed one) sends the PG back to peering as before, and peering waits until the PG stands
 * still (dist_pg_still: nothing admitted, running or applying). The mutations after it fail at
 * that member the same way, so the client retries them on the peered PG.
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
	bool waiting; /* on its timer: sent again when it fires */
	struct st_io timer;
};

static void fwd_send(struct bd_fwd *f);
static void fwd_later(struct bd_fwd *f);

/* A mutation refused here gave its version back while earlier ones of its PG were out. */
static void log_given_back(struct bd_dist *d, const struct bd_pg *pg, int err)
{
	d->given_back++;
	uint64_t now = st_now_ms();
	if (d->given_back_ms == 0 || now - d->given_back_ms >= 1000) {
		d->given_back_ms = now;
		st_info("pg %u.%u: a refused mutation (%d) gave its version back (%llu so far)",
			pg->pool, pg->pg, err, (unsigned long long)d->given_back);
	}
}

void repl_member_full(struct bd_pg *pg, uint32_t node)
{
	if (!pg->full_member) {
		st_warn("pg %u.%u: node %u is out of space: writes are refused with ENOSPC",
			pg->pool, pg->pg, node);
	}
	pg->full_member = node;
}

static void finish(struct bd_dist *d, struct bd_dreq *r)
{
	struct bd_pg *pg = r->pg;
	int err = r->err;
	bool repeer = false;
	if (!r->local_ok && r->fwd_applied) {
		/* Members hold version v, this node does not: the next mutation would reuse v and
		 * they would take it for a retry of this one, and skip it. Peering pulls v here. */
		if (pg->state == PG_ACTIVE) { /* the first of a burst: it starts the peering */
			st_info("pg %u.%u: a mutation failed here (%d) but not on %u members: "
				"peering again",
				pg->pool, pg->pg, err, r->fwd_applied);
		}
		repeer = true;
	}
	if (r->local_ok && err && err != -ERANGE && pg->nacting > 1) {
		/* Applied here and not on every member: a member refused it (a full one: see
		 * repl_member_full), the map moved while its forwards were out (-ESTALE), or
		 * they could not be sent (-ENOMEM). An error here always comes from them. The
		 * members that lack it miss this version now, and the copies differ. Peering
		 * makes them members that catch up (a full one retries until it has room, and
		 * then lets writes in again: recovery.c). Waiting for the next mutation's -ERANGE
		 * instead would leave the copies different for as long as none comes: the
		 * client's retry of this one may well be refused (a node the map now marks full)
		 * or never come, and then only scrub would find the difference. */
		if (pg->state == PG_ACTIVE) {
			st_info("pg %u.%u: a mutation applied here failed on its members (%d, %u "
				"of %u applied it): peering to bring them level",
				pg->pool, pg->pg, err, r->fwd_applied, r->nfwd);
		}
		repeer = true;
	}
	if (err == -ERANGE) {
		if (pg->state == PG_ACTIVE) { /* the others of a burst find it peering already */
			st_info("pg %u.%u: a member missed a mutation: peering again", pg->pool,
				pg->pg);
		}
		repeer = true;
		err = -EAGAIN;
	}
	free(r->fwd);
	r->fwd = NULL;
	r->nfwd = 0;
	TAILQ_REMOVE(&pg->running, r, link);
	if (r->holds) {
		/* Not applied here (it kept the PG closed, so none came after it): the next one
		 * follows the version before it. A member that applied it refuses that one with
		 * -ERANGE, and peering pulls it here, as when nothing else was in flight. */
		if (!r->local_ok && pg->head == r->version) {
			pg->head = r->prev;
			if (!TAILQ_EMPTY(&pg->running)) {
				log_given_back(d, pg, err);
			}
		}
		pg->busy = false;
	}
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
		fwd_later(f);
		return;
	}
	if (!err) {
		f->r->fwd_applied++;
	}
	if (err == -ENOSPC) {
		repl_member_full(f->r->pg, f->node);
	}
	put_done(d, f->r, err);
}

static void fwd_later(struct bd_fwd *f)
{
	f->waiting = true;
	st_reactor_timer(f->d->r, &f->timer, FWD_RETRY_MS, fwd_retry_fired, f);
}

/* Does an earlier mutation of the PG wait to send its forward to f's member again? Then f
 * waits too: the member must get the PG's forwards in version order, or it would refuse the
 * later one (-ERANGE) and the PG would go back to peering for a transient error. */
static bool fwd_blocked(const struct bd_fwd *f)
{
	const struct bd_dreq *o = f->r;
	while ((o = TAILQ_PREV(o, dreq_list, link))) {
		for (uint32_t i = 0; i < o->nfwd; i++) {
			if (o->fwd[i].node == f->node && o->fwd[i].waiting) {
				return true;
			}
		}
	}
	return false;
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
	if (!cl || fwd_blocked(f)) {
		fwd_later(f);
		return;
	}
	f->waiting = false;
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
		fwd_later(f);
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
	r->nfwd = n;
	r->pending += (int)n;
	for (uint32_t i = 0; i < n; i++) {
		r->fwd[i] = (struct bd_fwd){.d = d, .r = r, .node = to[i], .epoch = d->epoch};
	}
	for (uint32_t i = 0; i < n; i++) {
		fwd_send(&r->fwd[i]);
	}
}

/* Once per mutation: after its local op has its blocks (or has finished), never before. */
static void forward(struct bd_dist *d, struct bd_dreq *r)
{
	if (!r->forwarded) {
		r->forwarded = true;
		send_forwards(d, r);
	}
}

/* The engine's `reserved` hook: the local op holds its blocks and can no longer be refused
 * for want of space. Usually that is inside bd_write(), called from start(); a write that had
 * to wait for a pending group to free blocks gets here later. Its members must not see it
 * before, because if the wait ends in ENOSPC they would hold a version this node cannot pull
 * from them while it is full. */
static void local_reserved(void *arg)
{
	struct bd_dreq *r = arg;
	forward((struct bd_dist *)r->rbuf, r); /* rbuf carries d until local_done */
}

/* The mutation is applied here and its forwards are out: the PG's next mutation may start. Its
 * forwards leave after these on each member's connection, and members apply a PG's forwards
 * in the order they came, so every copy still sees the PG's mutations in version order. */
static void release(struct bd_dreq *r)
{
	r->holds = false;
	r->pg->busy = false;
}

static void local_done(void *arg, int err)
{
	struct bd_dreq *r = arg;
	struct bd_dist *d = r->pg ? (struct bd_dist *)r->rbuf : NULL;
	struct bd_pg *pg = r->pg;
	r->rbuf = NULL;
	r->local_ok = err == 0;
	r->local_over = true;
	bool next = false;
	if (err == 0) {
		/* Local ops of a PG finish in version order (each starts after the one before it
		 * finished here): the log stays in order, with no gap, whatever the members do. */
		if (r->version > pg->version) {
			dist_log_append(pg, r->version, r->q.family, r->q.object);
		}
		/* A compare-and-write forwards once its compare matched, here; so does an op
		 * that finished without passing the hook (an idempotent retry). */
		forward(d, r);
		/* One that failed here keeps the PG until it finishes: members may hold its
		 * version and this node not, which only peering sorts out (finish). */
		if (!r->starting) {
			release(r);
			next = true;
		}
	}
	put_done(d, r, err); /* may free r */
	if (next) {
		repl_start_next(d, pg);
	}
}

static void start(struct bd_dist *d, struct bd_pg *pg, struct bd_dreq *r)
{
	pg->busy = true;
	r->holds = true;
	r->starting = true;
	r->pg = pg;
	bool others = !TAILQ_EMPTY(&pg->running);
	r->prev = others ? pg->head : pg->version;
	d->overlapped += others;
	r->version = r->prev + 1;
	if (r->version < (d->epoch << 32) + 1) {
		r->version = (d->epoch << 32) + 1;
	}
	pg->head = r->version;
	TAILQ_INSERT_TAIL(&pg->running, r, link);
	r->err = 0;
	r->fwd_applied = 0;
	r->local_ok = r->local_over = false;
	r->forwarded = false;
	bool caw = r->type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_COMPARE_AND_WRITE;
	r->q.reserved = caw ? NULL : local_reserved; /* a CAW forwards from local_done */
	r->fwd = NULL;
	r->nfwd = 0;
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
		r->starting = false; /* forwards after the compare matched, from local_done */
		bd_compare_and_write(d->e, &r->q, r->payload, r->payload + r->q.length,
				     r->miscompare, local_done, r);
		return;
	}
	r->pending++; /* held until start() is done with r (put_done below) */
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
	/* The local op is submitted first, and forwarded once it holds its blocks (its hook,
	 * or local_done): one refused for want of space, at once or after waiting for a pending
	 * group to free some (a full store), or refused at once for another reason (the layer
	 * fence, a failed engine), is not forwarded, so the members never apply a version this
	 * node does not hold. One that fails later (an I/O error) is resolved by peering
	 * (finish). */
	r->starting = false;
	if (r->local_over && r->local_ok) {
		release(r); /* applied at once: repl_start_next's loop starts the next */
	}
	put_done(d, r, 0);
}

/* The oldest waiter, unless a scrub holds its object: then the oldest of another object.
 * Mutations of one object keep their order; those of different objects in flight together
 * have none to keep (a client orders them by waiting for one's reply). */
static struct bd_dreq *next_admissible(struct bd_pg *pg)
{
	struct bd_dreq *r;
	TAILQ_FOREACH(r, &pg->waiters, link)
	{
		if (!pg->scrub_hold || r->q.family != pg->scrub_family ||
		    r->q.object != pg->scrub_object) {
			return r;
		}
	}
	return NULL;
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
	while (!pg->busy && !pg->hold && (r = next_admissible(pg))) {
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
	TAILQ_ENTRY(rep_ctx) link;
};

static void rep_run(struct bd_dist *d, struct bd_pg *pg);

static void rep_free(struct rep_ctx *c)
{
	strata__blockd__repl_write__free_unpacked(c->m, NULL);
	st_frame_release(&c->f);
	free(c);
}

static void rep_reply(struct rep_ctx *c, int err)
{
	if (err == 0) {
		Strata__Blockd__IoReply rep = STRATA__BLOCKD__IO_REPLY__INIT;
		rep.length = c->m->io->length;
		bd_reply_send(c->rp, 0, &rep.base, NULL, 0);
	} else {
		bd_reply_send(c->rp, err, NULL, NULL, 0);
	}
	rep_free(c);
}

static void rep_done(void *arg, int err)
{
	struct rep_ctx *c = arg;
	struct bd_dist *d = c->d;
	struct bd_pg *pg = c->pg;
	if (err == 0 && c->m->version > pg->version) {
		dist_log_append(pg, c->m->version, c->q.family, c->q.object);
	}
	rep_reply(c, err);
	pg->rep_busy = false;
	rep_run(d, pg);
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

/* Apply one forward, its PG's turn come: the map, the PG's state and its version are checked
 * now, not when it arrived (the forwards before it moved the version). */
static void rep_apply(struct rep_ctx *c)
{
	struct bd_dist *d = c->d;
	struct bd_pg *pg = c->pg, *now = NULL;
	const Strata__Blockd__ReplWrite *m = c->m;
	int rc = dist_peer_check(d, m->map_epoch, m->to);
	if (!rc) {
		rc = replica_check(d, m->io->pool_id, m->pg, m->primary, &now);
	}
	if (!rc && now != pg) {
		rc = -ESTALE;
	}
	if (!rc && pg->pulling) {
		rc = -EAGAIN;
	}
	if (!rc && pg->version == m->version) {
		rep_reply(c, 0); /* already applied (a retried forward) */
		return;
	}
	if (!rc && pg->version != m->prev_version) {
		rc = -ERANGE;
	}
	if (!rc) {
		rc = bd_io_validate((uint16_t)m->op, m->io, c->f.hdr.payload_len, &c->q);
	}
	if (rc) {
		rep_reply(c, rc);
		return;
	}
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
	pg->rep_busy = true;
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

/* A PG's forwards apply one at a time, in the order they came: the primary sends a mutation's
 * forwards once it is applied there, and the next one's after them, so each member applies
 * the PG's mutations in version order while several are in flight. */
static void rep_run(struct bd_dist *d, struct bd_pg *pg)
{
	if (pg->rep_running) {
		return; /* an outer call's loop goes on (a forward that completed at once) */
	}
	pg->rep_running = true;
	struct rep_ctx *c;
	while (!pg->rep_busy && (c = TAILQ_FIRST(&pg->rep_queue))) {
		TAILQ_REMOVE(&pg->rep_queue, c, link);
		if (d->stopping) {
			rep_reply(c, -ESHUTDOWN);
		} else {
			rep_apply(c);
		}
	}
	pg->rep_running = false;
}

void repl_fail_forwards(struct bd_dist *d, struct bd_pg *pg, int err)
{
	(void)d;
	struct rep_ctx *c;
	while ((c = TAILQ_FIRST(&pg->rep_queue))) {
		TAILQ_REMOVE(&pg->rep_queue, c, link);
		rep_reply(c, err);
	}
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
	struct rep_ctx *c = NULL;
	if (!rc && !(c = calloc(1, sizeof(*c)))) {
		rc = -ENOMEM;
	}
	if (rc) {
		bd_reply_send(rp, rc, NULL, NULL, 0);
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
	TAILQ_INSERT_TAIL(&pg->rep_queue, c, link);
	rep_run(d, pg);
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
