/*
 * The data path. A user call becomes one struct sc_req, split at object boundaries into
 * struct sc_sub, each sent to the primary of its object's PG at the current map epoch:
 *
 *   strata_aio_*  (any thread) --validate--> sc_submit --st_reactor_post--> req_start
 *   req_start (I/O thread) --> sub_send --st_client_call--> primary blockd
 *   sub_done: success -> merge; retriable (node gone, stale map, reset) -> back off, refresh
 *             the map, resend with the same (client_id, seq) so blockd applies it once
 *   last sub done -> req_finish -> user cb
 *
 * Flush scope: every successful mutation marks its node dirty in the volume; a flush sends
 * FLUSH to exactly the dirty nodes (clearing the marks first, restoring them on failure), so a
 * flush covers every write this process completed on the volume, across all its callers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockd.pb-c.h"
#include "common/log.h"
#include "internal.h"

#define SUB_MAX_LEN (8u << 20) /* keep frames and bounce buffers bounded */

static void sub_send(struct sc_sub *s);

static bool dirty_test(const strata_volume *v, uint32_t id)
{
	return id < SC_MAX_NODES && (v->dirty[id / 8] & (1u << (id % 8)));
}

static void dirty_set(strata_volume *v, uint32_t id, bool on)
{
	if (id >= SC_MAX_NODES) {
		return;
	}
	if (on) {
		v->dirty[id / 8] |= (uint8_t)(1u << (id % 8));
	} else {
		v->dirty[id / 8] &= (uint8_t) ~(1u << (id % 8));
	}
}

static uint32_t ext_flags(int state)
{
	switch (state) {
	case STRATA__BLOCKD__BLOCK_STATE__BLOCK_UNALLOCATED:
		return STRATA_EXTENT_HOLE | STRATA_EXTENT_ZERO;
	case STRATA__BLOCKD__BLOCK_STATE__BLOCK_ZERO:
		return STRATA_EXTENT_ZERO;
	default:
		return 0;
	}
}

/* Concatenate the subs' extents in order, merging neighbours with equal flags. */
static void status_merge(struct sc_req *req)
{
	size_t n = 0;

	for (size_t i = 0; i < req->nsubs; i++) {
		struct sc_sub *s = &req->subs[i];
		for (size_t j = 0; j < s->sn; j++) {
			struct strata_extent e = s->sext[j];
			if (n > 0 && req->ext[n - 1].flags == e.flags &&
			    req->ext[n - 1].offset + req->ext[n - 1].length == e.offset) {
				req->ext[n - 1].length += e.length;
			} else if (n < req->ext_max) {
				req->ext[n++] = e;
			} else {
				goto out;
			}
		}
	}
out:
	*req->ext_n = n;
}

static void req_finish(struct sc_req *req)
{
	strata_volume *v = req->v;

	if (req->op == SC_STATUS && req->err == 0) {
		status_merge(req);
	}
	strata_cb cb = req->cb;
	void *cb_arg = req->cb_arg;
	int err = req->err;

	for (size_t i = 0; i < req->nsubs; i++) {
		free(req->subs[i].bounce);
		free(req->subs[i].sext);
	}
	free(req->subs);
	free(req);
	/* Out of libstrata before the callback, so the callback may close the volume. */
	v->c->live--;
	atomic_fetch_sub(&v->inflight, 1);
	cb(cb_arg, err);
}

static void sub_complete(struct sc_sub *s, int err)
{
	struct sc_req *req = s->req;

	if (err < 0 && req->err == 0) {
		req->err = err;
	}
	if (--req->pending == 0) {
		req_finish(req);
	}
}

static bool retriable(int err)
{
	switch (err) {
	case -ECONNRESET:
	case -ECANCELED:
	case -ENOTCONN:
	case -ECONNREFUSED:
	case -ESTALE:
	case -EHOSTDOWN:
	case -EHOSTUNREACH:
	case -ETIMEDOUT:
	case -EPIPE:
	case -EAGAIN:
	case -EINPROGRESS:
	case -ESHUTDOWN: /* the node is stopping: another serves it next */
		return true;
	default:
		return false;
	}
}

static void sub_timer_fired(void *arg, int res)
{
	struct sc_sub *s = arg;

	(void)res;
	s->req->v->c->timers--;
	if (s->req->v->c->stopping) {
		sub_complete(s, -ESHUTDOWN);
		return;
	}
	sub_send(s);
}

/* Back off and resend, or give up once the request has failed for SC_RETRY_LIMIT_MS. */
static void sub_retry(struct sc_sub *s, int err)
{
	strata_cluster *c = s->req->v->c;
	uint64_t now = st_now_ms();

	s->last_err = err;
	if (c->stopping || now - s->started_ms > SC_RETRY_LIMIT_MS) {
		sub_complete(s, err);
		return;
	}
	uint64_t delay = SC_RETRY_MIN_MS << (s->attempts < 5 ? s->attempts : 5);
	if (delay > SC_RETRY_MAX_MS) {
		delay = SC_RETRY_MAX_MS;
	}
	s->attempts++;
	sc_map_refresh(c);
	c->timers++;
	st_reactor_timer(c->r, &s->timer, delay, sub_timer_fired, s);
}

static void sub_done(void *arg, int err, struct st_frame *reply)
{
	struct sc_sub *s = arg;
	struct sc_req *req = s->req;
	strata_volume *v = req->v;

	if (err < 0) {
		if (err == -EBADE && req->op == SC_CAW) {
			Strata__Blockd__IoReply *r =
				reply ? strata__blockd__io_reply__unpack(NULL, reply->hdr.hdr_len,
									 reply->msg)
				      : NULL;
			if (r != NULL && req->miscompare != NULL) {
				*req->miscompare = r->miscompare_offset;
			}
			if (r != NULL) {
				strata__blockd__io_reply__free_unpacked(r, NULL);
			}
			sub_complete(s, -EILSEQ);
			return;
		}
		if (req->op == SC_FLUSH) {
			dirty_set(v, s->node_id, true); /* still owed a flush */
		}
		if (retriable(err)) {
			if (err != -ESTALE && err != -EINPROGRESS && err != -EAGAIN) {
				sc_node_failed(v->c, s->node_id);
			}
			sub_retry(s, err);
			return;
		}
		sub_complete(s, err);
		return;
	}

	switch (req->op) {
	case SC_READ:
		if (reply == NULL || reply->payload == NULL ||
		    reply->hdr.payload_len < (uint64_t)s->skip + s->copy_len) {
			sub_complete(s, -EIO);
			return;
		}
		memcpy((uint8_t *)req->rbuf + s->buf_off, reply->payload + s->skip, s->copy_len);
		break;
	case SC_WRITE:
	case SC_ZERO:
	case SC_TRIM:
	case SC_CAW:
		dirty_set(v, s->node_id, true);
		break;
	case SC_STATUS: {
		Strata__Blockd__BlockStatusReply *r = strata__blockd__block_status_reply__unpack(
			NULL, reply->hdr.hdr_len, reply->msg);
		if (r == NULL) {
			sub_complete(s, -EIO);
			return;
		}
		uint64_t base = s->obj * v->object_size;
		uint64_t lo = req->off, hi = req->off + req->len;
		s->sext = calloc(r->n_extents ? r->n_extents : 1, sizeof(*s->sext));
		if (s->sext == NULL) {
			strata__blockd__block_status_reply__free_unpacked(r, NULL);
			sub_complete(s, -ENOMEM);
			return;
		}
		for (size_t i = 0; i < r->n_extents; i++) {
			uint64_t a = base + r->extents[i]->offset;
			uint64_t b = a + r->extents[i]->length;
			a = a < lo ? lo : a;
			b = b > hi ? hi : b;
			if (a >= b) {
				continue;
			}
			s->sext[s->sn++] =
				(struct strata_extent){.offset = a,
						       .length = b - a,
						       .flags = ext_flags(r->extents[i]->state)};
		}
		strata__blockd__block_status_reply__free_unpacked(r, NULL);
		break;
	}
	case SC_FLUSH:
		break;
	}
	sub_complete(s, 0);
}

/*
 * A flush owed to a node that the map now says is down: with replicas, every write it
 * acknowledged is on the PG's other members, so ask any up node to flush itself and every
 * other up node instead. With R=1 the writes are only there: keep asking that node.
 */
static bool flush_redirect(strata_cluster *c, uint32_t pool_id, uint32_t *target)
{
	const struct sc_map *m = c->map;
	const struct sc_pool *p = sc_map_pool(m, pool_id);
	if (m == NULL || p == NULL || p->replicas < 2) {
		return false;
	}
	size_t up = SIZE_MAX;
	for (size_t i = 0; i < m->n_nodes; i++) {
		if (m->place[i].id == *target && m->place[i].up) {
			return false;
		}
		if (m->place[i].up && up == SIZE_MAX) {
			up = i;
		}
	}
	if (up == SIZE_MAX) {
		return false;
	}
	*target = m->place[up].id;
	return true;
}

static void sub_send(struct sc_sub *s)
{
	struct sc_req *req = s->req;
	strata_volume *v = req->v;
	strata_cluster *c = v->c;
	uint16_t type;
	const void *payload = NULL;
	size_t plen = 0;
	uint8_t flags = 0;
	int rc;

	if (req->op != SC_FLUSH) {
		if (!sc_volume_ready(v, s)) {
			return; /* parked until the volume is re-resolved at this epoch */
		}
		if (v->gone) {
			sub_complete(s, -ENOENT);
			return;
		}
		if (v->read_only && req->op != SC_READ && req->op != SC_STATUS) {
			sub_complete(s, -EROFS); /* marked a template, or snapshotted into r/o */
			return;
		}
		rc = sc_primary(c, v->pool_id, v->family, s->obj, &s->node_id);
		if (rc < 0) {
			sub_retry(s, rc);
			return;
		}
	}
	uint32_t target = s->node_id;
	bool all = false;
	if (req->op == SC_FLUSH) {
		all = flush_redirect(c, v->pool_id, &target);
	}
	struct st_client *cl = sc_node_client(c, target);
	if (cl == NULL) {
		sc_node_failed(c, target);
		sub_retry(s, -EHOSTDOWN);
		return;
	}

	if (req->op == SC_FLUSH) {
		Strata__Blockd__FlushRequest fr = STRATA__BLOCKD__FLUSH_REQUEST__INIT;
		fr.pool_id = v->pool_id;
		fr.map_epoch = c->map->epoch;
		fr.all_members = all;
		rc = st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_FLUSH, 0, &fr.base,
				    NULL, 0, sub_done, s);
	} else {
		Strata__Blockd__IoRequest io = STRATA__BLOCKD__IO_REQUEST__INIT;
		io.pool_id = v->pool_id;
		io.family = v->family;
		io.object = s->obj;
		io.layer = v->layer;
		io.n_ancestry = v->n_ancestry;
		io.ancestry = v->ancestry;
		io.map_epoch = c->map->epoch;
		io.offset = s->obj_off;
		io.length = s->len;
		switch (req->op) {
		case SC_READ:
			type = STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_READ;
			break;
		case SC_WRITE:
			type = STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE;
			payload = (const uint8_t *)req->wbuf + s->buf_off;
			plen = s->len;
			break;
		case SC_ZERO:
			type = STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE_ZEROES;
			break;
		case SC_TRIM:
			type = STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_TRIM;
			break;
		case SC_STATUS:
			type = STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_BLOCK_STATUS;
			break;
		case SC_CAW:
		default:
			type = STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_COMPARE_AND_WRITE;
			payload = s->bounce;
			plen = 2 * (size_t)s->len;
			break;
		}
		if (req->op != SC_READ && req->op != SC_STATUS) {
			io.client_id = c->client_id;
			io.seq = s->seq;
			if (req->flags & STRATA_WRITE_FUA) {
				flags |= ST_FRAME_F_FUA;
			}
		}
		rc = st_client_call(cl, type, flags, &io.base, payload, plen, sub_done, s);
	}
	if (rc < 0) {
		sc_node_failed(c, target);
		sub_retry(s, rc);
	}
}

void sc_sub_resend(struct sc_sub *s)
{
	sub_send(s);
}

void sc_sub_fail(struct sc_sub *s, int err)
{
	sub_complete(s, err);
}

static void req_start(void *arg)
{
	struct sc_req *req = arg;
	strata_volume *v = req->v;
	strata_cluster *c = v->c;

	c->live++;
	if (req->op == SC_FLUSH) {
		size_t n = 0;
		for (uint32_t id = 0; id < SC_MAX_NODES; id++) {
			if (dirty_test(v, id)) {
				n++;
			}
		}
		req->subs = calloc(n ? n : 1, sizeof(*req->subs));
		if (req->subs == NULL) {
			req->err = -ENOMEM;
			req->pending = 1;
			sub_complete(&(struct sc_sub){.req = req}, -ENOMEM);
			return;
		}
		for (uint32_t id = 0; id < SC_MAX_NODES; id++) {
			if (dirty_test(v, id)) {
				dirty_set(v, id, false);
				req->subs[req->nsubs++] =
					(struct sc_sub){.req = req, .node_id = id};
			}
		}
	}
	if (req->nsubs == 0) {
		req->pending = 1;
		struct sc_sub none = {.req = req};
		sub_complete(&none, 0);
		return;
	}
	req->pending = (int)req->nsubs;
	uint64_t now = st_now_ms();
	for (size_t i = 0; i < req->nsubs; i++) {
		req->subs[i].started_ms = now;
		if (req->op != SC_READ && req->op != SC_STATUS) {
			req->subs[i].seq = ++c->seq;
		}
	}
	/* Sending may complete subs synchronously (errors), so count first, then send. */
	size_t nsubs = req->nsubs;
	for (size_t i = 0; i < nsubs; i++) {
		sub_send(&req->subs[i]);
	}
}

/* Split [off, off+len) at object boundaries (and SUB_MAX_LEN) into subs. */
static int req_split(struct sc_req *req)
{
	strata_volume *v = req->v;
	uint64_t end = req->off + req->len;
	size_t cap = 0, n = 0;
	uint64_t pos;

	if (req->op == SC_FLUSH || req->len == 0) {
		return 0;
	}
	uint64_t step = v->object_size < SUB_MAX_LEN ? v->object_size : SUB_MAX_LEN;
	cap = (size_t)((end - (req->off / step) * step + step - 1) / step) + 1;
	req->subs = calloc(cap, sizeof(*req->subs));
	if (req->subs == NULL) {
		return -ENOMEM;
	}
	for (pos = req->off; pos < end; n++) {
		struct sc_sub *s = &req->subs[n];
		uint64_t chunk_end = (pos / step + 1) * step;
		if (chunk_end > end) {
			chunk_end = end;
		}
		uint64_t in_obj = pos % v->object_size;
		uint64_t a0 = in_obj & ~(uint64_t)(SC_BLOCK - 1);
		uint64_t a1 =
			(in_obj + (chunk_end - pos) + SC_BLOCK - 1) & ~(uint64_t)(SC_BLOCK - 1);
		s->req = req;
		s->obj = pos / v->object_size;
		s->obj_off = a0;
		s->len = (uint32_t)(a1 - a0);
		s->skip = (uint32_t)(in_obj - a0);
		s->copy_len = (uint32_t)(chunk_end - pos);
		s->buf_off = pos - req->off;
		if (req->op == SC_CAW) {
			s->bounce = malloc(2 * (size_t)s->len);
			if (s->bounce == NULL) {
				return -ENOMEM;
			}
			memcpy(s->bounce, (const uint8_t *)req->cmp + s->buf_off, s->len);
			memcpy((uint8_t *)s->bounce + s->len,
			       (const uint8_t *)req->wbuf + s->buf_off, s->len);
		}
		pos = chunk_end;
	}
	req->nsubs = n;
	return 0;
}

int sc_submit(struct sc_req *req)
{
	int rc = req_split(req);

	if (rc < 0) {
		for (size_t i = 0; req->subs != NULL && i < req->nsubs; i++) {
			free(req->subs[i].bounce);
		}
		free(req->subs);
		free(req);
		return rc;
	}
	atomic_fetch_add(&req->v->inflight, 1);
	rc = st_reactor_post(req->v->c->r, req_start, req);
	if (rc < 0) {
		atomic_fetch_sub(&req->v->inflight, 1);
		free(req->subs);
		free(req);
	}
	return rc;
}

/* ---- public entry points: validate, then submit ------------------------------------------ */

static bool in_range(strata_volume *v, uint64_t off, size_t len)
{
	uint64_t size = atomic_load(&v->size);
	return off <= size && len <= size - off;
}

static bool aligned(uint64_t off, size_t len)
{
	return (off % SC_BLOCK) == 0 && (len % SC_BLOCK) == 0;
}

static struct sc_req *req_new(strata_volume *v, enum sc_op op, uint64_t off, size_t len,
			      strata_cb cb, void *cb_arg)
{
	struct sc_req *req = calloc(1, sizeof(*req));

	if (req != NULL) {
		req->v = v;
		req->op = op;
		req->off = off;
		req->len = len;
		req->cb = cb;
		req->cb_arg = cb_arg;
	}
	return req;
}

int strata_aio_read(strata_volume *v, uint64_t off, size_t len, void *buf, strata_cb cb,
		    void *cb_arg)
{
	if (v == NULL || cb == NULL || (buf == NULL && len > 0)) {
		return -EINVAL;
	}
	if (!in_range(v, off, len)) {
		return -EINVAL;
	}
	struct sc_req *req = req_new(v, SC_READ, off, len, cb, cb_arg);
	if (req == NULL) {
		return -ENOMEM;
	}
	req->rbuf = buf;
	return sc_submit(req);
}

/* The checks every mutation shares, then a new request: 0 and *out, or -EINVAL/-EROFS/-ENOMEM. */
static int mutation_new(strata_volume *v, enum sc_op op, uint64_t off, size_t len, strata_cb cb,
			void *cb_arg, struct sc_req **out)
{
	if (v == NULL || cb == NULL) {
		return -EINVAL;
	}
	if (v->read_only) {
		return -EROFS;
	}
	if (!in_range(v, off, len) || !aligned(off, len)) {
		return -EINVAL;
	}
	*out = req_new(v, op, off, len, cb, cb_arg);
	return *out != NULL ? 0 : -ENOMEM;
}

static int mutation(strata_volume *v, enum sc_op op, uint64_t off, size_t len, const void *buf,
		    unsigned flags, strata_cb cb, void *cb_arg)
{
	struct sc_req *req;
	int rc = mutation_new(v, op, off, len, cb, cb_arg, &req);
	if (rc < 0) {
		return rc;
	}
	req->wbuf = buf;
	req->flags = flags;
	return sc_submit(req);
}

int strata_aio_write(strata_volume *v, uint64_t off, size_t len, const void *buf, unsigned flags,
		     strata_cb cb, void *cb_arg)
{
	if (buf == NULL && len > 0) {
		return -EINVAL;
	}
	return mutation(v, SC_WRITE, off, len, buf, flags, cb, cb_arg);
}

int strata_aio_write_zeroes(strata_volume *v, uint64_t off, size_t len, unsigned flags,
			    strata_cb cb, void *cb_arg)
{
	return mutation(v, SC_ZERO, off, len, NULL, flags, cb, cb_arg);
}

int strata_aio_trim(strata_volume *v, uint64_t off, size_t len, strata_cb cb, void *cb_arg)
{
	if (v == NULL || !in_range(v, off, len)) {
		return -EINVAL;
	}
	/* Trim is advisory: shrink to whole blocks, which may leave nothing to do. */
	uint64_t a = (off + SC_BLOCK - 1) & ~(uint64_t)(SC_BLOCK - 1);
	uint64_t b = (off + len) & ~(uint64_t)(SC_BLOCK - 1);
	if (b < a) {
		b = a;
	}
	return mutation(v, SC_TRIM, a, (size_t)(b - a), NULL, 0, cb, cb_arg);
}

int strata_aio_flush(strata_volume *v, strata_cb cb, void *cb_arg)
{
	if (v == NULL || cb == NULL) {
		return -EINVAL;
	}
	struct sc_req *req = req_new(v, SC_FLUSH, 0, 0, cb, cb_arg);
	if (req == NULL) {
		return -ENOMEM;
	}
	return sc_submit(req);
}

int strata_aio_block_status(strata_volume *v, uint64_t off, size_t len, struct strata_extent *ext,
			    size_t max, size_t *n, strata_cb cb, void *cb_arg)
{
	if (v == NULL || cb == NULL || ext == NULL || n == NULL || max == 0 ||
	    !in_range(v, off, len)) {
		return -EINVAL;
	}
	struct sc_req *req = req_new(v, SC_STATUS, off, len, cb, cb_arg);
	if (req == NULL) {
		return -ENOMEM;
	}
	req->ext = ext;
	req->ext_max = max;
	req->ext_n = n;
	*n = 0;
	return sc_submit(req);
}

int strata_aio_compare_and_write(strata_volume *v, uint64_t off, size_t len, const void *cmp,
				 const void *data, uint64_t *miscompare_off, strata_cb cb,
				 void *cb_arg)
{
	if (cmp == NULL || data == NULL || len == 0) {
		return -EINVAL;
	}
	if (v != NULL && (off / v->object_size) != ((off + len - 1) / v->object_size)) {
		return -EINVAL; /* atomic only within one object */
	}
	struct sc_req *req;
	int rc = mutation_new(v, SC_CAW, off, len, cb, cb_arg, &req);
	if (rc < 0) {
		return rc;
	}
	if (len > SUB_MAX_LEN) {
		free(req);
		return -EINVAL;
	}
	req->wbuf = data;
	req->cmp = cmp;
	req->miscompare = miscompare_off;
	return sc_submit(req);
}
