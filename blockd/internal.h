/*
 * strata-blockd internals: the storage engine and its RPC service.
 *
 *   service.c  frames -> validated bd_req -> engine ops -> replies
 *   engine.c   read/write/zero/trim/CAW/flush over io_uring (one reactor thread owns it all);
 *              its phases are in resolve.c, read.c, mutate.c, commit.c, metaops.c
 *   cache.c    (family, layer, object, seg) -> own extent list or the resolved ancestor
 *   layers.c   layer -> ancestry (immutable, cached from requests or meta)
 *   extmap.c   one segment's extent list: runs of 4 KiB blocks with a crc32c per block
 *   index.c    RocksDB: extent lists, persisted allocation bitmap, superblock
 *   alloc.c    in-memory bitmap + reference counts + deferred frees
 *
 * An object is cut into segments of BD_SEG_BLOCKS blocks (256 KiB); each (family, layer,
 * object, segment) has at most one extent list, which is the unit of copy-up and of an index
 * key. All engine state belongs to the reactor thread.
 */
#ifndef STRATA_BLOCKD_INTERNAL_H
#define STRATA_BLOCKD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "common/reactor.h"

#define BD_BLOCK          4096u
#define BD_BLOCK_SHIFT    12
#define BD_SEG_BLOCKS     64u
#define BD_SEG_SHIFT      6
#define BD_MAX_IO         (64u << 20)
#define BD_PBLK_NONE      (UINT64_MAX - 1) /* unallocated: reads as zeros */
#define BD_PBLK_ZERO      UINT64_MAX       /* explicitly zeroed */
#define BD_CHUNK_BLOCKS   4096u            /* blocks per persisted bitmap chunk */
#define BD_CHUNK_BYTES    (BD_CHUNK_BLOCKS / 8)
#define BD_ERR_MISCOMPARE (-EBADE)

/* ------------------------------------------------------------------------------------------ */
/* alloc.c */

/* One physically contiguous run handed out by the allocator. */
struct bd_prun {
	uint64_t pblk;
	uint32_t len;
};

struct bd_limbo {
	uint64_t pblk;
	uint64_t seq;
};

/*
 * Block states:   free --get--> reserved --ref--> referenced --unref to 0--> limbo --reap--> free
 *                   ^              |put (write failed)
 *                   +--------------+
 * `inuse` has a bit set for every block that is not free. `ref` counts references from the
 * committed extent index; a persisted chunk of the bitmap is exactly (ref > 0) as of the last
 * clean close.
 */
struct bd_alloc {
	uint64_t nblocks;
	uint64_t *inuse;
	uint32_t *ref;
	uint64_t *pbits; /* ref > 0, as a bitmap: what the persisted chunks hold */
	uint64_t cursor;
	uint64_t nfree;       /* clear bits in inuse */
	uint64_t nreferenced; /* blocks with ref > 0 */
	/* [0, ready) is known to be written in the data file (prewrite.c); ready_free counts
	 * its free blocks, which allocation prefers. */
	uint64_t ready, ready_free;
	uint64_t rcursor;     /* next-fit cursor inside [0, ready) */
	uint32_t rskip, skip; /* allocations before the next search for a free word (alloc.c) */
	uint64_t unready;     /* blocks handed out while the region had too few (not all past it) */
	uint8_t *chunk_dirty; /* per persisted chunk */
	uint64_t *dirty;      /* chunks changed since the last clean close */
	size_t ndirty, dirty_cap;
	struct bd_limbo *limbo; /* FIFO ring */
	size_t limbo_head, limbo_len, limbo_cap;
};

/* Returns 0 or -ENOMEM. */
int bd_alloc_init(struct bd_alloc *a, uint64_t nblocks) __attribute__((nonnull));
void bd_alloc_fini(struct bd_alloc *a) __attribute__((nonnull));
/* Reserve n blocks as at most maxruns runs, inside the written region [0, ready) when it has
 * n free blocks, else anywhere. Returns the number of runs, or -ENOSPC (nothing reserved). */
int bd_alloc_get(struct bd_alloc *a, uint32_t n, struct bd_prun *runs, int maxruns)
	__attribute__((nonnull));
/* Reserve one run of n blocks (in the written region first). Returns 0 with its first block
 * in *pblk, or -ENOSPC when no free run is that long. */
int bd_alloc_get_run(struct bd_alloc *a, uint32_t n, uint64_t *pblk) __attribute__((nonnull));
/* Undo a reservation that never got referenced. */
void bd_alloc_put(struct bd_alloc *a, uint64_t pblk, uint32_t n) __attribute__((nonnull));
/* Add a reference (0 -> 1 marks the persisted chunk dirty). */
void bd_alloc_ref(struct bd_alloc *a, uint64_t pblk) __attribute__((nonnull));
/* Drop a reference. Returns true when it was the last: the caller must defer the free. */
bool bd_alloc_unref(struct bd_alloc *a, uint64_t pblk) __attribute__((nonnull));
/* Queue a block whose last reference is gone; freed once no read older than seq runs. Returns
 * 0 or -ENOMEM (the block then leaks until restart, which rebuilds the bitmap). */
int bd_alloc_defer_free(struct bd_alloc *a, uint64_t pblk, uint64_t seq) __attribute__((nonnull));
/* Free limbo blocks with seq < min_seq. Returns how many. */
uint64_t bd_alloc_reap(struct bd_alloc *a, uint64_t min_seq) __attribute__((nonnull));
/* Persisted form of chunk c: bit i set when block c*BD_CHUNK_BLOCKS+i has ref > 0. */
void bd_alloc_chunk_encode(const struct bd_alloc *a, uint64_t c, uint8_t out[BD_CHUNK_BYTES])
	__attribute__((nonnull));
uint64_t bd_alloc_nchunks(const struct bd_alloc *a) __attribute__((nonnull));
void bd_alloc_clear_dirty(struct bd_alloc *a) __attribute__((nonnull));
/* After a rebuild: inuse := ref > 0 (limbo emptied), counters recomputed. */
void bd_alloc_sync_inuse(struct bd_alloc *a) __attribute__((nonnull));
/* Grow the written region to [0, ready) (never shrinks it; capped at nblocks). */
void bd_alloc_set_ready(struct bd_alloc *a, uint64_t ready) __attribute__((nonnull));
/* The first free run at or after from, at most max blocks: its length (0: none), start in
 * *start. */
uint32_t bd_alloc_free_run(const struct bd_alloc *a, uint64_t from, uint32_t max, uint64_t *start)
	__attribute__((nonnull));
/* Reserve the free run [pblk, pblk + n) as bd_alloc_get would (the caller checked it free). */
void bd_alloc_take(struct bd_alloc *a, uint64_t pblk, uint32_t n) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* extmap.c */

/* A run of logical blocks [lblk, lblk+len) of one segment at pblk.. (or BD_PBLK_ZERO). */
struct bd_run {
	uint16_t lblk;
	uint16_t len;
	uint32_t pad;
	uint64_t pblk;
};
_Static_assert(sizeof(struct bd_run) == 16, "bd_run is 16 bytes");

/* One segment's extent list: sorted, disjoint runs; crc[i] valid where block i is data. */
struct bd_extmap {
	uint32_t nruns;
	struct bd_run runs[BD_SEG_BLOCKS];
	uint32_t crc[BD_SEG_BLOCKS];
};

/* What one logical block maps to. */
struct bd_bmap {
	uint64_t pblk; /* physical block, BD_PBLK_ZERO or BD_PBLK_NONE */
	uint32_t crc;
};

#define BD_EXTMAP_MAX_ENC (2 + BD_SEG_BLOCKS * 10 + BD_SEG_BLOCKS * 4)

void bd_extmap_init(struct bd_extmap *m) __attribute__((nonnull));
/* Fill out[0..BD_SEG_BLOCKS) with the mapping of every block. */
void bd_extmap_expand(const struct bd_extmap *m, struct bd_bmap out[BD_SEG_BLOCKS])
	__attribute__((nonnull));
/* Rebuild runs from a per-block view, merging neighbours that are physically contiguous (or
 * both zero). */
void bd_extmap_compact(struct bd_extmap *m, const struct bd_bmap in[BD_SEG_BLOCKS])
	__attribute__((nonnull));
/* The mapping of one block. */
struct bd_bmap bd_extmap_lookup(const struct bd_extmap *m, uint32_t lblk) __attribute__((nonnull));
/*
 * Map [lblk, lblk+n) to pblk, pblk+1, ... with crcs (pblk may be BD_PBLK_ZERO or BD_PBLK_NONE,
 * crcs then NULL). Data blocks displaced by the change are stored in displaced[] (room for n)
 * and counted in the return value.
 */
uint32_t bd_extmap_set(struct bd_extmap *m, uint32_t lblk, uint32_t n, uint64_t pblk,
		       const uint32_t *crcs, uint64_t *displaced) __attribute__((nonnull(1)));
/*
 * Fast path of a one-block write: when lblk is a data run of its own and the new data block
 * pblk merges with neither neighbour, repoint that run in place (the result is exactly what
 * expand + edit + compact would give). Returns the displaced block, or BD_PBLK_NONE when the
 * case does not apply (m unchanged: take the general path).
 */
uint64_t bd_extmap_replace1(struct bd_extmap *m, uint32_t lblk, uint64_t pblk, uint32_t crc)
	__attribute__((nonnull));
/* Number of data blocks. */
uint32_t bd_extmap_data_blocks(const struct bd_extmap *m) __attribute__((nonnull));
/* Encode into buf (BD_EXTMAP_MAX_ENC bytes suffice). Returns the length. */
size_t bd_extmap_encode(const struct bd_extmap *m, uint8_t *buf) __attribute__((nonnull));
/* Decode and validate. Returns 0 or -EBADMSG. */
int bd_extmap_decode(struct bd_extmap *m, const uint8_t *buf, size_t len)
	__attribute__((nonnull(1)));
/* The index stores a list padded with zeros to a multiple of BD_EXTMAP_PAD bytes (index.c says
 * why). Pad buf[len..) (room: BD_EXTMAP_MAX_PADDED); returns the padded length. */
#define BD_EXTMAP_PAD 64u
#define BD_EXTMAP_MAX_PADDED                                                                       \
	((BD_EXTMAP_MAX_ENC + BD_EXTMAP_PAD - 1) / BD_EXTMAP_PAD * BD_EXTMAP_PAD)
size_t bd_extmap_pad(uint8_t *buf, size_t len) __attribute__((nonnull));
/* Decode a list that may carry such padding (fewer than BD_EXTMAP_PAD zero bytes after the
 * encoding; none is accepted too). Returns 0 or -EBADMSG. */
int bd_extmap_decode_padded(struct bd_extmap *m, const uint8_t *buf, size_t len)
	__attribute__((nonnull(1)));

/* ------------------------------------------------------------------------------------------ */
/* index.c */

struct bd_index;
struct bd_batch;

/* Key of one extent list. */
struct bd_mkey {
	uint64_t family, layer, object;
	uint32_t seg;
};

struct bd_super {
	uint32_t version;
	uint32_t block_size;
	uint64_t nblocks;
	uint8_t uuid[16];
};

/* Open (creating) the RocksDB at path. Returns 0 or -errno. */
int bd_index_open(struct bd_index **out, const char *path) __attribute__((nonnull));
/* Per-thread RocksDB settings for a thread that writes the index (bd_index_open's thread gets
 * them there). */
void bd_index_thread_init(void);
void bd_index_close(struct bd_index *ix);
/* Returns 1 and fills m, 0 when absent, or -EIO/-EBADMSG. */
int bd_index_get_map(struct bd_index *ix, const struct bd_mkey *k, struct bd_extmap *m)
	__attribute__((nonnull));
/* Returns 1 and fills s, 0 when absent, or -errno. */
int bd_index_get_super(struct bd_index *ix, struct bd_super *s) __attribute__((nonnull));
/* 1 when the persisted bitmap chunks are current (the 'C' marker of a clean close), 0 when
 * not, or -errno. */
int bd_index_get_chunks_current(struct bd_index *ix) __attribute__((nonnull));
/* Returns 1 and fills out, 0 when absent, or -errno. */
int bd_index_get_chunk(struct bd_index *ix, uint64_t c, uint8_t out[BD_CHUNK_BYTES])
	__attribute__((nonnull));
/* Calls fn for every extent list (family != 0: only that family; layer != 0: only that layer
 * of it). fn returns 0 to go on, nonzero to stop (returned). -EBADMSG for an undecodable list
 * is passed to fn as err with m NULL. */
typedef int (*bd_map_fn)(void *arg, const struct bd_mkey *k, const struct bd_extmap *m, int err);
int bd_index_scan(struct bd_index *ix, uint64_t family, uint64_t layer, bd_map_fn fn, void *arg)
	__attribute__((nonnull(1, 4)));
/* Every (family, layer, object) that has a list, once, in key order, from the keys alone (no
 * list is read or decoded: an object's segments are consecutive keys). fn returns 0 to go on,
 * nonzero to stop (returned). */
typedef int (*bd_obj_fn)(void *arg, uint64_t family, uint64_t layer, uint64_t object);
int bd_index_scan_objects(struct bd_index *ix, bd_obj_fn fn, void *arg)
	__attribute__((nonnull(1, 2)));
/* Every list of (family, object) (family nonzero), in (layer, seg) order, seeking from layer
 * to layer: cost in the family's layers, not its objects. */
int bd_index_scan_object(struct bd_index *ix, uint64_t family, uint64_t object, bd_map_fn fn,
			 void *arg) __attribute__((nonnull(1, 4)));
/* Every list in key order after `after` (NULL: from the first), until fn returns nonzero. */
int bd_index_scan_after(struct bd_index *ix, const struct bd_mkey *after, bd_map_fn fn, void *arg)
	__attribute__((nonnull(1, 3)));

struct bd_batch *bd_batch_new(void);
void bd_batch_free(struct bd_batch *b);
void bd_batch_clear(struct bd_batch *b) __attribute__((nonnull));
size_t bd_batch_count(const struct bd_batch *b) __attribute__((nonnull));
void bd_batch_put_map(struct bd_batch *b, const struct bd_mkey *k, const struct bd_extmap *m)
	__attribute__((nonnull));
void bd_batch_del_map(struct bd_batch *b, const struct bd_mkey *k) __attribute__((nonnull));
void bd_batch_put_chunk(struct bd_batch *b, uint64_t c, const uint8_t bits[BD_CHUNK_BYTES])
	__attribute__((nonnull));
void bd_batch_put_super(struct bd_batch *b, const struct bd_super *s) __attribute__((nonnull));
/* Set or clear the 'C' marker: the persisted bitmap chunks match the extent index. */
void bd_batch_set_chunks_current(struct bd_batch *b, bool current) __attribute__((nonnull));
/* Raw keys outside the extent and bitmap spaces ('V' PG versions, 'F' family -> pool, 'I'
 * persisted compare-and-write results). */
void bd_batch_put_raw(struct bd_batch *b, const void *key, size_t klen, const void *val,
		      size_t vlen) __attribute__((nonnull));
void bd_batch_del_raw(struct bd_batch *b, const void *key, size_t klen) __attribute__((nonnull));
/* The batch's serialized form (valid until the batch changes). */
const char *bd_batch_data(const struct bd_batch *b, size_t *len) __attribute__((nonnull));
/* Commit a batch given in its serialized form (journal replay). Returns 0 or -errno. */
int bd_index_apply(struct bd_index *ix, const char *rep, size_t len) __attribute__((nonnull));
/* Every extent-list put in a serialized batch (rep, len), in order: fn gets the key and the
 * decoded list (NULL and the error if it does not decode); a non-zero return stops the walk
 * and is returned. Deletes and other keys are skipped. */
int bd_batch_scan_maps(const char *rep, size_t len, bd_map_fn fn, void *arg)
	__attribute__((nonnull(1, 3)));
/* Put v as an 8-byte big-endian value (read back by bd_index_get_u64). */
void bd_batch_put_u64(struct bd_batch *b, const void *key, size_t klen, uint64_t v)
	__attribute__((nonnull));
/* An 8-byte big-endian value: 1 and *v, 0 when absent, or -EIO. */
int bd_index_get_u64(struct bd_index *ix, const void *key, size_t klen, uint64_t *v)
	__attribute__((nonnull));
/* Calls fn(arg, key, klen, val, vlen) for every key starting with prefix; nonzero stops. */
typedef int (*bd_raw_fn)(void *arg, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen);
int bd_index_scan_raw(struct bd_index *ix, const void *prefix, size_t plen, bd_raw_fn fn, void *arg)
	__attribute__((nonnull(1, 2, 4)));
/*
 * Commit atomically. Returns 0 or -EIO. With sync, the WAL (everything committed so far) is
 * written and synced before returning. Without it, the commit reaches RocksDB's memtable and
 * the WAL buffer in this process's memory only: a killed process loses it (the reply journal
 * covers that, journal.c), and nothing of it reaches the disk before the next sync or
 * bd_index_flush_wal. See bd_index_open for why.
 */
int bd_index_commit(struct bd_index *ix, struct bd_batch *b, bool sync) __attribute__((nonnull));
/* Write and sync the WAL (everything committed so far survives power loss). The caller has
 * made the data of every commit durable first. Returns 0 or -EIO. */
int bd_index_sync(struct bd_index *ix) __attribute__((nonnull));
/* Write the WAL buffer to the file without a sync: commits so far survive a killed process
 * (not a power cut). The caller has made their data durable first. Returns 0 or -EIO. */
int bd_index_flush_wal(struct bd_index *ix) __attribute__((nonnull));
/* Bytes committed since the last WAL write (what the WAL buffer holds). */
uint64_t bd_index_unflushed(const struct bd_index *ix) __attribute__((nonnull));
/* Bytes in the active memtable (0 if RocksDB cannot say). */
uint64_t bd_index_memtable_bytes(struct bd_index *ix) __attribute__((nonnull));
/* Is the active memtable at the size blockd switches it (index.c)? */
bool bd_index_memtable_full(struct bd_index *ix) __attribute__((nonnull));
/* Switch to a new memtable and flush the old one in the background. Call right after
 * bd_index_sync, with no commit since: the switch writes the WAL buffer out. 0 or -EIO. */
int bd_index_switch_memtable(struct bd_index *ix) __attribute__((nonnull));
/* Commits so far (a counter, from any thread). */
uint64_t bd_index_commits(const struct bd_index *ix) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* layers.c: (family, layer) -> ancestry. Parent links never change, so entries never go stale;
 * a delete only forgets them. */

struct bd_layers;
int bd_layers_new(struct bd_layers **out) __attribute__((nonnull));
void bd_layers_free(struct bd_layers *ls);
/* Remember the ancestry (parent first). Returns 0, -ENOMEM, or -EINVAL (> BD_MAX_DEPTH). */
int bd_layers_set(struct bd_layers *ls, uint64_t family, uint64_t layer, const uint64_t *anc,
		  uint32_t n) __attribute__((nonnull(1)));
/* Returns the cached ancestry length and sets *anc, or -ENOENT. */
int bd_layers_get(struct bd_layers *ls, uint64_t family, uint64_t layer, const uint64_t **anc)
	__attribute__((nonnull));
void bd_layers_forget(struct bd_layers *ls, uint64_t family, uint64_t layer)
	__attribute__((nonnull));
#define BD_MAX_DEPTH 1024

/* ------------------------------------------------------------------------------------------ */
/* cache.c: the hot in-memory front of the index.
 *
 *   (f, L, o, s) --> entry { resolved: L itself, an ancestor R, or 0 (nothing), gen, map? }
 *                                       |
 *                                       +--> entry (f, R, o, s) { map }
 *
 * A resolution is valid while entry.gen == cache.gen; layer delete and flatten bump the gen.
 * Ordinary writes only ever give the head its own list, which updates the head's entry. */

struct bd_cache;
struct bd_centry {
	struct bd_mkey key;
	uint64_t resolved; /* layer whose list serves this key, 0 = none */
	uint64_t gen;
	struct bd_extmap *map; /* resolved == key.layer: the own list (when loaded); otherwise,
				* when set, the serving ancestor's list, shared: a read of a
				* clone then costs one lookup whatever its depth */
	struct bd_centry *hnext;
	TAILQ_ENTRY(bd_centry) lru;
};

/* Lists held by cache entries: reference counted (bd_map_put frees at zero; NULL is fine). */
struct bd_extmap *bd_map_new(void);
struct bd_extmap *bd_map_ref(struct bd_extmap *m);
void bd_map_put(struct bd_extmap *m);

int bd_cache_new(struct bd_cache **out, size_t max_entries) __attribute__((nonnull));
void bd_cache_free(struct bd_cache *c);
struct bd_centry *bd_cache_find(struct bd_cache *c, const struct bd_mkey *k)
	__attribute__((nonnull));
/* Find or create (evicting the least recently used beyond the limit). NULL on ENOMEM. */
struct bd_centry *bd_cache_get(struct bd_cache *c, const struct bd_mkey *k)
	__attribute__((nonnull));
void bd_cache_drop(struct bd_cache *c, const struct bd_mkey *k) __attribute__((nonnull));
void bd_cache_invalidate(struct bd_cache *c) __attribute__((nonnull)); /* bump gen */
uint64_t bd_cache_gen(const struct bd_cache *c) __attribute__((nonnull));
size_t bd_cache_size(const struct bd_cache *c) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* engine.c */

struct bd_engine;

/* A raw key/value pair for the index (see index.c for the key spaces). */
struct bd_xkv {
	const void *key;
	size_t klen;
	const void *val;
	size_t vlen;
};

struct bd_engine_opts {
	const char *data_path;
	const char *db_path; /* NULL: data_path + ".db" */
	uint64_t size;       /* create the data file sparse at this size if it does not exist */
	size_t cache_entries;
	bool fsck_only;          /* open, check, do not repair */
	bool plain_io;           /* no registered file or buffers (comparisons, old kernels) */
	uint64_t prewrite_ahead; /* bytes of written free space kept ahead of allocation (0: off) */
	/* Journal each group commit and reply to its plain writes before the RocksDB commit
	 * (journal.c). false: reply after the commit. */
	bool journal;
	/* Rewrite a segment read whole that lies in more than this many physical runs into one
	 * (defrag.c); 0: off. */
	uint32_t defrag_runs;
	/* A rewrite may copy up to this many of the segment's blocks that other layers still
	 * reference (a clone's or a head's list, mostly its own after random writes); 0: it
	 * rewrites only segments whose every block is the list's alone. */
	uint32_t defrag_shared;
	bool defrag_background; /* also while idle (bd_defrag_tick) */
	/* Refuse writes with ENOSPC while the file system of the index or the data file has less
	 * than this many bytes available, so that RocksDB never runs out (fsspace.c); 0: off. */
	uint64_t min_free;
};

#define BD_PREWRITE_AHEAD (64ull << 20) /* strata-blockd's default */
#define BD_DEFRAG_RUNS    8             /* strata-blockd's default */
#define BD_MIN_FREE       (64ull << 20) /* strata-blockd's default */
#define BD_DEFRAG_SHARED  16            /* strata-blockd's default: a quarter of a segment */
/* strata-blockd's reactor spin (--spin-us): none. Its polling kept its own verifier and
 * committer threads off the CPU (ARCHITECTURE.md, session 12); the gateways keep theirs. */
#define BD_SPIN_US 0

/* One object request, as validated by the service (or a test). */
struct bd_req {
	uint64_t family, object, layer;
	const uint64_t *ancestry; /* parent first; NULL/0: use the cached ancestry or none */
	uint32_t nancestry;
	uint64_t offset; /* bytes, multiple of BD_BLOCK */
	uint32_t length; /* bytes, multiple of BD_BLOCK, > 0 */
	uint64_t client_id, seq;
	bool fua;
	bool caw_done; /* a write applying a successful compare-and-write (a replica's forward):
			* its (client_id, seq) is persisted like the compare-and-write's own */
	const struct bd_xkv *xkv; /* extra keys committed in the same WriteBatch (may be NULL) */
	uint32_t nxkv;
	/* Write, write-zeroes and trim: called with the op's cb_arg once the mutation holds the
	 * blocks it needs (at once for one that needs none, later for a write that waited for a
	 * pending group to release some, never for one refused). From then on it fails only on
	 * an I/O error or a failed engine, not for want of space. NULL: not called. The
	 * replication layer forwards a mutation from here (replicate.c). */
	void (*reserved)(void *cb_arg);
};

struct bd_fsck_report {
	uint64_t lists;
	uint64_t bad_lists;       /* undecodable */
	uint64_t referenced;      /* blocks with references */
	uint64_t references;      /* total references */
	bool bitmap_checked;      /* the persisted bitmap was current (clean close): compared */
	uint64_t persisted;       /* blocks the persisted bitmap marks allocated */
	uint64_t leaked;          /* persisted allocated, unreferenced (when bitmap_checked) */
	uint64_t missing;         /* referenced, persisted free (when bitmap_checked) */
	uint64_t out_of_range;    /* references past the end of the data file */
	uint64_t double_refs;     /* one block referenced from two different logical places */
	uint64_t checksum_errors; /* with verify_data */
};

struct bd_space {
	uint64_t total_blocks, used_blocks, free_blocks;
	uint64_t checksum_errors;
	uint64_t lists;
	uint64_t fixed_reads;       /* data reads that went through a registered buffer */
	uint64_t data_writevs;      /* data writevs started (coalesce.c) */
	uint64_t data_write_subs;   /* the op sub-writes they carried */
	uint64_t written_blocks;    /* [0, this) of the data file is known written (prewrite.c) */
	uint64_t prewritten_blocks; /* zero-filled by the prewriter since open */
	uint64_t unready_blocks;    /* allocated outside the written region since open */
	uint64_t journaled_groups;  /* group commits journaled (replied to first) since open */
	uint64_t journal_replayed;  /* group commits the journal gave back at open */
	uint64_t awaited_groups;    /* journaled groups replied to while the committer was busy */
	uint64_t data_syncs;        /* fdatasyncs of the data file ahead of a synced index commit */
	uint64_t verify_offloads;   /* READs whose crcs the verifier thread checked */
	uint64_t defrag_segments;   /* fragmented segments rewritten contiguously (defrag.c) */
	uint64_t defrag_skipped;    /* candidates dropped: changed meanwhile, or no free run */
	uint64_t defrag_running;    /* rewrites and background reads in flight */
	uint64_t defrag_scanned;    /* background reads of segments the scan found fragmented */
	uint64_t fs_available;      /* bytes free on the fuller of the index's and data's fs */
	uint64_t fs_refused;        /* writes refused: that file system reached --min-free */
	bool fs_low;                /* writes are being refused for that reason now */
};

struct bd_status_ext {
	uint64_t offset, length;
	int state; /* STRATA__BLOCKD__BLOCK_STATE__* values: 0 unallocated, 1 data, 2 zero */
};

typedef void (*bd_done_cb)(void *cb_arg, int err);

/* Open the data file and index, rebuild reference counts and the bitmap from the index
 * (reclaiming space a crash leaked), and repair the persisted bitmap. Returns 0 or -errno. */
int bd_engine_open(struct st_reactor *r, const struct bd_engine_opts *o, struct bd_engine **out)
	__attribute__((nonnull));
/* Waits for nothing: call with no operation in flight. */
void bd_engine_close(struct bd_engine *e);
/* Commit and complete every gathered or sealed group, turning the reactor (not from inside
 * it), or inline once the engine has no reactor. strata-blockd calls it at shutdown before
 * and after destroying the reactor. */
void bd_engine_settle(struct bd_engine *e) __attribute__((nonnull));
/* The engine's reactor was destroyed (strata-blockd closes the engine after it): close then
 * leaves the ring alone. */
void bd_engine_forget_reactor(struct bd_engine *e) __attribute__((nonnull));
/* True while a group of writes is gathered, being committed, or committed and not yet
 * completed: writes already replied to may still release blocks (journal.c). */
bool bd_engine_groups_pending(struct bd_engine *e) __attribute__((nonnull));
/* Write group commits on a committer thread, pipelined with the next group's gathering
 * (blockd/committer.c): while the reactor thread is saturated and other ops are live, or, with
 * always (tests), every group. Returns 0 or -errno. */
int bd_engine_start_committer(struct bd_engine *e, bool always) __attribute__((nonnull));
/* Back to committing on the reactor thread, after the group in flight. Call before
 * st_reactor_destroy(). */
void bd_engine_stop_committer(struct bd_engine *e) __attribute__((nonnull));
/* Background defragmentation (defrag.c): call every few hundred ms; after a tick with no
 * client op it reads and rewrites fragmented segments until one arrives. */
void bd_defrag_tick(struct bd_engine *e) __attribute__((nonnull));
/* Tests: hold the committer thread before its next commit (true), or let it go (false). */
void bd_committer_hold(struct bd_engine *e, bool hold) __attribute__((nonnull));
/* Tests: a flush's sync job waits at the committer (which stays busy) while held. */
void bd_committer_hold_sync(struct bd_engine *e, bool hold) __attribute__((nonnull));
/* No new prewrites (blockd/prewrite.c); off the reactor thread, also wait for the one in
 * flight. Call before st_reactor_destroy(); bd_engine_close calls it too. */
void bd_engine_stop_prewriter(struct bd_engine *e) __attribute__((nonnull));
/* Check read checksums on a worker thread from now on (blockd/verify.c). Returns 0 or -errno. */
int bd_engine_start_verifier(struct bd_engine *e) __attribute__((nonnull));
/* Back to checking on the reactor thread; ops the worker holds are posted to the reactor
 * first. Call before st_reactor_destroy(). */
void bd_engine_stop_verifier(struct bd_engine *e) __attribute__((nonnull));
/* The data file's persistent identity (from the index superblock), as text. */
void bd_engine_uuid(const struct bd_engine *e, char out[37]) __attribute__((nonnull));
/* The report of the last rebuild (open). */
const struct bd_fsck_report *bd_engine_fsck_report(const struct bd_engine *e)
	__attribute__((nonnull));
/* Read every referenced block and check its crc (slow; for --fsck). Returns 0 or -errno. */
int bd_engine_verify_data(struct bd_engine *e, struct bd_fsck_report *rep) __attribute__((nonnull));
void bd_engine_space(struct bd_engine *e, struct bd_space *s) __attribute__((nonnull));
/* Free limbo blocks that no read can still see (also done after every op). */
void bd_engine_reap(struct bd_engine *e) __attribute__((nonnull));
/* Start a background flush if freed blocks wait for a durable commit (at most once a second);
 * the service calls it from its periodic tick. */
void bd_engine_sync_tick(struct bd_engine *e) __attribute__((nonnull));
/* Make every commit durable now (blocking fdatasync + WAL sync) and reap; for the ENOSPC path.
 * Returns true if blocks came back. */
bool bd_engine_reclaim_now(struct bd_engine *e) __attribute__((nonnull));
struct bd_index *bd_engine_index(struct bd_engine *e) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* read.c, mutate.c */

/*
 * Async ops: cb(cb_arg, err) runs on the reactor thread, possibly before the call returns.
 * Buffers are BD_BLOCK-aligned, req->length bytes, and must stay valid until cb.
 * read: 0 or -EINVAL, -EILSEQ (checksum), -EIO. write: 0, -ENOSPC, -EIO, -EINPROGRESS.
 */
void bd_read(struct bd_engine *e, const struct bd_req *q, void *buf, bd_done_cb cb, void *cb_arg)
	__attribute__((nonnull(1, 2, 3, 4)));
void bd_write(struct bd_engine *e, const struct bd_req *q, const void *buf, bd_done_cb cb,
	      void *cb_arg) __attribute__((nonnull(1, 2, 3, 4)));
void bd_write_zeroes(struct bd_engine *e, const struct bd_req *q, bd_done_cb cb, void *cb_arg)
	__attribute__((nonnull(1, 2, 3)));
void bd_trim(struct bd_engine *e, const struct bd_req *q, bd_done_cb cb, void *cb_arg)
	__attribute__((nonnull(1, 2, 3)));
/* Compare [cmp] with the current data; if equal write [data] atomically (no other mutation of
 * the object interleaves). On a miscompare: BD_ERR_MISCOMPARE, *miscompare = byte offset. */
void bd_compare_and_write(struct bd_engine *e, const struct bd_req *q, const void *cmp,
			  const void *data, uint64_t *miscompare, bd_done_cb cb, void *cb_arg)
	__attribute__((nonnull(1, 2, 3, 4, 6)));
/* Make every completed write durable: fdatasync(data) then a synced WAL. */
void bd_flush(struct bd_engine *e, bd_done_cb cb, void *cb_arg) __attribute__((nonnull(1, 2)));
/* Before serving a pull: when the memtable holds PULL_SWITCH_BYTES or more, flush and switch
 * it (in the background), so that the pull's object exports do not sort it each (mutate.c). */
#define PULL_SWITCH_BYTES (256u << 10)
void bd_flush_memtable(struct bd_engine *e) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* metaops.c */

/* Synchronous metadata ops. Return 0 or -errno. */
int bd_block_status(struct bd_engine *e, const struct bd_req *q, struct bd_status_ext *out,
		    size_t max, size_t *n) __attribute__((nonnull));
int bd_layer_delete(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t *children,
		    uint32_t nchildren, uint64_t *lists_dropped, uint64_t *lists_moved,
		    uint64_t *blocks_freed) __attribute__((nonnull(1)));
int bd_flatten(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t *anc,
	       uint32_t nanc, uint64_t *lists_copied) __attribute__((nonnull(1)));

/* ------------------------------------------------------------------------------------------ */
/* resolve.c */

/* The cached ancestry of a layer (parent first): its length, or -ENOENT. */
int bd_engine_ancestry(struct bd_engine *e, uint64_t family, uint64_t layer, const uint64_t **anc)
	__attribute__((nonnull));
/* objcopy.c: commit raw keys alone (sync: WAL synced). Returns 0 or -EIO. */
int bd_engine_put_raw(struct bd_engine *e, const struct bd_xkv *xkv, uint32_t n, bool sync)
	__attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* objcopy.c: whole objects (every layer's own lists of one (family, object)) for recovery and
 * repair. Synchronous on the reactor thread (pread/pwrite): recovery is throttled, and a
 * transfer is at most one object. */

/* One exported list: the extent list as stored plus, in the data buffer, its data blocks in
 * block order. */
struct bd_xlist {
	uint64_t layer;
	uint32_t seg;
	struct bd_extmap map;
};

struct bd_xobj {
	uint32_t nlists;
	struct bd_xlist *lists;
	uint8_t *data; /* BD_BLOCK-aligned, ndata blocks */
	uint32_t ndata;
	uint32_t bad_blocks; /* data whose crc did not match (export with verify) */
};

void bd_xobj_free(struct bd_xobj *x);

/* A persisted compare-and-write outcome, for recovery (recovery.c). */
struct bd_idem_done {
	uint64_t client_id, seq, family, object;
};
/* The persisted outcomes whose object in_pg accepts, into *out (free it). Returns the count
 * or -ENOMEM. */
long bd_idem_export(struct bd_engine *e, bool (*in_pg)(void *arg, uint64_t family, uint64_t object),
		    void *arg, struct bd_idem_done **out) __attribute__((nonnull(1, 2, 4)));
/* Remember outcomes another member applied, as this node's own: each not known yet is entered
 * as done and its 'I' key put into e->batch, committed by the caller's next commit. */
void bd_idem_import(struct bd_engine *e, const struct bd_idem_done *v, size_t n)
	__attribute__((nonnull(1)));

/* Read every list of (family, object) and its data. Returns 0 or -errno; a block whose crc
 * does not match counts in bad_blocks (its data is exported as read). */
int bd_object_export(struct bd_engine *e, uint64_t family, uint64_t object, struct bd_xobj *out)
	__attribute__((nonnull));
/* One page of that: the lists after (after_layer, after_seg) in (layer, seg) order (after_layer
 * 0: from the first), as many as fit max_blocks of data (at least one, at most BD_XPAGE_LISTS,
 * which keeps a page's encoded lists well inside a frame's message limit); *more says whether
 * lists remain after the page. */
#define BD_XPAGE_LISTS 512u
int bd_object_export_page(struct bd_engine *e, uint64_t family, uint64_t object,
			  uint64_t after_layer, uint32_t after_seg, uint32_t max_blocks,
			  struct bd_xobj *out, bool *more) __attribute__((nonnull));
/*
 * bd_object_export_page with the data read through the ring: returns 0 and calls cb once, from
 * a later reactor callback, with the page (x: the callee's until cb returns; cb may take
 * x->data or x->lists and set them to NULL), or returns -errno (-EINVAL for family 0) without
 * calling it. x->bad_blocks counts blocks whose data does not match its crc.
 */
typedef void (*bd_export_cb)(void *arg, int err, struct bd_xobj *x, bool more);
int bd_object_export_async(struct bd_engine *e, uint64_t family, uint64_t object,
			   uint64_t after_layer, uint32_t after_seg, uint32_t max_blocks,
			   bd_export_cb cb, void *arg) __attribute__((nonnull(1, 7)));
/* Replace every list of (family, object) with x's (nlists 0: delete the object), data written
 * to fresh blocks first, then one WriteBatch (with xkv). -EBUSY while an op holds the object,
 * -EILSEQ when a data block does not match its crc. */
int bd_object_install(struct bd_engine *e, uint64_t family, uint64_t object,
		      const struct bd_xobj *x, const struct bd_xkv *xkv, uint32_t nxkv)
	__attribute__((nonnull(1, 4)));
/*
 * bd_object_install with the data written through the ring. The object's lock is asked for
 * at the start and held to the commit: ops that hold it already (a write whose group has not
 * committed) finish first, and ops that come later wait and apply on top of the installed
 * copy. Takes x (emptied here; its data must be aligned for O_DIRECT) and copies xkv. Returns
 * 0 and calls cb(arg, err) once, from a later reactor callback, or returns -errno without
 * calling it (-EILSEQ for a bad crc, -EINVAL for family 0 or without a reactor, -ENOSPC).
 * err is -EAGAIN when a layer was deleted or flattened meanwhile (pull again).
 */
int bd_object_install_async(struct bd_engine *e, uint64_t family, uint64_t object,
			    struct bd_xobj *x, const struct bd_xkv *xkv, uint32_t nxkv,
			    bd_done_cb cb, void *arg) __attribute__((nonnull(1, 4, 7)));
/* Every list of (family, object) in key order, once pending group commits are in the index.
 * 0 (*lists malloc'd, *n of them, NULL and 0 for none) or -errno (-EINVAL for family 0). */
int bd_object_lists(struct bd_engine *e, uint64_t family, uint64_t object, struct bd_xlist **lists,
		    uint32_t *n) __attribute__((nonnull));
/*
 * Digest of an object for scrub (digest.c): a hash over every list's layer, segment, block
 * states and the crc32c of the data actually read; bad = blocks whose data does not match the
 * stored crc. The data is read through the ring a segment at a time, so client I/O goes on
 * meanwhile. Returns 0 and calls cb once, from a later reactor callback, or returns -errno
 * (-EINVAL for family 0, -ENOMEM) without calling it.
 */
typedef void (*bd_digest_cb)(void *arg, int err, uint64_t digest, uint32_t bad, uint32_t nlists,
			     uint32_t nblocks);
int bd_object_digest(struct bd_engine *e, uint64_t family, uint64_t object, bd_digest_cb cb,
		     void *arg) __attribute__((nonnull(1, 4)));
/* Every (family, object) with at least one list, for which keep(arg, family, object) is true,
 * sorted and unique. Returns the count (*out malloc'd, 2 words each) or -errno. */
typedef bool (*bd_obj_filter)(void *arg, uint64_t family, uint64_t object);
long bd_object_list(struct bd_engine *e, bd_obj_filter keep, void *arg, uint64_t **out)
	__attribute__((nonnull(1, 2, 4)));
/*
 * Every (family, object) with a list, sorted and unique, listed on a thread of its own after
 * every pending group is committed: a node's whole index is scanned, which on a big node is
 * far too long for the reactor thread. Returns 0 and calls cb(arg, err, objs, n) once, on the
 * reactor thread (objs malloc'd, the callee's; NULL for none or on error), or -errno without
 * calling it. err is -ECANCELED when the engine closed first.
 */
typedef void (*bd_objlist_cb)(void *arg, int err, uint64_t *objs, long n);
int bd_object_list_async(struct bd_engine *e, bd_objlist_cb cb, void *arg)
	__attribute__((nonnull(1, 2)));
/* Wait for every listing thread (their answers are posted): before the reactor is destroyed. */
void bd_engine_stop_listers(struct bd_engine *e) __attribute__((nonnull));
/* Keep the (family, object) pairs of v that keep accepts, in place and in order. Returns how
 * many. */
size_t bd_pairs_keep(uint64_t *v, size_t n, bd_obj_filter keep, void *arg)
	__attribute__((nonnull(3)));
/* Sort n (family, object) pairs in v and drop repeats. Returns how many are left. */
size_t bd_pairs_sort_unique(uint64_t *v, size_t n);

/* ------------------------------------------------------------------------------------------ */
/* service.c */

struct bd_service;
struct bd_service_opts {
	const char *listen;
	const char *advertise; /* NULL: the listen address (not a wildcard: main.c checks) */
	const char *meta;      /* NULL: run without meta */
};
int bd_service_start(struct st_reactor *r, struct bd_engine *e, const struct bd_service_opts *o,
		     struct bd_service **out) __attribute__((nonnull));
/* Stop accepting and arming (reactor no longer running); free after st_reactor_destroy(). */
void bd_service_stop(struct bd_service *s);
void bd_service_free(struct bd_service *s);
int bd_service_port(const struct bd_service *s) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* dist.c, replicate.c, recovery.c, scrub.c: placement, fencing, primary-copy replication,
 * peering and recovery, scrub (see dist_int.h and docs/ARCHITECTURE.md). Enabled with meta. */

struct bd_dist;
struct st_frame;
/* service.c: where the reply to one frame goes. bd_reply_send sends it (payload: malloc'd,
 * freed by the transport; msg may be NULL) and frees rp. A status < 0 sends an ErrorReply. */
struct bd_reply;
struct ProtobufCMessage;
void bd_reply_send(struct bd_reply *rp, int status, const struct ProtobufCMessage *msg,
		   void *payload, size_t len) __attribute__((nonnull(1)));

/* A data request from a client, handed to the distribution layer. The first block is the
 * caller's; the rest belongs to the layer. */
struct bd_dreq {
	uint16_t type; /* BLOCKD_READ, _WRITE, _WRITE_ZEROES, _TRIM, _COMPARE_AND_WRITE */
	uint32_t pool_id;
	uint64_t epoch;
	struct bd_req q;
	const void *io; /* the Strata__Blockd__IoRequest, forwarded to replicas */
	const uint8_t *payload;
	uint32_t payload_len;
	uint8_t *rbuf; /* READ destination */
	uint64_t *miscompare;
	bd_done_cb cb;
	void *cb_arg;

	struct bd_pg *pg;
	uint64_t version, prev;
	int pending, err;
	uint32_t fwd_applied; /* members that applied the forward */
	uint32_t nfwd;        /* entries in fwd */
	bool local_ok, local_over, repaired;
	bool holds;     /* keeps the PG's admission closed (replicate.c) */
	bool starting;  /* inside start(): its forwards may not be out yet */
	bool forwarded; /* its forwards were sent, once its local op held its blocks */
	uint8_t keys[2][9], vals[2][8];
	struct bd_xkv xkv[2];
	struct bd_fwd *fwd;
	TAILQ_ENTRY(bd_dreq) link;
};

/* PG health of one pool as this node sees it: clean, degraded and recovering count the PGs
 * this node is the primary of, so summing over the up nodes counts each PG once. */
struct bd_pool_stats {
	uint32_t pool;
	uint32_t primary, clean, degraded, recovering, member, stray;
	uint32_t down; /* primary here, every holder of its data down (not served) */
	uint32_t full; /* primary here, refusing writes: a member is out of space (dist_pg_full) */
	uint32_t pg_count;
	uint8_t *held; /* malloc'd: bit g set when this node holds PG g's data (version > 0) */
};

struct bd_dist_stats {
	uint64_t epoch; /* of the map the counts come from (0: none yet) */
	uint32_t pgs_primary, pgs_clean, pgs_degraded, pgs_recovering, pgs_member, pgs_stray;
	uint64_t objects_recovered, objects_to_recover;
	size_t npools;
	struct bd_pool_stats *pools; /* malloc'd (NULL when npools is 0): bd_dist_stats_free */
};

int bd_dist_new(struct st_reactor *r, struct bd_engine *e, struct bd_dist **out)
	__attribute__((nonnull));
/* No mutation admitted at an epoch older than epoch is still running (meta.c acknowledges an
 * epoch to strata-meta only then: see meta/fence.c). */
bool bd_dist_drained(const struct bd_dist *d, uint64_t epoch) __attribute__((nonnull));
void bd_dist_stop(struct bd_dist *d);
void bd_dist_free(struct bd_dist *d);
/* meta.c: registered as node id; a newer cluster map (ownership passes). */
void bd_dist_set_self(struct bd_dist *d, uint32_t id) __attribute__((nonnull));
/* Holder claims (dist.c): the meta session asks for heartbeats with kick(arg), reports the
 * outcome of each (claims_done), and forgets every claim when it registers again. */
void bd_dist_set_claim_kick(struct bd_dist *d, void (*kick)(void *arg), void *arg)
	__attribute__((nonnull(1)));
void bd_dist_claims_done(struct bd_dist *d, bool ok) __attribute__((nonnull));
void bd_dist_claims_reset(struct bd_dist *d) __attribute__((nonnull));
void bd_dist_set_map(struct bd_dist *d, void *cluster_map) __attribute__((nonnull));
uint64_t bd_dist_epoch(const struct bd_dist *d) __attribute__((nonnull));
/* Returns 0 or -ENOMEM (totals filled, pools NULL). */
int bd_dist_stats(struct bd_dist *d, struct bd_dist_stats *s) __attribute__((nonnull));
void bd_dist_stats_free(struct bd_dist_stats *s) __attribute__((nonnull));
/* A client READ/WRITE/WRITE_ZEROES/TRIM/COMPARE_AND_WRITE: fenced, replicated; r->cb when done. */
void bd_dist_io(struct bd_dist *d, struct bd_dreq *r) __attribute__((nonnull));
/* Fencing only (BLOCK_STATUS). Returns 0, -ESTALE or -EAGAIN. */
int bd_dist_fence(struct bd_dist *d, uint32_t pool_id, uint64_t family, uint64_t object,
		  uint64_t epoch) __attribute__((nonnull));
/* FLUSH: local, then every peer written to since the last flush (all: every up node). */
void bd_dist_flush(struct bd_dist *d, bool all, bd_done_cb cb, void *cb_arg)
	__attribute__((nonnull(1, 3)));
/* A 0x03xx frame or BLOCKD_SCRUB: takes the frame and answers through rp. */
void bd_dist_frame(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
	__attribute__((nonnull));

/* usage.c: LAYER_USAGE (bytes referenced by some layers' own lists, on the PGs this node is the
 * primary of; d NULL: every object). Takes the frame, answers through rp. */
void bd_usage_handle(struct bd_engine *e, struct bd_dist *d, struct st_frame *f,
		     struct bd_reply *rp) __attribute__((nonnull(1, 3, 4)));

/* ------------------------------------------------------------------------------------------ */
/* meta.c: registration with strata-meta, heartbeats every second, and the cluster map epoch
 * (MAP_WATCH long-poll). Reconnects on its own; blockd serves I/O whether or not meta is up. */

struct bd_meta;
/* self: the address peers and clients reach this blockd at. Returns 0 or -ENOMEM. */
int bd_meta_start(struct st_reactor *r, struct bd_engine *e, struct bd_dist *d, const char *meta,
		  const char *self, struct bd_meta **out) __attribute__((nonnull));
void bd_meta_stop(struct bd_meta *m);
void bd_meta_free(struct bd_meta *m);
uint64_t bd_meta_epoch(const struct bd_meta *m) __attribute__((nonnull));
uint32_t bd_meta_node_id(const struct bd_meta *m) __attribute__((nonnull));

#endif
