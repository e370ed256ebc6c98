/*
 * strata-blockd engine: the host file system's free space.
 *
 * The data file is sparse and grows as blocks are first written; the index (RocksDB: WAL,
 * memtable flushes, compactions, its info LOG) and the reply journal grow beside it. When the
 * file system they live on runs out, what fails is not one write but the machinery: RocksDB
 * stops the database at the first failed WAL write, and Debian's RocksDB (built with
 * assertions) aborts the process at the next line its info LOG cannot write, even inside
 * DB::Open. Measured before this guard on an 85 MiB file system: writes were placed until the
 * disk was full, then every write failed, a failed write's data stayed visible although its
 * client had been told it failed, and `--fsck` aborted with SIGABRT in RocksDB's logger.
 *
 * So the engine keeps a reserve (`--min-free`, default 64 MiB) that only the index may use:
 *  - a mutation is refused with ENOSPC, before it touches anything, while the file system
 *    holding the index or the data file has less than min_free available; reads, flushes and
 *    the commits of mutations already admitted go on (they need far less than the reserve);
 *  - the prewriter stops while less than twice the reserve is available: its zero-filled
 *    space is ahead of need and must not eat the reserve;
 *  - the state is re-read every FS_CHECK_OPS admitted mutations and, while refusing, at most
 *    every FS_RECHECK_MS, so writes resume on their own once space is freed;
 *  - the index is not opened at all on a file system with less than ST_FS_OPEN_MIN available
 *    (common/fsspace.c, which strata-meta's catalog uses too): a clear error instead of
 *    RocksDB's abort.
 * A block device as the data file has no file system to watch: only the index's counts.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/log.h"
#include "engine_int.h"
#include "internal.h"

#define FS_CHECK_OPS  64
#define FS_RECHECK_MS 100

static uint64_t fd_avail(int fd)
{
	struct statvfs sv;
	if (fd < 0 || fstatvfs(fd, &sv) < 0) {
		return UINT64_MAX; /* unknown: never a reason to refuse */
	}
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

uint64_t bd_fsspace_avail(const struct bd_engine *e)
{
	uint64_t a = fd_avail(e->fs_dbfd);
	if (e->fs_data_file) {
		uint64_t d = fd_avail(e->fd);
		a = d < a ? d : a;
	}
	return a;
}

void bd_fsspace_open(struct bd_engine *e, const char *dbpath, uint64_t min_free)
{
	struct stat st;
	e->fs_min_free = min_free;
	e->fs_dbfd = open(dbpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	e->fs_data_file = fstat(e->fd, &st) == 0 && S_ISREG(st.st_mode);
	if (min_free > 0) {
		bd_fsspace_check(e);
	}
}

void bd_fsspace_close(struct bd_engine *e)
{
	if (e->fs_dbfd >= 0) {
		close(e->fs_dbfd);
	}
	e->fs_dbfd = -1;
}

void bd_fsspace_check(struct bd_engine *e)
{
	if (e->fs_min_free == 0) {
		return;
	}
	uint64_t avail = bd_fsspace_avail(e);
	e->fs_checked_ms = st_now_ms();
	e->fs_ops = 0;
	/* A quarter of the reserve of hysteresis: the commits in flight when the state turns
	 * still use some, and refusing and admitting should not alternate write by write. */
	if (!e->fs_low && avail < e->fs_min_free) {
		e->fs_low = true;
		st_warn("the file system of the index or data file has %lu MiB available, below "
			"the %lu MiB reserve (--min-free): writes are refused with ENOSPC until "
			"space is freed",
			(unsigned long)(avail >> 20), (unsigned long)(e->fs_min_free >> 20));
	} else if (e->fs_low && avail >= e->fs_min_free + e->fs_min_free / 4) {
		e->fs_low = false;
		st_info("file system space is back (%lu MiB available): writes are accepted again "
			"(%lu refused meanwhile)",
			(unsigned long)(avail >> 20), (unsigned long)e->fs_refused);
	}
}

bool bd_fsspace_refuse(struct bd_engine *e)
{
	if (e->fs_min_free == 0) {
		return false;
	}
	if (e->fs_low ? st_now_ms() - e->fs_checked_ms >= FS_RECHECK_MS
		      : ++e->fs_ops >= FS_CHECK_OPS) {
		bd_fsspace_check(e);
	}
	if (e->fs_low) {
		e->fs_refused++;
	}
	return e->fs_low;
}

bool bd_fsspace_prewrite_ok(const struct bd_engine *e)
{
	return e->fs_min_free == 0 || bd_fsspace_avail(e) >= 2 * e->fs_min_free;
}
