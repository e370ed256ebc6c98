/*
 * strata-blockd engine: read-triggered defragmentation.
 *
 * Redirect-on-write puts every write in newly allocated blocks, next to whatever was written
 * at the same time, not next to its logical neighbours. After random writes a segment (64
 * blocks, 256 KiB) lies scattered over the disk, and a sequential reader (a VM booting, a
 * backup, qemu-img convert) gets random-read speed: measured 434 MB/s for 1 MiB reads at QD8
 * after 5 s of 4k random writes, against 1620 MB/s on the freshly written volume.
 *
 * So a READ that covered a whole segment, found it in more than defrag_runs physical runs
 * and verified its data, rewrites it: the data it just read goes to one contiguous run,
 * through the ordinary write path (allocation, O_DIRECT write, group commit, journal), and
 * the old blocks are freed as an overwrite frees them. It costs one 256 KiB write per
 * fragmented segment read, once; a random 4k reader never triggers it.
 *
 * Content never changes, so this is safe against everything else going on:
 *  - only the layer's own list. Blocks other lists reference too (a snapshot's, or a
 *    template's under a clone) are copied like the rest, up to defrag_shared of them per
 *    segment (default 16 of 64): the other layers keep their blocks, so each such block costs
 *    one block of space. Without that, a clone or a head that random writes had mostly
 *    rewritten kept reading at random-read speed (measured 380 MB/s for 1 MiB reads at QD8
 *    on a clone 8 deep, against 919 MB/s on a volume of its own whose segments were
 *    rewritten), since one block still shared with its template was enough to disqualify
 *    the segment. A segment still mostly shared is left alone: copying it would duplicate
 *    the template;
 *  - the rewrite commits only if the segment still maps every block to the block and crc the
 *    read saw (bd_defrag_still_valid, checked in the commit phase, which runs atomically on
 *    the reactor thread); a write that landed meanwhile wins and the rewrite's blocks go back;
 *  - it is purely local (no PG version, no forward): replicas hold the same content in their
 *    own layout, and scrub compares crcs, which do not change.
 * At most DEFRAG_INFLIGHT rewrites run at once, none while free space is short, and the
 * allocation must be one run or nothing (bd_write_phase): a rewrite never waits for space.
 *
 * In the background, too (bd_defrag_tick, from the service's 500 ms tick): after a whole tick
 * with no client op, a scan walks the index's lists in key order from where it stopped, and
 * reads each segment whose list (as the index has it, a hint only) is all data in more than
 * defrag_runs runs; the read's completion decides and rewrites as above. It keeps
 * DEFRAG_BG_READS reads in flight while no client op arrives, stops at the first one, and
 * rests DEFRAG_PASS_REST_MS after a full pass over the index, unless clients were busy
 * since.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "engine_int.h"
#include "internal.h"

#define DEFRAG_INFLIGHT     4
#define DEFRAG_BG_READS     2
#define DEFRAG_SCAN_BATCH   4096  /* lists looked at per scan */
#define DEFRAG_PASS_REST_MS 60000 /* after a full pass over the index */
/* Free blocks below which no rewrite starts: 64 MiB, or 1/16 of the device if smaller. */
#define DEFRAG_MIN_FREE (16384u)

struct defrag_ctx {
	struct bd_engine *e;
	struct bd_defrag d;
};

static void defrag_done(void *arg, int err)
{
	struct defrag_ctx *c = arg;
	struct bd_engine *e = c->e;
	e->defrag_inflight--;
	if (err == 0) {
		e->defrag_done++;
	} else {
		e->defrag_skipped++;
	}
	if (err == -ENOSPC) {
		e->defrag_nospace_ms = st_now_ms(); /* no free run that long (bd_write_phase) */
	}
	free(c->d.buf);
	free(c);
}

/* Count pblk in *shared when other lists reference it too; true once the segment holds more
 * such blocks than a rewrite may copy (defrag_shared). */
static bool too_shared(const struct bd_engine *e, uint64_t pblk, uint32_t *shared)
{
	return e->alloc.ref[pblk] != 1 && ++*shared > e->defrag_shared;
}

/* The segment's physical runs, when every block holds data and at most defrag_shared of them
 * are referenced by other lists too; 0 when it does not qualify. */
static uint32_t segment_runs(struct bd_engine *e, const uint64_t *pblk)
{
	uint32_t runs = 0, shared = 0;
	for (uint32_t j = 0; j < BD_SEG_BLOCKS; j++) {
		if (pblk[j] >= BD_PBLK_NONE || pblk[j] >= e->alloc.nblocks) {
			return 0;
		}
		if (too_shared(e, pblk[j], &shared)) {
			return 0;
		}
		if (j == 0 || pblk[j] != pblk[j - 1] + 1) {
			runs++;
		}
	}
	return runs;
}

/* After a rewrite found no free run long enough, none is tried for this long (the search
 * scans the allocation bitmap). */
#define DEFRAG_NOSPACE_BACKOFF_MS 1000

static bool space_to_spare(const struct bd_engine *e)
{
	if (e->defrag_nospace_ms != 0 &&
	    st_now_ms() - e->defrag_nospace_ms < DEFRAG_NOSPACE_BACKOFF_MS) {
		return false;
	}
	uint64_t floor = e->alloc.nblocks / 16;
	if (floor > DEFRAG_MIN_FREE) {
		floor = DEFRAG_MIN_FREE;
	}
	return e->alloc.nfree > floor + BD_SEG_BLOCKS;
}

static void rewrite_segment(struct bd_op *op, uint32_t idx, uint64_t seg_lb)
{
	struct bd_engine *e = op->e;
	struct defrag_ctx *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		return;
	}
	c->d.buf = aligned_alloc(BD_BLOCK, (size_t)BD_SEG_BLOCKS * BD_BLOCK);
	if (c->d.buf == NULL) {
		free(c);
		return;
	}
	c->e = e;
	memcpy(c->d.buf, op->buf + (size_t)idx * BD_BLOCK, (size_t)BD_SEG_BLOCKS * BD_BLOCK);
	memcpy(c->d.pblk, op->pblk + idx, sizeof(c->d.pblk));
	memcpy(c->d.crc, op->crc + idx, sizeof(c->d.crc));
	struct bd_req q = {
		.family = op->q.family,
		.object = op->q.object,
		.layer = op->q.layer,
		.offset = seg_lb << BD_BLOCK_SHIFT,
		.length = BD_SEG_BLOCKS * BD_BLOCK,
	};
	e->defrag_inflight++;
	e->bg_ops++; /* not a client's */
	bd_rewrite(e, &q, &c->d, defrag_done, c);
}

void bd_defrag_consider(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	if (e->defrag_runs == 0 || op->kind != OP_READ || op->err != 0 || e->failed ||
	    op->nblocks < BD_SEG_BLOCKS) {
		return;
	}
	uint64_t lb0 = op->q.offset >> BD_BLOCK_SHIFT;
	uint64_t seg_lb = (lb0 + BD_SEG_BLOCKS - 1) & ~(uint64_t)(BD_SEG_BLOCKS - 1);
	for (; seg_lb + BD_SEG_BLOCKS <= lb0 + op->nblocks; seg_lb += BD_SEG_BLOCKS) {
		if (e->defrag_inflight >= DEFRAG_INFLIGHT || !space_to_spare(e)) {
			return;
		}
		uint32_t idx = (uint32_t)(seg_lb - lb0);
		if (segment_runs(e, op->pblk + idx) <= e->defrag_runs) {
			continue;
		}
		/* The list that served the read must be the layer's own (not an ancestor's). */
		struct bd_mkey k;
		int err;
		bd_key_of(&op->q, seg_lb, &k);
		if (bd_load_own(e, &k, &err) == NULL) {
			continue;
		}
		rewrite_segment(op, idx, seg_lb);
	}
}

bool bd_defrag_still_valid(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	const struct bd_defrag *d = op->dfg;
	struct bd_mkey k;
	int err;
	bd_key_of(&op->q, op->q.offset >> BD_BLOCK_SHIFT, &k);
	struct bd_centry *own = bd_load_own(e, &k, &err);
	if (own == NULL || own->map == NULL) {
		return false;
	}
	/* The sharing is judged again: a snapshot taken meanwhile shares every block. */
	uint32_t shared = 0;
	for (uint32_t j = 0; j < BD_SEG_BLOCKS; j++) {
		struct bd_bmap b = bd_extmap_lookup(own->map, j);
		if (b.pblk != d->pblk[j] || b.crc != d->crc[j] || b.pblk >= e->alloc.nblocks) {
			return false;
		}
		if (too_shared(e, b.pblk, &shared)) {
			return false;
		}
	}
	return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Background: idle-time scan. */

static uint64_t client_ops(const struct bd_engine *e)
{
	return e->nops_total - e->bg_ops;
}

/* All data, in more than defrag_runs runs (the index's copy: a hint). */
static bool looks_fragmented(const struct bd_engine *e, const struct bd_extmap *m)
{
	uint32_t blocks = 0, runs = 0;
	for (uint32_t r = 0; r < m->nruns; r++) {
		if (m->runs[r].pblk == BD_PBLK_ZERO) {
			return false;
		}
		blocks += m->runs[r].len;
		runs++;
	}
	return blocks == BD_SEG_BLOCKS && runs > e->defrag_runs;
}

struct scan {
	struct bd_engine *e;
	struct bd_mkey found[DEFRAG_BG_READS];
	int nfound, want;
	uint32_t seen;
	bool stopped; /* by us, not by the end of the index */
};

static int scan_fn(void *arg, const struct bd_mkey *k, const struct bd_extmap *m, int err)
{
	struct scan *sc = arg;
	sc->e->defrag_cursor = *k;
	sc->e->defrag_cursor_set = true;
	if (err == 0 && m != NULL && looks_fragmented(sc->e, m)) {
		sc->found[sc->nfound++] = *k;
	}
	if (sc->nfound == sc->want || ++sc->seen == DEFRAG_SCAN_BATCH) {
		sc->stopped = true;
		return 1;
	}
	return 0;
}

struct bg_read {
	struct bd_engine *e;
	uint8_t *buf;
};

static void bg_read_done(void *arg, int err)
{
	struct bg_read *b = arg;
	struct bd_engine *e = b->e;
	(void)err; /* the read's completion already decided (bd_defrag_consider) */
	e->defrag_bg_reads--;
	free(b->buf);
	free(b);
	bd_defrag_pump(e);
}

static void bg_read(struct bd_engine *e, const struct bd_mkey *k)
{
	struct bg_read *b = malloc(sizeof(*b));
	uint8_t *buf = aligned_alloc(BD_BLOCK, (size_t)BD_SEG_BLOCKS * BD_BLOCK);
	if (b == NULL || buf == NULL) {
		free(b);
		free(buf);
		return;
	}
	b->e = e;
	b->buf = buf;
	struct bd_req q = {
		.family = k->family,
		.layer = k->layer,
		.object = k->object,
		.offset = (uint64_t)k->seg * BD_SEG_BLOCKS * BD_BLOCK,
		.length = BD_SEG_BLOCKS * BD_BLOCK,
	};
	e->defrag_bg_reads++;
	e->defrag_bg_started++;
	e->bg_ops++;
	bd_read(e, &q, buf, bg_read_done, b);
}

void bd_defrag_pump(struct bd_engine *e)
{
	if (e->defrag_runs == 0 || !e->defrag_idle || client_ops(e) != e->defrag_client_mark ||
	    e->failed || !space_to_spare(e)) {
		return;
	}
	int want = DEFRAG_BG_READS - (int)e->defrag_bg_reads;
	if (want <= 0 || e->defrag_inflight >= DEFRAG_INFLIGHT) {
		return;
	}
	if (e->defrag_rest_until_ms != 0) {
		if (st_now_ms() < e->defrag_rest_until_ms) {
			return;
		}
		e->defrag_rest_until_ms = 0;
	}
	struct scan sc = {.e = e, .want = want};
	int rc = bd_index_scan_after(e->ix, e->defrag_cursor_set ? &e->defrag_cursor : NULL,
				     scan_fn, &sc);
	if (rc < 0) {
		e->defrag_rest_until_ms = st_now_ms() + DEFRAG_PASS_REST_MS;
		return;
	}
	if (!sc.stopped) {
		/* The end of the index: start over after a rest. */
		e->defrag_cursor_set = false;
		e->defrag_rest_until_ms = st_now_ms() + DEFRAG_PASS_REST_MS;
	}
	for (int i = 0; i < sc.nfound; i++) {
		bg_read(e, &sc.found[i]);
	}
}

void bd_defrag_tick(struct bd_engine *e)
{
	if (e->defrag_runs == 0 || !e->defrag_background) {
		return;
	}
	uint64_t now = client_ops(e);
	e->defrag_idle = now == e->defrag_client_mark;
	e->defrag_client_mark = now;
	if (!e->defrag_idle) {
		e->defrag_rest_until_ms = 0; /* written to since the last pass, maybe */
	}
	bd_defrag_pump(e);
}
