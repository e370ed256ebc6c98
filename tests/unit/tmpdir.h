/* A per-test directory under $TMPDIR (default /tmp), removed afterwards. */
#ifndef STRATA_TEST_UNIT_TMPDIR_H
#define STRATA_TEST_UNIT_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static inline char *test_mkdtemp(char *buf, size_t len)
{
	const char *t = getenv("TMPDIR");
	snprintf(buf, len, "%s/strata-unit.XXXXXX", t && t[0] ? t : "/tmp");
	return mkdtemp(buf);
}

static inline void test_rmtree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
