/* SPDX-License-Identifier: MIT */
/*
 * test_hist.c - the benchmarks' histogram (benchmarks/hist.c) and clock
 * step (benchmarks/harness.c): every ratio `make bench` prints is read off
 * them, so they are tested like the library.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../benchmarks/harness.h"
#include "../benchmarks/hist.h"

static struct hist h, g;

/* A small deterministic generator: the tests must not depend on libc's. */
static uint64_t rng = 0x9e3779b97f4a7c15u;

static double uniform(void)	/* [0, 1) */
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

/*
 * A duration of `ns` read off a clock that moves in steps of `step`,
 * started at a random phase of it: what bench_latency records.
 */
static uint64_t read_off_clock(double ns, double step)
{
	double start = uniform() * step;

	return (uint64_t)(floor((start + ns) / step) * step + 0.5);
}

Test(hist, exact_below_256)
{
	hist_init(&h);
	for (uint64_t v = 1; v <= 200; v++)
		hist_record(&h, v);
	cr_assert_eq(h.count, 200);
	cr_assert_eq(hist_percentile(&h, 50), 100);
	cr_assert_eq(hist_percentile(&h, 99), 198);
	cr_assert_eq(hist_percentile(&h, 100), 200);
	cr_assert_eq(hist_percentile(&h, 0), 1);
}

Test(hist, within_one_128th_above)
{
	static const uint64_t vs[] = { 256, 1000, 4097, 123456789,
				       (uint64_t)1 << 62 };

	for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
		uint64_t p;

		hist_init(&h);
		hist_record(&h, vs[i]);
		hist_record(&h, vs[i]);
		hist_record(&h, vs[i] + vs[i] / 2);
		p = hist_percentile(&h, 50);
		cr_assert(p <= vs[i] && p >= vs[i] - vs[i] / 128,
			  "%llu read back as %llu", (unsigned long long)vs[i],
			  (unsigned long long)p);
		cr_assert_eq(hist_percentile(&h, 100), vs[i] + vs[i] / 2);
	}
}

Test(hist, merged_counts_are_the_samples_of_both)
{
	struct hist all;

	hist_init(&h);
	hist_init(&g);
	hist_init(&all);
	for (int i = 0; i < 10000; i++) {
		uint64_t v = (uint64_t)(uniform() * 5000);

		hist_record(i % 3 ? &h : &g, v);
		hist_record(&all, v);
	}
	hist_merge(&h, &g);
	cr_assert_eq(h.count, all.count);
	cr_assert_eq(h.min, all.min);
	cr_assert_eq(h.max, all.max);
	for (double p = 1; p < 100; p += 7.5)
		cr_assert_eq(hist_percentile(&h, p), hist_percentile(&all, p),
			     "p%.1f", p);
}

/*
 * A constant 115 ns read off a 10 ns clock reads 110 or 120, half the time
 * each: the plain median is one of the two, the interpolated one is 115.
 */
Test(hist, median_within_the_clock_step_constant)
{
	hist_init(&h);
	for (int i = 0; i < 100000; i++)
		hist_record(&h, read_off_clock(115, 10));
	cr_assert(hist_percentile(&h, 50) == 110 ||
		  hist_percentile(&h, 50) == 120);
	cr_assert(fabs(hist_percentile_step(&h, 50, 10) - 115) < 0.5,
		  "p50* %.2f", hist_percentile_step(&h, 50, 10));
}

/*
 * Durations spread evenly over [103, 131), median 117, on a 10 ns clock:
 * the interpolated median and quartiles come back to within half a ns,
 * which the plain ones, multiples of 10, cannot.
 */
Test(hist, median_within_the_clock_step_spread)
{
	hist_init(&h);
	for (int i = 0; i < 400000; i++)
		hist_record(&h, read_off_clock(103 + uniform() * 28, 10));
	cr_assert_eq(hist_percentile(&h, 50) % 10, 0);
	cr_assert(fabs(hist_percentile_step(&h, 50, 10) - 117) < 0.5,
		  "p50* %.2f", hist_percentile_step(&h, 50, 10));
	cr_assert(fabs(hist_percentile_step(&h, 40, 10) - 114.2) < 0.5,
		  "p40* %.2f", hist_percentile_step(&h, 40, 10));
	cr_assert(fabs(hist_percentile_step(&h, 60, 10) - 119.8) < 0.5,
		  "p60* %.2f", hist_percentile_step(&h, 60, 10));
}

/* Where buckets are wider than the step, samples spread over the bucket;
 * a clock of 1 ns step changes nothing but the interpolation in it. */
Test(hist, step_finer_than_the_buckets)
{
	hist_init(&h);
	for (uint64_t v = 1; v <= 200; v++)
		hist_record(&h, v);
	cr_assert(fabs(hist_percentile_step(&h, 50, 1) - 100) <= 1);
	cr_assert(fabs(hist_percentile_step(&h, 50, 0) - 100) <= 1);

	hist_init(&h);
	for (uint64_t v = 100000; v < 200000; v++)
		hist_record(&h, v);
	/* buckets 1024 wide here: the plain p50 is a bucket's low end */
	cr_assert(fabs(hist_percentile_step(&h, 50, 10) - 150000) < 200,
		  "p50* %.1f", hist_percentile_step(&h, 50, 10));
	cr_assert_eq(hist_percentile_step(&h, 100, 10), 199999);
}

Test(hist, empty)
{
	hist_init(&h);
	cr_assert_eq(hist_percentile(&h, 50), 0);
	cr_assert_eq(hist_percentile_step(&h, 50, 10), 0);
}

/*
 * bh_calibrate()'s clock step divides the difference between any two
 * readings of the counter: a step measured too large would spread samples
 * over a wider interval than the clock's error.
 */
Test(clock, step_divides_every_reading)
{
	uint64_t step, prev;

	bh_calibrate();
	step = (uint64_t)llround(bh_clock_step_ns() / bh_ns_per_tick());
	cr_assert(step >= 1);
	prev = bh_ticks();
	for (int i = 0; i < 100000; i++) {
		uint64_t now = bh_ticks();

		cr_assert_eq((now - prev) % step, 0,
			     "readings %llu apart, step %llu",
			     (unsigned long long)(now - prev),
			     (unsigned long long)step);
		prev = now;
	}
}
