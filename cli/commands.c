/*
 * The strata commands. Each one is a blocking request/reply with strata-meta (st_rpc_call),
 * printed as a human table or, with --json, as JSON. Any failure prints one line on stderr and
 * exits non-zero: 1 for an error from meta or the network, 2 for a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/flags.h"
#include "common/net.h"
#include "common/rpc.h"
#include "common/size.h"
#include "internal.h"
#include "blockd.pb-c.h"
#include "meta.pb-c.h"

struct cli {
	const char *meta;
	bool json;
	uint64_t size;
	uint64_t object_size;
	int64_t replicas;
	int64_t pgs;
	int64_t max_mbps; /* scrub --max-mbps (-1: not given) */
	bool allow_shrink;
	int fd;
	char **args; /* positional arguments after the command words */
	int nargs;
};

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...)
{
	va_list ap;
	fputs("strata: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

#define MT(name) STRATA__META__META_MSG_TYPE__META_##name

/* One request/reply. Returns the unpacked reply (caller frees) or exits with the error. */
static ProtobufCMessage *call(struct cli *c, uint16_t type, const ProtobufCMessage *req,
			      const ProtobufCMessageDescriptor *rdesc)
{
	if (c->fd < 0) {
		c->fd = st_tcp_connect(c->meta, 3000);
		if (c->fd < 0) {
			die(1, "cannot reach strata-meta at %s: %s", c->meta, strerror(-c->fd));
		}
	}
	struct st_frame reply;
	char err[512] = "";
	int rc = st_rpc_call(c->fd, type, 0, req, NULL, 0, &reply, err, sizeof(err));
	if (rc < 0) {
		die(1, "%s", err[0] ? err : strerror(-rc));
	}
	ProtobufCMessage *m = protobuf_c_message_unpack(rdesc, NULL, reply.hdr.hdr_len,
							reply.msg ? reply.msg : (uint8_t *)"");
	st_frame_release(&reply);
	if (m == NULL) {
		die(1, "undecodable reply from strata-meta");
	}
	return m;
}

static const char *hsize(uint64_t v, char *buf, size_t len)
{
	return st_format_size(v, buf, len);
}

static void need_args(struct cli *c, int min, int max, const char *usage)
{
	if (c->nargs < min || c->nargs > max) {
		die(2, "usage: strata %s", usage);
	}
}

static void spec_or_die(const char *s, enum cli_snap_rule rule, struct cli_spec *sp)
{
	char why[300];
	if (cli_parse_spec(s, rule, sp, why, sizeof(why)) < 0) {
		die(2, "%s", why);
	}
}

static void name_or_die(const char *what, const char *s)
{
	if (!cli_name_valid(s)) {
		die(2, "invalid %s name '%s' (allowed: [A-Za-z0-9._-], 1 to 128 characters)", what,
		    s);
	}
}

static const char *fmt_time(uint64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

/* ---- output of shared shapes ---- */

static void json_pool(struct cli_json *j, const Strata__Meta__Pool *p)
{
	cli_json_obj_begin(j, NULL);
	cli_json_u64(j, "id", p->id);
	cli_json_str(j, "name", p->name);
	cli_json_u64(j, "replicas", p->replicas);
	cli_json_u64(j, "object_size", p->object_size);
	cli_json_u64(j, "pg_count", p->pg_count);
	cli_json_obj_end(j);
}

static void json_volume(struct cli_json *j, const Strata__Meta__VolumeInfo *v, bool used_complete)
{
	cli_json_obj_begin(j, NULL);
	cli_json_u64(j, "id", v->id);
	cli_json_str(j, "pool", v->pool);
	cli_json_str(j, "name", v->name);
	cli_json_u64(j, "size", v->size);
	cli_json_u64(j, "used", v->used);
	if (!used_complete) {
		cli_json_bool(j, "used_complete", false);
	}
	cli_json_u64(j, "family", v->family);
	cli_json_u64(j, "head_layer", v->head_layer);
	cli_json_bool(j, "template", v->template_);
	cli_json_str(j, "parent", v->parent);
	cli_json_arr_begin(j, "children");
	for (size_t i = 0; i < v->n_children; i++) {
		cli_json_str(j, NULL, v->children[i]);
	}
	cli_json_arr_end(j);
	cli_json_u64(j, "snapshots", v->snapshots);
	cli_json_u64(j, "object_size", v->object_size);
	cli_json_u64(j, "created", v->created);
	cli_json_str(j, "flatten_state", v->flatten_state);
	cli_json_u64(j, "flatten_done", v->flatten_done);
	cli_json_u64(j, "flatten_total", v->flatten_total);
	cli_json_obj_end(j);
}

static void print_volume_info(struct cli *c, const Strata__Meta__VolumeInfo *v)
{
	if (c->json) {
		struct cli_json j;
		cli_json_init(&j, stdout);
		json_volume(&j, v, true);
		return;
	}
	char b1[32], b2[32], b3[32], t[32];
	printf("volume:      %s/%s\n", v->pool, v->name);
	printf("id:          %" PRIu64 "\n", v->id);
	printf("size:        %s (%" PRIu64 " bytes)\n", hsize(v->size, b1, sizeof(b1)), v->size);
	printf("used:        %s\n", hsize(v->used, b2, sizeof(b2)));
	printf("object size: %s\n", hsize(v->object_size, b3, sizeof(b3)));
	printf("family:      %" PRIu64 "\n", v->family);
	printf("head layer:  %" PRIu64 "\n", v->head_layer);
	printf("parent:      %s\n", v->parent[0] ? v->parent : "-");
	printf("children:    ");
	for (size_t i = 0; i < v->n_children; i++) {
		printf("%s%s", i ? ", " : "", v->children[i]);
	}
	printf("%s\n", v->n_children ? "" : "-");
	printf("snapshots:   %u\n", v->snapshots);
	printf("template:    %s\n", v->template_ ? "yes" : "no");
	printf("created:     %s\n", fmt_time(v->created, t, sizeof(t)));
	if (v->flatten_state[0]) {
		printf("flatten:     %s (%" PRIu64 "/%" PRIu64 " nodes)\n", v->flatten_state,
		       v->flatten_done, v->flatten_total);
	}
}

static void print_volume_list(struct cli *c, const Strata__Meta__VolumeList *l)
{
	if (c->json) {
		struct cli_json j;
		cli_json_init(&j, stdout);
		cli_json_arr_begin(&j, NULL);
		for (size_t i = 0; i < l->n_volumes; i++) {
			json_volume(&j, l->volumes[i], true);
		}
		cli_json_arr_end(&j);
		return;
	}
	printf("%-40s %10s %10s %-8s %s\n", "VOLUME", "SIZE", "USED", "TEMPLATE", "PARENT");
	for (size_t i = 0; i < l->n_volumes; i++) {
		const Strata__Meta__VolumeInfo *v = l->volumes[i];
		char spec[300], b1[32];
		snprintf(spec, sizeof(spec), "%s/%s", v->pool, v->name);
		/* `used` is measured by `volume info` only (it asks every node); a listing
		 * would cost one index scan per volume on every node. */
		printf("%-40s %10s %10s %-8s %s\n", spec, hsize(v->size, b1, sizeof(b1)), "-",
		       v->template_ ? "yes" : "no", v->parent[0] ? v->parent : "-");
	}
}

/* ---- commands ---- */

static int cmd_pool_create(struct cli *c)
{
	need_args(c, 1, 1, "pool create POOL [--replicas N] [--object-size 4M] [--pgs N]");
	name_or_die("pool", c->args[0]);
	if (c->replicas != -1 && (c->replicas < 1 || c->replicas > 3)) {
		die(2, "--replicas must be 1 to 3");
	}
	if (c->pgs != -1 && (c->pgs < 1 || c->pgs > 65536)) {
		die(2, "--pgs must be 1 to 65536");
	}
	Strata__Meta__PoolCreateReq r = STRATA__META__POOL_CREATE_REQ__INIT;
	r.name = c->args[0];
	r.replicas = c->replicas == -1 ? 0 : (uint32_t)c->replicas;
	r.pg_count = c->pgs == -1 ? 0 : (uint32_t)c->pgs;
	r.object_size = c->object_size;
	Strata__Meta__Pool *p =
		(void *)call(c, MT(POOL_CREATE), &r.base, &strata__meta__pool__descriptor);
	if (c->json) {
		struct cli_json j;
		cli_json_init(&j, stdout);
		json_pool(&j, p);
	} else {
		char b[32];
		printf("created pool %s (id %u, replicas %u, object size %s, %u PGs)\n", p->name,
		       p->id, p->replicas, hsize(p->object_size, b, sizeof(b)), p->pg_count);
	}
	protobuf_c_message_free_unpacked(&p->base, NULL);
	return 0;
}

static int cmd_pool_ls(struct cli *c)
{
	need_args(c, 0, 0, "pool ls [--json]");
	Strata__Meta__ListReq r = STRATA__META__LIST_REQ__INIT;
	Strata__Meta__PoolList *l =
		(void *)call(c, MT(POOL_LIST), &r.base, &strata__meta__pool_list__descriptor);
	struct cli_json j;
	cli_json_init(&j, stdout);
	if (c->json) {
		cli_json_arr_begin(&j, NULL);
	} else {
		printf("%-5s %-32s %-8s %-11s %s\n", "ID", "NAME", "REPLICAS", "OBJECT_SIZE",
		       "PGS");
	}
	for (size_t i = 0; i < l->n_pools; i++) {
		const Strata__Meta__Pool *p = l->pools[i];
		char b[32];
		if (c->json) {
			json_pool(&j, p);
		} else {
			printf("%-5u %-32s %-8u %-11s %u\n", p->id, p->name, p->replicas,
			       hsize(p->object_size, b, sizeof(b)), p->pg_count);
		}
	}
	if (c->json) {
		cli_json_arr_end(&j);
	}
	protobuf_c_message_free_unpacked(&l->base, NULL);
	return 0;
}

/* up, joining (up and catching up: not a primary yet), down or out */
static const char *node_state(const Strata__Meta__Node *n)
{
	return n->state == STRATA__META__NODE_STATE__NODE_UP     ? (n->joining ? "joining" : "up")
	       : n->state == STRATA__META__NODE_STATE__NODE_DOWN ? "down"
								 : "out";
}

/* `config get` and `config set KEY VALUE`: the cluster's run-time settings (meta's Config). */
static int cmd_config(struct cli *c, bool set)
{
	Strata__Meta__Config *m;
	if (set) {
		need_args(c, 2, 2, "config set KEY VALUE");
		Strata__Meta__ConfigSetReq r = STRATA__META__CONFIG_SET_REQ__INIT;
		r.key = c->args[0];
		r.value = c->args[1];
		m = (void *)call(c, MT(CONFIG_SET), &r.base, &strata__meta__config__descriptor);
	} else {
		need_args(c, 0, 0, "config get [--json]");
		Strata__Meta__Empty r = STRATA__META__EMPTY__INIT;
		m = (void *)call(c, MT(CONFIG_GET), &r.base, &strata__meta__config__descriptor);
	}
	if (c->json) {
		struct cli_json j;
		cli_json_init(&j, stdout);
		cli_json_obj_begin(&j, NULL);
		cli_json_u64(&j, "full_ratio", m->full_ratio);
		cli_json_obj_end(&j);
	} else {
		printf("full-ratio  %u\n", m->full_ratio);
	}
	protobuf_c_message_free_unpacked(&m->base, NULL);
	return 0;
}

static int cmd_config_get(struct cli *c)
{
	return cmd_config(c, false);
}

static int cmd_config_set(struct cli *c)
{
	return cmd_config(c, true);
}

/* The STATE column: "full" for an up node at meta's full ratio (its PGs refuse writes). */
static const char *node_state_text(const Strata__Meta__Node *n)
{
	return n->full && n->state == STRATA__META__NODE_STATE__NODE_UP ? "full" : node_state(n);
}

static int cmd_node_ls(struct cli *c)
{
	need_args(c, 0, 0, "node ls [--json]");
	Strata__Meta__MapGetReq r = STRATA__META__MAP_GET_REQ__INIT;
	Strata__Meta__ClusterMap *m =
		(void *)call(c, MT(MAP_GET), &r.base, &strata__meta__cluster_map__descriptor);
	/* PG counts per node: what each up node reported in its last heartbeat. */
	Strata__Meta__ListReq sr = STRATA__META__LIST_REQ__INIT;
	Strata__Meta__ClusterStatus *st =
		(void *)call(c, MT(STATUS), &sr.base, &strata__meta__cluster_status__descriptor);
	struct cli_json j;
	cli_json_init(&j, stdout);
	if (c->json) {
		cli_json_arr_begin(&j, NULL);
	} else {
		printf("%-5s %-22s %-7s %10s %10s %6s %7s %5s %5s\n", "ID", "ADDR", "STATE",
		       "CAPACITY", "USED", "WEIGHT", "PRIMARY", "PGS", "STRAY");
	}
	for (size_t i = 0; i < m->n_nodes; i++) {
		const Strata__Meta__Node *n = m->nodes[i];
		const Strata__Meta__NodePgStats *np = NULL;
		for (size_t k = 0; k < st->n_node_pgs; k++) {
			if (st->node_pgs[k]->node_id == n->id) {
				np = st->node_pgs[k];
			}
		}
		char b1[32], b2[32];
		if (c->json) {
			cli_json_obj_begin(&j, NULL);
			cli_json_u64(&j, "id", n->id);
			cli_json_str(&j, "addr", n->addr);
			cli_json_str(&j, "state", node_state(n));
			cli_json_bool(&j, "full", n->full); /* at meta's full ratio */
			cli_json_u64(&j, "capacity", n->capacity);
			cli_json_u64(&j, "used", n->used);
			cli_json_u64(&j, "weight", n->weight);
			cli_json_str(&j, "uuid", n->uuid);
			/* PGs it is the primary of / a member of / still holds as a stray, at the
			 * map epoch pgs_epoch (0: no report from this node) */
			cli_json_u64(&j, "pgs_primary", np ? np->primary : 0);
			cli_json_u64(&j, "pgs_member", np ? np->member : 0);
			cli_json_u64(&j, "pgs_stray", np ? np->stray : 0);
			cli_json_u64(&j, "pgs_epoch", np ? np->epoch : 0);
			cli_json_obj_end(&j);
		} else if (np) {
			printf("%-5u %-22s %-7s %10s %10s %6u %7u %5u %5u\n", n->id, n->addr,
			       node_state_text(n), hsize(n->capacity, b1, sizeof(b1)),
			       hsize(n->used, b2, sizeof(b2)), n->weight, np->primary, np->member,
			       np->stray);
		} else {
			printf("%-5u %-22s %-7s %10s %10s %6u %7s %5s %5s\n", n->id, n->addr,
			       node_state_text(n), hsize(n->capacity, b1, sizeof(b1)),
			       hsize(n->used, b2, sizeof(b2)), n->weight, "-", "-", "-");
		}
	}
	if (c->json) {
		cli_json_arr_end(&j);
	}
	protobuf_c_message_free_unpacked(&st->base, NULL);
	protobuf_c_message_free_unpacked(&m->base, NULL);
	return 0;
}

static int volume_reply(struct cli *c, uint16_t type, const ProtobufCMessage *req,
			const char *human)
{
	Strata__Meta__VolumeInfo *v =
		(void *)call(c, type, req, &strata__meta__volume_info__descriptor);
	if (c->json || human == NULL) {
		print_volume_info(c, v);
	} else {
		char b[32];
		printf("%s %s/%s (size %s)\n", human, v->pool, v->name,
		       hsize(v->size, b, sizeof(b)));
	}
	protobuf_c_message_free_unpacked(&v->base, NULL);
	return 0;
}

static int cmd_volume_create(struct cli *c)
{
	need_args(c, 1, 1, "volume create POOL/VOL --size SIZE");
	struct cli_spec sp;
	spec_or_die(c->args[0], CLI_SNAP_NONE, &sp);
	if (c->size == 0) {
		die(2, "volume create needs --size SIZE (e.g. 10G)");
	}
	Strata__Meta__VolumeCreateReq r = STRATA__META__VOLUME_CREATE_REQ__INIT;
	r.pool = sp.pool;
	r.name = sp.vol;
	r.size = c->size;
	return volume_reply(c, MT(VOLUME_CREATE), &r.base, "created volume");
}

static int cmd_volume_ls(struct cli *c)
{
	need_args(c, 0, 1, "volume ls [POOL] [--json]");
	Strata__Meta__ListReq r = STRATA__META__LIST_REQ__INIT;
	if (c->nargs == 1) {
		name_or_die("pool", c->args[0]);
		r.pool = c->args[0];
	}
	Strata__Meta__VolumeList *l =
		(void *)call(c, MT(VOLUME_LIST), &r.base, &strata__meta__volume_list__descriptor);
	print_volume_list(c, l);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	return 0;
}

static void ref_from(struct cli *c, enum cli_snap_rule rule, struct cli_spec *sp,
		     Strata__Meta__VolumeRef *r)
{
	spec_or_die(c->args[0], rule, sp);
	strata__meta__volume_ref__init(r);
	r->pool = sp->pool;
	r->name = sp->vol;
	r->snap = sp->snap;
}

/* `used`: see cli/usage.c. A node whose map is not the one we read is asked again with a fresh
 * map (the cluster is changing under us); after 30 tries we give up with an error. A node that
 * does not answer is left out: the figure is marked partial (used_complete false in JSON). */
static int cmd_volume_info(struct cli *c)
{
	need_args(c, 1, 1, "volume info POOL/VOL [--json]");
	struct cli_spec sp;
	Strata__Meta__VolumeRef r;
	ref_from(c, CLI_SNAP_NONE, &sp, &r);
	Strata__Meta__VolumeInfo *v =
		(void *)call(c, MT(VOLUME_INFO), &r.base, &strata__meta__volume_info__descriptor);
	uint32_t missing = 0;
	for (int attempt = 0;; attempt++) {
		Strata__Meta__MapGetReq mr = STRATA__META__MAP_GET_REQ__INIT;
		Strata__Meta__ClusterMap *m = (void *)call(c, MT(MAP_GET), &mr.base,
							   &strata__meta__cluster_map__descriptor);
		char why[300];
		int rc = cli_layer_usage(m, v->pool_id, v->family, v->layers, v->n_layers, &v->used,
					 &missing, why, sizeof(why));
		protobuf_c_message_free_unpacked(&m->base, NULL);
		if (rc == 0) {
			if (missing) {
				fprintf(stderr,
					"strata: used is partial: %u node(s) did not answer (%s)\n",
					missing, why);
			}
			break;
		}
		if (rc != -EAGAIN || attempt >= 30) {
			die(1, "used of %s/%s: %s", sp.pool, sp.vol, why);
		}
		usleep(500 * 1000);
	}
	if (c->json) {
		struct cli_json j;
		cli_json_init(&j, stdout);
		json_volume(&j, v, missing == 0);
	} else {
		print_volume_info(c, v);
		if (missing) {
			printf("used is partial: %u node(s) did not answer\n", missing);
		}
	}
	protobuf_c_message_free_unpacked(&v->base, NULL);
	return 0;
}

static int cmd_volume_resize(struct cli *c)
{
	need_args(c, 1, 1, "volume resize POOL/VOL --size SIZE [--allow-shrink]");
	struct cli_spec sp;
	spec_or_die(c->args[0], CLI_SNAP_NONE, &sp);
	if (c->size == 0) {
		die(2, "volume resize needs --size SIZE (e.g. 20G)");
	}
	Strata__Meta__VolumeResizeReq r = STRATA__META__VOLUME_RESIZE_REQ__INIT;
	r.pool = sp.pool;
	r.name = sp.vol;
	r.size = c->size;
	r.allow_shrink = c->allow_shrink;
	return volume_reply(c, MT(VOLUME_RESIZE), &r.base, "resized volume");
}

static int cmd_volume_rename(struct cli *c)
{
	need_args(c, 2, 2, "volume rename POOL/VOL NEWNAME");
	struct cli_spec sp;
	spec_or_die(c->args[0], CLI_SNAP_NONE, &sp);
	const char *nn = c->args[1];
	/* Accept "POOL/NEWNAME" too, as long as the pool does not change. */
	const char *slash = strchr(nn, '/');
	if (slash != NULL) {
		if ((size_t)(slash - nn) != strlen(sp.pool) ||
		    strncmp(nn, sp.pool, strlen(sp.pool))) {
			die(2, "rename cannot move a volume to another pool");
		}
		nn = slash + 1;
	}
	name_or_die("volume", nn);
	Strata__Meta__VolumeRenameReq r = STRATA__META__VOLUME_RENAME_REQ__INIT;
	r.pool = sp.pool;
	r.name = sp.vol;
	r.new_name = (char *)nn;
	return volume_reply(c, MT(VOLUME_RENAME), &r.base, "renamed to");
}

static int empty_reply(struct cli *c, uint16_t type, const ProtobufCMessage *req)
{
	ProtobufCMessage *m = call(c, type, req, &strata__meta__empty__descriptor);
	protobuf_c_message_free_unpacked(m, NULL);
	return 0;
}

static int cmd_volume_rm(struct cli *c)
{
	need_args(c, 1, 1, "volume rm POOL/VOL");
	struct cli_spec sp;
	Strata__Meta__VolumeRef r;
	ref_from(c, CLI_SNAP_NONE, &sp, &r);
	empty_reply(c, MT(VOLUME_REMOVE), &r.base);
	if (!c->json) {
		printf("removed volume %s/%s\n", sp.pool, sp.vol);
	}
	return 0;
}

static void json_snap(struct cli_json *j, const Strata__Meta__SnapInfo *s)
{
	cli_json_obj_begin(j, NULL);
	cli_json_str(j, "pool", s->pool);
	cli_json_str(j, "volume", s->volume);
	cli_json_str(j, "name", s->name);
	cli_json_u64(j, "layer_id", s->layer_id);
	cli_json_u64(j, "size", s->size);
	cli_json_u64(j, "created", s->created);
	cli_json_arr_begin(j, "clones");
	for (size_t i = 0; i < s->n_clones; i++) {
		cli_json_str(j, NULL, s->clones[i]);
	}
	cli_json_arr_end(j);
	cli_json_obj_end(j);
}

static int cmd_snap_create(struct cli *c)
{
	need_args(c, 1, 1, "snap create POOL/VOL@SNAP");
	struct cli_spec sp;
	Strata__Meta__VolumeRef r;
	ref_from(c, CLI_SNAP_REQUIRED, &sp, &r);
	Strata__Meta__SnapInfo *s =
		(void *)call(c, MT(SNAP_CREATE), &r.base, &strata__meta__snap_info__descriptor);
	if (c->json) {
		struct cli_json j;
		cli_json_init(&j, stdout);
		json_snap(&j, s);
	} else {
		printf("created snapshot %s/%s@%s (layer %" PRIu64 ")\n", s->pool, s->volume,
		       s->name, s->layer_id);
	}
	protobuf_c_message_free_unpacked(&s->base, NULL);
	return 0;
}

static int cmd_snap_ls(struct cli *c)
{
	need_args(c, 1, 1, "snap ls POOL/VOL [--json]");
	struct cli_spec sp;
	Strata__Meta__VolumeRef r;
	ref_from(c, CLI_SNAP_NONE, &sp, &r);
	Strata__Meta__SnapList *l =
		(void *)call(c, MT(SNAP_LIST), &r.base, &strata__meta__snap_list__descriptor);
	struct cli_json j;
	cli_json_init(&j, stdout);
	if (c->json) {
		cli_json_arr_begin(&j, NULL);
	} else {
		printf("%-32s %8s %10s %-20s %s\n", "SNAPSHOT", "LAYER", "SIZE", "CREATED",
		       "CLONES");
	}
	for (size_t i = 0; i < l->n_snaps; i++) {
		const Strata__Meta__SnapInfo *s = l->snaps[i];
		if (c->json) {
			json_snap(&j, s);
			continue;
		}
		char b[32], t[32];
		printf("%-32s %8" PRIu64 " %10s %-20s ", s->name, s->layer_id,
		       hsize(s->size, b, sizeof(b)), fmt_time(s->created, t, sizeof(t)));
		for (size_t k = 0; k < s->n_clones; k++) {
			printf("%s%s", k ? "," : "", s->clones[k]);
		}
		printf("%s\n", s->n_clones ? "" : "-");
	}
	if (c->json) {
		cli_json_arr_end(&j);
	}
	protobuf_c_message_free_unpacked(&l->base, NULL);
	return 0;
}

static int cmd_snap_rm(struct cli *c)
{
	need_args(c, 1, 1, "snap rm POOL/VOL@SNAP");
	struct cli_spec sp;
	Strata__Meta__VolumeRef r;
	ref_from(c, CLI_SNAP_REQUIRED, &sp, &r);
	empty_reply(c, MT(SNAP_REMOVE), &r.base);
	if (!c->json) {
		printf("removed snapshot %s/%s@%s\n", sp.pool, sp.vol, sp.snap);
	}
	return 0;
}

static int cmd_snap_rollback(struct cli *c)
{
	need_args(c, 1, 1, "snap rollback POOL/VOL@SNAP");
	struct cli_spec sp;
	Strata__Meta__VolumeRef r;
	ref_from(c, CLI_SNAP_REQUIRED, &sp, &r);
	return volume_reply(c, MT(SNAP_ROLLBACK), &r.base, "rolled back");
}

static int cmd_clone(struct cli *c)
{
	need_args(c, 2, 2, "clone POOL/VOL@SNAP POOL/NEWVOL");
	struct cli_spec src, dst;
	spec_or_die(c->args[0], CLI_SNAP_OPTIONAL, &src);
	spec_or_die(c->args[1], CLI_SNAP_NONE, &dst);
	Strata__Meta__CloneReq r = STRATA__META__CLONE_REQ__INIT;
	r.pool = src.pool;
	r.name = src.vol;
	r.snap = src.snap;
	r.dst_pool = dst.pool;
	r.dst_name = dst.vol;
	return volume_reply(c, MT(CLONE), &r.base, "created clone");
}

static int cmd_template(struct cli *c, bool mark)
{
	need_args(c, 1, 1, mark ? "template mark POOL/VOL" : "template unmark POOL/VOL");
	struct cli_spec sp;
	spec_or_die(c->args[0], CLI_SNAP_NONE, &sp);
	Strata__Meta__TemplateSetReq r = STRATA__META__TEMPLATE_SET_REQ__INIT;
	r.pool = sp.pool;
	r.name = sp.vol;
	r.mark = mark;
	return volume_reply(c, MT(TEMPLATE_SET), &r.base,
			    mark ? "marked as template:" : "unmarked template:");
}

static int cmd_template_mark(struct cli *c)
{
	return cmd_template(c, true);
}

static int cmd_template_unmark(struct cli *c)
{
	return cmd_template(c, false);
}

static int cmd_template_ls(struct cli *c)
{
	need_args(c, 0, 1, "template ls [POOL] [--json]");
	Strata__Meta__ListReq r = STRATA__META__LIST_REQ__INIT;
	if (c->nargs == 1) {
		name_or_die("pool", c->args[0]);
		r.pool = c->args[0];
	}
	Strata__Meta__VolumeList *l =
		(void *)call(c, MT(TEMPLATE_LIST), &r.base, &strata__meta__volume_list__descriptor);
	print_volume_list(c, l);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	return 0;
}

static int cmd_flatten(struct cli *c)
{
	need_args(c, 1, 1, "flatten POOL/VOL");
	struct cli_spec sp;
	Strata__Meta__VolumeRef r;
	ref_from(c, CLI_SNAP_NONE, &sp, &r);
	Strata__Meta__FlattenStatus *s =
		(void *)call(c, MT(FLATTEN), &r.base, &strata__meta__flatten_status__descriptor);
	if (c->json) {
		struct cli_json j;
		cli_json_init(&j, stdout);
		cli_json_obj_begin(&j, NULL);
		cli_json_str(&j, "volume", s->volume);
		cli_json_str(&j, "state", s->state);
		cli_json_u64(&j, "done", s->done);
		cli_json_u64(&j, "total", s->total);
		cli_json_obj_end(&j);
	} else {
		printf("flatten of %s: %s, %" PRIu64 "/%" PRIu64 " nodes\n", s->volume, s->state,
		       s->done, s->total);
	}
	protobuf_c_message_free_unpacked(&s->base, NULL);
	return 0;
}

static int cmd_tree(struct cli *c)
{
	need_args(c, 1, 1, "tree POOL/VOL [--json]");
	struct cli_spec sp;
	Strata__Meta__VolumeRef r;
	ref_from(c, CLI_SNAP_NONE, &sp, &r);
	Strata__Meta__Tree *t = (void *)call(c, MT(TREE), &r.base, &strata__meta__tree__descriptor);
	static const char *kinds[] = {"head", "snapshot", "deleted snapshot"};
	if (c->json) {
		struct cli_json j;
		cli_json_init(&j, stdout);
		cli_json_obj_begin(&j, NULL);
		cli_json_u64(&j, "family", t->family);
		cli_json_arr_begin(&j, "nodes");
		for (size_t i = 0; i < t->n_nodes; i++) {
			const Strata__Meta__TreeNode *n = t->nodes[i];
			cli_json_obj_begin(&j, NULL);
			cli_json_u64(&j, "layer_id", n->layer_id);
			cli_json_u64(&j, "parent_id", n->parent_id);
			cli_json_u64(&j, "depth", n->depth);
			cli_json_str(&j, "kind", kinds[n->kind <= 2 ? n->kind : 2]);
			cli_json_str(&j, "label", n->label);
			cli_json_bool(&j, "template", n->template_);
			cli_json_obj_end(&j);
		}
		cli_json_arr_end(&j);
		cli_json_obj_end(&j);
	} else {
		printf("family %" PRIu64 "\n", t->family);
		for (size_t i = 0; i < t->n_nodes; i++) {
			const Strata__Meta__TreeNode *n = t->nodes[i];
			/* Branches (clones) indent under the snapshot they grew from; a volume's
			 * own history stays in one column. */
			for (uint32_t d = 0; d < n->depth; d++) {
				fputs(d + 1 == n->depth ? "+-- " : "    ", stdout);
			}
			printf("%s%s%s  [layer %" PRIu64 "]\n", n->kind == 0 ? "* " : "o ",
			       n->label,
			       n->kind == 0   ? (n->template_ ? " (head, template)" : " (head)")
			       : n->kind == 2 ? " (deleted, kept for descendants)"
					      : "",
			       n->layer_id);
		}
	}
	protobuf_c_message_free_unpacked(&t->base, NULL);
	return 0;
}

static int cmd_status(struct cli *c)
{
	need_args(c, 0, 0, "status [--json]");
	Strata__Meta__ListReq r = STRATA__META__LIST_REQ__INIT;
	Strata__Meta__ClusterStatus *s =
		(void *)call(c, MT(STATUS), &r.base, &strata__meta__cluster_status__descriptor);
	if (c->json) {
		struct cli_json j;
		cli_json_init(&j, stdout);
		cli_json_obj_begin(&j, NULL);
		cli_json_u64(&j, "epoch", s->epoch);
		cli_json_u64(&j, "nodes_up", s->nodes_up);
		cli_json_u64(&j, "nodes_down", s->nodes_down);
		cli_json_u64(&j, "nodes_out", s->nodes_out);
		cli_json_u64(&j, "nodes_joining", s->nodes_joining);   /* of nodes_up */
		cli_json_u64(&j, "nodes_full", s->nodes_full);         /* of nodes_up */
		cli_json_u64(&j, "full_ratio", s->full_ratio);         /* % */
		cli_json_u64(&j, "nodes_nearfull", s->nodes_nearfull); /* within 10 % of it */
		cli_json_u64(&j, "pools", s->pools);
		cli_json_u64(&j, "capacity", s->capacity);
		cli_json_u64(&j, "used", s->used);
		cli_json_u64(&j, "volumes", s->volumes);
		cli_json_u64(&j, "snapshots", s->snapshots);
		cli_json_u64(&j, "provisioned", s->provisioned);
		/* PG health per pool, from the up nodes' last heartbeats at the current epoch. */
		bool all_clean = true;
		cli_json_arr_begin(&j, "pgs");
		for (size_t i = 0; i < s->n_pg_pools; i++) {
			const Strata__Meta__PoolPgStats *p = s->pg_pools[i];
			all_clean &= p->clean == p->pg_count;
			cli_json_obj_begin(&j, NULL);
			cli_json_str(&j, "pool", p->name);
			cli_json_u64(&j, "pool_id", p->pool_id);
			cli_json_u64(&j, "pg_count", p->pg_count);
			cli_json_u64(&j, "clean", p->clean);
			cli_json_u64(&j, "degraded", p->degraded);
			cli_json_u64(&j, "recovering", p->recovering);
			cli_json_u64(&j, "down",
				     p->down); /* waiting for a node holding their data */
			cli_json_u64(&j, "full", p->full); /* refusing writes: a member is full */
			cli_json_u64(&j, "unknown", p->unknown);
			cli_json_u64(&j, "stray", p->stray);
			cli_json_obj_end(&j);
		}
		cli_json_arr_end(&j);
		cli_json_bool(&j, "all_clean", all_clean);
		cli_json_obj_begin(&j, "recovery");
		cli_json_u64(&j, "objects_copied", s->objects_recovered);
		cli_json_u64(&j, "objects_to_copy", s->objects_to_recover);
		cli_json_obj_end(&j);
		cli_json_obj_end(&j);
	} else {
		char b1[32], b2[32], b3[32];
		printf("meta:      %s\n", c->meta);
		printf("epoch:     %" PRIu64 "\n", s->epoch);
		printf("nodes:     %u up", s->nodes_up);
		if (s->nodes_joining) {
			printf(" (%u joining)", s->nodes_joining);
		}
		if (s->nodes_full) {
			printf(" (%u full: writes to their PGs are refused)", s->nodes_full);
		}
		if (s->nodes_nearfull) {
			printf(" (%u nearly full: within 10 points of the full ratio)",
			       s->nodes_nearfull);
		}
		printf(", %u down, %u out\n", s->nodes_down, s->nodes_out);
		printf("pools:     %u\n", s->pools);
		printf("capacity:  %s used of %s (a node is full at %u%%)\n",
		       hsize(s->used, b1, sizeof(b1)), hsize(s->capacity, b2, sizeof(b2)),
		       s->full_ratio);
		printf("volumes:   %u (%s provisioned), %u snapshots\n", s->volumes,
		       hsize(s->provisioned, b3, sizeof(b3)), s->snapshots);
		for (size_t i = 0; i < s->n_pg_pools; i++) {
			const Strata__Meta__PoolPgStats *p = s->pg_pools[i];
			printf("pgs:       %s: %u clean, %u degraded, %u recovering", p->name,
			       p->clean, p->degraded, p->recovering);
			if (p->down) {
				printf(", %u down (every node holding their data is down)",
				       p->down);
			}
			if (p->full) {
				printf(", %u refusing writes (a member is out of space)", p->full);
			}
			if (p->unknown) {
				printf(", %u unknown", p->unknown);
			}
			if (p->stray) {
				printf(", %u stray copies to remove", p->stray);
			}
			printf(" (of %u)\n", p->pg_count);
		}
		printf("recovery:  %" PRIu64 " objects copied, %" PRIu64 " to copy\n",
		       s->objects_recovered, s->objects_to_recover);
	}
	protobuf_c_message_free_unpacked(&s->base, NULL);
	return 0;
}

/* One node's scrub, on a thread of its own: the nodes scrub at once. */
struct scrub_node {
	uint32_t id;
	const char *addr;
	Strata__Blockd__ScrubRequest q;
	pthread_t thread;
	bool started;
	bool undecodable; /* the reply was not a ScrubReply */
	int rc;           /* 0 (reply set), or a transport or the node's error */
	Strata__Blockd__ScrubReply *reply;
};

static void *scrub_node_run(void *arg)
{
	struct scrub_node *s = arg;
	int fd = st_tcp_connect(s->addr, 3000);
	if (fd < 0) {
		s->rc = fd;
		return NULL;
	}
	struct st_frame reply;
	char err[256] = "";
	s->rc = st_rpc_call(fd, STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_SCRUB, 0, &s->q.base, NULL,
			    0, &reply, err, sizeof(err));
	close(fd);
	if (s->rc < 0) {
		return NULL;
	}
	s->reply = strata__blockd__scrub_reply__unpack(NULL, reply.hdr.hdr_len,
						       reply.msg ? reply.msg : (uint8_t *)"");
	st_frame_release(&reply);
	s->undecodable = s->reply == NULL;
	return NULL;
}

/* Scrub goes to the blockd nodes themselves, all at once: each scrubs the PGs it is primary
 * of, comparing with the other members and repairing from the good copy. A node whose map is
 * not the one we read (-ESTALE/-EAGAIN) is asked again with a fresh map. */
static int cmd_scrub(struct cli *c)
{
	need_args(c, 1, 1, "scrub POOL [--max-mbps N] [--json]");
	name_or_die("pool", c->args[0]);
	if (c->max_mbps != -1 && (c->max_mbps < 1 || c->max_mbps > 1000000)) {
		die(2, "--max-mbps must be 1 to 1000000");
	}
	Strata__Blockd__ScrubReply tot = STRATA__BLOCKD__SCRUB_REPLY__INIT;
	for (int attempt = 0;; attempt++) {
		Strata__Meta__MapGetReq r = STRATA__META__MAP_GET_REQ__INIT;
		Strata__Meta__ClusterMap *m = (void *)call(c, MT(MAP_GET), &r.base,
							   &strata__meta__cluster_map__descriptor);
		uint32_t pool_id = 0;
		for (size_t i = 0; i < m->n_pools; i++) {
			if (strcmp(m->pools[i]->name, c->args[0]) == 0) {
				pool_id = m->pools[i]->id;
			}
		}
		if (pool_id == 0) {
			die(1, "no pool %s", c->args[0]);
		}
		Strata__Blockd__ScrubReply sum = STRATA__BLOCKD__SCRUB_REPLY__INIT;
		int again = 0;
		struct scrub_node *nodes = calloc(m->n_nodes ? m->n_nodes : 1, sizeof(*nodes));
		if (!nodes) {
			die(1, "out of memory");
		}
		for (size_t i = 0; i < m->n_nodes; i++) {
			const Strata__Meta__Node *n = m->nodes[i];
			struct scrub_node *s = &nodes[i];
			if (n->state != STRATA__META__NODE_STATE__NODE_UP) {
				continue;
			}
			s->id = n->id;
			s->addr = n->addr;
			s->q = (Strata__Blockd__ScrubRequest)STRATA__BLOCKD__SCRUB_REQUEST__INIT;
			s->q.pool_id = pool_id;
			s->q.map_epoch = m->epoch;
			s->q.repair = true;
			s->q.max_mbps = c->max_mbps == -1 ? 0 : (uint32_t)c->max_mbps;
			s->started = pthread_create(&s->thread, NULL, scrub_node_run, s) == 0;
			if (!s->started) {
				scrub_node_run(s); /* no thread: this node on its own */
			}
		}
		for (size_t i = 0; i < m->n_nodes; i++) {
			struct scrub_node *s = &nodes[i];
			if (s->started) {
				pthread_join(s->thread, NULL);
			}
		}
		for (size_t i = 0; i < m->n_nodes; i++) {
			struct scrub_node *s = &nodes[i];
			if (s->undecodable) {
				die(1, "undecodable scrub reply from node %u", s->id);
			}
			if (s->rc < 0) {
				again = s->rc;
				continue;
			}
			Strata__Blockd__ScrubReply *sr = s->reply;
			if (!sr) {
				continue; /* not up */
			}
			sum.pgs += sr->pgs;
			sum.objects += sr->objects;
			sum.mismatches += sr->mismatches;
			sum.repaired += sr->repaired;
			sum.errors += sr->errors;
			sum.bytes += sr->bytes;
			strata__blockd__scrub_reply__free_unpacked(sr, NULL);
		}
		free(nodes);
		protobuf_c_message_free_unpacked(&m->base, NULL);
		tot.mismatches += sum.mismatches;
		tot.repaired += sum.repaired;
		tot.pgs = sum.pgs;
		tot.objects = sum.objects;
		tot.errors = sum.errors;
		tot.bytes += sum.bytes;
		if (!again) {
			break;
		}
		if (attempt >= 30) {
			die(1, "scrub: nodes did not answer: %s", strerror(-again));
		}
		sleep(1);
	}
	if (c->json) {
		struct cli_json j;
		cli_json_init(&j, stdout);
		cli_json_obj_begin(&j, NULL);
		cli_json_str(&j, "pool", c->args[0]);
		cli_json_u64(&j, "pgs", tot.pgs);
		cli_json_u64(&j, "objects", tot.objects);
		cli_json_u64(&j, "mismatches", tot.mismatches);
		cli_json_u64(&j, "repaired", tot.repaired);
		cli_json_u64(&j, "errors", tot.errors);
		cli_json_u64(&j, "bytes_read", tot.bytes);
		cli_json_obj_end(&j);
	} else {
		printf("scrub %s: %" PRIu64 " PGs, %" PRIu64 " objects, %" PRIu64
		       " mismatches, %" PRIu64 " repaired, %" PRIu64 " errors, %.1f MiB read\n",
		       c->args[0], tot.pgs, tot.objects, tot.mismatches, tot.repaired, tot.errors,
		       (double)tot.bytes / 1048576.0);
	}
	return tot.errors ? 1 : 0;
}

struct command {
	const char *word1, *word2; /* word2 NULL: a one-word command */
	int (*fn)(struct cli *c);
	const char *usage;
	const char *help; /* printed by `strata WORD1 [WORD2] --help` (may be NULL) */
};

static const char help_volume_info[] =
	"Shows size, used, family, head layer, parent, children, snapshots, template flag.\n"
	"\n"
	"used: bytes of data blocks referenced by this volume's own layers -- its head and\n"
	"its snapshots' (and hidden deleted snapshots') own extent lists -- as stored on the\n"
	"primaries, each placement group counted once, each block once even if several of\n"
	"those layers share it. Not counted: data inherited from a parent volume (a clone\n"
	"starts at 0), replicas (multiply by the pool's replicas for raw space), holes and\n"
	"zeroed blocks. Computed on demand by asking every up storage node (LAYER_USAGE);\n"
	"a node that does not answer is left out and the figure is marked partial.\n";

static const char help_status[] =
	"Shows the map epoch, nodes, capacity, volumes, and per pool the placement groups\n"
	"that are clean (serving with every replica), degraded (serving with fewer up\n"
	"replicas than the pool's R), recovering (peering or copying, not serving yet) or\n"
	"unknown (not reported by an up node at the current epoch), how many refuse writes\n"
	"with ENOSPC because a member is out of space (until it has room and has caught up),\n"
	"plus recovery progress\n"
	"(objects copied / still to copy). Each PG is reported by its primary in its\n"
	"heartbeat, so figures lag by up to a second. --json adds all_clean.\n";

static const char help_config[] =
	"Cluster settings that strata-meta keeps in its catalog and applies at once:\n"
	"  full-ratio PCT   a node with PCT % of its capacity used is marked full in the map,\n"
	"                   and the primaries of its PGs refuse writes with ENOSPC (trims and\n"
	"                   write-zeroes go on) until it is below PCT - 2 %. 1-100, 100: off;\n"
	"                   default 95. Raising it lets writes in again at once; free space or\n"
	"                   add nodes before the data files fill.\n";

static const struct command commands[] = {
	{"pool", "create", cmd_pool_create,
	 "pool create POOL [--replicas N] [--object-size 4M] [--pgs N]", NULL},
	{"pool", "ls", cmd_pool_ls, "pool ls [--json]", NULL},
	{"node", "ls", cmd_node_ls, "node ls [--json]", NULL},
	{"volume", "create", cmd_volume_create, "volume create POOL/VOL --size 10G", NULL},
	{"volume", "ls", cmd_volume_ls, "volume ls [POOL] [--json]", NULL},
	{"volume", "info", cmd_volume_info, "volume info POOL/VOL [--json]", help_volume_info},
	{"volume", "resize", cmd_volume_resize,
	 "volume resize POOL/VOL --size 20G [--allow-shrink]", NULL},
	{"volume", "rename", cmd_volume_rename, "volume rename POOL/VOL NEWNAME", NULL},
	{"volume", "rm", cmd_volume_rm, "volume rm POOL/VOL", NULL},
	{"snap", "create", cmd_snap_create, "snap create POOL/VOL@SNAP", NULL},
	{"snap", "ls", cmd_snap_ls, "snap ls POOL/VOL [--json]", NULL},
	{"snap", "rm", cmd_snap_rm, "snap rm POOL/VOL@SNAP", NULL},
	{"snap", "rollback", cmd_snap_rollback, "snap rollback POOL/VOL@SNAP", NULL},
	{"clone", NULL, cmd_clone,
	 "clone POOL/VOL@SNAP POOL/NEWVOL   (POOL/TEMPLATE for a template)", NULL},
	{"template", "mark", cmd_template_mark, "template mark POOL/VOL", NULL},
	{"template", "unmark", cmd_template_unmark, "template unmark POOL/VOL", NULL},
	{"template", "ls", cmd_template_ls, "template ls [POOL] [--json]", NULL},
	{"flatten", NULL, cmd_flatten, "flatten POOL/VOL", NULL},
	{"tree", NULL, cmd_tree, "tree POOL/VOL [--json]", NULL},
	{"status", NULL, cmd_status, "status [--json]", help_status},
	{"config", "get", cmd_config_get, "config get [--json]", help_config},
	{"config", "set", cmd_config_set, "config set KEY VALUE", help_config},
	{"scrub", NULL, cmd_scrub, "scrub POOL [--max-mbps N] [--json]",
	 "Each blockd node compares the objects of the PGs it is primary of with the other\n"
	 "members and repairs a copy that differs from the good one. --max-mbps N reads at most\n"
	 "N MB/s of data on each node (default: as fast as the disk allows), so that clients\n"
	 "keep their share of the disk.\n"},
};

static void usage_commands(FILE *f)
{
	fprintf(f, "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		fprintf(f, "  strata %s\n", commands[i].usage);
	}
}

/* `strata WORD1 [WORD2] ... --help`: that command's usage and help. true if printed. */
static bool command_help(int argc, char **argv)
{
	static const char *const valued[] = {"--meta",        "--size", "--replicas",
					     "--object-size", "--pgs",  "--max-mbps"};
	bool help = false;
	const char *words[2] = {NULL, NULL};
	int nw = 0;
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *a = argv[i];
		help |= strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
		if (a[0] != '-') {
			if (nw < 2) {
				words[nw++] = a;
			}
			continue;
		}
		for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]); k++) {
			i += strcmp(a, valued[k]) == 0; /* skip its value */
		}
	}
	if (!help || nw == 0) {
		return false;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct command *cmd = &commands[i];
		if (strcmp(words[0], cmd->word1) != 0 ||
		    (cmd->word2 && (nw < 2 || strcmp(words[1], cmd->word2) != 0))) {
			continue;
		}
		printf("usage: strata %s\n", cmd->usage);
		if (cmd->help) {
			printf("\n%s", cmd->help);
		}
		printf("\nglobal flags: strata --help\n");
		return true;
	}
	return false;
}

int cli_main(int argc, char **argv)
{
	struct cli c = {.fd = -1, .replicas = -1, .pgs = -1, .max_mbps = -1};
	const char *meta = NULL;
	int npos = 0;
	const struct st_flag flags[] = {
		{"meta", ST_FLAG_STRING, &meta, "HOST:PORT",
		 "strata-meta address (else $STRATA_META, else 127.0.0.1:7700)"},
		{"json", ST_FLAG_BOOL, &c.json, NULL, "print JSON"},
		{"size", ST_FLAG_SIZE, &c.size, "SIZE", "volume size: 10G, 512M, 1T ..."},
		{"allow-shrink", ST_FLAG_BOOL, &c.allow_shrink, NULL, "let resize shrink a volume"},
		{"replicas", ST_FLAG_INT, &c.replicas, "N",
		 "pool replication factor, 1 to 3 (default 3)"},
		{"object-size", ST_FLAG_SIZE, &c.object_size, "SIZE",
		 "pool object size, a power of two from 64K to 64M (default 4M)"},
		{"pgs", ST_FLAG_INT, &c.pgs, "N", "pool placement group count (default 128)"},
		{"max-mbps", ST_FLAG_INT, &c.max_mbps, "N",
		 "scrub: read at most N MB/s of data per node (default: no limit)"},
		{NULL, 0, NULL, NULL, NULL},
	};
	const char *usage = "strata [--meta HOST:PORT] [--json] COMMAND ...";
	if (command_help(argc, argv)) {
		return 0;
	}
	int rc = st_flags_parse(usage, flags, argc, argv, &npos);
	if (rc > 0) {
		usage_commands(stdout);
		return 0;
	}
	if (rc < 0) {
		return 2;
	}
	c.meta = cli_meta_addr(meta);
	if (npos == 0) {
		fprintf(stderr, "strata: no command given (try --help)\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct command *cmd = &commands[i];
		if (strcmp(argv[0], cmd->word1) != 0) {
			continue;
		}
		int skip = 1;
		if (cmd->word2 != NULL) {
			if (npos < 2 || strcmp(argv[1], cmd->word2) != 0) {
				continue;
			}
			skip = 2;
		}
		c.args = argv + skip;
		c.nargs = npos - skip;
		rc = cmd->fn(&c);
		if (c.fd >= 0) {
			close(c.fd);
		}
		return rc;
	}
	if (npos >= 2) {
		fprintf(stderr, "strata: unknown command '%s %s' (try --help)\n", argv[0], argv[1]);
	} else {
		fprintf(stderr, "strata: unknown command '%s' (try --help)\n", argv[0]);
	}
	return 2;
}
