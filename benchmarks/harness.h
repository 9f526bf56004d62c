/* SPDX-License-Identifier: MIT */
/*
 * harness.h - what every benchmark shares: pinning a process to a CPU, a
 * cycle counter converted to ns, the floor probe (one cache line bounced
 * between the two CPUs the benchmark uses), and result files.
 */
#ifndef SHMBUS_BENCH_HARNESS_H
#define SHMBUS_BENCH_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <x86intrin.h>

#include <sys/types.h>

void bh_pin(int cpu);

/* fork(), the child killed if the parent dies (benchmark children spin). */
pid_t bh_fork(void);

/* rdtscp ticks; bh_calibrate() once, then bh_ns(ticks). */
static inline uint64_t bh_ticks(void)
{
	unsigned aux;

	return __rdtscp(&aux);
}

void bh_calibrate(void);
double bh_ns_per_tick(void);

/*
 * How far the tick counter advances at a time, in ns (bh_calibrate()
 * measures it).  Some machines advance it in coarse steps (a virtual AMD
 * EPYC adds 26 ticks every 10 ns; the Xeon guest that docs/performance.md
 * describes, about 2 every 0.8 ns), so every latency sample is a multiple
 * of the step and a median read off the histogram can only move in
 * steps.  hist_percentile_step() interpolates within the step.
 */
double bh_clock_step_ns(void);

/* CLOCK_MONOTONIC, ns: comparable between processes. */
uint64_t bh_now_ns(void);

/* Shared anonymous memory, visible to forked children; NULL on failure. */
void *bh_shared(size_t len);

/* The p50 round trip of one cache line between CPUs 0 and 1 (two
 * processes), over n round trips: the floor of any transfer between
 * them. */
uint64_t bh_floor_p50(long n);

/* "placement changed" when two floor probes differ by more than 25%. */
int bh_moved(uint64_t f0, uint64_t f1);

/* Opens benchmarks/results/NAME for writing (the directory is made);
 * NULL (and a warning) if it cannot. */
FILE *bh_result_file(const char *name);

#endif
