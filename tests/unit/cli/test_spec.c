/* POOL/VOL[@SNAP] parsing and the meta address precedence. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

Test(spec, parse)
{
	struct cli_spec s;
	char why[300];
	cr_assert_eq(cli_parse_spec("p/v", CLI_SNAP_NONE, &s, why, sizeof(why)), 0);
	cr_assert_str_eq(s.pool, "p");
	cr_assert_str_eq(s.vol, "v");
	cr_assert_str_eq(s.snap, "");
	cr_assert_eq(cli_parse_spec("p/v@s", CLI_SNAP_REQUIRED, &s, why, sizeof(why)), 0);
	cr_assert_str_eq(s.snap, "s");
	cr_assert_eq(cli_parse_spec("p/v@s", CLI_SNAP_OPTIONAL, &s, why, sizeof(why)), 0);
	cr_assert_eq(cli_parse_spec("p/v", CLI_SNAP_OPTIONAL, &s, why, sizeof(why)), 0);
	cr_assert_eq(cli_parse_spec("p/v", CLI_SNAP_REQUIRED, &s, why, sizeof(why)), -EINVAL);
	cr_assert_eq(cli_parse_spec("p/v@s", CLI_SNAP_NONE, &s, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "names a snapshot") != NULL);
}

Test(spec, reject)
{
	struct cli_spec s;
	char why[300];
	const char *bad[] = {"pv",   "/v",      "p/",    "p/v/w",   "p@s/v",
			     "p/v@", "p/v@s@t", "p/a b", "p/v@a*b", ""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(cli_parse_spec(bad[i], CLI_SNAP_OPTIONAL, &s, why, sizeof(why)),
			     -EINVAL, "'%s' should be refused", bad[i]);
		cr_assert_neq(why[0], '\0');
	}
	char longname[200] = "p/";
	memset(longname + 2, 'x', 129);
	longname[131] = '\0';
	cr_assert_eq(cli_parse_spec(longname, CLI_SNAP_NONE, &s, why, sizeof(why)), -EINVAL);
	longname[130] = '\0';
	cr_assert_eq(cli_parse_spec(longname, CLI_SNAP_NONE, &s, why, sizeof(why)), 0);
}

Test(spec, meta_addr)
{
	unsetenv("STRATA_META");
	cr_assert_str_eq(cli_meta_addr(NULL), "127.0.0.1:7700");
	setenv("STRATA_META", "10.0.0.1:1", 1);
	cr_assert_str_eq(cli_meta_addr(NULL), "10.0.0.1:1");
	cr_assert_str_eq(cli_meta_addr("1.2.3.4:5"), "1.2.3.4:5");
	unsetenv("STRATA_META");
}
