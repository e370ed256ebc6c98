/* Free space on the host file system under a daemon's RocksDB database. */
#ifndef STRATA_COMMON_FSSPACE_H
#define STRATA_COMMON_FSSPACE_H

#include <stdint.h>

/* Less than this available and RocksDB cannot open a database: Debian's librocksdb (built with
 * assertions) aborts the process in its info logger inside DB::Open. */
#define ST_FS_OPEN_MIN (1ull << 20)

/* Bytes available to this process on the file system holding path, or, when path does not
 * exist yet, its parent directory; UINT64_MAX when unknown. */
uint64_t st_fs_avail(const char *path) __attribute__((nonnull));

/* 0, or -ENOSPC (logged, naming `what` and path) when path's file system has less than
 * ST_FS_OPEN_MIN available: a clear error instead of RocksDB's abort. */
int st_fs_room_to_open(const char *path, const char *what) __attribute__((nonnull));

#endif
