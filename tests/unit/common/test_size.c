#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "common/size.h"

static uint64_t parse_ok(const char *s)
{
	uint64_t v = 0xdeadbeef;
	int rc = st_parse_size(s, &v);

	cr_assert_eq(rc, 0, "st_parse_size(\"%s\") = %d", s, rc);
	return v;
}

static void parse_err(const char *s, int want)
{
	uint64_t v = 0xdeadbeef;
	int rc = st_parse_size(s, &v);

	cr_assert_eq(rc, want, "st_parse_size(\"%s\") = %d, want %d", s, rc, want);
	cr_assert_eq(v, 0xdeadbeef, "output touched on error for \"%s\"", s);
}

Test(size, plain_numbers)
{
	cr_expect_eq(parse_ok("0"), 0);
	cr_expect_eq(parse_ok("512"), 512);
	cr_expect_eq(parse_ok("4096"), 4096);
	cr_expect_eq(parse_ok("512B"), 512);
	cr_expect_eq(parse_ok("512b"), 512);
	cr_expect_eq(parse_ok("18446744073709551615"), UINT64_MAX);
}

Test(size, suffixes)
{
	cr_expect_eq(parse_ok("1K"), 1024);
	cr_expect_eq(parse_ok("4M"), 4ull << 20);
	cr_expect_eq(parse_ok("10G"), 10ull << 30);
	cr_expect_eq(parse_ok("1T"), 1ull << 40);
	cr_expect_eq(parse_ok("2P"), 2ull << 50);
	cr_expect_eq(parse_ok("512K"), 512ull << 10);
	cr_expect_eq(parse_ok("10g"), 10ull << 30);
	cr_expect_eq(parse_ok("10GB"), 10ull << 30);
	cr_expect_eq(parse_ok("10gb"), 10ull << 30);
	cr_expect_eq(parse_ok("10GiB"), 10ull << 30);
	cr_expect_eq(parse_ok("10gIb"), 10ull << 30);
	cr_expect_eq(parse_ok("4MiB"), 4ull << 20);
	cr_expect_eq(parse_ok("15359P"), 15359ull << 50);
}

Test(size, decimals)
{
	cr_expect_eq(parse_ok("1.5G"), 3ull << 29);
	cr_expect_eq(parse_ok("1.5K"), 1536);
	cr_expect_eq(parse_ok("0.5K"), 512);
	cr_expect_eq(parse_ok("1.25K"), 1280);
	cr_expect_eq(parse_ok("2.0M"), 2ull << 20);
	cr_expect_eq(parse_ok("1.0"), 1);
	cr_expect_eq(parse_ok("0.0009765625M"), 1024);
	cr_expect_eq(parse_ok("1.50000000000000000000000K"), 1536);
	/* Not a whole number of bytes. */
	parse_err("1.5", -EINVAL);
	parse_err("1.3K", -EINVAL);
	parse_err("0.1K", -EINVAL);
	parse_err("1.00000000000000000001K", -EINVAL);
}

Test(size, garbage)
{
	parse_err("", -EINVAL);
	parse_err("-1", -EINVAL);
	parse_err("-1K", -EINVAL);
	parse_err("+1", -EINVAL);
	parse_err(" 1", -EINVAL);
	parse_err("1 ", -EINVAL);
	parse_err("10 G", -EINVAL);
	parse_err("1.5.5", -EINVAL);
	parse_err("1.", -EINVAL);
	parse_err(".5K", -EINVAL);
	parse_err("1.K", -EINVAL);
	parse_err("K", -EINVAL);
	parse_err("B", -EINVAL);
	parse_err("abc", -EINVAL);
	parse_err("10X", -EINVAL);
	parse_err("10GG", -EINVAL);
	parse_err("10Ki", -EINVAL);
	parse_err("10iB", -EINVAL);
	parse_err("10BB", -EINVAL);
	parse_err("10GiBx", -EINVAL);
	parse_err("0x10", -EINVAL);
}

Test(size, overflow)
{
	parse_err("18446744073709551616", -ERANGE);
	parse_err("99999999999999999999999999999", -ERANGE);
	parse_err("16384P", -ERANGE);
	parse_err("17179869184G", -ERANGE);
	parse_err("16777216T", -ERANGE);
	parse_err("16383.99999999999999999P", -EINVAL); /* inexact is reported first */
	cr_expect_eq(parse_ok("16383.5P"), (16383ull << 50) + (1ull << 49));
}

static void fmt_is(uint64_t v, const char *want)
{
	char buf[32];

	cr_assert_str_eq(st_format_size(v, buf, sizeof(buf)), want, "format %llu",
			 (unsigned long long)v);
}

Test(size, format)
{
	fmt_is(0, "0");
	fmt_is(512, "512");
	fmt_is(1023, "1023");
	fmt_is(1024, "1K");
	fmt_is(1536, "1.5K");
	fmt_is(10ull << 30, "10G");
	fmt_is(3ull << 29, "1.5G");
	fmt_is(1ull << 40, "1T");
	fmt_is(5ull << 50, "5P");
	fmt_is(1025, "1.0K");             /* approximate: one decimal at most */
	fmt_is(1280, "1.3K");             /* 1.25 rounds half up */
	fmt_is((1ull << 20) - 1, "1.0M"); /* 1023.999K would print as 1024.0K */
	fmt_is(UINT64_MAX, "16384.0P");
}

Test(size, format_truncates_safely)
{
	char buf[4];

	memset(buf, 'x', sizeof(buf));
	st_format_size(10ull << 30, buf, 2);
	cr_assert_str_eq(buf, "1");
}

Test(size, round_trip)
{
	static const uint64_t vals[] = {0,          1,          512,        4096,
					1536,       1ull << 20, 3ull << 19, 10ull << 30,
					7ull << 39, 1ull << 40, 9ull << 49, 1ull << 62};
	char buf[32];

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		uint64_t back;
		st_format_size(vals[i], buf, sizeof(buf));
		cr_assert_eq(st_parse_size(buf, &back), 0, "%s", buf);
		cr_assert_eq(back, vals[i], "%s", buf);
	}
	for (uint64_t v = 0; v < 5000; v++) {
		uint64_t back;
		st_format_size(v, buf, sizeof(buf));
		if (st_parse_size(buf, &back) == 0 && back == v) {
			continue;
		}
		/* Only the approximate forms may fail to round-trip, and then within 5%. */
		cr_assert(v >= 1024 && v % 512 != 0, "%llu -> %s", (unsigned long long)v, buf);
	}
}
