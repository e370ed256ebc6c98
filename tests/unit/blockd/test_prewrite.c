/* The prewriter (blockd/prewrite.c): written free space ahead of allocation on a sparse file. */
#include <fcntl.h>
#include <unistd.h>

#include "engine_int.h"
#include "helpers.h"

#define MiB (1024u * 1024u)

static void settle(struct tctx *t)
{
	while (t->e->pw.busy) {
		cr_assert_geq(st_reactor_run_once(t->r, -1), 0);
	}
}

/* Where the data file's first hole starts (everything before it is written). */
static uint64_t first_hole(struct tctx *t)
{
	int fd = open(t->data, O_RDONLY);
	cr_assert_geq(fd, 0);
	off_t h = lseek(fd, 0, SEEK_HOLE);
	close(fd);
	cr_assert_geq(h, 0);
	return (uint64_t)h;
}

Test(prewrite, keeps_written_space_ahead_of_allocation)
{
	struct tctx t;
	t_setup(&t, 64 * MiB);
	t.prewrite = 4 * MiB;
	t_engine_open(&t);
	settle(&t);
	struct bd_space s = t_space(&t);
	cr_assert_geq(s.written_blocks, 1024, "4 MiB written ahead at open");
	cr_assert_eq(s.prewritten_blocks, s.written_blocks);
	cr_assert_lt(s.written_blocks, 16384, "not the whole file");
	cr_assert_geq(first_hole(&t), s.written_blocks * 4096, "the file really holds them");
	/* 8 MiB of writes: every block comes from the written region, which keeps growing. */
	for (uint64_t obj = 0; obj < 8; obj++) {
		cr_assert_eq(t_write(&t, 1, NULL, 0, obj, 0, 1 * MiB, (int)obj + 1), 0);
		settle(&t);
	}
	s = t_space(&t);
	cr_assert_eq(s.unready_blocks, 0, "no write went to unwritten file space");
	cr_assert_geq(s.written_blocks, 2048 + 1024);
	cr_assert_eq(s.free_blocks, 16384 - 2048);
	for (uint64_t obj = 0; obj < 8; obj++) {
		cr_assert_eq(t_check(&t, 1, NULL, 0, obj, 0, 1 * MiB, (int)obj + 1), 0);
	}
	/* Reopened, the region is found again from the file itself. */
	uint64_t written = s.written_blocks;
	t_reopen(&t);
	settle(&t);
	cr_assert_geq(t_space(&t).written_blocks, written);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 3, 0, 1 * MiB, 4), 0);
	t_close(&t);
}

/* Blocks in use past the written region hold data: the prewriter must skip them. Build one:
 * data at blocks 256-511, a hole (free blocks) at 0-255, then reopen with the prewriter. */
Test(prewrite, never_overwrites_live_blocks)
{
	struct tctx t;
	t_setup(&t, 8 * MiB);
	t_engine_open(&t); /* prewriter off: the first writes allocate from block 0 */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 1 * MiB, 0x11), 0);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 1, 0, 1 * MiB, 0x22), 0);
	struct twait w = {.r = t.r};
	struct bd_req q = t_req(1, NULL, 0, 0, 0, 1 * MiB);
	bd_trim(t.e, &q, t_cb, &w);
	cr_assert_eq(t_wait(&t, &w), 0);
	cr_assert_eq(t_flush(&t), 0);
	bd_engine_close(t.e);
	t.e = NULL;
	int fd = open(t.data, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1 * MiB), 0);
	close(fd);
	cr_assert_eq(first_hole(&t), 0);

	t.prewrite = 4 * MiB;
	t_engine_open(&t);
	settle(&t);
	struct bd_space s = t_space(&t);
	cr_assert_geq(s.written_blocks, 256 + 1024, "1024 free blocks written, plus the data");
	cr_assert_eq(s.written_blocks - s.prewritten_blocks, 256,
		     "the 256 blocks of object 1 joined the region without being written");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 1, 0, 1 * MiB, 0x22), 0, "object 1 intact");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 1 * MiB, 0), 0);
	t_reopen_clean(&t);
	t_close(&t);
}

/* A write that needs the blocks a prewrite holds waits for them instead of failing. */
Test(prewrite, a_write_waits_for_reserved_blocks_instead_of_enospc)
{
	struct tctx t;
	t_setup(&t, 5 * MiB); /* 1280 blocks */
	t.prewrite = 4 * MiB;
	t_engine_open(&t);
	cr_assert(t.e->pw.busy, "open started the first prewrite");
	cr_assert_eq(t.e->alloc.nfree, 1280 - t.e->pw.len);
	cr_assert_eq(t_space(&t).free_blocks, 1280, "reserved blocks still count as free");
	/* More than the allocator has free while the prewrite runs, less than the file. */
	uint32_t len = (1280 - t.e->pw.len + 1) * 4096;
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, len, 0x33), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, len, 0x33), 0);
	settle(&t);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 1, 0, 1 * MiB, 0x44), -ENOSPC,
		     "a write that does not fit still gets ENOSPC");
	t_close(&t);
}

/* Off: nothing is zero-filled, and a written file (a block device's case) needs nothing. */
Test(prewrite, off_or_not_needed)
{
	struct tctx t;
	t_setup(&t, 16 * MiB);
	t_engine_open(&t);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 1 * MiB, 0x55), 0);
	struct bd_space s = t_space(&t);
	cr_assert_eq(s.prewritten_blocks, 0);
	cr_assert_eq(s.unready_blocks, 256);
	bd_engine_close(t.e);
	t.e = NULL;
	int fd = open(t.data, O_WRONLY | O_DIRECT);
	cr_assert_geq(fd, 0);
	void *z = t_buf(1 * MiB, 0);
	for (uint64_t off = 0; off < 16 * MiB; off += MiB) {
		if (off != 0) { /* block 0-255 hold object 0 */
			cr_assert_eq(pwrite(fd, z, MiB, (off_t)off), (ssize_t)MiB);
		}
	}
	free(z);
	close(fd);
	t.prewrite = 4 * MiB;
	t_engine_open(&t);
	cr_assert_not(t.e->pw.busy);
	s = t_space(&t);
	cr_assert_eq(s.written_blocks, 4096, "the whole file is written");
	cr_assert_eq(s.prewritten_blocks, 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 1 * MiB, 0x55), 0);
	t_close(&t);
}
