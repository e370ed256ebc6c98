/*
 * strata-blockd engine: the read phase, for READ and for the compare half of
 * COMPARE_AND_WRITE. Blocks are mapped through the resolved lists, physically contiguous runs
 * are read straight into the caller's buffer, and every data block's crc is checked.
 */
#include <errno.h>
#include <string.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "engine_int.h"
#include "internal.h"
#include "iobuf.h"

/* ------------------------------------------------------------------------------------------ */
/* Read phase (READ, and the compare half of COMPARE_AND_WRITE). */

/* Live ops above which a READ's checksums go to the verifier thread (verify.c). */
#define VERIFY_OFFLOAD_MIN_OPS 4

/* Map every block of the request; returns 0 or -errno. */
static int map_blocks(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	uint64_t lb0 = op->q.offset >> BD_BLOCK_SHIFT;
	const struct bd_extmap *m = NULL;
	uint32_t cur_seg = UINT32_MAX;
	for (uint32_t i = 0; i < op->nblocks; i++) {
		uint64_t lb = lb0 + i;
		struct bd_mkey k;
		bd_key_of(&op->q, lb, &k);
		if (k.seg != cur_seg) {
			int rc = bd_resolve(e, &k, &m);
			if (rc) {
				return rc;
			}
			cur_seg = k.seg;
		}
		if (m) {
			struct bd_bmap b =
				bd_extmap_lookup(m, (uint32_t)(lb & (BD_SEG_BLOCKS - 1)));
			op->pblk[i] = b.pblk;
			op->crc[i] = b.crc;
			if (b.pblk < BD_PBLK_NONE && b.pblk >= e->nblocks) {
				return -EIO;
			}
		} else {
			op->pblk[i] = BD_PBLK_NONE;
		}
	}
	return 0;
}

static void read_verify(struct bd_op *op, uint8_t *dst)
{
	struct bd_engine *e = op->e;
	for (uint32_t i = 0; i < op->nblocks; i++) {
		if (op->pblk[i] >= BD_PBLK_NONE) {
			continue;
		}
		uint32_t c = st_crc32c(0, dst + (size_t)i * BD_BLOCK, BD_BLOCK);
		if (c != op->crc[i]) {
			e->checksum_errors++;
			st_error("checksum mismatch: family %lu layer %lu object %lu block %lu "
				 "(pblk %lu): stored %08x, read %08x",
				 (unsigned long)op->q.family, (unsigned long)op->q.layer,
				 (unsigned long)op->q.object,
				 (unsigned long)((op->q.offset >> BD_BLOCK_SHIFT) + i),
				 (unsigned long)op->pblk[i], op->crc[i], c);
			/* Never hand out the bad data. */
			memset(dst + (size_t)i * BD_BLOCK, 0, BD_BLOCK);
			op->err = -EILSEQ;
		}
	}
}

/* On the reactor thread, after the verifier thread checked a READ (verify.c). */
static void read_verified(void *arg)
{
	struct bd_op *op = arg;

	if (!op->verified_ok) {
		read_verify(op, op->buf); /* count, log and zero the bad blocks */
	}
	bd_defrag_consider(op);
	bd_op_complete(op);
}

static bool has_data(const struct bd_op *op)
{
	for (uint32_t i = 0; i < op->nblocks; i++) {
		if (op->pblk[i] < BD_PBLK_NONE) {
			return true;
		}
	}
	return false;
}

void bd_read_done(struct bd_op *op)
{
	uint8_t *dst = op->kind == OP_CAW ? op->cawbuf : op->buf;
	bd_reads_leave(op->e, op);
	/* A plain READ's check can run off the reactor thread; a compare-and-write's stays here,
	 * under its object lock. Only while other ops are live: the hand-off costs two thread
	 * hops (through libstrata: 7 us from the data's arrival to the check's result at QD1,
	 * against a 25 us disk read, and 4k randread QD1 +15% checked here; 45-49 us at QD32,
	 * against 1.1 us to check here, yet checking here at QD32 measured even through
	 * libstrata and -17% through strata-nbd, where blockd's second runnable thread seems
	 * worth more than the wait; docs/ARCHITECTURE.md, "Session 7"). */
	if (op->err == 0 && op->kind == OP_READ && op->e->verifier != NULL &&
	    op->e->nlive_ops > VERIFY_OFFLOAD_MIN_OPS && has_data(op) &&
	    bd_verifier_submit(op->e->verifier, op)) {
		op->e->verify_offloads++;
		return;
	}
	if (op->err == 0) {
		read_verify(op, dst);
	}
	if (op->err || op->kind == OP_READ) {
		bd_defrag_consider(op); /* only a READ that verified */
		bd_op_complete(op);
		return;
	}
	/* Compare-and-write: compare under the exclusive lock, then write. */
	for (size_t i = 0; i < op->q.length; i++) {
		if (dst[i] != op->cmp[i]) {
			*op->miscompare = i;
			bd_op_fail(op, BD_ERR_MISCOMPARE);
			return;
		}
	}
	bd_write_phase(op);
}

int bd_engine_start_verifier(struct bd_engine *e)
{
	if (e->verifier != NULL) {
		return 0;
	}
	return bd_verifier_start(e->r, read_verified, &e->verifier);
}

void bd_engine_stop_verifier(struct bd_engine *e)
{
	bd_verifier_stop(e->verifier);
	e->verifier = NULL;
}

void bd_read_phase(struct bd_op *op)
{
	struct bd_engine *e = op->e;
	uint8_t *dst = op->kind == OP_CAW ? op->cawbuf : op->buf;
	int rc = map_blocks(op);
	if (rc) {
		bd_op_fail(op, rc);
		return;
	}
	op->phase = PH_READ;
	op->pending = 1; /* held until every sub is queued */
	int nsub = 0;
	for (uint32_t i = 0; i < op->nblocks;) {
		uint64_t p = op->pblk[i];
		if (p >= BD_PBLK_NONE) {
			memset(dst + (size_t)i * BD_BLOCK, 0, BD_BLOCK);
			i++;
			continue;
		}
		uint32_t j = i + 1;
		while (j < op->nblocks && op->pblk[j] == p + (j - i)) {
			j++;
		}
		struct op_sub *s = &op->subs[nsub++];
		s->op = op;
		s->iov.iov_base = dst + (size_t)i * BD_BLOCK;
		s->iov.iov_len = (size_t)(j - i) * BD_BLOCK;
		op->pending++;
		int bi = e->fixed_bufs ? bd_iobuf_index(s->iov.iov_base, s->iov.iov_len) : -1;
		if (bi >= 0) {
			e->fixed_reads++;
			st_reactor_read_fixed(e->r, &s->io, e->fd, s->iov.iov_base, s->iov.iov_len,
					      p * BD_BLOCK, bi, bd_op_io_done, s);
		} else {
			st_reactor_readv(e->r, &s->io, e->fd, &s->iov, 1, p * BD_BLOCK,
					 bd_op_io_done, s);
		}
		i = j;
	}
	if (nsub > 0) {
		bd_reads_join(e, op);
	}
	if (--op->pending == 0) {
		bd_read_done(op);
	}
}

void bd_read(struct bd_engine *e, const struct bd_req *q, void *buf, bd_done_cb cb, void *cb_arg)
{
	int rc = bd_validate(e, q, true);
	if (rc == 0 && e->r == NULL) {
		rc = -ESHUTDOWN; /* shutting down, the ring gone */
	}
	if (rc) {
		cb(cb_arg, rc);
		return;
	}
	struct bd_op *op = bd_op_new(e, OP_READ, q->length >> BD_BLOCK_SHIFT);
	if (!op) {
		cb(cb_arg, -ENOMEM);
		return;
	}
	op->q = *q;
	op->q.ancestry = NULL;
	op->q.nancestry = 0;
	op->buf = buf;
	op->cb = cb;
	op->cb_arg = cb_arg;
	bd_read_phase(op);
}
