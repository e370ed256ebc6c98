/*
 * The in-memory PG log (pglog.h): runs of versions and the last version of each object.
 */
#include "pglog.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/placement.h"

static uint32_t slot_of(uint64_t family, uint64_t object, uint32_t cap)
{
	return (uint32_t)(st_hash64(st_hash64(family) ^ object) & (cap - 1));
}

void bd_pglog_free(struct bd_pglog *l)
{
	free(l->runs);
	free(l->objs);
	*l = (struct bd_pglog){.base = l->base};
}

void bd_pglog_reset(struct bd_pglog *l, uint64_t base)
{
	bd_pglog_free(l);
	l->base = base;
}

uint64_t bd_pglog_last(const struct bd_pglog *l)
{
	return l->nruns ? l->runs[l->nruns - 1].last : l->base;
}

static struct bd_pglog_obj *find(struct bd_pglog_obj *t, uint32_t cap, uint64_t family,
				 uint64_t object)
{
	uint32_t i = slot_of(family, object, cap);
	while (t[i].version && (t[i].family != family || t[i].object != object)) {
		i = (i + 1) & (cap - 1);
	}
	return &t[i];
}

/* Double the table (or make the first one). 0 or -ENOMEM. */
static int grow(struct bd_pglog *l)
{
	uint32_t cap = l->objs_cap ? 2 * l->objs_cap : 64;
	struct bd_pglog_obj *t = calloc(cap, sizeof(*t));
	if (!t) {
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < l->objs_cap; i++) {
		if (l->objs[i].version) {
			*find(t, cap, l->objs[i].family, l->objs[i].object) = l->objs[i];
		}
	}
	free(l->objs);
	l->objs = t;
	l->objs_cap = cap;
	return 0;
}

/* Note v in the runs. 0, or -ENOSPC (too many runs) / -ENOMEM. */
static int add_version(struct bd_pglog *l, uint64_t v)
{
	if (l->nruns && l->runs[l->nruns - 1].last + 1 == v) {
		l->runs[l->nruns - 1].last = v;
		return 0;
	}
	if (l->nruns == BD_PG_LOG_RUNS) {
		return -ENOSPC;
	}
	if (l->nruns == l->runs_cap) {
		uint32_t cap = l->runs_cap ? 2 * l->runs_cap : 4;
		struct bd_pglog_run *r = realloc(l->runs, cap * sizeof(*r));
		if (!r) {
			return -ENOMEM;
		}
		l->runs = r;
		l->runs_cap = cap;
	}
	l->runs[l->nruns++] = (struct bd_pglog_run){v, v};
	return 0;
}

/* Note (family, object) at v. 0, or -ENOSPC (too many objects) / -ENOMEM. */
static int add_object(struct bd_pglog *l, uint64_t v, uint64_t family, uint64_t object)
{
	if (l->objs_cap) {
		struct bd_pglog_obj *o = find(l->objs, l->objs_cap, family, object);
		if (o->version) {
			o->version = v;
			return 0;
		}
	}
	if (l->nobjs == BD_PG_LOG_OBJECTS) {
		return -ENOSPC;
	}
	if (2 * (l->nobjs + 1) > l->objs_cap) { /* keep the table at most half full */
		int rc = grow(l);
		if (rc) {
			return rc;
		}
	}
	*find(l->objs, l->objs_cap, family, object) =
		(struct bd_pglog_obj){.family = family, .object = object, .version = v};
	l->nobjs++;
	return 0;
}

void bd_pglog_append(struct bd_pglog *l, uint64_t prev, uint64_t v, uint64_t family,
		     uint64_t object)
{
	if (prev != bd_pglog_last(l) || v <= prev) {
		bd_pglog_reset(l, prev); /* a gap: the log covers what follows prev only */
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		if (add_version(l, v) == 0 && add_object(l, v, family, object) == 0) {
			return;
		}
		/* Full: start again where v was applied. */
		bd_pglog_reset(l, prev);
	}
	bd_pglog_reset(l, v); /* out of memory: v is the new start */
}

bool bd_pglog_covers(const struct bd_pglog *l, uint64_t since)
{
	if (since == l->base) {
		return true;
	}
	for (uint32_t i = 0; i < l->nruns; i++) {
		if (since >= l->runs[i].first && since <= l->runs[i].last) {
			return true;
		}
	}
	return false;
}

long bd_pglog_since(const struct bd_pglog *l, uint64_t since, uint64_t **out)
{
	*out = NULL;
	if (!bd_pglog_covers(l, since)) {
		return -ENOENT;
	}
	uint64_t *v = malloc(2 * sizeof(*v) * (l->nobjs ? l->nobjs : 1));
	if (!v) {
		return -ENOMEM;
	}
	long n = 0;
	for (uint32_t i = 0; i < l->objs_cap; i++) {
		if (l->objs[i].version > since) {
			v[2 * n] = l->objs[i].family;
			v[2 * n + 1] = l->objs[i].object;
			n++;
		}
	}
	*out = v;
	return n;
}
