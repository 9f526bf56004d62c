/* SPDX-License-Identifier: MIT */
/*
 * bench_failover.c - how long an HA pair with etcd as arbiter
 * (docs/failover.md) is without a primary:
 *
 *   failover     the primary host killed (its daemon and its producer)
 *                under synchronous load, until the standby's channel takes
 *                writes; against the lease's term, the baseline it cannot
 *                beat (the standby waits for the key to expire);
 *   switchover   `shmbusctl switchover` on an in-sync pair, until the
 *                standby's channel takes writes;
 *   round trip   publish + shmbus_pub_sync() at `applied`, p50, with the
 *                arbiter and without it, in the same run: what leadership
 *                costs the synchronous path.
 *
 * Two hosts as network namespaces (root), a real etcd on the loopback;
 * the fixtures are the failover tests' (tests/failover_fixture.h), so the
 * program runs under Criterion.  BENCH_QUICK set (make bench-quick): one
 * round of each, fewer messages.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../tests/failover_fixture.h"
#include "../tests/helpers.h"
#include "shmbus/protocol.h"

TestSuite(bench, .init = fo_setup, .fini = fo_fini, .timeout = 900);

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* A pair under the arbiter, its keys under a prefix of their own (a
 * previous round's key and sync record stay in etcd until they expire),
 * A holding the key, and (in_sync) the standby recorded in sync. */
static void pair_up(int round, bool in_sync)
{
	char prefix[64];

	snprintf(prefix, sizeof(prefix), "/shmbus/b%d-%d", getpid(), round);
	fo_arbiter(prefix);
	if (in_sync) {
		fo_stop(fo_start(FO_CHANS, extra, 300, false));
		return;
	}
	log_open();
	pair_setup(FO_CHANS, extra);
	cr_assert(host_log_wait(&A, "holds the leader key", 10000));
}

/* Polls until h's channel takes writes; ns since t0, or 0 after 10 s. */
static uint64_t until_primary(const struct host *h, uint64_t t0)
{
	while (th_now_ns() - t0 < UINT64_C(10000000000)) {
		if (is_primary(h))
			return th_now_ns() - t0;
		usleep(500);
	}
	return 0;
}

static void report(const char *what, uint64_t *v, int n, const char *base)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	printf("%s, %d rounds: p50 %.0f ms, min %.0f ms, max %.0f ms; %s\n",
	       what, n, (double)v[n / 2] / 1e6, (double)v[0] / 1e6,
	       (double)v[n - 1] / 1e6, base);
}

/* Round trips on A: n messages, each published and then waited for at
 * the channel's level; their times (ns) in out. */
struct rtt {
	int n;
	uint64_t *out;		/* shared with the parent */
};

static int rtt_child(void *arg)
{
	struct rtt *r = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, "fo", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint8_t msg[32];

	if (!pub)
		return 2;
	memset(msg, 0x5a, sizeof(msg));
	for (int i = 0; i < r->n; i++) {
		uint64_t t0 = th_now_ns();

		if (shmbus_publish(pub, msg, sizeof(msg)) ||
		    shmbus_pub_sync(pub, 1000000000) != 0)
			return 3;
		r->out[i] = th_now_ns() - t0;
	}
	return 0;
}

static uint64_t rtt_p50(int n)
{
	struct rtt r = { n, mmap(NULL, (size_t)n * sizeof(uint64_t),
				 PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0) };
	uint64_t p50;

	cr_assert(r.out != MAP_FAILED);
	cr_assert_eq(th_wait(th_spawn(rtt_child, &r)), 0, "round trips");
	qsort(r.out, (size_t)n, sizeof(uint64_t), cmp_u64);
	p50 = r.out[n / 2];
	munmap(r.out, (size_t)n * sizeof(uint64_t));
	return p50;
}

Test(bench, failover_switchover_and_the_synchronous_round_trip)
{
	/* Criterion's main takes the command line (-q is its "quiet"):
	 * `make bench-quick` says quick through the environment. */
	bool quick = getenv("BENCH_QUICK") != NULL;
	int rounds = quick ? 1 : 5, n = quick ? 2000 : 20000;
	uint64_t fo[5], sw[5], with[3], without[3];
	char base[96];

	if (geteuid() != 0)
		cr_skip("needs root (network namespaces)");
	fo_pace_us = 0;	/* publishes back to back: the load it measures */
	for (int r = 0; r < rounds; r++) {
		pid_t pub;
		uint64_t t0;

		pair_up(r, true);
		atomic_store(&lg->stop, 0);
		pub = th_spawn(sync_publisher, NULL);
		usleep(200000);		/* under load */
		t0 = th_now_ns();
		host_kill(&A, SIGKILL);
		kill(pub, SIGKILL);
		waitpid(pub, NULL, 0);
		fo[r] = until_primary(&B, t0);
		cr_assert(fo[r], "the standby did not take over");
		pair_teardown();
	}
	snprintf(base, sizeof(base), "the lease's term %d ms (target: term + "
		 "200 ms)", TTL_MS);
	report("failover after the primary's death", fo, rounds, base);

	for (int r = 0; r < rounds; r++) {
		struct shmbus_ctl_repl_reply rep;
		uint64_t t0;

		pair_up(100 + r, true);
		t0 = th_now_ns();
		cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &rep), 0,
			     "%s", rep.text);
		sw[r] = until_primary(&B, t0);
		cr_assert(sw[r], "the standby did not take over");
		pair_teardown();
	}
	report("planned switchover (the command to the standby's first "
	       "write)", sw, rounds, "target 50 ms");

	/* With and without the arbiter, taking turns. */
	for (int k = 0; k < 6; k++) {
		/* Which goes first changes from one turn to the next. */
		if ((k & 1) == (k >> 1 & 1)) {
			pair_up(200 + k, false);
			with[k / 2] = rtt_p50(n);
		} else {
			log_open();
			pair_setup(FO_CHANS, "");
			without[k / 2] = rtt_p50(n);
		}
		pair_teardown();
	}
	for (int k = 0; k < 3; k++)
		printf("32 B publish + pub_sync(applied), p50, run %d: with the "
		       "arbiter %.1f us, without %.1f us: %.2fx\n", k + 1,
		       (double)with[k] / 1e3, (double)without[k] / 1e3,
		       (double)with[k] / (double)without[k]);
}
