/* The catalog's hash map: insert, replace, delete with tombstones, growth, iteration. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

Test(map, basic)
{
	struct md_map m = {0};
	int a = 1, b = 2;
	cr_assert_null(md_map_get(&m, "x", 1));
	cr_assert_eq(md_map_put(&m, "x", 1, &a), 0);
	cr_assert_eq(md_map_get(&m, "x", 1), &a);
	cr_assert_eq(md_map_put(&m, "x", 1, &b), 0);
	cr_assert_eq(md_map_get(&m, "x", 1), &b);
	cr_assert_eq(m.count, 1);
	cr_assert_eq(md_map_del(&m, "x", 1), &b);
	cr_assert_null(md_map_get(&m, "x", 1));
	cr_assert_null(md_map_del(&m, "x", 1));
	cr_assert_eq(md_map_put(&m, "", 0, &a), 0, "empty keys are keys");
	cr_assert_eq(md_map_get(&m, "", 0), &a);
	md_map_free(&m);
}

Test(map, many)
{
	struct md_map m = {0};
	static uint64_t vals[20000];
	for (uint64_t i = 0; i < 20000; i++) {
		vals[i] = i;
		cr_assert_eq(md_map_put(&m, &i, sizeof(i), &vals[i]), 0);
	}
	for (uint64_t i = 0; i < 20000; i += 2) {
		cr_assert_eq(md_map_del(&m, &i, sizeof(i)), &vals[i]);
	}
	cr_assert_eq(m.count, 10000);
	for (uint64_t i = 0; i < 20000; i++) {
		void *v = md_map_get(&m, &i, sizeof(i));
		cr_assert_eq(v, i % 2 ? &vals[i] : NULL);
	}
	/* Churn through tombstones. */
	for (int round = 0; round < 5; round++) {
		for (uint64_t i = 0; i < 20000; i += 2) {
			cr_assert_eq(md_map_put(&m, &i, sizeof(i), &vals[i]), 0);
			cr_assert_eq(md_map_del(&m, &i, sizeof(i)), &vals[i]);
		}
	}
	size_t pos = 0, n = 0;
	while (md_map_next(&m, &pos) != NULL) {
		n++;
	}
	cr_assert_eq(n, 10000);
	md_map_free(&m);
}
