/* Free space on the host file system (see fsspace.h): strata-blockd's index and strata-meta's
 * catalog both check it before RocksDB opens. */
#include "common/fsspace.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/statvfs.h>

#include "common/log.h"

uint64_t st_fs_avail(const char *path)
{
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", path);
	struct statvfs sv;
	if (statvfs(buf, &sv) < 0 && statvfs(dirname(buf), &sv) < 0) {
		return UINT64_MAX;
	}
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

int st_fs_room_to_open(const char *path, const char *what)
{
	uint64_t avail = st_fs_avail(path);
	if (avail >= ST_FS_OPEN_MIN) {
		return 0; /* or unknown: let the open report what is wrong */
	}
	st_error("%s %s: its file system has %lu KiB free; the %s needs at least %llu KiB to open "
		 "(free some space)",
		 what, path, (unsigned long)(avail >> 10), what, ST_FS_OPEN_MIN >> 10);
	return -ENOSPC;
}
