/* Early acknowledgement (blockd/commit.c, ack_early; strata-blockd --ack-before-commit): a
 * plain write is replied to once its data is written and its edit is in memory, before its
 * group's index commit. The default replies after the commit. */
#include "engine_int.h"
#include "helpers.h"

#define MiB (1024u * 1024u)

/* Every group goes to the committer thread, whatever STRATA_TEST_COMMIT_INLINE says: the
 * reply then comes while the group is still in flight there. */
static void open_with_committer(struct tctx *t, uint64_t size, bool ack_before_commit)
{
	t_setup(t, size);
	struct bd_engine_opts o = {
		.data_path = t->data, .size = t->size, .ack_before_commit = ack_before_commit};
	cr_assert_eq(bd_engine_open(t->r, &o, &t->e), 0);
	cr_assert_eq(bd_engine_start_committer(t->e, true), 0);
}

Test(ack, write_replied_before_commit_is_read_and_flushed)
{
	struct tctx t;
	open_with_committer(&t, 64 * MiB, true);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 8 * 4096, 0x11), 0);
	cr_assert(bd_engine_groups_pending(t.e), "replied while its group is in flight");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 8 * 4096, 0x11), 0, "a read sees it");
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 4096, 4096, 0x22), 0);
	cr_assert_eq(t_flush(&t), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 4096, 4096, 0x22), 0);
	/* The flush drained every group: what it covered is in the index. */
	bd_engine_close(t.e);
	t.e = NULL;
	t_engine_open(&t);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x11), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 4096, 4096, 0x22), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 2 * 4096, 6 * 4096, 0x11), 0);
	t_close(&t);
}

Test(ack, fua_and_the_default_wait_for_the_commit)
{
	struct tctx t;
	open_with_committer(&t, 64 * MiB, true);
	void *b = t_buf(4096, 0x33);
	struct bd_req q = t_req(1, NULL, 0, 0, 0, 4096);
	q.fua = true;
	cr_assert_eq(t_write_q(&t, &q, b), 0);
	cr_assert_not(bd_engine_groups_pending(t.e), "a FUA write is replied to after its commit");
	free(b);
	bd_engine_close(t.e);
	t.e = NULL;
	open_with_committer(&t, 64 * MiB, false);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 4096, 0x44), 0);
	cr_assert_not(bd_engine_groups_pending(t.e), "by default: after the commit");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x44), 0);
	t_close(&t);
}

/* A full pool: the blocks an acknowledged overwrite displaced come back when its group has
 * committed, and a write that needs them waits for that instead of failing with ENOSPC. */
Test(ack, a_write_waits_for_blocks_a_pending_group_releases)
{
	struct tctx t;
	open_with_committer(&t, 1 * MiB, true); /* 256 blocks */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 200 * 4096, 0x01), 0);
	cr_assert_eq(t_flush(&t), 0);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 50 * 4096, 0x02), 0);
	cr_assert(bd_engine_groups_pending(t.e));
	/* 6 blocks are free; the 50 the overwrite displaced are not yet. */
	cr_assert_eq(t_write(&t, 1, NULL, 0, 1, 0, 56 * 4096, 0x03), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 50 * 4096, 0x02), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 50 * 4096, 150 * 4096, 0x01), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 1, 0, 56 * 4096, 0x03), 0);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 2, 0, 4096, 0x04), -ENOSPC, "and the pool is full");
	t_reopen_clean(&t);
	t_close(&t);
}
