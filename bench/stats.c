/* Latency summaries for bench scenarios. */
#include <stdlib.h>
#include <time.h>

#include "internal.h"

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

void bench_stats_compute(double *s, size_t n, struct bench_stats *out)
{
	*out = (struct bench_stats){.n = n};
	if (n == 0) {
		return;
	}
	qsort(s, n, sizeof(*s), cmp_double);
	double sum = 0;
	for (size_t i = 0; i < n; i++) {
		sum += s[i];
	}
	out->min_us = s[0];
	out->max_us = s[n - 1];
	out->median_us = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	size_t k = (size_t)((double)n * 0.99);
	out->p99_us = s[k < n ? k : n - 1];
	out->mean_us = sum / (double)n;
}

double bench_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
