/* Synchronous wrappers. With an I/O thread, park the calling thread on a condition variable
 * until the callback fires. Without one (strata_poll, or a shared daemon reactor), turn the
 * reactor on the calling thread until it does; from inside a callback that would recurse, so
 * it is refused with -EDEADLK. Never call these from a libstrata callback. */
#include <errno.h>
#include <pthread.h>

#include "internal.h"

struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int err;
};

static void waiter_init(struct waiter *w)
{
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->done = false;
	w->err = 0;
}

static void waiter_cb(void *arg, int err)
{
	struct waiter *w = arg;

	pthread_mutex_lock(&w->lock);
	w->err = err;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* rc is the submit result: wait only if the request was queued. */
static int waiter_wait(strata_volume *v, struct waiter *w, int rc)
{
	if (rc == 0 && v->c->mode != SC_MODE_THREAD) {
		int n = 0;

		while (!w->done && n >= 0) {
			n = st_reactor_run_once(v->c->r, -1);
		}
		rc = w->done ? w->err : n; /* n < 0: io_uring itself failed */
	} else if (rc == 0) {
		pthread_mutex_lock(&w->lock);
		while (!w->done) {
			pthread_cond_wait(&w->cond, &w->lock);
		}
		pthread_mutex_unlock(&w->lock);
		rc = w->err;
	}
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	return rc;
}

#define SYNC_CALL(call)                                                                            \
	do {                                                                                       \
		struct waiter w;                                                                   \
		if (v != NULL && v->c->mode != SC_MODE_THREAD && st_reactor_on_thread(v->c->r)) {  \
			return -EDEADLK;                                                           \
		}                                                                                  \
		waiter_init(&w);                                                                   \
		return waiter_wait(v, &w, call);                                                   \
	} while (0)

int strata_read(strata_volume *v, uint64_t off, size_t len, void *buf)
{
	SYNC_CALL(strata_aio_read(v, off, len, buf, waiter_cb, &w));
}

int strata_write(strata_volume *v, uint64_t off, size_t len, const void *buf, unsigned flags)
{
	SYNC_CALL(strata_aio_write(v, off, len, buf, flags, waiter_cb, &w));
}

int strata_flush(strata_volume *v)
{
	SYNC_CALL(strata_aio_flush(v, waiter_cb, &w));
}

int strata_trim(strata_volume *v, uint64_t off, size_t len)
{
	SYNC_CALL(strata_aio_trim(v, off, len, waiter_cb, &w));
}

int strata_write_zeroes(strata_volume *v, uint64_t off, size_t len, unsigned flags)
{
	SYNC_CALL(strata_aio_write_zeroes(v, off, len, flags, waiter_cb, &w));
}

int strata_block_status(strata_volume *v, uint64_t off, size_t len, struct strata_extent *ext,
			size_t max, size_t *n)
{
	SYNC_CALL(strata_aio_block_status(v, off, len, ext, max, n, waiter_cb, &w));
}

int strata_compare_and_write(strata_volume *v, uint64_t off, size_t len, const void *cmp,
			     const void *data, uint64_t *miscompare_off)
{
	SYNC_CALL(strata_aio_compare_and_write(v, off, len, cmp, data, miscompare_off, waiter_cb,
					       &w));
}
