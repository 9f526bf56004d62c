/* SPDX-License-Identifier: MIT */
/*
 * bench_wakeup.c - a subscriber, and a consumer group's member, that sleep
 * instead of spinning: how long from a publish to the handler, what CPU
 * they use while messages trickle in, and what CPU they use idle.  Against
 * the raw futex ping: one process
 * stores a timestamp, bumps a word and calls FUTEX_WAKE; the other sleeps
 * in FUTEX_WAIT on the word.  That is the kernel's floor for waking a
 * sleeping process, and shmbus's sleeping subscribers use the same call.
 *
 * Publisher (or waker) on CPU 0, sleeper on CPU 1.  One message every
 * 200 us, so the sleeper is asleep (its spin phase is 1 ns) when it comes.
 * Latency: from the timestamp taken just before the publish (or the wake)
 * to the moment the handler (or the woken process) reads it.  The futex
 * shmbus's subscriber and the member (a shared group of its own channel,
 * shmbus_group_wait() then a poll of one and its ack) take turns in blocks
 * of BLOCK messages between the same two processes: how long the host
 * takes to wake a vCPU moves by tens of percent within minutes, which
 * would move a ratio of kinds timed one after the other by as much.
 *
 *   bench_wakeup [-q]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <limits.h>
#include <signal.h>
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
#define BLOCK 500	/* messages of one kind before the other's turn */
#define WARM 10		/* of them, not recorded after a switch */

enum what { FUTEX, SHMBUS, GROUP, KINDS };

struct shared {
	_Alignas(64) _Atomic uint32_t word;	/* the raw futex */
	_Alignas(64) _Atomic uint64_t sent;	/* ticks at the wake */
	_Alignas(64) _Atomic uint64_t ack;
	_Alignas(64) _Atomic int ready;
	double cpu_pct[KINDS];			/* the sleeper's, measured */
	double idle_pct[KINDS];			/* idle: SHMBUS, GROUP */
	char dir[64];
	struct hist h[KINDS];
};

static struct shared *sh;

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* Message m (from 1) of the whole run: its kind, and whether it counts. */
static enum what kind_of(long m)
{
	return (enum what)((m - 1) / BLOCK % KINDS);
}

static void record(long m, uint64_t sent)
{
	if ((m - 1) % BLOCK >= WARM)
		hist_record(&sh->h[kind_of(m)],
			    (uint64_t)((double)(bh_ticks() - sent) *
				       bh_ns_per_tick()));
}

static int on_msg(const struct shmbus_msg *m, void *arg)
{
	uint64_t sent;

	memcpy(&sent, m->data, sizeof(sent));
	record(*(long *)arg, sent);
	return 0;
}

struct gtake {
	long m;
	struct shmbus_lease lease;
};

static int on_gmsg(const struct shmbus_group_msg *m, void *arg)
{
	struct gtake *t = arg;
	uint64_t sent;

	memcpy(&sent, m->data, sizeof(sent));
	record(t->m, sent);
	t->lease = m->lease;
	return 0;
}

/* The member's turn: waits, takes one message and acknowledges it;
 * 0, or -errno. */
static int group_take(shmbus_group *g, long m)
{
	struct gtake t = { .m = m };
	int n = 0;

	while (n == 0) {
		int rc = shmbus_group_wait(g, -1);

		if (rc && rc != -ETIMEDOUT)
			return rc;
		n = shmbus_group_poll(g, on_gmsg, &t, 1);
	}
	return n < 0 ? n : shmbus_group_ack(g, &t.lease);
}

/*
 * The sleeper, on CPU 1.  With n > 0 it takes KINDS * n messages, the
 * kinds' blocks in turn, and stores the CPU it used during each kind's
 * blocks as a percentage of their time; with n == 0 it waits idle_ms as
 * kind `idle` (SHMBUS or GROUP) with nothing published, and stores the
 * CPU it used then in idle_pct[idle].
 */
static void sleeper(long n, long idle_ms, enum what idle)
{
	struct shmbus_sub_attr sa = { .wait = SHMBUS_WAIT_SLEEP,
				      .spin_ns = n ? 1 : 0 };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "w");
	shmbus_channel *gch = shmbus_channel_open(sh->dir, "g");
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	shmbus_group *g = gch ? shmbus_group_join(gch, "g", "m", NULL) : NULL;
	double cpu[KINDS] = { 0 }, wall[KINDS] = { 0 };
	double c0 = cpu_seconds();
	uint64_t t0 = bh_now_ns();

	if (!sub || !g ||
	    shmbus_group_set_wait(g, SHMBUS_WAIT_SLEEP, sa.spin_ns ? 1 : 0))
		_exit(2);
	bh_pin(1);
	atomic_store(&sh->ready, 1);
	if (n == 0) {
		struct gtake t = { .m = 0 };

		/* A wait before the first poll returns at once. */
		if (idle == GROUP && shmbus_group_poll(g, on_gmsg, &t, 1))
			_exit(5);
		c0 = cpu_seconds();
		t0 = bh_now_ns();
		if (idle == GROUP)
			shmbus_group_wait(g, idle_ms * 1000000);
		else
			shmbus_wait(sub, idle_ms * 1000000);
		sh->idle_pct[idle] = 100.0 * (cpu_seconds() - c0) /
				     ((double)(bh_now_ns() - t0) / 1e9);
		_exit(0);
	}
	for (long m = 1; m <= KINDS * n; m++) {
		enum what k = kind_of(m);
		uint32_t seen;

		if ((m - 1) % BLOCK == 0) {	/* a turn starts */
			c0 = cpu_seconds();
			t0 = bh_now_ns();
		}
		if (k == FUTEX) {
			/* seq_cst: pairs with the waker's store of word, made
			 * after its store of sent, which is then visible. */
			while ((seen = atomic_load(&sh->word)) != (uint32_t)m)
				syscall(SYS_futex, &sh->word, FUTEX_WAIT, seen,
					NULL, NULL, 0);
			record(m, atomic_load(&sh->sent));
		} else if (k == GROUP) {
			if (group_take(g, m))
				_exit(4);
		} else {
			int got = 0;

			while (got == 0)
				if (shmbus_wait(sub, -1) == 0)
					got = shmbus_poll(sub, on_msg, &m, 0);
			if (got < 0)
				_exit(3);
		}
		/* seq_cst: pairs with the waker's load of ack; the message
		 * has been taken before the next one is sent. */
		atomic_store(&sh->ack, (uint64_t)m);
		if (m % BLOCK == 0 || m == KINDS * n) {	/* it ends */
			cpu[k] += cpu_seconds() - c0;
			wall[k] += (double)(bh_now_ns() - t0) / 1e9;
		}
	}
	for (int k = 0; k < KINDS; k++)
		sh->cpu_pct[k] = wall[k] > 0 ? 100.0 * cpu[k] / wall[k] : 0;
	_exit(0);
}

/* CPU 0: a message every GAP_US, by the futex or shmbus in turn. */
static int waker(long n)
{
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "w");
	shmbus_channel *gch = shmbus_channel_open(sh->dir, "g");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	shmbus_pub *gpub = gch ? shmbus_pub_open(gch, NULL) : NULL;

	if (!pub || !gpub)
		return -1;
	for (long m = 1; m <= KINDS * n; m++) {
		uint64_t t;

		usleep(GAP_US);
		t = bh_ticks();
		if (kind_of(m) == FUTEX) {
			atomic_store(&sh->sent, t);
			/* seq_cst: pairs with the sleeper's load of word. */
			atomic_store(&sh->word, (uint32_t)m);
			syscall(SYS_futex, &sh->word, FUTEX_WAKE, INT_MAX,
				NULL, NULL, 0);
		} else
			shmbus_publish(kind_of(m) == GROUP ? gpub : pub, &t,
				       sizeof(t));
		while (atomic_load(&sh->ack) != (uint64_t)m)
			_mm_pause();
	}
	shmbus_pub_close(pub);
	shmbus_pub_close(gpub);
	shmbus_channel_close(ch);
	shmbus_channel_close(gch);
	return 0;
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
	for (int i = 0; i < 2; i++) {
		ch = shmbus_channel_create(sh->dir, i ? "g" : "w", &a,
					   SHMBUS_CREATE_EXCL);
		if (!ch)
			return -1;
		shmbus_channel_close(ch);
	}
	return 0;
}

/* The channels, and the group's file with "g" (shmbus_channel_unlink()). */
static void drop_channel(void)
{
	shmbus_channel_unlink(sh->dir, "w");
	shmbus_channel_unlink(sh->dir, "g");
	rmdir(sh->dir);
}

/* n messages of each kind, taking turns; 0 on success. */
static int run(long n)
{
	pid_t pid;
	int st, rc;

	for (int k = 0; k < KINDS; k++)
		hist_init(&sh->h[k]);
	atomic_store(&sh->word, 0);
	atomic_store(&sh->ack, 0);
	atomic_store(&sh->ready, 0);
	if (setup_channel())
		return -1;
	pid = bh_fork();
	if (pid == 0)
		sleeper(n, 0, SHMBUS);
	bh_pin(0);
	while (!atomic_load(&sh->ready))
		usleep(100);
	rc = waker(n);
	if (rc)
		kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	drop_channel();
	return !rc && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
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
	       "sleeping process on CPU 1, ns; one every %d us, %ld samples "
	       "each,\n# the three taking turns in blocks of %d\n", GAP_US, n,
	       BLOCK);
	printf("# ratio: p50 / the raw futex p50; cpu: the sleeper's CPU use "
	       "during the run; floor: cache-line RTT p50 before/after\n");
	printf("%-8s %6s %7s %7s %7s %8s %8s  %5s  %7s  %s\n", "what", "min",
	       "p50", "p90", "p99", "p99.9", "max", "ratio", "cpu", "floor");
	f0 = bh_floor_p50(probe);
	if (run(n))
		return 1;
	f1 = bh_floor_p50(probe);
	fh = sh->h[FUTEX];
	row("futex", &fh, sh->cpu_pct[FUTEX], (double)hist_percentile(&fh, 50),
	    f0, f1, csv);
	row("shmbus", &sh->h[SHMBUS], sh->cpu_pct[SHMBUS],
	    (double)hist_percentile(&fh, 50), f0, f1, csv);
	row("group", &sh->h[GROUP], sh->cpu_pct[GROUP],
	    (double)hist_percentile(&fh, 50), f0, f1, csv);

	/* Idle: nothing is published for idle_ms. */
	for (enum what k = SHMBUS; k < KINDS; k++) {
		if (setup_channel())
			return 1;
		pid = bh_fork();
		if (pid == 0)
			sleeper(0, idle_ms, k);
		waitpid(pid, NULL, 0);
		drop_channel();
	}
	printf("\n# idle, nothing published for %ld ms: a sleeping subscriber "
	       "used %.3f%% of a CPU, a member in shmbus_group_wait() "
	       "%.3f%%\n", idle_ms, sh->idle_pct[SHMBUS], sh->idle_pct[GROUP]);
	if (csv) {
		fprintf(csv, "idle,0,0,0,0,0,0,%.3f\n", sh->idle_pct[SHMBUS]);
		fprintf(csv, "idle_group,0,0,0,0,0,0,%.3f\n",
			sh->idle_pct[GROUP]);
		fclose(csv);
	}
	return 0;
}
