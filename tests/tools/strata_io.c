/*
 * strata-io: a write-and-verify workload through libstrata, for integration tests.
 *
 *   strata-io --meta A --volume pool/vol --seconds 10 [--qd 16] [--span 64M] [--seed N]
 *             [--state FILE] [--flush-every MS]          run: random writes + verified reads
 *             (--millis N instead of --seconds for runs shorter than a second)
 *   strata-io --meta A --volume pool/vol --check FILE    verify a saved state
 *
 * Every 4 KiB block written carries (seed, offset, generation) and a fill derived from them, so
 * a read can tell exactly which acknowledged write it should hold. The shadow table records the
 * last acknowledged generation of each block; blocks with a write in flight are not read. With
 * --state the shadow is saved after each successful flush, so a later --check (after a crash
 * and restart) verifies everything acknowledged before the last flush. Exit 0 means no error
 * and no mismatch.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/flags.h"
#include "common/placement.h"
#include "strata/strata.h"

#define BS 4096u

struct shadow {
	uint64_t nblocks;
	uint32_t *gen;  /* last acknowledged generation, 0 = never written (reads as zeros) */
	uint32_t *pend; /* generation in flight, 0 = none */
	uint8_t *busy;  /* a request touches this block */
};

struct slot {
	struct ctx *x;
	int write;
	uint64_t blk, nblk;
	uint32_t gen;
	uint8_t *buf;
};

struct ctx {
	strata_volume *v;
	struct shadow sh;
	uint64_t seed;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int inflight;
	uint64_t writes, reads, errors, mismatches, flushes;
	uint32_t next_gen;
};

static void fill(uint8_t *p, uint64_t seed, uint64_t blk, uint32_t gen)
{
	uint64_t *w = (uint64_t *)p;
	w[0] = seed;
	w[1] = blk;
	w[2] = gen;
	uint64_t h = st_hash64(seed ^ (blk << 20) ^ gen);
	for (size_t i = 3; i < BS / 8; i++) {
		h = st_hash64(h + i);
		w[i] = h;
	}
}

/* 0 if p holds what generation gen of blk should hold (gen 0: zeros). */
static int check_block(const uint8_t *p, uint64_t seed, uint64_t blk, uint32_t gen)
{
	static __thread uint8_t want[BS];
	if (gen == 0) {
		for (size_t i = 0; i < BS; i++) {
			if (p[i] != 0) {
				return -1;
			}
		}
		return 0;
	}
	fill(want, seed, blk, gen);
	return memcmp(p, want, BS) ? -1 : 0;
}

static void describe(const uint8_t *p, uint64_t blk, uint32_t gen)
{
	static int printed;
	const uint64_t *w = (const uint64_t *)p;
	if (printed++ >= 20) {
		return; /* the summary line has the count */
	}
	fprintf(stderr,
		"strata-io: MISMATCH block %" PRIu64 ": want gen %u, found seed %" PRIx64
		" block %" PRIu64 " gen %" PRIu64 "\n",
		blk, gen, w[0], w[1], w[2]);
}

static void io_done(void *arg, int err)
{
	struct slot *s = arg;
	struct ctx *x = s->x;

	pthread_mutex_lock(&x->lock);
	if (err < 0) {
		fprintf(stderr, "strata-io: %s at block %" PRIu64 ": %s\n",
			s->write ? "write" : "read", s->blk, strerror(-err));
		x->errors++;
		for (uint64_t b = s->blk; b < s->blk + s->nblk; b++) {
			x->sh.pend[b] = 0;
		}
	} else if (s->write) {
		x->writes++;
		for (uint64_t b = s->blk; b < s->blk + s->nblk; b++) {
			x->sh.gen[b] = s->gen;
			x->sh.pend[b] = 0;
		}
	} else {
		x->reads++;
		for (uint64_t b = s->blk; b < s->blk + s->nblk; b++) {
			const uint8_t *p = s->buf + (b - s->blk) * BS;
			if (check_block(p, x->seed, b, x->sh.gen[b]) != 0) {
				describe(p, b, x->sh.gen[b]);
				x->mismatches++;
			}
		}
	}
	for (uint64_t b = s->blk; b < s->blk + s->nblk; b++) {
		x->sh.busy[b] = 0;
	}
	free(s->buf);
	free(s);
	x->inflight--;
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
}

static void flush_done(void *arg, int err)
{
	struct ctx *x = arg;
	pthread_mutex_lock(&x->lock);
	if (err < 0) {
		fprintf(stderr, "strata-io: flush: %s\n", strerror(-err));
		x->errors++;
	}
	x->flushes++;
	x->inflight--;
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int save_state(struct ctx *x, const char *path)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (f == NULL) {
		return -errno;
	}
	fwrite(&x->seed, sizeof(x->seed), 1, f);
	fwrite(&x->sh.nblocks, sizeof(x->sh.nblocks), 1, f);
	fwrite(x->sh.gen, sizeof(uint32_t), x->sh.nblocks, f);
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		return -errno;
	}
	return 0;
}

/* Wait until nothing is in flight (called with the lock held). */
static void drain(struct ctx *x)
{
	while (x->inflight > 0) {
		pthread_cond_wait(&x->cond, &x->lock);
	}
}

/* Synchronous flush with the lock held; the shadow at this instant is what it covers. */
static int flush_and_save(struct ctx *x, const char *state)
{
	uint32_t *snap = NULL;
	if (state != NULL) {
		snap = malloc(x->sh.nblocks * sizeof(uint32_t));
		memcpy(snap, x->sh.gen, x->sh.nblocks * sizeof(uint32_t));
	}
	uint64_t errs = x->errors;
	x->inflight++;
	int rc = strata_aio_flush(x->v, flush_done, x);
	if (rc < 0) {
		x->inflight--;
		x->errors++;
		free(snap);
		return rc;
	}
	drain(x); /* only the flush is in flight */
	if (state != NULL && x->errors == errs) {
		uint32_t *cur = x->sh.gen;
		x->sh.gen = snap;
		rc = save_state(x, state);
		x->sh.gen = cur;
	}
	free(snap);
	return x->errors == errs ? rc : -EIO;
}

static int run(struct ctx *x, int64_t run_ms, int qd, int flush_ms, const char *state)
{
	uint64_t end = now_ms() + (uint64_t)run_ms, last_flush = now_ms();
	uint64_t rng = x->seed;

	pthread_mutex_lock(&x->lock);
	while (now_ms() < end) {
		while (x->inflight >= qd) {
			pthread_cond_wait(&x->cond, &x->lock);
		}
		if (flush_ms > 0 && now_ms() - last_flush >= (uint64_t)flush_ms) {
			drain(x);
			flush_and_save(x, state);
			last_flush = now_ms();
			continue;
		}
		rng = st_hash64(rng);
		uint64_t nblk = 1 + (rng >> 60) % 16; /* 4 KiB .. 64 KiB */
		uint64_t blk = (rng >> 8) % x->sh.nblocks;
		if (blk + nblk > x->sh.nblocks) {
			nblk = x->sh.nblocks - blk;
		}
		bool free_range = true;
		for (uint64_t b = blk; b < blk + nblk; b++) {
			if (x->sh.busy[b]) {
				free_range = false;
				break;
			}
		}
		if (!free_range) {
			pthread_cond_wait(&x->cond, &x->lock);
			continue;
		}
		struct slot *s = calloc(1, sizeof(*s));
		s->x = x;
		s->write = (rng & 3) != 0; /* 3/4 writes */
		s->blk = blk;
		s->nblk = nblk;
		s->buf = aligned_alloc(BS, nblk * BS);
		for (uint64_t b = blk; b < blk + nblk; b++) {
			x->sh.busy[b] = 1;
		}
		int rc;
		x->inflight++;
		if (s->write) {
			s->gen = ++x->next_gen;
			for (uint64_t b = 0; b < nblk; b++) {
				fill(s->buf + b * BS, x->seed, blk + b, s->gen);
				x->sh.pend[blk + b] = s->gen;
			}
			pthread_mutex_unlock(&x->lock);
			rc = strata_aio_write(x->v, blk * BS, nblk * BS, s->buf, 0, io_done, s);
		} else {
			pthread_mutex_unlock(&x->lock);
			rc = strata_aio_read(x->v, blk * BS, nblk * BS, s->buf, io_done, s);
		}
		pthread_mutex_lock(&x->lock);
		if (rc < 0) {
			fprintf(stderr, "strata-io: submit: %s\n", strerror(-rc));
			x->errors++;
			x->inflight--;
			for (uint64_t b = blk; b < blk + nblk; b++) {
				x->sh.busy[b] = 0;
			}
			free(s->buf);
			free(s);
		}
	}
	drain(x);
	flush_and_save(x, state);
	pthread_mutex_unlock(&x->lock);
	return 0;
}

/*
 * After a crash a block may hold the generation acknowledged before the last flush, or any
 * later write that reached it; never an older one and never a torn mix. So in --check mode a
 * block passes if it is intact (its header names this seed and block, and the fill matches that
 * generation) with a generation at least the flushed one.
 */
static int check_block_crash(const uint8_t *p, uint64_t seed, uint64_t blk, uint32_t gen)
{
	const uint64_t *w = (const uint64_t *)p;
	if (check_block(p, seed, blk, gen) == 0) {
		return 0;
	}
	if (w[0] != seed || w[1] != blk || w[2] < gen || w[2] > UINT32_MAX) {
		return -1;
	}
	return check_block(p, seed, blk, (uint32_t)w[2]);
}

/* Read the whole span back and compare with the shadow. */
static int verify_all(struct ctx *x, bool after_crash)
{
	const uint64_t chunk = 256; /* blocks per read: 1 MiB */
	uint8_t *buf = aligned_alloc(BS, chunk * BS);
	for (uint64_t b = 0; b < x->sh.nblocks; b += chunk) {
		uint64_t n = x->sh.nblocks - b < chunk ? x->sh.nblocks - b : chunk;
		int rc = strata_read(x->v, b * BS, n * BS, buf);
		if (rc < 0) {
			fprintf(stderr,
				"strata-io: verify read at block %" PRIu64 ": %s; stopping\n", b,
				strerror(-rc));
			x->errors++;
			break; /* each failed read has already retried for a minute */
		}
		for (uint64_t i = 0; i < n; i++) {
			int bad = after_crash ? check_block_crash(buf + i * BS, x->seed, b + i,
								  x->sh.gen[b + i])
					      : check_block(buf + i * BS, x->seed, b + i,
							    x->sh.gen[b + i]);
			if (bad) {
				describe(buf + i * BS, b + i, x->sh.gen[b + i]);
				x->mismatches++;
			}
		}
	}
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	const char *meta = NULL, *vol = NULL, *state = NULL, *check = NULL;
	int64_t seconds = 5, millis = 0, qd = 16, flush_ms = 500, seed = 1;
	uint64_t span = 64ull << 20;
	bool quiet = false, no_end_check = false;
	struct st_flag flags[] = {
		{"meta", ST_FLAG_STRING, &meta, "HOST:PORT", "strata-meta address"},
		{"volume", ST_FLAG_STRING, &vol, "POOL/VOL", "volume to exercise"},
		{"seconds", ST_FLAG_INT, &seconds, "N", "run time (default 5)"},
		{"millis", ST_FLAG_INT, &millis, "MS", "run time in milliseconds, instead"},
		{"qd", ST_FLAG_INT, &qd, "N", "requests in flight (default 16)"},
		{"span", ST_FLAG_SIZE, &span, "SIZE",
		 "bytes from offset 0 to exercise (default 64M)"},
		{"seed", ST_FLAG_INT, &seed, "N", "pattern seed (default 1)"},
		{"flush-every", ST_FLAG_INT, &flush_ms, "MS", "flush period (default 500)"},
		{"state", ST_FLAG_STRING, &state, "FILE", "save the shadow after each flush"},
		{"check", ST_FLAG_STRING, &check, "FILE", "only verify a saved shadow"},
		{"quiet", ST_FLAG_BOOL, &quiet, NULL, "no summary line"},
		{"no-end-check", ST_FLAG_BOOL, &no_end_check, NULL,
		 "after a run, exit without reading everything back (tests that kill a node "
		 "right after the writes)"},
		{NULL, 0, NULL, NULL, NULL},
	};
	int npos;
	int rc = st_flags_parse("strata-io --volume POOL/VOL [flags]", flags, argc, argv, &npos);
	if (rc != 0) {
		return rc > 0 ? 0 : 2;
	}
	if (vol == NULL || qd < 1 || seconds < 0 || millis < 0 || span < BS) {
		fprintf(stderr, "strata-io: --volume is required; --qd >= 1; --span >= 4K\n");
		return 2;
	}
	struct ctx x = {.seed = (uint64_t)seed};
	pthread_mutex_init(&x.lock, NULL);
	pthread_cond_init(&x.cond, NULL);

	if (check != NULL) {
		FILE *f = fopen(check, "r");
		if (f == NULL || fread(&x.seed, sizeof(x.seed), 1, f) != 1 ||
		    fread(&x.sh.nblocks, sizeof(x.sh.nblocks), 1, f) != 1) {
			fprintf(stderr, "strata-io: cannot read state %s\n", check);
			return 2;
		}
		x.sh.gen = calloc(x.sh.nblocks, sizeof(uint32_t));
		if (fread(x.sh.gen, sizeof(uint32_t), x.sh.nblocks, f) != x.sh.nblocks) {
			fprintf(stderr, "strata-io: truncated state %s\n", check);
			return 2;
		}
		fclose(f);
	} else {
		x.sh.nblocks = span / BS;
		x.sh.gen = calloc(x.sh.nblocks, sizeof(uint32_t));
	}
	x.sh.pend = calloc(x.sh.nblocks, sizeof(uint32_t));
	x.sh.busy = calloc(x.sh.nblocks, 1);

	strata_cluster *c;
	rc = strata_connect(meta, &c);
	if (rc < 0) {
		fprintf(stderr, "strata-io: connect: %s\n", strerror(-rc));
		return 1;
	}
	rc = strata_open(c, vol, 0, &x.v);
	if (rc < 0) {
		fprintf(stderr, "strata-io: open %s: %s\n", vol, strerror(-rc));
		strata_disconnect(c);
		return 1;
	}
	if (x.sh.nblocks * BS > strata_size(x.v)) {
		fprintf(stderr, "strata-io: span is larger than the volume\n");
		return 2;
	}
	if (check == NULL) {
		run(&x, millis > 0 ? millis : seconds * 1000, (int)qd, (int)flush_ms, state);
	}
	if (check != NULL || !no_end_check) {
		verify_all(&x, check != NULL);
	}
	strata_close(x.v);
	strata_disconnect(c);
	if (!quiet) {
		printf("strata-io: %" PRIu64 " writes, %" PRIu64 " reads, %" PRIu64
		       " flushes, %" PRIu64 " errors, %" PRIu64 " mismatches\n",
		       x.writes, x.reads, x.flushes, x.errors, x.mismatches);
	}
	return x.errors == 0 && x.mismatches == 0 ? 0 : 1;
}
