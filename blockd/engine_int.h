/*
 * strata-blockd: the engine's private state, shared by the engine's files (engine.c,
 * resolve.c, read.c, mutate.c, commit.c, metaops.c; see engine.c for the map) and objcopy.c
 * (whole-object export and install for recovery). Everything here belongs to the reactor thread.
 */
#ifndef STRATA_BLOCKD_ENGINE_INT_H
#define STRATA_BLOCKD_ENGINE_INT_H

#include <sys/uio.h>

#include "internal.h"

#define IDEM_CAP       16384
#define OP_SMALL       32 /* blocks; ops up to this size come from a free list */
#define MAX_RESOLVE    BD_MAX_DEPTH
#define RAW_SEEN_MAX   32
#define RAW_SEEN_SLOTS 64

enum op_kind { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_CAW, OP_FLUSH };

enum op_phase { PH_READ, PH_WRITE, PH_FSYNC };

struct bd_op;

struct op_sub {
	struct st_io io;
	struct iovec iov;
	struct bd_op *op;
	uint64_t off; /* file offset of a data write (coalesce.c) */
};

struct obj_lock;
struct bd_wmerge;
struct idem_ent;

struct bd_op {
	struct bd_engine *e;
	enum op_kind kind;
	enum op_phase phase;
	struct bd_req q;
	uint32_t nblocks, cap; /* cap: blocks the arrays below have room for */
	uint8_t *buf;          /* read destination or write source */
	const uint8_t *cmp;
	uint64_t *miscompare;
	bd_done_cb cb;
	void *cb_arg;
	int err;
	int pending;
	uint64_t read_seq;
	bool in_reads;
	bool verified_ok; /* set by the verifier thread (verify.c) */
	bool excl;
	struct obj_lock *lock;
	void (*granted)(struct bd_op *op); /* NULL for ops; see bd_lock_excl */
	struct idem_ent *idem;
	uint8_t *cawbuf;
	uint64_t *pblk;  /* per block: read mapping, or new location for writes */
	uint32_t *crc;   /* per block */
	uint64_t *freed; /* per block: blocks whose last reference the commit dropped */
	uint32_t nfreed;
	struct bd_prun *runs; /* write: reserved runs */
	int nruns;
	struct op_sub *subs;
	const struct bd_defrag *dfg; /* a defrag rewrite: what the segment held when read */
	TAILQ_ENTRY(bd_op) link;
};

TAILQ_HEAD(op_list, bd_op);

#define PW_IOV 16

/* The prewriter (prewrite.c): written free space ahead of allocation on a sparse file. */
struct bd_prewrite {
	uint64_t ahead; /* blocks; 0: off */
	bool busy, stopped, failed;
	uint64_t start; /* the run being zero-filled, reserved in the allocator */
	uint32_t len;
	uint64_t written; /* blocks zero-filled since open */
	uint8_t *zero;    /* PW_IOV iovecs all point here */
	struct iovec iov[PW_IOV];
	struct st_io io;
};

struct obj_lock {
	uint64_t family, object;
	int shared;
	bool excl;
	struct op_list waiters;
	struct obj_lock *next;
};

enum idem_state { IDEM_FREE, IDEM_PENDING, IDEM_DONE };

struct idem_ent {
	uint64_t client_id, seq;
	enum idem_state state;
	int status;
	uint64_t miscompare;
	bool persisted; /* an 'I' key records it (successful compare-and-write) */
	bool located;   /* family and object are known (keys written before session 8
			 * hold only the stamp) */
	uint64_t family, object;
	struct idem_ent *next; /* hash chain */
};

struct bd_engine {
	struct st_reactor *r;
	int fd;
	uint64_t nblocks;
	uint8_t uuid[16];
	struct bd_index *ix;
	struct bd_alloc alloc;
	struct bd_cache *cache;
	struct bd_layers *layers;
	struct bd_batch *batch;
	bool failed;   /* an index commit failed: mutations refused */
	bool writable; /* opened for service (not fsck): the 'C' marker is cleared */
	uint64_t seq;
	uint64_t layers_gen;            /* bumped by layer deletes and flattens (objcopy.c) */
	struct bd_objlist_job *listers; /* bd_object_list_async threads not reaped yet */
	struct op_list reads;           /* in flight, oldest first */
	/* Durable frees (engine.c, bd_engine_reap): a block whose last reference an index commit
	 * dropped is reused only once that commit is on disk, i.e. a WAL sync started after it.
	 * Limbo entries with seq <= durable_seq qualify. bg_sync_* drive the background sync that
	 * keeps limbo short when no client flushes. */
	uint64_t durable_seq;
	uint64_t last_sync_ms;
	uint64_t data_syncs; /* bd_engine_sync_data calls that succeeded */
	bool bg_sync_running;
	uint64_t checksum_errors;
	uint64_t verify_offloads; /* READs checked on the verifier thread */
	bool fixed_file;          /* e->fd is the ring's registered file */
	bool fixed_bufs;          /* the iobuf arena is registered with the ring */
	uint64_t fixed_reads;     /* data reads issued as READ_FIXED */
	/* Data writes of a turn, coalesced (coalesce.c). */
	struct op_sub **wc_q;
	size_t wc_n, wc_cap;
	struct bd_wmerge *wc_free;
	uint64_t wc_writes, wc_subs; /* writevs started, sub-writes they carried */
	uint64_t nlists;
	struct bd_fsck_report rep;
	struct obj_lock *locks[1024];
	struct idem_ent *idem_ring; /* IDEM_CAP entries, reused round robin */
	struct idem_ent *idem_hash[IDEM_CAP];
	size_t idem_next;
	uint64_t idem_stamp; /* order of the last persisted entry ('I' key values) */
	struct op_list free_ops;
	size_t nfree_ops;
	size_t nlive_ops; /* allocated and not yet freed */
	struct bd_prewrite pw;
	struct op_list space_waiters; /* writes that found no space while some may come back */
	struct bd_verifier *verifier; /* NULL: reads are verified on the reactor thread */
	struct bd_committer *cm;      /* NULL: groups are committed on the reactor thread */
	struct bd_batch *gspare;      /* a written group batch, reused by the next handoff */
	uint64_t busy_t0, busy_idle0; /* the reactor-busy window (commit.c, reactor_saturated) */
	bool saturated;     /* hand groups to the committer (commit.c, reactor_saturated) */
	bool commit_always; /* tests: every group goes to the committer */
	/* The reply journal (journal.c) and a group sealed for commit after its replies. */
	int jfd; /* -1: no journal, writes reply after their commit */
	/* The other journal file (journal.c, "Two files"): empty but for its boot record, or
	 * holding groups appended before the switch (jold_dirty) until a sync job has made them
	 * durable in the index and emptied it on the committer thread (jold_in_job). */
	int jfd_old;
	uint64_t jsize_old;
	uint64_t jtrim;     /* the size past which the journal is emptied (JOURNAL_TRIM) */
	uint64_t jswitches; /* appends moved to the other file (bd_journal_trim) */
	bool jold_dirty, jold_in_job;
	uint64_t jseq, jsize, jgroups, jreplayed, jawaited;
	/* The journal's boot record (journal.c): the boot id (36 characters, read once; "": none)
	 * then the store's uuid (16 bytes), so that a journal left beside a replaced index is not
	 * replayed into it. */
	char jboot[64];
	/* Read-triggered defragmentation (defrag.c). */
	uint32_t defrag_runs;   /* 0: off */
	uint32_t defrag_shared; /* shared blocks a rewrite may copy */
	uint32_t defrag_inflight;
	uint64_t defrag_done, defrag_skipped;
	uint64_t defrag_nospace_ms; /* when a rewrite last found no free run */
	/* Background scan (defrag.c, bd_defrag_tick). */
	uint64_t nops_total, bg_ops; /* ops made, and those the engine made itself */
	uint64_t defrag_client_mark; /* client ops at the last tick */
	bool defrag_idle;            /* no client op during the last tick */
	bool defrag_background;
	uint32_t defrag_bg_reads;
	uint64_t defrag_bg_started;
	struct bd_mkey defrag_cursor;
	bool defrag_cursor_set;
	uint64_t defrag_rest_until_ms;
	/* The host file system's free space (fsspace.c). */
	int fs_dbfd;            /* the index directory, for fstatvfs; -1: none */
	bool fs_data_file;      /* the data file is a file (not a device): watch its fs too */
	bool fs_low;            /* below fs_min_free: mutations are refused with ENOSPC */
	uint64_t fs_min_free;   /* bytes; 0: not watched */
	uint32_t fs_ops;        /* admitted since the last look */
	uint64_t fs_checked_ms; /* when the last look was */
	uint64_t fs_refused;    /* mutations refused for want of file system space */
	bool jwarned;
	bool jbroken; /* an append failed: no appends until nothing journaled is pending */
	bool sealed;
	bool sealed_posted; /* sealed_commit_post is queued on the reactor */
	struct {
		struct bd_batch *b;
		struct op_list ops;
		uint64_t gseq, dseq;
		bool sync, journaled;
		bool unjournaled; /* some merged group was not journaled: commit_after_data */
		bool await_cm;    /* waits for the busy committer (commit.c, group_reply_early) */
	} sl;
	struct bd_ack {
		bd_done_cb cb;
		void *arg;
	} * acks;
	size_t acks_cap;
	unsigned handoff_windows;

	/* Group commit (see bd_commit_phase in commit.c): ops whose index edit is in `batch` but
	 * not yet committed wait in gwait; once committed (or failed) they move to gdone and are
	 * completed by group_run on a later reactor callback. */
	struct op_list gwait, gdone;
	bool gsched;        /* group_run posted to the reactor */
	bool switch_wanted; /* the next flush switches memtables, full or not (bd_flush_memtable) */
	/* Flushes through the committer (mutate.c, bd_flush): the one its sync job covers, those
	 * that arrived while it ran (the next job's), those finished and owed their callback. */
	struct flush_ctx *flush_run, *flush_wait, *flush_done;
	bool flush_job; /* a sync job is at the committer */
	bool gsync;     /* a FUA op waits: the group's commit syncs the data file, then the WAL */
	uint64_t gseq;  /* number of the group being gathered; gseq - 1 is committed */
	uint64_t gcommits, gops;
	struct bd_batch *gbatch; /* the group's WriteBatch, built at commit time */
	struct bd_mkey *gdirty;  /* lists edited by the group, each once (encoded at commit) */
	size_t ngdirty, gdirty_cap;
	uint8_t *gxkv; /* the group's raw keys: records of klen(2) vlen(2) key val */
	size_t gxkv_len, gxkv_cap;
	struct raw_seen {
		uint8_t klen, vlen;
		uint8_t k[RAW_SEEN_MAX], v[RAW_SEEN_MAX];
	} raw_seen[RAW_SEEN_SLOTS]; /* raw keys known committed with this value */
};

/* A compare-and-write, or the write a replica applies for one (bd_req.caw_done): its
 * (client_id, seq) outcome is persisted as an 'I' key when it succeeds (mutate.c). */
static inline bool bd_op_persists_idem(const struct bd_op *op)
{
	return op->kind == OP_CAW || (op->kind == OP_WRITE && op->q.caw_done);
}

/* An op whose reads are in flight joins e->reads with the next sequence number: a block a
 * later commit releases stays in limbo until every read that started before is done
 * (bd_engine_reap). READs, scrub digests and object exports all pin their blocks this way. */
static inline void bd_reads_join(struct bd_engine *e, struct bd_op *op)
{
	op->read_seq = e->seq++;
	TAILQ_INSERT_TAIL(&e->reads, op, link);
	op->in_reads = true;
}

/* Leave e->reads if in it. Returns true if it was (the caller may reap). */
static inline bool bd_reads_leave(struct bd_engine *e, struct bd_op *op)
{
	if (!op->in_reads) {
		return false;
	}
	TAILQ_REMOVE(&e->reads, op, link);
	op->in_reads = false;
	return true;
}

#define BD_SYNC_INTERVAL_MS 1000        /* background flush while freed blocks wait on it */
#define BD_WAL_SYNC_BYTES   (16u << 20) /* ... or once the WAL buffer holds this (index.c) */

void bd_engine_mark_durable(struct bd_engine *e) __attribute__((nonnull));

/*
 * fdatasync the data file, on the calling thread. Every WAL sync that is not a FLUSH's (which
 * syncs the data first itself) calls this first: a synced WAL makes the lists of every earlier
 * group durable, and a list must never reach the disk before the data it points at, or a power
 * cut leaves it pointing at blocks that read back as a checksum error. Returns 0 or -EIO.
 */
int bd_engine_sync_data(struct bd_engine *e) __attribute__((nonnull));

/* The same for any thread (the committer's): fdatasync fd, logging a failure. 0 or -EIO. */
int bd_sync_data_fd(int fd);

/* Does physical block pblk of the data file fd read back with this crc? buf: one aligned
 * block, for the read. (fsck --verify, and journal replay.) */
bool bd_block_intact(int fd, uint64_t pblk, uint32_t crc, uint8_t *buf) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* engine.c */

/* A write that got ENOSPC while space may still come back (a prewrite holds blocks, or a
 * group commit will release displaced ones): queue it to retry its write phase, return true. */
bool bd_space_park(struct bd_op *op) __attribute__((nonnull));
/* Run the write phase of every parked write again (after a group or a prewrite finished). */
void bd_space_retry(struct bd_engine *e) __attribute__((nonnull));
/* A recycled or new op for nblocks blocks, or NULL (ENOMEM). */
struct bd_op *bd_op_new(struct bd_engine *e, enum op_kind kind, uint32_t nblocks)
	__attribute__((nonnull));
/* Record the op's outcome (op->err) in its idempotency entry, if any, and let go of it. */
void bd_op_idem_done(struct bd_op *op) __attribute__((nonnull));
/* Release everything the op holds, record its idempotency status, free it and call its cb. */
void bd_op_complete(struct bd_op *op) __attribute__((nonnull));
void bd_op_fail(struct bd_op *op, int err) __attribute__((nonnull));
/* Returns 0 or -EINVAL; records the ancestry the request carries. */
int bd_validate(struct bd_engine *e, const struct bd_req *q, bool need_len)
	__attribute__((nonnull));
/* The key of the list holding logical block lb of the request's object. */
void bd_key_of(const struct bd_req *q, uint64_t lb, struct bd_mkey *k) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* resolve.c */

/* The cached entry of the layer's own list, loading it; NULL with *err = 0 when it has none. */
struct bd_centry *bd_load_own(struct bd_engine *e, const struct bd_mkey *k, int *err)
	__attribute__((nonnull));
/* The cached ancestry (parent first) and its length; 0 for an unknown (root) layer. */
int bd_layer_ancestry(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t **anc)
	__attribute__((nonnull));
/* The list serving k (NULL: none, all unallocated). Returns 0 or -errno. */
int bd_resolve(struct bd_engine *e, const struct bd_mkey *k, const struct bd_extmap **out)
	__attribute__((nonnull));
/* The layer's own list for writing, copying up the resolved ancestor's if it has none. */
struct bd_extmap *bd_own_for_write(struct bd_engine *e, const struct bd_mkey *k, bool *created,
				   int *err) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* read.c */

/* Map and read the op's blocks (into cawbuf for compare-and-write). */
void bd_read_phase(struct bd_op *op) __attribute__((nonnull));
/* Every read of the op finished: verify, then complete (READ) or compare and write (CAW). */
void bd_read_done(struct bd_op *op) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* journal.c */

/* Open the journal at path, replay what the index lacks, empty it. Returns 0 or -errno. */
int bd_journal_open(struct bd_engine *e, const char *path) __attribute__((nonnull));
void bd_journal_close(struct bd_engine *e) __attribute__((nonnull));
/* Put the 'J' mark into b and append b as the next record. Returns 0 or -errno. */
int bd_journal_append(struct bd_engine *e, struct bd_batch *b) __attribute__((nonnull));
/* Empty the journal when it is large and every record's batch is in the index. */
void bd_journal_trim(struct bd_engine *e) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* fsspace.c */

/* Start watching the file systems of the index (dbpath) and the data file; 0: do not. */
void bd_fsspace_open(struct bd_engine *e, const char *dbpath, uint64_t min_free)
	__attribute__((nonnull));
void bd_fsspace_close(struct bd_engine *e) __attribute__((nonnull));
/* Bytes available to us on the fuller of the two file systems (UINT64_MAX: unknown). */
uint64_t bd_fsspace_avail(const struct bd_engine *e) __attribute__((nonnull));
/* Look again now (the service tick), updating fs_low. */
void bd_fsspace_check(struct bd_engine *e) __attribute__((nonnull));
/* True when a mutation must be refused with ENOSPC: the reserve is reached. */
bool bd_fsspace_refuse(struct bd_engine *e) __attribute__((nonnull));
/* True when the prewriter may zero-fill more: twice the reserve is available. */
bool bd_fsspace_prewrite_ok(const struct bd_engine *e) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* prewrite.c */

/* Find the written prefix of the data file and start keeping ahead_bytes written ahead. */
void bd_prewrite_open(struct bd_engine *e, uint64_t ahead_bytes) __attribute__((nonnull));
void bd_prewrite_close(struct bd_engine *e) __attribute__((nonnull));
/* Start the next zero-fill (see bd_prewrite_kick). */
void bd_prewrite_next(struct bd_engine *e) __attribute__((nonnull));
/* After an allocation: prewrite when the written region runs short of free blocks, or of
 * free runs (its free blocks are lone ones: alloc.c run_start). */
static inline void bd_prewrite_kick(struct bd_engine *e)
{
	if (e->pw.ahead && !e->pw.busy && e->alloc.ready < e->nblocks &&
	    (e->alloc.ready_free < e->pw.ahead || e->alloc.rskip > 0)) {
		bd_prewrite_next(e);
	}
}
/* Blocks the prewrite in flight holds (free space really). */
uint64_t bd_prewrite_held(const struct bd_engine *e) __attribute__((nonnull));

/* Close: join the listing threads; their answers, if still queued on the reactor, run without
 * the engine (-ECANCELED). */
void bd_engine_drop_listers(struct bd_engine *e) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* mutate.c */

/* True while any op holds or waits for the object's lock. */
bool bd_engine_object_locked(struct bd_engine *e, uint64_t family, uint64_t object)
	__attribute__((nonnull));
/* Ask for the object's lock (op->q.family, op->q.object) exclusively, for a holder that is not
 * an op of its own (objcopy.c): 1 granted now, 0 queued behind the ops that hold it or wait
 * (granted(op) runs once it is granted, from inside the release), -ENOMEM. */
int bd_lock_excl(struct bd_op *op, void (*granted)(struct bd_op *op)) __attribute__((nonnull));
/* Release the op's object lock and grant compatible waiters. */
void bd_lock_release(struct bd_op *op) __attribute__((nonnull));
/* Completion of one data read or write of an op (arg: its struct op_sub). */
void bd_op_io_done(void *arg, int res);
/* Reserve blocks and write the op's data to them (zero and trim go straight to commit). */
void bd_write_phase(struct bd_op *op) __attribute__((nonnull));

/* coalesce.c */
/* Start sub-write s (its iov) at file offset off, in one writev with the turn's adjacent ones;
 * bd_op_io_done(s, res) reports it. */
void bd_wc_queue(struct bd_engine *e, struct op_sub *s, uint64_t off) __attribute__((nonnull));
void bd_wc_free(struct bd_engine *e) __attribute__((nonnull));
/* A compare-and-write with an idempotency entry joins the commit: put its 'I' key into the
 * group's WriteBatch, so the key commits exactly when its data does. */
void bd_idem_persist(struct bd_op *op) __attribute__((nonnull));
/* Engine open: load the persisted 'I' keys into the table (prune: delete the oldest beyond
 * IDEM_CAP and malformed ones). Returns 0 or -errno. */
int bd_idem_load(struct bd_engine *e, bool prune) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* commit.c */

/* Apply the op to the layer's own lists and join the group commit. */
void bd_commit_phase(struct bd_op *op) __attribute__((nonnull));
/* Commit e->batch with the group's edits; on failure mutations are refused. */
int bd_engine_commit_batch(struct bd_engine *e, bool sync) __attribute__((nonnull));
/* Blocks whose last reference a committed batch dropped go to limbo (freed may be NULL when
 * n is 0: an object install that displaced nothing). */
void bd_engine_defer_frees(struct bd_engine *e, const uint64_t *freed, uint32_t n)
	__attribute__((nonnull(1)));
/* Commit the edits of every op gathered for the group commit now (their replies still come
 * from a later reactor callback). Call before reading the index directly. */
void bd_engine_drain(struct bd_engine *e) __attribute__((nonnull));
/* Commit the sealed groups only, not the one gathering (for a flush: commit.c). */
void bd_engine_drain_sealed(struct bd_engine *e) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* defrag.c: read-triggered defragmentation. */
struct bd_defrag {
	uint64_t pblk[BD_SEG_BLOCKS];
	uint32_t crc[BD_SEG_BLOCKS];
	uint8_t *buf; /* the segment's data, BD_SEG_BLOCKS blocks */
};
/* After a READ verified its data: rewrite the fragmented segments it read whole. */
void bd_defrag_consider(struct bd_op *op);
/* Keep background reads of fragmented segments going while no client op arrives. */
void bd_defrag_pump(struct bd_engine *e);
/* In the commit phase of a defrag rewrite: does the segment still hold what was read? */
bool bd_defrag_still_valid(struct bd_op *op);
/* mutate.c: a plain write of one segment that commits only if bd_defrag_still_valid. */
void bd_rewrite(struct bd_engine *e, const struct bd_req *q, const struct bd_defrag *dfg,
		bd_done_cb cb, void *cb_arg);

/* committer.c: the pipelined group commit. */

struct bd_committer;
struct flush_ctx;
/* Settle the group in flight if the committer finished it (non-blocking). */
void bd_committer_reap(struct bd_engine *e) __attribute__((nonnull));
/* Block until the group in flight (if any) is written, then settle it. */
void bd_committer_wait(struct bd_engine *e) __attribute__((nonnull));
bool bd_committer_busy(const struct bd_engine *e) __attribute__((nonnull));
/* Give the committer a group: its encoded batch, its ops (moved out of ops), its numbers. */
void bd_committer_handoff(struct bd_engine *e, struct bd_batch *batch, bool sync, uint64_t gseq,
			  uint64_t dseq, struct op_list *ops) __attribute__((nonnull));
/* Give the idle committer a sync job: the data file, then the WAL (every commit so far);
 * bd_flush_job_reaped gets its result when the reactor reaps it. */
void bd_committer_sync(struct bd_engine *e, int reset_fd) __attribute__((nonnull));
/* journal.c: empty a journal file and write its boot record; any thread. Returns its size or
 * -errno. */
long bd_journal_reset_fd(int fd, const char *boot_rec) __attribute__((nonnull));
/* journal.c: a sync job that emptied the old journal file was reaped (rc: the job's). */
void bd_journal_old_reset(struct bd_engine *e, int rc) __attribute__((nonnull));
/* mutate.c: the committer's sync job was reaped (reactor thread, any depth: no callbacks). */
void bd_flush_job_reaped(struct bd_engine *e, int rc) __attribute__((nonnull));
/* mutate.c: run finished flushes' callbacks and start the next job (top level only). */
void bd_flush_kick(struct bd_engine *e) __attribute__((nonnull));
/* commit.c: have group_run look at groups that waited for the committer. */
void bd_commit_resume(struct bd_engine *e) __attribute__((nonnull));
/* commit.c: start deciding afresh when to hand off (always: every group, for tests). */
void bd_commit_policy_reset(struct bd_engine *e, bool always) __attribute__((nonnull));
/* commit.c: settle a group the committer wrote (its ops to gdone, pins, durability). */
void bd_commit_settle_group(struct bd_engine *e, struct op_list *ops, int rc, bool sync,
			    uint64_t gseq, uint64_t dseq, struct bd_batch *spent)
	__attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* verify.c: read checksums on a worker thread. */

struct bd_verifier;
/* Starts the worker; done(op) runs on r's thread for every submitted op. Returns 0 or -errno. */
int bd_verifier_start(struct st_reactor *r, void (*done)(void *op), struct bd_verifier **out)
	__attribute__((nonnull));
/* Queues op (its buf, pblk, crc and nblocks) for checking; false once stopped. */
bool bd_verifier_submit(struct bd_verifier *v, struct bd_op *op) __attribute__((nonnull));
/* Refuses new ops, posts back every queued one, and joins the worker. */
void bd_verifier_stop(struct bd_verifier *v);

/* ------------------------------------------------------------------------------------------ */
/* cache.c */

/* Keep an entry (whose list has an edit in group gseq) from eviction until
 * bd_cache_committed(c, >= gseq). */
void bd_cache_pin(struct bd_cache *c, struct bd_centry *ce, uint64_t gseq) __attribute__((nonnull));
void bd_cache_committed(struct bd_cache *c, uint64_t gseq) __attribute__((nonnull));
uint64_t bd_cache_pinned(struct bd_centry *ce) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* index.c */

/* Append every put and delete of src to dst (in order). Returns 0 or -ENOMEM. */
int bd_batch_append(struct bd_batch *dst, const struct bd_batch *src) __attribute__((nonnull));

#endif
