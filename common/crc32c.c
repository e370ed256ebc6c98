/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), with the usual pre- and
 * post-inversion so that crc values chain: st_crc32c(st_crc32c(0, a), b) == st_crc32c(0, a||b).
 *
 * Two implementations:
 *  - SSE4.2's crc32 instruction, 8 bytes per step, compiled with a per-function target
 *    attribute so the rest of the tree needs no -msse4.2;
 *  - slicing-by-8: eight 256-entry tables (8 KiB) let one step fold 8 input bytes with eight
 *    independent lookups instead of eight dependent ones.
 * The choice is made once, in a constructor, from __builtin_cpu_supports.
 */
#include "common/crc32c.h"

#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define ST_CRC32C_X86 1
#endif

#define CRC32C_POLY 0x82F63B78u

/* crc_table[0] is the classic byte table; crc_table[k][b] is b followed by k zero bytes. */
static uint32_t crc_table[8][256];
static bool crc_hw;

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
#ifdef ST_CRC32C_X86
	/* Constructors may run before the compiler's own CPU detection. */
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
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

#ifdef ST_CRC32C_X86
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *buf,
							    size_t len)
{
	const unsigned char *p = buf;
	uint64_t c = ~crc;

	/* Byte steps up to 8-byte alignment, so the wide loads below never straddle lines. */
	while (len > 0 && ((uintptr_t)p & 7) != 0) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, sizeof(w));
		c = _mm_crc32_u64(c, w);
		p += 8;
		len -= 8;
	}
	while (len-- > 0) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
	}
	return ~(uint32_t)c;
}
#endif

uint32_t st_crc32c(uint32_t crc, const void *buf, size_t len)
{
#ifdef ST_CRC32C_X86
	if (crc_hw) {
		return crc32c_hw(crc, buf, len);
	}
#endif
	return st_crc32c_sw(crc, buf, len);
}

int st_crc32c_hw_available(void)
{
	return crc_hw;
}
