#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "internal.h"

static const uint32_t crcs[BD_SEG_BLOCKS] = {
	[0] = 0x10, [1] = 0x11, [2] = 0x12, [3] = 0x13, [4] = 0x14,
	[5] = 0x15, [6] = 0x16, [7] = 0x17, [8] = 0x18, [9] = 0x19,
};

Test(extmap, adjacent_contiguous_writes_merge)
{
	struct bd_extmap m;
	bd_extmap_init(&m);
	cr_assert_eq(bd_extmap_set(&m, 0, 4, 100, crcs, NULL), 0);
	cr_assert_eq(bd_extmap_set(&m, 4, 4, 104, crcs + 4, NULL), 0);
	cr_assert_eq(m.nruns, 1, "physically contiguous neighbours merge");
	cr_assert_eq(m.runs[0].len, 8);
	/* Logically adjacent but physically apart: two runs. */
	bd_extmap_set(&m, 8, 2, 500, crcs + 8, NULL);
	cr_assert_eq(m.nruns, 2);
	struct bd_bmap b = bd_extmap_lookup(&m, 9);
	cr_assert_eq(b.pblk, 501);
	cr_assert_eq(b.crc, 0x19);
	cr_assert_eq(bd_extmap_data_blocks(&m), 10);
}

Test(extmap, overwrite_middle_splits)
{
	struct bd_extmap m;
	uint64_t displaced[BD_SEG_BLOCKS];
	bd_extmap_init(&m);
	bd_extmap_set(&m, 0, 10, 100, crcs, NULL);
	uint32_t nd = bd_extmap_set(&m, 3, 2, 900, crcs, displaced);
	cr_assert_eq(nd, 2);
	cr_assert_eq(displaced[0], 103);
	cr_assert_eq(displaced[1], 104);
	cr_assert_eq(m.nruns, 3);
	cr_assert_eq(m.runs[0].lblk, 0);
	cr_assert_eq(m.runs[0].len, 3);
	cr_assert_eq(m.runs[1].pblk, 900);
	cr_assert_eq(m.runs[2].lblk, 5);
	cr_assert_eq(m.runs[2].pblk, 105);
	cr_assert_eq(bd_extmap_lookup(&m, 6).crc, 0x16, "crcs follow their blocks");
	/* Putting the original blocks back merges again. */
	bd_extmap_set(&m, 3, 2, 103, crcs + 3, NULL);
	cr_assert_eq(m.nruns, 1);
}

Test(extmap, zero_and_trim_states)
{
	struct bd_extmap m;
	uint64_t displaced[BD_SEG_BLOCKS];
	bd_extmap_init(&m);
	bd_extmap_set(&m, 0, 8, 100, crcs, NULL);
	cr_assert_eq(bd_extmap_set(&m, 2, 2, BD_PBLK_ZERO, NULL, displaced), 2);
	cr_assert_eq(bd_extmap_set(&m, 4, 2, BD_PBLK_ZERO, NULL, displaced), 2);
	cr_assert_eq(bd_extmap_lookup(&m, 3).pblk, BD_PBLK_ZERO);
	cr_assert_eq(m.nruns, 3, "zero runs merge with each other");
	cr_assert_eq(bd_extmap_set(&m, 0, 64, BD_PBLK_NONE, NULL, displaced), 4);
	cr_assert_eq(m.nruns, 0);
	cr_assert_eq(bd_extmap_lookup(&m, 0).pblk, BD_PBLK_NONE);
	cr_assert_eq(bd_extmap_lookup(&m, 63).pblk, BD_PBLK_NONE);
}

Test(extmap, encode_decode_roundtrip)
{
	struct bd_extmap m, d;
	uint8_t buf[BD_EXTMAP_MAX_ENC];
	bd_extmap_init(&m);
	/* Worst case: 64 one-block runs alternating data and zero. */
	for (uint32_t i = 0; i < BD_SEG_BLOCKS; i++) {
		uint32_t c = 0xabc00000 | i;
		if (i % 2) {
			bd_extmap_set(&m, i, 1, BD_PBLK_ZERO, NULL, NULL);
		} else {
			bd_extmap_set(&m, i, 1, 1000 + 7 * i, &c, NULL);
		}
	}
	cr_assert_eq(m.nruns, 64);
	size_t len = bd_extmap_encode(&m, buf);
	cr_assert_leq(len, BD_EXTMAP_MAX_ENC);
	cr_assert_eq(bd_extmap_decode(&d, buf, len), 0);
	cr_assert_eq(d.nruns, m.nruns);
	for (uint32_t i = 0; i < BD_SEG_BLOCKS; i++) {
		struct bd_bmap a = bd_extmap_lookup(&m, i), b = bd_extmap_lookup(&d, i);
		cr_assert_eq(a.pblk, b.pblk);
		cr_assert_eq(a.crc, b.crc);
	}
	/* Empty list. */
	bd_extmap_init(&m);
	len = bd_extmap_encode(&m, buf);
	cr_assert_eq(bd_extmap_decode(&d, buf, len), 0);
	cr_assert_eq(d.nruns, 0);
}

Test(extmap, decode_rejects_garbage)
{
	struct bd_extmap m;
	uint8_t buf[BD_EXTMAP_MAX_ENC];
	bd_extmap_init(&m);
	bd_extmap_set(&m, 0, 4, 100, crcs, NULL);
	bd_extmap_set(&m, 10, 4, 200, crcs, NULL);
	size_t len = bd_extmap_encode(&m, buf);
	cr_assert_eq(bd_extmap_decode(&m, buf, len - 1), -EBADMSG, "truncated");
	uint8_t bad[BD_EXTMAP_MAX_ENC];
	memcpy(bad, buf, len);
	bad[0] = 9;
	cr_assert_eq(bd_extmap_decode(&m, bad, len), -EBADMSG, "version");
	memcpy(bad, buf, len);
	bad[2 + 10] = 2; /* second run starts inside the first */
	cr_assert_eq(bd_extmap_decode(&m, bad, len), -EBADMSG, "overlap");
	memcpy(bad, buf, len);
	bad[3] = 70; /* length past the segment */
	cr_assert_eq(bd_extmap_decode(&m, bad, len), -EBADMSG, "range");
	cr_assert_eq(bd_extmap_decode(&m, buf, 1), -EBADMSG);
}

Test(extmap, padded_lists_decode)
{
	struct bd_extmap m, d;
	uint8_t buf[BD_EXTMAP_MAX_PADDED];
	bd_extmap_init(&m);
	bd_extmap_set(&m, 0, 4, 100, crcs, NULL);
	bd_extmap_set(&m, 6, 2, BD_PBLK_ZERO, NULL, NULL);
	bd_extmap_set(&m, 10, 3, 200, crcs, NULL);
	size_t len = bd_extmap_encode(&m, buf);
	cr_assert_eq(len, 2 + 3 * 10 + 7 * 4);
	/* Unpadded (as stored before padding existed) still decodes. */
	cr_assert_eq(bd_extmap_decode_padded(&d, buf, len), 0);
	cr_assert_eq(d.nruns, 3);
	size_t plen = bd_extmap_pad(buf, len);
	cr_assert_eq(plen, 64);
	cr_assert_eq(bd_extmap_decode_padded(&d, buf, plen), 0);
	cr_assert_eq(d.nruns, 3);
	cr_assert_eq(bd_extmap_lookup(&d, 12).pblk, 202);
	cr_assert_eq(bd_extmap_lookup(&d, 12).crc, 0x12);
	cr_assert_eq(bd_extmap_lookup(&d, 7).pblk, BD_PBLK_ZERO);
	/* The strict decoder refuses the padding; the padded one refuses non-zero padding,
	 * truncation, and more padding than one unit. */
	cr_assert_eq(bd_extmap_decode(&d, buf, plen), -EBADMSG);
	buf[plen - 1] = 1;
	cr_assert_eq(bd_extmap_decode_padded(&d, buf, plen), -EBADMSG, "non-zero padding");
	buf[plen - 1] = 0;
	cr_assert_eq(bd_extmap_decode_padded(&d, buf, len - 1), -EBADMSG, "truncated");
	uint8_t big[BD_EXTMAP_MAX_PADDED + BD_EXTMAP_PAD] = {0};
	memcpy(big, buf, plen);
	cr_assert_eq(bd_extmap_decode_padded(&d, big, plen + BD_EXTMAP_PAD), -EBADMSG,
		     "too much padding");
	cr_assert_eq(bd_extmap_decode_padded(&d, buf, 1), -EBADMSG);
	/* The largest list fits the padded buffer. */
	bd_extmap_init(&m);
	for (uint32_t i = 0; i < BD_SEG_BLOCKS; i++) {
		uint32_t c = i;
		bd_extmap_set(&m, i, 1, 1000 + 7 * i, &c, NULL);
	}
	len = bd_extmap_encode(&m, buf);
	plen = bd_extmap_pad(buf, len);
	cr_assert_leq(plen, BD_EXTMAP_MAX_PADDED);
	cr_assert_eq(plen % BD_EXTMAP_PAD, 0);
	cr_assert_eq(bd_extmap_decode_padded(&d, buf, plen), 0);
	cr_assert_eq(d.nruns, 64);
}

/* bd_extmap_replace1 either declines (list unchanged) or gives exactly what the general
 * expand + edit + compact path gives. */
Test(extmap, replace1_matches_general_path)
{
	uint32_t seed = 12345;
	uint32_t hits = 0;
	for (int round = 0; round < 200; round++) {
		struct bd_extmap m;
		bd_extmap_init(&m);
		/* A fragmented list: data from two physical areas, some zero and unmapped. */
		for (int w = 0; w < 80; w++) {
			seed = seed * 1103515245u + 12345u;
			uint32_t l = (seed >> 8) % BD_SEG_BLOCKS, kind = (seed >> 20) % 8;
			uint32_t c = seed;
			uint64_t p = kind < 3 ? 1000 + l : 5000 + (seed >> 4) % 64;
			bd_extmap_set(&m, l, 1, kind == 7 ? BD_PBLK_ZERO : p, kind == 7 ? NULL : &c,
				      NULL);
		}
		for (uint32_t l = 0; l < BD_SEG_BLOCKS; l++) {
			seed = seed * 1103515245u + 12345u;
			/* Sometimes adjacent to a neighbour's block, to exercise the merge checks.
			 */
			uint64_t np = (seed >> 3) % 2 ? bd_extmap_lookup(&m, l ? l - 1 : 0).pblk + 1
						      : 9000 + (seed >> 8) % 64;
			if (np >= BD_PBLK_NONE - 1) {
				np = 9000;
			}
			uint32_t crc = seed;
			struct bd_extmap a = m, b = m;
			struct bd_bmap before = bd_extmap_lookup(&m, l);
			uint64_t old = bd_extmap_replace1(&a, l, np, crc);
			if (old == BD_PBLK_NONE) {
				cr_assert_eq(memcmp(&a, &m, sizeof(a)), 0, "declined: unchanged");
				continue;
			}
			hits++;
			cr_assert_eq(old, before.pblk);
			bd_extmap_set(&b, l, 1, np, &crc, NULL);
			cr_assert_eq(a.nruns, b.nruns, "round %d lblk %u", round, l);
			for (uint32_t r = 0; r < a.nruns; r++) {
				cr_assert_eq(a.runs[r].lblk, b.runs[r].lblk);
				cr_assert_eq(a.runs[r].len, b.runs[r].len);
				cr_assert_eq(a.runs[r].pblk, b.runs[r].pblk);
			}
			for (uint32_t i = 0; i < BD_SEG_BLOCKS; i++) {
				struct bd_bmap x = bd_extmap_lookup(&a, i),
					       y = bd_extmap_lookup(&b, i);
				cr_assert_eq(x.pblk, y.pblk);
				cr_assert_eq(x.crc, y.crc);
			}
		}
	}
	cr_assert_gt(hits, 100, "the fast path applies to fragmented lists");
}
