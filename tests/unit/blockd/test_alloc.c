#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "internal.h"

Test(alloc, get_put_and_enospc)
{
	struct bd_alloc a;
	cr_assert_eq(bd_alloc_init(&a, 100), 0);
	struct bd_prun runs[100];
	int n = bd_alloc_get(&a, 60, runs, 100);
	cr_assert_eq(n, 1);
	cr_assert_eq(runs[0].len, 60);
	cr_assert_eq(a.nfree, 40);
	cr_assert_eq(bd_alloc_get(&a, 41, runs, 100), -ENOSPC);
	cr_assert_eq(a.nfree, 40, "a failed get reserves nothing");
	n = bd_alloc_get(&a, 40, runs, 100);
	cr_assert_eq(n, 1);
	cr_assert_eq(runs[0].pblk, 60);
	cr_assert_eq(a.nfree, 0);
	cr_assert_eq(bd_alloc_get(&a, 1, runs, 100), -ENOSPC);
	bd_alloc_put(&a, 10, 5);
	cr_assert_eq(a.nfree, 5);
	n = bd_alloc_get(&a, 5, runs, 100);
	cr_assert_eq(n, 1);
	cr_assert_eq(runs[0].pblk, 10);
	bd_alloc_fini(&a);
}

/* An allocator of n blocks, all taken, then every other block of [0, lim) given back. */
static void full_but_every_other(struct bd_alloc *a, uint64_t n, uint64_t lim)
{
	cr_assert_eq(bd_alloc_init(a, n), 0);
	struct bd_prun all;
	cr_assert_eq(bd_alloc_get(a, (uint32_t)n, &all, 1), 1);
	cr_assert_eq(all.len, n);
	for (uint64_t b = 0; b < lim; b += 2) {
		bd_alloc_put(a, b, 1);
	}
}

Test(alloc, fragmented_runs)
{
	struct bd_alloc a;
	struct bd_prun runs[200];
	/* Every other block free: a 10-block request needs 10 runs. */
	full_but_every_other(&a, 200, 200);
	int n = bd_alloc_get(&a, 10, runs, 200);
	cr_assert_eq(n, 10);
	for (int i = 0; i < n; i++) {
		cr_assert_eq(runs[i].len, 1);
		cr_assert_eq(runs[i].pblk % 2, 0);
	}
	/* Too few runs allowed: nothing is taken. */
	uint64_t before = a.nfree;
	cr_assert_eq(bd_alloc_get(&a, 10, runs, 3), -ENOSPC);
	cr_assert_eq(a.nfree, before);
	bd_alloc_fini(&a);
}

/* Single-block reservations pass over lone free blocks for a wholly free word, and then stay
 * adjacent (what lets a turn's 4 KiB writes leave as one writev, coalesce.c); with no free word
 * they take the lone blocks (fragmented_runs). */
Test(alloc, single_blocks_go_to_a_free_run)
{
	struct bd_alloc a;
	cr_assert_eq(bd_alloc_init(&a, 1000), 0);
	struct bd_prun all, r;
	cr_assert_eq(bd_alloc_get(&a, 1000, &all, 1), 1);
	for (uint64_t b = 1; b < 200; b += 2) {
		bd_alloc_put(&a, b, 1); /* lone free blocks, as overwrites leave them */
	}
	bd_alloc_put(&a, 640, 360);
	for (uint64_t i = 0; i < 8; i++) {
		cr_assert_eq(bd_alloc_get(&a, 1, &r, 1), 1);
		cr_assert_eq(r.pblk, 640 + i, "block %lu went to %lu", (unsigned long)i,
			     (unsigned long)r.pblk);
	}
	/* The run used up, the map has no free word left: lone blocks are taken. */
	bd_alloc_take(&a, 648, 352);
	cr_assert_eq(bd_alloc_get(&a, 1, &r, 1), 1);
	cr_assert_eq(r.pblk % 2, 1);
	cr_assert_lt(r.pblk, 200);
	bd_alloc_fini(&a);
}

Test(alloc, wraps_around_cursor)
{
	struct bd_alloc a;
	cr_assert_eq(bd_alloc_init(&a, 130), 0);
	struct bd_prun runs[130];
	cr_assert_eq(bd_alloc_get(&a, 120, runs, 130), 1);
	bd_alloc_put(&a, 0, 64);
	/* 10 free at the end, 64 at the start: 20 blocks come as two runs. */
	int n = bd_alloc_get(&a, 20, runs, 130);
	cr_assert_eq(n, 2);
	cr_assert_eq(runs[0].pblk, 120);
	cr_assert_eq(runs[0].len, 10);
	cr_assert_eq(runs[1].pblk, 0);
	cr_assert_eq(runs[1].len, 10);
	bd_alloc_fini(&a);
}

Test(alloc, refcounts_and_deferred_free)
{
	struct bd_alloc a;
	cr_assert_eq(bd_alloc_init(&a, 64), 0);
	struct bd_prun r;
	cr_assert_eq(bd_alloc_get(&a, 1, &r, 1), 1);
	uint64_t p = r.pblk;
	bd_alloc_ref(&a, p);
	bd_alloc_ref(&a, p); /* shared by a copy-up */
	cr_assert_eq(a.ref[p], 2);
	cr_assert_eq(a.nreferenced, 1);
	cr_assert_not(bd_alloc_unref(&a, p));
	cr_assert(bd_alloc_unref(&a, p), "the last reference reports it");
	cr_assert_eq(a.nreferenced, 0);
	/* In limbo: still not free until reads older than seq 5 are gone. */
	cr_assert_eq(bd_alloc_defer_free(&a, p, 5), 0);
	cr_assert_eq(a.nfree, 63);
	cr_assert_eq(bd_alloc_reap(&a, 5), 0);
	cr_assert_eq(a.nfree, 63);
	cr_assert_eq(bd_alloc_reap(&a, 6), 1);
	cr_assert_eq(a.nfree, 64);
	bd_alloc_fini(&a);
}

Test(alloc, persisted_chunks_track_references)
{
	struct bd_alloc a;
	cr_assert_eq(bd_alloc_init(&a, BD_CHUNK_BLOCKS * 2 + 10), 0);
	cr_assert_eq(bd_alloc_nchunks(&a), 3);
	bd_alloc_ref(&a, 3);
	bd_alloc_ref(&a, BD_CHUNK_BLOCKS * 2 + 9);
	cr_assert_eq(a.ndirty, 2);
	uint8_t bits[BD_CHUNK_BYTES];
	bd_alloc_chunk_encode(&a, 0, bits);
	cr_assert_eq(bits[0], 1u << 3);
	bd_alloc_chunk_encode(&a, 2, bits);
	cr_assert_eq(bits[1], 1u << 1);
	bd_alloc_clear_dirty(&a);
	cr_assert_eq(a.ndirty, 0);
	/* A rebuild makes inuse exactly the referenced set. */
	bd_alloc_sync_inuse(&a);
	cr_assert_eq(a.nfree, BD_CHUNK_BLOCKS * 2 + 10 - 2);
	cr_assert_eq(a.nreferenced, 2);
	bd_alloc_fini(&a);
}

/* Allocation stays in the written region [0, ready) while it has room (prewrite.c), and its
 * free count follows every get, put, reference, reap and growth. */
Test(alloc, written_region_first)
{
	struct bd_alloc a;
	cr_assert_eq(bd_alloc_init(&a, 1000), 0);
	struct bd_prun runs[1000];
	bd_alloc_set_ready(&a, 100);
	cr_assert_eq(a.ready_free, 100);
	cr_assert_eq(bd_alloc_get(&a, 60, runs, 1000), 1);
	cr_assert_lt(runs[0].pblk + runs[0].len, 101, "taken from the written region");
	cr_assert_eq(a.ready_free, 40);
	cr_assert_eq(a.unready, 0);
	/* 50 do not fit in the 40 left: the whole file is searched (next-fit, so the region's
	 * last 40 first), and the allocation is counted. */
	cr_assert_eq(bd_alloc_get(&a, 50, runs, 1000), 1);
	cr_assert_eq(runs[0].pblk, 60);
	cr_assert_eq(runs[0].len, 50);
	cr_assert_eq(a.unready, 50);
	cr_assert_eq(a.ready_free, 0);
	/* Growing the region over in-use blocks counts only the free ones. */
	bd_alloc_set_ready(&a, 120);
	cr_assert_eq(a.ready_free, 10);
	bd_alloc_set_ready(&a, 5); /* never shrinks */
	cr_assert_eq(a.ready, 120);
	/* Put, reference, last unreference and reap of blocks inside it. */
	bd_alloc_put(&a, 100, 5);
	cr_assert_eq(a.ready_free, 15);
	bd_alloc_ref(&a, 105);
	cr_assert(bd_alloc_unref(&a, 105));
	cr_assert_eq(bd_alloc_defer_free(&a, 105, 1), 0);
	cr_assert_eq(bd_alloc_reap(&a, 2), 1);
	cr_assert_eq(a.ready_free, 16);
	/* The free run the prewriter takes next: skips used blocks, stops at the limit. */
	uint64_t s;
	cr_assert_eq(bd_alloc_free_run(&a, 0, 7, &s), 6);
	cr_assert_eq(s, 100, "blocks 0-99 are in use, 106-109 too");
	bd_alloc_take(&a, s, 6);
	cr_assert_eq(a.ready_free, 10);
	cr_assert_eq(bd_alloc_free_run(&a, 106, 1000, &s), 890);
	cr_assert_eq(s, 110);
	/* Reservations below the region's end stay in it. */
	cr_assert_eq(bd_alloc_get(&a, 10, runs, 1000), 1);
	cr_assert_eq(runs[0].pblk, 110);
	cr_assert_eq(a.ready_free, 0);
	cr_assert_eq(a.unready, 50);
	/* After a rebuild the count is recomputed from scratch. */
	bd_alloc_sync_inuse(&a);
	cr_assert_eq(a.ready_free, a.ready, "nothing referenced: the whole region is free");
	bd_alloc_fini(&a);
}

/* One run of n blocks or nothing (the defragmenter's allocation): short free runs at the
 * cursor are passed over, the written region comes first, and a failure reserves nothing. */
Test(alloc, one_run_or_nothing)
{
	struct bd_alloc a;
	struct bd_prun runs[1000];
	/* Free: every other block of [0, 200), then [300, 340) and [600, 700). */
	full_but_every_other(&a, 1000, 200);
	bd_alloc_put(&a, 300, 40);
	bd_alloc_put(&a, 600, 100);
	uint64_t free0 = a.nfree;
	uint64_t p;
	cr_assert_eq(bd_alloc_get_run(&a, 64, &p), 0);
	cr_assert_eq(p, 600, "the first free run long enough");
	cr_assert_eq(a.nfree, free0 - 64);
	cr_assert_eq(bd_alloc_get_run(&a, 64, &p), -ENOSPC, "36 + 40 free, not in one run");
	cr_assert_eq(a.nfree, free0 - 64, "a failed get reserves nothing");
	cr_assert_eq(bd_alloc_get_run(&a, 40, &p), 0);
	cr_assert_eq(p, 300);
	bd_alloc_put(&a, 600, 64);

	/* With a written region [0, 500) holding a long enough run, that run is taken first. */
	struct bd_alloc w;
	cr_assert_eq(bd_alloc_init(&w, 1000), 0);
	cr_assert_eq(bd_alloc_get(&w, 1000, runs, 1000), 1);
	bd_alloc_put(&w, 100, 64);
	bd_alloc_put(&w, 800, 64);
	bd_alloc_set_ready(&w, 500);
	w.cursor = 700;
	cr_assert_eq(bd_alloc_get_run(&w, 64, &p), 0);
	cr_assert_eq(p, 100);
	cr_assert_eq(w.ready_free, 0);
	cr_assert_eq(bd_alloc_get_run(&w, 64, &p), 0);
	cr_assert_eq(p, 800);
	bd_alloc_fini(&w);
	bd_alloc_fini(&a);
}
