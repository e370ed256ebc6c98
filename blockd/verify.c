/*
 * strata-blockd engine: checksum verification of reads on a worker thread.
 *
 * Checking a 4 KiB block's crc32c means pulling the block, just written by the device's DMA,
 * from memory: about 2 us, a fifth of the reactor thread's time per 4k read. The reactor thread
 * is blockd's bottleneck, while the machine's other cores are idle, so a read whose data has
 * arrived is handed to a verifier thread:
 *
 *   reactor: bd_read_done --bd_verifier_submit--> queue (lock; wake only an idle worker)
 *   worker:  take the whole queue, crc every data block of each op, set op->verified_ok,
 *            st_reactor_post(verify_done) per op (one eventfd kick per batch)
 *   reactor: verify_done -> mismatch? read_verify() again inline (count, log, zero) -> complete
 *
 * The worker touches only the op's buffer and its pblk/crc arrays, which nothing else uses
 * while the op waits (it has left the engine's read list: its data is in memory already). A
 * stopped verifier (shutdown) refuses submissions and the caller verifies inline, so ops that
 * complete during st_reactor_destroy still get checked. bd_verifier_stop joins the worker
 * before the reactor goes away; the posts it made run in st_reactor_destroy's post drain.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "common/crc32c.h"
#include "common/log.h"
#include "engine_int.h"
#include "internal.h"

struct bd_verifier {
	struct st_reactor *r;
	void (*done)(void *op);
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct op_list queue;
	bool idle;    /* the worker waits on cond */
	bool stopped; /* no more submissions */
};

static bool op_crcs_match(const struct bd_op *op)
{
	for (uint32_t i = 0; i < op->nblocks; i++) {
		if (op->pblk[i] < BD_PBLK_NONE &&
		    st_crc32c(0, op->buf + (size_t)i * BD_BLOCK, BD_BLOCK) != op->crc[i]) {
			return false;
		}
	}
	return true;
}

static void *verifier_main(void *arg)
{
	struct bd_verifier *v = arg;
	struct op_list batch;
	struct bd_op *op;

	TAILQ_INIT(&batch);
	pthread_mutex_lock(&v->lock);
	for (;;) {
		while (TAILQ_EMPTY(&v->queue) && !v->stopped) {
			v->idle = true;
			pthread_cond_wait(&v->cond, &v->lock);
			v->idle = false;
		}
		if (TAILQ_EMPTY(&v->queue)) {
			break; /* stopped, and everything submitted has been posted back */
		}
		TAILQ_CONCAT(&batch, &v->queue, link);
		pthread_mutex_unlock(&v->lock);
		while ((op = TAILQ_FIRST(&batch)) != NULL) {
			TAILQ_REMOVE(&batch, op, link);
			op->verified_ok = op_crcs_match(op);
			st_reactor_post_owed(v->r, v->done, op);
		}
		pthread_mutex_lock(&v->lock);
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

int bd_verifier_start(struct st_reactor *r, void (*done)(void *op), struct bd_verifier **out)
{
	struct bd_verifier *v = calloc(1, sizeof(*v));
	int rc;

	if (v == NULL) {
		return -ENOMEM;
	}
	v->r = r;
	v->done = done;
	TAILQ_INIT(&v->queue);
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->cond, NULL);
	rc = pthread_create(&v->thread, NULL, verifier_main, v);
	if (rc != 0) {
		pthread_cond_destroy(&v->cond);
		pthread_mutex_destroy(&v->lock);
		free(v);
		return -rc;
	}
	pthread_setname_np(v->thread, "blockd-verify");
	*out = v;
	return 0;
}

bool bd_verifier_submit(struct bd_verifier *v, struct bd_op *op)
{
	bool wake;

	pthread_mutex_lock(&v->lock);
	if (v->stopped) {
		pthread_mutex_unlock(&v->lock);
		return false;
	}
	wake = v->idle && TAILQ_EMPTY(&v->queue);
	TAILQ_INSERT_TAIL(&v->queue, op, link);
	pthread_mutex_unlock(&v->lock);
	if (wake) {
		pthread_cond_signal(&v->cond);
	}
	return true;
}

void bd_verifier_stop(struct bd_verifier *v)
{
	if (v == NULL) {
		return;
	}
	pthread_mutex_lock(&v->lock);
	v->stopped = true;
	pthread_mutex_unlock(&v->lock);
	pthread_cond_signal(&v->cond);
	pthread_join(v->thread, NULL);
	pthread_cond_destroy(&v->cond);
	pthread_mutex_destroy(&v->lock);
	free(v);
}
