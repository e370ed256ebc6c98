/*
 * cutfs: a FUSE file system that loses what was not synced when the power is cut.
 *
 *   cutfs BACKING MOUNTPOINT [-f]
 *
 * Every file and directory of BACKING appears under MOUNTPOINT. Names and sizes (create,
 * unlink, rename, mkdir, truncate) reach BACKING at once. File data does not: a write is kept
 * in memory, like a disk's volatile write cache or the page cache, and reaches BACKING only
 * when that file is fsync'ed or fdatasync'ed. Reads see every write.
 *
 * What happens to the unsynced writes at unmount depends on a signal sent before it:
 *   none      a clean shutdown: they are all written (in order)
 *   SIGUSR1   a power cut: all of them are lost
 *   SIGUSR2   a power cut after the device wrote some of its cache: each write is kept or lost
 *             at random (seed: $CUTFS_SEED, else the pid), in any combination, so a later write
 *             may survive where an earlier one was lost
 *
 * So after `kill -9` of the program using the mount, a signal and `fusermount3 -u`, BACKING
 * holds exactly what a machine would find after losing power at that moment, and whatever
 * the program promised to be durable must be there. The test that uses it:
 * tests/integration/test_blockd_powercut.sh.
 *
 * The model is deliberately harsh where a real file system is kind (nothing reaches the
 * disk unless synced) and kind where it is harsh (names and sizes are always durable). It is
 * single-threaded (-s): speed does not matter here.
 */
#define FUSE_USE_VERSION 35
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct extent {
	off_t off;
	size_t len;
	uint8_t *data;
};

/* The unsynced state of one backing file, by inode number. */
struct file {
	ino_t ino;
	int fd;     /* our own descriptor of the backing file, for the writes at a sync */
	off_t size; /* the size readers see */
	struct extent *ext;
	size_t next, cap;
	struct file *hnext;
};

#define NBUCKETS 1024

static struct file *files[NBUCKETS];
static int root_fd = -1;
static volatile sig_atomic_t cut_mode; /* 0 clean, 1 lose everything, 2 lose at random */

static const char *rel(const char *path)
{
	while (*path == '/') {
		path++;
	}
	return *path ? path : ".";
}

static struct file *file_find(ino_t ino)
{
	for (struct file *f = files[ino % NBUCKETS]; f; f = f->hnext) {
		if (f->ino == ino) {
			return f;
		}
	}
	return NULL;
}

static struct file *file_get(int fd)
{
	struct stat st;
	if (fstat(fd, &st) != 0) {
		return NULL;
	}
	struct file *f = file_find(st.st_ino);
	if (f) {
		return f;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		return NULL;
	}
	/* Read-write whatever the opener asked for: the sync writes through it. */
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	f->fd = open(proc, O_RDWR | O_CLOEXEC);
	if (f->fd < 0) {
		free(f);
		return NULL;
	}
	f->ino = st.st_ino;
	f->size = st.st_size;
	f->hnext = files[f->ino % NBUCKETS];
	files[f->ino % NBUCKETS] = f;
	return f;
}

static void file_drop_extents(struct file *f)
{
	for (size_t i = 0; i < f->next; i++) {
		free(f->ext[i].data);
	}
	f->next = 0;
}

static void file_forget(ino_t ino)
{
	for (struct file **pp = &files[ino % NBUCKETS]; *pp; pp = &(*pp)->hnext) {
		if ((*pp)->ino == ino) {
			struct file *f = *pp;
			*pp = f->hnext;
			file_drop_extents(f);
			close(f->fd);
			free(f->ext);
			free(f);
			return;
		}
	}
}

/* Write the pending extents to the backing file, in order, and sync it. mode: 0 all of them,
 * 1 none, 2 each at random (cut_destroy). */
static int file_apply(struct file *f, int mode)
{
	int fd = f->fd, rc = 0;
	for (size_t i = 0; i < f->next; i++) {
		struct extent *e = &f->ext[i];
		if (mode == 1 || (mode == 2 && rand() % 2)) {
			continue;
		}
		if (pwrite(fd, e->data, e->len, e->off) != (ssize_t)e->len) {
			rc = -errno;
		}
	}
	file_drop_extents(f);
	if (fdatasync(fd) != 0 && rc == 0) {
		rc = -errno;
	}
	struct stat st;
	if (fstat(fd, &st) == 0) {
		f->size = st.st_size;
	}
	return rc;
}

static int cut_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	(void)fi;
	if (fstatat(root_fd, rel(path), st, AT_SYMLINK_NOFOLLOW) != 0) {
		return -errno;
	}
	struct file *f = S_ISREG(st->st_mode) ? file_find(st->st_ino) : NULL;
	if (f) {
		st->st_size = f->size;
	}
	return 0;
}

static int cut_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	(void)off, (void)fi, (void)flags;
	int fd = openat(root_fd, rel(path), O_RDONLY | O_DIRECTORY);
	if (fd < 0) {
		return -errno;
	}
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (fill(buf, de->d_name, NULL, 0, 0)) {
			break;
		}
	}
	closedir(d);
	return 0;
}

static int cut_mkdir(const char *path, mode_t mode)
{
	return mkdirat(root_fd, rel(path), mode) ? -errno : 0;
}

static int cut_rmdir(const char *path)
{
	return unlinkat(root_fd, rel(path), AT_REMOVEDIR) ? -errno : 0;
}

static int cut_unlink(const char *path)
{
	struct stat st;
	if (fstatat(root_fd, rel(path), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_nlink == 1) {
		file_forget(st.st_ino);
	}
	return unlinkat(root_fd, rel(path), 0) ? -errno : 0;
}

static int cut_rename(const char *from, const char *to, unsigned int flags)
{
	if (flags) {
		return -EINVAL;
	}
	struct stat st;
	if (fstatat(root_fd, rel(to), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_nlink == 1) {
		file_forget(st.st_ino); /* replaced */
	}
	return renameat(root_fd, rel(from), root_fd, rel(to)) ? -errno : 0;
}

/* A new size is durable at once; unsynced data past it is gone. */
static int truncate_fd(int fd, off_t size)
{
	struct file *f = file_get(fd);
	if (!f) {
		return -errno;
	}
	size_t n = 0;
	for (size_t i = 0; i < f->next; i++) {
		struct extent *e = &f->ext[i];
		if (e->off >= size) {
			free(e->data);
			continue;
		}
		if (e->off + (off_t)e->len > size) {
			e->len = (size_t)(size - e->off);
		}
		f->ext[n++] = *e;
	}
	f->next = n;
	if (ftruncate(fd, size) != 0) {
		return -errno;
	}
	f->size = size;
	return 0;
}

static int cut_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	if (fi) {
		return truncate_fd((int)fi->fh, size);
	}
	int fd = openat(root_fd, rel(path), O_WRONLY);
	if (fd < 0) {
		return -errno;
	}
	int rc = truncate_fd(fd, size);
	close(fd);
	return rc;
}

static int open_backing(const char *path, int flags, mode_t mode, struct fuse_file_info *fi)
{
	/* Never O_DIRECT on the backing file (writes reach it only at a sync), never O_TRUNC
	 * behind our back (done through truncate_fd so that the unsynced state follows). */
	int fd = openat(root_fd, rel(path), (flags & ~(O_DIRECT | O_TRUNC | O_APPEND)) | O_CLOEXEC,
			mode);
	if (fd < 0) {
		return -errno;
	}
	if (flags & O_TRUNC) {
		int rc = truncate_fd(fd, 0);
		if (rc) {
			close(fd);
			return rc;
		}
	}
	fi->fh = (uint64_t)fd;
	return 0;
}

static int cut_open(const char *path, struct fuse_file_info *fi)
{
	return open_backing(path, fi->flags, 0, fi);
}

static int cut_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return open_backing(path, fi->flags | O_CREAT, mode, fi);
}

static int cut_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)path;
	int fd = (int)fi->fh;
	struct file *f = file_get(fd);
	if (!f) {
		return -errno;
	}
	if (off >= f->size) {
		return 0;
	}
	if ((off_t)size > f->size - off) {
		size = (size_t)(f->size - off);
	}
	ssize_t got = pread(fd, buf, size, off);
	if (got < 0) {
		return -errno;
	}
	memset(buf + got, 0, size - (size_t)got);
	for (size_t i = 0; i < f->next; i++) {
		struct extent *e = &f->ext[i];
		off_t lo = e->off > off ? e->off : off;
		off_t hi = e->off + (off_t)e->len < off + (off_t)size ? e->off + (off_t)e->len
								      : off + (off_t)size;
		if (lo < hi) {
			memcpy(buf + (lo - off), e->data + (lo - e->off), (size_t)(hi - lo));
		}
	}
	return (int)size;
}

static int cut_write(const char *path, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)path;
	struct file *f = file_get((int)fi->fh);
	if (!f) {
		return -errno;
	}
	if (fi->flags & O_APPEND) {
		off = f->size;
	}
	if (f->next == f->cap) {
		size_t nc = f->cap ? f->cap * 2 : 64;
		struct extent *ne = realloc(f->ext, nc * sizeof(*ne));
		if (!ne) {
			return -ENOMEM;
		}
		f->ext = ne;
		f->cap = nc;
	}
	uint8_t *copy = malloc(size ? size : 1);
	if (!copy) {
		return -ENOMEM;
	}
	memcpy(copy, buf, size);
	f->ext[f->next++] = (struct extent){off, size, copy};
	if (off + (off_t)size > f->size) {
		f->size = off + (off_t)size;
	}
	return (int)size;
}

static int cut_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path, (void)datasync;
	struct file *f = file_get((int)fi->fh);
	if (!f) {
		return -errno;
	}
	return file_apply(f, 0);
}

static int cut_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path, (void)datasync, (void)fi;
	return 0; /* names are durable at once */
}

static int cut_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path, (void)fi;
	return 0; /* close() makes nothing durable */
}

static int cut_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	close((int)fi->fh);
	return 0;
}

static int cut_statfs(const char *path, struct statvfs *sv)
{
	(void)path;
	return fstatvfs(root_fd, sv) ? -errno : 0;
}

static int cut_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	(void)fi;
	return utimensat(root_fd, rel(path), tv, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
}

static int cut_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	(void)fi;
	return fchmodat(root_fd, rel(path), mode, 0) ? -errno : 0;
}

static int cut_access(const char *path, int mask)
{
	return faccessat(root_fd, rel(path), mask, 0) ? -errno : 0;
}

/* At unmount: a clean shutdown writes what is pending, a cut loses all or some of it. */
static void cut_destroy(void *data)
{
	(void)data;
	int mode = cut_mode;
	const char *seed = getenv("CUTFS_SEED");
	srand(seed ? (unsigned)strtoul(seed, NULL, 10) : (unsigned)getpid());
	size_t pending = 0, files_n = 0;
	for (size_t b = 0; b < NBUCKETS; b++) {
		while (files[b]) {
			struct file *f = files[b];
			files[b] = f->hnext;
			pending += f->next;
			files_n += f->next ? 1 : 0;
			int rc = file_apply(f, mode);
			if (rc != 0) {
				fprintf(stderr, "cutfs: writing inode %lu: %s\n",
					(unsigned long)f->ino, strerror(-rc));
			}
			close(f->fd);
			free(f->ext);
			free(f);
		}
	}
	fprintf(stderr, "cutfs: unmounted (%s): %zu unsynced writes in %zu files\n",
		mode == 0   ? "clean"
		: mode == 1 ? "power cut, all lost"
			    : "power cut, some lost",
		pending, files_n);
}

static void on_signal(int sig)
{
	cut_mode = sig == SIGUSR1 ? 1 : 2;
}

static const struct fuse_operations ops = {
	.getattr = cut_getattr,
	.readdir = cut_readdir,
	.mkdir = cut_mkdir,
	.rmdir = cut_rmdir,
	.unlink = cut_unlink,
	.rename = cut_rename,
	.truncate = cut_truncate,
	.open = cut_open,
	.create = cut_create,
	.read = cut_read,
	.write = cut_write,
	.fsync = cut_fsync,
	.fsyncdir = cut_fsyncdir,
	.flush = cut_flush,
	.release = cut_release,
	.statfs = cut_statfs,
	.utimens = cut_utimens,
	.chmod = cut_chmod,
	.access = cut_access,
	.destroy = cut_destroy,
};

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: cutfs BACKING MOUNTPOINT [-f]\n");
		return 2;
	}
	root_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0) {
		fprintf(stderr, "cutfs: %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	char *fargv[8];
	int fargc = 0;
	fargv[fargc++] = argv[0];
	fargv[fargc++] = argv[2];
	fargv[fargc++] = "-s";
	fargv[fargc++] = "-o";
	fargv[fargc++] = "default_permissions";
	for (int i = 3; i < argc && fargc < 7; i++) {
		fargv[fargc++] = argv[i];
	}
	fargv[fargc] = NULL;
	return fuse_main(fargc, fargv, &ops, NULL);
}
