/* Read-triggered defragmentation (blockd/defrag.c): a segment read whole that lies scattered
 * over the disk is rewritten into one run, without changing a byte of what it reads, without
 * unsharing more of a snapshot's blocks than defrag_shared allows, and never over a write that
 * landed meanwhile. */
#include "engine_int.h"
#include "helpers.h"

#define MiB          (1024u * 1024u)
#define SEG          (BD_SEG_BLOCKS * BD_BLOCK)
#define FILL(obj, i) (0x10 + (int)(obj)*0x40 + (int)(i))

/* Run the reactor until no rewrite is in flight and every group is committed. */
static void settle(struct tctx *t)
{
	while (t_space(t).defrag_running > 0 || bd_engine_groups_pending(t->e)) {
		cr_assert_geq(st_reactor_run_once(t->r, -1), 0);
	}
}

/* Segment 0 of objects 1 and 2 in layer 1, block by block in a scrambled order and
 * alternating between the two objects, so that each segment lies in 64 physical runs. */
static void scatter(struct tctx *t)
{
	for (uint32_t n = 0; n < BD_SEG_BLOCKS; n++) {
		uint32_t i = (n * 37u) % BD_SEG_BLOCKS;
		for (uint64_t obj = 1; obj <= 2; obj++) {
			cr_assert_eq(t_write(t, 1, NULL, 0, obj, (uint64_t)i * BD_BLOCK, BD_BLOCK,
					     FILL(obj, i)),
				     0);
		}
	}
}

/* Read the whole segment of obj in layer (ancestry anc) and check every block. */
static void read_segment(struct tctx *t, uint64_t layer, const uint64_t *anc, uint32_t nanc,
			 uint64_t obj, int changed_block, int changed_fill)
{
	uint8_t *b = t_buf(SEG, 0xEE);
	struct bd_req q = t_req(layer, anc, nanc, obj, 0, SEG);
	cr_assert_eq(t_read_q(t, &q, b), 0);
	for (uint32_t i = 0; i < BD_SEG_BLOCKS; i++) {
		int want = (int)i == changed_block ? changed_fill : FILL(obj, i);
		for (uint32_t j = 0; j < BD_BLOCK; j++) {
			cr_assert_eq(b[i * BD_BLOCK + j], (uint8_t)want, "object %lu block %u",
				     (unsigned long)obj, i);
		}
	}
	free(b);
}

static void open_defrag(struct tctx *t)
{
	t_setup(t, 64 * MiB);
	t->defrag_runs = BD_DEFRAG_RUNS;
	t_engine_open(t);
}

Test(defrag, a_scattered_segment_read_whole_is_rewritten_once)
{
	struct tctx t;
	open_defrag(&t);
	scatter(&t);
	uint64_t used = t_used(&t);
	/* A read of part of the segment is no reason to rewrite it. */
	cr_assert_eq(t_check(&t, 1, NULL, 0, 1, 0, SEG / 2, FILL(1, 0)), -EBADE);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 0);

	read_segment(&t, 1, NULL, 0, 1, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 1, "rewritten");
	cr_assert_eq(t_used(&t), used, "the old blocks were freed: no space gained or lost");
	/* Its data is the same, and it is one run now: a second read rewrites nothing. */
	read_segment(&t, 1, NULL, 0, 1, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 1, "contiguous now");
	/* The other object was not read whole: untouched, and still right. */
	cr_assert_eq(t_check(&t, 1, NULL, 0, 2, 5 * BD_BLOCK, BD_BLOCK, FILL(2, 5)), 0);

	/* After a restart (the rewrite went through the journal and the index). */
	t_reopen(&t);
	const struct bd_fsck_report *rep = bd_engine_fsck_report(t.e);
	cr_assert_eq(rep->leaked + rep->missing + rep->double_refs, 0);
	read_segment(&t, 1, NULL, 0, 1, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 0, "still one run after the reopen");
	t_close(&t);
}

Test(defrag, blocks_shared_with_a_snapshot_stay_shared)
{
	struct tctx t;
	open_defrag(&t);
	scatter(&t);
	/* Layer 2 is a child of layer 1 (layer 1 frozen: a snapshot). Its first write copies
	 * the list up: every other block of the segment is then referenced twice. */
	uint64_t anc[] = {1};
	cr_assert_eq(t_write(&t, 2, anc, 1, 1, 3 * BD_BLOCK, BD_BLOCK, 0x7a), 0);
	uint64_t used = t_used(&t);
	read_segment(&t, 2, anc, 1, 1, 3, 0x7a);
	read_segment(&t, 1, NULL, 0, 1, -1, 0);
	/* Object 2 has no list in layer 2: a read through it is served by layer 1's list,
	 * which is not the read layer's own. */
	read_segment(&t, 2, anc, 1, 2, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 0, "shared, or not the layer's own list");
	cr_assert_eq(t_used(&t), used);
	/* Read in layer 1 itself, object 2's list is its own and nothing else refers to its
	 * blocks: rewritten (same content, so layer 2's view does not change either). */
	read_segment(&t, 1, NULL, 0, 2, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 1);
	cr_assert_eq(t_used(&t), used);
	read_segment(&t, 2, anc, 1, 2, -1, 0);
	read_segment(&t, 2, anc, 1, 1, 3, 0x7a);
	t_close(&t);
}

/* A clone that random writes have mostly rewritten: its segment lies scattered, and a few of
 * its blocks are still the template's. With defrag_shared those few are copied along, so the
 * clone reads in one run; the template keeps its own blocks. A segment that is still mostly
 * the template's is left alone. */
Test(defrag, a_mostly_rewritten_clone_copies_its_few_shared_blocks)
{
	struct tctx t;
	t_setup(&t, 64 * MiB);
	t.defrag_runs = BD_DEFRAG_RUNS;
	t.defrag_shared = 16;
	t_engine_open(&t);
	scatter(&t);
	/* Layer 2, a clone of layer 1, rewrites (with the same bytes) 56 blocks of object 1's
	 * segment and 40 of object 2's, scrambled and interleaved: 8 and 24 blocks stay
	 * shared. */
	uint64_t anc[] = {1};
	for (uint32_t n = 0; n < BD_SEG_BLOCKS; n++) {
		uint32_t i = (n * 37u) % BD_SEG_BLOCKS;
		if (i < 56) {
			cr_assert_eq(t_write(&t, 2, anc, 1, 1, (uint64_t)i * BD_BLOCK, BD_BLOCK,
					     FILL(1, i)),
				     0);
		}
		if (i < 40) {
			cr_assert_eq(t_write(&t, 2, anc, 1, 2, (uint64_t)i * BD_BLOCK, BD_BLOCK,
					     FILL(2, i)),
				     0);
		}
	}
	settle(&t);
	uint64_t used = t_used(&t);
	read_segment(&t, 2, anc, 1, 2, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 0, "24 shared blocks: more than 16");
	read_segment(&t, 2, anc, 1, 1, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 1, "8 shared blocks: rewritten");
	cr_assert_eq(t_used(&t), used + 8, "the 8 shared blocks now exist twice");
	read_segment(&t, 2, anc, 1, 1, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 1, "one run now: not rewritten again");
	/* The template reads what it read, from its own blocks (no longer shared, and
	 * scattered: that read rewrites them too). */
	read_segment(&t, 1, NULL, 0, 1, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 2);
	t_reopen(&t);
	const struct bd_fsck_report *rep = bd_engine_fsck_report(t.e);
	cr_assert_eq(rep->leaked + rep->missing + rep->double_refs, 0);
	read_segment(&t, 2, anc, 1, 1, -1, 0);
	read_segment(&t, 2, anc, 1, 2, -1, 0);
	read_segment(&t, 1, NULL, 0, 1, -1, 0);
	t_close(&t);
}

/* A write into the segment while its rewrite is in flight: whichever commits first, the
 * write's data is what reads back, and nothing leaks. */
Test(defrag, a_write_that_lands_meanwhile_wins)
{
	struct tctx t;
	open_defrag(&t);
	uint64_t segments = 0, skipped = 0;
	for (int round = 0; round < 8; round++) {
		scatter(&t);
		uint8_t *b = t_buf(SEG, 0xEE);
		struct bd_req rq = t_req(1, NULL, 0, 1, 0, SEG);
		struct twait rw = {.r = t.r};
		bd_read(t.e, &rq, b, t_cb, &rw);
		/* The write goes in while the read is in flight (mapped before the write). */
		void *nb = t_buf(BD_BLOCK, 0x99);
		struct bd_req wq = t_req(1, NULL, 0, 1, (uint64_t)(round + 1) * BD_BLOCK, BD_BLOCK);
		struct twait ww = {.r = t.r};
		if (round % 2 == 0) {
			bd_write(t.e, &wq, nb, t_cb, &ww);
			cr_assert_eq(t_wait(&t, &rw), 0);
		} else {
			/* ...or right after the read, while the rewrite it started is in flight. */
			cr_assert_eq(t_wait(&t, &rw), 0);
			bd_write(t.e, &wq, nb, t_cb, &ww);
		}
		cr_assert_eq(t_wait(&t, &ww), 0);
		settle(&t);
		free(b);
		free(nb);
		read_segment(&t, 1, NULL, 0, 1, round + 1, 0x99);
		settle(&t);
		struct bd_space s = t_space(&t);
		segments = s.defrag_segments;
		skipped = s.defrag_skipped;
	}
	cr_log_info("rewrites committed %lu, dropped %lu", (unsigned long)segments,
		    (unsigned long)skipped);
	cr_assert_gt(segments + skipped, 0);
	t_reopen(&t);
	const struct bd_fsck_report *rep = bd_engine_fsck_report(t.e);
	cr_assert_eq(rep->leaked + rep->missing + rep->double_refs, 0);
	read_segment(&t, 1, NULL, 0, 1, 8, 0x99);
	t_close(&t);
}

Test(defrag, off_rewrites_nothing)
{
	struct tctx t;
	t_setup(&t, 64 * MiB);
	t_engine_open(&t); /* defrag_runs 0 */
	scatter(&t);
	read_segment(&t, 1, NULL, 0, 1, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments + t_space(&t).defrag_skipped, 0);
	t_close(&t);
}

/* The background scan: after a tick with no client op, it finds the scattered segments in
 * the index and rewrites them without anyone reading them; a client op stops it. */
Test(defrag, idle_ticks_rewrite_what_no_one_read)
{
	struct tctx t;
	open_defrag(&t);
	scatter(&t);
	settle(&t);
	bd_defrag_tick(t.e); /* marks the client ops so far */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 3, 0, BD_BLOCK, 0x33), 0);
	bd_defrag_tick(t.e); /* a client op in this tick: not idle */
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_scanned, 0, "a busy tick starts nothing");
	bd_defrag_tick(t.e); /* idle since the last tick */
	settle(&t);
	struct bd_space s = t_space(&t);
	cr_assert_eq(s.defrag_scanned, 2, "objects 1 and 2, found in the index");
	cr_assert_eq(s.defrag_segments, 2);
	read_segment(&t, 1, NULL, 0, 1, -1, 0);
	read_segment(&t, 1, NULL, 0, 2, -1, 0);
	settle(&t);
	cr_assert_eq(t_space(&t).defrag_segments, 2, "both are one run now");
	t_reopen(&t);
	const struct bd_fsck_report *rep = bd_engine_fsck_report(t.e);
	cr_assert_eq(rep->leaked + rep->missing + rep->double_refs, 0);
	read_segment(&t, 1, NULL, 0, 2, -1, 0);
	t_close(&t);
}
