/* SPDX-License-Identifier: MIT */
/*
 * hist.h - a small high-dynamic-range histogram for latency samples.
 *
 * Log-linear buckets: values below 256 each have a bucket; above, every
 * power of two is split into 128 linear buckets, so any recorded value is
 * known to within 1/128 (0.8%) up to 2^63.  Recording is an increment;
 * histograms merge by adding counts; percentiles are read from the merged
 * counts, never averaged.
 */
#ifndef SHMBUS_BENCH_HIST_H
#define SHMBUS_BENCH_HIST_H

#include <stdint.h>
#include <stdio.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (HIST_SUB * 58)

struct hist {
	uint64_t count;
	uint64_t min, max;
	uint64_t b[HIST_BUCKETS];
};

void hist_init(struct hist *h);
static inline unsigned hist_index(uint64_t v)
{
	unsigned shift;

	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	shift = 63u - (unsigned)__builtin_clzll(v) - HIST_SUB_BITS;
	return HIST_SUB * (shift + 1) + (unsigned)((v >> shift) - HIST_SUB);
}

static inline void hist_record(struct hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	h->count++;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

void hist_merge(struct hist *into, const struct hist *from);
/* The value at percentile p (0..100): the lowest value of the bucket that
 * holds the sample of rank ceil(p/100 * count). */
uint64_t hist_percentile(const struct hist *h, double p);

/*
 * The value at percentile p (0..100) of samples read off a clock that
 * advances in steps of `step` (in the samples' unit; harness.h's
 * bh_clock_step_ns()).  A sample taken at a random phase of the clock is
 * its true value plus a uniform error of +-step/2, rounded to the step;
 * so the samples that read v are spread over [v - step/2, v + step/2),
 * and the percentile is interpolated there, by rank, instead of being
 * rounded to a step.  Where a bucket is wider than the step, its samples
 * are spread over the bucket.  With step <= 1 this is hist_percentile(),
 * interpolated within the bucket.
 */
double hist_percentile_step(const struct hist *h, double p, double step);

#endif
