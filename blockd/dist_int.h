/*
 * strata-blockd distribution layer: private state shared by dist.c (cluster map, PGs,
 * fencing), replicate.c (primary-copy writes, flush fan-out), recovery.c (peering, pull,
 * backfill, stray removal) and scrub.c.
 *
 *   bd_dist --map--> pools[] --> pgs[pg_count] { state, version, log, waiters }
 *          --peers[node id]--> st_client (lazy, reconnects)
 *
 * Everything runs on the reactor thread.
 */
#ifndef STRATA_BLOCKD_DIST_INT_H
#define STRATA_BLOCKD_DIST_INT_H

#include "blockd.pb-c.h"
#include "common/placement.h"
#include "common/rpc.h"
#include "internal.h"
#include "meta.pb-c.h"
#include "pglog.h"

#define BD_MAX_NODES 256
#define BD_MAX_R     8
#define BD_XFER_MAX  8 /* objects in flight for recovery, per node */

enum bd_pg_state {
	PG_NONE,    /* not the primary (replica, stray or nothing) */
	PG_PEERING, /* primary; catching up itself and its replicas: -EAGAIN */
	PG_ACTIVE,  /* primary; serving */
};

TAILQ_HEAD(dreq_list, bd_dreq);
struct rep_ctx;
TAILQ_HEAD(rep_list, rep_ctx);

struct bd_pg {
	uint32_t pool, pg;
	enum bd_pg_state state;
	uint64_t version;          /* last mutation applied (persisted with it) */
	struct bd_pglog log;       /* what changed since log.base (pglog.h) */
	uint32_t acting[BD_MAX_R]; /* at the current map: primary first */
	uint32_t nacting;
	uint64_t active_epoch;
	uint64_t round; /* bumps abandon a peering in progress */
	/* Primary: admission is closed (a mutation's local op is running, or a scrub compares
	 * the copies). Mutations start one at a time, each once the one before it is applied
	 * here, and then run on their forwards side by side (replicate.c). */
	bool busy;
	/* A scrub holds one object: no mutation of it is admitted (scrub.c). Once none of it
	 * runs, the copies are compared (scrub_comparing) while the PG's other objects go on. */
	bool scrub_hold, scrub_comparing;
	uint64_t scrub_family, scrub_object;
	uint64_t head;            /* the newest started mutation's version (while any runs) */
	struct dreq_list running; /* mutations started and not finished, oldest first */
	/* Member: forwarded mutations apply one at a time, in the order they came. */
	bool rep_busy, rep_running;
	struct rep_list rep_queue;
	bool pulling; /* a pull into this PG is running */
	/* Primary: members catching up in the background (recovery.c "Catch-up"). They get no
	 * forwards until they join; `hold` parks new mutations while one's last round runs. */
	uint32_t behind[BD_MAX_R];
	uint32_t nbehind;
	bool hold;
	bool stray; /* holds data but not in the acting set */
	/* Primary: a member that refused a forward, or a catch-up round, for want of space (0:
	 * none). Until it catches up or leaves the acting set, writes to the PG are refused with
	 * ENOSPC here: acknowledging them with that member behind would leave them on fewer
	 * copies than the pool's, for as long as nobody frees space (replicate.c). */
	uint32_t full_member;
	/* meta has this node on record as a holder of the PG (a heartbeat that said so was
	 * answered): the PG's first mutation here waits for that (holder claims, dist.c). */
	bool claimed;
	bool claim_sent; /* in the heartbeat now in flight */
	struct dreq_list waiters;
};

/* Is node in the PG's acting set? */
static inline bool dist_pg_acts(const struct bd_pg *pg, uint32_t node)
{
	for (uint32_t i = 0; i < pg->nacting; i++) {
		if (pg->acting[i] == node) {
			return true;
		}
	}
	return false;
}

/* Nothing moves the PG's data here: no mutation admitted or running, no forward applying, no
 * scrub comparing one of its objects. */
static inline bool dist_pg_still(const struct bd_pg *pg)
{
	return !pg->busy && TAILQ_EMPTY(&pg->running) && !pg->rep_busy &&
	       TAILQ_EMPTY(&pg->rep_queue) && !pg->scrub_comparing;
}

struct dist_pool {
	uint32_t id, replicas, pg_count;
	struct bd_pg *pgs;
	ProtobufCBinaryData down; /* the map's down_pgs (points into d->map) */
};

struct bd_peer {
	struct st_client *cl;
	char addr[64];
	bool dirty; /* forwarded writes since the last flush */
	bool full;  /* the map marks the node full (meta's --full-ratio) */
};

struct saved_ver {
	uint32_t pool, pg;
	uint64_t version;
};

struct fam_ent {
	uint64_t family;
	uint32_t pool;
};

struct bd_dist {
	struct st_reactor *r;
	struct bd_engine *e;
	uint32_t self;
	uint64_t epoch;
	Strata__Meta__ClusterMap *map;
	struct st_place_node *place;
	size_t nplace;
	struct dist_pool *pools;
	size_t npools;
	struct bd_peer peers[BD_MAX_NODES];
	struct saved_ver *saved;
	size_t nsaved;
	struct fam_ent *fam;
	size_t fam_cap, fam_n;
	struct st_io tick;
	bool stopping;
	/* recovery */
	int xfer_inflight;
	uint64_t objects_recovered, objects_to_recover;
	bool stray_busy;
	/* Mutations admitted while an earlier one of their PG was still out on its members
	 * (logged at stop; test_dist_pipeline checks that it happens). */
	uint64_t overlapped;
	/* Mutations refused here while others of their PG were out, whose version went back to
	 * the PG for its next one (finish; logged at most once a second and at stop;
	 * test_dist_primary_full checks that it happens). */
	uint64_t given_back;
	uint64_t given_back_ms;   /* when the last of them was logged */
	uint32_t holds;           /* PGs held for a member's last catch-up round (recovery.c) */
	uint64_t misaddressed;    /* peer requests meant for another node (dist_peer_check) */
	uint64_t misaddressed_ms; /* when the last of them was logged */
	/* Ask the meta session for a heartbeat now (meta.c); NULL: no meta, nothing to claim. */
	void (*claim_kick)(void *arg);
	void *claim_arg;
};

/* The member that makes the PG refuse writes for want of space, or 0: one that refused a
 * forward or a catch-up round (full_member), or one the map marks full (meta's full ratio,
 * meta/nodes.c), whose used space reached the line before any write failed. */
static inline uint32_t dist_pg_full(const struct bd_dist *d, const struct bd_pg *pg)
{
	if (pg->full_member) {
		return pg->full_member;
	}
	for (uint32_t i = 0; i < pg->nacting; i++) {
		if (pg->acting[i] < BD_MAX_NODES && d->peers[pg->acting[i]].full) {
			return pg->acting[i];
		}
	}
	return 0;
}

/* service.c: shape checks of an IoRequest (payload_len as the op needs). 0 or -EINVAL. */
int bd_io_validate(uint16_t type, const Strata__Blockd__IoRequest *io, uint32_t payload_len,
		   struct bd_req *q) __attribute__((nonnull));

/* dist.c */
struct dist_pool *dist_pool(struct bd_dist *d, uint32_t pool_id) __attribute__((nonnull));
struct bd_pg *dist_pg(struct bd_dist *d, uint32_t pool_id, uint32_t pg) __attribute__((nonnull));
/* Acting set of (pool, pg) at the current map: node ids, primary first. Returns how many. */
uint32_t dist_acting(struct bd_dist *d, const struct dist_pool *p, uint32_t pg, uint32_t *out)
	__attribute__((nonnull));
bool dist_node_up(struct bd_dist *d, uint32_t id) __attribute__((nonnull));
/* Connected client to a peer, or NULL. */
struct st_client *dist_peer(struct bd_dist *d, uint32_t id) __attribute__((nonnull));
/* Epoch check of a peer or client request: 0, -ESTALE (older) or -EAGAIN (newer/no map). */
int dist_epoch_check(struct bd_dist *d, uint64_t epoch) __attribute__((nonnull));
/* A peer request's checks: the epoch as above, and the addressee. `to` names the node the
 * sender meant (0: an older sender, unchecked); another node at that address answers -ESTALE,
 * so the sender waits for the map that shows who is there now. */
int dist_peer_check(struct bd_dist *d, uint64_t epoch, uint32_t to) __attribute__((nonnull));
/* The pool a family belongs to (0: unknown); remember one. */
uint32_t dist_family_pool(struct bd_dist *d, uint64_t family) __attribute__((nonnull));
void dist_family_set(struct bd_dist *d, uint64_t family, uint32_t pool) __attribute__((nonnull));
/* Keys: 'V' pool pg -> version, 'F' family -> pool. */
void dist_vkey(uint8_t k[9], uint32_t pool, uint32_t pg);
void dist_fkey(uint8_t k[9], uint64_t family);
void dist_be64(uint8_t *p, uint64_t v);
void dist_be32(uint8_t *p, uint32_t v);
/* Record a mutation applied at version v. */
void dist_log_append(struct bd_pg *pg, uint64_t v, uint64_t family, uint64_t object)
	__attribute__((nonnull));
/* Forget the log: it now starts at the current version. */
void dist_log_reset(struct bd_pg *pg) __attribute__((nonnull));
/* Does the map say every node holding PG g's data is down (so nobody may serve it)? */
bool dist_pg_down(const struct dist_pool *p, uint32_t g) __attribute__((nonnull));
/* Is node a member of pg that is still catching up (gets no forwards)? */
bool dist_pg_behind(const struct bd_pg *pg, uint32_t node) __attribute__((nonnull));
/* The PG is active: start parked mutations. */
void dist_pg_kick(struct bd_dist *d, struct bd_pg *pg) __attribute__((nonnull));

/* replicate.c */
/* A member refused a forward or a catch-up round for want of space (bd_pg.full_member). */
void repl_member_full(struct bd_pg *pg, uint32_t node);
void repl_start_next(struct bd_dist *d, struct bd_pg *pg) __attribute__((nonnull));
void repl_fail_waiters(struct bd_dist *d, struct bd_pg *pg, int err) __attribute__((nonnull));
/* Answers the PG's forwards that wait for their turn here with err (the node is stopping). */
void repl_fail_forwards(struct bd_dist *d, struct bd_pg *pg, int err) __attribute__((nonnull));
void repl_handle_write(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
	__attribute__((nonnull));
void repl_handle_flush(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
	__attribute__((nonnull));

/* recovery.c */
void recovery_peer(struct bd_dist *d, struct bd_pg *pg) __attribute__((nonnull));
void recovery_handle(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
	__attribute__((nonnull));
void recovery_tick(struct bd_dist *d) __attribute__((nonnull));
/* Pull one object from a peer and install it. cb(arg, err). */
void recovery_pull_object(struct bd_dist *d, uint32_t source, uint32_t pool, uint64_t family,
			  uint64_t object, bd_done_cb cb, void *arg) __attribute__((nonnull(1, 6)));

/* scrub.c */
void scrub_handle(struct bd_dist *d, struct st_frame *f, struct bd_reply *rp)
	__attribute__((nonnull));

#endif
