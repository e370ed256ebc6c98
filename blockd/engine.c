/*
 * The storage engine: object I/O over an O_DIRECT data file driven by the reactor's io_uring,
 * with the extent index in RocksDB.
 *
 * Write path (redirect-on-write, every write):
 *
 *   lock object (shared) -> reserve new blocks -> crc32c per 4 KiB -> writev to the new blocks
 *     -> edit the cached lists, join the group commit: one WriteBatch per reactor turn with
 *        the new extent lists of every write of the group (+ copy-ups of ancestors' lists)
 *     -> commit [FUA in the group: fdatasync the data file, then commit with a WAL sync]
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
 *
 * The engine is split by phase of an op:
 *   engine.c   the op pool, completion, validation; open (rebuild), close, space
 *   resolve.c  which extent list serves (family, layer, object, seg); copy-up for writes
 *   read.c     the read phase (READ, and the compare half of COMPARE_AND_WRITE)
 *   mutate.c   write/zero/trim/CAW/flush: idempotency table, object locks, the write phase
 *   commit.c   the commit phase and the group commit
 *   metaops.c  synchronous metadata operations: block status, layer delete, flatten
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
#include "common/fsspace.h"
#include "common/log.h"
#include "engine_int.h"
#include "internal.h"
#include "iobuf.h"

/* ------------------------------------------------------------------------------------------ */
/* Ops: small ones are recycled, so the steady-state 4 KiB path does not malloc. */

struct bd_op *bd_op_new(struct bd_engine *e, enum op_kind kind, uint32_t nblocks)
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
	op->granted = NULL;
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
	op->dfg = NULL;
	op->nruns = 0;
	op->nfreed = 0;
	e->nlive_ops++;
	e->nops_total++;
	return op;
}

static void op_free(struct bd_engine *e, struct bd_op *op)
{
	e->nlive_ops--;
	free(op->cawbuf);
	if (op->cap == OP_SMALL && e->nfree_ops < 256) {
		TAILQ_INSERT_HEAD(&e->free_ops, op, link);
		e->nfree_ops++;
		return;
	}
	free(op);
}

/* ------------------------------------------------------------------------------------------ */
/* Completion. */

static uint64_t min_read_seq(struct bd_engine *e)
{
	struct bd_op *o = TAILQ_FIRST(&e->reads);
	return o ? o->read_seq + 1 : e->seq + 1;
}

/* Everything committed so far is on disk (a WAL sync just succeeded). */
void bd_engine_mark_durable(struct bd_engine *e)
{
	e->durable_seq = e->seq++;
	e->last_sync_ms = st_now_ms();
}

int bd_sync_data_fd(int fd)
{
	if (fdatasync(fd) < 0) {
		st_error("fdatasync of the data file failed: %s", strerror(errno));
		return -EIO;
	}
	return 0;
}

int bd_engine_sync_data(struct bd_engine *e)
{
	if (e->fd < 0) {
		return 0;
	}
	int rc = bd_sync_data_fd(e->fd);
	if (rc == 0) {
		e->data_syncs++;
	}
	return rc;
}

bool bd_block_intact(int fd, uint64_t pblk, uint32_t crc, uint8_t *buf)
{
	return pread(fd, buf, BD_BLOCK, (off_t)(pblk * BD_BLOCK)) == BD_BLOCK &&
	       st_crc32c(0, buf, BD_BLOCK) == crc;
}

static void bg_sync_done(void *arg, int err)
{
	struct bd_engine *e = arg;

	e->bg_sync_running = false;
	if (err) {
		st_warn("background sync: %s", strerror(-err));
	}
}

/*
 * Blocks leave limbo when no read submitted before their release is still in flight AND the
 * index commit that released them is durable. The second rule is what keeps a flushed write
 * readable after power loss: if flushed write A is overwritten by unflushed B and A's block
 * were reused at once by C, a power cut before B's commit reached the disk would bring back
 * A's extent list pointing at C's data.
 */
void bd_engine_reap(struct bd_engine *e)
{
	uint64_t lim = min_read_seq(e);

	if (lim > e->durable_seq + 1) {
		lim = e->durable_seq + 1;
	}
	bd_alloc_reap(&e->alloc, lim);
}

/*
 * Called every tick of the service: without client flushes, freed blocks would wait in limbo
 * forever, so a background flush (data fdatasync + WAL sync, the same as FLUSH) runs at most
 * every BD_SYNC_INTERVAL_MS while some wait on it, and whenever RocksDB's WAL buffer holds
 * BD_WAL_SYNC_BYTES.
 */
void bd_engine_sync_tick(struct bd_engine *e)
{
	const struct bd_alloc *a = &e->alloc;

	bd_fsspace_check(e); /* also when no write comes to look: space may come back */
	if (e->bg_sync_running || !e->writable || e->failed) {
		return;
	}
	/* RocksDB's WAL buffer must never fill, nor its memtable: either would write the WAL out
	 * before the data it points at is synced (index.c, bd_index_open). The sync switches the
	 * memtable (flush_fsync_done). */
	bool index_full =
		bd_index_unflushed(e->ix) >= BD_WAL_SYNC_BYTES || bd_index_memtable_full(e->ix);
	if (!index_full) {
		if (a->limbo_len == 0 || st_now_ms() - e->last_sync_ms < BD_SYNC_INTERVAL_MS) {
			return;
		}
		/* The newest entry is the last one: nothing waits if even it is durable. */
		if (a->limbo[(a->limbo_head + a->limbo_len - 1) % a->limbo_cap].seq <=
		    e->durable_seq) {
			return;
		}
	}
	e->bg_sync_running = true;
	e->last_sync_ms = st_now_ms();
	bd_flush(e, bg_sync_done, e);
}

/*
 * The allocator is out of space but limbo holds blocks waiting for a durable commit: make
 * everything durable now (blocking, on this rare path) and reap. Returns true if any block
 * came back.
 */
bool bd_engine_reclaim_now(struct bd_engine *e)
{
	uint64_t before = e->alloc.nfree;

	if (e->alloc.limbo_len == 0 || e->failed) {
		return false;
	}
	if (bd_engine_sync_data(e) < 0 || bd_index_sync(e->ix) < 0) {
		return false;
	}
	bd_engine_mark_durable(e);
	bd_engine_reap(e);
	return e->alloc.nfree > before;
}

bool bd_engine_groups_pending(struct bd_engine *e)
{
	return e->gsched || e->sealed || e->sealed_posted || !TAILQ_EMPTY(&e->gwait) ||
	       !TAILQ_EMPTY(&e->gdone) || bd_committer_busy(e);
}

bool bd_space_park(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	if (!e->pw.busy && !bd_engine_groups_pending(e)) {
		return false; /* nothing in flight can free a block: the ENOSPC stands */
	}
	TAILQ_INSERT_TAIL(&e->space_waiters, op, link);
	return true;
}

void bd_space_retry(struct bd_engine *e)
{
	struct op_list w;
	TAILQ_INIT(&w);
	TAILQ_CONCAT(&w, &e->space_waiters, link);
	struct bd_op *op;
	while ((op = TAILQ_FIRST(&w))) {
		TAILQ_REMOVE(&w, op, link);
		bd_write_phase(op);
	}
}

void bd_op_idem_done(struct bd_op *op)
{
	if (op->idem) {
		op->idem->state = IDEM_DONE;
		op->idem->status = op->err;
		op->idem->miscompare = op->miscompare ? *op->miscompare : 0;
		/* Committed with its 'I' key (bd_idem_persist): evicting it deletes the key. */
		op->idem->persisted = bd_op_persists_idem(op) && op->err == 0;
		op->idem = NULL;
	}
}

void bd_op_complete(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	bd_reads_leave(e, op);
	for (int i = 0; i < op->nruns; i++) {
		/* Reservations never committed (failure paths) go back. */
		bd_alloc_put(&e->alloc, op->runs[i].pblk, op->runs[i].len);
	}
	op->nruns = 0;
	bd_op_idem_done(op);
	bd_lock_release(op);
	bd_engine_reap(e);
	bd_done_cb cb = op->cb;
	void *arg = op->cb_arg;
	int err = op->err;
	op_free(e, op);
	if (cb) { /* NULL: replied to before its commit (commit.c, sealed_reply) */
		cb(arg, err);
	}
}

void bd_op_fail(struct bd_op *op, int err)
{
	op->err = err;
	bd_op_complete(op);
}

/* ------------------------------------------------------------------------------------------ */
/* Validation. */

/* Returns 0 or -EINVAL; records the ancestry the request carries. */
int bd_validate(struct bd_engine *e, const struct bd_req *q, bool need_len)
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
		/* -EINVAL for an ancestor 0 or the layer itself. */
		int rc = bd_layers_set(e->layers, q->family, q->layer, q->ancestry, q->nancestry);
		if (rc) {
			return rc;
		}
	}
	return 0;
}

void bd_key_of(const struct bd_req *q, uint64_t lb, struct bd_mkey *k)
{
	k->family = q->family;
	k->layer = q->layer;
	k->object = q->object;
	k->seg = (uint32_t)(lb >> BD_SEG_SHIFT);
}

void bd_engine_space(struct bd_engine *e, struct bd_space *s)
{
	s->total_blocks = e->nblocks;
	s->free_blocks = e->alloc.nfree + bd_prewrite_held(e);
	s->used_blocks = e->nblocks - s->free_blocks;
	s->written_blocks = e->alloc.ready;
	s->prewritten_blocks = e->pw.written;
	s->unready_blocks = e->alloc.unready;
	s->journaled_groups = e->jgroups;
	s->journal_replayed = e->jreplayed;
	s->awaited_groups = e->jawaited;
	s->data_syncs = e->data_syncs;
	s->verify_offloads = e->verify_offloads;
	s->defrag_segments = e->defrag_done;
	s->defrag_skipped = e->defrag_skipped;
	s->defrag_running = e->defrag_inflight + e->defrag_bg_reads;
	s->defrag_scanned = e->defrag_bg_started;
	s->fs_available = e->fs_min_free ? bd_fsspace_avail(e) : 0;
	s->fs_refused = e->fs_refused;
	s->fs_low = e->fs_low;
	s->checksum_errors = e->checksum_errors;
	s->fixed_reads = e->fixed_reads;
	s->data_writevs = e->wc_writes;
	s->data_write_subs = e->wc_subs;
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

/*
 * Rebuild ref counts from the index and compare with the persisted bitmap; repair unless
 * fsck_only. Returns 0 or -errno.
 *
 * The persisted chunks are written only at a clean close, together with the 'C' marker, and
 * the marker is deleted (synced) here before the engine serves, so:
 *   marker present -> the chunks describe exactly the lists: a difference is a real
 *                     inconsistency (counted as leaked/missing, fsck fails);
 *   marker absent  -> the last run crashed (or the store predates the marker): the chunks are
 *                     stale by design, nothing is compared, and they are rewritten from the
 *                     rebuild. The allocator never trusts them either way.
 */
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
	rc = bd_index_get_chunks_current(e->ix);
	if (rc < 0) {
		return rc;
	}
	bool checked = rc == 1;
	e->rep.bitmap_checked = checked;
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
			if (checked) {
				e->rep.leaked +=
					(uint64_t)__builtin_popcount(have[i] & ~want[i] & 0xff);
				e->rep.missing +=
					(uint64_t)__builtin_popcount(want[i] & ~have[i] & 0xff);
			}
		}
		if (differ && repair) {
			bd_batch_put_chunk(e->batch, c, want);
			repaired++;
		}
	}
	bd_alloc_clear_dirty(&e->alloc);
	if (!repair) {
		return 0;
	}
	if (repaired && checked) {
		st_warn("repaired %lu persisted bitmap chunks (%lu blocks leaked, %lu missing)",
			(unsigned long)repaired, (unsigned long)e->rep.leaked,
			(unsigned long)e->rep.missing);
	} else if (repaired) {
		st_info("unclean shutdown: rewrote %lu persisted bitmap chunks from the index",
			(unsigned long)repaired);
	}
	if (!repaired && !checked) {
		return 0;
	}
	/* From now on the chunks fall behind the lists until the next clean close. */
	bd_batch_set_chunks_current(e->batch, false);
	rc = bd_index_commit(e->ix, e->batch, true);
	bd_batch_clear(e->batch);
	return rc;
}

/* A clean close: persist the chunks that changed since open, and the 'C' marker with them.
 * Only when every edit made in memory is committed (nothing gathered, no failed commit), so
 * that the chunks describe exactly the committed lists. */
static void persist_chunks(struct bd_engine *e)
{
	if (!e->writable || e->failed || !TAILQ_EMPTY(&e->gwait)) {
		return;
	}
	uint8_t bits[BD_CHUNK_BYTES];
	for (size_t i = 0; i < e->alloc.ndirty; i++) {
		bd_alloc_chunk_encode(&e->alloc, e->alloc.dirty[i], bits);
		bd_batch_put_chunk(e->gbatch, e->alloc.dirty[i], bits);
	}
	bd_alloc_clear_dirty(&e->alloc);
	bd_batch_set_chunks_current(e->gbatch, true);
	if (bd_engine_sync_data(e) < 0 || bd_index_commit(e->ix, e->gbatch, true)) {
		st_warn("close: persisting the bitmap chunks failed (rebuilt at next open)");
	}
	bd_batch_clear(e->gbatch);
}

static int open_data(const char *path, uint64_t size, uint64_t *bytes)
{
	int fd = open(path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
	if (fd < 0) {
		int err = -errno;
		st_error("open %s: %s", path, strerror(errno));
		return err;
	}
	/* Drop whatever the page cache holds of the file (a buffered copy or restore of it, a
	 * backup tool's reads). An O_DIRECT write through io_uring is tried without blocking
	 * first, and the kernel refuses that (-EAGAIN) whenever any page of the range is cached,
	 * so each such write went to an io-wq worker thread instead: measured with a data file
	 * made by `cp`, 1850 such hand-offs a second at 4k randwrite QD32, and none after this. */
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
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

/*
 * Register the data file and the read buffer arena (iobuf.c) with the engine's ring, so data
 * I/O skips the per-op file lookup and, for reads into the arena, the per-op page pinning.
 * Either may be refused (an old kernel, the memlock limit, a second engine on one ring in the
 * unit tests); the plain ops then serve, and this is only logged.
 */
static void register_io(struct bd_engine *e)
{
	struct iovec iov[BD_IOBUF_CLASSES];
	int rc = st_reactor_register_file(e->r, e->fd);
	e->fixed_file = rc == 0;
	if (rc && rc != -EBUSY) {
		st_info("data file not registered with io_uring (%s): plain file ops",
			strerror(-rc));
	}
	rc = bd_iobuf_iovecs(iov);
	if (rc == 0) {
		rc = st_reactor_register_buffers(e->r, iov, BD_IOBUF_CLASSES);
	}
	/* EBUSY: this ring has buffers already, and only engines register the one arena. */
	e->fixed_bufs = rc == 0 || rc == -EBUSY;
	if (!e->fixed_bufs) {
		st_info("read buffers not registered with io_uring (%s): reads use readv",
			strerror(-rc));
	}
}

int bd_engine_open(struct st_reactor *r, const struct bd_engine_opts *o, struct bd_engine **out)
{
	int rc = -ENOMEM;
	struct bd_engine *e = calloc(1, sizeof(*e));
	if (!e) {
		return -ENOMEM;
	}
	e->r = r;
	st_reactor_set_spin_gate(r, &e->nlive_ops, ST_REACTOR_SPIN_MAX_LIVE);
	e->fd = -1;
	e->jfd = -1;
	e->jfd_old = -1;
	TAILQ_INIT(&e->reads);
	TAILQ_INIT(&e->free_ops);
	TAILQ_INIT(&e->gwait);
	TAILQ_INIT(&e->gdone);
	TAILQ_INIT(&e->space_waiters);
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
	e->fs_dbfd = -1;
	uint64_t bytes = 0;
	e->fd = open_data(o->data_path, o->size, &bytes);
	if (e->fd < 0) {
		rc = e->fd;
		goto fail;
	}
	if (!o->plain_io && !o->fsck_only) {
		register_io(e);
	}
	char dbpath[4096];
	if (o->db_path) {
		snprintf(dbpath, sizeof(dbpath), "%s", o->db_path);
	} else {
		snprintf(dbpath, sizeof(dbpath), "%s.db", o->data_path);
	}
	if ((rc = st_fs_room_to_open(dbpath, "index")) || (rc = bd_index_open(&e->ix, dbpath))) {
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
	if (o->journal) {
		/* Groups replied to and not in the index at a crash go in before the rebuild. */
		char jpath[4200];
		snprintf(jpath, sizeof(jpath), "%s.journal", dbpath);
		if ((rc = bd_journal_open(e, jpath))) {
			goto fail;
		}
	}
	if ((rc = bd_alloc_init(&e->alloc, e->nblocks))) {
		goto fail;
	}
	if ((rc = rebuild(e, !o->fsck_only))) {
		goto fail;
	}
	if ((rc = bd_idem_load(e, !o->fsck_only))) {
		goto fail;
	}
	e->writable = !o->fsck_only;
	bd_fsspace_open(e, dbpath, e->writable ? o->min_free : 0);
	bd_prewrite_open(e, e->writable ? o->prewrite_ahead : 0);
	e->defrag_runs = e->writable ? o->defrag_runs : 0;
	e->defrag_shared = o->defrag_shared > BD_SEG_BLOCKS ? BD_SEG_BLOCKS : o->defrag_shared;
	e->defrag_background = o->defrag_background;
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
			if (!bd_block_intact(v->e->fd, p, m->crc[m->runs[r].lblk + i], v->buf)) {
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

/* Commit and complete the ops still waiting on a group: writes acknowledged before their
 * commit whose group_run is still posted when close is called outside the reactor (the unit
 * tests, t_reopen). strata-blockd calls it before st_reactor_destroy: after that the engine
 * has no ring to turn (bd_engine_forget_reactor), and a group left pending would be missing
 * from the index that the clean close's bitmap chunks describe. */
void bd_engine_settle(struct bd_engine *e)
{
	if (!e->r) {
		/* No ring (strata-blockd, after st_reactor_destroy, whose last completions may
		 * have gathered or sealed one more group): commit it inline. */
		if (bd_engine_groups_pending(e)) {
			bd_engine_drain(e);
		}
		return;
	}
	for (int i = 0; i < 1000 && !st_reactor_on_thread(e->r) && bd_engine_groups_pending(e);
	     i++) {
		bd_engine_drain(e);
		if (st_reactor_run_once(e->r, 10) < 0) {
			break;
		}
	}
}

/*
 * strata-blockd destroys the reactor before it closes the engine: the ring's last completions
 * and posts (st_reactor_destroy) still need the engine. Once the ring is gone close must not
 * touch it; its teardown dropped the registered file and buffers with it.
 */
void bd_engine_forget_reactor(struct bd_engine *e)
{
	e->r = NULL;
	e->fixed_file = false;
}

void bd_engine_close(struct bd_engine *e)
{
	if (!e) {
		return;
	}
	bd_engine_stop_prewriter(e);
	bd_engine_stop_verifier(e);
	bd_engine_drop_listers(e);
	bd_engine_stop_committer(e);
	if (e->ix) {
		bd_engine_settle(e);
	}
	if (e->defrag_done + e->defrag_skipped > 0) {
		st_info("defrag: %lu segments rewritten into one run, %lu dropped (changed "
			"meanwhile, or no free run)",
			(unsigned long)e->defrag_done, (unsigned long)e->defrag_skipped);
	}
	if (e->wc_writes > 0) {
		st_info("data writes: %lu sub-writes in %lu writevs (coalesce.c)",
			(unsigned long)e->wc_subs, (unsigned long)e->wc_writes);
	}
	bd_fsspace_close(e);
	bd_journal_close(e);
	bd_prewrite_close(e);
	if (e->r != NULL) {
		st_reactor_set_spin_gate(e->r, NULL, 0);
	}
	if (e->ix && !e->failed && e->gbatch && bd_batch_count(e->gbatch) > 0) {
		/* With no op in flight, gbatch holds only the deletes of evicted idempotency
		 * keys (mutate.c); commit them rather than leave them to the prune at open. */
		bd_index_commit(e->ix, e->gbatch, false);
		bd_batch_clear(e->gbatch);
	}
	if (e->ix) {
		persist_chunks(e);
	}
	/* After persist_chunks, which syncs the data before the index. */
	if (e->fd >= 0) {
		if (e->fixed_file) { /* cleared with the reactor (bd_engine_forget_reactor) */
			st_reactor_unregister_file(e->r);
		}
		close(e->fd);
	}
	bd_index_close(e->ix);
	bd_alloc_fini(&e->alloc);
	bd_cache_free(e->cache);
	bd_layers_free(e->layers);
	bd_batch_free(e->batch);
	bd_batch_free(e->gbatch);
	bd_batch_free(e->gspare);
	free(e->gdirty);
	free(e->gxkv);
	bd_wc_free(e);
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
	free(e->acks);
	free(e);
}

struct bd_index *bd_engine_index(struct bd_engine *e)
{
	bd_engine_drain(e); /* callers read the index directly */
	return e->ix;
}
