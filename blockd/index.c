/*
 * The extent index on RocksDB.
 *
 *   'E' family(8) layer(8) object(8) seg(4)   -> extent list (extmap.c encoding, zero-padded
 *                                                to a multiple of BD_EXTMAP_PAD bytes)
 *   'B' chunk(8)                              -> 512-byte persisted allocation bitmap chunk
 *   'C'                                       -> present: the 'B' chunks are current (written
 *                                                at a clean close, deleted at open)
 *   'S'                                       -> superblock (version, block size, nblocks, uuid)
 *   'V' pool(4) pg(4)                         -> PG version (8, big-endian): replication
 *   'F' family(8)                             -> pool id (4): which pool a family's PGs are in
 *   'I' client_id(8) seq(8)                   -> stamp (8): a compare-and-write that succeeded
 *                                                (idempotency across restarts: see mutate.c)
 *   'J'                                       -> (8) the last journaled group applied here
 *                                                (journal.c)
 *
 * Integers in keys are big-endian so that one family's (or one layer's) lists are one
 * contiguous key range: layer delete and flatten scan a prefix. Reads never scan: they get the
 * one key their cached resolution names.
 *
 * Every mutation of the extent index is one WriteBatch; the engine commits it only after the
 * data it points at has been written, so a crash leaves the old or the new list.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <rocksdb/c.h>

#include "common/log.h"
#include "engine_int.h"
#include "internal.h"

#define KEY_MAP_LEN     29
#define WAL_BUFFER_MAX  (64u << 20)
#define MEMTABLE_SWITCH (4u << 20)   /* blockd switches memtables here, after a sync */
#define MEMTABLE_HARD   (256u << 20) /* RocksDB would switch here by itself */
#define WAL_PREALLOC    (4u << 20)   /* disk reserved ahead of the WAL, per step */
#define KEY_CHUNK_LEN   9

struct bd_index {
	rocksdb_t *db;
	rocksdb_options_t *opts;
	rocksdb_block_based_table_options_t *bbo;
	rocksdb_filterpolicy_t *bloom; /* owned by bbo */
	rocksdb_writeoptions_t *wo, *wo_sync;
	rocksdb_readoptions_t *ro, *ro_scan;
	_Atomic uint64_t unflushed; /* bytes committed since the WAL was last written out */
	_Atomic uint64_t commits;   /* every commit so far */
};

struct bd_batch {
	rocksdb_writebatch_t *wb;
};

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (56 - 8 * i));
	}
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) {
		v = v << 8 | p[i];
	}
	return v;
}

static void map_key(uint8_t k[KEY_MAP_LEN], const struct bd_mkey *mk)
{
	k[0] = 'E';
	put_be64(k + 1, mk->family);
	put_be64(k + 9, mk->layer);
	put_be64(k + 17, mk->object);
	k[25] = (uint8_t)(mk->seg >> 24);
	k[26] = (uint8_t)(mk->seg >> 16);
	k[27] = (uint8_t)(mk->seg >> 8);
	k[28] = (uint8_t)mk->seg;
}

/* Decode an extent-list key (map_key's inverse) and its value, and hand both to fn: the list,
 * or NULL and the error if the value does not decode. */
static int map_fn_call(bd_map_fn fn, void *arg, const uint8_t k[KEY_MAP_LEN], const uint8_t *v,
		       size_t vlen)
{
	struct bd_mkey mk = {
		.family = get_be64(k + 1),
		.layer = get_be64(k + 9),
		.object = get_be64(k + 17),
		.seg = (uint32_t)k[25] << 24 | (uint32_t)k[26] << 16 | (uint32_t)k[27] << 8 | k[28],
	};
	struct bd_extmap m;
	int err = bd_extmap_decode_padded(&m, v, vlen);
	return fn(arg, &mk, err ? NULL : &m, err);
}

static void chunk_key(uint8_t k[KEY_CHUNK_LEN], uint64_t c)
{
	k[0] = 'B';
	put_be64(k + 1, c);
}

void bd_index_thread_init(void)
{
	/* RocksDB counts every key comparison into a thread-local perf context by default
	 * (kEnableCount): two TLS lookups per comparison on the memtable insert path. */
	rocksdb_set_perf_level(rocksdb_disable);
}

/*
 * The memtable's hash prefix: an extent-list key up to its segment number ('E' family layer
 * object, 25 bytes), or the whole of a shorter key. See bd_index_open.
 */
#define KEY_HASH_PREFIX 25

static char *hash_prefix(void *state, const char *key, size_t len, size_t *plen)
{
	(void)state;
	*plen = len < KEY_HASH_PREFIX ? len : KEY_HASH_PREFIX;
	return (char *)key;
}

static unsigned char hash_prefix_in_domain(void *state, const char *key, size_t len)
{
	(void)state, (void)key, (void)len;
	return 1;
}

static void hash_prefix_destroy(void *state)
{
	(void)state; /* RocksDB calls it unconditionally; there is no state */
}

static const char *hash_prefix_name(void *state)
{
	(void)state;
	return "strata.object-prefix.v1";
}

/* Returns 0 or -errno. */
int bd_index_open(struct bd_index **out, const char *path)
{
	bd_index_thread_init();
	struct bd_index *ix = calloc(1, sizeof(*ix));
	if (!ix) {
		return -ENOMEM;
	}
	ix->opts = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(ix->opts, 1);
	rocksdb_options_increase_parallelism(ix->opts, 2);
	rocksdb_options_set_max_open_files(ix->opts, 256);
	/* Small memtables: a random 4 KiB write inserts a few keys, and the skiplist insert
	 * (FindSpliceForLevel, comparator calls that miss the CPU cache) grows with the memtable's
	 * entry count. The live key set is small (one list per written segment, one chunk per
	 * 16 MiB), so a flush writes little and overwritten versions die in the flush itself.
	 * 64 MiB (the default) -> 4 MiB cut blockd's CPU per 4k randwrite by about a fifth.
	 * blockd switches memtables itself at MEMTABLE_SWITCH bytes, right after a sync
	 * (bd_index_switch_memtable); RocksDB's own limit is set far above it, because a switch
	 * RocksDB makes writes the WAL buffer out before the data is synced (see the WAL below). */
	rocksdb_options_set_write_buffer_size(ix->opts, MEMTABLE_HARD);
	/* RocksDB reserves (fallocate) 1.1 x write_buffer_size for each WAL file it opens: with
	 * the far limit above, 282 MiB of disk per WAL, taken before the first write. On a host
	 * file system with less than that free, not one write could be placed (every data write
	 * failed with ENOSPC), and on any other the space sat unused. One database, one column
	 * family: max_total_wal_size then only caps that reservation (RocksDB switches WALs on
	 * it only with several column families). The WAL grows past it in steps of this size;
	 * blockd syncs and switches long before it holds much (BD_WAL_SYNC_BYTES). */
	rocksdb_options_set_max_total_wal_size(ix->opts, WAL_PREALLOC);
	rocksdb_options_set_arena_block_size(ix->opts, 1u << 20);
	/*
	 * Update a key in place when the memtable already holds it and the new value fits: the
	 * live key set is small and hot (every 4 KiB write rewrites its segment's list), so the
	 * memtable stops growing with overwritten versions and flushes (and their compactions)
	 * become rare. Safe here: one thread writes (the reactor), and no snapshot or iterator
	 * lives across a write (scans run to completion synchronously on that same thread).
	 * It needs the memtable to take writes from one thread at a time.
	 */
	rocksdb_options_set_allow_concurrent_memtable_write(ix->opts, 0);
	/* A list's encoding grows by 10-14 bytes per run, and a random write into a fragmented
	 * segment adds or removes runs: unpadded, about a third of the updates no longer fit in
	 * place and fall back to a second skiplist search and insert. Lists are therefore stored
	 * padded to a multiple of BD_EXTMAP_PAD bytes (bd_batch_put_map). */
	rocksdb_options_set_inplace_update_support(ix->opts, 1);
	/*
	 * A hashed memtable: the skiplist search of every put (FindGreaterOrEqual and its key
	 * comparisons, cache misses down a skiplist of every hot list) was the largest single item
	 * of blockd's CPU under 4 KiB random writes. Hashing on the object's key prefix leaves
	 * each bucket a skiplist of one object's segments. Point reads are unchanged; a scan sets
	 * total_order_seek (ro_scan), for which RocksDB sorts the memtable once per iterator: scans
	 * are rare (open, layer delete, flatten, recovery, idle-time defrag steps).
	 */
	rocksdb_options_set_prefix_extractor(
		ix->opts, rocksdb_slicetransform_create(NULL, hash_prefix_destroy, hash_prefix,
							hash_prefix_in_domain,
							hash_prefix_in_domain, hash_prefix_name));
	rocksdb_options_set_hash_skip_list_rep(ix->opts, 1u << 16, 4, 4);
	/*
	 * The WAL stays in this process until a sync. RocksDB would otherwise write every commit
	 * to the WAL file at once, into the page cache, and the kernel may write those pages to
	 * the disk at any time: a power cut could then keep a list whose data was still in the
	 * device's volatile cache, and that block would read back as a checksum error instead of
	 * its older, flushed version (found by test_blockd_powercut with cutfs keeping a random
	 * subset of the unsynced writes). With a manual WAL flush, the WAL reaches the file only
	 * in bd_index_sync and bd_index_flush_wal, which run after the data file's fdatasync.
	 * A killed process loses the buffer: the reply journal covers every group (journal.c).
	 * The buffer may hold WAL_BUFFER_MAX bytes before RocksDB writes it out by itself; blockd
	 * syncs long before (BD_WAL_SYNC_BYTES, engine.c). A memtable switch also writes the
	 * buffer out: blockd switches itself, right after a sync, when the buffer is empty
	 * (MEMTABLE_SWITCH, bd_index_switch_memtable).
	 */
	rocksdb_options_set_manual_wal_flush(ix->opts, 1);
	rocksdb_options_set_writable_file_max_buffer_size(ix->opts, WAL_BUFFER_MAX);
	/* No compression where data is rewritten soon (flushes, L1, L2): snappy on every flush
	 * was about 6% of blockd's CPU under random writes. Deeper levels, where a large index
	 * settles, keep it. */
	int comp[7] = {rocksdb_no_compression,     rocksdb_no_compression,
		       rocksdb_no_compression,     rocksdb_snappy_compression,
		       rocksdb_snappy_compression, rocksdb_snappy_compression,
		       rocksdb_snappy_compression};
	rocksdb_options_set_num_levels(ix->opts, 7);
	rocksdb_options_set_compression_per_level(ix->opts, comp, 7);
	ix->bbo = rocksdb_block_based_options_create();
	ix->bloom = rocksdb_filterpolicy_create_bloom(10);
	rocksdb_block_based_options_set_filter_policy(ix->bbo, ix->bloom);
	rocksdb_options_set_block_based_table_factory(ix->opts, ix->bbo);
	ix->wo = rocksdb_writeoptions_create();
	ix->wo_sync = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(ix->wo_sync, 1);
	ix->ro = rocksdb_readoptions_create();
	ix->ro_scan = rocksdb_readoptions_create();
	rocksdb_readoptions_set_total_order_seek(ix->ro_scan, 1);
	char *err = NULL;
	ix->db = rocksdb_open(ix->opts, path, &err);
	if (err) {
		st_error("rocksdb open %s: %s", path, err);
		rocksdb_free(err);
		bd_index_close(ix);
		return -EIO;
	}
	*out = ix;
	return 0;
}

void bd_index_close(struct bd_index *ix)
{
	if (!ix) {
		return;
	}
	if (ix->db) {
		rocksdb_close(ix->db);
	}
	if (ix->ro) {
		rocksdb_readoptions_destroy(ix->ro);
	}
	if (ix->ro_scan) {
		rocksdb_readoptions_destroy(ix->ro_scan);
	}
	if (ix->wo) {
		rocksdb_writeoptions_destroy(ix->wo);
	}
	if (ix->wo_sync) {
		rocksdb_writeoptions_destroy(ix->wo_sync);
	}
	if (ix->bbo) {
		rocksdb_block_based_options_destroy(ix->bbo);
	}
	if (ix->opts) {
		rocksdb_options_destroy(ix->opts);
	}
	free(ix);
}

/* Returns 1 with *val (rocksdb_free) set, 0 when absent, -EIO. */
static int get_raw(struct bd_index *ix, const uint8_t *k, size_t klen, char **val, size_t *vlen)
{
	char *err = NULL;
	*val = rocksdb_get(ix->db, ix->ro, (const char *)k, klen, vlen, &err);
	if (err) {
		st_error("rocksdb get: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	return *val ? 1 : 0;
}

int bd_index_get_map(struct bd_index *ix, const struct bd_mkey *k, struct bd_extmap *m)
{
	uint8_t key[KEY_MAP_LEN];
	map_key(key, k);
	char *v;
	size_t vlen;
	int rc = get_raw(ix, key, sizeof(key), &v, &vlen);
	if (rc <= 0) {
		return rc;
	}
	rc = bd_extmap_decode_padded(m, (const uint8_t *)v, vlen);
	rocksdb_free(v);
	return rc < 0 ? rc : 1;
}

int bd_index_get_chunks_current(struct bd_index *ix)
{
	char *v;
	size_t vlen;
	int rc = get_raw(ix, (const uint8_t *)"C", 1, &v, &vlen);
	if (rc > 0) {
		rocksdb_free(v);
	}
	return rc;
}

int bd_index_get_chunk(struct bd_index *ix, uint64_t c, uint8_t out[BD_CHUNK_BYTES])
{
	uint8_t key[KEY_CHUNK_LEN];
	chunk_key(key, c);
	char *v;
	size_t vlen;
	int rc = get_raw(ix, key, sizeof(key), &v, &vlen);
	if (rc <= 0) {
		return rc;
	}
	memset(out, 0, BD_CHUNK_BYTES);
	memcpy(out, v, vlen < BD_CHUNK_BYTES ? vlen : BD_CHUNK_BYTES);
	rocksdb_free(v);
	return 1;
}

static void super_encode(const struct bd_super *s, uint8_t out[40])
{
	memset(out, 0, 40);
	put_be64(out, s->version);
	put_be64(out + 8, s->block_size);
	put_be64(out + 16, s->nblocks);
	memcpy(out + 24, s->uuid, 16);
}

int bd_index_get_super(struct bd_index *ix, struct bd_super *s)
{
	char *v;
	size_t vlen;
	int rc = get_raw(ix, (const uint8_t *)"S", 1, &v, &vlen);
	if (rc <= 0) {
		return rc;
	}
	if (vlen != 40) {
		rocksdb_free(v);
		return -EBADMSG;
	}
	const uint8_t *p = (const uint8_t *)v;
	s->version = (uint32_t)get_be64(p);
	s->block_size = (uint32_t)get_be64(p + 8);
	s->nblocks = get_be64(p + 16);
	memcpy(s->uuid, p + 24, 16);
	rocksdb_free(v);
	return 1;
}

/* Ends a scan: a read error the iterator met turns rc into -EIO; the iterator is freed. */
static int iter_end(rocksdb_iterator_t *it, int rc)
{
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	if (err) {
		st_error("rocksdb scan: %s", err);
		rocksdb_free(err);
		rc = -EIO;
	}
	rocksdb_iter_destroy(it);
	return rc;
}

/* Every list from the key lo (plen bytes) on while its key starts with those bytes, skipping
 * one equal to skip (KEY_MAP_LEN bytes, or NULL). */
static int scan_maps(struct bd_index *ix, const uint8_t *lo, size_t plen, const uint8_t *seek,
		     size_t seeklen, const uint8_t *skip, bd_map_fn fn, void *arg)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator(ix->db, ix->ro_scan);
	int rc = 0;
	for (rocksdb_iter_seek(it, (const char *)seek, seeklen); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen < plen || memcmp(k, lo, plen) != 0) {
			break;
		}
		if (klen != KEY_MAP_LEN || (skip != NULL && memcmp(k, skip, KEY_MAP_LEN) == 0)) {
			continue;
		}
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		rc = map_fn_call(fn, arg, k, v, vlen);
		if (rc) {
			break;
		}
	}
	return iter_end(it, rc);
}

int bd_index_scan(struct bd_index *ix, uint64_t family, uint64_t layer, bd_map_fn fn, void *arg)
{
	uint8_t lo[17];
	size_t plen = 1;
	lo[0] = 'E';
	if (family) {
		put_be64(lo + 1, family);
		plen = 9;
		if (layer) {
			put_be64(lo + 9, layer);
			plen = 17;
		}
	}
	return scan_maps(ix, lo, plen, lo, plen, NULL, fn, arg);
}

/*
 * Recovery, stray removal and scrub list a PG's objects by scanning every list on the node (no
 * key groups a PG's objects), on a thread of their own (bd_object_list_async). With 200000
 * lists in 12500 objects that took 59-117 ms, a step and a list decoded per key; seeking past
 * an object's segments takes 45-51 ms. What remains is a seek per object; a key laid out by PG
 * would remove the scan.
 */
int bd_index_scan_objects(struct bd_index *ix, bd_obj_fn fn, void *arg)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator(ix->db, ix->ro_scan);
	int rc = 0;
	uint8_t next[25];
	rocksdb_iter_seek(it, "E", 1);
	while (rocksdb_iter_valid(it)) {
		size_t klen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen < 1 || k[0] != 'E') {
			break;
		}
		if (klen != KEY_MAP_LEN) {
			rocksdb_iter_next(it);
			continue;
		}
		uint64_t family = get_be64(k + 1), layer = get_be64(k + 9),
			 object = get_be64(k + 17);
		rc = fn(arg, family, layer, object);
		if (rc) {
			break;
		}
		memcpy(next, k, 17);
		put_be64(next + 17, object + 1);
		rocksdb_iter_next(it);
		if (object == UINT64_MAX || !rocksdb_iter_valid(it)) {
			continue;
		}
		k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen == KEY_MAP_LEN && memcmp(k, next, 17) == 0 && get_be64(k + 17) == object) {
			/* More segments of the object: one seek past them all (a dense object
			 * has 16), where a step per segment cost twice the time. */
			rocksdb_iter_seek(it, (const char *)next, sizeof(next));
		}
	}
	return iter_end(it, rc);
}

/*
 * The lists of one object: for each layer of the family, one seek to (family, layer, object)
 * and that object's lists, then one seek past the layer. A family's keys are ordered by layer
 * first, so a plain prefix scan would read every object of every layer (an object copy of a
 * big volume, once per object, made recovery quadratic in the volume's size).
 */
int bd_index_scan_object(struct bd_index *ix, uint64_t family, uint64_t object, bd_map_fn fn,
			 void *arg)
{
	if (family == 0) {
		return -EINVAL; /* bd_index_scan reads it as "every family"; no family is 0 */
	}
	uint8_t t[KEY_MAP_LEN];
	t[0] = 'E';
	put_be64(t + 1, family);
	rocksdb_iterator_t *it = rocksdb_create_iterator(ix->db, ix->ro_scan);
	int rc = 0;
	rocksdb_iter_seek(it, (const char *)t, 9);
	while (rc == 0 && rocksdb_iter_valid(it)) {
		size_t klen, vlen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen < 9 || memcmp(k, t, 9) != 0) {
			break; /* past the family */
		}
		if (klen != KEY_MAP_LEN) {
			rocksdb_iter_next(it);
			continue;
		}
		memcpy(t + 9, k + 9, 8); /* this key's layer */
		put_be64(t + 17, object);
		int c = memcmp(k, t, 25);
		if (c < 0) { /* to the object in this layer */
			rocksdb_iter_seek(it, (const char *)t, 25);
		} else if (c == 0) {
			const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
			rc = map_fn_call(fn, arg, k, v, vlen);
			rocksdb_iter_next(it);
		} else {
			uint64_t layer = get_be64(k + 9);
			if (layer == UINT64_MAX) {
				break;
			}
			put_be64(t + 9, layer + 1); /* past this layer */
			rocksdb_iter_seek(it, (const char *)t, 17);
		}
	}
	return iter_end(it, rc);
}

int bd_index_scan_after(struct bd_index *ix, const struct bd_mkey *after, bd_map_fn fn, void *arg)
{
	uint8_t lo[1] = {'E'};
	if (after == NULL) {
		return scan_maps(ix, lo, 1, lo, 1, NULL, fn, arg);
	}
	uint8_t k[KEY_MAP_LEN];
	map_key(k, after);
	return scan_maps(ix, lo, 1, k, sizeof(k), k, fn, arg);
}

struct bd_batch *bd_batch_new(void)
{
	struct bd_batch *b = malloc(sizeof(*b));
	if (!b) {
		return NULL;
	}
	b->wb = rocksdb_writebatch_create();
	return b;
}

void bd_batch_free(struct bd_batch *b)
{
	if (!b) {
		return;
	}
	rocksdb_writebatch_destroy(b->wb);
	free(b);
}

void bd_batch_clear(struct bd_batch *b)
{
	rocksdb_writebatch_clear(b->wb);
}

size_t bd_batch_count(const struct bd_batch *b)
{
	return (size_t)rocksdb_writebatch_count(b->wb);
}

void bd_batch_put_map(struct bd_batch *b, const struct bd_mkey *k, const struct bd_extmap *m)
{
	uint8_t key[KEY_MAP_LEN];
	uint8_t val[BD_EXTMAP_MAX_PADDED];
	map_key(key, k);
	size_t vlen = bd_extmap_pad(val, bd_extmap_encode(m, val));
	rocksdb_writebatch_put(b->wb, (const char *)key, sizeof(key), (const char *)val, vlen);
}

void bd_batch_del_map(struct bd_batch *b, const struct bd_mkey *k)
{
	uint8_t key[KEY_MAP_LEN];
	map_key(key, k);
	rocksdb_writebatch_delete(b->wb, (const char *)key, sizeof(key));
}

void bd_batch_put_chunk(struct bd_batch *b, uint64_t c, const uint8_t bits[BD_CHUNK_BYTES])
{
	uint8_t key[KEY_CHUNK_LEN];
	chunk_key(key, c);
	rocksdb_writebatch_put(b->wb, (const char *)key, sizeof(key), (const char *)bits,
			       BD_CHUNK_BYTES);
}

void bd_batch_put_super(struct bd_batch *b, const struct bd_super *s)
{
	uint8_t val[40];
	super_encode(s, val);
	rocksdb_writebatch_put(b->wb, "S", 1, (const char *)val, sizeof(val));
}

void bd_batch_set_chunks_current(struct bd_batch *b, bool current)
{
	if (current) {
		rocksdb_writebatch_put(b->wb, "C", 1, "1", 1);
	} else {
		rocksdb_writebatch_delete(b->wb, "C", 1);
	}
}

int bd_index_commit(struct bd_index *ix, struct bd_batch *b, bool sync)
{
	char *err = NULL;
	size_t len;
	(void)rocksdb_writebatch_data(b->wb, &len);
	rocksdb_write(ix->db, sync ? ix->wo_sync : ix->wo, b->wb, &err);
	if (err) {
		st_error("rocksdb write: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	ix->unflushed = sync ? 0 : ix->unflushed + len;
	ix->commits++;
	return 0;
}

static int flush_wal(struct bd_index *ix, bool sync)
{
	char *err = NULL;
	rocksdb_flush_wal(ix->db, sync, &err);
	if (err) {
		st_error("rocksdb flush_wal: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	ix->unflushed = 0;
	return 0;
}

int bd_index_sync(struct bd_index *ix)
{
	return flush_wal(ix, true);
}

int bd_index_flush_wal(struct bd_index *ix)
{
	return flush_wal(ix, false);
}

uint64_t bd_index_unflushed(const struct bd_index *ix)
{
	return ix->unflushed;
}

uint64_t bd_index_memtable_bytes(struct bd_index *ix)
{
	uint64_t v = 0;
	return rocksdb_property_int(ix->db, "rocksdb.cur-size-active-mem-table", &v) == 0 ? v : 0;
}

bool bd_index_memtable_full(struct bd_index *ix)
{
	return bd_index_memtable_bytes(ix) >= MEMTABLE_SWITCH;
}

int bd_index_switch_memtable(struct bd_index *ix)
{
	char *err = NULL;
	rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
	if (fo == NULL) {
		return -ENOMEM;
	}
	rocksdb_flushoptions_set_wait(fo, 0); /* switch now, write the table in the background */
	rocksdb_flush(ix->db, fo, &err);
	rocksdb_flushoptions_destroy(fo);
	if (err) {
		st_error("rocksdb flush: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	return 0;
}

uint64_t bd_index_commits(const struct bd_index *ix)
{
	return ix->commits;
}

void bd_batch_put_raw(struct bd_batch *b, const void *key, size_t klen, const void *val,
		      size_t vlen)
{
	rocksdb_writebatch_put(b->wb, key, klen, val, vlen);
}

static void append_put(void *arg, const char *k, size_t klen, const char *v, size_t vlen)
{
	rocksdb_writebatch_put(arg, k, klen, v, vlen);
}

static void append_del(void *arg, const char *k, size_t klen)
{
	rocksdb_writebatch_delete(arg, k, klen);
}

int bd_batch_append(struct bd_batch *dst, const struct bd_batch *src)
{
	rocksdb_writebatch_iterate(src->wb, dst->wb, append_put, append_del);
	return 0;
}

const char *bd_batch_data(const struct bd_batch *b, size_t *len)
{
	return rocksdb_writebatch_data(b->wb, len);
}

int bd_index_apply(struct bd_index *ix, const char *rep, size_t len)
{
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create_from(rep, len);
	if (!wb) {
		return -ENOMEM;
	}
	struct bd_batch b = {wb};
	int rc = bd_index_commit(ix, &b, false);
	rocksdb_writebatch_destroy(wb);
	return rc;
}

struct scan_batch {
	bd_map_fn fn;
	void *arg;
	int rc;
};

static void scan_batch_put(void *arg, const char *k, size_t klen, const char *v, size_t vlen)
{
	struct scan_batch *sb = arg;
	const uint8_t *kk = (const uint8_t *)k;
	if (sb->rc != 0 || klen != KEY_MAP_LEN || kk[0] != 'E') {
		return;
	}
	sb->rc = map_fn_call(sb->fn, sb->arg, kk, (const uint8_t *)v, vlen);
}

static void scan_batch_del(void *arg, const char *k, size_t klen)
{
	(void)arg;
	(void)k;
	(void)klen;
}

int bd_batch_scan_maps(const char *rep, size_t len, bd_map_fn fn, void *arg)
{
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create_from(rep, len);
	if (!wb) {
		return -ENOMEM;
	}
	struct scan_batch sb = {fn, arg, 0};
	rocksdb_writebatch_iterate(wb, &sb, scan_batch_put, scan_batch_del);
	rocksdb_writebatch_destroy(wb);
	return sb.rc;
}

void bd_batch_put_u64(struct bd_batch *b, const void *key, size_t klen, uint64_t v)
{
	uint8_t val[8];
	put_be64(val, v);
	rocksdb_writebatch_put(b->wb, key, klen, (const char *)val, sizeof(val));
}

int bd_index_get_u64(struct bd_index *ix, const void *key, size_t klen, uint64_t *v)
{
	char *val;
	size_t vlen;
	int rc = get_raw(ix, key, klen, &val, &vlen);
	if (rc == 1) {
		if (vlen == 8) {
			*v = get_be64((const uint8_t *)val);
		} else {
			rc = -EIO;
		}
		rocksdb_free(val);
	}
	return rc;
}

void bd_batch_del_raw(struct bd_batch *b, const void *key, size_t klen)
{
	rocksdb_writebatch_delete(b->wb, key, klen);
}

int bd_index_scan_raw(struct bd_index *ix, const void *prefix, size_t plen, bd_raw_fn fn, void *arg)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator(ix->db, ix->ro_scan);
	int rc = 0;
	for (rocksdb_iter_seek(it, prefix, plen); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen < plen || memcmp(k, prefix, plen) != 0) {
			break;
		}
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		rc = fn(arg, k, klen, v, vlen);
		if (rc) {
			break;
		}
	}
	return iter_end(it, rc);
}
