/*
 * Whole objects for recovery, rebalancing and repair.
 *
 *   export:  scan 'E' family.. for the object's lists (every layer) -> pread each data block,
 *            check its crc -> bd_xobj { lists, data in list/block order }
 *   install: check the data against the crcs -> reserve fresh blocks -> pwrite -> one
 *            WriteBatch: the target's old lists of the object dropped (or overwritten), the
 *            new ones put with the new block numbers, plus the caller's keys -> commit ->
 *            displaced blocks to limbo -> cache entries of the object dropped
 *
 * Crash safety is the write path's: nothing references the new blocks until the batch
 * commits, so a crash leaves the old object or the new one. Copy-on-write sharing between
 * layers is not preserved: a block that two layers share is exported, and installed, once per
 * list (duplicate blocks on the target). Scrub and reads do not care; space does.
 *
 * A peer's pull is served by bd_object_export_async, and installed by bd_object_install_async:
 * both move the data through the ring while the reactor serves clients. The install holds
 * the object's exclusive lock from its start to its commit, so a client op on the object waits
 * and applies on top, as it would after a synchronous install; a layer delete or flatten
 * meanwhile makes it give up with -EAGAIN (the copy may name a layer that is gone). The
 * synchronous export (tests) and install (tests, and stray removal, which writes no data)
 * run on the reactor thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "common/placement.h"
#include "engine_int.h"
#include "internal.h"

void bd_xobj_free(struct bd_xobj *x)
{
	if (!x) {
		return;
	}
	free(x->lists);
	free(x->data);
	memset(x, 0, sizeof(*x));
}

struct collect_obj {
	uint64_t object;
	struct bd_xlist *lists;
	uint32_t n, cap;
	int err;
};

static int collect_obj_fn(void *arg, const struct bd_mkey *k, const struct bd_extmap *m, int err)
{
	struct collect_obj *c = arg;
	if (k->object != c->object) {
		return 0;
	}
	if (err || !m) {
		c->err = -EBADMSG;
		return 1;
	}
	if (c->n == c->cap) {
		uint32_t cap = c->cap ? c->cap * 2 : 16;
		struct bd_xlist *nl = realloc(c->lists, cap * sizeof(*nl));
		if (!nl) {
			c->err = -ENOMEM;
			return 1;
		}
		c->lists = nl;
		c->cap = cap;
	}
	c->lists[c->n].layer = k->layer;
	c->lists[c->n].seg = k->seg;
	c->lists[c->n].map = *m;
	c->n++;
	return 0;
}

/* The lists of one object, from the index once every gathered or in-flight group commit is
 * in it (bd_engine_drain). */
static int collect(struct bd_engine *e, uint64_t family, uint64_t object, struct collect_obj *c)
{
	memset(c, 0, sizeof(*c));
	if (family == 0) {
		/* No family is 0, and bd_index_scan reads family 0 as "every family": an install
		 * would then drop the references of other families' lists and leave the lists. */
		return -EINVAL;
	}
	bd_engine_drain(e);
	c->object = object;
	int rc = bd_index_scan_object(e->ix, family, object, collect_obj_fn, c);
	if (rc < 0) {
		free(c->lists);
		return rc;
	}
	if (c->err) {
		free(c->lists);
		return c->err;
	}
	return 0;
}

/* Read n physically consecutive blocks. 0 or -EIO. */
static int pread_blocks(struct bd_engine *e, uint64_t pblk, uint32_t n, uint8_t *dst)
{
	size_t len = (size_t)n * BD_BLOCK;
	ssize_t got = pread(e->fd, dst, len, (off_t)(pblk * BD_BLOCK));
	return got == (ssize_t)len ? 0 : -EIO;
}

int bd_object_export(struct bd_engine *e, uint64_t family, uint64_t object, struct bd_xobj *out)
{
	bool more;
	return bd_object_export_page(e, family, object, 0, 0, UINT32_MAX, out, &more);
}

/* The lists of the page and room for their data: out->data is allocated, not read. */
static int export_select(struct bd_engine *e, uint64_t family, uint64_t object,
			 uint64_t after_layer, uint32_t after_seg, uint32_t max_blocks,
			 struct bd_xobj *out, bool *more)
{
	memset(out, 0, sizeof(*out));
	*more = false;
	struct collect_obj c;
	int rc = collect(e, family, object, &c);
	if (rc) {
		return rc;
	}
	/* The lists come in key order, (layer, seg): skip to the cursor, then take lists while
	 * they fit the page (always at least one, at most BD_XPAGE_LISTS). */
	uint32_t first = 0;
	while (after_layer != 0 && first < c.n &&
	       (c.lists[first].layer < after_layer ||
		(c.lists[first].layer == after_layer && c.lists[first].seg <= after_seg))) {
		first++;
	}
	uint32_t ndata = 0, end = first;
	while (end < c.n && end - first < BD_XPAGE_LISTS) {
		uint32_t nb = bd_extmap_data_blocks(&c.lists[end].map);
		if (end > first && (uint64_t)ndata + nb > max_blocks) {
			break;
		}
		ndata += nb;
		end++;
	}
	*more = end < c.n;
	if (first > 0 && end > first) {
		memmove(c.lists, c.lists + first, (size_t)(end - first) * sizeof(*c.lists));
	}
	c.n = end - first;
	uint8_t *data = NULL;
	if (ndata) {
		data = aligned_alloc(BD_BLOCK, (size_t)ndata * BD_BLOCK);
		if (!data) {
			free(c.lists);
			return -ENOMEM;
		}
	}
	out->nlists = c.n;
	out->lists = c.lists;
	out->data = data;
	out->ndata = ndata;
	return 0;
}

/*
 * The next run of physically consecutive data blocks of x from the cursor (*list, *blk), at
 * most one segment's. Returns its length (0: no more data), with its first block in *pblk;
 * -EIO for a block beyond the data file. The cursor moves past the run.
 */
static int next_run(const struct bd_engine *e, const struct bd_xobj *x, uint32_t *list,
		    uint32_t *blk, struct bd_bmap v[BD_SEG_BLOCKS], uint64_t *pblk)
{
	for (; *list < x->nlists; (*list)++, *blk = 0) {
		if (*blk == 0) {
			bd_extmap_expand(&x->lists[*list].map, v);
		}
		uint32_t b = *blk;
		while (b < BD_SEG_BLOCKS && v[b].pblk >= BD_PBLK_NONE) {
			b++;
		}
		if (b == BD_SEG_BLOCKS) {
			continue;
		}
		uint32_t run = 1;
		while (b + run < BD_SEG_BLOCKS && v[b + run].pblk < BD_PBLK_NONE &&
		       v[b + run].pblk == v[b].pblk + run) {
			run++;
		}
		if (v[b].pblk + run > e->nblocks) {
			return -EIO;
		}
		*pblk = v[b].pblk;
		*blk = b + run;
		if (*blk == BD_SEG_BLOCKS) {
			(*list)++;
			*blk = 0;
		}
		return (int)run;
	}
	return 0;
}

/* Blocks of x's data that do not match their lists' crcs; counted into the engine's errors. */
static uint32_t export_verify(struct bd_engine *e, struct bd_xobj *x)
{
	uint32_t di = 0, bad = 0;
	for (uint32_t i = 0; i < x->nlists; i++) {
		struct bd_bmap v[BD_SEG_BLOCKS];
		bd_extmap_expand(&x->lists[i].map, v);
		for (uint32_t b = 0; b < BD_SEG_BLOCKS; b++) {
			if (v[b].pblk < BD_PBLK_NONE) {
				bad += st_crc32c(0, x->data + (size_t)di++ * BD_BLOCK, BD_BLOCK) !=
				       v[b].crc;
			}
		}
	}
	x->bad_blocks = bad;
	e->checksum_errors += bad;
	return bad;
}

int bd_object_export_page(struct bd_engine *e, uint64_t family, uint64_t object,
			  uint64_t after_layer, uint32_t after_seg, uint32_t max_blocks,
			  struct bd_xobj *out, bool *more)
{
	int rc = export_select(e, family, object, after_layer, after_seg, max_blocks, out, more);
	if (rc) {
		return rc;
	}
	struct bd_bmap v[BD_SEG_BLOCKS];
	uint32_t list = 0, blk = 0, di = 0;
	uint64_t pblk = 0;
	int run;
	/* One read per run of physically consecutive blocks (a 4 MiB object read block by
	 * block took ~1000 synchronous reads on the reactor thread). */
	while ((run = next_run(e, out, &list, &blk, v, &pblk)) > 0) {
		if (pread_blocks(e, pblk, (uint32_t)run, out->data + (size_t)di * BD_BLOCK)) {
			run = -EIO;
			break;
		}
		di += (uint32_t)run;
	}
	if (run < 0) {
		bd_xobj_free(out);
		return run;
	}
	export_verify(e, out);
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The same page read through the ring, for a peer's pull: the reactor serves clients while
 * the reads are in flight (a 16 MiB page read with preads stalled them for its whole length).
 * Pinned in the engine's read list, as a digest is (digest.c), so that limbo keeps the blocks
 * the lists name until the reads are done. */

#define EXPORT_WINDOW 16 /* reads in flight, a segment at most each */

struct export_read {
	struct export_async *xa;
	struct st_io io;
	struct iovec iov;
};

struct export_async {
	struct bd_engine *e;
	struct bd_op pin;
	struct bd_xobj x;
	bool more;
	uint32_t list, blk, di; /* the next run starts at (list, blk), into data block di */
	struct bd_bmap v[BD_SEG_BLOCKS];
	int inflight, err;
	bool issued; /* every run has been started */
	struct export_read rd[EXPORT_WINDOW];
	int free_rd[EXPORT_WINDOW], nfree;
	bd_export_cb cb;
	void *arg;
};

static void export_finish(struct export_async *xa)
{
	struct bd_engine *e = xa->e;
	if (bd_reads_leave(e, &xa->pin)) {
		bd_engine_reap(e);
	}
	if (xa->err == 0) {
		export_verify(e, &xa->x);
	}
	xa->cb(xa->arg, xa->err, xa->err ? NULL : &xa->x, xa->more);
	bd_xobj_free(&xa->x);
	free(xa);
}

static void export_posted(void *arg)
{
	export_finish(arg);
}

static void export_read_done(void *arg, int res);

/* Keep up to EXPORT_WINDOW reads in flight. Returns true once none is and none is left. */
static bool export_pump(struct export_async *xa)
{
	while (!xa->issued && xa->err == 0 && xa->nfree > 0) {
		uint64_t pblk = 0;
		int run = next_run(xa->e, &xa->x, &xa->list, &xa->blk, xa->v, &pblk);
		if (run <= 0) {
			xa->issued = true;
			xa->err = run;
			break;
		}
		struct export_read *r = &xa->rd[xa->free_rd[--xa->nfree]];
		r->xa = xa;
		r->iov.iov_base = xa->x.data + (size_t)xa->di * BD_BLOCK;
		r->iov.iov_len = (size_t)run * BD_BLOCK;
		xa->di += (uint32_t)run;
		xa->inflight++;
		st_reactor_readv(xa->e->r, &r->io, xa->e->fd, &r->iov, 1, pblk * BD_BLOCK,
				 export_read_done, r);
	}
	return xa->inflight == 0 && (xa->issued || xa->err);
}

static void export_read_done(void *arg, int res)
{
	struct export_read *r = arg;
	struct export_async *xa = r->xa;
	if (res != (int)r->iov.iov_len && xa->err == 0) {
		xa->err = res < 0 ? res : -EIO;
	}
	xa->inflight--;
	xa->free_rd[xa->nfree++] = (int)(r - xa->rd);
	if (export_pump(xa)) {
		export_finish(xa);
	}
}

int bd_object_export_async(struct bd_engine *e, uint64_t family, uint64_t object,
			   uint64_t after_layer, uint32_t after_seg, uint32_t max_blocks,
			   bd_export_cb cb, void *arg)
{
	struct export_async *xa = calloc(1, sizeof(*xa));
	if (!xa) {
		return -ENOMEM;
	}
	int rc = export_select(e, family, object, after_layer, after_seg, max_blocks, &xa->x,
			       &xa->more);
	if (rc) {
		free(xa);
		return rc;
	}
	xa->e = e;
	xa->cb = cb;
	xa->arg = arg;
	for (int i = 0; i < EXPORT_WINDOW; i++) {
		xa->free_rd[i] = EXPORT_WINDOW - 1 - i;
	}
	xa->nfree = EXPORT_WINDOW;
	xa->pin.e = e;
	bd_reads_join(e, &xa->pin);
	if (export_pump(xa)) {
		/* Nothing to read, or a list out of range: answer from a later callback still. */
		st_reactor_post_owed(e->r, export_posted, xa);
	}
	return 0;
}

/* The crcs of x's data against its lists; 0, -EINVAL (ndata disagrees) or -EILSEQ. */
static int install_check(const struct bd_xobj *x)
{
	uint32_t ndata = 0;
	for (uint32_t i = 0; i < x->nlists; i++) {
		ndata += bd_extmap_data_blocks(&x->lists[i].map);
	}
	if (ndata != x->ndata) {
		return -EINVAL;
	}
	uint32_t di = 0;
	for (uint32_t i = 0; i < x->nlists; i++) {
		struct bd_bmap v[BD_SEG_BLOCKS];
		bd_extmap_expand(&x->lists[i].map, v);
		for (uint32_t b = 0; b < BD_SEG_BLOCKS; b++) {
			if (v[b].pblk >= BD_PBLK_NONE) {
				continue;
			}
			if (st_crc32c(0, x->data + (size_t)di * BD_BLOCK, BD_BLOCK) != v[b].crc) {
				return -EILSEQ;
			}
			di++;
		}
	}
	return 0;
}

/* Fresh blocks for x's data: runs (as many as the allocator gave) and, one per data block,
 * pblk[] (runs are only an allocator detail here). */
struct install_space {
	uint64_t *pblk;
	struct bd_prun *runs;
	int nr; /* runs still reserved (put back unless the commit referenced them) */
};

static int install_reserve(struct bd_engine *e, uint32_t ndata, struct install_space *sp)
{
	*sp = (struct install_space){0};
	sp->pblk = calloc(ndata ? ndata : 1, sizeof(*sp->pblk));
	sp->runs = calloc(ndata ? ndata : 1, sizeof(*sp->runs));
	if (!sp->pblk || !sp->runs) {
		return -ENOMEM;
	}
	if (ndata == 0) {
		return 0;
	}
	int nr = bd_alloc_get(&e->alloc, ndata, sp->runs, (int)ndata);
	if (nr == -ENOSPC && bd_engine_reclaim_now(e)) {
		nr = bd_alloc_get(&e->alloc, ndata, sp->runs, (int)ndata);
	}
	if (nr < 0) {
		return nr;
	}
	sp->nr = nr;
	bd_prewrite_kick(e);
	uint32_t bi = 0;
	for (int r = 0; r < nr; r++) {
		for (uint32_t i = 0; i < sp->runs[r].len; i++) {
			sp->pblk[bi++] = sp->runs[r].pblk + i;
		}
	}
	return 0;
}

static void install_release(struct bd_engine *e, struct install_space *sp)
{
	for (int r = 0; r < sp->nr; r++) {
		bd_alloc_put(&e->alloc, sp->runs[r].pblk, sp->runs[r].len);
	}
	free(sp->runs);
	free(sp->pblk);
	*sp = (struct install_space){0};
}

/* With x's data written at sp->pblk: one WriteBatch that replaces the object's lists. */
static int install_commit(struct bd_engine *e, uint64_t family, uint64_t object,
			  const struct bd_xobj *x, struct install_space *sp,
			  const struct bd_xkv *xkv, uint32_t nxkv)
{
	if (e->failed) {
		return -EIO;
	}
	struct collect_obj old;
	int rc = collect(e, family, object, &old);
	if (rc) {
		return rc;
	}
	uint64_t *freed = NULL;
	size_t nfreed = 0, freed_cap = 0;
	/* Old lists: every data block loses a reference; keys not re-put are deleted. */
	for (uint32_t i = 0; i < old.n; i++) {
		struct bd_bmap v[BD_SEG_BLOCKS];
		bd_extmap_expand(&old.lists[i].map, v);
		for (uint32_t b = 0; b < BD_SEG_BLOCKS; b++) {
			if (v[b].pblk >= BD_PBLK_NONE) {
				continue;
			}
			if (bd_alloc_unref(&e->alloc, v[b].pblk)) {
				if (nfreed == freed_cap) {
					size_t cap = freed_cap ? freed_cap * 2 : 256;
					uint64_t *nf = realloc(freed, cap * sizeof(*nf));
					if (!nf) {
						/* Leak until restart rather than fail half-edited.
						 */
						continue;
					}
					freed = nf;
					freed_cap = cap;
				}
				freed[nfreed++] = v[b].pblk;
			}
		}
		struct bd_mkey k = {family, old.lists[i].layer, object, old.lists[i].seg};
		bool kept = false;
		for (uint32_t j = 0; j < x->nlists && !kept; j++) {
			kept = x->lists[j].layer == k.layer && x->lists[j].seg == k.seg;
		}
		if (!kept) {
			bd_batch_del_map(e->batch, &k);
			e->nlists--;
		}
		bd_cache_drop(e->cache, &k);
	}
	uint32_t bi = 0;
	for (uint32_t i = 0; i < x->nlists; i++) {
		struct bd_bmap v[BD_SEG_BLOCKS];
		bd_extmap_expand(&x->lists[i].map, v);
		for (uint32_t b = 0; b < BD_SEG_BLOCKS; b++) {
			if (v[b].pblk >= BD_PBLK_NONE) {
				continue;
			}
			v[b].pblk = sp->pblk[bi++];
			bd_alloc_ref(&e->alloc, v[b].pblk);
		}
		struct bd_extmap m;
		bd_extmap_init(&m);
		bd_extmap_compact(&m, v);
		struct bd_mkey k = {family, x->lists[i].layer, object, x->lists[i].seg};
		bool existed = false;
		for (uint32_t j = 0; j < old.n && !existed; j++) {
			existed = old.lists[j].layer == k.layer && old.lists[j].seg == k.seg;
		}
		if (!existed) {
			e->nlists++;
		}
		bd_batch_put_map(e->batch, &k, &m);
		bd_cache_drop(e->cache, &k);
	}
	for (uint32_t i = 0; i < nxkv; i++) {
		bd_batch_put_raw(e->batch, xkv[i].key, xkv[i].klen, xkv[i].val, xkv[i].vlen);
	}
	/* Resolutions of descendants may have pointed at a list that changed. */
	bd_cache_invalidate(e->cache);
	rc = bd_engine_commit_batch(e, false);
	if (rc == 0) {
		sp->nr = 0; /* referenced now */
		bd_engine_defer_frees(e, freed, (uint32_t)nfreed);
		/* Free them now unless a read that started earlier still runs: otherwise they
		 * would wait in limbo for the next I/O to complete, and a node that only lost
		 * strays (rebalancing) would never give the space back while idle. */
		bd_engine_reap(e);
	}
	free(freed);
	free(old.lists);
	return rc;
}

int bd_object_install(struct bd_engine *e, uint64_t family, uint64_t object,
		      const struct bd_xobj *x, const struct bd_xkv *xkv, uint32_t nxkv)
{
	if (e->failed) {
		return -EIO;
	}
	if (bd_engine_object_locked(e, family, object)) {
		return -EBUSY;
	}
	int rc = install_check(x);
	if (rc) {
		return rc;
	}
	struct install_space sp;
	rc = install_reserve(e, x->ndata, &sp);
	uint32_t bi = 0;
	for (int r = 0; rc == 0 && r < sp.nr; r++) {
		size_t len = (size_t)sp.runs[r].len * BD_BLOCK;
		ssize_t n = pwrite(e->fd, x->data + (size_t)bi * BD_BLOCK, len,
				   (off_t)(sp.runs[r].pblk * BD_BLOCK));
		if (n != (ssize_t)len) {
			rc = -EIO;
		}
		bi += sp.runs[r].len;
	}
	if (rc == 0) {
		rc = install_commit(e, family, object, x, &sp, xkv, nxkv);
	}
	install_release(e, &sp);
	return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* bd_object_install_async: the data through the ring, the object locked meanwhile. */

#define INSTALL_WINDOW 16 /* writes in flight, a run each */

struct install_write {
	struct install_async *ia;
	struct st_io io;
	struct iovec iov;
	uint64_t off;
};

struct install_async {
	struct bd_engine *e;
	struct bd_op holder; /* holds the object's exclusive lock until the commit */
	bool locked;         /* granted (it may wait behind ops that hold the object) */
	uint64_t family, object;
	struct bd_xobj x;
	struct bd_xkv *xkv;
	uint32_t nxkv;
	struct install_space sp;
	uint64_t layers_gen; /* e->layers_gen at the start */
	int run;             /* the next run to write */
	uint32_t di;         /* ... from data block di */
	int inflight, err;
	struct install_write wr[INSTALL_WINDOW];
	int free_wr[INSTALL_WINDOW], nfree;
	bd_done_cb cb;
	void *arg;
};

static void install_async_free(struct install_async *ia)
{
	bd_xobj_free(&ia->x);
	free(ia->xkv); /* the keys and values live in the same allocation */
	free(ia);
}

static void install_finish(struct install_async *ia)
{
	struct bd_engine *e = ia->e;
	int err = ia->err;
	if (err == 0 && e->layers_gen != ia->layers_gen) {
		/* A layer was deleted or flattened meanwhile: the copy may hold lists of a layer
		 * that is gone here. The caller pulls the object again. */
		err = -EAGAIN;
	}
	if (err == 0) {
		err = install_commit(e, ia->family, ia->object, &ia->x, &ia->sp, ia->xkv, ia->nxkv);
	}
	install_release(e, &ia->sp);
	bd_lock_release(&ia->holder); /* ops that waited on the object go on from here */
	bd_done_cb cb = ia->cb;
	void *arg = ia->arg;
	install_async_free(ia);
	cb(arg, err);
}

static void install_posted(void *arg)
{
	install_finish(arg);
}

static bool install_pump(struct install_async *ia);

/* The lock came free (from inside its last holder's release): finish from a post of our own. */
static void install_granted(struct bd_op *op)
{
	struct install_async *ia =
		(struct install_async *)((char *)op - offsetof(struct install_async, holder));
	ia->locked = true;
	if (ia->e->r == NULL && ia->err == 0) {
		/* Shutting down: the ring is gone (strata-blockd's last settle commits a group
		 * whose ops release their locks). Give up rather than post to no reactor. */
		ia->err = -ECANCELED;
	}
	if (install_pump(ia)) {
		if (ia->e->r != NULL) {
			st_reactor_post_owed(ia->e->r, install_posted, ia);
		} else {
			install_finish(ia); /* commits nothing: err is set */
		}
	}
}

static void install_write_done(void *arg, int res);

static void install_submit(struct install_write *w)
{
	struct install_async *ia = w->ia;
	ia->inflight++;
	st_reactor_writev(ia->e->r, &w->io, ia->e->fd, &w->iov, 1, w->off, install_write_done, w);
}

/* Keep up to INSTALL_WINDOW writes in flight. Returns true once none is and none is left. */
static bool install_pump(struct install_async *ia)
{
	while (ia->run < ia->sp.nr && ia->err == 0 && ia->nfree > 0) {
		const struct bd_prun *run = &ia->sp.runs[ia->run++];
		struct install_write *w = &ia->wr[ia->free_wr[--ia->nfree]];
		w->ia = ia;
		w->iov.iov_base = ia->x.data + (size_t)ia->di * BD_BLOCK;
		w->iov.iov_len = (size_t)run->len * BD_BLOCK;
		w->off = run->pblk * BD_BLOCK;
		ia->di += run->len;
		install_submit(w);
	}
	return ia->inflight == 0 && (ia->run == ia->sp.nr || ia->err) && ia->locked;
}

static void install_write_done(void *arg, int res)
{
	struct install_write *w = arg;
	struct install_async *ia = w->ia;
	ia->inflight--;
	if (ia->err == 0 && (res == -EAGAIN || res == -EINTR ||
			     (res > 0 && (size_t)res < w->iov.iov_len && res % BD_BLOCK == 0))) {
		/* The rest of the run again (a short O_DIRECT write stops at a block). */
		size_t done = res > 0 ? (size_t)res : 0;
		w->iov.iov_base = (uint8_t *)w->iov.iov_base + done;
		w->iov.iov_len -= done;
		w->off += done;
		install_submit(w);
		return;
	}
	if (res != (int)w->iov.iov_len && ia->err == 0) {
		ia->err = res < 0 ? res : -EIO;
	}
	ia->free_wr[ia->nfree++] = (int)(w - ia->wr);
	if (install_pump(ia)) {
		install_finish(ia);
	}
}

/* Copy the caller's keys: one allocation, the array first, then every key and value. */
static int install_take_kv(struct install_async *ia, const struct bd_xkv *xkv, uint32_t nxkv)
{
	if (nxkv == 0) {
		return 0;
	}
	size_t bytes = nxkv * sizeof(*ia->xkv);
	for (uint32_t i = 0; i < nxkv; i++) {
		bytes += xkv[i].klen + xkv[i].vlen;
	}
	ia->xkv = malloc(bytes);
	if (!ia->xkv) {
		return -ENOMEM;
	}
	uint8_t *p = (uint8_t *)(ia->xkv + nxkv);
	for (uint32_t i = 0; i < nxkv; i++) {
		memcpy(p, xkv[i].key, xkv[i].klen);
		memcpy(p + xkv[i].klen, xkv[i].val, xkv[i].vlen);
		ia->xkv[i] = (struct bd_xkv){p, xkv[i].klen, p + xkv[i].klen, xkv[i].vlen};
		p += xkv[i].klen + xkv[i].vlen;
	}
	ia->nxkv = nxkv;
	return 0;
}

int bd_object_install_async(struct bd_engine *e, uint64_t family, uint64_t object,
			    struct bd_xobj *x, const struct bd_xkv *xkv, uint32_t nxkv,
			    bd_done_cb cb, void *arg)
{
	if (e->failed) {
		return -EIO;
	}
	if (family == 0 || e->r == NULL) {
		return -EINVAL; /* family 0 reads as every family in the index */
	}
	int rc = install_check(x);
	if (rc) {
		return rc;
	}
	struct install_async *ia = calloc(1, sizeof(*ia));
	if (!ia) {
		return -ENOMEM;
	}
	rc = install_take_kv(ia, xkv, nxkv);
	if (rc == 0) {
		rc = install_reserve(e, x->ndata, &ia->sp);
	}
	ia->e = e;
	ia->holder.e = e;
	ia->holder.q.family = family;
	ia->holder.q.object = object;
	if (rc == 0) {
		/* Queued behind a write whose group has not committed yet, say. */
		int got = bd_lock_excl(&ia->holder, install_granted);
		rc = got < 0 ? got : 0;
		ia->locked = got == 1;
	}
	if (rc) {
		install_release(e, &ia->sp);
		install_async_free(ia);
		return rc;
	}
	ia->x = *x; /* taken: the caller's copy is emptied */
	memset(x, 0, sizeof(*x));
	ia->family = family;
	ia->object = object;
	ia->layers_gen = e->layers_gen;
	ia->cb = cb;
	ia->arg = arg;
	for (int i = 0; i < INSTALL_WINDOW; i++) {
		ia->free_wr[i] = INSTALL_WINDOW - 1 - i;
	}
	ia->nfree = INSTALL_WINDOW;
	if (install_pump(ia)) {
		/* No data (a deletion), and the lock at once: commit from a later callback still.
		 */
		st_reactor_post_owed(e->r, install_posted, ia);
	}
	return 0;
}

struct list_objs {
	bd_obj_filter keep;
	void *arg;
	uint64_t *v;
	size_t n, cap;
	int err;
};

static int list_objs_fn(void *arg, uint64_t family, uint64_t layer, uint64_t object)
{
	struct list_objs *l = arg;
	(void)layer;
	if (l->n > 0 && l->v[2 * l->n - 2] == family && l->v[2 * l->n - 1] == object) {
		return 0; /* the same object in the layer before: already kept */
	}
	if (!l->keep(l->arg, family, object)) {
		return 0;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		uint64_t *nv = realloc(l->v, cap * 2 * sizeof(*nv));
		if (!nv) {
			l->err = -ENOMEM;
			return 1;
		}
		l->v = nv;
		l->cap = cap;
	}
	l->v[2 * l->n] = family;
	l->v[2 * l->n + 1] = object;
	l->n++;
	return 0;
}

static int cmp_pair(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;
	if (x[0] != y[0]) {
		return x[0] < y[0] ? -1 : 1;
	}
	return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* The objects l->keep accepts into l->v, sorted and unique (l->n of them). 0 or -errno. */
static int list_scan(struct bd_index *ix, struct list_objs *l)
{
	int rc = bd_index_scan_objects(ix, list_objs_fn, l);
	if (rc == 0 && l->err) {
		rc = l->err;
	}
	if (rc == 0) {
		l->n = bd_pairs_sort_unique(l->v, l->n);
	}
	return rc;
}

long bd_object_list(struct bd_engine *e, bd_obj_filter keep, void *arg, uint64_t **out)
{
	struct list_objs l = {.keep = keep, .arg = arg};
	bd_engine_drain(e);
	int rc = list_scan(e->ix, &l);
	if (rc < 0) {
		free(l.v);
		return rc;
	}
	*out = l.v; /* NULL when nothing matched */
	return (long)l.n;
}

/* ------------------------------------------------------------------------------------------ */
/* bd_object_list_async: the same listing on a thread of its own. */

struct bd_objlist_job {
	struct bd_engine *e; /* NULL once bd_engine_stop_listers let go of it */
	pthread_t thread;
	bool joined;
	struct list_objs l;
	int rc;
	bd_objlist_cb cb;
	void *arg;
	struct bd_objlist_job *next; /* e->listers */
};

static bool keep_every(void *arg, uint64_t family, uint64_t object)
{
	(void)arg;
	(void)family;
	(void)object;
	return true;
}

static void objlist_unlink(struct bd_objlist_job *j)
{
	struct bd_objlist_job **pp = &j->e->listers;
	while (*pp && *pp != j) {
		pp = &(*pp)->next;
	}
	if (*pp) {
		*pp = j->next;
	}
}

static void objlist_posted(void *arg)
{
	struct bd_objlist_job *j = arg;
	if (!j->joined) {
		pthread_join(j->thread, NULL); /* its post was its last act */
		j->joined = true;
	}
	int rc = j->rc;
	if (j->e == NULL) {
		rc = -ECANCELED; /* the engine is closing */
	} else {
		objlist_unlink(j);
	}
	if (rc) {
		free(j->l.v);
		j->cb(j->arg, rc, NULL, 0);
	} else {
		j->cb(j->arg, 0, j->l.v, (long)j->l.n);
	}
	free(j);
}

static void *objlist_run(void *arg)
{
	struct bd_objlist_job *j = arg;
	bd_index_thread_init();
	j->rc = list_scan(j->e->ix, &j->l);
	st_reactor_post_owed(j->e->r, objlist_posted, j);
	return NULL;
}

int bd_object_list_async(struct bd_engine *e, bd_objlist_cb cb, void *arg)
{
	if (e->failed) {
		return -EIO;
	}
	if (e->r == NULL) {
		return -EINVAL;
	}
	struct bd_objlist_job *j = calloc(1, sizeof(*j));
	if (!j) {
		return -ENOMEM;
	}
	*j = (struct bd_objlist_job){.e = e, .l = {.keep = keep_every}, .cb = cb, .arg = arg};
	bd_engine_drain(e); /* every group committed: the index holds every acknowledged write */
	int rc = pthread_create(&j->thread, NULL, objlist_run, j);
	if (rc) {
		free(j);
		return -rc;
	}
	j->next = e->listers;
	e->listers = j;
	return 0;
}

void bd_engine_stop_listers(struct bd_engine *e)
{
	for (struct bd_objlist_job *j = e->listers; j; j = j->next) {
		if (!j->joined) {
			pthread_join(j->thread, NULL);
			j->joined = true;
		}
	}
}

void bd_engine_drop_listers(struct bd_engine *e)
{
	bd_engine_stop_listers(e);
	for (struct bd_objlist_job *j = e->listers; j; j = j->next) {
		j->e = NULL;
	}
	e->listers = NULL;
}

size_t bd_pairs_keep(uint64_t *v, size_t n, bd_obj_filter keep, void *arg)
{
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (keep(arg, v[2 * i], v[2 * i + 1])) {
			v[2 * w] = v[2 * i];
			v[2 * w + 1] = v[2 * i + 1];
			w++;
		}
	}
	return w;
}

size_t bd_pairs_sort_unique(uint64_t *v, size_t n)
{
	if (n == 0) {
		return 0;
	}
	qsort(v, n, 2 * sizeof(uint64_t), cmp_pair);
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (w && v[2 * (w - 1)] == v[2 * i] && v[2 * (w - 1) + 1] == v[2 * i + 1]) {
			continue;
		}
		v[2 * w] = v[2 * i];
		v[2 * w + 1] = v[2 * i + 1];
		w++;
	}
	return w;
}

int bd_engine_put_raw(struct bd_engine *e, const struct bd_xkv *xkv, uint32_t n, bool sync)
{
	if (e->failed) {
		return -EIO;
	}
	for (uint32_t i = 0; i < n; i++) {
		bd_batch_put_raw(e->batch, xkv[i].key, xkv[i].klen, xkv[i].val, xkv[i].vlen);
	}
	return bd_engine_commit_batch(e, sync);
}

int bd_object_lists(struct bd_engine *e, uint64_t family, uint64_t object, struct bd_xlist **lists,
		    uint32_t *n)
{
	struct collect_obj c;
	int rc = collect(e, family, object, &c);
	if (rc) {
		return rc;
	}
	*lists = c.lists;
	*n = c.n;
	return 0;
}
