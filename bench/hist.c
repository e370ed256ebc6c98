/*
 * Log-linear latency histogram, HdrHistogram-style.
 *
 * A value v (ns) with its top bit at position msb goes to bucket b = max(0, msb - 6) and
 * sub-bucket v >> b, which is in [64, 128) when b > 0 and [0, 128) when b == 0:
 *
 *   index = b * 64 + (v >> b)      b=0: 0..127 (exact)   b=1: 128..191 (step 2)   ...
 *
 * so every power-of-two range is split into 64 equal steps: relative error < 1/64 at the
 * bucket's low edge, and we report the middle of a bucket. Recording is O(1) with no
 * allocation; merging and quantiles walk the ~2.4k counters.
 */
#include <string.h>

#include "internal.h"

static unsigned bucket_of(uint64_t v)
{
	unsigned msb = v ? 63u - (unsigned)__builtin_clzll(v) : 0;
	unsigned b = msb >= BENCH_HIST_SUB_BITS ? msb - (BENCH_HIST_SUB_BITS - 1) : 0;
	uint64_t idx = (uint64_t)b * BENCH_HIST_HALF + (v >> b);
	return idx < BENCH_HIST_BUCKETS ? (unsigned)idx : BENCH_HIST_BUCKETS - 1;
}

/* The middle of bucket idx, the inverse of bucket_of. */
static uint64_t value_of(unsigned idx)
{
	if (idx < (1u << BENCH_HIST_SUB_BITS)) {
		return idx;
	}
	unsigned b = idx / BENCH_HIST_HALF - 1;
	uint64_t sub = idx - (uint64_t)b * BENCH_HIST_HALF;
	return (sub << b) + ((1ull << b) >> 1);
}

void bench_hist_reset(struct bench_hist *h)
{
	memset(h, 0, sizeof(*h));
}

void bench_hist_record(struct bench_hist *h, uint64_t ns)
{
	if (h->total == 0 || ns < h->min) {
		h->min = ns;
	}
	if (ns > h->max) {
		h->max = ns;
	}
	h->total++;
	h->sum += (double)ns;
	h->counts[bucket_of(ns)]++;
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
	if (src->total == 0) {
		return;
	}
	if (dst->total == 0 || src->min < dst->min) {
		dst->min = src->min;
	}
	if (src->max > dst->max) {
		dst->max = src->max;
	}
	dst->total += src->total;
	dst->sum += src->sum;
	for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
		dst->counts[i] += src->counts[i];
	}
}

uint64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
	if (h->total == 0) {
		return 0;
	}
	if (q >= 1.0) {
		return h->max;
	}
	uint64_t want = (uint64_t)(q * (double)h->total + 0.999999);
	if (want == 0) {
		return h->min;
	}
	uint64_t seen = 0;
	for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= want) {
			uint64_t v = value_of(i);
			/* Never report outside what was actually seen. */
			return v < h->min ? h->min : v > h->max ? h->max : v;
		}
	}
	return h->max;
}

double bench_hist_mean(const struct bench_hist *h)
{
	return h->total ? h->sum / (double)h->total : 0;
}
