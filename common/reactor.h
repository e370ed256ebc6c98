/*
 * The event loop every daemon shares: one io_uring per reactor, one reactor thread per core.
 *
 * Operations are queued as SQEs and submitted once per loop turn (st_reactor_run batches
 * everything queued by callbacks of the previous turn into one io_uring_submit_and_wait).
 * Each operation is described by a caller-owned struct st_io, which must stay valid until its
 * callback runs; io_uring's user_data points at it. Callbacks run on the reactor thread with
 * res = the CQE result (bytes, a new fd, 0) or a negative errno.
 *
 * Only st_reactor_post() and st_reactor_stop() may be called from other threads; everything
 * else belongs to the reactor thread.
 */
#ifndef STRATA_COMMON_REACTOR_H
#define STRATA_COMMON_REACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/time_types.h>

struct st_reactor;

typedef void (*st_io_cb)(void *cb_arg, int res);

struct st_io {
	st_io_cb cb;
	void *cb_arg;
	struct __kernel_timespec ts; /* timers keep their timeout here */
	bool busy;                   /* queued or in flight */
};

/* Create a reactor with an SQ of `entries` (0 = 256). Returns 0 or -errno. */
int st_reactor_create(struct st_reactor **out, unsigned entries) __attribute__((nonnull));
/*
 * Call with run() not running. Cancels every operation still in flight and runs its callback
 * (usually with -ECANCELED) so owners can free themselves (st_conns get on_close, st_servers
 * free themselves), runs any pending posts, then frees the reactor. Callbacks must not re-arm
 * forever: after about a second whatever is left is dropped without its callback.
 */
void st_reactor_destroy(struct st_reactor *r);

/* Run until st_reactor_stop(). Returns 0, or -errno if io_uring itself fails. */
int st_reactor_run(struct st_reactor *r) __attribute__((nonnull));

/*
 * One turn for callers that drive the reactor themselves: submit what is queued, wait up to
 * timeout_ms (0: not at all, < 0: until something completes) for a completion, run every
 * completion and local post. Returns the number of completions run, or -errno.
 */
int st_reactor_run_once(struct st_reactor *r, int timeout_ms) __attribute__((nonnull));

/*
 * Make the calling thread r's owner: its posts join the local queue (no lock, no wakeup) even
 * outside st_reactor_run, to run at the next turn. For a reactor driven by one thread with
 * st_reactor_run_once; the owner must be the only thread that drives r.
 */
void st_reactor_set_owner(struct st_reactor *r) __attribute__((nonnull));

/* True when called from inside st_reactor_run(r) on this thread. */
bool st_reactor_on_thread(const struct st_reactor *r) __attribute__((nonnull));

/*
 * Every reactor busy-polls its completion ring for up to STRATA_SPIN_US microseconds (from the
 * environment, else ST_REACTOR_SPIN_US) before sleeping, while events come faster than that;
 * 0 always sleeps at once. Trades idle CPU for wakeup latency; reactor.c says when it pays.
 */
#define ST_REACTOR_SPIN_US 50
/*
 * Gate the spin on the owner's load: poll before sleeping only while *live <= max (read on the
 * reactor thread). A daemon with more requests in flight than that gets completions often
 * enough without polling, and on a machine with fewer cores than busy threads its polling
 * would take the CPU that the threads it waits for need. Without a gate the spin is ungated.
 */
#define ST_REACTOR_SPIN_MAX_LIVE 2
void st_reactor_set_spin_gate(struct st_reactor *r, const size_t *live, size_t max)
	__attribute__((nonnull(1)));

/*
 * Submit queued SQEs as soon as n of them are waiting, instead of once per loop turn (0). A
 * turn that parses a batch of requests then starts the first ones' I/O while it still parses
 * the rest. Reactors start with STRATA_SUBMIT_BATCH, else 0; strata-blockd defaults to
 * ST_REACTOR_SUBMIT_BATCH (--submit-batch).
 */
#define ST_REACTOR_SUBMIT_BATCH     4
#define ST_REACTOR_SUBMIT_BATCH_MAX 1024
void st_reactor_set_submit_batch(struct st_reactor *r, unsigned n) __attribute__((nonnull));
/* Nanoseconds the loop has spent waiting for completions (sleeping or polling) so far: with
 * a wall clock, how busy the reactor thread is. */
uint64_t st_reactor_idle_ns(const struct st_reactor *r) __attribute__((nonnull));
/* The spin a daemon asked for in STRATA_SPIN_US, else def (microseconds, capped at 1000). */
unsigned st_reactor_spin_from_env(unsigned def);
/* Replace the reactor's spin (microseconds, capped at 1000; 0: sleep at once). */
void st_reactor_set_spin_us(struct st_reactor *r, unsigned us) __attribute__((nonnull));
/* STRATA_SUBMIT_BATCH from the environment (capped at ST_REACTOR_SUBMIT_BATCH_MAX), else def. Every
 * reactor starts with st_reactor_submit_batch_from_env(0). */
unsigned st_reactor_submit_batch_from_env(unsigned def);

/* Submit what is queued now, rather than at the end of the turn (a callback that is about to
 * spend CPU time gets the I/O it queued under way first). */
void st_reactor_submit_now(struct st_reactor *r) __attribute__((nonnull));

/* Thread-safe: ask run() to return after the current turn. */
void st_reactor_stop(struct st_reactor *r) __attribute__((nonnull));

/*
 * Thread-safe: run fn(arg) on the reactor thread soon, never before this returns. From another
 * thread it is queued under a lock with at most one eventfd wakeup per batch; from the thread
 * inside st_reactor_run() it joins a local queue that runs after the current batch of
 * completions, with no lock and no system call. Returns 0 or -ENOMEM.
 */
int st_reactor_post(struct st_reactor *r, void (*fn)(void *), void *arg)
	__attribute__((nonnull(1, 2)));
/* As st_reactor_post, for a post that completes work someone is owed (an op's reply): on
 * -ENOMEM it yields the CPU and tries again until the post array can grow. */
void st_reactor_post_owed(struct st_reactor *r, void (*fn)(void *), void *arg)
	__attribute__((nonnull(1, 2)));

/* Sockets. */
void st_reactor_accept(struct st_reactor *r, struct st_io *io, int fd, st_io_cb cb, void *cb_arg);
void st_reactor_recv(struct st_reactor *r, struct st_io *io, int fd, void *buf, size_t len,
		     st_io_cb cb, void *cb_arg);
void st_reactor_send(struct st_reactor *r, struct st_io *io, int fd, const void *buf, size_t len,
		     st_io_cb cb, void *cb_arg);
void st_reactor_sendmsg(struct st_reactor *r, struct st_io *io, int fd, const struct msghdr *msg,
			st_io_cb cb, void *cb_arg);

/*
 * Registered files and buffers. After st_reactor_register_file(r, fd), every file op below on
 * fd uses the fixed-file slot (IOSQE_FIXED_FILE: no per-op file lookup and reference). After
 * st_reactor_register_buffers, st_reactor_read_fixed/write_fixed may name buffer index i for
 * any range inside iov[i] (no per-op page pinning). Both return 0 or -errno (-ENOMEM when the
 * memlock limit refuses the pinning); on failure the plain ops keep working. One file per
 * reactor; call them on the reactor's thread or before it runs.
 */
int st_reactor_register_file(struct st_reactor *r, int fd) __attribute__((nonnull));
void st_reactor_unregister_file(struct st_reactor *r) __attribute__((nonnull)); /* before close */
int st_reactor_register_buffers(struct st_reactor *r, const struct iovec *iov, unsigned n)
	__attribute__((nonnull));

/* Files (O_DIRECT or not). iov must stay valid until the callback. */
void st_reactor_readv(struct st_reactor *r, struct st_io *io, int fd, const struct iovec *iov,
		      int iovcnt, uint64_t off, st_io_cb cb, void *cb_arg);
void st_reactor_writev(struct st_reactor *r, struct st_io *io, int fd, const struct iovec *iov,
		       int iovcnt, uint64_t off, st_io_cb cb, void *cb_arg);
void st_reactor_read_fixed(struct st_reactor *r, struct st_io *io, int fd, void *buf, size_t len,
			   uint64_t off, int buf_index, st_io_cb cb, void *cb_arg);
void st_reactor_write_fixed(struct st_reactor *r, struct st_io *io, int fd, const void *buf,
			    size_t len, uint64_t off, int buf_index, st_io_cb cb, void *cb_arg);
void st_reactor_fsync(struct st_reactor *r, struct st_io *io, int fd, bool datasync, st_io_cb cb,
		      void *cb_arg);

/* One-shot timer: cb(arg, 0) after ms milliseconds, or cb(arg, -ECANCELED) if cancelled. */
void st_reactor_timer(struct st_reactor *r, struct st_io *io, uint64_t ms, st_io_cb cb,
		      void *cb_arg);

/* Ask the kernel to cancel io (its callback still runs, usually with -ECANCELED). */
void st_reactor_cancel(struct st_reactor *r, struct st_io *io);

/* Monotonic milliseconds, and nanoseconds. */
uint64_t st_now_ms(void);
uint64_t st_now_ns(void);

#endif
