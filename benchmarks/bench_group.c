/* SPDX-License-Identifier: MIT */
/*
 * bench_group.c - consumer groups (shmbus_group_*, shared mode) against a
 * broadcast subscriber (shmbus_sub_open() + shmbus_poll()) on the same
 * kind of channel, each baseline measured in the same run:
 *
 *   1. delivery throughput: one producer process (shmbus_publish(),
 *      retried while it returns -EAGAIN: the ring is full) on CPU 0; on
 *      CPU 1 a broadcast subscriber, or a shared group of one member, or
 *      of two members (forked processes that open the channel themselves
 *      and join with shmbus_group_join()).  Single claims (poll max 1, an
 *      ack per lease) and batched claims (poll max 64, one ack per poll:
 *      in shared mode a poll's messages share one lease), against the
 *      broadcast subscriber polling with the same max.  Every consumer
 *      copies each message out, as bench_throughput's do.  The machine
 *      has two cores: two members and the producer are three spinning
 *      processes, so the members share CPU 1 (they yield when idle), and
 *      the output says so.
 *   2. what a claim and its ack cost per message, in one process (CPU 0),
 *      nothing shared with another core: N messages published (untimed,
 *      fewer than the ring holds), then drained by shmbus_poll() with a
 *      no-op handler, or shmbus_group_poll(max 1) + shmbus_group_ack()
 *      per message, or shmbus_group_poll(max 64) + one ack; the kinds
 *      take turns, round after round, and each reports its median round.
 *   3. a 32-byte round trip through a one-member group against the
 *      broadcast round trip: the parent (CPU 0) publishes on a ping
 *      channel and spins on shmbus_poll() of a broadcast subscriber of
 *      the pong channel; the child (CPU 1) takes the message (broadcast:
 *      shmbus_poll(max 1); group: shmbus_group_poll(max 1)), publishes
 *      it back on pong and, in a group, then acks it.  The two ping
 *      channels (one read by a broadcast subscriber, one by the group)
 *      are alike; the two kinds take turns in blocks of RT_BLOCK round
 *      trips between the same two processes, so that both see the same
 *      placement of the two vCPUs.
 *
 * Channels are made in direct mode (shmbus_channel_create()) in a private
 * directory under /dev/shm: 1 MiB, block policy, single producer; every
 * run makes its own and removes it (shmbus_channel_unlink() removes the
 * group files too).  The floor (one cache line's round trip between CPUs
 * 0 and 1, bh_floor_p50()) is probed before and after each part.
 *
 *   bench_group [-q]     -q: a quick run (CI checks that it runs)
 *
 * Results also go to benchmarks/results/group.csv (not with -q).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "hist.h"
#include "shmbus.h"

#define CAPACITY (1u << 20)
#define MAX_MEMBERS 2
#define BATCH 64		/* poll max of the batched claims */
#define STALL_NS 10000000000ull	/* no progress for this long: a hang */

/* Shared between the parent and its children. */
struct shared {
	_Alignas(64) _Atomic int ready;
	_Alignas(64) _Atomic int go;
	_Alignas(64) _Atomic int stop;	/* someone gave up: everyone exits */
	struct {
		_Alignas(64) _Atomic uint64_t got;	/* acked so far */
	} cnt[MAX_MEMBERS];
	_Alignas(64) _Atomic uint64_t done_ns[MAX_MEMBERS];
	uint64_t sum[MAX_MEMBERS];	/* of the indices each one saw */
	struct shmbus_group_stats st;	/* the group's, at the end */
	uint64_t t0;
	char dir[64];
};

static struct shared *sh;
static uint8_t src[1024], dst[1024];
static FILE *csv;

static void fail_msg(const char *who, const char *what, int err)
{
	fprintf(stderr, "bench_group: %s: %s: %s\n", who, what,
		shmbus_strerror(err));
}

/* A private directory under /dev/shm, in sh->dir. */
static int make_dir(void)
{
	snprintf(sh->dir, sizeof(sh->dir), "/dev/shm/shmbus-bench-XXXXXX");
	return mkdtemp(sh->dir) ? 0 : -errno;
}

static shmbus_channel *make_channel(const char *name)
{
	struct shmbus_channel_attr a;
	shmbus_channel *ch;

	shmbus_channel_attr_init(&a);
	a.capacity = CAPACITY;	/* block policy, single producer */
	ch = shmbus_channel_create(sh->dir, name, &a, SHMBUS_CREATE_EXCL);
	if (!ch)
		fail_msg("create", name, errno);
	return ch;
}

static shmbus_group *join(shmbus_channel *ch, const char *member)
{
	struct shmbus_group_attr ga;
	shmbus_group *m;

	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_SHARED;
	m = shmbus_group_join(ch, "g", member, &ga);
	if (!m)
		fail_msg("join", member, errno);
	return m;
}

/* Waits for the children, at most timeout_s seconds; those still running
 * then are killed (a hang).  0 if all exited with 0. */
static int reap(pid_t *pids, int n, int timeout_s)
{
	uint64_t end = bh_now_ns() + (uint64_t)timeout_s * 1000000000u;
	int left = 0, rc = 0;

	for (int i = 0; i < n; i++)
		left += pids[i] > 0;
	while (left) {
		for (int i = 0; i < n; i++) {
			int st;

			if (pids[i] <= 0 || waitpid(pids[i], &st, WNOHANG) <= 0)
				continue;
			if (!WIFEXITED(st) || WEXITSTATUS(st)) {
				fprintf(stderr, "bench_group: child %d: %s %d\n",
					i, WIFEXITED(st) ? "exit" : "signal",
					WIFEXITED(st) ? WEXITSTATUS(st)
						      : WTERMSIG(st));
				rc = -1;
			}
			pids[i] = 0;
			left--;
		}
		if (left && bh_now_ns() > end) {
			fprintf(stderr, "bench_group: %d child(ren) still "
				"running after %d s: killed (a hang)\n", left,
				timeout_s);
			for (int i = 0; i < n; i++)
				if (pids[i] > 0) {
					kill(pids[i], SIGKILL);
					waitpid(pids[i], NULL, 0);
				}
			return -1;
		}
		if (left)
			usleep(1000);
	}
	return rc;
}

static void remove_dir(const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		shmbus_channel_unlink(sh->dir, names[i]);
	if (rmdir(sh->dir))
		fprintf(stderr, "bench_group: %s left behind: %s\n", sh->dir,
			strerror(errno));
}

/* ------------------------------------------------------- 1. throughput */

enum kind { BCAST, GROUP };

/* A consumer's handlers: copy the message out, count it, add its index
 * (the first 8 bytes, as the producer wrote them); a member also keeps
 * the lease. */
struct take {
	uint64_t got, sum;
	struct shmbus_lease lease;
};

static int bc_take(const struct shmbus_msg *m, void *arg)
{
	struct take *c = arg;
	uint64_t i;

	memcpy(dst, m->data, m->len);
	memcpy(&i, dst, sizeof(i));
	c->sum += i;
	c->got++;
	return 0;
}

static int g_take(const struct shmbus_group_msg *m, void *arg)
{
	struct take *c = arg;
	uint64_t i;

	memcpy(dst, m->data, m->len);
	memcpy(&i, dst, sizeof(i));
	c->sum += i;
	c->got++;
	c->lease = m->lease;
	return 0;
}

static uint64_t total_got(int members)
{
	uint64_t t = 0;

	for (int i = 0; i < members; i++)
		/* Acquire: pairs with the member's release after its ack;
		 * the group's counters of those messages are visible. */
		t += atomic_load_explicit(&sh->cnt[i].got,
					  memory_order_acquire);
	return t;
}

/* An idle consumer: yields if it shares its CPU; says it is stuck (and
 * returns true) after STALL_NS without progress; exits (7) if another
 * process of the run gave up. */
static bool idle(bool shared_cpu, uint64_t *spins, uint64_t *since,
		 uint64_t got_now, uint64_t *got_then)
{
	if (shared_cpu)
		sched_yield();
	else
		_mm_pause();
	if (++*spins % 4096)
		return false;
	if (atomic_load_explicit(&sh->stop, memory_order_relaxed))
		_exit(7);
	if (got_now != *got_then) {
		*got_then = got_now;
		*since = bh_now_ns();
		return false;
	}
	return bh_now_ns() - *since > STALL_NS;
}

static void print_group_stats(const char *who, shmbus_group *m)
{
	struct shmbus_group_stats st;

	if (shmbus_group_stats(m, &st)) {
		fprintf(stderr, "bench_group: %s: no stats\n", who);
		return;
	}
	fprintf(stderr, "bench_group: %s: group stats: members %u in_flight "
		"%u floor %llu claim %llu head %llu delivered %llu "
		"redelivered %llu acked %llu expired %llu released %llu "
		"window_full %llu\n", who, st.members, st.in_flight,
		(unsigned long long)st.floor, (unsigned long long)st.claim,
		(unsigned long long)st.head, (unsigned long long)st.delivered,
		(unsigned long long)st.redelivered,
		(unsigned long long)st.acked, (unsigned long long)st.expired,
		(unsigned long long)st.released,
		(unsigned long long)st.window_full);
}

/* A consumer process: subscriber or member idx, until n messages have
 * been taken by all consumers together. */
static void consumer(int idx, enum kind kind, int members, unsigned max,
		     uint64_t n)
{
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "tp");
	shmbus_sub *sub = NULL;
	shmbus_group *m = NULL;
	struct take c = { 0, 0, { { 0, 0, 0 } } };
	bool shared_cpu = members > 1;
	uint64_t spins = 0, since, got_then = 0;
	char name[8];

	snprintf(name, sizeof(name), "w%d", idx);
	if (!ch) {
		fail_msg("consumer", "open", errno);
		_exit(2);
	}
	if (kind == BCAST)
		sub = shmbus_sub_open(ch, NULL);
	else
		m = join(ch, name);
	if (!sub && !m)
		_exit(2);
	bh_pin(1);
	atomic_fetch_add(&sh->ready, 1);
	since = bh_now_ns();
	for (;;) {
		int r;

		if (kind == BCAST) {
			if (c.got >= n)
				break;
			r = shmbus_poll(sub, bc_take, &c, max);
			if (r < 0) {
				fail_msg(name, "shmbus_poll", r);
				_exit(3);
			}
		} else {
			r = shmbus_group_poll(m, g_take, &c, max);
			if (r < 0) {
				fail_msg(name, "shmbus_group_poll", r);
				_exit(3);
			}
			if (r > 0) {
				int rc = shmbus_group_ack(m, &c.lease);

				if (rc) {
					fail_msg(name, "shmbus_group_ack", rc);
					_exit(4);
				}
				atomic_store_explicit(&sh->cnt[idx].got, c.got,
						      memory_order_release);
			} else if (total_got(members) >= n)
				break;
		}
		if (r == 0 && idle(shared_cpu, &spins, &since, c.got,
				   &got_then)) {
			fprintf(stderr, "bench_group: %s: no message for %.0f "
				"s with %llu of %llu taken (all consumers: "
				"%llu)\n", name, STALL_NS / 1e9,
				(unsigned long long)c.got,
				(unsigned long long)n,
				(unsigned long long)total_got(members));
			if (m)
				print_group_stats(name, m);
			atomic_store(&sh->stop, 1);
			_exit(5);
		}
	}
	atomic_store(&sh->done_ns[idx], bh_now_ns());
	atomic_store(&sh->cnt[idx].got, c.got);
	sh->sum[idx] = c.sum;
	if (m && idx == 0 && shmbus_group_stats(m, &sh->st))
		_exit(6);
	if (m)
		shmbus_group_leave(m);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	_exit(0);
}

struct rate {
	double msgs;		/* per second, all consumers together */
	double share0;		/* of member 0, % */
	int ok;
};

/* The producer: n messages of `size` bytes, index i in the first 8. */
static int produce(shmbus_channel *ch, size_t size, uint64_t n)
{
	struct shmbus_pub_attr pa = { .timeout_ns = 0 };
	shmbus_pub *pub = shmbus_pub_open(ch, &pa);
	uint64_t since = 0;

	if (!pub) {
		fail_msg("producer", "open", errno);
		return -1;
	}
	bh_pin(0);
	sh->t0 = bh_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		int rc;

		memcpy(src, &i, sizeof(i));
		for (uint64_t spins = 0;
		     (rc = shmbus_publish(pub, src, size)) == -EAGAIN;
		     spins++) {
			_mm_pause();
			if (spins % 65536)
				continue;
			if (!spins) {
				since = bh_now_ns();
				continue;
			}
			if (bh_now_ns() - since > STALL_NS ||
			    atomic_load(&sh->stop)) {
				struct shmbus_channel_info ci;

				shmbus_channel_info(ch, &ci);
				fprintf(stderr, "bench_group: producer: ring "
					"full for %.0f s at message %llu of "
					"%llu (head %llu, subscribers %u)\n",
					(double)(bh_now_ns() - since) / 1e9,
					(unsigned long long)i,
					(unsigned long long)n,
					(unsigned long long)ci.head,
					ci.subscribers);
				atomic_store(&sh->stop, 1);
				shmbus_pub_close(pub);
				return -1;
			}
		}
		if (rc) {
			fail_msg("producer", "shmbus_publish", rc);
			atomic_store(&sh->stop, 1);
			shmbus_pub_close(pub);
			return -1;
		}
	}
	shmbus_pub_close(pub);
	return 0;
}

static struct rate run_tp(enum kind kind, int members, unsigned max,
			  size_t size, uint64_t n)
{
	static const char *const names[] = { "tp" };
	struct rate r = { 0, 0, 0 };
	pid_t pids[MAX_MEMBERS] = { 0 };
	uint64_t end = UINT64_MAX, got = 0, sum = 0;
	shmbus_channel *ch;
	int rc;

	if (make_dir())
		return r;
	if (!(ch = make_channel("tp"))) {
		rmdir(sh->dir);
		return r;
	}
	atomic_store(&sh->ready, 0);
	atomic_store(&sh->stop, 0);
	for (int i = 0; i < MAX_MEMBERS; i++) {
		atomic_store(&sh->cnt[i].got, 0);
		atomic_store(&sh->done_ns[i], 0);
		sh->sum[i] = 0;
	}
	memset(&sh->st, 0, sizeof(sh->st));
	/* One at a time: each member joins before the next is forked. */
	for (int i = 0; i < members; i++) {
		pids[i] = bh_fork();
		if (pids[i] == 0)
			consumer(i, kind, members, max, n);
		while (atomic_load(&sh->ready) < i + 1) {
			if (pids[i] < 0 ||
			    waitpid(pids[i], NULL, WNOHANG) != 0) {
				fprintf(stderr, "bench_group: consumer %d "
					"gone before it was ready\n", i);
				pids[i] = 0;
				break;
			}
			usleep(100);
		}
		if (atomic_load(&sh->ready) < i + 1)
			break;
	}
	rc = atomic_load(&sh->ready) == members ? produce(ch, size, n) : -1;
	if (rc)
		atomic_store(&sh->stop, 1);
	if (reap(pids, members, rc ? 5 : 60))
		rc = -1;
	for (int i = 0; i < members; i++) {
		uint64_t d = atomic_load(&sh->done_ns[i]);

		if (d && d < end)
			end = d;
		got += atomic_load(&sh->cnt[i].got);
		sum += sh->sum[i];
	}
	if (!rc && (got != n || sum != n * (n - 1) / 2)) {
		fprintf(stderr, "bench_group: %s, %d member(s), max %u, %zu B: "
			"%llu messages taken of %llu published (index sum "
			"%llu, expected %llu): wrong count\n",
			kind == BCAST ? "broadcast" : "group", members, max,
			size, (unsigned long long)got, (unsigned long long)n,
			(unsigned long long)sum,
			(unsigned long long)(n * (n - 1) / 2));
		rc = -1;
	}
	if (!rc && kind == GROUP &&
	    (sh->st.delivered != n || sh->st.redelivered)) {
		fprintf(stderr, "bench_group: group stats say delivered %llu "
			"(of %llu), redelivered %llu\n",
			(unsigned long long)sh->st.delivered,
			(unsigned long long)n,
			(unsigned long long)sh->st.redelivered);
		rc = -1;
	}
	if (!rc && end != UINT64_MAX) {
		r.msgs = (double)n * 1e9 / (double)(end - sh->t0);
		r.share0 = 100.0 * (double)atomic_load(&sh->cnt[0].got) /
			   (double)n;
		r.ok = 1;
	}
	shmbus_channel_close(ch);
	remove_dir(names, 1);
	return r;
}

static void csv_row(const char *part, const char *what, size_t size,
		    int members, unsigned max, double value, const char *unit,
		    double ratio, uint64_t f0, uint64_t f1)
{
	if (csv)
		fprintf(csv, "%s,%s,%zu,%d,%u,%.1f,%s,%.3f,%llu,%llu\n", part,
			what, size, members, max, value, unit, ratio,
			(unsigned long long)f0, (unsigned long long)f1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The median of v[0..n), sorted in place. */
static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return v[n / 2];
}

#define TP_ROUNDS_MAX 5

static int part_throughput(int quick, long probe)
{
	static const size_t sizes[] = { 32, 1024 };
	static const unsigned maxes[] = { 1, BATCH };
	int rounds = quick ? 1 : 3, bad = 0;

	printf("# 1. delivery throughput, M msg/s of all consumers together: "
	       "producer (shmbus_publish, retried on -EAGAIN)\n"
	       "#    on CPU 0, consumers on CPU 1, a 1 MiB block channel; "
	       "every message copied out.  bcast: a broadcast\n"
	       "#    subscriber polling with the same max; group x1, x2: a "
	       "shared group of 1 or 2 members.\n"
	       "#    single: poll max 1, an ack per message; batch: poll max "
	       "%d, one ack per poll (one lease).\n"
	       "#    The three take turns, %d round%s; rates: the median "
	       "round; ratio: the median of each round's group / bcast.\n"
	       "#    NOTE: this machine has %ld cores: 2 members + the "
	       "producer are 3 spinning processes, which oversubscribe it\n"
	       "#    (the two members share CPU 1 and yield when idle; "
	       "split: %% of the messages member 0 took).\n"
	       "#    floor: cache-line RTT p50 before/after, ns\n", BATCH,
	       rounds, rounds > 1 ? "s" : "", sysconf(_SC_NPROCESSORS_ONLN));
	printf("%5s %-7s %9s %9s %6s %9s %6s %6s  %s\n", "bytes", "claims",
	       "bcast", "group x1", "ratio", "group x2", "ratio", "split",
	       "floor");
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t size = sizes[s];
		uint64_t n = size <= 64 ? (quick ? 200000 : 3000000)
					: (quick ? 100000 : 1000000);

		for (size_t k = 0; k < sizeof(maxes) / sizeof(maxes[0]); k++) {
			unsigned max = maxes[k];
			uint64_t f0 = bh_floor_p50(probe), f1;
			double b[TP_ROUNDS_MAX], g1[TP_ROUNDS_MAX],
				g2[TP_ROUNDS_MAX], r1[TP_ROUNDS_MAX],
				r2[TP_ROUNDS_MAX], sp[TP_ROUNDS_MAX];
			const char *claims = max == 1 ? "single" : "batch";
			int ok = 1;

			for (int r = 0; r < rounds; r++) {
				struct rate rb = run_tp(BCAST, 1, max, size, n);
				struct rate rg1 = run_tp(GROUP, 1, max, size, n);
				struct rate rg2 = run_tp(GROUP, 2, max, size, n);

				ok &= rb.ok && rg1.ok && rg2.ok;
				b[r] = rb.msgs;
				g1[r] = rg1.msgs;
				g2[r] = rg2.msgs;
				r1[r] = rb.ok ? rg1.msgs / rb.msgs : 0;
				r2[r] = rb.ok ? rg2.msgs / rb.msgs : 0;
				sp[r] = rg2.share0;
			}
			f1 = bh_floor_p50(probe);
			if (!ok)
				bad = 1;
			double mb = median(b, rounds), m1 = median(g1, rounds);
			double m2 = median(g2, rounds), q1 = median(r1, rounds);
			double q2 = median(r2, rounds);

			printf("%5zu %-7s %9.2f %9.2f %6.2f %9.2f %6.2f %5.0f%%  "
			       "%llu/%llu%s%s\n", size, claims, mb / 1e6,
			       m1 / 1e6, q1, m2 / 1e6, q2, median(sp, rounds),
			       (unsigned long long)f0, (unsigned long long)f1,
			       bh_moved(f0, f1) ? "  placement changed" : "",
			       ok ? "" : "  FAILED (see stderr)");
			csv_row("throughput", "bcast", size, 1, max, mb,
				"msgs_per_s", 1.0, f0, f1);
			csv_row("throughput", "group", size, 1, max, m1,
				"msgs_per_s", q1, f0, f1);
			csv_row("throughput", "group", size, 2, max, m2,
				"msgs_per_s", q2, f0, f1);
		}
	}
	return bad;
}

/* ------------------------------------------------------ 2. claim + ack */

static int nop(const struct shmbus_msg *m, void *arg)
{
	(void)m;
	(void)arg;
	return 0;
}

static int g_nop(const struct shmbus_group_msg *m, void *arg)
{
	*(struct shmbus_lease *)arg = m->lease;
	return 0;
}

enum { C_POLL64, C_POLL1, C_G1, C_G64, C_KINDS };

static const char *const cost_name[C_KINDS] = {
	"(a) broadcast: shmbus_poll(max 64), no-op handler",
	"(a') broadcast: shmbus_poll(max 1), no-op handler",
	"(b) group: poll(max 1) + ack per message",
	"(c) group: poll(max 64) + one ack per poll",
};

/* Drains what is there through kind k; the messages taken, or -1. */
static long drain(int k, shmbus_sub *sub, shmbus_group *m)
{
	struct shmbus_lease l;
	long got = 0;
	int r;

	for (;;) {
		switch (k) {
		case C_POLL64:
		case C_POLL1:
			r = shmbus_poll(sub, nop, NULL, k == C_POLL1 ? 1 : BATCH);
			break;
		default:
			r = shmbus_group_poll(m, g_nop, &l, k == C_G1 ? 1 : BATCH);
			if (r > 0) {
				int rc = shmbus_group_ack(m, &l);

				if (rc) {
					fail_msg("cost", "shmbus_group_ack", rc);
					return -1;
				}
			}
		}
		if (r < 0) {
			fail_msg("cost", "poll", r);
			return -1;
		}
		if (r == 0)
			return got;
		got += r;
	}
}

/* ns per message of each kind: the median of `rounds` rounds each. */
static int run_cost(size_t size, long per, int rounds, double *out)
{
	static const char *const names[] = { "cost" };
	struct shmbus_pub_attr pa = { .timeout_ns = 0 };
	double *t[C_KINDS];
	shmbus_channel *ch = NULL;
	shmbus_pub *pub = NULL;
	shmbus_sub *sub = NULL;
	shmbus_group *m = NULL;
	bool nomem = false;
	int rc = -1;

	for (int k = 0; k < C_KINDS; k++)
		nomem |= !(t[k] = calloc((size_t)rounds, sizeof(double)));
	if (nomem || make_dir())
		goto free;
	if (!(ch = make_channel("cost"))) {
		rmdir(sh->dir);
		goto free;
	}
	bh_pin(0);
	sub = shmbus_sub_open(ch, NULL);
	m = join(ch, "w0");
	pub = shmbus_pub_open(ch, &pa);
	if (!sub || !m || !pub)
		goto out;
	memset(src, 0x5a, sizeof(src));
	for (int r = 0; r < rounds * C_KINDS; r++) {
		int k = r % C_KINDS;
		uint64_t t0, t1;
		long got, other;

		for (long i = 0; i < per; i++) {
			int e = shmbus_publish(pub, src, size);

			if (e) {
				fail_msg("cost", "shmbus_publish", e);
				goto out;
			}
		}
		t0 = bh_ticks();
		got = drain(k, sub, m);
		t1 = bh_ticks();
		/* The other consumer, untimed: the broadcast subscriber
		 * after a group drain, the group after a broadcast one. */
		other = drain(k <= C_POLL1 ? C_G64 : C_POLL64, sub, m);
		if (got != per || other != per) {
			fprintf(stderr, "bench_group: cost, %zu B, %s: took "
				"%ld of %ld (then the other consumer %ld): "
				"wrong count\n", size, cost_name[k], got, per,
				other);
			if (m)
				print_group_stats("cost", m);
			goto out;
		}
		t[k][r / C_KINDS] = (double)(t1 - t0) * bh_ns_per_tick() /
				    (double)per;
	}
	for (int k = 0; k < C_KINDS; k++)
		out[k] = median(t[k], rounds);
	rc = 0;
out:
	shmbus_group_leave(m);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	remove_dir(names, 1);
free:
	for (int k = 0; k < C_KINDS; k++)
		free(t[k]);
	return rc;
}

static int part_cost(int quick, long probe)
{
	static const size_t sizes[] = { 32, 1024 };
	int rounds = quick ? 15 : 101, bad = 0;

	printf("\n# 2. claim + ack cost, one process on CPU 0 (nothing "
	       "crosses cores): N messages published (untimed,\n"
	       "#    fewer than the 1 MiB ring holds), then drained; ns per "
	       "message, the median of %d rounds of each,\n"
	       "#    the kinds taking turns.  ratio: / (a); same max: / the "
	       "broadcast poll with the same max\n", rounds);
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t size = sizes[s];
		/* Three quarters of the ring's records. */
		long per = (long)(CAPACITY / (16 + ((size + 7) & ~(size_t)7)) *
				  3 / 4);
		uint64_t f0 = bh_floor_p50(probe), f1;
		double ns[C_KINDS];

		if (run_cost(size, per, rounds, ns)) {
			printf("%zu B: FAILED (see stderr)\n", size);
			bad = 1;
			continue;
		}
		f1 = bh_floor_p50(probe);
		printf("# %zu-byte messages, N = %ld a round; floor %llu/%llu%s\n",
		       size, per, (unsigned long long)f0,
		       (unsigned long long)f1,
		       bh_moved(f0, f1) ? "  placement changed" : "");
		printf("%-52s %8s %6s %9s\n", "", "ns/msg", "ratio",
		       "same max");
		for (int k = 0; k < C_KINDS; k++) {
			double same = k == C_G1 ? ns[C_POLL1] : ns[C_POLL64];

			printf("%-52s %8.1f %6.2f %9.2f\n", cost_name[k],
			       ns[k], ns[k] / ns[C_POLL64],
			       k == C_POLL1 ? 1.0 : ns[k] / same);
			csv_row("cost", k <= C_POLL1 ? "bcast" : "group", size,
				1, k == C_POLL1 || k == C_G1 ? 1 : BATCH,
				ns[k], "ns_per_msg", ns[k] / ns[C_POLL64], f0,
				f1);
		}
	}
	return bad;
}

/* ------------------------------------------------------ 3. round trip */

#define RT_BLOCK 2000	/* round trips of one kind before the other's turn */
#define RT_WARM 100	/* of them, not recorded after a switch */

struct echo {
	uint8_t buf[32];
	struct shmbus_lease lease;
};

static int rt_bc(const struct shmbus_msg *m, void *arg)
{
	memcpy(((struct echo *)arg)->buf, m->data, 32);
	return 0;
}

static int rt_g(const struct shmbus_group_msg *m, void *arg)
{
	struct echo *e = arg;

	memcpy(e->buf, m->data, 32);
	e->lease = m->lease;
	return 0;
}

/* Spins until poll(arg) takes a message; -1 after STALL_NS without one. */
#define SPIN_UNTIL(call, what)						\
	do {								\
		uint64_t spins_ = 0, since_ = 0;			\
		int r_;							\
		while ((r_ = (call)) == 0) {				\
			_mm_pause();					\
			if (++spins_ % 65536)				\
				continue;				\
			if (!since_)					\
				since_ = bh_now_ns();			\
			else if (bh_now_ns() - since_ > STALL_NS ||	\
				 atomic_load(&sh->stop)) {		\
				fprintf(stderr, "bench_group: %s: "	\
					"nothing for %.0f s\n", what,	\
					STALL_NS / 1e9);		\
				r_ = -ETIMEDOUT;			\
				break;					\
			}						\
		}							\
		if (r_ < 0) {						\
			if (r_ != -ETIMEDOUT)				\
				fail_msg(what, "poll", r_);		\
			goto fail;					\
		}							\
	} while (0)

static int publish_spin(shmbus_pub *p, const void *buf)
{
	int rc;

	while ((rc = shmbus_publish(p, buf, 32)) == -EAGAIN)
		_mm_pause();
	if (rc)
		fail_msg("round trip", "shmbus_publish", rc);
	return rc;
}

/* The echo, on CPU 1: blocks of broadcast (even) and group (odd). */
static void echo_child(long blocks)
{
	shmbus_channel *pb = shmbus_channel_open(sh->dir, "ping_b");
	shmbus_channel *pg = shmbus_channel_open(sh->dir, "ping_g");
	shmbus_channel *po = shmbus_channel_open(sh->dir, "pong");
	shmbus_sub *sub = pb ? shmbus_sub_open(pb, NULL) : NULL;
	shmbus_group *m = pg ? join(pg, "w0") : NULL;
	shmbus_pub *pub = po ? shmbus_pub_open(po, NULL) : NULL;
	struct echo e;

	if (!sub || !m || !pub) {
		fail_msg("echo", "open", errno);
		_exit(2);
	}
	bh_pin(1);
	atomic_store(&sh->ready, 1);
	for (long b = 0; b < blocks; b++)
		for (long i = 0; i < RT_BLOCK; i++) {
			if (b % 2 == 0) {
				SPIN_UNTIL(shmbus_poll(sub, rt_bc, &e, 1),
					   "echo (broadcast)");
				if (publish_spin(pub, e.buf))
					goto fail;
			} else {
				int rc;

				SPIN_UNTIL(shmbus_group_poll(m, rt_g, &e, 1),
					   "echo (group)");
				if (publish_spin(pub, e.buf))
					goto fail;
				rc = shmbus_group_ack(m, &e.lease);
				if (rc) {
					fail_msg("echo", "shmbus_group_ack", rc);
					goto fail;
				}
			}
		}
	shmbus_group_leave(m);
	shmbus_pub_close(pub);
	shmbus_sub_close(sub);
	_exit(0);
fail:
	print_group_stats("echo", m);
	atomic_store(&sh->stop, 1);
	_exit(3);
}

/* n recorded round trips of each kind into h[BCAST], h[GROUP]. */
static int run_rt(long n, struct hist *h)
{
	static const char *const names[] = { "ping_b", "ping_g", "pong" };
	long blocks = 2 * ((n + RT_BLOCK - RT_WARM - 1) / (RT_BLOCK - RT_WARM));
	shmbus_channel *ch[3] = { NULL, NULL, NULL };
	shmbus_pub *pb = NULL, *pg = NULL;
	shmbus_sub *sub = NULL;
	struct echo e;
	uint8_t msg[32];
	uint64_t seq = 0;
	pid_t pid = 0;
	int rc = -1;

	hist_init(&h[BCAST]);
	hist_init(&h[GROUP]);
	if (make_dir())
		return -1;
	for (int i = 0; i < 3; i++)
		if (!(ch[i] = make_channel(names[i])))
			goto out;
	atomic_store(&sh->ready, 0);
	atomic_store(&sh->stop, 0);
	pid = bh_fork();
	if (pid == 0)
		echo_child(blocks);
	bh_pin(0);
	while (!atomic_load(&sh->ready))
		if (waitpid(pid, NULL, WNOHANG) != 0) {
			pid = 0;
			goto out;
		} else
			usleep(100);
	pb = shmbus_pub_open(ch[0], NULL);
	pg = shmbus_pub_open(ch[1], NULL);
	sub = shmbus_sub_open(ch[2], NULL);
	if (!pb || !pg || !sub) {
		fail_msg("round trip", "open", errno);
		goto fail;
	}
	memset(msg, 0x5a, sizeof(msg));
	for (long b = 0; b < blocks; b++) {
		int k = b % 2 ? GROUP : BCAST;

		for (long i = 0; i < RT_BLOCK; i++) {
			uint64_t t0, back;

			seq++;
			memcpy(msg, &seq, sizeof(seq));
			t0 = bh_ticks();
			if (publish_spin(k == GROUP ? pg : pb, msg))
				goto fail;
			SPIN_UNTIL(shmbus_poll(sub, rt_bc, &e, 1),
				   "ping (waiting for the echo)");
			if (i >= RT_WARM)
				hist_record(&h[k], (uint64_t)((double)(bh_ticks() -
							       t0) *
							      bh_ns_per_tick()));
			memcpy(&back, e.buf, sizeof(back));
			if (back != seq) {
				fprintf(stderr, "bench_group: round trip %llu "
					"(%s): echo of %llu\n",
					(unsigned long long)seq,
					k == GROUP ? "group" : "broadcast",
					(unsigned long long)back);
				goto fail;
			}
		}
	}
	rc = 0;
	goto out;
fail:
	atomic_store(&sh->stop, 1);
	rc = -1;
out:
	shmbus_sub_close(sub);
	shmbus_pub_close(pb);
	shmbus_pub_close(pg);
	if (pid > 0 && reap(&pid, 1, rc ? 15 : 30))
		rc = -1;
	for (int i = 0; i < 3; i++)
		if (ch[i])
			shmbus_channel_close(ch[i]);
	remove_dir(names, 3);
	return rc;
}

static void rt_row(const char *what, const struct hist *h, double base50,
		   double base99, uint64_t f0, uint64_t f1)
{
	double step = bh_clock_step_ns();
	double p50 = hist_percentile_step(h, 50, step);
	double p99 = (double)hist_percentile(h, 99);

	printf("%-26s %7.0f %7.0f %8llu %8llu  %6.2f %6.2f\n", what, p50, p99,
	       (unsigned long long)hist_percentile(h, 99.9),
	       (unsigned long long)h->max, p50 / base50, p99 / base99);
	csv_row("roundtrip_p50", what, 32, 1, 1, p50, "ns", p50 / base50, f0,
		f1);
	csv_row("roundtrip_p99", what, 32, 1, 1, p99, "ns", p99 / base99, f0,
		f1);
}

static int part_rt(int quick, long probe)
{
	long n = quick ? 20000 : 300000;
	struct hist *h = malloc(2 * sizeof(*h));
	uint64_t f0 = bh_floor_p50(probe), f1;
	double b50, b99, g50;
	int rc;

	printf("\n# 3. 32-byte round trip, ns: parent on CPU 0 publishes on "
	       "ping and spins on shmbus_poll of pong; the\n"
	       "#    child on CPU 1 takes it (broadcast: shmbus_poll max 1; "
	       "group of one member: shmbus_group_poll max 1),\n"
	       "#    publishes it on pong and (group) then acks.  The two "
	       "take turns in blocks of %d, %ld recorded each.\n"
	       "#    p50: interpolated within the clock's step (%.1f ns); "
	       "ratios: / broadcast's p50 and p99\n", RT_BLOCK, n,
	       bh_clock_step_ns());
	if (!h)
		return 1;
	rc = run_rt(n, h);
	f1 = bh_floor_p50(probe);
	if (rc) {
		printf("round trip: FAILED (see stderr)\n");
		free(h);
		return 1;
	}
	printf("%-26s %7s %7s %8s %8s  %6s %6s  floor %llu/%llu%s\n", "",
	       "p50", "p99", "p99.9", "max", "p50 x", "p99 x",
	       (unsigned long long)f0, (unsigned long long)f1,
	       bh_moved(f0, f1) ? "  placement changed" : "");
	b50 = hist_percentile_step(&h[BCAST], 50, bh_clock_step_ns());
	b99 = (double)hist_percentile(&h[BCAST], 99);
	g50 = hist_percentile_step(&h[GROUP], 50, bh_clock_step_ns());
	rt_row("broadcast", &h[BCAST], b50, b99, f0, f1);
	rt_row("group (1 member)", &h[GROUP], b50, b99, f0, f1);
	printf("# group / broadcast, p50: %.2fx (target <= 1.5x: %s)\n",
	       g50 / b50, g50 / b50 <= 1.5 ? "met" : "missed");
	free(h);
	return 0;
}

int main(int argc, char **argv)
{
	int quick = 0, opt, bad = 0;
	long probe;

	while ((opt = getopt(argc, argv, "q")) != -1) {
		if (opt == 'q')
			quick = 1;
		else {
			fprintf(stderr, "usage: bench_group [-q]\n");
			return 2;
		}
	}
	probe = quick ? 5000 : 50000;
	sh = bh_shared(sizeof(*sh));
	if (!sh || sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		fprintf(stderr, "bench_group: needs two CPUs and shared "
				"memory\n");
		return 1;
	}
	bh_calibrate();
	/* A quick run's figures are not results: no file. */
	csv = quick ? NULL : bh_result_file("group.csv");
	if (csv)
		fprintf(csv, "part,what,bytes,members,poll_max,value,unit,"
			     "ratio,floor_before_ns,floor_after_ns\n");
	printf("# consumer groups (shared mode) against a broadcast subscriber "
	       "on the same kind of channel (1 MiB, block,\n# single producer, "
	       "direct mode), baselines measured in the same run%s\n",
	       quick ? " (quick run: -q)" : "");
	bad |= part_throughput(quick, probe);
	bad |= part_cost(quick, probe);
	bad |= part_rt(quick, probe);
	if (csv)
		fclose(csv);
	return bad;
}
