/*
 * iscsi:// through libiscsi: one session per job (READ16/WRITE16 tasks with data placed
 * directly in the job's buffers through an iovec), driven by poll + iscsi_service in the job
 * thread. Works against any SBC target: strata-iscsi, tgt, LIO.
 */
#include <errno.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define ISCSI_MAX_SLOTS 4096

struct iscsi_conn {
	struct bench_conn base;
	struct iscsi_context *ctx;
	struct iscsi_url *url;
	int lun;
	uint32_t block_size;
	bool logged_in;
	struct scsi_iovec iov[ISCSI_MAX_SLOTS];
};

static void iscsi_close_conn(struct bench_conn *bc)
{
	struct iscsi_conn *c = (struct iscsi_conn *)bc;
	if (c->ctx != NULL) {
		if (c->logged_in) {
			iscsi_logout_sync(c->ctx);
		}
		if (c->url != NULL) {
			iscsi_destroy_url(c->url);
		}
		iscsi_destroy_context(c->ctx);
	}
	pthread_mutex_destroy(&bc->lock);
	free(c);
}

static int iscsi_open_conn(const char *uri, const char *meta, struct bench_conn **out, char *err,
			   size_t errlen)
{
	static _Atomic unsigned seq;
	struct iscsi_conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		return -ENOMEM;
	}
	bench_conn_init(&c->base, &bench_target_iscsi);
	int rc = -EIO;
	char initiator[128];
	snprintf(initiator, sizeof(initiator), "iqn.2024-01.org.strata:bench-%d-%u", (int)getpid(),
		 atomic_fetch_add(&seq, 1));
	c->ctx = iscsi_create_context(initiator);
	if (c->ctx == NULL) {
		snprintf(err, errlen, "iscsi_create_context failed");
		rc = -ENOMEM;
		goto fail;
	}
	c->url = iscsi_parse_full_url(c->ctx, uri);
	if (c->url == NULL) {
		snprintf(err, errlen, "bad target '%s': %s (want iscsi://host[:port]/iqn/lun)", uri,
			 iscsi_get_error(c->ctx));
		rc = -EINVAL;
		goto fail;
	}
	c->lun = c->url->lun;
	iscsi_set_targetname(c->ctx, c->url->target);
	iscsi_set_session_type(c->ctx, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(c->ctx, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	if (c->url->user[0] != '\0') {
		iscsi_set_initiator_username_pwd(c->ctx, c->url->user, c->url->passwd);
	}
	if (iscsi_full_connect_sync(c->ctx, c->url->portal, c->lun) != 0) {
		snprintf(err, errlen, "cannot log in to %s: %s", uri, iscsi_get_error(c->ctx));
		rc = -ECONNREFUSED;
		goto fail;
	}
	c->logged_in = true;
	struct scsi_task *t = iscsi_readcapacity16_sync(c->ctx, c->lun);
	if (t == NULL || t->status != SCSI_STATUS_GOOD) {
		snprintf(err, errlen, "%s: READ CAPACITY(16) failed: %s", uri,
			 iscsi_get_error(c->ctx));
		if (t != NULL) {
			scsi_free_scsi_task(t);
		}
		goto fail;
	}
	struct scsi_readcapacity16 *rc16 = scsi_datain_unmarshall(t);
	if (rc16 == NULL || rc16->block_length == 0) {
		snprintf(err, errlen, "%s: cannot parse READ CAPACITY(16)", uri);
		scsi_free_scsi_task(t);
		goto fail;
	}
	c->block_size = rc16->block_length;
	c->base.size = (rc16->returned_lba + 1) * (uint64_t)rc16->block_length;
	c->base.min_io = rc16->block_length;
	scsi_free_scsi_task(t);
	*out = &c->base;
	return 0;
fail:
	iscsi_close_conn(&c->base);
	return rc;
}

static void iscsi_done(struct iscsi_context *ctx, int status, void *command_data,
		       void *private_data)
{
	struct bench_io *io = private_data;
	struct scsi_task *t = command_data;
	int err = 0;
	if (status != SCSI_STATUS_GOOD) {
		err = -EIO;
		if (status == SCSI_STATUS_CHECK_CONDITION && t != NULL) {
			fprintf(stderr, "strata-bench: iscsi %s at %llu: %s\n",
				io->write ? "write" : "read", (unsigned long long)io->off,
				iscsi_get_error(ctx));
		}
	}
	if (t != NULL) {
		scsi_free_scsi_task(t);
	}
	bench_conn_complete(io->conn, io, err);
}

static int iscsi_submit(struct bench_conn *bc, struct bench_io *io)
{
	struct iscsi_conn *c = (struct iscsi_conn *)bc;
	if (io->slot < 0 || io->slot >= ISCSI_MAX_SLOTS) {
		return -EINVAL;
	}
	struct scsi_iovec *iov = &c->iov[io->slot];
	iov->iov_base = io->buf;
	iov->iov_len = io->len;
	uint64_t lba = io->off / c->block_size;
	struct scsi_task *t;
	if (io->write) {
		t = iscsi_write16_iov_task(c->ctx, c->lun, lba, NULL, io->len, (int)c->block_size,
					   0, 0, 0, 0, 0, iscsi_done, io, iov, 1);
	} else {
		t = iscsi_read16_iov_task(c->ctx, c->lun, lba, io->len, (int)c->block_size, 0, 0, 0,
					  0, 0, iscsi_done, io, iov, 1);
	}
	return t == NULL ? -ENOMEM : 0;
}

static int iscsi_poll_conn(struct bench_conn *bc, int timeout_ms)
{
	struct iscsi_conn *c = (struct iscsi_conn *)bc;
	struct pollfd p = {.fd = iscsi_get_fd(c->ctx), .events = (short)iscsi_which_events(c->ctx)};
	int n = poll(&p, 1, timeout_ms);
	if (n < 0) {
		return errno == EINTR ? 0 : -errno;
	}
	if (iscsi_service(c->ctx, n > 0 ? p.revents : 0) < 0) {
		fprintf(stderr, "strata-bench: iscsi: %s\n", iscsi_get_error(c->ctx));
		return -EIO;
	}
	return 0;
}

const struct bench_target_ops bench_target_iscsi = {
	.scheme = "iscsi",
	.open = iscsi_open_conn,
	.submit = iscsi_submit,
	.poll = iscsi_poll_conn,
	.close = iscsi_close_conn,
};
