/* Shared helpers for the blockd unit tests: an engine on a temporary data file, driven
 * synchronously through the reactor. */
#ifndef STRATA_TEST_BLOCKD_HELPERS_H
#define STRATA_TEST_BLOCKD_HELPERS_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/reactor.h"
#include "internal.h"

struct tctx {
	struct st_reactor *r;
	struct bd_engine *e;
	char dir[256];
	char data[300];
	uint64_t size;
	size_t cache_entries;   /* engine cache size (0: the default); kept across t_reopen */
	uint64_t prewrite;      /* bd_engine_opts.prewrite_ahead (0: off); kept across t_reopen */
	bool no_journal;        /* reply after the commit (strata-blockd --ack-after-commit) */
	uint32_t defrag_runs;   /* bd_engine_opts.defrag_runs (0: off); kept across t_reopen */
	uint32_t defrag_shared; /* bd_engine_opts.defrag_shared; kept across t_reopen */
};

struct twait {
	struct st_reactor *r;
	bool done;
	int err;
};

static inline void t_cb(void *arg, int err)
{
	struct twait *w = arg;
	w->done = true;
	w->err = err;
	st_reactor_stop(w->r);
}

static inline int t_wait(struct tctx *t, struct twait *w)
{
	while (!w->done) {
		cr_assert_eq(st_reactor_run(t->r), 0);
	}
	return w->err;
}

static inline void t_engine_open(struct tctx *t)
{
	struct bd_engine_opts o = {.data_path = t->data,
				   .size = t->size,
				   .cache_entries = t->cache_entries,
				   .prewrite_ahead = t->prewrite,
				   .journal = !t->no_journal,
				   .defrag_runs = t->defrag_runs,
				   .defrag_shared = t->defrag_shared,
				   .defrag_background = t->defrag_runs > 0};
	int rc = bd_engine_open(t->r, &o, &t->e);
	cr_assert_eq(rc, 0, "engine open: %d", rc);
	/* Every group commit on the pipelined committer thread (strata-blockd hands groups off
	 * only while its reactor is saturated). STRATA_TEST_COMMIT_INLINE=1 runs the same tests
	 * with commits on the reactor thread. */
	const char *inl = getenv("STRATA_TEST_COMMIT_INLINE");
	if (inl == NULL || inl[0] != '1') {
		rc = bd_engine_start_committer(t->e, true);
		cr_assert_eq(rc, 0, "committer: %d", rc);
	}
}

/* A private temp dir and a reactor, no engine yet (set options, then t_engine_open). */
static inline void t_setup(struct tctx *t, uint64_t size)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/bdtest.XXXXXX"); /* mkdtemp's template */
	cr_assert_not_null(mkdtemp(t->dir));
	snprintf(t->data, sizeof(t->data), "%s/data", t->dir);
	t->size = size;
	cr_assert_eq(st_reactor_create(&t->r, 256), 0);
	/* As strata-blockd runs it: I/O submitted as soon as a few requests are queued. */
	st_reactor_set_submit_batch(t->r, ST_REACTOR_SUBMIT_BATCH);
}

/* An engine on a fresh data file in a private temp dir; cache_entries 0 = the default. */
static inline void t_open_cache(struct tctx *t, uint64_t size, size_t cache_entries)
{
	t_setup(t, size);
	t->cache_entries = cache_entries;
	t_engine_open(t);
}

static inline void t_open(struct tctx *t, uint64_t size)
{
	t_open_cache(t, size, 0);
}

static inline void t_reopen(struct tctx *t)
{
	bd_engine_close(t->e);
	t->e = NULL;
	t_engine_open(t);
}

/* Reopen after a clean close, and expect the rebuild to find the allocator, the index and the
 * persisted bitmap in agreement, and every list well formed. */
static inline void t_reopen_clean(struct tctx *t)
{
	t_reopen(t);
	const struct bd_fsck_report *r = bd_engine_fsck_report(t->e);
	cr_assert(r->bitmap_checked, "the persisted bitmap was compared");
	cr_assert_eq(r->leaked + r->missing + r->double_refs + r->bad_lists, 0,
		     "leaked %lu missing %lu double %lu bad lists %lu", (unsigned long)r->leaked,
		     (unsigned long)r->missing, (unsigned long)r->double_refs,
		     (unsigned long)r->bad_lists);
}

/* Closes the engine if one is open, and removes the temp dir. */
static inline void t_close(struct tctx *t)
{
	if (t->e != NULL) {
		bd_engine_close(t->e);
	}
	t->e = NULL;
	st_reactor_destroy(t->r);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
	cr_assert_eq(system(cmd), 0);
}

static inline struct bd_req t_req(uint64_t layer, const uint64_t *anc, uint32_t nanc,
				  uint64_t object, uint64_t off, uint32_t len)
{
	struct bd_req q = {.family = 1,
			   .object = object,
			   .layer = layer,
			   .ancestry = anc,
			   .nancestry = nanc,
			   .offset = off,
			   .length = len};
	return q;
}

static inline void *t_buf(size_t len, int fill)
{
	void *p = aligned_alloc(BD_BLOCK, len);
	cr_assert_not_null(p);
	memset(p, fill, len);
	return p;
}

static inline int t_write_q(struct tctx *t, const struct bd_req *q, const void *buf)
{
	struct twait w = {.r = t->r};
	bd_write(t->e, q, buf, t_cb, &w);
	return t_wait(t, &w);
}

static inline int t_read_q(struct tctx *t, const struct bd_req *q, void *buf)
{
	struct twait w = {.r = t->r};
	bd_read(t->e, q, buf, t_cb, &w);
	return t_wait(t, &w);
}

/* Write len bytes of `fill` at off of object obj in layer (ancestry anc). */
static inline int t_write(struct tctx *t, uint64_t layer, const uint64_t *anc, uint32_t nanc,
			  uint64_t obj, uint64_t off, uint32_t len, int fill)
{
	void *b = t_buf(len, fill);
	struct bd_req q = t_req(layer, anc, nanc, obj, off, len);
	int rc = t_write_q(t, &q, b);
	free(b);
	return rc;
}

/* Read and check every byte equals fill. Returns the read status, or -EBADE on a mismatch. */
static inline int t_check(struct tctx *t, uint64_t layer, const uint64_t *anc, uint32_t nanc,
			  uint64_t obj, uint64_t off, uint32_t len, int fill)
{
	uint8_t *b = t_buf(len, 0xEE);
	struct bd_req q = t_req(layer, anc, nanc, obj, off, len);
	int rc = t_read_q(t, &q, b);
	if (rc == 0) {
		for (uint32_t i = 0; i < len; i++) {
			if (b[i] != (uint8_t)fill) {
				rc = -EBADE;
				break;
			}
		}
	}
	free(b);
	return rc;
}

static inline int t_flush(struct tctx *t)
{
	struct twait w = {.r = t->r};
	bd_flush(t->e, t_cb, &w);
	return t_wait(t, &w);
}

/* The engine's space and counters, as they are now. */
static inline struct bd_space t_space(struct tctx *t)
{
	struct bd_space s;
	bd_engine_space(t->e, &s);
	return s;
}

/* Blocks in use once every commit is durable (freed blocks wait for that; see
 * bd_engine_reap). t_used_now does not sync first. */
static inline uint64_t t_used_now(struct tctx *t)
{
	return t_space(t).used_blocks;
}

static inline uint64_t t_used(struct tctx *t)
{
	/* Writes are acknowledged before their group commit, which then releases the blocks
	 * they displaced: let every pending group finish. */
	while (bd_engine_groups_pending(t->e)) {
		cr_assert_geq(st_reactor_run_once(t->r, -1), 0);
	}
	(void)bd_engine_reclaim_now(t->e);
	return t_used_now(t);
}

/* Overwrite, behind the engine's back, the first 4 KiB block of the data file (within bytes)
 * that equals want: with `with`, or with want with one bit flipped if with is NULL. Fails the
 * test if no block matches. */
static inline void t_clobber_block(const struct tctx *t, const uint8_t *want, const uint8_t *with,
				   uint64_t bytes)
{
	int fd = open(t->data, O_RDWR);
	cr_assert_geq(fd, 0);
	uint8_t blk[4096];
	off_t found = -1;
	for (off_t off = 0; off < (off_t)bytes; off += 4096) {
		cr_assert_eq(pread(fd, blk, 4096, off), 4096);
		if (memcmp(blk, want, 4096) == 0) {
			found = off;
			break;
		}
	}
	cr_assert_geq(found, 0, "the block is in the data file");
	if (with != NULL) {
		memcpy(blk, with, 4096);
	} else {
		blk[100] ^= 0x01;
	}
	cr_assert_eq(pwrite(fd, blk, 4096, found), 4096);
	close(fd);
}

#endif
