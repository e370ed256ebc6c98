/*
 * Executing requests against libstrata, and building their replies.
 *
 *   the reactor thread (libstrata shares it, client/embed.h):
 *   nbd_req_execute --strata_aio_*--> libstrata --> blockd --> strata_done(req, err)
 *   req_complete   <--st_reactor_post (a local queue push)--  (nothing else touches req there)
 *   queue reply --> sent --> nbd_req_put
 *
 * Replies go out in completion order, so many requests are in flight per connection and
 * replies are naturally out of order. A request struct lives in the connection's pool and
 * keeps its data buffer between uses, so the steady state allocates nothing.
 *
 * Structured READ replies scan the data at 4 KiB granularity and send all-zero runs as
 * NBD_REPLY_TYPE_OFFSET_HOLE ("reads as zeroes"). That covers unallocated ranges (which read
 * as zeros) without a second round trip for block status on every read.
 */
#include <endian.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"

#define NBD_KEEP_BUF (1u << 20) /* buffers up to this size stay with the pooled request */
#define ZERO_SCAN    4096u

struct nbd_req *nbd_req_get(struct nbd_conn *c)
{
	struct nbd_req *r = TAILQ_FIRST(&c->freereqs);

	if (r != NULL) {
		TAILQ_REMOVE(&c->freereqs, r, link);
	} else {
		r = calloc(1, sizeof(*r));
		if (r == NULL) {
			return NULL;
		}
		r->conn = c;
	}
	r->err = 0;
	r->stage = 0;
	r->next = 0;
	c->active++;
	c->srv->live++;
	return r;
}

void nbd_req_put(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;

	if (r->bufcap > NBD_KEEP_BUF) {
		free(r->buf);
		r->buf = NULL;
		r->bufcap = 0;
	}
	TAILQ_INSERT_HEAD(&c->freereqs, r, link);
	c->active--;
	c->srv->live--;
	nbd_conn_req_released(c);
}

void nbd_req_free_all(struct nbd_conn *c)
{
	struct nbd_req *r;

	while ((r = TAILQ_FIRST(&c->freereqs)) != NULL) {
		TAILQ_REMOVE(&c->freereqs, r, link);
		free(r->buf);
		free(r->ext);
		free(r);
	}
}

/* Returns 0 or -ENOMEM. */
int nbd_req_buf(struct nbd_req *r, size_t n)
{
	uint8_t *p;

	if (n <= r->bufcap) {
		return 0;
	}
	p = malloc(n);
	if (p == NULL) {
		return -ENOMEM;
	}
	free(r->buf);
	r->buf = p;
	r->bufcap = n;
	return 0;
}

static void req_sent(struct nbd_out *o)
{
	struct nbd_req *r = (struct nbd_req *)((char *)o - offsetof(struct nbd_req, out));

	nbd_req_put(r);
}

static void out_push(struct nbd_req *r, int *iovcnt, void *base, size_t len)
{
	r->iov[*iovcnt].iov_base = base;
	r->iov[*iovcnt].iov_len = len;
	(*iovcnt)++;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Structured READ: OFFSET_DATA and OFFSET_HOLE chunks, the last one flagged DONE. */
static int build_read_chunks(struct nbd_req *r)
{
	const struct nbd_request *q = &r->req;
	bool df = q->flags & NBD_CMD_FLAG_DF;
	size_t runs_off[NBD_MAX_CHUNKS], runs_len[NBD_MAX_CHUNKS];
	bool runs_zero[NBD_MAX_CHUNKS];
	int nruns = 0, iovcnt = 0;

	for (size_t off = 0; off < q->length;) {
		size_t n = q->length - off < ZERO_SCAN ? q->length - off : ZERO_SCAN;
		bool z = !df && all_zero(r->buf + off, n);

		if (nruns > 0 && runs_zero[nruns - 1] == z) {
			runs_len[nruns - 1] += n;
		} else if (nruns == NBD_MAX_CHUNKS) {
			/* Out of chunks: the last run becomes data and absorbs the rest. */
			runs_zero[nruns - 1] = false;
			runs_len[nruns - 1] = q->length - runs_off[nruns - 1];
			break;
		} else {
			runs_off[nruns] = off;
			runs_len[nruns] = n;
			runs_zero[nruns] = z;
			nruns++;
		}
		off += n;
	}
	for (int i = 0; i < nruns; i++) {
		uint16_t flags = i == nruns - 1 ? NBD_REPLY_FLAG_DONE : 0;
		uint8_t *h = r->hdrs[i];
		uint64_t off = htobe64(q->offset + runs_off[i]);

		if (runs_zero[i]) {
			uint32_t len = htobe32((uint32_t)runs_len[i]);

			nbd_encode_chunk(h, q->handle, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
			memcpy(h + 20, &off, 8);
			memcpy(h + 28, &len, 4);
			out_push(r, &iovcnt, h, 32);
		} else {
			nbd_encode_chunk(h, q->handle, flags, NBD_REPLY_TYPE_OFFSET_DATA,
					 (uint32_t)(8 + runs_len[i]));
			memcpy(h + 20, &off, 8);
			out_push(r, &iovcnt, h, 28);
			out_push(r, &iovcnt, r->buf + runs_off[i], runs_len[i]);
		}
	}
	return iovcnt;
}

/* Structured BLOCK_STATUS: one chunk, context id then (length, flags) descriptors. */
static int build_block_status(struct nbd_req *r)
{
	const struct nbd_request *q = &r->req;
	uint64_t pos = q->offset, end = q->offset + q->length;
	size_t nd = 0;
	uint32_t id = htobe32(NBD_META_ID_ALLOCATION);
	int iovcnt = 0;

	for (size_t i = 0; i < r->next && pos < end; i++) {
		const struct strata_extent *e = &r->ext[i];
		uint64_t eend = e->offset + e->length;
		uint32_t flags = 0, len, be[2];

		if (eend <= pos) {
			continue;
		}
		if (eend > end) {
			eend = end;
		}
		if (e->flags & STRATA_EXTENT_HOLE) {
			flags |= NBD_STATE_HOLE | NBD_STATE_ZERO;
		}
		if (e->flags & STRATA_EXTENT_ZERO) {
			flags |= NBD_STATE_ZERO;
		}
		len = (uint32_t)(eend - pos);
		/* Merge neighbours with equal flags: fewer descriptors for the client. */
		if (nd > 0) {
			uint32_t *prev = (uint32_t *)(r->buf + 8 * (nd - 1));

			if (be32toh(prev[1]) == flags) {
				prev[0] = htobe32(be32toh(prev[0]) + len);
				pos = eend;
				continue;
			}
		}
		be[0] = htobe32(len);
		be[1] = htobe32(flags);
		memcpy(r->buf + 8 * nd, be, 8);
		nd++;
		pos = eend;
		if (q->flags & NBD_CMD_FLAG_REQ_ONE) {
			break;
		}
	}
	if (nd == 0) {
		/* libstrata described nothing: claim allocated data, which is always safe. */
		uint32_t be[2] = {htobe32(q->length), 0};

		memcpy(r->buf, be, 8);
		nd = 1;
	}
	nbd_encode_chunk(r->hdrs[0], q->handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS,
			 (uint32_t)(4 + 8 * nd));
	memcpy(r->hdrs[0] + 20, &id, 4);
	out_push(r, &iovcnt, r->hdrs[0], 24);
	out_push(r, &iovcnt, r->buf, 8 * nd);
	return iovcnt;
}

/* Build and queue the reply for r, whose outcome is r->err. */
static void req_reply(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	const struct nbd_request *q = &r->req;
	int iovcnt = 0;

	if (r->err < 0) {
		st_debug("conn %u: %s off=%llu len=%u: %s", c->id, nbd_cmd_name(q->type),
			 (unsigned long long)q->offset, q->length, strerror(-r->err));
	}
	if (!c->tx.structured) {
		nbd_encode_simple(r->hdrs[0], q->handle, nbd_errno_to_wire(r->err));
		out_push(r, &iovcnt, r->hdrs[0], sizeof(struct nbd_simple_reply_wire));
		if (r->err == 0 && q->type == NBD_CMD_READ) {
			out_push(r, &iovcnt, r->buf, q->length);
		}
	} else if (r->err < 0) {
		uint32_t e = htobe32(nbd_errno_to_wire(r->err));
		uint16_t msglen = 0;

		nbd_encode_chunk(r->hdrs[0], q->handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
				 6);
		memcpy(r->hdrs[0] + 20, &e, 4);
		memcpy(r->hdrs[0] + 24, &msglen, 2);
		out_push(r, &iovcnt, r->hdrs[0], 26);
	} else if (q->type == NBD_CMD_READ) {
		iovcnt = build_read_chunks(r);
	} else if (q->type == NBD_CMD_BLOCK_STATUS) {
		iovcnt = build_block_status(r);
	} else {
		nbd_encode_chunk(r->hdrs[0], q->handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
				 0);
		out_push(r, &iovcnt, r->hdrs[0], 20);
	}
	r->out.iov = r->iov;
	r->out.iovcnt = iovcnt;
	r->out.sent = req_sent;
	nbd_conn_queue(c, &r->out);
}

void nbd_req_reply_now(struct nbd_req *r, int err)
{
	r->err = err;
	req_reply(r);
}

static void strata_done(void *arg, int err);

/* Back on the reactor thread. */
static void req_complete(void *arg)
{
	struct nbd_req *r = arg;
	struct nbd_conn *c = r->conn;

	nbd_conn_hold(c);
	c->executing--;
	if (c->closing) {
		nbd_req_put(r);
		nbd_conn_unhold(c);
		return;
	}
	if (r->err == 0 && r->stage == 0 && r->req.type == NBD_CMD_TRIM &&
	    (r->req.flags & NBD_CMD_FLAG_FUA)) {
		/* TRIM has no FUA in libstrata: follow it with a flush. */
		int ret;

		r->stage = 1;
		c->executing++;
		ret = strata_aio_flush(nbd_export_volume(c->exp), strata_done, r);
		if (ret == 0) {
			nbd_conn_unhold(c);
			return;
		}
		c->executing--;
		r->err = ret;
	}
	req_reply(r);
	nbd_conn_unhold(c);
}

/* libstrata's callback, on this reactor's thread (libstrata shares it): the post is a push on
 * the reactor's local queue, so req_complete runs at the top level of this turn. */
static void strata_done(void *arg, int err)
{
	struct nbd_req *r = arg;

	r->err = err;
	while (st_reactor_post(r->conn->srv->r, req_complete, r) < 0) {
		sched_yield(); /* -ENOMEM: the reply is owed, so wait for memory */
	}
}

void nbd_req_execute(struct nbd_req *r)
{
	struct nbd_conn *c = r->conn;
	struct strata_volume *v = nbd_export_volume(c->exp);
	const struct nbd_request *q = &r->req;
	unsigned wflags = (q->flags & NBD_CMD_FLAG_FUA) ? STRATA_WRITE_FUA : 0;
	int ret;

	c->executing++;
	switch (q->type) {
	case NBD_CMD_READ:
		ret = nbd_req_buf(r, q->length);
		ret = ret ?: strata_aio_read(v, q->offset, q->length, r->buf, strata_done, r);
		break;
	case NBD_CMD_WRITE:
		ret = strata_aio_write(v, q->offset, q->length, r->buf, wflags, strata_done, r);
		break;
	case NBD_CMD_FLUSH:
		ret = strata_aio_flush(v, strata_done, r);
		break;
	case NBD_CMD_TRIM:
		ret = strata_aio_trim(v, q->offset, q->length, strata_done, r);
		break;
	case NBD_CMD_WRITE_ZEROES:
		if ((q->flags & NBD_CMD_FLAG_NO_HOLE) && (q->flags & NBD_CMD_FLAG_FAST_ZERO)) {
			/* Allocated zeros are written like data: not fast, so say so at once. */
			ret = -ENOTSUP;
			break;
		}
		if ((q->flags & NBD_CMD_FLAG_NO_HOLE) == 0) {
			wflags |= STRATA_ZERO_MAY_TRIM;
		}
		ret = strata_aio_write_zeroes(v, q->offset, q->length, wflags, strata_done, r);
		break;
	case NBD_CMD_BLOCK_STATUS:
		if (r->ext == NULL) {
			r->ext = calloc(NBD_MAX_EXTENTS, sizeof(*r->ext));
		}
		ret = r->ext == NULL ? -ENOMEM : nbd_req_buf(r, 8 * NBD_MAX_EXTENTS);
		ret = ret
			      ?: strata_aio_block_status(
					 v, q->offset, q->length, r->ext,
					 (q->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_EXTENTS,
					 &r->next, strata_done, r);
		break;
	case NBD_CMD_CACHE:
		/* No client-side cache exists to fill (writes must be visible to every host), and
		 * blockd keeps its own: CACHE is advisory, so succeed without I/O. */
	default:
		ret = 0;
		c->executing--;
		req_reply(r);
		return;
	}
	if (ret < 0) {
		c->executing--;
		r->err = ret;
		req_reply(r);
	}
}
