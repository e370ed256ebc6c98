/*
 * libstrata internals.
 *
 *   strata_cluster --owns--> reactor thread (io_uring), meta st_client (MAP_WATCH long-poll)
 *        |                   struct sc_map (current cluster map, swapped whole on update)
 *        |                   nodes[id] -> st_client to that blockd (connected lazily)
 *        +--> strata_volume (pool, family, layer, ancestry, dirty-node set)
 *                  +--> struct sc_req (one user call) --split--> struct sc_sub (one object)
 *
 * Threading: the map, node clients, requests and dirty sets belong to the reactor thread (the
 * cluster's I/O thread, the strata_poll() caller, or the daemon thread whose reactor it
 * shares). User threads enter through st_reactor_post(), which on the reactor thread itself
 * is a lock-free local queue. The one exception is c->map_lock, which lets
 * user threads (strata_open, strata_map_epoch) read pool parameters from the current map.
 */
#ifndef STRATA_CLIENT_INTERNAL_H
#define STRATA_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/placement.h"
#include "common/reactor.h"
#include "common/rpc.h"
#include "strata/strata.h"
#include <sys/queue.h>

#define SC_MAX_NODES      1024 /* node ids index the client table */
#define SC_MAX_ANCESTRY   256
#define SC_RETRY_MIN_MS   50
#define SC_RETRY_MAX_MS   1000
#define SC_RETRY_LIMIT_MS 60000 /* give up on a request after this long without success */
#define SC_BLOCK          4096u

struct sc_pool {
	uint32_t id;
	uint32_t replicas;
	uint64_t object_size;
	uint32_t pg_count;
};

struct sc_map {
	uint64_t epoch;
	size_t n_nodes;
	struct st_place_node *place; /* n_nodes */
	char (*addr)[64];            /* n_nodes */
	size_t n_pools;
	struct sc_pool *pools;
};

/* Who runs the reactor: the cluster's own I/O thread, the caller through strata_poll(), or
 * a daemon's reactor that libstrata shares (strata_connect_reactor). */
enum sc_mode {
	SC_MODE_THREAD,
	SC_MODE_POLL,
	SC_MODE_EXTERNAL,
};

struct strata_cluster {
	char meta_addr[128];
	struct st_reactor *r;
	enum sc_mode mode;
	pthread_t thread;
	bool thread_started;
	int timers; /* armed libstrata timers (reactor thread): disconnect waits them out */

	pthread_mutex_t map_lock; /* guards `map` pointer swaps against user-thread readers */
	struct sc_map *map;
	atomic_uint_fast64_t epoch;

	struct st_client *meta; /* reactor thread only */
	bool watch_armed;
	bool map_fetching;
	struct st_io meta_retry_io;
	bool meta_retry_armed;
	bool stopping;

	struct st_client *nodes[SC_MAX_NODES];
	uint64_t client_id;
	uint64_t seq; /* reactor thread only */
	size_t live;  /* requests between req_start and req_finish: gates the reactor's spin */
};

struct strata_volume {
	strata_cluster *c;
	char spec[300];
	uint32_t pool_id;
	uint64_t volume_id;
	uint64_t family;
	uint64_t layer;
	uint64_t *ancestry;
	size_t n_ancestry;
	_Atomic uint64_t size;
	uint64_t object_size;
	bool read_only;
	bool is_snapshot; /* opened as pool/vol@snap */
	bool open_rdonly; /* STRATA_OPEN_RDONLY: stays read-only whatever meta says */
	/* The head layer is only valid for the map epoch it was resolved at: a snapshot, rollback,
	 * template mark or resize moves the epoch, and blockd refuses requests from older epochs.
	 * Before a request is sent at a newer epoch the volume is re-resolved at meta (reactor
	 * thread only). */
	uint64_t resolved_epoch;
	uint64_t resolving_epoch; /* 0: no VOLUME_OPEN in flight */
	bool gone;                /* deleted or replaced under us: -ENOENT from now on */
	TAILQ_HEAD(, sc_sub) waiting;
	struct st_io resolve_timer;
	/* Nodes holding writes of this process not yet flushed (reactor thread only). */
	uint8_t dirty[SC_MAX_NODES / 8];
	atomic_int inflight;
	void (*resize_fn)(void *, uint64_t);
	void *resize_arg;
};

enum sc_op {
	SC_READ,
	SC_WRITE,
	SC_ZERO,
	SC_TRIM,
	SC_FLUSH,
	SC_STATUS,
	SC_CAW,
};

struct sc_req {
	strata_volume *v;
	enum sc_op op;
	uint64_t off;
	size_t len;
	void *rbuf;       /* READ */
	const void *wbuf; /* WRITE, CAW data */
	const void *cmp;  /* CAW */
	unsigned flags;
	strata_cb cb;
	void *cb_arg;
	int pending;
	int err;
	struct strata_extent *ext; /* STATUS */
	size_t ext_max;
	size_t *ext_n;
	uint64_t *miscompare;
	struct sc_sub *subs;
	size_t nsubs;
};

struct sc_sub {
	struct sc_req *req;
	uint64_t obj;
	uint64_t obj_off;  /* aligned start within the object */
	uint32_t len;      /* aligned length */
	uint32_t skip;     /* READ: bytes of the aligned range before the user's start */
	uint32_t copy_len; /* READ: user bytes in this sub */
	uint64_t buf_off;  /* offset of this sub's data in the user buffer */
	uint32_t node_id;  /* FLUSH: the node; others: the primary last used */
	uint64_t seq;
	uint64_t started_ms;
	unsigned attempts;
	void *bounce; /* CAW: cmp | data */
	struct st_io timer;
	int last_err;
	TAILQ_ENTRY(sc_sub) wait_link; /* parked on the volume until it is re-resolved */
	struct strata_extent *sext;    /* STATUS results, object-relative converted to volume */
	size_t sn;
};

/* cluster.c */
int sc_meta_call(strata_cluster *c, uint16_t type, const ProtobufCMessage *msg,
		 struct st_frame *reply, char *err, size_t errlen) __attribute__((nonnull(1, 4)));
const struct sc_pool *sc_map_pool(const struct sc_map *m, uint32_t pool_id);
struct st_client *sc_node_client(strata_cluster *c, uint32_t node_id);
void sc_node_failed(strata_cluster *c, uint32_t node_id);
void sc_map_refresh(strata_cluster *c);
/* Returns the primary's node id for (pool, family, obj) at the current map, or -EAGAIN. */
int sc_primary(strata_cluster *c, uint32_t pool_id, uint64_t family, uint64_t obj,
	       uint32_t *node_id);

/* resolve.c */
/* True if v may be used at the current map epoch; otherwise parks s and starts a re-resolve. */
bool sc_volume_ready(strata_volume *v, struct sc_sub *s) __attribute__((nonnull));
struct st_client *sc_meta_client(strata_cluster *c) __attribute__((nonnull));

/* io.c */
void sc_sub_resend(struct sc_sub *s) __attribute__((nonnull));
void sc_sub_fail(struct sc_sub *s, int err) __attribute__((nonnull));
int sc_submit(struct sc_req *req) __attribute__((nonnull));

#endif
