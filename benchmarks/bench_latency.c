/* SPDX-License-Identifier: MIT */
/*
 * bench_latency.c - round-trip time between two processes pinned to two
 * cores, for shmbus and for its baselines, in one run, one harness, one
 * histogram:
 *
 *   floor    one cache line bounced between the two processes: nothing
 *            that moves data between these two cores can be faster
 *   floor2   two cache lines, one per direction, each written by one
 *            process only: the floor of any pair of one-way channels
 *   ring     two minimal rings of records with in-band commit words
 *            (ring.h): what shmbus's record protocol itself costs
 *   mbox     the same rings with shmbus's mailbox, minimal (ring.h): each
 *            record also posted to a line the consumer waits on; run
 *            only taking turns with the floors and shmbus, at 32 B
 *   shmbus   two single-producer block channels, busy-spin subscribers,
 *            shmbus_publish() out, shmbus_read() in: the copy API,
 *            which a small message takes (from the mailbox, at 32 B)
 *   shmbus-zc the same channels, zero-copy: claim/commit out, poll in
 *   pipe     two pipes, blocking read/write
 *   unix     a SOCK_SEQPACKET socketpair
 *   mq       two POSIX message queues
 *   zmq      a ZeroMQ PAIR socket over ipc:// (Debian's libzmq)
 *
 * Then the floors, shmbus, shmbus-zc and mbox (32 B) taking turns in
 * blocks of round trips between the same two processes, which gives the
 * ratios of their medians and of their tails from the same placement of
 * the two vCPUs; and shmbus
 * and mbox taking turns again, with clock readings on both sides, which
 * split the round trip into its four legs (two sends, two transfers each
 * with the poll that takes the message) and say which legs shmbus makes
 * longer than the minimal protocol, and by how much.
 *
 * Then shmbus again at a fixed offered rate (100 K round trips/s): each
 * round trip is due at its intended time, and its latency counts from
 * then, so a stall delays the ones behind it and shows in the tail
 * instead of being hidden (no coordinated omission).
 *
 * The floor is probed before and after every measurement and printed next
 * to it: the two vCPUs of a virtual machine may sit close together or far
 * apart on the host, and that can change during a run.  A measurement whose
 * floor moved by more than 25% is flagged "placement changed".
 *
 *   bench_latency [-q] [-s SIZE] [-t NAME] [-c CAPACITY]
 *          -q  a quick run (CI checks that it runs)
 *          -s  only messages of SIZE bytes
 *          -t  only these transports, comma-separated (floor2, ring,
 *              shmbus, shmbus-zc, pipe, unix, mq, zmq); the floor
 *              always runs
 *          -c  the shmbus channels' capacity in bytes (default 1 MiB)
 *   A partial run (-s, -t, -c) writes no result file.
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
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "harness.h"
#include "hist.h"
#include "ring.h"
#include "shmbus.h"
#include "transport.h"

/* Shared between the two processes. */
struct shared {
	_Alignas(64) _Atomic uint64_t line;	/* the floor's cache line */
	_Alignas(64) _Atomic uint64_t back;	/* floor2: the way back */
	_Alignas(64) _Atomic int ready;
	char dir[64];
};

static struct shared *sh;
static double ns_per_tick;
static double clock_step;	/* ns; see bh_clock_step_ns() */
static shmbus_channel *ch_ab, *ch_ba;
static shmbus_pub *pub;
static shmbus_sub *sub;
static uint8_t msgbuf[MAX_SIZE];
static uint64_t sb_capacity = 1u << 20;

/* ---- floor: one cache line, odd values from A, even from B ---- */

static uint64_t floor_seq;
/* The way back: the same line (floor) or a second one (floor2); set in the
 * setup, before the fork. */
static _Atomic uint64_t *floor_back;

static void floor_echo(size_t size)
{
	(void)size;
	floor_seq += 2;
	/* Acquire/release: the handshake itself is what is measured. */
	while (atomic_load_explicit(&sh->line, memory_order_acquire) !=
	       floor_seq - 1)
		_mm_pause();
	atomic_store_explicit(floor_back, floor_seq, memory_order_release);
}

static void floor_ping(size_t size)
{
	(void)size;
	floor_seq += 2;
	atomic_store_explicit(&sh->line, floor_seq - 1, memory_order_release);
	while (atomic_load_explicit(floor_back, memory_order_acquire) !=
	       floor_seq)
		_mm_pause();
}

static int floor_setup(void)
{
	atomic_store(&sh->line, 0);
	atomic_store(&sh->back, 0);
	floor_back = &sh->line;
	floor_seq = 0;
	return 0;
}

/* floor2: `line` carries odd values from A, `back` even ones from B. */
static int floor2_setup(void)
{
	floor_setup();
	floor_back = &sh->back;
	return 0;
}

/* ---- ring: two minimal rings (ring.h), a->b and b->a ---- */

static struct br_ring *rings;	/* [0]: a->b, [1]: b->a; shared */
static struct br_end r_out, r_in;

static int ring_setup(void)
{
	memset(rings, 0, 2 * sizeof(*rings));
	return 0;
}

static int ring_open_ends(int out)
{
	br_init(&r_out, &rings[out], 1, 0);
	br_init(&r_in, &rings[!out], 0, 0);
	return 0;
}

static int ring_child_open(void)
{
	return ring_open_ends(1);
}

static int ring_parent_open(void)
{
	return ring_open_ends(0);
}

static void ring_echo(size_t size)
{
	br_recv(&r_in, NULL, size);
	br_send(&r_out, msgbuf, size);
}

static void ring_ping(size_t size)
{
	br_send(&r_out, msgbuf, size);
	br_recv(&r_in, NULL, size);
}

/* ---- shmbus: two channels, a->b and b->a ---- */

static int sb_setup(void)
{
	struct shmbus_channel_attr a;
	shmbus_channel *c1, *c2;

	snprintf(sh->dir, sizeof(sh->dir), "/dev/shm/shmbus-bench-XXXXXX");
	if (!mkdtemp(sh->dir))
		return -errno;
	shmbus_channel_attr_init(&a);
	a.capacity = sb_capacity;
	a.max_msg = sb_capacity / 4 < MAX_SIZE ? sb_capacity / 4 : MAX_SIZE;
	c1 = shmbus_channel_create(sh->dir, "ab", &a, SHMBUS_CREATE_EXCL);
	c2 = shmbus_channel_create(sh->dir, "ba", &a, SHMBUS_CREATE_EXCL);
	if (!c1 || !c2)
		return -errno;
	shmbus_channel_close(c1);
	shmbus_channel_close(c2);
	return 0;
}

static int sb_open(const char *out, const char *in)
{
	ch_ab = shmbus_channel_open(sh->dir, out);
	ch_ba = shmbus_channel_open(sh->dir, in);
	if (!ch_ab || !ch_ba)
		return -errno;
	pub = shmbus_pub_open(ch_ab, NULL);
	sub = shmbus_sub_open(ch_ba, NULL);	/* busy spin */
	return pub && sub ? 0 : -errno;
}

static int sb_child_open(void)
{
	return sb_open("ba", "ab");
}

static int sb_parent_open(void)
{
	return sb_open("ab", "ba");
}

/* shmbus: the copy API, shmbus_publish() out and shmbus_read() in, which
 * a small message takes. */
static uint8_t rbuf[MAX_SIZE];

static void sb_send(size_t size)
{
	while (shmbus_publish(pub, msgbuf, size))
		_mm_pause();
}

static void sb_recv(void)
{
	while (shmbus_read(sub, rbuf, sizeof(rbuf), NULL) < 0)
		_mm_pause();
}

static void sb_echo(size_t size)
{
	sb_recv();
	sb_send(size);
}

static void sb_ping(size_t size)
{
	sb_send(size);
	sb_recv();
}

/* shmbus-zc: zero copy, shmbus_claim()/shmbus_commit() out and
 * shmbus_poll() in, on the same channels. */
static int on_msg(const struct shmbus_msg *m, void *arg)
{
	*(uint32_t *)arg = m->len;
	return 1;
}

static void zc_send(size_t size)
{
	void *buf;

	while (shmbus_claim(pub, size, &buf))
		_mm_pause();
	memcpy(buf, msgbuf, size);
	shmbus_commit(pub);
}

static void zc_recv(void)
{
	uint32_t len;

	while (shmbus_poll(sub, on_msg, &len, 1) != 1)
		_mm_pause();
}

static void zc_echo(size_t size)
{
	zc_recv();
	zc_send(size);
}

static void zc_ping(size_t size)
{
	zc_send(size);
	zc_recv();
}

static void sb_close(void)
{
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch_ab);
	shmbus_channel_close(ch_ba);
}

static const struct transport T_FLOOR = { "floor", floor_setup, tr_nop, tr_nop,
					  floor_echo, floor_ping, tr_nop_close };
static const struct transport T_FLOOR2 = { "floor2", floor2_setup, tr_nop, tr_nop,
					   floor_echo, floor_ping, tr_nop_close };
static const struct transport T_RING = { "ring", ring_setup, ring_child_open,
					 ring_parent_open, ring_echo,
					 ring_ping, tr_nop_close };
static const struct transport T_SHMBUS = { "shmbus", sb_setup, sb_child_open,
					   sb_parent_open, sb_echo, sb_ping,
					   sb_close };
static const struct transport T_SHMBUS_ZC = { "shmbus-zc", sb_setup,
					      sb_child_open, sb_parent_open,
					      zc_echo, zc_ping, sb_close };

/* Round trips due every `period` ns (0: back to back). */
static uint64_t period_ticks;

/* Runs `warm + n` round trips; records the last n in *h (ns). */
static int measure(const struct transport *t, size_t size, long warm, long n,
		   struct hist *h)
{
	pid_t pid;
	int st;

	hist_init(h);
	atomic_store(&sh->ready, 0);
	if (t->setup())
		return -1;
	pid = bh_fork();
	if (pid == 0) {
		bh_pin(1);
		if (t->child_open())
			_exit(2);
		atomic_store(&sh->ready, 1);
		for (long i = 0; i < warm + n; i++)
			t->echo(size);
		t->close_all();
		_exit(0);
	}
	bh_pin(0);
	while (!atomic_load(&sh->ready))
		_mm_pause();
	if (t->parent_open())
		return -1;
	uint64_t due = bh_ticks();

	for (long i = 0; i < warm + n; i++) {
		uint64_t t0 = bh_ticks();

		if (period_ticks) {
			/* Latency counts from when the round trip was due,
			 * even if an earlier one made us late for it. */
			due += period_ticks;
			while ((t0 = bh_ticks()) < due)
				_mm_pause();
			t0 = due;
		}
		t->ping(size);
		if (i >= warm)
			hist_record(h, (uint64_t)((bh_ticks() - t0) * ns_per_tick));
	}
	t->close_all();
	waitpid(pid, &st, 0);
	if (t == &T_SHMBUS || t == &T_SHMBUS_ZC) {
		shmbus_channel_unlink(sh->dir, "ab");
		shmbus_channel_unlink(sh->dir, "ba");
		rmdir(sh->dir);
	}
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Round trips in a row of one kind before the interleaved measurement
 * moves to the next, and how many of them after a switch go unrecorded
 * (the lines and branches of the other kinds are cold). */
#define IL_BLOCK 5000
#define IL_WARM 100

enum { IL_FLOOR, IL_FLOOR2, IL_SHMBUS, IL_ZC, IL_MBOX, IL_KINDS };

static struct br_end mb_out, mb_in;	/* IL_MBOX's ends, on rings[] */

/*
 * The legs of a round trip, when measure_interleaved() is given stamps:
 * the pinger reads the clock before its send, after it and after taking
 * the reply; the echo after taking the message and after its send.  The
 * differences split each round trip into four legs that add up to it:
 * the pinger's send; on until the echo has taken the message (the line's
 * transfer, the echo noticing it, its poll); the echo's send; back until
 * the pinger has taken the reply.  Both processes read the same TSC, so
 * the legs that cross between them are meaningful, and comparing shmbus
 * with mbox leg by leg cancels any offset between the two vCPUs' clocks.
 */
enum { LEG_SEND, LEG_THERE, LEG_REPLY, LEG_BACK, LEG_RTT, LEGS };
#define LEGS_MAX 100000		/* stamped round trips per kind, at most */

struct stamps {
	uint64_t ping[3];	/* before the send, after it, after the reply */
	uint64_t echo[2];	/* after taking the message, after the reply */
};

static inline void stamp(uint64_t *st, int i)
{
	if (st)
		st[i] = __rdtsc();
}

/* One message of kind k (IL_SHMBUS, IL_ZC or IL_MBOX) sent, one taken. */
static void il_send(int k, size_t size)
{
	if (k == IL_MBOX)
		br_send_post(&mb_out, msgbuf, size);
	else if (k == IL_ZC)
		zc_send(size);
	else
		sb_send(size);
}

static void il_recv(int k, size_t size)
{
	if (k == IL_MBOX)
		br_recv_mbox(&mb_in, NULL, size);
	else if (k == IL_ZC)
		zc_recv();
	else
		sb_recv();
}

/* One round trip of kind k; echo: the child's side.  st: where this side
 * stamps it (IL_SHMBUS and IL_MBOX only), or NULL. */
static void il_trip(int k, size_t size, bool echo, uint64_t *st)
{
	if (k == IL_MBOX || k == IL_SHMBUS || k == IL_ZC) {
		if (echo)
			il_recv(k, size);
		stamp(st, 0);
		il_send(k, size);
		stamp(st, 1);
		if (!echo) {
			il_recv(k, size);
			stamp(st, 2);
		}
		return;
	}
	/* floor and floor2 share the sequence; only the way back differs */
	floor_back = k == IL_FLOOR ? &sh->line : &sh->back;
	if (echo)
		floor_echo(8);
	else
		floor_ping(8);
}

/*
 * The floor, floor2, shmbus, shmbus-zc and mbox taking turns in blocks of
 * IL_BLOCK round trips between the same two processes: n recorded round
 * trips of each, into h[IL_FLOOR] ... h[IL_MBOX].  Measured one after the
 * other, their tails can come from different placements of the vCPUs;
 * taking turns, every placement the run goes through is sampled by all
 * of them alike, and their percentiles compare close with close, the tail
 * included.
 */
/* Where a side stamps round trip i of block b (kind b % IL_KINDS): the
 * recorded round trips of shmbus (st[0]) and mbox (st[1]), LEGS_MAX of
 * each at most; NULL for the rest, or with no stamps. */
static struct stamps *stamp_slot(struct stamps (*st)[LEGS_MAX], long b,
				 long i)
{
	int k = (int)(b % IL_KINDS);
	long j = b / IL_KINDS * (IL_BLOCK - IL_WARM) + i - IL_WARM;

	if (!st || i < IL_WARM || j >= LEGS_MAX ||
	    (k != IL_SHMBUS && k != IL_MBOX))
		return NULL;
	return &st[k == IL_MBOX][j];
}

static int measure_interleaved(size_t size, long n, struct hist *h,
			       struct stamps (*st)[LEGS_MAX])
{
	long blocks = IL_KINDS * ((n + IL_BLOCK - IL_WARM - 1) /
				  (IL_BLOCK - IL_WARM));
	pid_t pid;
	int status;

	for (int k = 0; k < IL_KINDS; k++)
		hist_init(&h[k]);
	atomic_store(&sh->ready, 0);
	if (size > BR_MBOX_WORDS * 8 || floor_setup() || sb_setup() ||
	    ring_setup())
		return -1;
	pid = bh_fork();
	if (pid == 0) {
		bh_pin(1);
		if (sb_child_open())
			_exit(2);
		br_init(&mb_out, &rings[1], 1, 0);
		br_init(&mb_in, &rings[0], 0, 0);
		atomic_store(&sh->ready, 1);
		for (long b = 0; b < blocks; b++)
			for (long i = 0; i < IL_BLOCK; i++) {
				struct stamps *s = stamp_slot(st, b, i);

				il_trip((int)(b % IL_KINDS), size, true,
					s ? s->echo : NULL);
			}
		sb_close();
		_exit(0);
	}
	bh_pin(0);
	while (!atomic_load(&sh->ready))
		_mm_pause();
	if (sb_parent_open()) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	br_init(&mb_out, &rings[0], 1, 0);
	br_init(&mb_in, &rings[1], 0, 0);
	for (long b = 0; b < blocks; b++) {
		int k = (int)(b % IL_KINDS);

		for (long i = 0; i < IL_BLOCK; i++) {
			struct stamps *s = stamp_slot(st, b, i);
			uint64_t t0 = bh_ticks();

			il_trip(k, size, false, s ? s->ping : NULL);
			if (i >= IL_WARM)
				hist_record(&h[k], (uint64_t)((bh_ticks() - t0) *
							      ns_per_tick));
		}
	}
	sb_close();
	waitpid(pid, &status, 0);
	shmbus_channel_unlink(sh->dir, "ab");
	shmbus_channel_unlink(sh->dir, "ba");
	rmdir(sh->dir);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* The median, interpolated within the clock's step (ratios use it). */
static double p50(const struct hist *h)
{
	return hist_percentile_step(h, 50, clock_step);
}

static double probe_floor(void)
{
	struct hist h;

	measure(&T_FLOOR, 8, 2000, 20000, &h);
	return p50(&h);
}

static FILE *csv;

/* Whether `name` is in the comma-separated list `only` (NULL: all). */
static bool wanted(const char *only, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = only; p; p = strchr(p, ',')) {
		if (*p == ',')
			p++;
		if (!strncmp(p, name, n) && (p[n] == ',' || p[n] == 0))
			return true;
	}
	return !only;
}

/* f0, f1: the floor's p50* before and after; the ratio is p50* / f0. */
static void row(const char *name, size_t size, const struct hist *h,
		double f0, double f1)
{
	static const double pct[] = { 50, 90, 99, 99.9, 99.99 };
	double m = p50(h);

	printf("%-15s %5zu %6llu %6llu %6.1f %6llu %6llu %7llu %8llu %8llu  "
	       "%6.2f  %4.0f/%-4.0f%s\n",
	       name, size, (unsigned long long)h->min,
	       (unsigned long long)hist_percentile(h, 50), m,
	       (unsigned long long)hist_percentile(h, 90),
	       (unsigned long long)hist_percentile(h, 99),
	       (unsigned long long)hist_percentile(h, 99.9),
	       (unsigned long long)hist_percentile(h, 99.99),
	       (unsigned long long)h->max, m / f0, f0, f1,
	       bh_moved((uint64_t)f0, (uint64_t)f1) ? "  placement changed"
						    : "");
	if (!csv)
		return;
	for (size_t i = 0; i < sizeof(pct) / sizeof(pct[0]); i++)
		fprintf(csv, "%s,%zu,%g,%llu,%.1f,%.1f,%.1f\n", name, size,
			pct[i], (unsigned long long)hist_percentile(h, pct[i]),
			f0, f1, m);
	fprintf(csv, "%s,%zu,100,%llu,%.1f,%.1f,%.1f\n", name, size,
		(unsigned long long)h->max, f0, f1, m);
}

/* shmbus's p50*, p99 and p99.9 over those of a baseline measured with it. */
static void ratios(const char *name, const struct hist *h,
		   const struct hist *base)
{
	printf("#   shmbus / %-7s p50* %.2f, p99 %.2f, p99.9 %.2f\n", name,
	       p50(h) / p50(base),
	       (double)hist_percentile(h, 99) /
		       (double)hist_percentile(base, 99),
	       (double)hist_percentile(h, 99.9) /
		       (double)hist_percentile(base, 99.9));
}

/* The legs' p50* for one kind's m stamped round trips; l[LEG_RTT] is the
 * round trip between the pinger's first and last stamps. */
static void leg_medians(const struct stamps *st, long m, double *l)
{
	struct hist h[LEGS];

	for (int j = 0; j < LEGS; j++)
		hist_init(&h[j]);
	for (long i = 0; i < m; i++) {
		const uint64_t *p = st[i].ping, *e = st[i].echo;
		/* from one stamp to the next, in order of time; a leg that
		 * reads negative (clocks apart by more than it) counts 0 */
		uint64_t t[5] = { p[0], p[1], e[0], e[1], p[2] };

		for (int j = 0; j < 4; j++)
			hist_record(&h[j], t[j + 1] > t[j]
				    ? (uint64_t)((t[j + 1] - t[j]) * ns_per_tick)
				    : 0);
		hist_record(&h[LEG_RTT], (uint64_t)((p[2] - p[0]) * ns_per_tick));
	}
	for (int j = 0; j < LEGS; j++)
		l[j] = p50(&h[j]);
}

/*
 * shmbus and mbox taking turns again, stamped on both sides (see struct
 * stamps): where the round trip's time goes, leg by leg, and what shmbus
 * adds to each leg over the minimal protocol.  A separate run, because the
 * stamps themselves take a few ns of each leg.
 */
static void legs(long m)
{
	static const char *const name[] = { "shmbus", "mbox" };
	struct stamps (*st)[LEGS_MAX] = bh_shared(2 * sizeof(*st));
	struct hist il[IL_KINDS];
	double l[2][LEGS];

	if (!st) {
		printf("legs failed\n");
		return;
	}
	memset(st, 0, 2 * sizeof(*st));	/* faulted in now, not later */
	if (measure_interleaved(32, m, il, st)) {
		printf("legs failed\n");
		munmap(st, 2 * sizeof(*st));
		return;
	}
	printf("# where the round trip goes (32 B, shmbus and mbox taking "
	       "turns, stamped on both sides; p50* of each leg, ns):\n");
	printf("%-14s %7s %9s %7s %9s %7s\n", "legs", "send", "to echo",
	       "reply", "to ping", "rtt");
	for (int k = 0; k < 2; k++) {
		leg_medians(st[k], m, l[k]);
		printf("%-14s %7.1f %9.1f %7.1f %9.1f %7.1f\n", name[k],
		       l[k][LEG_SEND], l[k][LEG_THERE], l[k][LEG_REPLY],
		       l[k][LEG_BACK], l[k][LEG_RTT]);
	}
	printf("%-14s %+7.1f %+9.1f %+7.1f %+9.1f %+7.1f\n", "shmbus - mbox",
	       l[0][LEG_SEND] - l[1][LEG_SEND],
	       l[0][LEG_THERE] - l[1][LEG_THERE],
	       l[0][LEG_REPLY] - l[1][LEG_REPLY],
	       l[0][LEG_BACK] - l[1][LEG_BACK], l[0][LEG_RTT] - l[1][LEG_RTT]);
	munmap(st, 2 * sizeof(*st));
}

int main(int argc, char **argv)
{
	static const size_t sizes[] = { 32, 256, 1024, 4096 };
	const struct transport *ts[] = { &T_FLOOR2, &T_RING, &T_SHMBUS,
					 &T_SHMBUS_ZC, &T_PIPE, &T_UNIX,
					 &T_MQ, &T_ZMQ };
	const char *only_t = NULL;
	size_t only_s = 0;
	int quick = 0, opt;

	while ((opt = getopt(argc, argv, "qs:t:c:")) != -1) {
		long v = optarg ? atol(optarg) : 0;

		if (opt == 'q')
			quick = 1;
		else if (opt == 's' && v > 0 && v <= MAX_SIZE)
			only_s = (size_t)v;
		else if (opt == 't')
			only_t = optarg;
		else if (opt == 'c' && v >= 4096 && !(v & (v - 1)))
			sb_capacity = (uint64_t)v;
		else {
			fprintf(stderr, "usage: bench_latency [-q] [-s SIZE] "
					"[-t NAME] [-c CAPACITY]\n");
			return 2;
		}
	}
	/* A quick or partial run's figures are not results: no file. */
	csv = quick || only_s || only_t || sb_capacity != 1u << 20
		      ? NULL : bh_result_file("latency.csv");
	if (csv)
		fprintf(csv, "what,bytes,percentile,ns,floor_before,"
			     "floor_after,p50_interpolated\n");
	long n = quick ? 20000 : 1000000, warm = n / 10;
	struct hist h, fl;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	rings = bh_shared(2 * sizeof(*rings));
	if (sh == MAP_FAILED || !rings || sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		fprintf(stderr, "bench_latency: needs two CPUs and shared memory\n");
		return 1;
	}
	bh_calibrate();
	ns_per_tick = bh_ns_per_tick();
	clock_step = bh_clock_step_ns();
	printf("# round-trip time, ns, two processes pinned to CPUs 0 and 1, "
	       "%ld round trips (pipe, unix: %ld) (%.3f ns/tick, the clock "
	       "moves in steps of %.1f ns)\n", n, n / 10, ns_per_tick,
	       clock_step);
	printf("# p50*: the median interpolated within the clock's step; "
	       "ratio: p50* / the floor's p50* measured just before; floor: "
	       "p50* before/after\n");
	printf("%-15s %5s %6s %6s %6s %6s %6s %7s %8s %8s  %6s  %s\n", "what",
	       "bytes", "min", "p50", "p50*", "p90", "p99", "p99.9", "p99.99",
	       "max", "ratio", "floor");
	measure(&T_FLOOR, 8, warm, n, &fl);
	row("floor", 8, &fl, p50(&fl), p50(&fl));
	double floor2_50 = 0;	/* measured once, at the first size */

	for (size_t s = 0; s < (only_s ? 1 : sizeof(sizes) / sizeof(sizes[0]));
	     s++) {
		size_t size = only_s ? only_s : sizes[s];

		double ring50 = 0;

		for (size_t k = 0; k < sizeof(ts) / sizeof(ts[0]); k++) {
			const struct transport *t = ts[k];
			bool user = t == &T_FLOOR2 || t == &T_RING ||
				    t == &T_SHMBUS || t == &T_SHMBUS_ZC;
			double f0, f1;

			/* floor2 does not depend on the size. */
			if (!wanted(only_t, t->name) || (t == &T_FLOOR2 && s))
				continue;
			f0 = probe_floor();
			/* Kernel paths are ~300x slower: a tenth of the round
			 * trips still gives their p99.99 100 samples. */
			long nk = user ? n : n / 10;

			if (measure(t, size, nk / 10, nk, &h)) {
				printf("%-7s %5zu failed\n", t->name, size);
				continue;
			}
			f1 = probe_floor();
			row(t->name, size, &h, f0, f1);
			if (t == &T_FLOOR2)
				floor2_50 = p50(&h);
			if (t == &T_RING)
				ring50 = p50(&h);
			/* Like with like: shmbus-zc's handler reads only the
			 * length, and ring's reader no payload either; shmbus
			 * copies every byte out, as the kernel paths do. */
			if (t == &T_SHMBUS_ZC && ring50 > 0)
				printf("#   shmbus-zc p50* = %.2f x ring\n",
				       p50(&h) / ring50);
			if (t == &T_SHMBUS && floor2_50 > 0)
				printf("#   shmbus p50* = %.2f x floor2\n",
				       p50(&h) / floor2_50);
		}
	}
	/* The floors and shmbus taking turns: the target ratios, p50 and
	 * p99.9, from one placement (or every placement, sampled alike). */
	if (wanted(only_t, "shmbus") && (!only_s || only_s == 32)) {
		struct hist il[IL_KINDS];

		printf("# the floor, floor2, shmbus, shmbus-zc and mbox (32 B) "
		       "taking turns in blocks of %d round trips between the "
		       "same two processes:\n", IL_BLOCK);
		if (measure_interleaved(32, n, il, NULL) == 0) {
			double f = p50(&il[IL_FLOOR]);

			row("floor/turns", 8, &il[IL_FLOOR], f, f);
			row("floor2/turns", 32, &il[IL_FLOOR2], f, f);
			row("shmbus/turns", 32, &il[IL_SHMBUS], f, f);
			row("shmbus-zc/turns", 32, &il[IL_ZC], f, f);
			row("mbox/turns", 32, &il[IL_MBOX], f, f);
			ratios("floor:", &il[IL_SHMBUS], &il[IL_FLOOR]);
			ratios("floor2:", &il[IL_SHMBUS], &il[IL_FLOOR2]);
			ratios("mbox:", &il[IL_SHMBUS], &il[IL_MBOX]);
		} else
			printf("shmbus/turns failed\n");
		legs(n < LEGS_MAX ? n : LEGS_MAX);
	}
	/* Fixed offered rate: 100 K round trips per second, 32 bytes.  The
	 * floor at the same rate first: a stall of the machine itself (the
	 * host taking a vCPU away) shows in both tails alike. */
	if (wanted(only_t, "shmbus")) {
		double f0 = probe_floor(), f1;
		struct hist hf;

		period_ticks = (uint64_t)(10000.0 / ns_per_tick);
		printf("# at a fixed rate of 100 K round trips/s, latency "
		       "from the intended send time:\n");
		if (measure(&T_FLOOR, 8, n / 100, n / 5, &hf) == 0) {
			f1 = probe_floor();
			row("floor@100k", 8, &hf, f0, f1);
			f0 = f1;
		}
		if (measure(&T_SHMBUS, 32, n / 100, n / 5, &h) == 0) {
			f1 = probe_floor();
			row("shmbus@100k", 32, &h, f0, f1);
		}
		period_ticks = 0;
	}
	if (csv)
		fclose(csv);
	return 0;
}
