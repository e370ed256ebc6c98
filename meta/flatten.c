/*
 * The flatten driver: meta makes every storage node perform a flatten that FLATTEN recorded.
 *
 *   FLATTEN pool/vol --> md_flatten_start: state running --> md_flattener_add(volume)
 *   every tick (250 ms), for each running job:
 *       each UP node of the map that has not done it and has no request in flight
 *           --> blockd FLATTEN {pool, family, head layer, ancestry}   (async st_client)
 *       progress (nodes done / member nodes) --> md_flatten_progress (persisted when it moves)
 *       every member node done --> md_flatten_progress(complete): the head's parent link is cut
 *
 * Members are the nodes that are not OUT: UP and DOWN ones. A DOWN node still holds copies
 * of the family's objects that only it may have (R=1), so the job waits for it to come back
 * and flatten, or to be marked OUT (its data is then re-replicated from nodes that did).
 *
 * blockd's FLATTEN gives the head its own copy (metadata only) of every extent list it
 * inherits, for the objects that node stores, so once every node holding the family's objects
 * has done it the head no longer needs its ancestors. A failed request (error reply, a lost
 * connection, no reply within FL_TIMEOUT_MS) is retried after FL_RETRY_MS; a node that goes
 * DOWN keeps the job waiting until it is UP again (then it is sent FLATTEN) or OUT, and a new
 * node joins the set. Flatten is idempotent on blockd, so a retry or a restart of meta (which
 * rescans the catalog for running flattens and starts each afresh) is harmless.
 *
 * Everything runs on meta's reactor thread. A reply only marks its node (the next tick acts
 * on it: closing a client runs callbacks synchronously, so a reply must never re-enter the
 * job walk), and finds its job by volume id, never by pointer, so a job dropped meanwhile
 * (volume removed, rollback) is simply not found.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "blockd.pb-c.h"
#include "common/log.h"
#include "common/reactor.h"
#include "common/rpc.h"
#include "internal.h"

#define FL_RETRY_MS   1000
#define FL_TIMEOUT_MS 120000

struct fl_node {
	uint32_t id;
	bool done;
	bool inflight;
	uint64_t sent_ms;  /* when the in-flight request went out */
	uint64_t retry_ms; /* not before this time */
};

struct fl_job {
	TAILQ_ENTRY(fl_job) link;
	uint64_t volume_id;
	uint64_t layer; /* the head being flattened */
	struct fl_node *nodes;
	size_t nnodes;
	uint64_t done, total; /* as last persisted */
};

struct fl_conn {
	uint32_t node_id;
	char addr[64];
	struct st_client *cl;
};

struct md_flattener {
	struct st_reactor *r;
	struct md_catalog *cat;
	TAILQ_HEAD(, fl_job) jobs;
	struct fl_conn *conns;
	size_t nconns;
	bool scanned;  /* running flattens of the catalog picked up after a start */
	bool stopping; /* no more requests; replies only free their context */
};

struct fl_call {
	struct md_flattener *f;
	uint64_t volume_id, layer;
	uint32_t node_id;
};

int md_flattener_create(struct st_reactor *r, struct md_catalog *cat, struct md_flattener **out)
{
	struct md_flattener *f = calloc(1, sizeof(*f));
	if (f == NULL) {
		return -ENOMEM;
	}
	f->r = r;
	f->cat = cat;
	TAILQ_INIT(&f->jobs);
	*out = f;
	return 0;
}

static void job_free(struct md_flattener *f, struct fl_job *j)
{
	TAILQ_REMOVE(&f->jobs, j, link);
	free(j->nodes);
	free(j);
}

static struct fl_job *job_find(struct md_flattener *f, uint64_t volume_id)
{
	struct fl_job *j;
	TAILQ_FOREACH(j, &f->jobs, link)
	{
		if (j->volume_id == volume_id) {
			return j;
		}
	}
	return NULL;
}

static struct fl_node *job_node(struct fl_job *j, uint32_t id, bool create)
{
	for (size_t i = 0; i < j->nnodes; i++) {
		if (j->nodes[i].id == id) {
			return &j->nodes[i];
		}
	}
	if (!create) {
		return NULL;
	}
	struct fl_node *n = realloc(j->nodes, (j->nnodes + 1) * sizeof(*n));
	if (n == NULL) {
		return NULL;
	}
	j->nodes = n;
	n = &j->nodes[j->nnodes++];
	*n = (struct fl_node){.id = id};
	return n;
}

/* A live client for node (reconnecting if its address changed or its connection died). */
static struct st_client *node_client(struct md_flattener *f, const struct md_node *node)
{
	struct fl_conn *c = NULL;
	for (size_t i = 0; i < f->nconns; i++) {
		if (f->conns[i].node_id == node->id) {
			c = &f->conns[i];
		}
	}
	if (c == NULL) {
		struct fl_conn *n = realloc(f->conns, (f->nconns + 1) * sizeof(*n));
		if (n == NULL) {
			return NULL;
		}
		f->conns = n;
		c = &f->conns[f->nconns++];
		*c = (struct fl_conn){.node_id = node->id};
	}
	if (c->cl != NULL && (!st_client_alive(c->cl) || strcmp(c->addr, node->addr) != 0)) {
		st_client_close(c->cl); /* fails what is in flight: those replies retry */
		c->cl = NULL;
	}
	if (c->cl == NULL) {
		snprintf(c->addr, sizeof(c->addr), "%s", node->addr);
		int rc = st_client_connect(f->r, node->addr, &c->cl);
		if (rc < 0) {
			st_debug("flatten: connect to node %u at %s: %s", node->id, node->addr,
				 strerror(-rc));
			c->cl = NULL;
		}
	}
	return c->cl;
}

/* Drop the connection of a node whose request has hung (its in-flight calls fail). */
static void node_reset(struct md_flattener *f, uint32_t node_id)
{
	for (size_t i = 0; i < f->nconns; i++) {
		if (f->conns[i].node_id == node_id && f->conns[i].cl != NULL) {
			struct st_client *cl = f->conns[i].cl;
			f->conns[i].cl = NULL;
			st_client_close(cl);
		}
	}
}

static void flatten_done(void *arg, int err, struct st_frame *reply)
{
	struct fl_call *call = arg;
	struct md_flattener *f = call->f;
	(void)reply;
	if (!f->stopping) {
		struct fl_job *j = job_find(f, call->volume_id);
		struct fl_node *n =
			j && j->layer == call->layer ? job_node(j, call->node_id, false) : NULL;
		if (n != NULL) {
			n->inflight = false;
			if (err == 0) {
				n->done = true;
			} else {
				st_warn("flatten of volume %llu on node %u: %s; retrying",
					(unsigned long long)call->volume_id, call->node_id,
					strerror(-err));
				n->retry_ms = st_now_ms() + FL_RETRY_MS;
			}
		}
	}
	free(call);
}

static void node_send(struct md_flattener *f, struct fl_job *j, const struct md_volume *v,
		      const struct md_node *node, struct fl_node *n)
{
	struct md_layer *h = md_layer_by_id(f->cat, j->layer);
	struct st_client *cl = node_client(f, node);
	struct fl_call *call = calloc(1, sizeof(*call));
	uint64_t *anc = NULL;
	int nanc = h ? md_ancestry(f->cat, h, &anc) : -ENOENT;
	int rc = -ENOTCONN;

	if (cl != NULL && call != NULL && nanc >= 0) {
		Strata__Blockd__FlattenRequest m = STRATA__BLOCKD__FLATTEN_REQUEST__INIT;
		m.pool_id = v->pool_id;
		m.family = v->family;
		m.layer = j->layer;
		m.n_ancestry = (size_t)nanc;
		m.ancestry = anc;
		m.map_epoch = md_catalog_epoch(f->cat);
		*call = (struct fl_call){f, j->volume_id, j->layer, node->id};
		n->inflight = true;
		n->sent_ms = st_now_ms();
		rc = st_client_call(cl, STRATA__BLOCKD__BLOCKD_MSG_TYPE__BLOCKD_FLATTEN, 0, &m.base,
				    NULL, 0, flatten_done, call);
		if (rc == 0) {
			call = NULL; /* flatten_done owns it */
		} else {
			n->inflight = false;
		}
	}
	if (rc < 0) {
		n->retry_ms = st_now_ms() + FL_RETRY_MS;
	}
	free(anc);
	free(call);
}

/* Send what is due, persist progress when it moves, complete when every member is done. */
static void job_step(struct md_flattener *f, struct fl_job *j)
{
	struct md_volume *v = md_volume_by_id(f->cat, j->volume_id);
	if (v == NULL || v->flatten_state != MD_FLATTEN_RUNNING || v->head != j->layer) {
		job_free(f, j); /* removed, rolled back or already complete */
		return;
	}
	const struct md_node *const *nodes;
	size_t nn = md_nodes(f->cat, &nodes);
	uint64_t now = st_now_ms(), members = 0, up = 0, done = 0;
	for (size_t i = 0; i < nn; i++) {
		if (nodes[i]->state == STRATA__META__NODE_STATE__NODE_OUT) {
			continue;
		}
		struct fl_node *n = job_node(j, nodes[i]->id, true);
		if (n == NULL) {
			return; /* out of memory: try again next tick */
		}
		members++;
		if (nodes[i]->state == STRATA__META__NODE_STATE__NODE_UP) {
			up++;
		}
		if (n->done) {
			done++;
		} else if (nodes[i]->state != STRATA__META__NODE_STATE__NODE_UP) {
			continue; /* DOWN: waited for, sent to once it is back */
		} else if (n->inflight && now - n->sent_ms > FL_TIMEOUT_MS) {
			node_reset(f, n->id); /* its reply fails and schedules the retry */
		} else if (!n->inflight && now >= n->retry_ms) {
			node_send(f, j, v, nodes[i], n);
		}
	}
	if (up == 0 || (done == j->done && members == j->total && done < members)) {
		return; /* nothing to report (no UP node: the job waits) */
	}
	uint64_t vid = j->volume_id;
	bool complete = done == members;
	j->done = done;
	j->total = members;
	if (md_flatten_progress(f->cat, vid, done, members, complete, NULL) < 0) {
		st_error("flatten of volume %llu: recording progress: %s", (unsigned long long)vid,
			 md_catalog_error(f->cat));
		j->total = 0; /* try again next tick */
		return;
	}
	if (complete) {
		st_info("flatten of volume %llu complete on %llu node%s: parent link cut",
			(unsigned long long)vid, (unsigned long long)members,
			members == 1 ? "" : "s");
		if ((j = job_find(f, vid)) != NULL) {
			job_free(f, j);
		}
	}
}

int md_flattener_add(struct md_flattener *f, uint64_t volume_id)
{
	struct md_volume *v = md_volume_by_id(f->cat, volume_id);
	if (f->stopping || v == NULL || v->flatten_state != MD_FLATTEN_RUNNING) {
		return 0;
	}
	struct fl_job *j = job_find(f, volume_id);
	if (j == NULL) {
		j = calloc(1, sizeof(*j));
		if (j == NULL) {
			return -ENOMEM;
		}
		j->volume_id = volume_id;
		j->layer = v->head;
		j->done = UINT64_MAX; /* forces the first progress record */
		TAILQ_INSERT_TAIL(&f->jobs, j, link);
	}
	job_step(f, j);
	return 0;
}

void md_flattener_tick(struct md_flattener *f)
{
	if (f->stopping) {
		return;
	}
	if (!f->scanned) {
		/* By id: md_flattener_add records progress, and a commit that fails reloads the
		 * catalog (catalog.c), which frees every volume the array points at. */
		struct md_volume **vols;
		int n = md_volumes(f->cat, NULL, false, &vols);
		uint64_t *ids = n > 0 ? calloc((size_t)n, sizeof(*ids)) : NULL;
		if (n == 0 || ids != NULL) {
			size_t nids = 0;
			f->scanned = true;
			for (int i = 0; i < n; i++) {
				if (vols[i]->flatten_state == MD_FLATTEN_RUNNING) {
					ids[nids++] = vols[i]->id;
				}
			}
			for (size_t i = 0; i < nids; i++) {
				md_flattener_add(f, ids[i]);
			}
		}
		free(ids);
		if (n >= 0) {
			free(vols);
		}
	}
	struct fl_job *j, *next;
	for (j = TAILQ_FIRST(&f->jobs); j != NULL; j = next) {
		next = TAILQ_NEXT(j, link);
		job_step(f, j);
	}
}

void md_flattener_stop(struct md_flattener *f)
{
	if (f != NULL) {
		f->stopping = true;
	}
}

void md_flattener_free(struct md_flattener *f)
{
	if (f == NULL) {
		return;
	}
	f->stopping = true;
	for (size_t i = 0; i < f->nconns; i++) {
		if (f->conns[i].cl != NULL) {
			st_client_close(f->conns[i].cl); /* in-flight replies free their calls */
		}
	}
	free(f->conns);
	while (!TAILQ_EMPTY(&f->jobs)) {
		job_free(f, TAILQ_FIRST(&f->jobs));
	}
	free(f);
}
