/* SPDX-License-Identifier: MIT */
/*
 * bench_wakeup.c - a subscriber that sleeps instead of spinning: how long
 * from a publish to its handler, what CPU it uses while messages trickle
 * in, and what CPU it uses idle.  Against the raw futex ping: one process
 * stores a timestamp, bumps a word and calls FUTEX_WAKE; the other sleeps
 * in FUTEX_WAIT on the word.  That is the kernel's floor for waking a
 * sleeping process, and shmbus's sleeping subscribers use the same call.
 *
 * Publisher (or waker) on CPU 0, sleeper on CPU 1.  One message every
 * 200 us, so the sleeper is asleep (its spin phase is 1 ns) when it comes.
 * Latency: from the timestamp taken just before the publish (or the wake)
 * to the moment the handler (or the woken process) reads it.
 *
 *   bench_wakeup [-q]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "hist.h"
#include "shmbus.h"

#define GAP_US 200

struct shared {
	_Alignas(64) _Atomic uint32_t word;	/* the raw futex */
	_Alignas(64) _Atomic uint64_t sent;	/* ticks at the wake */
	_Alignas(64) _Atomic uint64_t ack;
	_Alignas(64) _Atomic int ready;
	double cpu_pct;				/* the sleeper's, measured */
	char dir[64];
	struct hist h;
};

static struct shared *sh;

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void record(uint64_t sent)
{
	hist_record(&sh->h, (uint64_t)((double)(bh_ticks() - sent) *
				       bh_ns_per_tick()));
}

/* ------------------------------------------------------------ raw futex */

static void futex_sleeper(long n)
{
	uint32_t seen = 0;
	uint64_t t0 = bh_now_ns();
	double c0 = cpu_seconds();

	bh_pin(1);
	atomic_store(&sh->ready, 1);
	for (long i = 1; i <= n; i++) {
		while ((seen = atomic_load(&sh->word)) != (uint32_t)i)
			syscall(SYS_futex, &sh->word, FUTEX_WAIT, seen, NULL,
				NULL, 0);
		record(atomic_load(&sh->sent));
		atomic_store(&sh->ack, (uint64_t)i);
	}
	sh->cpu_pct = 100.0 * (cpu_seconds() - c0) /
		      ((double)(bh_now_ns() - t0) / 1e9);
	_exit(0);
}

static void futex_waker(long n)
{
	for (long i = 1; i <= n; i++) {
		usleep(GAP_US);
		atomic_store(&sh->sent, bh_ticks());
		atomic_store(&sh->word, (uint32_t)i);
		syscall(SYS_futex, &sh->word, FUTEX_WAKE, INT_MAX, NULL, NULL,
			0);
		while (atomic_load(&sh->ack) != (uint64_t)i)
			_mm_pause();
	}
}

/* --------------------------------------------------------------- shmbus */

static int on_msg(const struct shmbus_msg *m, void *arg)
{
	uint64_t sent;

	(void)arg;
	memcpy(&sent, m->data, sizeof(sent));
	record(sent);
	atomic_fetch_add(&sh->ack, 1);
	return 0;
}

/* A sleeping subscriber on CPU 1.  With n > 0 it handles n messages; with
 * n == 0 it waits idle_ms with nothing published.  Either way it stores
 * the CPU it used, as a percentage of the time it ran. */
static void sb_sleeper(long n, long idle_ms)
{
	struct shmbus_sub_attr sa = { .wait = SHMBUS_WAIT_SLEEP,
				      .spin_ns = n ? 1 : 0 };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "w");
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	uint64_t t0 = bh_now_ns();
	double c0 = cpu_seconds();

	if (!sub)
		_exit(2);
	bh_pin(1);
	atomic_store(&sh->ready, 1);
	if (n == 0)
		shmbus_wait(sub, idle_ms * 1000000);
	while (atomic_load(&sh->ack) < (uint64_t)n) {
		if (shmbus_wait(sub, -1) == 0)
			shmbus_poll(sub, on_msg, NULL, 0);
	}
	sh->cpu_pct = 100.0 * (cpu_seconds() - c0) /
		      ((double)(bh_now_ns() - t0) / 1e9);
	_exit(0);
}

static void sb_publisher(long n)
{
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "w");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;

	if (!pub)
		return;
	for (long i = 1; i <= n; i++) {
		uint64_t t;

		usleep(GAP_US);
		t = bh_ticks();
		shmbus_publish(pub, &t, sizeof(t));
		while (atomic_load(&sh->ack) != (uint64_t)i)
			_mm_pause();
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
}

static int setup_channel(void)
{
	struct shmbus_channel_attr a;
	shmbus_channel *ch;

	snprintf(sh->dir, sizeof(sh->dir), "/dev/shm/shmbus-bench-XXXXXX");
	if (!mkdtemp(sh->dir))
		return -1;
	shmbus_channel_attr_init(&a);
	a.capacity = 1u << 16;
	a.max_msg = 64;
	ch = shmbus_channel_create(sh->dir, "w", &a, SHMBUS_CREATE_EXCL);
	if (!ch)
		return -1;
	shmbus_channel_close(ch);
	return 0;
}

static void drop_channel(void)
{
	shmbus_channel_unlink(sh->dir, "w");
	rmdir(sh->dir);
}

enum what { FUTEX, SHMBUS };

static int run(enum what w, long n)
{
	pid_t pid;
	int st;

	hist_init(&sh->h);
	atomic_store(&sh->word, 0);
	atomic_store(&sh->ack, 0);
	atomic_store(&sh->ready, 0);
	if (w == SHMBUS && setup_channel())
		return -1;
	pid = bh_fork();
	if (pid == 0) {
		if (w == FUTEX)
			futex_sleeper(n);
		sb_sleeper(n, 0);
	}
	bh_pin(0);
	while (!atomic_load(&sh->ready))
		usleep(100);
	if (w == FUTEX)
		futex_waker(n);
	else
		sb_publisher(n);
	waitpid(pid, &st, 0);
	if (w == SHMBUS)
		drop_channel();
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static void row(const char *name, const struct hist *h, double cpu,
		double base50, uint64_t f0, uint64_t f1, FILE *csv)
{
	double p50 = (double)hist_percentile(h, 50);

	printf("%-8s %6llu %7.0f %7llu %7llu %8llu %8llu  %5.2f  %6.1f%%  "
	       "%llu/%llu%s\n", name, (unsigned long long)h->min, p50,
	       (unsigned long long)hist_percentile(h, 90),
	       (unsigned long long)hist_percentile(h, 99),
	       (unsigned long long)hist_percentile(h, 99.9),
	       (unsigned long long)h->max, p50 / base50, cpu,
	       (unsigned long long)f0, (unsigned long long)f1,
	       bh_moved(f0, f1) ? "  placement changed" : "");
	if (csv)
		fprintf(csv, "%s,%llu,%.0f,%llu,%llu,%llu,%llu,%.2f\n", name,
			(unsigned long long)h->min, p50,
			(unsigned long long)hist_percentile(h, 90),
			(unsigned long long)hist_percentile(h, 99),
			(unsigned long long)hist_percentile(h, 99.9),
			(unsigned long long)h->max, cpu);
}

int main(int argc, char **argv)
{
	int quick = argc > 1 && !strcmp(argv[1], "-q");
	long n = quick ? 1000 : 20000, idle_ms = quick ? 200 : 2000;
	long probe = quick ? 5000 : 50000;
	FILE *csv = quick ? NULL : bh_result_file("wakeup.csv");
	struct hist fh;
	double fcpu;
	uint64_t f0, f1;
	pid_t pid;

	sh = bh_shared(sizeof(*sh));
	if (!sh || sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		fprintf(stderr, "bench_wakeup: needs two CPUs\n");
		return 1;
	}
	bh_calibrate();
	if (csv)
		fprintf(csv, "what,min,p50,p90,p99,p99_9,max,cpu_pct\n");
	printf("# wake-up: publish (or FUTEX_WAKE) on CPU 0 -> handler of a "
	       "sleeping process on CPU 1, ns; one every %d us, %ld samples\n",
	       GAP_US, n);
	printf("# ratio: p50 / the raw futex p50; cpu: the sleeper's CPU use "
	       "during the run; floor: cache-line RTT p50 before/after\n");
	printf("%-8s %6s %7s %7s %7s %8s %8s  %5s  %7s  %s\n", "what", "min",
	       "p50", "p90", "p99", "p99.9", "max", "ratio", "cpu", "floor");
	f0 = bh_floor_p50(probe);
	if (run(FUTEX, n))
		return 1;
	f1 = bh_floor_p50(probe);
	fh = sh->h;
	fcpu = sh->cpu_pct;
	row("futex", &fh, fcpu, (double)hist_percentile(&fh, 50), f0, f1, csv);
	f0 = f1;
	if (run(SHMBUS, n))
		return 1;
	f1 = bh_floor_p50(probe);
	row("shmbus", &sh->h, sh->cpu_pct, (double)hist_percentile(&fh, 50),
	    f0, f1, csv);

	/* Idle: nothing is published for idle_ms. */
	if (setup_channel())
		return 1;
	pid = bh_fork();
	if (pid == 0)
		sb_sleeper(0, idle_ms);
	waitpid(pid, NULL, 0);
	drop_channel();
	printf("\n# idle: a sleeping subscriber with nothing published for "
	       "%ld ms used %.3f%% of a CPU\n", idle_ms, sh->cpu_pct);
	if (csv) {
		fprintf(csv, "idle,0,0,0,0,0,0,%.3f\n", sh->cpu_pct);
		fclose(csv);
	}
	return 0;
}
