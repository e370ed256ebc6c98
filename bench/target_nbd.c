/*
 * nbd:// through libnbd: one handle (one TCP connection) per job, driven by nbd_aio_pread /
 * nbd_aio_pwrite and nbd_poll in the job thread, so completion callbacks run on that thread.
 */
#include <errno.h>
#include <libnbd.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct nbd_conn {
	struct bench_conn base;
	struct nbd_handle *h;
};

static void nbd_close_conn(struct bench_conn *bc)
{
	struct nbd_conn *c = (struct nbd_conn *)bc;
	if (c->h != NULL) {
		nbd_shutdown(c->h, 0);
		nbd_close(c->h);
	}
	pthread_mutex_destroy(&bc->lock);
	free(c);
}

static int nbd_errno_or(int fallback)
{
	int e = nbd_get_errno();
	return e > 0 ? -e : -fallback;
}

static int nbd_open_conn(const char *uri, const char *meta, struct bench_conn **out, char *err,
			 size_t errlen)
{
	struct nbd_conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		return -ENOMEM;
	}
	bench_conn_init(&c->base, &bench_target_nbd);
	int rc;
	c->h = nbd_create();
	if (c->h == NULL) {
		snprintf(err, errlen, "nbd_create: %s", nbd_get_error());
		rc = nbd_errno_or(ENOMEM);
		goto fail;
	}
	if (nbd_connect_uri(c->h, uri) < 0) {
		snprintf(err, errlen, "cannot connect to %s: %s", uri, nbd_get_error());
		rc = nbd_errno_or(ECONNREFUSED);
		goto fail;
	}
	int64_t size = nbd_get_size(c->h);
	if (size < 0) {
		snprintf(err, errlen, "%s: %s", uri, nbd_get_error());
		rc = nbd_errno_or(EIO);
		goto fail;
	}
	c->base.size = (uint64_t)size;
	int64_t min = nbd_get_block_size(c->h, LIBNBD_SIZE_MINIMUM);
	c->base.min_io = min > 0 ? (uint32_t)min : 1;
	c->base.read_only = nbd_is_read_only(c->h) == 1;
	*out = &c->base;
	return 0;
fail:
	nbd_close_conn(&c->base);
	return rc;
}

static int nbd_done(void *user_data, int *error)
{
	struct bench_io *io = user_data;
	bench_conn_complete(io->conn, io, *error ? -*error : 0);
	return 1; /* retire the command */
}

static int nbd_submit(struct bench_conn *bc, struct bench_io *io)
{
	struct nbd_conn *c = (struct nbd_conn *)bc;
	nbd_completion_callback cb = {.callback = nbd_done, .user_data = io};
	int64_t cookie = io->write ? nbd_aio_pwrite(c->h, io->buf, io->len, io->off, cb, 0)
				   : nbd_aio_pread(c->h, io->buf, io->len, io->off, cb, 0);
	return cookie < 0 ? nbd_errno_or(EIO) : 0;
}

static int nbd_poll_conn(struct bench_conn *bc, int timeout_ms)
{
	struct nbd_conn *c = (struct nbd_conn *)bc;
	if (nbd_poll(c->h, timeout_ms) < 0) {
		fprintf(stderr, "strata-bench: nbd: %s\n", nbd_get_error());
		return nbd_errno_or(EIO);
	}
	return 0;
}

const struct bench_target_ops bench_target_nbd = {
	.scheme = "nbd",
	.open = nbd_open_conn,
	.submit = nbd_submit,
	.poll = nbd_poll_conn,
	.close = nbd_close_conn,
};
