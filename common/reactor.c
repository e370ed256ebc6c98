/*
 * The reactor: one io_uring, a cross-thread post queue and nothing else.
 *
 *   prep (any st_reactor_* op) --SQE, user_data = struct st_io *--> SQ ring
 *   st_reactor_run: submit_and_wait(1) --> for each CQE: io->cb(io->cb_arg, res) --> advance
 *
 *   other threads: st_reactor_post --mutex--> posts[] --eventfd write--> persistent READ SQE
 *                                                                          on the ring wakes run
 *   the reactor's own thread: st_reactor_post --> local[] --> run after the current CQE batch,
 *                                                             before the next submit
 *
 * The eventfd is written only when posts[] goes from empty to non-empty: one wakeup per batch
 * however many posts it holds (post_drain takes them all).
 *
 * Invariants:
 *  - Every SQE carries either a struct st_io (owned by the caller, valid until its callback)
 *    or user_data 0 (our own cancel requests, whose CQEs are ignored).
 *  - Nothing is malloc'd per operation. The post queue is a growable array that is swapped
 *    out under the lock, so a steady stream of posts allocates nothing either.
 *  - r->inflight counts SQEs with an st_io whose CQE has not been reaped yet, so destroy can
 *    tell when every owner has had its callback.
 */
#include "common/reactor.h"
#include "common/cpu_slice.h"
#include "common/flags.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct st_post {
	void (*fn)(void *);
	void *arg;
};

struct st_reactor {
	struct io_uring ring;
	atomic_bool stop;
	bool destroying;
	uint64_t inflight;

	/* Cross-thread wakeup: an eventfd with a persistent READ on the ring. */
	int efd;
	uint64_t efd_val;
	struct st_io efd_io;

	pthread_mutex_t lock; /* guards posts, nposts, capposts */
	struct st_post *posts;
	size_t nposts, capposts;
	struct st_post *spare; /* the drained array, reused by the next swap */
	size_t capspare;

	/* Posts made on the reactor's own thread while it runs: no lock, no wakeup. */
	struct st_post *local;
	size_t nlocal, caplocal;

	/* Busy-poll this long before sleeping (STRATA_SPIN_US); 0: sleep at once. */
	uint64_t spin_ns;
	bool spin_now;     /* the last sleep was short: events are coming fast, so poll first */
	uint64_t idle_ns;  /* time spent sleeping or polling for completions (st_reactor_idle_ns) */
	bool taskrun_flag; /* the kernel flags pending completions in sq.kflags */

	/* Submit as soon as this many SQEs are queued (0: once per turn). */
	unsigned submit_batch;
	const size_t *spin_live; /* the owner's load, or NULL: see st_reactor_set_spin_gate */
	size_t spin_max_live;

	/* st_reactor_register_file: I/O on this fd goes through fixed-file slot 0. */
	int fixed_fd;
};

/* The reactor this thread is running, if any: posts from it take the local queue. */
static _Thread_local struct st_reactor *tls_running;
/* The reactor this thread drives with st_reactor_run_once (st_reactor_set_owner). */
static _Thread_local struct st_reactor *tls_owner;

static void efd_arm(struct st_reactor *r);

/* Returns an SQE; when the SQ is full, submits what is queued to make room. */
static struct io_uring_sqe *get_sqe(struct st_reactor *r)
{
	struct io_uring_sqe *sqe;

	while ((sqe = io_uring_get_sqe(&r->ring)) == NULL) {
		/* The SQ is full; hand it to the kernel. With IORING_FEAT_NODROP a full CQ does
		 * not lose completions, so retrying is safe. */
		(void)io_uring_submit(&r->ring);
	}
	return sqe;
}

static void io_start(struct st_reactor *r, struct io_uring_sqe *sqe, struct st_io *io, st_io_cb cb,
		     void *cb_arg)
{
	io->cb = cb;
	io->cb_arg = cb_arg;
	io->busy = true;
	io_uring_sqe_set_data(sqe, io);
	r->inflight++;
	if (r->submit_batch > 0 && io_uring_sq_ready(&r->ring) >= r->submit_batch) {
		/* Errors leave the SQEs queued; the turn's own submit retries and reports. */
		(void)io_uring_submit(&r->ring);
	}
}

static void post_drain(struct st_reactor *r)
{
	struct st_post *batch;
	size_t n, cap;

	pthread_mutex_lock(&r->lock);
	batch = r->posts;
	n = r->nposts;
	cap = r->capposts;
	r->posts = r->spare;
	r->capposts = r->capspare;
	r->nposts = 0;
	r->spare = NULL;
	r->capspare = 0;
	pthread_mutex_unlock(&r->lock);

	/* Run outside the lock: fn may post again. */
	for (size_t i = 0; i < n; i++) {
		batch[i].fn(batch[i].arg);
	}

	pthread_mutex_lock(&r->lock);
	if (r->spare == NULL) {
		r->spare = batch;
		r->capspare = cap;
		batch = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	free(batch);
}

static void efd_done(void *arg, int res)
{
	struct st_reactor *r = arg;

	post_drain(r);
	if (!r->destroying) {
		efd_arm(r);
	}
}

static void efd_arm(struct st_reactor *r)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_read(sqe, r->efd, &r->efd_val, sizeof(r->efd_val), 0);
	io_start(r, sqe, &r->efd_io, efd_done, r);
}

/* Returns 0 or -errno. */
int st_reactor_create(struct st_reactor **out, unsigned entries)
{
	struct io_uring_params p;
	struct st_reactor *r;
	int ret;

	if (entries == 0) {
		entries = 256;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		return -ENOMEM;
	}
	atomic_init(&r->stop, false);
	pthread_mutex_init(&r->lock, NULL);

	/* COOP_TASKRUN: completions are run when we enter the kernel anyway, so no IPIs;
	 * SUBMIT_ALL: one bad SQE does not strand the rest of the batch. Both need 5.19+. */
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL;
	ret = io_uring_queue_init_params(entries, &r->ring, &p);
	r->taskrun_flag = ret == 0;
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		ret = io_uring_queue_init_params(entries, &r->ring, &p);
	}
	if (ret < 0) {
		goto err_free;
	}

	r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->efd < 0) {
		ret = -errno;
		goto err_ring;
	}
	efd_arm(r);
	r->fixed_fd = -1;
	r->submit_batch = st_reactor_submit_batch_from_env(0);
	st_reactor_set_spin_us(r, st_reactor_spin_from_env(ST_REACTOR_SPIN_US));
	*out = r;
	return 0;

err_ring:
	io_uring_queue_exit(&r->ring);
err_free:
	pthread_mutex_destroy(&r->lock);
	free(r);
	return ret;
}

/* Reaps every available CQE and runs its callback. Returns the number reaped. */
static unsigned reap(struct st_reactor *r)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&r->ring, head, cqe)
	{
		struct st_io *io = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		n++;
		if (io == NULL) {
			continue; /* one of our cancel requests */
		}
		r->inflight--;
		io->busy = false;
		if (res == -ETIME) {
			res = 0; /* a timer that fired */
		}
		io->cb(io->cb_arg, res);
	}
	io_uring_cq_advance(&r->ring, n);
	return n;
}

bool st_reactor_on_thread(const struct st_reactor *r)
{
	return tls_running == r;
}

/* Runs the local posts, including any they make, in order. */
static void local_drain(struct st_reactor *r)
{
	for (size_t i = 0; i < r->nlocal; i++) {
		struct st_post p = r->local[i]; /* copy: fn may grow (move) the array */

		p.fn(p.arg);
	}
	r->nlocal = 0;
}

/*
 * Adaptive polling, as QEMU's event loop does it (poll-max-ns): before sleeping in the kernel,
 * watch the completion ring for up to spin_ns. On a virtual machine a sleeping vCPU is woken by
 * an IPI through the hypervisor, which costs tens of microseconds per hop; a request that
 * crosses client, daemon and device several times pays it at every hop. Pending completions
 * show as a CQE, or as IORING_SQ_TASKRUN (COOP_TASKRUN defers them until we enter the kernel).
 * The spin yields the CPU on every turn, so a thread we wait for is never kept off it. It is
 * adaptive: it runs only while the previous sleep was shorter than the spin itself, so an idle
 * or lightly loaded daemon sleeps at once and burns nothing; and only while the owner has few
 * requests in flight (st_reactor_set_spin_gate), since a loaded one gets completions anyway.
 */
static void spin_for_completions(struct st_reactor *r, uint64_t max_ns)
{
	uint64_t deadline;

	if (max_ns == 0 || !r->taskrun_flag || !r->spin_now ||
	    (r->spin_live != NULL && *r->spin_live > r->spin_max_live)) {
		return;
	}
	(void)io_uring_submit(&r->ring);
	uint64_t t0 = st_now_ns(), t = t0;
	deadline = t0 + max_ns;
	do {
		if (io_uring_cq_ready(&r->ring) > 0 ||
		    (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_TASKRUN) != 0) {
			break;
		}
		sched_yield();
		t = st_now_ns();
	} while (t < deadline);
	r->idle_ns += t - t0;
}

void st_reactor_submit_now(struct st_reactor *r)
{
	if (io_uring_sq_ready(&r->ring) > 0) {
		(void)io_uring_submit(&r->ring);
	}
}

void st_reactor_set_spin_us(struct st_reactor *r, unsigned us)
{
	r->spin_ns = (uint64_t)(us > 1000 ? 1000 : us) * 1000u;
}

void st_reactor_set_spin_gate(struct st_reactor *r, const size_t *live, size_t max)
{
	r->spin_live = live;
	r->spin_max_live = max;
}

void st_reactor_set_submit_batch(struct st_reactor *r, unsigned n)
{
	r->submit_batch = n;
}

uint64_t st_reactor_idle_ns(const struct st_reactor *r)
{
	return r->idle_ns;
}

unsigned st_reactor_spin_from_env(unsigned def)
{
	return st_env_uint("STRATA_SPIN_US", def, 1000);
}

unsigned st_reactor_submit_batch_from_env(unsigned def)
{
	return st_env_uint("STRATA_SUBMIT_BATCH", def, ST_REACTOR_SUBMIT_BATCH_MAX);
}

/* Submit and sleep for one completion (or timeout_ms >= 0); note whether the sleep was short. */
static int wait_timed(struct st_reactor *r, int timeout_ms)
{
	struct __kernel_timespec ts;
	struct io_uring_cqe *cqe;
	uint64_t t0 = st_now_ns(), slept;
	int ret;

	if (timeout_ms < 0) {
		ret = io_uring_submit_and_wait(&r->ring, 1);
	} else {
		ts.tv_sec = timeout_ms / 1000;
		ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
		ret = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts, NULL);
	}
	slept = st_now_ns() - t0;
	r->idle_ns += slept;
	if (r->spin_ns > 0) {
		r->spin_now = slept <= r->spin_ns;
	}
	return ret;
}

/* Returns 0, or -errno if io_uring itself fails. */
int st_reactor_run(struct st_reactor *r)
{
	struct st_reactor *outer = tls_running;
	int ret = 0;

	tls_running = r;
	st_sched_short_slice();
	for (;;) {
		local_drain(r);
		if (atomic_load_explicit(&r->stop, memory_order_acquire)) {
			break;
		}
		spin_for_completions(r, r->spin_ns);
		ret = wait_timed(r, -1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY && ret != -ETIME) {
			break;
		}
		ret = 0;
		reap(r);
	}
	local_drain(r);
	tls_running = outer;
	/* Consume the request so the reactor can be run again. */
	atomic_store_explicit(&r->stop, false, memory_order_release);
	return ret;
}

/* Returns the number of completions run (0 on timeout), or -errno if io_uring fails. */
int st_reactor_run_once(struct st_reactor *r, int timeout_ms)
{
	struct st_reactor *outer = tls_running;
	int ret;

	tls_running = r;
	st_sched_short_slice();
	local_drain(r);
	if (timeout_ms != 0) {
		uint64_t cap = timeout_ms > 0 ? (uint64_t)timeout_ms * 1000000u : UINT64_MAX;

		spin_for_completions(r, r->spin_ns < cap ? r->spin_ns : cap);
	}
	if (timeout_ms == 0) {
		ret = io_uring_submit(&r->ring);
	} else {
		ret = wait_timed(r, timeout_ms);
	}
	if (ret >= 0 || ret == -EINTR || ret == -EAGAIN || ret == -EBUSY || ret == -ETIME) {
		ret = (int)reap(r);
		local_drain(r);
	}
	tls_running = outer;
	return ret;
}

void st_reactor_set_owner(struct st_reactor *r)
{
	tls_owner = r;
}

static void efd_kick(struct st_reactor *r)
{
	uint64_t one = 1;
	ssize_t n;

	do {
		n = write(r->efd, &one, sizeof(one));
	} while (n < 0 && errno == EINTR);
	/* EAGAIN means the counter is saturated: a wakeup is already pending. */
}

void st_reactor_stop(struct st_reactor *r)
{
	atomic_store_explicit(&r->stop, true, memory_order_release);
	efd_kick(r);
}

static int post_grow(struct st_post **arr, size_t *cap)
{
	size_t ncap = *cap ? *cap * 2 : 64;
	struct st_post *p = realloc(*arr, ncap * sizeof(*p));

	if (p == NULL) {
		return -ENOMEM;
	}
	*arr = p;
	*cap = ncap;
	return 0;
}

/* Returns 0 or -ENOMEM. */
int st_reactor_post(struct st_reactor *r, void (*fn)(void *), void *arg)
{
	bool kick;

	if (tls_running == r || tls_owner == r) {
		if (r->nlocal == r->caplocal && post_grow(&r->local, &r->caplocal) < 0) {
			return -ENOMEM;
		}
		r->local[r->nlocal++] = (struct st_post){fn, arg};
		return 0;
	}
	pthread_mutex_lock(&r->lock);
	if (r->nposts == r->capposts && post_grow(&r->posts, &r->capposts) < 0) {
		pthread_mutex_unlock(&r->lock);
		return -ENOMEM;
	}
	kick = r->nposts == 0;
	r->posts[r->nposts++] = (struct st_post){fn, arg};
	pthread_mutex_unlock(&r->lock);
	if (kick) {
		efd_kick(r);
	}
	return 0;
}

void st_reactor_post_owed(struct st_reactor *r, void (*fn)(void *), void *arg)
{
	while (st_reactor_post(r, fn, arg) < 0) {
		sched_yield();
	}
}

/*
 * Cancels everything still in flight and runs those callbacks (with -ECANCELED or whatever the
 * op finished with) so their owners can free themselves, then tears the ring down. Callbacks
 * that re-arm are cancelled again; after about a second we give up and let
 * io_uring_queue_exit() drop whatever is left.
 */
void st_reactor_destroy(struct st_reactor *r)
{
	struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
	uint64_t deadline;

	if (r == NULL) {
		return;
	}
	r->destroying = true;
	deadline = st_now_ms() + 1000;
	while (r->inflight > 0 && st_now_ms() < deadline) {
		struct io_uring_sqe *sqe = get_sqe(r);
		struct io_uring_cqe *cqe;

		io_uring_prep_cancel(sqe, NULL, IORING_ASYNC_CANCEL_ANY);
		io_uring_sqe_set_data(sqe, NULL);
		(void)io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts, NULL);
		reap(r);
	}
	post_drain(r); /* posts are owed their run, e.g. ones that free memory */
	local_drain(r);
	io_uring_queue_exit(&r->ring);
	close(r->efd);
	free(r->posts);
	free(r->spare);
	free(r->local);
	if (tls_owner == r) {
		tls_owner = NULL;
	}
	pthread_mutex_destroy(&r->lock);
	free(r);
}

void st_reactor_accept(struct st_reactor *r, struct st_io *io, int fd, st_io_cb cb, void *cb_arg)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
	io_start(r, sqe, io, cb, cb_arg);
}

void st_reactor_recv(struct st_reactor *r, struct st_io *io, int fd, void *buf, size_t len,
		     st_io_cb cb, void *cb_arg)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_recv(sqe, fd, buf, len, 0);
	io_start(r, sqe, io, cb, cb_arg);
}

void st_reactor_send(struct st_reactor *r, struct st_io *io, int fd, const void *buf, size_t len,
		     st_io_cb cb, void *cb_arg)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
	io_start(r, sqe, io, cb, cb_arg);
}

void st_reactor_sendmsg(struct st_reactor *r, struct st_io *io, int fd, const struct msghdr *msg,
			st_io_cb cb, void *cb_arg)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_sendmsg(sqe, fd, msg, MSG_NOSIGNAL);
	io_start(r, sqe, io, cb, cb_arg);
}

int st_reactor_register_file(struct st_reactor *r, int fd)
{
	int ret;

	if (r->fixed_fd >= 0) {
		return -EBUSY;
	}
	ret = io_uring_register_files(&r->ring, &fd, 1);
	if (ret == 0) {
		r->fixed_fd = fd;
	}
	return ret;
}

void st_reactor_unregister_file(struct st_reactor *r)
{
	if (r->fixed_fd >= 0) {
		(void)io_uring_unregister_files(&r->ring);
		r->fixed_fd = -1;
	}
}

int st_reactor_register_buffers(struct st_reactor *r, const struct iovec *iov, unsigned n)
{
	return io_uring_register_buffers(&r->ring, iov, n);
}

/* A file op on the registered file names fixed slot 0 instead of the fd: no fget/fput. */
static void use_fixed_file(struct st_reactor *r, struct io_uring_sqe *sqe, int fd)
{
	if (fd >= 0 && fd == r->fixed_fd) {
		sqe->fd = 0;
		sqe->flags |= IOSQE_FIXED_FILE;
	}
}

void st_reactor_readv(struct st_reactor *r, struct st_io *io, int fd, const struct iovec *iov,
		      int iovcnt, uint64_t off, st_io_cb cb, void *cb_arg)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_readv(sqe, fd, iov, (unsigned)iovcnt, off);
	use_fixed_file(r, sqe, fd);
	io_start(r, sqe, io, cb, cb_arg);
}

void st_reactor_writev(struct st_reactor *r, struct st_io *io, int fd, const struct iovec *iov,
		       int iovcnt, uint64_t off, st_io_cb cb, void *cb_arg)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_writev(sqe, fd, iov, (unsigned)iovcnt, off);
	use_fixed_file(r, sqe, fd);
	io_start(r, sqe, io, cb, cb_arg);
}

void st_reactor_read_fixed(struct st_reactor *r, struct st_io *io, int fd, void *buf, size_t len,
			   uint64_t off, int buf_index, st_io_cb cb, void *cb_arg)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_read_fixed(sqe, fd, buf, (unsigned)len, off, buf_index);
	use_fixed_file(r, sqe, fd);
	io_start(r, sqe, io, cb, cb_arg);
}

void st_reactor_write_fixed(struct st_reactor *r, struct st_io *io, int fd, const void *buf,
			    size_t len, uint64_t off, int buf_index, st_io_cb cb, void *cb_arg)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_write_fixed(sqe, fd, buf, (unsigned)len, off, buf_index);
	use_fixed_file(r, sqe, fd);
	io_start(r, sqe, io, cb, cb_arg);
}

void st_reactor_fsync(struct st_reactor *r, struct st_io *io, int fd, bool datasync, st_io_cb cb,
		      void *cb_arg)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
	use_fixed_file(r, sqe, fd);
	io_start(r, sqe, io, cb, cb_arg);
}

void st_reactor_timer(struct st_reactor *r, struct st_io *io, uint64_t ms, st_io_cb cb,
		      void *cb_arg)
{
	struct io_uring_sqe *sqe = get_sqe(r);

	/* The kernel reads ts at submit time, but the header promises it lives in io anyway. */
	io->ts.tv_sec = (long long)(ms / 1000);
	io->ts.tv_nsec = (long long)(ms % 1000) * 1000000;
	io_uring_prep_timeout(sqe, &io->ts, 0, 0);
	io_start(r, sqe, io, cb, cb_arg);
}

void st_reactor_cancel(struct st_reactor *r, struct st_io *io)
{
	struct io_uring_sqe *sqe;

	if (!io->busy) {
		return; /* nothing to cancel: its callback has already run */
	}
	sqe = get_sqe(r);
	io_uring_prep_cancel(sqe, io, 0);
	io_uring_sqe_set_data(sqe, NULL); /* the cancel's own CQE is ignored by reap() */
}

uint64_t st_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t st_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
