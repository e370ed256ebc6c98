/*
 * The storage engine: object I/O over an O_DIRECT data file driven by the reactor's io_uring,
 * with the extent index in RocksDB.
 *
 * Write path (redirect-on-write, every write):
 *
 *   lock object (shared) -> reserve new blocks -> crc32c per 4 KiB -> writev to the new blocks
 *     -> [FUA: fdatasync] -> edit the cached lists, join the group commit: one WriteBatch per
 *        reactor turn with the new extent lists of every write of the group (+ copy-ups of
 *        ancestors' lists) and the persisted bitmap chunks whose blocks changed state
 *        -> commit [FUA in the group: sync WAL]
 *     -> displaced blocks lose a reference; at zero they wait in limbo until every read that
 *        started before the commit has finished, then become free -> unlock -> reply
 *
 * A crash before the commit leaves the old lists (the new blocks were never referenced, and
 * the start-up rebuild frees them); after it, the new ones. No block a list references is ever
 * written, so no frozen layer's data can change.
 *
 * Reads resolve (family, layer, object, seg) through the cache to the one list that serves
 * it (own or nearest ancestor's; the resolution is cached), copy the block mappings and crcs
 * into the op, and read physically contiguous runs straight into the caller's buffer.
 * Unmapped and zeroed blocks are memset, never read. Every data block's crc is checked.
 *
 * Object locks: writes, write-zeroes and trim take the object shared, compare-and-write
 * exclusive, FIFO; so a compare-and-write's read, compare and commit see no other mutation.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "engine_int.h"
#include "internal.h"

/* ------------------------------------------------------------------------------------------ */
/* Ops: small ones are recycled, so the steady-state 4 KiB path does not malloc. */

static struct bd_op *op_new(struct bd_engine *e, enum op_kind kind, uint32_t nblocks)
{
	struct bd_op *op = NULL;
	uint32_t cap = nblocks <= OP_SMALL ? OP_SMALL : nblocks;
	if (cap == OP_SMALL && !TAILQ_EMPTY(&e->free_ops)) {
		op = TAILQ_FIRST(&e->free_ops);
		TAILQ_REMOVE(&e->free_ops, op, link);
		e->nfree_ops--;
	} else {
		size_t sz = sizeof(*op) + cap * (sizeof(uint64_t) * 2 + sizeof(uint32_t) +
						 sizeof(struct bd_prun) + sizeof(struct op_sub));
		op = malloc(sz);
		if (!op) {
			return NULL;
		}
		uint8_t *p = (uint8_t *)(op + 1);
		op->subs = (struct op_sub *)p;
		p += cap * sizeof(struct op_sub);
		op->pblk = (uint64_t *)p;
		p += cap * sizeof(uint64_t);
		op->freed = (uint64_t *)p;
		p += cap * sizeof(uint64_t);
		op->runs = (struct bd_prun *)p;
		p += cap * sizeof(struct bd_prun);
		op->crc = (uint32_t *)p;
		op->cap = cap;
	}
	op->e = e;
	op->kind = kind;
	op->phase = PH_READ;
	op->nblocks = nblocks;
	op->buf = NULL;
	op->cmp = NULL;
	op->miscompare = NULL;
	op->err = 0;
	op->pending = 0;
	op->in_reads = false;
	op->excl = false;
	op->lock = NULL;
	op->idem = NULL;
	op->cawbuf = NULL;
	op->nruns = 0;
	op->nfreed = 0;
	op->fsync_io.busy = false;
	return op;
}

static void op_free(struct bd_engine *e, struct bd_op *op)
{
	free(op->cawbuf);
	if (op->cap == OP_SMALL && e->nfree_ops < 256) {
		TAILQ_INSERT_HEAD(&e->free_ops, op, link);
		e->nfree_ops++;
		return;
	}
	free(op);
}

/* ------------------------------------------------------------------------------------------ */
/* Idempotency: a bounded table of recent (client_id, seq) of mutating requests. */

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

int bd_engine_ancestry(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t **anc)
{
	return bd_layers_get(e->layers, family, layer, anc);
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

static void lock_release(struct bd_op *op)
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
/* Resolution: which list serves (family, layer, object, seg). */

/* Returns the cached entry of the layer's own list, loading it; NULL with *err = 0 when the
 * layer has none. */
static struct bd_centry *load_own(struct bd_engine *e, const struct bd_mkey *k, int *err)
{
	uint64_t gen = bd_cache_gen(e->cache);
	struct bd_centry *ce = bd_cache_find(e->cache, k);
	*err = 0;
	if (ce && ce->gen == gen) {
		return ce->resolved == k->layer ? ce : NULL;
	}
	if (ce && ce->resolved == k->layer && ce->map) {
		/* Own lists survive a gen bump: only resolutions through ancestors go stale. */
		ce->gen = gen;
		return ce;
	}
	struct bd_extmap *m = malloc(sizeof(*m));
	if (!m) {
		*err = -ENOMEM;
		return NULL;
	}
	int rc = bd_index_get_map(e->ix, k, m);
	if (rc <= 0) {
		free(m);
		*err = rc;
		return NULL;
	}
	ce = bd_cache_get(e->cache, k);
	if (!ce) {
		free(m);
		*err = -ENOMEM;
		return NULL;
	}
	free(ce->map);
	ce->map = m;
	ce->resolved = k->layer;
	ce->gen = gen;
	return ce;
}

static int layer_ancestry(struct bd_engine *e, uint64_t family, uint64_t layer,
			  const uint64_t **anc)
{
	int n = bd_layers_get(e->layers, family, layer, anc);
	if (n < 0) {
		*anc = NULL;
		return 0; /* unknown: a root layer */
	}
	return n;
}

/* The list serving k (NULL: none, all unallocated). Returns 0 or -errno. */
static int resolve(struct bd_engine *e, const struct bd_mkey *k, const struct bd_extmap **out)
{
	uint64_t gen = bd_cache_gen(e->cache);
	struct bd_centry *ce = bd_cache_find(e->cache, k);
	int err;
	*out = NULL;
	if (ce && ce->gen == gen) {
		if (ce->resolved == 0) {
			return 0;
		}
		if (ce->resolved == k->layer) {
			*out = ce->map;
			return 0;
		}
		struct bd_mkey ak = *k;
		ak.layer = ce->resolved;
		struct bd_centry *ae = load_own(e, &ak, &err);
		if (ae) {
			*out = ae->map;
			return 0;
		}
		if (err) {
			return err;
		}
		/* The ancestor's list vanished (layer delete): resolve again below. */
	}
	struct bd_centry *own = load_own(e, k, &err);
	if (own || err) {
		*out = own ? own->map : NULL;
		return err;
	}
	const uint64_t *anc;
	int n = layer_ancestry(e, k->family, k->layer, &anc);
	uint64_t found = 0;
	const struct bd_extmap *fm = NULL;
	for (int i = 0; i < n; i++) {
		struct bd_mkey ak = *k;
		ak.layer = anc[i];
		/* An ancestor whose resolution is cached answers for the rest of the chain. */
		struct bd_centry *ae = bd_cache_find(e->cache, &ak);
		if (ae && ae->gen == gen && ae->resolved != anc[i]) {
			if (ae->resolved == 0) {
				break;
			}
			ak.layer = ae->resolved;
		}
		ae = load_own(e, &ak, &err);
		if (err) {
			return err;
		}
		if (ae) {
			found = ak.layer;
			fm = ae->map;
			break;
		}
	}
	ce = bd_cache_get(e->cache, k);
	if (!ce) {
		return -ENOMEM;
	}
	free(ce->map);
	ce->map = NULL;
	ce->resolved = found;
	ce->gen = gen;
	/* bd_cache_get may have evicted the ancestor's entry; reload if so. */
	if (found) {
		struct bd_mkey ak = *k;
		ak.layer = found;
		struct bd_centry *ae = load_own(e, &ak, &err);
		fm = ae ? ae->map : NULL;
		if (err) {
			return err;
		}
	}
	*out = fm;
	return 0;
}

/* The layer's own list for writing, copying up the resolved ancestor's list (metadata only:
 * every data block gains a reference) if it has none. *created tells a new list. */
static struct bd_extmap *own_for_write(struct bd_engine *e, const struct bd_mkey *k, bool *created,
				       int *err)
{
	*created = false;
	struct bd_centry *ce = load_own(e, k, err);
	if (ce || *err) {
		return ce ? ce->map : NULL;
	}
	const struct bd_extmap *src;
	*err = resolve(e, k, &src);
	if (*err) {
		return NULL;
	}
	struct bd_extmap *m = malloc(sizeof(*m));
	if (!m) {
		*err = -ENOMEM;
		return NULL;
	}
	if (src) {
		*m = *src;
		for (uint32_t r = 0; r < m->nruns; r++) {
			if (m->runs[r].pblk == BD_PBLK_ZERO) {
				continue;
			}
			for (uint32_t i = 0; i < m->runs[r].len; i++) {
				bd_alloc_ref(&e->alloc, m->runs[r].pblk + i);
			}
		}
	} else {
		bd_extmap_init(m);
	}
	ce = bd_cache_get(e->cache, k);
	if (!ce) {
		free(m);
		*err = -ENOMEM;
		return NULL;
	}
	free(ce->map);
	ce->map = m;
	ce->resolved = k->layer;
	ce->gen = bd_cache_gen(e->cache);
	*created = true;
	e->nlists++;
	return m;
}

/* ------------------------------------------------------------------------------------------ */
/* Completion. */

static uint64_t min_read_seq(struct bd_engine *e)
{
	struct bd_op *o = TAILQ_FIRST(&e->reads);
	return o ? o->read_seq + 1 : e->seq + 1;
}

void bd_engine_reap(struct bd_engine *e)
{
	bd_alloc_reap(&e->alloc, min_read_seq(e));
}

static void op_complete(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	if (op->in_reads) {
		TAILQ_REMOVE(&e->reads, op, link);
		op->in_reads = false;
	}
	for (int i = 0; i < op->nruns; i++) {
		/* Reservations never committed (failure paths) go back. */
		bd_alloc_put(&e->alloc, op->runs[i].pblk, op->runs[i].len);
	}
	op->nruns = 0;
	if (op->idem) {
		op->idem->state = IDEM_DONE;
		op->idem->status = op->err;
		op->idem->miscompare = op->miscompare ? *op->miscompare : 0;
	}
	lock_release(op);
	bd_engine_reap(e);
	bd_done_cb cb = op->cb;
	void *arg = op->cb_arg;
	int err = op->err;
	op_free(e, op);
	cb(arg, err);
}

static void op_fail(struct bd_op *op, int err)
{
	op->err = err;
	op_complete(op);
}

/* ------------------------------------------------------------------------------------------ */
/* Validation. */

/* Returns 0 or -EINVAL; records the ancestry the request carries. */
static int validate(struct bd_engine *e, const struct bd_req *q, bool need_len)
{
	if (q->layer == 0 || q->family == 0) {
		return -EINVAL;
	}
	if (q->offset % BD_BLOCK || q->length % BD_BLOCK || (need_len && q->length == 0) ||
	    q->length > BD_MAX_IO) {
		return -EINVAL;
	}
	if ((q->offset >> BD_BLOCK_SHIFT) + (q->length >> BD_BLOCK_SHIFT) > (1ull << 32)) {
		return -EINVAL;
	}
	if (q->nancestry > 0) {
		for (uint32_t i = 0; i < q->nancestry; i++) {
			if (q->ancestry[i] == 0 || q->ancestry[i] == q->layer) {
				return -EINVAL;
			}
		}
		int rc = bd_layers_set(e->layers, q->family, q->layer, q->ancestry, q->nancestry);
		if (rc) {
			return rc;
		}
	}
	return 0;
}

static void key_of(const struct bd_req *q, uint64_t lb, struct bd_mkey *k)
{
	k->family = q->family;
	k->layer = q->layer;
	k->object = q->object;
	k->seg = (uint32_t)(lb >> BD_SEG_SHIFT);
}

/* ------------------------------------------------------------------------------------------ */
/* Read phase (READ, and the compare half of COMPARE_AND_WRITE). */

static void op_io_done(void *arg, int res);
static void write_phase(struct bd_op *op);
static void commit_phase(struct bd_op *op);

/* Map every block of the request; returns 0 or -errno. */
static int map_blocks(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	uint64_t lb0 = op->q.offset >> BD_BLOCK_SHIFT;
	const struct bd_extmap *m = NULL;
	uint32_t cur_seg = UINT32_MAX;
	for (uint32_t i = 0; i < op->nblocks; i++) {
		uint64_t lb = lb0 + i;
		struct bd_mkey k;
		key_of(&op->q, lb, &k);
		if (k.seg != cur_seg) {
			int rc = resolve(e, &k, &m);
			if (rc) {
				return rc;
			}
			cur_seg = k.seg;
		}
		if (m) {
			struct bd_bmap b =
				bd_extmap_lookup(m, (uint32_t)(lb & (BD_SEG_BLOCKS - 1)));
			op->pblk[i] = b.pblk;
			op->crc[i] = b.crc;
			if (b.pblk < BD_PBLK_NONE && b.pblk >= e->nblocks) {
				return -EIO;
			}
		} else {
			op->pblk[i] = BD_PBLK_NONE;
		}
	}
	return 0;
}

static void read_verify(struct bd_op *op, uint8_t *dst)
{
	struct bd_engine *e = op->e;
	for (uint32_t i = 0; i < op->nblocks; i++) {
		if (op->pblk[i] >= BD_PBLK_NONE) {
			continue;
		}
		uint32_t c = st_crc32c(0, dst + (size_t)i * BD_BLOCK, BD_BLOCK);
		if (c != op->crc[i]) {
			e->checksum_errors++;
			st_error("checksum mismatch: family %lu layer %lu object %lu block %lu "
				 "(pblk %lu): stored %08x, read %08x",
				 (unsigned long)op->q.family, (unsigned long)op->q.layer,
				 (unsigned long)op->q.object,
				 (unsigned long)((op->q.offset >> BD_BLOCK_SHIFT) + i),
				 (unsigned long)op->pblk[i], op->crc[i], c);
			/* Never hand out the bad data. */
			memset(dst + (size_t)i * BD_BLOCK, 0, BD_BLOCK);
			op->err = -EILSEQ;
		}
	}
}

static void read_done(struct bd_op *op)
{
	uint8_t *dst = op->kind == OP_CAW ? op->cawbuf : op->buf;
	if (op->in_reads) {
		TAILQ_REMOVE(&op->e->reads, op, link);
		op->in_reads = false;
	}
	if (op->err == 0) {
		read_verify(op, dst);
	}
	if (op->err || op->kind == OP_READ) {
		op_complete(op);
		return;
	}
	/* Compare-and-write: compare under the exclusive lock, then write. */
	for (size_t i = 0; i < op->q.length; i++) {
		if (dst[i] != op->cmp[i]) {
			*op->miscompare = i;
			op_fail(op, BD_ERR_MISCOMPARE);
			return;
		}
	}
	write_phase(op);
}

static void read_phase(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	uint8_t *dst = op->kind == OP_CAW ? op->cawbuf : op->buf;
	int rc = map_blocks(op);
	if (rc) {
		op_fail(op, rc);
		return;
	}
	op->phase = PH_READ;
	op->pending = 1; /* held until every sub is queued */
	int nsub = 0;
	for (uint32_t i = 0; i < op->nblocks;) {
		uint64_t p = op->pblk[i];
		if (p >= BD_PBLK_NONE) {
			memset(dst + (size_t)i * BD_BLOCK, 0, BD_BLOCK);
			i++;
			continue;
		}
		uint32_t j = i + 1;
		while (j < op->nblocks && op->pblk[j] == p + (j - i)) {
			j++;
		}
		struct op_sub *s = &op->subs[nsub++];
		s->op = op;
		s->iov.iov_base = dst + (size_t)i * BD_BLOCK;
		s->iov.iov_len = (size_t)(j - i) * BD_BLOCK;
		op->pending++;
		st_reactor_readv(e->r, &s->io, e->fd, &s->iov, 1, p * BD_BLOCK, op_io_done, s);
		i = j;
	}
	if (nsub > 0) {
		op->read_seq = e->seq++;
		TAILQ_INSERT_TAIL(&e->reads, op, link);
		op->in_reads = true;
	}
	if (--op->pending == 0) {
		read_done(op);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Write phase. */

static void fsync_done(void *arg, int res)
{
	struct bd_op *op = arg;
	if (res < 0) {
		op_fail(op, -EIO);
		return;
	}
	commit_phase(op);
}

static void op_io_done(void *arg, int res)
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
			st_reactor_readv(op->e->r, &s->io, op->e->fd, &s->iov, 1, off, op_io_done,
					 s);
		} else {
			st_reactor_writev(op->e->r, &s->io, op->e->fd, &s->iov, 1, off, op_io_done,
					  s);
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
		read_done(op);
		return;
	}
	if (op->err) {
		op_complete(op);
		return;
	}
	if (op->q.fua) {
		st_reactor_fsync(op->e->r, &op->fsync_io, op->e->fd, true, fsync_done, op);
		return;
	}
	commit_phase(op);
}

static void write_phase(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	if (e->failed) {
		op_fail(op, -EIO);
		return;
	}
	if (op->kind == OP_ZERO || op->kind == OP_TRIM) {
		commit_phase(op);
		return;
	}
	int nr = bd_alloc_get(&e->alloc, op->nblocks, op->runs, (int)op->nblocks);
	if (nr < 0) {
		op_fail(op, nr);
		return;
	}
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
		st_reactor_writev(e->r, &s->io, e->fd, &s->iov, 1, op->runs[r].pblk * BD_BLOCK,
				  op_io_done, s);
		bi += op->runs[r].len;
	}
}

static void group_schedule(struct bd_engine *e);

/* Every op gathered in gwait is committed (err 0) or not (err < 0): to gdone, completed by
 * group_run. */
static void group_settle(struct bd_engine *e, int err)
{
	struct bd_op *op;
	e->ngdirty = 0;
	e->gxkv_len = 0;
	if (TAILQ_EMPTY(&e->gwait)) {
		return;
	}
	while ((op = TAILQ_FIRST(&e->gwait))) {
		TAILQ_REMOVE(&e->gwait, op, link);
		if (err && op->err == 0) {
			op->err = err;
		}
		TAILQ_INSERT_TAIL(&e->gdone, op, link);
	}
	e->gcommits++;
	bd_cache_committed(e->cache, e->gseq);
	e->gseq++;
	e->gsync = false;
	group_schedule(e);
}

/* Remember a list the group edited; it is encoded once, at commit time, whatever the number
 * of ops that touched it. Returns 0 or -ENOMEM. */
static int group_dirty_list(struct bd_engine *e, const struct bd_mkey *k)
{
	struct bd_centry *ce = bd_cache_find(e->cache, k);
	if (bd_cache_pinned(ce) == e->gseq) {
		return 0; /* already listed */
	}
	if (e->ngdirty == e->gdirty_cap) {
		size_t nc = e->gdirty_cap ? e->gdirty_cap * 2 : 256;
		struct bd_mkey *nd = realloc(e->gdirty, nc * sizeof(*nd));
		if (!nd) {
			return -ENOMEM;
		}
		e->gdirty = nd;
		e->gdirty_cap = nc;
	}
	bd_cache_pin(e->cache, ce, e->gseq);
	e->gdirty[e->ngdirty++] = *k;
	return 0;
}

static struct raw_seen *raw_slot(struct bd_engine *e, const uint8_t *k, size_t klen)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < klen; i++) {
		h = (h ^ k[i]) * 16777619u;
	}
	return &e->raw_seen[h % RAW_SEEN_SLOTS];
}

/* A raw key of the group (the PG version, family -> pool). The last value of a key in the
 * group wins; a key whose committed value is already this one is not written again (the
 * family -> pool key rides on every mutation and never changes). */
static void group_raw(struct bd_engine *e, const struct bd_xkv *x)
{
	size_t need = 4 + x->klen + x->vlen;
	if (x->klen > 0x7fff || x->vlen > 0x7fff) {
		bd_batch_put_raw(e->gbatch, x->key, x->klen, x->val, x->vlen);
		return;
	}
	/* Drop an earlier value of the same key in this group (ops of a group are few). */
	for (size_t off = 0; off < e->gxkv_len;) {
		uint8_t *r = e->gxkv + off;
		size_t kl = (size_t)r[0] << 8 | r[1], vl = (size_t)r[2] << 8 | r[3];
		if (kl == x->klen && memcmp(r + 4, x->key, kl) == 0) {
			r[2] |= 0x80; /* dead: the top bit of vlen */
		}
		off += 4 + kl + (vl & 0x7fff);
	}
	if (e->gxkv_len + need > e->gxkv_cap) {
		size_t nc = e->gxkv_cap ? e->gxkv_cap * 2 : 4096;
		while (nc < e->gxkv_len + need) {
			nc *= 2;
		}
		uint8_t *n = realloc(e->gxkv, nc);
		if (!n) {
			bd_batch_put_raw(e->gbatch, x->key, x->klen, x->val, x->vlen);
			return;
		}
		e->gxkv = n;
		e->gxkv_cap = nc;
	}
	uint8_t *r = e->gxkv + e->gxkv_len;
	r[0] = (uint8_t)(x->klen >> 8);
	r[1] = (uint8_t)x->klen;
	r[2] = (uint8_t)(x->vlen >> 8);
	r[3] = (uint8_t)x->vlen;
	memcpy(r + 4, x->key, x->klen);
	memcpy(r + 4 + x->klen, x->val, x->vlen);
	e->gxkv_len += need;
}

/* Encode the group's lists and raw keys into gbatch. */
static void group_build(struct bd_engine *e)
{
	for (size_t i = 0; i < e->ngdirty; i++) {
		struct bd_centry *ce = bd_cache_find(e->cache, &e->gdirty[i]);
		if (!ce || !ce->map) {
			/* Cannot happen: pinned entries are neither evicted nor dropped. */
			st_error("group commit: an edited list left the cache");
			e->failed = true;
			continue;
		}
		bd_batch_put_map(e->gbatch, &e->gdirty[i], ce->map);
	}
	for (size_t off = 0; off < e->gxkv_len;) {
		const uint8_t *r = e->gxkv + off;
		size_t kl = (size_t)r[0] << 8 | r[1], vl = (size_t)(r[2] & 0x7f) << 8 | r[3];
		bool dead = r[2] & 0x80;
		const uint8_t *k = r + 4, *v = r + 4 + kl;
		off += 4 + kl + vl;
		if (dead) {
			continue;
		}
		struct raw_seen *rs = raw_slot(e, k, kl);
		if (kl <= RAW_SEEN_MAX && vl <= RAW_SEEN_MAX) {
			if (rs->klen == kl && rs->vlen == vl && memcmp(rs->k, k, kl) == 0 &&
			    memcmp(rs->v, v, vl) == 0) {
				continue;
			}
			rs->klen = (uint8_t)kl;
			rs->vlen = (uint8_t)vl;
			memcpy(rs->k, k, kl);
			memcpy(rs->v, v, vl);
		} else if (rs->klen == kl && memcmp(rs->k, k, kl) == 0) {
			rs->klen = 0; /* the value is too long to remember: forget the old one */
		}
		bd_batch_put_raw(e->gbatch, k, kl, v, vl);
	}
}

/*
 * Commit the batch; on failure the engine stops accepting mutations (memory is ahead of the
 * index; a restart rebuilds from the index). One WriteBatch holds, in this order: the edits
 * of every op gathered for the group commit, whatever the caller put into e->batch, and the
 * bitmap chunks all of them dirtied, so the chunks always match the lists they describe.
 */
int bd_engine_commit_batch(struct bd_engine *e, bool sync)
{
	group_build(e);
	if (bd_batch_count(e->batch) > 0) {
		/* Direct writes may change raw keys behind raw_seen's back. */
		memset(e->raw_seen, 0, sizeof(e->raw_seen));
		bd_batch_append(e->gbatch, e->batch);
		bd_batch_clear(e->batch);
	}
	uint8_t bits[BD_CHUNK_BYTES];
	for (size_t i = 0; i < e->alloc.ndirty; i++) {
		bd_alloc_chunk_encode(&e->alloc, e->alloc.dirty[i], bits);
		bd_batch_put_chunk(e->gbatch, e->alloc.dirty[i], bits);
	}
	bd_alloc_clear_dirty(&e->alloc);
	int rc = e->failed ? -EIO : bd_index_commit(e->ix, e->gbatch, sync || e->gsync);
	bd_batch_clear(e->gbatch);
	if (rc) {
		if (!e->failed) {
			st_error("index commit failed: refusing further mutations");
		}
		memset(e->raw_seen, 0, sizeof(e->raw_seen));
		e->failed = true;
	}
	group_settle(e, rc);
	return rc;
}

void bd_engine_drain(struct bd_engine *e)
{
	if (!TAILQ_EMPTY(&e->gwait)) {
		bd_engine_commit_batch(e, false);
	}
}

/* Move blocks whose last reference went to limbo (after the commit that dropped it). */
void bd_engine_defer_frees(struct bd_engine *e, const uint64_t *freed, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (bd_alloc_defer_free(&e->alloc, freed[i], e->seq) < 0) {
			st_warn("limbo full: block %lu leaks until restart",
				(unsigned long)freed[i]);
		}
	}
}

/*
 * Group commit. An op whose data is written edits its lists in memory and puts them into the
 * shared batch (commit_phase), then waits in gwait. group_run, armed as a zero timer when the
 * first op of a group arrives, runs after the reactor has handled the rest of the current turn's
 * completions, so every write that finished in that turn shares one WriteBatch and one
 * rocksdb_write (one WAL append, one memtable insert pass, each dirty bitmap chunk once).
 *
 * Why this keeps the guarantees of one commit per op:
 *  - an op is in gwait only after its data write (and, with FUA, its fdatasync) completed, so
 *    the index never points at unwritten data;
 *  - replies run only after the commit (gdone), and the op keeps its object lock until then,
 *    so objcopy and compare-and-write never see a half-committed object;
 *  - blocks an edit displaced go to limbo only after the commit (a crash before it leaves the
 *    old lists pointing at intact blocks);
 *  - a read between the edit and the commit may see the new list: its data is already on disk,
 *    and the write has not been acknowledged, so either answer is a legal read of a racing
 *    write; a flush covers only acknowledged writes, which are committed;
 *  - cache entries holding uncommitted edits are pinned against eviction, and everything that
 *    reads the index directly (layer delete, flatten, bd_engine_index) drains first.
 */
static void group_run(void *arg, int res)
{
	struct bd_engine *e = arg;
	(void)res;
	bd_engine_drain(e); /* gsched still set: settling arms no second timer */
	e->gsched = false;
	struct bd_op *op;
	while ((op = TAILQ_FIRST(&e->gdone))) {
		TAILQ_REMOVE(&e->gdone, op, link);
		if (op->err == 0) {
			/* The new blocks are referenced now: not a reservation any more. */
			op->nruns = 0;
			bd_engine_defer_frees(e, op->freed, op->nfreed);
		}
		op_complete(op);
	}
}

static void group_schedule(struct bd_engine *e)
{
	if (!e->gsched) {
		e->gsched = true;
		st_reactor_timer(e->r, &e->gio, 0, group_run, e);
	}
}

/*
 * Apply the op to the layer's own lists (one segment at a time, each encoded into the batch at
 * once), then join the group commit. Runs synchronously on the reactor thread.
 */
static void commit_phase(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	uint64_t lb0 = op->q.offset >> BD_BLOCK_SHIFT;
	uint32_t nfreed = 0;
	int err = 0;
	if (e->failed) {
		op_fail(op, -EIO);
		return;
	}
	for (uint32_t i = 0; i < op->nblocks && !err;) {
		uint64_t lb = lb0 + i;
		struct bd_mkey k;
		key_of(&op->q, lb, &k);
		uint32_t first = (uint32_t)(lb & (BD_SEG_BLOCKS - 1));
		uint32_t n = BD_SEG_BLOCKS - first;
		if (n > op->nblocks - i) {
			n = op->nblocks - i;
		}
		if (op->kind == OP_TRIM) {
			/* Nothing to hide when nothing serves this segment. */
			const struct bd_extmap *cur;
			err = resolve(e, &k, &cur);
			if (err || !cur) {
				i += n;
				continue;
			}
		}
		bool created;
		struct bd_extmap *m = own_for_write(e, &k, &created, &err);
		if (!m) {
			break;
		}
		struct bd_bmap v[BD_SEG_BLOCKS];
		bd_extmap_expand(m, v);
		for (uint32_t j = 0; j < n; j++) {
			struct bd_bmap *b = &v[first + j];
			if (b->pblk < BD_PBLK_NONE && bd_alloc_unref(&e->alloc, b->pblk)) {
				op->freed[nfreed++] = b->pblk;
			}
			switch (op->kind) {
			case OP_TRIM:
				b->pblk = BD_PBLK_NONE;
				break;
			case OP_ZERO:
				b->pblk = BD_PBLK_ZERO;
				break;
			default:
				b->pblk = op->pblk[i + j];
				b->crc = op->crc[i + j];
				bd_alloc_ref(&e->alloc, b->pblk);
				break;
			}
		}
		bd_extmap_compact(m, v);
		err = group_dirty_list(e, &k);
		i += n;
	}
	if (err) {
		/* Only ENOMEM/EIO get here; what was edited in memory is not committed, so fail
		 * the engine's mutations to be safe (and every op gathered with this one). */
		bd_batch_clear(e->gbatch);
		bd_alloc_clear_dirty(&e->alloc);
		e->failed = true;
		group_settle(e, -EIO);
		op_fail(op, err);
		return;
	}
	/* Keys the caller rides on this commit (the PG version: replication). */
	for (uint32_t x = 0; x < op->q.nxkv; x++) {
		group_raw(e, &op->q.xkv[x]);
	}
	op->nfreed = nfreed;
	e->gsync |= op->q.fua;
	e->gops++;
	TAILQ_INSERT_TAIL(&e->gwait, op, link);
	group_schedule(e);
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points. */

static void op_locked(struct bd_op *op)
{
	if (op->kind == OP_CAW) {
		read_phase(op);
	} else {
		write_phase(op);
	}
}

void bd_read(struct bd_engine *e, const struct bd_req *q, void *buf, bd_done_cb cb, void *cb_arg)
{
	int rc = validate(e, q, true);
	if (rc) {
		cb(cb_arg, rc);
		return;
	}
	struct bd_op *op = op_new(e, OP_READ, q->length >> BD_BLOCK_SHIFT);
	if (!op) {
		cb(cb_arg, -ENOMEM);
		return;
	}
	op->q = *q;
	op->q.ancestry = NULL;
	op->q.nancestry = 0;
	op->buf = buf;
	op->cb = cb;
	op->cb_arg = cb_arg;
	read_phase(op);
}

static void mutate(struct bd_engine *e, enum op_kind kind, const struct bd_req *q, const void *cmp,
		   const void *data, uint64_t *miscompare, bd_done_cb cb, void *cb_arg)
{
	int rc = validate(e, q, true);
	if (rc) {
		cb(cb_arg, rc);
		return;
	}
	if (e->failed) {
		cb(cb_arg, -EIO);
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
	struct bd_op *op = op_new(e, kind, q->length >> BD_BLOCK_SHIFT);
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
	if (kind == OP_CAW) {
		op->cawbuf = aligned_alloc(BD_BLOCK, q->length);
		if (!op->cawbuf) {
			op_fail(op, -ENOMEM);
			return;
		}
	}
	if (q->client_id != 0) {
		op->idem = idem_insert(e, q->client_id, q->seq);
	}
	if (lock_acquire(op, kind == OP_CAW, &rc)) {
		op_locked(op);
	} else if (rc) {
		op_fail(op, rc);
	}
}

void bd_write(struct bd_engine *e, const struct bd_req *q, const void *buf, bd_done_cb cb,
	      void *cb_arg)
{
	mutate(e, OP_WRITE, q, NULL, buf, NULL, cb, cb_arg);
}

void bd_write_zeroes(struct bd_engine *e, const struct bd_req *q, bd_done_cb cb, void *cb_arg)
{
	mutate(e, OP_ZERO, q, NULL, NULL, NULL, cb, cb_arg);
}

void bd_trim(struct bd_engine *e, const struct bd_req *q, bd_done_cb cb, void *cb_arg)
{
	mutate(e, OP_TRIM, q, NULL, NULL, NULL, cb, cb_arg);
}

void bd_compare_and_write(struct bd_engine *e, const struct bd_req *q, const void *cmp,
			  const void *data, uint64_t *miscompare, bd_done_cb cb, void *cb_arg)
{
	*miscompare = 0;
	mutate(e, OP_CAW, q, cmp, data, miscompare, cb, cb_arg);
}

struct flush_ctx {
	struct bd_engine *e;
	struct st_io io;
	bd_done_cb cb;
	void *cb_arg;
};

static void flush_fsync_done(void *arg, int res)
{
	struct flush_ctx *f = arg;
	int err = res < 0 ? -EIO : 0;
	if (res < 0) {
		st_error("fdatasync of the data file failed: %d", res);
	}
	/* The data of every completed write is durable; now the index that points at it. */
	if (!err) {
		err = bd_index_sync(f->e->ix);
	}
	bd_done_cb cb = f->cb;
	void *cb_arg = f->cb_arg;
	free(f);
	cb(cb_arg, err);
}

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
	st_reactor_fsync(e->r, &f->io, e->fd, true, flush_fsync_done, f);
}

/* ------------------------------------------------------------------------------------------ */
/* Synchronous metadata operations. */

int bd_block_status(struct bd_engine *e, const struct bd_req *q, struct bd_status_ext *out,
		    size_t max, size_t *n)
{
	*n = 0;
	int rc = validate(e, q, true);
	if (rc) {
		return rc;
	}
	uint64_t lb0 = q->offset >> BD_BLOCK_SHIFT;
	uint32_t nb = q->length >> BD_BLOCK_SHIFT;
	const struct bd_extmap *m = NULL;
	uint32_t cur_seg = UINT32_MAX;
	for (uint32_t i = 0; i < nb; i++) {
		uint64_t lb = lb0 + i;
		struct bd_mkey k;
		key_of(q, lb, &k);
		if (k.seg != cur_seg) {
			rc = resolve(e, &k, &m);
			if (rc) {
				return rc;
			}
			cur_seg = k.seg;
		}
		int state = 0;
		if (m) {
			struct bd_bmap b =
				bd_extmap_lookup(m, (uint32_t)(lb & (BD_SEG_BLOCKS - 1)));
			state = b.pblk == BD_PBLK_NONE ? 0 : b.pblk == BD_PBLK_ZERO ? 2 : 1;
		}
		if (*n > 0 && out[*n - 1].state == state) {
			out[*n - 1].length += BD_BLOCK;
			continue;
		}
		if (*n == max) {
			break; /* the caller asks again from where this ends */
		}
		out[*n].offset = lb * BD_BLOCK;
		out[*n].length = BD_BLOCK;
		out[*n].state = state;
		(*n)++;
	}
	return 0;
}

struct collected {
	struct bd_mkey *keys;
	struct bd_extmap *maps;
	size_t n, cap;
	int err;
};

static int collect_fn(void *arg, const struct bd_mkey *k, const struct bd_extmap *m, int err)
{
	struct collected *c = arg;
	if (err) {
		c->err = err;
		return 1;
	}
	if (c->n == c->cap) {
		size_t nc = c->cap ? c->cap * 2 : 64;
		struct bd_mkey *nk = realloc(c->keys, nc * sizeof(*nk));
		if (!nk) {
			c->err = -ENOMEM;
			return 1;
		}
		c->keys = nk;
		struct bd_extmap *nm = realloc(c->maps, nc * sizeof(*nm));
		if (!nm) {
			c->err = -ENOMEM;
			return 1;
		}
		c->maps = nm;
		c->cap = nc;
	}
	c->keys[c->n] = *k;
	c->maps[c->n] = *m;
	c->n++;
	return 0;
}

static void ref_list(struct bd_engine *e, const struct bd_extmap *m)
{
	for (uint32_t r = 0; r < m->nruns; r++) {
		if (m->runs[r].pblk == BD_PBLK_ZERO) {
			continue;
		}
		for (uint32_t i = 0; i < m->runs[r].len; i++) {
			bd_alloc_ref(&e->alloc, m->runs[r].pblk + i);
		}
	}
}

/* Does layer k->layer have a list of its own for this segment (committed)? 1, 0 or -errno. */
static int has_own(struct bd_engine *e, const struct bd_mkey *k)
{
	int err;
	struct bd_centry *ce = load_own(e, k, &err);
	return ce ? 1 : err;
}

#define META_BATCH 256

int bd_layer_delete(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t *children,
		    uint32_t nchildren, uint64_t *lists_dropped, uint64_t *lists_moved,
		    uint64_t *blocks_freed)
{
	uint64_t dropped = 0, moved = 0, freed_total = 0;
	if (family == 0 || layer == 0) {
		return -EINVAL;
	}
	if (e->failed) {
		return -EIO;
	}
	bd_engine_drain(e);
	struct collected c = {0};
	int rc = bd_index_scan(e->ix, family, layer, collect_fn, &c);
	if (rc == 0 && c.err) {
		rc = c.err;
	}
	uint64_t *freed = malloc(sizeof(uint64_t) * (META_BATCH * BD_SEG_BLOCKS + 1));
	if (!freed) {
		rc = rc ? rc : -ENOMEM;
	}
	size_t nfreed = 0, inbatch = 0;
	for (size_t i = 0; rc == 0 && i < c.n; i++) {
		const struct bd_mkey *k = &c.keys[i];
		const struct bd_extmap *m = &c.maps[i];
		for (uint32_t ch = 0; ch < nchildren; ch++) {
			struct bd_mkey ck = *k;
			ck.layer = children[ch];
			if (ck.layer == 0 || ck.layer == layer) {
				continue;
			}
			int own = has_own(e, &ck);
			if (own < 0) {
				rc = own;
				break;
			}
			if (own) {
				continue;
			}
			/* The child read through this list: give it its own copy. */
			ref_list(e, m);
			bd_batch_put_map(e->batch, &ck, m);
			bd_cache_drop(e->cache, &ck);
			e->nlists++;
			moved++;
		}
		if (rc) {
			break;
		}
		for (uint32_t r = 0; r < m->nruns; r++) {
			if (m->runs[r].pblk == BD_PBLK_ZERO) {
				continue;
			}
			for (uint32_t b = 0; b < m->runs[r].len; b++) {
				if (bd_alloc_unref(&e->alloc, m->runs[r].pblk + b)) {
					freed[nfreed++] = m->runs[r].pblk + b;
				}
			}
		}
		bd_batch_del_map(e->batch, k);
		bd_cache_drop(e->cache, k);
		e->nlists--;
		dropped++;
		if (++inbatch == META_BATCH || i + 1 == c.n) {
			rc = bd_engine_commit_batch(e, true);
			if (rc == 0) {
				bd_engine_defer_frees(e, freed, (uint32_t)nfreed);
				freed_total += nfreed;
			}
			nfreed = 0;
			inbatch = 0;
		}
	}
	if (rc) {
		bd_batch_clear(e->batch);
		if (inbatch) {
			e->failed = true; /* memory ahead of the index: restart rebuilds */
		}
	}
	bd_cache_invalidate(e->cache);
	bd_layers_forget(e->layers, family, layer);
	bd_engine_reap(e);
	free(freed);
	free(c.keys);
	free(c.maps);
	if (lists_dropped) {
		*lists_dropped = dropped;
	}
	if (lists_moved) {
		*lists_moved = moved;
	}
	if (blocks_freed) {
		*blocks_freed = freed_total;
	}
	return rc;
}

int bd_flatten(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t *anc,
	       uint32_t nanc, uint64_t *lists_copied)
{
	uint64_t copied = 0;
	if (family == 0 || layer == 0) {
		return -EINVAL;
	}
	if (e->failed) {
		return -EIO;
	}
	bd_engine_drain(e);
	if (nanc > 0) {
		int rc = bd_layers_set(e->layers, family, layer, anc, nanc);
		if (rc) {
			return rc;
		}
	} else {
		int n = layer_ancestry(e, family, layer, &anc);
		nanc = (uint32_t)n;
	}
	/* Copy the ancestry: layers_set below may replace the cached array. */
	uint64_t *chain = malloc((nanc ? nanc : 1) * sizeof(*chain));
	if (!chain) {
		return -ENOMEM;
	}
	if (nanc) {
		memcpy(chain, anc, nanc * sizeof(*chain));
	}
	int rc = 0;
	/* Nearest ancestor first: the first list found for a segment is its resolution. Each
	 * ancestor's copies are committed before the next is scanned, so has_own() sees them. */
	for (uint32_t a = 0; a < nanc && rc == 0; a++) {
		struct collected c = {0};
		rc = bd_index_scan(e->ix, family, chain[a], collect_fn, &c);
		if (rc == 0 && c.err) {
			rc = c.err;
		}
		size_t inbatch = 0;
		for (size_t i = 0; rc == 0 && i < c.n; i++) {
			struct bd_mkey k = c.keys[i];
			k.layer = layer;
			int own = has_own(e, &k);
			if (own < 0) {
				rc = own;
				break;
			}
			if (!own) {
				ref_list(e, &c.maps[i]);
				bd_batch_put_map(e->batch, &k, &c.maps[i]);
				bd_cache_drop(e->cache, &k);
				e->nlists++;
				copied++;
				inbatch++;
			}
			if (inbatch == META_BATCH || (i + 1 == c.n && inbatch)) {
				rc = bd_engine_commit_batch(e, true);
				inbatch = 0;
			}
		}
		if (rc && inbatch) {
			bd_batch_clear(e->batch);
			e->failed = true;
		}
		free(c.keys);
		free(c.maps);
	}
	free(chain);
	bd_cache_invalidate(e->cache);
	if (rc == 0) {
		/* The layer no longer depends on its ancestors. */
		bd_layers_set(e->layers, family, layer, NULL, 0);
	}
	if (lists_copied) {
		*lists_copied = copied;
	}
	return rc;
}

void bd_engine_space(struct bd_engine *e, struct bd_space *s)
{
	s->total_blocks = e->nblocks;
	s->free_blocks = e->alloc.nfree;
	s->used_blocks = e->nblocks - e->alloc.nfree;
	s->checksum_errors = e->checksum_errors;
	s->lists = e->nlists;
}

/* ------------------------------------------------------------------------------------------ */
/* Open, rebuild, close. */

struct rebuild {
	struct bd_engine *e;
	uint64_t *owner; /* per block: hash of the logical place that first referenced it */
};

static uint64_t place_hash(const struct bd_mkey *k, uint32_t lblk)
{
	uint64_t h = k->family * 0x9E3779B97F4A7C15ull ^ k->object * 0xBF58476D1CE4E5B9ull ^
		     ((uint64_t)k->seg << 7 | lblk) * 0x94D049BB133111EBull;
	return (h ^ (h >> 31)) | 1;
}

static int rebuild_fn(void *arg, const struct bd_mkey *k, const struct bd_extmap *m, int err)
{
	struct rebuild *rb = arg;
	struct bd_engine *e = rb->e;
	e->rep.lists++;
	if (err) {
		e->rep.bad_lists++;
		st_error("undecodable extent list: family %lu layer %lu object %lu seg %u",
			 (unsigned long)k->family, (unsigned long)k->layer,
			 (unsigned long)k->object, k->seg);
		return 0;
	}
	for (uint32_t r = 0; r < m->nruns; r++) {
		if (m->runs[r].pblk == BD_PBLK_ZERO) {
			continue;
		}
		for (uint32_t i = 0; i < m->runs[r].len; i++) {
			uint64_t p = m->runs[r].pblk + i;
			if (p >= e->nblocks) {
				e->rep.out_of_range++;
				continue;
			}
			e->rep.references++;
			/* Sharing is legitimate only between layers' copies of the same place. */
			uint64_t h = place_hash(k, m->runs[r].lblk + i);
			if (rb->owner) {
				if (rb->owner[p] == 0) {
					rb->owner[p] = h;
				} else if (rb->owner[p] != h) {
					e->rep.double_refs++;
				}
			}
			bd_alloc_ref(&e->alloc, p);
		}
	}
	return 0;
}

/* Rebuild ref counts from the index and compare with the persisted bitmap; repair unless
 * fsck_only. Returns 0 or -errno. */
static int rebuild(struct bd_engine *e, bool repair)
{
	struct rebuild rb = {.e = e,
			     .owner = calloc(e->nblocks ? e->nblocks : 1, sizeof(uint64_t))};
	memset(&e->rep, 0, sizeof(e->rep));
	int rc = bd_index_scan(e->ix, 0, 0, rebuild_fn, &rb);
	free(rb.owner);
	if (rc) {
		return rc;
	}
	e->nlists = e->rep.lists - e->rep.bad_lists;
	bd_alloc_sync_inuse(&e->alloc);
	e->rep.referenced = e->alloc.nreferenced;
	uint8_t want[BD_CHUNK_BYTES], have[BD_CHUNK_BYTES];
	uint64_t repaired = 0;
	for (uint64_t c = 0; c < bd_alloc_nchunks(&e->alloc); c++) {
		bd_alloc_chunk_encode(&e->alloc, c, want);
		rc = bd_index_get_chunk(e->ix, c, have);
		if (rc < 0) {
			return rc;
		}
		if (rc == 0) {
			memset(have, 0, sizeof(have));
		}
		bool differ = false;
		for (size_t i = 0; i < BD_CHUNK_BYTES; i++) {
			e->rep.persisted += (uint64_t)__builtin_popcount(have[i]);
			if (have[i] == want[i]) {
				continue;
			}
			differ = true;
			e->rep.leaked += (uint64_t)__builtin_popcount(have[i] & ~want[i] & 0xff);
			e->rep.missing += (uint64_t)__builtin_popcount(want[i] & ~have[i] & 0xff);
		}
		if (differ && repair) {
			bd_batch_put_chunk(e->batch, c, want);
			repaired++;
		}
	}
	bd_alloc_clear_dirty(&e->alloc);
	if (repaired) {
		st_warn("repaired %lu persisted bitmap chunks (%lu blocks leaked, %lu missing)",
			(unsigned long)repaired, (unsigned long)e->rep.leaked,
			(unsigned long)e->rep.missing);
		rc = bd_index_commit(e->ix, e->batch, true);
		bd_batch_clear(e->batch);
		return rc;
	}
	return 0;
}

static int open_data(const char *path, uint64_t size, uint64_t *bytes)
{
	int fd = open(path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
	if (fd < 0) {
		int err = -errno;
		st_error("open %s: %s", path, strerror(errno));
		return err;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	if (S_ISBLK(st.st_mode)) {
		uint64_t b = 0;
		if (ioctl(fd, BLKGETSIZE64, &b) < 0) {
			int err = -errno;
			close(fd);
			return err;
		}
		*bytes = b;
		return fd;
	}
	if ((uint64_t)st.st_size < size) {
		/* Sparse: thin provisioning all the way down. */
		if (ftruncate(fd, (off_t)size) < 0) {
			int err = -errno;
			st_error("ftruncate %s: %s", path, strerror(errno));
			close(fd);
			return err;
		}
		st.st_size = (off_t)size;
	}
	*bytes = (uint64_t)st.st_size;
	return fd;
}

int bd_engine_open(struct st_reactor *r, const struct bd_engine_opts *o, struct bd_engine **out)
{
	int rc = -ENOMEM;
	struct bd_engine *e = calloc(1, sizeof(*e));
	if (!e) {
		return -ENOMEM;
	}
	e->r = r;
	e->fd = -1;
	TAILQ_INIT(&e->reads);
	TAILQ_INIT(&e->free_ops);
	TAILQ_INIT(&e->gwait);
	TAILQ_INIT(&e->gdone);
	e->gseq = 1;
	e->idem_ring = calloc(IDEM_CAP, sizeof(*e->idem_ring));
	e->batch = bd_batch_new();
	e->gbatch = bd_batch_new();
	if (!e->idem_ring || !e->batch || !e->gbatch) {
		goto fail;
	}
	if ((rc = bd_cache_new(&e->cache, o->cache_entries < 64 ? 65536 : o->cache_entries)) ||
	    (rc = bd_layers_new(&e->layers))) {
		goto fail;
	}
	uint64_t bytes = 0;
	e->fd = open_data(o->data_path, o->size, &bytes);
	if (e->fd < 0) {
		rc = e->fd;
		goto fail;
	}
	char dbpath[4096];
	if (o->db_path) {
		snprintf(dbpath, sizeof(dbpath), "%s", o->db_path);
	} else {
		snprintf(dbpath, sizeof(dbpath), "%s.db", o->data_path);
	}
	if ((rc = bd_index_open(&e->ix, dbpath))) {
		goto fail;
	}
	struct bd_super sb;
	rc = bd_index_get_super(e->ix, &sb);
	if (rc < 0) {
		goto fail;
	}
	if (rc == 0) {
		memset(&sb, 0, sizeof(sb));
		sb.version = 1;
		sb.block_size = BD_BLOCK;
		sb.nblocks = bytes / BD_BLOCK;
		int ufd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
		if (ufd >= 0) {
			if (read(ufd, sb.uuid, sizeof(sb.uuid)) != (ssize_t)sizeof(sb.uuid)) {
				memset(sb.uuid, 0x5a, sizeof(sb.uuid));
			}
			close(ufd);
		}
		bd_batch_put_super(e->batch, &sb);
		rc = bd_index_commit(e->ix, e->batch, true);
		bd_batch_clear(e->batch);
		if (rc) {
			goto fail;
		}
	} else if (sb.block_size != BD_BLOCK || sb.nblocks > bytes / BD_BLOCK) {
		st_error("%s: index says %lu blocks of %u, data holds %lu bytes", o->data_path,
			 (unsigned long)sb.nblocks, sb.block_size, (unsigned long)bytes);
		rc = -EINVAL;
		goto fail;
	}
	e->nblocks = sb.nblocks;
	memcpy(e->uuid, sb.uuid, sizeof(e->uuid));
	if (e->nblocks == 0) {
		st_error("%s: data file too small", o->data_path);
		rc = -EINVAL;
		goto fail;
	}
	if ((rc = bd_alloc_init(&e->alloc, e->nblocks))) {
		goto fail;
	}
	if ((rc = rebuild(e, !o->fsck_only))) {
		goto fail;
	}
	*out = e;
	return 0;
fail:
	bd_engine_close(e);
	return rc;
}

void bd_engine_uuid(const struct bd_engine *e, char out[37])
{
	const uint8_t *u = e->uuid;
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
		 u[13], u[14], u[15]);
}

const struct bd_fsck_report *bd_engine_fsck_report(const struct bd_engine *e)
{
	return &e->rep;
}

struct verify {
	struct bd_engine *e;
	uint8_t *buf;
	struct bd_fsck_report *rep;
};

static int verify_fn(void *arg, const struct bd_mkey *k, const struct bd_extmap *m, int err)
{
	struct verify *v = arg;
	if (err) {
		return 0;
	}
	for (uint32_t r = 0; r < m->nruns; r++) {
		if (m->runs[r].pblk == BD_PBLK_ZERO) {
			continue;
		}
		for (uint32_t i = 0; i < m->runs[r].len; i++) {
			uint64_t p = m->runs[r].pblk + i;
			if (p >= v->e->nblocks) {
				continue;
			}
			if (pread(v->e->fd, v->buf, BD_BLOCK, (off_t)(p * BD_BLOCK)) != BD_BLOCK ||
			    st_crc32c(0, v->buf, BD_BLOCK) != m->crc[m->runs[r].lblk + i]) {
				v->rep->checksum_errors++;
				st_error("fsck: bad block %lu (family %lu layer %lu object %lu "
					 "seg %u block %u)",
					 (unsigned long)p, (unsigned long)k->family,
					 (unsigned long)k->layer, (unsigned long)k->object, k->seg,
					 m->runs[r].lblk + i);
			}
		}
	}
	return 0;
}

int bd_engine_verify_data(struct bd_engine *e, struct bd_fsck_report *rep)
{
	struct verify v = {.e = e, .rep = rep, .buf = aligned_alloc(BD_BLOCK, BD_BLOCK)};
	if (!v.buf) {
		return -ENOMEM;
	}
	int rc = bd_index_scan(e->ix, 0, 0, verify_fn, &v);
	free(v.buf);
	return rc;
}

void bd_engine_close(struct bd_engine *e)
{
	if (!e) {
		return;
	}
	if (e->fd >= 0) {
		close(e->fd);
	}
	bd_index_close(e->ix);
	bd_alloc_fini(&e->alloc);
	bd_cache_free(e->cache);
	bd_layers_free(e->layers);
	bd_batch_free(e->batch);
	bd_batch_free(e->gbatch);
	free(e->gdirty);
	free(e->gxkv);
	struct bd_op *op;
	while ((op = TAILQ_FIRST(&e->free_ops))) {
		TAILQ_REMOVE(&e->free_ops, op, link);
		free(op);
	}
	for (size_t i = 0; i < 1024; i++) {
		struct obj_lock *l = e->locks[i];
		while (l) {
			struct obj_lock *nx = l->next;
			free(l);
			l = nx;
		}
	}
	free(e->idem_ring);
	free(e);
}

struct bd_index *bd_engine_index(struct bd_engine *e)
{
	bd_engine_drain(e); /* callers read the index directly */
	return e->ix;
}
