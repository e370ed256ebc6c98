/*
 * strata-blockd engine: the mutations (write, write-zeroes, trim, compare-and-write) and flush.
 * A mutation is checked against the idempotency table, takes its object lock, writes its data
 * to newly reserved blocks (the write phase), then joins the group commit (commit.c).
 *
 * Object locks: writes, write-zeroes and trim take the object shared, compare-and-write
 * exclusive, FIFO; so a compare-and-write's read, compare and commit see no other mutation.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "engine_int.h"
#include "internal.h"

/* ------------------------------------------------------------------------------------------ */
/*
 * Idempotency: a bounded table of recent (client_id, seq) of mutating requests.
 *
 * Plain writes, write-zeroes and trims are idempotent by content: applying a retry again after
 * a restart that emptied the table leaves the same data. A compare-and-write is not: once its
 * data is committed, a retry compares against its own new data and would miscompare. So every
 * successful compare-and-write that has an entry also persists it, as
 *
 *   'I' client_id(8) seq(8) -> stamp(8) family(8) object(8)
 *                               (big-endian; stamp orders the entries; keys written before
 *                               session 8 hold the stamp alone)
 *
 * in the same WriteBatch as its data (bd_idem_persist), and engine open loads those keys back
 * as done-with-success entries (bd_idem_load). A miscompare writes nothing and is not
 * persisted: after a restart its retry is evaluated again, which is a valid outcome.
 *
 * Bounding the persisted set: the key of an entry is deleted when the ring evicts the entry
 * (idem_insert), in the next group commit's batch (or at close). So the persisted set tracks
 * the table, whose size is bounded, while the engine runs, however long it runs; pruning only
 * at open would let it grow without bound between restarts. A delete that never reaches the
 * index (a crash or failed commit before the next commit) leaves a stale key behind, so open
 * also caps: it keeps the IDEM_CAP newest stamps and deletes the rest.
 *
 * Recovery: a member that pulls a PG from another (recovery.c) also takes the source's
 * persisted entries for the PG's objects (bd_idem_export / bd_idem_import), in the batch that
 * records the PG's new version. Without them, a member rebuilt by backfill that later became
 * the primary would evaluate a retried compare-and-write again, against its own new data, and
 * report a miscompare for a write that succeeded.
 */

#define IDEM_KEY_LEN     17
#define IDEM_VAL_LEN     24
#define IDEM_VAL_LEN_OLD 8

static void idem_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (56 - 8 * i));
	}
}

static uint64_t idem_get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) {
		v = v << 8 | p[i];
	}
	return v;
}

static void idem_key(uint8_t k[IDEM_KEY_LEN], uint64_t cid, uint64_t seq)
{
	k[0] = 'I';
	idem_be64(k + 1, cid);
	idem_be64(k + 9, seq);
}

/* An outcome's 'I' key and value, the value stamped after every other; the entry learns its
 * object. */
static void idem_record(struct bd_engine *e, struct idem_ent *ent, uint64_t family, uint64_t object,
			uint8_t k[IDEM_KEY_LEN], uint8_t v[IDEM_VAL_LEN])
{
	ent->family = family;
	ent->object = object;
	ent->located = true;
	idem_key(k, ent->client_id, ent->seq);
	idem_be64(v, ++e->idem_stamp);
	idem_be64(v + 8, family);
	idem_be64(v + 16, object);
}

static size_t idem_slot(uint64_t cid, uint64_t seq)
{
	uint64_t h = cid * 0x9E3779B97F4A7C15ull ^ seq * 0xC2B2AE3D27D4EB4Full;
	return (size_t)((h ^ (h >> 32)) % IDEM_CAP);
}

static struct idem_ent *idem_find(struct bd_engine *e, uint64_t cid, uint64_t seq)
{
	for (struct idem_ent *i = e->idem_hash[idem_slot(cid, seq)]; i; i = i->next) {
		if (i->client_id == cid && i->seq == seq) {
			return i;
		}
	}
	return NULL;
}

static void idem_unlink(struct bd_engine *e, struct idem_ent *ent)
{
	struct idem_ent **pp = &e->idem_hash[idem_slot(ent->client_id, ent->seq)];
	while (*pp && *pp != ent) {
		pp = &(*pp)->next;
	}
	if (*pp) {
		*pp = ent->next;
	}
	ent->state = IDEM_FREE;
}

static struct idem_ent *idem_insert(struct bd_engine *e, uint64_t cid, uint64_t seq)
{
	/* Reuse the oldest slot that is not pending (pending ones are bounded by ops in flight). */
	for (size_t tries = 0; tries < IDEM_CAP; tries++) {
		struct idem_ent *ent = &e->idem_ring[e->idem_next];
		e->idem_next = (e->idem_next + 1) % IDEM_CAP;
		if (ent->state == IDEM_PENDING) {
			continue;
		}
		if (ent->state == IDEM_DONE) {
			idem_unlink(e, ent);
		}
		if (ent->persisted) {
			/* Evicted: forget its key too. gbatch is committed by the next group
			 * commit; a later put of the same key (a retry applied again) lands after
			 * this delete in that batch or in a later one, so it wins. */
			uint8_t k[IDEM_KEY_LEN];
			idem_key(k, ent->client_id, ent->seq);
			bd_batch_del_raw(e->gbatch, k, sizeof(k));
			ent->persisted = false;
		}
		ent->client_id = cid;
		ent->seq = seq;
		ent->state = IDEM_PENDING;
		ent->status = 0;
		ent->miscompare = 0;
		size_t s = idem_slot(cid, seq);
		ent->next = e->idem_hash[s];
		e->idem_hash[s] = ent;
		return ent;
	}
	return NULL;
}

void bd_idem_persist(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	if (!bd_op_persists_idem(op) || !op->idem) {
		return;
	}
	uint8_t k[IDEM_KEY_LEN], v[IDEM_VAL_LEN];
	idem_record(e, op->idem, op->q.family, op->q.object, k, v);
	/* Straight into the group's batch, not through group_raw: the key is unique to this op,
	 * so there is nothing to merge, and it must not displace raw_seen's entries. */
	bd_batch_put_raw(e->gbatch, k, sizeof(k), v, sizeof(v));
}

struct idem_loaded {
	uint64_t client_id, seq, stamp, family, object;
	bool located;
};

struct idem_scan {
	struct bd_engine *e;
	struct idem_loaded *v;
	size_t n, cap;
	bool prune;
	uint64_t bad;
};

static int idem_scan_fn(void *arg, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct idem_scan *sc = arg;
	if (klen != IDEM_KEY_LEN || (vlen != IDEM_VAL_LEN && vlen != IDEM_VAL_LEN_OLD)) {
		sc->bad++;
		if (sc->prune) {
			bd_batch_del_raw(sc->e->batch, k, klen);
		}
		return 0;
	}
	if (sc->n == sc->cap) {
		size_t nc = sc->cap ? sc->cap * 2 : 1024;
		struct idem_loaded *nv = realloc(sc->v, nc * sizeof(*nv));
		if (!nv) {
			return -ENOMEM;
		}
		sc->v = nv;
		sc->cap = nc;
	}
	sc->v[sc->n++] = (struct idem_loaded){
		.client_id = idem_get_be64(k + 1),
		.seq = idem_get_be64(k + 9),
		.stamp = idem_get_be64(v),
		.located = vlen == IDEM_VAL_LEN,
		.family = vlen == IDEM_VAL_LEN ? idem_get_be64(v + 8) : 0,
		.object = vlen == IDEM_VAL_LEN ? idem_get_be64(v + 16) : 0,
	};
	return 0;
}

static int idem_stamp_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct idem_loaded *)a)->stamp;
	uint64_t y = ((const struct idem_loaded *)b)->stamp;
	return x < y ? -1 : x > y;
}

int bd_idem_load(struct bd_engine *e, bool prune)
{
	struct idem_scan sc = {.e = e, .prune = prune};
	int rc = bd_index_scan_raw(e->ix, "I", 1, idem_scan_fn, &sc);
	if (rc) {
		free(sc.v);
		bd_batch_clear(e->batch);
		return rc < 0 ? rc : -EIO;
	}
	/* Oldest first, so the ring evicts them in the order they were made. */
	if (sc.n > 1) {
		qsort(sc.v, sc.n, sizeof(*sc.v), idem_stamp_cmp);
	}
	size_t skip = sc.n > IDEM_CAP ? sc.n - IDEM_CAP : 0;
	for (size_t i = 0; i < skip && prune; i++) {
		uint8_t k[IDEM_KEY_LEN];
		idem_key(k, sc.v[i].client_id, sc.v[i].seq);
		bd_batch_del_raw(e->batch, k, sizeof(k));
	}
	for (size_t i = skip; i < sc.n; i++) {
		struct idem_ent *ent = idem_insert(e, sc.v[i].client_id, sc.v[i].seq);
		ent->state = IDEM_DONE;
		ent->persisted = true;
		ent->located = sc.v[i].located;
		ent->family = sc.v[i].family;
		ent->object = sc.v[i].object;
	}
	if (sc.n > 0) {
		e->idem_stamp = sc.v[sc.n - 1].stamp; /* new keys sort after every loaded one */
	}
	if (skip || sc.bad) {
		st_warn("idempotency keys: %lu beyond the table's %d and %lu malformed%s",
			(unsigned long)skip, IDEM_CAP, (unsigned long)sc.bad,
			prune ? ": deleted" : "");
	}
	free(sc.v);
	if (bd_batch_count(e->batch) > 0) {
		rc = bd_index_commit(e->ix, e->batch, false);
		bd_batch_clear(e->batch);
	}
	return rc;
}

long bd_idem_export(struct bd_engine *e, bool (*in_pg)(void *arg, uint64_t family, uint64_t object),
		    void *arg, struct bd_idem_done **out)
{
	size_t n = 0, cap = 0;
	struct bd_idem_done *v = NULL;
	for (size_t i = 0; i < IDEM_CAP; i++) {
		const struct idem_ent *ent = &e->idem_ring[i];
		if (ent->state != IDEM_DONE || !ent->persisted || !ent->located ||
		    !in_pg(arg, ent->family, ent->object)) {
			continue;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct bd_idem_done *nv = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
			cap = nc;
		}
		v[n++] = (struct bd_idem_done){ent->client_id, ent->seq, ent->family, ent->object};
	}
	*out = v;
	return (long)n;
}

void bd_idem_import(struct bd_engine *e, const struct bd_idem_done *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (idem_find(e, v[i].client_id, v[i].seq) != NULL) {
			continue; /* known here: done, or in flight (its own outcome will tell) */
		}
		struct idem_ent *ent = idem_insert(e, v[i].client_id, v[i].seq);
		if (ent == NULL) {
			return; /* every slot pending: nothing more fits now */
		}
		ent->state = IDEM_DONE;
		ent->status = 0;
		ent->persisted = true;
		uint8_t k[IDEM_KEY_LEN], val[IDEM_VAL_LEN];
		idem_record(e, ent, v[i].family, v[i].object, k, val);
		bd_batch_put_raw(e->batch, k, sizeof(k), val, sizeof(val));
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Object locks. */

static size_t lock_slot(uint64_t f, uint64_t o)
{
	uint64_t h = f * 0x9E3779B97F4A7C15ull ^ o * 0xBF58476D1CE4E5B9ull;
	return (size_t)((h ^ (h >> 29)) & 1023);
}

static void op_locked(struct bd_op *op);

bool bd_engine_object_locked(struct bd_engine *e, uint64_t family, uint64_t object)
{
	for (struct obj_lock *l = e->locks[lock_slot(family, object)]; l; l = l->next) {
		if (l->family == family && l->object == object) {
			return true;
		}
	}
	return false;
}

static bool lock_compatible(const struct obj_lock *l, bool excl)
{
	return excl ? (!l->excl && l->shared == 0) : !l->excl;
}

/* Returns true when granted now; otherwise op_locked runs later. -ENOMEM: *err. */
static bool lock_acquire(struct bd_op *op, bool excl, int *err)
{
	struct bd_engine *e = op->e;
	size_t s = lock_slot(op->q.family, op->q.object);
	struct obj_lock *l = e->locks[s];
	while (l && !(l->family == op->q.family && l->object == op->q.object)) {
		l = l->next;
	}
	if (!l) {
		l = calloc(1, sizeof(*l));
		if (!l) {
			*err = -ENOMEM;
			return false;
		}
		l->family = op->q.family;
		l->object = op->q.object;
		TAILQ_INIT(&l->waiters);
		l->next = e->locks[s];
		e->locks[s] = l;
	}
	op->lock = l;
	op->excl = excl;
	*err = 0;
	if (TAILQ_EMPTY(&l->waiters) && lock_compatible(l, excl)) {
		if (excl) {
			l->excl = true;
		} else {
			l->shared++;
		}
		return true;
	}
	TAILQ_INSERT_TAIL(&l->waiters, op, link);
	return false;
}

int bd_lock_excl(struct bd_op *op, void (*granted)(struct bd_op *op))
{
	int err;
	op->granted = granted;
	if (lock_acquire(op, true, &err)) {
		return 1;
	}
	return err ? err : 0;
}

void bd_lock_release(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	struct obj_lock *l = op->lock;
	if (!l) {
		return;
	}
	op->lock = NULL;
	if (op->excl) {
		l->excl = false;
	} else {
		l->shared--;
	}
	/* Grant waiters in FIFO order while compatible. */
	struct op_list granted;
	TAILQ_INIT(&granted);
	struct bd_op *w;
	while ((w = TAILQ_FIRST(&l->waiters)) && lock_compatible(l, w->excl)) {
		TAILQ_REMOVE(&l->waiters, w, link);
		if (w->excl) {
			l->excl = true;
		} else {
			l->shared++;
		}
		TAILQ_INSERT_TAIL(&granted, w, link);
	}
	if (l->shared == 0 && !l->excl && TAILQ_EMPTY(&l->waiters) && TAILQ_EMPTY(&granted)) {
		struct obj_lock **pp = &e->locks[lock_slot(l->family, l->object)];
		while (*pp != l) {
			pp = &(*pp)->next;
		}
		*pp = l->next;
		free(l);
	}
	while ((w = TAILQ_FIRST(&granted))) {
		TAILQ_REMOVE(&granted, w, link);
		op_locked(w);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Write phase. */

void bd_op_io_done(void *arg, int res)
{
	struct op_sub *s = arg;
	struct bd_op *op = s->op;
	if (res == -EAGAIN || res == -EINTR ||
	    (res > 0 && (size_t)res < s->iov.iov_len && res % BD_BLOCK == 0)) {
		/* Requeue the rest. */
		size_t done = res > 0 ? (size_t)res : 0;
		uint64_t off = 0;
		s->iov.iov_base = (uint8_t *)s->iov.iov_base + done;
		s->iov.iov_len -= done;
		/* The file offset is recomputed from the buffer position. */
		uint8_t *base = op->phase == PH_READ ? (op->kind == OP_CAW ? op->cawbuf : op->buf)
						     : op->buf;
		size_t bi = (size_t)((uint8_t *)s->iov.iov_base - base) / BD_BLOCK;
		off = (op->phase == PH_READ ? op->pblk[bi] : op->pblk[bi]) * BD_BLOCK;
		if (op->phase == PH_READ) {
			st_reactor_readv(op->e->r, &s->io, op->e->fd, &s->iov, 1, off,
					 bd_op_io_done, s);
		} else {
			st_reactor_writev(op->e->r, &s->io, op->e->fd, &s->iov, 1, off,
					  bd_op_io_done, s);
		}
		return;
	}
	if (res < 0 || (size_t)res != s->iov.iov_len) {
		if (op->err == 0) {
			op->err = res < 0 ? res : -EIO;
			st_error("data %s failed: %d", op->phase == PH_READ ? "read" : "write",
				 res);
		}
	}
	if (--op->pending > 0) {
		return;
	}
	if (op->phase == PH_READ) {
		bd_read_done(op);
		return;
	}
	if (op->err) {
		bd_op_complete(op);
		return;
	}
	/* FUA: the group's commit syncs the data file and then the WAL (commit.c). */
	bd_commit_phase(op);
}

void bd_write_phase(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	if (e->failed) {
		bd_op_fail(op, -EIO);
		return;
	}
	if (op->kind == OP_ZERO || op->kind == OP_TRIM) {
		if (op->q.reserved != NULL) {
			op->q.reserved(op->cb_arg);
		}
		bd_commit_phase(op);
		return;
	}
	int nr;
	if (op->dfg != NULL) {
		/* One contiguous run or nothing: that is the point, and space is never waited for.
		 */
		nr = bd_alloc_get_run(&e->alloc, op->nblocks, &op->runs[0].pblk);
		if (nr < 0) {
			bd_op_fail(op, nr);
			return;
		}
		op->runs[0].len = op->nblocks;
		nr = 1;
	} else {
		nr = bd_alloc_get(&e->alloc, op->nblocks, op->runs, (int)op->nblocks);
	}
	if (nr == -ENOSPC && bd_engine_reclaim_now(e)) {
		nr = bd_alloc_get(&e->alloc, op->nblocks, op->runs, (int)op->nblocks);
	}
	if (nr == -ENOSPC && bd_space_park(op)) {
		return;
	}
	if (nr < 0) {
		bd_op_fail(op, nr);
		return;
	}
	if (op->q.reserved != NULL) {
		op->q.reserved(op->cb_arg);
	}
	bd_prewrite_kick(e);
	op->nruns = nr;
	op->phase = PH_WRITE;
	uint32_t bi = 0;
	for (int r = 0; r < nr; r++) {
		for (uint32_t i = 0; i < op->runs[r].len; i++) {
			op->pblk[bi] = op->runs[r].pblk + i;
			op->crc[bi] = st_crc32c(0, op->buf + (size_t)bi * BD_BLOCK, BD_BLOCK);
			bi++;
		}
	}
	op->pending = nr;
	bi = 0;
	for (int r = 0; r < nr; r++) {
		struct op_sub *s = &op->subs[r];
		s->op = op;
		s->iov.iov_base = op->buf + (size_t)bi * BD_BLOCK;
		s->iov.iov_len = (size_t)op->runs[r].len * BD_BLOCK;
		bd_wc_queue(e, s, op->runs[r].pblk * BD_BLOCK);
		bi += op->runs[r].len;
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points. */

static void op_locked(struct bd_op *op)
{
	if (op->granted) {
		op->granted(op); /* not an op of its own (bd_lock_excl) */
	} else if (op->kind == OP_CAW) {
		bd_read_phase(op);
	} else {
		bd_write_phase(op);
	}
}

static void mutate(struct bd_engine *e, enum op_kind kind, const struct bd_req *q, const void *cmp,
		   const void *data, uint64_t *miscompare, const struct bd_defrag *dfg,
		   bd_done_cb cb, void *cb_arg)
{
	int rc = bd_validate(e, q, true);
	if (rc) {
		cb(cb_arg, rc);
		return;
	}
	if (e->failed) {
		cb(cb_arg, -EIO);
		return;
	}
	if ((kind == OP_WRITE || kind == OP_CAW) && bd_fsspace_refuse(e)) {
		/* The host file system is at its reserve (fsspace.c). Trim and write-zeroes only
		 * edit the index, which the reserve is for. */
		cb(cb_arg, -ENOSPC);
		return;
	}
	if (e->r == NULL) {
		/* Shutting down, the ring gone: a mutation whose PG turn came while the last
		 * group settled is refused, and its client retries on another node. */
		cb(cb_arg, -ESHUTDOWN);
		return;
	}
	struct idem_ent *ie = NULL;
	if (q->client_id != 0) {
		ie = idem_find(e, q->client_id, q->seq);
		if (ie && ie->state == IDEM_PENDING) {
			cb(cb_arg, -EINPROGRESS);
			return;
		}
		if (ie && ie->state == IDEM_DONE) {
			/* Already applied: answer as the first time, apply nothing. */
			if (miscompare) {
				*miscompare = ie->miscompare;
			}
			cb(cb_arg, ie->status);
			return;
		}
	}
	struct bd_op *op = bd_op_new(e, kind, q->length >> BD_BLOCK_SHIFT);
	if (!op) {
		cb(cb_arg, -ENOMEM);
		return;
	}
	op->q = *q;
	op->q.ancestry = NULL;
	op->q.nancestry = 0;
	op->buf = (uint8_t *)(uintptr_t)data;
	op->cmp = cmp;
	op->miscompare = miscompare;
	op->cb = cb;
	op->cb_arg = cb_arg;
	op->dfg = dfg;
	if (kind == OP_CAW) {
		op->cawbuf = aligned_alloc(BD_BLOCK, q->length);
		if (!op->cawbuf) {
			bd_op_fail(op, -ENOMEM);
			return;
		}
	}
	if (q->client_id != 0) {
		op->idem = idem_insert(e, q->client_id, q->seq);
	}
	if (lock_acquire(op, kind == OP_CAW, &rc)) {
		op_locked(op);
	} else if (rc) {
		bd_op_fail(op, rc);
	}
}

void bd_write(struct bd_engine *e, const struct bd_req *q, const void *buf, bd_done_cb cb,
	      void *cb_arg)
{
	mutate(e, OP_WRITE, q, NULL, buf, NULL, NULL, cb, cb_arg);
}

void bd_rewrite(struct bd_engine *e, const struct bd_req *q, const struct bd_defrag *dfg,
		bd_done_cb cb, void *cb_arg)
{
	mutate(e, OP_WRITE, q, NULL, dfg->buf, NULL, dfg, cb, cb_arg);
}

void bd_write_zeroes(struct bd_engine *e, const struct bd_req *q, bd_done_cb cb, void *cb_arg)
{
	mutate(e, OP_ZERO, q, NULL, NULL, NULL, NULL, cb, cb_arg);
}

void bd_trim(struct bd_engine *e, const struct bd_req *q, bd_done_cb cb, void *cb_arg)
{
	mutate(e, OP_TRIM, q, NULL, NULL, NULL, NULL, cb, cb_arg);
}

void bd_compare_and_write(struct bd_engine *e, const struct bd_req *q, const void *cmp,
			  const void *data, uint64_t *miscompare, bd_done_cb cb, void *cb_arg)
{
	*miscompare = 0;
	mutate(e, OP_CAW, q, cmp, data, miscompare, NULL, cb, cb_arg);
}

struct flush_ctx {
	struct bd_engine *e;
	struct st_io io;
	uint64_t commits; /* the index's commit count when the fdatasync was issued */
	int err;
	struct flush_ctx *next;
	bd_done_cb cb;
	void *cb_arg;
};

/* After a sync that covered every commit so far: switch memtables if asked (the WAL buffer is
 * empty now), and let blocks that waited for it be reused. */
static void flush_synced(struct bd_engine *e)
{
	if (bd_index_memtable_full(e->ix) || e->switch_wanted) {
		(void)bd_index_switch_memtable(e->ix); /* its WAL buffer is empty now */
		e->switch_wanted = false;
	}
	bd_engine_mark_durable(e);
	bd_engine_reap(e); /* blocks that waited for this sync can be reused */
}

/* A flush is over: free it, then tell its owner. */
static void flush_finish(struct flush_ctx *f, int err)
{
	bd_done_cb cb = f->cb;
	void *cb_arg = f->cb_arg;
	free(f);
	cb(cb_arg, err);
}

/* Without a committer: the data file through the ring, then the rest on this thread. */
static void flush_fsync_done(void *arg, int res)
{
	struct flush_ctx *f = arg;
	int err = res < 0 ? -EIO : 0;
	if (res < 0) {
		st_error("fdatasync of the data file failed: %d", res);
	}
	/* The data of every completed write is durable; now the index that points at it. A group
	 * committed while the fdatasync ran may hold writes it did not cover, and the WAL sync
	 * below writes every commit so far: sync the data once more, here, for those. */
	bd_committer_wait(f->e); /* a commit in flight on its thread counts too */
	if (!err && bd_index_commits(f->e->ix) != f->commits) {
		err = bd_engine_sync_data(f->e) < 0 ? -EIO : 0;
	}
	if (!err) {
		err = bd_index_sync(f->e->ix);
	}
	if (!err) {
		flush_synced(f->e);
	}
	flush_finish(f, err);
}

static void flush_on_ring(struct bd_engine *e, struct flush_ctx *f)
{
	/* Writes replied to before their commit (journal.c) reach the WAL first, so the sync
	 * below covers every write completed before this flush. */
	bd_engine_drain(e);
	f->commits = bd_index_commits(e->ix);
	st_reactor_fsync(e->r, &f->io, e->fd, true, flush_fsync_done, f);
}

/* Hand the waiting flushes to the committer as one sync job. Not from inside a reap. */
static void flush_job_start(struct bd_engine *e)
{
	/* Writes replied to before their commit (journal.c) reach the WAL first, so the job
	 * covers every write completed before these flushes; the committer is idle after. The
	 * group still gathering is not one of them (bd_engine_drain_sealed). */
	bd_engine_drain_sealed(e);
	while (bd_committer_busy(e)) {
		bd_committer_wait(e); /* a drained group's callbacks handed off another */
	}
	e->flush_run = e->flush_wait;
	e->flush_wait = NULL;
	e->flush_job = true;
	/* Every group of the old journal file is committed now (drained): after this job's
	 * syncs they are durable without it, and the committer empties it. */
	int reset_fd = -1;
	if (e->jold_dirty && !e->jold_in_job && e->jfd_old >= 0) {
		reset_fd = e->jfd_old;
		e->jold_in_job = true;
	}
	bd_committer_sync(e, reset_fd);
}

void bd_flush_job_reaped(struct bd_engine *e, int rc)
{
	e->flush_job = false;
	if (e->jold_in_job) {
		bd_journal_old_reset(e, rc);
	}
	if (rc == 0) {
		/* Every free in limbo now was deferred by a commit before the job (none lands
		 * while it runs), some only after it started (group_run defers them): all are
		 * covered, so the durable mark is taken here, not when the job started. */
		flush_synced(e);
	} else {
		st_error("flush: the sync failed: %s", strerror(-rc));
		rc = -EIO;
	}
	while (e->flush_run) {
		struct flush_ctx *f = e->flush_run;
		e->flush_run = f->next;
		f->err = rc;
		f->next = e->flush_done;
		e->flush_done = f;
	}
	bd_commit_resume(e); /* groups that waited for the committer */
}

void bd_flush_kick(struct bd_engine *e)
{
	struct flush_ctx *f;
	while ((f = e->flush_done)) {
		e->flush_done = f->next;
		flush_finish(f, f->err);
	}
	if (e->flush_wait == NULL || e->flush_job) {
		return;
	}
	if (e->cm != NULL && !e->failed && e->r != NULL) {
		flush_job_start(e);
		return;
	}
	while ((f = e->flush_wait)) { /* the committer stopped meanwhile */
		e->flush_wait = f->next;
		if (e->r == NULL) {
			flush_finish(f, -ESHUTDOWN);
		} else {
			flush_on_ring(e, f);
		}
	}
}

/*
 * Durable: every write completed before the call, data first, then the index that points at
 * it. With a committer, the syncs run on its thread as one job for every flush that waits
 * (bd_committer_sync); a flush that arrives while a job runs waits for the next one, which
 * first commits the groups that were journaled meanwhile.
 */
void bd_flush(struct bd_engine *e, bd_done_cb cb, void *cb_arg)
{
	struct flush_ctx *f = calloc(1, sizeof(*f));
	if (!f) {
		cb(cb_arg, -ENOMEM);
		return;
	}
	f->e = e;
	f->cb = cb;
	f->cb_arg = cb_arg;
	if (e->r == NULL) {
		flush_finish(f, -ESHUTDOWN);
		return;
	}
	if (e->cm == NULL || e->failed) {
		flush_on_ring(e, f);
		return;
	}
	f->next = e->flush_wait;
	e->flush_wait = f;
	if (!e->flush_job && e->flush_done == NULL) {
		flush_job_start(e);
	}
}

static void memtable_flushed(void *arg, int err)
{
	(void)arg, (void)err; /* a failed sync has marked the engine failed already */
}

/*
 * Before this node serves a pull: every object export opens a RocksDB iterator in key order,
 * which over the hashed memtable (index.c) first sorts a copy of the whole memtable: about
 * 8 ms per object with 8k lists in it, 90% of the source's CPU during a recovery. A flush
 * (data sync, WAL sync) and a memtable switch leave the exports a nearly empty memtable once
 * RocksDB has written the old one out in the background.
 */
void bd_flush_memtable(struct bd_engine *e)
{
	if (e->switch_wanted || e->failed || bd_index_memtable_bytes(e->ix) < PULL_SWITCH_BYTES) {
		return;
	}
	e->switch_wanted = true;
	bd_flush(e, memtable_flushed, NULL);
}
