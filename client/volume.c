/* Volume handles: open resolves "pool/vol[@snap]" at meta once; the data path never asks
 * meta again (layer parent links are immutable, placement comes from the map). */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "internal.h"
#include "meta.pb-c.h"

int strata_open(strata_cluster *c, const char *spec, int flags, strata_volume **out)
{
	struct st_frame reply;
	char err[256] = "";
	strata_volume *v;
	int rc;

	if (c == NULL || spec == NULL || out == NULL || strchr(spec, '/') == NULL ||
	    strlen(spec) >= sizeof(v->spec)) {
		return -EINVAL;
	}
	Strata__Meta__VolumeOpenReq req = STRATA__META__VOLUME_OPEN_REQ__INIT;
	req.spec = (char *)spec;
	rc = sc_meta_call(c, STRATA__META__META_MSG_TYPE__META_VOLUME_OPEN, &req.base, &reply, err,
			  sizeof(err));
	if (rc < 0) {
		st_debug("strata_open %s: %s", spec, err);
		st_frame_release(&reply);
		return rc;
	}
	Strata__Meta__VolumeOpenReply *vr =
		strata__meta__volume_open_reply__unpack(NULL, reply.hdr.hdr_len, reply.msg);
	st_frame_release(&reply);
	if (vr == NULL) {
		return -EBADMSG;
	}
	if (vr->n_ancestry > SC_MAX_ANCESTRY || vr->object_size < SC_BLOCK ||
	    (vr->object_size & (vr->object_size - 1)) != 0) {
		strata__meta__volume_open_reply__free_unpacked(vr, NULL);
		return -EBADMSG;
	}
	v = calloc(1, sizeof(*v));
	if (v == NULL) {
		strata__meta__volume_open_reply__free_unpacked(vr, NULL);
		return -ENOMEM;
	}
	v->c = c;
	snprintf(v->spec, sizeof(v->spec), "%s", spec);
	v->pool_id = vr->pool_id;
	v->volume_id = vr->volume_id;
	v->family = vr->family;
	v->layer = vr->layer_id;
	v->object_size = vr->object_size;
	atomic_store(&v->size, vr->size);
	v->open_rdonly = (flags & STRATA_OPEN_RDONLY) != 0;
	v->is_snapshot = strchr(spec, '@') != NULL;
	v->read_only = vr->read_only || v->open_rdonly;
	TAILQ_INIT(&v->waiting);
	/* The reply reflects the catalog at (at least) its epoch; a map older than that is
	 * refreshed before use, and a newer one triggers a re-resolve. */
	v->resolved_epoch = vr->epoch ? vr->epoch : strata_map_epoch(c);
	v->n_ancestry = vr->n_ancestry;
	v->ancestry = calloc(vr->n_ancestry ? vr->n_ancestry : 1, sizeof(uint64_t));
	if (v->ancestry == NULL) {
		free(v);
		strata__meta__volume_open_reply__free_unpacked(vr, NULL);
		return -ENOMEM;
	}
	if (vr->n_ancestry > 0) { /* a root layer has none, and then vr->ancestry is NULL */
		memcpy(v->ancestry, vr->ancestry, vr->n_ancestry * sizeof(uint64_t));
	}
	strata__meta__volume_open_reply__free_unpacked(vr, NULL);
	*out = v;
	return 0;
}

int strata_close(strata_volume *v)
{
	if (v == NULL) {
		return -EINVAL;
	}
	/* Requests hold no reference the caller could drop; wait for them to finish. Without an
	 * I/O thread nobody else completes them: turn the reactor here, unless this is a
	 * callback inside it (then the requests still in flight cannot finish: -EBUSY). */
	while (atomic_load(&v->inflight) > 0) {
		if (v->c->mode == SC_MODE_THREAD) {
			sched_yield();
		} else if (st_reactor_on_thread(v->c->r)) {
			return -EBUSY;
		} else if (st_reactor_run_once(v->c->r, 10) < 0) {
			return -EIO;
		}
	}
	free(v->ancestry);
	free(v);
	return 0;
}

uint64_t strata_size(strata_volume *v)
{
	return atomic_load(&v->size);
}

uint32_t strata_object_size(strata_volume *v)
{
	return (uint32_t)v->object_size;
}

bool strata_read_only(strata_volume *v)
{
	return v->read_only;
}

uint64_t strata_volume_id(strata_volume *v)
{
	return v->volume_id;
}

void strata_on_resize(strata_volume *v, void (*fn)(void *arg, uint64_t new_size), void *arg)
{
	v->resize_fn = fn;
	v->resize_arg = arg;
}

int strata_list_volumes(strata_cluster *c, char ***out, size_t *n)
{
	struct st_frame reply;
	char err[256];
	int rc;

	Strata__Meta__ListReq req = STRATA__META__LIST_REQ__INIT;
	rc = sc_meta_call(c, STRATA__META__META_MSG_TYPE__META_VOLUME_LIST, &req.base, &reply, err,
			  sizeof(err));
	if (rc < 0) {
		st_frame_release(&reply);
		return rc;
	}
	Strata__Meta__VolumeList *vl =
		strata__meta__volume_list__unpack(NULL, reply.hdr.hdr_len, reply.msg);
	st_frame_release(&reply);
	if (vl == NULL) {
		return -EBADMSG;
	}
	char **list = calloc(vl->n_volumes ? vl->n_volumes : 1, sizeof(char *));
	if (list == NULL) {
		strata__meta__volume_list__free_unpacked(vl, NULL);
		return -ENOMEM;
	}
	for (size_t i = 0; i < vl->n_volumes; i++) {
		if (asprintf(&list[i], "%s/%s", vl->volumes[i]->pool, vl->volumes[i]->name) < 0) {
			strata_free_list(list, i);
			strata__meta__volume_list__free_unpacked(vl, NULL);
			return -ENOMEM;
		}
	}
	*n = vl->n_volumes;
	*out = list;
	strata__meta__volume_list__free_unpacked(vl, NULL);
	return 0;
}

void strata_free_list(char **list, size_t n)
{
	for (size_t i = 0; list != NULL && i < n; i++) {
		free(list[i]);
	}
	free(list);
}
