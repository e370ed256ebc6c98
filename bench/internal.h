/* strata-bench: scenarios, the workload engine, targets and shared reporting helpers.
 *
 *   main.c ──> bench_scenarios[] ──> run.c (one workload)      ──┐
 *                                ──> scenarios.c (clone-depth,   ├─> engine.c ─> target_*.c
 *                                    boot-storm, snap-under-load)┘      │
 *                                ──> metaops.c                       hist.c, report.c
 *
 * A target is one connection per job thread (struct bench_conn). The engine submits I/O to it
 * asynchronously and collects completions in the job thread: libnbd and libiscsi run their
 * callbacks inside the job's poll call; libstrata runs them on its own I/O thread, which hands
 * them over through a mutex-protected list and an eventfd.
 */
#ifndef STRATA_BENCH_INTERNAL_H
#define STRATA_BENCH_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A scenario gets argv with argv[0] = the scenario name; returns a process exit code. */
struct bench_scenario {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
};

/* main.c: the scenario table. */
extern const struct bench_scenario bench_scenarios[];

/* stats.c */
struct bench_stats {
	size_t n;
	double min_us, median_us, p99_us, max_us, mean_us;
};
/* Sort samples (microseconds) in place and summarise them. */
void bench_stats_compute(double *samples_us, size_t n, struct bench_stats *out)
	__attribute__((nonnull));
/* Monotonic time in microseconds. */
double bench_now_us(void);
/* Monotonic time in nanoseconds. */
uint64_t bench_now_ns(void);

/* metaops.c */
int bench_metaops(int argc, char **argv) __attribute__((nonnull));

/* hist.c: HdrHistogram-style log-linear latency histogram in nanoseconds. Values up to ~2^41 ns
 * (about 36 min) with a relative error under 1/128; larger values land in the last bucket. */
#define BENCH_HIST_SUB_BITS 7
#define BENCH_HIST_HALF     (1u << (BENCH_HIST_SUB_BITS - 1))
#define BENCH_HIST_BUCKETS  (36u * BENCH_HIST_HALF + (1u << BENCH_HIST_SUB_BITS))
struct bench_hist {
	uint64_t total;
	uint64_t min, max;
	double sum;
	uint64_t counts[BENCH_HIST_BUCKETS];
};
void bench_hist_reset(struct bench_hist *h) __attribute__((nonnull));
void bench_hist_record(struct bench_hist *h, uint64_t ns) __attribute__((nonnull));
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
	__attribute__((nonnull));
/* Latency in ns at quantile q (0..1]; exact min/max at the ends, 0 if empty. */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q) __attribute__((nonnull));
double bench_hist_mean(const struct bench_hist *h) __attribute__((nonnull));

/* target*.c: one connection of one job to one target URI. */
struct bench_conn;
struct bench_io {
	uint64_t off;
	uint32_t len;
	bool write;
	int err;
	uint8_t *buf;
	uint64_t t0_ns;
	uint32_t gen;      /* verify: generation written or expected */
	uint32_t snap_seq; /* snap-under-load: snapshot sequence at submit */
	int slot;
	struct bench_conn *conn;
	struct bench_io *next; /* on the connection's completed list */
};

struct bench_target_ops {
	const char *scheme; /* "strata", "nbd", "iscsi" */
	/* Open one connection; returns 0 or a negative errno with a message in err. */
	int (*open)(const char *uri, const char *meta, struct bench_conn **out, char *err,
		    size_t errlen);
	/* Queue one I/O; its completion reaches bench_conn_complete exactly once. Returns 0 or a
	 * negative errno (then it never completes). */
	int (*submit)(struct bench_conn *c, struct bench_io *io);
	/* Drive the connection for up to timeout_ms or until something completed. Returns 0 or a
	 * negative errno (connection lost). */
	int (*poll)(struct bench_conn *c, int timeout_ms);
	void (*close)(struct bench_conn *c);
};

/* The common head of every backend's connection. */
struct bench_conn {
	const struct bench_target_ops *ops;
	uint64_t size;   /* bytes */
	uint32_t min_io; /* required alignment of offsets and lengths */
	bool read_only;
	pthread_mutex_t lock; /* guards done list (libstrata completes on its own thread) */
	struct bench_io *done_head, **done_tail;
	int wake_fd; /* eventfd written on each completion, or -1 */
};

/* target.c */
/* Open uri ("strata://[META/]pool/vol", "nbd://host:port/export", "iscsi://host[:port]/iqn/lun")
 * with meta as the default strata-meta address. Returns 0 or a negative errno, message in err. */
int bench_conn_open(const char *uri, const char *meta, struct bench_conn **out, char *err,
		    size_t errlen) __attribute__((nonnull(1, 3, 4)));
void bench_conn_close(struct bench_conn *c);
/* Backends: initialise the common head, and report a completion (any thread). */
void bench_conn_init(struct bench_conn *c, const struct bench_target_ops *ops)
	__attribute__((nonnull));
void bench_conn_complete(struct bench_conn *c, struct bench_io *io, int err)
	__attribute__((nonnull));
/* Take the whole completed list (job thread). */
struct bench_io *bench_conn_take(struct bench_conn *c) __attribute__((nonnull));
extern const struct bench_target_ops bench_target_strata, bench_target_nbd, bench_target_iscsi;

/* engine.c: the workload engine. */
enum bench_rw { BENCH_READ, BENCH_WRITE, BENCH_RANDREAD, BENCH_RANDWRITE, BENCH_RANDRW };

struct bench_opts {
	enum bench_rw rw;
	int rwmix;       /* randrw: percentage of reads */
	uint64_t bs;     /* bytes per I/O */
	int qd;          /* in flight per job */
	int jobs;        /* threads, each with its own connection */
	double time_s;   /* run this long (0 with size set: until size is done) */
	uint64_t size;   /* total bytes over all jobs (0: time-based) */
	uint64_t offset; /* start of the region */
	uint64_t span;   /* length of the region (0: to the end of the target) */
	bool verify;
	uint64_t seed;
	bool progress;     /* live line each second (only if stdout is a terminal) */
	const char *label; /* prefix of the progress line */
	const char *meta;  /* default strata-meta for strata:// */
	bool whole_region; /* every job covers the whole region (jobs on distinct targets) */
	/* snap-under-load: incremented around each snapshot; odd while one is in progress. */
	_Atomic uint32_t *snap_seq;
};

/* One second of the run. */
struct bench_tick {
	double t; /* seconds since start, at the end of the tick */
	uint64_t ios, bytes;
	uint64_t p50_ns, p99_ns, max_ns;
};

struct bench_result {
	double elapsed_s;
	uint64_t ios[2], bytes[2]; /* [0] read, [1] write */
	struct bench_hist hist[2];
	struct bench_hist snap_hist; /* I/O that overlapped a snapshot (snap_seq set) */
	uint64_t errors;
	uint64_t verified, mismatches; /* 4 KiB sectors checked / wrong */
	struct bench_tick *ticks;
	size_t nticks;
	uint64_t target_size;
	double *job_elapsed_s; /* per job: when it finished the timed phase */
	int njobs;
};

void bench_opts_default(struct bench_opts *o) __attribute__((nonnull));
/* Run o against uris (job j uses uris[j % nuris]). Returns 0 if the run completed (errors and
 * mismatches are counted in r), or a negative errno with a message printed if it could not run.
 * Free r with bench_result_free. */
int bench_run(const struct bench_opts *o, const char *const *uris, int nuris,
	      struct bench_result *r) __attribute__((nonnull));
void bench_result_free(struct bench_result *r) __attribute__((nonnull));
const char *bench_rw_name(enum bench_rw rw);
int bench_rw_parse(const char *s, enum bench_rw *out) __attribute__((nonnull));

/* report.c */
void bench_report_text(FILE *f, const struct bench_opts *o, const char *target,
		       const struct bench_result *r) __attribute__((nonnull));
/* Print the result as one JSON object (no trailing newline). */
void bench_report_json(FILE *f, const struct bench_opts *o, const char *target,
		       const struct bench_result *r) __attribute__((nonnull));
/* Write an SVG of IOPS and latency over time through gnuplot. Returns 0 or a negative errno. */
int bench_plot(const char *path, const char *title, const struct bench_result *r)
	__attribute__((nonnull));
void bench_json_string(FILE *f, const char *s) __attribute__((nonnull));

/* run.c: the plain workload scenario, and the workload flags every I/O scenario shares. */
int bench_run_main(int argc, char **argv) __attribute__((nonnull));
struct st_flag;
struct bench_cli {
	struct bench_opts o;
	const char *rw, *plot, *time, *meta;
	uint64_t bs, size, offset, span;
	int64_t qd, jobs, rwmix, seed;
	bool json, verify, quiet;
};
#define BENCH_CLI_NFLAGS 15
/* Set defaults and write the shared flags into f[0..BENCH_CLI_NFLAGS); returns the count. */
int bench_cli_flags(struct bench_cli *c, struct st_flag *f) __attribute__((nonnull));
/* Validate the parsed flags into c->o. Returns 0, or 2 after printing why and the usage line. */
int bench_cli_finish(struct bench_cli *c, const char *usage) __attribute__((nonnull));
/* Print "error: MSG" and the usage line to stderr; returns 2 (the exit code for bad usage). */
int bench_usage_error(const char *usage, const char *fmt, ...)
	__attribute__((nonnull, format(printf, 2, 3)));

/* metarpc.c: blocking calls to strata-meta for the scenarios. Each returns 0 or a negative
 * errno, printing the meta's message on failure. */
int bench_meta_connect(const char *meta) __attribute__((nonnull));
int bench_meta_pool_create(int fd, const char *pool, int replicas) __attribute__((nonnull));
int bench_meta_volume_create(int fd, const char *pool, const char *name, uint64_t size)
	__attribute__((nonnull));
int bench_meta_volume_remove(int fd, const char *pool, const char *name) __attribute__((nonnull));
int bench_meta_snap_create(int fd, const char *pool, const char *name, const char *snap)
	__attribute__((nonnull));
int bench_meta_clone(int fd, const char *pool, const char *name, const char *snap, const char *dst)
	__attribute__((nonnull));
int bench_meta_template_set(int fd, const char *pool, const char *name) __attribute__((nonnull));

/* scenarios.c */
int bench_clone_depth(int argc, char **argv) __attribute__((nonnull));
int bench_boot_storm(int argc, char **argv) __attribute__((nonnull));
int bench_snap_under_load(int argc, char **argv) __attribute__((nonnull));

#endif
