/*
 * The in-memory PG log: which objects of a PG changed after a given version, so that a member
 * that missed writes copies those objects only (log recovery) instead of every object of the
 * PG (backfill).
 *
 *   base ---- runs of versions applied since base (consecutive numbers) ----> last
 *   objects: (family, object) -> the last version that mutated it, for every object mutated
 *            since base (open addressing, grows to BD_PG_LOG_OBJECTS)
 *
 * A version is `epoch << 32 | n`, and the one primary of an epoch numbers its mutations n, n+1,
 * ..., so a version this node applied lies in one of the runs. A puller's version that is base
 * or lies in a run is a point of this node's history, and the objects whose last version is
 * after it are exactly what the puller lacks. A version that is neither (older than base, or
 * one this node never had: a diverged member) needs a backfill.
 *
 * The log costs one entry per object touched, not one per mutation: a node that was down for
 * minutes under load still catches up from it (the ring of the last 512 mutations per PG it
 * replaces was outrun in about a second at QD32). When it would grow past BD_PG_LOG_OBJECTS
 * objects or BD_PG_LOG_RUNS runs it starts again at the current version.
 *
 * Not persisted: a restarted node's log starts at its stored version. Reactor thread only.
 */
#ifndef STRATA_BLOCKD_PGLOG_H
#define STRATA_BLOCKD_PGLOG_H

#include <stdbool.h>
#include <stdint.h>

#define BD_PG_LOG_OBJECTS 16384u /* objects remembered per PG */
#define BD_PG_LOG_RUNS    256u   /* runs of consecutive versions per PG */

struct bd_pglog_run {
	uint64_t first, last;
};

struct bd_pglog_obj {
	uint64_t family, object;
	uint64_t version; /* 0: empty slot */
};

struct bd_pglog {
	uint64_t base; /* the version the log starts after */
	struct bd_pglog_run *runs;
	uint32_t nruns, runs_cap;
	struct bd_pglog_obj *objs;
	uint32_t nobjs, objs_cap; /* objs_cap: 0 or a power of two */
};

/* Start empty at version `base` (also frees what the log held). */
void bd_pglog_reset(struct bd_pglog *l, uint64_t base) __attribute__((nonnull));
void bd_pglog_free(struct bd_pglog *l) __attribute__((nonnull));
/* The last version the log knows: base or the end of the last run. */
uint64_t bd_pglog_last(const struct bd_pglog *l) __attribute__((nonnull));
/* Record a mutation of (family, object) at version v, which follows bd_pglog_last(l) in this
 * node's history. A v that does not follow it makes the log start again at `prev`, the version
 * v was applied on (its caller's PG version). Out of memory also starts it again, at v. */
void bd_pglog_append(struct bd_pglog *l, uint64_t prev, uint64_t v, uint64_t family,
		     uint64_t object) __attribute__((nonnull));
/* Is `since` a point of the history the log covers (base, or a version in a run)? */
bool bd_pglog_covers(const struct bd_pglog *l, uint64_t since) __attribute__((nonnull));
/* The objects changed after `since` as (family, object) pairs in *out (malloc'ed, free it),
 * in no particular order, each once. Returns how many, -ENOENT if the log does not cover
 * since (a backfill is needed), or -ENOMEM. */
long bd_pglog_since(const struct bd_pglog *l, uint64_t since, uint64_t **out)
	__attribute__((nonnull));

#endif
