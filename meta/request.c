/*
 * The request decoder: frame type + body -> an unpacked, validated protobuf message.
 *
 * Every request meta accepts passes through md_request_decode, and every field check lives in
 * validate() below, so the handlers in server.c can trust names, sizes and ranges. The fuzz
 * target tests/fuzz/fuzz_meta_request.c drives exactly this function.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct req_kind {
	uint16_t type;
	const ProtobufCMessageDescriptor *desc;
};

#define T(name) STRATA__META__META_MSG_TYPE__META_##name
static const struct req_kind kinds[] = {
	{T(NODE_REGISTER), &strata__meta__node_register_req__descriptor},
	{T(NODE_HEARTBEAT), &strata__meta__node_heartbeat_req__descriptor},
	{T(MAP_GET), &strata__meta__map_get_req__descriptor},
	{T(MAP_WATCH), &strata__meta__map_watch_req__descriptor},
	{T(VOLUME_OPEN), &strata__meta__volume_open_req__descriptor},
	{T(LAYER_GET), &strata__meta__layer_get_req__descriptor},
	{T(POOL_CREATE), &strata__meta__pool_create_req__descriptor},
	{T(POOL_LIST), &strata__meta__list_req__descriptor},
	{T(VOLUME_CREATE), &strata__meta__volume_create_req__descriptor},
	{T(VOLUME_LIST), &strata__meta__list_req__descriptor},
	{T(VOLUME_INFO), &strata__meta__volume_ref__descriptor},
	{T(VOLUME_RESIZE), &strata__meta__volume_resize_req__descriptor},
	{T(VOLUME_RENAME), &strata__meta__volume_rename_req__descriptor},
	{T(VOLUME_REMOVE), &strata__meta__volume_ref__descriptor},
	{T(SNAP_CREATE), &strata__meta__volume_ref__descriptor},
	{T(SNAP_LIST), &strata__meta__volume_ref__descriptor},
	{T(SNAP_REMOVE), &strata__meta__volume_ref__descriptor},
	{T(SNAP_ROLLBACK), &strata__meta__volume_ref__descriptor},
	{T(CLONE), &strata__meta__clone_req__descriptor},
	{T(TEMPLATE_SET), &strata__meta__template_set_req__descriptor},
	{T(TEMPLATE_LIST), &strata__meta__list_req__descriptor},
	{T(FLATTEN), &strata__meta__volume_ref__descriptor},
	{T(FLATTEN_PROGRESS), &strata__meta__flatten_progress_req__descriptor},
	{T(TREE), &strata__meta__volume_ref__descriptor},
	{T(STATUS), &strata__meta__list_req__descriptor},
	{T(RECLAIM_LIST), &strata__meta__list_req__descriptor},
	{T(RECLAIM_DONE), &strata__meta__reclaim_done_req__descriptor},
	{T(CONFIG_GET), &strata__meta__empty__descriptor},
	{T(CONFIG_SET), &strata__meta__config_set_req__descriptor},
	{T(PR_GET), &strata__meta__pr_get_req__descriptor},
	{T(PR_UPDATE), &strata__meta__pr_update_req__descriptor},
	{T(PR_WATCH), &strata__meta__pr_watch_req__descriptor},
};

static int bad(char *why, size_t len, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int bad(char *why, size_t len, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return rc;
}

static int name_ok(const char *what, const char *s, bool optional, char *why, size_t len)
{
	if (optional && (s == NULL || s[0] == '\0')) {
		return 0;
	}
	if (!md_name_valid(s)) {
		return bad(
			why, len, -EINVAL,
			"invalid %s name '%.140s' (allowed: [A-Za-z0-9._-], 1 to 128 characters)",
			what, s ? s : "");
	}
	return 0;
}

/* Field checks for every request type. Returns 0 or -EINVAL with why filled in. */
static int validate(uint16_t type, const ProtobufCMessage *m, char *why, size_t len)
{
	int rc = 0;
	switch (type) {
	case T(NODE_REGISTER): {
		const Strata__Meta__NodeRegisterReq *r = (const void *)m;
		if (r->addr[0] == '\0' || strlen(r->addr) >= 64) {
			return bad(why, len, -EINVAL, "node address must be HOST:PORT");
		}
		if (strlen(r->uuid) >= 64) {
			return bad(why, len, -EINVAL, "node uuid longer than 63 characters");
		}
		return 0;
	}
	case T(NODE_HEARTBEAT):
		if (((const Strata__Meta__NodeHeartbeatReq *)m)->node_id == 0) {
			return bad(why, len, -EINVAL, "node_id 0 is not a node");
		}
		return 0;
	case T(VOLUME_OPEN): {
		const char *s = ((const Strata__Meta__VolumeOpenReq *)m)->spec;
		if (((const Strata__Meta__VolumeOpenReq *)m)->volume_id != 0 && s[0] == '\0') {
			return 0; /* by id */
		}
		if (s[0] == '\0' || strlen(s) > 3 * MD_NAME_MAX + 2 || strchr(s, '/') == NULL) {
			return bad(why, len, -EINVAL,
				   "invalid volume spec '%.140s' (want POOL/VOL[@SNAP])", s);
		}
		return 0;
	}
	case T(POOL_CREATE): {
		const Strata__Meta__PoolCreateReq *r = (const void *)m;
		if ((rc = name_ok("pool", r->name, false, why, len)) < 0) {
			return rc;
		}
		if (r->replicas > 3) {
			return bad(why, len, -EINVAL, "replicas must be 1 to 3, not %u",
				   r->replicas);
		}
		if (r->object_size != 0 &&
		    (r->object_size < MD_MIN_OBJ_SIZE || r->object_size > MD_MAX_OBJ_SIZE ||
		     (r->object_size & (r->object_size - 1)) != 0)) {
			return bad(why, len, -EINVAL,
				   "object size must be a power of two from 64K to 64M, not %llu",
				   (unsigned long long)r->object_size);
		}
		if (r->pg_count > 65536) {
			return bad(why, len, -EINVAL, "pg count must be 1 to 65536, not %u",
				   r->pg_count);
		}
		return 0;
	}
	case T(POOL_LIST):
	case T(VOLUME_LIST):
	case T(TEMPLATE_LIST):
	case T(STATUS):
	case T(RECLAIM_LIST):
		return name_ok("pool", ((const Strata__Meta__ListReq *)m)->pool, true, why, len);
	case T(VOLUME_CREATE): {
		const Strata__Meta__VolumeCreateReq *r = (const void *)m;
		if ((rc = name_ok("pool", r->pool, false, why, len)) < 0 ||
		    (rc = name_ok("volume", r->name, false, why, len)) < 0) {
			return rc;
		}
		if (r->size == 0 || r->size > MD_MAX_VOLUME_SIZE || r->size % 512 != 0) {
			return bad(why, len, -EINVAL,
				   "invalid size %llu: must be a non-zero multiple of 512 bytes, "
				   "at most 1 EiB",
				   (unsigned long long)r->size);
		}
		return 0;
	}
	case T(VOLUME_RESIZE): {
		const Strata__Meta__VolumeResizeReq *r = (const void *)m;
		if ((rc = name_ok("pool", r->pool, false, why, len)) < 0 ||
		    (rc = name_ok("volume", r->name, false, why, len)) < 0) {
			return rc;
		}
		if (r->size == 0 || r->size > MD_MAX_VOLUME_SIZE || r->size % 512 != 0) {
			return bad(why, len, -EINVAL,
				   "invalid size %llu: must be a non-zero multiple of 512 bytes, "
				   "at most 1 EiB",
				   (unsigned long long)r->size);
		}
		return 0;
	}
	case T(VOLUME_RENAME): {
		const Strata__Meta__VolumeRenameReq *r = (const void *)m;
		if ((rc = name_ok("pool", r->pool, false, why, len)) < 0 ||
		    (rc = name_ok("volume", r->name, false, why, len)) < 0) {
			return rc;
		}
		return name_ok("volume", r->new_name, false, why, len);
	}
	case T(VOLUME_INFO):
	case T(VOLUME_REMOVE):
	case T(SNAP_LIST):
	case T(FLATTEN):
	case T(TREE):
	case T(SNAP_CREATE):
	case T(SNAP_REMOVE):
	case T(SNAP_ROLLBACK): {
		const Strata__Meta__VolumeRef *r = (const void *)m;
		bool need_snap = type == T(SNAP_CREATE) || type == T(SNAP_REMOVE) ||
				 type == T(SNAP_ROLLBACK);
		if ((rc = name_ok("pool", r->pool, false, why, len)) < 0 ||
		    (rc = name_ok("volume", r->name, false, why, len)) < 0) {
			return rc;
		}
		if (need_snap) {
			return name_ok("snapshot", r->snap, false, why, len);
		}
		if (r->snap[0] != '\0') {
			return bad(why, len, -EINVAL,
				   "this request takes POOL/VOL, not a snapshot");
		}
		return 0;
	}
	case T(CLONE): {
		const Strata__Meta__CloneReq *r = (const void *)m;
		if ((rc = name_ok("pool", r->pool, false, why, len)) < 0 ||
		    (rc = name_ok("volume", r->name, false, why, len)) < 0 ||
		    (rc = name_ok("snapshot", r->snap, true, why, len)) < 0 ||
		    (rc = name_ok("pool", r->dst_pool, false, why, len)) < 0) {
			return rc;
		}
		return name_ok("volume", r->dst_name, false, why, len);
	}
	case T(TEMPLATE_SET): {
		const Strata__Meta__TemplateSetReq *r = (const void *)m;
		if ((rc = name_ok("pool", r->pool, false, why, len)) < 0) {
			return rc;
		}
		return name_ok("volume", r->name, false, why, len);
	}
	case T(FLATTEN_PROGRESS): {
		const Strata__Meta__FlattenProgressReq *r = (const void *)m;
		if (r->total != 0 && r->done > r->total) {
			return bad(why, len, -EINVAL, "flatten progress %llu beyond total %llu",
				   (unsigned long long)r->done, (unsigned long long)r->total);
		}
		return 0;
	}
	case T(PR_GET):
	case T(PR_UPDATE): {
		const char *s = type == T(PR_GET) ? ((const Strata__Meta__PrGetReq *)m)->spec
						  : ((const Strata__Meta__PrUpdateReq *)m)->spec;
		if (s[0] == '\0' || strlen(s) > 3 * MD_NAME_MAX + 2 || strchr(s, '/') == NULL) {
			return bad(why, len, -EINVAL,
				   "invalid volume spec '%.140s' (want POOL/VOL[@SNAP])", s);
		}
		if (type == T(PR_UPDATE) &&
		    ((const Strata__Meta__PrUpdateReq *)m)->record == NULL) {
			return bad(why, len, -EINVAL, "PR_UPDATE without a record");
		}
		return 0;
	}
	case T(PR_WATCH): {
		const Strata__Meta__PrWatchReq *r = (const void *)m;
		if (r->instance == 0 && r->known_seq != 0) {
			return bad(why, len, -EINVAL,
				   "PR_WATCH with known_seq %llu but no instance",
				   (unsigned long long)r->known_seq);
		}
		return 0;
	}
	case T(CONFIG_SET): {
		const Strata__Meta__ConfigSetReq *r = (const void *)m;
		if (strcmp(r->key, "full-ratio") != 0) {
			return bad(why, len, -EINVAL, "unknown setting '%.64s' (known: full-ratio)",
				   r->key);
		}
		char *end = NULL;
		errno = 0;
		unsigned long v = strtoul(r->value, &end, 10);
		if (r->value[0] < '0' || r->value[0] > '9' || errno || *end != '\0' || v < 1 ||
		    v > 100) { /* strtoul alone takes a sign and leading blanks */
			return bad(why, len, -EINVAL,
				   "full-ratio '%.32s': want a whole percentage, 1 to 100",
				   r->value);
		}
		return 0;
	}
	case T(RECLAIM_DONE):
		if (((const Strata__Meta__ReclaimDoneReq *)m)->n_layer_ids > 65536) {
			return bad(why, len, -EINVAL, "too many layer ids in one request");
		}
		return 0;
	default:
		return 0;
	}
}

/*
 * Field number 0 is not a valid protobuf field, but protobuf-c keeps it as an unknown field
 * (behind a padded varint key) and then packs it into bytes it will not parse back. Refuse such
 * a message anywhere in the tree, so a decoded request always re-encodes to one that decodes.
 */
static bool has_field_zero(const ProtobufCMessage *m, int depth)
{
	if (depth > 32) {
		return true; /* deeper than any meta message: refuse */
	}
	for (unsigned i = 0; i < m->n_unknown_fields; i++) {
		if (m->unknown_fields[i].tag == 0) {
			return true;
		}
	}
	const ProtobufCMessageDescriptor *d = m->descriptor;
	for (unsigned f = 0; f < d->n_fields; f++) {
		const ProtobufCFieldDescriptor *fd = &d->fields[f];
		if (fd->type != PROTOBUF_C_TYPE_MESSAGE) {
			continue;
		}
		const char *member = (const char *)m + fd->offset;
		if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)((const char *)m + fd->quantifier_offset);
			ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)member;
			for (size_t i = 0; i < n; i++) {
				if (v[i] != NULL && has_field_zero(v[i], depth + 1)) {
					return true;
				}
			}
		} else {
			const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)member;
			if (sub != NULL && has_field_zero(sub, depth + 1)) {
				return true;
			}
		}
	}
	return false;
}

int md_request_decode(uint16_t type, const uint8_t *body, size_t len, struct md_request *req,
		      char *why, size_t whylen)
{
	req->type = type;
	req->msg = NULL;
	const struct req_kind *k = NULL;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (kinds[i].type == type) {
			k = &kinds[i];
		}
	}
	if (k == NULL) {
		return bad(why, whylen, -ENOTSUP, "unknown meta request type 0x%04x", type);
	}
	if (len > MD_MAX_REQUEST) {
		return bad(why, whylen, -EMSGSIZE, "request of %zu bytes exceeds the %u byte limit",
			   len, MD_MAX_REQUEST);
	}
	if (len > 0 && body == NULL) {
		return bad(why, whylen, -EBADMSG, "missing request body");
	}
	static const uint8_t empty[1];
	req->msg = protobuf_c_message_unpack(k->desc, NULL, len, len ? body : empty);
	if (req->msg == NULL) {
		return bad(why, whylen, -EBADMSG, "malformed %s message", k->desc->short_name);
	}
	if (has_field_zero(req->msg, 0)) {
		md_request_free(req);
		return bad(why, whylen, -EBADMSG, "malformed %s message (field number 0)",
			   k->desc->short_name);
	}
	int rc = validate(type, req->msg, why, whylen);
	if (rc < 0) {
		md_request_free(req);
	}
	return rc;
}

void md_request_free(struct md_request *req)
{
	if (req->msg != NULL) {
		protobuf_c_message_free_unpacked(req->msg, NULL);
		req->msg = NULL;
	}
}
