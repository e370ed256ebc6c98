/* common/fsspace.c: the free space under a path, and the check before a database opens. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/fsspace.h"

/* A fresh directory under $TMPDIR (default /tmp), as the other unit tests make theirs. */
static void make_dir(char *buf, size_t len)
{
	const char *t = getenv("TMPDIR");
	snprintf(buf, len, "%s/strata-fsspace-XXXXXX", t && t[0] ? t : "/tmp");
	cr_assert_not_null(mkdtemp(buf), "mkdtemp %s", buf);
}

Test(fsspace, an_existing_directory_reports_what_statvfs_says)
{
	char dir[4096];
	make_dir(dir, sizeof(dir));
	struct statvfs sv;
	cr_assert_eq(statvfs(dir, &sv), 0);
	uint64_t want = (uint64_t)sv.f_bavail * sv.f_frsize;
	uint64_t got = st_fs_avail(dir);
	cr_assert_neq(got, UINT64_MAX);
	/* Other processes write meanwhile: the same order of magnitude, not the same byte. */
	cr_assert_lt(got > want ? got - want : want - got, (want >> 4) + (64ull << 20));
	rmdir(dir);
}

Test(fsspace, a_path_not_created_yet_reports_its_directory)
{
	char dir[4096];
	make_dir(dir, sizeof(dir));
	char sub[4200];
	snprintf(sub, sizeof(sub), "%s/db", dir);
	cr_assert_neq(st_fs_avail(sub), UINT64_MAX);
	cr_assert_eq(st_fs_room_to_open(sub, "index"), 0, "%s has more than 1 MiB free", dir);
	rmdir(dir);
}

Test(fsspace, an_unknown_path_is_never_a_reason_to_refuse)
{
	cr_assert_eq(st_fs_avail("/nonexistent-strata-dir/a/b"), UINT64_MAX);
	cr_assert_eq(st_fs_room_to_open("/nonexistent-strata-dir/a/b", "index"), 0);
}
