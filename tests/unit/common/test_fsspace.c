/* common/fsspace.c: the free space under a path, and the check before a database opens. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "../tmpdir.h"
#include "common/fsspace.h"

Test(fsspace, an_existing_directory_reports_what_statvfs_says)
{
	char dir[4096];
	cr_assert_not_null(test_mkdtemp(dir, sizeof(dir)));
	struct statvfs sv;
	cr_assert_eq(statvfs(dir, &sv), 0);
	uint64_t want = (uint64_t)sv.f_bavail * sv.f_frsize;
	uint64_t got = st_fs_avail(dir);
	cr_assert_neq(got, UINT64_MAX);
	/* Other processes write meanwhile: the same order of magnitude, not the same byte. */
	cr_assert_lt(got > want ? got - want : want - got, (want >> 4) + (64ull << 20));
	test_rmtree(dir);
}

Test(fsspace, a_path_not_created_yet_reports_its_directory)
{
	char dir[4096];
	cr_assert_not_null(test_mkdtemp(dir, sizeof(dir)));
	char sub[4200];
	snprintf(sub, sizeof(sub), "%s/db", dir);
	cr_assert_neq(st_fs_avail(sub), UINT64_MAX);
	cr_assert_eq(st_fs_room_to_open(sub, "index"), 0, "%s has more than 1 MiB free", dir);
	test_rmtree(dir);
}

Test(fsspace, an_unknown_path_is_never_a_reason_to_refuse)
{
	cr_assert_eq(st_fs_avail("/nonexistent-strata-dir/a/b"), UINT64_MAX);
	cr_assert_eq(st_fs_room_to_open("/nonexistent-strata-dir/a/b", "index"), 0);
}
