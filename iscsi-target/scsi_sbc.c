/*
 * SCSI block commands (SBC-3) against libstrata. Each command is a small async chain:
 * issue libstrata call(s) with isc_task_backend_cb, which hops back to the reactor and runs
 * t->cont once every op of the step has completed (t->pending reaches 0). The first error
 * of a step wins (t->err) and is mapped to sense by isc_errno_to_sense().
 *
 * Logical blocks may be 512 bytes (the default, what BIOS/iPXE boot code and qemu's iscsi
 * driver handle best) while libstrata works in 4096-byte units. So every medium access goes
 * through two byte-range helpers:
 *
 *   read_range   reads the 4 KiB-aligned span around [off, off+len) into a bounce buffer
 *   write_range  writes the aligned interior directly and each partial 4 KiB block at the
 *                edges by read-modify-write, committed with strata_aio_compare_and_write
 *                against the block as read, retried on a miscompare
 *
 * Committing the merge with compare-and-write is what keeps two concurrent sub-block writes
 * to one 4 KiB block (from this gateway or another) from losing either: the loser's
 * compare fails and it re-reads. COMPARE AND WRITE of 512-byte blocks uses the same
 * machinery with an extra compare of the initiator's verify data.
 *
 * The RMW chain runs on libstrata's I/O thread (callbacks may issue further async calls); it
 * only touches its own struct rmw and reads the task's immutable buffers, then reports to
 * the task with isc_task_backend_cb like any other op.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SBLK               4096u           /* libstrata's alignment */
#define WS_CHUNK           (1024u * 1024u) /* WRITE SAME of a pattern: bytes per step */
#define RMW_TRIES          64
#define LBA_STATUS_MAX_EXT 64

static uint64_t align_down(uint64_t x)
{
	return x & ~(uint64_t)(SBLK - 1);
}

static uint64_t align_up(uint64_t x)
{
	return (x + SBLK - 1) & ~(uint64_t)(SBLK - 1);
}

static uint64_t byte_off(struct isc_task *t, uint64_t lba)
{
	return lba * isc_task_lu(t)->geom.block_size;
}

/* Finish with GOOD, or the sense for t->err. */
static void finish(struct isc_task *t)
{
	if (t->err) {
		isc_task_fail(t, isc_errno_to_sense(t->err));
		return;
	}
	t->status = ISC_STATUS_GOOD;
	isc_task_complete(t);
}

/*
 * Account one op and report a libstrata call refused up front (rc < 0) as its completion.
 * Going through the post keeps every completion on the same path, so a refusal in the
 * middle of a multi-op step cannot finish the task under the loop that issues the rest.
 */
static void issued(struct isc_task *t, int rc)
{
	if (rc < 0)
		isc_task_backend_cb(t, rc);
}

/* ---- read-modify-write of one partial 4 KiB block ---- */

struct rmw {
	struct isc_task *t;
	strata_volume *vol;
	uint64_t blk;       /* aligned byte offset of the block */
	uint32_t at, len;   /* the bytes to replace within it */
	const uint8_t *src; /* NULL: zeros */
	const uint8_t *cmp; /* COMPARE AND WRITE: these bytes must match first */
	int tries;
	uint8_t old[SBLK];
	uint8_t nw[SBLK];
};

static void rmw_read(struct rmw *m);

static void rmw_finish(struct rmw *m, int err)
{
	struct isc_task *t = m->t;

	free(m);
	isc_task_backend_cb(t, err);
}

static void rmw_caw_done(void *arg, int err)
{
	struct rmw *m = arg;

	if (err == -EILSEQ && ++m->tries < RMW_TRIES) {
		rmw_read(m); /* someone wrote the block since we read it: merge again */
		return;
	}
	rmw_finish(m, err);
}

static void rmw_read_done(void *arg, int err)
{
	struct rmw *m = arg;
	int rc;

	if (err) {
		rmw_finish(m, err);
		return;
	}
	if (m->cmp && memcmp(m->old + m->at, m->cmp, m->len)) {
		uint32_t i = 0;
		while (m->old[m->at + i] == m->cmp[i])
			i++;
		m->t->miscompare_off = i;
		rmw_finish(m, -EILSEQ);
		return;
	}
	memcpy(m->nw, m->old, SBLK);
	if (m->src)
		memcpy(m->nw + m->at, m->src, m->len);
	else
		memset(m->nw + m->at, 0, m->len);
	rc = strata_aio_compare_and_write(m->vol, m->blk, SBLK, m->old, m->nw, NULL, rmw_caw_done,
					  m);
	if (rc < 0)
		rmw_finish(m, rc);
}

static void rmw_read(struct rmw *m)
{
	int rc = strata_aio_read(m->vol, m->blk, SBLK, m->old, rmw_read_done, m);

	if (rc < 0)
		rmw_finish(m, rc);
}

/* Start one RMW op on the task (reactor thread). */
static void rmw_start(struct isc_task *t, uint64_t blk, uint32_t at, uint32_t len,
		      const uint8_t *src, const uint8_t *cmp)
{
	struct rmw *m = malloc(sizeof(*m));

	isc_task_backend_start(t);
	if (!m) {
		isc_task_backend_cb(t, -ENOMEM);
		return;
	}
	m->t = t;
	m->vol = isc_task_lu(t)->vol;
	m->blk = blk;
	m->at = at;
	m->len = len;
	m->src = src;
	m->cmp = cmp;
	m->tries = 0;
	t->step = 1; /* an RMW happened: FUA needs a flush afterwards */
	rmw_read(m);
}

/*
 * Write [off, off+len) from src (NULL: zeros, zflags for strata_aio_write_zeroes), at any
 * 512-byte alignment. Adds its ops to the task's current step.
 */
static void write_range(struct isc_task *t, uint64_t off, uint64_t len, const uint8_t *src,
			unsigned wflags, unsigned zflags)
{
	strata_volume *vol = isc_task_lu(t)->vol;
	uint64_t end = off + len, a = align_up(off), b = align_down(end);

	if (len == 0)
		return;
	if (a > b) { /* inside one block */
		uint64_t blk = align_down(off);
		rmw_start(t, blk, (uint32_t)(off - blk), (uint32_t)len, src, NULL);
		return;
	}
	if (off < a)
		rmw_start(t, a - SBLK, (uint32_t)(off - (a - SBLK)), (uint32_t)(a - off), src,
			  NULL);
	if (a < b) {
		isc_task_backend_start(t);
		if (src)
			issued(t, strata_aio_write(vol, a, (size_t)(b - a), src + (a - off), wflags,
						   isc_task_backend_cb, t));
		else
			issued(t, strata_aio_write_zeroes(vol, a, (size_t)(b - a), zflags,
							  isc_task_backend_cb, t));
	}
	if (b < end)
		rmw_start(t, b, 0, (uint32_t)(end - b), src ? src + (b - off) : NULL, NULL);
}

/* Read the aligned span around [off, off+len) into t->aux; the data is at t->aux + t->next. */
static int read_range(struct isc_task *t, uint64_t off, uint64_t len)
{
	uint64_t a = align_down(off), b = align_up(off + len);

	free(t->aux);
	t->aux = malloc((size_t)(b - a));
	if (!t->aux)
		return -ENOMEM;
	t->next = (size_t)(off - a);
	isc_task_backend_start(t);
	issued(t, strata_aio_read(isc_task_lu(t)->vol, a, (size_t)(b - a), t->aux,
				  isc_task_backend_cb, t));
	return 0;
}

/* ---- READ, WRITE, VERIFY ---- */

static void read_done(struct isc_task *t)
{
	if (!t->err) {
		if (isc_task_buf(t, t->c.xfer_len)) {
			isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
			return;
		}
		memcpy(t->buf, t->aux + t->next, t->c.xfer_len);
		t->in_len = t->c.xfer_len;
	}
	finish(t);
}

static void read_direct_done(struct isc_task *t)
{
	if (!t->err)
		t->in_len = t->c.xfer_len;
	finish(t);
}

static void sbc_read(struct isc_task *t)
{
	uint64_t off = byte_off(t, t->c.lba), len = t->c.xfer_len;

	if (len == 0) {
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
	if (!(off % SBLK) && !(len % SBLK)) {
		if (isc_task_buf(t, len)) {
			isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
			return;
		}
		t->cont = read_direct_done;
		isc_task_backend_start(t);
		issued(t, strata_aio_read(isc_task_lu(t)->vol, off, (size_t)len, t->buf,
					  isc_task_backend_cb, t));
		return;
	}
	t->cont = read_done;
	if (read_range(t, off, len))
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
}

static void write_done(struct isc_task *t)
{
	if (!t->err && t->c.fua && t->step) {
		/* The RMW edges went through compare-and-write, which has no FUA flag. */
		t->step = 0;
		t->cont = finish;
		isc_task_backend_start(t);
		issued(t, strata_aio_flush(isc_task_lu(t)->vol, isc_task_backend_cb, t));
		return;
	}
	finish(t);
}

static void sbc_write(struct isc_task *t)
{
	uint64_t len = (uint64_t)t->c.nblocks * isc_task_lu(t)->geom.block_size;

	if (len == 0) {
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
	t->cont = write_done;
	t->step = 0;
	isc_task_backend_start(t); /* hold the step open while issuing */
	write_range(t, byte_off(t, t->c.lba), len, t->buf, t->c.fua ? STRATA_WRITE_FUA : 0, 0);
	isc_task_backend_cb(t, 0);
}

/* VERIFY with BYTCHK: read the range and compare with the Data-Out buffer. */
static void verify_done(struct isc_task *t)
{
	uint32_t bs = isc_task_lu(t)->geom.block_size;
	size_t len = (size_t)t->c.nblocks * bs;
	const uint8_t *got = t->aux + t->next;

	if (t->err) {
		finish(t);
		return;
	}
	for (size_t i = 0; i < len; i++) {
		uint8_t want = t->c.bytchk == 3 ? t->buf[i % bs] : t->buf[i];
		if (got[i] != want) {
			t->sense_info_valid = true;
			t->sense_info = i;
			isc_task_fail(t, ISC_SENSE_MISCOMPARE_VERIFY);
			return;
		}
	}
	finish(t);
}

static void sbc_verify(struct isc_task *t)
{
	uint64_t len = (uint64_t)t->c.nblocks * isc_task_lu(t)->geom.block_size;

	if (t->c.bytchk == 0 || len == 0) {
		/* Every read is checksum-verified by blockd; nothing more to prove. */
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
	t->cont = verify_done;
	if (read_range(t, byte_off(t, t->c.lba), len))
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
}

/* ---- WRITE SAME ---- */

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void ws_step(struct isc_task *t);

static void ws_next(struct isc_task *t)
{
	if (t->err) {
		finish(t);
		return;
	}
	ws_step(t);
}

/*
 * A pattern WRITE SAME goes out in chunks ending on WS_CHUNK boundaries of the volume, so
 * every chunk but the first starts aligned. t->next is the byte offset written up to.
 */
static void ws_step(struct isc_task *t)
{
	uint32_t bs = isc_task_lu(t)->geom.block_size;
	uint64_t end = byte_off(t, t->c.lba + t->c.nblocks), off = t->next, stop;

	if (off >= end) {
		finish(t);
		return;
	}
	stop = (off / WS_CHUNK + 1) * WS_CHUNK;
	if (stop > end)
		stop = end;
	t->next = (size_t)stop;
	t->cont = ws_next;
	(void)bs;
	isc_task_backend_start(t);
	write_range(t, off, stop - off, t->aux, 0, 0);
	isc_task_backend_cb(t, 0);
}

static void sbc_write_same(struct isc_task *t)
{
	uint32_t bs = isc_task_lu(t)->geom.block_size;
	uint64_t off = byte_off(t, t->c.lba), len = (uint64_t)t->c.nblocks * bs;

	if (t->c.ndob || all_zero(t->buf, bs)) {
		/* Zeros: let libstrata deallocate when UNMAP is set; LBPRZ holds either way. */
		t->cont = finish;
		isc_task_backend_start(t);
		write_range(t, off, len, NULL, 0, t->c.unmap ? STRATA_ZERO_MAY_TRIM : 0);
		isc_task_backend_cb(t, 0);
		return;
	}
	/* The pattern buffer starts at phase 0 of the block; chunk starts are multiples of bs
	 * away from off, so one buffer serves every chunk. */
	t->aux = malloc(WS_CHUNK);
	if (!t->aux) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	for (uint32_t i = 0; i < WS_CHUNK / bs; i++)
		memcpy(t->aux + (size_t)i * bs, t->buf, bs);
	t->next = (size_t)off;
	ws_step(t);
}

/* ---- UNMAP ---- */

static void sbc_unmap(struct isc_task *t)
{
	const struct isc_geom *g = &isc_task_lu(t)->geom;
	uint32_t plen = t->c.xfer_len;
	const uint8_t *p = t->buf;
	uint32_t bdl, ndesc;

	if (plen == 0) {
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
	if (plen < 8) {
		isc_task_fail(t, ISC_SENSE_PARAM_LIST_LENGTH);
		return;
	}
	bdl = isc_get16(p + 2);
	if (bdl > plen - 8)
		bdl = (plen - 8) & ~15u;
	ndesc = bdl / 16;
	if (ndesc > 256) {
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_PARAM);
		return;
	}
	/* Validate every descriptor before touching anything: all or nothing. */
	for (uint32_t i = 0; i < ndesc; i++) {
		uint64_t lba = isc_get64(p + 8 + 16 * i);
		uint32_t n = isc_get32(p + 8 + 16 * i + 8);
		if (lba > g->nblocks || n > g->nblocks - lba) {
			isc_task_fail(t, ISC_SENSE_LBA_OUT_OF_RANGE);
			return;
		}
		if (n > g->max_unmap_blocks) {
			isc_task_fail(t, ISC_SENSE_INVALID_FIELD_PARAM);
			return;
		}
	}
	/* Unmapped blocks must read as zeros (LBPRZ): zero-with-trim gives exactly that. */
	t->cont = finish;
	isc_task_backend_start(t);
	for (uint32_t i = 0; i < ndesc; i++) {
		uint64_t lba = isc_get64(p + 8 + 16 * i);
		uint32_t n = isc_get32(p + 8 + 16 * i + 8);
		write_range(t, lba * g->block_size, (uint64_t)n * g->block_size, NULL, 0,
			    STRATA_ZERO_MAY_TRIM);
	}
	isc_task_backend_cb(t, 0);
}

/* ---- GET LBA STATUS ---- */

static void lba_status_done(struct isc_task *t)
{
	uint32_t bs = isc_task_lu(t)->geom.block_size;
	size_t off = 8, n = t->next;
	uint8_t *d;

	if (t->err) {
		finish(t);
		return;
	}
	if (isc_task_buf(t, 8 + 16 * (n + 1))) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	d = t->buf;
	for (size_t i = 0; i < n; i++) {
		const struct strata_extent *e = &t->ext[i];
		uint8_t st = (e->flags & STRATA_EXTENT_HOLE) ? 1 : 0;
		uint64_t lba = e->offset / bs, nb = (e->length + bs - 1) / bs;
		uint8_t *prev = d + off - 16;
		if (off > 8 && prev[12] == st && isc_get64(prev) + isc_get32(prev + 8) == lba &&
		    isc_get32(prev + 8) + nb <= 0xffffffffull) {
			isc_put32(prev + 8, (uint32_t)(isc_get32(prev + 8) + nb));
			continue;
		}
		if (nb > 0xffffffffull)
			nb = 0xffffffffull;
		isc_put64(d + off, lba);
		isc_put32(d + off + 8, (uint32_t)nb);
		d[off + 12] = st;
		off += 16;
	}
	isc_put32(d, (uint32_t)(off - 4));
	t->in_len = (uint32_t)off < t->c.xfer_len ? (uint32_t)off : t->c.xfer_len;
	finish(t);
}

static void sbc_get_lba_status(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	uint32_t bs = lu->geom.block_size;
	/* Status is tracked per 4 KiB physical block. A start inside one reports from the next
	 * physical boundary, which is what libiscsi's GetLBAStatus tests expect. */
	uint64_t start = align_up(t->c.lba * bs);
	uint64_t total = lu->geom.nblocks * bs;
	uint64_t left = start < total ? total - start : 0;
	size_t len = left > (1ull << 30) ? (size_t)1 << 30 : (size_t)left;

	t->ext = calloc(LBA_STATUS_MAX_EXT, sizeof(*t->ext));
	if (!t->ext) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	if (left == 0) {
		t->next = 0;
		lba_status_done(t);
		return;
	}
	t->cont = lba_status_done;
	isc_task_backend_start(t);
	issued(t, strata_aio_block_status(lu->vol, start, len, t->ext, LBA_STATUS_MAX_EXT, &t->next,
					  isc_task_backend_cb, t));
}

/* ---- COMPARE AND WRITE ---- */

static void caw_done(struct isc_task *t)
{
	if (t->err == -EILSEQ) {
		t->sense_info_valid = true;
		t->sense_info = t->miscompare_off;
		isc_task_fail(t, ISC_SENSE_MISCOMPARE_VERIFY);
		return;
	}
	finish(t);
}

static void sbc_compare_and_write(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	uint64_t off = byte_off(t, t->c.lba);
	size_t len = (size_t)t->c.nblocks * lu->geom.block_size;

	if (len == 0) {
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
	t->cont = caw_done;
	if (!(off % SBLK) && !(len % SBLK)) {
		isc_task_backend_start(t);
		issued(t, strata_aio_compare_and_write(lu->vol, off, len, t->buf, t->buf + len,
						       &t->miscompare_off, isc_task_backend_cb, t));
		return;
	}
	if (align_down(off) != align_down(off + len - 1)) {
		/* max_caw_blocks keeps 512-byte CAW inside one 4 KiB block */
		isc_task_fail(t, ISC_SENSE_INVALID_FIELD_CDB);
		return;
	}
	rmw_start(t, align_down(off), (uint32_t)(off - align_down(off)), (uint32_t)len,
		  t->buf + len, t->buf);
}

static void sbc_sync_cache(struct isc_task *t)
{
	t->cont = finish;
	isc_task_backend_start(t);
	issued(t, strata_aio_flush(isc_task_lu(t)->vol, isc_task_backend_cb, t));
}

void isc_sbc_exec(struct isc_task *t)
{
	switch (t->c.opcode) {
	case 0x08:
	case 0x28:
	case 0xa8:
	case 0x88:
		sbc_read(t);
		return;
	case 0x0a:
	case 0x2a:
	case 0xaa:
	case 0x8a:
	case 0x2e:
	case 0xae:
	case 0x8e:
		sbc_write(t);
		return;
	case 0x2f:
	case 0xaf:
	case 0x8f:
		sbc_verify(t);
		return;
	case 0x41:
	case 0x93:
		sbc_write_same(t);
		return;
	case 0x42:
		sbc_unmap(t);
		return;
	case 0x9e:
		if (t->c.sa == 0x12) {
			sbc_get_lba_status(t);
			return;
		}
		break;
	case 0x89:
		sbc_compare_and_write(t);
		return;
	case 0x35:
	case 0x91:
		sbc_sync_cache(t);
		return;
	default:
		break;
	}
	isc_task_fail(t, ISC_SENSE_INVALID_OPCODE);
}
