/*
 * Epoch fences: a reply that moved the catalog epoch in a way writers must see (a snapshot
 * froze a head, a rollback replaced it, a template turned read-only, a resize, a delete) is
 * held until every up blockd has acknowledged that epoch.
 *
 *   request --catalog commit, epoch E--> reply held (md_fence_hold)
 *   blockd n: MAP_WATCH{node_id n, known_epoch >= E} = "n has installed E" (md_fence_ack)
 *   every UP node acked >= E, or the node went down, or FENCE_TIMEOUT_MS --> reply sent
 *
 * Why: blockd refuses requests stamped with an older epoch (-ESTALE), and a client re-resolves
 * its volume's head before it sends at a newer one. Once every up node has installed E, no
 * write can land in the layer the snapshot froze, so the snapshot is stable from the moment
 * its creator hears back. A node that is down is excluded: it re-registers (and installs the
 * current epoch) before anything is routed to it again.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rpc.h"
#include "internal.h"

#define FENCE_TIMEOUT_MS 10000

struct md_held {
	TAILQ_ENTRY(md_held) link;
	struct st_conn *c; /* NULL once the conn closed: drop silently */
	uint16_t type;     /* reply type */
	uint64_t req_id;
	uint8_t *msg;
	size_t len;
	uint64_t epoch;
	uint64_t deadline_ms;
};

void md_fence_init(struct md_fence *f)
{
	memset(f, 0, sizeof(*f));
	TAILQ_INIT(&f->held);
}

static uint64_t acked(const struct md_fence *f, uint32_t node_id)
{
	for (size_t i = 0; i < f->nacks; i++) {
		if (f->acks[i].node_id == node_id) {
			return f->acks[i].epoch;
		}
	}
	return 0;
}

void md_fence_ack(struct md_fence *f, uint32_t node_id, uint64_t epoch)
{
	for (size_t i = 0; i < f->nacks; i++) {
		if (f->acks[i].node_id == node_id) {
			if (epoch > f->acks[i].epoch) {
				f->acks[i].epoch = epoch;
			}
			return;
		}
	}
	if (f->nacks == f->capacks) {
		size_t cap = f->capacks ? f->capacks * 2 : 16;
		struct md_fence_ack *a = realloc(f->acks, cap * sizeof(*a));
		if (a == NULL) {
			return; /* the fence times out instead */
		}
		f->acks = a;
		f->capacks = cap;
	}
	f->acks[f->nacks++] = (struct md_fence_ack){node_id, epoch};
}

/* Returns 0 (held; sent later) or -ENOMEM (caller replies now). */
int md_fence_hold(struct md_fence *f, struct st_conn *c, uint16_t type, uint64_t req_id,
		  const ProtobufCMessage *msg, uint64_t epoch)
{
	struct md_held *h = calloc(1, sizeof(*h));

	if (h == NULL || st_pack_msg(msg, &h->msg, &h->len) < 0) {
		free(h);
		return -ENOMEM;
	}
	h->c = c;
	h->type = type;
	h->req_id = req_id;
	h->epoch = epoch;
	h->deadline_ms = st_now_ms() + FENCE_TIMEOUT_MS;
	TAILQ_INSERT_TAIL(&f->held, h, link);
	return 0;
}

/* The first up node that has not acknowledged epoch, or 0 when all have. */
static uint32_t laggard(const struct md_fence *f, struct md_catalog *cat, uint64_t epoch)
{
	const struct md_node *const *nodes;
	size_t n = md_nodes(cat, &nodes);

	for (size_t i = 0; i < n; i++) {
		if (nodes[i]->state == STRATA__META__NODE_STATE__NODE_UP &&
		    acked(f, nodes[i]->id) < epoch) {
			return nodes[i]->id;
		}
	}
	return 0;
}

void md_fence_release(struct md_fence *f, struct md_catalog *cat)
{
	uint64_t now = st_now_ms();
	struct md_held *h, *next;

	for (h = TAILQ_FIRST(&f->held); h != NULL; h = next) {
		next = TAILQ_NEXT(h, link);
		uint32_t lag = h->c ? laggard(f, cat, h->epoch) : 0;
		if (lag != 0 && now < h->deadline_ms) {
			continue;
		}
		if (lag != 0) {
			st_warn("node %u did not acknowledge epoch %llu within %d ms; replying "
				"anyway",
				lag, (unsigned long long)h->epoch, FENCE_TIMEOUT_MS);
		}
		TAILQ_REMOVE(&f->held, h, link);
		if (h->c != NULL) {
			st_conn_send_packed(h->c, h->type, h->req_id, 0, 0, h->msg, h->len, NULL, 0,
					    NULL, NULL);
		}
		free(h->msg);
		free(h);
	}
}

void md_fence_conn_closed(struct md_fence *f, struct st_conn *c)
{
	struct md_held *h;

	TAILQ_FOREACH(h, &f->held, link)
	{
		if (h->c == c) {
			h->c = NULL;
		}
	}
}

void md_fence_free(struct md_fence *f)
{
	struct md_held *h;

	while ((h = TAILQ_FIRST(&f->held)) != NULL) {
		TAILQ_REMOVE(&f->held, h, link);
		free(h->msg);
		free(h);
	}
	free(f->acks);
	f->acks = NULL;
	f->nacks = f->capacks = 0;
}
