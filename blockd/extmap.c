/*
 * One segment's extent list.
 *
 *   runs:  [lblk 0, len 3 -> pblk 900][lblk 3, len 1 -> ZERO][lblk 8, len 2 -> pblk 17]
 *   crc:   crc32c of logical block i, valid where block i is data
 *   blocks 4..7 and 10..63 are unallocated (read as zeros, reported as holes)
 *
 * A segment has only BD_SEG_BLOCKS blocks, so every change expands the list to a per-block
 * view, edits it and compacts it again: splitting and merging then cannot disagree, and the
 * cost is bounded by 64 entries.
 *
 * Encoding (little-endian): u8 version (1), u8 nruns, then per run u8 lblk, u8 len, u64 pblk
 * (all ones = zero), then the crcs of the data blocks in logical order (u32 each).
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define EXTMAP_VERSION 1

void bd_extmap_init(struct bd_extmap *m)
{
	m->nruns = 0;
}

void bd_extmap_expand(const struct bd_extmap *m, struct bd_bmap out[BD_SEG_BLOCKS])
{
	for (uint32_t i = 0; i < BD_SEG_BLOCKS; i++) {
		out[i].pblk = BD_PBLK_NONE;
		out[i].crc = 0;
	}
	for (uint32_t r = 0; r < m->nruns; r++) {
		const struct bd_run *run = &m->runs[r];
		for (uint32_t i = 0; i < run->len; i++) {
			uint32_t l = run->lblk + i;
			if (run->pblk == BD_PBLK_ZERO) {
				out[l].pblk = BD_PBLK_ZERO;
			} else {
				out[l].pblk = run->pblk + i;
				out[l].crc = m->crc[l];
			}
		}
	}
}

void bd_extmap_compact(struct bd_extmap *m, const struct bd_bmap in[BD_SEG_BLOCKS])
{
	m->nruns = 0;
	struct bd_run *cur = NULL;
	for (uint32_t l = 0; l < BD_SEG_BLOCKS; l++) {
		uint64_t p = in[l].pblk;
		if (p == BD_PBLK_NONE) {
			cur = NULL;
			continue;
		}
		if (p != BD_PBLK_ZERO) {
			m->crc[l] = in[l].crc;
		}
		bool extend = cur && cur->lblk + cur->len == l &&
			      (p == BD_PBLK_ZERO
				       ? cur->pblk == BD_PBLK_ZERO
				       : cur->pblk != BD_PBLK_ZERO && cur->pblk + cur->len == p);
		if (extend) {
			cur->len++;
			continue;
		}
		cur = &m->runs[m->nruns++];
		cur->lblk = (uint16_t)l;
		cur->len = 1;
		cur->pad = 0;
		cur->pblk = p;
	}
}

struct bd_bmap bd_extmap_lookup(const struct bd_extmap *m, uint32_t lblk)
{
	/* Binary search for the last run starting at or before lblk. */
	uint32_t lo = 0, hi = m->nruns;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (m->runs[mid].lblk <= lblk) {
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	struct bd_bmap r = {BD_PBLK_NONE, 0};
	if (lo == 0) {
		return r;
	}
	const struct bd_run *run = &m->runs[lo - 1];
	if (lblk >= (uint32_t)run->lblk + run->len) {
		return r;
	}
	if (run->pblk == BD_PBLK_ZERO) {
		r.pblk = BD_PBLK_ZERO;
	} else {
		r.pblk = run->pblk + (lblk - run->lblk);
		r.crc = m->crc[lblk];
	}
	return r;
}

uint32_t bd_extmap_set(struct bd_extmap *m, uint32_t lblk, uint32_t n, uint64_t pblk,
		       const uint32_t *crcs, uint64_t *displaced)
{
	struct bd_bmap v[BD_SEG_BLOCKS];
	uint32_t nd = 0;
	bd_extmap_expand(m, v);
	for (uint32_t i = 0; i < n && lblk + i < BD_SEG_BLOCKS; i++) {
		struct bd_bmap *b = &v[lblk + i];
		if (b->pblk != BD_PBLK_NONE && b->pblk != BD_PBLK_ZERO && displaced) {
			displaced[nd] = b->pblk;
			nd++;
		}
		if (pblk == BD_PBLK_NONE || pblk == BD_PBLK_ZERO) {
			b->pblk = pblk;
			b->crc = 0;
		} else {
			b->pblk = pblk + i;
			b->crc = crcs ? crcs[i] : 0;
		}
	}
	bd_extmap_compact(m, v);
	return nd;
}

uint64_t bd_extmap_replace1(struct bd_extmap *m, uint32_t lblk, uint64_t pblk, uint32_t crc)
{
	/* Binary search for the last run starting at or before lblk. */
	uint32_t lo = 0, hi = m->nruns;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (m->runs[mid].lblk <= lblk) {
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	if (lo == 0 || pblk >= BD_PBLK_NONE) {
		return BD_PBLK_NONE;
	}
	struct bd_run *run = &m->runs[lo - 1];
	if (run->lblk != lblk || run->len != 1 || run->pblk == BD_PBLK_ZERO) {
		return BD_PBLK_NONE;
	}
	/* compact() would merge with a neighbour that is logically and physically adjacent. */
	if (lo >= 2) {
		const struct bd_run *p = &m->runs[lo - 2];
		if (p->pblk != BD_PBLK_ZERO && p->lblk + p->len == lblk &&
		    p->pblk + p->len == pblk) {
			return BD_PBLK_NONE;
		}
	}
	if (lo < m->nruns) {
		const struct bd_run *nx = &m->runs[lo];
		if (nx->pblk != BD_PBLK_ZERO && nx->lblk == lblk + 1 && nx->pblk == pblk + 1) {
			return BD_PBLK_NONE;
		}
	}
	uint64_t old = run->pblk;
	run->pblk = pblk;
	m->crc[lblk] = crc;
	return old;
}

uint32_t bd_extmap_data_blocks(const struct bd_extmap *m)
{
	uint32_t n = 0;
	for (uint32_t r = 0; r < m->nruns; r++) {
		if (m->runs[r].pblk != BD_PBLK_ZERO) {
			n += m->runs[r].len;
		}
	}
	return n;
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) {
		v |= (uint64_t)p[i] << (8 * i);
	}
	return v;
}

size_t bd_extmap_encode(const struct bd_extmap *m, uint8_t *buf)
{
	uint8_t *p = buf;
	*p++ = EXTMAP_VERSION;
	*p++ = (uint8_t)m->nruns;
	for (uint32_t r = 0; r < m->nruns; r++) {
		*p++ = (uint8_t)m->runs[r].lblk;
		*p++ = (uint8_t)m->runs[r].len;
		put_u64(p, m->runs[r].pblk);
		p += 8;
	}
	for (uint32_t r = 0; r < m->nruns; r++) {
		if (m->runs[r].pblk == BD_PBLK_ZERO) {
			continue;
		}
		for (uint32_t i = 0; i < m->runs[r].len; i++) {
			uint32_t c = m->crc[m->runs[r].lblk + i];
			p[0] = (uint8_t)c;
			p[1] = (uint8_t)(c >> 8);
			p[2] = (uint8_t)(c >> 16);
			p[3] = (uint8_t)(c >> 24);
			p += 4;
		}
	}
	return (size_t)(p - buf);
}

size_t bd_extmap_pad(uint8_t *buf, size_t len)
{
	size_t padded = (len + BD_EXTMAP_PAD - 1) / BD_EXTMAP_PAD * BD_EXTMAP_PAD;
	memset(buf + len, 0, padded - len);
	return padded;
}

/* The encoded length the header and runs describe, or 0 when they are malformed. */
static size_t encoded_len(const uint8_t *buf, size_t len)
{
	if (len < 2 || buf[1] > BD_SEG_BLOCKS || len < 2 + (size_t)buf[1] * 10) {
		return 0;
	}
	size_t n = 2 + (size_t)buf[1] * 10;
	const uint8_t *p = buf + 2;
	for (uint32_t r = 0; r < buf[1]; r++, p += 10) {
		if (get_u64(p + 2) != BD_PBLK_ZERO) {
			n += (size_t)p[1] * 4;
		}
	}
	return n;
}

int bd_extmap_decode_padded(struct bd_extmap *m, const uint8_t *buf, size_t len)
{
	size_t n = encoded_len(buf, len);
	if (n == 0 || n > len || len - n >= BD_EXTMAP_PAD) {
		m->nruns = 0;
		return -EBADMSG;
	}
	for (size_t i = n; i < len; i++) {
		if (buf[i] != 0) {
			m->nruns = 0;
			return -EBADMSG;
		}
	}
	return bd_extmap_decode(m, buf, n);
}

/* Returns 0 or -EBADMSG. */
int bd_extmap_decode(struct bd_extmap *m, const uint8_t *buf, size_t len)
{
	m->nruns = 0;
	if (len < 2 || buf[0] != EXTMAP_VERSION || buf[1] > BD_SEG_BLOCKS) {
		return -EBADMSG;
	}
	uint32_t nruns = buf[1];
	size_t need = 2 + (size_t)nruns * 10;
	if (len < need) {
		return -EBADMSG;
	}
	const uint8_t *p = buf + 2;
	uint32_t next = 0, ndata = 0;
	for (uint32_t r = 0; r < nruns; r++) {
		struct bd_run *run = &m->runs[r];
		run->lblk = p[0];
		run->len = p[1];
		run->pad = 0;
		run->pblk = get_u64(p + 2);
		p += 10;
		if (run->len == 0 || run->lblk < next || run->lblk + run->len > BD_SEG_BLOCKS ||
		    run->pblk == BD_PBLK_NONE ||
		    (run->pblk != BD_PBLK_ZERO && run->pblk + run->len < run->pblk)) {
			return -EBADMSG;
		}
		next = run->lblk + run->len;
		if (run->pblk != BD_PBLK_ZERO) {
			ndata += run->len;
		}
	}
	if (len != need + (size_t)ndata * 4) {
		return -EBADMSG;
	}
	for (uint32_t r = 0; r < nruns; r++) {
		const struct bd_run *run = &m->runs[r];
		if (run->pblk == BD_PBLK_ZERO) {
			continue;
		}
		for (uint32_t i = 0; i < run->len; i++) {
			m->crc[run->lblk + i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 |
						(uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
			p += 4;
		}
	}
	m->nruns = nruns;
	return 0;
}
