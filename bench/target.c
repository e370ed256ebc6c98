/*
 * Targets: URI dispatch, the completed-I/O hand-over, and the libstrata backend.
 *
 * Completed I/O is parked on the connection's list under its mutex; a target whose completions
 * arrive on another thread also bumps the connection's eventfd, on which the job thread
 * sleeps. strata:// connections are in poll mode by default (see below).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"
#include "strata/strata.h"

void bench_conn_init(struct bench_conn *c, const struct bench_target_ops *ops)
{
	c->ops = ops;
	c->min_io = 1;
	pthread_mutex_init(&c->lock, NULL);
	c->done_head = NULL;
	c->done_tail = &c->done_head;
	c->wake_fd = -1;
}

void bench_conn_complete(struct bench_conn *c, struct bench_io *io, int err)
{
	io->err = err;
	io->next = NULL;
	pthread_mutex_lock(&c->lock);
	*c->done_tail = io;
	c->done_tail = &io->next;
	pthread_mutex_unlock(&c->lock);
	if (c->wake_fd >= 0) {
		uint64_t one = 1;
		ssize_t n = write(c->wake_fd, &one, sizeof(one));
		(void)n; /* an eventfd write only fails on counter overflow */
	}
}

struct bench_io *bench_conn_take(struct bench_conn *c)
{
	pthread_mutex_lock(&c->lock);
	struct bench_io *l = c->done_head;
	c->done_head = NULL;
	c->done_tail = &c->done_head;
	pthread_mutex_unlock(&c->lock);
	return l;
}

int bench_conn_open(const char *uri, const char *meta, struct bench_conn **out, char *err,
		    size_t errlen)
{
	static const struct bench_target_ops *const all[] = {
		&bench_target_strata, &bench_target_nbd, &bench_target_iscsi};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		size_t n = strlen(all[i]->scheme);
		if (strncmp(uri, all[i]->scheme, n) == 0 && strncmp(uri + n, "://", 3) == 0) {
			return all[i]->open(uri, meta, out, err, errlen);
		}
	}
	snprintf(err, errlen,
		 "unknown target '%s' (want strata://pool/vol, "
		 "nbd://host:port/export or iscsi://host:port/iqn/lun)",
		 uri);
	return -EINVAL;
}

void bench_conn_close(struct bench_conn *c)
{
	if (c != NULL) {
		c->ops->close(c);
	}
}

/* ---- strata:// ----
 *
 * Each job gets its own poll-mode cluster (STRATA_CONNECT_POLL): the job thread submits and
 * runs the completions itself in strata_poll(), so an I/O never crosses threads on the client.
 * STRATA_BENCH_THREADED=1 uses the default threaded cluster instead (callbacks on libstrata's
 * I/O thread, handed over through the completed list and an eventfd), to compare the two.
 */

struct strata_conn {
	struct bench_conn base;
	strata_cluster *cl;
	strata_volume *vol;
	bool threaded;
};

static void strata_close_conn(struct bench_conn *bc)
{
	struct strata_conn *c = (struct strata_conn *)bc;
	if (c->vol != NULL) {
		strata_close(c->vol);
	}
	strata_disconnect(c->cl);
	if (bc->wake_fd >= 0) {
		close(bc->wake_fd);
	}
	pthread_mutex_destroy(&bc->lock);
	free(c);
}

/* strata://pool/vol uses meta; strata://HOST:PORT/pool/vol names its own meta. */
static int strata_open_conn(const char *uri, const char *meta, struct bench_conn **out, char *err,
			    size_t errlen)
{
	const char *rest = uri + strlen("strata://");
	char addr[128];
	const char *slash = strchr(rest, '/');
	if (slash == NULL || slash == rest || slash[1] == '\0') {
		snprintf(err, errlen, "bad target '%s': want strata://[HOST:PORT/]pool/vol", uri);
		return -EINVAL;
	}
	const char *colon = strchr(rest, ':');
	if (colon != NULL && colon < slash) {
		if ((size_t)(slash - rest) >= sizeof(addr)) {
			snprintf(err, errlen, "bad meta address in '%s'", uri);
			return -EINVAL;
		}
		memcpy(addr, rest, (size_t)(slash - rest));
		addr[slash - rest] = '\0';
		meta = addr;
		rest = slash + 1;
	}
	if (meta == NULL || meta[0] == '\0') {
		meta = getenv("STRATA_META");
	}
	if (meta == NULL || meta[0] == '\0') {
		meta = "127.0.0.1:7700";
	}
	struct strata_conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		return -ENOMEM;
	}
	bench_conn_init(&c->base, &bench_target_strata);
	const char *threaded = getenv("STRATA_BENCH_THREADED");
	c->threaded = threaded != NULL && strcmp(threaded, "1") == 0;
	int rc = strata_connect_flags(meta, c->threaded ? 0 : STRATA_CONNECT_POLL, &c->cl);
	if (rc < 0) {
		snprintf(err, errlen, "cannot connect to strata-meta at %s: %s", meta,
			 strerror(-rc));
		goto fail;
	}
	rc = strata_open(c->cl, rest, 0, &c->vol);
	if (rc < 0) {
		snprintf(err, errlen, "cannot open volume '%s': %s", rest, strerror(-rc));
		goto fail;
	}
	if (c->threaded) {
		c->base.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (c->base.wake_fd < 0) {
			rc = -errno;
			snprintf(err, errlen, "eventfd: %s", strerror(errno));
			goto fail;
		}
	}
	c->base.size = strata_size(c->vol);
	c->base.min_io = 4096;
	c->base.read_only = strata_read_only(c->vol);
	*out = &c->base;
	return 0;
fail:
	strata_close_conn(&c->base);
	return rc;
}

static void strata_done(void *arg, int err)
{
	struct bench_io *io = arg;
	bench_conn_complete(io->conn, io, err);
}

static int strata_submit(struct bench_conn *bc, struct bench_io *io)
{
	struct strata_conn *c = (struct strata_conn *)bc;
	if (io->write) {
		return strata_aio_write(c->vol, io->off, io->len, io->buf, 0, strata_done, io);
	}
	return strata_aio_read(c->vol, io->off, io->len, io->buf, strata_done, io);
}

static int strata_wait(struct bench_conn *bc, int timeout_ms)
{
	struct strata_conn *c = (struct strata_conn *)bc;
	if (!c->threaded) {
		int n = strata_poll(c->cl, timeout_ms);
		return n < 0 ? n : 0;
	}
	struct pollfd p = {.fd = bc->wake_fd, .events = POLLIN};
	int n = poll(&p, 1, timeout_ms);
	if (n < 0) {
		return errno == EINTR ? 0 : -errno;
	}
	if (n > 0) {
		uint64_t v;
		ssize_t r = read(bc->wake_fd, &v, sizeof(v));
		(void)r; /* EAGAIN: a racing read already drained it */
	}
	return 0;
}

const struct bench_target_ops bench_target_strata = {
	.scheme = "strata",
	.open = strata_open_conn,
	.submit = strata_submit,
	.poll = strata_wait,
	.close = strata_close_conn,
};
