/* The reply journal (blockd/journal.c, commit.c group_reply_first): a plain write is replied
 * to once its group's batch is journaled, before the RocksDB commit, and a process killed in
 * between loses nothing it replied to. */
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "common/crc32c.h"
#include "engine_int.h"
#include "helpers.h"

#define MiB (1024u * 1024u)

/* Every group goes to the committer thread, whatever STRATA_TEST_COMMIT_INLINE says: the
 * reply then comes while the group is still in flight there. */
static void open_with_committer(struct tctx *t, bool journal)
{
	struct bd_engine_opts o = {.data_path = t->data, .size = t->size, .journal = journal};
	cr_assert_eq(bd_engine_open(t->r, &o, &t->e), 0);
	cr_assert_eq(bd_engine_start_committer(t->e, true), 0);
}

enum held {
	HELD_NONE,   /* the committer runs */
	HELD_COMMIT, /* held before its first commit (bd_committer_hold) */
	HELD_SYNC,   /* held before its first flush's sync job; the journal must have switched */
};

/* In a child process: open the engine with its committer (held, if asked), write blocks
 * 0..n-1 of object obj in layer 1, block i filled with fill0 + i, each replied to, and die of
 * SIGKILL at once. The parent checks how it died and reopens the same files into t->e. */
static void kill_writer(struct tctx *t, enum held held, uint64_t obj, int n, int fill0)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct st_reactor *r;
		if (st_reactor_create(&r, 256) < 0) {
			_exit(2);
		}
		t->r = r;
		struct bd_engine_opts o = {.data_path = t->data, .size = t->size, .journal = true};
		if (bd_engine_open(r, &o, &t->e) < 0 || bd_engine_start_committer(t->e, true) < 0) {
			_exit(3);
		}
		if (held == HELD_COMMIT) {
			bd_committer_hold(t->e, true);
		} else if (held == HELD_SYNC) {
			bd_committer_hold_sync(t->e, true);
		}
		for (int i = 0; i < n; i++) {
			void *b = t_buf(4096, fill0 + i);
			struct bd_req q = t_req(1, NULL, 0, obj, (uint64_t)i * 4096, 4096);
			struct twait w = {.r = r};
			bd_write(t->e, &q, b, t_cb, &w);
			while (!w.done) {
				st_reactor_run(r);
			}
			if (w.err) {
				_exit(4);
			}
		}
		if (held == HELD_SYNC && t->e->jswitches < 1) {
			_exit(6); /* the test would not test the switch */
		}
		kill(getpid(), SIGKILL);
		_exit(5);
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);
}

static void killed_after_writes(struct tctx *t, enum held held, uint64_t obj, int n, int fill0)
{
	kill_writer(t, held, obj, n, fill0);
	struct bd_engine_opts o = {.data_path = t->data, .size = t->size, .journal = true};
	cr_assert_eq(bd_engine_open(t->r, &o, &t->e), 0);
}

Test(ack, write_replied_before_commit_is_read_and_flushed)
{
	struct tctx t;
	t_setup(&t, 64 * MiB);
	open_with_committer(&t, true);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 8 * 4096, 0x11), 0);
	cr_assert(bd_engine_groups_pending(t.e), "replied while its group is in flight");
	cr_assert_geq(t_space(&t).journaled_groups, 1);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 8 * 4096, 0x11), 0, "a read sees it");
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 4096, 4096, 0x22), 0);
	cr_assert_eq(t_flush(&t), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 4096, 4096, 0x22), 0);
	t_reopen_clean(&t);
	cr_assert_eq(t_space(&t).journal_replayed, 0, "a clean close leaves nothing to replay");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x11), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 4096, 4096, 0x22), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 2 * 4096, 6 * 4096, 0x11), 0);
	t_close(&t);
}

Test(ack, fua_and_no_journal_wait_for_the_commit)
{
	struct tctx t;
	t_setup(&t, 64 * MiB);
	open_with_committer(&t, true);
	void *b = t_buf(4096, 0x33);
	struct bd_req q = t_req(1, NULL, 0, 0, 0, 4096);
	q.fua = true;
	cr_assert_eq(t_write_q(&t, &q, b), 0);
	cr_assert_not(bd_engine_groups_pending(t.e), "a FUA write is replied to after its commit");
	free(b);
	bd_engine_close(t.e);
	t.e = NULL;
	open_with_committer(&t, false);
	cr_assert_eq(t_write(&t, 1, NULL, 0, 0, 0, 4096, 0x44), 0);
	cr_assert_not(bd_engine_groups_pending(t.e), "without the journal: after the commit");
	cr_assert_eq(t_space(&t).journaled_groups, 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x44), 0);
	t_close(&t);
}

/* `rounds` rounds of killed_after_writes on objects 0, 1, ... (n blocks each, object o's block
 * i written with fill0 + o * n + i), each followed by a clean rebuild and a read of every
 * object written so far. Leaves the engine closed and t->e NULL. */
static void killed_rounds(struct tctx *t, enum held held, int rounds, int n, int fill0)
{
	for (int round = 0; round < rounds; round++) {
		killed_after_writes(t, held, (uint64_t)round, n, fill0 + round * n);
		const struct bd_fsck_report *rep = bd_engine_fsck_report(t->e);
		cr_assert_eq(rep->leaked + rep->missing + rep->double_refs, 0, "round %d", round);
		for (int o2 = 0; o2 <= round; o2++) {
			for (int i = 0; i < n; i++) {
				cr_assert_eq(t_check(t, 1, NULL, 0, (uint64_t)o2,
						     (uint64_t)i * 4096, 4096, fill0 + o2 * n + i),
					     0, "round %d: object %d block %d", round, o2, i);
			}
		}
		bd_engine_close(t->e);
		t->e = NULL;
	}
}

/* A child process writes, and is killed with SIGKILL the moment the reply comes (its group
 * handed to the committer thread, maybe not yet in RocksDB). The parent reopens the same files:
 * every write replied to must read back, and the rebuild must be clean. */
Test(ack, killed_after_the_reply_loses_nothing)
{
	struct tctx t;
	t_setup(&t, 64 * MiB);
	open_with_committer(&t, true);
	bd_engine_close(t.e); /* create the files here; the child reopens them */
	t.e = NULL;
	/* Object `round`, 16 blocks, each written with its own pattern. */
	killed_rounds(&t, HELD_NONE, 8, 16, 0x40);
	t_close(&t);
}

/* The journal switches files at its trim mark (4 KiB here: the first few groups) and asks a
 * sync job to empty the old one; the job is held at the committer, so the old file keeps
 * groups whose WAL records were never written out, and the groups after the switch wait in
 * the new file, replied to but not committed. A child writes 96 blocks, each replied to, and
 * is killed: every one reads back only if the replay reads both files, the old one first. */
Test(ack, killed_while_the_journal_switches_files_loses_nothing, .timeout = 60)
{
	struct tctx t;
	t_setup(&t, 64 * MiB);
	cr_assert_eq(setenv("STRATA_JOURNAL_TRIM", "4096", 1), 0);
	open_with_committer(&t, true);
	bd_engine_close(t.e);
	t.e = NULL;
	killed_rounds(&t, HELD_SYNC, 3, 96, 0x10);
	unsetenv("STRATA_JOURNAL_TRIM");
	t_close(&t);
}

/* A node wiped by removing its index (and not its journal): the journal left beside the new
 * index was written for another store, and replaying it would install lists that the new
 * store never wrote. The groups of a killed writer are in the journal; after the index is
 * removed, the reopened store reads zeros where they were, and fsck is clean. */
Test(ack, a_journal_of_another_store_is_not_replayed, .timeout = 60)
{
	struct tctx t;
	t_setup(&t, 64 * MiB);
	open_with_committer(&t, true);
	bd_engine_close(t.e);
	t.e = NULL;
	kill_writer(&t, HELD_COMMIT, 0, 3, 0x71); /* journaled only: the committer was held */
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s.db'", t.data);
	cr_assert_eq(system(cmd), 0);
	struct bd_engine_opts o = {.data_path = t.data, .size = t.size, .journal = true};
	cr_assert_eq(bd_engine_open(t.r, &o, &t.e), 0);
	cr_assert_eq(t_space(&t).journal_replayed, 0, "another store's groups were replayed");
	const struct bd_fsck_report *rep = bd_engine_fsck_report(t.e);
	cr_assert_eq(rep->leaked + rep->missing + rep->double_refs, 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(t_check(&t, 1, NULL, 0, 0, (uint64_t)i * 4096, 4096, 0), 0,
			     "block %d reads as zeros", i);
	}
	t_close(&t);
}

/* Writes the three blocks of held_writes(): each its own group, the first at the committer
 * (held there), the next two sealed behind it while it is busy, the third merged into the
 * second. Every write is replied to. */
static void held_writes(struct tctx *t)
{
	bd_committer_hold(t->e, true);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(t_write(t, 1, NULL, 0, 0, (uint64_t)i * 4096, 4096, 0x51 + i), 0,
			     "write %d replied to", i);
	}
}

static void held_check(struct tctx *t)
{
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(t_check(t, 1, NULL, 0, 0, (uint64_t)i * 4096, 4096, 0x51 + i), 0,
			     "block %d", i);
	}
}

/* A busy committer does not hold up the replies of the groups behind it: they are journaled
 * and replied to at once, and wait (merged into one batch) for the committer to be free.
 * Killed before any of them reached RocksDB, the journal gives all of them back in order. */
Test(ack, groups_behind_a_busy_committer_reply_at_once, .timeout = 60)
{
	struct tctx t;
	t_setup(&t, 64 * MiB);
	open_with_committer(&t, true);
	held_writes(&t);
	cr_assert_geq(t_space(&t).awaited_groups, 2, "replied while the committer was busy");
	cr_assert(bd_engine_groups_pending(t.e));
	held_check(&t);
	bd_committer_hold(t.e, false);
	cr_assert_eq(t_flush(&t), 0);
	cr_assert_not(bd_engine_groups_pending(t.e), "a flush commits every group");
	t_reopen_clean(&t);
	held_check(&t);
	bd_engine_close(t.e);
	t.e = NULL;

	/* New patterns over the same blocks, the committer held: the old ones must not come
	 * back. */
	killed_after_writes(&t, HELD_COMMIT, 0, 3, 0x61);
	cr_assert_geq(t_space(&t).journal_replayed, 2, "the held group and the one behind it");
	const struct bd_fsck_report *rep = bd_engine_fsck_report(t.e);
	cr_assert_eq(rep->leaked + rep->missing + rep->double_refs, 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(t_check(&t, 1, NULL, 0, 0, (uint64_t)i * 4096, 4096, 0x61 + i), 0,
			     "block %d after the kill", i);
	}
	t_close(&t);
}

/* A full pool: the blocks an acknowledged overwrite displaced come back when its group has
 * committed, and a write that needs them waits for that instead of failing with ENOSPC. */
Test(ack, a_write_waits_for_blocks_a_pending_group_releases)
{
	struct tctx t;
	t_setup(&t, 1 * MiB); /* 256 blocks */
	open_with_committer(&t, true);
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

/* A power cut is a reboot: give the journal's boot record (seq 0, the kernel's boot id when
 * the journal began) another boot's id, so that the replay checks the records' data. */
static void journal_from_another_boot(const struct tctx *t)
{
	char path[400];
	snprintf(path, sizeof(path), "%s.db.journal", t->data);
	int fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0, "%s", path);
	uint8_t hdr[24];
	cr_assert_eq(pread(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	uint32_t len;
	uint64_t seq;
	memcpy(&len, hdr + 4, 4);
	memcpy(&seq, hdr + 8, 8);
	cr_assert_eq(seq, 0, "the journal starts with its boot record");
	cr_assert_eq(len, 52, "the boot id, then the store's uuid");
	uint8_t rec[52];
	cr_assert_eq(pread(fd, rec, sizeof(rec), sizeof(hdr)), (ssize_t)sizeof(rec));
	memcpy(rec, "00000000-0000-4000-8000-000000000000", 36); /* the uuid stays */
	uint32_t crc = st_crc32c(st_crc32c(0, &seq, sizeof(seq)), rec, sizeof(rec));
	memcpy(hdr + 16, &crc, 4);
	cr_assert_eq(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	cr_assert_eq(pwrite(fd, rec, sizeof(rec), sizeof(hdr)), (ssize_t)sizeof(rec));
	close(fd);
}

/* A power cut can keep a journal record (page cache, written back by the kernel) and lose the
 * data it points at (the device's volatile cache). After a reboot, replay checks the record's
 * new blocks on disk: a group whose data is missing is dropped with everything after it (none of it
 * was flushed), and its blocks read the old data instead of a checksum error. */
Test(ack, a_journaled_group_whose_data_was_lost_is_dropped, .timeout = 60)
{
	struct tctx t;
	t_setup(&t, 64 * MiB);
	killed_after_writes(&t, HELD_NONE, 0, 3, 0x21); /* committed */
	bd_engine_close(t.e);
	t.e = NULL;
	kill_writer(&t, HELD_COMMIT, 0, 3, 0x31); /* journaled only: the committer was held */
	/* Lose the data of the second write, as a power cut (a reboot) would. */
	uint8_t want[4096], zero[4096] = {0};
	memset(want, 0x32, sizeof(want));
	t_clobber_block(&t, want, zero, 64 * MiB);
	journal_from_another_boot(&t);
	struct bd_engine_opts o = {.data_path = t.data, .size = t.size, .journal = true};
	cr_assert_eq(bd_engine_open(t.r, &o, &t.e), 0);
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 0, 4096, 0x31), 0, "the intact group is replayed");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 4096, 4096, 0x22), 0,
		     "the lost one reads old data");
	cr_assert_eq(t_check(&t, 1, NULL, 0, 0, 8192, 4096, 0x23), 0, "and so does the one after");
	cr_assert_eq(t_space(&t).checksum_errors, 0);
	const struct bd_fsck_report *rep = bd_engine_fsck_report(t.e);
	cr_assert_eq(rep->leaked + rep->missing + rep->double_refs, 0);
	t_close(&t);
}
