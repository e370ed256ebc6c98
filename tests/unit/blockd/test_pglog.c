#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "pglog.h"

#define V(epoch, n) (((uint64_t)(epoch) << 32) | (n))

/* Sorted (object) list of what since() returns, for family 1 only. */
static long objects_since(const struct bd_pglog *l, uint64_t since, uint64_t *objs, long max)
{
	uint64_t *v;
	long n = bd_pglog_since(l, since, &v);
	if (n < 0) {
		return n;
	}
	cr_assert_leq(n, max);
	for (long i = 0; i < n; i++) {
		cr_assert_eq(v[2 * i], 1, "family");
		objs[i] = v[2 * i + 1];
	}
	for (long i = 1; i < n; i++) { /* insertion sort */
		for (long j = i; j > 0 && objs[j - 1] > objs[j]; j--) {
			uint64_t t = objs[j];
			objs[j] = objs[j - 1];
			objs[j - 1] = t;
		}
	}
	free(v);
	return n;
}

Test(pglog, objects_changed_after_a_version_each_once)
{
	struct bd_pglog l = {0};
	bd_pglog_reset(&l, V(3, 7));
	uint64_t prev = V(3, 7);
	/* Objects 10, 11, 10, 12, 10 at (3,8) ... (3,12). */
	uint64_t seq[] = {10, 11, 10, 12, 10};
	for (int i = 0; i < 5; i++) {
		bd_pglog_append(&l, prev, prev + 1, 1, seq[i]);
		prev++;
	}
	cr_assert_eq(bd_pglog_last(&l), V(3, 12));
	uint64_t o[8];
	cr_assert_eq(objects_since(&l, V(3, 7), o, 8), 3, "from the base: every object");
	cr_assert(o[0] == 10 && o[1] == 11 && o[2] == 12);
	cr_assert_eq(objects_since(&l, V(3, 9), o, 8), 2, "after (3,9): 10 and 12");
	cr_assert(o[0] == 10 && o[1] == 12);
	cr_assert_eq(objects_since(&l, V(3, 11), o, 8), 1);
	cr_assert_eq(o[0], 10);
	cr_assert_eq(objects_since(&l, V(3, 12), o, 8), 0, "up to date");
	bd_pglog_free(&l);
}

Test(pglog, versions_outside_the_history_need_a_backfill)
{
	struct bd_pglog l = {0};
	bd_pglog_reset(&l, V(2, 4));
	bd_pglog_append(&l, V(2, 4), V(2, 5), 1, 1);
	bd_pglog_append(&l, V(2, 5), V(2, 6), 1, 2);
	/* A new epoch's primary starts at (5,1). */
	bd_pglog_append(&l, V(2, 6), V(5, 1), 1, 3);
	bd_pglog_append(&l, V(5, 1), V(5, 2), 1, 1);
	uint64_t *v = NULL;
	cr_assert_eq(bd_pglog_since(&l, V(2, 3), &v), -ENOENT, "older than the base");
	cr_assert_null(v);
	cr_assert_eq(bd_pglog_since(&l, V(2, 7), &v), -ENOENT,
		     "a version of epoch 2 this node never had: the puller diverged");
	cr_assert_eq(bd_pglog_since(&l, V(4, 1), &v), -ENOENT, "an epoch this node never saw");
	cr_assert_eq(bd_pglog_since(&l, V(5, 3), &v), -ENOENT, "ahead of this node");
	uint64_t o[8];
	cr_assert_eq(objects_since(&l, V(2, 6), o, 8), 2, "end of the first run: 3 and 1");
	cr_assert(o[0] == 1 && o[1] == 3);
	cr_assert_eq(objects_since(&l, V(5, 1), o, 8), 1);
	cr_assert_eq(o[0], 1);
	bd_pglog_free(&l);
}

Test(pglog, a_gap_starts_the_log_again)
{
	struct bd_pglog l = {0};
	bd_pglog_reset(&l, 0);
	bd_pglog_append(&l, 0, V(1, 1), 1, 1);
	bd_pglog_append(&l, V(1, 1), V(1, 2), 1, 2);
	/* The PG jumped to (1,9) by a pull: the next mutation follows that. */
	bd_pglog_append(&l, V(1, 9), V(1, 10), 1, 3);
	uint64_t o[8], *v = NULL;
	cr_assert_eq(bd_pglog_since(&l, V(1, 1), &v), -ENOENT, "before the gap");
	cr_assert_eq(objects_since(&l, V(1, 9), o, 8), 1, "the pulled version is the new base");
	cr_assert_eq(o[0], 3);
	bd_pglog_free(&l);
}

Test(pglog, outgrowing_the_object_limit_starts_again)
{
	struct bd_pglog l = {0};
	bd_pglog_reset(&l, 0);
	uint64_t v = 0;
	for (uint64_t i = 0; i < BD_PG_LOG_OBJECTS; i++, v++) {
		bd_pglog_append(&l, v, v + 1, 1, 1000 + i);
	}
	cr_assert_eq(l.nobjs, BD_PG_LOG_OBJECTS);
	uint64_t *out;
	cr_assert_eq(bd_pglog_since(&l, 0, &out), (long)BD_PG_LOG_OBJECTS, "every object, once");
	free(out);
	/* Writing a remembered object again costs nothing... */
	bd_pglog_append(&l, v, v + 1, 1, 1000);
	v++;
	cr_assert_eq(l.base, 0);
	/* ...one more new object starts the log at the version before it. */
	bd_pglog_append(&l, v, v + 1, 1, 5);
	cr_assert_eq(l.base, v);
	cr_assert_eq(bd_pglog_since(&l, 0, &out), -ENOENT);
	uint64_t o[2];
	cr_assert_eq(objects_since(&l, v, o, 2), 1);
	cr_assert_eq(o[0], 5);
	bd_pglog_free(&l);
}

Test(pglog, too_many_runs_start_again)
{
	struct bd_pglog l = {0};
	bd_pglog_reset(&l, 0);
	uint64_t prev = 0;
	for (uint32_t e = 1; e <= BD_PG_LOG_RUNS; e++) {
		bd_pglog_append(&l, prev, V(e, 1), 1, e);
		prev = V(e, 1);
	}
	cr_assert_eq(l.nruns, BD_PG_LOG_RUNS);
	cr_assert(bd_pglog_covers(&l, V(1, 1)));
	bd_pglog_append(&l, prev, V(BD_PG_LOG_RUNS + 1, 1), 1, 7);
	cr_assert_eq(l.base, prev);
	cr_assert_not(bd_pglog_covers(&l, V(1, 1)));
	cr_assert(bd_pglog_covers(&l, V(BD_PG_LOG_RUNS + 1, 1)));
	bd_pglog_free(&l);
}
