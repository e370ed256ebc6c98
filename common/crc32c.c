/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), with the usual pre- and
 * post-inversion so that crc values chain: st_crc32c(st_crc32c(0, a), b) == st_crc32c(0, a||b).
 *
 * st_crc32c is Intel ISA-L's crc32_iscsi (libisal), which picks at run time the fastest code
 * the CPU has: carry-less multiply folding (PCLMULQDQ, VPCLMULQDQ with AVX-512) over several
 * streams at once. On this project's machines that is 0.14 us per hot 4 KiB block against
 * 1.8 us for a one-stream loop of SSE4.2 crc32 instructions, and the block checksum is on
 * every blockd read and write. ISA-L works without pre/post inversion, so we add ours.
 *
 * st_crc32c_sw is slicing-by-8 (eight 256-entry tables, 8 KiB), kept as an independent
 * reference that the tests compare ISA-L against.
 */
#include "common/crc32c.h"

#include <isa-l/crc.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u

/* crc_table[0] is the classic byte table; crc_table[k][b] is b followed by k zero bytes. */
static uint32_t crc_table[8][256];

__attribute__((constructor)) static void crc32c_init(void)
{
	for (uint32_t b = 0; b < 256; b++) {
		uint32_t c = b;
		for (int k = 0; k < 8; k++) {
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		}
		crc_table[0][b] = c;
	}
	for (uint32_t b = 0; b < 256; b++) {
		for (int t = 1; t < 8; t++) {
			uint32_t prev = crc_table[t - 1][b];
			crc_table[t][b] = (prev >> 8) ^ crc_table[0][prev & 0xff];
		}
	}
}

uint32_t st_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	crc = ~crc;
	/* Bytes are assembled explicitly, so this is correct on either endianness. */
	while (len >= 8) {
		uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				     (uint32_t)p[3] << 24);
		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
		      crc_table[0][p[7]];
		p += 8;
		len -= 8;
	}
	while (len-- > 0) {
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	}
	return ~crc;
}

uint32_t st_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	crc = ~crc;
	while (len > 0) { /* crc32_iscsi takes an int length */
		int n = len > (size_t)INT_MAX ? INT_MAX & ~63 : (int)len;

		crc = crc32_iscsi((unsigned char *)p, n, crc);
		p += n;
		len -= (size_t)n;
	}
	return ~crc;
}
