/*
 * The RPC service: frames in, engine ops, replies out.
 *
 *   st_server --> svc_conn (refcounted: ops in flight outlive a closed connection)
 *      on_frame --> svc_req { frame (owns the write payload), read buffer } --> bd_* op
 *      op done  --> st_conn_send(reply, payload = read buffer) --> svc_req freed
 *
 * One function validates a request's shape (validate_io); errors go back as the frame status
 * (a negative errno) with an ErrorReply text.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd.pb-c.h"
#include "common/log.h"
#include "common/rpc.h"
#include "dist_int.h"
#include "internal.h"
#include "iobuf.h"
#include "strata.pb-c.h"

#define MAX_STATUS_EXTENTS 4096

/* The server hands every accepted conn the service as its arg; the first frame swaps in the
 * conn's own context. Both start with a kind so the callbacks can tell them apart. */
enum { KIND_SERVICE = 0x5e7, KIND_CONN = 0xc0 };

struct bd_service {
	int kind;
	struct st_reactor *r;
	struct bd_engine *e;
	struct st_server *srv;
	struct bd_meta *meta;
	struct bd_dist *dist; /* with meta: placement, fencing, replication */
	struct st_io tick;    /* without meta: the engine's background sync (dist ticks it) */
	bool ticking;
};

#define SYNC_TICK_MS 500

/* A node without meta has no dist tick; the engine still needs its background sync (freed
 * blocks, and RocksDB's WAL buffer, engine.c). */
static void sync_tick(void *arg, int res)
{
	struct bd_service *s = arg;
	if (res == -ECANCELED || !s->ticking) {
		return;
	}
	bd_engine_sync_tick(s->e);
	st_reactor_timer(s->r, &s->tick, SYNC_TICK_MS, sync_tick, s);
}

struct svc_conn {
	int kind;
	struct bd_service *s;
	struct st_conn *c; /* NULL once closed */
	int refs;
};

struct svc_req {
	struct bd_dreq d; /* first: the distribution layer's view */
	struct svc_conn *sc;
	uint16_t type;
	uint64_t req_id;
	struct st_frame f;
	Strata__Blockd__IoRequest *io;
	uint8_t *rbuf;
	uint32_t length;
	uint64_t miscompare;
};

static void sc_put(struct svc_conn *sc)
{
	if (--sc->refs == 0) {
		free(sc);
	}
}

static void req_free(struct svc_req *rq)
{
	if (rq->io) {
		strata__blockd__io_request__free_unpacked(rq->io, NULL);
	}
	st_frame_release(&rq->f);
	bd_iobuf_free(rq->rbuf);
	sc_put(rq->sc);
	free(rq);
}

static const char *errtext(int err)
{
	switch (err) {
	case -EILSEQ:
		return "checksum mismatch";
	case -ENOSPC:
		return "out of space";
	case BD_ERR_MISCOMPARE:
		return "compare-and-write miscompare";
	case -EINPROGRESS:
		return "a request with this id is still in flight";
	case -EINVAL:
		return "invalid request";
	default:
		return strerror(-err);
	}
}

static void reply_error(struct svc_conn *sc, uint16_t type, uint64_t req_id, int err)
{
	if (sc->c) {
		st_conn_send_error(sc->c, type, req_id, err, "%s", errtext(err));
	}
}

static void reply_msg(struct svc_conn *sc, uint16_t type, uint64_t req_id,
		      const ProtobufCMessage *msg)
{
	if (sc->c) {
		st_conn_send(sc->c, (uint16_t)(type | ST_FRAME_REPLY), req_id, 0, 0, msg, NULL, 0,
			     NULL, NULL);
	}
}

/* ------------------------------------------------------------------------------------------ */

static void free_buf(void *p)
{
	free(p);
}

static void io_done(void *arg, int err)
{
	struct svc_req *rq = arg;
	struct svc_conn *sc = rq->sc;
	Strata__Blockd__IoReply rep = STRATA__BLOCKD__IO_REPLY__INIT;
	if (!sc->c) {
		req_free(rq);
		return;
	}
	if (err == BD_ERR_MISCOMPARE) {
		/* The offset goes back in the body as well as the text. */
		rep.miscompare_offset = rq->miscompare;
		st_conn_send(sc->c, (uint16_t)(rq->type | ST_FRAME_REPLY), rq->req_id, err, 0,
			     &rep.base, NULL, 0, NULL, NULL);
	} else if (err) {
		reply_error(sc, rq->type, rq->req_id, err);
	} else if (rq->type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_READ) {
		rep.length = rq->length;
		uint8_t *buf = rq->rbuf;
		rq->rbuf = NULL;
		if (st_conn_send(sc->c, (uint16_t)(rq->type | ST_FRAME_REPLY), rq->req_id, 0, 0,
				 &rep.base, buf, rq->length, bd_iobuf_free, buf) < 0) {
			bd_iobuf_free(buf);
		}
	} else {
		rep.length = rq->length;
		reply_msg(sc, rq->type, rq->req_id, &rep.base);
	}
	req_free(rq);
}

/* Shape checks shared by every object op; the engine checks alignment and ranges again. */
int bd_io_validate(uint16_t type, const Strata__Blockd__IoRequest *io, uint32_t payload_len,
		   struct bd_req *q)
{
	memset(q, 0, sizeof(*q));
	if (io->family == 0 || io->layer == 0 || io->length == 0 || io->length > BD_MAX_IO ||
	    io->offset % BD_BLOCK || io->length % BD_BLOCK || io->n_ancestry > BD_MAX_DEPTH) {
		return -EINVAL;
	}
	uint32_t want = 0;
	if (type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE) {
		want = io->length;
	} else if (type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_COMPARE_AND_WRITE) {
		want = 2 * io->length;
	}
	if (payload_len != want) {
		return -EINVAL;
	}
	q->family = io->family;
	q->object = io->object;
	q->layer = io->layer;
	q->ancestry = io->ancestry;
	q->nancestry = (uint32_t)io->n_ancestry;
	q->offset = io->offset;
	q->length = io->length;
	q->client_id = io->client_id;
	q->seq = io->seq;
	return 0;
}

static void handle_io(struct svc_conn *sc, struct st_frame *f)
{
	struct bd_service *s = sc->s;
	uint16_t type = f->hdr.type;
	Strata__Blockd__IoRequest *io =
		strata__blockd__io_request__unpack(NULL, f->hdr.hdr_len, f->msg);
	struct bd_req q;
	int err = io ? bd_io_validate(type, io, f->hdr.payload_len, &q) : -EINVAL;
	if (err) {
		reply_error(sc, type, f->hdr.req_id, err);
		if (io) {
			strata__blockd__io_request__free_unpacked(io, NULL);
		}
		st_frame_release(f);
		return;
	}
	q.fua = (f->hdr.flags & ST_FRAME_F_FUA) != 0;

	if (s->dist && type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_BLOCK_STATUS) {
		err = bd_dist_fence(s->dist, (uint32_t)io->pool_id, io->family, io->object,
				    io->map_epoch);
		if (err) {
			reply_error(sc, type, f->hdr.req_id, err);
			strata__blockd__io_request__free_unpacked(io, NULL);
			st_frame_release(f);
			return;
		}
	}
	if (type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_BLOCK_STATUS) {
		struct bd_status_ext *ext = malloc(MAX_STATUS_EXTENTS * sizeof(*ext));
		size_t n = 0;
		err = ext ? bd_block_status(s->e, &q, ext, MAX_STATUS_EXTENTS, &n) : -ENOMEM;
		if (err) {
			reply_error(sc, type, f->hdr.req_id, err);
		} else {
			Strata__Blockd__StatusExtent *items = calloc(n ? n : 1, sizeof(*items));
			Strata__Blockd__StatusExtent **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
			Strata__Blockd__BlockStatusReply rep =
				STRATA__BLOCKD__BLOCK_STATUS_REPLY__INIT;
			if (!items || !ptrs) {
				reply_error(sc, type, f->hdr.req_id, -ENOMEM);
			} else {
				for (size_t i = 0; i < n; i++) {
					strata__blockd__status_extent__init(&items[i]);
					items[i].offset = ext[i].offset;
					items[i].length = ext[i].length;
					items[i].state = (Strata__Blockd__BlockState)ext[i].state;
					ptrs[i] = &items[i];
				}
				rep.n_extents = n;
				rep.extents = ptrs;
				reply_msg(sc, type, f->hdr.req_id, &rep.base);
			}
			free(items);
			free(ptrs);
		}
		free(ext);
		strata__blockd__io_request__free_unpacked(io, NULL);
		st_frame_release(f);
		return;
	}

	struct svc_req *rq = calloc(1, sizeof(*rq));
	if (!rq) {
		reply_error(sc, type, f->hdr.req_id, -ENOMEM);
		strata__blockd__io_request__free_unpacked(io, NULL);
		st_frame_release(f);
		return;
	}
	rq->sc = sc;
	sc->refs++;
	rq->type = type;
	rq->req_id = f->hdr.req_id;
	rq->f = *f;
	rq->io = io;
	rq->length = io->length;
	if (s->dist) {
		if (type == STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_READ) {
			rq->rbuf = bd_iobuf_alloc(io->length);
			if (!rq->rbuf) {
				io_done(rq, -ENOMEM);
				return;
			}
		}
		struct bd_dreq *d = &rq->d;
		d->type = type;
		d->pool_id = (uint32_t)io->pool_id;
		d->epoch = io->map_epoch;
		d->q = q;
		d->io = io;
		d->payload = rq->f.payload;
		d->payload_len = f->hdr.payload_len;
		d->rbuf = rq->rbuf;
		d->miscompare = &rq->miscompare;
		d->cb = io_done;
		d->cb_arg = rq;
		bd_dist_io(s->dist, d);
		return;
	}
	switch (type) {
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_READ:
		rq->rbuf = bd_iobuf_alloc(io->length);
		if (!rq->rbuf) {
			io_done(rq, -ENOMEM);
			return;
		}
		bd_read(s->e, &q, rq->rbuf, io_done, rq);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE:
		bd_write(s->e, &q, rq->f.payload, io_done, rq);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE_ZEROES:
		bd_write_zeroes(s->e, &q, io_done, rq);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_TRIM:
		bd_trim(s->e, &q, io_done, rq);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_COMPARE_AND_WRITE:
		bd_compare_and_write(s->e, &q, rq->f.payload, rq->f.payload + io->length,
				     &rq->miscompare, io_done, rq);
		break;
	default:
		io_done(rq, -EINVAL);
	}
}

struct flush_req {
	struct svc_conn *sc;
	uint16_t type;
	uint64_t req_id;
};

static void flush_done(void *arg, int err)
{
	struct flush_req *fr = arg;
	if (err) {
		reply_error(fr->sc, fr->type, fr->req_id, err);
	} else {
		reply_msg(fr->sc, fr->type, fr->req_id, NULL);
	}
	sc_put(fr->sc);
	free(fr);
}

static void handle_flush(struct svc_conn *sc, struct st_frame *f)
{
	struct flush_req *fr = calloc(1, sizeof(*fr));
	if (!fr) {
		reply_error(sc, f->hdr.type, f->hdr.req_id, -ENOMEM);
		return;
	}
	fr->sc = sc;
	sc->refs++;
	fr->type = f->hdr.type;
	fr->req_id = f->hdr.req_id;
	if (sc->s->dist) {
		Strata__Blockd__FlushRequest *m =
			strata__blockd__flush_request__unpack(NULL, f->hdr.hdr_len, f->msg);
		bool all = m && m->all_members;
		if (m) {
			strata__blockd__flush_request__free_unpacked(m, NULL);
		}
		bd_dist_flush(sc->s->dist, all, flush_done, fr);
		return;
	}
	bd_flush(sc->s->e, flush_done, fr);
}

static void handle_layer_delete(struct svc_conn *sc, struct st_frame *f)
{
	Strata__Blockd__LayerDeleteRequest *m =
		strata__blockd__layer_delete_request__unpack(NULL, f->hdr.hdr_len, f->msg);
	if (!m) {
		reply_error(sc, f->hdr.type, f->hdr.req_id, -EINVAL);
		return;
	}
	Strata__Blockd__LayerDeleteReply rep = STRATA__BLOCKD__LAYER_DELETE_REPLY__INIT;
	int err =
		bd_layer_delete(sc->s->e, m->family, m->layer, m->children, (uint32_t)m->n_children,
				&rep.lists_dropped, &rep.lists_moved, &rep.blocks_freed);
	if (err) {
		reply_error(sc, f->hdr.type, f->hdr.req_id, err);
	} else {
		st_info("layer %lu/%lu deleted: %lu lists dropped, %lu handed to children, %lu "
			"blocks freed",
			(unsigned long)m->family, (unsigned long)m->layer,
			(unsigned long)rep.lists_dropped, (unsigned long)rep.lists_moved,
			(unsigned long)rep.blocks_freed);
		reply_msg(sc, f->hdr.type, f->hdr.req_id, &rep.base);
	}
	strata__blockd__layer_delete_request__free_unpacked(m, NULL);
}

static void handle_flatten(struct svc_conn *sc, struct st_frame *f)
{
	Strata__Blockd__FlattenRequest *m =
		strata__blockd__flatten_request__unpack(NULL, f->hdr.hdr_len, f->msg);
	if (!m || m->n_ancestry > BD_MAX_DEPTH) {
		reply_error(sc, f->hdr.type, f->hdr.req_id, -EINVAL);
		if (m) {
			strata__blockd__flatten_request__free_unpacked(m, NULL);
		}
		return;
	}
	Strata__Blockd__FlattenReply rep = STRATA__BLOCKD__FLATTEN_REPLY__INIT;
	int err = bd_flatten(sc->s->e, m->family, m->layer, m->ancestry, (uint32_t)m->n_ancestry,
			     &rep.lists_copied);
	if (err) {
		reply_error(sc, f->hdr.type, f->hdr.req_id, err);
	} else {
		reply_msg(sc, f->hdr.type, f->hdr.req_id, &rep.base);
	}
	strata__blockd__flatten_request__free_unpacked(m, NULL);
}

static void handle_space(struct svc_conn *sc, struct st_frame *f)
{
	struct bd_space sp;
	bd_engine_space(sc->s->e, &sp);
	Strata__Blockd__SpaceReply rep = STRATA__BLOCKD__SPACE_REPLY__INIT;
	rep.total_bytes = sp.total_blocks * BD_BLOCK;
	rep.used_bytes = sp.used_blocks * BD_BLOCK;
	rep.free_bytes = sp.free_blocks * BD_BLOCK;
	rep.block_size = BD_BLOCK;
	rep.checksum_errors = sp.checksum_errors;
	rep.lists = sp.lists;
	reply_msg(sc, f->hdr.type, f->hdr.req_id, &rep.base);
}

/* ------------------------------------------------------------------------------------------ */
/* Replies for the distribution layer's frames. */

struct bd_reply {
	struct svc_conn *sc;
	uint16_t type;
	uint64_t req_id;
};

static struct bd_reply *reply_new(struct svc_conn *sc, const struct st_frame *f)
{
	struct bd_reply *rp = malloc(sizeof(*rp));
	if (rp) {
		rp->sc = sc;
		rp->type = f->hdr.type;
		rp->req_id = f->hdr.req_id;
		sc->refs++;
	}
	return rp;
}

void bd_reply_send(struct bd_reply *rp, int status, const struct ProtobufCMessage *msg,
		   void *payload, size_t len)
{
	struct svc_conn *sc = rp->sc;
	if (status >= 0 && (len > ST_FRAME_MAX_PAYLOAD ||
			    (msg && protobuf_c_message_get_packed_size(msg) > ST_FRAME_MAX_MSG))) {
		/* More than a peer's decoder takes (its default caps): it would drop the connection
		 * as a protocol violation and retry forever. Say so instead (an unpaged OBJ_GET of
		 * an object over 64 MiB, from a puller that predates paging). */
		st_warn("reply to 0x%x: %zu bytes of payload, over the frame limit", rp->type, len);
		status = -EMSGSIZE;
	}
	if (status < 0) {
		reply_error(sc, rp->type, rp->req_id, status);
		free(payload);
	} else if (!sc->c) {
		free(payload);
	} else if (st_conn_send(sc->c, (uint16_t)(rp->type | ST_FRAME_REPLY), rp->req_id, 0, 0, msg,
				payload, len, payload ? free_buf : NULL, payload) < 0) {
		free(payload);
	}
	sc_put(sc);
	free(rp);
}

static void on_frame(struct st_conn *c, struct st_frame *f, void *arg)
{
	struct svc_conn *sc = arg;
	if (sc->kind == KIND_SERVICE) {
		sc = calloc(1, sizeof(*sc));
		if (!sc) {
			st_frame_release(f);
			st_conn_close(c);
			return;
		}
		sc->kind = KIND_CONN;
		sc->s = arg;
		sc->c = c;
		sc->refs = 1;
		st_conn_set_arg(c, sc);
	}
	switch (f->hdr.type) {
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_READ:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_WRITE_ZEROES:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_TRIM:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_BLOCK_STATUS:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_COMPARE_AND_WRITE:
		handle_io(sc, f); /* takes the frame */
		return;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_FLUSH:
		handle_flush(sc, f);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_LAYER_DELETE:
		handle_layer_delete(sc, f);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_FLATTEN:
		handle_flatten(sc, f);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_SPACE:
		handle_space(sc, f);
		break;
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_LAYER_USAGE: {
		struct bd_reply *rp = reply_new(sc, f);
		if (!rp) {
			reply_error(sc, f->hdr.type, f->hdr.req_id, -ENOMEM);
			break;
		}
		bd_usage_handle(sc->s->e, sc->s->dist, f, rp); /* takes the frame (usage.c) */
		return;
	}
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_SCRUB:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_WRITE:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_FLUSH:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_INFO:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_LIST:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_GET:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_PG_RECOVER:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_DIGEST:
	case STRATA__BLOCKD__BLOCKD_MSG_TYPE__REPL_OBJ_REPAIR: {
		struct bd_reply *rp = sc->s->dist ? reply_new(sc, f) : NULL;
		if (!rp) {
			reply_error(sc, f->hdr.type, f->hdr.req_id,
				    sc->s->dist ? -ENOMEM : -EOPNOTSUPP);
			break;
		}
		bd_dist_frame(sc->s->dist, f, rp); /* takes the frame */
		return;
	}
	case 0x0001: /* PING: echo the message back */
		if (sc->c) {
			st_conn_send(c, (uint16_t)(f->hdr.type | ST_FRAME_REPLY), f->hdr.req_id, 0,
				     0, NULL, NULL, 0, NULL, NULL);
		}
		break;
	default:
		reply_error(sc, f->hdr.type, f->hdr.req_id, -EOPNOTSUPP);
	}
	st_frame_release(f);
}

static void on_close(struct st_conn *c, int err, void *arg)
{
	struct svc_conn *sc = arg;
	if (sc->kind != KIND_CONN) {
		return; /* closed before its first frame */
	}
	sc->c = NULL;
	sc_put(sc);
}

static const struct st_conn_ops conn_ops = {
	.on_frame = on_frame,
	.on_close = on_close,
};

int bd_service_start(struct st_reactor *r, struct bd_engine *e, const struct bd_service_opts *o,
		     struct bd_service **out)
{
	struct bd_service *s = calloc(1, sizeof(*s));
	if (!s) {
		return -ENOMEM;
	}
	s->kind = KIND_SERVICE;
	s->r = r;
	s->e = e;
	int rc = st_server_start(r, o->listen, &conn_ops, s, BD_MAX_IO * 2 + 4096, &s->srv);
	if (rc) {
		free(s);
		return rc;
	}
	if (o->meta) {
		/* Register the address we are reached at: --advertise, else the listen address;
		 * a port of 0 in either means the port we got. */
		char self[300];
		const char *at = o->advertise ? o->advertise : o->listen;
		const char *colon = strrchr(at, ':');
		int hl = colon ? (int)(colon - at) : (int)strlen(at);
		int port = colon ? atoi(colon + 1) : 0;
		snprintf(self, sizeof(self), "%.*s:%d", hl, at,
			 port > 0 ? port : st_server_port(s->srv));
		if (o->advertise) {
			/* Same-host clients dial the advertised address: give it a Unix twin. */
			(void)st_server_add_local(s->srv, self);
		}
		st_info("registering as %s", self);
		rc = bd_dist_new(r, e, &s->dist);
		if (rc == 0) {
			rc = bd_meta_start(r, e, s->dist, o->meta, self, &s->meta);
		}
		if (rc) {
			/* Timers may be armed: stop them; the memory is left to process exit,
			 * which follows a failed start. */
			bd_dist_stop(s->dist);
			st_server_stop(s->srv);
			return rc;
		}
	} else {
		s->ticking = true;
		st_reactor_timer(r, &s->tick, SYNC_TICK_MS, sync_tick, s);
	}
	*out = s;
	return 0;
}

int bd_service_port(const struct bd_service *s)
{
	return st_server_port(s->srv);
}

void bd_service_stop(struct bd_service *s)
{
	if (!s) {
		return;
	}
	bd_meta_stop(s->meta);
	bd_dist_stop(s->dist);
	if (s->ticking) {
		s->ticking = false;
		st_reactor_cancel(s->r, &s->tick);
	}
	st_server_stop(s->srv);
}

void bd_service_free(struct bd_service *s)
{
	if (!s) {
		return;
	}
	bd_meta_free(s->meta);
	bd_dist_free(s->dist);
	free(s);
}
