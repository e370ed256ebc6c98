/*
 * The workload engine: N job threads, each with its own connection, its own disjoint slice of
 * the region and up to qd I/Os in flight; the main thread ticks once a second to collect
 * per-second figures (and print the progress line).
 *
 *   region [offset, offset+span)  ->  job 0 | job 1 | ... | job N-1   (contiguous slices)
 *
 * Slices are disjoint so that --verify needs no locking: each job alone writes its blocks and
 * remembers, per block, the generation it last wrote. Within a job, a block is never in flight
 * twice (random picks that collide are redrawn), so a read always knows what it must find.
 *
 * Verify layout: every 4 KiB sector of a written block starts with a header (magic, run seed,
 * byte offset, generation) followed by a pattern generated from those, so misdirected,
 * stale, torn or foreign sectors are all caught. When the workload reads, the region is first
 * filled (generation 1); every read is checked; after the timed phase every block of the
 * region is read back and checked once more.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define VERIFY_SECTOR 4096u
#define VERIFY_MAGIC  0x5354524142454e43ull /* "STRABENC" */
#define MAX_REPORTED  10

struct vhdr {
	uint64_t magic;
	uint64_t seed;
	uint64_t offset;
	uint32_t gen;
	uint32_t pad;
};
_Static_assert(sizeof(struct vhdr) == 32, "verify header layout");

struct job {
	int id;
	const struct bench_opts *o;
	const char *uri;
	struct bench_conn *conn;
	pthread_t thread;
	uint64_t lo, nblocks; /* slice: first byte, block count */
	uint64_t quota;       /* bytes to issue this phase (0: time-based) */
	uint64_t issued;
	uint64_t cursor; /* sequential: next block */
	uint64_t rng;
	uint32_t *gen; /* verify: per block of the slice, 0 = unknown */
	enum bench_rw rw;
	bool check; /* verify reads in this phase */
	struct bench_io *ios;
	uint8_t *bufs;
	int *free_slots, nfree;
	/* Totals (job thread only until joined). */
	struct bench_hist hist[2], snap_hist;
	uint64_t ios_done[2], bytes_done[2];
	uint64_t errors, verified, mismatches;
	/* The current tick, shared with the main thread under tick_lock. */
	pthread_mutex_t tick_lock;
	struct bench_hist tick_hist;
	uint64_t tick_ios, tick_bytes;
	uint64_t t_start, t_end;
	int status; /* negative errno if the job died */
	char err[256];
};

struct run {
	const struct bench_opts *o;
	struct job *jobs;
	_Atomic bool stop;
	_Atomic int running;
	_Atomic uint64_t reported; /* mismatches/errors printed, shared cap */
};

static struct run *g_run;

const char *bench_rw_name(enum bench_rw rw)
{
	static const char *const names[] = {"read", "write", "randread", "randwrite", "randrw"};
	return names[rw];
}

int bench_rw_parse(const char *s, enum bench_rw *out)
{
	for (int i = BENCH_READ; i <= BENCH_RANDRW; i++) {
		if (strcmp(s, bench_rw_name((enum bench_rw)i)) == 0) {
			*out = (enum bench_rw)i;
			return 0;
		}
	}
	return -EINVAL;
}

void bench_opts_default(struct bench_opts *o)
{
	*o = (struct bench_opts){
		.rw = BENCH_RANDREAD,
		.rwmix = 50,
		.bs = 4096,
		.qd = 1,
		.jobs = 1,
		.time_s = 10,
		.progress = true,
		.label = "",
	};
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static uint64_t mix(uint64_t a, uint64_t b)
{
	uint64_t x = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull);
	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	return (x ^ (x >> 29)) | 1;
}

static void fill_sector(uint8_t *p, uint64_t seed, uint64_t off, uint32_t gen)
{
	struct vhdr h = {.magic = VERIFY_MAGIC, .seed = seed, .offset = off, .gen = gen};
	memcpy(p, &h, sizeof(h));
	uint64_t s = mix(seed ^ off, gen);
	for (size_t i = sizeof(h); i < VERIFY_SECTOR; i += 8) {
		uint64_t v = xorshift(&s);
		memcpy(p + i, &v, 8);
	}
}

static void fill_block(const struct job *j, struct bench_io *io)
{
	for (uint32_t s = 0; s < io->len; s += VERIFY_SECTOR) {
		fill_sector(io->buf + s, j->o->seed, io->off + s, io->gen);
	}
}

/* Check one read block; counts and reports mismatching sectors. */
static void check_block(struct job *j, struct bench_io *io)
{
	uint8_t want[VERIFY_SECTOR];
	for (uint32_t s = 0; s < io->len; s += VERIFY_SECTOR) {
		uint64_t off = io->off + s;
		fill_sector(want, j->o->seed, off, io->gen);
		j->verified++;
		if (memcmp(want, io->buf + s, VERIFY_SECTOR) == 0) {
			continue;
		}
		j->mismatches++;
		if (atomic_fetch_add(&g_run->reported, 1) < MAX_REPORTED) {
			struct vhdr h;
			memcpy(&h, io->buf + s, sizeof(h));
			size_t first = 0;
			while (first < VERIFY_SECTOR && want[first] == io->buf[s + first]) {
				first++;
			}
			if (h.magic != VERIFY_MAGIC || h.seed != j->o->seed) {
				fprintf(stderr,
					"strata-bench: verify: sector at %" PRIu64
					" holds no block of this run (expected generation %u)\n",
					off, io->gen);
			} else {
				fprintf(stderr,
					"strata-bench: verify: sector at %" PRIu64
					": expected generation %u, found offset %" PRIu64
					" generation %u, first wrong byte %zu\n",
					off, io->gen, h.offset, h.gen, first);
			}
		}
	}
}

static bool in_flight(const struct job *j, uint64_t off)
{
	for (int i = 0; i < j->o->qd; i++) {
		const struct bench_io *io = &j->ios[i];
		if (io->slot >= 0 && io->off == off && io->len != 0) {
			return true;
		}
	}
	return false;
}

/* Choose the next I/O of this job into io; false if the phase has nothing more to issue. */
/* The job issues nothing more: its quota is issued, or the run was told to stop. */
static bool run_over(const struct job *j)
{
	return (j->quota != 0 && j->issued >= j->quota) ||
	       atomic_load_explicit(&g_run->stop, memory_order_relaxed);
}

static bool next_io(struct job *j, struct bench_io *io)
{
	const struct bench_opts *o = j->o;
	if (run_over(j)) {
		return false;
	}
	uint64_t blk;
	bool random = j->rw == BENCH_RANDREAD || j->rw == BENCH_RANDWRITE || j->rw == BENCH_RANDRW;
	if (random) {
		int tries = 0;
		do {
			blk = xorshift(&j->rng) % j->nblocks;
		} while (o->verify && in_flight(j, j->lo + blk * o->bs) && ++tries < 64);
		if (tries >= 64) {
			return false; /* pathological: more in flight than blocks */
		}
	} else {
		blk = j->cursor;
		j->cursor = (j->cursor + 1) % j->nblocks;
		if (o->verify && in_flight(j, j->lo + blk * o->bs)) {
			return false; /* wrapped onto itself: slice smaller than qd */
		}
	}
	bool write;
	switch (j->rw) {
	case BENCH_READ:
	case BENCH_RANDREAD:
		write = false;
		break;
	case BENCH_WRITE:
	case BENCH_RANDWRITE:
		write = true;
		break;
	default:
		write = (int)(xorshift(&j->rng) % 100) >= o->rwmix;
		break;
	}
	io->off = j->lo + blk * o->bs;
	io->len = (uint32_t)o->bs;
	io->write = write;
	io->err = 0;
	if (o->verify) {
		if (write) {
			io->gen = j->gen[blk] + 1;
			if (io->gen == 0) {
				io->gen = 1;
			}
			fill_block(j, io);
			j->gen[blk] = 0; /* unknown until the write completes */
		} else {
			io->gen = j->gen[blk];
		}
	}
	io->snap_seq = o->snap_seq ? atomic_load(o->snap_seq) : 0;
	j->issued += o->bs;
	return true;
}

static void complete_io(struct job *j, struct bench_io *io, uint64_t now)
{
	const struct bench_opts *o = j->o;
	uint64_t lat = now - io->t0_ns;
	int d = io->write ? 1 : 0;
	if (io->err != 0) {
		j->errors++;
		if (atomic_fetch_add(&g_run->reported, 1) < MAX_REPORTED) {
			fprintf(stderr, "strata-bench: %s of %u bytes at %" PRIu64 " failed: %s\n",
				io->write ? "write" : "read", io->len, io->off, strerror(-io->err));
		}
	} else {
		bench_hist_record(&j->hist[d], lat);
		j->ios_done[d]++;
		j->bytes_done[d] += io->len;
		if (o->snap_seq != NULL) {
			uint32_t now_seq = atomic_load(o->snap_seq);
			if (io->snap_seq != now_seq || (now_seq & 1)) {
				bench_hist_record(&j->snap_hist, lat);
			}
		}
		pthread_mutex_lock(&j->tick_lock);
		bench_hist_record(&j->tick_hist, lat);
		j->tick_ios++;
		j->tick_bytes += io->len;
		pthread_mutex_unlock(&j->tick_lock);
		if (o->verify) {
			uint64_t blk = (io->off - j->lo) / o->bs;
			if (io->write) {
				j->gen[blk] = io->gen;
			} else if (j->check && io->gen != 0) {
				check_block(j, io);
			}
		}
	}
	io->len = 0;
	j->free_slots[j->nfree++] = io->slot;
}

/* After the quota or the stop flag, how long the requests still in flight may take. A target
 * that went away for good (a killed gateway whose initiator library reconnects forever) used to
 * keep a run past its --time at full speed, for ever. */
#define DRAIN_LIMIT_NS (90ull * 1000000000ull)

/* One phase of one job: keep qd in flight until the quota or the stop flag. */
static int job_phase(struct job *j)
{
	int inflight = 0;
	uint64_t drain_since = 0;
	for (;;) {
		while (j->nfree > 0) {
			struct bench_io *io = &j->ios[j->free_slots[j->nfree - 1]];
			if (!next_io(j, io)) {
				break;
			}
			j->nfree--;
			io->t0_ns = bench_now_ns();
			int rc = j->conn->ops->submit(j->conn, io);
			if (rc < 0) {
				io->err = rc;
				complete_io(j, io, bench_now_ns());
				if (j->errors > 1000) {
					return rc;
				}
				continue;
			}
			inflight++;
		}
		if (inflight == 0) {
			return 0;
		}
		/* Only the end of the run starts the clock: next_io also declines an I/O while the
		 * run goes on (--verify with every candidate block in flight). */
		if (drain_since == 0 && run_over(j)) {
			drain_since = bench_now_ns();
		}
		if (drain_since != 0 && bench_now_ns() - drain_since > DRAIN_LIMIT_NS) {
			j->errors += (uint64_t)inflight;
			return -ETIMEDOUT; /* reported as the job's error: the run exits 1 */
		}
		int rc = j->conn->ops->poll(j->conn, 100);
		if (rc < 0) {
			return rc;
		}
		struct bench_io *done = bench_conn_take(j->conn);
		uint64_t now = bench_now_ns();
		while (done != NULL) {
			struct bench_io *next = done->next;
			complete_io(j, done, now);
			inflight--;
			done = next;
		}
	}
}

static void *job_main(void *arg)
{
	struct job *j = arg;
	j->t_start = bench_now_ns();
	j->status = job_phase(j);
	j->t_end = bench_now_ns();
	if (j->status < 0) {
		snprintf(j->err, sizeof(j->err), "job %d: %s", j->id, strerror(-j->status));
	}
	atomic_fetch_sub(&g_run->running, 1);
	return NULL;
}

static void tick(struct run *run, int njobs, double t, struct bench_result *r, size_t *cap,
		 bool keep)
{
	static struct bench_hist h;
	bench_hist_reset(&h);
	uint64_t ios = 0, bytes = 0;
	for (int i = 0; i < njobs; i++) {
		struct job *j = &run->jobs[i];
		pthread_mutex_lock(&j->tick_lock);
		bench_hist_merge(&h, &j->tick_hist);
		bench_hist_reset(&j->tick_hist);
		ios += j->tick_ios;
		bytes += j->tick_bytes;
		j->tick_ios = j->tick_bytes = 0;
		pthread_mutex_unlock(&j->tick_lock);
	}
	if (keep) {
		if (r->nticks == *cap) {
			size_t ncap = *cap ? *cap * 2 : 64;
			struct bench_tick *nt = realloc(r->ticks, ncap * sizeof(*nt));
			if (nt == NULL) {
				return;
			}
			r->ticks = nt;
			*cap = ncap;
		}
		r->ticks[r->nticks++] = (struct bench_tick){
			.t = t,
			.ios = ios,
			.bytes = bytes,
			.p50_ns = bench_hist_quantile(&h, 0.5),
			.p99_ns = bench_hist_quantile(&h, 0.99),
			.max_ns = h.max,
		};
	}
	if (run->o->progress && isatty(STDOUT_FILENO)) {
		uint64_t errs = 0;
		for (int i = 0; i < njobs; i++) {
			errs += __atomic_load_n(&run->jobs[i].errors, __ATOMIC_RELAXED);
		}
		printf("\r\033[K%s[%5.0fs] %9.0f IOPS %9.1f MB/s  p50 %8.1f us  p99 %8.1f us  "
		       "errors %" PRIu64,
		       run->o->label, t, (double)ios, (double)bytes / 1e6,
		       (double)bench_hist_quantile(&h, 0.5) / 1e3,
		       (double)bench_hist_quantile(&h, 0.99) / 1e3, errs);
		fflush(stdout);
	}
}

/* Run one phase on all jobs; returns 0 or the first job's negative errno. */
static int run_phase(struct run *run, int njobs, enum bench_rw rw, bool timed, bool check,
		     bool keep_ticks, struct bench_result *r, double *elapsed)
{
	const struct bench_opts *o = run->o;
	atomic_store(&run->stop, false);
	atomic_store(&run->running, njobs);
	for (int i = 0; i < njobs; i++) {
		struct job *j = &run->jobs[i];
		j->rw = rw;
		j->check = check;
		j->issued = 0;
		j->cursor = 0;
		j->quota = timed ? (o->size ? o->size / (uint64_t)njobs : 0) : j->nblocks * o->bs;
		if (j->quota != 0 && j->quota < o->bs) {
			j->quota = o->bs;
		}
	}
	uint64_t t0 = bench_now_ns();
	for (int i = 0; i < njobs; i++) {
		if (pthread_create(&run->jobs[i].thread, NULL, job_main, &run->jobs[i]) != 0) {
			atomic_store(&run->stop, true);
			for (int k = 0; k < i; k++) {
				pthread_join(run->jobs[k].thread, NULL);
			}
			return -EAGAIN;
		}
	}
	size_t cap = 0;
	uint64_t next_tick = t0 + 1000000000ull;
	uint64_t end = (timed && o->time_s > 0) ? t0 + (uint64_t)(o->time_s * 1e9) : UINT64_MAX;
	if (timed && o->size != 0 && o->time_s <= 0) {
		end = UINT64_MAX;
	}
	while (atomic_load(&run->running) > 0) {
		uint64_t now = bench_now_ns();
		if (now >= end) {
			atomic_store(&run->stop, true);
		}
		if (now >= next_tick) {
			tick(run, njobs, (double)(next_tick - t0) / 1e9, r, &cap, keep_ticks);
			next_tick += 1000000000ull;
		}
		usleep(10000);
	}
	for (int i = 0; i < njobs; i++) {
		pthread_join(run->jobs[i].thread, NULL);
	}
	*elapsed = (double)(bench_now_ns() - t0) / 1e9;
	if (o->progress && isatty(STDOUT_FILENO)) {
		printf("\r\033[K");
		fflush(stdout);
	}
	for (int i = 0; i < njobs; i++) {
		if (run->jobs[i].status < 0) {
			fprintf(stderr, "strata-bench: %s\n", run->jobs[i].err);
			return run->jobs[i].status;
		}
	}
	return 0;
}

static void reset_totals(struct run *run, int njobs)
{
	for (int i = 0; i < njobs; i++) {
		struct job *j = &run->jobs[i];
		for (int d = 0; d < 2; d++) {
			bench_hist_reset(&j->hist[d]);
			j->ios_done[d] = j->bytes_done[d] = 0;
		}
		bench_hist_reset(&j->snap_hist);
		pthread_mutex_lock(&j->tick_lock);
		bench_hist_reset(&j->tick_hist);
		j->tick_ios = j->tick_bytes = 0;
		pthread_mutex_unlock(&j->tick_lock);
	}
}

static void free_jobs(struct run *run, int njobs)
{
	for (int i = 0; i < njobs; i++) {
		struct job *j = &run->jobs[i];
		bench_conn_close(j->conn);
		free(j->ios);
		free(j->bufs);
		free(j->free_slots);
		free(j->gen);
		pthread_mutex_destroy(&j->tick_lock);
	}
	free(run->jobs);
}

int bench_run(const struct bench_opts *opts, const char *const *uris, int nuris,
	      struct bench_result *r)
{
	memset(r, 0, sizeof(*r));
	if (opts->jobs < 1 || opts->qd < 1 || opts->bs == 0 || nuris < 1) {
		return -EINVAL;
	}
	struct bench_opts oc = *opts, *o = &oc;
	struct run run = {.o = o};
	g_run = &run;
	int njobs = o->jobs, rc = 0;
	run.jobs = calloc((size_t)njobs, sizeof(*run.jobs));
	if (run.jobs == NULL) {
		return -ENOMEM;
	}
	/* Connect every job first, so connection set-up is not part of the measurement. */
	for (int i = 0; i < njobs; i++) {
		struct job *j = &run.jobs[i];
		j->id = i;
		j->o = o;
		j->uri = uris[i % nuris];
		pthread_mutex_init(&j->tick_lock, NULL);
		char err[512] = "";
		rc = bench_conn_open(j->uri, o->meta, &j->conn, err, sizeof(err));
		if (rc < 0) {
			fprintf(stderr, "strata-bench: %s\n", err[0] ? err : strerror(-rc));
			njobs = i + 1;
			goto out;
		}
	}
	/* The region and the slices (uris may differ in size: use the smallest). */
	uint64_t size = UINT64_MAX, align = 1;
	bool ro = false;
	for (int i = 0; i < njobs; i++) {
		struct bench_conn *c = run.jobs[i].conn;
		size = c->size < size ? c->size : size;
		align = c->min_io > align ? c->min_io : align;
		ro = ro || c->read_only;
	}
	r->target_size = size;
	if (o->bs % align != 0 || o->offset % align != 0 || o->span % align != 0) {
		fprintf(stderr,
			"strata-bench: --bs, --offset and --span must be multiples of the target's "
			"%" PRIu64 "-byte block\n",
			align);
		rc = -EINVAL;
		goto out;
	}
	if (o->verify && o->bs % VERIFY_SECTOR != 0) {
		fprintf(stderr, "strata-bench: --verify needs --bs a multiple of 4096\n");
		rc = -EINVAL;
		goto out;
	}
	bool writes = o->rw == BENCH_WRITE || o->rw == BENCH_RANDWRITE ||
		      (o->rw == BENCH_RANDRW && o->rwmix < 100);
	bool reads = !(o->rw == BENCH_WRITE || o->rw == BENCH_RANDWRITE) &&
		     !(o->rw == BENCH_RANDRW && o->rwmix == 0);
	if (ro && (writes || o->verify)) {
		fprintf(stderr, "strata-bench: the target is read-only; use --rw read or "
				"randread without --verify\n");
		rc = -EROFS;
		goto out;
	}
	if (o->offset >= size) {
		fprintf(stderr,
			"strata-bench: --offset %" PRIu64 " is beyond the target's %" PRIu64
			" bytes\n",
			o->offset, size);
		rc = -EINVAL;
		goto out;
	}
	uint64_t span = o->span ? o->span : size - o->offset;
	if (o->offset + span > size) {
		fprintf(stderr,
			"strata-bench: --offset + --span exceed the target's %" PRIu64 " bytes\n",
			size);
		rc = -EINVAL;
		goto out;
	}
	uint64_t per = (o->whole_region ? span : span / (uint64_t)njobs) / o->bs;
	uint64_t min_blocks = o->verify ? (uint64_t)o->qd * 2 : 1;
	if (per < min_blocks) {
		fprintf(stderr,
			"strata-bench: the region (%" PRIu64 " bytes) is too small for %d jobs of "
			"%" PRIu64 "-byte blocks%s\n",
			span, njobs, o->bs, o->verify ? " at this --qd with --verify" : "");
		rc = -EINVAL;
		goto out;
	}
	for (int i = 0; i < njobs; i++) {
		struct job *j = &run.jobs[i];
		j->lo = o->offset + (o->whole_region ? 0 : (uint64_t)i * per * o->bs);
		j->nblocks = per;
		j->rng = mix(o->seed, (uint64_t)i + 1);
		j->ios = calloc((size_t)o->qd, sizeof(*j->ios));
		j->free_slots = calloc((size_t)o->qd, sizeof(int));
		if (o->verify) {
			j->gen = calloc(per, sizeof(uint32_t));
		}
		if (j->ios == NULL || j->free_slots == NULL || (o->verify && j->gen == NULL) ||
		    posix_memalign((void **)&j->bufs, 4096, (size_t)o->qd * o->bs) != 0) {
			j->bufs = NULL;
			rc = -ENOMEM;
			goto out;
		}
		memset(j->bufs, 0, (size_t)o->qd * o->bs);
		for (int k = 0; k < o->qd; k++) {
			j->ios[k].slot = -1;
			j->ios[k].buf = j->bufs + (size_t)k * o->bs;
			j->ios[k].conn = j->conn;
			j->free_slots[j->nfree++] = k;
		}
	}
	/* ios[k].slot doubles as "in flight" for the collision check: set it on use. */
	for (int i = 0; i < njobs; i++) {
		for (int k = 0; k < o->qd; k++) {
			run.jobs[i].ios[k].slot = k;
			run.jobs[i].ios[k].len = 0;
		}
	}
	double el;
	if (o->verify && reads) {
		rc = run_phase(&run, njobs, BENCH_WRITE, false, false, false, r, &el);
		if (rc < 0) {
			goto out;
		}
		reset_totals(&run, njobs);
	}
	rc = run_phase(&run, njobs, o->rw, true, true, true, r, &r->elapsed_s);
	if (rc < 0) {
		goto out;
	}
	for (int i = 0; i < njobs; i++) {
		struct job *j = &run.jobs[i];
		for (int d = 0; d < 2; d++) {
			bench_hist_merge(&r->hist[d], &j->hist[d]);
			r->ios[d] += j->ios_done[d];
			r->bytes[d] += j->bytes_done[d];
		}
		bench_hist_merge(&r->snap_hist, &j->snap_hist);
	}
	r->njobs = njobs;
	r->job_elapsed_s = calloc((size_t)njobs, sizeof(double));
	for (int i = 0; r->job_elapsed_s != NULL && i < njobs; i++) {
		r->job_elapsed_s[i] = (double)(run.jobs[i].t_end - run.jobs[i].t_start) / 1e9;
	}
	if (o->verify) {
		/* Read back every block this run knows and check it. */
		oc.progress = false;
		rc = run_phase(&run, njobs, BENCH_READ, false, true, false, r, &el);
		if (rc < 0) {
			goto out;
		}
	}
	for (int i = 0; i < njobs; i++) {
		r->errors += run.jobs[i].errors;
		r->verified += run.jobs[i].verified;
		r->mismatches += run.jobs[i].mismatches;
	}
out:
	free_jobs(&run, njobs);
	g_run = NULL;
	return rc;
}

void bench_result_free(struct bench_result *r)
{
	free(r->ticks);
	free(r->job_elapsed_s);
	r->job_elapsed_s = NULL;
	r->ticks = NULL;
	r->nticks = 0;
}
