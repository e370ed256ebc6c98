/*
 * The reply journal: what lets blockd reply to a write before its index commit without a
 * killed process losing it.
 *
 * Why. A write's index commit (rocksdb_write: the memtable insert, a skiplist search, and the
 * WAL append) was about a third of blockd's CPU per 4 KiB write, all of it on the write's reply
 * path. Replying first measured +18% at QD1 and +29% at QD32, but the RocksDB WAL append inside
 * that commit is what made a reply survive kill -9 (a write() lands in the page cache, which
 * outlives the process). So the group's batch is first appended here, one write() per group,
 * then the group's plain writes are replied to, then the batch is committed to RocksDB as
 * before (inline or on the committer thread).
 *
 * Record: magic(4) len(4) seq(8) crc32c(4) pad(4) | the batch's serialized WriteBatch. The
 * batch carries the 'J' key = seq, so RocksDB knows the last journaled group it applied. The
 * file starts with a boot record, seq 0 (never above the applied mark, so never applied), whose
 * payload is the kernel's boot id when the file was started (see record_data_intact) and the
 * store's uuid (a file written for another store, left beside a replaced index, is not
 * replayed). At
 * open, every intact record with seq above it is applied in order (a torn tail ends the
 * replay: its group was never replied to), the data file and then the WAL are synced and the
 * journal emptied, all before the rebuild derives the allocator from the index. A record
 * whose new blocks do not read back with their crcs (its data was lost in a power cut while
 * the record survived in the page cache) also ends the replay: see record_data_intact.
 * Records are needed only until their batch is in RocksDB's WAL, so the journal is emptied
 * once it has grown past JOURNAL_TRIM: with a committer, by switching to a second file while
 * a sync job makes the first one's groups durable and empties it (see "Two files" below).
 *
 * Durability is unchanged otherwise: a flush drains every group into RocksDB before it syncs
 * the WAL (bd_flush), so the journal is never synced; after a power cut an unflushed write may
 * be lost, as before. FUA writes, compare-and-write outcomes, write-zeroes and trim reply after
 * their commit as before (commit.c, replies_first).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "engine_int.h"
#include "internal.h"

#define JOURNAL_MAGIC 0x534a5231u /* "SJR1" */
#define JOURNAL_HDR   24
#define JOURNAL_TRIM  (64u << 20)
#define JOURNAL_MAX   (256u << 20)        /* one record; a group is far smaller */
#define BOOT_ID_LEN   36u                 /* /proc/sys/kernel/random/boot_id, without the newline */
#define BOOT_REC_LEN  (BOOT_ID_LEN + 16u) /* the boot id, then the store's uuid */
_Static_assert(sizeof(((struct bd_engine *)0)->jboot) >= BOOT_REC_LEN, "jboot holds the record");

static const uint8_t J_KEY[1] = {'J'};

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint32_t record_crc(uint64_t seq, const void *data, size_t len)
{
	return st_crc32c(st_crc32c(0, &seq, sizeof(seq)), data, len);
}

/*
 * Is the data a record's lists point at on disk? The record reached the journal, a page-cache
 * file the kernel writes back when it likes, but the data writes it describes sit in the
 * device's volatile cache until a flush: after a power cut the record can outlive them. Each
 * block a list of the record maps that the committed list does not (the record's new data)
 * is read back and its crc checked. A record that fails is treated as a torn tail: it and
 * everything after it were never flushed (a flush commits every group and empties the
 * journal), so dropping them is allowed, and their blocks keep reading the old data instead
 * of a checksum error.
 *
 * Only a power cut can lose them, and a power cut is a reboot: when the journal's boot record
 * names the running kernel's boot id, the process was killed and the machine stayed up, so
 * every data write the records describe completed before its record was written and is still
 * there (in the device's cache or on the medium). The check is then skipped: reading back a
 * killed node's last second of writes, 4 KiB at a time, took 7 s after 400 MiB of 1 MiB
 * writes, long enough to fail a restart. (A device whose volatile cache can be lost while this
 * kernel keeps running, such as a remote target that loses power, is outside this rule.) When it
 * does run, contiguous blocks (the common case: a group's blocks are allocated in runs) are read
 * with one pread.
 */
#define CHECK_BLOCKS 64u /* blocks per read-back; a list maps BD_SEG_BLOCKS */

struct data_check {
	struct bd_engine *e;
	uint8_t *buf; /* CHECK_BLOCKS aligned blocks */
	uint64_t bad_pblk;
};

/* Read n contiguous blocks from pblk and check each against its crc. */
static bool run_intact(struct data_check *dc, const struct bd_bmap *b, uint32_t n)
{
	size_t len = (size_t)n * BD_BLOCK;
	if (pread(dc->e->fd, dc->buf, len, (off_t)(b[0].pblk * BD_BLOCK)) != (ssize_t)len) {
		dc->bad_pblk = b[0].pblk;
		return false;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (st_crc32c(0, dc->buf + (size_t)i * BD_BLOCK, BD_BLOCK) != b[i].crc) {
			dc->bad_pblk = b[i].pblk;
			return false;
		}
	}
	return true;
}

static int check_list(void *arg, const struct bd_mkey *k, const struct bd_extmap *m, int err)
{
	struct data_check *dc = arg;
	if (err || m == NULL) {
		return -EBADMSG;
	}
	struct bd_extmap old;
	int rc = bd_index_get_map(dc->e->ix, k, &old);
	if (rc < 0) {
		return rc;
	}
	struct bd_bmap nb[BD_SEG_BLOCKS], ob[BD_SEG_BLOCKS], run[CHECK_BLOCKS];
	bd_extmap_expand(m, nb);
	if (rc > 0) {
		bd_extmap_expand(&old, ob);
	}
	uint32_t n = 0;
	for (uint32_t i = 0; i <= BD_SEG_BLOCKS; i++) {
		/* BD_PBLK_NONE and BD_PBLK_ZERO, the two above every real block, hold no data. */
		bool fresh = i < BD_SEG_BLOCKS && nb[i].pblk < BD_PBLK_NONE &&
			     !(rc > 0 && ob[i].pblk == nb[i].pblk);
		if (fresh && n > 0 && n < CHECK_BLOCKS && run[n - 1].pblk + 1 == nb[i].pblk) {
			run[n++] = nb[i];
			continue;
		}
		if (n > 0 && !run_intact(dc, run, n)) {
			return 1;
		}
		n = 0;
		if (fresh) {
			run[n++] = nb[i];
		}
	}
	return 0;
}

/* 0: every new block of the record is on disk; 1: one is not (dc->bad_pblk); or -errno. */
static int record_data_intact(struct bd_engine *e, const uint8_t *rec, size_t len,
			      uint64_t *bad_pblk)
{
	struct data_check dc = {.e = e};
	if (posix_memalign((void **)&dc.buf, BD_BLOCK, (size_t)CHECK_BLOCKS * BD_BLOCK) != 0) {
		return -ENOMEM;
	}
	int rc = bd_batch_scan_maps((const char *)rec, len, check_list, &dc);
	free(dc.buf);
	*bad_pblk = dc.bad_pblk;
	return rc;
}

/*
 * The running kernel's boot id (36 characters, "" when unknown). STRATA_BOOT_ID replaces it:
 * a test that cuts the power of a simulated disk without rebooting (test_blockd_powercut.sh)
 * sets a new one for each cut, as a real cut would.
 */
static void read_boot_id(char id[BOOT_ID_LEN + 1])
{
	id[0] = '\0';
	const char *env = getenv("STRATA_BOOT_ID");
	if (env != NULL && strlen(env) == BOOT_ID_LEN) {
		memcpy(id, env, BOOT_ID_LEN + 1);
		return;
	}
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
	if (f == NULL) {
		return;
	}
	if (fread(id, 1, BOOT_ID_LEN, f) == BOOT_ID_LEN) {
		id[BOOT_ID_LEN] = '\0';
	} else {
		id[0] = '\0';
	}
	fclose(f);
}

static ssize_t write_record(int fd, uint64_t seq, const void *data, size_t len)
{
	uint8_t hdr[JOURNAL_HDR] = {0};
	put32(hdr, JOURNAL_MAGIC);
	put32(hdr + 4, (uint32_t)len);
	memcpy(hdr + 8, &seq, 8);
	put32(hdr + 16, record_crc(seq, data, len));
	struct iovec iov[2] = {{hdr, JOURNAL_HDR}, {(void *)data, len}};
	return writev(fd, iov, 2);
}

/* Empty a journal file and start it with the boot record. Without one (no boot id, or the
 * write failed) the next replay checks every record's data, which is only slower. Touches
 * nothing but the file: the committer thread empties the old file this way. */
long bd_journal_reset_fd(int fd, const char *boot_rec)
{
	if (ftruncate(fd, 0) < 0) {
		return -errno;
	}
	ssize_t w = write_record(fd, 0, boot_rec, BOOT_REC_LEN);
	if (w == (ssize_t)(JOURNAL_HDR + BOOT_REC_LEN)) {
		return (long)w;
	}
	if (w < 0 || ftruncate(fd, 0) < 0) {
		st_warn("journal: boot record: %s", w < 0 ? strerror(errno) : "short write");
	}
	return 0;
}

static int start_journal(struct bd_engine *e, int fd)
{
	long w = bd_journal_reset_fd(fd, e->jboot);
	if (w < 0) {
		return (int)w;
	}
	e->jsize = (uint64_t)w;
	return 0;
}

/* Apply the records above the applied mark. Returns the number applied, or -errno. */
static long replay(struct bd_engine *e, int fd, uint64_t applied, uint64_t *last, bool *clean)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		return -errno;
	}
	long n = 0;
	bool same_boot = false; /* the machine has not restarted since the journal began */
	uint8_t hdr[JOURNAL_HDR];
	uint8_t *buf = NULL;
	off_t off = 0;
	*clean = false;
	while (off + JOURNAL_HDR <= st.st_size) {
		if (pread(fd, hdr, JOURNAL_HDR, off) != JOURNAL_HDR ||
		    get32(hdr) != JOURNAL_MAGIC) {
			break;
		}
		uint32_t len = get32(hdr + 4);
		uint64_t seq;
		memcpy(&seq, hdr + 8, 8);
		if (len > JOURNAL_MAX || off + JOURNAL_HDR + (off_t)len > st.st_size) {
			break; /* torn */
		}
		uint8_t *nb = realloc(buf, len ? len : 1);
		if (!nb) {
			free(buf);
			return -ENOMEM;
		}
		buf = nb;
		if (pread(fd, buf, len, off + JOURNAL_HDR) != (ssize_t)len ||
		    record_crc(seq, buf, len) != get32(hdr + 16)) {
			break;
		}
		if (off == 0 && seq == 0) {
			if (len == BOOT_REC_LEN &&
			    memcmp(buf + BOOT_ID_LEN, e->jboot + BOOT_ID_LEN, 16) != 0) {
				/* Written for another store: this index was replaced (a wiped
				 * node) and the journal left beside it. Its groups are not
				 * this store's. */
				st_warn("journal: a file of another store (its index was "
					"replaced): not replayed");
				*clean = true;
				free(buf);
				return 0;
			}
			/* A boot record of BOOT_ID_LEN: an older blockd's, with no store id. */
			same_boot = e->jboot[0] != '\0' &&
				    (len == BOOT_ID_LEN || len == BOOT_REC_LEN) &&
				    memcmp(buf, e->jboot, BOOT_ID_LEN) == 0;
		} else if (seq > applied) {
			uint64_t bad;
			int rc = same_boot ? 0 : record_data_intact(e, buf, len, &bad);
			if (rc > 0) {
				st_warn("journal: group %lu points at block %lu, whose data did "
					"not reach the disk (power loss?): it and later groups, "
					"never flushed, are dropped",
					(unsigned long)seq, (unsigned long)bad);
				break;
			}
			if (rc < 0) {
				free(buf);
				return rc;
			}
			rc = bd_index_apply(e->ix, (const char *)buf, len);
			if (rc < 0) {
				free(buf);
				return rc;
			}
			n++;
		}
		if (seq > *last) {
			*last = seq;
		}
		off += JOURNAL_HDR + (off_t)len;
	}
	*clean = off == st.st_size;
	free(buf);
	return n;
}

/* The sequence number of a journal file's first group record (UINT64_MAX: none). */
static uint64_t first_seq(int fd)
{
	uint8_t hdr[JOURNAL_HDR];
	off_t off = 0;
	for (int i = 0; i < 2; i++) { /* the boot record, then the first group */
		if (pread(fd, hdr, JOURNAL_HDR, off) != JOURNAL_HDR ||
		    get32(hdr) != JOURNAL_MAGIC) {
			return UINT64_MAX;
		}
		uint64_t seq;
		memcpy(&seq, hdr + 8, 8);
		if (seq != 0) {
			return seq;
		}
		off += JOURNAL_HDR + (off_t)get32(hdr + 4);
	}
	return UINT64_MAX;
}

static int open_file(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0) {
		int err = -errno;
		st_error("journal %s: %s", path, strerror(errno));
		return err;
	}
	return fd;
}

int bd_journal_open(struct bd_engine *e, const char *path)
{
	e->jfd = e->jfd_old = -1;
	char alt[4096];
	if (snprintf(alt, sizeof(alt), "%s.b", path) >= (int)sizeof(alt)) {
		return -ENAMETOOLONG;
	}
	int fds[2];
	if ((fds[0] = open_file(path)) < 0) {
		return fds[0];
	}
	if ((fds[1] = open_file(alt)) < 0) {
		close(fds[0]);
		return fds[1];
	}
	uint64_t applied = 0, last = 0;
	int rc = bd_index_get_u64(e->ix, J_KEY, sizeof(J_KEY), &applied);
	if (rc < 0) {
		goto fail;
	}
	memset(e->jboot, 0, sizeof(e->jboot));
	read_boot_id(e->jboot); /* constant while this process runs */
	memcpy(e->jboot + BOOT_ID_LEN, e->uuid, 16);
	/* STRATA_JOURNAL_TRIM: the trim mark in bytes, for tests that want many switches. */
	const char *tenv = getenv("STRATA_JOURNAL_TRIM");
	e->jtrim = tenv != NULL && atoll(tenv) > 0 ? (uint64_t)atoll(tenv) : JOURNAL_TRIM;
	/* The file whose groups are older first: every group of the old file was appended
	 * before the switch to the other. A replay that stops early (a torn or lost group)
	 * stops for both: what follows it was never flushed. */
	uint64_t first[2] = {first_seq(fds[0]), first_seq(fds[1])};
	if (first[1] < first[0]) {
		int t = fds[0];
		fds[0] = fds[1];
		fds[1] = t;
		uint64_t f = first[0];
		first[0] = first[1];
		first[1] = f;
	}
	last = applied;
	long n = 0;
	for (int i = 0; i < 2; i++) {
		uint64_t f = first[i];
		if (i == 1 && f != UINT64_MAX && f > last + 1) {
			/* The groups between the files are gone (the old file lost them in a power
			 * cut): what follows was never flushed, and applying it would leave a hole.
			 */
			st_warn("journal: groups %lu to %lu are missing: the later ones, never "
				"flushed, are dropped",
				(unsigned long)(last + 1), (unsigned long)(f - 1));
			break;
		}
		bool clean = false;
		long k = replay(e, fds[i], applied, &last, &clean);
		if (k < 0) {
			st_error("journal %s: replay failed: %s", path, strerror((int)-k));
			rc = (int)k;
			goto fail;
		}
		n += k;
		if (!clean) {
			break;
		}
	}
	if (n > 0) {
		/* The replayed lists' data was read back, but may still sit in the device's
		 * cache after a kill: sync it before the WAL makes the lists durable. */
		if ((rc = bd_engine_sync_data(e)) < 0 || (rc = bd_index_sync(e->ix)) < 0) {
			goto fail;
		}
		st_info("journal: %ld group commits replayed (replied to, not in the index at the "
			"crash)",
			n);
	}
	long w = bd_journal_reset_fd(fds[1], e->jboot);
	if (w < 0 || (rc = start_journal(e, fds[0])) < 0) {
		rc = w < 0 ? (int)w : rc;
		goto fail;
	}
	e->jfd = fds[0];
	e->jfd_old = fds[1];
	e->jsize_old = (uint64_t)w;
	e->jold_dirty = e->jold_in_job = false;
	e->jseq = last + 1;
	e->jreplayed = (uint64_t)n;
	return 0;
fail:
	close(fds[0]);
	close(fds[1]);
	return rc;
}

/* The journaled groups committed so far survive a killed process without the journal: their
 * data is synced, then the WAL buffer written to the file (index.c). Returns 0 or -errno. */
static int journal_covered(struct bd_engine *e)
{
	int rc = bd_index_unflushed(e->ix) == 0 ? 0 : bd_engine_sync_data(e);
	return rc ? rc : bd_index_flush_wal(e->ix);
}

void bd_journal_close(struct bd_engine *e)
{
	if (e->jfd < 0) {
		return;
	}
	/* Everything journaled is in the index by now (close settles every group), and in the
	 * WAL buffer: out to the file first, after its data, or a kill would lose it. */
	if (!e->failed && journal_covered(e) == 0) {
		if (ftruncate(e->jfd, 0) < 0 || (e->jfd_old >= 0 && ftruncate(e->jfd_old, 0) < 0)) {
			st_warn("journal: truncate at close: %s", strerror(errno));
		}
	}
	close(e->jfd);
	e->jfd = -1;
	if (e->jfd_old >= 0) {
		close(e->jfd_old);
		e->jfd_old = -1;
	}
}

int bd_journal_append(struct bd_engine *e, struct bd_batch *b)
{
	/* Consumed even if the append fails: the batch commits with this mark either way, and a
	 * later record must not reuse a number the index already holds. */
	uint64_t seq = e->jseq++;
	bd_batch_put_u64(b, J_KEY, sizeof(J_KEY), seq);
	if (e->jbroken) {
		return -EIO;
	}
	size_t len;
	const char *data = bd_batch_data(b, &len);
	if (len > JOURNAL_MAX) {
		return -EFBIG; /* the batch then commits before its replies, as without a journal */
	}
	ssize_t w = write_record(e->jfd, seq, data, len);
	if (w != (ssize_t)(JOURNAL_HDR + len)) {
		if (!e->jwarned) {
			st_warn("journal write: %s; writes now reply after their index commit",
				w < 0 ? strerror(errno) : "short write");
			e->jwarned = true;
		}
		/* A partial record is a torn tail: replay stops there, so nothing may follow it.
		 * Truncating now would drop the records of groups replied to and not committed
		 * yet: the journal rests until they are (bd_journal_trim), and writes meanwhile
		 * reply after their commit. */
		e->jbroken = true;
		return -EIO;
	}
	e->jsize += (uint64_t)w;
	e->jgroups++;
	return 0;
}

static void trim_flushed(void *arg, int err)
{
	(void)arg, (void)err; /* bd_journal_old_reset has the outcome */
}

void bd_journal_old_reset(struct bd_engine *e, int rc)
{
	e->jold_in_job = false;
	if (rc < 0) {
		st_warn("journal: emptying the old file failed (%s): the next flush retries",
			strerror(-rc));
		return;
	}
	e->jold_dirty = false;
	e->jsize_old = JOURNAL_HDR + BOOT_REC_LEN;
}

/*
 * Two files. Past JOURNAL_TRIM the journal is emptied, but first every group in it must
 * survive a kill without it: its data synced, the WAL buffer written out (journal_covered), a
 * data fdatasync that took 147 ms on average under sustained writes, on the reactor thread.
 * With a committer, appends switch to the other file instead (empty but for its boot record),
 * and a flush is asked for: its sync job first commits every group of the old file (bd_flush
 * drains), syncs, then empties the old file on the committer thread. Replay reads both files,
 * the older first. Should the new file fill up before the old one is empty (a failed sync),
 * the journal just grows; with no committer, or after a failed append, the old way stays.
 */
void bd_journal_trim(struct bd_engine *e)
{
	if (e->jfd < 0 || (e->jsize < e->jtrim && !e->jbroken) || e->sealed) {
		return;
	}
	if (e->cm != NULL && !e->jbroken && e->jfd_old >= 0 && e->r != NULL && !e->failed) {
		if (e->jold_dirty) {
			return; /* a sync job is to empty it: the next switch waits for that */
		}
		int t = e->jfd;
		e->jfd = e->jfd_old;
		e->jfd_old = t;
		uint64_t sz = e->jsize;
		e->jsize = e->jsize_old;
		e->jsize_old = sz;
		e->jold_dirty = true;
		e->jswitches++;
		bd_flush(e, trim_flushed, NULL);
		return;
	}
	if (bd_committer_busy(e) || e->jold_in_job || journal_covered(e) < 0) {
		return;
	}
	if (start_journal(e, e->jfd) == 0 &&
	    (!e->jold_dirty || e->jfd_old < 0 || bd_journal_reset_fd(e->jfd_old, e->jboot) >= 0)) {
		e->jold_dirty = false;
		e->jbroken = false;
	}
}
