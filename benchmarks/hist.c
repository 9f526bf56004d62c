/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <string.h>

#include "hist.h"

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void hist_merge(struct hist *into, const struct hist *from)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->b[i] += from->b[i];
	into->count += from->count;
	if (from->min < into->min)
		into->min = from->min;
	if (from->max > into->max)
		into->max = from->max;
}

static uint64_t bucket_low(unsigned i)
{
	unsigned shift;

	if (i < 2 * HIST_SUB)
		return i;
	shift = i / HIST_SUB - 1;
	return (uint64_t)(i % HIST_SUB + HIST_SUB) << shift;
}

static uint64_t bucket_width(unsigned i)
{
	return i < 2 * HIST_SUB ? 1 : (uint64_t)1 << (i / HIST_SUB - 1);
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	uint64_t rank, seen = 0;

	if (!h->count)
		return 0;
	if (p >= 100)
		return h->max;
	rank = (uint64_t)ceil(p / 100.0 * (double)h->count);
	if (rank == 0)
		return h->min;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			uint64_t v = bucket_low(i);

			return v < h->min ? h->min : v;
		}
	}
	return h->max;
}

double hist_percentile_step(const struct hist *h, double p, double step)
{
	double target, seen = 0;

	if (!h->count)
		return 0;
	if (p <= 0)
		return (double)h->min;
	if (p >= 100)
		return (double)h->max;
	target = p / 100.0 * (double)h->count;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		double c = (double)h->b[i], lo, w;

		if (!c || seen + c < target) {
			seen += c;
			continue;
		}
		w = (double)bucket_width(i);
		lo = (double)bucket_low(i);
		if (w < step) {
			/* One clock reading per bucket: its samples are
			 * spread over the step around it. */
			lo -= step / 2;
			w = step;
		}
		return lo + w * (target - seen) / c;
	}
	return (double)h->max;
}
