/*
 * The block allocator: a bitmap of blocks that are not free, reference counts from the extent
 * index, and a limbo of blocks whose last reference is gone but which a read submitted earlier
 * may still be reading.
 *
 * Crash-safety argument. Nothing here is persisted on its own: at start-up the engine rebuilds
 * `ref` (and so `inuse`) from the index alone. A block reserved for a write that never
 * committed is therefore free again after a crash. The persisted bitmap chunks are only a
 * cross-check for fsck: they are written at a clean close (with the 'C' marker that says they
 * are current), not with every commit; `dirty` lists the chunks changed since the last one.
 *
 * Allocation is next-fit from a cursor, preferring one contiguous run; it falls back to
 * several runs, scanning 64 blocks per word. It stays inside the written region [0, ready)
 * while that has room: over a sparse data file a write to a block the file never held makes
 * the filesystem allocate and convert an extent, about 1.4x the cost of an overwrite
 * (prewrite.c extends the region ahead of demand).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static inline bool bit_test(const uint64_t *b, uint64_t i)
{
	return (b[i >> 6] >> (i & 63)) & 1;
}

static inline void bit_set(uint64_t *b, uint64_t i)
{
	b[i >> 6] |= 1ull << (i & 63);
}

static inline void bit_clear(uint64_t *b, uint64_t i)
{
	b[i >> 6] &= ~(1ull << (i & 63));
}

/* A free block below ready became used, or the reverse. */
static inline void ready_took(struct bd_alloc *a, uint64_t b)
{
	if (b < a->ready) {
		a->ready_free--;
	}
}

static inline void ready_gave(struct bd_alloc *a, uint64_t b)
{
	if (b < a->ready) {
		a->ready_free++;
	}
}

uint64_t bd_alloc_nchunks(const struct bd_alloc *a)
{
	return (a->nblocks + BD_CHUNK_BLOCKS - 1) / BD_CHUNK_BLOCKS;
}

/* Returns 0 or -ENOMEM. */
int bd_alloc_init(struct bd_alloc *a, uint64_t nblocks)
{
	memset(a, 0, sizeof(*a));
	a->nblocks = nblocks;
	a->inuse = calloc((nblocks + 63) / 64 + 1, sizeof(uint64_t));
	a->ref = calloc(nblocks ? nblocks : 1, sizeof(uint32_t));
	a->pbits = calloc(bd_alloc_nchunks(a) * (BD_CHUNK_BLOCKS / 64) + 1, sizeof(uint64_t));
	a->chunk_dirty = calloc(bd_alloc_nchunks(a) + 1, 1);
	if (!a->inuse || !a->ref || !a->pbits || !a->chunk_dirty) {
		bd_alloc_fini(a);
		return -ENOMEM;
	}
	a->nfree = nblocks;
	return 0;
}

void bd_alloc_fini(struct bd_alloc *a)
{
	free(a->inuse);
	free(a->ref);
	free(a->pbits);
	free(a->chunk_dirty);
	free(a->dirty);
	free(a->limbo);
	memset(a, 0, sizeof(*a));
}

/* Find the first free block at or after `from` (below `to`). Returns to if none. */
static uint64_t find_free(const struct bd_alloc *a, uint64_t from, uint64_t to)
{
	uint64_t i = from;
	while (i < to) {
		uint64_t w = a->inuse[i >> 6] | ((1ull << (i & 63)) - 1);
		if (w != UINT64_MAX) {
			uint64_t r = (i & ~63ull) + (uint64_t)__builtin_ctzll(~w);
			return r < to ? r : to;
		}
		i = (i | 63) + 1;
	}
	return to;
}

/* The end of the free run starting at free block s: at most max blocks, below lim. */
static uint64_t run_end(const struct bd_alloc *a, uint64_t s, uint64_t lim, uint64_t max)
{
	uint64_t e = s;
	while (e < lim && e - s < max && !bit_test(a->inuse, e)) {
		e++;
	}
	return e;
}

/*
 * Where the next allocation below lim starts. Next-fit goes on where the last one ended while
 * that block is free, so the writes one reactor turn starts get adjacent blocks and leave as
 * one writev (coalesce.c). When it is not, the allocation starts at the next free block if a
 * run of RUN_MIN begins there (or, for n > 1 blocks, a run that holds all n), else at the next
 * wholly free, aligned word (64 blocks) within RUN_SCAN_WORDS: under random overwrites the
 * next free block is usually a lone one another write freed, and a turn's writes spread over
 * lone blocks cost one writev each. A scan that finds no free word is not repeated for RUN_SKIP
 * allocations, so a fragmented map costs one bounded scan per RUN_SKIP, and allocation falls
 * back to plain next-fit. strict (the written region, which has a fallback) returns lim instead
 * of a lone block.
 */
#define RUN_MIN        16u
#define RUN_SCAN_WORDS (1u << 15) /* 2 Mi blocks, 8 GiB: ~32 K word loads */
#define RUN_SKIP       1024u
static uint64_t run_start(struct bd_alloc *a, uint64_t pos, uint64_t lim, uint32_t n,
			  uint32_t *skip, bool strict)
{
	if (!bit_test(a->inuse, pos)) {
		return pos;
	}
	uint64_t s = find_free(a, pos, lim);
	uint32_t want = n > 1 && n < RUN_MIN ? n : RUN_MIN;
	if (s < lim && run_end(a, s, lim, want) - s >= want) {
		return s;
	}
	if (*skip > 0) {
		(*skip)--;
		return strict ? lim : pos;
	}
	uint64_t words = lim >> 6; /* whole words below lim */
	uint64_t w = (pos + 63) >> 6;
	uint64_t scan = words < RUN_SCAN_WORDS ? words : RUN_SCAN_WORDS;
	for (uint64_t k = 0; k < scan; k++, w++) {
		if (w >= words) {
			w = 0;
		}
		if (a->inuse[w] == 0) {
			return w << 6;
		}
	}
	*skip = RUN_SKIP;
	return strict ? lim : pos;
}

/* bd_alloc_get among blocks below lim, next-fit from *cursor. */
static int get_below(struct bd_alloc *a, uint64_t lim, uint64_t *cursor, uint32_t *skip,
		     bool strict, uint32_t n, struct bd_prun *runs, int maxruns)
{
	int nr = 0;
	uint32_t left = n;
	uint64_t pos = run_start(a, *cursor < lim ? *cursor : 0, lim, n, skip, strict);
	if (pos == lim) {
		return 0; /* strict: no run to continue or start */
	}
	uint64_t scanned = 0;
	while (left > 0 && scanned < 2 * lim + 2) {
		uint64_t s = find_free(a, pos, lim);
		if (s == lim) {
			scanned += lim - pos;
			pos = 0;
			continue;
		}
		uint64_t e = run_end(a, s, lim, left);
		if (nr == maxruns) {
			break;
		}
		for (uint64_t i = s; i < e; i++) {
			bit_set(a->inuse, i);
		}
		runs[nr].pblk = s;
		runs[nr].len = (uint32_t)(e - s);
		nr++;
		left -= (uint32_t)(e - s);
		scanned += e - pos;
		pos = e;
	}
	if (left > 0) {
		for (int i = 0; i < nr; i++) {
			for (uint64_t b = runs[i].pblk; b < runs[i].pblk + runs[i].len; b++) {
				bit_clear(a->inuse, b);
			}
		}
		return -ENOSPC;
	}
	for (int i = 0; i < nr; i++) {
		for (uint64_t b = runs[i].pblk; b < runs[i].pblk + runs[i].len; b++) {
			ready_took(a, b);
		}
	}
	a->nfree -= n;
	*cursor = pos;
	return nr;
}

/* Reserve n blocks as at most maxruns runs. Returns the number of runs, or -ENOSPC. */
int bd_alloc_get(struct bd_alloc *a, uint32_t n, struct bd_prun *runs, int maxruns)
{
	if (n == 0) {
		return 0;
	}
	if (a->nfree < n || maxruns <= 0) {
		return -ENOSPC;
	}
	if (a->ready < a->nblocks && a->ready_free >= n) {
		int nr = get_below(a, a->ready, &a->rcursor, &a->rskip, true, n, runs, maxruns);
		if (nr > 0) {
			return nr;
		}
	}
	int nr = get_below(a, a->nblocks, &a->cursor, &a->skip, false, n, runs, maxruns);
	if (nr > 0 && a->ready < a->nblocks) {
		a->unready += n;
	}
	return nr;
}

/* The first free run of at least n blocks below lim, from *cursor on (wrapping once). */
static bool find_run(const struct bd_alloc *a, uint64_t lim, uint64_t *cursor, uint32_t n,
		     uint64_t *out)
{
	uint64_t pos = *cursor < lim ? *cursor : 0;
	uint64_t scanned = 0;
	while (scanned < lim + n) {
		uint64_t s = find_free(a, pos, lim);
		if (s == lim) {
			scanned += lim - pos;
			pos = 0;
			continue;
		}
		uint64_t e = run_end(a, s, lim, n);
		if (e - s >= n) {
			*out = s;
			*cursor = e;
			return true;
		}
		scanned += e - pos;
		pos = e;
	}
	return false;
}

int bd_alloc_get_run(struct bd_alloc *a, uint32_t n, uint64_t *pblk)
{
	if (n == 0 || a->nfree < n) {
		return -ENOSPC;
	}
	bool found = a->ready < a->nblocks && a->ready_free >= n &&
		     find_run(a, a->ready, &a->rcursor, n, pblk);
	if (!found) {
		if (!find_run(a, a->nblocks, &a->cursor, n, pblk)) {
			return -ENOSPC;
		}
		if (a->ready < a->nblocks) {
			a->unready += n;
		}
	}
	bd_alloc_take(a, *pblk, n);
	return 0;
}

void bd_alloc_put(struct bd_alloc *a, uint64_t pblk, uint32_t n)
{
	for (uint64_t b = pblk; b < pblk + n; b++) {
		bit_clear(a->inuse, b);
		ready_gave(a, b);
	}
	a->nfree += n;
}

void bd_alloc_take(struct bd_alloc *a, uint64_t pblk, uint32_t n)
{
	for (uint64_t b = pblk; b < pblk + n; b++) {
		bit_set(a->inuse, b);
		ready_took(a, b);
	}
	a->nfree -= n;
}

uint32_t bd_alloc_free_run(const struct bd_alloc *a, uint64_t from, uint32_t max, uint64_t *start)
{
	uint64_t s = find_free(a, from, a->nblocks);
	*start = s;
	return (uint32_t)(run_end(a, s, a->nblocks, max) - s);
}

void bd_alloc_set_ready(struct bd_alloc *a, uint64_t ready)
{
	if (ready > a->nblocks) {
		ready = a->nblocks;
	}
	for (uint64_t b = a->ready; b < ready; b++) {
		if (!bit_test(a->inuse, b)) {
			a->ready_free++;
		}
	}
	if (ready > a->ready) {
		a->ready = ready;
		a->rskip = 0; /* the region has new runs to find */
	}
}

static void mark_dirty(struct bd_alloc *a, uint64_t pblk)
{
	uint64_t c = pblk / BD_CHUNK_BLOCKS;
	if (a->chunk_dirty[c]) {
		return;
	}
	if (a->ndirty == a->dirty_cap) {
		size_t nc = a->dirty_cap ? a->dirty_cap * 2 : 64;
		uint64_t *d = realloc(a->dirty, nc * sizeof(*d));
		if (!d) {
			return; /* the chunk is rewritten at the next start-up repair */
		}
		a->dirty = d;
		a->dirty_cap = nc;
	}
	a->chunk_dirty[c] = 1;
	a->dirty[a->ndirty++] = c;
}

void bd_alloc_ref(struct bd_alloc *a, uint64_t pblk)
{
	if (pblk >= a->nblocks) {
		return; /* a corrupt list; fsck reports it */
	}
	if (a->ref[pblk]++ == 0) {
		a->nreferenced++;
		bit_set(a->pbits, pblk);
		mark_dirty(a, pblk);
		if (!bit_test(a->inuse, pblk)) {
			/* Only during a rebuild: referenced blocks are never free. */
			bit_set(a->inuse, pblk);
			ready_took(a, pblk);
			a->nfree--;
		}
	}
}

bool bd_alloc_unref(struct bd_alloc *a, uint64_t pblk)
{
	if (pblk >= a->nblocks || a->ref[pblk] == 0) {
		return false; /* a bug elsewhere; fsck reports what the index says */
	}
	if (--a->ref[pblk] == 0) {
		a->nreferenced--;
		bit_clear(a->pbits, pblk);
		mark_dirty(a, pblk);
		return true;
	}
	return false;
}

int bd_alloc_defer_free(struct bd_alloc *a, uint64_t pblk, uint64_t seq)
{
	if (a->limbo_len == a->limbo_cap) {
		size_t nc = a->limbo_cap ? a->limbo_cap * 2 : 256;
		struct bd_limbo *l = malloc(nc * sizeof(*l));
		if (!l) {
			return -ENOMEM;
		}
		for (size_t i = 0; i < a->limbo_len; i++) {
			l[i] = a->limbo[(a->limbo_head + i) % a->limbo_cap];
		}
		free(a->limbo);
		a->limbo = l;
		a->limbo_head = 0;
		a->limbo_cap = nc;
	}
	a->limbo[(a->limbo_head + a->limbo_len) % a->limbo_cap] = (struct bd_limbo){pblk, seq};
	a->limbo_len++;
	return 0;
}

uint64_t bd_alloc_reap(struct bd_alloc *a, uint64_t min_seq)
{
	uint64_t n = 0;
	while (a->limbo_len > 0) {
		struct bd_limbo *l = &a->limbo[a->limbo_head];
		if (l->seq >= min_seq) {
			break;
		}
		/* A block re-referenced meanwhile (cannot happen today) stays in use. */
		if (a->ref[l->pblk] == 0 && bit_test(a->inuse, l->pblk)) {
			bit_clear(a->inuse, l->pblk);
			ready_gave(a, l->pblk);
			a->nfree++;
			n++;
		}
		a->limbo_head = (a->limbo_head + 1) % a->limbo_cap;
		a->limbo_len--;
	}
	return n;
}

void bd_alloc_chunk_encode(const struct bd_alloc *a, uint64_t c, uint8_t out[BD_CHUNK_BYTES])
{
	/* Little-endian bytes of the words: bit i of the chunk is bit i&7 of byte i>>3. */
	const uint64_t *w = a->pbits + c * (BD_CHUNK_BLOCKS / 64);
	for (uint32_t i = 0; i < BD_CHUNK_BLOCKS / 64; i++) {
		for (int b = 0; b < 8; b++) {
			out[i * 8 + b] = (uint8_t)(w[i] >> (8 * b));
		}
	}
}

void bd_alloc_clear_dirty(struct bd_alloc *a)
{
	for (size_t i = 0; i < a->ndirty; i++) {
		a->chunk_dirty[a->dirty[i]] = 0;
	}
	a->ndirty = 0;
}

void bd_alloc_sync_inuse(struct bd_alloc *a)
{
	a->limbo_len = 0;
	a->limbo_head = 0;
	a->nfree = 0;
	a->nreferenced = 0;
	a->ready_free = 0;
	for (uint64_t b = 0; b < a->nblocks; b++) {
		if (a->ref[b]) {
			bit_set(a->inuse, b);
			bit_set(a->pbits, b);
			a->nreferenced++;
		} else {
			bit_clear(a->inuse, b);
			bit_clear(a->pbits, b);
			a->nfree++;
			ready_gave(a, b);
		}
	}
}
