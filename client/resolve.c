/*
 * Re-resolving an open volume after the map epoch moves.
 *
 * strata-meta moves the epoch for every change that alters what a writer must target: a
 * snapshot (the head freezes and a new head takes over), a rollback, a template mark (the
 * volume turns read-only), a resize, a delete. blockd refuses requests stamped with an older
 * epoch (-ESTALE), so a client can never write into a layer that was frozen under it. Here the
 * client does its part: a sub-request is not sent at a newer epoch until its volume has been
 * looked up again at that epoch; until then it waits on the volume.
 *
 *   sub_send --epoch moved--> park on v->waiting --> VOLUME_OPEN (async, meta client)
 *        ^                                               |
 *        +---------- resend every parked sub <-----------+ layer, ancestry, size, ro updated
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"
#include "meta.pb-c.h"

#define RESOLVE_RETRY_MS 200

static void resolve_start(strata_volume *v);

static void resolve_retry_fired(void *arg, int res)
{
	strata_volume *v = arg;

	v->resolving_epoch = 0;
	resolve_start(v);
}

/* Hand every parked sub back to the send path (or fail them all). */
static void release_waiting(strata_volume *v, int err)
{
	TAILQ_HEAD(, sc_sub) batch = TAILQ_HEAD_INITIALIZER(batch);
	struct sc_sub *s;

	/* Move them out first: a resent sub may park again if the epoch moved meanwhile. */
	while ((s = TAILQ_FIRST(&v->waiting)) != NULL) {
		TAILQ_REMOVE(&v->waiting, s, wait_link);
		TAILQ_INSERT_TAIL(&batch, s, wait_link);
	}
	while ((s = TAILQ_FIRST(&batch)) != NULL) {
		TAILQ_REMOVE(&batch, s, wait_link);
		if (err < 0) {
			sc_sub_fail(s, err);
		} else {
			sc_sub_resend(s);
		}
	}
}

static void resolve_failed(strata_volume *v, int err)
{
	strata_cluster *c = v->c;

	if (c->stopping) {
		v->resolving_epoch = 0;
		release_waiting(v, -ESHUTDOWN);
		return;
	}
	if (err == -ENOENT) {
		st_warn("volume %s no longer exists", v->spec);
		v->gone = true;
		v->resolving_epoch = 0;
		release_waiting(v, -ENOENT);
		return;
	}
	/* meta unreachable or busy: fail the subs that have waited longer than any request may
	 * retry, keep the others parked and try again shortly. */
	uint64_t now = st_now_ms();
	struct sc_sub *s, *next;
	for (s = TAILQ_FIRST(&v->waiting); s != NULL; s = next) {
		next = TAILQ_NEXT(s, wait_link);
		if (now - s->started_ms > SC_RETRY_LIMIT_MS) {
			TAILQ_REMOVE(&v->waiting, s, wait_link);
			sc_sub_fail(s, err);
		}
	}
	if (TAILQ_EMPTY(&v->waiting)) {
		v->resolving_epoch = 0;
		return;
	}
	st_reactor_timer(c->r, &v->resolve_timer, RESOLVE_RETRY_MS, resolve_retry_fired, v);
}

static void resolve_done(void *arg, int err, struct st_frame *reply)
{
	strata_volume *v = arg;
	uint64_t epoch = v->resolving_epoch;

	if (err < 0 || reply == NULL) {
		resolve_failed(v, err < 0 ? err : -EIO);
		return;
	}
	Strata__Meta__VolumeOpenReply *r =
		strata__meta__volume_open_reply__unpack(NULL, reply->hdr.hdr_len, reply->msg);
	if (r == NULL || r->n_ancestry > SC_MAX_ANCESTRY) {
		if (r != NULL) {
			strata__meta__volume_open_reply__free_unpacked(r, NULL);
		}
		resolve_failed(v, -EBADMSG);
		return;
	}
	if (r->volume_id != v->volume_id || r->family != v->family) {
		/* renamed and replaced by another volume of the same name */
		strata__meta__volume_open_reply__free_unpacked(r, NULL);
		resolve_failed(v, -ENOENT);
		return;
	}
	uint64_t *anc = calloc(r->n_ancestry ? r->n_ancestry : 1, sizeof(uint64_t));
	if (anc == NULL) {
		strata__meta__volume_open_reply__free_unpacked(r, NULL);
		resolve_failed(v, -ENOMEM);
		return;
	}
	if (r->n_ancestry > 0) {
		memcpy(anc, r->ancestry, r->n_ancestry * sizeof(uint64_t));
	}
	if (r->layer_id != v->layer) {
		st_debug("volume %s: layer %llu -> %llu at epoch %llu", v->spec,
			 (unsigned long long)v->layer, (unsigned long long)r->layer_id,
			 (unsigned long long)epoch);
	}
	free(v->ancestry);
	v->ancestry = anc;
	v->n_ancestry = r->n_ancestry;
	v->layer = r->layer_id;
	v->read_only = r->read_only || v->open_rdonly;
	uint64_t old_size = atomic_exchange(&v->size, r->size);
	strata__meta__volume_open_reply__free_unpacked(r, NULL);
	v->resolved_epoch = epoch;
	v->resolving_epoch = 0;
	if (old_size != atomic_load(&v->size) && v->resize_fn != NULL) {
		v->resize_fn(v->resize_arg, atomic_load(&v->size));
	}
	release_waiting(v, 0);
}

static void resolve_start(strata_volume *v)
{
	strata_cluster *c = v->c;

	if (v->resolving_epoch != 0) {
		return;
	}
	v->resolving_epoch = c->map->epoch;
	struct st_client *meta = sc_meta_client(c);
	Strata__Meta__VolumeOpenReq req = STRATA__META__VOLUME_OPEN_REQ__INIT;
	req.spec = (char *)""; /* by id: a rename must not lose the volume */
	req.volume_id = v->volume_id;
	if (meta == NULL || st_client_call(meta, STRATA__META__META_MSG_TYPE__META_VOLUME_OPEN, 0,
					   &req.base, NULL, 0, resolve_done, v) < 0) {
		resolve_failed(v, -ENOTCONN);
	}
}

bool sc_volume_ready(strata_volume *v, struct sc_sub *s)
{
	if (v->is_snapshot) {
		return true; /* a snapshot's layer never changes; a deleted one stays readable */
	}
	if (v->resolved_epoch >= v->c->map->epoch && v->resolving_epoch == 0) {
		return true;
	}
	TAILQ_INSERT_TAIL(&v->waiting, s, wait_link);
	resolve_start(v);
	return false;
}
