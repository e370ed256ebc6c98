/*
 * strata-blockd engine: the pipelined group commit. rocksdb_write (memtable insert and WAL
 * append) was 37% of the reactor thread's time on 4k random writes, and that thread is what
 * bounds write IOPS. With a committer, group N's WriteBatch is written on this thread while the
 * reactor gathers group N+1:
 *
 *   reactor: group_run --bd_committer_handoff--> slot (batch, sync, gseq, ops)    [busy]
 *   thread:  bd_index_commit(batch, sync) --> rc, finished --> st_reactor_post(posted)
 *   reactor: posted / group_run / bd_committer_wait --> reap --> settle(ops, rc) [idle]
 *
 * At most one group is in flight, so groups reach RocksDB in order, and nothing changes for
 * the ops: each still completes only after its group's commit (and, with FUA, its WAL sync).
 * Anything that commits synchronously, or reads the index directly, first waits for the group
 * in flight (bd_committer_wait, from bd_engine_commit_batch and bd_engine_drain). A flush does
 * not wait: the group in flight has no acknowledged write, and its frees reach limbo only
 * after it commits.
 *
 * Lifetime: the engine and each queued post hold a reference; bd_committer_stop (engine close)
 * waits for the group in flight, joins the thread and drops the engine's reference, so a post
 * still queued on the reactor finds no engine and only frees the committer.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "common/log.h"
#include "engine_int.h"
#include "internal.h"

struct bd_committer {
	struct bd_engine *e; /* NULL once the engine let go */
	struct st_reactor *r;
	struct bd_index *ix;
	int data_fd; /* synced ahead of a synced commit (bd_engine_sync_data) */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t work, done;
	int refs;
	bool stop;
	bool hold;      /* tests: wait before the next commit (bd_committer_hold) */
	bool hold_sync; /* tests: wait before the next sync job (bd_committer_hold_sync) */
	bool busy;      /* a group was handed off and is not reaped yet */
	bool pending;   /* handed off, not started */
	bool finished;  /* written: rc is valid */
	bool sync_job;  /* the job is a flush's sync, not a group (bd_committer_sync) */
	int reset_fd;   /* the sync job then empties this journal file (-1: none) */
	const char *boot;
	/* The group in flight. */
	struct bd_batch *batch;
	bool sync;
	int rc;
	uint64_t gseq, dseq;
	struct op_list ops;
};

static void committer_unref_locked(struct bd_committer *cm, bool *free_it)
{
	*free_it = --cm->refs == 0;
}

static void committer_free(struct bd_committer *cm)
{
	pthread_cond_destroy(&cm->work);
	pthread_cond_destroy(&cm->done);
	pthread_mutex_destroy(&cm->lock);
	free(cm);
}

/* On the reactor thread: the thread finished a group. */
static void committer_posted(void *arg)
{
	struct bd_committer *cm = arg;
	struct bd_engine *e;
	bool free_it;

	pthread_mutex_lock(&cm->lock);
	e = cm->e;
	committer_unref_locked(cm, &free_it);
	pthread_mutex_unlock(&cm->lock);
	if (free_it) {
		committer_free(cm);
		return;
	}
	if (e != NULL) {
		bd_committer_reap(e);
		bd_flush_kick(e); /* top level: flush callbacks, the next sync job */
	}
}

static void *committer_main(void *arg)
{
	struct bd_committer *cm = arg;

	bd_index_thread_init();
	pthread_mutex_lock(&cm->lock);
	for (;;) {
		while ((!cm->pending || cm->hold || (cm->sync_job && cm->hold_sync)) && !cm->stop) {
			pthread_cond_wait(&cm->work, &cm->lock);
		}
		if (!cm->pending) {
			break; /* stopped with nothing handed off */
		}
		cm->pending = false;
		pthread_mutex_unlock(&cm->lock);
		int rc = (cm->sync || cm->sync_job) && cm->data_fd >= 0
				 ? bd_sync_data_fd(cm->data_fd)
				 : 0;
		if (cm->sync_job) {
			rc = rc ? rc : bd_index_sync(cm->ix);
			if (rc == 0 && cm->reset_fd >= 0) {
				long w = bd_journal_reset_fd(cm->reset_fd, cm->boot);
				rc = w < 0 ? (int)w : 0;
			}
		} else {
			rc = rc ? rc : bd_index_commit(cm->ix, cm->batch, cm->sync);
		}
		pthread_mutex_lock(&cm->lock);
		cm->rc = rc;
		cm->finished = true;
		cm->refs++; /* the post's */
		pthread_cond_broadcast(&cm->done);
		pthread_mutex_unlock(&cm->lock);
		st_reactor_post_owed(cm->r, committer_posted, cm); /* ops owed completion */
		pthread_mutex_lock(&cm->lock);
	}
	pthread_mutex_unlock(&cm->lock);
	return NULL;
}

int bd_engine_start_committer(struct bd_engine *e, bool always)
{
	struct bd_committer *cm;
	int rc;

	if (e->cm != NULL) {
		bd_commit_policy_reset(e, always);
		return 0;
	}
	cm = calloc(1, sizeof(*cm));
	if (cm == NULL) {
		return -ENOMEM;
	}
	cm->e = e;
	cm->r = e->r;
	cm->ix = e->ix;
	cm->data_fd = e->fd;
	cm->refs = 1;
	TAILQ_INIT(&cm->ops);
	pthread_mutex_init(&cm->lock, NULL);
	pthread_cond_init(&cm->work, NULL);
	pthread_cond_init(&cm->done, NULL);
	rc = pthread_create(&cm->thread, NULL, committer_main, cm);
	if (rc != 0) {
		committer_free(cm);
		return -rc;
	}
	pthread_setname_np(cm->thread, "blockd-commit");
	e->cm = cm;
	bd_commit_policy_reset(e, always);
	return 0;
}

bool bd_committer_busy(const struct bd_engine *e)
{
	return e->cm != NULL && e->cm->busy;
}

/* Settle the finished group (reactor thread, lock not held). */
static void committer_settle(struct bd_engine *e, struct bd_committer *cm)
{
	struct bd_batch *b = cm->batch;

	cm->batch = NULL;
	bd_batch_clear(b);
	bd_commit_settle_group(e, &cm->ops, cm->rc, cm->sync, cm->gseq, cm->dseq, b);
}

void bd_committer_reap(struct bd_engine *e)
{
	struct bd_committer *cm = e->cm;
	bool take;

	if (cm == NULL) {
		return;
	}
	pthread_mutex_lock(&cm->lock);
	take = cm->busy && cm->finished;
	if (take) {
		cm->busy = cm->finished = false;
	}
	pthread_mutex_unlock(&cm->lock);
	if (take && cm->sync_job) {
		cm->sync_job = false;
		bd_flush_job_reaped(e, cm->rc);
	} else if (take) {
		committer_settle(e, cm);
	}
}

/* Tests: hold (or let go) the next commit, or only the next sync job. */
static void committer_set_hold(struct bd_engine *e, bool sync_only, bool hold)
{
	struct bd_committer *cm = e->cm;

	if (cm == NULL) {
		return;
	}
	pthread_mutex_lock(&cm->lock);
	if (sync_only) {
		cm->hold_sync = hold;
	} else {
		cm->hold = hold;
	}
	pthread_cond_signal(&cm->work);
	pthread_mutex_unlock(&cm->lock);
}

void bd_committer_hold(struct bd_engine *e, bool hold)
{
	committer_set_hold(e, false, hold);
}

void bd_committer_hold_sync(struct bd_engine *e, bool hold)
{
	committer_set_hold(e, true, hold);
}

void bd_committer_wait(struct bd_engine *e)
{
	struct bd_committer *cm = e->cm;

	if (cm == NULL) {
		return;
	}
	pthread_mutex_lock(&cm->lock);
	while (cm->busy && !cm->finished) {
		pthread_cond_wait(&cm->done, &cm->lock);
	}
	pthread_mutex_unlock(&cm->lock);
	bd_committer_reap(e);
}

/* The job described in cm (a group, or a sync job) is the thread's to run. */
static void committer_start(struct bd_committer *cm)
{
	pthread_mutex_lock(&cm->lock);
	cm->busy = true;
	cm->pending = true;
	cm->finished = false;
	pthread_cond_signal(&cm->work);
	pthread_mutex_unlock(&cm->lock);
}

void bd_committer_handoff(struct bd_engine *e, struct bd_batch *batch, bool sync, uint64_t gseq,
			  uint64_t dseq, struct op_list *ops)
{
	struct bd_committer *cm = e->cm;

	cm->batch = batch;
	cm->sync = sync;
	cm->gseq = gseq;
	cm->dseq = dseq;
	TAILQ_INIT(&cm->ops);
	TAILQ_CONCAT(&cm->ops, ops, link);
	committer_start(cm);
}

/*
 * A flush's syncs on this thread instead of the reactor's: under sustained writes the host
 * writes back everything since the last flush, and an fdatasync took 30 ms on average and up
 * to 137 ms, during which the reactor served nothing (tail latencies of 100-300 ms). While the
 * job runs the committer is busy: groups are journaled, replied to and wait, as for any group
 * in flight, so no commit lands between the WAL sync and the reap (where the memtable may be
 * switched with an empty WAL buffer).
 */
void bd_committer_sync(struct bd_engine *e, int reset_fd)
{
	struct bd_committer *cm = e->cm;

	cm->reset_fd = reset_fd;
	cm->boot = e->jboot;
	cm->batch = NULL;
	cm->sync = false;
	cm->sync_job = true;
	TAILQ_INIT(&cm->ops);
	committer_start(cm);
}

void bd_engine_stop_committer(struct bd_engine *e)
{
	struct bd_committer *cm = e->cm;
	bool free_it;

	if (cm == NULL) {
		return;
	}
	bd_committer_wait(e);
	pthread_mutex_lock(&cm->lock);
	cm->stop = true;
	pthread_cond_signal(&cm->work);
	pthread_mutex_unlock(&cm->lock);
	pthread_join(cm->thread, NULL);
	e->cm = NULL;
	pthread_mutex_lock(&cm->lock);
	cm->e = NULL;
	committer_unref_locked(cm, &free_it);
	pthread_mutex_unlock(&cm->lock);
	if (free_it) {
		committer_free(cm);
	}
	bd_flush_kick(e); /* callbacks of a job reaped above; waiting flushes take the old path */
}
