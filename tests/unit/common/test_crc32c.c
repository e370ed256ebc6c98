#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32c.h"

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static void check_vectors(crc_fn fn)
{
	unsigned char buf[32];

	cr_expect_eq(fn(0, "123456789", 9), 0xE3069283u);
	memset(buf, 0, sizeof(buf));
	cr_expect_eq(fn(0, buf, sizeof(buf)), 0x8A9136AAu);
	memset(buf, 0xff, sizeof(buf));
	cr_expect_eq(fn(0, buf, sizeof(buf)), 0x62A8AB43u);
	for (int i = 0; i < 32; i++) {
		buf[i] = (unsigned char)i;
	}
	cr_expect_eq(fn(0, buf, sizeof(buf)), 0x46DD794Eu);
	cr_expect_eq(fn(0, buf, 0), 0u);
	cr_expect_eq(fn(0x12345678, buf, 0), 0x12345678u);
}

Test(crc32c, known_vectors)
{
	check_vectors(st_crc32c);
}

Test(crc32c, known_vectors_sw)
{
	check_vectors(st_crc32c_sw);
}

Test(crc32c, incremental_equals_one_shot)
{
	unsigned char buf[1000];

	srand(1);
	for (size_t i = 0; i < sizeof(buf); i++) {
		buf[i] = (unsigned char)rand();
	}
	uint32_t whole = st_crc32c(0, buf, sizeof(buf));
	for (size_t split = 0; split <= sizeof(buf); split += 37) {
		uint32_t c = st_crc32c(0, buf, split);
		cr_assert_eq(st_crc32c(c, buf + split, sizeof(buf) - split), whole, "split %zu",
			     split);
		c = st_crc32c_sw(0, buf, split);
		cr_assert_eq(st_crc32c_sw(c, buf + split, sizeof(buf) - split), whole,
			     "sw split %zu", split);
	}
	/* byte at a time */
	uint32_t c = 0;
	for (size_t i = 0; i < sizeof(buf); i++) {
		c = st_crc32c(c, buf + i, 1);
	}
	cr_assert_eq(c, whole);
}

Test(crc32c, isal_matches_sw)
{
	enum { MAX = 4096 + 64 };
	unsigned char *buf = malloc(MAX + 16);

	cr_assert_not_null(buf);
	srand(42);
	for (size_t i = 0; i < MAX + 16; i++) {
		buf[i] = (unsigned char)rand();
	}
	for (size_t off = 0; off < 16; off++) {
		for (size_t len = 0; len < 300; len++) {
			cr_assert_eq(st_crc32c(0, buf + off, len), st_crc32c_sw(0, buf + off, len),
				     "off %zu len %zu", off, len);
		}
		for (size_t len = 300; len <= MAX; len += 97) {
			uint32_t seed = (uint32_t)rand();
			cr_assert_eq(st_crc32c(seed, buf + off, len),
				     st_crc32c_sw(seed, buf + off, len), "off %zu len %zu", off,
				     len);
		}
	}
	free(buf);
}
