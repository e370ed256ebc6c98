/*
 * strata-meta internals: the catalog (pools, nodes, volumes, the layer tree) on RocksDB, the
 * request decoder, and the RPC server on the reactor.
 *
 *   main.c --> md_server (server.c) --frame--> md_request_decode (request.c)
 *                   |                                |
 *                   +------ md_* catalog calls ------+--> md_catalog (catalog.c, volumes.c,
 *                                                          |  snapshots.c, nodes.c)
 *                                                          |  in memory, loaded at start
 *                                                          +--> RocksDB (one synced WriteBatch
 *                                                               per state change)
 *
 * The catalog is single-threaded (the reactor thread owns it) and usable without the network,
 * which is how the unit tests drive it.
 */
#ifndef STRATA_META_INTERNAL_H
#define STRATA_META_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/queue.h>

#include "meta.pb-c.h"

#define MD_NAME_MAX          128
#define MD_SCHEMA_VERSION    1
#define MD_MAX_REQUEST       (64u << 10) /* a meta request body larger than this is refused */
#define MD_DEFAULT_REPLICAS  3
#define MD_DEFAULT_OBJ_SIZE  (4ull << 20)
#define MD_DEFAULT_PGS       128
#define MD_HOLDER_BYTES      32 /* a PG's holder set: one bit per node id below 256 */
#define MD_MIN_OBJ_SIZE      (64ull << 10)
#define MD_MAX_OBJ_SIZE      (64ull << 20)
#define MD_MAX_VOLUME_SIZE   (1ull << 60)
#define MD_HEARTBEAT_DOWN_MS 5000
#define MD_DEFAULT_DOWN_OUT  600

enum md_layer_kind {
	MD_LAYER_HEAD = 0,   /* a volume's writable layer */
	MD_LAYER_SNAP = 1,   /* a named, frozen snapshot */
	MD_LAYER_HIDDEN = 2, /* a deleted snapshot still referenced by a descendant */
};

enum md_flatten_state {
	MD_FLATTEN_NONE = 0,
	MD_FLATTEN_RUNNING = 1,
	MD_FLATTEN_DONE = 2,
};

struct md_pool {
	uint32_t id;
	char name[MD_NAME_MAX + 1];
	uint32_t replicas;
	uint64_t object_size;
	uint32_t pg_count;
	uint8_t *holders; /* NULL or pg_count * MD_HOLDER_BYTES: node id sets (holders.c) */
};

struct md_layer {
	uint64_t id;
	uint64_t family;
	uint64_t parent; /* 0: a root */
	uint64_t volume; /* owning volume */
	uint32_t kind;   /* enum md_layer_kind */
	char name[MD_NAME_MAX + 1];
	uint64_t created;
	uint64_t size; /* volume size when frozen */
	/* In memory only, rebuilt at load: */
	struct md_layer **children;
	uint32_t nchildren, cap_children;
};

struct md_volume {
	uint64_t id;
	uint32_t pool_id;
	char name[MD_NAME_MAX + 1];
	uint64_t size;
	uint64_t used;
	uint64_t family;
	uint64_t head;
	bool is_template;
	uint64_t template_base; /* snapshot that clones of the template use (0: none yet) */
	uint64_t created;
	uint64_t origin; /* snapshot layer this volume was cloned from (0: a root) */
	uint32_t flatten_state;
	uint64_t flatten_done, flatten_total;
};

struct md_node {
	uint32_t id;
	char addr[64];
	char uuid[64];
	uint64_t capacity;
	uint64_t used;
	uint32_t weight;
	uint32_t state;      /* STRATA__META__NODE_STATE__* */
	uint64_t down_since; /* unix seconds */
	bool joining;        /* up, catching up: not a primary while a caught-up member is up */
	bool full;           /* used reached the full ratio: see md_full_ratio */
	uint64_t last_hb_ms; /* in memory: monotonic time of the last heartbeat */
};

struct md_reclaim {
	uint64_t layer_id;
	uint64_t family;
	uint32_t pool_id;
};

struct md_catalog;
struct rocksdb_writebatch_t;

/* catalog.c */
/* Open (creating if needed) the catalog in dir and load it. Returns 0 or -errno. */
int md_catalog_open(const char *dir, struct md_catalog **out) __attribute__((nonnull));
void md_catalog_close(struct md_catalog *cat);
/*
 * The catalog's disk reserve (strata-meta --min-free). A commit that would leave less than
 * this free on the catalog's file system is refused with ENOSPC when the request grows the
 * catalog for a user (md_catalog_set_growing: pools, volumes, snapshots, clones...), and below
 * a quarter of it for everything else (heartbeats, epoch moves, removals, reservations), so
 * that failover and freeing space keep working after users are refused. 0: off. A write that
 * fails anyway makes every later commit fail with EIO without touching RocksDB (Debian's
 * librocksdb asserts on a write after a failed one) until strata-meta restarts.
 */
#define MD_MIN_FREE (64ull << 20)
void md_catalog_set_min_free(struct md_catalog *cat, uint64_t bytes) __attribute__((nonnull));
/*
 * A node whose heartbeat reports used >= pct % of its capacity is marked full in the map (with
 * an epoch bump), and the primaries of its PGs refuse writes and compare-and-writes with ENOSPC
 * while trims and write-zeroes go on (blockd/dist.c). It is cleared once used falls below
 * pct - MD_FULL_HYSTERESIS %, so that a node at the line does not move the epoch with every
 * heartbeat. The room above the ratio is for what must still land on a node that users may not
 * fill: overwrites (a redirect-on-write store needs a free block for every block it rewrites),
 * writes already in flight when the map moved, and recovery. 100: off (only the hard wall of an
 * exhausted data file refuses writes).
 */
#define MD_FULL_RATIO      95
#define MD_FULL_HYSTERESIS 2
/* The ratio in effect: the last one set (md_set_full_ratio, kept in the catalog), else
 * MD_FULL_RATIO. */
unsigned md_full_ratio(const struct md_catalog *cat) __attribute__((nonnull));
/* Set the full ratio (1..100) and keep it, and mark every up node against it at once: one
 * epoch bump if any node's flag moved (meta/nodes.c). 0 or -errno (-EINVAL: out of range). */
int md_set_full_ratio(struct md_catalog *cat, unsigned pct) __attribute__((nonnull));
/* An up node that is not full but within MD_NEARFULL_MARGIN % of the ratio: `strata status`
 * warns about it while writes still land (Ceph's nearfull). */
#define MD_NEARFULL_MARGIN 10
bool md_node_nearfull(const struct md_catalog *cat, const struct md_node *n)
	__attribute__((nonnull));
void md_catalog_set_growing(struct md_catalog *cat, bool growing) __attribute__((nonnull));
/* The message describing the last failure (valid until the next call). */
const char *md_catalog_error(const struct md_catalog *cat) __attribute__((nonnull));
uint64_t md_catalog_epoch(const struct md_catalog *cat) __attribute__((nonnull));
/* true if name matches [A-Za-z0-9._-]{1,128}. */
bool md_name_valid(const char *name);
struct md_volume *md_volume_by_id(const struct md_catalog *cat, uint64_t id)
	__attribute__((nonnull));
struct md_layer *md_layer_by_id(const struct md_catalog *cat, uint64_t id) __attribute__((nonnull));
size_t md_reclaims(const struct md_catalog *cat, const struct md_reclaim **out)
	__attribute__((nonnull));
int md_reclaim_done(struct md_catalog *cat, const uint64_t *ids, size_t n)
	__attribute__((nonnull(1)));
/* Catalog totals for status. */
void md_catalog_counts(const struct md_catalog *cat, uint32_t *volumes, uint32_t *snapshots,
		       uint64_t *provisioned) __attribute__((nonnull));
/* Check every tree invariant (used by tests). Returns 0 or -EUCLEAN with a message. */
int md_catalog_check(struct md_catalog *cat) __attribute__((nonnull));

/* volumes.c */

int md_pool_create(struct md_catalog *cat, const char *name, uint32_t replicas, uint64_t obj_size,
		   uint32_t pgs, const struct md_pool **out) __attribute__((nonnull(1, 2)));
const struct md_pool *md_pool_find(const struct md_catalog *cat, const char *name)
	__attribute__((nonnull));
const struct md_pool *md_pool_by_id(const struct md_catalog *cat, uint32_t id)
	__attribute__((nonnull));
/* Pools in id order; returns the count and points *out at an internal array. */
size_t md_pools(const struct md_catalog *cat, const struct md_pool *const **out)
	__attribute__((nonnull));

/* Volume lookups fail with -ENOENT and a message naming what is missing. */
int md_volume_lookup(struct md_catalog *cat, const char *pool, const char *name,
		     struct md_volume **out) __attribute__((nonnull));
int md_snap_lookup(struct md_catalog *cat, const struct md_volume *v, const char *snap,
		   struct md_layer **out) __attribute__((nonnull));
/* Every volume (optionally of one pool, optionally templates only), sorted by pool and name.
 * *out is malloc'd; returns the count or -ENOMEM. */
int md_volumes(struct md_catalog *cat, const char *pool, bool templates_only,
	       struct md_volume ***out) __attribute__((nonnull(1, 4)));
/* Snapshots of v in creation order (malloc'd array). Returns the count or -ENOMEM. */
int md_snapshots(struct md_catalog *cat, const struct md_volume *v, struct md_layer ***out)
	__attribute__((nonnull));
/* Volumes other than v.owner whose head descends from layer (or, if layer is NULL, from any
 * layer owned by v). malloc'd array; returns the count or -ENOMEM. */
int md_dependents(struct md_catalog *cat, const struct md_volume *v, const struct md_layer *layer,
		  struct md_volume ***out) __attribute__((nonnull(1, 2, 4)));
/* Ancestry of layer: its parent, grandparent, ... (malloc'd). Returns the count or -ENOMEM. */
int md_ancestry(const struct md_catalog *cat, const struct md_layer *l, uint64_t **out)
	__attribute__((nonnull));
/* "pool/vol" into buf. */
char *md_volume_spec(const struct md_catalog *cat, const struct md_volume *v, char *buf, size_t len)
	__attribute__((nonnull));

int md_volume_create(struct md_catalog *cat, const char *pool, const char *name, uint64_t size,
		     struct md_volume **out) __attribute__((nonnull(1, 2, 3)));
int md_volume_resize(struct md_catalog *cat, const char *pool, const char *name, uint64_t size,
		     bool allow_shrink, struct md_volume **out) __attribute__((nonnull(1, 2, 3)));
int md_volume_rename(struct md_catalog *cat, const char *pool, const char *name,
		     const char *new_name, struct md_volume **out)
	__attribute__((nonnull(1, 2, 3, 4)));
int md_volume_remove(struct md_catalog *cat, const char *pool, const char *name)
	__attribute__((nonnull));
/* Resolve "pool/vol" or "pool/vol@snap". */
int md_volume_open(struct md_catalog *cat, const char *spec, struct md_volume **vol,
		   struct md_layer **layer, bool *read_only) __attribute__((nonnull));

/* snapshots.c */
int md_snap_create(struct md_catalog *cat, const char *pool, const char *name, const char *snap,
		   struct md_layer **out) __attribute__((nonnull(1, 2, 3, 4)));
int md_snap_remove(struct md_catalog *cat, const char *pool, const char *name, const char *snap)
	__attribute__((nonnull));
int md_snap_rollback(struct md_catalog *cat, const char *pool, const char *name, const char *snap,
		     struct md_volume **out) __attribute__((nonnull(1, 2, 3, 4)));
/* snap may be "" when the source is a template. */
int md_clone(struct md_catalog *cat, const char *pool, const char *name, const char *snap,
	     const char *dst_pool, const char *dst_name, struct md_volume **out)
	__attribute__((nonnull(1, 2, 3, 4, 5, 6)));
int md_template_set(struct md_catalog *cat, const char *pool, const char *name, bool mark,
		    struct md_volume **out) __attribute__((nonnull(1, 2, 3)));
int md_flatten_start(struct md_catalog *cat, const char *pool, const char *name,
		     struct md_volume **out) __attribute__((nonnull(1, 2, 3)));
int md_flatten_progress(struct md_catalog *cat, uint64_t volume_id, uint64_t done, uint64_t total,
			bool complete, struct md_volume **out) __attribute__((nonnull(1)));

/* catalog.c: for nodes.c, persistence helpers shared with the catalog. */
int md_fail(struct md_catalog *cat, int rc, const char *fmt, ...)
	__attribute__((nonnull(1, 3), format(printf, 3, 4)));
struct rocksdb_writebatch_t *md_batch(void);
void md_batch_put_node(struct rocksdb_writebatch_t *b, const struct md_node *n)
	__attribute__((nonnull));
/* Bump the epoch in b (and in memory once committed). */
void md_batch_bump_epoch(struct md_catalog *cat, struct rocksdb_writebatch_t *b)
	__attribute__((nonnull));
/* Write b synced and destroy it. On failure reloads the catalog from disk, returns -EIO. */
int md_commit(struct md_catalog *cat, struct rocksdb_writebatch_t *b) __attribute__((nonnull));
/* Persist v alone in one synced batch, moving the epoch first when open writers must see the
 * change (fence.c). On success *out (if given) is v. Returns 0 or -EIO. */
int md_commit_volume(struct md_catalog *cat, struct md_volume *v, bool bump_epoch,
		     struct md_volume **out) __attribute__((nonnull(1, 2)));
struct md_node *md_node_alloc(struct md_catalog *cat) __attribute__((nonnull));
/* For pr.c: read one raw record; *val is NULL when absent, else rocksdb_free() it. 0 or -EIO. */
int md_catalog_get(struct md_catalog *cat, const void *key, size_t klen, char **val, size_t *vlen)
	__attribute__((nonnull));
/* Delete every reservation record of a volume in b (volume removal). */
void md_pr_batch_forget(struct rocksdb_writebatch_t *b, uint64_t volume_id)
	__attribute__((nonnull));
struct md_node *md_node_by_id(const struct md_catalog *cat, uint32_t id) __attribute__((nonnull));

/* holders.c: which nodes hold each PG's data, from their heartbeats */
/* Every node holding PG g's data is down (and at least one holds it). */
bool md_pg_down(const struct md_catalog *cat, const struct md_pool *p, uint32_t g)
	__attribute__((nonnull));
/* Take h's held PGs as node's holdings; persist changes, with an epoch bump when a PG's down
 * state changes. Returns 0 or -errno. */
int md_holders_update(struct md_catalog *cat, uint32_t node_id,
		      const Strata__Meta__NodeHeartbeatReq *h) __attribute__((nonnull));
/* A node marked out holds nothing any more: drop it from every pool's sets, into b. */
void md_holders_forget(struct md_catalog *cat, struct rocksdb_writebatch_t *b, uint32_t node_id)
	__attribute__((nonnull));

/* nodes.c */
int md_node_register(struct md_catalog *cat, const char *addr, uint64_t capacity, uint32_t weight,
		     const char *uuid, uint64_t now_ms, const struct md_node **out)
	__attribute__((nonnull(1, 2, 5)));
int md_node_heartbeat(struct md_catalog *cat, uint32_t id, uint64_t used, uint64_t capacity,
		      uint64_t now_ms) __attribute__((nonnull));
/* Mark nodes down/out. Returns the number of state changes (the epoch moved if > 0) or -errno. */
int md_nodes_tick(struct md_catalog *cat, uint64_t now_ms, uint64_t wall_s, uint64_t down_ms,
		  uint64_t down_out_s) __attribute__((nonnull));
size_t md_nodes(const struct md_catalog *cat, const struct md_node *const **out)
	__attribute__((nonnull));
/* When settled (md_pgstats_settled), every joining node stops joining, with one epoch bump.
 * Returns the number promoted or -errno. */
int md_nodes_promote(struct md_catalog *cat, bool settled) __attribute__((nonnull));

/* pr.c: SCSI persistent reservation records (opaque to meta, compare-and-swap by version) */
/* The record of spec ("pool/vol[@snap]"). *version is the stored version (0: none); *out is
 * the record (free_unpacked) or NULL when there is none or it is still known_version. */
int md_pr_get(struct md_catalog *cat, const char *spec, uint64_t known_version, uint64_t *version,
	      Strata__Meta__PrRecord **out) __attribute__((nonnull));
/* Store rec if the stored version is still expected. Returns 0 with *version the new version,
 * -EAGAIN with *version the current one, or another -errno. */
int md_pr_update(struct md_catalog *cat, const char *spec, uint64_t expected,
		 const Strata__Meta__PrRecord *rec, uint64_t *version) __attribute__((nonnull));

/* flatten.c: meta drives blockd's FLATTEN on every UP node for each running flatten */
struct st_reactor;
struct md_flattener;
int md_flattener_create(struct st_reactor *r, struct md_catalog *cat, struct md_flattener **out)
	__attribute__((nonnull));
/* Start driving the running flatten of a volume (no-op if none or already driven). */
int md_flattener_add(struct md_flattener *f, uint64_t volume_id) __attribute__((nonnull));
/* Send due requests, record progress, complete; picks up running flattens after a restart. */
void md_flattener_tick(struct md_flattener *f) __attribute__((nonnull));
void md_flattener_stop(struct md_flattener *f);
/* After st_reactor_destroy(). */
void md_flattener_free(struct md_flattener *f);

/* stats.c: the latest PG health report of every node (memory only), volume layer sets */
struct md_pgstats;
int md_pgstats_new(struct md_pgstats **out) __attribute__((nonnull));
void md_pgstats_free(struct md_pgstats *ps);
/* Keep h's PG counts as its node's latest report. Returns 0 or -ENOMEM. */
int md_pgstats_update(struct md_pgstats *ps, const Strata__Meta__NodeHeartbeatReq *h)
	__attribute__((nonnull));
/* Drop a node's report (it registered again: a new process). */
void md_pgstats_forget(struct md_pgstats *ps, uint32_t node_id) __attribute__((nonnull));
/* Fill m's pg_pools, node_pgs and recovery totals (malloc'd: md_pgstats_fill_free). Returns 0
 * or -ENOMEM. */
int md_pgstats_fill(struct md_pgstats *ps, const struct md_catalog *cat,
		    Strata__Meta__ClusterStatus *m) __attribute__((nonnull));
void md_pgstats_fill_free(Strata__Meta__ClusterStatus *m) __attribute__((nonnull));
/* Has every up node reported at the current epoch, with nothing left to copy, and is every PG of
 * every pool serving with all its members caught up (clean or degraded, none recovering)? */
bool md_pgstats_settled(struct md_pgstats *ps, const struct md_catalog *cat)
	__attribute__((nonnull));
/* The layers v owns (head, snapshots, hidden), sorted (malloc'd). Returns the count or -errno. */
int md_volume_layers(struct md_catalog *cat, const struct md_volume *v, uint64_t **out)
	__attribute__((nonnull));

/* request.c */
struct md_request {
	uint16_t type;
	ProtobufCMessage *msg; /* unpacked, validated; NULL only on failure */
};
/*
 * Unpack a request body of the given frame type and validate it (names, sizes, ranges).
 * Returns 0, or -ENOTSUP (unknown type), -EMSGSIZE (too large), -EBADMSG (not a valid
 * protobuf), -EINVAL (invalid field); why receives a one-line reason.
 */
int md_request_decode(uint16_t type, const uint8_t *body, size_t len, struct md_request *req,
		      char *why, size_t whylen) __attribute__((nonnull(4, 5)));
void md_request_free(struct md_request *req) __attribute__((nonnull));

/* fence.c: replies held until every up blockd has acknowledged an epoch */
struct st_conn;
struct md_held;
struct md_fence_ack {
	uint32_t node_id;
	uint64_t epoch;
};
struct md_fence {
	TAILQ_HEAD(, md_held) held;
	struct md_fence_ack *acks;
	size_t nacks, capacks;
};
void md_fence_init(struct md_fence *f) __attribute__((nonnull));
/* Node node_id has installed epoch (its MAP_WATCH says known_epoch = epoch). */
void md_fence_ack(struct md_fence *f, uint32_t node_id, uint64_t epoch) __attribute__((nonnull));
/* Hold a reply until epoch is acknowledged. Returns 0, or -ENOMEM (reply now instead). */
int md_fence_hold(struct md_fence *f, struct st_conn *c, uint16_t type, uint64_t req_id,
		  const ProtobufCMessage *msg, uint64_t epoch) __attribute__((nonnull));
/* Send every held reply whose epoch all up nodes acknowledged (or that timed out). */
void md_fence_release(struct md_fence *f, struct md_catalog *cat) __attribute__((nonnull));
void md_fence_conn_closed(struct md_fence *f, struct st_conn *c) __attribute__((nonnull));
void md_fence_free(struct md_fence *f) __attribute__((nonnull));

/* prwatch.c: PR_WATCH (pr_seq push) and PR_UPDATE replies held until every watcher saw them */
struct st_reactor;
struct md_prwatch;
/* hb_ms: a held watch is answered after this (0: 1000); ack_ms: a PR_UPDATE reply waits this
 * long for the watchers' acknowledgements before it closes the laggards (0: 5000). */
int md_prwatch_create(struct st_reactor *r, uint64_t hb_ms, uint64_t ack_ms,
		      struct md_prwatch **out) __attribute__((nonnull));
/* Arm the heartbeat/timeout timer (once the server is up). */
void md_prwatch_start(struct md_prwatch *pw) __attribute__((nonnull));
uint64_t md_prwatch_seq(const struct md_prwatch *pw) __attribute__((nonnull));
uint64_t md_prwatch_instance(const struct md_prwatch *pw) __attribute__((nonnull));
/* A PR_WATCH from c: records its acknowledgement, answers now or holds. Returns 0 or -ENOMEM. */
int md_prwatch_watch(struct md_prwatch *pw, struct st_conn *c, uint64_t req_id,
		     const Strata__Meta__PrWatchReq *r) __attribute__((nonnull));
/* A PR_UPDATE committed: pr_seq + 1, held watches answered. Returns the new seq. */
uint64_t md_prwatch_bump(struct md_prwatch *pw) __attribute__((nonnull));
/* Hold the reply to a PR_UPDATE that made seq until every watcher has seen it (it may be sent
 * before this returns). Returns 0, or -ENOMEM (the caller replies now). */
int md_prwatch_hold(struct md_prwatch *pw, struct st_conn *c, uint16_t type, uint64_t req_id,
		    const ProtobufCMessage *msg, uint64_t seq, uint64_t gateway)
	__attribute__((nonnull));
void md_prwatch_conn_closed(struct md_prwatch *pw, struct st_conn *c) __attribute__((nonnull));
/* Stop re-arming the timer (server stopping). */
void md_prwatch_stop(struct md_prwatch *pw);
/* After st_reactor_destroy(). */
void md_prwatch_free(struct md_prwatch *pw);

/* server.c */
struct md_server;
struct md_server_config {
	const char *listen;
	uint64_t down_out_s;
	uint64_t down_ms;
	uint64_t watch_timeout_ms;
	uint64_t pr_heartbeat_ms;   /* PR_WATCH heartbeat (0: 1000) */
	uint64_t pr_ack_timeout_ms; /* PR_UPDATE waits this long for watchers (0: 5000) */
};
int md_server_start(struct st_reactor *r, struct md_catalog *cat,
		    const struct md_server_config *cfg, struct md_server **out)
	__attribute__((nonnull));
int md_server_port(const struct md_server *s) __attribute__((nonnull));
/* Stop accepting (the reactor may still deliver callbacks); free only after the reactor is
 * destroyed. */
void md_server_stop(struct md_server *s);
void md_server_free(struct md_server *s);

/* map.c: a byte-string keyed hash map (open addressing) */
struct md_map {
	struct md_map_ent *ents;
	size_t cap, count, used;
};
void *md_map_get(const struct md_map *m, const void *key, size_t klen) __attribute__((nonnull(1)));
int md_map_put(struct md_map *m, const void *key, size_t klen, void *val)
	__attribute__((nonnull(1)));
void *md_map_del(struct md_map *m, const void *key, size_t klen) __attribute__((nonnull(1)));
/* Iterate: start with *pos = 0; returns NULL at the end. */
void *md_map_next(const struct md_map *m, size_t *pos) __attribute__((nonnull));
void md_map_free(struct md_map *m) __attribute__((nonnull));

/* ------------------------------------------------------------------------------------------ */
/* catalog.c: the catalog's state and the helpers shared by the files that implement it
 * (catalog.c, volumes.c, snapshots.c). Nothing outside those files touches these. */

struct md_counters {
	uint64_t epoch;
	uint32_t next_pool, next_node;
	uint64_t next_volume, next_layer, next_family;
	uint32_t full_ratio; /* md_set_full_ratio's (0: never set) */
};

struct md_catalog {
	struct rocksdb_t *db;
	struct rocksdb_options_t *opts;
	struct rocksdb_writeoptions_t *wo;
	struct rocksdb_readoptions_t *ro;
	char *dir;
	struct md_counters ctr;
	struct md_pool **pools;
	size_t npools;
	struct md_node **nodes;
	size_t nnodes;
	struct md_map volumes; /* be64 id -> md_volume */
	struct md_map vnames;  /* be32 pool id + name -> md_volume */
	struct md_map layers;  /* be64 id -> md_layer */
	struct md_map snaps;   /* be64 volume id + name -> md_layer (kind SNAP) */
	struct md_reclaim *reclaims;
	size_t nreclaims, cap_reclaims;
	char err[512];
	uint64_t min_free;   /* md_catalog_set_min_free */
	bool growing;        /* the request being served grows the catalog for a user */
	bool write_failed;   /* a RocksDB write failed: no more writes until a restart */
	char write_err[256]; /* its error */
	uint64_t warned_ms;  /* last reserve warning in the log */
};

uint64_t md_wall_now(void);
void md_be64(uint8_t *p, uint64_t v) __attribute__((nonnull));
/* Index keys: be32 pool id + name, be64 volume id + name. Return the key length. */
size_t md_vname_key(uint8_t *k, uint32_t pool_id, const char *name) __attribute__((nonnull));
size_t md_snap_key(uint8_t *k, uint64_t vol, const char *name) __attribute__((nonnull));
/* Copy a name (NULL: "") into a MD_NAME_MAX + 1 buffer. */
void md_copy_name(char *dst, const char *src) __attribute__((nonnull(1)));
/* Append p to a malloc'd pointer array. Returns 0 or -ENOMEM. */
int md_push_ptr(void ***arr, size_t *n, void *p) __attribute__((nonnull(1, 2)));

/* Records into a batch (see catalog.c for the keys). */
void md_batch_del(struct rocksdb_writebatch_t *b, char prefix, uint64_t id, size_t idlen)
	__attribute__((nonnull));
void md_batch_put_pool(struct rocksdb_writebatch_t *b, const struct md_pool *p)
	__attribute__((nonnull));
void md_batch_put_volume(struct rocksdb_writebatch_t *b, const struct md_volume *v)
	__attribute__((nonnull));
void md_batch_put_layer(struct rocksdb_writebatch_t *b, const struct md_layer *l)
	__attribute__((nonnull));

/* The in-memory tree and indexes. Index and link functions return 0 or -ENOMEM (-EUCLEAN:
 * the parent is missing). */
void md_remove_child(struct md_layer *parent, const struct md_layer *child)
	__attribute__((nonnull));
int md_index_volume(struct md_catalog *cat, struct md_volume *v) __attribute__((nonnull));
void md_unindex_volume(struct md_catalog *cat, struct md_volume *v) __attribute__((nonnull));
int md_index_layer(struct md_catalog *cat, struct md_layer *l) __attribute__((nonnull));
int md_link_layer(struct md_catalog *cat, struct md_layer *l) __attribute__((nonnull));
/* A new layer with the next id (not indexed, not linked), or NULL. */
struct md_layer *md_new_layer(struct md_catalog *cat, uint64_t family, uint64_t parent,
			      uint64_t volume, uint32_t kind) __attribute__((nonnull));
void md_free_layer(struct md_layer *l);
/* Record a dropped layer whose blocks blockd may free. Returns 0 or -ENOMEM. */
int md_add_reclaim(struct md_catalog *cat, struct rocksdb_writebatch_t *b, const struct md_layer *l,
		   uint32_t pool_id) __attribute__((nonnull));
/* Drop a layer (and hidden parents it leaves childless) from memory and, in b, from disk. */
void md_drop_layer(struct md_catalog *cat, struct rocksdb_writebatch_t *b, struct md_layer *l,
		   uint32_t pool_id) __attribute__((nonnull(1, 2)));

/* volumes.c */
/* The pool named pool, failing with a message. Returns 0, -EINVAL or -ENOENT. */
int md_find_pool(struct md_catalog *cat, const char *pool, const struct md_pool **out)
	__attribute__((nonnull(1, 3)));
/* Create volume + head layer in memory; the caller adds them to a batch. Returns 0 or -errno. */
int md_make_volume(struct md_catalog *cat, const struct md_pool *p, const char *name, uint64_t size,
		   uint64_t family, uint64_t parent_layer, struct md_volume **out,
		   struct md_layer **head_out) __attribute__((nonnull));
/* -EROFS with a message if v is a template, else 0. */
int md_volume_writable(struct md_catalog *cat, const struct md_volume *v, const char *what)
	__attribute__((nonnull));
/* Fail with -EBUSY naming the dependents of (v, layer), or return 0 if there are none. */
int md_refuse_if_dependents(struct md_catalog *cat, const struct md_volume *v,
			    const struct md_layer *layer, const char *what)
	__attribute__((nonnull(1, 2, 4)));

#endif
