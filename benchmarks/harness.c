/* SPDX-License-Identifier: MIT */
/* harness.c - see harness.h. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "hist.h"

static double ns_per_tick = 1.0;
static uint64_t step_ticks = 1;

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

pid_t bh_fork(void)
{
	pid_t parent = getpid(), pid = fork();

	if (pid == 0) {
		/* A benchmark child spins: it must not outlive its parent. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
	}
	return pid;
}

void bh_pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		perror("sched_setaffinity");
}

uint64_t bh_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bh_calibrate(void)
{
	struct timespec a, b;
	uint64_t t0, t1;

	clock_gettime(CLOCK_MONOTONIC_RAW, &a);
	t0 = bh_ticks();
	usleep(100000);
	clock_gettime(CLOCK_MONOTONIC_RAW, &b);
	t1 = bh_ticks();
	ns_per_tick = ((double)(b.tv_sec - a.tv_sec) * 1e9 +
		       (double)(b.tv_nsec - a.tv_nsec)) / (double)(t1 - t0);

	/* The counter's step: the greatest common divisor of the
	 * differences between successive readings.  The pause between
	 * readings varies, so that the differences share no divisor by
	 * coincidence: on a counter that moves by one tick, the divisor
	 * falls to 1 within a few readings. */
	uint64_t prev = bh_ticks(), g = 0;

	for (int i = 0; i < 4096; i++) {
		for (volatile int j = 0; j < i % 13; j++)
			;
		uint64_t now = bh_ticks();

		g = gcd(g, now - prev);
		prev = now;
	}
	step_ticks = g ? g : 1;
}

double bh_ns_per_tick(void)
{
	return ns_per_tick;
}

double bh_clock_step_ns(void)
{
	return (double)step_ticks * ns_per_tick;
}

void *bh_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

struct probe {
	_Alignas(64) _Atomic uint64_t line;
	_Alignas(64) _Atomic int ready;
};

uint64_t bh_floor_p50(long n)
{
	static struct probe *p;
	static struct hist h;
	pid_t pid;

	if (!p && !(p = bh_shared(sizeof(*p))))
		return 0;
	atomic_store(&p->line, 0);
	atomic_store(&p->ready, 0);
	pid = bh_fork();
	if (pid == 0) {
		bh_pin(1);
		atomic_store(&p->ready, 1);
		for (uint64_t s = 2; s <= 2 * (uint64_t)n; s += 2) {
			while (atomic_load_explicit(&p->line,
						    memory_order_acquire) != s - 1)
				_mm_pause();
			atomic_store_explicit(&p->line, s, memory_order_release);
		}
		_exit(0);
	}
	bh_pin(0);
	while (!atomic_load(&p->ready))
		_mm_pause();
	hist_init(&h);
	for (uint64_t s = 2; s <= 2 * (uint64_t)n; s += 2) {
		uint64_t t0 = bh_ticks();

		atomic_store_explicit(&p->line, s - 1, memory_order_release);
		while (atomic_load_explicit(&p->line, memory_order_acquire) != s)
			_mm_pause();
		if (s > (uint64_t)n / 5)	/* warm-up */
			hist_record(&h, (uint64_t)((double)(bh_ticks() - t0) *
						   ns_per_tick));
	}
	waitpid(pid, NULL, 0);
	return hist_percentile(&h, 50);
}

int bh_moved(uint64_t f0, uint64_t f1)
{
	uint64_t lo = f0 < f1 ? f0 : f1, d = f0 > f1 ? f0 - f1 : f1 - f0;

	return d * 4 > lo;
}

FILE *bh_result_file(const char *name)
{
	char path[256];
	FILE *f;

	mkdir("benchmarks/results", 0755);
	snprintf(path, sizeof(path), "benchmarks/results/%s", name);
	f = fopen(path, "w");
	if (!f)
		perror(path);
	return f;
}
