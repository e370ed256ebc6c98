/* Engine semantics through the real io_uring path on a temporary data file. */
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "helpers.h"
#include "iobuf.h"

#define MiB (1024u * 1024u)
#define OBJ (4 * MiB)

Test(engine, unwritten_reads_zero_and_roundtrip)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, OBJ, 0), 0, "unwritten reads as zeros");
	cr_assert_eq(t_used(&t), 0);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 8192, 3 * 4096, 0xAB), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 8192, 3 * 4096, 0xAB), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 8192, 0), 0);
	cr_assert_eq(t_used(&t), 3);
	/* Overwrite redirects: the old blocks are released. */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 8192, 3 * 4096, 0xCD), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 8192, 3 * 4096, 0xCD), 0);
	cr_assert_eq(t_used(&t), 3);
	/* A write spanning segments and a whole object. */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 7, 0, OBJ, 0x11), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 7, 0, OBJ, 0x11), 0);
	cr_assert_eq(t_used(&t), 3 + OBJ / 4096);
	/* Misaligned requests are refused. */
	struct bd_req q = t_req(1, NULL, 0, 0, 512, 4096);
	void *b = t_buf(4096, 0);
	cr_assert_eq(t_write_q(&t, &q, b), -EINVAL);
	free(b);
	t_close(&t);
}

Test(engine, survives_reopen)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 3, 0, 64 * 4096, 0x42), 0);
	cr_assert_eq(t_flush(&t), 0);
	t_reopen(&t);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 3, 0, 64 * 4096, 0x42), 0);
	cr_assert_eq(t_used(&t), 64);
	const struct bd_fsck_report *r = bd_engine_fsck_report(t.e);
	cr_assert_eq(r->leaked + r->missing + r->double_refs + r->bad_lists, 0);
	cr_assert_eq(r->referenced, 64);
	t_close(&t);
}

Test(engine, child_write_leaves_parent_unchanged)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	const uint64_t anc2[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 16 * 4096, 0xAA), 0);
	/* Layer 1 is frozen (a snapshot); layer 2 is the head. */
	cr_assert_eq(t_check(&t, 2, anc2, 1, 0, 0, 16 * 4096, 0xAA), 0, "child sees parent");
	uint64_t used = t_used(&t);
	cr_assert_eq(t_write(&t, 2, anc2, 1, 0, 4096, 4096, 0xBB), 0);
	cr_assert_eq(t_used(&t), used + 1, "copy-up is metadata only");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 16 * 4096, 0xAA), 0, "parent unchanged");
	cr_assert_eq(t_check(&t, 2, NULL, 0, 0, 0, 4096, 0xAA), 0);
	cr_assert_eq(t_check(&t, 2, NULL, 0, 0, 4096, 4096, 0xBB), 0);
	cr_assert_eq(t_check(&t, 2, NULL, 0, 0, 8192, 14 * 4096, 0xAA), 0);
	t_close(&t);
}

Test(engine, snapshot_reads_stable_while_head_written)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	const uint64_t anc[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 64 * 4096, 0x01), 0);
	for (int round = 0; round < 20; round++) {
		cr_assert_eq(t_write(&t, 2, anc, 1, 0, (uint64_t)(round % 64) * 4096, 4096,
				     0x80 + round),
			     0);
		/* Interleave a read of the snapshot with an in-flight head write. */
		uint8_t *wb = t_buf(4096, 0x55), *rb = t_buf(64 * 4096, 0);
		struct bd_req wq = t_req(2, anc, 1, 0, 4096 * 10, 4096);
		struct bd_req rq = t_req(1, NULL, 0, 0, 0, 64 * 4096);
		struct twait w1 = {.r = t.r}, w2 = {.r = t.r};
		bd_write(t.e, &wq, wb, t_cb, &w1);
		bd_read(t.e, &rq, rb, t_cb, &w2);
		cr_assert_eq(t_wait(&t, &w1), 0);
		cr_assert_eq(t_wait(&t, &w2), 0);
		for (size_t i = 0; i < 64 * 4096; i++) {
			cr_assert_eq(rb[i], 0x01, "snapshot changed at %zu", i);
		}
		free(wb);
		free(rb);
	}
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 64 * 4096, 0x01), 0);
	t_close(&t);
}

Test(engine, rollback_and_layer_delete_return_space)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	const uint64_t anc2[] = {1}, anc3[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 32 * 4096, 0x10), 0);
	cr_assert_eq(t_write(&t, 2, anc2, 1, 0, 0, 32 * 4096, 0x20), 0);
	cr_assert_eq(t_used(&t), 64);
	/* Roll back to snapshot 1: drop head 2, start head 3 from 1. */
	uint64_t dropped, moved, freed;
	cr_assert_eq(bd_layer_delete(t.e, 1, 2, NULL, 0, &dropped, &moved, &freed), 0);
	cr_assert_eq(dropped, 1);
	cr_assert_eq(freed, 32, "the head's unshared blocks are freed");
	bd_engine_reap(t.e);
	cr_assert_eq(t_used(&t), 32);
	cr_assert_eq(t_check(&t, 3, anc3, 1, 0, 0, 32 * 4096, 0x10), 0, "rolled back");
	cr_assert_eq(t_check(&t, 2, NULL, 0, 0, 0, 32 * 4096, 0), 0, "deleted layer is empty");
	/* Deleting the snapshot while head 3 still needs it hands its list to 3. */
	const uint64_t kids[] = {3};
	cr_assert_eq(bd_layer_delete(t.e, 1, 1, kids, 1, &dropped, &moved, &freed), 0);
	cr_assert_eq(moved, 1);
	cr_assert_eq(freed, 0, "blocks the child still reads stay");
	cr_assert_eq(t_check(&t, 3, NULL, 0, 0, 0, 32 * 4096, 0x10), 0);
	cr_assert_eq(t_used(&t), 32);
	/* Overwriting in 3 now frees the old blocks: nothing shares them. */
	cr_assert_eq(t_write(&t, 3, NULL, 0, 0, 0, 32 * 4096, 0x30), 0);
	bd_engine_reap(t.e);
	cr_assert_eq(t_used(&t), 32);
	t_reopen_clean(&t);
	cr_assert_eq(t_used(&t), 32);
	t_close(&t);
}

Test(engine, reference_counts_shared_by_clones)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	const uint64_t anc[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 8 * 4096, 0x77), 0);
	/* Ten clones each copy the list up with one small write: 8 shared + 1 own each. */
	for (uint64_t c = 10; c < 20; c++) {
		cr_assert_eq(t_write(&t, c, anc, 1, 0, 0, 4096, (int)c), 0);
	}
	cr_assert_eq(t_used(&t), 8 + 10);
	t_reopen(&t);
	const struct bd_fsck_report *r = bd_engine_fsck_report(t.e);
	cr_assert_eq(r->referenced, 18);
	cr_assert_eq(r->references, 8 + 10 * 8, "each clone references 7 shared + 1 own");
	cr_assert_eq(r->double_refs, 0);
	/* Deleting the template keeps blocks the clones use; deleting clones frees them. */
	uint64_t freed;
	cr_assert_eq(bd_layer_delete(t.e, 1, 1, NULL, 0, NULL, NULL, &freed), 0);
	cr_assert_eq(freed, 1, "only block 0 of the template was unshared");
	for (uint64_t c = 10; c < 20; c++) {
		cr_assert_eq(t_check(&t, c, anc, 1, 0, 4096, 7 * 4096, 0x77), 0);
		cr_assert_eq(bd_layer_delete(t.e, 1, c, NULL, 0, NULL, NULL, NULL), 0);
	}
	bd_engine_reap(t.e);
	cr_assert_eq(t_used(&t), 0);
	t_close(&t);
}

Test(engine, depth_64_chain)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	uint64_t anc[64];
	cr_assert_eq(t_write(&t, 100, NULL, 0, 5, 0, 64 * 4096, 0x64), 0);
	/* Layer 100+d has the ancestry 100+d-1, ..., 100. Layer 110 overrides block 3. */
	for (int i = 0; i < 10; i++) {
		anc[i] = (uint64_t)(110 - 1 - i);
	}
	cr_assert_eq(t_write(&t, 110, anc, 10, 5, 3 * 4096, 4096, 0x10), 0);
	for (int i = 0; i < 64; i++) {
		anc[i] = (uint64_t)(164 - 1 - i);
	}
	for (int pass = 0; pass < 2; pass++) {
		cr_assert_eq(t_check(&t, 164, anc, 64, 5, 0, 3 * 4096, 0x64), 0);
		cr_assert_eq(t_check(&t, 164, NULL, 0, 5, 3 * 4096, 4096, 0x10), 0);
		cr_assert_eq(t_check(&t, 164, NULL, 0, 5, 4 * 4096, 60 * 4096, 0x64), 0);
		cr_assert_eq(t_check(&t, 164, NULL, 0, 5, 64 * 4096, 4096, 0), 0);
	}
	/* Flatten 164: it gets its own copy and no longer needs any ancestor. */
	uint64_t copied;
	cr_assert_eq(bd_flatten(t.e, 1, 164, anc, 64, &copied), 0);
	cr_assert_eq(copied, 1);
	for (int l = 100; l < 164; l++) {
		cr_assert_eq(bd_layer_delete(t.e, 1, (uint64_t)l, NULL, 0, NULL, NULL, NULL), 0);
	}
	cr_assert_eq(t_check(&t, 164, NULL, 0, 5, 0, 3 * 4096, 0x64), 0);
	cr_assert_eq(t_check(&t, 164, NULL, 0, 5, 3 * 4096, 4096, 0x10), 0);
	bd_engine_reap(t.e);
	cr_assert_eq(t_used(&t), 64, "block 3 of layer 100 was freed");
	t_close(&t);
}

/* Resolutions hold the ancestor's list itself (shared, reference counted): with a cache far
 * smaller than the lists read, the ancestor's entries are evicted while clone entries still
 * hold their lists; reads stay right, a copy-up from a shared list leaves the parent alone,
 * and a layer delete (new cache generation) makes the clone resolve again. */
Test(engine, clone_resolutions_share_the_ancestor_list)
{
	struct tctx t;
	t_open_cache(&t, 64 * MiB, 64);

	const uint64_t anc[] = {1};
	/* 8 objects x 16 segments of 256 KiB = 128 lists in layer 1, twice the cache. */
	for (uint64_t obj = 0; obj < 8; obj++) {
		cr_assert_eq(t_write(&t, 1, NULL, 0, obj, 0, OBJ, (int)(0x20 + obj)), 0);
	}
	for (int pass = 0; pass < 2; pass++) {
		for (uint64_t obj = 0; obj < 8; obj++) {
			cr_assert_eq(t_check(&t, 2, anc, 1, obj, 0, OBJ, (int)(0x20 + obj)), 0,
				     "clone read, pass %d object %lu", pass, (unsigned long)obj);
		}
	}
	/* Copy-up in the clone from a shared list: the parent is unchanged. */
	cr_assert_eq(t_write(&t, 2, anc, 1, 3, 4096, 4096, 0x77), 0);
	cr_assert_eq(t_check(&t, 2, anc, 1, 3, 4096, 4096, 0x77), 0);
	cr_assert_eq(t_check(&t, 2, anc, 1, 3, 0, 4096, 0x23), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 3, 0, OBJ, 0x23), 0);
	/* Deleting the parent hands its lists to the clone (a new generation): still right. */
	const uint64_t kids[] = {2};
	cr_assert_eq(bd_layer_delete(t.e, 1, 1, kids, 1, NULL, NULL, NULL), 0);
	for (uint64_t obj = 0; obj < 8; obj++) {
		cr_assert_eq(t_check(&t, 2, NULL, 0, obj, obj == 3 ? 8192 : 0,
				     obj == 3 ? OBJ - 8192 : OBJ, (int)(0x20 + obj)),
			     0);
	}
	t_close(&t);
}

/* worker: reads are checked on the verifier thread (blockd/verify.c), as strata-blockd does. */
static void checksum_mismatch_case(bool worker, bool arena)
{
	struct tctx t;
	t_open(&t, 16 * MiB);
	if (worker) {
		cr_assert_eq(bd_engine_start_verifier(t.e), 0);
	}
	uint8_t *b = t_buf(4096, 0);
	for (int i = 0; i < 4096; i++) {
		b[i] = (uint8_t)(i * 7 + 3);
	}
	memcpy(b, "STRATA-CANARY-BLOCK", 19);
	struct bd_req q = t_req(1, NULL, 0, 0, 4096, 4096);
	cr_assert_eq(t_write_q(&t, &q, b), 0);
	cr_assert_eq(t_flush(&t), 0);
	/* Find the block in the data file and flip one bit behind the engine's back. */
	t_clobber_block(&t, b, NULL, 16 * MiB);
	uint8_t *r = arena ? bd_iobuf_alloc(3 * 4096) : t_buf(3 * 4096, 0xEE);
	cr_assert_not_null(r);
	memset(r, 0xEE, 3 * 4096);
	cr_assert_eq(bd_iobuf_index(r, 3 * 4096) >= 0, arena);
	struct bd_req rq = t_req(1, NULL, 0, 0, 0, 3 * 4096);
	cr_assert_eq(t_read_q(&t, &rq, r), -EILSEQ);
	for (int i = 4096; i < 8192; i++) {
		cr_assert_eq(r[i], 0, "bad data is never returned");
	}
	cr_assert_eq(t_space(&t).checksum_errors, 1);
	/* Blocks around it still read; a rewrite heals it. */
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0), 0);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 4096, 4096, 0x99), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 4096, 4096, 0x99), 0);
	free(b);
	bd_iobuf_free(r);
	t_close(&t);
}

Test(engine, checksum_mismatch_is_an_error)
{
	checksum_mismatch_case(false, false);
}

Test(engine, checksum_mismatch_is_an_error_on_the_verifier_thread)
{
	checksum_mismatch_case(true, false);
}

Test(engine, checksum_mismatch_is_an_error_through_a_registered_buffer)
{
	checksum_mismatch_case(true, true);
}

static uint64_t fixed_reads(struct tctx *t)
{
	return t_space(t).fixed_reads;
}

/* Reads into the registered arena go out as READ_FIXED and return the same data as reads into
 * heap buffers; a request larger than a slot, or one made while the arena is empty, gets a
 * heap buffer and a plain readv; freed slots come back. */
Test(engine, registered_buffer_reads)
{
	struct tctx t;
	t_open(&t, 16 * MiB);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 256 * 1024, 0x5C), 0);
	size_t small0 = bd_iobuf_free_slots(0), large0 = bd_iobuf_free_slots(1);

	uint8_t *s = bd_iobuf_alloc(4096);
	cr_assert_eq(bd_iobuf_index(s, 4096), 0);
	uint64_t f0 = fixed_reads(&t);
	struct bd_req q = t_req(1, NULL, 0, 0, 8192, 4096);
	cr_assert_eq(t_read_q(&t, &q, s), 0);
	cr_assert_eq(fixed_reads(&t), f0 + 1, "a 4 KiB read into a slot is a fixed read");
	for (int i = 0; i < 4096; i++) {
		cr_assert_eq(s[i], 0x5C);
	}

	uint8_t *l = bd_iobuf_alloc(128 * 1024);
	cr_assert_eq(bd_iobuf_index(l, 128 * 1024), 1);
	q = t_req(1, NULL, 0, 0, 64 * 1024, 128 * 1024);
	cr_assert_eq(t_read_q(&t, &q, l), 0);
	cr_assert_geq(fixed_reads(&t), f0 + 2);
	for (int i = 0; i < 128 * 1024; i++) {
		cr_assert_eq(l[i], 0x5C);
	}

	uint8_t *h = bd_iobuf_alloc(256 * 1024);
	cr_assert_eq(bd_iobuf_index(h, 256 * 1024), -1, "larger than a slot: the heap");
	uint64_t f1 = fixed_reads(&t);
	q = t_req(1, NULL, 0, 0, 0, 256 * 1024);
	cr_assert_eq(t_read_q(&t, &q, h), 0);
	cr_assert_eq(fixed_reads(&t), f1, "a heap buffer reads with readv");
	for (int i = 0; i < 256 * 1024; i++) {
		cr_assert_eq(h[i], 0x5C);
	}

	/* Drain the small class: the next allocation falls back to the heap and still reads. */
	size_t n = bd_iobuf_free_slots(0);
	void **all = calloc(n, sizeof(*all));
	for (size_t i = 0; i < n; i++) {
		all[i] = bd_iobuf_alloc(4096);
		cr_assert_geq(bd_iobuf_index(all[i], 4096), 0);
	}
	cr_assert_eq(bd_iobuf_free_slots(0), 0);
	uint8_t *x = bd_iobuf_alloc(4096);
	cr_assert_not_null(x);
	cr_assert_eq(bd_iobuf_index(x, 4096), -1);
	q = t_req(1, NULL, 0, 0, 0, 4096);
	cr_assert_eq(t_read_q(&t, &q, x), 0);
	cr_assert_eq(x[4095], 0x5C);
	for (size_t i = 0; i < n; i++) {
		bd_iobuf_free(all[i]);
	}
	free(all);
	bd_iobuf_free(x);
	bd_iobuf_free(h);
	bd_iobuf_free(l);
	bd_iobuf_free(s);
	cr_assert_eq(bd_iobuf_free_slots(0), small0, "every slot came back");
	cr_assert_eq(bd_iobuf_free_slots(1), large0);
	t_close(&t);
}

struct many_reads {
	struct st_reactor *r;
	int left, errors;
};

static void many_reads_cb(void *arg, int err)
{
	struct many_reads *m = arg;
	if (err) {
		m->errors++;
	}
	if (--m->left == 0) {
		st_reactor_stop(m->r);
	}
}

/* n reads of bs bytes in flight, each over a block-patterned region; returns how many the
 * verifier thread checked. Every one completes, on the reactor thread, with the right data. */
static uint64_t many_reads(struct tctx *t, int n, uint32_t bs)
{
	uint64_t before = t_space(t).verify_offloads;
	uint32_t nb = bs / 4096;
	uint8_t *bufs = t_buf((size_t)n * bs, 0);
	struct many_reads m = {.r = t->r, .left = n};
	for (int i = 0; i < n; i++) {
		struct bd_req q = t_req(1, NULL, 0, 0, (uint64_t)(i % (64 / nb)) * bs, bs);
		bd_read(t->e, &q, bufs + (size_t)i * bs, many_reads_cb, &m);
	}
	while (m.left > 0) {
		cr_assert_eq(st_reactor_run(t->r), 0);
	}
	cr_assert_eq(m.errors, 0);
	for (int i = 0; i < n; i++) {
		for (uint32_t j = 0; j < bs; j++) {
			uint32_t blk = (uint32_t)(i % (64 / nb)) * nb + j / 4096;
			cr_assert_eq(bufs[(size_t)i * bs + j], (uint8_t)(0x40 + blk),
				     "read %d byte %u", i, j);
		}
	}
	free(bufs);
	return t_space(t).verify_offloads - before;
}

/* Reads with more than 4 others in flight go through the verifier thread, large or small;
 * stopping the verifier with none queued is clean, and reads are checked inline again. */
Test(engine, verifier_thread_checks_many_reads_in_flight)
{
	struct tctx t;
	t_open(&t, 16 * MiB);
	for (int i = 0; i < 64; i++) {
		cr_assert_eq(t_write(&t, 1, NULL, 0, 0, (uint64_t)i * 4096, 4096, 0x40 + i), 0);
	}
	cr_assert_eq(bd_engine_start_verifier(t.e), 0);
	cr_assert_gt(many_reads(&t, 64, 64 * 1024), 0, "64 KiB reads were handed off");
	cr_assert_gt(many_reads(&t, 256, 4096), 0, "4 KiB reads were handed off");
	bd_engine_stop_verifier(t.e);
	cr_assert_eq(many_reads(&t, 64, 4096), 0, "no verifier: checked inline");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x40), 0, "inline again");
	t_close(&t);
}

Test(engine, enospc_corrupts_nothing)
{
	struct tctx t;
	t_open(&t, 1 * MiB); /* 256 blocks */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 200 * 4096, 0x01), 0);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 1, 0, 100 * 4096, 0x02), -ENOSPC);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 100 * 4096, 0x03), -ENOSPC,
		     "an overwrite needs new blocks too");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 200 * 4096, 0x01), 0, "reads continue");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 1, 0, 100 * 4096, 0), 0);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 1, 0, 56 * 4096, 0x04), 0, "what fits still fits");
	cr_assert_eq(t_write(&t, 1, NULL, 0, 1, 56 * 4096, 4096, 0x05), -ENOSPC);
	/* Trim gives space back. */
	struct twait w = {.r = t.r};
	struct bd_req q = t_req(1, NULL, 0, 0, 0, 100 * 4096);
	bd_trim(t.e, &q, t_cb, &w);
	cr_assert_eq(t_wait(&t, &w), 0);
	bd_engine_reap(t.e);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 1, 56 * 4096, 100 * 4096, 0x06), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 100 * 4096, 0), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 100 * 4096, 100 * 4096, 0x01), 0);
	t_reopen_clean(&t);
	t_close(&t);
}

/* A block an overwrite releases is reused only after the overwrite's index commit is durable:
 * otherwise a power cut could bring back the flushed list pointing at someone else's data. */
/* An index commit that syncs the WAL outside a FLUSH (layer delete, clean close) makes every
 * earlier group's lists durable: it must sync the data they point at first. */
Test(engine, a_synced_index_commit_syncs_the_data_first)
{
	struct tctx t;
	struct bd_space sp;
	t_open(&t, 64 * MiB);
	const uint64_t anc2[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 8 * 4096, 0x10), 0);
	cr_assert_eq(t_write(&t, 2, anc2, 1, 0, 0, 8 * 4096, 0x20), 0); /* not flushed */
	bd_engine_space(t.e, &sp);
	uint64_t before = sp.data_syncs;
	uint64_t dropped, moved, freed;
	cr_assert_eq(bd_layer_delete(t.e, 1, 1, (const uint64_t[]){2}, 1, &dropped, &moved, &freed),
		     0);
	bd_engine_space(t.e, &sp);
	cr_assert_gt(sp.data_syncs, before, "the layer delete's WAL sync went ahead of the data");
	cr_assert_eq(t_check(&t, 2, NULL, 0, 0, 0, 8 * 4096, 0x20), 0);
	t_close(&t);
}

Test(engine, freed_blocks_wait_for_a_durable_commit)
{
	struct tctx t;
	t_open(&t, 1 * MiB); /* 256 blocks */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 128 * 4096, 0x0A), 0);
	cr_assert_eq(t_flush(&t), 0);
	cr_assert_eq(t_used_now(&t), 128);
	/* The overwrite's new blocks are in use and the old ones wait in limbo, even after a
	 * reap: no read is in flight, but the releasing commit is not synced. */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 128 * 4096, 0x0B), 0);
	bd_engine_reap(t.e);
	cr_assert_eq(t_used_now(&t), 256, "freed blocks reused before their commit is durable");
	/* A flush makes the commit durable and hands them back. */
	cr_assert_eq(t_flush(&t), 0);
	cr_assert_eq(t_used_now(&t), 128);
	/* Out of space with blocks waiting: the engine syncs and retries instead of ENOSPC. */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 128 * 4096, 0x0C), 0);
	cr_assert_eq(t_used_now(&t), 256);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 1, 0, 64 * 4096, 0x0D), 0,
		     "limbo reclaimed on ENOSPC");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 128 * 4096, 0x0C), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 1, 0, 64 * 4096, 0x0D), 0);
	cr_assert_eq(t_used(&t), 192);
	t_close(&t);
}

Test(engine, zero_trim_and_block_status)
{
	struct tctx t;
	t_open(&t, 16 * MiB);
	const uint64_t anc[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 8 * 4096, 0x33), 0);
	struct twait w = {.r = t.r};
	struct bd_req zq = t_req(1, NULL, 0, 0, 2 * 4096, 2 * 4096);
	bd_write_zeroes(t.e, &zq, t_cb, &w);
	cr_assert_eq(t_wait(&t, &w), 0);
	cr_assert_eq(t_used(&t), 6);
	struct bd_status_ext ext[16];
	size_t n;
	struct bd_req sq = t_req(1, NULL, 0, 0, 0, 16 * 4096);
	cr_assert_eq(bd_block_status(t.e, &sq, ext, 16, &n), 0);
	cr_assert_eq(n, 4);
	cr_assert_eq(ext[0].state, 1);
	cr_assert_eq(ext[0].length, 2 * 4096);
	cr_assert_eq(ext[1].state, 2);
	cr_assert_eq(ext[1].offset, 2 * 4096);
	cr_assert_eq(ext[2].state, 1);
	cr_assert_eq(ext[2].length, 4 * 4096);
	cr_assert_eq(ext[3].state, 0);
	cr_assert_eq(ext[3].length, 8 * 4096);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 2 * 4096, 2 * 4096, 0), 0);
	/* Trim in a child hides the parent's data there; the parent keeps it. */
	w.done = false;
	struct bd_req tq = t_req(2, anc, 1, 0, 0, 4 * 4096);
	bd_trim(t.e, &tq, t_cb, &w);
	cr_assert_eq(t_wait(&t, &w), 0);
	cr_assert_eq(t_check(&t, 2, NULL, 0, 0, 0, 4 * 4096, 0), 0);
	cr_assert_eq(t_check(&t, 2, NULL, 0, 0, 4 * 4096, 4 * 4096, 0x33), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 2 * 4096, 0x33), 0);
	struct bd_req sq2 = t_req(2, NULL, 0, 0, 0, 8 * 4096);
	cr_assert_eq(bd_block_status(t.e, &sq2, ext, 16, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_eq(ext[0].state, 0);
	cr_assert_eq(ext[1].state, 1);
	t_close(&t);
}

Test(engine, compare_and_write_and_idempotent_retry)
{
	struct tctx t;
	t_open(&t, 16 * MiB);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 4096, 0x01), 0);
	uint8_t *cmp = t_buf(4096, 0x01), *data = t_buf(4096, 0x02);
	uint64_t mis = 0;
	struct bd_req q = t_req(1, NULL, 0, 0, 0, 4096);
	q.client_id = 77;
	q.seq = 1;
	struct twait w = {.r = t.r};
	bd_compare_and_write(t.e, &q, cmp, data, &mis, t_cb, &w);
	cr_assert_eq(t_wait(&t, &w), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x02), 0);
	/* A retry of the same request is not applied again (it would miscompare now). */
	w.done = false;
	bd_compare_and_write(t.e, &q, cmp, data, &mis, t_cb, &w);
	cr_assert_eq(t_wait(&t, &w), 0);
	/* A new request with stale compare data miscompares at byte 0 and writes nothing. */
	q.seq = 2;
	w.done = false;
	memset(data, 0x03, 4096);
	bd_compare_and_write(t.e, &q, cmp, data, &mis, t_cb, &w);
	cr_assert_eq(t_wait(&t, &w), BD_ERR_MISCOMPARE);
	cr_assert_eq(mis, 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x02), 0);
	/* Miscompare in the middle reports the offset. */
	memset(cmp, 0x02, 4096);
	cmp[1234] = 0;
	q.seq = 3;
	w.done = false;
	bd_compare_and_write(t.e, &q, cmp, data, &mis, t_cb, &w);
	cr_assert_eq(t_wait(&t, &w), BD_ERR_MISCOMPARE);
	cr_assert_eq(mis, 1234);
	/* Concurrent CAWs on one object serialise: exactly one of two identical ones wins. */
	memset(cmp, 0x02, 4096);
	struct bd_req q1 = q, q2 = q;
	q1.seq = 10;
	q2.seq = 11;
	uint64_t m1, m2;
	struct twait w1 = {.r = t.r}, w2 = {.r = t.r};
	bd_compare_and_write(t.e, &q1, cmp, data, &m1, t_cb, &w1);
	bd_compare_and_write(t.e, &q2, cmp, data, &m2, t_cb, &w2);
	int r1 = t_wait(&t, &w1), r2 = t_wait(&t, &w2);
	cr_assert((r1 == 0 && r2 == BD_ERR_MISCOMPARE) || (r2 == 0 && r1 == BD_ERR_MISCOMPARE),
		  "r1 %d r2 %d", r1, r2);
	/* An idempotent plain write: the retry does not allocate again. */
	struct bd_req wq = t_req(1, NULL, 0, 1, 0, 4096);
	wq.client_id = 5;
	wq.seq = 9;
	cr_assert_eq(t_write_q(&t, &wq, data), 0);
	uint64_t used = t_used(&t);
	memset(data, 0x44, 4096);
	cr_assert_eq(t_write_q(&t, &wq, data), 0);
	cr_assert_eq(t_used(&t), used);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 1, 0, 4096, 0x03), 0, "the retry was not applied");
	free(cmp);
	free(data);
	t_close(&t);
}

Test(engine, fua_and_many_in_flight)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	enum { N = 64 };
	uint8_t *bufs[N];
	struct twait w[N];
	struct bd_req q[N];
	for (int i = 0; i < N; i++) {
		bufs[i] = t_buf(8192, i + 1);
		q[i] = t_req(1, NULL, 0, (uint64_t)(i % 4), (uint64_t)(i / 4) * 8192, 8192);
		q[i].fua = (i % 8) == 0;
		w[i] = (struct twait){.r = t.r};
		bd_write(t.e, &q[i], bufs[i], t_cb, &w[i]);
	}
	for (int i = 0; i < N; i++) {
		cr_assert_eq(t_wait(&t, &w[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		cr_assert_eq(t_check(&t, 1, NULL, 0, (uint64_t)(i % 4), (uint64_t)(i / 4) * 8192,
				     8192, i + 1),
			     0);
		free(bufs[i]);
	}
	t_close(&t);
}

/* Write i of writes_started_together_leave_as_one_writev reads back as its own pattern. */
static void check_started_together(struct tctx *t, int n, const char *when)
{
	for (int i = 0; i < n; i++) {
		cr_assert_eq(t_check(t, 1, NULL, 0, (uint64_t)(i % 5),
				     (uint64_t)(i * 7 % 64) * 4096, 4096, 0x40 + i),
			     0, "write %d %s", i, when);
	}
}

/* 4 KiB writes started together reach the data file as a few writevs over adjacent blocks
 * (coalesce.c), and each reads back its own data. */
Test(engine, writes_started_together_leave_as_one_writev)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	enum { N = 32 };
	uint8_t *bufs[N];
	struct twait w[N];
	struct bd_req q[N];
	struct bd_space s0 = t_space(&t);
	for (int i = 0; i < N; i++) {
		bufs[i] = t_buf(4096, 0x40 + i);
		q[i] = t_req(1, NULL, 0, (uint64_t)(i % 5), (uint64_t)(i * 7 % 64) * 4096, 4096);
		w[i] = (struct twait){.r = t.r};
		bd_write(t.e, &q[i], bufs[i], t_cb, &w[i]);
	}
	for (int i = 0; i < N; i++) {
		cr_assert_eq(t_wait(&t, &w[i]), 0);
	}
	struct bd_space s1 = t_space(&t);
	cr_assert_eq(s1.data_write_subs - s0.data_write_subs, N);
	cr_assert_leq(s1.data_writevs - s0.data_writevs, 2, "%lu writevs for %d writes",
		      (unsigned long)(s1.data_writevs - s0.data_writevs), N);
	check_started_together(&t, N, "before a reopen");
	for (int i = 0; i < N; i++) {
		free(bufs[i]);
	}
	t_reopen_clean(&t);
	check_started_together(&t, N, "after a reopen");
	t_close(&t);
}

/* Reopen the engine read-only (fsck) and return its report. */
static struct bd_fsck_report t_fsck(struct tctx *t)
{
	struct bd_engine_opts o = {.data_path = t->data, .size = t->size, .fsck_only = true};
	struct bd_engine *e;
	cr_assert_eq(bd_engine_open(t->r, &o, &e), 0);
	struct bd_fsck_report r = *bd_engine_fsck_report(e);
	bd_engine_close(e);
	return r;
}

/* Overwrite persisted chunk 0 with garbage and set or clear the 'C' marker, behind the
 * engine's back (it is closed). */
static void t_spoil_chunk0(struct tctx *t, bool marker)
{
	char db[320];
	snprintf(db, sizeof(db), "%s.db", t->data);
	struct bd_index *ix;
	cr_assert_eq(bd_index_open(&ix, db), 0);
	struct bd_batch *b = bd_batch_new();
	uint8_t bits[BD_CHUNK_BYTES];
	memset(bits, 0xff, sizeof(bits));
	bd_batch_put_chunk(b, 0, bits);
	bd_batch_set_chunks_current(b, marker);
	cr_assert_eq(bd_index_commit(ix, b, true), 0);
	bd_batch_free(b);
	bd_index_close(ix);
}

Test(engine, bitmap_chunks_persist_at_clean_close_only)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 16 * 4096, 0x31), 0);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 4 * 4096, 0x32), 0);
	cr_assert_eq(t_flush(&t), 0);
	/* Commits do not write chunks (and a new store has no marker). */
	uint8_t have[BD_CHUNK_BYTES];
	struct bd_index *ix = bd_engine_index(t.e);
	cr_assert_eq(bd_index_get_chunk(ix, 0, have), 0);
	cr_assert_eq(bd_index_get_chunks_current(ix), 0);
	bd_engine_close(t.e);
	t.e = NULL;
	/* A clean close wrote them with the marker: fsck compares, and they match. */
	struct bd_fsck_report r = t_fsck(&t);
	cr_assert(r.bitmap_checked);
	cr_assert_eq(r.persisted, 16);
	cr_assert_eq(r.leaked + r.missing, 0);
	/* With the marker, a chunk that disagrees with the lists is a problem. */
	t_spoil_chunk0(&t, true);
	r = t_fsck(&t);
	cr_assert(r.bitmap_checked);
	cr_assert_gt(r.leaked, 0);
	/* Without it (as after a crash), stale chunks are expected: not compared. */
	t_spoil_chunk0(&t, false);
	r = t_fsck(&t);
	cr_assert_not(r.bitmap_checked);
	cr_assert_eq(r.leaked + r.missing, 0);
	/* A serving open rewrites them from the index and clears the marker. */
	t_engine_open(&t);
	cr_assert_eq(t_used(&t), 16);
	ix = bd_engine_index(t.e);
	cr_assert_eq(bd_index_get_chunks_current(ix), 0);
	cr_assert_eq(bd_index_get_chunk(ix, 0, have), 1);
	uint32_t bits = 0;
	for (size_t i = 0; i < sizeof(have); i++) {
		bits += (uint32_t)__builtin_popcount(have[i]);
	}
	cr_assert_eq(bits, 16, "rewritten from the index");
	t_reopen(&t);
	const struct bd_fsck_report *rr = bd_engine_fsck_report(t.e);
	cr_assert(rr->bitmap_checked);
	cr_assert_eq(rr->leaked + rr->missing, 0);
	t_close(&t);
}

/* The pipelined committer (blockd/committer.c): 100 writes to one block, all in flight at
 * once, commit in groups handed off while the previous one is still being written. Writes
 * share the object's lock, so which of them lands last depends on the order their data
 * writes complete (concurrent overlapping writes are unordered); what must hold is that the
 * index after a reopen (read from RocksDB, not the cache) has the same winner as memory had,
 * i.e. the groups reached RocksDB in order, and that a drain in the middle leaves nothing in
 * flight. */
Test(engine, committer_keeps_groups_in_order)
{
	enum { N = 100 };
	struct tctx t;
	t_open(&t, 16 * MiB);
	uint8_t *bufs = t_buf((size_t)N * 4096, 0);
	struct many_reads m = {.r = t.r, .left = N};
	for (int i = 0; i < N; i++) {
		memset(bufs + (size_t)i * 4096, i + 1, 4096);
		struct bd_req q = t_req(1, NULL, 0, 0, 0, 4096);
		bd_write(t.e, &q, bufs + (size_t)i * 4096, many_reads_cb, &m);
	}
	/* Turn the reactor a little, then drain with groups still coming. */
	for (int k = 0; k < 3 && m.left > 0; k++) {
		cr_assert_geq(st_reactor_run_once(t.r, 1), 0);
	}
	cr_assert_not_null(bd_engine_index(t.e)); /* drains: nothing left in flight */
	while (m.left > 0) {
		cr_assert_eq(st_reactor_run(t.r), 0);
	}
	cr_assert_eq(m.errors, 0);
	uint8_t *got = t_buf(4096, 0);
	struct bd_req rq = t_req(1, NULL, 0, 0, 0, 4096);
	cr_assert_eq(t_read_q(&t, &rq, got), 0);
	int winner = got[0];
	cr_assert(winner >= 1 && winner <= N, "one of the writes won: %d", winner);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, winner), 0, "all of one write");
	t_reopen(&t);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, winner), 0,
		     "the index holds the same winner as memory did (%d)", winner);
	free(got);
	const struct bd_fsck_report *r = bd_engine_fsck_report(t.e);
	cr_assert_eq(r->leaked + r->missing + r->double_refs, 0);
	free(bufs);
	t_close(&t);
}

struct tdigest {
	struct st_reactor *r;
	bool done;
	int err;
	uint64_t digest;
	uint32_t bad, lists, blocks;
};

static void t_digest_cb(void *arg, int err, uint64_t digest, uint32_t bad, uint32_t nlists,
			uint32_t nblocks)
{
	struct tdigest *w = arg;
	cr_assert_not_null(w, "a refused digest must not call back");
	w->done = true;
	w->err = err;
	w->digest = digest;
	w->bad = bad;
	w->lists = nlists;
	w->blocks = nblocks;
	st_reactor_stop(w->r);
}

static struct tdigest t_digest(struct tctx *t, uint64_t object)
{
	struct tdigest w = {.r = t->r};
	cr_assert_eq(bd_object_digest(t->e, 1, object, t_digest_cb, &w), 0);
	cr_assert(!w.done, "the digest answers from a later callback, not inside the call");
	while (!w.done) {
		cr_assert_eq(st_reactor_run(t->r), 0);
	}
	return w;
}

struct texport {
	struct st_reactor *r;
	bool done, more;
	int err;
	struct bd_xobj x;
};

/* Takes the page: the callee frees what is left in its x. */
static void t_export_cb(void *arg, int err, struct bd_xobj *x, bool more)
{
	struct texport *w = arg;
	cr_assert_not_null(w, "a refused export must not call back");
	w->done = true;
	w->err = err;
	w->more = more;
	if (x) {
		w->x = *x;
		memset(x, 0, sizeof(*x));
	}
	st_reactor_stop(w->r);
}

/* Scrub's digest reads through the ring (digest.c): equal copies hash equal, different data
 * or a damaged block does not, an object with no lists is empty, and writes go on while a
 * digest is in flight without changing what it read. */
Test(engine, object_digest_reads_through_the_ring)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	/* Objects 2 and 3 alike (data, a hole, zeroes), object 4 with other data. */
	for (uint64_t o = 2; o <= 4; o++) {
		cr_assert_eq(t_write(&t, 1, NULL, 0, o, 0, 16 * 4096, o == 4 ? 0x5b : 0x5a), 0);
		cr_assert_eq(t_write(&t, 1, NULL, 0, o, 300 * 4096, 8 * 4096, 0), 0);
	}
	struct tdigest a = t_digest(&t, 2), b = t_digest(&t, 3), c = t_digest(&t, 4);
	cr_assert_eq(a.err, 0);
	cr_assert_eq(a.bad, 0);
	cr_assert_geq(a.lists, 2, "a list per segment written");
	cr_assert_eq(a.blocks, 24, "the stored blocks are read, the hole is not (%u)", a.blocks);
	cr_assert_eq(a.digest, b.digest, "identical copies hash alike");
	cr_assert_eq(a.lists, b.lists);
	cr_assert_neq(a.digest, c.digest, "different data hashes differently");
	struct tdigest none = t_digest(&t, 9);
	cr_assert_eq(none.err, 0);
	cr_assert_eq(none.lists, 0);
	cr_assert_eq(none.blocks, 0);

	/* A write to the object while its digest reads: the digest is of the lists it took. */
	struct tdigest w = {.r = t.r};
	cr_assert_eq(bd_object_digest(t.e, 1, 3, t_digest_cb, &w), 0);
	uint8_t *buf = t_buf(4096, 0x77);
	struct twait ww = {.r = t.r};
	struct bd_req q = t_req(1, NULL, 0, 3, 0, 4096);
	bd_write(t.e, &q, buf, t_cb, &ww);
	while (!w.done || !ww.done) {
		cr_assert_eq(st_reactor_run(t.r), 0);
	}
	cr_assert_eq(ww.err, 0);
	cr_assert_eq(w.err, 0);
	cr_assert_eq(w.bad, 0, "no block the digest read was reused under it");
	cr_assert_neq(t_digest(&t, 3).digest, a.digest, "the write shows in the next digest");

	/* One flipped bit in object 4's data: that block fails its crc. */
	uint8_t *want = t_buf(4096, 0x5b);
	t_clobber_block(&t, want, NULL, 64 * MiB);
	struct tdigest d = t_digest(&t, 4);
	cr_assert_eq(d.err, 0);
	cr_assert_eq(d.bad, 1);
	cr_assert_neq(d.digest, c.digest);
	free(want);
	free(buf);
	t_close(&t);
}

/* No family is 0, and the index reads family 0 as "every family": a peer's object request
 * naming it (found by blockd_wire_fuzz) made an install drop the references of every family's
 * lists with that object number while the lists stayed, so their blocks could be handed out
 * again. Export, install and digest now refuse it; the real family is untouched. */
Test(engine, object_copy_refuses_family_zero)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 2, 0, 16 * 4096, 0x5a), 0);
	struct bd_xobj x;
	bool more;
	cr_assert_eq(bd_object_export(t.e, 0, 2, &x), -EINVAL);
	cr_assert_eq(bd_object_export_page(t.e, 0, 2, 0, 0, 1024, &x, &more), -EINVAL);
	cr_assert_eq(bd_object_export_async(t.e, 0, 2, 0, 0, 1024, t_export_cb, NULL), -EINVAL);
	struct bd_xobj none = {0};
	cr_assert_eq(bd_object_install(t.e, 0, 2, &none, NULL, 0), -EINVAL);
	cr_assert_eq(bd_object_install_async(t.e, 0, 2, &none, NULL, 0, t_cb, NULL), -EINVAL);
	cr_assert_eq(bd_object_digest(t.e, 0, 2, t_digest_cb, NULL), -EINVAL);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 2, 0, 16 * 4096, 0x5a), 0);
	cr_assert_eq(t_used(&t), 16);
	t_reopen_clean(&t);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 2, 0, 16 * 4096, 0x5a), 0);
	t_close(&t);
}

/* An object's export in pages: every list once, in (layer, seg) order, the data with it. */
Test(engine, object_export_in_pages)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	const uint64_t anc[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 4, 0, OBJ, 0x11), 0);
	cr_assert_eq(t_write(&t, 2, anc, 1, 4, 0, OBJ, 0x22), 0);
	/* Neighbours in both layers, which the object's scan must skip. */
	for (uint64_t o = 3; o <= 5; o += 2) {
		cr_assert_eq(t_write(&t, 1, NULL, 0, o, 0, 8 * 4096, 0x33), 0);
		cr_assert_eq(t_write(&t, 2, anc, 1, o, OBJ - 4096, 4096, 0x44), 0);
	}
	struct bd_xobj whole;
	cr_assert_eq(bd_object_export(t.e, 1, 4, &whole), 0);
	cr_assert_eq(whole.nlists, 2 * OBJ / (BD_SEG_BLOCKS * BD_BLOCK));
	for (uint32_t i = 0; i < whole.nlists; i++) {
		cr_assert_eq(whole.lists[i].layer, i < whole.nlists / 2 ? 1u : 2u);
	}
	uint64_t after_layer = 0;
	uint32_t after_seg = 0, nlists = 0, ndata = 0, pages = 0;
	bool more = true;
	while (more) {
		struct bd_xobj p;
		cr_assert_eq(
			bd_object_export_page(t.e, 1, 4, after_layer, after_seg, 100, &p, &more),
			0);
		cr_assert_gt(p.nlists, 0);
		cr_assert_leq(p.ndata, 100);
		for (uint32_t i = 0; i < p.nlists; i++) {
			const struct bd_xlist *w = &whole.lists[nlists + i];
			cr_assert_eq(p.lists[i].layer, w->layer);
			cr_assert_eq(p.lists[i].seg, w->seg);
		}
		cr_assert_eq(memcmp(p.data, whole.data + (size_t)ndata * BD_BLOCK,
				    (size_t)p.ndata * BD_BLOCK),
			     0);
		nlists += p.nlists;
		ndata += p.ndata;
		after_layer = p.lists[p.nlists - 1].layer;
		after_seg = p.lists[p.nlists - 1].seg;
		pages++;
		bd_xobj_free(&p);
	}
	cr_assert_eq(nlists, whole.nlists);
	cr_assert_eq(ndata, whole.ndata);
	cr_assert_eq(ndata, 2 * OBJ / 4096);
	cr_assert_gt(pages, 2);

	/* The same pages read through the ring (a peer's pull): identical lists and data. */
	after_layer = 0;
	after_seg = 0;
	nlists = ndata = 0;
	more = true;
	while (more) {
		struct texport w = {.r = t.r};
		cr_assert_eq(bd_object_export_async(t.e, 1, 4, after_layer, after_seg, 100,
						    t_export_cb, &w),
			     0);
		cr_assert(!w.done, "the export answers from a later callback");
		while (!w.done) {
			cr_assert_eq(st_reactor_run(t.r), 0);
		}
		cr_assert_eq(w.err, 0);
		cr_assert_gt(w.x.nlists, 0);
		cr_assert_eq(w.x.bad_blocks, 0);
		for (uint32_t i = 0; i < w.x.nlists; i++) {
			cr_assert_eq(w.x.lists[i].layer, whole.lists[nlists + i].layer);
			cr_assert_eq(w.x.lists[i].seg, whole.lists[nlists + i].seg);
		}
		cr_assert_eq(memcmp(w.x.data, whole.data + (size_t)ndata * BD_BLOCK,
				    (size_t)w.x.ndata * BD_BLOCK),
			     0);
		nlists += w.x.nlists;
		ndata += w.x.ndata;
		after_layer = w.x.lists[w.x.nlists - 1].layer;
		after_seg = w.x.lists[w.x.nlists - 1].seg;
		more = w.more;
		bd_xobj_free(&w.x);
	}
	cr_assert_eq(nlists, whole.nlists);
	cr_assert_eq(ndata, whole.ndata);
	struct texport none = {.r = t.r};
	cr_assert_eq(bd_object_export_async(t.e, 1, 77, 0, 0, 100, t_export_cb, &none), 0);
	while (!none.done) {
		cr_assert_eq(st_reactor_run(t.r), 0);
	}
	cr_assert_eq(none.err, 0);
	cr_assert_eq(none.x.nlists, 0, "an object with no lists exports empty");
	bd_xobj_free(&none.x);
	bd_xobj_free(&whole);
	t_close(&t);
}

/* A layer delete that names a child twice (found by blockd_wire_fuzz) gave the child's one
 * copy of the list two references: its blocks never came free again. */
Test(engine, layer_delete_with_a_child_named_twice)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 32 * 4096, 0x10), 0);
	const uint64_t kids[] = {2, 2};
	uint64_t dropped, moved, freed;
	cr_assert_eq(bd_layer_delete(t.e, 1, 1, kids, 2, &dropped, &moved, &freed), 0);
	cr_assert_eq(moved, 1, "one copy for the one child");
	cr_assert_eq(t_check(&t, 2, NULL, 0, 0, 0, 32 * 4096, 0x10), 0);
	/* Overwritten in the child, the old blocks have no reference left. */
	cr_assert_eq(t_write(&t, 2, NULL, 0, 0, 0, 32 * 4096, 0x20), 0);
	bd_engine_reap(t.e);
	cr_assert_eq(t_used(&t), 32);
	t_reopen_clean(&t);
	cr_assert_eq(t_used(&t), 32);
	t_close(&t);
}

/* A flatten whose ancestry named layer 0 (blockd_wire_fuzz, seed 1796635401) scanned every
 * layer of the family and gave one copied list a reference per layer that had the segment:
 * those blocks never came free. An ancestry with 0 or the layer itself is refused, and a
 * proper flatten's copies come free with the layers. */
Test(engine, flatten_refuses_layer_zero_in_the_ancestry)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	const uint64_t anc1[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 4, 0, OBJ, 0x11), 0);
	cr_assert_eq(t_write(&t, 2, anc1, 1, 4, 0, OBJ / 2, 0x22), 0);
	cr_assert_eq(t_flush(&t), 0);
	uint64_t copied = 0;
	const uint64_t bad[][2] = {{0, 0}, {2, 0}, {3, 1}};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(bd_flatten(t.e, 1, 3, bad[i], 2, &copied), -EINVAL, "ancestry %zu", i);
		cr_assert_eq(copied, 0);
	}
	const uint64_t anc21[] = {2, 1};
	cr_assert_eq(bd_flatten(t.e, 1, 3, anc21, 2, &copied), 0);
	cr_assert_eq(copied, OBJ / (BD_SEG_BLOCKS * BD_BLOCK));
	cr_assert_eq(t_check(&t, 3, NULL, 0, 4, 0, OBJ / 2, 0x22), 0);
	cr_assert_eq(t_check(&t, 3, NULL, 0, 4, OBJ / 2, OBJ / 2, 0x11), 0);
	uint64_t dropped, moved, freed;
	for (uint64_t l = 1; l <= 3; l++) {
		cr_assert_eq(bd_layer_delete(t.e, 1, l, NULL, 0, &dropped, &moved, &freed), 0);
	}
	bd_engine_reap(t.e);
	cr_assert_eq(t_used(&t), 0);
	t_reopen_clean(&t);
	t_close(&t);
}

/* Recovery's install writes the pulled data through the ring (bd_object_install_async) with
 * the object locked: a client write that arrives meanwhile waits and lands on top of the
 * installed copy, a second install is refused, and the displaced blocks come free. */
Test(engine, object_install_through_the_ring_locks_the_object)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	const uint64_t anc[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 4, 0, OBJ, 0x11), 0);
	cr_assert_eq(t_write(&t, 2, anc, 1, 4, 0, 64 * 4096, 0x22), 0);
	struct bd_xobj copy;
	cr_assert_eq(bd_object_export(t.e, 1, 4, &copy), 0);
	cr_assert_eq(copy.ndata, OBJ / 4096 + 64);
	/* Object 9 gets object 4's lists and data (same layers), over data of its own. */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 9, 0, OBJ, 0x99), 0);
	cr_assert_eq(t_used(&t), 2 * (OBJ / 4096) + 64);
	uint8_t key[] = {'t', 'k'}, val[] = {7};
	struct bd_xkv kv = {key, sizeof(key), val, sizeof(val)};
	struct twait inst = {.r = t.r};
	cr_assert_eq(bd_object_install_async(t.e, 1, 9, &copy, &kv, 1, t_cb, &inst), 0);
	cr_assert_null(copy.data, "the install takes the copy");
	cr_assert(!inst.done, "the install answers from a later callback");
	struct bd_xobj none = {0};
	cr_assert_eq(bd_object_install(t.e, 1, 9, &none, NULL, 0), -EBUSY, "the object is locked");
	/* A write to the object while the install is in flight. */
	void *b = t_buf(4096, 0x77);
	struct bd_req q = t_req(1, NULL, 0, 9, 8 * 4096, 4096);
	struct twait wr = {.r = t.r};
	bd_write(t.e, &q, b, t_cb, &wr);
	cr_assert_eq(t_wait(&t, &inst), 0);
	cr_assert(!wr.done, "the write waits for the install's commit");
	cr_assert_eq(t_wait(&t, &wr), 0);
	free(b);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 9, 0, 8 * 4096, 0x11), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 9, 8 * 4096, 4096, 0x77), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 9, 9 * 4096, OBJ - 9 * 4096, 0x11), 0);
	cr_assert_eq(t_check(&t, 2, anc, 1, 9, 0, 8 * 4096, 0x22), 0);
	cr_assert_eq(t_check(&t, 2, anc, 1, 9, 64 * 4096, 4096, 0x11), 0);
	/* Object 9's old blocks came free; the install's copy holds its own. */
	cr_assert_eq(t_used(&t), 2 * (OBJ / 4096 + 64));
	t_reopen_clean(&t);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 9, 8 * 4096, 4096, 0x77), 0);
	t_close(&t);
}

/* A layer delete while an install's data is in flight: the copy may carry lists of the
 * deleted layer, so the install gives up with -EAGAIN (recovery pulls again), its blocks go
 * back, and nothing leaks. */
Test(engine, object_install_through_the_ring_yields_to_a_layer_delete)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	const uint64_t anc[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 4, 0, 64 * 4096, 0x11), 0);
	cr_assert_eq(t_write(&t, 2, anc, 1, 4, 0, 64 * 4096, 0x22), 0);
	struct bd_xobj copy;
	cr_assert_eq(bd_object_export(t.e, 1, 4, &copy), 0);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 9, 0, 16 * 4096, 0x99), 0);
	struct twait inst = {.r = t.r};
	cr_assert_eq(bd_object_install_async(t.e, 1, 9, &copy, NULL, 0, t_cb, &inst), 0);
	cr_assert_eq(bd_layer_delete(t.e, 1, 2, NULL, 0, NULL, NULL, NULL), 0);
	cr_assert_eq(t_wait(&t, &inst), -EAGAIN);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 9, 0, 16 * 4096, 0x99), 0);
	cr_assert_eq(t_used(&t), 64 + 16);
	t_reopen_clean(&t);
	t_close(&t);
}

/* Cached pages of the data file send every O_DIRECT write over them to an io-wq worker (the
 * kernel refuses the non-blocking try while any page of the range is cached): opening the
 * engine drops them. The file is written through the page cache first, as `cp` does. */
Test(engine, open_drops_the_data_files_cached_pages)
{
	struct tctx t;
	t_setup(&t, 16 * MiB);
	struct statfs sfs;
	cr_assert_eq(statfs(t.dir, &sfs), 0);
	cr_assert_neq(sfs.f_type, TMPFS_MAGIC, "%s is a tmpfs: its pages are the file", t.dir);
	int fd = open(t.data, O_RDWR | O_CREAT, 0644);
	cr_assert_geq(fd, 0);
	uint8_t *b = t_buf(MiB, 0);
	for (uint64_t off = 0; off < 16 * MiB; off += MiB) {
		cr_assert_eq(pwrite(fd, b, MiB, (off_t)off), (ssize_t)MiB);
	}
	free(b);
	cr_assert_eq(fsync(fd), 0);
	size_t npages = 16 * MiB / (size_t)sysconf(_SC_PAGESIZE);
	uint8_t *vec = calloc(npages, 1);
	cr_assert_not_null(vec);
	void *map = mmap(NULL, 16 * MiB, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert_neq(map, MAP_FAILED);
	size_t resident = 0;
	cr_assert_eq(mincore(map, 16 * MiB, vec), 0);
	for (size_t i = 0; i < npages; i++) {
		resident += vec[i] & 1;
	}
	cr_assert_gt(resident, 0, "the buffered writes left pages cached");
	t_engine_open(&t);
	resident = 0;
	cr_assert_eq(mincore(map, 16 * MiB, vec), 0);
	for (size_t i = 0; i < npages; i++) {
		resident += vec[i] & 1;
	}
	cr_assert_eq(resident, 0, "%zu pages of the data file still cached after open", resident);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 4096, 0x3c), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x3c), 0);
	munmap(map, 16 * MiB);
	free(vec);
	close(fd);
	t_close(&t);
}

static bool t_keep_all(void *arg, uint64_t family, uint64_t object)
{
	(void)arg;
	(void)family;
	(void)object;
	return true;
}

static bool t_keep_odd(void *arg, uint64_t family, uint64_t object)
{
	(void)arg;
	(void)family;
	return object % 2 == 1;
}

struct tobjs {
	uint64_t v[64][3];
	int n;
};

static int t_objs_fn(void *arg, uint64_t family, uint64_t layer, uint64_t object)
{
	struct tobjs *o = arg;
	cr_assert_lt(o->n, 64);
	o->v[o->n][0] = family;
	o->v[o->n][1] = layer;
	o->v[o->n][2] = object;
	o->n++;
	return 0;
}

struct tlisted {
	struct st_reactor *r;
	bool done;
	int err;
	uint64_t *objs;
	long n;
};

static void t_listed(void *arg, int err, uint64_t *objs, long n)
{
	struct tlisted *w = arg;
	w->done = true;
	w->err = err;
	w->objs = objs;
	w->n = n;
	st_reactor_stop(w->r);
}

/* The object listing behind recovery, stray removal and scrub (bd_object_list over
 * bd_index_scan_objects, which seeks past an object's segments): every object with a list in
 * any layer of any family, once, whether it has one segment or all of them. */
Test(engine, object_list_sees_every_object_once)
{
	struct tctx t;
	t_open(&t, 64 * MiB);
	const uint64_t anc[] = {1};
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, OBJ, 0x10), 0);         /* dense */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 1, 5 * 4096, 4096, 0x11), 0); /* one seg */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 5, 0, 4096, 0x15), 0);        /* two segs */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 5, OBJ - 4096, 4096, 0x15), 0);
	cr_assert_eq(t_write(&t, 2, anc, 1, 0, 64 * 4096, 2 * 64 * 4096, 0x20), 0); /* layer 2 */
	cr_assert_eq(t_write(&t, 2, anc, 1, 7, 0, 4096, 0x27), 0);
	struct bd_req q = t_req(9, NULL, 0, 3, 0, 4096); /* another family */
	q.family = 4;
	void *b = t_buf(4096, 0x43);
	cr_assert_eq(t_write_q(&t, &q, b), 0);
	free(b);
	uint64_t *objs = NULL;
	long n = bd_object_list(t.e, t_keep_all, NULL, &objs);
	struct tobjs seen = {0};
	cr_assert_eq(bd_index_scan_objects(bd_engine_index(t.e), t_objs_fn, &seen), 0);
	/* (1,1,0) (1,1,1) (1,1,5) (1,2,0) (1,2,7) (4,9,3) */
	cr_assert_eq(seen.n, 6, "(family, layer, object) with lists: %d", seen.n);
	cr_assert_eq(seen.v[3][1], 2);
	cr_assert_eq(seen.v[3][2], 0);
	cr_assert_eq(seen.v[5][0], 4);
	for (int i = 1; i < seen.n; i++) {
		bool ordered =
			seen.v[i - 1][0] < seen.v[i][0] ||
			(seen.v[i - 1][0] == seen.v[i][0] &&
			 (seen.v[i - 1][1] < seen.v[i][1] ||
			  (seen.v[i - 1][1] == seen.v[i][1] && seen.v[i - 1][2] < seen.v[i][2])));
		cr_assert(ordered, "key order at %d", i);
	}
	cr_assert_eq(n, 5, "objects: %ld", n);
	const uint64_t want[5][2] = {{1, 0}, {1, 1}, {1, 5}, {1, 7}, {4, 3}};
	for (long i = 0; i < n; i++) {
		cr_assert_eq(objs[2 * i], want[i][0], "object %ld family", i);
		cr_assert_eq(objs[2 * i + 1], want[i][1], "object %ld", i);
	}
	free(objs);
	n = bd_object_list(t.e, t_keep_odd, NULL, &objs);
	cr_assert_eq(n, 4, "odd objects: %ld", n);
	free(objs);

	/* On a thread of its own (as dist lists a PG): the same pairs, after a write that was
	 * acknowledged but whose group may not be committed yet. */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 11, 0, 4096, 0x1b), 0);
	struct tlisted w = {.r = t.r};
	cr_assert_eq(bd_object_list_async(t.e, t_listed, &w), 0);
	cr_assert(!w.done, "the listing answers from a later callback");
	while (!w.done) {
		cr_assert_eq(st_reactor_run(t.r), 0);
	}
	cr_assert_eq(w.err, 0);
	cr_assert_eq(w.n, 6, "objects listed on the thread: %ld", w.n);
	const uint64_t want2[6][2] = {{1, 0}, {1, 1}, {1, 5}, {1, 7}, {1, 11}, {4, 3}};
	for (long i = 0; i < w.n; i++) {
		cr_assert_eq(w.objs[2 * i], want2[i][0], "object %ld family", i);
		cr_assert_eq(w.objs[2 * i + 1], want2[i][1], "object %ld", i);
	}
	free(w.objs);
	t_close(&t);
}
