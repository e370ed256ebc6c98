#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/flags.h"

struct opts {
	bool verbose;
	const char *listen;
	int64_t count;
	uint64_t size;
};

static struct opts o;

static const struct st_flag table[] = {
	{"verbose", ST_FLAG_BOOL, &o.verbose, NULL, "log more"},
	{"listen", ST_FLAG_STRING, &o.listen, "HOST:PORT", "address to listen on"},
	{"count", ST_FLAG_INT, &o.count, "N", "how many"},
	{"size", ST_FLAG_SIZE, &o.size, "SIZE", "volume size"},
	{NULL, 0, NULL, NULL, NULL},
};

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

static void reset(void)
{
	o = (struct opts){.listen = "default", .count = 7, .size = 1};
}

Test(flags, defaults_kept_without_flags)
{
	char *argv[] = {"prog", NULL};
	int npos = -1;

	reset();
	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), 0);
	cr_assert_eq(npos, 0);
	cr_assert_not(o.verbose);
	cr_assert_str_eq(o.listen, "default");
	cr_assert_eq(o.count, 7);
	cr_assert_eq(o.size, 1);
}

Test(flags, space_syntax)
{
	char *argv[] = {"prog",   "--verbose", "--listen", "127.0.0.1:7700", "--count", "-42",
			"--size", "10G",       NULL};
	int npos = -1;

	reset();
	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), 0);
	cr_assert_eq(npos, 0);
	cr_assert(o.verbose);
	cr_assert_str_eq(o.listen, "127.0.0.1:7700");
	cr_assert_eq(o.count, -42);
	cr_assert_eq(o.size, 10ull << 30);
}

Test(flags, equals_syntax)
{
	char *argv[] = {"prog",        "--listen=[::1]:7700", "--count=123",
			"--size=1.5K", "--listen=",           NULL};
	int npos = -1;

	reset();
	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), 0);
	cr_assert_str_eq(o.listen, ""); /* last one wins, and an empty value is a value */
	cr_assert_eq(o.count, 123);
	cr_assert_eq(o.size, 1536);
}

Test(flags, value_with_equals_sign)
{
	char *argv[] = {"prog", "--listen=a=b", NULL};
	int npos;

	reset();
	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), 0);
	cr_assert_str_eq(o.listen, "a=b");
}

Test(flags, positionals_compacted_in_order)
{
	char *argv[] = {"prog", "create", "--size", "4M",      "vol1", "--verbose",
			"-",    "-5",     "--",     "--count", "x",    NULL};
	int npos = -1;

	reset();
	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), 0);
	cr_assert_eq(npos, 6);
	cr_assert_str_eq(argv[0], "create");
	cr_assert_str_eq(argv[1], "vol1");
	cr_assert_str_eq(argv[2], "-");
	cr_assert_str_eq(argv[3], "-5");
	cr_assert_str_eq(argv[4], "--count");
	cr_assert_str_eq(argv[5], "x");
	cr_assert_null(argv[6]);
	cr_assert_eq(o.size, 4ull << 20);
	cr_assert(o.verbose);
	cr_assert_eq(o.count, 7, "flags after -- are positionals");
}

Test(flags, unknown_flag, .init = cr_redirect_stderr)
{
	char *argv[] = {"prog", "--nope", "1", NULL};
	int npos;

	reset();
	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), -EINVAL);
	fflush(stderr);
	cr_assert_stderr_eq_str("error: unknown flag '--nope' (see --help)\n");
}

Test(flags, unknown_flag_with_value, .init = cr_redirect_stderr)
{
	char *argv[] = {"prog", "--nope=1", NULL};
	int npos;

	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), -EINVAL);
	fflush(stderr);
	cr_assert_stderr_eq_str("error: unknown flag '--nope' (see --help)\n");
}

Test(flags, unknown_short_flag, .init = cr_redirect_stderr)
{
	char *argv[] = {"prog", "-v", NULL};
	int npos;

	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), -EINVAL);
}

Test(flags, prefix_is_not_a_match, .init = cr_redirect_stderr)
{
	char *argv[] = {"prog", "--verb", NULL};
	int npos;

	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), -EINVAL);
}

Test(flags, missing_value, .init = cr_redirect_stderr)
{
	char *argv[] = {"prog", "--listen", NULL};
	int npos;

	reset();
	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), -EINVAL);
	cr_assert_str_eq(o.listen, "default");
	fflush(stderr);
	cr_assert_stderr_eq_str("error: --listen needs a value (HOST:PORT)\n");
}

Test(flags, bool_takes_no_value, .init = cr_redirect_stderr)
{
	char *argv[] = {"prog", "--verbose=yes", NULL};
	int npos;

	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), -EINVAL);
}

Test(flags, bad_int, .init = cr_redirect_stderr)
{
	static const char *bad[] = {"", "12x", "x", "1.5", "99999999999999999999", "0x10"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *argv[] = {"prog", "--count", (char *)bad[i], NULL};
		int npos;

		cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), -EINVAL,
			     "'%s'", bad[i]);
	}
}

Test(flags, int_limits)
{
	char *argv[] = {"prog", "--count=-9223372036854775808", NULL};
	int npos;

	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), 0);
	cr_assert_eq(o.count, INT64_MIN);
}

Test(flags, bad_size, .init = cr_redirect_stderr)
{
	char *argv[] = {"prog", "--size", "10Q", NULL};
	int npos;

	reset();
	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), -EINVAL);
	cr_assert_eq(o.size, 1);
	fflush(stderr);
	cr_assert_stderr_eq_str("error: --size: '10Q' is not a valid size (e.g. 4096, 4M, 10G)\n");
}

Test(flags, help_returns_1, .init = cr_redirect_stdout)
{
	char *argv[] = {"prog", "pos", "--help", "--nope", NULL};
	int npos;

	cr_assert_eq(st_flags_parse("prog [flags] VOLUME", table, ARGC(argv), argv, &npos), 1);
	fflush(stdout);
	cr_assert_stdout_eq_str("usage: prog [flags] VOLUME\n"
				"\n"
				"flags:\n"
				"  --verbose           log more\n"
				"  --listen HOST:PORT  address to listen on\n"
				"  --count N           how many\n"
				"  --size SIZE         volume size\n"
				"  -h, --help          show this help and exit\n");
}

Test(flags, short_help_returns_1, .init = cr_redirect_stdout)
{
	char *argv[] = {"prog", "-h", NULL};
	int npos;

	cr_assert_eq(st_flags_parse("prog", table, ARGC(argv), argv, &npos), 1);
}
