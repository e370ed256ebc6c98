/*
 * strata-blockd engine: the commit phase and the group commit. An op whose data is written edits
 * the layer's own lists in memory, and every op finished in one reactor turn shares one
 * RocksDB WriteBatch (see group_run for why that keeps the guarantees of one commit per op).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "engine_int.h"
#include "internal.h"

static void group_schedule(struct bd_engine *e);

/* A group's ops are committed (err 0) or not (err < 0): to gdone, completed by group_run. */
static void group_finish(struct bd_engine *e, struct op_list *ops, int err, uint64_t gseq)
{
	struct bd_op *op;
	while ((op = TAILQ_FIRST(ops))) {
		TAILQ_REMOVE(ops, op, link);
		if (err && op->err == 0) {
			op->err = err;
		}
		TAILQ_INSERT_TAIL(&e->gdone, op, link);
	}
	e->gcommits++;
	bd_cache_committed(e->cache, gseq);
	group_schedule(e);
}

/* A failed index commit: memory is ahead of the index, so no more mutations. */
static void commit_failed(struct bd_engine *e)
{
	if (!e->failed) {
		st_error("index commit failed: refusing further mutations");
	}
	memset(e->raw_seen, 0, sizeof(e->raw_seen));
	e->failed = true;
}

/* The group gathered in gwait was committed inline (err 0) or not. */
static void group_settle(struct bd_engine *e, int err)
{
	e->ngdirty = 0;
	e->gxkv_len = 0;
	if (TAILQ_EMPTY(&e->gwait)) {
		return;
	}
	group_finish(e, &e->gwait, err, e->gseq);
	e->gseq++;
	e->gsync = false;
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
 * Reply first (journal.c). group_run seals the gathered group into a batch of its own,
 * journals it, replies to the group's plain writes, and only then commits the sealed batch,
 * inline or on the committer thread. The replies' callbacks may start new ops, which gather
 * into the next group; anything that must see the index current (bd_engine_commit_batch,
 * bd_engine_drain) commits a sealed group first, so groups reach RocksDB in order.
 */
static bool replies_first(const struct bd_op *op)
{
	return op->kind == OP_WRITE && !op->q.fua && !bd_op_persists_idem(op);
}

/*
 * Seal the gathered group: its own batch (journaled if asked), its ops, its numbers. A group
 * that waits for the busy committer (sl.await_cm) takes the new one in: the batch is appended
 * to its batch, the ops to its ops, and it takes the new group's numbers (the cache unpins
 * every list pinned up to them at its commit). Returns the first op of the new group, or NULL
 * when nothing was sealed (out of memory).
 */
static struct bd_op *group_seal(struct bd_engine *e, bool journal)
{
	if (e->sealed && !e->sl.await_cm) {
		return NULL; /* its commit is posted: the caller commits both in order */
	}
	struct bd_batch *next = e->gspare != NULL ? e->gspare : bd_batch_new();
	if (next == NULL) {
		return NULL;
	}
	e->gspare = NULL;
	group_build(e);
	bool merge = e->sealed;
	bool journaled = journal && bd_journal_append(e, e->gbatch) == 0;
	if (merge) {
		(void)bd_batch_append(e->sl.b, e->gbatch); /* cannot fail */
		bd_batch_clear(e->gbatch);
		e->gspare = next; /* gbatch stays, cleared */
	} else {
		e->sl.b = e->gbatch;
		e->gbatch = next;
		e->sl.sync = false;
		e->sl.await_cm = false;
		TAILQ_INIT(&e->sl.ops);
	}
	e->sl.journaled = journaled; /* this group's: whether its ops may reply now */
	e->sl.unjournaled = (merge && e->sl.unjournaled) || !journaled;
	if (e->gsync) {
		e->sl.sync = true;
		e->sl.dseq = e->seq++; /* what the sync makes durable */
	} else if (!merge) {
		e->sl.dseq = 0;
	}
	e->sl.gseq = e->gseq++;
	e->ngdirty = 0;
	e->gxkv_len = 0;
	e->gsync = false;
	struct bd_op *first = TAILQ_FIRST(&e->gwait);
	TAILQ_CONCAT(&e->sl.ops, &e->gwait, link);
	e->sealed = true;
	return first;
}

/*
 * Commit b on this thread (the committer does the same on its own). No list may reach the
 * disk before its data (index.c, bd_index_open):
 *  - a commit that syncs the WAL syncs the data file first;
 *  - a journaled commit stays in RocksDB's WAL buffer: a killed process replays the journal;
 *  - an unjournaled one must survive a killed process on its own: the data file is synced,
 *    then the WAL buffer (this commit and every earlier one, whose data that sync covered)
 *    is written to the file.
 */
static int commit_after_data(struct bd_engine *e, struct bd_batch *b, bool sync, bool journaled)
{
	int rc = e->failed ? -EIO : sync || !journaled ? bd_engine_sync_data(e) : 0;
	rc = rc ? rc : bd_index_commit(e->ix, b, sync);
	return rc || sync || journaled ? rc : bd_index_flush_wal(e->ix);
}

/* Commit the sealed group, if any: here, or by the committer (handoff). */
static void sealed_dispatch(struct bd_engine *e, bool handoff)
{
	if (!e->sealed) {
		return;
	}
	e->sealed = false;
	e->sl.await_cm = false;
	if (handoff && e->sl.unjournaled && !e->sl.sync) {
		handoff = false; /* the committer takes journaled or synced groups only */
	}
	if (handoff) {
		bd_committer_handoff(e, e->sl.b, e->sl.sync, e->sl.gseq, e->sl.dseq, &e->sl.ops);
		return;
	}
	int rc = commit_after_data(e, e->sl.b, e->sl.sync, !e->sl.unjournaled);
	bd_batch_clear(e->sl.b);
	bd_commit_settle_group(e, &e->sl.ops, rc, e->sl.sync, e->sl.gseq, e->sl.dseq, e->sl.b);
}

/* Reply to the sealed group's plain writes, from op first on. The op stays (lock, reservation,
 * displaced blocks) until its commit settles it; a retry of it is answered from its idempotency
 * entry, settled and let go of here, since a done entry may be reused before the op completes. The
 * callbacks run after the list walk: they may seal and commit the group themselves. */
static size_t sealed_reply(struct bd_engine *e, struct bd_op *first)
{
	size_t n = 0;
	for (struct bd_op *op = first; op != NULL; op = TAILQ_NEXT(op, link)) {
		if (!replies_first(op) || op->cb == NULL) {
			continue;
		}
		if (n == e->acks_cap) {
			size_t nc = e->acks_cap ? e->acks_cap * 2 : 64;
			struct bd_ack *na = realloc(e->acks, nc * sizeof(*na));
			if (na == NULL) {
				break; /* the rest reply after the commit */
			}
			e->acks = na;
			e->acks_cap = nc;
		}
		bd_op_idem_done(op); /* op->err is 0: its data is written */
		e->acks[n++] = (struct bd_ack){op->cb, op->cb_arg};
		op->cb = NULL;
	}
	for (size_t i = 0; i < n; i++) {
		e->acks[i].cb(e->acks[i].arg, 0);
	}
	return n;
}

/* The inline commit of a group whose replies went first, posted behind them: the replies'
 * connection flushes (their SENDMSGs) are queued posts too, and run first. */
static void sealed_commit_post(void *arg)
{
	struct bd_engine *e = arg;
	e->sealed_posted = false;
	if (e->sealed && bd_committer_busy(e)) {
		/* A flush's sync job took the committer meanwhile: nothing may commit until it
		 * is reaped, so the group waits for the committer like any other. */
		e->sl.await_cm = true;
		group_schedule(e);
		return;
	}
	st_reactor_submit_now(e->r); /* the replies leave before the commit's CPU time */
	sealed_dispatch(e, false);
}

/* What group_reply_first does with the group once its replies went. */
enum after_reply {
	COMMIT_INLINE,  /* posted behind the replies, on the reactor thread */
	COMMIT_HANDOFF, /* to the idle committer */
	COMMIT_AWAIT,   /* the committer is busy: wait for it (joining a group that waits) */
};

/* Journal, reply, commit. Returns false when there is no group or no journal: the caller
 * commits it unjournaled (commit_after_data). */
static bool group_reply_first(struct bd_engine *e, enum after_reply then)
{
	if (e->jfd < 0 || e->failed || bd_batch_count(e->batch) > 0) {
		return false;
	}
	/* Every group is journaled, not only those with a write that replies now: the ops that
	 * reply after the commit (FUA, compare-and-write, write-zeroes, trim) rely on the journal
	 * too, since the commit stays in the WAL buffer (commit_after_data). */
	struct bd_op *first;
	if (TAILQ_EMPTY(&e->gwait) || (first = group_seal(e, true)) == NULL) {
		return false;
	}
	size_t replied = e->sl.journaled ? sealed_reply(e, first) : 0;
	if (then == COMMIT_AWAIT) {
		/* The callbacks may have committed it already (bd_engine_drain). */
		e->sl.await_cm = e->sealed;
		e->jawaited++;
		return true;
	}
	bool handoff = then == COMMIT_HANDOFF && e->cm != NULL && !bd_committer_busy(e);
	if (replied > 0 && !handoff && e->sealed && !e->sealed_posted) {
		e->sealed_posted = true;
		st_reactor_post_owed(e->r, sealed_commit_post, e); /* its ops are owed completion */
		return true;
	}
	sealed_dispatch(e, handoff);
	return true;
}

/*
 * Commit the batch; on failure the engine stops accepting mutations (memory is ahead of the
 * index; a restart rebuilds from the index). One WriteBatch holds, in this order: the edits
 * of every op gathered for the group commit and whatever the caller put into e->batch.
 *
 * The bitmap chunks the edits dirtied are not written here: the start-up rebuild derives the
 * allocator from the extent lists alone, so the chunks are only fsck's cross-check, and
 * writing them with every group cost about a quarter of blockd's CPU per 4 KiB random write
 * (one or two 512-byte values per write, each a memtable insert, WAL bytes and flush work:
 * the displaced block is anywhere on the disk). They stay dirty in memory and are written at
 * a clean close with the 'C' marker (bd_engine_close); see rebuild() in engine.c.
 */
int bd_engine_commit_batch(struct bd_engine *e, bool sync)
{
	bd_committer_wait(e);      /* the group in flight goes first */
	sealed_dispatch(e, false); /* then a sealed one */
	group_build(e);
	if (bd_batch_count(e->batch) > 0) {
		/* Direct writes may change raw keys behind raw_seen's back. */
		memset(e->raw_seen, 0, sizeof(e->raw_seen));
		bd_batch_append(e->gbatch, e->batch);
		bd_batch_clear(e->batch);
	}
	bool synced = sync || e->gsync;
	int rc = commit_after_data(e, e->gbatch, synced, false);
	bd_batch_clear(e->gbatch);
	if (rc == 0 && synced) {
		bd_engine_mark_durable(e); /* a synced WAL write covers every earlier commit */
	}
	if (rc) {
		commit_failed(e);
	}
	group_settle(e, rc);
	return rc;
}

void bd_engine_drain(struct bd_engine *e)
{
	bd_committer_wait(e);
	sealed_dispatch(e, false);
	if (!TAILQ_EMPTY(&e->gwait)) {
		bd_engine_commit_batch(e, false);
	}
}

/*
 * Commit the groups whose ops may have completed (sealed: journaled and replied to), not the
 * one still gathering. A flush needs no more: it covers completed writes, and no op of the
 * gathering group has completed. Committing that group here would be an unjournaled commit,
 * which must survive a kill on its own (commit_after_data): an fdatasync of the data file on
 * this thread, 30-95 ms under sustained writes. Its group_run is posted already (gsched) and
 * runs after the caller: with the committer busy it journals, replies and waits, as behind
 * any commit in flight. Direct batch entries (bd_engine_commit_batch's callers) still take the
 * full drain.
 */
void bd_engine_drain_sealed(struct bd_engine *e)
{
	if (bd_batch_count(e->batch) > 0) {
		bd_engine_drain(e);
		return;
	}
	bd_committer_wait(e);
	sealed_dispatch(e, false);
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
 * shared batch (bd_commit_phase), then waits in gwait. group_run, armed as a zero timer when the
 * first op of a group arrives, runs after the reactor has handled the rest of the current turn's
 * completions, so every write that finished in that turn shares one WriteBatch and one
 * rocksdb_write (one WAL append, one memtable insert pass).
 *
 * Why this keeps the guarantees of one commit per op:
 *  - an op is in gwait only after its data write completed, so the index never points at
 *    unwritten data; and a commit that syncs the WAL (a FUA op in the group, layer delete,
 *    close) first fdatasyncs the data file (bd_engine_sync_data), so no list becomes durable
 *    before the data it points at. (FUA ops used to fdatasync on their own before joining:
 *    a write whose data completed while that sync ran could have its list made durable by
 *    the group's WAL sync with its data still in the device's volatile cache.)
 *  - an op keeps its object lock until the commit (gdone), so objcopy and compare-and-write
 *    never see a half-committed object; with the reply journal a plain write is replied to
 *    before that (group_reply_first), a FUA write or compare-and-write only after it;
 *  - blocks an edit displaced go to limbo only after the commit (a crash before it leaves the
 *    old lists pointing at intact blocks);
 *  - a read between the edit and the commit sees the new list (its data is already on disk):
 *    what an early-acknowledged write promised; a flush first drains every gathered or
 *    in-flight group (bd_flush), so the WAL sync covers every acknowledged write;
 *  - cache entries holding uncommitted edits are pinned against eviction, and everything that
 *    reads the index directly (layer delete, flatten, bd_engine_index) drains first.
 */
/* A group the committer wrote (committer.c): settled as group_settle does, with the group's
 * own ops, sequence numbers and sync. spent is the written batch, kept for reuse. */
void bd_commit_settle_group(struct bd_engine *e, struct op_list *ops, int rc, bool sync,
			    uint64_t gseq, uint64_t dseq, struct bd_batch *spent)
{
	if (e->gspare == NULL) {
		e->gspare = spent;
	} else {
		bd_batch_free(spent);
	}
	if (rc == 0 && sync && dseq > e->durable_seq) {
		/* A synced WAL write covers every earlier commit (bd_engine_mark_durable). */
		e->durable_seq = dseq;
		e->last_sync_ms = st_now_ms();
	}
	if (rc) {
		commit_failed(e);
	}
	group_finish(e, ops, rc, gseq);
}

/* Hand the gathered group to the committer: encode it, swap in a fresh batch, and start the
 * next group number (its edits pin their lists under the new number). */
static void group_handoff(struct bd_engine *e)
{
	if (!group_seal(e, false)) {
		bd_engine_commit_batch(e, false); /* out of memory: commit here */
		return;
	}
	sealed_dispatch(e, true);
}

/*
 * Is the reactor thread the bottleneck? Handing a group to the committer costs two thread
 * wakeups and a context switch on each side: worth it only when the reactor has no idle time
 * to give. When the CPUs are shared with a busy gateway and client, the reactor waits for
 * them anyway and the hand-off only adds switches (measured through strata-iscsi on the same
 * 2 CPUs: 39-51k IOPS handing off, 49-59k inline; through libstrata alone the reverse).
 *
 * So: while committing inline, measure the reactor's busy share over BUSY_WINDOW_NS from its
 * own idle time (sleeping or polling, st_reactor_idle_ns). At BUSY_SATURATED or more, hand
 * off for HANDOFF_WINDOWS windows, then commit inline for one window to measure again (busy
 * cannot be judged while handing off: the hand-off itself lowers it). Measured inline: about
 * 0.97-1.00 through libstrata at QD32, 0.81-0.88 behind strata-iscsi.
 */
#define BUSY_WINDOW_NS  20000000ull /* 20 ms */
#define BUSY_SATURATED  0.95
#define HANDOFF_WINDOWS 25 /* 0.5 s */

void bd_commit_policy_reset(struct bd_engine *e, bool always)
{
	e->commit_always = always;
	e->saturated = false;
	e->handoff_windows = 0;
	e->busy_t0 = st_now_ns();
	e->busy_idle0 = st_reactor_idle_ns(e->r);
}

static bool reactor_saturated(struct bd_engine *e)
{
	uint64_t now = st_now_ns();
	if (now - e->busy_t0 < BUSY_WINDOW_NS) {
		return e->saturated;
	}
	uint64_t idle = st_reactor_idle_ns(e->r);
	if (e->saturated) {
		if (++e->handoff_windows >= HANDOFF_WINDOWS) {
			e->saturated = false; /* one inline window to measure again */
			e->handoff_windows = 0;
		}
	} else {
		double busy = 1.0 - (double)(idle - e->busy_idle0) / (double)(now - e->busy_t0);
		e->saturated = busy >= BUSY_SATURATED;
	}
	e->busy_t0 = now;
	e->busy_idle0 = idle;
	return e->saturated;
}

static void group_run(void *arg)
{
	struct bd_engine *e = arg;
	/* A sealed group goes first: groups commit in order. One whose commit is posted commits
	 * here; one that waits for the committer goes to it once it is free. */
	if (!e->sealed || !e->sl.await_cm) {
		sealed_dispatch(e, false);
	} else {
		bd_committer_reap(e);
		if (!bd_committer_busy(e)) {
			sealed_dispatch(e, true);
		}
	}
	/* gsched stays set while settling: it arms no second run. */
	if (e->cm == NULL) {
		if (!group_reply_first(e, COMMIT_INLINE)) {
			bd_engine_drain(e);
		}
	} else {
		bd_committer_reap(e);
		if (!bd_committer_busy(e) && !TAILQ_EMPTY(&e->gwait)) {
			/* Hand off only when other ops are live, whose work can overlap the write;
			 * a lone op (queue depth 1) would just pay two thread wakeups. */
			const struct bd_op *w;
			size_t n = 0;
			TAILQ_FOREACH(w, &e->gwait, link)
			{
				n++;
			}
			bool inline_ =
				e->failed || bd_batch_count(e->batch) > 0 ||
				(!e->commit_always && (e->nlive_ops <= n || !reactor_saturated(e)));
			if (group_reply_first(e, inline_ ? COMMIT_INLINE : COMMIT_HANDOFF)) {
				/* journaled, replied to, committed or handed off */
			} else if (inline_) {
				bd_engine_commit_batch(e, false);
			} else {
				group_handoff(e);
			}
		} else if (!TAILQ_EMPTY(&e->gwait) && (!e->sealed || e->sl.await_cm)) {
			/* The committer is busy: reply now, commit when it is free. */
			(void)group_reply_first(e, COMMIT_AWAIT);
		}
	}
	e->gsched = false;
	struct bd_op *op;
	while ((op = TAILQ_FIRST(&e->gdone))) {
		TAILQ_REMOVE(&e->gdone, op, link);
		if (op->err == 0) {
			/* The new blocks are referenced now: not a reservation any more. */
			op->nruns = 0;
			bd_engine_defer_frees(e, op->freed, op->nfreed);
		}
		bd_op_complete(op);
	}
	/* Blocks those commits displaced are in limbo now: parked writes may fit. */
	bd_space_retry(e);
	/* Ops that joined while this ran (a reply's callback may start one) need a run; with a
	 * group at the committer, its settle schedules one. */
	if (!TAILQ_EMPTY(&e->gwait) && !bd_committer_busy(e)) {
		group_schedule(e);
	}
	bd_journal_trim(e);
}

void bd_commit_resume(struct bd_engine *e)
{
	if (!TAILQ_EMPTY(&e->gwait) || e->sealed) {
		group_schedule(e);
	}
}

/* group_run goes on the reactor's local queue: it runs after the rest of this turn's
 * completions, with no SQE, timer or system call (a zero-length timer cost 7-10% of blockd's
 * CPU per 4k write). */
static void group_schedule(struct bd_engine *e)
{
	if (e->r == NULL) {
		return; /* after the ring is gone: bd_engine_settle commits what gathered, inline */
	}
	if (!e->gsched) {
		e->gsched = true;
		st_reactor_post_owed(e->r, group_run, e); /* its ops are owed their completion */
	}
}

/*
 * Apply the op to the layer's own lists (one segment at a time, each encoded into the batch at
 * once), then join the group commit. Runs synchronously on the reactor thread.
 */
void bd_commit_phase(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	uint64_t lb0 = op->q.offset >> BD_BLOCK_SHIFT;
	uint32_t nfreed = 0;
	int err = 0;
	if (e->failed) {
		bd_op_fail(op, -EIO);
		return;
	}
	if (op->dfg != NULL && !bd_defrag_still_valid(op)) {
		bd_op_fail(op, -ESTALE); /* written meanwhile: the new blocks go back */
		return;
	}
	for (uint32_t i = 0; i < op->nblocks && !err;) {
		uint64_t lb = lb0 + i;
		struct bd_mkey k;
		bd_key_of(&op->q, lb, &k);
		uint32_t first = (uint32_t)(lb & (BD_SEG_BLOCKS - 1));
		uint32_t n = BD_SEG_BLOCKS - first;
		if (n > op->nblocks - i) {
			n = op->nblocks - i;
		}
		if (op->kind == OP_TRIM) {
			/* Nothing to hide when nothing serves this segment. */
			const struct bd_extmap *cur;
			err = bd_resolve(e, &k, &cur);
			if (err || !cur) {
				i += n;
				continue;
			}
		}
		bool created;
		struct bd_extmap *m = bd_own_for_write(e, &k, &created, &err);
		if (!m) {
			break;
		}
		uint64_t old;
		if (n == 1 && op->kind != OP_TRIM && op->kind != OP_ZERO &&
		    (old = bd_extmap_replace1(m, first, op->pblk[i], op->crc[i])) != BD_PBLK_NONE) {
			/* A 4 KiB overwrite in a fragmented segment: no expand/compact. */
			if (bd_alloc_unref(&e->alloc, old)) {
				op->freed[nfreed++] = old;
			}
			bd_alloc_ref(&e->alloc, op->pblk[i]);
			err = group_dirty_list(e, &k);
			i += n;
			continue;
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
		e->failed = true;
		group_settle(e, -EIO);
		bd_op_fail(op, err);
		return;
	}
	/* Keys the caller rides on this commit (the PG version: replication). */
	for (uint32_t x = 0; x < op->q.nxkv; x++) {
		group_raw(e, &op->q.xkv[x]);
	}
	/* A compare-and-write's idempotency key commits with its data (see mutate.c). */
	bd_idem_persist(op);
	op->nfreed = nfreed;
	e->gsync |= op->q.fua;
	e->gops++;
	TAILQ_INSERT_TAIL(&e->gwait, op, link);
	group_schedule(e);
}
