/*
 * The prewriter: keeps written free space ahead of the allocator on a sparse data file.
 *
 * Why. blockd redirects every write to newly allocated blocks. When the data file is a sparse
 * regular file, a block it never held has no extent in the filesystem, and an O_DIRECT write
 * there makes the filesystem allocate one and convert it from unwritten to written when the
 * write completes (a journal update, in a kworker). Measured with fio on this machine's ext4,
 * 4 KiB random writes into holes (or fallocated space) ran at 0.6-0.75x the rate of the same
 * writes over written blocks, and strata's randwrite through libstrata was 0.75x on a sparse
 * data file what it was on one written through first. A block device has no such cost.
 *
 * What. The allocator prefers the written region [0, ready) (alloc.c). The prewriter grows
 * that region: while it has fewer than `ahead` free blocks, the next free run past it (up to
 * PW_RUN blocks) is reserved like a write's blocks, written with zeros, released and added to
 * the region. Blocks in use past the region were written by data (an allocation that fell
 * back there because the prewriter lagged), so they are skipped, never overwritten. One
 * prewrite is in flight at a time, through the same ring as the data I/O.
 *
 * Safety. Only blocks the allocator holds free are written, and they are reserved for the
 * duration, so no write can be handed one; a free block holds nothing any index version
 * references (frees wait for durability, engine.c bd_engine_reap). The region is not persisted:
 * at open it is the file's leading data (SEEK_HOLE), and whatever was written past it is
 * found again by the skip rule. A write that finds no space while a prewrite holds a
 * reservation waits for it (bd_space_park) instead of failing with ENOSPC. The prewriter
 * does not start when free space is below PW_MIN_FREE, and stops for good on an I/O error
 * (the host filesystem full, say), which is logged: allocation then works as without it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "engine_int.h"
#include "internal.h"

#define PW_ZERO_BYTES (64u << 10)
#define PW_RUN        ((uint32_t)(PW_IOV * (PW_ZERO_BYTES / BD_BLOCK))) /* 1 MiB */
#define PW_MIN_FREE   (4ull * PW_RUN)

static void pw_done(void *arg, int res);

/* [0, returned) of the data file is written: the leading data before the first hole. */
static uint64_t written_prefix(struct bd_engine *e)
{
	struct stat st;
	if (fstat(e->fd, &st) < 0) {
		return 0;
	}
	if (S_ISBLK(st.st_mode)) {
		return e->nblocks;
	}
	off_t hole = lseek(e->fd, 0, SEEK_HOLE);
	if (hole < 0) {
		return 0; /* unknown: the prewriter writes free blocks it need not have */
	}
	return (uint64_t)hole / BD_BLOCK;
}

void bd_prewrite_open(struct bd_engine *e, uint64_t ahead_bytes)
{
	struct bd_prewrite *pw = &e->pw;

	bd_alloc_set_ready(&e->alloc, written_prefix(e));
	pw->ahead = ahead_bytes / BD_BLOCK;
	if (pw->ahead == 0 || e->alloc.ready >= e->nblocks) {
		return;
	}
	pw->zero = aligned_alloc(BD_BLOCK, PW_ZERO_BYTES);
	if (!pw->zero) {
		pw->ahead = 0;
		return;
	}
	memset(pw->zero, 0, PW_ZERO_BYTES);
	st_info("data file written through %lu of %lu blocks; prewriting %lu blocks ahead",
		(unsigned long)e->alloc.ready, (unsigned long)e->nblocks, (unsigned long)pw->ahead);
	bd_prewrite_kick(e);
}

void bd_prewrite_next(struct bd_engine *e)
{
	struct bd_prewrite *pw = &e->pw;
	struct bd_alloc *a = &e->alloc;

	if (pw->busy || pw->stopped || pw->failed || !e->writable || e->failed ||
	    a->nfree < PW_MIN_FREE || !bd_fsspace_prewrite_ok(e)) {
		return;
	}
	uint64_t s;
	uint32_t n = bd_alloc_free_run(a, a->ready, PW_RUN, &s);
	/* Blocks in use between ready and s were written by data: the region takes them. */
	bd_alloc_set_ready(a, s);
	if (n == 0) {
		return; /* the whole file is in use or written */
	}
	bd_alloc_take(a, s, n);
	pw->start = s;
	pw->len = n;
	pw->busy = true;
	size_t left = (size_t)n * BD_BLOCK;
	int niov = 0;
	while (left > 0) {
		size_t l = left < PW_ZERO_BYTES ? left : PW_ZERO_BYTES;
		pw->iov[niov].iov_base = pw->zero;
		pw->iov[niov].iov_len = l;
		niov++;
		left -= l;
	}
	st_reactor_writev(e->r, &pw->io, e->fd, pw->iov, niov, s * BD_BLOCK, pw_done, e);
}

static void pw_done(void *arg, int res)
{
	struct bd_engine *e = arg;
	struct bd_prewrite *pw = &e->pw;

	pw->busy = false;
	bd_alloc_put(&e->alloc, pw->start, pw->len);
	if (res > 0) {
		/* A short write still wrote its leading blocks. */
		uint64_t done = (uint64_t)res / BD_BLOCK;
		bd_alloc_set_ready(&e->alloc, pw->start + done);
		pw->written += done;
	}
	if (res < 0 || (uint64_t)res < (uint64_t)pw->len * BD_BLOCK) {
		if (res != -ECANCELED) {
			st_warn("prewriting blocks %lu+%u of the data file: %s; new writes now "
				"allocate in unwritten file space",
				(unsigned long)pw->start, pw->len,
				res < 0 ? strerror(-res) : "short write");
		}
		pw->failed = true;
	}
	/* Writes that found no space while this held its blocks try again. */
	bd_space_retry(e);
	bd_prewrite_kick(e);
}

uint64_t bd_prewrite_held(const struct bd_engine *e)
{
	return e->pw.busy ? e->pw.len : 0;
}

void bd_engine_stop_prewriter(struct bd_engine *e)
{
	struct bd_prewrite *pw = &e->pw;

	pw->stopped = true;
	/* Not inside st_reactor_run (close, tests): turn the ring until the write is back. */
	while (pw->busy && e->r && !st_reactor_on_thread(e->r)) {
		if (st_reactor_run_once(e->r, -1) < 0) {
			break;
		}
	}
}

void bd_prewrite_close(struct bd_engine *e)
{
	if (e->pw.ahead) {
		st_info("prewriter: %lu blocks zero-filled, written region %lu of %lu blocks, %lu "
			"blocks allocated outside it",
			(unsigned long)e->pw.written, (unsigned long)e->alloc.ready,
			(unsigned long)e->nblocks, (unsigned long)e->alloc.unready);
	}
	free(e->pw.zero);
	e->pw.zero = NULL;
}
