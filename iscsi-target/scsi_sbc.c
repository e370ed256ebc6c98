/*
 * SCSI block commands (SBC-3) against libstrata. Each command is a small async chain:
 * issue libstrata call(s) with isc_task_backend_cb, which hops back to the reactor and runs
 * t->cont once every op of the step has completed (t->pending reaches 0). The first error
 * of a step wins (t->err) and is mapped to sense by isc_errno_to_sense().
 *
 * Blocks are 4096 bytes, so every libstrata request is 4096-aligned by construction.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define WS_CHUNK           (1024 * 1024) /* WRITE SAME of non-zero data writes this much per step */
#define LBA_STATUS_MAX_EXT 64

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

/* A libstrata call refused up front (rc < 0) completes the task right here. */
static void issued(struct isc_task *t, int rc)
{
	if (rc < 0) {
		t->pending--;
		t->refs--; /* the reference isc_task_backend_start took; the list still holds one */
		if (!t->err)
			t->err = rc;
		if (t->pending == 0) {
			t->cont = NULL;
			finish(t);
		}
	}
}

static void read_done(struct isc_task *t)
{
	if (!t->err)
		t->in_len = t->c.xfer_len;
	finish(t);
}

static void sbc_read(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	size_t len = t->c.xfer_len;

	if (len == 0) {
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
	if (isc_task_buf(t, len)) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	t->cont = read_done;
	isc_task_backend_start(t);
	issued(t, strata_aio_read(lu->vol, byte_off(t, t->c.lba), len, t->buf, isc_task_backend_cb,
				  t));
}

static void sbc_write(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	size_t len = (size_t)t->c.nblocks * lu->geom.block_size;

	if (len == 0) {
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
	t->cont = finish;
	isc_task_backend_start(t);
	issued(t, strata_aio_write(lu->vol, byte_off(t, t->c.lba), len, t->buf,
				   t->c.fua ? STRATA_WRITE_FUA : 0, isc_task_backend_cb, t));
}

/* VERIFY with BYTCHK: read the range and compare with the Data-Out buffer. */
static void verify_done(struct isc_task *t)
{
	uint32_t bs = isc_task_lu(t)->geom.block_size;
	size_t len = (size_t)t->c.nblocks * bs;

	if (t->err) {
		finish(t);
		return;
	}
	for (size_t i = 0; i < len; i++) {
		uint8_t want = t->c.bytchk == 3 ? t->buf[i % bs] : t->buf[i];
		if (t->aux[i] != want) {
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
	struct isc_lu *lu = isc_task_lu(t);
	size_t len = (size_t)t->c.nblocks * lu->geom.block_size;

	if (t->c.bytchk == 0 || len == 0) {
		/* Every read is checksum-verified by blockd; nothing more to prove. */
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
	t->aux = malloc(len);
	if (!t->aux) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	t->cont = verify_done;
	isc_task_backend_start(t);
	issued(t, strata_aio_read(lu->vol, byte_off(t, t->c.lba), len, t->aux, isc_task_backend_cb,
				  t));
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

/* t->next counts blocks written so far. */
static void ws_step(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	uint32_t bs = lu->geom.block_size;
	uint64_t left = t->c.nblocks - t->next;
	uint64_t chunk = WS_CHUNK / bs;
	size_t n;

	if (left == 0) {
		finish(t);
		return;
	}
	if (chunk > left)
		chunk = left;
	n = (size_t)chunk * bs;
	t->cont = ws_next;
	isc_task_backend_start(t);
	uint64_t off = byte_off(t, t->c.lba + t->next);
	t->next += chunk;
	issued(t, strata_aio_write(lu->vol, off, n, t->aux, 0, isc_task_backend_cb, t));
}

static void sbc_write_same(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	uint32_t bs = lu->geom.block_size;
	size_t len = (size_t)t->c.nblocks * bs;
	uint64_t chunk;

	if (t->c.ndob || all_zero(t->buf, bs)) {
		/* Zeros: let libstrata deallocate when UNMAP is set; LBPRZ holds either way. */
		t->cont = finish;
		isc_task_backend_start(t);
		issued(t, strata_aio_write_zeroes(lu->vol, byte_off(t, t->c.lba), len,
						  t->c.unmap ? STRATA_ZERO_MAY_TRIM : 0,
						  isc_task_backend_cb, t));
		return;
	}
	chunk = WS_CHUNK / bs;
	if (chunk > t->c.nblocks)
		chunk = t->c.nblocks;
	t->aux = malloc((size_t)chunk * bs);
	if (!t->aux) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	for (uint64_t i = 0; i < chunk; i++)
		memcpy(t->aux + i * bs, t->buf, bs);
	t->next = 0;
	ws_step(t);
}

/* ---- UNMAP ---- */

static void sbc_unmap(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	const struct isc_geom *g = &lu->geom;
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
	t->cont = finish;
	/* Hold one reference for the loop so an early completion cannot finish us. */
	isc_task_backend_start(t);
	for (uint32_t i = 0; i < ndesc; i++) {
		uint64_t lba = isc_get64(p + 8 + 16 * i);
		uint32_t n = isc_get32(p + 8 + 16 * i + 8);
		if (n == 0)
			continue;
		isc_task_backend_start(t);
		issued(t, strata_aio_write_zeroes(lu->vol, lba * g->block_size,
						  (size_t)n * g->block_size, STRATA_ZERO_MAY_TRIM,
						  isc_task_backend_cb, t));
	}
	isc_task_backend_cb(t, 0);
}

/* ---- GET LBA STATUS ---- */

static void lba_status_done(struct isc_task *t);

/* t->next has the extent count from libstrata; t->step is what lba_status_done walks. */
static void lba_status_fix(struct isc_task *t)
{
	t->step = (uint32_t)t->next;
	lba_status_done(t);
}

static void lba_status_done(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	uint32_t bs = lu->geom.block_size;
	size_t nd = 0, off = 8;
	uint8_t *d;

	if (t->err) {
		finish(t);
		return;
	}
	if (isc_task_buf(t, 8 + 16 * (t->step + 1))) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	d = t->buf;
	for (size_t i = 0; i < t->step; i++) {
		const struct strata_extent *e = &t->ext[i];
		uint8_t st = (e->flags & STRATA_EXTENT_HOLE) ? 1 : 0;
		uint64_t lba = e->offset / bs, nb = (e->length + bs - 1) / bs;
		if (nd && d[off - 16 + 12] == st &&
		    isc_get64(d + off - 16) + isc_get32(d + off - 16 + 8) == lba &&
		    isc_get32(d + off - 16 + 8) + nb <= 0xffffffffull) {
			isc_put32(d + off - 16 + 8, (uint32_t)(isc_get32(d + off - 16 + 8) + nb));
			continue;
		}
		if (nb > 0xffffffffull)
			nb = 0xffffffffull;
		isc_put64(d + off, lba);
		isc_put32(d + off + 8, (uint32_t)nb);
		d[off + 12] = st;
		off += 16;
		nd++;
	}
	isc_put32(d, (uint32_t)(off - 4));
	t->in_len = (uint32_t)off < t->c.xfer_len ? (uint32_t)off : t->c.xfer_len;
	finish(t);
}

static void sbc_get_lba_status(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);
	uint32_t bs = lu->geom.block_size;
	uint64_t left = (lu->geom.nblocks - t->c.lba) * bs;
	size_t len = left > (1ull << 30) ? (size_t)1 << 30 : (size_t)left;

	if (t->c.xfer_len < 24) {
		/* Too small for one descriptor: header only. */
		if (isc_task_buf(t, 8)) {
			isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
			return;
		}
		isc_put32(t->buf, 4);
		t->in_len = t->c.xfer_len < 8 ? t->c.xfer_len : 8;
		t->status = ISC_STATUS_GOOD;
		isc_task_complete(t);
		return;
	}
	t->ext = calloc(LBA_STATUS_MAX_EXT, sizeof(*t->ext));
	if (!t->ext) {
		isc_task_fail(t, ISC_SENSE_INTERNAL_ERROR);
		return;
	}
	t->cont = lba_status_fix;
	isc_task_backend_start(t);
	issued(t, strata_aio_block_status(lu->vol, t->c.lba * bs, len, t->ext, LBA_STATUS_MAX_EXT,
					  &t->next, isc_task_backend_cb, t));
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
	size_t len = (size_t)t->c.nblocks * lu->geom.block_size;

	if (len == 0) {
		isc_task_status(t, ISC_STATUS_GOOD);
		return;
	}
	t->cont = caw_done;
	isc_task_backend_start(t);
	issued(t, strata_aio_compare_and_write(lu->vol, byte_off(t, t->c.lba), len, t->buf,
					       t->buf + len, &t->miscompare_off,
					       isc_task_backend_cb, t));
}

static void sbc_sync_cache(struct isc_task *t)
{
	struct isc_lu *lu = isc_task_lu(t);

	t->cont = finish;
	isc_task_backend_start(t);
	issued(t, strata_aio_flush(lu->vol, isc_task_backend_cb, t));
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
