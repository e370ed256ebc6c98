/* strata-bench: scenarios and shared reporting helpers. */
#ifndef STRATA_BENCH_INTERNAL_H
#define STRATA_BENCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

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

/* metaops.c */
int bench_metaops(int argc, char **argv) __attribute__((nonnull));

#endif
