/* SPDX-License-Identifier: MIT */
/*
 * bench_throughput.c - messages per second and bytes per second from
 * producer processes to subscriber processes, with the baselines that
 * bound them, measured in the same run:
 *
 *   memcpy   one process copies `size` bytes out of a 4 MiB buffer: the
 *            memory bandwidth one core gets at that size
 *   copy2p   the plain two-process copy: one process writes each message
 *            into a shared 4 MiB ring of slots and publishes a counter, the
 *            other copies it out and acknowledges; same cores.  Nothing
 *            that moves bytes between two processes can do much better.
 *   copy2p/32  the same with the counters published once per 32 messages:
 *            the plain equivalent of a batch
 *   publish  shmbus_publish() (a copy in), block policy, 4 MiB channel
 *   claim    shmbus_claim() + memcpy into the ring + shmbus_commit()
 *   batch    shmbus_publish_batch() of 32 messages per call
 *
 * Every subscriber copies each message out (memcpy in its handler), as the
 * copy2p consumer does.  Producer on CPU 0, subscriber on CPU 1.
 *
 * Then what bounds one commit per message, at 32 bytes: ring.h's minimal
 * ring of records with in-band commit words (shmbus's record protocol and
 * nothing else), with and without the full fence of shmbus's wake check,
 * and with the consumer pausing after an empty look, next to shmbus's
 * claim/commit with the same consumer behaviours.
 *
 * How often the consumer caught up (found nothing left after a batch) is
 * printed for copy2p/32 and shmbus's batch: a consumer that catches up
 * reads lines the producer has just written, and that regime is much
 * slower for small messages.  bench_handover
 * measures that regime on its own.
 *
 * Fan-out (1 producer to 1, 2, 4 subscribers) and fan-in (2 producers on
 * a multi-producer channel to 1 subscriber) follow.  The machine has two
 * cores: extra subscribers share CPU 1 (they yield when idle), and in
 * fan-in the second producer shares CPU 1 with the subscriber.  The
 * numbers say what the protocol sustains with the cores it gets, and the
 * output says which processes shared a core.
 *
 *   bench_throughput [-q] [-s SIZE]
 *                     -q: a quick run (CI checks that it runs)
 *                     -s: only messages of SIZE bytes, no fan-out
 *
 * Results also go to benchmarks/results/throughput.csv.
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
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "hist.h"
#include "ring.h"
#include "shmbus.h"
#include "tp.h"

#define MAX_SUB 4

enum mode { PUBLISH, CLAIM, BATCHED };
static const char *const mode_name[] = { "publish", "claim", "batch" };

struct shared {
	_Alignas(64) _Atomic int ready;
	_Alignas(64) _Atomic int go;
	_Alignas(64) _Atomic uint64_t head;	/* copy2p */
	_Alignas(64) _Atomic uint64_t tail;
	_Alignas(64) _Atomic uint64_t done_ns[MAX_SUB];
	uint64_t caught_up[MAX_SUB];	/* times the consumer found nothing */
	uint64_t t0;
	char dir[64];
};

static struct shared *sh;
static struct br_ring *bring;	/* ring.h's ring, shared */
static int sub_backoff;		/* subscribers: pauses after an empty poll */
static uint8_t *ring;		/* copy2p slots, shared */
static uint8_t *src, *dst;	/* private */

struct result {
	double msgs;		/* per second, per subscriber */
	double gbs;		/* GB/s per subscriber */
	double caught;		/* % of batches after which the (first)
				 * consumer found nothing left to read */
};

static void wait_all(pid_t *pids, int n)
{
	for (int i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
}

/* ---------------------------------------------------------------- memcpy */

static struct result run_memcpy(size_t size, uint64_t n)
{
	uint64_t t0, t1, off = 0;
	struct result r;

	bh_pin(0);
	t0 = bh_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		memcpy(dst, src + off, size);
		off = (off + ((size + 63) & ~(size_t)63)) % (TP_RING - size + 1);
		__asm__ volatile("" ::: "memory");
	}
	t1 = bh_now_ns();
	r.msgs = (double)n * 1e9 / (double)(t1 - t0);
	r.gbs = r.msgs * (double)size / 1e9;
	r.caught = -1;
	return r;
}

/* ---------------------------------------------------------------- copy2p */

/* The counters each two-process baseline starts from. */
static void reset_counts(void)
{
	atomic_store(&sh->head, 0);
	atomic_store(&sh->tail, 0);
	atomic_store(&sh->ready, 0);
}

/*
 * The producer publishes its count (head) after every `every` messages,
 * the consumer its own (tail) likewise: every = 1 is the copy of one
 * message at a time, every = TP_BATCH the plain equivalent of a batch.  Each
 * side re-reads the other's count only when the one it has is used up.
 */
static struct result run_copy2p(size_t size, uint64_t n, uint64_t every)
{
	size_t slot = (size + 63) & ~(size_t)63;
	uint64_t nslots = TP_RING / slot, seen = 0;
	struct result r;
	pid_t pid;

	reset_counts();
	pid = bh_fork();
	if (pid == 0) {
		uint64_t head = 0, caught = 0;

		bh_pin(1);
		atomic_store(&sh->ready, 1);
		for (uint64_t i = 0; i < n; i++) {
			if (i == head) {
				/* Acquire: pairs with the producer's
				 * release of head. */
				head = atomic_load_explicit(
					&sh->head, memory_order_acquire);
				if (i == head)
					caught++;
				while (i == head) {
					_mm_pause();
					head = atomic_load_explicit(
						&sh->head,
						memory_order_acquire);
				}
			}
			memcpy(dst, ring + (i % nslots) * slot, size);
			/* Release: pairs with the producer's acquire of
			 * tail, which then reuses the slot. */
			if ((i + 1) % every == 0 || i + 1 == n)
				atomic_store_explicit(&sh->tail, i + 1,
						      memory_order_release);
		}
		sh->caught_up[0] = caught;
		atomic_store(&sh->done_ns[0], bh_now_ns());
		_exit(0);
	}
	bh_pin(0);
	while (!atomic_load(&sh->ready))
		_mm_pause();
	sh->t0 = bh_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		while (i - seen >= nslots)
			/* Acquire: pairs with the consumer's release. */
			seen = atomic_load_explicit(&sh->tail,
						    memory_order_acquire);
		memcpy(ring + (i % nslots) * slot, src, size);
		/* Release: the slots up to i + 1 are written. */
		if ((i + 1) % every == 0 || i + 1 == n)
			atomic_store_explicit(&sh->head, i + 1,
					      memory_order_release);
	}
	waitpid(pid, NULL, 0);
	r.msgs = (double)n * 1e9 / (double)(sh->done_ns[0] - sh->t0);
	r.gbs = r.msgs * (double)size / 1e9;
	r.caught = 100.0 * (double)sh->caught_up[0] /
		   (double)((n + every - 1) / every);
	return r;
}

/* ------------------------------------------------------------------ ring */

static struct result run_ring(size_t size, uint64_t n, int fenced,
			      int backoff)
{
	struct br_end e;
	struct result r;
	pid_t pid;

	memset(bring, 0, sizeof(*bring));
	atomic_store(&sh->ready, 0);
	pid = bh_fork();
	if (pid == 0) {
		bh_pin(1);
		br_init(&e, bring, 0, backoff);
		atomic_store(&sh->ready, 1);
		for (uint64_t i = 0; i < n; i++)
			br_recv(&e, dst, size);
		atomic_store(&sh->done_ns[0], bh_now_ns());
		_exit(0);
	}
	bh_pin(0);
	br_init(&e, bring, fenced, 0);
	while (!atomic_load(&sh->ready))
		_mm_pause();
	sh->t0 = bh_now_ns();
	for (uint64_t i = 0; i < n; i++)
		br_send(&e, src, size);
	waitpid(pid, NULL, 0);
	r.msgs = (double)n * 1e9 / (double)(sh->done_ns[0] - sh->t0);
	r.gbs = r.msgs * (double)size / 1e9;
	r.caught = -1;
	return r;
}

/* ---------------------------------------------------------------- shmbus */

static void subscriber(int idx, uint64_t expect, bool shared_cpu)
{
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "tp");
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, NULL) : NULL;
	struct tp_count c = { dst, 0 };
	uint64_t caught = 0;
	bool had = true;

	if (!sub)
		_exit(2);
	bh_pin(1);
	atomic_fetch_add(&sh->ready, 1);
	while (c.got < expect) {
		int r = shmbus_poll(sub, tp_copy_out, &c, 0);

		if (r < 0)
			_exit(3);
		caught += had && r == 0;
		had = r > 0;
		if (r == 0) {
			if (shared_cpu)
				sched_yield();
			else
				for (int i = 0; i <= sub_backoff; i++)
					_mm_pause();
		}
	}
	sh->caught_up[idx] = caught;
	atomic_store(&sh->done_ns[idx], bh_now_ns());
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	_exit(0);
}

/* Messages per call in `mode`: a batch is one claim, at most half the
 * ring. */
static uint64_t per_call(enum mode mode, size_t size)
{
	uint64_t fit = (TP_RING / 2 - 8) / tp_rec_bytes(size);

	return mode != BATCHED ? 1 : fit < TP_BATCH ? fit : TP_BATCH;
}

static void producer(int cpu, enum mode mode, size_t size, uint64_t n)
{
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "tp");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	struct iovec iov[TP_BATCH];
	void *buf;
	int rc;

	if (!pub) {
		fprintf(stderr, "producer: open: %s\n", shmbus_strerror(errno));
		_exit(4);
	}
	bh_pin(cpu);
	for (int i = 0; i < TP_BATCH; i++) {
		iov[i].iov_base = src + (size_t)i * 64;
		iov[i].iov_len = size;
	}
	while (!atomic_load(&sh->go))
		_mm_pause();
	for (uint64_t i = 0; i < n;) {
		switch (mode) {
		case PUBLISH:
			rc = shmbus_publish(pub, src, size);
			if (rc) {
				fprintf(stderr, "publish: %s\n",
					shmbus_strerror(rc));
				_exit(5);
			}
			i++;
			break;
		case CLAIM:
			rc = shmbus_claim(pub, size, &buf);
			if (rc) {
				fprintf(stderr, "claim: %s\n",
					shmbus_strerror(rc));
				_exit(5);
			}
			memcpy(buf, src, size);
			shmbus_commit(pub);
			i++;
			break;
		case BATCHED: {
			size_t k = (size_t)per_call(BATCHED, size);

			if (n - i < k)
				k = (size_t)(n - i);

			rc = shmbus_publish_batch(pub, iov, k);
			if (rc != (int)k) {
				fprintf(stderr, "batch: %s\n",
					shmbus_strerror(rc));
				_exit(5);
			}
			i += k;
			break;
		}
		}
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
}

static struct result run_shmbus(enum mode mode, size_t size, uint64_t n,
				int nsub, int nprod)
{
	shmbus_channel *ch;
	struct result r = { 0, 0, -1 };
	pid_t pids[MAX_SUB + 2];
	uint64_t end = 0, k;
	int np = 0;

	ch = tp_channel(sh->dir, nprod > 1 ? SHMBUS_MULTI_PRODUCER
				    : SHMBUS_SINGLE_PRODUCER);
	if (!ch)
		return r;
	atomic_store(&sh->ready, 0);
	atomic_store(&sh->go, 0);
	for (int i = 0; i < nsub; i++) {
		pids[np] = bh_fork();
		if (pids[np] == 0)
			subscriber(i, n * (uint64_t)nprod, nsub > 1 || nprod > 1);
		np++;
	}
	while (atomic_load(&sh->ready) < nsub)
		usleep(100);
	for (int p = 1; p < nprod; p++) {
		pids[np] = bh_fork();
		if (pids[np] == 0) {
			producer(1, mode, size, n);
			_exit(0);
		}
		np++;
	}
	sh->t0 = bh_now_ns();
	atomic_store(&sh->go, 1);
	producer(0, mode, size, n);
	wait_all(pids, np);
	for (int i = 0; i < nsub; i++)
		if (sh->done_ns[i] > end)
			end = sh->done_ns[i];
	r.msgs = (double)n * nprod * 1e9 / (double)(end - sh->t0);
	r.gbs = r.msgs * (double)size / 1e9;
	k = per_call(mode, size);
	r.caught = 100.0 * (double)sh->caught_up[0] /
		   (double)((n * nprod + k - 1) / k);
	shmbus_channel_close(ch);
	tp_unlink(sh->dir);
	return r;
}

/*
 * Each side's own work, with nothing shared: one process on CPU 0 fills
 * half the ring (claim/commit or batches), then polls it all back with the
 * same copy-out handler, and again until n messages have gone through.
 * Two processes can go no faster than the slower of the two sides alone.
 */
struct alone {
	double claim, batch, poll;	/* messages per second */
};

static struct alone run_alone(size_t size, uint64_t n)
{
	struct shmbus_pub_attr pa = { .timeout_ns = 0 };
	struct alone r = { 0, 0, 0 };
	uint64_t per = (TP_RING / 2) / tp_rec_bytes(size);
	int64_t t_claim = 0, t_batch = 0, t_poll = 0;
	uint64_t done_claim = 0, done_batch = 0;
	struct iovec iov[TP_BATCH];
	shmbus_channel *ch;
	shmbus_pub *pub;
	shmbus_sub *sub;
	struct tp_count c = { dst, 0 };

	ch = tp_channel(sh->dir, SHMBUS_SINGLE_PRODUCER);
	if (!ch)
		return r;
	sub = shmbus_sub_open(ch, NULL);
	pub = sub ? shmbus_pub_open(ch, &pa) : NULL;
	if (!pub)
		goto out;
	bh_pin(0);
	for (int i = 0; i < TP_BATCH; i++) {
		iov[i].iov_base = src + (size_t)i * 64;
		iov[i].iov_len = size;
	}
	for (int round = 0; done_claim + done_batch < 2 * n; round++) {
		bool batch = round % 2;
		int64_t t0 = bh_now_ns(), t1;
		uint64_t k = 0;
		void *buf;

		while (k < per) {
			if (batch) {
				size_t m = per - k < TP_BATCH ? (size_t)(per - k)
							   : TP_BATCH;

				if (shmbus_publish_batch(pub, iov, m) != (int)m)
					goto out;
				k += m;
			} else {
				if (shmbus_claim(pub, size, &buf))
					goto out;
				memcpy(buf, src, size);
				shmbus_commit(pub);
				k++;
			}
		}
		t1 = bh_now_ns();
		*(batch ? &t_batch : &t_claim) += t1 - t0;
		*(batch ? &done_batch : &done_claim) += k;
		c.got = 0;
		if (shmbus_poll(sub, tp_copy_out, &c, 0) < 0 || c.got != k)
			goto out;
		t_poll += bh_now_ns() - t1;
	}
	r.claim = (double)done_claim * 1e9 / (double)t_claim;
	r.batch = (double)done_batch * 1e9 / (double)t_batch;
	r.poll = (double)(done_claim + done_batch) * 1e9 / (double)t_poll;
out:
	shmbus_pub_close(pub);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	tp_unlink(sh->dir);
	return r;
}

/* ------------------------------------------------------------------ main */

static FILE *csv;

/* One row of throughput.csv; caught < 0: not measured (empty field). */
static void csv_row(const char *bench, const char *mode, size_t size,
		    int nsub, int nprod, struct result r, uint64_t f0,
		    uint64_t f1)
{
	if (!csv)
		return;
	fprintf(csv, "%s,%s,%zu,%d,%d,%.0f,%.3f,%llu,%llu,", bench, mode, size,
		nsub, nprod, r.msgs, r.gbs, (unsigned long long)f0,
		(unsigned long long)f1);
	if (r.caught >= 0)
		fprintf(csv, "%.1f", r.caught);
	fputc('\n', csv);
}

/*
 * What bounds one commit per message: the minimal ring, the fence, and a
 * consumer that keeps reading the line the producer is writing, against
 * shmbus's claim/commit with the same consumers.
 */
static void bound_table(size_t size, uint64_t n, long probe)
{
	static const struct {
		const char *what;
		int fenced, backoff, shmbus;
	} rows[] = {
		{ "ring", 0, 0, 0 },
		{ "ring + wake fence", 1, 0, 0 },
		{ "ring + wake fence, consumer pauses 16", 1, 16, 0 },
		{ "shmbus claim/commit", 0, 0, 1 },
		{ "shmbus claim/commit, subscriber pauses 16", 0, 16, 1 },
	};

	printf("\n# what bounds one commit per message, %zu-byte messages: "
	       "the same record protocol and nothing else (ring.h)\n", size);
	printf("%-44s %9s  %s\n", "", "Mmsg/s", "floor");
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		uint64_t f0 = bh_floor_p50(probe), f1;
		struct result r;
		char what[64];

		if (rows[i].shmbus) {
			sub_backoff = rows[i].backoff;
			r = run_shmbus(CLAIM, size, n, 1, 1);
			sub_backoff = 0;
		} else
			r = run_ring(size, n, rows[i].fenced, rows[i].backoff);
		f1 = bh_floor_p50(probe);
		printf("%-44s %9.1f  %llu/%llu%s\n", rows[i].what, r.msgs / 1e6,
		       (unsigned long long)f0, (unsigned long long)f1,
		       bh_moved(f0, f1) ? "  placement changed" : "");
		snprintf(what, sizeof(what), "\"%s\"", rows[i].what);
		csv_row("bound", what, size, 1, 1, r, f0, f1);
	}

	struct alone al = run_alone(size, n);
	const struct {
		const char *what;
		double rate;
	} solo[] = {
		{ "one process alone: claim/commit (producer)", al.claim },
		{ "one process alone: batch of 32 (producer)", al.batch },
		{ "one process alone: poll + copy out (subscriber)", al.poll },
	};

	printf("# each side's own work, nothing shared (one process, CPU 0): "
	       "two processes go no faster than the slower side\n");
	for (size_t i = 0; i < sizeof(solo) / sizeof(solo[0]); i++) {
		struct result r = { solo[i].rate,
				    solo[i].rate * (double)size / 1e9, -1 };
		char what[64];

		printf("%-48s %5.1f\n", solo[i].what, solo[i].rate / 1e6);
		snprintf(what, sizeof(what), "\"%s\"", solo[i].what);
		csv_row("bound", what, size, 1, 1, r, 0, 0);
	}
}

static uint64_t count_for(size_t size, int quick)
{
	uint64_t budget = quick ? (64u << 20) : (uint64_t)3 << 30;
	uint64_t n = budget / size;

	if (n > (quick ? 1000000u : 30000000u))
		n = quick ? 1000000u : 30000000u;
	return n < 2000 ? 2000 : n;
}

int main(int argc, char **argv)
{
	static const size_t sizes[] = { 8, 32, 64, 256, 1024, 4096, 16384,
					65536 };
	size_t only = 0;
	int quick = 0, opt;
	long probe;

	while ((opt = getopt(argc, argv, "qs:")) != -1) {
		if (opt == 'q')
			quick = 1;
		else if (opt == 's' && atol(optarg) > 0 &&
			 (size_t)atol(optarg) <= TP_MAX_SIZE)
			only = (size_t)atol(optarg);
		else {
			fprintf(stderr, "usage: bench_throughput [-q] "
					"[-s SIZE]\n");
			return 2;
		}
	}
	probe = quick ? 5000 : 50000;
	/* A quick or partial run's figures are not results: no file. */
	csv = quick || only ? NULL : bh_result_file("throughput.csv");

	sh = bh_shared(sizeof(*sh));
	ring = bh_shared(TP_RING);
	bring = bh_shared(sizeof(*bring));
	src = malloc(TP_RING);
	dst = malloc(TP_MAX_SIZE);
	if (!sh || !ring || !bring || !src || !dst ||
	    sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		fprintf(stderr, "bench_throughput: needs two CPUs and memory\n");
		return 1;
	}
	memset(src, 0x5a, TP_RING);
	memset(ring, 0, TP_RING);
	bh_calibrate();
	if (csv)
		fprintf(csv, "bench,mode,size,subscribers,producers,msgs_per_s,"
			     "gb_per_s,floor_before_ns,floor_after_ns,"
			     "caught_up_pct\n");

	printf("# throughput: producer process on CPU 0, subscriber process "
	       "on CPU 1; every message copied in and copied out\n");
	printf("# Mmsg/s and GB/s of payload.  copy2p/32: copy2p with one "
	       "count per %d messages, the plain batch.  caught: %% of\n"
	       "# batches after which the consumer found nothing left (it "
	       "reads lines the producer just wrote; see\n# docs/performance.md)."
	       "  ratios: the best shmbus mode / copy2p (GB/s), batch / "
	       "copy2p/32.  floor: cache-line\n# RTT p50 before/after, ns\n",
	       TP_BATCH);
	printf("%6s %7s %8s %7s %8s %6s %8s %8s %8s %7s %6s %6s %6s %s\n",
	       "bytes", "memcpy", "copy2p", "", "cp/32", "", "publish", "claim",
	       "batch", "", "", "ratio", "", "floor");
	printf("%6s %7s %8s %7s %8s %6s %8s %8s %8s %7s %6s %6s %6s\n", "",
	       "GB/s", "Mmsg/s", "GB/s", "Mmsg/s", "caught", "Mmsg/s", "Mmsg/s",
	       "Mmsg/s", "GB/s", "caught", "best", "batch");
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t size = only ? only : sizes[s];
		uint64_t n = count_for(size, quick);
		uint64_t f0 = bh_floor_p50(probe), f1;
		struct result mc = run_memcpy(size, n);
		struct result cp = run_copy2p(size, n, 1);
		struct result cb = run_copy2p(size, n, TP_BATCH);
		struct result m[3];
		double best = 0;

		for (int k = 0; k < 3; k++) {
			m[k] = run_shmbus((enum mode)k, size, n, 1, 1);
			if (m[k].gbs > best)
				best = m[k].gbs;
		}
		f1 = bh_floor_p50(probe);
		printf("%6zu %7.2f %8.1f %7.2f %8.1f %5.0f%% %8.1f %8.1f %8.1f "
		       "%7.2f %5.0f%% %6.2f %6.2f %llu/%llu%s\n", size, mc.gbs,
		       cp.msgs / 1e6, cp.gbs, cb.msgs / 1e6, cb.caught,
		       m[0].msgs / 1e6, m[1].msgs / 1e6, m[2].msgs / 1e6,
		       m[2].gbs, m[2].caught, best / cp.gbs,
		       m[2].msgs / cb.msgs, (unsigned long long)f0,
		       (unsigned long long)f1,
		       bh_moved(f0, f1) ? "  placement changed" : "");
		if (only)
			break;
		mc.caught = -1;
		csv_row("memcpy", "-", size, 0, 1, mc, f0, f1);
		csv_row("copy2p", "-", size, 1, 1, cp, f0, f1);
		csv_row("copy2p32", "-", size, 1, 1, cb, f0, f1);
		for (int k = 0; k < 3; k++)
			csv_row("shmbus", mode_name[k], size, 1, 1, m[k], f0,
				f1);
	}

	bound_table(only ? only : 32, count_for(only ? only : 32, quick),
		    probe);
	if (only)
		return 0;

	printf("\n# fan-out and fan-in, 64-byte messages, Mmsg/s per "
	       "subscriber (2 cores: see the notes)\n");
	printf("%-34s %9s %9s  %-26s %s\n", "", "publish", "batch",
	       "placement", "floor");
	{
		static const struct {
			int nsub, nprod;
			const char *what, *where;
		} fan[] = {
			{ 1, 1, "1 producer -> 1 subscriber", "P:cpu0 S:cpu1" },
			{ 2, 1, "1 producer -> 2 subscribers",
			  "P:cpu0 S1,S2 share cpu1" },
			{ 4, 1, "1 producer -> 4 subscribers",
			  "P:cpu0 S1..S4 share cpu1" },
			{ 1, 2, "2 producers -> 1 subscriber (MP)",
			  "P1:cpu0 P2,S share cpu1" },
		};
		uint64_t n = count_for(64, quick) / 4;

		for (size_t i = 0; i < sizeof(fan) / sizeof(fan[0]); i++) {
			uint64_t f0 = bh_floor_p50(probe), f1;
			struct result a = run_shmbus(PUBLISH, 64, n,
						     fan[i].nsub, fan[i].nprod);
			struct result b = run_shmbus(BATCHED, 64, n,
						     fan[i].nsub, fan[i].nprod);

			f1 = bh_floor_p50(probe);
			printf("%-34s %9.1f %9.1f  %-26s %llu/%llu%s\n",
			       fan[i].what, a.msgs / 1e6, b.msgs / 1e6,
			       fan[i].where, (unsigned long long)f0,
			       (unsigned long long)f1,
			       bh_moved(f0, f1) ? "  placement changed" : "");
			csv_row("fan", "publish", 64, fan[i].nsub,
				fan[i].nprod, a, f0, f1);
			csv_row("fan", "batch", 64, fan[i].nsub, fan[i].nprod,
				b, f0, f1);
		}
	}
	if (csv)
		fclose(csv);
	return 0;
}
