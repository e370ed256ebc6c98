/* The JSON emitter: nesting, commas and escaping. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

Test(json, nesting_and_escaping)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct cli_json j;
	cli_json_init(&j, f);
	cli_json_arr_begin(&j, NULL);
	cli_json_obj_begin(&j, NULL);
	cli_json_str(&j, "name", "a\"b\\c\n\x01");
	cli_json_u64(&j, "size", 18446744073709551615ull);
	cli_json_bool(&j, "t", true);
	cli_json_arr_begin(&j, "kids");
	cli_json_str(&j, NULL, "x");
	cli_json_str(&j, NULL, "y");
	cli_json_arr_end(&j);
	cli_json_obj_end(&j);
	cli_json_obj_begin(&j, NULL);
	cli_json_obj_end(&j);
	cli_json_arr_end(&j);
	fclose(f);
	cr_assert_str_eq(buf, "[{\"name\":\"a\\\"b\\\\c\\n\\u0001\",\"size\":18446744073709551615,"
			      "\"t\":true,\"kids\":[\"x\",\"y\"]},{}]\n");
	free(buf);
}
